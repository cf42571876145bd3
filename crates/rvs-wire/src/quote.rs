//! The reader for the datagram quoted inside an ICMPv4 / ICMPv6 error.
//!
//! Why by hand: an ICMP error quotes "the internet header plus the first 64 bits of the original
//! datagram's data" (RFC 792) — often no more. etherparse's lax parser needs a whole 20-byte TCP
//! header before it yields ports, so for the common 8-byte quote it gives none; the director needs
//! exactly those ports to find the connection. This reader:
//! - honours IHL (IPv4 options) and walks IPv6 extension headers;
//! - checks every length against the bytes actually captured, never against what the quoted
//!   header claims (the quoted total length describes the original datagram, not the quote);
//! - reports a non-first fragment as such (it has no transport header, hence no ports);
//! - honours the RFC 4884 "length" field, so ICMP extension objects (RFC 4950 MPLS labels,
//!   RFC 5837 interface info) are never mistaken for quoted bytes;
//! - yields the *reversed* flow key: the quote is a packet the connection's far end sent, so
//!   swapping it gives the key of the flow the error travels with.
//!
//! Offsets are relative to the start of the quote, so the NAT path can rewrite quoted addresses,
//! ports and checksums in place. No allocation; no input panics.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::WireError;
use crate::error::Layer;
use crate::parse::{FlowKey, Fragment, is_icmpv4_error, is_icmpv6_error, proto};

/// The most IPv6 extension headers the reader walks before giving up (RFC 8200 allows a few;
/// RFC 7112 wants the whole chain in the first fragment).
pub const MAX_EXT_HEADERS: usize = 16;

/// The datagram quoted inside an ICMP error, as far as it was captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quote<'a> {
    bytes: &'a [u8],
    /// Source address of the quoted datagram.
    pub src: IpAddr,
    /// Destination address of the quoted datagram.
    pub dst: IpAddr,
    /// The upper-layer protocol after any IPv6 extension headers.
    pub protocol: u8,
    /// Length of the quoted IP header including IPv4 options / IPv6 extension headers.
    pub header_len: usize,
    /// The datagram's total length as its header claims (not trusted for any bounds).
    pub claimed_len: usize,
    /// Fragment facts of the quoted datagram, if it was a fragment.
    pub fragment: Option<Fragment>,
}

impl<'a> Quote<'a> {
    /// The quote's bytes as captured (from the start of its IP header).
    #[inline]
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// True when the quoted datagram is IPv4.
    #[inline]
    pub fn is_ipv4(&self) -> bool {
        self.src.is_ipv4()
    }

    /// True when the quote is a non-first fragment (no transport header present).
    #[inline]
    pub fn is_non_first_fragment(&self) -> bool {
        self.fragment.is_some_and(|f| !f.is_first())
    }

