//! IP fragments: the director's answer to "every fragment of a datagram reaches the dest of its
//! first fragment, whatever order the fragments arrive in".
//!
//! A non-first fragment carries no transport header, so it cannot be scheduled by its ports
//! (hashing its payload as if it were ports would scatter a datagram over several dests). Two
//! mechanisms, one per kind of forwarding method:
//! - [`FragTracker`] (DR, TUN — fragments are forwarded as they are): datagrams are tracked by
//!   [`FragKey`] (source, destination, protocol, identification); the first fragment's decision
//!   is remembered for the fragments that follow it, and fragments that overtake their first are
//!   held briefly, then released in arrival order when the first is decided.
//! - [`Reassembler`] (NAT, as IPVS does — the transport checksum covers the whole datagram, so it
//!   can only be rewritten whole): RFC 791 / RFC 8200 §4.5 reassembly, with RFC 5722's rule for
//!   overlapping fragments; [`fragment_ipv4`] and [`fragment_ipv6`] split the rewritten datagram
//!   again to the path MTU.
//!
//! Like the rest of the dataplane this module does no I/O and reads no clock: time is the `now`
//! argument, in nanoseconds. All memory is bounded by [`FragLimits`]: a datagram count, a total
//! of held bytes and a fragment count per datagram; every fragment refused or dropped is counted
//! in [`FragCounters`]. Expiry is amortised: each datagram enters one timer queue when it starts
//! and leaves it once. No input panics: every offset read from a packet is checked against the
//! bytes actually present, never trusted from a header.

use core::mem;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::collections::VecDeque;

use hashbrown::HashMap;
use rvs_wire::checksum;
use rvs_wire::parse::{IpInfo, proto};

/// Largest IPv4 total length and IPv6 payload length (RFC 791, RFC 8200 §4.5; jumbograms are not
/// fragmentable).
const MAX_IP_LEN: u32 = 65_535;
/// Largest fragment offset the 13-bit field can carry, in bytes.
const MAX_FRAG_OFFSET: usize = 0x1fff * 8;
/// IPv4 header without options.
const IPV4_MIN_HEADER: usize = 20;
/// IPv6 fixed header.
const IPV6_HEADER: usize = 40;
/// IPv6 Fragment header.
const IPV6_FRAG_HEADER: usize = 8;
/// RFC 791: every IPv4 module must forward a 68-byte datagram without fragmenting it.
const IPV4_MIN_MTU: usize = 68;
/// RFC 8200 §5: every IPv6 link carries 1280-byte packets.
const IPV6_MIN_MTU: usize = 1280;
/// IPv4 flags: More Fragments.
const IPV4_MF: u16 = 0x2000;
/// IPv4 flags: Don't Fragment.
const IPV4_DF: u16 = 0x4000;
/// IPv4 flags: the reserved bit and DF, kept as they are by fragmentation and reassembly.
const IPV4_KEPT_FLAGS: u16 = 0xc000;
/// IPv6 extension headers walked before the Fragment header.
const IPV6_HOP_BY_HOP: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_DEST_OPTS: u8 = 60;
const IPV6_AUTH: u8 = 51;
/// Tables never preallocate more than this many entries, whatever the limits say.
const PREALLOC: usize = 4096;

/// Identifies one datagram's fragments: source, destination, protocol and identification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FragKey {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// IPv4: the header's protocol field. IPv6: always 44 (see [`FragKey::of`]).
    pub protocol: u8,
    /// Identification (16 bits for IPv4, 32 for IPv6).
    pub ident: u32,
}

impl FragKey {
    /// The key of a fragment's datagram, or `None` when `ip` is not a fragment.
    ///
    /// IPv6 keys carry protocol 44 (the Fragment header) rather than the upper-layer protocol:
    /// RFC 8200 §4.5 identifies a datagram by addresses and Identification alone, and the
    /// protocol a parser reports for a later fragment is not reliable (headers that follow the
    /// Fragment header belong to the fragmented data). For IPv4 the reported protocol is the
    /// header's own field, except with AH, which no load-balanced flow carries.
    pub fn of(ip: &IpInfo) -> Option<FragKey> {
        let f = ip.fragment?;
        Some(FragKey {
            src: ip.src,
            dst: ip.dst,
            protocol: if ip.is_ipv4() {
                ip.protocol
            } else {
                proto::IPV6_FRAG
            },
            ident: f.ident,
        })
    }
}

/// Bounds on what fragment handling may hold; every field has a documented default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragLimits {
    /// Datagrams tracked at once (default 1024).
    pub max_datagrams: usize,
    /// Bytes of fragments held at once, all datagrams together (default 4 MiB, Linux's
    /// `ipfrag_high_thresh`).
    pub max_bytes: usize,
    /// Fragments held per datagram (default 64: a 64 KiB datagram in 1280-byte IPv6 packets is 54).
    pub max_frags_per_datagram: usize,
    /// How long a datagram is tracked after its first fragment arrives (or, for [`FragTracker`],
    /// after its first fragment is decided), in nanoseconds (default 2 s; IPVS and Linux allow 30 s
    /// for reassembly, but fragments of a datagram travel back to back, and a short hold bounds
    /// both memory and the reuse of 16-bit IPv4 identifications).
    pub timeout: u64,
}

impl Default for FragLimits {
    fn default() -> Self {
        FragLimits {
            max_datagrams: 1024,
            max_bytes: 4 << 20,
            max_frags_per_datagram: 64,
            timeout: 2_000_000_000,
        }
    }
}

/// What fragment handling did, counted in fragments (except `reassembled`, in datagrams).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FragCounters {
    /// Fragments stored (held by the tracker, queued by the reassembler).
    pub held: u64,
    /// Stored fragments handed back (by [`FragTracker::decided`] or in a reassembled datagram).
    pub released: u64,
    /// Stored fragments dropped because their datagram timed out.
    pub expired: u64,
    /// Fragments refused, or stored fragments dropped, because a limit was hit.
    pub overflow: u64,
    /// Datagrams reassembled.
    pub reassembled: u64,
    /// Fragments refused, or stored fragments dropped, as overlapping, inconsistent, too big or
    /// malformed.
    pub bad: u64,
}

