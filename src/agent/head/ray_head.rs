//! The Ray head, on this node. The plan goes out to the worker agents as soon as its GCS
//! answers, so their raylets start while the head's own raylet and dashboard come up.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::Head;
use super::bringup::Bringup;
use crate::agent::control::{self, PlanBase};
use crate::agent::node::{self, NodeStartError, RunningNode, StartOptions};
use crate::discovery::NodeResources;
use crate::ray::launch::{RayNodeSpec, Role};
use crate::registry::NodeRecord;

#[derive(Debug, thiserror::Error)]
#[error("the Ray head on {node} failed to start: {source}")]
pub(super) struct HeadStartError {
    node: String,
    source: NodeStartError,
}

/// Starts the Ray head and waits until the GCS lists it. `plan_base` is set the moment the
/// GCS answers; it is dropped when this returns, which unblocks agents still waiting for a
/// plan if the head failed.
pub(super) async fn start(
    head: &Head,
    b: &Bringup<'_>,
    deadline: Instant,
    plan_base: watch::Sender<Option<PlanBase>>,
) -> Result<RunningNode, HeadStartError> {
    let cfg = &head.config;
    let n_hosts = head.alloc.hosts.len();
    let temp_root = cfg.cluster.temp_root.display().to_string();
    let instance_id = control::instance_id(&head.alloc.job_id, 0, n_hosts);
    let temp_dir = PathBuf::from(control::node_temp_dir(&temp_root, &b.cluster_id, 0));
    let memory = b.resources.memory_bytes;
    let make_spec = |ports| RayNodeSpec {
        ray_bin: b.ray_bin.clone(),
        role: Role::Head,
        node_ip: b.node_ip(),
        ports,
        temp_dir: temp_dir.clone(),
        num_cpus: cfg.ray.head_num_cpus.unwrap_or(b.resources.cpus),
        num_gpus: b.resources.gpus.len() as u32,
        memory_bytes: memory,
        object_store_bytes: control::object_store_bytes(
            memory,
            b.resources.shm_bytes,
            cfg.ray.object_store_fraction,
        ),
        instance_id: instance_id.clone(),
        node_type: "head".into(),
        auth_token_path: b.token_path.clone(),
        cuda_visible_devices: cuda_visible(&b.resources),
        extra_env: cfg.ray.env.clone(),
        no_monitor: cfg.autoscaler.enabled,
    };
    let start_opts = StartOptions {
        port_range: (cfg.ray.port_range.lo, cfg.ray.port_range.hi),
        worker_ports: cfg.ray.worker_ports,
        deadline,
        grace: head.grace,
        attempts: 3,
        // Every worker waits for this answer: ask often (a refused connect or one small RPC).
        poll: Duration::from_millis(50),
    };
    let base = shared_plan(head, b, deadline);
    let started = b.started;
    let on_gcs_up: node::OnGcsUp = Box::new(move |gcs_address: &str| {
        tracing::info!(
            "GCS answering at {gcs_address} after {:.1}s",
            started.elapsed().as_secs_f64()
        );
        plan_base.send_replace(Some(PlanBase {
            gcs_address: gcs_address.to_string(),
            ..base.clone()
        }));
    });
    node::start_node(make_spec, b.ray_token(), &start_opts, Some(on_gcs_up))
        .await
        .map_err(|source| HeadStartError {
            node: head.alloc.this_node.clone(),
            source,
        })
}

/// What every worker's plan shares; the GCS address is filled in once it answers.
fn shared_plan(head: &Head, b: &Bringup<'_>, deadline: Instant) -> PlanBase {
    let cfg = &head.config;
    PlanBase {
        cluster_name: head.record.name.clone(),
        cluster_id: b.cluster_id.clone(),
        gcs_address: String::new(),
        ray_auth_token: b.ray_token(),
        temp_root: cfg.cluster.temp_root.display().to_string(),
        object_store_fraction: cfg.ray.object_store_fraction,
        host_addresses: b.host_addresses.clone(),
        env: cfg.ray.env.clone(),
        ready_deadline: deadline,
    }
}

/// Puts the running Ray head into the cluster record; returns its GCS address.
pub(super) fn record(head: &mut Head, ray_head: &RunningNode, started: Instant) -> String {
    let spec = &ray_head.spec;
    let node_ip = spec.node_ip;
    let ports = spec.ports;
    let gcs_address = format!("{node_ip}:{}", ports.gcs);
    head.record.gcs_address = Some(gcs_address.clone());
    head.record.dashboard_url = Some(format!("http://{node_ip}:{}", ports.dashboard));
    head.record.client_server_address = Some(format!("{node_ip}:{}", ports.client_server));
    head.record.nodes.push(NodeRecord {
        rank: 0,
        node_name: head.alloc.this_node.clone(),
        address: node_ip.to_string(),
        instance_id: spec.instance_id.clone(),
        cpus: spec.num_cpus,
        gpus: spec.num_gpus,
        memory_bytes: spec.memory_bytes,
        temp_dir: spec.temp_dir.display().to_string(),
        node_id: Some(ray_head.node_id.clone()),
        ports: ports
            .named()
            .into_iter()
            .map(|(name, port)| (name.to_string(), port))
            .collect(),
    });
    head.save();
    head.write_targets();
    tracing::info!(
        "Ray head up at {gcs_address} after {:.1}s",
        started.elapsed().as_secs_f64()
    );
    gcs_address
}

fn cuda_visible(r: &NodeResources) -> Option<String> {
    (!r.gpus.is_empty()).then(|| {
        r.gpus
            .iter()
            .map(|g| g.uuid.clone())
            .collect::<Vec<_>>()
            .join(",")
    })
}
