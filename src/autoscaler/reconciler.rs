//! The loop around the planner, in the head agent: observe (the GCS every round, the
//! scheduler in one batched query at most every `scheduler_poll_interval_s`), plan (pure),
//! act (submit, cancel, drain — each idempotent against the next observation), and report to
//! Ray so that its own `ray status` shows our queued jobs, infeasible demand and failures.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::planner::{
    Cancel, Demand, Drain, JobPhase, NodeTypeSpec, ObservedNode, Plan, PlanInput, Settings, Submit,
    TypeHealth, WorkerJob, plan,
};
use crate::config::{AutoscalerConfig, NodeTypeConfig};
use crate::metrics::Metrics;
use crate::proto::ray::autoscaler::{
    AutoscalingState, BundleSelector, ClusterResourceState, DrainNodeReason, FailedInstanceRequest,
    GangResourceRequest, PendingInstance, ResourceRequest,
};
use crate::ray::gcs::{GcsClient, node_id_from_hex};
use crate::scheduler::{JobRequest, JobState, Scheduler, SchedulerError, shell_join};

/// What a worker job needs to know to join this cluster.
pub struct JoinCommand {
    pub exe: PathBuf,
    pub config_path: Option<PathBuf>,
    pub cluster: String,
    /// The registry dir: worker job output goes there.
    pub output_dir: PathBuf,
    /// Environment the jobs need (RAY_HPC_HOME, VIRTUAL_ENV).
    pub env: Vec<(String, String)>,
    /// `[slurm] extra_directives`; a node type's own come after these.
    pub extra_directives: Vec<String>,
    /// The head's own job, which carries the cluster's name too.
    pub head_job_id: String,
}

pub struct Reconciler {
    scheduler: Box<dyn Scheduler>,
    join: JoinCommand,
    types: Vec<NodeTypeConfig>,
    specs: Vec<NodeTypeSpec>,
    settings: Settings,
    scheduler_poll: Duration,
    jobs: Vec<WorkerJob>,
    /// The scheduler's last word on each job: state and queue reason.
    job_detail: BTreeMap<String, String>,
    health: BTreeMap<String, TypeHealth>,
    failures: Vec<FailedInstanceRequest>,
    last_query: Option<Instant>,
    last_demand: Vec<Demand>,
    /// Whether jobs left by an earlier head of this cluster were looked for yet.
    swept: bool,
    /// Worker jobs that ended before their node joined, and joined nodes that died: counted
    /// for the user, and replaced by the planner while demand remains.
    lost_before_join: u32,
    lost_after_join: u32,
    /// Jobs already counted as lost, so none is counted twice.
    counted_lost: BTreeSet<String>,
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

impl Reconciler {
    pub fn new(
        scheduler: Box<dyn Scheduler>,
        join: JoinCommand,
        autoscaler: &AutoscalerConfig,
        types: &[NodeTypeConfig],
    ) -> Self {
        Reconciler {
            scheduler,
            join,
            specs: types.iter().map(spec_of).collect(),
            types: types.to_vec(),
            settings: settings_of(autoscaler),
            scheduler_poll: Duration::from_secs_f64(autoscaler.scheduler_poll_interval_s),
            jobs: vec![],
            job_detail: BTreeMap::new(),
            health: BTreeMap::new(),
            failures: vec![],
            last_query: None,
            last_demand: vec![],
            swept: false,
            lost_before_join: 0,
            lost_after_join: 0,
            counted_lost: BTreeSet::new(),
        }
    }

    /// The worker jobs this head submitted and has not seen end.
    pub fn live_job_ids(&self) -> Vec<String> {
        self.jobs
            .iter()
            .filter(|j| j.phase != JobPhase::Ended)
            .map(|j| j.job_id.clone())
            .collect()
    }

