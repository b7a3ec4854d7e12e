//! The ways [`Packer::place_items`] packs tasks and constraint bundles, and the choice of the
//! best.

use super::score::{Bin, BinFill, Score, simulate_fill};
use super::{Item, Packer};
use crate::autoscaler::planner::resources::{fit, ray_order};

/// [`Packer::place_items`] tries the ways that score bins (each bin against every item) only up
/// to this many bins times items: 2,000 nodes with 2,000 distinct shapes.
const SCORING_BUDGET: usize = 4_000_000;

/// The ways [`Packer::place_items`] fills the bins there are.
#[derive(Clone, Copy)]
enum Fill {
    FirstFit,
    Scored,
    BestFirst,
}

impl<'a> Packer<'a> {
    /// Tasks (or constraint bundles), an [`Item`] per shape, biggest shapes first: onto
    /// the bins there are, then onto new nodes.
    ///
    /// Greedy packing has no order that is best for every input, so this packs the items a few
    /// ways and keeps the plan that places the most, then opens the fewest nodes (the first
    /// tried on a tie). The ways: the items in their order and in the order Ray's scheduler
    /// sorts them ([`ray_order`]); onto the bins there are first fit ([`Packer::place_bulk`]),
    /// bin by bin in the order of how well each is used ([`Packer::fill_scored`]), or bin by bin
    /// best first ([`Packer::fill_best_first`]); the rest onto new nodes shape by shape
    /// ([`Packer::place_tasks`]) or node by node for the remaining mix
    /// ([`Packer::open_mixed`]); and Ray's own algorithm ([`Packer::place_like_ray`]), so that
    /// no plan opens more nodes than Ray's scheduler would for the same tasks. Each way costs
    /// about `O((bins + shapes) log bins)`. Returns what is left of each item.
    pub(in crate::autoscaler::planner) fn place_items(&mut self, items: &[Item]) -> Vec<u64> {
        let orders = self.orders(items);
        // The ways that score bins (or node types) look at every item for every bin they score:
        // only while that stays small (many distinct shapes on many nodes get first fit and
        // shape by shape only).
        let scoring = self.groups.len().saturating_mul(items.len()) <= SCORING_BUDGET;
        let fills: &[Fill] = if scoring {
            &[Fill::FirstFit, Fill::Scored, Fill::BestFirst]
        } else {
            &[Fill::FirstFit]
        };
        let mut best: Option<Way<'a>> = None;
        for order in &orders {
            let ordered: Vec<Item> = order.iter().map(|&k| items[k]).collect();
            for &fill in fills {
                for way in self.fill_then_open(fill, &ordered, scoring) {
                    way.unordered(order).consider(&mut best);
                }
            }
        }
        if scoring {
            let order = orders.last().expect("an order");
            let ordered: Vec<Item> = order.iter().map(|&k| items[k]).collect();
            let mut packer = self.clone();
            let left = packer.place_like_ray(&ordered, false);
            Way { packer, left }.unordered(order).consider(&mut best);
        }
        let best = best.expect("at least one way");
        *self = best.packer;
        best.left
    }

    /// The orders to pack `items` in: theirs, and Ray's ([`ray_order`]) if that differs.
    fn orders(&self, items: &[Item]) -> Vec<Vec<usize>> {
        let fx = self.fx;
        let mut orders: Vec<Vec<usize>> = vec![(0..items.len()).collect()];
        let mut ray: Vec<usize> = (0..items.len()).collect();
        ray.sort_by(|&a, &b| ray_order(&fx.shapes[items[a].shape], &fx.shapes[items[b].shape]));
        if ray != orders[0] {
            orders.push(ray);
        }
        orders
    }

