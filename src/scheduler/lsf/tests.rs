use std::path::Path;

use super::*;
use crate::scheduler::command::Recorded;
use crate::scheduler::{JobState, Settings};

fn env(pairs: &[(&str, &str)]) -> Env {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn lsf_on(host: &str, pairs: &[(&str, &str)]) -> Lsf {
    lsf_with(host, pairs, Settings::new(), vec![])
}

fn lsf_with(
    host: &str,
    pairs: &[(&str, &str)],
    settings: Settings,
    answers: Vec<CommandOutput>,
) -> Lsf {
    Lsf::open(Setup {
        env: env(pairs),
        settings,
        runner: Arc::new(Recorded::new(answers.into_iter().map(Ok))),
        hostname: host.to_string(),
    })
    .unwrap()
}

fn settings(text: &str) -> Settings {
    toml::from_str(text).unwrap()
}

fn host_names(a: &Allocation) -> Vec<(&str, Option<u32>)> {
    a.hosts.iter().map(|h| (h.name.as_str(), h.cpus)).collect()
}

#[test]
fn allocation_from_the_host_file_first() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("1700000000.42.hostfile");
    std::fs::write(
        &file,
        "hostA\nhostA\nhostA\nhostA\nhostB\nhostB\nhostB\nhostB\n",
    )
    .unwrap();
    let path = file.to_str().unwrap();
    // The host file wins over the variables (which disagree here on purpose).
    let s = lsf_on(
        "hostB",
        &[
            ("LSB_JOBID", "42"),
            ("LSB_DJOB_HOSTFILE", path),
            ("LSB_MCPU_HOSTS", "hostX 1"),
        ],
    );
    let a = s.allocation().unwrap();
    assert_eq!(a.job_id, "42");
    assert_eq!(host_names(&a), [("hostA", Some(4)), ("hostB", Some(4))]);
    assert_eq!(a.head().name, "hostA");
    assert_eq!(a.this_node, "hostB");
    let g = s.node_grant(&a).unwrap();
    assert_eq!(g.cpus, Some(4));
    assert_eq!(g.memory_bytes, None);
    assert_eq!(g.gpus, GpuGrant::Unknown);
}

#[test]
fn an_unreadable_host_file_falls_back_to_the_variables() {
    let s = lsf_on(
        "hostA",
        &[
            ("LSB_JOBID", "7"),
            ("LSB_DJOB_HOSTFILE", "/nonexistent/7.hostfile"),
            ("LSB_MCPU_HOSTS", "hostA 2 hostB 1"),
        ],
    );
    let a = s.allocation().unwrap();
    assert_eq!(host_names(&a), [("hostA", Some(2)), ("hostB", Some(1))]);
    // With nothing to fall back on, the file is the error.
    let s = lsf_on(
        "hostA",
        &[
            ("LSB_JOBID", "7"),
            ("LSB_DJOB_HOSTFILE", "/nonexistent/7.hostfile"),
        ],
    );
    let err = s.allocation().unwrap_err().to_string();
    assert!(
        err.contains("LSB_DJOB_HOSTFILE=\"/nonexistent/7.hostfile\"")
            && err.contains("cannot read"),
        "{err}"
    );
    // A FIFO is never read (it would block).
    let tmp = tempfile::tempdir().unwrap();
    let fifo = tmp.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let s = lsf_on(
        "hostA",
        &[
            ("LSB_JOBID", "7"),
            ("LSB_DJOB_HOSTFILE", fifo.to_str().unwrap()),
        ],
    );
    let err = s.allocation().unwrap_err().to_string();
    assert!(err.contains("not a regular file"), "{err}");
}

#[test]
fn allocation_from_lsb_hosts_last() {
    let s = lsf_on(
        "hostB",
        &[("LSB_JOBID", "8"), ("LSB_HOSTS", "hostA hostA hostB")],
    );
    let a = s.allocation().unwrap();
    assert_eq!(host_names(&a), [("hostA", Some(2)), ("hostB", Some(1))]);
    assert_eq!(s.node_grant(&a).unwrap().cpus, Some(1));
}

