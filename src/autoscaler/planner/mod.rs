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

mod packing;
mod placement_groups;
mod resources;
mod types;

use packing::{Fixed, Group, Origin, Packer};
use resources::{Shape, Universe, fit, fx, shape_order, sum_vectors};
pub use types::{
    Demand, JobPhase, NodeStatus, NodeTypeSpec, ObservedNode, Plan, PlanInput, Resources, Settings,
    Strategy, TypeHealth, WorkerJob,
};

/// Placement groups are also placed as Ray's scheduler places them (each scoring every bin)
/// only up to this many groups times alive nodes: 500 groups on 500 nodes.
const GANG_SCORING_BUDGET: usize = 250_000;
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
