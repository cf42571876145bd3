//! Capture files: pcap and pcapng read through the `pcap-file` crate, link-layer headers removed.
//!
//! Layer: the packet layer's door to recorded traffic. It exists for three readers: the tests,
//! which replay the public corpus in `shared/corpus/pcap/`; `rvsd replay`, which runs the
//! dataplane over a capture; and operators, who bring their incident captures to `rvsd replay`.
//! The container formats are parsed by `pcap-file`; this module only chooses the format by the
//! file's magic number (never by its extension), names each record's link layer ([`LinkType`]),
//! and corrects `pcap-file` 2.0 where it departs from libpcap and the pcapng specification
//! (snaplen-truncated pcap records, pcapng timestamp resolution, Simple Packet Block padding).
//! [`link_payload`] then removes the link-layer header so the dataplane sees either an Ethernet
//! frame or an L3 packet with the EtherType that names it.
//!
//! I/O: [`CaptureReader`] reads from any [`std::io::Read`] it is given and does no other I/O;
//! [`open`] is the one convenience that opens a file, for callers that have a path.
//!
//! Contract: nothing here panics on any input. A malformed file yields an `Err` item and then
//! the iteration ends ([`CaptureReader`] is fused); [`link_payload`] checks every length and
//! returns a typed [`WireError`] for anything it cannot read.

use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, Chain, Cursor, Read};
use std::path::Path;
use std::time::Duration;

use pcap_file::PcapError;
use pcap_file::TsResolution;
use pcap_file::pcap::{PcapHeader, PcapReader};
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::{Block, PcapNgReader};

use crate::error::{Layer, WireError};

/// The link layer a captured packet starts with (the pcap `LINKTYPE_*` registry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkType {
    /// `LINKTYPE_ETHERNET` (1): Ethernet II, possibly 802.1Q-tagged.
    Ethernet,
    /// `LINKTYPE_RAW` (101): a bare IP packet, IPv4 or IPv6 by its version nibble.
    Raw,
    /// `LINKTYPE_IPV4` (228): a bare IPv4 packet.
    Ipv4,
    /// `LINKTYPE_IPV6` (229): a bare IPv6 packet.
    Ipv6,
    /// `LINKTYPE_LINUX_SLL` (113): Linux cooked capture v1, a 16-byte pseudo-header.
    LinuxSll,
    /// `LINKTYPE_LINUX_SLL2` (276): Linux cooked capture v2, a 20-byte pseudo-header.
    LinuxSll2,
    /// `LINKTYPE_NULL` (0): BSD loopback, a 4-byte address family in the capturer's byte order.
    Null,
    /// `LINKTYPE_LOOP` (108): OpenBSD loopback, like [`LinkType::Null`] but in network byte order.
    Loop,
    /// `LINKTYPE_PPP` (9): PPP, with or without the HDLC-like `ff 03` address and control bytes.
    Ppp,
    /// Any other link type, by number; [`link_payload`] does not decode it.
    Other(u32),
}

impl From<u32> for LinkType {
    fn from(linktype: u32) -> Self {
        match linktype {
            0 => LinkType::Null,
            1 => LinkType::Ethernet,
            9 => LinkType::Ppp,
            101 => LinkType::Raw,
            108 => LinkType::Loop,
            113 => LinkType::LinuxSll,
            228 => LinkType::Ipv4,
            229 => LinkType::Ipv6,
            276 => LinkType::LinuxSll2,
            other => LinkType::Other(other),
        }
    }
}

impl From<LinkType> for u32 {
    fn from(link: LinkType) -> Self {
        match link {
            LinkType::Null => 0,
            LinkType::Ethernet => 1,
            LinkType::Ppp => 9,
            LinkType::Raw => 101,
            LinkType::Loop => 108,
            LinkType::LinuxSll => 113,
            LinkType::Ipv4 => 228,
            LinkType::Ipv6 => 229,
            LinkType::LinuxSll2 => 276,
            LinkType::Other(n) => n,
        }
    }
}

/// The container format of a capture file, as told by its magic number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CaptureFormat {
    /// Classic libpcap format, either byte order, microsecond or nanosecond timestamps.
    Pcap,
    /// pcapng (one or more sections, each with its own interfaces).
    PcapNg,
}

/// One record of a capture file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturedPacket {
    /// Capture time since the Unix epoch, at the file's resolution (pcapng: `if_tsresol`).
    pub timestamp: Duration,
    /// Length of the packet on the wire, as recorded: above `data.len()` when the capture was
    /// cut at its snapshot length; damaged files may record less than `data.len()`.
    pub orig_len: u32,
    /// The link layer `data` starts with.
    pub link: LinkType,
    /// The captured bytes, starting with the link-layer header.
    pub data: Vec<u8>,
}

impl CapturedPacket {
    /// Remove this packet's link-layer header: [`link_payload`]`(self.link, &self.data)`.
    pub fn link_payload(&self) -> Result<LinkPayload<'_>, WireError> {
        link_payload(self.link, &self.data)
    }
}

/// Why a capture file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The underlying reader failed.
    #[error("I/O error reading capture: {0}")]
    Io(#[from] io::Error),
    /// The first four bytes are neither a pcap nor a pcapng magic number.
    #[error("not a pcap or pcapng file (magic {0:02x?})")]
    UnknownMagic([u8; 4]),
    /// The container is malformed (the text is `pcap-file`'s, or names the libpcap rule broken).
    #[error("malformed capture: {0}")]
    Format(String),
    /// A pcapng packet names an interface no Interface Description Block of its section declared.
    #[error("pcapng packet refers to undeclared interface {0}")]
    UnknownInterface(u32),
}

impl CaptureError {
    /// A stable snake_case name for this error, for summaries and metrics labels.
    pub fn name(&self) -> &'static str {
        match self {
            CaptureError::Io(_) => "capture_io",
            CaptureError::UnknownMagic(_) => "capture_unknown_magic",
            CaptureError::Format(_) => "capture_format",
            CaptureError::UnknownInterface(_) => "capture_unknown_interface",
        }
    }

    /// Translate `pcap-file`'s error (kept private so `pcap-file` stays out of the public API).
    fn from_pcap(err: PcapError) -> Self {
        match err {
            // pcap-file reports "the reader ran dry inside a record" as UnexpectedEof; libpcap
            // calls the same thing a truncated dump file, which is what an operator needs to hear.
            PcapError::IoError(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                CaptureError::Format(
                    "truncated: the file ends inside a header or record (or a block exceeds \
                     pcap-file's 8 MB buffer)"
                        .to_owned(),
                )
            }
            PcapError::IoError(e) => CaptureError::Io(e),
            other => CaptureError::Format(other.to_string()),
        }
    }

    /// Whether reading must stop after this error (all but a packet naming an unknown interface).
    fn is_fatal(&self) -> bool {
        !matches!(self, CaptureError::UnknownInterface(_))
    }
}

