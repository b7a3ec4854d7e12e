//! Benchmark 3, our side: the autoscaler planner ([`ray_hpc::autoscaler::plan`]) on generated
//! cluster states, timed in the build it runs in.
//!
//! ```text
//! cargo bench --profile release --bench planner -- --out DIR [--runs N] [--quick]
//!     [--sizes 100x1000,500x5000] [--seed S] [--replay CASE.json]
//! ```
//!
//! For each size (existing nodes x pending requests) it generates one cluster state from a fixed
//! seed, writes it as `DIR/case-<nodes>x<requests>.json` (the exact input `bench/ray_scheduler.py`
//! hands Ray's v2 scheduler), times `plan()` `N` times on an input built beforehand, and writes
//! `DIR/ours-<nodes>x<requests>.json`: the times and what the plan launches and leaves unplaced.
//! `bench/planner` (Python) runs this, then Ray's scheduler, and compares.
//!
//! The generator is the only place cluster states come from: the same seed gives the same case,
//! on any machine. `--seed` draws other cases of the same sizes (small sizes and many seeds make
//! a quick search for plans that launch more nodes than Ray's); `--replay` plans a case JSON
//! again (one written here, or one edited by hand to narrow a finding down).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use ray_hpc::autoscaler::{
    Demand, JobPhase, NodeStatus, NodeTypeSpec, ObservedNode, Plan, PlanInput, Resources, Settings,
    Strategy, TypeHealth, WorkerJob, plan,
};
use serde_json::{Value, json};

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
/// The full sizes, (existing nodes, pending requests); `--quick` runs the first only.
const SIZES: [(usize, usize); 4] = [(100, 1_000), (500, 5_000), (1_000, 20_000), (2_000, 50_000)];
/// Large enough that no per-type limit decides anything (given to Ray's scheduler too).
const MAX_PER_TYPE: u32 = 100_000;

// ---------------------------------------------------------------------------------------------
// A small deterministic generator (splitmix64): the cases must not depend on a crate's version.

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in 0..n.
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }

    /// An index drawn with these weights.
    fn weighted(&mut self, weights: &[f64]) -> usize {
        let mut x = self.unit() * weights.iter().sum::<f64>();
        for (i, w) in weights.iter().enumerate() {
            if x < *w {
                return i;
            }
            x -= w;
        }
        weights.len() - 1
    }
}

fn res(cpu: f64, gpu: f64, mem_gib: f64) -> Resources {
    let mut r = Resources::new();
    if cpu > 0.0 {
        r.insert("CPU".into(), cpu);
    }
    if gpu > 0.0 {
        r.insert("GPU".into(), gpu);
    }
    if mem_gib > 0.0 {
        r.insert("memory".into(), mem_gib * GIB);
    }
    r
}

fn fits(cap: &Resources, b: &Resources) -> bool {
    b.iter()
        .all(|(k, v)| cap.get(k).copied().unwrap_or(0.0) >= *v)
}

fn sum(bundles: &[Resources]) -> Resources {
    let mut s = Resources::new();
    for b in bundles {
        for (k, v) in b {
            *s.entry(k.clone()).or_default() += v;
        }
    }
    s
}

// ---------------------------------------------------------------------------------------------
// The cluster state.

/// One generated cluster state: what both planners are given.
struct Case {
    nodes_n: usize,
    requests_n: usize,
    types: Vec<NodeTypeSpec>,
    /// Existing worker nodes: (type index, total, available). All running and joined.
    nodes: Vec<(usize, Resources, Resources)>,
    /// Tasks and actors: (bundle, count), one entry per shape (as the GCS aggregates them).
    tasks: Vec<(Resources, u64)>,
    /// Placement groups: (strategy, bundles).
    gangs: Vec<(Strategy, Vec<Resources>)>,
    /// `request_resources`: (bundle, count).
    constraint: Vec<(Resources, u64)>,
}

/// Node types of mixed shapes: CPU-only small and large, high-memory, GPU nodes with 4 and 8.
fn node_types() -> Vec<NodeTypeSpec> {
    [
        ("cpu-small", res(8.0, 0.0, 32.0)),
        ("cpu-large", res(64.0, 0.0, 256.0)),
        ("highmem", res(32.0, 0.0, 1024.0)),
        ("gpu4", res(32.0, 4.0, 256.0)),
        ("gpu8", res(96.0, 8.0, 1024.0)),
    ]
    .into_iter()
    .map(|(name, resources)| NodeTypeSpec {
        name: name.into(),
        resources,
        min_workers: 0,
        max_workers: MAX_PER_TYPE,
    })
    .collect()
}

