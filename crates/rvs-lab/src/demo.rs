//! `rvs-lab demo --rvsd PATH`: the README's first command, run by `demo.sh`.
//!
//! Builds [`DirectorLab`]s, runs the real `rvsd` in them and prints a short report:
//!
//! 1. **Balancing** — for NAT, DR and TUN, IPv4 and IPv6: 300 HTTP GETs through the VIP of an
//!    `rr` service over the three dests; every request must succeed and each dest must answer
//!    exactly a third of them.
//! 2. **Path MTU** — link AB at 1280 bytes, a 4 MiB download through the VIP: with the
//!    director's ICMP forwarding it must complete (the routers' frag-needed / packet-too-big
//!    errors reach the owning dest), without it (`icmp_forward=0`) it must stall for 10 s.
//!    Every case runs in a fresh lab, because a host that learned a path MTU remembers it.
//! 3. The director's ICMP counters of each path-MTU lab.
//!
//! Progress goes to standard error, the report to standard output. Every lab is removed when
//! it is dropped; at the end the demo checks that none of its namespaces is left. The result
//! is `Ok(true)` when every check passed.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use rvs_api::Counters;
use rvs_lab::{
    ClientError, DirectorLab, DirectorLabOpts, Family, Mode, Result, Rvsd, RvsdOpts, service_rules,
};

/// How the demo runs.
#[derive(Debug, Clone)]
pub(crate) struct DemoOpts {
    /// GETs per mode and family in the balancing part (a multiple of 3 keeps rr exact).
    pub(crate) requests: u32,
    /// Size of the path-MTU download.
    pub(crate) mtu_bytes: u64,
    /// How long a download without ICMP forwarding is given before it counts as stalled.
    pub(crate) stall: Duration,
}

impl Default for DemoOpts {
    fn default() -> Self {
        Self {
            requests: 300,
            mtu_bytes: 4 << 20,
            stall: Duration::from_secs(10),
        }
    }
}

/// The HTTP service port.
const PORT: u16 = 80;
/// Deadline of one GET.
const GET_TIMEOUT: Duration = Duration::from_secs(5);
/// Deadline of a download that must complete.
const COMPLETE_TIMEOUT: Duration = Duration::from_secs(60);
/// The modes, in report order.
const MODES: [Mode; 3] = [Mode::Nat, Mode::Dr, Mode::Tun];

fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Nat => "NAT",
        Mode::Dr => "DR",
        Mode::Tun => "TUN",
    }
}

fn fam_name(f: Family) -> &'static str {
    match f {
        Family::V4 => "IPv4",
        Family::V6 => "IPv6",
    }
}

/// rvsd's rules for the lab: one `rr` service per family on the VIP's port 80.
fn rules(lab: &DirectorLab) -> String {
    Family::ALL
        .iter()
        .map(|&f| service_rules(lab, f, false, PORT, "rr"))
        .collect()
}

fn progress(msg: &str) {
    eprintln!("[demo] {msg}");
}

/// The checks that failed, with what is needed to understand them.
#[derive(Default)]
struct Failures(Vec<String>);

impl Failures {
    fn add(&mut self, what: String) {
        progress(&format!("FAILED: {what}"));
        self.0.push(what);
    }
}

/// The last lines of a log, indented.
fn tail(log: &str, lines: usize) -> String {
    let all: Vec<&str> = log.lines().collect();
    let start = all.len().saturating_sub(lines);
    all[start..]
        .iter()
        .map(|l| format!("      {l}\n"))
        .collect()
}

/// Stop rvsd; its exit status must be 0 (a clean SIGTERM teardown).
fn stop(d: Rvsd<'_>, what: &str, failures: &mut Failures) -> String {
    match d.stop() {
        Ok(exit) if exit.code == Some(0) => exit.stderr,
        Ok(exit) => {
            failures.add(format!(
                "{what}: rvsd exited with {:?}; its log ends with:\n{}",
                exit.code,
                tail(&exit.stderr, 20)
            ));
            exit.stderr
        }
        Err(e) => {
            failures.add(format!("{what}: stopping rvsd: {e}"));
            String::new()
        }
    }
}

