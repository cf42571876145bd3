//! Shared fixture harness for the dataplane feature tables: addresses, packet builders
//! (etherparse's, independent of the code under test), a runner, and an independent checksum
//! verifier.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs
)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
use rvs_core::director::Director;
use rvs_core::rules::parse_rules;
use rvs_core::settings::Settings;
use rvs_dataplane::{Dataplane, DataplaneConfig, Frame, Tx, Verdict};

/// One second in the dataplane's clock units.
pub const SEC: u64 = 1_000_000_000;

pub const DIR_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const GW_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xfe];

pub const VIP4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
pub const CIP4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub const DIR4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
pub const RIP4: [Ipv4Addr; 3] = [
    Ipv4Addr::new(198, 51, 100, 11),
    Ipv4Addr::new(198, 51, 100, 12),
    Ipv4Addr::new(198, 51, 100, 13),
];
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x10, 0, 0, 0, 0, 0x10);
pub const CIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
pub const DIR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 2);
pub const RIP6: [Ipv6Addr; 3] = [
    Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x11),
    Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x12),
    Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 0x13),
];

/// `addr:port` for either family (IPv6 in brackets), as rules and asserts want it.
pub fn sa(ip: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

/// A dataplane with the given ipvsadm-save rules and `--set`-style settings; the director owns
/// DIR4 and DIR6, MTU 1500 unless set with `mtu`.
pub fn dataplane(rules: &str, sets: &[(&str, &str)]) -> Dataplane {
    dataplane_mtu(rules, sets, 1500)
}

/// As [`dataplane`] with an interface MTU.
pub fn dataplane_mtu(rules: &str, sets: &[(&str, &str)], mtu: u16) -> Dataplane {
    let mut settings = Settings::default();
    for (k, v) in sets {
        settings.set(k, v).unwrap();
    }
    let mut d = Director::new(settings);
    for r in parse_rules(rules).unwrap() {
        d.apply(&r, 0).unwrap();
    }
    let cfg = DataplaneConfig {
        addrs: vec![DIR4.into(), DIR6.into()],
        mtu,
        ..DataplaneConfig::default()
    };
    Dataplane::new(d, cfg)
}

/// TCP flags for [`tcp`]: any of "S", "A", "F", "R", "P", e.g. "SA", "FA", "PA".
fn tcp_builder(
    b: etherparse::PacketBuilderStep<etherparse::IpHeaders>,
    src: u16,
    dst: u16,
    flags: &str,
    seq: u32,
    ack: u32,
) -> etherparse::PacketBuilderStep<etherparse::TcpHeader> {
    let mut t = b.tcp(src, dst, seq, 65535);
    if flags.contains('S') {
        t = t.syn();
    }
    if flags.contains('A') {
        t = t.ack(ack);
    }
    if flags.contains('F') {
        t = t.fin();
    }
    if flags.contains('R') {
        t = t.rst();
    }
    if flags.contains('P') {
        t = t.psh();
    }
    t
}

fn ip_step(
    src: IpAddr,
    dst: IpAddr,
    ttl: u8,
) -> etherparse::PacketBuilderStep<etherparse::IpHeaders> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => PacketBuilder::ipv4(s.octets(), d.octets(), ttl),
        (IpAddr::V6(s), IpAddr::V6(d)) => PacketBuilder::ipv6(s.octets(), d.octets(), ttl),
        _ => panic!("mixed families"),
    }
}

/// An IP packet carrying a TCP segment (IPv4: DF set, ident 0, as etherparse builds it).
pub fn tcp(
    src: SocketAddr,
    dst: SocketAddr,
    flags: &str,
    seq: u32,
    ack: u32,
    payload: &[u8],
) -> Vec<u8> {
    tcp_ttl(src, dst, flags, seq, ack, payload, 64)
}

