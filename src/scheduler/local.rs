//! Local: this machine as a one-node allocation (laptops, CI, a fresh machine).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;

use super::{Allocation, Env, Host, Scheduler, SchedulerError};
use crate::discovery::{GpuGrant, NodeGrant};

/// The address a local cluster binds and advertises.
pub const LOCAL_ADDRESS: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

pub struct Local {
    job_id: String,
}

impl Local {
    pub fn new(_env: Env) -> Self {
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

impl Scheduler for Local {
    fn name(&self) -> &'static str {
        "local"
    }

    fn allocation(&self) -> Result<Allocation, SchedulerError> {
        let name = hostname();
        Ok(Allocation {
            scheduler: "local",
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
            memory_bytes: None,
            gpus: GpuGrant::Unknown,
        })
    }

    fn host_addresses(
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
        _extra_args: &[String],
    ) -> Result<Option<Command>, SchedulerError> {
        Ok(None)
    }
}
