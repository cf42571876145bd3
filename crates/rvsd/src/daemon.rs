//! `rvsd --interface IF ...`: the director on live Linux interfaces.
//!
//! Threads: `--workers N` workers, each with its own packet socket (RX and TX rings) on every
//! interface, joined per interface in one fanout group, so the kernel spreads flows over the
//! workers; one control thread (the abstract Unix socket); and the main thread, which owns the
//! nftables table, runs the dataplane's timers, writes the rate-limited drop log and waits for
//! signals.
//!
//! The connection table answers from every worker: the one `Dataplane` sits behind a mutex
//! that a worker takes once per burst of frames. An ICMP error lands on whatever worker the
//! kernel's flow hash picks for its outer header, and still finds its connection (DESIGN.md,
//! "Threads and the connection table"). On this 2-core machine the lock is not the bottleneck;
//! a sharded table is the step after it if it becomes one.
//!
//! What a worker does with a frame: finish the checksum the kernel left for the NIC, split GSO
//! super-packets into wire-sized segments, skip frames the host stack owns (the nftables
//! claims' userspace twin says which), run the dataplane, then: `Transmit`/`Reply` → resolve the
//! next hop through the kernel's routing and neighbour tables (frames wait in a small bounded
//! queue while a neighbour is being resolved) and send; `Local` → the exception interface
//! (TAP), so the host stack gets the packet as if nothing had claimed it.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use clap::Args;
use rvs_dataplane::{Dataplane, DataplaneConfig, Frame, Tx, Verdict};
use rvs_wire::parse::{Transport, tcp_flags};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tracing::{error, info, warn};

/// `sll_pkttype` of a frame addressed to this host's MAC.
const PACKET_HOST: u8 = 0;

use crate::config::{self, Config, load_config};
use crate::control::{self, Shared};
use crate::health::{self, HealthState};
use crate::host::nft::{Claims, NftTable};
use crate::host::route::{self, Resolution, Resolver};
use crate::io::ring::RingStats;
use crate::io::{PacketSocket, RingOpts, Tap, offload, wait_readable};
use crate::metrics::{self, Listen};
use crate::replay::parse_set;

/// Command line of the daemon (`rvsd --interface IF ...`).
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// An interface to attach to (repeat for several).
    #[arg(
        long = "interface",
        short = 'i',
        value_name = "IF",
        required_unless_present = "check_config"
    )]
    pub(crate) interfaces: Vec<String>,
    /// Virtual services and dests in the ipvsadm-save format (`-A -t VIP:port -s rr`, ...).
    #[arg(long, value_name = "FILE")]
    pub(crate) rules: Option<PathBuf>,
    /// Configuration file (TOML: director settings by their IPVS sysctl names,
    /// `[service."tcp/VIP:port"]` policies, `[health_check."tcp/VIP:port"]`, `[metrics]`,
    /// `[log]`; see packaging/rvsd.toml). Re-read on SIGHUP.
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Validate this configuration file (with `--rules` and `--set` if given) and exit: 0 when
    /// valid, 2 with the line and reason when not. Touches nothing on the host.
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    pub(crate) check_config: Option<PathBuf>,
    /// Set one director setting (after the config file).
    #[arg(long = "set", value_name = "NAME=VALUE", value_parser = parse_set)]
    pub(crate) sets: Vec<(String, String)>,
    /// Worker threads (default: the number of CPUs).
    #[arg(long)]
    pub(crate) workers: Option<usize>,
    /// Abstract Unix socket name of the control socket (`rvsadm` talks to it).
    #[arg(long, default_value = "rvsd", value_name = "NAME")]
    pub(crate) socket: String,
    /// Name of the exception interface (TAP) through which `Local` packets reach the host.
    #[arg(long, default_value = "rvs0", value_name = "NAME")]
    pub(crate) tap: String,
    /// Name of the nftables table (netdev family) that claims the director's traffic.
    #[arg(long, default_value = crate::host::nft::DEFAULT_TABLE, value_name = "NAME")]
    pub(crate) nft_table: String,
    /// Prometheus metrics listener (`GET /metrics`): ADDR:PORT, or `off`; overrides the config
    /// file's `[metrics]` (default 127.0.0.1:9753).
    #[arg(long, value_name = "ADDR|off")]
    pub(crate) metrics: Option<crate::metrics::Listen>,
}

/// Most frames a worker takes from one ring per burst: what keeps `process_burst`'s pipeline
/// busy.
const BURST: usize = rvs_dataplane::dataplane::BATCH;
/// Most frames waiting for neighbour resolution, per worker.
const PENDING_MAX: usize = 512;
/// How long a frame may wait for its neighbour.
const PENDING_TIMEOUT: Duration = Duration::from_secs(3);
/// How often the main thread runs timers and drains the drop log.
const TICK: Duration = Duration::from_millis(100);

/// Counters of the daemon's own work (the dataplane counts its verdicts itself).
#[derive(Debug, Default)]
pub(crate) struct IoCounters {
    /// Frames read from the rings.
    pub(crate) rx_frames: AtomicU64,
    /// Frames the host owns (not claimed), skipped.
    pub(crate) rx_unclaimed: AtomicU64,
    /// GSO super-packets split into segments.
    pub(crate) rx_gso: AtomicU64,
    /// Frames dropped because their checksum could not be completed or their GSO split failed.
    pub(crate) rx_offload_errors: AtomicU64,
    /// Frames transmitted.
    pub(crate) tx_frames: AtomicU64,
    /// Frames the TX ring refused.
    pub(crate) tx_errors: AtomicU64,
    /// Frames handed to the host stack through the TAP.
    pub(crate) tap_frames: AtomicU64,
    /// Frames dropped because the route to their next hop leaves by an interface rvsd is not
    /// attached to.
    pub(crate) no_egress: AtomicU64,
    /// Frames dropped because their next hop has no route or its neighbour failed.
    pub(crate) unreachable: AtomicU64,
    /// Frames dropped after waiting too long (or in too long a queue) for a neighbour.
    pub(crate) neigh_timeout: AtomicU64,
}

