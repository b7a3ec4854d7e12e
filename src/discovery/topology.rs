//! Cores and NUMA nodes from hwloc. hwloc's topology is restricted to the cgroup but not to the
//! affinity mask, so these count what the node (or container) offers, not the CPUs we were bound
//! to; the CPU count itself comes from `cpu`.

use hwlocality::Topology;
use hwlocality::object::types::ObjectType;

/// Counts hwloc gave; None when it could not tell.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TopologyCounts {
    pub cores: Option<u32>,
    pub numa_nodes: Option<u32>,
}

pub(crate) fn live_counts() -> TopologyCounts {
    let Ok(topology) = Topology::new() else {
        return TopologyCounts::default();
    };
    let count = |t: ObjectType| {
        let n = topology.objects_with_type(t).count();
        (n > 0).then(|| u32::try_from(n).ok()).flatten()
    };
    TopologyCounts {
        cores: count(ObjectType::Core),
        numa_nodes: count(ObjectType::NUMANode),
    }
}
