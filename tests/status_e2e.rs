//! `ray-hpc status` end to end with the real Ray: a local cluster from READY (live nodes from the
//! GCS, pending demand from a real driver) to ENDED, the list view, and unknown or refused names.
//! Every test checks at the end that no process of its RAY_HPC_HOME survives.

mod common;

use std::fs::File;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

const READY_WITHIN: Duration = Duration::from_secs(120);
const LEFTOVER_WAIT: Duration = Duration::from_secs(30);

fn status(home: &TestHome, args: &[&str]) -> Output {
    let mut argv = vec!["status"];
    argv.extend_from_slice(args);
    home.command(&argv).output().unwrap()
}

/// `status ARGS --json`, parsed; None when it did not succeed or print JSON.
fn status_json(home: &TestHome, args: &[&str]) -> Option<Value> {
    let mut argv = args.to_vec();
    argv.push("--json");
    let out = status(home, &argv);
    if !out.status.success() {
        return None;
    }
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    assert_eq!(v["schema"], "ray-hpc.status/v1", "{v}");
    Some(v)
}

fn log_tail(path: &std::path::Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Waits for a child we started to exit; panics at the deadline.
fn wait_exit(child: &mut Child, what: &str, within: Duration) {
    wait_for(what, within, || child.try_wait().unwrap(), String::new);
}

/// A driver holding a task that needs 64 CPUs, which no local node has: pending demand.
fn start_hungry_driver(home: &TestHome, record: &Value) -> Child {
    let log = File::create(home.path().join("driver.log")).unwrap();
    Command::new(venv_bin().join("python"))
        .args([
            "-u",
            "-c",
            "import ray, time\n\
             ray.init()\n\
             @ray.remote(num_cpus=64)\n\
             def hungry():\n    return 1\n\
             ref = hungry.remote()\n\
             print('submitted', flush=True)\n\
             time.sleep(600)\n",
        ])
        // So that the leftover check covers it (and the Ray workers it causes).
        .env("RAY_HPC_HOME", home.path())
        .env("RAY_ADDRESS", record["gcs_address"].as_str().unwrap())
        .env("RAY_AUTH_MODE", "token")
        .env(
            "RAY_AUTH_TOKEN_PATH",
            record["token_path"].as_str().unwrap(),
        )
        .env_remove("RAY_AUTH_TOKEN")
        .env_remove("VIRTUAL_ENV")
        .env_remove("SLURM_JOB_ID")
        .current_dir(home.path())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap()
}

#[test]
fn status_follows_a_local_cluster_from_ready_to_ended() {
    let home = TestHome::new();
    let discovered = home
        .command(&["--scheduler", "local", "discover", "--json"])
        .output()
        .unwrap();
    assert!(discovered.status.success(), "{}", text(&discovered));
    let discovered: Value = serde_json::from_slice(&discovered.stdout).unwrap();
    let cpus = discovered["cpus"].as_f64().unwrap();

    let run_log = home.path().join("run.log");
    let log = File::create(&run_log).unwrap();
    let mut run = home
        .command(&["--scheduler", "local", "run", "--name", "st1"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();

    // READY with its one node, live from the GCS.
    let ready = wait_for(
        "`status st1 --json` to say READY with 1/1 nodes",
        READY_WITHIN,
        || {
            if let Ok(Some(st)) = run.try_wait() {
                panic!("`run` exited early ({st}):\n{}", log_tail(&run_log));
            }
            let v = status_json(&home, &["st1"])?;
            let c = &v["cluster"];
            (c["state"] == "READY"
                && c["nodes_joined"] == 1
                && c["nodes_expected"] == 1
                && c["nodes_source"] == "gcs")
                .then(|| c.clone())
        },
        || {
            format!(
                "status: {}\nrun log:\n{}",
                text(&status(&home, &["st1", "--json"])),
                log_tail(&run_log)
            )
        },
    );
    assert_eq!(ready["name"], "st1");
    assert_eq!(ready["scheduler"], "local");
    assert_eq!(ready["last_known"], false, "{ready}");
    assert_eq!(ready["gcs"]["status"], "live", "{ready}");
    let nodes = ready["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1, "{ready}");
    assert_eq!(nodes[0]["cpus_total"].as_f64(), Some(cpus), "{ready}");
    assert_eq!(nodes[0]["is_head"], true, "{ready}");
    assert!(
        matches!(nodes[0]["status"].as_str(), Some("IDLE" | "RUNNING")),
        "{ready}"
    );
    assert_eq!(nodes[0]["node_id"].as_str().map(str::len), Some(56));
    assert_eq!(ready["totals"]["cpus_total"].as_f64(), Some(cpus));
    assert!(
        ready["dashboard_url"]
            .as_str()
            .is_some_and(|u| u.starts_with("http://127.0.0.2:")),
        "{ready}"
    );
    assert_eq!(ready["pending_demand"], serde_json::json!([]), "{ready}");

    // The detail text says the same.
    let out = status(&home, &["st1"]);
    assert!(out.status.success(), "{}", text(&out));
    let detail = String::from_utf8_lossy(&out.stdout);
    for want in ["Cluster st1: READY", "1/1 joined", "Pending demand: none"] {
        assert!(detail.contains(want), "{want:?} in:\n{detail}");
    }

    // The list views.
    let list = status_json(&home, &[]).expect("status --json");
    let clusters = list["clusters"].as_array().unwrap();
    assert_eq!(clusters.len(), 1, "{list}");
    assert_eq!(clusters[0]["name"], "st1");
    assert_eq!(clusters[0]["state"], "READY", "{list}");
    assert_eq!(list["refused"], serde_json::json!([]));
    let out = status(&home, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let listing = String::from_utf8_lossy(&out.stdout);
    let line = listing
        .lines()
        .find(|l| l.starts_with("st1 "))
        .unwrap_or_else(|| panic!("no st1 line in:\n{listing}"));
    assert!(
        line.contains("READY") && line.contains("1/1") && line.contains("local"),
        "{line}"
    );

    // Pending demand from a real driver.
    let record = home.cluster_record();
    let mut driver = start_hungry_driver(&home, &record);
    let demand = wait_for(
        "`status st1 --json` to show the driver's {CPU: 64} task",
        Duration::from_secs(60),
        || {
            if let Ok(Some(st)) = driver.try_wait() {
                panic!(
                    "the driver exited early ({st}):\n{}",
                    log_tail(&home.path().join("driver.log"))
                );
            }
            let v = status_json(&home, &["st1"])?;
            let d = v["cluster"]["pending_demand"].as_array()?.clone();
            d.iter()
                .any(|d| d["kind"] == "tasks" && d["bundles"][0]["CPU"].as_f64() == Some(64.0))
                .then_some(d)
        },
        || {
            format!(
                "status: {}\ndriver log:\n{}",
                text(&status(&home, &["st1", "--json"])),
                log_tail(&home.path().join("driver.log"))
            )
        },
    );
    let task = demand.iter().find(|d| d["kind"] == "tasks").unwrap();
    assert_eq!(task["count"], 1, "{task}");
    let out = status(&home, &["st1"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("{CPU: 64} x 1"),
        "{}",
        text(&out)
    );
    driver.kill().unwrap();
    driver.wait().unwrap();

    // SIGTERM ends the cluster; status says ENDED, as last known.
    let st = Command::new("kill")
        .args(["-TERM", &run.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    wait_exit(
        &mut run,
        "`run` to exit after SIGTERM",
        Duration::from_secs(90),
    );
    let ended = status_json(&home, &["st1"]).expect("status st1 --json");
    let c = &ended["cluster"];
    assert_eq!(c["state"], "ENDED", "{ended}");
    assert_eq!(c["last_known"], true, "{ended}");
    assert_eq!(c["gcs"]["status"], "not_asked", "{ended}");
    let out = status(&home, &["st1"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ENDED (last known)"),
        "{}",
        text(&out)
    );
    let list = status_json(&home, &[]).unwrap();
    assert_eq!(list["clusters"][0]["state"], "ENDED", "{list}");

    home.assert_no_leftovers(LEFTOVER_WAIT);
}

/// A cluster record written by hand: an ended local cluster.
fn write_record(home: &TestHome, name: &str) -> std::path::PathBuf {
    let dir = ray_hpc::registry::ClusterDir::create(home.path(), name).unwrap();
    let record = serde_json::json!({
        "schema": 1, "name": name, "scheduler": "local", "job_id": "local-1",
        "state": "ENDED", "message": "stopped by signal 15",
        "created_unix": 1, "updated_unix": 2, "expected_nodes": 1,
        "head_node": "h", "auth": "token",
    });
    let record: ray_hpc::registry::ClusterRecord = serde_json::from_value(record).unwrap();
    dir.save(&record).unwrap();
    dir.path
}

#[test]
fn unknown_and_refused_names_exit_1() {
    let home = TestHome::new();
    // No registry at all: an empty list, not an error.
    let out = status(&home, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "no clusters\n");
    let list = status_json(&home, &[]).unwrap();
    assert_eq!(list["clusters"], serde_json::json!([]));

    write_record(&home, "alpha");
    write_record(&home, "beta");
    for args in [&["nope"][..], &["nope", "--json"], &["nope", "--watch"]] {
        let out = status(&home, args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("known clusters: alpha, beta"), "{err}");
        assert!(out.stdout.is_empty(), "{}", text(&out));
    }

    // A record others can read is refused by name, and shown as refused in the list.
    let open = write_record(&home, "open");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = status(&home, &["open"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("mode is 0755"),
        "{}",
        text(&out)
    );
    let out = status(&home, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("open") && l.contains("refused: its mode is 0755")),
        "{listing}"
    );
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("alpha") && l.contains("ENDED (last known)")),
        "{listing}"
    );
    let list = status_json(&home, &[]).unwrap();
    assert_eq!(list["clusters"].as_array().unwrap().len(), 2, "{list}");
    assert_eq!(list["refused"][0]["name"], "open", "{list}");
    assert_eq!(list["refused"][0]["kind"], "unsafe", "{list}");

    home.assert_no_leftovers(LEFTOVER_WAIT);
}
