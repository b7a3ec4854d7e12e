//! The autoscaler's loop on an in-memory scheduler ([`FakeScheduler`]) and a fake Ray: every
//! path where the scheduler says no, says nothing, forgets a job or will not cancel, round by
//! round with the time given, and the controller task stopping while a submission hangs.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::controller;
use super::planner::Submit;
use super::reconciler::{JoinCommand, RayControl, Reconciler};
use crate::config::{AutoscalerConfig, NodeTypeConfig};
use crate::metrics::Metrics;
use crate::proto::ray::autoscaler::{
    AutoscalingState, ClusterResourceState, NodeState, NodeStatus as GcsStatus, ResourceRequest,
    ResourceRequestByCount,
};
use crate::scheduler::fake::{Behaviour, FakeScheduler};
use crate::scheduler::{EndReason, JobState};

/// Ray as the autoscaler sees it: drains accepted (or refused), reports kept.
#[derive(Default)]
struct FakeRay {
    drained: Mutex<Vec<Vec<u8>>>,
    reports: Mutex<Vec<AutoscalingState>>,
}

#[async_trait::async_trait]
impl RayControl for FakeRay {
    async fn drain_idle(
        &self,
        node_id: &[u8],
        _why: &str,
        _deadline_ms: i64,
    ) -> Result<Result<(), String>, String> {
        self.drained.lock().unwrap().push(node_id.to_vec());
        Ok(Ok(()))
    }

    async fn report(&self, state: AutoscalingState) -> Result<(), String> {
        self.reports.lock().unwrap().push(state);
        Ok(())
    }
}

impl FakeRay {
    fn last_report(&self) -> AutoscalingState {
        self.reports.lock().unwrap().last().cloned().unwrap()
    }
}

const SECOND: u64 = 1_000;
/// A start time far from 0, like a real clock.
const T0: u64 = 1_800_000_000_000;

fn cpu_type() -> NodeTypeConfig {
    NodeTypeConfig {
        name: "cpu".into(),
        queue: None,
        account: None,
        qos: None,
        constraint: None,
        cpus: 2,
        gpus: 0,
        memory_bytes: None,
        walltime: None,
        min_workers: 0,
        max_workers: 4,
        resources: Default::default(),
        labels: Default::default(),
        extra_directives: vec![],
    }
}

fn autoscaler_config() -> AutoscalerConfig {
    AutoscalerConfig {
        enabled: true,
        idle_timeout_s: 60,
        ..AutoscalerConfig::default()
    }
}

fn reconciler(fake: &Arc<FakeScheduler>) -> (Reconciler, Metrics) {
    let metrics = Metrics::new("c1");
    let r = Reconciler::new(
        fake.clone(),
        JoinCommand {
            exe: "/opt/ray-hpc".into(),
            config_path: None,
            cluster: "c1".into(),
            output_dir: "/h/c1".into(),
            env: Default::default(),
            head_job_id: "1".into(),
        },
        &autoscaler_config(),
        &[cpu_type()],
        metrics.clone(),
    );
    (r, metrics)
}

fn head() -> NodeState {
    NodeState {
        node_id: vec![1; 28],
        instance_id: "1".into(),
        total_resources: [
            ("CPU".to_string(), 0.0),
            ("node:__internal_head__".to_string(), 1.0),
        ]
        .into(),
        status: GcsStatus::Running as i32,
        ..Default::default()
    }
}

/// The worker node of job `job_id`, idle for `idle_s` seconds (0: busy).
fn worker(job_id: &str, idle_s: u64) -> NodeState {
    NodeState {
        node_id: vec![job_id.len() as u8 + job_id.as_bytes()[0]; 28],
        instance_id: job_id.into(),
        ray_node_type_name: "cpu".into(),
        total_resources: [("CPU".to_string(), 2.0)].into(),
        available_resources: [("CPU".to_string(), 2.0)].into(),
        status: if idle_s > 0 {
            GcsStatus::Idle
        } else {
            GcsStatus::Running
        } as i32,
        idle_duration_ms: (idle_s * SECOND) as i64,
        ..Default::default()
    }
}

/// The cluster with these nodes and `tasks` pending tasks of one CPU each.
fn cluster(nodes: Vec<NodeState>, tasks: i64) -> ClusterResourceState {
    let demand = (tasks > 0).then(|| ResourceRequestByCount {
        request: Some(ResourceRequest {
            resources_bundle: [("CPU".to_string(), 1.0)].into(),
            ..Default::default()
        }),
        count: tasks,
    });
    ClusterResourceState {
        node_states: nodes,
        pending_resource_requests: demand.into_iter().collect(),
        ..Default::default()
    }
}

