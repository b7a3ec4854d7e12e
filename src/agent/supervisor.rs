//! Runs a process tree we own in its own session, and ends exactly that tree.
//!
//! The child calls setsid(), so its pid is also its process group and session id. Ray's
//! processes stay in that session; stopping sends SIGTERM to the session leader, waits for
//! the session to empty, then sends SIGKILL to every process of the session (in case one
//! moved to a group of its own). Nothing is ever found or killed by name. A session of its
//! own also escapes the scheduler's cleanup once its parent is gone, so while an agent runs,
//! its watchdog (src/agent/watchdog/) knows every live session and ends it if the agent
//! dies without doing so itself.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

pub struct Supervised {
    what: String,
    child: Option<tokio::process::Child>,
    pid: i32,
    log_path: PathBuf,
    exit: Option<ExitStatus>,
}

/// Pids of every process whose session id is `sid` (from /proc/<pid>/stat).
pub fn session_members(sid: i32) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return vec![];
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| proc_stat(*pid).is_some_and(|st| st.session == sid))
        .collect()
}

/// What /proc/<pid>/stat says about a live process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub session: i32,
    /// Clock ticks after boot when it started: with the pid, a process's identity (a pid is
    /// reused, a pid and start time are not).
    pub start_time: u64,
}

/// None when `pid` does not exist or is a zombie (a zombie holds nothing; its parent reaps it).
pub fn proc_stat(pid: i32) -> Option<ProcStat> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat)
}

fn parse_stat(stat: &str) -> Option<ProcStat> {
    // The command name is in parentheses and may hold anything; the fields after it are
    // state(3) ppid pgrp session(6) ... starttime(22).
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if *fields.first()? == "Z" {
        return None;
    }
    Some(ProcStat {
        session: fields.get(3)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

/// The command line of `pid`, shortened, for messages.
fn cmdline(pid: i32) -> String {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let text: String = String::from_utf8_lossy(&raw).replace('\0', " ");
    text.chars().take(120).collect()
}

fn signal_session(sid: i32, sig: Signal) {
    let _ = killpg(Pid::from_raw(sid), sig);
    for pid in session_members(sid) {
        let _ = kill(Pid::from_raw(pid), sig);
    }
}

impl Supervised {
    /// Spawns `cmd` in a new session with stdin closed and stdout+stderr appended to `log_path`.
    pub fn spawn(mut cmd: Command, log_path: &Path, what: &str) -> std::io::Result<Self> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)?;
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // SAFETY: setsid is async-signal-safe and touches nothing of the parent.
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                Ok(())
            });
        }
        let child = tokio::process::Command::from(cmd).spawn()?;
        let pid = child.id().expect("a just-spawned child has a pid") as i32;
        // Not reaped yet, so this pid is still our child's.
        super::watchdog::watch_session(pid, what);
        Ok(Supervised {
            what: what.to_string(),
            child: Some(child),
            pid,
            log_path: log_path.to_path_buf(),
            exit: None,
        })
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    pub fn what(&self) -> &str {
        &self.what
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Waits for the session leader to exit (cancel-safe).
    pub async fn wait(&mut self) -> ExitStatus {
        if let Some(status) = self.exit {
            return status;
        }
        let child = self.child.as_mut().expect("child present until stopped");
        let status = match child.wait().await {
            Ok(s) => s,
            Err(_) => std::os::unix::process::ExitStatusExt::from_raw(1 << 8),
        };
        self.exit = Some(status);
        status
    }

    pub fn try_exited(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.exit = Some(status);
                }
            }
        }
        self.exit
    }

    /// Ends the whole session (see [`SessionStop`]); returns when none of it is left.
    pub async fn stop(&mut self, grace: Duration) {
        let sid = self.pid;
        let mut stop = SessionStop::begin(sid, &self.what, grace);
        loop {
            self.try_exited();
            match stop.step(self.exit.is_some()) {
                StopStep::Wait => tokio::time::sleep(STOP_POLL).await,
                StopStep::KillRest => {
                    self.kill_rest(sid).await;
                    break;
                }
                StopStep::Done => break,
            }
        }
        self.child = None;
        forget_if_gone(sid);
    }

    async fn kill_rest(&mut self, sid: i32) {
        signal_session(sid, Signal::SIGKILL);
        let _ = self.wait().await;
        // SIGKILL cannot be caught; wait for the kernel to finish with the rest.
        let hard = Instant::now() + KILL_WAIT;
        while !kill_round(sid) && Instant::now() < hard {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The last `lines` lines of the process's own log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail_file(&self.log_path, lines)
    }
}