/// Why a fragment was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum FragDrop {
    /// A limit on datagrams or held bytes was hit.
    #[error("fragment limits reached")]
    Overflow,
    /// The datagram has more fragments than the per-datagram limit.
    #[error("too many fragments in one datagram")]
    TooManyFragments,
    /// Fragments overlap (RFC 5722 for IPv6; inconsistent overlaps for IPv4): the whole datagram
    /// is dropped.
    #[error("overlapping fragments")]
    Overlap,
    /// The reassembled datagram would exceed 65535 bytes.
    #[error("reassembled datagram too big")]
    TooBig,
    /// The fragment is malformed or contradicts the datagram's other fragments.
    #[error("malformed fragment")]
    Malformed,
}

impl FragDrop {
    /// Stable snake_case name, used as a metrics label.
    pub fn name(&self) -> &'static str {
        match self {
            FragDrop::Overflow => "overflow",
            FragDrop::TooManyFragments => "too_many_fragments",
            FragDrop::Overlap => "overlap",
            FragDrop::TooBig => "too_big",
            FragDrop::Malformed => "malformed",
        }
    }

    /// True for the drops caused by limits (counted as `overflow`, the others as `bad`).
    fn is_limit(self) -> bool {
        matches!(self, FragDrop::Overflow | FragDrop::TooManyFragments)
    }
}

/// Why a datagram could not be fragmented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum FragError {
    /// IPv4 Don't Fragment is set: the caller sends ICMP fragmentation-needed instead (RFC 1191).
    #[error("datagram too big and Don't Fragment is set")]
    DontFragment,
    /// The MTU is below the protocol minimum (68 for IPv4, 1280 for IPv6), or leaves no room for
    /// data after the headers every fragment repeats.
    #[error("MTU too small")]
    MtuTooSmall,
    /// The IPv6 packet already carries a Fragment header.
    #[error("packet already fragmented")]
    AlreadyFragmented,
    /// The packet's headers or lengths are inconsistent.
    #[error("malformed packet")]
    Malformed,
}

