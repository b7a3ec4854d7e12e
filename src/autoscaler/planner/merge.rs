//! Pending demand, merged by shape: identical bundle shapes are merged first, so the work grows
//! with the number of distinct shapes, not with the number of pending requests. Demand that no
//! node type (and no alive node) can ever hold is set apart as infeasible.

use std::collections::HashMap;

use super::limits::launchable;
use super::packing::Item;
use super::placement_groups::is_strict;
use super::resources::{Capacity, Shape, Universe, fit, shape_order, sum_vectors};
use super::{Demand, PlanInput, Resources, Strategy};

/// Tasks and actors (or constraint bundles) of one shape.
pub(super) struct TaskItem {
    pub(super) shape: usize,
    pub(super) count: u64,
    /// The first input demand of this shape (for its resource map).
    pub(super) first: usize,
}

/// Identical placement groups.
pub(super) struct GangItem {
    pub(super) strategy: Strategy,
    /// Bundle shapes, biggest first.
    pub(super) bundles: Vec<usize>,
    /// The shape of all bundles together.
    pub(super) sum: usize,
    /// The identical input placement groups.
    pub(super) inputs: Vec<usize>,
}

/// The pending demand, merged by shape and sorted.
pub(super) struct MergedDemand {
    pub(super) shapes: Vec<Shape>,
    /// Tasks and actors, biggest shapes first.
    pub(super) tasks: Vec<TaskItem>,
    /// `request_resources` bundles, biggest shapes first.
    pub(super) constraints: Vec<TaskItem>,
    /// Placement groups: strict ones first, then the biggest.
    pub(super) gangs: Vec<GangItem>,
    /// Demand no node type and no alive node can ever hold, in input order.
    pub(super) infeasible: Vec<Demand>,
}

impl MergedDemand {
    /// Merges `input`'s demand; `alive` are the nodes that may take work.
    pub(super) fn new(
        input: &PlanInput,
        uni: &Universe,
        capacity: &Capacity,
        alive: &[usize],
    ) -> MergedDemand {
        let mut m = Merger {
            uni,
            shapes: Shapes::new(uni, capacity, alive),
            feasible: Feasibility {
                capacity,
                alive,
                launchable: input
                    .types
                    .iter()
                    .map(|t| launchable(t, input.settings))
                    .collect(),
                memo: HashMap::new(),
            },
            tasks: Vec::new(),
            constraints: Vec::new(),
            gangs: Vec::new(),
            task_of: HashMap::new(),
            constraint_of: HashMap::new(),
            gang_of: HashMap::new(),
            infeasible: Vec::new(),
        };
        for (i, d) in input.demands.iter().enumerate() {
            match d {
                Demand::Tasks { bundle, count } | Demand::Constraint { bundle, count } => {
                    m.add_bundles(i, d, bundle, *count)
                }
                Demand::Gang {
                    bundles, strategy, ..
                } => m.add_gang(i, d, bundles, *strategy),
            }
        }
        m.sorted()
    }

    /// The tasks as the packer's items, units from `first_unit` on.
    pub(super) fn task_items(&self, first_unit: u32) -> Vec<Item> {
        packer_items(&self.tasks, first_unit)
    }

    /// The constraint bundles as the packer's items, units from 0.
    pub(super) fn constraint_items(&self) -> Vec<Item> {
        packer_items(&self.constraints, 0)
    }
}

fn packer_items(items: &[TaskItem], first_unit: u32) -> Vec<Item> {
    items
        .iter()
        .enumerate()
        .map(|(k, item)| Item {
            shape: item.shape,
            count: item.count,
            unit: first_unit + k as u32,
        })
        .collect()
}

/// Bundle shapes, each once.
struct Shapes {
    shapes: Vec<Shape>,
    ids: HashMap<Vec<u64>, usize>,
    gpu_index: Option<usize>,
    /// The largest capacity of each resource anywhere (a shape's size is relative to it).
    max_cap: Vec<u64>,
}

impl Shapes {
    fn new(uni: &Universe, capacity: &Capacity, alive: &[usize]) -> Shapes {
        let mut max_cap = vec![0u64; uni.names.len()];
        let alive_totals = alive.iter().map(|&i| &capacity.node_total[i]);
        for c in capacity.types.iter().chain(alive_totals) {
            for (m, x) in max_cap.iter_mut().zip(c) {
                *m = (*m).max(*x);
            }
        }
        Shapes {
            shapes: Vec::new(),
            ids: HashMap::new(),
            gpu_index: uni.gpu_index(),
            max_cap,
        }
    }

    /// The id of shape `v`.
    fn intern(&mut self, v: Vec<u64>) -> usize {
        if let Some(&i) = self.ids.get(&v) {
            return i;
        }
        self.shapes
            .push(Shape::new(v.clone(), self.gpu_index, &self.max_cap));
        self.ids.insert(v, self.shapes.len() - 1);
        self.shapes.len() - 1
    }
}

