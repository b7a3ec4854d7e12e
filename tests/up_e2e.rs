//! `ray-hpc up` / `down` from a "login node" (this machine) against the real Slurm test bed and
//! the real Ray, and the local scheduler. tests/run sets RAY_HPC_E2E=1.

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

fn record(home: &TestHome, name: &str) -> serde_json::Value {
    let p = home.path().join("clusters").join(name).join("cluster.json");
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
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

#[test]
fn up_gives_a_usable_cluster_and_down_leaves_nothing() {
    if !slurm_testbed() {
        return;
    }
    let home = TestHome::new();
    let up = run(
        &home,
        &[
            "up",
            "--name",
            "u1",
            "--nodes",
            "2",
            "--cpus-per-node",
            "2",
            "--time",
            "10",
        ],
    );
    assert!(up.status.success(), "{}", text(&up));
    let err = stderr(&up);
    assert!(err.contains("job") && err.contains("submitted"), "{err}");
    assert!(
        err.contains("is ready") && err.contains("ssh -N -L 8265:"),
        "{err}"
    );
    let rec = record(&home, "u1");
    assert_eq!(rec["state"], "READY", "{rec}");
    assert_eq!(rec["nodes_joined"], 2);
    let nodes = rec["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 2);
    assert!(nodes.iter().all(|n| n["cpus"] == 2), "{rec}");

    // status sees what the user asked for.
    let st = run(&home, &["status", "u1", "--json"]);
    assert!(st.status.success(), "{}", text(&st));
    let st: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    let c = &st["cluster"];
    assert_eq!(st["schema"], "ray-hpc.status/v1");
    assert_eq!(c["state"], "READY", "{st}");
    assert_eq!(
        (c["nodes_joined"].as_u64(), c["nodes_expected"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(c["totals"]["cpus_total"].as_f64(), Some(4.0), "{st}");
    assert!(
        c["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["cpus_total"] == 2.0),
        "{st}"
    );
    assert!(
        c["walltime_left_s"]
            .as_u64()
            .is_some_and(|s| s > 0 && s <= 600),
        "{st}"
    );

    // The printed export lines make the real Ray CLI and a driver work.
    let env = exports(&String::from_utf8_lossy(&up.stdout));
    assert!(
        env.iter().any(|(k, _)| k == "RAY_AUTH_TOKEN_PATH"),
        "{env:?}"
    );
    let status = Command::new(venv_bin().join("ray"))
        .arg("status")
        .envs(env.iter().cloned())
        .env("PATH", test_path())
        .current_dir(home.path())
        .output()
        .unwrap();
    let status_text = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "ray status: {}", text(&status));
    assert!(
        status_text.contains("4.0 CPU"),
        "ray status shows the 4 CPUs: {status_text}"
    );
    let driver = Command::new(venv_bin().join("python"))
        .args([
            "-c",
            "import ray; ray.init(); print('alive', sum(n['Alive'] for n in ray.nodes()))",
        ])
        .envs(env.iter().cloned())
        .env("PATH", test_path())
        .current_dir(home.path())
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&driver.stdout).contains("alive 2"),
        "{}",
        text(&driver)
    );

    // Ray jobs through the Jobs API exit with their status.
    let ok = run(
        &home,
        &["submit", "u1", "--", "python", "-c", "print('job says hi')"],
    );
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok));
    assert!(
        String::from_utf8_lossy(&ok.stdout).contains("job says hi"),
        "{}",
        text(&ok)
    );
    let bad = run(
        &home,
        &[
            "submit",
            "u1",
            "--",
            "python",
            "-c",
            "import sys; sys.exit(1)",
        ],
    );
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));

    let down = run(&home, &["down", "u1"]);
    assert!(down.status.success(), "{}", text(&down));
    assert!(squeue_ids("rh-u1").is_empty(), "the job is gone");
    assert_eq!(record(&home, "u1")["state"], "ENDED");
    home.assert_no_leftovers(Duration::from_secs(30));
    for dir in temp_dirs(&record(&home, "u1")) {
        assert!(!dir.exists(), "{} left", dir.display());
    }
    // A cluster already gone is not an error; an unknown one is, naming the known ones.
    assert!(run(&home, &["down", "u1"]).status.success());
    let unknown = run(&home, &["down", "nope"]);
    assert!(!unknown.status.success());
    assert!(
        stderr(&unknown).contains("known clusters: u1"),
        "{}",
        text(&unknown)
    );
}

