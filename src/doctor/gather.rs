//! The thin layer that measures the real inputs of the checks: this process's limits, this
//! host's /proc and /dev/shm, the installed `ray`, the registry and TCP connections.

use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::cluster::{self, PrivacyInput, Problem, ReachInput, Target};
use super::host::{self, ShmInput, SocketInput};
use super::install::{self, RayProbe};
use super::{CheckResult, Report};
use crate::config::Config;
use crate::registry::{self, ClusterDir, ClusterRecord, RegistryError};

/// How long one TCP connection to the head may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long `ray --version` may take (it imports Ray: about a second, more on a slow shared
/// filesystem).
pub const RAY_VERSION_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs every check, on this host and, with `name`, on that cluster's record.
pub fn report(name: Option<&str>, config: &Config) -> anyhow::Result<Report> {
    let named = match name {
        Some(n) => Some(load_named(n)?),
        None => None,
    };
    let host = hostname();
    let mut checks: Vec<CheckResult> = vec![open_files()];
    checks.push(dev_shm(config, named.as_ref()));
    checks.push(socket_path(config, named.as_ref()));
    checks.push(match &named {
        Some((_, rec)) => cluster::head_cpus(
            &rec.name,
            rec.expected_nodes.max(rec.nodes.len() as u32),
            rec.nodes.iter().find(|n| n.rank == 0).map(|n| n.cpus),
            config.ray.head_num_cpus,
        ),
        None => CheckResult::skipped(
            "head-cpus",
            "CPUs on the head node",
            "needs a cluster: `ray-hpc doctor NAME`",
        ),
    });
    checks.push(install::ray_version(
        &probe_ray(config),
        crate::ray::TESTED_RAY_VERSION,
    ));
    checks.push(token_perms(named.as_ref()));
    checks.push(match &named {
        Some((_, rec)) => cluster::head_reachable(&reach_input(rec, &host, config)),
        None => CheckResult::skipped(
            "head-reachable",
            "head ports reachable",
            "needs a cluster: `ray-hpc doctor NAME` checks its head's ports from this host",
        ),
    });
    Ok(Report::new(host, name.map(String::from), checks))
}

fn load_named(name: &str) -> anyhow::Result<(ClusterDir, ClusterRecord)> {
    let root = registry::root()?;
    let dir = ClusterDir::open(&root, name)?;
    if !dir.record_path().exists() {
        return Err(RegistryError::Unknown {
            name: name.to_string(),
            known: registry::list_names(&root),
        }
        .into());
    }
    let record = dir.load()?;
    Ok((dir, record))
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "this host".into())
}

fn open_files() -> CheckResult {
    use nix::sys::resource::{Resource, getrlimit};
    // rlim_t is u64 on Linux, and RLIM_INFINITY (unlimited) is u64::MAX.
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => host::open_files(soft, hard),
        Err(e) => CheckResult::skipped(
            "open-files",
            "open files limit",
            format!("cannot read RLIMIT_NOFILE: {e}"),
        ),
    }
}

fn dev_shm(config: &Config, named: Option<&(ClusterDir, ClusterRecord)>) -> CheckResult {
    let record_memory = named
        .and_then(|(_, rec)| {
            rec.nodes
                .iter()
                .map(|n| n.memory_bytes)
                .max()
                .map(|m| (rec, m))
        })
        .filter(|(_, m)| *m > 0);
    let (memory_bytes, memory_source) = match record_memory {
        Some((rec, m)) => (
            m,
            format!("the largest node memory in cluster {}'s record", rec.name),
        ),
        None => match crate::discovery::memory::physical_memory(&Default::default()) {
            Ok(m) => (m, "MemTotal of this host".to_string()),
            Err(e) => {
                return CheckResult::skipped(
                    "dev-shm",
                    "/dev/shm and the object store",
                    format!("cannot read this host's memory: {e}"),
                );
            }
        },
    };
    host::dev_shm(&ShmInput {
        shm_bytes: crate::discovery::memory::shm_bytes(Path::new("/dev/shm")),
        memory_bytes,
        memory_source,
        fraction: config.ray.object_store_fraction,
    })
}

fn socket_path(config: &Config, named: Option<&(ClusterDir, ClusterRecord)>) -> CheckResult {
    let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|t| t.trim().parse().ok())
        // The largest pid_max Linux allows on 64-bit machines.
        .unwrap_or(4_194_304);
    let task_events = config
        .ray
        .env
        .get("RAY_enable_task_events_to_dashboard_head")
        .is_some_and(|v| matches!(v.trim(), "1" | "true" | "True" | "TRUE"));
    let node_temp_dirs: Option<Vec<(u32, String)>> = named
        .map(|(_, rec)| {
            rec.nodes
                .iter()
                .map(|n| (n.rank, n.temp_dir.clone()))
                .collect()
        })
        .filter(|d: &Vec<_>| !d.is_empty());
    let measured = node_temp_dirs
        .as_ref()
        .and_then(|dirs| longest_socket_under(dirs.iter().map(|(_, d)| Path::new(d))));
    host::socket_path(&SocketInput {
        temp_root: config.cluster.temp_root.display().to_string(),
        node_temp_dirs,
        pid_digits: host::pid_digits(pid_max),
        head_socket: if task_events {
            host::HEAD_SOCKET_TASK_EVENTS
        } else {
            host::HEAD_SOCKET
        }
        .to_string(),
        measured,
    })
}

