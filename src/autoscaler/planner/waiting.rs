//! Demand that could be met but is held back (limits, backoff, busy nodes), and why: the
//! plan's [`waiting`](super::Plan::waiting), in input order.

use std::collections::HashMap;

use super::merge::{MergedDemand, TaskItem};
use super::packing::Packer;
use super::passes::Placement;
use super::{Demand, Waiting};

/// Per item of `items`: the bundles `p` left unplaced (`left`), and why (see [`Packer::why`]).
pub(super) fn unplaced(p: &Packer, items: &[TaskItem], left: Vec<u64>) -> Vec<Vec<(String, u64)>> {
    let mut unmet: Vec<Vec<(String, u64)>> = vec![Vec::new(); items.len()];
    for (k, left) in left.into_iter().enumerate() {
        if left > 0 {
            unmet[k].push((p.why(&p.fx.shapes[items[k].shape]), left));
        }
    }
    unmet
}

/// The waiting demand, in input order: placement groups that found no room or whose new nodes
/// wait (`held_back`, by unit, for the reason `held_back_why`), and tasks and constraints with
/// the count of their bundles held back for each reason.
pub(super) fn report(
    demands: &[Demand],
    merged: &MergedDemand,
    placement: &Placement,
    constraints_unmet: Vec<Vec<(String, u64)>>,
    held_back: &HashMap<u32, u64>,
    held_back_why: &str,
) -> Vec<Waiting> {
    // By input index, so that the sort below gives the input order.
    let mut waiting: Vec<(usize, Waiting)> = Vec::new();
    for gang in &merged.gangs {
        for &i in &gang.inputs {
            let why = placement.gangs_unmet.get(&i).cloned().or_else(|| {
                held_back
                    .get(&(i as u32))
                    .filter(|n| **n > 0)
                    .map(|_| held_back_why.to_string())
            });
            if let Some(why) = why {
                let demand = demands[i].clone();
                waiting.push((i, Waiting { demand, why }));
            }
        }
    }
    let gang_units = demands.len() as u32;
    for (k, item) in merged.tasks.iter().enumerate() {
        let mut list = placement.tasks_unmet[k].clone();
        if let Some(n) = held_back.get(&(gang_units + k as u32)).filter(|n| **n > 0) {
            list.push((held_back_why.to_string(), *n));
        }
        for (why, n) in list {
            let demand = with_count(&demands[item.first], n);
            waiting.push((item.first, Waiting { demand, why }));
        }
    }
    for (item, list) in merged.constraints.iter().zip(constraints_unmet) {
        for (why, n) in list {
            let demand = with_count(&demands[item.first], n);
            waiting.push((item.first, Waiting { demand, why }));
        }
    }
    waiting.sort_by_key(|w| w.0);
    waiting.into_iter().map(|(_, w)| w).collect()
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