impl IoCounters {
    fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// Name and value of every counter, for logs and the control socket.
    pub(crate) fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        vec![
            ("rx_frames", l(&self.rx_frames)),
            ("rx_unclaimed", l(&self.rx_unclaimed)),
            ("rx_gso", l(&self.rx_gso)),
            ("rx_offload_errors", l(&self.rx_offload_errors)),
            ("tx_frames", l(&self.tx_frames)),
            ("tx_errors", l(&self.tx_errors)),
            ("tap_frames", l(&self.tap_frames)),
            ("no_egress", l(&self.no_egress)),
            ("unreachable", l(&self.unreachable)),
            ("neigh_timeout", l(&self.neigh_timeout)),
        ]
    }
}

/// One worker's share of the traffic.
#[derive(Debug, Default)]
pub(crate) struct WorkerStats {
    frames: AtomicU64,
    tcp_syn: AtomicU64,
    icmp_errors: AtomicU64,
}

/// The daemon's I/O counters, readable by the control server.
#[derive(Debug, Clone)]
pub(crate) struct IoStats {
    io: Arc<IoCounters>,
    workers: Vec<Arc<WorkerStats>>,
}

impl IoStats {
    /// Copy the counters into a `Counters` reply.
    pub(crate) fn fill(&self, c: &mut rvs_api::Counters) {
        c.io = self
            .counters()
            .into_iter()
            .map(|(name, count)| rvs_api::NamedCount {
                name: name.to_owned(),
                count,
            })
            .collect();
        c.workers = self.worker_counters();
    }

    /// Name and value of every I/O counter.
    pub(crate) fn counters(&self) -> Vec<(&'static str, u64)> {
        self.io.snapshot()
    }

    /// Each worker's counters, in worker order.
    pub(crate) fn worker_counters(&self) -> Vec<rvs_api::WorkerCounters> {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        self.workers
            .iter()
            .map(|w| rvs_api::WorkerCounters {
                frames: l(&w.frames),
                tcp_syn: l(&w.tcp_syn),
                icmp_errors: l(&w.icmp_errors),
            })
            .collect()
    }
}

/// What a frame is, for the per-worker counters: (TCP SYN without ACK, ICMP error), as the
/// packet layer's parser sees it. The commonest frames take the fast reader (which answers
/// only where the full parse agrees: 4 ns instead of 17), everything else the full parse.
fn classify(frame: &[u8]) -> (bool, bool) {
    if let Some(f) = rvs_wire::flow::read(frame) {
        let syn = f.protocol == rvs_wire::parse::proto::TCP
            && f.tcp_flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN;
        return (syn, false);
    }
    match rvs_wire::parse::parse_ethernet(frame) {
        Ok(p) => match p.ip() {
            Some(ip) => {
                let syn = matches!(
                    ip.transport,
                    Transport::Tcp { flags, .. } if flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN
                );
                (syn, ip.is_icmp_error())
            }
            None => (false, false),
        },
        Err(_) => (false, false),
    }
}

/// What the workers share besides the dataplane.
struct WorkerShared {
    shared: Arc<Shared>,
    claims: RwLock<Arc<Claims>>,
    tap: Mutex<Tap>,
    counters: Arc<IoCounters>,
    stop: Arc<AtomicBool>,
}

/// Run the daemon until SIGTERM or SIGINT. Setup errors come back as `Err` (exit status 1).
pub(crate) fn run(args: &RunArgs) -> Result<()> {
    let running = load_config(args.config.as_deref(), &args.sets)?;
    crate::init_logging(&running.log);
    // Rule mistakes are usage errors (exit status 2), as in `rvsd replay`.
    let director = config::build_director(&running, args.rules.as_deref())?;

    // The director's own addresses (tunnel sources, sources of its own errors): the
    // namespace's addresses that are not VIPs; the MTU: the smallest of its interfaces'.
    let mut mtu = u32::from(u16::MAX);
    for ifname in &args.interfaces {
        let info =
            route::interface_info(ifname).with_context(|| format!("--interface {ifname}"))?;
        mtu = mtu.min(info.mtu);
    }
    let addrs: Vec<IpAddr> = route::local_addrs()
        .context("reading the host's addresses")?
        .into_iter()
        .filter(|a| !director.is_vip(*a))
        .collect();
    if addrs.is_empty() {
        warn!(
            "the host has no address that is not a VIP: tunnel mode and the director's own errors lack a source"
        );
    }
    let cfg = DataplaneConfig {
        addrs: addrs.clone(),
        mtu: u16::try_from(mtu).unwrap_or(u16::MAX),
        ..Default::default()
    };
    let dp = Dataplane::new(director, cfg);
    let claims = Claims::from_director(dp.director()).with_local_addrs(&addrs);
    let workers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, 64);
    let shared = Arc::new(
        Shared::new(dp).with_info(args.interfaces.clone(), u32::try_from(workers).unwrap_or(1)),
    );
    let _ = shared
        .health
        .set(Arc::new(HealthState::new(running.health_checks.clone())));

    // Signals first, so that a TERM during setup still ends in a clean teardown.
    let mut signals =
        Signals::new([SIGTERM, SIGINT, SIGHUP]).context("installing signal handlers")?;

    let tap = Tap::open(&args.tap).with_context(|| format!("creating TAP {}", args.tap))?;
    let m = tap.mac();
    info!(
        tap = tap.name(),
        mac = %format!("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5]),
        "exception interface up"
    );
    if tap.ipv4_rp_filter() != 0 {
        warn!(
            "net.ipv4.conf.all.rp_filter or net.ipv4.conf.{}.rp_filter is not 0: the host stack \
             will drop the IPv4 packets rvsd hands it through the TAP (ICMP errors about unknown \
             connections, echo requests to VIPs)",
            args.tap
        );
    }
    // The rings before the claims: from the moment the table drops a claimed frame in the
    // host, a ring must hold the director's copy of it (or a restart under traffic loses it).
    let sockets = open_sockets(args, workers)?;
    let mut nft = NftTable::install(&args.nft_table, &args.interfaces, &claims)
        .with_context(|| format!("installing nftables table {}", args.nft_table))?;
    let stop = Arc::new(AtomicBool::new(false));
    let ws = Arc::new(WorkerShared {
        shared: Arc::clone(&shared),
        claims: RwLock::new(Arc::new(claims)),
        tap: Mutex::new(tap),
        counters: Arc::new(IoCounters::default()),
        stop: Arc::clone(&stop),
    });
    let result = serve(args, &ws, sockets, &addrs, &mut signals, &mut nft, running);
    // Teardown happens whatever went wrong above.
    stop.store(true, Ordering::SeqCst);
    let table = nft.name().to_owned();
    match nft.remove() {
        Ok(()) => info!("nftables table {table} removed"),
        Err(e) => error!("removing nftables table {table}: {e}"),
    }
    let c = ws.counters.snapshot();
    let dp = lock(&shared.dp);
    let d = dp.counters();
    info!(
        rx = d.rx,
        forwarded = d.forwarded,
        generated = d.generated,
        local = d.local,
        io = ?c,
        "rvsd: stopped"
    );
    result
}

