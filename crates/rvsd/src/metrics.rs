//! Prometheus metrics: `GET /metrics` over HTTP, in the text exposition format 0.0.4.
//!
//! A scrape copies the numbers out of the shared dataplane under its lock (plain copies, no
//! formatting, no allocation per sample beyond the lists' own), releases the lock, and only
//! then formats the text; the workers wait for the copy only. The daemon's I/O counters are
//! atomics read without the lock.
//!
//! The listener is loopback by default (`--metrics 127.0.0.1:9753`; `--metrics off` disables
//! it). One request per connection, answered with `Connection: close`; the request head is
//! limited in size and in time, clients are served on short-lived threads (at most
//! [`MAX_CLIENTS`] at once, the rest are answered 503), and nothing a client sends can panic
//! the server or hold the dataplane lock.
//!
//! Why by hand: the format is written here rather than with `prometheus-client`, whose model
//! is a registry of live metric objects updated as events happen, and whose encoder writes
//! OpenMetrics (`# EOF`, counters declared without `_total`), not the 0.0.4 text format asked
//! for. Our numbers already live in the dataplane (IPVS-style counters and estimators) and are
//! read as a snapshot; mirroring them into a registry on each scrape would only add a copy.
//! The HTTP side is equally small: one fixed route, and the limits that matter for a daemon
//! (head size, a deadline for the whole head, a cap on concurrent clients, a stop flag) are
//! exactly what `tiny_http` does not let us set, so it is written the way the control socket
//! is (`control.rs`).
//!
//! # Metrics
//!
//! Label values: `service` is `tcp/VIP:port` or `udp/[VIP6]:port` (as in the config file's
//! `[service."…"]` sections), `dest` is `RIP:port` (`[RIP6]:port`), `method` is `masq`, `route`
//! or `tunnel` (ipvsadm's forwarding names), `direction` is `in` (client → dest) or `out`
//! (dest → client, NAT only), `family` is `ipv4` or `ipv6`, `type` and `code` are the ICMP
//! numbers in decimal. Rates are the IPVS estimator's (`ipvsadm --rate`): a 2-second interval
//! folded into an exponentially weighted average; counters are the ones `ipvsadm --stats`
//! shows and reset with `rvsadm -Z`.
//!
//! | metric | type | labels | meaning |
//! |---|---|---|---|
//! | `rvs_build_info` | gauge | `version` | always 1 |
//! | `process_start_time_seconds` | gauge | | when the daemon started, Unix time in seconds |
//! | `rvs_service_connections_total` | counter | `service` | connections scheduled |
//! | `rvs_service_active_connections` | gauge | `service` | active connections (ipvsadm's ActiveConn: in the handshake or established), summed over the service's dests |
//! | `rvs_service_inactive_connections` | gauge | `service` | connections in other states (InActConn), summed over its dests |
//! | `rvs_service_packets_total` | counter | `service`, `direction` | packets |
//! | `rvs_service_bytes_total` | counter | `service`, `direction` | bytes (IP packet lengths) |
//! | `rvs_service_connections_per_second` | gauge | `service` | connection rate (CPS) |
//! | `rvs_service_packets_per_second` | gauge | `service`, `direction` | packet rate (PPS) |
//! | `rvs_service_bytes_per_second` | gauge | `service`, `direction` | byte rate (BPS) |
//! | `rvs_dest_weight` | gauge | `service`, `dest`, `method` | weight (0: quiesced) |
//! | `rvs_dest_overloaded` | gauge | `service`, `dest`, `method` | 1 above its upper connection threshold |
//! | `rvs_dest_connections_total` | counter | `service`, `dest`, `method` | connections scheduled to it |
//! | `rvs_dest_active_connections` | gauge | `service`, `dest`, `method` | active connections (ActiveConn) |
//! | `rvs_dest_inactive_connections` | gauge | `service`, `dest`, `method` | connections in other states (InActConn) |
//! | `rvs_dest_persistent_connections` | gauge | `service`, `dest`, `method` | persistence templates |
//! | `rvs_dest_packets_total` | counter | `service`, `dest`, `method`, `direction` | packets |
//! | `rvs_dest_bytes_total` | counter | `service`, `dest`, `method`, `direction` | bytes |
//! | `rvs_dest_connections_per_second` | gauge | `service`, `dest`, `method` | connection rate |
//! | `rvs_dest_packets_per_second` | gauge | `service`, `dest`, `method`, `direction` | packet rate |
//! | `rvs_dest_bytes_per_second` | gauge | `service`, `dest`, `method`, `direction` | byte rate |
//! | `rvs_health_check_up` | gauge | `service`, `dest` | 1 when the dest passes its health check (only with health checks) |
//! | `rvs_conn_table_entries` | gauge | | connections and templates in the table |
//! | `rvs_conn_table_entries_limit` | gauge | | the table's size limit (`conn_tab_max`) |
//! | `rvs_conn_table_memory_bytes` | gauge | | heap bytes the table holds |
//! | `rvs_conn_table_inserted_total` | counter | | entries inserted |
//! | `rvs_conn_table_refused_total` | counter | | inserts refused, table full |
//! | `rvs_conn_table_evicted_total` | counter | | entries evicted to make room (`conn_full_policy = evict_oldest`) |
//! | `rvs_conn_table_expired_total` | counter | | entries expired by their timeout |
//! | `rvs_conn_table_removed_total` | counter | | entries removed otherwise |
//! | `rvs_new_connections_refused_total` | counter | `reason` (`no_dest`, `table_full`) | new connections not scheduled |
//! | `rvs_connections_evicted_total` | counter | | connections evicted to make room |
//! | `rvs_connections_expired_total` | counter | | connections expired by their timeout |
//! | `rvs_dataplane_received_frames_total` | counter | | frames the dataplane processed |
//! | `rvs_dataplane_forwarded_frames_total` | counter | | frames transmitted (fragments of a refragmented datagram each count) |
//! | `rvs_dataplane_generated_packets_total` | counter | | packets the director generated (TCP RST, ICMP) |
//! | `rvs_dataplane_local_frames_total` | counter | | frames handed to the host stack |
//! | `rvs_dataplane_held_fragments_total` | counter | | IP fragments held for their datagram |
//! | `rvs_dropped_packets_total` | counter | `reason` (every `DropReason`, zeros included) | frames dropped |
//! | `rvs_fragment_events_total` | counter | `buffer` (`tracker`: DR/TUN, `reassembler`: NAT), `event` (`held`, `released`, `expired`, `overflow`, `reassembled`, `bad`) | fragment buffers' work (`reassembled` counts datagrams, the rest fragments) |
//! | `rvs_icmp_messages_total` | counter | `family`, `type`, `code`, `outcome` (`received`, `forwarded`, `local`, `generated`, `suppressed`, `dropped`) | ICMP messages by what happened to them; every message received counts once as `received` and once more by its fate |
//! | `rvs_icmp_forwarded_messages_total` | counter | `family`, `type`, `code`, `method` | ICMP errors forwarded, by the connection's method |
//! | `rvs_icmp_dropped_messages_total` | counter | `family`, `type`, `code`, `reason` | ICMP messages dropped, by reason |
//! | `rvs_io_rx_frames_total` | counter | | frames read from the rings |
//! | `rvs_io_rx_unclaimed_total` | counter | | frames read that the host owns (skipped) |
//! | `rvs_io_rx_gso_total` | counter | | GSO super-packets split into segments |
//! | `rvs_io_rx_offload_errors_total` | counter | | frames whose checksum or segmentation could not be finished |
//! | `rvs_io_tx_frames_total` | counter | | frames transmitted |
//! | `rvs_io_tx_errors_total` | counter | | frames the TX ring refused |
//! | `rvs_io_tap_frames_total` | counter | | frames handed to the host through the TAP |
//! | `rvs_io_no_egress_total` | counter | | frames whose route leaves by an interface rvsd is not on |
//! | `rvs_io_unreachable_total` | counter | | frames whose next hop has no route or neighbour |
//! | `rvs_io_neigh_timeout_total` | counter | | frames dropped waiting for a neighbour |
//! | `rvs_worker_frames_total` | counter | `worker` | frames a worker ran through the dataplane |
//! | `rvs_worker_tcp_syn_total` | counter | `worker` | TCP SYNs among them |
//! | `rvs_worker_icmp_errors_total` | counter | `worker` | ICMP errors among them |
//!
//! ICMP series exist once a message of that family, type, code and outcome was seen. The I/O
//! and worker series exist when the daemon runs on interfaces.

