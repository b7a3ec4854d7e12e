//! Discovery rules on fixture trees (tempdirs) and fake probes.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use super::*;

const GIB: u64 = 1 << 30;

#[derive(Clone)]
struct FakeGpus(Result<Vec<PhysicalGpu>, ProbeError>);

impl GpuProbe for FakeGpus {
    fn gpus(&self) -> Result<Vec<PhysicalGpu>, ProbeError> {
        self.0.clone()
    }
}

struct Fake {
    _dir: tempfile::TempDir,
    paths: HostPaths,
    env: BTreeMap<String, String>,
    affinity: Vec<u32>,
    gpus: FakeGpus,
    interfaces: Vec<Interface>,
    hostname: String,
    resolved: Vec<IpAddr>,
}

impl System for Fake {
    fn paths(&self) -> &HostPaths {
        &self.paths
    }
    fn env(&self, name: &str) -> Option<String> {
        self.env.get(name).cloned()
    }
    fn affinity(&self) -> Result<Vec<u32>, DiscoveryError> {
        Ok(self.affinity.clone())
    }
    fn gpu_probe(&self) -> &dyn GpuProbe {
        &self.gpus
    }
    fn interfaces(&self) -> Result<Vec<Interface>, DiscoveryError> {
        Ok(self.interfaces.clone())
    }
    fn hostname(&self) -> Result<String, DiscoveryError> {
        Ok(self.hostname.clone())
    }
    fn resolve(&self, _host: &str) -> Vec<IpAddr> {
        self.resolved.clone()
    }
    fn topology(&self) -> TopologyCounts {
        TopologyCounts {
            cores: Some(4),
            numa_nodes: Some(1),
        }
    }
}

fn write(root: &Path, rel: &str, text: &str) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().expect("fixture path has a parent"))
        .expect("create fixture dir");
    std::fs::write(&path, text).expect("write fixture");
}

impl Fake {
    /// A cgroup v2 host: this process in /job/step, 4 affine CPUs, 16 GiB, no GPUs.
    fn v2() -> Fake {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let paths = HostPaths {
            proc: root.join("proc"),
            sys_fs_cgroup: root.join("cgroup"),
            dev_shm: root.to_path_buf(),
        };
        let fake = Fake {
            paths,
            env: BTreeMap::new(),
            affinity: vec![0, 1, 2, 3],
            gpus: FakeGpus(Ok(vec![])),
            interfaces: vec![],
            hostname: "n1".to_string(),
            resolved: vec![IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))],
            _dir: dir,
        };
        fake.proc("meminfo", "MemTotal:       16777216 kB\nMemFree:  1 kB\n");
        fake.proc("self/cgroup", "0::/job/step\n");
        fake.cg("cgroup.controllers", "cpuset cpu memory\n");
        fake.cg("job/step/cgroup.procs", "");
        fake
    }

    fn proc(&self, rel: &str, text: &str) {
        write(&self.paths.proc, rel, text);
    }
    fn cg(&self, rel: &str, text: &str) {
        write(&self.paths.sys_fs_cgroup, rel, text);
    }
    fn with_gpus(mut self, gpus: Vec<PhysicalGpu>) -> Fake {
        self.gpus = FakeGpus(Ok(gpus));
        self
    }
    fn with_env(mut self, name: &str, value: &str) -> Fake {
        self.env.insert(name.to_string(), value.to_string());
        self
    }
    fn run(&self, grant: &NodeGrant) -> Result<NodeResources, DiscoveryError> {
        discover_with(self, grant, &DiscoveryOptions::default())
    }
}

fn gpu(i: u32, uuid: &str, minor: Option<u32>) -> PhysicalGpu {
    PhysicalGpu {
        nvml_index: i,
        uuid: uuid.to_string(),
        name: "NVIDIA H100 80GB HBM3".to_string(),
        memory_bytes: Some(80 * GIB),
        pci_bus_id: Some(format!("00000000:{:02X}:00.0", 0x18 + i)),
        minor_number: minor,
        mig: vec![],
    }
}

