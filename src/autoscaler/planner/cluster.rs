//! The jobs and the nodes, looked at together: which jobs are in flight, joined or gone, how
//! many of each type, and which nodes may take work.
//!
//! A job is joined when some node that is not dead carries its id as `instance_id`, whatever
//! the scheduler's (possibly older) phase says, so a node is never counted twice. A job the
//! scheduler suspended is no capacity (Ray may still list its stopped node as alive for a
//! while): demand its node held is planned elsewhere, while the job still counts against the
//! limits.

use std::collections::{HashMap, HashSet};

use super::{JobPhase, NodeStatus, ObservedNode, PlanInput, WorkerJob};
use crate::config::HEAD_NODE_TYPE_NAME;

/// What a job is, once the nodes were looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Live {
    /// Queued (`started == false`) or started, no node yet.
    InFlight {
        started: bool,
    },
    /// Its node is in the GCS (or the scheduler says so).
    Joined,
    /// Started or joined, and its only Ray nodes are dead.
    NodeDead,
    /// Stopped by the scheduler: counted against the limits, its node no capacity.
    Suspended,
    Ended,
}

/// The jobs of one node type, counted.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct TypeJobs {
    /// Not ended.
    pub(super) active: u64,
    /// Not ended, and the node is not dead.
    pub(super) alive: u64,
    /// Queued or started, not joined.
    pub(super) in_flight: u64,
}

/// Whether the nodes that carry a job's id as `instance_id` include an alive and a dead one.
#[derive(Debug, Clone, Copy, Default)]
struct InstanceNodes {
    alive: bool,
    dead: bool,
}

/// The observed jobs and nodes, as the planner counts them.
pub(super) struct Cluster<'a> {
    jobs: &'a [WorkerJob],
    /// Node types by name (the first of a name).
    type_index: HashMap<&'a str, usize>,
    /// Per job, in the input's order.
    pub(super) live: Vec<Live>,
    /// The jobs that have not ended, by id.
    pub(super) job_of: HashMap<&'a str, usize>,
    /// Per node type, in the config's order.
    pub(super) per_type: Vec<TypeJobs>,
    /// Jobs not ended, of every type (configured or not).
    pub(super) active: u64,
    /// Jobs queued or started, not joined.
    pub(super) in_flight: u64,
    pub(super) joined: u64,
    /// The nodes that may take work, in the order bins are tried.
    pub(super) alive: Vec<usize>,
}

impl<'a> Cluster<'a> {
    pub(super) fn observe(input: &PlanInput<'a>) -> Cluster<'a> {
        let jobs = input.jobs;
        let type_index: HashMap<&str, usize> = input
            .types
            .iter()
            .enumerate()
            .rev()
            .map(|(i, t)| (t.name.as_str(), i))
            .collect();
        let live = live_jobs(jobs, input.nodes);
        let job_of: HashMap<&str, usize> = jobs
            .iter()
            .enumerate()
            .filter(|(i, _)| live[*i] != Live::Ended)
            .map(|(i, j)| (j.job_id.as_str(), i))
            .collect();
        let mut cluster = Cluster {
            jobs,
            type_index,
            live,
            job_of,
            per_type: vec![TypeJobs::default(); input.types.len()],
            active: 0,
            in_flight: 0,
            joined: 0,
            alive: Vec::new(),
        };
        cluster.count_jobs();
        cluster.alive = cluster.alive_nodes(input.nodes);
        cluster
    }

    /// The node type of job `i`, if it is configured.
    pub(super) fn job_type(&self, i: usize) -> Option<usize> {
        self.type_index
            .get(self.jobs[i].node_type.as_str())
            .copied()
    }

    fn count_jobs(&mut self) {
        for (i, l) in self.live.iter().enumerate() {
            if *l == Live::Ended {
                continue;
            }
            self.active += 1;
            match l {
                Live::InFlight { .. } => self.in_flight += 1,
                Live::Joined => self.joined += 1,
                _ => {}
            }
            if let Some(t) = self.job_type(i) {
                let counts = &mut self.per_type[t];
                counts.active += 1;
                if !matches!(l, Live::NodeDead | Live::Suspended) {
                    counts.alive += 1;
                }
                if matches!(l, Live::InFlight { .. }) {
                    counts.in_flight += 1;
                }
            }
        }
    }

    /// The alive nodes that may take work (not those whose job ended), in the order bins are
    /// tried: the head, nodes of no live job, busy nodes, then idle nodes, the least idle
    /// first, so the most idle stay free to be handed back.
    fn alive_nodes(&self, nodes: &[ObservedNode]) -> Vec<usize> {
        let of_jobs = |state: Live| -> HashSet<&str> {
            self.jobs
                .iter()
                .zip(&self.live)
                .filter(|(_, l)| **l == state)
                .map(|(j, _)| j.job_id.as_str())
                .collect()
        };
        let (ended, suspended) = (of_jobs(Live::Ended), of_jobs(Live::Suspended));
        let mut alive: Vec<usize> = (0..nodes.len())
            .filter(|&i| {
                let n = &nodes[i];
                let gone = ended.contains(n.instance_id.as_str())
                    && !self.job_of.contains_key(n.instance_id.as_str());
                let stopped = suspended.contains(n.instance_id.as_str());
                matches!(n.status, NodeStatus::Running | NodeStatus::Idle) && !gone && !stopped
            })
            .collect();
        let class = |n: &ObservedNode| -> (u8, u64) {
            if is_head(n) {
                (0, 0)
            } else if !self.job_of.contains_key(n.instance_id.as_str()) {
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
        alive
    }
}

/// Whether `n` is the cluster's head node.
pub(super) fn is_head(n: &ObservedNode) -> bool {
    n.node_type == HEAD_NODE_TYPE_NAME || n.total.contains_key("node:__internal_head__")
}

/// What each job is, from its phase and the nodes that carry its id.
fn live_jobs(jobs: &[WorkerJob], nodes: &[ObservedNode]) -> Vec<Live> {
    let mut instance_nodes: HashMap<&str, InstanceNodes> = HashMap::new();
    for n in nodes {
        if n.instance_id.is_empty() {
            continue;
        }
        let e = instance_nodes.entry(n.instance_id.as_str()).or_default();
        if n.status == NodeStatus::Dead {
            e.dead = true;
        } else {
            e.alive = true;
        }
    }
    jobs.iter()
        .map(|j| {
            match j.phase {
                JobPhase::Ended => return Live::Ended,
                JobPhase::Suspended => return Live::Suspended,
                _ => {}
            }
            match instance_nodes.get(j.job_id.as_str()) {
                Some(InstanceNodes { alive: true, .. }) => Live::Joined,
                // (A queued job with a dead node was requeued: it will start again.)
                Some(InstanceNodes {
                    alive: false,
                    dead: true,
                }) if j.phase != JobPhase::Pending => Live::NodeDead,
                _ => match j.phase {
                    JobPhase::Pending => Live::InFlight { started: false },
                    JobPhase::Running => Live::InFlight { started: true },
                    _ => Live::Joined,
                },
            }
        })
        .collect()
}
