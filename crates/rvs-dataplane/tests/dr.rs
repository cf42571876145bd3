//! DR (direct routing) fixtures: L3 untouched except the TTL / hop limit, the frame sent
//! towards the dest's address (the I/O layer sets its MAC); replies bypass the director.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;
use common::*;

// The address-family cast is the shared harness's `Fam`: `rip[0]` serves TCP, `rip[1]` UDP.

const CPORT: u16 = 40000;
const VPORT: u16 = 80;
/// The port given to the TCP dest in the rules: DR cannot change ports, so it is ignored.
const RPORT_IGNORED: u16 = 8080;
const VPORT_UDP: u16 = 53;

const REQUEST: &[u8] = b"GET / HTTP/1.0\r\n\r\n";

/// DR services for both families: TCP 80 on the first RIP (given as :8080, which DR ignores),
/// UDP 53 on the second.
fn rules() -> String {
    let mut r = String::new();
    for f in [V4, V6] {
        r += &format!("-A -t {} -s rr\n", sa(f.vip, VPORT));
        r += &format!(
            "-a -t {} -r {} -g -w 1\n",
            sa(f.vip, VPORT),
            sa(f.rip[0], RPORT_IGNORED)
        );
        r += &format!("-A -u {} -s rr\n", sa(f.vip, VPORT_UDP));
        r += &format!(
            "-a -u {} -r {} -g -w 1\n",
            sa(f.vip, VPORT_UDP),
            sa(f.rip[1], VPORT_UDP)
        );
    }
    r
}

fn dr() -> rvs_dataplane::Dataplane {
    dataplane(&rules(), &[])
}

/// A TCP connection through the director: the client's packets go to the RIP unchanged but
/// for the TTL; the dest's replies (VIP → client, or anything from the RIP) are not ours.
fn tcp_flow(f: Fam) -> Vec<Case> {
    let v = f.name;
    let c = sa(f.cip, CPORT);
    let vip = sa(f.vip, VPORT);
    let fwd = |what: &str, flags: &str, seq: u32, ack: u32, payload: &[u8]| {
        case(
            format!("DR: {what} {v} forwarded to RIP, L3 untouched but TTL"),
            eth(&tcp(c, vip, flags, seq, ack, payload)),
            Want::Transmit(
                f.rip[0],
                eth(&tcp_ttl(c, vip, flags, seq, ack, payload, 63)),
            ),
        )
    };
    let creq = 1001 + REQUEST.len() as u32;
    vec![
        fwd("SYN", "S", 1000, 0, b""),
        // The dest answers from the VIP straight to the client; should it pass the director
        // anyway, it is no connection's: Local.
        case(
            format!("DR: SYN-ACK {v} from RIP to client (no NAT conn) → Local"),
            eth(&tcp(sa(f.rip[0], VPORT), c, "SA", 5000, 1001, b"")),
            Want::Local,
        ),
        case(
            format!("DR: SYN-ACK {v} from VIP to client → Local"),
            eth(&tcp(vip, c, "SA", 5000, 1001, b"")),
            Want::Local,
        ),
        fwd("ACK", "A", 1001, 5001, b""),
        fwd("data", "PA", 1001, 5001, REQUEST),
        fwd("FIN", "FA", creq, 5001, b""),
        fwd("last ACK", "A", creq + 1, 5002, b""),
    ]
}

#[test]
fn tcp_flow_v4() {
    run_flow(&mut dr(), &tcp_flow(V4));
}

#[test]
fn tcp_flow_v6() {
    run_flow(&mut dr(), &tcp_flow(V6));
}

/// The dest DR picks is RIP:vport — the rport of the rules is ignored.
#[test]
fn rport_ignored_dest_is_rip_vport() {
    for f in [V4, V6] {
        let mut dp = dr();
        let out = run(
            &mut dp,
            &eth(&tcp(sa(f.cip, CPORT), sa(f.vip, VPORT), "S", 1, 0, b"")),
            SEC,
        );
        assert_eq!(
            out.dest,
            Some(sa(f.rip[0], VPORT)),
            "DR: SYN {} dest is RIP:vport",
            f.name
        );
    }
}