/// The reader given to `pcap-file`: the four sniffed magic bytes put back in front of the rest.
type Sniffed<R> = Chain<Cursor<[u8; 4]>, R>;

/// libpcap's `MAXIMUM_SNAPLEN`: a record claiming more captured bytes than this is damaged.
const MAX_SNAPLEN: u32 = 262_144;

/// The pcapng "unit of time" of one interface, and where its packets come from.
#[derive(Debug, Clone, Copy)]
struct Interface {
    /// The interface's link type.
    link: LinkType,
    /// The interface's snapshot length (0: no limit).
    snaplen: u32,
    /// Timestamp units per second from `if_tsresol` (default 10^6); `None` if too fine for `u128`.
    units_per_second: Option<u128>,
    /// `if_tsoffset`: seconds to add to every timestamp (signed, per the pcapng specification).
    offset_secs: i64,
}

impl Interface {
    fn from_idb(idb: &InterfaceDescriptionBlock<'_>) -> Self {
        let mut iface = Interface {
            link: LinkType::from(u32::from(idb.linktype)),
            snaplen: idb.snaplen,
            units_per_second: Some(1_000_000),
            offset_secs: 0,
        };
        for option in &idb.options {
            match *option {
                InterfaceDescriptionOption::IfTsResol(resol) => {
                    iface.units_per_second = units_per_second(resol);
                }
                InterfaceDescriptionOption::IfTsOffset(offset) => {
                    iface.offset_secs = i64::from_ne_bytes(offset.to_ne_bytes());
                }
                _ => {}
            }
        }
        iface
    }

    /// Turn a raw pcapng timestamp (a count of this interface's units) into time since the epoch.
    fn timestamp(&self, units: u64) -> Duration {
        let since_offset = units_to_duration(units, self.units_per_second);
        let offset = Duration::from_secs(self.offset_secs.unsigned_abs());
        if self.offset_secs >= 0 {
            since_offset.saturating_add(offset)
        } else {
            since_offset.saturating_sub(offset)
        }
    }
}

/// Units per second for an `if_tsresol` value: high bit clear → 10^-n s, set → 2^-n s.
fn units_per_second(resol: u8) -> Option<u128> {
    let exponent = u32::from(resol & 0x7f);
    if resol & 0x80 == 0 {
        10u128.checked_pow(exponent)
    } else {
        1u128.checked_shl(exponent)
    }
}

/// Convert a count of `1/units_per_second` seconds into a [`Duration`], rounded down to the ns.
fn units_to_duration(units: u64, units_per_second: Option<u128>) -> Duration {
    // A resolution finer than u128 can count is finer than 10^-38 s: any u64 count is 0 ns.
    let Some(per_second) = units_per_second.filter(|&p| p != 0) else {
        return Duration::ZERO;
    };
    let units = u128::from(units);
    let secs = u64::try_from(units / per_second).unwrap_or(u64::MAX);
    // rem < 2^64, so rem * 10^9 < 2^94 fits, and the quotient is below 10^9.
    let nanos = (units % per_second) * 1_000_000_000 / per_second;
    Duration::from_secs(secs)
        .saturating_add(Duration::from_nanos(u64::try_from(nanos).unwrap_or(0)))
}

/// The format-specific state behind a [`CaptureReader`].
enum Inner<R: Read> {
    Pcap {
        reader: PcapReader<Sniffed<R>>,
        link: LinkType,
        /// libpcap's effective snapshot length: the header's, or [`MAX_SNAPLEN`] if 0 or larger.
        snaplen: u32,
        resolution: TsResolution,
    },
    PcapNg {
        reader: PcapNgReader<Sniffed<R>>,
        /// The current section's interfaces, in the order their IDBs appeared.
        interfaces: Vec<Interface>,
    },
}

/// Iterator over the packets of a pcap or pcapng capture read from `R`.
///
/// Yields `Err` for a damaged record and then stops (the iterator is fused), except for
/// [`CaptureError::UnknownInterface`], after which the next block is read normally.
/// Each reader holds `pcap-file`'s 8 MB read buffer; a block larger than that cannot be read.
pub struct CaptureReader<R: Read> {
    inner: Inner<R>,
    done: bool,
}

impl<R: Read> CaptureReader<R> {
    /// Read the file header from `reader`, choosing pcap or pcapng by the magic number.
    pub fn new(mut reader: R) -> Result<Self, CaptureError> {
        let mut magic = [0u8; 4];
        reader.read_exact(&mut magic).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                CaptureError::Format("file shorter than a capture header".to_owned())
            } else {
                CaptureError::Io(e)
            }
        })?;
        let sniffed = Cursor::new(magic).chain(reader);
        let inner = match magic {
            // Both byte orders of the microsecond (a1b2c3d4) and nanosecond (a1b23c4d) magics.
            [0xa1, 0xb2, 0xc3, 0xd4]
            | [0xd4, 0xc3, 0xb2, 0xa1]
            | [0xa1, 0xb2, 0x3c, 0x4d]
            | [0x4d, 0x3c, 0xb2, 0xa1] => {
                let reader = PcapReader::new(sniffed).map_err(CaptureError::from_pcap)?;
                let PcapHeader {
                    datalink,
                    snaplen,
                    ts_resolution,
                    ..
                } = reader.header();
                // The top six bits of the header's link type carry FCS information (libpcap's
                // LT_LINKTYPE mask), not the link type itself.
                let link = LinkType::from(u32::from(datalink) & 0x03ff_ffff);
                let snaplen = if snaplen == 0 || snaplen > MAX_SNAPLEN {
                    MAX_SNAPLEN
                } else {
                    snaplen
                };
                Inner::Pcap {
                    reader,
                    link,
                    snaplen,
                    resolution: ts_resolution,
                }
            }
            // The Section Header Block type, a palindrome so it reads the same in both orders.
            [0x0a, 0x0d, 0x0d, 0x0a] => Inner::PcapNg {
                reader: PcapNgReader::new(sniffed).map_err(CaptureError::from_pcap)?,
                interfaces: Vec::new(),
            },
            other => return Err(CaptureError::UnknownMagic(other)),
        };
        Ok(CaptureReader { inner, done: false })
    }

    /// The container format the magic number announced.
    pub fn format(&self) -> CaptureFormat {
        match self.inner {
            Inner::Pcap { .. } => CaptureFormat::Pcap,
            Inner::PcapNg { .. } => CaptureFormat::PcapNg,
        }
    }
}

/// Open the capture file at `path` and read its header.
pub fn open(path: impl AsRef<Path>) -> Result<CaptureReader<BufReader<File>>, CaptureError> {
    CaptureReader::new(BufReader::new(File::open(path)?))
}

