//! Dataplane benchmarks (issue 3, "Performance"): established-flow forwarding for DR, NAT (both
//! directions) and TUN, and the new-connection (SYN) path, with 1 k, 100 k, 1 M and 4 M
//! connections in the table; packets drawn uniformly at random from those flows; bytes of memory
//! per connection (printed during setup).
//!
//! Run with
//! `cargo bench -p rvs-dataplane --bench dataplane -- --warm-up-time 1 --measurement-time 3`.
//!
//! Environment (optional):
//! - `RVS_BENCH_SIZES=1k,1M` — only these table sizes (setup of a size is skipped entirely, which
//!   criterion's name filter cannot do);
//! - `RVS_BENCH_METHODS=dr,nat` — only these forwarding methods (`dr`, `nat`, `tun`);
//! - `RVS_BENCH_MODES=one` or `=burst` — only `process` one frame at a time, or only
//!   `process_burst` (the `*_burst` benchmarks);
//! - `RVS_BENCH_ICMP=0` — skip the ICMP benchmarks (`icmp/*`: errors forwarded by NAT and DR,
//!   packet-too-big generated); `RVS_BENCH_ICMP=only` — run only those;
//! - `RVS_BENCH_CLOCK=cpu` — time with this thread's CPU time instead of wall time (a shared,
//!   loaded machine then steals less of the measurement; its cache and memory traffic still
//!   does).
//!
//! - `RVS_BENCH_BATCH=N` — frames per `process_burst` call (default [`BATCH`], what rvsd takes
//!   from a ring at a time); `N,M,...` makes the probe alternate between those batches run by
//!   run, in one process;
//! - `RVS_BENCH_PROBE=METHOD:WHAT:MODE:SIZE:COUNT` — no criterion: one timed run of `COUNT`
//!   packets (for callgrind, or quick timing), and with `RVS_BENCH_REPEAT=K` K runs over the one
//!   populated table, then their minimum and median.
//!
//! The connection table asks for transparent huge pages for its large arrays itself
//! (`rvs_core::conn`'s `huge`); the populate line prints how much of the process's memory is in
//! huge pages. `GLIBC_TUNABLES=glibc.malloc.hugetlb=1` extends that to the bench's own buffers.
//!
//! # Method
//!
//! - One dataplane per (method, size): one TCP service `203.0.113.10:80`, `wlc`, three dests of
//!   the method; `conn_tab_max` = N (so the memory figure is the table at exactly N);
//!   `timeout_tcp` = 31 days so the SYN benchmark's clock can advance without expiring the N
//!   established flows (the per-packet work is the same as with 900 s).
//! - Populated through `Dataplane::process` itself: a SYN, then an ACK, from N distinct clients
//!   (hosts .32–.254 of 192.0.2.0/24, 198.51.100.0/24 and 203.0.113.0/24, ports from 1024), so
//!   every connection is ESTABLISHED.
//! - `DRAWS` ACK frames (54 bytes) drawn uniformly at random (with replacement) from the N flows
//!   are pre-built into one flat buffer, one frame per 64-byte line, read sequentially. The
//!   measured loop resets one `Frame` from the next pre-built frame (`Frame::set`) and calls
//!   `process`; `copy_only` measures the reset alone so forwarding can be read net of it. The
//!   `*_burst` variants reset [`BATCH`] frames (`RVS_BENCH_BATCH`), then hand them to
//!   `process_burst` together.
//!   Before a burst is processed, the driver prefetches the first line of each frame of the next
//!   burst (the next frame, one at a time), as a poll-mode receive loop does with the buffers
//!   it hands over next; without it the reset of a frame from the 64 MiB draw buffer stalled on
//!   DRAM (a quarter of the 1 k figure under `perf`). The prefetch is inside the timing.
//! - SYN path: SYNs from clients not in the table (pre-built, shuffled), timed in batches of K
//!   (N/10, clamped to 100..65 536) into the table holding N (N..N+K while the batch runs);
//!   after each batch, outside the timing, the clock moves 61 s on and `Director::expire`
//!   removes the batch (SYN_RECV, 60 s), so every batch meets the table at N. The cost of that
//!   expiry is printed per connection: it is the other half of a connection's lifetime cost.
//! - `conn_lookup_in` is the table lookup alone (`ConnTable::lookup_in`, one key at a time) over
//!   the same draws, to read the table's share.
//! - ICMP: 65 536 frag-needed errors about the VIP's segments to clients drawn uniformly over
//!   the N flows (590-byte frames, quoting 548 bytes), forwarded by NAT and by DR, on the same
//!   dataplanes (before the SYN benchmarks change their clock); rate limits lifted. Each frame
//!   is reset either from its own 590 bytes in a 38 MB set no cache holds (`error_forwarded`,
//!   `copy_only`: the frame comes in from DRAM) or, `*_warm`, from its 82 bytes of headers in
//!   a compact array plus the quoted payload, identical in all, from one warm buffer — as a
//!   frame the kernel has just copied into an AF_PACKET ring is warm.
//!   In both, every frame of a call has just been copied into its buffer when `process_burst`
//!   starts, so the dataplane meets the same frames in the same caches; only the reset's
//!   source differs. `error_forwarded_dataplane_burst` times the DRAM variant inside the
//!   `process_burst` calls only (the dataplane's own time per error), and the probe prints that
//!   share for every burst loop (`in process_burst`).
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, Throughput};
use etherparse::PacketBuilder;
use rvs_core::SEC;
use rvs_core::conn::prefetch_line;
use rvs_core::director::{Director, EXPIRE_BUDGET};
use rvs_core::rules::parse_rules;
use rvs_core::settings::Settings;
use rvs_dataplane::dataplane::{BATCH, BURST};
use rvs_dataplane::{Dataplane, DataplaneConfig, Frame, Tx, Verdict};
use rvs_wire::parse::{FlowKey, parse_ethernet};

