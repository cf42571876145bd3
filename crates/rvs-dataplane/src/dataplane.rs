//! `Dataplane::process`: one frame in, one verdict out.
//!
//! The path (DESIGN.md "The packet path"): parse → fragments → connection lookup (client side,
//! then NAT reply side) → service lookup and scheduling → transmitter of the connection's
//! method, after the TTL and MTU checks. Everything that is not ours is `Local`, untouched.
//!
//! Two fast paths come first, for speed only (BENCHMARKS.md, issues 3 and 4): a TCP/UDP frame
//! of the commonest shape ([`flow::read`]) that hits a live DR or NAT connection from the
//! client side (`Dataplane::fast_in`), and an ICMP error of the commonest shape
//! ([`flow::read_error`]) about one (`Dataplane::fast_icmp_error`). Each either does exactly
//! what the full path would do or changes nothing and hands the frame on; `tests/burst.rs`
//! holds them to the full path.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rvs_core::conn::{ConnId, Hint, Probe};
use rvs_core::director::{ConnDrop, DestId, Director, Forward, NewConnError, SvcId};
use rvs_core::proto::Direction;
use rvs_core::settings::{ExpiredReply, Settings};
use rvs_core::types::{FwdMethod, Time};
use rvs_wire::build::{self, Icmpv4Error, Icmpv6Error, Ipv4Tunnel, Ipv6Tunnel};
use rvs_wire::flow::{self, Flow};
use rvs_wire::parse::{
    FlowKey, IpInfo, Net, ParsedFrame, Transport, parse_ethernet, parse_ip, proto, tcp_flags,
};

use crate::frag::{self, FragDrop, FragKey, FragLimits, FragTracker, Reassembler};
use crate::ratelimit::{DEFAULT_MAX_KEYS, KeyedLimiter, TokenBucket};

mod burst;
mod icmp;
use crate::frame::Frame;
use crate::verdict::{DropLog, DropLogger, DropReason, Tx, Verdict};
use crate::xmit::{self, NatSide, TunnelOuter};
pub use burst::{BATCH, BURST};
pub use icmp::{IcmpCounters, IcmpOutcome, MIN_PMTU_V4, MIN_PMTU_V6, TUNNEL_PMTU_AGE};

/// How the director sits on its (one) interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataplaneConfig {
    /// The director's own addresses (tunnel sources, sources of time-exceeded errors).
    pub addrs: Vec<IpAddr>,
    /// The interface MTU (bytes of IP packet).
    pub mtu: u16,
    /// Limits of the fragment buffers.
    pub frag: FragLimits,
}

impl Default for DataplaneConfig {
    fn default() -> Self {
        DataplaneConfig {
            addrs: Vec::new(),
            mtu: 1500,
            frag: FragLimits::default(),
        }
    }
}

/// Counters of what the dataplane did, by verdict and drop reason.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DataplaneCounters {
    /// Frames processed.
    pub rx: u64,
    /// Frames transmitted (forwarded, including released and refragmented frames).
    pub forwarded: u64,
    /// Packets the director generated (RST, ICMP).
    pub generated: u64,
    /// Frames handed to the host stack.
    pub local: u64,
    /// Fragments held.
    pub held: u64,
    /// Drops, indexed by `DropReason as usize`.
    pub drops: Vec<u64>,
}

impl DataplaneCounters {
    /// Drops for one reason.
    pub fn drops(&self, r: DropReason) -> u64 {
        self.drops.get(r as usize).copied().unwrap_or(0)
    }
}

/// Where the last processed packet was forwarded ([`Dataplane::last_dest`]).
#[derive(Debug, Clone, Copy)]
enum LastDest {
    /// Not forwarded to a dest.
    None,
    /// To this address and port.
    Addr(IpAddr, u16),
    /// To the connection table's interned address `id` and this port: what the fast paths
    /// store (an `IpAddr` written per packet cost ~10 instructions). Valid while an entry holds
    /// the id: settled into `Addr` before anything that may remove entries.
    Interned(u32, u16),
}

/// The dataplane: the director's state plus the fragment buffers and counters.
#[derive(Debug)]
pub struct Dataplane {
    director: Director,
    cfg: DataplaneConfig,
    tracker: FragTracker<FragDecision>,
    reasm: Reassembler,
    counters: DataplaneCounters,
    ident: u16,
    frag_ident: u32,
    scratch: Vec<u8>,
    pieces: Vec<Vec<u8>>,
    /// Reused buffer of `replace_with_reply` (link header + generated packet).
    reply_buf: Vec<u8>,
    /// Set while a datagram the director reassembled goes through the path: it leaves
    /// fragmented to the MTU again instead of drawing a too-big error.
    refragment: bool,
    /// The fast reader and the established fast path are used (the default; off only in
    /// differential tests, as the reference).
    fast_paths: bool,
    /// `process_burst`'s per-round state, kept between calls (built once, not per call).
    rings: Option<Box<burst::Rings>>,
    last_dest: LastDest,
    /// The time of the packet being processed (for the rate limiters).
    now: Time,
    /// Generated ICMP: global bucket and per destination.
    gen_global: TokenBucket,
    gen_per_dest: KeyedLimiter,
    /// Forwarded ICMP errors, per source.
    fwd_per_src: KeyedLimiter,
    /// Path MTU to each tunnel dest, learned from errors about our own tunnel packets.
    tunnel_pmtu: hashbrown::HashMap<IpAddr, (u16, Time)>,
    icmp_counters: IcmpCounters,
    drop_log: DropLogger,
}

/// Interval of the rate-limited drop log: one line per reason per 10 s of dataplane time.
pub const DROP_LOG_INTERVAL: Time = 10 * rvs_core::types::SEC;

/// What the first fragment of a datagram decided for the rest of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FragDecision {
    /// Ours: the connection it belongs to.
    Conn(ConnId),
    /// The host's: its other fragments go there too, untouched.
    Local,
}

/// Default TTL / hop limit of packets the director originates.
pub const ORIGIN_TTL: u8 = 64;

/// The frame's link header (`..l3_offset`) and IP packet (`l3_offset..end`) where `ip`, the
/// frame's own parse, found them. `None` only if `ip` were another frame's parse (a bug): the
/// packet is then dropped as `malformed` instead of the director panicking on a slice index.
#[inline]
fn split_l3<'a>(data: &'a [u8], ip: &IpInfo) -> Option<(&'a [u8], &'a [u8])> {
    Some((data.get(..ip.l3_offset)?, data.get(ip.l3_offset..ip.end())?))
}

fn first_of_family(addrs: &[IpAddr], v4: bool) -> Option<IpAddr> {
    addrs.iter().copied().find(|a| a.is_ipv4() == v4)
}

