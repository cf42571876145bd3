//! First checks of the ICMP paths (the full table is tests/icmp.rs).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;
use common::*;
use etherparse::PacketBuilder;
use rvs_dataplane::Verdict;

fn icmp4(
    src: std::net::Ipv4Addr,
    dst: std::net::Ipv4Addr,
    t: etherparse::Icmpv4Type,
    quote: &[u8],
) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ipv4(src.octets(), dst.octets(), 64)
        .icmpv4(t)
        .write(&mut v, quote)
        .unwrap();
    v
}

#[test]
fn frag_needed_from_client_side_nat_rewritten_to_dest() {
    let rules = format!(
        "-A -t {} -s rr\n-a -t {} -r {} -m\n",
        sa(VIP4, 80),
        sa(VIP4, 80),
        sa(RIP4[0], 8080)
    );
    let mut dp = dataplane(&rules, &[]);
    let syn = eth(&tcp(sa(CIP4, 40000), sa(VIP4, 80), "S", 1, 0, b""));
    assert!(matches!(
        run(&mut dp, &syn, SEC).verdict,
        Verdict::Transmit { .. }
    ));
    // A router on the client's path says the VIP's big segment did not fit.
    let router = std::net::Ipv4Addr::new(192, 0, 2, 254);
    let quoted = tcp(sa(VIP4, 80), sa(CIP4, 40000), "A", 9, 2, &[0x55; 1400]);
    let fneed = etherparse::Icmpv4Type::DestinationUnreachable(
        etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1280 },
    );
    let err = eth(&icmp4(router, VIP4, fneed.clone(), &quoted[..548]));
    let out = run(&mut dp, &err, 2 * SEC);
    // Expected: outer dst → RIP, TTL 63; quoted src → RIP:8080; all checksums right.
    let mut q2 = tcp(sa(RIP4[0], 8080), sa(CIP4, 40000), "A", 9, 2, &[0x55; 1400]);
    q2.truncate(548);
    let mut want = Vec::new();
    PacketBuilder::ipv4(router.octets(), RIP4[0].octets(), 63)
        .icmpv4(fneed)
        .write(&mut want, &q2)
        .unwrap();
    assert_transmit("frag-needed NAT", &out, RIP4[0].into(), &eth(&want));
    assert_eq!(
        dp.icmp_counters()
            .total(rvs_dataplane::IcmpOutcome::Forwarded(
                rvs_core::types::FwdMethod::Masq
            )),
        1
    );
}

#[test]
fn port_unreachable_from_nat_dest_reaches_client_from_vip() {
    let rules = format!(
        "-A -u {} -s rr\n-a -u {} -r {} -m\n",
        sa(VIP4, 53),
        sa(VIP4, 53),
        sa(RIP4[0], 5353)
    );
    let mut dp = dataplane(&rules, &[]);
    let q = eth(&udp(sa(CIP4, 5000), sa(VIP4, 53), b"query"));
    assert!(matches!(
        run(&mut dp, &q, SEC).verdict,
        Verdict::Transmit { .. }
    ));
    // The dest has no listener: it answers port unreachable quoting what it received.
    let received = udp(sa(CIP4, 5000), sa(RIP4[0], 5353), b"query");
    let pu = etherparse::Icmpv4Type::DestinationUnreachable(
        etherparse::icmpv4::DestUnreachableHeader::Port,
    );
    let err = eth(&icmp4(RIP4[0], CIP4, pu.clone(), &received));
    let out = run(&mut dp, &err, 2 * SEC);
    let sent = udp(sa(CIP4, 5000), sa(VIP4, 53), b"query");
    let mut want = Vec::new();
    PacketBuilder::ipv4(VIP4.octets(), CIP4.octets(), 63)
        .icmpv4(pu)
        .write(&mut want, &sent)
        .unwrap();
    assert_transmit(
        "port unreachable back to client",
        &out,
        CIP4.into(),
        &eth(&want),
    );
}

