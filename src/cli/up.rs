//! `ray-hpc up`: submit a Ray cluster as a batch job from a login node, show its progress until
//! it is ready, and print how to use it. With `--json` the progress and the outcome are JSON
//! lines on stdout instead (schema `ray-hpc.up/v1`, docs/cli-json.md), for programs such as the
//! Python package.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use serde::Serialize;
use serde_json::json;

use super::env::{Connection, export_lines};
use crate::autoscaler::reconciler::JoinCommand;
use crate::config::{self, Config};
use crate::registry::{self, ClusterDir, ClusterRecord, ClusterState};
use crate::scheduler::{
    self, JobInfo, JobRequest, JobState, NodeKind, OutputPath, Place, Scheduler, shell_join,
};
use crate::status::reach;

pub const SCHEMA: &str = "ray-hpc.up/v1";

#[derive(clap::Args)]
pub struct Args {
    /// Cluster name (default: the config's `cluster.name`, else ray-<4 hex>).
    #[arg(long)]
    name: Option<String>,
    /// Nodes in the cluster's job.
    #[arg(long, default_value_t = 1)]
    nodes: u32,
    /// Partition (queue) to submit to.
    #[arg(long, visible_alias = "queue")]
    partition: Option<String>,
    /// Account (project) the job is charged to.
    #[arg(long)]
    account: Option<String>,
    /// Walltime: minutes, HH:MM:SS, D-HH:MM:SS, or with units (90m, 2h, 1d 12h).
    #[arg(long, value_parser = parse_time)]
    time: Option<Duration>,
    /// Memory per node: a whole number with a K, M, G or T suffix (4G).
    #[arg(long, value_parser = parse_memory)]
    memory: Option<u64>,
    /// CPUs per node.
    #[arg(long)]
    cpus_per_node: Option<u32>,
    /// GPUs per node.
    #[arg(long)]
    gpus_per_node: Option<u32>,
    /// The ResourceManager's web address (http://HOST:8088), for schedulers reached through
    /// one; overrides the `rm` of the scheduler's config section.
    #[arg(long, value_name = "URL")]
    rm: Option<String>,
    /// Print the job script and submit nothing.
    #[arg(long)]
    dry_run: bool,
    /// Submit and return without waiting for the cluster.
    #[arg(long)]
    no_wait: bool,
    /// Seconds to wait for the cluster to be ready.
    #[arg(long, default_value_t = 900)]
    timeout: u64,
    /// Cancel the job when it is not ready within --timeout (default: leave it queued).
    #[arg(long)]
    cancel_on_timeout: bool,
    /// Print the progress and the outcome as JSON lines on stdout (schema `ray-hpc.up/v1`,
    /// docs/cli-json.md) instead of text and export lines.
    #[arg(long, conflicts_with = "dry_run")]
    json: bool,
    /// A driver to run on the head node once the cluster is up; the cluster ends with it.
    /// Without one the cluster stays up until its walltime, `ray-hpc down`, or a cancel.
    #[arg(last = true, value_name = "DRIVER")]
    driver: Vec<String>,
}

fn parse_time(s: &str) -> Result<Duration, String> {
    config::parse_walltime(s).ok_or_else(|| format!("{s:?} {}", config::WALLTIME_SYNTAX))
}

fn parse_memory(s: &str) -> Result<u64, String> {
    config::parse_memory(s).map_err(|why| format!("{s:?} {why}"))
}

pub fn run(args: &Args, config: Config, config_path: Option<PathBuf>) -> anyhow::Result<i32> {
    super::runtime()?.block_on(up(args, config, config_path))
}

