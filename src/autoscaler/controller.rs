//! The autoscaler as a task of its own, in the style of kube-runtime's controllers: each new
//! observation of the cluster (a GCS snapshot, every `poll_interval_s`) triggers one
//! [`Reconciler::reconcile`] round (observe the scheduler, plan, act); its error policy
//! ([`super::reach`]) says when the scheduler is asked again after a failure. The head talks to
//! it through channels only: it reads [`AutoscalerStatus`] from a watch channel and stops it
//! with [`ControllerHandle::stop`], which returns at once whatever the scheduler is doing (a
//! command in flight is abandoned, and its process group killed by the command runner).
//!
//! A submission abandoned that way may still become a job. Such a job cannot outlive the
//! cluster: its agent finds the cluster over in the registry and exits, and the next head of
//! the same cluster name cancels whatever carries the name.

use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::reconciler::{AutoscalerStatus, RayControl, Reconciler, now_ms};
use crate::proto::ray::autoscaler::ClusterResourceState;

/// The cluster as last observed: None until the first snapshot.
pub type Observations = watch::Receiver<Option<Arc<ClusterResourceState>>>;

pub struct ControllerHandle {
    /// What the head shows of the autoscaler; changes after rounds that change it.
    pub status: watch::Receiver<AutoscalerStatus>,
    stop: watch::Sender<bool>,
    task: JoinHandle<Reconciler>,
}

/// Starts the loop: one round per new observation, until stopped or the observations end.
pub fn spawn(
    mut reconciler: Reconciler,
    ray: Arc<dyn RayControl>,
    mut observations: Observations,
) -> ControllerHandle {
    let (status_tx, status) = watch::channel(reconciler.status());
    let (stop, mut stopped) = watch::channel(false);
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                biased;
                _ = stopped.changed() => break,
                changed = observations.changed() => if changed.is_err() { break },
            }
            let Some(state) = observations.borrow_and_update().clone() else {
                continue;
            };
            tokio::select! {
                biased;
                _ = stopped.changed() => break,
                _ = reconciler.reconcile(ray.as_ref(), &state, now_ms()) => {}
            }
            let now = reconciler.status();
            status_tx.send_if_modified(|s| {
                let changed = *s != now;
                *s = now;
                changed
            });
        }
        reconciler
    });
    ControllerHandle { status, stop, task }
}

impl ControllerHandle {
    /// Stops the loop now, abandoning a round in progress, and hands the reconciler back (for
    /// the final cancel of its jobs); None if the task had panicked.
    pub async fn stop(self) -> Option<Reconciler> {
        let _ = self.stop.send(true);
        match self.task.await {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::error!("the autoscaler task failed: {e}");
                None
            }
        }
    }
}
