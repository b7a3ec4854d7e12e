//! Local: this machine as a one-node allocation (laptops, CI, a fresh machine).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;

use super::{
    Adapter, Allocation, Host, JobInfo, JobRequest, JobState, Scheduler, SchedulerError, Setup,
    export_lines,
};
use crate::discovery::{GpuGrant, NodeGrant};

pub const NAME: &str = "local";

pub static ADAPTER: Adapter = Adapter {
    name: NAME,
    // Never recognised: `auto` falls back to it.
    inside_job: |_| false,
    submit_tool: None,
    settings: None,
    directive_problem: None,
    open: |setup| Ok(Box::new(Local::open(setup))),
};

/// The address a local cluster binds and advertises.
pub const LOCAL_ADDRESS: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

pub struct Local {
    job_id: String,
}

impl Local {
    pub fn open(_setup: Setup) -> Self {
        // A job id of our own so registry entries and Ray instance ids stay unique per run.
        Local {
            job_id: format!("local-{}", std::process::id()),
        }
    }
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

/// Pid of a local "job" id (`local-<pid>`).
fn pid_of(job_id: &str) -> Option<i32> {
    job_id.strip_prefix("local-")?.parse().ok()
}

/// A local job is alive while its pid runs ray-hpc (a recycled pid runs something else).
fn is_our_job(pid: i32) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let first = cmdline.split(|b| *b == 0).next().unwrap_or_default();
    String::from_utf8_lossy(first).ends_with("ray-hpc")
}

#[async_trait::async_trait]
impl Scheduler for Local {
    fn name(&self) -> &'static str {
        NAME
    }

    fn allocation(&self) -> Result<Allocation, SchedulerError> {
        let name = hostname();
        Ok(Allocation {
            scheduler: NAME,
            job_id: self.job_id.clone(),
            hosts: vec![Host {
                name: name.clone(),
                cpus: None,
            }],
            this_node: name,
        })
    }

    fn node_grant(&self, _alloc: &Allocation) -> Result<NodeGrant, SchedulerError> {
        // No scheduler grant: affinity, cgroups and the machine itself set the limits.
        Ok(NodeGrant {
            cpus: None,
            cpu_ids: None,
            memory_bytes: None,
            gpus: GpuGrant::Unknown,
        })
    }

    async fn host_addresses(
        &self,
        alloc: &Allocation,
    ) -> Result<BTreeMap<String, IpAddr>, SchedulerError> {
        // One node talking to itself: loopback works without any network and exposes nothing.
        // Not 127.0.0.1: Ray treats exactly that address as "localhost" and swaps in the
        // machine's primary address; any other 127/8 address it takes as given.
        Ok(BTreeMap::from([(
            alloc.this_node.clone(),
            IpAddr::V4(LOCAL_ADDRESS),
        )]))
    }

    fn fan_out(
        &self,
        _alloc: &Allocation,
        _argv: &[OsString],
    ) -> Result<Option<Command>, SchedulerError> {
        Ok(None)
    }

    fn render_job(&self, req: &JobRequest) -> Result<String, SchedulerError> {
        let mut script = String::from(
            "#!/bin/bash\n# A local Ray cluster started by `ray-hpc up`.\nset -euo pipefail\n",
        );
        // No header: a local job has no scheduler to read one.
        for line in export_lines(&req.env) {
            script.push_str(&line);
            script.push('\n');
        }
        script.push_str(&format!("exec {}\n", req.command));
        Ok(script)
    }

    /// Starts the script detached (its own session, output to `req.output`); the job id is the
    /// pid, which `exec` hands on to `ray-hpc run`, whose own job id is then the same.
    async fn submit(&self, script: &str, req: &JobRequest) -> Result<String, SchedulerError> {
        use std::os::unix::process::CommandExt;
        let fail = |why: String| {
            SchedulerError::Command(super::CommandError::Spawn {
                command: "bash (local job)".into(),
                why,
            })
        };
        // The job id is the pid, known only once it runs: the output file gets a name of its
        // own now and the job's id once it has one (the open file follows the rename).
        let starting = req.output.for_job(&format!(
            "starting-{}",
            hex::encode(rand::random::<[u8; 4]>())
        ));
        let out = std::fs::File::create(&starting)
            .map_err(|e| fail(format!("{}: {e}", starting.display())))?;
        let mut cmd = Command::new("bash");
        cmd.arg("-c")
            .arg(script)
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone().map_err(|e| fail(e.to_string()))?)
            .stderr(out);
        // SAFETY: setsid is async-signal-safe; the job must outlive `ray-hpc up`.
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| fail(e.to_string()))?;
        let job_id = format!("local-{}", child.id());
        let output = req.output.for_job(&job_id);
        if output != starting {
            std::fs::rename(&starting, &output)
                .map_err(|e| fail(format!("{}: {e}", output.display())))?;
        }
        Ok(job_id)
    }

    async fn query(&self, job_ids: &[String]) -> Result<Vec<JobInfo>, SchedulerError> {
        Ok(job_ids
            .iter()
            .filter(|id| pid_of(id).is_some_and(is_our_job))
            .map(|id| JobInfo {
                id: id.clone(),
                name: String::new(),
                state: JobState::Running,
                reason: None,
                start_time: None,
                time_left_s: None,
            })
            .collect())
    }

    /// Local jobs carry no name the system keeps; a local head leaves nothing to find.
    async fn query_named(&self, _name: &str) -> Result<Vec<JobInfo>, SchedulerError> {
        Ok(vec![])
    }

    async fn cancel(&self, job_ids: &[String]) -> Result<(), SchedulerError> {
        for pid in job_ids.iter().filter_map(|id| pid_of(id)) {
            if is_our_job(pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
        Ok(())
    }
}