    /// The upper-layer bytes present in the quote: bounded by what was captured and by the
    /// datagram's own claimed length, whichever is shorter.
    #[inline]
    pub fn l4_bytes(&self) -> &'a [u8] {
        let end = self.bytes.len().min(self.claimed_len.max(self.header_len));
        self.bytes.get(self.header_len..end).unwrap_or(&[])
    }

    /// Offset of the upper-layer header within the quote.
    #[inline]
    pub fn l4_offset(&self) -> usize {
        self.header_len
    }

    /// True when the quote holds the whole original datagram (so its L4 checksum can be adjusted).
    #[inline]
    pub fn is_complete(&self) -> bool {
        self.bytes.len() >= self.claimed_len && !self.fragment.is_some_and(|f| f.more)
    }

    /// Source and destination ports of a quoted TCP, UDP or SCTP header (first 4 bytes of L4).
    #[inline]
    pub fn ports(&self) -> Result<(u16, u16), WireError> {
        if let Some(f) = self.fragment.filter(|f| !f.is_first()) {
            return Err(WireError::NonFirstFragment { offset: f.offset });
        }
        let l4 = self.l4_bytes();
        match l4.get(..4) {
            Some(&[a, b, c, d]) => Ok((u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d]))),
            _ => Err(WireError::truncated(
                Layer::Quote,
                self.header_len + 4,
                self.bytes.len(),
            )),
        }
    }

    /// The type of a quoted ICMP / ICMPv6 message, if the quote is one and its type byte was captured.
    #[inline]
    pub fn icmp_type(&self) -> Option<u8> {
        match self.protocol {
            proto::ICMP | proto::ICMPV6 if !self.is_non_first_fragment() => {
                self.l4_bytes().first().copied()
            }
            _ => None,
        }
    }

    /// True when the quote is itself an ICMP error: no error may be sent or forwarded about one
    /// (RFC 1812 §4.3.2.7, RFC 4443 §2.4 (e)).
    #[inline]
    pub fn is_icmp_error(&self) -> bool {
        match (self.protocol, self.icmp_type()) {
            (proto::ICMP, Some(t)) => is_icmpv4_error(t),
            (proto::ICMPV6, Some(t)) => is_icmpv6_error(t),
            _ => false,
        }
    }

    /// The flow key of the quoted datagram as it was sent.
    #[inline]
    pub fn key(&self) -> Result<FlowKey, WireError> {
        let (sport, dport) = match self.protocol {
            proto::TCP | proto::UDP | proto::SCTP | 33 /* DCCP */ | 136 /* UDP-Lite */ => {
                self.ports()?
            }
            _ => {
                if let Some(f) = self.fragment.filter(|f| !f.is_first()) {
                    return Err(WireError::NonFirstFragment { offset: f.offset });
                }
                (0, 0)
            }
        };
        Ok(FlowKey {
            protocol: self.protocol,
            src: self.src,
            sport,
            dst: self.dst,
            dport,
        })
    }

    /// The reversed key: the flow the ICMP error belongs to (the quoted packet travelled the
    /// other way). For an error a client sends about VIP:vport → CIP:cport this is
    /// CIP:cport → VIP:vport, the connection's key.
    #[inline]
    pub fn reversed_key(&self) -> Result<FlowKey, WireError> {
        self.key().map(|k| k.reversed())
    }
}

/// Read a quoted IPv4 datagram.
#[inline]
pub fn read_ipv4(bytes: &[u8]) -> Result<Quote<'_>, WireError> {
    let hdr = bytes
        .get(..20)
        .ok_or(WireError::truncated(Layer::Quote, 20, bytes.len()))?;
    let version = hdr[0] >> 4;
    if version != 4 {
        return Err(WireError::BadVersion(version));
    }
    let header_len = usize::from(hdr[0] & 0x0f) * 4;
    if header_len < 20 {
        return Err(WireError::BadHeaderLen {
            layer: Layer::Quote,
            value: header_len,
        });
    }
    if bytes.len() < header_len {
        return Err(WireError::truncated(Layer::Quote, header_len, bytes.len()));
    }
    let claimed_len = usize::from(u16::from_be_bytes([hdr[2], hdr[3]]));
    if claimed_len < header_len {
        return Err(WireError::BadTotalLen {
            layer: Layer::Quote,
            value: claimed_len,
        });
    }
    let flags_frag = u16::from_be_bytes([hdr[6], hdr[7]]);
    let more = flags_frag & 0x2000 != 0;
    let offset = (flags_frag & 0x1fff) << 3;
    let fragment = (more || offset != 0).then_some(Fragment {
        ident: u32::from(u16::from_be_bytes([hdr[4], hdr[5]])),
        offset,
        more,
    });
    Ok(Quote {
        bytes,
        src: IpAddr::V4(Ipv4Addr::new(hdr[12], hdr[13], hdr[14], hdr[15])),
        dst: IpAddr::V4(Ipv4Addr::new(hdr[16], hdr[17], hdr[18], hdr[19])),
        protocol: hdr[9],
        header_len,
        claimed_len,
        fragment,
    })
}

