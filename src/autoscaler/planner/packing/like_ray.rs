//! Ray's own scheduling algorithm, as the packer runs it.

use super::Packer;
use super::score::{Score, ScoreKey, simulate_fill};

impl<'a> Packer<'a> {
    /// Ray's scheduler on these items, as `_try_schedule` does it: the bins there are first,
    /// one at a time, each time the one that scores best filled with what is left (Ray's
    /// score, the first on a tie); then new nodes one at a time, each of the type whose node
    /// scores best (the first in the pool on a tie; a type just opened goes to the pool's end).
    /// Returns what is left of each item.
    pub(in crate::autoscaler::planner) fn place_like_ray(
        &mut self,
        items: &[(usize, u64, u32)],
        one: bool,
    ) -> Vec<u64> {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        let fx = self.fx;
        let mut left: Vec<u64> = items.iter().map(|i| i.1).collect();
        let better = |a: &ScoreKey, b: &ScoreKey| Score(*a) > Score(*b);
        // Scoring every bin after every pick is O(bins^2); a bin's fill (hence its score) only
        // changes when an item it would take more of than is left runs short. So each bin's
        // score is kept, and worked out again only then: the same picks, near O(bins log bins).
        let mut version: Vec<u32> = Vec::new();
        let mut best_heap: BinaryHeap<(Score, Reverse<usize>, u32)> = BinaryHeap::new();
        // Per item: (what a bin would take, bin, version), largest first.
        let mut takers: Vec<BinaryHeap<(u64, usize, u32)>> = vec![BinaryHeap::new(); items.len()];
        let score_bin = |p: &Packer, i: usize, left: &[u64]| {
            let g = &p.groups[i];
            simulate_fill(fx, &g.cap, &g.total, g.gpu, g.kinds, true, one, items, left)
        };
        let push = |p: &Packer,
                    i: usize,
                    left: &[u64],
                    version: &mut Vec<u32>,
                    best_heap: &mut BinaryHeap<(Score, Reverse<usize>, u32)>,
                    takers: &mut Vec<BinaryHeap<(u64, usize, u32)>>| {
            if version.len() <= i {
                version.resize(i + 1, 0);
            }
            version[i] += 1;
            let v = version[i];
            if let Some((score, takes)) = score_bin(p, i, left) {
                best_heap.push((Score(score), Reverse(i), v));
                for (k, &t) in takes.iter().enumerate() {
                    if t > 0 {
                        takers[k].push((t, i, v));
                    }
                }
            }
        };
        for i in 0..self.groups.len() {
            push(self, i, &left, &mut version, &mut best_heap, &mut takers);
        }
        while left.iter().any(|&r| r > 0) {
            let Some((_, Reverse(i), v)) = best_heap.pop() else {
                break;
            };
            if version[i] != v {
                continue; // scored again since
            }
            version[i] += 1; // picked: done
            let Some((_, takes)) = score_bin(self, i, &left) else {
                continue;
            };
            // The other bins of its group, if any, are a group of their own now.
            for j in self.take_scored(i, items, &takes, &mut left) {
                push(self, j, &left, &mut version, &mut best_heap, &mut takers);
            }
            // Bins that would take more of an item than is left: score them again.
            let mut stale: Vec<usize> = Vec::new();
            for k in 0..items.len() {
                while let Some(&(t, j, v)) = takers[k].peek() {
                    if t <= left[k] {
                        break;
                    }
                    takers[k].pop();
                    if version.get(j) == Some(&v) {
                        stale.push(j);
                    }
                }
            }
            stale.sort_unstable();
            stale.dedup();
            for j in stale {
                push(self, j, &left, &mut version, &mut best_heap, &mut takers);
            }
        }
        let mut pool: Vec<usize> = (0..fx.type_cap.len())
            .filter(|&t| fx.type_ok[t] && self.type_room[t] > 0)
            .collect();
        while left.iter().any(|&r| r > 0) && self.global_room > 0 {
            let mut best: Option<(ScoreKey, Vec<u64>, usize)> = None;
            for (j, &t) in pool.iter().enumerate() {
                let cap = &fx.type_cap[t];
                if let Some((score, takes)) =
                    simulate_fill(fx, cap, cap, fx.type_gpu[t], 0, true, one, items, &left)
                    && best.as_ref().is_none_or(|b| better(&score, &b.0))
                {
                    best = Some((score, takes, j));
                }
            }
            let Some((_, takes, j)) = best else {
                break;
            };
            let t = pool.remove(j);
            // The same node again while every item it takes has that much left (Ray opens them
            // one by one; at a million bundles that is a million steps).
            let repeat = (0..items.len())
                .filter(|&k| takes[k] > 0)
                .map(|k| left[k] / takes[k])
                .min()
                .unwrap_or(1)
                .max(1);
            let Some(g) = self.open(t, repeat) else {
                break;
            };
            let bins = self.groups[g].mult;
            for (k, &(sid, _, unit)) in items.iter().enumerate() {
                if takes[k] > 0 {
                    self.take(g, &fx.shapes[sid], takes[k], bins, unit);
                    left[k] -= takes[k] * bins;
                }
            }
            if self.type_room[t] > 0 {
                pool.push(t);
            }
        }
        left
    }
}
