//! The agent's watchdog: ends what an agent started when the agent dies without doing so.
//!
//! Why: an agent runs `ray start --block` (and the head its fan-out step) in a session of its
//! own (src/agent/supervisor.rs), so it can end exactly that tree. Once the agent is gone, by
//! SIGKILL from the out-of-memory killer say, that session is reparented to init and escapes
//! a scheduler that tracks processes by their parents: the raylet lingers for minutes, the
//! dashboard and runtime-env agents forever, and the node's temp dir and token file stay in
//! /tmp. A SIGKILL cannot be caught, so the cleanup has to live in another process.
//!
//! How: at its start an agent arms a watchdog, `ray-hpc watchdog --agent <pid>` (hidden),
//! spawned in a session of its own, deaf to the signals a terminal or a scheduler's cancel
//! sends (ignored from before exec). It forks once more and its parent exits, so it is not a
//! descendant of the agent: a scheduler that kills a task's whole tree by parentage at the end
//! of a job or step (seen on the test bed when the head died: the worker's step was killed
//! 20 ms later) kills the agent and its Ray but not the watchdog, which then removes what they
//! left. Its stdin is the read end of a pipe whose write end only the agent holds
//! (close-on-exec, so neither Ray nor the driver inherits it). Over it the agent says, one
//! line each:
//!
//! - `session <sid> <start time> <what>`: a session to end (sent by `Supervised::spawn`),
//!   `forget-session <sid>` once it is over (by `Supervised::stop` and its drop);
//! - `path <p>`: a file or directory to remove (node temp dirs, by `node::start_node`; the
//!   worker's token file), `forget-path <p>` once removed (by `node::remove_temp_dir`);
//! - `pid <pid> <start time>`: a process to end (the head's driver);
//! - `record <cluster dir>`: the cluster record to mark FAILED (the head);
//! - `done`: the agent tore down itself; the watchdog exits doing nothing.
//!
//! The watchdog blocks reading. The kernel closes the write end whenever the agent ends, so
//! end of input without `done` means the agent died, however it died. Then the watchdog ends
//! every session it was told about as `Supervised::stop` does (the same [`SessionStop`]
//! steps: SIGTERM to the `ray start` leader, which stops Ray in order in about 2 s; SIGKILL to
//! what is left once the leader is gone or nothing has exited for 3 s), ends the watched
//! processes (SIGTERM, SIGKILL after the grace period), removes the watched paths, marks the
//! record FAILED, says what it did on stderr (where the agent's stderr went: the job output
//! for the head) and exits. Sessions and temp dirs are reported where they are made and
//! removed, through a process-wide handle; so the agents only arm and disarm (src/cli/) and
//! name the few things only they know (the worker's token file; the head's driver and record).
//! An agent that is not armed (unit tests) sends nothing and behaves as before.
//!
//! Safety: it ends only what it was told about, never anything found by name. A pid and its
//! start time (/proc/<pid>/stat field 22) name one process for good, so a reused pid is left
//! alone; a session is named by its leader's pid and start time the same way. Once the leader
//! is gone the session id stays reserved while any process of the session lives (the kernel
//! keeps a pid that names a session); a session that ends normally is forgotten at once, and
//! `done` covers the rest, so the watchdog does not act on a recycled session id.
//!
//! Limits: it lives as long as its agent plus its cleanup (seconds). A scheduler that kills
//! by cgroup kills it with the agent and Ray at the end of a job; temp dirs can stay then. It
//! costs one idle process per agent: a blocking read, no async runtime, about 0.6 MB of memory
//! of its own (the rest of its resident size is the executable's pages, shared with the agent).

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{BufRead, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::supervisor::{KILL_WAIT, STOP_POLL, SessionStop, StopStep, kill_round, proc_stat};
use crate::registry::ClusterDir;

/// One line of what an agent tells its watchdog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Order {
    Session {
        sid: i32,
        start_time: u64,
        what: String,
    },
    ForgetSession {
        sid: i32,
    },
    Path(PathBuf),
    ForgetPath(PathBuf),
    Pid {
        pid: i32,
        start_time: u64,
    },
    Record(PathBuf),
    Done,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("bad line {line:?} from the agent: {why}")]
    BadLine { line: String, why: &'static str },
    #[error("cannot watch {0:?}: a path with a line break cannot be sent to the watchdog")]
    LineBreak(PathBuf),
}

