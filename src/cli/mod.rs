//! Command-line entry points: one module per command.

mod agent;
mod completions;
mod config;
mod discover;
mod doctor;
mod down;
mod env;
mod request_resources;
mod run;
mod status;
mod submit;
mod up;
mod watchdog;

use std::path::PathBuf;

use clap::{CommandFactory, Parser, Subcommand};

use crate::config::Config;
use crate::scheduler;

/// `ray-hpc --version`: the crate's version and the git commit it was built from.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (git ",
    env!("RAY_HPC_GIT_COMMIT"),
    ")"
);

#[derive(Parser)]
#[command(
    name = "ray-hpc",
    version = VERSION,
    about = "Run the real Ray on HPC batch schedulers",
    long_about = "Run the real Ray on HPC batch schedulers.\n\nInside a job: `ray-hpc run -- python driver.py` starts a Ray cluster on every node of the allocation, runs the driver on the first node and exits with its exit code."
)]
struct Cli {
    /// Config file (default: $RAY_HPC_CONFIG, else ~/.ray-hpc/config.toml if it exists).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Which scheduler to use (overrides the config's `scheduler`).
    #[arg(long, global = true, value_parser = clap::builder::PossibleValuesParser::new(scheduler::choices()))]
    scheduler: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a Ray cluster on this allocation, run the driver on the head node, tear it all down.
    Run(run::Args),
    /// Submit a Ray cluster as a batch job from a login node and wait until it is ready.
    Up(up::Args),
    /// Cancel a cluster's jobs and mark it ended.
    Down(down::Args),
    /// Show clusters at a glance, or one cluster in detail.
    Status(status::Args),
    /// Print the environment that points Ray (`ray`, `ray.init()`) at a cluster.
    Env(env::Args),
    /// Ask Ray to keep room for these resources (Ray's `request_resources`).
    RequestResources(request_resources::Args),
    /// Run a command as a Ray job on a cluster (Ray's Jobs API), following its logs.
    Submit(submit::Args),
    /// Check the settings large Ray deployments depend on, and say what to fix.
    Doctor(doctor::Args),
    /// Show what this process may use on this node (CPUs, GPUs, memory, address).
    Discover(discover::Args),
    /// Check a config file.
    #[command(subcommand)]
    Config(config::Command),
    /// Print a shell completion script (bash, zsh, fish, ...).
    Completions(completions::Args),
    /// A worker agent (started by `ray-hpc run` on the other nodes; not for direct use).
    #[command(hide = true)]
    Agent(agent::Args),
    /// An agent's watchdog (started by every agent; not for direct use).
    #[command(hide = true)]
    Watchdog(watchdog::Args),
}

/// Loads the config and applies command-line overrides.
fn load_config(cli: &Cli) -> anyhow::Result<(Config, Option<PathBuf>)> {
    let (mut config, path) = Config::discover(cli.config.as_deref())?;
    if let Some(s) = &cli.scheduler {
        config.scheduler = s.clone();
    }
    Ok((config, path))
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RAY_HPC_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

pub fn main() -> i32 {
    let cli = Cli::parse();
    init_logging();
    let result = match &cli.command {
        Command::Config(c) => config::run(c),
        Command::Discover(a) => load_config(&cli).and_then(|(cfg, _)| discover::run(a, &cfg)),
        Command::Run(a) => load_config(&cli).and_then(|(cfg, path)| run::run(a, cfg, path)),
        Command::Agent(a) => load_config(&cli).and_then(|(cfg, _)| agent::run(a, cfg)),
        Command::Up(a) => load_config(&cli).and_then(|(cfg, path)| up::run(a, cfg, path)),
        Command::Down(a) => load_config(&cli).and_then(|(cfg, _)| down::run(a, cfg)),
        Command::Status(a) => load_config(&cli).and_then(|(cfg, _)| status::run(a, cfg)),
        Command::Env(a) => env::run(a),
        Command::RequestResources(a) => request_resources::run(a),
        Command::Completions(a) => Ok(completions::run(a, &Cli::command(), VERSION)),
        Command::Submit(a) => load_config(&cli).and_then(|(cfg, _)| submit::run(a, cfg)),
        Command::Doctor(a) => load_config(&cli).and_then(|(cfg, _)| doctor::run(a, cfg)),
        // No config: nothing in it matters here, and a bad one must not stop the cleanup.
        Command::Watchdog(a) => Ok(watchdog::run(a)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ray-hpc: error: {e:#}");
            2
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// Reading the JSON keys a document under docs/ lists, so tests hold the JSON to its docs.
#[cfg(test)]
pub(crate) mod doc_keys {
    use std::collections::{BTreeMap, BTreeSet};

    /// The keys documented per object: the `| \`key\` |` rows under each `### \`object\``.
    pub fn documented(doc: &str) -> BTreeMap<String, BTreeSet<String>> {
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut current: Option<String> = None;
        for line in doc.lines() {
            if let Some(h) = line.strip_prefix("### ") {
                current = h.split('`').nth(1).map(str::to_string);
            } else if let (Some(obj), Some(rest)) = (&current, line.strip_prefix("| `")) {
                let key = rest.split('`').next().unwrap_or_default().to_string();
                out.entry(obj.clone()).or_default().insert(key);
            }
        }
        out
    }

    /// Panics unless `v`'s keys are exactly those `doc` lists for `object`.
    pub fn check(
        doc: &BTreeMap<String, BTreeSet<String>>,
        doc_name: &str,
        object: &str,
        v: &serde_json::Value,
    ) {
        let want = doc
            .get(object)
            .unwrap_or_else(|| panic!("{doc_name} does not document `{object}`"));
        let have: BTreeSet<String> = v
            .as_object()
            .unwrap_or_else(|| panic!("not an object: {v}"))
            .keys()
            .cloned()
            .collect();
        assert_eq!(
            &have, want,
            "the JSON keys of `{object}` differ from {doc_name}"
        );
    }
}
