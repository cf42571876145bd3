//! TUN (IP-in-IP) fixtures: IPv4-in-IPv4 for IPv4 dests (RFC 2003), IPv6-in-IPv6 for IPv6 dests
//! (RFC 2473); outer source the director's address, DSCP/ECN copied out, outer DF from the
//! inner DF when `pmtu_disc` is on; too-big packets answered with the MTU less the overhead.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;
use common::*;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rvs_dataplane::Verdict;

const CPORT: u16 = 40000;
const VPORT: u16 = 80;
/// The port given to the TCP dest in the rules: a tunnel cannot change ports, so it is ignored.
const RPORT_IGNORED: u16 = 8080;
const VPORT_UDP: u16 = 53;

/// TUN services for both families: TCP 80 on the first RIP, UDP 53 on the second.
fn rules() -> String {
    let mut r = String::new();
    let fams: [(IpAddr, IpAddr, IpAddr); 2] = [
        (VIP4.into(), RIP4[0].into(), RIP4[1].into()),
        (VIP6.into(), RIP6[0].into(), RIP6[1].into()),
    ];
    for (vip, rip_tcp, rip_udp) in fams {
        r += &format!("-A -t {} -s rr\n", sa(vip, VPORT));
        r += &format!(
            "-a -t {} -r {} -i -w 1\n",
            sa(vip, VPORT),
            sa(rip_tcp, RPORT_IGNORED)
        );
        r += &format!("-A -u {} -s rr\n", sa(vip, VPORT_UDP));
        r += &format!(
            "-a -u {} -r {} -i -w 1\n",
            sa(vip, VPORT_UDP),
            sa(rip_udp, VPORT_UDP)
        );
    }
    r
}

fn tun() -> rvs_dataplane::Dataplane {
    dataplane(&rules(), &[])
}

/// Bytes the outer header adds: IPv4 (RFC 2003) and IPv6 without options (RFC 2473).
const IPIP: usize = 20;
const IP6IP6: usize = 40;

/// The expected IPv4-in-IPv4 packet, built with etherparse: outer header from DIR4 to `rip`,
/// protocol 4, TTL = the (already decremented) inner TTL, DSCP/ECN copied from the inner TOS,
/// identification `ident`, DF as given; then the inner packet.
fn ipip(inner: &[u8], rip: Ipv4Addr, ident: u16, df: bool) -> Vec<u8> {
    let mut h = etherparse::Ipv4Header::new(
        inner.len() as u16,
        inner[8],
        etherparse::IpNumber::IPV4,
        DIR4.octets(),
        rip.octets(),
    )
    .unwrap();
    h.dscp = etherparse::IpDscp::try_new(inner[1] >> 2).unwrap();
    h.ecn = etherparse::IpEcn::try_new(inner[1] & 3).unwrap();
    h.identification = ident;
    h.dont_fragment = df;
    h.header_checksum = h.calc_header_checksum();
    let mut v = h.to_bytes().to_vec();
    v.extend_from_slice(inner);
    v
}

/// The expected IPv6-in-IPv6 packet: outer header from DIR6 to `rip`, next header 41, hop limit
/// = the (already decremented) inner hop limit, traffic class and flow label copied from the inner
/// header (RFC 2473 §6.5, RFC 6040, RFC 6438); then the inner packet.
fn ip6ip6(inner: &[u8], rip: Ipv6Addr) -> Vec<u8> {
    let w = u32::from_be_bytes([inner[0], inner[1], inner[2], inner[3]]);
    let h = etherparse::Ipv6Header {
        traffic_class: (w >> 20) as u8,
        flow_label: etherparse::Ipv6FlowLabel::try_new(w & 0xf_ffff).unwrap(),
        payload_length: inner.len() as u16,
        next_header: etherparse::IpNumber::IPV6,
        hop_limit: inner[7],
        source: DIR6.octets(),
        destination: rip.octets(),
    };
    let mut v = h.to_bytes().to_vec();
    v.extend_from_slice(inner);
    v
}

/// The outer IPv4 identification of an IPv4-in-IPv4 frame.
fn outer_ident(frame: &[u8]) -> u16 {
    assert!(frame.len() >= 14 + 20, "frame holds an outer IPv4 header");
    u16::from_be_bytes([frame[18], frame[19]])
}

