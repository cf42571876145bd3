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
//! - `RVS_BENCH_MODEL=0` — skip the table model (`dataplane/model/*`);
//! - `RVS_BENCH_ICMP=0` — skip the ICMP benchmarks (`icmp/*`: errors forwarded by NAT and DR,
//!   packet-too-big generated); `RVS_BENCH_ICMP=only` — run only those;
//! - `RVS_BENCH_CLOCK=cpu` — time with this thread's CPU time instead of wall time (a shared,
//!   loaded machine then steals less of the measurement; its cache and memory traffic still
//!   does).
//!
//! (A huge-page allocator experiment measured for BENCHMARKS.md was left out of the committed
//! bench: it needed `unsafe`, which the project keeps to the I/O layer.)
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
//!   `process`; `copy_only` measures the reset alone so forwarding can be read net of it.
//! - SYN path: SYNs from clients not in the table (pre-built, shuffled), timed in batches of K
//!   (N/10, clamped to 100..65 536) into the table holding N (N..N+K while the batch runs);
//!   after each batch, outside the timing, the clock moves 61 s on and `Director::expire`
//!   removes the batch (SYN_RECV, 60 s), so every batch meets the table at N. The cost of that
//!   expiry is printed per connection: it is the other half of a connection's lifetime cost.
//! - `conn_lookup_in` is the table lookup alone (`ConnTable::lookup_in`) over the same draws, to
//!   read the table's share; `dr/established_burst16` is a prototype of a burst API built only on
//!   public calls (see `burst16`); `model/*` measures what explicit prefetching in a burst could
//!   give, on a model of the table built here (see `mod model`).
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

use criterion::{BenchmarkId, Criterion, Throughput};
use etherparse::PacketBuilder;
use rvs_core::SEC;
use rvs_core::director::{Director, EXPIRE_BUDGET};
use rvs_core::rules::parse_rules;
use rvs_core::settings::Settings;
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

/// `iters` packets: reset the frame from the next pre-built one, process.
fn forward_loop(dp: &mut Dataplane, frames: &Frames, pos: &mut usize, iters: u64) -> Duration {
    let mut f = Frame::with_capacity(2048);
    let mut extra: Vec<Tx> = Vec::new();
    let mask = frames.count() - 1;
    let mut i = *pos;
    let start = clock();
    for _ in 0..iters {
        f.set(frames.get(i));
        black_box(dp.process(&mut f, NOW, &mut extra));
        i = (i + 1) & mask;
    }
    let t = clock() - start;
    *pos = i;
    t
}

