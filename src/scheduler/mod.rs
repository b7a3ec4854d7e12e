//! The one boundary behind which everything scheduler-specific lives.
//!
//! An adapter reads the allocation this process runs in, says what this node was granted, knows
//! the addresses the scheduler gives its nodes, fans a command out to the allocation's other
//! nodes, and renders, submits, queries and cancels batch jobs. It owns its environment
//! variables, commands, header and walltime syntax, job states and end reasons, and its config
//! section. [`ADAPTERS`] is the one list of them: choosing one (inside a job, from a cluster
//! record, or for `up` on a login node) goes through [`choose`] and [`by_name`] only.
//!
//! Adding a scheduler: a module here, a top-level folder of its name (templates, fixtures, test
//! bed), an entry in [`ADAPTERS`], and a pass of the conformance suite (`conformance.rs`).

pub mod command;
#[cfg(test)]
mod conformance;
#[cfg(test)]
pub mod fake;
pub mod job;
pub mod local;
pub mod lsf;
pub mod settings;
pub mod slurm;
pub mod yarn;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::IpAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

pub use command::{CommandError, CommandOutput, CommandSpec, Runner};
pub use job::{EndReason, JobInfo, JobRequest, JobState, NodeKind, OutputPath, clock};
pub use settings::{SettingKey, SettingKind, Settings, SettingsSchema};

use crate::discovery::NodeGrant;

/// What `scheduler = "auto"` means: pick the scheduler from where ray-hpc runs.
pub const AUTO: &str = "auto";

/// No real allocation has more hosts than this; a hostlist that expands to more is an error,
/// found before anything is expanded.
pub const MAX_HOSTS: usize = 100_000;

/// One host of an allocation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Host {
    /// The scheduler's name for the node.
    pub name: String,
    /// CPUs the scheduler granted on this host, when it says.
    pub cpus: Option<u32>,
}

/// The allocation this process runs in.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Allocation {
    pub scheduler: &'static str,
    pub job_id: String,
    /// In rank order: `hosts[0]` carries the head.
    pub hosts: Vec<Host>,
    /// The scheduler's name for the node this process runs on.
    pub this_node: String,
}

impl Allocation {
    /// Rank of `node` in this allocation.
    pub fn rank_of(&self, node: &str) -> Option<usize> {
        self.hosts.iter().position(|h| h.name == node)
    }

    pub fn head(&self) -> &Host {
        &self.hosts[0]
    }

    /// The host this process runs on.
    pub fn this_host(&self) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name == self.this_node)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error(
        "scheduler `{scheduler}` was asked for, but this process is not inside one of its allocations ({why}); submit a job (see job-scripts/) or use `--scheduler local`"
    )]
    NotInAllocation {
        scheduler: &'static str,
        why: String,
    },
    #[error("{variable}={value:?} is malformed: {why}")]
    BadVariable {
        variable: String,
        value: String,
        why: String,
    },
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error("could not read the output of `{command}`: {why}")]
    BadOutput { command: String, why: String },
    /// The scheduler said no; `message` is its own words.
    #[error("`{command}` refused the job: {message}")]
    Refused { command: String, message: String },
    #[error("the {scheduler} scheduler does not support {what}")]
    Unsupported {
        scheduler: &'static str,
        what: &'static str,
    },
    #[error("[{section}] in the config: {why}")]
    BadSettings { section: String, why: String },
    #[error("{0}")]
    BadRequest(String),
    #[error("unknown scheduler `{name}`: this ray-hpc knows {known}")]
    Unknown { name: String, known: String },
}