impl Dataplane {
    /// A dataplane over `director` with the given interface configuration.
    pub fn new(director: Director, cfg: DataplaneConfig) -> Dataplane {
        Dataplane {
            director,
            tracker: FragTracker::new(cfg.frag),
            reasm: Reassembler::new(cfg.frag),
            cfg,
            counters: DataplaneCounters {
                drops: vec![0; DropReason::ALL.len()],
                ..Default::default()
            },
            ident: 1,
            frag_ident: 1,
            scratch: vec![0; 1600],
            pieces: Vec::new(),
            reply_buf: Vec::new(),
            refragment: false,
            fast_paths: true,
            rings: None,
            last_dest: LastDest::None,
            now: 0,
            gen_global: TokenBucket::full(50, 0),
            gen_per_dest: KeyedLimiter::new(DEFAULT_MAX_KEYS),
            fwd_per_src: KeyedLimiter::new(DEFAULT_MAX_KEYS),
            tunnel_pmtu: hashbrown::HashMap::new(),
            icmp_counters: IcmpCounters::default(),
            drop_log: DropLogger::new(DROP_LOG_INTERVAL),
        }
    }

    /// The director state (services, connections).
    pub fn director(&self) -> &Director {
        &self.director
    }

    /// The director state, for control-plane changes.
    pub fn director_mut(&mut self) -> &mut Director {
        self.settle_last_dest();
        &mut self.director
    }

    /// The settings in force.
    pub fn settings(&self) -> &Settings {
        self.director.settings()
    }

    /// The dest (address, port) the last processed packet was forwarded to, if any.
    pub fn last_dest(&self) -> Option<(IpAddr, u16)> {
        match self.last_dest {
            LastDest::None => None,
            LastDest::Addr(a, p) => Some((a, p)),
            LastDest::Interned(id, p) => Some((self.director.interned_addr(id), p)),
        }
    }

    /// Give `last_dest` its address before the table may change: an interned id stays valid
    /// only while an entry holds it.
    fn settle_last_dest(&mut self) {
        if let LastDest::Interned(id, p) = self.last_dest {
            self.last_dest = LastDest::Addr(self.director.interned_addr(id), p);
        }
    }

    /// Counters.
    pub fn counters(&self) -> &DataplaneCounters {
        &self.counters
    }

    /// Fragment-buffer counters: (tracker for DR/TUN, reassembler for NAT).
    pub fn frag_counters(&self) -> (frag::FragCounters, frag::FragCounters) {
        (self.tracker.counters(), self.reasm.counters())
    }

    /// Periodic work: expire connections and fragment buffers, update rate estimates.
    pub fn housekeeping(&mut self, now: Time) {
        self.settle_last_dest();
        self.director.expire(now);
        self.director.estimate_rates(now);
        self.tracker.expire(now);
        self.reasm.expire(now);
        self.tunnel_pmtu
            .retain(|_, (_, t)| now.saturating_sub(*t) < TUNNEL_PMTU_AGE);
    }

    /// ICMP counters by family, type, code and outcome.
    pub fn icmp_counters(&self) -> &IcmpCounters {
        &self.icmp_counters
    }

    /// The path MTU learned for a tunnel dest, if a fresh one is known.
    pub fn tunnel_pmtu(&self, dest: IpAddr, now: Time) -> Option<u16> {
        self.tunnel_pmtu
            .get(&dest)
            .filter(|(_, t)| now.saturating_sub(*t) < TUNNEL_PMTU_AGE)
            .map(|(m, _)| *m)
    }

    fn drop(&mut self, r: DropReason) -> Verdict {
        if let Some(c) = self.counters.drops.get_mut(r as usize) {
            *c += 1;
        }
        self.drop_log.note(r, self.now);
        Verdict::Drop(r)
    }

    /// Take the rate-limited log lines about drops (at most one per reason per
    /// [`DROP_LOG_INTERVAL`], each with the count of drops it stands for). The daemon and
    /// `rvsd replay` print them; nothing is ever logged per packet.
    pub fn take_drop_log(&mut self) -> Vec<DropLog> {
        self.drop_log.drain()
    }

    fn local(&mut self) -> Verdict {
        self.counters.local += 1;
        Verdict::Local
    }

    /// Process one frame received at `now`. The frame may be rewritten in place or replaced by a
    /// reply; additional frames to transmit are appended to `extra`.
    pub fn process(&mut self, frame: &mut Frame, now: Time, extra: &mut Vec<Tx>) -> Verdict {
        let Some(f) = self.fast(frame, flow::read) else {
            if let Some(e) = self.fast(frame, flow::read_error)
                && let Some(r) = self.fast_icmp_error(frame, &e, None, Hint::NONE, now)
            {
                return match r {
                    Ok(hop) => Verdict::Transmit {
                        next_hop: self.director.interned_addr(hop),
                    },
                    Err(v) => v,
                };
            }
            return self.process_hashed(frame, None, now, extra);
        };
        let h = self.director.conns().flow_hash(&f);
        match self.fast_in(frame, &f, h, Hint::NONE, now) {
            Some(hop) => Verdict::Transmit {
                next_hop: self.director.interned_addr(hop),
            },
            None => {
                let probe = self.director.conns().probe_flow(&f, Some(h), Hint::NONE);
                self.process_flow(frame, &f, &probe, now, extra)
            }
        }
    }

    /// Use the fast reader and the established fast path (`true`, the default), or only the
    /// full path: for differential tests, whose reference is the full path. Results are the
    /// same either way; only the speed differs.
    #[doc(hidden)]
    pub fn set_fast_paths(&mut self, on: bool) {
        self.fast_paths = on;
    }

    /// `reader` ([`flow::read`] or [`flow::read_error`]) of the frame, unless the fast paths
    /// are off.
    #[inline(always)]
    fn fast<T>(&self, frame: &Frame, reader: impl Fn(&[u8]) -> Option<T>) -> Option<T> {
        if self.fast_paths {
            reader(frame.data())
        } else {
            None
        }
    }

    /// [`Dataplane::process`] of a frame of the commonest shape, read by the fast reader
    /// ([`flow::read`]), that the established fast path ([`Dataplane::fast_in`]) declined:
    /// the same path as the full parse's from the connection lookup on, without the full
    /// parse.
    #[inline(never)]
    fn process_flow(
        &mut self,
        frame: &mut Frame,
        f: &Flow,
        probe: &Probe,
        now: Time,
        extra: &mut Vec<Tx>,
    ) -> Verdict {
        self.counters.rx += 1;
        self.last_dest = LastDest::None;
        self.now = now;
        let ip = f.ip_info();
        let appended = extra.len();
        let v = self.process_l4(frame, &ip, probe, f.tcp_flags, now, extra);
        self.count_verdict(v, extra, appended)
    }

