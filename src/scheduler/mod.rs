//! The one interface behind which everything scheduler-specific lives.
//!
//! An adapter reads the allocation this process runs in, says what this node was granted, knows
//! the addresses the scheduler gives its nodes, and fans a command out to the allocation's other
//! nodes. Autoscaling (submit, query, cancel) joins this trait with its own issue.

pub mod local;
pub mod slurm;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::IpAddr;
use std::process::Command;

use crate::config::SchedulerChoice;
use crate::discovery::NodeGrant;

/// One host of an allocation.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Host {
    /// The scheduler's name for the node (Slurm node name, LSF host, ...).
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
}

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error(
        "scheduler `{scheduler}` was asked for, but this process is not inside one of its allocations ({why}); submit a job (e.g. `sbatch job-scripts/ray-cluster.sbatch ...`) or use `--scheduler local`"
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
    #[error("`{command}` failed: {why}")]
    Command { command: String, why: String },
    #[error("could not parse the output of `{command}`: {why}")]
    BadOutput { command: String, why: String },
    /// The scheduler said no; `message` is its own words.
    #[error("`{command}` refused the job: {message}")]
    Refused { command: String, message: String },
}

/// A batch job to submit: what `ray-hpc up` (and later the autoscaler) asks for.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct JobRequest {
    /// Job name; ray-hpc tags its jobs with the cluster name so one query finds them all.
    pub name: String,
    pub nodes: u32,
    pub cpus_per_node: Option<u32>,
    pub gpus_per_node: Option<u32>,
    pub partition: Option<String>,
    /// Walltime as the scheduler writes it (Slurm: `30`, `1:00:00`, `1-00:00:00`).
    pub time: Option<String>,
    /// Extra header lines, verbatim (`#SBATCH --account=x`).
    pub extra_directives: Vec<String>,
    /// Where the job's output goes.
    pub output: std::path::PathBuf,
    /// The command the job runs (`ray-hpc run --name N`), already quoted for a shell.
    pub command: String,
    /// Environment the job needs, exported at the top of the script.
    pub env: Vec<(String, String)>,
}

/// Where a job is in the scheduler's life cycle.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting in the queue; `JobInfo::reason` says why.
    Pending,
    Running,
    /// Ending: the scheduler is cleaning up.
    Completing,
    /// Over, with the scheduler's word for how (COMPLETED, FAILED, CANCELLED, TIMEOUT, ...).
    Ended(String),
}

/// One job as the scheduler sees it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct JobInfo {
    pub id: String,
    pub name: String,
    pub state: JobState,
    /// Why a pending job waits (Slurm's reason: Resources, Priority, QOSMaxJobsPerUserLimit...).
    pub reason: Option<String>,
    /// Expected start for a pending job, actual start for a running one, as the scheduler says.
    pub start_time: Option<String>,
    /// Walltime left for a running job, when it has a limit.
    pub time_left_s: Option<u64>,
}

/// What a scheduler adapter does for the rest of ray-hpc.
pub trait Scheduler: Send + Sync {
    fn name(&self) -> &'static str;

    /// The allocation this process runs in.
    fn allocation(&self) -> Result<Allocation, SchedulerError>;

    /// What the scheduler granted the node this process runs on.
    fn node_grant(&self, alloc: &Allocation) -> Result<NodeGrant, SchedulerError>;

    /// The addresses the scheduler knows the allocation's hosts by, from one query.
    /// Hosts it has no address for are missing from the map.
    fn host_addresses(
        &self,
        alloc: &Allocation,
    ) -> Result<BTreeMap<String, IpAddr>, SchedulerError>;

    /// One command that starts `argv` once on every host but the head, or None when the
    /// allocation has a single host. The caller adds the environment and spawns it.
    fn fan_out(
        &self,
        alloc: &Allocation,
        argv: &[OsString],
        extra_args: &[String],
    ) -> Result<Option<Command>, SchedulerError>;

    /// The batch script for `req` (what `up --dry-run` prints).
    fn render_job(&self, req: &JobRequest) -> Result<String, SchedulerError> {
        let _ = req;
        Err(self.unsupported("submitting jobs"))
    }

    /// Submits a script rendered by `render_job`; returns the job id. A refusal comes back
    /// with the scheduler's own message.
    fn submit(&self, script: &str, req: &JobRequest) -> Result<String, SchedulerError> {
        let _ = (script, req);
        Err(self.unsupported("submitting jobs"))
    }

    /// The state of these jobs, from one query. Jobs the scheduler no longer knows are
    /// missing from the answer.
    fn query(&self, job_ids: &[String]) -> Result<Vec<JobInfo>, SchedulerError> {
        let _ = job_ids;
        Err(self.unsupported("querying jobs"))
    }

    /// This user's jobs named `name` that the scheduler still knows, from one query (how a
    /// head finds the jobs an earlier head of its cluster left behind).
    fn query_named(&self, name: &str) -> Result<Vec<JobInfo>, SchedulerError> {
        let _ = name;
        Err(self.unsupported("querying jobs by name"))
    }

    /// Cancels these jobs in one call. Jobs already gone are not an error.
    fn cancel(&self, job_ids: &[String]) -> Result<(), SchedulerError> {
        let _ = job_ids;
        Err(self.unsupported("cancelling jobs"))
    }

    fn unsupported(&self, what: &str) -> SchedulerError {
        SchedulerError::Command {
            command: self.name().to_string(),
            why: format!("the {} scheduler does not support {what}", self.name()),
        }
    }
}

/// Environment lookups go through this so adapters can be tested on recorded environments.
pub type Env = BTreeMap<String, String>;

pub fn process_env() -> Env {
    std::env::vars().collect()
}

/// Picks the adapter: `auto` means Slurm inside a Slurm job, else this machine alone.
pub fn select(choice: SchedulerChoice, env: Env) -> Result<Box<dyn Scheduler>, SchedulerError> {
    Ok(match choice {
        SchedulerChoice::Slurm => Box::new(slurm::Slurm::new(env)),
        SchedulerChoice::Local => Box::new(local::Local::new(env)),
        SchedulerChoice::Auto if env.contains_key("SLURM_JOB_ID") => {
            Box::new(slurm::Slurm::new(env))
        }
        SchedulerChoice::Auto => Box::new(local::Local::new(env)),
    })
}

/// The environment every job ray-hpc submits exports itself: where the registry is and which
/// Ray to use. Some sites start jobs with a bare environment (SBATCH_EXPORT=NONE).
pub fn job_env() -> Vec<(String, String)> {
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

/// The adapter for a scheduler named in a cluster record ("slurm", "local").
pub fn by_name(name: &str, env: Env) -> Result<Box<dyn Scheduler>, SchedulerError> {
    match name {
        "slurm" => Ok(Box::new(slurm::Slurm::new(env))),
        "local" => Ok(Box::new(local::Local::new(env))),
        other => Err(SchedulerError::BadVariable {
            variable: "scheduler".into(),
            value: other.into(),
            why: "this ray-hpc knows only slurm and local".into(),
        }),
    }
}

/// Runs a scheduler command and returns its stdout, or an error carrying its stderr.
pub(crate) fn run_command(cmd: &mut Command) -> Result<String, SchedulerError> {
    let shown = format!("{cmd:?}").replace('"', "");
    let out = cmd.output().map_err(|e| SchedulerError::Command {
        command: shown.clone(),
        why: format!("could not run it: {e}"),
    })?;
    if !out.status.success() {
        return Err(SchedulerError::Command {
            command: shown,
            why: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