#[test]
fn error_about_no_connection_is_local_and_bad_checksum_is_dropped() {
    let rules = format!(
        "-A -t {} -s rr\n-a -t {} -r {} -g\n",
        sa(VIP4, 80),
        sa(VIP4, 80),
        sa(RIP4[0], 80)
    );
    let mut dp = dataplane(&rules, &[]);
    let quoted = tcp(sa(VIP4, 80), sa(CIP4, 40000), "A", 9, 2, b"");
    let pu = etherparse::Icmpv4Type::DestinationUnreachable(
        etherparse::icmpv4::DestUnreachableHeader::Port,
    );
    let err = eth(&icmp4(CIP4, VIP4, pu, &quoted));
    assert_eq!(run(&mut dp, &err, SEC).verdict, Verdict::Local);
    let syn = eth(&tcp(sa(CIP4, 40000), sa(VIP4, 80), "S", 1, 0, b""));
    run(&mut dp, &syn, SEC);
    let out = run(&mut dp, &err, SEC);
    assert_eq!(
        out.verdict,
        Verdict::Transmit {
            next_hop: RIP4[0].into()
        }
    );
    let mut bad = err.clone();
    let n = bad.len();
    bad[n - 1] ^= 0xff;
    assert_eq!(
        run(&mut dp, &bad, SEC).verdict,
        Verdict::Drop(rvs_dataplane::DropReason::IcmpBadChecksum)
    );
}

#[test]
fn per_service_reply_policies_override_the_director_wide_ones() {
    use rvs_core::director::ServicePolicy;
    use rvs_core::settings::ExpiredReply;
    use rvs_core::types::{Protocol, ServiceKey};
    let (a, b) = (sa(VIP4, 80), sa(VIP4, 443));
    let rules = format!(
        "-A -t {a} -s rr\n-a -t {a} -r {} -g\n-A -t {b} -s rr\n-a -t {b} -r {} -g -w 0\n",
        sa(RIP4[0], 80),
        sa(RIP4[1], 443)
    );
    let mut dp = dataplane(&rules, &[]);
    let key = |port| ServiceKey {
        protocol: Protocol::Tcp,
        addr: VIP4.into(),
        port,
    };
    dp.director_mut().set_service_policy(
        key(443),
        ServicePolicy {
            expired_reply: Some(ExpiredReply::Icmp),
            nodest_reply: Some(ExpiredReply::Rst),
            icmp_echo_reply: Some(true),
        },
    );
    // Port 80 keeps the defaults: an ACK without connection gets a RST.
    let ack80 = eth(&tcp(sa(CIP4, 1000), a, "A", 5, 7, b""));
    let out = run(&mut dp, &ack80, SEC);
    assert_eq!(
        out.verdict,
        Verdict::Reply {
            next_hop: CIP4.into()
        }
    );
    assert_eq!(out.frame[14 + 9], 6, "a TCP RST");
    // Port 443 says icmp: port unreachable from the VIP.
    let ack443 = eth(&tcp(sa(CIP4, 1000), b, "A", 5, 7, b""));
    let out = run(&mut dp, &ack443, 2 * SEC);
    assert_eq!(
        out.verdict,
        Verdict::Reply {
            next_hop: CIP4.into()
        }
    );
    assert_eq!(
        (out.frame[14 + 9], out.frame[34], out.frame[35]),
        (1, 3, 3),
        "ICMP 3/3"
    );
    // Its only dest has weight 0: a SYN finds no dest and, by its policy, gets a RST.
    let syn443 = eth(&tcp(sa(CIP4, 1001), b, "S", 5, 0, b""));
    let out = run(&mut dp, &syn443, 3 * SEC);
    assert_eq!(
        out.verdict,
        Verdict::Reply {
            next_hop: CIP4.into()
        }
    );
    assert_eq!(out.frame[14 + 9], 6, "a TCP RST");
    // Echo to the VIP is answered because a service on it says so.
    let mut echo = Vec::new();
    PacketBuilder::ipv4(CIP4.octets(), VIP4.octets(), 64)
        .icmpv4_echo_request(7, 1)
        .write(&mut echo, b"ping")
        .unwrap();
    let out = run(&mut dp, &eth(&echo), 4 * SEC);
    assert_eq!(
        out.verdict,
        Verdict::Reply {
            next_hop: CIP4.into()
        }
    );
    assert_eq!(out.frame[34], 0, "echo reply");
    verify_checksums(&out.frame);
    // Clearing the overrides restores the director-wide behaviour.
    dp.director_mut()
        .set_service_policy(key(443), ServicePolicy::default());
    assert_eq!(run(&mut dp, &eth(&echo), 5 * SEC).verdict, Verdict::Local);
}
