//! The agent's side: its [`Watchdog`], and the process-wide handle through which the places
//! that start sessions, processes and temp dirs report them (a no-op while not armed).

use std::fs::File;
use std::io::{BufRead, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::protocol::Order;
use super::serve::ignore_signals;
use crate::agent::supervisor::proc_stat;

/// The agent's end of its watchdog.
pub struct Watchdog {
    pipe: Mutex<Option<File>>,
    pid: i32,
}

impl Watchdog {
    /// Starts `cmd` (a `ray-hpc watchdog`) in a session of its own, reading from a pipe whose
    /// write end only this process holds, and deaf to [`IGNORED`](super::IGNORED) from its
    /// first instruction. Returns once the watchdog left this process's tree (it prints its
    /// pid, then its parent exits).
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
