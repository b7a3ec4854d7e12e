//! The one model of a cluster that `status` renders, as text and as JSON.
//!
//! [`build`] is pure: it takes the registry record, what the scheduler and the GCS said (or why
//! they did not) and the time, and decides what to show. Everything that does I/O lives in
//! `gather.rs`; everything that formats lives in `render.rs`.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::proto::ray::autoscaler::{
    ClusterResourceState, GangResourceRequest, NodeState, NodeStatus, ResourceRequest,
    ResourceRequestByCount,
};
use crate::ray::gcs::node_id_hex;
use crate::registry::{ClusterRecord, ClusterState, NodeRecord, SchedulerOutage};
use crate::scheduler::{EndReason, JobInfo, JobState};

/// The version of the JSON documents `status --json` prints (docs/status-json.md).
pub const SCHEMA: &str = "ray-hpc.status/v1";

/// What the GCS said about the cluster, or why it was not heard.
#[derive(Debug, Clone)]
pub enum GcsObservation {
    /// Not asked: the cluster is queued or over, its job is gone, or it has no GCS address yet.
    NotAsked,
    Live(ClusterResourceState),
    /// Asked, no answer (unreachable, timed out, refused our token...).
    Failed(String),
}

/// What the scheduler said about the cluster's jobs, or why it was not heard.
#[derive(Debug, Clone)]
pub enum JobsObservation {
    NotAsked,
    /// The answer to the query; a job of the cluster missing from it is gone.
    Answered(Vec<JobInfo>),
    Failed(String),
}

