//! The cluster is up: the driver starts (when there is one), and the head keeps the record,
//! the metrics and the autoscaler going until the driver exits, a signal comes, or the Ray
//! head dies. Whatever waits on the outside world (the GCS, the scheduler) runs in a task of
//! its own and reports here through a channel, so the loop answers signals at once.

use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch};

use super::bringup::Bringup;
use super::record::Absorbed;
use super::teardown::Running;
use super::{Head, Stop};
use crate::agent::control::{self, WorkerEvent};
use crate::agent::node::RunningNode;
use crate::agent::signals::Signals;
use crate::agent::supervisor::ray_failure_logs;
use crate::autoscaler::controller::{self, ControllerHandle, Observations};
use crate::autoscaler::observe_gcs;
use crate::autoscaler::reconciler::{AutoscalerStatus, JoinCommand, Reconciler};
use crate::metrics::Metrics;
use crate::ray::gcs::{self, GcsClient};
use crate::ray::launch::auth_env;
use crate::scheduler;

#[derive(Debug, thiserror::Error)]
#[error("cannot run the driver `{program}`: {source}")]
pub(super) struct DriverError {
    program: String,
    source: std::io::Error,
}

#[derive(Debug, thiserror::Error)]
pub(super) enum DriveError {
    #[error("waiting for the driver: {0}")]
    DriverWait(std::io::Error),
    #[error("the Ray head exited ({status}) while the cluster was running\n{logs}")]
    RayHeadExited { status: ExitStatus, logs: String },
}

/// Starts the driver against this cluster; None when there is no driver command.
pub(super) fn start_driver(
    b: &Bringup<'_>,
    gcs_address: &str,
) -> Result<Option<Child>, DriverError> {
    let Some((program, args)) = b.driver.split_first() else {
        tracing::info!("no driver command: the cluster stays up until this job is stopped");
        return Ok(None);
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env("RAY_ADDRESS", gcs_address)
        .env_remove(control::SECRET_ENV)
        .env_remove("RAY_AUTH_TOKEN")
        .envs(auth_env(b.token_path.as_deref()));
    let child = cmd.spawn().map_err(|source| DriverError {
        program: program.to_string_lossy().into_owned(),
        source,
    })?;
    // Not in a session of its own, yet it outlives a killed head: its watchdog ends it.
    if let Some(pid) = child.id() {
        crate::agent::watchdog::watch_pid(pid);
    }
    Ok(Some(child))
}

/// Observes the cluster's GCS in a task of its own: every autoscaler poll when the autoscaler
/// is on (it runs a round on each observation), else every 5 s.
pub(super) fn observe_cluster(
    head: &Head,
    client: GcsClient,
    running: &mut Running,
) -> Observations {
    let cfg = &head.config;
    let period = if cfg.autoscaler.enabled {
        cfg.autoscaler.poll_interval()
    } else {
        Duration::from_secs(5)
    };
    let (observations, observer) = gcs::observe_every(client, period);
    running.observer = Some(observer);
    observations
}

/// The autoscaler, in a task of its own, when the configuration turns it on.
pub(super) fn start_autoscaler(
    head: &Head,
    b: &Bringup<'_>,
    metrics: &Metrics,
    client: &GcsClient,
    observations: &Observations,
) -> Option<ControllerHandle> {
    let cfg = &head.config;
    if !cfg.autoscaler.enabled {
        return None;
    }
    let reconciler = Reconciler::new(
        b.scheduler.clone(),
        JoinCommand {
            exe: b.self_exe.clone(),
            config_path: b.config_path.clone(),
            cluster: head.record.name.clone(),
            output_dir: head.dir.path.clone(),
            env: scheduler::job_env(),
            head_job_id: head.record.job_id.clone(),
        },
        &cfg.autoscaler,
        &cfg.node_types,
        metrics.clone(),
    );
    let types: Vec<&str> = cfg.node_types.iter().map(|t| t.name.as_str()).collect();
    metrics.declare_node_types(&types);
    tracing::info!("autoscaler on: node types {}", types.join(", "));
    Some(controller::spawn(
        reconciler,
        Arc::new(client.clone()),
        observations.clone(),
    ))
}

/// The running cluster: what the head waits on and keeps up to date until it stops.
pub(super) struct Drive<'a> {
    pub head: &'a mut Head,
    pub running: &'a mut Running,
    pub signals: &'a mut Signals,
    /// What the control service hears from the agents (autoscaled workers join through it).
    pub events: mpsc::UnboundedReceiver<WorkerEvent>,
    pub metrics: Metrics,
    pub driver: Option<Child>,
    /// The cluster as the GCS observer last saw it.
    pub observations: Observations,
    /// What the autoscaler task shows, when it runs.
    pub autoscaler_status: Option<watch::Receiver<AutoscalerStatus>>,
}

