//! `sbatch job-scripts/ray-cluster.sbatch` on the real Slurm test bed (slurm/testbed/up) with
//! the real Ray. tests/run sets RAY_HPC_E2E=1 and brings the test bed up; without it these
//! tests say they were skipped.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::job::*;
use common::*;

#[test]
fn three_nodes_get_exactly_the_granted_cpus_and_all_run_tasks() {
    if !slurm_testbed() {
        return;
    }
    let home = TestHome::new();
    let job = submit(&home, 3, 1, &as_strs(&driver(&[])));
    let (state, code) = job.wait_ended();
    assert_eq!(
        (state.as_str(), code.as_str()),
        ("COMPLETED", "0:0"),
        "{}",
        job.explain()
    );
    let report = driver_report(&job.output());
    let nodes = report["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3, "{report}");
    for n in nodes {
        // The node has 2 CPUs; the job was granted 1 per node.
        assert_eq!(n["cpus"].as_f64(), Some(1.0), "{report}");
    }
    let mut ips: Vec<&str> = nodes.iter().map(|n| n["ip"].as_str().unwrap()).collect();
    ips.sort();
    assert_eq!(
        ips,
        ["127.0.0.11", "127.0.0.12", "127.0.0.13"],
        "NodeAddr of n1..n3"
    );
    let mut task_nodes: Vec<_> = report["task_nodes"].as_array().unwrap().clone();
    task_nodes.dedup();
    assert_eq!(task_nodes.len(), 3, "a task ran on every node: {report}");
    let rec = record_for(&home, &job);
    assert_eq!(rec["state"], "ENDED", "{rec}");
    assert_eq!(rec["expected_nodes"], 3);
    // The record knows every node as Ray does, with the ports it used.
    let mut recorded: Vec<&str> = rec["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node_id"].as_str().unwrap_or("(none)"))
        .collect();
    let mut seen: Vec<&str> = nodes.iter().map(|n| n["id"].as_str().unwrap()).collect();
    recorded.sort();
    seen.sort();
    assert_eq!(recorded, seen, "{rec}");
    for n in rec["nodes"].as_array().unwrap() {
        assert!(n["ports"]["node_manager"].as_u64().is_some(), "{n}");
    }
    assert_clean(&home, &job);
}

#[test]
fn a_failing_driver_fails_the_job_with_its_exit_code_and_cleans_up() {
    if !slurm_testbed() {
        return;
    }
    let home = TestHome::new();
    // A copy of the script, as users make, finding ray-hpc on PATH (no RAY_HPC_BIN).
    let copy = home.path().join("my-ray-job.sbatch");
    std::fs::copy(repo().join("job-scripts/ray-cluster.sbatch"), &copy).unwrap();
    let job = submit_script(
        &home,
        &copy,
        2,
        1,
        &as_strs(&driver(&["--exit", "3"])),
        &[("RAY_HPC_BIN", Path::new(""))],
    );
    let (state, code) = job.wait_ended();
    assert_eq!(
        (state.as_str(), code.as_str()),
        ("FAILED", "3:0"),
        "{}",
        job.explain()
    );
    assert!(job.output().contains("REPORT "), "{}", job.explain());
    assert_clean(&home, &job);
}

#[test]
fn scancel_mid_run_tears_everything_down() {
    if !slurm_testbed() {
        return;
    }
    let home = TestHome::new();
    let never = home.path().join("never-created");
    let job = submit(
        &home,
        3,
        1,
        &as_strs(&driver(&["--hold", never.to_str().unwrap()])),
    );
    job.wait_output("READY");
    // The token reaches worker agents and Ray only through files and the environment.
    let rec = record_for(&home, &job);
    let token = std::fs::read_to_string(rec["token_path"].as_str().unwrap()).unwrap();
    let procs = home.leftovers();
    assert!(procs.len() > 10, "the cluster's processes: {procs:#?}");
    for (pid, cmdline) in procs {
        assert!(
            !cmdline.contains(token.trim()),
            "process {pid} has the token on its command line"
        );
    }
    job.cancel();
    let (state, _) = job.wait_ended();
    assert_eq!(state, "CANCELLED", "{}", job.explain());
    assert_clean(&home, &job);
    let rec = record_for(&home, &job);
    assert_eq!(rec["state"], "ENDED", "{rec}");
}

