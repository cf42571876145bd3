//! Builders for the packets the director originates: ICMPv4 / ICMPv6 errors, TCP RST, and the
//! outer headers of IPv4-in-IPv4 / IPv6-in-IPv6 tunnels.
//!
//! Headers are serialised with etherparse's header types; what is by hand is the policy
//! etherparse has no notion of: how much of the offending packet an error quotes (RFC 1812
//! §4.3.2.3: as much as fits in 576 bytes; RFC 4443 §2.4 (c): as much as fits in 1280), when an
//! error must not be sent at all (RFC 1812 §4.3.2.7, RFC 4443 §2.4 (e)), and how a RST answers a
//! segment (RFC 9293 §3.10.7.1, formerly RFC 793 "Reset Generation").
//!
//! Every builder writes into a caller-provided buffer and returns the length written, so the
//! forwarding path never allocates. No input panics: a buffer too small is
//! [`WireError::BufferTooSmall`], a forbidden reply is [`WireError::Refused`].

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::{
    Icmpv4Header, Icmpv4Type, Icmpv6Header, Icmpv6Type, IpDscp, IpEcn, IpNumber, Ipv4Header,
    Ipv6FlowLabel, Ipv6Header, TcpHeader, icmpv4, icmpv6,
};

use crate::WireError;
use crate::checksum;
use crate::parse::{Transport, is_icmpv4_error, is_icmpv6_error, parse_ip, proto, tcp_flags};
use crate::quote;

/// Largest ICMPv4 error datagram (RFC 1812 §4.3.2.3): the quote is cut to fit in 576 bytes.
pub const ICMPV4_ERROR_MAX: usize = 576;
/// Largest ICMPv6 error packet (RFC 4443 §2.4 (c)): the quote is cut to fit the IPv6 minimum MTU.
pub const ICMPV6_ERROR_MAX: usize = 1280;
/// Bytes an IPv4-in-IPv4 tunnel adds (RFC 2003).
pub const IPIP_OVERHEAD: usize = 20;
/// Bytes an IPv6-in-IPv6 tunnel adds (RFC 2473, without a tunnel encapsulation limit option).
pub const IP6IP6_OVERHEAD: usize = 40;

/// An ICMPv4 error the director can originate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Icmpv4Error {
    /// Destination unreachable (type 3) with the given code (3 = port unreachable).
    DestUnreachable {
        /// The unreachable code.
        code: u8,
    },
    /// Fragmentation needed and DF set (type 3 code 4) advertising the next-hop MTU (RFC 1191).
    FragNeeded {
        /// The next-hop MTU.
        mtu: u16,
    },
    /// Time exceeded (type 11): code 0 TTL exceeded in transit, 1 reassembly time exceeded.
    TimeExceeded {
        /// The time-exceeded code.
        code: u8,
    },
    /// Parameter problem (type 12 code 0) pointing at the offending octet.
    ParameterProblem {
        /// Offset of the offending octet in the quoted header.
        pointer: u8,
    },
}

/// An ICMPv6 error the director can originate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Icmpv6Error {
    /// Destination unreachable (type 1) with the given code (4 = port unreachable).
    DestUnreachable {
        /// The unreachable code.
        code: u8,
    },
    /// Packet too big (type 2) advertising the MTU (RFC 8201).
    PacketTooBig {
        /// The MTU of the next hop.
        mtu: u32,
    },
    /// Time exceeded (type 3): code 0 hop limit exceeded in transit.
    TimeExceeded {
        /// The time-exceeded code.
        code: u8,
    },
    /// Parameter problem (type 4).
    ParameterProblem {
        /// The parameter-problem code.
        code: u8,
        /// Offset of the offending octet.
        pointer: u32,
    },
}

impl Icmpv4Error {
    /// The ICMP type and code of the message this builds (to count one that is not built).
    pub const fn type_code(self) -> (u8, u8) {
        match self {
            Icmpv4Error::DestUnreachable { code } => (3, code),
            Icmpv4Error::FragNeeded { .. } => (3, 4),
            Icmpv4Error::TimeExceeded { code } => (11, code),
            Icmpv4Error::ParameterProblem { .. } => (12, 0),
        }
    }
}

impl Icmpv6Error {
    /// The ICMPv6 type and code of the message this builds (to count one that is not built).
    pub const fn type_code(self) -> (u8, u8) {
        match self {
            Icmpv6Error::DestUnreachable { code } => (1, code),
            Icmpv6Error::PacketTooBig { .. } => (2, 0),
            Icmpv6Error::TimeExceeded { code } => (3, code),
            Icmpv6Error::ParameterProblem { code, .. } => (4, code),
        }
    }
}