    /// The bins there are filled the `fill` way; if something is left, the rest onto new nodes
    /// shape by shape, and (when `scoring`) node by node for the remaining mix.
    fn fill_then_open(&self, fill: Fill, items: &[Item], scoring: bool) -> Vec<Way<'a>> {
        let mut base = self.clone();
        let got: Vec<u64> = match fill {
            Fill::FirstFit => items
                .iter()
                .map(|&Item { shape, count, unit }| base.place_bulk(shape, count, unit))
                .collect(),
            Fill::Scored => base.fill_scored(items),
            Fill::BestFirst => base.fill_best_first(items),
        };
        if got.iter().all(|&r| r == 0) {
            return vec![Way {
                packer: base,
                left: got,
            }];
        }
        let rest: Vec<Item> = items
            .iter()
            .zip(&got)
            .map(|(&item, &count)| Item { count, ..item })
            .collect();
        let mut by_shape = base.clone();
        let by_shape_left: Vec<u64> = rest
            .iter()
            .map(|&Item { shape, count, unit }| by_shape.place_tasks(shape, count, unit))
            .collect();
        let mut ways = vec![Way {
            packer: by_shape,
            left: by_shape_left,
        }];
        if scoring {
            let mixed_left = base.open_mixed(&rest);
            ways.push(Way {
                packer: base,
                left: mixed_left,
            });
        }
        ways
    }

    /// Fills the bins there are bin by bin, in the order of how well each would be used by
    /// what is left of the items ([`simulate_fill`], best first): each takes as many of each
    /// item, in order, as it holds. Returns what is left of each item.
    fn fill_scored(&mut self, items: &[Item]) -> Vec<u64> {
        let fx = self.fx;
        let mut left: Vec<u64> = items.iter().map(|i| i.count).collect();
        let scores: Vec<Option<Score>> = self
            .groups
            .iter()
            .map(|g| simulate_fill(fx, &Bin::of(g), false, false, items, &left).map(|f| f.score))
            .collect();
        let mut order: Vec<usize> = (0..self.groups.len())
            .filter(|&i| scores[i].is_some())
            .collect();
        order.sort_by(|&a, &b| scores[b].cmp(&scores[a]).then(a.cmp(&b)));
        let mut j = 0;
        while j < order.len() && left.iter().any(|&r| r > 0) {
            let i = order[j];
            let before = self.groups.len();
            for (k, item) in items.iter().enumerate() {
                if left[k] > 0 {
                    left[k] = self.fill(i, item.shape, left[k], item.unit);
                }
            }
            // Bins split off the group (not filled) come after the others.
            order.extend(before..self.groups.len());
            j += 1;
        }
        left
    }

    /// Fills the bins there are one at a time, like Ray's scheduler: each time the bin that,
    /// filled first fit with what is left of the items, scores best ([`simulate_fill`]; the
    /// first on a tie). Scores are kept in a heap and worked out again only for the bin on top
    /// (lazy greedy): taking items rarely improves another bin's score, and this keeps the fill
    /// near `O(bins log bins)` instead of scoring every bin after every pick. Returns what is
    /// left of each item.
    fn fill_best_first(&mut self, items: &[Item]) -> Vec<u64> {
        use std::collections::BinaryHeap;
        let fx = self.fx;
        let mut left: Vec<u64> = items.iter().map(|i| i.count).collect();
        let score_of = |p: &Packer, i: usize, left: &[u64]| {
            simulate_fill(fx, &Bin::of(&p.groups[i]), false, false, items, left)
        };
        let mut heap: BinaryHeap<(Score, std::cmp::Reverse<usize>)> = (0..self.groups.len())
            .filter_map(|i| score_of(self, i, &left).map(|f| (f.score, std::cmp::Reverse(i))))
            .collect();
        while left.iter().any(|&r| r > 0) {
            let Some((_, std::cmp::Reverse(i))) = heap.pop() else {
                break;
            };
            let Some(BinFill { score, takes }) = score_of(self, i, &left) else {
                continue; // holds none of what is left, now or later
            };
            if heap.peek().is_some_and(|top| top.0 > score) {
                heap.push((score, std::cmp::Reverse(i)));
                continue;
            }
            // This bin is done; the other bins of its group, if any, are a group of their own.
            for j in self.take_scored(i, items, &takes, &mut left) {
                if let Some(f) = score_of(self, j, &left) {
                    heap.push((f.score, std::cmp::Reverse(j)));
                }
            }
        }
        left
    }

    /// Opens new nodes for the items one type at a time, like Ray's scheduler does: of the
    /// types that may get jobs, the one a node of which, filled first fit with the remaining
    /// items (in their order), is best used: not a GPU node for no GPU work, then the highest
    /// minimum and then mean utilization over the resources it has, then the first in the
    /// config. As many identical nodes as the same fill repeats are opened at once. Returns
    /// what is left of each item.
    fn open_mixed(&mut self, items: &[Item]) -> Vec<u64> {
        let fx = self.fx;
        let mut left: Vec<u64> = items.iter().map(|i| i.count).collect();
        while left.iter().any(|&r| r > 0) && self.global_room > 0 {
            let mut best: Option<(MixedFill, usize)> = None;
            for t in 0..fx.type_cap.len() {
                if !fx.type_ok[t] || self.type_room[t] == 0 {
                    continue;
                }
                if let Some(fill) = self.mixed_fill(t, items, &left)
                    && best.as_ref().is_none_or(|(b, _)| fill.beats(b))
                {
                    best = Some((fill, t));
                }
            }
            let Some((fill, t)) = best else {
                break;
            };
            if self.open_filled(t, items, &fill.takes, &mut left).is_none() {
                break;
            }
        }
        left
    }

    /// One new node of type `t` filled first fit with what is left of the items, in their
    /// order; `None` if it takes none.
    fn mixed_fill(&self, t: usize, items: &[Item], left: &[u64]) -> Option<MixedFill> {
        let fx = self.fx;
        let mut cap = fx.type_cap[t].clone();
        let mut takes = vec![0u64; items.len()];
        let mut any = false;
        let mut gpu_work = false;
        for (k, item) in items.iter().enumerate() {
            if left[k] == 0 {
                continue;
            }
            let s = &fx.shapes[item.shape];
            let n = fit(&cap, s).min(left[k]);
            if n == 0 {
                continue;
            }
            for &i in &s.nz {
                cap[i] -= n * s.v[i];
            }
            takes[k] = n;
            any = true;
            gpu_work |= s.gpu;
        }
        if !any {
            return None;
        }
        let full = &fx.type_cap[t];
        let utils: Vec<f64> = (0..full.len())
            .filter(|&i| full[i] > 0)
            .map(|i| (full[i] - cap[i]) as f64 / full[i] as f64)
            .collect();
        Some(MixedFill {
            gpu_ok: !fx.type_gpu[t] || gpu_work,
            min: utils.iter().copied().fold(f64::INFINITY, f64::min),
            mean: utils.iter().sum::<f64>() / utils.len().max(1) as f64,
            takes,
        })
    }
}