impl Order {
    /// The line for this order, newline included.
    pub fn encode(&self) -> Result<Vec<u8>, ProtocolError> {
        let path_line = |word: &str, p: &Path| {
            let bytes = p.as_os_str().as_bytes();
            if bytes.contains(&b'\n') || bytes.is_empty() {
                return Err(ProtocolError::LineBreak(p.to_path_buf()));
            }
            let mut line = format!("{word} ").into_bytes();
            line.extend_from_slice(bytes);
            Ok(line)
        };
        let mut line = match self {
            Order::Session {
                sid,
                start_time,
                what,
            } => format!("session {sid} {start_time} {}", what.replace('\n', " ")).into_bytes(),
            Order::ForgetSession { sid } => format!("forget-session {sid}").into_bytes(),
            Order::Path(p) => path_line("path", p)?,
            Order::ForgetPath(p) => path_line("forget-path", p)?,
            Order::Pid { pid, start_time } => format!("pid {pid} {start_time}").into_bytes(),
            Order::Record(p) => path_line("record", p)?,
            Order::Done => b"done".to_vec(),
        };
        line.push(b'\n');
        Ok(line)
    }

    /// Parses one line (without its newline).
    pub fn parse(line: &[u8]) -> Result<Order, ProtocolError> {
        let bad = |why| ProtocolError::BadLine {
            line: String::from_utf8_lossy(line).into_owned(),
            why,
        };
        let (word, rest) = match line.iter().position(|b| *b == b' ') {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => (line, &b""[..]),
        };
        let path = || {
            if rest.is_empty() {
                return Err(bad("the path is missing"));
            }
            Ok(PathBuf::from(OsStr::from_bytes(rest)))
        };
        // The numbers of an order, and the free text after them.
        let numbers = |count: usize, why: &'static str| {
            let text = std::str::from_utf8(rest).map_err(|_| bad(why))?;
            let mut fields = text.splitn(count + 1, ' ');
            let mut out = Vec::with_capacity(count);
            for _ in 0..count {
                let n: i64 = fields.next().and_then(|f| f.parse().ok()).ok_or(bad(why))?;
                out.push(n);
            }
            Ok((out, fields.next()))
        };
        // kill(2) reads a pid of 0 or -1 as a whole group or every process: never accepted.
        let pid = |n: i64, why| i32::try_from(n).ok().filter(|p| *p > 1).ok_or(bad(why));
        let start_time = |n: i64| u64::try_from(n).map_err(|_| bad("bad start time"));
        const SESSION: &str = "expected `session <sid above 1> <start time> <what>`";
        const FORGET: &str = "expected `forget-session <sid above 1>`";
        const PID: &str = "expected `pid <pid above 1> <start time>`";
        match word {
            b"session" => {
                let (n, what) = numbers(2, SESSION)?;
                Ok(Order::Session {
                    sid: pid(n[0], SESSION)?,
                    start_time: start_time(n[1])?,
                    what: what.unwrap_or_default().to_string(),
                })
            }
            b"forget-session" => match numbers(1, FORGET)? {
                (n, None) => Ok(Order::ForgetSession {
                    sid: pid(n[0], FORGET)?,
                }),
                _ => Err(bad(FORGET)),
            },
            b"pid" => match numbers(2, PID)? {
                (n, None) => Ok(Order::Pid {
                    pid: pid(n[0], PID)?,
                    start_time: start_time(n[1])?,
                }),
                _ => Err(bad(PID)),
            },
            b"path" => Ok(Order::Path(path()?)),
            b"forget-path" => Ok(Order::ForgetPath(path()?)),
            b"record" => Ok(Order::Record(path()?)),
            b"done" if rest.is_empty() => Ok(Order::Done),
            _ => Err(bad("unknown order")),
        }
    }
}

/// What the watchdog was told to end, as it stands.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Watch {
    sessions: BTreeMap<i32, WatchedSession>,
    pids: BTreeMap<i32, u64>,
    paths: Vec<PathBuf>,
    record: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct WatchedSession {
    start_time: u64,
    what: String,
}

impl Watch {
    /// Takes in one order; false for `done`.
    pub fn apply(&mut self, order: Order) -> bool {
        match order {
            Order::Session {
                sid,
                start_time,
                what,
            } => {
                self.sessions
                    .insert(sid, WatchedSession { start_time, what });
            }
            Order::ForgetSession { sid } => {
                self.sessions.remove(&sid);
            }
            Order::Path(p) => {
                if !self.paths.contains(&p) {
                    self.paths.push(p);
                }
            }
            Order::ForgetPath(p) => self.paths.retain(|q| *q != p),
            Order::Pid { pid, start_time } => {
                self.pids.insert(pid, start_time);
            }
            Order::Record(p) => self.record = Some(p),
            Order::Done => return false,
        }
        true
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
            && self.pids.is_empty()
            && self.paths.is_empty()
            && self.record.is_none()
    }