impl<R: Read> fmt::Debug for CaptureReader<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaptureReader")
            .field("format", &self.format())
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl<R: Read> Iterator for CaptureReader<R> {
    type Item = Result<CapturedPacket, CaptureError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = match &mut self.inner {
            Inner::Pcap {
                reader,
                link,
                snaplen,
                resolution,
            } => next_pcap(reader, *link, *snaplen, *resolution),
            Inner::PcapNg { reader, interfaces } => next_pcapng(reader, interfaces),
        };
        match &item {
            None => self.done = true,
            Some(Err(e)) if e.is_fatal() => self.done = true,
            Some(_) => {}
        }
        item
    }
}

impl<R: Read> std::iter::FusedIterator for CaptureReader<R> {}

/// Read the next classic pcap record with libpcap's rules.
///
/// `pcap-file`'s validated reader rejects any record whose wire length exceeds the snapshot
/// length (every snaplen-truncated capture), so the raw record is read and checked here as
/// libpcap's `pcap_next_packet` does: more than [`MAX_SNAPLEN`] captured bytes is an error, more
/// than the file's snapshot length is cut to it, and a captured length above the wire length or
/// an out-of-range fraction of a second is passed through.
fn next_pcap<R: Read>(
    reader: &mut PcapReader<Sniffed<R>>,
    link: LinkType,
    snaplen: u32,
    resolution: TsResolution,
) -> Option<Result<CapturedPacket, CaptureError>> {
    let raw = match reader.next_raw_packet()? {
        Ok(raw) => raw,
        Err(e) => return Some(Err(CaptureError::from_pcap(e))),
    };
    if raw.incl_len > MAX_SNAPLEN {
        return Some(Err(CaptureError::Format(format!(
            "record captured length {} exceeds the maximum of {MAX_SNAPLEN}",
            raw.incl_len
        ))));
    }
    let keep = usize::try_from(snaplen)
        .unwrap_or(usize::MAX)
        .min(raw.data.len());
    let data = raw.data.get(..keep).unwrap_or_default().to_vec();
    let frac_nanos = match resolution {
        TsResolution::MicroSecond => u64::from(raw.ts_frac) * 1_000,
        TsResolution::NanoSecond => u64::from(raw.ts_frac),
    };
    let timestamp =
        Duration::from_secs(u64::from(raw.ts_sec)).saturating_add(Duration::from_nanos(frac_nanos));
    Some(Ok(CapturedPacket {
        timestamp,
        orig_len: raw.orig_len,
        link,
        data,
    }))
}

/// Read pcapng blocks until the next packet, keeping the section's interfaces up to date.
fn next_pcapng<R: Read>(
    reader: &mut PcapNgReader<Sniffed<R>>,
    interfaces: &mut Vec<Interface>,
) -> Option<Result<CapturedPacket, CaptureError>> {
    loop {
        let block = match reader.next_block()? {
            Ok(block) => block,
            Err(e) => return Some(Err(CaptureError::from_pcap(e))),
        };
        let (interface_id, units, orig_len, data) = match block {
            // Interface numbers restart with every section.
            Block::SectionHeader(_) => {
                interfaces.clear();
                continue;
            }
            Block::InterfaceDescription(idb) => {
                interfaces.push(Interface::from_idb(&idb));
                continue;
            }
            // pcap-file 2.0 turns the EPB's raw count of if_tsresol units into a Duration as if
            // the units were always nanoseconds; undo that and apply the interface's resolution.
            Block::EnhancedPacket(epb) => (
                epb.interface_id,
                Some(u64::try_from(epb.timestamp.as_nanos()).unwrap_or(u64::MAX)),
                epb.original_len,
                epb.data,
            ),
            // The obsolete Packet Block: still written by old tools, same fields as an EPB.
            Block::Packet(pb) => (
                u32::from(pb.interface_id),
                Some(pb.timestamp),
                pb.original_len,
                pb.data,
            ),
            // A Simple Packet Block belongs to the first interface and has no timestamp.
            Block::SimplePacket(spb) => (0, None, spb.original_len, spb.data),
            // Name resolution, statistics, journal and unknown blocks carry no packets.
            _ => continue,
        };
        let Some(iface) = usize::try_from(interface_id)
            .ok()
            .and_then(|i| interfaces.get(i))
        else {
            return Some(Err(CaptureError::UnknownInterface(interface_id)));
        };
        let (timestamp, data) = match units {
            Some(units) => (iface.timestamp(units), data.into_owned()),
            None => {
                // pcap-file hands over the whole SPB body, padding included; the captured
                // length is the smallest of the body, the wire length and the snaplen.
                let mut keep = data
                    .len()
                    .min(usize::try_from(orig_len).unwrap_or(usize::MAX));
                if iface.snaplen != 0 {
                    keep = keep.min(usize::try_from(iface.snaplen).unwrap_or(usize::MAX));
                }
                (
                    Duration::ZERO,
                    data.get(..keep).unwrap_or_default().to_vec(),
                )
            }
        };
        return Some(Ok(CapturedPacket {
            timestamp,
            orig_len,
            link: iface.link,
            data,
        }));
    }
}

/// What a captured packet holds once its link-layer header is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkPayload<'a> {
    /// The whole Ethernet frame, header included: the dataplane parses Ethernet itself.
    Ethernet(&'a [u8]),
    /// An L3 packet and the EtherType that names it (0x0800 IPv4, 0x86dd IPv6, 0x0806 ARP, ...).
    Network {
        /// EtherType of `payload`.
        ether_type: u16,
        /// The bytes after the link-layer header.
        payload: &'a [u8],
    },
}

impl LinkPayload<'_> {
    /// Parse the payload with the packet layer's frame parser ([`crate::parse`]).
    pub fn parse(&self) -> Result<crate::parse::ParsedFrame, WireError> {
        match *self {
            LinkPayload::Ethernet(frame) => crate::parse::parse_ethernet(frame),
            LinkPayload::Network {
                ether_type,
                payload,
            } => crate::parse::parse_network(ether_type, payload),
        }
    }

    /// The bytes the offsets of [`LinkPayload::parse`]'s result refer to.
    pub fn bytes(&self) -> &[u8] {
        match *self {
            LinkPayload::Ethernet(frame) => frame,
            LinkPayload::Network { payload, .. } => payload,
        }
    }
}

/// Writes an Ethernet pcap file (nanosecond timestamps) through `pcap-file`: what `rvsd replay`
/// and the tests record of the frames the director transmits.
pub struct CaptureWriter<W: std::io::Write> {
    inner: pcap_file::pcap::PcapWriter<W>,
}