impl Drive<'_> {
    /// Runs until the driver exits (its exit code), a signal comes, or the Ray head dies.
    /// One arm per event source; each arm's handler either returns how the run ended or goes
    /// back to waiting.
    pub async fn run(mut self) -> Result<i32, Stop> {
        loop {
            tokio::select! {
                status = driver_exit(&mut self.driver) => return self.driver_exited(status),
                sig = self.signals.recv() => {
                    self.stop_driver(sig).await;
                    return Err(Stop::Signal(sig));
                }
                status = ray_head_exit(&mut self.running.head_node) => {
                    return Err(self.ray_head_exited(status).await.into());
                }
                Ok(()) = self.observations.changed() => self.observed(),
                Some(status) = autoscaler_changed(&mut self.autoscaler_status) => {
                    self.autoscaler_said(status);
                }
                Some(ev) = self.events.recv() => self.worker_event(ev),
            }
        }
    }

    fn driver_exited(&self, status: std::io::Result<ExitStatus>) -> Result<i32, Stop> {
        let code = exit_code(status.map_err(DriveError::DriverWait)?);
        tracing::info!("driver exited with code {code}");
        Ok(code)
    }

    async fn ray_head_exited(&mut self, status: ExitStatus) -> DriveError {
        self.stop_driver(libc::SIGTERM).await;
        let logs = self
            .running
            .head_node
            .as_ref()
            .map(|h| ray_failure_logs(h.process.log_path(), &h.spec.temp_dir, 30))
            .unwrap_or_default();
        DriveError::RayHeadExited { status, logs }
    }

    /// A new observation of the GCS: the record and the metrics follow it.
    fn observed(&mut self) {
        let Some(state) = self.observations.borrow_and_update().clone() else {
            return;
        };
        let (nodes, demands) = observe_gcs(&state);
        self.head.observe(&self.metrics, &nodes, &demands);
    }

    /// The autoscaler's jobs, notes and scheduler outage go into the record.
    fn autoscaler_said(&mut self, status: AutoscalerStatus) {
        let record = &mut self.head.record;
        record.worker_jobs = status.worker_jobs;
        record.autoscaler_notes = status.notes;
        record.scheduler_outage = status.outage;
        self.head.save();
    }

    fn worker_event(&mut self, ev: WorkerEvent) {
        match self.head.absorb(ev) {
            Absorbed::Failed { node_key, report } => {
                tracing::warn!("node {node_key} failed: {report}");
            }
            absorbed if absorbed.changed_record() => {
                self.head.save();
                self.head.write_targets();
            }
            _ => {}
        }
    }

    async fn stop_driver(&mut self, sig: i32) {
        if let Some(d) = self.driver.as_mut() {
            stop_driver(d, sig, self.head.grace).await;
        }
    }
}

/// The autoscaler's next status; None when it is off or has stopped.
async fn autoscaler_changed(
    status: &mut Option<watch::Receiver<AutoscalerStatus>>,
) -> Option<AutoscalerStatus> {
    let rx = status.as_mut()?;
    rx.changed().await.ok()?;
    Some(rx.borrow_and_update().clone())
}

/// The driver's exit; never, when there is no driver.
async fn driver_exit(driver: &mut Option<Child>) -> std::io::Result<ExitStatus> {
    match driver {
        Some(d) => d.wait().await,
        None => std::future::pending().await,
    }
}

/// The Ray head's exit; never, when it is not running.
async fn ray_head_exit(head_node: &mut Option<RunningNode>) -> ExitStatus {
    match head_node {
        Some(h) => h.process.wait().await,
        None => std::future::pending().await,
    }
}

fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}

/// Passes the signal to the driver, then SIGKILL if it has not exited after the grace period.
async fn stop_driver(driver: &mut Child, sig: i32, grace: Duration) {
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
