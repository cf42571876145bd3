//! Token buckets for ICMP: generated messages (global and per destination, Linux's
//! `icmp_msgs_per_sec`/`icmp_msgs_burst` and `icmp_ratelimit`) and forwarded errors (per
//! source), so the director is never an amplifier and an ICMP flood is not relayed at full rate.
//!
//! Integer arithmetic in nanoseconds; time is an argument. The per-key map is bounded: when
//! full, stale buckets are dropped first, and a key that still finds no room is refused (a
//! flood of distinct sources cannot grow memory).

use core::net::IpAddr;

use hashbrown::HashMap;

const NS: u128 = 1_000_000_000;

/// One token bucket: `rate` tokens per second, at most `burst` stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBucket {
    /// Stored tokens, in units of 1/NS token (so refills stay exact).
    level: u128,
    last: u64,
}

impl TokenBucket {
    /// A full bucket at time `now`.
    pub fn full(burst: u32, now: u64) -> TokenBucket {
        TokenBucket {
            level: u128::from(burst) * NS,
            last: now,
        }
    }

    /// Take one token if there is one, refilling at `per_sec` up to `burst` first.
    pub fn take(&mut self, per_sec: u32, burst: u32, now: u64) -> bool {
        self.take_every(NS as u64 / u64::from(per_sec.max(1)), burst, now)
    }

    /// Whether a token is there, refilling at `per_sec` up to `burst` first, without taking it
    /// (to check one bucket before taking from another).
    pub fn ready(&mut self, per_sec: u32, burst: u32, now: u64) -> bool {
        // A stored token is enough: the refill (a 128-bit division) is left to the take.
        if self.level >= NS {
            return true;
        }
        self.refill(NS as u64 / u64::from(per_sec.max(1)), burst, now);
        self.level >= NS
    }

    /// Add the tokens earned since the last refill: one per `interval` ns, up to `burst`.
    fn refill(&mut self, interval: u64, burst: u32, now: u64) {
        let elapsed = u128::from(now.saturating_sub(self.last));
        self.last = self.last.max(now);
        let cap = u128::from(burst.max(1)) * NS;
        self.level = (self.level + elapsed * NS / u128::from(interval.max(1))).min(cap);
    }

    /// Take one token if there is one, refilling one token per `interval` ns up to `burst`.
    pub fn take_every(&mut self, interval: u64, burst: u32, now: u64) -> bool {
        self.refill(interval, burst, now);
        if self.level >= NS {
            self.level -= NS;
            true
        } else {
            false
        }
    }
}

/// Buckets keyed by address, bounded in number.
#[derive(Debug, Clone)]
pub struct KeyedLimiter {
    buckets: HashMap<IpAddr, TokenBucket>,
    max_keys: usize,
    /// When the map was last swept for stale buckets (see [`KeyedLimiter::take_every`]).
    last_sweep: Option<u64>,
    /// Sweeps done.
    sweeps: u64,
}

/// The shortest time between two sweeps of a full [`KeyedLimiter`] (ns), whatever its rate.
pub const MIN_SWEEP_GAP: u64 = 10_000_000;

/// Default bound on per-address buckets.
pub const DEFAULT_MAX_KEYS: usize = 16_384;

impl KeyedLimiter {
    /// A limiter holding at most `max_keys` buckets.
    pub fn new(max_keys: usize) -> KeyedLimiter {
        KeyedLimiter {
            buckets: HashMap::new(),
            max_keys: max_keys.max(1),
            last_sweep: None,
            sweeps: 0,
        }
    }

    /// Take a token for `key` (a new key starts with a full bucket).
    pub fn take(&mut self, key: IpAddr, per_sec: u32, burst: u32, now: u64) -> bool {
        self.take_every(key, NS as u64 / u64::from(per_sec.max(1)), burst, now)
    }

