//! In-place rewrite views over forwarded packets: Ethernet MACs, IPv4/IPv6 addresses and TTL/hop
//! limit, TCP/UDP ports and the ICMP header.
//!
//! Why by hand: a forwarded packet must leave with every bit we did not mean to change intact —
//! DSCP/ECN, the IP ID, DF, IPv4 options, TCP options. Parsing into etherparse's header structs and
//! emitting again would normalise or drop some of these, and costs a copy. These views are thin
//! wrappers over the caller's bytes in smoltcp's shape: `new_unchecked`, `new_checked` (=
//! `new_unchecked` + `check_len`), `into_inner`, one getter and one setter per field.
//!
//! Panic contract: after `check_len` (or `new_checked`) succeeds, no getter or setter panics.
//! Plain setters do not touch checksums; the `*_update_checksum` methods keep the checksum
//! right with RFC 1624 incremental updates (see [`crate::checksum`]).

use core::net::{Ipv4Addr, Ipv6Addr};

use crate::WireError;
use crate::checksum;
use crate::error::Layer;

type Field = core::ops::Range<usize>;

fn check_min(buf: &[u8], layer: Layer, min: usize) -> Result<(), WireError> {
    if buf.len() < min {
        Err(WireError::truncated(layer, min, buf.len()))
    } else {
        Ok(())
    }
}

fn get16(b: &[u8], f: Field) -> u16 {
    u16::from_be_bytes([b[f.start], b[f.start + 1]])
}

fn set16(b: &mut [u8], f: Field, v: u16) {
    b[f].copy_from_slice(&v.to_be_bytes());
}

fn get_array<const N: usize>(b: &[u8], f: Field) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[f]);
    out
}

/// An Ethernet II header view (destination, source, EtherType); 802.1Q tags follow it and are
/// not part of this view.
#[derive(Debug, Clone)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

mod eth {
    use super::Field;
    pub(super) const DST: Field = 0..6;
    pub(super) const SRC: Field = 6..12;
    pub(super) const ETHERTYPE: Field = 12..14;
    pub(super) const HEADER_LEN: usize = 14;
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Ethernet II header length without VLAN tags.
    pub const HEADER_LEN: usize = eth::HEADER_LEN;

    /// Wrap a buffer without checking its length.
    pub fn new_unchecked(buffer: T) -> Self {
        EthernetFrame { buffer }
    }

    /// Wrap a buffer, checking it holds a whole Ethernet header.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let f = Self::new_unchecked(buffer);
        f.check_len()?;
        Ok(f)
    }

    /// Check the buffer holds the 14-byte header. No setter invalidates this.
    pub fn check_len(&self) -> Result<(), WireError> {
        check_min(self.buffer.as_ref(), Layer::Ethernet, eth::HEADER_LEN)
    }

    /// Return the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Return the destination MAC address.
    pub fn dst_addr(&self) -> [u8; 6] {
        get_array(self.buffer.as_ref(), eth::DST)
    }

    /// Return the source MAC address.
    pub fn src_addr(&self) -> [u8; 6] {
        get_array(self.buffer.as_ref(), eth::SRC)
    }

    /// Return the EtherType field (0x8100 when a VLAN tag follows).
    pub fn ethertype(&self) -> u16 {
        get16(self.buffer.as_ref(), eth::ETHERTYPE)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    /// Set the destination MAC address.
    pub fn set_dst_addr(&mut self, mac: [u8; 6]) {
        self.buffer.as_mut()[eth::DST].copy_from_slice(&mac);
    }

    /// Set the source MAC address.
    pub fn set_src_addr(&mut self, mac: [u8; 6]) {
        self.buffer.as_mut()[eth::SRC].copy_from_slice(&mac);
    }

    /// Set the EtherType field.
    pub fn set_ethertype(&mut self, ethertype: u16) {
        set16(self.buffer.as_mut(), eth::ETHERTYPE, ethertype);
    }
}

/// An IPv4 header view over a buffer that starts at the IPv4 header.
#[derive(Debug, Clone)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

mod ipv4 {
    use super::Field;
    pub(super) const VER_IHL: usize = 0;
    pub(super) const TOS: usize = 1;
    pub(super) const TOTAL_LEN: Field = 2..4;
    pub(super) const IDENT: Field = 4..6;
    pub(super) const FLAGS_FRAG: Field = 6..8;
    pub(super) const TTL: usize = 8;
    pub(super) const PROTOCOL: usize = 9;
    pub(super) const CHECKSUM: Field = 10..12;
    pub(super) const SRC: Field = 12..16;
    pub(super) const DST: Field = 16..20;
    pub(super) const MIN_HEADER_LEN: usize = 20;
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Minimum IPv4 header length (no options).
    pub const MIN_HEADER_LEN: usize = ipv4::MIN_HEADER_LEN;

    /// Wrap a buffer without checking its length.
    pub fn new_unchecked(buffer: T) -> Self {
        Ipv4Packet { buffer }
    }

