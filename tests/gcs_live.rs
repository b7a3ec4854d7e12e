//! End to end against the real Ray: starts a token-auth head from the crate's venv in its own
//! process group, talks to its GCS with `GcsClient`, then tears the group down and checks that no
//! Ray process is left.
//!
//! The `ray` CLI is `$RAY_HPC_RAY`, else the one next to `$RAY_HPC_PYTHON`, else
//! `<crate>/.venv/bin/ray`. Without it the test fails (CI always has the venv).
//!
//! Seen with Ray 2.60 (printed by the test with --nocapture): every process `ray start` starts
//! (GCS, raylet, dashboard and its forkserver children, agents, log monitor, client server) stays
//! in its process group and session; Ray *workers* (tasks, actors) call setpgid and each lead a
//! group of their own (same session), but they exit as soon as their raylet is gone, SIGKILL
//! included. gcs_server and the raylet do not exit promptly on SIGTERM: `ray start`'s handler stops
//! them, after its drain phase (RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S, default 30 s).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use rand::Rng;
use ray_hpc::proto::ray::autoscaler::{
    AutoscalingState, ClusterResourceConstraint, DrainNodeReason, NodeStatus,
    PendingInstanceRequest, ResourceRequest, ResourceRequestByCount,
};
use ray_hpc::ray::gcs::{GcsClient, GcsError, NODE_ID_LEN, node_id_hex};

const READY_DEADLINE: Duration = Duration::from_secs(90);
const TERM_GRACE: Duration = Duration::from_secs(10);
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(200);
const PROBE_DEADLINE: Duration = Duration::from_secs(60);

fn ray_cli() -> PathBuf {
    if let Some(p) = std::env::var_os("RAY_HPC_RAY").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("RAY_HPC_PYTHON").filter(|p| !p.is_empty()) {
        return PathBuf::from(p).with_file_name("ray");
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/ray")
}

/// A process seen while the cluster was up: (pid, start time) identifies it across pid reuse.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Proc {
    pid: i32,
    start_time: u64,
    ppid: i32,
    pgid: i32,
    sid: i32,
    state: char,
    cmdline: String,
}

fn read_proc(pid: i32) -> Option<Proc> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm may contain spaces and parentheses: the fields we want follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After comm: state(0) ppid(1) pgrp(2) session(3) ... starttime(19)
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let cmdline = String::from_utf8_lossy(&cmdline)
        .replace('\0', " ")
        .trim()
        .to_string();
    Some(Proc {
        pid,
        state: f.first()?.chars().next()?,
        ppid: f.get(1)?.parse().ok()?,
        pgid: f.get(2)?.parse().ok()?,
        sid: f.get(3)?.parse().ok()?,
        start_time: f.get(19)?.parse().ok()?,
        cmdline,
    })
}

fn all_procs() -> Vec<Proc> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(read_proc)
        .collect()
}

/// Live (non-zombie) processes that belong to the cluster: those whose command line mentions the
/// temp dir, those in our process group, and every descendant of `root`.
fn cluster_procs(temp_dir: &str, root: i32) -> Vec<Proc> {
    let procs = all_procs();
    let mut children: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for p in &procs {
        children.entry(p.ppid).or_default().push(p.pid);
    }
    let mut descendants = std::collections::BTreeSet::new();
    let mut stack = vec![root];
    while let Some(pid) = stack.pop() {
        if descendants.insert(pid) {
            stack.extend(children.get(&pid).into_iter().flatten());
        }
    }
    let mut found: Vec<Proc> = procs
        .into_iter()
        .filter(|p| p.state != 'Z')
        .filter(|p| p.cmdline.contains(temp_dir) || p.pgid == root || descendants.contains(&p.pid))
        .collect();
    found.sort();
    found
}

fn free_port() -> (std::net::TcpListener, u16) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let port = l.local_addr().unwrap().port();
    (l, port)
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn tail(path: &Path, lines: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read: {e})"),
    }
}

/// Where the probe driver's task and actor ran: [pid, pgid, sid].
#[derive(Debug, serde::Deserialize)]
struct Probe {
    task: [i32; 3],
    actor: [i32; 3],
}

/// A `ray start --head --block` in its own process group. Drop tears it down.
struct RayHead {
    child: Child,
    pgid: i32,
    temp_dir: PathBuf,
    /// Holds the token file and the output of `ray start`; removed on drop.
    work: tempfile::TempDir,
    gcs_address: String,
    token: String,
    started: Instant,
    torn_down: bool,
}

