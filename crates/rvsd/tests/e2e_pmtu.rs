//! End-to-end path-MTU tests: the real `rvsd` in a [`DirectorLab`], real kernels on the client,
//! the routers and the dests, real TCP transfers.
//!
//! - Path MTU (NAT, DR, TUN × IPv4, IPv6): link AB has an MTU of 1280, so router-b answers the
//!   dests' full-sized download segments with frag-needed / packet-too-big addressed to the
//!   VIP. The director must forward each error to the dest that owns the connection, by the
//!   connection's method; then a 4 MiB download completes. With `icmp_forward=0` the errors go
//!   to the director's own stack, the dest never learns the path MTU, and the download stalls.
//! - TUN with a 1400-byte LAN: the director itself must tell an uploading client the MTU left
//!   after the tunnel header (1380 for IPv4-in-IPv4, 1360 for IPv6-in-IPv6).
//! - Two workers: ICMP errors land on whichever worker the kernel's fanout hash picks for their
//!   outer header, and still reach connections another worker created.
//!
//! Every test builds its own lab (a host that learned a smaller path MTU advertises a smaller
//! MSS on later connections, so cases must not share hosts). They need root; without it they
//! print `SKIPPED` and pass, and under `RVS_E2E=1` they fail instead.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use rvs_api::Counters;
use rvs_lab::{
    ClientError, DirectorLab, DirectorLabOpts, Family, Mode, Rvsd, RvsdOpts, or_skip, service_rules,
};

/// Size of the path-MTU downloads and uploads.
const BIG: u64 = 4 << 20;
/// Deadline for transfers that must complete (generous: the machine is shared).
const COMPLETES_WITHIN: Duration = Duration::from_secs(60);
/// Deadline of the negative controls: the transfer must not finish within it.
const STALLS_FOR: Duration = Duration::from_secs(10);
/// The HTTP service port.
const PORT: u16 = 80;

const ICMPV4_DEST_UNREACH: u8 = 3;
const ICMPV4_FRAG_NEEDED: u8 = 4;
const ICMPV6_PACKET_TOO_BIG: u8 = 2;

fn rvsd_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_rvsd"))
}

/// A lab of `mode` with the given link MTUs, or `None` when the test is skipped.
fn lab(mode: Mode, ab_mtu: u32, lan_mtu: u32) -> Option<DirectorLab> {
    or_skip(DirectorLab::new(DirectorLabOpts {
        mode,
        ab_mtu,
        lan_mtu,
        ..DirectorLabOpts::default()
    }))
}

/// Start rvsd with an rr service on port 80 of the VIP of `fam` over the three dests.
fn start<'l>(lab: &'l DirectorLab, fam: Family, sets: &[(&str, &str)], workers: usize) -> Rvsd<'l> {
    let opts = RvsdOpts {
        rules: service_rules(lab, fam, false, PORT, "rr"),
        sets: sets
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        workers: Some(workers),
        ..RvsdOpts::default()
    };
    Rvsd::start(lab, rvsd_bin(), &opts).expect("rvsd starts")
}

/// The too-big error of a family: (is IPv6, type, code).
fn too_big(fam: Family) -> (bool, u8, u8) {
    match fam {
        Family::V4 => (false, ICMPV4_DEST_UNREACH, ICMPV4_FRAG_NEEDED),
        Family::V6 => (true, ICMPV6_PACKET_TOO_BIG, 0),
    }
}

/// The count of too-big errors of `fam` with `outcome` ("received", "forwarded_masq", ...).
fn too_big_count(c: &Counters, fam: Family, outcome: &str) -> u64 {
    let (v6, t, code) = too_big(fam);
    c.icmp
        .iter()
        .filter(|i| i.v6 == v6 && i.icmp_type == t && i.code == code && i.outcome == outcome)
        .map(|i| i.count)
        .sum()
}

/// The ICMP outcome name of forwarding by `mode`'s method.
fn forwarded(mode: Mode) -> &'static str {
    match mode {
        Mode::Nat => "forwarded_masq",
        Mode::Dr => "forwarded_route",
        Mode::Tun => "forwarded_tunnel",
    }
}

/// The director's counters in a few readable lines.
fn summary(c: &Counters) -> String {
    let mut s = format!(
        "rx {} forwarded {} generated {} local {} held {}; conns inserted {}\n",
        c.rx, c.forwarded, c.generated, c.local, c.held, c.conn_table.inserted
    );
    let drops: Vec<String> = c
        .drops
        .iter()
        .filter(|d| d.count > 0)
        .map(|d| format!("{} {}", d.name, d.count))
        .collect();
    let _ = writeln!(s, "  drops: {}", drops.join(", "));
    for i in &c.icmp {
        let _ = writeln!(
            s,
            "  icmp{} type {} code {} {}{}: {}",
            if i.v6 { "v6" } else { "v4" },
            i.icmp_type,
            i.code,
            i.outcome,
            i.reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default(),
            i.count
        );
    }
    for (n, w) in c.workers.iter().enumerate() {
        let _ = writeln!(
            s,
            "  worker {n}: frames {} tcp_syn {} icmp_errors {}",
            w.frames, w.tcp_syn, w.icmp_errors
        );
    }
    s
}

