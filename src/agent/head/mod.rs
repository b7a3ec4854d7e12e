//! The head agent: runs on the allocation's first node (where the batch script runs). It starts
//! the Ray head, serves the control protocol, fans worker agents out to the other nodes, waits
//! until every node joined, runs the driver, and tears everything down.
//!
//! The run is a sequence of named steps, each in its own module with its own error type:
//! metrics endpoint, control service and fan-out of the worker agents (`bringup`), the Ray head
//! (`ray_head`), waiting for every node (`wait`), the driver and the loop while the cluster
//! runs (`drive`), and `teardown`. `record` keeps the cluster record and the metrics in step.
//! Every step's failure becomes the user's message in one place: `From<E> for Stop` below.

mod bringup;
mod drive;
mod ray_head;
mod record;
mod teardown;
mod wait;

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};

use super::signals::Signals;
use crate::config::Config;
use crate::discovery::{self, DiscoveryOptions};
use crate::ray::ports::PortPicker;
use crate::registry::{self, ClusterDir, ClusterRecord, ClusterState};
use crate::scheduler::{Allocation, Scheduler};
use bringup::{Bringup, ControlError, FanOutError, MetricsError};
use drive::{Drive, DriveError, DriverError};
use ray_head::HeadStartError;
use teardown::Running;
use wait::WaitError;

pub struct HeadOptions {
    pub config: Config,
    pub config_path: Option<PathBuf>,
    pub scheduler: Arc<dyn Scheduler>,
    /// The driver command; empty keeps the cluster up until it is stopped.
    pub driver: Vec<OsString>,
}

/// Outcome of waiting on something while the cluster runs.
enum Stop {
    Signal(i32),
    Failed(String),
}