#[test]
fn this_host_by_full_or_short_name() {
    let vars = [
        ("LSB_JOBID", "9"),
        (
            "LSB_MCPU_HOSTS",
            "n1.cluster.example.com 2 n2.cluster.example.com 2",
        ),
    ];
    for (hostname, want) in [
        ("n2.cluster.example.com", "n2.cluster.example.com"),
        ("n2", "n2.cluster.example.com"),
        ("N2.Cluster.Example.Com", "n2.cluster.example.com"),
        ("n2.other-domain", "n2.cluster.example.com"),
    ] {
        let a = lsf_on(hostname, &vars).allocation().unwrap();
        assert_eq!(a.this_node, want, "{hostname}");
    }
    // Short names in the allocation, a fully qualified hostname.
    let a = lsf_on(
        "n2.cluster.example.com",
        &[("LSB_JOBID", "9"), ("LSB_MCPU_HOSTS", "n1 2 n2 2")],
    )
    .allocation()
    .unwrap();
    assert_eq!(a.this_node, "n2");
    for (hostname, vars, why) in [
        ("x9", &vars[..], "none of these hosts"),
        ("", &vars[..], "hostname is unknown"),
        (
            "n1",
            &[("LSB_JOBID", "9"), ("LSB_MCPU_HOSTS", "n1.a 1 n1.b 1")][..],
            "several",
        ),
    ] {
        let err = lsf_on(hostname, vars).allocation().unwrap_err().to_string();
        assert!(err.contains("LSB_MCPU_HOSTS") && err.contains(why), "{err}");
    }
}

#[test]
fn outside_a_job_or_without_hosts_is_not_an_allocation() {
    let err = lsf_on("h", &[]).allocation().unwrap_err().to_string();
    assert!(
        err.contains("LSB_JOBID") && err.contains("--scheduler local"),
        "{err}"
    );
    let err = lsf_on("h", &[("LSB_JOBID", "1")])
        .allocation()
        .unwrap_err()
        .to_string();
    assert!(err.contains("LSB_MCPU_HOSTS"), "{err}");
}

fn alloc_of(hosts: &[&str]) -> Allocation {
    Allocation {
        scheduler: NAME,
        job_id: "1".into(),
        hosts: hosts
            .iter()
            .map(|h| Host {
                name: h.to_string(),
                cpus: Some(1),
            })
            .collect(),
        this_node: hosts[0].to_string(),
    }
}

fn args_of(cmd: &Command) -> Vec<String> {
    cmd.get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect()
}

#[test]
fn fan_out_is_one_blaunch_over_the_other_hosts() {
    let s = lsf_with("a", &[], settings("launcher = \"blaunch\""), vec![]);
    let argv: Vec<OsString> = vec!["/opt/ray-hpc".into(), "agent".into()];
    let cmd = s
        .fan_out(&alloc_of(&["a", "b", "c"]), &argv)
        .unwrap()
        .unwrap();
    assert_eq!(cmd.get_program(), "blaunch");
    assert_eq!(args_of(&cmd), ["-z", "b c", "/opt/ray-hpc", "agent"]);
    assert!(s.fan_out(&alloc_of(&["a"]), &argv).unwrap().is_none());
    // More hosts than one argument holds: a clear error, not a failed exec.
    let many: Vec<String> = (0..20_000).map(|i| format!("host-{i:08}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let err = s.fan_out(&alloc_of(&many), &argv).unwrap_err().to_string();
    assert!(err.contains("blaunch -z"), "{err}");
}

#[test]
fn auto_launcher_follows_path() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_str().unwrap().to_string();
    let argv: Vec<OsString> = vec!["/opt/ray-hpc".into()];
    let program = |pairs: &[(&str, &str)]| {
        lsf_on("a", pairs)
            .fan_out(&alloc_of(&["a", "b"]), &argv)
            .map(|c| c.unwrap().get_program().to_string_lossy().into_owned())
    };
    let err = program(&[("PATH", &dir)]).unwrap_err().to_string();
    assert!(
        err.contains("[lsf]") && err.contains("neither blaunch nor lsrun"),
        "{err}"
    );
    std::fs::write(tmp.path().join("lsrun"), "").unwrap();
    assert_eq!(program(&[("PATH", &dir)]).unwrap(), "sh");
    std::fs::write(tmp.path().join("blaunch"), "").unwrap();
    assert_eq!(program(&[("PATH", &dir)]).unwrap(), "blaunch");
}

/// Writes an executable script that records its arguments, one per line, to `log.<its pid>`
/// (a file per call: calls running at once must not interleave their lines).
fn recorder(dir: &Path, name: &str, log: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    let script = format!(
        "#!/bin/sh\n{{ echo \"--- $#\"; for a in \"$@\"; do printf '%s\\n' \"$a\"; done; }} > {}.$$\n",
        log.display()
    );
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The calls a recorder logged, each as its argument list.
fn recorded_calls(log: &Path) -> Vec<Vec<String>> {
    let prefix = format!("{}.", log.file_name().unwrap().to_string_lossy());
    let mut text = String::new();
    for entry in std::fs::read_dir(log.parent().unwrap()).unwrap().flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            text += &std::fs::read_to_string(entry.path()).unwrap();
        }
    }
    let mut calls: Vec<Vec<String>> = Vec::new();
    for line in text.lines() {
        if line.starts_with("--- ") {
            calls.push(Vec::new());
        } else {
            calls.last_mut().unwrap().push(line.to_string());
        }
    }
    calls.sort();
    calls
}