    /// The established fast path: a client → VIP packet of a live DR or NAT connection whose
    /// dest is live, that needs no ICMP answer (TTL > 1, fits the MTU), is accounted and
    /// rewritten here exactly as [`Dataplane::process`] would (counters included), and the
    /// interned id of its next hop returned: the verdict is `Transmit` to that address.
    /// Anything else returns `None` having changed nothing, for the full path. (It exists for
    /// speed: the full path moves `IpAddr`-bearing results through several returns, and `perf
    /// annotate` put a third of a packet's time on the store-forwarding stalls of those
    /// moves; BENCHMARKS.md, issue 3.)
    #[inline(always)]
    fn fast_in(
        &mut self,
        frame: &mut Frame,
        f: &Flow,
        hash: u64,
        hint: Hint,
        now: Time,
    ) -> Option<u32> {
        // (A SYN may have to end its connection and be scheduled anew: `conn_reuse_mode`.)
        if f.ttl <= 1 || f.ip_len > self.cfg.mtu || f.tcp_flags & tcp_flags::SYN != 0 {
            return None;
        }
        let (cid, hot) = self.director.conn_in_hit_flow(f, hash, hint, now)?;
        // (A NAT dest of the other family would make the full path's rewrite fail.)
        if hot.fwd == FwdMethod::Tunnel
            || (hot.fwd == FwdMethod::Masq && hot.daddr_v6 != f.v6)
            || !self.director.dest_is_live(DestId(hot.dest))
        {
            return None;
        }
        // From here on the full path would account, decrement the TTL and rewrite: so do we.
        self.director
            .conn_account_in(cid, &hot, f.tcp_flags, usize::from(f.ip_len), now);
        let data = frame.data_mut();
        xmit::decrement_ttl_flow(data, f);
        if hot.fwd == FwdMethod::Masq {
            let ip = f.ip_info();
            // Cannot fail: the fast reader checked the L4 header whole, the family was checked.
            let daddr = self.director.interned_addr(hot.daddr_id);
            xmit::nat_rewrite(data, &ip, NatSide::Destination, daddr, hot.dport);
        }
        self.counters.rx += 1;
        self.counters.forwarded += 1;
        self.now = now;
        self.last_dest = LastDest::Interned(hot.daddr_id, hot.dport);
        Some(hot.daddr_id)
    }

    /// [`Dataplane::process`] through the full parse; `hash` is the connection table's hash of
    /// the frame's flow key (an ICMP error's: of its quoted flow's reversed key), when a burst
    /// computed it.
    #[inline(always)]
    fn process_hashed(
        &mut self,
        frame: &mut Frame,
        hash: Option<u64>,
        now: Time,
        extra: &mut Vec<Tx>,
    ) -> Verdict {
        // Borrowed, not moved out of the `Result`: that copy's reload stalled on store
        // forwarding.
        let parsed = parse_ethernet(frame.data());
        match &parsed {
            Ok(p) => self.process_parsed(frame, p, hash, now, extra),
            Err(e) => self.unparsed(*e, now),
        }
    }

    /// A frame that does not parse.
    #[cold]
    #[inline(never)]
    fn unparsed(&mut self, e: rvs_wire::WireError, now: Time) -> Verdict {
        self.counters.rx += 1;
        self.last_dest = LastDest::None;
        self.now = now;
        match e {
            // An ICMP message shorter than its 8-byte header is an ICMP drop, named as such.
            rvs_wire::WireError::Truncated { layer, .. }
            | rvs_wire::WireError::BadTotalLen { layer, .. }
                if matches!(
                    layer,
                    rvs_wire::error::Layer::Icmpv4 | rvs_wire::error::Layer::Icmpv6
                ) =>
            {
                self.drop(DropReason::IcmpMalformed)
            }
            _ => self.drop(DropReason::Malformed),
        }
    }

    /// [`Dataplane::process`] of a frame already parsed (`parsed` is `parse_ethernet` of its
    /// bytes); `hash` is the connection table's hash of its flow key, when a burst computed it.
    #[inline(never)]
    fn process_parsed(
        &mut self,
        frame: &mut Frame,
        parsed: &ParsedFrame,
        hash: Option<u64>,
        now: Time,
        extra: &mut Vec<Tx>,
    ) -> Verdict {
        self.counters.rx += 1;
        self.last_dest = LastDest::None;
        self.now = now;
        let Net::Ip(ip) = &parsed.net else {
            return self.local();
        };
        let appended = extra.len();
        let v = self.process_ip(frame, ip, hash, now, extra);
        self.count_verdict(v, extra, appended)
    }

    /// Count a frame's verdict and the extra frames it appended (from index `appended` on: a
    /// burst appends every frame's extras to one vector); returns the verdict.
    #[inline(always)]
    fn count_verdict(&mut self, v: Verdict, extra: &[Tx], appended: usize) -> Verdict {
        match v {
            Verdict::Transmit { .. } => self.counters.forwarded += 1,
            Verdict::Reply { .. } => self.counters.generated += 1,
            Verdict::Held => self.counters.held += 1,
            _ => {}
        }
        if let Some(new) = extra.get(appended..)
            && !new.is_empty()
        {
            self.counters.forwarded +=
                new.iter().filter(|t| !t.generated && !t.local).count() as u64;
        }
        v
    }

    #[inline]
    fn process_ip(
        &mut self,
        frame: &mut Frame,
        ip: &IpInfo,
        hash: Option<u64>,
        now: Time,
        extra: &mut Vec<Tx>,
    ) -> Verdict {
        match ip.protocol {
            proto::TCP | proto::UDP => {}
            proto::ICMP | proto::ICMPV6 => return self.icmp(frame, ip, hash, now, extra),
            // Everything else is the host stack's.
            _ => return self.local(),
        }
        if let Some(f) = ip.fragment {
            return self.fragment(frame, ip, f.is_first(), now, extra);
        }
        let Some(key) = ip.flow_key() else {
            return self.local();
        };
        let flags = match ip.transport {
            Transport::Tcp { flags, .. } => flags,
            _ => 0,
        };
        let probe = self.director.conns().probe(&key, hash);
        self.process_l4(frame, ip, &probe, flags, now, extra)
    }

    /// A whole TCP/UDP packet (not a fragment) with its table probe: its connection's, else a
    /// new connection's, else the host's.
    #[inline(always)]
    fn process_l4(
        &mut self,
        frame: &mut Frame,
        ip: &IpInfo,
        probe: &Probe,
        flags: u8,
        now: Time,
        extra: &mut Vec<Tx>,
    ) -> Verdict {
        let len = ip.end() - ip.l3_offset;
        if let Some(cid) = self.director.conn_in_live_reuse(probe, flags, now) {
            return self.forward_in(frame, ip, cid, flags, len, now, extra);
        }
        self.process_l4_miss(frame, ip, probe, flags, now, extra)
    }