/// Read a quoted IPv6 datagram, walking its extension headers.
#[inline]
pub fn read_ipv6(bytes: &[u8]) -> Result<Quote<'_>, WireError> {
    let hdr = bytes
        .get(..40)
        .ok_or(WireError::truncated(Layer::Quote, 40, bytes.len()))?;
    let version = hdr[0] >> 4;
    if version != 6 {
        return Err(WireError::BadVersion(version));
    }
    let payload_len = usize::from(u16::from_be_bytes([hdr[4], hdr[5]]));
    let mut src = [0u8; 16];
    src.copy_from_slice(&hdr[8..24]);
    let mut dst = [0u8; 16];
    dst.copy_from_slice(&hdr[24..40]);
    let mut next = hdr[6];
    let mut at = 40usize;
    let mut fragment = None;
    let mut walked = 0usize;
    loop {
        let len = match next {
            // Hop-by-Hop, Routing, Destination Options, Mobility, HIP, Shim6 (RFC 8200 §4, RFC 7045).
            0 | 43 | 60 | 135 | 139 | 140 => {
                let b = bytes.get(at..at + 2).ok_or(WireError::truncated(
                    Layer::Ipv6Ext,
                    at + 2,
                    bytes.len(),
                ))?;
                (usize::from(b[1]) + 1) * 8
            }
            // Fragment header: fixed 8 bytes.
            proto::IPV6_FRAG => 8,
            // Authentication Header: length in 4-octet units minus 2 (RFC 4302 §2.2).
            51 => {
                let b = bytes.get(at..at + 2).ok_or(WireError::truncated(
                    Layer::Ipv6Ext,
                    at + 2,
                    bytes.len(),
                ))?;
                (usize::from(b[1]) + 2) * 4
            }
            _ => break,
        };
        walked += 1;
        if walked > MAX_EXT_HEADERS {
            return Err(WireError::ExtChainTooLong);
        }
        let ext = bytes.get(at..at + len).ok_or(WireError::truncated(
            Layer::Ipv6Ext,
            at + len,
            bytes.len(),
        ))?;
        if next == proto::IPV6_FRAG {
            let off_m = u16::from_be_bytes([ext[2], ext[3]]);
            let f = Fragment {
                ident: u32::from_be_bytes([ext[4], ext[5], ext[6], ext[7]]),
                offset: off_m & 0xfff8,
                more: off_m & 1 != 0,
            };
            if !f.is_first() {
                // Headers after a non-first fragment's Fragment header are payload bytes of the
                // middle of the datagram, not headers: stop here.
                fragment = Some(f);
                next = ext[0];
                at += len;
                break;
            }
            // An atomic fragment (offset 0, M=0; RFC 6946) is a whole datagram.
            if f.more {
                fragment = Some(f);
            }
        }
        next = ext[0];
        at += len;
    }
    // Payload length 0 with a Hop-by-Hop header means a jumbogram (RFC 2675): its length is
    // elsewhere and irrelevant to a quote; treat the claim as "whatever was captured".
    let claimed_len = if payload_len == 0 && hdr[6] == 0 {
        bytes.len()
    } else {
        40 + payload_len
    };
    Ok(Quote {
        bytes,
        src: IpAddr::V6(Ipv6Addr::from(src)),
        dst: IpAddr::V6(Ipv6Addr::from(dst)),
        protocol: next,
        header_len: at,
        claimed_len: claimed_len.max(at),
        fragment,
    })
}

/// Read a quoted datagram of either version, chosen by its first nibble.
#[inline]
pub fn read(bytes: &[u8]) -> Result<Quote<'_>, WireError> {
    match bytes.first().map(|b| b >> 4) {
        Some(4) => read_ipv4(bytes),
        Some(6) => read_ipv6(bytes),
        Some(v) => Err(WireError::BadVersion(v)),
        None => Err(WireError::truncated(Layer::Quote, 1, 0)),
    }
}

