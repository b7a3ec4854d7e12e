//! Demand onto free capacity, queued jobs and new nodes: which bins, which node types.

use super::*;

#[test]
fn packing_onto_free_queued_and_new_capacity() {
    run(vec![
        Case {
            name: "tasks fit the free CPUs of the head and an idle worker: nothing submitted",
            nodes: vec![head(4.0, 3.0), worker("w1", "j1", "cpu4", 4.0, 4.0, 5)],
            jobs: vec![job("j1", "cpu4", JobPhase::Joined, 0)],
            demands: vec![tasks(cpu(1.0), 7)],
            ..Case::default()
        },
        Case {
            name: "fractional CPUs add up exactly (fixed point)",
            nodes: vec![head(1.0, 0.3)],
            demands: vec![tasks(cpu(0.1), 3)],
            ..Case::default()
        },
        Case {
            name: "tasks fit a queued job: nothing submitted, the job kept",
            jobs: vec![job("q1", "cpu4", JobPhase::Pending, 1)],
            demands: vec![tasks(cpu(1.0), 4)],
            ..Case::default()
        },
        Case {
            name: "tasks fit a started job that has not joined: nothing submitted",
            jobs: vec![job("r1", "cpu4", JobPhase::Running, 1)],
            demands: vec![tasks(cpu(2.0), 2)],
            ..Case::default()
        },
        Case {
            name: "part on free capacity, the rest on one new node",
            nodes: vec![head(4.0, 4.0)],
            demands: vec![tasks(cpu(1.0), 6)],
            submit: vec![("cpu4", 1)],
            ..Case::default()
        },
        Case {
            name: "10 x 1 CPU: one 16-CPU node, not three 4-CPU nodes (fewest nodes)",
            types: vec![cpu4(), cpu16()],
            demands: vec![tasks(cpu(1.0), 10)],
            submit: vec![("cpu16", 1)],
            ..Case::default()
        },
        Case {
            name: "3 x 1 CPU: one node either way, the 4-CPU one wastes least",
            types: vec![cpu16(), cpu4()],
            demands: vec![tasks(cpu(1.0), 3)],
            submit: vec![("cpu4", 1)],
            ..Case::default()
        },
        Case {
            name: "40 x 1 CPU: three 16-CPU nodes",
            types: vec![cpu4(), cpu16()],
            demands: vec![tasks(cpu(1.0), 40)],
            submit: vec![("cpu16", 3)],
            ..Case::default()
        },
        Case {
            name: "GPU tasks go to the GPU type",
            types: vec![cpu16(), gpu()],
            demands: vec![tasks(res(&[("CPU", 1.0), ("GPU", 1.0)]), 3)],
            submit: vec![("gpu", 2)],
            ..Case::default()
        },
        Case {
            // (Found by bench/planner against Ray's scheduler: first fit put the group on
            // the GPU node, and the GPU task then needed a new one.)
            name: "a CPU placement group goes to a CPU node, leaving the GPU node to GPU work",
            types: vec![cpu4(), gpu()],
            nodes: vec![
                head(4.0, 0.0),
                {
                    let mut w = worker("w1", "j1", "gpu", 8.0, 8.0, 0);
                    w.total.insert("GPU".into(), 2.0);
                    w.available.insert("GPU".into(), 2.0);
                    w
                },
                worker("w2", "j2", "cpu4", 4.0, 4.0, 0),
            ],
            jobs: vec![
                job("j1", "gpu", JobPhase::Joined, 0),
                job("j2", "cpu4", JobPhase::Joined, 0),
            ],
            demands: vec![
                gang(vec![cpu(4.0)], Strategy::Pack),
                tasks(res(&[("CPU", 8.0), ("GPU", 2.0)]), 1),
            ],
            ..Case::default()
        },
        Case {
            // (Found by bench/planner against Ray's scheduler, which fills each new node
            // with the whole mix: shape by shape took a 16-CPU node for the first shape.)
            name: "4 x {1 CPU, 16 GB} and 2 x 30 CPUs: one 64-CPU node holds the mix",
            types: vec![
                ty("cpu16m", &[("CPU", 16.0), ("memory", 64e9)], 0, 100),
                ty("cpu64", &[("CPU", 64.0), ("memory", 64e9)], 0, 100),
            ],
            demands: vec![
                tasks(res(&[("CPU", 1.0), ("memory", 16e9)]), 4),
                tasks(cpu(30.0), 2),
            ],
            submit: vec![("cpu64", 1)],
            ..Case::default()
        },
        Case {
            name: "CPU tasks stay off GPU nodes although a GPU node holds more",
            types: vec![cpu4(), ty("gpu32", &[("CPU", 32.0), ("GPU", 4.0)], 0, 10)],
            demands: vec![tasks(cpu(1.0), 20)],
            submit: vec![("cpu4", 5)],
            ..Case::default()
        },
        Case {
            name: "CPU tasks fill the spare CPUs of the GPU node launched for GPU tasks",
            types: vec![cpu4(), gpu()],
            demands: vec![
                tasks(cpu(1.0), 6),
                tasks(res(&[("CPU", 1.0), ("GPU", 1.0)]), 2),
            ],
            submit: vec![("gpu", 1)],
            ..Case::default()
        },
        Case {
            name: "only the GPU type fits a CPU task this big: it is used",
            types: vec![cpu4(), gpu()],
            demands: vec![tasks(cpu(6.0), 1)],
            submit: vec![("gpu", 1)],
            ..Case::default()
        },
        Case {
            name: "memory decides the type",
            types: vec![cpu4(), cpu16()],
            demands: vec![tasks(res(&[("CPU", 1.0), ("memory", 32e9)]), 1)],
            submit: vec![("cpu16", 1)],
            ..Case::default()
        },
        Case {
            name: "a custom resource only one type has",
            types: vec![cpu16(), ty("nvme", &[("CPU", 4.0), ("nvme", 1.0)], 0, 10)],
            demands: vec![tasks(res(&[("CPU", 1.0), ("nvme", 1.0)]), 2)],
            submit: vec![("nvme", 2)],
            ..Case::default()
        },
        Case {
            name: "a started job's node already in the GCS is not counted twice",
            nodes: vec![head(4.0, 0.0), worker("w1", "r1", "cpu4", 4.0, 4.0, 0)],
            jobs: vec![job("r1", "cpu4", JobPhase::Running, 1)],
            demands: vec![tasks(cpu(1.0), 8)],
            submit: vec![("cpu4", 1)],
            ..Case::default()
        },
        Case {
            name: "draining and dead nodes are no capacity",
            nodes: vec![
                head(4.0, 0.0),
                ObservedNode {
                    status: NodeStatus::Draining,
                    ..worker("w1", "j1", "cpu4", 4.0, 4.0, 0)
                },
                ObservedNode {
                    status: NodeStatus::Dead,
                    ..worker("w2", "x9", "", 4.0, 4.0, 0)
                },
            ],
            jobs: vec![job("j1", "cpu4", JobPhase::Joined, 1)],
            demands: vec![tasks(cpu(1.0), 4)],
            submit: vec![("cpu4", 1)],
            ..Case::default()
        },
        Case {
            name: "identical demands are merged",
            demands: vec![tasks(cpu(1.0), 3), tasks(cpu(1.0), 3), tasks(cpu(2.0), 1)],
            submit: vec![("cpu4", 2)],
            ..Case::default()
        },
    ]);
}