// ---- the clock ---------------------------------------------------------------------------------

/// The clock of every measured loop: wall time, or with `RVS_BENCH_CLOCK=cpu` the CPU time of
/// this thread, which leaves out the time other processes take from a shared machine (not their
/// use of the caches and memory bus).
fn clock() -> Duration {
    static CPU: OnceLock<bool> = OnceLock::new();
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    if *CPU.get_or_init(|| std::env::var("RVS_BENCH_CLOCK").is_ok_and(|v| v == "cpu")) {
        let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID).unwrap();
        Duration::new(t.tv_sec() as u64, t.tv_nsec() as u32)
    } else {
        EPOCH.get_or_init(Instant::now).elapsed()
    }
}

/// Criterion's `iter` on [`clock`]: time `iters` calls of `f`.
fn timed(iters: u64, mut f: impl FnMut()) -> Duration {
    let start = clock();
    for _ in 0..iters {
        f();
    }
    clock() - start
}

// ---- fixtures -----------------------------------------------------------------------------

/// The dataplane's clock at population time.
const T0: u64 = 1_700_000_000 * SEC;
/// The clock of the established-flow benchmarks.
const NOW: u64 = T0 + SEC;
/// Pre-drawn established frames per size (a power of two: wrapping is a mask).
const DRAWS: usize = 1 << 20;
/// Pre-built SYN frames (new clients), reused cyclically: a batch is expired before its keys
/// come round again.
const SYN_POOL: usize = 1 << 18;
/// Bytes per pre-built frame slot (one cache line).
const STRIDE: usize = 64;

const DIR_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const GW_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xfe];
const VIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const VPORT: u16 = 80;
const DIR4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
const NETS: [[u8; 3]; 3] = [[192, 0, 2], [198, 51, 100], [203, 0, 113]];
/// Client host parts: .32–.254 of each documentation /24 (clear of the VIP, the director and
/// the dests).
const HOST_LO: usize = 32;
const HOSTS: usize = 255 - HOST_LO;
const CLIENT_IPS: usize = 3 * HOSTS;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Method {
    Dr,
    Nat,
    Tun,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::Dr => "dr",
            Method::Nat => "nat",
            Method::Tun => "tun",
        }
    }
    fn flag(self) -> &'static str {
        match self {
            Method::Dr => "-g",
            Method::Nat => "-m",
            Method::Tun => "-i",
        }
    }
}

/// splitmix64: deterministic draws and shuffles (outside every measured loop).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Client `i` of the population (`base` 1024) or of the SYN pool (`base` 40 000).
fn client(i: usize, base: u16) -> SocketAddr {
    let ip = i % CLIENT_IPS;
    let [a, b, c] = NETS[ip / HOSTS];
    let host = (HOST_LO + ip % HOSTS) as u8;
    let port = base + u16::try_from(i / CLIENT_IPS).unwrap();
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(a, b, c, host)), port)
}

/// An Ethernet/IPv4/TCP frame as the gateway hands it to the director (DF set, TTL 64).
fn tcp_frame(src: SocketAddr, dst: SocketAddr, syn: bool, out: &mut Vec<u8>) {
    let (IpAddr::V4(s), IpAddr::V4(d)) = (src.ip(), dst.ip()) else {
        panic!("IPv4 only")
    };
    let b = PacketBuilder::ethernet2(GW_MAC, DIR_MAC)
        .ipv4(s.octets(), d.octets(), 64)
        .tcp(src.port(), dst.port(), 1000, 65535);
    let b = if syn { b.syn() } else { b.ack(2000) };
    out.clear();
    b.write(out, &[]).unwrap();
}

/// The flow keys of the first `n` pre-built frames (for the table-only lookups).
fn draw_keys(frames: &Frames, n: usize) -> Vec<FlowKey> {
    (0..n)
        .map(|i| {
            *parse_ethernet(frames.get(i))
                .unwrap()
                .ip()
                .unwrap()
                .flow_key()
                .as_ref()
                .unwrap()
        })
        .collect()
}

/// Frames laid out one per 64-byte slot.
struct Frames {
    buf: Vec<u8>,
    len: Vec<u8>,
}

impl Frames {
    fn with_capacity(n: usize) -> Frames {
        Frames {
            buf: Vec::with_capacity(n * STRIDE),
            len: Vec::with_capacity(n),
        }
    }
    fn push(&mut self, f: &[u8]) {
        assert!(f.len() <= STRIDE);
        let at = self.buf.len();
        self.buf.extend_from_slice(f);
        self.buf.resize(at + STRIDE, 0);
        self.len.push(f.len() as u8);
    }
    #[inline(always)]
    fn get(&self, i: usize) -> &[u8] {
        let at = i * STRIDE;
        &self.buf[at..at + usize::from(self.len[i])]
    }
    fn count(&self) -> usize {
        self.len.len()
    }
}

fn rules(method: Method) -> String {
    let mut r = format!("-A -t {VIP}:{VPORT} -s wlc\n");
    for h in 11..=13 {
        r += &format!(
            "-a -t {VIP}:{VPORT} -r 198.51.100.{h}:8080 {} -w 1\n",
            method.flag()
        );
    }
    r
}

fn settings(max: usize) -> Settings {
    let mut s = Settings::default();
    s.set("conn_tab_max", &max.to_string()).unwrap();
    s.set("timeout_tcp", &(31 * 86_400).to_string()).unwrap();
    s
}

