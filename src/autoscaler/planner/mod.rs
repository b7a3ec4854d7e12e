//! The autoscaler's planner: a pure function from what was observed (Ray's nodes and pending
//! demand, this cluster's scheduler jobs, the node types, the settings, each type's submission
//! health, the time) to what to do (submit, cancel, drain) and what to report (infeasible and
//! waiting demand).
//!
//! No I/O, no clock, no randomness: the same input always gives the same [`Plan`], and a plan that
//! was carried out (its jobs now `Pending`) plans nothing more for the same demand. The reconciler
//! observes, calls [`plan`], acts, and calls it again next poll.
//!
//! # How demand is placed
//!
//! Resources are compared in Ray's fixed point (1/10000 of a unit), so `0.1 + 0.2` CPUs fit in
//! `0.3`. Amounts that are NaN, negative or zero are absent; `implicit_resource:*` names are
//! ignored. Identical bundle shapes are merged first, so the work grows with the number of
//! distinct shapes, not with the number of pending requests.
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
//! skipped above [`SCORING_BUDGET`] (bins times distinct shapes) and [`GANG_SCORING_BUDGET`]
//! (placement groups times alive nodes), so the planner stays fast on huge inputs.
//!
//! The passes, in priority order (which is also the order in which the upscaling caps let new
//! nodes through):
//! - `min_workers`: a type with fewer live (not ended, node not dead) jobs than its
//!   `min_workers` gets new nodes up to it;
//! - constraints (`request_resources`): their bundles are packed onto the *total* resources of
//!   alive nodes, pending jobs and the nodes above; what is missing is launched. Existing nodes
//!   that hold a constraint bundle are not drained;
//! - placement groups: all bundles or none. `STRICT_PACK` is one bundle (the sum);
//!   `STRICT_SPREAD` puts every bundle on a different node (existing, pending or new);
//!   `PACK` fills like tasks and launches one node for all remaining bundles when a type holds
//!   them; `SPREAD` prefers a node the group does not use yet, else any node that fits, and
//!   only launches a node when nothing fits (it never launches extra nodes just to spread);
//! - tasks and actors, `count` bundles each.
//!
//! # Limits
//!
//! `max_workers` per type and `Settings::max_workers` for all types count every job that has not
//! ended (pending, running, joined); they decide which types may be chosen at all. The
//! upscaling caps then decide how many of the chosen new nodes are submitted this round: at most
//! `min(max(5, ceil(upscaling_speed * joined)), max_pending_jobs)` jobs in flight (queued or
//! started, not yet joined), `min_workers` first, then constraints, placement groups, tasks.
//! Demand that did not get its nodes is in [`Plan::waiting`] with the reason; demand no node
//! type (and no alive node) can ever hold is in [`Plan::infeasible`] and never submitted.
//! Jobs this plan cancels still count against every limit until they have ended.
//!
//! # Jobs and nodes
//!
//! A job is joined when some node that is not dead carries its id as `instance_id`, whatever
//! the scheduler's (possibly older) phase says, so a node is never counted twice.
//!
//! # Scaling down
//!
//! - Queued (`Pending`) jobs that no demand or constraint needs are cancelled, newest first,
//!   as long as their type keeps `min_workers` live jobs. Started (`Running`) jobs are left to
//!   join: once idle they are drained like any node. Queued jobs of a type that is no longer
//!   configured are cancelled, and queued jobs over a (lowered) `max_workers` are cancelled
//!   newest first.
//! - A started or joined job whose Ray nodes are all dead is cancelled (a queued one with a
//!   dead node was requeued by the scheduler, and is left to start again).
//! - Then idle nodes: an `Idle` node idle for longer than `idle_timeout_ms`, whose
//!   `instance_id` is a live autoscaled worker job, that is not the head, that no pending demand
//!   or constraint needs, is drained (the caller drains it, then cancels its job), most idle
//!   first, never taking its type under `min_workers` (queued jobs cancelled above count first).

use std::collections::HashMap;

use crate::config::HEAD_NODE_TYPE_NAME;

mod resources;
mod types;

use resources::{
    SCALE, Shape, Universe, fit, fx, kind_bits, ray_order, shape_order, show_vector, sum_vectors,
};
pub use types::{
    Demand, JobPhase, NodeStatus, NodeTypeSpec, ObservedNode, Plan, PlanInput, Resources, Settings,
    Strategy, TypeHealth, WorkerJob,
};

/// [`Packer::place_items`] tries the ways that score bins (each bin against every item) only up
/// to this many bins times items: 2,000 nodes with 2,000 distinct shapes.
const SCORING_BUDGET: usize = 4_000_000;
/// Placement groups are also placed as Ray's scheduler places them (each scoring every bin)
/// only up to this many groups times alive nodes: 500 groups on 500 nodes.
const GANG_SCORING_BUDGET: usize = 250_000;
/// The ways [`Packer::place_items`] fills the bins there are.
#[derive(Clone, Copy)]
enum Fill {
    FirstFit,
    Scored,
    BestFirst,
}

/// A bin's score as Ray's scheduler has it: not a GPU node for no GPU work, the resource kinds
/// used, the lowest and the mean utilization.
type ScoreKey = (bool, usize, f64, f64);

/// A [`simulate_fill`] score, ordered (higher is better).
#[derive(Clone, Copy, PartialEq, Debug)]
struct Score(ScoreKey);

impl Eq for Score {}

impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Score) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Score {
    fn cmp(&self, other: &Score) -> std::cmp::Ordering {
        let (a, b) = (&self.0, &other.0);
        a.0.cmp(&b.0)
            .then(a.1.cmp(&b.1))
            .then(a.2.total_cmp(&b.2))
            .then(a.3.total_cmp(&b.3))
    }
}

/// Ray's score of a bin filled first fit with `items` (as many of each, in order, as fit and
/// are left): not a GPU bin without GPU work, the resource kinds used, then the lowest and the
/// mean utilization over the resources the bin has. With what each item would take; `None` if
/// it takes nothing.
///
/// With `ray`, the score is exactly Ray's (`SchedulingNode._compute_score`): GPU work means
/// any GPU bundle placed on the bin by this plan, the kinds are those of everything this plan
/// placed there (`kinds`), and the utilizations are weighted by the bin's total amounts
/// (`v * util^3`, so memory in bytes weighs most in the mean). With `one`, the bin takes one
/// bundle at most (a `STRICT_SPREAD` group's anti-affinity).
#[allow(clippy::type_complexity, clippy::too_many_arguments)]
fn simulate_fill(
    fx: &Fixed,
    cap: &[u64],
    total: &[u64],
    gpu: bool,
    kinds_before: u64,
    ray: bool,
    one: bool,
    items: &[(usize, u64, u32)],
    left: &[u64],
) -> Option<(ScoreKey, Vec<u64>)> {
    let mut c = cap.to_vec();
    let mut takes = vec![0u64; items.len()];
    let mut gpu_work = false;
    let mut bits = 0u64; // the kinds this fill places
    let mut any = false;
    for (k, &(sid, _, _)) in items.iter().enumerate() {
        if left[k] == 0 {
            continue;
        }
        let s = &fx.shapes[sid];
        let mut n = fit(&c, s).min(left[k]);
        if n == 0 || n == u64::MAX {
            continue;
        }
        if one {
            n = 1;
        }
        for &i in &s.nz {
            c[i] -= n * s.v[i];
        }
        bits |= kind_bits(s);
        takes[k] = n;
        any = true;
        gpu_work |= s.gpu;
        if one {
            break;
        }
    }
    if !any {
        return None;
    }
    if ray {
        bits |= kinds_before;
        gpu_work = fx.gpu_index.is_some_and(|g| g < 64 && bits & (1 << g) != 0);
    }
    let (mut min, mut sum, mut n, mut used_kinds) = (f64::INFINITY, 0.0, 0usize, 0usize);
    for i in 0..c.len() {
        if total[i] == 0 {
            continue;
        }
        let util = total[i].saturating_sub(c[i]) as f64 / total[i] as f64;
        // Ray weighs each utilization by the amount: `v * util^3`.
        let term = if ray {
            total[i] as f64 / SCALE * util.powf(3.0)
        } else {
            util
        };
        min = min.min(term);
        sum += term;
        n += 1;
        if i < 64 && bits & (1 << i) != 0 {
            used_kinds += 1;
        }
    }
    let mean = sum / n.max(1) as f64;
    Some(((!gpu || gpu_work, used_kinds, min, mean), takes))
}

