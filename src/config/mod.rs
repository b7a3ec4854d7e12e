//! The ray-hpc configuration file (TOML). Every key is optional; a missing file means defaults.
//!
//! ```toml
//! scheduler = "auto"            # auto, or a scheduler's name (see `ray-hpc config check`)
//! auth = "token"                # token | none
//! ready_timeout_s = 120
//! scheduler_timeout_s = 30      # the longest any one scheduler command may take
//! [cluster]
//! name = "my-cluster"
//! temp_root = "/tmp"
//! [ray]
//! bin = "/path/to/ray"
//! head_num_cpus = 0
//! object_store_fraction = 0.3
//! worker_ports = 100
//! port_range = [20000, 30000]
//! env = { KEY = "value" }
//! [network]
//! interface = "ib0"
//! [teardown]
//! grace_s = 10
//! [<scheduler>]                 # each scheduler's own section (keys: its adapter's)
//! extra_directives = ["..."]    # header lines in that scheduler's syntax
//! [autoscaler]
//! enabled = true
//! max_workers = 16
//! idle_timeout_s = 300
//! upscaling_speed = 1.0
//! poll_interval_s = 1.0
//! scheduler_poll_interval_s = 5.0
//! max_pending_jobs = 20
//! backoff_initial_s = 10.0
//! backoff_max_s = 600.0
//! max_consecutive_failures = 5
//! [[node_types]]                # one table per node type
//! name = "cpu"
//! partition = "debug"           # or `queue`: the same thing
//! account = "proj1"
//! qos = "normal"
//! constraint = "skylake"
//! cpus = 2
//! gpus = 0
//! memory = "4G"                 # bytes, or K/M/G/T (1K = 1024)
//! time = "1:00:00"             # or "90m", "2h", "1d 12h"
//! min_workers = 0
//! max_workers = 4
//! resources = { nvme = 1.0 }
//! labels = { zone = "a" }
//! extra_directives = ["..."]    # header lines in the scheduler's syntax
//! ```
//!
//! Parsing never stops at the first mistake: [`Config::parse`] walks the whole document and
//! returns every unknown key, wrong type and bad value, each with its line and column
//! ([`ConfigError`]). Only a TOML syntax error stops the walk (then every syntax error found is
//! reported, since the structure of the rest is unknown).

mod error;
mod parse;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;

use crate::scheduler;

pub use error::{ConfigError, ConfigProblem, Location, ProblemKind};
pub use parse::WALLTIME_SYNTAX;

/// A memory size: a whole number with a `K`, `M`, `G` or `T` suffix (1K = 1024), in bytes; the
/// error says what is wrong.
pub fn parse_memory(s: &str) -> Result<u64, String> {
    parse::memory_of(s)
}

/// Allowed values of `ready_timeout_s` (seconds).
pub const READY_TIMEOUT_S_RANGE: RangeInclusive<u64> = 1..=86_400;
/// Allowed values of `ray.object_store_fraction`.
pub const OBJECT_STORE_FRACTION_RANGE: RangeInclusive<f64> = 0.05..=0.8;
/// Allowed values of `ray.worker_ports`.
pub const WORKER_PORTS_RANGE: RangeInclusive<u16> = 16..=10_000;
/// Allowed values of `ray.head_num_cpus`.
pub const HEAD_NUM_CPUS_RANGE: RangeInclusive<u32> = 0..=1_048_576;
/// `ray.port_range = [lo, hi]` needs `hi - lo >= PORT_RANGE_MIN_SPAN`.
pub const PORT_RANGE_MIN_SPAN: u16 = 200;
/// Ports a node needs besides its worker ports (GCS, dashboard, client server, node manager,
/// object manager, runtime-env agent, dashboard agent, metrics, our control service, with room
/// to spare): `ray.port_range` must hold `ray.worker_ports + FIXED_PORTS_PER_NODE` ports.
pub const FIXED_PORTS_PER_NODE: u16 = 16;
/// Allowed values of `scheduler_timeout_s` (seconds).
pub const SCHEDULER_TIMEOUT_S_RANGE: RangeInclusive<u64> = 1..=3_600;
/// Allowed values of `teardown.grace_s` (seconds).
pub const GRACE_S_RANGE: RangeInclusive<u64> = 1..=300;
/// Longest `cluster.name`.
pub const CLUSTER_NAME_MAX_BYTES: usize = 64;
/// Longest `cluster.temp_root`. Ray puts its Unix sockets at
/// `<temp_dir>/session_<date>_<time>_<us>_<pid>/sockets/plasma_store` (66 bytes after the temp
/// dir) and refuses socket paths over [`UNIX_SOCKET_PATH_MAX_BYTES`]. Our temp dirs are
/// `<temp_root>/rh-<6 hex>-<rank>` (up to 15 bytes after the root for ranks below 10000), so
/// the root gets 107 - 66 - 15 = 26 bytes.
pub const TEMP_ROOT_MAX_BYTES: usize = 26;
/// The longest Unix socket path Linux accepts (108 bytes with the NUL).
pub const UNIX_SOCKET_PATH_MAX_BYTES: usize = 107;
/// Longest Linux interface name (IFNAMSIZ - 1).
pub const INTERFACE_MAX_BYTES: usize = 15;

