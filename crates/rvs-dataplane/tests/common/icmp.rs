//! Fixture helpers shared by the ICMP and MTU tables (tests/icmp.rs, tests/mtu.rs): balanced
//! flows, ICMP messages built with etherparse (independent of the code under test), hand-made
//! packet surgery (IPv4 options, IPv6 extension headers, fragments), and a katran-style case
//! runner that reports every failing case at once.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs
)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use etherparse::{IpHeaders, IpNumber, Ipv4Extensions, Ipv4Header, Ipv6Header, PacketBuilder};
use rvs_dataplane::frag::{FragLimits, Reassembler};
use rvs_dataplane::{Dataplane, DropReason, IcmpOutcome, Verdict};

use crate::common::*;

/// A router on the clients' side of the director.
pub const ROUTER4_C: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 254);
pub const ROUTER6_C: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0xfe);
/// A router between the director and the dests.
pub const ROUTER4_D: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 254);
pub const ROUTER6_D: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0xfe);
/// A second client.
pub const CIP4_B: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
pub const CIP6_B: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2);

/// The forwarding method of a flow's dest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Nat,
    Dr,
    Tun,
}

impl Method {
    pub const ALL: [Method; 3] = [Method::Dr, Method::Tun, Method::Nat];

    /// The ipvsadm flag.
    pub fn flag(self) -> &'static str {
        match self {
            Method::Nat => "-m",
            Method::Dr => "-g",
            Method::Tun => "-i",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Method::Nat => "NAT",
            Method::Dr => "DR",
            Method::Tun => "TUN",
        }
    }

    pub fn fwd(self) -> rvs_core::types::FwdMethod {
        match self {
            Method::Nat => rvs_core::types::FwdMethod::Masq,
            Method::Dr => rvs_core::types::FwdMethod::DirectRoute,
            Method::Tun => rvs_core::types::FwdMethod::Tunnel,
        }
    }
}

/// Transport of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4 {
    Tcp,
    Udp,
}

/// One balanced flow: client CIP:cport → VIP:vport, scheduled to RIP\[rip\]:rport by `method`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    pub v6: bool,
    pub l4: L4,
    pub method: Method,
    pub cport: u16,
    pub vport: u16,
    pub rip: usize,
    /// Second client instead of the first.
    pub client_b: bool,
}

impl Flow {
    pub fn new(v6: bool, l4: L4, method: Method) -> Flow {
        Flow {
            v6,
            l4,
            method,
            cport: 40000,
            vport: if l4 == L4::Tcp { 80 } else { 53 },
            rip: 0,
            client_b: false,
        }
    }

    pub fn v4(l4: L4, method: Method) -> Flow {
        Flow::new(false, l4, method)
    }

    pub fn v6(l4: L4, method: Method) -> Flow {
        Flow::new(true, l4, method)
    }

    /// The same flow from another client port.
    pub fn port(mut self, cport: u16) -> Flow {
        self.cport = cport;
        self
    }

    /// The same flow from the second client.
    pub fn other_client(mut self) -> Flow {
        self.client_b = true;
        self
    }

