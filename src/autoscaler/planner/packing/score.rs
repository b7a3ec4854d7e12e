//! How well a bin is used, as Ray's scheduler scores it.

use super::Fixed;
use crate::autoscaler::planner::resources::{SCALE, fit, kind_bits};

/// A bin's score as Ray's scheduler has it: not a GPU node for no GPU work, the resource kinds
/// used, the lowest and the mean utilization.
pub(super) type ScoreKey = (bool, usize, f64, f64);

/// A [`simulate_fill`] score, ordered (higher is better).
#[derive(Clone, Copy, PartialEq, Debug)]
pub(super) struct Score(pub(super) ScoreKey);

impl Eq for Score {}

impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Score) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Score {
    fn cmp(&self, other: &Score) -> std::cmp::Ordering {
        let (a, b) = (&self.0, &other.0);
        a.0.cmp(&b.0)
            .then(a.1.cmp(&b.1))
            .then(a.2.total_cmp(&b.2))
            .then(a.3.total_cmp(&b.3))
    }
}

/// Ray's score of a bin filled first fit with `items` (as many of each, in order, as fit and
/// are left): not a GPU bin without GPU work, the resource kinds used, then the lowest and the
/// mean utilization over the resources the bin has. With what each item would take; `None` if
/// it takes nothing.
///
/// With `ray`, the score is exactly Ray's (`SchedulingNode._compute_score`): GPU work means
/// any GPU bundle placed on the bin by this plan, the kinds are those of everything this plan
/// placed there (`kinds`), and the utilizations are weighted by the bin's total amounts
/// (`v * util^3`, so memory in bytes weighs most in the mean). With `one`, the bin takes one
/// bundle at most (a `STRICT_SPREAD` group's anti-affinity).
#[allow(clippy::type_complexity, clippy::too_many_arguments)]
pub(super) fn simulate_fill(
    fx: &Fixed,
    cap: &[u64],
    total: &[u64],
    gpu: bool,
    kinds_before: u64,
    ray: bool,
    one: bool,
    items: &[(usize, u64, u32)],
    left: &[u64],
) -> Option<(ScoreKey, Vec<u64>)> {
    let mut c = cap.to_vec();
    let mut takes = vec![0u64; items.len()];
    let mut gpu_work = false;
    let mut bits = 0u64; // the kinds this fill places
    let mut any = false;
    for (k, &(sid, _, _)) in items.iter().enumerate() {
        if left[k] == 0 {
            continue;
        }
        let s = &fx.shapes[sid];
        let mut n = fit(&c, s).min(left[k]);
        if n == 0 || n == u64::MAX {
            continue;
        }
        if one {
            n = 1;
        }
        for &i in &s.nz {
            c[i] -= n * s.v[i];
        }
        bits |= kind_bits(s);
        takes[k] = n;
        any = true;
        gpu_work |= s.gpu;
        if one {
            break;
        }
    }
    if !any {
        return None;
    }
    if ray {
        bits |= kinds_before;
        gpu_work = fx.gpu_index.is_some_and(|g| g < 64 && bits & (1 << g) != 0);
    }
    let (mut min, mut sum, mut n, mut used_kinds) = (f64::INFINITY, 0.0, 0usize, 0usize);
    for i in 0..c.len() {
        if total[i] == 0 {
            continue;
        }
        let util = total[i].saturating_sub(c[i]) as f64 / total[i] as f64;
        // Ray weighs each utilization by the amount: `v * util^3`.
        let term = if ray {
            total[i] as f64 / SCALE * util.powf(3.0)
        } else {
            util
        };
        min = min.min(term);
        sum += term;
        n += 1;
        if i < 64 && bits & (1 << i) != 0 {
            used_kinds += 1;
        }
    }
    let mean = sum / n.max(1) as f64;
    Some(((!gpu || gpu_work, used_kinds, min, mean), takes))
}
