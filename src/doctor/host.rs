//! Checks of this host: the open-files limit, /dev/shm against the object store, and the length
//! of Ray's Unix socket paths under the temp dirs.

use serde_json::json;

use super::{CheckResult, Status};
use crate::agent::control::{node_temp_dir, object_store_bytes};
use crate::config::UNIX_SOCKET_PATH_MAX_BYTES;
use crate::discovery::format_bytes;

/// Open files a Ray process should be allowed (Ray's own docs ask for at least this; every
/// worker, node and client holds connections).
pub const NOFILE_WANTED: u64 = 65535;

fn limit(v: u64) -> String {
    if v == u64::MAX {
        "unlimited".into()
    } else {
        v.to_string()
    }
}

/// `open-files`: the soft and hard RLIMIT_NOFILE of this process (u64::MAX: unlimited).
pub fn open_files(soft: u64, hard: u64) -> CheckResult {
    const ID: &str = "open-files";
    const TITLE: &str = "open files limit";
    let values = json!({ "soft": soft, "hard": hard, "wanted": NOFILE_WANTED });
    let (soft_s, hard_s) = (limit(soft), limit(hard));
    if hard >= NOFILE_WANTED {
        let mut finding = format!(
            "soft {soft_s}, hard {hard_s} open files per process ({NOFILE_WANTED} wanted); \
             ray-hpc's agents raise their soft limit to the hard limit, so the Ray processes they \
             start get {hard_s}"
        );
        if soft < NOFILE_WANTED {
            finding.push_str(&format!(
                "; Ray processes you start yourself keep {soft_s} unless you run `ulimit -Sn {hard_s}` first"
            ));
        }
        CheckResult::new(ID, TITLE, Status::Ok, finding).values(values)
    } else {
        CheckResult::new(
            ID,
            TITLE,
            Status::Fail,
            format!(
                "hard limit {hard_s} open files per process (soft {soft_s}) is below the \
                 {NOFILE_WANTED} a large Ray cluster needs; ray-hpc's agents raise their soft \
                 limit to the hard limit but cannot go past it, so Ray fails with \
                 \"Too many open files\" as the cluster grows"
            ),
        )
        .fix(format!(
            "ask the admins to raise the hard `nofile` limit to at least {NOFILE_WANTED} \
             (/etc/security/limits.conf `* hard nofile {NOFILE_WANTED}`, and LimitNOFILE= of \
             the scheduler daemon's systemd unit, since jobs inherit the limits of the shell \
             that submitted them capped by the daemon's); check with `ulimit -Hn`"
        ))
        .values(values)
    }
}

/// What the object store is sized from.
#[derive(Debug, Clone, PartialEq)]
pub struct ShmInput {
    /// Size of /dev/shm here; None when it cannot be read.
    pub shm_bytes: Option<u64>,
    /// The node memory the store is a share of.
    pub memory_bytes: u64,
    /// Where `memory_bytes` comes from, for the finding ("MemTotal of this host", ...).
    pub memory_source: String,
    /// `ray.object_store_fraction`.
    pub fraction: f64,
}

/// `dev-shm`: can /dev/shm hold the object store ray-hpc wants for this memory?
pub fn dev_shm(input: &ShmInput) -> CheckResult {
    const ID: &str = "dev-shm";
    const TITLE: &str = "/dev/shm and the object store";
    let wanted = object_store_bytes(input.memory_bytes, None, input.fraction);
    let used = object_store_bytes(input.memory_bytes, input.shm_bytes, input.fraction);
    let values = json!({
        "shm_bytes": input.shm_bytes,
        "memory_bytes": input.memory_bytes,
        "object_store_fraction": input.fraction,
        "wanted_object_store_bytes": wanted,
        "object_store_bytes": used,
    });
    let want = format!(
        "the object store wants {} ({} of {}, {})",
        format_bytes(wanted),
        input.fraction,
        format_bytes(input.memory_bytes),
        input.memory_source
    );
    let spill = "objects that do not fit are spilled to disk, by default into the session dir \
                 under cluster.temp_root: point spilling at fast node-local scratch with \
                 `ray.env = { RAY_object_spilling_directory = \"/local/scratch\" }`";
    let Some(shm) = input.shm_bytes else {
        return CheckResult::new(
            ID,
            TITLE,
            Status::Warn,
            format!(
                "cannot read the size of /dev/shm on this host; {want}, and ray-hpc cannot cap it \
                 to /dev/shm, so Ray may put the store on disk (slow)"
            ),
        )
        .fix("make sure /dev/shm is mounted (a tmpfs) on every node, or ask the admins")
        .values(values);
    };
    if used < wanted || used > shm {
        let need = wanted.saturating_add(wanted / 9);
        CheckResult::new(
            ID,
            TITLE,
            Status::Warn,
            format!(
                "/dev/shm is {} on this host; {want}; ray-hpc will use a smaller object store of \
                 {} (at most 90% of /dev/shm), so more objects spill to disk",
                format_bytes(shm),
                format_bytes(used)
            ),
        )
        .fix(format!(
            "ask the admins for a /dev/shm of at least {} on the nodes, or lower \
             ray.object_store_fraction; {spill}",
            format_bytes(need)
        ))
        .values(values)
    } else {
        CheckResult::new(
            ID,
            TITLE,
            Status::Ok,
            format!(
                "/dev/shm is {} on this host; {want}, which fits in 90% of it",
                format_bytes(shm)
            ),
        )
        .values(values)
    }
}