fn space(out: &[u8], needed: usize) -> Result<(), WireError> {
    if out.len() < needed {
        Err(WireError::BufferTooSmall {
            needed,
            available: out.len(),
        })
    } else {
        Ok(())
    }
}

fn io_to_wire(needed: usize, available: usize) -> impl Fn(std::io::Error) -> WireError {
    move |_| WireError::BufferTooSmall { needed, available }
}

/// The offending datagram bounded by its own total length (link padding is not quoted).
fn datagram(offending: &[u8]) -> &[u8] {
    let claimed = match offending.first().map(|b| b >> 4) {
        Some(4) => offending
            .get(2..4)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]]))),
        Some(6) => offending
            .get(4..6)
            .map(|b| 40 + usize::from(u16::from_be_bytes([b[0], b[1]]))),
        _ => None,
    };
    match claimed {
        Some(n) if n > 0 && n < offending.len() => &offending[..n],
        _ => offending,
    }
}

/// Build an ICMPv4 error from `src` to `dst` about `offending` (an IPv4 datagram from its header
/// on). Writes IPv4 header + ICMP message into `out`; returns the length.
///
/// Refuses (RFC 1812 §4.3.2.7) when the offending datagram is an ICMP error, a non-first fragment,
/// or was sent to a multicast or broadcast address, or from an address that does not name a
/// single host — the director must never be an amplifier.
pub fn icmpv4_error(
    out: &mut [u8],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    kind: Icmpv4Error,
    offending: &[u8],
    ttl: u8,
) -> Result<usize, WireError> {
    icmpv4_error_if(out, src, dst, kind, offending, ttl, || true)?.ok_or(NOT_PERMITTED)
}

/// What the plain builders return should their `permit` (always yes) ever say no.
const NOT_PERMITTED: WireError = WireError::Refused("not permitted");

/// [`icmpv4_error`], asking `permit` once every check that could refuse the error has passed
/// and before anything is written: `Ok(None)` when it says no. A rate limit asked here makes a
/// suppressed error cost those checks only, not the build (the quote's copy and checksum), and
/// keeps a refusal counted as a refusal, not as a suppression.
pub fn icmpv4_error_if(
    out: &mut [u8],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    kind: Icmpv4Error,
    offending: &[u8],
    ttl: u8,
    permit: impl FnOnce() -> bool,
) -> Result<Option<usize>, WireError> {
    let q = quote::read_ipv4(offending)?;
    if q.is_non_first_fragment() {
        return Err(WireError::Refused(
            "offending datagram is a non-first fragment",
        ));
    }
    if q.is_icmp_error() {
        return Err(WireError::Refused("offending datagram is an ICMP error"));
    }
    if let (IpAddr::V4(qs), IpAddr::V4(qd)) = (q.src, q.dst) {
        if qd.is_multicast() || qd.is_broadcast() {
            return Err(WireError::Refused(
                "offending datagram was multicast or broadcast",
            ));
        }
        if qs.is_unspecified() || qs.is_multicast() || qs.is_broadcast() || qs.is_loopback() {
            return Err(WireError::Refused("offending source is not a single host"));
        }
    }
    let body = datagram(offending);
    let quote_len = body.len().min(ICMPV4_ERROR_MAX - 20 - 8);
    let total = 20 + 8 + quote_len;
    space(out, total)?;
    if !permit() {
        return Ok(None);
    }

    let icmp_type =
        match kind {
            Icmpv4Error::DestUnreachable { code } => match code {
                4 => Icmpv4Type::DestinationUnreachable(
                    icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 0 },
                ),
                _ => Icmpv4Type::Unknown {
                    type_u8: 3,
                    code_u8: code,
                    bytes5to8: [0; 4],
                },
            },
            Icmpv4Error::FragNeeded { mtu } => Icmpv4Type::DestinationUnreachable(
                icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: mtu },
            ),
            Icmpv4Error::TimeExceeded { code } => Icmpv4Type::Unknown {
                type_u8: 11,
                code_u8: code,
                bytes5to8: [0; 4],
            },
            Icmpv4Error::ParameterProblem { pointer } => Icmpv4Type::Unknown {
                type_u8: 12,
                code_u8: 0,
                bytes5to8: [pointer, 0, 0, 0],
            },
        };
    let quoted = &body[..quote_len];
    // The checksum is filled in below, over the written message with this crate's sum
    // (etherparse's `with_checksum` sums in 16-bit steps: ~400 instructions for a 548-byte
    // quote, a fifth of a generated error's cost).
    let icmp = Icmpv4Header::new(icmp_type);
    let mut ip = Ipv4Header::new(
        (8 + quote_len) as u16,
        ttl,
        IpNumber::ICMP,
        src.octets(),
        dst.octets(),
    )
    .map_err(|_| WireError::BufferTooSmall {
        needed: total,
        available: out.len(),
    })?;
    // An error message is never fragmented on its way (RFC 1191 §4 leaves DF to the sender;
    // Linux sends errors with DF clear so a smaller MTU on the way back still delivers them).
    ip.dont_fragment = false;
    let avail = out.len();
    let mut w = &mut out[..];
    ip.write(&mut w).map_err(io_to_wire(total, avail))?;
    icmp.write(&mut w).map_err(io_to_wire(total, avail))?;
    out[28..total].copy_from_slice(quoted);
    let check = checksum::checksum(&out[20..total]);
    out[22..24].copy_from_slice(&check.to_be_bytes());
    Ok(Some(total))
}

