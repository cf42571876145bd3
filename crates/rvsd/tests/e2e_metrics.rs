//! Prometheus metrics on a real director (issue 6, "Metrics and logs"): the daemon in a lab's
//! director namespace serves `/metrics` on loopback; scraped before and after N HTTP requests
//! through a NAT virtual service, the counters move as the traffic says — N connections for
//! the service, split over the dests as round robin and the client's replies say, packets and
//! bytes consistent with what crossed, every frame and every SYN counted by a worker, no drops
//! — and the rates follow once the estimator has run.
//!
//! Needs root: without it the test prints `SKIPPED` and passes, unless `RVS_E2E=1`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use rvs_lab::{
    DirectorLab, DirectorLabOpts, Family, Mode, Netns, Rvsd, RvsdOpts, or_skip, service_rules,
};

/// The daemon's default metrics listener.
const METRICS: &str = "127.0.0.1:9753";

/// HTTP requests through the VIP (a multiple of the three dests).
const N: u64 = 12;

/// Send `GET path` to `addr` from inside `ns`; returns (status, headers, body).
fn get(ns: &Netns, addr: &str, path: &str) -> std::io::Result<(u16, String, String)> {
    let addr: SocketAddr = addr.parse().unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    ns.run(move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        s.write_all(req.as_bytes())?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        Ok((status, head.to_string(), body.to_string()))
    })?
}

/// One scrape: every sample by `name{labels}`.
#[derive(Debug, Clone)]
struct Scrape(BTreeMap<String, f64>);

impl Scrape {
    fn take(ns: &Netns) -> Scrape {
        let (status, head, body) = get(ns, METRICS, "/metrics").unwrap();
        assert_eq!(status, 200, "{head}\n{body}");
        assert!(
            head.lines().any(|l| l
                .eq_ignore_ascii_case("content-type: text/plain; version=0.0.4; charset=utf-8")),
            "{head}"
        );
        let mut m = BTreeMap::new();
        for line in body.lines().filter(|l| !l.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').unwrap();
            assert!(
                m.insert(series.to_string(), value.parse().unwrap())
                    .is_none(),
                "duplicate series {series}"
            );
        }
        Scrape(m)
    }

    /// The value of one series (0 when absent, as a counter that has not moved yet).
    fn get(&self, series: &str) -> u64 {
        self.0.get(series).copied().unwrap_or(0.0) as u64
    }

    /// The sum over every series of the family `name`.
    fn sum(&self, name: &str) -> u64 {
        self.0
            .iter()
            .filter(|(k, _)| k.as_str() == name || k.starts_with(&format!("{name}{{")))
            .map(|(_, v)| *v as u64)
            .sum()
    }

    /// Every series of family `name`.
    fn family(&self, name: &str) -> Vec<(&str, u64)> {
        self.0
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("{name}{{")))
            .map(|(k, v)| (k.as_str(), *v as u64))
            .collect()
    }
}