#[test]
fn a_cluster_that_cannot_start_yet_shows_queued_with_slurms_reason() {
    if !slurm_testbed() {
        return;
    }
    let home = TestHome::new();
    let _blocker = Blocker::fill("n[1-4]", 4);
    // Not ready in time: say where it is stuck, and leave it queued.
    let up = run(
        &home,
        &["up", "--name", "q1", "--nodes", "2", "--timeout", "8"],
    );
    assert_eq!(up.status.code(), Some(1), "{}", text(&up));
    assert!(stderr(&up).contains("queued: Resources"), "{}", text(&up));
    assert!(stderr(&up).contains("ray-hpc down q1"), "{}", text(&up));
    let rec = record(&home, "q1");
    assert_eq!(rec["state"], "QUEUED", "{rec}");
    assert_eq!(squeue_ids("rh-q1").len(), 1, "still queued");
    let st = run(&home, &["status", "q1", "--json"]);
    assert!(st.status.success(), "{}", text(&st));
    let st: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(st["cluster"]["state"], "QUEUED", "{st}");
    assert_eq!(st["cluster"]["jobs"][0]["reason"], "Resources", "{st}");
    let list = run(&home, &["status"]);
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(
        list.lines()
            .any(|l| l.contains("q1") && l.contains("QUEUED")),
        "{list}"
    );

    // --cancel-on-timeout gives it back instead.
    let up = run(
        &home,
        &[
            "up",
            "--name",
            "q2",
            "--nodes",
            "1",
            "--timeout",
            "5",
            "--cancel-on-timeout",
        ],
    );
    assert_eq!(up.status.code(), Some(1), "{}", text(&up));
    assert!(stderr(&up).contains("cancelled job"), "{}", text(&up));
    assert_eq!(record(&home, "q2")["state"], "FAILED");
    wait_for(
        "q2's job to leave the queue",
        Duration::from_secs(30),
        || squeue_ids("rh-q2").is_empty().then_some(()),
        String::new,
    );

    let down = run(&home, &["down", "--all"]);
    assert!(down.status.success(), "{}", text(&down));
    assert!(squeue_ids("rh-q1").is_empty());
    assert_eq!(record(&home, "q1")["state"], "ENDED");
}

