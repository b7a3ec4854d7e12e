//! Demand that could be met but is held back (limits, backoff, busy nodes), and why: the
//! plan's [`waiting`](super::Plan::waiting), in input order.

use super::limits::Launch;
use super::merge::{MergedDemand, TaskItem};
use super::packing::Packer;
use super::passes::Placement;
use super::{Demand, Waiting};

/// Bundles of one item that did not get their nodes, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Unplaced {
    pub(super) why: String,
    pub(super) count: u64,
}

/// Per item of `items`: the bundles `p` left unplaced (`left`), and why (see [`Packer::why`]).
pub(super) fn unplaced(p: &Packer, items: &[TaskItem], left: Vec<u64>) -> Vec<Vec<Unplaced>> {
    let mut unmet: Vec<Vec<Unplaced>> = vec![Vec::new(); items.len()];
    for (k, left) in left.into_iter().enumerate() {
        if left > 0 {
            unmet[k].push(Unplaced {
                why: p.why(&p.fx.shapes[items[k].shape]),
                count: left,
            });
        }
    }
    unmet
}

/// The waiting demand, in input order: placement groups that found no room or whose new nodes
/// are held back, and tasks and constraints, an entry for each reason some of their bundles
/// wait with the count of those bundles.
pub(super) fn report(
    demands: &[Demand],
    merged: &MergedDemand,
    placement: &Placement,
    constraints_unmet: Vec<Vec<Unplaced>>,
    launch: &Launch,
) -> Vec<Waiting> {
    // By input index, so that the sort below gives the input order.
    let mut waiting: Vec<(usize, Waiting)> = Vec::new();
    waiting_gangs(demands, merged, placement, launch, &mut waiting);
    let gang_units = demands.len() as u32;
    for (k, item) in merged.tasks.iter().enumerate() {
        let mut list = placement.tasks_unmet[k].clone();
        if let Some(count) = launch.held_back(gang_units + k as u32) {
            let why = launch.why.clone();
            list.push(Unplaced { why, count });
        }
        waiting_bundles(demands, item, list, &mut waiting);
    }
    for (item, list) in merged.constraints.iter().zip(constraints_unmet) {
        waiting_bundles(demands, item, list, &mut waiting);
    }
    waiting.sort_by_key(|w| w.0);
    waiting.into_iter().map(|(_, w)| w).collect()
}

/// The placement groups that found no room, or whose new nodes are held back.
fn waiting_gangs(
    demands: &[Demand],
    merged: &MergedDemand,
    placement: &Placement,
    launch: &Launch,
    waiting: &mut Vec<(usize, Waiting)>,
) {
    for gang in &merged.gangs {
        for &i in &gang.inputs {
            let why = placement
                .gangs_unmet
                .get(&i)
                .cloned()
                .or_else(|| launch.held_back(i as u32).map(|_| launch.why.clone()));
            if let Some(why) = why {
                let demand = demands[i].clone();
                waiting.push((i, Waiting { demand, why }));
            }
        }
    }
}

/// Tasks or constraint bundles of `item`: its first demand, once per reason, with the count.
fn waiting_bundles(
    demands: &[Demand],
    item: &TaskItem,
    list: Vec<Unplaced>,
    waiting: &mut Vec<(usize, Waiting)>,
) {
    for Unplaced { why, count } in list {
        let demand = with_count(&demands[item.first], count);
        waiting.push((item.first, Waiting { demand, why }));
    }
}

/// Tasks or a constraint as `d`, `n` bundles of it; a placement group as it is.
fn with_count(d: &Demand, n: u64) -> Demand {
    match d {
        Demand::Tasks { bundle, .. } => Demand::Tasks {
            bundle: bundle.clone(),
            count: n,
        },
        Demand::Constraint { bundle, .. } => Demand::Constraint {
            bundle: bundle.clone(),
            count: n,
        },
        other => other.clone(),
    }
}