/// A dataplane of `method` with `n` ESTABLISHED connections, built through `process`.
fn populated(method: Method, n: usize) -> Dataplane {
    let mut d = Director::new(settings(n));
    for r in parse_rules(&rules(method)).unwrap() {
        d.apply(&r, 0).unwrap();
    }
    let cfg = DataplaneConfig {
        addrs: vec![DIR4.into()],
        mtu: 1500,
        ..DataplaneConfig::default()
    };
    let mut dp = Dataplane::new(d, cfg);
    let vip = SocketAddr::new(VIP.into(), VPORT);
    let mut f = Frame::with_capacity(2048);
    let mut extra = Vec::new();
    let mut bytes = Vec::with_capacity(128);
    let start = Instant::now();
    for i in 0..n {
        for syn in [true, false] {
            tcp_frame(client(i, 1024), vip, syn, &mut bytes);
            f.set(&bytes);
            extra.clear();
            let v = dp.process(&mut f, T0, &mut extra);
            assert!(matches!(v, Verdict::Transmit { .. }), "populate {i}: {v:?}");
        }
    }
    let took = start.elapsed();
    let t = dp.director().conns();
    assert_eq!(t.len(), n);
    eprintln!(
        "{:>3} {n:>8} conns: {:6.1} bytes/conn ({} MiB), populated at {:.0} ns per packet (SYN+ACK, incl. frame build){}",
        method.name(),
        t.memory_bytes() as f64 / n as f64,
        t.memory_bytes() >> 20,
        took.as_nanos() as f64 / (2 * n) as f64,
        anon_huge(),
    );
    dp
}

/// The process's huge-page-backed anonymous memory, when any (the `RVS_BENCH_THP` experiment).
fn anon_huge() -> String {
    std::fs::read_to_string("/proc/self/smaps_rollup")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("AnonHugePages:"))
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_string())
        })
        .filter(|kb| kb != "0")
        .map(|kb| {
            format!(
                "; {} MiB in huge pages",
                kb.parse::<u64>().unwrap_or(0) >> 10
            )
        })
        .unwrap_or_default()
}

/// One frame slot per draw: ACKs from flows drawn uniformly at random from the `n` flows.
fn established_draws(n: usize, rng: &mut Rng) -> (Frames, Vec<usize>) {
    let vip = SocketAddr::new(VIP.into(), VPORT);
    let mut frames = Frames::with_capacity(DRAWS);
    let mut flows = Vec::with_capacity(DRAWS);
    let mut bytes = Vec::with_capacity(128);
    for _ in 0..DRAWS {
        let i = rng.below(n);
        tcp_frame(client(i, 1024), vip, false, &mut bytes);
        frames.push(&bytes);
        flows.push(i);
    }
    (frames, flows)
}

/// The NAT replies (RIP:rport → client) of the drawn flows.
fn reply_draws(dp: &Dataplane, flows: &[usize]) -> Frames {
    let vip = SocketAddr::new(VIP.into(), VPORT);
    let t = dp.director().conns();
    let mut frames = Frames::with_capacity(flows.len());
    let mut bytes = Vec::with_capacity(128);
    for &i in flows {
        let c = client(i, 1024);
        let key = FlowKey {
            protocol: 6,
            src: c.ip(),
            sport: c.port(),
            dst: vip.ip(),
            dport: vip.port(),
        };
        let conn = t.get(t.lookup_in(&key).unwrap()).unwrap();
        tcp_frame(
            SocketAddr::new(conn.daddr, conn.dport),
            c,
            false,
            &mut bytes,
        );
        frames.push(&bytes);
    }
    frames
}

/// SYNs from `SYN_POOL` clients that are not in any table, in shuffled order.
fn syn_pool(rng: &mut Rng) -> Frames {
    let vip = SocketAddr::new(VIP.into(), VPORT);
    let mut order: Vec<usize> = (0..SYN_POOL).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i + 1));
    }
    let mut frames = Frames::with_capacity(SYN_POOL);
    let mut bytes = Vec::with_capacity(128);
    for i in order {
        tcp_frame(client(i, 40_000), vip, true, &mut bytes);
        frames.push(&bytes);
    }
    frames
}

/// Check (outside timing) that every drawn frame is forwarded.
fn check_transmits(dp: &mut Dataplane, frames: &Frames, what: &str) {
    let mut f = Frame::with_capacity(2048);
    let mut extra = Vec::new();
    for i in (0..frames.count()).step_by(4099) {
        f.set(frames.get(i));
        extra.clear();
        let v = dp.process(&mut f, NOW, &mut extra);
        assert!(matches!(v, Verdict::Transmit { .. }), "{what} #{i}: {v:?}");
        assert!(extra.is_empty());
    }
}

// ---- measured loops -------------------------------------------------------------------------

/// How frames go through the dataplane.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// `process`, one frame at a time.
    One,
    /// `process_burst`, [`BATCH`] frames at a time (`RVS_BENCH_BATCH`).
    Burst,
}

impl Mode {
    /// The benchmark name: `what` or `what_burst`.
    fn name(self, what: &str) -> String {
        match self {
            Mode::One => what.to_string(),
            Mode::Burst => format!("{what}_burst"),
        }
    }
}

/// Runs pre-built frames through a dataplane: each frame is reset from its bytes
/// (`Frame::set`), then processed alone or in calls of `batch` frames.
struct Driver {
    one: Frame,
    /// Frames per `process_burst` call (at most `burst.len()`).
    batch: usize,
    burst: Vec<Frame>,
    extra: Vec<Tx>,
    verdicts: Vec<Verdict>,
    /// Of the last `run`'s time, what was spent inside `process_burst` calls (burst mode
    /// only): the dataplane's own time, without the frames' reset. Every frame has just been
    /// copied into its buffer when the call starts, whatever the copy's source was.
    inside: Duration,
}

impl Driver {
    fn new() -> Driver {
        Driver {
            one: Frame::with_capacity(2048),
            batch: batch(),
            burst: (0..max_batch())
                .map(|_| Frame::with_capacity(2048))
                .collect(),
            extra: Vec::new(),
            verdicts: Vec::with_capacity(max_batch()),
            inside: Duration::ZERO,
        }
    }