#[test]
fn dry_run_prints_the_script_with_extra_directives_and_submits_nothing() {
    if !slurm_testbed() {
        return;
    }
    let home = TestHome::new();
    let cfg = home.write(
        "c.toml",
        "[slurm]\nextra_directives = [\"#SBATCH --comment=from-the-config\", \"#SBATCH --exclusive\"]\n",
    );
    let out = run(
        &home,
        &[
            "--config",
            cfg.to_str().unwrap(),
            "up",
            "--dry-run",
            "--name",
            "d1",
            "--nodes",
            "3",
            "--partition",
            "debug",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let script = String::from_utf8_lossy(&out.stdout);
    for line in [
        "#SBATCH --nodes=3",
        "#SBATCH --partition=debug",
        "#SBATCH --comment=from-the-config",
        "#SBATCH --exclusive",
        "#SBATCH --job-name=rh-d1",
    ] {
        assert!(
            script.lines().any(|l| l == line),
            "{line} missing:\n{script}"
        );
    }
    assert!(script.contains(" run --name d1"), "{script}");
    assert!(squeue_ids("rh-d1").is_empty(), "nothing submitted");
    assert!(
        !home.path().join("clusters/d1").exists(),
        "no registry entry"
    );
}

#[test]
fn a_refused_submission_shows_slurms_message_and_fails() {
    if !slurm_testbed() {
        return;
    }
    let home = TestHome::new();
    let out = run(
        &home,
        &["up", "--name", "bad", "--partition", "nosuchpartition"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains("Invalid partition name specified"),
        "{}",
        text(&out)
    );
    let rec = record(&home, "bad");
    assert_eq!(rec["state"], "FAILED");
    assert!(
        rec["message"]
            .as_str()
            .unwrap()
            .contains("Invalid partition name specified"),
        "{rec}"
    );
}

#[test]
fn local_up_and_down() {
    let home = TestHome::new();
    let up = run(
        &home,
        &[
            "--scheduler",
            "local",
            "up",
            "--name",
            "l1",
            "--timeout",
            "180",
        ],
    );
    assert!(
        up.status.success(),
        "{}\n{}",
        text(&up),
        std::fs::read_to_string(home.path().join("clusters/l1/job.out")).unwrap_or_default()
    );
    let rec = record(&home, "l1");
    assert_eq!(rec["state"], "READY");
    assert!(rec["job_id"].as_str().unwrap().starts_with("local-"));

    // Our Prometheus endpoint answers with the documented metrics.
    let metrics_addr = rec["metrics_address"].as_str().expect("metrics_address");
    let body = http_get(metrics_addr, "/metrics");
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    for name in [
        "rayhpc_nodes",
        "rayhpc_expected_nodes",
        "rayhpc_bringup_seconds",
        "rayhpc_pending_demand",
        "rayhpc_scheduler_jobs",
        "rayhpc_info",
    ] {
        // (rayhpc_submissions and rayhpc_submission_failures appear with the autoscaler's first
        // node type; nothing is submitted yet.)
        assert!(
            body.contains(&format!("# TYPE {name}")),
            "{name} missing:\n{body}"
        );
    }
    assert!(
        body.contains("rayhpc_expected_nodes{cluster=\"l1\"} 1"),
        "{body}"
    );
    // The file_sd list names our endpoint and Ray's own metrics port, for a site Prometheus.
    let sd: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(home.path().join("clusters/l1/prometheus-targets.json")).unwrap(),
    )
    .unwrap();
    let groups = sd.as_array().unwrap();
    assert_eq!(groups[0]["targets"][0], metrics_addr, "{sd}");
    assert_eq!(groups[0]["labels"]["cluster"], "l1");
    let ray_port = rec["nodes"][0]["ports"]["metrics_export"].as_u64().unwrap();
    assert_eq!(
        groups[1]["targets"][0].as_str().unwrap(),
        format!(
            "{}:{ray_port}",
            rec["nodes"][0]["address"].as_str().unwrap()
        ),
        "{sd}"
    );
    let down = run(&home, &["down", "l1"]);
    assert!(down.status.success(), "{}", text(&down));
    assert_eq!(record(&home, "l1")["state"], "ENDED");
    home.assert_no_leftovers(Duration::from_secs(30));
}

/// A plain HTTP/1.1 GET; returns the whole response.
fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

/// `up --json`, `env` and `request-resources` as a program (the Python package) uses them,
/// against the local scheduler: JSON lines only on stdout, in the documented order, and the
/// cluster they describe is the one `env` and `status` show.
#[test]
fn local_up_json_env_and_request_resources() {
    let home = TestHome::new();
    let up = run(
        &home,
        &[
            "--scheduler",
            "local",
            "up",
            "--json",
            "--name",
            "j1",
            "--timeout",
            "180",
        ],
    );
    let job_out =
        || std::fs::read_to_string(home.path().join("clusters/j1/job.out")).unwrap_or_default();
    assert!(up.status.success(), "{}\n{}", text(&up), job_out());
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&up.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}\n{}", text(&up)))
        })
        .collect();
    let names: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(names.first(), Some(&"submitted"), "{names:?}");
    assert_eq!(names.last(), Some(&"ready"), "{names:?}");
    assert!(names.contains(&"stage"), "{names:?}");
    assert!(events.iter().all(|e| e["schema"] == "ray-hpc.up/v1"));
    assert_eq!(events[0]["name"], "j1");
    assert_eq!(events[0]["scheduler"], "local");
    let ready = &events[events.len() - 1]["cluster"];
    let gcs = ready["gcs_address"]
        .as_str()
        .expect("gcs_address")
        .to_string();
    assert_eq!(ready["env"]["RAY_ADDRESS"], gcs.as_str());
    assert_eq!(ready["unset"], serde_json::json!(["RAY_AUTH_TOKEN"]));

    // `env --json` is the same connection; `env` is the same as export lines.
    let env = run(&home, &["env", "j1", "--json"]);
    assert!(env.status.success(), "{}", text(&env));
    let mut doc: serde_json::Value = serde_json::from_slice(&env.stdout).unwrap();
    assert_eq!(doc["schema"], "ray-hpc.env/v1");
    doc.as_object_mut().unwrap().remove("schema");
    assert_eq!(&doc, ready);
    let lines = run(&home, &["env", "j1"]);
    let exported = exports(&String::from_utf8_lossy(&lines.stdout));
    assert!(
        exported.contains(&("RAY_ADDRESS".into(), gcs.clone())),
        "{exported:?}"
    );
    assert!(
        String::from_utf8_lossy(&lines.stdout).contains("unset RAY_AUTH_TOKEN"),
        "{}",
        text(&lines)
    );

    // A request shows in `status` as a constraint, grouped by shape; none clears it.
    let pending = || {
        let st = run(&home, &["status", "j1", "--json"]);
        assert!(st.status.success(), "{}", text(&st));
        let v: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
        v["cluster"]["pending_demand"].clone()
    };
    let asked = run(
        &home,
        &[
            "request-resources",
            "j1",
            "--cpus",
            "3",
            "--bundles",
            r#"[{"CPU": 2, "GPU": 1}]"#,
        ],
    );
    assert!(asked.status.success(), "{}", text(&asked));
    assert!(
        stderr(&asked).contains("{CPU: 1} x 3, {CPU: 2, GPU: 1}"),
        "{}",
        text(&asked)
    );
    let demand = pending();
    let mut seen: Vec<(String, i64)> = demand
        .as_array()
        .unwrap_or_else(|| panic!("no pending_demand: {demand}"))
        .iter()
        .map(|d| {
            assert_eq!(d["kind"], "constraint", "{d}");
            (d["bundles"][0].to_string(), d["count"].as_i64().unwrap())
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            (r#"{"CPU":1.0}"#.to_string(), 3),
            (r#"{"CPU":2.0,"GPU":1.0}"#.to_string(), 1)
        ],
        "{demand}"
    );
    let cleared = run(&home, &["request-resources", "j1"]);
    assert!(cleared.status.success(), "{}", text(&cleared));
    assert_eq!(pending(), serde_json::json!([]));

    let bad = run(
        &home,
        &["request-resources", "j1", "--bundles", r#"[{"CPU": -1}]"#],
    );
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    assert!(
        stderr(&bad).contains("bundle 1") && stderr(&bad).contains("CPU must be a number"),
        "{}",
        text(&bad)
    );

    let down = run(&home, &["down", "j1"]);
    assert!(down.status.success(), "{}", text(&down));
    // An ended cluster has no environment and takes no requests; both say why.
    let gone = run(&home, &["env", "j1", "--json"]);
    assert_eq!(gone.status.code(), Some(1), "{}", text(&gone));
    assert!(
        gone.stdout.is_empty() && stderr(&gone).contains("not READY"),
        "{}",
        text(&gone)
    );
    let late = run(&home, &["request-resources", "j1", "--cpus", "1"]);
    assert_eq!(late.status.code(), Some(2), "{}", text(&late));
    assert!(stderr(&late).contains("not READY"), "{}", text(&late));
    home.assert_no_leftovers(Duration::from_secs(30));
}

/// `completions` writes a script for each shell that offers the commands, not the hidden ones.
#[test]
fn completions_for_bash_zsh_and_fish() {
    let home = TestHome::new();
    for shell in ["bash", "zsh", "fish"] {
        let out = run(&home, &["completions", shell]);
        assert!(out.status.success(), "{shell}: {}", text(&out));
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(script.contains("request-resources"), "{shell}: {script}");
        assert!(!script.contains("watchdog"), "{shell}: {script}");
    }
    let bad = run(&home, &["completions", "tcsh"]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    assert!(stderr(&bad).contains("tcsh"), "{}", text(&bad));
}
