//! The one-pass frame parse the dataplane runs on every packet: Ethernet (802.1Q too) → IPv4 /
//! IPv6 (options, extension headers, fragments) → TCP / UDP / ICMP, every length checked.
//!
//! The reference parse is etherparse's ([`etherparse::SlicedPacket`]); this module turns its
//! slices into what a director needs — offsets into the caller's buffer for in-place rewriting,
//! the flow key, fragment facts, the ICMP type — and maps etherparse's errors onto [`WireError`].
//!
//! Why there is also a hand-written fast path: `cargo bench -p rvs-wire` measured etherparse's
//! `SlicedPacket::from_ethernet` alone at ~49 ns for an Ethernet/IPv4/TCP frame on this project's
//! machines, against a 20 ns budget for the whole parse (see BENCHMARKS.md). [`parse_ethernet`]
//! therefore first tries a straight-line reader for the forwarding path's common shapes (Ethernet,
//! up to three 802.1Q/802.1ad tags, IPv4 without AH, IPv6 without extension headers, TCP, UDP,
//! ICMP). It only ever answers when etherparse would accept the same bytes and produce the same
//! [`ParsedFrame`]; anything else — every malformed frame included — falls through to etherparse,
//! so errors are always etherparse's. The differential tests (`tests/corpus.rs` and the
//! property tests below) hold the two paths equal.
//!
//! Nothing here allocates; no input panics.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::{
    InternetSlice, Ipv6ExtensionSlice, LenSource, LinkExtSlice, LinkSlice, SlicedPacket,
    TransportSlice, err,
};

use crate::WireError;
use crate::error::Layer;

/// IP protocol numbers the director cares about.
pub mod proto {
    /// ICMP for IPv4 (RFC 792).
    pub const ICMP: u8 = 1;
    /// IPv4-in-IP encapsulation (RFC 2003).
    pub const IPIP: u8 = 4;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// IPv6-in-IP encapsulation (RFC 2473).
    pub const IPV6: u8 = 41;
    /// IPv6 Fragment extension header.
    pub const IPV6_FRAG: u8 = 44;
    /// ICMPv6 (RFC 4443).
    pub const ICMPV6: u8 = 58;
    /// SCTP.
    pub const SCTP: u8 = 132;
}

/// EtherType values used by the director.
pub mod ethertype {
    /// IPv4.
    pub const IPV4: u16 = 0x0800;
    /// ARP.
    pub const ARP: u16 = 0x0806;
    /// IPv6.
    pub const IPV6: u16 = 0x86dd;
    /// 802.1Q VLAN tag.
    pub const VLAN: u16 = 0x8100;
}

/// A transport flow as seen on the wire: protocol, source and destination address and port.
///
/// For ICMP, ports are zero. The director's connection table is keyed by these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    /// IP protocol number (6 TCP, 17 UDP, ...).
    pub protocol: u8,
    /// Source address.
    pub src: IpAddr,
    /// Source port.
    pub sport: u16,
    /// Destination address.
    pub dst: IpAddr,
    /// Destination port.
    pub dport: u16,
}

impl FlowKey {
    /// The same flow seen from the other end (source and destination swapped).
    #[inline]
    pub fn reversed(&self) -> FlowKey {
        FlowKey {
            protocol: self.protocol,
            src: self.dst,
            sport: self.dport,
            dst: self.src,
            dport: self.sport,
        }
    }
}

/// IP fragmentation facts of a datagram (IPv4 flags/offset or an IPv6 Fragment header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fragment {
    /// Identification (16 bits for IPv4, 32 for IPv6).
    pub ident: u32,
    /// Fragment offset in bytes.
    pub offset: u16,
    /// More-fragments flag.
    pub more: bool,
}

impl Fragment {
    /// True for the first fragment (offset 0), which carries the transport header.
    #[inline]
    pub fn is_first(&self) -> bool {
        self.offset == 0
    }
}

/// What follows the IP header(s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// TCP with its ports and flags byte (FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10, URG 0x20, ECE 0x40, CWR 0x80).
    Tcp {
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
        /// Flags byte 13 of the TCP header.
        flags: u8,
    },
    /// UDP with its ports.
    Udp {
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
    },
    /// An ICMPv4 message.
    Icmpv4 {
        /// Type.
        icmp_type: u8,
        /// Code.
        code: u8,
    },
    /// An ICMPv6 message.
    Icmpv6 {
        /// Type.
        icmp_type: u8,
        /// Code.
        code: u8,
    },
    /// A non-first fragment: no transport header is present.
    Fragment,
    /// Another protocol (or a first fragment too short to hold the ports).
    Other,
}

/// TCP flag bits, as in [`Transport::Tcp`]'s `flags`.
pub mod tcp_flags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;
}