    /// Time `count` frames `get(*pos)`, `get(*pos + 1)`, ... (wrapping at `len`, a power of
    /// two) received at `now`.
    #[allow(clippy::too_many_arguments)]
    fn run<'a>(
        &mut self,
        dp: &mut Dataplane,
        get: impl Fn(usize) -> &'a [u8],
        len: usize,
        pos: &mut usize,
        count: u64,
        now: u64,
        mode: Mode,
    ) -> Duration {
        self.run_fill(
            dp,
            |i, f| f.set(get(i)),
            |i| prefetch_line(get(i)),
            len,
            pos,
            count,
            now,
            mode,
        )
    }

    /// [`Driver::run`] with each frame reset by `fill(i, frame)`, calling `ahead(i)` for the
    /// frames of the next burst (the next frame, one at a time) before the current one is
    /// processed.
    #[allow(clippy::too_many_arguments)]
    fn run_fill(
        &mut self,
        dp: &mut Dataplane,
        mut fill: impl FnMut(usize, &mut Frame),
        ahead: impl Fn(usize),
        len: usize,
        pos: &mut usize,
        count: u64,
        now: u64,
        mode: Mode,
    ) -> Duration {
        let mask = len - 1;
        let mut i = *pos;
        self.inside = Duration::ZERO;
        let start = clock();
        match mode {
            Mode::One => {
                for _ in 0..count {
                    ahead((i + 1) & mask);
                    fill(i, &mut self.one);
                    black_box(dp.process(&mut self.one, now, &mut self.extra));
                    i = (i + 1) & mask;
                }
            }
            Mode::Burst => {
                let mut left = count as usize;
                while left > 0 {
                    let b = left.min(self.batch).min(self.burst.len());
                    for f in &mut self.burst[..b] {
                        fill(i, f);
                        i = (i + 1) & mask;
                    }
                    for k in 0..b {
                        ahead((i + k) & mask);
                    }
                    self.verdicts.clear();
                    let call = clock();
                    dp.process_burst(
                        &mut self.burst[..b],
                        now,
                        &mut self.extra,
                        &mut self.verdicts,
                    );
                    black_box(&self.verdicts);
                    self.inside += clock() - call;
                    left -= b;
                }
            }
        }
        let t = clock() - start;
        self.extra.clear();
        *pos = i;
        t
    }
}

/// SYN path: `iters` SYNs in batches of `k` into a table of `n`; each batch expired afterwards
/// (untimed, but its cost is accumulated into `expiry`).
struct SynState {
    now: u64,
    pos: usize,
    expiry: Duration,
    expired: u64,
    /// When the established flows' timers were last refreshed.
    refreshed: u64,
}

/// Ready a dataplane holding `n` connections for the SYN path: the batch size K (N/10,
/// clamped to 100..65 536), the table's maximum raised to hold a batch on top, and the state.
fn syn_setup(dp: &mut Dataplane, n: usize) -> (usize, SynState) {
    let k = (n / 10).clamp(100, 65_536);
    let mut s = dp.settings().clone();
    s.conn_tab_max = n + k;
    dp.director_mut().set_settings(s);
    let st = SynState {
        now: NOW,
        pos: 0,
        expiry: Duration::ZERO,
        expired: 0,
        refreshed: T0,
    };
    (k, st)
}

#[allow(clippy::too_many_arguments)]
fn syn_loop(
    dp: &mut Dataplane,
    drv: &mut Driver,
    syns: &Frames,
    n: usize,
    k: usize,
    st: &mut SynState,
    iters: u64,
    mode: Mode,
) -> Duration {
    let mut total = Duration::ZERO;
    let mut inside = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let batch = left.min(k as u64);
        total += drv.run(
            dp,
            |i| syns.get(i),
            syns.count(),
            &mut st.pos,
            batch,
            st.now,
            mode,
        );
        inside += drv.inside;
        // Expire the batch (SYN_RECV lasts 60 s) so the next one meets the table at n again.
        st.now += 61 * SEC;
        let start = clock();
        while dp.director_mut().expire(st.now) == EXPIRE_BUDGET {}
        st.expiry += clock() - start;
        st.expired += batch;
        assert_eq!(
            dp.director().conns().len(),
            n,
            "SYN batch not (only) expired"
        );
        left -= batch;
        if st.now - st.refreshed > 25 * 86_400 * SEC {
            // Small tables run through many batches: give the n established flows a fresh
            // 31-day timer (an ACK each, untimed) before the clock catches up with them.
            let vip = SocketAddr::new(VIP.into(), VPORT);
            let mut bytes = Vec::with_capacity(128);
            let mut f = Frame::with_capacity(2048);
            let mut extra = Vec::new();
            for c in 0..n {
                tcp_frame(client(c, 1024), vip, false, &mut bytes);
                f.set(&bytes);
                extra.clear();
                let v = dp.process(&mut f, st.now, &mut extra);
                assert!(matches!(v, Verdict::Transmit { .. }), "refresh {c}: {v:?}");
            }
            st.refreshed = st.now;
        }
    }
    // The dataplane's share of all the batches (see `Driver::inside`).
    drv.inside = inside;
    total
}

// ---- the benchmarks -----------------------------------------------------------------------

const SIZES: [(&str, usize); 4] = [
    ("1k", 1_000),
    ("100k", 100_000),
    ("1M", 1_000_000),
    ("4M", 4_000_000),
];

/// Frames handed to one `process_burst` call: `RVS_BENCH_BATCH` (its first entry), else
/// [`BATCH`], what rvsd takes from a ring at a time.
fn batch() -> usize {
    batches()[0]
}

