//! Expiry and quiescence fixtures: per-state TCP timeouts and UDP's, what a packet of an expired
//! connection gets (RST per RFC 793, ICMP port unreachable, or a drop), the bounded table, and
//! what happens to connections when their dest goes to weight 0, is deleted, or comes back.
//! Each timeout is pinned from both sides: one second before it the flow is forwarded, one second
//! after it the connection is gone. IPv4 and IPv6, DR and NAT.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;
use common::*;

use std::net::{IpAddr, SocketAddr};

use etherparse::{Icmpv4Type, Icmpv6Type, NetSlice, SlicedPacket, TransportSlice};
use rvs_core::proto::{ConnState, TcpState};
use rvs_core::rules::parse_line;
use rvs_dataplane::{Dataplane, DropReason, Verdict};

/// Forwarding methods: ipvsadm flag and the real port used with it.
const DR: (&str, u16) = ("-g", 80);
const NAT: (&str, u16) = ("-m", 8080);
const METHODS: [(&str, u16); 2] = [DR, NAT];

/// The virtual service every case uses: TCP (or UDP) VIP:80, `rr` over the three dests.
fn rules(f: &Fam, (m, rport): (&str, u16), udp: bool) -> String {
    let p = if udp { "-u" } else { "-t" };
    let v = sa(f.vip, 80);
    let mut r = format!("-A {p} {v} -s rr\n");
    for rip in f.rip {
        r += &format!("-a {p} {v} -r {} {m} -w 1\n", sa(rip, rport));
    }
    r
}

fn apply(dp: &mut Dataplane, line: &str, now: u64) {
    let rule = parse_line(line).unwrap().unwrap();
    dp.director_mut().apply(&rule, now).unwrap();
}

/// A client segment to VIP:80.
fn client(f: &Fam, cport: u16, flags: &str, seq: u32, ack: u32, payload: &[u8]) -> Vec<u8> {
    eth(&tcp(
        sa(f.cip, cport),
        sa(f.vip, 80),
        flags,
        seq,
        ack,
        payload,
    ))
}

/// A dest's segment back to the client (NAT: through the director).
fn server(f: &Fam, d: usize, cport: u16, flags: &str) -> Vec<u8> {
    eth(&tcp(
        sa(f.rip[d], NAT.1),
        sa(f.cip, cport),
        flags,
        5000,
        1001,
        b"",
    ))
}

/// The client segment as forwarded to dest `d` (DR: L3 untouched; NAT: to RIP:8080), TTL − 1.
#[allow(clippy::too_many_arguments)]
fn forwarded(
    f: &Fam,
    (m, rport): (&str, u16),
    d: usize,
    cport: u16,
    flags: &str,
    seq: u32,
    ack: u32,
    payload: &[u8],
) -> Vec<u8> {
    let to = if m == "-m" {
        sa(f.rip[d], rport)
    } else {
        sa(f.vip, 80)
    };
    eth(&tcp_ttl(sa(f.cip, cport), to, flags, seq, ack, payload, 63))
}

/// Assert the client segment was forwarded, byte for byte, to dest `d`.
#[allow(clippy::too_many_arguments)]
fn assert_flows(
    name: &str,
    dp: &mut Dataplane,
    f: &Fam,
    m: (&str, u16),
    d: usize,
    cport: u16,
    flags: &str,
    now: u64,
) {
    let out = run(dp, &client(f, cport, flags, 1001, 5001, b"data"), now);
    let want = forwarded(f, m, d, cport, flags, 1001, 5001, b"data");
    assert_transmit(name, &out, f.rip[d], &want);
    assert_eq!(out.dest, Some(sa(f.rip[d], m.1)), "{name}: dest");
}

