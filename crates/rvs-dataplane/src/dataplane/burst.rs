//! `Dataplane::process_burst`: many frames at once, their connection lookups' cache misses
//! overlapped.
//!
//! Past a few hundred thousand connections the table no longer fits the caches, and a lookup
//! costs two dependent memory accesses (index bucket, then entry) of a few hundred ns each.
//! One packet at a time those are paid in full. `process_burst` takes its frames in rounds of
//! [`BURST`] and runs each round through three stages:
//!
//! 1. read every frame (the fast readers, else the full parse), hash the key its lookup will use
//!    (its own flow key; for an ICMP error the reversed key of the quoted packet) and prefetch
//!    the index buckets of that hash into L2;
//! 2. read those buckets and prefetch the entries whose tags match into L1;
//! 3. run each frame, in order, through the ordinary per-packet path ([`Dataplane::process`]'s
//!    body, with the hash of stage 1 handed on), whose lookups now hit the cache.
//!
//! The stages are pipelined across rounds: stage 1 of round r, then stage 2 of round r − 1,
//! then stage 3 of round r − 2, so each round's misses are in flight while the round before it
//! runs. A call of one round runs the stages one after the other; [`BATCH`] frames (eight rounds)
//! keep the pipeline busy for most of the call.
//!
//! Stages 1 and 2 change no state (prefetches are hints; a hint that stage 3 finds stale costs
//! only the index lookup it replaces), and stage 3 does every lookup in frame order, so a burst
//! is exactly `process` on each frame in turn — two packets of one flow, or a SYN and the next
//! segment of its new connection, in one call included (`tests/burst.rs` checks this).
//!
//! Why L2 in stage 1 (measured on the 2-vCPU EPYC VM, a stand-alone loop over 1 M random
//! lines with about 20 ns of work per item): a prefetch into L1 holds one of the core's few L1
//! miss buffers for the whole DRAM round trip. Issued two rounds ahead, those prefetches
//! filled the buffers and stalled the loads that were due: that pipeline was 40 % slower than
//! none (earlier sessions dropped two such pipelines for that reason). With stage 1's
//! prefetches into L2 the same pipeline cut the memory part of the cost from ~24 to ~9 ns per
//! item; stage 2's, a round ahead, stay L1 prefetches.

use rvs_core::conn::Hint;
use rvs_core::types::Time;
use rvs_wire::flow::{self, ErrorFlow, Flow};
use rvs_wire::parse::{Transport, parse_ethernet, proto, tcp_flags};
use rvs_wire::quote;

use super::Dataplane;
use crate::frame::Frame;
use crate::verdict::{Tx, Verdict};

/// Frames whose lookups one round of [`Dataplane::process_burst`] overlaps (longer slices are
/// taken in rounds of this many). Sixteen measured best on the 2-vCPU EPYC (Zen 4) VM at 1 M
/// connections: 8, 12, 24, 32 and 64 were 5–20 % slower — more prefetches than the core can
/// keep in flight are dropped or evict each other, fewer leave latency uncovered.
pub const BURST: usize = 16;

/// Frames per [`Dataplane::process_burst`] call that keep its pipeline busy (eight rounds):
/// what rvsd takes from a ring at a time, and what the benchmarks hand over.
pub const BATCH: usize = 8 * BURST;

/// Rounds in flight in [`Dataplane::process_burst`]: one in each stage.
const DEPTH: usize = 3;

/// What stage 1 learned of each frame of the rounds in flight (ring slot = round % [`DEPTH`]).
pub(super) type Rings = [[Pre; BURST]; DEPTH];

/// What stage 1 learned of a frame.
#[derive(Clone, Copy, Debug)]
pub(super) struct Pre {
    /// What the reader that accepted the frame read: stage 3 uses it in place (reading the
    /// frame again cost about 60 instructions per TCP/UDP packet, 130 per ICMP error).
    read: Read,
    /// The table's hash of the key the frame's lookup uses, whose buckets stage 1 prefetched:
    /// of its own TCP/UDP flow key, or for an ICMP error of the quoted flow's reversed key.
    hash: Option<u64>,
    /// Stage 2's candidate entry for the in lookup (see [`rvs_core::conn::Probe::hinted`]).
    hint: Hint,
    /// When the lookup may go on to a NAT dest's side (not for an ICMP error the fast reader
    /// took, nor for a packet to a VIP, nor when the source is no NAT dest): the hash of the
    /// client-side key the packet was rebuilt into, whose in-index bucket stage 1 prefetched
    /// ([`rvs_core::conn::ConnTable::prefetch_out_flow`]).
    out: Option<u64>,
    /// Stage 1 found the fast-read frame may be a NAT dest's reply: `out` is still to be made
    /// ([`Dataplane::prefetch_reply`]).
    reply: bool,
}

impl Pre {
    const NONE: Pre = Pre {
        read: Read::Full,
        hash: None,
        hint: Hint::NONE,
        out: None,
        reply: false,
    };
}

