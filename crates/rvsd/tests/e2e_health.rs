//! Health checks on the real kernel (issue 6, "Health checks"): a dest whose server stops
//! accepting is quiesced (weight 0) or removed after `fall` failed checks — new connections
//! move away, an existing connection to it keeps flowing — and takes traffic again after
//! `rise` good checks. Each transition is logged once.
//!
//! The dest's server "stops" the way a crashed or overloaded one does for new clients: an
//! nftables rule in its namespace resets every new connection to its ports, while connections
//! already established carry on (stopping the server process would close them too).
//!
//! Needs root: without it the test prints `SKIPPED` and passes, unless `RVS_E2E=1`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use rvs_api::{Reply, Request, ServiceList};
use rvs_lab::{DirectorLab, DirectorLabOpts, Family, Mode, Rvsd, RvsdOpts, or_skip, service_rules};

const T: Duration = Duration::from_secs(5);

fn services(d: &Rvsd<'_>) -> ServiceList {
    match d.call(&Request::ListServices { service: None }).unwrap() {
        Reply::Services(l) => l,
        other => panic!("{other:?}"),
    }
}

/// The weight of `rip` in the service on `vip:port`; `None` when it is not a dest of it.
fn weight(d: &Rvsd<'_>, vip: IpAddr, port: u16, rip: IpAddr) -> Option<u32> {
    let l = services(d);
    let s = l
        .services
        .iter()
        .find(|s| s.config.service.addr == vip && s.config.service.port == port)?;
    s.dests
        .iter()
        .find(|x| x.config.addr == rip)
        .map(|x| x.config.weight)
}

/// Wait (up to 20 s) until `cond` holds.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Which dests answered `n` GETs to the VIP (by name); every GET must succeed.
fn gets(lab: &DirectorLab, vip: IpAddr, n: usize) -> BTreeMap<String, usize> {
    let client = lab.client().unwrap();
    let mut by = BTreeMap::new();
    for i in 0..n {
        let r = client
            .http_get(vip, 80, "/", T)
            .unwrap_or_else(|e| panic!("GET {i} to {vip}: {e}"));
        assert_eq!(r.status, 200);
        *by.entry(r.dest.unwrap_or_default()).or_insert(0) += 1;
    }
    by
}