    /// Wrap a buffer, checking it holds the whole header (options included).
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Check the version is 4, IHL ≥ 5 and the buffer holds `IHL × 4` bytes.
    ///
    /// Only [`Self::set_header_len`] can invalidate this check.
    pub fn check_len(&self) -> Result<(), WireError> {
        let b = self.buffer.as_ref();
        check_min(b, Layer::Ipv4, ipv4::MIN_HEADER_LEN)?;
        if self.version() != 4 {
            return Err(WireError::BadVersion(self.version()));
        }
        let hl = self.header_len();
        if hl < ipv4::MIN_HEADER_LEN {
            return Err(WireError::BadHeaderLen {
                layer: Layer::Ipv4,
                value: hl,
            });
        }
        check_min(b, Layer::Ipv4, hl)
    }

    /// Return the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Return the version field.
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[ipv4::VER_IHL] >> 4
    }

    /// Return the header length in bytes (IHL × 4).
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[ipv4::VER_IHL] & 0x0f) * 4
    }

    /// Return the DSCP and ECN byte (the former TOS).
    pub fn tos(&self) -> u8 {
        self.buffer.as_ref()[ipv4::TOS]
    }

    /// Return the total length field.
    pub fn total_len(&self) -> u16 {
        get16(self.buffer.as_ref(), ipv4::TOTAL_LEN)
    }

    /// Return the identification field.
    pub fn ident(&self) -> u16 {
        get16(self.buffer.as_ref(), ipv4::IDENT)
    }

    /// Return the don't-fragment flag.
    pub fn dont_frag(&self) -> bool {
        get16(self.buffer.as_ref(), ipv4::FLAGS_FRAG) & 0x4000 != 0
    }

    /// Return the more-fragments flag.
    pub fn more_frags(&self) -> bool {
        get16(self.buffer.as_ref(), ipv4::FLAGS_FRAG) & 0x2000 != 0
    }

    /// Return the fragment offset in bytes.
    pub fn frag_offset(&self) -> u16 {
        (get16(self.buffer.as_ref(), ipv4::FLAGS_FRAG) & 0x1fff) << 3
    }

    /// Return the time-to-live field.
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[ipv4::TTL]
    }

    /// Return the protocol field.
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[ipv4::PROTOCOL]
    }

    /// Return the header checksum field.
    pub fn checksum(&self) -> u16 {
        get16(self.buffer.as_ref(), ipv4::CHECKSUM)
    }

    /// Return the source address.
    pub fn src_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(get_array::<4>(self.buffer.as_ref(), ipv4::SRC))
    }

    /// Return the destination address.
    pub fn dst_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(get_array::<4>(self.buffer.as_ref(), ipv4::DST))
    }

    /// True when the header checksum verifies (RFC 791 §3.1).
    pub fn verify_checksum(&self) -> bool {
        let b = self.buffer.as_ref();
        checksum::verify(checksum::sum(0, &b[..self.header_len()]))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Set the header length in bytes (must be a multiple of 4). Invalidates `check_len`; does not update the checksum.
    pub fn set_header_len(&mut self, len: usize) {
        let b = self.buffer.as_mut();
        b[ipv4::VER_IHL] = (b[ipv4::VER_IHL] & 0xf0) | ((len / 4) as u8 & 0x0f);
    }

    /// Set the total length field. Does not update the checksum.
    pub fn set_total_len(&mut self, len: u16) {
        set16(self.buffer.as_mut(), ipv4::TOTAL_LEN, len);
    }

    /// Set the identification field. Does not update the checksum.
    pub fn set_ident(&mut self, ident: u16) {
        set16(self.buffer.as_mut(), ipv4::IDENT, ident);
    }

    /// Set the flags and fragment offset (`offset` in bytes, multiple of 8). Does not update the checksum.
    pub fn set_frag(&mut self, dont_frag: bool, more_frags: bool, offset: u16) {
        let v =
            (u16::from(dont_frag) << 14) | (u16::from(more_frags) << 13) | ((offset >> 3) & 0x1fff);
        set16(self.buffer.as_mut(), ipv4::FLAGS_FRAG, v);
    }

    /// Set the TTL field. Does not update the checksum.
    pub fn set_ttl(&mut self, ttl: u8) {
        self.buffer.as_mut()[ipv4::TTL] = ttl;
    }

    /// Set the checksum field.
    pub fn set_checksum(&mut self, check: u16) {
        set16(self.buffer.as_mut(), ipv4::CHECKSUM, check);
    }

    /// Set the source address. Does not update the checksum.
    pub fn set_src_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[ipv4::SRC].copy_from_slice(&addr.octets());
    }

    /// Set the destination address. Does not update the checksum.
    pub fn set_dst_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[ipv4::DST].copy_from_slice(&addr.octets());
    }

    /// Recompute the header checksum from scratch (for headers we build, not forward).
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let hl = self.header_len();
        let c = checksum::checksum(&self.buffer.as_ref()[..hl]);
        self.set_checksum(c);
    }

    /// Set the source address and adjust the header checksum incrementally; returns the old address.
    pub fn set_src_addr_update_checksum(&mut self, addr: Ipv4Addr) -> Ipv4Addr {
        let old = self.src_addr();
        self.set_src_addr(addr);
        self.set_checksum(checksum::update32(
            self.checksum(),
            old.to_bits(),
            addr.to_bits(),
        ));
        old
    }

    /// Set the destination address and adjust the header checksum incrementally; returns the old address.
    pub fn set_dst_addr_update_checksum(&mut self, addr: Ipv4Addr) -> Ipv4Addr {
        let old = self.dst_addr();
        self.set_dst_addr(addr);
        self.set_checksum(checksum::update32(
            self.checksum(),
            old.to_bits(),
            addr.to_bits(),
        ));
        old
    }

    /// Decrement the TTL by one and adjust the checksum (RFC 1624 on the TTL/protocol word).
    ///
    /// Returns the new TTL; a TTL of 0 stays 0 (the caller must not forward it: RFC 1812 §5.3.1).
    pub fn decrement_ttl(&mut self) -> u8 {
        let ttl = self.ttl();
        if ttl == 0 {
            return 0;
        }
        self.set_ttl(ttl - 1);
        self.set_checksum(checksum::ttl_decrement(self.checksum()));
        ttl - 1
    }
}

