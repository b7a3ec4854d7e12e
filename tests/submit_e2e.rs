//! `ray-hpc submit` end to end against the real Ray: one local cluster (`ray-hpc run` with no
//! driver, in the background) takes every case, then it is stopped with SIGTERM and no process of
//! the test may survive (Ray's job drivers inherit the cluster's environment, RAY_HPC_HOME
//! included, so they are caught too).
//!
//! Cases: a job's output and exit status (0, 1), a working dir the job reads (layout, modes,
//! excludes, no second upload), `--env`, `--no-wait`, Ctrl-C (the job is stopped, exit 130), a
//! job stopped from outside (exit 2), Ray's own `ray job submit` with only RAY_ADDRESS,
//! RAY_AUTH_MODE and RAY_AUTH_TOKEN_PATH from the record (and refused without the token), and
//! the errors: an unknown name, a refused token, an unreachable dashboard.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const READY_DEADLINE: Duration = Duration::from_secs(120);
const JOB_DEADLINE: Duration = Duration::from_secs(90);
const TEARDOWN_DEADLINE: Duration = Duration::from_secs(60);
const LEFTOVER_WAIT: Duration = Duration::from_secs(20);

/// The background `ray-hpc run`; SIGTERM and a bounded wait when dropped (a failed test too).
struct Cluster {
    child: Option<Child>,
    log: PathBuf,
}

impl Cluster {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then wait for `run` to exit; returns its exit status.
    fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + TEARDOWN_DEADLINE;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

fn start_cluster(home: &TestHome, name: &str) -> (Cluster, serde_json::Value) {
    let log = home.path().join("run.log");
    let out = std::fs::File::create(&log).unwrap();
    let child = home
        .command(&["--scheduler", "local", "run", "--name", name])
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let mut cluster = Cluster {
        child: Some(child),
        log,
    };
    let record_path = home.path().join(format!("clusters/{name}/cluster.json"));
    let log_path = cluster.log.clone();
    let read_log = move || std::fs::read_to_string(&log_path).unwrap_or_default();
    let record = wait_for(
        "the cluster to be READY",
        READY_DEADLINE,
        || {
            if let Some(Ok(Some(status))) = cluster.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "`ray-hpc run` exited ({status}) before READY:\n{}",
                    read_log()
                );
            }
            let text = std::fs::read_to_string(&record_path).ok()?;
            let rec: serde_json::Value = serde_json::from_str(&text).ok()?;
            (rec["state"] == "READY").then_some(rec)
        },
        &read_log,
    );
    (cluster, record)
}

/// Runs a command to its end, with a deadline.
fn run_with_deadline(mut cmd: Command, within: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut v = vec![];
        let _ = stdout.read_to_end(&mut v);
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = vec![];
        let _ = stderr.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} did not finish within {within:?}; stderr so far:\n{}",
                String::from_utf8_lossy(&err_t.join().unwrap())
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: out_t.join().unwrap(),
        stderr: err_t.join().unwrap(),
    }
}