/// An ICMPv4 or ICMPv6 error message and the datagram it quotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpError<'a> {
    /// ICMP type.
    pub icmp_type: u8,
    /// ICMP code.
    pub code: u8,
    /// The four type-specific header bytes (next-hop MTU, pointer, RFC 4884 length, ...).
    pub rest: [u8; 4],
    /// The quoted datagram, limited to the RFC 4884 length when the message carries extensions.
    pub quote: Quote<'a>,
}

impl IcmpError<'_> {
    /// The MTU advertised by an ICMPv4 fragmentation-needed (type 3 code 4, RFC 1191) or an ICMPv6
    /// packet-too-big (type 2, RFC 8201) message.
    #[inline]
    pub fn mtu(&self, v6: bool) -> Option<u32> {
        match (v6, self.icmp_type, self.code) {
            (false, 3, 4) => Some(u32::from(u16::from_be_bytes([self.rest[2], self.rest[3]]))),
            (true, 2, _) => Some(u32::from_be_bytes(self.rest)),
            _ => None,
        }
    }
}

/// Read an ICMPv4 error message (starting at its type byte) and the datagram it quotes.
#[inline]
pub fn read_icmpv4_error(msg: &[u8]) -> Result<IcmpError<'_>, WireError> {
    read_icmp_error(msg, false)
}

/// Read an ICMPv6 error message (starting at its type byte) and the datagram it quotes.
#[inline]
pub fn read_icmpv6_error(msg: &[u8]) -> Result<IcmpError<'_>, WireError> {
    read_icmp_error(msg, true)
}