/// Assert `out` is a TCP RST from `from` to `to` as RFC 793 (§3.4, "Reset Generation") asks:
/// for a segment with ACK, `seq` = its ACK number and no ACK flag; without ACK, seq 0 and ACK
/// = its SEQ + length. Parsed with etherparse, checksums verified.
fn assert_rst(name: &str, out: &Out, from: SocketAddr, to: SocketAddr, seq: u32, ack: Option<u32>) {
    assert_eq!(
        out.verdict,
        Verdict::Reply { next_hop: to.ip() },
        "{name}: verdict"
    );
    verify_checksums(&out.frame);
    let p = SlicedPacket::from_ethernet(&out.frame).expect("RST parses");
    let (src, dst) = match &p.net {
        Some(NetSlice::Ipv4(ip)) => {
            assert_eq!(ip.header().ttl(), 64, "{name}: TTL");
            assert_eq!(ip.payload().payload.len(), 20, "{name}: bare TCP header");
            (
                IpAddr::V4(ip.header().source_addr()),
                IpAddr::V4(ip.header().destination_addr()),
            )
        }
        Some(NetSlice::Ipv6(ip)) => {
            assert_eq!(ip.header().hop_limit(), 64, "{name}: hop limit");
            assert_eq!(ip.payload().payload.len(), 20, "{name}: bare TCP header");
            (
                IpAddr::V6(ip.header().source_addr()),
                IpAddr::V6(ip.header().destination_addr()),
            )
        }
        other => panic!("{name}: not IP: {other:?}"),
    };
    let Some(TransportSlice::Tcp(t)) = &p.transport else {
        panic!("{name}: not TCP: {:?}", p.transport)
    };
    assert_eq!(
        (src, t.source_port()),
        (from.ip(), from.port()),
        "{name}: from VIP:vport"
    );
    assert_eq!(
        (dst, t.destination_port()),
        (to.ip(), to.port()),
        "{name}: to the client"
    );
    assert!(
        t.rst() && !t.syn() && !t.fin() && !t.psh(),
        "{name}: RST only"
    );
    assert_eq!(t.sequence_number(), seq, "{name}: seq");
    match ack {
        Some(a) => {
            assert!(t.ack(), "{name}: ACK flag");
            assert_eq!(t.acknowledgment_number(), a, "{name}: ack number");
        }
        None => assert!(!t.ack(), "{name}: no ACK flag when the segment had one"),
    }
    assert!(t.payload().is_empty(), "{name}: no data");
}

/// Assert an ICMP port unreachable from the VIP to the client quoting `offending` whole.
fn assert_port_unreachable(name: &str, out: &Out, f: &Fam, offending: &[u8]) {
    assert_eq!(
        out.verdict,
        Verdict::Reply { next_hop: f.cip },
        "{name}: verdict"
    );
    verify_checksums(&out.frame);
    let p = SlicedPacket::from_ethernet(&out.frame).expect("reply parses");
    let quote = match (&p.net, &p.transport) {
        (Some(NetSlice::Ipv4(ip)), Some(TransportSlice::Icmpv4(i))) => {
            assert_eq!(
                IpAddr::V4(ip.header().source_addr()),
                f.vip,
                "{name}: from the VIP"
            );
            assert_eq!(
                IpAddr::V4(ip.header().destination_addr()),
                f.cip,
                "{name}: to the client"
            );
            assert_eq!(
                i.icmp_type(),
                Icmpv4Type::DestinationUnreachable(etherparse::icmpv4::DestUnreachableHeader::Port),
                "{name}: type 3 code 3"
            );
            i.payload().to_vec()
        }
        (Some(NetSlice::Ipv6(ip)), Some(TransportSlice::Icmpv6(i))) => {
            assert_eq!(
                IpAddr::V6(ip.header().source_addr()),
                f.vip,
                "{name}: from the VIP"
            );
            assert_eq!(
                IpAddr::V6(ip.header().destination_addr()),
                f.cip,
                "{name}: to the client"
            );
            assert_eq!(
                i.icmp_type(),
                Icmpv6Type::DestinationUnreachable(etherparse::icmpv6::DestUnreachableCode::Port),
                "{name}: type 1 code 4"
            );
            i.payload().to_vec()
        }
        other => panic!("{name}: not an ICMP error: {other:?}"),
    };
    assert_eq!(quote, &offending[14..], "{name}: quotes the segment");
}

/// Open a connection from `cport` at `t` (SYN, then ACK at `t` + 1 s: ESTABLISHED); returns
/// the dest index it went to.
fn establish(dp: &mut Dataplane, f: &Fam, cport: u16, t: u64) -> usize {
    let out = run(dp, &client(f, cport, "S", 1000, 0, b""), t);
    let d = f
        .rip
        .iter()
        .position(|r| Some(*r) == out.dest.map(|d| d.ip()))
        .expect("SYN forwarded");
    let out = run(dp, &client(f, cport, "A", 1001, 5001, b""), t + SEC);
    assert_eq!(out.dest.map(|d| d.ip()), Some(f.rip[d]));
    d
}

fn state_of(dp: &Dataplane, f: &Fam, cport: u16) -> Option<ConnState> {
    dp.director()
        .conns()
        .iter()
        .find(|(_, c)| c.key.src == f.cip && c.key.sport == cport && c.state != ConnState::Template)
        .map(|(_, c)| c.state)
}

