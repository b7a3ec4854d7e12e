//! `ray-hpc submit NAME [--working-dir DIR] [--no-wait] [--env KEY=VALUE]... -- CMD...`: runs a
//! command as a Ray job on a cluster in the registry, through Ray's Jobs REST API on the
//! cluster's dashboard, and follows its log until it ends.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use tokio::signal::unix::{SignalKind, signal};

use crate::config::Config;
use crate::ray::jobs_api::{
    JobInfo, JobStatus, JobsClient, JobsError, LogCursor, RuntimeEnv, SubmitRequest, human_bytes,
    shell_join,
};
use crate::registry::{self, ClusterDir, ClusterState};

pub const EXIT_SUCCEEDED: i32 = 0;
pub const EXIT_FAILED: i32 = 1;
pub const EXIT_STOPPED: i32 = 2;
/// ray-hpc could not submit or follow the job (the message says why).
pub const EXIT_ERROR: i32 = 3;
/// Interrupted (Ctrl-C); the job was asked to stop.
pub const EXIT_INTERRUPTED: i32 = 130;

/// How often the job's status and log are polled while following it. Ray's `/logs` answers
/// with the whole log each time, so a very long log is polled less often (see `poll_every`).
const POLL_EVERY: Duration = Duration::from_secs(1);
/// Log size that is fetched once a second at most; a log n times this size waits n seconds.
const LOG_BYTES_PER_POLL_S: usize = 8 * 1024 * 1024;
/// Failed log fetches in a row before we say so (a blip is not worth a message).
const LOG_FAILURES_TOLD: u32 = 10;
/// How long the dashboard may stay unreachable while following a job before we give up.
const LOST_AFTER: Duration = Duration::from_secs(60);
/// How long to wait for a job to reach STOPPED after Ctrl-C.
const STOP_WAIT: Duration = Duration::from_secs(20);

const EXIT_HELP: &str = "\
Exit status (when following the job):
  0    the job SUCCEEDED
  1    the job FAILED (its command exited non-zero, or Ray could not start it)
  2    the job was STOPPED (e.g. `ray job stop`); also a command-line usage error
  3    ray-hpc could not submit or follow the job (unknown cluster, cluster not READY,
       dashboard unreachable, token refused, ...); the message says why
  130  interrupted by Ctrl-C: the job was asked to stop first
With --no-wait: 0 once Ray accepted the job (its submission id is printed on stdout), 3 on error.

The job's log goes to stdout; ray-hpc's own messages and the final status line go to stderr.";

#[derive(clap::Args)]
#[command(after_help = EXIT_HELP)]
pub struct Args {
    /// The cluster's name in the registry (`ray-hpc status` lists them). It must be READY.
    #[arg(value_name = "NAME")]
    name: String,
    /// Upload this directory and run CMD in a copy of it on the head node. `.git`, `.venv`,
    /// `venv` and `__pycache__` are left out, and so are files over 100 MiB (with a warning);
    /// the zip may be 100 MiB at most. `.gitignore` is not read. Unchanged contents are not
    /// uploaded again. Without it CMD runs in a directory of Ray's on the head node.
    #[arg(long, value_name = "DIR")]
    working_dir: Option<PathBuf>,
    /// Print the submission id on stdout and exit once Ray accepted the job.
    #[arg(long)]
    no_wait: bool,
    /// Set an environment variable for the job (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// The command, run by /bin/sh on the head node; each argument stays one word (use
    /// `sh -c '...'` for pipes or variables).
    #[arg(last = true, required = true, value_name = "CMD")]
    cmd: Vec<String>,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("`{s}` is not KEY=VALUE")),
    }
}

pub fn run(args: &Args, _config: Config) -> anyhow::Result<i32> {
    let result = super::runtime().and_then(|rt| rt.block_on(submit(args)));
    Ok(result.unwrap_or_else(|e| {
        eprintln!("ray-hpc: error: {e:#}");
        EXIT_ERROR
    }))
}

/// The cluster as `submit` needs it.
struct Target {
    name: String,
    url: String,
    /// Set when the cluster uses token auth.
    token_path: Option<PathBuf>,
    /// (node name, Ray temp dir) of the head, where the job logs live.
    head: Option<(String, String)>,
}

