//! `dh` — destination hashing (IPVS `ip_vs_dh.c`): the packet's destination address hashed
//! into a table of 256 buckets of dests. For a virtual service that address is the VIP, so
//! every flow of one service lands on one dest; `dh` is meant for transparent cache clusters,
//! where a firewall mark service catches traffic to many origin addresses and each origin
//! should always be served by the same cache.
//!
//! The table is `sh`'s (buckets in proportion to the weights, none for weight 0; IPVS's `dh`
//! ignores weights other than 0). An unusable hashed dest refuses the connection (`None`):
//! `dh` has no fallback flag.

use super::hash::hash_addr_port;
use super::sh::weighted_buckets;
use super::{SchedFlow, Scheduler, SlotTable};
use crate::types::{Dest, SchedulerKind};

/// Destination-hashing scheduler state: seed and the bucket table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestHash {
    /// Hash seed.
    seed: u64,
    /// The 256 buckets.
    table: SlotTable,
}

impl DestHash {
    /// A destination-hashing scheduler with the director's hash seed.
    pub fn new(seed: u64) -> DestHash {
        DestHash {
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

impl Scheduler for DestHash {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Dh
    }

    fn update(&mut self, dests: &[Dest]) {
        self.table = weighted_buckets(dests);
    }

    fn schedule(&mut self, dests: &[Dest], flow: &SchedFlow) -> Option<usize> {
        let (seed, addr) = (self.seed, flow.vaddr);
        self.table.lookup_fresh(
            dests,
            false,
            |round| hash_addr_port(seed, addr, 0, round),
            weighted_buckets,
        )
    }
}
