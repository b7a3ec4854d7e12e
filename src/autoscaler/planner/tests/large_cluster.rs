//! Large inputs: the limits hold (the timing is for `bench/planner`).

use super::*;

/// 2,000 nodes and 50,000 pending requests (tasks of a few shapes, placement groups,
/// a constraint): the caps hold. (How long it takes is for `bench/planner`, not a test.)
#[test]
fn large_cluster() {
    let types: Vec<NodeTypeSpec> = [cpu4(), cpu16(), gpu()]
        .into_iter()
        .map(|t| NodeTypeSpec {
            max_workers: 3000,
            ..t
        })
        .collect();
    let mut nodes = vec![head(4.0, 0.0)];
    let mut jobs = Vec::new();
    for i in 0..2000u64 {
        let id = format!("j{i}");
        let ty = ["cpu4", "cpu16", "gpu"][i as usize % 3];
        let (c, free, idle) = match i % 4 {
            0 => (16.0, 0.0, 0),
            1 => (16.0, 0.5, 0),
            2 => (4.0, 0.0, 0),
            _ => (8.0, 0.0, 0),
        };
        let mut w = worker(&format!("w{i:05}"), &id, ty, c, free, idle);
        w.total
            .insert(format!("node:10.0.{}.{}", i / 250, i % 250), 1.0);
        nodes.push(w);
        jobs.push(job(&id, ty, JobPhase::Joined, i));
    }
    let mut demands = Vec::new();
    for i in 0..40_000u64 {
        demands.push(tasks(cpu(1.0 + (i % 4) as f64), 1));
    }
    for i in 0..9_000u64 {
        demands.push(tasks(
            res(&[("CPU", 1.0), ("GPU", 1.0 + (i % 2) as f64)]),
            1,
        ));
    }
    for i in 0..999u64 {
        demands.push(gang(
            vec![cpu(1.0 + (i % 3) as f64); 4],
            Strategy::StrictSpread,
        ));
    }
    demands.push(constraint(cpu(1.0), 40_000));
    let s = Settings {
        max_workers: 3000,
        upscaling_speed: 1.0,
        max_pending_jobs: 10_000,
        ..settings()
    };
    let health = BTreeMap::new();
    let input = PlanInput {
        nodes: &nodes,
        demands: &demands,
        jobs: &jobs,
        types: &types,
        settings: &s,
        health: &health,
        now_ms: NOW,
    };
    let t = std::time::Instant::now();
    let p = plan(&input);
    let took = t.elapsed();
    let submitted: u32 = p.submit.iter().map(|x| x.count).sum();
    assert_eq!(submitted, 1000, "{:?}", p.submit);
    assert!(!p.waiting.is_empty());
    eprintln!(
        "2,000 nodes, 50,000 requests: {took:?}, submit {:?}",
        p.submit
    );
}

/// The worst case for merging: 50,000 requests of distinct shapes, and 5,000 distinct
/// placement groups that find no room (each rolled back), on 2,000 nodes.
#[test]
fn large_cluster_distinct_shapes() {
    let types: Vec<NodeTypeSpec> = (1..=3)
        .map(|k| {
            ty(
                &format!("t{k}"),
                &[("CPU", 4.0 * k as f64), ("memory", 64e9)],
                0,
                3000,
            )
        })
        .collect();
    let mut nodes = vec![head(4.0, 0.0)];
    let mut jobs = Vec::new();
    for i in 0..2000u64 {
        let id = format!("j{i}");
        let mut w = worker(
            &format!("w{i:05}"),
            &id,
            "t1",
            16.0,
            (i % 3) as f64 * 0.5,
            0,
        );
        w.total.insert("memory".into(), 64e9);
        w.available.insert("memory".into(), 1e9);
        nodes.push(w);
        jobs.push(job(&id, "t1", JobPhase::Joined, i));
    }
    let mem = |i: u64| res(&[("CPU", 1.0), ("memory", 1e6 * (i + 1) as f64)]);
    let mut demands: Vec<Demand> = (0..50_000).map(|i| tasks(mem(i), 1)).collect();
    demands.extend((0..5_000).map(|i| {
        gang(
            // Two bundles placed, then the third finds no room: rolled back.
            vec![mem(i), mem(i + 1), res(&[("acc", 1.0)])],
            Strategy::StrictSpread,
        )
    }));
    demands.push(tasks(res(&[("acc", 1.0)]), 1));
    let s = Settings {
        max_workers: 5000,
        max_pending_jobs: 10_000,
        ..settings()
    };
    let nodes_gpu = {
        let mut n = nodes.clone();
        let mut g = worker("gpu0", "7000", "", 1.0, 0.0, 0);
        g.total.insert("acc".into(), 8.0);
        n.push(g);
        n
    };
    let health = BTreeMap::new();
    let t = std::time::Instant::now();
    let p = plan(&PlanInput {
        nodes: &nodes_gpu,
        demands: &demands,
        jobs: &jobs,
        types: &types,
        settings: &s,
        health: &health,
        now_ms: NOW,
    });
    let took = t.elapsed();
    let submitted: u32 = p.submit.iter().map(|x| x.count).sum();
    // 2,000 joined: at most 2,000 in flight; 3,000 left under max_workers.
    assert_eq!(submitted, 2000, "{:?}", p.submit);
    assert!(p.infeasible.is_empty());
    // Every placement group waits for the busy `acc` node; most tasks wait for limits.
    assert!(p.waiting.len() > 45_000, "{}", p.waiting.len());
    eprintln!(
        "2,000 nodes, 55,000 distinct requests: {took:?}, submit {:?}",
        p.submit
    );
}
