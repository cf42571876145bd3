//! `sh` — source hashing (IPVS `ip_vs_sh.c`): the client address (and, with `sh-port`, the
//! client port) hashed into a table of 256 buckets, each naming a dest, so a client keeps
//! reaching the same dest while the dest set is unchanged.
//!
//! Buckets are shared out in proportion to the weights (largest remainder, at least one bucket
//! per weighted dest while there are no more than 256 of them) and laid out the way IPVS lays
//! them out: a run of buckets per dest, dest after dest, round and round (runs of weight ÷ gcd
//! here, of weight in IPVS, whose shares drift from the weights when they do not divide 256).
//! Unlike IPVS, a weight-0 dest holds no bucket, so quiescing a dest (weight 0, then
//! [`Scheduler::update`]) sends its new clients elsewhere instead of refusing them.
//! The hashed dest is used if usable; otherwise, with `sh-fallback`, the flow is rehashed
//! (up to 256 rounds, then the dests are scanned) until a usable one turns up; without it the
//! connection is refused (`None`).

use super::hash::hash_addr_port;
use super::{DestIds, NO_DEST, SchedFlow, Scheduler, SlotTable, weight_gcd};
use crate::types::{Dest, SchedFlags, SchedulerKind};

/// Number of buckets of the `sh` and `dh` tables (IPVS's `IP_VS_SH_TAB_SIZE`).
pub const BUCKETS: usize = 256;

/// Source-hashing scheduler state: flags, seed and the bucket table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceHash {
    /// `sh-fallback` and `sh-port`.
    flags: SchedFlags,
    /// Hash seed.
    seed: u64,
    /// The 256 buckets.
    table: SlotTable,
}

impl SourceHash {
    /// A source-hashing scheduler with the service's flags and the director's hash seed.
    pub fn new(flags: SchedFlags, seed: u64) -> SourceHash {
        SourceHash {
            flags,
            seed,
            table: SlotTable::default(),
        }
    }

    /// Index of the dest each of the 256 buckets names (`None` for an empty bucket), in
    /// bucket order, as built by the last update.
    pub fn buckets(&self) -> Vec<Option<usize>> {
        self.table.view()
    }
}

impl Scheduler for SourceHash {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Sh
    }

    fn update(&mut self, dests: &[Dest]) {
        self.table = weighted_buckets(dests);
    }

    fn schedule(&mut self, dests: &[Dest], flow: &SchedFlow) -> Option<usize> {
        let (seed, addr) = (self.seed, flow.caddr);
        let port = if self.flags.port { flow.cport } else { 0 };
        self.table.lookup_fresh(
            dests,
            self.flags.fallback,
            |round| hash_addr_port(seed, addr, port, round),
            weighted_buckets,
        )
    }
}

/// The 256-bucket table for `dests`, buckets in proportion to the weights.
pub(super) fn weighted_buckets(dests: &[Dest]) -> SlotTable {
    let mut slots = vec![NO_DEST; BUCKETS];
    let mut left = bucket_quotas(dests);
    let g = weight_gcd(dests).max(1);
    // Runs of weight ÷ gcd buckets per dest, round and round, until every quota is placed.
    let mut placed = 0;
    while placed < BUCKETS {
        let before = placed;
        for (i, (q, d)) in left.iter_mut().zip(dests).enumerate() {
            let run = (*q).min((d.weight / g).max(1) as usize);
            for slot in slots.iter_mut().skip(placed).take(run) {
                *slot = i as u32;
            }
            *q -= run;
            placed += run;
        }
        if placed == before {
            break;
        }
    }
    SlotTable {
        slots,
        ids: DestIds::of(dests),
    }
}

/// How many of the 256 buckets each dest gets: in proportion to the weights by largest
/// remainder (ties to the first dest), then, while there are no more weighted dests than
/// buckets, one bucket for every weighted dest left without one, taken from the largest share.
fn bucket_quotas(dests: &[Dest]) -> Vec<usize> {
    let mut quotas = vec![0usize; dests.len()];
    let total: u64 = dests.iter().map(|d| u64::from(d.weight)).sum();
    if total == 0 {
        return quotas;
    }
    let mut free = BUCKETS;
    let mut remainders = Vec::with_capacity(dests.len());
    for (i, (q, d)) in quotas.iter_mut().zip(dests).enumerate() {
        let exact = u64::from(d.weight) * BUCKETS as u64;
        *q = (exact / total) as usize;
        free -= *q;
        remainders.push((exact % total, i));
    }
    // Largest remainders first; the sort is stable, so ties keep dest order.
    remainders.sort_by_key(|&(r, _)| core::cmp::Reverse(r));
    for &(_, i) in remainders.iter().take(free) {
        quotas[i] += 1;
    }
    let weighted = dests.iter().filter(|d| d.weight > 0).count();
    if weighted <= BUCKETS {
        for i in 0..dests.len() {
            if dests[i].weight > 0 && quotas[i] == 0 {
                // Some share holds two or more: `weighted` dests share 256 buckets and
                // this one holds none.
                let Some(largest) = (0..quotas.len()).max_by_key(|&j| (quotas[j], usize::MAX - j))
                else {
                    break;
                };
                if quotas[largest] < 2 {
                    break;
                }
                quotas[largest] -= 1;
                quotas[i] = 1;
            }
        }
    }
    quotas
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::FwdMethod;
    use core::net::{IpAddr, Ipv4Addr};

    fn dests(weights: &[u32]) -> Vec<Dest> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                Dest::new(
                    IpAddr::V4(Ipv4Addr::from_bits(0x0a00_0001 + i as u32)),
                    80,
                    FwdMethod::Masq,
                    w,
                )
            })
            .collect()
    }

    fn counts(table: &SlotTable, n: usize) -> Vec<usize> {
        let mut c = vec![0; n];
        for &s in &table.slots {
            c[s as usize] += 1;
        }
        c
    }

    #[test]
    fn quotas_follow_weights() {
        assert_eq!(bucket_quotas(&dests(&[1, 1, 2])), vec![64, 64, 128]);
        assert_eq!(bucket_quotas(&dests(&[1, 2])), vec![85, 171]);
        assert_eq!(bucket_quotas(&dests(&[0, 5, 0])), vec![0, 256, 0]);
        assert_eq!(bucket_quotas(&dests(&[0, 0])), vec![0, 0]);
        // A huge weight does not starve a small one.
        assert_eq!(bucket_quotas(&dests(&[65535, 1])), vec![255, 1]);
        let many = dests(&vec![1; 300]);
        assert_eq!(bucket_quotas(&many).iter().sum::<usize>(), 256);
    }

    #[test]
    fn layout_is_ipvs_runs() {
        let t = weighted_buckets(&dests(&[1, 1, 2]));
        assert_eq!(&t.slots[..8], &[0, 1, 2, 2, 0, 1, 2, 2]);
        assert_eq!(counts(&t, 3), vec![64, 64, 128]);
        let t = weighted_buckets(&dests(&[2, 0, 4]));
        assert_eq!(&t.slots[..6], &[0, 2, 2, 0, 2, 2]);
        assert_eq!(counts(&t, 3), vec![85, 0, 171]);
    }

    #[test]
    fn no_weight_no_buckets() {
        let t = weighted_buckets(&dests(&[0, 0]));
        assert!(t.slots.iter().all(|&s| s == NO_DEST));
        let d = dests(&[0, 0]);
        assert_eq!(
            t.lookup(&d, true, |r| hash_addr_port(1, d[0].addr, 0, r)),
            Ok(None)
        );
    }
}