    pub fn fam(&self) -> &'static str {
        if self.v6 { "v6" } else { "v4" }
    }

    pub fn l4_name(&self) -> &'static str {
        match self.l4 {
            L4::Tcp => "TCP",
            L4::Udp => "UDP",
        }
    }

    /// "v4 NAT TCP" and the like, for case names.
    pub fn label(&self) -> String {
        format!("{} {} {}", self.fam(), self.method.name(), self.l4_name())
    }

    pub fn cip(&self) -> IpAddr {
        match (self.v6, self.client_b) {
            (false, false) => CIP4.into(),
            (false, true) => CIP4_B.into(),
            (true, false) => CIP6.into(),
            (true, true) => CIP6_B.into(),
        }
    }

    pub fn vip(&self) -> IpAddr {
        if self.v6 { VIP6.into() } else { VIP4.into() }
    }

    pub fn rip_addr(&self) -> IpAddr {
        if self.v6 {
            RIP6[self.rip].into()
        } else {
            RIP4[self.rip].into()
        }
    }

    pub fn dir(&self) -> IpAddr {
        if self.v6 { DIR6.into() } else { DIR4.into() }
    }

    pub fn router_c(&self) -> IpAddr {
        if self.v6 {
            ROUTER6_C.into()
        } else {
            ROUTER4_C.into()
        }
    }

    pub fn router_d(&self) -> IpAddr {
        if self.v6 {
            ROUTER6_D.into()
        } else {
            ROUTER4_D.into()
        }
    }

    pub fn rport(&self) -> u16 {
        match self.method {
            Method::Nat => 8080,
            _ => self.vport,
        }
    }

    pub fn client(&self) -> SocketAddr {
        SocketAddr::new(self.cip(), self.cport)
    }

    pub fn virt(&self) -> SocketAddr {
        SocketAddr::new(self.vip(), self.vport)
    }

    pub fn real(&self) -> SocketAddr {
        SocketAddr::new(self.rip_addr(), self.rport())
    }

    pub fn proto_flag(&self) -> &'static str {
        match self.l4 {
            L4::Tcp => "-t",
            L4::Udp => "-u",
        }
    }

    /// The service line alone.
    pub fn service_rule(&self) -> String {
        format!("-A {} {} -s rr\n", self.proto_flag(), self.virt())
    }

    /// The dest line for RIP\[i\] by this flow's method.
    pub fn dest_rule(&self, i: usize) -> String {
        let mut f = *self;
        f.rip = i;
        format!(
            "-a {} {} -r {} {} -w 1\n",
            self.proto_flag(),
            self.virt(),
            f.real(),
            self.method.flag()
        )
    }

    /// The service with this flow's dest as its only dest.
    pub fn rules(&self) -> String {
        self.service_rule() + &self.dest_rule(self.rip)
    }

    /// The flow's key as the connection table knows it (caddr:cport → vaddr:vport).
    pub fn key(&self) -> rvs_wire::parse::FlowKey {
        rvs_wire::parse::FlowKey {
            protocol: if self.l4 == L4::Tcp { 6 } else { 17 },
            src: self.cip(),
            sport: self.cport,
            dst: self.vip(),
            dport: self.vport,
        }
    }

    /// A packet of the flow from `src` to `dst`: TCP ACK+PSH (seq 1000, ack 2000) or UDP,
    /// carrying `payload` bytes of 0x5a.
    pub fn packet(&self, src: SocketAddr, dst: SocketAddr, payload: usize, ttl: u8) -> Vec<u8> {
        let data = vec![0x5a; payload];
        match self.l4 {
            L4::Tcp => tcp_ttl(src, dst, "PA", 1000, 2000, &data, ttl),
            L4::Udp => udp_ttl(src, dst, &data, ttl),
        }
    }

    /// The first packet of the flow, client → VIP: a TCP SYN or a UDP datagram.
    pub fn open(&self) -> Vec<u8> {
        match self.l4 {
            L4::Tcp => tcp(self.client(), self.virt(), "S", 999, 0, b""),
            L4::Udp => udp(self.client(), self.virt(), b"open"),
        }
    }

    /// A data packet client → VIP.
    pub fn client_sent(&self, payload: usize) -> Vec<u8> {
        self.packet(self.client(), self.virt(), payload, 64)
    }

    /// What the VIP sent the client (quoted by errors from the clients' side).
    pub fn vip_sent(&self, payload: usize) -> Vec<u8> {
        self.packet(self.virt(), self.client(), payload, 64)
    }

    /// The same packet as the dest sent it (NAT: RIP:rport → client): what a NAT'd quote must
    /// become on its way to the dest.
    pub fn rip_sent(&self, payload: usize) -> Vec<u8> {
        self.packet(self.real(), self.client(), payload, 64)
    }

    /// What the dest received from the client through the director (NAT: client → RIP:rport,
    /// TTL 63): quoted by errors from the dests' side.
    pub fn rip_received(&self, payload: usize) -> Vec<u8> {
        self.packet(self.client(), self.real(), payload, 63)
    }
}

/// The 4 type-specific bytes of a frag-needed (IPv4) / packet-too-big (IPv6) advertising `mtu`.
pub fn mtu_rest(v6: bool, mtu: u32) -> [u8; 4] {
    if v6 {
        mtu.to_be_bytes()
    } else {
        let m = (mtu as u16).to_be_bytes();
        [0, 0, m[0], m[1]]
    }
}

