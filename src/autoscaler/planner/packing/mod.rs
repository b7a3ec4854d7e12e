//! Bins and the packer: how demand is placed.
//!
//! Three kinds of bin, tried in this order (first fit, biggest shapes first):
//! 1. free capacity: the *available* resources of alive nodes (`Running` or `Idle`; not
//!    `Draining` or `Dead`, nor a node whose worker job has ended). Busy nodes come before idle
//!    ones and the least idle first, so the most idle nodes stay free to be handed back;
//! 2. capacity already asked for: every `Pending` or `Running` (not yet joined) job is a whole
//!    node of its type;
//! 3. new nodes: the node type chosen for a shape is, in order: one without GPUs unless the shape
//!    asks for GPUs; the one needing the fewest nodes for what is left of that shape; the one
//!    wasting least of the resources the shape asks for; the first in the config. Shapes that
//!    are left over then fill the spare room of those new nodes before more are opened.
//!
//! Shapes without GPUs go to bins that are not GPU nodes first, so CPU work placed early does
//! not take the room that GPU work placed later needs (Ray's scheduler scores GPU nodes last
//! for them too).
//!
//! Greedy packing has no order that is best for every input, and a plan must never launch more
//! nodes than Ray's own autoscaler (`ray/autoscaler/v2/scheduler.py`) would for the same state.
//! So tasks and constraints are packed several ways and the plan that places the most, then
//! launches the fewest nodes, is kept (the first way on a tie, which is the order above): the
//! shapes in the order above and in the order Ray sorts them; onto existing bins first fit, bin
//! by bin in order of use, or bin by bin best first; onto new nodes shape by shape as above or
//! node by node, each of the type the remaining mix fills best; and Ray's own algorithm (best
//! scoring bin first, then the best scoring new node, with Ray's score). Placement groups and
//! tasks together are planned with the alive nodes in the order above, busiest first (where
//! Ray's scheduler tends to put them), and with the groups placed as Ray's scheduler places
//! them. Each way is about `O((bins + shapes) log bins)`; the ways that score every bin are
//! skipped above `SCORING_BUDGET` (bins times distinct shapes; in `ways`) and
//! `GANG_SCORING_BUDGET` (placement groups times alive nodes; in `passes`), so the planner
//! stays fast on huge inputs.

mod like_ray;
mod score;
mod tree;
mod ways;

use std::collections::HashMap;

use super::cluster::Cluster;
use super::limits::{blocked_reasons, launchable};
use super::resources::{Capacity, Shape, Universe, fit, kind_bits};
use super::{NodeTypeSpec, PlanInput, Settings};

/// Bundles of one shape to place: tasks, constraint bundles, or bundles of a placement group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Item {
    pub(super) shape: usize,
    pub(super) count: u64,
    /// Which demand the bundles are for, to tell what waits for the upscaling caps: the
    /// constraint item, the placement group's input index, or the task item after all inputs.
    pub(super) unit: u32,
}

/// Bundles of one unit placed on each bin of a group of new nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Placed {
    pub(super) unit: u32,
    pub(super) per_bin: u64,
}

/// Where a group of bins comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Origin {
    /// An alive node (index into the input's nodes).
    Node(usize),
    /// Jobs of a type in flight (queued or started).
    Pending(usize),
    /// New jobs of a type.
    New(usize),
}

/// `mult` identical bins.
#[derive(Debug, Clone)]
pub(super) struct Group {
    pub(super) cap: Vec<u64>,
    pub(super) mult: u64,
    pub(super) origin: Origin,
    /// Some demand was placed here.
    pub(super) used: bool,
    /// New nodes: the submission order of the first of these bins (they are `lo..lo + mult`).
    pub(super) lo: u64,
    /// New nodes: the bundles placed on each of these bins.
    pub(super) placed: Vec<Placed>,
    /// The bins are GPU nodes (their type, or the node, has GPUs): shapes without GPUs go
    /// elsewhere first, so GPU capacity stays for GPU demand.
    pub(super) gpu: bool,
    /// A bin's total capacity (`cap` is what is left of it).
    pub(super) total: Vec<u64>,
    /// The resource kinds (bit `i` for resource `i`, the first 64) of what this plan placed on
    /// each bin: Ray's scheduler scores bins by it.
    pub(super) kinds: u64,
}

