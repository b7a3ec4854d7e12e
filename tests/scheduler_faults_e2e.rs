//! A scheduler that fails or hangs, on the real Slurm test bed with the real Ray: the head's
//! autoscaler shows the outage in `ray-hpc status` (the failing command and its error) and
//! backs off, and a head whose submission hangs still tears down within seconds of SIGTERM,
//! leaving no process behind (the hung command included). tests/run sets RAY_HPC_E2E=1.
//!
//! The failures come from wrapper scripts in front of the real `sbatch` and `squeue`, on the
//! PATH the head job inherits: while a flag file exists they fail (as a controller that is down
//! does) or hang.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;

/// Writes wrappers for `commands` into `dir/bin`; `dir/<command>.fail` makes one fail,
/// `dir/<command>.hang` makes it hang (and note its start in `dir/<command>.hanging`).
fn wrappers(dir: &Path, commands: &[&str]) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for name in commands {
        let real = Command::new("sh")
            .args(["-c", &format!("command -v {name}")])
            .output()
            .unwrap();
        let real = String::from_utf8_lossy(&real.stdout).trim().to_string();
        assert!(!real.is_empty(), "{name} is not installed");
        let flags = dir.display();
        let script = format!(
            "#!/bin/bash\n\
             # A stand-in in front of the real {name} for tests/scheduler_faults_e2e.rs.\n\
             if [[ -e {flags}/{name}.hang ]]; then echo $$ >>{flags}/{name}.hanging; exec sleep 3600; fi\n\
             if [[ -e {flags}/{name}.fail ]]; then\n\
             \techo 'slurm_load_jobs error: Unable to contact slurm controller (connect failure)' >&2\n\
             \texit 1\n\
             fi\n\
             exec {real} \"$@\"\n"
        );
        let path = bin.join(name);
        std::fs::write(&path, script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    bin
}

fn in_queue(job: &str) -> bool {
    let out = Command::new("squeue")
        .args(["-h", "-o", "%T", "-j", job])
        .output()
        .unwrap();
    !String::from_utf8_lossy(&out.stdout).trim().is_empty()
}

fn status(home: &TestHome, name: &str) -> String {
    text(&home.command(&["status", name]).output().unwrap())
}

/// Runs a Python driver against the cluster to its end.
fn python(home: &TestHome, env: &[(String, String)], code: &str) -> Output {
    Command::new(venv_bin().join("python"))
        .args(["-c", code])
        .envs(env.iter().cloned())
        .env("PATH", test_path())
        .current_dir(home.path())
        .output()
        .unwrap()
}

#[test]
fn a_failing_scheduler_shows_in_status_and_a_hung_one_does_not_hold_up_sigterm() {
    if !slurm_testbed() {
        return;
    }
    let home = TestHome::new();
    let bin = wrappers(home.path(), &["sbatch", "squeue"]);
    let path = format!("{}:{}", bin.display(), test_path());
    let config = home.write(
        "faults.toml",
        "scheduler_timeout_s = 120\n\
         [autoscaler]\nenabled = true\nmax_workers = 3\nscheduler_poll_interval_s = 1\n\
         backoff_initial_s = 1\nbackoff_max_s = 5\n\n[[node_types]]\nname = \"cpu\"\ncpus = 1\ntime = \"10\"\n",
    );
    let up = home
        .command(&[
            "--config",
            config.to_str().unwrap(),
            "up",
            "--name",
            "faults",
            "--cpus-per-node",
            "1",
            "--time",
            "10",
        ])
        .env("PATH", &path)
        .output()
        .unwrap();
    assert!(up.status.success(), "{}", text(&up));
    let env = exports(&String::from_utf8_lossy(&up.stdout));
    let head_job = home.cluster_record()["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    let head_log =
        || std::fs::read_to_string(home.path().join("clusters/faults/job.out")).unwrap_or_default();

    // One worker job, so the head queries the scheduler; then the controller goes down.
    let asked = python(
        &home,
        &env,
        "import ray\nfrom ray.autoscaler.sdk import request_resources\nray.init()\nrequest_resources(num_cpus=2)\n",
    );
    assert!(asked.status.success(), "{}", text(&asked));
    wait_for(
        "the first worker job",
        Duration::from_secs(60),
        || (!home.cluster_record()["worker_jobs"].as_array()?.is_empty()).then_some(()),
        head_log,
    );
    std::fs::write(home.path().join("squeue.fail"), "").unwrap();
    let shown = wait_for(
        "status to show the outage",
        Duration::from_secs(60),
        || {
            let s = status(&home, "faults");
            s.contains("scheduler outage").then_some(s)
        },
        || format!("{}\n{}", status(&home, "faults"), head_log()),
    );
    assert!(
        shown.contains("squeue") && shown.contains("Unable to contact slurm controller"),
        "the note names the command and its error:\n{shown}"
    );
    assert!(
        shown.contains("READY"),
        "the cluster itself keeps running:\n{shown}"
    );

    // The controller is back; the next submission hangs.
    std::fs::remove_file(home.path().join("squeue.fail")).unwrap();
    std::fs::write(home.path().join("sbatch.hang"), "").unwrap();
    wait_for(
        "the outage to end",
        Duration::from_secs(60),
        || (!status(&home, "faults").contains("scheduler outage")).then_some(()),
        || status(&home, "faults"),
    );
    let asked = python(
        &home,
        &env,
        "import ray\nfrom ray.autoscaler.sdk import request_resources\nray.init()\nrequest_resources(num_cpus=3)\n",
    );
    assert!(asked.status.success(), "{}", text(&asked));
    let hanging = home.path().join("sbatch.hanging");
    wait_for(
        "a submission to hang",
        Duration::from_secs(60),
        || hanging.exists().then_some(()),
        head_log,
    );

    // SIGTERM to the head (scancel) while sbatch hangs: it must not wait for the command.
    let cancelled = Instant::now();
    let out = Command::new("scancel").arg(&head_job).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let gone_after = wait_for(
        "the head job to end",
        Duration::from_secs(60),
        || (!in_queue(&head_job)).then(|| cancelled.elapsed()),
        head_log,
    );
    eprintln!(
        "head job gone {:.1}s after SIGTERM while a submission hung",
        gone_after.as_secs_f64()
    );
    // Slurm would SIGKILL it at KillWait (30 s); the command's own timeout is 120 s.
    assert!(
        gone_after < Duration::from_secs(25),
        "the head took {gone_after:?} to end\n{}",
        head_log()
    );
    let log = head_log();
    assert!(log.contains("teardown took"), "{log}");
    let record = home.cluster_record();
    assert_eq!(record["state"], "ENDED", "{record:#}");
    // The worker jobs went with it, and nothing is left: not the hung command either.
    wait_for(
        "the worker jobs to end",
        Duration::from_secs(90),
        || {
            let out = Command::new("squeue")
                .args(["-h", "-n", "rh-faults"])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .is_empty()
                .then_some(())
        },
        head_log,
    );
    home.assert_no_leftovers(Duration::from_secs(30));
}
