//! The worker agent: one per non-head node. It discovers its node, registers with the head
//! agent, starts its raylet from the plan, and tears it down when the head says so, when the
//! head is gone, or on a signal.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};

use super::control::{self, HEAD_SILENCE};
use super::node::{self, StartOptions};
use super::signals::Signals;
use crate::config::Config;
use crate::discovery::{self, DiscoveryOptions};
use crate::proto::control::node_report::State as ReportState;
use crate::proto::control::{AttendRequest, NodeReport, RegisterRequest, directive};
use crate::ray::launch::{RayNodeSpec, Role};
use crate::registry::write_private;
use crate::scheduler::Scheduler;

pub struct WorkerOptions {
    pub config: Config,
    pub scheduler: Box<dyn Scheduler>,
    /// http://host:port of the head agent's control service.
    pub control: String,
    pub secret: String,
    /// Set for a worker job that joins a running cluster (autoscaling); None for the
    /// allocation's own nodes.
    pub node_type: Option<String>,
}

pub async fn run(opts: WorkerOptions) -> anyhow::Result<i32> {
    let cfg = &opts.config;
    let started = Instant::now();
    // Ray opens a file per connection and object; it inherits this limit.
    let (before, after) = super::supervisor::raise_nofile_limit();
    if after > before {
        tracing::debug!("open-files soft limit raised from {before} to {after}");
    }
    let deadline = started + Duration::from_secs(cfg.ready_timeout_s);
    let grace = Duration::from_secs(cfg.teardown.grace_s);
    let ray_bin = crate::ray::find_ray(
        cfg.ray.bin.as_deref(),
        std::env::var("VIRTUAL_ENV").ok().as_deref(),
        std::env::var("PATH").ok().as_deref(),
    )?;
    let alloc = opts.scheduler.allocation()?;
    let rank = alloc
        .rank_of(&alloc.this_node)
        .ok_or_else(|| anyhow!("node {} is not in the allocation", alloc.this_node))?
        as u32;
    let grant = opts.scheduler.node_grant(&alloc)?;
    // A joining node is not in the head's allocation, so it says where it is itself (one
    // scheduler query for its own node); the allocation's nodes leave that to the head.
    let scheduler_address = match (&opts.node_type, &cfg.network.interface) {
        (Some(_), None) => opts
            .scheduler
            .host_addresses(&alloc)
            .await?
            .get(&alloc.this_node)
            .copied(),
        _ => None,
    };
    let resources = discovery::discover(
        &grant,
        &DiscoveryOptions {
            interface: cfg.network.interface.clone(),
            scheduler_address,
        },
    )?;
    let node_key = control::instance_id(&alloc.job_id, rank, alloc.hosts.len());
    let mut signals = Signals::new()?;

    // Register: the head may still be starting, so retry until the deadline.
    let request = RegisterRequest {
        node_key: node_key.clone(),
        job_id: alloc.job_id.clone(),
        rank,
        node_name: alloc.this_node.clone(),
        hostname: resources.hostname.clone(),
        node_address: if cfg.network.interface.is_some() || opts.node_type.is_some() {
            resources.address.to_string()
        } else {
            String::new()
        },
        resources: Some(control::resources_of(&resources)),
        node_type: opts.node_type.clone().unwrap_or_default(),
    };
    let (mut client, plan) = loop {
        let attempt = async {
            let mut client =
                control::connect(&opts.control, &opts.secret, Duration::from_secs(5)).await?;
            let plan = client.register(request.clone()).await?.into_inner();
            anyhow::Ok((client, plan))
        };
        tokio::select! {
            r = attempt => match r {
                Ok(ok) => break ok,
                // The head answered that it is ending (its Ray failed before we could join):
                // nothing to join, and the head waits for us to go.
                Err(e) if head_is_ending(&e) => {
                    tracing::info!("the head agent is ending ({e:#}); leaving");
                    return Ok(0);
                }
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!("registering with {}: {e:#}", opts.control);
                }
                Err(e) => return Err(e.context(format!("could not register with the head agent at {}", opts.control))),
            },
            sig = signals.recv() => return Ok(128 + sig),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    tracing::info!(
        "node {} (rank {rank}) registered; joining {} as {}",
        alloc.this_node,
        plan.gcs_address,
        plan.node_address
    );

    // Join by the head's deadline (less a margin), so a failure is reported while it listens;
    // a worker job of its own gets 0 (no limit from the head) and keeps its own deadline.
    let deadline = if plan.join_timeout_ms > 0 {
        deadline.min(Instant::now() + Duration::from_millis(plan.join_timeout_ms))
    } else {
        deadline
    };
    let temp_dir = PathBuf::from(&plan.temp_dir);
    let token = (!plan.ray_auth_token.is_empty()).then(|| plan.ray_auth_token.clone());
    let res = plan.resources.clone().unwrap_or_default();
    let node_ip = plan
        .node_address
        .parse()
        .with_context(|| format!("the head sent a bad node address {:?}", plan.node_address))?;
    let token_file = PathBuf::from(format!("{}.token", plan.temp_dir));
    if let Some(t) = &token {
        write_private(&token_file, t.as_bytes())?;
        super::watchdog::watch_path(&token_file);
    }
    let cuda = (!res.gpu_uuids.is_empty()).then(|| res.gpu_uuids.join(","));
    let make_spec = |ports| RayNodeSpec {
        ray_bin: ray_bin.clone(),
        role: Role::Worker {
            gcs_address: plan.gcs_address.clone(),
        },
        node_ip,
        ports,
        temp_dir: temp_dir.clone(),
        num_cpus: res.cpus,
        num_gpus: res.gpu_indices.len() as u32,
        memory_bytes: res.memory_bytes,
        object_store_bytes: plan.object_store_bytes,
        instance_id: plan.instance_id.clone(),
        node_type: plan.node_type.clone(),
        auth_token_path: token.as_ref().map(|_| token_file.clone()),
        cuda_visible_devices: cuda.clone(),
        extra_env: plan.env.clone().into_iter().collect(),
        no_monitor: false,
    };
    let start_opts = StartOptions {
        port_range: (cfg.ray.port_range.lo, cfg.ray.port_range.hi),
        worker_ports: cfg.ray.worker_ports,
        deadline,
        grace,
        attempts: 3,
        // The head watches the GCS for every node itself; this only confirms our own.
        poll: Duration::from_millis(200),
    };
    let report = |state: ReportState, message: String, log_tail: String| NodeReport {
        node_key: node_key.clone(),
        state: state as i32,
        message,
        log_tail,
        ..Default::default()
    };
    let _ = client
        .report(report(ReportState::Starting, String::new(), String::new()))
        .await;
    // Watch the head from now on: if it goes while our raylet is still starting, stop at once
    // rather than at the join deadline.
    let mut stream = client
        .attend(AttendRequest {
            node_key: node_key.clone(),
        })
        .await
        .map(|r| r.into_inner());
    let started_node = tokio::select! {
        r = node::start_node(make_spec, token.clone(), &start_opts, None) => r,
        why = head_gone(&mut stream) => {
            // Dropping the start ends its `ray start` session and removes its temp dir.
            tracing::warn!("{why} while the raylet was starting; giving up");
            let _ = std::fs::remove_file(&token_file);
            return Ok(1);
        }
        sig = signals.recv() => {
            let _ = std::fs::remove_file(&token_file);
            return Ok(128 + sig);
        }
    };
    let mut running = match started_node {
        Ok(n) => n,
        Err(e) => {
            let _ = std::fs::remove_file(&token_file);
            let _ = client
                .report(report(
                    ReportState::Failed,
                    e.message.clone(),
                    e.logs.clone(),
                ))
                .await;
            return Err(anyhow!("{e}"));
        }
    };
    tracing::info!(
        "raylet of node {} up (node id {})",
        alloc.this_node,
        &running.node_id[..running.node_id.len().min(12)]
    );
    let _ = client
        .report(NodeReport {
            node_id: running.node_id.clone(),
            ports: running
                .spec
                .ports
                .worker_named()
                .into_iter()
                .map(|(name, port)| (name.to_string(), port.into()))
                .collect(),
            ..report(ReportState::Running, String::new(), String::new())
        })
        .await;

    // Serve until told otherwise.
    let code = tokio::select! {
        why = head_gone(&mut stream) => {
            tracing::info!("{why}; tearing down");
            if why.starts_with("head says shut down") { 0 } else { 1 }
        }
        status = running.process.wait() => {
            let logs = super::supervisor::ray_failure_logs(
                running.process.log_path(),
                &running.spec.temp_dir,
                30,
            );
            let msg = format!("the raylet on {} exited ({status})", alloc.this_node);
            tracing::error!("{msg}\n{logs}");
            let _ = client.report(report(ReportState::Failed, msg, logs)).await;
            1
        }
        sig = signals.recv() => 128 + sig,
    };
    node::stop_node(&mut running, grace).await;
    let _ = std::fs::remove_file(&token_file);
    let _ = client
        .report(report(ReportState::Stopped, String::new(), String::new()))
        .await;
    Ok(code)
}

/// The head's answer to a registration when it is shutting down (ABORTED, see
/// src/agent/control.rs), as opposed to a head that is not reachable yet (UNAVAILABLE).
fn head_is_ending(e: &anyhow::Error) -> bool {
    e.downcast_ref::<tonic::Status>()
        .is_some_and(|s| s.code() == tonic::Code::Aborted)
}

/// Returns once the head is gone, saying how: it said Shutdown, its stream broke, or it has
/// been silent for `HEAD_SILENCE` (keepalives come every few seconds). Cancel-safe.
async fn head_gone(
    stream: &mut Result<tonic::Streaming<crate::proto::control::Directive>, tonic::Status>,
) -> String {
    let stream = match stream {
        Ok(s) => s,
        Err(e) => return format!("lost the head agent ({})", e.message()),
    };
    loop {
        match tokio::time::timeout(HEAD_SILENCE, stream.message()).await {
            Ok(Ok(Some(d))) => {
                if let Some(directive::Kind::Shutdown(s)) = d.kind {
                    return format!("head says shut down: {}", s.reason);
                }
            }
            Ok(Ok(None)) => return "lost the head agent (its stream ended)".into(),
            Ok(Err(e)) => return format!("lost the head agent ({})", e.message()),
            Err(_) => return format!("no word from the head agent for {HEAD_SILENCE:?}"),
        }
    }
}