/// Build an ICMPv6 error from `src` to `dst` about `offending` (an IPv6 packet from its header
/// on). Writes IPv6 header + ICMPv6 message into `out`; returns the length.
///
/// Refuses (RFC 4443 §2.4 (e)) when the offending packet is an ICMPv6 error, or was sent to a
/// multicast address (except packet too big and parameter problem code 2, which RFC 4443 allows),
/// or came from an unspecified or multicast source.
pub fn icmpv6_error(
    out: &mut [u8],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    kind: Icmpv6Error,
    offending: &[u8],
    hop_limit: u8,
) -> Result<usize, WireError> {
    icmpv6_error_if(out, src, dst, kind, offending, hop_limit, || true)?.ok_or(NOT_PERMITTED)
}

/// [`icmpv6_error`], asking `permit` as [`icmpv4_error_if`] does.
pub fn icmpv6_error_if(
    out: &mut [u8],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    kind: Icmpv6Error,
    offending: &[u8],
    hop_limit: u8,
    permit: impl FnOnce() -> bool,
) -> Result<Option<usize>, WireError> {
    let q = quote::read_ipv6(offending)?;
    if q.is_icmp_error() {
        return Err(WireError::Refused("offending packet is an ICMPv6 error"));
    }
    if let (IpAddr::V6(qs), IpAddr::V6(qd)) = (q.src, q.dst) {
        let allowed_to_multicast = matches!(
            kind,
            Icmpv6Error::PacketTooBig { .. } | Icmpv6Error::ParameterProblem { code: 2, .. }
        );
        if qd.is_multicast() && !allowed_to_multicast {
            return Err(WireError::Refused("offending packet was multicast"));
        }
        if qs.is_unspecified() || qs.is_multicast() || qs.is_loopback() {
            return Err(WireError::Refused("offending source is not a single host"));
        }
    }
    let body = datagram(offending);
    let quote_len = body.len().min(ICMPV6_ERROR_MAX - 40 - 8);
    let total = 40 + 8 + quote_len;
    space(out, total)?;
    if !permit() {
        return Ok(None);
    }
    let icmp_type = match kind {
        Icmpv6Error::DestUnreachable { code } => Icmpv6Type::Unknown {
            type_u8: 1,
            code_u8: code,
            bytes5to8: [0; 4],
        },
        Icmpv6Error::PacketTooBig { mtu } => Icmpv6Type::PacketTooBig { mtu },
        Icmpv6Error::TimeExceeded { code } => match icmpv6::TimeExceededCode::from_u8(code) {
            Some(c) => Icmpv6Type::TimeExceeded(c),
            None => Icmpv6Type::Unknown {
                type_u8: 3,
                code_u8: code,
                bytes5to8: [0; 4],
            },
        },
        Icmpv6Error::ParameterProblem { code, pointer } => Icmpv6Type::Unknown {
            type_u8: 4,
            code_u8: code,
            bytes5to8: pointer.to_be_bytes(),
        },
    };
    let quoted = &body[..quote_len];
    // Checksum filled in below (as in `icmpv4_error`), with the pseudo-header.
    let icmp = Icmpv6Header::new(icmp_type);
    let ip = Ipv6Header {
        traffic_class: 0,
        flow_label: Ipv6FlowLabel::ZERO,
        payload_length: (8 + quote_len) as u16,
        next_header: IpNumber::IPV6_ICMP,
        hop_limit,
        source: src.octets(),
        destination: dst.octets(),
    };
    let avail = out.len();
    let mut w = &mut out[..];
    ip.write(&mut w).map_err(io_to_wire(total, avail))?;
    icmp.write(&mut w).map_err(io_to_wire(total, avail))?;
    out[48..total].copy_from_slice(quoted);
    let pseudo = checksum::pseudo_header_v6(src, dst, proto::ICMPV6, (total - 40) as u32);
    let check = checksum::finish(checksum::sum(pseudo, &out[40..total]));
    out[42..44].copy_from_slice(&check.to_be_bytes());
    Ok(Some(total))
}