/// An IPv4 or IPv6 packet located inside a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpInfo {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// The upper-layer protocol after all IPv6 extension headers.
    pub protocol: u8,
    /// TTL or hop limit.
    pub ttl: u8,
    /// Offset of the IP header in the buffer.
    pub l3_offset: usize,
    /// Offset of the upper-layer header in the buffer (after IPv4 options / IPv6 extension headers).
    pub l4_offset: usize,
    /// Upper-layer bytes as the IP length fields say (and the buffer holds: checked).
    pub l4_len: usize,
    /// Fragment facts if the datagram is a fragment.
    pub fragment: Option<Fragment>,
    /// The transport header summary.
    pub transport: Transport,
}

impl IpInfo {
    /// True for IPv4.
    #[inline]
    pub fn is_ipv4(&self) -> bool {
        self.src.is_ipv4()
    }

    /// End of the IP packet in the buffer (anything after it is link padding).
    #[inline]
    pub fn end(&self) -> usize {
        self.l4_offset + self.l4_len
    }

    /// The flow key, when the transport has ports (TCP, UDP) or is ICMP (ports zero).
    #[inline]
    pub fn flow_key(&self) -> Option<FlowKey> {
        let (sport, dport) = match self.transport {
            Transport::Tcp { sport, dport, .. } | Transport::Udp { sport, dport } => (sport, dport),
            Transport::Icmpv4 { .. } | Transport::Icmpv6 { .. } => (0, 0),
            Transport::Fragment | Transport::Other => return None,
        };
        Some(FlowKey {
            protocol: self.protocol,
            src: self.src,
            sport,
            dst: self.dst,
            dport,
        })
    }

    /// True when the transport is an ICMPv4 or ICMPv6 error message (the kinds that quote a datagram).
    #[inline]
    pub fn is_icmp_error(&self) -> bool {
        match self.transport {
            Transport::Icmpv4 { icmp_type, .. } => is_icmpv4_error(icmp_type),
            Transport::Icmpv6 { icmp_type, .. } => is_icmpv6_error(icmp_type),
            _ => false,
        }
    }
}

/// ICMPv4 error types (RFC 792, RFC 1812 §4.3.2.2): destination unreachable, source quench,
/// redirect, time exceeded, parameter problem.
#[inline]
pub fn is_icmpv4_error(icmp_type: u8) -> bool {
    matches!(icmp_type, 3 | 4 | 5 | 11 | 12)
}

/// ICMPv6 error types (RFC 4443 §2.1: types 0–127): destination unreachable, packet too big,
/// time exceeded, parameter problem (and unassigned error types below 128).
#[inline]
pub fn is_icmpv6_error(icmp_type: u8) -> bool {
    icmp_type < 128
}

/// The network layer of a parsed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Net {
    /// IPv4 or IPv6.
    Ip(IpInfo),
    /// ARP.
    Arp,
    /// Any other EtherType.
    Other(u16),
}

/// A frame parsed once, with offsets into the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedFrame {
    /// The outermost 802.1Q VLAN id, if tagged.
    pub vlan: Option<u16>,
    /// The network layer.
    pub net: Net,
}

impl ParsedFrame {
    /// The IP facts, if this is an IP packet.
    #[inline]
    pub fn ip(&self) -> Option<&IpInfo> {
        match &self.net {
            Net::Ip(ip) => Some(ip),
            _ => None,
        }
    }

    /// A short stable label for summaries and metrics ("ipv4/tcp", "ipv6/icmp-error", "arp", ...).
    pub fn class(&self) -> &'static str {
        let ip = match &self.net {
            Net::Ip(ip) => ip,
            Net::Arp => return "arp",
            Net::Other(_) => return "other-ethertype",
        };
        let v4 = ip.is_ipv4();
        let pick = |a: &'static str, b: &'static str| if v4 { a } else { b };
        match ip.transport {
            Transport::Tcp { .. } => pick("ipv4/tcp", "ipv6/tcp"),
            Transport::Udp { .. } => pick("ipv4/udp", "ipv6/udp"),
            Transport::Icmpv4 { icmp_type, .. } if is_icmpv4_error(icmp_type) => "ipv4/icmp-error",
            Transport::Icmpv4 { .. } => "ipv4/icmp",
            Transport::Icmpv6 { icmp_type, .. } if is_icmpv6_error(icmp_type) => "ipv6/icmp-error",
            Transport::Icmpv6 { .. } => "ipv6/icmp",
            Transport::Fragment => pick("ipv4/fragment", "ipv6/fragment"),
            Transport::Other => pick("ipv4/other", "ipv6/other"),
        }
    }
}

/// Parse an Ethernet II frame (with up to three 802.1Q/802.1ad tags).
#[inline]
pub fn parse_ethernet(frame: &[u8]) -> Result<ParsedFrame, WireError> {
    match fast::ethernet(frame) {
        Some(p) => Ok(p),
        None => parse_ethernet_etherparse(frame),
    }
}

