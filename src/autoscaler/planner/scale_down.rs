//! Scaling down.
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

use std::cmp::Ordering;
use std::collections::HashSet;

use super::cluster::{Cluster, Live, is_head};
use super::packing::{Origin, Packer};
use super::{Cancel, Drain, NodeStatus, PlanInput, WorkerJob};

/// What the plans for demand and constraints use.
pub(super) struct Needed {
    /// Per node type: the jobs in flight that some plan puts demand on (the most of any plan).
    per_type: Vec<u64>,
    /// Per node of the input: some plan puts demand on it.
    nodes: Vec<bool>,
}

impl Needed {
    pub(super) fn of(input: &PlanInput, plans: &[&Packer]) -> Needed {
        let types = input.types.len();
        let mut needed = Needed {
            per_type: vec![0u64; types],
            nodes: vec![false; input.nodes.len()],
        };
        for p in plans {
            let mut used_t = vec![0u64; types];
            for g in p.groups.iter().filter(|g| g.used) {
                match g.origin {
                    Origin::Pending(t) => used_t[t] += g.mult,
                    Origin::Node(n) => needed.nodes[n] = true,
                    Origin::New(_) => {}
                }
            }
            for (need, used) in needed.per_type.iter_mut().zip(used_t) {
                *need = (*need).max(used);
            }
        }
        needed
    }
}

/// The jobs to cancel.
pub(super) struct Cancellations {
    /// Jobs whose Ray node died (in job order), then queued jobs, newest first.
    pub(super) list: Vec<Cancel>,
    /// Per job: cancelled.
    cancelled: Vec<bool>,
    /// Per node type: live jobs cancelled.
    removed_per_type: Vec<u64>,
}

/// The jobs to cancel: those whose node died, queued jobs of types no longer configured, queued
/// jobs no demand needs or over a `max_workers`.
pub(super) fn cancel(input: &PlanInput, cluster: &Cluster, needed: &Needed) -> Cancellations {
    let mut c = Cancelling {
        jobs: input.jobs,
        cluster,
        cancelled: vec![false; input.jobs.len()],
        dead: Vec::new(),
        queued: Vec::new(),
        removed_per_type: vec![0u64; input.types.len()],
    };
    c.dead_and_unconfigured();
    c.per_type(input, needed);
    c.over_cluster_max(input.settings.max_workers);
    c.done()
}

/// Cancellations being chosen.
struct Cancelling<'a> {
    jobs: &'a [WorkerJob],
    cluster: &'a Cluster<'a>,
    cancelled: Vec<bool>,
    /// Started or joined jobs whose node died.
    dead: Vec<Cancel>,
    /// Queued jobs.
    queued: Vec<QueuedCancel>,
    removed_per_type: Vec<u64>,
}

impl Cancelling<'_> {
    /// Jobs whose Ray node died, and queued jobs of a type that is not configured.
    fn dead_and_unconfigured(&mut self) {
        let live = &self.cluster.live;
        for (i, j) in self.jobs.iter().enumerate() {
            if live[i] == Live::NodeDead {
                self.cancelled[i] = true;
                self.dead.push(Cancel {
                    job_id: j.job_id.clone(),
                    why: "its Ray node is dead".to_string(),
                });
            } else if live[i] == (Live::InFlight { started: false })
                && self.cluster.job_type(i).is_none()
            {
                self.cancel_queued(i, format!("node type {} is not configured", j.node_type));
            }
        }
    }

    /// Per type, queued jobs newest first: those over its `max_workers`, and those no demand
    /// needs as long as the type keeps `min_workers`.
    fn per_type(&mut self, input: &PlanInput, needed: &Needed) {
        let (live, jobs) = (&self.cluster.live, self.jobs);
        for (t, spec) in input.types.iter().enumerate() {
            let of_type = |i: &usize| self.cluster.job_type(*i) == Some(t);
            let started = (0..jobs.len())
                .filter(of_type)
                .filter(|&i| live[i] == (Live::InFlight { started: true }))
                .count() as u64;
            let mut queued: Vec<usize> = (0..jobs.len())
                .filter(of_type)
                .filter(|&i| live[i] == (Live::InFlight { started: false }))
                .collect();
            queued.sort_by(|a, b| newest_first(jobs, *a, *b));
            let counts = &self.cluster.per_type[t];
            let keep = needed.per_type[t].saturating_sub(started) as usize;
            let unneeded = queued
                .len()
                .saturating_sub(keep)
                .min(counts.alive.saturating_sub(u64::from(spec.min_workers)) as usize);
            let over = counts.active.saturating_sub(u64::from(spec.max_workers)) as usize;
            for (k, &i) in queued.iter().enumerate().take(unneeded.max(over)) {
                let why = if k < over {
                    format!(
                        "over node type {}'s max_workers ({})",
                        spec.name, spec.max_workers
                    )
                } else {
                    "queued job no longer needed by any demand".to_string()
                };
                self.cancel_queued(i, why);
            }
        }
    }

    /// Queued jobs, newest first, while more jobs than the cluster's `max_workers` are left.
    fn over_cluster_max(&mut self, max_workers: u32) {
        let remaining = self.cluster.active - self.cancelled.iter().filter(|c| **c).count() as u64;
        let over = remaining.saturating_sub(u64::from(max_workers)) as usize;
        if over == 0 {
            return;
        }
        let jobs = self.jobs;
        let mut queued: Vec<usize> = (0..jobs.len())
            .filter(|&i| {
                !self.cancelled[i] && self.cluster.live[i] == (Live::InFlight { started: false })
            })
            .collect();
        queued.sort_by(|a, b| newest_first(jobs, *a, *b));
        for &i in queued.iter().take(over) {
            self.cancel_queued(i, format!("over the cluster's max_workers ({max_workers})"));
        }
    }

    /// Queued job `i`, for `why`; a live job of its type less.
    fn cancel_queued(&mut self, i: usize, why: String) {
        self.cancelled[i] = true;
        if let Some(t) = self.cluster.job_type(i) {
            self.removed_per_type[t] += 1;
        }
        self.queued.push(QueuedCancel { job: i, why });
    }

    fn done(mut self) -> Cancellations {
        let jobs = self.jobs;
        self.queued.sort_by(|a, b| newest_first(jobs, a.job, b.job));
        let mut list = self.dead;
        list.extend(self.queued.into_iter().map(|q| Cancel {
            job_id: jobs[q.job].job_id.clone(),
            why: q.why,
        }));
        Cancellations {
            list,
            cancelled: self.cancelled,
            removed_per_type: self.removed_per_type,
        }
    }
}

