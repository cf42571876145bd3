//! Smoke test of the daemon in every mode and family: 30 GETs through the VIP with `rr` over
//! two workers split 10/10/10, and the per-worker counters add up to what the dataplane saw.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
use rvs_lab::{DirectorLab, DirectorLabOpts, Family, Mode, Rvsd, RvsdOpts, or_skip, service_rules};
use std::path::Path;
use std::time::Duration;

fn run(mode: Mode, fam: Family) {
    let Some(lab) = or_skip(DirectorLab::new(DirectorLabOpts {
        mode,
        ..DirectorLabOpts::default()
    })) else {
        return;
    };
    let vip = lab.addrs().vip.get(fam);
    let opts = RvsdOpts {
        rules: service_rules(&lab, fam, false, 80, "rr"),
        workers: Some(2),
        ..Default::default()
    };
    let d = Rvsd::start(&lab, Path::new(env!("CARGO_BIN_EXE_rvsd")), &opts).unwrap();
    let client = lab.client().unwrap();
    let mut counts = std::collections::BTreeMap::new();
    for _ in 0..30 {
        match client.http_get(vip, 80, "/", Duration::from_secs(3)) {
            Ok(r) => {
                *counts
                    .entry(r.dest.clone().unwrap_or_default())
                    .or_insert(0) += 1
            }
            Err(e) => {
                eprintln!("GET failed: {e}");
                *counts.entry("ERR".to_string()).or_insert(0) += 1
            }
        }
    }
    let c = d.counters().unwrap();
    eprintln!(
        "{mode:?} {fam:?} counts: {counts:?}\ncounters: rx {} fwd {} gen {} local {} drops {:?}",
        c.rx,
        c.forwarded,
        c.generated,
        c.local,
        c.drops.iter().filter(|d| d.count > 0).collect::<Vec<_>>()
    );
    let exit = d.stop().unwrap();
    eprintln!("rvsd exit: {:?}\n{}", exit.code, exit.stderr);
    assert_eq!(counts.values().sum::<i32>(), 30);
    assert_eq!(c.workers.len(), 2);
    assert_eq!(
        c.workers.iter().map(|w| w.frames).sum::<u64>(),
        c.rx,
        "{:?}",
        c.workers
    );
    // At least one SYN per request (a client may retransmit one while a neighbour resolves).
    assert!(
        c.workers.iter().map(|w| w.tcp_syn).sum::<u64>() >= 30,
        "{:?}",
        c.workers
    );
    assert!(!counts.contains_key("ERR"));
}
#[test]
fn smoke_dr_v4() {
    run(Mode::Dr, Family::V4)
}
#[test]
fn smoke_nat_v4() {
    run(Mode::Nat, Family::V4)
}
#[test]
fn smoke_tun_v4() {
    run(Mode::Tun, Family::V4)
}
#[test]
fn smoke_dr_v6() {
    run(Mode::Dr, Family::V6)
}
#[test]
fn smoke_nat_v6() {
    run(Mode::Nat, Family::V6)
}
#[test]
fn smoke_tun_v6() {
    run(Mode::Tun, Family::V6)
}
