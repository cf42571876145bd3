//! NAT (masquerading) fixtures: client → VIP rewritten to RIP:rport, replies rewritten back.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;
use common::*;

use std::net::{IpAddr, SocketAddr};

use rvs_dataplane::{DropReason, Verdict};

#[test]
fn syn_v4_rewritten_to_dest_and_reply_back_to_vip() {
    let rules = format!(
        "-A -t {} -s rr\n-a -t {} -r {} -m -w 1\n",
        sa(VIP4, 80),
        sa(VIP4, 80),
        sa(RIP4[0], 8080)
    );
    let mut dp = dataplane(&rules, &[]);
    let syn = eth(&tcp(sa(CIP4, 40000), sa(VIP4, 80), "S", 1000, 0, b""));
    let out = run(&mut dp, &syn, SEC);
    let want = eth(&tcp_ttl(
        sa(CIP4, 40000),
        sa(RIP4[0], 8080),
        "S",
        1000,
        0,
        b"",
        63,
    ));
    assert_transmit("syn v4", &out, RIP4[0].into(), &want);
    assert_eq!(out.dest, Some(sa(RIP4[0], 8080)));
    let synack = eth(&tcp(
        sa(RIP4[0], 8080),
        sa(CIP4, 40000),
        "SA",
        5000,
        1001,
        b"",
    ));
    let out = run(&mut dp, &synack, SEC + 1);
    let want = eth(&tcp_ttl(
        sa(VIP4, 80),
        sa(CIP4, 40000),
        "SA",
        5000,
        1001,
        b"",
        63,
    ));
    assert_transmit("syn-ack v4", &out, CIP4.into(), &want);
}

// The address-family cast is the shared harness's `Fam`: `rip[0]` serves TCP, `rip[1]` UDP.

const CPORT: u16 = 40000;
/// TCP: vport 80 → rport 8080; vport 443 → rport 443. UDP: vport 53 → rport 5353.
const VPORT: u16 = 80;
const RPORT: u16 = 8080;
const VPORT_UDP: u16 = 53;
const RPORT_UDP: u16 = 5353;

const REQUEST: &[u8] = b"GET / HTTP/1.0\r\n\r\n";
const RESPONSE: &[u8] = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok";

/// NAT services for both families: TCP 80 → 8080 and 443 → 443 on the first RIP, UDP 53 → 5353
/// on the second.
fn rules() -> String {
    let mut r = String::new();
    for f in [V4, V6] {
        for (vport, rport) in [(VPORT, RPORT), (443, 443)] {
            r += &format!("-A -t {} -s rr\n", sa(f.vip, vport));
            r += &format!(
                "-a -t {} -r {} -m -w 1\n",
                sa(f.vip, vport),
                sa(f.rip[0], rport)
            );
        }
        r += &format!("-A -u {} -s rr\n", sa(f.vip, VPORT_UDP));
        r += &format!(
            "-a -u {} -r {} -m -w 1\n",
            sa(f.vip, VPORT_UDP),
            sa(f.rip[1], RPORT_UDP)
        );
    }
    r
}

fn nat() -> rvs_dataplane::Dataplane {
    dataplane(&rules(), &[])
}

/// The IP packet of a frame built with `eth`.
fn ip_of(frame: &[u8]) -> &[u8] {
    &frame[14..]
}

/// Who sends a packet of a flow.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Client,
    Dest,
}

/// One packet of a TCP flow: (what, sender, flags, seq, ack, payload).
type Step<'a> = (&'a str, Side, &'a str, u32, u32, &'a [u8]);