#[inline]
fn read_icmp_error(msg: &[u8], v6: bool) -> Result<IcmpError<'_>, WireError> {
    let layer = if v6 { Layer::Icmpv6 } else { Layer::Icmpv4 };
    let h = msg
        .get(..8)
        .ok_or(WireError::truncated(layer, 8, msg.len()))?;
    let (icmp_type, code) = (h[0], h[1]);
    let is_error = if v6 {
        is_icmpv6_error(icmp_type)
    } else {
        is_icmpv4_error(icmp_type)
    };
    if !is_error {
        return Err(WireError::NotAnError(icmp_type));
    }
    let rest = [h[4], h[5], h[6], h[7]];
    let mut body = &msg[8..];
    // RFC 4884 §4.1: the "length" of the original datagram, when non-zero, bounds the quote so
    // that extension objects after it are not read as quoted bytes. IPv4 (types 3, 11, 12):
    // byte 5, in 32-bit words. IPv6 (types 1, 3): byte 4, in 64-bit words.
    let rfc4884_len = match (v6, icmp_type) {
        (false, 3 | 11 | 12) => usize::from(rest[1]) * 4,
        (true, 1 | 3) => usize::from(rest[0]) * 8,
        _ => 0,
    };
    if rfc4884_len != 0 && rfc4884_len <= body.len() {
        body = &body[..rfc4884_len];
    }
    let quote = if v6 {
        read_ipv6(body)?
    } else {
        read_ipv4(body)?
    };
    Ok(IcmpError {
        icmp_type,
        code,
        rest,
        quote,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // ICMPv4 fragmentation needed (3/4, MTU 1280) quoting IPv4 (IHL 5) + the first 8 bytes of a
    // TCP segment 198.51.100.10:80 → 192.0.2.1:40000 (the RFC 792 minimum).
    static FRAG_NEEDED_8: [u8; 8 + 20 + 8] = [
        0x03, 0x04, 0x00, 0x00, 0x00, 0x00, 0x05, 0x00, // type, code, csum, unused, MTU 1280
        0x45, 0x00, 0x05, 0xdc, 0xab, 0xcd, 0x40, 0x00, 0x3f, 0x06, 0x00,
        0x00, // IPv4, len 1500, DF
        198, 51, 100, 10, 192, 0, 2, 1, // src VIP, dst client
        0x00, 0x50, 0x9c, 0x40, 0x00, 0x00, 0x00, 0x01, // TCP: 80 → 40000, seq 1
    ];

    #[test]
    fn eight_byte_quote_gives_reversed_key() {
        let e = read_icmpv4_error(&FRAG_NEEDED_8).unwrap();
        assert_eq!(e.mtu(false), Some(1280));
        let q = e.quote;
        assert_eq!(q.protocol, 6);
        assert_eq!(q.claimed_len, 1500);
        assert!(!q.is_complete());
        assert_eq!(q.ports().unwrap(), (80, 40000));
        let k = q.reversed_key().unwrap();
        assert_eq!(k.src, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(k.sport, 40000);
        assert_eq!(k.dst, IpAddr::V4(Ipv4Addr::new(198, 51, 100, 10)));
        assert_eq!(k.dport, 80);
        // etherparse's lax parser cannot give the TCP ports from 8 bytes: that is why this exists.
        let lax = etherparse::LaxSlicedPacket::from_ip(&FRAG_NEEDED_8[8..]).unwrap();
        assert!(lax.transport.is_none());
    }

    #[test]
    fn ipv4_options_in_quote() {
        let mut q = FRAG_NEEDED_8[8..28].to_vec();
        q[0] = 0x46;
        q.extend_from_slice(&[0x94, 0x04, 0x00, 0x00]); // Router Alert
        q.extend_from_slice(&FRAG_NEEDED_8[28..]);
        let r = read_ipv4(&q).unwrap();
        assert_eq!(r.header_len, 24);
        assert_eq!(r.ports().unwrap(), (80, 40000));
        // Claimed IHL beyond what was captured.
        q[0] = 0x4f;
        assert!(matches!(read_ipv4(&q), Err(WireError::Truncated { .. })));
    }

    #[test]
    fn non_first_fragment_is_reported() {
        let mut q = FRAG_NEEDED_8[8..].to_vec();
        q[6] = 0x00;
        q[7] = 0xb9; // offset 185 × 8
        let r = read_ipv4(&q).unwrap();
        assert!(r.is_non_first_fragment());
        assert_eq!(
            r.reversed_key(),
            Err(WireError::NonFirstFragment { offset: 1480 })
        );
    }

    #[test]
    fn truncated_quotes() {
        for n in 0..FRAG_NEEDED_8.len() {
            let r = read_icmpv4_error(&FRAG_NEEDED_8[..n]);
            match n {
                0..=27 => assert!(matches!(r, Err(WireError::Truncated { .. })), "{n}: {r:?}"),
                28..=31 => assert!(matches!(
                    r.unwrap().quote.reversed_key(),
                    Err(WireError::Truncated { .. })
                )),
                _ => assert!(r.unwrap().quote.reversed_key().is_ok()),
            }
        }
    }

    #[test]
    fn not_an_error() {
        let mut m = FRAG_NEEDED_8;
        m[0] = 8;
        assert_eq!(read_icmpv4_error(&m), Err(WireError::NotAnError(8)));
    }

    fn v6_quote(next: u8, exts: &[u8], l4: &[u8]) -> Vec<u8> {
        let mut q = vec![0x60, 0, 0, 0];
        q.extend_from_slice(&((exts.len() + l4.len()) as u16 + 100).to_be_bytes());
        q.push(next);
        q.push(64);
        q.extend_from_slice(&"2001:db8:1::10".parse::<Ipv6Addr>().unwrap().octets());
        q.extend_from_slice(&"2001:db8:2::1".parse::<Ipv6Addr>().unwrap().octets());
        q.extend_from_slice(exts);
        q.extend_from_slice(l4);
        q
    }

    #[test]
    fn ipv6_ext_headers_walked() {
        // Hop-by-Hop (8 bytes: next=Dest Opts) + Destination Options (16 bytes: next=UDP) + UDP 8.
        let exts = [
            60, 0, 1, 4, 0, 0, 0, 0, // HbH: next 60, len 0, PadN
            17, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // DestOpts: next 17, len 1
        ];
        let udp = [0x01, 0xbb, 0xd4, 0x31, 0x00, 0x80, 0x12, 0x34];
        let q = v6_quote(0, &exts, &udp);
        let r = read_ipv6(&q).unwrap();
        assert_eq!(r.header_len, 64);
        assert_eq!(r.protocol, 17);
        assert_eq!(r.ports().unwrap(), (443, 54321));
        // Cut inside the Destination Options header.
        assert!(matches!(
            read_ipv6(&q[..50]),
            Err(WireError::Truncated { .. })
        ));
    }

    #[test]
    fn ipv6_fragments() {
        let udp = [0x01, 0xbb, 0xd4, 0x31, 0x00, 0x80, 0x12, 0x34];
        // First fragment: offset 0, M=1.
        let q = v6_quote(44, &[17, 0, 0x00, 0x01, 0, 0, 0, 7], &udp);
        let r = read_ipv6(&q).unwrap();
        assert_eq!(
            r.fragment,
            Some(Fragment {
                ident: 7,
                offset: 0,
                more: true
            })
        );
        assert_eq!(r.ports().unwrap(), (443, 54321));
        // Non-first: offset 208 units of 8 bytes (field 0x0680) = 1664 bytes.
        let q = v6_quote(44, &[17, 0, 0x06, 0x80, 0, 0, 0, 7], &udp);
        let r = read_ipv6(&q).unwrap();
        assert_eq!(
            r.reversed_key(),
            Err(WireError::NonFirstFragment { offset: 1664 })
        );
        // Atomic fragment (offset 0, M=0): a whole datagram.
        let q = v6_quote(44, &[17, 0, 0, 0, 0, 0, 0, 7], &udp);
        assert_eq!(read_ipv6(&q).unwrap().fragment, None);
    }

    #[test]
    fn ipv6_chain_limit() {
        let mut exts = Vec::new();
        for _ in 0..(MAX_EXT_HEADERS + 1) {
            exts.extend_from_slice(&[60, 0, 1, 4, 0, 0, 0, 0]);
        }
        let q = v6_quote(60, &exts, &[]);
        assert_eq!(read_ipv6(&q), Err(WireError::ExtChainTooLong));
    }

    #[test]
    fn rfc4884_length_bounds_quote() {
        // Time exceeded with RFC 4884 length = 7 words (28 bytes: IPv4 20 + UDP 8), followed by an
        // extension structure that must not be read as quoted payload.
        let mut m = vec![11, 0, 0, 0, 0, 7, 0, 0];
        m.extend_from_slice(&[
            0x45, 0, 0, 0x40, 0, 1, 0, 0, 1, 17, 0, 0, 192, 0, 2, 1, 198, 51, 100, 10,
        ]);
        m.extend_from_slice(&[0x75, 0x30, 0x32, 0xc8, 0x00, 0x2c, 0, 0]);
        m.extend_from_slice(&[0x20, 0, 0, 0, 0, 8, 1, 1, 0, 0, 0, 0]);
        let e = read_icmpv4_error(&m).unwrap();
        assert_eq!(e.quote.bytes().len(), 28);
        assert_eq!(e.quote.l4_bytes().len(), 8);
        assert_eq!(e.quote.ports().unwrap(), (30000, 13000));
    }

    #[test]
    fn quoted_icmp_error_detected() {
        let mut m = FRAG_NEEDED_8.to_vec();
        m[8 + 9] = 1; // quoted protocol ICMP
        m[28] = 3; // quoted type 3: an error about an error
        assert!(read_icmpv4_error(&m).unwrap().quote.is_icmp_error());
        m[28] = 8; // echo request
        assert!(!read_icmpv4_error(&m).unwrap().quote.is_icmp_error());
    }
}
