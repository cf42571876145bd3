//! The public capture corpus (`shared/corpus/pcap/`, described in its `SOURCES.md`) read through
//! `rvs_wire::capture`: every file to the end, with the counts, formats and link types
//! SOURCES.md documents, every packet's link layer removed, and damaged copies of every file
//! read without a panic or an endless loop.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::fs;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rvs_wire::WireError;
use rvs_wire::capture::{
    self, CaptureError, CaptureFormat, CaptureReader, CapturedPacket, LinkPayload, LinkType,
};

/// The corpus sits beside the checkout: `<parent>/shared/corpus/pcap`.
const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/corpus/pcap");

use CaptureFormat::{Pcap, PcapNg};
use LinkType::{Ethernet, Ipv4, LinuxSll, LinuxSll2, Null, Other, Ppp, Raw};

/// Every corpus file: name, container format (by magic, not extension), link type, packets.
/// The counts are SOURCES.md's "pkts" column (cross-checked below by parsing SOURCES.md).
const FILES: &[(&str, CaptureFormat, LinkType, usize)] = &[
    ("4in4.pcap", Pcap, Ethernet, 1),
    ("4in6.pcap", Pcap, Ethernet, 1),
    ("6in4tunnel.pcap", Pcap, Ethernet, 127),
    ("IPv4Frag.pcap", Pcap, Ethernet, 3),
    ("IcmpPackets.pcap", PcapNg, Ethernet, 15),
    ("LINKTYPE_RAW_ipv4.pcap", Pcap, Raw, 1),
    ("LINKTYPE_RAW_ipv6.pcap", Pcap, Raw, 1),
    ("NullLoopback.pcap", PcapNg, Null, 3),
    ("Sll2Packet.pcap", Pcap, LinuxSll2, 1),
    ("bigendian.pcap", Pcap, Ethernet, 2),
    ("extract_read2_asan.pcap", Pcap, Ipv4, 1),
    ("filestore-5408_input.pcap", Pcap, Ethernet, 133),
    ("frag-11.pcap", Pcap, Ethernet, 11),
    ("gre-sample.pcap", Pcap, Ethernet, 40),
    ("gtp-iphone.pcap", Pcap, LinuxSll, 106),
    ("icmp-cksum-oobr-1.pcap", Pcap, LinuxSll, 1),
    ("icmp-cksum-oobr-2.pcap", Pcap, Ppp, 1),
    ("icmp-cksum-oobr-3.pcapng", PcapNg, Ethernet, 1),
    ("icmp-cksum-oobr-4.pcapng", PcapNg, Ppp, 1),
    ("icmp-destunreach-ip.pcap", Pcap, Ethernet, 1),
    ("icmp-destunreach-no-context.pcap", Pcap, Ethernet, 1),
    ("icmp-destunreach-udp.pcap", Pcap, Ethernet, 1),
    ("icmp-hdr-02_input.pcap", Pcap, Ethernet, 1),
    ("icmp-icmp_print-oobr-2.pcap", Pcap, Other(107), 3),
    ("icmp-length-zero.pcapng", PcapNg, Ethernet, 1),
    ("icmp-rfc5837.pcap", Pcap, Ppp, 1),
    ("icmp-timeexceeded.pcap", Pcap, Ethernet, 1),
    ("icmp6-destunreach-ip6ext-trunc.pcap", Pcap, Ethernet, 1),
    ("icmp6-destunreach-ip6ext-udp.pcap", Pcap, Ethernet, 1),
    ("icmp6-destunreach-no-context.pcap", Pcap, Ethernet, 1),
    ("icmp6-paramprob.pcap", Pcap, Ethernet, 1),
    ("icmp6-redirect.pcap", Pcap, Ethernet, 1),
    ("icmp6-toobig.pcap", Pcap, Ethernet, 1),
    ("icmp6.pcap", Pcap, Ethernet, 49),
    ("icmpv6-rfc7112.pcap", Pcap, Ethernet, 1),
    ("ip4-bad-chksum.pcap", Pcap, Ethernet, 1),
    ("ip4-icmp-bad-chksum.pcap", Pcap, Ethernet, 1),
    ("ip4-tcp-bad-chksum.pcap", Pcap, Ethernet, 1),
    ("ip4-udp-bad-chksum.pcap", Pcap, Ethernet, 1),
    ("ip6-icmp6-bad-chksum.pcap", Pcap, Ethernet, 1),
    ("ip6-tcp-bad-chksum.pcap", Pcap, Ethernet, 1),
    ("ipv4-options.pcap", Pcap, Ethernet, 7),
    ("ipv6.pcap", Pcap, Ethernet, 17),
    ("kill_router6.pcap", Pcap, Ethernet, 21),
    ("mpls-traceroute.pcap", Pcap, Ppp, 18),
    ("mptcp-tcprst.pcap", Pcap, Raw, 2),
    ("smtp.pcap", Pcap, Ethernet, 125),
    ("tcp-handshake-nano.pcap", Pcap, LinuxSll, 3),
    ("tcp.pcap", Pcap, Ethernet, 12),
    ("toobig.pcap", Pcap, Ethernet, 5),
    ("udp.pcap", Pcap, Ethernet, 2),
    ("yanet_014_icmp_error_001-send.pcap", Pcap, Ethernet, 6),
    ("yanet_014_icmp_error_002-send.pcap", Pcap, Ethernet, 6),
    ("yanet_014_icmp_error_003-send.pcap", Pcap, Ethernet, 41),
    ("yanet_014_icmp_error_004-send.pcap", Pcap, Ethernet, 89),
    ("yanet_014_icmp_error_005-send.pcap", Pcap, Ethernet, 2),
    ("yanet_014_icmp_error_007-send.pcap", Pcap, Ethernet, 22),
    ("yanet_014_icmp_error_009-send.pcap", Pcap, Ethernet, 2),
    (
        "yanet_015_nat64stateless_firewall_002-send.pcap",
        Pcap,
        Ethernet,
        14,
    ),
    (
        "yanet_081_time_exceeded_in_transit_001-expect.pcap",
        Pcap,
        Ethernet,
        9,
    ),
];

