//! Interactive use: a second terminal that gets a cluster's environment back with `ray-hpc env`,
//! a laptop's Ray Client through `ray://`, and `ray-hpc run` from an allocation's shell that is
//! not on one of its nodes. tests/run sets RAY_HPC_E2E=1.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::*;

fn run(home: &TestHome, args: &[&str]) -> Output {
    home.command(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn job_out(home: &TestHome, name: &str) -> String {
    std::fs::read_to_string(home.path().join("clusters").join(name).join("job.out"))
        .unwrap_or_default()
}

/// A bash in the test's home with the test PATH, as a user's second terminal would be.
fn bash(home: &TestHome, script: &str) -> Output {
    Command::new("bash")
        .args(["-c", script])
        .env("RAY_HPC_HOME", home.path())
        .env("PATH", test_path())
        .env_remove("RAY_ADDRESS")
        .env_remove("RAY_AUTH_TOKEN_PATH")
        .env_remove("RAY_AUTH_MODE")
        .current_dir(home.path())
        .output()
        .unwrap()
}

/// `eval "$(ray-hpc env)"` in a new shell, with no name (the only READY cluster) and a stale
/// token in the environment, points the real `ray status` at the cluster.
#[test]
fn env_without_a_name_round_trips_into_ray_status() {
    let home = TestHome::new();
    let up = run(
        &home,
        &[
            "--scheduler",
            "local",
            "up",
            "--name",
            "e1",
            "--timeout",
            "180",
        ],
    );
    assert!(
        up.status.success(),
        "{}\n{}",
        text(&up),
        job_out(&home, "e1")
    );

    let shell = bash(
        &home,
        r#"set -e
export RAY_AUTH_TOKEN=a-stale-token-of-another-cluster
eval "$(ray-hpc env)"
echo "RAY_ADDRESS=$RAY_ADDRESS token=${RAY_AUTH_TOKEN-unset}"
ray status"#,
    );
    let out = String::from_utf8_lossy(&shell.stdout).into_owned();
    assert!(shell.status.success(), "{}", text(&shell));
    let rec = home.cluster_record();
    let gcs = rec["gcs_address"].as_str().unwrap();
    assert!(
        out.contains(&format!("RAY_ADDRESS={gcs} token=unset")),
        "{}",
        text(&shell)
    );
    assert!(out.contains("Node status"), "{}", text(&shell));
    assert!(
        out.contains(" 1 head"),
        "ray status lists the head node: {out}"
    );

    // The fish and csh forms name the same cluster.
    let fish = run(&home, &["env", "--shell", "fish"]);
    assert!(fish.status.success(), "{}", text(&fish));
    assert!(
        String::from_utf8_lossy(&fish.stdout).contains(&format!("set -gx RAY_ADDRESS {gcs};")),
        "{}",
        text(&fish)
    );
    let csh = run(&home, &["env", "--shell", "csh"]);
    assert!(
        String::from_utf8_lossy(&csh.stdout).contains("unsetenv RAY_AUTH_TOKEN;"),
        "{}",
        text(&csh)
    );

    let down = run(&home, &["down", "e1"]);
    assert!(down.status.success(), "{}", text(&down));
    // No READY cluster left: a clear error that lists what there is, and nothing on stdout.
    let none = run(&home, &["env"]);
    assert_eq!(none.status.code(), Some(1), "{}", text(&none));
    assert!(none.stdout.is_empty(), "{}", text(&none));
    assert!(
        stderr(&none).contains("no READY cluster") && stderr(&none).contains("e1 (ENDED)"),
        "{}",
        text(&none)
    );
    home.assert_no_leftovers(Duration::from_secs(30));
}

fn squeue_ids(name_tag: &str) -> Vec<String> {
    let out = Command::new("squeue")
        .args(["-h", "-o", "%i", "-n", name_tag])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// `up` and `status` show the Ray Client address and one tunnel for both services; a driver
/// through `ray://` with only the cluster's token (no RAY_ADDRESS, as on a laptop) sees every
/// node of a 2-node cluster.
#[test]
fn a_ray_client_driver_with_the_token_sees_every_node() {
    if !slurm_testbed() {
        return;
    }
    let home = TestHome::new();
    let up = run(
        &home,
        &[
            "up",
            "--name",
            "rc1",
            "--nodes",
            "2",
            "--cpus-per-node",
            "2",
            "--time",
            "10",
        ],
    );
    assert!(
        up.status.success(),
        "{}\n{}",
        text(&up),
        job_out(&home, "rc1")
    );
    let rec = home.cluster_record();
    let client = rec["client_server_address"]
        .as_str()
        .unwrap_or_else(|| panic!("no client_server_address: {rec}"));
    let url = format!("ray://{client}");
    let dashboard = rec["dashboard_url"].as_str().unwrap();
    let tunnel = format!(
        "ssh -N -L 8265:{} -L 10001:{client} ",
        dashboard.trim_start_matches("http://")
    );
    let err = stderr(&up);
    assert!(err.contains(&format!("Ray Client:   {url}")), "{err}");
    assert_eq!(err.matches("ssh -N").count(), 1, "one ssh line: {err}");
    assert!(err.contains(&tunnel), "{err}");
    assert!(
        err.contains(r#"ray.init("ray://localhost:10001")"#),
        "{err}"
    );
    let st = run(&home, &["status", "rc1"]);
    let st_text = String::from_utf8_lossy(&st.stdout).into_owned();
    assert!(st.status.success(), "{}", text(&st));
    assert!(
        st_text.contains(&format!("Ray Client:    {url}")),
        "{st_text}"
    );
    assert!(st_text.contains(&tunnel), "{st_text}");

    let token = rec["token_path"].as_str().unwrap();
    let client_driver = || {
        Command::new(venv_bin().join("python"))
            .args([
                "-c",
                "import sys, ray; ray.init(sys.argv[1]); \
                 print('alive', sum(n['Alive'] for n in ray.nodes())); \
                 print('cpus', ray.cluster_resources().get('CPU'))",
                &url,
            ])
            .env("PATH", test_path())
            .env("RAY_AUTH_MODE", "token")
            .env("RAY_AUTH_TOKEN_PATH", token)
            .env_remove("RAY_ADDRESS")
            .env_remove("RAY_AUTH_TOKEN")
            .current_dir(home.path())
            .output()
            .unwrap()
    };
    let mut driver = client_driver();
    // Ray's client proxy starts a server process per client; on this loaded 2-core machine that
    // start failed once in several runs ("Starting Ray client server failed"), which a user
    // meets by connecting again. Its own log is shown, and a second failure fails the test.
    if !driver.status.success() && text(&driver).contains("Starting Ray client server failed") {
        eprintln!(
            "the Ray Client's server failed to start once; retrying\n{}\n{}",
            text(&driver),
            client_server_logs(&rec)
        );
        driver = client_driver();
    }
    assert!(
        driver.status.success(),
        "{}\n{}",
        text(&driver),
        client_server_logs(&rec)
    );
    let said = String::from_utf8_lossy(&driver.stdout).into_owned();
    assert!(
        said.contains("alive 2") && said.contains("cpus 4.0"),
        "{}",
        text(&driver)
    );

    let down = run(&home, &["down", "rc1"]);
    assert!(down.status.success(), "{}", text(&down));
    assert!(squeue_ids("rh-rc1").is_empty(), "the job is gone");
    home.assert_no_leftovers(Duration::from_secs(30));
    for dir in temp_dirs(&home.cluster_record()) {
        assert!(!dir.exists(), "{} left", dir.display());
    }
}

/// Runs `cmd` with its output in files of `home`; kills it (by pid) if it runs past `within`.
fn output_within(home: &TestHome, mut cmd: Command, within: Duration) -> Output {
    let out = home.path().join("cmd.stdout");
    let err = home.path().join("cmd.stderr");
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap());
    let mut child = cmd.spawn().unwrap();
    let pid = child.id();
    let read = |p: &std::path::Path| std::fs::read(p).unwrap_or_default();
    let status = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_for(
            "the command to end",
            within,
            || child.try_wait().unwrap(),
            || {
                format!(
                    "stdout:\n{}\nstderr:\n{}",
                    String::from_utf8_lossy(&read(&out)),
                    String::from_utf8_lossy(&read(&err))
                )
            },
        )
    }));
    let status = match status {
        Ok(s) => s,
        Err(e) => {
            let _ = Command::new("kill").arg(pid.to_string()).status();
            let _ = child.wait();
            std::panic::resume_unwind(e);
        }
    };
    Output {
        status,
        stdout: read(&out),
        stderr: read(&err),
    }
}

