//! `ray-hpc up`: submit a Ray cluster as a batch job from a login node, show its progress until
//! it is ready, and print how to use it.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};

use crate::config::{self, Config};
use crate::registry::{self, ClusterDir, ClusterRecord, ClusterState};
use crate::scheduler::{
    self, JobInfo, JobRequest, JobState, OutputPath, Place, Scheduler, shell_join, shell_quote,
};

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

async fn up(args: &Args, config: Config, config_path: Option<PathBuf>) -> anyhow::Result<i32> {
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
    let job_id = match scheduler.submit(&script, &request).await {
        Ok(id) => id,
        Err(e) => {
            let message = e.reason();
            record.state = ClusterState::Failed;
            record.message = Some(message.clone());
            dir.save(&record)?;
            eprintln!("ray-hpc: the scheduler refused cluster {name}:\n{message}");
            return Ok(1);
        }
    };
    // The job may already have started and taken the record over; it knows its own id then.
    dir.update(|r| {
        if r.state == ClusterState::Queued {
            r.job_id = job_id.clone();
        }
    })?;
    let progress = Progress::new();
    progress.say(&format!(
        "cluster {name}: {} job {job_id} submitted ({} node(s))",
        scheduler.name(),
        args.nodes
    ));
    if args.no_wait {
        progress.finish();
        eprintln!("follow it with `ray-hpc status {name}`; end it with `ray-hpc down {name}`");
        return Ok(0);
    }
    wait_ready(args, &dir, scheduler.as_ref(), &job_id, &progress).await
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
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.timeout);
    let mut last_query: Option<Instant> = None;
    let mut job: Option<JobInfo> = None;
    let mut job_known = false;
    let mut last_stage = String::new();
    loop {
        let record = dir.load()?;
        if last_query.is_none_or(|t| t.elapsed() >= SCHEDULER_POLL) {
            match scheduler.query(&[job_id.to_string()]).await {
                Ok(jobs) => {
                    job = jobs.into_iter().next();
                    job_known |= job.is_some();
                }
                Err(e) => progress.say(&format!("cannot ask the scheduler: {e}")),
            }
            last_query = Some(Instant::now());
        }
        let stage = stage_of(&record, job.as_ref());
        if stage != last_stage {
            progress.say(&stage);
            last_stage = stage;
        }
        match record.state {
            ClusterState::Ready => {
                progress.finish();
                print_ready(&record, started.elapsed());
                return Ok(0);
            }
            ClusterState::Failed | ClusterState::Ended => {
                progress.finish();
                eprintln!(
                    "ray-hpc: cluster {} {} before it was ready: {}",
                    record.name,
                    if record.state == ClusterState::Failed {
                        "failed"
                    } else {
                        "ended"
                    },
                    record.message.as_deref().unwrap_or("no reason recorded")
                );
                print_job_output(&record);
                return Ok(1);
            }
            _ => {}
        }
        // The job ended without its head ever saying so (killed, failed to start ray-hpc).
        let job_over = job_known && job.as_ref().is_none_or(|j| j.state.is_ended());
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
                .unwrap_or_else(|| "gone".into());
            let message = format!("job {job_id} ended ({how}) before the cluster was ready");
            dir.update(|r| {
                r.state = ClusterState::Failed;
                r.message = Some(message.clone());
            })?;
            eprintln!("ray-hpc: {message}");
            print_job_output(&record);
            return Ok(1);
        }
        if Instant::now() >= deadline {
            progress.finish();
            eprintln!(
                "ray-hpc: cluster {} not ready after {} s; it is at: {last_stage}",
                record.name, args.timeout
            );
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
            return Ok(1);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// One line saying where a cluster is: queued (why, until when), starting, k/K joined.
pub fn stage_of(record: &ClusterRecord, job: Option<&JobInfo>) -> String {
    match (record.state, job.map(|j| &j.state)) {
        (ClusterState::Queued, Some(JobState::Pending)) | (ClusterState::Queued, None) => {
            let job = job.cloned();
            let reason = job
                .as_ref()
                .and_then(|j| j.reason.clone())
                .unwrap_or_else(|| "waiting".into());
            match job.and_then(|j| j.start_time) {
                Some(t) => format!("queued: {reason} (expected start {t})"),
                None => format!("queued: {reason}"),
            }
        }
        (ClusterState::Queued, Some(_)) => "starting: the job is running".into(),
        (ClusterState::Starting, _) if record.gcs_address.is_none() => {
            "starting: the Ray head is starting".into()
        }
        (ClusterState::Starting, _) => format!(
            "starting: {}/{} node(s) joined",
            record.nodes_joined, record.expected_nodes
        ),
        (ClusterState::Ready, _) => format!(
            "ready: {}/{} node(s) joined",
            record.nodes_joined, record.expected_nodes
        ),
        (state, _) => format!("{state:?}").to_uppercase(),
    }
}

fn print_job_output(record: &ClusterRecord) {
    if let Some(out) = &record.job_output {
        let tail = crate::agent::supervisor::tail_file(out, 30);
        if !tail.trim().is_empty() {
            eprintln!("--- the job's output ({}) ---\n{tail}", out.display());
        }
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
    eprintln!("  dashboard:    {dashboard}");
    if let Some(hostport) = dashboard.strip_prefix("http://") {
        let login = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "<login node>".into());
        let user = std::env::var("USER").unwrap_or_else(|_| "<you>".into());
        eprintln!(
            "  from a laptop: ssh -N -L 8265:{hostport} {user}@{login}   then open http://localhost:8265"
        );
    }
    eprintln!("  end it with:  ray-hpc down {}", record.name);
    eprintln!("To use it from this shell (the `ray` CLI, ray.init(), ray job submit):");
    for line in export_lines(record) {
        println!("{line}");
    }
}

/// The environment that points the real `ray` CLI and `ray.init()` at this cluster.
pub fn export_lines(record: &ClusterRecord) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(gcs) = &record.gcs_address {
        lines.push(format!("export RAY_ADDRESS={}", shell_quote(gcs)));
    }
    if let Some(url) = &record.dashboard_url {
        lines.push(format!(
            "export RAY_API_SERVER_ADDRESS={}",
            shell_quote(url)
        ));
    }
    match &record.token_path {
        Some(p) => {
            lines.push("export RAY_AUTH_MODE=token".into());
            lines.push(format!(
                "export RAY_AUTH_TOKEN_PATH={}",
                shell_quote(&p.display().to_string())
            ));
        }
        None => lines.push("export RAY_AUTH_MODE=disabled".into()),
    }
    lines
}