/// The corpus directory; a missing corpus fails the test rather than skipping it.
fn corpus() -> PathBuf {
    let dir = Path::new(CORPUS);
    assert!(
        dir.join("SOURCES.md").is_file(),
        "capture corpus not found at {CORPUS}: these tests need the shared corpus beside the \
         checkout (<checkout>/../shared/corpus/pcap/, with its SOURCES.md)"
    );
    dir.to_path_buf()
}

/// Every capture file in the corpus directory (everything but SOURCES.md).
fn corpus_files() -> BTreeSet<String> {
    fs::read_dir(corpus())
        .expect("read corpus directory")
        .map(|entry| {
            entry
                .expect("corpus directory entry")
                .file_name()
                .into_string()
                .unwrap()
        })
        .filter(|name| name != "SOURCES.md")
        .collect()
}

/// Read a whole corpus file, panicking on any error item.
fn read(name: &str) -> (CaptureFormat, Vec<CapturedPacket>) {
    let reader =
        capture::open(corpus().join(name)).unwrap_or_else(|e| panic!("{name}: cannot open: {e}"));
    let format = reader.format();
    let packets = reader
        .enumerate()
        .map(|(i, item)| item.unwrap_or_else(|e| panic!("{name}: record {i}: {e}")))
        .collect();
    (format, packets)
}

#[test]
fn corpus_holds_exactly_the_files_listed_here() {
    let listed: BTreeSet<String> = FILES.iter().map(|(name, ..)| (*name).to_owned()).collect();
    assert_eq!(corpus_files(), listed);
}

#[test]
fn every_file_reads_to_the_end_with_its_format_link_type_and_count() {
    for &(name, format, link, count) in FILES {
        let (got_format, packets) = read(name);
        assert_eq!(got_format, format, "{name}: format");
        assert_eq!(packets.len(), count, "{name}: packet count");
        for (i, packet) in packets.iter().enumerate() {
            assert_eq!(packet.link, link, "{name}: record {i}: link type");
        }
    }
}

