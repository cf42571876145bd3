//! The connection table: every connection and persistence template the director knows, bounded,
//! deterministic, and compact enough for millions of entries.
//!
//! # Layout
//!
//! Entries live in a slab (`Vec`) addressed by [`ConnId`] = slot index + generation, so an id kept
//! after its entry is gone never reaches the slot's next occupant. Two index-only hash tables
//! (`index::Index`: 64-byte buckets of eight tag + slot pairs, keys stay in the slab) find
//! them:
//!
//! - **in** — `caddr:cport → vaddr:vport` of every connection (client packets, all methods);
//! - **template** — persistence templates, a namespace of their own (a template's key may equal a
//!   connection's).
//!
//! A NAT dest's reply (`daddr:dport → caddr:cport`) is found through the in index too: the
//! table counts, for each (protocol, `daddr:dport`), the `vaddr:vport`s its NAT connections
//! were made on (`Vias`; nearly always one), so the reply's client-side key is rebuilt and
//! looked up, and the entry found must name that dest. (An out index of its own cost a random
//! bucket write per new NAT connection, 17 bytes per connection, and about 24 ns of a NAT SYN at
//! 4 M connections; BENCHMARKS.md, ninth session.)
//!
//! Keys are hashed with a fast seeded 64-bit hash (folded multiplies over the address words and
//! ports, IPv4 and IPv6 alike); the seed is a parameter, so runs reproduce.
//!
//! # Expiry
//!
//! A hashed timer wheel of [`WHEEL_SLOTS`] slots of [`TICK_NS`] (≈ 67 ms; ≈ 18.8 min per turn),
//! with intrusive doubly-linked lists through the slab entries, a bitmap of non-empty slots, and
//! a cursor (`cur`, the first tick not yet fully processed). An entry is filed at the tick of its
//! expiry, clamped to `[cur, cur + WHEEL_SLOTS)`:
//!
//! - extending an expiry (every packet does) only writes the entry: it stays filed where it was
//!   and is re-filed lazily when its old slot comes up;
//! - shortening one (ESTABLISHED → FIN_WAIT) moves it at once, so nothing expires late;
//! - expiries beyond the horizon are filed at its end and re-filed each turn.
//!
//! [`ConnTable::expire`] walks the non-empty slots from `cur` up to `now`: each visit either
//! expires an entry or re-files one whose expiry moved, so the work is amortised O(expired +
//! moved), never a scan of the table. An entry whose expiry lies in the current tick but after
//! `now` waits for a later call. After a gap longer than a whole turn the wheel is rebuilt once
//! (O(entries)).
//!
//! # Bounds
//!
//! At most [`ConnTable::max`] entries (connections and templates together). When full, an insert
//! is refused ([`FullPolicy::Refuse`]) or evicts the entry *nearest to its expiry*
//! ([`FullPolicy::EvictOldest`]): under a SYN flood that is a half-open SYN_RECV entry (60 s), not
//! an ESTABLISHED one (900 s). Both are counted. The slab grows in steps of 1/16 up to `max`,
//! never beyond; the indexes double before they are three quarters full.
//!
//! # Templates pinned by their connections
//!
//! A connection inserted with `control: Some(template)` pins its template: like IPVS, an entry
//! that still controls connections is neither expired nor evicted. When it falls due while pinned
//! it is parked, and filed again once its last controlled connection is gone — due at once if its
//! expiry has passed (the director may [`ConnTable::touch`] it first to give it a fresh period).
//!
//! Single-owner: one table per worker shard; nothing here locks. No clock, no I/O, no panics.

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use core::num::NonZeroU32;

use hashbrown::HashTable;
use rvs_wire::flow::Flow;
use rvs_wire::parse::FlowKey;

use crate::proto::ConnState;
use crate::types::{FwdMethod, Time};

mod huge;
mod index;
use index::{Index, prefetch, prefetch_l2};

/// Width of one timer-wheel tick: 2^26 ns ≈ 67.1 ms.
pub const TICK_NS: Time = 1 << TICK_SHIFT;
const TICK_SHIFT: u32 = 26;
/// Number of timer-wheel slots (one turn ≈ 1126 s, longer than IPVS's default ESTABLISHED
/// timeout, so most entries are visited once).
pub const WHEEL_SLOTS: usize = 1 << WHEEL_BITS;
const WHEEL_BITS: u32 = 14;
const WHEEL: u64 = 1 << WHEEL_BITS;
const WHEEL_MASK: u64 = WHEEL - 1;
/// `Entry::slot` of an entry that is due but pinned by the connections it controls.
const SLOT_PARKED: u16 = u16::MAX;
/// `Entry::slot` of a free entry, or of a live one while the wheel is being rebuilt.
const SLOT_NONE: u16 = u16::MAX - 1;
/// "No entry" in the slab links.
const NIL: u32 = u32::MAX;
/// Most entries a table can hold (ids are `u32`, one value is the list terminator).
pub const MAX_ENTRIES: usize = (u32::MAX - 1) as usize;
/// Smallest slab growth step.
const MIN_GROW: usize = 64;

const META_C6: u8 = 1;
/// Dest address family: IPv6.
const META_D6: u8 = 2;
const META_FWD_SHIFT: u32 = 4;

#[inline]
const fn tick(t: Time) -> u64 {
    t >> TICK_SHIFT
}

/// Identifies an entry of a [`ConnTable`]: its slot and the slot's generation, so an id kept
/// after its entry was removed never names the slot's next occupant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    index: u32,
    generation: NonZeroU32,
}

impl ConnId {
    /// The slab slot (for diagnostics; ids of different generations may share it).
    pub const fn index(self) -> u32 {
        self.index
    }
}

/// One way back from a NAT dest: its replies from `daddr:dport` (protocol `protocol`) belong
/// to connections made on `vaddr:vport`; `refs` live NAT entries say so. The addresses are kept
/// in the slab's form, not as interned ids: a reply is matched from its bytes with one hash, and
/// the client-side key is built without looking the addresses up.
#[derive(Clone, Copy)]
struct Via {
    daddr: Addr,
    vaddr: Addr,
    refs: u32,
    dport: u16,
    vport: u16,
    protocol: u8,
}

impl Via {
    /// True when this is the way back of `daddr:dport` (protocol `protocol`).
    #[inline(always)]
    fn from(&self, protocol: u8, daddr: &Addr, dport: u16) -> bool {
        self.dport == dport && self.protocol == protocol && self.daddr == *daddr
    }

    /// True when `other` is the same way back (its count aside).
    #[inline(always)]
    fn same(&self, other: &Via) -> bool {
        self.from(other.protocol, &other.daddr, other.dport)
            && self.vport == other.vport
            && self.vaddr == other.vaddr
    }
}

/// Every [`Via`] of the table's live NAT entries, found by (protocol, daddr, dport): what turns
/// a dest's reply into the client-side key its connection is indexed under.
#[derive(Default)]
struct Vias {
    table: HashTable<Via>,
}

impl Vias {
    /// The hash of a (protocol, daddr, dport): all vias of one dest port share it.
    #[inline(always)]
    fn hash(protocol: u8, daddr: &Addr, dport: u16) -> u64 {
        let x = u128::from_le_bytes(daddr.bytes);
        let small = u64::from(dport) | u64::from(protocol) << 16 | u64::from(daddr.v6) << 24;
        fold(
            (x as u64) ^ small.rotate_left(32) ^ 0x9e37_79b9_7f4a_7c15,
            ((x >> 64) as u64) ^ 0xbf58_476d_1ce4_e5b9,
        )
    }

    #[inline(always)]
    fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// One more NAT entry comes back by `way` (its `refs` ignored).
    #[inline(always)]
    fn take(&mut self, way: &Via) {
        let h = Vias::hash(way.protocol, &way.daddr, way.dport);
        if let Some(v) = self.table.find_mut(h, |v| v.same(way)) {
            v.refs += 1;
            return;
        }
        let via = Via { refs: 1, ..*way };
        self.table
            .insert_unique(h, via, |v| Vias::hash(v.protocol, &v.daddr, v.dport));
    }

    /// A NAT entry that [`Vias::take`] counted is gone.
    fn release(&mut self, way: Via) {
        let h = Vias::hash(way.protocol, &way.daddr, way.dport);
        if let Ok(e) = self.table.find_entry(h, |v| v.same(&way)) {
            if e.get().refs <= 1 {
                e.remove();
            } else {
                e.into_mut().refs -= 1;
            }
        }
    }

    /// The client-side keys a dest's reply `k` (daddr:dport → caddr:cport) may belong to:
    /// one per way back from daddr:dport (nearly always one).
    #[inline]
    fn client_sides<'a>(&'a self, k: &'a Packed) -> impl Iterator<Item = Packed> + 'a {
        let daddr = Addr {
            bytes: k.src,
            v6: k.src6,
        };
        self.table
            .iter_hash(Vias::hash(k.protocol, &daddr, k.sport))
            .filter(move |v| v.from(k.protocol, &daddr, k.sport))
            .map(|v| Packed {
                protocol: k.protocol,
                src: k.dst,
                src6: k.dst6,
                sport: k.dport,
                dst: v.vaddr.bytes,
                dst6: v.vaddr.v6,
                dport: v.vport,
            })
    }

    fn memory_bytes(&self) -> usize {
        self.table.allocation_size()
    }
}

/// What an insert into a full table does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum FullPolicy {
    /// Refuse the new entry (IPVS behaviour, the default).
    #[default]
    Refuse,
    /// Evict the entry nearest to its expiry (at tick granularity), skipping pinned templates.
    EvictOldest,
}

/// Entry flags (IPVS's `IP_VS_CONN_F_*` that the table cares about).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ConnFlags(u8);

impl ConnFlags {
    /// No flag.
    pub const NONE: ConnFlags = ConnFlags(0);
    /// A persistence template: indexed apart from connections; its cport (and for port-0
    /// services its vport) may be 0.
    pub const TEMPLATE: ConnFlags = ConnFlags(1);
    /// The client port is not known yet (IPVS's `NO_CPORT`): stored with cport 0, found by any
    /// client port until [`ConnTable::fill_cport`] sets it.
    pub const NO_CPORT: ConnFlags = ConnFlags(2);

    /// The raw bits.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// True when every flag of `other` is set in `self`.
    pub const fn contains(self, other: ConnFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// `self` with the flags of `other` added.
    #[must_use]
    pub const fn union(self, other: ConnFlags) -> ConnFlags {
        ConnFlags(self.0 | other.0)
    }

    /// `self` with the flags of `other` removed.
    #[must_use]
    pub const fn difference(self, other: ConnFlags) -> ConnFlags {
        ConnFlags(self.0 & !other.0)
    }
}

impl core::ops::BitOr for ConnFlags {
    type Output = ConnFlags;
    fn bitor(self, rhs: ConnFlags) -> ConnFlags {
        self.union(rhs)
    }
}

/// A connection or template, as the director reads and writes it (decoded from the compact slab
/// entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conn {
    /// Client side: protocol, caddr:cport → vaddr:vport.
    pub key: FlowKey,
    /// Dest address (RIP).
    pub daddr: IpAddr,
    /// Dest port.
    pub dport: u16,
    /// The dest's id in the director's arena (opaque to the table).
    pub dest: u32,
    /// Forwarding method; only [`FwdMethod::Masq`] entries are found by their dest's replies.
    pub fwd: FwdMethod,
    /// TCP/UDP state, or [`ConnState::Template`].
    pub state: ConnState,
    /// Flags.
    pub flags: ConnFlags,
    /// Absolute expiry time (ns on the caller's clock).
    pub expires: Time,
    /// The entry (persistence template) this one hangs off; it stays while this one lives.
    pub control: Option<ConnId>,
}

impl Conn {
    /// The key a dest's replies carry (protocol, daddr:dport → caddr:cport): what
    /// [`ConnTable::lookup_out`] takes.
    pub fn out_key(&self) -> FlowKey {
        FlowKey {
            protocol: self.key.protocol,
            src: self.daddr,
            sport: self.dport,
            dst: self.key.src,
            dport: self.key.sport,
        }
    }
}

/// The fields of a live entry that a packet of it needs ([`ConnTable::hot`]), read in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hot {
    /// TCP/UDP state, or [`ConnState::Template`].
    pub state: ConnState,
    /// Forwarding method.
    pub fwd: FwdMethod,
    /// The dest's id in the director's arena.
    pub dest: u32,
    /// The dest address's (RIP's) interned id ([`ConnTable::interned`] gives the address): an
    /// id, not an `IpAddr`, so that a packet that needs no address (DR) builds none.
    pub daddr_id: u32,
    /// True when the dest address is IPv6.
    pub daddr_v6: bool,
    /// Dest port.
    pub dport: u16,
}

/// Why an insert failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InsertError {
    /// The table holds its maximum and the policy refused (or nothing could be evicted).
    #[error("connection table full")]
    Full,
    /// An entry with the same key exists in the same namespace (connections or templates).
    #[error("an entry with this key exists")]
    Exists(ConnId),
}

/// Table event counters (monotonic).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ConnTableCounters {
    /// Entries inserted.
    pub inserted: u64,
    /// Inserts refused because the table was full.
    pub refused_full: u64,
    /// Entries evicted to make room ([`FullPolicy::EvictOldest`]).
    pub evicted: u64,
    /// Entries removed by [`ConnTable::expire`].
    pub expired: u64,
    /// Entries removed by [`ConnTable::remove`].
    pub removed: u64,
}

/// One slab slot: one 64-byte cache line, so a lookup that hits reads one line of the slab.
/// The VIP and the RIP are ids of the table's interned addresses ([`Addrs`]); the template
/// bookkeeping that packets never read is in the parallel `cold` array. Free slots have an even
/// generation and chain through `next`.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Entry {
    caddr: [u8; 16],
    expires: Time,
    /// Odd while occupied.
    generation: u32,
    /// Interned VIP (with its family).
    vaddr: u32,
    /// Interned RIP (with its family).
    daddr: u32,
    dest: u32,
    /// Wheel list links (free list: `next`).
    prev: u32,
    next: u32,
    /// Slot of the controlling entry (its generation is in `Cold`); `NIL` = none.
    control: u32,
    cport: u16,
    vport: u16,
    dport: u16,
    /// Wheel slot, or `SLOT_PARKED` / `SLOT_NONE`.
    slot: u16,
    protocol: u8,
    state: ConnState,
    flags: ConnFlags,
    /// Client and dest address families (`META_C6`, `META_D6`) and forwarding method.
    meta: u8,
}

