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
