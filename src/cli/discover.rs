//! `ray-hpc discover [--json]`: what this process may use on this node.

use crate::config::Config;
use crate::discovery::{self, DiscoveryOptions};
use crate::scheduler::Place;

#[derive(clap::Args)]
pub struct Args {
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn run(args: &Args, config: &Config) -> anyhow::Result<i32> {
    let scheduler = config.open_scheduler(Place::InsideJob)?;
    let alloc = scheduler.allocation()?;
    let grant = scheduler.node_grant(&alloc)?;
    let scheduler_address = match config.network.interface {
        Some(_) => None,
        None => super::runtime()?
            .block_on(scheduler.host_addresses(&alloc))?
            .get(&alloc.this_node)
            .copied(),
    };
    let found = discovery::discover(
        &grant,
        &DiscoveryOptions {
            interface: config.network.interface.clone(),
            scheduler_address,
        },
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&found)?);
    } else {
        println!(
            "scheduler: {} (job {}, node {})",
            alloc.scheduler, alloc.job_id, alloc.this_node
        );
        print!("{}", found.to_text());
    }
    Ok(0)
}