/// The longest socket Ray 2.60 creates on the head in `<session>/sockets/` by default: one per
/// dashboard module, `dash_<Module>` (the longest is MetricsHead); then plasma_store and raylet.
pub const HEAD_SOCKET: &str = "dash_MetricsHead";
/// The dashboard's TaskEventsHead module runs only with
/// RAY_enable_task_events_to_dashboard_head; its socket is longer still.
pub const HEAD_SOCKET_TASK_EVENTS: &str = "dash_TaskEventsHead";
/// The longest socket on the other nodes (they run no dashboard): plasma_store, then raylet.
pub const WORKER_SOCKET: &str = "plasma_store";

/// Bytes Ray appends to a temp dir for the socket `socket_name`:
/// `/session_<YYYY-MM-DD>_<HH-MM-SS>_<microseconds>_<pid>/sockets/<name>` (ray/_private/node.py
/// names the session `session_{%Y-%m-%d_%H-%M-%S_%f}_{pid}` after the head's pid, and every
/// node uses the head's session name).
pub fn ray_socket_suffix_len(pid_digits: usize, socket_name: &str) -> usize {
    "/session_".len()
        + "YYYY-MM-DD_HH-MM-SS_ffffff".len()
        + 1
        + pid_digits
        + "/sockets/".len()
        + socket_name.len()
}

/// What the socket path check measures.
#[derive(Debug, Clone, PartialEq)]
pub struct SocketInput {
    /// `cluster.temp_root`.
    pub temp_root: String,
    /// (rank, temp dir) of each node, from a cluster record; None: check the temp root for a
    /// cluster yet to start.
    pub node_temp_dirs: Option<Vec<(u32, String)>>,
    /// Digits of the largest pid (from /proc/sys/kernel/pid_max): the head's pid is in the
    /// session name.
    pub pid_digits: usize,
    /// The longest socket file name Ray creates on the head ([`HEAD_SOCKET`]).
    pub head_socket: String,
    /// The longest socket path found under the nodes' temp dirs on this host, if any.
    pub measured: Option<String>,
}

/// `socket-path`: will every Unix socket path Ray creates fit in 107 bytes?
pub fn socket_path(input: &SocketInput) -> CheckResult {
    const ID: &str = "socket-path";
    const TITLE: &str = "Unix socket path length";
    let max = UNIX_SOCKET_PATH_MAX_BYTES;
    let head_suffix = ray_socket_suffix_len(input.pid_digits, &input.head_socket);
    let worker_suffix = ray_socket_suffix_len(input.pid_digits, WORKER_SOCKET);
    let suffix = |rank: u32| {
        if rank == 0 {
            head_suffix
        } else {
            worker_suffix
        }
    };
    let shape = format!(
        "Ray appends {head_suffix} bytes on the head \
         (`/session_<date>_<time>_<us>_<pid>/sockets/{}`) and {worker_suffix} on the other nodes \
         (`.../sockets/{WORKER_SOCKET}`) with {}-digit pids",
        input.head_socket, input.pid_digits
    );
    let measured = input
        .measured
        .as_ref()
        .map(|p| format!("; measured on this host: {} bytes, {p}", p.len()))
        .unwrap_or_default();
    let root = input.temp_root.trim_end_matches('/');
    // The longest root with which the head and rank 9999 still fit.
    let dir_tail = |rank| node_temp_dir("", "xxxxxx", rank).len();
    let root_max = max
        .saturating_sub(head_suffix + dir_tail(0))
        .min(max.saturating_sub(worker_suffix + dir_tail(9999)));
    let fix = format!(
        "set a shorter `cluster.temp_root` in the config (at most {root_max} bytes here, e.g. \
         \"/tmp\"; it must be node-local anyway), and start the cluster again"
    );
    match &input.node_temp_dirs {
        Some(dirs) if !dirs.is_empty() => {
            let (rank, longest, total) = dirs
                .iter()
                .map(|(rank, dir)| (*rank, dir.clone(), dir.len() + suffix(*rank)))
                .max_by_key(|(_, _, total)| *total)
                .unwrap_or_default();
            let measured_len = input.measured.as_ref().map_or(0, |p| p.len());
            let values = json!({
                "longest_temp_dir": longest,
                "longest_rank": rank,
                "head_suffix_bytes": head_suffix,
                "worker_suffix_bytes": worker_suffix,
                "longest_bytes": total,
                "measured_bytes": input.measured.as_ref().map(|p| p.len()),
                "max_bytes": max,
            });
            let finding = format!(
                "longest socket path is {total} bytes ({max} allowed), on rank {rank}: temp dir \
                 {longest} ({} bytes), and {shape}{measured}",
                longest.len()
            );
            if total > max || measured_len > max {
                CheckResult::new(ID, TITLE, Status::Fail, finding)
                    .fix(fix)
                    .values(values)
            } else {
                CheckResult::new(ID, TITLE, Status::Ok, finding).values(values)
            }
        }
        _ => {
            // The head's dashboard sockets outweigh the longer rank of the other nodes.
            let head = root.len() + dir_tail(0) + head_suffix;
            let rank9999 = root.len() + dir_tail(9999) + worker_suffix;
            let longest = head.max(rank9999);
            let values = json!({
                "temp_root": root,
                "head_suffix_bytes": head_suffix,
                "worker_suffix_bytes": worker_suffix,
                "head_bytes": head,
                "rank9999_bytes": rank9999,
                "longest_bytes": longest,
                "max_bytes": max,
                "temp_root_max_bytes": root_max,
            });
            let finding = format!(
                "temp dirs {root}/rh-<6 hex>-<rank>, and {shape}: the head's longest socket path \
                 is {head} bytes, rank 9999's {rank9999} ({max} allowed)"
            );
            if longest > max {
                CheckResult::new(ID, TITLE, Status::Fail, finding)
                    .fix(fix)
                    .values(values)
            } else {
                CheckResult::new(ID, TITLE, Status::Ok, finding).values(values)
            }
        }
    }
}