/// Every worker's packet sockets, one per interface, joined per interface in one fanout group.
fn open_sockets(args: &RunArgs, workers: usize) -> Result<Vec<Vec<PacketSocket>>> {
    let mut all = Vec::with_capacity(workers);
    // One fanout group per interface, unique to this process.
    let base = (std::process::id() as u16).wrapping_mul(31);
    for w in 0..workers {
        let mut socks = Vec::new();
        for (i, ifname) in args.interfaces.iter().enumerate() {
            let opts = RingOpts {
                fanout_group: Some(base.wrapping_add(i as u16)),
                ..RingOpts::default()
            };
            let s = PacketSocket::open(ifname, &opts)
                .with_context(|| format!("packet socket on {ifname}"))?;
            if w == 0 {
                let (rx, tx) = s.ring_frames();
                info!(
                    interface = %s.ifname(),
                    ifindex = s.ifindex(),
                    mtu = s.mtu(),
                    vnet_hdr = s.has_vnet_hdr(),
                    rx_frames = rx,
                    tx_frames = tx,
                    "attached"
                );
            }
            socks.push(s);
        }
        all.push(socks);
    }
    Ok(all)
}

/// Start the control socket and the workers, then run timers and wait for a signal.
fn serve(
    args: &RunArgs,
    ws: &Arc<WorkerShared>,
    sockets: Vec<Vec<PacketSocket>>,
    addrs: &[IpAddr],
    signals: &mut Signals,
    nft: &mut NftTable,
    mut running: Config,
) -> Result<()> {
    let shared = &ws.shared;
    let checker = match shared.health.get() {
        Some(h) if h.checked_services() > 0 => {
            info!(
                "health checks: checking the dests of {} services",
                h.checked_services()
            );
            Some(
                health::spawn(Arc::clone(shared), Arc::clone(h), Arc::clone(&ws.stop))
                    .context("starting the health checker")?,
            )
        }
        // Started by the first reload that configures a check.
        _ => None,
    };
    let mut checker = checker;
    let listen = match args.metrics {
        Some(l) => l,
        None if running.metrics.enabled => Listen::On(running.metrics.listen),
        None => Listen::Off,
    };
    let metrics = match listen {
        Listen::On(addr) => Some(
            metrics::serve(addr, Arc::clone(shared), Arc::clone(&ws.stop))
                .with_context(|| format!("metrics listener {addr}"))?,
        ),
        Listen::Off => None,
    };
    let mut handles: Vec<JoinHandle<Vec<(String, RingStats)>>> = Vec::new();
    let mut worker_stats = Vec::new();
    let workers = sockets.len();
    for (w, socks) in sockets.into_iter().enumerate() {
        let resolver = Resolver::new().context("netlink")?;
        let ws = Arc::clone(ws);
        let stats = Arc::new(WorkerStats::default());
        worker_stats.push(Arc::clone(&stats));
        handles.push(
            std::thread::Builder::new()
                .name(format!("rvsd-worker-{w}"))
                .spawn(move || Worker::new(ws, socks, resolver, stats).run())
                .context("starting a worker")?,
        );
    }
    let _ = shared.io.set(IoStats {
        io: Arc::clone(&ws.counters),
        workers: worker_stats,
    });
    // The control socket last: its first answer tells that the director is ready, and until
    // every packet socket is attached, what the nftables table claims would be lost (a UDP
    // datagram sent right after start has no retransmission to recover it).
    let control = control::serve(&args.socket, Arc::clone(shared), Arc::clone(&ws.stop))
        .with_context(|| format!("control socket @{}", args.socket))?;
    info!(
        interfaces = ?args.interfaces,
        workers,
        socket = %format!("@{}", args.socket),
        metrics = %listen,
        tap = %args.tap,
        nft_table = %args.nft_table,
        "rvsd: running"
    );
    let mut generation = shared.rules_generation.load(Ordering::SeqCst);
    let mut outcome = Ok(());
    'main: loop {
        for sig in signals.pending() {
            match sig {
                SIGHUP => {
                    reload(args, shared, &mut running);
                    if checker.is_none()
                        && let Some(h) = shared.health.get()
                        && h.checked_services() > 0
                    {
                        checker =
                            health::spawn(Arc::clone(shared), Arc::clone(h), Arc::clone(&ws.stop))
                                .map_err(|e| error!("starting the health checker: {e}"))
                                .ok();
                    }
                }
                s => {
                    info!(
                        "rvsd: stopping on {}",
                        if s == SIGTERM { "SIGTERM" } else { "SIGINT" }
                    );
                    break 'main;
                }
            }
        }
        if handles.iter().any(|h| h.is_finished()) {
            outcome = Err(anyhow!("a worker stopped unexpectedly"));
            break;
        }
        let now = shared.now();
        let logs = {
            let mut dp = lock(&shared.dp);
            dp.housekeeping(now);
            dp.take_drop_log()
        };
        for l in logs {
            warn!(
                reason = l.reason.name(),
                suppressed = l.suppressed,
                "dropped packets (at most one line per reason per interval)"
            );
        }
        let g = shared.rules_generation.load(Ordering::SeqCst);
        if g != generation {
            generation = g;
            let claims = Claims::from_director(lock(&shared.dp).director()).with_local_addrs(addrs);
            if let Err(e) = nft.update(&claims) {
                error!("updating nftables table: {e}");
            }
            *ws.claims.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(claims);
        }
        // What the host sends to the TAP (router solicitations...) is not ours: keep its
        // queue empty.
        lock(&ws.tap).drain();
        std::thread::sleep(TICK);
    }
    ws.stop.store(true, Ordering::SeqCst);
    for (w, h) in handles.into_iter().enumerate() {
        match h.join() {
            Ok(rings) => {
                for (ifname, st) in rings {
                    info!(
                        worker = w,
                        interface = %ifname,
                        rx = st.rx,
                        rx_truncated = st.rx_truncated,
                        rx_ignored = st.rx_ignored,
                        kernel_drops = st.kernel_drops,
                        tx = st.tx,
                        tx_dropped = st.tx_dropped,
                        tx_errors = st.tx_errors,
                        "ring statistics"
                    );
                }
            }
            Err(_) => outcome = Err(anyhow!("a worker panicked")),
        }
    }
    let _ = control.join();
    if let Some(m) = metrics {
        let _ = m.join();
    }
    if let Some(c) = checker {
        let _ = c.join();
    }
    if let Some(h) = shared.health.get() {
        health::log_summary(h);
    }
    outcome
}

