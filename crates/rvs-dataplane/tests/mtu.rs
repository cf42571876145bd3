//! MTU fixtures (issue 4, items 7 and 8): packet-too-big generated before transmission
//! (frag-needed / packet-too-big advertising exactly what fits, quoting the client's packet),
//! fragmentation of IPv4 without DF, `pmtu_disc=0` for tunnels, and errors about the director's
//! own tunnel packets teaching a per-dest tunnel PMTU. Expected packets are built independently
//! with etherparse and compared byte for byte; fragments are checked by reassembling them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;
#[path = "common/icmp.rs"]
mod fx;

use std::net::IpAddr;

use common::*;
use fx::*;
// The shared harness has its own single-packet `Case` / `Want`; these tables use the
// multi-step ones of `fx`.
use fx::{Case, Want};
use rvs_dataplane::dataplane::TUNNEL_PMTU_AGE;
use rvs_dataplane::{DropReason, IcmpOutcome};

/// ICMPv4 errors quote at most 576 − 20 − 8 bytes (RFC 1812 §4.3.2.3); ICMPv6 at most
/// 1280 − 40 − 8 (RFC 4443 §2.4 (c)).
const V4_QUOTE: usize = 548;
const V6_QUOTE: usize = 1232;

/// A packet of `total` bytes of IP from the flow's client to the VIP (IPv4: DF set).
fn big(f: &Flow, total: usize) -> Vec<u8> {
    let hl = if f.v6 { 40 } else { 20 };
    let l4 = if f.l4 == L4::Tcp { 20 } else { 8 };
    f.client_sent(total - hl - l4)
}

/// The too-big error the director must send the client of `f` about `pkt`, advertising `mtu`.
fn too_big_reply(f: &Flow, mtu: u32, pkt: &[u8]) -> Want {
    let (t, c, cap) = if f.v6 {
        (2, 0, V6_QUOTE)
    } else {
        (3, 4, V4_QUOTE)
    };
    let q = &pkt[..pkt.len().min(cap)];
    Want::Reply(
        f.cip(),
        generated(f.vip(), f.cip(), t, c, mtu_rest(f.v6, mtu), q),
    )
}

/// What the dest receives of a whole client packet: DR/TUN inner — TTL 63; NAT — to RIP:rport.
fn as_forwarded(f: &Flow, pkt_payload: usize) -> Vec<u8> {
    match f.method {
        Method::Nat => f.packet(f.client(), f.real(), pkt_payload, 63),
        _ => f.packet(f.client(), f.virt(), pkt_payload, 63),
    }
}

fn l4_len(f: &Flow) -> usize {
    (if f.v6 { 40 } else { 20 }) + if f.l4 == L4::Tcp { 20 } else { 8 }
}

// ---- item 7: too big for the path to the dest -------------------------------------------------

