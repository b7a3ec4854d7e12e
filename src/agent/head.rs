//! The head agent: runs on the allocation's first node (where the batch script runs). It starts
//! the Ray head, serves the control protocol, fans worker agents out to the other nodes, waits
//! until every node joined, runs the driver, and tears everything down.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use tokio::sync::{mpsc, watch};

use super::control::{self, ControlService, PlanBase, WorkerEvent};
use super::node::{self, RunningNode, StartOptions};
use super::signals::Signals;
use super::supervisor::{Supervised, tail_file};
use crate::autoscaler::reconciler::{JoinCommand, Reconciler};
use crate::autoscaler::{Demand, NodeStatus, ObservedNode, observe_gcs};
use crate::config::{AuthMode, Config};
use crate::discovery::{self, DiscoveryOptions, NodeResources};
use crate::metrics::Metrics;
use crate::proto::control::node_report::State as ReportState;
use crate::ray::gcs::GcsClient;
use crate::ray::launch::{RayNodeSpec, Role, auth_env};
use crate::ray::ports::{PortPicker, bind_listener};
use crate::registry::{self, ClusterDir, ClusterRecord, ClusterState, NodeRecord};
use crate::scheduler;
use crate::scheduler::{Allocation, Scheduler};

pub struct HeadOptions {
    pub config: Config,
    pub config_path: Option<PathBuf>,
    pub scheduler: Box<dyn Scheduler>,
    /// The driver command; empty keeps the cluster up until it is stopped.
    pub driver: Vec<OsString>,
}

/// Outcome of waiting on something while the cluster runs.
enum Stop {
    Signal(i32),
    Failed(String),
}

struct Head {
    config: Config,
    alloc: Allocation,
    dir: ClusterDir,
    record: ClusterRecord,
    grace: Duration,
}

impl Head {
    fn save(&mut self) {
        self.record.updated_unix = registry::now_unix();
        if let Err(e) = self.dir.save(&self.record) {
            tracing::warn!("could not update the cluster record: {e}");
        }
    }
}

