//! `ray-hpc doctor` end to end: the real binary, a registry of its own under /tmp, the real Ray
//! from .venv, and a real local cluster for the reachability check.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use ray_hpc::registry::{ClusterDir, ClusterRecord, ClusterState, NodeRecord, SCHEMA_VERSION};
use serde_json::Value;

const IDS: [&str; 7] = [
    "open-files",
    "dev-shm",
    "socket-path",
    "head-cpus",
    "ray-version",
    "token-perms",
    "head-reachable",
];

/// The parsed `--json` report of a doctor run, checked against the schema.
fn report(out: &Output) -> Value {
    let json: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("doctor printed no JSON ({e}):\n{}", text(out)));
    assert_eq!(json["schema"], "ray-hpc.doctor/v1", "{json:#}");
    let checks = json["checks"].as_array().expect("checks");
    let ids: Vec<&str> = checks.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids, IDS, "{json:#}");
    for c in checks {
        let status = c["status"].as_str().unwrap();
        assert!(["ok", "warn", "fail", "skipped"].contains(&status), "{c:#}");
        assert!(!c["finding"].as_str().unwrap().is_empty(), "{c:#}");
        if matches!(status, "warn" | "fail") {
            assert!(!c["fix"].as_str().unwrap_or("").is_empty(), "{c:#}");
        }
    }
    let fails = checks.iter().filter(|c| c["status"] == "fail").count();
    assert_eq!(json["counts"]["fail"], fails, "{json:#}");
    assert_eq!(json["ok"], fails == 0, "{json:#}");
    let want_code = if fails == 0 { 0 } else { 1 };
    assert_eq!(out.status.code(), Some(want_code), "{}", text(out));
    json
}

fn check<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("no check {id} in {report:#}"))
}

fn doctor(home: &TestHome, args: &[&str]) -> (Output, Value) {
    let mut all = vec!["doctor", "--json"];
    all.extend_from_slice(args);
    let out = home.command(&all).output().unwrap();
    let json = report(&out);
    (out, json)
}

/// A cluster record written the way ray-hpc writes them (dir 0700, files 0600).
fn fake_cluster(home: &TestHome, name: &str, state: ClusterState, temp_dir: &str) -> ClusterDir {
    let dir = ClusterDir::create(home.path(), name).unwrap();
    dir.write_new_token().unwrap();
    dir.save(&ClusterRecord {
        schema: SCHEMA_VERSION,
        name: name.into(),
        scheduler: "local".into(),
        job_id: "local-1".into(),
        state,
        message: Some("stopped by the test".into()),
        created_unix: 1,
        updated_unix: 1,
        expected_nodes: 1,
        head_node: "n1".into(),
        head_address: Some("127.0.0.2".into()),
        gcs_address: Some("127.0.0.2:1".into()),
        dashboard_url: Some("http://127.0.0.2:2".into()),
        client_server_address: Some("127.0.0.2:3".into()),
        control_address: None,
        auth: "token".into(),
        token_path: Some(dir.token_path()),
        nodes: vec![NodeRecord {
            rank: 0,
            node_name: "n1".into(),
            address: "127.0.0.2".into(),
            instance_id: "local-1".into(),
            cpus: 2,
            gpus: 0,
            memory_bytes: 1 << 30,
            temp_dir: temp_dir.into(),
            node_id: None,
            ports: Default::default(),
        }],
        nodes_joined: 1,
        metrics_address: None,
        job_output: None,
        worker_jobs: vec![],
        autoscaler_notes: vec![],
        scheduler_outage: None,
        scheduler_settings: Default::default(),
    })
    .unwrap();
    dir
}

