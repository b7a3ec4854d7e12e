//! Discovery: what this process may use on this node.
//!
//! CPUs are the minimum of the scheduler's grant, the affinity mask, the cgroup cpuset and the
//! cgroup CPU quota; GPUs come from NVML, matched to the allocation (`CUDA_VISIBLE_DEVICES`, else
//! the scheduler's GPU ids); memory is the minimum of physical memory, the cgroup limit and the
//! grant; the address is the configured interface's, else the scheduler's node address, else the
//! hostname's.
//!
//! Everything the logic reads from the host goes through [`System`] (files under a [`HostPaths`]
//! root, the environment, the affinity mask, NVML, interfaces, name resolution, hwloc), so the
//! rules are unit-tested on fixture trees and fake GPUs. [`discover`] uses the live host.

mod cgroup;
pub mod cpu;
pub mod gpu;
pub mod memory;
pub mod network;
pub mod topology;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

pub use cpu::{CpuLimit, CpuLimits, format_cpu_list, parse_cpu_list};
pub use gpu::{GpuInfo, GpuProbe, MigInstance, NvmlProbe, PhysicalGpu, ProbeError};
pub use memory::{MemoryLimit, MemoryLimits};
pub use network::Interface;
pub use topology::TopologyCounts;

/// What the scheduler granted this node (filled by the scheduler adapter; None = no limit known).
#[derive(Debug, Clone, Default)]
pub struct NodeGrant {
    pub cpus: Option<u32>,
    /// The CPU ids the scheduler bound this node's task to, when it says (a per-task CPU list).
    pub cpu_ids: Option<Vec<u32>>,
    pub memory_bytes: Option<u64>,
    pub gpus: GpuGrant,
}

/// The GPUs the scheduler granted this node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum GpuGrant {
    /// The scheduler does not say: every GPU NVML sees (unless `CUDA_VISIBLE_DEVICES` says less).
    #[default]
    Unknown,
    /// Ids from the scheduler, e.g. "0,2" (physical indices) or UUIDs.
    Ids(Vec<String>),
    /// The scheduler granted no GPUs.
    None,
}

#[derive(Debug, Clone, Default)]
pub struct DiscoveryOptions {
    /// Network interface whose IPv4 address Ray should use (e.g. "ib0").
    pub interface: Option<String>,
    /// Address the scheduler knows this node by (from the scheduler's own node records).
    pub scheduler_address: Option<IpAddr>,
}

/// What this process may use on this node.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeResources {
    pub hostname: String,
    /// Logical CPUs this process may use: the minimum of all the limits in `cpu_limits`.
    pub cpus: u32,
    /// The CPUs it may run on (affinity ∩ cgroup cpuset), the first `cpus` of them.
    pub cpu_ids: Vec<u32>,
    pub cpu_limits: CpuLimits,
    /// The GPUs this process was given, in the order CUDA numbers them for this process.
    pub gpus: Vec<GpuInfo>,
    /// Why there are no (or fewer) GPUs, when there is something to say.
    pub gpu_note: Option<String>,
    /// Memory this process may use: the minimum of all the limits in `memory_limits`.
    pub memory_bytes: u64,
    pub memory_limits: MemoryLimits,
    /// Size of /dev/shm (Ray's object store lives there), when it can be read.
    pub shm_bytes: Option<u64>,
    /// The address Ray should bind and advertise on this node.
    pub address: IpAddr,
    /// Which rule chose `address`.
    pub address_source: String,
    /// Physical cores in this process's topology (hwloc), when hwloc works.
    pub cores: Option<u32>,
    /// NUMA nodes in this process's topology (hwloc), when hwloc works.
    pub numa_nodes: Option<u32>,
}

/// Something on this host could not be read or made sense of.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: cannot parse {value:?}: {reason}", path.display())]
    Parse {
        path: PathBuf,
        value: String,
        reason: String,
    },
    #[error("{variable}={value:?}: {reason}")]
    BadVariable {
        variable: String,
        value: String,
        reason: String,
    },
    #[error("cannot read the CPU affinity of this process: {0}")]
    Affinity(String),
    #[error("network interface {name:?} does not exist; interfaces here: {}", list_or_none(.available))]
    NoSuchInterface {
        name: String,
        available: Vec<String>,
    },
    #[error("network interface {name:?} has no IPv4 address; interfaces with one: {}", list_or_none(.with_ipv4))]
    NoIpv4 {
        name: String,
        with_ipv4: Vec<String>,
    },
    #[error("cannot list the network interfaces: {0}")]
    Interfaces(String),
    #[error("cannot read the hostname: {0}")]
    Hostname(String),
    #[error("NVML: {0}")]
    Gpu(String),
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "(none)".to_string()
    } else {
        items.join(", ")
    }
}