impl Target {
    fn open(name: &str) -> anyhow::Result<(Self, Option<String>)> {
        let root = registry::root()?;
        let dir = ClusterDir::open_existing(&root, name)?;
        let rec = dir.load()?;
        if rec.state != ClusterState::Ready {
            let state = serde_json::to_value(rec.state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_else(|| format!("{:?}", rec.state));
            let why = rec
                .message
                .as_deref()
                .map(|m| format!(" ({m})"))
                .unwrap_or_default();
            anyhow::bail!(
                "cluster `{name}` is {state}{why}, not READY, so it cannot take jobs; see `ray-hpc status {name}`"
            );
        }
        let url = rec.dashboard_url.clone().ok_or_else(|| {
            anyhow!(
                "the record of cluster `{name}` has no dashboard address; see `ray-hpc status {name}`"
            )
        })?;
        let (token_path, token) = match rec.auth.as_str() {
            "none" => (None, None),
            "token" => {
                let path = rec.token_path.clone().unwrap_or_else(|| dir.token_path());
                let token = std::fs::read_to_string(&path)
                    .with_context(|| {
                        format!(
                            "cannot read the auth token of cluster `{name}` at {}",
                            path.display()
                        )
                    })?
                    .trim()
                    .to_string();
                if token.is_empty() {
                    anyhow::bail!(
                        "the auth token file {} of cluster `{name}` is empty",
                        path.display()
                    );
                }
                (Some(path), Some(token))
            }
            other => anyhow::bail!(
                "the record of cluster `{name}` has auth = {other:?}; this ray-hpc knows \"token\" and \"none\""
            ),
        };
        Ok((
            Target {
                name: name.to_string(),
                url,
                token_path,
                head: rec
                    .nodes
                    .iter()
                    .min_by_key(|n| n.rank)
                    .map(|n| (n.node_name.clone(), n.temp_dir.clone())),
            },
            token,
        ))
    }

    /// A Jobs API error, said in terms of this cluster.
    fn explain(&self, e: JobsError) -> anyhow::Error {
        let name = &self.name;
        match e {
            JobsError::Unreachable { url, why } => anyhow!(
                "cannot reach the Ray dashboard of cluster `{name}` at {url}: {why}. Is the cluster still running? Check `ray-hpc status {name}`"
            ),
            JobsError::Unauthorized { url, status, body } => match &self.token_path {
                Some(p) => anyhow!(
                    "the Ray dashboard at {url} refused the token in {} (HTTP {status}: {body}). The file may be from another cluster of that name; check `ray-hpc status {name}`",
                    p.display()
                ),
                None => anyhow!(
                    "the Ray dashboard at {url} wants an auth token (HTTP {status}: {body}), but the record of cluster `{name}` says auth = none"
                ),
            },
            other => anyhow!(other),
        }
    }

    /// Where Ray writes a job's log (`JOB_LOGS_PATH_TEMPLATE` in the session's logs dir).
    fn job_log_file(&self, id: &str) -> String {
        match &self.head {
            Some((node, temp_dir)) => format!(
                "on the head node {node} at {temp_dir}/session_latest/logs/job-driver-{id}.log"
            ),
            None => format!(
                "on the head node, in <ray temp dir>/session_latest/logs/job-driver-{id}.log"
            ),
        }
    }

    /// The environment for Ray's own `ray job` CLI against this cluster.
    fn ray_cli_env(&self) -> String {
        match &self.token_path {
            Some(p) => format!(
                "RAY_ADDRESS={} RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH={}",
                self.url,
                p.display()
            ),
            None => format!("RAY_ADDRESS={}", self.url),
        }
    }
}

async fn submit(args: &Args) -> anyhow::Result<i32> {
    let (target, token) = Target::open(&args.name)?;
    let client = JobsClient::new(&target.url, token)?;

    let mut runtime_env = RuntimeEnv {
        env_vars: args.env.iter().cloned().collect(),
        ..Default::default()
    };
    if let Some(dir) = &args.working_dir {
        if !dir.is_dir() {
            anyhow::bail!(
                "--working-dir {}: {}",
                dir.display(),
                if dir.exists() {
                    "not a directory"
                } else {
                    "no such directory"
                }
            );
        }
        let up = client
            .upload_working_dir(dir)
            .await
            .map_err(|e| target.explain(e))
            .with_context(|| format!("uploading the working dir {}", dir.display()))?;
        for s in &up.skipped {
            eprintln!("ray-hpc: warning: {s}");
        }
        match up.uploaded_bytes {
            Some(zipped) => eprintln!(
                "ray-hpc: uploaded {} ({} files, {}; {} zipped) as {}",
                dir.display(),
                up.files,
                human_bytes(up.file_bytes),
                human_bytes(zipped),
                up.uri
            ),
            None => eprintln!(
                "ray-hpc: {} is already on the cluster as {}",
                dir.display(),
                up.uri
            ),
        }
        runtime_env.working_dir = Some(up.uri);
    }

    let req = SubmitRequest {
        entrypoint: shell_join(&args.cmd),
        runtime_env,
        ..Default::default()
    };
    let id = client
        .submit(&req)
        .await
        .map_err(|e| target.explain(e))
        .context("submitting the job")?;

    if args.no_wait {
        println!("{id}");
        eprintln!(
            "ray-hpc: submitted job {id} to cluster `{}`; Ray's CLI can follow it: {} ray job logs -f {id}",
            target.name,
            target.ray_cli_env()
        );
        return Ok(EXIT_SUCCEEDED);
    }
    eprintln!(
        "ray-hpc: submitted job {id} to cluster `{}`; following its log (Ctrl-C stops the job)",
        target.name
    );
    follow(&client, &target, &id).await
}

/// What one poll found.
enum Poll {
    Going,
    Done(JobInfo),
}

/// Prints the job's log as it grows until the job ends; Ctrl-C stops the job.
async fn follow(client: &JobsClient, target: &Target, id: &str) -> anyhow::Result<i32> {
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle Ctrl-C")?;
    let mut f = Follower::new(client, target, id);
    loop {
        let polled = tokio::select! {
            _ = sigint.recv() => return interrupted(&mut f, &mut sigint).await,
            p = f.poll() => p?,
        };
        if let Poll::Done(info) = polled {
            f.final_logs().await;
            return Ok(finish(id, &info));
        }
        tokio::select! {
            _ = sigint.recv() => return interrupted(&mut f, &mut sigint).await,
            _ = tokio::time::sleep(f.poll_every()) => {}
        }
    }
}

struct Follower<'a> {
    client: &'a JobsClient,
    target: &'a Target,
    id: &'a str,
    cursor: LogCursor,
    last_status: Option<JobStatus>,
    last_ok: Instant,
    /// Set while the dashboard is failing, so a blip is reported once.
    outage: bool,
    logs_warned: bool,
    log_failures: u32,
    log_len: usize,
    last_log_error: Option<String>,
}

