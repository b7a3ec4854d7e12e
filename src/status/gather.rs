//! What `status` observes: the registry records, one scheduler query per scheduler for all the
//! clusters' jobs, and each live cluster's GCS (concurrently). Every outside call is bounded by a
//! timeout; a call that fails becomes a note in the view, never an error of the command.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::config::Config;
use crate::ray::gcs::GcsClient;
use crate::registry::{self, ClusterDir, ClusterRecord, RegistryError};
use crate::scheduler::{self, JobInfo};

use super::view::{
    ClusterView, GcsObservation, JobsObservation, ListView, Observation, RefusedKind, RefusedView,
    build, cluster_job_ids, should_ask_gcs,
};

/// Bounds the connection and the call to each GCS.
pub const GCS_TIMEOUT: Duration = Duration::from_secs(3);
/// Bounds one scheduler query (queries stall when a scheduler's controller is busy).
pub const SCHEDULER_TIMEOUT: Duration = Duration::from_secs(10);

/// Every cluster in the registry, refused and unreadable entries apart.
pub async fn list(root: &Path, config: &Config) -> ListView {
    let mut records = vec![];
    let mut refused = vec![];
    for name in registry::list_names(root) {
        match read(root, &name) {
            Ok((dir, rec)) => records.push((dir, rec)),
            Err(e) => refused.push(RefusedView {
                name,
                kind: match e {
                    RegistryError::Unsafe { .. } => RefusedKind::Unsafe,
                    _ => RefusedKind::Unreadable,
                },
                why: match e {
                    RegistryError::Unsafe { why, .. } => why,
                    other => other.to_string(),
                },
            }),
        }
    }
    // Ended clusters' jobs are not worth a scheduler query in the list.
    let clusters = observe(&records, |rec| !rec.state.is_over(), config).await;
    ListView { clusters, refused }
}

/// One cluster: an unknown or refused name is an error (exit 1).
pub async fn one(root: &Path, name: &str, config: &Config) -> Result<ClusterView, RegistryError> {
    let (dir, rec) = read_existing(root, name)?;
    let mut views = observe(&[(dir, rec)], |_| true, config).await;
    Ok(views.remove(0))
}

fn read_existing(root: &Path, name: &str) -> Result<(ClusterDir, ClusterRecord), RegistryError> {
    let dir = ClusterDir::open_existing(root, name)?;
    let rec = dir.load()?;
    Ok((dir, rec))
}

/// Like `open_existing`, for a name taken from the registry listing.
fn read(root: &Path, name: &str) -> Result<(ClusterDir, ClusterRecord), RegistryError> {
    let dir = ClusterDir::open(root, name)?;
    dir.check_private()?;
    let rec = dir.load()?;
    Ok((dir, rec))
}

/// Builds the views of these clusters from one scheduler query per scheduler (for the records
/// `ask_scheduler` selects) and one GCS call per cluster that may be up.
async fn observe(
    records: &[(ClusterDir, ClusterRecord)],
    ask_scheduler: impl Fn(&ClusterRecord) -> bool,
    config: &Config,
) -> Vec<ClusterView> {
    // One query per scheduler (and its settings from `up`'s command line, such as which
    // ResourceManager), for all its clusters' jobs.
    let mut by_scheduler: BTreeMap<SchedulerKey, Vec<String>> = BTreeMap::new();
    for (_, rec) in records.iter().filter(|(_, r)| ask_scheduler(r)) {
        by_scheduler
            .entry(SchedulerKey::of(rec))
            .or_default()
            .extend(cluster_job_ids(rec));
    }
    let queries = by_scheduler.into_iter().map(|(sched, mut ids)| async move {
        ids.sort();
        ids.dedup();
        let answer = query(&sched, ids, config).await;
        (sched, answer)
    });
    let answers: BTreeMap<SchedulerKey, Result<Vec<JobInfo>, String>> =
        futures_util::future::join_all(queries)
            .await
            .into_iter()
            .collect();

    let jobs: Vec<JobsObservation> = records
        .iter()
        .map(|(_, rec)| {
            if !ask_scheduler(rec) {
                return JobsObservation::NotAsked;
            }
            match answers.get(&SchedulerKey::of(rec)) {
                None => JobsObservation::NotAsked,
                Some(Err(e)) => JobsObservation::Failed(e.clone()),
                Some(Ok(infos)) => {
                    let ids = cluster_job_ids(rec);
                    JobsObservation::Answered(
                        infos
                            .iter()
                            .filter(|j| ids.contains(&j.id))
                            .cloned()
                            .collect(),
                    )
                }
            }
        })
        .collect();

    let gcs = futures_util::future::join_all(records.iter().zip(&jobs).map(
        |((dir, rec), jobs)| async move {
            if should_ask_gcs(rec, jobs) {
                fetch_gcs(dir, rec).await
            } else {
                GcsObservation::NotAsked
            }
        },
    ))
    .await;

    let now = registry::now_unix();
    records
        .iter()
        .zip(jobs)
        .zip(gcs)
        .map(|(((_, rec), jobs), gcs)| {
            build(&Observation {
                record: rec,
                gcs,
                jobs,
                now_unix: now,
            })
        })
        .collect()
}

/// Which scheduler a record's jobs are with.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct SchedulerKey {
    name: String,
    settings: BTreeMap<String, String>,
}

impl SchedulerKey {
    fn of(rec: &ClusterRecord) -> Self {
        SchedulerKey {
            name: rec.scheduler.clone(),
            settings: rec.scheduler_settings.clone(),
        }
    }
}

/// One scheduler query, bounded by [`SCHEDULER_TIMEOUT`] (the command is killed when it runs
/// longer).
async fn query(
    key: &SchedulerKey,
    ids: Vec<String>,
    config: &Config,
) -> Result<Vec<JobInfo>, String> {
    let setup = config.record_scheduler_setup(&key.name, &key.settings);
    let scheduler =
        scheduler::by_name(&key.name, setup).map_err(|e| format!("{e} (named in the record)"))?;
    match tokio::time::timeout(SCHEDULER_TIMEOUT, scheduler.query(&ids)).await {
        Ok(answer) => answer.map_err(|e| e.to_string()),
        Err(_) => Err(format!(
            "the scheduler did not answer within {}s",
            SCHEDULER_TIMEOUT.as_secs()
        )),
    }
}

/// The cluster's resource state from its GCS, with the cluster's token when auth is on.
async fn fetch_gcs(dir: &ClusterDir, rec: &ClusterRecord) -> GcsObservation {
    let Some(address) = rec.gcs_address.as_deref() else {
        return GcsObservation::NotAsked;
    };
    let token = if rec.auth == "token" {
        let path = rec.token_path.clone().unwrap_or_else(|| dir.token_path());
        match std::fs::read_to_string(&path) {
            Ok(t) => Some(t),
            Err(e) => {
                return GcsObservation::Failed(format!(
                    "cannot read the cluster's token {}: {e}",
                    path.display()
                ));
            }
        }
    } else {
        None
    };
    let call = async {
        let client = GcsClient::connect(address, token, GCS_TIMEOUT).await?;
        client.cluster_resource_state().await
    };
    // connect and the call are each bounded; this bounds them together too.
    match tokio::time::timeout(GCS_TIMEOUT * 2, call).await {
        Ok(Ok(state)) => GcsObservation::Live(state),
        Ok(Err(e)) => GcsObservation::Failed(e.to_string()),
        Err(_) => GcsObservation::Failed(format!(
            "the GCS at {address} did not answer within {}s",
            (GCS_TIMEOUT * 2).as_secs()
        )),
    }
}
