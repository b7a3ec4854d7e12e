//! The first steps of the bring-up: our metrics endpoint, the control service, and the fan-out
//! of the worker agents to the allocation's other nodes.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use super::Head;
use super::teardown::Running;
use crate::agent::control::{self, ControlService, PlanBase, WorkerEvent};
use crate::agent::supervisor::Supervised;
use crate::discovery::NodeResources;
use crate::metrics::Metrics;
use crate::ray::ports::{PortPicker, bind_listener};
use crate::scheduler::{Scheduler, SchedulerError};

/// What the bring-up needs beyond the head's own state, found before anything started.
pub(super) struct Bringup<'a> {
    pub ray_bin: PathBuf,
    pub resources: NodeResources,
    pub host_addresses: BTreeMap<String, IpAddr>,
    pub secret: String,
    /// The token file Ray reads; None when auth is off.
    pub token_path: Option<PathBuf>,
    pub cluster_id: String,
    pub self_exe: PathBuf,
    pub config_path: Option<PathBuf>,
    pub scheduler: &'a Arc<dyn Scheduler>,
    pub driver: Vec<OsString>,
    pub started: Instant,
}

impl Bringup<'_> {
    /// The head's address: every server of ours and Ray's listens there.
    pub fn node_ip(&self) -> IpAddr {
        self.resources.address
    }

    /// The token Ray's clients present; None when auth is off.
    pub fn ray_token(&self) -> Option<String> {
        self.token_path.as_ref().map(|_| self.secret.clone())
    }
}

#[derive(Debug, thiserror::Error)]
pub(super) enum MetricsError {
    #[error("cannot bind the metrics endpoint: {0}")]
    Bind(std::io::Error),
    #[error("{0}")]
    Address(std::io::Error),
}

#[derive(Debug, thiserror::Error)]
pub(super) enum ControlError {
    #[error("cannot bind the control service: {0}")]
    Bind(std::io::Error),
    #[error("{0}")]
    Address(std::io::Error),
}

#[derive(Debug, thiserror::Error)]
pub(super) enum FanOutError {
    #[error(transparent)]
    Command(#[from] SchedulerError),
    #[error("cannot start the worker agents ({scheduler}): {source}")]
    Spawn {
        scheduler: String,
        source: std::io::Error,
    },
}

/// Our Prometheus endpoint, on the head's address next to Ray's own.
pub(super) async fn serve_metrics(
    head: &mut Head,
    b: &Bringup<'_>,
    picker: &mut PortPicker,
    running: &mut Running,
) -> Result<Metrics, MetricsError> {
    let metrics = Metrics::new(&head.record.name);
    metrics.set_expected_nodes(head.alloc.hosts.len() as u64);
    // This agent runs inside the cluster's one job (the autoscaler's jobs come later).
    metrics.set_scheduler_jobs(&[("running", 1)]);
    let listener = bind_listener(b.node_ip(), picker, "metrics port")
        .await
        .map_err(MetricsError::Bind)?;
    let address = listener.local_addr().map_err(MetricsError::Address)?;
    let served = metrics.clone();
    running.metrics_server = Some(tokio::spawn(async move {
        if let Err(e) = crate::metrics::serve(served, listener).await {
            tracing::error!("metrics endpoint failed: {e}");
        }
    }));
    head.record.metrics_address = Some(address.to_string());
    head.write_targets();
    Ok(metrics)
}

/// The head's ends of the control service.
pub(super) struct Control {
    /// What the service hears from the agents.
    pub events: mpsc::UnboundedReceiver<WorkerEvent>,
    /// Set once the GCS answers: agents waiting in `register` get their plan then. Dropping
    /// it unset (the head failed) unblocks them.
    pub plan_base: watch::Sender<Option<PlanBase>>,
}

/// Our gRPC control service, where the worker agents register and report.
pub(super) async fn serve_control(
    head: &mut Head,
    b: &Bringup<'_>,
    picker: &mut PortPicker,
    running: &mut Running,
) -> Result<Control, ControlError> {
    let (events_tx, events) = mpsc::unbounded_channel();
    let (plan_base, base_rx) = watch::channel(None);
    let (shutdown_tx, shutdown_rx) = watch::channel(None);
    running.shutdown = Some(shutdown_tx);
    let service = ControlService::new(
        base_rx,
        shutdown_rx,
        events_tx,
        Duration::from_secs(head.config.ready_timeout_s),
        head.alloc.hosts.len() as u32,
    );
    let listener = bind_listener(b.node_ip(), picker, "control port")
        .await
        .map_err(ControlError::Bind)?;
    let address = listener.local_addr().map_err(ControlError::Address)?;
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
    head.record.control_address = Some(address.to_string());
    head.save();
    Ok(Control { events, plan_base })
}

/// Starts a worker agent on every other node of the allocation, through the scheduler's
/// fan-out command; None for a cluster of one node.
pub(super) fn fan_out_agents(
    head: &Head,
    b: &Bringup<'_>,
) -> Result<Option<Supervised>, FanOutError> {
    if head.alloc.hosts.len() <= 1 {
        return Ok(None);
    }
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
        .fan_out(&head.alloc, &argv)?
        .expect("several hosts always fan out");
    cmd.env(control::SECRET_ENV, &b.secret);
    let log = head.dir.path.join("agents.log");
    let _ = std::fs::remove_file(&log);
    let agents =
        Supervised::spawn(cmd, &log, "worker agents").map_err(|source| FanOutError::Spawn {
            scheduler: b.scheduler.name().to_string(),
            source,
        })?;
    Ok(Some(agents))
}
