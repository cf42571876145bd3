//! `mh` — Maglev hashing (Eisenbud et al., "Maglev: A Fast and Reliable Software Network Load
//! Balancer", NSDI '16, §3.4; IPVS `ip_vs_mh.c`).
//!
//! Each dest has a preference list over the slots of a lookup table — a permutation given by
//! an `offset` and a `skip` hashed from its address and port — and the dests take turns claiming
//! their most preferred free slot until the table is full. A flow's client address (and, with
//! `mh-port`, its port) hashed modulo the table size picks the slot. Because preference lists
//! do not depend on the other dests, removing one dest moves little more than its own flows
//! (about 1/N of all flows) and the rest stay where they were.
//!
//! - The table size is a prime (so every `skip` in 1..size walks all slots): the smallest of
//!   [`PRIMES`] at least 100 × the number of dests and at least [`MIN_TABLE_SIZE`] (4093,
//!   IPVS's default), the largest one above 1310 dests. The size is a function of the dest
//!   count alone, so directors with the same dests and seed agree; when a change crosses a step
//!   of the list (41, 82, 164, ... dests) every flow is rehashed, within a step only ~1/N move.
//! - Weights: a dest with weight `w` takes `w / gcd` turns per round, shifted right so that no
//!   dest takes more than 63 turns (as IPVS does): with at most 63 turns per dest a round never
//!   outgrows a table of 100 slots per dest, so every weighted dest gets slots. Weight-0 dests
//!   take no turns (IPVS keeps a quiesced dest's slots by remembering its last weight; `Dest`
//!   does not carry one).
//! - The hashed dest is used if usable; otherwise with `mh-fallback` the flow is rehashed
//!   (up to 256 rounds, then the dests are scanned) until a usable dest turns up, and without
//!   it the connection is refused (`None`).

use super::hash::{hash_addr_port, mix64};
use super::{DestIds, NO_DEST, SchedFlow, Scheduler, SlotTable, weight_gcd};
use crate::types::{Dest, SchedFlags, SchedulerKind};

/// The table sizes `mh` chooses from (IPVS's list): primes, each about twice the previous.
pub const PRIMES: [usize; 10] = [
    251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071,
];

/// Slots the table holds per dest, at least.
const SLOTS_PER_DEST: usize = 100;

/// The smallest table, IPVS's default size (`CONFIG_IP_VS_MH_TAB_INDEX` 12). Maglev's
/// disruption shrinks as slots per dest grow: with 10 equal dests, removing one moves on
/// average 1.24/N of the flows in a 1021-slot table (up to 1.37/N) but 1.11/N in 4093 slots
/// (up to 1.17/N); and up to 40 dests the size never changes, so adding or removing a dest
/// never rehashes every flow.
pub const MIN_TABLE_SIZE: usize = 4093;

/// Bits a dest's turns per round may use (at most 63 turns), IPVS's `IP_VS_MH_TAB_BITS`.
const TURN_BITS: u32 = 6;

/// Maglev-hashing scheduler state: flags, seed and the lookup table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaglevHash {
    /// `mh-fallback` and `mh-port`.
    flags: SchedFlags,
    /// Hash seed.
    seed: u64,
    /// The lookup table.
    table: SlotTable,
}

impl MaglevHash {
    /// A Maglev-hashing scheduler with the service's flags and the director's hash seed.
    pub fn new(flags: SchedFlags, seed: u64) -> MaglevHash {
        MaglevHash {
            flags,
            seed,
            table: SlotTable::default(),
        }
    }

    /// The lookup table size for `dests` dests: the smallest of [`PRIMES`] that is at least
    /// 100 × `dests` and at least [`MIN_TABLE_SIZE`], or the largest.
    pub fn table_size_for(dests: usize) -> usize {
        let wanted = dests.saturating_mul(SLOTS_PER_DEST).max(MIN_TABLE_SIZE);
        PRIMES
            .iter()
            .copied()
            .find(|&p| p >= wanted)
            .unwrap_or(PRIMES[PRIMES.len() - 1])
    }

    /// Size of the current lookup table (0 before the first update).
    pub fn table_size(&self) -> usize {
        self.table.slots.len()
    }

