//! `ray-hpc agent --control URL`: the worker agent on every node but the head.

use crate::agent::control::SECRET_ENV;
use crate::agent::worker::{self, WorkerOptions};
use crate::config::Config;
use crate::scheduler;

#[derive(clap::Args)]
pub struct Args {
    /// The head agent's control service (http://host:port).
    #[arg(long)]
    control: String,
}

pub fn run(args: &Args, config: Config) -> anyhow::Result<i32> {
    let secret = std::env::var(SECRET_ENV).map_err(|_| {
        anyhow::anyhow!(
            "{SECRET_ENV} is not set: worker agents are started by `ray-hpc run`, which passes it"
        )
    })?;
    // Keep the secret out of everything this agent starts.
    // SAFETY: no other thread exists yet.
    unsafe { std::env::remove_var(SECRET_ENV) };
    let scheduler = scheduler::select(config.scheduler, scheduler::process_env())?;
    super::runtime()?.block_on(worker::run(WorkerOptions {
        config,
        scheduler,
        control: args.control.clone(),
        secret,
    }))
}
