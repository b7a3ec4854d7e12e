//! CPUs: the scheduler's grant, the affinity mask, the cgroup cpuset and the cgroup CPU quota.

use std::path::{Path, PathBuf};

use super::cgroup::Cgroups;
use super::{DiscoveryError, HostPaths, read_optional};

/// The largest CPU id accepted in a CPU list (Linux's NR_CPUS tops out at 8192).
const MAX_CPU_ID: u32 = 65_535;

/// Each CPU limit found (None: no limit of that kind), and which one decided.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CpuLimits {
    /// CPUs the scheduler granted this node.
    pub grant: Option<u32>,
    /// CPUs in the scheduler's list of CPU ids for this node's task, when it gives one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant_cpu_list: Option<u32>,
    /// CPUs in this process's affinity mask (sched_getaffinity).
    pub affinity: u32,
    /// CPUs in this process's cgroup cpuset (v2 cpuset.cpus.effective, v1 cpuset).
    pub cgroup_cpuset: Option<u32>,
    /// floor(quota / period) of the cgroup CPU bandwidth limit, at least 1.
    pub cgroup_quota: Option<u32>,
    /// The limit that gave the final count.
    pub limited_by: CpuLimit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CpuLimit {
    Grant,
    CgroupQuota,
    Affinity,
    CgroupCpuset,
}

impl CpuLimit {
    pub fn describe(self) -> &'static str {
        match self {
            CpuLimit::Grant => "the scheduler's grant",
            CpuLimit::CgroupQuota => "the cgroup CPU quota",
            CpuLimit::Affinity => "the affinity mask",
            CpuLimit::CgroupCpuset => "the cgroup cpuset",
        }
    }
}