/// `salloc -N 2` whose shell is off the allocation (no SLURMD_NODENAME, a hostname that is no
/// node's, as on a login node): `ray-hpc run` moves itself to the first node, says so, and the
/// driver's output and exit code come back through it.
#[test]
fn run_in_an_allocation_shell_off_its_nodes_moves_to_the_first_node() {
    if !slurm_testbed() {
        return;
    }
    let here = nix::unistd::gethostname().unwrap().into_string().unwrap();
    assert!(
        !["n1", "n2", "n3", "n4"].contains(&here.as_str()),
        "this test needs a machine whose hostname ({here}) is not a test-bed node name"
    );
    let home = TestHome::new();
    let driver = "import os, ray; ray.init(); \
        print('driver on', os.environ.get('SLURMD_NODENAME'), flush=True); \
        print('alive', sum(n['Alive'] for n in ray.nodes()), flush=True); \
        raise SystemExit(7)";
    let mut cmd = Command::new("salloc");
    cmd.args(["-N", "2", "--time=5", "-J", "rh-salloc-test"])
        .arg(ray_hpc())
        .args(["run", "--", "python", "-c", driver])
        .env("RAY_HPC_HOME", home.path())
        .env("PATH", test_path())
        .env_remove("SLURMD_NODENAME")
        .env_remove("SLURM_JOB_ID")
        .env_remove("RAY_ADDRESS")
        .env_remove("RAY_HPC_CONFIG")
        .current_dir(home.path());
    let out = output_within(&home, cmd, Duration::from_secs(300));
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out));
    assert!(said.contains("driver on n1"), "{}", text(&out));
    assert!(said.contains("alive 2"), "{}", text(&out));
    let moved: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("is not a node of"))
        .collect();
    assert_eq!(moved.len(), 1, "one line says it moved: {err}");
    assert!(
        moved[0].contains(&format!("({here})")) && moved[0].contains("first node, n1"),
        "{err}"
    );
    let rec = home.cluster_record();
    assert_eq!(rec["head_node"], "n1", "{rec}");
    // The allocation may show as COMPLETING for a moment after salloc returned.
    wait_for(
        "the allocation to be gone",
        Duration::from_secs(60),
        || squeue_ids("rh-salloc-test").is_empty().then_some(()),
        || text(&out),
    );
    home.assert_no_leftovers(Duration::from_secs(30));
    for dir in temp_dirs(&rec) {
        assert!(!dir.exists(), "{} left", dir.display());
    }
}

