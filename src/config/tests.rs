use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::*;

const FULL: &str = include_str!("../../tests/fixtures/config/full.toml");
const THREE: &str = include_str!("../../tests/fixtures/config/three_mistakes.toml");
const SYNTAX: &str = include_str!("../../tests/fixtures/config/syntax_error.toml");
const EMPTY: &str = include_str!("../../tests/fixtures/config/empty.toml");

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
    assert_eq!(c.scheduler, SchedulerChoice::Auto);
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
    assert!(c.slurm.srun_args.is_empty());
    assert!(c.warnings().is_empty());

    assert_eq!(Config::parse("", "t.toml").unwrap(), c);
    assert_eq!(Config::parse(EMPTY, "t.toml").unwrap(), c);
    // Empty tables are fine too.
    let empty_tables = "[cluster]\n[ray]\n[ray.env]\n[network]\n[teardown]\n[slurm]\n";
    assert_eq!(Config::parse(empty_tables, "t.toml").unwrap(), c);
}

#[test]
fn config_every_key_parses() {
    let c = Config::parse(FULL, "full.toml").unwrap();
    let expected = Config {
        scheduler: SchedulerChoice::Slurm,
        auth: AuthMode::None,
        ready_timeout_s: 600,
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
        slurm: SlurmConfig {
            srun_args: vec!["--mpi=none".into(), "--cpu-bind=none".into()],
            extra_directives: vec![
                "#SBATCH --account=proj1".into(),
                "#SBATCH --qos=normal".into(),
            ],
        },
    };
    assert_eq!(c, expected);
    assert_eq!(c.warnings().len(), 1, "auth = none warns");
}

#[test]
fn config_full_fixture_covers_every_key() {
    // Keeps the fixture (and with it the test above) in step with the schema.
    let doc = toml::de::DeTable::parse(FULL).unwrap();
    for (section, keys) in parse::SECTIONS {
        let table = if section.is_empty() {
            doc.get_ref()
        } else {
            doc.get_ref()
                .get(*section)
                .and_then(|v| v.get_ref().as_table())
                .unwrap_or_else(|| panic!("full.toml lacks [{section}]"))
        };
        for key in *keys {
            assert!(table.get(*key).is_some(), "full.toml lacks {section}.{key}");
        }
    }
}

#[test]
fn config_effective_toml_round_trips() {
    for c in [Config::default(), Config::parse(FULL, "full.toml").unwrap()] {
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
    use ProblemKind::{BadValue, WrongType};
    // (text, "line:col", kind, a piece of the message)
    let cases: &[(&str, &str, ProblemKind, &str)] = &[
        (
            "scheduler = \"pbs\"",
            "1:13",
            BadValue,
            "scheduler = \"pbs\" is not one of auto, slurm, local",
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
            "[slurm]\nsrun_args = \"--mpi=none\"",
            "2:13",
            WrongType,
            "must be an array of strings, not a string",
        ),
        (
            "[slurm]\nsrun_args = [\"-N\", 2]",
            "2:20",
            WrongType,
            "slurm.srun_args[1] = 2 must be a string, not an integer",
        ),
        (
            "[slurm]\nextra_directives = [\"--account=x\"]",
            "2:21",
            BadValue,
            "must be one line starting with `#SBATCH `",
        ),
        (
            "[slurm]\nsrun_args = [\"\"]",
            "2:14",
            BadValue,
            "slurm.srun_args[0] = \"\" must not be empty",
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
        (
            "[[slurm]]",
            "1:1",
            WrongType,
            "must be a table ([slurm]), not an array",
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
schedular = \"slurm\"
bin = \"/x\"
[ray]
bni = \"/opt/ray\"
worker_ports = 64
objectstore_fraction = 0.2
[teardown]
grace = 3
[autoscaler]
max_nodes = 4
";
    let all = problems(text);
    let got: Vec<(&str, &str)> = all
        .iter()
        .map(|(loc, k, msg)| {
            assert_eq!(*k, ProblemKind::UnknownKey, "{msg}");
            (loc.as_str(), msg.as_str())
        })
        .collect();
    let want = [
        (
            "1:1",
            "unknown key `schedular`, did you mean `scheduler`? (known top-level keys: scheduler, auth, ready_timeout_s, cluster, ray, network, teardown, slurm)",
        ),
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
        ("9:2", "unknown key `autoscaler` (known top-level keys:"),
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
        "three_mistakes.toml:1:13: scheduler = \"pbs\" is not one of auto, slurm, local\n\
         three_mistakes.toml:4:1: unknown key `ray.bni`, did you mean `ray.bin`? (known keys in \
         [ray]: bin, head_num_cpus, object_store_fraction, worker_ports, port_range, env)\n\
         three_mistakes.toml:5:25: ray.object_store_fraction = 1.5 is out of range 0.05..=0.8"
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
    assert_eq!(c.scheduler, SchedulerChoice::Slurm);
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
    write("bad-home/config.toml", "schedular = \"slurm\"\n");
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

    let empty = check_report(&fixture("empty.toml")).unwrap();
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
    assert_eq!(
        "slurm".parse::<SchedulerChoice>(),
        Ok(SchedulerChoice::Slurm)
    );
    assert_eq!(
        "pbs".parse::<SchedulerChoice>(),
        Err("\"pbs\" is not one of auto, slurm, local".to_string())
    );
    assert_eq!("none".parse::<AuthMode>(), Ok(AuthMode::None));
    assert_eq!(SchedulerChoice::Local.to_string(), "local");

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
