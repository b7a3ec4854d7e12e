//! The limits, and the reasons demand waits for them.
//!
//! `max_workers` per type and `Settings::max_workers` for all types count every job that has not
//! ended (pending, running, joined); they decide which types may be chosen at all. The
//! upscaling caps then decide how many of the chosen new nodes are submitted this round: at most
//! `min(max(5, ceil(upscaling_speed * joined)), max_pending_jobs)` jobs in flight (queued or
//! started, not yet joined), `min_workers` first, then constraints, placement groups, tasks.
//! Demand that did not get its nodes is in [`Plan::waiting`](super::Plan::waiting) with the
//! reason; demand no node type (and no alive node) can ever hold is in
//! [`Plan::infeasible`](super::Plan::infeasible) and never submitted. Jobs this plan cancels
//! still count against every limit until they have ended.
//!
//! A node type whose submissions the scheduler refused backs off ([`TypeHealth`]): no new jobs of
//! it until the wait is over, or ever again once it gave up.

use std::collections::HashMap;

use super::cluster::Cluster;
use super::packing::{Group, Origin, Packer};
use super::resources::{Shape, fit, show_vector};
use super::waiting::Unplaced;
use super::{NodeTypeSpec, PlanInput, Settings, Submit, TypeHealth};

impl TypeHealth {
    /// Records a refused submission at `now_ms`: the wait is `backoff_initial_ms` doubled per
    /// earlier consecutive refusal, at most `backoff_max_ms`; after `max_consecutive_failures`
    /// refusals in a row (if that is not 0) the type is given up.
    pub fn failed(&mut self, now_ms: u64, error: String, settings: &Settings) {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        let doublings = (self.consecutive_failures - 1).min(63);
        let wait = settings
            .backoff_initial_ms
            .saturating_mul(1u64 << doublings)
            .min(settings.backoff_max_ms);
        self.retry_after_ms = now_ms.saturating_add(wait);
        self.last_error = Some(error);
        if settings.max_consecutive_failures > 0
            && self.consecutive_failures >= settings.max_consecutive_failures
        {
            self.gave_up = true;
        }
    }

    /// Records an accepted submission: everything is forgotten.
    pub fn succeeded(&mut self) {
        *self = TypeHealth::default();
    }

    /// Whether the type may not be submitted at `now_ms` (backing off, or given up).
    pub fn blocked(&self, now_ms: u64) -> bool {
        self.gave_up || now_ms < self.retry_after_ms
    }
}

/// Whether a node of type `spec` may ever be launched (the limits allow some).
pub(super) fn launchable(spec: &NodeTypeSpec, settings: &Settings) -> bool {
    spec.max_workers > 0 && settings.max_workers > 0
}