fn four_gpus() -> Vec<PhysicalGpu> {
    vec![
        gpu(0, "GPU-aaaa0000-1111", Some(0)),
        gpu(1, "GPU-bbbb0000-2222", Some(1)),
        gpu(2, "GPU-cccc0000-3333", Some(2)),
        gpu(3, "GPU-dddd0000-4444", Some(3)),
    ]
}

fn uuids(r: &NodeResources) -> Vec<&str> {
    r.gpus.iter().map(|g| g.uuid.as_str()).collect()
}

fn cpu_grant(n: u32) -> NodeGrant {
    NodeGrant {
        cpus: Some(n),
        ..Default::default()
    }
}

// ---- CPU list syntax ----

#[test]
fn cpu_list_syntax() {
    assert_eq!(
        parse_cpu_list("0-3,8,10-11\n"),
        Ok(vec![0, 1, 2, 3, 8, 10, 11])
    );
    assert_eq!(parse_cpu_list(""), Ok(vec![]));
    assert_eq!(parse_cpu_list("3,1,1-2"), Ok(vec![1, 2, 3]));
    assert_eq!(parse_cpu_list("0-7:2/4"), Ok(vec![0, 1, 4, 5]));
    assert!(parse_cpu_list("3-1").is_err());
    assert!(parse_cpu_list("0-x").is_err());
    assert!(parse_cpu_list("-1").is_err());
    assert!(parse_cpu_list("0-4294967295").is_err());
    assert!(parse_cpu_list("0-7:5/4").is_err());
    assert_eq!(format_cpu_list(&[0, 1, 2, 3, 8, 10, 11]), "0-3,8,10-11");
    assert_eq!(format_cpu_list(&[5]), "5");
    assert_eq!(format_cpu_list(&[]), "");
}

// ---- CPUs ----

#[test]
fn cpuset_below_affinity_and_grant() {
    let f = Fake::v2();
    f.cg("job/step/cpuset.cpus.effective", "0-1\n");
    let r = f.run(&cpu_grant(3)).expect("discover");
    assert_eq!(r.cpus, 2);
    assert_eq!(r.cpu_ids, vec![0, 1]);
    assert_eq!(r.cpu_limits.affinity, 4);
    assert_eq!(r.cpu_limits.cgroup_cpuset, Some(2));
    assert_eq!(r.cpu_limits.grant, Some(3));
    assert_eq!(r.cpu_limits.limited_by, CpuLimit::CgroupCpuset);
}

#[test]
fn grant_below_affinity() {
    let mut f = Fake::v2();
    f.affinity = vec![6, 7];
    f.cg("cpuset.cpus.effective", "0-7\n"); // at the root only: walked up to
    let r = f.run(&cpu_grant(1)).expect("discover");
    assert_eq!(r.cpus, 1);
    assert_eq!(r.cpu_ids, vec![6]);
    assert_eq!(r.cpu_limits.cgroup_cpuset, Some(8));
    assert_eq!(r.cpu_limits.limited_by, CpuLimit::Grant);
}

#[test]
fn affinity_alone_when_no_cgroup_and_no_grant() {
    let f = Fake::v2();
    let r = f.run(&NodeGrant::default()).expect("discover");
    assert_eq!(r.cpus, 4);
    assert_eq!(r.cpu_ids, vec![0, 1, 2, 3]);
    assert_eq!(r.cpu_limits.limited_by, CpuLimit::Affinity);
}

