//! Schedulers: one file each, integer arithmetic only, named as ipvsadm names them.
//!
//! A scheduler sees the service's live dests (deleted dests are not in the slice) and the new
//! connection's flow, and returns the index of the dest to use, or `None` when no dest is usable.
//! Weight 0 means "no new connections" for every scheduler; an overloaded dest
//! ([`Dest::overloaded`]) takes none either. Hashing schedulers take their hash seed at
//! construction, so the core stays deterministic.
//!
//! Panic contract: no scheduler panics, whatever the slice holds — empty, every weight 0, or
//! changed since the last [`Scheduler::update`]. A scheduler whose state was built from a
//! different slice notices (length or the chosen dest's address and port differ), rebuilds and
//! answers from the slice it was given.

use core::fmt;
use core::net::IpAddr;

use crate::types::{Dest, SchedFlags, SchedulerKind};

pub mod dh;
pub mod fo;
pub mod hash;
pub mod lc;
pub mod mh;
pub mod nq;
pub mod ovf;
pub mod rr;
pub mod sed;
pub mod sh;
pub mod wlc;
pub mod wrr;

pub use dh::DestHash;
pub use fo::WeightedFailover;
pub use lc::LeastConn;
pub use mh::MaglevHash;
pub use nq::NeverQueue;
pub use ovf::WeightedOverflow;
pub use rr::RoundRobin;
pub use sed::ShortestExpectedDelay;
pub use sh::SourceHash;
pub use wlc::WeightedLeastConn;
pub use wrr::WeightedRoundRobin;

/// What a scheduler may look at to choose a dest for a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedFlow {
    /// IP protocol number.
    pub protocol: u8,
    /// Client address.
    pub caddr: IpAddr,
    /// Client port.
    pub cport: u16,
    /// Virtual address.
    pub vaddr: IpAddr,
    /// Virtual port.
    pub vport: u16,
}

/// A scheduling algorithm with its state (round-robin position, lookup tables, ...).
pub trait Scheduler: fmt::Debug + Send {
    /// Which algorithm this is.
    fn kind(&self) -> SchedulerKind;
    /// Rebuild internal state after the dest set, a weight or a flag changed (IPVS's
    /// `add_dest`/`del_dest`/`upd_dest`). Called once at creation too.
    fn update(&mut self, dests: &[Dest]);
    /// Choose a dest for a new connection; `None` when no dest is usable.
    fn schedule(&mut self, dests: &[Dest], flow: &SchedFlow) -> Option<usize>;
}

/// Create the scheduler `kind` (ipvsadm `-s`), with the service's scheduler flags (`-b`, used by
/// `sh` and `mh`) and the hash seed (used by `sh`, `dh` and `mh`). The caller then calls
/// [`Scheduler::update`] with the service's dests, as after every dest change.
pub fn new_scheduler(kind: SchedulerKind, flags: SchedFlags, seed: u64) -> Box<dyn Scheduler> {
    match kind {
        SchedulerKind::Rr => Box::new(RoundRobin::new()),
        SchedulerKind::Wrr => Box::new(WeightedRoundRobin::new()),
        SchedulerKind::Lc => Box::new(LeastConn),
        SchedulerKind::Wlc => Box::new(WeightedLeastConn),
        SchedulerKind::Sed => Box::new(ShortestExpectedDelay),
        SchedulerKind::Nq => Box::new(NeverQueue),
        SchedulerKind::Sh => Box::new(SourceHash::new(flags, seed)),
        SchedulerKind::Dh => Box::new(DestHash::new(seed)),
        SchedulerKind::Mh => Box::new(MaglevHash::new(flags, seed)),
        SchedulerKind::Fo => Box::new(WeightedFailover),
        SchedulerKind::Ovf => Box::new(WeightedOverflow),
    }
}

/// The identities (address, port) of the dests a scheduler's table was built from, so a
/// table-driven scheduler can tell that the slice changed without an [`Scheduler::update`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct DestIds(Vec<(IpAddr, u16)>);

impl DestIds {
    /// Record the identities of `dests`.
    fn of(dests: &[Dest]) -> DestIds {
        DestIds(dests.iter().map(|d| (d.addr, d.port)).collect())
    }

    /// True when `dests` has as many dests as the recorded set.
    fn same_len(&self, dests: &[Dest]) -> bool {
        self.0.len() == dests.len()
    }

    /// True when `dests[i]` exists and is the dest recorded at `i`.
    fn matches_at(&self, dests: &[Dest], i: usize) -> bool {
        match (self.0.get(i), dests.get(i)) {
            (Some(&(addr, port)), Some(d)) => d.addr == addr && d.port == port,
            _ => false,
        }
    }
}

/// Marker for "no dest" in a [`SlotTable`].
const NO_DEST: u32 = u32::MAX;

/// How many rehash rounds `sh-fallback` and `mh-fallback` try before scanning the dests.
const FALLBACK_ROUNDS: u32 = 256;

