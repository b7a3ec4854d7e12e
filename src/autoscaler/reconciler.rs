//! One round of the autoscaler: observe (the GCS snapshot it is handed, and the scheduler in one
//! batched query at most every `scheduler_poll_interval_s`), plan (pure), act (cancel, drain,
//! submit — each idempotent against the next observation), and report to Ray so that its own
//! `ray status` shows our queued jobs, infeasible demand and failures. Scheduler commands obey
//! the error policy of [`super::reach`]. The loop around rounds is [`super::controller`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use super::jobs::JobBook;
use super::planner::{
    Demand, Drain, NodeTypeSpec, Plan, PlanInput, Settings, Submit, TypeHealth, plan,
};
use super::reach::{Backoff, SchedulerReach};
use super::report;
use crate::config::{AutoscalerConfig, NodeTypeConfig};
use crate::metrics::Metrics;
use crate::proto::ray::autoscaler::{
    AutoscalingState, ClusterResourceState, DrainNodeReason, FailedInstanceRequest,
};
use crate::ray::gcs::{GcsClient, node_id_from_hex};
use crate::registry::SchedulerOutage;
use crate::scheduler::{JobRequest, OutputPath, Scheduler, SchedulerError, shell_join};

/// What a worker job needs to know to join this cluster.
pub struct JoinCommand {
    pub exe: PathBuf,
    pub config_path: Option<PathBuf>,
    pub cluster: String,
    /// The registry dir: worker job output goes there.
    pub output_dir: PathBuf,
    /// Environment the jobs need (RAY_HPC_HOME, VIRTUAL_ENV).
    pub env: BTreeMap<String, String>,
    /// The head's own job, which carries the cluster's name too.
    pub head_job_id: String,
}

impl JoinCommand {
    /// The command line that joins one node of `node_type` to this cluster.
    pub fn argv(&self, scheduler: &str, node_type: &str) -> Vec<String> {
        let mut argv = vec![
            self.exe.display().to_string(),
            "--scheduler".into(),
            scheduler.into(),
        ];
        if let Some(p) = &self.config_path {
            argv.extend(["--config".into(), p.display().to_string()]);
        }
        argv.extend([
            "agent".into(),
            "--join".into(),
            self.cluster.clone(),
            "--node-type".into(),
            node_type.into(),
        ]);
        argv
    }
}

/// What the autoscaler needs from Ray besides the cluster's state: drains and reports.
#[async_trait::async_trait]
pub trait RayControl: Send + Sync {
    /// Asks Ray to drain an idle node; Ok(Err(why)) when Ray refused (the node is busy again).
    async fn drain_idle(
        &self,
        node_id: &[u8],
        why: &str,
        deadline_ms: i64,
    ) -> Result<Result<(), String>, String>;

    /// What Ray's own `ray status` shows under pending and failed.
    async fn report(&self, state: AutoscalingState) -> Result<(), String>;
}

#[async_trait::async_trait]
impl RayControl for GcsClient {
    async fn drain_idle(
        &self,
        node_id: &[u8],
        why: &str,
        deadline_ms: i64,
    ) -> Result<Result<(), String>, String> {
        let reply = self
            .drain_node(node_id, DrainNodeReason::IdleTermination, why, deadline_ms)
            .await
            .map_err(|e| e.to_string())?;
        Ok(if reply.is_accepted {
            Ok(())
        } else {
            Err(reply.rejection_reason_message)
        })
    }

    async fn report(&self, state: AutoscalingState) -> Result<(), String> {
        self.report_autoscaling_state(state)
            .await
            .map_err(|e| e.to_string())
    }
}

/// What the head shows of the autoscaler: in the cluster record, hence in `ray-hpc status`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AutoscalerStatus {
    /// The worker jobs it submitted and has not seen end.
    pub worker_jobs: Vec<String>,
    /// Infeasible demand, refused submissions, lost jobs.
    pub notes: Vec<String>,
    /// Set while the scheduler does not answer.
    pub outage: Option<SchedulerOutage>,
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A node type as the planner sees it: what one node of it announces to Ray.
pub fn spec_of(t: &NodeTypeConfig) -> NodeTypeSpec {
    let mut resources: BTreeMap<String, f64> = t.resources.clone();
    resources.insert("CPU".into(), t.cpus as f64);
    if t.gpus > 0 {
        resources.insert("GPU".into(), t.gpus as f64);
    }
    if let Some(m) = t.memory_bytes {
        resources.insert("memory".into(), m as f64);
    }
    NodeTypeSpec {
        name: t.name.clone(),
        resources,
        min_workers: t.min_workers,
        max_workers: t.max_workers,
    }
}