/// Parses the kernel's CPU list syntax ("0-3,8,10-11", also "0-15:2/4" strides) into sorted,
/// distinct ids. Empty text is an empty list.
pub fn parse_cpu_list(text: &str) -> Result<Vec<u32>, String> {
    let mut ids = Vec::new();
    for item in text.trim().split(',') {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let (range, stride) = match item.split_once(':') {
            Some((range, stride)) => (range, Some(stride)),
            None => (item, None),
        };
        let (first, last) = match range.split_once('-') {
            Some((a, b)) => (parse_id(a, item)?, parse_id(b, item)?),
            None => {
                let id = parse_id(range, item)?;
                (id, id)
            }
        };
        if first > last {
            return Err(format!("range {item:?} runs backwards"));
        }
        let (used, group) = match stride {
            None => (1, 1),
            Some(s) => {
                let (used, group) = s
                    .split_once('/')
                    .ok_or_else(|| format!("stride in {item:?} is not `used/group`"))?;
                let used: u32 = used
                    .trim()
                    .parse()
                    .map_err(|_| format!("bad stride in {item:?}"))?;
                let group: u32 = group
                    .trim()
                    .parse()
                    .map_err(|_| format!("bad stride in {item:?}"))?;
                if used == 0 || group == 0 || used > group {
                    return Err(format!("bad stride in {item:?}"));
                }
                (used, group)
            }
        };
        for id in first..=last {
            if (id - first) % group < used {
                ids.push(id);
            }
        }
    }
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

fn parse_id(text: &str, item: &str) -> Result<u32, String> {
    let text = text.trim();
    let id: u32 = text
        .parse()
        .map_err(|_| format!("{text:?} in {item:?} is not a CPU number"))?;
    if id > MAX_CPU_ID {
        return Err(format!("CPU {id} in {item:?} is beyond {MAX_CPU_ID}"));
    }
    Ok(id)
}

/// Sorted distinct ids in the kernel's CPU list syntax ("0-3,8").
pub fn format_cpu_list(ids: &[u32]) -> String {
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    parts.join(",")
}

/// This process's affinity mask: sched_getaffinity, else Cpus_allowed_list of /proc/self/status.
pub(crate) fn live_affinity(paths: &HostPaths) -> Result<Vec<u32>, DiscoveryError> {
    use nix::sched::{CpuSet, sched_getaffinity};
    use nix::unistd::Pid;

    let syscall_error = match sched_getaffinity(Pid::from_raw(0)) {
        Ok(set) => {
            let ids: Vec<u32> = (0..CpuSet::count())
                .filter(|&i| set.is_set(i).unwrap_or(false))
                .filter_map(|i| u32::try_from(i).ok())
                .collect();
            if !ids.is_empty() {
                return Ok(ids);
            }
            "empty mask".to_string()
        }
        Err(e) => e.to_string(),
    };
    // More CPUs than a CpuSet holds (EINVAL), or an odd platform: the kernel's own list.
    let status = paths.proc.join("self/status");
    let text = read_optional(&status)?.ok_or_else(|| {
        DiscoveryError::Affinity(format!(
            "sched_getaffinity: {syscall_error}; {} is missing",
            status.display()
        ))
    })?;
    let list = text
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .ok_or_else(|| {
            DiscoveryError::Affinity(format!(
                "sched_getaffinity: {syscall_error}; no Cpus_allowed_list in {}",
                status.display()
            ))
        })?;
    let ids = parse_cpu_list(list).map_err(|reason| DiscoveryError::Parse {
        path: status.clone(),
        value: list.trim().to_string(),
        reason,
    })?;
    if ids.is_empty() {
        return Err(DiscoveryError::Affinity(format!(
            "sched_getaffinity: {syscall_error}; empty Cpus_allowed_list in {}",
            status.display()
        )));
    }
    Ok(ids)
}

fn parse_cpuset_file(path: PathBuf, text: &str) -> Result<Option<Vec<u32>>, DiscoveryError> {
    let ids = parse_cpu_list(text).map_err(|reason| DiscoveryError::Parse {
        path,
        value: text.trim().to_string(),
        reason,
    })?;
    // An empty list means "not configured here" (v1), never "no CPUs": we run, so we have some.
    Ok(if ids.is_empty() { None } else { Some(ids) })
}

/// The CPUs of this process's cgroup cpuset (v2 cpuset.cpus.effective; v1 cpuset.effective_cpus
/// or cpuset.cpus), intersected when both hierarchies have one.
pub(crate) fn cgroup_cpuset(cg: &Cgroups) -> Result<Option<Vec<u32>>, DiscoveryError> {
    let mut found: Vec<Vec<u32>> = Vec::new();
    if let Some(dir) = &cg.v2 {
        if let Some((path, text)) = dir.nearest("cpuset.cpus.effective")? {
            found.extend(parse_cpuset_file(path, &text)?);
        }
    }
    if let Some(dir) = cg.v1("cpuset") {
        let file = match dir.nearest("cpuset.effective_cpus")? {
            Some(f) => Some(f),
            None => dir.nearest("cpuset.cpus")?,
        };
        if let Some((path, text)) = file {
            found.extend(parse_cpuset_file(path, &text)?);
        }
    }
    Ok(found
        .into_iter()
        .reduce(|a, b| a.into_iter().filter(|id| b.contains(id)).collect()))
}

fn quota_cpus(quota: u64, period: u64) -> u32 {
    u32::try_from(quota / period).unwrap_or(u32::MAX).max(1)
}

fn parse_u64(path: &Path, text: &str, what: &str) -> Result<u64, DiscoveryError> {
    text.trim().parse().map_err(|_| DiscoveryError::Parse {
        path: path.to_path_buf(),
        value: text.trim().to_string(),
        reason: format!("{what} is not a whole number"),
    })
}

/// The tightest CPU bandwidth limit on this process's cgroup and its ancestors, as whole CPUs
/// (v2 cpu.max "quota period" or "max period"; v1 cpu.cfs_quota_us / cpu.cfs_period_us).
pub(crate) fn cgroup_quota(cg: &Cgroups) -> Result<Option<u32>, DiscoveryError> {
    let mut limits = Vec::new();
    if let Some(dir) = &cg.v2 {
        for (path, text) in dir.all("cpu.max")? {
            let mut fields = text.split_whitespace();
            let (Some(quota), period) = (fields.next(), fields.next()) else {
                return Err(DiscoveryError::Parse {
                    path,
                    value: text.trim().to_string(),
                    reason: "expected `max` or `QUOTA PERIOD`".to_string(),
                });
            };
            if quota == "max" {
                continue;
            }
            let quota = parse_u64(&path, quota, "the quota")?;
            let period = match period {
                Some(p) => parse_u64(&path, p, "the period")?,
                None => 100_000,
            };
            if period == 0 {
                return Err(DiscoveryError::Parse {
                    path,
                    value: text.trim().to_string(),
                    reason: "the period is 0".to_string(),
                });
            }
            limits.push(quota_cpus(quota, period));
        }
    }
    if let Some(dir) = cg.v1("cpu") {
        for (path, text) in dir.all("cpu.cfs_quota_us")? {
            let quota = text.trim();
            let quota: i64 = quota.parse().map_err(|_| DiscoveryError::Parse {
                path: path.clone(),
                value: quota.to_string(),
                reason: "the quota is not a whole number".to_string(),
            })?;
            if quota < 0 {
                continue; // -1: no limit
            }
            let period_path = path.with_file_name("cpu.cfs_period_us");
            let period = match read_optional(&period_path)? {
                Some(text) => parse_u64(&period_path, &text, "the period")?,
                None => 100_000,
            };
            if period == 0 {
                return Err(DiscoveryError::Parse {
                    path: period_path,
                    value: "0".to_string(),
                    reason: "the period is 0".to_string(),
                });
            }
            limits.push(quota_cpus(quota.unsigned_abs(), period));
        }
    }
    Ok(limits.into_iter().min())
}

/// The final count and ids: min(grant, quota, |affinity ∩ cpuset|), at least 1; the ids are the
/// first `count` of affinity ∩ cpuset (affinity alone if they do not meet, which only a cgroup
/// read from the wrong namespace can cause).
/// What the scheduler granted of CPUs: a count, and perhaps the very CPU ids.
#[derive(Debug, Clone, Copy, Default)]
pub struct Granted<'a> {
    pub count: Option<u32>,
    pub ids: Option<&'a [u32]>,
}

