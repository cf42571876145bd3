//! Connection-table benchmarks: established lookups at 1 k – 4 M entries (keys drawn uniformly
//! from the inserted ones, pre-shuffled), one at a time and sixteen at a time with the prefetch
//! stages of a burst, reply lookups, per-packet touch, insert+remove churn at
//! a steady 1 M, and the table's bytes per connection (printed during setup).
//!
//! Run with `cargo bench -p rvs-core --bench conn -- --warm-up-time 1 --measurement-time 3`.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr
)]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use rvs_core::conn::{Conn, ConnFlags, ConnId, ConnTable, FullPolicy};
use rvs_core::proto::{ConnState, TcpState};
use rvs_core::{FwdMethod, SEC, Time};
use rvs_wire::parse::FlowKey;

const NOW: Time = 1_700_000_000 * SEC;
/// Length of the pre-drawn lookup key sequence (a power of two, so wrapping is a mask).
const DRAWS: usize = 1 << 20;

/// splitmix64: a tiny deterministic generator for keys and shuffles.
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

/// `n` distinct client keys: random IPv4 client address and port, 16 VIPs, ports 80/443.
fn keys(n: usize, rng: &mut Rng) -> Vec<FlowKey> {
    let mut seen = std::collections::HashSet::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let r = rng.next();
        let k = FlowKey {
            protocol: 6,
            src: IpAddr::V4(Ipv4Addr::from((r >> 32) as u32)),
            sport: (r >> 16) as u16 | 1024,
            dst: IpAddr::V4(Ipv4Addr::new(192, 0, 2, (r & 15) as u8)),
            dport: if r & 16 == 0 { 80 } else { 443 },
        };
        if seen.insert(k) {
            out.push(k);
        }
    }
    out
}

/// A NAT connection (its dest's way back counted too: the memory worst case).
fn conn(k: FlowKey, i: usize) -> Conn {
    Conn {
        key: k,
        daddr: IpAddr::V4(Ipv4Addr::new(10, 0, (i >> 8) as u8 & 3, i as u8)),
        dport: k.dport,
        dest: (i & 1023) as u32,
        fwd: FwdMethod::Masq,
        state: ConnState::Tcp(TcpState::Established),
        flags: ConnFlags::NONE,
        expires: NOW + 900 * SEC + (i as Time % 1000) * SEC / 10,
        control: None,
    }
}

fn filled(n: usize, rng: &mut Rng) -> (ConnTable, Vec<FlowKey>, Vec<ConnId>) {
    let ks = keys(n, rng);
    let mut t = ConnTable::new(n, FullPolicy::Refuse, 0x5eed);
    let start = Instant::now();
    let ids: Vec<ConnId> = ks
        .iter()
        .enumerate()
        .map(|(i, k)| t.insert(conn(*k, i), NOW).unwrap().0)
        .collect();
    let took = start.elapsed();
    eprintln!(
        "conn table {n:>8} NAT entries: {:.1} bytes/conn ({} MiB total), filled in {:.0} ns/insert",
        t.memory_bytes() as f64 / n as f64,
        t.memory_bytes() >> 20,
        took.as_nanos() as f64 / n as f64,
    );
    (t, ks, ids)
}

/// `DRAWS` keys drawn uniformly at random from `ks`.
fn draws(ks: &[FlowKey], rng: &mut Rng) -> Vec<FlowKey> {
    (0..DRAWS).map(|_| ks[rng.below(ks.len())]).collect()
}