impl<W: std::io::Write> fmt::Debug for CaptureWriter<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CaptureWriter")
    }
}

impl<W: std::io::Write> CaptureWriter<W> {
    /// Start a pcap file with an Ethernet link type and nanosecond resolution.
    pub fn new(writer: W) -> Result<Self, CaptureError> {
        let header = PcapHeader {
            datalink: pcap_file::DataLink::ETHERNET,
            ts_resolution: TsResolution::NanoSecond,
            snaplen: 262_144,
            ..PcapHeader::default()
        };
        let inner = pcap_file::pcap::PcapWriter::with_header(writer, header)
            .map_err(CaptureError::from_pcap)?;
        Ok(CaptureWriter { inner })
    }

    /// Append one frame captured at `timestamp` (since the Unix epoch).
    pub fn write(&mut self, timestamp: Duration, frame: &[u8]) -> Result<(), CaptureError> {
        let orig_len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
        let pkt = pcap_file::pcap::PcapPacket::new(timestamp, orig_len, frame);
        self.inner
            .write_packet(&pkt)
            .map(|_| ())
            .map_err(CaptureError::from_pcap)
    }

    /// Flush and return the underlying writer.
    pub fn into_inner(self) -> W {
        self.inner.into_writer()
    }
}

/// EtherType of IPv4.
const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType of IPv6.
const ETHERTYPE_IPV6: u16 = 0x86dd;
/// EtherType of MPLS unicast.
const ETHERTYPE_MPLS: u16 = 0x8847;
/// EtherType of MPLS multicast.
const ETHERTYPE_MPLS_MULTICAST: u16 = 0x8848;

/// Remove the link-layer header of a packet captured on a `link` link.
///
/// Ethernet is returned whole; every other supported link type yields the L3 packet and its
/// EtherType. Every length is checked against `data`, never against a length field.
pub fn link_payload(link: LinkType, data: &[u8]) -> Result<LinkPayload<'_>, WireError> {
    match link {
        LinkType::Ethernet => Ok(LinkPayload::Ethernet(data)),
        LinkType::Raw => {
            let first = data
                .first()
                .ok_or(WireError::truncated(Layer::Link, 1, 0))?;
            let ether_type = match first >> 4 {
                4 => ETHERTYPE_IPV4,
                6 => ETHERTYPE_IPV6,
                version => return Err(WireError::BadVersion(version)),
            };
            Ok(LinkPayload::Network {
                ether_type,
                payload: data,
            })
        }
        LinkType::Ipv4 => Ok(LinkPayload::Network {
            ether_type: ETHERTYPE_IPV4,
            payload: data,
        }),
        LinkType::Ipv6 => Ok(LinkPayload::Network {
            ether_type: ETHERTYPE_IPV6,
            payload: data,
        }),
        LinkType::LinuxSll => {
            let (header, payload) = split_header(data, 16)?;
            sll_payload(be16(header, 2), be16(header, 14), payload)
        }
        LinkType::LinuxSll2 => {
            let (header, payload) = split_header(data, 20)?;
            sll_payload(be16(header, 8), be16(header, 0), payload)
        }
        LinkType::Null => {
            let (header, payload) = split_header(data, 4)?;
            // Written in the capturing host's byte order. Address families fit in 16 bits, so
            // a value with high bits set was written by a host of the other order (tcpdump's rule).
            let mut family = u32::from_le_bytes(array4(header));
            if family & 0xffff_0000 != 0 {
                family = family.swap_bytes();
            }
            loopback_payload(family, payload)
        }
        LinkType::Loop => {
            let (header, payload) = split_header(data, 4)?;
            loopback_payload(u32::from_be_bytes(array4(header)), payload)
        }
        LinkType::Ppp => ppp_payload(data),
        LinkType::Other(n) => Err(WireError::UnsupportedLinkType(n)),
    }
}

/// Split `data` after a `len`-byte link-layer header, or report how short it is.
fn split_header(data: &[u8], len: usize) -> Result<(&[u8], &[u8]), WireError> {
    data.split_at_checked(len)
        .ok_or(WireError::truncated(Layer::Link, len, data.len()))
}

/// The big-endian `u16` at `at` in a header already checked to be long enough (0 otherwise).
fn be16(header: &[u8], at: usize) -> u16 {
    match header.get(at..at + 2) {
        Some(&[hi, lo]) => u16::from_be_bytes([hi, lo]),
        _ => 0,
    }
}

/// The first four bytes of a header already checked to be long enough (zeros otherwise).
fn array4(header: &[u8]) -> [u8; 4] {
    match header.get(..4) {
        Some(&[a, b, c, d]) => [a, b, c, d],
        _ => [0; 4],
    }
}

/// `ARPHRD_FRAD`: SLL protocol field ignored, the payload is a Frame Relay frame.
const ARPHRD_FRAD: u16 = 770;
/// `ARPHRD_IEEE80211_RADIOTAP`: SLL protocol field ignored, the payload is radiotap + 802.11.
const ARPHRD_IEEE80211_RADIOTAP: u16 = 803;
/// `ARPHRD_NETLINK`: the SLL protocol field is a Netlink family, not an EtherType.
const ARPHRD_NETLINK: u16 = 824;

/// Interpret a Linux cooked header's protocol field (LINKTYPE_LINUX_SLL / _SLL2).
///
/// Values from 0x0600 up are EtherTypes. Below that the field names a Linux `ETH_P_*`
/// pseudo-protocol (0x0001 Novell 802.3, 0x0004 802.2 LLC, 0x000c CAN, ...) that carries no
/// IP packet; for the ARPHRD types above it is not an EtherType at all.
fn sll_payload(arphrd: u16, protocol: u16, payload: &[u8]) -> Result<LinkPayload<'_>, WireError> {
    if matches!(
        arphrd,
        ARPHRD_FRAD | ARPHRD_IEEE80211_RADIOTAP | ARPHRD_NETLINK
    ) || protocol < 0x0600
    {
        return Err(WireError::UnsupportedLinkProtocol(u32::from(protocol)));
    }
    Ok(LinkPayload::Network {
        ether_type: protocol,
        payload,
    })
}

/// Map a BSD loopback address family to an EtherType.
fn loopback_payload(family: u32, payload: &[u8]) -> Result<LinkPayload<'_>, WireError> {
    let ether_type = match family {
        2 => ETHERTYPE_IPV4,
        // AF_INET6 differs by OS: Linux 10, NetBSD/OpenBSD 24, FreeBSD/DragonFly 28, Darwin 30.
        10 | 24 | 28 | 30 => ETHERTYPE_IPV6,
        other => return Err(WireError::UnsupportedLinkProtocol(other)),
    };
    Ok(LinkPayload::Network {
        ether_type,
        payload,
    })
}

