//! An agent killed with SIGKILL (as the out-of-memory killer does) leaves nothing behind: its
//! watchdog (src/agent/watchdog/) ends the agent's Ray processes and removes its temp dir and
//! token file. On the real Slurm test bed with the real Ray; tests/run sets RAY_HPC_E2E=1.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::job::*;
use common::*;

/// The requirement: a dead agent's Ray is gone within this.
const CLEANUP_LIMIT: Duration = Duration::from_secs(30);

/// One node's Ray, as seen before the kill: the session of its `ray start` (every Ray process
/// of the node is in it) and its temp dir.
struct RayNode {
    temp_dir: PathBuf,
    sid: i32,
}

impl RayNode {
    /// The node whose temp dir is `temp_dir`: found by its `ray start --temp-dir=...`.
    fn find(home: &TestHome, temp_dir: &str) -> RayNode {
        let flag = format!("--temp-dir={temp_dir}");
        let (pid, _) = home
            .leftovers()
            .into_iter()
            .find(|(pid, _)| {
                let a = argv(*pid);
                a.iter().any(|x| x.ends_with("/ray"))
                    && a.contains(&"start".into())
                    && a.contains(&flag)
            })
            .unwrap_or_else(|| panic!("no `ray start {flag}` among {:#?}", home.leftovers()));
        let (_, sid) = proc_parent_and_session(pid).unwrap();
        assert_eq!(sid, pid, "`ray start` leads its own session");
        RayNode {
            temp_dir: PathBuf::from(temp_dir),
            sid,
        }
    }

    /// Its live processes: those of its session, and any other naming its temp dir.
    fn processes(&self, home: &TestHome) -> Vec<(i32, String)> {
        let dir = self.temp_dir.display().to_string();
        let mut found = session_processes(self.sid);
        for (pid, cmd) in home.leftovers() {
            if cmd.contains(&dir) && !found.iter().any(|(p, _)| *p == pid) {
                found.push((pid, cmd));
            }
        }
        found
    }

    fn token_file(&self) -> PathBuf {
        PathBuf::from(format!("{}.token", self.temp_dir.display()))
    }

    /// Nothing of it is left: no process, no temp dir, no token file.
    fn gone(&self, home: &TestHome) -> bool {
        self.processes(home).is_empty() && !self.temp_dir.exists() && !self.token_file().exists()
    }

    /// The Ray processes a user would look for are there.
    fn assert_running(&self, home: &TestHome) {
        let procs = self.processes(home);
        let all: Vec<&str> = procs.iter().map(|(_, c)| c.as_str()).collect();
        // Ray renames its agents once they run (setproctitle).
        for names in [
            &["raylet"][..],
            &["dashboard/agent.py", "ray::DashboardAgent"],
            &["runtime_env/agent/main.py", "ray::RuntimeEnvAgent"],
        ] {
            assert!(
                all.iter().any(|c| names.iter().any(|n| c.contains(n))),
                "no {} for {}: {all:#?}",
                names[0],
                self.temp_dir.display()
            );
        }
        assert!(self.temp_dir.is_dir());
    }
}

fn temp_dir_of_rank(record: &serde_json::Value, rank: u64) -> String {
    record["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["rank"] == rank)
        .and_then(|n| n["temp_dir"].as_str())
        .unwrap_or_else(|| panic!("no node of rank {rank} in {record}"))
        .to_string()
}

fn sigkill(pid: i32) {
    let st = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "kill -KILL {pid}");
}

fn is_alive(pid: i32) -> bool {
    proc_parent_and_session(pid).is_some()
}

/// The only `ray-hpc <sub>` process of this test; panics otherwise.
fn only(home: &TestHome, sub: &str) -> i32 {
    let pids = ray_hpc_processes(home, sub);
    assert_eq!(
        pids.len(),
        1,
        "`ray-hpc {sub}` processes: {:#?}",
        home.leftovers()
    );
    pids[0]
}

/// The watchdog whose agent is `agent` (it says so on its command line).
fn watchdog_of(home: &TestHome, agent: i32) -> i32 {
    let agent_pid = agent.to_string();
    ray_hpc_processes(home, "watchdog")
        .into_iter()
        .find(|pid| {
            argv(*pid)
                .windows(2)
                .any(|w| w[0] == "--agent" && w[1] == agent_pid)
        })
        .unwrap_or_else(|| panic!("no watchdog of agent {agent}: {:#?}", home.leftovers()))
}