async fn up(args: &Args, mut config: Config, config_path: Option<PathBuf>) -> anyhow::Result<i32> {
    let overrides = command_line_settings(args);
    config.override_scheduler_settings(Place::LoginNode, &overrides)?;
    // `auto` on a login node: the scheduler whose tools are here, else this machine.
    let scheduler = config.open_scheduler(Place::LoginNode)?;
    let name = args
        .name
        .clone()
        .or_else(|| config.cluster.name.clone())
        .unwrap_or_else(|| format!("ray-{}", hex::encode(rand::random::<[u8; 2]>())));
    registry::validate_name(&name)?;
    if args.nodes == 0 {
        return Err(anyhow!("--nodes must be at least 1"));
    }
    let root = registry::root()?;
    let dir = ClusterDir::open(&root, &name)?;
    let exe = std::env::current_exe().context("cannot find the ray-hpc executable")?;
    let mut command = vec![
        exe.display().to_string(),
        "--scheduler".into(),
        scheduler.name().into(),
    ];
    if let Some(p) = &config_path {
        let p = std::fs::canonicalize(p).unwrap_or_else(|_| p.clone());
        command.extend(["--config".into(), p.display().to_string()]);
    }
    command.extend(["run".into(), "--name".into(), name.clone()]);
    if !args.driver.is_empty() {
        command.push("--".into());
        command.extend(args.driver.iter().cloned());
    }
    let request = JobRequest {
        name: format!("rh-{name}"),
        nodes: args.nodes,
        cpus_per_node: args.cpus_per_node,
        gpus_per_node: args.gpus_per_node,
        memory_per_node: args.memory,
        queue: args.partition.clone(),
        account: args.account.clone(),
        walltime: args.time,
        output: OutputPath(dir.path.join("job.out")),
        command: shell_join(&command),
        env: scheduler::job_env(),
        node_kinds: node_kinds(
            args,
            &config,
            &name,
            scheduler.name(),
            config_path.as_deref(),
        )?,
        ..Default::default()
    };
    let script = scheduler.render_job(&request)?;
    if args.dry_run {
        print!("{script}");
        return Ok(0);
    }

    let dir = ClusterDir::create(&root, &name)?;
    let mut record = ClusterRecord {
        job_output: Some(request.output.0.clone()),
        scheduler_settings: overrides,
        ..ClusterRecord::new(
            &name,
            scheduler.name(),
            "",
            ClusterState::Queued,
            args.nodes,
            config.auth.as_str(),
        )
    };
    dir.save(&record)?;
    let progress = Progress::new(args.json);
    let job_id = match scheduler.submit(&script, &request).await {
        Ok(id) => id,
        Err(e) => {
            let message = e.reason();
            record.state = ClusterState::Failed;
            record.message = Some(message.clone());
            dir.save(&record)?;
            eprintln!("ray-hpc: the scheduler refused cluster {name}:\n{message}");
            progress.failed(&Failure {
                kind: FailureKind::Refused,
                message,
                record: &record,
                stage: None,
            });
            return Ok(1);
        }
    };
    // The job may already have started and taken the record over; it knows its own id then.
    dir.update(|r| {
        if r.state == ClusterState::Queued {
            r.job_id = job_id.clone();
        }
    })?;
    progress.submitted(&Submitted {
        name: &name,
        scheduler: scheduler.name(),
        job_id: &job_id,
        nodes: args.nodes,
    });
    if args.no_wait {
        progress.finish();
        if !args.json {
            eprintln!("follow it with `ray-hpc status {name}`; end it with `ray-hpc down {name}`");
        }
        return Ok(0);
    }
    wait_ready(args, &dir, scheduler.as_ref(), &job_id, &progress).await
}

/// The scheduler settings given on the command line (they outlive `up` in the record).
fn command_line_settings(args: &Args) -> BTreeMap<String, String> {
    args.rm
        .iter()
        .map(|rm| ("rm".to_string(), rm.clone()))
        .collect()
}

