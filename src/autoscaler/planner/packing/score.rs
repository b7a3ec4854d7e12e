//! How well a bin is used, as Ray's scheduler scores it.

use super::{Fixed, Group, Item};
use crate::autoscaler::planner::resources::{SCALE, fit, kind_bits};

/// A bin's score as Ray's scheduler has it, ordered (higher is better) by: not a GPU node for
/// no GPU work, the resource kinds used, the lowest and then the mean utilization.
#[derive(Clone, Copy, PartialEq, Debug)]
pub(super) struct Score {
    gpu_ok: bool,
    kinds: usize,
    min: f64,
    mean: f64,
}

impl Eq for Score {}

impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Score) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Score {
    fn cmp(&self, other: &Score) -> std::cmp::Ordering {
        self.gpu_ok
            .cmp(&other.gpu_ok)
            .then(self.kinds.cmp(&other.kinds))
            .then(self.min.total_cmp(&other.min))
            .then(self.mean.total_cmp(&other.mean))
    }
}

/// One bin, as [`simulate_fill`] sees it.
pub(super) struct Bin<'c> {
    /// What is left of it.
    cap: &'c [u64],
    /// All of it.
    total: &'c [u64],
    /// It is a GPU node.
    gpu: bool,
    /// The resource kinds of what this plan placed on it (bits, as [`kind_bits`]).
    kinds: u64,
}

impl<'c> Bin<'c> {
    /// One bin of group `g`.
    pub(super) fn of(g: &'c Group) -> Bin<'c> {
        Bin {
            cap: &g.cap,
            total: &g.total,
            gpu: g.gpu,
            kinds: g.kinds,
        }
    }

    /// A new node of type `t`.
    pub(super) fn new_node(fx: &'c Fixed, t: usize) -> Bin<'c> {
        let cap = &fx.type_cap[t];
        Bin {
            cap,
            total: cap,
            gpu: fx.type_gpu[t],
            kinds: 0,
        }
    }
}

/// A bin filled first fit: its score, and what it takes of each item.
pub(super) struct BinFill {
    pub(super) score: Score,
    pub(super) takes: Vec<u64>,
}

/// Ray's score of `bin` filled first fit with `items` (as many of each, in order, as fit and
/// are left): not a GPU bin without GPU work, the resource kinds used, then the lowest and the
/// mean utilization over the resources the bin has. With what each item would take; `None` if
/// it takes nothing.
///
/// With `ray`, the score is exactly Ray's (`SchedulingNode._compute_score`): GPU work means
/// any GPU bundle placed on the bin by this plan, the kinds are those of everything this plan
/// placed there, and the utilizations are weighted by the bin's total amounts (`v * util^3`,
/// so memory in bytes weighs most in the mean). With `one`, the bin takes one bundle at most (a
/// `STRICT_SPREAD` group's anti-affinity).
pub(super) fn simulate_fill(
    fx: &Fixed,
    bin: &Bin,
    ray: bool,
    one: bool,
    items: &[Item],
    left: &[u64],
) -> Option<BinFill> {
    let fill = first_fit(fx, bin.cap, one, items, left)?;
    let (kinds, gpu_work) = if ray {
        let kinds = fill.kinds | bin.kinds;
        let gpu_work = fx
            .gpu_index
            .is_some_and(|g| g < 64 && kinds & (1 << g) != 0);
        (kinds, gpu_work)
    } else {
        (fill.kinds, fill.gpu_work)
    };
    Some(BinFill {
        score: score(bin, &fill.cap, kinds, gpu_work, ray),
        takes: fill.takes,
    })
}

/// What one bin takes of the items, first fit.
struct FirstFit {
    /// What is left of the bin.
    cap: Vec<u64>,
    /// What it takes of each item.
    takes: Vec<u64>,
    /// The resource kinds it takes (bits).
    kinds: u64,
    /// Some of it asks for GPUs.
    gpu_work: bool,
}

/// `cap` filled first fit with what is `left` of `items` (one bundle at most with `one`);
/// `None` if it takes nothing.
fn first_fit(fx: &Fixed, cap: &[u64], one: bool, items: &[Item], left: &[u64]) -> Option<FirstFit> {
    let mut fill = FirstFit {
        cap: cap.to_vec(),
        takes: vec![0u64; items.len()],
        kinds: 0,
        gpu_work: false,
    };
    let mut any = false;
    for (k, item) in items.iter().enumerate() {
        if left[k] == 0 {
            continue;
        }
        let s = &fx.shapes[item.shape];
        let mut n = fit(&fill.cap, s).min(left[k]);
        if n == 0 || n == u64::MAX {
            continue;
        }
        if one {
            n = 1;
        }
        for &i in &s.nz {
            fill.cap[i] -= n * s.v[i];
        }
        fill.kinds |= kind_bits(s);
        fill.takes[k] = n;
        any = true;
        fill.gpu_work |= s.gpu;
        if one {
            break;
        }
    }
    any.then_some(fill)
}

/// The score of `bin` with `cap` left of it, the resource kinds `kinds` (bits) used and GPU
/// work on it or not; with `ray`, utilizations weighted as Ray weighs them.
fn score(bin: &Bin, cap: &[u64], kinds: u64, gpu_work: bool, ray: bool) -> Score {
    let total = bin.total;
    let (mut min, mut sum, mut n, mut used_kinds) = (f64::INFINITY, 0.0, 0usize, 0usize);
    for i in 0..cap.len() {
        if total[i] == 0 {
            continue;
        }
        let util = total[i].saturating_sub(cap[i]) as f64 / total[i] as f64;
        // Ray weighs each utilization by the amount: `v * util^3`.
        let term = if ray {
            total[i] as f64 / SCALE * util.powf(3.0)
        } else {
            util
        };
        min = min.min(term);
        sum += term;
        n += 1;
        if i < 64 && kinds & (1 << i) != 0 {
            used_kinds += 1;
        }
    }
    Score {
        gpu_ok: !bin.gpu || gpu_work,
        kinds: used_kinds,
        min,
        mean: sum / n.max(1) as f64,
    }
}
