//! `ray-hpc agent --join NAME`: a node of its own job joins a running cluster, the way the
//! autoscaler's worker jobs do; and a worker whose head is gone leaves. Real Ray, real Slurm.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

fn status(home: &TestHome, name: &str) -> serde_json::Value {
    let out = home.command(&["status", name, "--json"]).output().unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

fn alive_nodes(st: &serde_json::Value) -> Vec<serde_json::Value> {
    st["cluster"]["nodes"]
        .as_array()
        .map(|n| {
            n.iter()
                .filter(|n| matches!(n["status"].as_str(), Some("RUNNING" | "IDLE")))
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

fn spawn(home: &TestHome, args: &[&str]) -> Child {
    home.command(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn sigterm_and_wait(child: &mut Child) -> std::process::ExitStatus {
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    wait_for(
        "the process to exit",
        Duration::from_secs(60),
        || child.try_wait().unwrap(),
        String::new,
    )
}

#[test]
fn a_local_node_joins_and_leaves_a_running_cluster() {
    let home = TestHome::new();
    let mut head = spawn(&home, &["--scheduler", "local", "run", "--name", "j1"]);
    wait_for(
        "cluster j1 to be ready",
        Duration::from_secs(120),
        || (status(&home, "j1")["cluster"]["state"] == "READY").then_some(()),
        || status(&home, "j1").to_string(),
    );
    let mut joiner = spawn(
        &home,
        &[
            "--scheduler",
            "local",
            "agent",
            "--join",
            "j1",
            "--node-type",
            "cpu",
        ],
    );
    let joiner_job = format!("local-{}", joiner.id());
    let nodes = wait_for(
        "the joining node to be alive",
        Duration::from_secs(120),
        || {
            let nodes = alive_nodes(&status(&home, "j1"));
            (nodes.len() == 2).then_some(nodes)
        },
        || status(&home, "j1").to_string(),
    );
    let joined = nodes
        .iter()
        .find(|n| n["node_type"] == "cpu")
        .unwrap_or_else(|| panic!("no node of type cpu: {nodes:?}"));
    // Ray knows the node by the job it runs in (RAY_CLOUD_INSTANCE_ID).
    assert_eq!(joined["instance_id"], joiner_job.as_str(), "{nodes:?}");

    // The node leaves when its agent is stopped, and the cluster goes on.
    assert!(sigterm_and_wait(&mut joiner).code().is_some());
    wait_for(
        "the cluster to be back to one alive node",
        Duration::from_secs(60),
        || (alive_nodes(&status(&home, "j1")).len() == 1).then_some(()),
        || status(&home, "j1").to_string(),
    );
    assert_eq!(status(&home, "j1")["cluster"]["state"], "READY");
    sigterm_and_wait(&mut head);
    home.assert_no_leftovers(Duration::from_secs(30));
}

#[test]
fn a_worker_job_joins_over_slurm_and_leaves_when_the_head_job_is_cancelled() {
    if !slurm_testbed() {
        return;
    }
    let home = TestHome::new();
    let out = home
        .command(&["up", "--name", "j2", "--nodes", "1", "--time", "10"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let head_job = status(&home, "j2")["cluster"]["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    let worker = Command::new("sbatch")
        .args([
            "--parsable",
            "-N",
            "1",
            "-c",
            "1",
            "--time=10",
            "-J",
            "rh-j2",
        ])
        .arg(format!("--output={}/worker-%j.out", home.path().display()))
        .arg("--wrap")
        .arg(format!(
            "exec {} agent --join j2 --node-type cpu",
            ray_hpc().display()
        ))
        .env("RAY_HPC_HOME", home.path())
        .env("PATH", test_path())
        .output()
        .unwrap();
    assert!(worker.status.success(), "{}", text(&worker));
    let worker_job = String::from_utf8_lossy(&worker.stdout).trim().to_string();
    let worker_log = || {
        std::fs::read_to_string(home.path().join(format!("worker-{worker_job}.out")))
            .unwrap_or_default()
    };
    let nodes = wait_for(
        "the worker job's node to join",
        Duration::from_secs(120),
        || {
            let nodes = alive_nodes(&status(&home, "j2"));
            (nodes.len() == 2).then_some(nodes)
        },
        || format!("{}\n{}", status(&home, "j2"), worker_log()),
    );
    assert!(
        nodes
            .iter()
            .any(|n| n["instance_id"] == worker_job.as_str() && n["node_type"] == "cpu"),
        "{nodes:?}"
    );

    // The head's job ends: the worker hears nothing more and leaves within 30 s.
    assert!(
        Command::new("scancel")
            .arg(&head_job)
            .status()
            .unwrap()
            .success()
    );
    let squeue_state = |id: &str| {
        let o = Command::new("squeue")
            .args(["-h", "-o", "%T", "-j", id])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    wait_for(
        "the worker job to end after its head",
        Duration::from_secs(45),
        || squeue_state(&worker_job).is_empty().then_some(()),
        || {
            format!(
                "worker job state {:?}\n{}",
                squeue_state(&worker_job),
                worker_log()
            )
        },
    );
    // A cancelled head tells its workers to shut down on its way out; a head that dies
    // without a word is noticed by silence on the control stream.
    let log = worker_log();
    assert!(
        log.contains("head says shut down") || log.contains("tearing down"),
        "{log}"
    );
    home.assert_no_leftovers(Duration::from_secs(30));
}
