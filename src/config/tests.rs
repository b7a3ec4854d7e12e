use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::*;

const FULL: &str = include_str!("../../tests/fixtures/config/full.toml");
const THREE: &str = include_str!("../../tests/fixtures/config/three_mistakes.toml");
const SYNTAX: &str = include_str!("../../tests/fixtures/config/syntax_error.toml");
const EMPTY: &str = include_str!("../../tests/fixtures/config/empty.toml");

/// full.toml with every scheduler's section: the file's own, and for each scheduler it leaves
/// out, the example its adapter declares (each adapter owns its section).
fn full() -> String {
    let file: toml::Table = toml::from_str(FULL).unwrap();
    let mut text = FULL.to_string();
    for schema in scheduler::ADAPTERS.iter().filter_map(|a| a.settings) {
        if !file.contains_key(schema.section) {
            text.push('\n');
            text.push_str(schema.example);
        }
    }
    text
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/config")
        .join(name)
}

/// Every problem in `text` as ("line:col", kind, message).
fn problems(text: &str) -> Vec<(String, ProblemKind, String)> {
    match Config::parse(text, "t.toml") {
        Ok(c) => panic!("expected problems in {text:?}, got {c:?}"),
        Err(e) => {
            assert_eq!(e.origin, "t.toml");
            assert!(!e.problems.is_empty());
            e.problems
                .iter()
                .map(|p| {
                    let loc = p.location.expect("every parse problem has a position");
                    (loc.to_string(), p.kind, p.message.clone())
                })
                .collect()
        }
    }
}

/// The one problem in `text`.
/// A scheduler's own section, as its adapter declares it (any one will do).
fn scheduler_section() -> &'static scheduler::SettingsSchema {
    scheduler::ADAPTERS
        .iter()
        .find_map(|a| a.settings)
        .expect("a scheduler with a config section")
}

/// The header line full.toml gives its first node type.
fn full_toml_directive() -> String {
    let file: toml::Table = toml::from_str(&full()).unwrap();
    file["node_types"][0]["extra_directives"][0]
        .as_str()
        .unwrap()
        .to_string()
}

fn problem(text: &str) -> (String, ProblemKind, String) {
    let mut all = problems(text);
    assert_eq!(
        all.len(),
        1,
        "expected one problem in {text:?}, got {all:#?}"
    );
    all.remove(0)
}

fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> + use<> {
    let map: BTreeMap<String, OsString> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), OsString::from(v)))
        .collect();
    move |k| map.get(k).cloned()
}

#[test]
fn config_defaults() {
    let c = Config::default();
    assert_eq!(c.scheduler, "auto");
    assert_eq!(c.scheduler_timeout_s, 30);
    assert_eq!(c.auth, AuthMode::Token);
    assert_eq!(c.ready_timeout_s, 120);
    assert_eq!(c.cluster.name, None);
    assert_eq!(c.cluster.temp_root, PathBuf::from("/tmp"));
    assert_eq!(c.ray.bin, None);
    assert_eq!(c.ray.head_num_cpus, None);
    assert_eq!(c.ray.object_store_fraction, 0.3);
    assert_eq!(c.ray.worker_ports, 100);
    assert_eq!(
        c.ray.port_range,
        PortRange {
            lo: 20_000,
            hi: 30_000
        }
    );
    assert!(c.ray.env.is_empty());
    assert_eq!(c.network.interface, None);
    assert_eq!(c.teardown.grace_s, 10);
    assert!(c.scheduler_settings.is_empty());
    assert_eq!(
        c.autoscaler,
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
    );
    assert!(c.node_types.is_empty());
    assert!(c.warnings().is_empty());

    assert_eq!(Config::parse("", "t.toml").unwrap(), c);
    assert_eq!(Config::parse(EMPTY, "t.toml").unwrap(), c);
    // Empty tables are fine too.
    let empty_tables = "node_types = []\n[cluster]\n[ray]\n[ray.env]\n[network]\n[teardown]\n\
                        [autoscaler]\n";
    assert_eq!(Config::parse(empty_tables, "t.toml").unwrap(), c);
    // And a scheduler's own section, empty, is kept as an empty table.
    let section = scheduler_section().section;
    let with_section = Config::parse(&format!("[{section}]\n"), "t.toml").unwrap();
    assert_eq!(
        with_section.scheduler_settings[section],
        scheduler::Settings::new()
    );
}

#[test]
fn config_node_type_defaults() {
    // Only the required keys: everything else is its default, and max_workers is
    // autoscaler.max_workers wherever [autoscaler] is in the file.
    for text in [
        "[[node_types]]\nname = \"cpu\"\ncpus = 4\n[autoscaler]\nmax_workers = 7\n",
        "[autoscaler]\nmax_workers = 7\n[[node_types]]\nname = \"cpu\"\ncpus = 4\n",
        "node_types = [{ name = \"cpu\", cpus = 4 }]\nautoscaler.max_workers = 7\n",
    ] {
        let c = Config::parse(text, "t.toml").unwrap();
        assert_eq!(
            c.node_types,
            [NodeTypeConfig {
                name: "cpu".into(),
                queue: None,
                account: None,
                qos: None,
                constraint: None,
                cpus: 4,
                gpus: 0,
                memory_bytes: None,
                walltime: None,
                min_workers: 0,
                max_workers: 7,
                resources: BTreeMap::new(),
                labels: BTreeMap::new(),
                extra_directives: Vec::new(),
            }],
            "{text}"
        );
        assert_eq!(c.node_type("cpu").map(|t| t.cpus), Some(4));
        assert!(c.node_type("gpu").is_none());
        // Node types without `enabled = true` are allowed, with a warning.
        assert_eq!(c.warnings().len(), 1, "{:?}", c.warnings());
        assert!(c.warnings()[0].contains("autoscaler.enabled = false"));
    }
    let c = Config::parse("[[node_types]]\nname = \"cpu\"\ncpus = 1\n", "t.toml").unwrap();
    assert_eq!(c.node_types[0].max_workers, 16);
}

