//! How fast the head agent takes in a large allocation: the real control service
//! (`ray_hpc::agent::control`, with its bearer check) served over TCP on 127.0.0.1, set up as
//! for an allocation of `--nodes` workers, and that many simulated worker agents registering at
//! once over the real protocol, each on its own connection as a real worker agent is.
//!
//! Per run (a fresh service each time) it measures, from the first connect to:
//! - `plans_s`: the last StartPlan received (the figure with a target: at most 1 s for 1,000);
//! - `attend_s`: every worker also through what a real worker does next, `Report(STARTING)`
//!   and an open `Attend` stream with its first keepalive.
//!
//!   cargo bench --profile release --bench registrations -- [--runs 5] [--nodes 1000] [--json FILE]
//!
//! (cargo appends `--bench`, which is ignored.)

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use ray_hpc::agent::control::{self, ControlService, PlanBase, WorkerEvent};
use ray_hpc::proto::control::{
    AttendRequest, NodeReport, RegisterRequest, Resources, node_report::State as ReportState,
};
use ray_hpc::ray::ports::{PortPicker, bind_listener};
use tokio::sync::{mpsc, watch};

const SECRET: &str = "bench-secret-0123456789abcdef";

struct Args {
    runs: usize,
    nodes: u32,
    json: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        runs: 5,
        nodes: 1000,
        json: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().unwrap_or_else(|| panic!("{name} needs a value"));
        match arg.as_str() {
            "--runs" => a.runs = value("--runs").parse().expect("--runs N"),
            "--nodes" => a.nodes = value("--nodes").parse().expect("--nodes N"),
            "--json" => a.json = Some(value("--json")),
            "--bench" => {} // added by cargo
            other => panic!("unknown argument {other} (see the top of bench/registrations.rs)"),
        }
    }
    assert!(
        a.runs > 0 && a.nodes > 0,
        "--runs and --nodes must be positive"
    );
    a
}

/// Worker `rank`'s node name and the address the scheduler knows it by.
fn node(rank: u32) -> (String, IpAddr) {
    let name = format!("n{rank:04}");
    let ip = IpAddr::V4(Ipv4Addr::new(10, 1, (rank >> 8) as u8, rank as u8));
    (name, ip)
}

/// What a worker agent of the allocation sends: its node, its resources, no address of its
/// own (the head takes the scheduler's), no node type (not an autoscaled job).
fn request(rank: u32) -> RegisterRequest {
    let (name, _) = node(rank);
    RegisterRequest {
        node_key: format!("4242.{rank}"),
        job_id: "4242".into(),
        rank,
        node_name: name.clone(),
        hostname: name,
        node_address: String::new(),
        resources: Some(Resources {
            cpus: 64,
            memory_bytes: 256 << 30,
            shm_bytes: 128 << 30,
            ..Default::default()
        }),
        node_type: String::new(),
    }
}

struct Run {
    plans_s: f64,
    attend_s: f64,
    events: usize,
    /// Workers whose first attempt failed and that registered on a retry.
    retried: u32,
}

