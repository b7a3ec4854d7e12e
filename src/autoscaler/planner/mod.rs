//! The autoscaler's planner: a pure function from what was observed (Ray's nodes and pending
//! demand, this cluster's scheduler jobs, the node types, the settings, each type's submission
//! health, the time) to what to do (submit, cancel, drain) and what to report (infeasible and
//! waiting demand).
//!
//! No I/O, no clock, no randomness: the same input always gives the same [`Plan`], and a plan that
//! was carried out (its jobs now `Pending`) plans nothing more for the same demand. The reconciler
//! observes, calls [`plan`], acts, and calls it again next poll.
//!
//! [`plan`] is a sequence of steps, each in the module that owns its rules:
//! - `cluster`: the jobs and the nodes looked at together (a job is joined once its node is in
//!   the GCS, whatever the scheduler's phase says), and the nodes that may take work;
//! - `resources`: resources in Ray's fixed point, as vectors over the names demand asks for;
//! - `merge`: pending demand merged by shape; demand nothing can ever hold is infeasible;
//! - `packing`: the bins (free capacity, capacity already asked for, new nodes) and how
//!   demand is packed onto them;
//! - `passes`: after `min_workers`, constraints on total capacity, then placement groups
//!   (`placement_groups`) and tasks on available capacity;
//! - `limits`: `max_workers`, `min_workers`, the upscaling caps and backoff, and why demand
//!   waits for them;
//! - `waiting`: the demand held back, and why;
//! - `scale_down`: queued jobs to cancel and idle nodes to drain.

mod cluster;
mod limits;
mod merge;
mod packing;
mod passes;
mod placement_groups;
mod resources;
mod scale_down;
mod types;
mod waiting;

use cluster::Cluster;
use limits::{Room, UpscalingCap};
use merge::MergedDemand;
use packing::{Fixed, NodeCapacity, Packer, existing_bins};
use resources::{Capacity, Universe};
use scale_down::Needed;
pub use types::{
    Cancel, Demand, Drain, JobPhase, NodeStatus, NodeTypeSpec, ObservedNode, Plan, PlanInput,
    Resources, Settings, Strategy, Submit, TypeHealth, Waiting, WorkerJob,
};

/// Computes what to do. Pure and deterministic; the rules are in the modules of its steps (see
/// the module documentation).
pub fn plan(input: &PlanInput) -> Plan {
    let cluster = Cluster::observe(input);
    let universe = Universe::of(input.demands);
    let capacity = Capacity::new(&universe, input.types, input.nodes);
    let demand = MergedDemand::new(input, &universe, &capacity, &cluster.alive);
    let fixed = Fixed::new(input, &universe, &capacity, &demand.shapes);
    let room = Room::left(input, &cluster);
    let total_bins = existing_bins(&cluster, &capacity, &fixed, NodeCapacity::Total);
    let mut on_total = Packer::new(&fixed, total_bins, room.per_type, room.all, 0);
    limits::open_min_workers(&mut on_total, input.types, &cluster);
    let mut constraints_unmet = passes::constraints(&mut on_total, &demand);
    let available_bins = existing_bins(&cluster, &capacity, &fixed, NodeCapacity::Available);
    let placement = passes::groups_and_tasks(
        &available_bins,
        &on_total,
        &demand,
        input.demands.len(),
        cluster.alive.len(),
    );
    let cap = UpscalingCap::new(input.settings, &cluster);
    let launch = cap.launch(&placement.packer);
    cap.hold_back_constraints(&on_total, &mut constraints_unmet);
    let waiting = waiting::report(
        input.demands,
        &demand,
        &placement,
        constraints_unmet,
        &launch,
    );
    let needed = Needed::of(input, &[&on_total, &placement.packer]);
    let cancels = scale_down::cancel(input, &cluster, &needed);
    Plan {
        submit: launch.submissions(input.types),
        drain: scale_down::drain(input, &cluster, &needed, &cancels),
        cancel: cancels.list,
        infeasible: demand.infeasible,
        waiting,
    }
}

#[cfg(test)]
mod tests;