#[test]
fn counts_agree_with_sources_md() {
    let sources = fs::read_to_string(corpus().join("SOURCES.md")).unwrap();
    let mut documented = std::collections::BTreeMap::new();
    for line in sources.lines().filter(|line| line.starts_with("| `")) {
        let columns: Vec<&str> = line.split('|').map(str::trim).collect();
        // | file | origin | license | link | pkts | description | flags |
        let name = columns[1].split('`').nth(1).unwrap();
        if let Ok(pkts) = columns[5].parse::<usize>() {
            documented.insert(name.to_owned(), pkts);
        }
    }
    for name in corpus_files() {
        let pkts = documented
            .get(&name)
            .unwrap_or_else(|| panic!("{name}: not in SOURCES.md"));
        assert_eq!(
            read(&name).1.len(),
            *pkts,
            "{name}: count differs from SOURCES.md"
        );
    }
}

#[test]
fn every_link_layer_is_removed_except_the_documented_exceptions() {
    for &(name, ..) in FILES {
        for (i, packet) in read(name).1.iter().enumerate() {
            let payload = packet.link_payload();
            match (name, i) {
                // Frame Relay: a link type the reader names but does not decode.
                ("icmp-icmp_print-oobr-2.pcap", _) => {
                    assert_eq!(
                        payload,
                        Err(WireError::UnsupportedLinkType(107)),
                        "{name} #{i}"
                    );
                }
                // BSD loopback record whose "address family" is a Cisco HDLC header (0f 00 08 00).
                ("NullLoopback.pcap", 2) => {
                    assert_eq!(
                        payload,
                        Err(WireError::UnsupportedLinkProtocol(0x0f00_0800))
                    );
                }
                _ => match payload {
                    Ok(LinkPayload::Ethernet(frame)) => assert_eq!(frame, &packet.data[..]),
                    Ok(LinkPayload::Network {
                        ether_type,
                        payload,
                    }) => {
                        assert!(
                            matches!(ether_type, 0x0800 | 0x86dd | 0x8847),
                            "{name} #{i}: EtherType {ether_type:#06x}"
                        );
                        assert!(
                            packet.data.ends_with(payload),
                            "{name} #{i}: payload is a suffix"
                        );
                    }
                    Err(e) => panic!("{name} #{i}: {e}"),
                },
            }
        }
    }
}

#[test]
fn pcapng_files_with_a_pcap_extension_are_recognised() {
    for name in ["IcmpPackets.pcap", "NullLoopback.pcap"] {
        assert_eq!(read(name).0, PcapNg, "{name}");
    }
}

#[test]
fn nanosecond_pcap_keeps_its_nanoseconds() {
    let (_, packets) = read("tcp-handshake-nano.pcap");
    assert!(
        packets
            .iter()
            .any(|p| p.timestamp.subsec_nanos() % 1_000 != 0),
        "no sub-microsecond digits: {:?}",
        packets.iter().map(|p| p.timestamp).collect::<Vec<_>>()
    );
}

#[test]
fn big_endian_pcap() {
    let (_, packets) = read("bigendian.pcap");
    let got: Vec<_> = packets
        .iter()
        .map(|p| (p.timestamp, p.orig_len, p.data.len()))
        .collect();
    assert_eq!(
        got,
        [
            (Duration::new(1_335_958_313, 152_630_000), 98, 98),
            (Duration::new(1_335_958_317, 529_201_000), 98, 98)
        ]
    );
    for packet in &packets {
        assert_eq!(packet.data[12..14], [0x08, 0x00], "EtherType IPv4");
    }
}

#[test]
fn snaplen_truncated_records_keep_their_wire_length() {
    let (_, packets) = read("tcp.pcap");
    assert!(packets.iter().all(|p| p.data.len() <= 96));
    let cut: Vec<_> = packets
        .iter()
        .filter(|p| p.data.len() < p.orig_len as usize)
        .map(|p| (p.data.len(), p.orig_len))
        .collect();
    assert_eq!(cut, [(96, 562), (96, 1514), (96, 349)]);
}