pub fn decide(
    granted: Granted<'_>,
    affinity: &[u32],
    cpuset: Option<Vec<u32>>,
    quota: Option<u32>,
) -> (u32, Vec<u32>, CpuLimits) {
    let grant = granted.count;
    let mut affinity = affinity.to_vec();
    affinity.sort_unstable();
    affinity.dedup();
    let within = |ids: &[u32], set: Option<&[u32]>| -> Vec<u32> {
        match set {
            Some(set) => ids.iter().copied().filter(|id| set.contains(id)).collect(),
            None => ids.to_vec(),
        }
    };
    // The mask, narrowed by the cgroup cpuset and the scheduler's CPU list; a narrowing that
    // leaves nothing is taken for a view from elsewhere (another cgroup, another numbering).
    let mut usable = within(&affinity, cpuset.as_deref());
    if usable.is_empty() {
        usable = affinity.clone();
    }
    let listed = within(&usable, granted.ids);
    if !listed.is_empty() {
        usable = listed;
    }
    let grant_cpu_list = granted
        .ids
        .map(|ids| u32::try_from(ids.len()).unwrap_or(u32::MAX));
    let count_of = |v: &[u32]| u32::try_from(v.len()).unwrap_or(u32::MAX);
    let affinity_count = count_of(&affinity);
    let cpuset_count = cpuset.as_deref().map(count_of);
    let mask = count_of(&usable);

    let cpus = [grant, quota, Some(mask)]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(mask)
        .max(1);
    let limited_by = if grant == Some(cpus) || grant_cpu_list == Some(cpus) {
        CpuLimit::Grant
    } else if quota == Some(cpus) {
        CpuLimit::CgroupQuota
    } else if affinity_count == cpus {
        CpuLimit::Affinity
    } else if cpuset_count.is_some() {
        CpuLimit::CgroupCpuset
    } else {
        // Only reachable when nothing allows a CPU at all and the floor of 1 applied.
        CpuLimit::Affinity
    };
    usable.truncate(cpus as usize);
    (
        cpus,
        usable,
        CpuLimits {
            grant,
            grant_cpu_list,
            affinity: affinity_count,
            cgroup_cpuset: cpuset_count,
            cgroup_quota: quota,
            limited_by,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_granted_cpu_list_narrows_the_mask() {
        let affinity: Vec<u32> = (0..8).collect();
        let list = [2, 3, 9];
        let granted = Granted {
            count: None,
            ids: Some(&list),
        };
        let (cpus, ids, limits) = decide(granted, &affinity, None, None);
        assert_eq!((cpus, ids), (2, vec![2, 3]), "CPU 9 is not this process's");
        assert_eq!(limits.grant_cpu_list, Some(3));
        // A list that shares nothing with the mask (another numbering) leaves the mask.
        let elsewhere = [40, 41];
        let granted = Granted {
            count: Some(4),
            ids: Some(&elsewhere),
        };
        let (cpus, ids, limits) = decide(granted, &affinity, None, None);
        assert_eq!((cpus, ids), (4, vec![0, 1, 2, 3]));
        assert_eq!(limits.limited_by, CpuLimit::Grant);
    }
}
