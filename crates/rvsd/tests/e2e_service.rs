//! End-to-end tests of the director's service behaviour on live interfaces, in the lab
//! (client — router-a — router-b — LAN with the director and three dests), for NAT, DR and TUN,
//! IPv4 and IPv6, running the real `rvsd` binary:
//!
//! 1. balancing: `rr` splits 300 requests exactly 100/100/100; `wlc` avoids the dest holding
//!    an active connection; `mh` keeps one client address on one dest, and spreads it by port
//!    with `mh-port`;
//! 3. NAT: UDP to a port without a listener gives the client `ECONNREFUSED` (the dest's port
//!    unreachable, rewritten so it quotes the VIP), and the UDP echo port answers;
//! 4. an expired connection that sends again gets `ECONNRESET` (the director's RST from the VIP);
//! 5. an ICMP error about no known connection reaches the director host's own stack exactly
//!    once (its `/proc/net/snmp` counters), and `ping VIP` is answered;
//! 7. a dest deleted during a long transfer and re-added within its timeout: the transfer
//!    completes.
//!
//! Every test needs root (network namespaces): without it, it prints `SKIPPED: ...` and passes,
//! and under `RVS_E2E=1` it fails. Every assertion prints the daemon's counters, and a failed
//! one stops the daemon and prints its log.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use etherparse::{
    Icmpv4Header, Icmpv4Type, Icmpv6Header, Icmpv6Type, IpNumber, Ipv4Header, Ipv6Header,
    TcpHeader, icmpv4, icmpv6,
};
use rvs_api::{
    Counters, DestConfig, FwdMethod, Protocol, Reply, Request, SchedFlags, ServiceAddr,
    ServiceEntry,
};
use rvs_lab::{
    ClientError, DirectorLab, DirectorLabOpts, Family, Mode, Rvsd, RvsdOpts, or_skip, service_rules,
};
use socket2::{Domain, Type};

/// Per-request deadline: generous, the machine is shared.
const REQ: Duration = Duration::from_secs(10);

/// How long something that should happen may take before the test gives up.
const DEADLINE: Duration = Duration::from_secs(30);

// ------------------------------------------------------------------------------------------
// Harness: the lab, the daemon, failure reports.
// ------------------------------------------------------------------------------------------

fn build_lab(mode: Mode) -> Option<DirectorLab> {
    or_skip(DirectorLab::new(DirectorLabOpts {
        mode,
        ..DirectorLabOpts::default()
    }))
}

/// The running `rvsd` of one test; every failed check stops it and panics with its counters
/// and its log.
struct Daemon<'lab> {
    rvsd: Option<Rvsd<'lab>>,
    what: String,
}

impl<'lab> Daemon<'lab> {
    fn start(lab: &'lab DirectorLab, what: &str, rules: String, sets: &[(&str, &str)]) -> Self {
        let opts = RvsdOpts {
            rules,
            sets: sets
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            workers: Some(2),
            ..RvsdOpts::default()
        };
        match Rvsd::start(lab, Path::new(env!("CARGO_BIN_EXE_rvsd")), &opts) {
            Ok(d) => Daemon {
                rvsd: Some(d),
                what: what.to_owned(),
            },
            Err(e) => panic!("{what}: rvsd did not start: {e}"),
        }
    }

    fn rvsd(&self) -> &Rvsd<'lab> {
        self.rvsd.as_ref().expect("rvsd already stopped")
    }

    /// Stop the daemon and panic with `msg`, the counters and the daemon's log.
    fn fail(&mut self, msg: &str) -> ! {
        let counters = match self.rvsd.as_ref().map(Rvsd::counters) {
            Some(Ok(c)) => summary(&c),
            Some(Err(e)) => format!("(counters unavailable: {e})"),
            None => "(rvsd already stopped)".to_owned(),
        };
        let log = match self.rvsd.take().map(Rvsd::stop) {
            Some(Ok(exit)) => format!("exit code {:?}, log:\n{}", exit.code, exit.stderr),
            Some(Err(e)) => format!("(stopping rvsd failed: {e})"),
            None => String::new(),
        };
        panic!(
            "{}: {msg}\n--- rvsd counters:\n{counters}\n--- rvsd {log}",
            self.what
        );
    }

    /// Fail with `msg()` unless `ok`.
    fn check(&mut self, ok: bool, msg: impl FnOnce() -> String) {
        if !ok {
            let m = msg();
            self.fail(&m);
        }
    }

    fn counters(&mut self) -> Counters {
        match self.rvsd().counters() {
            Ok(c) => c,
            Err(e) => self.fail(&format!("counters: {e}")),
        }
    }

    fn call(&mut self, req: &Request) -> Reply {
        match self.rvsd().call(req) {
            Ok(r) => r,
            Err(e) => self.fail(&format!("control request failed: {e}")),
        }
    }

    fn service(&mut self, svc: ServiceAddr) -> ServiceEntry {
        match self.call(&Request::ListServices { service: Some(svc) }) {
            Reply::Services(mut l) if l.services.len() == 1 => l.services.remove(0),
            other => self.fail(&format!("ListServices {svc}: unexpected reply {other:?}")),
        }
    }

    fn connections(&mut self) -> Vec<rvs_api::ConnEntry> {
        match self.call(&Request::ListConnections) {
            Reply::Connections(c) => c,
            other => self.fail(&format!("ListConnections: unexpected reply {other:?}")),
        }
    }

    /// Stop the daemon; it must exit cleanly (status 0) on SIGTERM.
    fn finish(mut self) {
        let Some(d) = self.rvsd.take() else { return };
        let exit = d.stop().expect("stopping rvsd");
        assert_eq!(
            exit.code,
            Some(0),
            "{}: rvsd did not exit cleanly; its log:\n{}",
            self.what,
            exit.stderr
        );
    }
}

