//! Starting one Ray node (head or worker) and waiting until the GCS lists it as alive.
//! Shared by the head and worker agents.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::supervisor::{Supervised, ray_failure_logs};
use crate::proto::ray::autoscaler::{ClusterResourceState, NodeState, NodeStatus};
use crate::ray::gcs::GcsClient;
use crate::ray::launch::{RayNodeSpec, Role};
use crate::ray::ports::{NodePorts, PortPicker};

/// A Ray node that came up.
pub struct RunningNode {
    pub process: Supervised,
    pub spec: RayNodeSpec,
    pub node_id: String,
}

#[derive(Debug, thiserror::Error)]
#[error("{message}\n{logs}")]
pub struct NodeStartError {
    pub message: String,
    pub logs: String,
}

/// How a start is tried.
pub struct StartOptions {
    pub port_range: (u16, u16),
    pub worker_ports: u16,
    pub deadline: Instant,
    pub grace: Duration,
    pub attempts: u32,
    /// How often the GCS is asked whether the node is listed yet.
    pub poll: Duration,
}

/// Called once, with the GCS address, the first time the GCS answers during a head's start:
/// the head agent hands the address to the worker agents then, so their raylets start while
/// the head's own raylet and dashboard are still coming up.
pub type OnGcsUp<'a> = Box<dyn FnMut(&str) + Send + 'a>;

pub fn is_alive(n: &NodeState) -> bool {
    n.status == NodeStatus::Running as i32 || n.status == NodeStatus::Idle as i32
}

/// The alive node of `state` that `spec` started, if the GCS lists it yet.
pub fn find_node<'a>(
    state: &'a ClusterResourceState,
    instance_id: &str,
    node_ip: &str,
) -> Option<&'a NodeState> {
    state
        .node_states
        .iter()
        .find(|n| n.instance_id == instance_id && n.node_ip_address == node_ip && is_alive(n))
}

/// A port taken between our probe and Ray's bind shows up like this in `ray start`'s output.
fn looks_like_port_clash(logs: &str) -> bool {
    let l = logs.to_ascii_lowercase();
    l.contains("already in use") || l.contains("address in use") || l.contains("failed to bind")
}

pub fn make_private_dir(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
}

/// Starts the node described by `make_spec` (given fresh ports on each attempt) and waits
/// until the GCS lists it alive. Retries with new ports when a port was taken in between, but
/// not once `on_gcs_up` was called: others may be using that GCS address by then.
pub async fn start_node(
    make_spec: impl Fn(NodePorts) -> RayNodeSpec,
    auth_token: Option<String>,
    opts: &StartOptions,
    mut on_gcs_up: Option<OnGcsUp<'_>>,
) -> Result<RunningNode, NodeStartError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut picker = PortPicker::new(opts.port_range.0, opts.port_range.1);
        let ports = picker
            .node_ports(opts.worker_ports)
            .map_err(|e| NodeStartError {
                message: e.to_string(),
                logs: String::new(),
            })?;
        let spec = make_spec(ports);
        make_private_dir(&spec.temp_dir).map_err(|e| NodeStartError {
            message: format!("cannot create temp dir {}: {e}", spec.temp_dir.display()),
            logs: String::new(),
        })?;
        super::watchdog::watch_path(&spec.temp_dir);
        // Declared before the process so it is dropped after it: a cancelled start (a signal
        // during bring-up) kills the session first, then removes the dir.
        let mut dir_guard = DirGuard(Some(spec.temp_dir.clone()));
        let log = spec.temp_dir.join("ray-start.log");
        let mut process =
            Supervised::spawn(spec.command(), &log, "ray start").map_err(|e| NodeStartError {
                message: format!("cannot run {}: {e}", spec.ray_bin.display()),
                logs: String::new(),
            })?;
        let may_announce = on_gcs_up.is_some();
        match wait_listed(
            &mut process,
            &spec,
            auth_token.clone(),
            opts,
            &mut on_gcs_up,
        )
        .await
        {
            Ok(node_id) => {
                dir_guard.0 = None;
                return Ok(RunningNode {
                    process,
                    spec,
                    node_id,
                });
            }
            Err(WaitFailure::Exited(status)) => {
                let logs = ray_failure_logs(&log, &spec.temp_dir, 30);
                process.stop(opts.grace).await;
                // Taken means called: the GCS answered and its address is out.
                let announced = may_announce && on_gcs_up.is_none();
                if looks_like_port_clash(&logs) && attempt < opts.attempts && !announced {
                    tracing::warn!(
                        "a port was taken before Ray could bind it; retrying with new ports"
                    );
                    remove_temp_dir(&spec.temp_dir);
                    continue;
                }
                remove_temp_dir(&spec.temp_dir);
                return Err(NodeStartError {
                    message: format!("`ray start` exited ({status}) before its node joined"),
                    logs,
                });
            }
            Err(WaitFailure::Timeout(why)) => {
                let logs = ray_failure_logs(&log, &spec.temp_dir, 30);
                process.stop(opts.grace).await;
                remove_temp_dir(&spec.temp_dir);
                return Err(NodeStartError {
                    message: format!("the node did not join in time ({why})"),
                    logs,
                });
            }
        }
    }
}

