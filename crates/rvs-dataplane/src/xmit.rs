//! The transmitters, one per forwarding method, rewriting a frame in place (IPVS's
//! `ip_vs_xmit.c` split): NAT rewrites addresses and ports with incremental checksums, DR leaves
//! L3 alone, TUN prepends an outer header. Every method decrements the TTL / hop limit.
//!
//! Each function takes the frame and the offsets its parse found; none allocates except the
//! tunnel's rare headroom move. None panics: offsets come from `rvs_wire::parse`, which checked
//! them, and every view is created with `new_checked`.

use core::net::IpAddr;

use rvs_wire::build::{self, Ipv4Tunnel, Ipv6Tunnel};
use rvs_wire::checksum;
use rvs_wire::flow::{self, Flow};
use rvs_wire::parse::IpInfo;
use rvs_wire::rewrite::Ipv6Packet;

use crate::frame::Frame;

/// Decrement the TTL (IPv4, checksum adjusted) or hop limit (IPv6) of the IP packet at `l3`.
/// Returns false when the bytes are not an IP header (never for a parsed frame).
#[inline]
pub fn decrement_ttl(data: &mut [u8], ip: &IpInfo) -> bool {
    let Some(l3) = data.get_mut(ip.l3_offset..) else {
        return false;
    };
    if ip.is_ipv4() {
        // The same checks as `Ipv4Packet::new_checked` (version 4, IHL ≥ 5, the header held).
        let Some(&vihl) = l3.first() else {
            return false;
        };
        let ihl = usize::from(vihl & 0x0f) * 4;
        if vihl >> 4 != 4 || ihl < 20 || l3.len() < ihl {
            return false;
        }
        match l3.get_mut(8..12) {
            Some(h) => {
                ipv4_ttl_down(h);
                true
            }
            None => false,
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

/// [`decrement_ttl`] of a frame the fast reader accepted (its IP header at [`flow::L3`], IPv4
/// without options).
#[inline(always)]
pub fn decrement_ttl_flow(data: &mut [u8], f: &Flow) {
    if f.v6 {
        if let Some(h) = data.get_mut(flow::L3 + 7) {
            *h = h.saturating_sub(1);
        }
    } else if let Some(h) = data.get_mut(flow::L3 + 8..flow::L3 + 12) {
        ipv4_ttl_down(h);
    }
}

/// Decrement the TTL of an IPv4 header whose bytes 8..12 (TTL, protocol, checksum) are `h`,
/// the checksum updated by [`checksum::ttl_decrement`] (spelled out here so it inlines). A TTL
/// of 0 (never forwarded: `ttl_check` wants 2 or more) is left as it is.
#[inline(always)]
fn ipv4_ttl_down(h: &mut [u8]) {
    let Some([ttl, _, c0, c1]) = h.first_chunk_mut::<4>() else {
        return;
    };
    if *ttl == 0 {
        return;
    }
    *ttl -= 1;
    [*c0, *c1] = checksum::ttl_decrement(u16::from_be_bytes([*c0, *c1])).to_be_bytes();
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
    // Fixed offsets from the parsed header lengths, written in place: through the checked
    // packet views of `rvs_wire::rewrite` this took about 280 instructions per packet, most of
    // a NAT SYN's difference from a DR one. The checksums come out as the views' updates
    // (address, then port) make them: their change terms are summed and applied at once,
    // which RFC 1624 eqn. 3 makes equal.
    let (ck_off, min, udp) = match ip.protocol {
        6 => (16, 20, false),
        17 => (6, 8, true),
        _ => return false,
    };
    let (l3, l4, end) = (ip.l3_offset, ip.l4_offset, ip.end());
    if end > data.len() || l4 > end || l3 > l4 || end - l4 < min {
        return false;
    }
    let v6 = !ip.is_ipv4();
    let dst = side == NatSide::Destination;
    let Some((new_bytes, alen)) = addr_field(addr, v6) else {
        return false;
    };
    let addr_at = match (v6, dst) {
        (false, true) => l3 + 16,
        (false, false) => l3 + 12,
        (true, true) => l3 + 24,
        (true, false) => l3 + 8,
    };
    if addr_at + alen > l4 {
        return false;
    }
    let Some(old) = swap_addr(data, addr_at, &new_bytes, alen) else {
        return false;
    };
    let d_addr = addr_delta(v6, &old, &new_bytes);
    if !v6 {
        let Some(ck) = get16(data, l3 + 10) else {
            return false;
        };
        put16(data, l3 + 10, checksum::apply(ck, d_addr));
    }
    let port_at = l4 + if dst { 2 } else { 0 };
    let (Some(ck), Some(old_port)) = (get16(data, l4 + ck_off), get16(data, port_at)) else {
        return false;
    };
    put16(data, port_at, port);
    // A zero UDP checksum stays zero: "none" over IPv4 (RFC 768); over IPv6 an RFC 6936
    // zero-checksum tunnel or invalid, for the receiver to judge. Address and port change in
    // one update (one fold): eqn. 3 over both words equals the two updates in turn.
    if !(udp && ck == 0) {
        let c = checksum::apply(ck, d_addr + checksum::delta16(old_port, port));
        put16(
            data,
            l4 + ck_off,
            if udp { checksum::udp_nonzero(c) } else { c },
        );
    }
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

/// Which way a NAT'd ICMP error travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IcmpNat {
    /// From the client side to the dest: outer destination VIP → RIP, quoted source
    /// VIP:vport → RIP:rport (the quote is what the client received from the VIP).
    ToDest,
    /// From the dest side to the client: outer source → VIP, quoted destination
    /// RIP:rport → VIP:vport (the quote is what the dest received from the client).
    ToClient,
}

/// `addr` as an address field of a packet of family `v6`: its bytes zero-padded to 16 and its
/// length (4 or 16); `None` when the families differ.
#[inline(always)]
fn addr_field(addr: IpAddr, v6: bool) -> Option<([u8; 16], usize)> {
    match addr {
        IpAddr::V4(a) if !v6 => Some((u128::from(u32::from_le_bytes(a.octets())).to_le_bytes(), 4)),
        IpAddr::V6(a) if v6 => Some((a.octets(), 16)),
        _ => None,
    }
}

/// Write the first `alen` bytes of `new` (4 or 16) at `at`; the bytes they replace, zero-padded
/// to 16, or `None` when out of `d`.
#[inline(always)]
fn swap_addr(d: &mut [u8], at: usize, new: &[u8; 16], alen: usize) -> Option<[u8; 16]> {
    // Two fixed-size cases: a copy of a run known only at run time became calls to memset and
    // memcpy.
    if alen == 16 {
        let field: &mut [u8; 16] = d.get_mut(at..at + 16)?.try_into().ok()?;
        let old = *field;
        *field = *new;
        Some(old)
    } else {
        let field: &mut [u8; 4] = d.get_mut(at..at + 4)?.try_into().ok()?;
        let [a, b, c, e] = *field;
        let [w, x, y, z, ..] = *new;
        *field = [w, x, y, z];
        Some([a, b, c, e, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
    }
}

/// The RFC 1624 change term ([`checksum::delta16`]) of an address going from `old` to `new`
/// (the first 4 bytes for IPv4, all 16 for IPv6).
#[inline(always)]
fn addr_delta(v6: bool, old: &[u8; 16], new: &[u8; 16]) -> u64 {
    // `delta_bytes` takes its 32-bit shortcut for the IPv4 4-byte run.
    let n = if v6 { 16 } else { 4 };
    checksum::delta_bytes(&old[..n], &new[..n])
}

fn get16(d: &[u8], at: usize) -> Option<u16> {
    d.get(at..at + 2).map(|b| u16::from_be_bytes([b[0], b[1]]))
}

fn put16(d: &mut [u8], at: usize, v: u16) -> bool {
    match d.get_mut(at..at + 2) {
        Some(b) => {
            b.copy_from_slice(&v.to_be_bytes());
            true
        }
        None => false,
    }
}

/// NAT an ICMP / ICMPv6 error in place (IPVS `ip_vs_nat_icmp`): the outer address, the quoted
/// address and the quoted port, with RFC 1624 updates of the outer IPv4 header checksum, the
/// quoted IPv4 header checksum, the quoted TCP/UDP checksum when its field is quoted, and the
/// ICMP checksum (ICMPv6: including its pseudo-header). Returns false, leaving
/// the frame unusable, when the message is not a readable error (callers check before).
pub fn nat_icmp_error(data: &mut [u8], ip: &IpInfo, dir: IcmpNat, addr: IpAddr, port: u16) -> bool {
    let (l3, l4, end) = (ip.l3_offset, ip.l4_offset, ip.end());
    if end > data.len() || l4 + 8 > end || l3 > l4 {
        return false;
    }
    let v6 = !ip.is_ipv4();
    let (qhl, qproto, qlen) = {
        let msg = &data[l4..end];
        let e = if v6 {
            rvs_wire::quote::read_icmpv6_error(msg)
        } else {
            rvs_wire::quote::read_icmpv4_error(msg)
        };
        let Ok(e) = e else { return false };
        let q = e.quote;
        if q.is_ipv4() == v6 || q.is_non_first_fragment() {
            return false;
        }
        (q.header_len, q.protocol, q.bytes().len())
    };
    nat_icmp_error_quoted(data, ip, (qhl, qproto, qlen), dir, addr, port)
}

/// [`nat_icmp_error`] with the quote already read: its header length, protocol and captured
/// length (`quote`), for a quote of the outer packet's family that is not a later fragment
/// (what [`rvs_wire::flow::read_error`] guarantees, so its fast path skips the second read).
pub fn nat_icmp_error_quoted(
    data: &mut [u8],
    ip: &IpInfo,
    quote: (usize, u8, usize),
    dir: IcmpNat,
    addr: IpAddr,
    port: u16,
) -> bool {
    let (qhl, qproto, qlen) = quote;
    let (l3, l4, end) = (ip.l3_offset, ip.l4_offset, ip.end());
    if end > data.len() || l4 + 8 + qlen > end || l3 > l4 {
        return false;
    }
    let v6 = !ip.is_ipv4();
    let q0 = l4 + 8;
    // The address that changes: in the outer header, and in the quoted one.
    let (outer_at, qaddr_at) = match (v6, dir) {
        (false, IcmpNat::ToDest) => (l3 + 16, q0 + 12),
        (false, IcmpNat::ToClient) => (l3 + 12, q0 + 16),
        (true, IcmpNat::ToDest) => (l3 + 24, q0 + 8),
        (true, IcmpNat::ToClient) => (l3 + 8, q0 + 24),
    };
    let Some((new_bytes, alen)) = addr_field(addr, v6) else {
        return false;
    };
    if outer_at + alen > l4 {
        return false;
    }
    // Outer header (written in place: the parsed offsets are known, and going through the
    // checked packet views cost as much again as the rest of this function).
    let Some(old_outer) = swap_addr(data, outer_at, &new_bytes, alen) else {
        return false;
    };
    // The ICMP checksum's change terms add up here and are applied once at the end (one fold
    // instead of one per field; eqn. 3 over all the changed words equals updates in turn).
    let mut icmp_d = 0u64;
    let d_outer = addr_delta(v6, &old_outer, &new_bytes);
    if v6 {
        // The ICMPv6 checksum covers the outer addresses through its pseudo-header.
        icmp_d += d_outer;
    } else {
        let Some(ck) = get16(data, l3 + 10) else {
            return false;
        };
        put16(data, l3 + 10, checksum::apply(ck, d_outer));
    }
    // Quoted address.
    let Some(old_bytes) = swap_addr(data, qaddr_at, &new_bytes, alen) else {
        return false;
    };
    let d_quoted = addr_delta(v6, &old_bytes, &new_bytes);
    icmp_d += d_quoted;
    if !v6 {
        // The quoted IPv4 header checksum follows its address change.
        let Some(old_qck) = get16(data, q0 + 10) else {
            return false;
        };
        let new_qck = checksum::apply(old_qck, d_quoted);
        put16(data, q0 + 10, new_qck);
        icmp_d += checksum::delta16(old_qck, new_qck);
    }
    // Quoted port.
    let port_at = q0 + qhl + if dir == IcmpNat::ToDest { 0 } else { 2 };
    if port_at + 2 > q0 + qlen {
        return false;
    }
    let Some(old_port) = get16(data, port_at) else {
        return false;
    };
    put16(data, port_at, port);
    let d_port = checksum::delta16(old_port, port);
    icmp_d += d_port;
    // Quoted L4 checksum, whenever its field is inside the quote (as Linux's NAT does): the
    // update is incremental, so it needs the field, not the whole segment, and it gives the
    // dest back exactly the bytes it sent. An 8-byte quote (RFC 792 minimum) holds no TCP
    // checksum; a zero UDP checksum stays zero.
    let l4_ck_at = match qproto {
        6 => Some(q0 + qhl + 16),
        17 => Some(q0 + qhl + 6),
        _ => None,
    };
    if let Some(at) = l4_ck_at
        && at + 2 <= q0 + qlen
        && let Some(old_l4) = get16(data, at)
        && !(qproto == 17 && old_l4 == 0)
    {
        let mut c = checksum::apply(old_l4, d_quoted + d_port);
        if qproto == 17 {
            c = checksum::udp_nonzero(c);
        }
        put16(data, at, c);
        icmp_d += checksum::delta16(old_l4, c);
    }
    let Some(icmp_ck) = get16(data, l4 + 2) else {
        return false;
    };
    put16(data, l4 + 2, checksum::apply(icmp_ck, icmp_d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rvs_wire::parse::parse_ethernet;
    use rvs_wire::rewrite::Ipv4Packet;

    /// The TTL byte drops and the checksum bytes take [`checksum::ttl_decrement`]; TTL 0 stays.
    #[test]
    fn ttl_down_writes_ttl_and_checksum() {
        let mut h = [64, 6, 0xfe, 0xff];
        ipv4_ttl_down(&mut h);
        assert_eq!(h, [63, 6, 0x00, 0x00]);
        let mut h = [64, 6, 0x12, 0x34];
        ipv4_ttl_down(&mut h);
        assert_eq!(h, [63, 6, 0x13, 0x34]);
        let mut h = [0, 6, 0xff, 0xff];
        ipv4_ttl_down(&mut h);
        assert_eq!(h, [0, 6, 0xff, 0xff]);
    }

    fn frame_v4_tcp() -> Vec<u8> {
        let mut v = Vec::new();
        etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([192, 0, 2, 1], [203, 0, 113, 10], 64)
            .tcp(40000, 80, 1, 1000)
            .write(&mut v, b"hello")
            .unwrap();
        v
    }

    /// Over every 2-byte payload of a UDP datagram, the rewritten checksum is what an
    /// independent computation gives, the one datagram whose rewritten sum is zero included:
    /// sent as 0xffff (RFC 768), never as 0, "no checksum".
    #[test]
    fn nat_udp_checksum_never_becomes_zero() {
        let mut zero_case = false;
        for v in 0..=u16::MAX {
            let mut f = Vec::new();
            etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
                .ipv4([192, 0, 2, 1], [203, 0, 113, 10], 64)
                .udp(40000, 53)
                .write(&mut f, &v.to_be_bytes())
                .unwrap();
            let ip = *parse_ethernet(&f).unwrap().ip().unwrap();
            let to = "198.51.100.11".parse().unwrap();
            assert!(nat_rewrite(&mut f, &ip, NatSide::Destination, to, 8080));
            let sliced = etherparse::SlicedPacket::from_ethernet(&f).unwrap();
            let Some(etherparse::NetSlice::Ipv4(ip4)) = sliced.net else {
                panic!("not IPv4");
            };
            let Some(etherparse::TransportSlice::Udp(udp)) = sliced.transport else {
                panic!("not UDP");
            };
            let want = udp
                .to_header()
                .calc_checksum_ipv4(&ip4.header().to_header(), udp.payload())
                .unwrap();
            assert_eq!(udp.checksum(), want, "payload {v:#06x}");
            assert_ne!(udp.checksum(), 0, "payload {v:#06x}");
            zero_case |= want == 0xffff;
        }
        assert!(zero_case, "no payload reached the all-ones case");
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
