//! ray-hpc on LSF, end to end with the real Ray, against the LSF STAND-IN of lsf/testbed (LSF's
//! commands carried out on the Slurm test bed: NOT IBM LSF, which cannot be installed here).
//! What these tests check is ray-hpc's side: `ray-bsub` and the job environment LSF documents,
//! both fan-out modes (blaunch; one lsrun per host where there is none), bkill, `up --scheduler
//! lsf` with status/submit/down, autoscaling through bsub/bjobs/bkill, and a refused bsub.
//! tests/run sets RAY_HPC_E2E=1.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::*;

/// `job-scripts/ray-bsub` with these bsub options and driver, against the stand-in at `bin`.
fn ray_bsub(home: &TestHome, bin: &Path, bsub: &[&str], driver: &[&str]) -> Command {
    let mut cmd = Command::new(repo().join("job-scripts/ray-bsub"));
    cmd.args(bsub)
        .arg("--")
        .args(driver)
        .env("RAY_HPC_HOME", home.path())
        .env("PATH", LsfStandin::path(bin))
        .env("RAY_HPC_BIN", ray_hpc())
        .env_remove("VIRTUAL_ENV")
        .current_dir(home.path());
    cmd
}

fn cluster_check(args: &[&str]) -> Vec<String> {
    let mut v = vec![
        venv_bin().join("python").display().to_string(),
        repo()
            .join("tests/drivers/cluster_check.py")
            .display()
            .to_string(),
    ];
    v.extend(args.iter().map(|s| s.to_string()));
    v
}

fn job_id(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let id = stdout.lines().next().unwrap_or_default().trim().to_string();
    assert!(
        !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()),
        "ray-bsub printed no job id: {}",
        text(out)
    );
    id
}

fn job_output(home: &TestHome, id: &str) -> String {
    std::fs::read_to_string(home.path().join(format!("job-{id}.out"))).unwrap_or_default()
}

/// LSF's state of a job, from the stand-in's bjobs (`bjobs -w -a`: JOBID USER STAT ...).
fn bjobs_state(bin: &Path, id: &str) -> String {
    let out = Command::new(bin.join("bjobs"))
        .args(["-w", "-a", id])
        .env("PATH", LsfStandin::path(bin))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.first() == Some(&id)).then(|| f.get(2).unwrap_or(&"").to_string())
        })
        .unwrap_or_default()
}

