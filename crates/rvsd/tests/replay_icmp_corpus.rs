//! Every ICMP-bearing capture of the public corpus (`shared/corpus/pcap/`) through the `rvsd`
//! binary's `replay`, with rules that balance the flows its ICMP errors quote: a service on each
//! quoted *source* (the VIP side of the flow: the quoted packet is one the error's recipient
//! sent), dests rotating NAT, DR and TUN. Each file is replayed twice — default settings, and
//! `schedule_icmp=1` so errors about flows the capture never opened are scheduled and forwarded.
//! No run may fail or panic, every input packet must get exactly one valid verdict line, and
//! with `schedule_icmp=1` some errors must be transmitted.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;

use rvs_wire::capture;
use rvs_wire::parse::{IpInfo, proto};
use rvs_wire::quote;

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/corpus/pcap");

/// The files SOURCES.md lists as carrying ICMP (sections A–E, and the echo / options files of
/// F), including those whose ICMP is malformed, truncated or inside a tunnel — which a scan of
/// parsable top-level ICMP alone would miss.
const LISTED: &[&str] = &[
    "smtp.pcap",
    "filestore-5408_input.pcap",
    "yanet_014_icmp_error_001-send.pcap",
    "yanet_014_icmp_error_002-send.pcap",
    "yanet_014_icmp_error_003-send.pcap",
    "yanet_014_icmp_error_004-send.pcap",
    "yanet_014_icmp_error_005-send.pcap",
    "yanet_014_icmp_error_007-send.pcap",
    "yanet_014_icmp_error_009-send.pcap",
    "yanet_015_nat64stateless_firewall_002-send.pcap",
    "yanet_081_time_exceeded_in_transit_001-expect.pcap",
    "icmp-destunreach-udp.pcap",
    "icmp-timeexceeded.pcap",
    "IcmpPackets.pcap",
    "icmp-hdr-02_input.pcap",
    "mpls-traceroute.pcap",
    "icmp-rfc5837.pcap",
    "icmp-cksum-oobr-1.pcap",
    "icmp-cksum-oobr-2.pcap",
    "icmp-cksum-oobr-3.pcapng",
    "icmp-cksum-oobr-4.pcapng",
    "extract_read2_asan.pcap",
    "icmp-icmp_print-oobr-2.pcap",
    "icmp-length-zero.pcapng",
    "icmp-destunreach-ip.pcap",
    "icmp-destunreach-no-context.pcap",
    "ip4-icmp-bad-chksum.pcap",
    "icmp6-toobig.pcap",
    "toobig.pcap",
    "6in4tunnel.pcap",
    "icmp6.pcap",
    "kill_router6.pcap",
    "icmp6-paramprob.pcap",
    "icmp6-destunreach-ip6ext-udp.pcap",
    "icmp6-destunreach-ip6ext-trunc.pcap",
    "icmp6-destunreach-no-context.pcap",
    "icmpv6-rfc7112.pcap",
    "frag-11.pcap",
    "icmp6-redirect.pcap",
    "ip6-icmp6-bad-chksum.pcap",
    "gre-sample.pcap",
    "gtp-iphone.pcap",
    "bigendian.pcap",
    "ipv4-options.pcap",
];

const VERDICTS: [&str; 5] = ["transmit", "reply", "local", "held", "drop"];

/// A temporary directory removed when dropped (also when the test fails).
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("rvs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What a scan of one capture found.
#[derive(Debug, Default)]
struct Scan {
    /// Records the capture reader yields (each must get a verdict line).
    packets: usize,
    /// True when some record parses as ICMP / ICMPv6.
    has_icmp: bool,
    /// Indexes of the records that are ICMP errors.
    errors: BTreeSet<usize>,
    /// Services to create: (TCP?, quoted source address:port).
    services: BTreeSet<(bool, SocketAddr)>,
}

/// The ICMP message of a parsed packet, if it is an ICMP error: (IPv6?, message bytes).
fn icmp_error<'a>(bytes: &'a [u8], ip: &IpInfo) -> Option<(bool, &'a [u8])> {
    if !matches!(ip.protocol, proto::ICMP | proto::ICMPV6) || !ip.is_icmp_error() {
        return None;
    }
    Some((!ip.is_ipv4(), bytes.get(ip.l4_offset..ip.end())?))
}

