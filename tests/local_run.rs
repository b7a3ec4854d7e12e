//! `ray-hpc run` on the local scheduler with the real Ray: the README's main job, exit codes,
//! and bad input. Each test checks it left no process and no temp dir behind.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

const LEFTOVER_WAIT: Duration = Duration::from_secs(20);

fn python() -> String {
    venv_bin().join("python").display().to_string()
}

fn assert_clean(home: &TestHome) {
    home.assert_no_leftovers(LEFTOVER_WAIT);
    for rec in home.cluster_records() {
        for dir in temp_dirs(&rec) {
            assert!(!dir.exists(), "temp dir {} was not removed", dir.display());
        }
    }
}

#[test]
fn driver_sees_one_node_with_the_discovered_cpus() {
    let home = TestHome::new();
    let discovered = home
        .command(&["--scheduler", "local", "discover", "--json"])
        .output()
        .unwrap();
    assert!(discovered.status.success(), "{}", text(&discovered));
    let discovered: serde_json::Value = serde_json::from_slice(&discovered.stdout).unwrap();
    let cpus = discovered["cpus"].as_f64().unwrap();
    assert!(cpus >= 1.0);

    let driver = repo().join("tests/drivers/cluster_check.py");
    let out = home
        .command(&["run", "--", &python(), driver.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let report = driver_report(&String::from_utf8_lossy(&out.stdout));
    let nodes = report["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1, "{report}");
    assert_eq!(nodes[0]["cpus"].as_f64().unwrap(), cpus, "{report}");
    assert_eq!(report["task_nodes"].as_array().unwrap().len(), 1);
    assert_eq!(report["auth_mode"], "token", "auth is on by default");

    let rec = home.cluster_record();
    assert_eq!(rec["state"], "ENDED", "{rec}");
    assert_eq!(rec["scheduler"], "local");
    let token = Path::new(rec["token_path"].as_str().unwrap());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(token).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "token file mode");
    assert_clean(&home);
}

#[test]
fn the_drivers_exit_code_is_ray_hpcs() {
    let home = TestHome::new();
    let out = home
        .command(&[
            "run",
            "--",
            &python(),
            "-c",
            "import ray, sys; ray.init(); print('nodes', len(ray.nodes())); sys.exit(3)",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("nodes 1"),
        "{}",
        text(&out)
    );
    assert_clean(&home);
}

#[test]
fn auth_none_runs_without_a_token() {
    let home = TestHome::new();
    let cfg = home.write("c.toml", "auth = \"none\"\n");
    let out = home
        .command(&[
            "--config",
            cfg.to_str().unwrap(),
            "run",
            "--",
            &python(),
            "-c",
            "import os, ray; ray.init(); print('mode', os.environ['RAY_AUTH_MODE'], len(ray.nodes()))",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("mode disabled 1"),
        "{}",
        text(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("auth = \"none\""),
        "warns: {}",
        text(&out)
    );
    assert_clean(&home);
}

#[test]
fn slurm_outside_an_allocation_is_a_clear_error() {
    let home = TestHome::new();
    let out = home
        .command(&["--scheduler", "slurm", "run", "--", "true"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("SLURM_JOB_ID") && err.contains("not inside"),
        "{err}"
    );
    assert!(
        home.cluster_records().is_empty(),
        "no cluster record for a run that never started"
    );
    assert_clean(&home);
}

#[test]
fn malformed_slurm_variables_name_the_variable_and_value() {
    let home = TestHome::new();
    let out = home
        .command(&["run", "--", "true"])
        .env("SLURM_JOB_ID", "77")
        .env("SLURM_JOB_NODELIST", "n[1-3]")
        .env("SLURM_JOB_CPUS_PER_NODE", "2(x9")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("SLURM_JOB_CPUS_PER_NODE=\"2(x9\""), "{err}");
    assert_clean(&home);
}

#[test]
fn missing_ray_says_how_to_install_it() {
    let home = TestHome::new();
    let out = home
        .command(&["run", "--", "true"])
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot find the `ray` command") && err.contains("pip install"),
        "{err}"
    );
    assert_clean(&home);
}

#[test]
fn unknown_config_keys_are_errors_with_positions() {
    let home = TestHome::new();
    let cfg = home.write("bad.toml", "ready_timeout_s = 5\n[ray]\nbni = \"x\"\n");
    let out = home
        .command(&["config", "check", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:3:1") && err.contains("ray.bni"),
        "{err}"
    );
    // run refuses a bad config before starting anything.
    let out = home
        .command(&["--config", cfg.to_str().unwrap(), "run", "--", "true"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ray.bni"));
    assert_clean(&home);
}

/// A `ray` that fails to start: ray-hpc fails fast, shows its log, leaves nothing behind.
/// (A stand-in for a broken Ray install: a script that prints an error and exits.)
#[test]
fn a_ray_that_fails_to_start_fails_fast_with_its_log() {
    let home = TestHome::new();
    let fake = home.write(
        "ray",
        "#!/bin/sh\necho 'boom: the raylet could not start' >&2\nexit 1\n",
    );
    make_executable(&fake);
    let cfg = home.write(
        "c.toml",
        &format!("[ray]\nbin = {:?}\n", fake.display().to_string()),
    );
    let started = std::time::Instant::now();
    let out = home
        .command(&["--config", cfg.to_str().unwrap(), "run", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("boom: the raylet could not start"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "did not fail fast"
    );
    assert_eq!(home.cluster_record()["state"], "FAILED");
    assert_clean(&home);
}

/// A port taken between our probe and Ray's bind: the first `ray start` reports it (as Ray
/// does), ray-hpc retries with fresh ports, and the second start is the real Ray.
#[test]
fn a_port_clash_at_start_is_retried_with_new_ports() {
    let home = TestHome::new();
    let marker = home.path().join("clashed");
    let real = venv_bin().join("ray");
    let wrapper = home.write(
        "ray",
        &format!(
            "#!/bin/sh\nif [ ! -e {m} ]; then touch {m}; echo 'OSError: [Errno 98] Address already in use' >&2; exit 1; fi\nexec {real} \"$@\"\n",
            m = marker.display(),
            real = real.display()
        ),
    );
    make_executable(&wrapper);
    let cfg = home.write(
        "c.toml",
        &format!("[ray]\nbin = {:?}\n", wrapper.display().to_string()),
    );
    let out = home
        .command(&[
            "--config",
            cfg.to_str().unwrap(),
            "run",
            "--",
            &python(),
            "-c",
            "import ray; ray.init(); print('alive', len(ray.nodes()))",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(marker.exists(), "the clash was never staged");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("alive 1"),
        "{}",
        text(&out)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("retrying with new ports"));
    assert_clean(&home);
}

fn make_executable(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Ctrl-C (SIGINT) and SIGTERM stop the driver and tear the cluster down, with exit 128+signal.
#[test]
fn signals_stop_the_driver_and_the_cluster() {
    for (signal, name) in [(2, "INT"), (15, "TERM")] {
        let home = TestHome::new();
        let mut child = home
            .command(&[
                "run",
                "--",
                &python(),
                "-u",
                "-c",
                "import ray, time; ray.init(); print('READY', flush=True); time.sleep(600)",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if line.contains("READY") {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(120))
            .expect("the driver never printed READY");
        let st = std::process::Command::new("kill")
            .args([&format!("-{name}"), &child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        let status = wait_for(
            "ray-hpc to exit",
            Duration::from_secs(60),
            || child.try_wait().unwrap(),
            String::new,
        );
        assert_eq!(status.code(), Some(128 + signal), "SIG{name}");
        assert_eq!(home.cluster_record()["state"], "ENDED");
        assert_clean(&home);
    }
}