// ------------------------------------------------------------------------------------------
// Balancing.
// ------------------------------------------------------------------------------------------

/// Answers per dest name, and failures (with the first error).
struct Balance {
    mode: Mode,
    fam: Family,
    per_dest: BTreeMap<String, u32>,
    failed: u32,
    first_error: Option<String>,
    elapsed: Duration,
}

fn balance_mode(
    rvsd: &Path,
    mode: Mode,
    opts: &DemoOpts,
    failures: &mut Failures,
) -> Result<Vec<Balance>> {
    progress(&format!("{}: building the lab", mode_name(mode)));
    let lab = DirectorLab::new(DirectorLabOpts {
        mode,
        ..DirectorLabOpts::default()
    })?;
    let d = Rvsd::start(
        &lab,
        rvsd,
        &RvsdOpts {
            rules: rules(&lab),
            ..RvsdOpts::default()
        },
    )?;
    let client = lab.client()?;
    let mut out = Vec::new();
    for fam in Family::ALL {
        progress(&format!(
            "{} {}: {} GETs through the VIP",
            mode_name(mode),
            fam_name(fam),
            opts.requests
        ));
        let vip = lab.addrs().vip.get(fam);
        let start = Instant::now();
        let mut b = Balance {
            mode,
            fam,
            per_dest: (0..3)
                .filter_map(|i| lab.dest_name(i))
                .map(|n| (n.to_owned(), 0))
                .collect(),
            failed: 0,
            first_error: None,
            elapsed: Duration::ZERO,
        };
        for _ in 0..opts.requests {
            match client.http_get(vip, PORT, "/", GET_TIMEOUT) {
                Ok(r) if r.status == 200 => {
                    *b.per_dest
                        .entry(r.dest.unwrap_or_else(|| "?".to_owned()))
                        .or_insert(0) += 1;
                }
                Ok(r) => {
                    b.failed += 1;
                    b.first_error
                        .get_or_insert_with(|| format!("HTTP status {}", r.status));
                }
                Err(e) => {
                    b.failed += 1;
                    b.first_error.get_or_insert_with(|| e.to_string());
                }
            }
        }
        b.elapsed = start.elapsed();
        let third = opts.requests / 3;
        let even = !opts.requests.is_multiple_of(3) || b.per_dest.values().all(|&n| n == third);
        if b.failed > 0 || !even || b.per_dest.len() != 3 {
            failures.add(format!(
                "{} {} balancing: {:?}, {} failed (first error: {})",
                mode_name(mode),
                fam_name(fam),
                b.per_dest,
                b.failed,
                b.first_error.as_deref().unwrap_or("none")
            ));
        }
        out.push(b);
    }
    stop(d, &format!("{} balancing", mode_name(mode)), failures);
    lab.close()?;
    Ok(out)
}

// ------------------------------------------------------------------------------------------
// Path MTU.
// ------------------------------------------------------------------------------------------

/// One download of the path-MTU scenario.
struct MtuRun {
    fam: Family,
    result: std::result::Result<Duration, ClientError>,
}

/// One path-MTU lab: a mode, ICMP forwarding on or off, both families.
struct MtuLab {
    mode: Mode,
    forwarding: bool,
    runs: Vec<MtuRun>,
    counters: Option<Counters>,
    log: String,
}

