//! Scaling down: queued jobs cancelled, idle nodes drained, `min_workers` kept.

use super::*;

#[test]
fn scale_down() {
    let min1 = ty("cpu4", &[("CPU", 4.0)], 1, 10);
    let joined = |id: &str, at: u64| job(id, "cpu4", JobPhase::Joined, at);
    run(vec![
        Case {
            name: "most idle first, down to min_workers; the head and allocation nodes stay",
            types: vec![min1.clone()],
            nodes: vec![
                ObservedNode {
                    status: NodeStatus::Idle,
                    idle_ms: 9_000_000,
                    ..head(4.0, 4.0)
                },
                worker("a1", "7000", "", 4.0, 4.0, 8000),
                worker("w1", "j1", "cpu4", 4.0, 4.0, 100),
                worker("w2", "j2", "cpu4", 4.0, 4.0, 300),
                worker("w3", "j3", "cpu4", 4.0, 4.0, 200),
                worker("w4", "j4", "cpu4", 4.0, 4.0, 30),
            ],
            jobs: vec![
                joined("j1", 1),
                joined("j2", 2),
                joined("j3", 3),
                joined("j4", 4),
            ],
            drain: vec!["w2", "w3", "w1"],
            ..Case::default()
        },
        Case {
            name: "min_workers keeps the last idle nodes",
            types: vec![ty("cpu4", &[("CPU", 4.0)], 2, 10)],
            nodes: vec![
                head(4.0, 4.0),
                worker("w1", "j1", "cpu4", 4.0, 4.0, 100),
                worker("w2", "j2", "cpu4", 4.0, 4.0, 300),
                worker("w3", "j3", "cpu4", 4.0, 4.0, 200),
            ],
            jobs: vec![joined("j1", 1), joined("j2", 2), joined("j3", 3)],
            drain: vec!["w2"],
            ..Case::default()
        },
        Case {
            name: "busy nodes and nodes idle for less than the timeout stay",
            nodes: vec![
                head(4.0, 4.0),
                worker("w1", "j1", "cpu4", 4.0, 0.0, 0),
                worker("w2", "j2", "cpu4", 4.0, 4.0, 60),
            ],
            jobs: vec![joined("j1", 1), joined("j2", 2)],
            ..Case::default()
        },
        Case {
            name: "an idle node that pending demand fits is not drained",
            nodes: vec![
                head(4.0, 0.0),
                worker("w1", "j1", "cpu4", 4.0, 4.0, 500),
                worker("w2", "j2", "cpu4", 4.0, 4.0, 400),
            ],
            jobs: vec![joined("j1", 1), joined("j2", 2)],
            demands: vec![tasks(cpu(2.0), 1)],
            drain: vec!["w1"],
            ..Case::default()
        },
        Case {
            name: "queued jobs are cancelled (newest first) before running nodes are drained",
            types: vec![min1.clone()],
            nodes: vec![head(4.0, 4.0), worker("w1", "j1", "cpu4", 4.0, 4.0, 500)],
            jobs: vec![
                joined("j1", 1),
                job("q1", "cpu4", JobPhase::Pending, 10),
                job("q2", "cpu4", JobPhase::Pending, 20),
            ],
            cancel: vec!["q2", "q1"],
            ..Case::default()
        },
        Case {
            name: "the queued job demand needs is kept, the newer one cancelled",
            jobs: vec![
                job("q1", "cpu4", JobPhase::Pending, 10),
                job("q2", "cpu4", JobPhase::Pending, 20),
            ],
            demands: vec![tasks(cpu(1.0), 4)],
            cancel: vec!["q2"],
            ..Case::default()
        },
        Case {
            name: "a started job is left to join even when not needed",
            jobs: vec![job("r1", "cpu4", JobPhase::Running, 10)],
            ..Case::default()
        },
        Case {
            name: "queued jobs of a type no longer configured are cancelled",
            jobs: vec![
                job("q1", "old", JobPhase::Pending, 10),
                job("r1", "old", JobPhase::Running, 10),
            ],
            cancel: vec!["q1"],
            ..Case::default()
        },
        Case {
            name: "queued jobs over a lowered max_workers are cancelled newest first",
            types: vec![ty("cpu4", &[("CPU", 4.0)], 0, 1)],
            jobs: vec![
                job("q1", "cpu4", JobPhase::Pending, 10),
                job("q2", "cpu4", JobPhase::Pending, 20),
                job("q3", "cpu4", JobPhase::Pending, 30),
            ],
            demands: vec![tasks(cpu(4.0), 3)],
            cancel: vec!["q3", "q2"],
            ..Case::default()
        },
        Case {
            name: "a job whose Ray node died is cancelled, and replaced for min_workers",
            types: vec![min1.clone()],
            nodes: vec![
                head(4.0, 4.0),
                ObservedNode {
                    status: NodeStatus::Dead,
                    ..worker("w1", "j1", "cpu4", 4.0, 4.0, 0)
                },
            ],
            jobs: vec![joined("j1", 1)],
            cancel: vec!["j1"],
            submit: vec![("cpu4", 1)],
            ..Case::default()
        },
        Case {
            name: "a constraint keeps the idle node it needs",
            nodes: vec![
                head(4.0, 4.0),
                worker("w1", "j1", "cpu4", 4.0, 4.0, 500),
                worker("w2", "j2", "cpu4", 4.0, 4.0, 400),
            ],
            jobs: vec![joined("j1", 1), joined("j2", 2)],
            demands: vec![constraint(cpu(4.0), 2)],
            drain: vec!["w1"],
            ..Case::default()
        },
        Case {
            name: "a constraint prefers busy nodes, so the most idle one can go",
            nodes: vec![
                head(4.0, 0.0),
                worker("w1", "j1", "cpu4", 4.0, 4.0, 500),
                worker("w2", "j2", "cpu4", 4.0, 0.0, 0),
                worker("w3", "j3", "cpu4", 4.0, 4.0, 100),
            ],
            jobs: vec![joined("j1", 1), joined("j2", 2), joined("j3", 3)],
            demands: vec![constraint(cpu(1.0), 12)],
            drain: vec!["w1"],
            ..Case::default()
        },
    ]);
}