/// Every kind of node the cluster may run: the `--nodes` beyond the head (node type `worker`)
/// and each configured node type (none at first: the autoscaler adds them). Schedulers that
/// create a cluster as one application declare them all up front.
fn node_kinds(
    args: &Args,
    config: &Config,
    name: &str,
    scheduler: &str,
    config_path: Option<&std::path::Path>,
) -> anyhow::Result<Vec<NodeKind>> {
    let join = JoinCommand {
        exe: std::env::current_exe().context("cannot find the ray-hpc executable")?,
        config_path: config_path.map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.into())),
        cluster: name.to_string(),
        output_dir: PathBuf::new(),
        env: Default::default(),
        head_job_id: String::new(),
    };
    let allocation = (args.nodes > 1).then(|| NodeKind {
        node_type: "worker".into(),
        count: args.nodes - 1,
        cpus: args.cpus_per_node,
        gpus: args.gpus_per_node,
        memory: args.memory,
        command: shell_join(&join.argv(scheduler, "worker")),
    });
    let configured = config.node_types.iter().map(|t| NodeKind {
        node_type: t.name.clone(),
        count: 0,
        cpus: Some(t.cpus),
        gpus: Some(t.gpus),
        memory: t.memory_bytes,
        command: shell_join(&join.argv(scheduler, &t.name)),
    });
    Ok(allocation.into_iter().chain(configured).collect())
}