/// A TCP connection's life through the director: handshake, data, close, both directions.
fn tcp_flow(f: Fam) -> Vec<Case> {
    let v = f.name;
    let c = sa(f.cip, CPORT);
    let vip = sa(f.vip, VPORT);
    let rip = sa(f.rip[0], RPORT);
    let (cseq, sseq) = (1000u32, 5000u32);
    let creq = cseq + 1 + REQUEST.len() as u32;
    let sresp = sseq + 1 + RESPONSE.len() as u32;
    use Side::{Client, Dest};
    let steps: [Step<'_>; 8] = [
        ("SYN", Client, "S", cseq, 0, b""),
        ("SYN-ACK", Dest, "SA", sseq, cseq + 1, b""),
        ("ACK", Client, "A", cseq + 1, sseq + 1, b""),
        ("data", Client, "PA", cseq + 1, sseq + 1, REQUEST),
        ("data", Dest, "PA", sseq + 1, creq, RESPONSE),
        ("FIN", Client, "FA", creq, sresp, b""),
        ("FIN", Dest, "FA", sresp, creq + 1, b""),
        ("last ACK", Client, "A", creq + 1, sresp + 1, b""),
    ];
    steps
        .iter()
        .map(|&(what, side, flags, seq, ack, payload)| {
            if side == Client {
                case(
                    format!("NAT: {what} {v} rewritten to RIP:rport"),
                    eth(&tcp(c, vip, flags, seq, ack, payload)),
                    Want::Transmit(
                        f.rip[0],
                        eth(&tcp_ttl(c, rip, flags, seq, ack, payload, 63)),
                    ),
                )
            } else {
                case(
                    format!("NAT: {what} {v} from RIP:rport rewritten to VIP:vport"),
                    eth(&tcp(rip, c, flags, seq, ack, payload)),
                    Want::Transmit(f.cip, eth(&tcp_ttl(vip, c, flags, seq, ack, payload, 63))),
                )
            }
        })
        .collect()
}

#[test]
fn tcp_handshake_data_and_close_v4() {
    run_flow(&mut nat(), &tcp_flow(V4));
}

#[test]
fn tcp_handshake_data_and_close_v6() {
    run_flow(&mut nat(), &tcp_flow(V6));
}

#[test]
fn syn_goes_to_the_dest_port_not_the_virtual_port() {
    let mut dp = nat();
    let out = run(
        &mut dp,
        &eth(&tcp(sa(CIP4, CPORT), sa(VIP4, VPORT), "S", 1, 0, b"")),
        SEC,
    );
    assert_eq!(out.dest, Some(sa(RIP4[0], RPORT)), "dest is RIP:rport");
    let out = run(
        &mut dp,
        &eth(&tcp(sa(CIP6, CPORT), sa(VIP6, VPORT), "S", 1, 0, b"")),
        SEC,
    );
    assert_eq!(out.dest, Some(sa(RIP6[0], RPORT)), "dest is [RIP]:rport");
}

/// Zero the UDP checksum of an IPv4 packet (a sender that computed none, RFC 768).
fn zero_udp_checksum(packet: &[u8]) -> Vec<u8> {
    let mut p = packet.to_vec();
    let ihl = usize::from(p[0] & 0x0f) * 4;
    p[ihl + 6] = 0;
    p[ihl + 7] = 0;
    p
}

/// A UDP exchange: request rewritten to RIP:rport, answer rewritten to VIP:vport;
/// `zero` sends both with a zero checksum (IPv4 only), which must stay zero.
fn udp_flow(f: Fam, zero: bool) -> Vec<Case> {
    let v = f.name;
    let c = sa(f.cip, CPORT + 1);
    let vip = sa(f.vip, VPORT_UDP);
    let rip = sa(f.rip[1], RPORT_UDP);
    let z = |p: Vec<u8>| if zero { zero_udp_checksum(&p) } else { p };
    let what = if zero {
        "with zero checksum (stays zero)"
    } else {
        "with checksum"
    };
    vec![
        case(
            format!("NAT: UDP {v} {what} rewritten to RIP:rport"),
            eth(&z(udp(c, vip, b"query"))),
            Want::Transmit(f.rip[1], eth(&z(udp_ttl(c, rip, b"query", 63)))),
        ),
        case(
            format!("NAT: UDP {v} {what} from RIP:rport rewritten to VIP:vport"),
            eth(&z(udp(rip, c, b"answer"))),
            Want::Transmit(f.cip, eth(&z(udp_ttl(vip, c, b"answer", 63)))),
        ),
    ]
}

#[test]
fn udp_v4_with_checksum() {
    run_flow(&mut nat(), &udp_flow(V4, false));
}

