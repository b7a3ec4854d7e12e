//! The limits: `max_workers` per type and in all, the upscaling caps, and the backoff rules.

use super::*;

#[test]
fn limits_per_type_global_and_upscaling() {
    let burst = vec![tasks(cpu(1.0), 1000)];
    let joined = |n: usize| -> (Vec<ObservedNode>, Vec<WorkerJob>) {
        let mut nodes = vec![head(4.0, 0.0)];
        let mut jobs = vec![];
        for i in 0..n {
            let id = format!("j{i}");
            nodes.push(worker(&format!("w{i}"), &id, "cpu4", 4.0, 0.0, 0));
            jobs.push(job(&id, "cpu4", JobPhase::Joined, i as u64));
        }
        (nodes, jobs)
    };
    let (nodes20, mut jobs20) = joined(20);
    jobs20.extend((0..3).map(|i| job(&format!("q{i}"), "cpu4", JobPhase::Pending, 100)));
    run(vec![
        Case {
            name: "min_workers: two nodes with no demand",
            types: vec![ty("cpu4", &[("CPU", 4.0)], 2, 10)],
            submit: vec![("cpu4", 2)],
            ..Case::default()
        },
        Case {
            name: "min_workers: one joined and one queued job are enough",
            types: vec![ty("cpu4", &[("CPU", 4.0)], 2, 10)],
            nodes: vec![head(4.0, 0.0), worker("w1", "j1", "cpu4", 4.0, 4.0, 500)],
            jobs: vec![
                job("j1", "cpu4", JobPhase::Joined, 1),
                job("q1", "cpu4", JobPhase::Pending, 2),
            ],
            ..Case::default()
        },
        Case {
            name: "min_workers nodes hold demand before more are launched",
            types: vec![ty("cpu4", &[("CPU", 4.0)], 2, 10)],
            demands: vec![tasks(cpu(1.0), 8)],
            submit: vec![("cpu4", 2)],
            ..Case::default()
        },
        Case {
            name: "a type's max_workers: 3 nodes for 100 tasks, the rest waits",
            types: vec![ty("cpu4", &[("CPU", 4.0)], 0, 3)],
            demands: vec![tasks(cpu(1.0), 100)],
            submit: vec![("cpu4", 3)],
            waiting: vec![("cpu4 is at its max_workers (3)", Some(88))],
            ..Case::default()
        },
        Case {
            name: "a type's max_workers counts queued, started and joined jobs",
            types: vec![ty("cpu4", &[("CPU", 4.0)], 0, 3)],
            nodes: vec![head(4.0, 0.0), worker("w1", "j1", "cpu4", 4.0, 0.0, 0)],
            jobs: vec![
                job("j1", "cpu4", JobPhase::Joined, 1),
                job("r1", "cpu4", JobPhase::Running, 2),
                job("e1", "cpu4", JobPhase::Ended, 0),
            ],
            demands: vec![tasks(cpu(4.0), 3)],
            submit: vec![("cpu4", 1)],
            waiting: vec![("max_workers", Some(1))],
            ..Case::default()
        },
        Case {
            name: "the type at its max: the next best type takes the rest",
            types: vec![ty("cpu16", &[("CPU", 16.0)], 0, 1), cpu4()],
            demands: vec![tasks(cpu(1.0), 24)],
            submit: vec![("cpu16", 1), ("cpu4", 2)],
            ..Case::default()
        },
        Case {
            name: "the global max_workers across types",
            types: vec![cpu4(), gpu()],
            settings: Settings {
                max_workers: 4,
                ..settings()
            },
            jobs: vec![
                job("q1", "cpu4", JobPhase::Pending, 1),
                job("q2", "gpu", JobPhase::Pending, 1),
            ],
            demands: vec![
                tasks(cpu(4.0), 10),
                tasks(res(&[("GPU", 2.0), ("CPU", 1.0)]), 10),
            ],
            // GPU first: 2 new GPU nodes; their spare CPUs (and the queued GPU node's) take
            // 3 of the 4-CPU tasks.
            submit: vec![("gpu", 2)],
            waiting: vec![
                ("the cluster is at max_workers (4)", Some(6)),
                ("the cluster is at max_workers (4)", Some(7)),
            ],
            ..Case::default()
        },
        Case {
            name: "a burst of 1000 tasks, nothing joined yet: 5 jobs at once",
            demands: burst.clone(),
            submit: vec![("cpu4", 5)],
            // 100 nodes (max_workers) would hold 400; 5 of them go now.
            waiting: vec![
                ("cpu4 is at its max_workers (100)", Some(600)),
                (
                    "upscaling limit: 0 worker jobs in flight, at most 5",
                    Some(380),
                ),
            ],
            ..Case::default()
        },
        Case {
            name: "a burst with 20 joined at upscaling_speed 0.5: 10 in flight, 3 already",
            nodes: nodes20,
            jobs: jobs20,
            settings: Settings {
                upscaling_speed: 0.5,
                ..settings()
            },
            demands: burst.clone(),
            submit: vec![("cpu4", 7)],
            waiting: vec![
                ("max_workers", Some(1000 - 4 * 80)),
                ("at most 10 at once", Some(4 * 80 - 12 - 28)),
            ],
            ..Case::default()
        },
        Case {
            name: "a burst under max_pending_jobs 2",
            settings: Settings {
                max_pending_jobs: 2,
                ..settings()
            },
            demands: burst.clone(),
            submit: vec![("cpu4", 2)],
            waiting: vec![
                ("max_workers", Some(600)),
                ("max_pending_jobs 2", Some(392)),
            ],
            ..Case::default()
        },
        Case {
            name: "a burst with the caps full: nothing more",
            jobs: (0..5)
                .map(|i| job(&format!("q{i}"), "cpu4", JobPhase::Pending, i))
                .collect(),
            demands: burst.clone(),
            waiting: vec![
                ("max_workers", Some(600)),
                ("5 worker jobs in flight, at most 5", Some(380)),
            ],
            ..Case::default()
        },
        Case {
            name: "a burst under max_workers 8 with 6 jobs: 2 more, never 9",
            settings: Settings {
                max_workers: 8,
                upscaling_speed: 100.0,
                ..settings()
            },
            nodes: joined(6).0,
            jobs: joined(6).1,
            demands: burst.clone(),
            submit: vec![("cpu4", 2)],
            waiting: vec![("the cluster is at max_workers (8)", Some(992))],
            ..Case::default()
        },
        Case {
            name: "max_pending_jobs 0 submits nothing",
            settings: Settings {
                max_pending_jobs: 0,
                ..settings()
            },
            demands: vec![tasks(cpu(1.0), 1)],
            waiting: vec![("upscaling limit", Some(1))],
            ..Case::default()
        },
        Case {
            name: "min_workers go first under the upscaling cap",
            types: vec![ty("cpu4", &[("CPU", 4.0)], 4, 100), cpu16()],
            demands: vec![tasks(cpu(16.0), 3)],
            submit: vec![("cpu4", 4), ("cpu16", 1)],
            waiting: vec![("upscaling limit", Some(2))],
            ..Case::default()
        },
    ]);
}