/// The part of an entry that packets never read.
#[derive(Clone, Copy, Default)]
struct Cold {
    /// Generation of the controlling entry.
    control_gen: u32,
    /// Live entries whose `control` is this one.
    n_control: u32,
}

impl Entry {
    const VACANT: Entry = Entry {
        caddr: [0; 16],
        expires: 0,
        generation: 0,
        vaddr: NIL,
        daddr: NIL,
        dest: 0,
        prev: NIL,
        next: NIL,
        control: NIL,
        cport: 0,
        vport: 0,
        dport: 0,
        slot: SLOT_NONE,
        protocol: 0,
        state: ConnState::Template,
        flags: ConnFlags::NONE,
        meta: 0,
    };

    #[inline]
    fn is_live(&self) -> bool {
        self.generation & 1 == 1
    }

    #[inline]
    fn c6(&self) -> bool {
        self.meta & META_C6 != 0
    }

    #[inline]
    fn fwd(&self) -> FwdMethod {
        // A table, not a match: the match compiled to a compare-and-select chain on the hot
        // path. Codes 0, 1, 2 as `insert` writes them; 3 is never written.
        const FWD: [FwdMethod; 4] = [
            FwdMethod::Masq,
            FwdMethod::DirectRoute,
            FwdMethod::Tunnel,
            FwdMethod::DirectRoute,
        ];
        FWD[usize::from(self.meta >> META_FWD_SHIFT) & 3]
    }

    #[inline]
    fn is_template(&self) -> bool {
        self.flags.contains(ConnFlags::TEMPLATE)
    }

    /// A NAT connection: its dest's replies find it (see [`Vias`]).
    #[inline]
    fn found_by_replies(&self) -> bool {
        !self.is_template() && self.fwd() == FwdMethod::Masq
    }

    #[inline]
    fn matches_in(&self, k: &Packed, addrs: &Addrs) -> bool {
        self.cport == k.sport
            && self.vport == k.dport
            && self.protocol == k.protocol
            && self.caddr == k.src
            && self.c6() == k.src6
            && addrs.is(self.vaddr, &k.dst, k.dst6)
    }

    /// [`Entry::matches_in`] of [`Packed::of_flow`]`(f)`, read from the frame's fields in place.
    #[inline]
    fn matches_flow(&self, f: &Flow, addrs: &Addrs) -> bool {
        self.cport == f.sport
            && self.vport == f.dport
            && self.protocol == f.protocol
            && self.caddr == f.src
            && self.c6() == f.v6
            && addrs.is(self.vaddr, &f.dst, f.v6)
    }

    /// True when `k` is a reply of this NAT connection: what its dest sends back (protocol,
    /// daddr:dport → caddr:cport).
    #[inline]
    fn answers_reply(&self, k: &Packed, addrs: &Addrs) -> bool {
        self.found_by_replies()
            && self.dport == k.sport
            && self.cport == k.dport
            && self.protocol == k.protocol
            && self.caddr == k.dst
            && self.c6() == k.dst6
            && addrs.is(self.daddr, &k.src, k.src6)
    }

    #[inline]
    fn decode(&self, addrs: &Addrs, cold: Cold) -> Conn {
        Conn {
            key: FlowKey {
                protocol: self.protocol,
                src: unpack(&self.caddr, self.c6()),
                sport: self.cport,
                dst: addrs.ip(self.vaddr),
                dport: self.vport,
            },
            daddr: addrs.ip(self.daddr),
            dport: self.dport,
            dest: self.dest,
            fwd: self.fwd(),
            state: self.state,
            flags: self.flags,
            expires: self.expires,
            control: make_id(self.control, cold.control_gen),
        }
    }
}

/// An address in the slab's form: 16 bytes (IPv4 in the first four) and the family.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Addr {
    bytes: [u8; 16],
    v6: bool,
}

/// The VIPs and RIPs of the table's entries, each stored once and named by a `u32` id in the
/// entries (there are as many as services and dests, not as connections), with a reference
/// count per id; ids of unreferenced addresses are reused.
#[derive(Default)]
struct Addrs {
    /// Id → (address, the same as an `IpAddr`, references).
    list: Vec<(Addr, IpAddr, u32)>,
    /// Address → id, hashed with [`Addr::hash`] (one multiply: every insert looks up two).
    ids: HashTable<u32>,
    free: Vec<u32>,
    /// Ids recently taken, by [`Addr::slot`]: new connections name the same few VIPs and
    /// RIPs over and over, and a hit here skips the hash table.
    recent: [u32; 16],
}

impl Addr {
    /// A slot of [`Addrs::recent`].
    #[inline]
    fn slot(&self) -> usize {
        let [a, b, c, d, .., w, x, y, z] = self.bytes;
        let v = u32::from_le_bytes([a, b, c, d]) ^ u32::from_le_bytes([w, x, y, z]);
        ((v ^ u32::from(self.v6)).wrapping_mul(0x9e37_79b1) >> 28) as usize
    }

    /// A hash for [`Addrs::ids`] (any fixed mixing will do: ids do not depend on it).
    #[inline]
    fn hash(&self) -> u64 {
        let x = u128::from_le_bytes(self.bytes);
        fold(
            (x as u64) ^ 0x9e37_79b9_7f4a_7c15 ^ u64::from(self.v6),
            ((x >> 64) as u64) ^ 0xbf58_476d_1ce4_e5b9,
        )
    }
}

impl Addrs {
    /// True when id `id` is the address (`bytes`, `v6`).
    #[inline]
    fn is(&self, id: u32, bytes: &[u8; 16], v6: bool) -> bool {
        self.list
            .get(id as usize)
            .is_some_and(|(a, _, _)| a.bytes == *bytes && a.v6 == v6)
    }

    /// The address of id `id` (an unspecified IPv4 address for an unknown id).
    #[inline]
    fn ip(&self, id: u32) -> IpAddr {
        match self.list.get(id as usize) {
            Some((_, ip, _)) => *ip,
            None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        }
    }

    /// The address of id `id` in slab form.
    #[inline]
    fn get(&self, id: u32) -> Addr {
        self.list.get(id as usize).map_or(
            Addr {
                bytes: [0; 16],
                v6: false,
            },
            |(a, _, _)| *a,
        )
    }

    /// The id of `a`, taking one reference (interned on first use).
    #[inline]
    fn take(&mut self, a: Addr) -> u32 {
        let slot = a.slot();
        let recent = self.recent.get(slot).copied().unwrap_or(NIL);
        if let Some((b, _, refs)) = self.list.get_mut(recent as usize)
            && *refs > 0
            && *b == a
        {
            *refs += 1;
            return recent;
        }
        let id = self.take_slow(a);
        if let Some(r) = self.recent.get_mut(slot) {
            *r = id;
        }
        id
    }

    #[inline(never)]
    fn take_slow(&mut self, a: Addr) -> u32 {
        let h = a.hash();
        let list = &self.list;
        let found = self.ids.find(h, |&id| {
            list.get(id as usize).is_some_and(|(b, _, _)| *b == a)
        });
        if let Some(&id) = found {
            if let Some((_, _, refs)) = self.list.get_mut(id as usize) {
                *refs += 1;
            }
            return id;
        }
        let ip = unpack(&a.bytes, a.v6);
        let id = match self.free.pop() {
            Some(id) => {
                if let Some(slot) = self.list.get_mut(id as usize) {
                    *slot = (a, ip, 1);
                }
                id
            }
            None => {
                self.list.push((a, ip, 1));
                (self.list.len() - 1) as u32
            }
        };
        let list = &self.list;
        self.ids.insert_unique(h, id, |&i| {
            list.get(i as usize).map_or(0, |(b, _, _)| b.hash())
        });
        id
    }

    /// Drop one reference to id `id`; the last one frees it.
    fn release(&mut self, id: u32) {
        let Some((a, _, refs)) = self.list.get_mut(id as usize) else {
            return;
        };
        *refs = refs.saturating_sub(1);
        if *refs == 0 {
            let h = a.hash();
            if let Ok(e) = self.ids.find_entry(h, |&i| i == id) {
                e.remove();
            }
            self.free.push(id);
        }
    }

    fn memory_bytes(&self) -> usize {
        self.list.capacity() * core::mem::size_of::<(Addr, IpAddr, u32)>()
            + self.ids.allocation_size()
            + self.free.capacity() * 4
    }
}

/// Hint the CPU to start loading the cache line that holds the start of `r`; no effect on
/// program state. For I/O loops that know which frames they hand over next (a poll loop
/// prefetches the next burst's frames while the current one is processed).
#[inline(always)]
pub fn prefetch_line<T: ?Sized>(r: &T) {
    prefetch((r as *const T).cast::<u8>());
}

/// Prefetch a slab entry (one cache line).
#[inline(always)]
fn prefetch_entry(e: &Entry) {
    prefetch(e);
}

#[inline]
fn make_id(index: u32, generation: u32) -> Option<ConnId> {
    if index == NIL {
        return None;
    }
    NonZeroU32::new(generation).map(|generation| ConnId { index, generation })
}

/// An address as the table (and [`rvs_wire::flow::Flow`]) holds it: IPv4 in the first four
/// bytes and zeros after, with its family.
#[inline]
pub(crate) fn pack(a: IpAddr) -> ([u8; 16], bool) {
    match a {
        // Widened as an integer: the byte-by-byte array literal compiled to sixteen stores.
        IpAddr::V4(v4) => (
            u128::from(u32::from_le_bytes(v4.octets())).to_le_bytes(),
            false,
        ),
        IpAddr::V6(v6) => (v6.octets(), true),
    }
}

#[inline]
fn unpack(a: &[u8; 16], v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(*a))
    } else {
        IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))
    }
}

/// A packet's flow key in the table's form with its hash ([`ConnTable::probe`]): built once
/// per packet, then used for the in lookup and, when that misses, the out lookup.
#[derive(Clone, Copy)]
pub struct Probe {
    key: Packed,
    hash: u64,
    /// A slab slot to try before the index ([`Probe::hinted`]); `NIL` = none.
    hint: u32,
    /// Where a burst's first stage looked for the packet as a NAT dest's reply
    /// ([`Probe::out_hinted`]).
    out: Option<u64>,
}

/// Where a burst's second stage saw a lookup's likely entry ([`ConnTable::prefetch_in_entries`]):
/// the first slot of the home bucket with the key's tag, given to [`Probe::hinted`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hint(u32);

impl Hint {
    /// No candidate.
    pub const NONE: Hint = Hint(NIL);
}

impl Probe {
    /// The probe with `hint` to try first: [`ConnTable::lookup_in_probe`] takes the hinted slot
    /// when it holds a live connection with exactly this key, which the index would return too
    /// (keys are unique among connections), and skips reading the index bucket again. A stale
    /// hint only costs the index lookup it would have made anyway.
    #[inline(always)]
    #[must_use]
    pub fn hinted(mut self, hint: Hint) -> Probe {
        self.hint = hint.0;
        self
    }

    /// The probe with `out`, the hash [`ConnTable::prefetch_out_flow`] (or
    /// [`ConnTable::prefetch_out_key`]) returned for the packet: [`ConnTable::lookup_out_probe`]
    /// first looks under it for a NAT entry whose out key is exactly the packet's, which the
    /// full lookup would return too, and skips rebuilding the client-side key. When nothing is
    /// there it makes the full lookup.
    #[inline(always)]
    #[must_use]
    pub fn out_hinted(mut self, out: Option<u64>) -> Probe {
        self.out = out;
        self
    }

    /// The key's hash (what [`ConnTable::key_hash`] returns for it).
    #[inline]
    pub fn hash(&self) -> u64 {
        self.hash
    }
}

/// A lookup key in the slab's address form.
#[derive(Clone, Copy)]
struct Packed {
    protocol: u8,
    src: [u8; 16],
    src6: bool,
    sport: u16,
    dst: [u8; 16],
    dst6: bool,
    dport: u16,
}

impl Packed {
    /// The key of a fast-read frame: its bytes are already in this form.
    #[inline(always)]
    fn of_flow(f: &Flow) -> Packed {
        Packed {
            protocol: f.protocol,
            src: f.src,
            src6: f.v6,
            sport: f.sport,
            dst: f.dst,
            dst6: f.v6,
            dport: f.dport,
        }
    }

    #[inline]
    fn new(k: &FlowKey) -> Packed {
        let (src, src6) = pack(k.src);
        let (dst, dst6) = pack(k.dst);
        Packed {
            protocol: k.protocol,
            src,
            src6,
            sport: k.sport,
            dst,
            dst6,
            dport: k.dport,
        }
    }
}

/// Seeded 64-bit hash of a (protocol, address, port, address, port) tuple: three folded 64×64→128
/// multiplies over the address words, ports, protocol and families, keyed by six words derived
/// from the seed.
#[derive(Clone, Copy)]
struct KeyHasher {
    k: [u64; 6],
}

#[inline]
fn fold(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

impl KeyHasher {
    fn new(seed: u64) -> KeyHasher {
        // splitmix64: spreads any seed, including 0, into independent non-zero-ish words.
        let mut s = seed;
        let mut next = || {
            s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ (z >> 31)) | 1
        };
        KeyHasher {
            k: [next(), next(), next(), next(), next(), next()],
        }
    }

    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn tuple(
        &self,
        protocol: u8,
        src: &[u8; 16],
        src6: bool,
        sport: u16,
        dst: &[u8; 16],
        dst6: bool,
        dport: u16,
    ) -> u64 {
        let s = u128::from_le_bytes(*src);
        let d = u128::from_le_bytes(*dst);
        let small = u64::from(sport)
            | u64::from(dport) << 16
            | u64::from(protocol) << 32
            | u64::from(src6) << 40
            | u64::from(dst6) << 41;
        let a = fold(s as u64 ^ self.k[0], (s >> 64) as u64 ^ self.k[1]);
        let b = fold(d as u64 ^ self.k[2], (d >> 64) as u64 ^ self.k[3]);
        fold(a ^ small ^ self.k[4], b ^ self.k[5])
    }

    #[inline]
    fn packed(&self, k: &Packed) -> u64 {
        self.tuple(k.protocol, &k.src, k.src6, k.sport, &k.dst, k.dst6, k.dport)
    }

    #[inline]
    fn entry_in(&self, e: &Entry, addrs: &Addrs) -> u64 {
        let v = addrs.get(e.vaddr);
        self.tuple(
            e.protocol,
            &e.caddr,
            e.c6(),
            e.cport,
            &v.bytes,
            v.v6,
            e.vport,
        )
    }
}