pub fn settings_of(a: &AutoscalerConfig) -> Settings {
    Settings {
        max_workers: a.max_workers,
        idle_timeout_ms: a.idle_timeout_s.saturating_mul(1000),
        upscaling_speed: a.upscaling_speed,
        max_pending_jobs: a.max_pending_jobs,
        backoff_initial_ms: (a.backoff_initial_s * 1000.0) as u64,
        backoff_max_ms: (a.backoff_max_s * 1000.0) as u64,
        max_consecutive_failures: a.max_consecutive_failures,
    }
}

/// How long Ray is told a drained node has before it goes.
const DRAIN_DEADLINE_MS: u64 = 30_000;

/// Recent refusals kept for `ray status`.
const FAILURES_KEPT: usize = 20;

pub struct Reconciler {
    scheduler: Arc<dyn Scheduler>,
    join: JoinCommand,
    types: Vec<NodeTypeConfig>,
    specs: Vec<NodeTypeSpec>,
    settings: Settings,
    scheduler_poll_ms: u64,
    book: JobBook,
    health: BTreeMap<String, TypeHealth>,
    failures: Vec<FailedInstanceRequest>,
    last_query_ms: Option<u64>,
    last_demand: Vec<Demand>,
    /// Whether jobs left by an earlier head of this cluster were looked for yet.
    swept: bool,
    /// Jobs to give back whose cancel has not gone through yet. A drained node's job is only
    /// ever planned once (its node is no longer idle), so a failed cancel is retried from here.
    to_cancel: BTreeSet<String>,
    reach: SchedulerReach,
    metrics: Metrics,
    last_plan: Plan,
}

impl Reconciler {
    pub fn new(
        scheduler: Arc<dyn Scheduler>,
        join: JoinCommand,
        autoscaler: &AutoscalerConfig,
        types: &[NodeTypeConfig],
        metrics: Metrics,
    ) -> Self {
        let scheduler_poll_ms = autoscaler.scheduler_poll_interval().as_millis() as u64;
        Reconciler {
            scheduler,
            join,
            specs: types.iter().map(spec_of).collect(),
            types: types.to_vec(),
            settings: settings_of(autoscaler),
            scheduler_poll_ms,
            book: JobBook::default(),
            health: BTreeMap::new(),
            failures: vec![],
            last_query_ms: None,
            last_demand: vec![],
            swept: false,
            to_cancel: BTreeSet::new(),
            reach: SchedulerReach::new(Backoff {
                initial_ms: scheduler_poll_ms.max(1_000),
                max_ms: autoscaler.backoff_max().as_millis() as u64,
            }),
            metrics,
            last_plan: Plan::default(),
        }
    }

    /// What the head shows of the autoscaler now.
    pub fn status(&self) -> AutoscalerStatus {
        AutoscalerStatus {
            worker_jobs: self.book.live_ids(),
            notes: report::notes(&self.last_plan, &self.health, &self.book),
            outage: self.reach.outage(),
        }
    }

    /// One round: observe, plan, act, report. Returns the plan (for logs and tests).
    pub async fn reconcile(
        &mut self,
        ray: &dyn RayControl,
        state: &ClusterResourceState,
        now: u64,
    ) -> &Plan {
        let (nodes, demands) = super::observe_gcs(state);
        if self.reach.may_call(now) {
            self.sweep_earlier_jobs(now).await;
            self.observe_scheduler(now).await;
        }
        self.book.absorb_nodes(&nodes, now);
        // New demand is a new chance for a type that was given up on.
        if demands != self.last_demand {
            for h in self.health.values_mut() {
                h.gave_up = false;
            }
            self.last_demand = demands.clone();
        }
        let the_plan = plan(&PlanInput {
            nodes: &nodes,
            demands: &demands,
            jobs: &self.book.jobs,
            types: &self.specs,
            settings: &self.settings,
            health: &self.health,
            now_ms: now,
        });
        self.act(ray, &the_plan, now).await;
        let report = report::autoscaling_state(
            state,
            &self.book,
            self.scheduler.name(),
            &the_plan,
            &self.failures,
            now,
        );
        if let Err(e) = ray.report(report).await {
            tracing::debug!("autoscaler: report to the GCS failed: {e}");
        }
        self.metrics.set_scheduler_jobs(&self.book.counts());
        self.metrics.set_scheduler_up(self.reach.outage().is_none());
        self.last_plan = the_plan;
        &self.last_plan
    }

