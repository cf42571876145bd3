//! IP fragment fixtures: every fragment of a datagram to a virtual service reaches the dest its
//! first fragment chose, whatever the order (DR, TUN: forwarded as they are, held while their
//! first is missing); NAT reassembles, rewrites and fragments again; never a non-first fragment
//! scheduled by payload bytes that look like ports; bounded holding, counted. IPv4 and IPv6.
//!
//! Datagrams are built with etherparse and split with `rvs_dataplane::frag`'s fragmenters (the
//! sender's side); what the director sends is reassembled here by hand, independently of its
//! reassembler, and compared byte for byte.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;
use common::*;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use etherparse::{
    IpHeaders, IpNumber, Ipv4Extensions, Ipv4Header, Ipv6Extensions, Ipv6FlowLabel, Ipv6Header,
    PacketBuilder,
};
use rvs_dataplane::frag::{fragment_ipv4, fragment_ipv6};
use rvs_dataplane::{DropReason, Tx, Verdict};

/// One address family's cast.
#[derive(Debug, Clone, Copy)]
struct Fam {
    name: &'static str,
    vip: IpAddr,
    cip: IpAddr,
    rip: [IpAddr; 3],
    dir: IpAddr,
    /// The sender's path MTU: its datagrams arrive fragmented to it.
    mtu: usize,
}

const V4: Fam = Fam {
    name: "v4",
    vip: IpAddr::V4(VIP4),
    cip: IpAddr::V4(CIP4),
    rip: [
        IpAddr::V4(RIP4[0]),
        IpAddr::V4(RIP4[1]),
        IpAddr::V4(RIP4[2]),
    ],
    dir: IpAddr::V4(DIR4),
    mtu: 1000,
};

const V6: Fam = Fam {
    name: "v6",
    vip: IpAddr::V6(VIP6),
    cip: IpAddr::V6(CIP6),
    rip: [
        IpAddr::V6(RIP6[0]),
        IpAddr::V6(RIP6[1]),
        IpAddr::V6(RIP6[2]),
    ],
    dir: IpAddr::V6(DIR6),
    mtu: 1280,
};

const FAMS: [Fam; 2] = [V4, V6];

fn other_client(f: &Fam) -> IpAddr {
    match f.vip {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 3, 0, 0, 0, 0, 1)),
    }
}

/// UDP VIP:53, `rr` over the three dests by method `m` (NAT dests listen on 5353).
fn rules(f: &Fam, m: &str) -> String {
    let v = sa(f.vip, 53);
    let rport = if m == "-m" { 5353 } else { 53 };
    let mut r = format!("-A -u {v} -s rr\n");
    for rip in f.rip {
        r += &format!("-a -u {v} -r {} {m} -w 1\n", sa(rip, rport));
    }
    r
}

/// `n` payload bytes: a counter pattern, distinct at every offset.
fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// A UDP datagram as its sender builds it: IPv4 without DF and with identification `ident`
/// (so it may be fragmented), or IPv6; hop limit `ttl`.
fn datagram(src: SocketAddr, dst: SocketAddr, data: &[u8], ident: u16, ttl: u8) -> Vec<u8> {
    let ip = match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut h = Ipv4Header::new(0, ttl, IpNumber::UDP, s.octets(), d.octets()).unwrap();
            h.identification = ident;
            h.dont_fragment = false;
            IpHeaders::Ipv4(h, Ipv4Extensions::default())
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => IpHeaders::Ipv6(
            Ipv6Header {
                traffic_class: 0,
                flow_label: Ipv6FlowLabel::ZERO,
                payload_length: 0,
                next_header: IpNumber::UDP,
                hop_limit: ttl,
                source: s.octets(),
                destination: d.octets(),
            },
            Ipv6Extensions::default(),
        ),
        _ => panic!("mixed families"),
    };
    let mut out = Vec::new();
    PacketBuilder::ip(ip)
        .udp(src.port(), dst.port())
        .write(&mut out, data)
        .unwrap();
    out
}

