//! `rvsd replay` as a binary: a generated capture through the dataplane, outputs checked.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
use rvs_wire::capture::{self, CaptureWriter};

const DIR_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const GW_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xfe];
const RIP_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x11];
const VIP: [u8; 4] = [203, 0, 113, 10];
const CIP: [u8; 4] = [192, 0, 2, 1];
const RIP_NAT: [u8; 4] = [198, 51, 100, 12];

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rvsd-replay-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn eth_tcp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, syn: bool) -> Vec<u8> {
    let mut t = PacketBuilder::ethernet2(GW_MAC, DIR_MAC)
        .ipv4(src, dst, 64)
        .tcp(sport, dport, 100, 1000);
    t = if syn { t.syn() } else { t.ack(1) };
    let mut v = Vec::new();
    t.write(&mut v, b"").unwrap();
    v
}

fn eth_udp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(GW_MAC, DIR_MAC)
        .ipv4(src, dst, 64)
        .udp(sport, dport)
        .write(&mut v, b"query")
        .unwrap();
    v
}

fn write_capture(path: &Path, frames: &[Vec<u8>]) {
    let mut w = CaptureWriter::new(std::fs::File::create(path).unwrap()).unwrap();
    for (i, f) in frames.iter().enumerate() {
        w.write(Duration::from_millis(1_700_000_000_000 + i as u64 * 10), f)
            .unwrap();
    }
}

