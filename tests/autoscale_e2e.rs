//! The autoscaler against the real Slurm test bed and the real Ray: demand becomes worker jobs
//! (shown by Ray's own `ray status` while queued), idle workers go back, infeasible demand is
//! reported and never submitted, refused submissions back off, and no worker job outlives its
//! head. tests/run sets RAY_HPC_E2E=1.

mod common;

use std::process::{Child, Command, Output};
use std::time::Duration;

use common::*;

/// The cluster's jobs (head and workers) in the queue: (id, state).
fn cluster_jobs(name: &str) -> Vec<(String, String)> {
    let out = Command::new("squeue")
        .args(["-h", "-o", "%i %T", "-n", &format!("rh-{name}")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

struct Cluster<'a> {
    home: &'a TestHome,
    name: String,
    env: Vec<(String, String)>,
}

impl<'a> Cluster<'a> {
    fn up(home: &'a TestHome, name: &str, config: &str) -> Self {
        let cfg = home.write(&format!("{name}.toml"), config);
        let out = home
            .command(&[
                "--config",
                cfg.to_str().unwrap(),
                "up",
                "--name",
                name,
                "--nodes",
                "1",
                "--cpus-per-node",
                "1",
                "--time",
                "10",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        let env = exports(&String::from_utf8_lossy(&out.stdout));
        Cluster {
            home,
            name: name.to_string(),
            env,
        }
    }

    fn ray(&self, args: &[&str]) -> Output {
        Command::new(venv_bin().join("ray"))
            .args(args)
            .envs(self.env.iter().cloned())
            .env("PATH", test_path())
            .current_dir(self.home.path())
            .output()
            .unwrap()
    }

    /// What Ray's own `ray status` prints for this cluster.
    fn ray_status(&self) -> String {
        String::from_utf8_lossy(&self.ray(&["status"]).stdout).into_owned()
    }

    /// Waits until `check` finds what it looks for in `ray status`; a timeout shows the
    /// status, the cluster's jobs in the queue and the logs.
    fn wait_for_ray_status<T>(
        &self,
        what: &str,
        within: Duration,
        check: impl Fn(&str) -> Option<T>,
    ) -> T {
        wait_for(
            what,
            within,
            || check(&self.ray_status()),
            || {
                format!(
                    "{}\n{:?}\n{}",
                    self.ray_status(),
                    cluster_jobs(&self.name),
                    self.head_log()
                )
            },
        )
    }

    /// Runs a driver; its output goes to driver.log in the test's home.
    fn driver(&self, code: &str) -> Child {
        let log = std::fs::File::create(self.home.path().join("driver.log")).unwrap();
        Command::new(venv_bin().join("python"))
            .args(["-u", "-c", code])
            .envs(self.env.iter().cloned())
            .env("PATH", test_path())
            .env("RAY_HPC_HOME", self.home.path())
            .current_dir(self.home.path())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    fn driver_log(&self) -> String {
        std::fs::read_to_string(self.home.path().join("driver.log")).unwrap_or_default()
    }

    /// The head's job output and the driver's, for failure messages.
    fn head_log(&self) -> String {
        let head = std::fs::read_to_string(
            self.home
                .path()
                .join(format!("clusters/{}/job.out", self.name)),
        )
        .unwrap_or_default();
        format!(
            "--- head ---\n{head}\n--- driver ---\n{}",
            self.driver_log()
        )
    }

    fn down(&self) {
        let out = self.home.command(&["down", &self.name]).output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
    }
}

const CPU_TYPE: &str = "[autoscaler]\nenabled = true\nmax_workers = 2\nidle_timeout_s = 10\n\n[[node_types]]\nname = \"cpu\"\ncpus = 2\ntime = \"10\"\n";

#[test]
fn demand_becomes_worker_jobs_that_ray_status_shows_and_idle_workers_go_back() {
    if !slurm_testbed() {
        return;
    }
    let home = TestHome::new();
    let c = Cluster::up(&home, "as1", CPU_TYPE);
    let blocker = Blocker::fill("n[2-4]", 3);
    // A burst of 40 one-CPU tasks on a 1-CPU cluster: far more than max_workers = 2 can take.
    let mut driver = c.driver(
        "import ray, time\nray.init()\n@ray.remote(num_cpus=1)\ndef f():\n    time.sleep(1)\n    return ray.get_runtime_context().get_node_id()\nr = ray.get([f.remote() for _ in range(40)])\nprint('DONE on', len(set(r)), 'nodes', flush=True)\n",
    );
    let mut most_jobs = 0;
    // While the worker jobs are queued, Ray's own `ray status` lists them as pending, with the
    // job id and Slurm's reason.
    let pending = c.wait_for_ray_status(
        "ray status to show the queued worker jobs",
        Duration::from_secs(90),
        |st| {
            // (`ray status` prints the details in lower case.)
            let st = st.to_lowercase();
            (st.contains("slurm job") && st.contains("queued (resources)")).then_some(st)
        },
    );
    // ray-hpc status shows them too: worker jobs, queued, with Slurm's reason.
    let st = c
        .home
        .command(&["status", "as1", "--json"])
        .output()
        .unwrap();
    let st: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    let queued_workers = st["cluster"]["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["role"] == "worker" && j["reason"] == "Resources")
        .count();
    assert!(queued_workers >= 1, "{st}");
    let workers: Vec<_> = cluster_jobs("as1").into_iter().skip(1).collect();
    assert!(
        !workers.is_empty() && workers.len() <= 2,
        "max_workers = 2 holds: {workers:?}\n{pending}"
    );
    blocker.release();
    // max_workers holds the whole time: the head's job and at most 2 workers, ever.
    let status = wait_for(
        "the driver to finish",
        Duration::from_secs(180),
        || {
            most_jobs = most_jobs.max(cluster_jobs("as1").len());
            driver.try_wait().unwrap()
        },
        || c.head_log(),
    );
    assert!(
        most_jobs <= 3,
        "more than max_workers: {most_jobs} jobs\n{}",
        c.head_log()
    );
    let out = c.driver_log();
    assert!(
        status.success() && out.contains("DONE on"),
        "{out}\n{}",
        c.head_log()
    );
    let nodes_used: u32 = out
        .lines()
        .find_map(|l| l.strip_prefix("DONE on "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(nodes_used >= 2, "the tasks used the new nodes: {out}");
    assert!(cluster_jobs("as1").len() <= 3, "never more than 2 workers");
    // Idle for idle_timeout_s: drained, and their jobs given back.
    wait_for(
        "the idle workers' jobs to be gone",
        Duration::from_secs(90),
        || (cluster_jobs("as1").len() == 1).then_some(()),
        || format!("{:?}\n{}", cluster_jobs("as1"), c.head_log()),
    );
    let log = c.head_log();
    assert!(log.contains("autoscaler: drained node"), "{log}");
    c.down();
    home.assert_no_leftovers(Duration::from_secs(30));
}

#[test]
fn infeasible_demand_is_reported_and_refused_submissions_back_off() {
    if !slurm_testbed() {
        return;
    }
    let home = TestHome::new();
    // A type the scheduler refuses (no such partition), and no type with a GPU.
    let c = Cluster::up(
        &home,
        "as2",
        "[autoscaler]\nenabled = true\nmax_workers = 2\nbackoff_initial_s = 30\n\n[[node_types]]\nname = \"cpu\"\ncpus = 2\npartition = \"nosuchpartition\"\n",
    );
    let mut driver = c.driver(
        "import ray, time\nray.init()\n@ray.remote\ndef f():\n    return 1\ng = f.options(num_gpus=1).remote()\nh = f.options(num_cpus=2).remote()\nprint('SUBMITTED', flush=True)\ntime.sleep(600)\n",
    );
    // Ray's own `ray status` lists the refused submission under its failures, and the GPU
    // demand; Slurm's words are in the head's log.
    let st = c.wait_for_ray_status(
        "ray status to show the refused submission and the GPU demand",
        Duration::from_secs(90),
        |st| {
            (st.contains("cpu: LaunchFailed") && st.contains("'GPU': 1.0")).then(|| st.to_string())
        },
    );
    let log = c.head_log();
    assert!(log.contains("Invalid partition name specified"), "{log}");
    // Nothing was submitted, for either demand; the refusal backs off (30 s) instead of
    // retrying every poll (1 s).
    assert_eq!(
        cluster_jobs("as2").len(),
        1,
        "only the head: {:?}\n{st}",
        cluster_jobs("as2")
    );
    assert!(
        log.matches("job refused").count() <= 3,
        "no back-off: {log}"
    );
    let status = home.command(&["status", "as2", "--json"]).output().unwrap();
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["cluster"]["state"], "READY", "{status}");
    let demand = status["cluster"]["pending_demand"].to_string();
    assert!(demand.contains("GPU"), "{status}");
    let notes = status["cluster"]["notes"].to_string();
    assert!(
        notes.contains("infeasible") && notes.contains("GPU"),
        "{status}"
    );
    assert!(
        notes.contains("cpu jobs refused") && notes.contains("Invalid partition name"),
        "{status}"
    );
    let _ = driver.kill();
    let _ = driver.wait();
    c.down();
    home.assert_no_leftovers(Duration::from_secs(30));
}

#[test]
fn no_worker_job_outlives_its_heads_job() {
    if !slurm_testbed() {
        return;
    }
    let home = TestHome::new();
    // min_workers = 1: a worker job is kept without any demand.
    let c = Cluster::up(
        &home,
        "as3",
        "[autoscaler]\nenabled = true\nmax_workers = 1\n\n[[node_types]]\nname = \"cpu\"\ncpus = 1\nmin_workers = 1\n",
    );
    c.wait_for_ray_status(
        "the min_workers node to join",
        Duration::from_secs(90),
        |st| st.contains(" 1 cpu").then_some(()),
    );
    let jobs = cluster_jobs("as3");
    assert_eq!(jobs.len(), 2, "{jobs:?}");
    let head_job = home.cluster_record()["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        Command::new("scancel")
            .arg(&head_job)
            .status()
            .unwrap()
            .success()
    );
    wait_for(
        "every job of the cluster to be gone",
        Duration::from_secs(30),
        || cluster_jobs("as3").is_empty().then_some(()),
        || format!("{:?}\n{}", cluster_jobs("as3"), c.head_log()),
    );
    home.assert_no_leftovers(Duration::from_secs(30));
}

#[test]
fn a_strict_spread_group_of_three_gets_two_more_nodes_and_is_created() {
    if !slurm_testbed() {
        return;
    }
    let home = TestHome::new();
    let c = Cluster::up(
        &home,
        "as4",
        "[autoscaler]\nenabled = true\nmax_workers = 3\nidle_timeout_s = 600\n\n[[node_types]]\nname = \"cpu\"\ncpus = 1\n",
    );
    let mut driver = c.driver(
        "import ray\nfrom ray.util.placement_group import placement_group\nray.init()\npg = placement_group([{'CPU': 1}] * 3, strategy='STRICT_SPREAD')\nready = pg.wait(timeout_seconds=150)\nprint('PG READY', ready, flush=True)\nprint('NODES', len(set(ray.util.placement_group_table(pg)['bundles_to_node_id'].values())), flush=True)\n",
    );
    let status = wait_for(
        "the placement group's driver to finish",
        Duration::from_secs(180),
        || driver.try_wait().unwrap(),
        || c.head_log(),
    );
    let out = c.driver_log();
    assert!(
        status.success() && out.contains("PG READY True"),
        "{}",
        c.head_log()
    );
    assert!(
        out.contains("NODES 3"),
        "three distinct nodes: {}",
        c.head_log()
    );
    let workers = cluster_jobs("as4").len() - 1;
    assert_eq!(
        workers,
        2,
        "exactly two more nodes: {:?}",
        cluster_jobs("as4")
    );
    c.down();
    home.assert_no_leftovers(Duration::from_secs(30));
}

#[test]
fn request_resources_scales_up_and_holds_the_nodes() {
    if !slurm_testbed() {
        return;
    }
    let home = TestHome::new();
    let c = Cluster::up(
        &home,
        "as5",
        "[autoscaler]\nenabled = true\nmax_workers = 2\nidle_timeout_s = 5\n\n[[node_types]]\nname = \"cpu\"\ncpus = 1\n",
    );
    // 3 CPUs in all: the head's 1 and two 1-CPU workers, held although nothing runs on them.
    let mut driver = c.driver(
        "import ray, time\nfrom ray.autoscaler.sdk import request_resources\nray.init()\nrequest_resources(num_cpus=3)\nprint('REQUESTED', flush=True)\ntime.sleep(600)\n",
    );
    c.wait_for_ray_status(
        "two workers to join for the request",
        Duration::from_secs(120),
        |st| st.contains(" 2 cpu").then_some(()),
    );
    // Idle far past idle_timeout_s (5 s), and still there while the request holds: several
    // scheduler polls and idle checks go by while we watch the queue.
    let watch_until = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < watch_until {
        assert_eq!(
            cluster_jobs("as5").len(),
            3,
            "a requested node was taken away:\n{}",
            c.head_log()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    assert!(!c.head_log().contains("drained node"), "{}", c.head_log());
    let _ = driver.kill();
    let _ = driver.wait();
    c.down();
    home.assert_no_leftovers(Duration::from_secs(30));
}

#[test]
fn a_refused_node_type_backs_off_and_another_type_takes_the_demand() {
    if !slurm_testbed() {
        return;
    }
    let home = TestHome::new();
    // "big" fits best (fewest nodes) but its partition does not exist; "small" works.
    let c = Cluster::up(
        &home,
        "as6",
        "[autoscaler]\nenabled = true\nmax_workers = 2\nbackoff_initial_s = 600\n\n[[node_types]]\nname = \"big\"\ncpus = 2\npartition = \"nosuchpartition\"\n\n[[node_types]]\nname = \"small\"\ncpus = 1\n",
    );
    let mut driver = c.driver(
        "import ray\nray.init()\n@ray.remote(num_cpus=1)\ndef f():\n    import time; time.sleep(2); return 1\nprint('DONE', sum(ray.get([f.remote() for _ in range(3)])), flush=True)\n",
    );
    let status = wait_for(
        "the driver to finish on the working type's nodes",
        Duration::from_secs(180),
        || driver.try_wait().unwrap(),
        || c.head_log(),
    );
    assert!(
        status.success() && c.driver_log().contains("DONE 3"),
        "{}",
        c.head_log()
    );
    let log = c.head_log();
    assert!(
        log.contains("big job refused") && log.contains("Invalid partition name"),
        "{log}"
    );
    assert!(log.contains("submitted small job"), "{log}");
    assert_eq!(
        log.matches("big job refused").count(),
        1,
        "backing off for 600 s: {log}"
    );
    c.down();
    home.assert_no_leftovers(Duration::from_secs(30));
}

#[test]
fn a_new_head_cancels_worker_jobs_an_earlier_head_of_its_cluster_left() {
    if !slurm_testbed() {
        return;
    }
    let home = TestHome::new();
    // A worker job of cluster as7 from an earlier head (one that was killed, say).
    let out = Command::new("sbatch")
        .args([
            "--parsable",
            "-N",
            "1",
            "-c",
            "1",
            "--time=10",
            "-J",
            "rh-as7",
        ])
        .args(["-o", "/dev/null", "--wrap", "sleep 600"])
        .env_remove("RAY_HPC_HOME")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let stale = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let c = Cluster::up(&home, "as7", CPU_TYPE);
    wait_for(
        "the earlier head's job to be cancelled",
        Duration::from_secs(60),
        || {
            let jobs = cluster_jobs("as7");
            (!jobs.iter().any(|(id, _)| *id == stale)).then_some(())
        },
        || format!("{:?}\n{}", cluster_jobs("as7"), c.head_log()),
    );
    assert!(
        c.head_log().contains("left by an earlier head"),
        "{}",
        c.head_log()
    );
    assert_eq!(cluster_jobs("as7").len(), 1, "the head's own job stays");
    c.down();
    home.assert_no_leftovers(Duration::from_secs(30));
}

#[test]
fn a_worker_job_that_ends_before_joining_is_counted_and_replaced() {
    if !slurm_testbed() {
        return;
    }
    let home = TestHome::new();
    let c = Cluster::up(&home, "as8", CPU_TYPE);
    let head_job = home.cluster_record()["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    let workers = || -> Vec<String> {
        cluster_jobs("as8")
            .into_iter()
            .map(|(id, _)| id)
            .filter(|id| *id != head_job)
            .collect()
    };
    let blocker = Blocker::fill("n[2-4]", 3);
    let mut driver = c.driver(
        // Long enough that the demand outlasts the lost job and its replacement's queueing.
        "import ray\nray.init()\n@ray.remote(num_cpus=1)\ndef f():\n    import time; time.sleep(20); return 1\nprint('DONE', sum(ray.get([f.remote() for _ in range(3)])), flush=True)\n",
    );
    let first = wait_for(
        "a worker job to be queued",
        Duration::from_secs(60),
        || workers().into_iter().next(),
        || c.head_log(),
    );
    // The job goes away before its node ever joins (cancelled by someone, failed to start).
    assert!(
        Command::new("scancel")
            .arg(&first)
            .status()
            .unwrap()
            .success()
    );
    let note = wait_for(
        "status to count the lost job, and a replacement",
        Duration::from_secs(60),
        || {
            let st = home.command(&["status", "as8", "--json"]).output().unwrap();
            let st: serde_json::Value = serde_json::from_slice(&st.stdout).ok()?;
            let notes = st["cluster"]["notes"].to_string();
            let replaced = workers().iter().any(|id| *id != first);
            (notes.contains("1 worker job(s) ended before their node joined") && replaced)
                .then_some(notes)
        },
        || format!("{:?}\n{}", cluster_jobs("as8"), c.head_log()),
    );
    blocker.release();
    let status = wait_for(
        "the driver to finish on the replacement",
        Duration::from_secs(120),
        || driver.try_wait().unwrap(),
        || c.head_log(),
    );
    assert!(
        status.success() && c.driver_log().contains("DONE 3"),
        "{note}\n{}",
        c.head_log()
    );
    c.down();
    home.assert_no_leftovers(Duration::from_secs(30));
}

#[test]
fn a_worker_job_that_starts_after_the_heads_ready_timeout_still_joins() {
    if !slurm_testbed() {
        return;
    }
    let home = TestHome::new();
    // The head's bring-up deadline is ready_timeout_s after its start. A worker job that
    // starts later (demand can come at any time in a cluster's life) must get its own time to
    // join, not what is left of the head's: it used to get 1 s, fail, and be replaced forever.
    let ready_timeout = Duration::from_secs(30);
    let c = Cluster::up(
        &home,
        "as9",
        &format!(
            "ready_timeout_s = {}\n\n[autoscaler]\nenabled = true\nmax_workers = 1\nidle_timeout_s = 300\n\n[[node_types]]\nname = \"cpu\"\ncpus = 1\n",
            ready_timeout.as_secs()
        ),
    );
    let up_at = std::time::Instant::now();
    // The precondition is a time: the head's deadline must be behind us.
    wait_for(
        "the head's ready_timeout_s to pass",
        ready_timeout * 2,
        || (up_at.elapsed() > ready_timeout + Duration::from_secs(2)).then_some(()),
        String::new,
    );
    let mut driver = c.driver(
        "import ray, time\nfrom ray.autoscaler.sdk import request_resources\nray.init()\nrequest_resources(num_cpus=2)\nprint('REQUESTED', flush=True)\ntime.sleep(600)\n",
    );
    c.wait_for_ray_status(
        "the worker to join after the head's deadline",
        Duration::from_secs(120),
        |st| st.contains(" 1 cpu").then_some(()),
    );
    // Joined at the first try: one worker job in the queue, no failed start reported.
    let jobs = cluster_jobs("as9");
    assert_eq!(jobs.len(), 2, "{jobs:?}\n{}", c.head_log());
    let log = c.head_log();
    assert!(!log.contains("failed:"), "{log}");
    let _ = driver.kill();
    let _ = driver.wait();
    c.down();
    home.assert_no_leftovers(Duration::from_secs(30));
}