fn item7() -> Vec<Case> {
    let mut cases = Vec::new();
    for v6 in [false, true] {
        for m in Method::ALL {
            let f = Flow::new(v6, L4::Tcp, m);
            // DR / NAT: the interface MTU 1400; TUN: MTU 1500 less the tunnel header.
            let (ifmtu, fits) = match (m, v6) {
                (Method::Tun, false) => (1500, 1480),
                (Method::Tun, true) => (1500, 1460),
                _ => (1400, 1400),
            };
            let (t, c) = if v6 { (2, 0) } else { (3, 4) };
            let p = big(&f, 1500);
            cases.push(
                Case::new(
                    format!(
                        "7 {} 1500 bytes{}, MTU {ifmtu}: too-big {fits} from the VIP quoting the client's packet",
                        f.label(),
                        if v6 { "" } else { " DF" }
                    ),
                    f.rules(),
                )
                .mtu(ifmtu)
                .open(&f, SEC)
                .send(&p, 2 * SEC, too_big_reply(&f, fits, &p))
                .count(v6, t, c, IcmpOutcome::Generated, 1),
            );
            // Its neighbour: exactly what fits goes through.
            let p = big(&f, fits as usize);
            let want = match m {
                Method::Tun => {
                    Want::Tunnelled(f.rip_addr(), as_forwarded(&f, p.len() - l4_len(&f)), !v6)
                }
                _ => Want::Transmit(f.rip_addr(), as_forwarded(&f, p.len() - l4_len(&f))),
            };
            cases.push(
                Case::new(
                    format!("7 {} {fits} bytes, MTU {ifmtu}: forwarded", f.label()),
                    f.rules(),
                )
                .mtu(ifmtu)
                .open(&f, SEC)
                .send(&p, 2 * SEC, want),
            );
        }
        // NAT replies from the dest too big for the way back: the error goes to the dest,
        // quoting the dest's own packet, from the director.
        let f = Flow::new(v6, L4::Udp, Method::Nat);
        let reply = f.packet(f.real(), f.client(), 1500 - l4_len(&f), 64);
        let (t, c, cap) = if v6 {
            (2, 0, V6_QUOTE)
        } else {
            (3, 4, V4_QUOTE)
        };
        let want = Want::Reply(
            f.rip_addr(),
            generated(
                f.dir(),
                f.rip_addr(),
                t,
                c,
                mtu_rest(v6, 1400),
                &reply[..cap],
            ),
        );
        cases.push(
            Case::new(
                format!(
                    "7 {} dest's 1500-byte reply{}, MTU 1400: too-big 1400 to the dest quoting its packet",
                    f.label(),
                    if v6 { "" } else { " DF" }
                ),
                f.rules(),
            )
            .mtu(1400)
            .open(&f, SEC)
            .send(&reply, 2 * SEC, want),
        );
    }
    // IPv4 without DF: fragmented by the director; the pieces reassemble to what the dest
    // would have received whole.
    for m in Method::ALL {
        let f = Flow::v4(L4::Udp, m);
        let p = without_df(&f.client_sent(3000));
        let datagram = without_df(&as_forwarded(&f, 3000));
        let mtu = 1400;
        cases.push(
            Case::new(
                format!(
                    "7 {} 3028 bytes without DF, MTU {mtu}: fragmented",
                    f.label()
                ),
                f.rules(),
            )
            .mtu(mtu)
            .open(&f, SEC)
            .send(
                &p,
                2 * SEC,
                Want::Fragments {
                    next_hop: f.rip_addr(),
                    mtu: usize::from(mtu),
                    tunnel: m == Method::Tun,
                    datagram,
                },
            )
            .total(IcmpOutcome::Generated, 0),
        );
    }
    // pmtu_disc=0 lets a tunnel fragment DF packets (the inner DF cleared); DR still refuses.
    let f = Flow::v4(L4::Tcp, Method::Tun);
    let p = big(&f, 1500);
    cases.push(
        Case::new(
            format!(
                "7 {} 1500 bytes DF, MTU 1500, pmtu_disc=0: fragmented",
                f.label()
            ),
            f.rules(),
        )
        .set("pmtu_disc", "0")
        .open(&f, SEC)
        .send(
            &p,
            2 * SEC,
            Want::Fragments {
                next_hop: f.rip_addr(),
                mtu: 1500,
                tunnel: true,
                datagram: without_df(&as_forwarded(&f, p.len() - 40)),
            },
        )
        .total(IcmpOutcome::Generated, 0),
    );
    let f = Flow::v4(L4::Tcp, Method::Dr);
    let p = big(&f, 1500);
    cases.push(
        Case::new(
            format!(
                "7 {} 1500 bytes DF, MTU 1400, pmtu_disc=0: still frag-needed",
                f.label()
            ),
            f.rules(),
        )
        .set("pmtu_disc", "0")
        .mtu(1400)
        .open(&f, SEC)
        .send(&p, 2 * SEC, too_big_reply(&f, 1400, &p)),
    );
    // Too-big errors go out only for first fragments (IPv4: see the test below — fragments
    // carry no DF and are fragmented further).
    let f = Flow::v6(L4::Udp, Method::Dr);
    let whole = f.client_sent(3000);
    let first = fragment_of(&whole, 0, 1200, true);
    let later = fragment_of(&whole, 1200, whole.len() - 40, false);
    cases.push(
        Case::new(
            format!(
                "7 {} non-first fragment too big for MTU 1400: dropped, no packet too big",
                f.label()
            ),
            f.rules(),
        )
        .mtu(1400)
        .send(
            &first,
            SEC,
            Want::Transmit(f.rip_addr(), with_ttl(&first, 63)),
        )
        // Not forwardable, not to be fragmented again (RFC 8200 §4.5: only the source
        // fragments), and no error about a non-first fragment.
        .send(&later, SEC, Want::Drop(DropReason::TooBig))
        .total(IcmpOutcome::Generated, 0),
    );
    // Its neighbour: a too-big first fragment does draw the error.
    let first = fragment_of(&whole, 0, 1448, true);
    cases.push(
        Case::new(
            format!(
                "7 {} first fragment too big for MTU 1400: packet too big",
                f.label()
            ),
            f.rules(),
        )
        .mtu(1400)
        .send(&first, SEC, too_big_reply(&f, 1400, &first)),
    );
    cases
}