/// The largest batch asked for (the driver's frames).
fn max_batch() -> usize {
    batches().iter().copied().max().unwrap_or(BATCH)
}

/// `RVS_BENCH_BATCH`'s entries (`N` or `N,M,...`; the probe alternates between several within
/// one process, so that they share one table and one host state), else [`BATCH`].
fn batches() -> &'static [usize] {
    static B: OnceLock<Vec<usize>> = OnceLock::new();
    B.get_or_init(|| {
        let v: Vec<usize> = std::env::var("RVS_BENCH_BATCH")
            .unwrap_or_default()
            .split(',')
            .filter_map(|b| b.trim().parse().ok())
            .filter(|&b| b > 0)
            .collect();
        if v.is_empty() { vec![BATCH] } else { v }
    })
}

fn sizes() -> Vec<(&'static str, usize)> {
    match std::env::var("RVS_BENCH_SIZES") {
        Ok(s) => SIZES
            .iter()
            .copied()
            .filter(|(name, _)| s.split(',').any(|x| x.trim() == *name))
            .collect(),
        Err(_) => SIZES.to_vec(),
    }
}

fn methods() -> Vec<Method> {
    let all = [Method::Dr, Method::Nat, Method::Tun];
    match std::env::var("RVS_BENCH_METHODS") {
        Ok(s) => all
            .into_iter()
            .filter(|m| s.split(',').any(|x| x.trim() == m.name()))
            .collect(),
        Err(_) => all.to_vec(),
    }
}

fn modes() -> Vec<Mode> {
    match std::env::var("RVS_BENCH_MODES").as_deref() {
        Ok("one") => vec![Mode::One],
        Ok("burst") => vec![Mode::Burst],
        _ => vec![Mode::One, Mode::Burst],
    }
}

/// Which benchmarks run: `RVS_BENCH_ICMP` = `0` (none of the ICMP ones), `only` (only those).
fn icmp_choice() -> (bool, bool) {
    match std::env::var("RVS_BENCH_ICMP").as_deref() {
        Ok("0") => (true, false),
        Ok("only") => (false, true),
        _ => (true, true),
    }
}

fn bench_size(c: &mut Criterion, name: &str, n: usize, rng: &mut Rng, syns: &Frames) {
    let (frames, flows) = established_draws(n, rng);
    let big = n >= 1_000_000;
    let (forwarding, icmp) = icmp_choice();
    let mut drv = Driver::new();
    for method in methods() {
        if !forwarding && method == Method::Tun {
            continue;
        }
        let mut dp = populated(method, n);
        check_transmits(&mut dp, &frames, "established");
        let mut g = c.benchmark_group(format!("dataplane/{}", method.name()));
        g.throughput(Throughput::Elements(1));
        if big {
            g.sample_size(20);
        }
        if forwarding {
            for mode in modes() {
                let mut pos = 0;
                g.bench_function(BenchmarkId::new(mode.name("established"), name), |b| {
                    b.iter_custom(|iters| {
                        drv.run(
                            &mut dp,
                            |i| frames.get(i),
                            DRAWS,
                            &mut pos,
                            iters,
                            NOW,
                            mode,
                        )
                    })
                });
            }
            assert_eq!(
                dp.director().conns().len(),
                n,
                "established packets changed the table"
            );
            match method {
                Method::Dr => {
                    // The table lookup alone, same draws (the table's share of the above).
                    let keys = draw_keys(&frames, frames.count());
                    let mut j = 0;
                    g.bench_function(BenchmarkId::new("conn_lookup_in", name), |b| {
                        let t = dp.director().conns();
                        b.iter_custom(|iters| {
                            timed(iters, || {
                                let k = &keys[j & (DRAWS - 1)];
                                j += 1;
                                black_box(t.lookup_in(black_box(k)));
                            })
                        })
                    });
                }
                Method::Nat => {
                    let replies = reply_draws(&dp, &flows);
                    check_transmits(&mut dp, &replies, "reply");
                    for mode in modes() {
                        let mut pos = 0;
                        g.bench_function(BenchmarkId::new(mode.name("reply"), name), |b| {
                            b.iter_custom(|iters| {
                                drv.run(
                                    &mut dp,
                                    |i| replies.get(i),
                                    DRAWS,
                                    &mut pos,
                                    iters,
                                    NOW,
                                    mode,
                                )
                            })
                        });
                    }
                }
                Method::Tun => {}
            }
        }
        g.finish();
        if icmp && method != Method::Tun {
            bench_icmp(c, &mut dp, &mut drv, method, name, n, rng);
        }
        if forwarding && method != Method::Tun {
            // SYN path into the table at n (max raised to hold a batch on top).
            let mut g = c.benchmark_group(format!("dataplane/{}", method.name()));
            g.throughput(Throughput::Elements(1));
            if big {
                g.sample_size(20);
            }
            let (k, mut st) = syn_setup(&mut dp, n);
            for mode in modes() {
                g.bench_function(BenchmarkId::new(mode.name("syn"), name), |b| {
                    b.iter_custom(|iters| {
                        syn_loop(&mut dp, &mut drv, syns, n, k, &mut st, iters, mode)
                    })
                });
            }
            eprintln!(
                "{:>3} {n:>8} conns: SYN batches of {k}; expiring them afterwards cost {:.0} ns per connection ({} expired)",
                method.name(),
                st.expiry.as_nanos() as f64 / st.expired.max(1) as f64,
                st.expired,
            );
            g.finish();
        }
    }
}

// ---- ICMP (issue 4, "Performance") --------------------------------------------------------

/// ICMP frames pre-built per size: fewer than `DRAWS` (each is up to 590 bytes).
const ICMP_DRAWS: usize = 1 << 16;
/// Bytes in which the ICMP errors differ: Ethernet, IPv4, ICMP, quoted IPv4 and TCP headers.
const ICMP_HEAD: usize = 14 + 20 + 8 + 20 + 20;
/// Bytes per error head in the compact array (a power of two).
const ICMP_HEAD_STRIDE: usize = 128;