/// The longest path in `<temp_dir>/session_*/sockets/` over the temp dirs that exist here.
fn longest_socket_under<'a>(temp_dirs: impl Iterator<Item = &'a Path>) -> Option<String> {
    let mut longest: Option<String> = None;
    for dir in temp_dirs {
        let Ok(sessions) = std::fs::read_dir(dir) else {
            continue;
        };
        for session in sessions.flatten() {
            let is_session = session
                .file_name()
                .to_string_lossy()
                .starts_with("session_")
                && session.file_type().is_ok_and(|t| t.is_dir());
            if !is_session {
                continue; // session_latest is a symlink to the real one
            }
            let Ok(sockets) = std::fs::read_dir(session.path().join("sockets")) else {
                continue;
            };
            for s in sockets.flatten() {
                let p = s.path().display().to_string();
                if longest.as_ref().is_none_or(|l| p.len() > l.len()) {
                    longest = Some(p);
                }
            }
        }
    }
    longest
}

fn probe_ray(config: &Config) -> RayProbe {
    let venv = std::env::var("VIRTUAL_ENV").ok();
    let path = std::env::var("PATH").ok();
    let ray =
        match crate::ray::find_ray(config.ray.bin.as_deref(), venv.as_deref(), path.as_deref()) {
            Ok(p) => p,
            Err(e) => return RayProbe::NotFound(e.to_string()),
        };
    let output = run_version(&ray, RAY_VERSION_TIMEOUT);
    RayProbe::Ran { path: ray, output }
}

/// `<ray> --version`'s stdout, or why it failed; killed (by its pid) past `timeout`.
fn run_version(ray: &Path, timeout: Duration) -> Result<String, String> {
    let child = Command::new(ray)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run it: {e}"))?;
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(Ok(out)) if out.status.success() => Ok(String::from_utf8_lossy(&out.stdout).into()),
        Ok(Ok(out)) => {
            let err = String::from_utf8_lossy(&out.stderr);
            let last = err
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            Err(format!("{}: {}", out.status, last.trim()))
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => {
            if let Ok(pid) = i32::try_from(pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            Err(format!("no answer within {} s", timeout.as_secs()))
        }
    }
}

fn token_perms(named: Option<&(ClusterDir, ClusterRecord)>) -> CheckResult {
    const ID: &str = "token-perms";
    const TITLE: &str = "cluster dir and token permissions";
    let root = match registry::root() {
        Ok(r) => r,
        Err(e) => return CheckResult::skipped(ID, TITLE, e.to_string()),
    };
    let clusters = match named {
        Some((dir, rec)) => vec![(dir.name.clone(), privacy_problems(dir, Some(rec)))],
        None => registry::list_names(&root)
            .into_iter()
            .filter_map(|n| ClusterDir::open(&root, &n).ok())
            .map(|dir| {
                let rec = dir.load().ok();
                (dir.name.clone(), privacy_problems(&dir, rec.as_ref()))
            })
            .collect(),
    };
    cluster::token_perms(&PrivacyInput {
        root: root.display().to_string(),
        clusters,
    })
}

/// `ClusterDir::check_private`, plus the record's token file when it is not the usual one.
fn privacy_problems(dir: &ClusterDir, record: Option<&ClusterRecord>) -> Vec<Problem> {
    let mut problems = vec![];
    match dir.check_private() {
        Ok(()) => {}
        Err(RegistryError::Unsafe { path, why }) => problems.push(Problem { path, why }),
        Err(e) => problems.push(Problem {
            path: dir.path.clone(),
            why: e.to_string(),
        }),
    }
    if let Some(token) = record.and_then(|r| r.token_path.as_ref()) {
        if *token != dir.token_path() {
            problems.extend(file_problem(token));
        }
    }
    problems
}

/// A token file outside its cluster dir must be the user's and 0600 too.
fn file_problem(path: &Path) -> Option<Problem> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path).ok()?;
    let me = nix::unistd::geteuid().as_raw();
    let why = if meta.uid() != me {
        format!("it belongs to uid {}, not to you (uid {me})", meta.uid())
    } else if meta.mode() & 0o077 != 0 {
        format!(
            "its mode is {:04o}, so other users can read it; run `chmod 0600 {}`",
            meta.mode() & 0o777,
            path.display()
        )
    } else {
        return None;
    };
    Some(Problem {
        path: PathBuf::from(path),
        why,
    })
}