/// An ICMP / ICMPv6 message from `src` to `dst` as a host or router sends it (etherparse's
/// defaults: IPv4 with DF set and ident 0).
pub fn icmp(
    src: IpAddr,
    dst: IpAddr,
    ttl: u8,
    t: u8,
    c: u8,
    rest: [u8; 4],
    body: &[u8],
) -> Vec<u8> {
    let mut v = Vec::new();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => PacketBuilder::ipv4(s.octets(), d.octets(), ttl)
            .icmpv4_raw(t, c, rest)
            .write(&mut v, body)
            .unwrap(),
        (IpAddr::V6(s), IpAddr::V6(d)) => PacketBuilder::ipv6(s.octets(), d.octets(), ttl)
            .icmpv6_raw(t, c, rest)
            .write(&mut v, body)
            .unwrap(),
        _ => panic!("mixed families"),
    }
    v
}

/// An error as the director originates it: TTL / hop limit 64, IPv4 DF clear (as Linux's ICMP
/// socket sends errors, IP_PMTUDISC_DONT) and ident 0 — the runner adopts the fresh ID the
/// director gives it ([`adopt_ident`]) — quoting `body` (already cut by the caller to what the
/// RFCs allow).
pub fn generated(src: IpAddr, dst: IpAddr, t: u8, c: u8, rest: [u8; 4], body: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut h = Ipv4Header::new(0, 64, IpNumber::ICMP, s.octets(), d.octets()).unwrap();
            h.dont_fragment = false;
            PacketBuilder::ip(IpHeaders::Ipv4(h, Ipv4Extensions::default()))
                .icmpv4_raw(t, c, rest)
                .write(&mut v, body)
                .unwrap();
        }
        _ => return icmp(src, dst, 64, t, c, rest, body),
    }
    v
}

/// The TCP RST the director answers a segment with, from `from` to `to` (etherparse-built:
/// window 0, IPv4 DF set, TTL 64).
pub fn rst(from: SocketAddr, to: SocketAddr, seq: u32, ack: Option<u32>) -> Vec<u8> {
    let b = match (from.ip(), to.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => PacketBuilder::ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => PacketBuilder::ipv6(s.octets(), d.octets(), 64),
        _ => panic!("mixed families"),
    };
    let mut t = b.tcp(from.port(), to.port(), seq, 0).rst();
    if let Some(a) = ack {
        t = t.ack(a);
    }
    let mut v = Vec::new();
    t.write(&mut v, b"").unwrap();
    v
}

/// Rebuild an IPv4 packet's header after `f` changed it (checksum recomputed by etherparse).
pub fn edit_v4(pkt: &[u8], f: impl FnOnce(&mut Ipv4Header)) -> Vec<u8> {
    let (mut h, _) = Ipv4Header::from_slice(pkt).unwrap();
    let hl = h.header_len();
    f(&mut h);
    h.header_checksum = h.calc_header_checksum();
    let mut v = h.to_bytes().to_vec();
    v.extend_from_slice(&pkt[hl..]);
    v
}

/// Set the TTL / hop limit of an IP packet (IPv4 checksum recomputed).
pub fn with_ttl(pkt: &[u8], ttl: u8) -> Vec<u8> {
    if pkt[0] >> 4 == 4 {
        edit_v4(pkt, |h| h.time_to_live = ttl)
    } else {
        let mut v = pkt.to_vec();
        v[7] = ttl;
        v
    }
}

/// Clear DF of an IPv4 packet.
pub fn without_df(pkt: &[u8]) -> Vec<u8> {
    edit_v4(pkt, |h| h.dont_fragment = false)
}

/// Insert IPv4 options after the 20-byte header, by hand: IHL, total length and the header
/// checksum fixed (the upper layer's checksum does not cover options).
pub fn with_ipv4_options(pkt: &[u8], opts: &[u8]) -> Vec<u8> {
    assert_eq!(pkt[0], 0x45);
    assert_eq!(opts.len() % 4, 0);
    let mut v = pkt[..20].to_vec();
    v.extend_from_slice(opts);
    v.extend_from_slice(&pkt[20..]);
    v[0] = 0x45 + (opts.len() / 4) as u8;
    let total = u16::from_be_bytes([v[2], v[3]]) + opts.len() as u16;
    v[2..4].copy_from_slice(&total.to_be_bytes());
    v[10] = 0;
    v[11] = 0;
    let (h, _) = Ipv4Header::from_slice(&v).unwrap();
    v[10..12].copy_from_slice(&h.calc_header_checksum().to_be_bytes());
    v
}

/// Router Alert (RFC 2113): 4 bytes, IHL 6.
pub const ROUTER_ALERT: [u8; 4] = [0x94, 0x04, 0x00, 0x00];

