//! SIGHUP on the real kernel (issue 6, "Configuration"): a changed rules file adds a dest (NAT:
//! the director must also claim the new dest's replies) and a changed configuration file
//! changes settings, while an established connection keeps flowing through the reload; a
//! broken configuration or rules file is refused with its line and reason and everything
//! stays as it was. The daemon logs JSON lines, as `[log] format = "json"` asks.
//!
//! Needs root: without it the test prints `SKIPPED` and passes, unless `RVS_E2E=1`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use rvs_api::{Reply, Request, Timeouts};
use rvs_lab::{DirectorLab, DirectorLabOpts, Family, Mode, Rvsd, RvsdOpts, or_skip};

const T: Duration = Duration::from_secs(5);

/// Logs as JSON lines.
const JSON_LOG: &str = "[log]\nformat = \"json\"\n";

/// The dests of the one service, with their weights.
fn dests(d: &Rvsd<'_>) -> Vec<(IpAddr, u32)> {
    match d.call(&Request::ListServices { service: None }).unwrap() {
        Reply::Services(l) => l
            .services
            .iter()
            .flat_map(|s| s.dests.iter().map(|x| (x.config.addr, x.config.weight)))
            .collect(),
        other => panic!("{other:?}"),
    }
}

fn timeouts(d: &Rvsd<'_>) -> Timeouts {
    match d.call(&Request::GetTimeouts).unwrap() {
        Reply::Timeouts(t) => t,
        other => panic!("{other:?}"),
    }
}

/// Wait (up to 20 s) until `cond` holds.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A SIGHUP the daemon will reject leaves no visible trace until its log is read: give its
/// main loop (100 ms ticks) ample time to have handled it before the next signal, which would
/// otherwise merge with it. The log, read at the end, proves each one was handled.
fn settle() {
    std::thread::sleep(Duration::from_secs(2));
}

#[test]
fn sighup_adds_a_dest_keeps_connections_and_refuses_broken_files() {
    let Some(lab) = or_skip(DirectorLab::new(DirectorLabOpts {
        mode: Mode::Nat,
        ..DirectorLabOpts::default()
    })) else {
        return;
    };
    let a = lab.addrs();
    let vip = a.vip.get(Family::V4);
    let rip = |i: usize| a.dests[i].get(Family::V4);
    let rules = |n: usize| {
        let mut s = format!("-A -t {vip}:7 -s rr\n");
        for i in 0..n {
            s.push_str(&format!("-a -t {vip}:7 -r {}:7 -m -w 1\n", rip(i)));
        }
        s
    };
    let opts = RvsdOpts {
        rules: rules(2),
        config: Some(format!("timeout_tcp = 900\n{JSON_LOG}")),
        workers: Some(2),
        ..RvsdOpts::default()
    };
    let d = Rvsd::start(&lab, Path::new(env!("CARGO_BIN_EXE_rvsd")), &opts).unwrap();
    let client = lab.client().unwrap();
    let mut kept = client.tcp_connect(vip, 7, T).unwrap();
    kept.echo(b"before", T).unwrap();
    assert_eq!(dests(&d), vec![(rip(0), 1), (rip(1), 1)]);

    // A third dest and new settings.
    let good = format!("timeout_tcp = 600\ntimeout_udp = 60\n{JSON_LOG}");
    let good = good.as_str();
    d.reload(Some(&rules(3)), Some(good)).unwrap();
    wait_for("the third dest", || dests(&d).len() == 3);
    assert_eq!(
        (timeouts(&d).tcp, timeouts(&d).udp),
        (600, 60),
        "the settings of the same reload are in force with its rules"
    );
    kept.echo(b"through the reload", T).unwrap();
    // The new dest takes new connections (through NAT: its replies are claimed too).
    let before = lab.server_stats(2).unwrap().tcp_echo_connections;
    for _ in 0..6 {
        let mut s = client.tcp_connect(vip, 7, T).unwrap();
        s.echo(b"new", T).unwrap();
    }
    assert!(
        lab.server_stats(2).unwrap().tcp_echo_connections >= before + 2,
        "rr over three dests gives the new one its share"
    );

    // A broken configuration (line 3) with a rules change: neither applies.
    d.reload(
        Some(&rules(1)),
        Some("timeout_tcp = 30\n[service.\"tcp/203.0.113.10:7\"]\nbogus = true\n"),
    )
    .unwrap();
    settle();
    assert_eq!(dests(&d).len(), 3);
    assert_eq!(timeouts(&d).tcp, 600);
    // A broken rules file (line 2 names a service that does not exist) with a settings change.
    d.reload(
        Some(&format!(
            "{}-a -t {vip}:8 -r {}:8 -m -w 1\n",
            rules(0),
            rip(0)
        )),
        Some("timeout_tcp = 30\n"),
    )
    .unwrap();
    settle();
    assert_eq!(dests(&d).len(), 3);
    assert_eq!(timeouts(&d).tcp, 600);
    kept.echo(b"after the refusals", T).unwrap();

    // Good files again: dest 2 drained by weight 0, the established session unaffected.
    d.reload(
        Some(&rules(3).replace(
            &format!("{}:7 -m -w 1", rip(2)),
            &format!("{}:7 -m -w 0", rip(2)),
        )),
        Some(good),
    )
    .unwrap();
    wait_for("dest 2 drained", || dests(&d).contains(&(rip(2), 0)));
    let before = lab.server_stats(2).unwrap().tcp_echo_connections;
    for _ in 0..4 {
        let mut s = client.tcp_connect(vip, 7, T).unwrap();
        s.echo(b"drained", T).unwrap();
    }
    assert_eq!(lab.server_stats(2).unwrap().tcp_echo_connections, before);
    kept.echo(b"at the end", T).unwrap();
    drop(kept);

    let exit = d.stop().unwrap();
    let log = &exit.stderr;
    assert_eq!(exit.code, Some(0), "{log}");
    // `[log] format = "json"`: one JSON object per line, the message in `fields.message`.
    let messages: Vec<String> = log
        .lines()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
            assert!(v["level"].is_string(), "{l}");
            v["fields"]["message"].as_str().unwrap().to_owned()
        })
        .collect();
    let lines = |needle: &str| {
        messages
            .iter()
            .filter(|l| l.contains(needle))
            .collect::<Vec<_>>()
    };
    assert_eq!(lines("SIGHUP: configuration reloaded").len(), 2, "{log}");
    let rejected = lines("SIGHUP: configuration rejected");
    assert_eq!(rejected.len(), 2, "{log}");
    assert!(
        rejected[0].contains("line 3") && rejected[0].contains("bogus"),
        "{log}"
    );
    assert!(
        rejected[1].contains("line 2") && rejected[1].contains("No such service"),
        "{log}"
    );
}