#[test]
fn ray_bsub_k_runs_a_three_host_driver_with_the_granted_cpus_and_returns_its_code() {
    let Some(lsf) = lsf_standin() else {
        return;
    };
    // OpenLava-family schedulers have no blaunch (one lsrun per host) and no -wa.
    for (mode, bin, warning) in [
        ("blaunch", &lsf.bin, None),
        ("lsrun", &lsf.openlava, Some("--no-warning")),
    ] {
        let home = TestHome::new();
        let out_file = home.path().join("job-%J.out");
        let driver = cluster_check(&["--exit", "3"]);
        let driver: Vec<&str> = driver.iter().map(String::as_str).collect();
        let out_file = out_file.to_str().unwrap();
        let mut bsub = vec![
            "-K",
            "-n",
            "3",
            "-R",
            "span[ptile=1]",
            "-W",
            "10",
            "-o",
            out_file,
        ];
        bsub.extend(warning);
        let out = ray_bsub(&home, bin, &bsub, &driver).output().unwrap();
        let id = job_id(&out);
        let log = job_output(&home, &id);
        assert_eq!(
            out.status.code(),
            Some(3),
            "{mode}: bsub -K returns the driver's exit code\n{}\n{log}",
            text(&out)
        );
        let report = driver_report(&log);
        let nodes = report["nodes"].as_array().unwrap();
        assert_eq!(nodes.len(), 3, "{mode}: three hosts\n{log}");
        for n in nodes {
            assert_eq!(
                n["cpus"], 1.0,
                "{mode}: one slot per host is one CPU\n{log}"
            );
        }
        let ips: std::collections::BTreeSet<&str> =
            nodes.iter().map(|n| n["ip"].as_str().unwrap()).collect();
        assert_eq!(ips.len(), 3, "{mode}: each host its own address: {ips:?}");
        let tasks: std::collections::BTreeSet<&str> = report["task_nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        assert_eq!(tasks.len(), 3, "{mode}: a task ran on every host\n{log}");
        let launcher = if mode == "blaunch" {
            "blaunch"
        } else {
            "lsrun"
        };
        assert!(
            log.contains(launcher),
            "{mode}: the log says which launcher was used\n{log}"
        );
        let record = home.cluster_record();
        assert_eq!(record["scheduler"], "lsf");
        assert_eq!(record["state"], "ENDED", "{record:#}");
        home.assert_no_leftovers(Duration::from_secs(30));
    }
}

#[test]
fn bkill_mid_run_tears_everything_down() {
    let Some(lsf) = lsf_standin() else {
        return;
    };
    let home = TestHome::new();
    let out_file = home.path().join("job-%J.out");
    let hold = home.path().join("release");
    let driver = cluster_check(&["--hold", hold.to_str().unwrap()]);
    let driver: Vec<&str> = driver.iter().map(String::as_str).collect();
    let out = ray_bsub(
        &home,
        &lsf.bin,
        &[
            "-n",
            "2",
            "-R",
            "span[ptile=1]",
            "-W",
            "10",
            "-o",
            out_file.to_str().unwrap(),
        ],
        &driver,
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let id = job_id(&out);
    wait_for(
        "the driver to hold",
        Duration::from_secs(180),
        || job_output(&home, &id).contains("READY").then_some(()),
        || job_output(&home, &id),
    );
    let killed = Command::new(lsf.bin.join("bkill"))
        .arg(&id)
        .env("PATH", LsfStandin::path(&lsf.bin))
        .output()
        .unwrap();
    assert!(killed.status.success(), "{}", text(&killed));
    let state = wait_for(
        "the job to end",
        Duration::from_secs(90),
        || {
            let s = bjobs_state(&lsf.bin, &id);
            matches!(s.as_str(), "EXIT" | "DONE" | "").then_some(s)
        },
        || job_output(&home, &id),
    );
    assert_ne!(
        state,
        "DONE",
        "a killed job exits: {}",
        job_output(&home, &id)
    );
    let record = home.cluster_record();
    assert_eq!(record["state"], "ENDED", "{record:#}");
    assert!(
        record["message"]
            .as_str()
            .unwrap_or_default()
            .contains("stopped by signal"),
        "{record:#}"
    );
    home.assert_no_leftovers(Duration::from_secs(30));
}

/// A cluster brought up with `ray-hpc up --scheduler lsf` through the stand-in.
struct LsfCluster<'a> {
    home: &'a TestHome,
    bin: &'a Path,
    name: String,
    env: Vec<(String, String)>,
}

impl<'a> LsfCluster<'a> {
    fn up(home: &'a TestHome, bin: &'a Path, name: &str, config: &str, nodes: &str) -> Self {
        let cfg = home.write(&format!("{name}.toml"), config);
        let out = home
            .command(&[
                "--config",
                cfg.to_str().unwrap(),
                "--scheduler",
                "lsf",
                "up",
                "--name",
                name,
                "--nodes",
                nodes,
                "--cpus-per-node",
                "1",
                "--time",
                "10",
            ])
            .env("PATH", LsfStandin::path(bin))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        LsfCluster {
            home,
            bin,
            name: name.to_string(),
            env: exports(&String::from_utf8_lossy(&out.stdout)),
        }
    }

    fn ray_hpc(&self, args: &[&str]) -> Output {
        self.home
            .command(args)
            .env("PATH", LsfStandin::path(self.bin))
            .output()
            .unwrap()
    }

    fn head_log(&self) -> String {
        std::fs::read_to_string(
            self.home
                .path()
                .join(format!("clusters/{}/job.out", self.name)),
        )
        .unwrap_or_default()
    }

    /// Runs a Python driver against the cluster, to its end.
    fn python(&self, code: &str) -> Output {
        Command::new(venv_bin().join("python"))
            .args(["-c", code])
            .envs(self.env.iter().cloned())
            .env("PATH", test_path())
            .current_dir(self.home.path())
            .output()
            .unwrap()
    }

    /// The cluster's jobs LSF still runs or queues (bjobs -w: not finished).
    fn live_jobs(&self) -> Vec<String> {
        let out = Command::new(self.bin.join("bjobs"))
            .args(["-w", "-J", &format!("rh-{}", self.name)])
            .env("PATH", LsfStandin::path(self.bin))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next().map(String::from))
            .collect()
    }

    fn down(&self) {
        let out = self.ray_hpc(&["down", &self.name]);
        assert!(out.status.success(), "{}", text(&out));
    }
}

#[test]
fn up_status_submit_and_down_on_lsf() {
    let Some(lsf) = lsf_standin() else {
        return;
    };
    let home = TestHome::new();
    let c = LsfCluster::up(&home, &lsf.bin, "lsf1", "", "2");
    let status = c.ray_hpc(&["status", "lsf1"]);
    let shown = text(&status);
    assert!(
        status.status.success() && shown.contains("READY") && shown.contains("lsf"),
        "{shown}"
    );
    let submitted = c.ray_hpc(&[
        "submit",
        "lsf1",
        "--",
        "python",
        "-c",
        "import ray; ray.init(); print('NODES', len([n for n in ray.nodes() if n['Alive']]))",
    ]);
    assert!(
        submitted.status.success() && text(&submitted).contains("NODES 2"),
        "{}\n{}",
        text(&submitted),
        c.head_log()
    );
    c.down();
    assert!(c.live_jobs().is_empty(), "{:?}", c.live_jobs());
    let record = home.cluster_record();
    assert_eq!(record["state"], "ENDED", "{record:#}");
    home.assert_no_leftovers(Duration::from_secs(30));
}