/// A spinner on a terminal, timestamped lines otherwise (batch logs, CI).
struct Progress {
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    fn new() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Progress { bar }
    }

    fn say(&self, what: &str) {
        match &self.bar {
            Some(bar) => {
                bar.println(format!("  {what}"));
                bar.set_message(what.to_string());
            }
            None => eprintln!("[{}] {what}", clock()),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
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
            stage_of(&queued, Some(&pending)),
            "queued: Resources (expected start 2026-11-22T08:00:00)"
        );
        assert_eq!(
            stage_of(
                &queued,
                Some(&job(JobState::Pending, Some("Priority"), None))
            ),
            "queued: Priority"
        );
        assert_eq!(
            stage_of(&queued, Some(&job(JobState::Running, None, None))),
            "starting: the job is running"
        );
        let mut starting = record(ClusterState::Starting);
        assert_eq!(
            stage_of(&starting, None),
            "starting: the Ray head is starting"
        );
        starting.gcs_address = Some("1.2.3.4:5".into());
        starting.nodes_joined = 2;
        assert_eq!(stage_of(&starting, None), "starting: 2/3 node(s) joined");
    }

    #[test]
    fn export_lines_point_ray_at_the_cluster() {
        let mut r = record(ClusterState::Ready);
        r.gcs_address = Some("127.0.0.11:24720".into());
        r.dashboard_url = Some("http://127.0.0.11:22716".into());
        assert_eq!(
            export_lines(&r),
            [
                "export RAY_ADDRESS=127.0.0.11:24720",
                "export RAY_API_SERVER_ADDRESS=http://127.0.0.11:22716",
                "export RAY_AUTH_MODE=token",
                "export RAY_AUTH_TOKEN_PATH=/h/.ray-hpc/clusters/c/token",
            ]
        );
        r.token_path = None;
        assert!(export_lines(&r).contains(&"export RAY_AUTH_MODE=disabled".to_string()));
    }
}