#[test]
fn config_node_type_memory_and_time() {
    let node_type = |line: &str| {
        let text = format!("[[node_types]]\nname = \"a\"\ncpus = 1\n{line}\n");
        Config::parse(&text, "t.toml").map(|c| c.node_types[0].clone())
    };
    for (line, bytes) in [
        ("memory = 1", 1),
        ("memory = 4096", 4096),
        ("memory = \"1K\"", 1 << 10),
        ("memory = \"1k\"", 1 << 10),
        ("memory = \"512M\"", 512 << 20),
        ("memory = \"4G\"", 4 << 30),
        ("memory = \"2T\"", 2 << 40),
        ("memory = \"16777215T\"", 16_777_215 << 40),
    ] {
        assert_eq!(node_type(line).unwrap().memory_bytes, Some(bytes), "{line}");
    }
    for (time, secs) in [
        ("30", 30 * 60),
        ("90:30", 90 * 60 + 30),
        ("1:00:00", 3600),
        ("100:59:59", 100 * 3600 + 59 * 60 + 59),
        ("2-12", 2 * 86_400 + 12 * 3600),
        ("2-12:30", 2 * 86_400 + 12 * 3600 + 30 * 60),
        ("2-12:30:05", 2 * 86_400 + 12 * 3600 + 30 * 60 + 5),
        ("0-0:0:1", 1),
    ] {
        let t = node_type(&format!("time = {time:?}")).unwrap();
        assert_eq!(t.walltime, Some(Duration::from_secs(secs)), "{time}");
        assert_eq!(
            parse_walltime(time),
            Some(Duration::from_secs(secs)),
            "{time}"
        );
    }
    for (time, secs) in [
        ("90m", 90 * 60),
        ("2h", 7200),
        ("1d 12h", 36 * 3600),
        ("1h30m", 5400),
    ] {
        assert_eq!(
            parse_walltime(time),
            Some(Duration::from_secs(secs)),
            "{time}"
        );
    }
    for (secs, shown) in [(90, "00:01:30"), (36 * 3600, "1-12:00:00")] {
        assert_eq!(format_walltime(Duration::from_secs(secs)), shown);
    }
    for bad in [
        "",
        "0",
        "0:00",
        "00:00:00",
        "1:60",
        "1:00:60",
        "1:60:00",
        "1-24",
        "1-0:60",
        "-1",
        "1-",
        "1--2",
        "1:2:3:4",
        "1-2:3:4:5",
        "1 parsec",
        "h",
        "1.5",
        "+1",
        "99999999999999999999",
        "213503982334602-0",
    ] {
        assert_eq!(parse_walltime(bad), None, "{bad:?}");
        assert!(node_type(&format!("time = {bad:?}")).is_err(), "{bad:?}");
    }
}

#[test]
fn config_autoscaler_durations() {
    let a = AutoscalerConfig::default();
    assert_eq!(a.idle_timeout(), Duration::from_secs(300));
    assert_eq!(a.poll_interval(), Duration::from_secs(1));
    assert_eq!(a.scheduler_poll_interval(), Duration::from_secs(5));
    assert_eq!(a.backoff_initial(), Duration::from_secs(10));
    assert_eq!(a.backoff_max(), Duration::from_secs(600));
    let a = AutoscalerConfig {
        poll_interval_s: 0.1,
        backoff_initial_s: f64::NAN,
        backoff_max_s: f64::INFINITY,
        scheduler_poll_interval_s: -1.0,
        ..a
    };
    assert_eq!(a.poll_interval(), Duration::from_millis(100));
    assert_eq!(a.backoff_initial(), Duration::ZERO);
    assert_eq!(a.backoff_max(), Duration::MAX);
    assert_eq!(a.scheduler_poll_interval(), Duration::ZERO);
}

