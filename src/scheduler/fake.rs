//! An in-memory scheduler for unit tests of everything above the adapters (the autoscaler's
//! loop above all): jobs are entries in a table, and each call can be made to fail, hang or
//! take its time, so every error path can be driven without a real scheduler.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::IpAddr;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use super::{
    Allocation, CommandError, EndReason, Host, JobInfo, JobRequest, JobState, Scheduler,
    SchedulerError,
};
use crate::discovery::NodeGrant;

/// How one kind of call behaves.
#[derive(Debug, Clone, Default)]
pub enum Behaviour {
    /// Works.
    #[default]
    Works,
    /// Refused, in these words (a submission the scheduler turns down).
    Refused(String),
    /// The command fails (exit code 1 with this stderr).
    Fails(String),
    /// The command never answers within the runner's timeout.
    TimesOut,
    /// The call takes this long, then works (a slow controller).
    Slow(Duration),
}

/// Everything the fake holds and was asked.
#[derive(Debug, Default)]
pub struct FakeState {
    pub jobs: BTreeMap<String, JobInfo>,
    pub next_id: u64,
    pub submit: Behaviour,
    pub query: Behaviour,
    pub cancel: Behaviour,
    /// Every call, in order: `submit`, `query 1,2`, `cancel 3`, `query_named rh-c`.
    pub calls: Vec<String>,
}

#[derive(Debug, Default)]
pub struct FakeScheduler {
    pub state: Mutex<FakeState>,
}

impl FakeScheduler {
    pub fn new() -> Self {
        FakeScheduler {
            state: Mutex::new(FakeState {
                next_id: 100,
                ..Default::default()
            }),
        }
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut FakeState) -> T) -> T {
        f(&mut self.state.lock().expect("not poisoned"))
    }

    /// The calls made so far whose names start with `prefix`.
    pub fn calls(&self, prefix: &str) -> Vec<String> {
        self.with(|s| {
            s.calls
                .iter()
                .filter(|c| c.starts_with(prefix))
                .cloned()
                .collect()
        })
    }

    /// Sets a job's state, as the scheduler would when it runs or ends it.
    pub fn set_state(&self, id: &str, state: JobState) {
        self.with(|s| {
            if let Some(j) = s.jobs.get_mut(id) {
                j.state = state;
            }
        });
    }

    /// Forgets a job, as a controller does some time after it ended.
    pub fn forget(&self, id: &str) {
        self.with(|s| s.jobs.remove(id));
    }

    /// What `behaviour` means for a call named `command`: wait, then the error to return.
    async fn behave(behaviour: Behaviour, command: &str) -> Result<(), SchedulerError> {
        match behaviour {
            Behaviour::Works => Ok(()),
            Behaviour::Slow(d) => {
                tokio::time::sleep(d).await;
                Ok(())
            }
            Behaviour::Refused(message) => Err(SchedulerError::Refused {
                command: command.into(),
                message,
            }),
            Behaviour::Fails(stderr) => Err(CommandError::Failed {
                command: command.into(),
                status: "exit code 1".into(),
                stderr,
            }
            .into()),
            Behaviour::TimesOut => Err(CommandError::Timeout {
                command: command.into(),
                after: Duration::from_secs(30),
            }
            .into()),
        }
    }
}

#[async_trait::async_trait]
impl Scheduler for FakeScheduler {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn allocation(&self) -> Result<Allocation, SchedulerError> {
        Ok(Allocation {
            scheduler: "fake",
            job_id: "1".into(),
            hosts: vec![Host {
                name: "f1".into(),
                cpus: None,
            }],
            this_node: "f1".into(),
        })
    }

    fn node_grant(&self, _alloc: &Allocation) -> Result<NodeGrant, SchedulerError> {
        Ok(NodeGrant::default())
    }

    async fn host_addresses(
        &self,
        _alloc: &Allocation,
    ) -> Result<BTreeMap<String, IpAddr>, SchedulerError> {
        Ok(BTreeMap::new())
    }

    fn fan_out(
        &self,
        _alloc: &Allocation,
        _argv: &[OsString],
    ) -> Result<Option<Command>, SchedulerError> {
        Ok(None)
    }

    fn render_job(&self, req: &JobRequest) -> Result<String, SchedulerError> {
        Ok(format!("# fake job {}\n{}\n", req.name, req.command))
    }

    async fn submit(&self, _script: &str, req: &JobRequest) -> Result<String, SchedulerError> {
        let behaviour = self.with(|s| {
            s.calls.push("submit".into());
            s.submit.clone()
        });
        Self::behave(behaviour, "submit").await?;
        Ok(self.with(|s| {
            s.next_id += 1;
            let id = s.next_id.to_string();
            s.jobs.insert(
                id.clone(),
                JobInfo {
                    id: id.clone(),
                    name: req.name.clone(),
                    state: JobState::Pending,
                    reason: Some("Resources".into()),
                    start_time: None,
                    time_left_s: None,
                },
            );
            id
        }))
    }

    async fn query(&self, job_ids: &[String]) -> Result<Vec<JobInfo>, SchedulerError> {
        let behaviour = self.with(|s| {
            s.calls.push(format!("query {}", job_ids.join(",")));
            s.query.clone()
        });
        Self::behave(behaviour, "query").await?;
        Ok(self.with(|s| {
            job_ids
                .iter()
                .filter_map(|id| s.jobs.get(id).cloned())
                .collect()
        }))
    }

    async fn query_named(&self, name: &str) -> Result<Vec<JobInfo>, SchedulerError> {
        let behaviour = self.with(|s| {
            s.calls.push(format!("query_named {name}"));
            s.query.clone()
        });
        Self::behave(behaviour, "query").await?;
        Ok(self.with(|s| {
            s.jobs
                .values()
                .filter(|j| j.name == name)
                .cloned()
                .collect()
        }))
    }

    async fn cancel(&self, job_ids: &[String]) -> Result<(), SchedulerError> {
        let behaviour = self.with(|s| {
            s.calls.push(format!("cancel {}", job_ids.join(",")));
            s.cancel.clone()
        });
        Self::behave(behaviour, "cancel").await?;
        self.with(|s| {
            for id in job_ids {
                if let Some(j) = s.jobs.get_mut(id) {
                    if !j.state.is_ended() {
                        j.state = JobState::Ended(EndReason::Cancelled);
                    }
                }
            }
        });
        Ok(())
    }
}