/// A frag-needed (MTU 1400) from a router on the client's path to the VIP, about the VIP's
/// segment to client `c` — quoting 548 bytes of it, as Linux routers do (RFC 1812 §4.3.2.3).
fn frag_needed_frame(c: SocketAddr, out: &mut Vec<u8>) {
    let IpAddr::V4(cip) = c.ip() else {
        panic!("IPv4 only")
    };
    let mut seg = Vec::new();
    PacketBuilder::ipv4(VIP.octets(), cip.octets(), 63)
        .tcp(VPORT, c.port(), 2000, 65535)
        .ack(1000)
        .write(&mut seg, &[0x5a; 1400])
        .unwrap();
    seg.truncate(548);
    let t = etherparse::Icmpv4Type::DestinationUnreachable(
        etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1400 },
    );
    out.clear();
    PacketBuilder::ethernet2(GW_MAC, DIR_MAC)
        .ipv4([192, 0, 2, 254], VIP.octets(), 60)
        .icmpv4(t)
        .write(out, &seg)
        .unwrap();
}

/// A 1600-byte DF segment of client `c` (too big for the 1500-byte interface).
fn big_df_frame(c: SocketAddr, out: &mut Vec<u8>) {
    let IpAddr::V4(cip) = c.ip() else {
        panic!("IPv4 only")
    };
    out.clear();
    PacketBuilder::ethernet2(GW_MAC, DIR_MAC)
        .ipv4(cip.octets(), VIP.octets(), 64)
        .tcp(c.port(), VPORT, 1000, 65535)
        .ack(2000)
        .write(out, &[0x5a; 1546])
        .unwrap();
}

/// Lift the ICMP rate limits for a measurement (the limiter's cost is still paid).
fn lift_icmp_limits(dp: &mut Dataplane) {
    let mut s = dp.settings().clone();
    for (k, v) in [
        ("icmp_forward_per_sec", "0"),
        ("icmp_msgs_per_sec", "1000000"),
        ("icmp_msgs_burst", "1000000"),
        ("icmp_ratelimit", "0"),
    ] {
        s.set(k, v).unwrap();
    }
    dp.director_mut().set_settings(s);
}

/// ICMP errors forwarded (NAT and DR) over the N connections of `dp`, errors drawn uniformly
/// over the flows; and (DR) the packet-too-big generation path. Rate limits are lifted for the
/// measurement (`icmp_forward_per_sec=0`, generation buckets at 10⁶/s): the limiter's own cost
/// is still paid on every packet, only its verdict is not "suppressed".
fn bench_icmp(
    c: &mut Criterion,
    dp: &mut Dataplane,
    drv: &mut Driver,
    method: Method,
    name: &str,
    n: usize,
    rng: &mut Rng,
) {
    let draws: Vec<usize> = (0..ICMP_DRAWS).map(|_| rng.below(n)).collect();
    let errors = frames_of(&draws, frag_needed_frame);
    lift_icmp_limits(dp);
    let mut g = c.benchmark_group(format!("icmp/{}", method.name()));
    g.throughput(Throughput::Elements(1));
    if n >= 1_000_000 {
        g.sample_size(20);
    }
    {
        let mut f = Frame::with_capacity(2048);
        let mut extra = Vec::new();
        for e in errors.iter().step_by(997) {
            f.set(e);
            let v = dp.process(&mut f, NOW, &mut extra);
            assert!(matches!(v, Verdict::Transmit { .. }), "icmp error: {v:?}");
        }
    }
    if method == Method::Dr {
        // The reset of the frame from its pre-built bytes alone (590 bytes from a 38 MB set
        // that no cache holds): what every ICMP iteration pays besides the dataplane.
        bench_reset(
            &mut g,
            BenchmarkId::new("copy_only", name),
            |i, f| f.set(&errors[i]),
            ICMP_DRAWS,
        );
    }
    for mode in modes() {
        let mut pos = 0;
        g.bench_function(BenchmarkId::new(mode.name("error_forwarded"), name), |b| {
            b.iter_custom(|iters| {
                drv.run(dp, |i| &errors[i], ICMP_DRAWS, &mut pos, iters, NOW, mode)
            })
        });
    }
    if modes().contains(&Mode::Burst) {
        // The same run, timed inside the `process_burst` calls only (`Driver::inside`): the
        // dataplane's own time per error, without the reset of each frame from DRAM.
        let mut pos = 0;
        let id = BenchmarkId::new("error_forwarded_dataplane_burst", name);
        g.bench_function(id, |b| {
            b.iter_custom(|iters| {
                let mode = Mode::Burst;
                drv.run(dp, |i| &errors[i], ICMP_DRAWS, &mut pos, iters, NOW, mode);
                drv.inside
            })
        });
    }
    // The same errors, their bytes warm as in a receive ring: the errors differ only in their
    // first `ICMP_HEAD` bytes (headers and the quoted headers: the flow), so those come from a
    // compact 8 MB array and the 508 bytes of quoted payload, identical in all, from one warm
    // buffer. An AF_PACKET ring is like that: the kernel has just copied the frame into it.
    let mut warm = WarmErrors::new(&errors);
    let mut warm = |i: usize, f: &mut Frame| warm.fill(i, f);
    if method == Method::Dr {
        bench_reset(
            &mut g,
            BenchmarkId::new("copy_only_warm", name),
            &mut warm,
            ICMP_DRAWS,
        );
    }
    for mode in modes() {
        let mut pos = 0;
        let id = BenchmarkId::new(mode.name("error_forwarded_warm"), name);
        g.bench_function(id, |b| {
            b.iter_custom(|iters| {
                drv.run_fill(
                    dp,
                    &mut warm,
                    |_| {},
                    ICMP_DRAWS,
                    &mut pos,
                    iters,
                    NOW,
                    mode,
                )
            })
        });
    }
    if method == Method::Dr {
        let big = frames_of(&draws, big_df_frame);
        let mut f = Frame::with_capacity(2048);
        f.set(&big[0]);
        let v = dp.process(&mut f, NOW, &mut Vec::new());
        assert!(matches!(v, Verdict::Reply { .. }), "too big: {v:?}");
        let mut pos = 0;
        g.bench_function(BenchmarkId::new("packet_too_big_generated", name), |b| {
            b.iter_custom(|iters| {
                drv.run(dp, |i| &big[i], ICMP_DRAWS, &mut pos, iters, NOW, Mode::One)
            })
        });
    }
    g.finish();
}

