//! Bad input (NaN, negative, huge or duplicate values) gives a plan, never a panic.

use super::*;

#[test]
fn garbage_in_no_panic() {
    let nan = f64::NAN;
    run(vec![
        Case {
            name: "nothing at all",
            nodes: vec![],
            types: vec![],
            ..Case::default()
        },
        Case {
            name: "demand with no types and no nodes is infeasible",
            nodes: vec![],
            types: vec![],
            demands: vec![
                tasks(cpu(1.0), 1),
                gang(vec![cpu(1.0)], Strategy::StrictSpread),
                constraint(cpu(1.0), 1),
            ],
            infeasible: 3,
            ..Case::default()
        },
        Case {
            name: "NaN, negative, zero and empty amounts ask for nothing",
            demands: vec![
                tasks(res(&[("CPU", nan)]), 5),
                tasks(res(&[("CPU", -1.0)]), 5),
                tasks(res(&[("CPU", 0.0), ("implicit_resource:x", 1.0)]), 5),
                tasks(Resources::new(), 5),
                tasks(cpu(1.0), 0),
                gang(vec![], Strategy::Pack),
                constraint(cpu(1.0), 0),
            ],
            ..Case::default()
        },
        Case {
            name: "an infinite bundle is infeasible",
            demands: vec![tasks(cpu(f64::INFINITY), 1)],
            infeasible: 1,
            ..Case::default()
        },
        Case {
            name: "types with NaN, zero or no resources",
            types: vec![
                ty("nan", &[("CPU", nan)], 0, 10),
                ty("zero", &[("CPU", 0.0)], 0, 10),
                ty("empty", &[], 0, 10),
                cpu4(),
            ],
            demands: vec![tasks(cpu(1.0), 1)],
            submit: vec![("cpu4", 1)],
            ..Case::default()
        },
        Case {
            name: "nodes with NaN and infinite resources",
            nodes: vec![
                ObservedNode {
                    total: res(&[("CPU", f64::INFINITY)]),
                    available: res(&[("CPU", nan)]),
                    ..head(1.0, 1.0)
                },
                worker("w1", "j1", "cpu4", f64::INFINITY, f64::INFINITY, 0),
            ],
            jobs: vec![job("j1", "cpu4", JobPhase::Joined, 1)],
            demands: vec![tasks(cpu(1.0), u64::MAX), constraint(cpu(1.0), u64::MAX)],
            submit: vec![("cpu4", 5)],
            waiting: vec![
                ("max_workers", None),
                ("upscaling limit", Some(376)),
                ("max_workers", None),
                ("upscaling limit", Some(376)),
            ],
            ..Case::default()
        },
        Case {
            name: "huge counts, huge limits",
            settings: Settings {
                max_workers: u32::MAX,
                upscaling_speed: f64::INFINITY,
                max_pending_jobs: u32::MAX,
                ..settings()
            },
            types: vec![ty("cpu4", &[("CPU", 4.0)], 0, u32::MAX)],
            demands: vec![tasks(cpu(1.0), u64::MAX)],
            submit: vec![("cpu4", u32::MAX)],
            waiting: vec![("max_workers", None)],
            ..Case::default()
        },
        Case {
            name: "NaN upscaling_speed means the floor of 5",
            settings: Settings {
                upscaling_speed: nan,
                ..settings()
            },
            demands: vec![tasks(cpu(4.0), 9)],
            submit: vec![("cpu4", 5)],
            waiting: vec![("upscaling limit", Some(4))],
            ..Case::default()
        },
        Case {
            name: "empty bundles in a STRICT_SPREAD group still need distinct nodes",
            nodes: vec![head(4.0, 4.0)],
            demands: vec![gang(
                vec![Resources::new(), cpu(1.0)],
                Strategy::StrictSpread,
            )],
            submit: vec![("cpu4", 1)],
            ..Case::default()
        },
        Case {
            name: "duplicate job ids and node ids",
            nodes: vec![
                head(4.0, 4.0),
                worker("w1", "j1", "cpu4", 4.0, 4.0, 500),
                worker("w1", "j1", "cpu4", 4.0, 4.0, 500),
            ],
            jobs: vec![
                job("j1", "cpu4", JobPhase::Joined, 1),
                job("j1", "cpu4", JobPhase::Joined, 1),
            ],
            drain: vec!["w1"],
            ..Case::default()
        },
    ]);
}