    /// The script of a worker job of type `t`.
    fn job_request(&self, t: &NodeTypeConfig) -> JobRequest {
        let mut command = vec![self.join.exe.display().to_string()];
        command.extend(["--scheduler".into(), self.scheduler.name().into()]);
        if let Some(p) = &self.join.config_path {
            command.extend(["--config".into(), p.display().to_string()]);
        }
        command.extend([
            "agent".into(),
            "--join".into(),
            self.join.cluster.clone(),
            "--node-type".into(),
            t.name.clone(),
        ]);
        let mut extra = self.join.extra_directives.clone();
        for (flag, value) in [
            ("account", &t.account),
            ("qos", &t.qos),
            ("constraint", &t.constraint),
        ] {
            if let Some(v) = value {
                extra.push(format!("#SBATCH --{flag}={v}"));
            }
        }
        if let Some(m) = t.memory_bytes {
            extra.push(format!("#SBATCH --mem={}M", m.div_ceil(1024 * 1024)));
        }
        extra.extend(t.extra_directives.iter().cloned());
        JobRequest {
            // Every job of the cluster carries its name, so one query finds them all.
            name: format!("rh-{}", self.join.cluster),
            nodes: 1,
            cpus_per_node: Some(t.cpus),
            gpus_per_node: (t.gpus > 0).then_some(t.gpus),
            partition: t.partition.clone(),
            time: t.time.clone(),
            extra_directives: extra,
            output: self
                .join
                .output_dir
                .join(format!("worker-{}-%j.out", t.name)),
            command: shell_join(&command),
            env: self.join.env.clone(),
        }
    }

    /// Once, at the start: jobs carrying this cluster's name that this head did not submit
    /// were left by an earlier head of it (a restart). Their nodes cannot be in this head's new
    /// GCS, so they are cancelled rather than left to hold the allocation.
    fn sweep_earlier_jobs(&mut self) {
        if self.swept {
            return;
        }
        self.swept = true;
        let name = format!("rh-{}", self.join.cluster);
        let found = match tokio::task::block_in_place(|| self.scheduler.query_named(&name)) {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!("autoscaler: cannot look for jobs left by an earlier head: {e}");
                return;
            }
        };
        let ours: BTreeSet<&str> = self.jobs.iter().map(|j| j.job_id.as_str()).collect();
        let stale: Vec<String> = found
            .into_iter()
            .filter(|j| !matches!(j.state, JobState::Ended(_)))
            .filter(|j| j.id != self.join.head_job_id && !ours.contains(j.id.as_str()))
            .map(|j| j.id)
            .collect();
        if !stale.is_empty() {
            tracing::info!(
                "autoscaler: cancelling job(s) {} left by an earlier head of this cluster",
                stale.join(", ")
            );
            if let Err(e) = tokio::task::block_in_place(|| self.scheduler.cancel(&stale)) {
                tracing::warn!("autoscaler: cancelling {} failed: {e}", stale.join(", "));
            }
        }
    }