#[test]
fn udp_v4_with_zero_checksum_stays_zero() {
    let cases = udp_flow(V4, true);
    // The fixture itself: the checksum field really is zero in input and expected output.
    for c in &cases {
        let Want::Transmit(_, want) = &c.want else {
            unreachable!()
        };
        assert_eq!(&c.input[40..42], &[0, 0], "{}: input checksum zero", c.name);
        assert_eq!(&want[40..42], &[0, 0], "{}: expected checksum zero", c.name);
    }
    run_flow(&mut nat(), &cases);
}

#[test]
fn udp_v6() {
    run_flow(&mut nat(), &udp_flow(V6, false));
}

#[test]
fn single_packets() {
    let c4 = sa(CIP4, CPORT);
    let c6 = sa(CIP6, CPORT);
    let syn4 = tcp(c4, sa(VIP4, VPORT), "S", 1000, 0, b"");
    let syn6 = tcp(c6, sa(VIP6, VPORT), "S", 1000, 0, b"");
    let syn4_ttl1 = tcp_ttl(c4, sa(VIP4, VPORT), "S", 1000, 0, b"", 1);
    let syn6_ttl1 = tcp_ttl(c6, sa(VIP6, VPORT), "S", 1000, 0, b"", 1);
    let arp = {
        let mut v = Vec::new();
        etherparse::PacketBuilder::ethernet2(GW_MAC, [0xff; 6])
            .arp(
                etherparse::ArpPacket::new(
                    etherparse::ArpHardwareId::ETHERNET,
                    etherparse::EtherType::IPV4,
                    etherparse::ArpOperation::REQUEST,
                    &GW_MAC,
                    &CIP4.octets(),
                    &[0; 6],
                    &VIP4.octets(),
                )
                .unwrap(),
            )
            .write(&mut v)
            .unwrap();
        v
    };
    let truncated_header = eth(&syn4)[..14 + 16].to_vec();
    let truncated_payload = {
        // Total length says 20 bytes of payload more than the frame holds.
        let f = eth(&tcp(c4, sa(VIP4, VPORT), "PA", 1001, 1, REQUEST));
        f[..f.len() - 10].to_vec()
    };
    let truncated_v6 = eth(&syn6)[..14 + 30].to_vec();
    // DSCP/ECN 0xb9 (DSCP 46 EF, ECN CE), identification 0x1234, Router Alert option (RFC 2113).
    let marked4 = |p: &[u8]| {
        with_ipv4_header(p, |h| {
            h.dscp = etherparse::IpDscp::try_new(0xb9 >> 2).unwrap();
            h.ecn = etherparse::IpEcn::try_new(0xb9 & 3).unwrap();
            h.identification = 0x1234;
            h.options = [0x94, 0x04, 0x00, 0x00].into();
        })
    };
    // Traffic class 0xb9 and flow label 0x12345.
    let marked6 = |p: &[u8]| {
        let mut p = p.to_vec();
        let w = (6u32 << 28) | (0xb9 << 20) | 0x12345;
        p[..4].copy_from_slice(&w.to_be_bytes());
        p
    };
    let udp4 = |ttl| udp_ttl(c4, sa(VIP4, VPORT_UDP), b"query", ttl);
    let cases = vec![
        case(
            "NAT: SYN v4 rewritten to RIP:rport",
            eth(&syn4),
            Want::Transmit(
                RIP4[0].into(),
                eth(&tcp_ttl(c4, sa(RIP4[0], RPORT), "S", 1000, 0, b"", 63)),
            ),
        ),
        case(
            "NAT: SYN v4 to a service whose rport = vport keeps the port",
            eth(&tcp(c4, sa(VIP4, 443), "S", 1000, 0, b"")),
            Want::Transmit(
                RIP4[0].into(),
                eth(&tcp_ttl(c4, sa(RIP4[0], 443), "S", 1000, 0, b"", 63)),
            ),
        ),
        case(
            "NAT: SYN v4 with DSCP/ECN, IP ID and options keeps them",
            eth(&marked4(&syn4)),
            Want::Transmit(
                RIP4[0].into(),
                eth(&marked4(&tcp_ttl(
                    c4,
                    sa(RIP4[0], RPORT),
                    "S",
                    1000,
                    0,
                    b"",
                    63,
                ))),
            ),
        ),
        case(
            "NAT: UDP v4 without DF keeps DF clear and its IP ID",
            eth(&no_df(&udp4(64), 0x4242)),
            Want::Transmit(
                RIP4[1].into(),
                eth(&no_df(
                    &udp_ttl(c4, sa(RIP4[1], RPORT_UDP), b"query", 63),
                    0x4242,
                )),
            ),
        ),
        case(
            "NAT: SYN v4 with TTL 1 → time exceeded from DIR4 quoting it, not forwarded",
            eth(&syn4_ttl1),
            Want::Reply(
                CIP4.into(),
                eth(&icmpv4_error(DIR4, CIP4, ttl_exceeded4(), &syn4_ttl1)),
            ),
        ),
        case(
            "NAT: UDP v4 with TTL 1 → time exceeded from DIR4 quoting it, not forwarded",
            eth(&udp4(1)),
            Want::Reply(
                CIP4.into(),
                eth(&icmpv4_error(DIR4, CIP4, ttl_exceeded4(), &udp4(1))),
            ),
        ),
        case(
            "NAT: SYN v4 to a VIP port with no service → Local",
            eth(&tcp(c4, sa(VIP4, 81), "S", 1000, 0, b"")),
            Want::Local,
        ),
        case(
            "NAT: SYN v4 to DIR4 → Local",
            eth(&tcp(c4, sa(DIR4, 22), "S", 1000, 0, b"")),
            Want::Local,
        ),
        case(
            "NAT: UDP v4 to DIR4 → Local",
            eth(&udp(c4, sa(DIR4, 53), b"query")),
            Want::Local,
        ),
        case(
            "NAT: ARP request for the VIP (not IP) → Local",
            arp,
            Want::Local,
        ),
        case(
            "NAT: truncated IPv4 header → Drop(malformed)",
            truncated_header,
            Want::Drop(DropReason::Malformed),
        ),
        case(
            "NAT: IPv4 total length beyond the frame → Drop(malformed)",
            truncated_payload,
            Want::Drop(DropReason::Malformed),
        ),
        case(
            "NAT: SYN v6 rewritten to RIP:rport",
            eth(&syn6),
            Want::Transmit(
                RIP6[0].into(),
                eth(&tcp_ttl(c6, sa(RIP6[0], RPORT), "S", 1000, 0, b"", 63)),
            ),
        ),
        case(
            "NAT: SYN v6 with traffic class and flow label keeps them",
            eth(&marked6(&syn6)),
            Want::Transmit(
                RIP6[0].into(),
                eth(&marked6(&tcp_ttl(
                    c6,
                    sa(RIP6[0], RPORT),
                    "S",
                    1000,
                    0,
                    b"",
                    63,
                ))),
            ),
        ),
        case(
            "NAT: SYN v6 with hop limit 1 → ICMPv6 time exceeded from DIR6 quoting it, not forwarded",
            eth(&syn6_ttl1),
            Want::Reply(
                CIP6.into(),
                eth(&icmpv6_error(DIR6, CIP6, hop_limit_exceeded6(), &syn6_ttl1)),
            ),
        ),
        case(
            "NAT: SYN v6 to a VIP port with no service → Local",
            eth(&tcp(c6, sa(VIP6, 81), "S", 1000, 0, b"")),
            Want::Local,
        ),
        case(
            "NAT: SYN v6 to DIR6 → Local",
            eth(&tcp(c6, sa(DIR6, 22), "S", 1000, 0, b"")),
            Want::Local,
        ),
        case(
            "NAT: truncated IPv6 header → Drop(malformed)",
            truncated_v6,
            Want::Drop(DropReason::Malformed),
        ),
    ];
    run_each(nat, &cases);
}

