//! Placement groups: all bundles or none, each strategy.

use super::packing::Packer;
use super::resources::{Shape, ray_order, sum_vectors};
use super::{GangItem, Strategy};

impl<'a> Packer<'a> {
    /// Places one placement group, all bundles or none. On failure, returns the shape that
    /// found no room.
    pub(super) fn place_gang(&mut self, gang: &GangItem, unit: u32) -> Result<(), usize> {
        self.begin();
        let result = self.try_gang(gang, unit);
        match result {
            Ok(()) => self.commit(),
            Err(_) => self.rollback(),
        }
        result
    }

    /// Places one placement group the way Ray's scheduler does (`_sched_gang_resource_requests`):
    /// `STRICT_PACK` as one bundle (the sum), `STRICT_SPREAD` one bundle per node, `PACK` and
    /// `SPREAD` as plain bundles; existing bins best scoring first, then the best scoring new
    /// nodes ([`Packer::place_like_ray`]). All bundles or none; on failure, returns a shape that
    /// found no room.
    pub(super) fn place_gang_like_ray(&mut self, gang: &GangItem, unit: u32) -> Result<(), usize> {
        let fx = self.fx;
        let mut items: Vec<(usize, u64, u32)> = Vec::new();
        if gang.strategy == Strategy::StrictPack {
            items.push((gang.sum, 1, unit));
        } else {
            let mut shapes = gang.bundles.clone();
            shapes.sort_by(|&a, &b| ray_order(&fx.shapes[a], &fx.shapes[b]).then(a.cmp(&b)));
            for sid in shapes {
                match items.last_mut() {
                    Some(last) if last.0 == sid => last.1 += 1,
                    _ => items.push((sid, 1, unit)),
                }
            }
        }
        self.begin();
        let left = self.place_like_ray(&items, gang.strategy == Strategy::StrictSpread);
        match items.iter().zip(&left).find(|(_, l)| **l > 0) {
            None => {
                self.commit();
                Ok(())
            }
            Some((item, _)) => {
                self.rollback();
                Err(item.0)
            }
        }
    }

    fn try_gang(&mut self, gang: &GangItem, unit: u32) -> Result<(), usize> {
        let fx = self.fx;
        match gang.strategy {
            Strategy::StrictPack => {
                let s = &fx.shapes[gang.sum];
                let g = match self.find_one(gang.sum, |_| true) {
                    Some(g) => g,
                    None => self.open_for(s, 1).ok_or(gang.sum)?,
                };
                self.take(g, s, 1, 1, unit);
            }
            Strategy::StrictSpread => {
                let mut used: Vec<usize> = Vec::new();
                for &b in &gang.bundles {
                    let s = &fx.shapes[b];
                    let g = match self.find_one(b, |i| !used.contains(&i)) {
                        Some(g) => g,
                        None => self.open_for(s, 1).ok_or(b)?,
                    };
                    self.take(g, s, 1, 1, unit);
                    used.push(g);
                }
            }
            Strategy::Pack | Strategy::Spread => {
                let spread = gang.strategy == Strategy::Spread;
                let mut used: Vec<usize> = Vec::new();
                for (k, &b) in gang.bundles.iter().enumerate() {
                    let s = &fx.shapes[b];
                    let mut g = if spread {
                        self.find_one(b, |i| !used.contains(&i))
                    } else {
                        None
                    };
                    if g.is_none() {
                        g = self.find_one(b, |_| true);
                    }
                    if g.is_none() {
                        g = if spread {
                            self.open_for(s, 1)
                        } else {
                            self.open_for_pack(&gang.bundles[k..])
                        };
                    }
                    let g = g.ok_or(b)?;
                    self.take(g, s, 1, 1, unit);
                    used.push(g);
                }
            }
        }
        Ok(())
    }

    /// A new node for the first of `rest` (a `PACK` group's unplaced bundles): of a type that
    /// holds them all if there is one, else the best for the first bundle.
    fn open_for_pack(&mut self, rest: &[usize]) -> Option<usize> {
        let fx = self.fx;
        let first = &fx.shapes[rest[0]];
        if rest.len() > 1 {
            let mut v = first.v.clone();
            for &b in &rest[1..] {
                v = sum_vectors(&v, &fx.shapes[b].v);
            }
            let nz: Vec<usize> = (0..v.len()).filter(|&i| v[i] > 0).collect();
            let sum = Shape {
                gpu: rest.iter().any(|&b| fx.shapes[b].gpu),
                size: 0.0,
                v,
                nz,
            };
            if let Some(t) = self.best_type(&sum, 1) {
                return self.open(t, 1);
            }
        }
        let same = rest.iter().filter(|&&b| b == rest[0]).count() as u64;
        self.open_for(first, same)
    }
}
