//! ICMP fixtures (issue 4): a katran-style table per numbered item — errors related to balanced
//! connections, NAT errors from the dests' side, errors the director generates (RST and port
//! unreachable for expired / dest-less flows), safety and rate limits, hostile ICMP,
//! informational ICMP, and malformed messages. Every expected packet is built independently
//! with etherparse and compared byte for byte, its checksums verified by etherparse too.
//! Packet-too-big generation and tunnel PMTU learning (items 7 and 8) are in tests/mtu.rs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;
#[path = "common/icmp.rs"]
mod fx;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use common::*;
use etherparse::PacketBuilder;
use fx::*;
// The shared harness has its own single-packet `Case` / `Want`; these tables use the
// multi-step ones of `fx`.
use fx::{Case, Want};
use rvs_core::proto::{ConnState, TcpState};
use rvs_core::types::FwdMethod;
use rvs_dataplane::{Dataplane, DropReason, IcmpOutcome};

const MS: u64 = SEC / 1000;

/// An error type to send: (type, code, the 4 type-specific bytes, a name).
#[derive(Debug, Clone, Copy)]
struct Kind {
    t: u8,
    c: u8,
    rest: [u8; 4],
    name: &'static str,
}

const fn kind(t: u8, c: u8, rest: [u8; 4], name: &'static str) -> Kind {
    Kind { t, c, rest, name }
}

/// ICMPv4 errors that concern a flow (RFC 792, RFC 1191, RFC 1812).
const V4_ERRORS: [Kind; 8] = [
    kind(3, 0, [0; 4], "3/0 net unreachable"),
    kind(3, 1, [0; 4], "3/1 host unreachable"),
    kind(3, 3, [0; 4], "3/3 port unreachable"),
    kind(3, 4, [0, 0, 0x05, 0x78], "3/4 frag-needed mtu 1400"),
    kind(3, 13, [0; 4], "3/13 administratively prohibited"),
    kind(4, 0, [0; 4], "4/0 source quench"),
    kind(11, 0, [0; 4], "11/0 time exceeded"),
    kind(12, 0, [8, 0, 0, 0], "12/0 parameter problem pointer 8"),
];

/// ICMPv6 errors (RFC 4443).
const V6_ERRORS: [Kind; 7] = [
    kind(1, 0, [0; 4], "1/0 no route"),
    kind(1, 1, [0; 4], "1/1 administratively prohibited"),
    kind(1, 3, [0; 4], "1/3 address unreachable"),
    kind(1, 4, [0; 4], "1/4 port unreachable"),
    kind(2, 0, [0, 0, 0x05, 0x78], "2/0 packet too big mtu 1400"),
    kind(3, 0, [0; 4], "3/0 hop limit exceeded"),
    kind(4, 0, [0, 0, 0, 7], "4/0 parameter problem pointer 7"),
];

fn port_unreach(v6: bool) -> Kind {
    if v6 { V6_ERRORS[3] } else { V4_ERRORS[2] }
}

fn frag_needed(v6: bool) -> Kind {
    if v6 { V6_ERRORS[4] } else { V4_ERRORS[3] }
}

fn time_exceeded(v6: bool) -> Kind {
    if v6 { V6_ERRORS[5] } else { V4_ERRORS[6] }
}

/// An error from `src` (TTL 64) to `dst` about the quoted packet.
fn err(src: IpAddr, dst: IpAddr, k: Kind, quote: &[u8]) -> Vec<u8> {
    icmp(src, dst, 64, k.t, k.c, k.rest, quote)
}

/// What a client-side error about `f` quoting `quote` (what the VIP sent) becomes at the dest:
/// DR — the same message, TTL 63; TUN — that, encapsulated; NAT — outer destination RIP and the
/// quote `nat_quote` (the same bytes as the dest sent them), TTL 63.
fn forwarded(f: &Flow, src: IpAddr, k: Kind, quote: &[u8], nat_quote: &[u8]) -> Want {
    let rip = f.rip_addr();
    match f.method {
        Method::Dr => Want::Transmit(rip, icmp(src, f.vip(), 63, k.t, k.c, k.rest, quote)),
        Method::Tun => Want::Tunnelled(rip, icmp(src, f.vip(), 63, k.t, k.c, k.rest, quote), !f.v6),
        Method::Nat => Want::Transmit(rip, icmp(src, rip, 63, k.t, k.c, k.rest, nat_quote)),
    }
}

/// A client-side error about what the VIP sent to the client, and what it must become.
fn client_side(f: &Flow, k: Kind, payload: usize) -> (Vec<u8>, Want) {
    let q = f.vip_sent(payload);
    let want = forwarded(f, f.router_c(), k, &q, &f.rip_sent(payload));
    (err(f.router_c(), f.vip(), k, &q), want)
}

fn conn_check(
    f: Flow,
    state: ConnState,
    expires: u64,
) -> impl Fn(&Dataplane, u64) -> Result<(), String> {
    move |dp, _| {
        let d = dp.director();
        let cid = d.conn_in(&f.key()).ok_or("no connection")?;
        let c = d.conn(cid).ok_or("no connection")?;
        if c.state != state || c.expires != expires {
            return Err(format!(
                "conn {:?} expiring at {} ms, want {:?} at {} ms",
                c.state,
                c.expires / MS,
                state,
                expires / MS
            ));
        }
        Ok(())
    }
}

fn has_conn(f: Flow) -> impl Fn(&Dataplane, u64) -> Result<(), String> {
    move |dp, _| {
        dp.director()
            .conn_in(&f.key())
            .map(|_| ())
            .ok_or_else(|| format!("no connection for {:?}", f.key()))
    }
}

// ---- item 1: errors from the clients' side, forwarded by the connection's method -----------

fn item1() -> Vec<Case> {
    let mut cases = Vec::new();
    for v6 in [false, true] {
        let kinds: &[Kind] = if v6 { &V6_ERRORS } else { &V4_ERRORS };
        for m in Method::ALL {
            let f = Flow::new(v6, L4::Tcp, m);
            for k in kinds {
                let (e, want) = client_side(&f, *k, 100);
                cases.push(
                    Case::new(
                        format!("1 {} {}: to the dest", f.label(), k.name),
                        f.rules(),
                    )
                    .open(&f, SEC)
                    .send(&e, 2 * SEC, want)
                    .count(v6, k.t, k.c, IcmpOutcome::Received, 1)
                    .count(v6, k.t, k.c, IcmpOutcome::Forwarded(m.fwd()), 1),
                );
            }
            // The same, the flow UDP.
            let f = Flow::new(v6, L4::Udp, m);
            let k = port_unreach(v6);
            let (e, want) = client_side(&f, k, 100);
            cases.push(
                Case::new(
                    format!("1 {} {}: to the dest", f.label(), k.name),
                    f.rules(),
                )
                .open(&f, SEC)
                .send(&e, 2 * SEC, want),
            );
            // The same, sent by the client host itself rather than a router.
            let q = f.vip_sent(100);
            let want = forwarded(&f, f.cip(), k, &q, &f.rip_sent(100));
            cases.push(
                Case::new(
                    format!(
                        "1 {} {} from the client itself: to the dest",
                        f.label(),
                        k.name
                    ),
                    f.rules(),
                )
                .open(&f, SEC)
                .send(&err(f.cip(), f.vip(), k, &q), 2 * SEC, want),
            );
        }
    }
    cases
}

#[test]
fn item01_client_side_errors_reach_the_dest_by_its_method() {
    run_table(&item1());
}

