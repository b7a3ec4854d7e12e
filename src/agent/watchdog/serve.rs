//! The watchdog process: `ray-hpc watchdog` leaves its agent's tree, reads orders until
//! `done` or the end of input, and at the end of input cleans up after the agent.

use std::fs::File;
use std::io::BufRead;
use std::time::Duration;

use nix::sys::signal::Signal;

use super::cleanup::{Agent, clean_up};
use super::protocol::Order;
use super::watch::Watch;

/// How a watchdog's watch ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    /// The agent said `done`.
    Disarmed,
    /// The agent went without `done`; what it left was ended.
    AgentGone,
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

/// What a watchdog ignores: the agent's scheduler signals the agent's whole tree on a cancel,
/// and the agent then tears down and says `done`; until its pipe says so, the watchdog stays.
pub const IGNORED: [Signal; 4] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGUSR1,
];

pub(super) fn ignore_signals() {
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
/// longer a descendant of the agent (see watchdog/mod.rs). Runs while this process has one
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

#[cfg(test)]
mod tests {
    use std::os::unix::process::CommandExt;
    use std::path::PathBuf;
    use std::process::Command;
    use std::time::Instant;

    use super::*;
    use crate::agent::supervisor::{kill_round, proc_stat, session_members, tail_file};

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
        let ending = serve(
            &t.orders()[..],
            Duration::from_secs(30),
            &Agent::this_process(),
        );
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
        let ending = serve(&input[..], Duration::from_secs(30), &Agent::this_process());
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
            serve(&input[..], Duration::from_secs(30), &Agent::this_process()),
            Ending::AgentGone
        );
        assert!(session_members(t.sid).len() >= 3);
        assert!(t.dir.exists());
        assert!(!t.file.exists(), "the file was not forgotten");
    }

    #[test]
    fn nothing_watched_means_nothing_done() {
        assert_eq!(
            serve(&b""[..], Duration::from_secs(1), &Agent::this_process()),
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
        serve(&input[..], Duration::from_secs(1), &Agent::this_process());
        assert!(session_members(t.sid).len() >= 3);
    }
}