/// Allowed values of `autoscaler.max_workers` (all node types together).
pub const AUTOSCALER_MAX_WORKERS_RANGE: RangeInclusive<u32> = 0..=10_000;
/// Allowed values of `autoscaler.idle_timeout_s` (seconds; at most a week).
pub const IDLE_TIMEOUT_S_RANGE: RangeInclusive<u64> = 1..=604_800;
/// `autoscaler.upscaling_speed` must be above this (exclusive) ...
pub const UPSCALING_SPEED_MIN_EXCLUSIVE: f64 = 0.0;
/// ... and at most this.
pub const UPSCALING_SPEED_MAX: f64 = 100.0;
/// Allowed values of `autoscaler.poll_interval_s` (seconds).
pub const POLL_INTERVAL_S_RANGE: RangeInclusive<f64> = 0.1..=60.0;
/// Allowed values of `autoscaler.scheduler_poll_interval_s` (seconds).
pub const SCHEDULER_POLL_INTERVAL_S_RANGE: RangeInclusive<f64> = 1.0..=600.0;
/// Allowed values of `autoscaler.max_pending_jobs`.
pub const MAX_PENDING_JOBS_RANGE: RangeInclusive<u32> = 1..=10_000;
/// Allowed values of `autoscaler.backoff_initial_s` (seconds).
pub const BACKOFF_INITIAL_S_RANGE: RangeInclusive<f64> = 1.0..=3_600.0;
/// Allowed values of `autoscaler.backoff_max_s` (seconds); it must also be at least
/// `autoscaler.backoff_initial_s`.
pub const BACKOFF_MAX_S_RANGE: RangeInclusive<f64> = 1.0..=86_400.0;
/// Allowed values of `autoscaler.max_consecutive_failures`.
pub const MAX_CONSECUTIVE_FAILURES_RANGE: RangeInclusive<u32> = 1..=1_000;
/// Longest `node_types[].name`.
pub const NODE_TYPE_NAME_MAX_BYTES: usize = 32;
/// The node type name reserved for the cluster's head node.
pub const HEAD_NODE_TYPE_NAME: &str = "head";
/// Allowed values of `node_types[].cpus`.
pub const NODE_TYPE_CPUS_RANGE: RangeInclusive<u32> = 1..=1_048_576;
/// Allowed values of `node_types[].gpus`.
pub const NODE_TYPE_GPUS_RANGE: RangeInclusive<u32> = 0..=1_024;
/// Allowed values of `node_types[].min_workers` and `node_types[].max_workers`.
pub const NODE_TYPE_WORKERS_RANGE: RangeInclusive<u32> = 0..=10_000;
/// Resource names a node type's `resources` may not use: Ray sets them from `cpus`, `gpus`
/// and the node's memory.
pub const RESERVED_RESOURCE_NAMES: &[&str] = &["CPU", "GPU", "memory", "object_store_memory"];
/// Longest Ray node label name and value (Kubernetes label syntax, as Ray checks it).
pub const LABEL_MAX_BYTES: usize = 63;
/// Longest Ray node label key prefix (the part before `/`).
pub const LABEL_PREFIX_MAX_BYTES: usize = 253;

