//! The schema walk: TOML text → [`Config`], collecting every problem with its position.
//!
//! The document is parsed into toml's spanned tree (`DeTable`) and walked by hand, so one
//! mistake never hides the next, and each problem points at the key or value it is about.

use std::fmt::Display;
use std::ops::{Range, RangeInclusive};
use std::path::PathBuf;

use toml::Spanned;

use crate::scheduler;
use toml::de::{DeArray, DeInteger, DeString, DeTable, DeValue};

use super::error::{ConfigError, ConfigProblem, ProblemKind};
use super::*;

type Key<'i> = Spanned<DeString<'i>>;
type Val<'i> = Spanned<DeValue<'i>>;

/// The top-level keys of ray-hpc's own; each scheduler's section comes after them.
const TOP_KEYS: &[&str] = &[
    "scheduler",
    "auth",
    "ready_timeout_s",
    "scheduler_timeout_s",
    "cluster",
    "ray",
    "network",
    "teardown",
    "autoscaler",
    "node_types",
];
const CLUSTER_KEYS: &[&str] = &["name", "temp_root"];
const RAY_KEYS: &[&str] = &[
    "bin",
    "head_num_cpus",
    "object_store_fraction",
    "worker_ports",
    "port_range",
    "env",
];
const NETWORK_KEYS: &[&str] = &["interface"];
const TEARDOWN_KEYS: &[&str] = &["grace_s"];
const AUTOSCALER_KEYS: &[&str] = &[
    "enabled",
    "max_workers",
    "idle_timeout_s",
    "upscaling_speed",
    "poll_interval_s",
    "scheduler_poll_interval_s",
    "max_pending_jobs",
    "backoff_initial_s",
    "backoff_max_s",
    "max_consecutive_failures",
];
const NODE_TYPE_KEYS: &[&str] = &[
    "name",
    "partition",
    "queue",
    "account",
    "qos",
    "constraint",
    "cpus",
    "gpus",
    "memory",
    "time",
    "min_workers",
    "max_workers",
    "resources",
    "labels",
    "extra_directives",
];

/// Every table of the schema with its keys ("" is the top level): ray-hpc's own, then each
/// scheduler's section as its adapter declares it.
pub(crate) fn sections() -> Vec<(&'static str, Vec<&'static str>)> {
    let schedulers = scheduler_sections();
    let mut top = TOP_KEYS.to_vec();
    top.extend(schedulers.iter().map(|s| s.section));
    let mut all = vec![("", top)];
    for (section, keys) in [
        ("cluster", CLUSTER_KEYS),
        ("ray", RAY_KEYS),
        ("network", NETWORK_KEYS),
        ("teardown", TEARDOWN_KEYS),
        ("autoscaler", AUTOSCALER_KEYS),
        ("node_types", NODE_TYPE_KEYS),
    ] {
        all.push((section, keys.to_vec()));
    }
    all.extend(schedulers.iter().map(|s| (s.section, s.key_names())));
    all
}

/// The schedulers' own sections.
fn scheduler_sections() -> Vec<&'static scheduler::SettingsSchema> {
    scheduler::ADAPTERS
        .iter()
        .filter_map(|a| a.settings)
        .collect()
}

/// The tables of [`sections`] that are arrays of tables (`[[node_types]]`): their keys are
/// shown with the entry's index, `node_types[1].cpus`.
pub(crate) const ARRAY_SECTIONS: &[&str] = &["node_types"];

pub(super) fn parse(src: &str, origin: &str) -> Result<Config, ConfigError> {
    let (doc, errors) = DeTable::parse_recoverable(src);
    if !errors.is_empty() {
        let problems = errors
            .iter()
            .map(|e| {
                let message = e.message().trim().replace('\n', "; ");
                let text = e.span().and_then(|r| src.get(r)).unwrap_or("");
                let message = if message == "duplicate key" && !text.is_empty() {
                    format!("duplicate key `{text}`")
                } else {
                    message
                };
                let message = if message.is_empty() {
                    "invalid TOML".to_string()
                } else {
                    format!("invalid TOML: {message}")
                };
                ConfigProblem::at(src, ProblemKind::Syntax, None, e.span(), message)
            })
            .collect();
        return Err(ConfigError::new(origin, problems));
    }
    let mut w = Walker {
        src,
        problems: Vec::new(),
    };
    let cfg = w.document(doc.get_ref());
    if w.problems.is_empty() {
        Ok(cfg)
    } else {
        Err(ConfigError::new(origin, w.problems))
    }
}

struct Walker<'s> {
    src: &'s str,
    problems: Vec<ConfigProblem>,
}

/// What the checks across `[autoscaler]` and `[[node_types]]` need to know of `[autoscaler]`.
#[derive(Default)]
struct AutoscalerSeen {
    /// Where `enabled` was given.
    enabled: Option<Range<usize>>,
    /// Where `max_workers` was given, when it was good.
    max_workers: Option<Range<usize>>,
    /// `max_workers` was given with a bad value: no check may rely on it.
    max_workers_bad: bool,
}

/// One `[[node_types]]` entry as walked, with what the checks across entries need.
struct NodeTypeDraft {
    /// `node_types[i]`.
    prefix: String,
    cfg: NodeTypeConfig,
    /// Where a good `name` was given.
    name: Option<Range<usize>>,
    /// Where a good `min_workers` was given.
    min: Option<Range<usize>>,
    /// Where a good `max_workers` was given.
    max: Option<Range<usize>>,
    /// `max_workers` was given with a bad value.
    max_bad: bool,
    /// Where each good `extra_directives` line was given.
    directive_spans: Vec<Range<usize>>,
}

