//! `ray-hpc agent`: a worker agent. Started by `ray-hpc run` on the allocation's other nodes
//! (`--control URL`, the secret in the environment), or by a worker job of an autoscaled cluster
//! (`--join NAME`, address and secret from the registry).

use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};

use crate::agent::control::SECRET_ENV;
use crate::agent::watchdog;
use crate::agent::worker::{self, WorkerOptions};
use crate::config::Config;
use crate::registry::{self, ClusterDir};
use crate::scheduler::Place;

#[derive(clap::Args)]
pub struct Args {
    /// The head agent's control service (http://host:port).
    #[arg(long, required_unless_present = "join", conflicts_with = "join")]
    control: Option<String>,
    /// Join the running cluster NAME from the registry, as a node of its own job.
    #[arg(long, value_name = "NAME")]
    join: Option<String>,
    /// Ray node type of this node (RAY_NODE_TYPE_NAME), with --join.
    #[arg(long, requires = "join", default_value = "worker")]
    node_type: String,
}

/// The head agent's control address and the secret of the cluster `name`, from the registry.
/// A node may start before its head (a scheduler that starts a whole application at once):
/// it waits up to `wait` for the head to publish its address.
fn join_target(name: &str, wait: Duration) -> anyhow::Result<(String, String)> {
    let dir = ClusterDir::open_existing(&registry::root()?, name)?;
    let deadline = Instant::now() + wait;
    let control = loop {
        let record = dir.load()?;
        if record.state.is_over() {
            return Err(anyhow!(
                "cluster {name} is {:?}; there is nothing to join",
                record.state
            ));
        }
        if let Some(control) = record.control_address {
            break control;
        }
        if Instant::now() >= deadline {
            return Err(anyhow!(
                "cluster {name} has no control address after {}s (state {:?}): its head is not \
                 up; see `ray-hpc status {name}`",
                wait.as_secs(),
                record.state
            ));
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let secret = std::fs::read_to_string(dir.token_path())
        .with_context(|| format!("reading the secret of cluster {name}"))?;
    Ok((format!("http://{control}"), secret.trim().to_string()))
}

pub fn run(args: &Args, config: Config) -> anyhow::Result<i32> {
    let (control, secret, node_type) = match (&args.control, &args.join) {
        (Some(control), _) => {
            let secret = std::env::var(SECRET_ENV).map_err(|_| {
                anyhow!("{SECRET_ENV} is not set: worker agents are started by `ray-hpc run`, which passes it")
            })?;
            (control.clone(), secret, None)
        }
        (None, Some(name)) => {
            let wait = Duration::from_secs(config.ready_timeout_s);
            let (control, secret) = join_target(name, wait)?;
            (control, secret, Some(args.node_type.clone()))
        }
        (None, None) => unreachable!("clap requires --control or --join"),
    };
    // Keep the secret out of everything this agent starts.
    // SAFETY: no other thread exists yet.
    unsafe { std::env::remove_var(SECRET_ENV) };
    let scheduler = config.open_scheduler(Place::InsideJob)?;
    let runtime = super::runtime()?;
    // After the secret left the environment: the watchdog does not need it.
    watchdog::arm(Duration::from_secs(config.teardown.grace_s));
    let result = runtime.block_on(worker::run(WorkerOptions {
        config,
        scheduler,
        control,
        secret,
        node_type,
    }));
    // Returned, with or without an error: the agent tore down what it started. A panic skips
    // this, and the watchdog cleans up.
    watchdog::disarm();
    result
}