/// The director's counters; a failure to read them stops rvsd and fails the test with its log.
fn counters(d: Rvsd<'_>) -> (Rvsd<'_>, Counters) {
    match d.counters() {
        Ok(c) => (d, c),
        Err(e) => fail(d, &format!("reading rvsd's counters: {e}")),
    }
}

/// Stop rvsd and fail the test with `what`, the director's counters and rvsd's log.
fn fail(d: Rvsd<'_>, what: &str) -> ! {
    let c = match d.counters() {
        Ok(c) => summary(&c),
        Err(e) => format!("(counters unavailable: {e})"),
    };
    let log = match d.stop() {
        Ok(exit) => format!("exit code {:?}\n{}", exit.code, exit.stderr),
        Err(e) => format!("(stopping rvsd failed: {e})"),
    };
    panic!("{what}\n--- rvsd counters:\n{c}--- rvsd log: {log}");
}

/// Stop rvsd at the end of a passing test; it must exit cleanly (status 0 after SIGTERM).
/// The final counters are printed (seen with `--nocapture`).
fn stop(d: Rvsd<'_>) {
    if let Ok(c) = d.counters() {
        eprintln!("rvsd counters at the end:\n{}", summary(&c));
    }
    let exit = d.stop().expect("stopping rvsd");
    eprintln!("rvsd log:\n{}", exit.stderr);
    assert_eq!(
        exit.code,
        Some(0),
        "rvsd did not exit cleanly on SIGTERM; its log:\n{}",
        exit.stderr
    );
}

// ------------------------------------------------------------------------------------------
// 2. Path MTU: a 1280-byte link AB between the client and the director's LAN.
// ------------------------------------------------------------------------------------------

/// Positive case: a 4 MiB download through the VIP over the 1280 path completes, and the
/// director received the routers' too-big errors and forwarded them by the connection's
/// method, none to its own stack.
///
/// Fails if the director drops or mishandles the errors (wrong method, NAT rewrite wrong, the
/// quoted packet's connection not found: the dest never learns the MTU and the download
/// stalls), or if the errors never reach the director (the counters stay at zero), or if they
/// went somewhere else than the owning dest (forwarded counter zero).
fn pmtu_download(mode: Mode, fam: Family) {
    let Some(lab) = lab(mode, 1280, 1500) else {
        return;
    };
    let d = start(&lab, fam, &[], 1);
    let vip = lab.addrs().vip.get(fam);
    let r = lab
        .client()
        .expect("client")
        .download(vip, PORT, BIG, COMPLETES_WITHIN);
    let (d, c) = counters(d);
    match r {
        Ok(t) => eprintln!(
            "{mode:?} {fam:?}: {BIG} bytes from {:?} in {:?}",
            t.dest, t.elapsed
        ),
        Err(e) => fail(
            d,
            &format!("{mode:?} {fam:?}: the download over the 1280 path failed: {e}"),
        ),
    }
    let received = too_big_count(&c, fam, "received");
    let fwd = too_big_count(&c, fam, forwarded(mode));
    let local = too_big_count(&c, fam, "local");
    if received == 0 || fwd == 0 || local != 0 || fwd > received {
        fail(
            d,
            &format!(
                "{mode:?} {fam:?}: expected too-big errors received and forwarded by {}, none \
                 local: received {received}, forwarded {fwd}, local {local}",
                forwarded(mode)
            ),
        );
    }
    stop(d);
}

/// Negative control: the same download with the director's ICMP forwarding switched off must
/// stall. The errors still arrive (counted as received and handed to the director's own
/// stack), which shows that the positive case completes *because* they are forwarded.
///
/// Fails if the download completes anyway (then the positive case proves nothing: something
/// else — fragmentation, MSS clamping, a router — made the path work), or if the errors were
/// not received at all (the scenario did not happen).
fn pmtu_download_stalls_without_icmp_forwarding(mode: Mode, fam: Family) {
    let Some(lab) = lab(mode, 1280, 1500) else {
        return;
    };
    let d = start(&lab, fam, &[("icmp_forward", "0")], 1);
    let vip = lab.addrs().vip.get(fam);
    let r = lab
        .client()
        .expect("client")
        .download(vip, PORT, BIG, STALLS_FOR);
    let (d, c) = counters(d);
    match r {
        Err(ClientError::Stalled { progress }) => {
            eprintln!("{mode:?} {fam:?}: stalled as expected after {progress} bytes");
        }
        Ok(t) => fail(
            d,
            &format!(
                "{mode:?} {fam:?}: the download completed in {:?} although the director does \
                 not forward ICMP errors",
                t.elapsed
            ),
        ),
        Err(e) => fail(
            d,
            &format!("{mode:?} {fam:?}: expected a stalled download, got: {e}"),
        ),
    }
    let received = too_big_count(&c, fam, "received");
    let fwd = too_big_count(&c, fam, forwarded(mode));
    let local = too_big_count(&c, fam, "local");
    if received == 0 || fwd != 0 || local == 0 {
        fail(
            d,
            &format!(
                "{mode:?} {fam:?}: expected too-big errors received and handed to the host, \
                 none forwarded: received {received}, forwarded {fwd}, local {local}"
            ),
        );
    }
    stop(d);
}