fn rvsd(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rvsd"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn base_args<'a>(d: &'a str, rules: &'a str, input: &'a str) -> Vec<String> {
    [
        "replay",
        "--rules",
        rules,
        "--input",
        input,
        "--output",
        &format!("{d}/out.pcap"),
        "--verdicts",
        &format!("{d}/out.jsonl"),
        "--mac",
        "02:00:00:00:00:01",
        "--addr",
        "198.51.100.2",
        "--gateway-mac",
        "02:00:00:00:00:fe",
        "--neighbor",
        "198.51.100.11=02:00:00:00:00:11",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn replay_dr_and_nat_with_verdicts() {
    let d = tmpdir("ok");
    let ds = d.to_str().unwrap();
    let rules = d.join("rules");
    std::fs::write(
        &rules,
        "-A -t 203.0.113.10:80 -s rr\n-a -t 203.0.113.10:80 -r 198.51.100.11:80 -g -w 1\n\
         -A -u 203.0.113.10:53 -s rr\n-a -u 203.0.113.10:53 -r 198.51.100.12:5353 -m -w 1\n",
    )
    .unwrap();
    let input = d.join("in.pcap");
    let frames = vec![
        eth_tcp(CIP, VIP, 40000, 80, true),  // 0: SYN → DR to RIP
        eth_tcp(CIP, VIP, 40000, 80, false), // 1: ACK, same conn
        eth_udp(CIP, VIP, 5000, 53),         // 2: UDP → NAT to RIP_NAT:5353
        eth_udp(RIP_NAT, CIP, 5353, 5000),   // 3: NAT reply → from VIP:53
        eth_tcp(CIP, VIP, 40001, 81, true),  // 4: no service on port 81 → local
        eth_tcp(CIP, VIP, 40002, 80, false), // 5: ACK without conn → RST from VIP
        {
            // 6: an IPv4 EtherType with a truncated header → drop malformed
            let mut f = eth_tcp(CIP, VIP, 1, 80, true);
            f.truncate(14 + 10);
            f
        },
    ];
    write_capture(&input, &frames);
    let args = base_args(ds, rules.to_str().unwrap(), input.to_str().unwrap());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, err) = rvsd(&args);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("7 packets in, 5 frames out"), "{err}");
    assert_eq!(err.matches("dropped (malformed)").count(), 1, "{err}");

    let lines: Vec<serde_json::Value> = std::fs::read_to_string(d.join("out.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 7);
    let verdicts: Vec<&str> = lines
        .iter()
        .map(|l| l["verdict"].as_str().unwrap())
        .collect();
    assert_eq!(
        verdicts,
        [
            "transmit", "transmit", "transmit", "transmit", "local", "reply", "drop"
        ]
    );
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["index"], i);
    }
    assert_eq!(lines[0]["dest"], "198.51.100.11:80");
    assert_eq!(lines[2]["dest"], "198.51.100.12:5353");
    assert!(
        lines[3].get("dest").is_none(),
        "a reply to the client goes to no dest"
    );
    assert_eq!(lines[6]["reason"], "malformed");

    let out: Vec<_> = capture::open(d.join("out.pcap"))
        .unwrap()
        .map(|p| p.unwrap())
        .collect();
    assert_eq!(out.len(), 5);
    // Frame 0: DR to the on-link neighbour's MAC, L3 as sent but TTL 63.
    assert_eq!(&out[0].data[0..6], &RIP_MAC);
    assert_eq!(&out[0].data[6..12], &DIR_MAC);
    let s = SlicedPacket::from_ethernet(&out[0].data).unwrap();
    let Some(etherparse::NetSlice::Ipv4(v4)) = &s.net else {
        panic!()
    };
    assert_eq!(v4.header().destination(), VIP);
    assert_eq!(v4.header().ttl(), 63);
    // Timestamps are the input's.
    assert_eq!(out[0].timestamp, Duration::from_millis(1_700_000_000_000));
    // Frame 2: NAT to 198.51.100.12:5353 — not a --neighbor, so via the gateway MAC.
    assert_eq!(&out[2].data[0..6], &GW_MAC);
    let s = SlicedPacket::from_ethernet(&out[2].data).unwrap();
    let Some(etherparse::NetSlice::Ipv4(v4)) = &s.net else {
        panic!()
    };
    assert_eq!(v4.header().destination(), RIP_NAT);
    let Some(TransportSlice::Udp(u)) = &s.transport else {
        panic!()
    };
    assert_eq!(u.destination_port(), 5353);
    // Frame 3: the reply leaves from the VIP:53.
    let s = SlicedPacket::from_ethernet(&out[3].data).unwrap();
    let Some(etherparse::NetSlice::Ipv4(v4)) = &s.net else {
        panic!()
    };
    assert_eq!(
        IpAddr::from(v4.header().source()),
        IpAddr::V4(Ipv4Addr::from(VIP))
    );
    let Some(TransportSlice::Udp(u)) = &s.transport else {
        panic!()
    };
    assert_eq!(u.source_port(), 53);
    // Frame 4: the RST for the unknown connection, from VIP:80, seq = the segment's ACK.
    let s = SlicedPacket::from_ethernet(&out[4].data).unwrap();
    let Some(etherparse::NetSlice::Ipv4(v4)) = &s.net else {
        panic!()
    };
    assert_eq!(v4.header().source(), VIP);
    assert_eq!(v4.header().destination(), CIP);
    let Some(TransportSlice::Tcp(t)) = &s.transport else {
        panic!()
    };
    assert!(t.rst());
    assert_eq!((t.source_port(), t.destination_port()), (80, 40002));
    assert_eq!(t.sequence_number(), 1);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn drop_log_is_rate_limited_not_per_packet() {
    let d = tmpdir("flood");
    let ds = d.to_str().unwrap();
    let rules = d.join("rules");
    std::fs::write(&rules, "-A -t 203.0.113.10:80 -s rr\n").unwrap();
    // 500 malformed frames within 5 s of capture time: one log line, not 500.
    let mut bad = eth_tcp(CIP, VIP, 1, 80, true);
    bad.truncate(14 + 10);
    let frames: Vec<Vec<u8>> = (0..500).map(|_| bad.clone()).collect();
    let input = d.join("in.pcap");
    write_capture(&input, &frames);
    let args = base_args(ds, rules.to_str().unwrap(), input.to_str().unwrap());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, err) = rvsd(&args);
    assert_eq!(code, 0, "{err}");
    assert_eq!(err.matches("dropped (malformed)").count(), 1, "{err}");
    assert!(err.contains("drop 500"), "{err}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn bad_rules_settings_and_flags_exit_2_and_process_nothing() {
    let d = tmpdir("bad");
    let ds = d.to_str().unwrap();
    let input = d.join("in.pcap");
    write_capture(&input, &[eth_tcp(CIP, VIP, 1, 80, true)]);
    let good = d.join("good");
    std::fs::write(&good, "-A -t 203.0.113.10:80 -s rr\n").unwrap();
    let bad = d.join("bad");
    std::fs::write(
        &bad,
        "-A -t 203.0.113.10:80 -s rr\n-a -t 203.0.113.10:80 -r 198.51.100.11 -w 70000\n",
    )
    .unwrap();

    let run = |rules: &Path, extra: &[&str]| {
        let mut a = base_args(ds, rules.to_str().unwrap(), input.to_str().unwrap());
        a.extend(extra.iter().map(|s| s.to_string()));
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        rvsd(&a)
    };
    let (code, err) = run(&bad, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("line 2") && err.contains("70000"), "{err}");
    assert!(
        !d.join("out.pcap").exists(),
        "nothing may be written on a usage error"
    );

    let (code, err) = run(&good, &["--set", "pmtu_disc=maybe"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("pmtu_disc"), "{err}");
    let (code, err) = run(&good, &["--set", "no_such_setting=1"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no_such_setting"), "{err}");
    let (code, err) = run(&good, &["--mtu", "12"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--mtu"), "{err}");
    let (code, err) = run(&good, &["--neighbor", "198.51.100.11"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--neighbor"), "{err}");
    assert!(!d.join("out.pcap").exists());
    // A settings file with an unknown key is refused too.
    let cfg = d.join("rvs.toml");
    std::fs::write(&cfg, "schedule_icmp = 1\nbogus = 2\n").unwrap();
    let (code, err) = run(&good, &["--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("bogus"), "{err}");
    // A per-service section with an unknown key, or a bad service name, is refused too.
    std::fs::write(
        &cfg,
        "[service.\"tcp/203.0.113.10:80\"]\nexpired_reply = \"icmp\"\nbogus = 1\n",
    )
    .unwrap();
    let (code, err) = run(&good, &["--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("bogus"), "{err}");
    std::fs::write(
        &cfg,
        "[service.\"sctp/203.0.113.10:80\"]\nexpired_reply = \"icmp\"\n",
    )
    .unwrap();
    let (code, err) = run(&good, &["--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("sctp/203.0.113.10:80"), "{err}");
    // And a good file is accepted: settings plus a per-service policy that takes effect (the
    // SYN to a service without dests is dropped by its policy instead of answered).
    std::fs::write(
        &cfg,
        "schedule_icmp = 1\nexpire_nodest_conn = true\n\
         [service.\"tcp/203.0.113.10:80\"]\nnodest_reply = \"drop\"\n",
    )
    .unwrap();
    let (code, err) = run(&good, &["--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let v = std::fs::read_to_string(d.join("out.jsonl")).unwrap();
    assert!(v.contains("\"reason\":\"no_dest\""), "{v}");
    let _ = std::fs::remove_dir_all(&d);
}