    /// Notes a scheduler command that did not answer: the error policy takes over.
    fn unanswered(&mut self, now: u64, what: &str, e: &SchedulerError) {
        self.metrics.inc_scheduler_command_failures(what);
        let command = e.command().unwrap_or(what).to_string();
        self.reach.failed(now, &command, &e.to_string());
    }

    /// Once, at the start: jobs carrying this cluster's name that this head did not submit
    /// were left by an earlier head of it (a restart). Their nodes cannot be in this head's new
    /// GCS, so they are cancelled rather than left to hold the allocation.
    async fn sweep_earlier_jobs(&mut self, now: u64) {
        if self.swept {
            return;
        }
        let name = format!("rh-{}", self.join.cluster);
        let found = match self.scheduler.query_named(&name).await {
            Ok(found) => found,
            Err(e) => return self.unanswered(now, "query", &e),
        };
        self.reach.answered();
        self.swept = true;
        let stale: Vec<String> = found
            .into_iter()
            .filter(|j| !j.state.is_ended())
            .filter(|j| j.id != self.join.head_job_id && !self.book.is_ours(&j.id))
            .map(|j| j.id)
            .collect();
        if !stale.is_empty() {
            tracing::info!(
                "autoscaler: cancelling job(s) {} left by an earlier head of this cluster",
                stale.join(", ")
            );
            self.to_cancel.extend(stale);
        }
    }

    /// Asks the scheduler about our jobs (one query), at most every `scheduler_poll`.
    async fn observe_scheduler(&mut self, now: u64) {
        if self
            .last_query_ms
            .is_some_and(|t| now.saturating_sub(t) < self.scheduler_poll_ms)
        {
            return;
        }
        self.last_query_ms = Some(now);
        let ids = self.book.live_ids();
        if ids.is_empty() {
            return;
        }
        match self.scheduler.query(&ids).await {
            Ok(answer) => {
                self.reach.answered();
                self.book.absorb_scheduler(&answer);
            }
            Err(e) => self.unanswered(now, "query", &e),
        }
    }

    async fn act(&mut self, ray: &dyn RayControl, p: &Plan, now: u64) {
        // Without answers from the scheduler nothing can be given back or asked for; a node is
        // not drained either when its job could not be cancelled after it.
        if !self.reach.may_call(now) {
            return;
        }
        for c in &p.cancel {
            tracing::info!("autoscaler: cancelling job {}: {}", c.job_id, c.why);
            self.to_cancel.insert(c.job_id.clone());
        }
        if !self.cancel_pending(now).await {
            return;
        }
        let drained = self.drain_idle_nodes(ray, p, now).await;
        self.to_cancel.extend(drained);
        if !self.cancel_pending(now).await {
            return;
        }
        self.submit_planned(p, now).await;
    }

    /// Idle nodes: drain (Ray refuses when a node is busy again); their jobs go back after.
    async fn drain_idle_nodes(&mut self, ray: &dyn RayControl, p: &Plan, now: u64) -> Vec<String> {
        let deadline = now.saturating_add(DRAIN_DEADLINE_MS) as i64;
        let mut drained = vec![];
        for Drain {
            node_id,
            job_id,
            why,
        } in &p.drain
        {
            let Ok(id) = node_id_from_hex(node_id) else {
                continue;
            };
            let short = &node_id[..12.min(node_id.len())];
            match ray.drain_idle(&id, why, deadline).await {
                Ok(Ok(())) => {
                    tracing::info!("autoscaler: drained node {short} (job {job_id}): {why}");
                    drained.push(job_id.clone());
                }
                Ok(Err(busy)) => {
                    tracing::info!("autoscaler: node {short} is busy again, not drained: {busy}")
                }
                Err(e) => tracing::warn!("autoscaler: drain of job {job_id}'s node failed: {e}"),
            }
        }
        drained
    }

