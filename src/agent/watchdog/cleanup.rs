//! What a watchdog does once its agent is gone: ends the watched sessions and processes,
//! removes the watched paths and marks the record FAILED.

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::watch::{Watch, WatchedSession};
use crate::agent::supervisor::{
    KILL_WAIT, STOP_POLL, SessionStop, StopStep, kill_round, proc_stat,
};
use crate::registry::{ClusterDir, ClusterState};

/// Whose watchdog this is, for what it logs and writes in the record.
pub struct Agent {
    pub pid: i32,
    pub host: String,
}

/// Ends, removes and marks what `watch` names, saying so on stderr.
pub(super) fn clean_up(watch: Watch, grace: Duration, agent: &Agent) {
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
        .filter_map(|(pid, start_time)| start_pid_end(*pid, *start_time))
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

/// Starts ending a watched process with SIGTERM, unless its pid is another process's now.
fn start_pid_end(pid: i32, start_time: u64) -> Option<PidEnd> {
    if !is_same_process(pid, start_time) {
        return None;
    }
    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    Some(PidEnd {
        pid,
        start_time,
        killed: false,
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
            r.state = ClusterState::Failed;
            r.message = Some(head_died_message(agent));
        }
    });
    match result {
        Ok(r) => tracing::info!("watchdog: cluster {} is {:?}", cluster.name, r.state),
        Err(e) => tracing::warn!("watchdog: could not update the cluster record: {e}"),
    }
}

#[cfg(test)]
impl Agent {
    /// This test process, as the agent.
    pub(super) fn this_process() -> Agent {
        Agent {
            pid: std::process::id() as i32,
            host: "testhost".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Command, Stdio};

    use super::*;
    use crate::agent::watchdog::protocol::Order;
    use crate::registry::ClusterRecord;

    fn watching(orders: impl IntoIterator<Item = Order>) -> Watch {
        let mut watch = Watch::default();
        for order in orders {
            watch.apply(order);
        }
        watch
    }

    #[test]
    fn a_reused_pid_is_not_signalled() {
        // A process we own, named with a start time it does not have: as if its pid were
        // another process's now.
        let mut sleeper = Command::new("sleep").arg("300").spawn().unwrap();
        let pid = sleeper.id() as i32;
        let real = proc_stat(pid).unwrap().start_time;
        let watch = watching([
            Order::Pid {
                pid,
                start_time: real + 1,
            },
            // And a session whose leader is another process now.
            Order::Session {
                sid: pid,
                start_time: real + 1,
                what: "old session".into(),
            },
        ]);
        clean_up(watch, Duration::from_secs(30), &Agent::this_process());
        assert_eq!(sleeper.try_wait().unwrap(), None, "the sleeper was killed");
        // Named rightly, it is ended: SIGTERM first.
        let watch = watching([Order::Pid {
            pid,
            start_time: real,
        }]);
        clean_up(watch, Duration::from_secs(30), &Agent::this_process());
        let status = sleeper.wait().unwrap();
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
        let watch = watching([Order::Pid {
            pid,
            start_time: proc_stat(pid).unwrap().start_time,
        }]);
        let started = Instant::now();
        clean_up(watch, Duration::from_millis(300), &Agent::this_process());
        let status = stubborn.wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        assert!(started.elapsed() >= Duration::from_millis(300));
    }

    #[test]
    fn the_record_of_a_dead_head_says_failed_unless_it_was_over() {
        let root = tempfile::tempdir().unwrap();
        let dir = ClusterDir::create(root.path(), "c1").unwrap();
        let record = ClusterRecord::new("c1", "local", "42", ClusterState::Ready, 2, "token");
        dir.save(&record).unwrap();
        let watch = || watching([Order::Record(dir.path.clone())]);
        clean_up(watch(), Duration::from_secs(1), &Agent::this_process());
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
        clean_up(watch(), Duration::from_secs(1), &Agent::this_process());
        let after = dir.load().unwrap();
        assert_eq!(after.state, ClusterState::Ended);
        assert_eq!(after.message.as_deref(), Some("stopped"));
    }
}