impl FragError {
    /// Stable snake_case name, used as a metrics label.
    pub fn name(&self) -> &'static str {
        match self {
            FragError::DontFragment => "dont_fragment",
            FragError::MtuTooSmall => "mtu_too_small",
            FragError::AlreadyFragmented => "already_fragmented",
            FragError::Malformed => "malformed",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The aging table both trackers share.

/// A table entry with its timer.
#[derive(Debug)]
struct Slot<V> {
    value: V,
    deadline: u64,
    generation: u64,
}

/// A timer queue entry; stale when the slot's generation has moved on.
#[derive(Debug, Clone, Copy)]
struct Due {
    deadline: u64,
    key: FragKey,
    generation: u64,
}

/// A bounded map from [`FragKey`] with a FIFO timer queue.
///
/// Deadlines are `start + timeout` with one timeout for all entries, so with a non-decreasing
/// `now` the queue is in deadline order and expiry pops from its front. (If `now` goes backwards,
/// as a capture's timestamps may, entries still expire — later — and lookups check their own
/// deadline, so no stale entry is ever answered.) Restarting a timer pushes a new queue entry and
/// leaves the old one stale; the queue is compacted when stale entries make up half of it, so it
/// never holds more than `2 × capacity + 16` entries and compaction is amortised O(1).
#[derive(Debug)]
struct Aging<V> {
    map: HashMap<FragKey, Slot<V>>,
    queue: VecDeque<Due>,
    next_generation: u64,
    capacity: usize,
    timeout: u64,
}

impl<V> Aging<V> {
    fn new(capacity: usize, timeout: u64) -> Self {
        Aging {
            map: HashMap::with_capacity(capacity.min(PREALLOC)),
            queue: VecDeque::with_capacity(capacity.min(PREALLOC)),
            next_generation: 0,
            capacity,
            timeout,
        }
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn is_full(&self) -> bool {
        self.map.len() >= self.capacity
    }

    fn get_mut(&mut self, key: &FragKey) -> Option<&mut V> {
        self.map.get_mut(key).map(|s| &mut s.value)
    }

    fn remove(&mut self, key: &FragKey) -> Option<V> {
        self.map.remove(key).map(|s| s.value)
    }

    /// Remove and return `key`'s entry if its deadline has passed.
    fn take_if_due(&mut self, key: &FragKey, now: u64) -> Option<V> {
        if self.map.get(key).is_some_and(|s| now >= s.deadline) {
            self.remove(key)
        } else {
            None
        }
    }

    /// Insert a new entry (the caller checked it is absent and there is room).
    fn insert(&mut self, key: FragKey, value: V, now: u64) {
        let (deadline, generation) = self.next_timer(now);
        self.map.insert(
            key,
            Slot {
                value,
                deadline,
                generation,
            },
        );
        self.push(Due {
            deadline,
            key,
            generation,
        });
    }

    /// Start `key`'s timer again from `now`.
    fn restart(&mut self, key: &FragKey, now: u64) {
        let (deadline, generation) = self.next_timer(now);
        if let Some(s) = self.map.get_mut(key) {
            s.deadline = deadline;
            s.generation = generation;
            self.push(Due {
                deadline,
                key: *key,
                generation,
            });
        }
    }

    /// Remove and return the oldest entry whose deadline has passed.
    fn pop_due(&mut self, now: u64) -> Option<V> {
        self.pop_front_live(Some(now))
    }

    /// Remove and return the oldest entry, due or not.
    fn pop_oldest(&mut self) -> Option<V> {
        self.pop_front_live(None)
    }

    fn pop_front_live(&mut self, now: Option<u64>) -> Option<V> {
        while let Some(due) = self.queue.front().copied() {
            let live = self
                .map
                .get(&due.key)
                .is_some_and(|s| s.generation == due.generation);
            if live && now.is_some_and(|now| now < due.deadline) {
                return None;
            }
            self.queue.pop_front();
            if live {
                return self.remove(&due.key);
            }
        }
        None
    }

    fn next_timer(&mut self, now: u64) -> (u64, u64) {
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1);
        (now.saturating_add(self.timeout), generation)
    }

    fn push(&mut self, due: Due) {
        self.queue.push_back(due);
        if self.queue.len() > self.capacity.saturating_mul(2).saturating_add(16) {
            let map = &self.map;
            self.queue.retain(|d| {
                map.get(&d.key)
                    .is_some_and(|s| s.generation == d.generation)
            });
        }
    }
}

// ---------------------------------------------------------------------------------------------
// DR / TUN: follow the first fragment's decision.

/// One tracked datagram: its decision once the first fragment is decided, and the fragments
/// that arrived before it.
#[derive(Debug)]
struct Tracked<D> {
    decision: Option<D>,
    held: Vec<Vec<u8>>,
    bytes: usize,
}

/// DR/TUN: later fragments follow the decision taken on the first fragment (D = whatever the dataplane decides, e.g. a conn id).
///
/// Call order for a fragment: a first fragment (offset 0) is scheduled like any packet, then
/// [`decided`](Self::decided) records the decision and returns the fragments that overtook it; a
/// non-first fragment asks [`lookup`](Self::lookup) and, if the answer is `None`, is
/// [`hold`](Self::hold)-ed. A decision lives for [`FragLimits::timeout`] after it is taken (it is
/// not extended by lookups, so a reused IPv4 identification meets a stale decision for at most
/// that long); held fragments live for the timeout after the datagram's first held fragment.
#[derive(Debug)]
pub struct FragTracker<D: Copy> {
    limits: FragLimits,
    table: Aging<Tracked<D>>,
    bytes: usize,
    counters: FragCounters,
}

impl<D: Copy> FragTracker<D> {
    /// An empty tracker bounded by `limits`.
    pub fn new(limits: FragLimits) -> Self {
        FragTracker {
            limits,
            table: Aging::new(limits.max_datagrams, limits.timeout),
            bytes: 0,
            counters: FragCounters::default(),
        }
    }

    /// The first fragment (offset 0) was decided: remember it; returns fragments of this datagram that arrived earlier and were held (to forward now, in arrival order).
    ///
    /// A decision for a key already decided replaces it (a new datagram reusing the
    /// identification) and restarts its timer. When the table is full the oldest datagram is
    /// evicted to make room (its held fragments counted as `overflow`): a decided first fragment
    /// is worth more than fragments whose first never came.
    pub fn decided(&mut self, key: FragKey, decision: D, now: u64) -> Vec<Vec<u8>> {
        self.expire(now);
        self.expire_key(&key, now);
        if let Some(t) = self.table.get_mut(&key) {
            t.decision = Some(decision);
            let held = mem::take(&mut t.held);
            let bytes = mem::take(&mut t.bytes);
            self.table.restart(&key, now);
            self.bytes = self.bytes.saturating_sub(bytes);
            self.counters.released += held.len() as u64;
            return held;
        }
        if self.table.is_full()
            && let Some(old) = self.table.pop_oldest()
        {
            self.forget(old, Forget::Overflow);
        }
        if !self.table.is_full() {
            let t = Tracked {
                decision: Some(decision),
                held: Vec::new(),
                bytes: 0,
            };
            self.table.insert(key, t, now);
        }
        Vec::new()
    }

    /// A non-first fragment: its datagram's decision if known.
    pub fn lookup(&mut self, key: &FragKey, now: u64) -> Option<D> {
        self.expire(now);
        self.expire_key(key, now);
        self.table.get_mut(key).and_then(|t| t.decision)
    }

    /// A non-first fragment whose first has not been seen: hold a copy (bounded); Err(FragDrop::Overflow) when limits are hit.
    ///
    /// `Err(FragDrop::TooManyFragments)` when the datagram already holds
    /// [`FragLimits::max_frags_per_datagram`] fragments. Either way the fragment is counted as
    /// `overflow`. Call only after [`lookup`](Self::lookup) returned `None`: a fragment held for
    /// a datagram already decided waits for the next decision of its key, or expires.
    pub fn hold(&mut self, key: FragKey, frame: &[u8], now: u64) -> Result<(), FragDrop> {
        self.expire(now);
        self.expire_key(&key, now);
        let r = self.try_hold(key, frame, now);
        match r {
            Ok(()) => self.counters.held += 1,
            Err(_) => self.counters.overflow += 1,
        }
        r
    }

    fn try_hold(&mut self, key: FragKey, frame: &[u8], now: u64) -> Result<(), FragDrop> {
        if frame.len() > self.limits.max_bytes.saturating_sub(self.bytes) {
            return Err(FragDrop::Overflow);
        }
        let per_datagram = self.limits.max_frags_per_datagram;
        let full = self.table.is_full();
        match self.table.get_mut(&key) {
            Some(t) if t.held.len() >= per_datagram => return Err(FragDrop::TooManyFragments),
            Some(t) => {
                t.held.push(frame.to_vec());
                t.bytes += frame.len();
            }
            None if per_datagram == 0 => return Err(FragDrop::TooManyFragments),
            None if full => return Err(FragDrop::Overflow),
            None => {
                let t = Tracked {
                    decision: None,
                    held: vec![frame.to_vec()],
                    bytes: frame.len(),
                };
                self.table.insert(key, t, now);
            }
        }
        self.bytes += frame.len();
        Ok(())
    }

    /// Forget datagrams idle past the timeout (held frames dropped and counted as expired). Amortised, bounded work.
    ///
    /// A datagram's idle time counts from its first held fragment or its latest decision,
    /// whichever is later; lookups and later held fragments do not refresh it. Each datagram is
    /// removed once, so the work is amortised O(1) per datagram, and one call
    /// never does more than the table holds. The other methods call it too, so memory stays
    /// bounded even if the caller never does.
    pub fn expire(&mut self, now: u64) {
        while let Some(t) = self.table.pop_due(now) {
            self.forget(t, Forget::Expired);
        }
    }

    /// The counters so far.
    pub fn counters(&self) -> FragCounters {
        self.counters
    }

    /// Datagrams tracked now (decided or holding fragments).
    pub fn datagrams(&self) -> usize {
        self.table.len()
    }

    /// Bytes of fragments held now.
    pub fn held_bytes(&self) -> usize {
        self.bytes
    }

    fn expire_key(&mut self, key: &FragKey, now: u64) {
        if let Some(t) = self.table.take_if_due(key, now) {
            self.forget(t, Forget::Expired);
        }
    }

    fn forget(&mut self, t: Tracked<D>, why: Forget) {
        self.bytes = self.bytes.saturating_sub(t.bytes);
        let n = t.held.len() as u64;
        match why {
            Forget::Expired => self.counters.expired += n,
            Forget::Overflow => self.counters.overflow += n,
        }
    }
}

/// Why a tracked datagram's held fragments were dropped.
#[derive(Debug, Clone, Copy)]
enum Forget {
    Expired,
    Overflow,
}

// ---------------------------------------------------------------------------------------------
// NAT: reassembly.

/// A fragment's data at its offset in the datagram.
#[derive(Debug)]
struct Piece {
    offset: u32,
    data: Vec<u8>,
}

impl Piece {
    fn end(&self) -> u32 {
        self.offset + self.data.len() as u32
    }
}

/// The headers the reassembled datagram takes from its first fragment.
#[derive(Debug)]
struct Head {
    /// IPv4: the header with options. IPv6: the header and the extension headers before the
    /// Fragment header.
    bytes: Vec<u8>,
    /// IPv6: where the next-header field pointing at the Fragment header is.
    next_header_at: usize,
    /// IPv6: the Fragment header's next header.
    next_header: u8,
}

/// One datagram under reassembly, or a dead one (dropped, remembered until its timeout so the
/// rest of its fragments are dropped too, as RFC 5722 asks).
#[derive(Debug, Default)]
struct Datagram {
    head: Option<Head>,
    /// Sorted by offset. IPv4 pieces may overlap where their bytes agree; IPv6 pieces never do.
    pieces: Vec<Piece>,
    /// Data length, known once the last fragment (MF = 0) arrived.
    end: Option<u32>,
    bytes: usize,
    dead: Option<FragDrop>,
}

/// NAT: whole-datagram reassembly (RFC 791 / RFC 8200 §4.5), bounded.
///
/// Policy, fragment by fragment:
/// - an exact duplicate (same offset, same bytes) is ignored (RFC 8200 §4.5 allows it);
/// - IPv6: any other overlap drops the whole datagram (RFC 5722); IPv4: an overlap whose bytes
///   agree is accepted, one whose bytes differ drops the whole datagram;
/// - a datagram that would exceed 65535 bytes, contradicting last fragments, data past the
///   last fragment's end, or more fragments than the limit drop the whole datagram;
/// - a dropped datagram is remembered (without its data) until its timeout, and its later
///   fragments are refused with the same reason;
/// - a non-last fragment whose length is not a multiple of 8, or that is empty, and a packet
///   whose IPv4 header checksum is wrong, are refused alone (`Malformed`);
/// - a new datagram is refused (`Overflow`) when `max_datagrams` are under reassembly, and a
///   fragment when it would take the held bytes past `max_bytes`: under a flood, datagrams in
///   progress are not evicted (as Linux does since 4.17);
/// - a datagram is dropped, and its fragments counted as `expired`, `timeout` after its first
///   fragment arrived (not extended by later fragments, as in Linux).
#[derive(Debug)]
pub struct Reassembler {
    limits: FragLimits,
    table: Aging<Datagram>,
    bytes: usize,
    counters: FragCounters,
}

impl Reassembler {
    /// An empty reassembler bounded by `limits`.
    pub fn new(limits: FragLimits) -> Self {
        Reassembler {
            limits,
            table: Aging::new(limits.max_datagrams, limits.timeout),
            bytes: 0,
            counters: FragCounters::default(),
        }
    }

    /// Add one fragment: `packet` starts at the IP header (the caller strips the link layer), `ip` is its parse. Returns the reassembled datagram (IP header from the first fragment with total/payload length fixed, MF cleared and offset 0 for IPv4 + header checksum recomputed; for IPv6 the Fragment header removed and the preceding next-header field patched, payload length fixed) once complete.
    ///
    /// The packet's own bytes are read again (bytes after the IP length are link padding and
    /// ignored); `ip`'s addresses and fragment facts must agree with them, else `Malformed`
    /// (its offsets are not used). A packet that is not a fragment comes back whole at once,
    /// and an IPv6 atomic fragment (offset 0, M = 0, RFC 6946) comes back without its Fragment
    /// header; neither is counted.
    pub fn add(
        &mut self,
        packet: &[u8],
        ip: &IpInfo,
        now: u64,
    ) -> Result<Option<Vec<u8>>, FragDrop> {
        self.expire(now);
        let r = self.add_checked(packet, ip, now);
        if let Err(e) = r {
            if e.is_limit() {
                self.counters.overflow += 1;
            } else {
                self.counters.bad += 1;
            }
        }
        r
    }

    /// Forget datagrams whose timeout has passed (their fragments counted as `expired`). Amortised, bounded work.
    pub fn expire(&mut self, now: u64) {
        while let Some(d) = self.table.pop_due(now) {
            self.bytes = self.bytes.saturating_sub(d.bytes);
            self.counters.expired += d.pieces.len() as u64;
        }
    }

    /// The counters so far.
    pub fn counters(&self) -> FragCounters {
        self.counters
    }

    /// Datagrams under reassembly now (dead ones remembered until their timeout included).
    pub fn datagrams(&self) -> usize {
        self.table.len()
    }

    /// Bytes of fragments held now.
    pub fn held_bytes(&self) -> usize {
        self.bytes
    }

    fn add_checked(
        &mut self,
        packet: &[u8],
        ip: &IpInfo,
        now: u64,
    ) -> Result<Option<Vec<u8>>, FragDrop> {
        let (src, dst, parsed) = read_fragment(packet)?;
        if src != ip.src || dst != ip.dst {
            return Err(FragDrop::Malformed);
        }
        let frag = match parsed {
            Parsed::Whole(p) if ip.fragment.is_none() => return Ok(Some(p.to_vec())),
            Parsed::Whole(_) => return Err(FragDrop::Malformed),
            Parsed::Frag(f) => f,
        };
        if frag.offset == 0 && !frag.more {
            // An IPv6 atomic fragment: a whole datagram with a Fragment header (RFC 6946 §4).
            if ip.fragment.is_some() {
                return Err(FragDrop::Malformed);
            }
            let head = Head {
                bytes: frag.head.to_vec(),
                next_header_at: frag.next_header_at,
                next_header: frag.next_header,
            };
            let piece = Piece {
                offset: 0,
                data: frag.data.to_vec(),
            };
            let len = frag.data.len() as u32;
            return assemble(frag.v6, &head, core::slice::from_ref(&piece), len).map(Some);
        }
        let agrees = ip.fragment.is_some_and(|f| {
            f.ident == frag.key.ident && u32::from(f.offset) == frag.offset && f.more == frag.more
        });
        if !agrees {
            return Err(FragDrop::Malformed);
        }
        self.add_fragment(&frag, now)
    }

    fn add_fragment(&mut self, frag: &FragView<'_>, now: u64) -> Result<Option<Vec<u8>>, FragDrop> {
        let key = frag.key;
        let data_len = frag.data.len() as u32;
        let end = frag.offset + data_len;
        if frag.more && (data_len == 0 || !data_len.is_multiple_of(8)) {
            // RFC 8200 §4.5: a fragment with M set must be a multiple of 8 bytes; RFC 791 the same.
            return Err(FragDrop::Malformed);
        }
        if let Some(old) = self.table.take_if_due(&key, now) {
            self.bytes = self.bytes.saturating_sub(old.bytes);
            self.counters.expired += old.pieces.len() as u64;
        }
        if frag.unfragmentable_len() + end > MAX_IP_LEN {
            return self.kill(&key, FragDrop::TooBig);
        }
        if self.table.get_mut(&key).is_none() {
            if self.table.is_full() {
                return Err(FragDrop::Overflow);
            }
            self.table.insert(key, Datagram::default(), now);
        }
        let r = self.store(frag, end);
        match r {
            Ok(Stored::Complete) => self.complete(&key),
            Ok(Stored::Kept | Stored::Duplicate) => Ok(None),
            Err(Refuse::Datagram(e)) => self.kill(&key, e),
            Err(Refuse::Fragment(e)) => {
                // Do not leave an empty datagram behind a refused first fragment.
                if self
                    .table
                    .get_mut(&key)
                    .is_some_and(|d| d.pieces.is_empty() && d.dead.is_none())
                {
                    self.table.remove(&key);
                }
                Err(e)
            }
        }
    }

    /// Check `frag` against its datagram and store it.
    fn store(&mut self, frag: &FragView<'_>, end: u32) -> Result<Stored, Refuse> {
        let max_frags = self.limits.max_frags_per_datagram;
        let room = self.limits.max_bytes.saturating_sub(self.bytes);
        let Some(d) = self.table.get_mut(&frag.key) else {
            return Err(Refuse::Fragment(FragDrop::Overflow));
        };
        if let Some(e) = d.dead {
            return Err(Refuse::Fragment(e));
        }
        // The datagram's end: one last fragment, nothing beyond it (RFC 791, RFC 8200 §4.5).
        let max_end = d.pieces.iter().map(Piece::end).max().unwrap_or(0);
        if !frag.more {
            if d.end.is_some_and(|e| e != end) || max_end > end {
                return Err(Refuse::Datagram(FragDrop::Malformed));
            }
        } else if d.end.is_some_and(|e| end > e) {
            return Err(Refuse::Datagram(FragDrop::Malformed));
        }
        // Each fragment was checked against 65535 with its own headers; the datagram takes the
        // first fragment's, which may be longer (IPv4 options not copied into later fragments).
        let first = frag.offset == 0 && d.head.is_none();
        let head_len = match &d.head {
            Some(h) => Some(h.bytes.len()),
            None => first.then_some(frag.head.len()),
        };
        let known_end = if frag.more { d.end } else { Some(end) };
        if let (Some(hl), Some(e)) = (head_len, known_end) {
            let fixed = if frag.v6 { IPV6_HEADER } else { 0 };
            if hl.saturating_sub(fixed) as u32 + e > MAX_IP_LEN {
                return Err(Refuse::Datagram(FragDrop::TooBig));
            }
        }
        if d.pieces
            .iter()
            .any(|p| p.offset == frag.offset && p.data == frag.data)
        {
            return Ok(Stored::Duplicate);
        }
        for p in &d.pieces {
            let lo = p.offset.max(frag.offset);
            let hi = p.end().min(end);
            if lo >= hi {
                continue;
            }
            // RFC 5722: overlapping IPv6 fragments drop the datagram. IPv4 (RFC 791) accepts
            // overlaps, but one whose bytes differ is an attack or corruption: drop it too.
            let same = p.data.get(span(lo - p.offset, hi - p.offset))
                == frag.data.get(span(lo - frag.offset, hi - frag.offset));
            if frag.v6 || !same {
                return Err(Refuse::Datagram(FragDrop::Overlap));
            }
        }
        if !frag.v6 && !frag.data.is_empty() && (frag.more || d.end.is_some()) {
            // IPv4: a fragment wholly inside what is already held adds nothing.
            let mut covered = frag.offset;
            for p in &d.pieces {
                if p.offset > covered {
                    break;
                }
                covered = covered.max(p.end());
            }
            if covered >= end {
                return Ok(Stored::Duplicate);
            }
        }
        if d.pieces.len() >= max_frags {
            return Err(Refuse::Datagram(FragDrop::TooManyFragments));
        }
        let add = frag.data.len() + if first { frag.head.len() } else { 0 };
        if add > room {
            return Err(Refuse::Fragment(FragDrop::Overflow));
        }
        if first {
            d.head = Some(Head {
                bytes: frag.head.to_vec(),
                next_header_at: frag.next_header_at,
                next_header: frag.next_header,
            });
        }
        if !frag.more {
            d.end = Some(end);
        }
        let at = d.pieces.partition_point(|p| p.offset <= frag.offset);
        d.pieces.insert(
            at,
            Piece {
                offset: frag.offset,
                data: frag.data.to_vec(),
            },
        );
        d.bytes += add;
        self.bytes += add;
        self.counters.held += 1;
        let complete = d.head.is_some()
            && d.end.is_some_and(|end| {
                let mut covered = 0;
                for p in &d.pieces {
                    if p.offset > covered {
                        return false;
                    }
                    covered = covered.max(p.end());
                }
                covered >= end
            });
        Ok(if complete {
            Stored::Complete
        } else {
            Stored::Kept
        })
    }

    /// The datagram `key` is complete: build it and forget it.
    fn complete(&mut self, key: &FragKey) -> Result<Option<Vec<u8>>, FragDrop> {
        let Some(d) = self.table.get_mut(key) else {
            return Ok(None);
        };
        let (Some(head), Some(end)) = (&d.head, d.end) else {
            return Ok(None);
        };
        let v6 = key.src.is_ipv6();
        match assemble(v6, head, &d.pieces, end) {
            Ok(out) => {
                if let Some(d) = self.table.remove(key) {
                    self.bytes = self.bytes.saturating_sub(d.bytes);
                    self.counters.released += d.pieces.len() as u64;
                    self.counters.reassembled += 1;
                }
                Ok(Some(out))
            }
            Err(e) => self.kill(key, e),
        }
    }

    /// Drop the datagram `key`'s fragments for `why`, remember it dead until its timeout, and
    /// refuse the fragment at hand with `why`.
    fn kill<T>(&mut self, key: &FragKey, why: FragDrop) -> Result<T, FragDrop> {
        if let Some(d) = self.table.get_mut(key) {
            let dropped = mem::replace(
                d,
                Datagram {
                    dead: Some(why),
                    ..Datagram::default()
                },
            );
            self.bytes = self.bytes.saturating_sub(dropped.bytes);
            let n = dropped.pieces.len() as u64;
            if why.is_limit() {
                self.counters.overflow += n;
            } else {
                self.counters.bad += n;
            }
        }
        Err(why)
    }
}

/// What [`Reassembler::store`] did with a fragment.
enum Stored {
    Kept,
    Duplicate,
    Complete,
}

/// What [`Reassembler::store`] refused: the fragment alone, or the whole datagram.
enum Refuse {
    Fragment(FragDrop),
    Datagram(FragDrop),
}

fn span(lo: u32, hi: u32) -> core::ops::Range<usize> {
    lo as usize..hi as usize
}

/// A fragment as read from its own bytes.
struct FragView<'a> {
    key: FragKey,
    v6: bool,
    /// Fragment offset in bytes.
    offset: u32,
    more: bool,
    /// IPv4: the header with options. IPv6: everything before the Fragment header.
    head: &'a [u8],
    /// IPv6: where the next-header field pointing at the Fragment header is.
    next_header_at: usize,
    /// IPv6: the Fragment header's next header.
    next_header: u8,
    data: &'a [u8],
}

impl FragView<'_> {
    /// Bytes the reassembled datagram's length field counts besides the data: the IPv4 header,
    /// or the IPv6 extension headers before the Fragment header.
    fn unfragmentable_len(&self) -> u32 {
        let fixed = if self.v6 { IPV6_HEADER } else { 0 };
        self.head.len().saturating_sub(fixed) as u32
    }
}

