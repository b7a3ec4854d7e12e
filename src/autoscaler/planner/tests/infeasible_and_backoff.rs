//! Demand nothing can hold, constraints, and node types that back off or gave up.

use super::*;

#[test]
fn infeasible_constraints_and_backoff() {
    run(vec![
        Case {
            name: "GPU demand, no GPU type: infeasible and nothing submitted",
            types: vec![cpu4(), cpu16()],
            demands: vec![tasks(res(&[("GPU", 1.0)]), 4)],
            infeasible: 1,
            ..Case::default()
        },
        Case {
            name: "a bundle bigger than every type and node: infeasible, the rest goes on",
            demands: vec![tasks(cpu(64.0), 1), tasks(cpu(1.0), 2)],
            infeasible: 1,
            submit: vec![("cpu4", 1)],
            ..Case::default()
        },
        Case {
            name: "a resource only an existing busy node has: waiting, not infeasible",
            nodes: vec![
                head(4.0, 0.0),
                ObservedNode {
                    total: res(&[("CPU", 8.0), ("GPU", 1.0)]),
                    available: res(&[("CPU", 8.0)]),
                    ..worker("a1", "7000", "", 8.0, 8.0, 0)
                },
            ],
            demands: vec![tasks(res(&[("GPU", 1.0)]), 1)],
            waiting: vec![("waiting for existing nodes", Some(1))],
            ..Case::default()
        },
        Case {
            name: "a type with max_workers 0 never launches: infeasible",
            types: vec![ty("gpu", &[("GPU", 1.0)], 0, 0)],
            demands: vec![tasks(res(&[("GPU", 1.0)]), 1)],
            infeasible: 1,
            ..Case::default()
        },
        Case {
            name: "a constraint scales up on total capacity (busy CPUs count)",
            nodes: vec![head(4.0, 0.0)],
            demands: vec![constraint(cpu(1.0), 16)],
            submit: vec![("cpu4", 3)],
            ..Case::default()
        },
        Case {
            name: "a constraint met by joined and queued nodes: nothing",
            nodes: vec![head(4.0, 0.0), worker("w1", "j1", "cpu4", 4.0, 0.0, 0)],
            jobs: vec![
                job("j1", "cpu4", JobPhase::Joined, 1),
                job("q1", "cpu4", JobPhase::Pending, 2),
            ],
            demands: vec![constraint(cpu(2.0), 6)],
            ..Case::default()
        },
        Case {
            name: "constraint nodes also take tasks",
            demands: vec![constraint(cpu(4.0), 2), tasks(cpu(1.0), 8)],
            submit: vec![("cpu4", 2)],
            ..Case::default()
        },
        Case {
            name: "an infeasible constraint is reported",
            demands: vec![constraint(res(&[("GPU", 1.0)]), 1)],
            infeasible: 1,
            ..Case::default()
        },
        Case {
            name: "the GPU type backs off: GPU demand waits, CPU demand still launches",
            types: vec![cpu4(), gpu()],
            health: vec![("gpu", backing_off("invalid partition"))],
            demands: vec![tasks(res(&[("GPU", 1.0)]), 1), tasks(cpu(1.0), 4)],
            submit: vec![("cpu4", 1)],
            waiting: vec![(
                "gpu is backing off for 5s after 1 refused submissions (last error: invalid partition)",
                Some(1),
            )],
            ..Case::default()
        },
        Case {
            name: "the best type backs off: the next one takes the demand",
            types: vec![cpu16(), cpu4()],
            health: vec![("cpu16", backing_off("QOSMaxSubmitJobPerUserLimit"))],
            demands: vec![tasks(cpu(1.0), 10)],
            submit: vec![("cpu4", 3)],
            ..Case::default()
        },
        Case {
            name: "a backoff that is over does not block",
            types: vec![cpu4()],
            health: vec![(
                "cpu4",
                TypeHealth {
                    retry_after_ms: NOW,
                    ..backing_off("x")
                },
            )],
            demands: vec![tasks(cpu(1.0), 1)],
            submit: vec![("cpu4", 1)],
            ..Case::default()
        },
        Case {
            name: "a type given up is skipped, min_workers too",
            types: vec![ty("cpu4", &[("CPU", 4.0)], 1, 10)],
            health: vec![(
                "cpu4",
                TypeHealth {
                    consecutive_failures: 3,
                    gave_up: true,
                    ..backing_off("bad account")
                },
            )],
            demands: vec![tasks(cpu(1.0), 1)],
            waiting: vec![(
                "gave up after 3 refused submissions (last error: bad account)",
                Some(1),
            )],
            ..Case::default()
        },
    ]);
}