/// Build the TCP RST that answers `offending` (an IPv4 or IPv6 packet carrying a TCP segment),
/// sourced from the segment's destination (the VIP and virtual port), per RFC 9293 §3.10.7.1:
/// if the segment has ACK, `<SEQ=SEG.ACK><CTL=RST>`; otherwise
/// `<SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>` where SYN and FIN each count one.
///
/// Refuses to answer a RST (never reply to a reset), a non-first fragment, or a segment sent
/// to or from a multicast/broadcast address.
pub fn tcp_rst(out: &mut [u8], offending: &[u8], ttl: u8) -> Result<usize, WireError> {
    let parsed = parse_ip(offending)?;
    let ip = parsed.ip().ok_or(WireError::Refused("not an IP packet"))?;
    let flags = match ip.transport {
        Transport::Tcp { flags, .. } => flags,
        _ => return Err(WireError::Refused("not a whole TCP segment")),
    };
    if flags & tcp_flags::RST != 0 {
        return Err(WireError::Refused("never answer a reset with a reset"));
    }
    if ip.fragment.is_some() {
        return Err(WireError::Refused("segment is a fragment"));
    }
    let unicast = |a: IpAddr| match a {
        IpAddr::V4(a) => {
            !(a.is_multicast() || a.is_broadcast() || a.is_unspecified() || a.is_loopback())
        }
        IpAddr::V6(a) => !(a.is_multicast() || a.is_unspecified() || a.is_loopback()),
    };
    if !unicast(ip.src) || !unicast(ip.dst) {
        return Err(WireError::Refused("segment was not unicast"));
    }
    let seg = &offending[ip.l4_offset..ip.end()];
    let tcp = etherparse::TcpSlice::from_slice(seg)
        .map_err(|_| WireError::Refused("not a whole TCP segment"))?;
    let seg_len = tcp.payload().len() as u32 + u32::from(tcp.syn()) + u32::from(tcp.fin());
    let mut rst = TcpHeader::new(tcp.destination_port(), tcp.source_port(), 0, 0);
    rst.rst = true;
    if tcp.ack() {
        rst.sequence_number = tcp.acknowledgment_number();
    } else {
        rst.ack = true;
        rst.acknowledgment_number = tcp.sequence_number().wrapping_add(seg_len);
    }
    match (ip.dst, ip.src) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let total = 20 + 20;
            space(out, total)?;
            rst.checksum = rst
                .calc_checksum_ipv4_raw(s.octets(), d.octets(), &[])
                .map_err(|_| WireError::Refused("checksum"))?;
            let iph = Ipv4Header::new(20, ttl, IpNumber::TCP, s.octets(), d.octets())
                .map_err(|_| WireError::Refused("length"))?;
            let avail = out.len();
            let mut w = &mut out[..];
            iph.write(&mut w).map_err(io_to_wire(total, avail))?;
            rst.write(&mut w).map_err(io_to_wire(total, avail))?;
            Ok(total)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let total = 40 + 20;
            space(out, total)?;
            rst.checksum = rst
                .calc_checksum_ipv6_raw(s.octets(), d.octets(), &[])
                .map_err(|_| WireError::Refused("checksum"))?;
            let iph = Ipv6Header {
                traffic_class: 0,
                flow_label: Ipv6FlowLabel::ZERO,
                payload_length: 20,
                next_header: IpNumber::TCP,
                hop_limit: ttl,
                source: s.octets(),
                destination: d.octets(),
            };
            let avail = out.len();
            let mut w = &mut out[..];
            iph.write(&mut w).map_err(io_to_wire(total, avail))?;
            rst.write(&mut w).map_err(io_to_wire(total, avail))?;
            Ok(total)
        }
        _ => Err(WireError::Refused("mixed address families")),
    }
}

/// The outer header of an IPv4-in-IPv4 tunnel packet (RFC 2003).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Tunnel {
    /// Outer source: the director's tunnel address.
    pub src: Ipv4Addr,
    /// Outer destination: the real server.
    pub dst: Ipv4Addr,
    /// Outer TTL.
    pub ttl: u8,
    /// Outer identification (matters when DF is clear and the outer packet may be fragmented).
    pub ident: u16,
    /// Outer DF flag (copied from the inner DF when PMTU discovery is on).
    pub dont_fragment: bool,
}