#[test]
fn the_lsrun_fan_out_starts_each_host_with_the_exact_argv() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("calls.log");
    recorder(tmp.path(), "lsrun", &log);
    let s = lsf_with("h1", &[], settings("launcher = \"lsrun\""), vec![]);
    let argv: Vec<OsString> = vec![
        "/opt/my tools/ray-hpc".into(),
        "agent".into(),
        "--config".into(),
        "/home/u/it's \"here\" $HOME `x`;.toml".into(),
    ];
    let mut cmd = s
        .fan_out(&alloc_of(&["h1", "h2", "h3"]), &argv)
        .unwrap()
        .unwrap();
    let path = format!(
        "{}:{}",
        tmp.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let status = cmd.env("PATH", path).status().unwrap();
    assert!(status.success());
    let want: Vec<String> = argv
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let mut expected: Vec<Vec<String>> = ["h2", "h3"]
        .iter()
        .map(|h| {
            let mut call = vec!["-m".to_string(), h.to_string()];
            call.extend(want.iter().cloned());
            call
        })
        .collect();
    expected.sort();
    assert_eq!(recorded_calls(&log), expected);
}

#[test]
fn the_lsrun_fan_out_exits_with_a_failure_of_any_host() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let lsrun = tmp.path().join("lsrun");
    // Fails on h3 only.
    std::fs::write(&lsrun, "#!/bin/sh\n[ \"$2\" = h3 ] && exit 7\nexit 0\n").unwrap();
    std::fs::set_permissions(&lsrun, std::fs::Permissions::from_mode(0o755)).unwrap();
    let s = lsf_with("h1", &[], settings("launcher = \"lsrun\""), vec![]);
    let mut cmd = s
        .fan_out(&alloc_of(&["h1", "h2", "h3", "h4"]), &["x".into()])
        .unwrap()
        .unwrap();
    let path = format!(
        "{}:{}",
        tmp.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let status = cmd.env("PATH", path).status().unwrap();
    assert_eq!(status.code(), Some(7));
}

#[tokio::test]
async fn host_addresses_by_name_resolution_without_a_command() {
    let s = lsf_on("localhost", &[]);
    let alloc = alloc_of(&["localhost", "127.0.0.9", "no-such-host.invalid"]);
    let got = s.host_addresses(&alloc).await.unwrap();
    assert_eq!(got.get("localhost"), Some(&"127.0.0.1".parse().unwrap()));
    assert_eq!(got.get("127.0.0.9"), Some(&"127.0.0.9".parse().unwrap()));
    assert!(!got.contains_key("no-such-host.invalid"), "{got:?}");
}