// ---- item 2: quote shapes -------------------------------------------------------------------

fn item2() -> Vec<Case> {
    let mut cases = Vec::new();
    for v6 in [false, true] {
        let min = if v6 { 48 } else { 28 };
        for m in Method::ALL {
            // Only 8 bytes of TCP quoted (RFC 792 minimum).
            let f = Flow::new(v6, L4::Tcp, m);
            let k = frag_needed(v6);
            let q = f.vip_sent(100)[..min].to_vec();
            let want = forwarded(&f, f.router_c(), k, &q, &f.rip_sent(100)[..min]);
            cases.push(
                Case::new(
                    format!("2 {} {}, quote holds 8 bytes of TCP", f.label(), k.name),
                    f.rules(),
                )
                .open(&f, SEC)
                .send(&err(f.router_c(), f.vip(), k, &q), 2 * SEC, want),
            );
            // The same, UDP.
            let f = Flow::new(v6, L4::Udp, m);
            let q = f.vip_sent(100)[..min].to_vec();
            let want = forwarded(&f, f.router_c(), k, &q, &f.rip_sent(100)[..min]);
            cases.push(
                Case::new(
                    format!("2 {} {}, quote holds 8 bytes of UDP", f.label(), k.name),
                    f.rules(),
                )
                .open(&f, SEC)
                .send(&err(f.router_c(), f.vip(), k, &q), 2 * SEC, want),
            );
        }
    }
    for m in Method::ALL {
        // IPv4 options in the quoted header (IHL 6), whole segment and 8 bytes.
        let f = Flow::v4(L4::Tcp, m);
        let k = frag_needed(false);
        let q = with_ipv4_options(&f.vip_sent(100), &ROUTER_ALERT);
        let nq = with_ipv4_options(&f.rip_sent(100), &ROUTER_ALERT);
        let want = forwarded(&f, f.router_c(), k, &q, &nq);
        cases.push(
            Case::new(
                format!(
                    "2 {} {}, quote with IPv4 options (IHL 6)",
                    f.label(),
                    k.name
                ),
                f.rules(),
            )
            .open(&f, SEC)
            .send(&err(f.router_c(), f.vip(), k, &q), 2 * SEC, want),
        );
        let want = forwarded(&f, f.router_c(), k, &q[..32], &nq[..32]);
        cases.push(
            Case::new(
                format!(
                    "2 {} {}, quote with IPv4 options (IHL 6) + 8 bytes of TCP",
                    f.label(),
                    k.name
                ),
                f.rules(),
            )
            .open(&f, SEC)
            .send(&err(f.router_c(), f.vip(), k, &q[..32]), 2 * SEC, want),
        );
        // IPv6 extension headers (Hop-by-Hop, Destination Options) before TCP / UDP.
        for l4 in [L4::Tcp, L4::Udp] {
            let f = Flow::v6(l4, m);
            let k = port_unreach(true);
            let q = with_ipv6_exts(&f.vip_sent(100));
            let nq = with_ipv6_exts(&f.rip_sent(100));
            let want = forwarded(&f, f.router_c(), k, &q, &nq);
            cases.push(
                Case::new(
                    format!(
                        "2 {} {}, quote with Hop-by-Hop + Destination Options",
                        f.label(),
                        k.name
                    ),
                    f.rules(),
                )
                .open(&f, SEC)
                .send(&err(f.router_c(), f.vip(), k, &q), 2 * SEC, want),
            );
        }
    }
    // A quote of a non-first fragment has no ports: Local, counted.
    for v6 in [false, true] {
        let f = Flow::new(v6, L4::Udp, Method::Nat);
        let k = time_exceeded(v6);
        let whole = f.vip_sent(2000);
        let hl = if v6 { 40 } else { 20 };
        let q = fragment_of(&whole, 1480, whole.len() - hl, false);
        let q = &q[..q.len().min(if v6 { 1232 } else { 548 })];
        cases.push(
            Case::new(
                format!(
                    "2 {} {}, quote is a non-first fragment: Local",
                    f.label(),
                    k.name
                ),
                f.rules(),
            )
            .open(&f, SEC)
            .send(&err(f.router_c(), f.vip(), k, q), 2 * SEC, Want::Local)
            .count(v6, k.t, k.c, IcmpOutcome::Local, 1),
        );
        // Its neighbour: the first fragment has the ports, so it is matched and forwarded.
        let q = fragment_of(&whole, 0, 1480, true);
        let nq = fragment_of(&f.rip_sent(2000), 0, 1480, true);
        let (q, nq) = if v6 {
            (&q[..1232], &nq[..1232])
        } else {
            (&q[..548], &nq[..548])
        };
        let want = forwarded(&f, f.router_c(), k, q, nq);
        cases.push(
            Case::new(
                format!(
                    "2 {} {}, quote is a first fragment: forwarded",
                    f.label(),
                    k.name
                ),
                f.rules(),
            )
            .open(&f, SEC)
            .send(&err(f.router_c(), f.vip(), k, q), 2 * SEC, want),
        );
    }
    cases
}

#[test]
fn item02_quotes_of_every_shape() {
    run_table(&item2());
}

// ---- item 3: no connection → Local; schedule_icmp ------------------------------------------

fn item3() -> Vec<Case> {
    let mut cases = Vec::new();
    for v6 in [false, true] {
        let k = port_unreach(v6);
        for m in Method::ALL {
            let f = Flow::new(v6, L4::Tcp, m);
            let (e, _) = client_side(&f, k, 100);
            cases.push(
                Case::new(
                    format!(
                        "3 {} {}, no connection: Local, untouched",
                        f.label(),
                        k.name
                    ),
                    f.rules(),
                )
                .send(&e, 2 * SEC, Want::Local)
                .count(v6, k.t, k.c, IcmpOutcome::Local, 1),
            );
            let (_, want) = client_side(&f, k, 100);
            cases.push(
                Case::new(
                    format!(
                        "3 {} {}, no connection, schedule_icmp=1: scheduled and forwarded",
                        f.label(),
                        k.name
                    ),
                    f.rules(),
                )
                .set("schedule_icmp", "1")
                .send(&e, 2 * SEC, want)
                .check("connection created", 0, has_conn(f))
                .count(v6, k.t, k.c, IcmpOutcome::Forwarded(m.fwd()), 1)
                .total(IcmpOutcome::Generated, 0),
            );
            // Its neighbour with a connection but forwarding switched off: the host's, as a
            // balancer that ignores ICMP would leave it (the path-MTU tests' negative control).
            cases.push(
                Case::new(
                    format!(
                        "3 {} {}, connection, icmp_forward=0: Local, untouched",
                        f.label(),
                        k.name
                    ),
                    f.rules(),
                )
                .set("icmp_forward", "0")
                .open(&f, SEC)
                .send(&e, 2 * SEC, Want::Local)
                .count(v6, k.t, k.c, IcmpOutcome::Local, 1)
                .total(IcmpOutcome::Forwarded(m.fwd()), 0),
            );
        }
        // schedule_icmp with no usable dest: never answered with ICMP.
        let f = Flow::new(v6, L4::Udp, Method::Dr);
        let (e, _) = client_side(&f, k, 100);
        cases.push(
            Case::new(
                format!(
                    "3 {} {}, no connection, schedule_icmp=1, no dest: dropped, no reply",
                    f.label(),
                    k.name
                ),
                f.service_rule(),
            )
            .set("schedule_icmp", "1")
            .send(&e, 2 * SEC, Want::Drop(DropReason::NoDest))
            .total(IcmpOutcome::Generated, 0),
        );
        // An error from the dests' side with no NAT connection: the host's.
        let f = Flow::new(v6, L4::Udp, Method::Nat);
        let e = err(f.rip_addr(), f.cip(), k, &f.rip_received(10));
        cases.push(
            Case::new(
                format!(
                    "3 {} {} from the dest, no connection: Local, untouched",
                    f.label(),
                    k.name
                ),
                f.rules(),
            )
            .send(&e, 2 * SEC, Want::Local),
        );
        // The same from the dests' side with a NAT connection and forwarding switched off.
        cases.push(
            Case::new(
                format!(
                    "3 {} {} from the dest, connection, icmp_forward=0: Local, untouched",
                    f.label(),
                    k.name
                ),
                f.rules(),
            )
            .set("icmp_forward", "0")
            .open(&f, SEC)
            .send(&e, 2 * SEC, Want::Local)
            .total(IcmpOutcome::Forwarded(FwdMethod::Masq), 0),
        );
        // A quote about a port no service has, even with schedule_icmp: the host's.
        let f = Flow::new(v6, L4::Udp, Method::Dr);
        let mut g = f;
        g.vport = 5353;
        let (e, _) = client_side(&g, k, 10);
        cases.push(
            Case::new(
                format!(
                    "3 {} {}, quote names no service, schedule_icmp=1: Local",
                    f.label(),
                    k.name
                ),
                f.rules(),
            )
            .set("schedule_icmp", "1")
            .send(&e, 2 * SEC, Want::Local),
        );
    }
    cases
}