/// True when an index of `buckets` buckets is better rebuilt from its own buckets than from a
/// scan of a slab of `slab` entries.
fn ix_len_small(buckets: usize, slab: usize) -> bool {
    buckets * index::WAYS * 8 < slab
}

/// Which index an operation is about.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Which {
    In,
    Template,
}

/// The bounded connection table (see the module documentation).
pub struct ConnTable {
    slab: Vec<Entry>,
    /// `Cold` part of each slab slot (same indexes).
    cold: Vec<Cold>,
    /// The VIPs and RIPs the entries name.
    addrs: Addrs,
    free_head: u32,
    len: usize,
    max: usize,
    policy: FullPolicy,
    hasher: KeyHasher,
    idx_in: Index,
    /// How NAT dests' replies map back to client-side keys (see the module documentation).
    vias: Vias,
    idx_tpl: Index,
    /// Live NO_CPORT connections (enables the cport-0 fallback lookup).
    no_cport: usize,
    /// Wheel list heads, allocated on first insert.
    heads: Vec<u32>,
    /// One bit per non-empty slot.
    bits: Vec<u64>,
    /// Entries filed in the wheel.
    filed: usize,
    /// First tick not yet fully processed; every filed entry's tick is in `[cur, cur + WHEEL)`.
    cur: u64,
    counters: ConnTableCounters,
}

