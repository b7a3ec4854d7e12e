//! The planner's table tests: each row an input and the plan parts it must give, checked
//! through [`plan`] with [`check`] (which also checks that the plan is idempotent and that,
//! carried out, it asks for nothing more).

use std::collections::BTreeMap;

use super::*;

mod garbage_in;
mod infeasible_and_backoff;
mod large_cluster;
mod limits;
mod packing;
mod placement_groups;
mod scale_down;

const NOW: u64 = 10_000_000;

fn res(pairs: &[(&str, f64)]) -> Resources {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

fn cpu(n: f64) -> Resources {
    res(&[("CPU", n)])
}

fn ty(name: &str, r: &[(&str, f64)], min: u32, max: u32) -> NodeTypeSpec {
    NodeTypeSpec {
        name: name.into(),
        resources: res(r),
        min_workers: min,
        max_workers: max,
    }
}

fn cpu4() -> NodeTypeSpec {
    ty("cpu4", &[("CPU", 4.0), ("memory", 16e9)], 0, 100)
}

fn cpu16() -> NodeTypeSpec {
    ty("cpu16", &[("CPU", 16.0), ("memory", 64e9)], 0, 100)
}

fn gpu() -> NodeTypeSpec {
    ty(
        "gpu",
        &[("CPU", 8.0), ("GPU", 2.0), ("memory", 64e9)],
        0,
        100,
    )
}

/// The head: `cpus` in all, `free` of them available.
fn head(cpus: f64, free: f64) -> ObservedNode {
    let mut total = cpu(cpus);
    total.insert("node:__internal_head__".into(), 1.0);
    ObservedNode {
        node_id: "00head".into(),
        instance_id: "1000".into(),
        node_type: "head".into(),
        total,
        available: cpu(free),
        status: NodeStatus::Running,
        idle_ms: 0,
    }
}

/// A worker node of job `job` (its instance id), idle for `idle_s` seconds (0: busy).
fn worker(id: &str, job: &str, ty: &str, cpus: f64, free: f64, idle_s: u64) -> ObservedNode {
    ObservedNode {
        node_id: id.into(),
        instance_id: job.into(),
        node_type: ty.into(),
        total: cpu(cpus),
        available: cpu(free),
        status: if idle_s > 0 {
            NodeStatus::Idle
        } else {
            NodeStatus::Running
        },
        idle_ms: idle_s * 1000,
    }
}

fn job(id: &str, ty: &str, phase: JobPhase, submitted_ms: u64) -> WorkerJob {
    WorkerJob {
        job_id: id.into(),
        node_type: ty.into(),
        phase,
        submitted_ms,
    }
}

fn tasks(bundle: Resources, count: u64) -> Demand {
    Demand::Tasks { bundle, count }
}

fn gang(bundles: Vec<Resources>, strategy: Strategy) -> Demand {
    Demand::Gang {
        bundles,
        strategy,
        details: format!("pg:{strategy:?}|PENDING"),
    }
}

fn constraint(bundle: Resources, count: u64) -> Demand {
    Demand::Constraint { bundle, count }
}

fn settings() -> Settings {
    Settings {
        max_workers: 100,
        idle_timeout_ms: 60_000,
        upscaling_speed: 1.0,
        max_pending_jobs: 100,
        backoff_initial_ms: 1_000,
        backoff_max_ms: 60_000,
        max_consecutive_failures: 3,
    }
}

fn backing_off(error: &str) -> TypeHealth {
    TypeHealth {
        consecutive_failures: 1,
        retry_after_ms: NOW + 5_000,
        last_error: Some(error.into()),
        gave_up: false,
    }
}

/// One row of a table: an input, and the plan parts it must give.
struct Case {
    name: &'static str,
    nodes: Vec<ObservedNode>,
    demands: Vec<Demand>,
    jobs: Vec<WorkerJob>,
    types: Vec<NodeTypeSpec>,
    settings: Settings,
    health: Vec<(&'static str, TypeHealth)>,
    /// Exactly these submissions.
    submit: Vec<(&'static str, u32)>,
    /// Exactly these job ids cancelled, in this order.
    cancel: Vec<&'static str>,
    /// Exactly these node ids drained, in this order.
    drain: Vec<&'static str>,
    /// How many demands are infeasible.
    infeasible: usize,
    /// One entry per waiting demand, in order: a piece of its reason, and for tasks and
    /// constraints the count held back.
    waiting: Vec<(&'static str, Option<u64>)>,
}

impl Default for Case {
    fn default() -> Case {
        Case {
            name: "",
            nodes: vec![head(4.0, 0.0)],
            demands: vec![],
            jobs: vec![],
            types: vec![cpu4()],
            settings: settings(),
            health: vec![],
            submit: vec![],
            cancel: vec![],
            drain: vec![],
            infeasible: 0,
            waiting: vec![],
        }
    }
}

fn check(case: &Case) -> Result<Plan, String> {
    let health: BTreeMap<String, TypeHealth> = case
        .health
        .iter()
        .map(|(k, h)| (k.to_string(), h.clone()))
        .collect();
    let input = PlanInput {
        nodes: &case.nodes,
        demands: &case.demands,
        jobs: &case.jobs,
        types: &case.types,
        settings: &case.settings,
        health: &health,
        now_ms: NOW,
    };
    let p = plan(&input);
    let mut errs = Vec::new();
    let submit: Vec<(&str, u32)> = p
        .submit
        .iter()
        .map(|s| (s.node_type.as_str(), s.count))
        .collect();
    if submit != case.submit {
        errs.push(format!("submit {submit:?}, want {:?}", case.submit));
    }
    let cancel: Vec<&str> = p.cancel.iter().map(|c| c.job_id.as_str()).collect();
    if cancel != case.cancel {
        errs.push(format!("cancel {:?}, want {:?}", p.cancel, case.cancel));
    }
    let drain: Vec<&str> = p.drain.iter().map(|d| d.node_id.as_str()).collect();
    if drain != case.drain {
        errs.push(format!("drain {:?}, want {:?}", p.drain, case.drain));
    }
    if p.infeasible.len() != case.infeasible {
        errs.push(format!(
            "infeasible {:?}, want {}",
            p.infeasible, case.infeasible
        ));
    }
    let waiting_ok = p.waiting.len() == case.waiting.len()
        && p.waiting
            .iter()
            .zip(&case.waiting)
            .all(|(Waiting { demand: d, why }, (want, n))| {
                why.contains(want)
                    && match (d, n) {
                        (
                            Demand::Tasks { count, .. } | Demand::Constraint { count, .. },
                            Some(n),
                        ) => count == n,
                        (_, None) => true,
                        _ => false,
                    }
            });
    if !waiting_ok {
        errs.push(format!("waiting {:?}, want {:?}", p.waiting, case.waiting));
    }
    // Idempotent: the same input, the same plan.
    if plan(&input) != p {
        errs.push("a second plan differs".into());
    }
    // Carried out (submitted jobs queued, cancelled jobs ended, drained nodes draining),
    // the plan asks for nothing more.
    // (Not for the cases that submit billions.)
    if p.submit.iter().map(|s| u64::from(s.count)).sum::<u64>() > 100_000 {
        return if errs.is_empty() {
            Ok(p)
        } else {
            Err(format!("{}:\n    {}", case.name, errs.join("\n    ")))
        };
    }
    let mut jobs = case.jobs.clone();
    for j in &mut jobs {
        if p.cancel.iter().any(|c| c.job_id == j.job_id) {
            j.phase = JobPhase::Ended;
        }
    }
    for Submit {
        node_type: t,
        count: n,
    } in &p.submit
    {
        for k in 0..*n {
            jobs.push(job(&format!("new-{t}-{k}"), t, JobPhase::Pending, NOW));
        }
    }
    let mut nodes = case.nodes.clone();
    for n in &mut nodes {
        if p.drain.iter().any(|d| d.node_id == n.node_id) {
            n.status = NodeStatus::Draining;
        }
    }
    let again = plan(&PlanInput {
        nodes: &nodes,
        jobs: &jobs,
        ..input
    });
    if !again.submit.is_empty() {
        errs.push(format!("after applying, submits {:?}", again.submit));
    }
    if errs.is_empty() {
        Ok(p)
    } else {
        Err(format!("{}:\n    {}", case.name, errs.join("\n    ")))
    }
}

fn run(cases: Vec<Case>) {
    let failures: Vec<String> = cases.iter().filter_map(|c| check(c).err()).collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
