//! The daemon's life on a real host (issue 5, "rvsd, the daemon"): what it installs on start
//! (its nftables table, its TAP) is gone after SIGTERM and SIGINT, with exit status 0 and a
//! log that says why it stopped; a table and TAP left by a crash (SIGKILL) are replaced by the
//! next start; a bad interface or rules file fails clearly before anything is installed; and
//! a VIP-less director (VIP routed to it, not configured on it) balances and sources its RSTs
//! from the VIP.
//!
//! Needs root: without it every test prints `SKIPPED` and passes, unless `RVS_E2E=1`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use rvs_lab::{
    ClientError, DirectorLab, DirectorLabOpts, Family, Mode, Rvsd, RvsdOpts, or_skip, service_rules,
};

fn rvsd_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_rvsd"))
}

fn lab(mode: Mode, vip_local: bool) -> Option<DirectorLab> {
    or_skip(DirectorLab::new(DirectorLabOpts {
        mode,
        vip_local,
        ..DirectorLabOpts::default()
    }))
}

/// `nft list tables` and `ip -br link` inside the director's namespace.
fn director_state(lab: &DirectorLab) -> (String, String) {
    let d = lab.hosts().director;
    let nft = lab.lab().exec(d, &["nft", "list", "tables"]).unwrap();
    let links = lab.lab().exec(d, &["ip", "-br", "link"]).unwrap();
    (
        String::from_utf8_lossy(&nft.stdout).into_owned(),
        String::from_utf8_lossy(&links.stdout).into_owned(),
    )
}

fn has_table(nft: &str) -> bool {
    nft.lines().any(|l| l.trim() == "table netdev rvsd")
}

fn has_tap(links: &str) -> bool {
    links
        .lines()
        .any(|l| l.split_whitespace().next() == Some("rvs0"))
}

fn ten_gets(lab: &DirectorLab, family: Family) -> usize {
    let vip = lab.addrs().vip.get(family);
    let client = lab.client().unwrap();
    (0..10)
        .filter(|_| {
            client
                .http_get(vip, 80, "/", Duration::from_secs(5))
                .is_ok()
        })
        .count()
}

fn signal(pid: u32, sig: &str) {
    let st = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success(), "kill {sig} {pid}");
}

/// The pid of the rvsd serving the lab's director namespace (from `ip netns pids`).
fn rvsd_pid(lab: &DirectorLab) -> u32 {
    let ns = lab.director_netns().unwrap();
    let out = Command::new("ip")
        .args(["netns", "pids", &ns])
        .output()
        .unwrap();
    let pids: Vec<u32> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "rvsd")
        })
        .collect();
    assert_eq!(pids.len(), 1, "exactly one rvsd in {ns}: {pids:?}");
    pids[0]
}

/// SIGTERM and SIGINT: exit status 0, the log names the signal, the nftables table and the TAP
/// are gone. If the teardown were skipped, the table and TAP would still be listed.
#[test]
fn sigterm_and_sigint_stop_cleanly_and_remove_what_rvsd_installed() {
    let Some(lab) = lab(Mode::Dr, true) else {
        return;
    };
    for (sig, name) in [("-TERM", "SIGTERM"), ("-INT", "SIGINT")] {
        let opts = RvsdOpts {
            rules: service_rules(&lab, Family::V4, false, 80, "rr"),
            workers: Some(2),
            ..RvsdOpts::default()
        };
        let d = Rvsd::start(&lab, rvsd_bin(), &opts).unwrap();
        let (nft, links) = director_state(&lab);
        assert!(has_table(&nft), "table installed on start: {nft}");
        assert!(has_tap(&links), "TAP created on start: {links}");
        assert_eq!(ten_gets(&lab, Family::V4), 10, "balancing works");
        signal(rvsd_pid(&lab), sig);
        let deadline = Instant::now() + Duration::from_secs(10);
        while has_table(&director_state(&lab).0) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let exit = d.stop().unwrap();
        assert_eq!(
            exit.code,
            Some(0),
            "{name}: exit status; log:\n{}",
            exit.stderr
        );
        assert!(
            exit.stderr.contains(&format!("stopping on {name}")),
            "{name}: the log says why it stopped:\n{}",
            exit.stderr
        );
        assert!(
            exit.stderr.contains("nftables table rvsd removed"),
            "{name}: the log says the table was removed:\n{}",
            exit.stderr
        );
        let (nft, links) = director_state(&lab);
        assert!(!has_table(&nft), "{name}: table removed: {nft}");
        assert!(!has_tap(&links), "{name}: TAP removed: {links}");
        // Without the director the VIP's service is gone: the host (VIP on lo, no listener)
        // refuses. Proves the GETs above went through rvsd, not through something else.
        let client = lab.client().unwrap();
        let vip = lab.addrs().vip.get(Family::V4);
        assert!(matches!(
            client.http_get(vip, 80, "/", Duration::from_secs(3)),
            Err(ClientError::Refused)
        ));
    }
}