/// What teardown saw.
#[derive(Debug)]
struct Teardown {
    /// Processes still alive after SIGTERM + grace (and killed with SIGKILL).
    needed_sigkill: Vec<Proc>,
    /// Processes that mention the temp dir, are in the group, descend from `ray start` or were
    /// seen while up, still alive at the end (then killed with SIGKILL).
    leftovers: Vec<Proc>,
    took: Duration,
}

impl RayHead {
    fn start() -> RayHead {
        let ray = ray_cli();
        assert!(
            ray.exists(),
            "no `ray` CLI at {}: run the setup (`python3.11 -m venv .venv && .venv/bin/pip install \
             'ray[default]==2.60.0'` in the crate root) or set RAY_HPC_RAY / RAY_HPC_PYTHON",
            ray.display()
        );
        let mut rng = rand::rng();
        // Short: Ray's Unix socket paths under it must stay below 107 bytes.
        let suffix: String = (0..6)
            .map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rng.random_range(0..36)]))
            .collect();
        let temp_dir = PathBuf::from(format!("/tmp/rh-t{suffix}"));
        let work = tempfile::Builder::new()
            .prefix("rh-gcs-live")
            .tempdir()
            .unwrap();
        let token: String = (0..32)
            .map(|_| format!("{:02x}", rng.random::<u8>()))
            .collect();
        let token_path = work.path().join("token");
        {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&token_path)
                .unwrap();
            f.write_all(token.as_bytes()).unwrap();
        }
        assert_eq!(
            fs::metadata(&token_path).unwrap().permissions().mode() & 0o777,
            0o600
        );

        // Every port explicit; the others come from the ephemeral range, the worker range lies
        // below it, so they cannot overlap.
        let mut held = Vec::new();
        let mut port = || {
            let (l, p) = free_port();
            held.push(l);
            p
        };
        let ports: Vec<(&str, u16)> = [
            "--port",
            "--dashboard-port",
            "--ray-client-server-port",
            "--node-manager-port",
            "--object-manager-port",
            "--runtime-env-agent-port",
            "--dashboard-agent-grpc-port",
            "--dashboard-agent-listen-port",
            "--metrics-export-port",
        ]
        .into_iter()
        .map(|flag| (flag, port()))
        .collect();
        let (ephemeral_lo, _) = ephemeral_range();
        let min_worker = rng.random_range(20000..ephemeral_lo.saturating_sub(200).max(20001));
        let max_worker = min_worker + 99;
        for (flag, p) in &ports {
            assert!(
                !(min_worker..=max_worker).contains(p),
                "{flag} {p} in the worker range"
            );
        }
        let gcs_port = ports[0].1;
        drop(held);

        let out = fs::File::create(work.path().join("ray-start.log")).unwrap();
        let mut cmd = Command::new(&ray);
        cmd.args(["start", "--head", "--block", "--no-monitor"])
            .args(["--node-ip-address", "127.0.0.1"])
            .arg("--temp-dir")
            .arg(&temp_dir)
            .args(["--num-cpus", "1", "--num-gpus", "0"])
            .args(["--disable-usage-stats"])
            .args(["--min-worker-port", &min_worker.to_string()])
            .args(["--max-worker-port", &max_worker.to_string()]);
        for (flag, p) in &ports {
            cmd.arg(flag).arg(p.to_string());
        }
        cmd.env("RAY_AUTH_MODE", "token")
            .env("RAY_AUTH_TOKEN_PATH", &token_path)
            .env_remove("RAY_AUTH_TOKEN")
            .env_remove("RAY_ADDRESS")
            .env("RAY_enable_autoscaler_v2", "1")
            .env("RAY_CLOUD_INSTANCE_ID", "test-1")
            .env("RAY_NODE_TYPE_NAME", "head")
            .env("RAY_USAGE_STATS_ENABLED", "0")
            // On SIGTERM `ray start` first drains its node through the GCS for up to this long
            // (default 30 s) and only then stops its children (SIGTERM, 1 s, SIGKILL, one by
            // one); gcs_server and the raylet do not exit promptly on SIGTERM by themselves.
            .env("RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S", "0")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .process_group(0);
        let started = Instant::now();
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", ray.display()));
        let pgid = child.id() as i32;
        RayHead {
            child,
            pgid,
            temp_dir,
            work,
            gcs_address: format!("127.0.0.1:{gcs_port}"),
            token,
            started,
            torn_down: false,
        }
    }

    fn temp_str(&self) -> &str {
        self.temp_dir.to_str().unwrap()
    }

    /// Runs tests/support/ray_probe.py as a driver against this cluster.
    fn run_probe(&self) -> Probe {
        let python = ray_cli().with_file_name("python");
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/ray_probe.py");
        let (stdout_path, stderr_path) = (
            self.work.path().join("probe.out"),
            self.work.path().join("probe.err"),
        );
        let mut driver = Command::new(&python)
            .arg(&script)
            .arg(&self.gcs_address)
            .env("RAY_AUTH_MODE", "token")
            .env("RAY_AUTH_TOKEN_PATH", self.work.path().join("token"))
            .env_remove("RAY_AUTH_TOKEN")
            .env_remove("RAY_ADDRESS")
            .env("RAY_USAGE_STATS_ENABLED", "0")
            .stdin(Stdio::null())
            .stdout(fs::File::create(&stdout_path).unwrap())
            .stderr(fs::File::create(&stderr_path).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
        let deadline = Instant::now() + PROBE_DEADLINE;
        let status = loop {
            if let Some(status) = driver.try_wait().unwrap() {
                break Some(status);
            }
            if Instant::now() >= deadline {
                let _ = driver.kill();
                let _ = driver.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let stdout = fs::read_to_string(&stdout_path).unwrap_or_default();
        assert!(
            status.is_some_and(|s| s.success()),
            "driver {} failed ({}):\n{stdout}\n{}",
            script.display(),
            status.map_or(format!("killed after {PROBE_DEADLINE:?}"), |s| s
                .to_string()),
            tail(&stderr_path, 40)
        );
        let line = stdout.lines().last().unwrap_or_default();
        serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("driver printed {line:?}, not the JSON we expect: {e}"))
    }

    /// Panics (with the logs) when `ray start` has already exited.
    fn check_alive(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("`ray start` exited early ({status}):\n{}", self.logs());
        }
    }

    /// Tails of `ray start`'s output and of the session's logs.
    fn logs(&self) -> String {
        let mut out = format!(
            "==> ray start output <==\n{}\n",
            tail(&self.work.path().join("ray-start.log"), 60)
        );
        let logs = self.temp_dir.join("session_latest/logs");
        let mut files: Vec<PathBuf> = fs::read_dir(&logs)
            .map(|d| d.filter_map(|e| Some(e.ok()?.path())).collect())
            .unwrap_or_default();
        files.sort();
        for f in files {
            let name = f.file_name().unwrap().to_string_lossy().to_string();
            let wanted = name.ends_with(".err")
                || name.ends_with(".out")
                || name.starts_with("raylet")
                || name.starts_with("gcs_server");
            if wanted && f.is_file() && fs::metadata(&f).is_ok_and(|m| m.len() > 0) {
                out.push_str(&format!("==> {} <==\n{}\n", f.display(), tail(&f, 30)));
            }
        }
        out
    }

    /// Tears the cluster down: SIGTERM the group, wait up to TERM_GRACE for it to empty, SIGKILL
    /// the group. Then waits (bounded) for every process that belonged to the cluster just before
    /// the SIGTERM to be gone, workers included (they live in process groups of their own);
    /// survivors are reported and killed.
    fn teardown(&mut self) -> Teardown {
        self.torn_down = true;
        let before = cluster_procs(self.temp_str(), self.pgid);
        let t0 = Instant::now();
        let group = Pid::from_raw(self.pgid);
        let _ = killpg(group, Signal::SIGTERM);
        let deadline = t0 + TERM_GRACE;
        let mut needed_sigkill = Vec::new();
        loop {
            let _ = self.child.try_wait();
            let live = live_in_group(self.pgid);
            if live.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                needed_sigkill = live;
                let _ = killpg(group, Signal::SIGKILL);
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.wait();
        let me = std::process::id() as i32;
        let still_alive = || {
            let mut alive: Vec<Proc> = before
                .iter()
                .filter_map(|p| {
                    read_proc(p.pid)
                        .filter(|now| now.start_time == p.start_time && now.state != 'Z')
                })
                .chain(cluster_procs(self.temp_str(), self.pgid))
                .filter(|p| p.pid != me)
                .collect();
            alive.sort();
            alive.dedup_by_key(|p| p.pid);
            alive
        };
        // Dying takes a moment (workers notice their raylet is gone).
        let settle = Instant::now() + Duration::from_secs(5);
        let mut leftovers = still_alive();
        while !leftovers.is_empty() && Instant::now() < settle {
            std::thread::sleep(Duration::from_millis(50));
            leftovers = still_alive();
        }
        let took = t0.elapsed();
        // Clean up what survived (the caller still fails on it).
        for p in &leftovers {
            let _ = nix::sys::signal::kill(Pid::from_raw(p.pid), Signal::SIGKILL);
        }
        Teardown {
            needed_sigkill,
            leftovers,
            took,
        }
    }
}

fn live_in_group(pgid: i32) -> Vec<Proc> {
    all_procs()
        .into_iter()
        .filter(|p| p.pgid == pgid && p.state != 'Z')
        .collect()
}

fn ephemeral_range() -> (u16, u16) {
    fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|x| x.parse().ok());
            Some((it.next()??, it.next()??))
        })
        .unwrap_or((32768, 60999))
}