/// The sender's fragments of `d` at its path MTU (IPv6: Fragment header with `ident`).
fn fragments(f: &Fam, d: &[u8], ident: u32) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    if f.vip.is_ipv4() {
        fragment_ipv4(d, f.mtu, &mut out).unwrap();
    } else {
        fragment_ipv6(d, f.mtu, ident, &mut out).unwrap();
    }
    assert!(out.len() >= 3, "a datagram in several fragments");
    out
}

/// An IP packet with its TTL / hop limit one lower (IPv4 header checksum recomputed).
fn ttl_minus_one(p: &[u8]) -> Vec<u8> {
    let mut p = p.to_vec();
    if p[0] >> 4 == 4 {
        p[8] -= 1;
        fix_ipv4_checksum(&mut p);
    } else {
        p[7] -= 1;
    }
    p
}

fn fix_ipv4_checksum(p: &mut [u8]) {
    let ihl = usize::from(p[0] & 0x0f) * 4;
    p[10] = 0;
    p[11] = 0;
    let mut sum: u32 = p[..ihl]
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    p[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
}

/// Reassemble IP fragments (no options, no extension headers besides the Fragment header), by
/// hand: data placed at its offsets, every byte covered exactly once, the header taken from the
/// first fragment with lengths fixed (IPv4: flags and offset cleared, checksum recomputed;
/// IPv6: Fragment header removed). Also asserts the fragments agree on their identification.
fn reassemble(frags: &[Vec<u8>]) -> Vec<u8> {
    let mut pieces: Vec<(usize, bool, Vec<u8>)> = Vec::new();
    let mut head: Option<Vec<u8>> = None;
    let mut ident = None;
    for p in frags {
        let (h, off, more, id, data) = if p[0] >> 4 == 4 {
            assert_eq!(p[0], 0x45, "no options");
            let len = usize::from(u16::from_be_bytes([p[2], p[3]]));
            let ff = u16::from_be_bytes([p[6], p[7]]);
            assert_eq!(ff & 0x4000, 0, "fragments never carry DF");
            let id = u32::from(u16::from_be_bytes([p[4], p[5]]));
            (
                p[..20].to_vec(),
                usize::from(ff & 0x1fff) * 8,
                ff & 0x2000 != 0,
                id,
                p[20..len].to_vec(),
            )
        } else {
            assert_eq!(p[6], 44, "a Fragment header right after the IPv6 header");
            let len = 40 + usize::from(u16::from_be_bytes([p[4], p[5]]));
            let field = u16::from_be_bytes([p[42], p[43]]);
            let id = u32::from_be_bytes([p[44], p[45], p[46], p[47]]);
            let mut h = p[..40].to_vec();
            h[6] = p[40];
            (
                h,
                usize::from(field & 0xfff8),
                field & 1 != 0,
                id,
                p[48..len].to_vec(),
            )
        };
        assert_eq!(*ident.get_or_insert(id), id, "one datagram");
        if off == 0 {
            head = Some(h);
        }
        pieces.push((off, more, data));
    }
    pieces.sort_by_key(|(o, _, _)| *o);
    let mut data = Vec::new();
    for (i, (off, more, d)) in pieces.iter().enumerate() {
        assert_eq!(*off, data.len(), "fragments contiguous, without overlap");
        assert_eq!(*more, i + 1 < pieces.len(), "MF on all but the last");
        if *more {
            assert_eq!(d.len() % 8, 0, "non-last fragment data is a multiple of 8");
        }
        data.extend_from_slice(d);
    }
    let mut out = head.expect("a first fragment");
    if out[0] >> 4 == 4 {
        let total = (20 + data.len()) as u16;
        out[2..4].copy_from_slice(&total.to_be_bytes());
        out[6] = 0;
        out[7] = 0;
        fix_ipv4_checksum(&mut out);
    } else {
        out[4..6].copy_from_slice(&(data.len() as u16).to_be_bytes());
    }
    out.extend_from_slice(&data);
    out
}

/// The IP packets of transmissions, link layer stripped, asserting where they go.
fn ip_of_extra(name: &str, extra: &[Tx], next_hop: IpAddr, mtu: usize) -> Vec<Vec<u8>> {
    extra
        .iter()
        .map(|t| {
            assert_eq!(t.next_hop, next_hop, "{name}: next hop");
            assert!(!t.generated, "{name}: forwarded, not generated");
            let d = t.frame.data();
            assert_eq!(&d[..12], &eth(&[])[..12], "{name}: link header kept");
            assert!(
                d.len() - 14 <= mtu,
                "{name}: {} bytes over the MTU {mtu}",
                d.len() - 14
            );
            verify_checksums(d);
            d[14..].to_vec()
        })
        .collect()
}

fn assert_tunnelled(f: &Fam, out_frame: &[u8], rip: IpAddr, inner: &[u8], name: &str) {
    verify_checksums(out_frame);
    let ip = &out_frame[14..];
    if f.vip.is_ipv4() {
        assert_eq!(ip[9], 4, "{name}: IPv4-in-IPv4");
        assert_eq!(&ip[12..16], &ip_octets(f.dir)[..], "{name}: outer source");
        assert_eq!(
            &ip[16..20],
            &ip_octets(rip)[..],
            "{name}: outer destination"
        );
        assert_eq!(
            u16::from_be_bytes([ip[2], ip[3]]) as usize,
            20 + inner.len(),
            "{name}: outer length"
        );
        assert_eq!(ip[6] & 0x40, 0, "{name}: no DF outside a fragment");
        assert_eq!(&ip[20..], inner, "{name}: inner fragment");
    } else {
        assert_eq!(ip[6], 41, "{name}: IPv6-in-IPv6");
        assert_eq!(&ip[8..24], &ip_octets(f.dir)[..], "{name}: outer source");
        assert_eq!(
            &ip[24..40],
            &ip_octets(rip)[..],
            "{name}: outer destination"
        );
        assert_eq!(&ip[40..], inner, "{name}: inner fragment");
    }
}

fn ip_octets(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// Assert `out` forwarded fragment `frag` to dest `d` as the method does: DR unchanged but the
/// TTL, TUN the same inside an outer header.
fn assert_fragment_forwarded(
    name: &str,
    f: &Fam,
    m: &str,
    out_frame: &[u8],
    verdict: Verdict,
    d: usize,
    frag: &[u8],
) {
    assert_eq!(
        verdict,
        Verdict::Transmit { next_hop: f.rip[d] },
        "{name}: verdict"
    );
    let inner = ttl_minus_one(frag);
    if m == "-i" {
        assert_tunnelled(f, out_frame, f.rip[d], &inner, name);
    } else {
        assert_eq!(out_frame, eth(&inner), "{name}: DR fragment, TTL - 1 only");
        verify_checksums(out_frame);
    }
}

#[test]
fn dr_and_tun_forward_fragments_in_order_to_the_first_fragments_dest() {
    for f in FAMS {
        for m in ["-g", "-i"] {
            let name = format!("{} {m}", f.name);
            let mut dp = dataplane(&rules(&f, m), &[]);
            // Move rr on once, so the datagram's dest is not simply the first.
            let out = run(
                &mut dp,
                &eth(&udp(sa(f.cip, 4999), sa(f.vip, 53), b"x")),
                SEC,
            );
            assert_eq!(out.dest, Some(sa(f.rip[0], 53)));
            let data = payload(3000);
            let d = datagram(sa(f.cip, 5000), sa(f.vip, 53), &data, 0x1234, 64);
            let frags = fragments(&f, &d, 0x8765_4321);
            let mut sent = Vec::new();
            for (i, fr) in frags.iter().enumerate() {
                let out = run(&mut dp, &eth(fr), SEC + i as u64);
                assert_fragment_forwarded(
                    &format!("{name} fragment {i}"),
                    &f,
                    m,
                    &out.frame,
                    out.verdict,
                    1,
                    fr,
                );
                assert_eq!(
                    out.dest,
                    Some(sa(f.rip[1], 53)),
                    "{name} fragment {i}: dest"
                );
                assert!(out.extra.is_empty(), "{name} fragment {i}: nothing else");
                // The IP packet the dest gets (TUN: inside the outer header).
                let outer = match (m, f.vip.is_ipv4()) {
                    ("-i", true) => 20,
                    ("-i", false) => 40,
                    _ => 0,
                };
                sent.push(out.frame[14 + outer..].to_vec());
            }
            // What the dest receives is the datagram itself, hop limit one lower.
            assert_eq!(
                reassemble(&sent),
                ttl_minus_one(&d),
                "{name}: reassembled at the dest"
            );
            verify_checksums(&eth(&reassemble(&sent)));
            assert_eq!(
                dp.director().conns().len(),
                2,
                "{name}: one connection per datagram's flow"
            );
            assert_eq!(dp.counters().held, 0);
        }
    }
}

#[test]
fn dr_and_tun_hold_fragments_that_overtake_their_first_then_release_them_to_its_dest() {
    for f in FAMS {
        for m in ["-g", "-i"] {
            let name = format!("{} {m} out of order", f.name);
            let mut dp = dataplane(&rules(&f, m), &[]);
            let d = datagram(sa(f.cip, 5000), sa(f.vip, 53), &payload(3000), 0x2345, 64);
            let frags = fragments(&f, &d, 7);
            let n = frags.len();
            // The last, then the second arrive first: held, nothing forwarded.
            for i in [n - 1, 1] {
                let out = run(&mut dp, &eth(&frags[i]), SEC);
                assert_eq!(out.verdict, Verdict::Held, "{name}: fragment {i} held");
                assert!(
                    out.extra.is_empty() && out.dest.is_none(),
                    "{name}: fragment {i} not sent"
                );
            }
            assert_eq!(
                dp.director().conns().len(),
                0,
                "{name}: nothing scheduled from a non-first"
            );
            // The first: forwarded, and the held ones released behind it, in arrival order.
            let out = run(&mut dp, &eth(&frags[0]), SEC + 1);
            assert_fragment_forwarded(
                &format!("{name} first"),
                &f,
                m,
                &out.frame,
                out.verdict,
                0,
                &frags[0],
            );
            assert_eq!(out.extra.len(), 2, "{name}: released");
            for (t, i) in out.extra.iter().zip([n - 1, 1]) {
                assert_eq!(
                    t.next_hop, f.rip[0],
                    "{name}: released fragment {i} next hop"
                );
                assert!(!t.generated);
                assert_fragment_forwarded(
                    &format!("{name} released {i}"),
                    &f,
                    m,
                    t.frame.data(),
                    Verdict::Transmit {
                        next_hop: t.next_hop,
                    },
                    0,
                    &frags[i],
                );
            }
            // The rest follow directly.
            for (i, fr) in frags.iter().enumerate().take(n - 1).skip(2) {
                let out = run(&mut dp, &eth(fr), SEC + 2);
                assert_fragment_forwarded(
                    &format!("{name} fragment {i}"),
                    &f,
                    m,
                    &out.frame,
                    out.verdict,
                    0,
                    fr,
                );
            }
            let (tracker, _) = dp.frag_counters();
            assert_eq!(
                (
                    tracker.held,
                    tracker.released,
                    tracker.expired,
                    tracker.overflow
                ),
                (2, 2, 0, 0),
                "{name}: counters"
            );
            assert_eq!(dp.counters().held, 2, "{name}: held verdicts");
        }
    }
}

#[test]
fn non_first_fragments_are_never_scheduled_by_payload_bytes_that_look_like_ports() {
    for f in FAMS {
        let name = format!("{} DR", f.name);
        let mut dp = dataplane(&rules(&f, "-g"), &[]);
        let b = other_client(&f);
        // Client A already has a flow A:1111 -> VIP:53 on dest 0.
        let out = run(
            &mut dp,
            &eth(&udp(sa(f.cip, 1111), sa(f.vip, 53), b"hello")),
            SEC,
        );
        assert_eq!(out.dest, Some(sa(f.rip[0], 53)));
        // Two datagrams whose data, at every fragment boundary, reads "1111 -> 53": A's from port
        // 2222 (its first fragment goes to dest 1) and B's from port 1111 (dest 2).
        let looks_like_ports: Vec<u8> = [1111u16.to_be_bytes(), 53u16.to_be_bytes()]
            .concat()
            .repeat(750);
        let da = datagram(
            sa(f.cip, 2222),
            sa(f.vip, 53),
            &looks_like_ports,
            0x0a0a,
            64,
        );
        let db = datagram(sa(b, 1111), sa(f.vip, 53), &looks_like_ports, 0x0a0a, 64);
        let (fa, fb) = (fragments(&f, &da, 0x0a0a), fragments(&f, &db, 0x0a0a));
        for fr in fa[1..].iter().chain(&fb[1..]) {
            let data = &fr[if f.vip.is_ipv4() { 20 } else { 48 }..];
            assert_eq!(
                data[..4],
                looks_like_ports[..4],
                "{name}: the bait is in place"
            );
        }
        // B's later fragments overtake its first: held (not sent to A:1111's dest 0).
        for (i, fr) in fb.iter().enumerate().skip(1) {
            let out = run(&mut dp, &eth(fr), 2 * SEC);
            assert_eq!(out.verdict, Verdict::Held, "{name}: B fragment {i}");
        }
        // A's datagram in order: every fragment to dest 1.
        for (i, fr) in fa.iter().enumerate() {
            let out = run(&mut dp, &eth(fr), 2 * SEC);
            assert_eq!(out.dest, Some(sa(f.rip[1], 53)), "{name}: A fragment {i}");
            assert_fragment_forwarded(
                &format!("{name} A {i}"),
                &f,
                "-g",
                &out.frame,
                out.verdict,
                1,
                fr,
            );
        }
        // B's first: dest 2, and its held fragments with it.
        let out = run(&mut dp, &eth(&fb[0]), 2 * SEC);
        assert_eq!(out.dest, Some(sa(f.rip[2], 53)), "{name}: B first");
        assert_eq!(out.extra.len(), fb.len() - 1, "{name}: B released");
        assert!(
            out.extra.iter().all(|t| t.next_hop == f.rip[2]),
            "{name}: B's fragments to dest 2"
        );
        // Exactly three flows: no connection was made up from fragment data.
        assert_eq!(dp.director().conns().len(), 3, "{name}: connections");
    }
}

/// The NATed datagram the dest must receive: to RIP:5353, TTL − 1, checksums right.
fn nat_expected(f: &Fam, client: SocketAddr, data: &[u8], ident: u16) -> Vec<u8> {
    datagram(client, sa(f.rip[0], 5353), data, ident, 63)
}

#[test]
fn nat_reassembles_rewrites_and_fragments_again_to_the_mtu() {
    for f in FAMS {
        let c = sa(f.cip, 5000);
        let data = payload(3000);
        let d = datagram(c, sa(f.vip, 53), &data, 0x3456, 64);
        let frags = fragments(&f, &d, 99);
        let n = frags.len();
        // In order, and scrambled: a later fragment before the first (held by the tracker,
        // then reassembled), the last before the rest.
        let scrambled: Vec<usize> = [n - 2, 0, n - 1].into_iter().chain(1..n - 2).collect();
        for order in [(0..n).collect::<Vec<usize>>(), scrambled] {
            let name = format!("{} NAT order {order:?}", f.name);
            let mut dp = dataplane(&rules(&f, "-m"), &[]);
            let mut result = None;
            for (k, &i) in order.iter().enumerate() {
                let out = run(&mut dp, &eth(&frags[i]), SEC);
                assert_eq!(
                    out.verdict,
                    Verdict::Held,
                    "{name}: fragment {i} held for reassembly"
                );
                if k + 1 < order.len() {
                    assert!(
                        out.extra.is_empty(),
                        "{name}: nothing before the datagram is whole"
                    );
                } else {
                    result = Some(out.extra);
                }
            }
            let extra = result.unwrap();
            // 3028 bytes of IP through a 1500-byte MTU: fragmented again, all to the dest.
            assert!(extra.len() >= 3, "{name}: {} frames", extra.len());
            let sent = ip_of_extra(&name, &extra, f.rip[0], 1500);
            let whole = reassemble(&sent);
            assert_eq!(
                whole,
                nat_expected(&f, c, &data, 0x3456),
                "{name}: the NATed datagram, byte for byte"
            );
            verify_checksums(&eth(&whole));
            let (_, reasm) = dp.frag_counters();
            assert_eq!(reasm.reassembled, 1, "{name}: reassembled once");
            assert_eq!(dp.director().conns().len(), 1, "{name}: one connection");
        }
    }
}

#[test]
fn nat_sends_a_reassembled_datagram_that_fits_whole() {
    for f in FAMS {
        let name = format!("{} NAT fits", f.name);
        let mut dp = dataplane(&rules(&f, "-m"), &[]);
        let c = sa(f.cip, 5001);
        // 1400 bytes of data: over the sender's MTU, under the director's 1500.
        let data = payload(1400);
        let d = datagram(c, sa(f.vip, 53), &data, 0x4567, 64);
        let mut frags = Vec::new();
        if f.vip.is_ipv4() {
            fragment_ipv4(&d, 600, &mut frags).unwrap();
        } else {
            // IPv6 fragments are at least 1280 bytes: send it as a 1232 + 176 pair.
            fragment_ipv6(&d, 1280, 5, &mut frags).unwrap();
        }
        let n = frags.len();
        for (i, fr) in frags.iter().enumerate() {
            let out = run(&mut dp, &eth(fr), SEC);
            assert_eq!(out.verdict, Verdict::Held, "{name}: fragment {i}");
            if i + 1 == n {
                assert_eq!(out.extra.len(), 1, "{name}: one frame");
                assert_eq!(out.extra[0].next_hop, f.rip[0]);
                assert_eq!(
                    out.extra[0].frame.data(),
                    eth(&nat_expected(&f, c, &data, 0x4567)),
                    "{name}: whole datagram"
                );
                verify_checksums(out.extra[0].frame.data());
            }
        }
    }
}

#[test]
fn nat_reply_fragments_are_reassembled_and_rewritten_to_the_vip() {
    for f in FAMS {
        let name = format!("{} NAT reply", f.name);
        let mut dp = dataplane(&rules(&f, "-m"), &[]);
        let c = sa(f.cip, 5002);
        let out = run(&mut dp, &eth(&udp(c, sa(f.vip, 53), b"query")), SEC);
        assert_eq!(out.dest, Some(sa(f.rip[0], 5353)));
        // The dest answers with a big datagram, fragmented; a later fragment first.
        let data = payload(2500);
        let d = datagram(sa(f.rip[0], 5353), c, &data, 0x5678, 64);
        let frags = fragments(&f, &d, 0x5678);
        let order: Vec<usize> = (1..frags.len()).chain([0]).collect();
        let mut extra = Vec::new();
        for i in order {
            let out = run(&mut dp, &eth(&frags[i]), 2 * SEC);
            assert_eq!(out.verdict, Verdict::Held, "{name}: fragment {i}");
            extra = out.extra;
        }
        let sent = ip_of_extra(&name, &extra, f.cip, 1500);
        let whole = reassemble(&sent);
        assert_eq!(
            whole,
            datagram(sa(f.vip, 53), c, &data, 0x5678, 63),
            "{name}: from VIP:53"
        );
        verify_checksums(&eth(&whole));
    }
}

/// A hand-made fragment: IPv4 (no DF, MF `more`) or IPv6 with a Fragment header; `data` at
/// byte offset `offset` (a multiple of 8) of datagram `ident`, UDP.
fn raw_fragment(
    src: IpAddr,
    dst: IpAddr,
    ident: u32,
    offset: usize,
    more: bool,
    data: &[u8],
) -> Vec<u8> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut p = vec![0x45, 0];
            p.extend_from_slice(&((20 + data.len()) as u16).to_be_bytes());
            p.extend_from_slice(&(ident as u16).to_be_bytes());
            p.extend_from_slice(
                &(((offset / 8) as u16) | if more { 0x2000 } else { 0 }).to_be_bytes(),
            );
            p.extend_from_slice(&[64, 17, 0, 0]);
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            fix_ipv4_checksum(&mut p);
            p.extend_from_slice(data);
            p
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut p = vec![0x60, 0, 0, 0];
            p.extend_from_slice(&((8 + data.len()) as u16).to_be_bytes());
            p.extend_from_slice(&[44, 64]);
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            p.extend_from_slice(&[17, 0]);
            p.extend_from_slice(&((offset as u16) | u16::from(more)).to_be_bytes());
            p.extend_from_slice(&ident.to_be_bytes());
            p.extend_from_slice(data);
            p
        }
        _ => panic!("mixed families"),
    }
}

