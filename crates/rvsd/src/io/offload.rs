//! Finishing what the kernel left for the NIC: unfinished checksums and GSO super-packets.
//!
//! A packet socket on an interface whose peer offloads (veth, tap, virtio) sees frames the way
//! the sending stack handed them to the "hardware": TCP/UDP checksums holding only the
//! pseudo-header sum (`CHECKSUM_PARTIAL`, virtio `NEEDS_CSUM`), and TSO/USO super-packets of up
//! to 64 KiB that the NIC would have cut into MSS-sized segments. Before such a frame is
//! forwarded on, the director does that work here, the way Linux's software fallbacks do it
//! (`skb_checksum_help`, `tcp_gso_segment`, `__udp_gso_segment`, `inet_gso_segment`,
//! `ipv6_gso_segment`).
//!
//! Pure functions over byte slices: no I/O, no panics on any input, no allocation unless a
//! super-packet is segmented (into a caller-provided scratch buffer that is reused).

use rvs_wire::checksum;

/// Length of the `struct virtio_net_hdr` the kernel writes in front of each frame when
/// `PACKET_VNET_HDR` is on.
pub(crate) const VIRTIO_NET_HDR_LEN: usize = 10;

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the checksum at `csum_start + csum_offset` is partial.
const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_F_DATA_VALID`: the checksum was verified (by the NIC or the sender).
const F_DATA_VALID: u8 = 2;
/// `VIRTIO_NET_HDR_GSO_ECN`: flag bit of `gso_type`.
const GSO_ECN: u8 = 0x80;

const ETH_HLEN: usize = 14;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;

/// A checksum the sender left for the NIC to finish (virtio `NEEDS_CSUM`, `CHECKSUM_PARTIAL`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CsumPartial {
    /// Where the checksummed bytes start, from the start of the frame (Ethernet header).
    pub(crate) start: u16,
    /// Offset of the 16-bit checksum field from `start`.
    pub(crate) offset: u16,
}

/// The segmentation offload type of a super-packet (virtio `gso_type` without the ECN bit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GsoKind {
    /// TCP over IPv4 (TSO).
    TcpV4,
    /// TCP over IPv6 (TSO6).
    TcpV6,
    /// UDP segmentation (USO): one datagram per `size` bytes of payload.
    UdpL4,
    /// UDP fragmentation offload (UFO, IP fragments); not supported here.
    Ufo,
    /// Any other virtio `gso_type` value.
    Unknown(u8),
}

/// What a super-packet needs to be cut into wire-sized frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct GsoInfo {
    /// The offload type.
    pub(crate) kind: GsoKind,
    /// TCP: the sender set CWR and expects it on the first segment only (`SKB_GSO_TCP_ECN`).
    pub(crate) ecn: bool,
    /// Payload bytes per segment (the MSS for TCP).
    pub(crate) size: u16,
    /// The sender's idea of the header length (a hint; headers are parsed here anyway).
    pub(crate) hdr_len: u16,
}

/// Offload metadata of a received frame, from the kernel's `virtio_net_hdr`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct VnetInfo {
    /// The L4 checksum is unfinished (holds the pseudo-header sum) and where it lives.
    pub(crate) csum: Option<CsumPartial>,
    /// The checksum is known to be correct (`DATA_VALID`, the kernel's `CHECKSUM_UNNECESSARY`).
    pub(crate) csum_valid: bool,
    /// The frame is a super-packet to be segmented.
    pub(crate) gso: Option<GsoInfo>,
}

impl VnetInfo {
    /// Decodes a `struct virtio_net_hdr` as a packet socket writes it (host byte order: the
    /// kernel uses the legacy virtio endianness, which is native on little-endian hosts).
    pub(crate) fn from_virtio_net_hdr(hdr: &[u8; VIRTIO_NET_HDR_LEN]) -> VnetInfo {
        let word = |i: usize| u16::from_ne_bytes([hdr[i], hdr[i + 1]]);
        let flags = hdr[0];
        let gso_type = hdr[1];
        let csum = (flags & F_NEEDS_CSUM != 0).then(|| CsumPartial {
            start: word(6),
            offset: word(8),
        });
        let gso = match gso_type & !GSO_ECN {
            0 => None,
            t => Some(GsoInfo {
                kind: match t {
                    1 => GsoKind::TcpV4,
                    3 => GsoKind::Ufo,
                    4 => GsoKind::TcpV6,
                    5 => GsoKind::UdpL4,
                    other => GsoKind::Unknown(other),
                },
                ecn: gso_type & GSO_ECN != 0,
                size: word(4),
                hdr_len: word(2),
            }),
        };
        VnetInfo {
            csum,
            csum_valid: flags & F_DATA_VALID != 0,
            gso,
        }
    }

    /// True when [`finish`] has nothing to do: the frame goes on as it is.
    pub(crate) fn is_complete(&self) -> bool {
        self.csum.is_none() && self.gso.is_none()
    }
}

/// Why a frame could not be finished; the caller drops it and counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum OffloadError {
    /// `csum_start`/`csum_offset` point outside the frame.
    #[error("checksum start {start} + offset {offset} outside the {len}-byte frame")]
    CsumOutOfBounds {
        /// `csum_start`.
        start: usize,
        /// `csum_offset`.
        offset: usize,
        /// Frame length.
        len: usize,
    },
    /// A GSO type this module does not segment (UFO, unknown).
    #[error("unsupported GSO type {0:?}")]
    UnsupportedGso(GsoKind),
    /// A GSO segment size of zero.
    #[error("GSO segment size 0")]
    ZeroGsoSize,
    /// The headers of a super-packet are not what its GSO type says, or are cut short.
    #[error("malformed super-packet: {0}")]
    Malformed(&'static str),
}

impl OffloadError {
    /// A stable snake_case name, for a metrics label.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            OffloadError::CsumOutOfBounds { .. } => "csum_out_of_bounds",
            OffloadError::UnsupportedGso(_) => "unsupported_gso",
            OffloadError::ZeroGsoSize => "zero_gso_size",
            OffloadError::Malformed(_) => "malformed_gso",
        }
    }
}

/// Finishes a partial checksum in place, as Linux `skb_checksum_help` does: the field at
/// `csum_start + csum_offset` holds the pseudo-header sum; the one's-complement sum of every
/// byte from `csum_start` to the end of `frame` (field included) is folded, complemented and
/// written back, a result of zero as `0xffff` (`CSUM_MANGLED_0`: zero means "no checksum" to
/// UDP, RFC 768, and is equivalent for TCP).
///
/// `frame` must end where the L4 segment ends (see [`finish`], which trims Ethernet padding).
pub(crate) fn complete_checksum(
    frame: &mut [u8],
    csum_start: usize,
    csum_offset: usize,
) -> Result<(), OffloadError> {
    let len = frame.len();
    let field = csum_start.checked_add(csum_offset);
    let Some(field) = field.filter(|&f| csum_start <= len && f.saturating_add(2) <= len) else {
        return Err(OffloadError::CsumOutOfBounds {
            start: csum_start,
            offset: csum_offset,
            len,
        });
    };
    let value = checksum::udp_nonzero(checksum::finish(checksum::sum(0, &frame[csum_start..])));
    frame[field..field + 2].copy_from_slice(&value.to_be_bytes());
    Ok(())
}

/// The parsed headers of an untagged Ethernet + IPv4/IPv6 + TCP/UDP frame.
#[derive(Clone, Copy, Debug)]
struct Layout {
    /// IPv6 (else IPv4).
    v6: bool,
    /// Offset of the L4 header (after IPv6 extension headers).
    l4: usize,
    /// L4 protocol number.
    proto: u8,
    /// Offset one past the IP datagram's last byte (Ethernet padding excluded).
    end: usize,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Walks Ethernet → IPv4/IPv6 (extension headers included) up to the L4 header.
fn layout(frame: &[u8]) -> Result<Layout, OffloadError> {
    use OffloadError::Malformed;
    let ethertype = be16(frame, 12).ok_or(Malformed("truncated Ethernet header"))?;
    let l3 = ETH_HLEN;
    match ethertype {
        ETHERTYPE_IPV4 => {
            let vihl = *frame.get(l3).ok_or(Malformed("truncated IPv4 header"))?;
            let ihl = usize::from(vihl & 0x0f) * 4;
            if vihl >> 4 != 4 || ihl < 20 || frame.len() < l3 + ihl {
                return Err(Malformed("bad IPv4 header"));
            }
            let frag = be16(frame, l3 + 6).unwrap_or(0);
            if frag & 0x3fff != 0 {
                return Err(Malformed("IPv4 fragment"));
            }
            let tot = usize::from(be16(frame, l3 + 2).unwrap_or(0));
            // A zero total length is how BIG TCP marks IPv4 super-packets over 64 KiB.
            let end = if tot == 0 { frame.len() } else { l3 + tot };
            if end > frame.len() || end < l3 + ihl {
                return Err(Malformed("IPv4 total length disagrees with the frame"));
            }
            Ok(Layout {
                v6: false,
                l4: l3 + ihl,
                proto: frame[l3 + 9],
                end,
            })
        }
        ETHERTYPE_IPV6 => {
            if frame.len() < l3 + 40 || frame[l3] >> 4 != 6 {
                return Err(Malformed("bad IPv6 header"));
            }
            let plen = usize::from(be16(frame, l3 + 4).unwrap_or(0));
            // Zero: a BIG TCP IPv6 super-packet (RFC 2675 jumbogram without its option).
            let end = if plen == 0 {
                frame.len()
            } else {
                l3 + 40 + plen
            };
            if end > frame.len() {
                return Err(Malformed("IPv6 payload length disagrees with the frame"));
            }
            let mut next = frame[l3 + 6];
            let mut at = l3 + 40;
            loop {
                match next {
                    PROTO_TCP | PROTO_UDP => break,
                    // Hop-by-hop, routing, destination options: (len + 1) * 8 bytes each.
                    0 | 43 | 60 => {
                        let hlen = usize::from(
                            *frame
                                .get(at + 1)
                                .ok_or(Malformed("truncated extension header"))?,
                        );
                        next = frame[at];
                        at += (hlen + 1) * 8;
                        if at > end {
                            return Err(Malformed("truncated extension header"));
                        }
                    }
                    44 => return Err(Malformed("IPv6 fragment")),
                    _ => return Err(Malformed("unsupported IPv6 next header")),
                }
            }
            Ok(Layout {
                v6: true,
                l4: at,
                proto: next,
                end,
            })
        }
        ETHERTYPE_VLAN | ETHERTYPE_QINQ => Err(Malformed("VLAN-tagged super-packet")),
        _ => Err(Malformed("not IPv4 or IPv6")),
    }
}

/// The pseudo-header sum of `frame` (laid out as `lay`) for an L4 length of `l4_len`.
fn pseudo(frame: &[u8], lay: &Layout, l4_len: usize) -> u64 {
    let l3 = ETH_HLEN;
    let (addrs, len_word) = if lay.v6 {
        (&frame[l3 + 8..l3 + 40], l4_len as u64)
    } else {
        (&frame[l3 + 12..l3 + 20], l4_len as u64 & 0xffff)
    };
    checksum::sum(0, addrs) + u64::from(lay.proto) + len_word
}

/// Cuts a TCP (TSO) or UDP (USO) super-packet into wire-sized Ethernet frames, exactly as the
/// kernel's software GSO would, and hands each to `out`; returns how many.
///
/// Per segment: the Ethernet header and every IP header byte are copied; IPv4 gets its total
/// length, an IP ID incremented per segment (`inet_gso_segment`: IDs increment, wrapping) and a
/// fresh header checksum; IPv6 its payload length; TCP the sequence number advanced by `size`
/// per segment, FIN and PSH only on the last segment, CWR only on the first; UDP its length. The
/// L4 checksum of each segment is computed in full (whatever the super-packet's field held),
/// UDP's zero written as `0xffff`. A payload of at most `size` bytes gives one frame.
///
/// `scratch` is the buffer segments are built in (reused, so the caller can keep it across
/// calls). VLAN-tagged frames, UFO, unknown types, a `size` of 0 and headers that disagree with
/// the GSO type or the frame are errors.
pub(crate) fn segment(
    frame: &[u8],
    gso: &GsoInfo,
    scratch: &mut Vec<u8>,
    mut out: impl FnMut(&[u8]),
) -> Result<usize, OffloadError> {
    use OffloadError::Malformed;
    let lay = layout(frame)?;
    let tcp = match (gso.kind, lay.v6, lay.proto) {
        (GsoKind::TcpV4, false, PROTO_TCP) | (GsoKind::TcpV6, true, PROTO_TCP) => true,
        (GsoKind::UdpL4, _, PROTO_UDP) => false,
        (GsoKind::TcpV4 | GsoKind::TcpV6 | GsoKind::UdpL4, _, _) => {
            return Err(Malformed("headers disagree with the GSO type"));
        }
        (kind @ (GsoKind::Ufo | GsoKind::Unknown(_)), _, _) => {
            return Err(OffloadError::UnsupportedGso(kind));
        }
    };
    if gso.size == 0 {
        return Err(OffloadError::ZeroGsoSize);
    }
    let l4_hlen = if tcp {
        let off = usize::from(
            *frame
                .get(lay.l4 + 12)
                .ok_or(Malformed("truncated TCP header"))?,
        );
        (off >> 4) * 4
    } else {
        8
    };
    let hdr_end = lay.l4 + l4_hlen;
    if l4_hlen < 20 && tcp || hdr_end > lay.end {
        return Err(Malformed("truncated L4 header"));
    }
    let mss = usize::from(gso.size);
    let payload = &frame[hdr_end..lay.end];
    let l3 = ETH_HLEN;
    let ip_id = be16(frame, l3 + 4).unwrap_or(0);
    // TCP: `hdr_end <= end` above put the whole 20-byte header inside the frame.
    let (seq, flags) = if tcp {
        let s = &frame[lay.l4 + 4..lay.l4 + 8];
        (
            u32::from_be_bytes([s[0], s[1], s[2], s[3]]),
            frame[lay.l4 + 13],
        )
    } else {
        (0, 0)
    };
    let chunks = payload.len().div_ceil(mss).max(1);
    for i in 0..chunks {
        let start = i * mss;
        let chunk = &payload[start..payload.len().min(start + mss)];
        let last = i + 1 == chunks;
        scratch.clear();
        scratch.extend_from_slice(&frame[..hdr_end]);
        scratch.extend_from_slice(chunk);
        let seg = scratch.as_mut_slice();
        let l4_len = l4_hlen + chunk.len();
        if lay.v6 {
            // Payload length covers the extension headers too.
            let plen = u16::try_from(lay.l4 - (l3 + 40) + l4_len)
                .map_err(|_| Malformed("segment exceeds the IPv6 payload length"))?;
            seg[l3 + 4..l3 + 6].copy_from_slice(&plen.to_be_bytes());
        } else {
            let ihl = lay.l4 - l3;
            let tot = u16::try_from(ihl + l4_len)
                .map_err(|_| Malformed("segment exceeds the IPv4 total length"))?;
            seg[l3 + 2..l3 + 4].copy_from_slice(&tot.to_be_bytes());
            let id = ip_id.wrapping_add(i as u16);
            seg[l3 + 4..l3 + 6].copy_from_slice(&id.to_be_bytes());
            seg[l3 + 10..l3 + 12].fill(0);
            let hc = checksum::checksum(&seg[l3..l3 + ihl]);
            seg[l3 + 10..l3 + 12].copy_from_slice(&hc.to_be_bytes());
        }
        let l4 = lay.l4;
        let csum_at = if tcp {
            let s = seq.wrapping_add((start as u64 & 0xffff_ffff) as u32);
            seg[l4 + 4..l4 + 8].copy_from_slice(&s.to_be_bytes());
            let mut f = flags;
            if !last {
                f &= !(TCP_FIN | TCP_PSH);
            }
            if i > 0 {
                f &= !TCP_CWR;
            }
            seg[l4 + 13] = f;
            l4 + 16
        } else {
            let ulen = u16::try_from(l4_len).map_err(|_| Malformed("UDP segment too long"))?;
            seg[l4 + 4..l4 + 6].copy_from_slice(&ulen.to_be_bytes());
            l4 + 6
        };
        seg[csum_at..csum_at + 2].fill(0);
        let acc = checksum::sum(pseudo(seg, &lay, l4_len), &seg[l4..]);
        let value = checksum::finish(acc);
        let value = if tcp {
            value
        } else {
            checksum::udp_nonzero(value)
        };
        seg[csum_at..csum_at + 2].copy_from_slice(&value.to_be_bytes());
        out(seg);
    }
    Ok(chunks)
}

/// Hands `out` the frame(s) to transmit for a received frame and its offload metadata: a
/// super-packet is segmented ([`segment`], each segment fully checksummed); a frame with a
/// partial checksum is completed in place ([`complete_checksum`], over the IP datagram only,
/// so Ethernet padding is not summed) and passed on; anything else is passed on untouched.
/// Returns the number of frames handed out. Only segmentation writes to `scratch`.
pub(crate) fn finish(
    frame: &mut [u8],
    info: &VnetInfo,
    scratch: &mut Vec<u8>,
    mut out: impl FnMut(&[u8]),
) -> Result<usize, OffloadError> {
    if let Some(gso) = &info.gso {
        return segment(frame, gso, scratch, out);
    }
    if let Some(c) = info.csum {
        let end = l3_end(frame).unwrap_or(frame.len());
        let start = usize::from(c.start);
        complete_checksum(&mut frame[..end], start, usize::from(c.offset))?;
    }
    out(frame);
    Ok(1)
}

/// Where the unfinished L4 checksum of `frame` lives, found from its headers (TCP field at
/// offset 16, UDP at 6): for a partial checksum reported without a virtio header
/// (`TP_STATUS_CSUMNOTREADY`). `None` when the headers are not untagged IPv4/IPv6 + TCP/UDP.
pub(crate) fn partial_from_headers(frame: &[u8]) -> Option<CsumPartial> {
    let lay = layout(frame).ok()?;
    let offset = match lay.proto {
        PROTO_TCP => 16,
        PROTO_UDP => 6,
        _ => return None,
    };
    Some(CsumPartial {
        start: u16::try_from(lay.l4).ok()?,
        offset,
    })
}

/// One past the last byte of the IP datagram in an untagged Ethernet frame, when the IP header
/// says so consistently.
fn l3_end(frame: &[u8]) -> Option<usize> {
    let end = match be16(frame, 12)? {
        ETHERTYPE_IPV4 => ETH_HLEN + usize::from(be16(frame, ETH_HLEN + 2)?),
        ETHERTYPE_IPV6 => ETH_HLEN + 40 + usize::from(be16(frame, ETH_HLEN + 4)?),
        _ => return None,
    };
    (end <= frame.len() && end > ETH_HLEN + 20).then_some(end)
}

/// Writes `frame` with an 802.1Q/802.1ad tag (`tpid`, `tci`) inserted after the MAC addresses
/// into `out` (cleared first): for frames whose tag the kernel had stripped into metadata.
pub(crate) fn insert_vlan(frame: &[u8], tpid: u16, tci: u16, out: &mut Vec<u8>) {
    out.clear();
    let split = frame.len().min(12);
    out.extend_from_slice(&frame[..split]);
    out.extend_from_slice(&tpid.to_be_bytes());
    out.extend_from_slice(&tci.to_be_bytes());
    out.extend_from_slice(&frame[split..]);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
    use proptest::prelude::*;

    const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
    const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];
    const V4_A: [u8; 4] = [192, 0, 2, 1];
    const V4_B: [u8; 4] = [198, 51, 100, 2];
    const V6_A: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    const V6_B: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

    fn payload(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 256) as u8).collect()
    }

    /// A TCP super-packet as the sending stack hands it to the NIC: correct headers, the TCP
    /// checksum field holding the folded pseudo-header sum.
    fn tcp_super(v6: bool, flags: u8, seq: u32, data: &[u8]) -> Vec<u8> {
        let b = PacketBuilder::ethernet2(MAC_A, MAC_B);
        let b = if v6 {
            b.ipv6(V6_A, V6_B, 64)
        } else {
            b.ipv4(V4_A, V4_B, 64)
        };
        let mut b = b.tcp(40000, 80, seq, 501).ack(77);
        if flags & TCP_FIN != 0 {
            b = b.fin();
        }
        if flags & TCP_PSH != 0 {
            b = b.psh();
        }
        if flags & TCP_CWR != 0 {
            b = b.cwr();
        }
        let mut f = Vec::new();
        b.write(&mut f, data).unwrap();
        if !v6 {
            // DF and a recognisable IP ID (etherparse writes 0).
            f[ETH_HLEN + 4..ETH_HLEN + 6].copy_from_slice(&0xfffeu16.to_be_bytes());
            f[ETH_HLEN + 10..ETH_HLEN + 12].fill(0);
            let hc = checksum::checksum(&f[ETH_HLEN..ETH_HLEN + 20]);
            f[ETH_HLEN + 10..ETH_HLEN + 12].copy_from_slice(&hc.to_be_bytes());
        }
        make_partial(&mut f);
        f
    }

    fn udp_super(v6: bool, data: &[u8]) -> Vec<u8> {
        let b = PacketBuilder::ethernet2(MAC_A, MAC_B);
        let b = if v6 {
            b.ipv6(V6_A, V6_B, 64)
        } else {
            b.ipv4(V4_A, V4_B, 64)
        };
        let mut f = Vec::new();
        b.udp(5353, 4433).write(&mut f, data).unwrap();
        make_partial(&mut f);
        f
    }

    /// Replaces the L4 checksum by the folded pseudo-header sum, as `CHECKSUM_PARTIAL` leaves it.
    fn make_partial(f: &mut [u8]) {
        let lay = layout(f).unwrap();
        let at = lay.l4 + if lay.proto == PROTO_TCP { 16 } else { 6 };
        let p = checksum::fold(pseudo(f, &lay, lay.end - lay.l4));
        f[at..at + 2].copy_from_slice(&p.to_be_bytes());
    }

    /// Inserts an 8-byte IPv6 destination-options header (PadN) in front of the L4 header.
    fn with_dest_opts(f: &[u8]) -> Vec<u8> {
        let l4 = ETH_HLEN + 40;
        let mut g = f[..l4].to_vec();
        g.extend_from_slice(&[f[ETH_HLEN + 6], 0, 1, 4, 0, 0, 0, 0]);
        g.extend_from_slice(&f[l4..]);
        g[ETH_HLEN + 6] = 60;
        let plen = be16(&g, ETH_HLEN + 4).unwrap() + 8;
        g[ETH_HLEN + 4..ETH_HLEN + 6].copy_from_slice(&plen.to_be_bytes());
        g
    }

    /// What [`check_wire`] found in a frame.
    pub(crate) struct Seg {
        pub(crate) seq: u32,
        pub(crate) flags: u8,
        pub(crate) ip_id: Option<u16>,
        pub(crate) payload: Vec<u8>,
    }

    /// Parses a wire frame with etherparse and checks every length and checksum independently.
    pub(crate) fn check_wire(f: &[u8]) -> Seg {
        let p = SlicedPacket::from_ethernet(f).expect("etherparse parses the segment");
        let (src, dst, ip_id): (Vec<u8>, Vec<u8>, Option<u16>) = match p.net.as_ref().unwrap() {
            NetSlice::Ipv4(ip) => {
                let h = ip.header();
                assert_eq!(
                    h.header_checksum(),
                    h.to_header().calc_header_checksum(),
                    "IPv4 header checksum"
                );
                assert_eq!(usize::from(h.total_len()) + ETH_HLEN, f.len());
                (
                    h.source().to_vec(),
                    h.destination().to_vec(),
                    Some(h.identification()),
                )
            }
            NetSlice::Ipv6(ip) => {
                let h = ip.header();
                assert_eq!(usize::from(h.payload_length()) + ETH_HLEN + 40, f.len());
                (h.source().to_vec(), h.destination().to_vec(), None)
            }
            NetSlice::Arp(_) => panic!("arp"),
        };
        match p.transport.as_ref().unwrap() {
            TransportSlice::Tcp(t) => {
                let want = if src.len() == 4 {
                    t.calc_checksum_ipv4(src.try_into().unwrap(), dst.try_into().unwrap())
                } else {
                    t.calc_checksum_ipv6(src.try_into().unwrap(), dst.try_into().unwrap())
                };
                assert_eq!(t.checksum(), want.unwrap(), "TCP checksum");
                let hdr = t.to_header();
                let flags = u8::from(hdr.fin)
                    | u8::from(hdr.syn) << 1
                    | u8::from(hdr.rst) << 2
                    | u8::from(hdr.psh) << 3
                    | u8::from(hdr.ack) << 4
                    | u8::from(hdr.cwr) << 7;
                Seg {
                    seq: t.sequence_number(),
                    flags,
                    ip_id,
                    payload: t.payload().to_vec(),
                }
            }
            TransportSlice::Udp(u) => {
                let h = u.to_header();
                assert_eq!(usize::from(h.length), 8 + u.payload().len());
                let want = if src.len() == 4 {
                    h.calc_checksum_ipv4_raw(
                        src.try_into().unwrap(),
                        dst.try_into().unwrap(),
                        u.payload(),
                    )
                } else {
                    h.calc_checksum_ipv6_raw(
                        src.try_into().unwrap(),
                        dst.try_into().unwrap(),
                        u.payload(),
                    )
                };
                assert_eq!(h.checksum, want.unwrap(), "UDP checksum");
                Seg {
                    seq: 0,
                    flags: 0,
                    ip_id,
                    payload: u.payload().to_vec(),
                }
            }
            _ => panic!("unexpected transport"),
        }
    }

    fn gso(kind: GsoKind, size: u16) -> GsoInfo {
        GsoInfo {
            kind,
            ecn: false,
            size,
            hdr_len: 0,
        }
    }

    fn run_segment(f: &[u8], g: &GsoInfo) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut scratch = Vec::new();
        let n = segment(f, g, &mut scratch, |s| out.push(s.to_vec())).unwrap();
        assert_eq!(n, out.len());
        out
    }

    fn check_tcp(v6: bool, len: usize, mss: u16, flags: u8, seq: u32) {
        let data = payload(len);
        let f = tcp_super(v6, flags, seq, &data);
        let f = if v6 { with_dest_opts(&f) } else { f };
        let kind = if v6 { GsoKind::TcpV6 } else { GsoKind::TcpV4 };
        let segs = run_segment(&f, &gso(kind, mss));
        let mss = usize::from(mss);
        assert_eq!(segs.len(), len.div_ceil(mss).max(1), "len {len} mss {mss}");
        let mut all = Vec::new();
        for (i, s) in segs.iter().enumerate() {
            let last = i + 1 == segs.len();
            let seg = check_wire(s);
            assert_eq!(seg.seq, seq.wrapping_add((i * mss) as u32));
            if last {
                assert_eq!(seg.payload.len(), len - i * mss);
                assert_eq!(seg.flags & (TCP_FIN | TCP_PSH), flags & (TCP_FIN | TCP_PSH));
            } else {
                assert_eq!(seg.payload.len(), mss);
                assert_eq!(
                    seg.flags & (TCP_FIN | TCP_PSH),
                    0,
                    "FIN/PSH only on the last"
                );
            }
            let cwr = if i == 0 { flags & TCP_CWR } else { 0 };
            assert_eq!(seg.flags & TCP_CWR, cwr, "CWR only on the first");
            assert_eq!(seg.flags & 0x10, 0x10, "ACK everywhere");
            if !v6 {
                assert_eq!(seg.ip_id, Some(0xfffeu16.wrapping_add(i as u16)));
                assert_eq!(s[ETH_HLEN + 6] & 0x40, 0x40, "DF kept");
            } else {
                assert_eq!(s[ETH_HLEN + 6], 60, "extension header kept");
            }
            assert_eq!(&s[..12], &f[..12], "Ethernet header copied");
            all.extend_from_slice(&seg.payload);
        }
        assert_eq!(all, data);
    }

    #[test]
    fn tcp_v4_segments() {
        let all = TCP_FIN | TCP_PSH | TCP_CWR;
        for (len, mss) in [
            (1, 1448),
            (1447, 1448),
            (1448, 1448),
            (1449, 1448),
            (3 * 1448 + 7, 1448),
            (64000, 1448),
            (65000, 1),
            (999, 2),
            (10_001, 1000),
        ] {
            check_tcp(false, len, mss, all, 0xffff_f000);
            check_tcp(false, len, mss, TCP_PSH, 1);
        }
    }

    #[test]
    fn tcp_v6_segments_with_extension_header() {
        for (len, mss) in [(1, 1428), (1429, 1428), (5 * 1428 + 1, 1428), (60001, 8948)] {
            check_tcp(true, len, mss, TCP_FIN | TCP_PSH | TCP_CWR, u32::MAX);
            check_tcp(true, len, mss, 0, 12345);
        }
    }

    #[test]
    fn udp_l4_segments() {
        for v6 in [false, true] {
            for (len, size) in [(1, 1400), (1400, 1400), (1401, 1400), (8 * 1200 + 3, 1200)] {
                let data = payload(len);
                let f = udp_super(v6, &data);
                let segs = run_segment(&f, &gso(GsoKind::UdpL4, size));
                let size = usize::from(size);
                assert_eq!(segs.len(), len.div_ceil(size));
                let mut all = Vec::new();
                for (i, s) in segs.iter().enumerate() {
                    let seg = check_wire(s);
                    if !v6 {
                        assert_eq!(seg.ip_id, Some(i as u16));
                    }
                    assert!(seg.payload.len() <= size);
                    all.extend_from_slice(&seg.payload);
                }
                assert_eq!(all, data);
            }
        }
    }

    #[test]
    fn complete_checksum_matches_a_full_computation() {
        for v6 in [false, true] {
            for len in [0, 1, 2, 3, 100, 1471, 1472] {
                for tcp in [false, true] {
                    let data = payload(len);
                    let mut f = if tcp {
                        tcp_super(v6, TCP_PSH, 9, &data)
                    } else {
                        udp_super(v6, &data)
                    };
                    let lay = layout(&f).unwrap();
                    let info = VnetInfo {
                        csum: Some(CsumPartial {
                            start: lay.l4 as u16,
                            offset: if tcp { 16 } else { 6 },
                        }),
                        ..VnetInfo::default()
                    };
                    // Ethernet padding after the datagram must not be summed.
                    f.extend_from_slice(&[0xa5; 9]);
                    let mut got = Vec::new();
                    let n =
                        finish(&mut f, &info, &mut Vec::new(), |s| got.push(s.to_vec())).unwrap();
                    assert_eq!(n, 1);
                    assert_eq!(got[0].len(), f.len());
                    check_wire(&got[0][..lay.end]);
                }
            }
        }
    }

    #[test]
    fn complete_checksum_writes_zero_as_all_ones() {
        // Choose the last payload word so that the checksum comes out as zero.
        let mut f = udp_super(false, &[1, 2, 3, 4, 0, 0]);
        let lay = layout(&f).unwrap();
        let mut probe = f.clone();
        complete_checksum(&mut probe[..lay.end], lay.l4, 6).unwrap();
        // The checksum c is !fold(S); adding the word c to the data makes the sum all ones,
        // i.e. a computed checksum of zero.
        let c = be16(&probe, lay.l4 + 6).unwrap();
        let at = lay.end - 2;
        f[at..at + 2].copy_from_slice(&c.to_be_bytes());
        // The UDP checksum field is unchanged, so the partial sum still holds.
        complete_checksum(&mut f[..lay.end], lay.l4, 6).unwrap();
        assert_eq!(be16(&f, lay.l4 + 6), Some(0xffff));
        check_wire(&f);
    }

    #[test]
    fn complete_checksum_bounds() {
        let mut f = vec![0u8; 40];
        assert!(complete_checksum(&mut f, 38, 0).is_ok());
        for (s, o) in [(39, 0), (41, 0), (30, 9), (usize::MAX, 1), (1, usize::MAX)] {
            assert!(matches!(
                complete_checksum(&mut f, s, o),
                Err(OffloadError::CsumOutOfBounds { .. })
            ));
        }
    }

    #[test]
    fn errors() {
        let f = tcp_super(false, 0, 1, &payload(3000));
        let mut s = Vec::new();
        let no = |_: &[u8]| panic!("no output expected");
        for (g, want) in [
            (
                gso(GsoKind::TcpV6, 1000),
                "headers disagree with the GSO type",
            ),
            (
                gso(GsoKind::UdpL4, 1000),
                "headers disagree with the GSO type",
            ),
        ] {
            assert_eq!(
                segment(&f, &g, &mut s, no),
                Err(OffloadError::Malformed(want))
            );
        }
        assert_eq!(
            segment(&f, &gso(GsoKind::TcpV4, 0), &mut s, no),
            Err(OffloadError::ZeroGsoSize)
        );
        assert_eq!(
            segment(&f, &gso(GsoKind::Ufo, 1000), &mut s, no),
            Err(OffloadError::UnsupportedGso(GsoKind::Ufo))
        );
        let mut tagged = Vec::new();
        insert_vlan(&f, 0x8100, 5, &mut tagged);
        assert_eq!(
            segment(&tagged, &gso(GsoKind::TcpV4, 1000), &mut s, no),
            Err(OffloadError::Malformed("VLAN-tagged super-packet"))
        );
        // Every truncation is an error, never a panic.
        for cut in 0..f.len() {
            assert!(segment(&f[..cut], &gso(GsoKind::TcpV4, 1000), &mut s, no).is_err());
        }
    }

    #[test]
    fn virtio_header_decoding() {
        let mut h = [0u8; VIRTIO_NET_HDR_LEN];
        h[0] = F_NEEDS_CSUM;
        h[1] = 0x81;
        h[2..4].copy_from_slice(&66u16.to_ne_bytes());
        h[4..6].copy_from_slice(&1448u16.to_ne_bytes());
        h[6..8].copy_from_slice(&34u16.to_ne_bytes());
        h[8..10].copy_from_slice(&16u16.to_ne_bytes());
        let v = VnetInfo::from_virtio_net_hdr(&h);
        assert_eq!(
            v,
            VnetInfo {
                csum: Some(CsumPartial {
                    start: 34,
                    offset: 16
                }),
                csum_valid: false,
                gso: Some(GsoInfo {
                    kind: GsoKind::TcpV4,
                    ecn: true,
                    size: 1448,
                    hdr_len: 66
                }),
            }
        );
        assert!(!v.is_complete());
        let v = VnetInfo::from_virtio_net_hdr(&[F_DATA_VALID, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert!(v.csum_valid && v.is_complete());
        let v = VnetInfo::from_virtio_net_hdr(&[0, 0x42, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(v.gso.map(|g| g.kind), Some(GsoKind::Unknown(0x42)));
    }

    #[test]
    fn insert_vlan_places_the_tag() {
        let f = udp_super(false, b"x");
        let mut t = Vec::new();
        insert_vlan(&f, 0x8100, 0x2005, &mut t);
        let p = SlicedPacket::from_ethernet(&t).unwrap();
        assert_eq!(p.vlan_ids().first().map(|v| v.value()), Some(5));
        assert_eq!([&t[..12], &t[16..]].concat(), f);
    }

    fn arb_info() -> impl Strategy<Value = VnetInfo> {
        any::<[u8; VIRTIO_NET_HDR_LEN]>().prop_map(|h| VnetInfo::from_virtio_net_hdr(&h))
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(mut f in proptest::collection::vec(any::<u8>(), 0..2000), info in arb_info()) {
            let mut s = Vec::new();
            let _ = finish(&mut f, &info, &mut s, |_| {});
        }

        #[test]
        fn mangled_super_packets_never_panic(
            v6 in any::<bool>(), len in 0usize..5000, mss in 0u16..3000,
            pos in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<prop::sample::Index>(),
        ) {
            let mut f = if byte % 2 == 0 { tcp_super(v6, TCP_FIN, 7, &payload(len)) } else { udp_super(v6, &payload(len)) };
            let p = pos.index(f.len());
            f[p] = byte;
            f.truncate(cut.index(f.len() + 1));
            let kind = if v6 { GsoKind::TcpV6 } else { GsoKind::TcpV4 };
            let mut s = Vec::new();
            let _ = segment(&f, &gso(kind, mss), &mut s, |_| {});
            let _ = segment(&f, &gso(GsoKind::UdpL4, mss), &mut s, |_| {});
        }

        #[test]
        fn segments_reassemble(v6 in any::<bool>(), len in 0usize..20_000, mss in 1u16..4000, seq in any::<u32>(), flags in 0u8..=255) {
            check_tcp(v6, len, mss, flags & (TCP_FIN | TCP_PSH | TCP_CWR), seq);
        }
    }
}