/// An IPv6 fixed-header view over a buffer that starts at the IPv6 header.
#[derive(Debug, Clone)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

mod ipv6 {
    use super::Field;
    pub(super) const VER_TC_FLOW: Field = 0..4;
    pub(super) const PAYLOAD_LEN: Field = 4..6;
    pub(super) const NEXT_HEADER: usize = 6;
    pub(super) const HOP_LIMIT: usize = 7;
    pub(super) const SRC: Field = 8..24;
    pub(super) const DST: Field = 24..40;
    pub(super) const HEADER_LEN: usize = 40;
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// IPv6 fixed header length.
    pub const HEADER_LEN: usize = ipv6::HEADER_LEN;

    /// Wrap a buffer without checking its length.
    pub fn new_unchecked(buffer: T) -> Self {
        Ipv6Packet { buffer }
    }

    /// Wrap a buffer, checking it holds the fixed header and says version 6.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Check the buffer holds the 40-byte fixed header and the version is 6. No setter invalidates this.
    pub fn check_len(&self) -> Result<(), WireError> {
        check_min(self.buffer.as_ref(), Layer::Ipv6, ipv6::HEADER_LEN)?;
        match self.version() {
            6 => Ok(()),
            v => Err(WireError::BadVersion(v)),
        }
    }

    /// Return the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Return the version field.
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[0] >> 4
    }

    /// Return the traffic class (DSCP and ECN).
    pub fn traffic_class(&self) -> u8 {
        let w = u32::from_be_bytes(get_array(self.buffer.as_ref(), ipv6::VER_TC_FLOW));
        (w >> 20) as u8
    }

    /// Return the flow label.
    pub fn flow_label(&self) -> u32 {
        u32::from_be_bytes(get_array(self.buffer.as_ref(), ipv6::VER_TC_FLOW)) & 0x000f_ffff
    }

    /// Return the payload length field.
    pub fn payload_len(&self) -> u16 {
        get16(self.buffer.as_ref(), ipv6::PAYLOAD_LEN)
    }

    /// Return the next-header field.
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[ipv6::NEXT_HEADER]
    }

    /// Return the hop limit.
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[ipv6::HOP_LIMIT]
    }

    /// Return the source address.
    pub fn src_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(get_array::<16>(self.buffer.as_ref(), ipv6::SRC))
    }

    /// Return the destination address.
    pub fn dst_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(get_array::<16>(self.buffer.as_ref(), ipv6::DST))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    /// Set the payload length field.
    pub fn set_payload_len(&mut self, len: u16) {
        set16(self.buffer.as_mut(), ipv6::PAYLOAD_LEN, len);
    }

    /// Set the next-header field.
    pub fn set_next_header(&mut self, nh: u8) {
        self.buffer.as_mut()[ipv6::NEXT_HEADER] = nh;
    }

    /// Set the hop limit. (IPv6 has no header checksum.)
    pub fn set_hop_limit(&mut self, hl: u8) {
        self.buffer.as_mut()[ipv6::HOP_LIMIT] = hl;
    }

    /// Set the source address. Upper-layer checksums that cover it are not updated.
    pub fn set_src_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[ipv6::SRC].copy_from_slice(&addr.octets());
    }

    /// Set the destination address. Upper-layer checksums that cover it are not updated.
    pub fn set_dst_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[ipv6::DST].copy_from_slice(&addr.octets());
    }

    /// Decrement the hop limit by one; returns the new value (0 stays 0).
    pub fn decrement_hop_limit(&mut self) -> u8 {
        let hl = self.hop_limit().saturating_sub(1);
        self.set_hop_limit(hl);
        hl
    }
}

/// The ports and checksum of a TCP or UDP header, over a buffer that starts at the L4 header.
///
/// Ports sit at the same offsets in TCP, UDP, SCTP and DCCP; the checksum does not, so the view
/// carries which protocol it is.
#[derive(Debug, Clone)]
pub struct L4Packet<T: AsRef<[u8]>> {
    buffer: T,
    kind: L4Kind,
}