#[test]
fn a_strict_spread_group_gets_its_hosts_through_bsub_and_idle_ones_go_back() {
    let Some(lsf) = lsf_standin() else {
        return;
    };
    let home = TestHome::new();
    let c = LsfCluster::up(
        &home,
        &lsf.bin,
        "lsf2",
        "scheduler = \"lsf\"\n[autoscaler]\nenabled = true\nmax_workers = 3\nidle_timeout_s = 10\n\n[[node_types]]\nname = \"cpu\"\ncpus = 1\ntime = \"10\"\n",
        "1",
    );
    let out = c.python(
        "import ray\nfrom ray.util.placement_group import placement_group, remove_placement_group\nray.init()\npg = placement_group([{'CPU': 1}] * 3, strategy='STRICT_SPREAD')\nready = pg.wait(timeout_seconds=150)\nprint('PG READY', ready, flush=True)\nprint('NODES', len(set(ray.util.placement_group_table(pg)['bundles_to_node_id'].values())), flush=True)\nremove_placement_group(pg)\n",
    );
    let log = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && log.contains("PG READY True") && log.contains("NODES 3"),
        "{}\n{}",
        text(&out),
        c.head_log()
    );
    assert_eq!(c.live_jobs().len(), 3, "the head's job and two workers");
    // Idle past idle_timeout_s: drained and bkilled, down to the head's job.
    wait_for(
        "the idle workers to go back",
        Duration::from_secs(120),
        || (c.live_jobs().len() == 1).then_some(()),
        || format!("{:?}\n{}", c.live_jobs(), c.head_log()),
    );
    let log = c.head_log();
    assert!(log.contains("drained node"), "{log}");
    c.down();
    home.assert_no_leftovers(Duration::from_secs(30));
}

#[test]
fn a_refused_bsub_backs_off_in_lsfs_words() {
    let Some(lsf) = lsf_standin() else {
        return;
    };
    let home = TestHome::new();
    let c = LsfCluster::up(
        &home,
        &lsf.bin,
        "lsf3",
        "scheduler = \"lsf\"\n[autoscaler]\nenabled = true\nmax_workers = 2\nbackoff_initial_s = 600\n\n[[node_types]]\nname = \"big\"\ncpus = 2\nqueue = \"nosuchqueue\"\n\n[[node_types]]\nname = \"small\"\ncpus = 1\n",
        "1",
    );
    let out = c.python(
        "import ray\nray.init()\n@ray.remote(num_cpus=1)\ndef f():\n    import time; time.sleep(2); return 1\nprint('DONE', sum(ray.get([f.remote() for _ in range(3)])), flush=True)\n",
    );
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("DONE 3"),
        "{}\n{}",
        text(&out),
        c.head_log()
    );
    let log = c.head_log();
    assert!(log.contains("big job refused"), "{log}");
    assert!(log.contains("submitted small job"), "{log}");
    assert_eq!(
        log.matches("big job refused").count(),
        1,
        "backing off for 600 s: {log}"
    );
    let status = text(&c.ray_hpc(&["status", "lsf3"]));
    assert!(status.contains("big jobs refused"), "{status}");
    c.down();
    home.assert_no_leftovers(Duration::from_secs(30));
}

/// LSF sends the `-wa` warning to every process of the job. ray-bsub asks for SIGURG, which
/// Ray's processes ignore: the head gets it and tears the cluster down in order (SIGUSR1 would
/// have ended Ray's processes at once, under the head).
#[test]
fn the_run_limit_warning_ends_the_cluster_in_order() {
    let Some(lsf) = lsf_standin() else {
        return;
    };
    let home = TestHome::new();
    let out_file = home.path().join("job-%J.out");
    let never = home.path().join("never");
    let driver = cluster_check(&["--hold", never.to_str().unwrap()]);
    let driver: Vec<&str> = driver.iter().map(String::as_str).collect();
    // -W 3 with the warning 2 minutes before the limit: the warning comes a minute in.
    let bsub = [
        "-n",
        "2",
        "-R",
        "span[ptile=1]",
        "-W",
        "3",
        "-o",
        out_file.to_str().unwrap(),
    ];
    let out = ray_bsub(&home, &lsf.bin, &bsub, &driver).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let id = job_id(&out);
    let state = wait_for(
        "the warning to end the job",
        Duration::from_secs(240),
        || {
            let s = bjobs_state(&lsf.bin, &id);
            matches!(s.as_str(), "EXIT" | "DONE").then_some(s)
        },
        || job_output(&home, &id),
    );
    let log = job_output(&home, &id);
    let record = home.cluster_record();
    assert_eq!(record["state"], "ENDED", "{record:#}\n{log}");
    assert_eq!(
        record["message"],
        format!("stopped by signal {}", libc::SIGURG),
        "{record:#}\n{log}"
    );
    assert!(log.contains("teardown took"), "{log}");
    assert!(
        !log.contains("Ray head exited"),
        "Ray's own processes must outlive the warning:\n{log}"
    );
    assert_eq!(state, "EXIT", "ray-hpc exits 128+SIGURG: {log}");
    home.assert_no_leftovers(Duration::from_secs(30));
}
