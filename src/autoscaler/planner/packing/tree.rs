//! The packer's segment tree over its groups: finding the first group that holds a shape
//! descends only into subtrees that might, with no scan over every group.

use super::Packer;
use crate::autoscaler::planner::resources::Shape;

impl<'a> Packer<'a> {
    /// Builds the tree again, with room for at least twice the groups there are.
    pub(super) fn rebuild(&mut self) {
        let w = self.dims + 1;
        self.leaves = (self.groups.len() * 2).max(16).next_power_of_two();
        self.tree = vec![0; 2 * self.leaves * w];
        self.any_gpu = self.groups.iter().any(|g| g.gpu);
        for i in 0..self.groups.len() {
            self.set_leaf(i);
        }
        for node in (1..self.leaves).rev() {
            self.pull(node);
        }
    }

    /// Copies group `i` (or zeros, if there is none) into its leaf.
    pub(super) fn set_leaf(&mut self, i: usize) {
        let (d, w) = (self.dims, self.dims + 1);
        let at = (self.leaves + i) * w;
        match self.groups.get(i) {
            Some(g) => {
                self.tree[at..at + d].copy_from_slice(&g.cap);
                self.tree[at + d] = u64::from(!g.gpu);
            }
            None => self.tree[at..at + w].fill(0),
        }
    }

    pub(super) fn pull(&mut self, node: usize) {
        let w = self.dims + 1;
        for k in 0..w {
            self.tree[node * w + k] =
                self.tree[2 * node * w + k].max(self.tree[(2 * node + 1) * w + k]);
        }
    }

    /// Group `i` changed (or appeared, or went: `None`).
    pub(super) fn update(&mut self, i: usize) {
        if i >= self.leaves {
            self.rebuild();
            return;
        }
        if self.groups.get(i).is_some_and(|g| g.gpu) {
            self.any_gpu = true;
        }
        self.set_leaf(i);
        let mut node = (self.leaves + i) / 2;
        while node >= 1 {
            self.pull(node);
            node /= 2;
        }
    }

    /// The first group at or after `from` with a bin that holds one bundle of `s`; with
    /// `no_gpu`, only groups that are not GPU nodes.
    pub(super) fn first_fit(&self, s: &Shape, from: usize, no_gpu: bool) -> Option<usize> {
        if s.nz.is_empty() && !no_gpu {
            return (from < self.groups.len()).then_some(from);
        }
        self.search(1, 0, self.leaves, from, s, no_gpu)
    }

    pub(super) fn search(
        &self,
        node: usize,
        lo: usize,
        hi: usize,
        from: usize,
        s: &Shape,
        no_gpu: bool,
    ) -> Option<usize> {
        if hi <= from || lo >= self.groups.len() {
            return None;
        }
        let at = node * (self.dims + 1);
        if s.nz.iter().any(|&k| self.tree[at + k] < s.v[k])
            || (no_gpu && self.tree[at + self.dims] == 0)
        {
            return None;
        }
        if hi - lo == 1 {
            return Some(lo);
        }
        let mid = (lo + hi) / 2;
        self.search(2 * node, lo, mid, from, s, no_gpu)
            .or_else(|| self.search(2 * node + 1, mid, hi, from, s, no_gpu))
    }
}