use crate::accept::{ClientSlot, accept_loop};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rvs_core::conn::ConnTableCounters;
use rvs_core::director::DirectorCounters;
use rvs_core::stats::{Counters as StatCounters, Rates};
use rvs_core::types::{FwdMethod, Protocol, ServiceKey};
use rvs_dataplane::frag::FragCounters;
use rvs_dataplane::{DataplaneCounters, DropReason, IcmpOutcome};

use crate::control::Shared;

/// `Content-Type` of the text exposition format 0.0.4.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Most clients served at once; more are answered 503.
pub(crate) const MAX_CLIENTS: usize = 4;

/// Largest request head read (request line and headers).
const MAX_HEAD_BYTES: usize = 8192;

/// How long a client may take to send its whole request head.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a client may take to read the whole response.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where `--metrics` listens: an address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Listen {
    /// No metrics listener.
    Off,
    /// Listen on this address.
    On(SocketAddr),
}

impl FromStr for Listen {
    type Err = String;

    fn from_str(s: &str) -> Result<Listen, String> {
        if s == "off" {
            return Ok(Listen::Off);
        }
        s.parse()
            .map(Listen::On)
            .map_err(|_| format!("{s:?} is neither ADDR:PORT nor \"off\""))
    }
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::Off => f.write_str("off"),
            Listen::On(a) => write!(f, "{a}"),
        }
    }
}

/// One dest's health as the health checker sees it (`rvs_health_check_up`). The checker
/// hands a list of these to [`render`]; without health checks there is none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DestHealth {
    /// The service.
    pub(crate) service: ServiceKey,
    /// The dest's address and port.
    pub(crate) dest: SocketAddr,
    /// Whether its last checks passed (rise/fall applied).
    pub(crate) up: bool,
}

/// One dest's numbers, copied under the lock.
#[derive(Debug, Clone)]
struct DestSnap {
    addr: SocketAddr,
    fwd: FwdMethod,
    weight: u32,
    overloaded: bool,
    active: u32,
    inactive: u32,
    persistent: u32,
    stats: StatCounters,
    rates: Rates,
}

/// One service's numbers, copied under the lock.
#[derive(Debug, Clone)]
struct ServiceSnap {
    key: ServiceKey,
    stats: StatCounters,
    rates: Rates,
    dests: Vec<DestSnap>,
}

/// The daemon's I/O counters and each worker's (frames, TCP SYNs, ICMP errors).
#[derive(Debug, Clone, Default)]
struct IoSnap {
    io: Vec<(&'static str, u64)>,
    workers: Vec<rvs_api::WorkerCounters>,
}

/// Everything a scrape shows, copied out of the shared state.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    services: Vec<ServiceSnap>,
    dataplane: DataplaneCounters,
    icmp: Vec<((bool, u8, u8, IcmpOutcome), u64)>,
    table_entries: u64,
    table_limit: u64,
    table_memory: u64,
    table: ConnTableCounters,
    director: DirectorCounters,
    frag_tracker: FragCounters,
    frag_reassembler: FragCounters,
    io: Option<IoSnap>,
    /// Unix time in seconds of the daemon's start.
    start_time: f64,
}

impl Snapshot {
    /// Copy the numbers out of `shared`: under the dataplane lock only what the dataplane
    /// holds, the I/O atomics after it. `start_time` is the daemon's [`start_time`].
    pub(crate) fn take(shared: &Shared, start_time: f64) -> Snapshot {
        let mut snap = {
            let dp = shared.lock();
            let d = dp.director();
            let t = d.conns();
            let (frag_tracker, frag_reassembler) = dp.frag_counters();
            Snapshot {
                services: d
                    .services()
                    .iter()
                    .map(|v| ServiceSnap {
                        key: v.spec.key,
                        stats: v.stats.counters,
                        rates: v.stats.rates(),
                        dests: v
                            .dests
                            .iter()
                            .map(|dv| DestSnap {
                                addr: SocketAddr::new(dv.dest.addr, dv.dest.port),
                                fwd: dv.dest.fwd,
                                weight: dv.dest.weight,
                                overloaded: dv.dest.overloaded,
                                active: dv.dest.active_conns,
                                inactive: dv.dest.inactive_conns,
                                persistent: dv.dest.persist_conns,
                                stats: dv.stats.counters,
                                rates: dv.stats.rates(),
                            })
                            .collect(),
                    })
                    .collect(),
                dataplane: dp.counters().clone(),
                icmp: dp.icmp_counters().iter().collect(),
                table_entries: t.len() as u64,
                table_limit: t.max() as u64,
                table_memory: t.memory_bytes() as u64,
                table: t.counters(),
                director: d.counters(),
                frag_tracker,
                frag_reassembler,
                io: None,
                start_time,
            }
        };
        snap.io = shared.io.get().map(|io| IoSnap {
            io: io.counters(),
            workers: io.worker_counters(),
        });
        snap
    }
}

/// The Unix time in seconds at which `shared`'s clock started (the daemon's start). Computed
/// once per server, so that every scrape shows the same value.
pub(crate) fn start_time(shared: &Shared) -> f64 {
    unix_seconds(SystemTime::now()) - shared.start.elapsed().as_secs_f64()
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

// ---- the text format -------------------------------------------------------------------

/// A metric family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

/// Writes families in the text format: `# HELP`, `# TYPE`, then the family's samples, all
/// together (the format requires a family's lines to be contiguous).
struct Writer {
    out: String,
}

/// A sample value: integers as integers, the start time as a float.
trait Value {
    fn write_to(&self, out: &mut String);
}

impl Value for u64 {
    fn write_to(&self, out: &mut String) {
        let _ = write!(out, "{self}");
    }
}

impl Value for u32 {
    fn write_to(&self, out: &mut String) {
        let _ = write!(out, "{self}");
    }
}

impl Value for f64 {
    fn write_to(&self, out: &mut String) {
        if self.is_finite() {
            // Rust prints finite floats without an exponent, which the format accepts.
            let _ = write!(out, "{self}");
        } else {
            out.push_str("NaN");
        }
    }
}

impl Writer {
    fn new() -> Writer {
        Writer {
            out: String::with_capacity(16 * 1024),
        }
    }

    /// Start a family.
    fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let _ = write!(self.out, "# HELP {name} ");
        escape_help(help, &mut self.out);
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let _ = writeln!(self.out, "\n# TYPE {name} {kind}");
    }

    /// One sample of the current family.
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Value) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(k);
                self.out.push_str("=\"");
                escape_label(v, &mut self.out);
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
        value.write_to(&mut self.out);
        self.out.push('\n');
    }

    /// A family with one unlabelled sample.
    fn single(&mut self, name: &str, kind: Kind, help: &str, value: impl Value) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }
}

