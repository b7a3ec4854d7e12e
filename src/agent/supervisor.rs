//! Runs a process tree we own in its own session, and ends exactly that tree.
//!
//! The child calls setsid(), so its pid is also its process group and session id. Ray's
//! processes stay in that session; stopping sends SIGTERM to the group and to every process of
//! the session (in case one moved to a group of its own), waits for a grace period, then sends
//! SIGKILL. Nothing is ever found or killed by name.

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
        .filter(|pid| stat_session(*pid) == Some(sid))
        .collect()
}

fn stat_session(pid: i32) -> Option<i32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name: state ppid pgrp session ...
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    if state == "Z" {
        return None; // a zombie holds nothing; its parent reaps it
    }
    fields.nth(2)?.parse().ok()
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

    /// Ends the whole session. SIGTERM goes to the session leader only: `ray start --block`
    /// then stops Ray's processes in order and exits. SIGTERM to every process at once (as a
    /// scheduler's cancel does) can leave gcs_server waiting forever, so once nothing has
    /// exited for `STALL` (or `grace` is over) the rest get SIGKILL. Once the leader has exited,
    /// what is left gets SIGKILL at once: those are helpers (dashboard modules, agents) that
    /// can take seconds to notice their node is gone, with nothing left to save. Returns when
    /// none is left.
    pub async fn stop(&mut self, grace: Duration) {
        const STALL: Duration = Duration::from_secs(3);
        let sid = self.pid;
        let _ = kill(Pid::from_raw(sid), Signal::SIGTERM);
        let started = Instant::now();
        let mut last_count = usize::MAX;
        let mut last_progress = Instant::now();
        loop {
            self.try_exited();
            let left = session_members(sid);
            if self.exit.is_some() {
                if !left.is_empty() {
                    tracing::debug!(
                        "{} (session {sid}): leader exited after {:.1}s, SIGKILL to the {} left",
                        self.what,
                        started.elapsed().as_secs_f64(),
                        left.len()
                    );
                    self.kill_rest(sid).await;
                }
                break;
            }
            if left.len() < last_count {
                last_count = left.len();
                last_progress = Instant::now();
            }
            if started.elapsed() >= grace || last_progress.elapsed() >= STALL {
                let names: Vec<String> = left
                    .iter()
                    .map(|pid| format!("{pid} {}", cmdline(*pid)))
                    .collect();
                tracing::warn!(
                    "{} (session {sid}) still running {:.1}s after SIGTERM, SIGKILL to: {}",
                    self.what,
                    started.elapsed().as_secs_f64(),
                    names.join("; ")
                );
                self.kill_rest(sid).await;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.child = None;
    }

    async fn kill_rest(&mut self, sid: i32) {
        signal_session(sid, Signal::SIGKILL);
        let _ = self.wait().await;
        // SIGKILL cannot be caught; wait for the kernel to finish with the rest.
        let hard = Instant::now() + Duration::from_secs(10);
        while !session_members(sid).is_empty() && Instant::now() < hard {
            signal_session(sid, Signal::SIGKILL);
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
    fn tail_keeps_the_last_lines() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("f");
        fs::write(&f, "a\nb\nc\nd\n").unwrap();
        assert_eq!(tail_file(&f, 2), "c\nd");
        assert_eq!(tail_file(&tmp.path().join("none"), 2), "");
    }
}