#[test]
fn fragments_for_an_address_that_is_not_a_vip_are_local() {
    for f in FAMS {
        let mut dp = dataplane(&rules(&f, "-g"), &[]);
        for dst in [f.dir, f.rip[2]] {
            let name = format!("{} to {dst}", f.name);
            let d = datagram(sa(f.cip, 5000), sa(dst, 53), &payload(3000), 0x6789, 64);
            let frags = fragments(&f, &d, 0x6789);
            // Later fragments first (nothing to wait for), then the first: all the host's.
            for i in (0..frags.len()).rev() {
                let out = run(&mut dp, &eth(&frags[i]), SEC);
                assert_eq!(out.verdict, Verdict::Local, "{name}: fragment {i}");
                assert_eq!(out.frame, eth(&frags[i]), "{name}: untouched");
                assert!(out.extra.is_empty());
            }
        }
        assert_eq!(dp.frag_counters().0.held, 0);
        assert_eq!(dp.director().conns().len(), 0);
    }
}

#[test]
fn held_fragments_are_bounded_and_what_overflows_or_expires_is_counted() {
    assert_eq!(DropReason::FragTooMany.name(), "frag_too_many");
    assert_eq!(DropReason::FragOverflow.name(), "frag_overflow");
    for f in FAMS {
        let name = format!("{} DR", f.name);
        let mut dp = dataplane(&rules(&f, "-g"), &[]);
        // 64 later fragments of one datagram are held; the 65th is refused.
        for k in 1..=65usize {
            let fr = raw_fragment(f.cip, f.vip, 0x77, k * 8, true, &[k as u8; 8]);
            let out = run(&mut dp, &eth(&fr), SEC);
            if k <= 64 {
                assert_eq!(out.verdict, Verdict::Held, "{name}: fragment {k}");
            } else {
                assert_eq!(
                    out.verdict,
                    Verdict::Drop(DropReason::FragTooMany),
                    "{name}: fragment {k}"
                );
            }
        }
        let (t, _) = dp.frag_counters();
        assert_eq!((t.held, t.overflow), (64, 1), "{name}: per-datagram limit");
        assert_eq!(dp.counters().drops(DropReason::FragTooMany), 1);
        // 1024 datagrams are tracked at once; the 1025th is refused.
        for id in 1..=1024u32 {
            let fr = raw_fragment(f.cip, f.vip, 0x1000 + id, 8, true, &[0; 8]);
            let out = run(&mut dp, &eth(&fr), SEC);
            let want = if id < 1024 {
                Verdict::Held
            } else {
                Verdict::Drop(DropReason::FragOverflow)
            };
            assert_eq!(out.verdict, want, "{name}: datagram {id}");
        }
        let (t, _) = dp.frag_counters();
        assert_eq!(
            (t.held, t.overflow),
            (64 + 1023, 2),
            "{name}: datagram limit"
        );
        assert_eq!(dp.counters().drops(DropReason::FragOverflow), 1);
        // Nothing came for them: 2 s later they are dropped, counted as expired.
        run(
            &mut dp,
            &eth(&udp(sa(f.cip, 1), sa(f.vip, 53), b"tick")),
            3 * SEC + 1,
        );
        let (t, _) = dp.frag_counters();
        assert_eq!(t.expired, 64 + 1023, "{name}: expired");
        // Room again.
        let fr = raw_fragment(f.cip, f.vip, 0x9999, 8, true, &[0; 8]);
        assert_eq!(
            run(&mut dp, &eth(&fr), 4 * SEC).verdict,
            Verdict::Held,
            "{name}: room again"
        );

        // NAT: the reassembler refuses a 65th fragment, and drops the datagram.
        let name = format!("{} NAT", f.name);
        let mut dp = dataplane(&rules(&f, "-m"), &[]);
        let first = datagram(sa(f.cip, 5000), sa(f.vip, 53), &[0; 8], 0x88, 64);
        // A first fragment by hand: the datagram's UDP header and 8 bytes, MF set.
        let head = raw_fragment(f.cip, f.vip, 0x88, 0, true, &first[first.len() - 16..]);
        assert_eq!(
            run(&mut dp, &eth(&head), SEC).verdict,
            Verdict::Held,
            "{name}: first"
        );
        for k in 2..=65usize {
            let fr = raw_fragment(f.cip, f.vip, 0x88, k * 8, true, &[k as u8; 8]);
            let want = if k <= 64 {
                Verdict::Held
            } else {
                Verdict::Drop(DropReason::FragTooMany)
            };
            assert_eq!(
                run(&mut dp, &eth(&fr), SEC).verdict,
                want,
                "{name}: fragment {k}"
            );
        }
        // The whole datagram went: its 64 stored fragments and the refused one are counted,
        // and its later fragments are refused too.
        let (_, r) = dp.frag_counters();
        assert_eq!(
            (r.held, r.overflow, r.reassembled),
            (64, 65, 0),
            "{name}: counters"
        );
        let fr = raw_fragment(f.cip, f.vip, 0x88, 66 * 8, false, &[0; 8]);
        assert_eq!(
            run(&mut dp, &eth(&fr), SEC).verdict,
            Verdict::Drop(DropReason::FragTooMany),
            "{name}: dead datagram"
        );
    }
}