/// Polls the record (cheap, local) often and the scheduler (one query) every few seconds.
async fn wait_ready(
    args: &Args,
    dir: &ClusterDir,
    scheduler: &dyn Scheduler,
    job_id: &str,
    progress: &Progress,
) -> anyhow::Result<i32> {
    const SCHEDULER_POLL: Duration = Duration::from_secs(5);
    // Schedulers list a job as soon as they accept it; three answers without it (10 s) mean
    // it is gone, not late.
    const NEVER_SEEN_ANSWERS: u32 = 3;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.timeout);
    let mut last_query: Option<Instant> = None;
    let mut job: Option<JobInfo> = None;
    let mut job_known = false;
    // Answers in a row that did not list the job before it was ever seen: a job that ends
    // within a second (a local one whose `run` fails at once) is never seen at all.
    let mut unseen_answers = 0u32;
    let mut last_stage: Option<Stage> = None;
    loop {
        let record = dir.load()?;
        if last_query.is_none_or(|t| t.elapsed() >= SCHEDULER_POLL) {
            match scheduler.query(&[job_id.to_string()]).await {
                Ok(jobs) => {
                    job = jobs.into_iter().next();
                    job_known |= job.is_some();
                    if !job_known {
                        unseen_answers += 1;
                    }
                }
                Err(e) => progress.note(&format!("cannot ask the scheduler: {e}")),
            }
            last_query = Some(Instant::now());
        }
        let stage = stage_of(&record, job.as_ref());
        if last_stage.as_ref() != Some(&stage) {
            progress.stage(&stage, started.elapsed());
            last_stage = Some(stage);
        }
        let stage_text = last_stage.as_ref().map(|s| s.text.clone());
        match record.state {
            // A scheduler that starts a cluster as one application may start the head before
            // the other nodes, which then join it: ready means every node asked for is in.
            ClusterState::Ready if record.nodes_joined < args.nodes => {}
            ClusterState::Ready => {
                progress.finish();
                progress.ready(&record, started.elapsed());
                return Ok(0);
            }
            ClusterState::Failed | ClusterState::Ended => {
                progress.finish();
                let (kind, word) = if record.state == ClusterState::Failed {
                    (FailureKind::Failed, "failed")
                } else {
                    (FailureKind::Ended, "ended")
                };
                let why = record.message.as_deref().unwrap_or("no reason recorded");
                eprintln!(
                    "ray-hpc: cluster {} {word} before it was ready: {why}",
                    record.name
                );
                print_job_output(&record);
                progress.failed(&Failure {
                    kind,
                    message: format!("cluster {} {word} before it was ready: {why}", record.name),
                    record: &record,
                    stage: stage_text,
                });
                return Ok(1);
            }
            _ => {}
        }
        // The job ended without its head ever saying so (killed, failed to start ray-hpc).
        let never_seen = !job_known
            && unseen_answers >= NEVER_SEEN_ANSWERS
            && record.state == ClusterState::Queued;
        let job_over = never_seen || (job_known && job.as_ref().is_none_or(|j| j.state.is_ended()));
        if job_over && last_query.is_some_and(|t| t.elapsed() < Duration::from_millis(100)) {
            // Give the head's last write a moment to land before calling it.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let record = dir.load()?;
            if record.state == ClusterState::Ready || record.state.is_over() {
                continue;
            }
            progress.finish();
            let how = job
                .as_ref()
                .map(|j| j.state.to_string())
                .unwrap_or_else(|| "is gone".into());
            let message = format!("job {job_id} {how} before the cluster was ready");
            // Some schedulers keep an ended application (its saved spec, its name): that goes
            // too. For a batch job that is gone already this asks nothing of anyone.
            if let Err(e) = scheduler.cancel(&[job_id.to_string()]).await {
                tracing::warn!("could not clean up job {job_id}: {e}");
            }
            dir.update(|r| {
                r.state = ClusterState::Failed;
                r.message = Some(message.clone());
            })?;
            eprintln!("ray-hpc: {message}");
            print_job_output(&record);
            progress.failed(&Failure {
                kind: FailureKind::JobEnded,
                message,
                record: &record,
                stage: stage_text,
            });
            return Ok(1);
        }
        if Instant::now() >= deadline {
            progress.finish();
            let at = stage_text.clone().unwrap_or_default();
            let message = format!(
                "cluster {} not ready after {} s; it is at: {at}",
                record.name, args.timeout
            );
            eprintln!("ray-hpc: {message}");
            if args.cancel_on_timeout {
                scheduler.cancel(&[job_id.to_string()]).await?;
                dir.update(|r| {
                    if !r.state.is_over() {
                        r.state = ClusterState::Failed;
                        r.message = Some(format!("not ready within {} s; cancelled", args.timeout));
                    }
                })?;
                eprintln!("ray-hpc: cancelled job {job_id} (--cancel-on-timeout)");
            } else {
                eprintln!(
                    "ray-hpc: the job stays; follow it with `ray-hpc status {0}`, end it with `ray-hpc down {0}`",
                    record.name
                );
            }
            progress.failed(&Failure {
                kind: if args.cancel_on_timeout {
                    FailureKind::TimeoutCancelled
                } else {
                    FailureKind::Timeout
                },
                message,
                record: &dir.load()?,
                stage: stage_text,
            });
            return Ok(1);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Where a cluster is: queued (why, until when), starting, k/K joined, ready; `text` says it in
/// one line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stage {
    /// `queued`, `starting`, `ready`, `ended` or `failed`.
    pub stage: &'static str,
    pub text: String,
    /// Why a queued job waits, in the scheduler's words.
    pub reason: Option<String>,
    /// When the scheduler expects a queued job to start, as it writes it.
    pub expected_start: Option<String>,
    pub nodes_joined: u32,
    pub nodes_expected: u32,
}

pub fn stage_of(record: &ClusterRecord, job: Option<&JobInfo>) -> Stage {
    let mut reason = None;
    let mut expected_start = None;
    let (stage, text) = match (record.state, job.map(|j| &j.state)) {
        (ClusterState::Queued, Some(JobState::Pending)) | (ClusterState::Queued, None) => {
            let why = job
                .and_then(|j| j.reason.clone())
                .unwrap_or_else(|| "waiting".into());
            reason = job.and_then(|j| j.reason.clone());
            expected_start = job.and_then(|j| j.start_time.clone());
            let text = match &expected_start {
                Some(t) => format!("queued: {why} (expected start {t})"),
                None => format!("queued: {why}"),
            };
            ("queued", text)
        }
        (ClusterState::Queued, Some(_)) => ("starting", "starting: the job is running".into()),
        (ClusterState::Starting, _) if record.gcs_address.is_none() => {
            ("starting", "starting: the Ray head is starting".into())
        }
        (ClusterState::Starting, _) => (
            "starting",
            format!(
                "starting: {}/{} node(s) joined",
                record.nodes_joined, record.expected_nodes
            ),
        ),
        (ClusterState::Ready, _) => (
            "ready",
            format!(
                "ready: {}/{} node(s) joined",
                record.nodes_joined,
                record.expected_nodes.max(record.nodes_joined)
            ),
        ),
        (ClusterState::Ended, _) => ("ended", "ENDED".into()),
        (ClusterState::Failed, _) => ("failed", "FAILED".into()),
    };
    Stage {
        stage,
        text,
        reason,
        expected_start,
        nodes_joined: record.nodes_joined,
        nodes_expected: record.expected_nodes,
    }
}

/// The last lines of the batch job's output, when there is any.
fn job_output_tail(record: &ClusterRecord) -> Option<String> {
    let out = record.job_output.as_ref()?;
    let tail = crate::agent::supervisor::tail_file(out, 30);
    (!tail.trim().is_empty()).then_some(tail)
}

fn print_job_output(record: &ClusterRecord) {
    if let (Some(out), Some(tail)) = (&record.job_output, job_output_tail(record)) {
        eprintln!("--- the job's output ({}) ---\n{tail}", out.display());
    }
}

/// The summary goes to stderr; stdout has only the `export` lines, so
/// `eval "$(ray-hpc up ...)"` sets up this shell.
fn print_ready(record: &ClusterRecord, took: Duration) {
    let cpus: u32 = record.nodes.iter().map(|n| n.cpus).sum();
    let gpus: u32 = record.nodes.iter().map(|n| n.gpus).sum();
    let gcs = record.gcs_address.as_deref().unwrap_or("-");
    let dashboard = record.dashboard_url.as_deref().unwrap_or("-");
    eprintln!(
        "cluster {} is ready after {:.0}s: {} node(s), {cpus} CPU(s), {gpus} GPU(s)",
        record.name,
        took.as_secs_f64(),
        record.nodes.len()
    );
    eprintln!("  Ray address:  {gcs}");
    if let Some(client) = &record.client_server_address {
        eprintln!("  Ray Client:   {}", reach::ray_client_url(client));
    }
    eprintln!("  dashboard:    {dashboard}");
    let token = record.token_path.as_ref().map(|p| p.display().to_string());
    let laptop = reach::laptop_lines(
        record.dashboard_url.as_deref(),
        record.client_server_address.as_deref(),
        token.as_deref(),
        &reach::Via::here(),
    );
    for (i, line) in laptop.iter().enumerate() {
        let lead = if i == 0 { "from a laptop:" } else { "" };
        eprintln!("  {lead:<14} {line}");
    }
    eprintln!("  end it with:  ray-hpc down {}", record.name);
    eprintln!("To use it from this shell (the `ray` CLI, ray.init(), ray job submit):");
    for line in export_lines(record) {
        println!("{line}");
    }
}

/// What was submitted, for the first line of progress.
struct Submitted<'a> {
    name: &'a str,
    scheduler: &'a str,
    job_id: &'a str,
    nodes: u32,
}