/// A random task or actor shape that some node type holds.
fn task_shape(rng: &mut Rng, types: &[NodeTypeSpec]) -> Resources {
    loop {
        let r = if rng.unit() < 0.15 {
            let gpu = rng.pick(&[0.5, 1.0, 1.0, 1.0, 2.0, 4.0]);
            let cpu = rng.pick(&[1.0, 2.0, 4.0, 8.0]);
            let mem = rng.pick(&[0.0, 8.0, 16.0, 32.0, 64.0]);
            res(cpu, gpu, mem)
        } else {
            let cpu = rng.pick(&[0.5, 1.0, 1.0, 2.0, 2.0, 4.0, 8.0, 16.0]);
            let mem = if rng.unit() < 0.6 {
                rng.pick(&[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 512.0])
            } else {
                0.0
            };
            res(cpu, 0.0, mem)
        };
        if types.iter().any(|t| fits(&t.resources, &r)) {
            return r;
        }
    }
}

/// The shapes placement groups are made of (training workers, data loaders, actors).
fn pg_shapes() -> Vec<Resources> {
    vec![
        res(1.0, 0.0, 0.0),
        res(2.0, 0.0, 8.0),
        res(4.0, 1.0, 32.0),
        res(0.0, 1.0, 0.0),
        res(8.0, 2.0, 64.0),
        res(16.0, 0.0, 64.0),
        res(4.0, 0.0, 16.0),
    ]
}

fn generate(nodes_n: usize, requests_n: usize, seed: u64) -> Case {
    let mut rng = Rng(seed ^ ((nodes_n as u64) << 32) ^ requests_n as u64);
    let types = node_types();

    // Existing nodes: mostly small CPU nodes, some GPU nodes; each partly used, some full, a
    // few entirely free. Amounts stay whole CPUs and GPUs and whole GiB, as Ray reports them.
    let mut nodes = Vec::with_capacity(nodes_n);
    for _ in 0..nodes_n {
        let t = rng.weighted(&[35.0, 25.0, 10.0, 20.0, 10.0]);
        let total = types[t].resources.clone();
        let u = rng.unit();
        let available: Resources = total
            .iter()
            .map(|(k, v)| {
                let free = if u < 0.1 {
                    1.0 // an idle node
                } else if u < 0.3 {
                    0.0 // a busy one
                } else {
                    rng.unit()
                };
                let unit = if k == "memory" { GIB } else { 1.0 };
                (k.clone(), ((v / unit) * free).floor() * unit)
            })
            .collect();
        nodes.push((t, total, available));
    }

    // Tasks and actors: ~85 % of the requests, over a few dozen shapes at most (the GCS reports
    // one entry per shape), and one shape that no node type holds (infeasible).
    let task_total = requests_n * 85 / 100;
    let shapes_n = (8 + requests_n / 1_000).min(64);
    let mut shapes: Vec<Resources> = Vec::new();
    while shapes.len() < shapes_n {
        let s = task_shape(&mut rng, &types);
        if !shapes.contains(&s) {
            shapes.push(s);
        }
    }
    let infeasible_n = (requests_n / 500).max(1);
    let weights: Vec<f64> = (0..shapes_n).map(|_| rng.unit().powi(2) + 0.05).collect();
    let wsum: f64 = weights.iter().sum();
    let left = (task_total - infeasible_n) as f64;
    let mut tasks: Vec<(Resources, u64)> = shapes
        .into_iter()
        .zip(&weights)
        .map(|(s, w)| (s, (left * w / wsum).floor() as u64))
        .collect();
    let placed: u64 = tasks.iter().map(|t| t.1).sum();
    tasks[0].1 += (task_total - infeasible_n) as u64 - placed;
    tasks.retain(|t| t.1 > 0);
    tasks.push((res(1.0, 16.0, 0.0), infeasible_n as u64));

    // Placement groups: the other ~15 % of the requests, 2 to 8 bundles each, every strategy.
    // Homogeneous groups, or a small driver bundle and workers. STRICT_PACK groups are cut
    // down until a node type holds them all; one last STRICT_PACK group holds 32 GPUs
    // (infeasible).
    let strategies = [
        Strategy::Pack,
        Strategy::Spread,
        Strategy::StrictPack,
        Strategy::StrictSpread,
    ];
    let catalogue = pg_shapes();
    let mut gangs = Vec::new();
    let mut gang_bundles = 0;
    let gang_total = requests_n - task_total - 8;
    while gang_bundles < gang_total {
        let strategy = rng.pick(&strategies);
        let shape = catalogue[rng.below(catalogue.len())].clone();
        let mut k = (2 + rng.below(7)).min(gang_total - gang_bundles).max(1);
        let driver = rng.unit() < 0.3;
        let make = |k: usize| -> Vec<Resources> {
            (0..k)
                .map(|i| {
                    if driver && i == 0 {
                        res(1.0, 0.0, 0.0)
                    } else {
                        shape.clone()
                    }
                })
                .collect()
        };
        let mut bundles = make(k);
        if strategy == Strategy::StrictPack {
            while k > 1 && !types.iter().any(|t| fits(&t.resources, &sum(&bundles))) {
                k -= 1;
                bundles = make(k);
            }
        }
        gang_bundles += bundles.len();
        gangs.push((strategy, bundles));
    }
    gangs.push((Strategy::StrictPack, vec![res(4.0, 4.0, 0.0); 8]));

    // request_resources: room for two more 8-GPU bundles than the 8-GPU nodes there are.
    let gpu8_nodes = nodes.iter().filter(|n| n.0 == 4).count() as u64;
    let constraint = vec![(res(8.0, 8.0, 0.0), gpu8_nodes + 2)];

    Case {
        nodes_n,
        requests_n,
        types,
        nodes,
        tasks,
        gangs,
        constraint,
    }
}