/// SIGHUP: re-read the config file and the rules file and apply the difference atomically —
/// settings, per-service policies, health checks, and (with `--rules`) the services and dests
/// the rules file now describes, as ipvsadm commands against the running director; the
/// connection table stays (a removed dest's connections live on as with `rvsadm -d`). Any
/// mistake is logged with its line and reason and nothing changes. Runtime changes made with
/// `rvsadm` (services, dests, `--set`) give way to the files: they are the configuration.
fn reload(args: &RunArgs, shared: &Shared, running: &mut Config) {
    match try_reload(args, shared, running) {
        Ok(summary) => info!("SIGHUP: configuration reloaded: {summary}"),
        Err(e) => error!("SIGHUP: configuration rejected, the running one stays: {e:#}"),
    }
}

fn try_reload(args: &RunArgs, shared: &Shared, running: &mut Config) -> Result<String> {
    let cfg = load_config(args.config.as_deref(), &args.sets)?;
    // The rules file, applied from empty as at start: validates it whole.
    let desired = match &args.rules {
        Some(path) => Some(config::build_director(&cfg, Some(path))?),
        None => None,
    };
    let now = shared.now();
    let mut dp = lock(&shared.dp);
    if cfg.settings.hash_seed != dp.settings().hash_seed {
        return Err(anyhow!(
            "hash_seed cannot change while rvsd runs (the connection table is hashed with              it): restart rvsd to change it"
        ));
    }
    let diff = desired
        .as_ref()
        .map(|want| config::rules_diff(dp.director(), want))
        .unwrap_or_default();
    control::apply_all_or_nothing(dp.director_mut(), &diff, now)
        .map_err(|e| anyhow!("applying the rules file: {e}"))?;
    // Nothing below can fail: the reload is whole.
    let d = dp.director_mut();
    d.set_settings(cfg.settings.clone());
    for (key, _) in &running.policies {
        if !cfg.policies.iter().any(|(k, _)| k == key) {
            d.set_service_policy(*key, rvs_core::director::ServicePolicy::default());
        }
    }
    for (key, p) in &cfg.policies {
        d.set_service_policy(*key, *p);
    }
    let health = shared.health.get().map(|h| {
        h.set_checks(cfg.health_checks.clone());
        h.reconcile(d, now, desired.is_some())
    });
    drop(dp);
    let health = health.unwrap_or_default();
    if !diff.is_empty() || health.changed {
        shared.rules_generation.fetch_add(1, Ordering::AcqRel);
    }
    health.events.iter().for_each(health::Event::log);
    if cfg.log.level != running.log.level && !crate::set_log_level(&cfg.log.level) {
        info!("log level unchanged: RUST_LOG overrides the configuration");
    }
    if cfg.log.format != running.log.format {
        warn!("[log] format changed: it takes effect when rvsd restarts");
    }
    if cfg.metrics != running.metrics {
        warn!("[metrics] changed: it takes effect when rvsd restarts");
    }
    let summary = format!(
        "{} rule changes{}, {} service policies, {} health checks",
        diff.len(),
        if args.rules.is_some() {
            ""
        } else {
            " (no --rules file)"
        },
        cfg.policies.len(),
        cfg.health_checks.len()
    );
    *running = cfg;
    Ok(summary)
}