#[test]
fn pmtu_nat_v4() {
    pmtu_download(Mode::Nat, Family::V4);
}

#[test]
fn pmtu_nat_v6() {
    pmtu_download(Mode::Nat, Family::V6);
}

#[test]
fn pmtu_dr_v4() {
    pmtu_download(Mode::Dr, Family::V4);
}

#[test]
fn pmtu_dr_v6() {
    pmtu_download(Mode::Dr, Family::V6);
}

#[test]
fn pmtu_tun_v4() {
    pmtu_download(Mode::Tun, Family::V4);
}

#[test]
fn pmtu_tun_v6() {
    pmtu_download(Mode::Tun, Family::V6);
}

#[test]
fn pmtu_nat_v4_stalls_without_icmp_forwarding() {
    pmtu_download_stalls_without_icmp_forwarding(Mode::Nat, Family::V4);
}

#[test]
fn pmtu_nat_v6_stalls_without_icmp_forwarding() {
    pmtu_download_stalls_without_icmp_forwarding(Mode::Nat, Family::V6);
}

#[test]
fn pmtu_dr_v4_stalls_without_icmp_forwarding() {
    pmtu_download_stalls_without_icmp_forwarding(Mode::Dr, Family::V4);
}

#[test]
fn pmtu_dr_v6_stalls_without_icmp_forwarding() {
    pmtu_download_stalls_without_icmp_forwarding(Mode::Dr, Family::V6);
}

#[test]
fn pmtu_tun_v4_stalls_without_icmp_forwarding() {
    pmtu_download_stalls_without_icmp_forwarding(Mode::Tun, Family::V4);
}

#[test]
fn pmtu_tun_v6_stalls_without_icmp_forwarding() {
    pmtu_download_stalls_without_icmp_forwarding(Mode::Tun, Family::V6);
}

// ------------------------------------------------------------------------------------------
// 6. TUN with a 1400-byte LAN: the director advertises the MTU left after encapsulation.
// ------------------------------------------------------------------------------------------

/// The client's cached path MTU towards `vip` (`ip route get` in its namespace), if any.
fn client_pmtu(lab: &DirectorLab, vip: IpAddr) -> Option<u32> {
    let fam = if vip.is_ipv6() { "-6" } else { "-4" };
    let out = lab
        .lab()
        .exec(
            lab.hosts().client,
            &["ip", fam, "route", "get", &vip.to_string()],
        )
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut words = text.split_whitespace();
    while let Some(w) = words.next() {
        if w == "mtu" {
            return words.next().and_then(|m| m.parse().ok());
        }
    }
    None
}

/// A 4 MiB upload from the client to a TUN service whose dests sit behind a 1400-byte LAN.
///
/// The dests advertise an MSS for their 1400-byte interface, so the client's full-sized
/// segments fit the LAN as they are, but not once the director has put the tunnel header in
/// front of them. The director must answer them with frag-needed / packet-too-big advertising
/// 1400 − 20 = 1380 (IPv4 in IPv4) or 1400 − 40 = 1360 (IPv6 in IPv6); the client then sends
/// segments that fit, and the upload completes.
///
/// Fails if the director advertised the wrong MTU: too large (e.g. 1400, forgetting the
/// tunnel header) and the client's next segments are still too big after encapsulation, the
/// director keeps refusing them and the upload stalls; any other value is caught by the check
/// of the client's cached path MTU, which must be exactly the advertised one. Fails also if
/// the director sent no error at all (generated counter) or encapsulated too-big packets
/// anyway (they would be lost on the LAN: stall).
fn tun_upload_small_lan(fam: Family) {
    let Some(lab) = lab(Mode::Tun, 1500, 1400) else {
        return;
    };
    let d = start(&lab, fam, &[], 1);
    let vip = lab.addrs().vip.get(fam);
    let want_mtu = match fam {
        Family::V4 => 1380,
        Family::V6 => 1360,
    };
    let r = lab
        .client()
        .expect("client")
        .upload(vip, PORT, BIG, COMPLETES_WITHIN);
    let (d, c) = counters(d);
    match r {
        Ok(t) => eprintln!(
            "TUN {fam:?} LAN 1400: uploaded {BIG} bytes to {:?} in {:?}",
            t.dest, t.elapsed
        ),
        Err(e) => fail(
            d,
            &format!("TUN {fam:?}: the upload through the 1400-byte LAN failed: {e}"),
        ),
    }
    let generated = too_big_count(&c, fam, "generated");
    if generated == 0 {
        fail(
            d,
            &format!("TUN {fam:?}: the director generated no too-big error"),
        );
    }
    let pmtu = client_pmtu(&lab, vip);
    if pmtu != Some(want_mtu) {
        fail(
            d,
            &format!(
                "TUN {fam:?}: the client's path MTU to the VIP is {pmtu:?}, expected \
                 {want_mtu} (1400 minus the tunnel header)"
            ),
        );
    }
    stop(d);
}