#[test]
fn item07_too_big_for_the_path_to_the_dest() {
    run_table(&item7());
}

/// IPv4: a non-first fragment that does not fit is fragmented further, and together with the
/// first fragment (forwarded as is) the pieces reassemble to the whole datagram.
#[test]
fn item07_refragmented_fragment_reassembles_with_its_first() {
    let f = Flow::v4(L4::Udp, Method::Dr);
    let mut dp = dataplane_mtu(&f.rules(), &[], 1400);
    let whole = f.client_sent(3000);
    let first = fragment_of(&whole, 0, 1200, true);
    let later = fragment_of(&whole, 1200, whole.len() - 20, false);
    let a = run(&mut dp, &eth(&first), SEC);
    assert!(
        matches!(a.verdict, rvs_dataplane::Verdict::Transmit { .. }),
        "{:?}",
        a.verdict
    );
    let b = run(&mut dp, &eth(&later), SEC);
    assert!(
        b.extra.iter().all(|t| !t.generated)
            && !matches!(b.verdict, rvs_dataplane::Verdict::Reply { .. }),
        "no error about a non-first fragment: {:?}",
        b.verdict
    );
    assert_eq!(dp.icmp_counters().total(IcmpOutcome::Generated), 0);
    let mut r = rvs_dataplane::frag::Reassembler::new(rvs_dataplane::frag::FragLimits::default());
    let mut got = None;
    let frames: Vec<Vec<u8>> = std::iter::once(a.frame.clone())
        .chain(b.extra.iter().map(|t| t.frame.data().to_vec()))
        .collect();
    assert!(frames.len() >= 3, "not refragmented: {:?}", b.verdict);
    for fr in &frames {
        verify_checksums(fr);
        assert!(fr.len() - 14 <= 1400);
        let ip = &fr[14..];
        let p = rvs_wire::parse::parse_ip(ip).unwrap();
        if let Some(d) = r.add(ip, p.ip().unwrap(), SEC).unwrap() {
            got = Some(d);
        }
    }
    assert_eq!(got.unwrap(), without_df(&with_ttl(&whole, 63)));
}

// ---- item 8: errors about the director's own tunnel packets ------------------------------------

/// The router between director and dest.
fn router_d(v6: bool) -> IpAddr {
    if v6 {
        ROUTER6_D.into()
    } else {
        ROUTER4_D.into()
    }
}