/// A crash (SIGKILL) leaves the table behind: the host still drops the service's packets. The
/// next start replaces it and works; its own stop removes it.
#[test]
fn a_table_left_by_a_crash_is_replaced_on_the_next_start() {
    let Some(lab) = lab(Mode::Nat, true) else {
        return;
    };
    let opts = RvsdOpts {
        rules: service_rules(&lab, Family::V6, false, 80, "rr"),
        workers: Some(1),
        ..RvsdOpts::default()
    };
    let d = Rvsd::start(&lab, rvsd_bin(), &opts).unwrap();
    assert_eq!(ten_gets(&lab, Family::V6), 10);
    signal(rvsd_pid(&lab), "-KILL");
    let exit = d.stop().unwrap();
    assert_eq!(exit.code, None, "killed by a signal");
    let (nft, _) = director_state(&lab);
    assert!(has_table(&nft), "a crash leaves the table: {nft}");

    let d = Rvsd::start(&lab, rvsd_bin(), &opts).unwrap();
    assert_eq!(
        ten_gets(&lab, Family::V6),
        10,
        "the restarted director serves"
    );
    let (nft, _) = director_state(&lab);
    assert_eq!(
        nft.lines()
            .filter(|l| l.trim() == "table netdev rvsd")
            .count(),
        1,
        "one table: {nft}"
    );
    let exit = d.stop().unwrap();
    assert_eq!(exit.code, Some(0), "{}", exit.stderr);
    assert!(!has_table(&director_state(&lab).0));
}

/// Mistakes fail before anything is installed: no table, no TAP, a message naming the problem,
/// non-zero status (2 for a bad rules file, like the replay tool; 1 for a missing interface).
#[test]
fn bad_interface_or_rules_fail_clearly_and_install_nothing() {
    let Some(lab) = lab(Mode::Dr, true) else {
        return;
    };
    let dir = lab.hosts().director;
    let bin = rvsd_bin().to_str().unwrap();
    let run = |args: &[&str]| lab.lab().command(dir, args).unwrap().output().unwrap();
    let out = run(&[bin, "--interface", "nosuch0"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("nosuch0"), "{err}");
    let rules = std::env::temp_dir().join(format!("{}-bad.rules", lab.lab().prefix()));
    std::fs::write(&rules, "-A -t 203.0.113.10:80 -s nosuchsched\n").unwrap();
    let out = run(&[
        bin,
        "--interface",
        &lab.ifaces().director,
        "--rules",
        rules.to_str().unwrap(),
    ]);
    let _ = std::fs::remove_file(&rules);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("nosuchsched") || err.contains("rule 1"),
        "{err}"
    );
    let (nft, links) = director_state(&lab);
    assert!(!has_table(&nft) && !has_tap(&links), "{nft}\n{links}");
}

/// The VIP-less director: router-b routes the VIP to it, it is not configured on it. Balancing
/// works, and an expired connection's RST still comes from the VIP (the client's kernel only
/// resets the socket for a RST from VIP:80, so ECONNRESET proves the source).
#[test]
fn vip_less_director_balances_and_resets_from_the_vip() {
    let Some(lab) = lab(Mode::Dr, false) else {
        return;
    };
    for family in [Family::V4, Family::V6] {
        let vip = lab.addrs().vip.get(family);
        let mut rules = service_rules(&lab, family, false, 80, "rr");
        rules.push_str(&service_rules(&lab, family, false, 7, "rr"));
        let opts = RvsdOpts {
            rules,
            sets: vec![("timeout_tcp".into(), "2".into())],
            workers: Some(2),
            ..RvsdOpts::default()
        };
        let d = Rvsd::start(&lab, rvsd_bin(), &opts).unwrap();
        assert_eq!(ten_gets(&lab, family), 10, "{family:?}");
        let client = lab.client().unwrap();
        let mut s = client.tcp_connect(vip, 7, Duration::from_secs(5)).unwrap();
        s.echo(b"hello", Duration::from_secs(5)).unwrap();
        // Idle past the 2 s established timeout (the wheel expires it on the next ticks).
        std::thread::sleep(Duration::from_secs(4));
        let r = s.echo(b"again", Duration::from_secs(5));
        let c = d.counters().unwrap();
        let exit = d.stop().unwrap();
        assert!(
            matches!(r, Err(ClientError::Reset { .. })),
            "{family:?}: expected ECONNRESET, got {r:?}; generated {}; log:\n{}",
            c.generated,
            exit.stderr
        );
        assert!(c.generated >= 1, "the director generated the RST");
        assert_eq!(exit.code, Some(0));
    }
}