/// Insert a Hop-by-Hop Options header and a Destination Options header (8 bytes each, PadN)
/// between an IPv6 header and its upper layer (whose checksum does not change).
pub fn with_ipv6_exts(pkt: &[u8]) -> Vec<u8> {
    assert_eq!(pkt[0] >> 4, 6);
    let upper = pkt[6];
    let mut v = pkt[..40].to_vec();
    v[6] = 0; // Hop-by-Hop
    v.extend_from_slice(&[60, 0, 1, 4, 0, 0, 0, 0]); // → Destination Options, PadN(4)
    v.extend_from_slice(&[upper, 0, 1, 4, 0, 0, 0, 0]); // → upper layer, PadN(4)
    v.extend_from_slice(&pkt[40..]);
    let pl = u16::from_be_bytes([v[4], v[5]]) + 16;
    v[4..6].copy_from_slice(&pl.to_be_bytes());
    v
}

/// A fragment of `pkt` (a whole IPv4 or IPv6 packet without extension headers) holding its
/// payload bytes `start..end` (`start` a multiple of 8). IPv4: DF cleared, MF and offset set,
/// checksum recomputed. IPv6: a Fragment header (ident 0x1234) inserted.
pub fn fragment_of(pkt: &[u8], start: usize, end: usize, more: bool) -> Vec<u8> {
    assert_eq!(start % 8, 0);
    if pkt[0] >> 4 == 4 {
        let hl = usize::from(pkt[0] & 0x0f) * 4;
        let payload = &pkt[hl..];
        let (mut h, _) = Ipv4Header::from_slice(pkt).unwrap();
        h.dont_fragment = false;
        h.more_fragments = more;
        h.fragment_offset = etherparse::IpFragOffset::try_new((start / 8) as u16).unwrap();
        h.total_len = (hl + end - start) as u16;
        h.header_checksum = h.calc_header_checksum();
        let mut v = h.to_bytes().to_vec();
        v.extend_from_slice(&payload[start..end]);
        v
    } else {
        let payload = &pkt[40..];
        let mut v = pkt[..40].to_vec();
        let upper = pkt[6];
        v[6] = 44;
        let pl = (8 + end - start) as u16;
        v[4..6].copy_from_slice(&pl.to_be_bytes());
        let off = (start as u16) | u16::from(more);
        v.extend_from_slice(&[upper, 0]);
        v.extend_from_slice(&off.to_be_bytes());
        v.extend_from_slice(&0x1234u32.to_be_bytes());
        v.extend_from_slice(&payload[start..end]);
        v
    }
}

/// The outer IPv4 header of a director's IPv4-in-IPv4 packet (RFC 2003): TOS copied from the
/// inner header, the given ident and DF.
pub fn ipip(src: Ipv4Addr, dst: Ipv4Addr, ttl: u8, ident: u16, df: bool, inner: &[u8]) -> Vec<u8> {
    let mut h = Ipv4Header::new(
        inner.len() as u16,
        ttl,
        IpNumber(4),
        src.octets(),
        dst.octets(),
    )
    .unwrap();
    h.identification = ident;
    h.dont_fragment = df;
    h.dscp = etherparse::IpDscp::try_new(inner[1] >> 2).unwrap();
    h.ecn = etherparse::IpEcn::try_new(inner[1] & 3).unwrap();
    h.header_checksum = h.calc_header_checksum();
    let mut v = h.to_bytes().to_vec();
    v.extend_from_slice(inner);
    v
}

/// The outer IPv6 header of a director's IPv6-in-IPv6 packet (RFC 2473): traffic class and
/// flow label copied from the inner header.
pub fn ip6ip6(src: Ipv6Addr, dst: Ipv6Addr, hop: u8, inner: &[u8]) -> Vec<u8> {
    let w0 = u32::from_be_bytes([inner[0], inner[1], inner[2], inner[3]]);
    let h = Ipv6Header {
        traffic_class: (w0 >> 20) as u8,
        flow_label: etherparse::Ipv6FlowLabel::try_new(w0 & 0xfffff).unwrap(),
        payload_length: inner.len() as u16,
        next_header: IpNumber(41),
        hop_limit: hop,
        source: src.octets(),
        destination: dst.octets(),
    };
    let mut v = h.to_bytes().to_vec();
    v.extend_from_slice(inner);
    v
}

