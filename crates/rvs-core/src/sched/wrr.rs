//! `wrr` — weighted round robin, IPVS's interleaved form (`ip_vs_wrr.c`).
//!
//! A current weight `cw` walks down from the maximum weight in steps of the gcd of the weights;
//! each pass over the dests (in order) picks every dest whose weight is at least `cw`. For
//! weights A=4, B=3, C=2 one cycle is `A A B A B C A B C`: the heaviest dest starts first and
//! lighter ones join as `cw` falls, so connections interleave instead of arriving in bursts.
//!
//! Following IPVS, the top of the walk is `max − (gcd − 1)` rather than `max`, `update` puts the
//! position back to the first dest and keeps `cw` (moved onto the new walk) unless it no longer
//! fits, and overloaded dests are skipped. Passes that could not pick anything (every dest
//! heavy enough for `cw` is overloaded) are skipped in one step instead of one pass per gcd:
//! the same dest IPVS would pick, in at most two passes over the dests.

use super::{SchedFlow, Scheduler, weight_gcd};
use crate::types::{Dest, SchedulerKind};

/// Weighted-round-robin scheduler state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightedRoundRobin {
    /// Index of the dest chosen last; `None` = before the first dest.
    cl: Option<usize>,
    /// Current weight; dests with at least this weight are picked in this pass.
    cw: u32,
    /// Top of the walk: maximum weight − (gcd − 1); 0 when no dest has a weight.
    mw: u32,
    /// Step: gcd of the positive weights (1 when there are none).
    di: u32,
    /// Number of dests the state was computed for.
    n: usize,
}

impl WeightedRoundRobin {
    /// A weighted-round-robin scheduler; [`Scheduler::update`] computes its walk.
    pub const fn new() -> WeightedRoundRobin {
        WeightedRoundRobin {
            cl: None,
            cw: 0,
            mw: 0,
            di: 1,
            n: 0,
        }
    }

    /// Recompute gcd and maximum weight, restart from the first dest.
    fn recompute(&mut self, dests: &[Dest]) {
        let g = weight_gcd(dests);
        let max = dests.iter().map(|d| d.weight).max().unwrap_or(0);
        self.di = g.max(1);
        // `max` is a multiple of `g`, so `max ≥ di` whenever `max > 0`.
        self.mw = max.saturating_sub(self.di - 1);
        self.n = dests.len();
        self.cl = None;
        if self.cw == 0 || self.cw > self.mw {
            self.cw = self.mw;
        } else if self.di > 1 {
            // Back onto the walk (values ≡ 1 mod gcd) at or just above where it was.
            self.cw = (self.cw / self.di) * self.di + 1;
        }
    }

    /// The largest value of the walk (`mw − k·di`, k ≥ 0) not above `w`; 0 when none is.
    fn walk_floor(&self, w: u32) -> u32 {
        if w >= self.mw {
            return self.mw;
        }
        let steps = (self.mw - w).div_ceil(self.di);
        self.mw.saturating_sub(steps.saturating_mul(self.di))
    }

    /// The IPVS walk from the current position; `None` when it cannot reach a usable dest.
    fn pick(&mut self, dests: &[Dest]) -> Option<usize> {
        if self.mw == 0 || self.cw == 0 {
            return None;
        }
        let n = dests.len();
        let mut i = match self.cl {
            Some(c) if c < n => c + 1,
            _ => 0,
        };
        // The first pass continues after the last choice; the second starts from the first dest
        // with a `cw` that the heaviest usable dest meets, so it always picks one.
        for _pass in 0..2 {
            if let Some(found) =
                (i..n).find(|&j| !dests[j].overloaded && dests[j].weight >= self.cw)
            {
                self.cl = Some(found);
                return Some(found);
            }
            i = 0;
            let heaviest = dests
                .iter()
                .filter(|d| d.is_usable())
                .map(|d| d.weight)
                .max()?;
            let mut next = if self.cw > self.di {
                self.cw - self.di
            } else {
                self.mw
            };
            if next > heaviest {
                next = self.walk_floor(heaviest);
            }
            if next == 0 {
                return None;
            }
            self.cw = next;
        }
        None
    }
}

impl Default for WeightedRoundRobin {
    fn default() -> WeightedRoundRobin {
        WeightedRoundRobin::new()
    }
}

impl Scheduler for WeightedRoundRobin {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Wrr
    }

    fn update(&mut self, dests: &[Dest]) {
        self.recompute(dests);
    }

    fn schedule(&mut self, dests: &[Dest], _flow: &SchedFlow) -> Option<usize> {
        if dests.len() != self.n {
            self.recompute(dests);
        }
        if let Some(i) = self.pick(dests) {
            return Some(i);
        }
        // Weights changed without `update` can leave the walk unable to reach a usable dest.
        if dests.iter().any(Dest::is_usable) {
            self.recompute(dests);
            return self.pick(dests);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::FwdMethod;
    use core::net::{IpAddr, Ipv4Addr};
    use proptest::prelude::*;

    /// IPVS's walk without the pass skipping: one pass per step of `cw`.
    #[derive(Debug)]
    struct Reference {
        cl: Option<usize>,
        cw: i64,
        mw: i64,
        di: i64,
    }

    impl Reference {
        fn new(dests: &[Dest]) -> Reference {
            let di = i64::from(weight_gcd(dests).max(1));
            let max = i64::from(dests.iter().map(|d| d.weight).max().unwrap_or(0));
            let mw = (max - (di - 1)).max(0);
            Reference {
                cl: None,
                cw: mw,
                mw,
                di,
            }
        }

        fn pick(&mut self, dests: &[Dest]) -> Option<usize> {
            if self.mw == 0 || !dests.iter().any(Dest::is_usable) {
                return None;
            }
            let mut i = self.cl.map_or(0, |c| c + 1);
            loop {
                while i < dests.len() {
                    let d = &dests[i];
                    if !d.overloaded && i64::from(d.weight) >= self.cw {
                        self.cl = Some(i);
                        return Some(i);
                    }
                    i += 1;
                }
                i = 0;
                self.cw -= self.di;
                if self.cw <= 0 {
                    self.cw = self.mw;
                }
            }
        }
    }

    fn dest(i: usize, weight: u32, overloaded: bool) -> Dest {
        let mut d = Dest::new(
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, i as u8)),
            80,
            FwdMethod::Masq,
            weight,
        );
        d.overloaded = overloaded;
        d
    }

    fn flow() -> SchedFlow {
        let a = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        SchedFlow {
            protocol: 6,
            caddr: a,
            cport: 1000,
            vaddr: a,
            vport: 80,
        }
    }

    proptest! {
        /// The pass skipping picks exactly what IPVS's one-pass-per-step walk picks, including
        /// when overload flags change between calls.
        #[test]
        fn same_sequence_as_ipvs_walk(
            spec in proptest::collection::vec((0u32..7, proptest::bool::weighted(0.3)), 1..6),
            flips in proptest::collection::vec(0usize..8, 0..40),
        ) {
            let mut dests: Vec<Dest> =
                spec.iter().enumerate().map(|(i, &(w, o))| dest(i, w, o)).collect();
            let mut ours = WeightedRoundRobin::new();
            ours.update(&dests);
            let mut reference = Reference::new(&dests);
            for (step, flip) in flips.iter().enumerate() {
                if let Some(d) = dests.get_mut(*flip) {
                    d.overloaded = !d.overloaded;
                }
                for _ in 0..step % 5 + 1 {
                    prop_assert_eq!(ours.schedule(&dests, &flow()), reference.pick(&dests));
                }
            }
        }
    }
}