    /// Asks the scheduler about our jobs (one query), at most every `scheduler_poll`.
    fn observe_scheduler(&mut self) {
        if self
            .last_query
            .is_some_and(|t| t.elapsed() < self.scheduler_poll)
        {
            return;
        }
        self.last_query = Some(Instant::now());
        let ids = self.live_job_ids();
        if ids.is_empty() {
            return;
        }
        let answer = match tokio::task::block_in_place(|| self.scheduler.query(&ids)) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!("autoscaler: cannot ask the scheduler about its jobs: {e}");
                return;
            }
        };
        let by_id: BTreeMap<&str, _> = answer.iter().map(|j| (j.id.as_str(), j)).collect();
        for job in self.jobs.iter_mut().filter(|j| j.phase != JobPhase::Ended) {
            let was = job.phase;
            match by_id.get(job.job_id.as_str()) {
                None => job.phase = JobPhase::Ended, // gone from the scheduler
                Some(info) => {
                    let detail = match (&info.state, &info.reason) {
                        (JobState::Pending, Some(r)) => format!("queued ({r})"),
                        (JobState::Pending, None) => "queued".into(),
                        (JobState::Running | JobState::Completing, _) => "running".into(),
                        (JobState::Ended(how), _) => how.to_lowercase(),
                    };
                    self.job_detail.insert(job.job_id.clone(), detail);
                    job.phase = match &info.state {
                        JobState::Pending => JobPhase::Pending,
                        JobState::Ended(_) => JobPhase::Ended,
                        // Joined is decided from the GCS below.
                        _ if job.phase == JobPhase::Joined => JobPhase::Joined,
                        _ => JobPhase::Running,
                    };
                }
            }
            // Ended without our cancel (we mark our cancels Ended ourselves).
            if job.phase == JobPhase::Ended && self.counted_lost.insert(job.job_id.clone()) {
                if was == JobPhase::Joined {
                    self.lost_after_join += 1;
                    tracing::warn!("autoscaler: job {} ended under its joined node", job.job_id);
                } else {
                    self.lost_before_join += 1;
                    tracing::warn!(
                        "autoscaler: {} job {} ended before its node joined; it is replaced while demand remains",
                        job.node_type,
                        job.job_id
                    );
                }
            }
        }
    }

    /// One round: observe, plan, act, report. Returns the plan (for logs and tests).
    pub async fn reconcile(
        &mut self,
        gcs: &GcsClient,
        state: &ClusterResourceState,
        nodes: &[ObservedNode],
        demands: &[Demand],
        metrics: &Metrics,
    ) -> Plan {
        let now = now_ms();
        self.sweep_earlier_jobs();
        self.observe_scheduler();
        let alive: BTreeSet<&str> = nodes
            .iter()
            .filter(|n| n.status != super::planner::NodeStatus::Dead)
            .map(|n| n.instance_id.as_str())
            .collect();
        let dead: BTreeSet<&str> = nodes
            .iter()
            .filter(|n| n.status == super::planner::NodeStatus::Dead)
            .map(|n| n.instance_id.as_str())
            .collect();
        for job in self.jobs.iter() {
            let id = job.job_id.as_str();
            if job.phase == JobPhase::Joined
                && dead.contains(id)
                && !alive.contains(id)
                && self.counted_lost.insert(job.job_id.clone())
            {
                self.lost_after_join += 1;
                tracing::warn!(
                    "autoscaler: the node of job {id} died; it is replaced while demand remains"
                );
            }
        }
        for job in self.jobs.iter_mut() {
            if job.phase != JobPhase::Ended
                && job.phase != JobPhase::Joined
                && alive.contains(job.job_id.as_str())
            {
                tracing::info!(
                    "autoscaler: {} job {} joined, {:.1}s after its submission",
                    job.node_type,
                    job.job_id,
                    now.saturating_sub(job.submitted_ms) as f64 / 1000.0
                );
                job.phase = JobPhase::Joined;
            }
        }
        // New demand is a new chance for a type that was given up on.
        if demands != self.last_demand.as_slice() {
            for h in self.health.values_mut() {
                h.gave_up = false;
            }
            self.last_demand = demands.to_vec();
        }
        let the_plan = plan(&PlanInput {
            nodes,
            demands,
            jobs: &self.jobs,
            types: &self.specs,
            settings: &self.settings,
            health: &self.health,
            now_ms: now,
        });
        self.act(gcs, &the_plan, metrics, now).await;
        self.report(gcs, state, &the_plan, now).await;
        let mut counts = BTreeMap::from([("pending", 0), ("running", 0), ("ended", 0)]);
        for j in &self.jobs {
            let key = match j.phase {
                JobPhase::Pending => "pending",
                JobPhase::Running | JobPhase::Joined => "running",
                JobPhase::Ended => "ended",
            };
            *counts.entry(key).or_default() += 1;
        }
        // The head's own job runs too.
        *counts.entry("running").or_default() += 1;
        metrics.set_scheduler_jobs(&counts.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>());
        the_plan
    }

    async fn act(&mut self, gcs: &GcsClient, p: &Plan, metrics: &Metrics, now: u64) {
        // Queued jobs no longer needed go first, in one call.
        let cancel: Vec<String> = p.cancel.iter().map(|c| c.job_id.clone()).collect();
        for Cancel { job_id: id, why } in &p.cancel {
            tracing::info!("autoscaler: cancelling job {id}: {why}");
        }
        self.cancel(&cancel);
        // Idle nodes: drain (refused when busy again), then give their job back.
        let deadline = now as i64 + 30_000;
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
            match gcs
                .drain_node(&id, DrainNodeReason::IdleTermination, why, deadline)
                .await
            {
                Ok(reply) if reply.is_accepted => {
                    tracing::info!(
                        "autoscaler: drained node {} (job {job_id}): {why}",
                        &node_id[..12.min(node_id.len())]
                    );
                    drained.push(job_id.clone());
                }
                Ok(reply) => tracing::info!(
                    "autoscaler: node {} is busy again, not drained: {}",
                    &node_id[..12.min(node_id.len())],
                    reply.rejection_reason_message
                ),
                Err(e) => tracing::warn!("autoscaler: drain of job {job_id}'s node failed: {e}"),
            }
        }
        self.cancel(&drained);
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
                let submitted = tokio::task::block_in_place(|| {
                    self.scheduler
                        .render_job(&request)
                        .and_then(|script| self.scheduler.submit(&script, &request))
                });
                match submitted {
                    Ok(job_id) => {
                        tracing::info!("autoscaler: submitted {type_name} job {job_id}");
                        metrics.inc_submissions(type_name);
                        self.health
                            .entry(type_name.clone())
                            .or_default()
                            .succeeded();
                        self.job_detail.insert(job_id.clone(), "queued".into());
                        self.jobs.push(WorkerJob {
                            job_id,
                            node_type: type_name.clone(),
                            phase: JobPhase::Pending,
                            submitted_ms: now,
                        });
                    }
                    Err(e) => {
                        let reason = match &e {
                            SchedulerError::Refused { message, .. } => message.clone(),
                            other => other.to_string(),
                        };
                        tracing::warn!("autoscaler: {type_name} job refused: {reason}");
                        metrics.inc_submission_failures(type_name);
                        self.health.entry(type_name.clone()).or_default().failed(
                            now,
                            reason.clone(),
                            &self.settings,
                        );
                        self.failures.push(FailedInstanceRequest {
                            instance_type_name: type_name.clone(),
                            ray_node_type_name: type_name.clone(),
                            count: 1,
                            reason,
                            start_ts: (now / 1000) as i64,
                            failed_ts: (now / 1000) as i64,
                        });
                        // Keep the last few: `ray status` shows recent failures.
                        let excess = self.failures.len().saturating_sub(20);
                        self.failures.drain(..excess);
                        break;
                    }
                }
            }
        }
    }

    fn cancel(&mut self, ids: &[String]) {
        if ids.is_empty() {
            return;
        }
        match tokio::task::block_in_place(|| self.scheduler.cancel(ids)) {
            Ok(()) => {
                for j in self.jobs.iter_mut().filter(|j| ids.contains(&j.job_id)) {
                    j.phase = JobPhase::Ended;
                }
            }
            Err(e) => tracing::warn!("autoscaler: cancelling {} failed: {e}", ids.join(", ")),
        }
    }

    /// What Ray's own `ray status` shows under pending and failed.
    async fn report(&self, gcs: &GcsClient, state: &ClusterResourceState, p: &Plan, now: u64) {
        let request = |bundle: &BTreeMap<String, f64>| ResourceRequest {
            resources_bundle: bundle.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            ..Default::default()
        };
        let mut report = AutoscalingState {
            last_seen_cluster_resource_state_version: state.cluster_resource_state_version,
            // Reports with a lower version are dropped: a clock stamp always grows.
            autoscaler_state_version: now as i64,
            failed_instance_requests: self.failures.clone(),
            ..Default::default()
        };
        for j in self
            .jobs
            .iter()
            .filter(|j| matches!(j.phase, JobPhase::Pending | JobPhase::Running))
        {
            let detail = self.job_detail.get(&j.job_id).cloned().unwrap_or_default();
            report.pending_instances.push(PendingInstance {
                instance_type_name: j.node_type.clone(),
                ray_node_type_name: j.node_type.clone(),
                instance_id: j.job_id.clone(),
                ip_address: String::new(),
                details: format!("{} job {} {detail}", self.scheduler.name(), j.job_id),
            });
        }
        for d in &p.infeasible {
            match d {
                Demand::Tasks { bundle, .. } => {
                    report.infeasible_resource_requests.push(request(bundle))
                }
                Demand::Gang {
                    bundles, details, ..
                } => report
                    .infeasible_gang_resource_requests
                    .push(GangResourceRequest {
                        details: details.clone(),
                        bundle_selectors: vec![BundleSelector {
                            resource_requests: bundles.iter().map(request).collect(),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                Demand::Constraint { bundle, count } => report
                    .infeasible_cluster_resource_constraints
                    .push(crate::proto::ray::autoscaler::ClusterResourceConstraint {
                        resource_requests: vec![
                            crate::proto::ray::autoscaler::ResourceRequestByCount {
                                request: Some(request(bundle)),
                                count: *count as i64,
                            },
                        ],
                    }),
            }
        }
        if let Err(e) = gcs.report_autoscaling_state(report).await {
            tracing::debug!("autoscaler: report to the GCS failed: {e}");
        }
    }

    /// What the cluster record shows of the autoscaler: its live jobs, and notes on infeasible
    /// demand and refused submissions.
    pub fn summary(&self, p: &Plan) -> (Vec<String>, Vec<String>) {
        let shape = |b: &BTreeMap<String, f64>| {
            let parts: Vec<String> = b.iter().map(|(k, v)| format!("{k}: {v}")).collect();
            format!("{{{}}}", parts.join(", "))
        };
        let mut notes: Vec<String> = p
            .infeasible
            .iter()
            .map(|d| match d {
                Demand::Tasks { bundle, count } => format!(
                    "infeasible: {} x {count}: no node type can hold it; nothing is submitted",
                    shape(bundle)
                ),
                Demand::Gang {
                    bundles, strategy, ..
                } => format!(
                    "infeasible: placement group ({strategy:?}) of {} bundle(s): no node type can hold it",
                    bundles.len()
                ),
                Demand::Constraint { bundle, count } => {
                    format!("infeasible: request_resources {} x {count}", shape(bundle))
                }
            })
            .collect();
        for (name, h) in &self.health {
            if let Some(err) = &h.last_error {
                let when = if h.gave_up {
                    "given up until the config or the demand changes".to_string()
                } else {
                    format!(
                        "{} refusal(s) in a row, backing off",
                        h.consecutive_failures
                    )
                };
                notes.push(format!("{name} jobs refused ({when}): {err}"));
            }
        }
        if self.lost_before_join > 0 {
            notes.push(format!(
                "{} worker job(s) ended before their node joined",
                self.lost_before_join
            ));
        }
        if self.lost_after_join > 0 {
            notes.push(format!(
                "{} joined worker node(s) died or lost their job",
                self.lost_after_join
            ));
        }
        (self.live_job_ids(), notes)
    }

    /// At the end of the cluster: give back every job this head submitted (no orphans).
    pub fn cancel_all(&mut self) {
        let ids = self.live_job_ids();
        if !ids.is_empty() {
            tracing::info!("autoscaler: cancelling worker jobs {}", ids.join(", "));
            self.cancel(&ids);
        }
    }
}