/// A quoted source worth a service: a single host, a non-zero port (port-0 services need
/// persistence).
fn usable(a: SocketAddr) -> bool {
    let host = match a.ip() {
        IpAddr::V4(v) => {
            !(v.is_unspecified() || v.is_multicast() || v.is_broadcast() || v.is_loopback())
        }
        IpAddr::V6(v) => !(v.is_unspecified() || v.is_multicast() || v.is_loopback()),
    };
    host && a.port() != 0
}

fn scan(path: &Path) -> Scan {
    let mut s = Scan::default();
    for (i, rec) in capture::open(path).unwrap().enumerate() {
        let rec = rec.unwrap_or_else(|e| panic!("{}: record {i}: {e}", path.display()));
        s.packets += 1;
        let Ok(lp) = rec.link_payload() else { continue };
        let Ok(parsed) = lp.parse() else { continue };
        let Some(ip) = parsed.ip() else { continue };
        if matches!(ip.protocol, proto::ICMP | proto::ICMPV6) {
            s.has_icmp = true;
        }
        let Some((v6, msg)) = icmp_error(lp.bytes(), ip) else {
            continue;
        };
        s.errors.insert(i);
        let e = if v6 {
            quote::read_icmpv6_error(msg)
        } else {
            quote::read_icmpv4_error(msg)
        };
        let Ok(e) = e else { continue };
        let q = e.quote;
        if !matches!(q.protocol, proto::TCP | proto::UDP) {
            continue;
        }
        if let Ok(k) = q.key() {
            let vip = SocketAddr::new(k.src, k.sport);
            if usable(vip) {
                s.services.insert((q.protocol == proto::TCP, vip));
            }
        }
    }
    s
}

/// ipvsadm-save rules: a service on every quoted source, dests rotating NAT / DR / TUN, plus a
/// fixed service so no rules file is empty.
fn rules(services: &BTreeSet<(bool, SocketAddr)>) -> String {
    let mut r = String::from(
        "-A -t 203.0.113.10:80 -s rr\n-a -t 203.0.113.10:80 -r 198.51.100.11:80 -g -w 1\n",
    );
    for (i, (tcp, vip)) in services.iter().enumerate() {
        let p = if *tcp { "-t" } else { "-u" };
        let port = vip.port();
        let (m, rip) = match (i % 3, vip.ip()) {
            (0, IpAddr::V4(_)) => ("-m", "198.51.100.11:8080".to_string()),
            (0, IpAddr::V6(_)) => ("-m", "[2001:db8:2::11]:8080".to_string()),
            (1, IpAddr::V4(_)) => ("-g", format!("198.51.100.12:{port}")),
            (1, IpAddr::V6(_)) => ("-g", format!("[2001:db8:2::12]:{port}")),
            (_, IpAddr::V4(_)) => ("-i", format!("198.51.100.13:{port}")),
            (_, IpAddr::V6(_)) => ("-i", format!("[2001:db8:2::13]:{port}")),
        };
        r.push_str(&format!(
            "-A {p} {vip} -s rr\n-a {p} {vip} -r {rip} {m} -w 1\n"
        ));
    }
    r
}

