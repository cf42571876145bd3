//! IP fragments (`rvs_dataplane::frag`): the DR/TUN tracker, NAT reassembly and the fragmenters.
//!
//! Datagrams are built with etherparse (an independent implementation), split by our own
//! fragmenters or edited by hand, and reassembly must give back the very bytes of the original,
//! whose transport checksums are then verified with `rvs_wire::checksum`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::{
    IpHeaders, IpNumber, Ipv4Extensions, Ipv4Header, Ipv4Options, Ipv6Extensions, Ipv6FlowLabel,
    Ipv6Header, Ipv6RawExtHeader, Ipv6RoutingExtensions, PacketBuilder,
};
use proptest::prelude::*;
use rvs_dataplane::frag::{
    FragCounters, FragDrop, FragError, FragKey, FragLimits, FragTracker, Reassembler,
    fragment_ipv4, fragment_ipv6,
};
use rvs_wire::checksum;
use rvs_wire::parse::{Fragment, IpInfo, Transport, parse_ip};

const SEC: u64 = 1_000_000_000;
const V4_SRC: [u8; 4] = [192, 0, 2, 10];
const V4_DST: [u8; 4] = [198, 51, 100, 80];
const V6_SRC: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];
const V6_DST: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x80,
];

// ---------------------------------------------------------------------------------------------
// Builders.

fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// An IPv4 datagram built by etherparse: UDP (or TCP when `tcp`), identification `ident`,
/// optional IPv4 options.
fn v4(len: usize, ident: u16, tcp: bool, options: &[u8]) -> Vec<u8> {
    let mut h = Ipv4Header::new(0, 64, IpNumber::UDP, V4_SRC, V4_DST).unwrap();
    h.identification = ident;
    h.dont_fragment = false;
    h.options = Ipv4Options::try_from(options).unwrap();
    let b = PacketBuilder::ip(IpHeaders::Ipv4(h, Ipv4Extensions::default()));
    let mut out = Vec::new();
    if tcp {
        b.tcp(40000, 80, 0x0102_0304, 65535)
            .ack(7)
            .psh()
            .write(&mut out, &payload(len, 3))
            .unwrap();
    } else {
        b.udp(40000, 53).write(&mut out, &payload(len, 5)).unwrap();
    }
    out
}

/// The extension headers an IPv6 test packet may carry.
#[derive(Debug, Clone, Copy)]
struct Exts {
    hop_by_hop: bool,
    dest_before_routing: bool,
    routing: bool,
    dest_after_routing: bool,
}

const NO_EXTS: Exts = Exts {
    hop_by_hop: false,
    dest_before_routing: false,
    routing: false,
    dest_after_routing: false,
};

const ALL_EXTS: Exts = Exts {
    hop_by_hop: true,
    dest_before_routing: true,
    routing: true,
    dest_after_routing: true,
};

fn raw_ext(fill: u8, len: usize) -> Ipv6RawExtHeader {
    Ipv6RawExtHeader::new_raw(IpNumber(0), &vec![fill; len]).unwrap()
}

