//! `ray-hpc watchdog` started as the agents start it (`Watchdog::spawn`): orders over the pipe,
//! cleanup when the agent's end of the pipe closes. Needs neither Ray nor a scheduler.

mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use ray_hpc::agent::watchdog::{Order, Watchdog};

use common::*;

/// A watchdog of this test process, its stderr going to `log`.
fn watchdog(log: &Path) -> Watchdog {
    let mut cmd = Command::new(ray_hpc());
    cmd.args(["watchdog", "--grace-s", "5"])
        .args(["--agent", &std::process::id().to_string()])
        .stderr(std::fs::File::create(log).unwrap());
    Watchdog::spawn(cmd).unwrap()
}

/// A process tree in a session of its own, like `ray start`'s; one of them ignores SIGTERM.
fn session_tree() -> Order {
    let mut cmd = Command::new("bash");
    cmd.args(["-c", "(trap '' TERM; exec sleep 300) & exec sleep 301"])
        .stdin(Stdio::null());
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let sid = child.id() as i32;
    wait_for(
        "the tree to start",
        Duration::from_secs(10),
        || (session_processes(sid).len() == 2).then_some(()),
        || format!("{:?}", session_processes(sid)),
    );
    let stat = std::fs::read_to_string(format!("/proc/{sid}/stat")).unwrap();
    let start_time = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .nth(19)
        .unwrap()
        .parse()
        .unwrap();
    // Reaped as init would reap it once its agent is gone.
    std::thread::spawn(move || child.wait());
    Order::Session {
        sid,
        start_time,
        what: "ray start".into(),
    }
}

fn sid_of(order: &Order) -> i32 {
    match order {
        Order::Session { sid, .. } => *sid,
        _ => unreachable!(),
    }
}

fn wait_gone(pid: i32, log: &Path) {
    wait_for(
        "the watchdog to exit",
        Duration::from_secs(30),
        || proc_parent_and_session(pid).is_none().then_some(()),
        || std::fs::read_to_string(log).unwrap_or_default(),
    );
}

struct Paths {
    _tmp: tempfile::TempDir,
    log: PathBuf,
    dir: PathBuf,
    token: PathBuf,
}

fn paths() -> Paths {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("rh-x-1");
    std::fs::create_dir_all(dir.join("session_latest")).unwrap();
    let token = tmp.path().join("rh-x-1.token");
    std::fs::write(&token, "t").unwrap();
    Paths {
        log: tmp.path().join("watchdog.log"),
        _tmp: tmp,
        dir,
        token,
    }
}

#[test]
fn a_dead_agents_session_and_paths_are_ended_despite_a_cancels_signals() {
    let p = paths();
    let session = session_tree();
    let sid = sid_of(&session);
    let w = watchdog(&p.log);
    let pid = w.pid();
    w.send(&session);
    w.send(&Order::Path(p.dir.clone()));
    w.send(&Order::Path(p.token.clone()));
    // Out of this process's tree (its parent exited), in a session of its own.
    let (ppid, session) = proc_parent_and_session(pid).unwrap();
    assert_ne!(ppid, std::process::id() as i32);
    assert_ne!(
        Some(session),
        proc_parent_and_session(std::process::id() as i32).map(|(_, s)| s)
    );
    assert!(
        cmdline(pid).contains(&format!("--agent {}", std::process::id())),
        "{}",
        cmdline(pid)
    );
    // What a cancel sends the agent's whole tree, and a terminal its foreground group.
    for sig in ["TERM", "INT", "HUP", "USR1"] {
        let st = Command::new("kill")
            .args([&format!("-{sig}"), &pid.to_string()])
            .status()
            .unwrap();
        assert!(st.success());
    }
    // The agent dies: its end of the pipe closes.
    drop(w);
    wait_gone(pid, &p.log);
    let said = std::fs::read_to_string(&p.log).unwrap();
    assert!(
        session_processes(sid).is_empty(),
        "{:?}",
        session_processes(sid)
    );
    assert!(!p.dir.exists() && !p.token.exists(), "{said}");
    assert!(said.contains("cleaned up after agent"), "{said}");
}

#[test]
fn a_disarmed_watchdog_exits_and_leaves_everything_alone() {
    let p = paths();
    let session = session_tree();
    let sid = sid_of(&session);
    let w = watchdog(&p.log);
    let pid = w.pid();
    w.send(&session);
    w.send(&Order::Path(p.dir.clone()));
    w.disarm();
    wait_gone(pid, &p.log);
    assert!(p.dir.exists() && p.token.exists());
    let left = session_processes(sid);
    assert_eq!(left.len(), 2, "{left:?}");
    for (pid, _) in left {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
}