fn scheduler_up(metrics: &Metrics) -> bool {
    metrics
        .render()
        .contains("rayhpc_scheduler_up{cluster=\"c1\"} 1\n")
}

#[tokio::test]
async fn demand_becomes_a_job_that_is_followed_until_its_node_joins() {
    let fake = Arc::new(FakeScheduler::new());
    let ray = FakeRay::default();
    let (mut r, _) = reconciler(&fake);
    let plan = r.reconcile(&ray, &cluster(vec![head()], 2), T0).await;
    assert_eq!(
        plan.submit,
        [Submit {
            node_type: "cpu".into(),
            count: 1
        }]
    );
    assert_eq!(fake.calls("submit").len(), 1);
    assert_eq!(r.status().worker_jobs, ["101"]);
    // `ray status` shows the queued job with the scheduler's word.
    let pending = ray.last_report().pending_instances;
    assert_eq!(pending.len(), 1);
    assert!(
        pending[0].details.contains("fake job 101 queued"),
        "{pending:?}"
    );

    // The next rounds wait for the job; the scheduler is asked at most every 5 s.
    for t in 1..5 {
        r.reconcile(&ray, &cluster(vec![head()], 2), T0 + t * SECOND)
            .await;
    }
    assert_eq!(fake.calls("query ").len(), 0);
    fake.set_state("101", JobState::Running);
    r.reconcile(&ray, &cluster(vec![head()], 2), T0 + 5 * SECOND)
        .await;
    assert_eq!(fake.calls("query "), ["query 101"]);
    assert_eq!(
        fake.calls("submit").len(),
        1,
        "no second job for the same demand"
    );
    let joined = cluster(vec![head(), worker("101", 0)], 0);
    r.reconcile(&ray, &joined, T0 + 6 * SECOND).await;
    assert_eq!(r.status().worker_jobs, ["101"]);
    assert!(ray.last_report().pending_instances.is_empty());
    assert_eq!(r.status().outage, None);
}

#[tokio::test]
async fn a_refused_submission_backs_its_type_off_in_the_schedulers_words() {
    let fake = Arc::new(FakeScheduler::new());
    fake.with(|s| s.submit = Behaviour::Refused("QOSMaxSubmitJobPerUserLimit".into()));
    let ray = FakeRay::default();
    let (mut r, metrics) = reconciler(&fake);
    let demand = cluster(vec![head()], 2);
    r.reconcile(&ray, &demand, T0).await;
    assert_eq!(fake.calls("submit").len(), 1);
    let status = r.status();
    assert!(
        status
            .notes
            .iter()
            .any(|n| n.contains("cpu jobs refused") && n.contains("QOSMaxSubmitJobPerUserLimit")),
        "{status:?}"
    );
    assert_eq!(status.outage, None, "a refusal is an answer, not an outage");
    assert!(scheduler_up(&metrics));
    let failed = ray.last_report().failed_instance_requests;
    assert_eq!(failed[0].reason, "QOSMaxSubmitJobPerUserLimit");

    // backoff_initial_s (10 s): no new submission before it is over, one after.
    r.reconcile(&ray, &demand, T0 + 5 * SECOND).await;
    assert_eq!(fake.calls("submit").len(), 1);
    fake.with(|s| s.submit = Behaviour::Works);
    r.reconcile(&ray, &demand, T0 + 11 * SECOND).await;
    assert_eq!(fake.calls("submit").len(), 2);
    assert_eq!(r.status().worker_jobs.len(), 1);
}

#[tokio::test]
async fn a_query_that_times_out_is_an_outage_that_backs_off_and_clears() {
    let fake = Arc::new(FakeScheduler::new());
    let ray = FakeRay::default();
    let (mut r, metrics) = reconciler(&fake);
    let demand = cluster(vec![head()], 2);
    r.reconcile(&ray, &demand, T0).await;
    fake.with(|s| s.query = Behaviour::TimesOut);

    r.reconcile(&ray, &demand, T0 + 5 * SECOND).await;
    let outage = r.status().outage.expect("an outage");
    assert!(outage.command.contains("query"), "{outage:?}");
    assert!(outage.error.contains("did not answer"), "{outage:?}");
    assert_eq!(outage.failures, 1);
    assert!(!scheduler_up(&metrics));
    assert!(
        metrics.render().contains(
            "rayhpc_scheduler_command_failures_total{cluster=\"c1\",command=\"query\"} 1\n"
        )
    );

    // While it backs off nothing goes to the scheduler, but rounds go on (Ray still hears).
    let calls = fake.with(|s| s.calls.len());
    let reports = ray.reports.lock().unwrap().len();
    r.reconcile(&ray, &demand, T0 + 7 * SECOND).await;
    r.reconcile(&ray, &demand, T0 + 9 * SECOND).await;
    assert_eq!(fake.with(|s| s.calls.len()), calls);
    assert_eq!(ray.reports.lock().unwrap().len(), reports + 2);

    // After the backoff it asks again: still failing, the wait doubles.
    r.reconcile(&ray, &demand, T0 + 10 * SECOND).await;
    let outage = r.status().outage.unwrap();
    assert_eq!(outage.failures, 2);
    assert_eq!(outage.retry_unix, (T0 + 20 * SECOND) / 1000);

    fake.with(|s| s.query = Behaviour::Works);
    r.reconcile(&ray, &demand, T0 + 20 * SECOND).await;
    assert_eq!(r.status().outage, None);
    assert!(scheduler_up(&metrics));
}