#[test]
fn quota_rounds_down_to_at_least_one() {
    let f = Fake::v2();
    f.cg("job/cpu.max", "max 100000\n");
    f.cg("job/step/cpu.max", "150000 100000\n");
    let r = f.run(&NodeGrant::default()).expect("discover");
    assert_eq!(r.cpus, 1);
    assert_eq!(r.cpu_ids, vec![0]);
    assert_eq!(r.cpu_limits.cgroup_quota, Some(1));
    assert_eq!(r.cpu_limits.limited_by, CpuLimit::CgroupQuota);

    let f = Fake::v2();
    f.cg("job/step/cpu.max", "50000 100000\n");
    assert_eq!(f.run(&NodeGrant::default()).expect("discover").cpus, 1);

    let f = Fake::v2();
    f.cg("job/cpu.max", "300000 100000\n"); // the parent's limit applies too
    let r = f.run(&NodeGrant::default()).expect("discover");
    assert_eq!(r.cpus, 3);
}

#[test]
fn bad_cpuset_text_names_file_and_text() {
    let f = Fake::v2();
    f.cg("job/step/cpuset.cpus.effective", "0-3,x\n");
    let err = f.run(&NodeGrant::default()).expect_err("bad cpuset");
    let msg = err.to_string();
    assert!(matches!(err, DiscoveryError::Parse { .. }), "{msg}");
    assert!(msg.contains("job/step/cpuset.cpus.effective"), "{msg}");
    assert!(msg.contains("0-3,x"), "{msg}");
}

#[test]
fn bad_cpu_max_is_an_error() {
    let f = Fake::v2();
    f.cg("job/step/cpu.max", "lots 100000\n");
    let msg = f.run(&NodeGrant::default()).expect_err("bad").to_string();
    assert!(msg.contains("cpu.max") && msg.contains("lots"), "{msg}");
    let f = Fake::v2();
    f.cg("job/step/cpu.max", "100000 0\n");
    assert!(f.run(&NodeGrant::default()).is_err());
}

// ---- memory ----

#[test]
fn memory_limit_of_the_parent_when_leaf_says_max() {
    let f = Fake::v2();
    f.cg("job/step/memory.max", "max\n");
    f.cg("job/memory.max", "4294967296\n");
    let r = f.run(&NodeGrant::default()).expect("discover");
    assert_eq!(r.memory_bytes, 4 * GIB);
    assert_eq!(r.memory_limits.physical, 16 * GIB);
    assert_eq!(r.memory_limits.cgroup, Some(4 * GIB));
    assert_eq!(r.memory_limits.limited_by, MemoryLimit::Cgroup);

    let grant = NodeGrant {
        memory_bytes: Some(2 * GIB),
        ..Default::default()
    };
    let r = f.run(&grant).expect("discover");
    assert_eq!(r.memory_bytes, 2 * GIB);
    assert_eq!(r.memory_limits.limited_by, MemoryLimit::Grant);
}

#[test]
fn memory_physical_without_limits() {
    let f = Fake::v2();
    let r = f.run(&NodeGrant::default()).expect("discover");
    assert_eq!(r.memory_bytes, 16 * GIB);
    assert_eq!(r.memory_limits.limited_by, MemoryLimit::Physical);
    assert!(r.shm_bytes.is_some_and(|b| b > 0), "statvfs of the tempdir");
}

#[test]
fn bad_memory_files_are_errors() {
    let f = Fake::v2();
    f.cg("job/memory.max", "lots\n");
    let msg = f.run(&NodeGrant::default()).expect_err("bad").to_string();
    assert!(
        msg.contains("job/memory.max") && msg.contains("lots"),
        "{msg}"
    );

    let f = Fake::v2();
    f.proc("meminfo", "MemFree: 1 kB\n");
    let msg = f.run(&NodeGrant::default()).expect_err("bad").to_string();
    assert!(msg.contains("meminfo") && msg.contains("MemTotal"), "{msg}");
}

// ---- cgroup layouts ----

