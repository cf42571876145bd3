//! The forwarding fast path's frame reader: the one shape nearly every packet of an established
//! connection has — Ethernet II without VLAN tags; IPv4 without options and not a fragment, or
//! IPv6 without extension headers; TCP or UDP — read in a handful of loads into a [`Flow`] of
//! plain bytes.
//!
//! Why by hand, beside [`crate::parse`]: `parse_ethernet` returns an 88-byte `ParsedFrame` of
//! `IpAddr` enums, which does not inline across the crate boundary; `perf annotate` of the
//! dataplane's burst loop put about a third of its samples on the store-forwarding stalls of
//! copying that result out (BENCHMARKS.md, issue 3). [`read`] is small enough to inline and its
//! [`Flow`] is already in the connection table's key form (addresses as 16 bytes, IPv4 in the
//! first four).
//!
//! Contract: [`read`] answers `Some` only for frames that [`crate::parse::parse_ethernet`]
//! parses to exactly [`Flow::ip_info`] — same addresses, ports, flags, TTL and lengths — and
//! `None` for everything else, which then takes the full parse. The property test below holds
//! that over mutated frames. No input panics; nothing allocates.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::parse::{IpInfo, Transport, ethertype, proto};

/// Offset of the IP header in every frame [`read`] accepts (no VLAN tag).
pub const L3: usize = 14;

/// A TCP or UDP packet of the commonest shape, as [`read`] found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    /// Source address: IPv6, or IPv4 in the first four bytes and zeros after.
    pub src: [u8; 16],
    /// Destination address, in the same form.
    pub dst: [u8; 16],
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// Bytes of the IP packet (header included; link padding excluded).
    pub ip_len: u16,
    /// [`proto::TCP`] or [`proto::UDP`].
    pub protocol: u8,
    /// TTL or hop limit.
    pub ttl: u8,
    /// The TCP flags byte (0 for UDP).
    pub tcp_flags: u8,
    /// True for IPv6.
    pub v6: bool,
}

impl Flow {
    /// Length of the IP header (20 for IPv4 without options, 40 for IPv6).
    #[inline(always)]
    pub fn ip_header_len(&self) -> usize {
        if self.v6 { 40 } else { 20 }
    }

    /// The source address as an [`IpAddr`].
    #[inline(always)]
    pub fn src_ip(&self) -> IpAddr {
        addr(&self.src, self.v6)
    }

    /// The destination address as an [`IpAddr`].
    #[inline(always)]
    pub fn dst_ip(&self) -> IpAddr {
        addr(&self.dst, self.v6)
    }

    /// What [`crate::parse::parse_ethernet`] returns for the same frame.
    #[inline(always)]
    pub fn ip_info(&self) -> IpInfo {
        let hl = self.ip_header_len();
        IpInfo {
            src: self.src_ip(),
            dst: self.dst_ip(),
            protocol: self.protocol,
            ttl: self.ttl,
            l3_offset: L3,
            l4_offset: L3 + hl,
            l4_len: usize::from(self.ip_len) - hl,
            fragment: None,
            transport: if self.protocol == proto::TCP {
                Transport::Tcp {
                    sport: self.sport,
                    dport: self.dport,
                    flags: self.tcp_flags,
                }
            } else {
                Transport::Udp {
                    sport: self.sport,
                    dport: self.dport,
                }
            },
        }
    }
}

#[inline(always)]
fn addr(b: &[u8; 16], v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(*b))
    } else {
        IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
    }
}

#[inline(always)]
fn be16(b: &[u8], at: usize) -> Option<u16> {
    match b.get(at..at + 2) {
        Some(&[x, y]) => Some(u16::from_be_bytes([x, y])),
        _ => None,
    }
}