/// The environment variable that names a configuration file.
pub const CONFIG_ENV: &str = "RAY_HPC_CONFIG";
/// The environment variable that overrides ray-hpc's home directory (default `~/.ray-hpc`).
pub const HOME_ENV: &str = "RAY_HPC_HOME";

/// How environment variables are looked up (so tests need not touch the process environment).
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<OsString>;

/// The whole configuration. `Default` gives every default.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config {
    /// `scheduler`: which batch scheduler to use: `auto` (default: inside a job, the
    /// scheduler whose job it is; on a login node, the one whose tools are installed; else this
    /// machine alone), or a scheduler's name (see [`scheduler::choices`]).
    pub scheduler: String,
    /// `auth`: `token` (default; Ray's token authentication, one token per cluster) or `none`
    /// (Ray without authentication; anyone who can reach the ports can run code: the CLI warns).
    pub auth: AuthMode,
    /// `ready_timeout_s`: how long to wait for every node to join before failing, in seconds
    /// (1..=86400, default 120).
    pub ready_timeout_s: u64,
    /// `scheduler_timeout_s`: the longest one scheduler command (submit, query, cancel, address
    /// lookup) may take before it is killed and counted as failed, in seconds (1..=3600,
    /// default 30).
    pub scheduler_timeout_s: u64,
    /// `[cluster]`: naming and per-node scratch space.
    pub cluster: ClusterConfig,
    /// `[ray]`: how Ray is started.
    pub ray: RayConfig,
    /// `[network]`: which address the nodes use.
    pub network: NetworkConfig,
    /// `[teardown]`: how Ray is stopped.
    pub teardown: TeardownConfig,
    /// `[autoscaler]`: whether and how ray-hpc submits worker jobs for Ray's pending demand.
    pub autoscaler: AutoscalerConfig,
    /// `[[node_types]]`: the kinds of worker node the autoscaler may ask the scheduler for.
    /// Names are unique. Default: none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub node_types: Vec<NodeTypeConfig>,
    /// Each scheduler's own section, by its name, as checked against its adapter's schema
    /// ([`scheduler::SettingsSchema`]). Default: none.
    #[serde(flatten)]
    pub scheduler_settings: BTreeMap<String, scheduler::Settings>,
}

/// `[cluster]`
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClusterConfig {
    /// `cluster.name`: the cluster's name in the registry and in `status`/`submit`/`down`.
    /// 1 to 64 of `A-Z a-z 0-9 _ . -`, not starting with `.` or `-`. Default: `ray-<job id>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `cluster.temp_root`: where the per-node temp dirs `<temp_root>/rh-<id>` go (Ray's
    /// `--temp-dir`; removed at teardown). An absolute path of at most 26 bytes, since Ray's
    /// Unix socket paths under it must stay within 107 bytes. Default `/tmp`.
    pub temp_root: PathBuf,
}

/// `[ray]`
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RayConfig {
    /// `ray.bin`: the `ray` executable. Default: `$VIRTUAL_ENV/bin/ray`, else `ray` on `PATH`
    /// (see [`crate::ray::find_ray`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bin: Option<PathBuf>,
    /// `ray.head_num_cpus`: CPUs the head node announces to Ray (0 keeps tasks and actors off
    /// the head). Default: what the head node was granted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub head_num_cpus: Option<u32>,
    /// `ray.object_store_fraction`: share of each node's memory for Ray's object store
    /// (0.05..=0.8, default 0.3).
    pub object_store_fraction: f64,
    /// `ray.worker_ports`: size of each node's worker port range (16..=10000, default 100).
    pub worker_ports: u16,
    /// `ray.port_range = [lo, hi]`: the ports ray-hpc picks every Ray port from;
    /// 1024 < lo < hi <= 65535, hi - lo >= 200, and room for `worker_ports` + 16.
    /// Default `[20000, 30000]`.
    pub port_range: PortRange,
    /// `ray.env`: extra environment variables for every Ray process, e.g.
    /// `env = { OMP_NUM_THREADS = "1" }`. Values are strings. Default: none.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
}

