//! The schema walk: TOML text → [`Config`], collecting every problem with its position.
//!
//! The document is parsed into toml's spanned tree (`DeTable`) and walked by hand, so one
//! mistake never hides the next, and each problem points at the key or value it is about.

use std::fmt::Display;
use std::ops::{Range, RangeInclusive};
use std::path::PathBuf;

use toml::Spanned;
use toml::de::{DeArray, DeInteger, DeString, DeTable, DeValue};

use super::error::{ConfigError, ConfigProblem, ProblemKind};
use super::*;

type Key<'i> = Spanned<DeString<'i>>;
type Val<'i> = Spanned<DeValue<'i>>;

const TOP_KEYS: &[&str] = &[
    "scheduler",
    "auth",
    "ready_timeout_s",
    "cluster",
    "ray",
    "network",
    "teardown",
    "slurm",
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
const SLURM_KEYS: &[&str] = &["srun_args", "extra_directives"];

/// Every table of the schema with its keys ("" is the top level).
pub(crate) const SECTIONS: &[(&str, &[&str])] = &[
    ("", TOP_KEYS),
    ("cluster", CLUSTER_KEYS),
    ("ray", RAY_KEYS),
    ("network", NETWORK_KEYS),
    ("teardown", TEARDOWN_KEYS),
    ("slurm", SLURM_KEYS),
];

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

impl Walker<'_> {
    fn document(&mut self, doc: &DeTable<'_>) -> Config {
        let mut c = Config::default();
        for (k, v) in doc {
            match k.get_ref().as_ref() {
                "scheduler" => {
                    if let Some(x) = self.choice(
                        "scheduler",
                        v,
                        SchedulerChoice::ALL,
                        SchedulerChoice::as_str,
                    ) {
                        c.scheduler = x;
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
                "slurm" => {
                    if let Some(t) = self.table("slurm", v) {
                        self.slurm(t, &mut c.slurm);
                    }
                }
                _ => self.unknown("", k),
            }
        }
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
            match v.get_ref() {
                DeValue::String(_) => {
                    if let Some(s) = self.string(&key, v)
                        && good_name
                    {
                        env.insert(name.to_string(), s.to_string());
                    }
                }
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
                    self.push(ProblemKind::WrongType, &key, v.span(), msg);
                }
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
        check: impl Fn(&str) -> Option<&'static str>,
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

    fn slurm(&mut self, t: &DeTable<'_>, c: &mut SlurmConfig) {
        for (k, v) in t {
            match k.get_ref().as_ref() {
                "srun_args" => {
                    if let Some(args) = self.string_list("slurm.srun_args", v, |_| None) {
                        c.srun_args = args;
                    }
                }
                "extra_directives" => {
                    let check = |s: &str| {
                        (!s.starts_with("#SBATCH ") || s.contains('\n'))
                            .then_some("must be one line starting with `#SBATCH `")
                    };
                    if let Some(lines) = self.string_list("slurm.extra_directives", v, check) {
                        c.extra_directives = lines;
                    }
                }
                _ => self.unknown("slurm", k),
            }
        }
    }

    // ---- typed accessors: each reports its own problem and returns None on a bad value ----

    fn table<'a, 'i>(&mut self, key: &str, v: &'a Val<'i>) -> Option<&'a DeTable<'i>> {
        match v.get_ref() {
            DeValue::Table(t) => Some(t),
            other => {
                let expected = format!("a table ([{key}])");
                self.wrong_type(key, v, other, &expected);
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

    /// A float; integers are accepted too (`1` for `1.0`).
    fn float(&mut self, key: &str, v: &Val<'_>, range: RangeInclusive<f64>) -> Option<f64> {
        let x = match v.get_ref() {
            DeValue::Float(f) => f.as_str().parse::<f64>().ok(),
            // Precision loss for huge integers is harmless: they are out of range anyway.
            DeValue::Integer(i) => Some(int_of(i) as f64),
            other => {
                self.wrong_type(key, v, other, "a number");
                return None;
            }
        };
        match x {
            Some(x) if range.contains(&x) => Some(x),
            _ => {
                self.out_of_range(key, v, &range);
                None
            }
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
        let name = k.get_ref().as_ref();
        let path = join(section, name);
        let known = SECTIONS
            .iter()
            .find(|(s, _)| *s == section)
            .map_or(&[][..], |(_, keys)| *keys);
        let mut msg = format!("unknown key `{path}`");
        if let Some(s) = suggest(section, name) {
            msg.push_str(&format!(", did you mean `{s}`?"));
        }
        let place = if section.is_empty() {
            "known top-level keys".to_string()
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

/// A known key close to `key`: a near miss in the same section, else the same key in another.
fn suggest(section: &str, key: &str) -> Option<String> {
    let lower = key.to_ascii_lowercase();
    let known = SECTIONS.iter().find(|(s, _)| *s == section)?.1;
    let limit = if key.chars().count() <= 4 { 1 } else { 2 };
    let near = known
        .iter()
        .map(|k| (edit_distance(&lower, k), *k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d);
    if let Some((_, k)) = near {
        return Some(join(section, k));
    }
    SECTIONS
        .iter()
        .filter(|(s, _)| *s != section)
        .find(|(_, keys)| keys.contains(&lower.as_str()))
        .map(|(s, _)| join(s, &lower))
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