/// Check an IPv4-in-IPv4 transmit: the outer identification is read from the output (the
/// dataplane's counter), must be non-zero and not one already used, and the whole frame must
/// equal the expected one built with it. Returns the identification.
fn check_ipip(
    name: &str,
    out: &Out,
    rip: Ipv4Addr,
    inner_after: &[u8],
    df: bool,
    used: &mut Vec<u16>,
) -> u16 {
    assert_eq!(
        out.verdict,
        Verdict::Transmit {
            next_hop: rip.into()
        },
        "{name}: verdict"
    );
    assert!(out.extra.is_empty(), "{name}: nothing else transmitted");
    let ident = outer_ident(&out.frame);
    assert_ne!(ident, 0, "{name}: outer identification set");
    assert!(
        !used.contains(&ident),
        "{name}: outer identification {ident} not reused"
    );
    used.push(ident);
    let want = eth(&ipip(inner_after, rip, ident, df));
    assert_bytes(&format!("{name}: output frame"), &out.frame, &want);
    assert_transmit(name, out, rip.into(), &want);
    ident
}

#[test]
fn tcp_flow_v4_ipip_fresh_ident_per_packet() {
    let mut dp = tun();
    let c = sa(CIP4, CPORT);
    let vip = sa(VIP4, VPORT);
    let mut used = Vec::new();
    let steps: [(&str, &str, u32, u32, &[u8]); 4] = [
        ("SYN", "S", 1000, 0, b""),
        ("ACK", "A", 1001, 5001, b""),
        ("data", "PA", 1001, 5001, b"GET / HTTP/1.0\r\n\r\n"),
        ("FIN", "FA", 1019, 5001, b""),
    ];
    for (i, (what, flags, seq, ack, payload)) in steps.into_iter().enumerate() {
        let name = format!("TUN: {what} v4 encapsulated IPv4-in-IPv4 to RIP");
        let out = run(
            &mut dp,
            &eth(&tcp(c, vip, flags, seq, ack, payload)),
            SEC + i as u64,
        );
        let inner = tcp_ttl(c, vip, flags, seq, ack, payload, 63);
        check_ipip(&name, &out, RIP4[0], &inner, true, &mut used);
        assert_eq!(
            out.dest,
            Some(sa(RIP4[0], VPORT)),
            "{name}: dest is RIP:vport (rport ignored)"
        );
    }
}

#[test]
fn tcp_flow_v6_ip6ip6() {
    let mut dp = tun();
    let c = sa(CIP6, CPORT);
    let vip = sa(VIP6, VPORT);
    let steps: [(&str, &str, u32, u32, &[u8]); 3] = [
        ("SYN", "S", 1000, 0, b""),
        ("ACK", "A", 1001, 5001, b""),
        ("data", "PA", 1001, 5001, b"GET / HTTP/1.0\r\n\r\n"),
    ];
    let cases: Vec<Case> = steps
        .into_iter()
        .map(|(what, flags, seq, ack, payload)| {
            case(
                format!("TUN: {what} v6 encapsulated IPv6-in-IPv6 to RIP"),
                eth(&tcp(c, vip, flags, seq, ack, payload)),
                Want::Transmit(
                    RIP6[0].into(),
                    eth(&ip6ip6(
                        &tcp_ttl(c, vip, flags, seq, ack, payload, 63),
                        RIP6[0],
                    )),
                ),
            )
        })
        .collect();
    run_flow(&mut dp, &cases);
}

/// DSCP/ECN 0xb9 (DSCP 46 EF, ECN CE), identification 0x1234, Router Alert option (RFC 2113).
fn marked4(p: &[u8]) -> Vec<u8> {
    with_ipv4_header(p, |h| {
        h.dscp = etherparse::IpDscp::try_new(0xb9 >> 2).unwrap();
        h.ecn = etherparse::IpEcn::try_new(0xb9 & 3).unwrap();
        h.identification = 0x1234;
        h.options = [0x94, 0x04, 0x00, 0x00].into();
    })
}

/// Traffic class 0xb9 and flow label 0x12345.
fn marked6(p: &[u8]) -> Vec<u8> {
    let mut p = p.to_vec();
    let w = (6u32 << 28) | (0xb9 << 20) | 0x12345;
    p[..4].copy_from_slice(&w.to_be_bytes());
    p
}