/// Everything [`build`] needs about one cluster.
#[derive(Debug, Clone)]
pub struct Observation<'a> {
    pub record: &'a ClusterRecord,
    pub gcs: GcsObservation,
    pub jobs: JobsObservation,
    pub now_unix: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodesSource {
    /// Live, from the GCS, now.
    Gcs,
    /// The record's last known nodes.
    Record,
    /// No nodes known (queued, or no node joined yet).
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GcsStatus {
    Live,
    Unreachable,
    NotAsked,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GcsView {
    /// host:port of the GCS (what RAY_ADDRESS holds), once the head started.
    pub address: Option<String>,
    pub status: GcsStatus,
    /// Why the GCS did not answer.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum NodeStatusView {
    Running,
    Idle,
    Draining,
    Dead,
    /// From the record: not observed now.
    Unknown,
}

impl NodeStatusView {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatusView::Running => "RUNNING",
            NodeStatusView::Idle => "IDLE",
            NodeStatusView::Draining => "DRAINING",
            NodeStatusView::Dead => "DEAD",
            NodeStatusView::Unknown => "UNKNOWN",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeView {
    /// The scheduler's node name, when the record knows the node.
    pub name: Option<String>,
    pub address: String,
    /// The scheduler job (and rank) the node belongs to: Ray's instance id.
    pub instance_id: String,
    /// Ray's node id, 56 hex digits.
    pub node_id: Option<String>,
    /// Ray's node type name (RAY_NODE_TYPE_NAME), when set.
    pub node_type: Option<String>,
    pub is_head: bool,
    pub status: NodeStatusView,
    /// How long the node has been idle, when it is.
    pub idle_s: Option<u64>,
    pub cpus_total: f64,
    pub cpus_available: Option<f64>,
    pub gpus_total: f64,
    pub gpus_available: Option<f64>,
    pub memory_total_bytes: u64,
    pub memory_available_bytes: Option<u64>,
}

/// Sums over the nodes that are not dead. `*_used` is unknown unless every node's availability is.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Totals {
    pub cpus_total: f64,
    pub cpus_used: Option<f64>,
    pub gpus_total: f64,
    pub gpus_used: Option<f64>,
    pub memory_total_bytes: u64,
    pub memory_used_bytes: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DemandKind {
    /// Tasks and actors waiting for resources (pending_resource_requests).
    Tasks,
    /// A placement group waiting to be placed: all its bundles together.
    PlacementGroup,
    /// A floor set with `ray.autoscaler.sdk.request_resources` (cluster_resource_constraints).
    Constraint,
}

/// One shape of pending demand: `bundles` (one for tasks and constraints, every bundle of a
/// placement group) wanted `count` times.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DemandView {
    pub kind: DemandKind,
    pub bundles: Vec<BTreeMap<String, f64>>,
    pub count: u64,
    /// Ray's description of a placement group (strategy, id...).
    pub details: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobStateView {
    Pending,
    Running,
    /// Stopped by the scheduler: not capacity while it lasts.
    Suspended,
    Completing,
    Ended,
    /// The scheduler no longer knows the job.
    Gone,
    /// The scheduler was not asked, or did not answer.
    Unknown,
}

impl JobStateView {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStateView::Pending => "PENDING",
            JobStateView::Running => "RUNNING",
            JobStateView::Suspended => "SUSPENDED",
            JobStateView::Completing => "COMPLETING",
            JobStateView::Ended => "ENDED",
            JobStateView::Gone => "GONE",
            JobStateView::Unknown => "UNKNOWN",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobRole {
    /// The job that runs the head (and the first nodes).
    Head,
    /// A job the autoscaler submitted for more workers.
    Worker,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobView {
    pub id: String,
    pub role: JobRole,
    /// The scheduler's job name.
    pub name: Option<String>,
    pub state: JobStateView,
    /// How an ended job ended (completed, cancelled, timeout, node failure, ..., or the
    /// scheduler's own word).
    pub end_reason: Option<EndReason>,
    /// Why a pending job waits (Resources, Priority, ...).
    pub reason: Option<String>,
    /// Expected start of a pending job, actual start of a running one, as the scheduler says.
    pub start_time: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClusterView {
    pub name: String,
    pub scheduler: String,
    pub job_id: String,
    pub state: ClusterState,
    /// True when `state` was not confirmed now by the scheduler or the GCS: the cluster is over,
    /// its job is gone, or neither answered. Text shows it as `STATE (last known)`.
    pub last_known: bool,
    /// The state the record holds (what the head agent last wrote).
    pub record_state: ClusterState,
    /// Why `state` is what it is, when that is not obvious ("job gone", "waiting: Priority").
    pub state_reason: Option<String>,
    /// The record's message: why the cluster ended or failed.
    pub message: Option<String>,
    pub created_unix: u64,
    pub updated_unix: u64,
    pub age_s: u64,
    pub walltime_left_s: Option<u64>,
    /// When the scheduler expects a queued cluster to start.
    pub expected_start: Option<String>,
    pub nodes_expected: u32,
    pub nodes_joined: u32,
    pub nodes_source: NodesSource,
    pub totals: Totals,
    pub nodes: Vec<NodeView>,
    /// Demand Ray cannot place yet, from the GCS; None when the GCS was not heard.
    pub pending_demand: Option<Vec<DemandView>>,
    pub jobs: Vec<JobView>,
    pub gcs: GcsView,
    /// `ray://host:port` of the head's Ray Client server, once the head started.
    pub ray_client_address: Option<String>,
    pub dashboard_url: Option<String>,
    /// The token file a Ray client needs (RAY_AUTH_TOKEN_PATH) when auth is on.
    pub token_path: Option<String>,
    pub metrics_address: Option<String>,
    pub job_output: Option<String>,
    /// Everything else worth saying, one sentence each.
    pub notes: Vec<String>,
}

/// A registry entry `status` would not read.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RefusedView {
    pub name: String,
    /// `unsafe` (another user's, or readable by others) or `unreadable` (not a valid record).
    pub kind: RefusedKind,
    pub why: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusedKind {
    Unsafe,
    Unreadable,
}

/// The list view: every cluster of this user.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ListView {
    pub clusters: Vec<ClusterView>,
    pub refused: Vec<RefusedView>,
}

/// The scheduler jobs that make up a cluster, head job first. (The autoscaler's worker jobs
/// join this list once the record holds them.)
pub fn cluster_job_ids(record: &ClusterRecord) -> Vec<String> {
    // The head's job first (its role is decided by position), then the autoscaler's.
    let head = (!record.job_id.is_empty()).then(|| record.job_id.clone());
    head.into_iter()
        .chain(record.worker_jobs.iter().cloned())
        .collect()
}

/// Whether `status` should ask this cluster's GCS, given what the scheduler said: only for a
/// cluster that may be up (its record says STARTING or READY, it has a GCS address, and its head
/// job is neither queued, gone nor over).
pub fn should_ask_gcs(record: &ClusterRecord, jobs: &JobsObservation) -> bool {
    if record.gcs_address.is_none()
        || !matches!(record.state, ClusterState::Starting | ClusterState::Ready)
    {
        return false;
    }
    let head = job_views(record, jobs).into_iter().next();
    !matches!(
        head.map(|j| j.state),
        Some(JobStateView::Gone | JobStateView::Ended | JobStateView::Pending)
    )
}

fn job_views(record: &ClusterRecord, jobs: &JobsObservation) -> Vec<JobView> {
    cluster_job_ids(record)
        .into_iter()
        .enumerate()
        .map(|(i, id)| {
            let role = if i == 0 {
                JobRole::Head
            } else {
                JobRole::Worker
            };
            let unknown = JobView {
                id: id.clone(),
                role,
                name: None,
                state: JobStateView::Unknown,
                end_reason: None,
                reason: None,
                start_time: None,
            };
            match jobs {
                JobsObservation::NotAsked | JobsObservation::Failed(_) => unknown,
                JobsObservation::Answered(infos) => match infos.iter().find(|j| j.id == id) {
                    None => JobView {
                        state: JobStateView::Gone,
                        ..unknown
                    },
                    Some(info) => {
                        let (state, end_reason) = match &info.state {
                            JobState::Pending => (JobStateView::Pending, None),
                            JobState::Running => (JobStateView::Running, None),
                            JobState::Suspended => (JobStateView::Suspended, None),
                            JobState::Completing => (JobStateView::Completing, None),
                            JobState::Ended(how) => (JobStateView::Ended, Some(how.clone())),
                        };
                        JobView {
                            id,
                            role,
                            name: Some(info.name.clone()).filter(|n| !n.is_empty()),
                            state,
                            end_reason,
                            reason: info.reason.clone().filter(|r| !r.is_empty()),
                            start_time: info.start_time.clone().filter(|t| !t.is_empty()),
                        }
                    }
                },
            }
        })
        .collect()
}

/// How a job that ended without its cluster saying so ended: cancelled or completed jobs are
/// ENDED, anything else (failed, timeout, node failure, out of memory...) FAILED.
fn state_of_ended_job(how: Option<&EndReason>) -> ClusterState {
    if how.is_some_and(EndReason::is_clean) {
        ClusterState::Ended
    } else {
        ClusterState::Failed
    }
}

pub fn state_name(state: ClusterState) -> &'static str {
    match state {
        ClusterState::Queued => "QUEUED",
        ClusterState::Starting => "STARTING",
        ClusterState::Ready => "READY",
        ClusterState::Ended => "ENDED",
        ClusterState::Failed => "FAILED",
    }
}

/// Walltime left of the cluster's head job, as the scheduler said.
fn head_time_left(record: &ClusterRecord, jobs: &JobsObservation) -> Option<u64> {
    match jobs {
        JobsObservation::Answered(jobs) => jobs
            .iter()
            .find(|j| j.id == record.job_id)
            .and_then(|j| j.time_left_s),
        _ => None,
    }
}

/// The one model of a cluster, from what was observed. Pure.
pub fn build(obs: &Observation) -> ClusterView {
    let record = obs.record;
    let rec_state = record.state;
    let jobs = job_views(record, &obs.jobs);
    let head_job = jobs.first();
    let gcs_live = matches!(obs.gcs, GcsObservation::Live(_));
    let mut notes = vec![];
    if !rec_state.is_over() {
        notes.extend(record.autoscaler_notes.iter().cloned());
        notes.extend(record.scheduler_outage.as_ref().map(outage_note));
    }

    let mut expected_start = None;
    let (state, last_known, state_reason) = if rec_state.is_over() {
        (rec_state, true, None)
    } else {
        match head_job.map(|j| (j.state, j)) {
            Some((JobStateView::Gone, _)) => (
                ClusterState::Ended,
                true,
                Some(format!(
                    "job gone; last known state {}",
                    state_name(rec_state)
                )),
            ),
            Some((JobStateView::Ended, j)) => {
                let end = j.end_reason.as_ref();
                let how = end.map(|e| e.to_string()).unwrap_or_else(|| "?".into());
                (
                    state_of_ended_job(end),
                    true,
                    Some(format!(
                        "job ended ({how}); last known state {}",
                        state_name(rec_state)
                    )),
                )
            }
            Some((JobStateView::Pending, j)) => {
                expected_start = j.start_time.clone();
                (
                    ClusterState::Queued,
                    false,
                    Some(format!(
                        "waiting in the queue: {}",
                        j.reason.as_deref().unwrap_or("no reason given")
                    )),
                )
            }
            Some((JobStateView::Running, _)) if rec_state == ClusterState::Queued => (
                ClusterState::Starting,
                false,
                Some("job running, Ray not started yet".into()),
            ),
            Some((JobStateView::Running, _)) => (rec_state, false, None),
            Some((JobStateView::Completing, _)) => {
                (rec_state, false, Some("job completing".to_string()))
            }
            Some((JobStateView::Suspended, _)) => (
                rec_state,
                false,
                Some("job suspended by the scheduler: its nodes do no work".to_string()),
            ),
            Some((JobStateView::Unknown, _)) | None => (rec_state, !gcs_live, None),
        }
    };

    match &obs.jobs {
        JobsObservation::Failed(e) => notes.push(format!(
            "could not ask the {} scheduler about job {}: {e}",
            record.scheduler, record.job_id
        )),
        JobsObservation::NotAsked if !rec_state.is_over() => notes.push(format!(
            "the {} scheduler was not asked about job {}",
            record.scheduler, record.job_id
        )),
        _ => {}
    }
    if state.is_over() {
        notes.push(format!(
            "last known state, from the record written at {}",
            format_unix(record.updated_unix)
        ));
    }

    // Nodes: live from the GCS while the cluster may be up, else the record's last known.
    let (nodes, nodes_source, pending_demand) = match &obs.gcs {
        GcsObservation::Live(gcs) if !state.is_over() => (
            gcs.node_states
                .iter()
                .map(|n| node_from_gcs(n, record))
                .collect::<Vec<_>>(),
            NodesSource::Gcs,
            Some(demand(gcs)),
        ),
        _ if !record.nodes.is_empty() => (
            record.nodes.iter().map(node_from_record).collect(),
            NodesSource::Record,
            None,
        ),
        _ => (vec![], NodesSource::None, None),
    };
    let gcs_view = match &obs.gcs {
        GcsObservation::NotAsked => GcsView {
            address: record.gcs_address.clone(),
            status: GcsStatus::NotAsked,
            error: None,
        },
        GcsObservation::Live(_) => GcsView {
            address: record.gcs_address.clone(),
            status: GcsStatus::Live,
            error: None,
        },
        GcsObservation::Failed(e) => {
            notes.push(format!(
                "the GCS did not answer ({e}); the nodes shown are the record's last known"
            ));
            GcsView {
                address: record.gcs_address.clone(),
                status: GcsStatus::Unreachable,
                error: Some(e.clone()),
            }
        }
    };
    let nodes_joined = match nodes_source {
        NodesSource::Gcs => nodes
            .iter()
            .filter(|n| n.status != NodeStatusView::Dead)
            .count() as u32,
        _ => record.nodes_joined,
    };
    let dead = nodes
        .iter()
        .filter(|n| n.status == NodeStatusView::Dead)
        .count();
    if dead > 0 {
        notes.push(format!(
            "{dead} node(s) dead; their resources are left out of the totals"
        ));
    }
    let totals = totals(&nodes);

    ClusterView {
        name: record.name.clone(),
        scheduler: record.scheduler.clone(),
        job_id: record.job_id.clone(),
        state,
        last_known,
        record_state: rec_state,
        state_reason,
        message: record.message.clone().filter(|m| !m.is_empty()),
        created_unix: record.created_unix,
        updated_unix: record.updated_unix,
        age_s: obs.now_unix.saturating_sub(record.created_unix),
        walltime_left_s: if state.is_over() {
            None
        } else {
            head_time_left(record, &obs.jobs)
        },
        expected_start,
        nodes_expected: record.expected_nodes,
        nodes_joined,
        nodes_source,
        totals,
        nodes,
        pending_demand,
        jobs,
        gcs: gcs_view,
        ray_client_address: record
            .client_server_address
            .as_deref()
            .map(super::reach::ray_client_url),
        dashboard_url: record.dashboard_url.clone(),
        token_path: record.token_path.as_ref().map(|p| p.display().to_string()),
        metrics_address: record.metrics_address.clone(),
        job_output: record.job_output.as_ref().map(|p| p.display().to_string()),
        notes,
    }
}

/// The record node this GCS node is: by Ray node id, else instance id, else a unique address.
fn match_record<'a>(n: &NodeState, record: &'a ClusterRecord) -> Option<&'a NodeRecord> {
    let id = node_id_hex(&n.node_id);
    record
        .nodes
        .iter()
        .find(|r| {
            r.node_id
                .as_deref()
                .is_some_and(|rid| rid.eq_ignore_ascii_case(&id))
        })
        .or_else(|| {
            (!n.instance_id.is_empty())
                .then(|| record.nodes.iter().find(|r| r.instance_id == n.instance_id))
                .flatten()
        })
        .or_else(|| {
            let mut same = record
                .nodes
                .iter()
                .filter(|r| r.address == n.node_ip_address);
            match (same.next(), same.next()) {
                (Some(r), None) => Some(r),
                _ => None,
            }
        })
}

fn resource(map: &std::collections::HashMap<String, f64>, key: &str) -> f64 {
    map.get(key).copied().unwrap_or(0.0)
}

fn node_from_gcs(n: &NodeState, record: &ClusterRecord) -> NodeView {
    let matched = match_record(n, record);
    let status = match n.status() {
        NodeStatus::Running => NodeStatusView::Running,
        NodeStatus::Idle => NodeStatusView::Idle,
        NodeStatus::Draining => NodeStatusView::Draining,
        NodeStatus::Dead => NodeStatusView::Dead,
        NodeStatus::Unspecified => NodeStatusView::Unknown,
    };
    let (t, a) = (&n.total_resources, &n.available_resources);
    NodeView {
        name: matched.map(|r| r.node_name.clone()),
        address: if n.node_ip_address.is_empty() {
            matched.map(|r| r.address.clone()).unwrap_or_default()
        } else {
            n.node_ip_address.clone()
        },
        instance_id: if n.instance_id.is_empty() {
            matched.map(|r| r.instance_id.clone()).unwrap_or_default()
        } else {
            n.instance_id.clone()
        },
        node_id: Some(node_id_hex(&n.node_id)).filter(|s| !s.is_empty()),
        node_type: Some(n.ray_node_type_name.clone()).filter(|s| !s.is_empty()),
        is_head: t.contains_key("node:__internal_head__") || matched.is_some_and(|r| r.rank == 0),
        status,
        idle_s: (status == NodeStatusView::Idle).then(|| (n.idle_duration_ms.max(0) / 1000) as u64),
        cpus_total: resource(t, "CPU"),
        cpus_available: Some(resource(a, "CPU")),
        gpus_total: resource(t, "GPU"),
        gpus_available: Some(resource(a, "GPU")),
        memory_total_bytes: resource(t, "memory").max(0.0) as u64,
        memory_available_bytes: Some(resource(a, "memory").max(0.0) as u64),
    }
}

fn node_from_record(r: &NodeRecord) -> NodeView {
    NodeView {
        name: Some(r.node_name.clone()),
        address: r.address.clone(),
        instance_id: r.instance_id.clone(),
        node_id: r.node_id.clone().filter(|s| !s.is_empty()),
        node_type: None,
        is_head: r.rank == 0,
        status: NodeStatusView::Unknown,
        idle_s: None,
        cpus_total: r.cpus as f64,
        cpus_available: None,
        gpus_total: r.gpus as f64,
        gpus_available: None,
        memory_total_bytes: r.memory_bytes,
        memory_available_bytes: None,
    }
}

fn totals(nodes: &[NodeView]) -> Totals {
    let alive: Vec<&NodeView> = nodes
        .iter()
        .filter(|n| n.status != NodeStatusView::Dead)
        .collect();
    let used = |total: fn(&NodeView) -> f64, avail: fn(&NodeView) -> Option<f64>| {
        alive
            .iter()
            .map(|n| avail(n).map(|a| (total(n) - a).max(0.0)))
            .sum::<Option<f64>>()
    };
    Totals {
        cpus_total: alive.iter().map(|n| n.cpus_total).sum(),
        cpus_used: used(|n| n.cpus_total, |n| n.cpus_available),
        gpus_total: alive.iter().map(|n| n.gpus_total).sum(),
        gpus_used: used(|n| n.gpus_total, |n| n.gpus_available),
        memory_total_bytes: alive.iter().map(|n| n.memory_total_bytes).sum(),
        memory_used_bytes: alive
            .iter()
            .map(|n| {
                n.memory_available_bytes
                    .map(|a| n.memory_total_bytes.saturating_sub(a))
            })
            .sum(),
    }
}

fn shape(r: &ResourceRequest) -> BTreeMap<String, f64> {
    r.resources_bundle
        .iter()
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

fn by_count(kind: DemandKind, r: &ResourceRequestByCount) -> DemandView {
    DemandView {
        kind,
        bundles: vec![r.request.as_ref().map(shape).unwrap_or_default()],
        count: r.count.max(0) as u64,
        details: None,
    }
}

fn gang(g: &GangResourceRequest) -> DemandView {
    // As Ray's own autoscaler reads it: the first bundle selector, else the legacy list.
    let requests = match g.bundle_selectors.first() {
        Some(sel) if !sel.resource_requests.is_empty() => &sel.resource_requests,
        _ => &g.requests,
    };
    DemandView {
        kind: DemandKind::PlacementGroup,
        bundles: requests.iter().map(shape).collect(),
        count: 1,
        details: Some(g.details.clone()).filter(|d| !d.is_empty()),
    }
}

/// The pending demand in a GCS cluster resource state, in Ray's order.
pub fn demand(gcs: &ClusterResourceState) -> Vec<DemandView> {
    let mut out: Vec<DemandView> = gcs
        .pending_resource_requests
        .iter()
        .filter(|r| r.count > 0)
        .map(|r| by_count(DemandKind::Tasks, r))
        .collect();
    out.extend(gcs.pending_gang_resource_requests.iter().map(gang));
    out.extend(
        gcs.cluster_resource_constraints
            .iter()
            .flat_map(|c| c.resource_requests.iter())
            .filter(|r| r.count > 0)
            .map(|r| by_count(DemandKind::Constraint, r)),
    );
    out
}

/// A Unix time as `YYYY-MM-DDTHH:MM:SSZ` (UTC).
/// What `status` says while the head's autoscaler cannot get answers from the scheduler.
fn outage_note(o: &SchedulerOutage) -> String {
    format!(
        "scheduler outage: `{}` failed {} time(s) in a row since {}: {}; the autoscaler asks \
         again at {} (the cluster itself keeps running)",
        o.command,
        o.failures,
        format_unix(o.since_unix),
        o.error,
        format_unix(o.retry_unix)
    )
}

pub fn format_unix(t: u64) -> String {
    let days = (t / 86_400) as i64;
    let secs = t % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::proto::ray::autoscaler::{BundleSelector, ClusterResourceConstraint};
    use crate::registry::SCHEMA_VERSION;

    pub(crate) const NOW: u64 = 1_700_000_600;

    pub(crate) fn node_id(b: u8) -> Vec<u8> {
        vec![b; 28]
    }

    pub(crate) fn record(state: ClusterState) -> ClusterRecord {
        ClusterRecord {
            schema: SCHEMA_VERSION,
            name: "c1".into(),
            scheduler: "local".into(),
            job_id: "42".into(),
            state,
            message: None,
            created_unix: 1_700_000_000,
            updated_unix: 1_700_000_100,
            expected_nodes: 2,
            head_node: "n1".into(),
            head_address: Some("10.0.0.1".into()),
            gcs_address: Some("10.0.0.1:6379".into()),
            dashboard_url: Some("http://10.0.0.1:8265".into()),
            client_server_address: Some("10.0.0.1:10001".into()),
            control_address: None,
            auth: "token".into(),
            token_path: None,
            nodes: vec![
                NodeRecord {
                    rank: 0,
                    node_name: "n1".into(),
                    address: "10.0.0.1".into(),
                    instance_id: "42.0".into(),
                    cpus: 4,
                    gpus: 1,
                    memory_bytes: 8 << 30,
                    temp_dir: "/tmp/rh-1-0".into(),
                    node_id: Some(node_id_hex(&node_id(1))),
                    ports: Default::default(),
                },
                NodeRecord {
                    rank: 1,
                    node_name: "n2".into(),
                    address: "10.0.0.2".into(),
                    instance_id: "42.1".into(),
                    cpus: 4,
                    gpus: 0,
                    memory_bytes: 8 << 30,
                    temp_dir: "/tmp/rh-1-1".into(),
                    node_id: None,
                    ports: Default::default(),
                },
            ],
            nodes_joined: 2,
            metrics_address: Some("10.0.0.1:9090".into()),
            job_output: None,
            worker_jobs: vec![],
            autoscaler_notes: vec![],
            scheduler_outage: None,
            scheduler_settings: Default::default(),
        }
    }

    fn job(state: JobState) -> JobInfo {
        JobInfo {
            id: "42".into(),
            name: "ray-hpc-c1".into(),
            state,
            reason: None,
            start_time: None,
            time_left_s: None,
        }
    }

    fn running() -> JobsObservation {
        JobsObservation::Answered(vec![job(JobState::Running)])
    }

    fn gcs_node(
        id: u8,
        instance: &str,
        ip: &str,
        status: NodeStatus,
        cpu: (f64, f64),
    ) -> NodeState {
        NodeState {
            node_id: node_id(id),
            instance_id: instance.into(),
            node_ip_address: ip.into(),
            status: status as i32,
            total_resources: [
                ("CPU".to_string(), cpu.0),
                ("memory".to_string(), 4e9),
                ("GPU".to_string(), 1.0),
            ]
            .into(),
            available_resources: [
                ("CPU".to_string(), cpu.1),
                ("memory".to_string(), 3e9),
                ("GPU".to_string(), 1.0),
            ]
            .into(),
            idle_duration_ms: 5_500,
            ..Default::default()
        }
    }

    fn bundle(pairs: &[(&str, f64)]) -> ResourceRequest {
        ResourceRequest {
            resources_bundle: pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            ..Default::default()
        }
    }

    pub(crate) fn live_state() -> ClusterResourceState {
        let mut head = gcs_node(1, "42.0", "10.0.0.1", NodeStatus::Running, (4.0, 1.0));
        head.total_resources
            .insert("node:__internal_head__".into(), 1.0);
        ClusterResourceState {
            node_states: vec![
                head,
                gcs_node(2, "42.1", "10.0.0.2", NodeStatus::Idle, (4.0, 4.0)),
            ],
            pending_resource_requests: vec![ResourceRequestByCount {
                request: Some(bundle(&[("CPU", 1.0)])),
                count: 12,
            }],
            pending_gang_resource_requests: vec![GangResourceRequest {
                requests: vec![bundle(&[("GPU", 1.0)])],
                details: "PACK|pg1".into(),
                bundle_selectors: vec![BundleSelector {
                    resource_requests: vec![bundle(&[("CPU", 2.0)]), bundle(&[("CPU", 2.0)])],
                    locality_requirement: None,
                }],
            }],
            cluster_resource_constraints: vec![ClusterResourceConstraint {
                resource_requests: vec![ResourceRequestByCount {
                    request: Some(bundle(&[("CPU", 8.0)])),
                    count: 2,
                }],
            }],
            ..Default::default()
        }
    }

    fn view(rec: &ClusterRecord, gcs: GcsObservation, jobs: JobsObservation) -> ClusterView {
        build(&Observation {
            record: rec,
            gcs,
            jobs,
            now_unix: NOW,
        })
    }

    #[test]
    fn walltime_left_is_the_head_jobs_while_the_cluster_lives() {
        let mut j = job(JobState::Running);
        j.time_left_s = Some(600);
        let rec = record(ClusterState::Ready);
        let jobs = || JobsObservation::Answered(vec![j.clone()]);
        assert_eq!(
            view(&rec, GcsObservation::NotAsked, jobs()).walltime_left_s,
            Some(600)
        );
        let ended = record(ClusterState::Ended);
        assert_eq!(
            view(&ended, GcsObservation::NotAsked, jobs()).walltime_left_s,
            None
        );
        assert_eq!(
            view(&rec, GcsObservation::NotAsked, running()).walltime_left_s,
            None
        );
    }

    /// One row per case: what was observed and what must be shown.
    struct Case {
        what: &'static str,
        record: ClusterState,
        jobs: JobsObservation,
        gcs: GcsObservation,
        state: ClusterState,
        last_known: bool,
        source: NodesSource,
        joined: u32,
        reason_has: Option<&'static str>,
        note_has: Option<&'static str>,
        demand: Option<usize>,
    }

    #[test]
    fn states_nodes_and_notes_follow_what_was_observed() {
        let pending = {
            let mut j = job(JobState::Pending);
            j.reason = Some("Priority".into());
            j.start_time = Some("2030-01-01T00:00:00".into());
            JobsObservation::Answered(vec![j])
        };
        let dead_node = {
            let mut s = live_state();
            s.node_states[1].status = NodeStatus::Dead as i32;
            s
        };
        let cases = vec![
            Case {
                what: "queued: the scheduler's reason, no nodes",
                record: ClusterState::Queued,
                jobs: pending,
                gcs: GcsObservation::NotAsked,
                state: ClusterState::Queued,
                last_known: false,
                source: NodesSource::Record,
                joined: 2,
                reason_has: Some("Priority"),
                note_has: None,
                demand: None,
            },
            Case {
                what: "queued record, job now running: starting",
                record: ClusterState::Queued,
                jobs: running(),
                gcs: GcsObservation::NotAsked,
                state: ClusterState::Starting,
                last_known: false,
                source: NodesSource::Record,
                joined: 2,
                reason_has: Some("Ray not started"),
                note_has: None,
                demand: None,
            },
            Case {
                what: "starting, GCS live with one of two nodes",
                record: ClusterState::Starting,
                jobs: running(),
                gcs: GcsObservation::Live(ClusterResourceState {
                    node_states: vec![live_state().node_states[0].clone()],
                    ..Default::default()
                }),
                state: ClusterState::Starting,
                last_known: false,
                source: NodesSource::Gcs,
                joined: 1,
                reason_has: None,
                note_has: None,
                demand: Some(0),
            },
            Case {
                what: "ready and live",
                record: ClusterState::Ready,
                jobs: running(),
                gcs: GcsObservation::Live(live_state()),
                state: ClusterState::Ready,
                last_known: false,
                source: NodesSource::Gcs,
                joined: 2,
                reason_has: None,
                note_has: None,
                demand: Some(3),
            },
            Case {
                what: "ended: last known, from the record",
                record: ClusterState::Ended,
                jobs: JobsObservation::Answered(vec![]),
                gcs: GcsObservation::NotAsked,
                state: ClusterState::Ended,
                last_known: true,
                source: NodesSource::Record,
                joined: 2,
                reason_has: None,
                note_has: Some("last known state"),
                demand: None,
            },
            Case {
                what: "ready record, job gone: ended",
                record: ClusterState::Ready,
                jobs: JobsObservation::Answered(vec![]),
                gcs: GcsObservation::NotAsked,
                state: ClusterState::Ended,
                last_known: true,
                source: NodesSource::Record,
                joined: 2,
                reason_has: Some("job gone; last known state READY"),
                note_has: Some("last known state"),
                demand: None,
            },
            Case {
                what: "starting record, job timed out: failed",
                record: ClusterState::Starting,
                jobs: JobsObservation::Answered(vec![job(JobState::Ended(EndReason::Timeout))]),
                gcs: GcsObservation::NotAsked,
                state: ClusterState::Failed,
                last_known: true,
                source: NodesSource::Record,
                joined: 2,
                reason_has: Some("job ended (timeout)"),
                note_has: None,
                demand: None,
            },
            Case {
                what: "ready, GCS unreachable: the record's nodes, said so",
                record: ClusterState::Ready,
                jobs: running(),
                gcs: GcsObservation::Failed("connection refused".into()),
                state: ClusterState::Ready,
                last_known: false,
                source: NodesSource::Record,
                joined: 2,
                reason_has: None,
                note_has: Some("connection refused"),
                demand: None,
            },
            Case {
                what: "ready, scheduler and GCS both silent: last known",
                record: ClusterState::Ready,
                jobs: JobsObservation::Failed("query: timed out".into()),
                gcs: GcsObservation::Failed("timeout".into()),
                state: ClusterState::Ready,
                last_known: true,
                source: NodesSource::Record,
                joined: 2,
                reason_has: None,
                note_has: Some("query: timed out"),
                demand: None,
            },
            Case {
                what: "scheduler query failed but the GCS is live: confirmed",
                record: ClusterState::Ready,
                jobs: JobsObservation::Failed("unsupported".into()),
                gcs: GcsObservation::Live(live_state()),
                state: ClusterState::Ready,
                last_known: false,
                source: NodesSource::Gcs,
                joined: 2,
                reason_has: None,
                note_has: Some("unsupported"),
                demand: Some(3),
            },
            Case {
                what: "a dead node is not joined",
                record: ClusterState::Ready,
                jobs: running(),
                gcs: GcsObservation::Live(dead_node),
                state: ClusterState::Ready,
                last_known: false,
                source: NodesSource::Gcs,
                joined: 1,
                reason_has: None,
                note_has: Some("1 node(s) dead"),
                demand: Some(3),
            },
        ];
        for c in cases {
            let rec = record(c.record);
            let v = view(&rec, c.gcs, c.jobs);
            assert_eq!(v.state, c.state, "{}: state", c.what);
            assert_eq!(v.last_known, c.last_known, "{}: last_known", c.what);
            assert_eq!(v.record_state, c.record, "{}", c.what);
            assert_eq!(v.nodes_source, c.source, "{}: source", c.what);
            assert_eq!(v.nodes_joined, c.joined, "{}: joined", c.what);
            assert_eq!(v.nodes_expected, 2, "{}", c.what);
            assert_eq!(v.age_s, 600, "{}", c.what);
            match c.reason_has {
                Some(s) => assert!(
                    v.state_reason.as_deref().is_some_and(|r| r.contains(s)),
                    "{}: reason {:?}",
                    c.what,
                    v.state_reason
                ),
                None => assert_eq!(v.state_reason, None, "{}", c.what),
            }
            if let Some(s) = c.note_has {
                assert!(
                    v.notes.iter().any(|n| n.contains(s)),
                    "{}: notes {:?}",
                    c.what,
                    v.notes
                );
            }
            assert_eq!(
                v.pending_demand.as_ref().map(|d| d.len()),
                c.demand,
                "{}: demand",
                c.what
            );
        }
    }

    #[test]
    fn queued_clusters_show_the_expected_start() {
        let mut rec = record(ClusterState::Queued);
        rec.nodes.clear();
        rec.nodes_joined = 0;
        rec.gcs_address = None;
        let mut j = job(JobState::Pending);
        j.reason = Some("Resources".into());
        j.start_time = Some("2030-01-01T00:00:00".into());
        let jobs = JobsObservation::Answered(vec![j]);
        assert!(!should_ask_gcs(&rec, &jobs));
        let v = view(&rec, GcsObservation::NotAsked, jobs);
        assert_eq!(v.expected_start.as_deref(), Some("2030-01-01T00:00:00"));
        assert_eq!(v.nodes_source, NodesSource::None);
        assert!(v.nodes.is_empty());
        assert_eq!(v.jobs.len(), 1);
        assert_eq!(v.jobs[0].state, JobStateView::Pending);
        assert_eq!(v.jobs[0].reason.as_deref(), Some("Resources"));
        assert_eq!(v.totals.cpus_total, 0.0);
    }

    #[test]
    fn live_nodes_match_the_record_and_sum_up() {
        let rec = record(ClusterState::Ready);
        let v = view(&rec, GcsObservation::Live(live_state()), running());
        assert_eq!(v.nodes.len(), 2);
        let head = &v.nodes[0];
        // By node id, and the second by instance id (its record has no node id).
        assert_eq!(head.name.as_deref(), Some("n1"));
        assert_eq!(v.nodes[1].name.as_deref(), Some("n2"));
        assert!(head.is_head && !v.nodes[1].is_head);
        assert_eq!(head.status, NodeStatusView::Running);
        assert_eq!(v.nodes[1].status, NodeStatusView::Idle);
        assert_eq!(v.nodes[1].idle_s, Some(5));
        assert_eq!(head.idle_s, None);
        assert_eq!(head.node_id.as_deref(), Some(&*"01".repeat(28)));
        assert_eq!(head.cpus_available, Some(1.0));
        assert_eq!(v.totals.cpus_total, 8.0);
        assert_eq!(v.totals.cpus_used, Some(3.0));
        assert_eq!(v.totals.gpus_total, 2.0);
        assert_eq!(v.totals.gpus_used, Some(0.0));
        assert_eq!(v.totals.memory_total_bytes, 8_000_000_000);
        assert_eq!(v.totals.memory_used_bytes, Some(2_000_000_000));
        assert_eq!(v.gcs.status, GcsStatus::Live);
        assert_eq!(v.jobs[0].state, JobStateView::Running);
        assert_eq!(v.jobs[0].name.as_deref(), Some("ray-hpc-c1"));
        assert!(v.notes.is_empty(), "{:?}", v.notes);
    }

    #[test]
    fn record_nodes_have_unknown_availability() {
        let rec = record(ClusterState::Ended);
        let v = view(&rec, GcsObservation::NotAsked, JobsObservation::NotAsked);
        assert!(v.nodes.iter().all(|n| n.status == NodeStatusView::Unknown));
        assert_eq!(v.totals.cpus_total, 8.0);
        assert_eq!(v.totals.cpus_used, None);
        assert_eq!(v.totals.memory_used_bytes, None);
        // An ended cluster's jobs are not worth a note when not asked.
        assert!(!v.notes.iter().any(|n| n.contains("not asked")));
        assert_eq!(v.jobs[0].state, JobStateView::Unknown);
    }

    #[test]
    fn pending_demand_keeps_shapes_counts_and_kinds() {
        let d = demand(&live_state());
        assert_eq!(d.len(), 3);
        assert_eq!(d[0].kind, DemandKind::Tasks);
        assert_eq!(d[0].count, 12);
        assert_eq!(
            d[0].bundles,
            vec![BTreeMap::from([("CPU".to_string(), 1.0)])]
        );
        // The bundle selector wins over the deprecated list, as in Ray's autoscaler.
        assert_eq!(d[1].kind, DemandKind::PlacementGroup);
        assert_eq!(d[1].bundles.len(), 2);
        assert_eq!(d[1].bundles[0]["CPU"], 2.0);
        assert_eq!(d[1].details.as_deref(), Some("PACK|pg1"));
        assert_eq!(d[2].kind, DemandKind::Constraint);
        assert_eq!(d[2].count, 2);
        // Legacy gangs without selectors still show.
        let legacy = GangResourceRequest {
            requests: vec![bundle(&[("GPU", 1.0)])],
            ..Default::default()
        };
        assert_eq!(gang(&legacy).bundles[0]["GPU"], 1.0);
    }

    #[test]
    fn asking_the_gcs_only_when_the_cluster_may_be_up() {
        let ready = record(ClusterState::Ready);
        assert!(should_ask_gcs(&ready, &running()));
        assert!(should_ask_gcs(
            &ready,
            &JobsObservation::Failed("unsupported".into())
        ));
        assert!(!should_ask_gcs(&ready, &JobsObservation::Answered(vec![])));
        assert!(!should_ask_gcs(
            &ready,
            &JobsObservation::Answered(vec![job(JobState::Ended(EndReason::Cancelled))])
        ));
        assert!(!should_ask_gcs(&record(ClusterState::Ended), &running()));
        let mut no_gcs = record(ClusterState::Starting);
        no_gcs.gcs_address = None;
        assert!(!should_ask_gcs(&no_gcs, &running()));
    }

    #[test]
    fn a_scheduler_outage_is_a_note_with_the_command_and_its_error() {
        let mut rec = record(ClusterState::Ready);
        rec.scheduler_outage = Some(SchedulerOutage {
            command: "jobs-query -j 7".into(),
            error: "did not answer within 30s".into(),
            since_unix: 1_800_000_000,
            failures: 3,
            retry_unix: 1_800_000_120,
        });
        let view = |rec: &ClusterRecord| {
            build(&Observation {
                record: rec,
                gcs: GcsObservation::NotAsked,
                jobs: running(),
                now_unix: 1_800_000_100,
            })
        };
        let notes = view(&rec).notes.join("\n");
        assert!(
            notes.contains("scheduler outage: `jobs-query -j 7` failed 3 time(s)")
                && notes.contains("did not answer within 30s")
                && notes.contains(&format_unix(1_800_000_120)),
            "{notes}"
        );
        // An ended cluster's last outage is history, not news.
        rec.state = ClusterState::Ended;
        assert!(!view(&rec).notes.join("\n").contains("outage"));
    }

    #[test]
    fn ended_jobs_map_to_ended_or_failed() {
        for clean in [EndReason::Completed, EndReason::Cancelled] {
            assert_eq!(state_of_ended_job(Some(&clean)), ClusterState::Ended);
        }
        for how in [
            EndReason::Failed,
            EndReason::Timeout,
            EndReason::NodeFailure,
            EndReason::OutOfMemory,
            EndReason::Preempted,
            EndReason::Other("BOOT_FAIL".into()),
        ] {
            assert_eq!(
                state_of_ended_job(Some(&how)),
                ClusterState::Failed,
                "{how}"
            );
        }
        assert_eq!(state_of_ended_job(None), ClusterState::Failed);
    }

    #[test]
    fn unix_times_format_as_utc() {
        assert_eq!(format_unix(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_unix(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_unix(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