#[test]
fn config_every_key_parses() {
    let c = Config::parse(&full(), "full.toml").unwrap();
    let expected = Config {
        scheduler: "local".into(),
        auth: AuthMode::None,
        ready_timeout_s: 600,
        scheduler_timeout_s: 45,
        cluster: ClusterConfig {
            name: Some("exp-42.v2".into()),
            temp_root: "/scratch/tmp".into(),
        },
        ray: RayConfig {
            bin: Some("/opt/venv/bin/ray".into()),
            head_num_cpus: Some(0),
            object_store_fraction: 0.5,
            worker_ports: 200,
            port_range: PortRange {
                lo: 40_000,
                hi: 45_000,
            },
            env: [("OMP_NUM_THREADS", "1"), ("RAY_DEDUP_LOGS", "0")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        },
        network: NetworkConfig {
            interface: Some("ib0".into()),
        },
        teardown: TeardownConfig { grace_s: 30 },
        scheduler_settings: BTreeMap::new(),
        autoscaler: AutoscalerConfig {
            enabled: true,
            max_workers: 12,
            idle_timeout_s: 120,
            upscaling_speed: 2.5,
            poll_interval_s: 0.5,
            scheduler_poll_interval_s: 10.0,
            max_pending_jobs: 8,
            backoff_initial_s: 5.0,
            backoff_max_s: 300.0,
            max_consecutive_failures: 3,
        },
        node_types: vec![
            NodeTypeConfig {
                name: "cpu".into(),
                queue: Some("debug".into()),
                account: Some("proj1".into()),
                qos: Some("normal".into()),
                constraint: Some("skylake".into()),
                cpus: 2,
                gpus: 0,
                memory_bytes: Some(4 << 30),
                walltime: Some(Duration::from_secs(3600)),
                min_workers: 1,
                max_workers: 4,
                resources: [("nvme", 1.0), ("scratch", 2.0)]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
                labels: [("zone", "a"), ("example.com/rack", "r12")]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                extra_directives: vec![full_toml_directive()],
            },
            NodeTypeConfig {
                name: "gpu_a100".into(),
                queue: Some("gpu".into()),
                account: None,
                qos: None,
                constraint: None,
                cpus: 16,
                gpus: 4,
                memory_bytes: Some(64 << 30),
                walltime: Some(Duration::from_secs(2 * 86_400 + 12 * 3600)),
                min_workers: 0,
                max_workers: 12,
                resources: BTreeMap::new(),
                labels: BTreeMap::new(),
                extra_directives: Vec::new(),
            },
        ],
    };
    // Each scheduler section in the file, kept as the adapter declared it.
    let file: toml::Table = toml::from_str(&full()).unwrap();
    let sections: BTreeMap<String, scheduler::Settings> = scheduler::ADAPTERS
        .iter()
        .filter_map(|a| a.settings)
        .map(|s| {
            let table = file[s.section].as_table().unwrap().clone();
            (s.section.to_string(), table)
        })
        .collect();
    assert!(!sections.is_empty());
    let expected = Config {
        scheduler_settings: sections,
        ..expected
    };
    assert_eq!(c, expected);
    assert_eq!(c.warnings().len(), 1, "auth = none warns");
}

#[test]
fn config_full_fixture_covers_every_key() {
    // Keeps the fixture (and with it the test above) in step with the schema.
    let full = full();
    let doc = toml::de::DeTable::parse(&full).unwrap();
    for (section, keys) in parse::sections() {
        let tables = if section.is_empty() {
            vec![doc.get_ref()]
        } else if parse::ARRAY_SECTIONS.contains(&section) {
            let entries = doc
                .get_ref()
                .get(section)
                .and_then(|v| v.get_ref().as_array())
                .unwrap_or_else(|| panic!("full.toml lacks [[{section}]]"));
            entries
                .iter()
                .map(|e| e.get_ref().as_table().unwrap())
                .collect()
        } else {
            vec![
                doc.get_ref()
                    .get(section)
                    .and_then(|v| v.get_ref().as_table())
                    .unwrap_or_else(|| panic!("full.toml lacks [{section}]")),
            ]
        };
        for key in keys {
            assert!(
                tables.iter().any(|t| t.get(key).is_some()),
                "full.toml lacks {section}.{key}"
            );
        }
    }
}

#[test]
fn config_effective_toml_round_trips() {
    for c in [
        Config::default(),
        Config::parse(&full(), "full.toml").unwrap(),
    ] {
        let text = c.to_toml().unwrap();
        assert_eq!(Config::parse(&text, "rendered").unwrap(), c, "{text}");
    }
}

#[test]
fn config_number_forms() {
    let c = Config::parse(
        "ready_timeout_s = 1_000\n[ray]\nworker_ports = 0x64\nobject_store_fraction = 5e-1\n",
        "t.toml",
    )
    .unwrap();
    assert_eq!(c.ready_timeout_s, 1000);
    assert_eq!(c.ray.worker_ports, 100);
    assert_eq!(c.ray.object_store_fraction, 0.5);
    // Dotted keys and inline tables work like table headers.
    let c = Config::parse("ray.bin = \"/r\"\nteardown = { grace_s = 5 }\n", "t.toml").unwrap();
    assert_eq!(c.ray.bin, Some(PathBuf::from("/r")));
    assert_eq!(c.teardown.grace_s, 5);
}

#[test]
fn config_each_rule_reports_its_position() {
    use ProblemKind::{BadValue, MissingKey, WrongType};
    // (text, "line:col", kind, a piece of the message)
    let cases: &[(&str, &str, ProblemKind, &str)] = &[
        (
            "scheduler = \"pbs\"",
            "1:13",
            BadValue,
            "scheduler = \"pbs\" is not one of auto, ",
        ),
        (
            "auth = \"kerberos\"",
            "1:8",
            BadValue,
            "auth = \"kerberos\" is not one of token, none",
        ),
        (
            "ready_timeout_s = 0",
            "1:19",
            BadValue,
            "ready_timeout_s = 0 is out of range 1..=86400",
        ),
        (
            "\nready_timeout_s = 86401",
            "2:19",
            BadValue,
            "out of range 1..=86400",
        ),
        (
            "ready_timeout_s = 123456789012345678901234567890123456789012",
            "1:19",
            BadValue,
            "out of range",
        ),
        (
            "[cluster]\nname = \"\"",
            "2:8",
            BadValue,
            "must be 1 to 64 characters long",
        ),
        (
            "[cluster]\nname = \"a b\"",
            "2:8",
            BadValue,
            "has ' '; only A-Z a-z 0-9 _ . - are allowed",
        ),
        (
            "[cluster]\nname = \"..\"",
            "2:8",
            BadValue,
            "must not start with `.` or `-`",
        ),
        (
            "[cluster]\nname = \"-x\"",
            "2:8",
            BadValue,
            "must not start with `.` or `-`",
        ),
        ("[cluster]\n  name = 'ä'", "2:10", BadValue, "has 'ä'"),
        (
            "[cluster]\ntemp_root = \"tmp\"",
            "2:13",
            BadValue,
            "must be an absolute path",
        ),
        (
            "[cluster]\ntemp_root = \"/aaaaaaaaaaaaaaaaaaaaaaaaaa\"",
            "2:13",
            BadValue,
            "is 27 bytes long; at most 26",
        ),
        (
            "[ray]\nbin = \"\"",
            "2:7",
            BadValue,
            "ray.bin = \"\" must not be empty",
        ),
        (
            "[ray]\nhead_num_cpus = -1",
            "2:17",
            BadValue,
            "ray.head_num_cpus = -1 is out of range 0..=",
        ),
        (
            "[ray]\nobject_store_fraction = 0.01",
            "2:25",
            BadValue,
            "ray.object_store_fraction = 0.01 is out of range 0.05..=0.8",
        ),
        (
            "[ray]\nobject_store_fraction = 1",
            "2:25",
            BadValue,
            "ray.object_store_fraction = 1 is out of range",
        ),
        (
            "[ray]\nobject_store_fraction = nan",
            "2:25",
            BadValue,
            "out of range",
        ),
        (
            "[ray]\nobject_store_fraction = -inf",
            "2:25",
            BadValue,
            "out of range",
        ),
        (
            "[ray]\nworker_ports = 15",
            "2:16",
            BadValue,
            "ray.worker_ports = 15 is out of range 16..=10000",
        ),
        (
            "[ray]\nworker_ports = 10001",
            "2:16",
            BadValue,
            "out of range 16..=10000",
        ),
        (
            "[ray]\nport_range = [20000, 30000, 40000]",
            "2:14",
            BadValue,
            "must be [lo, hi] (two ports), not 3 values",
        ),
        (
            "[ray]\nport_range = [1024, 30000]",
            "2:15",
            BadValue,
            "ray.port_range[0] = 1024 (lo) must be above 1024",
        ),
        (
            "[ray]\nport_range = [20000, 65536]",
            "2:22",
            BadValue,
            "ray.port_range[1] = 65536 (hi) must be above 1024 and at most 65535",
        ),
        (
            "[ray]\nport_range = [30000, 20000]",
            "2:14",
            BadValue,
            "must have lo < hi",
        ),
        (
            "[ray]\nport_range = [20000, 20199]",
            "2:14",
            BadValue,
            "too narrow: hi - lo = 199, at least 200",
        ),
        (
            "[ray]\nport_range = [20000, \"x\"]",
            "2:22",
            WrongType,
            "ray.port_range[1] = \"x\" must be an integer, not a string",
        ),
        (
            "[ray]\nport_range = \"20000-30000\"",
            "2:14",
            WrongType,
            "must be an array [lo, hi], not a string",
        ),
        (
            "[ray]\nworker_ports = 1000\nport_range = [20000, 20500]",
            "3:14",
            BadValue,
            "holds 501 ports, fewer than the 1016 needed",
        ),
        (
            "[ray]\nworker_ports = 10000",
            "2:16",
            BadValue,
            "needs 10016 ports",
        ),
        (
            "[ray.env]\nA = 1",
            "2:5",
            WrongType,
            "ray.env.A = 1 must be a string, not an integer (quote it: \"1\")",
        ),
        (
            "[ray.env]\n\"A=B\" = \"x\"",
            "2:1",
            BadValue,
            "ray.env key \"A=B\" is not a usable",
        ),
        (
            "[ray]\nenv = [\"A=1\"]",
            "2:7",
            WrongType,
            "ray.env = [\"A=1\"] must be a table ([ray.env]), not an array",
        ),
        (
            "[network]\ninterface = \"a-very-long-interface\"",
            "2:13",
            BadValue,
            "must be 1 to 15 bytes long",
        ),
        (
            "[network]\ninterface = \"ib/0\"",
            "2:13",
            BadValue,
            "is not a Linux interface name",
        ),
        (
            "[teardown]\ngrace_s = 0",
            "2:11",
            BadValue,
            "teardown.grace_s = 0 is out of range 1..=300",
        ),
        (
            "[teardown]\ngrace_s = 301",
            "2:11",
            BadValue,
            "out of range 1..=300",
        ),
        (
            "[ray]\nbin = \"/a\\u0000b\"",
            "2:7",
            BadValue,
            "must not contain a NUL character",
        ),
        (
            "ray = 5",
            "1:7",
            WrongType,
            "ray = 5 must be a table ([ray]), not an integer",
        ),
        // [autoscaler]
        (
            "autoscaler = []",
            "1:14",
            WrongType,
            "autoscaler = [] must be a table ([autoscaler]), not an array",
        ),
        (
            "[autoscaler]\nenabled = \"yes\"",
            "2:11",
            WrongType,
            "autoscaler.enabled = \"yes\" must be true or false, not a string",
        ),
        (
            "[autoscaler]\nmax_workers = 10001",
            "2:15",
            BadValue,
            "autoscaler.max_workers = 10001 is out of range 0..=10000",
        ),
        (
            "[autoscaler]\nmax_workers = -1",
            "2:15",
            BadValue,
            "out of range 0..=10000",
        ),
        (
            "[autoscaler]\nidle_timeout_s = 0",
            "2:18",
            BadValue,
            "autoscaler.idle_timeout_s = 0 is out of range 1..=604800",
        ),
        (
            "[autoscaler]\nidle_timeout_s = 604801",
            "2:18",
            BadValue,
            "out of range 1..=604800",
        ),
        (
            "[autoscaler]\nupscaling_speed = 0",
            "2:19",
            BadValue,
            "autoscaler.upscaling_speed = 0 is out of range: more than 0, at most 100",
        ),
        (
            "[autoscaler]\nupscaling_speed = 100.5",
            "2:19",
            BadValue,
            "is out of range: more than 0, at most 100",
        ),
        (
            "[autoscaler]\nupscaling_speed = nan",
            "2:19",
            BadValue,
            "is out of range",
        ),
        (
            "[autoscaler]\nupscaling_speed = \"fast\"",
            "2:19",
            WrongType,
            "autoscaler.upscaling_speed = \"fast\" must be a number, not a string",
        ),
        (
            "[autoscaler]\npoll_interval_s = 0.05",
            "2:19",
            BadValue,
            "autoscaler.poll_interval_s = 0.05 is out of range 0.1..=60",
        ),
        (
            "[autoscaler]\nscheduler_poll_interval_s = 0.5",
            "2:29",
            BadValue,
            "autoscaler.scheduler_poll_interval_s = 0.5 is out of range 1..=600",
        ),
        (
            "[autoscaler]\nmax_pending_jobs = 0",
            "2:20",
            BadValue,
            "autoscaler.max_pending_jobs = 0 is out of range 1..=10000",
        ),
        (
            "[autoscaler]\nbackoff_initial_s = 0.5",
            "2:21",
            BadValue,
            "autoscaler.backoff_initial_s = 0.5 is out of range 1..=3600",
        ),
        (
            "[autoscaler]\nbackoff_max_s = 86401",
            "2:17",
            BadValue,
            "autoscaler.backoff_max_s = 86401 is out of range 1..=86400",
        ),
        (
            "[autoscaler]\nmax_consecutive_failures = 0",
            "2:28",
            BadValue,
            "autoscaler.max_consecutive_failures = 0 is out of range 1..=1000",
        ),
        (
            "[autoscaler]\nbackoff_initial_s = 60\nbackoff_max_s = 30",
            "3:17",
            BadValue,
            "autoscaler.backoff_max_s = 30 is less than autoscaler.backoff_initial_s (60)",
        ),
        (
            "[autoscaler]\nbackoff_max_s = 5",
            "2:17",
            BadValue,
            "autoscaler.backoff_max_s = 5 is less than autoscaler.backoff_initial_s (10)",
        ),
        (
            "[autoscaler]\nbackoff_initial_s = 3000",
            "2:21",
            BadValue,
            "autoscaler.backoff_initial_s = 3000 is more than autoscaler.backoff_max_s (600, \
             the default)",
        ),
        (
            "[autoscaler]\nenabled = true",
            "2:11",
            BadValue,
            "autoscaler.enabled = true needs at least one [[node_types]] entry",
        ),
        (
            "node_types = []\n[autoscaler]\nenabled = true",
            "3:11",
            BadValue,
            "autoscaler.enabled = true needs at least one [[node_types]] entry",
        ),
        // [[node_types]]: the table itself
        (
            "[node_types]",
            "1:1",
            WrongType,
            "node_types = [node_types] must be an array of tables ([[node_types]]), not a table",
        ),
        (
            "node_types = 1",
            "1:14",
            WrongType,
            "must be an array of tables ([[node_types]]), not an integer",
        ),
        (
            "node_types = [3]",
            "1:15",
            WrongType,
            "node_types[0] = 3 must be a table, not an integer",
        ),
        (
            "[[node_types]]\nname = \"a\"",
            "1:1",
            MissingKey,
            "node_types[0] has no `cpus`, which every node type needs",
        ),
        (
            "\n[[node_types]]\ncpus = 1",
            "2:1",
            MissingKey,
            "node_types[0] has no `name`, which every node type needs",
        ),
        (
            "node_types = [{ cpus = 1 }]",
            "1:15",
            MissingKey,
            "node_types[0] has no `name`",
        ),
        // [[node_types]]: name
        (
            "[[node_types]]\ncpus = 1\nname = \"head\"",
            "3:8",
            BadValue,
            "node_types[0].name = \"head\" is reserved: `head` is the head node's type",
        ),
        (
            "[[node_types]]\ncpus = 1\nname = \"\"",
            "3:8",
            BadValue,
            "node_types[0].name = \"\" must be 1 to 32 characters long",
        ),
        (
            "[[node_types]]\ncpus = 1\nname = \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"",
            "3:8",
            BadValue,
            "must be 1 to 32 characters long",
        ),
        (
            "[[node_types]]\ncpus = 1\nname = \"a.b\"",
            "3:8",
            BadValue,
            "has '.'; only A-Z a-z 0-9 _ - are allowed",
        ),
        (
            "[[node_types]]\ncpus = 1\nname = 7",
            "3:8",
            WrongType,
            "node_types[0].name = 7 must be a string, not an integer",
        ),
        (
            "[[node_types]]\nname = \"cpu\"\ncpus = 1\n\n[[node_types]]\nname = \"cpu\"\ncpus = 2",
            "6:8",
            BadValue,
            "node_types[1].name = \"cpu\" is already the name of node_types[0]; node type names \
             must be unique",
        ),
        // [[node_types]]: sizes
        (
            "[[node_types]]\nname = \"a\"\ncpus = 0",
            "3:8",
            BadValue,
            "node_types[0].cpus = 0 is out of range 1..=1048576",
        ),
        (
            "[[node_types]]\nname = \"a\"\ncpus = \"2\"",
            "3:8",
            WrongType,
            "node_types[0].cpus = \"2\" must be an integer, not a string",
        ),
        (
            "[[node_types]]\nname = \"a\"\ncpus = 1\ngpus = -1",
            "4:8",
            BadValue,
            "node_types[0].gpus = -1 is out of range 0..=1024",
        ),
        (
            "[[node_types]]\nname = \"a\"\ncpus = 1\nmemory = 0",
            "4:10",
            BadValue,
            "node_types[0].memory = 0 is out of range: at least 1 byte",
        ),
        (
            "[[node_types]]\nname = \"a\"\ncpus = 1\nmemory = \"4096\"",
            "4:10",
            BadValue,
            "node_types[0].memory = \"4096\" has no unit: write a number of bytes without quotes",
        ),
        (
            "[[node_types]]\nname = \"a\"\ncpus = 1\nmemory = \"4GB\"",
            "4:10",
            BadValue,
            "node_types[0].memory = \"4GB\" is not a memory size: a whole number with a K, M, G \
             or T suffix (1K = 1024)",
        ),
        (
            "[[node_types]]\nname = \"a\"\ncpus = 1\nmemory = \"1.5G\"",
            "4:10",
            BadValue,
            "is not a memory size",
        ),
        (
            "[[node_types]]\nname = \"a\"\ncpus = 1\nmemory = \"G\"",
            "4:10",
            BadValue,
            "is not a memory size",
        ),
        (
            "[[node_types]]\nname = \"a\"\ncpus = 1\nmemory = \"\"",
            "4:10",
            BadValue,
            "is not a memory size",
        ),
        (
            "[[node_types]]\nname = \"a\"\ncpus = 1\nmemory = \"0G\"",
            "4:10",
            BadValue,
            "node_types[0].memory = \"0G\" must be more than 0",
        ),
        (
            "[[node_types]]\nname = \"a\"\ncpus = 1\nmemory = \"16777216T\"",
            "4:10",
            BadValue,
            "is too large: more than 18446744073709551615 bytes",
        ),
        (
            "[[node_types]]\nname = \"a\"\ncpus = 1\nmemory = \"99999999999999999999K\"",
            "4:10",
            BadValue,
            "is too large",
        ),
        (
            "[[node_types]]\nname = \"a\"\ncpus = 1\nmemory = 4.5",
            "4:10",
            WrongType,
            "node_types[0].memory = 4.5 must be a number of bytes or a string like \"4G\", not a \
             float",
        ),
        (
            "[[node_types]]\nname = \"a\"\ncpus = 1\ntime = \"1:75\"",
            "4:8",
            BadValue,
            "node_types[0].time = \"1:75\" is not a walltime above zero: minutes, MM:SS, ",
        ),
        (
            "[[node_types]]\nname = \"a\"\ncpus = 1\ntime = 60",
            "4:8",
            WrongType,
            "node_types[0].time = 60 must be a string, not an integer",
        ),
        // [[node_types]]: scheduler words
        (
            "[[node_types]]\nname = \"a\"\ncpus = 1\npartition = \"\"",
            "4:13",
            BadValue,
            "node_types[0].partition = \"\" must not be empty",
        ),
        (
            "[[node_types]]\nname = \"a\"\ncpus = 1\naccount = \"a b\"",
            "4:11",
            BadValue,
            "node_types[0].account = \"a b\" must be one word",
        ),
        (
            "[[node_types]]\nname = \"a\"\ncpus = 1\nqos = 1",
            "4:7",
            WrongType,
            "node_types[0].qos = 1 must be a string, not an integer",
        ),
        (
            "[[node_types]]\nname = \"a\"\ncpus = 1\nconstraint = \"x\\ny\"",
            "4:14",
            BadValue,
            "must be one word, without spaces or control characters",
        ),
        // [[node_types]]: workers
        (
            "[[node_types]]\nname = \"a\"\ncpus = 1\nmin_workers = 10001",
            "4:15",
            BadValue,
            "node_types[0].min_workers = 10001 is out of range 0..=10000",
        ),
        (
            "[[node_types]]\nname = \"a\"\ncpus = 1\nmax_workers = 3\nmin_workers = 4",
            "5:15",
            BadValue,
            "node_types[0].min_workers = 4 is more than node_types[0].max_workers (3)",
        ),
        (
            "[[node_types]]\nname = \"a\"\ncpus = 1\nmin_workers = 17",
            "4:15",
            BadValue,
            "node_types[0].min_workers = 17 is more than node_types[0].max_workers (16, the \
             default: autoscaler.max_workers)",
        ),
        (
            "[autoscaler]\nmax_workers = 4\n[[node_types]]\nname = \"a\"\ncpus = 1\n\
             min_workers = 3\n[[node_types]]\nname = \"b\"\ncpus = 1\nmin_workers = 2",
            "10:15",
            BadValue,
            "node_types[1].min_workers = 2 brings the node types' min_workers to 5, more than \
             autoscaler.max_workers (4)",
        ),
        (
            "[[node_types]]\nname = \"a\"\ncpus = 1\nmin_workers = 9\n[[node_types]]\n\
             name = \"b\"\ncpus = 1\nmin_workers = 8",
            "8:15",
            BadValue,
            "node_types[1].min_workers = 8 brings the node types' min_workers to 17, more than \
             autoscaler.max_workers (16, the default)",
        ),
        // [[node_types]]: resources, labels, directives
        (
            "[[node_types]]\nname = \"a\"\ncpus = 1\nresources = { CPU = 1 }",
            "4:15",
            BadValue,
            "node_types[0].resources key \"CPU\" is reserved (set it with `cpus`)",
        ),
        (
            "[[node_types]]\nname = \"a\"\ncpus = 1\nresources = { object_store_memory = 1 }",
            "4:15",
            BadValue,
            "key \"object_store_memory\" is reserved",
        ),
        (
            "[[node_types]]\nname = \"a\"\ncpus = 1\nresources = { nvme = 0 }",
            "4:22",
            BadValue,
            "node_types[0].resources.nvme = 0 must be a number above 0",
        ),
        (
            "[[node_types]]\nname = \"a\"\ncpus = 1\nresources = { nvme = -1.5 }",
            "4:22",
            BadValue,
            "must be a number above 0",
        ),
        (
            "[[node_types]]\nname = \"a\"\ncpus = 1\nresources = { nvme = inf }",
            "4:22",
            BadValue,
            "must be a number above 0",
        ),
        (
            "[[node_types]]\nname = \"a\"\ncpus = 1\nresources = { nvme = \"1\" }",
            "4:22",
            WrongType,
            "node_types[0].resources.nvme = \"1\" must be a number, not a string",
        ),
        (
            "[[node_types]]\nname = \"a\"\ncpus = 1\nresources = [\"nvme\"]",
            "4:13",
            WrongType,
            "node_types[0].resources = [\"nvme\"] must be a table, like { nvme = 1.0 }, not an \
             array",
        ),
        (
            "[[node_types]]\nname = \"a\"\ncpus = 1\nlabels = { zone = 1 }",
            "4:19",
            WrongType,
            "node_types[0].labels.zone = 1 must be a string, not an integer (quote it: \"1\")",
        ),
        (
            "[[node_types]]\nname = \"a\"\ncpus = 1\nlabels = { zone = \"a b\" }",
            "4:19",
            BadValue,
            "node_types[0].labels.zone = \"a b\" is not a Ray label value",
        ),
        (
            "[[node_types]]\nname = \"a\"\ncpus = 1\nlabels = { \"-zone\" = \"a\" }",
            "4:12",
            BadValue,
            "node_types[0].labels key \"-zone\" is not a Ray label key: its name \"-zone\"",
        ),
        (
            "[[node_types]]\nname = \"a\"\ncpus = 1\nlabels = { \"a_b!/zone\" = \"a\" }",
            "4:12",
            BadValue,
            "is not a Ray label key: its prefix \"a_b!\"",
        ),
        (
            "[[node_types]]\nname = \"a\"\ncpus = 1\nlabels = [\"zone=a\"]",
            "4:10",
            WrongType,
            "must be a table, like { zone = \"a\" }, not an array",
        ),
    ];
    for (text, at, kind, piece) in cases {
        let (loc, k, msg) = problem(text);
        assert_eq!((loc.as_str(), k), (*at, *kind), "{text:?}: {msg}");
        assert!(msg.contains(piece), "{text:?}: {msg:?} lacks {piece:?}");
    }
}

#[test]
fn config_every_unknown_key_is_reported() {
    let text = "\
schedular = \"local\"
bin = \"/x\"
[ray]
bni = \"/opt/ray\"
worker_ports = 64
objectstore_fraction = 0.2
[teardown]
grace = 3
[autoscaler]
max_nodes = 4
enable = true
[[node_types]]
name = \"cpu\"
cpus = 2
cpu = 2
idle_timeout_s = 60
[[node_types]]
name = \"gpu\"
cpus = 2
\"GPUs\" = 1
bogus = 1
";
    let all = problems(text);
    let got: Vec<(&str, &str)> = all
        .iter()
        .map(|(loc, k, msg)| {
            assert_eq!(*k, ProblemKind::UnknownKey, "{msg}");
            (loc.as_str(), msg.as_str())
        })
        .collect();
    let top_keys = parse::sections().remove(0).1.join(", ");
    let first = format!(
        "unknown key `schedular`, did you mean `scheduler`? (known top-level keys: {top_keys})"
    );
    assert!(
        top_keys.starts_with(
            "scheduler, auth, ready_timeout_s, scheduler_timeout_s, cluster, ray, network, \
             teardown, autoscaler, node_types, "
        ),
        "{top_keys}"
    );
    let want = [
        ("1:1", first.as_str()),
        ("2:1", "unknown key `bin`, did you mean `ray.bin`?"),
        (
            "4:1",
            "unknown key `ray.bni`, did you mean `ray.bin`? (known keys in [ray]: bin, head_num_cpus, object_store_fraction, worker_ports, port_range, env)",
        ),
        (
            "6:1",
            "unknown key `ray.objectstore_fraction`, did you mean `ray.object_store_fraction`?",
        ),
        (
            "8:1",
            "unknown key `teardown.grace`, did you mean `teardown.grace_s`? (known keys in [teardown]: grace_s)",
        ),
        (
            "10:1",
            "unknown key `autoscaler.max_nodes` (known keys in [autoscaler]: enabled, max_workers, idle_timeout_s, upscaling_speed, poll_interval_s, scheduler_poll_interval_s, max_pending_jobs, backoff_initial_s, backoff_max_s, max_consecutive_failures)",
        ),
        (
            "11:1",
            "unknown key `autoscaler.enable`, did you mean `autoscaler.enabled`?",
        ),
        (
            "15:1",
            "unknown key `node_types[0].cpu`, did you mean `node_types[0].cpus`? (known keys in [[node_types]]: name, partition, queue, account, qos, constraint, cpus, gpus, memory, time, min_workers, max_workers, resources, labels, extra_directives)",
        ),
        (
            "16:1",
            "unknown key `node_types[0].idle_timeout_s`, did you mean `autoscaler.idle_timeout_s`?",
        ),
        (
            "20:1",
            "unknown key `node_types[1].GPUs`, did you mean `node_types[1].gpus`?",
        ),
        (
            "21:1",
            "unknown key `node_types[1].bogus` (known keys in [[node_types]]:",
        ),
    ];
    assert_eq!(got.len(), want.len(), "{all:#?}");
    for ((loc, msg), (wloc, wmsg)) in got.iter().zip(want) {
        assert_eq!(*loc, wloc, "{msg}");
        assert!(
            msg.starts_with(wmsg),
            "{msg:?} does not start with {wmsg:?}"
        );
    }
}

#[test]
fn config_suggestions_for_node_types() {
    for (text, want) in [
        (
            "node_type = []",
            "1:1: unknown key `node_type`, did you mean `node_types`?",
        ),
        (
            "cpus = 2",
            "1:1: unknown key `cpus`, did you mean `cpus` in a [[node_types]] entry?",
        ),
        (
            "[autoscaler]\nmin_workers = 2",
            "2:1: unknown key `autoscaler.min_workers`, did you mean `min_workers` in a \
             [[node_types]] entry?",
        ),
    ] {
        let err = Config::parse(text, "t.toml").unwrap_err();
        assert_eq!(err.problems.len(), 1, "{err}");
        let shown = err.to_string();
        assert!(shown.starts_with(&format!("t.toml:{want}")), "{shown}");
    }
}

#[test]
fn config_node_type_mistakes_all_reported() {
    // One bad value per node type does not hide the others, nor the rules across them.
    let text = "\
[autoscaler]
enabled = true
max_workers = 2

[[node_types]]
name = \"cpu\"
cpus = 0
min_workers = 2

[[node_types]]
name = \"cpu\"
cpus = 1
memory = \"lots\"
min_workers = 1

[[node_types]]
cpus = 1
";
    let err = Config::parse(text, "t.toml").unwrap_err();
    assert_eq!(
        err.to_string(),
        "\
t.toml:7:8: node_types[0].cpus = 0 is out of range 1..=1048576
t.toml:11:8: node_types[1].name = \"cpu\" is already the name of node_types[0]; node type names \
must be unique
t.toml:13:10: node_types[1].memory = \"lots\" is not a memory size: a whole number with a K, M, \
G or T suffix (1K = 1024), like \"4G\"
t.toml:14:15: node_types[1].min_workers = 1 brings the node types' min_workers to 3, more than \
autoscaler.max_workers (2)
t.toml:16:1: node_types[2] has no `name`, which every node type needs"
    );
    let keys: Vec<_> = err.problems.iter().map(|p| p.key.as_deref()).collect();
    assert_eq!(
        keys,
        [
            Some("node_types[0].cpus"),
            Some("node_types[1].name"),
            Some("node_types[1].memory"),
            Some("node_types[1].min_workers"),
            Some("node_types[2].name"),
        ]
    );
}

#[test]
fn config_label_syntax_follows_ray() {
    let labels = |key: &str, value: &str| {
        let text =
            format!("[[node_types]]\nname = \"a\"\ncpus = 1\nlabels = {{ {key:?} = {value:?} }}\n");
        Config::parse(&text, "t.toml").map(|c| c.node_types[0].labels.clone())
    };
    let long = "a".repeat(63);
    for (k, v) in [
        ("zone", "a"),
        ("gpu_type", "A100"),
        ("empty", ""),
        ("ray.io/accelerator-type", "A100"),
        (
            "abc.com/1234567890-_.abcdefghijklmnopqrstuvwxyzABC",
            "a-._b",
        ),
        ("a..b/x", "x"),
        ("/x", "123"),
        (long.as_str(), long.as_str()),
    ] {
        let got = labels(k, v).unwrap_or_else(|e| panic!("{k:?} = {v:?}: {e}"));
        assert_eq!(got.get(k).map(String::as_str), Some(v));
    }
    let too_long = "a".repeat(64);
    let long_prefix = format!("{}/x", "a.".repeat(127));
    for (k, v) in [
        ("", "a"),
        ("-abc", "a"),
        ("abc-", "a"),
        ("my@label", "a"),
        ("a/b/c!", "a"),
        ("a!/b", "a"),
        ("a/", "a"),
        (too_long.as_str(), "a"),
        (long_prefix.as_str(), "a"),
        ("zone", "-a"),
        ("zone", "a b"),
        ("zone", too_long.as_str()),
        ("zone", "ä"),
    ] {
        assert!(labels(k, v).is_err(), "{k:?} = {v:?} was accepted");
    }
}

#[test]
fn config_unknown_keys_and_bad_values_together() {
    let text = "\
scheduler = 3
ready_timeout_s = \"120\"
[ray]
worker_ports = \"many\"
object_store_fraction = \"0.3\"
bogus = true
[cluster]
temp_root = 7
";
    let all = problems(text);
    let got: Vec<(&str, ProblemKind)> = all.iter().map(|(l, k, _)| (l.as_str(), *k)).collect();
    use ProblemKind::*;
    assert_eq!(
        got,
        [
            ("1:13", WrongType),
            ("2:19", WrongType),
            ("4:16", WrongType),
            ("5:25", WrongType),
            ("6:1", UnknownKey),
            ("8:13", WrongType),
        ],
        "{all:#?}"
    );
    assert_eq!(all[0].2, "scheduler = 3 must be a string, not an integer");
    assert_eq!(
        all[1].2,
        "ready_timeout_s = \"120\" must be an integer, not a string"
    );
    assert_eq!(
        all[3].2,
        "ray.object_store_fraction = \"0.3\" must be a number, not a string"
    );
}

#[test]
fn config_syntax_errors_have_positions() {
    let err = Config::parse(SYNTAX, "syntax_error.toml").unwrap_err();
    assert_eq!(err.problems[0].kind, ProblemKind::Syntax);
    assert_eq!(
        err.to_string().lines().next().unwrap(),
        "syntax_error.toml:4:25: invalid TOML: invalid basic string, expected `\"`"
    );

    let (loc, kind, msg) = problem("a = 1\n[ray]\nbin = \"x\"\nbin = \"y\"\n");
    assert_eq!((loc.as_str(), kind), ("4:1", ProblemKind::Syntax));
    assert_eq!(msg, "invalid TOML: duplicate key `bin`");

    let (loc, kind, _) = problem("[ray]\nport_range = [1,\n");
    assert_eq!((loc.as_str(), kind), ("2:17", ProblemKind::Syntax));
}

#[test]
fn config_three_mistakes_fixture() {
    let err = Config::parse(THREE, "three_mistakes.toml").unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "three_mistakes.toml:1:13: scheduler = \"pbs\" is not one of {}\n\
         three_mistakes.toml:4:1: unknown key `ray.bni`, did you mean `ray.bin`? (known keys in \
         [ray]: bin, head_num_cpus, object_store_fraction, worker_ports, port_range, env)\n\
         three_mistakes.toml:5:25: ray.object_store_fraction = 1.5 is out of range 0.05..=0.8",
            scheduler::choices().join(", ")
        )
    );
    let keys: Vec<_> = err.problems.iter().map(|p| p.key.as_deref()).collect();
    assert_eq!(
        keys,
        [
            Some("scheduler"),
            Some("ray.bni"),
            Some("ray.object_store_fraction")
        ]
    );
}