/// `inner` as the director tunnels it to `dst` (outer source DIR4/DIR6, TTL/hop limit 63 —
/// the inner packet's, decremented), with an IPv4 ident and DF.
pub fn tunnelled(dst: IpAddr, ident: u16, df: bool, inner: &[u8]) -> Vec<u8> {
    match dst {
        IpAddr::V4(d) => ipip(DIR4, d, inner[8], ident, df, inner),
        IpAddr::V6(d) => ip6ip6(DIR6, d, inner[7], inner),
    }
}

// ---- the case table ------------------------------------------------------------------------

/// What one packet must produce.
#[derive(Debug, Clone)]
pub enum Want {
    /// Transmit towards the next hop, the frame byte-exact (IP packet given; Ethernet added).
    Transmit(IpAddr, Vec<u8>),
    /// Transmit towards the next hop, encapsulated: outer header (source DIR, destination the
    /// next hop; the IPv4 ident is the director's choice and read from the output) around
    /// exactly this inner packet, with this outer DF (IPv4).
    Tunnelled(IpAddr, Vec<u8>, bool),
    /// Transmit towards the next hop, frame not compared (a flow's opening packets).
    TransmitTo(IpAddr),
    /// A generated reply towards the next hop, byte-exact.
    Reply(IpAddr, Vec<u8>),
    /// Handed to the host stack, untouched.
    Local,
    /// Dropped for this reason.
    Drop(DropReason),
    /// Held (a fragment waiting for its first).
    Held,
    /// Fragmented: the frames in `extra`, each towards the next hop and at most `mtu` bytes of
    /// IP, reassemble (after taking off the tunnel header when `tunnel`) to exactly this
    /// datagram.
    Fragments {
        next_hop: IpAddr,
        mtu: usize,
        tunnel: bool,
        datagram: Vec<u8>,
    },
}

type CheckFn = Box<dyn Fn(&Dataplane, u64) -> Result<(), String>>;

pub enum Step {
    Packet { frame: Vec<u8>, at: u64, want: Want },
    Apply { rule: String, at: u64 },
    Check { what: String, at: u64, f: CheckFn },
}

/// One row of a table: a named scenario with its own dataplane.
pub struct Case {
    pub name: String,
    pub rules: String,
    pub sets: Vec<(&'static str, &'static str)>,
    pub mtu: u16,
    pub steps: Vec<Step>,
}

impl Case {
    pub fn new(name: impl Into<String>, rules: impl Into<String>) -> Case {
        Case {
            name: name.into(),
            rules: rules.into(),
            sets: Vec::new(),
            mtu: 1500,
            steps: Vec::new(),
        }
    }

    pub fn set(mut self, k: &'static str, v: &'static str) -> Case {
        self.sets.push((k, v));
        self
    }

    pub fn mtu(mut self, mtu: u16) -> Case {
        self.mtu = mtu;
        self
    }

    /// Send an IP packet (wrapped in Ethernet from the gateway) at `at`.
    pub fn send(mut self, ip: &[u8], at: u64, want: Want) -> Case {
        self.steps.push(Step::Packet {
            frame: eth(ip),
            at,
            want,
        });
        self
    }

    /// Open the flow at `at` (its first packet, forwarded to its dest).
    pub fn open(self, f: &Flow, at: u64) -> Case {
        self.send(&f.open(), at, Want::TransmitTo(f.rip_addr()))
    }

    /// An ipvsadm rule applied at `at` (dest edit or delete...).
    pub fn apply(mut self, rule: impl Into<String>, at: u64) -> Case {
        self.steps.push(Step::Apply {
            rule: rule.into(),
            at,
        });
        self
    }

    pub fn check(
        mut self,
        what: impl Into<String>,
        at: u64,
        f: impl Fn(&Dataplane, u64) -> Result<(), String> + 'static,
    ) -> Case {
        self.steps.push(Step::Check {
            what: what.into(),
            at,
            f: Box::new(f),
        });
        self
    }

    /// The ICMP counter for (family, type, code, outcome) must read `n`.
    pub fn count(self, v6: bool, t: u8, c: u8, outcome: IcmpOutcome, n: u64) -> Case {
        self.check(
            format!("counter v6={v6} {t}/{c} {outcome:?} = {n}"),
            0,
            move |dp, _| {
                let got = dp.icmp_counters().get(v6, t, c, outcome);
                (got == n).then_some(()).ok_or(format!(
                    "counter v6={v6} {t}/{c} {outcome:?}: {got}, want {n}"
                ))
            },
        )
    }