/// The counters in a few lines: totals, non-zero drops, ICMP, table and director events.
fn summary(c: &Counters) -> String {
    let mut s = format!(
        "rx {} forwarded {} generated {} local {} held {}\n",
        c.rx, c.forwarded, c.generated, c.local, c.held
    );
    let drops: Vec<String> = c
        .drops
        .iter()
        .filter(|d| d.count > 0)
        .map(|d| format!("{}={}", d.name, d.count))
        .collect();
    let _ = writeln!(s, "drops: [{}]", drops.join(", "));
    for i in &c.icmp {
        let _ = writeln!(
            s,
            "icmp{} type {} code {} {}{}: {}",
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
    let _ = writeln!(s, "conn table: {:?}", c.conn_table);
    let _ = write!(s, "director: {:?}", c.director);
    s
}

/// The ICMP counter of one family, type, code and outcome.
fn icmp_count(c: &Counters, v6: bool, icmp_type: u8, code: u8, outcome: &str) -> u64 {
    c.icmp
        .iter()
        .filter(|i| {
            i.v6 == v6 && i.icmp_type == icmp_type && i.code == code && i.outcome == outcome
        })
        .map(|i| i.count)
        .sum()
}

/// Every ICMP message of an outcome, all types.
fn icmp_outcome(c: &Counters, outcome: &str) -> u64 {
    c.icmp
        .iter()
        .filter(|i| i.outcome == outcome)
        .map(|i| i.count)
        .sum()
}

fn drop_count(c: &Counters, name: &str) -> u64 {
    c.drops
        .iter()
        .filter(|d| d.name == name)
        .map(|d| d.count)
        .sum()
}

fn tcp_service(lab: &DirectorLab, fam: Family, port: u16) -> ServiceAddr {
    ServiceAddr {
        protocol: Protocol::Tcp,
        addr: lab.addrs().vip.get(fam),
        port,
    }
}

fn fwd_method(mode: Mode) -> FwdMethod {
    match mode {
        Mode::Nat => FwdMethod::Masq,
        Mode::Dr => FwdMethod::Route,
        Mode::Tun => FwdMethod::Tunnel,
    }
}

/// The index (0..3) of the dest with LAN address `ip`.
fn dest_index(lab: &DirectorLab, ip: IpAddr) -> Option<usize> {
    lab.addrs()
        .dests
        .iter()
        .position(|d| d.both().contains(&ip))
}

/// `n` sequential GETs of `/` on VIP:80 from `client`; how many each dest answered.
fn gets(
    d: &mut Daemon<'_>,
    client: &rvs_lab::Client,
    vip: IpAddr,
    n: usize,
    what: &str,
) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for i in 0..n {
        match client.http_get(vip, 80, "/", REQ) {
            Ok(r) if r.status == 200 => {
                *counts
                    .entry(r.dest.unwrap_or_else(|| "(no X-RVS-Dest)".into()))
                    .or_insert(0) += 1;
            }
            Ok(r) => d.fail(&format!("{what}: GET {i} answered status {}", r.status)),
            Err(e) => d.fail(&format!(
                "{what}: GET {i} of {n} failed: {e} (so far {counts:?})"
            )),
        }
    }
    counts
}

/// Poll `cond` every 100 ms until it holds, at most `limit`.
fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Generate one `#[test]` per mode and family from `$body(mode, family)`.
macro_rules! six {
    ($body:ident: $($name:ident => ($mode:ident, $fam:ident)),* $(,)?) => {
        $(#[test] fn $name() { $body(Mode::$mode, Family::$fam) })*
    };
}

// ------------------------------------------------------------------------------------------
// 1. Balancing: rr, wlc, mh.
// ------------------------------------------------------------------------------------------

/// One daemon, one service on VIP:80 switched between schedulers with `EditService`:
///
/// - `rr`: 300 sequential GETs split exactly 100/100/100, and the director's per-dest
///   statistics agree (300 connections). Fails if any request is lost, if the scheduler skews,
///   or if requests bypass the director (the statistics would not count them).
/// - `wlc`: an idle connection held open to dest X (active: overhead 256) and then 60
///   sequential GETs: none reaches X, both others are used. `rr` would send X a third of them;
///   a `wlc` that ignored active connections would too.
/// - `mh` without flags: 30 GETs from the client, every one on the same dest (the client has
///   one address); from a second client address (router-a), again a single dest. With
///   `mh-port`: 60 GETs from the client reach all three dests. `rr` or `wlc` would fail the
///   first half, an `mh` that ignored the port flag the second.
fn balance(mode: Mode, fam: Family) {
    let Some(lab) = build_lab(mode) else { return };
    let what = format!("balance {mode:?} {fam:?}");
    let vip = lab.addrs().vip.get(fam);
    let svc = tcp_service(&lab, fam, 80);
    // The client may reuse the port of an earlier phase's connection: its SYN must be
    // scheduled by this phase's scheduler. In DR the director's last state of an ended
    // connection is FIN_WAIT, which only bit 2 of `conn_reuse_mode` reschedules (IPVS's default,
    // 1, reopens it on its old dest).
    let rules = service_rules(&lab, fam, false, 80, "rr");
    let mut d = Daemon::start(&lab, &what, rules, &[("conn_reuse_mode", "3")]);
    let client = lab.client().unwrap();

    // rr: exactly 100 each.
    let counts = gets(&mut d, &client, vip, 300, "rr");
    let want: BTreeMap<String, usize> = (0..3)
        .map(|i| (lab.dest_name(i).unwrap().to_owned(), 100))
        .collect();
    d.check(counts == want, || {
        format!("rr over 300 GETs: {counts:?}, expected {want:?}")
    });
    let entry = d.service(svc);
    let per_dest: Vec<(IpAddr, u64)> = entry
        .dests
        .iter()
        .map(|e| (e.config.addr, e.stats.conns))
        .collect();
    d.check(
        entry.stats.conns == 300 && per_dest.iter().all(|(_, n)| *n == 100),
        || {
            format!(
                "rr: the director counted {} connections, per dest {per_dest:?}; expected 300, 100 each",
                entry.stats.conns
            )
        },
    );

    // wlc: a held connection makes its dest the most loaded.
    let mut cfg = entry.config.clone();
    cfg.scheduler = "wlc".into();
    d.call(&Request::EditService(cfg.clone()));
    let held = match client.tcp_connect(vip, 80, REQ) {
        Ok(s) => s,
        Err(e) => d.fail(&format!("wlc: holding a connection to VIP:80: {e}")),
    };
    let cport = held.local_addr().unwrap().port();
    let mut held_dest = None;
    let established = wait_for(DEADLINE, || {
        let conns = d.connections();
        held_dest = conns
            .iter()
            .find(|c| c.cport == cport && c.vport == 80 && c.state == "ESTABLISHED")
            .and_then(|c| dest_index(&lab, c.daddr));
        held_dest.is_some()
    });
    let conns = d.connections();
    d.check(established, || {
        format!("wlc: the held connection (client port {cport}) never became ESTABLISHED in the director's table: {conns:?}")
    });
    let x = held_dest.unwrap();
    let x_name = lab.dest_name(x).unwrap();
    // Exactly the held connection is active (the last GETs' closing segments may still be on
    // their way through the director: wait for them).
    let x_rip = lab.addrs().dests[x].get(fam);
    let mut active: Vec<(IpAddr, u32)> = Vec::new();
    let one = wait_for(DEADLINE, || {
        active = d
            .service(svc)
            .dests
            .iter()
            .map(|e| (e.config.addr, e.active_conns))
            .collect();
        active.iter().map(|(_, n)| n).sum::<u32>() == 1
    });
    d.check(one && active.contains(&(x_rip, 1)), || {
        format!(
            "wlc: active connections per dest {active:?}, expected exactly the held one on {x_name} ({x_rip})"
        )
    });
    let counts = gets(&mut d, &client, vip, 60, "wlc");
    d.check(
        !counts.contains_key(x_name) && counts.len() == 2 && counts.values().sum::<usize>() == 60,
        || format!("wlc with {x_name} holding an active connection: 60 GETs went {counts:?}; expected none on {x_name}, both others used"),
    );
    drop(held);

    // mh without mh-port: one client address, one dest.
    cfg.scheduler = "mh".into();
    d.call(&Request::EditService(cfg.clone()));
    let counts = gets(&mut d, &client, vip, 30, "mh");
    d.check(counts.len() == 1, || {
        format!(
            "mh (no mh-port): 30 GETs from one client address went {counts:?}; expected one dest"
        )
    });
    let other = lab.client_on(lab.hosts().router_a).unwrap();
    let counts = gets(&mut d, &other, vip, 10, "mh from router-a");
    d.check(counts.len() == 1, || {
        format!("mh (no mh-port): 10 GETs from router-a went {counts:?}; expected one dest")
    });

    // mh with mh-port: the source port spreads one client over every dest.
    cfg.sched_flags = SchedFlags {
        fallback: false,
        port: true,
    };
    d.call(&Request::EditService(cfg));
    let counts = gets(&mut d, &client, vip, 60, "mh-port");
    d.check(counts.len() == 3, || {
        format!(
            "mh-port: 60 GETs from one client address went {counts:?}; expected all three dests"
        )
    });
    d.finish();
}

six!(balance:
    balance_nat_v4 => (Nat, V4), balance_nat_v6 => (Nat, V6),
    balance_dr_v4 => (Dr, V4), balance_dr_v6 => (Dr, V6),
    balance_tun_v4 => (Tun, V4), balance_tun_v6 => (Tun, V6),
);

// ------------------------------------------------------------------------------------------
// 3. NAT: UDP port unreachable reaches the client as ECONNREFUSED.
// ------------------------------------------------------------------------------------------

/// UDP services on VIP:7 (the dests' echo) and VIP:9 (no listener), NAT.
///
/// - Three requests to VIP:7 are answered with the same bytes (the reply comes from the VIP,
///   or the client's connected socket would not take it).
/// - Three requests to VIP:9 each fail with `ECONNREFUSED`: the dest's port unreachable quotes
///   client → RIP:9, and only if the director rewrites it (outer source and quoted destination
///   to the VIP) does the client's kernel match it to the socket. The director's counters show
///   the errors forwarded (`forwarded_masq`).
/// - Negative control, `icmp_forward=false` set at run time: the same request gets no error
///   the client can match and times out (10 s): the refusal above was the director's doing.
fn udp_refused(fam: Family) {
    let Some(lab) = build_lab(Mode::Nat) else {
        return;
    };
    let what = format!("udp_refused Nat {fam:?}");
    let vip = lab.addrs().vip.get(fam);
    let rules = service_rules(&lab, fam, true, 7, "rr") + &service_rules(&lab, fam, true, 9, "rr");
    let mut d = Daemon::start(&lab, &what, rules, &[]);
    let client = lab.client().unwrap();
    let v6 = fam == Family::V6;
    let (unreach, port_code) = if v6 { (1, 4) } else { (3, 3) };

    for i in 0..3u8 {
        let payload = [b'e', b'c', b'h', b'o', i];
        match client.udp_request(vip, 7, &payload, REQ) {
            Ok(back) => d.check(back == payload, || {
                format!("UDP echo via the VIP returned {back:?}, sent {payload:?}")
            }),
            Err(e) => d.fail(&format!("UDP echo {i} via the VIP failed: {e}")),
        }
    }
    for i in 0..3u8 {
        match client.udp_request(vip, 9, &[i], REQ) {
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
            other => d.fail(&format!(
                "UDP {i} to VIP:9 (no listener on the dests): {other:?}, expected ECONNREFUSED"
            )),
        }
    }
    let c = d.counters();
    let fwd = icmp_count(&c, v6, unreach, port_code, "forwarded_masq");
    d.check(fwd == 3, || {
        format!("expected the 3 port unreachables forwarded (NAT), counted {fwd}")
    });

    // Negative control: without the director's rewrite the client never learns.
    d.call(&Request::SetSetting {
        name: "icmp_forward".into(),
        value: "false".into(),
    });
    let start = Instant::now();
    let r = client.udp_request(vip, 9, b"x", Duration::from_secs(10));
    d.check(
        matches!(&r, Err(e) if e.kind() == io::ErrorKind::TimedOut),
        || {
            format!(
                "with icmp_forward=false, UDP to VIP:9 gave {r:?} after {:?}; expected no answer within 10 s",
                start.elapsed()
            )
        },
    );
    let c = d.counters();
    let local = icmp_count(&c, v6, unreach, port_code, "local");
    d.check(local >= 1, || {
        format!("with icmp_forward=false the port unreachable should be handed to the host (local), counted {local}")
    });
    d.finish();
}

#[test]
fn udp_refused_nat_v4() {
    udp_refused(Family::V4)
}

#[test]
fn udp_refused_nat_v6() {
    udp_refused(Family::V6)
}

// ------------------------------------------------------------------------------------------
// 4. Expired connection: ECONNRESET.
// ------------------------------------------------------------------------------------------

/// TCP echo service on VIP:7 with `timeout_tcp=2`. Two sessions: A goes idle, B echoes every
/// 300 ms. Once A's entry has left the director's table (it expired; B's has not, its timer is
/// refreshed), A sends again and gets `ECONNRESET` — the director's RST from the VIP
/// (`expired_reply=rst`, the default): the counters show a generated packet and no generated
/// ICMP (a port unreachable would read as `ECONNREFUSED`), and the table counted an expiry.
/// B still echoes afterwards. Fails if connections never expire, if the expired-connection
/// reply is missing (the client would stall: the dest never sees the segment in DR/TUN), wrongly
/// sourced or wrongly sequenced (the client's kernel would ignore it), or if the RST hit B.
fn expired_rst(mode: Mode, fam: Family) {
    let Some(lab) = build_lab(mode) else { return };
    let what = format!("expired_rst {mode:?} {fam:?}");
    let vip = lab.addrs().vip.get(fam);
    let mut d = Daemon::start(
        &lab,
        &what,
        service_rules(&lab, fam, false, 7, "rr"),
        &[("timeout_tcp", "2")],
    );
    let client = lab.client().unwrap();
    let mut a = match client.tcp_connect(vip, 7, REQ) {
        Ok(s) => s,
        Err(e) => d.fail(&format!("connecting A: {e}")),
    };
    let mut b = match client.tcp_connect(vip, 7, REQ) {
        Ok(s) => s,
        Err(e) => d.fail(&format!("connecting B: {e}")),
    };
    for (n, s) in [("A", &mut a), ("B", &mut b)] {
        if let Err(e) = s.echo(b"hello", REQ) {
            d.fail(&format!("first echo on {n}: {e}"));
        }
    }
    let a_port = a.local_addr().unwrap().port();
    let b_port = b.local_addr().unwrap().port();
    let has = |conns: &[rvs_api::ConnEntry], port: u16| {
        conns.iter().any(|c| c.cport == port && c.vport == 7)
    };
    let conns = d.connections();
    d.check(has(&conns, a_port) && has(&conns, b_port), || {
        format!("both sessions should be in the table: {conns:?}")
    });
    let before = d.counters();
    let mut b_err = None;
    let expired = wait_for(DEADLINE, || {
        if let Err(e) = b.echo(b"keepalive", REQ) {
            b_err = Some(e);
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
        !has(&d.connections(), a_port)
    });
    if let Some(e) = b_err {
        d.fail(&format!("B (kept busy) failed while A idled: {e}"));
    }
    let conns = d.connections();
    d.check(expired, || {
        format!("A (client port {a_port}) did not expire with timeout_tcp=2: {conns:?}")
    });
    d.check(has(&conns, b_port), || {
        format!("B (client port {b_port}, busy every 300 ms) expired too: {conns:?}")
    });

    let r = a.echo(b"again", REQ);
    let after = d.counters();
    d.check(matches!(r, Err(ClientError::Reset { .. })), || {
        format!("A sent after its connection expired: {r:?}; expected ECONNRESET")
    });
    d.check(after.generated > before.generated, || {
        format!(
            "the director generated nothing (generated {} -> {})",
            before.generated, after.generated
        )
    });
    let icmp_gen = icmp_outcome(&after, "generated");
    d.check(icmp_gen == 0, || {
        format!("the reply should be a RST, not ICMP: {icmp_gen} ICMP generated")
    });
    d.check(
        after.director.expired >= 1 && after.conn_table.expired >= 1,
        || "no expiry counted".to_owned(),
    );
    if let Err(e) = b.echo(b"still here", REQ) {
        d.fail(&format!("B after A's reset: {e}"));
    }
    d.finish();
}

six!(expired_rst:
    expired_rst_nat_v4 => (Nat, V4), expired_rst_nat_v6 => (Nat, V6),
    expired_rst_dr_v4 => (Dr, V4), expired_rst_dr_v6 => (Dr, V6),
    expired_rst_tun_v4 => (Tun, V4), expired_rst_tun_v6 => (Tun, V6),
);

// ------------------------------------------------------------------------------------------
// 5. ICMP about no known connection: the director host's own stack; ping VIP.
// ------------------------------------------------------------------------------------------

/// The ICMP counters of the director host's stack: (messages in, destination unreachables in,
/// checksum errors in), from `/proc/net/snmp` or `/proc/net/snmp6` in its namespace.
fn host_icmp(lab: &DirectorLab, v6: bool) -> (u64, u64, u64) {
    let file = if v6 {
        "/proc/net/snmp6"
    } else {
        "/proc/net/snmp"
    };
    let out = lab
        .lab()
        .exec(lab.hosts().director, &["cat", file])
        .expect("reading the director's SNMP counters");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut fields: BTreeMap<String, u64> = BTreeMap::new();
    if v6 {
        for line in text.lines() {
            let mut it = line.split_whitespace();
            if let (Some(k), Some(v)) = (it.next(), it.next()) {
                fields.insert(k.to_owned(), v.parse().unwrap_or(0));
            }
        }
    } else {
        // "Icmp: InMsgs InErrors ..." then "Icmp: 1 0 ..." ("IcmpMsg:" lines do not match).
        let rows: Vec<&str> = text.lines().filter(|l| l.starts_with("Icmp: ")).collect();
        assert_eq!(rows.len(), 2, "unexpected {file}:\n{text}");
        for (k, v) in rows[0]
            .split_whitespace()
            .zip(rows[1].split_whitespace())
            .skip(1)
        {
            fields.insert(format!("Icmp{k}"), v.parse().unwrap_or(0));
        }
    }
    let p = if v6 { "Icmp6" } else { "Icmp" };
    let get = |k: &str| {
        *fields
            .get(&format!("{p}{k}"))
            .unwrap_or_else(|| panic!("{file} has no {p}{k}:\n{text}"))
    };
    (get("InMsgs"), get("InDestUnreachs"), get("InCsumErrors"))
}

/// A port unreachable as a router (or the client's host) would send it to the VIP, quoting a
/// TCP segment VIP:80 → client:12345 that no connection has: the ICMP message (the kernel adds
/// the outer IP header).
fn stray_port_unreachable(vip: IpAddr, client: IpAddr) -> Vec<u8> {
    let mut tcp = TcpHeader::new(80, 12345, 0x0102_0304, 64240);
    tcp.ack = true;
    tcp.acknowledgment_number = 0x0a0b_0c0d;
    let mut quote = Vec::new();
    match (vip, client) {
        (IpAddr::V4(v), IpAddr::V4(c)) => {
            let mut ip = Ipv4Header::new(20, 57, IpNumber::TCP, v.octets(), c.octets()).unwrap();
            ip.header_checksum = ip.calc_header_checksum();
            tcp.checksum = tcp.calc_checksum_ipv4(&ip, &[]).unwrap();
            quote.extend_from_slice(&ip.to_bytes());
            quote.extend_from_slice(&tcp.to_bytes());
            let icmp = Icmpv4Header::with_checksum(
                Icmpv4Type::DestinationUnreachable(icmpv4::DestUnreachableHeader::Port),
                &quote,
            );
            let mut msg = icmp.to_bytes().to_vec();
            msg.extend_from_slice(&quote);
            msg
        }
        (IpAddr::V6(v), IpAddr::V6(c)) => {
            let ip = Ipv6Header {
                traffic_class: 0,
                flow_label: Default::default(),
                payload_length: 20,
                next_header: IpNumber::TCP,
                hop_limit: 57,
                source: v.octets(),
                destination: c.octets(),
            };
            tcp.checksum = tcp.calc_checksum_ipv6(&ip, &[]).unwrap();
            quote.extend_from_slice(&ip.to_bytes());
            quote.extend_from_slice(&tcp.to_bytes());
            // The kernel computes an ICMPv6 raw socket's checksum itself; this one is already
            // right for the source the client will use.
            let icmp = Icmpv6Header::with_checksum(
                Icmpv6Type::DestinationUnreachable(icmpv6::DestUnreachableCode::Port),
                c.octets(),
                v.octets(),
                &quote,
            )
            .unwrap();
            let mut msg = icmp.to_bytes().to_vec();
            msg.extend_from_slice(&quote);
            msg
        }
        _ => unreachable!("mixed families"),
    }
}

/// VIP local (the default). rvsd claims ICMP errors and echo requests addressed to the VIP and
/// hands those it does not own to the host through its TAP:
///
/// - an ICMP port unreachable sent from the client's namespace (raw socket) to the VIP, quoting
///   VIP:80 → client:12345 that no connection has: rvsd counts it `local` (exactly once), and
///   the director host's own `InDestUnreachs` counter rises by exactly one —
///   not zero (the TAP path lost it) and not two (nftables did not claim it, so the host got
///   it twice) — with no checksum error (the frame reached the host intact);
/// - `ping VIP` (3 requests) is answered 3/3, and rvsd counted the 3 echo requests `local`:
///   the answers came through its TAP path, not around it.
fn local_icmp(mode: Mode, fam: Family) {
    let Some(lab) = build_lab(mode) else { return };
    let what = format!("local_icmp {mode:?} {fam:?}");
    let vip = lab.addrs().vip.get(fam);
    let client_ip = lab.addrs().client.get(fam);
    let v6 = fam == Family::V6;
    let mut d = Daemon::start(&lab, &what, service_rules(&lab, fam, false, 80, "rr"), &[]);
    // The service works (and the paths are warm) before the stray error.
    let _ = gets(&mut d, &lab.client().unwrap(), vip, 3, "warm-up");

    let (unreach, port_code) = if v6 { (1, 4) } else { (3, 3) };
    let host_before = host_icmp(&lab, v6);
    let rvsd_before = d.counters();
    let msg = stray_port_unreachable(vip, client_ip);
    let netns = lab.client().unwrap().netns().clone();
    let sent = netns.run(move || -> io::Result<usize> {
        let (domain, proto) = if v6 {
            (Domain::IPV6, socket2::Protocol::ICMPV6)
        } else {
            (Domain::IPV4, socket2::Protocol::ICMPV4)
        };
        let s = socket2::Socket::new(domain, Type::RAW, Some(proto))?;
        s.send_to(&msg, &SocketAddr::new(vip, 0).into())
    });
    match sent {
        Ok(Ok(_)) => {}
        other => d.fail(&format!("sending the stray ICMP error: {other:?}")),
    }
    let mut host_after = host_before;
    let arrived = wait_for(DEADLINE, || {
        host_after = host_icmp(&lab, v6);
        host_after.1 > host_before.1
    });
    // Let a duplicate, if any, arrive too before counting exactly.
    std::thread::sleep(Duration::from_millis(500));
    let host_after = if arrived {
        host_icmp(&lab, v6)
    } else {
        host_after
    };
    let c = d.counters();
    let local = icmp_count(&c, v6, unreach, port_code, "local")
        - icmp_count(&rvsd_before, v6, unreach, port_code, "local");
    d.check(local == 1, || {
        format!("rvsd should have handed the stray error to the host once, counted {local}")
    });
    d.check(
        // Exactly one dest unreachable; other messages (neighbour discovery) may come and go.
        host_after.0 > host_before.0 && host_after.1 - host_before.1 == 1,
        || {
            format!(
                "the director host's ICMP counters (InMsgs, InDestUnreachs, InCsumErrors) went {host_before:?} -> {host_after:?}; expected exactly +1 dest unreachable"
            )
        },
    );
    d.check(host_after.2 == host_before.2, || {
        format!("the host counted ICMP checksum errors: {host_before:?} -> {host_after:?}")
    });

    // ping VIP: answered by the host stack, through rvsd's TAP.
    let vip_s = vip.to_string();
    let mut args = vec!["ping", "-n", "-c", "3", "-i", "0.2", "-W", "5"];
    if v6 {
        args.push("-6");
    }
    args.push(&vip_s);
    let out = lab
        .lab()
        .exec_timeout(lab.hosts().client, &args, Duration::from_secs(60));
    let text = match out {
        Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
        Err(e) => d.fail(&format!("ping {vip} failed: {e}")),
    };
    d.check(text.contains("3 packets transmitted, 3 received"), || {
        format!("ping {vip}:\n{text}")
    });
    let echo = if v6 { 128 } else { 8 };
    let c = d.counters();
    let echoes = icmp_count(&c, v6, echo, 0, "local");
    d.check(echoes == 3, || {
        format!("rvsd should have handed the 3 echo requests to the host, counted {echoes}")
    });
    d.finish();
}

six!(local_icmp:
    local_icmp_nat_v4 => (Nat, V4), local_icmp_nat_v6 => (Nat, V6),
    local_icmp_dr_v4 => (Dr, V4), local_icmp_dr_v6 => (Dr, V6),
    local_icmp_tun_v4 => (Tun, V4), local_icmp_tun_v6 => (Tun, V6),
);

// ------------------------------------------------------------------------------------------
// 7. A dest deleted during a long transfer and re-added in time.
// ------------------------------------------------------------------------------------------

/// Shuts a TCP stream down when dropped (wakes a thread blocked reading a clone of it).
struct ShutdownOnDrop(TcpStream);

impl Drop for ShutdownOnDrop {
    fn drop(&mut self) {
        let _ = self.0.shutdown(std::net::Shutdown::Both);
    }
}

/// Body size of the long download.
const BIG: u64 = 24 << 20;
/// Where the reader pauses so the dest can be deleted mid-transfer.
const PAUSE_AT: u64 = 1 << 20;
/// The client's receive buffer: small, so little can be in flight while the dest is gone.
const RCVBUF: usize = 64 << 10;

/// Sends `GET /bytes/BIG` and reads the response head; returns the stream, the dest that
/// answers and the body bytes already read.
fn start_download(
    client: &rvs_lab::Client,
    vip: IpAddr,
) -> io::Result<(TcpStream, String, Vec<u8>)> {
    let to = SocketAddr::new(vip, 80);
    let sock = client.netns().socket(
        Domain::for_address(to),
        Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    sock.set_recv_buffer_size(RCVBUF)?;
    sock.connect_timeout(&to.into(), REQ)?;
    let mut s: TcpStream = sock.into();
    s.set_read_timeout(Some(REQ))?;
    write!(
        s,
        "GET /bytes/{BIG} HTTP/1.1\r\nHost: {to}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::other("closed before the response head"));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    if !head.starts_with("http/1.1 200") || !head.contains(&format!("content-length: {BIG}\r\n")) {
        return Err(io::Error::other(format!("unexpected head {head:?}")));
    }
    let dest = head
        .lines()
        .find_map(|l| l.strip_prefix("x-rvs-dest:"))
        .map(|v| v.trim().to_owned())
        .ok_or_else(|| io::Error::other(format!("no x-rvs-dest in {head:?}")))?;
    Ok((s, dest, buf.split_off(end)))
}

/// Reads the body to its end, checking every byte against the servers' pattern (byte `i` is
/// `i mod 251`); pauses once at [`PAUSE_AT`] (says so on `paused`, waits on `go`). Gives up
/// at `deadline`.
fn read_body(
    mut s: TcpStream,
    first: &[u8],
    progress: &AtomicU64,
    paused: &mpsc::Sender<()>,
    go: &mpsc::Receiver<()>,
    deadline: Instant,
) -> Result<(), String> {
    let mut got = 0u64;
    let check = |data: &[u8], got: &mut u64| -> Result<(), String> {
        for &b in data {
            if *got >= BIG {
                return Err("more bytes than Content-Length".into());
            }
            if b != (*got % 251) as u8 {
                return Err(format!("corrupted body at byte {}", *got));
            }
            *got += 1;
        }
        progress.store(*got, Ordering::Relaxed);
        Ok(())
    };
    check(first, &mut got)?;
    let mut buf = vec![0u8; 64 << 10];
    let mut was_paused = false;
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .map_err(|e| e.to_string())?;
    while got < BIG {
        if !was_paused && got >= PAUSE_AT {
            was_paused = true;
            let _ = paused.send(());
            go.recv_timeout(Duration::from_secs(120))
                .map_err(|e| format!("waiting to resume: {e}"))?;
        }
        if Instant::now() >= deadline {
            return Err(format!("stalled: {got} of {BIG} bytes at the deadline"));
        }
        match s.read(&mut buf) {
            Ok(0) => return Err(format!("closed early after {got} bytes")),
            Ok(n) => check(&buf[..n], &mut got)?,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(format!("{e} after {got} bytes")),
        }
    }
    Ok(())
}

/// A 24 MiB download through VIP:80 with a reader that pauses after 1 MiB. While it is paused
/// the dest serving it is deleted (`DeleteDest`); the reader resumes and drains what is
/// buffered, and the connection's packets — the client's window updates, and for NAT the
/// dest's probes — are now dropped: the `dest_unavailable` counter rises, and the transfer
/// is still short of its end (the client's 64 KiB window keeps what is in flight small). Then
/// the dest is re-added (`AddDest`, well within `dest_trash_timeout`) and the transfer
/// completes, every byte checked. Fails if deletion does not affect the connection (no
/// `dest_unavailable` drops), if the dest's trash does not give the connection back (the
/// transfer stalls until the deadline), or if the deletion reset the connection.
fn dest_readded(mode: Mode, fam: Family) {
    dest_deleted(mode, fam, true);
}

/// [`dest_readded`] with `in_time` false: `dest_trash_timeout=0`, so the deleted dest is
/// forgotten at once and the re-added one is a new dest; the old connection's packets are
/// still dropped, and the transfer does not complete within 10 s. The negative control of
/// [`dest_readded`]: it shows that the trash, not something else, resumes the transfer there.
fn dest_deleted(mode: Mode, fam: Family, in_time: bool) {
    let Some(lab) = build_lab(mode) else { return };
    let what = format!("dest_readded {mode:?} {fam:?} in_time={in_time}");
    let vip = lab.addrs().vip.get(fam);
    let svc = tcp_service(&lab, fam, 80);
    let sets: &[(&str, &str)] = if in_time {
        &[]
    } else {
        &[("dest_trash_timeout", "0")]
    };
    let mut d = Daemon::start(&lab, &what, service_rules(&lab, fam, false, 80, "rr"), sets);
    let client = lab.client().unwrap();
    let (stream, dest, first) = match start_download(&client, vip) {
        Ok(x) => x,
        Err(e) => d.fail(&format!("starting the download: {e}")),
    };
    let Some(i) = (0..3).find(|&i| lab.dest_name(i) == Some(dest.as_str())) else {
        d.fail(&format!("unknown dest {dest:?}"))
    };
    let rip = lab.addrs().dests[i].get(fam);
    let progress = AtomicU64::new(0);
    let (paused_tx, paused_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel();
    let deadline = Instant::now() + Duration::from_secs(120);

    std::thread::scope(|scope| {
        // Moved in, so that a failed check (a panic) drops them: the reader then stops at
        // once instead of running to its deadline while the scope waits for it.
        let go_tx = go_tx;
        let _unblock = ShutdownOnDrop(stream.try_clone().expect("cloning the stream"));
        let p = &progress;
        let reader =
            scope.spawn(move || read_body(stream, &first, p, &paused_tx, &go_rx, deadline));
        if paused_rx.recv_timeout(Duration::from_secs(60)).is_err() {
            let got = progress.load(Ordering::Relaxed);
            d.fail(&format!(
                "the download never reached {PAUSE_AT} bytes (at {got})"
            ));
        }
        let before = drop_count(&d.counters(), "dest_unavailable");
        d.call(&Request::DeleteDest {
            service: svc,
            addr: rip,
            port: 80,
        });
        let left: Vec<IpAddr> = d.service(svc).dests.iter().map(|e| e.config.addr).collect();
        d.check(!left.contains(&rip), || {
            format!("{dest} ({rip}) still listed after DeleteDest: {left:?}")
        });
        let _ = go_tx.send(());
        let mut now_unavail = before;
        let dropped = wait_for(DEADLINE, || {
            now_unavail = drop_count(&d.counters(), "dest_unavailable");
            now_unavail > before
        });
        d.check(dropped, || {
            format!(
                "no packet of the connection was dropped as dest_unavailable after deleting {dest} (counter {before} -> {now_unavail}); progress {}",
                progress.load(Ordering::Relaxed)
            )
        });
        // The gap: the dest stays deleted a little longer.
        std::thread::sleep(Duration::from_secs(1));
        let at_readd = progress.load(Ordering::Relaxed);
        d.check(at_readd < BIG && !reader.is_finished(), || {
            format!("the transfer finished ({at_readd} bytes) while {dest} was deleted")
        });
        let dropped = drop_count(&d.counters(), "dest_unavailable") - before;
        d.call(&Request::AddDest {
            service: svc,
            dest: DestConfig {
                fwd: fwd_method(mode),
                ..DestConfig::new(rip, 80)
            },
        });
        if !in_time {
            let completed = wait_for(Duration::from_secs(10), || reader.is_finished());
            let got = progress.load(Ordering::Relaxed);
            d.check(!completed && got < BIG, || {
                format!(
                    "with dest_trash_timeout=0 the re-added {dest} is a new dest, yet the transfer went on ({at_readd} -> {got} bytes, reader finished: {completed})"
                )
            });
            // Not asserted: whether the dest probed again within those 10 s depends on its
            // retransmission backoff.
            let still = drop_count(&d.counters(), "dest_unavailable") - before;
            eprintln!(
                "{what}: {dest} deleted at {at_readd} bytes, stalled at {got} after the re-add, as expected ({dropped} -> {still} dest_unavailable drops)"
            );
            return;
        }
        let r = reader.join().expect("reader thread");
        let got = progress.load(Ordering::Relaxed);
        d.check(r.is_ok(), || {
            format!(
                "after re-adding {dest} (at {at_readd} bytes) the transfer did not complete: {r:?} ({got} of {BIG} bytes)"
            )
        });
        eprintln!(
            "{what}: {dest} deleted at {at_readd} bytes, {dropped} dest_unavailable drops; completed"
        );
    });
    d.finish();
}

six!(dest_readded:
    dest_readded_nat_v4 => (Nat, V4), dest_readded_nat_v6 => (Nat, V6),
    dest_readded_dr_v4 => (Dr, V4), dest_readded_dr_v6 => (Dr, V6),
    dest_readded_tun_v4 => (Tun, V4), dest_readded_tun_v6 => (Tun, V6),
);

#[test]
fn dest_readded_too_late_nat_v4() {
    dest_deleted(Mode::Nat, Family::V4, false)
}

#[test]
fn dest_readded_too_late_dr_v6() {
    dest_deleted(Mode::Dr, Family::V6, false)
}