/// Whether some node type that may launch, or some alive node, holds a shape.
struct Feasibility<'a> {
    capacity: &'a Capacity,
    alive: &'a [usize],
    launchable: Vec<bool>,
    memo: HashMap<usize, bool>,
}

impl Feasibility<'_> {
    fn holds(&mut self, sid: usize, shapes: &[Shape]) -> bool {
        let (capacity, alive, launchable) = (self.capacity, self.alive, &self.launchable);
        *self.memo.entry(sid).or_insert_with(|| {
            let s = &shapes[sid];
            (0..capacity.types.len()).any(|t| launchable[t] && fit(&capacity.types[t], s) > 0)
                || alive.iter().any(|&n| fit(&capacity.node_total[n], s) > 0)
        })
    }
}

/// The demand being merged.
struct Merger<'a> {
    uni: &'a Universe,
    shapes: Shapes,
    feasible: Feasibility<'a>,
    tasks: Vec<TaskItem>,
    constraints: Vec<TaskItem>,
    gangs: Vec<GangItem>,
    /// Item by shape, for tasks and for constraints; by strategy and shapes for groups.
    task_of: HashMap<usize, usize>,
    constraint_of: HashMap<usize, usize>,
    gang_of: HashMap<(Strategy, Vec<usize>), usize>,
    infeasible: Vec<Demand>,
}

impl Merger<'_> {
    /// Demand `i`, `d`: `count` bundles of tasks or of a constraint.
    fn add_bundles(&mut self, i: usize, d: &Demand, bundle: &Resources, count: u64) {
        let v = self.uni.vector(bundle);
        if count == 0 || v.iter().all(|x| *x == 0) {
            return; // nothing asked for: any node holds it
        }
        let sid = self.shapes.intern(v);
        if !self.feasible.holds(sid, &self.shapes.shapes) {
            self.infeasible.push(d.clone());
            return;
        }
        let (items, index) = if matches!(d, Demand::Tasks { .. }) {
            (&mut self.tasks, &mut self.task_of)
        } else {
            (&mut self.constraints, &mut self.constraint_of)
        };
        match index.get(&sid) {
            Some(&k) => items[k].count = items[k].count.saturating_add(count),
            None => {
                index.insert(sid, items.len());
                items.push(TaskItem {
                    shape: sid,
                    count,
                    first: i,
                });
            }
        }
    }

    /// Demand `i`, `d`: a placement group.
    fn add_gang(&mut self, i: usize, d: &Demand, bundles: &[Resources], strategy: Strategy) {
        if bundles.is_empty() {
            return;
        }
        let vs: Vec<Vec<u64>> = bundles.iter().map(|b| self.uni.vector(b)).collect();
        let total = vs
            .iter()
            .fold(vec![0u64; self.uni.names.len()], |a, v| sum_vectors(&a, v));
        let mut sids: Vec<usize> = vs.into_iter().map(|v| self.shapes.intern(v)).collect();
        let sum = self.shapes.intern(total);
        let shapes = &self.shapes.shapes;
        let ok = match strategy {
            Strategy::StrictPack => self.feasible.holds(sum, shapes),
            _ => sids.iter().all(|&s| self.feasible.holds(s, shapes)),
        };
        if !ok {
            self.infeasible.push(d.clone());
            return;
        }
        sids.sort_by(|&a, &b| shape_order(&shapes[a], &shapes[b]).then(a.cmp(&b)));
        match self.gang_of.get(&(strategy, sids.clone())) {
            Some(&k) => self.gangs[k].inputs.push(i),
            None => {
                self.gang_of
                    .insert((strategy, sids.clone()), self.gangs.len());
                self.gangs.push(GangItem {
                    strategy,
                    bundles: sids,
                    sum,
                    inputs: vec![i],
                });
            }
        }
    }

    /// The merged demand, biggest shapes first; strict placement groups first.
    fn sorted(self) -> MergedDemand {
        let Merger {
            shapes,
            mut tasks,
            mut constraints,
            mut gangs,
            infeasible,
            ..
        } = self;
        let shapes = shapes.shapes;
        tasks.sort_by(|a, b| shape_order(&shapes[a.shape], &shapes[b.shape]));
        constraints.sort_by(|a, b| shape_order(&shapes[a.shape], &shapes[b.shape]));
        gangs.sort_by(|a, b| {
            is_strict(b.strategy)
                .cmp(&is_strict(a.strategy))
                .then(shapes[b.sum].size.total_cmp(&shapes[a.sum].size))
                .then(a.inputs[0].cmp(&b.inputs[0]))
        });
        MergedDemand {
            shapes,
            tasks,
            constraints,
            gangs,
            infeasible,
        }
    }
}