enum Parsed<'a> {
    /// Not a fragment: the packet without link padding.
    Whole(&'a [u8]),
    Frag(FragView<'a>),
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    match b.get(at..at + 2) {
        Some(&[x, y]) => Some(u16::from_be_bytes([x, y])),
        _ => None,
    }
}

/// Read a packet's addresses and fragment facts from its bytes.
fn read_fragment(packet: &[u8]) -> Result<(IpAddr, IpAddr, Parsed<'_>), FragDrop> {
    match packet.first().map(|b| b >> 4) {
        Some(4) => read_ipv4(packet).ok_or(FragDrop::Malformed),
        Some(6) => read_ipv6(packet).ok_or(FragDrop::Malformed),
        _ => Err(FragDrop::Malformed),
    }
}

fn read_ipv4(packet: &[u8]) -> Option<(IpAddr, IpAddr, Parsed<'_>)> {
    let h = packet.get(..IPV4_MIN_HEADER)?;
    let ihl = usize::from(h[0] & 0x0f) * 4;
    let total = usize::from(be16(h, 2)?);
    if ihl < IPV4_MIN_HEADER || total < ihl {
        return None;
    }
    let p = packet.get(..total)?;
    let head = p.get(..ihl)?;
    // RFC 1812 §5.2.2: a router drops a datagram with a bad header checksum; reassembly would
    // otherwise launder it with a fresh one.
    if checksum::checksum(head) != 0 {
        return None;
    }
    let src = Ipv4Addr::new(h[12], h[13], h[14], h[15]);
    let dst = Ipv4Addr::new(h[16], h[17], h[18], h[19]);
    let ff = be16(h, 6)?;
    let more = ff & IPV4_MF != 0;
    let offset = u32::from(ff & 0x1fff) * 8;
    let (src, dst) = (IpAddr::V4(src), IpAddr::V4(dst));
    if !more && offset == 0 {
        return Some((src, dst, Parsed::Whole(p)));
    }
    let key = FragKey {
        src,
        dst,
        protocol: h[9],
        ident: u32::from(be16(h, 4)?),
    };
    let frag = FragView {
        key,
        v6: false,
        offset,
        more,
        head,
        next_header_at: 0,
        next_header: 0,
        data: p.get(ihl..)?,
    };
    Some((src, dst, Parsed::Frag(frag)))
}

/// The length of the IPv6 extension header at `at` whose type is `nh`, when it is one that may
/// precede a Fragment header.
fn ipv6_ext_len(p: &[u8], at: usize, nh: u8) -> Option<usize> {
    let len = usize::from(*p.get(at + 1)?);
    match nh {
        IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DEST_OPTS => Some((len + 1) * 8),
        IPV6_AUTH => Some((len + 2) * 4),
        _ => None,
    }
}

fn read_ipv6(packet: &[u8]) -> Option<(IpAddr, IpAddr, Parsed<'_>)> {
    let h = packet.get(..IPV6_HEADER)?;
    let payload_len = usize::from(be16(h, 4)?);
    // Payload length 0 announces a jumbogram (RFC 2675), which is never fragmented.
    if payload_len == 0 {
        return None;
    }
    let p = packet.get(..IPV6_HEADER + payload_len)?;
    let mut a = [0u8; 16];
    a.copy_from_slice(h.get(8..24)?);
    let src = IpAddr::V6(Ipv6Addr::from(a));
    a.copy_from_slice(h.get(24..40)?);
    let dst = IpAddr::V6(Ipv6Addr::from(a));
    let mut nh = h[6];
    let mut nh_at = 6;
    let mut at = IPV6_HEADER;
    while nh != proto::IPV6_FRAG {
        if !matches!(
            nh,
            IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DEST_OPTS | IPV6_AUTH
        ) {
            return Some((src, dst, Parsed::Whole(p)));
        }
        // RFC 8200 §4.1: Hop-by-Hop Options only directly after the IPv6 header.
        if nh == IPV6_HOP_BY_HOP && at != IPV6_HEADER {
            return None;
        }
        let len = ipv6_ext_len(p, at, nh)?;
        nh = *p.get(at)?;
        nh_at = at;
        at += len;
        if at > p.len() {
            return None;
        }
    }
    let fh = p.get(at..at + IPV6_FRAG_HEADER)?;
    let field = be16(fh, 2)?;
    let frag = FragView {
        key: FragKey {
            src,
            dst,
            protocol: proto::IPV6_FRAG,
            ident: u32::from_be_bytes([fh[4], fh[5], fh[6], fh[7]]),
        },
        v6: true,
        offset: u32::from(field & 0xfff8),
        more: field & 1 != 0,
        head: p.get(..at)?,
        next_header_at: nh_at,
        next_header: fh[0],
        data: p.get(at + IPV6_FRAG_HEADER..)?,
    };
    Some((src, dst, Parsed::Frag(frag)))
}

/// Build the datagram from its first fragment's headers and pieces covering `0..end`.
fn assemble(v6: bool, head: &Head, pieces: &[Piece], end: u32) -> Result<Vec<u8>, FragDrop> {
    let hl = head.bytes.len();
    let total = hl + end as usize;
    let length = if v6 {
        total - IPV6_HEADER.min(total)
    } else {
        total
    };
    let length = u16::try_from(length).map_err(|_| FragDrop::TooBig)?;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&head.bytes);
    out.resize(total, 0);
    for p in pieces {
        let at = hl + p.offset as usize;
        if let Some(dst) = out.get_mut(at..at + p.data.len()) {
            dst.copy_from_slice(&p.data);
        }
    }
    if v6 {
        set16(&mut out, 4, length);
        if let Some(b) = out.get_mut(head.next_header_at) {
            *b = head.next_header;
        }
    } else {
        set16(&mut out, 2, length);
        let ff = be16(&out, 6).unwrap_or(0) & IPV4_KEPT_FLAGS;
        set16(&mut out, 6, ff);
        set16(&mut out, 10, 0);
        let sum = checksum::checksum(out.get(..hl).unwrap_or_default());
        set16(&mut out, 10, sum);
    }
    Ok(out)
}