impl SchedulerError {
    /// What the scheduler said when it refused something, else the whole error.
    pub fn reason(&self) -> String {
        match self {
            SchedulerError::Refused { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }

    /// The command whose failure this is, when it is one.
    pub fn command(&self) -> Option<&str> {
        match self {
            SchedulerError::Command(e) => Some(e.command()),
            SchedulerError::BadOutput { command, .. } | SchedulerError::Refused { command, .. } => {
                Some(command)
            }
            _ => None,
        }
    }
}

/// What a scheduler adapter does for the rest of ray-hpc. Everything that talks to the
/// scheduler is async and bounded by the adapter's [`Runner`] timeout.
#[async_trait::async_trait]
pub trait Scheduler: Send + Sync {
    fn name(&self) -> &'static str;

    /// The allocation this process runs in (from the environment: no scheduler call).
    fn allocation(&self) -> Result<Allocation, SchedulerError>;

    /// What the scheduler granted the node this process runs on.
    fn node_grant(&self, alloc: &Allocation) -> Result<NodeGrant, SchedulerError>;

    /// The addresses the scheduler knows the allocation's hosts by, from one query.
    /// Hosts it has no address for are missing from the map.
    async fn host_addresses(
        &self,
        alloc: &Allocation,
    ) -> Result<BTreeMap<String, IpAddr>, SchedulerError>;

    /// One command that starts `argv` once on every host but the head, or None when the
    /// allocation has a single host. The caller adds the environment and spawns it.
    fn fan_out(
        &self,
        alloc: &Allocation,
        argv: &[OsString],
    ) -> Result<Option<Command>, SchedulerError>;

    /// When this process runs outside the hosts of the allocation it is in (an interactive
    /// allocation's shell on a login node), one command that runs `argv` on the allocation's
    /// first host with this process's stdin, stdout, stderr and exit status. None when this
    /// process runs on one of the allocation's hosts, or the scheduler has no such launch.
    /// The caller spawns it as is.
    fn relaunch_on_first_node(
        &self,
        _alloc: &Allocation,
        _argv: &[OsString],
    ) -> Result<Option<Command>, SchedulerError> {
        Ok(None)
    }

    /// The batch script for `req` (what `up --dry-run` prints).
    fn render_job(&self, req: &JobRequest) -> Result<String, SchedulerError>;

    /// Submits a script rendered by `render_job`; returns the job id. A refusal comes back
    /// as [`SchedulerError::Refused`] with the scheduler's own message.
    async fn submit(&self, script: &str, req: &JobRequest) -> Result<String, SchedulerError>;

    /// The state of these jobs, from one query (batched). Jobs the scheduler no longer knows
    /// are missing from the answer.
    async fn query(&self, job_ids: &[String]) -> Result<Vec<JobInfo>, SchedulerError>;

    /// This user's jobs named `name` that the scheduler still knows, from one query (how a
    /// head finds the jobs an earlier head of its cluster left behind).
    async fn query_named(&self, name: &str) -> Result<Vec<JobInfo>, SchedulerError>;

    /// Cancels these jobs in one call (batched). Jobs already gone are not an error.
    async fn cancel(&self, job_ids: &[String]) -> Result<(), SchedulerError>;
}

/// Environment lookups go through this so adapters can be tested on recorded environments.
pub type Env = BTreeMap<String, String>;

pub fn process_env() -> Env {
    std::env::vars().collect()
}

/// What an adapter is opened with.
pub struct Setup {
    pub env: Env,
    /// The adapter's own config section (empty when the file has none).
    pub settings: Settings,
    /// Runs its commands; [`command::Process`] outside tests.
    pub runner: Arc<dyn Runner>,
    /// This machine's hostname (empty when it cannot be read), for schedulers that name no
    /// node in a task's environment: the adapter matches it against the allocation's hosts.
    pub hostname: String,
}

impl Setup {
    /// This process's environment, real commands bounded by `timeout`.
    pub fn live(settings: Settings, timeout: Duration) -> Self {
        Setup {
            env: process_env(),
            settings,
            runner: Arc::new(command::Process { timeout }),
            hostname: this_hostname(),
        }
    }
}

/// This machine's hostname, or empty when it cannot be read.
pub fn this_hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default()
}

/// One scheduler ray-hpc knows: how to recognise where it runs, its config section, and how to
/// open it.
pub struct Adapter {
    pub name: &'static str,
    /// True inside one of its jobs, judged from the environment.
    pub inside_job: fn(&Env) -> bool,
    /// A command on PATH that says its tools are here (for `up` from a login node).
    pub submit_tool: Option<&'static str>,
    /// Its config section, when it has one.
    pub settings: Option<&'static SettingsSchema>,
    /// What is wrong with one of the user's header lines for it, if anything; None when its
    /// jobs have no header (the lines are then ignored).
    pub directive_problem: Option<fn(&str) -> Option<String>>,
    pub open: fn(Setup) -> Result<Box<dyn Scheduler>, SchedulerError>,
}

impl std::fmt::Debug for Adapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

/// Every scheduler, in the order `auto` tries them; local (this machine alone) comes last.
pub const ADAPTERS: &[&Adapter] = &[
    &slurm::ADAPTER,
    &lsf::ADAPTER,
    &yarn::ADAPTER,
    &local::ADAPTER,
];

/// The adapter named `name`.
pub fn adapter(name: &str) -> Result<&'static Adapter, SchedulerError> {
    ADAPTERS
        .iter()
        .copied()
        .find(|a| a.name == name)
        .ok_or_else(|| SchedulerError::Unknown {
            name: name.to_string(),
            known: names().join(", "),
        })
}

