//! Shared pieces of the end-to-end tests: paths, a per-test registry home, waiting on
//! conditions (never fixed sleeps), and the check that a test left no process behind.
#![allow(dead_code)]

pub mod job;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn ray_hpc() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ray-hpc"))
}

/// The venv with the real Ray; tests fail (not skip) without it.
pub fn venv_bin() -> PathBuf {
    let bin = repo().join(".venv/bin");
    assert!(
        bin.join("ray").exists(),
        "{} is missing: run scripts/setup (it installs ray[default]==2.60.0 into .venv)",
        bin.join("ray").display()
    );
    bin
}

/// PATH with the venv (ray, python) and ray-hpc first.
pub fn test_path() -> String {
    format!(
        "{}:{}:{}",
        ray_hpc().parent().unwrap().display(),
        venv_bin().display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// True when the run must include the Slurm end-to-end tests (tests/run sets it).
pub fn e2e_required() -> bool {
    std::env::var("RAY_HPC_E2E").is_ok_and(|v| v == "1")
}

/// Whether the Slurm test bed answers. Without one a test is skipped (said on stderr), unless
/// the run requires it (RAY_HPC_E2E=1, as tests/run sets), where that is a failure.
pub fn slurm_testbed() -> bool {
    let up = std::process::Command::new("sinfo")
        .args(["-h", "-o", "%T"])
        .output()
        .is_ok_and(|o| o.status.success() && !o.stdout.is_empty());
    assert!(
        up || !e2e_required(),
        "RAY_HPC_E2E=1 but no Slurm controller answers: run slurm/testbed/up"
    );
    if !up {
        eprintln!("SKIPPED: no Slurm test bed (run tests/run, or slurm/testbed/up first)");
    }
    up
}

/// A registry home unique to one test. Every process a test's clusters start inherits
/// RAY_HPC_HOME, which is how `leftovers` finds them.
pub struct TestHome {
    pub dir: tempfile::TempDir,
}

impl TestHome {
    pub fn new() -> Self {
        // Under /tmp, not target/: sbatch output and the registry must be reachable from the
        // test bed's "nodes" (the same machine here, a shared filesystem on a real cluster).
        let dir = tempfile::Builder::new()
            .prefix("rh-test-")
            .tempdir_in("/tmp")
            .unwrap();
        TestHome { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(ray_hpc());
        cmd.args(args)
            .env("RAY_HPC_HOME", self.path())
            .env("PATH", test_path())
            .env_remove("RAY_ADDRESS")
            .env_remove("VIRTUAL_ENV")
            .env_remove("RAY_HPC_CONFIG")
            .env_remove("SLURM_JOB_ID")
            .current_dir(self.path());
        cmd
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// cluster.json of the only cluster in this home.
    pub fn cluster_record(&self) -> serde_json::Value {
        let dir = self.path().join("clusters");
        let entries: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .flatten()
            .collect();
        assert_eq!(
            entries.len(),
            1,
            "expected one cluster in {}",
            dir.display()
        );
        let text = std::fs::read_to_string(entries[0].path().join("cluster.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    pub fn cluster_records(&self) -> Vec<serde_json::Value> {
        let dir = self.path().join("clusters");
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return vec![];
        };
        rd.flatten()
            .filter_map(|e| std::fs::read_to_string(e.path().join("cluster.json")).ok())
            .map(|t| serde_json::from_str(&t).unwrap())
            .collect()
    }

    /// Processes (pid, command line) whose environment holds this test's RAY_HPC_HOME.
    pub fn leftovers(&self) -> Vec<(i32, String)> {
        let marker = format!("RAY_HPC_HOME={}", self.path().display());
        processes_with_env(&marker)
    }

    /// Waits for every process of this test to be gone; panics naming the survivors.
    pub fn assert_no_leftovers(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let left = self.leftovers();
            if left.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                // Do not leak them into the next test either.
                for (pid, _) in &left {
                    kill9(*pid);
                }
                panic!("processes left behind after {within:?}: {left:#?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for TestHome {
    fn drop(&mut self) {
        // A failed test must not leave its processes, or the temp dirs its SIGKILLed agents
        // could not remove, to the next one.
        for (pid, _) in self.leftovers() {
            kill9(pid);
        }
        for record in self.cluster_records() {
            for dir in temp_dirs(&record) {
                let _ = std::fs::remove_dir_all(&dir);
                let _ = std::fs::remove_file(format!("{}.token", dir.display()));
            }
        }
    }
}

/// Kills one process of this test's by its pid.
fn kill9(pid: i32) {
    let _ = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status();
}

pub fn processes_with_env(marker: &str) -> Vec<(i32, String)> {
    let me = std::process::id() as i32;
    let mut found = vec![];
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if env.split(|b| *b == 0).any(|kv| kv == marker.as_bytes()) {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if stat
                .rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'))
            {
                continue; // a zombie holds nothing
            }
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            found.push((pid, String::from_utf8_lossy(&cmd).replace('\0', " ")));
        }
    }
    found
}

/// Polls `check` until it returns Some, or panics with `what` and `explain()` at the deadline.
pub fn wait_for<T>(
    what: &str,
    within: Duration,
    mut check: impl FnMut() -> Option<T>,
    explain: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!(
                "timed out after {within:?} waiting for {what}\n{}",
                explain()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn text(out: &Output) -> String {
    format!(
        "exit: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The JSON report printed by tests/drivers/cluster_check.py.
pub fn driver_report(output: &str) -> serde_json::Value {
    let line = output
        .lines()
        .find_map(|l| l.strip_prefix("REPORT "))
        .unwrap_or_else(|| panic!("no REPORT line in:\n{output}"));
    serde_json::from_str(line).unwrap()
}

/// Temp dirs of every node of a cluster record.
pub fn temp_dirs(record: &serde_json::Value) -> Vec<PathBuf> {
    record["nodes"]
        .as_array()
        .map(|nodes| {
            nodes
                .iter()
                .filter_map(|n| n["temp_dir"].as_str().map(PathBuf::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Environment from `export NAME=value` lines, as `ray-hpc up` prints them.
pub fn exports(stdout: &str) -> Vec<(String, String)> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
        .collect()
}

/// A job of 2 CPUs on each of the given test-bed nodes, so that other jobs must queue;
/// cancelled when dropped.
pub struct Blocker(String);

impl Blocker {
    /// Fills `nodes` (a Slurm hostlist) and waits until the blocker runs.
    pub fn fill(nodes: &str, count: u32) -> Self {
        let out = Command::new("sbatch")
            .args([
                "--parsable",
                "-N",
                &count.to_string(),
                "-c",
                "2",
                "-w",
                nodes,
            ])
            .args([
                "--time=10",
                "-J",
                "blocker",
                "-o",
                "/dev/null",
                "--wrap",
                "sleep 600",
            ])
            // Not part of any test's cluster: no RAY_HPC_HOME marker.
            .env_remove("RAY_HPC_HOME")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        wait_for(
            "the blocker to run",
            Duration::from_secs(60),
            || {
                let o = Command::new("squeue")
                    .args(["-h", "-o", "%T", "-j", &id])
                    .output()
                    .unwrap();
                (String::from_utf8_lossy(&o.stdout).trim() == "RUNNING").then_some(())
            },
            String::new,
        );
        Blocker(id)
    }

    pub fn release(&self) {
        let _ = Command::new("scancel").arg(&self.0).status();
    }
}

impl Drop for Blocker {
    fn drop(&mut self) {
        self.release();
    }
}

/// What /proc/<pid>/stat says of a live process: (parent pid, session id); None for one that
/// does not exist or is a zombie.
pub fn proc_parent_and_session(pid: i32) -> Option<(i32, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split_whitespace().collect();
    if fields[0] == "Z" {
        return None;
    }
    Some((fields[1].parse().ok()?, fields[3].parse().ok()?))
}

/// The live processes of session `sid` (pid, command line).
pub fn session_processes(sid: i32) -> Vec<(i32, String)> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| proc_parent_and_session(*pid).is_some_and(|(_, s)| s == sid))
        .map(|pid| (pid, cmdline(pid)))
        .collect()
}

/// The argument vector of `pid` (empty if it is gone).
pub fn argv(pid: i32) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    raw.split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

pub fn cmdline(pid: i32) -> String {
    argv(pid).join(" ")
}

/// This test's `ray-hpc <sub>` processes (argv[0] is the binary under test).
pub fn ray_hpc_processes(home: &TestHome, sub: &str) -> Vec<i32> {
    let exe = ray_hpc().display().to_string();
    home.leftovers()
        .into_iter()
        .map(|(pid, _)| pid)
        .filter(|pid| {
            let a = argv(*pid);
            a.first() == Some(&exe) && a.get(1).map(String::as_str) == Some(sub)
        })
        .collect()
}

/// The LSF stand-in's bin directories (lsf/testbed/up: LSF's commands on the Slurm test bed;
/// not IBM LSF).
pub struct LsfStandin {
    /// LSF 10.1-like: blaunch, bjobs -o/-json, a host file.
    pub bin: PathBuf,
    /// OpenLava-like: no blaunch, bjobs without -o/-json, no host file.
    pub openlava: PathBuf,
}

impl LsfStandin {
    /// PATH with `bin` first, then the test PATH (ray-hpc, the venv).
    pub fn path(bin: &Path) -> String {
        format!("{}:{}", bin.display(), test_path())
    }
}

/// Installs the LSF stand-in (idempotent; it needs root and the Slurm test bed). None, said on
/// stderr, where there is no test bed or no root, unless the run requires it (RAY_HPC_E2E=1).
pub fn lsf_standin() -> Option<LsfStandin> {
    if !slurm_testbed() {
        return None;
    }
    let root = nix::unistd::Uid::effective().is_root();
    assert!(
        root || !e2e_required(),
        "RAY_HPC_E2E=1 but not root: lsf/testbed/up needs root (UTS namespaces, /etc/hosts)"
    );
    if !root {
        eprintln!("SKIPPED: the LSF stand-in needs root");
        return None;
    }
    let out = Command::new(repo().join("lsf/testbed/up"))
        .output()
        .unwrap();
    assert!(out.status.success(), "lsf/testbed/up: {}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let bin = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
    assert!(
        bin.join("bsub").exists(),
        "lsf/testbed/up printed {stdout:?}"
    );
    let openlava = bin.with_file_name("bin-openlava");
    Some(LsfStandin { bin, openlava })
}

/// The Hadoop YARN test bed (yarn/testbed/up: a real ResourceManager with the services REST
/// API, NodeManagers on their own loopback addresses).
pub struct YarnTestbed {
    /// The ResourceManager's web address, http://host:port.
    pub web: String,
}

/// Brings up the YARN test bed (idempotent; it needs root, Java and Maven, and fetches Hadoop
/// from Maven Central once). None, said on stderr, where it cannot be brought up, unless the run
/// requires it (RAY_HPC_E2E=1), where that is a failure.
pub fn yarn_testbed() -> Option<YarnTestbed> {
    let root = nix::unistd::Uid::effective().is_root();
    let tools = ["java", "mvn"]
        .iter()
        .all(|t| Command::new(t).arg("-version").output().is_ok());
    let why = match (root, tools) {
        (false, _) => "yarn/testbed/up needs root (UTS namespaces, /etc/hosts)",
        (true, false) => "yarn/testbed/up needs java and mvn on PATH",
        (true, true) => "",
    };
    assert!(why.is_empty() || !e2e_required(), "RAY_HPC_E2E=1 but {why}");
    if !why.is_empty() {
        eprintln!("SKIPPED: no YARN test bed: {why}");
        return None;
    }
    let out = Command::new(repo().join("yarn/testbed/up"))
        .output()
        .unwrap();
    assert!(out.status.success(), "yarn/testbed/up: {}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let web = stdout.lines().last().unwrap_or_default().trim().to_string();
    assert!(
        web.starts_with("http://"),
        "yarn/testbed/up printed {stdout:?}"
    );
    Some(YarnTestbed { web })
}
