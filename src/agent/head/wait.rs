//! Waiting until every node of the allocation is alive in the GCS, while the agents register
//! and report; on failure, a message that says which nodes are missing and why.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::Head;
use super::bringup::Bringup;
use super::record::Absorbed;
use super::teardown::Running;
use crate::agent::control::{self, WorkerEvent};
use crate::agent::node;
use crate::agent::supervisor::tail_file;
use crate::ray::gcs::{GcsClient, GcsError};
use crate::scheduler::Allocation;

#[derive(Debug, thiserror::Error)]
pub(super) enum WaitError {
    #[error(transparent)]
    Gcs(#[from] GcsError),
    #[error("the Ray head exited ({0}) during bring-up")]
    HeadExited(ExitStatus),
    #[error(transparent)]
    NodesMissing(#[from] NodesMissing),
}

/// Nodes that were not alive in the GCS by the deadline: which, why, and what the worker
/// agents printed.
#[derive(Debug, thiserror::Error)]
pub(super) struct NodesMissing {
    /// Nodes in the allocation.
    of: usize,
    ready_timeout_s: u64,
    nodes: Vec<MissingNode>,
    /// None for a cluster of one node (no agents were fanned out).
    agents: Option<AgentsOutput>,
}

#[derive(Debug)]
struct MissingNode {
    name: String,
    why: WhyMissing,
}

#[derive(Debug)]
enum WhyMissing {
    /// Its agent reported a failure: message and log tail.
    Failed(String),
    Registered,
    NeverRegistered,
}

#[derive(Debug)]
struct AgentsOutput {
    log_path: PathBuf,
    /// Set when the fan-out command already exited.
    step_ended: Option<StepEnded>,
    tail: String,
}

#[derive(Debug)]
struct StepEnded {
    scheduler: String,
    status: ExitStatus,
}

impl fmt::Display for NodesMissing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.nodes.iter().map(|n| n.name.as_str()).collect();
        write!(
            f,
            "{} of {} node(s) did not come up (ready_timeout_s = {}): {}; tearing the cluster down.",
            names.len(),
            self.of,
            self.ready_timeout_s,
            names.join(", ")
        )?;
        for n in &self.nodes {
            write!(f, "\n=== {} ===\n{}", n.name, n.why)?;
        }
        if let Some(a) = &self.agents {
            let ended = a
                .step_ended
                .as_ref()
                .map(|s| format!("; the {} step ended: {}", s.scheduler, s.status))
                .unwrap_or_default();
            write!(
                f,
                "\n=== worker agents' output ({}{ended}) ===\n{}",
                a.log_path.display(),
                a.tail
            )?;
        }
        Ok(())
    }
}

impl fmt::Display for WhyMissing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WhyMissing::Failed(report) => f.write_str(report.trim_end()),
            WhyMissing::Registered => {
                f.write_str("registered, but its node did not join the GCS in time")
            }
            WhyMissing::NeverRegistered => f.write_str("its agent never registered with the head"),
        }
    }
}

/// What the agents told the head during the wait.
#[derive(Default)]
struct Heard {
    registered: BTreeSet<String>,
    /// Node key to its failure report.
    failures: BTreeMap<String, String>,
}

impl Heard {
    /// Takes in one event; true when the cluster record changed.
    fn take(&mut self, head: &mut Head, ev: WorkerEvent) -> bool {
        let absorbed = head.absorb(ev);
        let changed = absorbed.changed_record();
        match absorbed {
            Absorbed::Registered { node_key, .. } => {
                self.registered.insert(node_key);
            }
            Absorbed::Failed { node_key, report } => {
                self.failures.insert(node_key, report);
            }
            Absorbed::NodeRunning | Absorbed::Nothing => {}
        }
        changed
    }