    fn summary(&self) -> String {
        let mut parts: Vec<String> = self
            .sessions
            .iter()
            .map(|(sid, s)| format!("session {sid} ({})", s.what))
            .collect();
        parts.extend(self.pids.keys().map(|pid| format!("process {pid}")));
        parts.extend(self.paths.iter().map(|p| p.display().to_string()));
        if let Some(r) = &self.record {
            parts.push(format!("the record in {}", r.display()));
        }
        parts.join(", ")
    }
}

/// How a watchdog's watch ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    /// The agent said `done`.
    Disarmed,
    /// The agent went without `done`; what it left was ended.
    AgentGone,
}

/// Whose watchdog this is, for what it logs and writes in the record.
pub struct Agent {
    pub pid: i32,
    pub host: String,
}

/// Reads orders until `done` or the end of input; at the end of input ends what is watched.
pub fn serve(mut input: impl BufRead, grace: Duration, agent: &Agent) -> Ending {
    let mut watch = Watch::default();
    let mut line = Vec::new();
    loop {
        line.clear();
        match input.read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!("watchdog: reading from agent {}: {e}", agent.pid);
                break;
            }
        }
        // A line without its newline is one the agent died writing: not an order.
        if line.pop() != Some(b'\n') {
            break;
        }
        match Order::parse(&line) {
            Ok(order) => {
                if !watch.apply(order) {
                    return Ending::Disarmed;
                }
            }
            Err(e) => tracing::warn!("watchdog: {e}"),
        }
    }
    clean_up(watch, grace, agent);
    Ending::AgentGone
}

fn clean_up(watch: Watch, grace: Duration, agent: &Agent) {
    if watch.is_empty() {
        return; // the agent ended before it started anything
    }
    let started = Instant::now();
    tracing::warn!(
        "watchdog: agent {} on {} ended without tearing down; ending what it left: {}",
        agent.pid,
        agent.host,
        watch.summary()
    );
    end_processes(&watch, grace);
    for path in &watch.paths {
        remove_path(path);
    }
    if let Some(dir) = &watch.record {
        mark_failed(dir, agent);
    }
    tracing::warn!(
        "watchdog: cleaned up after agent {} in {:.1}s",
        agent.pid,
        started.elapsed().as_secs_f64()
    );
}

/// Whether `pid` is still the process that started at `start_time`.
fn is_same_process(pid: i32, start_time: u64) -> bool {
    proc_stat(pid).is_some_and(|st| st.start_time == start_time)
}

/// One watched session being ended.
struct SessionEnd {
    sid: i32,
    start_time: u64,
    what: String,
    stop: SessionStop,
    killing_since: Option<Instant>,
}

/// One watched process being ended.
struct PidEnd {
    pid: i32,
    start_time: u64,
    killed: bool,
}

/// Ends every watched session and process at the same time; returns when none is left (or
/// the SIGKILL rounds gave up on one).
fn end_processes(watch: &Watch, grace: Duration) {
    let started = Instant::now();
    let mut sessions: Vec<SessionEnd> = watch
        .sessions
        .iter()
        .filter_map(|(sid, s)| start_session_end(*sid, s, grace))
        .collect();
    let mut pids: Vec<PidEnd> = watch
        .pids
        .iter()
        .filter(|(pid, start_time)| is_same_process(**pid, **start_time))
        .map(|(pid, start_time)| {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGTERM);
            PidEnd {
                pid: *pid,
                start_time: *start_time,
                killed: false,
            }
        })
        .collect();
    loop {
        sessions.retain_mut(|s| !session_step(s, started));
        pids.retain_mut(|p| !pid_step(p, grace, started));
        if sessions.is_empty() && pids.is_empty() {
            return;
        }
        std::thread::sleep(STOP_POLL);
    }
}

/// Starts ending a watched session, unless none of it is left.
fn start_session_end(sid: i32, s: &WatchedSession, grace: Duration) -> Option<SessionEnd> {
    let leader_ours = is_same_process(sid, s.start_time);
    if !leader_ours && proc_stat(sid).is_some() {
        // The leader's pid is another process's now: the session ended, and its id with it.
        tracing::info!(
            "watchdog: session {sid} ({}) ended already; pid {sid} is another process now",
            s.what
        );
        return None;
    }
    let stop = if leader_ours {
        SessionStop::begin(sid, &s.what, grace)
    } else {
        SessionStop::new(sid, &s.what, grace)
    };
    Some(SessionEnd {
        sid,
        start_time: s.start_time,
        what: s.what.clone(),
        stop,
        killing_since: None,
    })
}