#[tokio::test]
async fn auto_bjobs_format_falls_back_to_the_table_once_and_remembers() {
    let no_json = CommandOutput::failed(255, "bjobs: invalid option -- 'o'\nUsage: bjobs [-h] ...");
    let table = CommandOutput::ok(
        "JOBID   USER    STAT  QUEUE      FROM_HOST   EXEC_HOST   JOB_NAME   SUBMIT_TIME\n\
         5       u       RUN   normal     login       n1:n2       rh-c1      Oct 22 13:51\n",
    );
    let runner = Arc::new(Recorded::new([Ok(no_json), Ok(table.clone()), Ok(table)]));
    let s = Lsf::open(Setup {
        env: Env::new(),
        settings: Settings::new(),
        runner: runner.clone(),
        hostname: String::new(),
    })
    .unwrap();
    let jobs = s.query(&["5".into()]).await.unwrap();
    assert_eq!(jobs[0].state, JobState::Running);
    let jobs = s.query_named("rh-c1").await.unwrap();
    assert_eq!(jobs[0].name, "rh-c1");
    let calls: Vec<String> = runner.calls().iter().map(|c| c.to_string()).collect();
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert!(calls[0].contains("-json"), "{calls:?}");
    assert_eq!(calls[1], "bjobs -w -a 5");
    assert_eq!(calls[2], "bjobs -w -J rh-c1");
}

#[tokio::test]
async fn bjobs_format_json_says_how_to_fix_a_bjobs_without_it() {
    let no_json = CommandOutput::failed(255, "bjobs: invalid option -- 'o'");
    let s = lsf_with("", &[], settings("bjobs_format = \"json\""), vec![no_json]);
    let err = s.query(&["5".into()]).await.unwrap_err().to_string();
    assert!(
        err.contains("[lsf]") && err.contains("bjobs_format = \"table\""),
        "{err}"
    );
}

#[tokio::test]
async fn ids_that_would_mean_every_job_never_reach_a_command() {
    let s = lsf_on("", &[]);
    for ids in [
        vec!["0".to_string()],
        vec!["1".into(), "".into()],
        vec!["-u all".into()],
    ] {
        let err = s.cancel(&ids).await.unwrap_err().to_string();
        assert!(err.contains("not an LSF job id"), "{err}");
        let err = s.query(&ids).await.unwrap_err().to_string();
        assert!(err.contains("not an LSF job id"), "{err}");
    }
}

#[tokio::test]
async fn a_bsub_that_exits_zero_without_submitting_is_a_refusal() {
    let s = lsf_with(
        "",
        &[],
        Settings::new(),
        vec![CommandOutput::ok(
            "Bad resource requirement syntax. Job not submitted.\n",
        )],
    );
    let err = s
        .submit("#!/bin/sh\n", &JobRequest::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SchedulerError::Refused { message, .. } if message.contains("Bad resource requirement")),
        "{err}"
    );
}

/// `[lsf]` through the config parser: every problem at its line and column.
#[test]
fn the_config_section_is_checked_where_it_is_written() {
    use crate::config::{Config, ProblemKind};
    let cases: &[(&str, &str, ProblemKind, &str)] = &[
        (
            "[lsf]\nlauncher = \"ssh\"",
            "2:12",
            ProblemKind::BadValue,
            "lsf.launcher = \"ssh\" must be one of auto, blaunch, lsrun",
        ),
        (
            "[lsf]\nbjobs_format = \"xml\"",
            "2:16",
            ProblemKind::BadValue,
            "must be one of auto, json, table",
        ),
        (
            "[lsf]\nextra_directives = [\"-x\"]",
            "2:21",
            ProblemKind::BadValue,
            "must be one line starting with `#BSUB `",
        ),
        (
            "[lsf]\nlauncher = [\"blaunch\"]",
            "2:12",
            ProblemKind::WrongType,
            "must be a string",
        ),
        (
            "[lsf]\nlaunchers = \"auto\"",
            "2:1",
            ProblemKind::UnknownKey,
            "unknown key `lsf.launchers`, did you mean `lsf.launcher`?",
        ),
        (
            "scheduler = \"lsf\"\n[[node_types]]\nname = \"a\"\ncpus = 1\nextra_directives = [\"#SBATCH -N 1\"]",
            "5:21",
            ProblemKind::BadValue,
            "is not a header line of scheduler \"lsf\" (lsf: must be one line starting with `#BSUB `)",
        ),
    ];
    for (text, at, kind, piece) in cases {
        let err = Config::parse(text, "t.toml").unwrap_err();
        assert_eq!(err.problems.len(), 1, "{text:?}: {err}");
        let p = &err.problems[0];
        let loc = p.location.unwrap().to_string();
        assert_eq!(
            (loc.as_str(), p.kind),
            (*at, *kind),
            "{text:?}: {}",
            p.message
        );
        assert!(
            p.message.contains(piece),
            "{text:?}: {:?} lacks {piece:?}",
            p.message
        );
    }
    let c = Config::parse(SETTINGS.example, "t.toml").unwrap();
    let s = Lsf::open(Setup {
        env: Env::new(),
        settings: c.scheduler_settings[NAME].clone(),
        runner: Arc::new(Recorded::default()),
        hostname: String::new(),
    })
    .unwrap();
    assert_eq!(s.settings.launcher, Launcher::Lsrun);
    assert_eq!(s.settings.bjobs_format, BjobsFormat::Table);
    let req = JobRequest {
        name: "rh-c".into(),
        nodes: 1,
        directives: vec!["#BSUB -G grp".into()],
        output: crate::scheduler::OutputPath("/h/{job_id}.out".into()),
        ..Default::default()
    };
    let script = s.render_job(&req).unwrap();
    let x = script.find("#BSUB -x\n").expect("the section's line");
    let g = script.find("#BSUB -G grp\n").expect("the request's line");
    assert!(x < g, "{script}");
}