/// [`tcp`] with a TTL / hop limit.
pub fn tcp_ttl(
    src: SocketAddr,
    dst: SocketAddr,
    flags: &str,
    seq: u32,
    ack: u32,
    payload: &[u8],
    ttl: u8,
) -> Vec<u8> {
    let b = tcp_builder(
        ip_step(src.ip(), dst.ip(), ttl),
        src.port(),
        dst.port(),
        flags,
        seq,
        ack,
    );
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    v
}

/// An IP packet carrying a UDP datagram.
pub fn udp(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Vec<u8> {
    udp_ttl(src, dst, payload, 64)
}

/// [`udp`] with a TTL / hop limit.
pub fn udp_ttl(src: SocketAddr, dst: SocketAddr, payload: &[u8], ttl: u8) -> Vec<u8> {
    let b = ip_step(src.ip(), dst.ip(), ttl).udp(src.port(), dst.port());
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    v
}

/// Ethernet II around an IP packet, as received by the director from the gateway.
pub fn eth(ip: &[u8]) -> Vec<u8> {
    let et: u16 = if ip.first().map(|b| b >> 4) == Some(6) {
        0x86dd
    } else {
        0x0800
    };
    let mut f = Vec::with_capacity(14 + ip.len());
    f.extend_from_slice(&DIR_MAC);
    f.extend_from_slice(&GW_MAC);
    f.extend_from_slice(&et.to_be_bytes());
    f.extend_from_slice(ip);
    f
}

/// What one call to `process` produced.
#[derive(Debug)]
pub struct Out {
    pub verdict: Verdict,
    /// The frame after processing (rewritten, or replaced by a reply).
    pub frame: Vec<u8>,
    /// Extra transmissions.
    pub extra: Vec<Tx>,
    /// The dest the packet was forwarded to, if any.
    pub dest: Option<SocketAddr>,
}

/// Run one frame through the dataplane at time `now` (housekeeping first, as `rvsd replay`).
pub fn run(dp: &mut Dataplane, frame: &[u8], now: u64) -> Out {
    dp.housekeeping(now);
    let mut f = Frame::from_bytes(frame);
    let mut extra = Vec::new();
    let verdict = dp.process(&mut f, now, &mut extra);
    let dest = dp.last_dest().map(|(a, p)| SocketAddr::new(a, p));
    Out {
        verdict,
        frame: f.data().to_vec(),
        extra,
        dest,
    }
}

/// Verify, with etherparse (independent of the code under test), that every checksum of an
/// Ethernet frame is right: IPv4 header, TCP, UDP (zero allowed over IPv4), ICMPv4, ICMPv6;
/// recursing into IPv4-in-IPv4 / IPv6-in-IPv6. Panics with the first wrong one.
pub fn verify_checksums(frame: &[u8]) {
    if let Err(e) = checksums(frame) {
        panic!("{e}: {frame:02x?}");
    }
}

/// [`verify_checksums`] as a result: `Err` names the first wrong checksum.
pub fn checksums(frame: &[u8]) -> Result<(), String> {
    let s = SlicedPacket::from_ethernet(frame).map_err(|e| format!("unparsable frame: {e}"))?;
    check_sliced(&s)
}

fn eq(what: &str, got: u16, want: u16) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: {got:#06x}, want {want:#06x}"))
    }
}

