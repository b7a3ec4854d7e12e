//! Batch jobs as the rest of ray-hpc sees them: a typed request each adapter renders in its own
//! syntax, and typed states and end reasons each adapter maps its own words onto.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

/// A batch job to submit: what `ray-hpc up` and the autoscaler ask for. Every field is
/// scheduler-neutral; the adapter that renders it owns the syntax.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct JobRequest {
    /// Job name; ray-hpc tags its jobs with the cluster name so one query finds them all.
    pub name: String,
    pub nodes: u32,
    pub cpus_per_node: Option<u32>,
    pub gpus_per_node: Option<u32>,
    /// Memory per node, in bytes.
    pub memory_per_node: Option<u64>,
    /// The queue (partition) to submit to.
    pub queue: Option<String>,
    /// The account or project the job is charged to.
    pub account: Option<String>,
    /// Quality of service.
    pub qos: Option<String>,
    /// Node features the job needs.
    pub constraint: Option<String>,
    /// The job's time limit.
    pub walltime: Option<Duration>,
    /// Where the job's output goes.
    pub output: OutputPath,
    /// The user's own header lines for this scheduler, verbatim and in order (the config's
    /// cluster-wide ones, then a node type's). The adapter checks they are its syntax.
    pub directives: Vec<String>,
    /// The command the job runs (`ray-hpc run --name N`), already quoted for a shell.
    pub command: String,
    /// Environment the job needs, exported at the top of the script.
    pub env: BTreeMap<String, String>,
    /// The Ray node type this job adds to a running cluster; None for the job that starts a
    /// cluster. Batch schedulers submit both alike; a scheduler that runs a cluster as one
    /// application grows that application instead.
    pub node_type: Option<String>,
    /// The kinds of node a starting cluster may run, for schedulers that declare every kind
    /// when the application is created (and only grow it later). Others ignore it.
    pub node_kinds: Vec<NodeKind>,
}

/// One kind of node a cluster may run: its shape, how many start with the cluster, and the
/// command that joins one to it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NodeKind {
    /// The Ray node type (`worker` for the nodes `up --nodes` asks for).
    pub node_type: String,
    /// Nodes of this kind that start with the cluster.
    pub count: u32,
    pub cpus: Option<u32>,
    pub gpus: Option<u32>,
    /// Bytes.
    pub memory: Option<u64>,
    /// The command that joins one node of this kind to the cluster, quoted for a shell.
    pub command: String,
}

impl JobRequest {
    /// Every one of the user's header lines passes `problem` (the rendering adapter's check),
    /// else a clear error naming the first that does not.
    pub fn check_directives(
        &self,
        problem: fn(&str) -> Option<String>,
    ) -> Result<(), super::SchedulerError> {
        match self.directives.iter().find_map(|l| Some((l, problem(l)?))) {
            Some((line, why)) => Err(super::SchedulerError::BadRequest(format!(
                "the header line {line:?} (extra_directives) {why}"
            ))),
            None => Ok(()),
        }
    }
}

/// A job's output file. [`OutputPath::JOB_ID`] in it stands for the job's id, which only the
/// scheduler knows when the job starts: each adapter writes it in its own syntax.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OutputPath(pub PathBuf);

impl OutputPath {
    pub const JOB_ID: &'static str = "{job_id}";

    /// The path with the job-id placeholder written as `token` (the scheduler's own syntax).
    pub fn with_job_id_as(&self, token: &str) -> String {
        self.0.display().to_string().replace(Self::JOB_ID, token)
    }

    /// The file a job with this id writes.
    pub fn for_job(&self, job_id: &str) -> PathBuf {
        PathBuf::from(self.with_job_id_as(job_id))
    }
}

/// A length of time as `[D-]HH:MM:SS`: how walltimes are shown, and the form several
/// schedulers take them in.
pub fn clock(d: Duration) -> String {
    let secs = d.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let hms = format!(
        "{:02}:{:02}:{:02}",
        rest / 3600,
        (rest / 60) % 60,
        rest % 60
    );
    if days > 0 {
        format!("{days}-{hms}")
    } else {
        hms
    }
}

/// Where a job is in the scheduler's life cycle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "reason")]
pub enum JobState {
    /// Waiting in the queue; `JobInfo::reason` says why.
    Pending,
    Running,
    /// Stopped by the scheduler (its processes are stopped): not capacity while it lasts.
    Suspended,
    /// Ending: the scheduler is cleaning up.
    Completing,
    Ended(EndReason),
}

impl JobState {
    pub fn is_ended(&self) -> bool {
        matches!(self, JobState::Ended(_))
    }
}

/// How a job ended. Serialized as its words (`completed`, `node failure`, or the scheduler's
/// own word for anything else).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// Its command exited 0.
    Completed,
    /// Cancelled by a user or an administrator.
    Cancelled,
    /// Its command exited non-zero.
    Failed,
    /// It reached its time limit.
    Timeout,
    /// A node it ran on failed.
    NodeFailure,
    /// The scheduler took its nodes for other work.
    Preempted,
    /// It used more memory than it was granted.
    OutOfMemory,
    /// Anything else, in the scheduler's own word.
    Other(String),
}

impl EndReason {
    /// Ended the way it was meant to: it completed, or somebody cancelled it.
    pub fn is_clean(&self) -> bool {
        matches!(self, EndReason::Completed | EndReason::Cancelled)
    }
}

impl Serialize for EndReason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EndReason::Completed => "completed",
            EndReason::Cancelled => "cancelled",
            EndReason::Failed => "failed",
            EndReason::Timeout => "timeout",
            EndReason::NodeFailure => "node failure",
            EndReason::Preempted => "preempted",
            EndReason::OutOfMemory => "out of memory",
            EndReason::Other(word) => word,
        })
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JobState::Pending => f.write_str("pending"),
            JobState::Running => f.write_str("running"),
            JobState::Suspended => f.write_str("suspended"),
            JobState::Completing => f.write_str("completing"),
            JobState::Ended(how) => write!(f, "ended ({how})"),
        }
    }
}

/// One job as the scheduler sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobInfo {
    pub id: String,
    pub name: String,
    pub state: JobState,
    /// Why a pending job waits, in the scheduler's words (Resources, Priority, a QOS limit...).
    pub reason: Option<String>,
    /// Expected start for a pending job, actual start for a running one, as the scheduler says.
    pub start_time: Option<String>,
    /// Walltime left for a running job, when it has a limit.
    pub time_left_s: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_paths_take_each_schedulers_job_id_token() {
        let out = OutputPath(PathBuf::from("/h/c1/worker-cpu-{job_id}.out"));
        assert_eq!(out.with_job_id_as("%j"), "/h/c1/worker-cpu-%j.out");
        assert_eq!(out.for_job("42"), PathBuf::from("/h/c1/worker-cpu-42.out"));
        let plain = OutputPath(PathBuf::from("/h/c1/job.out"));
        assert_eq!(plain.with_job_id_as("%j"), "/h/c1/job.out");
    }

    #[test]
    fn only_completed_and_cancelled_are_clean_ends() {
        let clean = [EndReason::Completed, EndReason::Cancelled];
        let unclean = [
            EndReason::Failed,
            EndReason::Timeout,
            EndReason::NodeFailure,
            EndReason::Preempted,
            EndReason::OutOfMemory,
            EndReason::Other("BOOT_FAIL".into()),
        ];
        assert!(clean.iter().all(EndReason::is_clean));
        assert!(!unclean.iter().any(EndReason::is_clean));
        assert_eq!(
            JobState::Ended(EndReason::NodeFailure).to_string(),
            "ended (node failure)"
        );
    }
}
