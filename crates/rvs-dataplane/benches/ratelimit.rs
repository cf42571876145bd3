//! The per-address ICMP rate limiter under a flood of new addresses (spoofed sources, say):
//! what one `take` of an address it has never seen costs when its map is already full of live
//! buckets (`KeyedLimiter`, 16 384 of them, Linux's defaults of one token per second and a
//! burst of 6: nothing refills during the run).
//!
//! Run with `cargo bench -p rvs-dataplane --bench ratelimit`.
#![allow(missing_docs)]

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{Criterion, criterion_group, criterion_main};
use rvs_dataplane::ratelimit::{DEFAULT_MAX_KEYS, KeyedLimiter};

/// Nanoseconds per second.
const SEC: u64 = 1_000_000_000;

fn flood(c: &mut Criterion) {
    let key = |i: u32| IpAddr::from(i.to_be_bytes());
    let mut l = KeyedLimiter::new(DEFAULT_MAX_KEYS);
    for i in 0..DEFAULT_MAX_KEYS as u32 {
        black_box(l.take(key(i), 1, 6, 0));
    }
    // New addresses, a microsecond apart: all within the first second, so every bucket stays
    // live and every new address is refused.
    let (mut next, mut now) = (1u32 << 24, SEC / 2);
    c.bench_function("keyed_limiter_new_key_when_full", |b| {
        b.iter(|| {
            next = next.wrapping_add(1);
            now = (now + 1_000).min(SEC - 1);
            black_box(l.take(key(next), 1, 6, now))
        })
    });
}

criterion_group!(benches, flood);
criterion_main!(benches);