/// Parse an Ethernet II frame through etherparse only (the reference the fast path is held to),
/// with one correction: see `later_ipv6_fragment`.
pub fn parse_ethernet_etherparse(frame: &[u8]) -> Result<ParsedFrame, WireError> {
    if let Some((vlan, off)) = fast::link(frame)
        && let Some(net) = later_ipv6_fragment(frame, off)
    {
        return Ok(ParsedFrame { vlan, net });
    }
    let sliced = SlicedPacket::from_ethernet(frame).map_err(map_slice_error)?;
    from_sliced(frame, &sliced)
}

/// Parse a network-layer packet named by an EtherType (as delivered by SLL, raw-IP or NULL link types).
pub fn parse_network(ether_type: u16, packet: &[u8]) -> Result<ParsedFrame, WireError> {
    if let Some(net) = fast::net(packet, 0, ether_type) {
        return Ok(ParsedFrame { vlan: None, net });
    }
    parse_network_etherparse(ether_type, packet)
}

/// Parse a network-layer packet through etherparse only (reference for [`parse_network`]),
/// with the correction of `later_ipv6_fragment`.
pub fn parse_network_etherparse(ether_type: u16, packet: &[u8]) -> Result<ParsedFrame, WireError> {
    if ether_type == ethertype::IPV6
        && let Some(net) = later_ipv6_fragment(packet, 0)
    {
        return Ok(ParsedFrame { vlan: None, net });
    }
    let sliced = SlicedPacket::from_ether_type(etherparse::EtherType(ether_type), packet)
        .map_err(map_slice_error)?;
    from_sliced(packet, &sliced)
}

/// A non-first IPv6 fragment, read by hand because etherparse gets it wrong.
///
/// RFC 8200 §4.5: in a fragment with a non-zero offset, everything after the Fragment header is
/// the middle of the original datagram — not headers. etherparse keeps walking extension
/// headers past it when the Fragment header's next-header names one, and so misreads (or
/// rejects) such fragments. This walks the unfragmentable headers up to the Fragment header
/// and, when the offset is non-zero, reports the rest as fragment payload. Everything else
/// (`None`) is left to etherparse.
fn later_ipv6_fragment(buf: &[u8], off: usize) -> Option<Net> {
    let b = buf.get(off..)?;
    let h = b.get(..40)?;
    if h[0] >> 4 != 6 {
        return None;
    }
    let payload_len = usize::from(u16::from_be_bytes([h[4], h[5]]));
    if payload_len == 0 || b.len() < 40 + payload_len {
        return None;
    }
    let end = 40 + payload_len;
    let (mut next, mut at) = (h[6], 40usize);
    for _ in 0..crate::quote::MAX_EXT_HEADERS {
        match next {
            0 | 43 | 60 => {
                let e = b.get(at..at + 2).filter(|_| at + 2 <= end)?;
                next = e[0];
                at += (usize::from(e[1]) + 1) * 8;
            }
            51 => {
                let e = b.get(at..at + 2).filter(|_| at + 2 <= end)?;
                next = e[0];
                at += (usize::from(e[1]) + 2) * 4;
            }
            proto::IPV6_FRAG => {
                let f = b.get(at..at + 8).filter(|_| at + 8 <= end)?;
                let off_m = u16::from_be_bytes([f[2], f[3]]);
                let offset = off_m & 0xfff8;
                if offset == 0 {
                    return None;
                }
                let mut src = [0u8; 16];
                src.copy_from_slice(&h[8..24]);
                let mut dst = [0u8; 16];
                dst.copy_from_slice(&h[24..40]);
                let l4 = at + 8;
                return Some(Net::Ip(IpInfo {
                    src: IpAddr::V6(Ipv6Addr::from(src)),
                    dst: IpAddr::V6(Ipv6Addr::from(dst)),
                    protocol: f[0],
                    ttl: h[7],
                    l3_offset: off,
                    l4_offset: off + l4,
                    l4_len: end - l4,
                    fragment: Some(Fragment {
                        ident: u32::from_be_bytes([f[4], f[5], f[6], f[7]]),
                        offset,
                        more: off_m & 1 != 0,
                    }),
                    transport: Transport::Fragment,
                }));
            }
            _ => return None,
        }
    }
    None
}

/// Parse a bare IPv4 or IPv6 packet, the version taken from the first nibble.
pub fn parse_ip(packet: &[u8]) -> Result<ParsedFrame, WireError> {
    let ether_type = match packet.first().map(|b| b >> 4) {
        Some(4) => ethertype::IPV4,
        Some(6) => ethertype::IPV6,
        _ => 0,
    };
    if let Some(net) = fast::net(packet, 0, ether_type) {
        return Ok(ParsedFrame { vlan: None, net });
    }
    if ether_type == ethertype::IPV6
        && let Some(net) = later_ipv6_fragment(packet, 0)
    {
        return Ok(ParsedFrame { vlan: None, net });
    }
    let sliced = SlicedPacket::from_ip(packet).map_err(map_slice_error)?;
    from_sliced(packet, &sliced)
}

