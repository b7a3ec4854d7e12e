//! The placement passes, in priority order (which is also the order in which the upscaling caps
//! let new nodes through):
//! - `min_workers` ([`open_min_workers`](super::limits::open_min_workers));
//! - constraints (`request_resources`): their bundles are packed onto the *total* resources of
//!   alive nodes, pending jobs and the nodes above; what is missing is launched. Existing nodes
//!   that hold a constraint bundle are not drained;
//! - placement groups (see [`placement_groups`](super::placement_groups)), then tasks and
//!   actors, `count` bundles each, onto the *available* resources of alive nodes, pending jobs
//!   and the nodes above.

use std::collections::HashMap;

use super::merge::MergedDemand;
use super::packing::{Group, Origin, Packer};
use super::placement_groups::place_gangs;
use super::waiting::{Unplaced, unplaced};

/// Placement groups are also placed as Ray's scheduler places them (each scoring every bin)
/// only up to this many groups times alive nodes: 500 groups on 500 nodes.
const GANG_SCORING_BUDGET: usize = 250_000;

/// The constraints, on `p` (total capacity). Returns, per constraint item, the bundles that
/// got no node and why.
pub(super) fn constraints(p: &mut Packer, demand: &MergedDemand) -> Vec<Vec<Unplaced>> {
    let left = p.place_items(&demand.constraint_items());
    unplaced(p, &demand.constraints, left)
}

/// Placement groups and tasks, placed on available capacity.
pub(super) struct Placement<'a> {
    pub(super) packer: Packer<'a>,
    /// Per placement group input (by input index) that found no room: why.
    pub(super) gangs_unmet: HashMap<usize, String>,
    /// Per task item: the bundles that got no node, and why.
    pub(super) tasks_unmet: Vec<Vec<Unplaced>>,
}

/// Placement groups, then tasks, on the available capacity of `existing` (the bins there are)
/// and of the new nodes `on_total` opened for `min_workers` and the constraints. A few ways:
/// with the alive nodes in their order, busiest first (roughly the nodes Ray's scheduler
/// scores best), and the groups placed as Ray's scheduler places them (while there are few
/// enough groups times `alive_nodes`); the plan that places more, then opens fewer nodes, is
/// kept (the first on a tie). Units: placement group inputs are their input index, task items
/// come after all `demands` inputs.
pub(super) fn groups_and_tasks<'a>(
    existing: &[Group],
    on_total: &Packer<'a>,
    demand: &MergedDemand,
    demands: usize,
    alive_nodes: usize,
) -> Placement<'a> {
    let tasks = demand.task_items(demands as u32);
    let place = |busiest_first: bool, gangs_like_ray: bool| {
        let mut p = Packer::new(
            on_total.fx,
            bins(existing, on_total, busiest_first),
            on_total.type_room.clone(),
            on_total.global_room,
            on_total.next_ordinal,
        );
        let gangs_unmet = place_gangs(&mut p, &demand.gangs, gangs_like_ray);
        let tasks_left = p.place_items(&tasks);
        Way {
            packer: p,
            gangs_unmet,
            tasks_left,
        }
    };
    let mut best = place(false, false);
    let busiest = place(true, false);
    if busiest.key() < best.key() {
        best = busiest;
    }
    // Ray's way for the groups scores every bin for each group: only while that stays small.
    let gang_inputs: usize = demand.gangs.iter().map(|g| g.inputs.len()).sum();
    let ntypes = on_total.fx.types.len();
    if gang_inputs > 0 && gang_inputs.saturating_mul(alive_nodes + ntypes) <= GANG_SCORING_BUDGET {
        let like_ray = place(false, true);
        if like_ray.key() < best.key() {
            best = like_ray;
        }
    }
    Placement {
        tasks_unmet: unplaced(&best.packer, &demand.tasks, best.tasks_left),
        packer: best.packer,
        gangs_unmet: best.gangs_unmet,
    }
}

/// One way's plan for placement groups and tasks.
struct Way<'a> {
    packer: Packer<'a>,
    /// By placement group input, why it found no room.
    gangs_unmet: HashMap<usize, String>,
    /// Per task item, the bundles left.
    tasks_left: Vec<u64>,
}

impl Way<'_> {
    /// Lower is better: fewer placement groups without room, fewer bundles left, fewer new
    /// nodes.
    fn key(&self) -> (usize, u64, u64) {
        let left: u64 = self.tasks_left.iter().sum();
        (self.gangs_unmet.len(), left, self.packer.next_ordinal)
    }
}

/// The bins for demand on available capacity: `existing` (the alive nodes busiest first, if
/// asked), then the new nodes `on_total` opened, empty again.
fn bins(existing: &[Group], on_total: &Packer, busiest_first: bool) -> Vec<Group> {
    let mut groups = existing.to_vec();
    if busiest_first {
        let busy = |g: &Group| -> f64 {
            let used: Vec<f64> = (0..g.total.len())
                .filter(|&i| g.total[i] > 0)
                .map(|i| g.total[i].saturating_sub(g.cap[i]) as f64 / g.total[i] as f64)
                .collect();
            used.iter().sum::<f64>() / used.len().max(1) as f64
        };
        let n = groups
            .iter()
            .take_while(|g| matches!(g.origin, Origin::Node(_)))
            .count();
        groups[..n].sort_by(|a, b| busy(b).total_cmp(&busy(a)));
    }
    let fx = on_total.fx;
    groups.extend(
        on_total
            .groups
            .iter()
            .filter(|g| matches!(g.origin, Origin::New(_)))
            .map(|g| Group {
                cap: match g.origin {
                    Origin::New(t) => fx.type_cap[t].clone(),
                    _ => g.cap.clone(),
                },
                used: false,
                placed: Vec::new(),
                kinds: 0,
                ..g.clone()
            }),
    );
    groups
}