/// Run `rvsd replay`; returns the verdict of each input packet.
fn replay(dir: &Path, tag: &str, rules: &Path, input: &Path, sets: &[&str]) -> Vec<String> {
    let out = dir.join(format!("{tag}.pcap"));
    let verdicts = dir.join(format!("{tag}.jsonl"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rvsd"));
    cmd.arg("replay")
        .arg("--rules")
        .arg(rules)
        .arg("--input")
        .arg(input)
        .arg("--output")
        .arg(&out)
        .arg("--verdicts")
        .arg(&verdicts)
        .args([
            "--mac",
            "02:00:00:00:00:01",
            "--addr",
            "198.51.100.2",
            "--addr",
            "2001:db8:2::2",
            "--gateway-mac",
            "02:00:00:00:00:fe",
        ]);
    for s in sets {
        cmd.args(["--set", s]);
    }
    let res = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&res.stderr);
    let name = input.file_name().unwrap().to_string_lossy();
    assert_eq!(
        res.status.code(),
        Some(0),
        "{name} ({tag}): rvsd replay failed: {stderr}"
    );
    assert!(
        !stderr.contains("panicked"),
        "{name} ({tag}): panic: {stderr}"
    );
    let drop_names: BTreeSet<&str> = rvs_dataplane::DropReason::ALL
        .iter()
        .map(|r| r.name())
        .collect();
    let text = std::fs::read_to_string(&verdicts).unwrap();
    let mut got = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("{name} ({tag}) line {i}: {e}: {line}"));
        assert_eq!(v["index"], i, "{name} ({tag}) line {i}: {line}");
        let verdict = v["verdict"].as_str().unwrap_or_default().to_string();
        assert!(
            VERDICTS.contains(&verdict.as_str()),
            "{name} ({tag}) line {i}: bad verdict: {line}"
        );
        if verdict == "drop" {
            let r = v["reason"].as_str().unwrap_or_default();
            assert!(
                drop_names.contains(r),
                "{name} ({tag}) line {i}: bad drop reason: {line}"
            );
        }
        got.push(verdict);
    }
    // What the director transmitted is a readable capture of parsable Ethernet frames.
    for (i, p) in capture::open(&out).unwrap().enumerate() {
        let p = p.unwrap_or_else(|e| panic!("{name} ({tag}) output record {i}: {e}"));
        assert!(
            etherparse::SlicedPacket::from_ethernet(&p.data).is_ok(),
            "{name} ({tag}) output frame {i} does not parse"
        );
    }
    got
}

#[test]
fn icmp_corpus_replays_with_balanced_flows() {
    let dir = Path::new(CORPUS);
    assert!(dir.is_dir(), "corpus missing at {CORPUS}");
    for f in LISTED {
        assert!(dir.join(f).is_file(), "corpus file missing: {f}");
    }
    // Every listed file, and any other whose records parse as ICMP.
    let mut files: BTreeMap<String, Scan> = BTreeMap::new();
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pcap" || e == "pcapng"))
        .collect();
    names.sort();
    for p in names {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let s = scan(&p);
        if s.has_icmp || LISTED.contains(&name.as_str()) {
            files.insert(name, s);
        }
    }
    assert!(files.len() >= LISTED.len(), "{} files", files.len());

    let tmp = TempDir::new("icmp-corpus");
    let (mut errors, mut sent_default, mut sent_scheduled, mut services) = (0, 0, 0, 0);
    let mut report = Vec::new();
    for (name, s) in &files {
        let input = dir.join(name);
        let rules_path = tmp.0.join(format!("{name}.rules"));
        std::fs::write(&rules_path, rules(&s.services)).unwrap();
        let plain = replay(&tmp.0, &format!("{name}.default"), &rules_path, &input, &[]);
        let sched = replay(
            &tmp.0,
            &format!("{name}.sched"),
            &rules_path,
            &input,
            &["schedule_icmp=1"],
        );
        for v in [&plain, &sched] {
            assert_eq!(
                v.len(),
                s.packets,
                "{name}: {} verdict lines for {} packets",
                v.len(),
                s.packets
            );
        }
        let sent = |v: &[String]| s.errors.iter().filter(|&&i| v[i] == "transmit").count();
        let (a, b) = (sent(&plain), sent(&sched));
        report.push(format!(
            "{name}: {} packets, {} ICMP errors, {} services; errors transmitted {a} (default) / {b} (schedule_icmp=1)",
            s.packets,
            s.errors.len(),
            s.services.len()
        ));
        assert!(
            b >= a,
            "{name}: schedule_icmp=1 forwarded fewer errors ({b}) than the default ({a})"
        );
        errors += s.errors.len();
        services += s.services.len();
        sent_default += a;
        sent_scheduled += b;
    }
    eprintln!("{}", report.join("\n"));
    assert!(
        errors > 150,
        "only {errors} ICMP errors found in the corpus"
    );
    assert!(services > 20, "only {services} services derived");
    // Errors about flows the capture itself opened (smtp.pcap, filestore-5408) are forwarded
    // with the default settings already.
    assert!(
        sent_default > 0,
        "by default no error about a flow of the capture was transmitted"
    );
    assert!(
        sent_scheduled > sent_default,
        "with schedule_icmp=1 no error was transmitted ({errors} errors)"
    );
    eprintln!(
        "{} files, {errors} errors: {sent_default} transmitted by default, {sent_scheduled} with schedule_icmp=1",
        files.len()
    );
}