#[test]
fn cgroup_v1_hybrid() {
    let f = Fake::v2();
    // No cgroup.controllers at the top: v1 controllers, unified hierarchy without controllers.
    std::fs::remove_file(f.paths.sys_fs_cgroup.join("cgroup.controllers")).expect("rm");
    f.cg("unified/cgroup.controllers", "");
    f.proc(
        "self/cgroup",
        "9:name=systemd:/a/b\n4:memory:/a/b\n3:cpuset:/\n1:cpu,cpuacct:/a\n0::/a/b\n",
    );
    f.cg("memory/a/b/memory.limit_in_bytes", "9223372036854771712\n");
    f.cg("memory/a/memory.limit_in_bytes", "2147483648\n");
    f.cg("memory/memory.limit_in_bytes", "9223372036854771712\n");
    f.cg("cpuset/cpuset.cpus", "0-2\n");
    f.cg("cpu,cpuacct/a/cpu.cfs_quota_us", "-1\n");
    f.cg("cpu,cpuacct/cpu.cfs_quota_us", "350000\n");
    f.cg("cpu,cpuacct/cpu.cfs_period_us", "100000\n");
    let r = f.run(&NodeGrant::default()).expect("discover");
    assert_eq!(r.memory_bytes, 2 * GIB);
    assert_eq!(r.cpu_limits.cgroup_cpuset, Some(3));
    assert_eq!(r.cpu_limits.cgroup_quota, Some(3));
    assert_eq!(r.cpus, 3);
    assert_eq!(r.cpu_ids, vec![0, 1, 2]);
}

#[test]
fn cgroup_path_from_another_namespace_falls_back_to_the_mount() {
    let f = Fake::v2();
    f.proc("self/cgroup", "0::/docker/abc123\n");
    f.cg("memory.max", "1073741824\n");
    f.cg("cpuset.cpus.effective", "2-3\n");
    let r = f.run(&NodeGrant::default()).expect("discover");
    assert_eq!(r.memory_bytes, GIB);
    assert_eq!(r.cpu_ids, vec![2, 3]);
}

#[test]
fn no_cgroup_file_means_no_cgroup_limits() {
    let f = Fake::v2();
    std::fs::remove_file(f.paths.proc.join("self/cgroup")).expect("rm");
    f.cg("memory.max", "1073741824\n");
    let r = f.run(&NodeGrant::default()).expect("discover");
    assert_eq!(r.memory_limits.cgroup, None);
    assert_eq!(r.cpus, 4);
}

// ---- GPUs ----

#[test]
fn nodevfiles_means_no_gpus() {
    // A probe that fails proves it is not even asked.
    let mut f = Fake::v2().with_env("CUDA_VISIBLE_DEVICES", "NoDevFiles");
    f.gpus = FakeGpus(Err(ProbeError::Failed("must not be called".to_string())));
    let r = f.run(&NodeGrant::default()).expect("discover");
    assert!(r.gpus.is_empty());
    assert!(
        r.gpu_note
            .as_deref()
            .is_some_and(|n| n.contains("NoDevFiles"))
    );

    let f = Fake::v2()
        .with_gpus(four_gpus())
        .with_env("CUDA_VISIBLE_DEVICES", "");
    let r = f.run(&NodeGrant::default()).expect("discover");
    assert!(r.gpus.is_empty());
    assert!(r.gpu_note.as_deref().is_some_and(|n| n.contains("empty")));
}

#[test]
fn cuda_visible_devices_by_uuid() {
    let f = Fake::v2()
        .with_gpus(four_gpus())
        .with_env("CUDA_VISIBLE_DEVICES", "GPU-cccc0000-3333,gpu-AAAA");
    let r = f.run(&NodeGrant::default()).expect("discover");
    assert_eq!(uuids(&r), vec!["GPU-cccc0000-3333", "GPU-aaaa0000-1111"]);
    assert_eq!(r.gpus[0].index, 0);
    assert_eq!(r.gpus[0].nvml_index, 2);
    assert_eq!(r.gpus[1].index, 1);
    assert_eq!(r.gpus[1].nvml_index, 0);
    assert_eq!(r.gpu_note, None);
}