/// One way's plan: the packer after it, and what it left of each item.
struct Way<'a> {
    packer: Packer<'a>,
    left: Vec<u64>,
}

impl<'a> Way<'a> {
    /// `left` in the items' order, from a way that packed them in `order`.
    fn unordered(self, order: &[usize]) -> Way<'a> {
        let mut left = vec![0u64; order.len()];
        for (j, r) in self.left.into_iter().enumerate() {
            left[order[j]] = r;
        }
        Way {
            packer: self.packer,
            left,
        }
    }

    /// Keeps this way in `best` if it places more, or as much with fewer new nodes.
    fn consider(self, best: &mut Option<Way<'a>>) {
        let key = |w: &Way| (w.left.iter().sum::<u64>(), w.packer.next_ordinal);
        if best.as_ref().is_none_or(|b| key(&self) < key(b)) {
            *best = Some(self);
        }
    }
}

/// How well one new node of a type is used, filled first fit with the remaining items.
struct MixedFill {
    /// Not a GPU node, or GPU work on it.
    gpu_ok: bool,
    /// The lowest and the mean utilization over the resources the node has.
    min: f64,
    mean: f64,
    /// What the node takes of each item.
    takes: Vec<u64>,
}

impl MixedFill {
    fn beats(&self, other: &MixedFill) -> bool {
        self.gpu_ok
            .cmp(&other.gpu_ok)
            .then(self.min.total_cmp(&other.min))
            .then(self.mean.total_cmp(&other.mean))
            == std::cmp::Ordering::Greater
    }
}