#[test]
fn records_longer_than_the_snaplen_are_cut_to_it_like_libpcap() {
    // snaplen 31, record caplen 34: libpcap (and SOURCES.md: "only 3 ICMP bytes are present"
    // after a 28-byte IPv4 header) see 31 bytes.
    let (_, packets) = read("extract_read2_asan.pcap");
    assert_eq!(packets[0].data.len(), 31);
    assert_eq!(packets[0].orig_len, 65_598);
    // snaplen 35, every record caplen 64, wire lengths 34, 0 and 4130 (invalid record headers).
    let (_, packets) = read("icmp-icmp_print-oobr-2.pcap");
    let got: Vec<_> = packets.iter().map(|p| (p.data.len(), p.orig_len)).collect();
    assert_eq!(got, [(35, 34), (35, 0), (35, 4130)]);
}

#[test]
fn pcapng_timestamps_use_the_interface_resolution() {
    // No if_tsresol: microseconds (2013-02-14).
    let (_, packets) = read("NullLoopback.pcap");
    assert_eq!(
        packets[0].timestamp,
        Duration::new(1_360_854_457, 375_051_000)
    );
    // if_tsresol 6 (2000-02-27 to 2016-01-20: pcap-file alone would say 1970-01-12 and later).
    let (_, packets) = read("IcmpPackets.pcap");
    assert_eq!(
        packets[0].timestamp,
        Duration::new(951_619_590, 815_970_000)
    );
    assert_eq!(
        packets[14].timestamp,
        Duration::new(1_453_277_250, 958_109_000)
    );
    // if_tsresol 9.
    let (_, packets) = read("icmp-length-zero.pcapng");
    assert_eq!(packets[0].timestamp, Duration::new(1_759_756_153, 1_000));
}

#[test]
fn bsd_loopback_families() {
    let (_, packets) = read("NullLoopback.pcap");
    let ether_types: Vec<_> = packets
        .iter()
        .map(|p| match p.link_payload() {
            Ok(LinkPayload::Network { ether_type, .. }) => Some(ether_type),
            _ => None,
        })
        .collect();
    // AF 30 (Darwin AF_INET6), AF 2, and the unknown family.
    assert_eq!(ether_types, [Some(0x86dd), Some(0x0800), None]);
}

#[test]
fn missing_file_is_an_io_error() {
    let err = capture::open(corpus().join("no-such-file.pcap")).unwrap_err();
    assert!(matches!(err, CaptureError::Io(_)), "{err}");
}

/// A small deterministic generator (64-bit LCG, Knuth's MMIX constants).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Read damaged bytes to the end: no panic, a bounded number of items, fused afterwards.
fn read_damaged(name: &str, what: &str, bytes: &[u8]) {
    let Ok(mut reader) = CaptureReader::new(Cursor::new(bytes)) else {
        return;
    };
    // Every record takes at least 16 bytes of the file, so more items than that is a loop.
    let limit = bytes.len() / 16 + 2;
    let mut items = 0;
    for item in reader.by_ref().take(limit + 1) {
        items += 1;
        if let Ok(packet) = item {
            let _ = packet.link_payload();
        }
    }
    assert!(
        items <= limit,
        "{name} ({what}): {items} items from {} bytes",
        bytes.len()
    );
    assert!(
        reader.next().is_none(),
        "{name} ({what}): iterator not fused"
    );
}

#[test]
fn damaged_copies_of_every_file_never_panic_or_loop() {
    let mut rng = Lcg(0x5256_5321);
    for &(name, ..) in FILES {
        let original = fs::read(corpus().join(name)).unwrap();
        // Cut short: every length through the first headers, then spread over the file.
        let mut cuts: Vec<usize> = (0..original.len().min(96)).collect();
        cuts.extend((1..32).map(|k| original.len() * k / 32));
        for cut in cuts {
            read_damaged(name, &format!("cut at {cut}"), &original[..cut]);
        }
        // Overwritten: single bytes, and 32-bit words of 0xff/0x00 where length fields may be.
        for round in 0..96 {
            let mut bytes = original.clone();
            let at = rng.below(bytes.len());
            if round % 2 == 0 {
                bytes[at] = rng.next() as u8;
            } else {
                let fill = if round % 4 == 1 { 0xff } else { 0x00 };
                let end = (at + 4).min(bytes.len());
                bytes[at..end].fill(fill);
            }
            read_damaged(name, &format!("round {round}, offset {at}"), &bytes);
        }
    }
}