#[test]
fn cuda_visible_devices_by_index() {
    let f = Fake::v2()
        .with_gpus(four_gpus())
        .with_env("CUDA_VISIBLE_DEVICES", "3,1");
    let r = f.run(&NodeGrant::default()).expect("discover");
    assert_eq!(uuids(&r), vec!["GPU-dddd0000-4444", "GPU-bbbb0000-2222"]);
    assert_eq!(r.gpus[0].index, 0);
    assert_eq!(r.gpus[0].nvml_index, 3);
}

#[test]
fn cuda_visible_devices_decides_over_the_grant() {
    let f = Fake::v2()
        .with_gpus(four_gpus())
        .with_env("CUDA_VISIBLE_DEVICES", "0");
    let grant = NodeGrant {
        gpus: GpuGrant::Ids(vec!["2".to_string(), "3".to_string()]),
        ..Default::default()
    };
    let r = f.run(&grant).expect("discover");
    assert_eq!(uuids(&r), vec!["GPU-aaaa0000-1111"]);
}

#[test]
fn cuda_visible_devices_stops_at_the_first_bad_entry() {
    let f = Fake::v2()
        .with_gpus(four_gpus())
        .with_env("CUDA_VISIBLE_DEVICES", "1,7,2");
    let r = f.run(&NodeGrant::default()).expect("discover");
    assert_eq!(uuids(&r), vec!["GPU-bbbb0000-2222"]);
    assert!(r.gpu_note.as_deref().is_some_and(|n| n.contains("\"7\"")));

    let f = Fake::v2()
        .with_gpus(four_gpus())
        .with_env("CUDA_VISIBLE_DEVICES", "-1");
    let r = f.run(&NodeGrant::default()).expect("discover");
    assert!(r.gpus.is_empty());
    assert!(r.gpu_note.is_some());

    let f = Fake::v2()
        .with_gpus(four_gpus())
        .with_env("CUDA_VISIBLE_DEVICES", "0,GPU-aaaa0000-1111,1");
    let r = f.run(&NodeGrant::default()).expect("discover");
    assert_eq!(r.gpus.len(), 1, "a repeated device ends the list");
}

#[test]
fn mig_instances_by_uuid() {
    let mut gpus = four_gpus();
    gpus[1].mig = vec![
        MigInstance {
            uuid: "MIG-1111-aaaa".to_string(),
            memory_bytes: Some(10 * GIB),
        },
        MigInstance {
            uuid: "MIG-2222-bbbb".to_string(),
            memory_bytes: Some(10 * GIB),
        },
    ];
    let f = Fake::v2()
        .with_gpus(gpus)
        .with_env("CUDA_VISIBLE_DEVICES", "MIG-2222-bbbb");
    let r = f.run(&NodeGrant::default()).expect("discover");
    assert_eq!(uuids(&r), vec!["MIG-2222-bbbb"]);
    assert_eq!(r.gpus[0].nvml_index, 1);
    assert_eq!(r.gpus[0].memory_bytes, Some(10 * GIB));
}