/// Lock a mutex; a worker that panicked while holding it leaves consistent-enough state (the
/// dataplane never panics by design), so poisoning is ignored.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A frame waiting for its next hop's neighbour entry.
struct Pending {
    since: Instant,
    next_hop: IpAddr,
    frame: Vec<u8>,
}

/// One worker: its sockets (one per interface), its netlink resolver, its buffers.
struct Worker {
    ws: Arc<WorkerShared>,
    socks: Vec<PacketSocket>,
    resolver: Resolver,
    /// Frames of the current burst, after checksum completion and GSO splitting; `used` of
    /// them are live. Kept between bursts so their buffers are reused.
    frames: Vec<Frame>,
    used: usize,
    /// Scratch for GSO segmentation.
    scratch: Vec<u8>,
    /// Scratch for a frame whose VLAN tag the kernel stripped.
    tagged: Vec<u8>,
    /// Rate-limited log of frames whose offloads could not be finished.
    offload_log: RateLog,
    /// Verdicts of the current burst, by frame index, and the extra frames they released.
    verdicts: Vec<Verdict>,
    out_extra: Vec<Tx>,
    pending: VecDeque<Pending>,
    claims: Arc<Claims>,
    stats: Arc<WorkerStats>,
}

impl Worker {
    fn new(
        ws: Arc<WorkerShared>,
        socks: Vec<PacketSocket>,
        resolver: Resolver,
        stats: Arc<WorkerStats>,
    ) -> Worker {
        let claims = Arc::clone(&ws.claims.read().unwrap_or_else(|e| e.into_inner()));
        Worker {
            ws,
            socks,
            resolver,
            frames: Vec::new(),
            used: 0,
            scratch: Vec::new(),
            tagged: Vec::new(),
            offload_log: RateLog::default(),
            verdicts: Vec::new(),
            out_extra: Vec::new(),
            pending: VecDeque::new(),
            claims,
            stats,
        }
    }