    /// The ICMP total for `outcome` must read `n`.
    pub fn total(self, outcome: IcmpOutcome, n: u64) -> Case {
        self.check(format!("total {outcome:?} = {n}"), 0, move |dp, _| {
            let got = dp.icmp_counters().total(outcome);
            (got == n)
                .then_some(())
                .ok_or(format!("total {outcome:?}: {got}, want {n}"))
        })
    }
}

fn hex_diff(got: &[u8], want: &[u8]) -> String {
    let at = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    let lo = at.saturating_sub(8);
    format!(
        "lengths {} / {}, first difference at byte {at}\n got[{lo}..]: {:02x?}\nwant[{lo}..]: {:02x?}",
        got.len(),
        want.len(),
        &got[lo.min(got.len())..(at + 16).min(got.len())],
        &want[lo.min(want.len())..(at + 16).min(want.len())],
    )
}

/// Generated ICMPv4 errors leave with DF clear and a fresh IP ID of the director's choosing
/// (RFC 6864 §4.2): the expected frame (built with ID 0) takes the output's ID, which must not
/// be 0, and its header checksum is recomputed by etherparse.
pub fn adopt_ident(got: &[u8], want: &[u8]) -> Result<Vec<u8>, String> {
    let mut want = want.to_vec();
    let v4_icmp = |f: &[u8]| f.len() > 34 && f[12..14] == [0x08, 0x00] && f[23] == 1;
    if v4_icmp(got) && v4_icmp(&want) && want[20] & 0x40 == 0 && want[18..20] == [0, 0] {
        let ident = u16::from_be_bytes([got[18], got[19]]);
        if ident == 0 {
            return Err("generated ICMPv4 error with DF clear and IP ID 0".into());
        }
        want[18..20].copy_from_slice(&ident.to_be_bytes());
        let (h, _) = Ipv4Header::from_slice(&want[14..]).unwrap();
        want[24..26].copy_from_slice(&h.calc_header_checksum().to_be_bytes());
    }
    Ok(want)
}

fn same_frame(got: &[u8], want: &[u8]) -> Result<(), String> {
    if got != want {
        return Err(format!("output frame differs: {}", hex_diff(got, want)));
    }
    checksums(got)
}

/// Check one output against what was wanted; `input` is the frame as sent.
pub fn check_out(out: &Out, input: &[u8], want: &Want) -> Result<(), String> {
    let verdict = |v: Verdict| {
        if out.verdict == v {
            Ok(())
        } else {
            Err(format!("verdict {:?}, want {v:?}", out.verdict))
        }
    };
    let no_extra = || {
        if out.extra.is_empty() {
            Ok(())
        } else {
            Err(format!("{} unexpected extra frames", out.extra.len()))
        }
    };
    match want {
        Want::Transmit(nh, ip) => {
            verdict(Verdict::Transmit { next_hop: *nh })?;
            no_extra()?;
            same_frame(&out.frame, &eth(ip))
        }
        Want::Tunnelled(nh, inner, df) => {
            verdict(Verdict::Transmit { next_hop: *nh })?;
            no_extra()?;
            let ident = out
                .frame
                .get(18..20)
                .map(|b| u16::from_be_bytes([b[0], b[1]]))
                .unwrap_or(0);
            same_frame(&out.frame, &eth(&tunnelled(*nh, ident, *df, inner)))
        }
        Want::TransmitTo(nh) => {
            verdict(Verdict::Transmit { next_hop: *nh })?;
            checksums(&out.frame)
        }
        Want::Reply(nh, ip) => {
            verdict(Verdict::Reply { next_hop: *nh })?;
            no_extra()?;
            same_frame(&out.frame, &adopt_ident(&out.frame, &eth(ip))?)
        }
        Want::Local => {
            verdict(Verdict::Local)?;
            no_extra()?;
            if out.frame != input {
                return Err(format!(
                    "a Local frame must be untouched: {}",
                    hex_diff(&out.frame, input)
                ));
            }
            Ok(())
        }
        Want::Drop(r) => {
            verdict(Verdict::Drop(*r))?;
            no_extra()
        }
        Want::Held => {
            verdict(Verdict::Held)?;
            no_extra()
        }
        Want::Fragments {
            next_hop,
            mtu,
            tunnel,
            datagram,
        } => {
            if matches!(out.verdict, Verdict::Reply { .. }) {
                return Err(format!("verdict {:?}, want fragments", out.verdict));
            }
            let got = reassemble(out, *next_hop, *mtu, *tunnel)?;
            if &got != datagram {
                return Err(format!(
                    "reassembled datagram differs: {}",
                    hex_diff(&got, datagram)
                ));
            }
            Ok(())
        }
    }
}

