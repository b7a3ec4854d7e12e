//! The worker jobs this head submitted, as last seen by the scheduler and the GCS: what the
//! planner reads as [`WorkerJob`]s, the scheduler's last word on each (for `ray status`), and
//! the count of jobs and nodes lost along the way.

use std::collections::{BTreeMap, BTreeSet};

use super::planner::{JobPhase, NodeStatus, ObservedNode, WorkerJob};
use crate::scheduler::{JobInfo, JobState};

#[derive(Debug, Default)]
pub struct JobBook {
    pub jobs: Vec<WorkerJob>,
    /// The scheduler's last word on each job: state and queue reason.
    pub detail: BTreeMap<String, String>,
    /// Worker jobs that ended before their node joined, and joined nodes that died: counted
    /// for the user, and replaced by the planner while demand remains.
    pub lost_before_join: u32,
    pub lost_after_join: u32,
    /// Jobs already counted as lost, so none is counted twice.
    counted_lost: BTreeSet<String>,
}

impl JobBook {
    /// The jobs the scheduler has suspended.
    pub fn suspended(&self) -> usize {
        self.jobs
            .iter()
            .filter(|j| j.phase == JobPhase::Suspended)
            .count()
    }

    /// The jobs not seen to end.
    pub fn live_ids(&self) -> Vec<String> {
        self.jobs
            .iter()
            .filter(|j| j.phase != JobPhase::Ended)
            .map(|j| j.job_id.clone())
            .collect()
    }

    pub fn is_ours(&self, id: &str) -> bool {
        self.jobs.iter().any(|j| j.job_id == id)
    }

    /// A job just submitted.
    pub fn submitted(&mut self, job_id: String, node_type: &str, now_ms: u64) {
        self.detail.insert(job_id.clone(), "queued".into());
        self.jobs.push(WorkerJob {
            job_id,
            node_type: node_type.to_string(),
            phase: JobPhase::Pending,
            submitted_ms: now_ms,
        });
    }

    /// Jobs we cancelled: ended as far as we are concerned (not lost).
    pub fn cancelled(&mut self, ids: &[String]) {
        for j in self.jobs.iter_mut().filter(|j| ids.contains(&j.job_id)) {
            j.phase = JobPhase::Ended;
            self.counted_lost.insert(j.job_id.clone());
        }
    }

    /// Takes in the scheduler's answer about the live jobs: jobs missing from it are gone.
    pub fn absorb_scheduler(&mut self, answer: &[JobInfo]) {
        let by_id: BTreeMap<&str, &JobInfo> = answer.iter().map(|j| (j.id.as_str(), j)).collect();
        for job in self.jobs.iter_mut().filter(|j| j.phase != JobPhase::Ended) {
            let was = job.phase;
            match by_id.get(job.job_id.as_str()) {
                None => job.phase = JobPhase::Ended,
                Some(info) => {
                    self.detail.insert(job.job_id.clone(), detail_of(info));
                    job.phase = match &info.state {
                        JobState::Pending => JobPhase::Pending,
                        JobState::Ended(_) => JobPhase::Ended,
                        JobState::Suspended => JobPhase::Suspended,
                        // Joined is decided from the GCS (a resumed job's node is seen anew).
                        _ if job.phase == JobPhase::Joined => JobPhase::Joined,
                        _ => JobPhase::Running,
                    };
                }
            }
            // Ended without our cancel (our cancels are counted already).
            if job.phase == JobPhase::Ended && self.counted_lost.insert(job.job_id.clone()) {
                if was == JobPhase::Joined {
                    self.lost_after_join += 1;
                    tracing::warn!("autoscaler: job {} ended under its joined node", job.job_id);
                } else {
                    self.lost_before_join += 1;
                    tracing::warn!(
                        "autoscaler: {} job {} ended before its node joined; it is replaced while demand remains",
                        job.node_type,
                        job.job_id
                    );
                }
            }
        }
    }

    /// Takes in the GCS's nodes: a job whose node is alive has joined; a joined job whose
    /// nodes are all dead is lost.
    pub fn absorb_nodes(&mut self, nodes: &[ObservedNode], now_ms: u64) {
        let alive: BTreeSet<&str> = nodes
            .iter()
            .filter(|n| n.status != NodeStatus::Dead)
            .map(|n| n.instance_id.as_str())
            .collect();
        let dead: BTreeSet<&str> = nodes
            .iter()
            .filter(|n| n.status == NodeStatus::Dead)
            .map(|n| n.instance_id.as_str())
            .collect();
        for job in self.jobs.iter_mut() {
            let id = job.job_id.as_str();
            if job.phase == JobPhase::Joined
                && dead.contains(id)
                && !alive.contains(id)
                && self.counted_lost.insert(job.job_id.clone())
            {
                self.lost_after_join += 1;
                tracing::warn!(
                    "autoscaler: the node of job {id} died; it is replaced while demand remains"
                );
            }
            if matches!(job.phase, JobPhase::Pending | JobPhase::Running)
                && alive.contains(job.job_id.as_str())
            {
                tracing::info!(
                    "autoscaler: {} job {} joined, {:.1}s after its submission",
                    job.node_type,
                    job.job_id,
                    now_ms.saturating_sub(job.submitted_ms) as f64 / 1000.0
                );
                job.phase = JobPhase::Joined;
            }
        }
    }

    /// Jobs by the states `rayhpc_scheduler_jobs` reports, the head's own job included.
    pub fn counts(&self) -> Vec<(&'static str, u64)> {
        let mut counts = BTreeMap::from([
            ("pending", 0),
            ("running", 1),
            ("suspended", 0),
            ("ended", 0),
        ]);
        for j in &self.jobs {
            let key = match j.phase {
                JobPhase::Pending => "pending",
                JobPhase::Running | JobPhase::Joined => "running",
                JobPhase::Suspended => "suspended",
                JobPhase::Ended => "ended",
            };
            *counts.entry(key).or_default() += 1;
        }
        counts.into_iter().collect()
    }
}

/// The scheduler's word on a job, as `ray status` shows it.
fn detail_of(info: &JobInfo) -> String {
    match (&info.state, &info.reason) {
        (JobState::Pending, Some(r)) => format!("queued ({r})"),
        (JobState::Pending, None) => "queued".into(),
        (JobState::Running | JobState::Completing, _) => "running".into(),
        (JobState::Suspended, _) => "suspended".into(),
        (JobState::Ended(how), _) => how.to_string(),
    }
}