/// Path MTU of the fixtures below.
const MTU: u16 = 1400;

/// A TCP segment of exactly `size` bytes of IP packet.
fn tcp_sized(src: SocketAddr, dst: SocketAddr, size: usize, ttl: u8) -> Vec<u8> {
    let hdr = if src.is_ipv4() { 20 + 20 } else { 40 + 20 };
    let payload: Vec<u8> = (0..size - hdr).map(|i| i as u8).collect();
    let p = tcp_ttl(src, dst, "PA", 1001, 5001, &payload, ttl);
    assert_eq!(p.len(), size);
    p
}

/// A connection, then segments around the MTU: one that fits exactly, one too big (DF / IPv6)
/// answered with frag-needed / packet-too-big from the VIP quoting the client's own packet.
fn too_big_flow(f: Fam) -> Vec<Case> {
    let v = f.name;
    let c = sa(f.cip, CPORT);
    let vip = sa(f.vip, VPORT);
    let rip = sa(f.rip[0], RPORT);
    let big = tcp_sized(c, vip, 1450, 64);
    let reply = match (f.vip, f.cip) {
        (IpAddr::V4(s), IpAddr::V4(d)) => icmpv4_error(s, d, frag_needed4(MTU), &big),
        (IpAddr::V6(s), IpAddr::V6(d)) => icmpv6_error(s, d, packet_too_big6(MTU.into()), &big),
        _ => unreachable!(),
    };
    let what = if f.name == "v4" { "DF " } else { "" };
    vec![
        case(
            format!("NAT: SYN {v} rewritten to RIP:rport"),
            eth(&tcp(c, vip, "S", 1000, 0, b"")),
            Want::Transmit(f.rip[0], eth(&tcp_ttl(c, rip, "S", 1000, 0, b"", 63))),
        ),
        case(
            format!("NAT: {what}segment {v} of exactly the MTU rewritten to RIP:rport"),
            eth(&tcp_sized(c, vip, MTU.into(), 64)),
            Want::Transmit(f.rip[0], eth(&tcp_sized(c, rip, MTU.into(), 63))),
        ),
        case(
            format!(
                "NAT: {what}segment {v} bigger than the MTU → too-big error from the VIP quoting the original"
            ),
            eth(&big),
            Want::Reply(f.cip, eth(&reply)),
        ),
    ]
}