enum WaitFailure {
    Exited(std::process::ExitStatus),
    Timeout(String),
}

async fn wait_listed(
    process: &mut Supervised,
    spec: &RayNodeSpec,
    token: Option<String>,
    opts: &StartOptions,
    on_gcs_up: &mut Option<OnGcsUp<'_>>,
) -> Result<String, WaitFailure> {
    let deadline = opts.deadline;
    let gcs_address = match &spec.role {
        Role::Head => format!("{}:{}", spec.node_ip, spec.ports.gcs),
        Role::Worker { gcs_address } => gcs_address.clone(),
    };
    let node_ip = spec.node_ip.to_string();
    let mut client: Option<GcsClient> = None;
    let mut last_error = String::from("the GCS was never asked");
    loop {
        if let Some(status) = process.try_exited() {
            return Err(WaitFailure::Exited(status));
        }
        if Instant::now() >= deadline {
            return Err(WaitFailure::Timeout(last_error));
        }
        if client.is_none() {
            match GcsClient::connect(&gcs_address, token.clone(), Duration::from_secs(5)).await {
                Ok(c) => client = Some(c),
                Err(e) => last_error = e.to_string(),
            }
        }
        if let Some(c) = &client {
            match c.cluster_resource_state().await {
                Ok(state) => {
                    if let Some(mut announce) = on_gcs_up.take() {
                        announce(&gcs_address);
                    }
                    if let Some(n) = find_node(&state, &spec.instance_id, &node_ip) {
                        return Ok(crate::ray::gcs::node_id_hex(&n.node_id));
                    }
                    last_error = format!(
                        "the GCS at {gcs_address} lists {} node(s), not this one",
                        state.node_states.len()
                    );
                }
                Err(e) => last_error = e.to_string(),
            }
        }
        tokio::time::sleep(opts.poll).await;
    }
}

struct DirGuard(Option<PathBuf>);

impl Drop for DirGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            remove_temp_dir(&p);
        }
    }
}

/// Removes a node's temp dir; logged, not fatal, when it cannot be removed (the watchdog
/// keeps it then).
pub fn remove_temp_dir(path: &Path) {
    match std::fs::remove_dir_all(path) {
        Ok(()) => super::watchdog::forget_path(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => super::watchdog::forget_path(path),
        Err(e) => tracing::warn!("could not remove {}: {e}", path.display()),
    }
}

/// Stops a running node and removes its temp dir.
pub async fn stop_node(node: &mut RunningNode, grace: Duration) {
    node.process.stop(grace).await;
    remove_temp_dir(&node.spec.temp_dir);
}