// ---------------------------------------------------------------------------------------------
// Bins and the packer.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// An alive node (index into the input's nodes).
    Node(usize),
    /// Jobs of a type in flight (queued or started).
    Pending(usize),
    /// New jobs of a type.
    New(usize),
}

/// `mult` identical bins.
#[derive(Debug, Clone)]
struct Group {
    cap: Vec<u64>,
    mult: u64,
    origin: Origin,
    /// Some demand was placed here.
    used: bool,
    /// New nodes: the submission order of the first of these bins (they are `lo..lo + mult`).
    lo: u64,
    /// New nodes: (unit, bundles per bin) placed on each of these bins.
    placed: Vec<(u32, u64)>,
    /// The bins are GPU nodes (their type, or the node, has GPUs): shapes without GPUs go
    /// elsewhere first, so GPU capacity stays for GPU demand.
    gpu: bool,
    /// A bin's total capacity (`cap` is what is left of it).
    total: Vec<u64>,
    /// The resource kinds (bit `i` for resource `i`, the first 64) of what this plan placed on
    /// each bin: Ray's scheduler scores bins by it.
    kinds: u64,
}

/// What the packer may not change.
struct Fixed<'a> {
    shapes: &'a [Shape],
    names: &'a [String],
    type_cap: Vec<Vec<u64>>,
    type_gpu: Vec<bool>,
    /// The index of `GPU` among the resources, if some demand asks for GPUs.
    gpu_index: Option<usize>,
    /// The type may get new jobs: `max_workers > 0` and not blocked.
    type_ok: Vec<bool>,
    /// Why a type may not get new jobs (backoff, gave up), if it is blocked.
    type_blocked: Vec<Option<String>>,
    types: &'a [NodeTypeSpec],
    settings: &'a Settings,
}

#[derive(Clone)]
struct Undo {
    len: usize,
    saved: Vec<(usize, Group)>,
    type_room: Vec<u64>,
    global_room: u64,
    next_ordinal: u64,
}

