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
use rvs_core::director::Director;
use rvs_core::rules::parse_rules;
use rvs_dataplane::{Dataplane, DataplaneConfig, Frame, Tx, Verdict};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tracing::{error, info, warn};

use crate::control::{self, Shared};
use crate::host::nft::{Claims, NftTable};
use crate::host::route::{self, Resolution, Resolver};
use crate::io::offload;
use crate::io::ring::{PacketSocket, RingOpts, wait_readable};
use crate::io::tap::Tap;
use crate::replay::{Config, load_config, parse_set};

/// Command line of the daemon (`rvsd --interface IF ...`).
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// An interface to attach to (repeat for several).
    #[arg(long = "interface", short = 'i', value_name = "IF", required = true)]
    pub(crate) interfaces: Vec<String>,
    /// Virtual services and dests in the ipvsadm-save format (`-A -t VIP:port -s rr`, ...).
    #[arg(long, value_name = "FILE")]
    pub(crate) rules: Option<PathBuf>,
    /// Director settings (TOML: `name = value` by the IPVS sysctl names, and
    /// `[service."tcp/VIP:port"]` sections).
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
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
    #[arg(long, default_value = "rvsd", value_name = "NAME")]
    pub(crate) nft_table: String,
}

/// Most frames a worker takes from one ring per burst.
const BURST: usize = 64;
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
    let Config { settings, policies } = load_config(args.config.as_deref(), &args.sets)?;
    let mut director = Director::new(settings);
    for (key, p) in policies {
        director.set_service_policy(key, p);
    }
    if let Some(path) = &args.rules {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("--rules {}", path.display()))?;
        let rules = parse_rules(&text).map_err(|e| anyhow!("--rules {}: {e}", path.display()))?;
        for (i, r) in rules.iter().enumerate() {
            director
                .apply(r, 0)
                .map_err(|e| anyhow!("--rules {}: rule {}: {e}", path.display(), i + 1))?;
        }
    }

    // The director's own addresses (tunnel sources, sources of its own errors) and the MTU:
    // those of the interfaces it is attached to.
    let mut addrs: Vec<IpAddr> = Vec::new();
    let mut mtu = u32::from(u16::MAX);
    for ifname in &args.interfaces {
        let info = route::interface_info(ifname)
            .with_context(|| format!("--interface {ifname}: no such interface"))?;
        mtu = mtu.min(info.mtu);
        addrs.extend(info.addrs.iter().copied().filter(|a| usable_source(*a)));
    }
    if addrs.is_empty() {
        warn!("no global address on the interfaces: tunnel mode and own errors will lack a source");
    }
    let cfg = DataplaneConfig {
        addrs: addrs.clone(),
        mtu: u16::try_from(mtu).unwrap_or(u16::MAX),
        ..Default::default()
    };
    let dp = Dataplane::new(director, cfg);
    let claims = Claims::from_director(dp.director());
    let shared = Arc::new(Shared::new(dp));

    // Signals first, so that a TERM during setup still ends in a clean teardown.
    let mut signals =
        Signals::new([SIGTERM, SIGINT, SIGHUP]).context("installing signal handlers")?;

    let tap = Tap::open(&args.tap).with_context(|| format!("creating TAP {}", args.tap))?;
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
    let result = serve(args, &ws, &mut signals, &mut nft);
    // Teardown happens whatever went wrong above.
    stop.store(true, Ordering::SeqCst);
    if let Err(e) = nft.remove() {
        error!("removing nftables table {}: {e}", args.nft_table);
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

/// Start the control socket and the workers, then run timers and wait for a signal.
fn serve(
    args: &RunArgs,
    ws: &Arc<WorkerShared>,
    signals: &mut Signals,
    nft: &mut NftTable,
) -> Result<()> {
    let shared = &ws.shared;
    let control = control::serve(&args.socket, Arc::clone(shared), Arc::clone(&ws.stop))
        .with_context(|| format!("control socket @{}", args.socket))?;
    let workers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let mut handles: Vec<JoinHandle<()>> = Vec::new();
    // One fanout group per interface, unique to this process.
    let base = (std::process::id() as u16).wrapping_mul(31);
    for w in 0..workers {
        let mut socks = Vec::new();
        for (i, ifname) in args.interfaces.iter().enumerate() {
            let opts = RingOpts {
                fanout_group: Some(base.wrapping_add(i as u16)),
                ..RingOpts::default()
            };
            socks.push(
                PacketSocket::open(ifname, &opts)
                    .with_context(|| format!("packet socket on {ifname}"))?,
            );
        }
        let resolver = Resolver::new().context("netlink")?;
        let ws = Arc::clone(ws);
        handles.push(
            std::thread::Builder::new()
                .name(format!("rvsd-worker-{w}"))
                .spawn(move || Worker::new(ws, socks, resolver).run())
                .context("starting a worker")?,
        );
    }
    info!(
        interfaces = ?args.interfaces,
        workers,
        socket = %format!("@{}", args.socket),
        tap = %args.tap,
        nft_table = %args.nft_table,
        "rvsd: running"
    );
    let mut generation = shared.rules_generation.load(Ordering::SeqCst);
    let mut outcome = Ok(());
    'main: loop {
        for sig in signals.pending() {
            match sig {
                SIGHUP => reload(args, shared),
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
            let claims = Claims::from_director(lock(&shared.dp).director());
            if let Err(e) = nft.update(&claims) {
                error!("updating nftables table: {e}");
            }
            *ws.claims.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(claims);
        }
        std::thread::sleep(TICK);
    }
    ws.stop.store(true, Ordering::SeqCst);
    for h in handles {
        if h.join().is_err() {
            outcome = Err(anyhow!("a worker panicked"));
        }
    }
    let _ = control.join();
    outcome
}

/// SIGHUP: re-read the config file's settings; the connection table stays.
fn reload(args: &RunArgs, shared: &Shared) {
    match load_config(args.config.as_deref(), &args.sets) {
        Ok(Config { settings, policies }) => {
            let mut dp = lock(&shared.dp);
            let d = dp.director_mut();
            d.set_settings(settings);
            for (key, p) in policies {
                d.set_service_policy(key, p);
            }
            info!("SIGHUP: settings reloaded");
        }
        Err(e) => error!("SIGHUP: configuration rejected, the running one stays: {e:#}"),
    }
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
    /// Frames of the current burst, after checksum completion and GSO splitting.
    frames: Vec<Frame>,
    /// How many of `frames` are in use.
    used: usize,
    /// Scratch for the dataplane's extra transmissions.
    extra: Vec<Tx>,
    /// Verdicts of the current burst (frame index, verdict), then the extra frames.
    out: Vec<(usize, Verdict)>,
    out_extra: Vec<Tx>,
    pending: VecDeque<Pending>,
    claims: Arc<Claims>,
}

impl Worker {
    fn new(ws: Arc<WorkerShared>, socks: Vec<PacketSocket>, resolver: Resolver) -> Worker {
        let claims = Arc::clone(&ws.claims.read().unwrap_or_else(|e| e.into_inner()));
        Worker {
            ws,
            socks,
            resolver,
            frames: Vec::new(),
            used: 0,
            extra: Vec::new(),
            out: Vec::new(),
            out_extra: Vec::new(),
            pending: VecDeque::new(),
            claims,
        }
    }

    fn run(mut self) {
        while !self.ws.stop.load(Ordering::Relaxed) {
            {
                let fds: Vec<_> = self.socks.iter().map(|s| s.rx_fd()).collect();
                let mut all = fds;
                all.push(self.resolver.event_fd());
                if let Err(e) = wait_readable(&all, Duration::from_millis(50)) {
                    if e.kind() != std::io::ErrorKind::Interrupted {
                        error!("poll: {e}");
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
            self.resolver.poll_events();
            self.claims = Arc::clone(&self.ws.claims.read().unwrap_or_else(|e| e.into_inner()));
            self.retry_pending();
            for i in 0..self.socks.len() {
                self.burst(i);
            }
        }
    }

    /// Read one burst from socket `i`, process it, transmit what it produced.
    fn burst(&mut self, i: usize) {
        self.used = 0;
        let counters = Arc::clone(&self.ws.counters);
        let claims = Arc::clone(&self.claims);
        let (frames, used) = (&mut self.frames, &mut self.used);
        let n = self.socks[i].recv_burst(BURST, |rx| {
            IoCounters::add(&counters.rx_frames, 1);
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
            match offload::finish(rx, &mut push) {
                Ok(offload::Finished::Segmented(_)) => IoCounters::add(&counters.rx_gso, 1),
                Ok(_) => {}
                Err(_) => IoCounters::add(&counters.rx_offload_errors, 1),
            }
        });
        if n == 0 || self.used == 0 {
            return;
        }
        self.out.clear();
        self.out_extra.clear();
        {
            let shared = &self.ws.shared;
            let mut dp = lock(&shared.dp);
            let now = shared.now();
            for k in 0..self.used {
                self.extra.clear();
                let v = dp.process(&mut self.frames[k], now, &mut self.extra);
                self.out.push((k, v));
                self.out_extra.append(&mut self.extra);
            }
        }
        for j in 0..self.out.len() {
            let (k, v) = self.out[j];
            match v {
                Verdict::Transmit { next_hop } | Verdict::Reply { next_hop } => {
                    let f = std::mem::take(&mut self.frames[k]);
                    self.transmit(f.data(), next_hop);
                    self.frames[k] = f;
                }
                Verdict::Local => {
                    let f = std::mem::take(&mut self.frames[k]);
                    self.to_host(f.data());
                    self.frames[k] = f;
                }
                Verdict::Held | Verdict::Drop(_) => {}
            }
        }
        let extra = std::mem::take(&mut self.out_extra);
        for tx in &extra {
            if tx.local {
                self.to_host(tx.frame.data());
            } else {
                self.transmit(tx.frame.data(), tx.next_hop);
            }
        }
        self.out_extra = extra;
        self.flush();
    }

    /// Hand a frame to the host stack through the TAP.
    fn to_host(&self, frame: &[u8]) {
        let mut buf = frame.to_vec();
        let mut tap = lock(&self.ws.tap);
        match tap.deliver(&mut buf) {
            Ok(()) => IoCounters::add(&self.ws.counters.tap_frames, 1),
            Err(e) => warn!("TAP write: {e}"),
        }
    }

    /// Resolve `next_hop` and send, or park the frame while its neighbour is resolved.
    fn transmit(&mut self, frame: &[u8], next_hop: IpAddr) {
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

    fn send(&mut self, frame: &[u8], ifindex: u32, dst_mac: [u8; 6]) {
        let Some(s) = self.socks.iter_mut().find(|s| s.ifindex() == ifindex) else {
            IoCounters::add(&self.ws.counters.no_egress, 1);
            return;
        };
        if frame.len() < 14 {
            return;
        }
        let mut buf = [0u8; 12];
        buf[..6].copy_from_slice(&dst_mac);
        buf[6..].copy_from_slice(&s.mac());
        let r = s.send_frame_with_macs(&buf, frame);
        match r {
            Ok(()) => IoCounters::add(&self.ws.counters.tx_frames, 1),
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
            let Some(p) = self.pending.pop_front() else {
                break;
            };
            match self.resolver.resolve(p.next_hop, now) {
                Resolution::Ready { ifindex, dst_mac } => self.send(&p.frame, ifindex, dst_mac),
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

/// Whether an address may be the source of what the director sends itself.
fn usable_source(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(v) => !v.is_loopback() && !v.is_link_local() && !v.is_unspecified(),
        IpAddr::V6(v) => !v.is_loopback() && !v.is_unicast_link_local() && !v.is_unspecified(),
    }
}