impl Drop for Supervised {
    // A safety net for early returns and panics: never leave the session running.
    fn drop(&mut self) {
        if self.child.is_none() {
            return; // stopped already
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while (self.try_exited().is_none() || !session_members(self.pid).is_empty())
            && Instant::now() < deadline
        {
            signal_session(self.pid, Signal::SIGKILL);
            std::thread::sleep(Duration::from_millis(20));
        }
        forget_if_gone(self.pid);
    }
}

/// How often a stop looks at what is left of a session.
pub const STOP_POLL: Duration = Duration::from_millis(50);
/// How long SIGKILL rounds go on before a stop gives up on what is left (a process stuck in
/// the kernel, say).
pub const KILL_WAIT: Duration = Duration::from_secs(10);

/// The steps of ending one session, shared by [`Supervised::stop`] and the watchdog (which
/// ends the sessions of an agent that died, so it is not the leader's parent).
///
/// SIGTERM goes to the session leader only: `ray start --block` then stops Ray's processes in
/// order and exits. SIGTERM to every process at once (as a scheduler's cancel does) can leave
/// gcs_server waiting forever, so once nothing has exited for `STALL` (or `grace` is over) the
/// rest get SIGKILL. Once the leader has exited, what is left gets SIGKILL at once: those are
/// helpers (dashboard modules, agents) that can take seconds to notice their node is gone,
/// with nothing left to save.
pub struct SessionStop {
    sid: i32,
    what: String,
    grace: Duration,
    started: Instant,
    last_count: usize,
    last_progress: Instant,
}

/// What to do next in a [`SessionStop`].
#[derive(Debug, PartialEq, Eq)]
pub enum StopStep {
    /// Look again after [`STOP_POLL`].
    Wait,
    /// SIGKILL what is left ([`kill_round`] until it says none is).
    KillRest,
    /// Nothing is left.
    Done,
}

impl SessionStop {
    /// Sends SIGTERM to the leader of session `sid`.
    pub fn begin(sid: i32, what: &str, grace: Duration) -> Self {
        let _ = kill(Pid::from_raw(sid), Signal::SIGTERM);
        Self::new(sid, what, grace)
    }

    /// A stop of a session whose leader is gone already (nothing to send SIGTERM to).
    pub fn new(sid: i32, what: &str, grace: Duration) -> Self {
        SessionStop {
            sid,
            what: what.to_string(),
            grace,
            started: Instant::now(),
            last_count: usize::MAX,
            last_progress: Instant::now(),
        }
    }

    /// One look at the session; `leader_exited` says whether its leader is gone.
    pub fn step(&mut self, leader_exited: bool) -> StopStep {
        const STALL: Duration = Duration::from_secs(3);
        let sid = self.sid;
        let left = session_members(sid);
        if leader_exited {
            if left.is_empty() {
                return StopStep::Done;
            }
            tracing::debug!(
                "{} (session {sid}): leader exited after {:.1}s, SIGKILL to the {} left",
                self.what,
                self.started.elapsed().as_secs_f64(),
                left.len()
            );
            return StopStep::KillRest;
        }
        if left.len() < self.last_count {
            self.last_count = left.len();
            self.last_progress = Instant::now();
        }
        if self.started.elapsed() >= self.grace || self.last_progress.elapsed() >= STALL {
            let names: Vec<String> = left
                .iter()
                .map(|pid| format!("{pid} {}", cmdline(*pid)))
                .collect();
            tracing::warn!(
                "{} (session {sid}) still running {:.1}s after SIGTERM, SIGKILL to: {}",
                self.what,
                self.started.elapsed().as_secs_f64(),
                names.join("; ")
            );
            return StopStep::KillRest;
        }
        StopStep::Wait
    }
}

/// One round of SIGKILL to every process of session `sid`; true once none is left.
pub fn kill_round(sid: i32) -> bool {
    signal_session(sid, Signal::SIGKILL);
    session_members(sid).is_empty()
}

/// Tells the watchdog (when armed) that session `sid` is over, unless some of it is left.
fn forget_if_gone(sid: i32) {
    if session_members(sid).is_empty() {
        super::watchdog::forget_session(sid);
    }
}

/// Raises this process's soft open-files limit to its hard limit (where the kernel allows it),
/// so that the Ray processes it starts inherit it. Returns the soft limit before and after.
/// Never fails: on any error the limit stays as it was.
pub fn raise_nofile_limit() -> (u64, u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    // rlim_t is u64 on Linux, and RLIM_INFINITY is u64::MAX.
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return (0, 0);
    };
    if soft >= hard {
        return (soft, soft);
    }
    // An unlimited hard limit cannot be a soft NOFILE limit: the kernel caps it at nr_open.
    let mut targets = vec![hard];
    if let Some(nr_open) = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok())
        .filter(|n| *n < hard && *n > soft)
    {
        targets.push(nr_open);
    }
    for target in targets {
        if setrlimit(Resource::RLIMIT_NOFILE, target, hard).is_ok() {
            return (soft, target);
        }
    }
    (soft, soft)
}