impl Walker<'_> {
    fn document(&mut self, doc: &DeTable<'_>) -> Config {
        let mut c = Config::default();
        let mut seen = AutoscalerSeen::default();
        let mut drafts = Vec::new();
        // No node types at all (absent, or an empty array), for `autoscaler.enabled = true`.
        let mut no_node_types = true;
        // Where a good `scheduler` was given, for the check of node types' header lines.
        let mut scheduler_span = None;
        for (k, v) in doc {
            match k.get_ref().as_ref() {
                "scheduler" => {
                    let choices = scheduler::choices();
                    if let Some(x) = self.choice("scheduler", v, &choices, |c| c) {
                        c.scheduler = x.to_string();
                        scheduler_span = (x != scheduler::AUTO).then(|| v.span());
                    }
                }
                "scheduler_timeout_s" => {
                    if let Some(x) = self.int("scheduler_timeout_s", v, SCHEDULER_TIMEOUT_S_RANGE) {
                        c.scheduler_timeout_s = x;
                    }
                }
                "auth" => {
                    if let Some(x) = self.choice("auth", v, AuthMode::ALL, AuthMode::as_str) {
                        c.auth = x;
                    }
                }
                "ready_timeout_s" => {
                    if let Some(x) = self.int("ready_timeout_s", v, READY_TIMEOUT_S_RANGE) {
                        c.ready_timeout_s = x;
                    }
                }
                "cluster" => {
                    if let Some(t) = self.table("cluster", v) {
                        self.cluster(t, &mut c.cluster);
                    }
                }
                "ray" => {
                    if let Some(t) = self.table("ray", v) {
                        self.ray(t, &mut c.ray);
                    }
                }
                "network" => {
                    if let Some(t) = self.table("network", v) {
                        self.network(t, &mut c.network);
                    }
                }
                "teardown" => {
                    if let Some(t) = self.table("teardown", v) {
                        self.teardown(t, &mut c.teardown);
                    }
                }
                "autoscaler" => {
                    if let Some(t) = self.table("autoscaler", v) {
                        seen = self.autoscaler(t, &mut c.autoscaler);
                    }
                }
                "node_types" => {
                    no_node_types = matches!(v.get_ref(), DeValue::Array(a) if a.is_empty());
                    drafts = self.node_types(v);
                }
                name => match scheduler_sections().into_iter().find(|s| s.section == name) {
                    Some(schema) => {
                        if let Some(t) = self.table(name, v) {
                            let settings = self.scheduler_section(schema, t);
                            c.scheduler_settings.insert(name.to_string(), settings);
                        }
                    }
                    None => self.unknown("", k),
                },
            }
        }
        if scheduler_span.is_some() {
            self.directives_of_the_chosen_scheduler(&c.scheduler, &drafts);
        }
        self.node_type_rules(&mut c, &seen, drafts, no_node_types);
        c
    }

    fn cluster(&mut self, t: &DeTable<'_>, c: &mut ClusterConfig) {
        for (k, v) in t {
            match k.get_ref().as_ref() {
                "name" => {
                    if let Some(s) = self.string("cluster.name", v) {
                        match cluster_name_problem(s) {
                            None => c.name = Some(s.to_string()),
                            Some(why) => self.bad_value("cluster.name", v, why),
                        }
                    }
                }
                "temp_root" => {
                    if let Some(s) = self.string("cluster.temp_root", v) {
                        if !s.starts_with('/') {
                            self.bad_value("cluster.temp_root", v, "must be an absolute path");
                        } else if s.len() > TEMP_ROOT_MAX_BYTES {
                            self.bad_value(
                                "cluster.temp_root",
                                v,
                                format!(
                                    "is {} bytes long; at most {TEMP_ROOT_MAX_BYTES} are allowed, \
                                     since Ray's Unix socket paths under it must stay within \
                                     {UNIX_SOCKET_PATH_MAX_BYTES} bytes",
                                    s.len()
                                ),
                            );
                        } else {
                            c.temp_root = PathBuf::from(s);
                        }
                    }
                }
                _ => self.unknown("cluster", k),
            }
        }
    }

    fn ray(&mut self, t: &DeTable<'_>, c: &mut RayConfig) {
        // For the cross-check of worker_ports against port_range: the span of each key given,
        // and whether every value involved was good.
        let mut ports_ok = true;
        let mut range_span = None;
        let mut workers_span = None;
        for (k, v) in t {
            match k.get_ref().as_ref() {
                "bin" => {
                    if let Some(s) = self.string("ray.bin", v) {
                        if s.trim().is_empty() {
                            self.bad_value("ray.bin", v, "must not be empty");
                        } else {
                            c.bin = Some(PathBuf::from(s));
                        }
                    }
                }
                "head_num_cpus" => {
                    if let Some(x) = self.int("ray.head_num_cpus", v, HEAD_NUM_CPUS_RANGE) {
                        c.head_num_cpus = Some(x);
                    }
                }
                "object_store_fraction" => {
                    if let Some(x) =
                        self.float("ray.object_store_fraction", v, OBJECT_STORE_FRACTION_RANGE)
                    {
                        c.object_store_fraction = x;
                    }
                }
                "worker_ports" => {
                    workers_span = Some(v.span());
                    match self.int("ray.worker_ports", v, WORKER_PORTS_RANGE) {
                        Some(x) => c.worker_ports = x,
                        None => ports_ok = false,
                    }
                }
                "port_range" => {
                    range_span = Some(v.span());
                    match self.port_range("ray.port_range", v) {
                        Some(x) => c.port_range = x,
                        None => ports_ok = false,
                    }
                }
                "env" => {
                    if let Some(env) = self.table("ray.env", v) {
                        self.env(env, &mut c.env);
                    }
                }
                _ => self.unknown("ray", k),
            }
        }
        let needed = u32::from(c.worker_ports) + u32::from(FIXED_PORTS_PER_NODE);
        if ports_ok && c.port_range.len() < needed {
            let (lo, hi, have, workers) = (
                c.port_range.lo,
                c.port_range.hi,
                c.port_range.len(),
                c.worker_ports,
            );
            let (key, span, why) = match (range_span, workers_span) {
                (Some(s), _) => (
                    "ray.port_range",
                    s,
                    format!(
                        "holds {have} ports, fewer than the {needed} needed: ray.worker_ports \
                         ({workers}) + {FIXED_PORTS_PER_NODE} for Ray's other ports"
                    ),
                ),
                (None, Some(s)) => (
                    "ray.worker_ports",
                    s,
                    format!(
                        "needs {needed} ports (+{FIXED_PORTS_PER_NODE} for Ray's other ports), \
                         more than ray.port_range [{lo}, {hi}] holds ({have})"
                    ),
                ),
                (None, None) => return, // the defaults fit
            };
            let shown = self.shown(&span);
            self.push(
                ProblemKind::BadValue,
                key,
                span,
                format!("{key} = {shown} {why}"),
            );
        }
    }

    fn port_range(&mut self, key: &str, v: &Val<'_>) -> Option<PortRange> {
        let arr = self.array(key, v, "an array [lo, hi]")?;
        if arr.len() != 2 {
            self.bad_value(
                key,
                v,
                format!("must be [lo, hi] (two ports), not {} values", arr.len()),
            );
            return None;
        }
        let lo_key = format!("{key}[0]");
        let hi_key = format!("{key}[1]");
        let lo = self.int_value(&lo_key, &arr[0]);
        let hi = self.int_value(&hi_key, &arr[1]);
        let (lo, hi) = (lo?, hi?);
        let mut ok = true;
        if lo <= 1024 || lo > 65535 {
            self.bad_value(
                &lo_key,
                &arr[0],
                "(lo) must be above 1024 and at most 65535",
            );
            ok = false;
        }
        if !(1025..=65535).contains(&hi) {
            self.bad_value(
                &hi_key,
                &arr[1],
                "(hi) must be above 1024 and at most 65535",
            );
            ok = false;
        }
        if !ok {
            return None;
        }
        if lo >= hi {
            self.bad_value(key, v, "must have lo < hi");
            return None;
        }
        if hi - lo < i128::from(PORT_RANGE_MIN_SPAN) {
            self.bad_value(
                key,
                v,
                format!(
                    "is too narrow: hi - lo = {}, at least {PORT_RANGE_MIN_SPAN} is needed",
                    hi - lo
                ),
            );
            return None;
        }
        // Both are within 1025..=65535 here.
        Some(PortRange {
            lo: u16::try_from(lo).ok()?,
            hi: u16::try_from(hi).ok()?,
        })
    }

    fn env(&mut self, t: &DeTable<'_>, env: &mut std::collections::BTreeMap<String, String>) {
        for (k, v) in t {
            let name = k.get_ref().as_ref();
            let key = join("ray.env", name);
            let mut good_name = true;
            if name.is_empty() || name.contains('=') || name.contains('\0') {
                let why = format!(
                    "ray.env key {name:?} is not a usable environment variable name (it is \
                     empty or has `=` or NUL)"
                );
                self.push(ProblemKind::BadValue, &key, k.span(), why);
                good_name = false;
            }
            if let Some(s) = self.string_entry(&key, v)
                && good_name
            {
                env.insert(name.to_string(), s.to_string());
            }
        }
    }

    fn network(&mut self, t: &DeTable<'_>, c: &mut NetworkConfig) {
        for (k, v) in t {
            match k.get_ref().as_ref() {
                "interface" => {
                    if let Some(s) = self.string("network.interface", v) {
                        match interface_problem(s) {
                            None => c.interface = Some(s.to_string()),
                            Some(why) => self.bad_value("network.interface", v, why),
                        }
                    }
                }
                _ => self.unknown("network", k),
            }
        }
    }

    fn teardown(&mut self, t: &DeTable<'_>, c: &mut TeardownConfig) {
        for (k, v) in t {
            match k.get_ref().as_ref() {
                "grace_s" => {
                    if let Some(x) = self.int("teardown.grace_s", v, GRACE_S_RANGE) {
                        c.grace_s = x;
                    }
                }
                _ => self.unknown("teardown", k),
            }
        }
    }

    /// An array of non-empty strings, each also passing `check` (which names what is wrong);
    /// None after reporting every bad item.
    fn string_list(
        &mut self,
        key: &str,
        v: &Spanned<DeValue<'_>>,
        check: impl Fn(&str) -> Option<String>,
    ) -> Option<Vec<String>> {
        let arr = self.array(key, v, "an array of strings")?;
        let mut items = Vec::new();
        let mut ok = true;
        for (i, item) in arr.iter().enumerate() {
            let key = format!("{key}[{i}]");
            match self.string(&key, item) {
                Some("") => {
                    self.bad_value(&key, item, "must not be empty");
                    ok = false;
                }
                Some(s) => match check(s) {
                    Some(why) => {
                        self.bad_value(&key, item, why);
                        ok = false;
                    }
                    None => items.push(s.to_string()),
                },
                None => ok = false,
            }
        }
        ok.then_some(items)
    }

    /// A scheduler's own section, walked against its adapter's schema; the good values come
    /// back as a table the adapter reads when it is opened.
    fn scheduler_section(
        &mut self,
        schema: &scheduler::SettingsSchema,
        t: &DeTable<'_>,
    ) -> scheduler::Settings {
        let mut settings = scheduler::Settings::new();
        for (k, v) in t {
            let name = k.get_ref().as_ref();
            let key = join(schema.section, name);
            let Some(spec) = schema.key(name) else {
                self.unknown(schema.section, k);
                continue;
            };
            let value = match spec.kind {
                scheduler::SettingKind::Text(check) => {
                    self.string(&key, v).and_then(|s| match check(s) {
                        Some(why) => {
                            self.bad_value(&key, v, why);
                            None
                        }
                        None => Some(toml::Value::String(s.to_string())),
                    })
                }
                scheduler::SettingKind::TextList(check) => self
                    .string_list(&key, v, check)
                    .map(|items| toml::Value::Array(items.into_iter().map(Into::into).collect())),
            };
            if let Some(value) = value {
                settings.insert(name.to_string(), value);
            }
        }
        settings
    }

    /// With a scheduler named, node types' header lines must be that scheduler's (any
    /// scheduler's was checked while walking them).
    fn directives_of_the_chosen_scheduler(&mut self, chosen: &str, drafts: &[NodeTypeDraft]) {
        for d in drafts {
            let lines = d.cfg.extra_directives.iter().zip(&d.directive_spans);
            for (j, (line, span)) in lines.enumerate() {
                if let Some(why) = scheduler::directive_problem(line, Some(chosen)) {
                    let key = format!("{}.extra_directives[{j}]", d.prefix);
                    let shown = self.shown(span);
                    let msg = format!(
                        "{key} = {shown} is not a header line of scheduler {chosen:?} ({why})"
                    );
                    self.push(ProblemKind::BadValue, &key, span.clone(), msg);
                }
            }
        }
    }

    fn autoscaler(&mut self, t: &DeTable<'_>, c: &mut AutoscalerConfig) -> AutoscalerSeen {
        let mut seen = AutoscalerSeen::default();
        // For the cross-check of backoff_max_s against backoff_initial_s.
        let mut backoff_ok = true;
        let mut initial_span = None;
        let mut max_span = None;
        for (k, v) in t {
            match k.get_ref().as_ref() {
                "enabled" => {
                    seen.enabled = Some(v.span());
                    if let Some(x) = self.boolean("autoscaler.enabled", v) {
                        c.enabled = x;
                    }
                }
                "max_workers" => {
                    match self.int("autoscaler.max_workers", v, AUTOSCALER_MAX_WORKERS_RANGE) {
                        Some(x) => {
                            c.max_workers = x;
                            seen.max_workers = Some(v.span());
                        }
                        None => seen.max_workers_bad = true,
                    }
                }
                "idle_timeout_s" => {
                    if let Some(x) = self.int("autoscaler.idle_timeout_s", v, IDLE_TIMEOUT_S_RANGE)
                    {
                        c.idle_timeout_s = x;
                    }
                }
                "upscaling_speed" => {
                    let key = "autoscaler.upscaling_speed";
                    if let Some(x) = self.number(key, v) {
                        if x > UPSCALING_SPEED_MIN_EXCLUSIVE && x <= UPSCALING_SPEED_MAX {
                            c.upscaling_speed = x;
                        } else {
                            let why = format!(
                                "is out of range: more than {UPSCALING_SPEED_MIN_EXCLUSIVE}, at \
                                 most {UPSCALING_SPEED_MAX}"
                            );
                            self.bad_value(key, v, why);
                        }
                    }
                }
                "poll_interval_s" => {
                    let key = "autoscaler.poll_interval_s";
                    if let Some(x) = self.float(key, v, POLL_INTERVAL_S_RANGE) {
                        c.poll_interval_s = x;
                    }
                }
                "scheduler_poll_interval_s" => {
                    let key = "autoscaler.scheduler_poll_interval_s";
                    if let Some(x) = self.float(key, v, SCHEDULER_POLL_INTERVAL_S_RANGE) {
                        c.scheduler_poll_interval_s = x;
                    }
                }
                "max_pending_jobs" => {
                    let key = "autoscaler.max_pending_jobs";
                    if let Some(x) = self.int(key, v, MAX_PENDING_JOBS_RANGE) {
                        c.max_pending_jobs = x;
                    }
                }
                "backoff_initial_s" => {
                    initial_span = Some(v.span());
                    let key = "autoscaler.backoff_initial_s";
                    match self.float(key, v, BACKOFF_INITIAL_S_RANGE) {
                        Some(x) => c.backoff_initial_s = x,
                        None => backoff_ok = false,
                    }
                }
                "backoff_max_s" => {
                    max_span = Some(v.span());
                    match self.float("autoscaler.backoff_max_s", v, BACKOFF_MAX_S_RANGE) {
                        Some(x) => c.backoff_max_s = x,
                        None => backoff_ok = false,
                    }
                }
                "max_consecutive_failures" => {
                    let key = "autoscaler.max_consecutive_failures";
                    if let Some(x) = self.int(key, v, MAX_CONSECUTIVE_FAILURES_RANGE) {
                        c.max_consecutive_failures = x;
                    }
                }
                _ => self.unknown("autoscaler", k),
            }
        }
        if backoff_ok && c.backoff_max_s < c.backoff_initial_s {
            let (initial, max) = (c.backoff_initial_s, c.backoff_max_s);
            let (key, span, why) = match (max_span, initial_span) {
                (Some(s), _) => (
                    "autoscaler.backoff_max_s",
                    s,
                    format!("is less than autoscaler.backoff_initial_s ({initial})"),
                ),
                (None, Some(s)) => (
                    "autoscaler.backoff_initial_s",
                    s,
                    format!("is more than autoscaler.backoff_max_s ({max}, the default)"),
                ),
                (None, None) => return seen, // the defaults fit
            };
            let shown = self.shown(&span);
            self.push(
                ProblemKind::BadValue,
                key,
                span,
                format!("{key} = {shown} {why}"),
            );
        }
        seen
    }

    /// `node_types`: an array of tables. Every entry that is a table comes back, good or not.
    fn node_types(&mut self, v: &Val<'_>) -> Vec<NodeTypeDraft> {
        let Some(arr) = self.array("node_types", v, "an array of tables ([[node_types]])") else {
            return Vec::new();
        };
        let mut drafts = Vec::new();
        for (i, item) in arr.iter().enumerate() {
            let prefix = format!("node_types[{i}]");
            match item.get_ref() {
                DeValue::Table(t) => drafts.push(self.node_type(prefix, item.span(), t)),
                other => self.wrong_type(&prefix, item, other, "a table"),
            }
        }
        drafts
    }

    fn node_type(&mut self, prefix: String, entry: Range<usize>, t: &DeTable<'_>) -> NodeTypeDraft {
        let mut d = NodeTypeDraft {
            cfg: NodeTypeConfig {
                name: String::new(),
                queue: None,
                account: None,
                qos: None,
                constraint: None,
                cpus: 0,
                gpus: 0,
                memory_bytes: None,
                walltime: None,
                min_workers: 0,
                max_workers: 0,
                resources: BTreeMap::new(),
                labels: BTreeMap::new(),
                extra_directives: Vec::new(),
            },
            name: None,
            min: None,
            max: None,
            max_bad: false,
            directive_spans: Vec::new(),
            prefix,
        };
        let (mut has_name, mut has_cpus) = (false, false);
        for (k, v) in t {
            let name = k.get_ref().as_ref();
            let key = join(&d.prefix, name);
            let c = &mut d.cfg;
            match name {
                "name" => {
                    has_name = true;
                    if let Some(s) = self.string(&key, v) {
                        match node_type_name_problem(s) {
                            None => {
                                c.name = s.to_string();
                                d.name = Some(v.span());
                            }
                            Some(why) => self.bad_value(&key, v, why),
                        }
                    }
                }
                "partition" | "queue" | "account" | "qos" | "constraint" => {
                    if let Some(s) = self.string(&key, v) {
                        match scheduler_word_problem(s) {
                            Some(why) => self.bad_value(&key, v, why),
                            None if matches!(name, "partition" | "queue") && c.queue.is_some() => {
                                self.bad_value(
                                    &key,
                                    v,
                                    "repeats the queue: `partition` and `queue` are the same key",
                                );
                            }
                            None => {
                                let slot = match name {
                                    "partition" | "queue" => &mut c.queue,
                                    "account" => &mut c.account,
                                    "qos" => &mut c.qos,
                                    _ => &mut c.constraint,
                                };
                                *slot = Some(s.to_string());
                            }
                        }
                    }
                }
                "cpus" => {
                    has_cpus = true;
                    if let Some(x) = self.int(&key, v, NODE_TYPE_CPUS_RANGE) {
                        c.cpus = x;
                    }
                }
                "gpus" => {
                    if let Some(x) = self.int(&key, v, NODE_TYPE_GPUS_RANGE) {
                        c.gpus = x;
                    }
                }
                "memory" => {
                    if let Some(x) = self.memory(&key, v) {
                        c.memory_bytes = Some(x);
                    }
                }
                "time" => {
                    if let Some(s) = self.string(&key, v) {
                        match parse_walltime(s) {
                            Some(d) => c.walltime = Some(d),
                            None => self.bad_value(&key, v, WALLTIME_SYNTAX),
                        }
                    }
                }
                "min_workers" => {
                    if let Some(x) = self.int(&key, v, NODE_TYPE_WORKERS_RANGE) {
                        c.min_workers = x;
                        d.min = Some(v.span());
                    }
                }
                "max_workers" => match self.int(&key, v, NODE_TYPE_WORKERS_RANGE) {
                    Some(x) => {
                        c.max_workers = x;
                        d.max = Some(v.span());
                    }
                    None => d.max_bad = true,
                },
                "resources" => {
                    if let Some(t) = self.table_as(&key, v, "a table, like { nvme = 1.0 }") {
                        self.resources(&key, t, &mut c.resources);
                    }
                }
                "labels" => {
                    if let Some(t) = self.table_as(&key, v, "a table, like { zone = \"a\" }") {
                        self.labels(&key, t, &mut c.labels);
                    }
                }
                "extra_directives" => {
                    let any_scheduler = |l: &str| {
                        scheduler::directive_problem(l, None)
                            .map(|why| format!("is not a header line of any scheduler ({why})"))
                    };
                    if let Some(lines) = self.string_list(&key, v, any_scheduler) {
                        c.extra_directives = lines;
                        if let DeValue::Array(items) = v.get_ref() {
                            d.directive_spans = items.iter().map(|i| i.span()).collect();
                        }
                    }
                }
                _ => self.unknown_in("node_types", &d.prefix, k),
            }
        }
        for (given, what) in [(has_name, "name"), (has_cpus, "cpus")] {
            if !given {
                let key = join(&d.prefix, what);
                let msg = format!("{} has no `{what}`, which every node type needs", d.prefix);
                self.push(ProblemKind::MissingKey, &key, entry.clone(), msg);
            }
        }
        d
    }

    fn resources(&mut self, key: &str, t: &DeTable<'_>, out: &mut BTreeMap<String, f64>) {
        for (k, v) in t {
            let name = k.get_ref().as_ref();
            let rkey = join(key, name);
            let bad_name = if name.is_empty() {
                Some("is not a resource name".to_string())
            } else {
                reserved_resource_problem(name)
            };
            if let Some(why) = &bad_name {
                let msg = format!("{key} key {name:?} {why}");
                self.push(ProblemKind::BadValue, &rkey, k.span(), msg);
            }
            if let Some(x) = self.number(&rkey, v) {
                if !(x.is_finite() && x > 0.0) {
                    self.bad_value(&rkey, v, "must be a number above 0");
                } else if bad_name.is_none() {
                    out.insert(name.to_string(), x);
                }
            }
        }
    }

    fn labels(&mut self, key: &str, t: &DeTable<'_>, out: &mut BTreeMap<String, String>) {
        for (k, v) in t {
            let name = k.get_ref().as_ref();
            let lkey = join(key, name);
            let bad_name = label_key_problem(name);
            if let Some(why) = &bad_name {
                let msg = format!("{key} key {name:?} {why}");
                self.push(ProblemKind::BadValue, &lkey, k.span(), msg);
            }
            if let Some(s) = self.string_entry(&lkey, v) {
                if let Some(why) = label_value_problem(s) {
                    self.bad_value(&lkey, v, why);
                } else if bad_name.is_none() {
                    out.insert(name.to_string(), s.to_string());
                }
            }
        }
    }

    /// `node_types[i].memory`: bytes, or a string with a K/M/G/T suffix (binary multiples).
    fn memory(&mut self, key: &str, v: &Val<'_>) -> Option<u64> {
        let parsed = match v.get_ref() {
            DeValue::Integer(i) => match u64::try_from(int_of(i)) {
                Ok(0) | Err(_) => Err(format!(
                    "is out of range: at least 1 byte, at most {} bytes",
                    u64::MAX
                )),
                Ok(x) => Ok(x),
            },
            DeValue::String(_) => {
                let s = self.string(key, v)?;
                memory_of(s)
            }
            other => {
                let expected = "a number of bytes or a string like \"4G\"";
                self.wrong_type(key, v, other, expected);
                return None;
            }
        };
        match parsed {
            Ok(x) => Some(x),
            Err(why) => {
                self.bad_value(key, v, why);
                None
            }
        }
    }

    /// The rules across `[autoscaler]` and the `[[node_types]]` entries; fills in each type's
    /// default `max_workers` and keeps the complete entries in `c.node_types`.
    fn node_type_rules(
        &mut self,
        c: &mut Config,
        seen: &AutoscalerSeen,
        mut drafts: Vec<NodeTypeDraft>,
        no_node_types: bool,
    ) {
        let global = c.autoscaler.max_workers;
        let global_shown = if seen.max_workers.is_some() {
            format!("{global}")
        } else {
            format!("{global}, the default")
        };
        // max_workers defaults to autoscaler.max_workers; min_workers <= max_workers.
        let mut min_too_big = vec![false; drafts.len()];
        for (i, d) in drafts.iter_mut().enumerate() {
            let max_known = if d.max.is_some() {
                true
            } else if !d.max_bad && !seen.max_workers_bad {
                d.cfg.max_workers = global;
                true
            } else {
                false
            };
            let (min, max) = (d.cfg.min_workers, d.cfg.max_workers);
            if let Some(span) = d.min.clone()
                && max_known
                && min > max
            {
                let key = join(&d.prefix, "min_workers");
                let from = if d.max.is_some() {
                    ""
                } else {
                    ", the default: autoscaler.max_workers"
                };
                let shown = self.shown(&span);
                let msg = format!(
                    "{key} = {shown} is more than {}.max_workers ({max}{from})",
                    d.prefix
                );
                self.push(ProblemKind::BadValue, &key, span, msg);
                min_too_big[i] = true;
            }
        }
        // Names are unique.
        let mut first: BTreeMap<&str, &str> = BTreeMap::new();
        for d in &drafts {
            let Some(span) = d.name.clone() else { continue };
            match first.get(d.cfg.name.as_str()) {
                Some(earlier) => {
                    let key = join(&d.prefix, "name");
                    let shown = self.shown(&span);
                    let msg = format!(
                        "{key} = {shown} is already the name of {earlier}; node type names \
                         must be unique"
                    );
                    self.push(ProblemKind::BadValue, &key, span, msg);
                }
                None => {
                    first.insert(&d.cfg.name, &d.prefix);
                }
            }
        }
        // The min_workers of all types together fit in autoscaler.max_workers.
        if !seen.max_workers_bad {
            let mut total: u64 = 0;
            for (d, too_big) in drafts.iter().zip(&min_too_big) {
                let Some(span) = d.min.clone() else { continue };
                if *too_big {
                    continue; // reported above
                }
                total += u64::from(d.cfg.min_workers);
                if total > u64::from(global) {
                    let key = join(&d.prefix, "min_workers");
                    let shown = self.shown(&span);
                    let msg = format!(
                        "{key} = {shown} brings the node types' min_workers to {total}, more \
                         than autoscaler.max_workers ({global_shown})"
                    );
                    self.push(ProblemKind::BadValue, &key, span, msg);
                    break;
                }
            }
        }
        // The autoscaler needs something to submit.
        if c.autoscaler.enabled
            && no_node_types
            && let Some(span) = seen.enabled.clone()
        {
            let msg = "autoscaler.enabled = true needs at least one [[node_types]] entry to \
                       submit"
                .to_string();
            self.push(ProblemKind::BadValue, "autoscaler.enabled", span, msg);
        }
        c.node_types = drafts
            .into_iter()
            .filter(|d| d.name.is_some() && d.cfg.cpus > 0)
            .map(|d| d.cfg)
            .collect();
    }

    // ---- typed accessors: each reports its own problem and returns None on a bad value ----

    fn table<'a, 'i>(&mut self, key: &str, v: &'a Val<'i>) -> Option<&'a DeTable<'i>> {
        self.table_as(key, v, &format!("a table ([{key}])"))
    }

    fn table_as<'a, 'i>(
        &mut self,
        key: &str,
        v: &'a Val<'i>,
        expected: &str,
    ) -> Option<&'a DeTable<'i>> {
        match v.get_ref() {
            DeValue::Table(t) => Some(t),
            other => {
                self.wrong_type(key, v, other, expected);
                None
            }
        }
    }

    fn array<'a, 'i>(
        &mut self,
        key: &str,
        v: &'a Val<'i>,
        expected: &str,
    ) -> Option<&'a DeArray<'i>> {
        match v.get_ref() {
            DeValue::Array(a) => Some(a),
            other => {
                self.wrong_type(key, v, other, expected);
                None
            }
        }
    }

    /// A string value in a table of strings (`ray.env`, `labels`): a number or boolean gets a
    /// hint to quote it.
    fn string_entry<'a>(&mut self, key: &str, v: &'a Val<'_>) -> Option<&'a str> {
        match v.get_ref() {
            DeValue::String(_) => self.string(key, v),
            other => {
                let shown = self.shown(&v.span());
                let hint = match other {
                    DeValue::Integer(_) | DeValue::Float(_) | DeValue::Boolean(_) => {
                        format!(" (quote it: \"{shown}\")")
                    }
                    _ => String::new(),
                };
                let msg = format!(
                    "{key} = {shown} must be a string, not {}{hint}",
                    a_type(other)
                );
                self.push(ProblemKind::WrongType, key, v.span(), msg);
                None
            }
        }
    }

    fn boolean(&mut self, key: &str, v: &Val<'_>) -> Option<bool> {
        match v.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            other => {
                self.wrong_type(key, v, other, "true or false");
                None
            }
        }
    }

    fn string<'a>(&mut self, key: &str, v: &'a Val<'_>) -> Option<&'a str> {
        match v.get_ref() {
            DeValue::String(s) if s.contains('\0') => {
                self.bad_value(key, v, "must not contain a NUL character");
                None
            }
            DeValue::String(s) => Some(s.as_ref()),
            other => {
                self.wrong_type(key, v, other, "a string");
                None
            }
        }
    }

    fn choice<T: Copy>(
        &mut self,
        key: &str,
        v: &Val<'_>,
        all: &[T],
        name: fn(T) -> &'static str,
    ) -> Option<T> {
        let s = self.string(key, v)?;
        if let Some(x) = all.iter().copied().find(|x| name(*x) == s) {
            return Some(x);
        }
        let names: Vec<&str> = all.iter().map(|x| name(*x)).collect();
        self.bad_value(key, v, format!("is not one of {}", names.join(", ")));
        None
    }

    /// Any TOML integer, as i128 (a type error otherwise). A literal too large for i128
    /// saturates, so the caller's range check reports it.
    fn int_value(&mut self, key: &str, v: &Val<'_>) -> Option<i128> {
        match v.get_ref() {
            DeValue::Integer(i) => Some(int_of(i)),
            other => {
                self.wrong_type(key, v, other, "an integer");
                None
            }
        }
    }

    fn int<T>(&mut self, key: &str, v: &Val<'_>, range: RangeInclusive<T>) -> Option<T>
    where
        T: Copy + Display + Into<i128> + TryFrom<i128>,
    {
        let x = self.int_value(key, v)?;
        let (lo, hi) = ((*range.start()).into(), (*range.end()).into());
        if x < lo || x > hi {
            self.out_of_range(key, v, &range);
            return None;
        }
        match T::try_from(x) {
            Ok(x) => Some(x),
            Err(_) => {
                self.out_of_range(key, v, &range);
                None
            }
        }
    }

    /// Any number; integers are accepted too (`1` for `1.0`). NaN for a float literal that
    /// does not parse, so range checks reject it.
    fn number(&mut self, key: &str, v: &Val<'_>) -> Option<f64> {
        match v.get_ref() {
            DeValue::Float(f) => Some(f.as_str().parse::<f64>().unwrap_or(f64::NAN)),
            // Precision loss for huge integers is harmless: they are out of range anyway.
            DeValue::Integer(i) => Some(int_of(i) as f64),
            other => {
                self.wrong_type(key, v, other, "a number");
                None
            }
        }
    }

    /// A float; integers are accepted too (`1` for `1.0`).
    fn float(&mut self, key: &str, v: &Val<'_>, range: RangeInclusive<f64>) -> Option<f64> {
        let x = self.number(key, v)?;
        if range.contains(&x) {
            Some(x)
        } else {
            self.out_of_range(key, v, &range);
            None
        }
    }

    // ---- problems ----

    fn push(&mut self, kind: ProblemKind, key: &str, span: Range<usize>, message: String) {
        self.problems.push(ConfigProblem::at(
            self.src,
            kind,
            Some(key.to_string()),
            Some(span),
            message,
        ));
    }

    fn bad_value(&mut self, key: &str, v: &Val<'_>, why: impl Display) {
        let shown = self.shown(&v.span());
        self.push(
            ProblemKind::BadValue,
            key,
            v.span(),
            format!("{key} = {shown} {why}"),
        );
    }

    fn out_of_range<T: Display>(&mut self, key: &str, v: &Val<'_>, range: &RangeInclusive<T>) {
        let why = format!("is out of range {}..={}", range.start(), range.end());
        self.bad_value(key, v, why);
    }

    fn wrong_type(&mut self, key: &str, v: &Val<'_>, found: &DeValue<'_>, expected: &str) {
        let shown = self.shown(&v.span());
        let msg = format!("{key} = {shown} must be {expected}, not {}", a_type(found));
        self.push(ProblemKind::WrongType, key, v.span(), msg);
    }

    fn unknown(&mut self, section: &str, k: &Key<'_>) {
        self.unknown_in(section, section, k);
    }

    /// An unknown key in `section` of the schema, whose keys are shown under `shown_as`
    /// (`node_types[1]` for an entry of the array of tables `node_types`).
    fn unknown_in(&mut self, section: &str, shown_as: &str, k: &Key<'_>) {
        let name = k.get_ref().as_ref();
        let path = join(shown_as, name);
        let sections = sections();
        let known = sections
            .iter()
            .find(|(s, _)| *s == section)
            .map_or(&[][..], |(_, keys)| keys.as_slice());
        let mut msg = format!("unknown key `{path}`");
        if let Some(s) = suggest(section, shown_as, name) {
            msg.push_str(&format!(", did you mean {s}?"));
        }
        let place = if section.is_empty() {
            "known top-level keys".to_string()
        } else if ARRAY_SECTIONS.contains(&section) {
            format!("known keys in [[{section}]]")
        } else {
            format!("known keys in [{section}]")
        };
        msg.push_str(&format!(" ({place}: {})", known.join(", ")));
        self.push(ProblemKind::UnknownKey, &path, k.span(), msg);
    }

    /// The source text of a value, on one line and cut short when long.
    fn shown(&self, span: &Range<usize>) -> String {
        let raw = self.src.get(span.clone()).unwrap_or("");
        let one_line = raw.split_whitespace().collect::<Vec<_>>().join(" ");
        if one_line.is_empty() {
            return "(empty)".to_string();
        }
        const MAX: usize = 60;
        if one_line.chars().count() > MAX {
            let cut: String = one_line.chars().take(MAX - 3).collect();
            format!("{cut}...")
        } else {
            one_line
        }
    }
}

