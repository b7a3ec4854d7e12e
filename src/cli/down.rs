//! `ray-hpc down NAME... | --all`: cancel clusters' jobs, wait until they are gone, and mark the
//! registry entries ended. A cluster that is already gone is not an error.

use std::time::{Duration, Instant};

use anyhow::anyhow;

use crate::config::Config;
use crate::registry::{self, ClusterDir, ClusterState};
use crate::scheduler::{self, Scheduler};

#[derive(clap::Args)]
pub struct Args {
    /// The clusters to end.
    names: Vec<String>,
    /// End every cluster of yours that is not over yet.
    #[arg(long, conflicts_with = "names")]
    all: bool,
    /// Seconds to wait for the scheduler to let go of the jobs.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
}

pub fn run(args: &Args, config: Config) -> anyhow::Result<i32> {
    let root = registry::root()?;
    let names: Vec<String> = if args.all {
        registry::list_names(&root)
    } else if args.names.is_empty() {
        return Err(anyhow!("name the cluster(s) to end, or use --all"));
    } else {
        args.names.clone()
    };
    let mut code = 0;
    for name in &names {
        let timeout = Duration::from_secs(args.timeout);
        let ended = super::runtime()?.block_on(down_one(&root, name, args.all, timeout, &config));
        if let Err(e) = ended {
            eprintln!("ray-hpc: {name}: {e:#}");
            code = 1;
        }
    }
    Ok(code)
}

async fn down_one(
    root: &std::path::Path,
    name: &str,
    quiet_if_over: bool,
    timeout: Duration,
    config: &Config,
) -> anyhow::Result<()> {
    let dir = ClusterDir::open_existing(root, name)?;
    let record = dir.load()?;
    if record.state.is_over() {
        if !quiet_if_over {
            eprintln!("cluster {name} already {:?}", record.state);
        }
        return Ok(());
    }
    // The head's job and the autoscaler's worker jobs: one cancel, one query for all.
    let jobs: Vec<String> = std::iter::once(record.job_id.clone())
        .chain(record.worker_jobs.iter().cloned())
        .filter(|j| !j.is_empty())
        .collect();
    let setup = config.record_scheduler_setup(&record.scheduler, &record.scheduler_settings);
    let sched = scheduler::by_name(&record.scheduler, setup)?;
    sched.cancel(&jobs).await?;
    wait_gone(sched.as_ref(), &jobs, timeout).await?;
    // The cluster was up when `down` began, so however its head went since (a scheduler that
    // kills it before its teardown is done has its watchdog mark it FAILED), it ended here.
    let record = dir.update(|r| {
        if r.state != ClusterState::Ended {
            r.state = ClusterState::Ended;
            r.message = Some("ended by `ray-hpc down`".into());
        }
    })?;
    eprintln!(
        "cluster {name}: job {} cancelled; {:?}",
        if jobs.is_empty() {
            "-".to_string()
        } else {
            jobs.join(", ")
        },
        record.state
    );
    Ok(())
}

/// Waits until the scheduler has let go of the jobs: nothing pending, running or completing.
async fn wait_gone(
    sched: &dyn Scheduler,
    jobs: &[String],
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let active: Vec<String> = sched
            .query(jobs)
            .await?
            .into_iter()
            .filter(|j| !j.state.is_ended())
            .map(|j| j.id)
            .collect();
        if active.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            return Err(anyhow!(
                "job(s) {} still not gone after {} s; check with the scheduler",
                active.join(", "),
                timeout.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}