/// `ray.port_range`: an inclusive port range, written `[lo, hi]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

impl PortRange {
    /// How many ports the range holds (both ends included).
    pub fn len(&self) -> u32 {
        u32::from(self.hi.saturating_sub(self.lo)) + 1
    }

    /// Never true for a validated range; here for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.hi < self.lo
    }

    pub fn contains(&self, port: u16) -> bool {
        (self.lo..=self.hi).contains(&port)
    }
}

impl Serialize for PortRange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        [self.lo, self.hi].serialize(s)
    }
}

/// `[network]`
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NetworkConfig {
    /// `network.interface`: take each node's address from this network interface (e.g. `ib0`
    /// for InfiniBand). Default: the address the scheduler knows the node by.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
}

/// `[teardown]`
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TeardownConfig {
    /// `teardown.grace_s`: seconds between SIGTERM and SIGKILL when stopping Ray's process
    /// groups (1..=300, default 10).
    pub grace_s: u64,
}

/// `[autoscaler]`
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AutoscalerConfig {
    /// `autoscaler.enabled`: submit worker jobs for Ray's pending demand and hand idle ones
    /// back. Default `false`: no scheduler jobs are submitted. `true` needs a `[[node_types]]`.
    pub enabled: bool,
    /// `autoscaler.max_workers`: the most worker nodes, all node types together
    /// (0..=10000, default 16); also each node type's default `max_workers`.
    pub max_workers: u32,
    /// `autoscaler.idle_timeout_s`: an idle worker node is drained and its job cancelled after
    /// this many seconds (1..=604800, default 300).
    pub idle_timeout_s: u64,
    /// `autoscaler.upscaling_speed`: at most `max(5, upscaling_speed * workers)` jobs pending
    /// at once (more than 0, at most 100; default 1.0).
    pub upscaling_speed: f64,
    /// `autoscaler.poll_interval_s`: how often the GCS is asked for demand, in seconds
    /// (0.1..=60, default 1.0).
    pub poll_interval_s: f64,
    /// `autoscaler.scheduler_poll_interval_s`: one batched scheduler query at most this often,
    /// in seconds (1..=600, default 5.0).
    pub scheduler_poll_interval_s: f64,
    /// `autoscaler.max_pending_jobs`: worker jobs queued at once, all types together
    /// (1..=10000, default 20).
    pub max_pending_jobs: u32,
    /// `autoscaler.backoff_initial_s`: the wait after a refused submission, doubling per
    /// consecutive refusal, in seconds (1..=3600, default 10.0).
    pub backoff_initial_s: f64,
    /// `autoscaler.backoff_max_s`: the longest such wait, in seconds (at least
    /// `backoff_initial_s`, at most 86400; default 600.0).
    pub backoff_max_s: f64,
    /// `autoscaler.max_consecutive_failures`: after this many refused submissions in a row, a
    /// node type is not tried again until the config or the demand changes (1..=1000,
    /// default 5).
    pub max_consecutive_failures: u32,
}

