//! Memory: physical memory, the cgroup limit (walked up to the hierarchy's root) and the grant;
//! and the size of /dev/shm.

use std::path::Path;

use super::cgroup::Cgroups;
use super::{DiscoveryError, HostPaths, read_optional};

/// cgroup v1 writes "no limit" as a huge page-rounded number (2^63 - 4096 on x86-64).
const V1_UNLIMITED: u64 = 1 << 62;

/// Each memory limit found (None: no limit of that kind), and which one decided.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MemoryLimits {
    /// MemTotal of /proc/meminfo.
    pub physical: u64,
    /// The tightest memory.max (v2) or memory.limit_in_bytes (v1) of this process's cgroup and
    /// its ancestors.
    pub cgroup: Option<u64>,
    /// Memory the scheduler granted this node.
    pub grant: Option<u64>,
    pub limited_by: MemoryLimit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryLimit {
    Physical,
    Cgroup,
    Grant,
}

impl MemoryLimit {
    pub fn describe(self) -> &'static str {
        match self {
            MemoryLimit::Physical => "physical memory",
            MemoryLimit::Cgroup => "the cgroup memory limit",
            MemoryLimit::Grant => "the scheduler's grant",
        }
    }
}

/// MemTotal of /proc/meminfo, in bytes.
pub(crate) fn physical_memory(paths: &HostPaths) -> Result<u64, DiscoveryError> {
    let path = paths.proc.join("meminfo");
    let text = read_optional(&path)?.ok_or_else(|| DiscoveryError::Read {
        path: path.clone(),
        source: std::io::Error::from(std::io::ErrorKind::NotFound),
    })?;
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .ok_or_else(|| DiscoveryError::Parse {
            path: path.clone(),
            value: text.lines().next().unwrap_or("").to_string(),
            reason: "no MemTotal line".to_string(),
        })?;
    let bad = |reason: &str| DiscoveryError::Parse {
        path: path.clone(),
        value: format!("MemTotal:{line}"),
        reason: reason.to_string(),
    };
    let mut fields = line.split_whitespace();
    let number: u64 = fields
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| bad("not a whole number"))?;
    let scale = match fields.next() {
        Some("kB") => 1024,
        None => 1,
        Some(_) => return Err(bad("unknown unit")),
    };
    number
        .checked_mul(scale)
        .ok_or_else(|| bad("does not fit in 64 bits"))
}

/// The tightest memory limit on this process's cgroup and its ancestors, in bytes.
pub(crate) fn cgroup_memory_limit(cg: &Cgroups) -> Result<Option<u64>, DiscoveryError> {
    let mut limits = Vec::new();
    if let Some(dir) = &cg.v2 {
        for (path, text) in dir.all("memory.max")? {
            let value = text.trim();
            if value == "max" {
                continue;
            }
            limits.push(parse_bytes(&path, value)?);
        }
    }
    if let Some(dir) = cg.v1("memory") {
        for (path, text) in dir.all("memory.limit_in_bytes")? {
            let value = text.trim();
            // v1 accepts writing -1; reading shows the huge number, but be lenient.
            if value == "-1" {
                continue;
            }
            let bytes = parse_bytes(&path, value)?;
            if bytes < V1_UNLIMITED {
                limits.push(bytes);
            }
        }
    }
    Ok(limits.into_iter().min())
}

fn parse_bytes(path: &Path, value: &str) -> Result<u64, DiscoveryError> {
    value.parse().map_err(|_| DiscoveryError::Parse {
        path: path.to_path_buf(),
        value: value.to_string(),
        reason: "expected a byte count or `max`".to_string(),
    })
}

/// min(physical, cgroup, grant), and which one it was (physical on ties, then cgroup).
pub fn decide(physical: u64, cgroup: Option<u64>, grant: Option<u64>) -> (u64, MemoryLimits) {
    let mut bytes = physical;
    let mut limited_by = MemoryLimit::Physical;
    if let Some(c) = cgroup {
        if c < bytes {
            bytes = c;
            limited_by = MemoryLimit::Cgroup;
        }
    }
    if let Some(g) = grant {
        if g < bytes {
            bytes = g;
            limited_by = MemoryLimit::Grant;
        }
    }
    (
        bytes,
        MemoryLimits {
            physical,
            cgroup,
            grant,
            limited_by,
        },
    )
}

/// Size of the filesystem at `dev_shm` (statvfs), None when it cannot be read.
// The statvfs field types are u64 on 64-bit Linux but not everywhere.
#[allow(clippy::useless_conversion)]
pub(crate) fn shm_bytes(dev_shm: &Path) -> Option<u64> {
    let st = nix::sys::statvfs::statvfs(dev_shm).ok()?;
    u64::from(st.blocks()).checked_mul(u64::from(st.fragment_size()))
}