fn mtu_lab(rvsd: &Path, mode: Mode, forwarding: bool, opts: &DemoOpts) -> Result<MtuLab> {
    let lab = DirectorLab::new(DirectorLabOpts {
        mode,
        ab_mtu: 1280,
        ..DirectorLabOpts::default()
    })?;
    let sets = if forwarding {
        Vec::new()
    } else {
        vec![("icmp_forward".to_owned(), "0".to_owned())]
    };
    let d = Rvsd::start(
        &lab,
        rvsd,
        &RvsdOpts {
            rules: rules(&lab),
            sets,
            ..RvsdOpts::default()
        },
    )?;
    let client = lab.client()?;
    // One small GET to each dest first (too small to need path-MTU discovery), so the timed
    // download does not include what a freshly built lab does once: neighbour discovery, and
    // an occasional lost first SYN-ACK in IPv6 that costs a 1 s retransmission.
    for fam in Family::ALL {
        for _ in 0..3 {
            let _ = client.http_get(lab.addrs().vip.get(fam), PORT, "/", GET_TIMEOUT);
        }
    }
    let limit = if forwarding {
        COMPLETE_TIMEOUT
    } else {
        opts.stall
    };
    let runs = std::thread::scope(|s| {
        let handles: Vec<_> = Family::ALL
            .iter()
            .map(|&fam| {
                let client = client.clone();
                let vip: IpAddr = lab.addrs().vip.get(fam);
                let bytes = opts.mtu_bytes;
                s.spawn(move || MtuRun {
                    fam,
                    result: client.download(vip, PORT, bytes, limit).map(|t| t.elapsed),
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().ok())
            .collect::<Vec<_>>()
    });
    let counters = d.counters().ok();
    let log = match d.stop() {
        Ok(exit) if exit.code == Some(0) => exit.stderr,
        Ok(exit) => format!("rvsd exited with {:?}\n{}", exit.code, exit.stderr),
        Err(e) => format!("stopping rvsd: {e}"),
    };
    lab.close()?;
    Ok(MtuLab {
        mode,
        forwarding,
        runs,
        counters,
        log,
    })
}

/// The too-big error of a family: (is IPv6, type, code).
fn too_big(fam: Family) -> (bool, u8, u8) {
    match fam {
        Family::V4 => (false, 3, 4),
        Family::V6 => (true, 2, 0),
    }
}

fn icmp_count(c: &Counters, fam: Family, outcome: &str) -> u64 {
    let (v6, t, code) = too_big(fam);
    c.icmp
        .iter()
        .filter(|i| i.v6 == v6 && i.icmp_type == t && i.code == code && i.outcome == outcome)
        .map(|i| i.count)
        .sum()
}

fn forwarded(mode: Mode) -> &'static str {
    match mode {
        Mode::Nat => "forwarded_masq",
        Mode::Dr => "forwarded_route",
        Mode::Tun => "forwarded_tunnel",
    }
}

/// Checks one path-MTU lab: downloads complete (forwarding on) or stall (off), and the
/// counters say the errors were forwarded (on) or handed to the host (off).
fn check_mtu(l: &MtuLab, failures: &mut Failures) {
    let mut problems = Vec::new();
    if l.runs.len() != 2 {
        problems.push("a download thread did not finish".to_owned());
    }
    for r in &l.runs {
        match (&r.result, l.forwarding) {
            (Ok(_), true) | (Err(ClientError::Stalled { .. }), false) => {}
            (Ok(t), false) => problems.push(format!(
                "{}: completed in {:.2} s although nothing forwards the errors",
                fam_name(r.fam),
                t.as_secs_f64()
            )),
            (Err(e), _) => problems.push(format!("{}: {e}", fam_name(r.fam))),
        }
    }
    match &l.counters {
        None => problems.push("rvsd's counters could not be read".to_owned()),
        Some(c) => {
            for fam in Family::ALL {
                let received = icmp_count(c, fam, "received");
                let fwd = icmp_count(c, fam, forwarded(l.mode));
                let local = icmp_count(c, fam, "local");
                let good = if l.forwarding {
                    received > 0 && fwd > 0 && local == 0
                } else {
                    received > 0 && fwd == 0 && local > 0
                };
                if !good {
                    problems.push(format!(
                        "{}: too-big errors received {received}, {} {fwd}, local {local}",
                        fam_name(fam),
                        forwarded(l.mode)
                    ));
                }
            }
        }
    }
    if !problems.is_empty() {
        failures.add(format!(
            "{} path MTU, ICMP forwarding {}: {}; rvsd's log ends with:\n{}",
            mode_name(l.mode),
            if l.forwarding { "on" } else { "off" },
            problems.join("; "),
            tail(&l.log, 20)
        ));
    }
}

/// A duration for people: milliseconds below a second.
fn human(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

fn describe_run(r: Option<&MtuRun>, stall: Duration) -> String {
    match r.map(|r| &r.result) {
        Some(Ok(t)) => format!("completed in {}", human(*t)),
        Some(Err(ClientError::Stalled { progress })) => format!(
            "stalled: not done after {} s ({progress} bytes)",
            stall.as_secs()
        ),
        Some(Err(e)) => format!("FAILED: {e}"),
        None => "not run".to_owned(),
    }
}

/// The ICMP counters of a lab, one line per message kind.
fn icmp_lines(c: &Counters) -> Vec<String> {
    let mut kinds: BTreeMap<(bool, u8, u8), Vec<String>> = BTreeMap::new();
    for i in &c.icmp {
        let outcome = match &i.reason {
            Some(r) => format!("{} ({r})", i.outcome),
            None => i.outcome.clone(),
        };
        kinds
            .entry((i.v6, i.icmp_type, i.code))
            .or_default()
            .push(format!("{outcome} {}", i.count));
    }
    kinds
        .into_iter()
        .map(|((v6, t, code), outcomes)| {
            let name = match (v6, t, code) {
                (false, 3, 4) => "ICMPv4 frag-needed".to_owned(),
                (true, 2, 0) => "ICMPv6 packet-too-big".to_owned(),
                (false, t, c) => format!("ICMPv4 type {t} code {c}"),
                (true, t, c) => format!("ICMPv6 type {t} code {c}"),
            };
            format!("{name}: {}", outcomes.join(", "))
        })
        .collect()
}

// ------------------------------------------------------------------------------------------
// The whole demo.
// ------------------------------------------------------------------------------------------

/// Run the demo with `rvsd` as the daemon; `Ok(true)` when every check passed. Errors are
/// those of building a lab or starting rvsd (not root, tools missing, rvsd not starting).
pub(crate) fn run(rvsd: &Path, opts: &DemoOpts) -> Result<bool> {
    let started = Instant::now();
    let mut failures = Failures::default();
    let mut report = String::new();

    // 1. Balancing, one mode after the other.
    let mut balances = Vec::new();
    for mode in MODES {
        balances.extend(balance_mode(rvsd, mode, opts, &mut failures)?);
    }
    let _ = writeln!(
        report,
        "\nRVS demo: {} in network-namespace labs (client, router-a, router-b, director, \
         dest1..3)",
        rvsd.display()
    );
    let _ = writeln!(
        report,
        "\nBalancing: {} HTTP GETs per family through the VIP, scheduler rr, 3 dests of weight 1",
        opts.requests
    );
    let _ = writeln!(
        report,
        "  {:<5} {:<7} {:>6} {:>6} {:>6} {:>7} {:>9}",
        "mode", "family", "dest1", "dest2", "dest3", "failed", "time"
    );
    for b in &balances {
        let n = |name: &str| b.per_dest.get(name).copied().unwrap_or(0);
        let _ = writeln!(
            report,
            "  {:<5} {:<7} {:>6} {:>6} {:>6} {:>7} {:>9}",
            mode_name(b.mode),
            fam_name(b.fam),
            n("dest1"),
            n("dest2"),
            n("dest3"),
            b.failed,
            human(b.elapsed)
        );
    }

    // 2. Path MTU: six fresh labs at once (three modes, forwarding on and off).
    progress(&format!(
        "path MTU: 6 labs (NAT, DR, TUN; ICMP forwarding on and off), {} MiB downloads, up to \
         {} s each without forwarding",
        opts.mtu_bytes >> 20,
        opts.stall.as_secs()
    ));
    let labs: Vec<Result<MtuLab>> = std::thread::scope(|s| {
        let handles: Vec<_> = MODES
            .iter()
            .flat_map(|&m| [(m, true), (m, false)])
            .map(|(m, fwd)| s.spawn(move || mtu_lab(rvsd, m, fwd, opts)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(rvs_lab::LabError::InvalidOptions(
                        "a path-MTU thread panicked".to_owned(),
                    ))
                })
            })
            .collect()
    });
    let mut mtu = Vec::new();
    for l in labs {
        let l = l?;
        check_mtu(&l, &mut failures);
        mtu.push(l);
    }
    let _ = writeln!(
        report,
        "\nPath MTU: client -1500- router-a -1280- router-b -1500- director, dests; a {} MiB \
         download through the VIP.\nrouter-b answers the dests' full-sized segments with \
         frag-needed / packet-too-big to the VIP; the director must pass each on to the dest \
         that owns the connection.",
        opts.mtu_bytes >> 20
    );
    let _ = writeln!(
        report,
        "  {:<5} {:<7} {:<28} without (icmp_forward=0)",
        "mode", "family", "with ICMP forwarding"
    );
    for mode in MODES {
        let find = |fwd: bool, fam: Family| {
            mtu.iter()
                .find(|l| l.mode == mode && l.forwarding == fwd)
                .and_then(|l| l.runs.iter().find(|r| r.fam == fam))
        };
        for fam in Family::ALL {
            let _ = writeln!(
                report,
                "  {:<5} {:<7} {:<28} {}",
                mode_name(mode),
                fam_name(fam),
                describe_run(find(true, fam), opts.stall),
                describe_run(find(false, fam), opts.stall)
            );
        }
    }

    // 3. The director's ICMP counters.
    let _ = writeln!(
        report,
        "\nThe director's ICMP counters in the path-MTU labs (the routers' errors to the VIP):"
    );
    for l in &mtu {
        let _ = writeln!(
            report,
            "  {} with{} ICMP forwarding:",
            mode_name(l.mode),
            if l.forwarding { "" } else { "out" }
        );
        match &l.counters {
            Some(c) if !c.icmp.is_empty() => {
                for line in icmp_lines(c) {
                    let _ = writeln!(report, "    {line}");
                }
            }
            Some(_) => {
                let _ = writeln!(report, "    (none)");
            }
            None => {
                let _ = writeln!(report, "    (unavailable)");
            }
        }
    }

    // Nothing of this process may be left behind.
    let leftover = leftover_namespaces();
    match &leftover {
        Ok(v) if v.is_empty() => {}
        Ok(v) => failures.add(format!("namespaces left behind: {v:?}")),
        Err(e) => failures.add(format!("listing namespaces: {e}")),
    }

    let _ = writeln!(
        report,
        "\nNamespaces left behind: {}. Took {:.0} s.",
        match &leftover {
            Ok(v) if v.is_empty() => "none".to_owned(),
            Ok(v) => v.join(" "),
            Err(_) => "unknown".to_owned(),
        },
        started.elapsed().as_secs_f64()
    );
    if failures.0.is_empty() {
        let _ = writeln!(report, "Result: every check passed.");
    } else {
        let _ = writeln!(report, "Result: {} check(s) FAILED:", failures.0.len());
        for f in &failures.0 {
            let _ = writeln!(report, "  - {f}");
        }
    }
    print!("{report}");
    Ok(failures.0.is_empty())
}

/// Lab namespaces of this process that still exist (`ip netns list`).
fn leftover_namespaces() -> std::io::Result<Vec<String>> {
    let mine = format!("rvs-{}-", std::process::id());
    let out = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&mine))
        .map(str::to_owned)
        .collect())
}