#[test]
fn type_health_backoff() {
    let s = Settings {
        backoff_initial_ms: 1_000,
        backoff_max_ms: 5_000,
        max_consecutive_failures: 4,
        ..settings()
    };
    // (failures so far, retry after, gave up)
    let table = [
        (1, NOW + 1_000, false),
        (2, NOW + 2_000, false),
        (3, NOW + 4_000, false),
        (4, NOW + 5_000, true),
        (5, NOW + 5_000, true),
    ];
    let mut h = TypeHealth::default();
    assert!(!h.blocked(NOW));
    for (n, retry, gave_up) in table {
        h.failed(NOW, format!("refusal {n}"), &s);
        assert_eq!(
            (h.consecutive_failures, h.retry_after_ms, h.gave_up),
            (n, retry, gave_up),
            "after {n} failures"
        );
        assert_eq!(
            h.last_error.as_deref(),
            Some(format!("refusal {n}").as_str())
        );
        assert!(h.blocked(NOW));
        assert_eq!(
            h.blocked(retry),
            gave_up,
            "after {n} failures, at retry time"
        );
    }
    h.succeeded();
    assert_eq!(h, TypeHealth::default());
    // 0 never gives up; the doubling saturates.
    let never = Settings {
        max_consecutive_failures: 0,
        backoff_max_ms: u64::MAX,
        ..s
    };
    for _ in 0..200 {
        h.failed(u64::MAX - 1, "x".into(), &never);
    }
    assert!(!h.gave_up && h.retry_after_ms == u64::MAX && h.blocked(u64::MAX - 1));
}
