//! Placement groups: all bundles or none, each strategy.

use super::*;

#[test]
fn placement_groups() {
    let one = || cpu(1.0);
    run(vec![
        Case {
            name: "STRICT_SPREAD of 3 on a 1-node cluster: 2 new nodes",
            nodes: vec![head(4.0, 4.0)],
            demands: vec![gang(vec![one(), one(), one()], Strategy::StrictSpread)],
            submit: vec![("cpu4", 2)],
            ..Case::default()
        },
        Case {
            name: "STRICT_SPREAD of 3 with one queued job: 1 more",
            nodes: vec![head(4.0, 4.0)],
            jobs: vec![job("q1", "cpu4", JobPhase::Pending, 1)],
            demands: vec![gang(vec![one(), one(), one()], Strategy::StrictSpread)],
            submit: vec![("cpu4", 1)],
            ..Case::default()
        },
        Case {
            name: "two STRICT_SPREAD groups share the new nodes",
            nodes: vec![head(4.0, 4.0)],
            demands: vec![
                gang(vec![one(), one(), one()], Strategy::StrictSpread),
                gang(vec![one(), one(), one()], Strategy::StrictSpread),
            ],
            submit: vec![("cpu4", 2)],
            ..Case::default()
        },
        Case {
            name: "STRICT_SPREAD beyond max_workers: all or nothing, it waits",
            types: vec![ty("cpu4", &[("CPU", 4.0)], 0, 1)],
            nodes: vec![head(4.0, 4.0)],
            demands: vec![gang(vec![one(), one(), one()], Strategy::StrictSpread)],
            waiting: vec![("max_workers", None)],
            ..Case::default()
        },
        Case {
            name: "STRICT_PACK bigger than every type: infeasible, nothing submitted",
            types: vec![cpu4(), cpu16()],
            demands: vec![gang(vec![cpu(10.0), cpu(10.0)], Strategy::StrictPack)],
            infeasible: 1,
            ..Case::default()
        },
        Case {
            name: "STRICT_PACK on one node of the type that holds the sum",
            types: vec![cpu4(), cpu16()],
            demands: vec![gang(vec![cpu(3.0), cpu(3.0)], Strategy::StrictPack)],
            submit: vec![("cpu16", 1)],
            ..Case::default()
        },
        Case {
            name: "PACK launches one node for all its bundles when a type holds them",
            types: vec![cpu4(), cpu16()],
            demands: vec![gang(vec![cpu(2.0); 4], Strategy::Pack)],
            submit: vec![("cpu16", 1)],
            ..Case::default()
        },
        Case {
            name: "PACK of bundles no type holds together: several nodes",
            demands: vec![gang(vec![cpu(3.0); 3], Strategy::Pack)],
            submit: vec![("cpu4", 3)],
            ..Case::default()
        },
        Case {
            name: "SPREAD does not launch nodes just to spread",
            nodes: vec![head(4.0, 4.0)],
            demands: vec![gang(vec![one(), one()], Strategy::Spread)],
            ..Case::default()
        },
        Case {
            name: "SPREAD uses distinct nodes where they exist",
            nodes: vec![head(4.0, 1.0), worker("w1", "j1", "cpu4", 4.0, 1.0, 0)],
            jobs: vec![job("j1", "cpu4", JobPhase::Joined, 1)],
            demands: vec![gang(vec![one(), one(), one()], Strategy::Spread)],
            submit: vec![("cpu4", 1)],
            ..Case::default()
        },
        Case {
            name: "a group with a GPU bundle and CPU bundles",
            types: vec![cpu4(), gpu()],
            demands: vec![gang(
                vec![res(&[("GPU", 1.0)]), cpu(4.0)],
                Strategy::StrictSpread,
            )],
            submit: vec![("cpu4", 1), ("gpu", 1)],
            ..Case::default()
        },
        Case {
            name: "identical groups: the ones beyond max_workers wait",
            types: vec![ty("cpu4", &[("CPU", 4.0)], 0, 2)],
            demands: vec![gang(vec![cpu(4.0)], Strategy::Pack); 3],
            submit: vec![("cpu4", 2)],
            waiting: vec![("max_workers", None)],
            ..Case::default()
        },
    ]);
}