/// A case written by [`Case::to_json`] (or edited by hand), read back: `--replay FILE`.
fn from_json(v: &Value) -> Case {
    let res = |v: &Value| -> Resources {
        v.as_object()
            .expect("resources")
            .iter()
            .map(|(k, x)| (k.clone(), x.as_f64().expect("amount")))
            .collect()
    };
    let list = |k: &str| v[k].as_array().cloned().unwrap_or_default();
    let types: Vec<NodeTypeSpec> = list("types")
        .iter()
        .map(|t| NodeTypeSpec {
            name: t["name"].as_str().expect("name").into(),
            resources: res(&t["resources"]),
            min_workers: t["min_workers"].as_u64().unwrap_or(0) as u32,
            max_workers: t["max_workers"].as_u64().unwrap_or(MAX_PER_TYPE as u64) as u32,
        })
        .collect();
    let type_of = |n: &str| {
        types
            .iter()
            .position(|t| t.name == n)
            .expect("a known type")
    };
    let strategy = |s: &str| match s {
        "PACK" => Strategy::Pack,
        "SPREAD" => Strategy::Spread,
        "STRICT_PACK" => Strategy::StrictPack,
        _ => Strategy::StrictSpread,
    };
    Case {
        nodes_n: v["nodes_n"].as_u64().unwrap_or(0) as usize,
        requests_n: v["requests_n"].as_u64().unwrap_or(0) as usize,
        nodes: list("nodes")
            .iter()
            .map(|n| {
                let t = type_of(n["type"].as_str().expect("type"));
                (t, res(&n["total"]), res(&n["available"]))
            })
            .collect(),
        tasks: list("tasks")
            .iter()
            .map(|t| (res(&t["bundle"]), t["count"].as_u64().expect("count")))
            .collect(),
        gangs: list("gangs")
            .iter()
            .map(|g| {
                let bundles = g["bundles"].as_array().expect("bundles");
                (
                    strategy(g["strategy"].as_str().expect("strategy")),
                    bundles.iter().map(res).collect(),
                )
            })
            .collect(),
        constraint: list("constraint")
            .iter()
            .map(|c| (res(&c["bundle"]), c["count"].as_u64().expect("count")))
            .collect(),
        types,
    }
}

fn strategy_name(s: Strategy) -> &'static str {
    match s {
        Strategy::Pack => "PACK",
        Strategy::Spread => "SPREAD",
        Strategy::StrictPack => "STRICT_PACK",
        Strategy::StrictSpread => "STRICT_SPREAD",
    }
}

impl Case {
    fn name(&self) -> String {
        format!("{}x{}", self.nodes_n, self.requests_n)
    }

    /// The case as JSON, for `bench/ray_scheduler.py`.
    fn to_json(&self) -> Value {
        json!({
            "nodes_n": self.nodes_n,
            "requests_n": self.requests_n,
            "types": self.types.iter().map(|t| json!({
                "name": t.name,
                "resources": t.resources,
                "min_workers": t.min_workers,
                "max_workers": t.max_workers,
            })).collect::<Vec<_>>(),
            "nodes": self.nodes.iter().enumerate().map(|(i, (t, total, avail))| json!({
                "id": node_id(i),
                "instance_id": job_id(i),
                "type": self.types[*t].name,
                "total": total,
                "available": avail,
            })).collect::<Vec<_>>(),
            "tasks": self.tasks.iter().map(|(b, n)| json!({"bundle": b, "count": n}))
                .collect::<Vec<_>>(),
            "gangs": self.gangs.iter().enumerate().map(|(i, (s, b))| json!({
                "id": pg_id(i),
                "strategy": strategy_name(*s),
                "bundles": b,
            })).collect::<Vec<_>>(),
            "constraint": self.constraint.iter()
                .map(|(b, n)| json!({"bundle": b, "count": n})).collect::<Vec<_>>(),
        })
    }