/// The table held by the hashing schedulers (`sh`, `dh`, `mh`): each slot names a dest by its
/// index in the slice the table was built from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct SlotTable {
    /// Dest index per slot, [`NO_DEST`] when no dest has a weight.
    slots: Vec<u32>,
    /// The dests the slots index into.
    ids: DestIds,
}

/// The table was built from a different slice of dests; rebuild it and look again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stale;

impl SlotTable {
    /// True when the table may index into `dests` (same length; each looked-up slot is
    /// checked further by [`SlotTable::lookup`]).
    fn fits(&self, dests: &[Dest]) -> bool {
        self.ids.same_len(dests)
    }

    /// The slots as dest indices, `None` for an empty slot.
    fn view(&self) -> Vec<Option<usize>> {
        self.slots
            .iter()
            .map(|&s| (s != NO_DEST).then_some(s as usize))
            .collect()
    }

    /// The dest in the slot `hash` selects: `Ok(Some(i))` when usable, `Ok(None)` when
    /// unusable or when the table is empty and no dest is usable.
    fn probe(&self, dests: &[Dest], hash: u64) -> Result<Option<usize>, Stale> {
        let slot = self.slot_of(hash);
        if slot == NO_DEST {
            // An empty table is only right while no dest can take connections.
            return if dests.iter().any(Dest::is_usable) {
                Err(Stale)
            } else {
                Ok(None)
            };
        }
        let i = slot as usize;
        if !self.ids.matches_at(dests, i) {
            return Err(Stale);
        }
        Ok(dests[i].is_usable().then_some(i))
    }

    /// The slot `hash` selects; [`NO_DEST`] for a table without slots.
    fn slot_of(&self, hash: u64) -> u32 {
        let len = self.slots.len() as u64;
        if len == 0 {
            return NO_DEST;
        }
        self.slots[(hash % len) as usize]
    }

    /// Look a flow up: `hash(0)` selects the slot; with `fallback`, when that slot's dest is
    /// unusable, `hash(1)`, `hash(2)`, ... up to [`FALLBACK_ROUNDS`] select further slots (the
    /// rehash of IPVS's `sh`/`mh` fallback), and if all of those are unusable too the first
    /// usable dest from a hashed starting point is taken, so a usable dest is always found.
    fn lookup(
        &self,
        dests: &[Dest],
        fallback: bool,
        hash: impl Fn(u32) -> u64,
    ) -> Result<Option<usize>, Stale> {
        let first = hash(0);
        if let Some(i) = self.probe(dests, first)? {
            return Ok(Some(i));
        }
        if !fallback || self.slot_of(first) == NO_DEST {
            return Ok(None);
        }
        for round in 1..=FALLBACK_ROUNDS {
            if let Some(i) = self.probe(dests, hash(round))? {
                return Ok(Some(i));
            }
        }
        // Nearly every dest is unusable: O(n) beats more rounds.
        let n = dests.len();
        let start = (first % (n.max(1) as u64)) as usize;
        Ok((0..n)
            .map(|k| (start + k) % n)
            .find(|&i| dests[i].is_usable()))
    }

    /// [`SlotTable::lookup`], rebuilding the table with `build` first if `dests` is not the
    /// slice it was built from.
    fn lookup_fresh(
        &mut self,
        dests: &[Dest],
        fallback: bool,
        hash: impl Fn(u32) -> u64,
        build: impl Fn(&[Dest]) -> SlotTable,
    ) -> Option<usize> {
        if !self.fits(dests) {
            *self = build(dests);
        }
        match self.lookup(dests, fallback, &hash) {
            Ok(found) => found,
            Err(Stale) => {
                *self = build(dests);
                self.lookup(dests, fallback, &hash).ok().flatten()
            }
        }
    }
}

/// Greatest common divisor (Euclid); `gcd(0, x) == x`.
const fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        let t = a % b;
        a = b;
        b = t;
    }
    a
}

/// The gcd of the positive weights, 0 when no dest has a weight.
fn weight_gcd(dests: &[Dest]) -> u32 {
    dests.iter().fold(0, |g, d| gcd(g, d.weight))
}

/// Index of the first usable dest that `better(candidate, best)` prefers over every usable dest
/// before it: the shape of IPVS's lc, wlc, sed and fo loops (ties go to the first in order).
fn pick_best(dests: &[Dest], better: impl Fn(&Dest, &Dest) -> bool) -> Option<usize> {
    let mut best: Option<(usize, &Dest)> = None;
    for (i, d) in dests.iter().enumerate() {
        if !d.is_usable() {
            continue;
        }
        match best {
            Some((_, b)) if !better(d, b) => {}
            _ => best = Some((i, d)),
        }
    }
    best.map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcd_of_weights() {
        assert_eq!(gcd(0, 0), 0);
        assert_eq!(gcd(0, 6), 6);
        assert_eq!(gcd(12, 18), 6);
        assert_eq!(gcd(7, 5), 1);
    }

    #[test]
    fn factory_names_every_kind() {
        for kind in SchedulerKind::ALL {
            let s = new_scheduler(kind, SchedFlags::default(), 1);
            assert_eq!(s.kind(), kind);
        }
    }
}