/// Decimal digits of the largest pid when `pid_max` is /proc/sys/kernel/pid_max.
pub fn pid_digits(pid_max: u64) -> usize {
    pid_max.saturating_sub(1).max(1).to_string().len()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn open_files_passes_with_a_high_hard_limit_even_with_a_low_soft_one() {
        let r = open_files(1024, 1 << 20);
        assert_eq!(r.status, Status::Ok, "{r:?}");
        assert!(
            r.finding.contains("raise their soft limit"),
            "{}",
            r.finding
        );
        assert!(r.finding.contains("ulimit -Sn 1048576"), "{}", r.finding);
        assert_eq!(open_files(u64::MAX, u64::MAX).status, Status::Ok);
        assert!(open_files(u64::MAX, u64::MAX).finding.contains("unlimited"));
    }

    #[test]
    fn open_files_fails_with_a_low_hard_limit() {
        let r = open_files(1024, 4096);
        assert_eq!(r.status, Status::Fail);
        assert!(r.finding.contains("hard limit 4096"), "{}", r.finding);
        let fix = r.fix.unwrap();
        assert!(
            fix.contains("limits.conf") && fix.contains("ulimit -Hn"),
            "{fix}"
        );
        assert_eq!(r.values["hard"], 4096);
    }

    fn shm(shm_bytes: Option<u64>, memory_bytes: u64) -> ShmInput {
        ShmInput {
            shm_bytes,
            memory_bytes,
            memory_source: "MemTotal of this host".into(),
            fraction: 0.3,
        }
    }

    #[test]
    fn dev_shm_passes_when_the_store_fits() {
        let r = dev_shm(&shm(Some(64 * GIB), 128 * GIB));
        assert_eq!(r.status, Status::Ok, "{r:?}");
        assert!(r.finding.contains("64.0 GiB"), "{}", r.finding);
        assert_eq!(
            r.values["object_store_bytes"],
            r.values["wanted_object_store_bytes"]
        );
    }

    #[test]
    fn dev_shm_warns_and_says_what_ray_hpc_will_do_when_it_is_small() {
        let r = dev_shm(&shm(Some(10 * GIB), 256 * GIB));
        assert_eq!(r.status, Status::Warn, "{r:?}");
        // 90% of 10 GiB.
        assert!(
            r.finding.contains("object store of 9.0 GiB"),
            "{}",
            r.finding
        );
        assert!(r.finding.contains("wants 76.8 GiB"), "{}", r.finding);
        let fix = r.fix.unwrap();
        assert!(fix.contains("RAY_object_spilling_directory"), "{fix}");
        assert!(fix.contains("85.3 GiB"), "{fix}");
        let unreadable = dev_shm(&shm(None, 256 * GIB));
        assert_eq!(unreadable.status, Status::Warn);
        // Smaller than Ray's minimum store: the store (75 MiB) would not fit.
        assert_eq!(dev_shm(&shm(Some(50 << 20), GIB)).status, Status::Warn);
    }

    fn sockets(temp_root: &str, dirs: Option<Vec<&str>>, pid_digits: usize) -> SocketInput {
        SocketInput {
            temp_root: temp_root.into(),
            node_temp_dirs: dirs.map(|d| {
                d.into_iter()
                    .enumerate()
                    .map(|(rank, dir)| (rank as u32, dir.to_string()))
                    .collect()
            }),
            pid_digits,
            head_socket: HEAD_SOCKET.into(),
            measured: None,
        }
    }

    #[test]
    fn the_suffixes_match_paths_ray_made() {
        // Seen here on a two-node cluster (ray 2.60, 5-digit pid of the head).
        let head =
            "/tmp/rh-35f7a8-0/session_2026-11-22_07-37-02_542330_25991/sockets/dash_MetricsHead";
        let worker =
            "/tmp/rh-35f7a8-1/session_2026-11-22_07-37-02_542330_25991/sockets/plasma_store";
        let dir_len = "/tmp/rh-35f7a8-0".len();
        assert_eq!(dir_len + ray_socket_suffix_len(5, HEAD_SOCKET), head.len());
        assert_eq!(
            dir_len + ray_socket_suffix_len(5, WORKER_SOCKET),
            worker.len()
        );
        assert_eq!(pid_digits(32768), 5);
        assert_eq!(pid_digits(4194304), 7);
        assert_eq!(pid_digits(0), 1);
    }

    #[test]
    fn socket_path_passes_with_a_short_temp_root() {
        let r = socket_path(&sockets("/tmp", None, 7));
        assert_eq!(r.status, Status::Ok, "{r:?}");
        assert_eq!(r.values["head_bytes"], 4 + 12 + 45 + 7 + 16);
        // The config's 26-byte limit fits the head and rank 9999 even with 7-digit pids.
        let r = socket_path(&sockets("/tmp/aaaaaaaaaaaaaaaaaaaaa", None, 7));
        assert_eq!(r.status, Status::Ok, "{r:?}");
        assert_eq!(r.values["longest_bytes"], 106);
        assert_eq!(r.values["temp_root_max_bytes"], 27);
        let mut with_record = sockets(
            "/tmp",
            Some(vec!["/tmp/rh-abcdef-0", "/tmp/rh-abcdef-1"]),
            5,
        );
        with_record.measured = Some("/tmp/rh-abcdef-0/session_x/sockets/raylet".into());
        let r = socket_path(&with_record);
        assert_eq!(r.status, Status::Ok, "{r:?}");
        assert_eq!(r.values["longest_rank"], 0);
        assert!(r.finding.contains("measured on this host"), "{}", r.finding);
    }

    #[test]
    fn socket_path_fails_with_a_long_temp_root() {
        let long = format!("/scratch/{}", "u".repeat(40));
        let r = socket_path(&sockets(&long, None, 5));
        assert_eq!(r.status, Status::Fail, "{r:?}");
        let fix = r.fix.unwrap();
        assert!(
            fix.contains("cluster.temp_root") && fix.contains("at most 29 bytes"),
            "{fix}"
        );
        // A record whose nodes use a long temp dir.
        let dir = format!("{long}/rh-abcdef-0");
        let r = socket_path(&sockets("/tmp", Some(vec![&dir]), 5));
        assert_eq!(r.status, Status::Fail, "{r:?}");
        // Only a worker's: the head's is short.
        let r = socket_path(&sockets("/tmp", Some(vec!["/tmp/rh-abcdef-0", &dir]), 5));
        assert_eq!(r.status, Status::Fail, "{r:?}");
        assert_eq!(r.values["longest_rank"], 1);
        assert!(r.finding.contains("on rank 1"), "{}", r.finding);
        // One byte past the most the head has room for.
        let r = socket_path(&sockets(&format!("/{}", "r".repeat(29)), None, 5));
        assert_eq!(r.status, Status::Fail, "{r:?}");
        assert_eq!(r.values["head_bytes"], 108);
        assert_eq!(r.values["rank9999_bytes"], 107);
        let r = socket_path(&sockets(&format!("/{}", "r".repeat(28)), None, 5));
        assert_eq!(r.status, Status::Ok, "{r:?}");
        // With the task-events dashboard module, 7-digit pids and the config's longest root,
        // the head's socket is too long.
        let mut task_events = sockets("/tmp/aaaaaaaaaaaaaaaaaaaaa", None, 7);
        task_events.head_socket = HEAD_SOCKET_TASK_EVENTS.into();
        let r = socket_path(&task_events);
        assert_eq!(r.status, Status::Fail, "{r:?}");
        assert_eq!(r.values["head_bytes"], 109);
    }
}