/// Reset every new TCP connection to ports 7 and 80 in dest `i`'s namespace (or stop doing so).
fn block(lab: &DirectorLab, i: usize, on: bool) {
    let host = lab.hosts().dests[i];
    let cmds: Vec<Vec<&str>> = if on {
        vec![
            vec!["nft", "add", "table", "inet", "rvs_hc_test"],
            vec![
                "nft",
                "add chain inet rvs_hc_test input { type filter hook input priority 0 ; }",
            ],
            vec![
                "nft",
                "add rule inet rvs_hc_test input tcp dport { 7, 80 } tcp flags & (syn | ack) == syn reject with tcp reset",
            ],
        ]
    } else {
        vec![vec!["nft", "delete", "table", "inet", "rvs_hc_test"]]
    };
    for c in cmds {
        let out = lab.lab().exec(host, &c).unwrap();
        assert!(
            out.status.success(),
            "{c:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn a_failing_dest_is_quiesced_or_removed_and_comes_back() {
    let Some(lab) = or_skip(DirectorLab::new(DirectorLabOpts {
        mode: Mode::Dr,
        ..DirectorLabOpts::default()
    })) else {
        return;
    };
    let a = lab.addrs();
    let vip4 = a.vip.get(Family::V4);
    let vip6 = a.vip.get(Family::V6);
    let victim = 0;
    let rip4 = a.dests[victim].get(Family::V4);
    let rip6 = a.dests[victim].get(Family::V6);
    let name = |i: usize| lab.dest_name(i).unwrap();
    // Echo over IPv4 with a TCP check, quiesced on failure; HTTP over IPv6 with an HTTP check
    // whose expected body is each dest's own name (a per-dest override), removed on failure.
    let mut config = format!(
        "[health_check.\"tcp/{vip4}:7\"]\nkind = \"tcp\"\ninterval = \"200ms\"\n\
         timeout = \"1s\"\nrise = 2\nfall = 2\n\
         [health_check.\"tcp/[{vip6}]:80\"]\nkind = \"http\"\npath = \"/\"\n\
         interval = 0.2\ntimeout = 1\nrise = 2\nfall = 2\non_fail = \"remove\"\n"
    );
    for i in 0..3 {
        config.push_str(&format!(
            "[health_check.\"tcp/[{vip6}]:80\".dest.\"{}\"]\nbody_contains = \"{}\"\n",
            a.dests[i].get(Family::V6),
            name(i)
        ));
    }
    let mut rules = service_rules(&lab, Family::V4, false, 7, "rr");
    rules.push_str(&service_rules(&lab, Family::V6, false, 80, "rr"));
    let opts = RvsdOpts {
        rules,
        config: Some(config.clone()),
        workers: Some(2),
        ..RvsdOpts::default()
    };
    let d = Rvsd::start(&lab, Path::new(env!("CARGO_BIN_EXE_rvsd")), &opts).unwrap();

    // Healthy: everybody serves.
    let by = gets(&lab, vip6, 9);
    assert_eq!(by.len(), 3, "{by:?}");
    let client = lab.client().unwrap();
    // One echo session per dest (rr); keep the victim's.
    let mut sessions: Vec<_> = (0..3)
        .map(|_| client.tcp_connect(vip4, 7, T).unwrap())
        .collect();
    for s in &mut sessions {
        s.echo(b"hello", T).unwrap();
    }
    let conns = match d.call(&Request::ListConnections).unwrap() {
        Reply::Connections(c) => c,
        other => panic!("{other:?}"),
    };
    let on_victim = sessions
        .iter()
        .position(|s| {
            let port = s.local_addr().unwrap().port();
            conns
                .iter()
                .any(|c| c.cport == port && c.vport == 7 && c.daddr == rip4)
        })
        .expect("an echo session on the victim");
    let mut kept = sessions.swap_remove(on_victim);

    // The victim stops accepting: after `fall` checks it is quiesced in one service and
    // removed from the other.
    block(&lab, victim, true);
    wait_for("the victim quiesced", || {
        weight(&d, vip4, 7, rip4) == Some(0)
    });
    wait_for("the victim removed", || {
        weight(&d, vip6, 80, rip6).is_none()
    });
    assert!(weight(&d, vip4, 7, a.dests[1].get(Family::V4)) == Some(1));

    // New connections go elsewhere, every one succeeds...
    let by = gets(&lab, vip6, 8);
    assert!(!by.contains_key(name(victim)), "{by:?}");
    assert_eq!(by.values().sum::<usize>(), 8);
    let echo_before = lab.server_stats(victim).unwrap().tcp_echo_connections;
    for _ in 0..6 {
        let mut s = client.tcp_connect(vip4, 7, T).unwrap();
        s.echo(b"new", T).unwrap();
    }
    assert_eq!(
        lab.server_stats(victim).unwrap().tcp_echo_connections,
        echo_before,
        "no new echo connection reached the quiesced dest"
    );
    // ...and the established one keeps flowing.
    kept.echo(b"still here", T).unwrap();
    // The metrics show the state: the victim down in the echo service, the others up.
    let m = metrics(&lab);
    let victim_series = format!(
        "rvs_health_check_up{{service=\"tcp/{}\",dest=\"{}\"}} 0",
        std::net::SocketAddr::new(vip4, 7),
        std::net::SocketAddr::new(rip4, 7)
    );
    assert!(
        m.lines().any(|l| l == victim_series),
        "{victim_series} in:\n{m}"
    );
    assert!(
        m.lines()
            .any(|l| l.starts_with("rvs_health_check_up{") && l.ends_with(" 1")),
        "{m}"
    );

    // It recovers: after `rise` checks it takes new connections again, with its weight.
    block(&lab, victim, false);
    wait_for("the victim's weight back", || {
        weight(&d, vip4, 7, rip4) == Some(1)
    });
    wait_for("the victim re-added", || {
        weight(&d, vip6, 80, rip6) == Some(1)
    });
    let by = gets(&lab, vip6, 9);
    assert_eq!(by.get(name(victim)), Some(&3), "{by:?}");
    for _ in 0..6 {
        let mut s = client.tcp_connect(vip4, 7, T).unwrap();
        s.echo(b"back", T).unwrap();
    }
    assert!(lab.server_stats(victim).unwrap().tcp_echo_connections > echo_before);
    kept.echo(b"and still", T).unwrap();
    drop(kept);
    drop(sessions);

    // The HTTP check judges the body: a reload expects another dest's name from dest 1, which
    // goes down although it accepts and answers 200.
    let wrong = config.replace(
        &format!("body_contains = \"{}\"", name(1)),
        &format!("body_contains = \"{}\"", name(2)),
    );
    assert_ne!(wrong, config);
    d.reload(None, Some(&wrong)).unwrap();
    let rip6_1 = a.dests[1].get(Family::V6);
    wait_for("dest 1 removed", || weight(&d, vip6, 80, rip6_1).is_none());
    let by = gets(&lab, vip6, 6);
    assert!(!by.contains_key(name(1)), "{by:?}");

    let exit = d.stop().unwrap();
    assert_eq!(exit.code, Some(0), "{}", exit.stderr);
    let log = &exit.stderr;
    let svc4 = format!("tcp/{vip4}:7");
    let svc6 = format!("tcp/[{vip6}]:80");
    // Exactly one line per transition, naming the service and the dest.
    for (svc, dest) in [
        (&svc4, format!("{rip4}:7")),
        (&svc6, format!("[{rip6}]:80")),
    ] {
        let lines = |needle: &str| {
            log.lines()
                .filter(|l| l.contains(needle) && l.contains(svc.as_str()) && l.contains(&dest))
                .count()
        };
        assert_eq!(lines("dest down"), 1, "{svc} down once:\n{log}");
        assert_eq!(lines("dest up"), 1, "{svc} up once:\n{log}");
    }
    assert!(log.contains("Connection refused"), "{log}");
    let body = log
        .lines()
        .filter(|l| l.contains("dest down") && l.contains(&format!("[{rip6_1}]:80")))
        .collect::<Vec<_>>();
    assert!(
        body.len() == 1 && body[0].contains(&format!("does not contain \"{}\"", name(2))),
        "{log}"
    );
    assert!(log.contains("SIGHUP: configuration reloaded"), "{log}");
    assert_eq!(
        log.lines().filter(|l| l.contains("dest down")).count(),
        3,
        "only the victim and dest 1 went down:\n{log}"
    );
}

/// `GET /metrics` from inside the director's namespace (the listener is on its loopback).
fn metrics(lab: &DirectorLab) -> String {
    use std::io::{Read, Write};
    let ns = rvs_lab::Netns::named(&lab.director_netns().unwrap());
    ns.run(|| {
        let mut s = std::net::TcpStream::connect("127.0.0.1:9753").unwrap();
        s.set_read_timeout(Some(T)).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
    .unwrap()
}