fn check_sliced(s: &SlicedPacket<'_>) -> Result<(), String> {
    match &s.net {
        Some(etherparse::NetSlice::Ipv4(v4)) => {
            let h = v4.header().to_header();
            eq(
                "IPv4 header checksum",
                h.header_checksum,
                h.calc_header_checksum(),
            )?;
            let (src, dst) = (v4.header().source(), v4.header().destination());
            if v4.payload().fragmented {
                return Ok(());
            }
            match &s.transport {
                Some(TransportSlice::Tcp(t)) => eq(
                    "TCP checksum",
                    t.checksum(),
                    t.to_header()
                        .calc_checksum_ipv4_raw(src, dst, t.payload())
                        .unwrap(),
                )?,
                Some(TransportSlice::Udp(u)) if u.checksum() != 0 => eq(
                    "UDP checksum",
                    u.checksum(),
                    u.to_header()
                        .calc_checksum_ipv4_raw(src, dst, u.payload())
                        .unwrap(),
                )?,
                Some(TransportSlice::Icmpv4(i)) => {
                    let c = etherparse::checksum::Sum16BitWords::new().add_slice(i.slice());
                    eq("ICMPv4 checksum", c.ones_complement(), 0)?;
                }
                _ => {}
            }
            if v4.payload().ip_number.0 == 4 {
                let inner = SlicedPacket::from_ip(v4.payload().payload)
                    .map_err(|e| format!("inner IPv4: {e}"))?;
                check_sliced(&inner)?;
            }
        }
        Some(etherparse::NetSlice::Ipv6(v6)) => {
            let (src, dst) = (v6.header().source(), v6.header().destination());
            if v6.payload().fragmented {
                return Ok(());
            }
            match &s.transport {
                Some(TransportSlice::Tcp(t)) => eq(
                    "TCP checksum",
                    t.checksum(),
                    t.to_header()
                        .calc_checksum_ipv6_raw(src, dst, t.payload())
                        .unwrap(),
                )?,
                Some(TransportSlice::Udp(u)) => eq(
                    "UDP checksum",
                    u.checksum(),
                    u.to_header()
                        .calc_checksum_ipv6_raw(src, dst, u.payload())
                        .unwrap(),
                )?,
                Some(TransportSlice::Icmpv6(i)) if !i.is_checksum_valid(src, dst) => {
                    return Err("ICMPv6 checksum".into());
                }
                _ => {}
            }
            if v6.payload().ip_number.0 == 41 {
                let inner = SlicedPacket::from_ip(v6.payload().payload)
                    .map_err(|e| format!("inner IPv6: {e}"))?;
                check_sliced(&inner)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Assert a transmit towards `next_hop` whose frame equals `expected` byte for byte, with every
/// checksum verified independently.
pub fn assert_transmit(name: &str, out: &Out, next_hop: IpAddr, expected: &[u8]) {
    assert_eq!(
        out.verdict,
        Verdict::Transmit { next_hop },
        "{name}: verdict"
    );
    assert_eq!(
        out.frame, expected,
        "{name}: output frame\n got {:02x?}\nwant {:02x?}",
        out.frame, expected
    );
    verify_checksums(&out.frame);
}

// ---- forwarding-method fixtures (nat, dr, tunnel) --------------------------------------------

/// TTL / hop limit of packets the director originates (the conventional default, RFC 1700).
pub const REPLY_TTL: u8 = 64;

/// Most bytes of an ICMPv4 error datagram (RFC 1812 §4.3.2.3: as much of the offending datagram
/// as fits in 576 bytes).
pub const ICMPV4_ERROR_MAX: usize = 576;

/// Most bytes of an ICMPv6 error packet (RFC 4443 §2.4 (c): as much as fits in the minimum MTU).
pub const ICMPV6_ERROR_MAX: usize = 1280;

/// An IPv4 packet with its header edited by `edit` (TOS, ident, flags, options...): total length
/// and header checksum recomputed by etherparse, the payload (whose L4 checksum does not cover
/// these fields) kept as is.
pub fn with_ipv4_header(packet: &[u8], edit: impl FnOnce(&mut etherparse::Ipv4Header)) -> Vec<u8> {
    let (mut h, rest) = etherparse::Ipv4Header::from_slice(packet).unwrap();
    let payload = &rest[..usize::from(h.total_len) - h.header_len()];
    edit(&mut h);
    h.total_len = (h.header_len() + payload.len()) as u16;
    h.header_checksum = h.calc_header_checksum();
    let mut v = h.to_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

/// [`with_ipv4_header`] clearing DF and setting the identification.
pub fn no_df(packet: &[u8], ident: u16) -> Vec<u8> {
    with_ipv4_header(packet, |h| {
        h.dont_fragment = false;
        h.identification = ident;
    })
}

/// The ICMPv4 error the director originates from `src` to `dst`: TTL [`REPLY_TTL`], ident 0,
/// DF clear, quoting `offending` cut to fit [`ICMPV4_ERROR_MAX`].
pub fn icmpv4_error(
    src: std::net::Ipv4Addr,
    dst: std::net::Ipv4Addr,
    t: etherparse::Icmpv4Type,
    offending: &[u8],
) -> Vec<u8> {
    let quote = &offending[..offending.len().min(ICMPV4_ERROR_MAX - 20 - 8)];
    let mut v = Vec::new();
    PacketBuilder::ipv4(src.octets(), dst.octets(), REPLY_TTL)
        .icmpv4(t)
        .write(&mut v, quote)
        .unwrap();
    with_ipv4_header(&v, |h| h.dont_fragment = false)
}

/// The ICMPv6 error the director originates from `src` to `dst`: hop limit [`REPLY_TTL`],
/// quoting `offending` cut to fit [`ICMPV6_ERROR_MAX`].
pub fn icmpv6_error(
    src: std::net::Ipv6Addr,
    dst: std::net::Ipv6Addr,
    t: etherparse::Icmpv6Type,
    offending: &[u8],
) -> Vec<u8> {
    let quote = &offending[..offending.len().min(ICMPV6_ERROR_MAX - 40 - 8)];
    let mut v = Vec::new();
    PacketBuilder::ipv6(src.octets(), dst.octets(), REPLY_TTL)
        .icmpv6(t)
        .write(&mut v, quote)
        .unwrap();
    v
}

/// ICMPv4 time exceeded, TTL exceeded in transit (type 11 code 0).
pub fn ttl_exceeded4() -> etherparse::Icmpv4Type {
    etherparse::Icmpv4Type::TimeExceeded(etherparse::icmpv4::TimeExceededCode::TtlExceededInTransit)
}

/// ICMPv6 time exceeded, hop limit exceeded in transit (type 3 code 0).
pub fn hop_limit_exceeded6() -> etherparse::Icmpv6Type {
    etherparse::Icmpv6Type::TimeExceeded(etherparse::icmpv6::TimeExceededCode::HopLimitExceeded)
}

/// ICMPv4 fragmentation needed and DF set (type 3 code 4) advertising `mtu` (RFC 1191).
pub fn frag_needed4(mtu: u16) -> etherparse::Icmpv4Type {
    etherparse::Icmpv4Type::DestinationUnreachable(
        etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: mtu },
    )
}

/// ICMPv6 packet too big (type 2) advertising `mtu` (RFC 8201).
pub fn packet_too_big6(mtu: u32) -> etherparse::Icmpv6Type {
    etherparse::Icmpv6Type::PacketTooBig { mtu }
}

/// Assert a generated reply towards `next_hop` whose frame equals `expected` byte for byte,
/// checksums verified independently, nothing else transmitted.
pub fn assert_reply(name: &str, out: &Out, next_hop: IpAddr, expected: &[u8]) {
    assert_eq!(out.verdict, Verdict::Reply { next_hop }, "{name}: verdict");
    let expected = adopt_icmpv4_ident(name, &out.frame, expected);
    assert_bytes(&format!("{name}: reply frame"), &out.frame, &expected);
    assert!(out.extra.is_empty(), "{name}: nothing else transmitted");
    verify_checksums(&out.frame);
}

/// Fragment an IPv4 datagram without options (DF clear) into packets of at most `mtu` bytes
/// the RFC 791 way: every fragment but the last carries the largest multiple of 8 bytes of data
/// that fits; identification, TOS and TTL copied; MF and offset set; checksums by etherparse.
pub fn fragment_v4(datagram: &[u8], mtu: usize) -> Vec<Vec<u8>> {
    let (h, rest) = etherparse::Ipv4Header::from_slice(datagram).unwrap();
    assert!(
        h.options.is_empty() && !h.dont_fragment,
        "fragment_v4: plain non-DF datagrams only"
    );
    let data = &rest[..usize::from(h.total_len) - h.header_len()];
    let room = (mtu - h.header_len()) / 8 * 8;
    data.chunks(room)
        .enumerate()
        .map(|(i, chunk)| {
            let mut f = h.clone();
            f.more_fragments = (i + 1) * room < data.len();
            f.fragment_offset = etherparse::IpFragOffset::try_new((i * room / 8) as u16).unwrap();
            f.total_len = (f.header_len() + chunk.len()) as u16;
            f.header_checksum = f.calc_header_checksum();
            let mut v = f.to_bytes().to_vec();
            v.extend_from_slice(chunk);
            v
        })
        .collect()
}

/// Reassemble IPv4 fragments (in any order, no options) into the datagram they carry: the
/// first fragment's header with MF and offset cleared, total length and checksum recomputed.
pub fn reassemble_v4(fragments: &[&[u8]]) -> Vec<u8> {
    let mut parts: Vec<(usize, bool, etherparse::Ipv4Header, Vec<u8>)> = fragments
        .iter()
        .map(|f| {
            let (h, rest) = etherparse::Ipv4Header::from_slice(f).unwrap();
            let data = rest[..usize::from(h.total_len) - h.header_len()].to_vec();
            (
                usize::from(h.fragment_offset.value()) * 8,
                h.more_fragments,
                h,
                data,
            )
        })
        .collect();
    parts.sort_by_key(|p| p.0);
    let mut data = Vec::new();
    for (off, _, _, d) in &parts {
        assert_eq!(*off, data.len(), "reassemble_v4: fragments contiguous");
        data.extend_from_slice(d);
    }
    assert!(
        !parts.last().unwrap().1,
        "reassemble_v4: last fragment has MF clear"
    );
    let mut h = parts[0].2.clone();
    h.more_fragments = false;
    h.fragment_offset = etherparse::IpFragOffset::ZERO;
    h.total_len = (h.header_len() + data.len()) as u16;
    h.header_checksum = h.calc_header_checksum();
    let mut v = h.to_bytes().to_vec();
    v.extend_from_slice(&data);
    v
}

/// What a fixture case expects of `process`.
#[derive(Debug, Clone)]
pub enum Want {
    /// `Transmit { next_hop }` with exactly this frame, nothing extra.
    Transmit(IpAddr, Vec<u8>),
    /// `Reply { next_hop }` with exactly this generated frame, nothing extra.
    Reply(IpAddr, Vec<u8>),
    /// `Local` with the frame untouched, nothing extra.
    Local,
    /// `Drop(reason)`, nothing extra.
    Drop(rvs_dataplane::DropReason),
}

/// One row of a fixture table: a name in the vocabulary, an input frame, what it gives.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub input: Vec<u8>,
    pub want: Want,
}

/// A [`Case`].
pub fn case(name: impl Into<String>, input: Vec<u8>, want: Want) -> Case {
    Case {
        name: name.into(),
        input,
        want,
    }
}

/// Check one output against its case.
pub fn check(c: &Case, out: &Out) {
    let name = c.name.as_str();
    match &c.want {
        Want::Transmit(hop, frame) => {
            assert_eq!(
                out.verdict,
                Verdict::Transmit { next_hop: *hop },
                "{name}: verdict"
            );
            assert_bytes(&format!("{name}: output frame"), &out.frame, frame);
            assert_transmit(name, out, *hop, frame);
            assert!(out.extra.is_empty(), "{name}: nothing else transmitted");
        }
        Want::Reply(hop, frame) => assert_reply(name, out, *hop, frame),
        Want::Local => {
            assert_eq!(out.verdict, Verdict::Local, "{name}: verdict");
            assert_eq!(out.frame, c.input, "{name}: frame untouched");
            assert!(out.extra.is_empty(), "{name}: nothing transmitted");
        }
        Want::Drop(r) => {
            assert_eq!(out.verdict, Verdict::Drop(*r), "{name}: verdict");
            assert!(out.extra.is_empty(), "{name}: nothing transmitted");
        }
    }
}

/// Run the cases in order through one dataplane (a flow: later rows see earlier rows'
/// connections), one millisecond apart.
pub fn run_flow(dp: &mut Dataplane, cases: &[Case]) {
    for (i, c) in cases.iter().enumerate() {
        let out = run(dp, &c.input, SEC + i as u64 * SEC / 1000);
        check(c, &out);
    }
}

/// Run each case through a fresh dataplane made by `make` (independent rows).
pub fn run_each(make: impl Fn() -> Dataplane, cases: &[Case]) {
    for c in cases {
        let mut dp = make();
        let out = run(&mut dp, &c.input, SEC);
        check(c, &out);
    }
}

/// Assert two byte strings are equal, reporting the first difference with a little context
/// (whole-frame dumps of 1500-byte packets are unreadable).
pub fn assert_bytes(what: &str, got: &[u8], want: &[u8]) {
    if got == want {
        return;
    }
    let i = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    let lo = i.saturating_sub(8);
    panic!(
        "{what}: differs at byte {i} (lengths got {}, want {})\n got [{lo}..]: {:02x?}\nwant [{lo}..]: {:02x?}",
        got.len(),
        want.len(),
        &got[lo..got.len().min(i + 16)],
        &want[lo..want.len().min(i + 16)],
    );
}

/// Generated ICMPv4 errors leave with DF clear and a fresh IP ID from the director's counter
/// (RFC 6864 §4.2). The expected frame takes the ID the output carries, after checking it is
/// not zero, and its header checksum is recomputed by etherparse.
pub fn adopt_icmpv4_ident(name: &str, got: &[u8], want: &[u8]) -> Vec<u8> {
    let mut want = want.to_vec();
    let is_v4_icmp = |f: &[u8]| f.len() > 34 && f[12..14] == [0x08, 0x00] && f[23] == 1;
    if is_v4_icmp(got) && is_v4_icmp(&want) && want[20] & 0x40 == 0 {
        let ident = u16::from_be_bytes([got[18], got[19]]);
        assert_ne!(ident, 0, "{name}: generated ICMPv4 error without an IP ID");
        want[18..20].copy_from_slice(&ident.to_be_bytes());
        let (h, _) = etherparse::Ipv4Header::from_slice(&want[14..]).unwrap();
        want[24..26].copy_from_slice(&h.calc_header_checksum().to_be_bytes());
    }
    want
}

// ---- address families for the feature tables (sched, expiry, persistence) ------------------

/// One address family's cast.
#[derive(Debug, Clone, Copy)]
pub struct Fam {
    pub name: &'static str,
    pub vip: IpAddr,
    pub cip: IpAddr,
    pub rip: [IpAddr; 3],
}

pub const V4: Fam = Fam {
    name: "v4",
    vip: IpAddr::V4(VIP4),
    cip: IpAddr::V4(CIP4),
    rip: [
        IpAddr::V4(RIP4[0]),
        IpAddr::V4(RIP4[1]),
        IpAddr::V4(RIP4[2]),
    ],
};

pub const V6: Fam = Fam {
    name: "v6",
    vip: IpAddr::V6(VIP6),
    cip: IpAddr::V6(CIP6),
    rip: [
        IpAddr::V6(RIP6[0]),
        IpAddr::V6(RIP6[1]),
        IpAddr::V6(RIP6[2]),
    ],
};

pub const FAMS: [Fam; 2] = [V4, V6];