fn submit(home: &TestHome, args: &[&str]) -> Output {
    let mut all = vec!["submit"];
    all.extend_from_slice(args);
    run_with_deadline(home.command(&all), JOB_DEADLINE)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A `submit` that follows a long job in the background, its output lines on channels.
struct Following {
    child: Child,
    out: mpsc::Receiver<String>,
    err: mpsc::Receiver<String>,
    err_seen: Vec<String>,
}

fn lines_of(r: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Following {
    fn start(home: &TestHome, args: &[&str]) -> Self {
        let mut all = vec!["submit"];
        all.extend_from_slice(args);
        let mut child = home
            .command(&all)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = lines_of(child.stdout.take().unwrap());
        let err = lines_of(child.stderr.take().unwrap());
        Following {
            child,
            out,
            err,
            err_seen: vec![],
        }
    }

    /// Waits for a stdout line equal to `line`.
    fn wait_for_line(&mut self, line: &str) {
        let deadline = Instant::now() + JOB_DEADLINE;
        let mut seen = vec![];
        loop {
            match self.out.recv_timeout(Duration::from_millis(200)) {
                Ok(l) if l.trim() == line => return,
                Ok(l) => seen.push(l),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    self.drain_err();
                    panic!(
                        "submit ended before printing {line:?}; stdout: {seen:#?}\nstderr: {:#?}",
                        self.err_seen
                    );
                }
            }
            if Instant::now() >= deadline {
                self.drain_err();
                panic!(
                    "no {line:?} within {JOB_DEADLINE:?}; stdout: {seen:#?}\nstderr: {:#?}",
                    self.err_seen
                );
            }
        }
    }

    fn drain_err(&mut self) {
        while let Ok(l) = self.err.try_recv() {
            self.err_seen.push(l);
        }
    }

    /// The submission id from `ray-hpc: submitted job <id> ...`.
    fn job_id(&mut self) -> String {
        let deadline = Instant::now() + JOB_DEADLINE;
        loop {
            self.drain_err();
            if let Some(id) = self.err_seen.iter().find_map(|l| {
                l.strip_prefix("ray-hpc: submitted job ")
                    .and_then(|r| r.split_whitespace().next())
            }) {
                return id.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no submission id: {:#?}",
                self.err_seen
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), sig).unwrap();
    }

    /// Waits for the exit; returns (exit code, all of stderr).
    fn finish(mut self) -> (Option<i32>, String) {
        let deadline = Instant::now() + JOB_DEADLINE;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                self.drain_err();
                panic!("submit did not exit: {:#?}", self.err_seen);
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        // The pipes close with the process; collect the rest.
        while let Ok(l) = self.err.recv_timeout(Duration::from_secs(5)) {
            self.err_seen.push(l);
        }
        (status.code(), self.err_seen.join("\n"))
    }
}

/// Ray's own CLI with exactly the given variables (plus PATH, HOME and the test's marker).
fn ray_cli(home: &TestHome, vars: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(venv_bin().join("ray"));
    cmd.args(args)
        .env_clear()
        .env("PATH", test_path())
        // A HOME of our own: no ~/.ray/auth_token can lend a token.
        .env("HOME", home.path())
        .env("RAY_HPC_HOME", home.path())
        .current_dir(home.path());
    for (k, v) in vars {
        cmd.env(k, v);
    }
    run_with_deadline(cmd, JOB_DEADLINE)
}

/// Processes of this test whose command line holds `marker`.
fn processes_with(home: &TestHome, marker: &str) -> Vec<(i32, String)> {
    home.leftovers()
        .into_iter()
        .filter(|(_, cmd)| cmd.contains(marker))
        .collect()
}

fn working_dir(home: &TestHome) -> PathBuf {
    let wd = home.path().join("wd");
    std::fs::create_dir_all(wd.join("data")).unwrap();
    std::fs::create_dir_all(wd.join(".git")).unwrap();
    std::fs::create_dir_all(wd.join("__pycache__")).unwrap();
    std::fs::write(wd.join("data/input.txt"), "payload from the working dir\n").unwrap();
    std::fs::write(wd.join(".git/HEAD"), "ref: refs/heads/main\n").unwrap();
    std::fs::write(wd.join("__pycache__/x.pyc"), "junk").unwrap();
    std::fs::write(
        wd.join("read.py"),
        "import os, sys\n\
         print('read:', open('data/input.txt').read().strip())\n\
         print('top:', ','.join(sorted(os.listdir('.'))))\n\
         print('greeting:', sys.argv[1])\n",
    )
    .unwrap();
    let run = wd.join("run.sh");
    std::fs::write(&run, "#!/bin/sh\necho run.sh is executable\n").unwrap();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).unwrap();
    wd
}

fn fake_record(root: &Path, name: &str, record: &serde_json::Value, url: &str, token: &str) {
    use std::os::unix::fs::DirBuilderExt;
    let dir = root.join("clusters").join(name);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .unwrap();
    std::fs::set_permissions(
        root.join("clusters"),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    let token_path = dir.join("token");
    std::fs::write(&token_path, token).unwrap();
    std::fs::set_permissions(&token_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut rec = record.clone();
    rec["name"] = name.into();
    rec["dashboard_url"] = url.into();
    rec["token_path"] = token_path.display().to_string().into();
    let path = dir.join("cluster.json");
    std::fs::write(&path, serde_json::to_string_pretty(&rec).unwrap()).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn submit_runs_jobs_on_a_local_cluster() {
    let home = TestHome::new();
    let (mut cluster, record) = start_cluster(&home, "sub1");
    let url = record["dashboard_url"].as_str().unwrap().to_string();
    let token_path = record["token_path"].as_str().unwrap().to_string();
    assert_eq!(record["auth"], "token", "{record}");
    let t0 = Instant::now();

    // 1. A job's output reaches stdout; SUCCEEDED exits 0.
    let out = submit(
        &home,
        &["sub1", "--", "python", "-c", "print('hello from ray job')"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        stdout(&out).lines().any(|l| l == "hello from ray job"),
        "{}",
        text(&out)
    );
    assert!(stderr(&out).contains("SUCCEEDED"), "{}", text(&out));

    // 2. FAILED exits 1; an argument with spaces and quotes stays one argument.
    let out = submit(
        &home,
        &[
            "sub1",
            "--",
            "python",
            "-c",
            "import sys; print('args:', sys.argv[1:]); sys.exit(1)",
            "two words",
            "it's",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stdout(&out).contains(r#"args: ['two words', "it's"]"#),
        "{}",
        text(&out)
    );
    assert!(stderr(&out).contains("FAILED"), "{}", text(&out));

    // 3. --working-dir: the job runs in the uploaded copy (modes kept, .git and __pycache__
    // left out), --env reaches it, and the same contents are not uploaded twice.
    let wd = working_dir(&home);
    let wd_s = wd.to_str().unwrap();
    let job = ["sh", "-c", r#"./run.sh && python read.py "$GREETING""#];
    let mut args = vec![
        "sub1",
        "--working-dir",
        wd_s,
        "--env",
        "GREETING=hi there",
        "--",
    ];
    args.extend_from_slice(&job);
    let out = submit(&home, &args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let so = stdout(&out);
    assert!(so.contains("run.sh is executable"), "{}", text(&out));
    assert!(
        so.contains("read: payload from the working dir"),
        "{}",
        text(&out)
    );
    assert!(so.contains("top: data,read.py,run.sh\n"), "{}", text(&out));
    assert!(so.contains("greeting: hi there"), "{}", text(&out));
    assert!(stderr(&out).contains("uploaded"), "{}", text(&out));
    let out = submit(&home, &args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        stderr(&out).contains("already on the cluster"),
        "{}",
        text(&out)
    );

    // 4. Ray's own CLI, with only the record's address and token path.
    let with_token = [
        ("RAY_ADDRESS", url.as_str()),
        ("RAY_AUTH_MODE", "token"),
        ("RAY_AUTH_TOKEN_PATH", token_path.as_str()),
    ];
    let out = ray_cli(
        &home,
        &with_token,
        &[
            "job",
            "submit",
            "--",
            "python",
            "-c",
            "print('hello via ray job submit')",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        stdout(&out).contains("hello via ray job submit"),
        "{}",
        text(&out)
    );
    let out = ray_cli(
        &home,
        &[("RAY_ADDRESS", url.as_str())],
        &["job", "submit", "--", "python", "-c", "print('no token')"],
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("Unauthorized: Missing authentication token"),
        "refused for want of a token: {}",
        text(&out)
    );
    assert!(!stdout(&out).contains("no token\n"), "{}", text(&out));

    // 5. --no-wait prints the submission id alone.
    let out = submit(
        &home,
        &["sub1", "--no-wait", "--", "python", "-c", "print('later')"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let id = stdout(&out).trim().to_string();
    assert!(
        id.starts_with("raysubmit_") && !id.contains(char::is_whitespace),
        "{}",
        text(&out)
    );

    // 6. Ctrl-C stops the job and exits 130; the job's process is gone.
    let marker = "ctrl-c-job-7d1f";
    let long_job =
        format!("import time; print('started', flush=True); time.sleep(600)  # {marker}");
    let mut f = Following::start(&home, &["sub1", "--", "python", "-c", &long_job]);
    f.wait_for_line("started");
    assert!(!processes_with(&home, marker).is_empty());
    f.signal(Signal::SIGINT);
    let (code, err) = f.finish();
    assert_eq!(code, Some(130), "{err}");
    assert!(err.contains("STOPPED"), "{err}");
    wait_for(
        "the stopped job's process to go",
        LEFTOVER_WAIT,
        || processes_with(&home, marker).is_empty().then_some(()),
        || format!("{:#?}", processes_with(&home, marker)),
    );

    // 7. A job stopped from outside (Ray's CLI) exits 2.
    let marker = "stopped-job-2c9a";
    let long_job =
        format!("import time; print('started', flush=True); time.sleep(600)  # {marker}");
    let mut f = Following::start(&home, &["sub1", "--", "python", "-c", &long_job]);
    f.wait_for_line("started");
    let id = f.job_id();
    let out = ray_cli(&home, &with_token, &["job", "stop", "--no-wait", &id]);
    assert!(out.status.success(), "{}", text(&out));
    let (code, err) = f.finish();
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains(&format!("job {id} STOPPED")), "{err}");

    // 8. Errors: an unknown name lists the known ones; a refused token names its file; an
    // unreachable dashboard names its URL. None of them is a panic.
    let out = submit(&home, &["nosuch", "--", "true"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        stderr(&out).contains("known clusters: sub1"),
        "{}",
        text(&out)
    );
    let other = tempfile::Builder::new()
        .prefix("rh-test-fake-")
        .tempdir_in("/tmp")
        .unwrap();
    fake_record(other.path(), "badtoken", &record, &url, "not-the-token");
    let dead_port = std::net::TcpListener::bind("127.0.0.2:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead_url = format!("http://127.0.0.2:{dead_port}");
    fake_record(other.path(), "gone", &record, &dead_url, "x");
    let fake = |name: &str| {
        let mut cmd = home.command(&["submit", name, "--", "true"]);
        cmd.env("RAY_HPC_HOME", other.path());
        run_with_deadline(cmd, JOB_DEADLINE)
    };
    let out = fake("badtoken");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let e = stderr(&out);
    assert!(e.contains("refused the token"), "{e}");
    assert!(
        e.contains(&format!(
            "{}/clusters/badtoken/token",
            other.path().display()
        )),
        "{e}"
    );
    let out = fake("gone");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let e = stderr(&out);
    assert!(e.contains(&dead_url), "{e}");
    assert!(e.contains("ray-hpc status gone"), "{e}");
    for out in [fake("badtoken"), fake("gone")] {
        assert!(!stderr(&out).contains("panicked"), "{}", text(&out));
    }
    eprintln!("cases took {:?}", t0.elapsed());

    // Teardown: SIGTERM to `run`; nothing of this test may survive, temp dirs included.
    let status = cluster
        .stop()
        .expect("`ray-hpc run` did not exit after SIGTERM");
    assert_eq!(
        status.code(),
        Some(143),
        "`run` on SIGTERM:\n{}",
        cluster.log()
    );
    home.assert_no_leftovers(LEFTOVER_WAIT);
    for dir in temp_dirs(&record) {
        assert!(!dir.exists(), "temp dir {} was not removed", dir.display());
    }
}