#[test]
fn item03_no_connection_is_local_unless_schedule_icmp() {
    run_table(&item3());
}

// ---- item 4: matched errors never touch the connection ---------------------------------------

fn item4() -> Vec<Case> {
    let mut cases = Vec::new();
    for (v6, m) in [
        (false, Method::Dr),
        (true, Method::Nat),
        (false, Method::Tun),
    ] {
        let f = Flow::new(v6, L4::Udp, m);
        let mut f2 = f;
        f2.rip = 1;
        let rules = f.rules() + &f.dest_rule(1);
        let k = port_unreach(v6);
        let (e, _) = client_side(&f, k, 20);
        cases.push(
            Case::new(
                format!(
                    "4 {} timeout_udp=10, errors at 5 s and 9 s: the conn still expires at 11 s",
                    f.label()
                ),
                rules.clone(),
            )
            .set("timeout_udp", "10")
            .open(&f, SEC)
            .check(
                "expires at 11 s",
                0,
                conn_check(f, ConnState::Udp, 11 * SEC),
            )
            .send(&e, 5 * SEC, Want::TransmitTo(f.rip_addr()))
            .send(&e, 9 * SEC, Want::TransmitTo(f.rip_addr()))
            .check(
                "still expires at 11 s",
                0,
                conn_check(f, ConnState::Udp, 11 * SEC),
            )
            // Expired: the flow's next datagram is scheduled afresh (rr: the other dest).
            .send(
                &f.client_sent(10),
                11 * SEC,
                Want::TransmitTo(f2.rip_addr()),
            ),
        );
        // Its neighbour: a data packet at 9 s does refresh the timer.
        cases.push(
            Case::new(
                format!(
                    "4 {} timeout_udp=10, data at 5 s and 9 s: the conn lives on at 11 s",
                    f.label()
                ),
                rules,
            )
            .set("timeout_udp", "10")
            .open(&f, SEC)
            .send(&f.client_sent(10), 5 * SEC, Want::TransmitTo(f.rip_addr()))
            .send(&f.client_sent(10), 9 * SEC, Want::TransmitTo(f.rip_addr()))
            .send(&f.client_sent(10), 11 * SEC, Want::TransmitTo(f.rip_addr())),
        );
    }
    for v6 in [false, true] {
        // TCP in SYN_RECV: an error neither moves the state nor the timer; at expiry the
        // client's next segment finds no connection (RST from the VIP).
        let f = Flow::new(v6, L4::Tcp, Method::Dr);
        let syn_recv = ConnState::Tcp(TcpState::SynRecv);
        let probe = dataplane(&f.rules(), &[]);
        let t_syn = probe.director().timeouts().timeout(syn_recv);
        let exp = SEC + t_syn;
        let (e, _) = client_side(&f, port_unreach(v6), 20);
        let ack = tcp(f.client(), f.virt(), "A", 1000, 7777, b"");
        cases.push(
            Case::new(
                format!("4 {} SYN_RECV: an error keeps state and timer", f.label()),
                f.rules(),
            )
            .open(&f, SEC)
            .check("SYN_RECV", 0, conn_check(f, syn_recv, exp))
            .send(&e, 2 * SEC, Want::TransmitTo(f.rip_addr()))
            .send(&e, exp - SEC, Want::TransmitTo(f.rip_addr()))
            .check(
                "still SYN_RECV, same expiry",
                0,
                conn_check(f, syn_recv, exp),
            )
            .send(
                &ack,
                exp,
                Want::Reply(f.cip(), rst(f.virt(), f.client(), 7777, None)),
            ),
        );
        // NAT, the error from the dests' side (conn_out): the same.
        let f = Flow::new(v6, L4::Tcp, Method::Nat);
        let e = err(f.rip_addr(), f.cip(), port_unreach(v6), &f.rip_received(0));
        cases.push(
            Case::new(
                format!(
                    "4 {} SYN_RECV: an error from the dest keeps state and timer",
                    f.label()
                ),
                f.rules(),
            )
            .open(&f, SEC)
            .send(&e, 2 * SEC, Want::TransmitTo(f.cip()))
            .check(
                "still SYN_RECV, same expiry",
                0,
                conn_check(f, syn_recv, exp),
            ),
        );
    }
    cases
}

#[test]
fn item04_matched_errors_leave_state_and_timer_alone() {
    run_table(&item4());
}

// ---- item 5: checksums verified before forwarding -------------------------------------------

fn item5() -> Vec<Case> {
    let mut cases = Vec::new();
    for v6 in [false, true] {
        let k = port_unreach(v6);
        for m in Method::ALL {
            let f = Flow::new(v6, L4::Udp, m);
            let (mut e, _) = client_side(&f, k, 20);
            // Flip a quoted payload byte: the ICMP checksum no longer matches.
            let n = e.len();
            e[n - 1] ^= 0x01;
            cases.push(
                Case::new(
                    format!("5 {} {}, bad ICMP checksum: dropped", f.label(), k.name),
                    f.rules(),
                )
                .open(&f, SEC)
                .send(&e, 2 * SEC, Want::Drop(DropReason::IcmpBadChecksum))
                .count(
                    v6,
                    k.t,
                    k.c,
                    IcmpOutcome::Dropped(DropReason::IcmpBadChecksum),
                    1,
                ),
            );
        }
        // The dests' side (NAT), too.
        let f = Flow::new(v6, L4::Udp, Method::Nat);
        let mut e = err(f.rip_addr(), f.cip(), k, &f.rip_received(10));
        let n = e.len();
        e[n - 1] ^= 0x80;
        cases.push(
            Case::new(
                format!(
                    "5 {} {} from the dest, bad checksum: dropped",
                    f.label(),
                    k.name
                ),
                f.rules(),
            )
            .open(&f, SEC)
            .send(&e, 2 * SEC, Want::Drop(DropReason::IcmpBadChecksum)),
        );
    }
    // ICMPv6: the message bytes are intact, but the checksum was computed for another
    // destination — only the pseudo-header (RFC 4443 §2.3) can tell.
    for m in Method::ALL {
        let f = Flow::v6(L4::Udp, m);
        let k = port_unreach(true);
        let other: IpAddr = Ipv6Addr::new(0x2001, 0xdb8, 0x10, 0, 0, 0, 0, 0x99).into();
        let mut e = err(f.router_c(), other, k, &f.vip_sent(20));
        e[24..40].copy_from_slice(&VIP6.octets());
        cases.push(
            Case::new(
                format!(
                    "5 {} {}, checksum over the wrong pseudo-header: dropped",
                    f.label(),
                    k.name
                ),
                f.rules(),
            )
            .open(&f, SEC)
            .send(&e, 2 * SEC, Want::Drop(DropReason::IcmpBadChecksum)),
        );
    }
    cases
}

