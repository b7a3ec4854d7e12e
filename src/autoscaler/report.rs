//! What the autoscaler tells others, built from its state (pure): the autoscaling state Ray's own
//! `ray status` shows (our queued jobs, infeasible demand, refused submissions), and the notes
//! the cluster record keeps for `ray-hpc status`.

use std::collections::BTreeMap;

use super::jobs::JobBook;
use super::planner::{Demand, JobPhase, Plan, TypeHealth};
use crate::proto::ray::autoscaler::{
    AutoscalingState, BundleSelector, ClusterResourceConstraint, ClusterResourceState,
    FailedInstanceRequest, GangResourceRequest, PendingInstance, ResourceRequest,
    ResourceRequestByCount,
};

fn request(bundle: &BTreeMap<String, f64>) -> ResourceRequest {
    ResourceRequest {
        resources_bundle: bundle.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        ..Default::default()
    }
}

/// The report for Ray's GCS: our queued jobs as pending instances, the plan's infeasible demand,
/// and the recent refusals.
pub fn autoscaling_state(
    state: &ClusterResourceState,
    book: &JobBook,
    scheduler: &str,
    plan: &Plan,
    failures: &[FailedInstanceRequest],
    now_ms: u64,
) -> AutoscalingState {
    let mut report = AutoscalingState {
        last_seen_cluster_resource_state_version: state.cluster_resource_state_version,
        // Reports with a lower version are dropped: a clock stamp always grows.
        autoscaler_state_version: now_ms as i64,
        failed_instance_requests: failures.to_vec(),
        ..Default::default()
    };
    for j in book
        .jobs
        .iter()
        .filter(|j| matches!(j.phase, JobPhase::Pending | JobPhase::Running))
    {
        let detail = book.detail.get(&j.job_id).cloned().unwrap_or_default();
        report.pending_instances.push(PendingInstance {
            instance_type_name: j.node_type.clone(),
            ray_node_type_name: j.node_type.clone(),
            instance_id: j.job_id.clone(),
            ip_address: String::new(),
            details: format!("{scheduler} job {} {detail}", j.job_id),
        });
    }
    for d in &plan.infeasible {
        match d {
            Demand::Tasks { bundle, .. } => {
                report.infeasible_resource_requests.push(request(bundle))
            }
            Demand::Gang {
                bundles, details, ..
            } => report
                .infeasible_gang_resource_requests
                .push(GangResourceRequest {
                    details: details.clone(),
                    bundle_selectors: vec![BundleSelector {
                        resource_requests: bundles.iter().map(request).collect(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            Demand::Constraint { bundle, count } => report
                .infeasible_cluster_resource_constraints
                .push(ClusterResourceConstraint {
                    resource_requests: vec![ResourceRequestByCount {
                        request: Some(request(bundle)),
                        count: *count as i64,
                    }],
                }),
        }
    }
    report
}

/// The notes `ray-hpc status` shows: infeasible demand, refused submissions, lost jobs.
pub fn notes(plan: &Plan, health: &BTreeMap<String, TypeHealth>, book: &JobBook) -> Vec<String> {
    let shape = |b: &BTreeMap<String, f64>| {
        let parts: Vec<String> = b.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        format!("{{{}}}", parts.join(", "))
    };
    let mut notes: Vec<String> = plan
        .infeasible
        .iter()
        .map(|d| match d {
            Demand::Tasks { bundle, count } => format!(
                "infeasible: {} x {count}: no node type can hold it; nothing is submitted",
                shape(bundle)
            ),
            Demand::Gang {
                bundles, strategy, ..
            } => format!(
                "infeasible: placement group ({strategy:?}) of {} bundle(s): no node type can hold it",
                bundles.len()
            ),
            Demand::Constraint { bundle, count } => {
                format!("infeasible: request_resources {} x {count}", shape(bundle))
            }
        })
        .collect();
    for (name, h) in health {
        if let Some(err) = &h.last_error {
            let when = if h.gave_up {
                "given up until the config or the demand changes".to_string()
            } else {
                format!(
                    "{} refusal(s) in a row, backing off",
                    h.consecutive_failures
                )
            };
            notes.push(format!("{name} jobs refused ({when}): {err}"));
        }
    }
    let suspended = book.suspended();
    if suspended > 0 {
        notes.push(format!(
            "{suspended} worker job(s) suspended by the scheduler: no capacity while they are; \
             demand they held is planned elsewhere"
        ));
    }
    if book.lost_before_join > 0 {
        notes.push(format!(
            "{} worker job(s) ended before their node joined",
            book.lost_before_join
        ));
    }
    if book.lost_after_join > 0 {
        notes.push(format!(
            "{} joined worker node(s) died or lost their job",
            book.lost_after_join
        ));
    }
    notes
}
