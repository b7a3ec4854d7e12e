//! The cluster record (what `status`, `submit` and `down` read) and the metrics: created when
//! the head starts, then kept in step with the control service's events and the GCS.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::Head;
use crate::agent::control::WorkerEvent;
use crate::autoscaler::{Demand, NodeStatus, ObservedNode};
use crate::config::{AuthMode, Config};
use crate::discovery::NodeResources;
use crate::metrics::Metrics;
use crate::proto::control::node_report::State as ReportState;
use crate::registry::{self, ClusterDir, ClusterRecord, ClusterState, NodeRecord};
use crate::scheduler::Allocation;

/// The cluster's secret and, when token auth is on, the file Ray reads it from.
pub(super) struct Auth {
    pub secret: String,
    pub token_path: Option<PathBuf>,
}

/// What one control-service event meant for the cluster record.
pub(super) enum Absorbed {
    /// An agent registered; `new_node` when the record did not list its node yet.
    Registered { node_key: String, new_node: bool },
    /// A node's agent reported that its node failed: its message and log tail.
    Failed { node_key: String, report: String },
    /// A node runs: the record now has its Ray node id and ports.
    NodeRunning,
    /// Nothing the record keeps.
    Nothing,
}

impl Absorbed {
    pub fn changed_record(&self) -> bool {
        matches!(
            self,
            Absorbed::Registered { new_node: true, .. } | Absorbed::NodeRunning
        )
    }
}

impl Head {
    /// Creates the cluster's directory, secret and record (state Starting) and saves it.
    pub(super) fn open(
        config: Config,
        alloc: Allocation,
        resources: &NodeResources,
    ) -> anyhow::Result<(Head, Auth)> {
        let name = config.cluster.name_or_default(&alloc.job_id);
        let root = registry::root()?;
        let dir = ClusterDir::create(&root, &name)?;
        // `ray-hpc up` leaves a queued record for this job: keep what it knows.
        let submitted = dir.load().ok().filter(|r| r.state == ClusterState::Queued);
        let secret = dir.write_new_token()?;
        let auth_on = config.auth == AuthMode::Token;
        if !auth_on {
            tracing::warn!(
                "auth = \"none\": anyone who can reach this cluster's ports can run code as you"
            );
        }
        let token_path = auth_on.then(|| dir.token_path());
        let now = registry::now_unix();
        let record = ClusterRecord {
            created_unix: submitted.as_ref().map_or(now, |r| r.created_unix),
            head_node: alloc.head().name.clone(),
            head_address: Some(resources.address.to_string()),
            token_path: token_path.clone(),
            scheduler_settings: submitted
                .as_ref()
                .map(|r| r.scheduler_settings.clone())
                .unwrap_or_default(),
            job_output: submitted.and_then(|r| r.job_output),
            ..ClusterRecord::new(
                &name,
                alloc.scheduler,
                &alloc.job_id,
                ClusterState::Starting,
                alloc.hosts.len() as u32,
                config.auth.as_str(),
            )
        };
        let mut head = Head {
            grace: Duration::from_secs(config.teardown.grace_s),
            config,
            alloc,
            dir,
            record,
        };
        head.save();
        // A head that dies without tearing down: its watchdog marks the record FAILED.
        crate::agent::watchdog::watch_record(&head.dir.path);
        tracing::info!(
            "cluster {name}: {} node(s) of {} job {}; head on {} ({})",
            head.alloc.hosts.len(),
            head.alloc.scheduler,
            head.alloc.job_id,
            head.alloc.this_node,
            resources.address
        );
        Ok((head, Auth { secret, token_path }))
    }