#[test]
fn item05_bad_checksums_are_dropped() {
    run_table(&item5());
}

// ---- item 6: NAT, errors from the dests' side back to the client ----------------------------

fn item6() -> Vec<Case> {
    let mut cases = Vec::new();
    for v6 in [false, true] {
        for l4 in [L4::Udp, L4::Tcp] {
            let f = Flow::new(v6, l4, Method::Nat);
            let min = if v6 { 48 } else { 28 };
            // (sender, kind, quoted bytes)
            let senders = [
                (f.rip_addr(), port_unreach(v6), "the dest"),
                (
                    f.router_d(),
                    time_exceeded(v6),
                    "a router on the dests' side",
                ),
            ];
            for (src, k, who) in senders {
                let e = err(src, f.cip(), k, &f.rip_received(30));
                let want = icmp(
                    f.vip(),
                    f.cip(),
                    63,
                    k.t,
                    k.c,
                    k.rest,
                    &f.packet(f.client(), f.virt(), 30, 63),
                );
                cases.push(
                    Case::new(
                        format!(
                            "6 {} {} from {who}: client sees VIP:vport",
                            f.label(),
                            k.name
                        ),
                        f.rules(),
                    )
                    .open(&f, SEC)
                    .send(&e, 2 * SEC, Want::Transmit(f.cip(), want))
                    .count(
                        v6,
                        k.t,
                        k.c,
                        IcmpOutcome::Forwarded(f.method.fwd()),
                        1,
                    ),
                );
                // The same, 8 bytes quoted.
                let e = err(src, f.cip(), k, &f.rip_received(30)[..min]);
                let want = icmp(
                    f.vip(),
                    f.cip(),
                    63,
                    k.t,
                    k.c,
                    k.rest,
                    &f.packet(f.client(), f.virt(), 30, 63)[..min],
                );
                cases.push(
                    Case::new(
                        format!(
                            "6 {} {} from {who}, 8 bytes quoted: client sees VIP:vport",
                            f.label(),
                            k.name
                        ),
                        f.rules(),
                    )
                    .open(&f, SEC)
                    .send(&e, 2 * SEC, Want::Transmit(f.cip(), want)),
                );
            }
        }
    }
    cases
}

#[test]
fn item06_nat_errors_from_the_dests_side_leave_from_the_vip() {
    run_table(&item6());
}

// ---- item 9: expired connections and no usable dest ------------------------------------------

fn item9() -> Vec<Case> {
    let mut cases = Vec::new();
    for v6 in [false, true] {
        let f = Flow::new(v6, L4::Tcp, Method::Dr);
        let (c, v) = (f.client(), f.virt());
        let pu = port_unreach(v6);
        let ack = tcp(c, v, "A", 1000, 5555, b"");
        let data = tcp(c, v, "P", 1000, 0, &[7; 10]);
        let fin = tcp(c, v, "F", 1000, 0, &[7; 10]);
        let syn = tcp(c, v, "S", 1000, 0, b"");
        let vip_less = format!("(VIP-less: {} is not a director address)", f.vip());
        cases.extend([
            Case::new(
                format!(
                    "9 {} ACK without conn: RST seq=SEG.ACK from VIP:vport {vip_less}",
                    f.label()
                ),
                f.rules(),
            )
            .send(&ack, SEC, Want::Reply(f.cip(), rst(v, c, 5555, None))),
            Case::new(
                format!(
                    "9 {} data without ACK, no conn: RST+ACK ack=SEG.SEQ+len",
                    f.label()
                ),
                f.rules(),
            )
            .send(&data, SEC, Want::Reply(f.cip(), rst(v, c, 0, Some(1010)))),
            Case::new(
                format!(
                    "9 {} FIN+data without ACK, no conn: RST+ACK ack=SEG.SEQ+len+1",
                    f.label()
                ),
                f.rules(),
            )
            .send(&fin, SEC, Want::Reply(f.cip(), rst(v, c, 0, Some(1011)))),
            Case::new(
                format!(
                    "9 {} ACK without conn, expired_reply=icmp: port unreachable from the VIP",
                    f.label()
                ),
                f.rules(),
            )
            .set("expired_reply", "icmp")
            .send(
                &ack,
                SEC,
                Want::Reply(
                    f.cip(),
                    generated(f.vip(), f.cip(), pu.t, pu.c, [0; 4], &ack),
                ),
            )
            .count(v6, pu.t, pu.c, IcmpOutcome::Generated, 1),
            Case::new(
                format!(
                    "9 {} ACK without conn, expired_reply=drop: dropped",
                    f.label()
                ),
                f.rules(),
            )
            .set("expired_reply", "drop")
            .send(&ack, SEC, Want::Drop(DropReason::ExpiredConn)),
            Case::new(
                format!(
                    "9 {} SYN, no dest: port unreachable from the VIP quoting the SYN {vip_less}",
                    f.label()
                ),
                f.service_rule(),
            )
            .send(
                &syn,
                SEC,
                Want::Reply(
                    f.cip(),
                    generated(f.vip(), f.cip(), pu.t, pu.c, [0; 4], &syn),
                ),
            )
            .count(v6, pu.t, pu.c, IcmpOutcome::Generated, 1),
            Case::new(
                format!(
                    "9 {} SYN, only dest has weight 0: port unreachable from the VIP",
                    f.label()
                ),
                f.service_rule() + &f.dest_rule(0).replace("-w 1", "-w 0"),
            )
            .send(
                &syn,
                SEC,
                Want::Reply(
                    f.cip(),
                    generated(f.vip(), f.cip(), pu.t, pu.c, [0; 4], &syn),
                ),
            ),
            Case::new(
                format!(
                    "9 {} SYN, no dest, nodest_reply=rst: RST+ACK ack=SEG.SEQ+1",
                    f.label()
                ),
                f.service_rule(),
            )
            .set("nodest_reply", "rst")
            .send(&syn, SEC, Want::Reply(f.cip(), rst(v, c, 0, Some(1001)))),
            Case::new(
                format!("9 {} SYN, no dest, nodest_reply=drop: dropped", f.label()),
                f.service_rule(),
            )
            .set("nodest_reply", "drop")
            .send(&syn, SEC, Want::Drop(DropReason::NoDest)),
        ]);
        let f = Flow::new(v6, L4::Udp, Method::Nat);
        let d = f.client_sent(20);
        cases.push(
            Case::new(
                format!(
                    "9 {} datagram, no dest: port unreachable from the VIP",
                    f.label()
                ),
                f.service_rule(),
            )
            .send(
                &d,
                SEC,
                Want::Reply(f.cip(), generated(f.vip(), f.cip(), pu.t, pu.c, [0; 4], &d)),
            ),
        );
    }
    cases
}