/// One `[[node_types]]` entry: a kind of worker node, one scheduler job per node.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeTypeConfig {
    /// `name` (required): 1 to 32 of `A-Z a-z 0-9 _ -`, unique, not `head`. Ray sees it as the
    /// node's type (`RAY_NODE_TYPE_NAME`).
    pub name: String,
    /// `partition` (or `queue`, the same thing): the scheduler's queue. Default: the
    /// scheduler's.
    #[serde(rename = "partition", skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// `account`: the account (or project) charged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// `qos`: the quality of service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qos: Option<String>,
    /// `constraint`: node features required.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub constraint: Option<String>,
    /// `cpus` (required): CPUs per node, at least 1.
    pub cpus: u32,
    /// `gpus`: GPUs per node (default 0).
    pub gpus: u32,
    /// `memory`: memory per node, in bytes. Written as a number of bytes or a string with a
    /// `K`, `M`, `G` or `T` suffix (binary: 1K = 1024); rendered back as bytes.
    /// Default: the scheduler's.
    #[serde(rename = "memory", skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// `time`: the walltime of each worker job (see [`parse_walltime`] for the forms);
    /// rendered back as `[D-]HH:MM:SS`. Default: the scheduler's.
    #[serde(
        rename = "time",
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_walltime"
    )]
    pub walltime: Option<Duration>,
    /// `min_workers`: nodes of this type kept even when idle (default 0).
    pub min_workers: u32,
    /// `max_workers`: the most nodes of this type (default `autoscaler.max_workers`, filled in
    /// at parse time); at least `min_workers`.
    pub max_workers: u32,
    /// `resources`: custom Ray resources per node, e.g. `{ nvme = 1.0 }`; values above 0,
    /// names other than `CPU`, `GPU`, `memory`, `object_store_memory`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub resources: BTreeMap<String, f64>,
    /// `labels`: Ray node labels, e.g. `{ zone = "a" }` (string values; Ray's label syntax).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// `extra_directives`: extra header lines for this type's job scripts, each a whole line
    /// in the scheduler's own syntax (after the scheduler section's `extra_directives`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub extra_directives: Vec<String>,
}

/// `auth`: whether Ray runs with token authentication.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Ray's token authentication, a fresh token per cluster.
    #[default]
    Token,
    /// No authentication (anyone who reaches the ports can run code as you).
    None,
}

impl AuthMode {
    /// Every mode, in the order messages list them.
    pub const ALL: &'static [AuthMode] = &[AuthMode::Token, AuthMode::None];

    /// The name used in the file and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::Token => "token",
            AuthMode::None => "none",
        }
    }
}

macro_rules! name_enum_impls {
    ($t:ty) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $t {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, String> {
                <$t>::ALL
                    .iter()
                    .copied()
                    .find(|c| c.as_str() == s)
                    .ok_or_else(|| {
                        let names: Vec<&str> = <$t>::ALL.iter().map(|c| c.as_str()).collect();
                        format!("{s:?} is not one of {}", names.join(", "))
                    })
            }
        }
    };
}
name_enum_impls!(AuthMode);

impl Default for Config {
    fn default() -> Self {
        Config {
            scheduler: scheduler::AUTO.to_string(),
            auth: AuthMode::Token,
            ready_timeout_s: 120,
            scheduler_timeout_s: 30,
            cluster: ClusterConfig::default(),
            ray: RayConfig::default(),
            network: NetworkConfig::default(),
            teardown: TeardownConfig::default(),
            scheduler_settings: BTreeMap::new(),
            autoscaler: AutoscalerConfig::default(),
            node_types: Vec::new(),
        }
    }
}

impl Default for AutoscalerConfig {
    fn default() -> Self {
        AutoscalerConfig {
            enabled: false,
            max_workers: 16,
            idle_timeout_s: 300,
            upscaling_speed: 1.0,
            poll_interval_s: 1.0,
            scheduler_poll_interval_s: 5.0,
            max_pending_jobs: 20,
            backoff_initial_s: 10.0,
            backoff_max_s: 600.0,
            max_consecutive_failures: 5,
        }
    }
}

impl AutoscalerConfig {
    /// `idle_timeout_s` as a [`Duration`].
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_s)
    }

    /// `poll_interval_s` as a [`Duration`].
    pub fn poll_interval(&self) -> Duration {
        seconds(self.poll_interval_s)
    }

    /// `scheduler_poll_interval_s` as a [`Duration`].
    pub fn scheduler_poll_interval(&self) -> Duration {
        seconds(self.scheduler_poll_interval_s)
    }

    /// `backoff_initial_s` as a [`Duration`].
    pub fn backoff_initial(&self) -> Duration {
        seconds(self.backoff_initial_s)
    }

    /// `backoff_max_s` as a [`Duration`].
    pub fn backoff_max(&self) -> Duration {
        seconds(self.backoff_max_s)
    }
}