/// The adapters' names.
pub fn names() -> Vec<&'static str> {
    ADAPTERS.iter().map(|a| a.name).collect()
}

/// What `scheduler =` and `--scheduler` accept: `auto`, then every adapter's name.
pub fn choices() -> Vec<&'static str> {
    std::iter::once(AUTO).chain(names()).collect()
}

/// Where ray-hpc runs when it chooses a scheduler for `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Inside an allocation (`run`, `agent`, `discover`): the scheduler whose job this is.
    InsideJob,
    /// On a login node (`up`): the scheduler whose tools are installed here.
    LoginNode,
}

/// The adapter for `choice` (`auto` or a name). `auto` takes the first adapter that recognises
/// `place`, else the last one (this machine alone).
pub fn choose(choice: &str, place: Place, env: &Env) -> Result<&'static Adapter, SchedulerError> {
    if choice != AUTO {
        return adapter(choice);
    }
    let recognises = |a: &&Adapter| match place {
        Place::InsideJob => (a.inside_job)(env),
        Place::LoginNode => a.submit_tool.is_some_and(|tool| on_path(tool, env)),
    };
    Ok(ADAPTERS
        .iter()
        .copied()
        .find(recognises)
        .unwrap_or(ADAPTERS[ADAPTERS.len() - 1]))
}

/// The adapter a cluster record names, opened.
pub fn by_name(name: &str, setup: Setup) -> Result<Box<dyn Scheduler>, SchedulerError> {
    (adapter(name)?.open)(setup)
}

/// What is wrong with a user's header line for a scheduler whose job scripts take lines
/// starting with `prefix` (`#SBATCH `), if anything.
pub fn header_line_problem(line: &str, prefix: &str) -> Option<String> {
    (!line.starts_with(prefix) || line.contains('\n'))
        .then(|| format!("must be one line starting with `{prefix}`"))
}

/// What is wrong with a header line, for the adapters that take such lines: a line is fine
/// when one of them (or, with `only`, that one) accepts it.
pub fn directive_problem(line: &str, only: Option<&str>) -> Option<String> {
    let checking: Vec<&Adapter> = ADAPTERS
        .iter()
        .copied()
        .filter(|a| a.directive_problem.is_some() && only.is_none_or(|name| a.name == name))
        .collect();
    let whys: Vec<String> = checking
        .iter()
        .map(|a| {
            let check = a.directive_problem.expect("filtered on it");
            check(line).map(|why| format!("{}: {why}", a.name))
        })
        .collect::<Option<_>>()?;
    (!whys.is_empty()).then(|| whys.join("; "))
}