#[test]
fn fragments_of_a_datagram_to_a_vip_port_without_service_all_reach_the_host() {
    for f in FAMS {
        let mut dp = dataplane(&rules(&f, "-g"), &[]);
        let name = f.name;
        // VIP port 54 has no service: the datagram is the host's, whatever order it comes in.
        let d = datagram(sa(f.cip, 5000), sa(f.vip, 54), &payload(3000), 0x2345, 64);
        let frags = fragments(&f, &d, 0x2345);
        let last = frags.len() - 1;
        // A later fragment first: for a VIP, so held until its first says whose it is.
        let out = run(&mut dp, &eth(&frags[last]), SEC);
        assert_eq!(out.verdict, Verdict::Held, "{name}: later fragment held");
        // The first: Local, and the held one is released to the host, untouched.
        let out = run(&mut dp, &eth(&frags[0]), SEC);
        assert_eq!(out.verdict, Verdict::Local, "{name}: first fragment");
        assert_eq!(out.frame, eth(&frags[0]));
        assert_eq!(out.extra.len(), 1, "{name}: held fragment released");
        assert!(
            out.extra[0].local && !out.extra[0].generated,
            "{name}: released to the host"
        );
        assert_eq!(out.extra[0].frame.data(), &eth(&frags[last])[..]);
        // The rest follow the first: Local, untouched, nothing held.
        for (i, fr) in frags.iter().enumerate().take(last).skip(1) {
            let out = run(&mut dp, &eth(fr), SEC);
            assert_eq!(out.verdict, Verdict::Local, "{name}: fragment {i}");
            assert_eq!(out.frame, eth(fr));
        }
        assert_eq!(dp.director().conns().len(), 0);
    }
}