/// A queued job to cancel (by index), and why.
struct QueuedCancel {
    job: usize,
    why: String,
}

/// Orders jobs (by index) newest first.
fn newest_first(jobs: &[WorkerJob], a: usize, b: usize) -> Ordering {
    jobs[b]
        .submitted_ms
        .cmp(&jobs[a].submitted_ms)
        .then(jobs[b].job_id.cmp(&jobs[a].job_id))
}

/// An idle node that may be drained.
struct IdleNode {
    node: usize,
    job: usize,
    /// Its job's node type, if configured.
    node_type: Option<usize>,
}

/// Idle nodes to drain and then cancel, most idle first.
pub(super) fn drain(
    input: &PlanInput,
    cluster: &Cluster,
    needed: &Needed,
    cancels: &Cancellations,
) -> Vec<Drain> {
    let (nodes, jobs, settings) = (input.nodes, input.jobs, input.settings);
    let mut removed_t = cancels.removed_per_type.clone();
    let mut drained_nodes: HashSet<&str> = HashSet::new();
    let mut drained_jobs: HashSet<usize> = HashSet::new();
    let mut drain = Vec::new();
    for IdleNode {
        node: n,
        job: j,
        node_type,
    } in idle_nodes(input, cluster, needed, cancels)
    {
        if drained_nodes.contains(nodes[n].node_id.as_str()) {
            continue;
        }
        if let Some(t) = node_type
            && !drained_jobs.contains(&j)
        {
            let left = cluster.per_type[t].alive.saturating_sub(removed_t[t]);
            if left <= u64::from(input.types[t].min_workers) {
                continue;
            }
            removed_t[t] += 1;
        }
        drained_nodes.insert(nodes[n].node_id.as_str());
        drained_jobs.insert(j);
        drain.push(Drain {
            node_id: nodes[n].node_id.clone(),
            job_id: jobs[j].job_id.clone(),
            why: format!(
                "idle for {}s (idle_timeout {}s)",
                nodes[n].idle_ms / 1000,
                settings.idle_timeout_ms / 1000
            ),
        });
    }
    drain
}

/// The alive nodes idle for longer than `idle_timeout_ms`, of a live job not cancelled, not
/// the head and not needed: most idle first.
fn idle_nodes(
    input: &PlanInput,
    cluster: &Cluster,
    needed: &Needed,
    cancels: &Cancellations,
) -> Vec<IdleNode> {
    let nodes = input.nodes;
    let mut idle: Vec<IdleNode> = Vec::new();
    for &n in &cluster.alive {
        let node = &nodes[n];
        if node.status != NodeStatus::Idle
            || node.idle_ms <= input.settings.idle_timeout_ms
            || is_head(node)
            || needed.nodes[n]
        {
            continue;
        }
        let Some(&j) = cluster.job_of.get(node.instance_id.as_str()) else {
            continue;
        };
        if cancels.cancelled[j] {
            continue;
        }
        idle.push(IdleNode {
            node: n,
            job: j,
            node_type: cluster.job_type(j),
        });
    }
    idle.sort_by(|a, b| {
        nodes[b.node]
            .idle_ms
            .cmp(&nodes[a.node].idle_ms)
            .then(nodes[a.node].node_id.cmp(&nodes[b.node].node_id))
    });
    idle
}