#[tokio::test]
async fn a_job_that_vanishes_is_counted_lost_and_replaced_while_demand_remains() {
    let fake = Arc::new(FakeScheduler::new());
    let ray = FakeRay::default();
    let (mut r, _) = reconciler(&fake);
    let demand = cluster(vec![head()], 2);
    r.reconcile(&ray, &demand, T0).await;
    fake.forget("101");
    r.reconcile(&ray, &demand, T0 + 5 * SECOND).await;
    let status = r.status();
    assert!(
        status
            .notes
            .iter()
            .any(|n| n.contains("1 worker job(s) ended before their node joined")),
        "{status:?}"
    );
    assert_eq!(fake.calls("submit").len(), 2, "replaced");
    assert_eq!(status.worker_jobs, ["102"]);
}

#[tokio::test]
async fn a_cancel_that_fails_is_retried_until_it_goes_through() {
    let fake = Arc::new(FakeScheduler::new());
    let ray = FakeRay::default();
    let (mut r, _) = reconciler(&fake);
    r.reconcile(&ray, &cluster(vec![head()], 2), T0).await;
    fake.set_state("101", JobState::Running);
    // Its node joined, worked, and has been idle past idle_timeout_s (60 s).
    let idle = cluster(vec![head(), worker("101", 90)], 0);
    fake.with(|s| s.cancel = Behaviour::Fails("Access/permission denied".into()));
    r.reconcile(&ray, &idle, T0 + 100 * SECOND).await;
    assert_eq!(ray.drained.lock().unwrap().len(), 1);
    assert_eq!(fake.calls("cancel"), ["cancel 101"]);
    let status = r.status();
    assert_eq!(status.worker_jobs, ["101"], "not given back yet");
    assert!(
        status
            .outage
            .unwrap()
            .error
            .contains("Access/permission denied")
    );

    // The drained node is no longer idle to Ray; the cancel is retried from memory.
    fake.with(|s| s.cancel = Behaviour::Works);
    let mut draining = worker("101", 0);
    draining.status = GcsStatus::Draining as i32;
    let after = cluster(vec![head(), draining], 0);
    r.reconcile(&ray, &after, T0 + 101 * SECOND).await;
    assert_eq!(
        fake.calls("cancel").len(),
        1,
        "not before the backoff is over"
    );
    r.reconcile(&ray, &after, T0 + 106 * SECOND).await;
    assert_eq!(fake.calls("cancel"), ["cancel 101", "cancel 101"]);
    assert!(r.status().worker_jobs.is_empty());
    assert_eq!(r.status().outage, None);
    assert_eq!(ray.drained.lock().unwrap().len(), 1, "drained once");
    assert_eq!(
        fake.with(|s| s.jobs["101"].state.clone()),
        JobState::Ended(EndReason::Cancelled)
    );
}

#[tokio::test]
async fn jobs_of_an_earlier_head_are_cancelled_once_the_scheduler_answers() {
    let fake = Arc::new(FakeScheduler::new());
    let ray = FakeRay::default();
    // An earlier head of c1 left job 100 behind.
    fake.with(|s| {
        s.jobs.insert(
            "100".into(),
            crate::scheduler::JobInfo {
                id: "100".into(),
                name: "rh-c1".into(),
                state: JobState::Running,
                reason: None,
                start_time: None,
                time_left_s: None,
            },
        );
        s.query = Behaviour::Fails("error: the controller timed out".into());
    });
    let (mut r, _) = reconciler(&fake);
    r.reconcile(&ray, &cluster(vec![head()], 0), T0).await;
    assert!(fake.calls("cancel").is_empty());
    fake.with(|s| s.query = Behaviour::Works);
    r.reconcile(&ray, &cluster(vec![head()], 0), T0 + 6 * SECOND)
        .await;
    assert_eq!(fake.calls("cancel"), ["cancel 100"]);
    assert_eq!(fake.calls("query_named").len(), 2);
}