#[test]
fn item09_expired_and_dest_less_flows_are_answered_from_the_vip() {
    run_table(&item9());
}

// ---- item 10: deleted / quiescent dests ------------------------------------------------------

fn item10() -> Vec<Case> {
    let mut cases = Vec::new();
    for v6 in [false, true] {
        for m in [Method::Dr, Method::Nat] {
            let f = Flow::new(v6, L4::Tcp, m);
            let (c, v) = (f.client(), f.virt());
            let ack = tcp(c, v, "A", 1000, 5555, b"");
            let pu = port_unreach(v6);
            let other = f.port(40001);
            let syn2 = other.open();
            let quiesce = format!(
                "-e {} {} -r {} {} -w 0",
                f.proto_flag(),
                f.virt(),
                f.real(),
                m.flag()
            );
            let delete = format!("-d {} {} -r {}", f.proto_flag(), f.virt(), f.real());
            let (e, _) = client_side(&f, pu, 20);
            cases.push(
                Case::new(
                    format!(
                        "10 {} dest quiesced (weight 0): the conn flows until it expires, then RST",
                        f.label()
                    ),
                    f.rules(),
                )
                .set("timeout_tcp", "10")
                .open(&f, SEC)
                .send(&ack, SEC, Want::TransmitTo(f.rip_addr()))
                .apply(quiesce, 2 * SEC)
                .send(&ack, 3 * SEC, Want::TransmitTo(f.rip_addr()))
                .send(&e, 4 * SEC, Want::TransmitTo(f.rip_addr()))
                .send(
                    &syn2,
                    4 * SEC,
                    Want::Reply(
                        f.cip(),
                        generated(f.vip(), f.cip(), pu.t, pu.c, [0; 4], &syn2),
                    ),
                )
                .send(&ack, 12 * SEC, Want::TransmitTo(f.rip_addr()))
                .send(
                    &ack,
                    22 * SEC + 1,
                    Want::Reply(f.cip(), rst(v, c, 5555, None)),
                ),
            );
            cases.push(
                Case::new(
                    format!(
                        "10 {} dest deleted: the conn's packets dropped until it expires, then RST",
                        f.label()
                    ),
                    f.rules(),
                )
                .set("timeout_tcp", "10")
                .open(&f, SEC)
                .send(&ack, SEC, Want::TransmitTo(f.rip_addr()))
                .apply(delete, 2 * SEC)
                .send(&ack, 3 * SEC, Want::Drop(DropReason::DestUnavailable))
                .send(&e, 4 * SEC, Want::Drop(DropReason::DestUnavailable))
                .send(&ack, 10 * SEC, Want::Drop(DropReason::DestUnavailable))
                .send(&ack, 11 * SEC, Want::Reply(f.cip(), rst(v, c, 5555, None))),
            );
        }
    }
    cases
}

#[test]
fn item10_deleted_and_quiescent_dests() {
    run_table(&item10());
}

// ---- item 11: safety, rate limits -----------------------------------------------------------