#[test]
fn config_location_counts_characters() {
    let src = "a\nä = 1\n";
    assert_eq!(Location::of_offset(src, 0), Location { line: 1, col: 1 });
    assert_eq!(Location::of_offset(src, 2), Location { line: 2, col: 1 });
    // 'ä' is two bytes, one column.
    assert_eq!(Location::of_offset(src, 4), Location { line: 2, col: 2 });
    // Inside a character, or past the end: clamped, no panic.
    assert_eq!(Location::of_offset(src, 3), Location { line: 2, col: 1 });
    assert_eq!(Location::of_offset(src, 999), Location { line: 3, col: 1 });
}

#[test]
fn config_bad_input_never_panics() {
    // Every prefix of valid and invalid files, plus odd bytes: an answer, never a panic.
    let mut inputs: Vec<String> = Vec::new();
    for text in [FULL, THREE, SYNTAX] {
        for (i, _) in text.char_indices() {
            inputs.push(text[..i].to_string());
        }
    }
    inputs.extend(
        [
            "\u{feff}scheduler = \"auto\"",
            "[ray]\r\nbin = \"x\"\r\n",
            "\0",
            "[[ray.env]]",
            "ray = { env = { \"\" = \"\" } }",
            "[ray]\nport_range = []",
            "[ray]\nport_range = [[1, 2], {a = 1}]",
            "ready_timeout_s = -99999999999999999999999999999999999999999999",
            "scheduler = 1979-05-27T07:32:00Z",
            "ray.env.A.B = \"x\"",
            "[[node_types]]",
            "[[node_types]]\n[[node_types]]",
            "node_types = [[], {}, 1, { name = 1, cpus = [] }]",
            "node_types = [{ name = \"a\", cpus = 1, min_workers = 99999999999999999999999 }]",
            "[[node_types]]\nname = \"\\u00e4\"\nmemory = \"\\u00e4K\"\ntime = \"\\u00e4\"",
            "[[node_types]]\nmemory = \"18446744073709551615\"\ntime = \"9-99999999999999999999\"",
            "[[node_types]]\nlabels = { \"\" = \"\", \"/\" = \"/\", \"a/\\u00e4\" = 1 }",
            "[[node_types]]\nresources = { \"\" = nan, CPU = -inf }",
            "[[node_types.resources]]",
            "[autoscaler]\nmax_workers = -1\nbackoff_max_s = nan\n[[node_types]]\nmin_workers = 5",
            "autoscaler = { enabled = true }\nnode_types = {}",
        ]
        .map(String::from),
    );
    for text in &inputs {
        if let Err(e) = Config::parse(text, "t.toml") {
            assert!(!e.problems.is_empty());
            let _ = e.to_string();
        }
    }
}

