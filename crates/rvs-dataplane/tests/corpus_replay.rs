//! The public capture corpus through the dataplane: services are created on the corpus's own
//! TCP/UDP destinations (rotating NAT, DR and TUN), so its traffic is scheduled, forwarded,
//! fragmented and answered — and no packet, nor a corrupted variant of one, may panic the
//! director. Every output frame must parse and carry valid checksums.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::OnceLock;

use proptest::prelude::*;
use rvs_core::director::Director;
use rvs_core::rules::parse_rules;
use rvs_core::settings::Settings;
use rvs_dataplane::{Dataplane, DataplaneConfig, Frame, Verdict};
use rvs_wire::capture::{self, LinkPayload};
use rvs_wire::parse::Transport;

fn corpus_frames() -> &'static Vec<(u64, Vec<u8>)> {
    static F: OnceLock<Vec<(u64, Vec<u8>)>> = OnceLock::new();
    F.get_or_init(|| {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/corpus/pcap");
        assert!(
            std::path::Path::new(dir).is_dir(),
            "corpus missing at {dir}"
        );
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "pcap" || e == "pcapng"))
            .collect();
        names.sort();
        let mut out = Vec::new();
        for n in names {
            for (i, p) in capture::open(&n).unwrap().map_while(Result::ok).enumerate() {
                let frame = match p.link_payload() {
                    Ok(LinkPayload::Ethernet(f)) => f.to_vec(),
                    Ok(LinkPayload::Network {
                        ether_type,
                        payload,
                    }) => {
                        let mut f = common::DIR_MAC.to_vec();
                        f.extend_from_slice(&common::GW_MAC);
                        f.extend_from_slice(&ether_type.to_be_bytes());
                        f.extend_from_slice(payload);
                        f
                    }
                    Err(_) => continue,
                };
                out.push((i as u64 * 1_000_000, frame));
            }
        }
        out
    })
}

/// Rules with a service on every TCP/UDP destination seen in the corpus.
fn corpus_rules() -> String {
    let mut dsts = BTreeSet::new();
    for (_, f) in corpus_frames() {
        if let Ok(p) = rvs_wire::parse::parse_ethernet(f)
            && let Some(ip) = p.ip()
        {
            match ip.transport {
                Transport::Tcp { dport, .. } => dsts.insert(("-t", ip.dst, dport)),
                Transport::Udp { dport, .. } => dsts.insert(("-u", ip.dst, dport)),
                _ => false,
            };
        }
    }
    let mut rules = String::new();
    for (i, (p, addr, port)) in dsts.iter().enumerate() {
        let vip = std::net::SocketAddr::new(*addr, *port);
        let (m, rip) = match (i % 3, addr) {
            (0, IpAddr::V4(_)) => ("-m", "198.51.100.11:8080".to_string()),
            (0, IpAddr::V6(_)) => ("-m", "[2001:db8:2::11]:8080".to_string()),
            (1, IpAddr::V4(_)) => ("-g", format!("198.51.100.12:{port}")),
            (1, IpAddr::V6(_)) => ("-g", format!("[2001:db8:2::12]:{port}")),
            (_, IpAddr::V4(_)) => ("-i", format!("198.51.100.13:{port}")),
            (_, IpAddr::V6(_)) => ("-i", format!("[2001:db8:2::13]:{port}")),
        };
        rules.push_str(&format!(
            "-A {p} {vip} -s rr\n-a {p} {vip} -r {rip} {m} -w 1\n"
        ));
    }
    rules
}

fn dataplane() -> Dataplane {
    let mut d = Director::new(Settings::default());
    for r in parse_rules(&corpus_rules()).unwrap() {
        d.apply(&r, 0).unwrap();
    }
    let cfg = DataplaneConfig {
        addrs: vec![common::DIR4.into(), common::DIR6.into()],
        mtu: 1500,
        ..Default::default()
    };
    Dataplane::new(d, cfg)
}

#[test]
fn whole_corpus_through_the_dataplane() {
    let mut dp = dataplane();
    let n = dp.director().services().len();
    assert!(n >= 40, "too few services from the corpus: {n}");
    let (mut transmit, mut reply) = (0, 0);
    let mut extra = Vec::new();
    for (now, f) in corpus_frames() {
        dp.housekeeping(*now);
        // Forwarding keeps a checksum that was wrong on arrival (captures taken at a sender with
        // offload show unfinished ones); one that was right must stay right.
        let input_ok = common::checksums(f).is_ok();
        let mut frame = Frame::from_bytes(f);
        extra.clear();
        match dp.process(&mut frame, *now, &mut extra) {
            Verdict::Transmit { .. } => {
                transmit += 1;
                if input_ok {
                    common::verify_checksums(frame.data());
                }
            }
            Verdict::Reply { .. } => {
                reply += 1;
                common::verify_checksums(frame.data());
            }
            _ => {}
        }
        for t in &extra {
            if t.generated || input_ok {
                common::verify_checksums(t.frame.data());
            }
        }
    }
    assert!(transmit > 300, "only {transmit} forwarded");
    assert!(reply > 0, "no reply generated");
    assert_eq!(dp.counters().rx as usize, corpus_frames().len());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]
    /// Corrupted corpus frames (bit flips, truncation) never panic the dataplane, and anything it
    /// transmits still parses with valid checksums.
    #[test]
    fn corrupted_corpus_frames_never_panic(
        which in any::<prop::sample::Index>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 0u8..8), 0..6),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        static DP: OnceLock<std::sync::Mutex<Dataplane>> = OnceLock::new();
        let dp = DP.get_or_init(|| std::sync::Mutex::new(dataplane()));
        let mut dp = dp.lock().unwrap_or_else(|e| e.into_inner());
        let frames = corpus_frames();
        let (now, f) = &frames[which.index(frames.len())];
        let mut f = f.clone();
        if f.is_empty() {
            return Ok(());
        }
        for (at, bit) in flips {
            let i = at.index(f.len());
            f[i] ^= 1 << bit;
        }
        if let Some(c) = cut {
            f.truncate(c.index(f.len() + 1));
        }
        let mut frame = Frame::from_bytes(&f);
        let mut extra = Vec::new();
        dp.housekeeping(*now);
        if let Verdict::Transmit { .. } | Verdict::Reply { .. } = dp.process(&mut frame, *now, &mut extra) {
            // A corrupted input may carry a corrupted checksum, which forwarding keeps (routers do
            // not verify L4 checksums); what must hold is that the output parses.
            prop_assert!(etherparse::SlicedPacket::from_ethernet(frame.data()).is_ok()
                || rvs_wire::parse::parse_ethernet(frame.data()).is_err());
        }
    }
}