#[test]
fn metrics_follow_the_traffic() {
    let Some(lab) = or_skip(DirectorLab::new(DirectorLabOpts {
        mode: Mode::Nat,
        ..DirectorLabOpts::default()
    })) else {
        return;
    };
    let fam = Family::V4;
    let opts = RvsdOpts {
        rules: service_rules(&lab, fam, false, 80, "rr"),
        workers: Some(2),
        ..RvsdOpts::default()
    };
    let d = Rvsd::start(&lab, Path::new(env!("CARGO_BIN_EXE_rvsd")), &opts).unwrap();
    let ns = lab.netns(lab.hosts().director).unwrap();
    let vip = lab.addrs().vip.get(fam);
    let svc = format!("tcp/{vip}:80");
    let dest_series = |i: usize, what: &str| {
        let rip = lab.addrs().dests[i].get(fam);
        format!("{{service=\"{svc}\",dest=\"{rip}:80\",method=\"masq\"{what}}}")
    };

    // The control socket (which `Rvsd::start` waits for) comes up before the workers; their
    // series appear once all are running.
    let deadline = Instant::now() + Duration::from_secs(20);
    let before = loop {
        let s = Scrape::take(&ns);
        if s.family("rvs_worker_frames_total").len() == 2 {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "workers never reported: {:#?}",
            s.0
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        before.get(&format!(
            "rvs_build_info{{version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        )),
        1
    );
    for i in 0..3 {
        assert_eq!(
            before.get(&format!("rvs_dest_weight{}", dest_series(i, ""))),
            1
        );
    }

    // N requests through the VIP; which dest answered each.
    let client = lab.client().unwrap();
    let mut answered = BTreeMap::new();
    let mut body_bytes = 0u64;
    for _ in 0..N {
        let r = client
            .http_get(vip, 80, "/", Duration::from_secs(5))
            .unwrap();
        assert_eq!(r.status, 200);
        body_bytes += r.body.len() as u64;
        *answered.entry(r.dest.unwrap()).or_insert(0u64) += 1;
    }

    // Wait for the last FINs and ACKs to pass: two scrapes in a row with the same frame count.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut after = Scrape::take(&ns);
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let again = Scrape::take(&ns);
        let rx = "rvs_dataplane_received_frames_total";
        let settled = again.get(rx) == after.get(rx);
        after = again;
        if settled {
            break;
        }
        assert!(Instant::now() < deadline, "traffic never settled");
    }
    let delta = |series: &str| after.get(series) - before.get(series);
    let report = format!("{:#?}", after.0);

    // Connections: N for the service, split over the dests as the replies say (rr: N/3 each).
    assert_eq!(
        delta(&format!(
            "rvs_service_connections_total{{service=\"{svc}\"}}"
        )),
        N,
        "{report}"
    );
    for i in 0..3 {
        let name = lab.dest_name(i).unwrap();
        let conns = delta(&format!("rvs_dest_connections_total{}", dest_series(i, "")));
        assert_eq!(
            conns,
            answered.get(name).copied().unwrap_or(0),
            "{name}: {answered:?}"
        );
        assert_eq!(conns, N / 3, "round robin over three dests: {answered:?}");
    }
    assert_eq!(delta("rvs_conn_table_inserted_total"), N, "{report}");
    assert!(after.get("rvs_conn_table_entries") > 0);

    // Packets and bytes: each request is at least SYN, ACK, request, FIN in and SYN-ACK,
    // response, FIN out; every IPv4/TCP packet is at least 40 bytes; the responses carried
    // at least the bodies the client read. The dests' series add up to the service's.
    let svc_series = |what: &str| format!("{{service=\"{svc}\",direction=\"{what}\"}}");
    let pkts_in = delta(&format!("rvs_service_packets_total{}", svc_series("in")));
    let pkts_out = delta(&format!("rvs_service_packets_total{}", svc_series("out")));
    let bytes_in = delta(&format!("rvs_service_bytes_total{}", svc_series("in")));
    let bytes_out = delta(&format!("rvs_service_bytes_total{}", svc_series("out")));
    assert!(
        pkts_in >= 4 * N && pkts_out >= 3 * N,
        "{pkts_in} {pkts_out}"
    );
    assert!(bytes_in >= 40 * pkts_in, "{bytes_in} {pkts_in}");
    assert!(
        bytes_out >= 40 * pkts_out + body_bytes,
        "{bytes_out} {body_bytes}"
    );
    for (family, total) in [
        ("rvs_dest_packets_total", pkts_in + pkts_out),
        ("rvs_dest_bytes_total", bytes_in + bytes_out),
    ] {
        let by_dest: u64 = (0..3)
            .flat_map(|i| ["in", "out"].map(|dir| (i, dir)))
            .map(|(i, dir)| {
                delta(&format!(
                    "{family}{}",
                    dest_series(i, &format!(",direction=\"{dir}\""))
                ))
            })
            .sum();
        assert_eq!(by_dest, total, "{family}");
    }

    // The dataplane forwarded all of it and dropped nothing; the workers saw every frame and
    // every SYN; the I/O layer transmitted what the dataplane forwarded.
    let rx = delta("rvs_dataplane_received_frames_total");
    let fwd = delta("rvs_dataplane_forwarded_frames_total");
    assert!(rx >= pkts_in + pkts_out, "{rx} {pkts_in} {pkts_out}");
    assert!(fwd >= pkts_in + pkts_out, "{fwd}");
    let drops = after.family("rvs_dropped_packets_total");
    assert!(drops.len() > 10, "every reason listed: {drops:?}");
    assert_eq!(after.sum("rvs_dropped_packets_total"), 0, "{drops:?}");
    assert_eq!(
        after.sum("rvs_worker_frames_total"),
        after.get("rvs_dataplane_received_frames_total"),
        "{report}"
    );
    assert_eq!(after.family("rvs_worker_frames_total").len(), 2);
    // Every SYN, and a retransmitted one counts again.
    let syns = after.sum("rvs_worker_tcp_syn_total") - before.sum("rvs_worker_tcp_syn_total");
    assert!(syns >= N, "{syns}");
    assert!(delta("rvs_io_rx_frames_total") >= rx);
    // Each forwarded frame was transmitted or counted where it failed.
    let out: u64 = [
        "rvs_io_tx_frames_total",
        "rvs_io_tx_errors_total",
        "rvs_io_neigh_timeout_total",
        "rvs_io_unreachable_total",
        "rvs_io_no_egress_total",
    ]
    .iter()
    .map(|m| delta(m))
    .sum();
    assert!(out >= fwd, "{out} {fwd}: {report}");

    // The rates follow once the estimator has folded an interval (every 2 s).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = Scrape::take(&ns);
        let cps = s.get(&format!(
            "rvs_service_connections_per_second{{service=\"{svc}\"}}"
        ));
        let bps = s.get(&format!(
            "rvs_service_bytes_per_second{}",
            svc_series("out")
        ));
        if cps > 0 && bps > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "rates never moved: {:#?}", s.0);
        std::thread::sleep(Duration::from_millis(250));
    }

    // The live exposition passes Prometheus's linter (where promtool is installed; the unit
    // test in metrics.rs insists on it under RVS_E2E=1).
    let (_, _, body) = get(&ns, METRICS, "/metrics").unwrap();
    if let Ok(mut child) = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(body.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && report.trim().is_empty(),
            "promtool: {report}"
        );
    }

    // Only /metrics, only on loopback.
    let (status, ..) = get(&ns, METRICS, "/").unwrap();
    assert_eq!(status, 404);
    let lan = SocketAddr::new(lab.addrs().director.get(fam), 9753).to_string();
    let refused = get(&ns, &lan, "/metrics");
    assert!(
        refused.is_err(),
        "the LAN address must not serve metrics: {refused:?}"
    );

    let exit = d.stop().unwrap();
    assert_eq!(exit.code, Some(0), "{}", exit.stderr);
    assert!(
        exit.stderr.contains(&format!("metrics={METRICS}")),
        "{}",
        exit.stderr
    );
}