#[test]
fn the_default_environment_here() {
    let home = TestHome::new();
    let (_, json) = doctor(&home, &[]);
    eprintln!("doctor on this machine:\n{json:#}");
    assert_eq!(json["cluster"], Value::Null);
    let version = check(&json, "ray-version");
    assert_eq!(version["status"], "ok", "{version:#}");
    assert_eq!(version["values"]["version"], "2.60.0");
    assert_eq!(check(&json, "socket-path")["status"], "ok");
    let shm = check(&json, "dev-shm")["status"].as_str().unwrap();
    assert!(matches!(shm, "ok" | "warn"), "{json:#}");
    // An empty registry, and no cluster named.
    for id in ["token-perms", "head-cpus", "head-reachable"] {
        assert_eq!(check(&json, id)["status"], "skipped", "{id}: {json:#}");
    }
    // The open-files check sees the limits this test runs with.
    let (soft, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    let files = check(&json, "open-files");
    assert_eq!(files["values"]["hard"], hard, "{files:#}");
    assert_eq!(files["values"]["soft"], soft, "{files:#}");
    let want = if hard >= 65535 { "ok" } else { "fail" };
    assert_eq!(files["status"], want, "{files:#}");

    // The text report: every check, its fix when it has one, the summary, the same exit code.
    let out = home.command(&["doctor"]).output().unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    eprintln!("{shown}");
    for id in IDS {
        assert!(shown.contains(id), "{id} missing:\n{shown}");
    }
    assert!(shown.contains(" ok, "), "{shown}");
    assert_eq!(
        out.status.code(),
        Some(if json["ok"] == true { 0 } else { 1 })
    );
    home.assert_no_leftovers(Duration::from_secs(10));
}

#[test]
fn a_low_hard_open_files_limit_fails() {
    let home = TestHome::new();
    let out = Command::new("bash")
        .args([
            "-c",
            "ulimit -Sn 1024; ulimit -Hn 1024; exec \"$0\" doctor --json",
        ])
        .arg(ray_hpc())
        .env("RAY_HPC_HOME", home.path())
        .env("PATH", test_path())
        .env_remove("VIRTUAL_ENV")
        .env_remove("RAY_HPC_CONFIG")
        .output()
        .unwrap();
    let json = report(&out);
    let files = check(&json, "open-files");
    assert_eq!(files["status"], "fail", "{files:#}");
    assert_eq!(files["values"]["hard"], 1024);
    assert!(
        files["finding"]
            .as_str()
            .unwrap()
            .contains("hard limit 1024")
    );
    assert!(files["fix"].as_str().unwrap().contains("ulimit -Hn"));
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn without_ray_the_version_check_fails_with_the_install_command() {
    let home = TestHome::new();
    let empty = home.path().join("empty-bin");
    std::fs::create_dir(&empty).unwrap();
    let out = home
        .command(&["doctor", "--json"])
        .env("PATH", &empty)
        .output()
        .unwrap();
    let json = report(&out);
    let version = check(&json, "ray-version");
    assert_eq!(version["status"], "fail", "{version:#}");
    assert!(
        version["fix"]
            .as_str()
            .unwrap()
            .contains("pip install 'ray[default]==2.60.0'"),
        "{version:#}"
    );
    assert_eq!(out.status.code(), Some(1));

    // ray.bin pointing nowhere fails the same way.
    let cfg = home.write("cfg.toml", "[ray]\nbin = \"/nonexistent/ray\"\n");
    let out = home
        .command(&["--config", cfg.to_str().unwrap(), "doctor", "--json"])
        .output()
        .unwrap();
    let json = report(&out);
    let version = check(&json, "ray-version");
    assert_eq!(version["status"], "fail", "{version:#}");
    assert!(version["finding"].as_str().unwrap().contains("ray.bin"));
}

#[test]
fn socket_paths_at_the_config_limit_pass_and_longer_ones_fail() {
    let home = TestHome::new();
    // The longest temp_root the config accepts (26 bytes).
    let root = format!("/tmp/{}", "a".repeat(21));
    assert_eq!(root.len(), 26);
    let cfg = home.write("cfg.toml", &format!("[cluster]\ntemp_root = \"{root}\"\n"));
    let (_, json) = doctor(&home, &["--config", cfg.to_str().unwrap()]);
    // It fits whatever the pid width (Linux pids have at most 7 digits).
    let sock = check(&json, "socket-path");
    assert_eq!(sock["status"], "ok", "{sock:#}");
    let longest = sock["values"]["longest_bytes"].as_u64().unwrap();
    assert!((26 + 12 + 45 + 16 + 1..=107).contains(&longest), "{sock:#}");

    // One byte more is refused by the config itself, before doctor runs.
    let cfg = home.write(
        "cfg2.toml",
        &format!("[cluster]\ntemp_root = \"{root}a\"\n"),
    );
    let out = home
        .command(&["--config", cfg.to_str().unwrap(), "doctor", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("at most 26"),
        "{}",
        text(&out)
    );

    // So a real failure needs a cluster whose nodes used a long temp dir (an older ray-hpc, or
    // a hand-made setup): its record says so.
    let long = format!("/tmp/{}/rh-abcdef-0", "d".repeat(60));
    fake_cluster(&home, "long1", ClusterState::Ended, &long);
    let (out, json) = doctor(&home, &["long1"]);
    let sock = check(&json, "socket-path");
    assert_eq!(sock["status"], "fail", "{sock:#}");
    assert_eq!(sock["values"]["longest_temp_dir"], long.as_str());
    assert!(
        sock["fix"].as_str().unwrap().contains("cluster.temp_root"),
        "{sock:#}"
    );
    assert_eq!(out.status.code(), Some(1));
    let reach = check(&json, "head-reachable");
    assert_eq!(reach["status"], "skipped", "{reach:#}");
    assert!(reach["finding"].as_str().unwrap().contains("is ENDED"));
}

#[test]
fn a_cluster_dir_open_to_others_fails_the_token_check() {
    let home = TestHome::new();
    let dir = fake_cluster(&home, "c1", ClusterState::Ended, "/tmp/rh-abcdef-0");
    let (_, json) = doctor(&home, &[]);
    let perms = check(&json, "token-perms");
    assert_eq!(perms["status"], "ok", "{perms:#}");
    assert_eq!(perms["values"]["clusters"][0], "c1");

    std::fs::set_permissions(&dir.path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let want_fix = format!("chmod 0700 {}", dir.path.display());
    for args in [&[][..], &["c1"][..]] {
        let (out, json) = doctor(&home, args);
        let perms = check(&json, "token-perms");
        assert_eq!(perms["status"], "fail", "{args:?}: {perms:#}");
        assert!(
            perms["finding"].as_str().unwrap().contains("0755"),
            "{perms:#}"
        );
        assert!(
            perms["fix"].as_str().unwrap().contains(&want_fix),
            "{perms:#}"
        );
        assert_eq!(out.status.code(), Some(1));
    }

    // The token itself, readable by others.
    std::fs::set_permissions(&dir.path, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(dir.token_path(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let (_, json) = doctor(&home, &["c1"]);
    let perms = check(&json, "token-perms");
    assert_eq!(perms["status"], "fail", "{perms:#}");
    let want_fix = format!("chmod 0600 {}", dir.token_path().display());
    assert!(
        perms["fix"].as_str().unwrap().contains(&want_fix),
        "{perms:#}"
    );

    // An unknown name is an error (exit 2) that lists the known ones.
    let out = home.command(&["doctor", "nope"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("known clusters: c1"),
        "{}",
        text(&out)
    );
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

#[test]
fn a_running_clusters_head_is_reachable_and_an_ended_one_is_skipped() {
    let home = TestHome::new();
    let log = home.path().join("run.log");
    let mut run = home
        .command(&["--scheduler", "local", "run", "--name", "doc1"])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(home.path().join("run.err")).unwrap())
        .spawn()
        .unwrap();
    let record = home.path().join("clusters/doc1/cluster.json");
    let err_log = home.path().join("run.err");
    wait_for(
        "cluster doc1 to be READY",
        Duration::from_secs(120),
        || {
            if let Ok(Some(status)) = run.try_wait() {
                panic!(
                    "`ray-hpc run` exited ({status}) before READY:\n{}",
                    log_tail(&err_log)
                );
            }
            let text = std::fs::read_to_string(&record).ok()?;
            let rec: Value = serde_json::from_str(&text).ok()?;
            (rec["state"] == "READY").then_some(())
        },
        || log_tail(&err_log),
    );

    let (out, json) = doctor(&home, &["doc1"]);
    eprintln!("doctor doc1 while READY:\n{json:#}");
    assert_eq!(json["cluster"], "doc1");
    let reach = check(&json, "head-reachable");
    assert_eq!(reach["status"], "ok", "{reach:#}");
    let targets = reach["values"]["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 3, "{reach:#}");
    for t in targets {
        assert!(t["connect_ms"].is_u64(), "{reach:#}");
    }
    assert!(
        reach["finding"]
            .as_str()
            .unwrap()
            .contains("from this host"),
        "{reach:#}"
    );
    assert_eq!(check(&json, "head-cpus")["status"], "ok");
    assert_eq!(check(&json, "token-perms")["status"], "ok");
    // The socket paths of the running node were measured here, and fit.
    let sock = check(&json, "socket-path");
    assert_eq!(sock["status"], "ok", "{sock:#}");
    let measured = sock["values"]["measured_bytes"].as_u64().expect("measured");
    assert!(measured <= sock["values"]["longest_bytes"].as_u64().unwrap());
    assert!(out.status.code().is_some());

    // Stop the cluster the way a scheduler does: SIGTERM to the run process.
    let pid = nix::unistd::Pid::from_raw(run.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if run.try_wait().unwrap().is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "`ray-hpc run` did not exit within 60 s of SIGTERM:\n{}",
            log_tail(&err_log)
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let (_, json) = doctor(&home, &["doc1"]);
    let reach = check(&json, "head-reachable");
    assert_eq!(reach["status"], "skipped", "{reach:#}");
    assert!(
        reach["finding"]
            .as_str()
            .unwrap()
            .contains("cluster doc1 is ENDED"),
        "{reach:#}"
    );
    home.assert_no_leftovers(Duration::from_secs(20));
}
