//! The transmitters, one per forwarding method, rewriting a frame in place (IPVS's
//! `ip_vs_xmit.c` split): NAT rewrites addresses and ports with incremental checksums, DR leaves
//! L3 alone, TUN prepends an outer header. Every method decrements the TTL / hop limit.
//!
//! Each function takes the frame and the offsets its parse found; none allocates except the
//! tunnel's rare headroom move. None panics: offsets come from `rvs_wire::parse`, which checked
//! them, and every view is created with `new_checked`.

use core::net::IpAddr;

use rvs_wire::build::{self, Ipv4Tunnel, Ipv6Tunnel};
use rvs_wire::parse::IpInfo;
use rvs_wire::rewrite::{Ipv4Packet, Ipv6Packet, L4Kind, L4Packet};

use crate::frame::Frame;

/// Decrement the TTL (IPv4, checksum adjusted) or hop limit (IPv6) of the IP packet at `l3`.
/// Returns false when the bytes are not an IP header (never for a parsed frame).
#[inline]
pub fn decrement_ttl(data: &mut [u8], ip: &IpInfo) -> bool {
    let Some(l3) = data.get_mut(ip.l3_offset..) else {
        return false;
    };
    if ip.is_ipv4() {
        match Ipv4Packet::new_checked(l3) {
            Ok(mut p) => {
                p.decrement_ttl();
                true
            }
            Err(_) => false,
        }
    } else {
        match Ipv6Packet::new_checked(l3) {
            Ok(mut p) => {
                p.decrement_hop_limit();
                true
            }
            Err(_) => false,
        }
    }
}

/// Which end of the packet NAT rewrites.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatSide {
    /// Client → VIP becomes client → RIP: rewrite the destination.
    Destination,
    /// RIP → client becomes VIP → client: rewrite the source.
    Source,
}

/// NAT: rewrite the destination (or source) address and port of a TCP/UDP packet in place,
/// with RFC 1624 updates of the IPv4 header checksum and the L4 checksum (a zero UDP checksum
/// over IPv4 stays zero). The L4 header must be whole (not a non-first fragment).
pub fn nat_rewrite(data: &mut [u8], ip: &IpInfo, side: NatSide, addr: IpAddr, port: u16) -> bool {
    let Some(kind) = L4Kind::from_protocol(ip.protocol) else {
        return false;
    };
    let (l3, l4) = (ip.l3_offset, ip.l4_offset);
    let end = ip.end();
    if end > data.len() || l4 > end || l3 > l4 {
        return false;
    }
    let (head, tail) = data.split_at_mut(l4);
    let old = match (&mut head[l3..], addr) {
        (h, IpAddr::V4(a)) if ip.is_ipv4() => {
            let Ok(mut p) = Ipv4Packet::new_checked(h) else {
                return false;
            };
            let old = match side {
                NatSide::Destination => p.set_dst_addr_update_checksum(a),
                NatSide::Source => p.set_src_addr_update_checksum(a),
            };
            IpAddr::V4(old)
        }
        (h, IpAddr::V6(a)) if !ip.is_ipv4() => {
            let Ok(mut p) = Ipv6Packet::new_checked(h) else {
                return false;
            };
            let old = match side {
                NatSide::Destination => p.dst_addr(),
                NatSide::Source => p.src_addr(),
            };
            match side {
                NatSide::Destination => p.set_dst_addr(a),
                NatSide::Source => p.set_src_addr(a),
            }
            IpAddr::V6(old)
        }
        _ => return false,
    };
    let Ok(mut t) = L4Packet::new_checked(&mut tail[..end - l4], kind) else {
        return false;
    };
    t.update_checksum_for_addr(old, addr);
    match side {
        NatSide::Destination => t.set_dst_port_update_checksum(port),
        NatSide::Source => t.set_src_port_update_checksum(port),
    };
    true
}

/// The outer header to put around a packet for a tunnel dest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelOuter {
    /// IPv4-in-IPv4 (RFC 2003).
    V4(Ipv4Tunnel),
    /// IPv6-in-IPv6 (RFC 2473).
    V6(Ipv6Tunnel),
}

impl TunnelOuter {
    /// Bytes the outer header adds.
    pub fn overhead(&self) -> usize {
        match self {
            TunnelOuter::V4(_) => build::IPIP_OVERHEAD,
            TunnelOuter::V6(_) => build::IP6IP6_OVERHEAD,
        }
    }
}

/// TUN: insert the outer header between the link header (`..l3`) and the inner packet, keeping
/// the link header bytes (the I/O layer sets the MACs). The inner packet must already have its
/// TTL decremented. Link padding after the inner packet is cut.
pub fn encapsulate(frame: &mut Frame, ip: &IpInfo, outer: &TunnelOuter) -> bool {
    let (l3, end) = (ip.l3_offset, ip.end());
    if end > frame.len() || l3 > end {
        return false;
    }
    frame.truncate(end);
    let n = outer.overhead();
    frame.push_front(n);
    let data = frame.data_mut();
    data.copy_within(n..n + l3, 0);
    let (head, inner) = data.split_at_mut(l3 + n);
    let out = &mut head[l3..];
    match outer {
        TunnelOuter::V4(t) => build::ipip_header(out, t, inner).is_ok(),
        TunnelOuter::V6(t) => build::ip6ip6_header(out, t, inner).is_ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rvs_wire::parse::parse_ethernet;

    fn frame_v4_tcp() -> Vec<u8> {
        let mut v = Vec::new();
        etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([192, 0, 2, 1], [203, 0, 113, 10], 64)
            .tcp(40000, 80, 1, 1000)
            .write(&mut v, b"hello")
            .unwrap();
        v
    }

    #[test]
    fn nat_both_ways_round_trips() {
        let orig = frame_v4_tcp();
        let mut f = orig.clone();
        let p = parse_ethernet(&f).unwrap();
        let ip = *p.ip().unwrap();
        assert!(nat_rewrite(
            &mut f,
            &ip,
            NatSide::Destination,
            "198.51.100.11".parse().unwrap(),
            8080
        ));
        {
            let sliced = etherparse::SlicedPacket::from_ethernet(&f).unwrap();
            let Some(etherparse::TransportSlice::Tcp(t)) = &sliced.transport else {
                panic!()
            };
            assert_eq!(t.destination_port(), 8080);
        }
        assert!(nat_rewrite(
            &mut f,
            &ip,
            NatSide::Destination,
            "203.0.113.10".parse().unwrap(),
            80
        ));
        assert_eq!(f, orig);
    }

    #[test]
    fn encapsulation_keeps_link_header() {
        let mut f = Frame::from_bytes(&frame_v4_tcp());
        let p = parse_ethernet(f.data()).unwrap();
        let ip = *p.ip().unwrap();
        let t = TunnelOuter::V4(Ipv4Tunnel {
            src: "198.51.100.2".parse().unwrap(),
            dst: "198.51.100.11".parse().unwrap(),
            ttl: 64,
            ident: 7,
            dont_fragment: true,
        });
        let inner = f.data()[14..].to_vec();
        assert!(encapsulate(&mut f, &ip, &t));
        assert_eq!(&f.data()[..14], &frame_v4_tcp()[..14]);
        assert_eq!(&f.data()[34..], &inner[..]);
        let outer = Ipv4Packet::new_checked(&f.data()[14..]).unwrap();
        assert_eq!(outer.protocol(), 4);
        assert!(outer.verify_checksum());
    }
}