/// What the packer may not change.
pub(super) struct Fixed<'a> {
    pub(super) shapes: &'a [Shape],
    pub(super) names: &'a [String],
    pub(super) type_cap: &'a [Vec<u64>],
    pub(super) type_gpu: &'a [bool],
    /// The index of `GPU` among the resources, if some demand asks for GPUs.
    pub(super) gpu_index: Option<usize>,
    /// The type may get new jobs: `max_workers > 0` and not blocked.
    pub(super) type_ok: Vec<bool>,
    /// Why a type may not get new jobs (backoff, gave up), if it is blocked.
    pub(super) type_blocked: Vec<Option<String>>,
    pub(super) types: &'a [NodeTypeSpec],
    pub(super) settings: &'a Settings,
}

impl<'a> Fixed<'a> {
    pub(super) fn new(
        input: &PlanInput<'a>,
        uni: &'a Universe,
        capacity: &'a Capacity,
        shapes: &'a [Shape],
    ) -> Fixed<'a> {
        let type_blocked = blocked_reasons(input);
        Fixed {
            shapes,
            names: &uni.names,
            type_cap: &capacity.types,
            type_gpu: &capacity.type_gpu,
            gpu_index: uni.gpu_index(),
            type_ok: input
                .types
                .iter()
                .zip(&type_blocked)
                .map(|(t, blocked)| launchable(t, input.settings) && blocked.is_none())
                .collect(),
            type_blocked,
            types: input.types,
            settings: input.settings,
        }
    }
}

/// Which capacity of the alive nodes [`existing_bins`] are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NodeCapacity {
    /// Their total resources (for constraints: busy nodes count).
    Total,
    /// What is available on them.
    Available,
}

/// The bins there are: the alive nodes, in their order, then the jobs in flight of each type
/// (each a whole node of its type).
pub(super) fn existing_bins(
    cluster: &Cluster,
    capacity: &Capacity,
    fx: &Fixed,
    which: NodeCapacity,
) -> Vec<Group> {
    let mut g: Vec<Group> = cluster
        .alive
        .iter()
        .map(|&i| Group {
            cap: match which {
                NodeCapacity::Total => capacity.node_total[i].clone(),
                NodeCapacity::Available => capacity.node_available[i].clone(),
            },
            mult: 1,
            origin: Origin::Node(i),
            used: false,
            lo: 0,
            placed: Vec::new(),
            gpu: capacity.node_gpu[i],
            total: capacity.node_total[i].clone(),
            kinds: 0,
        })
        .collect();
    for (t, jobs) in cluster.per_type.iter().enumerate() {
        if jobs.in_flight > 0 {
            g.push(Group {
                cap: fx.type_cap[t].clone(),
                mult: jobs.in_flight,
                origin: Origin::Pending(t),
                used: false,
                lo: 0,
                placed: Vec::new(),
                gpu: fx.type_gpu[t],
                total: fx.type_cap[t].clone(),
                kinds: 0,
            });
        }
    }
    g
}

/// What [`Packer::rollback`] restores: the groups as they were at [`Packer::begin`].
#[derive(Clone)]
struct Undo {
    len: usize,
    /// (index, the group as it was) before each change since [`Packer::begin`]: restored
    /// newest first, so each group ends as it was at the start.
    saved: Vec<(usize, Group)>,
    type_room: Vec<u64>,
    global_room: u64,
    next_ordinal: u64,
}