#[test]
fn grant_ids_by_minor_number_or_uuid() {
    // Device cgroups: NVML sees only the granted GPUs, /dev/nvidia0 and /dev/nvidia2.
    let seen = vec![
        gpu(0, "GPU-aaaa0000-1111", Some(0)),
        gpu(1, "GPU-cccc0000-3333", Some(2)),
    ];
    let f = Fake::v2().with_gpus(seen);
    let grant = NodeGrant {
        gpus: GpuGrant::Ids(vec!["0".to_string(), "2".to_string()]),
        ..Default::default()
    };
    let r = f.run(&grant).expect("discover");
    assert_eq!(uuids(&r), vec!["GPU-aaaa0000-1111", "GPU-cccc0000-3333"]);
    assert_eq!(r.gpus[1].index, 1);
    assert_eq!(r.gpu_note, None);

    // No minors: numbers are NVML indices; all GPUs visible, so the CUDA index is the NVML one.
    let mut gpus = four_gpus();
    for g in &mut gpus {
        g.minor_number = None;
    }
    let f = Fake::v2().with_gpus(gpus);
    let grant = NodeGrant {
        gpus: GpuGrant::Ids(vec!["2".to_string(), "GPU-aaaa0000-1111".to_string()]),
        ..Default::default()
    };
    let r = f.run(&grant).expect("discover");
    assert_eq!(uuids(&r), vec!["GPU-aaaa0000-1111", "GPU-cccc0000-3333"]);
    assert_eq!(r.gpus[1].index, 2);

    // An id NVML does not see: kept out, and said.
    let f = Fake::v2().with_gpus(four_gpus());
    let grant = NodeGrant {
        gpus: GpuGrant::Ids(vec!["1".to_string(), "9".to_string()]),
        ..Default::default()
    };
    let r = f.run(&grant).expect("discover");
    assert_eq!(uuids(&r), vec!["GPU-bbbb0000-2222"]);
    assert!(r.gpu_note.as_deref().is_some_and(|n| n.contains('9')));
}

#[test]
fn unknown_grant_means_every_gpu_and_none_means_none() {
    let f = Fake::v2().with_gpus(four_gpus());
    let r = f.run(&NodeGrant::default()).expect("discover");
    assert_eq!(r.gpus.len(), 4);
    assert_eq!(r.gpus[3].index, 3);

    let f = Fake::v2()
        .with_gpus(four_gpus())
        .with_env("CUDA_VISIBLE_DEVICES", "0,1");
    let grant = NodeGrant {
        gpus: GpuGrant::None,
        ..Default::default()
    };
    let r = f.run(&grant).expect("discover");
    assert!(r.gpus.is_empty());
    assert!(r.gpu_note.is_some());
}

#[test]
fn no_nvml_library_is_a_note_and_a_failing_nvml_an_error() {
    let mut f = Fake::v2().with_env("CUDA_VISIBLE_DEVICES", "0");
    f.gpus = FakeGpus(Err(ProbeError::Unavailable("no NVML library".to_string())));
    let r = f.run(&NodeGrant::default()).expect("discover");
    assert!(r.gpus.is_empty());
    assert!(
        r.gpu_note
            .as_deref()
            .is_some_and(|n| n.contains("no NVML library"))
    );

    let mut f = Fake::v2();
    f.gpus = FakeGpus(Err(ProbeError::Failed(
        "initializing NVML: Unknown".to_string(),
    )));
    let err = f.run(&NodeGrant::default()).expect_err("NVML failure");
    assert!(matches!(err, DiscoveryError::Gpu(_)));
}

// ---- address ----

fn iface(name: &str, addr: Option<&str>) -> Interface {
    Interface {
        name: name.to_string(),
        address: addr.map(|a| a.parse().expect("address")),
    }
}

#[test]
fn interface_address_and_errors() {
    let mut f = Fake::v2();
    f.interfaces = vec![
        iface("lo", Some("127.0.0.1")),
        iface("eth0", Some("fe80::1")),
        iface("eth0", Some("192.168.1.5")),
        iface("ib0", Some("fe80::2")),
        iface("ib0", None),
    ];
    let opts = |name: &str| DiscoveryOptions {
        interface: Some(name.to_string()),
        scheduler_address: Some("10.9.9.9".parse().expect("address")),
    };
    let r = discover_with(&f, &NodeGrant::default(), &opts("eth0")).expect("discover");
    assert_eq!(r.address, "192.168.1.5".parse::<IpAddr>().expect("address"));
    assert!(r.address_source.contains("eth0"));

    let err = discover_with(&f, &NodeGrant::default(), &opts("ib1")).expect_err("missing");
    let msg = err.to_string();
    assert!(matches!(err, DiscoveryError::NoSuchInterface { .. }));
    assert!(
        msg.contains("ib1") && msg.contains("lo, eth0, ib0"),
        "{msg}"
    );

    let err = discover_with(&f, &NodeGrant::default(), &opts("ib0")).expect_err("no v4");
    let msg = err.to_string();
    assert!(matches!(err, DiscoveryError::NoIpv4 { .. }));
    assert!(msg.contains("ib0") && msg.contains("lo, eth0"), "{msg}");
}