fn udp_cases(f: Fam) -> Vec<Case> {
    let v = f.name;
    let c = sa(f.cip, CPORT + 1);
    let vip = sa(f.vip, VPORT_UDP);
    vec![
        case(
            format!("DR: UDP {v} forwarded to RIP, L3 untouched but TTL"),
            eth(&udp(c, vip, b"query")),
            Want::Transmit(f.rip[1], eth(&udp_ttl(c, vip, b"query", 63))),
        ),
        case(
            format!("DR: UDP {v} answer from RIP to client → Local"),
            eth(&udp(sa(f.rip[1], VPORT_UDP), c, b"answer")),
            Want::Local,
        ),
    ]
}

#[test]
fn udp_v4() {
    run_flow(&mut dr(), &udp_cases(V4));
}

#[test]
fn udp_v6() {
    run_flow(&mut dr(), &udp_cases(V6));
}

#[test]
fn single_packets() {
    let c4 = sa(CIP4, CPORT);
    let c6 = sa(CIP6, CPORT);
    let v4 = sa(VIP4, VPORT);
    let v6 = sa(VIP6, VPORT);
    let syn4_ttl1 = tcp_ttl(c4, v4, "S", 1000, 0, b"", 1);
    let syn6_ttl1 = tcp_ttl(c6, v6, "S", 1000, 0, b"", 1);
    // DSCP/ECN 0xb9, identification 0x1234, Router Alert option (RFC 2113).
    let marked4 = |p: &[u8]| {
        with_ipv4_header(p, |h| {
            h.dscp = etherparse::IpDscp::try_new(0xb9 >> 2).unwrap();
            h.ecn = etherparse::IpEcn::try_new(0xb9 & 3).unwrap();
            h.identification = 0x1234;
            h.options = [0x94, 0x04, 0x00, 0x00].into();
        })
    };
    let udp4 = |ttl| udp_ttl(c4, sa(VIP4, VPORT_UDP), b"query", ttl);
    let cases = vec![
        case(
            "DR: SYN v4 forwarded to RIP, L3 untouched but TTL",
            eth(&tcp(c4, v4, "S", 1000, 0, b"")),
            Want::Transmit(RIP4[0].into(), eth(&tcp_ttl(c4, v4, "S", 1000, 0, b"", 63))),
        ),
        case(
            "DR: SYN v4 with DSCP/ECN, IP ID and options forwarded untouched but TTL",
            eth(&marked4(&tcp(c4, v4, "S", 1000, 0, b""))),
            Want::Transmit(
                RIP4[0].into(),
                eth(&marked4(&tcp_ttl(c4, v4, "S", 1000, 0, b"", 63))),
            ),
        ),
        case(
            "DR: UDP v4 without DF forwarded untouched but TTL",
            eth(&no_df(&udp4(64), 0x4242)),
            Want::Transmit(RIP4[1].into(), eth(&no_df(&udp4(63), 0x4242))),
        ),
        case(
            "DR: UDP v4 with zero checksum forwarded untouched but TTL",
            eth(&zero_udp_checksum(&udp4(64))),
            Want::Transmit(RIP4[1].into(), eth(&zero_udp_checksum(&udp4(63)))),
        ),
        case(
            "DR: SYN v4 with TTL 1 → time exceeded from DIR4 quoting it, not forwarded",
            eth(&syn4_ttl1),
            Want::Reply(
                CIP4.into(),
                eth(&icmpv4_error(DIR4, CIP4, ttl_exceeded4(), &syn4_ttl1)),
            ),
        ),
        case(
            "DR: SYN v4 with TTL 2 forwarded with TTL 1",
            eth(&tcp_ttl(c4, v4, "S", 1000, 0, b"", 2)),
            Want::Transmit(RIP4[0].into(), eth(&tcp_ttl(c4, v4, "S", 1000, 0, b"", 1))),
        ),
        case(
            "DR: SYN v4 to a VIP port with no service → Local",
            eth(&tcp(c4, sa(VIP4, 81), "S", 1000, 0, b"")),
            Want::Local,
        ),
        case(
            "DR: SYN v4 to DIR4 → Local",
            eth(&tcp(c4, sa(DIR4, 22), "S", 1000, 0, b"")),
            Want::Local,
        ),
        case(
            "DR: SYN v6 forwarded to RIP, L3 untouched but hop limit",
            eth(&tcp(c6, v6, "S", 1000, 0, b"")),
            Want::Transmit(RIP6[0].into(), eth(&tcp_ttl(c6, v6, "S", 1000, 0, b"", 63))),
        ),
        case(
            "DR: SYN v6 with hop limit 1 → ICMPv6 time exceeded from DIR6 quoting it, not forwarded",
            eth(&syn6_ttl1),
            Want::Reply(
                CIP6.into(),
                eth(&icmpv6_error(DIR6, CIP6, hop_limit_exceeded6(), &syn6_ttl1)),
            ),
        ),
        case(
            "DR: SYN v6 to a VIP port with no service → Local",
            eth(&tcp(c6, sa(VIP6, 81), "S", 1000, 0, b"")),
            Want::Local,
        ),
        case(
            "DR: SYN v6 to DIR6 → Local",
            eth(&tcp(c6, sa(DIR6, 22), "S", 1000, 0, b"")),
            Want::Local,
        ),
    ];
    run_each(dr, &cases);
}

