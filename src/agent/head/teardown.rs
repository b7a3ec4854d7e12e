//! Stopping everything the bring-up started, whatever step it reached.

use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::Head;
use crate::agent::node::{self, RunningNode};
use crate::agent::supervisor::Supervised;
use crate::autoscaler::controller::ControllerHandle;

/// Everything that must be stopped at the end, in the order it is stopped.
#[derive(Default)]
pub(super) struct Running {
    pub shutdown: Option<watch::Sender<Option<String>>>,
    pub fan_out: Option<Supervised>,
    pub head_node: Option<RunningNode>,
    pub server: Option<tokio::task::JoinHandle<()>>,
    pub metrics_server: Option<tokio::task::JoinHandle<()>>,
    /// The task that observes the cluster's GCS.
    pub observer: Option<tokio::task::JoinHandle<()>>,
    pub autoscaler: Option<ControllerHandle>,
}

/// Tells the workers to stop and stops the head's Ray at the same time: a cancelled job has
/// only the scheduler's KillWait before everything is SIGKILLed, temp dirs and all.
pub(super) async fn teardown(head: &Head, running: &mut Running) {
    let started = Instant::now();
    let grace = head.grace;
    let shutdown = running.shutdown.take();
    if let Some(tx) = &shutdown {
        tx.send_replace(Some("the cluster is ending".into()));
    }
    let workers = async {
        if let Some(f) = running.fan_out.as_mut() {
            let wait = grace + Duration::from_secs(10);
            if tokio::time::timeout(wait, f.wait()).await.is_err() {
                tracing::warn!("worker agents did not exit within {wait:?}; stopping their step");
            }
            f.stop(grace).await;
        }
    };
    let head_node = async {
        if let Some(node) = running.head_node.as_mut() {
            node::stop_node(node, grace).await;
        }
    };
    let worker_jobs = give_back_worker_jobs(running.autoscaler.take(), grace);
    tokio::join!(workers, head_node, worker_jobs);
    // Dropped only now so that worker streams end with Shutdown, not a broken connection.
    drop(shutdown);
    for server in [
        running.server.take(),
        running.metrics_server.take(),
        running.observer.take(),
    ]
    .into_iter()
    .flatten()
    {
        server.abort();
    }
    tracing::info!("teardown took {:.1}s", started.elapsed().as_secs_f64());
}

/// Stops the autoscaler and cancels every worker job it submitted (no orphans), alongside the
/// rest of the teardown and never for longer than `grace`: a scheduler that does not answer
/// must not hold the teardown up (such jobs end by themselves once their head is gone).
async fn give_back_worker_jobs(autoscaler: Option<ControllerHandle>, grace: Duration) {
    let Some(controller) = autoscaler else {
        return;
    };
    let Some(mut reconciler) = controller.stop().await else {
        return;
    };
    if tokio::time::timeout(grace, reconciler.cancel_all())
        .await
        .is_err()
    {
        tracing::warn!(
            "the scheduler did not take the worker jobs' cancel within {grace:?}; they end by themselves once they find their head gone"
        );
    }
}
