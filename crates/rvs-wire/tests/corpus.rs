//! Every packet of every capture in `shared/corpus/pcap/` through the packet layer:
//! classified or rejected with a typed error; the fast parse equal to etherparse's; checksums
//! equal to independent implementations; the quote reader equal to etherparse's lax parser
//! wherever both read ports; and no panic on truncated or bit-flipped variants.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::OnceLock;

use etherparse::{LaxNetSlice, LaxSlicedPacket, TransportSlice};
use proptest::prelude::*;
use rvs_wire::capture::{self, CapturedPacket, LinkPayload};
use rvs_wire::parse::{self, IpInfo, Net, ParsedFrame, Transport};
use rvs_wire::rewrite::{IcmpPacket, Ipv4Packet};
use rvs_wire::{WireError, checksum, quote};

fn corpus_dir() -> PathBuf {
    let d = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/corpus/pcap"
    ));
    assert!(
        d.is_dir(),
        "capture corpus missing at {} (shared/ must sit beside the checkout)",
        d.display()
    );
    d
}

struct Corpus {
    files: Vec<(String, Vec<CapturedPacket>)>,
}

fn corpus() -> &'static Corpus {
    static C: OnceLock<Corpus> = OnceLock::new();
    C.get_or_init(|| {
        let mut names: Vec<_> = std::fs::read_dir(corpus_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".pcap") || n.ends_with(".pcapng"))
            .collect();
        names.sort();
        let files = names
            .into_iter()
            .map(|n| {
                let pkts = capture::open(corpus_dir().join(&n))
                    .unwrap()
                    .map_while(Result::ok)
                    .collect::<Vec<_>>();
                (n, pkts)
            })
            .collect();
        Corpus { files }
    })
}