/// The straight-line reader for the forwarding path's common frame shapes.
///
/// Every function returns `None` whenever it is not certain etherparse would produce exactly the
/// same [`ParsedFrame`] — unusual shapes and all malformed input — and the caller then asks
/// etherparse. The conditions below mirror etherparse 0.21's `SlicedPacket` checks one for one.
mod fast {
    use super::*;

    #[inline(always)]
    fn be16(b: &[u8], at: usize) -> Option<u16> {
        match b.get(at..at + 2) {
            Some(&[x, y]) => Some(u16::from_be_bytes([x, y])),
            _ => None,
        }
    }

    /// The outermost VLAN id and the L3 offset when the frame carries IPv6 (for the
    /// reference path's correction); `None` otherwise.
    pub(super) fn link(frame: &[u8]) -> Option<(Option<u16>, usize)> {
        let mut et = be16(frame, 12)?;
        let mut off = 14;
        let mut vlan = None;
        for _ in 0..3 {
            if !matches!(et, 0x8100 | 0x88a8 | 0x9100) {
                break;
            }
            let tci = be16(frame, off)?;
            et = be16(frame, off + 2)?;
            vlan.get_or_insert(tci & 0x0fff);
            off += 4;
        }
        (et == ethertype::IPV6).then_some((vlan, off))
    }

    #[inline]
    pub(super) fn ethernet(frame: &[u8]) -> Option<ParsedFrame> {
        let mut et = be16(frame, 12)?;
        let mut off = 14;
        let mut vlan = None;
        let mut tags = 0;
        // etherparse treats 0x8100, 0x88a8 and 0x9100 as VLAN tags and stops after three
        // link extensions.
        while matches!(et, 0x8100 | 0x88a8 | 0x9100) {
            if tags == 3 {
                return None;
            }
            let tci = be16(frame, off)?;
            et = be16(frame, off + 2)?;
            if vlan.is_none() {
                vlan = Some(tci & 0x0fff);
            }
            off += 4;
            tags += 1;
        }
        Some(ParsedFrame {
            vlan,
            net: net(frame, off, et)?,
        })
    }

    #[inline]
    pub(super) fn net(buf: &[u8], off: usize, et: u16) -> Option<Net> {
        match et {
            ethertype::IPV4 => ipv4(buf, off),
            ethertype::IPV6 => ipv6(buf, off),
            _ => None,
        }
    }