#[tokio::test]
async fn the_final_cancel_gives_back_every_live_job() {
    let fake = Arc::new(FakeScheduler::new());
    let ray = FakeRay::default();
    let (mut r, _) = reconciler(&fake);
    r.reconcile(&ray, &cluster(vec![head()], 4), T0).await;
    assert_eq!(fake.calls("submit").len(), 2);
    r.cancel_all().await;
    assert_eq!(fake.calls("cancel"), ["cancel 101,102"]);
    assert!(r.status().worker_jobs.is_empty());
}

/// Waits for `cond`, polling; panics with `what` after 10 s.
async fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn the_controller_stops_at_once_while_a_submission_hangs() {
    let fake = Arc::new(FakeScheduler::new());
    fake.with(|s| s.submit = Behaviour::Slow(Duration::from_secs(3600)));
    let (r, _) = reconciler(&fake);
    let (tx, rx) = tokio::sync::watch::channel(None);
    let handle = controller::spawn(r, Arc::new(FakeRay::default()), rx);
    tx.send(Some(Arc::new(cluster(vec![head()], 2)))).unwrap();
    wait_for("the submission to start", || {
        !fake.calls("submit").is_empty()
    })
    .await;
    // What a signal does to the head: stop the autoscaler, then tear down.
    let started = Instant::now();
    let stopped = tokio::time::timeout(Duration::from_secs(2), handle.stop())
        .await
        .expect("stop returned within 2 s although the submission hangs");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let mut r = stopped.expect("the reconciler back");
    assert!(
        r.status().worker_jobs.is_empty(),
        "the abandoned job was never recorded"
    );
    r.cancel_all().await;
    assert!(fake.calls("cancel").is_empty());
}

#[tokio::test]
async fn the_controller_publishes_outages_and_their_end() {
    let fake = Arc::new(FakeScheduler::new());
    let (r, _) = reconciler(&fake);
    let (tx, rx) = tokio::sync::watch::channel(None);
    let mut handle = controller::spawn(r, Arc::new(FakeRay::default()), rx);
    tx.send(Some(Arc::new(cluster(vec![head()], 2)))).unwrap();
    handle.status.changed().await.unwrap();
    assert_eq!(handle.status.borrow().worker_jobs, ["101"]);
    // The sweep for an earlier head's jobs runs first: make the scheduler fail from now on and
    // give the loop the next observation.
    fake.with(|s| s.cancel = Behaviour::TimesOut);
    let idle = cluster(vec![head(), worker("101", 400)], 0);
    fake.set_state("101", JobState::Running);
    tx.send(Some(Arc::new(idle))).unwrap();
    tokio::time::timeout(
        Duration::from_secs(10),
        handle.status.wait_for(|s| s.outage.is_some()),
    )
    .await
    .expect("the outage shows")
    .unwrap();
    let outage = handle.status.borrow().outage.clone().unwrap();
    assert!(outage.command.contains("cancel"), "{outage:?}");
    handle.stop().await.unwrap();
}

#[tokio::test]
async fn a_suspended_job_is_no_capacity_and_its_demand_gets_a_new_node() {
    let fake = Arc::new(FakeScheduler::new());
    let ray = FakeRay::default();
    let (mut r, metrics) = reconciler(&fake);
    r.reconcile(&ray, &cluster(vec![head()], 2), T0).await;
    fake.set_state("101", JobState::Running);
    // Joined and idle: nothing pending, nothing to do.
    let joined = cluster(vec![head(), worker("101", 1)], 0);
    r.reconcile(&ray, &joined, T0 + 5 * SECOND).await;
    assert_eq!(fake.calls("submit").len(), 1);
    // The scheduler stops the job; Ray still lists its node as alive (no heartbeat missed
    // yet) while two CPUs of demand wait.
    fake.set_state("101", JobState::Suspended);
    let mut stopped = worker("101", 0);
    stopped.available_resources = [("CPU".to_string(), 2.0)].into();
    let waiting = cluster(vec![head(), stopped], 2);
    r.reconcile(&ray, &waiting, T0 + 10 * SECOND).await;
    assert_eq!(
        fake.calls("submit").len(),
        2,
        "the demand gets a node of its own, not the stopped one"
    );
    let status = r.status();
    assert!(
        status
            .notes
            .iter()
            .any(|n| n.contains("1 worker job(s) suspended by the scheduler")),
        "{status:?}"
    );
    assert_eq!(
        status.worker_jobs,
        ["101", "102"],
        "the suspended job is kept"
    );
    assert!(
        metrics
            .render()
            .contains("rayhpc_scheduler_jobs{cluster=\"c1\",state=\"suspended\"} 1\n")
    );
}
