//! `ray-hpc run [-- DRIVER...]`: a whole cluster for the life of this command.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::{SigHandler, Signal};

use crate::agent::head::{self, HeadOptions};
use crate::agent::watchdog;
use crate::config::Config;
use crate::scheduler::{Place, Scheduler};

/// Set on a relaunched `run`, which never relaunches again (whatever its scheduler says).
const RELAUNCHED_ENV: &str = "RAY_HPC_RELAUNCHED";

#[derive(clap::Args)]
pub struct Args {
    /// Cluster name in the registry (default: the config's `cluster.name`, else ray-<job id>).
    #[arg(long)]
    name: Option<String>,
    /// Run the head and the driver on this host even when it is not one of the allocation's
    /// nodes (by default `run` then moves itself to the allocation's first node).
    #[arg(long)]
    here: bool,
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
    if !args.here && std::env::var_os(RELAUNCHED_ENV).is_none() {
        if let Some(code) = relaunch(scheduler.as_ref())? {
            return Ok(code);
        }
    }
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

/// Runs this same command on the allocation's first node when this host is not one of its
/// nodes (an interactive allocation's shell on a login node); its exit status, or None to run
/// here.
fn relaunch(scheduler: &dyn Scheduler) -> anyhow::Result<Option<i32>> {
    let alloc = scheduler.allocation()?;
    let exe = std::env::current_exe().context("cannot find the ray-hpc executable")?;
    let argv: Vec<OsString> = std::iter::once(exe.into_os_string())
        .chain(std::env::args_os().skip(1))
        .collect();
    let Some(mut cmd) = scheduler.relaunch_on_first_node(&alloc, &argv)? else {
        return Ok(None);
    };
    eprintln!(
        "ray-hpc: this host ({}) is not a node of {} job {}, so the cluster and the driver run on its first node, {}, through {} (--here runs them here)",
        crate::scheduler::this_hostname(),
        alloc.scheduler,
        alloc.job_id,
        alloc.head().name,
        cmd.get_program().to_string_lossy()
    );
    cmd.env(RELAUNCHED_ENV, "1");
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start `{}`", cmd.get_program().to_string_lossy()))?;
    // The terminal's Ctrl-C reaches the launcher too, which passes it on to the remote run;
    // this process only waits for it to end. Ignored after the spawn, so the child does not
    // inherit the ignoring.
    for sig in [Signal::SIGINT, Signal::SIGQUIT] {
        // SAFETY: SIG_IGN installs no handler code.
        let _ = unsafe { nix::sys::signal::signal(sig, SigHandler::SigIgn) };
    }
    let status = child.wait().context("waiting for the relaunched run")?;
    Ok(Some(status.code().unwrap_or_else(|| {
        128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0)
    })))
}