    /// The planner's input: every node joined through a worker job of its type.
    fn input(&self) -> (Vec<ObservedNode>, Vec<Demand>, Vec<WorkerJob>) {
        let nodes = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, (t, total, available))| ObservedNode {
                node_id: node_id(i),
                instance_id: job_id(i),
                node_type: self.types[*t].name.clone(),
                total: total.clone(),
                available: available.clone(),
                status: NodeStatus::Running,
                idle_ms: 0,
            })
            .collect();
        let jobs = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, (t, _, _))| WorkerJob {
                job_id: job_id(i),
                node_type: self.types[*t].name.clone(),
                phase: JobPhase::Joined,
                submitted_ms: i as u64,
            })
            .collect();
        let mut demands: Vec<Demand> = self
            .tasks
            .iter()
            .map(|(b, n)| Demand::Tasks {
                bundle: b.clone(),
                count: *n,
            })
            .collect();
        demands.extend(
            self.gangs
                .iter()
                .enumerate()
                .map(|(i, (s, b))| Demand::Gang {
                    bundles: b.clone(),
                    strategy: *s,
                    details: format!("{}:{}|PENDING", pg_id(i), strategy_name(*s)),
                }),
        );
        demands.extend(self.constraint.iter().map(|(b, n)| Demand::Constraint {
            bundle: b.clone(),
            count: *n,
        }));
        (nodes, demands, jobs)
    }
}

fn node_id(i: usize) -> String {
    format!("{:056x}", i + 1)
}

fn job_id(i: usize) -> String {
    format!("{}", 100_000 + i)
}

fn pg_id(i: usize) -> String {
    format!("{:036x}", i + 1)
}

/// Settings under which only the demand decides: Ray's scheduler computes how many nodes are
/// needed, and rate-limits launches elsewhere (the instance manager), so our upscaling caps
/// (`max_pending_jobs`, `upscaling_speed`) are set not to bind, and `max_workers` is far above
/// anything a case launches.
fn settings() -> Settings {
    Settings {
        max_workers: u32::MAX,
        idle_timeout_ms: 60_000,
        upscaling_speed: 1e9,
        max_pending_jobs: u32::MAX,
        backoff_initial_ms: 1_000,
        backoff_max_ms: 60_000,
        max_consecutive_failures: 0,
    }
}

// ---------------------------------------------------------------------------------------------
// What a plan did.

/// Bundles and resources of demand the plan leaves unplaced.
fn unplaced(plan: &Plan) -> (u64, Resources, u64, u64) {
    let mut bundles = 0u64;
    let mut amounts = Resources::new();
    let mut add = |b: &Resources, n: u64| {
        bundles += n;
        for (k, v) in b {
            *amounts.entry(k.clone()).or_default() += v * n as f64;
        }
    };
    let demands = plan
        .infeasible
        .iter()
        .chain(plan.waiting.iter().map(|w| &w.demand));
    let (mut constraint_bundles, mut gangs) = (0u64, 0u64);
    for d in demands {
        match d {
            Demand::Tasks { bundle, count } => add(bundle, *count),
            Demand::Gang { bundles, .. } => {
                gangs += 1;
                for b in bundles {
                    add(b, 1);
                }
            }
            Demand::Constraint { count, .. } => constraint_bundles += count,
        }
    }
    (bundles, amounts, gangs, constraint_bundles)
}

fn summary(plan: &Plan) -> Value {
    let (bundles, amounts, gangs, constraint_bundles) = unplaced(plan);
    let launched: BTreeMap<&str, u32> = plan
        .submit
        .iter()
        .map(|s| (s.node_type.as_str(), s.count))
        .collect();
    json!({
        "launched": launched,
        "launched_total": plan.submit.iter().map(|s| u64::from(s.count)).sum::<u64>(),
        // Task and placement-group bundles left unplaced (infeasible or waiting), and their
        // resources; constraint bundles are not demand and are counted apart.
        "unplaced_bundles": bundles,
        "unplaced_resources": amounts,
        "unplaced_gangs": gangs,
        "unmet_constraint_bundles": constraint_bundles,
        "infeasible": plan.infeasible.len(),
        "waiting": plan.waiting.len(),
        "cancel": plan.cancel.len(),
        "drain": plan.drain.len(),
    })
}