/// Seconds as a [`Duration`]; negative, NaN or huge values (never in a parsed config) clamp.
fn seconds(s: f64) -> Duration {
    Duration::try_from_secs_f64(s.max(0.0)).unwrap_or(Duration::MAX)
}

/// A walltime: `minutes`, `MM:SS`, `HH:MM:SS`, `D-HH`, `D-HH:MM` or `D-HH:MM:SS` (fields after
/// the first below 60, hours below 24 after a day count), or a length with units (`90m`,
/// `2h`, `1d 12h`). `None` for anything else, and for a zero or overflowing length.
pub fn parse_walltime(s: &str) -> Option<Duration> {
    let s = s.trim();
    let secs = match clock_seconds(s) {
        Some(secs) => secs,
        None if s.bytes().any(|b| b.is_ascii_alphabetic()) => {
            humantime::parse_duration(s).ok()?.as_secs()
        }
        None => return None,
    };
    (secs > 0).then(|| Duration::from_secs(secs))
}

/// `[D-]HH:MM:SS`, how walltimes are shown.
pub fn format_walltime(d: Duration) -> String {
    scheduler::clock(d)
}

fn serialize_walltime<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_str(&format_walltime(*d)),
        None => s.serialize_none(),
    }
}

/// The clock forms of [`parse_walltime`], in seconds.
fn clock_seconds(s: &str) -> Option<u64> {
    fn num(f: &str) -> Option<u64> {
        if f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        f.parse().ok()
    }
    let below = |x: u64, limit: u64| (x < limit).then_some(x);
    let (days, rest) = match s.split_once('-') {
        Some((d, rest)) => (Some(num(d)?), rest),
        None => (None, s),
    };
    let fields: Vec<&str> = rest.split(':').collect();
    match (days, fields.as_slice()) {
        (None, [m]) => num(m)?.checked_mul(60),
        (None, [m, sec]) => num(m)?.checked_mul(60)?.checked_add(below(num(sec)?, 60)?),
        (None, [h, m, sec]) => num(h)?
            .checked_mul(3600)?
            .checked_add(below(num(m)?, 60)? * 60 + below(num(sec)?, 60)?),
        (Some(d), [h, more @ ..]) if more.len() <= 2 => {
            let h = below(num(h)?, 24)?;
            let m = match more.first() {
                Some(m) => below(num(m)?, 60)?,
                None => 0,
            };
            let sec = match more.get(1) {
                Some(sec) => below(num(sec)?, 60)?,
                None => 0,
            };
            d.checked_mul(86_400)?.checked_add(h * 3600 + m * 60 + sec)
        }
        _ => None,
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            name: None,
            temp_root: PathBuf::from("/tmp"),
        }
    }
}

impl Default for RayConfig {
    fn default() -> Self {
        RayConfig {
            bin: None,
            head_num_cpus: None,
            object_store_fraction: 0.3,
            worker_ports: 100,
            port_range: PortRange {
                lo: 20_000,
                hi: 30_000,
            },
            env: BTreeMap::new(),
        }
    }
}

impl Default for TeardownConfig {
    fn default() -> Self {
        TeardownConfig { grace_s: 10 }
    }
}

impl ClusterConfig {
    /// `cluster.name`, else `ray-<job_id>`.
    pub fn name_or_default(&self, job_id: &str) -> String {
        match &self.name {
            Some(n) => n.clone(),
            None => format!("ray-{job_id}"),
        }
    }
}