/// Which transport header an [`L4Packet`] view covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4Kind {
    /// TCP: checksum at bytes 16..18, always present.
    Tcp,
    /// UDP: checksum at bytes 6..8; zero means "none" over IPv4 (RFC 768).
    Udp,
}

mod l4 {
    use super::Field;
    pub(super) const SRC_PORT: Field = 0..2;
    pub(super) const DST_PORT: Field = 2..4;
    pub(super) const TCP_CHECKSUM: Field = 16..18;
    pub(super) const UDP_CHECKSUM: Field = 6..8;
}

impl L4Kind {
    /// Bytes of header the view needs: 20 for TCP, 8 for UDP.
    pub const fn min_len(self) -> usize {
        match self {
            L4Kind::Tcp => 20,
            L4Kind::Udp => 8,
        }
    }

    /// The IP protocol number.
    pub const fn protocol(self) -> u8 {
        match self {
            L4Kind::Tcp => 6,
            L4Kind::Udp => 17,
        }
    }

    /// The L4 kind for an IP protocol number, if it is TCP or UDP.
    pub const fn from_protocol(p: u8) -> Option<Self> {
        match p {
            6 => Some(L4Kind::Tcp),
            17 => Some(L4Kind::Udp),
            _ => None,
        }
    }

    fn checksum_field(self) -> Field {
        match self {
            L4Kind::Tcp => l4::TCP_CHECKSUM,
            L4Kind::Udp => l4::UDP_CHECKSUM,
        }
    }
}

impl<T: AsRef<[u8]>> L4Packet<T> {
    /// Wrap a buffer without checking its length.
    pub fn new_unchecked(buffer: T, kind: L4Kind) -> Self {
        L4Packet { buffer, kind }
    }

    /// Wrap a buffer, checking it holds the fixed header of `kind`.
    pub fn new_checked(buffer: T, kind: L4Kind) -> Result<Self, WireError> {
        let p = Self::new_unchecked(buffer, kind);
        p.check_len()?;
        Ok(p)
    }

    /// Check the buffer holds the fixed header (20 bytes TCP, 8 UDP). No setter invalidates this.
    pub fn check_len(&self) -> Result<(), WireError> {
        let layer = match self.kind {
            L4Kind::Tcp => Layer::Tcp,
            L4Kind::Udp => Layer::Udp,
        };
        check_min(self.buffer.as_ref(), layer, self.kind.min_len())
    }

    /// Return the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Return which transport protocol this is.
    pub fn kind(&self) -> L4Kind {
        self.kind
    }

    /// Return the source port.
    pub fn src_port(&self) -> u16 {
        get16(self.buffer.as_ref(), l4::SRC_PORT)
    }

    /// Return the destination port.
    pub fn dst_port(&self) -> u16 {
        get16(self.buffer.as_ref(), l4::DST_PORT)
    }

    /// Return the checksum field.
    pub fn checksum(&self) -> u16 {
        get16(self.buffer.as_ref(), self.kind.checksum_field())
    }