/// An IPv6 packet built by etherparse, with the chosen extension headers.
fn v6(len: usize, tcp: bool, e: Exts) -> Vec<u8> {
    let h = Ipv6Header {
        traffic_class: 0x28,
        flow_label: Ipv6FlowLabel::try_new(0x12345).unwrap(),
        payload_length: 0,
        next_header: IpNumber::UDP,
        hop_limit: 61,
        source: V6_SRC,
        destination: V6_DST,
    };
    // Hop-by-Hop: one PadN option; options contents are not interpreted by fragmentation.
    let mut exts = Ipv6Extensions {
        hop_by_hop_options: e
            .hop_by_hop
            .then(|| Ipv6RawExtHeader::new_raw(IpNumber(0), &[1, 4, 0, 0, 0, 0]).unwrap()),
        destination_options: e.dest_before_routing.then(|| {
            Ipv6RawExtHeader::new_raw(IpNumber(0), &[1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
                .unwrap()
        }),
        routing: None,
        fragment: None,
        auth: None,
    };
    if e.routing || e.dest_after_routing {
        // etherparse only writes final destination options together with a routing header.
        exts.routing = Some(Ipv6RoutingExtensions {
            routing: raw_ext(0, 6),
            final_destination_options: e.dest_after_routing.then(|| raw_ext(0x01, 14)),
        });
    }
    if let Some(r) = exts.routing.as_mut() {
        // Type 0 routing header, segments left 0: inert.
        r.routing = Ipv6RawExtHeader::new_raw(IpNumber(0), &[0, 0, 0, 0, 0, 0]).unwrap();
        if let Some(d) = r.final_destination_options.as_mut() {
            *d = Ipv6RawExtHeader::new_raw(
                IpNumber(0),
                &[1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            )
            .unwrap();
        }
    }
    let b = PacketBuilder::ip(IpHeaders::Ipv6(h, exts));
    let mut out = Vec::new();
    if tcp {
        b.tcp(40000, 443, 99, 1000)
            .syn()
            .write(&mut out, &payload(len, 7))
            .unwrap();
    } else {
        b.udp(40000, 53).write(&mut out, &payload(len, 9)).unwrap();
    }
    out
}

/// The packet's parse, as the dataplane would hand it to the reassembler.
///
/// rvs-wire's parse (through etherparse) walks the data of a non-first IPv6 fragment as
/// extension headers when the Fragment header's next header names one (Destination Options
/// after a Routing header, here), and fails; for those fragments the parse is built by hand from
/// the Fragment header, as a fixed parser would report it.
fn ip_of(packet: &[u8]) -> IpInfo {
    match parse_ip(packet) {
        Ok(f) => *f.ip().unwrap(),
        Err(e) => later_v6_fragment_info(packet).unwrap_or_else(|| panic!("{e:?}")),
    }
}

fn later_v6_fragment_info(p: &[u8]) -> Option<IpInfo> {
    if p.first()? >> 4 != 6 {
        return None;
    }
    let at = v6_frag_header_at(p);
    let field = u16::from_be_bytes([p[at + 2], p[at + 3]]);
    if field & 0xfff8 == 0 {
        return None;
    }
    let src: [u8; 16] = p[8..24].try_into().unwrap();
    let dst: [u8; 16] = p[24..40].try_into().unwrap();
    Some(IpInfo {
        src: IpAddr::V6(Ipv6Addr::from(src)),
        dst: IpAddr::V6(Ipv6Addr::from(dst)),
        protocol: p[at],
        ttl: p[7],
        l3_offset: 0,
        l4_offset: at + 8,
        l4_len: p.len() - at - 8,
        fragment: Some(Fragment {
            ident: u32::from_be_bytes(p[at + 4..at + 8].try_into().unwrap()),
            offset: field & 0xfff8,
            more: field & 1 != 0,
        }),
        transport: Transport::Fragment,
    })
}

/// True when the transport checksum of a whole datagram verifies (RFC 1071 over pseudo-header
/// and transport bytes).
fn l4_checksum_ok(packet: &[u8]) -> bool {
    let ip = ip_of(packet);
    assert!(ip.fragment.is_none());
    let l4 = &packet[ip.l4_offset..ip.end()];
    let acc = checksum::pseudo_header(ip.src, ip.dst, ip.protocol, l4.len() as u32);
    checksum::verify(checksum::sum(acc, l4))
}

fn frag4(datagram: &[u8], mtu: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    fragment_ipv4(datagram, mtu, &mut out).unwrap();
    out
}

fn frag6(packet: &[u8], mtu: usize, ident: u32) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    fragment_ipv6(packet, mtu, ident, &mut out).unwrap();
    out
}

/// Feed fragments in the given order; return every non-`None` result.
fn feed(r: &mut Reassembler, frags: &[Vec<u8>], now: u64) -> Vec<Vec<u8>> {
    frags
        .iter()
        .filter_map(|f| r.add(f, &ip_of(f), now).unwrap())
        .collect()
}

/// IPv4 fragment fields: (offset in bytes, MF, DF, IHL bytes).
fn v4_frag_fields(p: &[u8]) -> (usize, bool, bool, usize) {
    let ff = u16::from_be_bytes([p[6], p[7]]);
    (
        usize::from(ff & 0x1fff) * 8,
        ff & 0x2000 != 0,
        ff & 0x4000 != 0,
        usize::from(p[0] & 0x0f) * 4,
    )
}

fn fix_v4_checksum(p: &mut [u8]) {
    let ihl = usize::from(p[0] & 0x0f) * 4;
    p[10] = 0;
    p[11] = 0;
    let c = checksum::checksum(&p[..ihl]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
}

/// Offset of the Fragment header in a packet from `fragment_ipv6` (after the unfragmentable part).
fn v6_frag_header_at(p: &[u8]) -> usize {
    let mut nh = p[6];
    let mut at = 40;
    while nh != 44 {
        nh = p[at];
        at += (usize::from(p[at + 1]) + 1) * 8;
    }
    at
}

fn limits() -> FragLimits {
    FragLimits::default()
}

fn key4(ident: u32) -> FragKey {
    FragKey {
        src: IpAddr::V4(Ipv4Addr::from(V4_SRC)),
        dst: IpAddr::V4(Ipv4Addr::from(V4_DST)),
        protocol: 17,
        ident,
    }
}

// ---------------------------------------------------------------------------------------------
// FragKey, limits, names.

#[test]
fn key_of_fragments_only_and_equal_for_all_fragments_of_a_datagram() {
    let d = v4(3000, 0x4242, false, &[]);
    assert_eq!(FragKey::of(&ip_of(&d)), None);
    let keys: Vec<_> = frag4(&d, 1500)
        .iter()
        .map(|f| FragKey::of(&ip_of(f)).unwrap())
        .collect();
    assert_eq!(keys.len(), 3);
    assert!(keys.iter().all(|k| *k == key4(0x4242)));

    // IPv6: the same key for every fragment, even with Destination Options after the
    // Fragment header (the first fragment's parse reports UDP, later ones do not).
    let p = v6(3000, false, ALL_EXTS);
    let frags = frag6(&p, 1280, 0xdead_beef);
    let keys: Vec<_> = frags
        .iter()
        .map(|f| FragKey::of(&ip_of(f)).unwrap())
        .collect();
    assert!(keys.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(keys[0].ident, 0xdead_beef);
    assert_eq!(keys[0].src, IpAddr::V6(Ipv6Addr::from(V6_SRC)));
}

#[test]
fn defaults_and_names() {
    let l = FragLimits::default();
    assert_eq!(
        (
            l.max_datagrams,
            l.max_bytes,
            l.max_frags_per_datagram,
            l.timeout
        ),
        (1024, 4 << 20, 64, 2 * SEC)
    );
    let names: Vec<_> = [
        FragDrop::Overflow,
        FragDrop::TooManyFragments,
        FragDrop::Overlap,
        FragDrop::TooBig,
        FragDrop::Malformed,
    ]
    .iter()
    .map(FragDrop::name)
    .collect();
    assert_eq!(
        names,
        [
            "overflow",
            "too_many_fragments",
            "overlap",
            "too_big",
            "malformed"
        ]
    );
    assert_eq!(FragError::DontFragment.name(), "dont_fragment");
    assert_eq!(FragError::MtuTooSmall.name(), "mtu_too_small");
    assert_eq!(FragError::AlreadyFragmented.name(), "already_fragmented");
    assert_eq!(FragError::Malformed.name(), "malformed");
}

// ---------------------------------------------------------------------------------------------
// FragTracker (DR / TUN).

#[test]
fn tracker_in_order_follows_the_first_fragment() {
    let mut t = FragTracker::<u32>::new(limits());
    assert_eq!(t.lookup(&key4(1), 0), None);
    assert!(t.decided(key4(1), 7, 10).is_empty());
    assert_eq!(t.lookup(&key4(1), 11), Some(7));
    assert_eq!(t.lookup(&key4(1), 12), Some(7));
    // Other datagrams are not confused with it: identification, protocol, addresses.
    assert_eq!(t.lookup(&key4(2), 12), None);
    let mut k = key4(1);
    k.protocol = 6;
    assert_eq!(t.lookup(&k, 12), None);
    let mut k = key4(1);
    k.src = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 11));
    assert_eq!(t.lookup(&k, 12), None);
    assert_eq!(t.counters(), FragCounters::default());
    assert_eq!(t.datagrams(), 1);
}

#[test]
fn tracker_holds_early_fragments_and_releases_them_in_arrival_order() {
    let mut t = FragTracker::<u32>::new(limits());
    let frames = [vec![3u8; 100], vec![1u8; 60], vec![2u8; 80]];
    for f in &frames {
        assert_eq!(t.lookup(&key4(9), 5), None);
        t.hold(key4(9), f, 5).unwrap();
    }
    // Another datagram's held fragment is not released with this one.
    t.hold(key4(10), &[0xee; 10], 5).unwrap();
    assert_eq!(t.held_bytes(), 250);
    let released = t.decided(key4(9), 42, 6);
    assert_eq!(released, frames);
    assert_eq!(t.lookup(&key4(9), 7), Some(42));
    assert_eq!(t.held_bytes(), 10);
    let c = t.counters();
    assert_eq!((c.held, c.released, c.expired, c.overflow), (4, 3, 0, 0));
    // A second decision for the key (a new datagram reusing the identification) replaces it.
    assert!(t.decided(key4(9), 43, 8).is_empty());
    assert_eq!(t.lookup(&key4(9), 8), Some(43));
}

#[test]
fn tracker_limits_count_overflow() {
    // Datagrams.
    let mut t = FragTracker::<u8>::new(FragLimits {
        max_datagrams: 2,
        ..limits()
    });
    t.hold(key4(1), &[1; 10], 0).unwrap();
    t.hold(key4(2), &[2; 10], 0).unwrap();
    assert_eq!(t.hold(key4(3), &[3; 10], 0), Err(FragDrop::Overflow));
    assert_eq!(t.datagrams(), 2);
    assert_eq!(t.counters().overflow, 1);
    // A decision evicts the oldest datagram rather than being lost; its held fragment counts.
    assert!(t.decided(key4(3), 3, 1).is_empty());
    assert_eq!(t.lookup(&key4(3), 1), Some(3));
    assert_eq!(t.datagrams(), 2);
    assert_eq!(t.counters().overflow, 2);
    assert_eq!(t.decided(key4(2), 2, 1), vec![vec![2; 10]]);
    assert!(t.decided(key4(1), 1, 1).is_empty(), "key 1 was evicted");

    // Bytes.
    let mut t = FragTracker::<u8>::new(FragLimits {
        max_bytes: 100,
        ..limits()
    });
    t.hold(key4(1), &[0; 60], 0).unwrap();
    assert_eq!(t.hold(key4(1), &[0; 41], 0), Err(FragDrop::Overflow));
    assert_eq!(t.hold(key4(2), &[0; 41], 0), Err(FragDrop::Overflow));
    t.hold(key4(2), &[0; 40], 0).unwrap();
    assert_eq!(t.held_bytes(), 100);
    assert_eq!(t.counters().overflow, 2);
    // Releasing frees the bytes.
    assert_eq!(t.decided(key4(1), 1, 0).len(), 1);
    t.hold(key4(3), &[0; 60], 0).unwrap();

    // Fragments per datagram.
    let mut t = FragTracker::<u8>::new(FragLimits {
        max_frags_per_datagram: 2,
        ..limits()
    });
    t.hold(key4(1), &[1], 0).unwrap();
    t.hold(key4(1), &[2], 0).unwrap();
    assert_eq!(t.hold(key4(1), &[3], 0), Err(FragDrop::TooManyFragments));
    assert_eq!(t.counters().overflow, 1);
    assert_eq!(t.decided(key4(1), 0, 0), vec![vec![1], vec![2]]);
}

#[test]
fn tracker_expiry_drops_held_and_forgets_decisions() {
    let l = FragLimits {
        timeout: 1000,
        ..limits()
    };
    let mut t = FragTracker::<u8>::new(l);
    t.hold(key4(1), &[1; 10], 0).unwrap();
    t.hold(key4(1), &[2; 10], 500).unwrap();
    assert!(t.decided(key4(2), 2, 100).is_empty());
    t.expire(999);
    assert_eq!(t.held_bytes(), 20);
    // The timer runs from the datagram's first held fragment.
    t.expire(1000);
    assert_eq!(t.held_bytes(), 0);
    assert_eq!(t.counters().expired, 2);
    assert_eq!(t.lookup(&key4(2), 1099), Some(2));
    // Lookups see the timeout even if expire was not called since.
    assert_eq!(t.lookup(&key4(2), 1100), None);
    assert_eq!(t.datagrams(), 0);
    // The first fragment comes too late: nothing to release.
    assert!(t.decided(key4(1), 1, 1200).is_empty());
    // Lookups do not extend a decision's life; a new decision does.
    assert_eq!(t.lookup(&key4(1), 2199), Some(1));
    assert_eq!(t.lookup(&key4(1), 2200), None);
    assert!(t.decided(key4(1), 1, 2300).is_empty());
    assert!(t.decided(key4(1), 5, 3000).is_empty());
    assert_eq!(t.lookup(&key4(1), 3999), Some(5));
    let c = t.counters();
    assert_eq!((c.held, c.released, c.expired, c.overflow), (2, 0, 2, 0));
}

#[derive(Debug, Clone)]
enum Op {
    Hold(u8, usize),
    Decide(u8),
    Lookup(u8),
    Expire,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..24, 0usize..700).prop_map(|(k, n)| Op::Hold(k, n)),
        2 => (0u8..24).prop_map(Op::Decide),
        2 => (0u8..24).prop_map(Op::Lookup),
        1 => Just(Op::Expire),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Whatever the sequence of calls, the tracker stays within its limits, every held
    /// fragment is accounted for (released, expired or dropped), decisions come back as given,
    /// and released fragments are the ones held for that key, in arrival order.
    #[test]
    fn tracker_never_exceeds_limits(ops in proptest::collection::vec((op(), 0u64..400), 1..300)) {
        let l = FragLimits { max_datagrams: 8, max_bytes: 3000, max_frags_per_datagram: 5, timeout: 1000 };
        let mut t = FragTracker::<u8>::new(l);
        let mut now = 0;
        let mut refused = 0;
        let mut seq = 0u32;
        // Model: what each key holds, in arrival order (frames are tagged with a sequence number).
        let mut model: std::collections::HashMap<u8, Vec<Vec<u8>>> = Default::default();
        for (o, dt) in ops {
            now += dt;
            match o {
                Op::Hold(k, n) => {
                    seq += 1;
                    let mut f = seq.to_be_bytes().to_vec();
                    f.resize(4 + n, k);
                    match t.hold(key4(u32::from(k)), &f, now) {
                        Ok(()) => model.entry(k).or_default().push(f),
                        Err(_) => refused += 1,
                    }
                }
                Op::Decide(k) => {
                    let released = t.decided(key4(u32::from(k)), k, now);
                    // Released frames are a suffix-free prefix of what the model held for k:
                    // in arrival order, each only once (expiry or eviction may have dropped some).
                    let held = model.remove(&k).unwrap_or_default();
                    if !released.is_empty() {
                        prop_assert_eq!(&released[..], &held[held.len() - released.len()..]);
                    }
                    prop_assert_eq!(t.lookup(&key4(u32::from(k)), now), Some(k));
                }
                Op::Lookup(k) => {
                    if let Some(d) = t.lookup(&key4(u32::from(k)), now) {
                        prop_assert_eq!(d, k);
                    }
                }
                Op::Expire => t.expire(now),
            }
            prop_assert!(t.datagrams() <= l.max_datagrams);
            prop_assert!(t.held_bytes() <= l.max_bytes);
        }
        t.expire(now + l.timeout);
        prop_assert_eq!(t.datagrams(), 0);
        prop_assert_eq!(t.held_bytes(), 0);
        let c = t.counters();
        prop_assert_eq!(c.held, c.released + c.expired + (c.overflow - refused));
    }
}

// ---------------------------------------------------------------------------------------------
// Reassembler (NAT).

#[test]
fn reassembles_ipv4_in_order_and_reversed_to_the_original_bytes() {
    for tcp in [false, true] {
        let d = v4(4000, 0x1234, tcp, &[]);
        assert!(l4_checksum_ok(&d));
        let frags = frag4(&d, 1500);
        assert_eq!(frags.len(), 3);
        let mut r = Reassembler::new(limits());
        let out = feed(&mut r, &frags, 0);
        assert_eq!(out, vec![d.clone()]);
        assert!(l4_checksum_ok(&out[0]));
        let mut rev = frags.clone();
        rev.reverse();
        let out = feed(&mut r, &rev, 1);
        assert_eq!(out, vec![d.clone()]);
        let c = r.counters();
        assert_eq!((c.held, c.released, c.reassembled, c.bad), (6, 6, 2, 0));
        assert_eq!((r.datagrams(), r.held_bytes()), (0, 0));
    }
}

#[test]
fn reassembles_ipv4_with_options_keeping_the_first_fragments_header() {
    // Loose Source Route (copied) and Record Route (not copied), padded with NOPs.
    let opts = [131, 7, 4, 10, 0, 0, 1, 7, 7, 4, 0, 0, 0, 0, 1, 1];
    let d = v4(3000, 77, false, &opts);
    let frags = frag4(&d, 576);
    let mut r = Reassembler::new(limits());
    let mut rev = frags.clone();
    rev.reverse();
    assert_eq!(feed(&mut r, &rev, 0), vec![d.clone()]);
}

#[test]
fn reassembles_ipv6_with_extension_headers_to_the_original_bytes() {
    for e in [
        NO_EXTS,
        ALL_EXTS,
        Exts {
            hop_by_hop: true,
            ..NO_EXTS
        },
        Exts {
            routing: true,
            ..NO_EXTS
        },
    ] {
        for tcp in [false, true] {
            let p = v6(5000, tcp, e);
            assert!(l4_checksum_ok(&p));
            let frags = frag6(&p, 1280, 0x0102_0304);
            assert_eq!(frags.len(), 5, "{e:?}");
            let mut r = Reassembler::new(limits());
            let out = feed(&mut r, &frags, 0);
            assert_eq!(out, vec![p.clone()], "{e:?}");
            assert!(l4_checksum_ok(&out[0]));
            let mut rev = frags.clone();
            rev.reverse();
            assert_eq!(feed(&mut r, &rev, 0), vec![p.clone()]);
            assert_eq!(r.counters().reassembled, 2);
        }
    }
}

#[test]
fn whole_packets_and_atomic_fragments_come_back_at_once() {
    let mut r = Reassembler::new(limits());
    let d = v4(100, 1, false, &[]);
    let mut padded = d.clone();
    padded.extend_from_slice(&[0; 6]); // link padding is not part of the datagram
    assert_eq!(r.add(&padded, &ip_of(&padded), 0), Ok(Some(d)));

    // An IPv6 atomic fragment (offset 0, M = 0, RFC 6946): the Fragment header is removed.
    let p = v6(100, false, NO_EXTS);
    let mut atomic = p[..40].to_vec();
    atomic[6] = 44;
    atomic.extend_from_slice(&[17, 0, 0, 0, 0, 0, 0, 9]);
    atomic.extend_from_slice(&p[40..]);
    let pl = (atomic.len() - 40) as u16;
    atomic[4..6].copy_from_slice(&pl.to_be_bytes());
    let ip = ip_of(&atomic);
    assert_eq!(ip.fragment, None);
    assert_eq!(r.add(&atomic, &ip, 0), Ok(Some(p)));
    assert_eq!(r.counters(), FragCounters::default());
}

/// An order of `n` fragments with some repeated: (fragment index) sequence.
fn order(n: usize, keys: &[u32], dups: &[(usize, usize)]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    idx.sort_by_key(|&i| keys[i % keys.len()].wrapping_mul(2_654_435_761) ^ i as u32);
    for &(which, at) in dups {
        let f = which % n;
        idx.insert(at % (idx.len() + 1), f);
    }
    idx
}

/// Feed `frags` in `order` (indices, repeats allowed): the datagram must come out exactly when
/// the last missing fragment arrives, never before.
fn feed_until_complete(
    r: &mut Reassembler,
    frags: &[Vec<u8>],
    order: &[usize],
) -> Result<Vec<u8>, TestCaseError> {
    let mut seen = vec![false; frags.len()];
    let mut missing = frags.len();
    for &i in order {
        if !seen[i] {
            seen[i] = true;
            missing -= 1;
        }
        let f = &frags[i];
        let got = r.add(f, &ip_of(f), 0);
        prop_assert!(got.is_ok(), "fragment {} refused: {:?}", i, got);
        match got.unwrap() {
            Some(d) => {
                prop_assert_eq!(missing, 0, "complete with fragments missing");
                // A datagram that needed no fragmenting comes back as it is, uncounted.
                prop_assert_eq!(r.counters().reassembled, u64::from(frags.len() > 1));
                return Ok(d);
            }
            None => prop_assert!(missing > 0, "all fragments seen, no datagram"),
        }
    }
    Err(TestCaseError::fail("never completed"))
}

fn big_limits() -> FragLimits {
    FragLimits {
        max_frags_per_datagram: 2048,
        ..limits()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any order, with duplicates anywhere: exactly one datagram comes out, byte-identical to
    /// the original, with a valid transport checksum. (A duplicate arriving after completion
    /// starts a new datagram, which can only time out.)
    #[test]
    fn ipv4_any_order_with_duplicates(
        len in 0usize..9000,
        mtu in 68usize..1500,
        tcp in any::<bool>(),
        keys in proptest::collection::vec(any::<u32>(), 1..64),
        dups in proptest::collection::vec((any::<usize>(), any::<usize>()), 0..6),
    ) {
        let d = v4(len, 0xbeef, tcp, &[]);
        let frags = frag4(&d, mtu);
        let mut r = Reassembler::new(big_limits());
        let out = feed_until_complete(&mut r, &frags, &order(frags.len(), &keys, &dups))?;
        prop_assert_eq!(&out, &d);
        prop_assert!(l4_checksum_ok(&out));
        prop_assert_eq!(r.counters().bad, 0);
        prop_assert_eq!((r.datagrams(), r.held_bytes()), (0, 0));
    }

    #[test]
    fn ipv6_any_order_with_duplicates(
        len in 0usize..20000,
        mtu in 1280usize..1500,
        tcp in any::<bool>(),
        exts in (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()),
        keys in proptest::collection::vec(any::<u32>(), 1..64),
        dups in proptest::collection::vec((any::<usize>(), any::<usize>()), 0..6),
    ) {
        let e = Exts { hop_by_hop: exts.0, dest_before_routing: exts.1, routing: exts.2, dest_after_routing: exts.3 };
        let p = v6(len, tcp, e);
        let mut frags = Vec::new();
        fragment_ipv6(&p, mtu, 0x5a5a_0001, &mut frags).unwrap();
        if p.len() <= mtu {
            prop_assert_eq!(&frags, &vec![p.clone()]);
            return Ok(());
        }
        let mut r = Reassembler::new(big_limits());
        let out = feed_until_complete(&mut r, &frags, &order(frags.len(), &keys, &dups))?;
        prop_assert_eq!(&out, &p);
        prop_assert!(l4_checksum_ok(&out));
        prop_assert_eq!((r.datagrams(), r.held_bytes()), (0, 0));
    }
}

#[test]
fn ipv6_overlap_drops_the_whole_datagram_rfc5722() {
    let p = v6(4000, false, NO_EXTS);
    let frags = frag6(&p, 1280, 5);
    assert_eq!(frags.len(), 4);
    // Fragment 1 moved back by 8 bytes overlaps fragment 0.
    let mut overlapping = frags[1].clone();
    let at = v6_frag_header_at(&overlapping);
    let field = u16::from_be_bytes([overlapping[at + 2], overlapping[at + 3]]);
    overlapping[at + 2..at + 4].copy_from_slice(&(field - 8).to_be_bytes());

    let mut r = Reassembler::new(limits());
    assert_eq!(r.add(&frags[0], &ip_of(&frags[0]), 0), Ok(None));
    assert_eq!(r.add(&frags[2], &ip_of(&frags[2]), 0), Ok(None));
    assert_eq!(
        r.add(&overlapping, &ip_of(&overlapping), 0),
        Err(FragDrop::Overlap)
    );
    assert_eq!(r.held_bytes(), 0);
    // The rest of the datagram, even its genuine fragments, is discarded too.
    for f in [&frags[1], &frags[3], &frags[0]] {
        assert_eq!(r.add(f, &ip_of(f), 1), Err(FragDrop::Overlap));
    }
    let c = r.counters();
    assert_eq!((c.held, c.bad, c.reassembled), (2, 2 + 1 + 3, 0));
    // Until its timeout; afterwards the key starts afresh.
    assert_eq!(feed(&mut r, &frags, 2 * SEC), vec![p.clone()]);

    // Unlike IPv4, even an overlap carrying the same bytes drops the datagram: the same packet
    // fragmented for two MTUs.
    let wider = frag6(&p, 1400, 5);
    let mut r = Reassembler::new(limits());
    assert_eq!(r.add(&frags[1], &ip_of(&frags[1]), 0), Ok(None));
    assert_eq!(
        r.add(&wider[0], &ip_of(&wider[0]), 0),
        Err(FragDrop::Overlap)
    );

    // An exact duplicate is not an overlap (RFC 8200 §4.5).
    let mut r = Reassembler::new(limits());
    let mut seq = frags.clone();
    seq.insert(1, frags[0].clone());
    seq.insert(3, frags[2].clone());
    assert_eq!(feed(&mut r, &seq, 0), vec![p.clone()]);
    // The same range with other bytes is.
    let mut r = Reassembler::new(limits());
    let mut changed = frags[2].clone();
    *changed.last_mut().unwrap() ^= 0xff;
    feed(&mut r, &frags[..3], 0);
    assert_eq!(r.add(&changed, &ip_of(&changed), 0), Err(FragDrop::Overlap));
}

#[test]
fn ipv4_consistent_overlaps_are_accepted_inconsistent_ones_drop_the_datagram() {
    let d = v4(5000, 900, false, &[]);
    // The same datagram fragmented at two MTUs: the pieces overlap, with the same bytes.
    let a = frag4(&d, 1500);
    let b = frag4(&d, 1004);
    let mut r = Reassembler::new(limits());
    assert_eq!((a.len(), b.len()), (4, 6));
    let mixed = [
        b[1].clone(),
        a[1].clone(),
        a[0].clone(),
        b[4].clone(),
        b[3].clone(),
        a[3].clone(),
    ];
    let out = feed(&mut r, &mixed[..3], 0);
    assert!(out.is_empty());
    // A fragment wholly inside what is held adds nothing and is not stored.
    assert_eq!(r.add(&b[0], &ip_of(&b[0]), 0), Ok(None));
    assert_eq!(r.counters().held, 3);
    let out = feed(&mut r, &mixed[3..], 0);
    assert_eq!(out, vec![d.clone()]);
    assert_eq!(r.counters().bad, 0);
    assert_eq!(r.counters().released, 6);

    // Different bytes over the same range: the datagram is dropped.
    let mut r = Reassembler::new(limits());
    let mut evil = b[1].clone();
    let n = evil.len();
    evil[n - 1] ^= 0x55;
    assert_eq!(r.add(&a[1], &ip_of(&a[1]), 0), Ok(None));
    assert_eq!(r.add(&a[0], &ip_of(&a[0]), 0), Ok(None));
    assert_eq!(r.add(&evil, &ip_of(&evil), 0), Err(FragDrop::Overlap));
    assert_eq!(
        r.add(&a[2], &ip_of(&a[2]), 0),
        Err(FragDrop::Overlap),
        "the datagram stays dropped"
    );
    assert_eq!(r.held_bytes(), 0);
    assert_eq!(r.counters().bad, 2 + 1 + 1);
}

#[test]
fn contradicting_ends_are_malformed() {
    let d = v4(3000, 31, false, &[]);
    let frags = frag4(&d, 1500);
    // Last fragment claims the datagram ends before data already held.
    let mut short_last = frags[2].clone();
    short_last[6..8].copy_from_slice(&(8u16).to_be_bytes()); // offset 64 bytes, MF = 0
    fix_v4_checksum(&mut short_last);
    let mut r = Reassembler::new(limits());
    r.add(&frags[1], &ip_of(&frags[1]), 0).unwrap();
    assert_eq!(
        r.add(&short_last, &ip_of(&short_last), 0),
        Err(FragDrop::Malformed)
    );
    assert_eq!(r.counters().bad, 2);

    // Data beyond a known end.
    let mut r = Reassembler::new(limits());
    r.add(&frags[2], &ip_of(&frags[2]), 0).unwrap();
    let mut beyond = frags[1].clone();
    let (off, ..) = v4_frag_fields(&frags[2]);
    beyond[6..8].copy_from_slice(&(0x2000 | (off as u16 / 8)).to_be_bytes());
    fix_v4_checksum(&mut beyond);
    assert_eq!(r.add(&beyond, &ip_of(&beyond), 0), Err(FragDrop::Malformed));
}

#[test]
fn malformed_fragments_are_refused_alone() {
    let d = v4(3000, 8, false, &[]);
    let frags = frag4(&d, 1500);
    let mut r = Reassembler::new(limits());
    r.add(&frags[0], &ip_of(&frags[0]), 0).unwrap();

    // A non-last fragment whose length is not a multiple of 8.
    let mut odd = frags[1].clone();
    odd.truncate(odd.len() - 3);
    let len = odd.len() as u16;
    odd[2..4].copy_from_slice(&len.to_be_bytes());
    fix_v4_checksum(&mut odd);
    assert_eq!(r.add(&odd, &ip_of(&odd), 0), Err(FragDrop::Malformed));

    // A wrong IPv4 header checksum.
    let mut bad_sum = frags[1].clone();
    bad_sum[10] ^= 1;
    let ip = ip_of(&bad_sum);
    assert_eq!(r.add(&bad_sum, &ip, 0), Err(FragDrop::Malformed));

    // A parse that is not this packet's.
    assert_eq!(
        r.add(&frags[1], &ip_of(&frags[2]), 0),
        Err(FragDrop::Malformed)
    );
    let other = v4(10, 8, false, &[]);
    assert_eq!(
        r.add(&frags[1], &ip_of(&other), 0),
        Err(FragDrop::Malformed)
    );
    // Garbage.
    assert_eq!(r.add(&[], &ip_of(&frags[1]), 0), Err(FragDrop::Malformed));

    // The datagram itself is unharmed.
    assert_eq!(feed(&mut r, &frags[1..], 0), vec![d]);
    assert_eq!(r.counters().bad, 5);
}

#[test]
fn datagrams_over_65535_bytes_are_too_big() {
    // IPv4: a last fragment at offset 65528 with 100 bytes of data.
    let d = v4(3000, 66, false, &[]);
    let frags = frag4(&d, 1500);
    let mut r = Reassembler::new(limits());
    r.add(&frags[0], &ip_of(&frags[0]), 0).unwrap();
    let mut huge = frags[2].clone();
    huge[6..8].copy_from_slice(&0x1fffu16.to_be_bytes());
    fix_v4_checksum(&mut huge);
    assert_eq!(r.add(&huge, &ip_of(&huge), 0), Err(FragDrop::TooBig));
    assert_eq!(r.held_bytes(), 0, "the datagram is dropped");
    assert_eq!(
        r.add(&frags[1], &ip_of(&frags[1]), 0),
        Err(FragDrop::TooBig)
    );

    // The datagram takes the first fragment's header: 60 bytes with options, where a later
    // fragment has 20, so a last fragment that fits with its own header may not with the first's.
    let opts = [7, 39, 4]
        .iter()
        .copied()
        .chain([0; 37])
        .collect::<Vec<u8>>();
    let d = v4(3000, 67, false, &opts);
    let frags = frag4(&d, 1500);
    assert_eq!(v4_frag_fields(&frags[0]).3, 60);
    let mut last = frags[1][..23].to_vec();
    last[2..4].copy_from_slice(&23u16.to_be_bytes());
    last[6..8].copy_from_slice(&8189u16.to_be_bytes()); // offset 65512, MF = 0: 20 + 65515
    fix_v4_checksum(&mut last);
    for order in [[&frags[0], &last], [&last, &frags[0]]] {
        let mut r = Reassembler::new(limits());
        assert_eq!(r.add(order[0], &ip_of(order[0]), 0), Ok(None));
        assert_eq!(r.add(order[1], &ip_of(order[1]), 0), Err(FragDrop::TooBig));
        assert_eq!(
            (r.held_bytes(), r.counters().held, r.counters().bad),
            (0, 1, 2)
        );
    }

    // IPv6: offset 65528 with 16 bytes.
    let p = v6(3000, false, NO_EXTS);
    let frags = frag6(&p, 1280, 1);
    let mut huge = frags[2][..40 + 8 + 16].to_vec();
    huge[4..6].copy_from_slice(&24u16.to_be_bytes());
    huge[42..44].copy_from_slice(&0xfff8u16.to_be_bytes());
    let mut r = Reassembler::new(limits());
    assert_eq!(r.add(&huge, &ip_of(&huge), 0), Err(FragDrop::TooBig));
    // 65535 exactly is fine: offset 65520 + 15 bytes.
    huge[42..44].copy_from_slice(&0xfff0u16.to_be_bytes());
    huge.truncate(40 + 8 + 15);
    huge[4..6].copy_from_slice(&23u16.to_be_bytes());
    assert_eq!(r.add(&huge, &ip_of(&huge), 0), Ok(None));
}

#[test]
fn reassembly_times_out() {
    let l = FragLimits {
        timeout: SEC,
        ..limits()
    };
    let d = v4(3000, 12, false, &[]);
    let frags = frag4(&d, 1500);
    let mut r = Reassembler::new(l);
    feed(&mut r, &frags[..2], 0);
    assert!(r.held_bytes() > 2900);
    // Later fragments do not extend the timer.
    r.expire(SEC - 1);
    assert_eq!(r.datagrams(), 1);
    r.expire(SEC);
    assert_eq!((r.datagrams(), r.held_bytes()), (0, 0));
    assert_eq!(r.counters().expired, 2);
    // The last fragment alone, after the timeout, completes nothing.
    assert_eq!(feed(&mut r, &frags[2..], SEC), Vec::<Vec<u8>>::new());
    // Without an explicit expire: an add past the deadline starts the datagram afresh.
    assert_eq!(
        feed(&mut r, &frags[..2], 2 * SEC + 5),
        Vec::<Vec<u8>>::new()
    );
    assert_eq!(r.counters().expired, 3);
    assert_eq!(feed(&mut r, &frags[2..], 2 * SEC + 6), vec![d]);
}

#[test]
fn reassembly_limits() {
    let d1 = v4(3000, 1, false, &[]);
    let d2 = v4(3000, 2, false, &[]);
    let f1 = frag4(&d1, 1500);
    let f2 = frag4(&d2, 1500);

    // Datagrams: a new one is refused, the one in progress is not evicted.
    let mut r = Reassembler::new(FragLimits {
        max_datagrams: 1,
        ..limits()
    });
    r.add(&f1[0], &ip_of(&f1[0]), 0).unwrap();
    assert_eq!(r.add(&f2[0], &ip_of(&f2[0]), 0), Err(FragDrop::Overflow));
    assert_eq!(feed(&mut r, &f1[1..], 0), vec![d1.clone()]);
    assert_eq!(feed(&mut r, &f2, 0), vec![d2.clone()]);
    assert_eq!(r.counters().overflow, 1);

    // Bytes: the fragment is refused, the datagram may still complete once room is made.
    let mut r = Reassembler::new(FragLimits {
        max_bytes: 2000,
        ..limits()
    });
    r.add(&f1[0], &ip_of(&f1[0]), 0).unwrap();
    assert_eq!(r.add(&f1[1], &ip_of(&f1[1]), 0), Err(FragDrop::Overflow));
    assert!(r.held_bytes() <= 2000);
    assert_eq!(r.add(&f2[1], &ip_of(&f2[1]), 0), Err(FragDrop::Overflow));
    assert_eq!(r.datagrams(), 1, "no empty datagram left behind");

    // Fragments per datagram: the datagram is dropped.
    let mut r = Reassembler::new(FragLimits {
        max_frags_per_datagram: 2,
        ..limits()
    });
    feed(&mut r, &f1[..2], 0);
    assert_eq!(
        r.add(&f1[2], &ip_of(&f1[2]), 0),
        Err(FragDrop::TooManyFragments)
    );
    assert_eq!(r.held_bytes(), 0);
    assert_eq!(r.counters().overflow, 3);
    assert_eq!(
        r.add(&f1[0], &ip_of(&f1[0]), 0),
        Err(FragDrop::TooManyFragments)
    );

    // The default allows a 64 KiB IPv6 datagram at the minimum MTU.
    let p = v6(65000, false, NO_EXTS);
    let frags = frag6(&p, 1280, 3);
    let mut r = Reassembler::new(limits());
    assert_eq!(feed(&mut r, &frags, 0), vec![p]);
}

// ---------------------------------------------------------------------------------------------
// Fragmenting.

/// Check IPv4 pieces: sizes, offsets, flags, checksums, headers; returns them reassembled by
/// hand (independently of `Reassembler`).
fn check_v4_pieces(d: &[u8], pieces: &[Vec<u8>], mtu: usize) -> Vec<u8> {
    let ihl = usize::from(d[0] & 0x0f) * 4;
    let mut data = vec![None; d.len() - ihl];
    for (i, p) in pieces.iter().enumerate() {
        assert!(p.len() <= mtu, "piece {i} is {} > {mtu}", p.len());
        assert_eq!(checksum::checksum(&p[..usize::from(p[0] & 0x0f) * 4]), 0);
        let h = etherparse::Ipv4HeaderSlice::from_slice(p).unwrap();
        assert_eq!(usize::from(h.total_len()), p.len());
        assert_eq!(h.identification(), u16::from_be_bytes([d[4], d[5]]));
        assert_eq!(h.ttl(), d[8]);
        assert_eq!(h.source(), V4_SRC);
        let (off, more, df, phl) = v4_frag_fields(p);
        assert!(!df);
        assert_eq!(off % 8, 0);
        assert_eq!(more, i + 1 < pieces.len());
        if more {
            assert_eq!((p.len() - phl) % 8, 0);
        }
        for (j, b) in p[phl..].iter().enumerate() {
            data[off + j] = Some(*b);
        }
    }
    let mut out = d[..ihl].to_vec();
    out.extend(data.into_iter().map(|b| b.unwrap()));
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Round trip: every piece ≤ mtu, offsets multiples of 8, flags and checksums right, and
    /// the pieces give the original back (by hand and through the Reassembler).
    #[test]
    fn fragment_ipv4_round_trip(len in 0usize..20000, mtu in 68usize..1500, opts in 0usize..3) {
        let options: &[u8] = match opts {
            0 => &[],
            1 => &[131, 7, 4, 10, 0, 0, 1, 1],
            _ => &[7, 7, 4, 0, 0, 0, 0, 137, 7, 4, 1, 2, 3, 4, 1, 1, 1, 1, 1, 0],
        };
        let d = v4(len, 0x7777, false, options);
        let pieces = frag4(&d, mtu);
        if d.len() <= mtu {
            prop_assert_eq!(&pieces, &vec![d.clone()]);
        } else {
            prop_assert!(pieces.len() >= 2);
        }
        prop_assert_eq!(check_v4_pieces(&d, &pieces, mtu), d.clone());
        let mut r = Reassembler::new(big_limits());
        prop_assert_eq!(feed(&mut r, &pieces, 0), vec![d]);
    }

    #[test]
    fn fragment_ipv6_round_trip(
        len in 0usize..30000,
        mtu in 1280usize..1500,
        exts in (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()),
        ident in any::<u32>(),
    ) {
        let e = Exts { hop_by_hop: exts.0, dest_before_routing: exts.1, routing: exts.2, dest_after_routing: exts.3 };
        let p = v6(len, false, e);
        let pieces = frag6(&p, mtu, ident);
        if p.len() <= mtu {
            prop_assert_eq!(&pieces, &vec![p.clone()]);
            return Ok(());
        }
        let mut next = 0;
        for (i, f) in pieces.iter().enumerate() {
            prop_assert!(f.len() <= mtu);
            prop_assert_eq!(usize::from(u16::from_be_bytes([f[4], f[5]])), f.len() - 40);
            let ip = ip_of(f);
            let frag = ip.fragment.unwrap();
            prop_assert_eq!(frag.ident, ident);
            prop_assert_eq!(usize::from(frag.offset), next);
            prop_assert_eq!(frag.offset % 8, 0);
            prop_assert_eq!(frag.more, i + 1 < pieces.len());
            let at = v6_frag_header_at(f);
            if frag.more {
                prop_assert_eq!((f.len() - at - 8) % 8, 0);
            }
            next += f.len() - at - 8;
        }
        let mut r = Reassembler::new(big_limits());
        prop_assert_eq!(feed(&mut r, &pieces, 0), vec![p]);
    }
}

#[test]
fn fragment_ipv4_copies_only_copy_flagged_options_after_the_first() {
    // Record Route (7: copy flag clear) then Loose Source Route (131: copy flag set), NOP, NOP.
    let opts = [7, 7, 4, 0, 0, 0, 0, 131, 7, 4, 10, 0, 0, 1, 1, 1];
    let d = v4(2000, 5, false, &opts);
    let pieces = frag4(&d, 600);
    assert_eq!(pieces.len(), 4);
    assert_eq!(
        &pieces[0][20..36],
        &d[20..36],
        "the first fragment has every option"
    );
    assert_eq!(v4_frag_fields(&pieces[0]).3, 36);
    for p in &pieces[1..] {
        let (.., ihl) = v4_frag_fields(p);
        assert_eq!(ihl, 28);
        assert_eq!(&p[20..28], &[131, 7, 4, 10, 0, 0, 1, 0]);
        assert_eq!(&p[12..20], &d[12..20]);
    }
    assert_eq!(check_v4_pieces(&d, &pieces, 600), d);
}

#[test]
fn fragment_ipv4_refuses_df_and_small_mtus_and_refragments_fragments() {
    let mut d = v4(2000, 5, false, &[]);
    d[6] |= 0x40;
    fix_v4_checksum(&mut d);
    let mut out = Vec::new();
    assert_eq!(
        fragment_ipv4(&d, 1500, &mut out),
        Err(FragError::DontFragment)
    );
    assert!(out.is_empty());
    // DF and fits: unchanged.
    fragment_ipv4(&d, 2028, &mut out).unwrap();
    assert_eq!(out, vec![d.clone()]);
    assert_eq!(fragment_ipv4(&d, 67, &mut out), Err(FragError::MtuTooSmall));
    assert_eq!(
        fragment_ipv4(&d[..30], 1500, &mut out),
        Err(FragError::Malformed)
    );

    // A fragment fragmented again (a router on a smaller link): offsets continue, MF stays.
    let d = v4(4000, 6, false, &[]);
    let first = frag4(&d, 1500);
    let mut again = Vec::new();
    for f in &first {
        fragment_ipv4(f, 576, &mut again).unwrap();
    }
    assert!(again.len() > first.len());
    assert_eq!(check_v4_pieces(&d, &again, 576), d);
    let mut r = Reassembler::new(limits());
    let mut rev = again.clone();
    rev.reverse();
    assert_eq!(feed(&mut r, &rev, 0), vec![d]);
}

#[test]
fn fragment_ipv6_repeats_the_unfragmentable_part() {
    let p = v6(3000, false, ALL_EXTS);
    // 40 IPv6 + 8 Hop-by-Hop + 16 Destination Options + 8 Routing; the final Destination
    // Options header (16) belongs to the fragmentable part.
    let unfrag = 40 + 8 + 16 + 8;
    let pieces = frag6(&p, 1280, 0xabcd);
    for (i, f) in pieces.iter().enumerate() {
        assert_eq!(&f[..4], &p[..4]);
        assert_eq!(&f[6..unfrag], {
            let mut u = p[6..unfrag].to_vec();
            // The Routing header's next header now names the Fragment header.
            u[unfrag - 8 - 6] = 44;
            u
        });
        assert_eq!(v6_frag_header_at(f), unfrag);
        assert_eq!(
            f[unfrag], 60,
            "the first fragmentable header: Destination Options"
        );
        if i == 0 {
            assert_eq!(&f[unfrag + 8..unfrag + 8 + 16], &p[unfrag..unfrag + 16]);
        }
    }
    let mut out = Vec::new();
    assert_eq!(
        fragment_ipv6(&p, 1279, 1, &mut out),
        Err(FragError::MtuTooSmall)
    );
    assert_eq!(fragment_ipv6(&pieces[0], 1280, 1, &mut out), Ok(()), "fits");
    let mut big = pieces[0].clone();
    big.extend_from_slice(&[0; 1000]);
    let pl = (big.len() - 40) as u16;
    big[4..6].copy_from_slice(&pl.to_be_bytes());
    assert_eq!(
        fragment_ipv6(&big, 1280, 1, &mut out),
        Err(FragError::AlreadyFragmented)
    );
    assert_eq!(out.len(), 1);
}

// ---------------------------------------------------------------------------------------------
// No panic, whatever the input.

fn seeds() -> Vec<Vec<u8>> {
    let mut s = Vec::new();
    s.extend(frag4(
        &v4(3000, 1, false, &[131, 7, 4, 10, 0, 0, 1, 1]),
        1000,
    ));
    s.extend(frag6(&v6(3000, true, ALL_EXTS), 1280, 2));
    s.extend(frag6(&v6(3000, false, NO_EXTS), 1280, 3));
    s.push(v4(50, 1, true, &[]));
    s.push(v6(50, false, NO_EXTS));
    s
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Random bytes, and real fragments bit-flipped and truncated, with the parse of those
    /// bytes or of other bytes: every call returns, limits hold.
    #[test]
    fn no_panic_on_arbitrary_input(
        picks in proptest::collection::vec(
            (any::<usize>(), proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
             proptest::option::of(any::<usize>()), any::<bool>(), any::<usize>()),
            1..12),
        random in proptest::collection::vec(any::<u8>(), 0..200),
        mtu in 0usize..3000,
    ) {
        let seeds = seeds();
        let l = FragLimits { max_datagrams: 4, max_bytes: 8000, max_frags_per_datagram: 4, timeout: 100 };
        let mut r = Reassembler::new(l);
        let mut t = FragTracker::<u16>::new(l);
        let mut inputs = vec![random];
        for (seed, flips, cut, _, _) in &picks {
            let mut p = seeds[seed % seeds.len()].clone();
            for (at, v) in flips {
                if !p.is_empty() {
                    let n = p.len();
                    p[at % n.min(80)] = *v;
                }
            }
            if let Some(c) = cut {
                p.truncate(c % (p.len() + 1));
            }
            inputs.push(p);
        }
        let parses: Vec<Option<IpInfo>> = inputs
            .iter()
            .map(|p| parse_ip(p).ok().and_then(|f| f.ip().copied()))
            .collect();
        for (i, p) in inputs.iter().enumerate() {
            let now = i as u64 * 30;
            let (own, other) = picks.get(i).map_or((true, 0), |x| (x.3, x.4));
            let ip = if own { parses[i] } else { parses[other % parses.len()] };
            if let Some(ip) = ip {
                let _ = r.add(p, &ip, now);
                if let Some(k) = FragKey::of(&ip) {
                    if ip.fragment.is_some_and(|f| f.offset == 0) {
                        let _ = t.decided(k, i as u16, now);
                    } else if t.lookup(&k, now).is_none() {
                        let _ = t.hold(k, p, now);
                    }
                }
            }
            let mut out = Vec::new();
            if let Ok(()) = fragment_ipv4(p, mtu, &mut out) {
                prop_assert!(out.iter().all(|f| f.len() <= mtu));
            }
            out.clear();
            if let Ok(()) = fragment_ipv6(p, mtu, 1, &mut out) {
                prop_assert!(out.iter().all(|f| f.len() <= mtu));
            }
            prop_assert!(r.datagrams() <= 4 && r.held_bytes() <= 8000);
            prop_assert!(t.datagrams() <= 4 && t.held_bytes() <= 8000);
        }
        r.expire(u64::MAX);
        t.expire(u64::MAX);
        prop_assert_eq!((r.datagrams(), r.held_bytes()), (0, 0));
        prop_assert_eq!((t.datagrams(), t.held_bytes()), (0, 0));
    }
}