/// The value of a TOML integer; one too large for i128 saturates (keeping its sign).
fn int_of(i: &DeInteger<'_>) -> i128 {
    i128::from_str_radix(i.as_str(), i.radix()).unwrap_or(if i.as_str().starts_with('-') {
        i128::MIN
    } else {
        i128::MAX
    })
}

fn a_type(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a datetime",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

/// `section.key`, with the key quoted when it is not a bare TOML key.
fn join(section: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let key = if bare {
        key.to_string()
    } else {
        format!("{key:?}")
    };
    if section.is_empty() {
        key
    } else {
        format!("{section}.{key}")
    }
}

/// Why `name` is not a good `cluster.name`, if it is not.
fn cluster_name_problem(name: &str) -> Option<String> {
    if name.is_empty() || name.len() > CLUSTER_NAME_MAX_BYTES {
        return Some(format!(
            "must be 1 to {CLUSTER_NAME_MAX_BYTES} characters long"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Some(format!("has {c:?}; only A-Z a-z 0-9 _ . - are allowed"));
    }
    if name.starts_with('.') || name.starts_with('-') {
        return Some("must not start with `.` or `-`".to_string());
    }
    None
}

/// Why `name` is not a possible Linux network interface name, if it is not.
fn interface_problem(name: &str) -> Option<String> {
    if name.is_empty() || name.len() > INTERFACE_MAX_BYTES {
        return Some(format!(
            "must be 1 to {INTERFACE_MAX_BYTES} bytes long (a Linux interface name)"
        ));
    }
    if name == "." || name == ".." || name.contains('/') || name.chars().any(char::is_whitespace) {
        return Some("is not a Linux interface name (no `/`, no spaces)".to_string());
    }
    None
}

/// What a bad walltime is told.
pub const WALLTIME_SYNTAX: &str = "is not a walltime above zero: minutes, MM:SS, HH:MM:SS, D-HH, \
                                   D-HH:MM, D-HH:MM:SS, or with units like 90m, 2h, 1d 12h";

/// Why `name` is not a good node type name, if it is not.
fn node_type_name_problem(name: &str) -> Option<String> {
    if name.is_empty() || name.len() > NODE_TYPE_NAME_MAX_BYTES {
        return Some(format!(
            "must be 1 to {NODE_TYPE_NAME_MAX_BYTES} characters long"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-')))
    {
        return Some(format!("has {c:?}; only A-Z a-z 0-9 _ - are allowed"));
    }
    if name == HEAD_NODE_TYPE_NAME {
        return Some(format!(
            "is reserved: `{HEAD_NODE_TYPE_NAME}` is the head node's type"
        ));
    }
    None
}

/// Why `word` is not a good queue, account, QOS or constraint, if it is not: it goes into a
/// job script's header line, so it must be one word.
fn scheduler_word_problem(word: &str) -> Option<String> {
    if word.is_empty() {
        return Some("must not be empty (leave the key out for the scheduler's default)".into());
    }
    if word.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("must be one word, without spaces or control characters".into());
    }
    None
}

/// A memory size: a whole number with a `K`, `M`, `G` or `T` suffix (1K = 1024), in bytes.
pub(super) fn memory_of(s: &str) -> Result<u64, String> {
    let syntax = "is not a memory size: a whole number with a K, M, G or T suffix (1K = 1024), \
                  like \"4G\"";
    let Some(last) = s.chars().last() else {
        return Err(syntax.to_string());
    };
    let shift = match last.to_ascii_uppercase() {
        'K' => 10,
        'M' => 20,
        'G' => 30,
        'T' => 40,
        c if c.is_ascii_digit() && s.bytes().all(|b| b.is_ascii_digit()) => {
            return Err(
                "has no unit: write a number of bytes without quotes, or add K, M, G or T \
                 (1K = 1024)"
                    .to_string(),
            );
        }
        _ => return Err(syntax.to_string()),
    };
    let digits = &s[..s.len() - 1];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(syntax.to_string());
    }
    let too_big = || format!("is too large: more than {} bytes", u64::MAX);
    let n: u64 = digits.parse().map_err(|_| too_big())?;
    if n == 0 {
        return Err("must be more than 0".to_string());
    }
    n.checked_mul(1u64 << shift).ok_or_else(too_big)
}

/// Why `name` may not be a custom resource of a node type, if it may not.
fn reserved_resource_problem(name: &str) -> Option<String> {
    let how = match name {
        "CPU" => "set it with `cpus`",
        "GPU" => "set it with `gpus`",
        "memory" => "Ray takes it from the node's memory",
        "object_store_memory" => "Ray takes it from ray.object_store_fraction",
        _ => return None,
    };
    Some(format!("is reserved ({how})"))
}

/// Ray's label name (and value) syntax: at most 63 of `A-Z a-z 0-9 - _ .`, beginning and
/// ending with a letter or digit.
fn label_token(s: &[u8]) -> bool {
    let edge = |b: &u8| b.is_ascii_alphanumeric();
    !s.is_empty()
        && s.len() <= LABEL_MAX_BYTES
        && s.first().is_some_and(edge)
        && s.last().is_some_and(edge)
        && s.iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Ray's label key prefix syntax (the part before `/`): pieces separated by `.`, each empty or
/// a [`label_token`], at most 253 bytes.
fn label_prefix(p: &[u8]) -> bool {
    if p.len() > LABEL_PREFIX_MAX_BYTES {
        return false;
    }
    // start[i]: a piece may begin at byte i.
    let mut start = vec![false; p.len() + 1];
    start[0] = true;
    for i in 0..=p.len() {
        if !start[i] {
            continue;
        }
        for j in i..=p.len() {
            if j == i || label_token(&p[i..j]) {
                if j == p.len() {
                    return true;
                }
                if p[j] == b'.' {
                    start[j + 1] = true;
                }
            }
        }
    }
    false
}

/// Why `key` is not a Ray node label key (`[prefix/]name`), if it is not.
fn label_key_problem(key: &str) -> Option<String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix
        && !label_prefix(p.as_bytes())
    {
        return Some(format!(
            "is not a Ray label key: its prefix {p:?} must be DNS labels separated by `.`, at \
             most {LABEL_PREFIX_MAX_BYTES} bytes"
        ));
    }
    if !label_token(name.as_bytes()) {
        return Some(format!(
            "is not a Ray label key: its name {name:?} must be 1 to {LABEL_MAX_BYTES} of \
             A-Z a-z 0-9 - _ ., beginning and ending with a letter or digit"
        ));
    }
    None
}

/// Why `value` is not a Ray node label value, if it is not (empty is allowed).
fn label_value_problem(value: &str) -> Option<String> {
    if value.is_empty() || label_token(value.as_bytes()) {
        return None;
    }
    Some(format!(
        "is not a Ray label value: at most {LABEL_MAX_BYTES} of A-Z a-z 0-9 - _ ., beginning \
         and ending with a letter or digit"
    ))
}

/// A known key close to `key`, quoted for a message: the same key in another section (so
/// `min_workers` in [autoscaler] points at [[node_types]], not at `max_workers`), else a near
/// miss in the same section (shown under `shown_as`).
fn suggest(section: &str, shown_as: &str, key: &str) -> Option<String> {
    let lower = key.to_ascii_lowercase();
    let sections = sections();
    let known = &sections.iter().find(|(s, _)| *s == section)?.1;
    if !known.contains(&lower.as_str()) {
        let elsewhere = sections
            .iter()
            .filter(|(s, _)| *s != section)
            .find(|(_, keys)| keys.contains(&lower.as_str()));
        if let Some((s, _)) = elsewhere {
            return Some(if ARRAY_SECTIONS.contains(s) {
                format!("`{}` in a [[{s}]] entry", join("", &lower))
            } else {
                format!("`{}`", join(s, &lower))
            });
        }
    }
    let limit = if key.chars().count() <= 4 { 1 } else { 2 };
    known
        .iter()
        .map(|k| (edit_distance(&lower, k), *k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| format!("`{}`", join(shown_as, k)))
}

/// Optimal string alignment distance (Levenshtein plus adjacent transpositions).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn config_edit_distance() {
        assert_eq!(edit_distance("bni", "bin"), 1);
        assert_eq!(edit_distance("grace", "grace_s"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn config_join_quotes_odd_keys() {
        assert_eq!(join("", "ray"), "ray");
        assert_eq!(join("ray.env", "A B"), "ray.env.\"A B\"");
    }
}
