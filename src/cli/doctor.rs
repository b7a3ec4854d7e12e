//! `ray-hpc doctor [NAME] [--json]`: checks the practices large Ray deployments depend on and
//! says what to fix (see `crate::doctor` for the checks and the JSON schema).

use crate::config::Config;

#[derive(clap::Args)]
pub struct Args {
    /// A cluster in the registry: adds the checks of its record (head CPUs, its token's
    /// permissions, its head's ports reachable from here).
    name: Option<String>,
    /// Print the report as JSON (schema `ray-hpc.doctor/v1`).
    #[arg(long)]
    json: bool,
}

/// Exit code 0 when no check fails (warnings allowed), 1 when one does.
pub fn run(args: &Args, config: Config) -> anyhow::Result<i32> {
    crate::doctor::run(
        &crate::doctor::Options {
            name: args.name.clone(),
            json: args.json,
        },
        &config,
    )
}