/// Zero the UDP checksum of an IPv4 packet (a sender that computed none, RFC 768).
fn zero_udp_checksum(packet: &[u8]) -> Vec<u8> {
    let mut p = packet.to_vec();
    let ihl = usize::from(p[0] & 0x0f) * 4;
    p[ihl + 6] = 0;
    p[ihl + 7] = 0;
    p
}

/// A DF packet too big for the path draws frag-needed from the VIP quoting the packet as the
/// client sent it (TTL not yet decremented), like a router's (RFC 1191, RFC 1812 §4.3.2.3).
#[test]
fn df_v4_too_big_answered_with_frag_needed_from_vip() {
    let mtu = 1400;
    let c = sa(CIP4, CPORT + 2);
    let vip = sa(VIP4, VPORT_UDP);
    let payload = vec![0x5a; 1450 - 28];
    let big = udp(c, vip, &payload);
    let fits = udp(c, vip, &payload[..1400 - 28]);
    let cases = vec![
        case(
            "DR: DF UDP v4 of exactly the MTU forwarded",
            eth(&fits),
            Want::Transmit(
                RIP4[1].into(),
                eth(&udp_ttl(c, vip, &payload[..1400 - 28], 63)),
            ),
        ),
        case(
            "DR: DF UDP v4 bigger than the MTU → frag-needed from the VIP quoting the original",
            eth(&big),
            Want::Reply(
                CIP4.into(),
                eth(&icmpv4_error(VIP4, CIP4, frag_needed4(mtu), &big)),
            ),
        ),
    ];
    run_flow(&mut dataplane_mtu(&rules(), &[], mtu), &cases);
}

#[test]
fn v6_too_big_answered_with_packet_too_big_from_vip() {
    let mtu = 1400;
    let c = sa(CIP6, CPORT + 2);
    let vip = sa(VIP6, VPORT_UDP);
    let payload = vec![0x5a; 1450 - 48];
    let big = udp(c, vip, &payload);
    let cases = vec![
        case(
            "DR: UDP v6 of exactly the MTU forwarded",
            eth(&udp(c, vip, &payload[..1400 - 48])),
            Want::Transmit(
                RIP6[1].into(),
                eth(&udp_ttl(c, vip, &payload[..1400 - 48], 63)),
            ),
        ),
        case(
            "DR: UDP v6 bigger than the MTU → packet-too-big from the VIP quoting the original",
            eth(&big),
            Want::Reply(
                CIP6.into(),
                eth(&icmpv6_error(VIP6, CIP6, packet_too_big6(mtu.into()), &big)),
            ),
        ),
    ];
    run_flow(&mut dataplane_mtu(&rules(), &[], mtu), &cases);
}