#[test]
fn two_clusters_share_the_nodes_and_ending_one_leaves_the_other() {
    if !slurm_testbed() {
        return;
    }
    let home = TestHome::new();
    let release_a = home.path().join("release-a");
    let release_b = home.path().join("release-b");
    let a = submit(
        &home,
        3,
        1,
        &as_strs(&driver(&["--hold", release_a.to_str().unwrap()])),
    );
    let b = submit(
        &home,
        3,
        1,
        &as_strs(&driver(&["--hold", release_b.to_str().unwrap()])),
    );
    a.wait_output("READY");
    b.wait_output("READY");
    let ra = driver_report(&a.output());
    let rb = driver_report(&b.output());
    assert_eq!(ra["nodes"].as_array().unwrap().len(), 3, "{ra}");
    assert_eq!(rb["nodes"].as_array().unwrap().len(), 3, "{rb}");
    assert_ne!(ra["ray_address"], rb["ray_address"]);

    std::fs::write(&release_a, "").unwrap();
    let (state, _) = a.wait_ended();
    assert_eq!(state, "COMPLETED", "{}", a.explain());
    // B is untouched: still running, and its cluster still runs tasks.
    assert_eq!(b.state().0, "RUNNING", "{}", b.explain());
    std::fs::write(&release_b, "").unwrap();
    b.wait_output("STILL ");
    let (state, _) = b.wait_ended();
    assert_eq!(state, "COMPLETED", "{}", b.explain());
    assert_clean(&home, &a);
    assert_clean(&home, &b);
}

/// A `ray` that starts the head but fails (or hangs) on the worker nodes: a stand-in for a
/// broken node, in front of the real Ray. The job's config points `ray.bin` at it.
fn broken_worker_ray(home: &TestHome, worker_behaviour: &str, ready_timeout_s: u32) -> PathBuf {
    let real = venv_bin().join("ray");
    let fake = home.write(
        "ray",
        &format!(
            "#!/bin/sh\ncase \" $* \" in *\" --address=\"*) {worker_behaviour};; esac\nexec {} \"$@\"\n",
            real.display()
        ),
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    home.write(
        "config.toml",
        &format!(
            "ready_timeout_s = {ready_timeout_s}\n[ray]\nbin = {:?}\n",
            fake.display().to_string()
        ),
    )
}

#[test]
fn a_node_whose_ray_fails_fails_the_job_fast_with_its_log() {
    if !slurm_testbed() {
        return;
    }
    let home = TestHome::new();
    let config = broken_worker_ray(
        &home,
        "echo \"simulated raylet failure on $SLURMD_NODENAME\" >&2; exit 1",
        120,
    );
    let started = std::time::Instant::now();
    let job = submit_with(
        &home,
        3,
        1,
        &as_strs(&driver(&[])),
        &[("RAY_HPC_CONFIG", &config)],
    );
    let (state, _) = job.wait_ended();
    assert_eq!(state, "FAILED", "{}", job.explain());
    let out = job.output();
    assert!(
        out.contains("simulated raylet failure on n"),
        "{}",
        job.explain()
    );
    assert!(out.contains("did not come up"), "{}", job.explain());
    assert!(
        out.contains("=== n2 ===") && out.contains("=== n3 ==="),
        "{}",
        job.explain()
    );
    assert!(!out.contains("REPORT "), "the driver must not run: {out}");
    assert!(
        started.elapsed() < Duration::from_secs(90),
        "not fast: {:?}",
        started.elapsed()
    );
    assert_eq!(record_for(&home, &job)["state"], "FAILED");
    home.assert_no_leftovers(Duration::from_secs(30));
}

#[test]
fn nodes_that_never_join_fail_the_job_at_the_timeout_naming_them() {
    if !slurm_testbed() {
        return;
    }
    let home = TestHome::new();
    let config = broken_worker_ray(
        &home,
        "echo \"raylet stuck on $SLURMD_NODENAME\"; exec sleep 600",
        25,
    );
    let job = submit_with(
        &home,
        3,
        1,
        &as_strs(&driver(&[])),
        &[("RAY_HPC_CONFIG", &config)],
    );
    let (state, _) = job.wait_ended();
    assert_eq!(state, "FAILED", "{}", job.explain());
    let out = job.output();
    assert!(out.contains("did not join"), "{}", job.explain());
    assert!(
        out.contains("n2") || out.contains("n3"),
        "names the node: {}",
        job.explain()
    );
    assert!(!out.contains("REPORT "), "the driver must not run: {out}");
    home.assert_no_leftovers(Duration::from_secs(30));
    let rec = record_for(&home, &job);
    for dir in temp_dirs(&rec) {
        assert!(
            !dir.exists(),
            "temp dir {} left\n{}",
            dir.display(),
            job.explain()
        );
    }
}