fn item11() -> Vec<Case> {
    let mut cases = Vec::new();
    // An error that cannot be forwarded (TTL 1) draws no time-exceeded: never ICMP about ICMP.
    for v6 in [false, true] {
        let f = Flow::new(v6, L4::Tcp, Method::Dr);
        let k = port_unreach(v6);
        let e = icmp(f.router_c(), f.vip(), 1, k.t, k.c, k.rest, &f.vip_sent(20));
        cases.push(
            Case::new(
                format!(
                    "11 {} {} with TTL 1: no time exceeded about an ICMP error",
                    f.label(),
                    k.name
                ),
                f.rules(),
            )
            .open(&f, SEC)
            .send(&e, 2 * SEC, Want::Drop(DropReason::TtlExceeded))
            .total(IcmpOutcome::Generated, 0),
        );
        // Its neighbour: a TCP segment with TTL 1 does get time exceeded (from the director).
        let seg = tcp_ttl(f.client(), f.virt(), "A", 1000, 2000, b"", 1);
        let te = time_exceeded(v6);
        cases.push(
            Case::new(
                format!(
                    "11 {} segment with TTL 1: time exceeded from the director",
                    f.label()
                ),
                f.rules(),
            )
            .open(&f, SEC)
            .send(
                &seg,
                2 * SEC,
                Want::Reply(
                    f.cip(),
                    generated(f.dir(), f.cip(), te.t, te.c, [0; 4], &seg),
                ),
            ),
        );
    }
    // Broadcast / multicast destinations: a datagram to a dest-less service there gets no
    // port unreachable.
    let groups: [(&str, IpAddr, IpAddr); 4] = [
        (
            "v4 limited broadcast",
            Ipv4Addr::BROADCAST.into(),
            CIP4.into(),
        ),
        (
            "v4 multicast",
            Ipv4Addr::new(239, 1, 1, 1).into(),
            CIP4.into(),
        ),
        (
            "v6 multicast",
            "ff0e::1".parse::<Ipv6Addr>().unwrap().into(),
            CIP6.into(),
        ),
        (
            "v6 link-local all-nodes",
            "ff02::1".parse::<Ipv6Addr>().unwrap().into(),
            CIP6.into(),
        ),
    ];
    for (name, group, client) in groups {
        let svc = SocketAddr::new(group, 5000);
        let d = udp(SocketAddr::new(client, 6000), svc, b"hello");
        cases.push(
            Case::new(
                format!("11 UDP to a {name} service without dest: no port unreachable"),
                format!("-A -u {svc} -s rr\n"),
            )
            .send(&d, SEC, Want::Drop(DropReason::ReplyRefused))
            .total(IcmpOutcome::Generated, 0),
        );
    }
    // Sources that name no single host.
    let sources: [(&str, IpAddr); 6] = [
        ("0.0.0.0", Ipv4Addr::UNSPECIFIED.into()),
        ("127.0.0.1", Ipv4Addr::LOCALHOST.into()),
        ("224.0.0.5", Ipv4Addr::new(224, 0, 0, 5).into()),
        ("255.255.255.255", Ipv4Addr::BROADCAST.into()),
        ("::", Ipv6Addr::UNSPECIFIED.into()),
        ("::1", Ipv6Addr::LOCALHOST.into()),
    ];
    for (name, src) in sources {
        let f = Flow::new(src.is_ipv6(), L4::Tcp, Method::Dr);
        let syn = tcp(SocketAddr::new(src, 40000), f.virt(), "S", 1, 0, b"");
        cases.push(
            Case::new(
                format!(
                    "11 {} SYN from {name}, no dest: no port unreachable",
                    f.fam()
                ),
                f.service_rule(),
            )
            .send(&syn, SEC, Want::Drop(DropReason::ReplyRefused))
            .total(IcmpOutcome::Generated, 0),
        );
    }
    // A non-first fragment: held for its first fragment, never answered.
    for v6 in [false, true] {
        let f = Flow::new(v6, L4::Udp, Method::Dr);
        let whole = f.client_sent(3000);
        let hl = if v6 { 40 } else { 20 };
        let later = fragment_of(&whole, 1480, whole.len() - hl, false);
        cases.push(
            Case::new(
                format!(
                    "11 {} non-first fragment to a service without dest: held, no reply",
                    f.label()
                ),
                f.service_rule(),
            )
            .send(&later, SEC, Want::Held)
            .total(IcmpOutcome::Generated, 0),
        );
    }
    // Global bucket: burst 2, 1 per second; per-destination limit off.
    for v6 in [false, true] {
        let f = Flow::new(v6, L4::Tcp, Method::Dr);
        let pu = port_unreach(v6);
        let mut c = Case::new(
            format!(
                "11 {} icmp_msgs_burst=2, icmp_msgs_per_sec=1: 5 expired-conn replies → 2 sent",
                f.label()
            ),
            f.rules(),
        )
        .set("expired_reply", "icmp")
        .set("icmp_msgs_burst", "2")
        .set("icmp_msgs_per_sec", "1")
        .set("icmp_ratelimit", "0");
        for i in 0..6u16 {
            let g = f.port(41000 + i);
            let ack = tcp(g.client(), g.virt(), "A", 1, 2, b"");
            let at = if i < 5 { SEC } else { 2 * SEC };
            let want = if i < 2 || i == 5 {
                Want::Reply(
                    g.cip(),
                    generated(g.vip(), g.cip(), pu.t, pu.c, [0; 4], &ack),
                )
            } else {
                Want::Drop(DropReason::ReplySuppressed)
            };
            c = c.send(&ack, at, want);
        }
        cases.push(
            c.total(IcmpOutcome::Generated, 3)
                .total(IcmpOutcome::Suppressed, 3)
                .count(v6, pu.t, pu.c, IcmpOutcome::Suppressed, 3),
        );
    }
    // A reply the builder refuses is refused even when the buckets are empty, and takes no
    // token: the limits are asked only once every refusal check has passed.
    for v6 in [false, true] {
        let f = Flow::new(v6, L4::Tcp, Method::Dr);
        let pu = port_unreach(v6);
        let lo: IpAddr = if v6 {
            Ipv6Addr::LOCALHOST.into()
        } else {
            Ipv4Addr::LOCALHOST.into()
        };
        let a = f.port(41000);
        let b = f.port(41001);
        let ack_a = tcp(a.client(), a.virt(), "A", 1, 2, b"");
        let ack_b = tcp(b.client(), b.virt(), "A", 1, 2, b"");
        let syn_lo = tcp(SocketAddr::new(lo, 40000), f.virt(), "S", 1, 0, b"");
        let reply = |g: &Flow, ack: &[u8]| {
            Want::Reply(
                g.cip(),
                generated(g.vip(), g.cip(), pu.t, pu.c, [0; 4], ack),
            )
        };
        cases.push(
            Case::new(
                format!(
                    "11 {} global bucket empty: a refused reply stays refused, takes no token",
                    f.label()
                ),
                f.service_rule(),
            )
            .set("expired_reply", "icmp")
            .set("icmp_msgs_burst", "1")
            .set("icmp_msgs_per_sec", "1")
            .set("icmp_ratelimit", "0")
            .send(&ack_a, SEC, reply(&a, &ack_a))
            .send(&syn_lo, SEC, Want::Drop(DropReason::ReplyRefused))
            .send(&ack_b, SEC, Want::Drop(DropReason::ReplySuppressed))
            .send(&ack_b, 2 * SEC, reply(&b, &ack_b))
            .total(IcmpOutcome::Generated, 2)
            .total(IcmpOutcome::Suppressed, 1)
            .count(v6, pu.t, pu.c, IcmpOutcome::Suppressed, 1),
        );
    }
    // Both limits at once: replies the global bucket stops take no per-destination token.
    // Global 10 per second, burst 1; per destination 1 per second, burst 6. Five replies stopped
    // by the global bucket at 1 s would otherwise empty the client's own bucket, and the one at
    // 1.1 s (the global bucket has a token again) would be suppressed too.
    for v6 in [false, true] {
        let f = Flow::new(v6, L4::Tcp, Method::Dr);
        let pu = port_unreach(v6);
        let mut c = Case::new(
            format!(
                "11 {} global bucket stops replies before the per-destination one is charged",
                f.label()
            ),
            f.rules(),
        )
        .set("expired_reply", "icmp")
        .set("icmp_msgs_burst", "1")
        .set("icmp_msgs_per_sec", "10")
        .set("icmp_ratelimit", "1000");
        for i in 0..7u16 {
            let g = f.port(41000 + i);
            let ack = tcp(g.client(), g.virt(), "A", 1, 2, b"");
            let (at, want) = match i {
                0 | 6 => (
                    if i == 0 { SEC } else { SEC + SEC / 10 },
                    Want::Reply(
                        g.cip(),
                        generated(g.vip(), g.cip(), pu.t, pu.c, [0; 4], &ack),
                    ),
                ),
                _ => (SEC, Want::Drop(DropReason::ReplySuppressed)),
            };
            c = c.send(&ack, at, want);
        }
        cases.push(
            c.total(IcmpOutcome::Generated, 2)
                .total(IcmpOutcome::Suppressed, 5),
        );
    }
    // Per destination: icmp_ratelimit 1000 ms with Linux's burst of 6.
    for (v6, limit) in [(false, "1000"), (true, "1000"), (false, "0")] {
        let f = Flow::new(v6, L4::Tcp, Method::Dr);
        let pu = port_unreach(v6);
        let mut c = Case::new(
            format!(
                "11 {} icmp_ratelimit={limit}: 7 replies to one client at once",
                f.label()
            ),
            f.rules(),
        )
        .set("expired_reply", "icmp")
        .set("icmp_ratelimit", limit);
        for i in 0..7u16 {
            let g = f.port(41000 + i);
            let ack = tcp(g.client(), g.virt(), "A", 1, 2, b"");
            let want = if i < 6 || limit == "0" {
                Want::Reply(
                    g.cip(),
                    generated(g.vip(), g.cip(), pu.t, pu.c, [0; 4], &ack),
                )
            } else {
                Want::Drop(DropReason::ReplySuppressed)
            };
            c = c.send(&ack, SEC, want);
        }
        // Another client is not limited by the first one's bucket; the first gets one more a
        // second later.
        let b = f.other_client();
        let ack = tcp(b.client(), b.virt(), "A", 1, 2, b"");
        c = c.send(
            &ack,
            SEC,
            Want::Reply(
                b.cip(),
                generated(b.vip(), b.cip(), pu.t, pu.c, [0; 4], &ack),
            ),
        );
        let g = f.port(42000);
        let ack = tcp(g.client(), g.virt(), "A", 1, 2, b"");
        c = c.send(
            &ack,
            2 * SEC,
            Want::Reply(
                g.cip(),
                generated(g.vip(), g.cip(), pu.t, pu.c, [0; 4], &ack),
            ),
        );
        let suppressed = if limit == "0" { 0 } else { 1 };
        cases.push(c.total(IcmpOutcome::Suppressed, suppressed));
    }
    cases
}

#[test]
fn item11_safety_and_rate_limits() {
    run_table(&item11());
}

// ---- item 12: hostile ICMP --------------------------------------------------------------------