/// The reader a frame takes, and what it read.
#[derive(Clone, Copy, Debug)]
enum Read {
    /// The full parse (in stage 3).
    Full,
    /// [`rvs_wire::flow::read`]: a TCP/UDP packet of the commonest shape.
    Flow(Flow),
    /// [`rvs_wire::flow::read_error`]: an ICMP error of the commonest shape.
    Error(ErrorFlow),
}

impl Dataplane {
    /// Process `frames`, all received at `now`, exactly as [`Dataplane::process`] on each in
    /// turn would — same verdicts, same rewritten frames, same state changes and counters — but
    /// with the connection lookups of up to [`BURST`] frames prefetched together. One verdict
    /// per frame is appended to `verdicts`, in order; extra frames to transmit are appended to
    /// `extra` in the order `process` would have appended them.
    pub fn process_burst(
        &mut self,
        frames: &mut [Frame],
        now: Time,
        extra: &mut Vec<Tx>,
        verdicts: &mut Vec<Verdict>,
    ) {
        verdicts.reserve(frames.len());
        let n = frames.len();
        let rounds = n.div_ceil(BURST);
        let span = |r: usize| r * BURST..((r + 1) * BURST).min(n);
        // Taken out of `self` for the call (the stages borrow `self`); about 6 KiB, so not
        // built afresh on the stack for every call.
        let mut pre = self
            .rings
            .take()
            .unwrap_or_else(|| Box::new([[Pre::NONE; BURST]; DEPTH]));
        // Round r's stage 1, round r − 1's stage 2 and round r − 2's stage 3, in that order.
        for r in 0..rounds + DEPTH - 1 {
            if r < rounds
                && let (Some(chunk), Some(ring)) = (frames.get(span(r)), pre.get_mut(r % DEPTH))
            {
                let mut replies = false;
                for (p, f) in ring.iter_mut().zip(chunk) {
                    replies |= self.prefetch_buckets(f, p);
                }
                if replies {
                    // A loop of its own: inlined into the one above, which every packet runs,
                    // the rebuild of a reply's key cost the established DR path 15 instructions
                    // per packet in register spills (~2 ns at 1 M connections); called out of
                    // line from there, right after the frame's flow was stored, a NAT reply
                    // 10-12 ns at 1 M (this loop: 3-5 ns more than inlined).
                    for p in ring.iter_mut().take(chunk.len()) {
                        self.prefetch_reply(p);
                    }
                }
            }
            if let Some(q) = r.checked_sub(1).filter(|&q| q < rounds)
                && let Some(ring) = pre.get_mut(q % DEPTH)
            {
                for p in ring.iter_mut().take(span(q).len()) {
                    self.prefetch_entries(p);
                }
            }
            if let Some(q) = r.checked_sub(DEPTH - 1)
                && let (Some(chunk), Some(ring)) = (frames.get_mut(span(q)), pre.get(q % DEPTH))
            {
                self.run_round(ring, chunk, now, extra, verdicts);
            }
        }
        self.rings = Some(pre);
    }

    /// Stage 3 for one round: each frame, in order, through the per-packet path.
    #[inline(always)]
    fn run_round(
        &mut self,
        pre: &[Pre; BURST],
        chunk: &mut [Frame],
        now: Time,
        extra: &mut Vec<Tx>,
        verdicts: &mut Vec<Verdict>,
    ) {
        for (p, f) in pre.iter().zip(chunk.iter_mut()) {
            // As `process`, with the hash handed on (and each push its own statement: a
            // verdict merged from both branches went through the stack, and its reload
            // stalled on store forwarding).
            match &p.read {
                Read::Flow(flow) => {
                    // (Stage 1 hashed every frame it read.)
                    let h = p
                        .hash
                        .unwrap_or_else(|| self.director.conns().flow_hash(flow));
                    if let Some(hop) = self.fast_in(f, flow, h, p.hint, now) {
                        verdicts.push(Verdict::Transmit {
                            next_hop: self.director.interned_addr(hop),
                        });
                    } else {
                        let probe = self
                            .director
                            .conns()
                            .probe_flow(flow, Some(h), p.hint)
                            .out_hinted(p.out);
                        let v = self.process_flow(f, flow, &probe, now, extra);
                        verdicts.push(v);
                    }
                    continue;
                }
                Read::Error(e) => {
                    match self.fast_icmp_error(f, e, p.hash, p.hint, now) {
                        Some(Ok(hop)) => verdicts.push(Verdict::Transmit {
                            next_hop: self.director.interned_addr(hop),
                        }),
                        Some(Err(v)) => verdicts.push(v),
                        None => {
                            let v = self.process_hashed(f, p.hash, now, extra);
                            verdicts.push(v);
                        }
                    }
                    continue;
                }
                Read::Full => {}
            }
            let v = self.process_hashed(f, p.hash, now, extra);
            verdicts.push(v);
        }
    }