/// Write the 20-byte outer IPv4 header for `inner` (an IPv4 datagram) into `out[..20]`.
///
/// DSCP and ECN are copied from the inner header (RFC 2003 §3.1 for the TOS, RFC 6040 §4.1 normal
/// mode for ECN); total length is `20 + inner.len()`.
pub fn ipip_header(out: &mut [u8], t: &Ipv4Tunnel, inner: &[u8]) -> Result<usize, WireError> {
    space(out, IPIP_OVERHEAD)?;
    let tos = match inner.first() {
        Some(b) if b >> 4 == 4 => inner.get(1).copied().unwrap_or(0),
        Some(b) => return Err(WireError::BadVersion(b >> 4)),
        None => return Err(WireError::truncated(crate::error::Layer::Ipv4, 20, 0)),
    };
    let payload = u16::try_from(inner.len())
        .ok()
        .filter(|l| usize::from(*l) + IPIP_OVERHEAD <= usize::from(u16::MAX))
        .ok_or(WireError::BadTotalLen {
            layer: crate::error::Layer::Ipv4,
            value: inner.len(),
        })?;
    let mut h = Ipv4Header::new(
        payload,
        t.ttl,
        IpNumber(proto::IPIP),
        t.src.octets(),
        t.dst.octets(),
    )
    .map_err(|_| WireError::BadTotalLen {
        layer: crate::error::Layer::Ipv4,
        value: inner.len(),
    })?;
    h.dscp = IpDscp::try_new(tos >> 2).unwrap_or(IpDscp::ZERO);
    h.ecn = IpEcn::try_new(tos & 0x03).unwrap_or(IpEcn::ZERO);
    h.identification = t.ident;
    h.dont_fragment = t.dont_fragment;
    let mut w = &mut out[..];
    h.write(&mut w)
        .map_err(io_to_wire(IPIP_OVERHEAD, IPIP_OVERHEAD))?;
    Ok(IPIP_OVERHEAD)
}

/// The outer header of an IPv6-in-IPv6 tunnel packet (RFC 2473).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Tunnel {
    /// Outer source: the director's tunnel address.
    pub src: Ipv6Addr,
    /// Outer destination: the real server.
    pub dst: Ipv6Addr,
    /// Outer hop limit.
    pub hop_limit: u8,
}

/// Write the 40-byte outer IPv6 header for `inner` (an IPv6 packet) into `out[..40]`.
///
/// Traffic class (DSCP and ECN) and flow label are copied from the inner header, so the tunnel
/// keeps the flow's ECMP hashing and QoS (RFC 2473 §6.5, RFC 6040, RFC 6438 §3).
pub fn ip6ip6_header(out: &mut [u8], t: &Ipv6Tunnel, inner: &[u8]) -> Result<usize, WireError> {
    space(out, IP6IP6_OVERHEAD)?;
    let first = inner.get(..4).ok_or(WireError::truncated(
        crate::error::Layer::Ipv6,
        40,
        inner.len(),
    ))?;
    if first[0] >> 4 != 6 {
        return Err(WireError::BadVersion(first[0] >> 4));
    }
    let w0 = u32::from_be_bytes([first[0], first[1], first[2], first[3]]);
    let payload_length = u16::try_from(inner.len()).map_err(|_| WireError::BadTotalLen {
        layer: crate::error::Layer::Ipv6,
        value: inner.len(),
    })?;
    let h = Ipv6Header {
        traffic_class: (w0 >> 20) as u8,
        flow_label: Ipv6FlowLabel::try_new(w0 & 0x000f_ffff).unwrap_or(Ipv6FlowLabel::ZERO),
        payload_length,
        next_header: IpNumber(proto::IPV6),
        hop_limit: t.hop_limit,
        source: t.src.octets(),
        destination: t.dst.octets(),
    };
    let mut w = &mut out[..];
    h.write(&mut w)
        .map_err(io_to_wire(IP6IP6_OVERHEAD, IP6IP6_OVERHEAD))?;
    Ok(IP6IP6_OVERHEAD)
}

/// Write a 14-byte Ethernet II header.
pub fn ethernet_header(
    out: &mut [u8],
    dst: [u8; 6],
    src: [u8; 6],
    ethertype: u16,
) -> Result<usize, WireError> {
    space(out, 14)?;
    out[0..6].copy_from_slice(&dst);
    out[6..12].copy_from_slice(&src);
    out[12..14].copy_from_slice(&ethertype.to_be_bytes());
    Ok(14)
}