impl Config {
    /// Parse a configuration from TOML text. `origin` (a file name) prefixes every message.
    /// Returns every problem found, not just the first.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        parse::parse(text, origin)
    }

    /// Read and parse a configuration file. Read errors name the path.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| {
            ConfigError::single(&origin, ProblemKind::Read, format!("cannot read: {e}"))
        })?;
        match String::from_utf8(bytes) {
            Ok(text) => Config::parse(&text, &origin),
            Err(e) => {
                let good = e.utf8_error().valid_up_to();
                // The valid prefix is UTF-8, so the position can be computed on it.
                let prefix = String::from_utf8_lossy(&e.as_bytes()[..good]).into_owned();
                let problem = ConfigProblem::at(
                    &prefix,
                    ProblemKind::Read,
                    None,
                    Some(good..good),
                    "the file is not UTF-8 text (TOML must be UTF-8)".to_string(),
                );
                Err(ConfigError::new(&origin, vec![problem]))
            }
        }
    }

    /// Find and load the configuration: `explicit` (`--config FILE`), else `$RAY_HPC_CONFIG`,
    /// else `<$RAY_HPC_HOME or ~/.ray-hpc>/config.toml` if it exists, else defaults.
    /// Returns the file used, if any. A file named explicitly or by `$RAY_HPC_CONFIG` must exist.
    pub fn discover(explicit: Option<&Path>) -> Result<(Config, Option<PathBuf>), ConfigError> {
        Config::discover_with(explicit, &|k| std::env::var_os(k))
    }

    /// [`Config::discover`] with the environment looked up through `env`.
    pub fn discover_with(
        explicit: Option<&Path>,
        env: EnvLookup<'_>,
    ) -> Result<(Config, Option<PathBuf>), ConfigError> {
        if let Some(path) = explicit {
            return Ok((Config::load(path)?, Some(path.to_path_buf())));
        }
        if let Some(named) = env(CONFIG_ENV).filter(|v| !v.is_empty()) {
            let path = PathBuf::from(named);
            return match Config::load(&path) {
                Ok(cfg) => Ok((cfg, Some(path))),
                Err(mut e) => {
                    for p in &mut e.problems {
                        if p.kind == ProblemKind::Read {
                            p.message.push_str(&format!(" (named by ${CONFIG_ENV})"));
                        }
                    }
                    Err(e)
                }
            };
        }
        if let Some(home) = home_dir(env) {
            let path = home.join("config.toml");
            // An unreadable directory reads as "exists", so the read error gets reported.
            if path.try_exists().unwrap_or(true) {
                return Ok((Config::load(&path)?, Some(path)));
            }
        }
        Ok((Config::default(), None))
    }

    /// The cluster's name: `cluster.name`, else `ray-<job_id>`.
    pub fn name_or_default(&self, job_id: &str) -> String {
        self.cluster.name_or_default(job_id)
    }

    /// The effective configuration as TOML (defaults filled in; unset optional keys left out).
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string(self)
    }

    /// Things that are allowed but deserve a warning, one line each.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.auth == AuthMode::None {
            w.push(
                "auth = \"none\": Ray runs without authentication; anyone who can reach its \
                 ports can run code as you"
                    .to_string(),
            );
        }
        if !self.autoscaler.enabled && !self.node_types.is_empty() {
            w.push(
                "[[node_types]] are set but autoscaler.enabled = false: no worker jobs will be \
                 submitted"
                    .to_string(),
            );
        }
        w
    }

    /// The node type named `name`.
    pub fn node_type(&self, name: &str) -> Option<&NodeTypeConfig> {
        self.node_types.iter().find(|t| t.name == name)
    }

    /// `scheduler_timeout_s` as a [`Duration`].
    pub fn scheduler_timeout(&self) -> Duration {
        Duration::from_secs(self.scheduler_timeout_s)
    }

    /// What the adapter named `name` is opened with here: this process's environment, its
    /// config section, and real commands bounded by `scheduler_timeout_s`.
    pub fn scheduler_setup(&self, name: &str) -> scheduler::Setup {
        scheduler::Setup::live(
            self.scheduler_settings
                .get(name)
                .cloned()
                .unwrap_or_default(),
            self.scheduler_timeout(),
        )
    }

    /// Sets keys of the section of the scheduler `place` chooses, from the command line; an
    /// error names a key that scheduler does not take.
    pub fn override_scheduler_settings(
        &mut self,
        place: scheduler::Place,
        overrides: &BTreeMap<String, String>,
    ) -> Result<(), scheduler::SchedulerError> {
        if overrides.is_empty() {
            return Ok(());
        }
        let adapter = scheduler::choose(&self.scheduler, place, &scheduler::process_env())?;
        let section = self
            .scheduler_settings
            .entry(adapter.name.to_string())
            .or_default();
        for (key, value) in overrides {
            let checked = adapter
                .settings
                .and_then(|schema| schema.key(key))
                .ok_or_else(|| scheduler::SchedulerError::BadSettings {
                    section: adapter.name.to_string(),
                    why: format!(
                        "the {} scheduler takes no `{key}` (given on the command line)",
                        adapter.name
                    ),
                })?;
            if let scheduler::SettingKind::Text(problem) = checked.kind
                && let Some(why) = problem(value)
            {
                return Err(scheduler::SchedulerError::BadSettings {
                    section: adapter.name.to_string(),
                    why: format!("{key} = {value:?} (given on the command line) {why}"),
                });
            }
            section.insert(key.clone(), toml::Value::String(value.clone()));
        }
        Ok(())
    }

    /// The setup of the scheduler a cluster record names, with the settings its `up` was
    /// given on the command line over the config's.
    pub fn record_scheduler_setup(
        &self,
        name: &str,
        overrides: &BTreeMap<String, String>,
    ) -> scheduler::Setup {
        let mut setup = self.scheduler_setup(name);
        for (key, value) in overrides {
            setup
                .settings
                .insert(key.clone(), toml::Value::String(value.clone()));
        }
        setup
    }

    /// The scheduler for `place`, opened: the configured one, or for `auto` the one `place`
    /// suggests.
    pub fn open_scheduler(
        &self,
        place: scheduler::Place,
    ) -> Result<Box<dyn scheduler::Scheduler>, scheduler::SchedulerError> {
        let env = scheduler::process_env();
        let adapter = scheduler::choose(&self.scheduler, place, &env)?;
        (adapter.open)(self.scheduler_setup(adapter.name))
    }
}