#[test]
fn df_v4_too_big_answered_with_frag_needed_from_vip() {
    run_flow(&mut dataplane_mtu(&rules(), &[], MTU), &too_big_flow(V4));
}

#[test]
fn v6_too_big_answered_with_packet_too_big_from_vip() {
    run_flow(&mut dataplane_mtu(&rules(), &[], MTU), &too_big_flow(V6));
}

#[test]
fn df_reply_v4_too_big_answered_to_the_dest_from_dir4() {
    let mut dp = dataplane_mtu(&rules(), &[], MTU);
    let c = sa(CIP4, CPORT);
    let rip = sa(RIP4[0], RPORT);
    let big = tcp_sized(rip, c, 1450, 64);
    let cases = vec![
        case(
            "NAT: SYN v4 rewritten to RIP:rport",
            eth(&tcp(c, sa(VIP4, VPORT), "S", 1000, 0, b"")),
            Want::Transmit(RIP4[0].into(), eth(&tcp_ttl(c, rip, "S", 1000, 0, b"", 63))),
        ),
        case(
            "NAT: DF reply v4 from RIP:rport bigger than the MTU → frag-needed to the RIP from DIR4 quoting its packet",
            eth(&big),
            Want::Reply(
                RIP4[0].into(),
                eth(&icmpv4_error(DIR4, RIP4[0], frag_needed4(MTU), &big)),
            ),
        ),
    ];
    run_flow(&mut dp, &cases);
}