/// Runs a whole cluster; returns the process exit code (the driver's, when there is one).
pub async fn run(opts: HeadOptions) -> anyhow::Result<i32> {
    let started = Instant::now();
    let config = opts.config;
    // Ray opens a file per connection and object; it inherits this limit.
    let (before, after) = super::supervisor::raise_nofile_limit();
    if after > before {
        tracing::debug!("open-files soft limit raised from {before} to {after}");
    }
    let scheduler = opts.scheduler;
    let alloc = scheduler.allocation()?;
    if alloc.this_node != alloc.head().name {
        return Err(anyhow!(
            "`ray-hpc run` must run on the allocation's first node ({}), not on {}; run it from the batch script, not inside srun",
            alloc.head().name,
            alloc.this_node
        ));
    }
    // Everything that can fail without side effects comes first.
    let ray_bin = crate::ray::find_ray(
        config.ray.bin.as_deref(),
        std::env::var("VIRTUAL_ENV").ok().as_deref(),
        std::env::var("PATH").ok().as_deref(),
    )?;
    let grant = scheduler.node_grant(&alloc)?;
    let host_addresses = scheduler.host_addresses(&alloc)?;
    let resources = discovery::discover(
        &grant,
        &DiscoveryOptions {
            interface: config.network.interface.clone(),
            scheduler_address: host_addresses.get(&alloc.this_node).copied(),
        },
    )?;
    let self_exe = std::env::current_exe().context("cannot find the ray-hpc executable")?;

    let name = config.cluster.name_or_default(&alloc.job_id);
    let root = registry::root()?;
    let dir = ClusterDir::create(&root, &name)?;
    // `ray-hpc up` leaves a queued record for this job: keep what it knows.
    let submitted = dir.load().ok().filter(|r| r.state == ClusterState::Queued);
    let secret = dir.write_new_token()?;
    let token_path = dir.token_path();
    let auth_on = config.auth == AuthMode::Token;
    if !auth_on {
        tracing::warn!(
            "auth = \"none\": anyone who can reach this cluster's ports can run code as you"
        );
    }
    let cluster_id: String = hex::encode(rand::random::<[u8; 3]>());
    let now = registry::now_unix();
    let record = ClusterRecord {
        created_unix: submitted.as_ref().map_or(now, |r| r.created_unix),
        head_node: alloc.head().name.clone(),
        head_address: Some(resources.address.to_string()),
        token_path: auth_on.then(|| token_path.clone()),
        job_output: submitted.and_then(|r| r.job_output),
        ..ClusterRecord::new(
            &name,
            alloc.scheduler,
            &alloc.job_id,
            ClusterState::Starting,
            alloc.hosts.len() as u32,
            config.auth.as_str(),
        )
    };
    let mut head = Head {
        grace: Duration::from_secs(config.teardown.grace_s),
        config,
        alloc,
        dir,
        record,
    };
    head.save();
    super::watchdog::watch_record(&head.dir.path);
    tracing::info!(
        "cluster {name}: {} node(s) of {} job {}; head on {} ({})",
        head.alloc.hosts.len(),
        head.alloc.scheduler,
        head.alloc.job_id,
        head.alloc.this_node,
        resources.address
    );

    let mut signals = Signals::new()?;
    let outcome = run_cluster(
        &mut head,
        &mut signals,
        Bringup {
            ray_bin,
            resources,
            host_addresses,
            secret,
            token_path: auth_on.then_some(token_path),
            cluster_id,
            self_exe,
            config_path: opts.config_path,
            scheduler: scheduler.as_ref(),
            driver: opts.driver,
            started,
        },
    )
    .await;
    let (state, message, code) = match outcome {
        Ok(code) => (ClusterState::Ended, None, code),
        Err(Stop::Signal(sig)) => (
            ClusterState::Ended,
            Some(format!("stopped by signal {sig}")),
            128 + sig,
        ),
        Err(Stop::Failed(msg)) => (ClusterState::Failed, Some(first_line(&msg)), 1),
    };
    head.record.state = state;
    head.record.message = message;
    head.save();
    tracing::info!(
        "cluster {} {}; exit code {code}",
        head.record.name,
        if state == ClusterState::Failed {
            "failed"
        } else {
            "ended"
        }
    );
    Ok(code)
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_string()
}

struct Bringup<'a> {
    ray_bin: PathBuf,
    resources: NodeResources,
    host_addresses: BTreeMap<String, std::net::IpAddr>,
    secret: String,
    token_path: Option<PathBuf>,
    cluster_id: String,
    self_exe: PathBuf,
    config_path: Option<PathBuf>,
    scheduler: &'a dyn Scheduler,
    driver: Vec<OsString>,
    started: Instant,
}

/// Everything that must be stopped at the end, in the order it is stopped.
#[derive(Default)]
struct Running {
    shutdown: Option<watch::Sender<Option<String>>>,
    fan_out: Option<Supervised>,
    head_node: Option<RunningNode>,
    server: Option<tokio::task::JoinHandle<()>>,
    metrics_server: Option<tokio::task::JoinHandle<()>>,
}

async fn run_cluster(head: &mut Head, signals: &mut Signals, b: Bringup<'_>) -> Result<i32, Stop> {
    let mut running = Running::default();
    let result = bring_up_and_drive(head, signals, b, &mut running).await;
    if let Err(Stop::Failed(msg)) = &result {
        tracing::error!("{msg}");
    }
    teardown(head, &mut running).await;
    result
}