#[test]
fn tun_small_lan_upload_v4() {
    tun_upload_small_lan(Family::V4);
}

#[test]
fn tun_small_lan_upload_v6() {
    tun_upload_small_lan(Family::V6);
}

// ------------------------------------------------------------------------------------------
// 8. Two workers: ICMP errors reach their connections whichever worker receives them.
// ------------------------------------------------------------------------------------------

/// Concurrent downloads in the two-worker test.
const PARALLEL: usize = 16;
/// Size of each of them.
const PARALLEL_BYTES: u64 = 1 << 20;

/// `PARALLEL` concurrent 1 MiB downloads (each from its own client port) over the 1280 path,
/// with `--workers 2`.
///
/// The kernel's fanout hashes each TCP flow to one worker, which then creates its connection;
/// the routers' too-big errors all come from router-b to the VIP, so their outer header hashes
/// them to one worker, whatever connection they quote. The per-worker counters must show both
/// workers creating connections and errors arriving; every error must still be forwarded (none
/// handed to the host as "no connection"), and every download must complete.
///
/// Fails if a worker only sees the connections it created itself (per-worker tables): the
/// errors about the other worker's connections find nothing and go `local` (counted), their
/// dests keep sending full-sized segments, and downloads stall. It also fails if the fanout did
/// not actually spread the flows (then the test would prove nothing): with 16 flows the chance
/// that a fair hash puts them all on one worker is 2^-15.
fn two_workers(mode: Mode, fam: Family) {
    let Some(lab) = lab(mode, 1280, 1500) else {
        return;
    };
    let d = start(&lab, fam, &[], 2);
    let vip = lab.addrs().vip.get(fam);
    let client = lab.client().expect("client");
    let results: Vec<Result<rvs_lab::Transfer, ClientError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..PARALLEL)
            .map(|_| {
                let client = client.clone();
                s.spawn(move || client.download(vip, PORT, PARALLEL_BYTES, COMPLETES_WITHIN))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("download thread"))
            .collect()
    });
    let (d, c) = counters(d);
    let failed: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().err().map(ToString::to_string))
        .collect();
    if !failed.is_empty() {
        fail(
            d,
            &format!(
                "{mode:?} {fam:?}, 2 workers: {} of {PARALLEL} downloads failed: {failed:?}",
                failed.len()
            ),
        );
    }
    if c.workers.len() != 2 {
        fail(
            d,
            &format!("expected counters of 2 workers, got {}", c.workers.len()),
        );
    }
    let (w0, w1) = (&c.workers[0], &c.workers[1]);
    if w0.tcp_syn == 0 || w1.tcp_syn == 0 {
        fail(
            d,
            &format!(
                "{mode:?} {fam:?}: the fanout did not spread {PARALLEL} flows over both \
                 workers (SYNs {} and {}): the test proves nothing",
                w0.tcp_syn, w1.tcp_syn
            ),
        );
    }
    // Some worker received errors; since both created connections, it did not create all of
    // the connections the errors may quote.
    if w0.icmp_errors + w1.icmp_errors == 0 {
        fail(d, "no worker received an ICMP error");
    }
    let received = too_big_count(&c, fam, "received");
    let fwd = too_big_count(&c, fam, forwarded(mode));
    let local = too_big_count(&c, fam, "local");
    if received == 0 || fwd != received || local != 0 {
        fail(
            d,
            &format!(
                "{mode:?} {fam:?}, 2 workers: every too-big error must find its connection: \
                 received {received}, forwarded {fwd}, local {local}"
            ),
        );
    }
    stop(d);
}

#[test]
fn two_workers_nat_v4() {
    two_workers(Mode::Nat, Family::V4);
}

#[test]
fn two_workers_dr_v6() {
    two_workers(Mode::Dr, Family::V6);
}