/// Resolves a host name to an IPv4 address (what Ray advertises), None when it does not.
pub(crate) async fn resolve_host(name: &str) -> Option<IpAddr> {
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Some(ip);
    }
    tokio::net::lookup_host((name, 0))
        .await
        .ok()?
        .map(|sa| sa.ip())
        .find(|ip| ip.is_ipv4())
}

pub(crate) fn on_path(program: &str, env: &Env) -> bool {
    env.get("PATH")
        .is_some_and(|p| std::env::split_paths(p).any(|d| d.join(program).is_file()))
}

/// The environment every job ray-hpc submits exports itself: where the registry is and which
/// Ray to use. Some sites start jobs with a bare environment.
pub fn job_env() -> BTreeMap<String, String> {
    ["RAY_HPC_HOME", "VIRTUAL_ENV"]
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
        .collect()
}

/// One argument quoted for a POSIX shell, exactly as Python's `shlex.quote` does.
pub fn shell_quote(arg: &str) -> String {
    if arg.is_empty() {
        return "''".to_string();
    }
    let safe = arg
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_@%+=:,./-".contains(&b));
    if safe {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r#"'"'"'"#))
    }
}

/// A command line for `/bin/sh` in which every argument stays one word (`shlex.join`).
pub fn shell_join<S: AsRef<str>>(args: &[S]) -> String {
    args.iter()
        .map(|a| shell_quote(a.as_ref()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The `export` lines of a job script for `env`.
pub fn export_lines(env: &BTreeMap<String, String>) -> Vec<String> {
    env.iter()
        .map(|(k, v)| format!("export {k}={}", shell_quote(v)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn auto_picks_the_scheduler_whose_job_this_is_else_this_machine() {
        let inside = env(&[("SLURM_JOB_ID", "7")]);
        assert_eq!(
            choose(AUTO, Place::InsideJob, &inside).unwrap().name,
            "slurm"
        );
        assert_eq!(
            choose(AUTO, Place::InsideJob, &env(&[])).unwrap().name,
            "local"
        );
        assert_eq!(
            choose("local", Place::InsideJob, &inside).unwrap().name,
            "local"
        );
        let err = choose("pbs", Place::InsideJob, &inside).unwrap_err();
        assert!(err.to_string().contains(&names().join(", ")), "{err}");
    }

    #[test]
    fn auto_on_a_login_node_follows_the_tools_on_path() {
        let tmp = tempfile::tempdir().unwrap();
        let bin = tmp.path().join("sbatch");
        std::fs::write(&bin, "").unwrap();
        let with = env(&[("PATH", tmp.path().to_str().unwrap())]);
        assert_eq!(choose(AUTO, Place::LoginNode, &with).unwrap().name, "slurm");
        let without = env(&[("PATH", "/nonexistent")]);
        assert_eq!(
            choose(AUTO, Place::LoginNode, &without).unwrap().name,
            "local"
        );
    }

    #[test]
    fn every_adapter_has_a_unique_name_and_local_comes_last() {
        let mut n = names();
        assert_eq!(*n.last().unwrap(), "local");
        n.sort();
        n.dedup();
        assert_eq!(n.len(), ADAPTERS.len());
        assert_eq!(choices()[0], AUTO);
    }

    #[test]
    fn header_lines_must_belong_to_a_scheduler() {
        assert_eq!(directive_problem("#SBATCH --exclusive", None), None);
        assert_eq!(
            directive_problem("#SBATCH --exclusive", Some("slurm")),
            None
        );
        let why = directive_problem("--exclusive", None).unwrap();
        assert!(why.contains("slurm"), "{why}");
        // Local jobs have no header: nothing to check.
        assert_eq!(directive_problem("anything", Some("local")), None);
    }
}
