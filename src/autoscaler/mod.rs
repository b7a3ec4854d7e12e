//! The autoscaler: Ray's pending demand becomes scheduler jobs, idle worker nodes go back.
//!
//! A level-triggered reconcile loop, like a Kubernetes controller: observe (the GCS and the
//! scheduler), [`plan`] (pure), act (idempotently), every poll.
//!
//! - [`planner`]: the pure planner, the types it reads and writes, and the per-type backoff
//!   bookkeeping ([`TypeHealth`]).
//! - [`reconciler`]: one round around the planner: observe, plan, act, report.
//! - [`controller`]: the rounds as a task of the head agent's, driven by GCS observations and
//!   talking to the head through channels; [`reach`] is its error policy towards the scheduler.
//! - [`demand`]: reads Ray's `ClusterResourceState` into the planner's nodes and demands
//!   ([`observe_gcs`]).

pub mod controller;
pub mod demand;
mod jobs;
pub mod planner;
pub mod reach;
pub mod reconciler;
mod report;
#[cfg(test)]
mod tests;

pub use demand::observe_gcs;
pub use planner::{
    Cancel, Demand, Drain, JobPhase, NodeStatus, NodeTypeSpec, ObservedNode, Plan, PlanInput,
    Resources, Settings, Strategy, Submit, TypeHealth, Waiting, WorkerJob, plan,
};