impl<'a> Follower<'a> {
    fn new(client: &'a JobsClient, target: &'a Target, id: &'a str) -> Self {
        Follower {
            client,
            target,
            id,
            cursor: LogCursor::default(),
            last_status: None,
            last_ok: Instant::now(),
            outage: false,
            logs_warned: false,
            log_failures: 0,
            log_len: 0,
            last_log_error: None,
        }
    }

    fn poll_every(&self) -> Duration {
        POLL_EVERY.max(Duration::from_secs(
            (self.log_len / LOG_BYTES_PER_POLL_S) as u64,
        ))
    }

    /// Status first, then the log: once a terminal status is seen, a log fetched after it
    /// is complete (the command has exited).
    async fn poll(&mut self) -> anyhow::Result<Poll> {
        let info = match self.client.status(self.id).await {
            Ok(info) => info,
            Err(e) if e.is_transient() => {
                if self.last_ok.elapsed() >= LOST_AFTER {
                    return Err(self.target.explain(e)).with_context(|| {
                        format!(
                            "lost the cluster for {}s while following job {}; it may still be running: {} ray job status {}",
                            LOST_AFTER.as_secs(),
                            self.id,
                            self.target.ray_cli_env(),
                            self.id
                        )
                    });
                }
                if !self.outage {
                    eprintln!("ray-hpc: warning: {e}; retrying");
                    self.outage = true;
                }
                return Ok(Poll::Going);
            }
            Err(e) => return Err(self.target.explain(e)),
        };
        self.last_ok = Instant::now();
        self.outage = false;
        if info.status.is_terminal() {
            return Ok(Poll::Done(info));
        }
        if self.last_status.as_ref() != Some(&info.status) {
            eprintln!("ray-hpc: job {} is {}", self.id, info.status);
            self.last_status = Some(info.status.clone());
        }
        self.print_logs().await;
        Ok(Poll::Going)
    }

    /// Prints what is new in the log; true when the log could be read.
    async fn print_logs(&mut self) -> bool {
        match self.client.logs(self.id).await {
            Ok(logs) => {
                self.log_failures = 0;
                self.log_len = logs.len();
                let new = self.cursor.new_text(&logs);
                if !new.is_empty() {
                    let mut out = std::io::stdout().lock();
                    // A closed stdout (`| head`) must not stop us from following the job.
                    let _ = out.write_all(new.as_bytes());
                    let _ = out.flush();
                }
                true
            }
            Err(e) => {
                self.log_failures += 1;
                self.last_log_error = Some(short(&e));
                let persistent = !e.is_transient() || self.log_failures >= LOG_FAILURES_TOLD;
                if persistent && !self.logs_warned {
                    eprintln!(
                        "ray-hpc: warning: cannot read the job's log through the dashboard ({}); it is {}",
                        short(&e),
                        self.target.job_log_file(self.id)
                    );
                    self.logs_warned = true;
                }
                false
            }
        }
    }