#[test]
fn scheduler_address_then_hostname_then_loopback() {
    let mut f = Fake::v2();
    let opts = DiscoveryOptions {
        interface: None,
        scheduler_address: Some("127.0.0.12".parse().expect("address")),
    };
    let r = discover_with(&f, &NodeGrant::default(), &opts).expect("discover");
    assert_eq!(r.address.to_string(), "127.0.0.12");
    assert!(r.address_source.contains("scheduler"));

    f.resolved = vec![
        "127.0.1.1".parse().expect("address"),
        "fd00::5".parse().expect("address"),
        "10.1.2.3".parse().expect("address"),
    ];
    let r = f.run(&NodeGrant::default()).expect("discover");
    assert_eq!(r.address.to_string(), "10.1.2.3");
    assert!(r.address_source.contains("hostname n1"));

    f.resolved = vec!["127.0.1.1".parse().expect("address")];
    let r = f.run(&NodeGrant::default()).expect("discover");
    assert_eq!(r.address, IpAddr::V4(Ipv4Addr::LOCALHOST));
    assert!(r.address_source.contains("loopback"));
}

// ---- rendering ----

#[test]
fn text_and_json() {
    let f = Fake::v2()
        .with_gpus(four_gpus())
        .with_env("CUDA_VISIBLE_DEVICES", "1");
    f.cg("job/step/cpuset.cpus.effective", "0-1\n");
    f.cg("job/memory.max", "4294967296\n");
    let r = f.run(&cpu_grant(3)).expect("discover");
    let text = r.to_text();
    assert!(
        text.contains("CPUs       2 [0-1], limited by the cgroup cpuset"),
        "{text}"
    );
    assert!(
        text.contains("memory     4.0 GiB, limited by the cgroup memory limit"),
        "{text}"
    );
    assert!(text.contains("GPU-bbbb0000-2222"), "{text}");
    assert!(text.contains("4 cores, 1 NUMA node\n"), "{text}");
    let json = serde_json::to_value(&r).expect("json");
    assert_eq!(json["cpus"], 2);
    assert_eq!(json["cpu_limits"]["limited_by"], "cgroup_cpuset");
    assert_eq!(json["gpus"][0]["nvml_index"], 1);
    assert_eq!(json["address"], "10.0.0.1");
}

#[test]
fn format_bytes_units() {
    assert_eq!(format_bytes(512), "512 B");
    assert_eq!(format_bytes(1536), "1.5 KiB");
    assert_eq!(format_bytes(16 * GIB), "16.0 GiB");
}

// ---- the live host ----

#[test]
fn live_host() {
    let r = discover(&NodeGrant::default(), &DiscoveryOptions::default()).expect("discover");
    assert!(r.cpus >= 1);
    assert_eq!(r.cpu_ids.len(), r.cpus as usize);
    assert!(r.memory_bytes > 0);
    println!("{}", r.to_text());

    let lo = DiscoveryOptions {
        interface: Some("lo".to_string()),
        scheduler_address: None,
    };
    let r2 = discover(&NodeGrant::default(), &lo).expect("discover on lo");
    assert_eq!(r2.address, IpAddr::V4(Ipv4Addr::LOCALHOST));
    let missing = DiscoveryOptions {
        interface: Some("nosuch0".to_string()),
        scheduler_address: None,
    };
    let msg = discover(&NodeGrant::default(), &missing)
        .expect_err("no such interface")
        .to_string();
    assert!(msg.contains("nosuch0") && msg.contains("lo"), "{msg}");
    println!(
        "{}",
        serde_json::to_string_pretty(&r).unwrap_or_else(|e| e.to_string())
    );
}