/// One run: a fresh control service, `n` workers at once.
async fn run_once(n: u32) -> Run {
    // The service as the head agent builds it once its own Ray is up (plan base set).
    let (events_tx, mut events_rx) = mpsc::unbounded_channel();
    let (_base_tx, base_rx) = watch::channel(Some(PlanBase {
        cluster_name: "bench".into(),
        cluster_id: "b3nch0".into(),
        gcs_address: "10.1.0.0:6379".into(),
        ray_auth_token: Some("ray-token".into()),
        temp_root: "/tmp".into(),
        object_store_fraction: 0.3,
        host_addresses: (1..=n).map(node).collect::<BTreeMap<_, _>>(),
        env: BTreeMap::new(),
        ready_deadline: Instant::now() + Duration::from_secs(120),
    }));
    let (shutdown_tx, shutdown_rx) = watch::channel(None);
    let service = ControlService::new(
        base_rx,
        shutdown_rx,
        events_tx,
        Duration::from_secs(120),
        n + 1,
    );
    // Bound as the head binds its control port (src/ray/ports.rs), backlog included.
    let listener = bind_listener(
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        &mut PortPicker::new(20000, 30000),
        "control port",
    )
    .await
    .expect("binding the control port");
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(control::server(service, SECRET))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    // The head agent's side of the events: taken in as they come (counted here).
    let consumer = tokio::spawn(async move {
        let mut registered = 0usize;
        while let Some(ev) = events_rx.recv().await {
            if matches!(ev, WorkerEvent::Registered(_)) {
                registered += 1;
            }
        }
        registered
    });

    let start = Instant::now();
    let (plan_tx, mut plan_rx) = mpsc::unbounded_channel::<Instant>();
    let workers: Vec<_> = (1..=n)
        .map(|rank| {
            let url = url.clone();
            let plan_tx = plan_tx.clone();
            tokio::spawn(async move {
                // As the worker agent does it (src/agent/worker.rs): connect and register,
                // again 300 ms after a failure (a refused or reset connection)...
                let mut retries = 0u32;
                let (mut client, plan) = loop {
                    let attempt = async {
                        let mut client =
                            control::connect(&url, SECRET, Duration::from_secs(5)).await?;
                        let plan = client.register(request(rank)).await?.into_inner();
                        anyhow::Ok((client, plan))
                    };
                    match attempt.await {
                        Ok(ok) => break ok,
                        Err(_) if retries < 100 => retries += 1,
                        Err(e) => panic!("worker {rank} could not register: {e:#}"),
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                };
                assert_eq!(plan.instance_id, format!("4242.{rank}"));
                assert_eq!(plan.node_address, node(rank).1.to_string());
                let _ = plan_tx.send(Instant::now());
                // ...then report STARTING and open the Attend stream the head keeps alive.
                client
                    .report(NodeReport {
                        node_key: format!("4242.{rank}"),
                        state: ReportState::Starting as i32,
                        ..Default::default()
                    })
                    .await
                    .expect("report");
                let mut stream = client
                    .attend(AttendRequest {
                        node_key: format!("4242.{rank}"),
                    })
                    .await
                    .expect("attend")
                    .into_inner();
                let first = stream.message().await.expect("attend stream");
                assert!(first.is_some(), "the attend stream ended at once");
                (Instant::now(), client, stream, retries)
            })
        })
        .collect();
    drop(plan_tx);
    let mut last_plan = start;
    let mut plans = 0;
    while let Some(t) = plan_rx.recv().await {
        last_plan = last_plan.max(t);
        plans += 1;
    }
    let mut last_attend = start;
    let mut held = Vec::with_capacity(workers.len());
    let mut retried = 0;
    for w in workers {
        let (t, client, stream, r) = match w.await {
            Ok(ok) => ok,
            Err(e) => {
                if server.is_finished() {
                    panic!("the control service stopped: {:?}", server.await);
                }
                panic!("a simulated worker failed: {e}");
            }
        };
        last_attend = last_attend.max(t);
        retried += u32::from(r > 0);
        held.push((client, stream));
    }
    assert_eq!(plans, n as usize, "not every worker got its plan");
    // Tear down: the head says shut down, the workers go, the service stops.
    shutdown_tx.send_replace(Some("bench over".into()));
    drop(held);
    if server.is_finished() {
        panic!("the control service stopped: {:?}", server.await);
    }
    server.abort();
    let _ = server.await;
    let events = consumer.await.unwrap();
    Run {
        plans_s: (last_plan - start).as_secs_f64(),
        attend_s: (last_attend - start).as_secs_f64(),
        events,
        retried,
    }
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

fn summary(xs: &[f64]) -> serde_json::Value {
    serde_json::json!({
        "median": median(xs),
        "min": xs.iter().cloned().fold(f64::INFINITY, f64::min),
        "max": xs.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
        "n": xs.len(),
    })
}

/// Each worker holds one TCP connection, and the service the other end: raise the open-files
/// limit to its hard maximum, as a head agent of a large allocation needs too.
fn raise_nofile(needed: u64) {
    let (soft, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    if soft < needed {
        let _ =
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard);
    }
    let (soft, _) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    assert!(
        soft >= needed,
        "the open-files limit is {soft}; {needed} are needed for this many simulated workers"
    );
}

fn main() {
    // `cargo test --all-targets` runs bench targets too, without cargo bench's `--bench`.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("registrations: a benchmark, not a test: run it with bench/run");
        return;
    }
    let a = args();
    raise_nofile(2 * u64::from(a.nodes) + 256);
    // The same runtime as the agents' (src/cli/mod.rs): multi-threaded, 2 workers. Clients
    // and service share it, and this machine's 2 cores.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut plans = vec![];
    let mut attends = vec![];
    let mut retried = vec![];
    for i in 0..a.runs {
        let r = rt.block_on(run_once(a.nodes));
        assert_eq!(
            r.events, a.nodes as usize,
            "the head saw every registration"
        );
        eprintln!(
            "run {}: {} registrations, last plan after {:.3} s, every Attend stream open after {:.3} s; {} worker(s) registered on a retry",
            i + 1,
            a.nodes,
            r.plans_s,
            r.attend_s,
            r.retried
        );
        retried.push(r.retried);
        plans.push(r.plans_s);
        attends.push(r.attend_s);
    }
    let result = serde_json::json!({
        "nodes": a.nodes,
        "runs": a.runs,
        "plans_s": plans,
        "attend_s": attends,
        "retried": retried,
        "plans": summary(&plans),
        "attend": summary(&attends),
    });
    println!(
        "{} registrations: last plan after {:.3} s median ({:.3}–{:.3}) over {} runs",
        a.nodes,
        result["plans"]["median"].as_f64().unwrap(),
        result["plans"]["min"].as_f64().unwrap(),
        result["plans"]["max"].as_f64().unwrap(),
        a.runs
    );
    if let Some(path) = a.json {
        std::fs::write(&path, serde_json::to_string_pretty(&result).unwrap() + "\n")
            .unwrap_or_else(|e| panic!("writing {path}: {e}"));
    }
}
