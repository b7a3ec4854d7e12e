//! `ray-hpc run [-- DRIVER...]`: a whole cluster for the life of this command.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use crate::agent::head::{self, HeadOptions};
use crate::agent::watchdog;
use crate::config::Config;
use crate::scheduler::Place;

#[derive(clap::Args)]
pub struct Args {
    /// Cluster name in the registry (default: the config's `cluster.name`, else ray-<job id>).
    #[arg(long)]
    name: Option<String>,
    /// The driver command, run on the head node with RAY_ADDRESS set. Without one the cluster
    /// stays up until this command is stopped.
    #[arg(last = true, value_name = "DRIVER")]
    driver: Vec<OsString>,
}

pub fn run(args: &Args, mut config: Config, config_path: Option<PathBuf>) -> anyhow::Result<i32> {
    if let Some(name) = &args.name {
        config.cluster.name = Some(name.clone());
    }
    let scheduler = config.open_scheduler(Place::InsideJob)?;
    let runtime = super::runtime()?;
    watchdog::arm(Duration::from_secs(config.teardown.grace_s));
    let result = runtime.block_on(head::run(HeadOptions {
        config,
        config_path,
        scheduler: scheduler.into(),
        driver: args.driver.clone(),
    }));
    // Returned, with or without an error: the head tore down what it started. A panic skips
    // this, and the watchdog cleans up.
    watchdog::disarm();
    result
}