/// Ctrl-C in the terminal of a moved run reaches the run on the first node, which tears the
/// cluster down; the allocation ends and nothing is left. In `salloc`'s shell the command is the
/// terminal's foreground process group (salloc is not in it): here `setsid` makes `ray-hpc run`
/// such a group, and SIGINT goes to all of it, as a terminal sends it.
#[test]
fn ctrl_c_reaches_a_moved_run_and_leaves_nothing() {
    if !slurm_testbed() {
        return;
    }
    let home = TestHome::new();
    let driver = "import ray, time; ray.init(); print('up', flush=True); time.sleep(600)";
    let out = home.path().join("cmd.stdout");
    let err = home.path().join("cmd.stderr");
    let pid_file = home.path().join("run.pid");
    let mut child = Command::new("salloc")
        .args(["-N", "2", "--time=5", "-J", "rh-salloc-int"])
        .args([
            "bash",
            "-c",
            r#"setsid "$@" & echo $! > run.pid; wait $!"#,
            "bash",
        ])
        .arg(ray_hpc())
        .args(["run", "--", "python", "-c", driver])
        .env("RAY_HPC_HOME", home.path())
        .env("PATH", test_path())
        .env_remove("SLURMD_NODENAME")
        .env_remove("SLURM_JOB_ID")
        .env_remove("RAY_ADDRESS")
        .env_remove("RAY_HPC_CONFIG")
        .current_dir(home.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let explain = || {
        format!(
            "stdout:\n{}\nstderr:\n{}",
            std::fs::read_to_string(&out).unwrap_or_default(),
            std::fs::read_to_string(&err).unwrap_or_default()
        )
    };
    wait_for(
        "the driver to start",
        Duration::from_secs(240),
        || {
            std::fs::read_to_string(&out)
                .unwrap_or_default()
                .contains("up")
                .then_some(())
        },
        explain,
    );
    let pgid = std::fs::read_to_string(&pid_file).unwrap();
    let _ = Command::new("kill")
        .args(["-INT", "--", &format!("-{}", pgid.trim())])
        .status();
    let status = wait_for(
        "the run to end after Ctrl-C",
        Duration::from_secs(90),
        || child.try_wait().unwrap(),
        explain,
    );
    assert!(!status.success(), "{status:?}\n{}", explain());
    // The allocation may show as COMPLETING for a moment after salloc returned.
    wait_for(
        "the allocation to be gone",
        Duration::from_secs(60),
        || squeue_ids("rh-salloc-int").is_empty().then_some(()),
        explain,
    );
    home.assert_no_leftovers(Duration::from_secs(30));
    let rec = home.cluster_record();
    assert_eq!(rec["state"], "ENDED", "{rec}\n{}", explain());
    assert_eq!(
        rec["message"], "stopped by signal 2",
        "SIGINT reached the run: {rec}"
    );
    for dir in temp_dirs(&rec) {
        assert!(!dir.exists(), "{} left", dir.display());
    }
}

/// The Ray Client servers' own logs on the head (`ray_client_server*.err` of its session).
fn client_server_logs(record: &serde_json::Value) -> String {
    let mut out = String::new();
    for dir in temp_dirs(record) {
        let logs = dir.join("session_latest/logs");
        let Ok(entries) = std::fs::read_dir(&logs) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("ray_client_server") && name.ends_with(".err") {
                let t = std::fs::read_to_string(e.path()).unwrap_or_default();
                let tail: Vec<&str> = t.lines().rev().take(30).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                out.push_str(&format!(
                    "==> {}\n{}\n",
                    e.path().display(),
                    tail.join("\n")
                ));
            }
        }
    }
    out
}