fn lookups(c: &mut Criterion) {
    let mut rng = Rng(1);
    let mut g = c.benchmark_group("conn/lookup_in_hit");
    for (name, n) in [
        ("1k", 1_000),
        ("100k", 100_000),
        ("1M", 1_000_000),
        ("4M", 4_000_000),
    ] {
        let (t, ks, _) = filled(n, &mut rng);
        let d = draws(&ks, &mut rng);
        drop(ks);
        let mut i = 0;
        g.bench_function(name, |b| {
            b.iter(|| {
                let k = &d[i & (DRAWS - 1)];
                i += 1;
                black_box(t.lookup_in(black_box(k)))
            })
        });
        // Sixteen keys at a time through the prefetch stages (hash and prefetch the buckets,
        // then the entries, then look up), as `Dataplane::process_burst` does.
        let mut i = 0;
        g.bench_function(format!("{name} burst16"), |b| {
            b.iter_custom(|iters| {
                let groups = iters.div_ceil(16);
                let start = Instant::now();
                for _ in 0..groups {
                    let ks = &d[i..i + 16];
                    i = (i + 16) & (DRAWS - 1);
                    let mut hs = [0u64; 16];
                    for (h, k) in hs.iter_mut().zip(ks) {
                        *h = t.key_hash(k);
                        t.prefetch_in(*h);
                    }
                    for h in &hs {
                        t.prefetch_in_entries(*h);
                    }
                    for (h, k) in hs.iter().zip(ks) {
                        black_box(t.lookup_in_hashed(k, *h));
                    }
                }
                start.elapsed().mul_f64(iters as f64 / (groups * 16) as f64)
            })
        });
        if n == 1_000_000 {
            // Reply direction and misses at 1 M.
            let outs: Vec<FlowKey> = d
                .iter()
                .map(|k| t.get(t.lookup_in(k).unwrap()).unwrap().out_key())
                .collect();
            let mut j = 0;
            g.bench_function("1M lookup_out", |b| {
                b.iter(|| {
                    let k = &outs[j & (DRAWS - 1)];
                    j += 1;
                    black_box(t.lookup_out(black_box(k)))
                })
            });
            let misses: Vec<FlowKey> = d
                .iter()
                .map(|k| FlowKey {
                    sport: k.sport ^ 1,
                    ..*k
                })
                .collect();
            let mut m = 0;
            g.bench_function("1M miss", |b| {
                b.iter(|| {
                    let k = &misses[m & (DRAWS - 1)];
                    m += 1;
                    black_box(t.lookup_in(black_box(k)))
                })
            });
            let mut p = 0;
            g.bench_function("1M lookup_in+get", |b| {
                b.iter(|| {
                    let k = &d[p & (DRAWS - 1)];
                    p += 1;
                    black_box(t.lookup_in(black_box(k)).and_then(|id| t.get(id)))
                })
            });
        }
    }
    g.finish();
}

fn mutations(c: &mut Criterion) {
    let mut rng = Rng(2);
    let n = 1_000_000;
    let mut g = c.benchmark_group("conn/mutate");

    // Per-packet timer refresh of a random established connection.
    let (mut t, _, ids) = filled(n, &mut rng);
    let picks: Vec<ConnId> = (0..DRAWS).map(|_| ids[rng.below(ids.len())]).collect();
    let mut i = 0;
    let mut now = NOW;
    g.bench_function("1M touch", |b| {
        b.iter(|| {
            let id = picks[i & (DRAWS - 1)];
            i += 1;
            now += 1_000;
            black_box(t.touch(id, now + 900 * SEC))
        })
    });
    drop(t);

    // Steady-state churn: remove the oldest connection, insert a new one (keys recycled from a
    // pool slightly larger than the table, so the inserted key is never live).
    let pool = keys(n + 4096, &mut rng);
    let mut t = ConnTable::new(n, FullPolicy::Refuse, 0x5eed);
    let mut ring: Vec<Option<ConnId>> = vec![None; pool.len()];
    for (j, slot) in ring.iter_mut().enumerate().take(n) {
        *slot = Some(t.insert(conn(pool[j], j), NOW).unwrap().0);
    }
    let mut head = 0usize;
    g.bench_function("1M insert+remove", |b| {
        b.iter(|| {
            let old = ring[head].take().unwrap();
            black_box(t.remove(old));
            let j = (head + n) % pool.len();
            ring[j] = Some(t.insert(conn(pool[j], j), NOW).unwrap().0);
            head = (head + 1) % pool.len();
        })
    });
    g.finish();
    drop(t);

    // Expiry throughput (one pass, timed here rather than by criterion): 1 M entries spread
    // over 100 s, half of them extended once (lazily re-filed), expired in 100 ms steps.
    let (mut t, _, ids) = filled(n, &mut rng);
    for (j, id) in ids.iter().enumerate() {
        let e = NOW + (j as Time % 100_000) * SEC / 1000;
        t.touch(*id, e);
        if j % 2 == 0 {
            t.touch(*id, e + 50 * SEC);
        }
    }
    let mut out = Vec::with_capacity(4096);
    let mut expired = 0;
    let mut calls = 0;
    let start = Instant::now();
    let mut now = NOW;
    while !t.is_empty() {
        now += SEC / 10;
        loop {
            out.clear();
            let k = t.expire(now, 4096, &mut out);
            calls += 1;
            expired += k;
            if k < 4096 {
                break;
            }
        }
    }
    let took = start.elapsed();
    eprintln!(
        "expire: {expired} entries in {calls} calls, {:.1} ns per expired entry (incl. re-filing)",
        took.as_nanos() as f64 / expired as f64
    );
}

criterion_group!(benches, lookups, mutations);
criterion_main!(benches);