    /// Take a token for `key`, one per `interval` ns, up to `burst` stored.
    ///
    /// A new key that finds the map full makes it forget the buckets that have refilled
    /// completely (they hold no information), and is refused if that makes no room. That
    /// sweep walks the whole map, so it runs at most once per token interval (and never
    /// twice within [`MIN_SWEEP_GAP`]): in between, new keys are refused at once. Otherwise a
    /// flood from many sources (spoofed, say) against a map full of live buckets would pay a
    /// walk of every bucket per packet.
    pub fn take_every(&mut self, key: IpAddr, interval: u64, burst: u32, now: u64) -> bool {
        if !self.buckets.contains_key(&key) && self.buckets.len() >= self.max_keys {
            let gap = interval.max(MIN_SWEEP_GAP);
            if self.last_sweep.is_some_and(|t| now.saturating_sub(t) < gap) {
                return false;
            }
            self.last_sweep = Some(now);
            self.sweeps += 1;
            let full_after = u64::from(burst.max(1)).saturating_mul(interval);
            self.buckets
                .retain(|_, b| now.saturating_sub(b.last) < full_after);
            if self.buckets.len() >= self.max_keys {
                return false;
            }
        }
        self.buckets
            .entry(key)
            .or_insert_with(|| TokenBucket::full(burst, now))
            .take_every(interval, burst, now)
    }

    /// How many times a full map was swept for stale buckets.
    pub fn sweeps(&self) -> u64 {
        self.sweeps
    }

    /// Number of buckets held.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// True when no bucket is held.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn burst_then_rate() {
        let mut b = TokenBucket::full(3, 0);
        assert!((0..3).all(|_| b.take(1, 3, 0)));
        assert!(!b.take(1, 3, 0));
        assert!(!b.take(1, 3, SEC / 2));
        assert!(b.take(1, 3, SEC));
        assert!(!b.take(1, 3, SEC));
        // Long idle: back to the burst, not more.
        let n = (0..10).filter(|_| b.take(1, 3, 100 * SEC)).count();
        assert_eq!(n, 3);
    }

    #[test]
    fn ready_takes_nothing() {
        let mut b = TokenBucket::full(1, 0);
        assert!((0..5).all(|_| b.ready(1, 1, 0)));
        assert!(b.take(1, 1, 0));
        assert!(!b.ready(1, 1, 0));
        assert!(!b.ready(1, 1, SEC / 2));
        assert!(b.ready(1, 1, SEC));
        assert!(b.take(1, 1, SEC));
    }

    #[test]
    fn thousand_per_second() {
        let mut b = TokenBucket::full(50, 0);
        let sent = (0..10_000u64)
            .filter(|i| b.take(1000, 50, i * SEC / 10_000))
            .count();
        // 50 burst + ~1000 over one second.
        assert!((1040..=1051).contains(&sent), "{sent}");
    }

    #[test]
    fn keyed_is_bounded_and_per_key() {
        let mut l = KeyedLimiter::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let c: IpAddr = "192.0.2.3".parse().unwrap();
        assert!(l.take(a, 1, 1, 0));
        assert!(!l.take(a, 1, 1, 0));
        assert!(l.take(b, 1, 1, 0));
        assert!(!l.take(c, 1, 1, 0), "full of live buckets: refused");
        assert_eq!(l.len(), 2);
        assert!(l.take(c, 1, 1, 5 * SEC), "stale buckets make room");
        assert!(l.len() <= 2);
    }

    // A flood of new sources against a map full of live buckets: refused, and the map is
    // walked once per token interval, not once per packet.
    #[test]
    fn full_map_is_swept_at_most_once_per_interval() {
        let mut l = KeyedLimiter::new(100);
        let key = |i: u32| IpAddr::from([198, 51, (i >> 8) as u8, i as u8]);
        let per_sec = 10; // one token per 100 ms
        assert!((0..100).all(|i| l.take(key(i), per_sec, 5, 0)));
        // 10 000 new sources within the first 100 ms.
        let ok = (0..10_000u32)
            .filter(|&i| l.take(key(1000 + i), per_sec, 5, u64::from(i) * 10_000))
            .count();
        assert_eq!(ok, 0);
        assert_eq!(l.sweeps(), 1);
        // Once the buckets have refilled (5 tokens × 100 ms), a new source finds room.
        assert!(l.take(key(50_000), per_sec, 5, 600_000_000));
        assert_eq!(l.sweeps(), 2);
        assert!(l.len() <= 100);
    }
}