fn set16(b: &mut [u8], at: usize, v: u16) {
    if let Some(d) = b.get_mut(at..at + 2) {
        d.copy_from_slice(&v.to_be_bytes());
    }
}

// ---------------------------------------------------------------------------------------------
// Fragmentation.

/// Fragment an IPv4 datagram (RFC 791 §3.2): each piece ≤ mtu bytes of IP, payload offsets multiple of 8, options copied only when their copy flag is set (first fragment gets all), MF/offset set, header checksum per fragment. Err if DF is set (caller must send frag-needed instead) or mtu too small (< 68).
///
/// A datagram that fits is appended unchanged (padding after its total length removed). A
/// datagram that is itself a fragment is fragmented again, as a router does: offsets continue
/// from its own and the last piece keeps its MF. Pieces are appended to `out`; on error nothing
/// is.
pub fn fragment_ipv4(datagram: &[u8], mtu: usize, out: &mut Vec<Vec<u8>>) -> Result<(), FragError> {
    if mtu < IPV4_MIN_MTU {
        return Err(FragError::MtuTooSmall);
    }
    let h = datagram
        .get(..IPV4_MIN_HEADER)
        .ok_or(FragError::Malformed)?;
    let ihl = usize::from(h[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
    if h[0] >> 4 != 4 || ihl < IPV4_MIN_HEADER || total < ihl {
        return Err(FragError::Malformed);
    }
    let packet = datagram.get(..total).ok_or(FragError::Malformed)?;
    if total <= mtu {
        out.push(packet.to_vec());
        return Ok(());
    }
    let ff = u16::from_be_bytes([h[6], h[7]]);
    if ff & IPV4_DF != 0 {
        return Err(FragError::DontFragment);
    }
    let base = usize::from(ff & 0x1fff) * 8;
    let last_more = ff & IPV4_MF != 0;
    let kept = ff & 0x8000;
    let (head, data) = packet.split_at(ihl);
    let later_head = copied_header(head)?;
    let mut pieces = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let offset = base + pos;
        let hdr: &[u8] = if offset == 0 { head } else { &later_head };
        // mtu ≥ 68 and headers ≤ 60 bytes: at least 8 bytes of data per piece.
        let room = mtu.saturating_sub(hdr.len()) / 8 * 8;
        let take = room.min(data.len() - pos);
        if offset > MAX_FRAG_OFFSET || take == 0 {
            return Err(FragError::Malformed);
        }
        let last = pos + take == data.len();
        let more = !last || last_more;
        let mut piece = Vec::with_capacity(hdr.len() + take);
        piece.extend_from_slice(hdr);
        piece.extend_from_slice(data.get(pos..pos + take).unwrap_or_default());
        let len = u16::try_from(piece.len()).map_err(|_| FragError::Malformed)?;
        set16(&mut piece, 2, len);
        let field = kept | if more { IPV4_MF } else { 0 } | (offset / 8) as u16;
        set16(&mut piece, 6, field);
        set16(&mut piece, 10, 0);
        let sum = checksum::checksum(piece.get(..hdr.len()).unwrap_or_default());
        set16(&mut piece, 10, sum);
        pieces.push(piece);
        pos += take;
    }
    out.append(&mut pieces);
    Ok(())
}

/// The IPv4 header for fragments after the first: the fixed header and only the options whose
/// copied flag is set (RFC 791 §3.1), padded with End of Option List to a 4-byte boundary.
fn copied_header(head: &[u8]) -> Result<Vec<u8>, FragError> {
    let (fixed, options) = head.split_at(IPV4_MIN_HEADER.min(head.len()));
    let mut out = fixed.to_vec();
    let mut i = 0;
    while let Some(&kind) = options.get(i) {
        match kind {
            0 => break,
            1 => i += 1,
            _ => {
                let len = usize::from(*options.get(i + 1).ok_or(FragError::Malformed)?);
                let opt = options.get(i..i + len).ok_or(FragError::Malformed)?;
                if len < 2 {
                    return Err(FragError::Malformed);
                }
                if kind & 0x80 != 0 {
                    out.extend_from_slice(opt);
                }
                i += len;
            }
        }
    }
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
    let words = (out.len() / 4) as u8;
    if let Some(b) = out.first_mut() {
        *b = 0x40 | words;
    }
    Ok(out)
}

/// Fragment an IPv6 packet (RFC 8200 §4.5): unfragmentable part (IPv6 header + Hop-by-Hop/Routing/Destination-options-before-Routing) repeated, Fragment header inserted with `ident`, pieces ≤ mtu, offsets multiple of 8. Err if mtu < 1280.
///
/// A packet that fits is appended unchanged, without a Fragment header (no atomic fragments,
/// RFC 8021). Pieces are appended to `out`; on error nothing is.
pub fn fragment_ipv6(
    packet: &[u8],
    mtu: usize,
    ident: u32,
    out: &mut Vec<Vec<u8>>,
) -> Result<(), FragError> {
    if mtu < IPV6_MIN_MTU {
        return Err(FragError::MtuTooSmall);
    }
    let h = packet.get(..IPV6_HEADER).ok_or(FragError::Malformed)?;
    let payload_len = usize::from(u16::from_be_bytes([h[4], h[5]]));
    if h[0] >> 4 != 6 || payload_len == 0 {
        return Err(FragError::Malformed);
    }
    let p = packet
        .get(..IPV6_HEADER + payload_len)
        .ok_or(FragError::Malformed)?;
    if p.len() <= mtu {
        out.push(p.to_vec());
        return Ok(());
    }
    // The unfragmentable part ends after the last Routing header, else after Hop-by-Hop
    // Options, else after the IPv6 header (RFC 8200 §4.5); Destination Options before a
    // Routing header are inside it.
    let mut nh = h[6];
    let mut at = IPV6_HEADER;
    let mut unfrag_end = IPV6_HEADER;
    let mut nh_at = 6;
    loop {
        match nh {
            IPV6_HOP_BY_HOP if at != IPV6_HEADER => return Err(FragError::Malformed),
            IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DEST_OPTS => {}
            proto::IPV6_FRAG => return Err(FragError::AlreadyFragmented),
            _ => break,
        }
        let len = ipv6_ext_len(p, at, nh).ok_or(FragError::Malformed)?;
        let this = at;
        let kind = nh;
        nh = *p.get(at).ok_or(FragError::Malformed)?;
        at += len;
        if at > p.len() {
            return Err(FragError::Malformed);
        }
        if kind != IPV6_DEST_OPTS {
            unfrag_end = at;
            nh_at = this;
        }
    }
    let (unfrag, data) = p.split_at(unfrag_end);
    let first_fragmentable = *unfrag.get(nh_at).ok_or(FragError::Malformed)?;
    let room = mtu
        .checked_sub(unfrag_end + IPV6_FRAG_HEADER)
        .ok_or(FragError::MtuTooSmall)?
        / 8
        * 8;
    if room == 0 || data.is_empty() {
        return Err(FragError::MtuTooSmall);
    }
    let mut pieces = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let take = room.min(data.len() - pos);
        let more = pos + take < data.len();
        if pos > MAX_FRAG_OFFSET {
            return Err(FragError::Malformed);
        }
        let mut piece = Vec::with_capacity(unfrag_end + IPV6_FRAG_HEADER + take);
        piece.extend_from_slice(unfrag);
        if let Some(b) = piece.get_mut(nh_at) {
            *b = proto::IPV6_FRAG;
        }
        let field = pos as u16 | u16::from(more);
        piece.push(first_fragmentable);
        piece.push(0);
        piece.extend_from_slice(&field.to_be_bytes());
        piece.extend_from_slice(&ident.to_be_bytes());
        piece.extend_from_slice(data.get(pos..pos + take).unwrap_or_default());
        let len = u16::try_from(piece.len() - IPV6_HEADER).map_err(|_| FragError::Malformed)?;
        set16(&mut piece, 4, len);
        pieces.push(piece);
        pos += take;
    }
    out.append(&mut pieces);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ident: u32) -> FragKey {
        FragKey {
            src: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            dst: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)),
            protocol: proto::UDP,
            ident,
        }
    }

    #[test]
    fn aging_queue_stays_bounded_under_restarts() {
        let mut t: Aging<u8> = Aging::new(4, 10);
        t.insert(key(1), 1, 0);
        for now in 0..1000 {
            t.restart(&key(1), now);
            assert!(t.queue.len() <= 2 * 4 + 16 + 1);
        }
        assert_eq!(t.pop_due(1008), None);
        assert_eq!(t.pop_due(1009), Some(1));
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn copied_header_keeps_only_copy_flagged_options() {
        let mut head = vec![
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8,
        ];
        // NOP, Record Route (7, not copied), Loose Source Route (131, copied), EOL.
        head.extend_from_slice(&[1, 7, 7, 4, 0, 0, 0, 0, 131, 7, 4, 9, 9, 9, 9, 0]);
        head[0] = 0x40 | (head.len() / 4) as u8;
        let h = copied_header(&head).unwrap();
        assert_eq!(&h[20..], &[131, 7, 4, 9, 9, 9, 9, 0]);
        assert_eq!(h[0], 0x47);
        // An option running past the header is malformed.
        let mut bad = head.clone();
        bad[22] = 40;
        assert_eq!(copied_header(&bad), Err(FragError::Malformed));
    }
}