impl Drop for RayHead {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- logs of the Ray head under {} ----",
                self.temp_dir.display()
            );
            eprintln!("{}", self.logs());
        }
        if !self.torn_down {
            let report = self.teardown();
            if !report.leftovers.is_empty() {
                eprintln!("Ray processes left after teardown: {:#?}", report.leftovers);
            }
        }
        let _ = fs::remove_dir_all(&self.temp_dir);
    }
}

/// Polls until the GCS answers with a token and reports `nodes` nodes.
async fn wait_for_nodes(head: &mut RayHead, nodes: usize) -> GcsClient {
    let deadline = head.started + READY_DEADLINE;
    let mut last: String;
    loop {
        head.check_alive();
        let attempt = async {
            let gcs = GcsClient::connect(&head.gcs_address, Some(head.token.clone()), CALL_TIMEOUT)
                .await?;
            let state = gcs.cluster_resource_state().await?;
            Ok::<_, GcsError>((gcs, state))
        };
        match attempt.await {
            Ok((gcs, state)) if state.node_states.len() == nodes => return gcs,
            Ok((_, state)) => last = format!("{} node(s)", state.node_states.len()),
            Err(e) if e.is_transient() => last = e.to_string(),
            Err(e) => panic!("GCS at {} failed: {e}\n{}", head.gcs_address, head.logs()),
        }
        assert!(
            Instant::now() < deadline,
            "the GCS at {} did not report {nodes} node(s) within {READY_DEADLINE:?}; last: {}\n{}",
            head.gcs_address,
            last,
            head.logs()
        );
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_gcs_answers_with_token_auth() {
    let mut head = RayHead::start();
    let gcs = wait_for_nodes(&mut head, 1).await;
    let ready_after = head.started.elapsed();
    eprintln!("GCS answered with 1 node {ready_after:.2?} after spawning `ray start`");

    let state = gcs.cluster_resource_state().await.unwrap();
    let node = &state.node_states[0];
    assert_eq!(node.node_id.len(), NODE_ID_LEN);
    assert_eq!(node_id_hex(&node.node_id).len(), 2 * NODE_ID_LEN);
    assert_eq!(node.instance_id, "test-1", "{node:#?}");
    assert_eq!(node.ray_node_type_name, "head", "{node:#?}");
    assert_eq!(node.total_resources.get("CPU"), Some(&1.0), "{node:#?}");
    // Ray rewrites a loopback --node-ip-address ("127.0.0.1", "localhost", "::1", not
    // "127.0.0.2") to the host's routable address, so only check that one is there.
    assert!(!node.node_ip_address.is_empty(), "{node:#?}");
    eprintln!(
        "node {} at {} ({:?})",
        node_id_hex(&node.node_id),
        node.node_ip_address,
        node.status()
    );
    assert!(
        matches!(node.status(), NodeStatus::Running | NodeStatus::Idle),
        "{node:#?}"
    );
    assert!(!state.cluster_session_name.is_empty());

    // Without a token, and with a wrong one: unauthenticated.
    let anonymous = GcsClient::connect(&head.gcs_address, None, CALL_TIMEOUT)
        .await
        .unwrap();
    let err = anonymous.cluster_resource_state().await.unwrap_err();
    assert!(err.is_unauthenticated(), "without a token: {err}");
    eprintln!("without a token: {err}");
    let wrong = GcsClient::connect(&head.gcs_address, Some("0".repeat(64)), CALL_TIMEOUT)
        .await
        .unwrap();
    let err = wrong.cluster_resource_state().await.unwrap_err();
    assert!(err.is_unauthenticated(), "with a wrong token: {err}");

    // A report comes back through GetClusterStatus (the messages round-trip through the GCS).
    let version = unix_ms();
    gcs.report_autoscaling_state(AutoscalingState {
        last_seen_cluster_resource_state_version: state.cluster_resource_state_version,
        autoscaler_state_version: version,
        pending_instance_requests: vec![PendingInstanceRequest {
            instance_type_name: "cpu".into(),
            ray_node_type_name: "cpu".into(),
            count: 2,
            request_ts: version / 1000,
        }],
        ..Default::default()
    })
    .await
    .unwrap();
    let status = gcs.cluster_status().await.unwrap();
    let reported = status.autoscaling_state.expect("no autoscaling state");
    assert_eq!(reported.autoscaler_state_version, version);
    assert_eq!(reported.pending_instance_requests.len(), 1);
    assert_eq!(reported.pending_instance_requests[0].count, 2);
    assert_eq!(status.cluster_resource_state.unwrap().node_states.len(), 1);

    // A resource constraint shows up in the cluster resource state.
    gcs.request_cluster_resource_constraint(ClusterResourceConstraint {
        resource_requests: vec![ResourceRequestByCount {
            request: Some(ResourceRequest {
                resources_bundle: [("CPU".to_string(), 1.0)].into(),
                ..Default::default()
            }),
            count: 3,
        }],
    })
    .await
    .unwrap();
    let state = gcs.cluster_resource_state().await.unwrap();
    let constraint = &state.cluster_resource_constraints[0].resource_requests[0];
    assert_eq!(constraint.count, 3);

    // DrainNode answers (a node id the GCS does not know).
    let reply = gcs
        .drain_node(
            &[0xee; NODE_ID_LEN],
            DrainNodeReason::Preemption,
            "gcs_live test",
            unix_ms() + 60_000,
        )
        .await
        .unwrap();
    eprintln!("drain of an unknown node: {reply:?}");

    // Worker processes: a driver runs a task and leaves a detached actor alive.
    let probe = head.run_probe();
    eprintln!(
        "worker (pid, pgid, sid): task {:?}, actor {:?}",
        probe.task, probe.actor
    );

    // Who is in which process group while the cluster is up.
    let procs = cluster_procs(head.temp_str(), head.pgid);
    assert!(
        procs.iter().any(|p| p.pid == probe.actor[0]),
        "the actor's worker (pid {}) is not among the cluster's processes",
        probe.actor[0]
    );
    let sid = read_proc(head.pgid).expect("`ray start` is gone").sid;
    let outside: Vec<&Proc> = procs
        .iter()
        .filter(|p| p.pgid != head.pgid || p.sid != sid)
        .collect();
    eprintln!(
        "{} Ray processes while up (`ray start` is pid {}, pgid {}, sid {sid}):",
        procs.len(),
        head.pgid,
        head.pgid
    );
    for p in &procs {
        eprintln!(
            "  pid {} ppid {} pgid {} sid {} {}",
            p.pid,
            p.ppid,
            p.pgid,
            p.sid,
            p.cmdline.chars().take(110).collect::<String>()
        );
    }
    eprintln!(
        "outside the group/session of `ray start`: {}",
        outside.len()
    );

    let report = head.teardown();
    eprintln!(
        "teardown took {:.2?}; needed SIGKILL: {:?}",
        report.took,
        report
            .needed_sigkill
            .iter()
            .map(|p| (p.pid, p.cmdline.chars().take(60).collect::<String>()))
            .collect::<Vec<_>>()
    );
    assert!(
        report.leftovers.is_empty(),
        "Ray processes survived the teardown of process group {}: {:#?}",
        head.pgid,
        report.leftovers
    );
    let temp_dir = head.temp_dir.clone();
    drop(head);
    assert!(!temp_dir.exists(), "{} not removed", temp_dir.display());
}
