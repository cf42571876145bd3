//! One entry point that runs every parser, view and builder of this crate over arbitrary bytes,
//! for fuzz targets (`fuzz/`, bolero under `cargo test`) and property tests.
//!
//! It must never panic on any input — except through the assertions below, each of which states
//! a property of the packet layer (the fast parse equals etherparse's, the flow reader the full
//! parse; an incremental checksum update equals a full recompute; a built error reads back). A
//! panic here is a bug to fix.
//! It allocates nothing but stack buffers; it is not meant for the forwarding path.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::build::{self, Icmpv4Error, Icmpv6Error};
use crate::capture::{LinkType, link_payload};
use crate::checksum;
use crate::parse::{self, Net, ParsedFrame, Transport, ethertype};
use crate::quote;
use crate::rewrite::{IcmpPacket, Ipv4Packet, Ipv6Packet, L4Kind, L4Packet};

/// A fast reader (`reader`) read `ip`: the full parse `full` must have read the same IP packet,
/// in a frame without a VLAN tag.
fn assert_full_parse_agrees(full: Option<&ParsedFrame>, ip: &parse::IpInfo, reader: &str) {
    assert_eq!(
        full.and_then(|p| p.vlan),
        None,
        "{reader} accepted a tagged frame"
    );
    assert_eq!(
        full.and_then(|p| p.ip()),
        Some(ip),
        "{reader} disagrees with the full parse (outer packet)"
    );
}

/// Run every parser, view and builder over `data`, asserting the packet layer's invariants.
pub fn exercise(data: &[u8]) {
    // Frame parse, fast path against the etherparse reference.
    let eth = parse::parse_ethernet(data);
    assert_eq!(
        eth,
        parse::parse_ethernet_etherparse(data),
        "fast parse disagrees (ethernet)"
    );
    if let Ok(p) = &eth {
        exercise_parsed(data, p);
    }
    // The forwarding fast path's reader answers only where the full parse agrees.
    if let Some(f) = crate::flow::read(data) {
        assert_full_parse_agrees(eth.as_ref().ok(), &f.ip_info(), "flow reader");
    }
    if let Some(e) = crate::flow::read_error(data) {
        let ip = e.ip_info();
        assert_full_parse_agrees(eth.as_ref().ok(), &ip, "error reader");
        let msg = data.get(ip.l4_offset..ip.end()).unwrap_or(&[]);
        let q = if e.flow.v6 {
            quote::read_icmpv6_error(msg)
        } else {
            quote::read_icmpv4_error(msg)
        };
        let key = q.as_ref().ok().and_then(|q| q.quote.reversed_key().ok());
        assert_eq!(
            key.map(|k| (k.src, k.sport, k.dst, k.dport)),
            Some((e.flow.src_ip(), e.flow.sport, e.flow.dst_ip(), e.flow.dport)),
            "error reader: quoted flow"
        );
    }
    for et in [ethertype::IPV4, ethertype::IPV6, ethertype::ARP] {
        let n = parse::parse_network(et, data);
        assert_eq!(
            n,
            parse::parse_network_etherparse(et, data),
            "fast parse disagrees ({et:#x})"
        );
        if let Ok(p) = &n {
            exercise_parsed(data, p);
        }
    }
    let _ = parse::parse_ip(data);

    // Quotes and ICMP error readers on the raw bytes.
    if let Ok(q) = quote::read(data) {
        let _ = (
            q.reversed_key(),
            q.l4_bytes(),
            q.is_icmp_error(),
            q.is_complete(),
        );
    }
    for v6 in [false, true] {
        let r = if v6 {
            quote::read_icmpv6_error(data)
        } else {
            quote::read_icmpv4_error(data)
        };
        if let Ok(e) = r {
            let _ = (e.mtu(v6), e.quote.reversed_key());
        }
    }

    // Builders with the bytes as the offending packet.
    let mut out = [0u8; 1600];
    let a4 = Ipv4Addr::new(198, 51, 100, 1);
    let b4 = Ipv4Addr::new(192, 0, 2, 1);
    if let Ok(n) = build::icmpv4_error(
        &mut out,
        a4,
        b4,
        Icmpv4Error::FragNeeded { mtu: 1400 },
        data,
        64,
    ) {
        assert!(n <= build::ICMPV4_ERROR_MAX);
        let ip = Ipv4Packet::new_checked(&out[..n]);
        assert!(ip.as_ref().is_ok_and(|ip| ip.verify_checksum()));
        let icmp = IcmpPacket::new_checked(&out[20..n]);
        assert!(icmp.is_ok_and(|i| i.verify_checksum_v4()));
        assert!(quote::read_icmpv4_error(&out[20..n]).is_ok());
    }
    let a6 = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
    let b6 = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
    if let Ok(n) = build::icmpv6_error(
        &mut out,
        a6,
        b6,
        Icmpv6Error::PacketTooBig { mtu: 1280 },
        data,
        64,
    ) {
        assert!(n <= build::ICMPV6_ERROR_MAX);
        let icmp = IcmpPacket::new_checked(&out[40..n]);
        assert!(icmp.is_ok_and(|i| i.verify_checksum_v6(a6, b6)));
    }
    let _ = build::tcp_rst(&mut out, data, 64);
    let t4 = build::Ipv4Tunnel {
        src: a4,
        dst: b4,
        ttl: 64,
        ident: 1,
        dont_fragment: true,
    };
    let _ = build::ipip_header(&mut out, &t4, data);
    let t6 = build::Ipv6Tunnel {
        src: a6,
        dst: b6,
        hop_limit: 64,
    };
    let _ = build::ip6ip6_header(&mut out, &t6, data);

    // Every link type's decapsulation.
    for lt in [0u32, 1, 9, 101, 108, 113, 228, 229, 276, 107] {
        if let Ok(p) = link_payload(LinkType::from(lt), data) {
            let _ = p.parse();
        }
    }
}