fn item12() -> Vec<Case> {
    let mut cases = Vec::new();
    for v6 in [false, true] {
        let (small, floor) = if v6 { (1000, 1280) } else { (500, 552) };
        let fnk = frag_needed(v6);
        for m in Method::ALL {
            let f = Flow::new(v6, L4::Tcp, m);
            let q = f.vip_sent(100);
            let k = Kind {
                rest: mtu_rest(v6, small),
                ..fnk
            };
            let clamped = Kind {
                rest: mtu_rest(v6, floor),
                ..fnk
            };
            let e = err(f.router_c(), f.vip(), k, &q);
            let want = forwarded(&f, f.router_c(), clamped, &q, &f.rip_sent(100));
            cases.push(
                Case::new(
                    format!(
                        "12 {} too-big advertising {small}: clamped to {floor}",
                        f.label()
                    ),
                    f.rules(),
                )
                .open(&f, SEC)
                .send(&e, 2 * SEC, want),
            );
            // At the floor: unchanged.
            let (e, want) = client_side(&f, clamped, 100);
            cases.push(
                Case::new(
                    format!(
                        "12 {} too-big advertising {floor}: forwarded as is",
                        f.label()
                    ),
                    f.rules(),
                )
                .open(&f, SEC)
                .send(&e, 2 * SEC, want),
            );
            let e = err(f.router_c(), f.vip(), k, &q);
            cases.push(
                Case::new(
                    format!(
                        "12 {} too-big advertising {small}, icmp_small_mtu=refuse: dropped",
                        f.label()
                    ),
                    f.rules(),
                )
                .set("icmp_small_mtu", "refuse")
                .open(&f, SEC)
                .send(&e, 2 * SEC, Want::Drop(DropReason::IcmpSmallMtu))
                .count(
                    v6,
                    k.t,
                    k.c,
                    IcmpOutcome::Dropped(DropReason::IcmpSmallMtu),
                    1,
                ),
            );
        }
        // Per-source forwarding rate.
        let f = Flow::new(v6, L4::Udp, Method::Dr);
        let k = port_unreach(v6);
        let (e, want) = client_side(&f, k, 20);
        let other_router: IpAddr = if v6 {
            Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0xfd).into()
        } else {
            Ipv4Addr::new(192, 0, 2, 253).into()
        };
        let e2 = err(other_router, f.vip(), k, &f.vip_sent(20));
        cases.push(
            Case::new(
                format!("12 {} icmp_forward_per_sec=2: the third error of one source in an instant is dropped", f.label()),
                f.rules(),
            )
            .set("icmp_forward_per_sec", "2")
            .open(&f, SEC)
            .send(&e, 2 * SEC, want.clone())
            .send(&e, 2 * SEC, want.clone())
            .send(&e, 2 * SEC, Want::Drop(DropReason::IcmpRateLimited))
            .send(&e2, 2 * SEC, Want::TransmitTo(f.rip_addr()))
            .send(&e, 3 * SEC, want)
            .count(v6, k.t, k.c, IcmpOutcome::Dropped(DropReason::IcmpRateLimited), 1),
        );
    }
    cases
}

#[test]
fn item12_hostile_icmp() {
    run_table(&item12());
}

// ---- item 13: informational ICMP --------------------------------------------------------------

fn echo(src: IpAddr, dst: IpAddr, ttl: u8, reply: bool) -> Vec<u8> {
    let mut v = Vec::new();
    let payload = [0x61u8; 32];
    match (src, dst, reply) {
        (IpAddr::V4(s), IpAddr::V4(d), false) => PacketBuilder::ipv4(s.octets(), d.octets(), ttl)
            .icmpv4_echo_request(0x1234, 7)
            .write(&mut v, &payload),
        (IpAddr::V4(s), IpAddr::V4(d), true) => PacketBuilder::ipv4(s.octets(), d.octets(), ttl)
            .icmpv4_echo_reply(0x1234, 7)
            .write(&mut v, &payload),
        (IpAddr::V6(s), IpAddr::V6(d), false) => PacketBuilder::ipv6(s.octets(), d.octets(), ttl)
            .icmpv6_echo_request(0x1234, 7)
            .write(&mut v, &payload),
        (IpAddr::V6(s), IpAddr::V6(d), true) => PacketBuilder::ipv6(s.octets(), d.octets(), ttl)
            .icmpv6_echo_reply(0x1234, 7)
            .write(&mut v, &payload),
        _ => panic!("mixed families"),
    }
    .unwrap();
    v
}

fn item13() -> Vec<Case> {
    let mut cases = Vec::new();
    for v6 in [false, true] {
        let f = Flow::new(v6, L4::Tcp, Method::Dr);
        let (req_t, rep_t) = if v6 { (128, 129) } else { (8, 0) };
        let req = echo(f.cip(), f.vip(), 50, false);
        cases.push(
            Case::new(
                format!("13 {} echo request to a VIP: Local", f.fam()),
                f.rules(),
            )
            .send(&req, SEC, Want::Local)
            .count(v6, req_t, 0, IcmpOutcome::Local, 1),
        );
        cases.push(
            Case::new(
                format!(
                    "13 {} echo request to a VIP, icmp_echo_reply=1: echo reply from the VIP",
                    f.fam()
                ),
                f.rules(),
            )
            .set("icmp_echo_reply", "1")
            .send(
                &req,
                SEC,
                Want::Reply(f.cip(), echo(f.vip(), f.cip(), 64, true)),
            )
            .count(v6, rep_t, 0, IcmpOutcome::Generated, 1),
        );
        let req_dir = echo(f.cip(), f.dir(), 50, false);
        cases.push(
            Case::new(
                format!(
                    "13 {} echo request to the director's address, icmp_echo_reply=1: Local",
                    f.fam()
                ),
                f.rules(),
            )
            .set("icmp_echo_reply", "1")
            .send(&req_dir, SEC, Want::Local),
        );
        let mut bad = req.clone();
        let n = bad.len();
        bad[n - 1] ^= 1;
        cases.push(
            Case::new(
                format!(
                    "13 {} echo request with a bad checksum, icmp_echo_reply=1: dropped",
                    f.fam()
                ),
                f.rules(),
            )
            .set("icmp_echo_reply", "1")
            .send(&bad, SEC, Want::Drop(DropReason::IcmpBadChecksum)),
        );
        // Redirects (v4 5/1 about a balanced flow; v6 137) are the host's, never relayed.
        let redirect = if v6 {
            let mut body = vec![0u8; 32]; // target + destination address
            body[..16].copy_from_slice(&ROUTER6_C.octets());
            body[16..].copy_from_slice(&CIP6.octets());
            icmp(f.router_c(), f.vip(), 255, 137, 0, [0; 4], &body)
        } else {
            icmp(
                f.router_c(),
                f.vip(),
                64,
                5,
                1,
                Ipv4Addr::new(192, 0, 2, 253).octets(),
                &f.vip_sent(20),
            )
        };
        cases.push(
            Case::new(
                format!("13 {} redirect about a balanced flow: Local", f.label()),
                f.rules(),
            )
            .open(&f, SEC)
            .send(&redirect, 2 * SEC, Want::Local),
        );
    }
    cases
}

#[test]
fn item13_informational_icmp() {
    run_table(&item13());
}

// ---- malformed ---------------------------------------------------------------------------------

/// An IP packet carrying raw ICMP bytes (no checksum fix-up: callers give finished bytes).
fn raw_icmp(src: IpAddr, dst: IpAddr, icmp_bytes: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut h = etherparse::Ipv4Header::new(
                icmp_bytes.len() as u16,
                64,
                etherparse::IpNumber::ICMP,
                s.octets(),
                d.octets(),
            )
            .unwrap();
            h.header_checksum = h.calc_header_checksum();
            v.extend_from_slice(&h.to_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let h = etherparse::Ipv6Header {
                traffic_class: 0,
                flow_label: etherparse::Ipv6FlowLabel::ZERO,
                payload_length: icmp_bytes.len() as u16,
                next_header: etherparse::IpNumber::IPV6_ICMP,
                hop_limit: 64,
                source: s.octets(),
                destination: d.octets(),
            };
            v.extend_from_slice(&h.to_bytes());
        }
        _ => panic!("mixed families"),
    }
    v.extend_from_slice(icmp_bytes);
    v
}