/// Per node type: why it may not get new jobs now (backing off, or given up), if so.
pub(super) fn blocked_reasons(input: &PlanInput) -> Vec<Option<String>> {
    let now_ms = input.now_ms;
    input
        .types
        .iter()
        .map(|t| {
            let h = input.health.get(&t.name)?;
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
        .collect()
}

/// Room for new jobs under `max_workers`: every job that has not ended counts.
pub(super) struct Room {
    pub(super) per_type: Vec<u64>,
    pub(super) all: u64,
}

impl Room {
    pub(super) fn left(input: &PlanInput, cluster: &Cluster) -> Room {
        Room {
            per_type: input
                .types
                .iter()
                .zip(&cluster.per_type)
                .map(|(t, jobs)| u64::from(t.max_workers).saturating_sub(jobs.active))
                .collect(),
            all: u64::from(input.settings.max_workers).saturating_sub(cluster.active),
        }
    }
}

/// `min_workers`: a type with fewer live (not ended, node not dead) jobs than its `min_workers`
/// gets new nodes up to it, first of all.
pub(super) fn open_min_workers(p: &mut Packer, types: &[NodeTypeSpec], cluster: &Cluster) {
    for (t, spec) in types.iter().enumerate() {
        let deficit = u64::from(spec.min_workers).saturating_sub(cluster.per_type[t].alive);
        if deficit > 0 && p.fx.type_ok[t] {
            p.open(t, deficit);
        }
    }
}

/// The upscaling caps: how many of the planned new nodes are submitted this round.
pub(super) struct UpscalingCap {
    /// New nodes before this in submission order go now.
    budget: u64,
    /// Why the others wait.
    pub(super) why: String,
}

/// The new nodes that go now.
pub(super) struct Launch {
    /// Jobs to submit, per node type.
    per_type: Vec<u64>,
    /// Per demand unit: the bundles whose new nodes wait for a later round.
    held_back: HashMap<u32, u64>,
    /// Why they wait.
    pub(super) why: String,
}

impl UpscalingCap {
    pub(super) fn new(settings: &Settings, cluster: &Cluster) -> UpscalingCap {
        let (in_flight, joined) = (cluster.in_flight, cluster.joined);
        let speed = settings.upscaling_speed.max(0.0) * joined as f64;
        let speed_cap = if speed.is_finite() {
            speed.ceil().min(u64::MAX as f64) as u64
        } else {
            u64::MAX
        };
        let cap = speed_cap.max(5).min(u64::from(settings.max_pending_jobs));
        UpscalingCap {
            budget: cap.saturating_sub(in_flight),
            why: format!(
                "upscaling limit: {in_flight} worker jobs in flight, at most {cap} at once \
                 (upscaling_speed {}, {joined} joined; max_pending_jobs {})",
                settings.upscaling_speed, settings.max_pending_jobs
            ),
        }
    }

    /// How many of the new nodes of group `g` wait for a later round.
    fn dropped(&self, g: &Group) -> u64 {
        g.mult - g.mult.min(self.budget.saturating_sub(g.lo))
    }

    /// The new nodes of `p` (the plan for placement groups and tasks) that go now.
    pub(super) fn launch(&self, p: &Packer) -> Launch {
        let mut launch = Launch {
            per_type: vec![0u64; p.fx.types.len()],
            held_back: HashMap::new(),
            why: self.why.clone(),
        };
        for g in &p.groups {
            if let Origin::New(t) = g.origin {
                let d = self.dropped(g);
                launch.per_type[t] += g.mult - d;
                if d > 0 {
                    for placed in &g.placed {
                        let e = launch.held_back.entry(placed.unit).or_default();
                        *e = e.saturating_add(placed.per_bin.saturating_mul(d));
                    }
                }
            }
        }
        launch
    }

    /// Adds to `unmet` (per constraint item) the constraint bundles of `p` (the plan for
    /// constraints) whose new nodes wait.
    pub(super) fn hold_back_constraints(&self, p: &Packer, unmet: &mut [Vec<Unplaced>]) {
        for g in &p.groups {
            if let Origin::New(_) = g.origin {
                let d = self.dropped(g);
                for placed in g.placed.iter().filter(|_| d > 0) {
                    let n = placed.per_bin.saturating_mul(d);
                    let list = &mut unmet[placed.unit as usize];
                    match list.iter_mut().find(|u| u.why == self.why) {
                        Some(u) => u.count = u.count.saturating_add(n),
                        None => list.push(Unplaced {
                            why: self.why.clone(),
                            count: n,
                        }),
                    }
                }
            }
        }
    }
}

impl Launch {
    /// The bundles of demand unit `unit` whose new nodes wait, if any.
    pub(super) fn held_back(&self, unit: u32) -> Option<u64> {
        self.held_back.get(&unit).copied().filter(|n| *n > 0)
    }

    /// Jobs to submit, in the config's type order.
    pub(super) fn submissions(&self, types: &[NodeTypeSpec]) -> Vec<Submit> {
        let mut submit = Vec::new();
        for (t, n) in self.per_type.iter().enumerate() {
            if *n > 0 {
                submit.push(Submit {
                    node_type: types[t].name.clone(),
                    count: (*n).min(u64::from(u32::MAX)) as u32,
                });
            }
        }
        submit
    }
}

impl Packer<'_> {
    /// Why a bundle of `s` got no new node.
    pub(super) fn why(&self, s: &Shape) -> String {
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