/// One look at a session being ended; true once it is over.
fn session_step(s: &mut SessionEnd, started: Instant) -> bool {
    if let Some(since) = s.killing_since {
        if kill_round(s.sid) {
            log_ended(&format!("session {} ({})", s.sid, s.what), started);
            return true;
        }
        if since.elapsed() >= KILL_WAIT {
            tracing::error!(
                "watchdog: session {} ({}) survives SIGKILL after {KILL_WAIT:?}; giving up",
                s.sid,
                s.what
            );
            return true;
        }
        return false;
    }
    match s.stop.step(!is_same_process(s.sid, s.start_time)) {
        StopStep::Wait => false,
        StopStep::KillRest => {
            s.killing_since = Some(Instant::now());
            false
        }
        StopStep::Done => {
            log_ended(&format!("session {} ({})", s.sid, s.what), started);
            true
        }
    }
}

/// One look at a process being ended; true once it is gone.
fn pid_step(p: &mut PidEnd, grace: Duration, started: Instant) -> bool {
    if !is_same_process(p.pid, p.start_time) {
        log_ended(&format!("process {}", p.pid), started);
        return true;
    }
    if started.elapsed() >= grace + KILL_WAIT {
        tracing::error!("watchdog: process {} survives SIGKILL; giving up", p.pid);
        return true;
    }
    if started.elapsed() >= grace && !p.killed {
        tracing::warn!(
            "watchdog: process {} still running {grace:?} after SIGTERM: SIGKILL",
            p.pid
        );
        p.killed = true;
    }
    if p.killed {
        let _ = kill(Pid::from_raw(p.pid), Signal::SIGKILL);
    }
    false
}

fn log_ended(what: &str, started: Instant) {
    tracing::info!(
        "watchdog: {what} ended after {:.1}s",
        started.elapsed().as_secs_f64()
    );
}

/// Removes a watched file or directory (a link itself, never what it points to).
fn remove_path(path: &Path) {
    let result = match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => tracing::info!("watchdog: removed {}", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!("watchdog: could not remove {}: {e}", path.display()),
    }
}

/// The message a dead head agent leaves in its cluster record.
pub fn head_died_message(agent: &Agent) -> String {
    format!(
        "the head agent (pid {} on {}) died without tearing the cluster down (killed, e.g. out of memory?); its watchdog stopped the processes it had started",
        agent.pid, agent.host
    )
}

/// Marks the record FAILED, unless it says the cluster is over already (`ray-hpc down`, or
/// the agent's own last word).
fn mark_failed(dir: &Path, agent: &Agent) {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let cluster = ClusterDir {
        name,
        path: dir.to_path_buf(),
    };
    let result = cluster.update(|r| {
        if !r.state.is_over() {
            r.state = crate::registry::ClusterState::Failed;
            r.message = Some(head_died_message(agent));
        }
    });
    match result {
        Ok(r) => tracing::info!("watchdog: cluster {} is {:?}", cluster.name, r.state),
        Err(e) => tracing::warn!("watchdog: could not update the cluster record: {e}"),
    }
}

/// What a watchdog ignores: the agent's scheduler signals the agent's whole tree on a cancel,
/// and the agent then tears down and says `done`; until its pipe says so, the watchdog stays.
pub const IGNORED: [Signal; 4] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGUSR1,
];

fn ignore_signals() {
    for sig in IGNORED {
        // SAFETY: SIG_IGN installs no handler; async-signal-safe.
        let _ = unsafe { nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigIgn) };
    }
}

/// `ray-hpc watchdog`: leaves the agent's process tree, then serves this process's stdin for
/// the agent that started it. `agent` is the agent's pid (for messages; default: the parent).
pub fn main(grace: Duration, agent: Option<i32>) -> i32 {
    // Set by the agent already; again for a watchdog started some other way.
    ignore_signals();
    let agent = Agent {
        pid: agent.unwrap_or_else(|| nix::unistd::getppid().as_raw()),
        host: nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "?".into()),
    };
    if let Err(e) = detach() {
        tracing::error!("watchdog: cannot leave the agent's process tree: {e}");
        return 1;
    }
    serve(std::io::stdin().lock(), grace, &agent);
    0
}