/// Label values escape `\`, `"` and line feeds.
fn escape_label(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Help texts escape `\` and line feeds.
fn escape_help(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// The `service` label: `tcp/203.0.113.10:80`, `udp/[2001:db8::10]:53`.
fn service_label(k: &ServiceKey) -> String {
    let p = match k.protocol {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    };
    format!("{p}/{}", SocketAddr::new(k.addr, k.port))
}

/// The `method` label, ipvsadm's forwarding names in lower case.
fn method_label(f: FwdMethod) -> &'static str {
    match f {
        FwdMethod::Masq => "masq",
        FwdMethod::DirectRoute => "route",
        FwdMethod::Tunnel => "tunnel",
    }
}

fn family_label(v6: bool) -> &'static str {
    if v6 { "ipv6" } else { "ipv4" }
}

/// Help of each I/O counter, by the name `IoCounters::snapshot` gives it; the metric is
/// `rvs_io_NAME_total`.
const IO_HELP: &[(&str, &str)] = &[
    ("rx_frames", "Frames read from the packet rings."),
    (
        "rx_unclaimed",
        "Frames read that the host owns (not claimed by rvsd), skipped.",
    ),
    (
        "rx_gso",
        "GSO super-packets split into wire-sized segments.",
    ),
    (
        "rx_offload_errors",
        "Frames dropped because their checksum or segmentation offload could not be finished.",
    ),
    ("tx_frames", "Frames transmitted."),
    ("tx_errors", "Frames the TX ring refused."),
    (
        "tap_frames",
        "Frames handed to the host stack through the exception interface (TAP).",
    ),
    (
        "no_egress",
        "Frames dropped because their route leaves by an interface rvsd is not attached to.",
    ),
    (
        "unreachable",
        "Frames dropped because their next hop has no route or its neighbour failed.",
    ),
    (
        "neigh_timeout",
        "Frames dropped after waiting too long (or in too long a queue) for a neighbour.",
    ),
];

/// The prefix of the service or dest families, and how their help texts name the subject.
struct StatFamilies {
    prefix: &'static str,
    what: &'static str,
}

/// Render `snap` (and the health checker's view, when there is one) in the text format.
pub(crate) fn render(snap: &Snapshot, health: Option<&[DestHealth]>) -> String {
    let mut w = Writer::new();
    w.family(
        "rvs_build_info",
        Kind::Gauge,
        "Build information, always 1.",
    );
    w.sample(
        "rvs_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1u64,
    );
    w.single(
        "process_start_time_seconds",
        Kind::Gauge,
        "Start time of the process since the Unix epoch, in seconds.",
        snap.start_time,
    );
    render_services(&mut w, snap);
    if let Some(h) = health {
        render_health(&mut w, h);
    }
    render_table(&mut w, snap);
    render_dataplane(&mut w, snap);
    render_icmp(&mut w, snap);
    if let Some(io) = &snap.io {
        render_io(&mut w, io);
    }
    w.out
}

fn render_services(w: &mut Writer, snap: &Snapshot) {
    let services: Vec<(String, &ServiceSnap)> = snap
        .services
        .iter()
        .map(|s| (service_label(&s.key), s))
        .collect();
    let svc = StatFamilies {
        prefix: "rvs_service",
        what: "the virtual service",
    };
    stat_families(
        w,
        &svc,
        services.iter().map(|(name, s)| {
            (
                vec![("service", name.as_str())],
                &s.stats,
                &s.rates,
                s.dests.iter().map(|d| u64::from(d.active)).sum::<u64>(),
                s.dests.iter().map(|d| u64::from(d.inactive)).sum::<u64>(),
            )
        }),
    );

    let dests: Vec<(&str, String, &DestSnap)> = services
        .iter()
        .flat_map(|(name, s)| {
            s.dests
                .iter()
                .map(move |d| (name.as_str(), d.addr.to_string(), d))
        })
        .collect();
    fn labels<'a>(
        (service, dest, d): &'a (&'a str, String, &'a DestSnap),
    ) -> Vec<(&'a str, &'a str)> {
        vec![
            ("service", service),
            ("dest", dest.as_str()),
            ("method", method_label(d.fwd)),
        ]
    }
    w.family(
        "rvs_dest_weight",
        Kind::Gauge,
        "Weight of the dest (0: quiesced, no new connections).",
    );
    for x in &dests {
        w.sample("rvs_dest_weight", &labels(x), x.2.weight);
    }
    w.family(
        "rvs_dest_overloaded",
        Kind::Gauge,
        "1 when the dest is over its upper connection threshold (no new connections).",
    );
    for x in &dests {
        w.sample("rvs_dest_overloaded", &labels(x), u64::from(x.2.overloaded));
    }
    w.family(
        "rvs_dest_persistent_connections",
        Kind::Gauge,
        "Persistence templates pointing at the dest.",
    );
    for x in &dests {
        w.sample(
            "rvs_dest_persistent_connections",
            &labels(x),
            x.2.persistent,
        );
    }
    let dest = StatFamilies {
        prefix: "rvs_dest",
        what: "the dest",
    };
    stat_families(
        w,
        &dest,
        dests.iter().map(|x| {
            (
                labels(x),
                &x.2.stats,
                &x.2.rates,
                u64::from(x.2.active),
                u64::from(x.2.inactive),
            )
        }),
    );
}

/// The connection, packet and byte counters, the active/inactive gauges and the rates of
/// services or dests: `(labels, counters, rates, active, inactive)` per series.
fn stat_families<'a, 'l>(
    w: &mut Writer,
    f: &StatFamilies,
    rows: impl Iterator<
        Item = (
            Vec<(&'l str, &'l str)>,
            &'a StatCounters,
            &'a Rates,
            u64,
            u64,
        ),
    >,
) {
    let rows: Vec<_> = rows.collect();
    let p = f.prefix;
    let what = f.what;
    let with_dir = |l: &[(&'l str, &'l str)], dir: &'static str| {
        let mut v = l.to_vec();
        v.push(("direction", dir));
        v
    };
    let name = format!("{p}_connections_total");
    w.family(
        &name,
        Kind::Counter,
        &format!("Connections scheduled to {what}."),
    );
    for (l, c, ..) in &rows {
        w.sample(&name, l, c.conns);
    }
    let name = format!("{p}_active_connections");
    w.family(
        &name,
        Kind::Gauge,
        &format!(
            "Active connections of {what} (ipvsadm's ActiveConn: in the handshake or established)."
        ),
    );
    for (l, _, _, active, _) in &rows {
        w.sample(&name, l, *active);
    }
    let name = format!("{p}_inactive_connections");
    w.family(
        &name,
        Kind::Gauge,
        &format!("Inactive connections of {what} (ipvsadm's InActConn: every other state)."),
    );
    for (l, _, _, _, inactive) in &rows {
        w.sample(&name, l, *inactive);
    }
    let name = format!("{p}_packets_total");
    w.family(
        &name,
        Kind::Counter,
        &format!(
            "Packets of {what}'s connections; direction in: from clients, out: from dests (NAT)."
        ),
    );
    for (l, c, ..) in &rows {
        w.sample(&name, &with_dir(l, "in"), c.inpkts);
        w.sample(&name, &with_dir(l, "out"), c.outpkts);
    }
    let name = format!("{p}_bytes_total");
    w.family(
        &name,
        Kind::Counter,
        &format!("Bytes (IP packet lengths) of {what}'s connections, by direction."),
    );
    for (l, c, ..) in &rows {
        w.sample(&name, &with_dir(l, "in"), c.inbytes);
        w.sample(&name, &with_dir(l, "out"), c.outbytes);
    }
    let name = format!("{p}_connections_per_second");
    w.family(
        &name,
        Kind::Gauge,
        &format!("Connection rate of {what} (IPVS estimator, as ipvsadm --rate shows)."),
    );
    for (l, _, r, ..) in &rows {
        w.sample(&name, l, r.cps);
    }
    let name = format!("{p}_packets_per_second");
    w.family(
        &name,
        Kind::Gauge,
        &format!("Packet rate of {what}, by direction (IPVS estimator)."),
    );
    for (l, _, r, ..) in &rows {
        w.sample(&name, &with_dir(l, "in"), r.inpps);
        w.sample(&name, &with_dir(l, "out"), r.outpps);
    }
    let name = format!("{p}_bytes_per_second");
    w.family(
        &name,
        Kind::Gauge,
        &format!("Byte rate of {what}, by direction (IPVS estimator)."),
    );
    for (l, _, r, ..) in &rows {
        w.sample(&name, &with_dir(l, "in"), r.inbps);
        w.sample(&name, &with_dir(l, "out"), r.outbps);
    }
}

fn render_health(w: &mut Writer, health: &[DestHealth]) {
    w.family(
        "rvs_health_check_up",
        Kind::Gauge,
        "1 when the dest passes its health check, 0 when it fails it.",
    );
    for h in health {
        let service = service_label(&h.service);
        let dest = h.dest.to_string();
        w.sample(
            "rvs_health_check_up",
            &[("service", &service), ("dest", &dest)],
            u64::from(h.up),
        );
    }
}

fn render_table(w: &mut Writer, snap: &Snapshot) {
    w.single(
        "rvs_conn_table_entries",
        Kind::Gauge,
        "Connections and persistence templates in the connection table.",
        snap.table_entries,
    );
    w.single(
        "rvs_conn_table_entries_limit",
        Kind::Gauge,
        "Size limit of the connection table (conn_tab_max).",
        snap.table_limit,
    );
    w.single(
        "rvs_conn_table_memory_bytes",
        Kind::Gauge,
        "Heap memory the connection table holds, in bytes.",
        snap.table_memory,
    );
    let t = snap.table;
    for (name, help, v) in [
        (
            "rvs_conn_table_inserted_total",
            "Entries inserted into the connection table.",
            t.inserted,
        ),
        (
            "rvs_conn_table_refused_total",
            "Inserts refused because the connection table was full.",
            t.refused_full,
        ),
        (
            "rvs_conn_table_evicted_total",
            "Entries evicted to make room (conn_full_policy evict_oldest).",
            t.evicted,
        ),
        (
            "rvs_conn_table_expired_total",
            "Entries expired by their timeout.",
            t.expired,
        ),
        (
            "rvs_conn_table_removed_total",
            "Entries removed other than by expiry or eviction.",
            t.removed,
        ),
    ] {
        w.single(name, Kind::Counter, help, v);
    }
    let d = snap.director;
    w.family(
        "rvs_new_connections_refused_total",
        Kind::Counter,
        "New connections not scheduled: no usable dest, or the connection table full.",
    );
    w.sample(
        "rvs_new_connections_refused_total",
        &[("reason", "no_dest")],
        d.no_dest,
    );
    w.sample(
        "rvs_new_connections_refused_total",
        &[("reason", "table_full")],
        d.table_full,
    );
    w.single(
        "rvs_connections_evicted_total",
        Kind::Counter,
        "Connections evicted to make room for new ones.",
        d.evicted,
    );
    w.single(
        "rvs_connections_expired_total",
        Kind::Counter,
        "Connections expired by their timeout.",
        d.expired,
    );
}

fn render_dataplane(w: &mut Writer, snap: &Snapshot) {
    let c = &snap.dataplane;
    for (name, help, v) in [
        (
            "rvs_dataplane_received_frames_total",
            "Frames the dataplane processed.",
            c.rx,
        ),
        (
            "rvs_dataplane_forwarded_frames_total",
            "Frames the dataplane transmitted (released and refragmented frames included).",
            c.forwarded,
        ),
        (
            "rvs_dataplane_generated_packets_total",
            "Packets the director generated (TCP RST, ICMP errors and replies).",
            c.generated,
        ),
        (
            "rvs_dataplane_local_frames_total",
            "Frames handed to the host stack.",
            c.local,
        ),
        (
            "rvs_dataplane_held_fragments_total",
            "IP fragments held until their datagram's fate was known.",
            c.held,
        ),
    ] {
        w.single(name, Kind::Counter, help, v);
    }
    w.family(
        "rvs_dropped_packets_total",
        Kind::Counter,
        "Frames the dataplane dropped, by reason.",
    );
    for &r in DropReason::ALL {
        w.sample(
            "rvs_dropped_packets_total",
            &[("reason", r.name())],
            c.drops(r),
        );
    }
    w.family(
        "rvs_fragment_events_total",
        Kind::Counter,
        "Fragment buffers' work: buffer tracker (DR, TUN) or reassembler (NAT); reassembled \
         counts datagrams, the other events fragments.",
    );
    for (buffer, f) in [
        ("tracker", snap.frag_tracker),
        ("reassembler", snap.frag_reassembler),
    ] {
        for (event, v) in [
            ("held", f.held),
            ("released", f.released),
            ("expired", f.expired),
            ("overflow", f.overflow),
            ("reassembled", f.reassembled),
            ("bad", f.bad),
        ] {
            w.sample(
                "rvs_fragment_events_total",
                &[("buffer", buffer), ("event", event)],
                v,
            );
        }
    }
}

/// The outcome label of `rvs_icmp_messages_total` and its rank in the output.
fn outcome_label(o: IcmpOutcome) -> (u8, &'static str) {
    match o {
        IcmpOutcome::Received => (0, "received"),
        IcmpOutcome::Forwarded(_) => (1, "forwarded"),
        IcmpOutcome::Local => (2, "local"),
        IcmpOutcome::Generated => (3, "generated"),
        IcmpOutcome::Suppressed => (4, "suppressed"),
        IcmpOutcome::Dropped(_) => (5, "dropped"),
    }
}

fn render_icmp(w: &mut Writer, snap: &Snapshot) {
    // Forwarded (by method) and dropped (by reason) fold into one outcome each here; their
    // own families below keep the detail.
    let mut by_outcome: BTreeMap<(bool, u8, u8, u8), (&'static str, u64)> = BTreeMap::new();
    for &((v6, t, c, o), n) in &snap.icmp {
        let (rank, name) = outcome_label(o);
        by_outcome.entry((v6, t, c, rank)).or_insert((name, 0)).1 += n;
    }
    let num = |n: u8| n.to_string();
    w.family(
        "rvs_icmp_messages_total",
        Kind::Counter,
        "ICMP and ICMPv6 messages by family, type, code and outcome; each message received \
         counts once as received and once by its outcome.",
    );
    for (&(v6, t, c, _), &(outcome, n)) in &by_outcome {
        let (t, c) = (num(t), num(c));
        w.sample(
            "rvs_icmp_messages_total",
            &[
                ("family", family_label(v6)),
                ("type", &t),
                ("code", &c),
                ("outcome", outcome),
            ],
            n,
        );
    }
    w.family(
        "rvs_icmp_forwarded_messages_total",
        Kind::Counter,
        "ICMP errors forwarded for a connection, by the connection's forwarding method.",
    );
    for &((v6, t, c, o), n) in &snap.icmp {
        if let IcmpOutcome::Forwarded(m) = o {
            let (t, c) = (num(t), num(c));
            w.sample(
                "rvs_icmp_forwarded_messages_total",
                &[
                    ("family", family_label(v6)),
                    ("type", &t),
                    ("code", &c),
                    ("method", method_label(m)),
                ],
                n,
            );
        }
    }
    w.family(
        "rvs_icmp_dropped_messages_total",
        Kind::Counter,
        "ICMP messages dropped, by reason.",
    );
    for &((v6, t, c, o), n) in &snap.icmp {
        if let IcmpOutcome::Dropped(r) = o {
            let (t, c) = (num(t), num(c));
            w.sample(
                "rvs_icmp_dropped_messages_total",
                &[
                    ("family", family_label(v6)),
                    ("type", &t),
                    ("code", &c),
                    ("reason", r.name()),
                ],
                n,
            );
        }
    }
}

fn render_io(w: &mut Writer, io: &IoSnap) {
    for &(name, v) in &io.io {
        let metric = format!("rvs_io_{name}_total");
        let generic = format!("The daemon's I/O counter {name}.");
        let help = IO_HELP
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(generic.as_str(), |(_, h)| h);
        w.single(&metric, Kind::Counter, help, v);
    }
    let workers: Vec<String> = (0..io.workers.len()).map(|i| i.to_string()).collect();
    type Field = fn(&rvs_api::WorkerCounters) -> u64;
    let families: [(&str, &str, Field); 3] = [
        (
            "rvs_worker_frames_total",
            "Frames a worker thread ran through the dataplane.",
            |x| x.frames,
        ),
        (
            "rvs_worker_tcp_syn_total",
            "TCP SYNs among a worker's frames.",
            |x| x.tcp_syn,
        ),
        (
            "rvs_worker_icmp_errors_total",
            "ICMP and ICMPv6 errors among a worker's frames.",
            |x| x.icmp_errors,
        ),
    ];
    for (name, help, field) in families {
        w.family(name, Kind::Counter, help);
        for (i, x) in io.workers.iter().enumerate() {
            let id = workers.get(i).map_or("", String::as_str);
            w.sample(name, &[("worker", id)], field(x));
        }
    }
}

// ---- the HTTP server -------------------------------------------------------------------

/// The server's limits (constants in the daemon; tests change them).
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_clients: usize,
    request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_clients: MAX_CLIENTS,
            request_timeout: REQUEST_TIMEOUT,
        }
    }
}

/// Listen on `addr` and serve `GET /metrics` on a new thread until `stop` is set (checked
/// every 200 ms; the port is released when the thread ends). Fails if the address cannot be
/// bound.
pub(crate) fn serve(
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
) -> io::Result<JoinHandle<()>> {
    let listener = TcpListener::bind(addr)?;
    serve_on(listener, shared, stop, Limits::default())
}

fn serve_on(
    listener: TcpListener,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    limits: Limits,
) -> io::Result<JoinHandle<()>> {
    listener.set_nonblocking(true)?;
    let source = Arc::new(Source {
        start_time: start_time(&shared),
        shared,
    });
    thread::Builder::new()
        .name("rvsd-metrics".into())
        .spawn(move || {
            accept_loop(&listener, "metrics listener", &stop, |stream, active| {
                dispatch(stream, &source, active, limits);
            });
        })
}

/// What the server renders from.
struct Source {
    shared: Arc<Shared>,
    start_time: f64,
}

fn dispatch(stream: TcpStream, source: &Arc<Source>, active: &Arc<AtomicUsize>, limits: Limits) {
    let (slot, live) = ClientSlot::take(active);
    // Accepted sockets do not inherit the listener's O_NONBLOCK on Linux; make sure anyway.
    let _ = stream.set_nonblocking(false);
    if live >= limits.max_clients {
        // A fresh socket's buffer takes this small answer without blocking.
        let mut stream = stream;
        let busy = b"busy, retry\n";
        let _ = respond_len(
            &mut stream,
            (503, "Service Unavailable"),
            "text/plain",
            busy,
            busy.len(),
            Duration::from_millis(100),
        );
        return;
    }
    let source = Arc::clone(source);
    // If the thread cannot be spawned the closure (and the slot) is dropped: the client sees
    // the connection close.
    let _ = thread::Builder::new()
        .name("rvsd-metrics-client".into())
        .spawn(move || {
            let _slot = slot;
            serve_client(stream, &source, limits.request_timeout);
        });
}

/// Why a request head could not be read.
#[derive(Debug, PartialEq, Eq)]
enum HeadError {
    /// The client closed before sending a whole head (nothing to answer).
    Closed,
    /// Larger than [`MAX_HEAD_BYTES`].
    TooLarge,
    /// Not complete within the deadline.
    Timeout,
}

/// Read the request head (up to the empty line) within `timeout` overall.
fn read_head(stream: &mut TcpStream, timeout: Duration) -> Result<Vec<u8>, HeadError> {
    let deadline = Instant::now() + timeout;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(HeadError::Timeout);
        }
        let _ = stream.set_read_timeout(Some(left));
        match stream.read(&mut buf) {
            Ok(0) => return Err(HeadError::Closed),
            Ok(n) => {
                let from = head.len().saturating_sub(3);
                head.extend_from_slice(&buf[..n]);
                if let Some(end) = head_end(&head, from) {
                    head.truncate(end);
                    return Ok(head);
                }
                if head.len() > MAX_HEAD_BYTES {
                    return Err(HeadError::TooLarge);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(HeadError::Timeout);
            }
            Err(_) => return Err(HeadError::Closed),
        }
    }
}

/// Where the head ends (after `\r\n\r\n`, or `\n\n` from lax clients), searching from `from`.
fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let tail = buf.get(from..)?;
    tail.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| from + i + 4)
        .or_else(|| {
            tail.windows(2)
                .position(|w| w == b"\n\n")
                .map(|i| from + i + 2)
        })
}

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    /// `GET /metrics` (`head`: `HEAD /metrics`, the same without the body).
    Metrics { head: bool },
    /// Another method on `/metrics`.
    MethodNotAllowed,
    /// Another path.
    NotFound,
    /// Not an HTTP/1.x request line.
    BadRequest,
}

/// Route a request by its request line.
fn route(head: &[u8]) -> Route {
    let line_end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
    let Ok(line) = std::str::from_utf8(&head[..line_end]) else {
        return Route::BadRequest;
    };
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Route::BadRequest;
    };
    if !version.starts_with("HTTP/1.") || method.is_empty() || !target.starts_with('/') {
        return Route::BadRequest;
    }
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    if path != "/metrics" {
        return Route::NotFound;
    }
    match method {
        "GET" => Route::Metrics { head: false },
        "HEAD" => Route::Metrics { head: true },
        _ => Route::MethodNotAllowed,
    }
}

fn serve_client(mut stream: TcpStream, source: &Source, request_timeout: Duration) {
    let head = match read_head(&mut stream, request_timeout) {
        Ok(h) => h,
        Err(HeadError::Closed) => return,
        Err(HeadError::TooLarge) => {
            let _ = respond(
                &mut stream,
                431,
                "Request Header Fields Too Large",
                "text/plain",
                b"request head too large\n",
            );
            return;
        }
        Err(HeadError::Timeout) => {
            let _ = respond(
                &mut stream,
                408,
                "Request Timeout",
                "text/plain",
                b"request timeout\n",
            );
            return;
        }
    };
    let _ = match route(&head) {
        Route::Metrics { head } => {
            let snap = Snapshot::take(&source.shared, source.start_time);
            let health = source.shared.health.get().map(|h| {
                h.snapshot()
                    .into_iter()
                    .map(|v| DestHealth {
                        service: v.target.service,
                        dest: SocketAddr::new(v.target.addr, v.target.port),
                        up: v.up,
                    })
                    .collect::<Vec<_>>()
            });
            let text = render(&snap, health.as_deref());
            // HEAD: the same head, Content-Length included, without the body.
            let body = if head { &b""[..] } else { text.as_bytes() };
            respond_len(
                &mut stream,
                (200, "OK"),
                CONTENT_TYPE,
                body,
                text.len(),
                RESPONSE_TIMEOUT,
            )
        }
        Route::MethodNotAllowed => respond(
            &mut stream,
            405,
            "Method Not Allowed",
            "text/plain",
            b"only GET and HEAD\n",
        ),
        Route::NotFound => respond(
            &mut stream,
            404,
            "Not Found",
            "text/plain",
            b"metrics are at /metrics\n",
        ),
        Route::BadRequest => respond(
            &mut stream,
            400,
            "Bad Request",
            "text/plain",
            b"bad request\n",
        ),
    };
    let _ = stream.flush();
    let _ = stream.shutdown(std::net::Shutdown::Write);
}

fn respond(
    stream: &mut TcpStream,
    status: u16,
    reason: &str,
    content_type: &str,
    body: &[u8],
) -> io::Result<()> {
    respond_len(
        stream,
        (status, reason),
        content_type,
        body,
        body.len(),
        RESPONSE_TIMEOUT,
    )
}

/// Write a response whose `Content-Length` is `len` (HEAD: the body is empty, the length the
/// GET's), all of it within `timeout`.
fn respond_len(
    stream: &mut TcpStream,
    (status, reason): (u16, &str),
    content_type: &str,
    body: &[u8],
    len: usize,
    timeout: Duration,
) -> io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {len}\r\n\
         Connection: close\r\n"
    );
    if status == 405 {
        head.push_str("Allow: GET, HEAD\r\n");
    }
    head.push_str("\r\n");
    // One deadline for the whole response, so that a client reading a byte at a time cannot
    // hold its slot for long.
    let deadline = Instant::now() + timeout;
    for part in [head.as_bytes(), body] {
        let mut rest = part;
        while !rest.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            stream.set_write_timeout(Some(left))?;
            match stream.write(rest) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => rest = rest.get(n..).unwrap_or_default(),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::net::Ipv4Addr;

    use etherparse::PacketBuilder;
    use rvs_core::director::Director;
    use rvs_core::rules::parse_rules;
    use rvs_core::settings::Settings;
    use rvs_dataplane::{Dataplane, DataplaneConfig, Frame, Verdict};

    use super::*;
    use std::sync::atomic::Ordering;

    const RULES: &str = "-A -t 203.0.113.10:80 -s rr\n\
                         -a -t 203.0.113.10:80 -r 198.51.100.11:8080 -m -w 2\n\
                         -a -t 203.0.113.10:80 -r 198.51.100.12:8080 -m -w 1\n\
                         -A -u [2001:db8::10]:53 -s wrr\n\
                         -a -u [2001:db8::10]:53 -r [2001:db8:1::11]:53 -g -w 0\n";
    const SVC: &str = "tcp/203.0.113.10:80";

    fn shared() -> Shared {
        let mut d = Director::new(Settings::default());
        for r in parse_rules(RULES).unwrap() {
            d.apply(&r, 0).unwrap();
        }
        let cfg = DataplaneConfig {
            addrs: vec!["198.51.100.2".parse().unwrap()],
            ..DataplaneConfig::default()
        };
        Shared::new(Dataplane::new(d, cfg))
    }

    fn ip4(s: &str) -> [u8; 4] {
        s.parse::<Ipv4Addr>().unwrap().octets()
    }

    /// Ethernet/IPv4/TCP from `src` to `dst`: a SYN, a SYN-ACK or an ACK, with `payload`.
    fn tcp(src: (&str, u16), dst: (&str, u16), flags: &str, payload: &[u8]) -> Vec<u8> {
        let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4(ip4(src.0), ip4(dst.0), 64)
            .tcp(src.1, dst.1, 1000, 64240);
        let b = match flags {
            "S" => b.syn(),
            "SA" => b.syn().ack(1001),
            "R" => b.rst(),
            _ => b.ack(1),
        };
        let mut out = Vec::new();
        b.write(&mut out, payload).unwrap();
        out
    }

    /// A frag-needed error from a router to the VIP, quoting the VIP's reply to the client.
    fn frag_needed_to_vip(cport: u16) -> Vec<u8> {
        let mut quoted = Vec::new();
        PacketBuilder::ipv4(ip4("203.0.113.10"), ip4("192.0.2.1"), 63)
            .tcp(80, cport, 5000, 64240)
            .ack(1001)
            .write(&mut quoted, &[0u8; 1400])
            .unwrap();
        let t = etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1280 },
        );
        let mut out = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4(ip4("192.0.2.254"), ip4("203.0.113.10"), 64)
            .icmpv4(t)
            .write(&mut out, &quoted[..28])
            .unwrap();
        out
    }

    /// Run frames through the shared dataplane; returns their verdicts.
    fn run(s: &Shared, frames: &[Vec<u8>]) -> Vec<Verdict> {
        let mut dp = s.lock();
        let mut extra = Vec::new();
        frames
            .iter()
            .map(|f| {
                let mut frame = Frame::from_bytes(f);
                extra.clear();
                dp.process(&mut frame, 1_000_000_000, &mut extra)
            })
            .collect()
    }

    /// A shared dataplane after: two connections from a client (the first carrying a request,
    /// with the dest's SYN-ACK coming back through the NAT; the second established, then reset by the client), a
    /// frag-needed error about the first, and a truncated frame.
    fn traffic() -> Shared {
        let s = shared();
        let vip = ("203.0.113.10", 80);
        let v = run(
            &s,
            &[
                tcp(("192.0.2.1", 40000), vip, "S", b""),
                tcp(("198.51.100.11", 8080), ("192.0.2.1", 40000), "SA", b""),
                tcp(("192.0.2.1", 40000), vip, "A", b"GET / HTTP/1.0\r\n\r\n"),
                tcp(("192.0.2.1", 40001), vip, "S", b""),
                tcp(("192.0.2.1", 40001), vip, "A", b""),
                tcp(("192.0.2.1", 40001), vip, "R", b""),
                frag_needed_to_vip(40000),
                tcp(("192.0.2.1", 40002), vip, "S", b"")[..30].to_vec(),
            ],
        );
        assert!(
            matches!(
                v[..],
                [
                    Verdict::Transmit { .. },
                    Verdict::Transmit { .. },
                    Verdict::Transmit { .. },
                    Verdict::Transmit { .. },
                    Verdict::Transmit { .. },
                    Verdict::Transmit { .. },
                    Verdict::Transmit { .. },
                    Verdict::Drop(DropReason::Malformed),
                ]
            ),
            "{v:?}"
        );
        s
    }

    fn lines(text: &str) -> Vec<&str> {
        text.lines().collect()
    }

    #[test]
    fn rendering_shows_what_the_traffic_did() {
        let s = traffic();
        let text = render(&Snapshot::take(&s, start_time(&s)), None);
        let l = lines(&text);
        let has = |want: &str| {
            assert!(l.contains(&want), "missing line {want:?} in:\n{text}");
        };
        let d1 = format!("service=\"{SVC}\",dest=\"198.51.100.11:8080\",method=\"masq\"");
        let d2 = format!("service=\"{SVC}\",dest=\"198.51.100.12:8080\",method=\"masq\"");
        has(&format!(
            "rvs_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        ));
        has(&format!(
            "rvs_service_connections_total{{service=\"{SVC}\"}} 2"
        ));
        // In: SYN, ACK with 18 bytes, SYN, ACK, RST (40 + 58 + 40 + 40 + 40 bytes of IP);
        // out: the SYN-ACK.
        has(&format!(
            "rvs_service_packets_total{{service=\"{SVC}\",direction=\"in\"}} 5"
        ));
        has(&format!(
            "rvs_service_packets_total{{service=\"{SVC}\",direction=\"out\"}} 1"
        ));
        has(&format!(
            "rvs_service_bytes_total{{service=\"{SVC}\",direction=\"in\"}} 218"
        ));
        has(&format!(
            "rvs_service_bytes_total{{service=\"{SVC}\",direction=\"out\"}} 40"
        ));
        has(&format!(
            "rvs_service_active_connections{{service=\"{SVC}\"}} 1"
        ));
        has(&format!(
            "rvs_service_inactive_connections{{service=\"{SVC}\"}} 1"
        ));
        has(&format!("rvs_dest_weight{{{d1}}} 2"));
        has(&format!("rvs_dest_weight{{{d2}}} 1"));
        has(&format!("rvs_dest_connections_total{{{d1}}} 1"));
        has(&format!("rvs_dest_connections_total{{{d2}}} 1"));
        has(&format!("rvs_dest_active_connections{{{d1}}} 1"));
        has(&format!("rvs_dest_active_connections{{{d2}}} 0"));
        has(&format!("rvs_dest_inactive_connections{{{d2}}} 1"));
        has(&format!(
            "rvs_dest_packets_total{{{d1},direction=\"in\"}} 2"
        ));
        has(&format!(
            "rvs_dest_packets_total{{{d1},direction=\"out\"}} 1"
        ));
        has(&format!(
            "rvs_dest_bytes_total{{{d2},direction=\"in\"}} 120"
        ));
        // The IPv6 service and its quiesced DR dest are there too, at zero.
        has("rvs_service_connections_total{service=\"udp/[2001:db8::10]:53\"} 0");
        has(
            "rvs_dest_weight{service=\"udp/[2001:db8::10]:53\",dest=\"[2001:db8:1::11]:53\",method=\"route\"} 0",
        );
        // No estimate has run: the rates are zero.
        has(&format!("rvs_dest_connections_per_second{{{d1}}} 0"));
        // Two connections (the reset one waits out its CLOSE timeout); no templates.
        has("rvs_conn_table_entries 2");
        has("rvs_conn_table_inserted_total 2");
        has(&format!(
            "rvs_conn_table_entries_limit {}",
            Settings::default().conn_tab_max
        ));
        // Verdicts: eight frames, seven forwarded, one drop.
        has("rvs_dataplane_received_frames_total 8");
        has("rvs_dataplane_forwarded_frames_total 7");
        has("rvs_dropped_packets_total{reason=\"malformed\"} 1");
        has("rvs_dropped_packets_total{reason=\"icmp_bad_checksum\"} 0");
        // The ICMP error: received, forwarded by NAT.
        has(
            "rvs_icmp_messages_total{family=\"ipv4\",type=\"3\",code=\"4\",outcome=\"received\"} 1",
        );
        has(
            "rvs_icmp_messages_total{family=\"ipv4\",type=\"3\",code=\"4\",outcome=\"forwarded\"} 1",
        );
        has(
            "rvs_icmp_forwarded_messages_total{family=\"ipv4\",type=\"3\",code=\"4\",method=\"masq\"} 1",
        );
        has("rvs_fragment_events_total{buffer=\"reassembler\",event=\"held\"} 0");
        // Every drop reason has its series.
        for r in DropReason::ALL {
            let prefix = format!("rvs_dropped_packets_total{{reason=\"{}\"}} ", r.name());
            assert!(l.iter().any(|x| x.starts_with(&prefix)), "{prefix}");
        }
        // No interfaces, no health checker: no such series.
        assert!(!text.contains("rvs_io_") && !text.contains("rvs_worker_"));
        assert!(!text.contains("rvs_health_check_up"));
        // The start time is now-ish: after 2020, not in the future.
        let start: f64 = l
            .iter()
            .find_map(|x| x.strip_prefix("process_start_time_seconds "))
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            start > 1.6e9 && start <= unix_seconds(SystemTime::now()),
            "{start}"
        );
    }

    /// Check the exposition's shape the way a parser would: every sample belongs to the family
    /// declared just before it (HELP then TYPE, once per family), counters end in `_total`,
    /// names and label names are valid, no series appears twice.
    fn check_shape(text: &str) {
        let valid_name = |n: &str| {
            !n.is_empty()
                && n.chars().enumerate().all(|(i, c)| {
                    c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
                })
        };
        let mut declared = std::collections::HashSet::new();
        let mut series = std::collections::HashSet::new();
        let mut current: Option<(String, String)> = None;
        let mut pending_help: Option<String> = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap();
                assert!(valid_name(name), "{line}");
                assert!(
                    declared.insert(name.to_string()),
                    "family declared twice: {name}"
                );
                pending_help = Some(name.to_string());
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert_eq!(
                    pending_help.take().as_deref(),
                    Some(name),
                    "HELP before TYPE"
                );
                assert!(kind == "counter" || kind == "gauge", "{line}");
                if kind == "counter" {
                    assert!(
                        name.ends_with("_total"),
                        "counter {name} must end in _total"
                    );
                } else {
                    assert!(!name.ends_with("_total"), "gauge {name} ends in _total");
                }
                current = Some((name.to_string(), kind.to_string()));
                continue;
            }
            assert!(!line.starts_with('#'), "{line}");
            let (name_labels, value) = line.rsplit_once(' ').unwrap();
            let name = name_labels.split('{').next().unwrap();
            let (family, _) = current.as_ref().expect("sample before any TYPE");
            assert_eq!(name, family, "sample outside its family: {line}");
            assert!(value.parse::<f64>().is_ok(), "{line}");
            let labels = &name_labels[name.len()..];
            if !labels.is_empty() {
                let inner = labels.strip_prefix('{').unwrap().strip_suffix('}').unwrap();
                for pair in inner.split("\",") {
                    let (k, _) = pair.split_once("=\"").unwrap();
                    assert!(valid_name(k) && !k.starts_with("__"), "{line}");
                }
            }
            assert!(
                series.insert(name_labels.to_string()),
                "duplicate series {line}"
            );
        }
    }

    #[test]
    fn exposition_is_well_formed() {
        let s = traffic();
        let snap = Snapshot::take(&s, start_time(&s));
        let health = [
            DestHealth {
                service: snap.services[0].key,
                dest: "198.51.100.11:8080".parse().unwrap(),
                up: true,
            },
            DestHealth {
                service: snap.services[0].key,
                dest: "198.51.100.12:8080".parse().unwrap(),
                up: false,
            },
        ];
        let text = render(&snap, Some(&health));
        check_shape(&text);
        let l = lines(&text);
        assert!(
            l.contains(
                &format!("rvs_health_check_up{{service=\"{SVC}\",dest=\"198.51.100.12:8080\"}} 0")
                    .as_str()
            )
        );
        assert!(
            l.contains(
                &format!("rvs_health_check_up{{service=\"{SVC}\",dest=\"198.51.100.11:8080\"}} 1")
                    .as_str()
            )
        );
        // An empty director renders too.
        let empty = Shared::new(Dataplane::new(
            Director::new(Settings::default()),
            DataplaneConfig::default(),
        ));
        check_shape(&render(&Snapshot::take(&empty, 0.0), None));
    }

    #[test]
    fn every_io_counter_has_its_help_and_the_module_table_lists_every_family() {
        let names: Vec<&str> = crate::daemon::IoCounters::default()
            .snapshot()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        let documented: Vec<&str> = IO_HELP.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, documented);
        // The doc table at the top of this file names every family the renderer writes.
        let doc = include_str!("metrics.rs");
        let s = traffic();
        let snap = Snapshot::take(&s, start_time(&s));
        let mut text = render(&snap, Some(&[]));
        let mut w = Writer::new();
        render_io(
            &mut w,
            &IoSnap {
                io: crate::daemon::IoCounters::default().snapshot(),
                workers: vec![rvs_api::WorkerCounters::default()],
            },
        );
        text.push_str(&w.out);
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap();
                assert!(
                    doc.contains(&format!("//! | `{name}` |")),
                    "{name} is not in the module's table"
                );
            }
        }
    }

    #[test]
    fn labels_and_help_are_escaped() {
        let mut w = Writer::new();
        w.family("x_total", Kind::Counter, "a \\ b\nc");
        w.sample("x_total", &[("l", "q\"b\\n\nz")], 3u64);
        assert_eq!(
            w.out,
            "# HELP x_total a \\\\ b\\nc\n# TYPE x_total counter\nx_total{l=\"q\\\"b\\\\n\\nz\"} 3\n"
        );
    }

    #[test]
    fn listen_flag() {
        assert_eq!("off".parse::<Listen>(), Ok(Listen::Off));
        assert_eq!(
            "127.0.0.1:9753".parse::<Listen>(),
            Ok(Listen::On("127.0.0.1:9753".parse().unwrap()))
        );
        assert_eq!(
            "[::1]:9100".parse::<Listen>(),
            Ok(Listen::On("[::1]:9100".parse().unwrap()))
        );
        assert!("localhost".parse::<Listen>().is_err());
        assert!("127.0.0.1".parse::<Listen>().is_err());
        assert_eq!(Listen::Off.to_string(), "off");
    }

    #[test]
    fn routes() {
        assert_eq!(
            route(b"GET /metrics HTTP/1.1\r\nHost: x"),
            Route::Metrics { head: false }
        );
        assert_eq!(
            route(b"GET /metrics?x=1 HTTP/1.0"),
            Route::Metrics { head: false }
        );
        assert_eq!(
            route(b"HEAD /metrics HTTP/1.1"),
            Route::Metrics { head: true }
        );
        assert_eq!(route(b"POST /metrics HTTP/1.1"), Route::MethodNotAllowed);
        assert_eq!(route(b"GET / HTTP/1.1"), Route::NotFound);
        assert_eq!(route(b"GET /metricsx HTTP/1.1"), Route::NotFound);
        assert_eq!(route(b"GET /metrics"), Route::BadRequest);
        assert_eq!(route(b"GET /metrics SPDY/3"), Route::BadRequest);
        assert_eq!(route(b"GET  /metrics HTTP/1.1"), Route::BadRequest);
        assert_eq!(route(b"\xff\xfe /metrics HTTP/1.1"), Route::BadRequest);
        assert_eq!(route(b""), Route::BadRequest);
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nrest", 0), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\n", 0), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n", 0), None);
    }

    // ---- the server ---------------------------------------------------------------------

    struct Server {
        addr: SocketAddr,
        stop: Arc<AtomicBool>,
        handle: Option<JoinHandle<()>>,
    }

    impl Server {
        fn start(limits: Limits) -> Server {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let stop = Arc::new(AtomicBool::new(false));
            let handle =
                serve_on(listener, Arc::new(traffic()), Arc::clone(&stop), limits).unwrap();
            Server {
                addr,
                stop,
                handle: Some(handle),
            }
        }

        /// Send `request` raw and read the whole response (the server closes after one).
        fn exchange(&self, request: &[u8]) -> String {
            let mut s = TcpStream::connect(self.addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
            // The server may answer and close before taking everything: a write error is fine.
            let _ = s.write_all(request);
            let _ = s.shutdown(std::net::Shutdown::Write);
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out);
            String::from_utf8_lossy(&out).into_owned()
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Release);
            if let Some(h) = self.handle.take() {
                h.join().unwrap();
            }
        }
    }

    fn status(resp: &str) -> &str {
        resp.split(' ').nth(1).unwrap_or("")
    }

    fn header<'a>(resp: &'a str, name: &str) -> Option<&'a str> {
        let head = resp.split("\r\n\r\n").next()?;
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    #[test]
    fn serves_metrics_and_refuses_the_rest() {
        let s = Server::start(Limits::default());
        let r = s.exchange(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n");
        assert_eq!(status(&r), "200", "{r}");
        assert_eq!(header(&r, "content-type"), Some(CONTENT_TYPE));
        let (_, body) = r.split_once("\r\n\r\n").unwrap();
        assert_eq!(
            header(&r, "content-length"),
            Some(body.len().to_string().as_str())
        );
        assert!(body.contains(&format!(
            "rvs_service_connections_total{{service=\"{SVC}\"}} 2\n"
        )));
        check_shape(body);
        let h = s.exchange(b"HEAD /metrics HTTP/1.0\r\n\r\n");
        assert_eq!(status(&h), "200", "{h}");
        assert!(h.ends_with("\r\n\r\n"), "no body: {h}");
        assert_eq!(header(&h, "content-length"), header(&r, "content-length"));
        let r = s.exchange(b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(status(&r), "404", "{r}");
        let r = s.exchange(b"DELETE /metrics HTTP/1.1\r\n\r\n");
        assert_eq!(status(&r), "405", "{r}");
        assert_eq!(header(&r, "allow"), Some("GET, HEAD"));
        let r = s.exchange(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n");
        assert_eq!(status(&r), "400", "{r}");
        // A head that never ends within the size limit.
        let mut big = b"GET /metrics HTTP/1.1\r\n".to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_HEAD_BYTES + 10));
        let r = s.exchange(&big);
        assert_eq!(status(&r), "431", "{r}");
        // A client that connects and leaves says nothing and gets nothing.
        assert_eq!(s.exchange(b""), "");
    }

    #[test]
    fn slow_and_silent_clients_time_out_without_blocking_others() {
        let s = Server::start(Limits {
            max_clients: 8,
            request_timeout: Duration::from_millis(300),
        });
        let mut stalled = TcpStream::connect(s.addr).unwrap();
        stalled.write_all(b"GET /metr").unwrap();
        let _silent = TcpStream::connect(s.addr).unwrap();
        // Others are served meanwhile.
        let r = s.exchange(b"GET /metrics HTTP/1.1\r\n\r\n");
        assert_eq!(status(&r), "200");
        // The stalled one is told it took too long.
        stalled
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut out = String::new();
        let _ = stalled.read_to_string(&mut out);
        assert_eq!(status(&out), "408", "{out}");
    }

    #[test]
    fn too_many_clients_are_told_to_retry() {
        let s = Server::start(Limits {
            max_clients: 2,
            request_timeout: Duration::from_secs(3600),
        });
        let mut stalled = Vec::new();
        for _ in 0..2 {
            let mut st = TcpStream::connect(s.addr).unwrap();
            st.write_all(b"G").unwrap();
            stalled.push(st);
        }
        // Accepted in order: the two above hold the two slots (wait until they do).
        loop {
            let r = s.exchange(b"GET /metrics HTTP/1.1\r\n\r\n");
            if status(&r) == "503" {
                break;
            }
            assert_eq!(status(&r), "200", "{r}");
            thread::yield_now();
        }
        drop(stalled);
        // The slots free as their threads see the streams end.
        loop {
            let r = s.exchange(b"GET /metrics HTTP/1.1\r\n\r\n");
            match status(&r) {
                "200" => break,
                "503" => thread::yield_now(),
                other => panic!("{other}: {r}"),
            }
        }
    }

    #[test]
    fn stop_releases_the_port() {
        let mut s = Server::start(Limits::default());
        assert_eq!(status(&s.exchange(b"GET /metrics HTTP/1.1\r\n\r\n")), "200");
        s.stop.store(true, Ordering::Release);
        s.handle.take().unwrap().join().unwrap();
        assert!(
            TcpStream::connect(s.addr).is_err(),
            "nobody listens any more"
        );
        // The address can be bound again at once.
        let again = TcpListener::bind(s.addr);
        assert!(again.is_ok(), "{again:?}");
    }

    /// `promtool check metrics` (Prometheus's own linter) on the exposition. Without promtool
    /// the test says so loudly and passes, unless RVS_E2E=1 (CI), where that is a failure.
    #[test]
    fn promtool_accepts_the_exposition() {
        let promtool = std::env::var_os("PROMTOOL").unwrap_or_else(|| "promtool".into());
        let s = traffic();
        let snap = Snapshot::take(&s, start_time(&s));
        let health = [DestHealth {
            service: snap.services[0].key,
            dest: "198.51.100.11:8080".parse().unwrap(),
            up: true,
        }];
        let mut text = render(&snap, Some(&health));
        // The I/O families as the daemon would write them.
        let mut w = Writer::new();
        render_io(
            &mut w,
            &IoSnap {
                io: crate::daemon::IoCounters::default().snapshot(),
                workers: vec![rvs_api::WorkerCounters::default(); 2],
            },
        );
        text.push_str(&w.out);
        let child = std::process::Command::new(&promtool)
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let msg = format!(
                    "SKIPPED: promtool_accepts_the_exposition: {} not found (Debian: apt-get \
                     install prometheus)",
                    promtool.to_string_lossy()
                );
                if std::env::var("RVS_E2E").is_ok_and(|v| v == "1") {
                    panic!("{msg}; RVS_E2E=1 requires it");
                }
                eprintln!("\n{}\n{msg}\n{}\n", "!".repeat(72), "!".repeat(72));
                return;
            }
            Err(e) => panic!("running {}: {e}", promtool.to_string_lossy()),
        };
        let mut stdin = child.stdin.take().unwrap();
        let writer = thread::spawn(move || stdin.write_all(text.as_bytes()));
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap().unwrap();
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "promtool check metrics:\n{report}");
        assert_eq!(report.trim(), "", "promtool's lint findings");
    }
}