#[test]
fn established_lives_900s_then_non_syn_gets_rst_from_the_vip() {
    for f in FAMS {
        for m in METHODS {
            let name = format!("{} {}", f.name, m.0);
            let mut dp = dataplane(&rules(&f, m, false), &[]);
            let d = establish(&mut dp, &f, 40000, SEC);
            assert_eq!(
                state_of(&dp, &f, 40000),
                Some(ConnState::Tcp(TcpState::Established))
            );
            // Last packet at 2 s: alive at 2 + 899 s (which restarts the 900 s).
            assert_flows(
                &format!("{name} at 899 s"),
                &mut dp,
                &f,
                m,
                d,
                40000,
                "PA",
                901 * SEC,
            );
            // 901 s of idleness: gone; the data segment (ACK set) gets RST with seq = its ACK.
            let t = (901 + 901) * SEC;
            let seg = client(&f, 40000, "PA", 7777, 0x1234_5678, b"late data");
            let out = run(&mut dp, &seg, t);
            assert_rst(
                &format!("{name} RST"),
                &out,
                sa(f.vip, 80),
                sa(f.cip, 40000),
                0x1234_5678,
                None,
            );
            assert_eq!(state_of(&dp, &f, 40000), None, "{name}: removed");
            assert_eq!(
                dp.director().counters().expired,
                1,
                "{name}: counted as expired"
            );

            // A segment without ACK (RFC 793: <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>); FIN
            // counts as one octet.
            let out = run(&mut dp, &client(&f, 40001, "P", 9000, 0, b"0123456789"), t);
            assert_rst(
                &format!("{name} RST+ACK"),
                &out,
                sa(f.vip, 80),
                sa(f.cip, 40001),
                0,
                Some(9010),
            );
            let out = run(&mut dp, &client(&f, 40002, "F", 9000, 0, b"abc"), t);
            assert_rst(
                &format!("{name} RST+ACK FIN"),
                &out,
                sa(f.vip, 80),
                sa(f.cip, 40002),
                0,
                Some(9004),
            );
            // A RST is never answered.
            let out = run(&mut dp, &client(&f, 40003, "R", 9000, 0, b""), t);
            assert_eq!(
                out.verdict,
                Verdict::Drop(DropReason::ReplyRefused),
                "{name}: RST for RST"
            );
        }
    }
}

#[test]
fn timeout_tcp_setting_shortens_established() {
    for f in FAMS {
        for m in METHODS {
            let name = format!("{} {} timeout_tcp=30", f.name, m.0);
            let mut dp = dataplane(&rules(&f, m, false), &[("timeout_tcp", "30")]);
            let d = establish(&mut dp, &f, 41000, SEC);
            let d2 = establish(&mut dp, &f, 41001, SEC);
            assert_flows(
                &format!("{name} +29 s"),
                &mut dp,
                &f,
                m,
                d,
                41000,
                "A",
                (2 + 29) * SEC,
            );
            let out = run(
                &mut dp,
                &client(&f, 41001, "A", 1001, 5001, b""),
                (2 + 31) * SEC,
            );
            assert_rst(&name, &out, sa(f.vip, 80), sa(f.cip, 41001), 5001, None);
            assert_ne!(d, d2);
        }
    }
}