    /// Cancels every job waiting to be given back, in one call. False when the scheduler did
    /// not answer (they are tried again next round).
    async fn cancel_pending(&mut self, now: u64) -> bool {
        let ids: Vec<String> = self.to_cancel.iter().cloned().collect();
        if ids.is_empty() {
            return true;
        }
        match self.scheduler.cancel(&ids).await {
            Ok(()) => {
                self.reach.answered();
                self.book.cancelled(&ids);
                self.to_cancel.clear();
                true
            }
            Err(e) => {
                self.unanswered(now, "cancel", &e);
                false
            }
        }
    }

    async fn submit_planned(&mut self, p: &Plan, now: u64) {
        for Submit {
            node_type: type_name,
            count,
        } in &p.submit
        {
            let Some(t) = self.types.iter().find(|t| &t.name == type_name).cloned() else {
                continue;
            };
            let request = self.job_request(&t);
            for _ in 0..*count {
                let submitted = match self.scheduler.render_job(&request) {
                    Ok(script) => self.scheduler.submit(&script, &request).await,
                    Err(e) => Err(e),
                };
                match submitted {
                    Ok(job_id) => {
                        self.reach.answered();
                        tracing::info!("autoscaler: submitted {type_name} job {job_id}");
                        self.metrics.inc_submissions(type_name);
                        self.health
                            .entry(type_name.clone())
                            .or_default()
                            .succeeded();
                        self.book.submitted(job_id, type_name, now);
                    }
                    Err(e @ (SchedulerError::Refused { .. } | SchedulerError::BadRequest(_))) => {
                        self.reach.answered();
                        self.refused(type_name, e.reason(), now);
                        break;
                    }
                    Err(e) => {
                        self.unanswered(now, "submit", &e);
                        return;
                    }
                }
            }
        }
    }

    /// A submission the scheduler turned down: the type backs off, `ray status` shows it.
    fn refused(&mut self, type_name: &str, reason: String, now: u64) {
        tracing::warn!("autoscaler: {type_name} job refused: {reason}");
        self.metrics.inc_submission_failures(type_name);
        self.health
            .entry(type_name.to_string())
            .or_default()
            .failed(now, reason.clone(), &self.settings);
        self.failures.push(FailedInstanceRequest {
            instance_type_name: type_name.to_string(),
            ray_node_type_name: type_name.to_string(),
            count: 1,
            reason,
            start_ts: (now / 1000) as i64,
            failed_ts: (now / 1000) as i64,
        });
        let excess = self.failures.len().saturating_sub(FAILURES_KEPT);
        self.failures.drain(..excess);
    }

    /// The job request of a worker of type `t`.
    fn job_request(&self, t: &NodeTypeConfig) -> JobRequest {
        let command = self.join.argv(self.scheduler.name(), &t.name);
        JobRequest {
            // Every job of the cluster carries its name, so one query finds them all.
            name: format!("rh-{}", self.join.cluster),
            nodes: 1,
            cpus_per_node: Some(t.cpus),
            gpus_per_node: (t.gpus > 0).then_some(t.gpus),
            memory_per_node: t.memory_bytes,
            queue: t.queue.clone(),
            account: t.account.clone(),
            qos: t.qos.clone(),
            constraint: t.constraint.clone(),
            walltime: t.walltime,
            output: OutputPath(self.join.output_dir.join(format!(
                "worker-{}-{}.out",
                t.name,
                OutputPath::JOB_ID
            ))),
            directives: t.extra_directives.clone(),
            command: shell_join(&command),
            env: self.join.env.clone(),
            node_type: Some(t.name.clone()),
            node_kinds: vec![],
        }
    }

    /// At the end of the cluster: give back every job this head submitted (no orphans), and
    /// any still waiting to be given back, whatever the error policy says.
    pub async fn cancel_all(&mut self) {
        self.to_cancel.extend(self.book.live_ids());
        if self.to_cancel.is_empty() {
            return;
        }
        let ids: Vec<String> = self.to_cancel.iter().cloned().collect();
        tracing::info!("autoscaler: cancelling worker jobs {}", ids.join(", "));
        if let Err(e) = self.scheduler.cancel(&ids).await {
            tracing::warn!(
                "autoscaler: cancelling {} failed: {e}; they end by themselves once they find their head gone",
                ids.join(", ")
            );
            return;
        }
        self.book.cancelled(&ids);
        self.to_cancel.clear();
    }
}