fn item8() -> Vec<Case> {
    let mut cases = Vec::new();
    for v6 in [false, true] {
        let f = Flow::new(v6, L4::Tcp, Method::Tun);
        let (t, c) = if v6 { (2, 0) } else { (3, 4) };
        let overhead: usize = if v6 { 40 } else { 20 };
        let client_mtu = 1400 - overhead as u32;
        // The client's 1400-byte packet went out as 1400 + overhead bytes; a router with a
        // 1400-byte link answers quoting our outer header and as much of the inner as it may.
        let p = big(&f, 1400);
        let inner = as_forwarded(&f, p.len() - l4_len(&f));
        let sent = tunnelled(f.rip_addr(), 0x77, true, &inner);
        let router_quote = &sent[..if v6 { 1232 } else { 20 + 500 }];
        let e = icmp(
            router_d(v6),
            f.dir(),
            62,
            t,
            c,
            mtu_rest(v6, 1400),
            router_quote,
        );
        let inner_quoted = &router_quote[overhead..];
        let to_client = Want::Reply(
            f.cip(),
            generated(
                f.vip(),
                f.cip(),
                t,
                c,
                mtu_rest(v6, client_mtu),
                inner_quoted,
            ),
        );
        let rip = f.rip_addr();
        let ack = tcp(f.client(), f.virt(), "A", 1000, 2000, b"");
        let fits = big(&f, client_mtu as usize);
        let learned = move |want: Option<u16>| {
            move |dp: &rvs_dataplane::Dataplane, now: u64| {
                let got = dp.tunnel_pmtu(rip, now);
                (got == want)
                    .then_some(())
                    .ok_or(format!("tunnel_pmtu({rip}) = {got:?}, want {want:?}"))
            }
        };
        cases.push(
            Case::new(
                format!(
                    "8 {} too-big 1400 about our tunnel packet: learned, client told {client_mtu} quoting its packet",
                    f.label()
                ),
                f.rules(),
            )
            .open(&f, SEC)
            .send(&ack, SEC, Want::TransmitTo(rip))
            .check("nothing learned yet", 0, learned(None))
            .send(&e, 2 * SEC, to_client)
            .check("learned 1400", 0, learned(Some(1400)))
            .count(v6, t, c, IcmpOutcome::Generated, 1)
            // The next big packet of the flow is answered at once, quoting what it sent.
            .send(&p, 3 * SEC, too_big_reply(&f, client_mtu, &p))
            // What fits the learned MTU goes through.
            .send(
                &fits,
                3 * SEC,
                Want::Tunnelled(rip, as_forwarded(&f, fits.len() - l4_len(&f)), !v6),
            )
            .check("still known just before 10 minutes", 2 * SEC + TUNNEL_PMTU_AGE - 1, learned(Some(1400)))
            // Ten minutes later the learned value is gone and the big packet goes through.
            .send(&ack, 2 * SEC + TUNNEL_PMTU_AGE, Want::TransmitTo(rip))
            .check("forgotten after 10 minutes", 0, learned(None))
            .send(&p, 2 * SEC + TUNNEL_PMTU_AGE + 1, Want::Tunnelled(rip, inner.clone(), !v6)),
        );
        // The router's quote holds only our outer header and 8 bytes: learned, but there is
        // no client packet to quote.
        let e8 = icmp(
            router_d(v6),
            f.dir(),
            62,
            t,
            c,
            mtu_rest(v6, 1400),
            &sent[..overhead + 8],
        );
        cases.push(
            Case::new(
                format!(
                    "8 {} too-big about our tunnel packet, 8 inner bytes quoted: learned, dropped",
                    f.label()
                ),
                f.rules(),
            )
            .open(&f, SEC)
            .send(&e8, 2 * SEC, Want::Drop(DropReason::IcmpMalformed))
            .check("learned 1400", 0, learned(Some(1400)))
            .total(IcmpOutcome::Generated, 0),
        );
        // A too-big about a tunnel packet of a flow the director no longer knows: learned, Local.
        cases.push(
            Case::new(
                format!(
                    "8 {} too-big about our tunnel packet, no connection: learned, Local",
                    f.label()
                ),
                f.rules(),
            )
            .send(&e, 2 * SEC, Want::Local)
            .check("learned 1400", 0, learned(Some(1400))),
        );
    }
    cases
}

#[test]
fn item08_errors_about_our_tunnel_packets() {
    run_table(&item8());
}