/// How a case reaches its state: client (`C`) or dest (`S`, NAT only) segments, one per second.
#[derive(Debug, Clone, Copy)]
enum Seg {
    C(&'static str),
    S(&'static str),
}

struct StateCase {
    name: &'static str,
    method: (&'static str, u16),
    steps: &'static [Seg],
    sets: &'static [(&'static str, &'static str)],
    state: TcpState,
    secs: u64,
}

const STATE_CASES: &[StateCase] = &[
    StateCase {
        name: "SYN_RECV: SYN, no ACK yet (DR)",
        method: DR,
        steps: &[Seg::C("S")],
        sets: &[],
        state: TcpState::SynRecv,
        secs: 60,
    },
    StateCase {
        name: "SYN_RECV: SYN, no ACK yet (NAT, SYN-ACK seen)",
        method: NAT,
        steps: &[Seg::C("S"), Seg::S("SA")],
        sets: &[],
        state: TcpState::SynRecv,
        secs: 60,
    },
    StateCase {
        name: "FIN_WAIT: client FIN (DR)",
        method: DR,
        steps: &[Seg::C("S"), Seg::C("A"), Seg::C("FA")],
        sets: &[],
        state: TcpState::FinWait,
        secs: 120,
    },
    StateCase {
        name: "FIN_WAIT: client FIN (DR), timeout_tcpfin=30",
        method: DR,
        steps: &[Seg::C("S"), Seg::C("A"), Seg::C("FA")],
        sets: &[("timeout_tcpfin", "30")],
        state: TcpState::FinWait,
        secs: 30,
    },
    StateCase {
        name: "FIN_WAIT: dest FIN (NAT)",
        method: NAT,
        steps: &[Seg::C("S"), Seg::S("SA"), Seg::C("A"), Seg::S("FA")],
        sets: &[],
        state: TcpState::FinWait,
        secs: 120,
    },
    StateCase {
        name: "CLOSE_WAIT: client FIN (NAT)",
        method: NAT,
        steps: &[Seg::C("S"), Seg::S("SA"), Seg::C("A"), Seg::C("FA")],
        sets: &[],
        state: TcpState::CloseWait,
        secs: 60,
    },
    StateCase {
        name: "TIME_WAIT: client FIN, dest FIN (NAT)",
        method: NAT,
        steps: &[
            Seg::C("S"),
            Seg::S("SA"),
            Seg::C("A"),
            Seg::C("FA"),
            Seg::S("FA"),
        ],
        sets: &[],
        state: TcpState::TimeWait,
        secs: 120,
    },
    StateCase {
        name: "CLOSE: client RST (DR)",
        method: DR,
        steps: &[Seg::C("S"), Seg::C("A"), Seg::C("RA")],
        sets: &[],
        state: TcpState::Close,
        secs: 10,
    },
    StateCase {
        name: "CLOSE: client RST (NAT)",
        method: NAT,
        steps: &[Seg::C("S"), Seg::S("SA"), Seg::C("A"), Seg::C("RA")],
        sets: &[],
        state: TcpState::Close,
        secs: 10,
    },
    StateCase {
        name: "CLOSE: dest RST (NAT)",
        method: NAT,
        steps: &[Seg::C("S"), Seg::S("SA"), Seg::C("A"), Seg::S("RA")],
        sets: &[],
        state: TcpState::Close,
        secs: 10,
    },
];

#[test]
fn state_timeouts_fin_wait_close_wait_time_wait_close_syn_recv() {
    for f in FAMS {
        for case in STATE_CASES {
            let name = format!("{} {}", f.name, case.name);
            let mut dp = dataplane(&rules(&f, case.method, false), case.sets);
            // Two identical connections: one probed a second before the timeout, one after.
            let mut last = 0;
            for (k, cport) in [42000u16, 42001].into_iter().enumerate() {
                for (i, step) in case.steps.iter().enumerate() {
                    last = (10 + i as u64) * SEC;
                    let out = match *step {
                        Seg::C(flags) => {
                            run(&mut dp, &client(&f, cport, flags, 1000, 5001, b""), last)
                        }
                        Seg::S(flags) => run(&mut dp, &server(&f, k, cport, flags), last),
                    };
                    assert!(
                        matches!(out.verdict, Verdict::Transmit { .. }),
                        "{name}: step {i}: {:?}",
                        out.verdict
                    );
                }
                assert_eq!(
                    state_of(&dp, &f, cport),
                    Some(ConnState::Tcp(case.state)),
                    "{name}: state"
                );
            }
            // rr put the two connections on dests 0 and 1.
            assert_flows(
                &format!("{name}: 1 s before"),
                &mut dp,
                &f,
                case.method,
                0,
                42000,
                "A",
                last + (case.secs - 1) * SEC,
            );
            let out = run(
                &mut dp,
                &client(&f, 42001, "A", 1001, 5001, b""),
                last + (case.secs + 1) * SEC,
            );
            assert_rst(
                &format!("{name}: 1 s after"),
                &out,
                sa(f.vip, 80),
                sa(f.cip, 42001),
                5001,
                None,
            );
        }
    }
}

#[test]
fn udp_lives_300s_by_default_and_timeout_udp_changes_it() {
    for f in FAMS {
        for m in METHODS {
            for (sets, secs) in [(&[][..], 300u64), (&[("timeout_udp", "30")][..], 30)] {
                let name = format!("{} {} udp {secs} s", f.name, m.0);
                let mut dp = dataplane(&rules(&f, m, true), sets);
                let (c, v) = (sa(f.cip, 5353), sa(f.vip, 80));
                let dg = eth(&udp(c, v, b"query"));
                let out = run(&mut dp, &dg, SEC);
                assert_eq!(out.dest, Some(sa(f.rip[0], m.1)), "{name}: first");
                let t = (1 + secs - 1) * SEC;
                let out = run(&mut dp, &dg, t);
                let to = if m.0 == "-m" { sa(f.rip[0], m.1) } else { v };
                assert_transmit(
                    &format!("{name}: 1 s before"),
                    &out,
                    f.rip[0],
                    &eth(&udp_ttl(c, to, b"query", 63)),
                );
                // Idle past the timeout: the next datagram is a new connection (rr moves on).
                let out = run(&mut dp, &dg, t + (secs + 1) * SEC);
                assert_eq!(
                    out.dest,
                    Some(sa(f.rip[1], m.1)),
                    "{name}: new connection after expiry"
                );
                assert_eq!(dp.director().counters().expired, 1, "{name}: expired count");
            }
        }
    }
}

#[test]
fn expired_reply_icmp_answers_port_unreachable_from_the_vip() {
    for f in FAMS {
        for m in METHODS {
            let name = format!("{} {} expired_reply=icmp", f.name, m.0);
            let mut dp = dataplane(&rules(&f, m, false), &[("expired_reply", "icmp")]);
            establish(&mut dp, &f, 43000, SEC);
            let seg = client(&f, 43000, "A", 1001, 5001, b"after");
            let out = run(&mut dp, &seg, (2 + 901) * SEC);
            assert_port_unreachable(&name, &out, &f, &seg);
            // A segment that never had a connection gets the same.
            let seg = client(&f, 43001, "PA", 1, 2, b"x");
            let out = run(&mut dp, &seg, (2 + 901) * SEC);
            assert_port_unreachable(&format!("{name}, never seen"), &out, &f, &seg);
        }
    }
}

#[test]
fn expired_reply_drop_drops_with_reason_expired_conn() {
    assert_eq!(DropReason::ExpiredConn.name(), "expired_conn");
    for f in FAMS {
        for m in METHODS {
            let name = format!("{} {} expired_reply=drop", f.name, m.0);
            let mut dp = dataplane(&rules(&f, m, false), &[("expired_reply", "drop")]);
            establish(&mut dp, &f, 44000, SEC);
            let out = run(
                &mut dp,
                &client(&f, 44000, "A", 1001, 5001, b""),
                (2 + 901) * SEC,
            );
            assert_eq!(
                out.verdict,
                Verdict::Drop(DropReason::ExpiredConn),
                "{name}"
            );
            assert_eq!(
                dp.counters().drops(DropReason::ExpiredConn),
                1,
                "{name}: counted"
            );
            assert_eq!(dp.counters().generated, 0, "{name}: nothing generated");
        }
    }
}

#[test]
fn syn_after_expiry_schedules_a_new_connection() {
    for f in FAMS {
        for m in METHODS {
            let name = format!("{} {}", f.name, m.0);
            let mut dp = dataplane(&rules(&f, m, false), &[]);
            assert_eq!(establish(&mut dp, &f, 45000, SEC), 0);
            let t = (2 + 901) * SEC;
            let out = run(&mut dp, &client(&f, 45000, "A", 1001, 5001, b""), t);
            assert_rst(&name, &out, sa(f.vip, 80), sa(f.cip, 45000), 5001, None);
            // Same ports, a SYN: a new connection, scheduled afresh (rr: the next dest).
            let out = run(&mut dp, &client(&f, 45000, "S", 2000, 0, b""), t + SEC);
            let want = forwarded(&f, m, 1, 45000, "S", 2000, 0, b"");
            assert_transmit(&format!("{name}: new SYN"), &out, f.rip[1], &want);
            assert_eq!(
                state_of(&dp, &f, 45000),
                Some(ConnState::Tcp(TcpState::SynRecv)),
                "{name}"
            );
        }
    }
}

/// (name, method, segments that end the connection, settings, dest the new SYN goes to)
type ReuseCase = (
    &'static str,
    (&'static str, u16),
    &'static [Seg],
    &'static [(&'static str, &'static str)],
    usize,
);

/// A client reusing the port of an ended connection (`conn_reuse_mode`, IPVS's semantics): a
/// SYN on a connection in TIME_WAIT or CLOSE expires it and is scheduled anew (rr: the next
/// dest); in FIN_WAIT, the last state a DR director sees, only with bit 2; with 0 never; a SYN
/// on a live connection (a retransmission) never.
#[test]
fn syn_reusing_an_ended_connections_port_is_scheduled_anew() {
    use Seg::{C, S};
    #[rustfmt::skip]
    let cases: &[ReuseCase] = &[
        ("NAT TIME_WAIT", NAT, &[C("S"), S("SA"), C("A"), C("FA"), S("FA")], &[], 1),
        ("NAT TIME_WAIT, conn_reuse_mode=0", NAT,
            &[C("S"), S("SA"), C("A"), C("FA"), S("FA")], &[("conn_reuse_mode", "0")], 0),
        ("NAT CLOSE (client RST)", NAT, &[C("S"), S("SA"), C("A"), C("RA")], &[], 1),
        ("NAT ESTABLISHED (a retransmitted SYN)", NAT, &[C("S"), S("SA"), C("A")], &[], 0),
        ("DR CLOSE (client RST)", DR, &[C("S"), C("A"), C("RA")], &[], 1),
        ("DR FIN_WAIT", DR, &[C("S"), C("A"), C("FA"), C("A")], &[], 0),
        ("DR FIN_WAIT, conn_reuse_mode=3", DR,
            &[C("S"), C("A"), C("FA"), C("A")], &[("conn_reuse_mode", "3")], 1),
        ("DR ESTABLISHED (a retransmitted SYN)", DR, &[C("S"), C("A")], &[], 0),
    ];
    for f in FAMS {
        for &(case, m, steps, sets, want) in cases {
            let name = format!("{} {case}", f.name);
            let mut dp = dataplane(&rules(&f, m, false), sets);
            let mut t = 10 * SEC;
            for step in steps {
                t += SEC;
                let out = match *step {
                    Seg::C(flags) => run(&mut dp, &client(&f, 47000, flags, 1000, 5001, b""), t),
                    Seg::S(flags) => run(&mut dp, &server(&f, 0, 47000, flags), t),
                };
                assert!(
                    matches!(out.verdict, Verdict::Transmit { .. }),
                    "{name}: {out:?}"
                );
            }
            let expired = dp.director().counters().expired;
            let out = run(&mut dp, &client(&f, 47000, "S", 9000, 0, b""), t + SEC);
            let fwd = forwarded(&f, m, want, 47000, "S", 9000, 0, b"");
            assert_transmit(&format!("{name}: the new SYN"), &out, f.rip[want], &fwd);
            let rescheduled = want == 1;
            assert_eq!(
                dp.director().counters().expired,
                expired + u64::from(rescheduled),
                "{name}: the old connection expired"
            );
            assert_eq!(dp.director().conns().len(), 1, "{name}: one connection");
        }
    }
}

#[test]
fn full_table_refuses_or_evicts_the_entry_nearest_its_expiry() {
    assert_eq!(DropReason::TableFull.name(), "table_full");
    for f in FAMS {
        for m in METHODS {
            let name = format!("{} {} conn_tab_max=2", f.name, m.0);
            let mut dp = dataplane(&rules(&f, m, false), &[("conn_tab_max", "2")]);
            let d_a = establish(&mut dp, &f, 46000, SEC);
            let d_b = establish(&mut dp, &f, 46001, SEC);
            let out = run(&mut dp, &client(&f, 46002, "S", 1000, 0, b""), 3 * SEC);
            assert_eq!(
                out.verdict,
                Verdict::Drop(DropReason::TableFull),
                "{name}: third refused"
            );
            assert_eq!(
                dp.counters().drops(DropReason::TableFull),
                1,
                "{name}: counted"
            );
            assert_eq!(
                dp.director().counters().table_full,
                1,
                "{name}: director counter"
            );
            // The two in the table still flow.
            assert_flows(
                &format!("{name}: first"),
                &mut dp,
                &f,
                m,
                d_a,
                46000,
                "A",
                4 * SEC,
            );
            assert_flows(
                &format!("{name}: second"),
                &mut dp,
                &f,
                m,
                d_b,
                46001,
                "A",
                4 * SEC,
            );

            let name = format!("{} {} conn_tab_max=2 evict_oldest", f.name, m.0);
            let sets = [("conn_tab_max", "2"), ("conn_full_policy", "evict_oldest")];
            let mut dp = dataplane(&rules(&f, m, false), &sets);
            // A: SYN only (SYN_RECV, expires at 61 s); B: established (expires at 902 s).
            let out = run(&mut dp, &client(&f, 46000, "S", 1000, 0, b""), SEC);
            assert_eq!(out.dest, Some(sa(f.rip[0], m.1)));
            establish(&mut dp, &f, 46001, SEC);
            // C evicts A, the entry nearest to its expiry.
            let out = run(&mut dp, &client(&f, 46002, "S", 1000, 0, b""), 3 * SEC);
            assert_eq!(out.dest, Some(sa(f.rip[2], m.1)), "{name}: third admitted");
            assert_eq!(dp.director().counters().evicted, 1, "{name}: evicted count");
            assert_eq!(dp.director().conns().len(), 2, "{name}: still bounded");
            assert_eq!(state_of(&dp, &f, 46000), None, "{name}: A evicted");
            let out = run(&mut dp, &client(&f, 46000, "A", 1001, 5001, b""), 4 * SEC);
            assert_rst(
                &format!("{name}: A is gone"),
                &out,
                sa(f.vip, 80),
                sa(f.cip, 46000),
                5001,
                None,
            );
            assert_flows(
                &format!("{name}: B"),
                &mut dp,
                &f,
                m,
                1,
                46001,
                "A",
                4 * SEC,
            );
        }
    }
}

#[test]
fn weight_zero_keeps_existing_connections_flowing() {
    for f in FAMS {
        for m in METHODS {
            let name = format!("{} {} weight 0", f.name, m.0);
            let mut dp = dataplane(&rules(&f, m, false), &[]);
            assert_eq!(establish(&mut dp, &f, 47000, SEC), 0);
            apply(
                &mut dp,
                &format!(
                    "-e -t {} -r {} {} -w 0",
                    sa(f.vip, 80),
                    sa(f.rip[0], m.1),
                    m.0
                ),
                3 * SEC,
            );
            // New connections avoid it ...
            for p in 0..6 {
                let out = run(&mut dp, &client(&f, 47100 + p, "S", 1, 0, b""), 4 * SEC);
                assert_eq!(
                    out.dest,
                    Some(sa(f.rip[1 + usize::from(p % 2)], m.1)),
                    "{name}: new conn {p}"
                );
            }
            // ... its connection keeps flowing until its own timeout, and then is gone.
            assert_flows(
                &format!("{name}: quiescent flow"),
                &mut dp,
                &f,
                m,
                0,
                47000,
                "A",
                800 * SEC,
            );
            let out = run(
                &mut dp,
                &client(&f, 47000, "A", 1001, 5001, b""),
                (800 + 901) * SEC,
            );
            assert_rst(
                &format!("{name}: after its timeout"),
                &out,
                sa(f.vip, 80),
                sa(f.cip, 47000),
                5001,
                None,
            );
        }
    }
}

#[test]
fn deleted_dest_drops_its_connections_and_readding_in_time_resumes_them() {
    assert_eq!(DropReason::DestUnavailable.name(), "dest_unavailable");
    for f in FAMS {
        for m in METHODS {
            let name = format!("{} {}", f.name, m.0);
            let (v, r0) = (sa(f.vip, 80), sa(f.rip[0], m.1));
            let mut dp = dataplane(&rules(&f, m, false), &[]);
            assert_eq!(establish(&mut dp, &f, 48000, SEC), 0);
            apply(&mut dp, &format!("-d -t {v} -r {r0}"), 10 * SEC);
            let ack = client(&f, 48000, "A", 1001, 5001, b"");
            let out = run(&mut dp, &ack, 11 * SEC);
            assert_eq!(
                out.verdict,
                Verdict::Drop(DropReason::DestUnavailable),
                "{name}: deleted"
            );
            assert_eq!(out.dest, None, "{name}: not forwarded");
            assert_eq!(
                dp.counters().drops(DropReason::DestUnavailable),
                1,
                "{name}: counted"
            );
            // New connections go to the remaining dests.
            let out = run(&mut dp, &client(&f, 48100, "S", 1, 0, b""), 12 * SEC);
            assert_eq!(out.dest, Some(sa(f.rip[1], m.1)), "{name}: new conn");
            // Re-added 119 s after the deletion: the connection resumes, counts restored.
            apply(
                &mut dp,
                &format!("-a -t {v} -r {r0} {} -w 1", m.0),
                (10 + 119) * SEC,
            );
            assert_flows(
                &format!("{name}: resumed"),
                &mut dp,
                &f,
                m,
                0,
                48000,
                "A",
                130 * SEC,
            );
            let d0 = dp.director().services()[0]
                .dests
                .iter()
                .find(|d| d.dest.addr == f.rip[0])
                .unwrap()
                .dest
                .clone();
            assert_eq!(d0.active_conns, 1, "{name}: its connection counted again");
        }
    }
}

#[test]
fn deleted_dest_not_readded_in_time_loses_its_connections_at_their_timeout() {
    for f in FAMS {
        for m in METHODS {
            let name = format!("{} {}", f.name, m.0);
            let (v, r0) = (sa(f.vip, 80), sa(f.rip[0], m.1));
            let mut dp = dataplane(&rules(&f, m, false), &[]);
            assert_eq!(establish(&mut dp, &f, 49000, SEC), 0);
            // Last forwarded packet at 2 s: the connection lives until 902 s.
            apply(&mut dp, &format!("-d -t {v} -r {r0}"), 10 * SEC);
            // Re-added 121 s after the deletion: a new dest, the old connection stays dropped
            // (dropped packets do not refresh its timer).
            apply(
                &mut dp,
                &format!("-a -t {v} -r {r0} {} -w 1", m.0),
                (10 + 121) * SEC,
            );
            let ack = client(&f, 49000, "A", 1001, 5001, b"");
            for t in [132, 500, 901] {
                let out = run(&mut dp, &ack, t * SEC);
                assert_eq!(
                    out.verdict,
                    Verdict::Drop(DropReason::DestUnavailable),
                    "{name}: at {t} s"
                );
            }
            let d0 = dp.director().services()[0]
                .dests
                .iter()
                .find(|d| d.dest.addr == f.rip[0])
                .unwrap()
                .dest
                .clone();
            assert_eq!(
                (d0.active_conns, d0.inactive_conns),
                (0, 0),
                "{name}: a fresh dest"
            );
            // 120 s + its timeout later it is gone: RST, and nothing left in the table.
            let out = run(&mut dp, &ack, 903 * SEC);
            assert_rst(
                &format!("{name}: gone"),
                &out,
                v,
                sa(f.cip, 49000),
                5001,
                None,
            );
            assert_eq!(dp.director().conns().len(), 0, "{name}: table empty");

            // Without a re-add: the same, and the trashed dest is forgotten (a later -a is new).
            let mut dp = dataplane(&rules(&f, m, false), &[]);
            establish(&mut dp, &f, 49000, SEC);
            apply(&mut dp, &format!("-d -t {v} -r {r0}"), 10 * SEC);
            let out = run(&mut dp, &ack, 901 * SEC);
            assert_eq!(
                out.verdict,
                Verdict::Drop(DropReason::DestUnavailable),
                "{name}: still held"
            );
            let out = run(&mut dp, &ack, 903 * SEC);
            assert_rst(
                &format!("{name}: gone, no re-add"),
                &out,
                v,
                sa(f.cip, 49000),
                5001,
                None,
            );
            apply(
                &mut dp,
                &format!("-a -t {v} -r {r0} {} -w 1", m.0),
                904 * SEC,
            );
            let out = run(&mut dp, &ack, 905 * SEC);
            assert_rst(
                &format!("{name}: re-add does not revive"),
                &out,
                v,
                sa(f.cip, 49000),
                5001,
                None,
            );
        }
    }
}

#[test]
fn expire_nodest_conn_expires_a_deleted_dests_connections_at_once() {
    for f in FAMS {
        for m in METHODS {
            let name = format!("{} {} expire_nodest_conn=1", f.name, m.0);
            let (v, r0) = (sa(f.vip, 80), sa(f.rip[0], m.1));
            let mut dp = dataplane(&rules(&f, m, false), &[("expire_nodest_conn", "1")]);
            assert_eq!(establish(&mut dp, &f, 50000, SEC), 0);
            assert_eq!(establish(&mut dp, &f, 50001, SEC), 1);
            apply(&mut dp, &format!("-d -t {v} -r {r0}"), 10 * SEC);
            assert_eq!(state_of(&dp, &f, 50000), None, "{name}: expired at once");
            // Next non-SYN: RST; next SYN: another dest (rr after dest 1: dest 2).
            let out = run(&mut dp, &client(&f, 50000, "A", 1001, 5001, b""), 11 * SEC);
            assert_rst(
                &format!("{name}: RST"),
                &out,
                v,
                sa(f.cip, 50000),
                5001,
                None,
            );
            let out = run(&mut dp, &client(&f, 50000, "S", 3000, 0, b""), 12 * SEC);
            let want = forwarded(&f, m, 2, 50000, "S", 3000, 0, b"");
            assert_transmit(&format!("{name}: SYN rescheduled"), &out, f.rip[2], &want);
            // The other dest's connection is untouched.
            assert_flows(
                &format!("{name}: other dest"),
                &mut dp,
                &f,
                m,
                1,
                50001,
                "A",
                13 * SEC,
            );
            // Re-adding the dest does not bring anything back.
            apply(
                &mut dp,
                &format!("-a -t {v} -r {r0} {} -w 1", m.0),
                14 * SEC,
            );
            let d0 = dp.director().services()[0]
                .dests
                .iter()
                .find(|d| d.dest.addr == f.rip[0])
                .unwrap()
                .dest
                .clone();
            assert_eq!(
                (d0.active_conns, d0.inactive_conns),
                (0, 0),
                "{name}: nothing revived"
            );
        }
    }
}