    /// Takes in one event from the control service, keeping the cluster record up to date
    /// (the caller saves it when `changed_record`).
    pub(super) fn absorb(&mut self, ev: WorkerEvent) -> Absorbed {
        match ev {
            WorkerEvent::Registered(registered) => {
                let (req, plan) = *registered;
                let res = req.resources.clone().unwrap_or_default();
                tracing::info!(
                    "agent on {} registered ({} CPU(s), {} GPU(s))",
                    req.node_name,
                    res.cpus,
                    res.gpu_indices.len()
                );
                let known = self
                    .record
                    .nodes
                    .iter()
                    .any(|n| n.instance_id == req.node_key);
                if !known {
                    self.record.nodes.push(NodeRecord {
                        rank: req.rank,
                        node_name: req.node_name.clone(),
                        address: plan.node_address.clone(),
                        instance_id: req.node_key.clone(),
                        cpus: res.cpus,
                        gpus: res.gpu_indices.len() as u32,
                        memory_bytes: res.memory_bytes,
                        temp_dir: plan.temp_dir.clone(),
                        node_id: None,
                        ports: BTreeMap::new(),
                    });
                }
                Absorbed::Registered {
                    node_key: req.node_key,
                    new_node: !known,
                }
            }
            WorkerEvent::Report(r) if r.state == ReportState::Failed as i32 => Absorbed::Failed {
                node_key: r.node_key,
                report: format!("{}\n{}", r.message, r.log_tail),
            },
            WorkerEvent::Report(r) if r.state == ReportState::Running as i32 => {
                let Some(node) = self
                    .record
                    .nodes
                    .iter_mut()
                    .find(|n| n.instance_id == r.node_key)
                else {
                    return Absorbed::Nothing;
                };
                node.node_id = Some(r.node_id);
                node.ports = r
                    .ports
                    .into_iter()
                    .filter_map(|(name, port)| Some((name, u16::try_from(port).ok()?)))
                    .collect();
                Absorbed::NodeRunning
            }
            WorkerEvent::Report(_) => Absorbed::Nothing,
        }
    }

    /// Keeps the record and the metrics in step with what the GCS says.
    pub(super) fn observe(
        &mut self,
        metrics: &Metrics,
        nodes: &[ObservedNode],
        demands: &[Demand],
    ) {
        let mut counts =
            BTreeMap::from([("running", 0), ("idle", 0), ("draining", 0), ("dead", 0)]);
        for n in nodes {
            let key = match n.status {
                NodeStatus::Running => "running",
                NodeStatus::Idle => "idle",
                NodeStatus::Draining => "draining",
                NodeStatus::Dead => "dead",
            };
            *counts.entry(key).or_default() += 1;
        }
        metrics.set_nodes_by_state(&counts.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>());
        metrics.set_pending_demand(&pending_demand(demands));
        let alive = (counts["running"] + counts["idle"] + counts["draining"]) as u32;
        if alive != self.record.nodes_joined {
            self.record.nodes_joined = alive;
            self.save();
        }
    }

    /// The Prometheus file_sd list: our endpoint and every Ray node's metrics export port.
    pub(super) fn write_targets(&self) {
        let Some(ours) = &self.record.metrics_address else {
            return;
        };
        let ray: Vec<String> = self
            .record
            .nodes
            .iter()
            .filter_map(|n| {
                n.ports
                    .get("metrics_export")
                    .map(|p| format!("{}:{p}", n.address))
            })
            .collect();
        let path = self.dir.path.join("prometheus-targets.json");
        if let Err(e) = crate::metrics::write_file_sd(&path, &self.record.name, ours, &ray) {
            tracing::warn!("could not write {}: {e}", path.display());
        }
    }
}

/// Every node joined: the record says Ready, and the user learns where the cluster is.
pub(super) fn mark_ready(head: &mut Head, metrics: &Metrics, started: Instant, gcs_address: &str) {
    head.record.nodes.sort_by_key(|n| n.rank);
    head.record.state = ClusterState::Ready;
    head.save();
    metrics.set_bringup_seconds(started.elapsed().as_secs_f64());
    head.write_targets();
    let cpus: u32 = head.record.nodes.iter().map(|n| n.cpus).sum();
    let gpus: u32 = head.record.nodes.iter().map(|n| n.gpus).sum();
    tracing::info!(
        "cluster {} ready: {} node(s), {cpus} CPU(s), {gpus} GPU(s) in {:.1}s; RAY_ADDRESS={gcs_address}, dashboard {}",
        head.record.name,
        head.alloc.hosts.len(),
        started.elapsed().as_secs_f64(),
        head.record.dashboard_url.as_deref().unwrap_or("-")
    );
}

/// Total pending demand per resource: queued tasks and actors, and placement groups
/// (`request_resources` floors are not demand that waits).
fn pending_demand(demands: &[Demand]) -> Vec<(String, f64)> {
    let mut total: BTreeMap<String, f64> = BTreeMap::new();
    let mut add = |bundle: &BTreeMap<String, f64>, times: f64| {
        for (resource, amount) in bundle {
            *total.entry(resource.clone()).or_default() += amount * times;
        }
    };
    for d in demands {
        match d {
            Demand::Tasks { bundle, count } => add(bundle, *count as f64),
            Demand::Gang { bundles, .. } => bundles.iter().for_each(|b| add(b, 1.0)),
            Demand::Constraint { .. } => {}
        }
    }
    total.into_iter().collect()
}