/// Waits until `done` holds, at most `CLEANUP_LIMIT` after `since`; returns the time taken.
fn within_limit(
    what: &str,
    since: Instant,
    explain: impl Fn() -> String,
    done: impl Fn() -> bool,
) -> Duration {
    let left = CLEANUP_LIMIT.saturating_sub(since.elapsed());
    wait_for(what, left, || done().then_some(()), explain);
    since.elapsed()
}

/// What the worker watchdogs said: it reaches the worker agents' log only while the step
/// still forwards their output, so it is shown, not required.
fn worker_watchdog_log(home: &TestHome, record: &serde_json::Value) -> String {
    let agents_log = home
        .path()
        .join("clusters")
        .join(record["name"].as_str().unwrap())
        .join("agents.log");
    let said: Vec<String> = std::fs::read_to_string(&agents_log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("watchdog"))
        .map(String::from)
        .collect();
    format!(
        "worker watchdogs in {}:\n{}",
        agents_log.display(),
        said.join("\n")
    )
}

fn hold_driver(release: &Path) -> Vec<String> {
    driver(&["--hold", release.to_str().unwrap()])
}

#[test]
fn a_worker_agent_killed_with_sigkill_leaves_no_ray_behind() {
    if !slurm_testbed() {
        return;
    }
    let home = TestHome::new();
    let release = home.path().join("release");
    let job = submit(&home, 2, 1, &as_strs(&hold_driver(&release)));
    job.wait_output("READY");
    let record = record_for(&home, &job);
    let node = RayNode::find(&home, &temp_dir_of_rank(&record, 1));
    node.assert_running(&home);
    assert!(node.token_file().exists(), "the worker's token file");
    let agent = only(&home, "agent");
    let watchdog = watchdog_of(&home, agent);

    sigkill(agent);
    let killed = Instant::now();
    let explain = || {
        format!(
            "left of {}: {:#?}, dir exists {}, token exists {}\n{}",
            node.temp_dir.display(),
            node.processes(&home),
            node.temp_dir.exists(),
            node.token_file().exists(),
            job.explain()
        )
    };
    let procs_gone = within_limit("the worker's Ray processes to end", killed, explain, || {
        node.processes(&home).is_empty()
    });
    let all_gone = within_limit(
        "the worker's temp dir and token file to go",
        killed,
        explain,
        || node.gone(&home),
    );
    within_limit("the worker's watchdog to exit", killed, explain, || {
        !is_alive(watchdog)
    });
    eprintln!(
        "MEASURED worker agent SIGKILL -> its Ray processes gone: {:.2}s; temp dir and token gone: {:.2}s",
        procs_gone.as_secs_f64(),
        all_gone.as_secs_f64()
    );

    eprintln!("{}", worker_watchdog_log(&home, &record));

    // The rest of the cluster runs on; the driver finishes and the job ends cleanly.
    std::fs::write(&release, "").unwrap();
    job.wait_output("STILL ");
    let (state, code) = job.wait_ended();
    assert_eq!(
        (state.as_str(), code.as_str()),
        ("COMPLETED", "0:0"),
        "{}",
        job.explain()
    );
    assert_clean(&home, &job);
}