/// Plain RFC 1071 reference, written from the RFC, independent of `rvs_wire::checksum`.
fn rfc1071(chunks: &[&[u8]]) -> u16 {
    let mut bytes = Vec::new();
    for c in chunks {
        bytes.extend_from_slice(c);
    }
    let mut acc: u32 = 0;
    for w in bytes.chunks(2) {
        let word = if w.len() == 2 {
            u16::from_be_bytes([w[0], w[1]])
        } else {
            u16::from(w[0]) << 8
        };
        acc += u32::from(word);
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

fn pseudo(ip: &IpInfo, proto: u8, len: usize) -> Vec<u8> {
    let mut p = Vec::new();
    match (ip.src, ip.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            p.extend_from_slice(&[0, proto]);
            p.extend_from_slice(&(len as u16).to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            p.extend_from_slice(&(len as u32).to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, proto]);
        }
        _ => unreachable!(),
    }
    p
}

/// Each packet: its link payload and, when that is readable, the parse of it.
fn each_packet(
    mut f: impl FnMut(
        &str,
        usize,
        &CapturedPacket,
        Result<(LinkPayload<'_>, Result<ParsedFrame, WireError>), WireError>,
    ),
) {
    for (name, pkts) in &corpus().files {
        for (i, p) in pkts.iter().enumerate() {
            let lp = p.link_payload();
            let r = lp.map(|lp| {
                let parsed = lp.parse();
                (lp, parsed)
            });
            f(name, i, p, r);
        }
    }
}

#[test]
fn every_packet_is_classified_or_rejected_with_a_typed_error() {
    let mut summary: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut per_file: BTreeMap<String, BTreeMap<&'static str, usize>> = BTreeMap::new();
    let mut total = 0;
    each_packet(|name, _, _, r| {
        total += 1;
        let label = match r {
            Ok((_, Ok(p))) => p.class(),
            Ok((_, Err(e))) | Err(e) => e.name(),
        };
        *summary.entry(label).or_default() += 1;
        *per_file
            .entry(name.to_string())
            .or_default()
            .entry(label)
            .or_default() += 1;
    });
    assert_eq!(
        total,
        corpus().files.iter().map(|f| f.1.len()).sum::<usize>()
    );
    assert!(total >= 900, "corpus unexpectedly small: {total}");
    let get = |f: &str, l: &str| per_file.get(f).and_then(|m| m.get(l)).copied().unwrap_or(0);
    // Facts from SOURCES.md, checked against our classification.
    assert_eq!(
        get("smtp.pcap", "ipv4/icmp-error"),
        4,
        "smtp: 4× frag-needed"
    );
    assert_eq!(get("filestore-5408_input.pcap", "ipv4/icmp-error"), 6);
    assert_eq!(
        get("icmp6.pcap", "ipv6/icmp-error"),
        13,
        "icmp6: 9 time exceeded + 4 unreachable"
    );
    assert_eq!(
        get("yanet_014_icmp_error_003-send.pcap", "ipv4/icmp-error"),
        41
    );
    assert_eq!(
        get("yanet_014_icmp_error_007-send.pcap", "ipv6/icmp-error"),
        22
    );
    assert_eq!(
        get("IPv4Frag.pcap", "ipv4/udp"),
        1,
        "first fragment carries the UDP header"
    );
    assert_eq!(get("IPv4Frag.pcap", "ipv4/fragment"), 2);
    assert_eq!(get("udp.pcap", "ipv4/udp"), 2);
    assert_eq!(
        get("icmp-icmp_print-oobr-2.pcap", "unsupported_link_type"),
        3
    );
    assert!(
        get("tcp.pcap", "truncated") >= 1,
        "snaplen-96 records are truncated: {:?}",
        per_file.get("tcp.pcap")
    );
    for label in [
        "ipv4/tcp",
        "ipv4/udp",
        "ipv6/tcp",
        "ipv6/udp",
        "ipv4/icmp",
        "ipv6/icmp",
        "ipv4/fragment",
    ] {
        assert!(
            summary.get(label).copied().unwrap_or(0) > 0,
            "no {label} in corpus: {summary:?}"
        );
    }
}

#[test]
fn fast_parse_equals_etherparse_on_every_corpus_packet() {
    let mut compared = 0;
    each_packet(|name, i, _, r| {
        let Ok((lp, fast)) = r else { return };
        let reference = match lp {
            LinkPayload::Ethernet(f) => parse::parse_ethernet_etherparse(f),
            LinkPayload::Network {
                ether_type,
                payload,
            } => parse::parse_network_etherparse(ether_type, payload),
        };
        assert_eq!(fast, reference, "{name} #{i}");
        compared += 1;
    });
    assert!(compared >= 900, "{compared}");
}

#[test]
fn checksums_agree_with_independent_implementations() {
    let (mut ip_hdrs, mut l4s, mut bad_found) = (0, 0, BTreeMap::new());
    each_packet(|name, i, _, r| {
        let Ok((lp, Ok(p))) = r else { return };
        let Net::Ip(ip) = p.net else { return };
        let b = lp.bytes();
        if ip.is_ipv4() {
            let hdr = &b[ip.l3_offset..];
            let v = Ipv4Packet::new_checked(hdr).unwrap();
            let h = &hdr[..v.header_len()];
            let mut zeroed = h.to_vec();
            zeroed[10] = 0;
            zeroed[11] = 0;
            let ours = checksum::checksum(&zeroed);
            assert_eq!(ours, rfc1071(&[&zeroed]), "{name} #{i}");
            let ep = etherparse::Ipv4HeaderSlice::from_slice(h)
                .unwrap()
                .to_header();
            assert_eq!(ours, ep.calc_header_checksum(), "{name} #{i}");
            assert_eq!(v.verify_checksum(), ours == v.checksum(), "{name} #{i}");
            if !v.verify_checksum() {
                *bad_found.entry(format!("{name}:ip")).or_insert(0) += 1;
            }
            ip_hdrs += 1;
        }
        if ip.fragment.is_some() {
            return;
        }
        let seg = &b[ip.l4_offset..ip.end()];
        let (at, proto) = match ip.transport {
            Transport::Tcp { .. } => (16, 6),
            Transport::Udp { .. } => (6, 17),
            Transport::Icmpv4 { .. } => (2, 1),
            Transport::Icmpv6 { .. } => (2, 58),
            _ => return,
        };
        if seg.len() < at + 2 {
            return;
        }
        let stored = u16::from_be_bytes([seg[at], seg[at + 1]]);
        if proto == 17 && stored == 0 && ip.is_ipv4() {
            return; // no checksum (RFC 768)
        }
        let mut z = seg.to_vec();
        z[at] = 0;
        z[at + 1] = 0;
        let acc = if proto == 1 {
            0
        } else {
            checksum::pseudo_header(ip.src, ip.dst, proto, seg.len() as u32)
        };
        let mut ours = checksum::finish(checksum::sum(acc, &z));
        if proto == 17 {
            ours = checksum::udp_nonzero(ours);
        }
        let mut reference = if proto == 1 {
            rfc1071(&[&z])
        } else {
            rfc1071(&[&pseudo(&ip, proto, seg.len()), &z])
        };
        if proto == 17 && reference == 0 {
            reference = 0xffff;
        }
        assert_eq!(ours, reference, "{name} #{i} proto {proto}");
        // etherparse's own computation agrees too.
        let ep = match (proto, ip.src, ip.dst) {
            (6, IpAddr::V4(s), IpAddr::V4(d)) => {
                etherparse::TcpSlice::from_slice(seg).ok().and_then(|t| {
                    t.to_header()
                        .calc_checksum_ipv4_raw(s.octets(), d.octets(), t.payload())
                        .ok()
                })
            }
            (6, IpAddr::V6(s), IpAddr::V6(d)) => {
                etherparse::TcpSlice::from_slice(seg).ok().and_then(|t| {
                    t.to_header()
                        .calc_checksum_ipv6_raw(s.octets(), d.octets(), t.payload())
                        .ok()
                })
            }
            (17, IpAddr::V4(s), IpAddr::V4(d)) => {
                etherparse::UdpSlice::from_slice(seg).ok().and_then(|u| {
                    u.to_header()
                        .calc_checksum_ipv4_raw(s.octets(), d.octets(), u.payload())
                        .ok()
                })
            }
            (17, IpAddr::V6(s), IpAddr::V6(d)) => {
                etherparse::UdpSlice::from_slice(seg).ok().and_then(|u| {
                    u.to_header()
                        .calc_checksum_ipv6_raw(s.octets(), d.octets(), u.payload())
                        .ok()
                })
            }
            _ => None,
        };
        // etherparse computes over the UDP length field's extent, which equals seg for well-formed packets.
        if let Some(ep) = ep {
            let udp_len_ok =
                proto != 17 || usize::from(u16::from_be_bytes([seg[4], seg[5]])) == seg.len();
            if udp_len_ok {
                assert_eq!(ours, ep, "{name} #{i} etherparse proto {proto}");
            }
        }
        let icmp_valid = match proto {
            1 => Some(IcmpPacket::new_checked(seg).unwrap().verify_checksum_v4()),
            58 => match (ip.src, ip.dst) {
                (IpAddr::V6(s), IpAddr::V6(d)) => {
                    let ours_ok = IcmpPacket::new_checked(seg)
                        .unwrap()
                        .verify_checksum_v6(s, d);
                    let ep_ok = etherparse::Icmpv6Slice::from_slice(seg)
                        .unwrap()
                        .is_checksum_valid(s.octets(), d.octets());
                    assert_eq!(ours_ok, ep_ok, "{name} #{i} icmpv6 verify");
                    Some(ours_ok)
                }
                _ => None,
            },
            _ => None,
        };
        let valid = icmp_valid.unwrap_or(ours == stored);
        if !valid {
            *bad_found.entry(format!("{name}:{proto}")).or_insert(0) += 1;
        }
        l4s += 1;
    });
    assert!(
        ip_hdrs > 500 && l4s > 500,
        "too few checked: {ip_hdrs} {l4s}"
    );
    // The files made to carry a bad checksum are found bad, at the layer named.
    for key in [
        "ip4-bad-chksum.pcap:ip",
        "ip4-tcp-bad-chksum.pcap:6",
        "ip4-udp-bad-chksum.pcap:17",
        "ip4-icmp-bad-chksum.pcap:1",
        "ip6-icmp6-bad-chksum.pcap:58",
        "ip6-tcp-bad-chksum.pcap:6",
    ] {
        assert_eq!(
            bad_found.get(key),
            Some(&1),
            "{key} not detected: {bad_found:?}"
        );
    }
}

/// Ports as etherparse's lax parser reads them from a quote, when it can.
fn lax_ports(quote: &[u8]) -> Option<(u8, IpAddr, IpAddr, u16, u16)> {
    let lax = LaxSlicedPacket::from_ip(quote).ok()?;
    let (src, dst, proto) = match lax.net? {
        LaxNetSlice::Ipv4(v4) => {
            let h = v4.header();
            (
                IpAddr::from(h.source()),
                IpAddr::from(h.destination()),
                v4.payload().ip_number.0,
            )
        }
        LaxNetSlice::Ipv6(v6) => {
            let h = v6.header();
            (
                IpAddr::from(h.source()),
                IpAddr::from(h.destination()),
                v6.payload().ip_number.0,
            )
        }
        LaxNetSlice::Arp(_) => return None,
    };
    match lax.transport? {
        TransportSlice::Tcp(t) => Some((proto, src, dst, t.source_port(), t.destination_port())),
        TransportSlice::Udp(u) => Some((proto, src, dst, u.source_port(), u.destination_port())),
        _ => None,
    }
}

/// Every ICMP error in the corpus (also inside IPv4-in-IPv4 / IPv6-in-IPv4 tunnels): the ICMP
/// message bytes and whether it is ICMPv6.
fn icmp_errors() -> Vec<(String, usize, Vec<u8>, bool)> {
    fn visit(
        name: &str,
        i: usize,
        b: &[u8],
        ip: &IpInfo,
        out: &mut Vec<(String, usize, Vec<u8>, bool)>,
        depth: u8,
    ) {
        let msg = &b[ip.l4_offset..ip.end()];
        if ip.is_icmp_error() && ip.fragment.is_none() {
            out.push((name.to_string(), i, msg.to_vec(), !ip.is_ipv4()));
        } else if matches!(ip.protocol, 4 | 41)
            && depth < 3
            && let Ok(inner) = parse::parse_ip(msg)
            && let Some(iip) = inner.ip()
        {
            visit(name, i, msg, iip, out, depth + 1);
        }
    }
    let mut out = Vec::new();
    each_packet(|name, i, _, r| {
        if let Ok((lp, Ok(p))) = r
            && let Some(ip) = p.ip()
        {
            visit(name, i, lp.bytes(), ip, &mut out, 0);
        }
    });
    out
}

#[test]
fn quote_reader_agrees_with_etherparse_lax_parser() {
    let errors = icmp_errors();
    assert!(
        errors.len() > 150,
        "only {} ICMP errors found",
        errors.len()
    );
    let (mut both, mut only_ours, mut outcomes) = (0, 0, BTreeMap::<&str, usize>::new());
    for (name, i, msg, v6) in &errors {
        let read = if *v6 {
            quote::read_icmpv6_error(msg)
        } else {
            quote::read_icmpv4_error(msg)
        };
        let ours = read.and_then(|e| e.quote.key().map(|k| (e, k)));
        *outcomes
            .entry(match &ours {
                Ok(_) => "key",
                Err(e) => e.name(),
            })
            .or_default() += 1;
        // etherparse reads the quote with no RFC 4884 bound; give it the same bytes we used.
        let quote_bytes = match &ours {
            Ok((e, _)) => e.quote.bytes(),
            Err(_) => &msg[8.min(msg.len())..],
        };
        let lax = lax_ports(quote_bytes);
        match (&ours, lax) {
            (Ok((_, k)), Some((proto, src, dst, sp, dp))) => {
                assert_eq!(
                    (k.protocol, k.src, k.dst, k.sport, k.dport),
                    (proto, src, dst, sp, dp),
                    "{name} #{i}"
                );
                // And the reversed key is the flow the error belongs to.
                let r = k.reversed();
                assert_eq!((r.src, r.sport, r.dst, r.dport), (dst, dp, src, sp));
                both += 1;
            }
            (Ok((e, k)), None) if matches!(k.protocol, 6 | 17) => {
                // Only we read ports: the quote holds fewer than 20 bytes of TCP (RFC 792
                // minimum), or is a first fragment (etherparse reads no transport of fragments).
                assert!(
                    e.quote.l4_bytes().len() < 20 || k.protocol == 17 || e.quote.fragment.is_some(),
                    "{name} #{i}: lax failed on a full header"
                );
                only_ours += 1;
            }
            (Err(e), Some(l)) => panic!("{name} #{i}: etherparse read {l:?} but we failed: {e}"),
            _ => {}
        }
    }
    assert!(both > 150, "only {both} quotes compared");
    assert!(
        only_ours > 0,
        "no 8-byte TCP quote exercised (IcmpPackets.pcap has them)"
    );
    assert!(
        outcomes.get("non_first_fragment").copied().unwrap_or(0) >= 1,
        "{outcomes:?}"
    );
    assert!(
        outcomes.get("truncated").copied().unwrap_or(0) >= 1,
        "{outcomes:?}"
    );
}

#[test]
fn specific_quotes_from_the_corpus() {
    let errors = icmp_errors();
    let find = |file: &'static str| errors.iter().filter(move |e| e.0 == file);
    // yanet 009: one first fragment with ports, one non-first fragment.
    let r: Vec<_> = find("yanet_014_icmp_error_009-send.pcap")
        .map(|(_, _, m, _)| quote::read_icmpv6_error(m).unwrap().quote.reversed_key())
        .collect();
    assert!(r.iter().any(|k| k.is_ok()));
    assert!(
        r.iter()
            .any(|k| matches!(k, Err(WireError::NonFirstFragment { .. })))
    );
    // Quote with a Hop-by-Hop extension header before UDP.
    let (_, _, m, _) = find("icmp6-destunreach-ip6ext-udp.pcap").next().unwrap();
    let q = quote::read_icmpv6_error(m).unwrap().quote;
    assert_eq!(q.protocol, 17);
    assert!(q.header_len > 40);
    assert!(q.ports().is_ok());
    // Truncated extension chain: a typed error, never ports.
    let (_, _, m, _) = find("icmp6-destunreach-ip6ext-trunc.pcap").next().unwrap();
    assert!(matches!(
        quote::read_icmpv6_error(m),
        Err(WireError::Truncated { .. })
    ));
    // No quote at all.
    let (_, _, m, _) = find("icmp-destunreach-no-context.pcap").next().unwrap();
    assert!(matches!(
        quote::read_icmpv4_error(m),
        Err(WireError::Truncated { .. })
    ));
    // smtp.pcap: frag-needed with MTU 1492 quoting 548 bytes of a DF TCP segment.
    let (_, _, m, _) = find("smtp.pcap").next().unwrap();
    let e = quote::read_icmpv4_error(m).unwrap();
    assert_eq!(e.mtu(false), Some(1492));
    assert_eq!(e.quote.bytes().len(), 548);
    assert_eq!(e.quote.claimed_len, 1500);
    // 6in4 tunnel: an ICMPv6 packet-too-big with MTU 1460 inside IPv4 protocol 41.
    let ptb = find("6in4tunnel.pcap")
        .filter_map(|(_, _, m, _)| quote::read_icmpv6_error(m).ok())
        .find(|e| e.icmp_type == 2)
        .unwrap();
    assert_eq!(ptb.mtu(true), Some(1460));
    assert_eq!(ptb.quote.protocol, 6);
}

fn all_packets() -> &'static Vec<Vec<u8>> {
    static P: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    P.get_or_init(|| {
        corpus()
            .files
            .iter()
            .flat_map(|f| f.1.iter().map(|p| p.data.clone()))
            .collect()
    })
}

#[test]
fn exercise_every_corpus_packet_and_every_truncation() {
    for p in all_packets() {
        for n in 0..=p.len().min(200) {
            rvs_wire::exercise::exercise(&p[..n]);
        }
        rvs_wire::exercise::exercise(p);
        // The same bytes behind each link header, as an IP packet.
        for skip in [14, 16, 18, 20, 4] {
            if let Some(rest) = p.get(skip..) {
                rvs_wire::exercise::exercise(rest);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]
    /// Bit-flipped and truncated variants of corpus packets never panic the packet layer and
    /// keep every invariant `exercise` asserts.
    #[test]
    fn corrupted_corpus_packets_never_panic(
        which in any::<prop::sample::Index>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 0u8..8), 1..6),
        cut in proptest::option::of(any::<prop::sample::Index>()),
        skip in prop_oneof![Just(0usize), Just(14), Just(16), Just(18)],
    ) {
        let pkts = all_packets();
        let mut p = pkts[which.index(pkts.len())].clone();
        if p.is_empty() {
            return Ok(());
        }
        for (at, bit) in flips {
            let i = at.index(p.len());
            p[i] ^= 1 << bit;
        }
        if let Some(c) = cut {
            p.truncate(c.index(p.len() + 1));
        }
        rvs_wire::exercise::exercise(p.get(skip..).unwrap_or(&[]));
    }
}