/// Read `frame` when it has the fast path's shape (see the module doc); `None` otherwise.
#[inline(always)]
pub fn read(frame: &[u8]) -> Option<Flow> {
    let b = frame.get(L3..)?;
    match be16(frame, 12)? {
        ethertype::IPV4 => {
            let h = b.get(..20)?;
            // Version 4, no options; not a fragment (MF clear, offset 0).
            if h[0] != 0x45 || u16::from_be_bytes([h[6], h[7]]) & 0x3fff != 0 {
                return None;
            }
            let total = u16::from_be_bytes([h[2], h[3]]);
            let l4 = b.get(20..usize::from(total))?;
            let (sport, dport, tcp_flags) = transport(h[9], l4)?;
            // Built as integers, not byte by byte into zeroed arrays: the wide loads that read
            // them back would stall on store forwarding.
            let src = u128::from(u32::from_le_bytes([h[12], h[13], h[14], h[15]])).to_le_bytes();
            let dst = u128::from(u32::from_le_bytes([h[16], h[17], h[18], h[19]])).to_le_bytes();
            Some(Flow {
                src,
                dst,
                sport,
                dport,
                ip_len: total,
                protocol: h[9],
                ttl: h[8],
                tcp_flags,
                v6: false,
            })
        }
        ethertype::IPV6 => {
            let h = b.get(..40)?;
            let payload = u16::from_be_bytes([h[4], h[5]]);
            // Payload length 0 is a jumbogram's: the full parse's.
            if h[0] >> 4 != 6 || payload == 0 {
                return None;
            }
            let l4 = b.get(40..40 + usize::from(payload))?;
            let (sport, dport, tcp_flags) = transport(h[6], l4)?;
            let src = u128::from_le_bytes(h[8..24].try_into().ok()?).to_le_bytes();
            let dst = u128::from_le_bytes(h[24..40].try_into().ok()?).to_le_bytes();
            Some(Flow {
                src,
                dst,
                sport,
                dport,
                ip_len: payload.checked_add(40)?,
                protocol: h[6],
                ttl: h[7],
                tcp_flags,
                v6: true,
            })
        }
        _ => None,
    }
}

/// Ports and TCP flags of a whole TCP or UDP header at the start of `l4` (the upper-layer bytes
/// the IP length names), with the full parse's length checks.
#[inline(always)]
fn transport(protocol: u8, l4: &[u8]) -> Option<(u16, u16, u8)> {
    match protocol {
        proto::TCP => {
            let h = l4.get(..20)?;
            let doff = usize::from(h[12] >> 4) * 4;
            if doff < 20 || l4.len() < doff {
                return None;
            }
            Some((
                u16::from_be_bytes([h[0], h[1]]),
                u16::from_be_bytes([h[2], h[3]]),
                h[13],
            ))
        }
        proto::UDP => {
            let h = l4.get(..8)?;
            let len = usize::from(u16::from_be_bytes([h[4], h[5]]));
            if l4.len() < len || (len != 0 && len < 8) {
                return None;
            }
            Some((
                u16::from_be_bytes([h[0], h[1]]),
                u16::from_be_bytes([h[2], h[3]]),
                0,
            ))
        }
        _ => None,
    }
}

/// An ICMP error of the commonest shape about a TCP or UDP packet, as [`read_error`] found it:
/// the outer packet as for [`read`] but carrying ICMP (IPv4) or ICMPv6 (IPv6); an error type
/// the director forwards (destination unreachable, source quench, time exceeded, parameter
/// problem; packet too big) without RFC 4884 extensions; quoting a packet of the same family
/// without IPv4 options, IPv6 extension headers or fragmentation, with at least its ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorFlow {
    /// The quoted packet's flow reversed — the flow the error travels with, whose connection
    /// it concerns — in [`Flow`]'s form (`ip_len`, `ttl` and `tcp_flags` are the outer
    /// packet's and 0).
    pub flow: Flow,
    /// The outer source address (who sent the error).
    pub src: [u8; 16],
    /// The outer destination address.
    pub dst: [u8; 16],
    /// ICMP type.
    pub icmp_type: u8,
    /// ICMP code.
    pub code: u8,
    /// The four type-specific header bytes (next-hop MTU, pointer, ...).
    pub rest: [u8; 4],
}

impl ErrorFlow {
    /// What [`crate::parse::parse_ethernet`] returns for the same frame.
    #[inline(always)]
    pub fn ip_info(&self) -> IpInfo {
        let v6 = self.flow.v6;
        let hl = self.flow.ip_header_len();
        IpInfo {
            src: addr(&self.src, v6),
            dst: addr(&self.dst, v6),
            protocol: if v6 { proto::ICMPV6 } else { proto::ICMP },
            ttl: self.flow.ttl,
            l3_offset: L3,
            l4_offset: L3 + hl,
            l4_len: usize::from(self.flow.ip_len) - hl,
            fragment: None,
            transport: if v6 {
                Transport::Icmpv6 {
                    icmp_type: self.icmp_type,
                    code: self.code,
                }
            } else {
                Transport::Icmpv4 {
                    icmp_type: self.icmp_type,
                    code: self.code,
                }
            },
        }
    }
}