/// Every frame of `out` (the main one when it is a transmit, then `extra`) checked and fed to an
/// independent reassembler; returns the datagram they make.
pub fn reassemble(
    out: &Out,
    next_hop: IpAddr,
    mtu: usize,
    tunnel: bool,
) -> Result<Vec<u8>, String> {
    let mut frames: Vec<&[u8]> = Vec::new();
    if let Verdict::Transmit { next_hop: nh } = out.verdict {
        if nh != next_hop {
            return Err(format!("transmit towards {nh}, want {next_hop}"));
        }
        frames.push(&out.frame);
    }
    for t in &out.extra {
        if t.next_hop != next_hop || t.generated {
            return Err(format!(
                "extra frame towards {} (generated {}), want {next_hop}",
                t.next_hop, t.generated
            ));
        }
        frames.push(t.frame.data());
    }
    if frames.len() < 2 {
        return Err(format!(
            "verdict {:?} with {} extra frames: not fragmented",
            out.verdict,
            out.extra.len()
        ));
    }
    let mut r = Reassembler::new(FragLimits::default());
    let mut whole = None;
    for (i, f) in frames.iter().enumerate() {
        checksums(f).map_err(|e| format!("fragment {i}: {e}"))?;
        let ip = &f[14..];
        if ip.len() > mtu {
            return Err(format!("fragment {i}: {} bytes > MTU {mtu}", ip.len()));
        }
        let inner = if tunnel {
            let hl = if ip[0] >> 4 == 4 { 20 } else { 40 };
            let nh = if ip[0] >> 4 == 4 { ip[9] } else { ip[6] };
            if nh != 4 && nh != 41 {
                return Err(format!("fragment {i}: not encapsulated (protocol {nh})"));
            }
            &ip[hl..]
        } else {
            ip
        };
        let p = rvs_wire::parse::parse_ip(inner).map_err(|e| format!("fragment {i}: {e}"))?;
        let info = *p.ip().ok_or(format!("fragment {i}: not IP"))?;
        if info.fragment.is_none() {
            return Err(format!("frame {i} is not a fragment"));
        }
        if let Some(d) = r
            .add(inner, &info, 0)
            .map_err(|e| format!("fragment {i}: {e:?}"))?
        {
            whole = Some(d);
        }
    }
    whole.ok_or_else(|| "the fragments do not reassemble".to_string())
}

/// Run one case; `Err` says which step failed and how.
pub fn run_case(case: &Case) -> Result<(), String> {
    let mut dp = dataplane_mtu(&case.rules, &case.sets, case.mtu);
    let mut last = 0;
    for (i, step) in case.steps.iter().enumerate() {
        match step {
            Step::Packet { frame, at, want } => {
                last = *at;
                let out = run(&mut dp, frame, *at);
                check_out(&out, frame, want)
                    .map_err(|e| format!("step {i} (packet at {} ms): {e}", at / 1_000_000))?;
            }
            Step::Apply { rule, at } => {
                last = *at;
                let r = rvs_core::rules::parse_line(rule)
                    .map_err(|e| format!("step {i}: rule {rule:?}: {e}"))?
                    .ok_or(format!("step {i}: empty rule"))?;
                dp.director_mut()
                    .apply(&r, *at)
                    .map_err(|e| format!("step {i}: rule {rule:?}: {e}"))?;
            }
            Step::Check { what, at, f } => {
                let at = if *at == 0 { last } else { *at };
                f(&dp, at).map_err(|e| format!("step {i} ({what}): {e}"))?;
            }
        }
    }
    Ok(())
}

/// Run every case, then fail once listing every failing case.
pub fn run_table(cases: &[Case]) {
    let mut names = std::collections::BTreeSet::new();
    for c in cases {
        assert!(names.insert(c.name.as_str()), "duplicate case {:?}", c.name);
    }
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|c| run_case(c).err().map(|e| format!("[{}] {e}", c.name)))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}
