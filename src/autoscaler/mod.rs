//! The autoscaler: Ray's pending demand becomes scheduler jobs, idle worker nodes go back.
//!
//! A level-triggered reconcile loop, like a Kubernetes controller: observe (the GCS and the
//! scheduler), [`plan`] (pure), act (idempotently), every poll.
//!
//! - [`planner`]: the pure planner, the types it reads and writes, and the per-type backoff
//!   bookkeeping ([`TypeHealth`]).
//! - [`reconciler`]: the loop around the planner in the head agent: observe, plan, act, report.
//! - [`demand`]: reads Ray's `ClusterResourceState` into the planner's nodes and demands
//!   ([`observe_gcs`]).

pub mod demand;
pub mod planner;
pub mod reconciler;

pub use demand::observe_gcs;
pub use planner::{
    Cancel, Demand, Drain, JobPhase, NodeStatus, NodeTypeSpec, ObservedNode, Plan, PlanInput,
    Resources, Settings, Strategy, Submit, TypeHealth, Waiting, WorkerJob, plan,
};