    /// Stage 2 for one frame: read its prefetched index buckets, prefetch the entries whose
    /// tags match. (An error the fast reader took looks only at the client-side index.)
    #[inline]
    fn prefetch_entries(&self, p: &mut Pre) {
        p.hint = Hint::NONE;
        if let Some(h) = p.hash {
            let t = self.director.conns();
            p.hint = t.prefetch_in_entries(h);
            if let Some(ho) = p.out {
                t.prefetch_out_entries(ho);
            }
        }
    }

    /// Stage 1 for one frame: read, hash the lookup key, prefetch its index buckets; what it
    /// learned goes to `pre`, every field but `hint` (stage 2's) written: `pre` may still hold
    /// a frame of an earlier round. (Written in place: a returned `Pre` went through the
    /// stack, and resetting the whole of it first cost 17 instructions per frame.) True when
    /// the frame may be a NAT dest's reply, for [`Dataplane::prefetch_reply`].
    #[inline(always)]
    fn prefetch_buckets(&self, f: &Frame, pre: &mut Pre) -> bool {
        // Called directly, not through `Dataplane::fast`: handed over as a function, the reader
        // stayed an out-of-line call here.
        let flow = if self.fast_paths {
            flow::read(f.data())
        } else {
            None
        };
        let Some(flow) = flow else {
            match self.fast(f, flow::read_error) {
                Some(e) => {
                    let h = self.director.conns().flow_hash(&e.flow);
                    self.director.conns().prefetch_in(h);
                    pre.read = Read::Error(e);
                    pre.hash = Some(h);
                    pre.out = None;
                    pre.reply = false;
                }
                None => self.prefetch_buckets_parsed(f, pre),
            }
            return false;
        };
        let t = self.director.conns();
        let h = t.flow_hash(&flow);
        t.prefetch_in(h);
        if flow.tcp_flags & tcp_flags::SYN != 0 {
            // Perhaps a new connection: the slot it would take, and where its key's search and
            // insert may go on past the home bucket.
            t.prefetch_insert();
            t.prefetch_in_spill(h);
        }
        // A dest's reply (NAT) misses the in index before it is found under the client-side
        // key it is rebuilt into; a packet to a VIP is never taken for a reply (see
        // `process_l4_miss`).
        pre.reply = t.has_out_index() && !self.director.maybe_vip(&flow.dst, flow.v6);
        pre.out = None;
        pre.read = Read::Flow(flow);
        pre.hash = Some(h);
        pre.reply
    }

    /// Stage 1, second part, for a frame stage 1 found may be a NAT dest's reply: rebuild the
    /// client-side key of its connection and prefetch that key's in-index bucket.
    #[inline(never)]
    fn prefetch_reply(&self, pre: &mut Pre) {
        if let (true, Read::Flow(flow)) = (pre.reply, &pre.read) {
            pre.out = self.director.conns().prefetch_out_flow(flow);
        }
    }

    /// [`Dataplane::prefetch_buckets`] of a frame the fast reader declined: the full parse.
    /// (`pre` may hold an earlier round's frame: every field is written.)
    #[inline(never)]
    fn prefetch_buckets_parsed(&self, f: &Frame, pre: &mut Pre) {
        *pre = Pre::NONE;
        let parsed = parse_ethernet(f.data());
        let Some(ip) = parsed.as_ref().ok().and_then(|p| p.ip()) else {
            return;
        };
        if ip.fragment.is_some() {
            // Fragments follow the fragment tracker's decisions, not a lookup of their own.
            return;
        }
        let t = self.director.conns();
        let h = match ip.protocol {
            proto::TCP | proto::UDP => {
                let Some(key) = ip.flow_key() else {
                    return;
                };
                if matches!(ip.transport, Transport::Tcp { flags, .. } if flags & tcp_flags::SYN != 0)
                {
                    // Perhaps a new connection: the slot it would take.
                    t.prefetch_insert();
                }
                (t.key_hash(&key), key)
            }
            proto::ICMP | proto::ICMPV6 if ip.is_icmp_error() => {
                let Some(msg) = f.data().get(ip.l4_offset..ip.end()) else {
                    return;
                };
                let e = if ip.is_ipv4() {
                    quote::read_icmpv4_error(msg)
                } else {
                    quote::read_icmpv6_error(msg)
                };
                let Ok(e) = e else {
                    return;
                };
                if !matches!(e.quote.protocol, proto::TCP | proto::UDP) {
                    return;
                }
                let Ok(key) = e.quote.reversed_key() else {
                    return;
                };
                (t.key_hash(&key), key)
            }
            _ => return,
        };
        let (h, key) = h;
        // Both sides: a dest's reply (NAT) misses the in index before it is found under the
        // client-side key it is rebuilt into.
        t.prefetch_in(h);
        pre.out = t.prefetch_out_key(&key);
        // Handed on to the lookup: of the frame's own key, or of an ICMP error's quoted flow.
        pre.hash = Some(h);
    }
}