/// Why `up` gives up on a cluster (the `kind` of the JSON `error` event).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum FailureKind {
    /// The scheduler refused the submission.
    Refused,
    /// The cluster's head said it failed.
    Failed,
    /// The cluster ended (cancelled, say) before it was ready.
    Ended,
    /// The job ended without its head saying so.
    JobEnded,
    /// Not ready within --timeout; the job stays.
    Timeout,
    /// Not ready within --timeout; the job was cancelled (--cancel-on-timeout).
    TimeoutCancelled,
}

struct Failure<'a> {
    kind: FailureKind,
    message: String,
    record: &'a ClusterRecord,
    /// Where the cluster was last seen, in one line.
    stage: Option<String>,
}

/// Progress for a person (a spinner on a terminal, timestamped lines otherwise: batch logs,
/// CI) or for a program (JSON lines on stdout).
enum Progress {
    Bar(indicatif::ProgressBar),
    Lines,
    Json,
}

impl Progress {
    fn new(json: bool) -> Self {
        if json {
            Progress::Json
        } else if std::io::stderr().is_terminal() {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.enable_steady_tick(Duration::from_millis(120));
            Progress::Bar(bar)
        } else {
            Progress::Lines
        }
    }

    /// One JSON line on stdout, flushed at once so a reader sees it now.
    fn emit(event: serde_json::Value) {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{event}").and_then(|_| out.flush());
    }