#[test]
fn config_load_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    let err = Config::load(&missing).unwrap_err();
    assert_eq!(err.problems[0].kind, ProblemKind::Read);
    let shown = err.to_string();
    assert!(
        shown.starts_with(&format!("{}: cannot read: ", missing.display())),
        "{shown}"
    );

    let latin1 = dir.path().join("latin1.toml");
    std::fs::write(&latin1, b"scheduler = \"auto\"\n# caf\xe9\n").unwrap();
    let err = Config::load(&latin1).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}:2:6: the file is not UTF-8 text (TOML must be UTF-8)",
            latin1.display()
        )
    );

    let c = Config::load(&fixture("full.toml")).unwrap();
    assert_eq!(c.scheduler, "local");
    let err = Config::load(&fixture("three_mistakes.toml")).unwrap_err();
    assert_eq!(err.problems.len(), 3);
    assert!(err.origin.ends_with("three_mistakes.toml"));
}

#[test]
fn config_discover_precedence() {
    let dir = tempfile::tempdir().unwrap();
    let write = |rel: &str, body: &str| {
        let p = dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, body).unwrap();
        p
    };
    let explicit = write("explicit.toml", "ready_timeout_s = 1\n");
    let named = write("named.toml", "ready_timeout_s = 2\n");
    let rh_home = dir.path().join("rh-home");
    let rh_home_cfg = write("rh-home/config.toml", "ready_timeout_s = 3\n");
    let home = dir.path().join("home");
    let home_cfg = write("home/.ray-hpc/config.toml", "ready_timeout_s = 4\n");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let (named_s, rh_home_s, home_s) = (s(&named), s(&rh_home), s(&home));

    let everything = env_of(&[
        (CONFIG_ENV, &named_s),
        (HOME_ENV, &rh_home_s),
        ("HOME", &home_s),
    ]);
    let found = |explicit: Option<&Path>, env: &dyn Fn(&str) -> Option<OsString>| {
        let (c, p) = Config::discover_with(explicit, env).unwrap();
        (c.ready_timeout_s, p)
    };
    // --config beats everything.
    assert_eq!(
        found(Some(&explicit), &everything),
        (1, Some(explicit.clone()))
    );
    // Then $RAY_HPC_CONFIG.
    assert_eq!(found(None, &everything), (2, Some(named.clone())));
    // An empty $RAY_HPC_CONFIG counts as unset; then $RAY_HPC_HOME/config.toml.
    let env = env_of(&[(CONFIG_ENV, ""), (HOME_ENV, &rh_home_s), ("HOME", &home_s)]);
    assert_eq!(found(None, &env), (3, Some(rh_home_cfg)));
    // Then ~/.ray-hpc/config.toml.
    let env = env_of(&[("HOME", &home_s)]);
    assert_eq!(found(None, &env), (4, Some(home_cfg)));
    // A home without config.toml, or no home at all: defaults.
    let empty_home = dir.path().join("empty");
    let env = env_of(&[(HOME_ENV, empty_home.to_str().unwrap()), ("HOME", &home_s)]);
    assert_eq!(found(None, &env), (120, None));
    assert_eq!(found(None, &env_of(&[])), (120, None));

    // A file named explicitly or by $RAY_HPC_CONFIG must exist.
    let gone = dir.path().join("gone.toml");
    let err = Config::discover_with(Some(&gone), &everything).unwrap_err();
    assert!(err.to_string().contains("gone.toml: cannot read"), "{err}");
    let env = env_of(&[(CONFIG_ENV, gone.to_str().unwrap()), ("HOME", &home_s)]);
    let err = Config::discover_with(None, &env).unwrap_err();
    assert!(
        err.to_string().ends_with("(named by $RAY_HPC_CONFIG)"),
        "{err}"
    );
    // A bad file found in the home directory is an error, not silently skipped.
    let bad_home = dir.path().join("bad-home");
    write("bad-home/config.toml", "schedular = \"local\"\n");
    let env = env_of(&[(HOME_ENV, bad_home.to_str().unwrap())]);
    let err = Config::discover_with(None, &env).unwrap_err();
    assert_eq!(err.problems[0].kind, ProblemKind::UnknownKey);
}