/// IPv4 rows whose outer identification comes from the dataplane: (name, settings, input IP
/// packet, expected inner packet, expected outer DF).
#[test]
fn v4_single_packets() {
    let c = sa(CIP4, CPORT);
    let vip = sa(VIP4, VPORT);
    let uc = sa(CIP4, CPORT + 1);
    let uvip = sa(VIP4, VPORT_UDP);
    let syn = |ttl| tcp_ttl(c, vip, "S", 1000, 0, b"", ttl);
    let query = |ttl| udp_ttl(uc, uvip, b"query", ttl);
    type Row = (
        &'static str,
        &'static [(&'static str, &'static str)],
        Vec<u8>,
        Vec<u8>,
        Ipv4Addr,
        bool,
    );
    let rows: Vec<Row> = vec![
        (
            "TUN: SYN v4 (DF) encapsulated IPv4-in-IPv4, outer DF set",
            &[],
            syn(64),
            syn(63),
            RIP4[0],
            true,
        ),
        (
            "TUN: SYN v4 (DF) with pmtu_disc=0 encapsulated, outer DF clear",
            &[("pmtu_disc", "0")],
            syn(64),
            syn(63),
            RIP4[0],
            false,
        ),
        (
            "TUN: SYN v4 with DSCP/ECN 0xb9, IP ID and options: DSCP/ECN copied to the outer header, inner kept",
            &[],
            marked4(&syn(64)),
            marked4(&syn(63)),
            RIP4[0],
            true,
        ),
        (
            "TUN: UDP v4 (DF) encapsulated IPv4-in-IPv4, outer DF set",
            &[],
            query(64),
            query(63),
            RIP4[1],
            true,
        ),
        (
            "TUN: UDP v4 without DF encapsulated, outer DF clear",
            &[],
            no_df(&query(64), 0x4242),
            no_df(&query(63), 0x4242),
            RIP4[1],
            false,
        ),
        (
            "TUN: SYN v4 with TTL 2 encapsulated, inner and outer TTL 1",
            &[],
            syn(2),
            syn(1),
            RIP4[0],
            true,
        ),
    ];
    for (name, sets, input, inner, rip, df) in rows {
        let mut dp = dataplane(&rules(), sets);
        let out = run(&mut dp, &eth(&input), SEC);
        check_ipip(name, &out, rip, &inner, df, &mut Vec::new());
    }
}

#[test]
fn v6_and_local_single_packets() {
    let c4 = sa(CIP4, CPORT);
    let c6 = sa(CIP6, CPORT);
    let v6 = sa(VIP6, VPORT);
    let syn4_ttl1 = tcp_ttl(c4, sa(VIP4, VPORT), "S", 1000, 0, b"", 1);
    let syn6 = |ttl| tcp_ttl(c6, v6, "S", 1000, 0, b"", ttl);
    let query6 = |ttl| udp_ttl(sa(CIP6, CPORT + 1), sa(VIP6, VPORT_UDP), b"query", ttl);
    let cases = vec![
        case(
            "TUN: SYN v6 encapsulated IPv6-in-IPv6 to RIP",
            eth(&syn6(64)),
            Want::Transmit(RIP6[0].into(), eth(&ip6ip6(&syn6(63), RIP6[0]))),
        ),
        case(
            "TUN: SYN v6 with traffic class and flow label: copied to the outer header, inner kept",
            eth(&marked6(&syn6(64))),
            Want::Transmit(RIP6[0].into(), eth(&ip6ip6(&marked6(&syn6(63)), RIP6[0]))),
        ),
        case(
            "TUN: UDP v6 encapsulated IPv6-in-IPv6 to RIP",
            eth(&query6(64)),
            Want::Transmit(RIP6[1].into(), eth(&ip6ip6(&query6(63), RIP6[1]))),
        ),
        case(
            "TUN: SYN v4 with TTL 1 → time exceeded from DIR4 quoting it, not forwarded",
            eth(&syn4_ttl1),
            Want::Reply(
                CIP4.into(),
                eth(&icmpv4_error(DIR4, CIP4, ttl_exceeded4(), &syn4_ttl1)),
            ),
        ),
        case(
            "TUN: SYN v6 with hop limit 1 → ICMPv6 time exceeded from DIR6 quoting it, not forwarded",
            eth(&syn6(1)),
            Want::Reply(
                CIP6.into(),
                eth(&icmpv6_error(DIR6, CIP6, hop_limit_exceeded6(), &syn6(1))),
            ),
        ),
        case(
            "TUN: SYN v4 to a VIP port with no service → Local",
            eth(&tcp(c4, sa(VIP4, 81), "S", 1000, 0, b"")),
            Want::Local,
        ),
        case(
            "TUN: SYN v6 to a VIP port with no service → Local",
            eth(&tcp(c6, sa(VIP6, 81), "S", 1000, 0, b"")),
            Want::Local,
        ),
    ];
    run_each(tun, &cases);
}

/// A UDP datagram of exactly `size` bytes of IP packet.
fn udp_sized(
    src: std::net::SocketAddr,
    dst: std::net::SocketAddr,
    size: usize,
    ttl: u8,
) -> Vec<u8> {
    let hdr = if src.is_ipv4() { 28 } else { 48 };
    let payload: Vec<u8> = (0..size - hdr).map(|i| (i * 7) as u8).collect();
    let p = udp_ttl(src, dst, &payload, ttl);
    assert_eq!(p.len(), size);
    p
}