    fn say(&self, what: &str) {
        match self {
            Progress::Bar(bar) => {
                bar.println(format!("  {what}"));
                bar.set_message(what.to_string());
            }
            Progress::Lines => eprintln!("[{}] {what}", clock()),
            Progress::Json => {}
        }
    }

    fn submitted(&self, s: &Submitted) {
        match self {
            Progress::Json => Self::emit(submitted_event(s)),
            _ => self.say(&format!(
                "cluster {}: {} job {} submitted ({} node(s))",
                s.name, s.scheduler, s.job_id, s.nodes
            )),
        }
    }

    fn stage(&self, stage: &Stage, elapsed: Duration) {
        match self {
            Progress::Json => Self::emit(stage_event(stage, elapsed)),
            _ => self.say(&stage.text),
        }
    }

    /// Something worth knowing that does not change the stage.
    fn note(&self, what: &str) {
        match self {
            Progress::Json => Self::emit(event("note", json!({ "message": what }))),
            _ => self.say(what),
        }
    }

    fn ready(&self, record: &ClusterRecord, took: Duration) {
        match self {
            Progress::Json => Self::emit(ready_event(record, took)),
            _ => print_ready(record, took),
        }
    }

    /// The JSON `error` event; a person has read the same on stderr already.
    fn failed(&self, f: &Failure) {
        if let Progress::Json = self {
            Self::emit(error_event(f));
        }
    }

