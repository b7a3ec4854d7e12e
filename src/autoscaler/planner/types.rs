//! The planner's public types: what it reads ([`PlanInput`]) and what it gives ([`Plan`]).

use std::collections::BTreeMap;

/// Ray resources by name: `CPU`, `GPU`, `memory` (bytes), custom names.
pub type Resources = BTreeMap<String, f64>;

/// One configured kind of worker node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeTypeSpec {
    /// The type's name (`RAY_NODE_TYPE_NAME` of its nodes).
    pub name: String,
    /// What one node of this type announces to Ray.
    pub resources: Resources,
    /// Jobs of this type kept alive even when idle.
    pub min_workers: u32,
    /// The most jobs of this type (not ended) at once.
    pub max_workers: u32,
}

/// The autoscaler's knobs, in the planner's units.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The most worker jobs (not ended) of all types together.
    pub max_workers: u32,
    /// An idle worker node is drained after being idle for longer than this.
    pub idle_timeout_ms: u64,
    /// At most `max(5, ceil(upscaling_speed * joined workers))` jobs in flight at once.
    pub upscaling_speed: f64,
    /// At most this many jobs in flight (queued or started, not yet joined) at once; 0 submits
    /// nothing.
    pub max_pending_jobs: u32,
    /// The wait after the first refused submission of a type.
    pub backoff_initial_ms: u64,
    /// The longest wait; the wait doubles per consecutive refusal up to this.
    pub backoff_max_ms: u64,
    /// After this many consecutive refusals a type is given up (0: never).
    pub max_consecutive_failures: u32,
}

/// A Ray node's state, as the GCS reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeStatus {
    /// Alive and running work (or Ray did not say).
    Running,
    /// Alive with nothing to do for `idle_ms`.
    Idle,
    /// Alive, taking no new work.
    Draining,
    Dead,
}

/// A Ray node in the GCS.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedNode {
    /// Ray's NodeID, hex.
    pub node_id: String,
    /// `RAY_CLOUD_INSTANCE_ID`: the scheduler job id for autoscaled workers.
    pub instance_id: String,
    /// `"head"`, or a node type's name; anything else (the allocation's own nodes) is fixed.
    pub node_type: String,
    pub total: Resources,
    pub available: Resources,
    pub status: NodeStatus,
    /// How long the node has been idle (meaningful for [`NodeStatus::Idle`]).
    pub idle_ms: u64,
}

/// A placement group's strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Strategy {
    Pack,
    Spread,
    StrictPack,
    StrictSpread,
}

/// Pending demand, as Ray reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum Demand {
    /// Tasks and actors waiting for resources: `count` bundles of this shape.
    Tasks { bundle: Resources, count: u64 },
    /// A placement group waiting to be placed: all its bundles together.
    Gang {
        bundles: Vec<Resources>,
        strategy: Strategy,
        /// Ray's description (`<pg id>:<STRATEGY>|<STATE>`).
        details: String,
    },
    /// `ray.autoscaler.sdk.request_resources`: the cluster's total capacity must hold `count`
    /// bundles of this shape.
    Constraint { bundle: Resources, count: u64 },
}

/// Where a worker job is, as the scheduler and the GCS tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobPhase {
    /// Queued by the scheduler.
    Pending,
    /// Running, its Ray node not (yet) in the GCS.
    Running,
    /// Its Ray node is in the GCS.
    Joined,
    /// Stopped by the scheduler (its processes are stopped): no capacity while it lasts, but
    /// it still counts against the limits, since it may resume.
    Suspended,
    /// Over (any way).
    Ended,
}

/// One autoscaled worker job of this cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerJob {
    pub job_id: String,
    pub node_type: String,
    pub phase: JobPhase,
    pub submitted_ms: u64,
}

/// A node type's record of refused submissions (the rules that keep it are in `limits`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TypeHealth {
    pub consecutive_failures: u32,
    /// No submission of this type before this time.
    pub retry_after_ms: u64,
    /// The scheduler's message for the last refusal.
    pub last_error: Option<String>,
    /// Set after `max_consecutive_failures` refusals; the caller clears it when the config or
    /// the demand changes.
    pub gave_up: bool,
}

/// Everything [`plan`](super::plan) looks at.
#[derive(Debug, Clone, Copy)]
pub struct PlanInput<'a> {
    pub nodes: &'a [ObservedNode],
    pub demands: &'a [Demand],
    pub jobs: &'a [WorkerJob],
    pub types: &'a [NodeTypeSpec],
    pub settings: &'a Settings,
    /// By node type name; a missing type is healthy.
    pub health: &'a BTreeMap<String, TypeHealth>,
    pub now_ms: u64,
}

/// What to do, and what to report.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Jobs to submit, in the config's type order.
    pub submit: Vec<Submit>,
    /// Jobs to cancel: those whose Ray node died (in job order), then queued jobs no longer
    /// needed, of unconfigured types or over `max_workers` (newest first).
    pub cancel: Vec<Cancel>,
    /// Idle nodes to drain and then cancel, most idle first.
    pub drain: Vec<Drain>,
    /// Demand no node type and no alive node can ever hold: reported, never submitted.
    pub infeasible: Vec<Demand>,
    /// Demand that could be met but is held back (limits, backoff, busy nodes), and why.
    pub waiting: Vec<Waiting>,
}

/// New jobs of one node type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submit {
    pub node_type: String,
    pub count: u32,
}

/// A job to cancel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cancel {
    pub job_id: String,
    pub why: String,
}

/// An idle node to drain; once drained, its job is cancelled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drain {
    pub node_id: String,
    pub job_id: String,
    pub why: String,
}

/// Demand held back: for tasks and constraints, `count` is the bundles held back for `why`
/// (one demand may wait for several reasons, each its own entry).
#[derive(Debug, Clone, PartialEq)]
pub struct Waiting {
    pub demand: Demand,
    pub why: String,
}

impl Plan {
    /// Nothing to do (reports aside).
    pub fn is_idle(&self) -> bool {
        self.submit.is_empty() && self.cancel.is_empty() && self.drain.is_empty()
    }
}