/// Where the host's pseudo-filesystems are; tests point these at fixture trees.
#[derive(Debug, Clone)]
pub struct HostPaths {
    /// Usually /proc (meminfo, self/cgroup, self/status are read from it).
    pub proc: PathBuf,
    /// Usually /sys/fs/cgroup (v2 unified there or under `unified/`, v1 one directory per
    /// controller).
    pub sys_fs_cgroup: PathBuf,
    /// Usually /dev/shm.
    pub dev_shm: PathBuf,
}

impl Default for HostPaths {
    fn default() -> Self {
        HostPaths {
            proc: PathBuf::from("/proc"),
            sys_fs_cgroup: PathBuf::from("/sys/fs/cgroup"),
            dev_shm: PathBuf::from("/dev/shm"),
        }
    }
}

/// Everything discovery reads from the host. [`LiveSystem`] is the real one.
pub trait System {
    fn paths(&self) -> &HostPaths;
    /// An environment variable (None when unset).
    fn env(&self, name: &str) -> Option<String>;
    /// The CPUs this process's affinity mask allows, in any order.
    fn affinity(&self) -> Result<Vec<u32>, DiscoveryError>;
    fn gpu_probe(&self) -> &dyn GpuProbe;
    /// Every (interface, address) pair of this host, plus interfaces with no address.
    fn interfaces(&self) -> Result<Vec<Interface>, DiscoveryError>;
    fn hostname(&self) -> Result<String, DiscoveryError>;
    /// The addresses `host` resolves to (empty when it does not resolve).
    fn resolve(&self, host: &str) -> Vec<IpAddr>;
    /// Core and NUMA node counts; None where hwloc cannot tell.
    fn topology(&self) -> TopologyCounts;
}

/// The live host: /proc, /sys/fs/cgroup, NVML, getifaddrs, hwloc.
#[derive(Debug, Default)]
pub struct LiveSystem {
    pub paths: HostPaths,
    /// The environment to read instead of the process's own (e.g. a scheduler adapter's `Env`).
    pub env: Option<BTreeMap<String, String>>,
    nvml: NvmlProbe,
}

impl LiveSystem {
    pub fn new(paths: HostPaths, env: Option<BTreeMap<String, String>>) -> Self {
        LiveSystem {
            paths,
            env,
            nvml: NvmlProbe,
        }
    }
}

impl System for LiveSystem {
    fn paths(&self) -> &HostPaths {
        &self.paths
    }

    fn env(&self, name: &str) -> Option<String> {
        match &self.env {
            Some(map) => map.get(name).cloned(),
            None => std::env::var_os(name).map(|v| v.to_string_lossy().into_owned()),
        }
    }

    fn affinity(&self) -> Result<Vec<u32>, DiscoveryError> {
        cpu::live_affinity(&self.paths)
    }

    fn gpu_probe(&self) -> &dyn GpuProbe {
        &self.nvml
    }

    fn interfaces(&self) -> Result<Vec<Interface>, DiscoveryError> {
        network::live_interfaces()
    }

    fn hostname(&self) -> Result<String, DiscoveryError> {
        nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .map_err(|e| DiscoveryError::Hostname(e.to_string()))
    }

    fn resolve(&self, host: &str) -> Vec<IpAddr> {
        network::live_resolve(host)
    }

    fn topology(&self) -> TopologyCounts {
        topology::live_counts()
    }
}

/// What this process may use on this node, read from the live host.
pub fn discover(
    grant: &NodeGrant,
    opts: &DiscoveryOptions,
) -> Result<NodeResources, DiscoveryError> {
    discover_with(&LiveSystem::default(), grant, opts)
}