/// Prototype of a burst API from public calls only: for each group of 16 frames, first parse
/// every frame and look its connection up (16 independent lookups the CPU can overlap: their
/// cache misses are in flight together), then `process` each (its own lookup now hits the
/// cache). A real `process_burst` would hand the found `ConnId` on instead of looking up twice,
/// and would prefetch the index bucket and the slab entry explicitly (see BENCHMARKS.md).
fn burst16(dp: &mut Dataplane, frames: &Frames, pos: &mut usize, iters: u64) -> Duration {
    const B: usize = 16;
    let mut fs: Vec<Frame> = (0..B).map(|_| Frame::with_capacity(2048)).collect();
    let mut extra: Vec<Tx> = Vec::new();
    let mask = frames.count() - 1;
    let mut i = *pos;
    let bursts = iters.div_ceil(B as u64);
    let start = clock();
    for _ in 0..bursts {
        for f in fs.iter_mut() {
            f.set(frames.get(i));
            i = (i + 1) & mask;
            if let Ok(p) = parse_ethernet(f.data())
                && let Some(k) = p.ip().and_then(|ip| ip.flow_key())
            {
                black_box(dp.director().conns().lookup_in(&k));
            }
        }
        for f in fs.iter_mut() {
            black_box(dp.process(f, NOW, &mut extra));
        }
    }
    let t = clock() - start;
    *pos = i;
    // Report per packet: criterion divides by `iters`; we ran `bursts * B` ≥ iters.
    t.mul_f64(iters as f64 / (bursts * B as u64) as f64)
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

fn syn_loop(
    dp: &mut Dataplane,
    syns: &Frames,
    n: usize,
    k: usize,
    st: &mut SynState,
    iters: u64,
) -> Duration {
    let mut f = Frame::with_capacity(2048);
    let mut extra: Vec<Tx> = Vec::new();
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let batch = left.min(k as u64);
        let now = st.now;
        let mut i = st.pos;
        let start = clock();
        for _ in 0..batch {
            f.set(syns.get(i));
            black_box(dp.process(&mut f, now, &mut extra));
            i += 1;
            if i == syns.count() {
                i = 0;
            }
        }
        total += clock() - start;
        st.pos = i;
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
    total
}

// ---- a model of a prefetching burst lookup (bench-only prototype) ---------------------------

/// What a burst API with explicit prefetches could give, measured on a model of the connection
/// table built here (the real table's internals are private): the same 96-byte slab entries and
/// the same kind of seeded folded-multiply hash, indexed by a bucketised open-addressing table
/// (64-byte buckets of eight 16-bit tags and eight u32 slab indexes, half full), so a hit costs
/// two dependent cache-line fetches (bucket, entry) where the real `hashbrown` index costs three
/// (control group, bucket slot, entry). `lookup` does one key at a time, as `process` must today;
/// `lookup_burst` runs 16 keys in three stages — hash and prefetch the buckets, scan the buckets
/// and prefetch the entries, compare and touch — so 16 keys' misses are in flight together.
mod model {
    use core::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};

    /// The real table's 96-byte `Entry`, field for field in size.
    #[derive(Clone, Copy)]
    #[repr(C)]
    pub(super) struct Entry {
        caddr: [u8; 16],
        vaddr: [u8; 16],
        daddr: [u8; 16],
        pub(super) expires: u64,
        links: [u32; 7],
        cport: u16,
        vport: u16,
        dport: u16,
        slot: u16,
        protocol: u8,
        state: u8,
        flags: u8,
        meta: u8,
    }

    #[derive(Clone, Copy, Default)]
    #[repr(C, align(64))]
    struct Bucket {
        tags: [u16; 8],
        slots: [u32; 8],
    }

    /// (client address, client port): the model's key (VIP and port are fixed).
    pub(super) type Key = ([u8; 16], u16);

    pub(super) struct Table {
        slab: Vec<Entry>,
        buckets: Vec<Bucket>,
        mask: usize,
        k: [u64; 4],
    }

    /// `prefetcht0`, for the model only (the shipped code has no prefetch yet).
    #[inline(always)]
    #[allow(unsafe_code)]
    fn prefetch<T>(p: *const T) {
        // SAFETY: SSE is part of the x86-64 baseline this bench is built for, and a prefetch is
        // a hint that never faults, whatever the address.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) }
    }

    #[inline(always)]
    fn fold(a: u64, b: u64) -> u64 {
        let p = u128::from(a) * u128::from(b);
        (p as u64) ^ ((p >> 64) as u64)
    }

    impl Table {
        pub(super) fn new(keys: &[Key]) -> Table {
            let nb = (keys.len() / 4).next_power_of_two().max(1);
            let mut t = Table {
                slab: Vec::with_capacity(keys.len()),
                buckets: vec![Bucket::default(); nb],
                mask: nb - 1,
                k: [
                    0x9e37_79b9_7f4a_7c15,
                    0xbf58_476d_1ce4_e5b9,
                    0x94d0_49bb_1331_11eb,
                    0x2545_f491_4f6c_dd1d,
                ],
            };
            for (i, k) in keys.iter().enumerate() {
                t.slab.push(Entry {
                    caddr: k.0,
                    vaddr: [203, 0, 113, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                    daddr: [198, 51, 100, 11, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                    expires: 0,
                    links: [0; 7],
                    cport: k.1,
                    vport: 80,
                    dport: 80,
                    slot: 0,
                    protocol: 6,
                    state: 3,
                    flags: 0,
                    meta: 0x10,
                });
                let h = t.hash(k);
                let tag = Self::tag(h);
                let mut b = (h as usize) & t.mask;
                'probe: loop {
                    let bucket = &mut t.buckets[b];
                    for j in 0..8 {
                        if bucket.tags[j] == 0 {
                            bucket.tags[j] = tag;
                            bucket.slots[j] = i as u32;
                            break 'probe;
                        }
                    }
                    b = (b + 1) & t.mask;
                }
            }
            t
        }

        pub(super) fn bytes_per_entry(&self) -> f64 {
            (self.slab.capacity() * size_of::<Entry>() + self.buckets.len() * 64) as f64
                / self.slab.len() as f64
        }

        #[inline(always)]
        fn hash(&self, k: &Key) -> u64 {
            let s = u128::from_le_bytes(k.0);
            let a = fold(s as u64 ^ self.k[0], (s >> 64) as u64 ^ self.k[1]);
            fold(a ^ u64::from(k.1) ^ (6 << 32) ^ self.k[2], 80 ^ self.k[3])
        }

        #[inline(always)]
        fn tag(h: u64) -> u16 {
            (h >> 48) as u16 | 1
        }

        #[inline(always)]
        fn matches(&self, i: u32, k: &Key) -> bool {
            let e = &self.slab[i as usize];
            e.cport == k.1 && e.vport == 80 && e.protocol == 6 && e.caddr == k.0
        }

        /// Scan from the home bucket: the matching slab index, if any.
        #[inline(always)]
        fn find_from(&self, mut b: usize, tag: u16, k: &Key) -> Option<u32> {
            loop {
                let bucket = &self.buckets[b];
                for j in 0..8 {
                    let t = bucket.tags[j];
                    if t == tag && self.matches(bucket.slots[j], k) {
                        return Some(bucket.slots[j]);
                    }
                    if t == 0 {
                        return None;
                    }
                }
                b = (b + 1) & self.mask;
            }
        }

        /// The first tag match in the home bucket (the entry to prefetch).
        #[inline(always)]
        fn candidate(&self, b: usize, tag: u16) -> Option<u32> {
            let bucket = &self.buckets[b];
            (0..8)
                .find(|&j| bucket.tags[j] == tag)
                .map(|j| bucket.slots[j])
        }

        /// One key: look up and touch (set `expires`), as the established path does.
        #[inline(never)]
        pub(super) fn lookup(&mut self, k: &Key, now: u64) -> bool {
            let h = self.hash(k);
            match self.find_from((h as usize) & self.mask, Self::tag(h), k) {
                Some(i) => {
                    self.slab[i as usize].expires = now;
                    true
                }
                None => false,
            }
        }

        /// Sixteen keys, three stages with prefetches; returns how many were found.
        #[inline(never)]
        pub(super) fn lookup_burst(&mut self, ks: &[Key; 16], now: u64) -> usize {
            let mut home = [0usize; 16];
            let mut tags = [0u16; 16];
            for (j, k) in ks.iter().enumerate() {
                let h = self.hash(k);
                home[j] = (h as usize) & self.mask;
                tags[j] = Self::tag(h);
                prefetch::<Bucket>(&self.buckets[home[j]]);
            }
            for j in 0..16 {
                if let Some(i) = self.candidate(home[j], tags[j]) {
                    let p: *const Entry = &self.slab[i as usize];
                    prefetch(p);
                    prefetch(p.cast::<u8>().wrapping_add(64));
                }
            }
            let mut found = 0;
            for (j, k) in ks.iter().enumerate() {
                if let Some(i) = self.find_from(home[j], tags[j], k) {
                    self.slab[i as usize].expires = now;
                    found += 1;
                }
            }
            found
        }
    }
}

fn model_key(i: usize) -> model::Key {
    let c = client(i, 1024);
    let IpAddr::V4(a) = c.ip() else {
        unreachable!()
    };
    let mut b = [0u8; 16];
    b[..4].copy_from_slice(&a.octets());
    (b, c.port())
}

fn bench_model(c: &mut Criterion, name: &str, n: usize, flows: &[usize]) {
    let keys: Vec<model::Key> = (0..n).map(model_key).collect();
    let mut t = model::Table::new(&keys);
    drop(keys);
    eprintln!(
        "model {n:>8} entries: {:.1} bytes/entry",
        t.bytes_per_entry()
    );
    let draws: Vec<model::Key> = flows.iter().map(|&i| model_key(i)).collect();
    let mut g = c.benchmark_group("dataplane/model");
    g.throughput(Throughput::Elements(1));
    if n >= 1_000_000 {
        g.sample_size(20);
    }
    let mut j = 0;
    g.bench_function(BenchmarkId::new("lookup_touch", name), |b| {
        b.iter_custom(|iters| {
            timed(iters, || {
                let k = &draws[j & (DRAWS - 1)];
                j += 1;
                assert!(t.lookup(black_box(k), NOW));
            })
        })
    });
    let mut j = 0;
    g.bench_function(BenchmarkId::new("lookup_touch_burst16", name), |b| {
        b.iter_custom(|iters| {
            let bursts = iters.div_ceil(16);
            let start = clock();
            for _ in 0..bursts {
                let ks: &[model::Key; 16] = draws[j..j + 16].try_into().unwrap();
                j = (j + 16) & (DRAWS - 1);
                assert_eq!(t.lookup_burst(black_box(ks), NOW), 16);
            }
            (clock() - start).mul_f64(iters as f64 / (bursts * 16) as f64)
        })
    });
    g.finish();
}

// ---- the benchmarks -----------------------------------------------------------------------

const SIZES: [(&str, usize); 4] = [
    ("1k", 1_000),
    ("100k", 100_000),
    ("1M", 1_000_000),
    ("4M", 4_000_000),
];

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

fn bench_size(c: &mut Criterion, name: &str, n: usize, rng: &mut Rng, syns: &Frames) {
    let (frames, flows) = established_draws(n, rng);
    let big = n >= 1_000_000;
    if !std::env::var("RVS_BENCH_MODEL").is_ok_and(|v| v == "0") {
        bench_model(c, name, n, &flows);
    }
    for method in methods() {
        let mut dp = populated(method, n);
        check_transmits(&mut dp, &frames, "established");
        let mut g = c.benchmark_group(format!("dataplane/{}", method.name()));
        g.throughput(Throughput::Elements(1));
        if big {
            g.sample_size(20);
        }
        let mut pos = 0;
        g.bench_function(BenchmarkId::new("established", name), |b| {
            b.iter_custom(|iters| forward_loop(&mut dp, &frames, &mut pos, iters))
        });
        assert_eq!(
            dp.director().conns().len(),
            n,
            "established packets changed the table"
        );
        match method {
            Method::Dr => {
                // The table lookup alone, same draws (read the table's share of the above).
                let keys: Vec<FlowKey> = (0..frames.count())
                    .map(|i| {
                        *parse_ethernet(frames.get(i))
                            .unwrap()
                            .ip()
                            .unwrap()
                            .flow_key()
                            .as_ref()
                            .unwrap()
                    })
                    .collect();
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
                drop(keys);
                let mut pos = 0;
                g.bench_function(BenchmarkId::new("established_burst16", name), |b| {
                    b.iter_custom(|iters| burst16(&mut dp, &frames, &mut pos, iters))
                });
            }
            Method::Nat => {
                let replies = reply_draws(&dp, &flows);
                check_transmits(&mut dp, &replies, "reply");
                let mut pos = 0;
                g.bench_function(BenchmarkId::new("reply", name), |b| {
                    b.iter_custom(|iters| forward_loop(&mut dp, &replies, &mut pos, iters))
                });
            }
            Method::Tun => {}
        }
        if method != Method::Tun {
            // SYN path into the table at n (max raised to hold a batch on top).
            let k = (n / 10).clamp(100, 65_536);
            let mut s = dp.settings().clone();
            s.conn_tab_max = n + k;
            dp.director_mut().set_settings(s);
            let mut st = SynState {
                now: NOW,
                pos: 0,
                expiry: Duration::ZERO,
                expired: 0,
                refreshed: T0,
            };
            g.bench_function(BenchmarkId::new("syn", name), |b| {
                b.iter_custom(|iters| syn_loop(&mut dp, syns, n, k, &mut st, iters))
            });
            eprintln!(
                "{:>3} {n:>8} conns: SYN batches of {k}; expiring them afterwards cost {:.0} ns per connection ({} expired)",
                method.name(),
                st.expiry.as_nanos() as f64 / st.expired.max(1) as f64,
                st.expired,
            );
        }
        g.finish();
    }
}

// ---- ICMP (issue 4, "Performance") --------------------------------------------------------

/// ICMP frames pre-built per size: fewer than `DRAWS` (each is up to 590 bytes).
const ICMP_DRAWS: usize = 1 << 16;

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

fn icmp_loop(dp: &mut Dataplane, frames: &[Vec<u8>], pos: &mut usize, iters: u64) -> Duration {
    let mut f = Frame::with_capacity(2048);
    let mut extra: Vec<Tx> = Vec::new();
    let mask = frames.len() - 1;
    let mut i = *pos;
    let start = clock();
    for _ in 0..iters {
        f.set(&frames[i]);
        black_box(dp.process(&mut f, NOW, &mut extra));
        i = (i + 1) & mask;
    }
    let t = clock() - start;
    *pos = i;
    t
}

/// ICMP errors forwarded (NAT and DR) over N connections, errors drawn uniformly over the
/// flows; and the packet-too-big generation path (DR). Rate limits are lifted for the
/// measurement (`icmp_forward_per_sec=0`, generation buckets at 10⁹): the limiter's own cost is
/// still paid on every packet, only its verdict is not "suppressed".
fn bench_icmp(c: &mut Criterion, name: &str, n: usize, rng: &mut Rng) {
    let mut bytes = Vec::with_capacity(2048);
    let draws: Vec<usize> = (0..ICMP_DRAWS).map(|_| rng.below(n)).collect();
    let errors: Vec<Vec<u8>> = draws
        .iter()
        .map(|&i| {
            frag_needed_frame(client(i, 1024), &mut bytes);
            bytes.clone()
        })
        .collect();
    for method in [Method::Nat, Method::Dr] {
        let mut dp = populated(method, n);
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
        let mut pos = 0;
        g.bench_function(BenchmarkId::new("error_forwarded", name), |b| {
            b.iter_custom(|iters| icmp_loop(&mut dp, &errors, &mut pos, iters))
        });
        if method == Method::Dr {
            let big: Vec<Vec<u8>> = draws
                .iter()
                .map(|&i| {
                    big_df_frame(client(i, 1024), &mut bytes);
                    bytes.clone()
                })
                .collect();
            let mut f = Frame::with_capacity(2048);
            f.set(&big[0]);
            let v = dp.process(&mut f, NOW, &mut Vec::new());
            assert!(matches!(v, Verdict::Reply { .. }), "too big: {v:?}");
            let mut pos = 0;
            g.bench_function(BenchmarkId::new("packet_too_big_generated", name), |b| {
                b.iter_custom(|iters| icmp_loop(&mut dp, &big, &mut pos, iters))
            });
        }
        g.finish();
    }
}

fn benches(c: &mut Criterion) {
    let mut rng = Rng(0x5eed);
    let syns = syn_pool(&mut rng);
    {
        // The reset of a frame from the pre-built buffer alone (what every loop above pays).
        let frames = established_draws(1000, &mut rng).0;
        let mut g = c.benchmark_group("dataplane/copy_only");
        g.throughput(Throughput::Elements(1));
        let mut f = Frame::with_capacity(2048);
        let mut i = 0;
        g.bench_function("frame_set_54B", |b| {
            b.iter_custom(|iters| {
                timed(iters, || {
                    f.set(frames.get(i));
                    i = (i + 1) & (DRAWS - 1);
                    black_box(f.data().as_ptr());
                })
            })
        });
        g.finish();
    }
    if std::env::var("RVS_BENCH_ICMP").is_ok_and(|v| v == "only") {
        for (name, n) in sizes() {
            bench_icmp(c, name, n, &mut rng);
        }
        return;
    }
    for (name, n) in sizes() {
        bench_size(c, name, n, &mut rng, &syns);
        if !std::env::var("RVS_BENCH_ICMP").is_ok_and(|v| v == "0") {
            bench_icmp(c, name, n, &mut rng);
        }
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c);
    c.final_summary();
}
