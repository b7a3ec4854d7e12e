//! `ray-hpc watchdog`: ends what an agent started if the agent dies (src/agent/watchdog/).
//! Every agent starts one, talking to it over its stdin.

use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// Seconds from SIGTERM to SIGKILL when ending what the agent left (its `teardown.grace_s`).
    #[arg(long, default_value_t = 10)]
    grace_s: u64,
    /// The agent's pid, for messages (and for `ps`: whose watchdog this is).
    #[arg(long)]
    agent: Option<i32>,
}

pub fn run(args: &Args) -> i32 {
    crate::agent::watchdog::main(Duration::from_secs(args.grace_s), args.agent)
}
