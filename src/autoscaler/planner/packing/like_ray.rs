//! Ray's own scheduling algorithm, as the packer runs it.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::score::{Bin, BinFill, Score, simulate_fill};
use super::{Item, Packer};

impl<'a> Packer<'a> {
    /// Ray's scheduler on these items, as `_try_schedule` does it: the bins there are first,
    /// one at a time, each time the one that scores best filled with what is left (Ray's
    /// score, the first on a tie); then new nodes one at a time, each of the type whose node
    /// scores best (the first in the pool on a tie; a type just opened goes to the pool's end).
    /// Returns what is left of each item.
    pub(in crate::autoscaler::planner) fn place_like_ray(
        &mut self,
        items: &[Item],
        one: bool,
    ) -> Vec<u64> {
        let mut left: Vec<u64> = items.iter().map(|i| i.count).collect();
        self.fill_like_ray(items, one, &mut left);
        self.open_like_ray(items, one, &mut left);
        left
    }

    /// The bins there are, one at a time, the best scoring first.
    fn fill_like_ray(&mut self, items: &[Item], one: bool, left: &mut [u64]) {
        let mut scores = RayScores::new(items, one);
        for i in 0..self.groups.len() {
            scores.push(self, i, left);
        }
        while left.iter().any(|&r| r > 0) {
            let Some(i) = scores.pick() else {
                break;
            };
            let Some(BinFill { takes, .. }) = scores.score(self, i, left) else {
                continue;
            };
            // The other bins of its group, if any, are a group of their own now.
            for j in self.take_scored(i, items, &takes, left) {
                scores.push(self, j, left);
            }
            for j in scores.stale(left) {
                scores.push(self, j, left);
            }
        }
    }

    /// New nodes, one at a time, each of the type whose node scores best.
    fn open_like_ray(&mut self, items: &[Item], one: bool, left: &mut [u64]) {
        let fx = self.fx;
        let mut pool: Vec<usize> = (0..fx.type_cap.len())
            .filter(|&t| fx.type_ok[t] && self.type_room[t] > 0)
            .collect();
        while left.iter().any(|&r| r > 0) && self.global_room > 0 {
            let mut best: Option<(BinFill, usize)> = None;
            for (j, &t) in pool.iter().enumerate() {
                if let Some(fill) = simulate_fill(fx, &Bin::new_node(fx, t), true, one, items, left)
                    && best.as_ref().is_none_or(|(b, _)| fill.score > b.score)
                {
                    best = Some((fill, j));
                }
            }
            let Some((fill, j)) = best else {
                break;
            };
            let t = pool.remove(j);
            if self.open_filled(t, items, &fill.takes, left).is_none() {
                break;
            }
            if self.type_room[t] > 0 {
                pool.push(t);
            }
        }
    }
}

/// Ray's score of each bin, kept and worked out again only when it may have changed.
///
/// Scoring every bin after every pick is O(bins^2); a bin's fill (hence its score) only
/// changes when an item it would take more of than is left runs short. So each bin's score is
/// kept, and worked out again only then: the same picks, near O(bins log bins).
struct RayScores<'i> {
    items: &'i [Item],
    /// A `STRICT_SPREAD` group: a bin takes one bundle at most.
    one: bool,
    /// Per bin: bumped when it is scored again or picked, so older heap entries are stale.
    version: Vec<u32>,
    /// (score, bin, version), the best first (the first bin on a tie).
    best: BinaryHeap<(Score, Reverse<usize>, u32)>,
    /// Per item: (what a bin would take, bin, version), largest first.
    takers: Vec<BinaryHeap<(u64, usize, u32)>>,
}

impl<'i> RayScores<'i> {
    fn new(items: &'i [Item], one: bool) -> RayScores<'i> {
        RayScores {
            items,
            one,
            version: Vec::new(),
            best: BinaryHeap::new(),
            takers: vec![BinaryHeap::new(); items.len()],
        }
    }

    /// Bin `i` of `p`, filled with what is left: its score and what it takes of each item.
    fn score(&self, p: &Packer, i: usize, left: &[u64]) -> Option<BinFill> {
        let bin = Bin::of(&p.groups[i]);
        simulate_fill(p.fx, &bin, true, self.one, self.items, left)
    }

    /// Scores bin `i` (again).
    fn push(&mut self, p: &Packer, i: usize, left: &[u64]) {
        if self.version.len() <= i {
            self.version.resize(i + 1, 0);
        }
        self.version[i] += 1;
        let v = self.version[i];
        if let Some(BinFill { score, takes }) = self.score(p, i, left) {
            self.best.push((score, Reverse(i), v));
            for (k, &t) in takes.iter().enumerate() {
                if t > 0 {
                    self.takers[k].push((t, i, v));
                }
            }
        }
    }

    /// The best scoring bin (not scored again since), which is done after this.
    fn pick(&mut self) -> Option<usize> {
        while let Some((_, Reverse(i), v)) = self.best.pop() {
            if self.version[i] == v {
                self.version[i] += 1;
                return Some(i);
            }
        }
        None
    }

    /// The bins that would take more of an item than is left: their scores are stale.
    fn stale(&mut self, left: &[u64]) -> Vec<usize> {
        let mut stale: Vec<usize> = Vec::new();
        for (k, takers) in self.takers.iter_mut().enumerate() {
            while let Some(&(t, j, v)) = takers.peek() {
                if t <= left[k] {
                    break;
                }
                takers.pop();
                if self.version.get(j) == Some(&v) {
                    stale.push(j);
                }
            }
        }
        stale.sort_unstable();
        stale.dedup();
        stale
    }
}