    /// [`Dataplane::process_l4`] past a miss in the client-side index: a NAT dest's reply, a
    /// new connection, or the host's.
    #[inline(never)]
    fn process_l4_miss(
        &mut self,
        frame: &mut Frame,
        ip: &IpInfo,
        probe: &Probe,
        flags: u8,
        now: Time,
        extra: &mut Vec<Tx>,
    ) -> Verdict {
        let len = ip.end() - ip.l3_offset;
        // A packet to a virtual service is the client side of a connection, never a NAT dest's
        // reply: it skips the reply lookup. The VIP filter sends most other packets (replies
        // among them) straight to that lookup.
        let svc = if self.director.maybe_vip_ip(ip.dst) {
            ip.flow_key().and_then(|key| {
                let svc = self.director.find_service(ip.protocol, ip.dst, key.dport)?;
                Some((svc, key))
            })
        } else {
            None
        };
        let Some((svc, key)) = svc else {
            if let Some(cid) = self.director.conn_out_live_probe(probe, now) {
                return self.forward_out(frame, ip, cid, flags, len, now, extra);
            }
            return self.local();
        };
        // The lookup above missed with this probe: the connection is made with its first
        // packet accounted (`new_conn_in`), so it goes straight to its dest.
        match self.admit(frame, ip, svc, &key, Some((probe.hash(), len)), flags, now) {
            Ok(fwd) => self.transmit_to_dest(frame, ip, &fwd, now, extra),
            Err(v) => v,
        }
    }