/// [`discover`] on any [`System`] (tests pass fixture trees and fake probes).
pub fn discover_with(
    sys: &dyn System,
    grant: &NodeGrant,
    opts: &DiscoveryOptions,
) -> Result<NodeResources, DiscoveryError> {
    let paths = sys.paths();
    let cgroups = cgroup::Cgroups::read(paths)?;

    let affinity = sys.affinity()?;
    let cpuset = cpu::cgroup_cpuset(&cgroups)?;
    let quota = cpu::cgroup_quota(&cgroups)?;
    let (cpus, cpu_ids, cpu_limits) = cpu::decide(
        cpu::Granted {
            count: grant.cpus,
            ids: grant.cpu_ids.as_deref(),
        },
        &affinity,
        cpuset,
        quota,
    );

    let physical = memory::physical_memory(paths)?;
    let cgroup_memory = memory::cgroup_memory_limit(&cgroups)?;
    let (memory_bytes, memory_limits) = memory::decide(physical, cgroup_memory, grant.memory_bytes);
    let shm_bytes = memory::shm_bytes(&paths.dev_shm);

    let cuda_visible = sys.env(gpu::CUDA_VISIBLE_DEVICES);
    let (gpus, gpu_note) = gpu::select(sys.gpu_probe(), cuda_visible.as_deref(), &grant.gpus)?;

    let hostname = sys.hostname()?;
    let (address, address_source) = network::choose_address(sys, opts, &hostname)?;

    let topo = sys.topology();

    Ok(NodeResources {
        hostname,
        cpus,
        cpu_ids,
        cpu_limits,
        gpus,
        gpu_note,
        memory_bytes,
        memory_limits,
        shm_bytes,
        address,
        address_source,
        cores: topo.cores,
        numa_nodes: topo.numa_nodes,
    })
}

/// Reads a file; None when it does not exist.
pub(crate) fn read_optional(path: &Path) -> Result<Option<String>, DiscoveryError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(DiscoveryError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Bytes as "23.5 GiB" (binary units, one decimal).
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

fn opt_bytes(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_string(), format_bytes)
}

impl NodeResources {
    /// A readable multi-line summary (what `ray-hpc discover` prints; `--json` is serde).
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let l = &self.cpu_limits;
        let m = &self.memory_limits;
        // Writing to a String cannot fail.
        let _ = writeln!(s, "host       {}", self.hostname);
        let _ = writeln!(s, "address    {} ({})", self.address, self.address_source);
        let _ = writeln!(
            s,
            "CPUs       {} [{}], limited by {}",
            self.cpus,
            format_cpu_list(&self.cpu_ids),
            l.limited_by.describe()
        );
        let _ = writeln!(
            s,
            "           grant {}, affinity {}, cgroup cpuset {}, cgroup quota {}",
            opt(l.grant),
            l.affinity,
            opt(l.cgroup_cpuset),
            opt(l.cgroup_quota)
        );
        let _ = writeln!(
            s,
            "topology   {} core{}, {} NUMA node{}",
            opt(self.cores),
            if self.cores == Some(1) { "" } else { "s" },
            opt(self.numa_nodes),
            if self.numa_nodes == Some(1) { "" } else { "s" }
        );
        let _ = writeln!(
            s,
            "memory     {}, limited by {}",
            format_bytes(self.memory_bytes),
            m.limited_by.describe()
        );
        let _ = writeln!(
            s,
            "           physical {}, cgroup {}, grant {}",
            format_bytes(m.physical),
            opt_bytes(m.cgroup),
            opt_bytes(m.grant)
        );
        let _ = writeln!(s, "/dev/shm   {}", opt_bytes(self.shm_bytes));
        match &self.gpu_note {
            Some(note) => {
                let _ = writeln!(s, "GPUs       {} ({note})", self.gpus.len());
            }
            None => {
                let _ = writeln!(s, "GPUs       {}", self.gpus.len());
            }
        }
        for g in &self.gpus {
            let _ = writeln!(
                s,
                "  cuda:{}  {}  {}  {}  nvml {}  pci {}",
                g.index,
                g.name,
                opt_bytes(g.memory_bytes),
                g.uuid,
                g.nvml_index,
                g.pci_bus_id.as_deref().unwrap_or("-")
            );
        }
        s
    }
}

#[cfg(test)]
mod tests;