    /// True when this is UDP with a zero checksum, which updates leave zero: over IPv4 it means
    /// "no checksum" (RFC 768); over IPv6 it is either an RFC 6936 zero-checksum tunnel or
    /// invalid, and the director forwards it for the receiver to judge rather than invent one.
    pub fn checksum_absent(&self) -> bool {
        self.kind == L4Kind::Udp && self.checksum() == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> L4Packet<T> {
    /// Set the source port. Does not update the checksum.
    pub fn set_src_port(&mut self, port: u16) {
        set16(self.buffer.as_mut(), l4::SRC_PORT, port);
    }

    /// Set the destination port. Does not update the checksum.
    pub fn set_dst_port(&mut self, port: u16) {
        set16(self.buffer.as_mut(), l4::DST_PORT, port);
    }

    /// Set the checksum field.
    pub fn set_checksum(&mut self, check: u16) {
        let f = self.kind.checksum_field();
        set16(self.buffer.as_mut(), f, check);
    }

    fn apply(&mut self, f: impl FnOnce(u16) -> u16) {
        if self.checksum_absent() {
            return;
        }
        let c = f(self.checksum());
        let c = if self.kind == L4Kind::Udp {
            checksum::udp_nonzero(c)
        } else {
            c
        };
        self.set_checksum(c);
    }

    /// Set the source port and adjust the checksum incrementally (a zero UDP checksum stays zero).
    pub fn set_src_port_update_checksum(&mut self, port: u16) -> u16 {
        let old = self.src_port();
        self.set_src_port(port);
        self.apply(|c| checksum::update16(c, old, port));
        old
    }

    /// Set the destination port and adjust the checksum incrementally (a zero UDP checksum stays zero).
    pub fn set_dst_port_update_checksum(&mut self, port: u16) -> u16 {
        let old = self.dst_port();
        self.set_dst_port(port);
        self.apply(|c| checksum::update16(c, old, port));
        old
    }

    /// Adjust the checksum for a pseudo-header address change (the IP layer changed an address).
    pub fn update_checksum_for_addr(&mut self, old: core::net::IpAddr, new: core::net::IpAddr) {
        self.apply(|c| checksum::update_addr(c, old, new));
    }
}

/// The 8-byte ICMPv4/ICMPv6 header view: type, code, checksum and the 4 type-specific bytes.
#[derive(Debug, Clone)]
pub struct IcmpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

mod icmp {
    use super::Field;
    pub(super) const TYPE: usize = 0;
    pub(super) const CODE: usize = 1;
    pub(super) const CHECKSUM: Field = 2..4;
    pub(super) const REST: Field = 4..8;
    pub(super) const HEADER_LEN: usize = 8;
}

impl<T: AsRef<[u8]>> IcmpPacket<T> {
    /// ICMP header length (type, code, checksum, rest of header).
    pub const HEADER_LEN: usize = icmp::HEADER_LEN;

    /// Wrap a buffer without checking its length.
    pub fn new_unchecked(buffer: T) -> Self {
        IcmpPacket { buffer }
    }

    /// Wrap a buffer, checking it holds the 8-byte header.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Check the buffer holds the 8-byte header. No setter invalidates this.
    pub fn check_len(&self) -> Result<(), WireError> {
        check_min(self.buffer.as_ref(), Layer::Icmpv4, icmp::HEADER_LEN)
    }

    /// Return the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Return the message type.
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[icmp::TYPE]
    }

    /// Return the message code.
    pub fn msg_code(&self) -> u8 {
        self.buffer.as_ref()[icmp::CODE]
    }

    /// Return the checksum field.
    pub fn checksum(&self) -> u16 {
        get16(self.buffer.as_ref(), icmp::CHECKSUM)
    }

    /// Return the 4 type-specific bytes (MTU, pointer, identifier/sequence, unused).
    pub fn rest_of_header(&self) -> [u8; 4] {
        get_array(self.buffer.as_ref(), icmp::REST)
    }

    /// Return the message body after the 8-byte header (the quoted datagram of an error).
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[icmp::HEADER_LEN..]
    }

    /// True when the ICMPv4 checksum over the whole message verifies (RFC 792).
    pub fn verify_checksum_v4(&self) -> bool {
        checksum::verify(checksum::sum(0, self.buffer.as_ref()))
    }