    /// The rest of the log of a job that ended, with a few tries if the dashboard blinks.
    async fn final_logs(&mut self) {
        for _ in 0..5 {
            if self.print_logs().await {
                return;
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
        if !self.logs_warned {
            eprintln!(
                "ray-hpc: warning: could not read the end of the job's log through the dashboard{}; it is {}",
                self.last_log_error
                    .as_ref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default(),
                self.target.job_log_file(self.id)
            );
        }
    }
}

/// An error in a line: for Ray's answers the status and the last line of its text (a Python
/// traceback ends with the exception).
fn short(e: &JobsError) -> String {
    match e {
        JobsError::Api { status, body, .. } => {
            let last = body.lines().rev().find(|l| l.trim().len() > 1);
            format!("HTTP {status}: {}", last.unwrap_or("").trim())
        }
        other => other.to_string(),
    }
}

/// Prints the final status line; returns the exit status.
fn finish(id: &str, info: &JobInfo) -> i32 {
    match info.status {
        JobStatus::Succeeded => {
            eprintln!("ray-hpc: job {id} SUCCEEDED");
            EXIT_SUCCEEDED
        }
        JobStatus::Stopped => {
            eprintln!("ray-hpc: job {id} STOPPED");
            EXIT_STOPPED
        }
        _ => {
            let why = match (info.driver_exit_code, &info.message) {
                (Some(code), _) => format!("its command exited with code {code}"),
                (None, Some(m)) if !m.trim().is_empty() => m.trim().to_string(),
                _ => "Ray gave no reason".to_string(),
            };
            eprintln!("ray-hpc: job {id} {}: {why}", info.status);
            EXIT_FAILED
        }
    }
}

/// Ctrl-C while following: stop the job, show how it ended, exit 130. A second Ctrl-C quits
/// without waiting.
async fn interrupted(
    f: &mut Follower<'_>,
    sigint: &mut tokio::signal::unix::Signal,
) -> anyhow::Result<i32> {
    let id = f.id;
    eprintln!("\nray-hpc: interrupted: stopping job {id} (Ctrl-C again to quit without waiting)");
    let stop = tokio::select! {
        _ = sigint.recv() => None,
        r = f.client.stop(id) => Some(r),
    };
    match stop {
        None => {
            eprintln!(
                "ray-hpc: did not wait for the stop of job {id}; check it with: {} ray job status {id}",
                f.target.ray_cli_env()
            );
            return Ok(EXIT_INTERRUPTED);
        }
        Some(Err(e)) => {
            eprintln!(
                "ray-hpc: could not stop job {id}: {:#}\nray-hpc: it may still be running; stop it with: {} ray job stop {id}",
                f.target.explain(e),
                f.target.ray_cli_env()
            );
            return Ok(EXIT_INTERRUPTED);
        }
        Some(Ok(_)) => {}
    }
    let deadline = Instant::now() + STOP_WAIT;
    let end = loop {
        let polled = tokio::select! {
            _ = sigint.recv() => break None,
            p = f.poll() => p,
        };
        match polled {
            Ok(Poll::Done(info)) => break Some(info),
            Ok(Poll::Going) if Instant::now() < deadline => {}
            _ => break None,
        }
        tokio::select! {
            _ = sigint.recv() => break None,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    };
    match end {
        Some(info) => {
            f.final_logs().await;
            eprintln!("ray-hpc: job {id} {} (stopped on Ctrl-C)", info.status);
        }
        None => eprintln!(
            "ray-hpc: asked Ray to stop job {id}; check it with: {} ray job status {id}",
            f.target.ray_cli_env()
        ),
    }
    Ok(EXIT_INTERRUPTED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_pairs() {
        assert_eq!(parse_env("A=1").unwrap(), ("A".into(), "1".into()));
        assert_eq!(parse_env("A=").unwrap(), ("A".into(), "".into()));
        assert_eq!(parse_env("A=b=c").unwrap(), ("A".into(), "b=c".into()));
        assert!(parse_env("A").is_err());
        assert!(parse_env("=1").is_err());
    }

    #[test]
    fn short_errors_keep_the_exception() {
        let e = JobsError::Api {
            method: "GET".into(),
            url: "u".into(),
            status: 500,
            body: "Traceback (most recent call last):\n  File \"x\"\nUnicodeDecodeError: 'utf-8' codec can't decode byte 0xff\n.".into(),
        };
        assert_eq!(
            short(&e),
            "HTTP 500: UnicodeDecodeError: 'utf-8' codec can't decode byte 0xff"
        );
    }

    #[test]
    fn final_status_sets_the_exit_code() {
        let info = |status: &str, code: Option<i64>, msg: Option<&str>| JobInfo {
            status: JobStatus::parse(status),
            message: msg.map(str::to_string),
            error_type: None,
            submission_id: None,
            driver_exit_code: code,
        };
        assert_eq!(finish("j", &info("SUCCEEDED", Some(0), None)), 0);
        assert_eq!(finish("j", &info("FAILED", Some(3), None)), 1);
        assert_eq!(finish("j", &info("FAILED", None, Some("runtime env"))), 1);
        assert_eq!(finish("j", &info("STOPPED", None, None)), 2);
    }
}