fn reach_input(rec: &ClusterRecord, host: &str, config: &Config) -> ReachInput {
    let ready = rec.state == registry::ClusterState::Ready;
    let targets = [
        ("gcs", rec.gcs_address.clone()),
        (
            "dashboard",
            rec.dashboard_url
                .as_deref()
                .and_then(cluster::url_host_port),
        ),
        ("client server", rec.client_server_address.clone()),
    ]
    .into_iter()
    .map(|(label, address)| {
        let outcome = match (&address, ready) {
            (Some(a), true) => connect(a, CONNECT_TIMEOUT),
            (Some(_), false) => Err("not tried".into()),
            (None, _) => Err("not in the record".into()),
        };
        Target {
            label,
            address,
            outcome,
        }
    })
    .collect();
    ReachInput {
        name: rec.name.clone(),
        state: rec.state,
        message: rec.message.clone(),
        from_host: host.to_string(),
        targets,
        port_range: (config.ray.port_range.lo, config.ray.port_range.hi),
    }
}

/// Milliseconds to open a TCP connection to `addr` (host:port), or why it could not.
fn connect(addr: &str, timeout: Duration) -> Result<u64, String> {
    let addrs: Vec<_> = addr
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve it: {e}"))?
        .collect();
    let mut last = "it resolves to no address".to_string();
    for a in addrs {
        let start = Instant::now();
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(_) => return Ok(start.elapsed().as_millis() as u64),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                last = format!("no answer within {} s", timeout.as_secs());
            }
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connects_to_a_listening_port_and_reports_a_closed_one() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        assert!(connect(&addr, CONNECT_TIMEOUT).is_ok());
        drop(listener);
        let err = connect(&addr, CONNECT_TIMEOUT).unwrap_err();
        assert!(err.contains("refused"), "{err}");
        assert!(connect("no-such-host.invalid:1", CONNECT_TIMEOUT).is_err());
    }

    #[test]
    fn finds_the_longest_socket_under_session_dirs() {
        let tmp = tempfile::tempdir().unwrap();
        let sockets = tmp.path().join("session_2026_1/sockets");
        std::fs::create_dir_all(&sockets).unwrap();
        std::fs::write(sockets.join("raylet"), "").unwrap();
        std::fs::write(sockets.join("plasma_store"), "").unwrap();
        std::os::unix::fs::symlink(
            tmp.path().join("session_2026_1"),
            tmp.path().join("session_latest"),
        )
        .unwrap();
        let got = longest_socket_under([tmp.path()].into_iter()).unwrap();
        assert!(
            got.ends_with("session_2026_1/sockets/plasma_store"),
            "{got}"
        );
        assert_eq!(
            longest_socket_under([Path::new("/nonexistent")].into_iter()),
            None
        );
    }

    #[test]
    fn a_version_command_that_hangs_is_killed() {
        let tmp = tempfile::tempdir().unwrap();
        let script = |name: &str, text: &str| {
            use std::os::unix::fs::PermissionsExt;
            let p = tmp.path().join(name);
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
            p
        };
        // Another test thread forking while a script is open for writing makes exec fail with
        // "Text file busy" for a moment: try again.
        let run = |p: &Path, timeout| {
            for _ in 0..50 {
                match run_version(p, timeout) {
                    Err(e) if e.contains("Text file busy") => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    r => return r,
                }
            }
            run_version(p, timeout)
        };
        let hangs = script("hangs", "#!/bin/sh\nexec sleep 30\n");
        let start = Instant::now();
        let err = run(&hangs, Duration::from_millis(300)).unwrap_err();
        assert!(err.contains("no answer"), "{err}");
        assert!(start.elapsed() < Duration::from_secs(10));
        let answers = script("answers", "#!/bin/sh\necho 'ray, version 2.60.0'\n");
        assert_eq!(
            run(&answers, RAY_VERSION_TIMEOUT).unwrap().trim(),
            "ray, version 2.60.0"
        );
        let fails = script(
            "fails",
            "#!/bin/sh\necho 'ImportError: no ray' >&2\nexit 1\n",
        );
        let err = run(&fails, RAY_VERSION_TIMEOUT).unwrap_err();
        assert!(err.contains("ImportError: no ray"), "{err}");
    }

    #[test]
    fn a_token_outside_its_dir_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let token = tmp.path().join("token");
        std::fs::write(&token, "x").unwrap();
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
        let p = file_problem(&token).unwrap();
        assert!(p.why.contains("chmod 0600"), "{}", p.why);
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(file_problem(&token), None);
    }
}