/// The last `lines` lines of a file (reads at most its last 64 KiB); empty if unreadable.
pub fn tail_file(path: &Path, lines: usize) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Tails of the logs that explain why a Ray node failed: our `ray start` log and Ray's own
/// error logs under the temp dir.
pub fn ray_failure_logs(start_log: &Path, temp_dir: &Path, lines: usize) -> String {
    let mut out = String::new();
    let mut add = |path: &Path| {
        let tail = tail_file(path, lines);
        if !tail.trim().is_empty() {
            out.push_str(&format!("--- {} ---\n{}\n", path.display(), tail));
        }
    };
    add(start_log);
    let logs = temp_dir.join("session_latest/logs");
    for name in [
        "raylet.err",
        "raylet.out",
        "gcs_server.err",
        "gcs_server.out",
    ] {
        add(&logs.join(name));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A supervised `bash -c script`, once it has printed "started" (the temp dir holds its log).
    async fn spawn_started(script: &str) -> (tempfile::TempDir, Supervised) {
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("log");
        let mut cmd = Command::new("bash");
        cmd.args(["-c", script]);
        let p = Supervised::spawn(cmd, &log, "test tree").unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !tail_file(&log, 5).contains("started") {
            assert!(Instant::now() < deadline, "never started");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (tmp, p)
    }

    #[tokio::test]
    async fn stop_ends_the_whole_session_including_grandchildren() {
        // A grandchild that ignores SIGTERM, and one in a process group of its own (job control).
        let (_tmp, mut p) =
            spawn_started("(trap '' TERM; sleep 300) & set -m; (sleep 302 &) ; echo started; wait")
                .await;
        let sid = p.pid();
        assert!(session_members(sid).len() >= 2);
        p.stop(Duration::from_millis(300)).await;
        assert!(
            session_members(sid).is_empty(),
            "left: {:?}",
            session_members(sid)
        );
    }

    #[tokio::test]
    async fn once_the_leader_is_gone_stragglers_do_not_hold_the_stop() {
        // The leader exits on SIGTERM (bash's default); its child ignores SIGTERM, like a Ray
        // helper that has not noticed its node is gone.
        let (_tmp, mut p) = spawn_started("(trap '' TERM; sleep 300) & echo started; wait").await;
        let sid = p.pid();
        let started = Instant::now();
        p.stop(Duration::from_secs(60)).await;
        assert!(session_members(sid).is_empty());
        // Not the grace period, nor the 3 s without progress that ends a stalled stop.
        assert!(
            started.elapsed() < Duration::from_millis(2500),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn raising_the_soft_limit_reaches_the_hard_one() {
        use nix::sys::resource::{Resource, getrlimit};
        let (before, after) = raise_nofile_limit();
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!(after, soft);
        assert!(after >= before);
        // Unless the hard limit is above what the kernel allows (unlimited), soft is hard now.
        let nr_open: u64 = std::fs::read_to_string("/proc/sys/fs/nr_open")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        if hard <= nr_open {
            assert_eq!(soft, hard);
        }
        // A second call changes nothing.
        assert_eq!(raise_nofile_limit(), (after, after));
    }

    #[test]
    fn stat_fields_are_found_after_any_command_name() {
        // comm may hold spaces and parentheses; only the last ')' ends it.
        let stat =
            "4242 (ray::a) b (c) S 1 4242 4242 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 3 0 987654 1 2";
        assert_eq!(
            parse_stat(stat),
            Some(ProcStat {
                session: 4242,
                start_time: 987654
            })
        );
        assert_eq!(parse_stat(&stat.replace(") S ", ") Z ")), None);
        assert_eq!(parse_stat("4242 (cut"), None);
        assert_eq!(parse_stat("4242 (x) S 1 2"), None);
        let me = proc_stat(std::process::id() as i32).unwrap();
        assert_eq!(me.session, nix::unistd::getsid(None).unwrap().as_raw());
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("f");
        fs::write(&f, "a\nb\nc\nd\n").unwrap();
        assert_eq!(tail_file(&f, 2), "c\nd");
        assert_eq!(tail_file(&tmp.path().join("none"), 2), "");
    }
}