/// ray-hpc's home directory: `$RAY_HPC_HOME`, else `$HOME/.ray-hpc`; `None` when neither is set.
pub fn home_dir(env: EnvLookup<'_>) -> Option<PathBuf> {
    if let Some(h) = env(HOME_ENV).filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(h));
    }
    env("HOME")
        .filter(|v| !v.is_empty())
        .map(|h| PathBuf::from(h).join(".ray-hpc"))
}

/// What `ray-hpc config check FILE` prints when the file is good: `FILE: ok`, any warnings,
/// then the effective configuration as TOML. On any problem, the error lists them all.
pub fn check_report(path: &Path) -> Result<String, ConfigError> {
    let cfg = Config::load(path)?;
    let origin = path.display().to_string();
    report(&cfg, &origin)
}

fn report(cfg: &Config, origin: &str) -> Result<String, ConfigError> {
    let body = cfg.to_toml().map_err(|e| {
        ConfigError::single(
            origin,
            ProblemKind::Render,
            format!("cannot write the effective configuration: {e}"),
        )
    })?;
    let mut out = format!("{origin}: ok\n");
    for w in cfg.warnings() {
        out.push_str(&format!("{origin}: warning: {w}\n"));
    }
    out.push_str("\n# effective configuration (defaults filled in)\n");
    if cfg.cluster.name.is_none() {
        out.push_str("# cluster.name unset: ray-<job id>\n");
    }
    if cfg.ray.bin.is_none() {
        out.push_str("# ray.bin unset: $VIRTUAL_ENV/bin/ray, else `ray` on PATH\n");
    }
    if cfg.ray.head_num_cpus.is_none() {
        out.push_str("# ray.head_num_cpus unset: the CPUs the head node was granted\n");
    }
    if cfg.network.interface.is_none() {
        out.push_str("# network.interface unset: the address the scheduler gives each node\n");
    }
    if !cfg.autoscaler.enabled {
        out.push_str("# autoscaler.enabled = false: no worker jobs are submitted\n");
    }
    if cfg.node_types.is_empty() {
        out.push_str("# no [[node_types]]: the autoscaler has nothing to submit\n");
    }
    out.push_str(&body);
    Ok(out)
}