/// True when `icmp_type` of the given family is an error (re-exported for builders' callers).
pub fn is_error(v6: bool, icmp_type: u8) -> bool {
    if v6 {
        is_icmpv6_error(icmp_type)
    } else {
        is_icmpv4_error(icmp_type)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rewrite::{IcmpPacket, Ipv4Packet};

    fn v4_tcp(flags: u8, payload: &[u8], df: bool) -> Vec<u8> {
        let mut tcp = TcpHeader::new(40000, 80, 1000, 65535);
        tcp.syn = flags & tcp_flags::SYN != 0;
        tcp.ack = flags & tcp_flags::ACK != 0;
        tcp.fin = flags & tcp_flags::FIN != 0;
        tcp.rst = flags & tcp_flags::RST != 0;
        tcp.acknowledgment_number = 5000;
        let builder = etherparse::PacketBuilder::ipv4([192, 0, 2, 1], [198, 51, 100, 10], 64);
        let mut v = Vec::new();
        builder.tcp_header(tcp).write(&mut v, payload).unwrap();
        if !df {
            v[6] &= !0x40;
            Ipv4Packet::new_unchecked(&mut v[..]).fill_checksum();
        }
        v
    }

    #[test]
    fn frag_needed_quotes_up_to_576() {
        let pkt = v4_tcp(tcp_flags::ACK, &[0x11; 1400], true);
        let mut out = vec![0xa5; 1500];
        let n = icmpv4_error(
            &mut out,
            Ipv4Addr::new(198, 51, 100, 10),
            Ipv4Addr::new(192, 0, 2, 1),
            Icmpv4Error::FragNeeded { mtu: 1480 },
            &pkt,
            64,
        )
        .unwrap();
        assert_eq!(n, 576);
        let ip = Ipv4Packet::new_checked(&out[..n]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(ip.total_len(), 576);
        assert_eq!(ip.protocol(), 1);
        let icmp = IcmpPacket::new_checked(&out[20..n]).unwrap();
        assert_eq!((icmp.msg_type(), icmp.msg_code()), (3, 4));
        assert_eq!(icmp.rest_of_header(), [0, 0, 0x05, 0xc8]);
        assert!(icmp.verify_checksum_v4());
        assert_eq!(icmp.payload(), &pkt[..548]);
        // etherparse, independently, computes the same checksum for that message.
        let ep = etherparse::Icmpv4Slice::from_slice(&out[20..n]).unwrap();
        let want = etherparse::Icmpv4Header::with_checksum(ep.icmp_type(), ep.payload());
        assert_eq!(ep.checksum(), want.checksum);
        // The quote reads back to the flow.
        let e = quote::read_icmpv4_error(&out[20..n]).unwrap();
        assert_eq!(e.mtu(false), Some(1480));
        assert_eq!(e.quote.reversed_key().unwrap().dport, 40000);
    }

    #[test]
    fn small_offender_quoted_whole_without_padding() {
        let mut pkt = v4_tcp(tcp_flags::SYN, &[], true);
        pkt.extend_from_slice(&[0; 6]); // Ethernet minimum-frame padding
        let mut out = [0u8; 600];
        let n = icmpv4_error(
            &mut out,
            Ipv4Addr::new(198, 51, 100, 10),
            Ipv4Addr::new(192, 0, 2, 1),
            Icmpv4Error::DestUnreachable { code: 3 },
            &pkt,
            64,
        )
        .unwrap();
        assert_eq!(n, 28 + 40);
    }

    #[test]
    fn refuses_to_amplify() {
        let mut out = [0u8; 600];
        let me = Ipv4Addr::new(198, 51, 100, 10);
        let them = Ipv4Addr::new(192, 0, 2, 1);
        let kind = Icmpv4Error::DestUnreachable { code: 3 };
        // About an ICMP error.
        let mut err = vec![0u8; 28 + 40];
        let inner = v4_tcp(tcp_flags::ACK, &[], true);
        let n = icmpv4_error(&mut err, me, them, kind, &inner, 64).unwrap();
        let e = icmpv4_error(&mut out, me, them, kind, &err[..n], 64);
        assert!(matches!(e, Err(WireError::Refused(_))));
        // About a broadcast.
        let mut b = v4_tcp(tcp_flags::ACK, &[], true);
        b[16..20].copy_from_slice(&[255, 255, 255, 255]);
        assert!(matches!(
            icmpv4_error(&mut out, me, them, kind, &b, 64),
            Err(WireError::Refused(_))
        ));
        // About a non-first fragment.
        let mut f = v4_tcp(tcp_flags::ACK, &[], false);
        f[7] = 10;
        assert!(matches!(
            icmpv4_error(&mut out, me, them, kind, &f, 64),
            Err(WireError::Refused(_))
        ));
        // Buffer too small.
        let ok = v4_tcp(tcp_flags::ACK, &[], true);
        assert!(matches!(
            icmpv4_error(&mut out[..30], me, them, kind, &ok, 64),
            Err(WireError::BufferTooSmall { .. })
        ));
    }

    fn v6_udp(len: usize) -> Vec<u8> {
        let b = etherparse::PacketBuilder::ipv6(
            "2001:db8:1::1".parse::<Ipv6Addr>().unwrap().octets(),
            "2001:db8:2::10".parse::<Ipv6Addr>().unwrap().octets(),
            64,
        )
        .udp(5000, 53);
        let mut v = Vec::new();
        b.write(&mut v, &vec![0x22; len]).unwrap();
        v
    }

    #[test]
    fn packet_too_big_quotes_up_to_1280() {
        let pkt = v6_udp(1400);
        let mut out = vec![0xa5; 1500];
        let src: Ipv6Addr = "2001:db8:2::10".parse().unwrap();
        let dst: Ipv6Addr = "2001:db8:1::1".parse().unwrap();
        let n = icmpv6_error(
            &mut out,
            src,
            dst,
            Icmpv6Error::PacketTooBig { mtu: 1400 },
            &pkt,
            64,
        )
        .unwrap();
        assert_eq!(n, 1280);
        let icmp = IcmpPacket::new_checked(&out[40..n]).unwrap();
        assert!(icmp.verify_checksum_v6(src, dst));
        assert_eq!(icmp.rest_of_header(), 1400u32.to_be_bytes());
        let e = quote::read_icmpv6_error(&out[40..n]).unwrap();
        assert_eq!(e.mtu(true), Some(1400));
        assert_eq!(e.quote.reversed_key().unwrap().sport, 53);
        // etherparse agrees the checksum is right.
        let s = etherparse::Icmpv6Slice::from_slice(&out[40..n]).unwrap();
        assert!(s.is_checksum_valid(src.octets(), dst.octets()));
    }

    #[test]
    fn rst_for_ack_segment() {
        let pkt = v4_tcp(tcp_flags::ACK, b"hello", true);
        let mut out = [0xa5u8; 100];
        let n = tcp_rst(&mut out, &pkt, 64).unwrap();
        assert_eq!(n, 40);
        let p = parse_ip(&out[..n]).unwrap();
        let ip = p.ip().unwrap();
        assert_eq!(ip.src, IpAddr::V4(Ipv4Addr::new(198, 51, 100, 10)));
        assert_eq!(
            ip.transport,
            Transport::Tcp {
                sport: 80,
                dport: 40000,
                flags: tcp_flags::RST
            }
        );
        let t = etherparse::TcpSlice::from_slice(&out[20..n]).unwrap();
        assert_eq!(t.sequence_number(), 5000);
        assert!(
            Ipv4Packet::new_checked(&out[..n])
                .unwrap()
                .verify_checksum()
        );
        let acc = checksum::pseudo_header_v4(
            Ipv4Addr::new(198, 51, 100, 10),
            Ipv4Addr::new(192, 0, 2, 1),
            6,
            20,
        );
        assert!(checksum::verify(checksum::sum(acc, &out[20..n])));
    }

    #[test]
    fn rst_for_syn_fin_counts_flags() {
        let pkt = v4_tcp(tcp_flags::SYN | tcp_flags::FIN, b"abc", true);
        let mut out = [0u8; 100];
        let n = tcp_rst(&mut out, &pkt, 64).unwrap();
        let t = etherparse::TcpSlice::from_slice(&out[20..n]).unwrap();
        assert!(t.rst() && t.ack());
        assert_eq!(t.sequence_number(), 0);
        assert_eq!(t.acknowledgment_number(), 1000 + 3 + 1 + 1);
        // Never answer a RST.
        let rst = v4_tcp(tcp_flags::RST, &[], true);
        assert!(matches!(
            tcp_rst(&mut out, &rst, 64),
            Err(WireError::Refused(_))
        ));
    }

    #[test]
    fn tunnel_headers() {
        let mut inner = v4_tcp(tcp_flags::ACK, b"x", true);
        inner[1] = 0xb9; // DSCP 46, ECN 01
        let mut out = [0xa5u8; 20];
        let t = Ipv4Tunnel {
            src: Ipv4Addr::new(198, 51, 100, 2),
            dst: Ipv4Addr::new(198, 51, 100, 21),
            ttl: 64,
            ident: 0x4242,
            dont_fragment: true,
        };
        assert_eq!(ipip_header(&mut out, &t, &inner).unwrap(), 20);
        let o = Ipv4Packet::new_checked(&out[..]).unwrap();
        assert_eq!(o.tos(), 0xb9);
        assert_eq!(o.protocol(), 4);
        assert_eq!(usize::from(o.total_len()), 20 + inner.len());
        assert!(o.dont_frag());
        assert_eq!(o.ident(), 0x4242);
        assert!(o.verify_checksum());

        let mut inner6 = v6_udp(10);
        inner6[0] = 0x6b;
        inner6[1] = 0x81;
        inner6[2] = 0x23;
        let mut out6 = [0xa5u8; 40];
        let t6 = Ipv6Tunnel {
            src: "2001:db8:2::2".parse().unwrap(),
            dst: "2001:db8:2::21".parse().unwrap(),
            hop_limit: 64,
        };
        assert_eq!(ip6ip6_header(&mut out6, &t6, &inner6).unwrap(), 40);
        let p = crate::rewrite::Ipv6Packet::new_checked(&out6[..]).unwrap();
        assert_eq!(p.traffic_class(), 0xb8);
        assert_eq!(p.flow_label(), 0x12300 | (inner6[3] as u32));
        assert_eq!(p.next_header(), 41);
        assert_eq!(usize::from(p.payload_len()), inner6.len());
        assert!(matches!(
            ip6ip6_header(&mut out6, &t6, &inner),
            Err(WireError::BadVersion(4))
        ));
    }

    /// The gate is asked only after every refusal check, nothing is written when it says no,
    /// and `type_code` names what the builder writes.
    #[test]
    fn permit_is_asked_after_the_checks_and_before_the_build() {
        let me = Ipv4Addr::new(198, 51, 100, 10);
        let them = Ipv4Addr::new(192, 0, 2, 1);
        let ok = v4_tcp(tcp_flags::ACK, &[0x11; 100], true);
        let kinds4 = [
            Icmpv4Error::DestUnreachable { code: 3 },
            Icmpv4Error::FragNeeded { mtu: 1400 },
            Icmpv4Error::TimeExceeded { code: 0 },
            Icmpv4Error::ParameterProblem { pointer: 9 },
        ];
        for kind in kinds4 {
            let mut out = vec![0xa5; 1500];
            let mut asked = 0;
            let r = icmpv4_error_if(&mut out, me, them, kind, &ok, 64, || {
                asked += 1;
                false
            });
            assert!(matches!(r, Ok(None)), "{kind:?}");
            assert_eq!(asked, 1);
            assert!(
                out.iter().all(|&b| b == 0xa5),
                "written though not permitted"
            );
            let n = icmpv4_error_if(&mut out, me, them, kind, &ok, 64, || true)
                .unwrap()
                .unwrap();
            assert!(n > 28);
            assert_eq!(kind.type_code(), (out[20], out[21]), "{kind:?}");
        }
        // A refusal (an ICMP error is never answered) comes before the gate: not asked.
        let mut err = vec![0u8; 200];
        let n = icmpv4_error(&mut err, them, me, kinds4[0], &ok, 64).unwrap();
        let mut out = vec![0xa5; 1500];
        let mut asked = false;
        let r = icmpv4_error_if(&mut out, me, them, kinds4[0], &err[..n], 64, || {
            asked = true;
            true
        });
        assert!(matches!(r, Err(WireError::Refused(_))));
        assert!(!asked);

        let src: Ipv6Addr = "2001:db8:2::10".parse().unwrap();
        let dst: Ipv6Addr = "2001:db8:1::1".parse().unwrap();
        let pkt = v6_udp(100);
        let kinds6 = [
            Icmpv6Error::DestUnreachable { code: 4 },
            Icmpv6Error::PacketTooBig { mtu: 1400 },
            Icmpv6Error::TimeExceeded { code: 0 },
            Icmpv6Error::ParameterProblem {
                code: 1,
                pointer: 40,
            },
        ];
        for kind in kinds6 {
            let mut out = vec![0xa5; 1500];
            let r = icmpv6_error_if(&mut out, src, dst, kind, &pkt, 64, || false);
            assert!(matches!(r, Ok(None)), "{kind:?}");
            assert!(
                out.iter().all(|&b| b == 0xa5),
                "written though not permitted"
            );
            let n = icmpv6_error_if(&mut out, src, dst, kind, &pkt, 64, || true)
                .unwrap()
                .unwrap();
            assert!(n > 48);
            assert_eq!(kind.type_code(), (out[40], out[41]), "{kind:?}");
        }
    }
}