    /// Forward until told to stop; returns the rings' statistics.
    fn run(mut self) -> Vec<(String, RingStats)> {
        while !self.ws.stop.load(Ordering::Relaxed) {
            let ready = {
                let mut fds: Vec<_> = self.socks.iter().map(|s| s.rx_fd()).collect();
                fds.push(self.resolver.event_fd());
                wait_readable(&fds, Duration::from_millis(50))
            };
            if let Err(e) = ready {
                error!("poll: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
            self.resolver.poll_events();
            let current = Arc::clone(&self.ws.claims.read().unwrap_or_else(|e| e.into_inner()));
            self.claims = current;
            self.retry_pending();
            for i in 0..self.socks.len() {
                // Drain the ring, a burst at a time, before polling again.
                while self.burst(i) == BURST {}
            }
        }
        self.socks
            .iter()
            .map(|s| (s.ifname().to_owned(), s.stats()))
            .collect()
    }

    /// Read one burst from socket `i`, process it, transmit what it produced. Returns how many
    /// frames the ring gave.
    fn burst(&mut self, i: usize) -> usize {
        self.used = 0;
        let counters = Arc::clone(&self.ws.counters);
        let claims = Arc::clone(&self.claims);
        let (frames, used, scratch) = (&mut self.frames, &mut self.used, &mut self.scratch);
        let (tagged, offload_log) = (&mut self.tagged, &mut self.offload_log);
        let n = self.socks[i].recv_burst(BURST, |rx| {
            IoCounters::add(&counters.rx_frames, 1);
            if rx.pkt_type != PACKET_HOST {
                // Broadcast and multicast frames are never a balanced flow's (IPVS acts on
                // unicast only); the host has its own copy.
                IoCounters::add(&counters.rx_unclaimed, 1);
                return;
            }
            let mut push = |bytes: &[u8]| {
                if !claims.claims(bytes) {
                    IoCounters::add(&counters.rx_unclaimed, 1);
                    return;
                }
                if *used == frames.len() {
                    frames.push(Frame::with_capacity(2048));
                }
                frames[*used].set(bytes);
                *used += 1;
            };
            let data: &mut [u8] = match rx.vlan {
                // The kernel took the tag off: put it back, the dataplane keeps it on what it
                // forwards.
                Some(v) => {
                    offload::insert_vlan(rx.data, v.tpid, v.tci, tagged);
                    tagged.as_mut_slice()
                }
                None => rx.data,
            };
            if rx.vnet.is_complete() {
                push(data);
                return;
            }
            let gso = rx.vnet.gso.is_some();
            match offload::finish(data, &rx.vnet, scratch, &mut push) {
                Ok(_) if gso => IoCounters::add(&counters.rx_gso, 1),
                Ok(_) => {}
                Err(e) => {
                    IoCounters::add(&counters.rx_offload_errors, 1);
                    offload_log.note(e.name());
                }
            }
        });
        self.offload_log.flush();
        if self.used == 0 {
            return n;
        }
        let mut frames = std::mem::take(&mut self.frames);
        let (mut syns, mut icmps) = (0u64, 0u64);
        for f in &frames[..self.used] {
            let (syn, icmp) = classify(f.data());
            syns += u64::from(syn);
            icmps += u64::from(icmp);
        }
        self.verdicts.clear();
        self.out_extra.clear();
        {
            let shared = &self.ws.shared;
            let mut dp = lock(&shared.dp);
            // Counted under the dataplane's lock, which a `Counters` request also holds while
            // it reads them: its per-worker frames then always add up to the dataplane's rx.
            IoCounters::add(&self.stats.frames, self.used as u64);
            IoCounters::add(&self.stats.tcp_syn, syns);
            IoCounters::add(&self.stats.icmp_errors, icmps);
            let now = shared.now();
            // The whole burst at once: the dataplane prefetches its connection lookups.
            dp.process_burst(
                &mut frames[..self.used],
                now,
                &mut self.out_extra,
                &mut self.verdicts,
            );
        }
        let verdicts = std::mem::take(&mut self.verdicts);
        for (f, v) in frames.iter_mut().zip(&verdicts) {
            match *v {
                Verdict::Transmit { next_hop } | Verdict::Reply { next_hop } => {
                    self.transmit(f.data_mut(), next_hop);
                }
                Verdict::Local => self.to_host(f.data_mut()),
                Verdict::Held | Verdict::Drop(_) => {}
            }
        }
        self.verdicts = verdicts;
        let mut extra = std::mem::take(&mut self.out_extra);
        for tx in &mut extra {
            if tx.local {
                self.to_host(tx.frame.data_mut());
            } else {
                self.transmit(tx.frame.data_mut(), tx.next_hop);
            }
        }
        self.out_extra = extra;
        self.frames = frames;
        self.flush();
        n
    }

    /// Hand a frame to the host stack through the TAP.
    fn to_host(&self, frame: &mut [u8]) {
        let mut tap = lock(&self.ws.tap);
        match tap.deliver(frame) {
            Ok(()) => IoCounters::add(&self.ws.counters.tap_frames, 1),
            Err(e) => warn!("TAP write: {e}"),
        }
    }

    /// Resolve `next_hop` and send, or park the frame while its neighbour is resolved.
    fn transmit(&mut self, frame: &mut [u8], next_hop: IpAddr) {
        match self.resolver.resolve(next_hop, Instant::now()) {
            Resolution::Ready { ifindex, dst_mac } => self.send(frame, ifindex, dst_mac),
            Resolution::Pending => {
                if self.pending.len() >= PENDING_MAX {
                    IoCounters::add(&self.ws.counters.neigh_timeout, 1);
                    return;
                }
                self.pending.push_back(Pending {
                    since: Instant::now(),
                    next_hop,
                    frame: frame.to_vec(),
                });
            }
            Resolution::Unreachable => IoCounters::add(&self.ws.counters.unreachable, 1),
        }
    }

    /// Set the frame's MACs for the egress interface and its next hop, and queue it.
    fn send(&mut self, frame: &mut [u8], ifindex: u32, dst_mac: [u8; 6]) {
        let Some(s) = self.socks.iter_mut().find(|s| s.ifindex() == ifindex) else {
            IoCounters::add(&self.ws.counters.no_egress, 1);
            return;
        };
        if frame.len() < 14 {
            return;
        }
        frame[..6].copy_from_slice(&dst_mac);
        frame[6..12].copy_from_slice(&s.mac());
        match s.send_frame(frame) {
            Ok(()) => IoCounters::add(&self.ws.counters.tx_frames, 1),
            // Already counted by the ring.
            Err(_) => IoCounters::add(&self.ws.counters.tx_errors, 1),
        }
    }

    fn flush(&mut self) {
        for s in &mut self.socks {
            if s.flush().is_err() {
                IoCounters::add(&self.ws.counters.tx_errors, 1);
            }
        }
    }

    /// Send what waited for a neighbour and now can go; time out the rest.
    fn retry_pending(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let now = Instant::now();
        for _ in 0..self.pending.len() {
            let Some(mut p) = self.pending.pop_front() else {
                break;
            };
            match self.resolver.resolve(p.next_hop, now) {
                Resolution::Ready { ifindex, dst_mac } => {
                    self.send(&mut p.frame, ifindex, dst_mac);
                }
                Resolution::Pending if now.duration_since(p.since) < PENDING_TIMEOUT => {
                    self.pending.push_back(p);
                }
                Resolution::Pending => IoCounters::add(&self.ws.counters.neigh_timeout, 1),
                Resolution::Unreachable => IoCounters::add(&self.ws.counters.unreachable, 1),
            }
        }
        self.flush();
    }
}

/// At most one log line per interval about frames dropped for the same kind of reason, with
/// the count of those not logged (never a line per packet).
#[derive(Debug, Default)]
struct RateLog {
    last: Option<Instant>,
    pending: u64,
    reason: &'static str,
}

impl RateLog {
    const INTERVAL: Duration = Duration::from_secs(10);

    fn note(&mut self, reason: &'static str) {
        self.pending += 1;
        self.reason = reason;
    }

    fn flush(&mut self) {
        if self.pending == 0 || self.last.is_some_and(|t| t.elapsed() < Self::INTERVAL) {
            return;
        }
        warn!(
            reason = self.reason,
            frames = self.pending,
            "frames dropped: their checksum or segmentation offload could not be finished \
             (at most one line per 10 s)"
        );
        self.last = Some(Instant::now());
        self.pending = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rvs_core::settings::ExpiredReply;

    #[test]
    fn classify_counts_syns_and_icmp_errors_whichever_reader_takes_the_frame() {
        let eth = || etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let tcp = |syn: bool, ack: bool, vlan: bool| {
            let mut v = Vec::new();
            let ip = if vlan {
                eth()
                    .single_vlan(etherparse::VlanId::try_new(7).unwrap())
                    .ipv4([192, 0, 2, 1], [203, 0, 113, 10], 64)
            } else {
                eth().ipv4([192, 0, 2, 1], [203, 0, 113, 10], 64)
            };
            let mut t = ip.tcp(40000, 80, 1, 100);
            if syn {
                t = t.syn();
            }
            if ack {
                t = t.ack(1);
            }
            t.write(&mut v, &[]).unwrap();
            v
        };
        assert_eq!(classify(&tcp(true, false, false)), (true, false));
        assert_eq!(classify(&tcp(true, false, true)), (true, false)); // full parse (VLAN)
        assert_eq!(classify(&tcp(true, true, false)), (false, false));
        assert_eq!(classify(&tcp(false, true, false)), (false, false));
        let mut quoted = tcp(false, true, false);
        quoted.drain(..14);
        let mut err = Vec::new();
        eth()
            .ipv4([198, 51, 100, 1], [203, 0, 113, 10], 64)
            .icmpv4(etherparse::Icmpv4Type::TimeExceeded(
                etherparse::icmpv4::TimeExceededCode::TtlExceededInTransit,
            ))
            .write(&mut err, &quoted)
            .unwrap();
        assert_eq!(classify(&err), (false, true));
        let mut echo = Vec::new();
        eth()
            .ipv4([198, 51, 100, 1], [203, 0, 113, 10], 64)
            .icmpv4_echo_request(1, 1)
            .write(&mut echo, b"ping")
            .unwrap();
        assert_eq!(classify(&echo), (false, false));
        assert_eq!(classify(&[0; 10]), (false, false));
    }

    /// A scratch directory, removed on drop.
    struct Dir(PathBuf);

    impl Dir {
        fn new(name: &str) -> Dir {
            let d = std::env::temp_dir().join(format!("rvsd-reload-{}-{name}", std::process::id()));
            std::fs::create_dir_all(&d).unwrap();
            Dir(d)
        }

        fn write(&self, name: &str, text: &str) -> PathBuf {
            let p = self.0.join(name);
            std::fs::write(&p, text).unwrap();
            p
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn args(config: PathBuf, rules: PathBuf) -> RunArgs {
        RunArgs {
            interfaces: vec!["veth0".into()],
            rules: Some(rules),
            config: Some(config),
            check_config: None,
            sets: vec![("timeout_udp".into(), "77".into())],
            workers: Some(1),
            socket: "unused".into(),
            tap: "unused".into(),
            nft_table: "unused".into(),
            metrics: None,
        }
    }

    /// A client's TCP segment to the VIP.
    fn segment(cport: u16, syn: bool) -> Frame {
        let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([192, 0, 2, 1], [203, 0, 113, 10], 64)
            .tcp(cport, 80, 1000, 64240);
        let b = if syn { b.syn() } else { b.ack(1) };
        let mut out = Vec::new();
        b.write(&mut out, &[]).unwrap();
        Frame::from_bytes(&out)
    }

    /// Where a forwarded segment goes (DR: the dest's address is the next hop).
    fn next_hop(v: Verdict) -> Option<IpAddr> {
        match v {
            Verdict::Transmit { next_hop } => Some(next_hop),
            _ => None,
        }
    }

    fn saved(shared: &Shared) -> Vec<(String, Vec<(IpAddr, u32)>)> {
        let dp = lock(&shared.dp);
        dp.director()
            .services()
            .iter()
            .map(|v| {
                (
                    config::service_name(&v.spec.key),
                    v.dests
                        .iter()
                        .map(|d| (d.dest.addr, d.dest.weight))
                        .collect(),
                )
            })
            .collect()
    }

    const RULES: &str = "-A -t 203.0.113.10:80 -s rr\n\
                         -a -t 203.0.113.10:80 -r 198.51.100.11:80 -g -w 1\n";

    #[test]
    fn sighup_applies_files_atomically_and_keeps_the_connection_table() {
        let d = Dir::new("unit");
        let config = d.write("rvsd.toml", "timeout_tcp = 600\n");
        let rules = d.write("rules", RULES);
        let a = args(config.clone(), rules.clone());
        let mut running = load_config(a.config.as_deref(), &a.sets).unwrap();
        let director = config::build_director(&running, a.rules.as_deref()).unwrap();
        let dp = Dataplane::new(
            director,
            DataplaneConfig {
                addrs: vec!["198.51.100.1".parse().unwrap()],
                ..DataplaneConfig::default()
            },
        );
        let shared = Shared::new(dp);
        let _ = shared
            .health
            .set(Arc::new(HealthState::new(running.health_checks.clone())));
        let mut extra = Vec::new();
        // A connection to the one dest.
        let mut f = segment(40000, true);
        let v = lock(&shared.dp).process(&mut f, shared.now(), &mut extra);
        assert_eq!(next_hop(v), Some("198.51.100.11".parse().unwrap()));
        assert_eq!(lock(&shared.dp).director().conns().len(), 1);
        let g0 = shared.rules_generation.load(Ordering::SeqCst);

        // Good files: a second dest, other settings, a policy.
        std::fs::write(
            &rules,
            format!("{RULES}-a -t 203.0.113.10:80 -r 198.51.100.12:80 -g -w 2\n"),
        )
        .unwrap();
        std::fs::write(
            &config,
            "timeout_tcp = 300\n[service.\"tcp/203.0.113.10:80\"]\nexpired_reply = \"icmp\"\n",
        )
        .unwrap();
        let summary = try_reload(&a, &shared, &mut running).unwrap();
        assert!(summary.contains("1 rule changes"), "{summary}");
        assert!(
            shared.rules_generation.load(Ordering::SeqCst) > g0,
            "claims follow"
        );
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            saved(&shared),
            vec![(
                "tcp/203.0.113.10:80".to_owned(),
                vec![(ip("198.51.100.11"), 1), (ip("198.51.100.12"), 2)]
            )]
        );
        {
            let dp = lock(&shared.dp);
            let s = dp.settings();
            assert_eq!(
                (s.timeouts.tcp, s.timeouts.udp),
                (300, 77),
                "file, then --set"
            );
            let svc = dp.director().services()[0].id;
            assert_eq!(dp.director().expired_reply(svc), ExpiredReply::Icmp);
            assert_eq!(dp.director().conns().len(), 1, "the table is kept");
        }
        // The existing connection still goes to its dest.
        let mut f = segment(40000, false);
        let v = lock(&shared.dp).process(&mut f, shared.now(), &mut extra);
        assert_eq!(next_hop(v), Some(ip("198.51.100.11")));
        // A new one may go to either (rr): the new dest is in the scheduler.
        let hops: Vec<_> = (0..2)
            .map(|i| {
                let mut f = segment(41000 + i, true);
                next_hop(lock(&shared.dp).process(&mut f, shared.now(), &mut extra))
            })
            .collect();
        assert!(hops.contains(&Some(ip("198.51.100.12"))), "{hops:?}");

        // Broken files change nothing: a bad config line, a bad rule, a hash seed change.
        let before = saved(&shared);
        let settings_before = lock(&shared.dp).settings().clone();
        let g1 = shared.rules_generation.load(Ordering::SeqCst);
        std::fs::write(
            &config,
            "timeout_tcp = 30\n\n[service.\"tcp/203.0.113.10:80\"]\nbogus = 1\n",
        )
        .unwrap();
        std::fs::write(&rules, "-A -t 203.0.113.20:80 -s rr\n").unwrap();
        let e = try_reload(&a, &shared, &mut running)
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 4") && e.contains("bogus"), "{e}");
        std::fs::write(&config, "timeout_tcp = 30\n").unwrap();
        std::fs::write(
            &rules,
            format!("{RULES}-a -t 203.0.113.10:80 -r 198.51.100.13:80 -g -w 70000\n"),
        )
        .unwrap();
        let e = try_reload(&a, &shared, &mut running)
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3"), "{e}");
        std::fs::write(&config, "timeout_tcp = 30\nhash_seed = 7\n").unwrap();
        std::fs::write(&rules, RULES).unwrap();
        let e = try_reload(&a, &shared, &mut running)
            .unwrap_err()
            .to_string();
        assert!(e.contains("hash_seed"), "{e}");
        assert_eq!(saved(&shared), before);
        assert_eq!(*lock(&shared.dp).settings(), settings_before);
        assert_eq!(shared.rules_generation.load(Ordering::SeqCst), g1);
        assert_eq!(running.settings.timeouts.tcp, 300);

        // The dest of the connection leaves the rules: the connection lives on (dest trash);
        // the policy leaves the config: the service falls back to the setting.
        std::fs::write(&config, "").unwrap();
        std::fs::write(
            &rules,
            "-A -t 203.0.113.10:80 -s rr\n-a -t 203.0.113.10:80 -r 198.51.100.12:80 -g -w 2\n",
        )
        .unwrap();
        try_reload(&a, &shared, &mut running).unwrap();
        let dp = lock(&shared.dp);
        assert_eq!(dp.director().conns().len(), 3, "no connection was dropped");
        let svc = dp.director().services()[0].id;
        assert_eq!(dp.director().expired_reply(svc), ExpiredReply::Rst);
        assert_eq!(dp.director().services()[0].dests.len(), 1);
    }

    #[test]
    fn a_reload_holds_a_down_dest_out_of_service() {
        let d = Dir::new("health");
        let check = "[health_check.\"tcp/203.0.113.10:80\"]\nkind = \"tcp\"\nfall = 1\n";
        let config = d.write("rvsd.toml", check);
        let rules = d.write("rules", RULES);
        let a = args(config, rules.clone());
        let mut running = load_config(a.config.as_deref(), &a.sets).unwrap();
        let director = config::build_director(&running, a.rules.as_deref()).unwrap();
        let shared = Shared::new(Dataplane::new(director, DataplaneConfig::default()));
        let state = Arc::new(HealthState::new(running.health_checks.clone()));
        let _ = shared.health.set(Arc::clone(&state));
        let now = shared.now();
        let job = {
            let mut dp = lock(&shared.dp);
            state.reconcile(dp.director_mut(), now, false);
            let jobs = state.due(Instant::now() + Duration::from_secs(60), 8);
            assert_eq!(jobs.len(), 1);
            jobs.into_iter().next().unwrap()
        };
        // The probe fails: 198.51.100.11 is quiesced.
        let out = state.record(lock(&shared.dp).director_mut(), now, job.failed("refused"));
        assert_eq!(out.events.len(), 1);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(saved(&shared)[0].1, vec![(ip("198.51.100.11"), 0)]);
        // The rules still say weight 1 (and now 4): the reload keeps it at 0, remembering 4.
        std::fs::write(&rules, RULES.replace("-w 1", "-w 4")).unwrap();
        try_reload(&a, &shared, &mut running).unwrap();
        assert_eq!(saved(&shared)[0].1, vec![(ip("198.51.100.11"), 0)]);
        // And an operator's edit through the control socket is held the same way.
        let edit = rvs_api::Request::EditDest {
            service: rvs_api::ServiceAddr {
                protocol: rvs_api::Protocol::Tcp,
                addr: ip("203.0.113.10"),
                port: 80,
            },
            dest: rvs_api::DestConfig {
                addr: ip("198.51.100.11"),
                port: 80,
                fwd: rvs_api::FwdMethod::Route,
                weight: 9,
                u_threshold: 0,
                l_threshold: 0,
            },
        };
        assert_eq!(control::handle(&shared, edit), Ok(rvs_api::Reply::Done));
        assert_eq!(saved(&shared)[0].1, vec![(ip("198.51.100.11"), 0)]);
        // Removing the check gives the dest back its latest weight.
        std::fs::write(a.config.as_ref().unwrap(), "").unwrap();
        try_reload(&a, &shared, &mut running).unwrap();
        assert_eq!(saved(&shared)[0].1, vec![(ip("198.51.100.11"), 9)]);
    }
}