/// Read `frame` when it is an ICMP error of the fast path's shape (see [`ErrorFlow`]); `None`
/// otherwise (the full parse and [`crate::quote`] then decide).
#[inline(always)]
pub fn read_error(frame: &[u8]) -> Option<ErrorFlow> {
    let b = frame.get(L3..)?;
    let (v6, hl, total, ttl, outer_src, outer_dst) = match be16(frame, 12)? {
        ethertype::IPV4 => {
            let h = b.get(..20)?;
            if h[0] != 0x45 || u16::from_be_bytes([h[6], h[7]]) & 0x3fff != 0 || h[9] != proto::ICMP
            {
                return None;
            }
            let src = u128::from(u32::from_le_bytes([h[12], h[13], h[14], h[15]])).to_le_bytes();
            let dst = u128::from(u32::from_le_bytes([h[16], h[17], h[18], h[19]])).to_le_bytes();
            (false, 20, u16::from_be_bytes([h[2], h[3]]), h[8], src, dst)
        }
        ethertype::IPV6 => {
            let h = b.get(..40)?;
            let payload = u16::from_be_bytes([h[4], h[5]]);
            if h[0] >> 4 != 6 || payload == 0 || h[6] != proto::ICMPV6 {
                return None;
            }
            let src = u128::from_le_bytes(h[8..24].try_into().ok()?).to_le_bytes();
            let dst = u128::from_le_bytes(h[24..40].try_into().ok()?).to_le_bytes();
            (true, 40, payload.checked_add(40)?, h[7], src, dst)
        }
        _ => return None,
    };
    let msg = b.get(hl..usize::from(total))?;
    let icmp = msg.get(..8)?;
    let (icmp_type, code) = (icmp[0], icmp[1]);
    let rest = [icmp[4], icmp[5], icmp[6], icmp[7]];
    // Error types with their RFC 4884 length byte zero (no extensions).
    let plain = match (v6, icmp_type) {
        (false, 3 | 11 | 12) => rest[1] == 0,
        (false, 4) => true,
        (true, 1 | 3) => rest[0] == 0,
        (true, 2 | 4) => true,
        _ => false,
    };
    if !plain {
        return None;
    }
    let q = msg.get(8..)?;
    let (protocol, qsrc, qdst, ports) = if v6 {
        let h = q.get(..40)?;
        if h[0] >> 4 != 6 {
            return None;
        }
        let src = u128::from_le_bytes(h[8..24].try_into().ok()?).to_le_bytes();
        let dst = u128::from_le_bytes(h[24..40].try_into().ok()?).to_le_bytes();
        (h[6], src, dst, q.get(40..44)?)
    } else {
        let h = q.get(..20)?;
        // No options; not a fragment; the claimed length covers the ports.
        if h[0] != 0x45
            || u16::from_be_bytes([h[6], h[7]]) & 0x3fff != 0
            || u16::from_be_bytes([h[2], h[3]]) < 24
        {
            return None;
        }
        let src = u128::from(u32::from_le_bytes([h[12], h[13], h[14], h[15]])).to_le_bytes();
        let dst = u128::from(u32::from_le_bytes([h[16], h[17], h[18], h[19]])).to_le_bytes();
        (h[9], src, dst, q.get(20..24)?)
    };
    if protocol != proto::TCP && protocol != proto::UDP {
        return None;
    }
    if v6 && u16::from_be_bytes([q[4], q[5]]) < 4 {
        // The quoted IPv6 payload length must cover the ports too.
        return None;
    }
    Some(ErrorFlow {
        flow: Flow {
            // Reversed: the quoted packet went destination ← source of the connection.
            src: qdst,
            dst: qsrc,
            sport: u16::from_be_bytes([ports[2], ports[3]]),
            dport: u16::from_be_bytes([ports[0], ports[1]]),
            ip_len: total,
            protocol,
            ttl,
            tcp_flags: 0,
            v6,
        },
        src: outer_src,
        dst: outer_dst,
        icmp_type,
        code,
        rest,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::parse::parse_ethernet;
    use etherparse::PacketBuilder;

    const V6A: [u8; 16] = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    const V6B: [u8; 16] = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

    fn eth() -> etherparse::PacketBuilderStep<etherparse::Ethernet2Header> {
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
    }

    /// The shapes the fast path serves, then neighbours it must decline: the full parse's test
    /// frames, padded, fragmented and with IPv4 options.
    fn seeds() -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
        let all = crate::parse::tests::seeds();
        let pick = |ix: &[usize]| -> Vec<Vec<u8>> { ix.iter().map(|&i| all[i].clone()).collect() };
        // IPv4 TCP, UDP; IPv6 TCP, UDP.
        let mut served = pick(&[0, 1, 3, 4]);
        let mut padded = served[0].clone();
        padded.extend_from_slice(&[0; 6]); // link padding after the IP packet
        served.push(padded);
        // Echo (both families), VLAN-tagged.
        let mut declined = pick(&[2, 5, 6, 7]);
        let mut frag = served[1].clone();
        frag[20] |= 0x20; // MF
        declined.push(frag);
        let mut options = served[0].clone();
        options[14] = 0x46;
        declined.push(options);
        (served, declined)
    }

    #[test]
    fn serves_the_common_shapes_as_the_full_parse_does() {
        let (served, declined) = seeds();
        for f in &served {
            let flow = read(f).unwrap_or_else(|| panic!("declined {f:02x?}"));
            let full = parse_ethernet(f).unwrap();
            assert_eq!(full.vlan, None);
            assert_eq!(Some(&flow.ip_info()), full.ip());
        }
        for f in &declined {
            assert_eq!(read(f), None, "served {f:02x?}");
        }
        let f = read(&served[0]).unwrap();
        assert_eq!((f.sport, f.dport, f.ttl, f.ip_len), (1, 2, 64, 42));
        assert_eq!(&f.dst[..4], &[198, 51, 100, 1]);
        assert!(f.dst[4..].iter().all(|&b| b == 0));
    }

    /// Seed `seed` of `(served, declined)`, with bytes below `span` overwritten by `flips`
    /// and cut to `cut`.
    fn mutated(
        (served, declined): (Vec<Vec<u8>>, Vec<Vec<u8>>),
        seed: usize,
        flips: &[(usize, u8)],
        cut: Option<usize>,
        span: usize,
    ) -> Vec<u8> {
        let mut f = served.into_iter().chain(declined).nth(seed).unwrap();
        for &(at, v) in flips {
            if let Some(b) = f.get_mut(at % span) {
                *b = v;
            }
        }
        if let Some(c) = cut {
            f.truncate(c);
        }
        f
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4000))]
        /// Differential: whenever the fast reader answers, the full parse gives the very same
        /// packet (and no VLAN tag).
        #[test]
        fn never_disagrees_with_the_full_parse(
            seed in 0usize..11,
            flips in proptest::collection::vec((0usize..80, proptest::prelude::any::<u8>()), 0..4),
            cut in proptest::option::of(0usize..100),
        ) {
            let f = mutated(seeds(), seed, &flips, cut, 70);
            if let Some(flow) = read(&f) {
                let full = parse_ethernet(&f);
                proptest::prop_assert!(full.is_ok(), "{:?}", full);
                let full = full.unwrap();
                proptest::prop_assert_eq!(full.vlan, None);
                proptest::prop_assert_eq!(full.ip(), Some(&flow.ip_info()));
            }
        }
    }

    /// What the full path reads of an error frame: the outer packet, and the quote's reversed
    /// key with type, code and rest.
    fn full_error(f: &[u8]) -> Option<(IpInfo, crate::parse::FlowKey, u8, u8, [u8; 4])> {
        let p = parse_ethernet(f).ok()?;
        if p.vlan.is_some() {
            return None;
        }
        let ip = *p.ip()?;
        let msg = f.get(ip.l4_offset..ip.end())?;
        let e = if ip.is_ipv4() {
            crate::quote::read_icmpv4_error(msg)
        } else {
            crate::quote::read_icmpv6_error(msg)
        }
        .ok()?;
        Some((
            ip,
            e.quote.reversed_key().ok()?,
            e.icmp_type,
            e.code,
            e.rest,
        ))
    }

    fn key_of(f: &Flow) -> crate::parse::FlowKey {
        crate::parse::FlowKey {
            protocol: f.protocol,
            src: f.src_ip(),
            sport: f.sport,
            dst: f.dst_ip(),
            dport: f.dport,
        }
    }

    /// Errors the error reader serves, then neighbours it must decline.
    fn error_seeds() -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
        let mut v = Vec::new();
        let mut seg = Vec::new();
        PacketBuilder::ipv4([203, 0, 113, 10], [192, 0, 2, 1], 63)
            .tcp(80, 40000, 1, 100)
            .write(&mut seg, &[0x5a; 100])
            .unwrap();
        let frag_needed = etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1400 },
        );
        let mut served = Vec::new();
        eth()
            .ipv4([198, 51, 100, 1], [203, 0, 113, 10], 60)
            .icmpv4(frag_needed)
            .write(&mut v, &seg)
            .unwrap();
        served.push(std::mem::take(&mut v));
        let mut udp = Vec::new();
        PacketBuilder::ipv4([203, 0, 113, 10], [192, 0, 2, 1], 63)
            .udp(53, 5353)
            .write(&mut udp, b"answer")
            .unwrap();
        eth()
            .ipv4([198, 51, 100, 1], [203, 0, 113, 10], 60)
            .icmpv4(etherparse::Icmpv4Type::TimeExceeded(
                etherparse::icmpv4::TimeExceededCode::TtlExceededInTransit,
            ))
            .write(&mut v, &udp[..28]) // RFC 792: IP header and 8 bytes
            .unwrap();
        served.push(std::mem::take(&mut v));
        let mut seg6 = Vec::new();
        PacketBuilder::ipv6(V6B, V6A, 63)
            .tcp(80, 40000, 1, 100)
            .write(&mut seg6, &[0x5a; 100])
            .unwrap();
        eth()
            .ipv6(V6A, V6B, 60)
            .icmpv6(etherparse::Icmpv6Type::PacketTooBig { mtu: 1280 })
            .write(&mut v, &seg6)
            .unwrap();
        served.push(std::mem::take(&mut v));

        let mut declined = Vec::new();
        eth()
            .ipv4([198, 51, 100, 1], [203, 0, 113, 10], 60)
            .icmpv4(etherparse::Icmpv4Type::Redirect(
                etherparse::icmpv4::RedirectHeader {
                    code: etherparse::icmpv4::RedirectCode::RedirectForNetwork,
                    gateway_internet_address: [198, 51, 100, 9],
                },
            ))
            .write(&mut v, &seg)
            .unwrap();
        declined.push(std::mem::take(&mut v));
        let mut ext = served[0].clone();
        ext[14 + 20 + 5] = 30; // RFC 4884 length: extensions follow
        declined.push(ext);
        let mut frag = served[0].clone();
        frag[14 + 20 + 8 + 6] |= 0x20; // the quote is a fragment
        declined.push(frag);
        let mut short = served[1].clone();
        short.truncate(14 + 20 + 8 + 20 + 3); // no room for the ports
        declined.push(short);
        eth()
            .ipv4([192, 0, 2, 1], [198, 51, 100, 1], 64)
            .icmpv4_echo_request(1, 2)
            .write(&mut v, b"ping")
            .unwrap();
        declined.push(std::mem::take(&mut v));
        (served, declined)
    }

    #[test]
    fn error_reader_serves_the_common_errors_as_the_full_path_reads_them() {
        let (served, declined) = error_seeds();
        for f in &served {
            let e = read_error(f).unwrap_or_else(|| panic!("declined {f:02x?}"));
            let (ip, key, t, c, rest) = full_error(f).unwrap();
            assert_eq!(e.ip_info(), ip);
            assert_eq!(
                (key_of(&e.flow), e.icmp_type, e.code, e.rest),
                (key, t, c, rest)
            );
            assert_eq!(read(f), None);
        }
        for f in &declined {
            assert_eq!(read_error(f), None, "served {f:02x?}");
        }
        let e = read_error(&served[0]).unwrap();
        assert_eq!((e.flow.sport, e.flow.dport), (40000, 80));
        assert_eq!(&e.flow.src[..4], &[192, 0, 2, 1]);
        assert_eq!(&e.flow.dst[..4], &[203, 0, 113, 10]);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4000))]
        /// Differential: whenever the error reader answers, the full parse and the quote reader
        /// read the same outer packet, type, code and connection key.
        #[test]
        fn error_reader_never_disagrees_with_the_full_path(
            seed in 0usize..8,
            flips in proptest::collection::vec((0usize..120, proptest::prelude::any::<u8>()), 0..4),
            cut in proptest::option::of(0usize..200),
        ) {
            let f = mutated(error_seeds(), seed, &flips, cut, 110);
            if let Some(e) = read_error(&f) {
                let full = full_error(&f);
                proptest::prop_assert!(full.is_some());
                let (ip, key, t, c, rest) = full.unwrap();
                proptest::prop_assert_eq!(e.ip_info(), ip);
                proptest::prop_assert_eq!(
                    (key_of(&e.flow), e.icmp_type, e.code, e.rest),
                    (key, t, c, rest)
                );
            }
        }
    }
}