async fn bring_up_and_drive(
    head: &mut Head,
    signals: &mut Signals,
    b: Bringup<'_>,
    running: &mut Running,
) -> Result<i32, Stop> {
    let cfg = head.config.clone();
    let alloc = head.alloc.clone();
    let n_hosts = alloc.hosts.len();
    let mut deadline = b.started + Duration::from_secs(cfg.ready_timeout_s);
    let mut first_failure: Option<Instant> = None;
    let port_range = (cfg.ray.port_range.lo, cfg.ray.port_range.hi);
    let node_ip = b.resources.address;
    let temp_root = cfg.cluster.temp_root.display().to_string();
    let ray_token = b.token_path.as_ref().map(|_| b.secret.clone());

    // 1. Our Prometheus endpoint, on the head's address next to Ray's own.
    let mut picker = PortPicker::new(port_range.0, port_range.1);
    let metrics = Metrics::new(&head.record.name);
    metrics.set_expected_nodes(n_hosts as u64);
    // This agent runs inside the cluster's one job (the autoscaler's jobs come later).
    metrics.set_scheduler_jobs(&[("running", 1)]);
    let metrics_listener = bind_listener(node_ip, &mut picker, "metrics port")
        .await
        .map_err(|e| Stop::Failed(format!("cannot bind the metrics endpoint: {e}")))?;
    let metrics_addr = metrics_listener
        .local_addr()
        .map_err(|e| Stop::Failed(e.to_string()))?;
    let served = metrics.clone();
    running.metrics_server = Some(tokio::spawn(async move {
        if let Err(e) = crate::metrics::serve(served, metrics_listener).await {
            tracing::error!("metrics endpoint failed: {e}");
        }
    }));
    head.record.metrics_address = Some(metrics_addr.to_string());
    write_targets(head);

    // 2. The control service (also for clusters of one node: autoscaled workers join through
    // it) and the worker agents of the allocation's other nodes, before the Ray head: the
    // agents start and register while it starts, and get their plan the moment its GCS
    // answers (below), so their raylets come up alongside the head's.
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let (base_tx, base_rx) = watch::channel(None);
    {
        let (shutdown_tx, shutdown_rx) = watch::channel(None);
        running.shutdown = Some(shutdown_tx);
        let service = ControlService::new(
            base_rx,
            shutdown_rx,
            events_tx,
            Duration::from_secs(cfg.ready_timeout_s),
            n_hosts as u32,
        );
        let listener = bind_listener(node_ip, &mut picker, "control port")
            .await
            .map_err(|e| Stop::Failed(format!("cannot bind the control service: {e}")))?;
        let control_addr = listener
            .local_addr()
            .map_err(|e| Stop::Failed(e.to_string()))?;
        let server = control::server(service, &b.secret);
        running.server = Some(tokio::spawn(async move {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            if let Err(e) = tonic::transport::Server::builder()
                .add_service(server)
                .serve_with_incoming(incoming)
                .await
            {
                tracing::error!("control service failed: {e}");
            }
        }));
        head.record.control_address = Some(control_addr.to_string());
        head.save();
    }
    if n_hosts > 1 {
        let control_addr = head.record.control_address.clone().unwrap_or_default();
        let mut argv: Vec<OsString> = vec![
            b.self_exe.clone().into(),
            "agent".into(),
            "--control".into(),
            format!("http://{control_addr}").into(),
            "--scheduler".into(),
            b.scheduler.name().into(),
        ];
        if let Some(p) = &b.config_path {
            argv.push("--config".into());
            argv.push(p.clone().into());
        }
        let mut cmd = b
            .scheduler
            .fan_out(&alloc, &argv, &cfg.slurm.srun_args)
            .map_err(|e| Stop::Failed(e.to_string()))?
            .expect("several hosts always fan out");
        cmd.env(control::SECRET_ENV, &b.secret);
        let log = head.dir.path.join("agents.log");
        let _ = std::fs::remove_file(&log);
        let fan_out = Supervised::spawn(cmd, &log, "worker agents").map_err(|e| {
            Stop::Failed(format!(
                "cannot start the worker agents ({}): {e}",
                b.scheduler.name()
            ))
        })?;
        running.fan_out = Some(fan_out);
    }

    // 3. The Ray head, on this node. The plan goes out to the worker agents as soon as its GCS
    // answers; if the head fails, dropping `base_tx` unblocks agents waiting for a plan.
    let head_instance = control::instance_id(&alloc.job_id, 0, n_hosts);
    let head_temp = PathBuf::from(control::node_temp_dir(&temp_root, &b.cluster_id, 0));
    let num_cpus = cfg.ray.head_num_cpus.unwrap_or(b.resources.cpus);
    let memory = b.resources.memory_bytes;
    let make_spec = |ports| RayNodeSpec {
        ray_bin: b.ray_bin.clone(),
        role: Role::Head,
        node_ip,
        ports,
        temp_dir: head_temp.clone(),
        num_cpus,
        num_gpus: b.resources.gpus.len() as u32,
        memory_bytes: memory,
        object_store_bytes: control::object_store_bytes(
            memory,
            b.resources.shm_bytes,
            cfg.ray.object_store_fraction,
        ),
        instance_id: head_instance.clone(),
        node_type: "head".into(),
        auth_token_path: b.token_path.clone(),
        cuda_visible_devices: cuda_visible(&b.resources),
        extra_env: cfg.ray.env.clone(),
        no_monitor: cfg.autoscaler.enabled,
    };
    let start_opts = StartOptions {
        port_range,
        worker_ports: cfg.ray.worker_ports,
        deadline,
        grace: head.grace,
        attempts: 3,
        // Every worker waits for this answer: ask often (a refused connect or one small RPC).
        poll: Duration::from_millis(50),
    };
    let base = PlanBase {
        cluster_name: head.record.name.clone(),
        cluster_id: b.cluster_id.clone(),
        gcs_address: String::new(),
        ray_auth_token: ray_token.clone(),
        temp_root: temp_root.clone(),
        object_store_fraction: cfg.ray.object_store_fraction,
        host_addresses: b.host_addresses.clone(),
        env: cfg.ray.env.clone(),
        ready_deadline: deadline,
    };
    let started = b.started;
    let on_gcs_up: node::OnGcsUp = Box::new(move |gcs_address: &str| {
        tracing::info!(
            "GCS answering at {gcs_address} after {:.1}s",
            started.elapsed().as_secs_f64()
        );
        base_tx.send_replace(Some(PlanBase {
            gcs_address: gcs_address.to_string(),
            ..base.clone()
        }));
    });
    let started_head = tokio::select! {
        r = node::start_node(make_spec, ray_token.clone(), &start_opts, Some(on_gcs_up)) => r,
        sig = signals.recv() => return Err(Stop::Signal(sig)),
    };
    let head_node = started_head.map_err(|e| {
        Stop::Failed(format!(
            "the Ray head on {} failed to start: {e}",
            alloc.this_node
        ))
    })?;
    let ports = head_node.spec.ports;
    let gcs_address = format!("{node_ip}:{}", ports.gcs);
    running.head_node = Some(head_node);
    head.record.gcs_address = Some(gcs_address.clone());
    head.record.dashboard_url = Some(format!("http://{node_ip}:{}", ports.dashboard));
    head.record.client_server_address = Some(format!("{node_ip}:{}", ports.client_server));
    head.record.nodes.push(NodeRecord {
        rank: 0,
        node_name: alloc.this_node.clone(),
        address: node_ip.to_string(),
        instance_id: head_instance.clone(),
        cpus: num_cpus,
        gpus: b.resources.gpus.len() as u32,
        memory_bytes: memory,
        temp_dir: head_temp.display().to_string(),
        node_id: running.head_node.as_ref().map(|n| n.node_id.clone()),
        ports: ports
            .named()
            .into_iter()
            .map(|(name, port)| (name.to_string(), port))
            .collect(),
    });
    head.save();
    write_targets(head);
    tracing::info!(
        "Ray head up at {gcs_address} after {:.1}s",
        b.started.elapsed().as_secs_f64()
    );

    // 3. Wait until every node is in the GCS.
    let gcs = GcsClient::connect(&gcs_address, ray_token.clone(), Duration::from_secs(10))
        .await
        .map_err(|e| Stop::Failed(e.to_string()))?;
    let expected: BTreeMap<String, String> = alloc
        .hosts
        .iter()
        .enumerate()
        .map(|(rank, h)| {
            (
                control::instance_id(&alloc.job_id, rank as u32, n_hosts),
                h.name.clone(),
            )
        })
        .collect();
    let mut failures: BTreeMap<String, String> = BTreeMap::new();
    let mut registrations: BTreeMap<String, crate::proto::control::RegisterRequest> =
        BTreeMap::new();
    loop {
        let joined: BTreeSet<String> = match gcs.cluster_resource_state().await {
            Ok(state) => state
                .node_states
                .iter()
                .filter(|n| node::is_alive(n))
                .map(|n| n.instance_id.clone())
                .collect(),
            Err(e) => {
                tracing::debug!("GCS not answering: {e}");
                BTreeSet::new()
            }
        };
        let missing: Vec<&String> = expected.keys().filter(|k| !joined.contains(*k)).collect();
        let joined_now = (n_hosts - missing.len()) as u32;
        if joined_now != head.record.nodes_joined {
            head.record.nodes_joined = joined_now;
            head.save();
        }
        if missing.is_empty() {
            break;
        }
        let step_ended = running.fan_out.as_mut().and_then(|f| f.try_exited());
        // A node that failed ends the wait soon, but not at once: others may be reporting too.
        if !failures.is_empty() || step_ended.is_some() {
            deadline = deadline.min(
                *first_failure.get_or_insert_with(|| Instant::now() + Duration::from_millis(1500)),
            );
        }
        if let Some(h) = running.head_node.as_mut() {
            if let Some(status) = h.process.try_exited() {
                return Err(Stop::Failed(format!(
                    "the Ray head exited ({status}) during bring-up"
                )));
            }
        }
        if Instant::now() >= deadline {
            let names: Vec<String> = missing.iter().map(|k| expected[*k].clone()).collect();
            let mut msg = format!(
                "{} of {n_hosts} node(s) did not come up (ready_timeout_s = {}): {}; tearing the cluster down.",
                names.len(),
                cfg.ready_timeout_s,
                names.join(", ")
            );
            for k in &missing {
                let why = match (failures.get(*k), registrations.contains_key(*k)) {
                    (Some(report), _) => report.clone(),
                    (None, true) => "registered, but its node did not join the GCS in time".into(),
                    (None, false) => "its agent never registered with the head".into(),
                };
                msg.push_str(&format!("\n=== {} ===\n{}", expected[*k], why.trim_end()));
            }
            if let Some(f) = running.fan_out.as_ref() {
                let ended = step_ended
                    .map(|st| format!("; the {} step ended: {st}", b.scheduler.name()))
                    .unwrap_or_default();
                msg.push_str(&format!(
                    "\n=== worker agents' output ({}{ended}) ===\n{}",
                    f.log_path().display(),
                    tail_file(f.log_path(), 40)
                ));
            }
            return Err(Stop::Failed(msg));
        }
        tokio::select! {
            sig = signals.recv() => return Err(Stop::Signal(sig)),
            ev = events.recv() => if let Some(ev) = ev {
                if absorb(ev, head, &mut registrations, &mut failures) {
                    head.save();
                }
            },
            // The driver starts on the first poll that finds every node: keep the gap short.
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
    while let Ok(ev) = events.try_recv() {
        absorb(ev, head, &mut registrations, &mut failures);
    }
    head.record.nodes.sort_by_key(|n| n.rank);
    head.record.state = ClusterState::Ready;
    head.save();
    metrics.set_bringup_seconds(b.started.elapsed().as_secs_f64());
    write_targets(head);
    let cpus: u32 = head.record.nodes.iter().map(|n| n.cpus).sum();
    let gpus: u32 = head.record.nodes.iter().map(|n| n.gpus).sum();
    tracing::info!(
        "cluster {} ready: {n_hosts} node(s), {cpus} CPU(s), {gpus} GPU(s) in {:.1}s; RAY_ADDRESS={gcs_address}, dashboard {}",
        head.record.name,
        b.started.elapsed().as_secs_f64(),
        head.record.dashboard_url.as_deref().unwrap_or("-")
    );

    // 4. The driver, or wait to be stopped.
    if b.driver.is_empty() {
        tracing::info!("no driver command: the cluster stays up until this job is stopped");
    }
    let mut driver = if b.driver.is_empty() {
        None
    } else {
        let mut cmd = tokio::process::Command::new(&b.driver[0]);
        cmd.args(&b.driver[1..])
            .env("RAY_ADDRESS", &gcs_address)
            .env_remove(control::SECRET_ENV)
            .env_remove("RAY_AUTH_TOKEN")
            .envs(auth_env(b.token_path.as_deref()));
        let child = cmd.spawn().map_err(|e| {
            Stop::Failed(format!(
                "cannot run the driver `{}`: {e}",
                b.driver[0].to_string_lossy()
            ))
        })?;
        // Not in a session of its own, yet it outlives a killed head: its watchdog ends it.
        if let Some(pid) = child.id() {
            super::watchdog::watch_pid(pid);
        }
        Some(child)
    };
    // The autoscaler, when on, runs every GCS poll; the plain watch every 5 s.
    let mut autoscaler = cfg.autoscaler.enabled.then(|| {
        Reconciler::new(
            scheduler::by_name(b.scheduler.name(), scheduler::process_env())
                .expect("the head's own scheduler has an adapter"),
            JoinCommand {
                exe: b.self_exe.clone(),
                config_path: b.config_path.clone(),
                cluster: head.record.name.clone(),
                output_dir: head.dir.path.clone(),
                env: scheduler::job_env(),
                extra_directives: cfg.slurm.extra_directives.clone(),
                head_job_id: head.record.job_id.clone(),
            },
            &cfg.autoscaler,
            &cfg.node_types,
        )
    });
    if autoscaler.is_some() {
        let types: Vec<&str> = cfg.node_types.iter().map(|t| t.name.as_str()).collect();
        metrics.declare_node_types(&types);
        tracing::info!("autoscaler on: node types {}", types.join(", "));
    }
    let period = if autoscaler.is_some() {
        Duration::from_secs_f64(cfg.autoscaler.poll_interval_s)
    } else {
        Duration::from_secs(5)
    };
    let mut watch = tokio::time::interval(period);
    let result = drive(
        head,
        signals,
        &mut driver,
        running,
        &gcs,
        &metrics,
        &mut watch,
        &mut autoscaler,
        &mut events,
    )
    .await;
    if let Some(a) = autoscaler.as_mut() {
        // No orphans: every job this head submitted goes with it.
        a.cancel_all();
    }
    result
}

/// Waits for the driver (or a signal) while keeping the record, metrics and autoscaler going.
#[allow(clippy::too_many_arguments)]
async fn drive(
    head: &mut Head,
    signals: &mut Signals,
    driver: &mut Option<tokio::process::Child>,
    running: &mut Running,
    gcs: &GcsClient,
    metrics: &Metrics,
    watch: &mut tokio::time::Interval,
    autoscaler: &mut Option<Reconciler>,
    events: &mut mpsc::UnboundedReceiver<WorkerEvent>,
) -> Result<i32, Stop> {
    loop {
        let head_exit = async {
            match running.head_node.as_mut() {
                Some(h) => h.process.wait().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            status = async { driver.as_mut().unwrap().wait().await }, if driver.is_some() => {
                let code = exit_code(status.map_err(|e| Stop::Failed(format!("waiting for the driver: {e}")))?);
                tracing::info!("driver exited with code {code}");
                return Ok(code);
            }
            sig = signals.recv() => {
                if let Some(d) = driver.as_mut() {
                    stop_driver(d, sig, head.grace).await;
                }
                return Err(Stop::Signal(sig));
            }
            status = head_exit => {
                if let Some(d) = driver.as_mut() {
                    stop_driver(d, libc::SIGTERM, head.grace).await;
                }
                let logs = running.head_node.as_ref().map(|h| super::supervisor::ray_failure_logs(h.process.log_path(), &h.spec.temp_dir, 30)).unwrap_or_default();
                return Err(Stop::Failed(format!("the Ray head exited ({status}) while the cluster was running\n{logs}")));
            }
            _ = watch.tick() => {
                if let Ok(state) = gcs.cluster_resource_state().await {
                    // Read once, for the record, the metrics and the autoscaler.
                    let (nodes, demands) = observe_gcs(&state);
                    observe(head, metrics, &nodes, &demands);
                    if let Some(a) = autoscaler.as_mut() {
                        let plan = a.reconcile(gcs, &state, &nodes, &demands, metrics).await;
                        let (jobs, notes) = a.summary(&plan);
                        if jobs != head.record.worker_jobs || notes != head.record.autoscaler_notes {
                            head.record.worker_jobs = jobs;
                            head.record.autoscaler_notes = notes;
                            head.save();
                        }
                    }
                }
            }
            ev = events.recv() => match ev {
                Some(WorkerEvent::Report(r)) if r.state == ReportState::Failed as i32 => {
                    tracing::warn!("node {} failed: {}\n{}", r.node_key, r.message, r.log_tail);
                }
                Some(ev) => {
                    let mut failures = BTreeMap::new();
                    if absorb(ev, head, &mut BTreeMap::new(), &mut failures) {
                        head.save();
                        write_targets(head);
                    }
                }
                None => std::future::pending::<()>().await,
            },
        }
    }
}

/// Takes in one event from the control service, keeping the cluster record up to date;
/// true when the record changed.
fn absorb(
    ev: WorkerEvent,
    head: &mut Head,
    registrations: &mut BTreeMap<String, crate::proto::control::RegisterRequest>,
    failures: &mut BTreeMap<String, String>,
) -> bool {
    match ev {
        WorkerEvent::Registered(registered) => {
            let (req, plan) = *registered;
            let res = req.resources.clone().unwrap_or_default();
            tracing::info!(
                "agent on {} registered ({} CPU(s), {} GPU(s))",
                req.node_name,
                res.cpus,
                res.gpu_indices.len()
            );
            let known = head
                .record
                .nodes
                .iter()
                .any(|n| n.instance_id == req.node_key);
            if !known {
                head.record.nodes.push(NodeRecord {
                    rank: req.rank,
                    node_name: req.node_name.clone(),
                    address: plan.node_address.clone(),
                    instance_id: req.node_key.clone(),
                    cpus: res.cpus,
                    gpus: res.gpu_indices.len() as u32,
                    memory_bytes: res.memory_bytes,
                    temp_dir: plan.temp_dir.clone(),
                    node_id: None,
                    ports: BTreeMap::new(),
                });
            }
            registrations.insert(req.node_key.clone(), req);
            !known
        }
        WorkerEvent::Report(r) if r.state == ReportState::Failed as i32 => {
            failures.insert(r.node_key.clone(), format!("{}\n{}", r.message, r.log_tail));
            false
        }
        WorkerEvent::Report(r) if r.state == ReportState::Running as i32 => {
            let Some(node) = head
                .record
                .nodes
                .iter_mut()
                .find(|n| n.instance_id == r.node_key)
            else {
                return false;
            };
            node.node_id = Some(r.node_id);
            node.ports = r
                .ports
                .into_iter()
                .filter_map(|(name, port)| Some((name, u16::try_from(port).ok()?)))
                .collect();
            true
        }
        WorkerEvent::Report(_) => false,
    }
}

/// Keeps the record and the metrics in step with what the GCS says.
fn observe(head: &mut Head, metrics: &Metrics, nodes: &[ObservedNode], demands: &[Demand]) {
    let mut counts = BTreeMap::from([("running", 0), ("idle", 0), ("draining", 0), ("dead", 0)]);
    for n in nodes {
        let key = match n.status {
            NodeStatus::Running => "running",
            NodeStatus::Idle => "idle",
            NodeStatus::Draining => "draining",
            NodeStatus::Dead => "dead",
        };
        *counts.entry(key).or_default() += 1;
    }
    metrics.set_nodes_by_state(&counts.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>());
    metrics.set_pending_demand(&pending_demand(demands));
    let alive = (counts["running"] + counts["idle"] + counts["draining"]) as u32;
    if alive != head.record.nodes_joined {
        head.record.nodes_joined = alive;
        head.save();
    }
}

/// Total pending demand per resource: queued tasks and actors, and placement groups
/// (`request_resources` floors are not demand that waits).
fn pending_demand(demands: &[Demand]) -> Vec<(String, f64)> {
    let mut total: BTreeMap<String, f64> = BTreeMap::new();
    let mut add = |bundle: &BTreeMap<String, f64>, times: f64| {
        for (resource, amount) in bundle {
            *total.entry(resource.clone()).or_default() += amount * times;
        }
    };
    for d in demands {
        match d {
            Demand::Tasks { bundle, count } => add(bundle, *count as f64),
            Demand::Gang { bundles, .. } => bundles.iter().for_each(|b| add(b, 1.0)),
            Demand::Constraint { .. } => {}
        }
    }
    total.into_iter().collect()
}

/// The Prometheus file_sd list: our endpoint and every Ray node's metrics export port.
fn write_targets(head: &Head) {
    let Some(ours) = &head.record.metrics_address else {
        return;
    };
    let ray: Vec<String> = head
        .record
        .nodes
        .iter()
        .filter_map(|n| {
            n.ports
                .get("metrics_export")
                .map(|p| format!("{}:{p}", n.address))
        })
        .collect();
    let path = head.dir.path.join("prometheus-targets.json");
    if let Err(e) = crate::metrics::write_file_sd(&path, &head.record.name, ours, &ray) {
        tracing::warn!("could not write {}: {e}", path.display());
    }
}

fn cuda_visible(r: &NodeResources) -> Option<String> {
    (!r.gpus.is_empty()).then(|| {
        r.gpus
            .iter()
            .map(|g| g.uuid.clone())
            .collect::<Vec<_>>()
            .join(",")
    })
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}

/// Passes the signal to the driver, then SIGKILL if it has not exited after the grace period.
async fn stop_driver(driver: &mut tokio::process::Child, sig: i32, grace: Duration) {
    if let Some(pid) = driver.id() {
        let sig =
            nix::sys::signal::Signal::try_from(sig).unwrap_or(nix::sys::signal::Signal::SIGTERM);
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
    }
    if tokio::time::timeout(grace, driver.wait()).await.is_err() {
        tracing::warn!("driver still running {grace:?} after the signal: SIGKILL");
        let _ = driver.kill().await;
    }
}

/// Tells the workers to stop and stops the head's Ray at the same time: a cancelled job has
/// only the scheduler's KillWait before everything is SIGKILLed, temp dirs and all.
async fn teardown(head: &mut Head, running: &mut Running) {
    let started = Instant::now();
    let grace = head.grace;
    let shutdown = running.shutdown.take();
    if let Some(tx) = &shutdown {
        tx.send_replace(Some("the cluster is ending".into()));
    }
    let workers = async {
        if let Some(f) = running.fan_out.as_mut() {
            let wait = grace + Duration::from_secs(10);
            if tokio::time::timeout(wait, f.wait()).await.is_err() {
                tracing::warn!("worker agents did not exit within {wait:?}; stopping their step");
            }
            f.stop(grace).await;
        }
    };
    let head_node = async {
        if let Some(node) = running.head_node.as_mut() {
            node::stop_node(node, grace).await;
        }
    };
    tokio::join!(workers, head_node);
    // Dropped only now so that worker streams end with Shutdown, not a broken connection.
    drop(shutdown);
    for server in [running.server.take(), running.metrics_server.take()]
        .into_iter()
        .flatten()
    {
        server.abort();
    }
    tracing::info!("teardown took {:.1}s", started.elapsed().as_secs_f64());
}