fn malformed() -> Vec<Case> {
    let mut cases = Vec::new();
    for v6 in [false, true] {
        let f = Flow::new(v6, L4::Tcp, Method::Nat);
        let k = port_unreach(v6);
        let hl = if v6 { 40 } else { 20 };
        // A 4-byte ICMP "header".
        let short = raw_icmp(f.router_c(), f.vip(), &[k.t, k.c, 0, 0]);
        cases.push(
            Case::new(
                format!("M {} ICMP header of 4 bytes to a VIP: dropped", f.label()),
                f.rules(),
            )
            .open(&f, SEC)
            .send(&short, 2 * SEC, Want::Drop(DropReason::IcmpMalformed)),
        );
        // A quote shorter than an IP header.
        let q = f.vip_sent(100);
        let cut = if v6 { 30 } else { 12 };
        cases.push(
            Case::new(
                format!(
                    "M {} {}, quote of {cut} bytes (< IP header): dropped",
                    f.label(),
                    k.name
                ),
                f.rules(),
            )
            .open(&f, SEC)
            .send(
                &err(f.router_c(), f.vip(), k, &q[..cut]),
                2 * SEC,
                Want::Drop(DropReason::IcmpMalformed),
            ),
        );
        // Its neighbour: the header is whole but no L4 byte follows.
        cases.push(
            Case::new(
                format!(
                    "M {} {}, quote of the IP header alone: dropped",
                    f.label(),
                    k.name
                ),
                f.rules(),
            )
            .open(&f, SEC)
            .send(
                &err(f.router_c(), f.vip(), k, &q[..hl]),
                2 * SEC,
                Want::Drop(DropReason::IcmpMalformed),
            ),
        );
        // An error about an error (the VIP's port unreachable to the client, quoted back).
        let inner = err(f.vip(), f.cip(), k, &f.client_sent(10));
        cases.push(
            Case::new(
                format!("M {} {} about an ICMP error: dropped", f.label(), k.name),
                f.rules(),
            )
            .open(&f, SEC)
            .send(
                &err(f.router_c(), f.vip(), k, &inner),
                2 * SEC,
                Want::Drop(DropReason::IcmpAboutError),
            )
            .count(
                v6,
                k.t,
                k.c,
                IcmpOutcome::Dropped(DropReason::IcmpAboutError),
                1,
            ),
        );
        // A fragmented ICMP message to a VIP.
        let (e, _) = client_side(&f, k, 100);
        let frag = fragment_of(&e, 0, 64, true);
        cases.push(
            Case::new(
                format!(
                    "M {} {}, first fragment of an ICMP error: dropped",
                    f.label(),
                    k.name
                ),
                f.rules(),
            )
            .open(&f, SEC)
            .send(&frag, 2 * SEC, Want::Drop(DropReason::IcmpFragment)),
        );
    }
    // IPv4 quotes with bogus lengths.
    let f = Flow::v4(L4::Tcp, Method::Nat);
    let k = port_unreach(false);
    let mut q = f.vip_sent(100)[..28].to_vec();
    q[0] = 0x4f;
    cases.push(
        Case::new(
            format!(
                "M {} {}, quote claims IHL 15 in 28 bytes: dropped",
                f.label(),
                k.name
            ),
            f.rules(),
        )
        .open(&f, SEC)
        .send(
            &err(f.router_c(), f.vip(), k, &q),
            2 * SEC,
            Want::Drop(DropReason::IcmpMalformed),
        ),
    );
    let mut q = f.vip_sent(100);
    q[2..4].copy_from_slice(&16u16.to_be_bytes());
    cases.push(
        Case::new(
            format!(
                "M {} {}, quote's total length 16 < IHL: dropped",
                f.label(),
                k.name
            ),
            f.rules(),
        )
        .open(&f, SEC)
        .send(
            &err(f.router_c(), f.vip(), k, &q),
            2 * SEC,
            Want::Drop(DropReason::IcmpMalformed),
        ),
    );
    let mut q = f.vip_sent(100);
    q[0] = 0x44;
    cases.push(
        Case::new(
            format!("M {} {}, quote claims IHL 4: dropped", f.label(), k.name),
            f.rules(),
        )
        .open(&f, SEC)
        .send(
            &err(f.router_c(), f.vip(), k, &q),
            2 * SEC,
            Want::Drop(DropReason::IcmpMalformed),
        ),
    );
    // IPv6: an extension header running past the quote.
    let f = Flow::v6(L4::Tcp, Method::Nat);
    let k = port_unreach(true);
    let q = with_ipv6_exts(&f.vip_sent(100));
    cases.push(
        Case::new(
            format!(
                "M {} {}, quote cut inside its extension headers: dropped",
                f.label(),
                k.name
            ),
            f.rules(),
        )
        .open(&f, SEC)
        .send(
            &err(f.router_c(), f.vip(), k, &q[..50]),
            2 * SEC,
            Want::Drop(DropReason::IcmpMalformed),
        ),
    );
    cases
}

#[test]
fn malformed_icmp_is_dropped() {
    run_table(&malformed());
}

// ---- counters across a mixed sequence --------------------------------------------------------

#[test]
fn counters_by_type_code_and_outcome() {
    let f = Flow::v4(L4::Udp, Method::Nat);
    let g = Flow::v6(L4::Udp, Method::Dr);
    let rules = f.rules() + &g.rules();
    let pu4 = port_unreach(false);
    let pu6 = port_unreach(true);
    let (e4, w4) = client_side(&f, pu4, 20);
    let (e6, w6) = client_side(&g, pu6, 20);
    let stranger = f.port(1234);
    let (e_none, _) = client_side(&stranger, pu4, 20);
    let mut bad = e6.clone();
    let n = bad.len();
    bad[n - 1] ^= 1;
    let case = Case::new("counters: forwarded, local, dropped, received", rules)
        .open(&f, SEC)
        .open(&g, SEC)
        .send(&e4, 2 * SEC, w4)
        .send(&e6, 2 * SEC, w6.clone())
        .send(&e6, 2 * SEC, w6)
        .send(&e_none, 2 * SEC, Want::Local)
        .send(&bad, 2 * SEC, Want::Drop(DropReason::IcmpBadChecksum))
        .count(false, 3, 3, IcmpOutcome::Received, 2)
        .count(false, 3, 3, IcmpOutcome::Forwarded(Method::Nat.fwd()), 1)
        .count(false, 3, 3, IcmpOutcome::Local, 1)
        .count(true, 1, 4, IcmpOutcome::Received, 3)
        .count(true, 1, 4, IcmpOutcome::Forwarded(Method::Dr.fwd()), 2)
        .count(
            true,
            1,
            4,
            IcmpOutcome::Dropped(DropReason::IcmpBadChecksum),
            1,
        )
        .total(IcmpOutcome::Received, 5)
        .total(IcmpOutcome::Generated, 0)
        .check("drop counter", 0, |dp, _| {
            let n = dp.counters().drops(DropReason::IcmpBadChecksum);
            (n == 1)
                .then_some(())
                .ok_or(format!("drops(IcmpBadChecksum) = {n}"))
        });
    run_table(&[case]);
}