/// NAT-style rewrites at the parsed offsets on a copy; each incremental update must equal a
/// full recompute whenever the original checksum was valid.
fn exercise_parsed(data: &[u8], p: &ParsedFrame) {
    let _ = p.class();
    let Net::Ip(ip) = p.net else { return };
    let _ = (ip.flow_key(), ip.is_icmp_error());
    let mut buf = [0u8; 2048];
    let Some(copy) = buf.get_mut(..data.len()) else {
        return;
    };
    copy.copy_from_slice(data);
    let (l3, l4) = (ip.l3_offset, ip.l4_offset);
    let Some(end) = (ip.l4_offset + ip.l4_len <= copy.len()).then_some(ip.end()) else {
        return;
    };

    let new_v4 = Ipv4Addr::new(203, 0, 113, 9);
    let new_v6 = Ipv6Addr::new(0x2001, 0xdb8, 9, 9, 9, 9, 9, 9);
    let (old_dst, new_dst) = match ip.dst {
        IpAddr::V4(old) => {
            let Ok(mut v) = Ipv4Packet::new_checked(&mut copy[l3..l4]) else {
                return;
            };
            let was_valid = v.verify_checksum();
            v.set_dst_addr_update_checksum(new_v4);
            v.decrement_ttl();
            if was_valid {
                assert!(
                    v.verify_checksum(),
                    "incremental IPv4 header update broke the checksum"
                );
            }
            (IpAddr::V4(old), IpAddr::V4(new_v4))
        }
        IpAddr::V6(old) => {
            let Ok(mut v) = Ipv6Packet::new_checked(&mut copy[l3..]) else {
                return;
            };
            v.set_dst_addr(new_v6);
            v.decrement_hop_limit();
            (IpAddr::V6(old), IpAddr::V6(new_v6))
        }
    };
    let kind = match ip.transport {
        Transport::Tcp { .. } => L4Kind::Tcp,
        Transport::Udp { .. } => L4Kind::Udp,
        _ => return,
    };
    if ip.fragment.is_some() {
        return;
    }
    let l4_sum = |seg: &[u8], src: IpAddr, dst: IpAddr| {
        checksum::sum(
            checksum::pseudo_header(src, dst, kind.protocol(), seg.len() as u32),
            seg,
        )
    };
    let was_valid = checksum::verify(l4_sum(&data[l4..end], ip.src, ip.dst));
    let Ok(mut v) = L4Packet::new_checked(&mut copy[l4..end], kind) else {
        return;
    };
    // A zero UDP checksum stays zero in both families: "no checksum" over IPv4 (RFC 768); over
    // IPv6 either an RFC 6936 zero-checksum tunnel or invalid, for the receiver to judge.
    let absent = v.checksum_absent();
    v.update_checksum_for_addr(old_dst, new_dst);
    v.set_dst_port_update_checksum(8080);
    if was_valid && !absent {
        assert!(
            checksum::verify(l4_sum(&copy[l4..end], ip.src, new_dst)),
            "incremental L4 update broke the checksum"
        );
    }
}
