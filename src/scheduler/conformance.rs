//! The adapter conformance suite: one table of cases, run against every scheduler adapter.
//!
//! Each adapter's top-level folder holds `fixtures/conformance.toml` (recorded environments and
//! command outputs, and what the adapter must make of them): allocations and grants from
//! recorded environments, node addresses, the fan-out command, rendered job scripts,
//! submit/query (by ids and by name)/cancel on recorded outputs, refusals in the scheduler's own
//! words, and garbage. The checks are the same for every adapter; a new scheduler passes by
//! writing its table (cases may carry the adapter's config section as `settings`, and the
//! machine's hostname as `env.host`).
//! Local has no scheduler (and no folder): its own unit tests cover it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::command::{CommandError, CommandOutput, Recorded};
use super::{
    ADAPTERS, Adapter, Env, JobRequest, JobState, NodeKind, OutputPath, Scheduler, SchedulerError,
    Settings, Setup,
};
use crate::discovery::GpuGrant;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Cases {
    #[serde(default)]
    allocation: Vec<AllocationCase>,
    #[serde(default)]
    allocation_error: Vec<AllocationErrorCase>,
    #[serde(default)]
    addresses: Vec<AddressesCase>,
    #[serde(default)]
    fan_out: Vec<FanOutCase>,
    #[serde(default)]
    render: Vec<RenderCase>,
    #[serde(default)]
    submit: Vec<SubmitCase>,
    #[serde(default)]
    query: Vec<QueryCase>,
    #[serde(default)]
    query_named: Vec<QueryNamedCase>,
    #[serde(default)]
    cancel: Vec<CancelCase>,
    #[serde(default)]
    bulk: Bulk,
}

/// How the adapter's job ids look, for the checks on many jobs at once.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Bulk {
    /// A job id with `{n}` for a number (default: the number alone).
    id: String,
    /// The adapter's config section for these checks.
    #[serde(default)]
    settings: Settings,
    /// The exit code (or HTTP status) of a command that did what it was asked.
    #[serde(default)]
    ok_code: i32,
}

impl Default for Bulk {
    fn default() -> Self {
        Bulk {
            id: "{n}".into(),
            settings: Settings::new(),
            ok_code: 0,
        }
    }
}

impl Bulk {
    fn id(&self, n: u64) -> String {
        self.id.replace("{n}", &n.to_string())
    }
}