impl fmt::Debug for ConnTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnTable")
            .field("len", &self.len)
            .field("max", &self.max)
            .field("policy", &self.policy)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl ConnTable {
    /// An empty table holding at most `max` entries (capped at [`MAX_ENTRIES`]); nothing is
    /// allocated until the first insert.
    pub fn new(max: usize, policy: FullPolicy, seed: u64) -> Self {
        ConnTable {
            slab: Vec::new(),
            cold: Vec::new(),
            addrs: Addrs::default(),
            free_head: NIL,
            len: 0,
            max: max.min(MAX_ENTRIES),
            policy,
            hasher: KeyHasher::new(seed),
            idx_in: Index::new(),
            vias: Vias::default(),
            idx_tpl: Index::new(),
            no_cport: 0,
            heads: Vec::new(),
            bits: Vec::new(),
            filed: 0,
            cur: 0,
            counters: ConnTableCounters::default(),
        }
    }

    /// Number of entries (connections and templates).
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the table holds nothing.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The maximum number of entries.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Change the maximum; below the current length nothing is dropped, new entries are refused
    /// (whatever the policy) until expiry and removals bring the length below it.
    pub fn set_max(&mut self, max: usize) {
        self.max = max.min(MAX_ENTRIES);
    }

    /// The policy when full.
    pub fn policy(&self) -> FullPolicy {
        self.policy
    }

    /// Change the policy when full.
    pub fn set_policy(&mut self, policy: FullPolicy) {
        self.policy = policy;
    }

    /// The event counters.
    pub fn counters(&self) -> ConnTableCounters {
        self.counters
    }

    /// Heap bytes held by the table: slab capacity × (entry + cold part), the interned
    /// addresses, the two indexes' buckets, the NAT vias, and the timer wheel.
    pub fn memory_bytes(&self) -> usize {
        self.slab.capacity() * core::mem::size_of::<Entry>()
            + self.cold.capacity() * core::mem::size_of::<Cold>()
            + self.addrs.memory_bytes()
            + self.idx_in.allocation_size()
            + self.vias.memory_bytes()
            + self.idx_tpl.allocation_size()
            + self.heads.capacity() * 4
            + self.bits.capacity() * 8
    }

    /// Insert an entry: a template if `conn.flags` has [`ConnFlags::TEMPLATE`], else a
    /// connection (its dest's way back counted when NAT). Returns its id and, when room was made by
    /// eviction, the evicted entry (so the caller can fix its dest's counters).
    ///
    /// A `NO_CPORT` connection is stored with cport 0. A `control` id that is stale is stored as
    /// `None`; a live one is pinned until this entry goes. `now` lets an empty wheel catch up.
    pub fn insert(&mut self, conn: Conn, now: Time) -> Result<(ConnId, Option<Conn>), InsertError> {
        self.insert_hashed(conn, None, now)
    }

    /// [`ConnTable::insert`] with [`ConnTable::key_hash`] of `conn.key` when the caller has it
    /// (a connection's packet was hashed for its lookup); ignored for a template or a
    /// `NO_CPORT` connection, whose stored key differs.
    pub fn insert_hashed(
        &mut self,
        conn: Conn,
        hash: Option<u64>,
        now: Time,
    ) -> Result<(ConnId, Option<Conn>), InsertError> {
        self.insert_with(conn, hash, false, now)
    }

    /// [`ConnTable::insert_hashed`] of a connection whose key the caller has just looked up in
    /// this table and not found ([`ConnTable::lookup_in_probe`] of the same key and hash
    /// returned `None`, and nothing was inserted since): the index is not searched for it
    /// again. (Debug builds still search, and panic on a duplicate: a caller bug.) For a
    /// template or a `NO_CPORT` connection, whose stored key differs, this is
    /// `insert_hashed`.
    pub fn insert_absent(
        &mut self,
        conn: Conn,
        hash: u64,
        now: Time,
    ) -> Result<(ConnId, Option<Conn>), InsertError> {
        self.insert_with(conn, Some(hash), true, now)
    }

    /// The body of [`ConnTable::insert_hashed`] and [`ConnTable::insert_absent`].
    #[inline(always)]
    fn insert_with(
        &mut self,
        conn: Conn,
        hash: Option<u64>,
        absent: bool,
        now: Time,
    ) -> Result<(ConnId, Option<Conn>), InsertError> {
        let mut conn = conn;
        let template = conn.flags.contains(ConnFlags::TEMPLATE);
        let no_cport = !template && conn.flags.contains(ConnFlags::NO_CPORT);
        if no_cport {
            conn.key.sport = 0;
        }
        let key = Packed::new(&conn.key);
        let h = match hash {
            Some(h) if !template && !no_cport => h,
            _ => self.hasher.packed(&key),
        };
        let which = if template { Which::Template } else { Which::In };
        // A connection the caller has just missed is not searched for again (about 40
        // instructions of a SYN).
        let known_absent = absent && !template && !no_cport && hash.is_some();
        debug_assert!(
            !known_absent || self.find(which, h, &key).is_none(),
            "insert_absent of a key the table holds"
        );
        if !known_absent && let Some(i) = self.find(which, h, &key) {
            return Err(InsertError::Exists(self.id_of(i).ok_or(InsertError::Full)?));
        }

        let control = conn.control.and_then(|c| self.live_index(c));
        // Room in the indexes first: growing rebuilds them from the live slab entries, which
        // must not yet include this one.
        self.reserve(which);
        let mut evicted = None;
        if self.len >= self.max {
            let victim = match self.policy {
                FullPolicy::EvictOldest if self.len == self.max => {
                    self.evict_candidate(control.unwrap_or(NIL))
                }
                _ => None,
            };
            let Some(v) = victim else {
                self.counters.refused_full += 1;
                return Err(InsertError::Full);
            };
            evicted = Some(self.free_entry(v));
            self.counters.evicted += 1;
        }
        let Some(i) = self.alloc() else {
            self.counters.refused_full += 1;
            return Err(InsertError::Full);
        };
        if self.heads.is_empty() {
            self.heads = vec![NIL; WHEEL_SLOTS];
            self.bits = vec![0; WHEEL_SLOTS / 64];
        }
        if self.filed == 0 {
            // Nothing is waiting in the wheel: the cursor may jump to now.
            self.cur = self.cur.max(tick(now));
        }

        let (daddr, d6) = pack(conn.daddr);
        let vaddr_id = self.addrs.take(Addr {
            bytes: key.dst,
            v6: key.dst6,
        });
        let daddr_id = self.addrs.take(Addr {
            bytes: daddr,
            v6: d6,
        });
        let fwd_bits: u8 = match conn.fwd {
            FwdMethod::Masq => 0,
            FwdMethod::DirectRoute => 1,
            FwdMethod::Tunnel => 2,
        };
        let (control_idx, control_gen) = match (control, conn.control) {
            (Some(ci), Some(id)) => (ci, id.generation.get()),
            _ => (NIL, 0),
        };
        if let Some(c) = self.cold.get_mut(i as usize) {
            *c = Cold {
                control_gen,
                n_control: 0,
            };
        }
        let Some(e) = self.slab.get_mut(i as usize) else {
            return Err(InsertError::Full);
        };
        let generation = e.generation.wrapping_add(1) | 1;
        *e = Entry {
            caddr: key.src,
            vaddr: vaddr_id,
            daddr: daddr_id,
            expires: conn.expires,
            control: control_idx,
            generation,
            dest: conn.dest,
            prev: NIL,
            next: NIL,
            cport: key.sport,
            vport: key.dport,
            dport: conn.dport,
            slot: SLOT_NONE,
            protocol: key.protocol,
            state: conn.state,
            flags: conn.flags,
            meta: (u8::from(key.src6) * META_C6)
                | (u8::from(d6) * META_D6)
                | (fwd_bits << META_FWD_SHIFT),
        };
        if e.found_by_replies() {
            // `way_back(i)`, from the addresses at hand: looking them up again cost a NAT SYN
            // about 50 instructions.
            self.vias.take(&Via {
                daddr: Addr {
                    bytes: daddr,
                    v6: d6,
                },
                vaddr: Addr {
                    bytes: key.dst,
                    v6: key.dst6,
                },
                refs: 0,
                dport: conn.dport,
                vport: key.dport,
                protocol: key.protocol,
            });
        }
        self.index_insert(which, h, i);
        if no_cport {
            self.no_cport += 1;
        }
        if let Some(c) = self.cold.get_mut(control_idx as usize) {
            c.n_control = c.n_control.saturating_add(1);
        }
        self.file(i, conn.expires);
        self.len += 1;
        self.counters.inserted += 1;
        let id = ConnId {
            index: i,
            generation: NonZeroU32::new(generation).ok_or(InsertError::Full)?,
        };
        Ok((id, evicted))
    }

    /// The connection a client → VIP packet with this key belongs to (templates excluded); falls
    /// back to a `NO_CPORT` connection when one exists.
    #[inline]
    pub fn lookup_in(&self, key: &FlowKey) -> Option<ConnId> {
        let k = Packed::new(key);
        let h = self.hasher.packed(&k);
        self.lookup_in_packed(k, h)
    }

    /// [`ConnTable::lookup_in`] with the key's hash already computed by
    /// [`ConnTable::key_hash`] (with any other value it may miss).
    #[inline]
    pub fn lookup_in_hashed(&self, key: &FlowKey, h: u64) -> Option<ConnId> {
        self.lookup_in_packed(Packed::new(key), h)
    }

    #[inline(always)]
    fn lookup_in_packed(&self, mut k: Packed, h: u64) -> Option<ConnId> {
        let found = self.find(Which::In, h, &k);
        match found {
            Some(i) => self.id_of(i),
            None if self.no_cport > 0 && k.sport != 0 => {
                k.sport = 0;
                let h = self.hasher.packed(&k);
                let i = self.idx_in.find(h, |i| {
                    self.slab.get(i as usize).is_some_and(|e| {
                        e.flags.contains(ConnFlags::NO_CPORT) && e.matches_in(&k, &self.addrs)
                    })
                })?;
                self.id_of(i)
            }
            None => None,
        }
    }

    /// The NAT connection a dest → client packet belongs to: `key` is what the dest sends
    /// (protocol, daddr:dport → caddr:cport). Only [`FwdMethod::Masq`] connections are found.
    #[inline]
    pub fn lookup_out(&self, key: &FlowKey) -> Option<ConnId> {
        let i = self.find_out(&Packed::new(key))?;
        self.id_of(i)
    }

    /// A packet's key ready for [`ConnTable::lookup_in_probe`] and
    /// [`ConnTable::lookup_out_probe`]; `hash`, when given, must be [`ConnTable::key_hash`] of
    /// `key` (a burst computed it to prefetch).
    #[inline(always)]
    pub fn probe(&self, key: &FlowKey, hash: Option<u64>) -> Probe {
        let key = Packed::new(key);
        let hash = hash.unwrap_or_else(|| self.hasher.packed(&key));
        Probe {
            key,
            hash,
            hint: NIL,
            out: None,
        }
    }

    /// [`ConnTable::probe`] of a frame the fast reader ([`rvs_wire::flow::read`]) accepted: the
    /// same probe as of its flow key, built from the bytes without `IpAddr`s, with `hint` (see
    /// [`Probe::hinted`]; [`Hint::NONE`] for none).
    #[inline(always)]
    pub fn probe_flow(&self, f: &Flow, hash: Option<u64>, hint: Hint) -> Probe {
        let key = Packed::of_flow(f);
        let hash = hash.unwrap_or_else(|| self.hasher.packed(&key));
        Probe {
            key,
            hash,
            hint: hint.0,
            out: None,
        }
    }

    /// [`ConnTable::key_hash`] of a fast-read frame's flow key.
    #[inline(always)]
    pub fn flow_hash(&self, f: &Flow) -> u64 {
        self.hasher.packed(&Packed::of_flow(f))
    }

    /// [`ConnTable::lookup_in`] of a probe (its hinted slot first, see [`Probe::hinted`]).
    #[inline(always)]
    pub fn lookup_in_probe(&self, p: &Probe) -> Option<ConnId> {
        if let Some(e) = self.slab.get(p.hint as usize)
            && e.is_live()
            && !e.is_template()
            && e.matches_in(&p.key, &self.addrs)
        {
            return make_id(p.hint, e.generation);
        }
        self.lookup_in_packed(p.key, p.hash)
    }

    /// [`ConnTable::lookup_out`] of a probe.
    #[inline(always)]
    pub fn lookup_out_probe(&self, p: &Probe) -> Option<ConnId> {
        let (slab, addrs) = (&self.slab, &self.addrs);
        let hinted = p.out.and_then(|h| {
            self.idx_in.find(h, |i| {
                slab.get(i as usize)
                    .is_some_and(|e| e.answers_reply(&p.key, addrs))
            })
        });
        let i = hinted.or_else(|| self.find_out(&p.key))?;
        self.id_of(i)
    }

    /// The hash a client → VIP packet's key is indexed under. A burst computes it once per
    /// packet, prefetches with it ([`ConnTable::prefetch_in`], then
    /// [`ConnTable::prefetch_in_entries`]) and looks up with it
    /// ([`ConnTable::lookup_in_hashed`]). (A dest's reply is looked up under the hash of the
    /// client-side key it is rebuilt into: [`ConnTable::prefetch_out_flow`].)
    #[inline]
    pub fn key_hash(&self, key: &FlowKey) -> u64 {
        self.hasher.packed(&Packed::new(key))
    }

    /// First stage of a burst lookup: start loading the in-index bucket of hash `h` into L2
    /// (the lookup comes a few hundred ns later; `conn/index.rs` explains why not L1).
    #[inline]
    pub fn prefetch_in(&self, h: u64) {
        self.idx_in.prefetch_far(h);
    }

    /// False while no NAT connection lives: a packet need not ask whether it might be a
    /// dest's reply.
    #[inline(always)]
    pub fn has_out_index(&self) -> bool {
        !self.vias.is_empty()
    }

    /// First stage of a burst lookup of a packet that may be a NAT dest's reply (fast-read):
    /// rebuild the client-side key of its connection (the first way back its source names;
    /// see the module documentation), start loading that key's in-index bucket into L2, and
    /// return its hash for [`ConnTable::prefetch_out_entries`]. `None` when the source is no
    /// NAT dest.
    #[inline]
    pub fn prefetch_out_flow(&self, f: &Flow) -> Option<u64> {
        self.prefetch_out_packed(&Packed::of_flow(f))
    }

    /// [`ConnTable::prefetch_out_flow`] of a parsed packet's flow key.
    #[inline]
    pub fn prefetch_out_key(&self, key: &FlowKey) -> Option<u64> {
        self.prefetch_out_packed(&Packed::new(key))
    }

    #[inline(always)]
    fn prefetch_out_packed(&self, k: &Packed) -> Option<u64> {
        if self.vias.is_empty() {
            return None;
        }
        let h = self.hasher.packed(&self.vias.client_sides(k).next()?);
        self.idx_in.prefetch_far(h);
        Some(h)
    }

    /// The NAT entry a dest's reply `k` (daddr:dport → caddr:cport) belongs to: each
    /// client-side key it may have is looked up in the in index, and the entry found must
    /// answer exactly that reply.
    #[inline]
    fn find_out(&self, k: &Packed) -> Option<u32> {
        if self.vias.is_empty() {
            return None;
        }
        let (slab, addrs) = (&self.slab, &self.addrs);
        self.vias.client_sides(k).find_map(|ck| {
            self.idx_in.find(self.hasher.packed(&ck), |i| {
                slab.get(i as usize)
                    .is_some_and(|e| e.answers_reply(k, addrs))
            })
        })
    }

    /// Second stage of a burst lookup: read the in-index bucket of `h` (prefetched by the
    /// first stage) and start loading the entries its tag points to; returns the first of them
    /// as a hint for the lookup ([`Probe::hinted`]).
    #[inline]
    pub fn prefetch_in_entries(&self, h: u64) -> Hint {
        let slab = &self.slab;
        let mut first = NIL;
        self.idx_in.home_candidates(h, |i| {
            if let Some(e) = slab.get(i as usize) {
                prefetch_entry(e);
                if first == NIL {
                    first = i;
                }
            }
        });
        Hint(first)
    }

    /// First stage of a burst lookup for a packet that may open a connection (a TCP SYN):
    /// also start loading the in-index bucket after `h`'s home one, which the lookup of a key
    /// the table does not hold reads when entries spilled past the home bucket, and the new
    /// entry's insert when the home bucket is full (each a few per cent of buckets at the
    /// load the index keeps). Not done for every packet: a key the table holds is nearly
    /// always found in its home bucket.
    #[inline]
    pub fn prefetch_in_spill(&self, h: u64) {
        self.idx_in.prefetch_next_far(h);
    }

    /// Start loading the slot the next insert will take (a free slot is usually cold): for a
    /// burst holding a packet that may open a connection.
    #[inline]
    pub fn prefetch_insert(&self) {
        let i = self.free_head as usize;
        if let (Some(e), Some(c)) = (self.slab.get(i), self.cold.get(i)) {
            prefetch_l2(e);
            prefetch_l2(c);
        }
    }

    /// Second stage of a burst lookup of a dest's reply: `h` from
    /// [`ConnTable::prefetch_out_flow`] (see [`ConnTable::prefetch_in_entries`]).
    #[inline]
    pub fn prefetch_out_entries(&self, h: u64) {
        let slab = &self.slab;
        self.idx_in.home_candidates(h, |i| {
            if let Some(e) = slab.get(i as usize) {
                prefetch_entry(e);
            }
        });
    }

    /// The persistence template with this key (templates only).
    #[inline]
    pub fn lookup_template(&self, key: &FlowKey) -> Option<ConnId> {
        let k = Packed::new(key);
        let i = self.find(Which::Template, self.hasher.packed(&k), &k)?;
        self.id_of(i)
    }

    /// The entry, decoded; `None` when the id is stale.
    #[inline]
    pub fn get(&self, id: ConnId) -> Option<Conn> {
        let i = self.live_index(id)?;
        Some(self.decode(i))
    }

    /// What a packet of the entry needs (state, method, dest), without decoding the rest;
    /// `None` when the id is stale.
    #[inline]
    pub fn hot(&self, id: ConnId) -> Option<Hot> {
        let e = self.slab.get(id.index as usize)?;
        (e.generation == id.generation.get()).then(|| self.hot_of(e))
    }

    /// [`ConnTable::lookup_in_probe`] of [`ConnTable::probe_flow`]`(f, Some(hash), hint)` and
    /// [`ConnTable::hot`] in one read of the entry, `None` also when the entry's timer ran out
    /// (`expires <= now`). The probe is not built: the hinted slot is compared with the frame's
    /// fields in place (the probe's copy of the key cost ~14 instructions per packet), and the
    /// index is asked only when the hint fails.
    #[inline(always)]
    pub fn hit_in_flow(&self, f: &Flow, hash: u64, hint: Hint, now: Time) -> Option<(ConnId, Hot)> {
        let id = match self.slab.get(hint.0 as usize) {
            Some(e) if e.is_live() && !e.is_template() && e.matches_flow(f, &self.addrs) => {
                make_id(hint.0, e.generation)?
            }
            _ => self.lookup_in_packed(Packed::of_flow(f), hash)?,
        };
        let e = self.slab.get(id.index as usize)?;
        (e.expires > now).then(|| (id, self.hot_of(e)))
    }

    #[inline(always)]
    fn hot_of(&self, e: &Entry) -> Hot {
        Hot {
            state: e.state,
            fwd: e.fwd(),
            dest: e.dest,
            daddr_id: e.daddr,
            daddr_v6: e.meta & META_D6 != 0,
            dport: e.dport,
        }
    }

    /// The address an interned id ([`Hot::daddr_id`]) stands for (an unspecified IPv4 address
    /// for an unknown id). Ids stay valid while an entry holds them.
    #[inline(always)]
    pub fn interned(&self, id: u32) -> IpAddr {
        self.addrs.ip(id)
    }

    /// The client side of the entry (protocol, caddr:cport → vaddr:vport), read in place (the
    /// cold part is not touched); `None` when the id is stale.
    #[inline]
    pub fn client_key(&self, id: ConnId) -> Option<FlowKey> {
        let e = self.slab.get(id.index as usize)?;
        (e.generation == id.generation.get()).then(|| FlowKey {
            protocol: e.protocol,
            src: unpack(&e.caddr, e.c6()),
            sport: e.cport,
            dst: self.addrs.ip(e.vaddr),
            dport: e.vport,
        })
    }

    /// The entry's expiry time, without decoding the rest; `None` when the id is stale.
    #[inline]
    pub fn expires(&self, id: ConnId) -> Option<Time> {
        let i = self.live_index(id)?;
        self.slab.get(i as usize).map(|e| e.expires)
    }

    /// True while the id names a live entry.
    #[inline]
    pub fn contains(&self, id: ConnId) -> bool {
        self.live_index(id).is_some()
    }

    /// Set the expiry time. Earlier than before: re-filed now; later: re-filed lazily. False
    /// when the id is stale.
    #[inline]
    pub fn touch(&mut self, id: ConnId, expires: Time) -> bool {
        let Some(i) = self.live_index(id) else {
            return false;
        };
        let cur = self.cur;
        let Some(e) = self.slab.get_mut(i as usize) else {
            return false;
        };
        e.expires = expires;
        if u64::from(e.slot) < WHEEL {
            let filed = cur + ((u64::from(e.slot).wrapping_sub(cur)) & WHEEL_MASK);
            let due = tick(expires).max(cur);
            if due < filed {
                self.unlink(i);
                self.file(i, expires);
            }
        }
        true
    }

    /// Set the state and the expiry time (see [`ConnTable::touch`]). False when the id is stale.
    #[inline]
    pub fn set_state(&mut self, id: ConnId, state: ConnState, expires: Time) -> bool {
        let Some(i) = self.live_index(id) else {
            return false;
        };
        let cur = self.cur;
        let Some(e) = self.slab.get_mut(i as usize) else {
            return false;
        };
        e.state = state;
        e.expires = expires;
        if u64::from(e.slot) < WHEEL {
            let filed = cur + ((u64::from(e.slot).wrapping_sub(cur)) & WHEEL_MASK);
            let due = tick(expires).max(cur);
            if due < filed {
                self.refile(i, expires);
            }
        }
        true
    }

    /// Move entry `i` to the tick of its new, earlier, expiry.
    #[cold]
    #[inline(never)]
    fn refile(&mut self, i: u32, expires: Time) {
        self.unlink(i);
        self.file(i, expires);
    }

    /// Rebind the entry to another dest id (the director's arena). False when the id is stale.
    pub fn set_dest(&mut self, id: ConnId, dest: u32) -> bool {
        let Some(i) = self.live_index(id) else {
            return false;
        };
        match self.slab.get_mut(i as usize) {
            Some(e) => {
                e.dest = dest;
                true
            }
            None => false,
        }
    }

    /// Give a `NO_CPORT` connection its client port (IPVS's `ip_vs_conn_fill_cport`), re-indexing
    /// it. False when the id is stale, the entry is not `NO_CPORT`, or the completed key exists.
    pub fn fill_cport(&mut self, id: ConnId, cport: u16) -> bool {
        let Some(i) = self.live_index(id) else {
            return false;
        };
        let Some(e) = self.slab.get(i as usize).copied() else {
            return false;
        };
        if !e.flags.contains(ConnFlags::NO_CPORT) || e.is_template() {
            return false;
        }
        let mut filled = e;
        filled.cport = cport;
        let v = self.addrs.get(e.vaddr);
        let probe = Packed {
            protocol: e.protocol,
            src: e.caddr,
            src6: e.c6(),
            sport: cport,
            dst: v.bytes,
            dst6: v.v6,
            dport: e.vport,
        };
        if self
            .find(Which::In, self.hasher.packed(&probe), &probe)
            .is_some()
        {
            return false;
        }
        let a = &self.addrs;
        let (old_in, new_in) = (
            self.hasher.entry_in(&e, a),
            self.hasher.entry_in(&filled, a),
        );
        // (Its way back, daddr:dport → vaddr:vport, does not name the client port.)
        self.index_remove(Which::In, old_in, i);
        if let Some(slot) = self.slab.get_mut(i as usize) {
            slot.cport = cport;
            slot.flags = slot.flags.difference(ConnFlags::NO_CPORT);
        }
        self.index_insert(Which::In, new_in, i);
        self.no_cport = self.no_cport.saturating_sub(1);
        true
    }

    /// Remove an entry and return it; `None` when the id is stale. Entries it controlled keep a
    /// stale `control` id.
    pub fn remove(&mut self, id: ConnId) -> Option<Conn> {
        let i = self.live_index(id)?;
        let c = self.free_entry(i);
        self.counters.removed += 1;
        Some(c)
    }

    /// Remove up to `max_items` entries whose expiry is `<= now` (pinned templates excepted),
    /// appending them to `out`; returns how many. Amortised O(expired + re-filed): see the module
    /// documentation.
    pub fn expire(&mut self, now: Time, max_items: usize, out: &mut Vec<Conn>) -> usize {
        let mut n = 0;
        if max_items == 0 || self.heads.is_empty() {
            return 0;
        }
        let tn = tick(now);
        if tn >= self.cur + WHEEL {
            self.rebuild(now, max_items, out, &mut n);
        }
        while n < max_items {
            let t = match self.next_filed_tick(self.cur) {
                Some(t) if t <= tn => t,
                _ => {
                    self.cur = self.cur.max(tn);
                    break;
                }
            };
            self.cur = t;
            self.run_slot(t, now, max_items, out, &mut n);
            if t == tn {
                break;
            }
        }
        n
    }

    /// Every entry with its id, in slab order.
    pub fn iter(&self) -> impl Iterator<Item = (ConnId, Conn)> + '_ {
        self.slab.iter().enumerate().filter_map(|(i, e)| {
            let id = make_id(u32::try_from(i).ok()?, e.generation)?;
            e.is_live().then(|| (id, self.decode(id.index)))
        })
    }

    // ---- internals ----------------------------------------------------------------------

    /// The way back of slab entry `i`, a NAT connection (see [`Vias`]).
    #[inline]
    fn way_back(&self, i: u32) -> Option<Via> {
        let e = self.slab.get(i as usize)?;
        Some(Via {
            daddr: self.addrs.get(e.daddr),
            vaddr: self.addrs.get(e.vaddr),
            refs: 0,
            dport: e.dport,
            vport: e.vport,
            protocol: e.protocol,
        })
    }

    #[inline]
    fn live_index(&self, id: ConnId) -> Option<u32> {
        let e = self.slab.get(id.index as usize)?;
        (e.generation == id.generation.get()).then_some(id.index)
    }

    #[inline]
    fn id_of(&self, i: u32) -> Option<ConnId> {
        let e = self.slab.get(i as usize)?;
        make_id(i, e.generation)
    }

    #[inline]
    fn index(&self, which: Which) -> &Index {
        match which {
            Which::In => &self.idx_in,
            Which::Template => &self.idx_tpl,
        }
    }

    /// Entry `i` decoded (a vacant one for an index out of the slab).
    #[inline]
    fn decode(&self, i: u32) -> Conn {
        let e = self.slab.get(i as usize).unwrap_or(&Entry::VACANT);
        let cold = self.cold.get(i as usize).copied().unwrap_or_default();
        e.decode(&self.addrs, cold)
    }

    #[inline(always)]
    fn find(&self, which: Which, h: u64, k: &Packed) -> Option<u32> {
        let (slab, addrs) = (&self.slab, &self.addrs);
        self.index(which).find(h, |i| {
            slab.get(i as usize).is_some_and(|e| e.matches_in(k, addrs))
        })
    }

    /// Make room in an index for one more entry (doubling it when it would pass its load
    /// limit), before the entry is written to the slab. The check is inlined into every
    /// insert; the growth, rare, is not (as one call, the check cost ~30 instructions a SYN).
    #[inline(always)]
    fn reserve(&mut self, which: Which) {
        if self.index(which).needs_grow(0) {
            self.grow(which);
        }
    }

    /// [`ConnTable::reserve`]'s growth: double the index, rebuilt from the live entries.
    #[cold]
    #[inline(never)]
    fn grow(&mut self, which: Which) {
        let hasher = self.hasher;
        let (slab, addrs) = (&self.slab, &self.addrs);
        let ix = match which {
            Which::In => &mut self.idx_in,
            Which::Template => &mut self.idx_tpl,
        };
        let hash = |e: &Entry| hasher.entry_in(e, addrs);
        let old = ix.reset(ix.grown());
        if ix_len_small(old.len(), slab.len()) {
            // Few entries: walk the old buckets.
            for i in Index::slots_of(&old) {
                if let Some(e) = slab.get(i as usize) {
                    ix.insert(hash(e), i);
                }
            }
        } else {
            // Many: walk the slab in order (sequential reads instead of one miss per entry).
            for (i, e) in slab.iter().enumerate() {
                let member = e.is_live()
                    && match which {
                        Which::In => !e.is_template(),
                        Which::Template => e.is_template(),
                    };
                if member && let Ok(i) = u32::try_from(i) {
                    ix.insert(hash(e), i);
                }
            }
        }
    }

    /// Index entry `i` (live in the slab) under `h`; [`ConnTable::reserve`] made room.
    fn index_insert(&mut self, which: Which, h: u64, i: u32) {
        match which {
            Which::In => self.idx_in.insert(h, i),
            Which::Template => self.idx_tpl.insert(h, i),
        }
    }

    fn index_remove(&mut self, which: Which, h: u64, i: u32) {
        let table = match which {
            Which::In => &mut self.idx_in,
            Which::Template => &mut self.idx_tpl,
        };
        table.remove(h, i);
    }

    /// A free slot: from the free list, or a new one (growing the slab by 1/16, up to `max`).
    fn alloc(&mut self) -> Option<u32> {
        if self.free_head != NIL {
            let i = self.free_head;
            self.free_head = self.slab.get(i as usize).map_or(NIL, |e| e.next);
            // The next insert's slot: start loading it now (free slots are cold).
            self.prefetch_insert();
            return Some(i);
        }
        let n = self.slab.len();
        if n >= MAX_ENTRIES {
            return None;
        }
        if n == self.slab.capacity() {
            let limit = self.max.max(n + 1);
            let target = (n + (n / 16).max(MIN_GROW)).min(limit);
            // Large buffers asking for huge pages before they are written (see `huge`).
            huge::reserve_exact(&mut self.slab, target - n);
            huge::reserve_exact(&mut self.cold, target - n);
        }
        self.slab.push(Entry::VACANT);
        self.cold.push(Cold::default());
        u32::try_from(n).ok()
    }

    /// Unlink entry `i` from everything and free its slot; returns it decoded.
    fn free_entry(&mut self, i: u32) -> Conn {
        self.unlink(i);
        let Some(e) = self.slab.get(i as usize).copied() else {
            return self.decode(i);
        };
        let conn = self.decode(i);
        let control_gen = self.cold.get(i as usize).map_or(0, |c| c.control_gen);
        let h_in = self.hasher.entry_in(&e, &self.addrs);
        if e.is_template() {
            self.index_remove(Which::Template, h_in, i);
        } else {
            self.index_remove(Which::In, h_in, i);
            if e.found_by_replies()
                && let Some(way) = self.way_back(i)
            {
                self.vias.release(way);
            }
            if e.flags.contains(ConnFlags::NO_CPORT) {
                self.no_cport = self.no_cport.saturating_sub(1);
            }
        }
        // Release the controlling entry; once nothing pins it, a parked one is filed again.
        let mut unpinned = None;
        if let Some(c) = self.slab.get_mut(e.control as usize)
            && c.generation == control_gen
            && c.is_live()
            && let Some(cc) = self.cold.get_mut(e.control as usize)
        {
            cc.n_control = cc.n_control.saturating_sub(1);
            if cc.n_control == 0 && c.slot == SLOT_PARKED {
                c.slot = SLOT_NONE;
                unpinned = Some(c.expires);
            }
        }
        if let Some(expires) = unpinned {
            self.file(e.control, expires);
        }
        if let Some(slot) = self.slab.get_mut(i as usize) {
            slot.generation = slot.generation.wrapping_add(1) & !1;
            slot.next = self.free_head;
            slot.prev = NIL;
            slot.slot = SLOT_NONE;
            slot.control = NIL;
        }
        if let Some(c) = self.cold.get_mut(i as usize) {
            *c = Cold::default();
        }
        self.addrs.release(e.vaddr);
        self.addrs.release(e.daddr);
        self.free_head = i;
        self.len = self.len.saturating_sub(1);
        conn
    }

    /// File entry `i` (not currently in any list) at the tick of `expires`, clamped to the wheel.
    fn file(&mut self, i: u32, expires: Time) {
        let t = tick(expires).clamp(self.cur, self.cur + WHEEL - 1);
        let s = (t & WHEEL_MASK) as usize;
        let Some(&head) = self.heads.get(s) else {
            return;
        };
        if let Some(e) = self.slab.get_mut(i as usize) {
            e.prev = NIL;
            e.next = head;
            e.slot = s as u16;
        } else {
            return;
        }
        match self.slab.get_mut(head as usize) {
            Some(h) => h.prev = i,
            None => {
                if let Some(w) = self.bits.get_mut(s / 64) {
                    *w |= 1 << (s % 64);
                }
            }
        }
        if let Some(h) = self.heads.get_mut(s) {
            *h = i;
        }
        self.filed += 1;
    }

    /// Take entry `i` out of its wheel list (no-op when parked or not filed).
    fn unlink(&mut self, i: u32) {
        let Some(e) = self.slab.get_mut(i as usize) else {
            return;
        };
        let (prev, next, slot) = (e.prev, e.next, e.slot);
        if u64::from(slot) >= WHEEL {
            return;
        }
        e.prev = NIL;
        e.next = NIL;
        e.slot = SLOT_NONE;
        let s = usize::from(slot);
        match self.slab.get_mut(prev as usize) {
            Some(p) => p.next = next,
            None => {
                if let Some(h) = self.heads.get_mut(s) {
                    *h = next;
                }
                if next == NIL
                    && let Some(w) = self.bits.get_mut(s / 64)
                {
                    *w &= !(1 << (s % 64));
                }
            }
        }
        if let Some(n) = self.slab.get_mut(next as usize) {
            n.prev = prev;
        }
        self.filed = self.filed.saturating_sub(1);
    }

    /// The smallest tick `>= from` (and `< cur + WHEEL`) whose slot holds entries.
    fn next_filed_tick(&self, from: u64) -> Option<u64> {
        let end = self.cur + WHEEL;
        if from >= end || self.filed == 0 {
            return None;
        }
        let span = end - from;
        let start = from & WHEEL_MASK;
        let mut off = 0u64;
        while off < span {
            let pos = ((start + off) & WHEEL_MASK) as usize;
            let bit = pos % 64;
            let word = self.bits.get(pos / 64).copied().unwrap_or(0) >> bit;
            if word != 0 {
                let cand = off + u64::from(word.trailing_zeros());
                return (cand < span).then_some(from + cand);
            }
            off += 64 - bit as u64;
        }
        None
    }

    /// True when live entries name entry `i` as their control (a pinned template).
    #[inline]
    fn pinned(&self, i: u32) -> bool {
        self.cold.get(i as usize).is_some_and(|c| c.n_control > 0)
    }

    /// Process the list of tick `t` (= `cur`): expire what is due, park what is pinned, re-file
    /// what was extended.
    fn run_slot(
        &mut self,
        t: u64,
        now: Time,
        max_items: usize,
        out: &mut Vec<Conn>,
        n: &mut usize,
    ) {
        let s = (t & WHEEL_MASK) as usize;
        let mut i = self.heads.get(s).copied().unwrap_or(NIL);
        while i != NIL && *n < max_items {
            let Some(e) = self.slab.get(i as usize).copied() else {
                break;
            };
            let next = e.next;
            if e.expires <= now {
                if self.pinned(i) {
                    self.unlink(i);
                    if let Some(p) = self.slab.get_mut(i as usize) {
                        p.slot = SLOT_PARKED;
                    }
                } else {
                    out.push(self.free_entry(i));
                    self.counters.expired += 1;
                    *n += 1;
                }
            } else if tick(e.expires) > t {
                self.unlink(i);
                self.file(i, e.expires);
            }
            i = next;
        }
    }

    /// After a gap of a whole wheel turn or more: take every filed entry out, move the cursor
    /// to `now`, then expire (up to the budget), park or re-file each. O(entries + slots).
    fn rebuild(&mut self, now: Time, max_items: usize, out: &mut Vec<Conn>, n: &mut usize) {
        let mut chain = NIL;
        for s in 0..WHEEL_SLOTS {
            let mut i = self.heads.get(s).copied().unwrap_or(NIL);
            if let Some(h) = self.heads.get_mut(s) {
                *h = NIL;
            }
            while let Some(e) = self.slab.get_mut(i as usize) {
                let next = e.next;
                e.next = chain;
                e.prev = NIL;
                e.slot = SLOT_NONE;
                chain = i;
                i = next;
            }
        }
        self.bits.fill(0);
        self.filed = 0;
        self.cur = tick(now);
        let mut i = chain;
        while let Some(e) = self.slab.get(i as usize).copied() {
            let next = e.next;
            if e.expires <= now && self.pinned(i) {
                if let Some(p) = self.slab.get_mut(i as usize) {
                    p.slot = SLOT_PARKED;
                    p.next = NIL;
                }
            } else if e.expires <= now && *n < max_items {
                out.push(self.free_entry(i));
                self.counters.expired += 1;
                *n += 1;
            } else {
                self.file(i, e.expires);
            }
            i = next;
        }
    }

    /// The entry to evict: the first unpinned one (other than `protect`) in tick order, after
    /// re-filing the lazily extended ones met on the way.
    fn evict_candidate(&mut self, protect: u32) -> Option<u32> {
        let last = self.cur + WHEEL - 1;
        let mut from = self.cur;
        while let Some(t) = self.next_filed_tick(from) {
            let s = (t & WHEEL_MASK) as usize;
            let mut i = self.heads.get(s).copied().unwrap_or(NIL);
            while let Some(e) = self.slab.get(i as usize).copied() {
                let next = e.next;
                if tick(e.expires).max(self.cur) > t && t < last {
                    self.unlink(i);
                    self.file(i, e.expires);
                } else if !self.pinned(i) && i != protect {
                    return Some(i);
                }
                i = next;
            }
            from = t + 1;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::proto::TcpState;
    use crate::types::SEC;
    use std::collections::HashMap;

    const T0: Time = 1_700_000_000 * SEC;

    fn v4(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn key(c: &str, cport: u16, v: &str, vport: u16) -> FlowKey {
        FlowKey {
            protocol: 6,
            src: v4(c),
            sport: cport,
            dst: v4(v),
            dport: vport,
        }
    }

    fn conn(k: FlowKey, d: &str, fwd: FwdMethod, expires: Time) -> Conn {
        Conn {
            key: k,
            daddr: v4(d),
            dport: k.dport,
            dest: 7,
            fwd,
            state: ConnState::Tcp(TcpState::Established),
            flags: ConnFlags::NONE,
            expires,
            control: None,
        }
    }

    fn nat(cport: u16, expires: Time) -> Conn {
        conn(
            key("198.51.100.1", cport, "192.0.2.10", 80),
            "10.0.0.2",
            FwdMethod::Masq,
            expires,
        )
    }

    fn table(max: usize, policy: FullPolicy) -> ConnTable {
        ConnTable::new(max, policy, 0x5eed)
    }

    fn ins(t: &mut ConnTable, c: Conn) -> ConnId {
        t.insert(c, T0).unwrap().0
    }

    /// The slab, its cold parts and the in index of a large table ask for transparent huge
    /// pages (`huge`): their mappings carry the `hg` flag, checked in `/proc/self/smaps`.
    #[cfg(target_os = "linux")]
    #[test]
    fn large_table_arrays_are_advised_for_huge_pages() {
        if huge::tests::no_thp("large_table_arrays_are_advised_for_huge_pages") {
            return;
        }
        let n: u32 = 150_000;
        let mut t = table(n as usize, FullPolicy::Refuse);
        for i in 0..n {
            let c = conn(
                key(
                    &format!("198.51.{}.{}", 100 + i / 60_000, i % 250),
                    (i % 60_000) as u16 + 1024,
                    "192.0.2.10",
                    80,
                ),
                "10.0.0.2",
                FwdMethod::DirectRoute,
                T0 + SEC,
            );
            ins(&mut t, c);
        }
        // Near the end of each array (not in its last base page, which the advice rounds
        // off): written after its last growth, so only advice taken before that growth's
        // first write can have put it in a huge-page-advised mapping.
        let last = |p: *const u8, bytes: usize| p.wrapping_add(bytes - 2 * 4096);
        let slab = last(t.slab.as_ptr().cast(), t.slab.len() * 64);
        let cold = last(t.cold.as_ptr().cast(), t.cold.len() * 8);
        let idx = t.idx_in.last_bucket().wrapping_sub(2 * 4096);
        for (what, p) in [("slab", slab), ("cold", cold), ("in index", idx)] {
            assert!(
                huge::tests::advised(p),
                "{what}: {:?}",
                huge::tests::vm_flags(p)
            );
        }
    }

    /// A hint (`Probe::hinted`) is taken only for a live connection with exactly the probe's
    /// key: a hint to a slot freed, reused by another key, or holding a template with the same
    /// key falls back to the index and answers as an unhinted lookup does.
    #[test]
    fn hints_never_change_an_answer() {
        let mut t = table(16, FullPolicy::Refuse);
        let a = nat(1000, T0 + SEC);
        let b = nat(1001, T0 + SEC);
        let ia = ins(&mut t, a);
        let probe = |t: &ConnTable, k: &FlowKey| t.probe(k, None);
        let hint_of = |t: &ConnTable, k: &FlowKey| t.prefetch_in_entries(t.key_hash(k));
        // The right hint.
        let ha = hint_of(&t, &a.key);
        assert_ne!(ha, Hint::NONE);
        assert_eq!(t.lookup_in_probe(&probe(&t, &a.key).hinted(ha)), Some(ia));
        // A's slot freed: its hint finds nothing, for A or for B.
        t.remove(ia);
        assert_eq!(t.lookup_in_probe(&probe(&t, &a.key).hinted(ha)), None);
        assert_eq!(t.lookup_in_probe(&probe(&t, &b.key).hinted(ha)), None);
        // The slot reused by B: A's stale hint does not find B for A; B is found either way.
        let ib = ins(&mut t, b);
        assert_eq!(ib.index(), ia.index(), "the freed slot is reused");
        assert_eq!(t.lookup_in_probe(&probe(&t, &a.key).hinted(ha)), None);
        assert_eq!(t.lookup_in_probe(&probe(&t, &b.key).hinted(ha)), Some(ib));
        // A back in another slot: a hint to B's slot still finds A through the index.
        let ia2 = ins(&mut t, a);
        assert_eq!(t.lookup_in_probe(&probe(&t, &a.key).hinted(ha)), Some(ia2));
        // A template with A's key is not a connection, even hinted.
        t.remove(ia2);
        t.remove(ib);
        let mut tpl = a;
        tpl.flags = ConnFlags::TEMPLATE;
        tpl.state = ConnState::Template;
        let it = ins(&mut t, tpl);
        let ht = Hint(it.index());
        assert_eq!(t.lookup_in_probe(&probe(&t, &a.key).hinted(ht)), None);
        // A hint out of the slab is harmless.
        assert_eq!(
            t.lookup_in_probe(&probe(&t, &tpl.key).hinted(Hint(u32::MAX - 1))),
            None
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(core::mem::size_of::<Entry>(), 64);
        assert_eq!(core::mem::align_of::<Entry>(), 64);
        assert_eq!(core::mem::size_of::<Cold>(), 8);
        assert_eq!(core::mem::size_of::<Option<ConnId>>(), 8);
    }

    #[test]
    fn insert_lookup_remove_v4_and_v6() {
        let mut t = table(16, FullPolicy::Refuse);
        let c4 = nat(40000, T0 + SEC);
        let k6 = FlowKey {
            protocol: 17,
            src: "2001:db8::1".parse().unwrap(),
            sport: 5353,
            dst: "2001:db8::10".parse().unwrap(),
            dport: 53,
        };
        let mut c6 = conn(k6, "10.0.0.1", FwdMethod::DirectRoute, T0 + SEC);
        c6.daddr = "2001:db8:1::2".parse().unwrap();
        c6.state = ConnState::Udp;
        let a = ins(&mut t, c4);
        let b = ins(&mut t, c6);
        assert_eq!(t.len(), 2);
        assert_eq!(t.lookup_in(&c4.key), Some(a));
        assert_eq!(t.lookup_in(&k6), Some(b));
        assert_eq!(t.get(a), Some(c4));
        assert_eq!(t.get(b), Some(c6));
        // What a packet reads in place: the dest's family and interned address included.
        for (id, c) in [(a, c4), (b, c6)] {
            let h = t.hot(id).unwrap();
            assert_eq!(h.daddr_v6, c.daddr.is_ipv6());
            assert_eq!(t.interned(h.daddr_id), c.daddr);
            assert_eq!(
                (h.dport, h.dest, h.fwd, h.state),
                (c.dport, c.dest, c.fwd, c.state)
            );
        }
        // Same bytes, other family: not the same key.
        let mapped = FlowKey {
            src: "c633:6401::".parse().unwrap(),
            dst: "c000:20a::".parse().unwrap(),
            ..c4.key
        };
        assert_eq!(t.lookup_in(&mapped), None);
        assert_eq!(
            t.lookup_in(&key("198.51.100.1", 40001, "192.0.2.10", 80)),
            None
        );
        assert_eq!(t.remove(a), Some(c4));
        assert_eq!(t.lookup_in(&c4.key), None);
        assert_eq!(t.lookup_out(&c4.out_key()), None);
        assert_eq!(t.remove(a), None);
        assert_eq!(t.len(), 1);
        assert_eq!(t.counters().removed, 1);
        assert_eq!(t.counters().inserted, 2);
    }

    /// `insert_absent` (no search for the key) makes the same entry as `insert_hashed`, in
    /// both indexes, and stays out of the way of templates and `NO_CPORT` entries, whose stored
    /// key differs from the one hashed.
    #[test]
    fn insert_absent_is_insert_without_the_search() {
        let mut a = table(16, FullPolicy::Refuse);
        let mut b = table(16, FullPolicy::Refuse);
        let c = nat(40000, T0 + SEC);
        let h = a.key_hash(&c.key);
        let ia = a.insert_hashed(c, Some(h), T0).unwrap().0;
        let ib = b.insert_absent(c, h, T0).unwrap().0;
        assert_eq!(ia, ib);
        assert_eq!(b.lookup_in(&c.key), Some(ib));
        assert_eq!(b.lookup_out(&c.out_key()), Some(ib));
        assert_eq!(b.get(ib), a.get(ia));
        // A template with the connection's key is another namespace: searched, and made.
        let mut tpl = c;
        tpl.flags = ConnFlags::TEMPLATE;
        let ti = b.insert_absent(tpl, h, T0).unwrap().0;
        assert_eq!(b.lookup_template(&c.key), Some(ti));
        assert_eq!(b.insert_absent(tpl, h, T0), Err(InsertError::Exists(ti)));
        // A NO_CPORT connection is stored under cport 0: searched under that key.
        let mut nc = nat(0, T0 + SEC);
        nc.flags = ConnFlags::NO_CPORT;
        let first = b.insert_absent(nc, 0, T0).unwrap().0;
        assert_eq!(b.insert_absent(nc, 0, T0), Err(InsertError::Exists(first)));
    }

    /// A caller that breaks `insert_absent`'s promise is caught in debug builds.
    #[cfg(debug_assertions)]
    #[test]
    #[should_panic(expected = "insert_absent of a key the table holds")]
    fn insert_absent_of_a_held_key_is_caught_in_debug_builds() {
        let mut t = table(16, FullPolicy::Refuse);
        let c = nat(40000, T0 + SEC);
        let h = t.key_hash(&c.key);
        t.insert_absent(c, h, T0).unwrap();
        let _ = t.insert_absent(c, h, T0);
    }

    #[test]
    fn out_index_is_nat_only() {
        let mut t = table(16, FullPolicy::Refuse);
        let n = nat(1000, T0 + SEC);
        let dr = conn(
            key("198.51.100.1", 1001, "192.0.2.10", 80),
            "10.0.0.2",
            FwdMethod::DirectRoute,
            T0 + SEC,
        );
        let tun = conn(
            key("198.51.100.1", 1002, "192.0.2.10", 80),
            "10.0.0.2",
            FwdMethod::Tunnel,
            T0,
        );
        let a = ins(&mut t, n);
        let b = ins(&mut t, dr);
        let c = ins(&mut t, tun);
        let reply = FlowKey {
            protocol: 6,
            src: v4("10.0.0.2"),
            sport: 80,
            dst: v4("198.51.100.1"),
            dport: 1000,
        };
        assert_eq!(n.out_key(), reply);
        assert_eq!(t.lookup_out(&reply), Some(a));
        assert_eq!(t.lookup_out(&dr.out_key()), None);
        assert_eq!(t.lookup_out(&tun.out_key()), None);
        assert_eq!(t.lookup_in(&dr.key), Some(b));
        assert_eq!(t.lookup_in(&tun.key), Some(c));
        // The in key is not taken for a reply and vice versa.
        assert_eq!(t.lookup_out(&n.key), None);
        assert_eq!(t.lookup_in(&reply), None);
    }

    /// Replies are found through the ways back of their dest: one dest port serving two VIPs
    /// (and both families), a client on both, a DR entry with the same out key that must not
    /// answer, hints that are stale or wrong, and the ways back forgotten with their last entry.
    #[test]
    fn replies_are_found_through_their_dests_ways_back() {
        let mut t = table(64, FullPolicy::Refuse);
        let on = |t: &mut ConnTable, client: &str, cport: u16, vip: &str, fwd: FwdMethod| {
            let k = key(client, cport, vip, 80);
            let mut c = conn(k, "10.0.0.2", fwd, T0 + SEC);
            c.dport = 8080;
            (ins(t, c), c)
        };
        assert!(!t.has_out_index());
        let (a, ca) = on(&mut t, "198.51.100.1", 1000, "192.0.2.10", FwdMethod::Masq);
        let (b, cb) = on(&mut t, "198.51.100.2", 1000, "192.0.2.11", FwdMethod::Masq);
        // The same client and port on the other VIP: the same reply key as `a` (which of the two
        // it names is unspecified; either is a connection it belongs to).
        let (c, cc) = on(&mut t, "198.51.100.1", 1000, "192.0.2.11", FwdMethod::Masq);
        let (d, cd) = on(
            &mut t,
            "198.51.100.3",
            1000,
            "192.0.2.10",
            FwdMethod::DirectRoute,
        );
        assert!(t.has_out_index());
        assert_eq!(ca.out_key(), cc.out_key());
        assert!([Some(a), Some(c)].contains(&t.lookup_out(&ca.out_key())));
        assert_eq!(t.lookup_out(&cb.out_key()), Some(b));
        assert_eq!(
            t.lookup_out(&cd.out_key()),
            None,
            "a DR entry is no reply's"
        );
        // Another dest port, another dest address, another protocol: no way back.
        for k in [
            FlowKey {
                sport: 8081,
                ..cb.out_key()
            },
            FlowKey {
                src: v4("10.0.0.3"),
                ..cb.out_key()
            },
            FlowKey {
                protocol: 17,
                ..cb.out_key()
            },
        ] {
            assert_eq!(t.lookup_out(&k), None);
            assert_eq!(t.prefetch_out_key(&k), None);
        }
        // Hints: the right one, a wrong one, none: the same answer.
        let o = cb.out_key();
        let right = t.prefetch_out_key(&o);
        // (Rebuilt on the dest port's first way back: b's VIP or the other one.)
        let other = FlowKey {
            dst: ca.key.dst,
            ..cb.key
        };
        assert!([Some(t.key_hash(&cb.key)), Some(t.key_hash(&other))].contains(&right));
        for hint in [right, Some(t.key_hash(&ca.key)), Some(12345), None] {
            let p = t.probe(&o, None).out_hinted(hint);
            assert_eq!(t.lookup_out_probe(&p), Some(b), "hint {hint:?}");
        }
        // A stale hint: `b` goes, then no answer at all.
        assert_eq!(t.remove(b), Some(cb));
        let p = t.probe(&o, None).out_hinted(right);
        assert_eq!(t.lookup_out_probe(&p), None);
        assert_eq!(t.lookup_out(&o), None);
        // With `a` gone, the shared reply key names `c`; with `c` gone too, nothing is left.
        t.remove(a);
        assert_eq!(t.lookup_out(&ca.out_key()), Some(c));
        t.remove(c);
        assert_eq!(t.lookup_out(&ca.out_key()), None);
        assert!(
            !t.has_out_index(),
            "ways back forgotten with their last entry"
        );
        t.remove(d);
        // IPv6 client and dest, IPv4 VIP ways back untouched by them.
        let k6 = FlowKey {
            protocol: 6,
            src: "2001:db8::1".parse().unwrap(),
            sport: 5000,
            dst: "2001:db8::10".parse().unwrap(),
            dport: 443,
        };
        let mut c6 = conn(k6, "10.0.0.2", FwdMethod::Masq, T0 + SEC);
        c6.daddr = "2001:db8:1::2".parse().unwrap();
        let i6 = ins(&mut t, c6);
        assert_eq!(t.lookup_out(&c6.out_key()), Some(i6));
        let mapped = FlowKey {
            src: "::ffff:10.0.0.2".parse().unwrap(),
            ..c6.out_key()
        };
        assert_eq!(t.lookup_out(&mapped), None);
    }

    #[test]
    fn templates_are_a_separate_namespace() {
        let mut t = table(16, FullPolicy::Refuse);
        let k = key("198.51.100.1", 0, "192.0.2.10", 80);
        let mut tpl = conn(k, "10.0.0.2", FwdMethod::Masq, T0 + 300 * SEC);
        tpl.flags = ConnFlags::TEMPLATE;
        tpl.state = ConnState::Template;
        let c = conn(k, "10.0.0.3", FwdMethod::Masq, T0 + SEC);
        let ti = ins(&mut t, tpl);
        let ci = ins(&mut t, c);
        assert_ne!(ti, ci);
        assert_eq!(t.lookup_template(&k), Some(ti));
        assert_eq!(t.lookup_in(&k), Some(ci));
        assert_eq!(t.lookup_out(&c.out_key()), Some(ci));
        assert_eq!(
            t.lookup_out(&tpl.out_key()),
            None,
            "templates are not found by replies"
        );
        assert_eq!(t.insert(tpl, T0), Err(InsertError::Exists(ti)));
        assert_eq!(t.insert(c, T0), Err(InsertError::Exists(ci)));
        t.remove(ti);
        assert_eq!(t.lookup_template(&k), None);
        assert_eq!(t.lookup_in(&k), Some(ci));
    }

    #[test]
    fn refuse_when_full_is_counted_and_bounded() {
        let mut t = table(3, FullPolicy::Refuse);
        for p in 0..3 {
            ins(&mut t, nat(p, T0 + SEC));
        }
        assert_eq!(t.insert(nat(9, T0 + SEC), T0), Err(InsertError::Full));
        assert_eq!(t.insert(nat(10, T0 + SEC), T0), Err(InsertError::Full));
        assert_eq!(t.counters().refused_full, 2);
        assert_eq!(t.len(), 3);
        assert!(t.slab.capacity() <= 3, "slab never grows past max");
        let mut zero = table(0, FullPolicy::EvictOldest);
        assert_eq!(zero.insert(nat(1, T0), T0), Err(InsertError::Full));
    }

    #[test]
    fn shrinking_max_refuses_until_below() {
        for policy in [FullPolicy::Refuse, FullPolicy::EvictOldest] {
            let mut t = table(4, policy);
            let ids: Vec<_> = (0..4).map(|p| ins(&mut t, nat(p, T0 + SEC))).collect();
            t.set_max(2);
            assert_eq!(t.len(), 4, "nothing dropped");
            assert_eq!(t.insert(nat(10, T0), T0), Err(InsertError::Full));
            t.remove(ids[0]);
            assert_eq!(t.insert(nat(10, T0), T0), Err(InsertError::Full), "3 > 2");
            t.remove(ids[1]);
            // At max now: Refuse refuses, EvictOldest evicts one.
            let r = t.insert(nat(11, T0), T0);
            match policy {
                FullPolicy::Refuse => {
                    assert_eq!(r, Err(InsertError::Full));
                    t.remove(ids[2]);
                    assert!(t.insert(nat(12, T0), T0).unwrap().1.is_none());
                }
                FullPolicy::EvictOldest => assert!(r.unwrap().1.is_some()),
            }
            assert_eq!(t.len(), 2);
        }
    }

    #[test]
    fn evict_oldest_takes_the_entry_nearest_expiry() {
        let mut t = table(3, FullPolicy::EvictOldest);
        let a = ins(&mut t, nat(1, T0 + 900 * SEC));
        let b = ins(&mut t, nat(2, T0 + 60 * SEC));
        let c = ins(&mut t, nat(3, T0 + 120 * SEC));
        // b was extended past everyone since it was filed: c is now the nearest.
        t.touch(b, T0 + 1000 * SEC);
        let (d, ev) = t.insert(nat(4, T0 + 900 * SEC), T0).unwrap();
        assert_eq!(ev, Some(nat(3, T0 + 120 * SEC)));
        assert_eq!(t.get(c), None);
        assert_eq!(t.counters().evicted, 1);
        assert_eq!(t.len(), 3);
        // Shortened entries are found at their new time.
        t.touch(a, T0 + 5 * SEC);
        let (_, ev) = t.insert(nat(5, T0 + 900 * SEC), T0).unwrap();
        assert_eq!(ev.map(|c| c.key.sport), Some(1));
        assert!(t.get(b).is_some() && t.get(d).is_some());
        assert_eq!(t.counters().evicted, 2);
    }

    #[test]
    fn eviction_skips_pinned_templates_and_the_new_entrys_template() {
        let mut t = table(2, FullPolicy::EvictOldest);
        let mut tpl = nat(0, T0 + SEC);
        tpl.flags = ConnFlags::TEMPLATE;
        let ti = ins(&mut t, tpl);
        // The template is nearest to expiry, but the new conn hangs off it.
        let mut c = nat(1, T0 + 900 * SEC);
        c.control = Some(ti);
        let ci = ins(&mut t, c);
        assert_eq!(t.get(ci).unwrap().control, Some(ti));
        // Full: the pinned template is skipped, the conn goes, which unpins the template.
        let (_, ev) = t.insert(nat(2, T0 + 900 * SEC), T0).unwrap();
        assert_eq!(ev.map(|c| c.key.sport), Some(1));
        let (_, ev) = t.insert(nat(3, T0 + 900 * SEC), T0).unwrap();
        assert_eq!(ev.map(|c| c.flags), Some(ConnFlags::TEMPLATE));
    }

    #[test]
    fn expire_returns_exactly_the_due_ones_within_budget() {
        let mut t = table(100, FullPolicy::Refuse);
        let mut ids = Vec::new();
        for p in 0..10u16 {
            ids.push(ins(&mut t, nat(p, T0 + Time::from(p) * SEC)));
        }
        let mut out = Vec::new();
        assert_eq!(t.expire(T0 + 3 * SEC, 100, &mut out), 4); // 0, 1, 2, 3 s
        let mut got: Vec<u16> = out.iter().map(|c| c.key.sport).collect();
        got.sort_unstable();
        assert_eq!(got, [0, 1, 2, 3]);
        // Nothing more due at the same instant, nor 1 ns before the next one.
        out.clear();
        assert_eq!(t.expire(T0 + 3 * SEC, 100, &mut out), 0);
        assert_eq!(t.expire(T0 + 4 * SEC - 1, 100, &mut out), 0);
        // Budget respected, the rest comes next time.
        assert_eq!(t.expire(T0 + 100 * SEC, 2, &mut out), 2);
        assert_eq!(t.expire(T0 + 100 * SEC, 0, &mut out), 0);
        assert_eq!(t.expire(T0 + 100 * SEC, 100, &mut out), 4);
        assert_eq!(out.len(), 6);
        assert!(t.is_empty());
        assert_eq!(t.counters().expired, 10);
        assert!(ids.iter().all(|&i| t.get(i).is_none()));
    }

    #[test]
    fn expire_within_one_tick_is_exact_to_the_nanosecond() {
        let mut t = table(10, FullPolicy::Refuse);
        let base = T0 - T0 % TICK_NS;
        let a = ins(&mut t, nat(1, base + 10));
        let b = ins(&mut t, nat(2, base + 20));
        let mut out = Vec::new();
        assert_eq!(t.expire(base + 9, 10, &mut out), 0);
        assert_eq!(t.expire(base + 10, 10, &mut out), 1);
        assert!(t.get(a).is_none() && t.get(b).is_some());
        assert_eq!(t.expire(base + 19, 10, &mut out), 0);
        assert_eq!(t.expire(base + 25, 10, &mut out), 1);
    }

    #[test]
    fn extended_entries_do_not_expire_early_and_shortened_ones_not_late() {
        let mut t = table(10, FullPolicy::Refuse);
        let ext = ins(&mut t, nat(1, T0 + 10 * SEC));
        let short = ins(&mut t, nat(2, T0 + 900 * SEC));
        t.touch(ext, T0 + 100 * SEC);
        assert!(t.set_state(short, ConnState::Tcp(TcpState::Close), T0 + 5 * SEC));
        let mut out = Vec::new();
        assert_eq!(t.expire(T0 + 5 * SEC, 10, &mut out), 1);
        assert_eq!(out[0].key.sport, 2);
        assert_eq!(out[0].state, ConnState::Tcp(TcpState::Close));
        assert_eq!(
            t.expire(T0 + 99 * SEC, 10, &mut out),
            0,
            "extended: not at 10 s"
        );
        assert!(t.get(ext).is_some());
        // Extend again (lazily re-filed twice), then shorten below the original.
        t.touch(ext, T0 + 500 * SEC);
        t.touch(ext, T0 + 150 * SEC);
        assert_eq!(t.expire(T0 + 149 * SEC, 10, &mut out), 0);
        assert_eq!(t.expire(T0 + 150 * SEC, 10, &mut out), 1);
        assert!(t.is_empty());
    }

    #[test]
    fn far_expiries_and_time_jumps() {
        let mut t = table(10, FullPolicy::Refuse);
        let far = ins(&mut t, nat(1, T0 + 10_000 * SEC)); // beyond one wheel turn
        let never = ins(&mut t, nat(2, Time::MAX));
        let soon = ins(&mut t, nat(3, T0 + SEC));
        let mut out = Vec::new();
        // Walk time forward in 5-minute steps: the far entry is re-filed, never expired early.
        let mut now = T0;
        while now < T0 + 9_995 * SEC {
            now += 300 * SEC;
            t.expire(now.min(T0 + 9_999 * SEC), 100, &mut out);
        }
        assert_eq!(out.len(), 1);
        assert!(t.get(soon).is_none() && t.get(far).is_some());
        // A jump of days: the wheel is rebuilt, the far entry goes, the endless one stays.
        assert_eq!(t.expire(T0 + 3 * 86_400 * SEC, 100, &mut out), 1);
        assert!(t.get(far).is_none() && t.get(never).is_some());
        // Inserting after the jump still files correctly.
        let later = T0 + 3 * 86_400 * SEC;
        let x = t.insert(nat(4, later + SEC), later).unwrap().0;
        assert_eq!(t.expire(later + SEC, 100, &mut out), 1);
        assert!(t.get(x).is_none());
        // Time going backwards is harmless.
        assert_eq!(t.expire(T0, 100, &mut out), 0);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn rebuild_respects_the_budget() {
        let mut t = table(100, FullPolicy::Refuse);
        for p in 0..20 {
            ins(&mut t, nat(p, T0 + SEC));
        }
        let mut out = Vec::new();
        let late = T0 + 86_400 * SEC;
        assert_eq!(t.expire(late, 5, &mut out), 5);
        assert_eq!(t.expire(late, 100, &mut out), 15);
        assert!(t.is_empty());
    }

    #[test]
    fn stale_ids_never_reach_a_reused_slot() {
        let mut t = table(1, FullPolicy::Refuse);
        let a = ins(&mut t, nat(1, T0 + SEC));
        t.remove(a);
        let b = ins(&mut t, nat(2, T0 + SEC));
        assert_eq!(a.index(), b.index(), "slot reused");
        assert_ne!(a, b);
        assert_eq!(t.get(a), None);
        assert!(!t.touch(a, T0 + 99 * SEC));
        assert!(!t.set_state(a, ConnState::Udp, T0));
        assert!(!t.set_dest(a, 3));
        assert_eq!(t.remove(a), None);
        assert_eq!(t.get(b).unwrap().key.sport, 2);
        assert_eq!(t.get(b).unwrap().expires, T0 + SEC);
        let mut out = Vec::new();
        t.expire(T0 + SEC, 10, &mut out);
        let c = ins(&mut t, nat(3, T0 + SEC));
        assert!(t.get(b).is_none() && t.get(c).is_some());
    }

    #[test]
    fn templates_live_while_they_control_connections() {
        let mut t = table(10, FullPolicy::Refuse);
        let mut tpl = nat(0, T0 + 10 * SEC);
        tpl.flags = ConnFlags::TEMPLATE;
        tpl.state = ConnState::Template;
        let ti = ins(&mut t, tpl);
        let mut c = nat(1, T0 + 60 * SEC);
        c.control = Some(ti);
        let ci = ins(&mut t, c);
        let mut out = Vec::new();
        assert_eq!(t.expire(T0 + 30 * SEC, 10, &mut out), 0, "pinned");
        assert!(t.get(ti).is_some());
        assert_eq!(t.expire(T0 + 60 * SEC, 10, &mut out), 1);
        assert_eq!(out[0].key.sport, 1);
        // Unpinned and already due: goes at the next call.
        assert_eq!(t.expire(T0 + 61 * SEC, 10, &mut out), 1);
        assert_eq!(out[1].flags, ConnFlags::TEMPLATE);
        assert!(t.is_empty());

        // Removing a template leaves its connections with a stale control id.
        let ti = ins(&mut t, tpl);
        c.control = Some(ti);
        let ci2 = ins(&mut t, c);
        assert!(t.remove(ti).is_some());
        assert_eq!(t.get(ci2).unwrap().control, Some(ti));
        assert!(t.get(ti).is_none());
        assert!(t.remove(ci2).is_some());
        let _ = ci;
        // A stale control at insert time is stored as None.
        let mut d = nat(5, T0 + SEC);
        d.control = Some(ti);
        let di = ins(&mut t, d);
        assert_eq!(t.get(di).unwrap().control, None);
    }

    /// Indexes grow by rebuilding from the slab (big index) or from their own buckets (a small
    /// index beside a big slab: templates); every entry stays findable, by both lookups.
    #[test]
    fn index_growth_and_hashed_lookups() {
        let mut t = table(20_000, FullPolicy::Refuse);
        let mut ids = Vec::new();
        for p in 0..5000u32 {
            let mut c = nat((p & 0xffff) as u16, T0 + SEC);
            c.key.src = IpAddr::V4(Ipv4Addr::from(0xc633_6400 + (p >> 16)));
            if p % 3 == 0 {
                c.fwd = FwdMethod::DirectRoute;
            }
            ids.push((ins(&mut t, c), c));
            if p % 50 == 0 {
                let mut tpl = c;
                tpl.key.sport = 0;
                tpl.key.src = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + p));
                tpl.flags = ConnFlags::TEMPLATE;
                tpl.state = ConnState::Template;
                tpl.fwd = FwdMethod::Masq;
                ids.push((ins(&mut t, tpl), tpl));
            }
        }
        for (n, (id, c)) in ids.iter().enumerate() {
            if n % 2 == 0 {
                assert_eq!(t.remove(*id), Some(*c));
            }
        }
        for (n, (id, c)) in ids.iter().enumerate() {
            let live = n % 2 == 1;
            let h = t.key_hash(&c.key);
            if c.flags.contains(ConnFlags::TEMPLATE) {
                assert_eq!(t.lookup_template(&c.key), live.then_some(*id));
                continue;
            }
            t.prefetch_in(h);
            t.prefetch_in_entries(h);
            assert_eq!(t.lookup_in(&c.key), live.then_some(*id));
            assert_eq!(t.lookup_in_hashed(&c.key, h), live.then_some(*id));
            let o = c.out_key();
            let want = (live && c.fwd == FwdMethod::Masq).then_some(*id);
            // A live NAT connection's reply is rebuilt into a key to prefetch.
            let ho = t.prefetch_out_key(&o);
            assert!(want.is_none() || ho.is_some());
            if let Some(ho) = ho {
                t.prefetch_out_entries(ho);
            }
            assert_eq!(t.lookup_out(&o), want);
            // The hash is trusted: one with other tag bits misses.
            assert_eq!(t.lookup_in_hashed(&c.key, h ^ (1 << 63)), None);
        }
    }

    /// VIPs and RIPs are stored once, counted, and their ids reused once unreferenced; an
    /// address that is both a VIP and a RIP shares one id.
    #[test]
    fn addresses_are_interned_and_released() {
        let mut t = table(16, FullPolicy::Refuse);
        let ids: Vec<ConnId> = (0..3).map(|p| ins(&mut t, nat(p, T0 + SEC))).collect();
        assert_eq!(t.addrs.list.len(), 2, "one VIP, one RIP");
        assert_eq!(t.addrs.list.iter().map(|(_, _, r)| r).sum::<u32>(), 6);
        for id in &ids[..2] {
            t.remove(*id);
        }
        assert_eq!(t.addrs.ids.len(), 2, "still referenced");
        t.remove(ids[2]);
        assert!(t.addrs.ids.is_empty());
        assert_eq!(t.addrs.free.len(), 2);
        let mut c = nat(9, T0 + SEC);
        c.daddr = v4("192.0.2.10");
        let id = ins(&mut t, c);
        assert_eq!(t.addrs.list.len(), 2, "ids reused");
        assert_eq!(t.addrs.ids.len(), 1, "VIP = RIP: one address");
        assert_eq!(t.get(id), Some(c));
        assert_eq!(t.lookup_out(&c.out_key()), Some(id));
    }

    #[test]
    fn no_cport_connections() {
        let mut t = table(10, FullPolicy::Refuse);
        let mut c = nat(0, T0 + SEC);
        c.flags = ConnFlags::NO_CPORT;
        let id = ins(&mut t, c);
        let k = key("198.51.100.1", 4242, "192.0.2.10", 80);
        assert_eq!(t.lookup_in(&k), Some(id), "any client port");
        assert!(t.fill_cport(id, 4242));
        assert!(!t.fill_cport(id, 4243), "already filled");
        assert_eq!(t.lookup_in(&k), Some(id));
        assert_eq!(
            t.lookup_in(&key("198.51.100.1", 4243, "192.0.2.10", 80)),
            None
        );
        assert_eq!(t.get(id).unwrap().flags, ConnFlags::NONE);
        let mut reply = c.out_key();
        reply.dport = 4242;
        assert_eq!(t.lookup_out(&reply), Some(id));
        assert_eq!(t.no_cport, 0);
    }

    #[test]
    fn iter_and_set_dest() {
        let mut t = table(10, FullPolicy::Refuse);
        let a = ins(&mut t, nat(1, T0 + SEC));
        let b = ins(&mut t, nat(2, T0 + SEC));
        t.remove(a);
        assert!(t.set_dest(b, 42));
        let all: Vec<_> = t.iter().collect();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].0, b);
        assert_eq!(all[0].1.dest, 42);
    }

    #[test]
    fn memory_is_lazy_and_bounded() {
        let mut t = table(1000, FullPolicy::Refuse);
        assert_eq!(t.memory_bytes(), 0);
        for p in 0..1000 {
            ins(&mut t, nat(p, T0 + SEC));
        }
        assert!(t.slab.capacity() <= 1000);
        assert!(t.insert(nat(5000, T0), T0).is_err());
        let mut u = table(100_000, FullPolicy::Refuse);
        for p in 0..10_000u32 {
            let mut c = nat((p & 0xffff) as u16, T0 + SEC);
            c.key.src = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + p));
            ins(&mut u, c);
        }
        assert!(u.slab.capacity() <= 10_000 + 10_000 / 16 + MIN_GROW);
    }

    // ---- property test against a plain model -------------------------------------------

    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Insert {
            client: u8,
            port: u8,
            v6: bool,
            masq: bool,
            template: bool,
            exp: u32,
            control: u8,
        },
        Remove(u8),
        Touch(u8, u32),
        SetState(u8, u32),
        Expire {
            advance: u32,
            budget: u8,
        },
    }

    fn op(far: bool) -> impl Strategy<Value = Op> {
        // Expiry offsets in ms; `far` adds ones past the wheel horizon.
        let exp = if far {
            prop_oneof![0u32..200_000, 1_000_000u32..5_000_000].boxed()
        } else {
            (0u32..200_000).boxed()
        };
        let adv = if far {
            prop_oneof![0u32..30_000, 1_200_000u32..3_000_000].boxed()
        } else {
            (0u32..30_000).boxed()
        };
        prop_oneof![
            4 => (
                (0u8..4, 0u8..6, any::<bool>(), any::<bool>()),
                (prop::bool::weighted(0.2), exp.clone(), any::<u8>()),
            )
                .prop_map(|((client, port, v6, masq), (template, exp, control))| {
                    Op::Insert { client, port, v6, masq, template, exp, control }
                }),
            1 => any::<u8>().prop_map(Op::Remove),
            2 => (any::<u8>(), exp.clone()).prop_map(|(i, e)| Op::Touch(i, e)),
            1 => (any::<u8>(), exp).prop_map(|(i, e)| Op::SetState(i, e)),
            2 => (adv, 0u8..6).prop_map(|(advance, budget)| Op::Expire { advance, budget }),
        ]
    }

    const MS: Time = 1_000_000;

    fn model_key(client: u8, port: u8, v6: bool) -> FlowKey {
        let (src, dst): (IpAddr, IpAddr) = if v6 {
            (
                format!("2001:db8::{client}").parse().unwrap(),
                "2001:db8::ffff".parse().unwrap(),
            )
        } else {
            (
                IpAddr::V4(Ipv4Addr::new(198, 51, 100, client)),
                v4("192.0.2.10"),
            )
        };
        FlowKey {
            protocol: 6,
            src,
            sport: u16::from(port),
            dst,
            dport: 80,
        }
    }

    fn run_model(ops: Vec<Op>, max: usize, policy: FullPolicy, check_victims: bool) {
        let mut t = ConnTable::new(max, policy, 42);
        let mut live: HashMap<ConnId, Conn> = HashMap::new();
        let mut issued: Vec<ConnId> = Vec::new();
        let mut now = T0;
        let mut counters = ConnTableCounters::default();
        let pinned =
            |live: &HashMap<ConnId, Conn>, id: ConnId| live.values().any(|c| c.control == Some(id));
        for op in ops {
            match op {
                Op::Insert {
                    client,
                    port,
                    v6,
                    masq,
                    template,
                    exp,
                    control,
                } => {
                    let k = model_key(client, if template { 0 } else { port }, v6);
                    let mut c = Conn {
                        key: k,
                        daddr: if v6 {
                            "2001:db8:1::1".parse().unwrap()
                        } else {
                            v4("10.0.0.1")
                        },
                        dport: 8080,
                        dest: u32::from(client),
                        fwd: if masq {
                            FwdMethod::Masq
                        } else {
                            FwdMethod::DirectRoute
                        },
                        state: if template {
                            ConnState::Template
                        } else {
                            ConnState::Tcp(TcpState::SynRecv)
                        },
                        flags: if template {
                            ConnFlags::TEMPLATE
                        } else {
                            ConnFlags::NONE
                        },
                        expires: now + Time::from(exp) * MS,
                        control: None,
                    };
                    if !template && !issued.is_empty() {
                        let cand = issued[usize::from(control) % issued.len()];
                        if live
                            .get(&cand)
                            .is_some_and(|x| x.flags.contains(ConnFlags::TEMPLATE))
                        {
                            c.control = Some(cand);
                        }
                    }
                    let dup = live.iter().find(|(_, x)| {
                        x.key == c.key && x.flags.contains(ConnFlags::TEMPLATE) == template
                    });
                    let r = t.insert(c, now);
                    if let Some((&id, _)) = dup {
                        assert_eq!(r, Err(InsertError::Exists(id)));
                        continue;
                    }
                    match r {
                        Ok((id, evicted)) => {
                            if let Some(v) = evicted {
                                assert_eq!(policy, FullPolicy::EvictOldest);
                                assert_eq!(live.len(), max);
                                let (&vid, _) = live
                                    .iter()
                                    .find(|(_, x)| **x == v)
                                    .expect("victim was live");
                                assert!(!pinned(&live, vid), "pinned entries are not evicted");
                                assert_ne!(Some(vid), c.control);
                                if check_victims {
                                    let m = tick(now);
                                    let vt = tick(v.expires).max(m);
                                    for (&oid, o) in &live {
                                        if !pinned(&live, oid) && Some(oid) != c.control {
                                            assert!(
                                                vt <= tick(o.expires).max(m),
                                                "victim not nearest"
                                            );
                                        }
                                    }
                                }
                                live.remove(&vid);
                                counters.evicted += 1;
                            } else {
                                assert!(live.len() < max);
                            }
                            live.insert(id, c);
                            issued.push(id);
                            counters.inserted += 1;
                        }
                        Err(e) => {
                            assert_eq!(e, InsertError::Full);
                            assert!(live.len() >= max);
                            if policy == FullPolicy::EvictOldest && live.len() == max {
                                let evictable = live
                                    .keys()
                                    .any(|&id| !pinned(&live, id) && Some(id) != c.control);
                                assert!(!evictable, "refused although something was evictable");
                            }
                            counters.refused_full += 1;
                        }
                    }
                }
                Op::Remove(i) => {
                    if issued.is_empty() {
                        continue;
                    }
                    let id = issued[usize::from(i) % issued.len()];
                    let r = live.remove(&id);
                    assert_eq!(t.remove(id), r);
                    if r.is_some() {
                        counters.removed += 1;
                    }
                }
                Op::Touch(i, exp) | Op::SetState(i, exp) => {
                    if issued.is_empty() {
                        continue;
                    }
                    let id = issued[usize::from(i) % issued.len()];
                    let e = now + Time::from(exp) * MS;
                    let ok = if matches!(op, Op::Touch(..)) {
                        t.touch(id, e)
                    } else {
                        t.set_state(id, ConnState::Tcp(TcpState::Close), e)
                    };
                    assert_eq!(ok, live.contains_key(&id));
                    if let Some(c) = live.get_mut(&id) {
                        c.expires = e;
                        if matches!(op, Op::SetState(..)) {
                            c.state = ConnState::Tcp(TcpState::Close);
                        }
                    }
                }
                Op::Expire { advance, budget } => {
                    now += Time::from(advance) * MS;
                    let budget = usize::from(budget);
                    let due_before: Vec<ConnId> = live
                        .iter()
                        .filter(|(id, c)| c.expires <= now && !pinned(&live, **id))
                        .map(|(id, _)| *id)
                        .collect();
                    let mut out = Vec::new();
                    let n = t.expire(now, budget, &mut out);
                    assert_eq!(n, out.len());
                    assert!(n <= budget);
                    for c in &out {
                        assert!(c.expires <= now, "expired early");
                        let (&id, _) = live
                            .iter()
                            .find(|(_, x)| *x == c)
                            .expect("expired a live entry");
                        live.remove(&id);
                        assert!(!pinned(&live, id), "expired a pinned entry");
                    }
                    if n < budget {
                        for id in &due_before {
                            assert!(!live.contains_key(id), "due entry left behind");
                        }
                    }
                    counters.expired += n as u64;
                }
            }
            // The table agrees with the model.
            assert_eq!(t.len(), live.len());
            assert_eq!(t.counters(), counters);
            for (&id, c) in &live {
                assert_eq!(t.get(id).as_ref(), Some(c));
                if c.flags.contains(ConnFlags::TEMPLATE) {
                    assert_eq!(t.lookup_template(&c.key), Some(id));
                } else {
                    assert_eq!(t.lookup_in(&c.key), Some(id));
                    let out = t.lookup_out(&c.out_key());
                    if c.fwd == FwdMethod::Masq {
                        let o = out.and_then(|o| live.get(&o)).expect("out lookup");
                        assert_eq!(o.out_key(), c.out_key());
                    } else if let Some(o) = out {
                        assert_eq!(live[&o].fwd, FwdMethod::Masq);
                    }
                }
            }
            for id in &issued {
                if !live.contains_key(id) {
                    assert_eq!(t.get(*id), None);
                }
            }
            assert_eq!(t.iter().count(), live.len());
            assert!(t.slab.len() <= max.max(1));
        }
    }

    proptest! {
        #[test]
        fn model_refuse(ops in prop::collection::vec(op(true), 1..200), max in 0usize..24) {
            run_model(ops, max, FullPolicy::Refuse, false);
        }

        #[test]
        fn model_evict(ops in prop::collection::vec(op(false), 1..200), max in 1usize..12) {
            run_model(ops, max, FullPolicy::EvictOldest, true);
        }

        #[test]
        fn model_evict_far(ops in prop::collection::vec(op(true), 1..200), max in 1usize..12) {
            run_model(ops, max, FullPolicy::EvictOldest, false);
        }
    }
}