// ---------------------------------------------------------------------------------------------

struct Args {
    out: PathBuf,
    replay: Option<PathBuf>,
    runs: usize,
    sizes: Vec<(usize, usize)>,
    seed: u64,
}

fn args() -> Args {
    let mut out = None;
    let mut runs = 5;
    let mut quick = false;
    let mut sizes: Option<Vec<(usize, usize)>> = None;
    let mut seed = 20_250_601;
    let mut replay = None;
    let mut it = std::env::args().skip(1);
    let usage = "usage: planner --out DIR [--runs N] [--quick] [--sizes NxR,...] [--seed S] \
                 [--replay CASE.json]";
    while let Some(a) = it.next() {
        match a.as_str() {
            "--out" => out = it.next().map(PathBuf::from),
            "--runs" => runs = it.next().and_then(|v| v.parse().ok()).expect(usage),
            "--seed" => seed = it.next().and_then(|v| v.parse().ok()).expect(usage),
            "--quick" => quick = true,
            "--replay" => replay = it.next().map(PathBuf::from),
            "--sizes" => {
                sizes = Some(
                    it.next()
                        .expect(usage)
                        .split(',')
                        .map(|s| {
                            let (n, r) = s.split_once('x').expect(usage);
                            (n.parse().expect(usage), r.parse().expect(usage))
                        })
                        .collect(),
                )
            }
            // cargo bench appends --bench.
            "--bench" => {}
            other => panic!("unknown argument {other}; {usage}"),
        }
    }
    if quick {
        runs = 1;
    }
    let sizes = sizes.unwrap_or_else(|| {
        if quick {
            SIZES[..1].to_vec()
        } else {
            SIZES.to_vec()
        }
    });
    Args {
        out: out.expect(usage),
        replay,
        runs: runs.max(1),
        sizes,
        seed,
    }
}

fn main() {
    // `cargo test --all-targets` runs bench targets too, without cargo bench's `--bench`.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("planner: a benchmark, not a test: run it with bench/run");
        return;
    }
    let a = args();
    std::fs::create_dir_all(&a.out).expect("creating --out");
    let settings = settings();
    let health: BTreeMap<String, TypeHealth> = BTreeMap::new();
    let cases: Vec<Case> = match &a.replay {
        Some(path) => {
            let text = std::fs::read_to_string(path).expect("reading --replay");
            vec![from_json(&serde_json::from_str(&text).expect("a case"))]
        }
        None => a
            .sizes
            .iter()
            .map(|&(n, r)| generate(n, r, a.seed))
            .collect(),
    };
    for case in cases {
        let (n, r) = (case.nodes_n, case.requests_n);
        let name = case.name();
        let path = a.out.join(format!("case-{name}.json"));
        std::fs::write(&path, serde_json::to_string(&case.to_json()).unwrap())
            .expect("writing the case");

        // Built before timing: the planner's input as the reconciler hands it over.
        let (nodes, demands, jobs) = case.input();
        let input = PlanInput {
            nodes: &nodes,
            demands: &demands,
            jobs: &jobs,
            types: &case.types,
            settings: &settings,
            health: &health,
            now_ms: 1_000_000,
        };
        let mut times = Vec::with_capacity(a.runs);
        let mut first: Option<Plan> = None;
        for _ in 0..a.runs {
            let t = Instant::now();
            let p = std::hint::black_box(plan(std::hint::black_box(&input)));
            times.push(t.elapsed().as_secs_f64());
            match &first {
                None => first = Some(p),
                // Pure: every run plans the same.
                Some(f) => assert_eq!(f, &p, "plan() is not deterministic"),
            }
        }
        let p = first.unwrap();
        let s = summary(&p);
        let mut line = String::new();
        let mut sorted = times.clone();
        sorted.sort_by(f64::total_cmp);
        write!(
            line,
            "planner {name}: median {:.3} ms over {} runs, launches {} ({}), {} bundles unplaced",
            sorted[sorted.len() / 2] * 1e3,
            a.runs,
            s["launched_total"],
            s["launched"],
            s["unplaced_bundles"],
        )
        .unwrap();
        eprintln!("{line}");
        let result = json!({
            "case": name,
            "nodes_n": n,
            "requests_n": r,
            "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
            "times_s": times,
            "plan": s,
        });
        std::fs::write(
            a.out.join(format!("ours-{name}.json")),
            serde_json::to_string_pretty(&result).unwrap(),
        )
        .expect("writing the result");
    }
}