/// Forks once more: the parent says the child's pid on stdout and exits, so the child is no
/// longer a descendant of the agent (see the module doc). Runs while this process has one
/// thread, so the child may do anything after the fork.
fn detach() -> std::io::Result<()> {
    // SAFETY: single-threaded here (nothing before this spawns a thread).
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Parent { child } => {
            println!("{child}");
            std::process::exit(0);
        }
        nix::unistd::ForkResult::Child => {
            // The agent reads our pid from stdout until the parent is gone; keep nothing of it.
            let null = File::options().write(true).open("/dev/null")?;
            nix::unistd::dup2_stdout(&null)?;
            Ok(())
        }
    }
}

/// The agent's end of its watchdog.
pub struct Watchdog {
    pipe: Mutex<Option<File>>,
    pid: i32,
}

impl Watchdog {
    /// Starts `cmd` (a `ray-hpc watchdog`) in a session of its own, reading from a pipe whose
    /// write end only this process holds, and deaf to [`IGNORED`] from its first instruction.
    /// Returns once the watchdog left this process's tree (it prints its pid, then its parent
    /// exits).
    pub fn spawn(mut cmd: Command) -> std::io::Result<Watchdog> {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        cmd.stdin(Stdio::from(read)).stdout(Stdio::piped());
        // SAFETY: setsid and signal are async-signal-safe and touch nothing of the parent.
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                // Ignored signals stay ignored across exec: no window before `main` runs.
                ignore_signals();
                Ok(())
            });
        }
        let mut child = cmd.spawn()?;
        // `cmd` goes with its copy of the read end: only the watchdog reads.
        drop(cmd);
        let mut said = String::new();
        let read =
            std::io::BufReader::new(child.stdout.take().expect("piped")).read_line(&mut said);
        let status = child.wait()?;
        let pid = read
            .ok()
            .and_then(|_| said.trim().parse::<i32>().ok())
            .filter(|pid| *pid > 1)
            .ok_or_else(|| {
                std::io::Error::other(format!(
                    "the watchdog did not start ({status}; it said {said:?})"
                ))
            })?;
        Ok(Watchdog {
            pipe: Mutex::new(Some(File::from(write))),
            pid,
        })
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Sends one order; after a failure (the watchdog is gone) sends nothing more.
    pub fn send(&self, order: &Order) {
        let line = match order.encode() {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("{e}");
                return;
            }
        };
        let mut pipe = self.pipe.lock().unwrap();
        let Some(file) = pipe.as_mut() else {
            return;
        };
        // One write of a short line: atomic on a pipe, so orders never interleave.
        if let Err(e) = file.write_all(&line) {
            tracing::warn!(
                "the watchdog is gone ({e}): if this agent is killed, its Ray processes and temp dirs stay"
            );
            *pipe = None;
        }
    }

    /// Says `done` and waits (briefly) for the watchdog to exit.
    pub fn disarm(&self) {
        self.send(&Order::Done);
        if self.pipe.lock().unwrap().take().is_none() {
            return; // gone already
        }
        let deadline = Instant::now() + Duration::from_secs(1);
        while proc_stat(self.pid).is_some() {
            if Instant::now() >= deadline {
                tracing::warn!("the watchdog (pid {}) did not exit after `done`", self.pid);
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

static ARMED: OnceLock<Watchdog> = OnceLock::new();

/// Starts this agent's watchdog (`<this executable> watchdog`). Without one the agent works
/// as before, except that a SIGKILL leaves its Ray behind: a warning, not an error.
pub fn arm(grace: Duration) {
    let started = std::env::current_exe().and_then(|exe| {
        let mut cmd = Command::new(exe);
        cmd.args(["watchdog", "--grace-s", &grace.as_secs().to_string()])
            .args(["--agent", &std::process::id().to_string()]);
        Watchdog::spawn(cmd)
    });
    match started {
        Ok(w) => {
            tracing::debug!("watchdog started (pid {})", w.pid());
            if ARMED.set(w).is_err() {
                tracing::warn!("the watchdog was armed twice");
            }
        }
        Err(e) => tracing::warn!(
            "could not start the watchdog ({e}): if this agent is killed, its Ray processes and temp dirs stay"
        ),
    }
}

/// The agent tore down itself: its watchdog exits doing nothing.
pub fn disarm() {
    if let Some(w) = ARMED.get() {
        w.disarm();
    }
}

fn send(order: Order) {
    if let Some(w) = ARMED.get() {
        w.send(&order);
    }
}

/// Watch session `sid` (our child, not reaped yet).
pub fn watch_session(sid: i32, what: &str) {
    if ARMED.get().is_none() {
        return;
    }
    match proc_stat(sid) {
        Some(st) => send(Order::Session {
            sid,
            start_time: st.start_time,
            what: what.to_string(),
        }),
        // Exited already; its members, if any, are ended by our own stop.
        None => tracing::debug!("session {sid} ({what}) exited before it could be watched"),
    }
}

pub fn forget_session(sid: i32) {
    send(Order::ForgetSession { sid });
}

pub fn watch_path(path: &Path) {
    send(Order::Path(path.to_path_buf()));
}

pub fn forget_path(path: &Path) {
    send(Order::ForgetPath(path.to_path_buf()));
}

/// Watch process `pid` (our child, not reaped yet): ended if the agent dies.
pub fn watch_pid(pid: u32) {
    if ARMED.get().is_none() {
        return;
    }
    if let Some(st) = proc_stat(pid as i32) {
        send(Order::Pid {
            pid: pid as i32,
            start_time: st.start_time,
        });
    }
}

/// Mark this cluster record FAILED if the agent dies.
pub fn watch_record(cluster_dir: &Path) {
    send(Order::Record(cluster_dir.to_path_buf()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::supervisor::{session_members, tail_file};
    use crate::registry::{ClusterRecord, ClusterState};

    fn roundtrip(order: Order) {
        let line = order.encode().unwrap();
        assert_eq!(line.last(), Some(&b'\n'));
        assert_eq!(Order::parse(&line[..line.len() - 1]).unwrap(), order);
    }

    #[test]
    fn every_order_survives_the_pipe() {
        roundtrip(Order::Session {
            sid: 4242,
            start_time: 99,
            what: "ray start".into(),
        });
        roundtrip(Order::Session {
            sid: 7,
            start_time: 1,
            what: String::new(),
        });
        roundtrip(Order::ForgetSession { sid: 4242 });
        roundtrip(Order::Path("/tmp/rh-abc-1".into()));
        roundtrip(Order::Path("/tmp/with space/and\tTab".into()));
        roundtrip(Order::Path(PathBuf::from(OsStr::from_bytes(
            b"/tmp/\xff\xfe",
        ))));
        roundtrip(Order::ForgetPath("/tmp/rh-abc-1.token".into()));
        roundtrip(Order::Pid {
            pid: 31337,
            start_time: 123456789,
        });
        roundtrip(Order::Record("/home/u/.ray-hpc/clusters/c1".into()));
        roundtrip(Order::Done);
    }

    #[test]
    fn a_path_with_a_line_break_is_refused_not_split() {
        let p = PathBuf::from("/tmp/a\npath /etc");
        assert_eq!(
            Order::Path(p.clone()).encode(),
            Err(ProtocolError::LineBreak(p))
        );
        // A label is only words: its line breaks become spaces.
        let line = Order::Session {
            sid: 5,
            start_time: 6,
            what: "a\nb".into(),
        }
        .encode()
        .unwrap();
        assert_eq!(line, b"session 5 6 a b\n");
    }

    #[test]
    fn bad_lines_are_refused_with_what_was_expected() {
        for line in [
            &b"session"[..],
            b"session 12",
            b"session x 12 what",
            b"session 0 12",
            b"session 1 12",
            b"session -1 12",
            b"session 12 -5",
            b"forget-session",
            b"forget-session 12 13",
            b"pid 12",
            b"pid 12 13 14",
            b"pid 99999999999 1",
            b"path",
            b"path ",
            b"record",
            b"done now",
            b"",
            b"kill 1",
        ] {
            let err = Order::parse(line).unwrap_err();
            assert!(
                matches!(err, ProtocolError::BadLine { .. }),
                "{line:?}: {err}"
            );
        }
        let err = Order::parse(b"pid 1 5").unwrap_err().to_string();
        assert!(err.contains("pid <pid above 1> <start time>"), "{err}");
    }

    #[test]
    fn forget_undoes_watch() {
        let mut w = Watch::default();
        assert!(w.apply(Order::Session {
            sid: 10,
            start_time: 1,
            what: "x".into()
        }));
        assert!(w.apply(Order::Path("/a".into())));
        assert!(w.apply(Order::Path("/a".into())));
        assert!(w.apply(Order::Path("/b".into())));
        assert_eq!(w.paths.len(), 2);
        assert!(w.apply(Order::ForgetSession { sid: 10 }));
        assert!(w.apply(Order::ForgetPath("/a".into())));
        assert!(w.apply(Order::ForgetPath("/b".into())));
        assert!(w.is_empty());
        assert!(!w.apply(Order::Done));
    }

    fn agent() -> Agent {
        Agent {
            pid: std::process::id() as i32,
            host: "testhost".into(),
        }
    }

    /// A session like `ray start`'s (bash, with a grandchild that ignores SIGTERM and one in a
    /// process group of its own), started like Supervised does but not stopped by it: the
    /// watchdog is what ends it.
    struct Tree {
        _tmp: tempfile::TempDir,
        sid: i32,
        start_time: u64,
        dir: PathBuf,
        file: PathBuf,
    }

    fn tree() -> Tree {
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("log");
        let dir = tmp.path().join("rh-test-1");
        std::fs::create_dir_all(dir.join("session_latest/logs")).unwrap();
        std::fs::write(dir.join("session_latest/logs/raylet.out"), "x").unwrap();
        let file = tmp.path().join("rh-test-1.token");
        std::fs::write(&file, "secret").unwrap();
        let mut cmd = Command::new("bash");
        cmd.args([
            "-c",
            "(trap '' TERM; sleep 300) & set -m; (sleep 302 &); echo started; wait",
        ])
        .stdout(std::fs::File::create(&log).unwrap());
        // SAFETY: setsid is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap();
        let sid = child.id() as i32;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !tail_file(&log, 5).contains("started") || session_members(sid).len() < 3 {
            assert!(Instant::now() < deadline, "the test tree never started");
            std::thread::sleep(Duration::from_millis(20));
        }
        let start_time = proc_stat(sid).unwrap().start_time;
        // Reaped by a thread, as init reaps an orphan: the leader must not linger as a zombie.
        std::thread::spawn(move || {
            let mut child = child;
            let _ = child.wait();
        });
        Tree {
            _tmp: tmp,
            sid,
            start_time,
            dir,
            file,
        }
    }

    impl Tree {
        fn orders(&self) -> Vec<u8> {
            let mut input = Vec::new();
            for order in [
                Order::Session {
                    sid: self.sid,
                    start_time: self.start_time,
                    what: "test tree".into(),
                },
                Order::Path(self.dir.clone()),
                Order::Path(self.file.clone()),
            ] {
                input.extend(order.encode().unwrap());
            }
            input
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            while !kill_round(self.sid) {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    #[test]
    fn an_agent_gone_without_done_leaves_nothing_behind() {
        let t = tree();
        // The end of this input is the agent's pipe closing: a SIGKILL looks the same.
        let started = Instant::now();
        let ending = serve(&t.orders()[..], Duration::from_secs(30), &agent());
        assert_eq!(ending, Ending::AgentGone);
        assert!(
            session_members(t.sid).is_empty(),
            "left: {:?}",
            session_members(t.sid)
        );
        assert!(!t.dir.exists() && !t.file.exists());
        // The leader stops at SIGTERM; the one ignoring it gets SIGKILL at once after that,
        // not at the end of the grace period.
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn done_leaves_everything_alone() {
        let t = tree();
        let mut input = t.orders();
        input.extend(Order::Done.encode().unwrap());
        // Anything after `done` is not read.
        input.extend(Order::Path("/nonexistent-never".into()).encode().unwrap());
        let ending = serve(&input[..], Duration::from_secs(30), &agent());
        assert_eq!(ending, Ending::Disarmed);
        assert!(session_members(t.sid).len() >= 3);
        assert!(t.dir.exists() && t.file.exists());
    }

    #[test]
    fn what_was_forgotten_is_left_alone() {
        let t = tree();
        let mut input = t.orders();
        input.extend(Order::ForgetSession { sid: t.sid }.encode().unwrap());
        input.extend(Order::ForgetPath(t.dir.clone()).encode().unwrap());
        assert_eq!(
            serve(&input[..], Duration::from_secs(30), &agent()),
            Ending::AgentGone
        );
        assert!(session_members(t.sid).len() >= 3);
        assert!(t.dir.exists());
        assert!(!t.file.exists(), "the file was not forgotten");
    }

    #[test]
    fn a_reused_pid_is_not_signalled() {
        // A process we own, named with a start time it does not have: as if its pid were
        // another process's now.
        let mut sleeper = Command::new("sleep").arg("300").spawn().unwrap();
        let pid = sleeper.id() as i32;
        let real = proc_stat(pid).unwrap().start_time;
        let mut input = Order::Pid {
            pid,
            start_time: real + 1,
        }
        .encode()
        .unwrap();
        // And a session whose leader is another process now.
        input.extend(
            Order::Session {
                sid: pid,
                start_time: real + 1,
                what: "old session".into(),
            }
            .encode()
            .unwrap(),
        );
        serve(&input[..], Duration::from_secs(30), &agent());
        assert_eq!(sleeper.try_wait().unwrap(), None, "the sleeper was killed");
        // Named rightly, it is ended: SIGTERM first.
        let input = Order::Pid {
            pid,
            start_time: real,
        }
        .encode()
        .unwrap();
        serve(&input[..], Duration::from_secs(30), &agent());
        let status = sleeper.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGTERM));
    }

    #[test]
    fn a_process_that_ignores_sigterm_gets_sigkill_after_the_grace() {
        let mut stubborn = Command::new("bash")
            .args(["-c", "trap '' TERM; echo ready; exec sleep 300"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut ready = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(stubborn.stdout.take().unwrap()),
            &mut ready,
        )
        .unwrap();
        let pid = stubborn.id() as i32;
        let input = Order::Pid {
            pid,
            start_time: proc_stat(pid).unwrap().start_time,
        }
        .encode()
        .unwrap();
        let started = Instant::now();
        serve(&input[..], Duration::from_millis(300), &agent());
        let status = stubborn.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        assert!(started.elapsed() >= Duration::from_millis(300));
    }

    #[test]
    fn the_record_of_a_dead_head_says_failed_unless_it_was_over() {
        let root = tempfile::tempdir().unwrap();
        let dir = ClusterDir::create(root.path(), "c1").unwrap();
        let record = ClusterRecord::new("c1", "local", "42", ClusterState::Ready, 2, "token");
        dir.save(&record).unwrap();
        let input = Order::Record(dir.path.clone()).encode().unwrap();
        serve(&input[..], Duration::from_secs(1), &agent());
        let after = dir.load().unwrap();
        assert_eq!(after.state, ClusterState::Failed);
        let msg = after.message.unwrap();
        assert!(msg.contains("head agent") && msg.contains("died"), "{msg}");
        // An ended cluster (`ray-hpc down` came first) keeps its word.
        dir.save(&ClusterRecord {
            state: ClusterState::Ended,
            message: Some("stopped".into()),
            ..record
        })
        .unwrap();
        serve(&input[..], Duration::from_secs(1), &agent());
        let after = dir.load().unwrap();
        assert_eq!(after.state, ClusterState::Ended);
        assert_eq!(after.message.as_deref(), Some("stopped"));
    }

    #[test]
    fn nothing_watched_means_nothing_done() {
        assert_eq!(
            serve(&b""[..], Duration::from_secs(1), &agent()),
            Ending::AgentGone
        );
        // A line the agent died writing is not an order.
        let t = tree();
        let mut input = Order::Session {
            sid: t.sid,
            start_time: t.start_time,
            what: "x".into(),
        }
        .encode()
        .unwrap();
        input.pop();
        serve(&input[..], Duration::from_secs(1), &agent());
        assert!(session_members(t.sid).len() >= 3);
    }

    #[test]
    fn the_agent_end_holds_the_only_write_end() {
        // A stand-in watchdog that detaches like the real one (says its pid, its parent
        // exits), copies its orders to a file and exits at end of input.
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("orders");
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            // fd 3: a background job's stdin is /dev/null unless given another fd.
            &format!(
                "exec 3<&0; (exec cat <&3 3<&- > {}) & echo $!",
                out.display()
            ),
        ]);
        let w = Watchdog::spawn(cmd).unwrap();
        let pid = w.pid();
        let stat = proc_stat(pid).expect("the stand-in runs");
        assert_ne!(stat.session, nix::unistd::getsid(None).unwrap().as_raw());
        // A process started after arming (as Ray is) must not hold the write end, or the
        // watchdog would never see the agent go.
        let mut later = Command::new("sleep").arg("300").spawn().unwrap();
        w.send(&Order::Path("/tmp/x".into()));
        w.send(&Order::Done);
        // Closing our end is what an agent's death does.
        w.pipe.lock().unwrap().take();
        let deadline = Instant::now() + Duration::from_secs(10);
        while proc_stat(pid).is_some() {
            assert!(
                Instant::now() < deadline,
                "no end of input while `sleep` runs"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = later.kill();
        let _ = later.wait();
        assert_eq!(std::fs::read(&out).unwrap(), b"path /tmp/x\ndone\n");
        // Sending to a watchdog that is gone is a warning, not an error.
        w.send(&Order::Done);
    }

    #[test]
    fn a_watchdog_that_does_not_start_is_an_error() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo not a pid"]);
        let err = Watchdog::spawn(cmd).err().unwrap().to_string();
        assert!(
            err.contains("did not start") && err.contains("not a pid"),
            "{err}"
        );
        assert!(Watchdog::spawn(Command::new("/nonexistent/ray-hpc")).is_err());
    }
}