    /// Index of the dest each slot names (`None` for an empty slot), in slot order, as built
    /// by the last update.
    pub fn slots(&self) -> Vec<Option<usize>> {
        self.table.view()
    }
}

impl Scheduler for MaglevHash {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Mh
    }

    fn update(&mut self, dests: &[Dest]) {
        self.table = populate(dests, self.seed);
    }

    fn schedule(&mut self, dests: &[Dest], flow: &SchedFlow) -> Option<usize> {
        let (seed, addr) = (self.seed, flow.caddr);
        let port = if self.flags.port { flow.cport } else { 0 };
        self.table.lookup_fresh(
            dests,
            self.flags.fallback,
            |round| hash_addr_port(seed, addr, port, round),
            |d| populate(d, seed),
        )
    }
}

/// One dest's walk through its preference list.
#[derive(Debug, Clone, Copy)]
struct Walk {
    /// Index of the dest in the slice.
    dest: u32,
    /// The next slot to try (starts at the hashed offset).
    next: usize,
    /// Distance between preferences, 1..size (coprime with the prime size).
    skip: usize,
    /// Slots claimed per round.
    turns: u32,
}

/// Build the lookup table for `dests`: every dest with a weight claims `turns` free slots per
/// round, each the first free one along its preference list, until no slot is free.
fn populate(dests: &[Dest], seed: u64) -> SlotTable {
    populate_sized(dests, seed, MaglevHash::table_size_for(dests.len()))
}

/// [`populate`] with a given (prime) table size.
fn populate_sized(dests: &[Dest], seed: u64, size: usize) -> SlotTable {
    let mut slots = vec![NO_DEST; size];
    let ids = DestIds::of(dests);
    let g = weight_gcd(dests);
    if g == 0 {
        return SlotTable { slots, ids };
    }
    let heaviest = dests.iter().map(|d| d.weight / g).max().unwrap_or(0);
    let shift = (u32::BITS - heaviest.leading_zeros()).saturating_sub(TURN_BITS);
    // Offsets and skips come from two keys derived from the seed, so they are independent of
    // each other and of the flow hash.
    let (offset_key, skip_key) = (mix64(seed ^ 0x6f66_6673), mix64(seed ^ 0x736b_6970));
    let mut walks: Vec<Walk> = dests
        .iter()
        .enumerate()
        .filter(|(_, d)| d.weight > 0)
        .take(size)
        .map(|(i, d)| Walk {
            dest: i as u32,
            next: (hash_addr_port(offset_key, d.addr, d.port, 0) % size as u64) as usize,
            skip: (hash_addr_port(skip_key, d.addr, d.port, 0) % (size as u64 - 1)) as usize + 1,
            turns: ((d.weight / g) >> shift).max(1),
        })
        .collect();
    let mut filled = 0;
    // Each turn fills one slot, so the table is full after `size` turns.
    while filled < size {
        for w in &mut walks {
            for _ in 0..w.turns {
                // `size` is prime and 0 < skip < size: the walk visits every slot, and one
                // is free, so this ends.
                while slots[w.next] != NO_DEST {
                    w.next += w.skip;
                    if w.next >= size {
                        w.next -= size;
                    }
                }
                slots[w.next] = w.dest;
                filled += 1;
                if filled == size {
                    return SlotTable { slots, ids };
                }
            }
        }
    }
    SlotTable { slots, ids }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primes_are_prime() {
        for p in PRIMES {
            assert!(
                (2..p)
                    .take_while(|d| d * d <= p)
                    .all(|d| !p.is_multiple_of(d)),
                "{p}"
            );
        }
    }

    #[test]
    fn table_sizes() {
        assert_eq!(MaglevHash::table_size_for(0), 4093);
        assert_eq!(MaglevHash::table_size_for(3), 4093);
        assert_eq!(MaglevHash::table_size_for(40), 4093);
        assert_eq!(MaglevHash::table_size_for(41), 8191);
        assert_eq!(MaglevHash::table_size_for(1310), 131071);
        assert_eq!(MaglevHash::table_size_for(5000), 131071);
        assert_eq!(MaglevHash::table_size_for(usize::MAX), 131071);
    }
}