/// An environment: a recorded file (`KEY=value` lines; `# --- rank N ---` lines separate the
/// tasks of one file, `rank` picks one), or variables given inline. `{fixtures}` in a value
/// stands for the fixtures folder (for variables that name a file, such as a host file).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvSource {
    file: Option<String>,
    #[serde(default)]
    rank: usize,
    #[serde(default)]
    vars: BTreeMap<String, String>,
    /// This machine's hostname as the task saw it (`Setup::hostname`); empty when not given.
    #[serde(default)]
    host: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AllocationCase {
    name: String,
    env: EnvSource,
    job_id: String,
    hosts: Vec<String>,
    this_node: String,
    host_cpus: Option<Vec<u32>>,
    grant_cpus: Option<u32>,
    /// The CPU ids granted, when the scheduler lists them; None: it does not.
    grant_cpu_ids: Option<Vec<u32>>,
    grant_memory_mb: Option<u64>,
    /// "none", "unknown", or the granted ids.
    grant_gpus: GpusExpected,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum GpusExpected {
    Word(String),
    Ids(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AllocationErrorCase {
    name: String,
    env: EnvSource,
    /// Every one of these appears in the message.
    error_contains: Vec<String>,
}

/// A command's recorded answer: exit code, output inline or from a file, or no answer at all.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Recording {
    #[serde(default)]
    code: i32,
    stdout: Option<String>,
    stdout_file: Option<String>,
    stderr: Option<String>,
    stderr_file: Option<String>,
    /// The command never answered (the runner's timeout fired).
    #[serde(default)]
    timeout: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddressesCase {
    name: String,
    env: EnvSource,
    /// The one command's answer; none for adapters that resolve names without a command
    /// (which must then run none).
    output: Option<Recording>,
    /// Words the command line must hold.
    #[serde(default)]
    command_contains: Vec<String>,
    #[serde(default)]
    expect: BTreeMap<String, String>,
    error_contains: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FanOutCase {
    name: String,
    env: EnvSource,
    #[serde(default)]
    settings: Settings,
    /// None: the allocation has one host and needs no fan-out.
    program: Option<String>,
    #[serde(default)]
    args_contain: Vec<String>,
    /// The command is `PROGRAM -c SCRIPT ...`: the agent's argv is in the script, quoted for a
    /// POSIX shell (`shell_join`), rather than last on the command line.
    #[serde(default)]
    shell: bool,
    /// Text the script must hold (with `shell`).
    #[serde(default)]
    script_contains: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RenderCase {
    name: String,
    #[serde(default)]
    settings: Settings,
    /// The standard request (see [`standard_request`]) with these of its fields left out.
    #[serde(default)]
    without: Vec<String>,
    #[serde(default)]
    directives: Vec<String>,
    /// Lines that must appear, whole.
    #[serde(default)]
    lines: Vec<String>,
    /// Text that must not appear.
    #[serde(default)]
    absent: Vec<String>,
    /// Lines that must appear in this order (header before commands, and the like).
    #[serde(default)]
    in_order: Vec<String>,
    error_contains: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubmitCase {
    name: String,
    #[serde(default)]
    settings: Settings,
    output: Recording,
    id: Option<String>,
    /// A refusal: the scheduler's own words, passed on.
    refused_contains: Option<String>,
    error_contains: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryCase {
    name: String,
    #[serde(default)]
    settings: Settings,
    ids: Vec<String>,
    /// One per command run.
    outputs: Vec<Recording>,
    /// Words each command line must hold, by position (fewer entries than commands is fine).
    #[serde(default)]
    commands_contain: Vec<Vec<String>>,
    #[serde(default)]
    expect: Vec<JobExpected>,
    error_contains: Option<String>,
}

/// `query_named`: this user's jobs of a name.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryNamedCase {
    name: String,
    #[serde(default)]
    settings: Settings,
    job_name: String,
    outputs: Vec<Recording>,
    #[serde(default)]
    commands_contain: Vec<Vec<String>>,
    #[serde(default)]
    expect: Vec<JobExpected>,
    error_contains: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobExpected {
    id: String,
    /// Our state's words: `pending`, `running`, `suspended`, `completing`, or `ended (REASON)`.
    state: String,
    reason: Option<String>,
    /// Checked when given.
    time_left_s: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelCase {
    name: String,
    #[serde(default)]
    settings: Settings,
    ids: Vec<String>,
    outputs: Vec<Recording>,
    #[serde(default)]
    ok: bool,
    error_contains: Option<String>,
}

/// Every adapter with a scheduler behind it, with its folder.
fn adapters_with_folders() -> Vec<(&'static Adapter, PathBuf)> {
    ADAPTERS
        .iter()
        .filter(|a| a.name != super::local::NAME)
        .map(|a| {
            (
                *a,
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join(a.name)
                    .join("fixtures"),
            )
        })
        .collect()
}

fn load_cases(dir: &Path) -> Cases {
    let path = dir.join("conformance.toml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (every adapter needs its table)", path.display()));
    toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn read_fixture(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.join(name).display()))
}

fn env_of(dir: &Path, src: &EnvSource) -> Env {
    let fixtures = dir.display().to_string();
    let mut env = match &src.file {
        None => Env::new(),
        Some(file) => {
            let mut envs = vec![Env::new()];
            for line in read_fixture(dir, file).lines() {
                if line.starts_with("# --- rank") {
                    if !envs.last().expect("one at least").is_empty() {
                        envs.push(Env::new());
                    }
                } else if let Some((k, v)) = line.split_once('=') {
                    envs.last_mut()
                        .expect("one at least")
                        .insert(k.into(), v.into());
                }
            }
            envs.remove(src.rank)
        }
    };
    env.extend(src.vars.clone());
    for v in env.values_mut() {
        *v = v.replace("{fixtures}", &fixtures);
    }
    env
}

fn answer(dir: &Path, r: &Recording) -> Result<CommandOutput, CommandError> {
    if r.timeout {
        return Err(CommandError::Timeout {
            command: "(recorded)".into(),
            after: Duration::from_secs(30),
        });
    }
    let text = |inline: &Option<String>, file: &Option<String>| match (inline, file) {
        (Some(t), _) => t.clone(),
        (None, Some(f)) => read_fixture(dir, f),
        (None, None) => String::new(),
    };
    Ok(CommandOutput {
        code: Some(r.code),
        stdout: text(&r.stdout, &r.stdout_file),
        stderr: text(&r.stderr, &r.stderr_file),
    })
}

fn open(
    adapter: &Adapter,
    env: Env,
    settings: Settings,
    answers: Vec<Result<CommandOutput, CommandError>>,
) -> (Box<dyn Scheduler>, Arc<Recorded>) {
    open_on(adapter, env, String::new(), settings, answers)
}

/// [`open`] on a machine of this hostname.
fn open_on(
    adapter: &Adapter,
    env: Env,
    hostname: String,
    settings: Settings,
    answers: Vec<Result<CommandOutput, CommandError>>,
) -> (Box<dyn Scheduler>, Arc<Recorded>) {
    let runner = Arc::new(Recorded::new(answers));
    let s = (adapter.open)(Setup {
        env,
        settings,
        runner: runner.clone(),
        hostname,
    })
    .unwrap_or_else(|e| panic!("{}: cannot open: {e}", adapter.name));
    (s, runner)
}

/// The request every adapter renders: every field set, so every field is checked.
fn standard_request(without: &[String]) -> JobRequest {
    let keep = |field: &str| !without.iter().any(|w| w == field);
    JobRequest {
        name: "rh-c1".into(),
        nodes: 2,
        cpus_per_node: keep("cpus_per_node").then_some(4),
        gpus_per_node: keep("gpus_per_node").then_some(1),
        memory_per_node: keep("memory_per_node").then_some(4 * 1024 * 1024 * 1024),
        queue: keep("queue").then(|| "debug".into()),
        account: keep("account").then(|| "proj1".into()),
        qos: keep("qos").then(|| "normal".into()),
        constraint: keep("constraint").then(|| "skylake".into()),
        walltime: keep("walltime").then_some(Duration::from_secs(90 * 60)),
        output: OutputPath(PathBuf::from(
            "/home/u/.ray-hpc/clusters/c1/worker-{job_id}.out",
        )),
        directives: vec![],
        command: "/usr/bin/ray-hpc run --name c1".into(),
        env: [("RAY_HPC_HOME".to_string(), "/home/u/my dir".to_string())].into(),
        node_type: None,
        node_kinds: vec![NodeKind {
            node_type: "worker".into(),
            count: 1,
            cpus: Some(4),
            gpus: Some(1),
            memory: Some(4 * 1024 * 1024 * 1024),
            command: "/usr/bin/ray-hpc agent --join c1 --node-type worker".into(),
        }],
    }
}

/// [`open`] on a case's environment and hostname.
fn open_env(
    adapter: &Adapter,
    dir: &Path,
    env: &EnvSource,
    settings: Settings,
    answers: Vec<Result<CommandOutput, CommandError>>,
) -> (Box<dyn Scheduler>, Arc<Recorded>) {
    open_on(
        adapter,
        env_of(dir, env),
        env.host.clone(),
        settings,
        answers,
    )
}

fn state_words(s: &JobState) -> String {
    s.to_string()
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(f)
}

fn check_error(case: &str, err: &SchedulerError, contains: &str) {
    let msg = err.to_string();
    assert!(msg.contains(contains), "{case}: {msg:?} lacks {contains:?}");
}

fn allocations(adapter: &Adapter, dir: &Path, cases: &Cases) {
    for c in &cases.allocation {
        let (s, _) = open_env(adapter, dir, &c.env, Settings::new(), vec![]);
        let a = s
            .allocation()
            .unwrap_or_else(|e| panic!("{}/{}: {e}", adapter.name, c.name));
        let names: Vec<&str> = a.hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(a.scheduler, adapter.name, "{}", c.name);
        assert_eq!(a.job_id, c.job_id, "{}", c.name);
        assert_eq!(names, c.hosts, "{}", c.name);
        assert_eq!(a.this_node, c.this_node, "{}", c.name);
        if let Some(cpus) = &c.host_cpus {
            let got: Vec<Option<u32>> = a.hosts.iter().map(|h| h.cpus).collect();
            let want: Vec<Option<u32>> = cpus.iter().copied().map(Some).collect();
            assert_eq!(got, want, "{}", c.name);
        }
        let g = s
            .node_grant(&a)
            .unwrap_or_else(|e| panic!("{}/{}: {e}", adapter.name, c.name));
        assert_eq!(g.cpus, c.grant_cpus, "{}: CPUs", c.name);
        assert_eq!(g.cpu_ids, c.grant_cpu_ids, "{}: CPU ids", c.name);
        assert_eq!(
            g.memory_bytes,
            c.grant_memory_mb.map(|mb| mb * 1024 * 1024),
            "{}: memory",
            c.name
        );
        let want = match &c.grant_gpus {
            GpusExpected::Word(w) if w == "none" => GpuGrant::None,
            GpusExpected::Word(w) if w == "unknown" => GpuGrant::Unknown,
            GpusExpected::Word(w) => panic!("{}: grant_gpus = {w:?}?", c.name),
            GpusExpected::Ids(ids) => GpuGrant::Ids(ids.clone()),
        };
        assert_eq!(g.gpus, want, "{}: GPUs", c.name);
    }
    for c in &cases.allocation_error {
        let (s, _) = open_env(adapter, dir, &c.env, Settings::new(), vec![]);
        let err = s
            .allocation()
            .and_then(|a| s.node_grant(&a).map(|_| a))
            .map(|a| panic!("{}: expected an error, got {a:?}", c.name))
            .unwrap_err();
        for word in &c.error_contains {
            check_error(&c.name, &err, word);
        }
    }
}

fn addresses(adapter: &Adapter, dir: &Path, cases: &Cases) {
    for c in &cases.addresses {
        let answers = c.output.iter().map(|o| answer(dir, o)).collect();
        let (s, runner) = open_env(adapter, dir, &c.env, Settings::new(), answers);
        let a = s.allocation().expect("the case's allocation");
        let got = block_on(s.host_addresses(&a));
        let calls = runner.calls();
        assert_eq!(
            calls.len(),
            c.output.iter().count(),
            "{}: commands run",
            c.name
        );
        if let Some(call) = calls.first().map(|c| c.to_string()) {
            for word in &c.command_contains {
                assert!(call.contains(word), "{}: `{call}` lacks {word}", c.name);
            }
        }
        match (&c.error_contains, got) {
            (Some(want), Err(e)) => check_error(&c.name, &e, want),
            (None, Ok(map)) => {
                let map: BTreeMap<String, String> =
                    map.into_iter().map(|(k, v)| (k, v.to_string())).collect();
                assert_eq!(map, c.expect, "{}", c.name);
            }
            (want, got) => panic!("{}: wanted {want:?}, got {got:?}", c.name),
        }
    }
}

fn fan_outs(adapter: &Adapter, dir: &Path, cases: &Cases) {
    for c in &cases.fan_out {
        let (s, _) = open_env(adapter, dir, &c.env, c.settings.clone(), vec![]);
        let a = s.allocation().expect("the case's allocation");
        let argv = ["/opt/ray-hpc".into(), "agent".into()];
        let cmd = s.fan_out(&a, &argv).expect("a fan-out or none");
        match (&c.program, cmd) {
            (None, None) => {}
            (Some(program), Some(cmd)) => {
                assert_eq!(cmd.get_program(), program.as_str(), "{}", c.name);
                let args: Vec<String> = cmd
                    .get_args()
                    .map(|a| a.to_string_lossy().into_owned())
                    .collect();
                for want in &c.args_contain {
                    assert!(args.contains(want), "{}: {args:?} lacks {want}", c.name);
                }
                if c.shell {
                    // The agent's argv is in the script, every word quoted for the shell.
                    assert_eq!(args.first().map(String::as_str), Some("-c"), "{}", c.name);
                    let script = &args[1];
                    let quoted = super::shell_join(&["/opt/ray-hpc", "agent"]);
                    assert!(script.contains(&quoted), "{}: {script:?}", c.name);
                    for want in &c.script_contains {
                        assert!(
                            script.contains(want),
                            "{}: {script:?} lacks {want:?}",
                            c.name
                        );
                    }
                } else {
                    // The agent's own argv comes last, whole: the fan-out adds nothing after it.
                    assert_eq!(
                        args[args.len() - 2..],
                        ["/opt/ray-hpc", "agent"],
                        "{}",
                        c.name
                    );
                }
            }
            (want, got) => panic!("{}: wanted {want:?}, got {got:?}", c.name),
        }
    }
}

fn renders(adapter: &Adapter, cases: &Cases) {
    for c in &cases.render {
        let (s, _) = open(adapter, Env::new(), c.settings.clone(), vec![]);
        let mut req = standard_request(&c.without);
        req.directives = c.directives.clone();
        let script = match (s.render_job(&req), &c.error_contains) {
            (Err(e), Some(want)) => {
                check_error(&c.name, &e, want);
                continue;
            }
            (Ok(script), None) => script,
            (got, want) => panic!("{}: wanted {want:?}, got {got:?}", c.name),
        };
        for line in &c.lines {
            assert!(
                script.lines().any(|l| l == line),
                "{}: {line:?} missing from\n{script}",
                c.name
            );
        }
        for text in &c.absent {
            assert!(!script.contains(text), "{}: {text:?} in\n{script}", c.name);
        }
        let positions: Vec<usize> = c
            .in_order
            .iter()
            .map(|l| {
                script
                    .lines()
                    .position(|s| s == l)
                    .unwrap_or_else(|| panic!("{}: {l:?} missing from\n{script}", c.name))
            })
            .collect();
        assert!(
            positions.is_sorted(),
            "{}: out of order in\n{script}",
            c.name
        );
        // The placeholder never reaches the scheduler as it is.
        assert!(!script.contains(OutputPath::JOB_ID), "{}", c.name);
    }
}

fn submits(adapter: &Adapter, dir: &Path, cases: &Cases) {
    for c in &cases.submit {
        let (s, runner) = open(
            adapter,
            Env::new(),
            c.settings.clone(),
            vec![answer(dir, &c.output)],
        );
        let req = standard_request(&[]);
        let got = block_on(s.submit("#!/bin/sh\n# the script\n", &req));
        match got {
            Ok(id) => assert_eq!(Some(id), c.id, "{}", c.name),
            Err(SchedulerError::Refused { message, .. }) if c.refused_contains.is_some() => {
                let want = c.refused_contains.as_deref().unwrap_or_default();
                assert!(message.contains(want), "{}: {message:?}", c.name);
            }
            Err(e) => match &c.error_contains {
                Some(want) => check_error(&c.name, &e, want),
                None => panic!("{}: {e}", c.name),
            },
        }
        let calls = runner.calls();
        assert_eq!(calls.len(), 1, "{}: one submission, one command", c.name);
    }
}

fn queries(adapter: &Adapter, dir: &Path, cases: &Cases) {
    for c in &cases.query {
        let answers = c.outputs.iter().map(|r| answer(dir, r)).collect();
        let (s, runner) = open(adapter, Env::new(), c.settings.clone(), answers);
        let got = block_on(s.query(&c.ids));
        check_commands(&c.name, &runner, c.outputs.len(), &c.commands_contain);
        check_jobs(&c.name, got, &c.error_contains, &c.expect);
    }
    for c in &cases.query_named {
        let answers = c.outputs.iter().map(|r| answer(dir, r)).collect();
        let (s, runner) = open(adapter, Env::new(), c.settings.clone(), answers);
        let got = block_on(s.query_named(&c.job_name));
        check_commands(&c.name, &runner, c.outputs.len(), &c.commands_contain);
        check_jobs(&c.name, got, &c.error_contains, &c.expect);
    }
}

/// As many commands as recorded answers, each holding its words.
fn check_commands(case: &str, runner: &Recorded, count: usize, words: &[Vec<String>]) {
    let calls = runner.calls();
    assert_eq!(calls.len(), count, "{case}: commands run");
    for (call, words) in calls.iter().zip(words) {
        let line = call.to_string();
        for w in words {
            assert!(line.contains(w.as_str()), "{case}: `{line}` lacks {w:?}");
        }
    }
}

fn check_jobs(
    case: &str,
    got: Result<Vec<super::JobInfo>, SchedulerError>,
    error: &Option<String>,
    expect: &[JobExpected],
) {
    match (error, got) {
        (Some(want), Err(e)) => check_error(case, &e, want),
        (None, Ok(jobs)) => {
            let got: Vec<(String, String, Option<String>)> = jobs
                .iter()
                .map(|j| (j.id.clone(), state_words(&j.state), j.reason.clone()))
                .collect();
            let want: Vec<(String, String, Option<String>)> = expect
                .iter()
                .map(|j| (j.id.clone(), j.state.clone(), j.reason.clone()))
                .collect();
            assert_eq!(got, want, "{case}");
            for (j, w) in jobs.iter().zip(expect) {
                if let Some(left) = w.time_left_s {
                    assert_eq!(j.time_left_s, Some(left), "{case}: time left of {}", j.id);
                }
            }
        }
        (want, got) => panic!("{case}: wanted error {want:?}, got {got:?}"),
    }
}

fn cancels(adapter: &Adapter, dir: &Path, cases: &Cases) {
    for c in &cases.cancel {
        let answers = c.outputs.iter().map(|r| answer(dir, r)).collect();
        let (s, runner) = open(adapter, Env::new(), c.settings.clone(), answers);
        let got = block_on(s.cancel(&c.ids));
        assert_eq!(runner.calls().len(), c.outputs.len(), "{}", c.name);
        match (c.ok, &c.error_contains, got) {
            (true, None, Ok(())) => {}
            (false, Some(want), Err(e)) => check_error(&c.name, &e, want),
            (ok, want, got) => panic!("{}: wanted ok={ok} {want:?}, got {got:?}", c.name),
        }
    }
}

/// Checks every adapter needs whatever its table says.
fn common_rules(adapter: &Adapter, dir: &Path, bulk: &Bulk) {
    // A command that never answers is an error naming the timeout, from every call.
    let timeout = || {
        vec![Err(CommandError::Timeout {
            command: "x".into(),
            after: Duration::from_secs(30),
        })]
    };
    let (s, _) = open(adapter, Env::new(), bulk.settings.clone(), timeout());
    let err = block_on(s.query(&["1".into()])).unwrap_err();
    assert!(err.to_string().contains("did not answer"), "{err}");
    let (s, _) = open(adapter, Env::new(), bulk.settings.clone(), timeout());
    let err = block_on(s.submit("#!/bin/sh\n", &standard_request(&[]))).unwrap_err();
    assert!(err.to_string().contains("did not answer"), "{err}");
    let (s, _) = open(adapter, Env::new(), bulk.settings.clone(), timeout());
    let err = block_on(s.cancel(&["1".into()])).unwrap_err();
    assert!(err.to_string().contains("did not answer"), "{err}");

    // Nothing to ask about: no command at all.
    let (s, runner) = open(adapter, Env::new(), bulk.settings.clone(), vec![]);
    assert!(block_on(s.query(&[])).unwrap().is_empty());
    block_on(s.cancel(&[])).unwrap();
    assert!(runner.calls().is_empty(), "{}", adapter.name);

    // Many jobs: few calls, each within what the kernel takes as one argument.
    let ids: Vec<String> = (0..30_000).map(|i| bulk.id(10_000_000 + i)).collect();
    let answers = (0..ids.len())
        .map(|_| {
            Ok(CommandOutput {
                code: Some(bulk.ok_code),
                ..CommandOutput::ok("")
            })
        })
        .collect();
    let (s, runner) = open(adapter, Env::new(), bulk.settings.clone(), answers);
    block_on(s.cancel(&ids)).unwrap();
    let calls = runner.calls();
    assert!(
        calls.len() <= ids.len() / 1000,
        "{}: {} calls",
        adapter.name,
        calls.len()
    );
    assert!(
        calls
            .iter()
            .all(|c| c.args.iter().all(|a| a.len() < 128 * 1024)),
        "{}",
        adapter.name
    );

    // Garbage from the query command is an error naming it, never a panic.
    let (s, _) = open(
        adapter,
        Env::new(),
        bulk.settings.clone(),
        vec![Ok(CommandOutput::ok("\u{0}garbage|||\nmore garbage\n"))],
    );
    let err = block_on(s.query(&["1".into()])).unwrap_err();
    assert!(err.command().is_some(), "{}: {err}", adapter.name);
    let _ = dir;
}

#[test]
fn every_adapter_passes_the_conformance_suite() {
    let adapters = adapters_with_folders();
    assert!(!adapters.is_empty());
    for (adapter, dir) in adapters {
        let cases = load_cases(&dir);
        assert!(
            !cases.allocation.is_empty()
                && !cases.submit.is_empty()
                && !cases.query.is_empty()
                && !cases.cancel.is_empty()
                && !cases.render.is_empty(),
            "{}: the table must cover allocations, render, submit, query and cancel",
            adapter.name
        );
        allocations(adapter, &dir, &cases);
        addresses(adapter, &dir, &cases);
        fan_outs(adapter, &dir, &cases);
        renders(adapter, &cases);
        submits(adapter, &dir, &cases);
        queries(adapter, &dir, &cases);
        cancels(adapter, &dir, &cases);
        common_rules(adapter, &dir, &cases.bulk);
    }
}