#[test]
fn config_check_report() {
    let path = fixture("full.toml");
    let out = check_report(&path).unwrap();
    let origin = path.display().to_string();
    assert!(out.starts_with(&format!("{origin}: ok\n")), "{out}");
    assert!(
        out.contains(&format!("{origin}: warning: auth = \"none\"")),
        "{out}"
    );
    // The report minus its header lines is the effective configuration, and parses back.
    let body: String = out
        .lines()
        .filter(|l| !l.starts_with(&origin))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        Config::parse(&body, "report").unwrap(),
        Config::load(&path).unwrap()
    );

    // Memory comes back as bytes, node types with their resolved max_workers.
    assert!(out.contains("\n[[node_types]]\nname = \"cpu\"\n"), "{out}");
    assert!(out.contains("\nmemory = 4294967296\n"), "{out}");
    assert!(out.contains("\nmemory = 68719476736\n"), "{out}");
    assert!(!out.contains("autoscaler.enabled = false"), "{out}");

    let empty = check_report(&fixture("empty.toml")).unwrap();
    assert!(
        empty.contains("# autoscaler.enabled = false: no worker jobs are submitted"),
        "{empty}"
    );
    assert!(
        empty.contains("\n[autoscaler]\nenabled = false\n"),
        "{empty}"
    );
    assert!(!empty.contains("node_types ="), "{empty}");
    assert!(
        empty.contains("# cluster.name unset: ray-<job id>"),
        "{empty}"
    );
    assert!(empty.contains("scheduler = \"auto\""), "{empty}");

    let err = check_report(&fixture("three_mistakes.toml")).unwrap_err();
    assert_eq!(err.problems.len(), 3);
}

#[test]
fn config_helpers() {
    assert_eq!("none".parse::<AuthMode>(), Ok(AuthMode::None));
    assert_eq!(AuthMode::Token.to_string(), "token");

    let c = Config::default();
    assert_eq!(c.cluster.name_or_default("1234"), "ray-1234");
    assert_eq!(c.name_or_default("1234"), "ray-1234");
    assert_eq!(c.ray.port_range.len(), 10_001);
    assert!(c.ray.port_range.contains(20_000) && !c.ray.port_range.contains(30_001));

    let env = env_of(&[("HOME", "/home/u")]);
    assert_eq!(home_dir(&env), Some(PathBuf::from("/home/u/.ray-hpc")));
    let env = env_of(&[("HOME", "/home/u"), (HOME_ENV, "/rh")]);
    assert_eq!(home_dir(&env), Some(PathBuf::from("/rh")));
}