    #[inline]
    fn ipv4(buf: &[u8], off: usize) -> Option<Net> {
        let b = buf.get(off..)?;
        let h = b.get(..20)?;
        if h[0] >> 4 != 4 {
            return None;
        }
        let ihl = usize::from(h[0] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
        if ihl < 20 || b.len() < ihl || total < ihl || b.len() < total {
            return None;
        }
        let protocol = h[9];
        let ff = u16::from_be_bytes([h[6], h[7]]);
        let more = ff & 0x2000 != 0;
        let offset = (ff & 0x1fff) << 3;
        let fragment = (more || offset != 0).then_some(Fragment {
            ident: u32::from(u16::from_be_bytes([h[4], h[5]])),
            offset,
            more,
        });
        // AH (51) is walked by etherparse; IGMP (2) is validated by it: leave both to it.
        if matches!(protocol, 51 | 2) {
            return None;
        }
        let l4 = &b[ihl..total];
        let transport = match fragment {
            Some(f) if !f.is_first() => Transport::Fragment,
            Some(_) => first_fragment_transport(protocol, l4),
            None => transport(protocol, l4)?,
        };
        Some(Net::Ip(IpInfo {
            src: IpAddr::V4(Ipv4Addr::new(h[12], h[13], h[14], h[15])),
            dst: IpAddr::V4(Ipv4Addr::new(h[16], h[17], h[18], h[19])),
            protocol,
            ttl: h[8],
            l3_offset: off,
            l4_offset: off + ihl,
            l4_len: total - ihl,
            fragment,
            transport,
        }))
    }

    #[inline]
    fn ipv6(buf: &[u8], off: usize) -> Option<Net> {
        let b = buf.get(off..)?;
        let h = b.get(..40)?;
        if h[0] >> 4 != 6 {
            return None;
        }
        let payload_len = usize::from(u16::from_be_bytes([h[4], h[5]]));
        // Payload length 0 (jumbogram handling) and extension headers are etherparse's.
        if payload_len == 0 || b.len() < 40 + payload_len {
            return None;
        }
        let protocol = h[6];
        if !matches!(
            protocol,
            proto::TCP | proto::UDP | proto::ICMPV6 | proto::ICMP
        ) {
            return None;
        }
        let l4 = &b[40..40 + payload_len];
        let transport = transport(protocol, l4)?;
        let mut src = [0u8; 16];
        src.copy_from_slice(&h[8..24]);
        let mut dst = [0u8; 16];
        dst.copy_from_slice(&h[24..40]);
        Some(Net::Ip(IpInfo {
            src: IpAddr::V6(Ipv6Addr::from(src)),
            dst: IpAddr::V6(Ipv6Addr::from(dst)),
            protocol,
            ttl: h[7],
            l3_offset: off,
            l4_offset: off + 40,
            l4_len: payload_len,
            fragment: None,
            transport,
        }))
    }

    #[inline]
    fn transport(protocol: u8, l4: &[u8]) -> Option<Transport> {
        match protocol {
            proto::TCP => {
                let h = l4.get(..20)?;
                let doff = usize::from(h[12] >> 4) * 4;
                if doff < 20 || l4.len() < doff {
                    return None;
                }
                Some(Transport::Tcp {
                    sport: u16::from_be_bytes([h[0], h[1]]),
                    dport: u16::from_be_bytes([h[2], h[3]]),
                    flags: h[13],
                })
            }
            proto::UDP => {
                let h = l4.get(..8)?;
                let len = usize::from(u16::from_be_bytes([h[4], h[5]]));
                if l4.len() < len || (len != 0 && len < 8) {
                    return None;
                }
                Some(Transport::Udp {
                    sport: u16::from_be_bytes([h[0], h[1]]),
                    dport: u16::from_be_bytes([h[2], h[3]]),
                })
            }
            proto::ICMP => {
                let h = l4.get(..8)?;
                // etherparse insists timestamp messages (13, 14 code 0) are exactly 20 bytes.
                if matches!(h[0], 13 | 14) && h[1] == 0 && l4.len() != 20 {
                    return None;
                }
                Some(Transport::Icmpv4 {
                    icmp_type: h[0],
                    code: h[1],
                })
            }
            proto::ICMPV6 => {
                let h = l4.get(..8)?;
                Some(Transport::Icmpv6 {
                    icmp_type: h[0],
                    code: h[1],
                })
            }
            _ => Some(Transport::Other),
        }
    }
}

fn offset_in(base: &[u8], part: &[u8]) -> usize {
    (part.as_ptr() as usize).wrapping_sub(base.as_ptr() as usize)
}

fn from_sliced(base: &[u8], s: &SlicedPacket<'_>) -> Result<ParsedFrame, WireError> {
    let vlan = s.link_exts.iter().find_map(|e| match e {
        LinkExtSlice::Vlan(v) => Some(v.vlan_identifier().value()),
        _ => None,
    });
    let net = match &s.net {
        Some(InternetSlice::Ipv4(v4)) => {
            let h = v4.header();
            let payload = v4.payload();
            let fragment = h.is_fragmenting_payload().then(|| Fragment {
                ident: u32::from(h.identification()),
                offset: h.fragments_offset().value() << 3,
                more: h.more_fragments(),
            });
            Net::Ip(ip_info(
                base,
                h.slice(),
                IpAddr::V4(Ipv4Addr::from(h.source())),
                IpAddr::V4(Ipv4Addr::from(h.destination())),
                h.ttl(),
                payload,
                fragment,
                &s.transport,
            ))
        }
        Some(InternetSlice::Ipv6(v6)) => {
            let h = v6.header();
            let payload = v6.payload();
            let fragment = v6.extensions().clone().into_iter().find_map(|e| match e {
                Ipv6ExtensionSlice::Fragment(f) => Some(Fragment {
                    ident: f.identification(),
                    offset: f.fragment_offset().value() << 3,
                    more: f.more_fragments(),
                }),
                _ => None,
            });
            // A Fragment header with offset 0 and M=0 is an atomic fragment (RFC 6946): the
            // datagram is whole, so it is not treated as a fragment.
            let fragment = fragment.filter(|f| f.offset != 0 || f.more);
            Net::Ip(ip_info(
                base,
                h.slice(),
                IpAddr::V6(Ipv6Addr::from(h.source())),
                IpAddr::V6(Ipv6Addr::from(h.destination())),
                h.hop_limit(),
                payload,
                fragment,
                &s.transport,
            ))
        }
        Some(InternetSlice::Arp(_)) => Net::Arp,
        None => Net::Other(ether_type_of(s)),
    };
    Ok(ParsedFrame { vlan, net })
}

fn ether_type_of(s: &SlicedPacket<'_>) -> u16 {
    if let Some(LinkExtSlice::Vlan(v)) = s.link_exts.last() {
        return v.ether_type().0;
    }
    match &s.link {
        Some(LinkSlice::Ethernet2(e)) => e.ether_type().0,
        Some(LinkSlice::EtherPayload(p)) => p.ether_type.0,
        _ => 0,
    }
}

#[allow(clippy::too_many_arguments)]
fn ip_info(
    base: &[u8],
    l3: &[u8],
    src: IpAddr,
    dst: IpAddr,
    ttl: u8,
    payload: &etherparse::IpPayloadSlice<'_>,
    fragment: Option<Fragment>,
    transport: &Option<TransportSlice<'_>>,
) -> IpInfo {
    let l4 = payload.payload;
    let protocol = payload.ip_number.0;
    let transport = match (transport, fragment) {
        (_, Some(f)) if !f.is_first() => Transport::Fragment,
        (Some(TransportSlice::Tcp(t)), _) => Transport::Tcp {
            sport: t.source_port(),
            dport: t.destination_port(),
            flags: t.header_slice().get(13).copied().unwrap_or(0),
        },
        (Some(TransportSlice::Udp(u)), _) => Transport::Udp {
            sport: u.source_port(),
            dport: u.destination_port(),
        },
        (Some(TransportSlice::Icmpv4(i)), _) => Transport::Icmpv4 {
            icmp_type: i.type_u8(),
            code: i.code_u8(),
        },
        (Some(TransportSlice::Icmpv6(i)), _) => Transport::Icmpv6 {
            icmp_type: i.type_u8(),
            code: i.code_u8(),
        },
        // etherparse does not slice the transport of a fragmented datagram; a first fragment
        // still starts with the transport header, so read what the director needs from it.
        (None, Some(_)) => first_fragment_transport(protocol, l4),
        _ => Transport::Other,
    };
    IpInfo {
        src,
        dst,
        protocol,
        ttl,
        l3_offset: offset_in(base, l3),
        l4_offset: offset_in(base, l4),
        l4_len: l4.len(),
        fragment,
        transport,
    }
}

fn first_fragment_transport(protocol: u8, l4: &[u8]) -> Transport {
    let port = |i: usize| l4.get(i..i + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    match (protocol, port(0), port(2)) {
        (proto::TCP, Some(sport), Some(dport)) => match l4.get(13) {
            Some(&flags) => Transport::Tcp {
                sport,
                dport,
                flags,
            },
            None => Transport::Other,
        },
        (proto::UDP, Some(sport), Some(dport)) => Transport::Udp { sport, dport },
        (proto::ICMP, _, _) => match l4.get(..2) {
            Some(&[icmp_type, code]) => Transport::Icmpv4 { icmp_type, code },
            _ => Transport::Other,
        },
        (proto::ICMPV6, _, _) => match l4.get(..2) {
            Some(&[icmp_type, code]) => Transport::Icmpv6 { icmp_type, code },
            _ => Transport::Other,
        },
        _ => Transport::Other,
    }
}

fn map_layer(l: err::Layer) -> Layer {
    use err::Layer as L;
    match l {
        L::Ethernet2Header | L::VlanHeader | L::EtherPayload => Layer::Ethernet,
        L::LinuxSllHeader | L::MacsecHeader | L::MacsecPacket => Layer::Link,
        L::IpHeader | L::Ipv4Header | L::Ipv4Packet => Layer::Ipv4,
        L::Ipv6Header | L::Ipv6Packet => Layer::Ipv6,
        L::IpAuthHeader
        | L::Ipv6ExtHeader
        | L::Ipv6HopByHopHeader
        | L::Ipv6DestOptionsHeader
        | L::Ipv6RouteHeader
        | L::Ipv6FragHeader => Layer::Ipv6Ext,
        L::UdpHeader | L::UdpPayload => Layer::Udp,
        L::TcpHeader => Layer::Tcp,
        L::Icmpv4 | L::Icmpv4Timestamp | L::Icmpv4TimestampReply => Layer::Icmpv4,
        L::Icmpv6 => Layer::Icmpv6,
        L::Arp => Layer::Arp,
        _ => Layer::Link,
    }
}

/// Map etherparse's length error onto ours: short of captured bytes is `Truncated`, a header's
/// own length field that cannot hold what follows is `BadTotalLen`.
pub(crate) fn map_len_error(e: &err::LenError) -> WireError {
    let layer = map_layer(e.layer);
    match e.len_source {
        // ARP's required length comes from its own address-length fields, but what is short is
        // the captured data.
        LenSource::Slice | LenSource::ArpAddrLengths => {
            WireError::truncated(layer, e.required_len, e.len)
        }
        _ => WireError::BadTotalLen {
            layer,
            value: e.len,
        },
    }
}

/// Map any etherparse slicing error onto a [`WireError`].
pub(crate) fn map_slice_error(e: err::packet::SliceError) -> WireError {
    use err::packet::SliceError as E;
    match e {
        E::Len(l) => map_len_error(&l),
        E::LinuxSll(_) | E::Macsec(_) => WireError::BadHeaderLen {
            layer: Layer::Link,
            value: 0,
        },
        E::Ip(err::ip::HeaderError::UnsupportedIpVersion { version_number }) => {
            WireError::BadVersion(version_number)
        }
        E::Ip(err::ip::HeaderError::Ipv4HeaderLengthSmallerThanHeader { ihl }) => {
            WireError::BadHeaderLen {
                layer: Layer::Ipv4,
                value: usize::from(ihl) * 4,
            }
        }
        E::Ipv4(err::ipv4::HeaderError::UnexpectedVersion { version_number }) => {
            WireError::BadVersion(version_number)
        }
        E::Ipv4(err::ipv4::HeaderError::HeaderLengthSmallerThanHeader { ihl }) => {
            WireError::BadHeaderLen {
                layer: Layer::Ipv4,
                value: usize::from(ihl) * 4,
            }
        }
        E::Ipv6(err::ipv6::HeaderError::UnexpectedVersion { version_number }) => {
            WireError::BadVersion(version_number)
        }
        E::Ipv4Exts(_) | E::Ipv6Exts(_) => WireError::BadExtHeader,
        E::Tcp(err::tcp::HeaderError::DataOffsetTooSmall { data_offset }) => {
            WireError::BadHeaderLen {
                layer: Layer::Tcp,
                value: usize::from(data_offset) * 4,
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    // Ethernet / 802.1Q (VLAN 100) / IPv4 / UDP 53 → 33000 with 4 bytes of payload.
    static VLAN_UDP: [u8; 18 + 20 + 8 + 4] = [
        0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, // dst, src
        0x81, 0x00, 0x00, 0x64, 0x08, 0x00, // 802.1Q tag VLAN 100, then IPv4
        0x45, 0x00, 0x00, 0x20, 0x00, 0x01, 0x00, 0x00, 0x40, 0x11, 0x00,
        0x00, // IPv4, no csum
        192, 0, 2, 53, 198, 51, 100, 7, // src, dst
        0x00, 0x35, 0x80, 0xe8, 0x00, 0x0c, 0x00, 0x00, // UDP 53 → 33000, len 12, no csum
        0xde, 0xad, 0xbe, 0xef,
    ];

    #[test]
    fn vlan_udp() {
        let p = parse_ethernet(&VLAN_UDP).unwrap();
        assert_eq!(p.vlan, Some(100));
        let ip = p.ip().unwrap();
        assert_eq!(ip.l3_offset, 18);
        assert_eq!(ip.l4_offset, 38);
        assert_eq!(ip.l4_len, 12);
        assert_eq!(
            ip.transport,
            Transport::Udp {
                sport: 53,
                dport: 33000
            }
        );
        assert_eq!(p.class(), "ipv4/udp");
        let k = ip.flow_key().unwrap();
        assert_eq!(k.reversed().sport, 33000);
        assert_eq!(k.reversed().dst, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 53)));
    }

    #[test]
    fn truncated_frames_are_typed_errors() {
        for n in 0..VLAN_UDP.len() {
            let r = parse_ethernet(&VLAN_UDP[..n]);
            assert!(
                matches!(
                    r,
                    Err(WireError::Truncated { .. } | WireError::BadTotalLen { .. })
                ),
                "len {n}: {r:?}"
            );
        }
    }

    #[test]
    fn ipv4_first_and_later_fragments() {
        let mut f = VLAN_UDP.to_vec();
        // More fragments, offset 0: transport read from the first fragment.
        f[18 + 6] = 0x20;
        let p = parse_ethernet(&f).unwrap();
        let ip = p.ip().unwrap();
        assert_eq!(
            ip.fragment,
            Some(Fragment {
                ident: 1,
                offset: 0,
                more: true
            })
        );
        assert_eq!(
            ip.transport,
            Transport::Udp {
                sport: 53,
                dport: 33000
            }
        );
        // Offset 8 bytes: no ports.
        f[18 + 7] = 0x01;
        let p = parse_ethernet(&f).unwrap();
        assert_eq!(p.ip().unwrap().transport, Transport::Fragment);
        assert_eq!(p.class(), "ipv4/fragment");
        assert_eq!(p.ip().unwrap().flow_key(), None);
    }

    #[test]
    fn bad_version_and_ihl() {
        let mut f = VLAN_UDP.to_vec();
        f[18] = 0x44;
        assert!(matches!(
            parse_ethernet(&f),
            Err(WireError::BadHeaderLen { .. })
        ));
        let mut f = VLAN_UDP.to_vec();
        f[18] = 0x55;
        assert!(matches!(parse_ethernet(&f), Err(WireError::BadVersion(5))));
        // Total length shorter than the header.
        let mut f = VLAN_UDP.to_vec();
        f[18 + 3] = 0x10;
        assert!(parse_ethernet(&f).is_err());
    }

    /// Frames of the shapes the fast path serves, built with etherparse: IPv4 TCP, UDP, echo;
    /// IPv6 TCP, UDP, echo; two VLAN-tagged IPv4 UDP (`flow`'s tests use them too).
    pub(crate) fn seeds() -> Vec<Vec<u8>> {
        use etherparse::PacketBuilder;
        let mac = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let v6a = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let v6b = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
        let mut out = Vec::new();
        let eth = || PacketBuilder::ethernet2(mac.0, mac.1);
        let mut v = Vec::new();
        eth()
            .ipv4([192, 0, 2, 1], [198, 51, 100, 1], 64)
            .tcp(1, 2, 3, 4)
            .write(&mut v, b"hi")
            .unwrap();
        out.push(std::mem::take(&mut v));
        eth()
            .ipv4([192, 0, 2, 1], [198, 51, 100, 1], 64)
            .udp(1, 2)
            .write(&mut v, b"hi")
            .unwrap();
        out.push(std::mem::take(&mut v));
        eth()
            .ipv4([192, 0, 2, 1], [198, 51, 100, 1], 64)
            .icmpv4_echo_request(1, 2)
            .write(&mut v, b"ping")
            .unwrap();
        out.push(std::mem::take(&mut v));
        eth()
            .ipv6(v6a, v6b, 64)
            .tcp(1, 2, 3, 4)
            .write(&mut v, b"hi")
            .unwrap();
        out.push(std::mem::take(&mut v));
        eth()
            .ipv6(v6a, v6b, 64)
            .udp(1, 2)
            .write(&mut v, b"hi")
            .unwrap();
        out.push(std::mem::take(&mut v));
        eth()
            .ipv6(v6a, v6b, 64)
            .icmpv6_echo_request(1, 2)
            .write(&mut v, b"ping")
            .unwrap();
        out.push(std::mem::take(&mut v));
        eth()
            .single_vlan(etherparse::VlanId::try_new(7).unwrap())
            .ipv4([192, 0, 2, 1], [198, 51, 100, 1], 64)
            .udp(1, 2)
            .write(&mut v, b"x")
            .unwrap();
        out.push(std::mem::take(&mut v));
        out.push(VLAN_UDP.to_vec());
        out
    }

    #[test]
    fn fast_path_serves_common_shapes_and_equals_etherparse() {
        for f in seeds() {
            let fast = fast::ethernet(&f);
            assert!(
                fast.is_some(),
                "fast path declined a common frame: {f:02x?}"
            );
            assert_eq!(fast, parse_ethernet_etherparse(&f).ok());
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4000))]
        /// Differential: whenever the fast path answers, etherparse gives the very same answer;
        /// whenever etherparse fails, the fast path declined (so errors are etherparse's).
        #[test]
        fn fast_path_never_disagrees_with_etherparse(
            seed in 0usize..8,
            flips in proptest::collection::vec((0usize..120, proptest::prelude::any::<u8>()), 0..4),
            cut in proptest::option::of(0usize..120),
        ) {
            let mut f = seeds()[seed % 8].clone();
            for (at, v) in flips {
                if let Some(b) = f.get_mut(at % 60) {
                    *b = v;
                }
            }
            if let Some(c) = cut {
                f.truncate(c);
            }
            let reference = parse_ethernet_etherparse(&f);
            if let Some(p) = fast::ethernet(&f) {
                proptest::prop_assert_eq!(Ok(p), reference);
            }
            proptest::prop_assert_eq!(parse_ethernet(&f), reference);
        }
    }

    #[test]
    fn later_ipv6_fragment_with_ext_header_number_is_payload() {
        // IPv6, next header Fragment (44) whose next header is Destination Options (60),
        // offset 1448 bytes: what follows is payload, not a header.
        let mut p = vec![0x60, 0, 0, 0, 0, 24, 44, 64];
        p.extend_from_slice(&[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        p.extend_from_slice(&[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        p.extend_from_slice(&[60, 0, 0x05, 0xa9, 0, 0, 0, 9]); // offset 181×8, M=1, ident 9
        p.extend_from_slice(&[0xff; 16]); // "DestOpts" with a length that would overrun
        let r = parse_ip(&p).unwrap();
        let ip = r.ip().unwrap();
        assert_eq!(ip.protocol, 60);
        assert_eq!(ip.transport, Transport::Fragment);
        assert_eq!(
            ip.fragment,
            Some(Fragment {
                ident: 9,
                offset: 1448,
                more: true
            })
        );
        assert_eq!((ip.l4_offset, ip.l4_len), (48, 16));
        assert_eq!(parse_network(ethertype::IPV6, &p), Ok(r));
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x86, 0xdd];
        f.extend_from_slice(&p);
        assert_eq!(parse_ethernet(&f).unwrap().ip().unwrap().l4_offset, 62);
        // etherparse alone misreads it.
        assert!(SlicedPacket::from_ip(&p).is_err());
    }

    #[test]
    fn arp_request() {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x06]);
        // htype 1, ptype IPv4, hlen 6, plen 4, op request, sha, spa, tha, tpa
        f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 1, 192, 0, 2, 1]);
        f.extend_from_slice(&[0, 0, 0, 0, 0, 0, 192, 0, 2, 2]);
        let p = parse_ethernet(&f).unwrap();
        assert_eq!(p.net, Net::Arp);
        assert_eq!(p.class(), "arp");
        let e = parse_ethernet(&f[..30]);
        assert!(
            matches!(
                e,
                Err(WireError::Truncated {
                    layer: Layer::Arp,
                    ..
                })
            ),
            "{e:?}"
        );
    }

    #[test]
    fn non_ip_ethertype() {
        let mut f = VLAN_UDP.to_vec();
        f[16] = 0x88;
        f[17] = 0xb5;
        let p = parse_ethernet(&f).unwrap();
        assert_eq!(p.net, Net::Other(0x88b5));
        assert_eq!(p.class(), "other-ethertype");
    }
}