/// Polls `done` until it holds; panics with `what` after a generous deadline.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn stopping_the_lsrun_fan_out_passes_sigterm_to_every_lsrun() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("log");
    let lsrun = tmp.path().join("lsrun");
    std::fs::write(
        &lsrun,
        format!(
            "#!/bin/sh\nlog={}\ntrap 'echo \"term $2\" >> $log; exit 0' TERM\necho \"start $2\" >> $log\nwhile :; do sleep 0.05; done\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&lsrun, std::fs::Permissions::from_mode(0o755)).unwrap();
    let s = lsf_with("h1", &[], settings("launcher = \"lsrun\""), vec![]);
    let mut cmd = s
        .fan_out(&alloc_of(&["h1", "h2", "h3"]), &["agent".into()])
        .unwrap()
        .unwrap();
    let path = format!(
        "{}:{}",
        tmp.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut child = cmd.env("PATH", path).spawn().unwrap();
    let lines = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_until("both lsruns started", || {
        lines().matches("start").count() == 2
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success());
    let text = lines();
    assert!(
        text.contains("term h2") && text.contains("term h3"),
        "{text}"
    );
}

#[test]
fn a_sigterm_while_lsruns_are_still_starting_reaches_every_one_started() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("log");
    let lsrun = tmp.path().join("lsrun");
    // The first lsrun stops the fan-out itself, while the shell is still starting the others.
    std::fs::write(
        &lsrun,
        format!(
            "#!/bin/sh\nlog={}\ntrap 'echo \"term $2\" >> $log; exit 0' TERM\n\
             echo \"start $2 $$\" >> $log\n[ \"$2\" = h2 ] && kill -TERM $PPID\n\
             while :; do sleep 0.05; done\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&lsrun, std::fs::Permissions::from_mode(0o755)).unwrap();
    let hosts: Vec<String> = (1..=40).map(|i| format!("h{i}")).collect();
    let names: Vec<&str> = hosts.iter().map(String::as_str).collect();
    let s = lsf_with("h1", &[], settings("launcher = \"lsrun\""), vec![]);
    let mut cmd = s
        .fan_out(&alloc_of(&names), &["agent".into()])
        .unwrap()
        .unwrap();
    let path = format!(
        "{}:{}",
        tmp.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut child = cmd.env("PATH", path).spawn().unwrap();
    let lines = || std::fs::read_to_string(&log).unwrap_or_default();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let ended = loop {
        if child.try_wait().unwrap().is_some() {
            break true;
        }
        if std::time::Instant::now() >= deadline {
            break false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    // Nothing of this test may outlive it, whatever happened.
    for line in lines().lines().filter(|l| l.starts_with("start ")) {
        if let Some(pid) = line.split(' ').nth(2).and_then(|p| p.parse().ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = lines();
    assert!(ended, "the fan-out shell still waits for an lsrun: {text}");
    for line in text.lines().filter(|l| l.starts_with("start ")) {
        let host = line.split(' ').nth(1).unwrap();
        assert!(
            text.contains(&format!("term {host}\n")),
            "{host} never got the SIGTERM: {text}"
        );
    }
}