    /// A packet for service `svc` that has no connection: schedule a new one (a TCP SYN
    /// without RST, or any UDP datagram) or answer it by the service's policy. `Err` is the
    /// verdict when no connection was made. With `opening` (the hash under which the caller's
    /// lookup of `key` has just missed, and the packet's length) the packet is accounted to the
    /// new connection as `conn_packet_in` would ([`Director::new_conn_in`]); without, the
    /// caller accounts it.
    #[allow(clippy::too_many_arguments)]
    fn admit(
        &mut self,
        frame: &mut Frame,
        ip: &IpInfo,
        svc: SvcId,
        key: &FlowKey,
        opening: Option<(u64, usize)>,
        flags: u8,
        now: Time,
    ) -> Result<Forward, Verdict> {
        let new_tcp = flags & tcp_flags::SYN != 0 && flags & tcp_flags::RST == 0;
        if ip.protocol == proto::TCP && !new_tcp {
            // A segment for a connection the director no longer knows (it expired).
            let policy = self.director.expired_reply(svc);
            return Err(self.reply_policy(frame, ip, policy, DropReason::ExpiredConn));
        }
        // A packet that cannot be forwarded (TTL exhausted) must not create a connection.
        if let Some(v) = self.ttl_check(frame, ip) {
            return Err(v);
        }
        let made = match opening {
            Some((hash, bytes)) => self.director.new_conn_in(svc, key, hash, flags, bytes, now),
            None => self.director.new_conn(svc, key, now),
        };
        match made {
            Ok(f) => Ok(f),
            Err(NewConnError::NoDest) => {
                let policy = self.director.nodest_reply(svc);
                Err(self.reply_policy(frame, ip, policy, DropReason::NoDest))
            }
            Err(NewConnError::TableFull | NewConnError::Exists) => {
                Err(self.drop(DropReason::TableFull))
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn forward_in(
        &mut self,
        frame: &mut Frame,
        ip: &IpInfo,
        cid: ConnId,
        flags: u8,
        len: usize,
        now: Time,
        extra: &mut Vec<Tx>,
    ) -> Verdict {
        let fwd = match self.director.conn_packet_in(cid, flags, len, now) {
            Ok(f) => f,
            Err(ConnDrop::DestUnavailable) => return self.drop(DropReason::DestUnavailable),
            Err(ConnDrop::Gone) => return self.drop(DropReason::DestUnavailable),
        };
        self.transmit_to_dest(frame, ip, &fwd, now, extra)
    }

    #[allow(clippy::too_many_arguments)]
    fn forward_out(
        &mut self,
        frame: &mut Frame,
        ip: &IpInfo,
        cid: ConnId,
        flags: u8,
        len: usize,
        now: Time,
        extra: &mut Vec<Tx>,
    ) -> Verdict {
        let fwd = match self
            .director
            .conn_packet(cid, Direction::Output, flags, len, now)
        {
            Ok(f) => f,
            Err(_) => return self.drop(DropReason::DestUnavailable),
        };
        // The client side (caddr:cport → vaddr:vport) the reply goes back to.
        let Some(key) = self.director.conn_key(fwd.conn) else {
            return self.drop(DropReason::DestUnavailable);
        };
        if let Some(v) = self.ttl_check(frame, ip) {
            return v;
        }
        // Before the rewrite: a too-big error quotes the packet as it arrived.
        if let Some(v) = self.too_big_reply(frame, ip, usize::from(self.cfg.mtu), false) {
            return v;
        }
        let data = frame.data_mut();
        xmit::decrement_ttl(data, ip);
        if !xmit::nat_rewrite(data, ip, NatSide::Source, key.dst, key.dport) {
            return self.drop(DropReason::Malformed);
        }
        self.fit_mtu(frame, ip, key.src, extra)
    }

    /// TTL / hop limit ≤ 1: not forwarded; answered with time exceeded from the director.
    #[inline]
    fn ttl_check(&mut self, frame: &mut Frame, ip: &IpInfo) -> Option<Verdict> {
        if ip.ttl > 1 {
            return None;
        }
        self.ttl_exceeded(frame, ip)
    }

    #[cold]
    #[inline(never)]
    fn ttl_exceeded(&mut self, frame: &mut Frame, ip: &IpInfo) -> Option<Verdict> {
        let Some(src) = first_of_family(&self.cfg.addrs, ip.is_ipv4()) else {
            return Some(self.drop(DropReason::TtlExceeded));
        };
        let v = match src {
            IpAddr::V4(s) => self.reply_icmpv4(frame, ip, s, Icmpv4Error::TimeExceeded { code: 0 }),
            IpAddr::V6(s) => self.reply_icmpv6(frame, ip, s, Icmpv6Error::TimeExceeded { code: 0 }),
        };
        Some(match v {
            Verdict::Drop(_) => self.drop(DropReason::TtlExceeded),
            v => v,
        })
    }

    #[inline(always)]
    fn transmit_to_dest(
        &mut self,
        frame: &mut Frame,
        ip: &IpInfo,
        fwd: &Forward,
        now: Time,
        extra: &mut Vec<Tx>,
    ) -> Verdict {
        if let Some(v) = self.ttl_check(frame, ip) {
            return v;
        }
        self.last_dest = LastDest::Addr(fwd.daddr, fwd.dport);
        // Before the rewrite: a too-big error quotes the packet as it arrived (the tunnel
        // checks against its own, smaller, limit).
        if fwd.fwd != FwdMethod::Tunnel
            && let Some(v) = self.too_big_reply(frame, ip, usize::from(self.cfg.mtu), false)
        {
            return v;
        }
        match fwd.fwd {
            FwdMethod::DirectRoute => {
                xmit::decrement_ttl(frame.data_mut(), ip);
                self.fit_mtu(frame, ip, fwd.daddr, extra)
            }
            FwdMethod::Masq => {
                let data = frame.data_mut();
                xmit::decrement_ttl(data, ip);
                if !xmit::nat_rewrite(data, ip, NatSide::Destination, fwd.daddr, fwd.dport) {
                    return self.drop(DropReason::Malformed);
                }
                self.fit_mtu(frame, ip, fwd.daddr, extra)
            }
            FwdMethod::Tunnel => self.tunnel(frame, ip, fwd.daddr, now, extra),
        }
    }

    /// Transmit as is when it fits the MTU; otherwise DF/IPv6 → frag-needed / packet-too-big
    /// back to the sender, IPv4 without DF → fragmented here (RFC 791).
    #[inline]
    fn fit_mtu(
        &mut self,
        frame: &mut Frame,
        ip: &IpInfo,
        next_hop: IpAddr,
        extra: &mut Vec<Tx>,
    ) -> Verdict {
        let mtu = usize::from(self.cfg.mtu);
        let size = ip.end() - ip.l3_offset;
        if size <= mtu {
            return Verdict::Transmit { next_hop };
        }
        self.fit_mtu_slow(frame, ip, mtu, next_hop, extra)
    }

    #[cold]
    #[inline(never)]
    fn fit_mtu_slow(
        &mut self,
        frame: &mut Frame,
        ip: &IpInfo,
        mtu: usize,
        next_hop: IpAddr,
        extra: &mut Vec<Tx>,
    ) -> Verdict {
        if self.refragment {
            return self.refragment_out(frame, ip, mtu, next_hop, extra);
        }
        self.too_big(frame, ip, mtu, None, next_hop, extra)
    }

    /// Send a datagram the director reassembled as fragments of at most `mtu` bytes again
    /// (IPv4: RFC 791; IPv6: a Fragment header, as its sender had fragmented it).
    fn refragment_out(
        &mut self,
        frame: &Frame,
        ip: &IpInfo,
        mtu: usize,
        next_hop: IpAddr,
        extra: &mut Vec<Tx>,
    ) -> Verdict {
        let Some((link, packet)) = split_l3(frame.data(), ip) else {
            return self.drop(DropReason::Malformed);
        };
        let mut packet = packet.to_vec();
        let mut pieces = core::mem::take(&mut self.pieces);
        pieces.clear();
        let ok = if ip.is_ipv4() {
            // Fragments never carry DF; a reassembled datagram is fragmented as its sender did.
            if let Ok(mut p) = rvs_wire::rewrite::Ipv4Packet::new_checked(&mut packet[..]) {
                let (more, off) = (p.more_frags(), p.frag_offset());
                p.set_frag(false, more, off);
                p.fill_checksum();
            }
            frag::fragment_ipv4(&packet, mtu, &mut pieces).is_ok()
        } else {
            self.frag_ident = self.frag_ident.wrapping_add(1);
            frag::fragment_ipv6(&packet, mtu, self.frag_ident, &mut pieces).is_ok()
        };
        if !ok {
            self.pieces = pieces;
            return self.drop(DropReason::TooBig);
        }
        for piece in pieces.drain(..) {
            let mut b = link.to_vec();
            b.extend_from_slice(&piece);
            extra.push(Tx {
                frame: Frame::from_bytes(&b),
                next_hop,
                generated: false,
                local: false,
            });
        }
        self.pieces = pieces;
        Verdict::Held
    }

    /// Handle a packet of `size` > `limit` (the room left for the IP packet, after any tunnel
    /// overhead); `outer` re-encapsulates each fragment when tunnelling.
    fn too_big(
        &mut self,
        frame: &mut Frame,
        ip: &IpInfo,
        limit: usize,
        outer: Option<TunnelOuter>,
        next_hop: IpAddr,
        extra: &mut Vec<Tx>,
    ) -> Verdict {
        if let Some(v) = self.too_big_reply(frame, ip, limit, outer.is_some()) {
            return v;
        }
        let Some((link, packet)) = split_l3(frame.data(), ip) else {
            return self.drop(DropReason::Malformed);
        };
        let df = ip.is_ipv4() && packet.get(6).is_some_and(|b| b & 0x40 != 0);
        // IPv4 without DF (or DF with pmtu_disc off in tunnel mode): fragment the packet.
        let mut pieces = core::mem::take(&mut self.pieces);
        pieces.clear();
        let mut owned = packet.to_vec();
        if df {
            owned[6] &= !0x40;
            if let Ok(mut p) = rvs_wire::rewrite::Ipv4Packet::new_checked(&mut owned[..]) {
                p.fill_checksum();
            }
        }
        if frag::fragment_ipv4(&owned, limit, &mut pieces).is_err() {
            self.pieces = pieces;
            return self.drop(DropReason::TooBig);
        }
        let link = link.to_vec();
        for piece in pieces.drain(..) {
            let mut bytes = link.clone();
            bytes.extend_from_slice(&piece);
            let mut f = Frame::from_bytes(&bytes);
            if let Some(o) = outer {
                let Ok(p) = parse_ethernet(f.data()) else {
                    continue;
                };
                let Some(pip) = p.ip().copied() else { continue };
                let o = self.with_ident(o, false);
                if !xmit::encapsulate(&mut f, &pip, &o) {
                    continue;
                }
            }
            extra.push(Tx {
                frame: f,
                next_hop,
                generated: false,
                local: false,
            });
        }
        self.pieces = pieces;
        Verdict::Held
    }

    /// A packet bigger than `limit` (the room for the IP packet, after any tunnel overhead)
    /// that may not be fragmented here — IPv6, or IPv4 with DF honoured — is answered with
    /// frag-needed / packet-too-big (RFC 1191 / RFC 8201: tell the sender the MTU that fits).
    /// `None`: it fits, it may be fragmented, or the director reassembled it (it leaves
    /// refragmented).
    ///
    /// The transmitters call this before they rewrite the packet, so the error quotes the
    /// packet as its sender sent it (RFC 1812 §4.3.2.3, RFC 4443 §2.4 (c)): a NAT client must
    /// find its own VIP:vport in the quote to match the error to its socket, not RIP:rport.
    #[inline]
    fn too_big_reply(
        &mut self,
        frame: &mut Frame,
        ip: &IpInfo,
        limit: usize,
        tunnel: bool,
    ) -> Option<Verdict> {
        if ip.end() - ip.l3_offset <= limit || self.refragment {
            return None;
        }
        self.too_big_reply_slow(frame, ip, limit, tunnel)
    }

    #[cold]
    #[inline(never)]
    fn too_big_reply_slow(
        &mut self,
        frame: &mut Frame,
        ip: &IpInfo,
        limit: usize,
        tunnel: bool,
    ) -> Option<Verdict> {
        let Some((_, packet)) = split_l3(frame.data(), ip) else {
            return Some(self.drop(DropReason::Malformed));
        };
        let df = ip.is_ipv4() && packet.get(6).is_some_and(|b| b & 0x40 != 0);
        if ip.is_ipv4() && !(df && (self.settings().pmtu_disc || !tunnel)) {
            return None;
        }
        // Only the first fragment of a datagram draws an error (RFC 1812 §4.3.2.7).
        if ip.fragment.is_some_and(|f| !f.is_first()) {
            return Some(self.drop(DropReason::TooBig));
        }
        let mtu = limit.min(usize::from(u16::MAX)) as u16;
        let Some(me) = self.reply_source(ip) else {
            return Some(self.drop(DropReason::TooBig));
        };
        Some(match me {
            IpAddr::V4(s) => self.reply_icmpv4(frame, ip, s, Icmpv4Error::FragNeeded { mtu }),
            IpAddr::V6(s) => self.reply_icmpv6(
                frame,
                ip,
                s,
                Icmpv6Error::PacketTooBig {
                    mtu: u32::from(mtu).max(1280),
                },
            ),
        })
    }

    fn with_ident(&mut self, o: TunnelOuter, df: bool) -> TunnelOuter {
        match o {
            TunnelOuter::V4(mut t) => {
                self.ident = self.ident.wrapping_add(1);
                t.ident = self.ident;
                t.dont_fragment = df;
                TunnelOuter::V4(t)
            }
            o => o,
        }
    }

    /// The address generated errors come from: the VIP when the packet was for one (even when
    /// the VIP is not an address of this host), else the director's own address.
    fn reply_source(&self, ip: &IpInfo) -> Option<IpAddr> {
        if self.director.is_vip(ip.dst) {
            Some(ip.dst)
        } else {
            first_of_family(&self.cfg.addrs, ip.is_ipv4())
        }
    }

    fn path_mtu(&self, daddr: IpAddr, now: Time) -> u16 {
        match self.tunnel_pmtu(daddr, now) {
            Some(m) => m.min(self.cfg.mtu),
            None => self.cfg.mtu,
        }
    }

    fn tunnel(
        &mut self,
        frame: &mut Frame,
        ip: &IpInfo,
        daddr: IpAddr,
        now: Time,
        extra: &mut Vec<Tx>,
    ) -> Verdict {
        let Some(src) = first_of_family(&self.cfg.addrs, daddr.is_ipv4()) else {
            return self.drop(DropReason::NoTunnelSource);
        };
        let Some((_, packet)) = split_l3(frame.data(), ip) else {
            return self.drop(DropReason::Malformed);
        };
        let inner_df = ip.is_ipv4() && packet.get(6).is_some_and(|b| b & 0x40 != 0);
        // The inner TTL after the decrement below (`ttl_check` passed: it is at least 2).
        let ttl = ip.ttl.saturating_sub(1);
        let outer = match (src, daddr) {
            (IpAddr::V4(s), IpAddr::V4(d)) if ip.is_ipv4() => TunnelOuter::V4(Ipv4Tunnel {
                src: s,
                dst: d,
                ttl,
                ident: 0,
                dont_fragment: false,
            }),
            (IpAddr::V6(s), IpAddr::V6(d)) if !ip.is_ipv4() => TunnelOuter::V6(Ipv6Tunnel {
                src: s,
                dst: d,
                hop_limit: ttl,
            }),
            _ => return self.drop(DropReason::NoTunnelSource),
        };
        // The path to the dest may be narrower than our link: learned from errors about our own
        // tunnel packets (RFC 1191 / RFC 8201 for the tunnel path, item 8 of the ICMP issue).
        let mtu = usize::from(self.path_mtu(daddr, now));
        let size = ip.end() - ip.l3_offset;
        let limit = mtu.saturating_sub(outer.overhead());
        // Before the decrement: a too-big error quotes the packet as it arrived.
        if let Some(v) = self.too_big_reply(frame, ip, limit, true) {
            return v;
        }
        xmit::decrement_ttl(frame.data_mut(), ip);
        if size > limit {
            return self.too_big(frame, ip, limit, Some(outer), daddr, extra);
        }
        // Outer DF follows the inner DF when PMTU discovery is on (IPVS `pmtu_disc`).
        let df = inner_df && self.settings().pmtu_disc;
        let outer = self.with_ident(outer, df);
        if !xmit::encapsulate(frame, ip, &outer) {
            return self.drop(DropReason::Malformed);
        }
        Verdict::Transmit { next_hop: daddr }
    }

    fn reply_policy(
        &mut self,
        frame: &mut Frame,
        ip: &IpInfo,
        policy: ExpiredReply,
        drop: DropReason,
    ) -> Verdict {
        match policy {
            ExpiredReply::Drop => self.drop(drop),
            ExpiredReply::Rst if ip.protocol == proto::TCP => self.reply_rst(frame, ip),
            // UDP has no RST: port unreachable is its "connection refused".
            ExpiredReply::Rst | ExpiredReply::Icmp => match ip.dst {
                IpAddr::V4(vip) => {
                    self.reply_icmpv4(frame, ip, vip, Icmpv4Error::DestUnreachable { code: 3 })
                }
                IpAddr::V6(vip) => {
                    self.reply_icmpv6(frame, ip, vip, Icmpv6Error::DestUnreachable { code: 4 })
                }
            },
        }
    }

    /// Replace the frame by the packet generated in `scratch[..n]`, keeping the link header
    /// (`..link`) with its EtherType set to the packet's IP version, towards `to`.
    fn replace_with_reply(
        &mut self,
        frame: &mut Frame,
        link: usize,
        to: IpAddr,
        n: usize,
    ) -> Verdict {
        let mut bytes = core::mem::take(&mut self.reply_buf);
        bytes.clear();
        let (Some(head), Some(reply)) = (frame.data().get(..link), self.scratch.get(..n)) else {
            self.reply_buf = bytes;
            return self.drop(DropReason::Malformed);
        };
        bytes.extend_from_slice(head);
        if let Some(et) = link.checked_sub(2).and_then(|at| bytes.get_mut(at..link)) {
            let t: u16 = if to.is_ipv6() { 0x86dd } else { 0x0800 };
            et.copy_from_slice(&t.to_be_bytes());
        }
        bytes.extend_from_slice(reply);
        frame.set(&bytes);
        self.reply_buf = bytes;
        Verdict::Reply { next_hop: to }
    }

    /// A generated ICMP error of type `t` and code `c` the rate limits suppressed (its builder's
    /// `permit` said no, so it was not built): counted, dropped.
    fn suppressed(&mut self, v6: bool, t: u8, c: u8) -> Verdict {
        self.icmp_counters.count(v6, t, c, IcmpOutcome::Suppressed);
        self.drop(DropReason::ReplySuppressed)
    }

    /// Send the ICMP error generated in `scratch[..n]` to `to` (the rate limits passed: the
    /// builder asked them): every generated message's common tail — a fresh IPv4 ID (sent with
    /// DF clear, so RFC 6864 §4.2 wants one unique to its source and destination), the
    /// counters, and the frame replaced (link header kept).
    fn send_generated_icmp(
        &mut self,
        frame: &mut Frame,
        link: usize,
        to: IpAddr,
        n: usize,
    ) -> Verdict {
        let v6 = to.is_ipv6();
        if !v6 {
            self.ident = self.ident.wrapping_add(1);
            let ident = self.ident;
            let head = self.scratch.get_mut(..n).unwrap_or_default();
            if let Ok(mut p) = rvs_wire::rewrite::Ipv4Packet::new_checked(head) {
                // The builder's header checksum is right: adjust it for the new ID (RFC 1624).
                let old = p.ident();
                p.set_ident(ident);
                p.set_checksum(rvs_wire::checksum::update16(p.checksum(), old, ident));
            }
        }
        let at = if v6 { 40 } else { 20 };
        let (t, c) = (self.scratch[at], self.scratch[at + 1]);
        self.icmp_counters.count(v6, t, c, IcmpOutcome::Generated);
        self.replace_with_reply(frame, link, to, n)
    }

    fn reply_rst(&mut self, frame: &mut Frame, ip: &IpInfo) -> Verdict {
        let Some((_, packet)) = split_l3(frame.data(), ip) else {
            return self.drop(DropReason::Malformed);
        };
        match build::tcp_rst(&mut self.scratch, packet, ORIGIN_TTL) {
            Ok(n) => self.replace_with_reply(frame, ip.l3_offset, ip.src, n),
            Err(_) => self.drop(DropReason::ReplyRefused),
        }
    }

    fn reply_icmpv4(
        &mut self,
        frame: &mut Frame,
        ip: &IpInfo,
        src: Ipv4Addr,
        kind: Icmpv4Error,
    ) -> Verdict {
        let IpAddr::V4(dst) = ip.src else {
            return self.drop(DropReason::ReplyRefused);
        };
        let Some((_, packet)) = split_l3(frame.data(), ip) else {
            return self.drop(DropReason::Malformed);
        };
        let (global, per_dest, now) = (&mut self.gen_global, &mut self.gen_per_dest, self.now);
        let settings = self.director.settings();
        let permit = || icmp::allow_generated(global, per_dest, settings, ip.src, now);
        let n = build::icmpv4_error_if(
            &mut self.scratch,
            src,
            dst,
            kind,
            packet,
            ORIGIN_TTL,
            permit,
        );
        self.send_or_count(frame, ip, n, false, kind.type_code())
    }

    /// The end of [`Dataplane::reply_icmpv4`] and [`Dataplane::reply_icmpv6`]: the error built
    /// (`n`) sent, not permitted counted as suppressed, refused dropped as refused.
    #[inline]
    fn send_or_count(
        &mut self,
        frame: &mut Frame,
        ip: &IpInfo,
        n: Result<Option<usize>, rvs_wire::WireError>,
        v6: bool,
        (t, c): (u8, u8),
    ) -> Verdict {
        match n {
            Ok(Some(n)) => self.send_generated_icmp(frame, ip.l3_offset, ip.src, n),
            Ok(None) => self.suppressed(v6, t, c),
            Err(_) => self.drop(DropReason::ReplyRefused),
        }
    }

    fn reply_icmpv6(
        &mut self,
        frame: &mut Frame,
        ip: &IpInfo,
        src: Ipv6Addr,
        kind: Icmpv6Error,
    ) -> Verdict {
        let IpAddr::V6(dst) = ip.src else {
            return self.drop(DropReason::ReplyRefused);
        };
        let Some((_, packet)) = split_l3(frame.data(), ip) else {
            return self.drop(DropReason::Malformed);
        };
        let (global, per_dest, now) = (&mut self.gen_global, &mut self.gen_per_dest, self.now);
        let settings = self.director.settings();
        let permit = || icmp::allow_generated(global, per_dest, settings, ip.src, now);
        let n = build::icmpv6_error_if(
            &mut self.scratch,
            src,
            dst,
            kind,
            packet,
            ORIGIN_TTL,
            permit,
        );
        self.send_or_count(frame, ip, n, true, kind.type_code())
    }

    // ---- fragments -----------------------------------------------------------------------

    fn frag_drop(&mut self, d: FragDrop) -> Verdict {
        let r = match d {
            FragDrop::Overflow => DropReason::FragOverflow,
            FragDrop::TooManyFragments => DropReason::FragTooMany,
            FragDrop::Overlap => DropReason::FragOverlap,
            FragDrop::TooBig => DropReason::FragTooBig,
            FragDrop::Malformed => DropReason::FragMalformed,
        };
        self.drop(r)
    }

    /// A fragment of a TCP/UDP datagram. The first fragment (which has the ports) decides:
    /// DR/TUN forward every fragment as it is to the first's dest; NAT reassembles first.
    fn fragment(
        &mut self,
        frame: &mut Frame,
        ip: &IpInfo,
        first: bool,
        now: Time,
        extra: &mut Vec<Tx>,
    ) -> Verdict {
        let Some(fkey) = FragKey::of(ip) else {
            return self.drop(DropReason::FragMalformed);
        };
        if first {
            let Some(key) = ip.flow_key() else {
                return self.local_datagram(fkey, ip, now, extra);
            };
            let cid = self
                .director
                .conn_in_live(&key, now)
                .or_else(|| self.director.conn_out_live(&key, now));
            let cid = match cid {
                Some(c) => c,
                None => match self.director.find_service(ip.protocol, ip.dst, key.dport) {
                    None => return self.local_datagram(fkey, ip, now, extra),
                    Some(svc) => {
                        let flags = match ip.transport {
                            Transport::Tcp { flags, .. } => flags,
                            _ => 0,
                        };
                        match self.admit(frame, ip, svc, &key, None, flags, now) {
                            Ok(f) => f.conn,
                            Err(v) => return v,
                        }
                    }
                },
            };
            let held = self.tracker.decided(fkey, FragDecision::Conn(cid), now);
            if self
                .director
                .conn(cid)
                .is_some_and(|c| c.fwd == FwdMethod::Masq)
            {
                // NAT: reassemble this one and any held earlier.
                let Some((link, packet)) = split_l3(frame.data(), ip) else {
                    return self.drop(DropReason::Malformed);
                };
                let (link, packet) = (link.to_vec(), packet.to_vec());
                for h in held {
                    // Held fragments are whole frames; the reassembler takes IP packets.
                    let at = parse_ethernet(&h)
                        .ok()
                        .and_then(|p| p.ip().map(|hip| hip.l3_offset..hip.end()));
                    if let Some(packet) = at.and_then(|r| h.get(r)) {
                        self.reassemble_piece(&link, packet, now, extra);
                    }
                }
                return self.reassemble_piece(&link, &packet, now, extra);
            }
            for h in held {
                self.forward_fragment(&h, cid, now, extra);
            }
            let len = ip.end() - ip.l3_offset;
            return self.forward_fragment_in_place(frame, ip, cid, len, now, extra);
        }
        match self.tracker.lookup(&fkey, now) {
            Some(FragDecision::Local) => self.local(),
            Some(FragDecision::Conn(cid)) => {
                if self
                    .director
                    .conn(cid)
                    .is_some_and(|c| c.fwd == FwdMethod::Masq)
                {
                    let Some((link, packet)) = split_l3(frame.data(), ip) else {
                        return self.drop(DropReason::Malformed);
                    };
                    let (link, packet) = (link.to_vec(), packet.to_vec());
                    return self.reassemble_piece(&link, &packet, now, extra);
                }
                let len = ip.end() - ip.l3_offset;
                self.forward_fragment_in_place(frame, ip, cid, len, now, extra)
            }
            None => {
                // Not known yet: ours only if it is for a VIP; then hold it for its first.
                if !self.director.is_vip(ip.dst) && !self.director.is_masq_dest(ip.src) {
                    return self.local();
                }
                match self.tracker.hold(fkey, frame.data(), now) {
                    Ok(()) => Verdict::Held,
                    Err(d) => self.frag_drop(d),
                }
            }
        }
    }

    /// The first fragment of a datagram that is not ours: it, the fragments held before it
    /// and those still to come are the host's.
    fn local_datagram(
        &mut self,
        fkey: FragKey,
        ip: &IpInfo,
        now: Time,
        extra: &mut Vec<Tx>,
    ) -> Verdict {
        for h in self.tracker.decided(fkey, FragDecision::Local, now) {
            extra.push(Tx {
                frame: Frame::from_bytes(&h),
                next_hop: ip.dst,
                generated: false,
                local: true,
            });
        }
        self.local()
    }

    fn forward_fragment_in_place(
        &mut self,
        frame: &mut Frame,
        ip: &IpInfo,
        cid: ConnId,
        len: usize,
        now: Time,
        extra: &mut Vec<Tx>,
    ) -> Verdict {
        let dir = Direction::InputOnly;
        let fwd = match self.director.conn_packet(cid, dir, 0, len, now) {
            Ok(f) => f,
            Err(_) => return self.drop(DropReason::DestUnavailable),
        };
        self.transmit_to_dest(frame, ip, &fwd, now, extra)
    }

    /// Forward a held fragment (a whole frame) to the connection's dest, as an extra frame.
    fn forward_fragment(&mut self, held: &[u8], cid: ConnId, now: Time, extra: &mut Vec<Tx>) {
        let mut f = Frame::from_bytes(held);
        let Ok(p) = parse_ethernet(f.data()) else {
            return;
        };
        let Some(ip) = p.ip().copied() else { return };
        let len = ip.end() - ip.l3_offset;
        match self.forward_fragment_in_place(&mut f, &ip, cid, len, now, extra) {
            Verdict::Transmit { next_hop } => {
                extra.push(Tx {
                    frame: f,
                    next_hop,
                    generated: false,
                    local: false,
                });
            }
            Verdict::Reply { next_hop } => {
                extra.push(Tx {
                    frame: f,
                    next_hop,
                    generated: true,
                    local: false,
                });
            }
            _ => {}
        }
    }

    /// Feed one fragment (IP packet) to the reassembler; when the datagram completes, NAT it
    /// and send it on, fragmented again to the MTU.
    fn reassemble_piece(
        &mut self,
        link: &[u8],
        packet: &[u8],
        now: Time,
        extra: &mut Vec<Tx>,
    ) -> Verdict {
        let Ok(p) = parse_ip(packet) else {
            return self.drop(DropReason::FragMalformed);
        };
        let Some(ip) = p.ip().copied() else {
            return self.drop(DropReason::FragMalformed);
        };
        match self.reasm.add(packet, &ip, now) {
            Err(d) => self.frag_drop(d),
            Ok(None) => Verdict::Held,
            Ok(Some(datagram)) => {
                let mut bytes = link.to_vec();
                bytes.extend_from_slice(&datagram);
                let mut f = Frame::from_bytes(&bytes);
                let Ok(p) = parse_ethernet(f.data()) else {
                    return self.drop(DropReason::FragMalformed);
                };
                let Some(whole) = p.ip().copied() else {
                    return self.drop(DropReason::FragMalformed);
                };
                let v = self.process_whole_nat(&mut f, &whole, now, extra);
                match v {
                    Verdict::Transmit { next_hop } => {
                        extra.push(Tx {
                            frame: f,
                            next_hop,
                            generated: false,
                            local: false,
                        });
                        Verdict::Held
                    }
                    Verdict::Reply { next_hop } => {
                        extra.push(Tx {
                            frame: f,
                            next_hop,
                            generated: true,
                            local: false,
                        });
                        Verdict::Held
                    }
                    v => v,
                }
            }
        }
    }

    /// A reassembled datagram through the ordinary path (connection lookup, NAT rewrite), then
    /// out fragmented to the MTU again.
    fn process_whole_nat(
        &mut self,
        frame: &mut Frame,
        ip: &IpInfo,
        now: Time,
        extra: &mut Vec<Tx>,
    ) -> Verdict {
        self.refragment = true;
        let v = self.process_ip(frame, ip, None, now, extra);
        self.refragment = false;
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Ethernet + IPv4 + TCP frame with `payload` bytes of data.
    fn tcp_frame(payload: usize) -> Vec<u8> {
        let mut v = Vec::new();
        etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([192, 0, 2, 1], [203, 0, 113, 10], 64)
            .tcp(40000, 80, 1, 1000)
            .write(&mut v, &vec![0u8; payload])
            .unwrap_or_default();
        v
    }

    // The paths that copy or quote the packet take its bounds from `ip`. Handed the parse of
    // a longer frame (a bug elsewhere), each drops the frame as malformed: no panic.
    #[test]
    fn a_parse_of_another_frame_is_dropped_not_a_panic() {
        let long = tcp_frame(1000);
        let parsed = parse_ethernet(&long).ok();
        let Some(ip) = parsed.as_ref().and_then(|p| p.ip()).copied() else {
            panic!("the long frame parses");
        };
        let cfg = DataplaneConfig {
            addrs: vec![IpAddr::V4(Ipv4Addr::new(198, 51, 100, 2))],
            ..DataplaneConfig::default()
        };
        let mut dp = Dataplane::new(Director::new(Settings::default()), cfg);
        let short = tcp_frame(0);
        let malformed = |v: &Verdict| matches!(v, Verdict::Drop(DropReason::Malformed));
        let mut extra = Vec::new();
        let mut f = Frame::from_bytes(&short);
        assert!(malformed(&dp.reply_rst(&mut f, &ip)));
        let mut f = Frame::from_bytes(&short);
        let port = Icmpv4Error::DestUnreachable { code: 3 };
        let vip = Ipv4Addr::new(203, 0, 113, 10);
        assert!(malformed(&dp.reply_icmpv4(&mut f, &ip, vip, port)));
        let mut f = Frame::from_bytes(&short);
        let dest = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 11));
        assert!(malformed(&dp.tunnel(&mut f, &ip, dest, 0, &mut extra)));
        let mut f = Frame::from_bytes(&short);
        let v = dp.too_big(&mut f, &ip, 576, None, dest, &mut extra);
        assert!(malformed(&v));
        let f = Frame::from_bytes(&short);
        assert!(malformed(
            &dp.refragment_out(&f, &ip, 576, dest, &mut extra)
        ));
        assert!(extra.is_empty());
        assert_eq!(dp.counters().drops(DropReason::Malformed), 5);
    }
}