    /// The missing nodes (instance ids), by name, with what is known about each.
    fn explain(&self, missing: &[String], expected: &BTreeMap<String, String>) -> Vec<MissingNode> {
        let why = |key: &String| match self.failures.get(key) {
            Some(report) => WhyMissing::Failed(report.clone()),
            None if self.registered.contains(key) => WhyMissing::Registered,
            None => WhyMissing::NeverRegistered,
        };
        missing
            .iter()
            .map(|k| MissingNode {
                name: expected[k].clone(),
                why: why(k),
            })
            .collect()
    }
}

/// Waits until every node of the allocation is alive in the GCS; returns the GCS client for
/// the rest of the run. A failed node, or the fan-out command's end, cuts the wait short.
pub(super) async fn all_nodes(
    head: &mut Head,
    b: &Bringup<'_>,
    gcs_address: &str,
    mut deadline: Instant,
    events: &mut mpsc::UnboundedReceiver<WorkerEvent>,
    running: &mut Running,
) -> Result<GcsClient, WaitError> {
    let gcs = GcsClient::connect(gcs_address, b.ray_token(), Duration::from_secs(10)).await?;
    let expected = expected_nodes(&head.alloc);
    let mut heard = Heard::default();
    let mut first_failure: Option<Instant> = None;
    loop {
        let missing = missing_nodes(&gcs, &expected).await;
        let joined_now = (expected.len() - missing.len()) as u32;
        if joined_now != head.record.nodes_joined {
            head.record.nodes_joined = joined_now;
            head.save();
        }
        if missing.is_empty() {
            break;
        }
        let step_ended = running.fan_out.as_mut().and_then(|f| f.try_exited());
        // A node that failed ends the wait soon, but not at once: others may be reporting too.
        if !heard.failures.is_empty() || step_ended.is_some() {
            deadline = deadline.min(
                *first_failure.get_or_insert_with(|| Instant::now() + Duration::from_millis(1500)),
            );
        }
        if let Some(h) = running.head_node.as_mut() {
            if let Some(status) = h.process.try_exited() {
                return Err(WaitError::HeadExited(status));
            }
        }
        if Instant::now() >= deadline {
            return Err(NodesMissing {
                of: expected.len(),
                ready_timeout_s: head.config.ready_timeout_s,
                nodes: heard.explain(&missing, &expected),
                agents: running.fan_out.as_ref().map(|f| AgentsOutput {
                    log_path: f.log_path().to_path_buf(),
                    step_ended: step_ended.map(|status| StepEnded {
                        scheduler: b.scheduler.name().to_string(),
                        status,
                    }),
                    tail: tail_file(f.log_path(), 40),
                }),
            }
            .into());
        }
        tokio::select! {
            Some(ev) = events.recv() => if heard.take(head, ev) {
                head.save();
            },
            // The driver starts on the first poll that finds every node: keep the gap short.
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
    // Saved with the Ready state next.
    while let Ok(ev) = events.try_recv() {
        heard.take(head, ev);
    }
    Ok(gcs)
}

/// The allocation's nodes: instance id (what the GCS lists) to node name.
fn expected_nodes(alloc: &Allocation) -> BTreeMap<String, String> {
    alloc
        .hosts
        .iter()
        .enumerate()
        .map(|(rank, h)| {
            (
                control::instance_id(&alloc.job_id, rank as u32, alloc.hosts.len()),
                h.name.clone(),
            )
        })
        .collect()
}

/// The expected nodes' instance ids that the GCS does not list alive (all of them while it
/// does not answer).
async fn missing_nodes(gcs: &GcsClient, expected: &BTreeMap<String, String>) -> Vec<String> {
    let joined: BTreeSet<String> = match gcs.cluster_resource_state().await {
        Ok(state) => state
            .node_states
            .iter()
            .filter(|n| node::is_alive(n))
            .map(|n| n.instance_id.clone())
            .collect(),
        Err(e) => {
            tracing::debug!("GCS not answering: {e}");
            BTreeSet::new()
        }
    };
    expected
        .keys()
        .filter(|k| !joined.contains(*k))
        .cloned()
        .collect()
}
