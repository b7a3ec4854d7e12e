//! Placement groups: all bundles or none. `STRICT_PACK` is one bundle (the sum);
//! `STRICT_SPREAD` puts every bundle on a different node (existing, pending or new); `PACK`
//! fills like tasks and launches one node for all remaining bundles when a type holds them;
//! `SPREAD` prefers a node the group does not use yet, else any node that fits, and only
//! launches a node when nothing fits (it never launches extra nodes just to spread).

use std::collections::HashMap;

use super::Strategy;
use super::merge::GangItem;
use super::packing::{Item, Packer};
use super::resources::{Shape, ray_order, sum_vectors};

/// `STRICT_PACK` and `STRICT_SPREAD`: placed first, and by Ray first too.
pub(super) fn is_strict(s: Strategy) -> bool {
    matches!(s, Strategy::StrictPack | Strategy::StrictSpread)
}

/// Places every input placement group of `gangs` on `p`, all bundles or none: in the order of
/// `gangs`, the way [`Packer::place_gang`] does, or (`like_ray`) in Ray's order and Ray's way
/// ([`Packer::place_gang_like_ray`]). Returns why each group that found no room did not, by
/// input index.
pub(super) fn place_gangs(
    p: &mut Packer,
    gangs: &[GangItem],
    like_ray: bool,
) -> HashMap<usize, String> {
    let fx = p.fx;
    let mut gang_unmet: HashMap<usize, String> = HashMap::new(); // input index -> why
    // (gang, input): ours in the order above; Ray's by constraints then bundles (more
    // first: strict groups with more bundles first), then as they came.
    let mut order: Vec<(usize, usize)> = gangs
        .iter()
        .enumerate()
        .flat_map(|(g, gang)| gang.inputs.iter().map(move |&i| (g, i)))
        .collect();
    if like_ray {
        let ray_key = |&(g, i): &(usize, usize)| {
            let n = gangs[g].bundles.len();
            let constraints = if is_strict(gangs[g].strategy) { n } else { 0 };
            (std::cmp::Reverse((constraints, n)), i)
        };
        order.sort_by_key(ray_key);
    }
    // Identical groups after one that found no room find none either.
    let mut failed: HashMap<usize, String> = HashMap::new();
    for (g, i) in order {
        let gang = &gangs[g];
        if let Some(why) = failed.get(&g) {
            gang_unmet.insert(i, why.clone());
            continue;
        }
        let placed = if like_ray {
            p.place_gang_like_ray(gang, i as u32)
        } else {
            p.place_gang(gang, i as u32)
        };
        if let Err(sid) = placed {
            let why = p.why(&fx.shapes[sid]);
            gang_unmet.insert(i, why.clone());
            failed.insert(g, why);
        }
    }
    gang_unmet
}

impl<'a> Packer<'a> {
    /// Places one placement group, all bundles or none. On failure, returns the shape that
    /// found no room.
    fn place_gang(&mut self, gang: &GangItem, unit: u32) -> Result<(), usize> {
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
    fn place_gang_like_ray(&mut self, gang: &GangItem, unit: u32) -> Result<(), usize> {
        let fx = self.fx;
        let mut items: Vec<Item> = Vec::new();
        if gang.strategy == Strategy::StrictPack {
            items.push(Item {
                shape: gang.sum,
                count: 1,
                unit,
            });
        } else {
            let mut shapes = gang.bundles.clone();
            shapes.sort_by(|&a, &b| ray_order(&fx.shapes[a], &fx.shapes[b]).then(a.cmp(&b)));
            for sid in shapes {
                match items.last_mut() {
                    Some(last) if last.shape == sid => last.count += 1,
                    _ => items.push(Item {
                        shape: sid,
                        count: 1,
                        unit,
                    }),
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
                Err(item.shape)
            }
        }
    }

    fn try_gang(&mut self, gang: &GangItem, unit: u32) -> Result<(), usize> {
        match gang.strategy {
            Strategy::StrictPack => self.try_strict_pack(gang, unit),
            Strategy::StrictSpread => self.try_strict_spread(gang, unit),
            Strategy::Pack | Strategy::Spread => self.try_pack_or_spread(gang, unit),
        }
    }

    /// All bundles as one (their sum), on one bin.
    fn try_strict_pack(&mut self, gang: &GangItem, unit: u32) -> Result<(), usize> {
        let s = &self.fx.shapes[gang.sum];
        let g = match self.find_one(gang.sum, |_| true) {
            Some(g) => g,
            None => self.open_for(s, 1).ok_or(gang.sum)?,
        };
        self.take(g, s, 1, 1, unit);
        Ok(())
    }

    /// Every bundle on a different bin.
    fn try_strict_spread(&mut self, gang: &GangItem, unit: u32) -> Result<(), usize> {
        let fx = self.fx;
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
        Ok(())
    }

    /// Bundle by bundle: `SPREAD` onto a bin the group does not use yet if one fits, else (and
    /// for `PACK`) any bin that fits, else a new node.
    fn try_pack_or_spread(&mut self, gang: &GangItem, unit: u32) -> Result<(), usize> {
        let fx = self.fx;
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