/// How a step failed. Each step has its own error type; this is the list of them all.
#[derive(Debug, thiserror::Error)]
enum StepError {
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error(transparent)]
    FanOut(#[from] FanOutError),
    #[error(transparent)]
    HeadStart(#[from] HeadStartError),
    #[error(transparent)]
    Wait(#[from] WaitError),
    #[error(transparent)]
    Driver(#[from] DriverError),
    #[error(transparent)]
    Drive(#[from] DriveError),
}

/// The one place a step's failure becomes the message the user sees: all of it in the log,
/// its first line in the cluster record.
impl<E> From<E> for Stop
where
    StepError: From<E>,
{
    fn from(e: E) -> Self {
        Stop::Failed(StepError::from(e).to_string())
    }
}

/// How the cluster ended: what the record says, and the process's exit code.
struct Outcome {
    state: ClusterState,
    message: Option<String>,
    code: i32,
}

impl Outcome {
    fn of(result: Result<i32, Stop>) -> Self {
        match result {
            Ok(code) => Outcome {
                state: ClusterState::Ended,
                message: None,
                code,
            },
            Err(Stop::Signal(sig)) => Outcome {
                state: ClusterState::Ended,
                message: Some(format!("stopped by signal {sig}")),
                code: 128 + sig,
            },
            Err(Stop::Failed(msg)) => Outcome {
                state: ClusterState::Failed,
                message: Some(first_line(&msg)),
                code: 1,
            },
        }
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_string()
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

    /// Records how the cluster ended.
    fn finish(&mut self, outcome: &Outcome) {
        self.record.state = outcome.state;
        self.record.message = outcome.message.clone();
        self.save();
        tracing::info!(
            "cluster {} {}; exit code {}",
            self.record.name,
            if outcome.state == ClusterState::Failed {
                "failed"
            } else {
                "ended"
            },
            outcome.code
        );
    }
}

/// Runs a whole cluster; returns the process exit code (the driver's, when there is one).
pub async fn run(opts: HeadOptions) -> anyhow::Result<i32> {
    let started = Instant::now();
    // Ray opens a file per connection and object; it inherits this limit.
    let (before, after) = super::supervisor::raise_nofile_limit();
    if after > before {
        tracing::debug!("open-files soft limit raised from {before} to {after}");
    }
    let HeadOptions {
        config,
        config_path,
        scheduler,
        driver,
    } = opts;
    let alloc = scheduler.allocation()?;
    // Everything that can fail without side effects comes first.
    let found = preflight(&config, scheduler.as_ref(), &alloc).await?;
    let (mut head, auth) = Head::open(config, alloc, &found.resources)?;

    let mut signals = Signals::new()?;
    let result = run_cluster(
        &mut head,
        &mut signals,
        Bringup {
            ray_bin: found.ray_bin,
            resources: found.resources,
            host_addresses: found.host_addresses,
            secret: auth.secret,
            token_path: auth.token_path,
            cluster_id: hex::encode(rand::random::<[u8; 3]>()),
            self_exe: found.self_exe,
            config_path,
            scheduler: &scheduler,
            driver,
            started,
        },
    )
    .await;
    let outcome = Outcome::of(result);
    head.finish(&outcome);
    Ok(outcome.code)
}

/// What the head finds out, about this node and this program, before it changes anything.
struct Preflight {
    ray_bin: PathBuf,
    host_addresses: std::collections::BTreeMap<String, std::net::IpAddr>,
    resources: discovery::NodeResources,
    self_exe: PathBuf,
}

async fn preflight(
    config: &Config,
    scheduler: &dyn Scheduler,
    alloc: &Allocation,
) -> anyhow::Result<Preflight> {
    if alloc.this_node != alloc.head().name {
        return Err(anyhow!(
            "`ray-hpc run` must run on the allocation's first node ({}), not on {}; run it from the batch script, not inside a job step",
            alloc.head().name,
            alloc.this_node
        ));
    }
    let ray_bin = crate::ray::find_ray(
        config.ray.bin.as_deref(),
        std::env::var("VIRTUAL_ENV").ok().as_deref(),
        std::env::var("PATH").ok().as_deref(),
    )?;
    let grant = scheduler.node_grant(alloc)?;
    let host_addresses = scheduler.host_addresses(alloc).await?;
    let resources = discovery::discover(
        &grant,
        &DiscoveryOptions {
            interface: config.network.interface.clone(),
            scheduler_address: host_addresses.get(&alloc.this_node).copied(),
        },
    )?;
    let self_exe = std::env::current_exe().context("cannot find the ray-hpc executable")?;
    Ok(Preflight {
        ray_bin,
        host_addresses,
        resources,
        self_exe,
    })
}

async fn run_cluster(head: &mut Head, signals: &mut Signals, b: Bringup<'_>) -> Result<i32, Stop> {
    let mut running = Running::default();
    let result = bring_up_and_drive(head, signals, b, &mut running).await;
    if let Err(Stop::Failed(msg)) = &result {
        tracing::error!("{msg}");
    }
    teardown::teardown(head, &mut running).await;
    result
}

/// The steps in order; whatever each one starts goes into `running`, for the teardown.
async fn bring_up_and_drive(
    head: &mut Head,
    signals: &mut Signals,
    b: Bringup<'_>,
    running: &mut Running,
) -> Result<i32, Stop> {
    let range = head.config.ray.port_range;
    let mut picker = PortPicker::new(range.lo, range.hi);
    let metrics = bringup::serve_metrics(head, &b, &mut picker, running).await?;
    // The control service (also for clusters of one node: autoscaled workers join through
    // it) and the worker agents of the allocation's other nodes come before the Ray head: the
    // agents start and register while it starts, and get their plan the moment its GCS
    // answers, so their raylets come up alongside the head's.
    let mut control = bringup::serve_control(head, &b, &mut picker, running).await?;
    running.fan_out = bringup::fan_out_agents(head, &b)?;

    let deadline = b.started + Duration::from_secs(head.config.ready_timeout_s);
    let head_node = until_signal(
        signals,
        ray_head::start(head, &b, deadline, control.plan_base),
    )
    .await?;
    let gcs_address = ray_head::record(head, &head_node, b.started);
    running.head_node = Some(head_node);

    let gcs = until_signal(
        signals,
        wait::all_nodes(
            head,
            &b,
            &gcs_address,
            deadline,
            &mut control.events,
            running,
        ),
    )
    .await?;
    record::mark_ready(head, &metrics, b.started, &gcs_address);

    let driver = drive::start_driver(&b, &gcs_address)?;
    let observations = drive::observe_cluster(head, gcs.clone(), running);
    let autoscaler = drive::start_autoscaler(head, &b, &metrics, &gcs, &observations);
    let autoscaler_status = autoscaler.as_ref().map(|a| a.status.clone());
    running.autoscaler = autoscaler;
    Drive {
        head,
        running,
        signals,
        events: control.events,
        metrics,
        driver,
        observations,
        autoscaler_status,
    }
    .run()
    .await
}

/// Runs a step unless a signal comes first; the step's future is dropped then, which stops
/// whatever it had started.
async fn until_signal<T, E>(
    signals: &mut Signals,
    step: impl Future<Output = Result<T, E>>,
) -> Result<T, Stop>
where
    Stop: From<E>,
{
    tokio::select! {
        r = step => Ok(r?),
        sig = signals.recv() => Err(Stop::Signal(sig)),
    }
}
