//! Resources in Ray's fixed point (1/10000 of a unit, so `0.1 + 0.2` CPUs fit in `0.3`), as
//! vectors over the resource names some demand asks for: amounts that are NaN, negative or zero
//! are absent, and `implicit_resource:*` names are ignored.

use std::collections::HashMap;

use super::{Demand, NodeTypeSpec, ObservedNode, Resources};

/// Ray's resource granularity: 1/10000.
pub(super) const SCALE: f64 = 10_000.0;

/// Bigger amounts (and +inf) saturate here, leaving room for sums.
const FX_MAX: u64 = 1 << 62;

/// Ray's implicit resources, which every node has; never a reason to launch.
const IMPLICIT_PREFIX: &str = "implicit_resource:";

/// `v` in fixed point: 0 for NaN, negative and zero amounts, at most [`FX_MAX`].
pub(super) fn fx(v: f64) -> u64 {
    if v.is_nan() || v <= 0.0 {
        return 0;
    }
    let s = v * SCALE;
    if s >= FX_MAX as f64 {
        FX_MAX
    } else {
        s.round() as u64
    }
}

/// The resource names that some demand asks for: the only ones that matter for fitting.
#[derive(Default)]
pub(super) struct Universe {
    pub(super) names: Vec<String>,
    index: HashMap<String, usize>,
}

impl Universe {
    /// The names that `demands` ask for, in the order they first appear.
    pub(super) fn of(demands: &[Demand]) -> Universe {
        let mut uni = Universe::default();
        for d in demands {
            match d {
                Demand::Tasks { bundle, .. } | Demand::Constraint { bundle, .. } => uni.add(bundle),
                Demand::Gang { bundles, .. } => bundles.iter().for_each(|b| uni.add(b)),
            }
        }
        uni
    }

    fn add(&mut self, r: &Resources) {
        for (k, v) in r {
            if fx(*v) > 0 && !k.starts_with(IMPLICIT_PREFIX) && !self.index.contains_key(k) {
                self.index.insert(k.clone(), self.names.len());
                self.names.push(k.clone());
            }
        }
    }

    /// The index of `GPU`, if some demand asks for GPUs.
    pub(super) fn gpu_index(&self) -> Option<usize> {
        self.index.get("GPU").copied()
    }

    /// `r` over these names (the others left out).
    pub(super) fn vector(&self, r: &Resources) -> Vec<u64> {
        let mut v = vec![0; self.names.len()];
        for (k, x) in r {
            if let Some(&i) = self.index.get(k) {
                v[i] = fx(*x);
            }
        }
        v
    }
}

/// The resources of each node type and each node, over a [`Universe`]'s names.
pub(super) struct Capacity {
    /// Per node type: one node of it.
    pub(super) types: Vec<Vec<u64>>,
    /// Per node type: it has GPUs (whether or not some demand asks for them).
    pub(super) type_gpu: Vec<bool>,
    /// Per node of the input: its total resources.
    pub(super) node_total: Vec<Vec<u64>>,
    /// Per node of the input: its available resources.
    pub(super) node_available: Vec<Vec<u64>>,
    /// Per node of the input: it has GPUs.
    pub(super) node_gpu: Vec<bool>,
}

impl Capacity {
    pub(super) fn new(uni: &Universe, types: &[NodeTypeSpec], nodes: &[ObservedNode]) -> Capacity {
        Capacity {
            types: types.iter().map(|t| uni.vector(&t.resources)).collect(),
            type_gpu: types.iter().map(|t| has_gpu(&t.resources)).collect(),
            node_total: nodes.iter().map(|n| uni.vector(&n.total)).collect(),
            node_available: nodes.iter().map(|n| uni.vector(&n.available)).collect(),
            node_gpu: nodes.iter().map(|n| has_gpu(&n.total)).collect(),
        }
    }
}

fn has_gpu(r: &Resources) -> bool {
    r.get("GPU").is_some_and(|g| fx(*g) > 0)
}

/// A bundle shape in fixed point, with what sorting and fitting need.
pub(super) struct Shape {
    pub(super) v: Vec<u64>,
    /// Indices of the non-zero amounts.
    pub(super) nz: Vec<usize>,
    pub(super) gpu: bool,
    /// Sum of the amounts, each relative to the largest capacity anywhere.
    pub(super) size: f64,
}

impl Shape {
    pub(super) fn new(v: Vec<u64>, gpu_index: Option<usize>, max_cap: &[u64]) -> Shape {
        let nz: Vec<usize> = (0..v.len()).filter(|&i| v[i] > 0).collect();
        let gpu = gpu_index.is_some_and(|g| v[g] > 0);
        let size = nz
            .iter()
            .map(|&i| {
                if max_cap[i] == 0 {
                    1.0
                } else {
                    v[i] as f64 / max_cap[i] as f64
                }
            })
            .sum();
        Shape { v, nz, gpu, size }
    }
}

/// How many bundles of `s` fit in `cap` (`u64::MAX` for an empty shape).
pub(super) fn fit(cap: &[u64], s: &Shape) -> u64 {
    let mut f = u64::MAX;
    for &i in &s.nz {
        f = f.min(cap[i] / s.v[i]);
        if f == 0 {
            break;
        }
    }
    f
}

/// Orders shapes biggest first: GPU shapes, more resource kinds, bigger, then by amounts.
pub(super) fn shape_order(a: &Shape, b: &Shape) -> std::cmp::Ordering {
    b.gpu
        .cmp(&a.gpu)
        .then(b.nz.len().cmp(&a.nz.len()))
        .then(b.size.total_cmp(&a.size))
        .then(a.v.cmp(&b.v))
}

/// Orders shapes as Ray's scheduler sorts requests (`_sort_resource_request`, descending): more
/// resource kinds, then a bigger sum of the raw amounts (so memory, in bytes, decides), then by
/// amounts.
pub(super) fn ray_order(a: &Shape, b: &Shape) -> std::cmp::Ordering {
    let raw = |s: &Shape| s.v.iter().map(|&x| x as u128).sum::<u128>();
    b.nz.len()
        .cmp(&a.nz.len())
        .then(raw(b).cmp(&raw(a)))
        .then(b.v.cmp(&a.v))
}

/// The resource kinds of a shape, as bits (the first 64 resources).
pub(super) fn kind_bits(s: &Shape) -> u64 {
    s.nz.iter()
        .filter(|&&i| i < 64)
        .fold(0, |b, &i| b | (1 << i))
}

/// `a + b`, saturating at [`FX_MAX`].
pub(super) fn sum_vectors(a: &[u64], b: &[u64]) -> Vec<u64> {
    a.iter()
        .zip(b)
        .map(|(x, y)| x.saturating_add(*y).min(FX_MAX))
        .collect()
}

/// `v` as a resource map, `{CPU: 1.5, GPU: 1}`, for the reasons in a plan.
pub(super) fn show_vector(v: &[u64], names: &[String]) -> String {
    let parts: Vec<String> = v
        .iter()
        .zip(names)
        .filter(|(x, _)| **x > 0)
        .map(|(x, n)| format!("{n}: {}", *x as f64 / SCALE))
        .collect();
    format!("{{{}}}", parts.join(", "))
}