#[test]
fn a_head_agent_killed_with_sigkill_takes_the_whole_cluster_with_it() {
    if !slurm_testbed() {
        return;
    }
    let home = TestHome::new();
    let release = home.path().join("release");
    let job = submit(&home, 2, 1, &as_strs(&hold_driver(&release)));
    job.wait_output("READY");
    let record = record_for(&home, &job);
    assert_eq!(record["state"], "READY", "{record}");
    let head_node = RayNode::find(&home, &temp_dir_of_rank(&record, 0));
    let worker_node = RayNode::find(&home, &temp_dir_of_rank(&record, 1));
    head_node.assert_running(&home);
    worker_node.assert_running(&home);
    let head = only(&home, "run");
    let worker_agent = only(&home, "agent");
    let watchdog = watchdog_of(&home, head);
    let driver = home
        .leftovers()
        .into_iter()
        .find(|(_, cmd)| cmd.contains("cluster_check.py"))
        .map(|(pid, _)| pid)
        .unwrap_or_else(|| panic!("no driver among {:#?}", home.leftovers()));

    sigkill(head);
    let killed = Instant::now();
    let explain = || {
        format!(
            "left: {:#?}\nhead node: {:#?}\nworker node: {:#?}\n{}",
            home.leftovers(),
            head_node.processes(&home),
            worker_node.processes(&home),
            job.explain()
        )
    };
    let head_ray = within_limit("the head's Ray processes to end", killed, explain, || {
        head_node.processes(&home).is_empty()
    });
    let driver_gone = within_limit("the driver to end", killed, explain, || !is_alive(driver));
    let workers = within_limit(
        "the worker agent and its Ray to end",
        killed,
        explain,
        || !is_alive(worker_agent) && worker_node.processes(&home).is_empty(),
    );
    let dirs = within_limit("every temp dir to go", killed, explain, || {
        head_node.gone(&home) && worker_node.gone(&home)
    });
    within_limit("the head's watchdog to exit", killed, explain, || {
        !is_alive(watchdog)
    });
    eprintln!(
        "MEASURED head agent SIGKILL -> head's Ray processes gone: {:.2}s; driver gone: {:.2}s; worker agent and its Ray gone: {:.2}s; all temp dirs gone: {:.2}s",
        head_ray.as_secs_f64(),
        driver_gone.as_secs_f64(),
        workers.as_secs_f64(),
        dirs.as_secs_f64()
    );

    eprintln!("{}", worker_watchdog_log(&home, &record));

    // `ray-hpc status` must not show a dead cluster as ready.
    let record = record_for(&home, &job);
    assert_eq!(record["state"], "FAILED", "{record}");
    let message = record["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("head agent") && message.contains("died"),
        "{record}"
    );
    let status = home.command(&["status"]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("FAILED"),
        "{}",
        text(&status)
    );
    // The watchdog said what it did, in the job's output.
    job.wait_output("watchdog: cleaned up after agent");

    let (state, _) = job.wait_ended();
    assert_ne!(state, "COMPLETED", "{}", job.explain());
    assert_clean(&home, &job);
}

/// `root` and every process descended from it (by parent pid), as a scheduler that tracks a
/// task's processes by parentage finds them.
fn process_tree(root: i32) -> Vec<i32> {
    let parents: Vec<(i32, i32)> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| Some((pid, proc_parent_and_session(pid)?.0)))
        .collect();
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    tree
}

#[test]
fn agents_killed_with_their_whole_trees_leave_no_temp_dirs_and_say_failed() {
    if !slurm_testbed() {
        return;
    }
    let home = TestHome::new();
    let release = home.path().join("release");
    let job = submit(&home, 2, 1, &as_strs(&hold_driver(&release)));
    job.wait_output("READY");
    let record = record_for(&home, &job);
    let head_node = RayNode::find(&home, &temp_dir_of_rank(&record, 0));
    let worker_node = RayNode::find(&home, &temp_dir_of_rank(&record, 1));
    head_node.assert_running(&home);
    worker_node.assert_running(&home);

    // What a scheduler tracking processes by parentage does when it ends a job or step at
    // once (seen on the test bed: a step killed 20 ms after its job ended): SIGKILL to each
    // agent's whole tree, its Ray included. Only the watchdogs, which left those trees, can
    // remove what is left.
    let mut doomed = process_tree(only(&home, "run"));
    doomed.extend(process_tree(only(&home, "agent")));
    let watchdogs = ray_hpc_processes(&home, "watchdog");
    assert_eq!(watchdogs.len(), 2, "{:#?}", home.leftovers());
    assert!(
        watchdogs.iter().all(|w| !doomed.contains(w)),
        "a watchdog is in its agent's tree"
    );
    for pid in &doomed {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let killed = Instant::now();
    let explain = || {
        format!(
            "left: {:#?}\nhead dir exists {}, worker dir exists {}, worker token exists {}\n{}",
            home.leftovers(),
            head_node.temp_dir.exists(),
            worker_node.temp_dir.exists(),
            worker_node.token_file().exists(),
            job.explain()
        )
    };
    let gone = within_limit(
        "both nodes' Ray, temp dirs and token to go",
        killed,
        explain,
        || head_node.gone(&home) && worker_node.gone(&home),
    );
    eprintln!(
        "MEASURED agents' trees SIGKILL -> both nodes' temp dirs and token gone: {:.2}s",
        gone.as_secs_f64()
    );
    within_limit("the record to say FAILED", killed, explain, || {
        record_for(&home, &job)["state"] == "FAILED"
    });
    job.wait_ended();
    assert_clean(&home, &job);
}