#[derive(Clone)]
struct Packer<'a> {
    fx: &'a Fixed<'a>,
    groups: Vec<Group>,
    type_room: Vec<u64>,
    global_room: u64,
    next_ordinal: u64,
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
    fn new(
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

    /// Builds the tree again, with room for at least twice the groups there are.
    fn rebuild(&mut self) {
        let w = self.dims + 1;
        self.leaves = (self.groups.len() * 2).max(16).next_power_of_two();
        self.tree = vec![0; 2 * self.leaves * w];
        self.any_gpu = self.groups.iter().any(|g| g.gpu);
        for i in 0..self.groups.len() {
            self.set_leaf(i);
        }
        for node in (1..self.leaves).rev() {
            self.pull(node);
        }
    }

    /// Copies group `i` (or zeros, if there is none) into its leaf.
    fn set_leaf(&mut self, i: usize) {
        let (d, w) = (self.dims, self.dims + 1);
        let at = (self.leaves + i) * w;
        match self.groups.get(i) {
            Some(g) => {
                self.tree[at..at + d].copy_from_slice(&g.cap);
                self.tree[at + d] = u64::from(!g.gpu);
            }
            None => self.tree[at..at + w].fill(0),
        }
    }

    fn pull(&mut self, node: usize) {
        let w = self.dims + 1;
        for k in 0..w {
            self.tree[node * w + k] =
                self.tree[2 * node * w + k].max(self.tree[(2 * node + 1) * w + k]);
        }
    }

    /// Group `i` changed (or appeared, or went: `None`).
    fn update(&mut self, i: usize) {
        if i >= self.leaves {
            self.rebuild();
            return;
        }
        if self.groups.get(i).is_some_and(|g| g.gpu) {
            self.any_gpu = true;
        }
        self.set_leaf(i);
        let mut node = (self.leaves + i) / 2;
        while node >= 1 {
            self.pull(node);
            node /= 2;
        }
    }

    /// The first group at or after `from` with a bin that holds one bundle of `s`; with
    /// `no_gpu`, only groups that are not GPU nodes.
    fn first_fit(&self, s: &Shape, from: usize, no_gpu: bool) -> Option<usize> {
        if s.nz.is_empty() && !no_gpu {
            return (from < self.groups.len()).then_some(from);
        }
        self.search(1, 0, self.leaves, from, s, no_gpu)
    }

    fn search(
        &self,
        node: usize,
        lo: usize,
        hi: usize,
        from: usize,
        s: &Shape,
        no_gpu: bool,
    ) -> Option<usize> {
        if hi <= from || lo >= self.groups.len() {
            return None;
        }
        let at = node * (self.dims + 1);
        if s.nz.iter().any(|&k| self.tree[at + k] < s.v[k])
            || (no_gpu && self.tree[at + self.dims] == 0)
        {
            return None;
        }
        if hi - lo == 1 {
            return Some(lo);
        }
        let mid = (lo + hi) / 2;
        self.search(2 * node, lo, mid, from, s, no_gpu)
            .or_else(|| self.search(2 * node + 1, mid, hi, from, s, no_gpu))
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
    fn take(&mut self, i: usize, s: &Shape, per_bin: u64, bins: u64, unit: u32) {
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
                Some((u, c)) if *u == unit => *c = c.saturating_add(per_bin),
                _ => g.placed.push((unit, per_bin)),
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
    fn find_one(&mut self, sid: usize, allow: impl Fn(usize) -> bool) -> Option<usize> {
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
    fn best_type(&self, s: &Shape, r: u64) -> Option<usize> {
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
    fn open(&mut self, t: usize, bins: u64) -> Option<usize> {
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
    fn open_for(&mut self, s: &Shape, r: u64) -> Option<usize> {
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

    /// Tasks (or constraint bundles), `(shape, count, unit)` each, biggest shapes first: onto
    /// the bins there are, then onto new nodes.
    ///
    /// Greedy packing has no order that is best for every input, so this packs the items a few
    /// ways and keeps the plan that places the most, then opens the fewest nodes (the first
    /// tried on a tie). The ways: the items in their order and in the order Ray's scheduler
    /// sorts them ([`ray_order`]); onto the bins there are first fit ([`Packer::place_bulk`]),
    /// bin by bin in the order of how well each is used ([`Packer::fill_scored`]), or bin by bin
    /// best first ([`Packer::fill_best_first`]); the rest onto new nodes shape by shape
    /// ([`Packer::place_tasks`]) or node by node for the remaining mix
    /// ([`Packer::open_mixed`]); and Ray's own algorithm ([`Packer::place_like_ray`]), so that
    /// no plan opens more nodes than Ray's scheduler would for the same tasks. Each way costs
    /// about `O((bins + shapes) log bins)`. Returns what is left of each item.
    fn place_items(&mut self, items: &[(usize, u64, u32)]) -> Vec<u64> {
        let fx = self.fx;
        let mut orders: Vec<Vec<usize>> = vec![(0..items.len()).collect()];
        let mut ray: Vec<usize> = (0..items.len()).collect();
        ray.sort_by(|&a, &b| ray_order(&fx.shapes[items[a].0], &fx.shapes[items[b].0]));
        if ray != orders[0] {
            orders.push(ray);
        }
        let key = |p: &Packer, l: &[u64]| (l.iter().sum::<u64>(), p.next_ordinal);
        let mut best: Option<(Packer<'a>, Vec<u64>)> = None;
        let mut consider = |p: Packer<'a>, l: Vec<u64>| {
            if best.as_ref().is_none_or(|(b, bl)| key(&p, &l) < key(b, bl)) {
                best = Some((p, l));
            }
        };
        // `left` in the items' order from what a way returns in `order`.
        let unorder = |order: &[usize], got: Vec<u64>| {
            let mut left = vec![0u64; items.len()];
            for (j, r) in got.into_iter().enumerate() {
                left[order[j]] = r;
            }
            left
        };
        // The ways that score bins (or node types) look at every item for every bin they score:
        // only while that stays small (many distinct shapes on many nodes get first fit and
        // shape by shape only).
        let scoring = self.groups.len().saturating_mul(items.len()) <= SCORING_BUDGET;
        let fills: &[Fill] = if scoring {
            &[Fill::FirstFit, Fill::Scored, Fill::BestFirst]
        } else {
            &[Fill::FirstFit]
        };
        for order in &orders {
            let ordered: Vec<(usize, u64, u32)> = order.iter().map(|&k| items[k]).collect();
            for &fill in fills {
                let mut base = self.clone();
                let got = match fill {
                    Fill::FirstFit => ordered
                        .iter()
                        .map(|&(sid, n, unit)| base.place_bulk(sid, n, unit))
                        .collect(),
                    Fill::Scored => base.fill_scored(&ordered),
                    Fill::BestFirst => base.fill_best_first(&ordered),
                };
                if got.iter().all(|&r| r == 0) {
                    consider(base, unorder(order, got));
                    continue;
                }
                let rest: Vec<(usize, u64, u32)> = ordered
                    .iter()
                    .zip(&got)
                    .map(|(&(sid, _, unit), &r)| (sid, r, unit))
                    .collect();
                let mut by_shape = base.clone();
                let by_shape_left: Vec<u64> = rest
                    .iter()
                    .map(|&(sid, r, unit)| by_shape.place_tasks(sid, r, unit))
                    .collect();
                consider(by_shape, unorder(order, by_shape_left));
                if scoring {
                    let mixed_left = base.open_mixed(&rest);
                    consider(base, unorder(order, mixed_left));
                }
            }
        }
        if scoring {
            let order = orders.last().expect("an order");
            let ordered: Vec<(usize, u64, u32)> = order.iter().map(|&k| items[k]).collect();
            let mut like_ray = self.clone();
            let got = like_ray.place_like_ray(&ordered, false);
            consider(like_ray, unorder(order, got));
        }
        let (p, left) = best.expect("at least one way");
        *self = p;
        left
    }

    /// Puts into one bin of group `i` what [`simulate_fill`] said it takes of each item, and
    /// takes that off `left`. Returns the groups split off `i` (its other bins).
    fn take_scored(
        &mut self,
        i: usize,
        items: &[(usize, u64, u32)],
        takes: &[u64],
        left: &mut [u64],
    ) -> std::ops::Range<usize> {
        let fx = self.fx;
        let before = self.groups.len();
        for (k, &(sid, _, unit)) in items.iter().enumerate() {
            if takes[k] > 0 {
                self.take(i, &fx.shapes[sid], takes[k], 1, unit);
                left[k] -= takes[k];
            }
        }
        before..self.groups.len()
    }

    /// Fills the bins there are bin by bin, in the order of how well each would be used by
    /// what is left of the items ([`simulate_fill`], best first): each takes as many of each
    /// item, in order, as it holds. Returns what is left of each item.
    fn fill_scored(&mut self, items: &[(usize, u64, u32)]) -> Vec<u64> {
        let fx = self.fx;
        let mut left: Vec<u64> = items.iter().map(|i| i.1).collect();
        let scores: Vec<Option<Score>> = self
            .groups
            .iter()
            .map(|g| {
                simulate_fill(
                    fx, &g.cap, &g.total, g.gpu, g.kinds, false, false, items, &left,
                )
                .map(|x| Score(x.0))
            })
            .collect();
        let mut order: Vec<usize> = (0..self.groups.len())
            .filter(|&i| scores[i].is_some())
            .collect();
        order.sort_by(|&a, &b| scores[b].cmp(&scores[a]).then(a.cmp(&b)));
        let mut j = 0;
        while j < order.len() && left.iter().any(|&r| r > 0) {
            let i = order[j];
            let before = self.groups.len();
            for (k, &(sid, _, unit)) in items.iter().enumerate() {
                if left[k] > 0 {
                    left[k] = self.fill(i, sid, left[k], unit);
                }
            }
            // Bins split off the group (not filled) come after the others.
            order.extend(before..self.groups.len());
            j += 1;
        }
        left
    }

    /// Fills the bins there are one at a time, like Ray's scheduler: each time the bin that,
    /// filled first fit with what is left of the items, scores best ([`simulate_fill`]; the
    /// first on a tie). Scores are kept in a heap and worked out again only for the bin on top
    /// (lazy greedy): taking items rarely improves another bin's score, and this keeps the fill
    /// near `O(bins log bins)` instead of scoring every bin after every pick. Returns what is
    /// left of each item.
    fn fill_best_first(&mut self, items: &[(usize, u64, u32)]) -> Vec<u64> {
        use std::collections::BinaryHeap;
        let fx = self.fx;
        let mut left: Vec<u64> = items.iter().map(|i| i.1).collect();
        let score_of = |p: &Packer, i: usize, left: &[u64]| {
            let g = &p.groups[i];
            simulate_fill(
                fx, &g.cap, &g.total, g.gpu, g.kinds, false, false, items, left,
            )
        };
        let mut heap: BinaryHeap<(Score, std::cmp::Reverse<usize>)> = (0..self.groups.len())
            .filter_map(|i| score_of(self, i, &left).map(|(s, _)| (Score(s), std::cmp::Reverse(i))))
            .collect();
        while left.iter().any(|&r| r > 0) {
            let Some((_, std::cmp::Reverse(i))) = heap.pop() else {
                break;
            };
            let Some((score, takes)) = score_of(self, i, &left) else {
                continue; // holds none of what is left, now or later
            };
            if heap.peek().is_some_and(|top| top.0 > Score(score)) {
                heap.push((Score(score), std::cmp::Reverse(i)));
                continue;
            }
            // This bin is done; the other bins of its group, if any, are a group of their own.
            for j in self.take_scored(i, items, &takes, &mut left) {
                if let Some((s, _)) = score_of(self, j, &left) {
                    heap.push((Score(s), std::cmp::Reverse(j)));
                }
            }
        }
        left
    }

    /// Ray's scheduler on these items, as `_try_schedule` does it: the bins there are first,
    /// one at a time, each time the one that scores best filled with what is left (Ray's
    /// score, the first on a tie); then new nodes one at a time, each of the type whose node
    /// scores best (the first in the pool on a tie; a type just opened goes to the pool's end).
    /// Returns what is left of each item.
    fn place_like_ray(&mut self, items: &[(usize, u64, u32)], one: bool) -> Vec<u64> {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        let fx = self.fx;
        let mut left: Vec<u64> = items.iter().map(|i| i.1).collect();
        let better = |a: &ScoreKey, b: &ScoreKey| Score(*a) > Score(*b);
        // Scoring every bin after every pick is O(bins^2); a bin's fill (hence its score) only
        // changes when an item it would take more of than is left runs short. So each bin's
        // score is kept, and worked out again only then: the same picks, near O(bins log bins).
        let mut version: Vec<u32> = Vec::new();
        let mut best_heap: BinaryHeap<(Score, Reverse<usize>, u32)> = BinaryHeap::new();
        // Per item: (what a bin would take, bin, version), largest first.
        let mut takers: Vec<BinaryHeap<(u64, usize, u32)>> = vec![BinaryHeap::new(); items.len()];
        let score_bin = |p: &Packer, i: usize, left: &[u64]| {
            let g = &p.groups[i];
            simulate_fill(fx, &g.cap, &g.total, g.gpu, g.kinds, true, one, items, left)
        };
        let push = |p: &Packer,
                    i: usize,
                    left: &[u64],
                    version: &mut Vec<u32>,
                    best_heap: &mut BinaryHeap<(Score, Reverse<usize>, u32)>,
                    takers: &mut Vec<BinaryHeap<(u64, usize, u32)>>| {
            if version.len() <= i {
                version.resize(i + 1, 0);
            }
            version[i] += 1;
            let v = version[i];
            if let Some((score, takes)) = score_bin(p, i, left) {
                best_heap.push((Score(score), Reverse(i), v));
                for (k, &t) in takes.iter().enumerate() {
                    if t > 0 {
                        takers[k].push((t, i, v));
                    }
                }
            }
        };
        for i in 0..self.groups.len() {
            push(self, i, &left, &mut version, &mut best_heap, &mut takers);
        }
        while left.iter().any(|&r| r > 0) {
            let Some((_, Reverse(i), v)) = best_heap.pop() else {
                break;
            };
            if version[i] != v {
                continue; // scored again since
            }
            version[i] += 1; // picked: done
            let Some((_, takes)) = score_bin(self, i, &left) else {
                continue;
            };
            // The other bins of its group, if any, are a group of their own now.
            for j in self.take_scored(i, items, &takes, &mut left) {
                push(self, j, &left, &mut version, &mut best_heap, &mut takers);
            }
            // Bins that would take more of an item than is left: score them again.
            let mut stale: Vec<usize> = Vec::new();
            for k in 0..items.len() {
                while let Some(&(t, j, v)) = takers[k].peek() {
                    if t <= left[k] {
                        break;
                    }
                    takers[k].pop();
                    if version.get(j) == Some(&v) {
                        stale.push(j);
                    }
                }
            }
            stale.sort_unstable();
            stale.dedup();
            for j in stale {
                push(self, j, &left, &mut version, &mut best_heap, &mut takers);
            }
        }
        let mut pool: Vec<usize> = (0..fx.type_cap.len())
            .filter(|&t| fx.type_ok[t] && self.type_room[t] > 0)
            .collect();
        while left.iter().any(|&r| r > 0) && self.global_room > 0 {
            let mut best: Option<(ScoreKey, Vec<u64>, usize)> = None;
            for (j, &t) in pool.iter().enumerate() {
                let cap = &fx.type_cap[t];
                if let Some((score, takes)) =
                    simulate_fill(fx, cap, cap, fx.type_gpu[t], 0, true, one, items, &left)
                    && best.as_ref().is_none_or(|b| better(&score, &b.0))
                {
                    best = Some((score, takes, j));
                }
            }
            let Some((_, takes, j)) = best else {
                break;
            };
            let t = pool.remove(j);
            // The same node again while every item it takes has that much left (Ray opens them
            // one by one; at a million bundles that is a million steps).
            let repeat = (0..items.len())
                .filter(|&k| takes[k] > 0)
                .map(|k| left[k] / takes[k])
                .min()
                .unwrap_or(1)
                .max(1);
            let Some(g) = self.open(t, repeat) else {
                break;
            };
            let bins = self.groups[g].mult;
            for (k, &(sid, _, unit)) in items.iter().enumerate() {
                if takes[k] > 0 {
                    self.take(g, &fx.shapes[sid], takes[k], bins, unit);
                    left[k] -= takes[k] * bins;
                }
            }
            if self.type_room[t] > 0 {
                pool.push(t);
            }
        }
        left
    }

    /// Opens new nodes for `(shape, count, unit)` items one type at a time, like Ray's
    /// scheduler does: of the types that may get jobs, the one a node of which, filled first
    /// fit with the remaining items (in their order), is best used: not a GPU node for no GPU
    /// work, then the highest minimum and then mean utilization over the resources it has,
    /// then the first in the config. As many identical nodes as the same fill repeats are
    /// opened at once. Returns what is left of each item.
    fn open_mixed(&mut self, items: &[(usize, u64, u32)]) -> Vec<u64> {
        let fx = self.fx;
        let mut left: Vec<u64> = items.iter().map(|i| i.1).collect();
        let mut take = vec![0u64; items.len()];
        let mut best_take = vec![0u64; items.len()];
        while left.iter().any(|&r| r > 0) && self.global_room > 0 {
            let mut best: Option<((bool, f64, f64), usize)> = None;
            for t in 0..fx.type_cap.len() {
                if !fx.type_ok[t] || self.type_room[t] == 0 {
                    continue;
                }
                let mut cap = fx.type_cap[t].clone();
                let mut any = false;
                let mut gpu_work = false;
                for (k, &(sid, _, _)) in items.iter().enumerate() {
                    take[k] = 0;
                    if left[k] == 0 {
                        continue;
                    }
                    let s = &fx.shapes[sid];
                    let n = fit(&cap, s).min(left[k]);
                    if n == 0 {
                        continue;
                    }
                    for &i in &s.nz {
                        cap[i] -= n * s.v[i];
                    }
                    take[k] = n;
                    any = true;
                    gpu_work |= s.gpu;
                }
                if !any {
                    continue;
                }
                let full = &fx.type_cap[t];
                let utils: Vec<f64> = (0..full.len())
                    .filter(|&i| full[i] > 0)
                    .map(|i| (full[i] - cap[i]) as f64 / full[i] as f64)
                    .collect();
                let min = utils.iter().copied().fold(f64::INFINITY, f64::min);
                let mean = utils.iter().sum::<f64>() / utils.len().max(1) as f64;
                let score = (!fx.type_gpu[t] || gpu_work, min, mean);
                let better = match &best {
                    None => true,
                    Some((b, _)) => {
                        score
                            .0
                            .cmp(&b.0)
                            .then(score.1.total_cmp(&b.1))
                            .then(score.2.total_cmp(&b.2))
                            == std::cmp::Ordering::Greater
                    }
                };
                if better {
                    best = Some((score, t));
                    best_take.copy_from_slice(&take);
                }
            }
            let Some((_, t)) = best else {
                break;
            };
            // The same fill repeats while every item it takes from has that much left.
            let repeat = items
                .iter()
                .enumerate()
                .filter(|(k, _)| best_take[*k] > 0)
                .map(|(k, _)| left[k] / best_take[k])
                .min()
                .unwrap_or(1)
                .max(1);
            let Some(g) = self.open(t, repeat) else {
                break;
            };
            let bins = self.groups[g].mult;
            for (k, &(sid, _, unit)) in items.iter().enumerate() {
                if best_take[k] > 0 {
                    self.take(g, &fx.shapes[sid], best_take[k], bins, unit);
                    left[k] -= best_take[k] * bins;
                }
            }
        }
        left
    }

    fn begin(&mut self) {
        self.undo = Some(Undo {
            len: self.groups.len(),
            saved: Vec::new(),
            type_room: self.type_room.clone(),
            global_room: self.global_room,
            next_ordinal: self.next_ordinal,
        });
    }

    fn commit(&mut self) {
        self.undo = None;
    }

    fn rollback(&mut self) {
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

    /// Places one placement group, all bundles or none. On failure, returns the shape that
    /// found no room.
    fn place_gang(&mut self, gang: &GangItem, unit: u32) -> Result<(), usize> {
        self.begin();
        let result = self.try_gang(gang, unit);
        match result {
            Ok(()) => self.commit(),
            Err(_) => self.rollback(),
        }
        result
    }

    /// Places one placement group the way Ray's scheduler does (`_sched_gang_resource_requests`):
    /// `STRICT_PACK` as one bundle (the sum), `STRICT_SPREAD` one bundle per node, `PACK` and
    /// `SPREAD` as plain bundles; existing bins best scoring first, then the best scoring new
    /// nodes ([`Packer::place_like_ray`]). All bundles or none; on failure, returns a shape that
    /// found no room.
    fn place_gang_like_ray(&mut self, gang: &GangItem, unit: u32) -> Result<(), usize> {
        let fx = self.fx;
        let mut items: Vec<(usize, u64, u32)> = Vec::new();
        if gang.strategy == Strategy::StrictPack {
            items.push((gang.sum, 1, unit));
        } else {
            let mut shapes = gang.bundles.clone();
            shapes.sort_by(|&a, &b| ray_order(&fx.shapes[a], &fx.shapes[b]).then(a.cmp(&b)));
            for sid in shapes {
                match items.last_mut() {
                    Some(last) if last.0 == sid => last.1 += 1,
                    _ => items.push((sid, 1, unit)),
                }
            }
        }
        self.begin();
        let left = self.place_like_ray(&items, gang.strategy == Strategy::StrictSpread);
        match items.iter().zip(&left).find(|(_, l)| **l > 0) {
            None => {
                self.commit();
                Ok(())
            }
            Some((item, _)) => {
                self.rollback();
                Err(item.0)
            }
        }
    }

    fn try_gang(&mut self, gang: &GangItem, unit: u32) -> Result<(), usize> {
        let fx = self.fx;
        match gang.strategy {
            Strategy::StrictPack => {
                let s = &fx.shapes[gang.sum];
                let g = match self.find_one(gang.sum, |_| true) {
                    Some(g) => g,
                    None => self.open_for(s, 1).ok_or(gang.sum)?,
                };
                self.take(g, s, 1, 1, unit);
            }
            Strategy::StrictSpread => {
                let mut used: Vec<usize> = Vec::new();
                for &b in &gang.bundles {
                    let s = &fx.shapes[b];
                    let g = match self.find_one(b, |i| !used.contains(&i)) {
                        Some(g) => g,
                        None => self.open_for(s, 1).ok_or(b)?,
                    };
                    self.take(g, s, 1, 1, unit);
                    used.push(g);
                }
            }
            Strategy::Pack | Strategy::Spread => {
                let spread = gang.strategy == Strategy::Spread;
                let mut used: Vec<usize> = Vec::new();
                for (k, &b) in gang.bundles.iter().enumerate() {
                    let s = &fx.shapes[b];
                    let mut g = if spread {
                        self.find_one(b, |i| !used.contains(&i))
                    } else {
                        None
                    };
                    if g.is_none() {
                        g = self.find_one(b, |_| true);
                    }
                    if g.is_none() {
                        g = if spread {
                            self.open_for(s, 1)
                        } else {
                            self.open_for_pack(&gang.bundles[k..])
                        };
                    }
                    let g = g.ok_or(b)?;
                    self.take(g, s, 1, 1, unit);
                    used.push(g);
                }
            }
        }
        Ok(())
    }

    /// A new node for the first of `rest` (a `PACK` group's unplaced bundles): of a type that
    /// holds them all if there is one, else the best for the first bundle.
    fn open_for_pack(&mut self, rest: &[usize]) -> Option<usize> {
        let fx = self.fx;
        let first = &fx.shapes[rest[0]];
        if rest.len() > 1 {
            let mut v = first.v.clone();
            for &b in &rest[1..] {
                v = sum_vectors(&v, &fx.shapes[b].v);
            }
            let nz: Vec<usize> = (0..v.len()).filter(|&i| v[i] > 0).collect();
            let sum = Shape {
                gpu: rest.iter().any(|&b| fx.shapes[b].gpu),
                size: 0.0,
                v,
                nz,
            };
            if let Some(t) = self.best_type(&sum, 1) {
                return self.open(t, 1);
            }
        }
        let same = rest.iter().filter(|&&b| b == rest[0]).count() as u64;
        self.open_for(first, same)
    }

    /// Why a bundle of `s` got no new node.
    fn why(&self, s: &Shape) -> String {
        let fx = self.fx;
        let mut parts = Vec::new();
        let mut any = false;
        for (t, spec) in fx.types.iter().enumerate() {
            if spec.max_workers == 0 || fit(&fx.type_cap[t], s) == 0 {
                continue;
            }
            any = true;
            if let Some(b) = &fx.type_blocked[t] {
                parts.push(b.clone());
            } else if self.type_room[t] == 0 {
                parts.push(format!(
                    "node type {} is at its max_workers ({})",
                    spec.name, spec.max_workers
                ));
            }
        }
        if !any || fx.settings.max_workers == 0 {
            return format!(
                "no node type can launch a node for {}; waiting for existing nodes to free \
                 resources",
                show_vector(&s.v, fx.names)
            );
        }
        if self.global_room == 0 {
            parts.push(format!(
                "the cluster is at max_workers ({})",
                fx.settings.max_workers
            ));
        }
        if parts.is_empty() {
            parts.push("needs more new nodes than max_workers leaves room for".to_string());
        }
        parts.join("; ")
    }
}

// ---------------------------------------------------------------------------------------------
// Demand, merged by shape.

struct TaskItem {
    shape: usize,
    count: u64,
    /// The first input demand of this shape (for its resource map).
    first: usize,
}

struct GangItem {
    strategy: Strategy,
    /// Bundle shapes, biggest first.
    bundles: Vec<usize>,
    /// The shape of all bundles together.
    sum: usize,
    /// The identical input placement groups.
    inputs: Vec<usize>,
}

/// What a job is, once the nodes were looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Live {
    /// Queued (`started == false`) or started, no node yet.
    InFlight {
        started: bool,
    },
    /// Its node is in the GCS (or the scheduler says so).
    Joined,
    /// Started or joined, and its only Ray nodes are dead.
    NodeDead,
    Ended,
}

/// Computes what to do. Pure and deterministic; see the module documentation for the rules.
pub fn plan(input: &PlanInput) -> Plan {
    let PlanInput {
        nodes,
        demands,
        jobs,
        types,
        settings,
        health,
        now_ms,
    } = *input;
    let mut out = Plan::default();

    // --- Jobs and nodes.
    let type_index: HashMap<&str, usize> = types
        .iter()
        .enumerate()
        .rev()
        .map(|(i, t)| (t.name.as_str(), i))
        .collect();
    let mut instance_nodes: HashMap<&str, (bool, bool)> = HashMap::new(); // (not dead, dead)
    for n in nodes {
        if n.instance_id.is_empty() {
            continue;
        }
        let e = instance_nodes.entry(n.instance_id.as_str()).or_default();
        if n.status == NodeStatus::Dead {
            e.1 = true;
        } else {
            e.0 = true;
        }
    }
    let live: Vec<Live> = jobs
        .iter()
        .map(|j| {
            if j.phase == JobPhase::Ended {
                return Live::Ended;
            }
            match instance_nodes.get(j.job_id.as_str()) {
                Some((true, _)) => Live::Joined,
                // (A queued job with a dead node was requeued: it will start again.)
                Some((false, true)) if j.phase != JobPhase::Pending => Live::NodeDead,
                _ => match j.phase {
                    JobPhase::Pending => Live::InFlight { started: false },
                    JobPhase::Running => Live::InFlight { started: true },
                    _ => Live::Joined,
                },
            }
        })
        .collect();
    let job_of: HashMap<&str, usize> = jobs
        .iter()
        .enumerate()
        .filter(|(i, _)| live[*i] != Live::Ended)
        .map(|(i, j)| (j.job_id.as_str(), i))
        .collect();
    let ntypes = types.len();
    let job_type = |i: usize| type_index.get(jobs[i].node_type.as_str()).copied();
    let mut active_t = vec![0u64; ntypes]; // not ended
    let mut alive_t = vec![0u64; ntypes]; // not ended, node not dead
    let mut inflight_t = vec![0u64; ntypes];
    let (mut active_all, mut in_flight, mut joined) = (0u64, 0u64, 0u64);
    for (i, l) in live.iter().enumerate() {
        if *l == Live::Ended {
            continue;
        }
        active_all += 1;
        match l {
            Live::InFlight { .. } => in_flight += 1,
            Live::Joined => joined += 1,
            _ => {}
        }
        if let Some(t) = job_type(i) {
            active_t[t] += 1;
            if *l != Live::NodeDead {
                alive_t[t] += 1;
            }
            if matches!(l, Live::InFlight { .. }) {
                inflight_t[t] += 1;
            }
        }
    }
    let is_head = |n: &ObservedNode| {
        n.node_type == HEAD_NODE_TYPE_NAME || n.total.contains_key("node:__internal_head__")
    };
    // Alive nodes that may take work (not those whose job ended), in the order bins are tried.
    let ended: std::collections::HashSet<&str> = jobs
        .iter()
        .zip(&live)
        .filter(|(_, l)| **l == Live::Ended)
        .map(|(j, _)| j.job_id.as_str())
        .collect();
    let mut alive: Vec<usize> = (0..nodes.len())
        .filter(|&i| {
            let n = &nodes[i];
            let gone = ended.contains(n.instance_id.as_str())
                && !job_of.contains_key(n.instance_id.as_str());
            matches!(n.status, NodeStatus::Running | NodeStatus::Idle) && !gone
        })
        .collect();
    let class = |n: &ObservedNode| -> (u8, u64) {
        if is_head(n) {
            (0, 0)
        } else if !job_of.contains_key(n.instance_id.as_str()) {
            (1, 0)
        } else if n.status == NodeStatus::Running {
            (2, 0)
        } else {
            (3, n.idle_ms)
        }
    };
    alive.sort_by(|&a, &b| {
        class(&nodes[a])
            .cmp(&class(&nodes[b]))
            .then(nodes[a].node_id.cmp(&nodes[b].node_id))
    });

    // --- The resource names that matter, and the shapes.
    let mut uni = Universe::default();
    for d in demands {
        match d {
            Demand::Tasks { bundle, .. } | Demand::Constraint { bundle, .. } => uni.add(bundle),
            Demand::Gang { bundles, .. } => bundles.iter().for_each(|b| uni.add(b)),
        }
    }
    let gpu_index = uni.index.get("GPU").copied();
    let type_cap: Vec<Vec<u64>> = types.iter().map(|t| uni.vector(&t.resources)).collect();
    let node_total: Vec<Vec<u64>> = nodes.iter().map(|n| uni.vector(&n.total)).collect();
    let mut max_cap = vec![0u64; uni.names.len()];
    for c in type_cap.iter().chain(alive.iter().map(|&i| &node_total[i])) {
        for (m, x) in max_cap.iter_mut().zip(c) {
            *m = (*m).max(*x);
        }
    }
    let mut shapes: Vec<Shape> = Vec::new();
    let mut shape_ids: HashMap<Vec<u64>, usize> = HashMap::new();
    let mut intern = |v: Vec<u64>, shapes: &mut Vec<Shape>| -> usize {
        if let Some(&i) = shape_ids.get(&v) {
            return i;
        }
        shapes.push(Shape::new(v.clone(), gpu_index, &max_cap));
        shape_ids.insert(v, shapes.len() - 1);
        shapes.len() - 1
    };
    let launchable = |t: usize| types[t].max_workers > 0 && settings.max_workers > 0;
    let mut feasible_memo: HashMap<usize, bool> = HashMap::new();
    let mut feasible = |sid: usize, shapes: &[Shape]| -> bool {
        *feasible_memo.entry(sid).or_insert_with(|| {
            let s = &shapes[sid];
            (0..ntypes).any(|t| launchable(t) && fit(&type_cap[t], s) > 0)
                || alive.iter().any(|&n| fit(&node_total[n], s) > 0)
        })
    };

    let mut tasks: Vec<TaskItem> = Vec::new();
    let mut constraints: Vec<TaskItem> = Vec::new();
    let mut gangs: Vec<GangItem> = Vec::new();
    let mut task_of: HashMap<usize, usize> = HashMap::new();
    let mut constraint_of: HashMap<usize, usize> = HashMap::new();
    let mut gang_of: HashMap<(Strategy, Vec<usize>), usize> = HashMap::new();
    for (i, d) in demands.iter().enumerate() {
        match d {
            Demand::Tasks { bundle, count } | Demand::Constraint { bundle, count } => {
                let v = uni.vector(bundle);
                if *count == 0 || v.iter().all(|x| *x == 0) {
                    continue; // nothing asked for: any node holds it
                }
                let sid = intern(v, &mut shapes);
                if !feasible(sid, &shapes) {
                    out.infeasible.push(d.clone());
                    continue;
                }
                let (items, index) = if matches!(d, Demand::Tasks { .. }) {
                    (&mut tasks, &mut task_of)
                } else {
                    (&mut constraints, &mut constraint_of)
                };
                match index.get(&sid) {
                    Some(&k) => items[k].count = items[k].count.saturating_add(*count),
                    None => {
                        index.insert(sid, items.len());
                        items.push(TaskItem {
                            shape: sid,
                            count: *count,
                            first: i,
                        });
                    }
                }
            }
            Demand::Gang {
                bundles, strategy, ..
            } => {
                if bundles.is_empty() {
                    continue;
                }
                let vs: Vec<Vec<u64>> = bundles.iter().map(|b| uni.vector(b)).collect();
                let total = vs
                    .iter()
                    .fold(vec![0u64; uni.names.len()], |a, v| sum_vectors(&a, v));
                let mut sids: Vec<usize> = vs.into_iter().map(|v| intern(v, &mut shapes)).collect();
                let sum = intern(total, &mut shapes);
                let ok = match strategy {
                    Strategy::StrictPack => feasible(sum, &shapes),
                    _ => sids.iter().all(|&s| feasible(s, &shapes)),
                };
                if !ok {
                    out.infeasible.push(d.clone());
                    continue;
                }
                sids.sort_by(|&a, &b| shape_order(&shapes[a], &shapes[b]).then(a.cmp(&b)));
                match gang_of.get(&(*strategy, sids.clone())) {
                    Some(&k) => gangs[k].inputs.push(i),
                    None => {
                        gang_of.insert((*strategy, sids.clone()), gangs.len());
                        gangs.push(GangItem {
                            strategy: *strategy,
                            bundles: sids,
                            sum,
                            inputs: vec![i],
                        });
                    }
                }
            }
        }
    }
    tasks.sort_by(|a, b| shape_order(&shapes[a.shape], &shapes[b.shape]));
    constraints.sort_by(|a, b| shape_order(&shapes[a.shape], &shapes[b.shape]));
    let strict = |s: Strategy| matches!(s, Strategy::StrictPack | Strategy::StrictSpread);
    gangs.sort_by(|a, b| {
        strict(b.strategy)
            .cmp(&strict(a.strategy))
            .then(shapes[b.sum].size.total_cmp(&shapes[a.sum].size))
            .then(a.inputs[0].cmp(&b.inputs[0]))
    });

    // --- Types: capacity, and whether they may get jobs.
    let type_blocked: Vec<Option<String>> = types
        .iter()
        .map(|t| {
            let h = health.get(&t.name)?;
            let err = h
                .last_error
                .as_deref()
                .map(|e| format!(" (last error: {e})"))
                .unwrap_or_default();
            if h.gave_up {
                Some(format!(
                    "node type {} gave up after {} refused submissions{err}",
                    t.name, h.consecutive_failures
                ))
            } else if h.blocked(now_ms) {
                Some(format!(
                    "node type {} is backing off for {}s after {} refused submissions{err}",
                    t.name,
                    (h.retry_after_ms - now_ms).div_ceil(1000),
                    h.consecutive_failures
                ))
            } else {
                None
            }
        })
        .collect();
    let fixed = Fixed {
        shapes: &shapes,
        names: &uni.names,
        type_gpu: types
            .iter()
            .map(|t| t.resources.get("GPU").is_some_and(|g| fx(*g) > 0))
            .collect(),
        type_ok: (0..ntypes)
            .map(|t| launchable(t) && type_blocked[t].is_none())
            .collect(),
        type_cap,
        gpu_index,
        type_blocked,
        types,
        settings,
    };
    let base_groups = |total: bool| -> Vec<Group> {
        let mut g: Vec<Group> = alive
            .iter()
            .map(|&i| Group {
                cap: if total {
                    node_total[i].clone()
                } else {
                    uni.vector(&nodes[i].available)
                },
                mult: 1,
                origin: Origin::Node(i),
                used: false,
                lo: 0,
                placed: Vec::new(),
                gpu: nodes[i].total.get("GPU").is_some_and(|g| fx(*g) > 0),
                total: node_total[i].clone(),
                kinds: 0,
            })
            .collect();
        for (t, &n) in inflight_t.iter().enumerate() {
            if n > 0 {
                g.push(Group {
                    cap: fixed.type_cap[t].clone(),
                    mult: n,
                    origin: Origin::Pending(t),
                    used: false,
                    lo: 0,
                    placed: Vec::new(),
                    gpu: fixed.type_gpu[t],
                    total: fixed.type_cap[t].clone(),
                    kinds: 0,
                });
            }
        }
        g
    };
    let mut cp = Packer::new(
        &fixed,
        base_groups(true),
        (0..ntypes)
            .map(|t| u64::from(types[t].max_workers).saturating_sub(active_t[t]))
            .collect(),
        u64::from(settings.max_workers).saturating_sub(active_all),
        0,
    );

    // --- min_workers.
    for t in 0..ntypes {
        let deficit = u64::from(types[t].min_workers).saturating_sub(alive_t[t]);
        if deficit > 0 && fixed.type_ok[t] {
            cp.open(t, deficit);
        }
    }

    // --- Constraints, on total capacity.
    let mut c_unmet: Vec<Vec<(String, u64)>> = vec![Vec::new(); constraints.len()];
    let items: Vec<(usize, u64, u32)> = constraints
        .iter()
        .enumerate()
        .map(|(k, c)| (c.shape, c.count, k as u32))
        .collect();
    for (k, left) in cp.place_items(&items).into_iter().enumerate() {
        if left > 0 {
            c_unmet[k].push((cp.why(&shapes[constraints[k].shape]), left));
        }
    }

    // --- Placement groups and tasks, on available capacity. A few ways: with the alive nodes in
    // their order, busiest first (roughly the nodes Ray's scheduler scores best), and the
    // groups placed as Ray's scheduler places them; the plan that places more, then opens
    // fewer nodes, is kept (the first on a tie).
    // Units: gang instances first (by input index), then task items.
    let gang_units = demands.len() as u32;
    let items: Vec<(usize, u64, u32)> = tasks
        .iter()
        .enumerate()
        .map(|(k, item)| (item.shape, item.count, gang_units + k as u32))
        .collect();
    let place_demand = |busiest_first: bool, gangs_like_ray: bool| {
        let mut groups = base_groups(false);
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
        groups.extend(
            cp.groups
                .iter()
                .filter(|g| matches!(g.origin, Origin::New(_)))
                .map(|g| Group {
                    cap: match g.origin {
                        Origin::New(t) => fixed.type_cap[t].clone(),
                        _ => g.cap.clone(),
                    },
                    used: false,
                    placed: Vec::new(),
                    kinds: 0,
                    ..g.clone()
                }),
        );
        let mut dp = Packer::new(
            &fixed,
            groups,
            cp.type_room.clone(),
            cp.global_room,
            cp.next_ordinal,
        );
        let mut gang_unmet: HashMap<usize, String> = HashMap::new(); // input index -> why
        // (gang, input): ours in the order above; Ray's by constraints then bundles (more
        // first: strict groups with more bundles first), then as they came.
        let mut order: Vec<(usize, usize)> = gangs
            .iter()
            .enumerate()
            .flat_map(|(g, gang)| gang.inputs.iter().map(move |&i| (g, i)))
            .collect();
        if gangs_like_ray {
            let ray_key = |&(g, i): &(usize, usize)| {
                let n = gangs[g].bundles.len();
                let constraints = if strict(gangs[g].strategy) { n } else { 0 };
                (std::cmp::Reverse((constraints, n)), i)
            };
            order.sort_by_key(ray_key);
        }
        // Identical groups after one that found no room find none either.
        let mut failed: HashMap<usize, String> = HashMap::new();
        for (g, i) in order {
            let gang = &gangs[g];
            if let Some(why) = failed.get(&g) {
                gang_unmet.insert(i, why.clone());
                continue;
            }
            let placed = if gangs_like_ray {
                dp.place_gang_like_ray(gang, i as u32)
            } else {
                dp.place_gang(gang, i as u32)
            };
            if let Err(sid) = placed {
                let why = dp.why(&shapes[sid]);
                gang_unmet.insert(i, why.clone());
                failed.insert(g, why);
            }
        }
        let left = dp.place_items(&items);
        (dp, gang_unmet, left)
    };
    let key = |r: &(Packer, HashMap<usize, String>, Vec<u64>)| {
        (r.1.len(), r.2.iter().sum::<u64>(), r.0.next_ordinal)
    };
    let mut best = place_demand(false, false);
    let busiest = place_demand(true, false);
    if key(&busiest) < key(&best) {
        best = busiest;
    }
    // Ray's way for the groups scores every bin for each group: only while that stays small.
    let gang_inputs: usize = gangs.iter().map(|g| g.inputs.len()).sum();
    if gang_inputs > 0 && gang_inputs.saturating_mul(alive.len() + ntypes) <= GANG_SCORING_BUDGET {
        let like_ray = place_demand(false, true);
        if key(&like_ray) < key(&best) {
            best = like_ray;
        }
    }
    let (dp, gang_unmet, left) = best;
    let mut t_unmet: Vec<Vec<(String, u64)>> = vec![Vec::new(); tasks.len()];
    for (k, left) in left.into_iter().enumerate() {
        if left > 0 {
            t_unmet[k].push((dp.why(&shapes[tasks[k].shape]), left));
        }
    }

    // --- The upscaling caps: which new nodes go now.
    let speed = settings.upscaling_speed.max(0.0) * joined as f64;
    let speed_cap = if speed.is_finite() {
        speed.ceil().min(u64::MAX as f64) as u64
    } else {
        u64::MAX
    };
    let cap = speed_cap.max(5).min(u64::from(settings.max_pending_jobs));
    let budget = cap.saturating_sub(in_flight);
    let rate_why = format!(
        "upscaling limit: {in_flight} worker jobs in flight, at most {cap} at once \
         (upscaling_speed {}, {joined} joined; max_pending_jobs {})",
        settings.upscaling_speed, settings.max_pending_jobs
    );
    let dropped = |g: &Group| g.mult - g.mult.min(budget.saturating_sub(g.lo));
    let mut submit = vec![0u64; ntypes];
    let mut rate_left: HashMap<u32, u64> = HashMap::new();
    for g in &dp.groups {
        if let Origin::New(t) = g.origin {
            let d = dropped(g);
            submit[t] += g.mult - d;
            if d > 0 {
                for (u, per_bin) in &g.placed {
                    let e = rate_left.entry(*u).or_default();
                    *e = e.saturating_add(per_bin.saturating_mul(d));
                }
            }
        }
    }
    for g in &cp.groups {
        if let Origin::New(_) = g.origin {
            let d = dropped(g);
            for (u, per_bin) in g.placed.iter().filter(|_| d > 0) {
                let n = per_bin.saturating_mul(d);
                let list = &mut c_unmet[*u as usize];
                match list.iter_mut().find(|(w, _)| *w == rate_why) {
                    Some((_, c)) => *c = c.saturating_add(n),
                    None => list.push((rate_why.clone(), n)),
                }
            }
        }
    }
    for (t, n) in submit.iter().enumerate() {
        if *n > 0 {
            out.submit
                .push((types[t].name.clone(), (*n).min(u64::from(u32::MAX)) as u32));
        }
    }

    // --- Waiting demand, in input order.
    let mut waiting: Vec<(usize, Demand, String)> = Vec::new();
    for gang in &gangs {
        for &i in &gang.inputs {
            let why = gang_unmet.get(&i).cloned().or_else(|| {
                rate_left
                    .get(&(i as u32))
                    .filter(|n| **n > 0)
                    .map(|_| rate_why.clone())
            });
            if let Some(why) = why {
                waiting.push((i, demands[i].clone(), why));
            }
        }
    }
    let with_count = |d: &Demand, n: u64| match d {
        Demand::Tasks { bundle, .. } => Demand::Tasks {
            bundle: bundle.clone(),
            count: n,
        },
        Demand::Constraint { bundle, .. } => Demand::Constraint {
            bundle: bundle.clone(),
            count: n,
        },
        other => other.clone(),
    };
    for (k, item) in tasks.iter().enumerate() {
        let mut list = std::mem::take(&mut t_unmet[k]);
        if let Some(n) = rate_left.get(&(gang_units + k as u32)).filter(|n| **n > 0) {
            list.push((rate_why.clone(), *n));
        }
        for (why, n) in list {
            waiting.push((item.first, with_count(&demands[item.first], n), why));
        }
    }
    for (k, item) in constraints.iter().enumerate() {
        for (why, n) in std::mem::take(&mut c_unmet[k]) {
            waiting.push((item.first, with_count(&demands[item.first], n), why));
        }
    }
    waiting.sort_by_key(|w| w.0);
    out.waiting = waiting.into_iter().map(|(_, d, w)| (d, w)).collect();

    // --- What is needed: pending jobs per type, and nodes.
    let mut needed_t = vec![0u64; ntypes];
    let mut needed_node = vec![false; nodes.len()];
    for p in [&cp, &dp] {
        let mut used_t = vec![0u64; ntypes];
        for g in p.groups.iter().filter(|g| g.used) {
            match g.origin {
                Origin::Pending(t) => used_t[t] += g.mult,
                Origin::Node(n) => needed_node[n] = true,
                Origin::New(_) => {}
            }
        }
        for t in 0..ntypes {
            needed_t[t] = needed_t[t].max(used_t[t]);
        }
    }

    // --- Cancel.
    let mut cancelled = vec![false; jobs.len()];
    let mut cancel_dead: Vec<(String, String)> = Vec::new();
    let mut cancel_rest: Vec<(usize, String)> = Vec::new();
    for (i, j) in jobs.iter().enumerate() {
        if live[i] == Live::NodeDead {
            cancelled[i] = true;
            cancel_dead.push((j.job_id.clone(), "its Ray node is dead".to_string()));
        } else if live[i] == (Live::InFlight { started: false }) && job_type(i).is_none() {
            cancelled[i] = true;
            cancel_rest.push((i, format!("node type {} is not configured", j.node_type)));
        }
    }
    let newest_first = |a: &usize, b: &usize| {
        jobs[*b]
            .submitted_ms
            .cmp(&jobs[*a].submitted_ms)
            .then(jobs[*b].job_id.cmp(&jobs[*a].job_id))
    };
    let mut removed_t = vec![0u64; ntypes]; // live jobs going away, per type
    for t in 0..ntypes {
        let started = (0..jobs.len())
            .filter(|&i| job_type(i) == Some(t) && live[i] == (Live::InFlight { started: true }))
            .count() as u64;
        let mut queued: Vec<usize> = (0..jobs.len())
            .filter(|&i| job_type(i) == Some(t) && live[i] == (Live::InFlight { started: false }))
            .collect();
        queued.sort_by(newest_first);
        let keep = needed_t[t].saturating_sub(started) as usize;
        let unneeded = queued
            .len()
            .saturating_sub(keep)
            .min(alive_t[t].saturating_sub(u64::from(types[t].min_workers)) as usize);
        let over = active_t[t].saturating_sub(u64::from(types[t].max_workers)) as usize;
        for (k, &i) in queued.iter().enumerate().take(unneeded.max(over)) {
            let why = if k < over {
                format!(
                    "over node type {}'s max_workers ({})",
                    types[t].name, types[t].max_workers
                )
            } else {
                "queued job no longer needed by any demand".to_string()
            };
            cancelled[i] = true;
            removed_t[t] += 1;
            cancel_rest.push((i, why));
        }
    }
    let remaining_all = active_all - cancelled.iter().filter(|c| **c).count() as u64;
    let over_all = remaining_all.saturating_sub(u64::from(settings.max_workers)) as usize;
    if over_all > 0 {
        let mut queued: Vec<usize> = (0..jobs.len())
            .filter(|&i| !cancelled[i] && live[i] == (Live::InFlight { started: false }))
            .collect();
        queued.sort_by(newest_first);
        for &i in queued.iter().take(over_all) {
            cancelled[i] = true;
            if let Some(t) = job_type(i) {
                removed_t[t] += 1;
            }
            cancel_rest.push((
                i,
                format!("over the cluster's max_workers ({})", settings.max_workers),
            ));
        }
    }
    cancel_rest.sort_by(|a, b| newest_first(&a.0, &b.0));
    out.cancel = cancel_dead;
    out.cancel.extend(
        cancel_rest
            .into_iter()
            .map(|(i, why)| (jobs[i].job_id.clone(), why)),
    );

    // --- Drain idle nodes, most idle first.
    let mut idle: Vec<(usize, usize, usize)> = Vec::new(); // (node, job, type)
    for &n in &alive {
        let node = &nodes[n];
        if node.status != NodeStatus::Idle
            || node.idle_ms <= settings.idle_timeout_ms
            || is_head(node)
            || needed_node[n]
        {
            continue;
        }
        let Some(&j) = job_of.get(node.instance_id.as_str()) else {
            continue;
        };
        if cancelled[j] {
            continue;
        }
        let Some(t) = job_type(j) else {
            idle.push((n, j, usize::MAX));
            continue;
        };
        idle.push((n, j, t));
    }
    idle.sort_by(|a, b| {
        nodes[b.0]
            .idle_ms
            .cmp(&nodes[a.0].idle_ms)
            .then(nodes[a.0].node_id.cmp(&nodes[b.0].node_id))
    });
    let mut drained_nodes: std::collections::HashSet<&str> = std::collections::HashSet::new();
    let mut drained_jobs: std::collections::HashSet<usize> = std::collections::HashSet::new();
    for (n, j, t) in idle {
        if drained_nodes.contains(nodes[n].node_id.as_str()) {
            continue;
        }
        if t != usize::MAX && !drained_jobs.contains(&j) {
            let left = alive_t[t].saturating_sub(removed_t[t]);
            if left <= u64::from(types[t].min_workers) {
                continue;
            }
            removed_t[t] += 1;
        }
        drained_nodes.insert(nodes[n].node_id.as_str());
        drained_jobs.insert(j);
        out.drain.push((
            nodes[n].node_id.clone(),
            jobs[j].job_id.clone(),
            format!(
                "idle for {}s (idle_timeout {}s)",
                nodes[n].idle_ms / 1000,
                settings.idle_timeout_ms / 1000
            ),
        ));
    }
    out
}

#[cfg(test)]
mod tests;