/// Remove a PPP header (RFC 1661, with RFC 1662 framing).
fn ppp_payload(data: &[u8]) -> Result<LinkPayload<'_>, WireError> {
    // RFC 1662 address and control bytes, absent when address/control field compression is on.
    let (offset, rest) = match data {
        [0xff, 0x03, rest @ ..] => (2, rest),
        _ => (0, data),
    };
    // RFC 1661 §2: protocol numbers are odd in their low byte and even in their high byte, so
    // an odd first byte is a protocol field compressed to one byte.
    let (protocol, payload) = match rest {
        [low, payload @ ..] if low & 1 == 1 => (u16::from(*low), payload),
        [high, low, payload @ ..] => (u16::from_be_bytes([*high, *low]), payload),
        _ => return Err(WireError::truncated(Layer::Link, offset + 2, data.len())),
    };
    let ether_type = match protocol {
        0x0021 => ETHERTYPE_IPV4,
        0x0057 => ETHERTYPE_IPV6,
        0x0281 => ETHERTYPE_MPLS,
        0x0283 => ETHERTYPE_MPLS_MULTICAST,
        other => return Err(WireError::UnsupportedLinkProtocol(u32::from(other))),
    };
    Ok(LinkPayload::Network {
        ether_type,
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network(ether_type: u16, payload: &[u8]) -> Result<LinkPayload<'_>, WireError> {
        Ok(LinkPayload::Network {
            ether_type,
            payload,
        })
    }

    fn truncated(needed: usize, available: usize) -> Result<LinkPayload<'static>, WireError> {
        Err(WireError::Truncated {
            layer: Layer::Link,
            needed,
            available,
        })
    }

    // ---- link_payload ----------------------------------------------------------------------

    /// First bytes of an IPv4 header (version 4, IHL 5).
    static IPV4_START: [u8; 4] = [0x45, 0x00, 0x00, 0x14];
    /// First bytes of an IPv6 header (version 6).
    static IPV6_START: [u8; 4] = [0x60, 0x00, 0x00, 0x00];

    #[test]
    fn ethernet_is_returned_whole() {
        let frame = [0xffu8; 14];
        assert_eq!(
            link_payload(LinkType::Ethernet, &frame),
            Ok(LinkPayload::Ethernet(&frame))
        );
        assert_eq!(
            link_payload(LinkType::Ethernet, &[]),
            Ok(LinkPayload::Ethernet(&[]))
        );
    }

    #[test]
    fn raw_ip_by_version_nibble() {
        assert_eq!(
            link_payload(LinkType::Raw, &IPV4_START),
            network(0x0800, &IPV4_START)
        );
        assert_eq!(
            link_payload(LinkType::Raw, &IPV6_START),
            network(0x86dd, &IPV6_START)
        );
        assert_eq!(
            link_payload(LinkType::Raw, &[0x55, 0]),
            Err(WireError::BadVersion(5))
        );
        assert_eq!(link_payload(LinkType::Raw, &[]), truncated(1, 0));
    }

    #[test]
    fn ipv4_and_ipv6_link_types_need_no_header() {
        assert_eq!(
            link_payload(LinkType::Ipv4, &IPV4_START),
            network(0x0800, &IPV4_START)
        );
        assert_eq!(
            link_payload(LinkType::Ipv6, &IPV6_START),
            network(0x86dd, &IPV6_START)
        );
    }

    /// LINKTYPE_LINUX_SLL header of an outgoing IPv4 packet on an Ethernet device, then 2 bytes.
    static SLL_IPV4: [u8; 18] = [
        0x00, 0x04, // packet type: outgoing
        0x00, 0x01, // ARPHRD_ETHER
        0x00, 0x06, // link-layer address length
        0x00, 0x16, 0x3e, 0x27, 0x78, 0xa2, 0x00, 0x00, // address, padded to 8
        0x08, 0x00, // protocol: IPv4
        0x45, 0x00, // payload
    ];

    #[test]
    fn linux_sll() {
        assert_eq!(
            link_payload(LinkType::LinuxSll, &SLL_IPV4),
            network(0x0800, &[0x45, 0x00])
        );
        assert_eq!(
            link_payload(LinkType::LinuxSll, &SLL_IPV4[..16]),
            network(0x0800, &[])
        );
        assert_eq!(
            link_payload(LinkType::LinuxSll, &SLL_IPV4[..15]),
            truncated(16, 15)
        );
        assert_eq!(link_payload(LinkType::LinuxSll, &[]), truncated(16, 0));
    }

    #[test]
    fn linux_sll_protocols_below_0x0600_are_not_ethertypes() {
        for protocol in [0x0001u16, 0x0004, 0x000c, 0x05ff] {
            let mut packet = SLL_IPV4;
            packet[14..16].copy_from_slice(&protocol.to_be_bytes());
            assert_eq!(
                link_payload(LinkType::LinuxSll, &packet),
                Err(WireError::UnsupportedLinkProtocol(u32::from(protocol)))
            );
        }
        // Netlink capture (ARPHRD_NETLINK): the protocol field is a Netlink family.
        let mut netlink = SLL_IPV4;
        netlink[2..4].copy_from_slice(&824u16.to_be_bytes());
        assert_eq!(
            link_payload(LinkType::LinuxSll, &netlink),
            Err(WireError::UnsupportedLinkProtocol(0x0800))
        );
    }

    /// LINKTYPE_LINUX_SLL2 header of an IPv6 packet, then 1 byte.
    static SLL2_IPV6: [u8; 21] = [
        0x86, 0xdd, // protocol: IPv6
        0x00, 0x00, // reserved
        0x00, 0x00, 0x00, 0x02, // interface index
        0x00, 0x01, // ARPHRD_ETHER
        0x00, // packet type: to us
        0x06, // link-layer address length
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, // address, padded to 8
        0x60, // payload
    ];

    #[test]
    fn linux_sll2() {
        assert_eq!(
            link_payload(LinkType::LinuxSll2, &SLL2_IPV6),
            network(0x86dd, &[0x60])
        );
        assert_eq!(
            link_payload(LinkType::LinuxSll2, &SLL2_IPV6[..19]),
            truncated(20, 19)
        );
        let mut llc = SLL2_IPV6;
        llc[0..2].copy_from_slice(&[0x00, 0x04]);
        assert_eq!(
            link_payload(LinkType::LinuxSll2, &llc),
            Err(WireError::UnsupportedLinkProtocol(4))
        );
    }

    #[test]
    fn null_accepts_both_byte_orders() {
        let payload = [0x45u8];
        for header in [[2u8, 0, 0, 0], [0, 0, 0, 2]] {
            let packet = [&header[..], &payload[..]].concat();
            assert_eq!(
                link_payload(LinkType::Null, &packet),
                network(0x0800, &payload)
            );
        }
        for family in [10u32, 24, 28, 30] {
            for header in [family.to_le_bytes(), family.to_be_bytes()] {
                assert_eq!(link_payload(LinkType::Null, &header), network(0x86dd, &[]));
            }
        }
    }

    #[test]
    fn null_rejects_unknown_families_and_short_headers() {
        assert_eq!(
            link_payload(LinkType::Null, &[7, 0, 0, 0]),
            Err(WireError::UnsupportedLinkProtocol(7))
        );
        // Cisco HDLC bytes (0f 00 08 00) where an address family should be: neither order fits.
        assert_eq!(
            link_payload(LinkType::Null, &[0x0f, 0x00, 0x08, 0x00]),
            Err(WireError::UnsupportedLinkProtocol(0x0f00_0800))
        );
        assert_eq!(link_payload(LinkType::Null, &[2, 0, 0]), truncated(4, 3));
    }

    #[test]
    fn loop_is_big_endian() {
        assert_eq!(
            link_payload(LinkType::Loop, &[0, 0, 0, 2, 0x45]),
            network(0x0800, &[0x45])
        );
        assert_eq!(
            link_payload(LinkType::Loop, &[0, 0, 0, 24]),
            network(0x86dd, &[])
        );
        // Little-endian 2 read in network byte order is not AF_INET.
        assert_eq!(
            link_payload(LinkType::Loop, &[2, 0, 0, 0]),
            Err(WireError::UnsupportedLinkProtocol(0x0200_0000))
        );
        assert_eq!(link_payload(LinkType::Loop, &[]), truncated(4, 0));
    }

    #[test]
    fn ppp_with_and_without_address_and_control() {
        assert_eq!(
            link_payload(LinkType::Ppp, &[0xff, 0x03, 0x00, 0x21, 0x45]),
            network(0x0800, &[0x45])
        );
        assert_eq!(
            link_payload(LinkType::Ppp, &[0x00, 0x57, 0x60]),
            network(0x86dd, &[0x60])
        );
        assert_eq!(
            link_payload(LinkType::Ppp, &[0xff, 0x03, 0x02, 0x81, 0x18]),
            network(0x8847, &[0x18])
        );
        assert_eq!(
            link_payload(LinkType::Ppp, &[0x02, 0x83]),
            network(0x8848, &[])
        );
    }

    #[test]
    fn ppp_protocol_field_compression() {
        // RFC 1661 §6.5: a one-byte protocol field (its only byte is odd).
        assert_eq!(
            link_payload(LinkType::Ppp, &[0x21, 0x45]),
            network(0x0800, &[0x45])
        );
        assert_eq!(
            link_payload(LinkType::Ppp, &[0xff, 0x03, 0x57, 0x60]),
            network(0x86dd, &[0x60])
        );
    }

    #[test]
    fn ppp_rejects_other_protocols_and_short_headers() {
        // LCP.
        assert_eq!(
            link_payload(LinkType::Ppp, &[0xff, 0x03, 0xc0, 0x21, 0x01]),
            Err(WireError::UnsupportedLinkProtocol(0xc021))
        );
        assert_eq!(link_payload(LinkType::Ppp, &[0xff, 0x03]), truncated(4, 2));
        assert_eq!(
            link_payload(LinkType::Ppp, &[0xff, 0x03, 0x00]),
            truncated(4, 3)
        );
        assert_eq!(link_payload(LinkType::Ppp, &[0x00]), truncated(2, 1));
        assert_eq!(link_payload(LinkType::Ppp, &[]), truncated(2, 0));
    }

    #[test]
    fn other_link_types_are_unsupported() {
        assert_eq!(
            link_payload(LinkType::Other(107), &[0x80, 0xea]),
            Err(WireError::UnsupportedLinkType(107))
        );
        assert_eq!(
            link_payload(LinkType::Other(0), &[]),
            Err(WireError::UnsupportedLinkType(0))
        );
    }

    #[test]
    fn link_type_numbers_round_trip() {
        for n in [0u32, 1, 9, 101, 107, 108, 113, 228, 229, 276, 65_535] {
            assert_eq!(u32::from(LinkType::from(n)), n);
        }
        assert_eq!(LinkType::from(113), LinkType::LinuxSll);
        assert_eq!(LinkType::from(107), LinkType::Other(107));
    }

    // ---- reader: classic pcap --------------------------------------------------------------

    /// A little-endian microsecond pcap header: version 2.4, snaplen `snaplen`, link type `link`.
    fn pcap_header(snaplen: u32, link: u32) -> Vec<u8> {
        let mut v = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0];
        v.extend_from_slice(&[0; 8]); // thiszone, sigfigs
        v.extend_from_slice(&snaplen.to_le_bytes());
        v.extend_from_slice(&link.to_le_bytes());
        v
    }

    /// A little-endian pcap record header followed by `data`.
    fn pcap_record(sec: u32, frac: u32, caplen: u32, orig_len: u32, data: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        for field in [sec, frac, caplen, orig_len] {
            v.extend_from_slice(&field.to_le_bytes());
        }
        v.extend_from_slice(data);
        v
    }

    fn read_all(bytes: &[u8]) -> Vec<Result<CapturedPacket, CaptureError>> {
        match CaptureReader::new(bytes) {
            Ok(reader) => reader.collect(),
            Err(e) => vec![Err(e)],
        }
    }

    #[test]
    fn pcap_little_endian_microseconds() {
        let mut file = pcap_header(65_535, 1);
        file.extend(pcap_record(1_000, 999_999, 4, 60, &[1, 2, 3, 4]));
        let mut reader = CaptureReader::new(&file[..]).unwrap();
        assert_eq!(reader.format(), CaptureFormat::Pcap);
        let packet = reader.next().unwrap().unwrap();
        assert_eq!(
            packet,
            CapturedPacket {
                timestamp: Duration::new(1_000, 999_999_000),
                orig_len: 60,
                link: LinkType::Ethernet,
                data: vec![1, 2, 3, 4],
            }
        );
        assert!(reader.next().is_none());
        assert!(reader.next().is_none());
    }

    #[test]
    fn pcap_big_endian_nanoseconds() {
        let mut file = vec![0xa1, 0xb2, 0x3c, 0x4d, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0];
        file.extend_from_slice(&262_144u32.to_be_bytes());
        file.extend_from_slice(&113u32.to_be_bytes());
        for field in [7u32, 123_456_789, 2, 2] {
            file.extend_from_slice(&field.to_be_bytes());
        }
        file.extend_from_slice(&[0xaa, 0xbb]);
        let packets: Vec<_> = CaptureReader::new(&file[..]).unwrap().collect();
        let [Ok(packet)] = &packets[..] else {
            panic!("{packets:?}")
        };
        assert_eq!(packet.timestamp, Duration::new(7, 123_456_789));
        assert_eq!(packet.link, LinkType::LinuxSll);
        assert_eq!(packet.data, [0xaa, 0xbb]);
    }

    #[test]
    fn pcap_records_longer_than_snaplen_are_cut_like_libpcap() {
        // Wire length above the snaplen is the normal snaplen-truncated case; a captured length
        // above it is cut to the snaplen; a captured length above the wire length passes.
        let mut file = pcap_header(4, 1);
        file.extend(pcap_record(1, 0, 4, 1514, &[1, 2, 3, 4]));
        file.extend(pcap_record(2, 0, 6, 0, &[1, 2, 3, 4, 5, 6]));
        file.extend(pcap_record(3, 0, 2, 2, &[7, 8]));
        let packets: Vec<_> = read_all(&file).into_iter().map(Result::unwrap).collect();
        let lens: Vec<_> = packets.iter().map(|p| (p.data.len(), p.orig_len)).collect();
        assert_eq!(lens, [(4, 1514), (4, 0), (2, 2)]);
        assert_eq!(
            packets[2].data,
            [7, 8],
            "the discarded bytes were skipped, not re-read"
        );
    }

    #[test]
    fn pcap_snaplen_zero_means_libpcap_maximum() {
        let mut file = pcap_header(0, 1);
        file.extend(pcap_record(1, 0, 3, 3, &[1, 2, 3]));
        let packets = read_all(&file);
        assert_eq!(packets.len(), 1);
        assert_eq!(packets[0].as_ref().unwrap().data, [1, 2, 3]);
    }

    #[test]
    fn pcap_out_of_range_fraction_carries_into_seconds() {
        let mut file = pcap_header(65_535, 1);
        file.extend(pcap_record(5, 2_500_000, 0, 0, &[]));
        let packets = read_all(&file);
        assert_eq!(
            packets[0].as_ref().unwrap().timestamp,
            Duration::new(7, 500_000_000)
        );
    }

    #[test]
    fn pcap_huge_captured_length_is_an_error_then_the_end() {
        let mut file = pcap_header(65_535, 1);
        file.extend(pcap_record(1, 0, 1, 1, &[0]));
        let mut big = pcap_record(1, 0, MAX_SNAPLEN + 1, MAX_SNAPLEN + 1, &[]);
        big.resize(big.len() + MAX_SNAPLEN as usize + 1, 0);
        file.extend(big);
        file.extend(pcap_record(1, 0, 1, 1, &[0]));
        let packets = read_all(&file);
        assert_eq!(packets.len(), 2, "{packets:?}");
        assert!(packets[0].is_ok());
        assert!(matches!(&packets[1], Err(CaptureError::Format(m)) if m.contains("262144")));
    }

    #[test]
    fn pcap_truncated_record_is_an_error_then_the_end() {
        let mut file = pcap_header(65_535, 1);
        file.extend(pcap_record(1, 0, 10, 10, &[0; 4]));
        let packets = read_all(&file);
        assert_eq!(packets.len(), 1);
        assert!(matches!(&packets[0], Err(CaptureError::Format(m)) if m.contains("truncated")));
        // A cut in the record header itself.
        let mut file = pcap_header(65_535, 1);
        file.extend_from_slice(&[0; 7]);
        let packets = read_all(&file);
        assert!(matches!(&packets[..], [Err(CaptureError::Format(_))]));
    }

    #[test]
    fn pcap_link_type_fcs_bits_are_masked() {
        // LINKTYPE_ETHERNET with "FCS present, 4 bytes" in the top bits.
        let mut file = pcap_header(65_535, 0x1000_0000 | 0x0400_0000 | 1);
        file.extend(pcap_record(1, 0, 1, 1, &[0]));
        assert_eq!(
            read_all(&file)[0].as_ref().unwrap().link,
            LinkType::Ethernet
        );
    }

    #[test]
    fn unknown_magic_and_short_files() {
        assert!(matches!(
            CaptureReader::new(&b"GIF89a"[..]),
            Err(CaptureError::UnknownMagic([b'G', b'I', b'F', b'8']))
        ));
        assert!(matches!(
            CaptureReader::new(&[][..]),
            Err(CaptureError::Format(_))
        ));
        assert!(matches!(
            CaptureReader::new(&[0xd4, 0xc3][..]),
            Err(CaptureError::Format(_))
        ));
        // A pcap magic with a header cut short.
        assert!(matches!(
            CaptureReader::new(&[0xd4, 0xc3, 0xb2, 0xa1, 2, 0][..]),
            Err(CaptureError::Format(_))
        ));
    }

    #[test]
    fn open_reports_missing_files() {
        assert!(matches!(
            open("/nonexistent/rvs/capture.pcap"),
            Err(CaptureError::Io(_))
        ));
    }

    // ---- reader: pcapng --------------------------------------------------------------------

    /// A little-endian pcapng block: type, total length, `body` padded to 32 bits, total length.
    fn block(block_type: u32, body: &[u8]) -> Vec<u8> {
        let padded = body.len().div_ceil(4) * 4;
        let total = u32::try_from(12 + padded).unwrap();
        let mut v = Vec::new();
        v.extend_from_slice(&block_type.to_le_bytes());
        v.extend_from_slice(&total.to_le_bytes());
        v.extend_from_slice(body);
        v.resize(8 + padded, 0);
        v.extend_from_slice(&total.to_le_bytes());
        v
    }

    /// Section Header Block, little-endian, version 1.0, section length unspecified.
    fn shb() -> Vec<u8> {
        let mut body = vec![0x4d, 0x3c, 0x2b, 0x1a, 1, 0, 0, 0];
        body.extend_from_slice(&(-1i64).to_le_bytes());
        block(0x0a0d_0d0a, &body)
    }

    /// Interface Description Block; `tsresol` adds an if_tsresol option.
    fn idb(link: u16, snaplen: u32, tsresol: Option<u8>) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&link.to_le_bytes());
        body.extend_from_slice(&[0, 0]);
        body.extend_from_slice(&snaplen.to_le_bytes());
        if let Some(resol) = tsresol {
            body.extend_from_slice(&[9, 0, 1, 0, resol, 0, 0, 0]); // if_tsresol
            body.extend_from_slice(&[0, 0, 0, 0]); // opt_endofopt
        }
        block(1, &body)
    }

    /// Enhanced Packet Block.
    fn epb(interface: u32, units: u64, orig_len: u32, data: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&interface.to_le_bytes());
        body.extend_from_slice(&u32::try_from(units >> 32).unwrap().to_le_bytes());
        body.extend_from_slice(&u32::try_from(units & 0xffff_ffff).unwrap().to_le_bytes());
        body.extend_from_slice(&u32::try_from(data.len()).unwrap().to_le_bytes());
        body.extend_from_slice(&orig_len.to_le_bytes());
        body.extend_from_slice(data);
        block(6, &body)
    }

    /// Simple Packet Block.
    fn spb(orig_len: u32, data: &[u8]) -> Vec<u8> {
        let mut body = orig_len.to_le_bytes().to_vec();
        body.extend_from_slice(data);
        block(3, &body)
    }

    #[test]
    fn pcapng_timestamps_follow_if_tsresol() {
        let mut file = shb();
        file.extend(idb(1, 0, None)); // default: microseconds
        file.extend(idb(101, 0, Some(9))); // nanoseconds
        file.extend(idb(113, 0, Some(0x80 | 10))); // 2^-10 s
        file.extend(epb(0, 1_500_000, 1, &[0xa]));
        file.extend(epb(1, 1_500_000_001, 1, &[0xb]));
        file.extend(epb(2, 3 * 1024 + 512, 1, &[0xc]));
        let mut reader = CaptureReader::new(&file[..]).unwrap();
        assert_eq!(reader.format(), CaptureFormat::PcapNg);
        let packets: Vec<_> = reader.by_ref().map(Result::unwrap).collect();
        let got: Vec<_> = packets
            .iter()
            .map(|p| (p.timestamp, p.link, p.data[0]))
            .collect();
        assert_eq!(
            got,
            [
                (Duration::new(1, 500_000_000), LinkType::Ethernet, 0xa),
                (Duration::new(1, 500_000_001), LinkType::Raw, 0xb),
                (Duration::new(3, 500_000_000), LinkType::LinuxSll, 0xc),
            ]
        );
    }

    #[test]
    fn pcapng_unknown_interface_is_reported_and_reading_goes_on() {
        let mut file = shb();
        file.extend(epb(0, 0, 1, &[1])); // before any IDB
        file.extend(idb(1, 0, None));
        file.extend(epb(1, 0, 1, &[2])); // only interface 0 exists
        file.extend(epb(0, 0, 1, &[3]));
        let packets = read_all(&file);
        assert!(matches!(packets[0], Err(CaptureError::UnknownInterface(0))));
        assert!(matches!(packets[1], Err(CaptureError::UnknownInterface(1))));
        assert_eq!(packets[2].as_ref().unwrap().data, [3]);
        assert_eq!(packets.len(), 3);
    }

    #[test]
    fn pcapng_new_section_forgets_interfaces() {
        let mut file = shb();
        file.extend(idb(1, 0, None));
        file.extend(epb(0, 0, 1, &[1]));
        file.extend(shb());
        file.extend(epb(0, 0, 1, &[2]));
        file.extend(idb(229, 0, None));
        file.extend(epb(0, 0, 1, &[3]));
        let packets = read_all(&file);
        assert_eq!(packets[0].as_ref().unwrap().link, LinkType::Ethernet);
        assert!(matches!(packets[1], Err(CaptureError::UnknownInterface(0))));
        assert_eq!(packets[2].as_ref().unwrap().link, LinkType::Ipv6);
    }

    #[test]
    fn pcapng_simple_packet_block_drops_padding() {
        let mut file = shb();
        file.extend(idb(1, 0, None));
        file.extend(spb(3, &[1, 2, 3])); // body padded with one zero byte
        file.extend(idb(1, 2, None));
        file.extend(spb(60, &[4, 5, 6, 7])); // SPBs use interface 0, whose snaplen is 0
        let packets: Vec<_> = read_all(&file).into_iter().map(Result::unwrap).collect();
        assert_eq!(packets[0].data, [1, 2, 3]);
        assert_eq!(packets[0].timestamp, Duration::ZERO);
        assert_eq!(packets[1].data, [4, 5, 6, 7]);
        assert_eq!(packets[1].orig_len, 60);
    }

    #[test]
    fn pcapng_skips_other_blocks() {
        let mut file = shb();
        file.extend(idb(1, 0, None));
        file.extend(block(5, &[0; 12])); // Interface Statistics Block, no options
        file.extend(block(0x0bad_0001, &[1, 2, 3, 4])); // unknown block type
        file.extend(epb(0, 0, 1, &[9]));
        let packets = read_all(&file);
        assert_eq!(packets.len(), 1);
        assert_eq!(packets[0].as_ref().unwrap().data, [9]);
    }

    #[test]
    fn pcapng_damaged_block_is_an_error_then_the_end() {
        let mut file = shb();
        file.extend(idb(1, 0, None));
        let mut bad = epb(0, 0, 1, &[1]);
        let last = bad.len() - 1;
        bad[last] ^= 0xff; // trailing length no longer matches the leading one
        file.extend(bad);
        file.extend(epb(0, 0, 1, &[2]));
        let packets = read_all(&file);
        assert!(
            matches!(&packets[..], [Err(CaptureError::Format(_))]),
            "{packets:?}"
        );
    }

    #[test]
    fn tsresol_conversion() {
        assert_eq!(units_per_second(6), Some(1_000_000));
        assert_eq!(units_per_second(0x80 | 20), Some(1 << 20));
        assert_eq!(units_per_second(0x7f), None);
        assert_eq!(
            units_to_duration(1_234_567, Some(1_000)),
            Duration::new(1_234, 567_000_000)
        );
        assert_eq!(
            units_to_duration(u64::MAX, Some(1)),
            Duration::from_secs(u64::MAX)
        );
        assert_eq!(
            units_to_duration(u64::MAX, Some(10u128.pow(38))),
            Duration::ZERO
        );
        assert_eq!(units_to_duration(u64::MAX, None), Duration::ZERO);
        // 10^-12 s units: below a nanosecond, rounded down.
        assert_eq!(
            units_to_duration(1_999, Some(10u128.pow(12))),
            Duration::new(0, 1)
        );
    }

    #[test]
    fn writer_round_trips_through_the_reader() {
        let mut w = CaptureWriter::new(Vec::new()).unwrap();
        w.write(Duration::new(5, 123_456_789), &[1, 2, 3, 4])
            .unwrap();
        w.write(Duration::new(6, 0), &[9; 60]).unwrap();
        let bytes = w.into_inner();
        let pkts: Vec<_> = CaptureReader::new(&bytes[..])
            .unwrap()
            .map(|p| p.unwrap())
            .collect();
        assert_eq!(pkts.len(), 2);
        assert_eq!(pkts[0].timestamp, Duration::new(5, 123_456_789));
        assert_eq!(pkts[0].data, vec![1, 2, 3, 4]);
        assert_eq!(pkts[0].link, LinkType::Ethernet);
        assert_eq!(pkts[1].data.len(), 60);
    }
}