/// ICMP errors reset with their bytes warm, as in a receive ring (see `bench_icmp`): each
/// error's first `ICMP_HEAD` bytes from a compact array, the quoted payload (the same in all)
/// from one warm buffer.
struct WarmErrors {
    heads: Vec<u8>,
    scratch: Vec<u8>,
}

impl WarmErrors {
    fn new(errors: &[Vec<u8>]) -> WarmErrors {
        let tail = &errors[0][ICMP_HEAD..];
        assert!(errors.iter().all(|e| &e[ICMP_HEAD..] == tail));
        let heads = errors
            .iter()
            .flat_map(|e| {
                let mut h = e[..ICMP_HEAD].to_vec();
                h.resize(ICMP_HEAD_STRIDE, 0);
                h
            })
            .collect();
        WarmErrors {
            heads,
            scratch: errors[0].clone(),
        }
    }

    /// Reset `f` to error `i`.
    fn fill(&mut self, i: usize, f: &mut Frame) {
        let at = i * ICMP_HEAD_STRIDE;
        self.scratch[..ICMP_HEAD].copy_from_slice(&self.heads[at..at + ICMP_HEAD]);
        f.set(&self.scratch);
    }
}

/// A benchmark of the frame reset alone: `fill(i, frame)` for i = 0, 1, … (wrapping at `len`,
/// a power of two), what every loop pays besides the dataplane.
fn bench_reset(
    g: &mut BenchmarkGroup<'_, WallTime>,
    id: BenchmarkId,
    mut fill: impl FnMut(usize, &mut Frame),
    len: usize,
) {
    let mut f = Frame::with_capacity(2048);
    let mut i = 0;
    g.bench_function(id, |b| {
        b.iter_custom(|iters| {
            timed(iters, || {
                fill(i, &mut f);
                i = (i + 1) & (len - 1);
                black_box(f.data().as_ptr());
            })
        })
    });
}

fn benches(c: &mut Criterion) {
    let mut rng = Rng(0x5eed);
    let syns = syn_pool(&mut rng);
    {
        // The reset of a frame from the pre-built buffer alone (what every loop above pays).
        let frames = established_draws(1000, &mut rng).0;
        let mut g = c.benchmark_group("dataplane/copy_only");
        g.throughput(Throughput::Elements(1));
        bench_reset(
            &mut g,
            BenchmarkId::from_parameter("frame_set_54B"),
            |i, f| f.set(frames.get(i)),
            DRAWS,
        );
        g.finish();
    }
    for (name, n) in sizes() {
        bench_size(c, name, n, &mut rng, &syns);
    }
}

/// One frame per flow index of `flows` (its client at port 1024), built by `make`.
fn frames_of(flows: &[usize], make: fn(SocketAddr, &mut Vec<u8>)) -> Vec<Vec<u8>> {
    let mut bytes = Vec::new();
    flows
        .iter()
        .map(|&i| {
            make(client(i, 1024), &mut bytes);
            bytes.clone()
        })
        .collect()
}