#[test]
fn df_v4_after_overhead_fits_or_draws_frag_needed() {
    let mut dp = tun();
    let c = sa(CIP4, CPORT + 2);
    let vip = sa(VIP4, VPORT_UDP);
    let fits = 1500 - IPIP;
    let name = "TUN: DF UDP v4 of MTU − 20 encapsulated to exactly the MTU";
    let out = run(&mut dp, &eth(&udp_sized(c, vip, fits, 64)), SEC);
    check_ipip(
        name,
        &out,
        RIP4[1],
        &udp_sized(c, vip, fits, 63),
        true,
        &mut Vec::new(),
    );
    assert_eq!(
        out.frame.len(),
        14 + 1500,
        "{name}: outer packet is the MTU"
    );

    let big = udp_sized(c, vip, 1490, 64);
    let c = case(
        "TUN: DF UDP v4 too big after the +20 overhead → frag-needed from the VIP advertising MTU − 20",
        eth(&big),
        Want::Reply(
            CIP4.into(),
            eth(&icmpv4_error(VIP4, CIP4, frag_needed4(1480), &big)),
        ),
    );
    run_flow(&mut dp, &[c]);
}

#[test]
fn v6_after_overhead_fits_or_draws_packet_too_big() {
    let c = sa(CIP6, CPORT + 2);
    let vip = sa(VIP6, VPORT_UDP);
    let fits = 1500 - IP6IP6;
    let big = udp_sized(c, vip, 1470, 64);
    let cases = vec![
        case(
            "TUN: UDP v6 of MTU − 40 encapsulated to exactly the MTU",
            eth(&udp_sized(c, vip, fits, 64)),
            Want::Transmit(
                RIP6[1].into(),
                eth(&ip6ip6(&udp_sized(c, vip, fits, 63), RIP6[1])),
            ),
        ),
        case(
            "TUN: UDP v6 too big after the +40 overhead → packet-too-big from the VIP advertising MTU − 40",
            eth(&big),
            Want::Reply(
                CIP6.into(),
                eth(&icmpv6_error(VIP6, CIP6, packet_too_big6(1460), &big)),
            ),
        ),
    ];
    run_flow(&mut tun(), &cases);
}

#[test]
fn non_df_v4_too_big_fragmented_then_each_encapsulated() {
    let name =
        "TUN: non-DF UDP v4 too big after the overhead → inner fragmented, each encapsulated";
    let mut dp = tun();
    let c = sa(CIP4, CPORT + 3);
    let vip = sa(VIP4, VPORT_UDP);
    let input = eth(&no_df(&udp_sized(c, vip, 1490, 64), 0x4242));
    let out = run(&mut dp, &input, SEC);
    assert_eq!(out.verdict, Verdict::Held, "{name}: verdict");
    assert_eq!(out.dest, Some(sa(RIP4[1], VPORT_UDP)), "{name}: dest");
    let inner = no_df(&udp_sized(c, vip, 1490, 63), 0x4242);
    let pieces = fragment_v4(&inner, 1500 - IPIP);
    assert_eq!(pieces.len(), 2, "{name}: fixture makes two fragments");
    assert_eq!(out.extra.len(), pieces.len(), "{name}: fragments");
    let mut used = Vec::new();
    for (i, (tx, piece)) in out.extra.iter().zip(&pieces).enumerate() {
        let got = tx.frame.data();
        assert_eq!(
            tx.next_hop,
            IpAddr::from(RIP4[1]),
            "{name}: fragment {i} next hop"
        );
        assert!(
            !tx.generated,
            "{name}: fragment {i} forwarded, not generated"
        );
        assert!(got.len() - 14 <= 1500, "{name}: fragment {i} fits the MTU");
        let ident = outer_ident(got);
        assert_ne!(ident, 0, "{name}: fragment {i} outer identification set");
        assert!(
            !used.contains(&ident),
            "{name}: fragment {i} outer identification not reused"
        );
        used.push(ident);
        assert_bytes(
            &format!("{name}: fragment {i}"),
            got,
            &eth(&ipip(piece, RIP4[1], ident, false)),
        );
        verify_checksums(got);
    }
    let inner_pieces: Vec<&[u8]> = out
        .extra
        .iter()
        .map(|t| &t.frame.data()[14 + IPIP..])
        .collect();
    assert_bytes(
        &format!("{name}: inner fragments reassemble"),
        &reassemble_v4(&inner_pieces),
        &inner,
    );
}