/// Bins being filled: the groups, and the room left under the limits for new nodes.
#[derive(Clone)]
pub(super) struct Packer<'a> {
    pub(super) fx: &'a Fixed<'a>,
    pub(super) groups: Vec<Group>,
    pub(super) type_room: Vec<u64>,
    pub(super) global_room: u64,
    pub(super) next_ordinal: u64,
    /// Per shape: groups before this index can never hold it again (capacity only shrinks).
    cursor: HashMap<usize, usize>,
    undo: Option<Undo>,
    /// A segment tree over the groups: per node, the largest amount of each resource in its
    /// subtree, then 1 if the subtree has a group without GPUs (`dims + 1` values per node,
    /// leaves at `leaves..2 * leaves`). Finding the first group that holds a shape descends only
    /// into subtrees that might: no scan over every group.
    tree: Vec<u64>,
    leaves: usize,
    dims: usize,
    /// Some group is of GPU nodes: shapes without GPUs look at the other groups first.
    any_gpu: bool,
}

impl<'a> Packer<'a> {
    pub(super) fn new(
        fx: &'a Fixed<'a>,
        groups: Vec<Group>,
        type_room: Vec<u64>,
        global_room: u64,
        next_ordinal: u64,
    ) -> Packer<'a> {
        let mut p = Packer {
            fx,
            groups,
            type_room,
            global_room,
            next_ordinal,
            cursor: HashMap::new(),
            undo: None,
            tree: Vec::new(),
            leaves: 0,
            dims: fx.names.len(),
            any_gpu: false,
        };
        p.rebuild();
        p
    }

    /// Shapes without GPUs go to groups without GPUs first (as Ray's scheduler, which scores
    /// GPU nodes last for them), so that CPU work placed first does not take the room GPU
    /// work placed later needs.
    fn conserve_gpu(&self, s: &Shape) -> bool {
        self.any_gpu && !s.gpu
    }

    fn touch(&mut self, i: usize) {
        if let Some(u) = self.undo.as_mut()
            && i < u.len
        {
            u.saved.push((i, self.groups[i].clone()));
        }
    }

    /// Puts `per_bin` bundles of `s` on `bins` bins of group `i`; those bins stay at `i`, the
    /// others (if any) move to the end.
    pub(super) fn take(&mut self, i: usize, s: &Shape, per_bin: u64, bins: u64, unit: u32) {
        self.touch(i);
        let g = &mut self.groups[i];
        let bins = bins.clamp(1, g.mult.max(1));
        let rest = (bins < g.mult).then(|| {
            let mut r = g.clone();
            r.mult = g.mult - bins;
            r.lo = g.lo + bins;
            r
        });
        g.mult = bins;
        for &k in &s.nz {
            g.cap[k] = g.cap[k].saturating_sub(per_bin.saturating_mul(s.v[k]));
        }
        g.used = true;
        g.kinds |= kind_bits(s);
        if matches!(g.origin, Origin::New(_)) {
            match g.placed.last_mut() {
                Some(last) if last.unit == unit => {
                    last.per_bin = last.per_bin.saturating_add(per_bin)
                }
                _ => g.placed.push(Placed { unit, per_bin }),
            }
        }
        self.update(i);
        if let Some(r) = rest {
            self.groups.push(r);
            self.update(self.groups.len() - 1);
        }
    }

    /// Fills group `i` with up to `r` bundles of shape `sid`, whole bins first; returns what is
    /// left. When something is left, no bin of the group holds another bundle.
    fn fill(&mut self, i: usize, sid: usize, r: u64, unit: u32) -> u64 {
        let s = &self.fx.shapes[sid];
        let f = fit(&self.groups[i].cap, s);
        if f == 0 || r == 0 {
            return r;
        }
        if f == u64::MAX {
            self.take(i, s, r, 1, unit);
            return 0;
        }
        let m = self.groups[i].mult;
        let full = r / f;
        if full >= m {
            self.take(i, s, f, m, unit);
            return r - m * f;
        }
        let mut target = i;
        if full > 0 {
            self.take(i, s, f, full, unit);
            target = self.groups.len() - 1;
        }
        let rem = r - full * f;
        if rem > 0 {
            self.take(target, s, rem, 1, unit);
        }
        0
    }

    /// Puts on each of `bins` bins of group `g` what [`simulate_fill`](score::simulate_fill)
    /// said one bin takes of each item, and takes that off `left`.
    fn take_fill(&mut self, g: usize, items: &[Item], takes: &[u64], bins: u64, left: &mut [u64]) {
        let fx = self.fx;
        for (k, item) in items.iter().enumerate() {
            if takes[k] > 0 {
                self.take(g, &fx.shapes[item.shape], takes[k], bins, item.unit);
                left[k] -= takes[k] * bins;
            }
        }
    }

    /// Puts into one bin of group `i` what [`simulate_fill`](score::simulate_fill) said it
    /// takes of each item, and takes that off `left`. Returns the groups split off `i` (its
    /// other bins).
    fn take_scored(
        &mut self,
        i: usize,
        items: &[Item],
        takes: &[u64],
        left: &mut [u64],
    ) -> std::ops::Range<usize> {
        let before = self.groups.len();
        self.take_fill(i, items, takes, 1, left);
        before..self.groups.len()
    }

    /// Opens new nodes of type `t`, each filled with `takes` of the items, and takes that off
    /// `left`: as many nodes at once as the same fill repeats (while every item it takes from
    /// has that much left), as room allows; Ray's scheduler opens them one by one, and at a
    /// million bundles that is a million steps. Returns the group, `None` without room.
    fn open_filled(
        &mut self,
        t: usize,
        items: &[Item],
        takes: &[u64],
        left: &mut [u64],
    ) -> Option<usize> {
        let repeat = (0..items.len())
            .filter(|&k| takes[k] > 0)
            .map(|k| left[k] / takes[k])
            .min()
            .unwrap_or(1)
            .max(1);
        let g = self.open(t, repeat)?;
        let bins = self.groups[g].mult;
        self.take_fill(g, items, takes, bins, left);
        Some(g)
    }

    /// First fit of `r` bundles of `sid` onto the existing groups; returns what is left.
    fn place_bulk(&mut self, sid: usize, mut r: u64, unit: u32) -> u64 {
        let s = &self.fx.shapes[sid];
        let start = self.cursor.get(&sid).copied().unwrap_or(0);
        if self.conserve_gpu(s) {
            let mut from = start;
            while r > 0 {
                let Some(i) = self.first_fit(s, from, true) else {
                    break;
                };
                r = self.fill(i, sid, r, unit);
                from = if r > 0 { i + 1 } else { i };
            }
        }
        let mut from = start;
        while r > 0 {
            let Some(i) = self.first_fit(s, from, false) else {
                from = self.groups.len();
                break;
            };
            r = self.fill(i, sid, r, unit);
            // Filled up (something left): it holds no more; else it may hold more.
            from = if r > 0 { i + 1 } else { i };
        }
        self.cursor.insert(sid, from);
        r
    }

    /// The first group with a bin that holds one bundle of `sid` and that `allow` accepts
    /// (for a shape without GPUs, one that is not of GPU nodes if there is such a group).
    pub(super) fn find_one(&mut self, sid: usize, allow: impl Fn(usize) -> bool) -> Option<usize> {
        let s = &self.fx.shapes[sid];
        let start = self.cursor.get(&sid).copied().unwrap_or(0);
        if self.conserve_gpu(s) {
            let mut from = start;
            while let Some(i) = self.first_fit(s, from, true) {
                if allow(i) {
                    return Some(i);
                }
                from = i + 1;
            }
        }
        let mut from = start;
        let mut first: Option<usize> = None;
        let found = loop {
            let Some(i) = self.first_fit(s, from, false) else {
                break None;
            };
            first.get_or_insert(i);
            if allow(i) {
                break Some(i);
            }
            from = i + 1;
        };
        self.cursor
            .insert(sid, first.unwrap_or(self.groups.len()).max(start));
        found
    }

    /// The best type for `r` more bundles of `s` among those that may get new jobs.
    pub(super) fn best_type(&self, s: &Shape, r: u64) -> Option<usize> {
        if self.global_room == 0 {
            return None;
        }
        let mut best: Option<(bool, u64, f64, usize)> = None;
        for t in 0..self.fx.type_cap.len() {
            if !self.fx.type_ok[t] || self.type_room[t] == 0 {
                continue;
            }
            let cap = &self.fx.type_cap[t];
            let f = fit(cap, s);
            if f == 0 {
                continue;
            }
            let r = r.max(1);
            let nodes = if f == u64::MAX { 1 } else { r.div_ceil(f) };
            let waste = if s.nz.is_empty() {
                0.0
            } else {
                s.nz.iter()
                    .map(|&i| {
                        let used = r as f64 * s.v[i] as f64;
                        let have = nodes as f64 * cap[i] as f64;
                        1.0 - (used / have).min(1.0)
                    })
                    .sum::<f64>()
                    / s.nz.len() as f64
            };
            let key = (self.fx.type_gpu[t] && !s.gpu, nodes, waste, t);
            let better = match &best {
                None => true,
                Some(b) => {
                    key.0
                        .cmp(&b.0)
                        .then(key.1.cmp(&b.1))
                        .then(key.2.total_cmp(&b.2))
                        .then(key.3.cmp(&b.3))
                        == std::cmp::Ordering::Less
                }
            };
            if better {
                best = Some(key);
            }
        }
        best.map(|b| b.3)
    }

    /// Opens up to `bins` new nodes of type `t` (as room allows); returns their group.
    pub(super) fn open(&mut self, t: usize, bins: u64) -> Option<usize> {
        let bins = bins.min(self.type_room[t]).min(self.global_room);
        if bins == 0 {
            return None;
        }
        self.type_room[t] -= bins;
        self.global_room -= bins;
        self.groups.push(Group {
            cap: self.fx.type_cap[t].clone(),
            mult: bins,
            origin: Origin::New(t),
            used: false,
            lo: self.next_ordinal,
            placed: Vec::new(),
            gpu: self.fx.type_gpu[t],
            total: self.fx.type_cap[t].clone(),
            kinds: 0,
        });
        self.next_ordinal += bins;
        self.update(self.groups.len() - 1);
        Some(self.groups.len() - 1)
    }

    /// Opens one node of the best type for one bundle of `s`.
    pub(super) fn open_for(&mut self, s: &Shape, r: u64) -> Option<usize> {
        let t = self.best_type(s, r)?;
        self.open(t, 1)
    }

    /// `count` bundles of `sid`: onto existing bins, then onto new nodes of the best type for
    /// the shape. Returns what is left.
    fn place_tasks(&mut self, sid: usize, count: u64, unit: u32) -> u64 {
        let mut r = self.place_bulk(sid, count, unit);
        let s = &self.fx.shapes[sid];
        while r > 0 {
            let Some(t) = self.best_type(s, r) else {
                break;
            };
            let f = fit(&self.fx.type_cap[t], s);
            let need = if f == u64::MAX { 1 } else { r.div_ceil(f) };
            let Some(g) = self.open(t, need) else {
                break;
            };
            r = self.fill(g, sid, r, unit);
        }
        r
    }

    pub(super) fn begin(&mut self) {
        self.undo = Some(Undo {
            len: self.groups.len(),
            saved: Vec::new(),
            type_room: self.type_room.clone(),
            global_room: self.global_room,
            next_ordinal: self.next_ordinal,
        });
    }

    pub(super) fn commit(&mut self) {
        self.undo = None;
    }

    pub(super) fn rollback(&mut self) {
        if let Some(u) = self.undo.take() {
            let had = self.groups.len();
            self.groups.truncate(u.len);
            for i in u.len..had {
                self.update(i);
            }
            let mut restored: Vec<usize> = Vec::new();
            for (i, g) in u.saved.into_iter().rev() {
                self.groups[i] = g;
                restored.push(i);
            }
            for i in restored {
                self.update(i);
            }
            self.type_room = u.type_room;
            self.global_room = u.global_room;
            self.next_ordinal = u.next_ordinal;
            // Capacity came back: the cursors may be past it.
            self.cursor.clear();
        }
    }
}