/// `RVS_BENCH_PROBE=METHOD:WHAT:MODE:SIZE:COUNT` (e.g. `dr:established:burst:1M:20000000`;
/// WHAT is `established`, `reply`, `icmp`, `icmp_warm`, `too_big`, `too_big_limited`, `syn` or
/// `lookup`):
/// no criterion, just COUNT frames of one benchmark after its setup, the time per frame printed
/// — a fixed amount of work to run under `perf stat` (instructions and cycles per packet).
fn probe(spec: &str) {
    let f: Vec<&str> = spec.split(':').collect();
    let [method, what, mode, size, count] = f[..] else {
        panic!("RVS_BENCH_PROBE=METHOD:WHAT:MODE:SIZE:COUNT")
    };
    let method = [Method::Dr, Method::Nat, Method::Tun]
        .into_iter()
        .find(|m| m.name() == method)
        .unwrap();
    let mode = if mode == "burst" {
        Mode::Burst
    } else {
        Mode::One
    };
    let n = SIZES.iter().find(|(s, _)| *s == size).unwrap().1;
    let count: u64 = count.parse().unwrap();
    let mut rng = Rng(0x5eed);
    let mut dp = populated(method, n);
    let (frames, flows) = established_draws(n, &mut rng);
    let mut drv = Driver::new();
    let mut pos = 0;
    // `RVS_BENCH_REPEAT=K`: K timed runs over the one populated table, each printed, then
    // their minimum and median (side-by-side comparisons on a noisy host).
    let repeat: usize = std::env::var("RVS_BENCH_REPEAT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let mut times_all = vec![Vec::with_capacity(repeat); batches().len()];
    // Each input is built on the first run and kept for the repeats (untimed either way).
    let (mut replies, mut errors, mut keys, mut syn, mut big) = (None, None, None, None, None);
    let mut warm_errors = None;
    let mut inside_all = vec![Vec::with_capacity(repeat); batches().len()];
    // The dataplane's own share is shown for the loops that go through `Driver` in bursts.
    let inside_shown = mode == Mode::Burst && what != "lookup";
    // Several batch sizes: alternated run by run.
    let runs = (0..repeat.max(1)).flat_map(|_| batches().iter().copied().enumerate());
    for (slot, b) in runs {
        drv.batch = b;
        let t = match what {
            "established" => drv.run(
                &mut dp,
                |i| frames.get(i),
                DRAWS,
                &mut pos,
                count,
                NOW,
                mode,
            ),
            "reply" => {
                let replies = replies.get_or_insert_with(|| reply_draws(&dp, &flows));
                drv.run(
                    &mut dp,
                    |i| replies.get(i),
                    DRAWS,
                    &mut pos,
                    count,
                    NOW,
                    mode,
                )
            }
            "icmp" => {
                // Frag-needed errors about the drawn flows (see `bench_icmp`), rate limits lifted.
                let errors = errors.get_or_insert_with(|| {
                    lift_icmp_limits(&mut dp);
                    frames_of(&flows[..ICMP_DRAWS], frag_needed_frame)
                });
                drv.run(
                    &mut dp,
                    |i| &errors[i],
                    ICMP_DRAWS,
                    &mut pos,
                    count,
                    NOW,
                    mode,
                )
            }
            "icmp_warm" => {
                // The same errors, reset from warm bytes (`WarmErrors`).
                let warm = warm_errors.get_or_insert_with(|| {
                    lift_icmp_limits(&mut dp);
                    WarmErrors::new(&frames_of(&flows[..ICMP_DRAWS], frag_needed_frame))
                });
                drv.run_fill(
                    &mut dp,
                    |i, f| warm.fill(i, f),
                    |_| {},
                    ICMP_DRAWS,
                    &mut pos,
                    count,
                    NOW,
                    mode,
                )
            }
            "too_big" => {
                // DF segments over the path MTU from the drawn flows (see `bench_icmp`): each
                // answered with a generated frag-needed, rate limits lifted.
                let big = big.get_or_insert_with(|| {
                    lift_icmp_limits(&mut dp);
                    frames_of(&flows[..ICMP_DRAWS], big_df_frame)
                });
                drv.run(&mut dp, |i| &big[i], ICMP_DRAWS, &mut pos, count, NOW, mode)
            }
            "too_big_limited" => {
                // The same segments with the default rate limits: after the first bursts (the
                // bench's clock stands still) every frag-needed is suppressed, the cost of a
                // flood of oversized DF segments.
                let big = big.get_or_insert_with(|| frames_of(&flows[..ICMP_DRAWS], big_df_frame));
                drv.run(&mut dp, |i| &big[i], ICMP_DRAWS, &mut pos, count, NOW, mode)
            }
            "lookup" => {
                // The table alone: keys of the same draws, looked up one by one or in groups of
                // BURST with the two prefetch stages.
                let keys = keys.get_or_insert_with(|| draw_keys(&frames, DRAWS));
                let t = dp.director().conns();
                let start = clock();
                let mut found = 0;
                let mut i = 0;
                for _ in 0..count / BURST as u64 {
                    let ks = &keys[i..i + BURST];
                    i = (i + BURST) & (DRAWS - 1);
                    if mode == Mode::One {
                        for k in ks {
                            found += usize::from(t.lookup_in(k).is_some());
                        }
                        continue;
                    }
                    let mut hs = [0u64; BURST];
                    for (h, k) in hs.iter_mut().zip(ks) {
                        *h = t.key_hash(k);
                        t.prefetch_in(*h);
                    }
                    for h in &hs {
                        t.prefetch_in_entries(*h);
                    }
                    for (h, k) in hs.iter().zip(ks) {
                        found += usize::from(t.lookup_in_hashed(k, *h).is_some());
                    }
                }
                assert_eq!(found as u64, count / BURST as u64 * BURST as u64);
                clock() - start
            }
            "syn" => {
                // The SYN path as the `syn` benchmarks run it (batches expired untimed); set
                // up once, its clock running on across repeats.
                let (syns, k, st) = syn.get_or_insert_with(|| {
                    let syns = syn_pool(&mut rng);
                    let (k, st) = syn_setup(&mut dp, n);
                    (syns, k, st)
                });
                syn_loop(&mut dp, &mut drv, syns, n, *k, st, count, mode)
            }
            _ => panic!(
                "WHAT: established, reply, icmp, icmp_warm, too_big, too_big_limited, syn or lookup"
            ),
        };
        let ns = t.as_nanos() as f64 / count as f64;
        // The dataplane's own share (burst mode, the loops that go through `Driver`).
        let inside = drv.inside.as_nanos() as f64 / count as f64;
        if inside_shown {
            eprintln!(
                "probe {spec} batch {b}: {ns:.1} ns per frame ({inside:.1} in process_burst)"
            );
        } else {
            eprintln!("probe {spec} batch {b}: {ns:.1} ns per frame");
        }
        times_all[slot].push(ns);
        inside_all[slot].push(inside);
    }
    for ((times, inside), b) in times_all.iter_mut().zip(&mut inside_all).zip(batches()) {
        if times.len() > 1 {
            times.sort_by(f64::total_cmp);
            inside.sort_by(f64::total_cmp);
            eprintln!(
                "probe {spec} batch {b}: min {:.1}, median {:.1} ns per frame over {} runs{}",
                times[0],
                times[times.len() / 2],
                times.len(),
                if inside_shown {
                    format!(
                        "; in process_burst min {:.1}, median {:.1}",
                        inside[0],
                        inside[inside.len() / 2]
                    )
                } else {
                    String::new()
                }
            );
        }
    }
}

fn main() {
    if let Ok(spec) = std::env::var("RVS_BENCH_PROBE") {
        probe(&spec);
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c);
    c.final_summary();
}