    fn finish(&self) {
        if let Progress::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}

/// An `up --json` event: `fields` with the schema and the event's name.
fn event(name: &str, mut fields: serde_json::Value) -> serde_json::Value {
    fields["schema"] = SCHEMA.into();
    fields["event"] = name.into();
    fields
}

fn submitted_event(s: &Submitted) -> serde_json::Value {
    event(
        "submitted",
        json!({"name": s.name, "scheduler": s.scheduler, "job_id": s.job_id, "nodes": s.nodes}),
    )
}

fn stage_event(stage: &Stage, elapsed: Duration) -> serde_json::Value {
    let mut fields = serde_json::to_value(stage).unwrap_or_default();
    fields["elapsed_s"] = json!(elapsed.as_secs_f64());
    event("stage", fields)
}

fn ready_event(record: &ClusterRecord, took: Duration) -> serde_json::Value {
    event(
        "ready",
        json!({"took_s": took.as_secs_f64(), "cluster": Connection::of(record)}),
    )
}

fn error_event(f: &Failure) -> serde_json::Value {
    event(
        "error",
        json!({
            "kind": f.kind,
            "message": f.message,
            "name": f.record.name,
            "state": f.record.state,
            "job_id": f.record.job_id,
            "stage": f.stage,
            "job_output": f.record.job_output,
            "job_output_tail": job_output_tail(f.record),
        }),
    )
}

/// UTC wall-clock time of day, HH:MM:SS.
fn clock() -> String {
    let secs = registry::now_unix();
    format!(
        "{:02}:{:02}:{:02}",
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(state: ClusterState) -> ClusterRecord {
        ClusterRecord {
            schema: 1,
            name: "c".into(),
            scheduler: "local".into(),
            job_id: "5".into(),
            state,
            message: None,
            created_unix: 0,
            updated_unix: 0,
            expected_nodes: 3,
            head_node: "n1".into(),
            head_address: None,
            gcs_address: None,
            dashboard_url: None,
            client_server_address: None,
            control_address: None,
            auth: "token".into(),
            token_path: Some("/h/.ray-hpc/clusters/c/token".into()),
            nodes: vec![],
            nodes_joined: 0,
            metrics_address: None,
            job_output: None,
            worker_jobs: vec![],
            autoscaler_notes: vec![],
            scheduler_outage: None,
            scheduler_settings: Default::default(),
        }
    }

    fn job(state: JobState, reason: Option<&str>, start: Option<&str>) -> JobInfo {
        JobInfo {
            id: "5".into(),
            name: "rh-c".into(),
            state,
            reason: reason.map(Into::into),
            start_time: start.map(Into::into),
            time_left_s: None,
        }
    }

    #[test]
    fn stages_say_where_the_cluster_is() {
        let queued = record(ClusterState::Queued);
        let pending = job(
            JobState::Pending,
            Some("Resources"),
            Some("2026-11-22T08:00:00"),
        );
        assert_eq!(
            stage_of(&queued, Some(&pending)).text,
            "queued: Resources (expected start 2026-11-22T08:00:00)"
        );
        assert_eq!(
            stage_of(
                &queued,
                Some(&job(JobState::Pending, Some("Priority"), None))
            )
            .text,
            "queued: Priority"
        );
        assert_eq!(
            stage_of(&queued, Some(&job(JobState::Running, None, None))).text,
            "starting: the job is running"
        );
        let mut starting = record(ClusterState::Starting);
        assert_eq!(
            stage_of(&starting, None).text,
            "starting: the Ray head is starting"
        );
        starting.gcs_address = Some("1.2.3.4:5".into());
        starting.nodes_joined = 2;
        assert_eq!(
            stage_of(&starting, None).text,
            "starting: 2/3 node(s) joined"
        );
    }

    #[test]
    fn stages_carry_the_queue_reason_and_the_node_counts() {
        let pending = job(JobState::Pending, Some("Priority"), Some("soon"));
        let q = stage_of(&record(ClusterState::Queued), Some(&pending));
        assert_eq!(q.stage, "queued");
        assert_eq!(q.reason.as_deref(), Some("Priority"));
        assert_eq!(q.expected_start.as_deref(), Some("soon"));
        let mut r = record(ClusterState::Ready);
        r.nodes_joined = 3;
        let ready = stage_of(&r, None);
        assert_eq!(
            (ready.stage, ready.nodes_joined, ready.nodes_expected),
            ("ready", 3, 3)
        );
        assert_eq!(
            stage_of(&record(ClusterState::Failed), None).stage,
            "failed"
        );
    }

    #[test]
    fn json_events_have_exactly_the_documented_keys() {
        let doc = crate::cli::doc_keys::documented(include_str!("../../docs/cli-json.md"));
        let check = |object: &str, v: &serde_json::Value| {
            crate::cli::doc_keys::check(&doc, "docs/cli-json.md", object, v)
        };
        let submitted = submitted_event(&Submitted {
            name: "c",
            scheduler: "local",
            job_id: "5",
            nodes: 2,
        });
        check("submitted", &submitted);
        assert_eq!(submitted["schema"], SCHEMA);
        let stage = stage_event(
            &stage_of(&record(ClusterState::Queued), None),
            Duration::from_secs(1),
        );
        check("stage", &stage);
        assert_eq!(stage["stage"], "queued");
        check("note", &event("note", json!({"message": "x"})));
        let mut r = record(ClusterState::Ready);
        r.gcs_address = Some("127.0.0.2:1".into());
        let ready = ready_event(&r, Duration::from_secs(3));
        check("ready", &ready);
        check("connection", &ready["cluster"]);
        assert_eq!(ready["cluster"]["env"]["RAY_ADDRESS"], "127.0.0.2:1");
        let failed = error_event(&Failure {
            kind: FailureKind::TimeoutCancelled,
            message: "not ready".into(),
            record: &record(ClusterState::Failed),
            stage: Some("queued: Priority".into()),
        });
        check("error", &failed);
        assert_eq!(failed["kind"], "timeout_cancelled");
        assert_eq!(failed["state"], "FAILED");
    }
}