#[test]
fn non_df_v4_too_big_fragmented_to_the_mtu() {
    let name = "NAT: non-DF UDP v4 bigger than the MTU → NATed, then fragmented to the MTU";
    let mut dp = dataplane_mtu(&rules(), &[], MTU);
    let c = sa(CIP4, CPORT + 1);
    let payload: Vec<u8> = (0..1450 - 28).map(|i| (i * 7) as u8).collect();
    let input = eth(&no_df(&udp(c, sa(VIP4, VPORT_UDP), &payload), 0x4242));
    assert_eq!(input.len(), 14 + 1450);
    let out = run(&mut dp, &input, SEC);
    assert_eq!(out.verdict, Verdict::Held, "{name}: verdict");
    assert_eq!(out.dest, Some(sa(RIP4[1], RPORT_UDP)), "{name}: dest");
    let nated = no_df(&udp_ttl(c, sa(RIP4[1], RPORT_UDP), &payload, 63), 0x4242);
    let want: Vec<Vec<u8>> = fragment_v4(&nated, MTU.into())
        .iter()
        .map(|p| eth(p))
        .collect();
    assert_eq!(want.len(), 2, "{name}: fixture makes two fragments");
    assert_eq!(out.extra.len(), want.len(), "{name}: fragments");
    for (i, (tx, want)) in out.extra.iter().zip(&want).enumerate() {
        assert_eq!(
            tx.next_hop,
            IpAddr::from(RIP4[1]),
            "{name}: fragment {i} next hop"
        );
        assert!(
            !tx.generated,
            "{name}: fragment {i} forwarded, not generated"
        );
        let got = tx.frame.data();
        assert!(
            got.len() - 14 <= usize::from(MTU),
            "{name}: fragment {i} fits the MTU"
        );
        assert_bytes(&format!("{name}: fragment {i}"), got, want);
        verify_checksums(got);
    }
    let pieces: Vec<&[u8]> = out.extra.iter().map(|t| ip_of(t.frame.data())).collect();
    let whole = reassemble_v4(&pieces);
    assert_bytes(
        &format!("{name}: fragments reassemble to the NATed datagram"),
        &whole,
        &nated,
    );
    verify_checksums(&eth(&whole));
}

/// A packet addressed to a virtual service is the client side of a connection, never a NAT
/// dest's reply, even when its addresses and ports are those of a connection's reply
/// (a client that used a VIP as its source address). The neighbouring case differs only in the
/// second service's port: with no service on the reply's destination port, the same packet is
/// that connection's reply, rewritten back to VIP:vport.
#[test]
fn packet_to_a_service_is_never_taken_for_a_reply() {
    for f in FAMS {
        let vip2: IpAddr = match f.vip {
            IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 20)),
            IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::new(
                0x2001, 0xdb8, 0x10, 0, 0, 0, 0, 0x20,
            )),
        };
        for (svc2_port, is_reply) in [(5000, false), (5001, true)] {
            let name = format!("{} service on {vip2}:{svc2_port}", f.name);
            let rules = format!(
                "-A -t {v} -s rr\n-a -t {v} -r {r} -m -w 1\n-A -t {v2} -s rr\n-a -t {v2} -r {r2} -g -w 1\n",
                v = sa(f.vip, VPORT),
                r = sa(f.rip[0], RPORT),
                v2 = sa(vip2, svc2_port),
                r2 = sa(f.rip[1], svc2_port),
            );
            let mut dp = dataplane(&rules, &[]);
            // The "client" is VIP2:5000: its connection's reply goes to VIP2:5000.
            let client = sa(vip2, 5000);
            let syn = eth(&tcp(client, sa(f.vip, VPORT), "S", 1000, 0, b""));
            let out = run(&mut dp, &syn, SEC);
            assert_eq!(out.dest, Some(sa(f.rip[0], RPORT)), "{name}: syn");
            let synack = eth(&tcp(sa(f.rip[0], RPORT), client, "SA", 5000, 1001, b""));
            let out = run(&mut dp, &synack, SEC + 1);
            // The reply: source rewritten back to VIP:vport, sent to the "client". Otherwise a
            // SYN (with ACK) to the second service: scheduled there as a new connection and
            // forwarded unchanged by DR.
            let (src, hop, dest) = if is_reply {
                (sa(f.vip, VPORT), vip2, None)
            } else {
                let d = sa(f.rip[1], svc2_port);
                (sa(f.rip[0], RPORT), f.rip[1], Some(d))
            };
            if dest.is_some() {
                assert_eq!(out.dest, dest, "{name}");
            }
            let want = eth(&tcp_ttl(src, client, "SA", 5000, 1001, b"", 63));
            assert_transmit(&name, &out, hop, &want);
        }
    }
}