    /// True when the ICMPv6 checksum (with the RFC 4443 §2.3 pseudo-header) verifies.
    pub fn verify_checksum_v6(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        let b = self.buffer.as_ref();
        let acc = checksum::pseudo_header_v6(src, dst, 58, b.len() as u32);
        checksum::verify(checksum::sum(acc, b))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> IcmpPacket<T> {
    /// Set the message type. Does not update the checksum.
    pub fn set_msg_type(&mut self, t: u8) {
        self.buffer.as_mut()[icmp::TYPE] = t;
    }

    /// Set the message code. Does not update the checksum.
    pub fn set_msg_code(&mut self, c: u8) {
        self.buffer.as_mut()[icmp::CODE] = c;
    }

    /// Set the checksum field.
    pub fn set_checksum(&mut self, check: u16) {
        set16(self.buffer.as_mut(), icmp::CHECKSUM, check);
    }

    /// Set the 4 type-specific bytes. Does not update the checksum.
    pub fn set_rest_of_header(&mut self, rest: [u8; 4]) {
        self.buffer.as_mut()[icmp::REST].copy_from_slice(&rest);
    }

    /// Return the message body for in-place edits of the quoted datagram.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[icmp::HEADER_LEN..]
    }

    /// Recompute the ICMPv4 checksum over the whole message.
    pub fn fill_checksum_v4(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(self.buffer.as_ref());
        self.set_checksum(c);
    }

    /// Recompute the ICMPv6 checksum with its pseudo-header.
    pub fn fill_checksum_v6(&mut self, src: Ipv6Addr, dst: Ipv6Addr) {
        self.set_checksum(0);
        let b = self.buffer.as_ref();
        let acc = checksum::pseudo_header_v6(src, dst, 58, b.len() as u32);
        let c = checksum::finish(checksum::sum(acc, b));
        self.set_checksum(c);
    }

    /// Adjust the checksum for a change of covered bytes from `old` to `new` (same length, even offset).
    pub fn update_checksum(&mut self, old: &[u8], new: &[u8]) {
        let c = checksum::update_bytes(self.checksum(), old, new);
        self.set_checksum(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::IpAddr;

    // Ethernet II + IPv4 (with 4 bytes of options: Router Alert) + TCP SYN, checksums valid.
    static TCP_V4_FRAME: [u8; 14 + 24 + 20] = [
        // Ethernet: dst, src, type
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00,
        // IPv4: ver/ihl=6, tos=0xb8 (EF + ECT0... DSCP 46), total 44, id 0x1234, DF, ttl 64, tcp
        0x46, 0xb8, 0x00, 0x2c, 0x12, 0x34, 0x40, 0x00, 0x40, 0x06, 0x00, 0x00,
        // src 192.0.2.1, dst 198.51.100.10
        0xc0, 0x00, 0x02, 0x01, 0xc6, 0x33, 0x64, 0x0a,
        // options: Router Alert (RFC 2113)
        0x94, 0x04, 0x00, 0x00,
        // TCP: sport 40000, dport 80, seq 1, ack 0, off 5, SYN, win 65535, csum, urg
        0x9c, 0x40, 0x00, 0x50, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x50, 0x02, 0xff,
        0xff, 0x00, 0x00, 0x00, 0x00,
    ];

    fn fixture() -> Vec<u8> {
        let mut f = TCP_V4_FRAME.to_vec();
        let mut ip = Ipv4Packet::new_unchecked(&mut f[14..38]);
        ip.fill_checksum();
        let tcp_sum = full_tcp_v4(&f[14..]);
        f[38 + 16..38 + 18].copy_from_slice(&tcp_sum.to_be_bytes());
        f
    }

    fn full_tcp_v4(ip: &[u8]) -> u16 {
        let p = Ipv4Packet::new_checked(ip).unwrap();
        let l4 = &ip[p.header_len()..usize::from(p.total_len())];
        let mut seg = l4.to_vec();
        seg[16] = 0;
        seg[17] = 0;
        let acc = checksum::pseudo_header_v4(p.src_addr(), p.dst_addr(), 6, seg.len() as u16);
        checksum::finish(checksum::sum(acc, &seg))
    }

    #[test]
    fn deconstruct_ipv4_tcp() {
        let f = fixture();
        let e = EthernetFrame::new_checked(&f[..]).unwrap();
        assert_eq!(e.dst_addr(), [2, 0, 0, 0, 0, 2]);
        assert_eq!(e.src_addr(), [2, 0, 0, 0, 0, 1]);
        assert_eq!(e.ethertype(), 0x0800);
        let ip = Ipv4Packet::new_checked(&f[14..]).unwrap();
        assert_eq!(ip.header_len(), 24);
        assert_eq!(ip.tos(), 0xb8);
        assert_eq!(ip.total_len(), 44);
        assert_eq!(ip.ident(), 0x1234);
        assert!(ip.dont_frag());
        assert!(!ip.more_frags());
        assert_eq!(ip.frag_offset(), 0);
        assert_eq!(ip.ttl(), 64);
        assert_eq!(ip.protocol(), 6);
        assert_eq!(ip.src_addr(), Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(ip.dst_addr(), Ipv4Addr::new(198, 51, 100, 10));
        assert!(ip.verify_checksum());
        // etherparse agrees on the header checksum.
        let ep = etherparse::Ipv4HeaderSlice::from_slice(&f[14..]).unwrap();
        assert_eq!(ep.to_header().calc_header_checksum(), ip.checksum());
        let tcp = L4Packet::new_checked(&f[38..], L4Kind::Tcp).unwrap();
        assert_eq!(tcp.src_port(), 40000);
        assert_eq!(tcp.dst_port(), 80);
    }

    #[test]
    fn nat_rewrite_keeps_everything_else_and_checksums_match_recompute() {
        let mut f = fixture();
        let before = f.clone();
        let new_dst = Ipv4Addr::new(203, 0, 113, 7);
        {
            let mut ip = Ipv4Packet::new_checked(&mut f[14..38]).unwrap();
            let old = ip.set_dst_addr_update_checksum(new_dst);
            assert_eq!(ip.decrement_ttl(), 63);
            let mut tcp = L4Packet::new_checked(&mut f[38..], L4Kind::Tcp).unwrap();
            tcp.update_checksum_for_addr(IpAddr::V4(old), IpAddr::V4(new_dst));
            tcp.set_dst_port_update_checksum(8080);
        }
        let ip = Ipv4Packet::new_checked(&f[14..]).unwrap();
        assert!(ip.verify_checksum());
        let mut recomputed = f[14..38].to_vec();
        Ipv4Packet::new_unchecked(&mut recomputed[..]).fill_checksum();
        assert_eq!(
            ip.checksum(),
            Ipv4Packet::new_unchecked(&recomputed[..]).checksum()
        );
        let tcp = L4Packet::new_checked(&f[38..], L4Kind::Tcp).unwrap();
        assert_eq!(tcp.checksum(), full_tcp_v4(&f[14..]));
        // Everything but dst addr, TTL, IP checksum, dst port and TCP checksum is unchanged:
        // DSCP/ECN, ID, DF and the options survive.
        for (i, (a, b)) in before.iter().zip(&f).enumerate() {
            let changed = matches!(i, 22 | 24 | 25 | 30..=33 | 40 | 41 | 54 | 55);
            if !changed {
                assert_eq!(a, b, "byte {i} changed");
            }
        }
    }

    #[test]
    fn udp_zero_checksum_stays_zero() {
        let mut udp = [0x30, 0x39, 0x00, 0x35, 0x00, 0x08, 0x00, 0x00];
        let mut v = L4Packet::new_checked(&mut udp[..], L4Kind::Udp).unwrap();
        v.set_dst_port_update_checksum(5353);
        v.update_checksum_for_addr(
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)),
        );
        assert_eq!(v.checksum(), 0);
        assert_eq!(v.dst_port(), 5353);
    }

    #[test]
    fn construct_into_a5_buffer() {
        let mut buf = [0xa5u8; 20];
        buf[0] = 0x45;
        let mut ip = Ipv4Packet::new_checked(&mut buf[..]).unwrap();
        ip.set_total_len(20);
        ip.set_frag(true, false, 0);
        ip.set_ttl(9);
        ip.set_src_addr(Ipv4Addr::new(192, 0, 2, 1));
        ip.set_dst_addr(Ipv4Addr::new(192, 0, 2, 2));
        ip.fill_checksum();
        assert!(ip.verify_checksum());
        // Fields we did not set still show 0xa5.
        assert_eq!(ip.tos(), 0xa5);
        assert_eq!(ip.ident(), 0xa5a5);
        assert_eq!(ip.protocol(), 0xa5);
        assert!(ip.dont_frag());
    }

    #[test]
    fn ipv6_view() {
        let mut b = [0xa5u8; 48];
        b[0] = 0x6b;
        b[1] = 0x81;
        let mut p = Ipv6Packet::new_checked(&mut b[..]).unwrap();
        assert_eq!(p.traffic_class(), 0xb8);
        p.set_hop_limit(2);
        assert_eq!(p.decrement_hop_limit(), 1);
        let a: Ipv6Addr = "2001:db8::1".parse().unwrap();
        p.set_dst_addr(a);
        assert_eq!(p.dst_addr(), a);
        assert_eq!(p.flow_label(), 0x1a5a5);
    }

    #[test]
    fn truncated_and_bad_inputs() {
        assert!(matches!(
            Ipv4Packet::new_checked(&[0x45u8; 19][..]),
            Err(WireError::Truncated {
                layer: Layer::Ipv4,
                needed: 20,
                available: 19
            })
        ));
        let mut h = [0u8; 20];
        h[0] = 0x44;
        assert!(matches!(
            Ipv4Packet::new_checked(&h[..]),
            Err(WireError::BadHeaderLen {
                layer: Layer::Ipv4,
                value: 16
            })
        ));
        h[0] = 0x46;
        assert!(matches!(
            Ipv4Packet::new_checked(&h[..]),
            Err(WireError::Truncated { .. })
        ));
        h[0] = 0x65;
        assert_eq!(
            Ipv4Packet::new_checked(&h[..]).err(),
            Some(WireError::BadVersion(6))
        );
        assert!(Ipv6Packet::new_checked(&[0x60u8; 39][..]).is_err());
        assert!(L4Packet::new_checked(&[0u8; 19][..], L4Kind::Tcp).is_err());
        assert!(L4Packet::new_checked(&[0u8; 7][..], L4Kind::Udp).is_err());
        assert!(IcmpPacket::new_checked(&[0u8; 7][..]).is_err());
        assert!(EthernetFrame::new_checked(&[0u8; 13][..]).is_err());
    }

    #[test]
    fn ttl_zero_stays_zero() {
        let mut f = fixture();
        let mut ip = Ipv4Packet::new_checked(&mut f[14..38]).unwrap();
        ip.set_ttl(0);
        ip.fill_checksum();
        assert_eq!(ip.decrement_ttl(), 0);
        assert!(ip.verify_checksum());
    }

    #[test]
    fn construct_ethernet_icmp_l4_into_a5_buffers() {
        let mut e = [0xa5u8; 14];
        let mut f = EthernetFrame::new_checked(&mut e[..]).unwrap();
        f.set_dst_addr([2, 0, 0, 0, 0, 9]);
        f.set_src_addr([2, 0, 0, 0, 0, 8]);
        f.set_ethertype(0x86dd);
        assert_eq!(e, [2, 0, 0, 0, 0, 9, 2, 0, 0, 0, 0, 8, 0x86, 0xdd]);

        let mut m = [0xa5u8; 12];
        let mut i = IcmpPacket::new_checked(&mut m[..]).unwrap();
        i.set_msg_type(3);
        i.set_msg_code(4);
        i.set_rest_of_header([0, 0, 0x05, 0x00]);
        i.fill_checksum_v4();
        assert!(i.verify_checksum_v4());
        assert_eq!(i.payload(), &[0xa5; 4]);
        // An incremental edit of the quoted bytes keeps the ICMP checksum right.
        let old = [0xa5u8, 0xa5];
        i.payload_mut()[0..2].copy_from_slice(&[0x12, 0x34]);
        i.update_checksum(&old, &[0x12, 0x34]);
        assert!(i.verify_checksum_v4());
        let (s6, d6) = (
            "2001:db8::1".parse().unwrap(),
            "2001:db8::2".parse().unwrap(),
        );
        i.fill_checksum_v6(s6, d6);
        assert!(i.verify_checksum_v6(s6, d6));
        assert!(!i.verify_checksum_v6(d6, d6));

        let mut u = [0xa5u8; 8];
        let mut l = L4Packet::new_checked(&mut u[..], L4Kind::Udp).unwrap();
        l.set_src_port(53);
        l.set_dst_port(33000);
        assert_eq!(u[..4], [0, 53, 0x80, 0xe8]);
        assert_eq!(u[4..], [0xa5; 4]);
    }

    use proptest::prelude::*;

    fn full_l4(src: IpAddr, dst: IpAddr, proto: u8, seg: &[u8], at: usize) -> u16 {
        let mut z = seg.to_vec();
        z[at] = 0;
        z[at + 1] = 0;
        let acc = checksum::pseudo_header(src, dst, proto, seg.len() as u32);
        let c = checksum::finish(checksum::sum(acc, &z));
        if proto == 17 {
            checksum::udp_nonzero(c)
        } else {
            c
        }
    }

    proptest! {
        /// NAT both ways through the views, IPv4/IPv6 × TCP/UDP: every incrementally updated
        /// checksum equals a full recompute, and etherparse agrees the result is valid.
        #[test]
        fn nat_rewrites_equal_full_recompute(
            v6 in any::<bool>(),
            tcp in any::<bool>(),
            payload in proptest::collection::vec(any::<u8>(), 0..600),
            new4 in any::<[u8; 4]>(),
            new6 in any::<[u8; 16]>(),
            port in any::<u16>(),
            rewrite_src in any::<bool>(),
        ) {
            let b = if v6 {
                etherparse::PacketBuilder::ipv6([0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                    [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2], 64)
            } else {
                etherparse::PacketBuilder::ipv4([192, 0, 2, 1], [198, 51, 100, 10], 64)
            };
            let mut pkt = Vec::new();
            if tcp {
                b.tcp(40000, 80, 7, 1000).write(&mut pkt, &payload).unwrap();
            } else {
                b.udp(40000, 80).write(&mut pkt, &payload).unwrap();
            }
            let hl = if v6 { 40 } else { 20 };
            let kind = if tcp { L4Kind::Tcp } else { L4Kind::Udp };
            let (ip_part, l4_part) = pkt.split_at_mut(hl);
            let (old, new) = if v6 {
                let mut ip = Ipv6Packet::new_checked(&mut ip_part[..]).unwrap();
                let new = Ipv6Addr::from(new6);
                let old = if rewrite_src { ip.src_addr() } else { ip.dst_addr() };
                if rewrite_src { ip.set_src_addr(new) } else { ip.set_dst_addr(new) }
                ip.decrement_hop_limit();
                (IpAddr::V6(old), IpAddr::V6(new))
            } else {
                let mut ip = Ipv4Packet::new_checked(&mut ip_part[..]).unwrap();
                let new = Ipv4Addr::from(new4);
                let old = if rewrite_src {
                    ip.set_src_addr_update_checksum(new)
                } else {
                    ip.set_dst_addr_update_checksum(new)
                };
                ip.decrement_ttl();
                let inc = ip.checksum();
                ip.fill_checksum();
                prop_assert_eq!(inc, ip.checksum());
                (IpAddr::V4(old), IpAddr::V4(new))
            };
            let mut l4 = L4Packet::new_checked(&mut l4_part[..], kind).unwrap();
            l4.update_checksum_for_addr(old, new);
            if rewrite_src { l4.set_src_port_update_checksum(port); } else { l4.set_dst_port_update_checksum(port); }
            let inc = l4.checksum();
            let p = crate::parse::parse_ip(&pkt).unwrap();
            let ip = *p.ip().unwrap();
            let at = if tcp { 16 } else { 6 };
            let full = full_l4(ip.src, ip.dst, kind.protocol(), &pkt[hl..], at);
            prop_assert_eq!(inc, full);
            // Independent check: etherparse recomputes the same checksum.
            let sliced = etherparse::SlicedPacket::from_ip(&pkt).unwrap();
            let ep = match (sliced.transport.unwrap(), ip.src, ip.dst) {
                (etherparse::TransportSlice::Tcp(t), IpAddr::V4(s), IpAddr::V4(d)) =>
                    t.to_header().calc_checksum_ipv4_raw(s.octets(), d.octets(), t.payload()).unwrap(),
                (etherparse::TransportSlice::Tcp(t), IpAddr::V6(s), IpAddr::V6(d)) =>
                    t.to_header().calc_checksum_ipv6_raw(s.octets(), d.octets(), t.payload()).unwrap(),
                (etherparse::TransportSlice::Udp(u), IpAddr::V4(s), IpAddr::V4(d)) =>
                    u.to_header().calc_checksum_ipv4_raw(s.octets(), d.octets(), u.payload()).unwrap(),
                (etherparse::TransportSlice::Udp(u), IpAddr::V6(s), IpAddr::V6(d)) =>
                    u.to_header().calc_checksum_ipv6_raw(s.octets(), d.octets(), u.payload()).unwrap(),
                _ => unreachable!(),
            };
            prop_assert_eq!(inc, ep);
        }
    }
}
