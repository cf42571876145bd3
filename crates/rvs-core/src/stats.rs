//! Per-service and per-dest statistics: connection, packet and byte counters, and the rate
//! estimator `ipvsadm --rate` shows (CPS, in/out PPS, in/out BPS).
//!
//! The estimator follows IPVS's `ip_vs_est` idea: every 2-second interval the rate over that
//! interval is folded into an exponentially weighted average with weight ¼. Rates are kept in
//! fixed point (×2¹⁰) so the arithmetic stays integer.

use crate::types::{SEC, Time};

/// Length of one estimator interval (IPVS estimates every 2 seconds).
pub const EST_INTERVAL: Time = 2 * SEC;

/// Plain counters, as `ipvsadm --stats` shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    /// Connections scheduled.
    pub conns: u64,
    /// Packets from clients (towards dests).
    pub inpkts: u64,
    /// Packets from dests (towards clients; NAT only).
    pub outpkts: u64,
    /// Bytes from clients.
    pub inbytes: u64,
    /// Bytes from dests.
    pub outbytes: u64,
}

/// Rates per second, as `ipvsadm --rate` shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rates {
    /// Connections per second.
    pub cps: u64,
    /// Incoming packets per second.
    pub inpps: u64,
    /// Outgoing packets per second.
    pub outpps: u64,
    /// Incoming bytes per second.
    pub inbps: u64,
    /// Outgoing bytes per second.
    pub outbps: u64,
}

/// Counters and their rate estimator.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Totals since creation or the last zeroing.
    pub counters: Counters,
    last: Counters,
    last_time: Option<Time>,
    // Averages in units of 1/1024 per second.
    avg: [u64; 5],
}

const SHIFT: u32 = 10;

impl Stats {
    /// Count a new connection.
    #[inline]
    pub fn conn(&mut self) {
        self.counters.conns += 1;
    }

    /// Count a packet from a client.
    #[inline]
    pub fn inbound(&mut self, bytes: usize) {
        self.counters.inpkts += 1;
        self.counters.inbytes += bytes as u64;
    }

    /// Count a packet from a dest.
    #[inline]
    pub fn outbound(&mut self, bytes: usize) {
        self.counters.outpkts += 1;
        self.counters.outbytes += bytes as u64;
    }

    /// Zero the counters and rates (`ipvsadm -Z`).
    pub fn zero(&mut self) {
        *self = Stats::default();
    }

    /// Fold every whole interval elapsed since the last estimate into the averages.
    pub fn estimate(&mut self, now: Time) {
        let Some(last_time) = self.last_time else {
            // The first interval starts now, but `last` stays at zero (the counters at
            // creation or zeroing): traffic that came before this first call belongs to the
            // first interval, as with IPVS, whose estimator starts with the counters.
            self.last_time = Some(now);
            return;
        };
        if now < last_time + EST_INTERVAL {
            return;
        }
        let elapsed = now - last_time;
        let c = self.counters;
        let deltas = [
            c.conns - self.last.conns,
            c.inpkts - self.last.inpkts,
            c.outpkts - self.last.outpkts,
            c.inbytes - self.last.inbytes,
            c.outbytes - self.last.outbytes,
        ];
        for (avg, delta) in self.avg.iter_mut().zip(deltas) {
            // Rate over the elapsed time, fixed point; then avg += (rate − avg) / 4.
            let rate = ((u128::from(delta) << SHIFT) * u128::from(SEC) / u128::from(elapsed))
                .min(u128::from(u64::MAX >> 2)) as u64;
            if rate >= *avg {
                *avg += (rate - *avg) / 4;
            } else {
                *avg -= (*avg - rate) / 4;
            }
        }
        self.last = c;
        self.last_time = Some(now);
    }

    /// The current rate estimates (rounded to the nearest unit).
    pub fn rates(&self) -> Rates {
        let r = |v: u64| (v + (1 << (SHIFT - 1))) >> SHIFT;
        Rates {
            cps: r(self.avg[0]),
            inpps: r(self.avg[1]),
            outpps: r(self.avg[2]),
            inbps: r(self.avg[3]),
            outbps: r(self.avg[4]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steady_rate_converges() {
        let mut s = Stats::default();
        s.estimate(0);
        for i in 1..=40u64 {
            for _ in 0..200 {
                s.conn();
                s.inbound(100);
            }
            s.estimate(i * EST_INTERVAL);
        }
        let r = s.rates();
        assert_eq!(r.cps, 100);
        assert_eq!(r.inpps, 100);
        assert_eq!(r.inbps, 10_000);
        assert_eq!(r.outpps, 0);
        assert_eq!(s.counters.conns, 8000);
    }

    #[test]
    fn traffic_before_the_first_estimate_counts() {
        let mut s = Stats::default();
        for _ in 0..8 {
            s.conn();
            s.inbound(1000);
        }
        s.estimate(5 * SEC);
        s.estimate(5 * SEC + EST_INTERVAL);
        // 8 connections over one 2 s interval: 4/s, a quarter of it in the average.
        assert_eq!(s.rates().cps, 1);
        assert_eq!(s.rates().inbps, 1000);
    }

    #[test]
    fn no_estimate_within_an_interval() {
        let mut s = Stats::default();
        s.estimate(0);
        s.inbound(1);
        s.estimate(EST_INTERVAL - 1);
        assert_eq!(s.rates(), Rates::default());
        s.zero();
        assert_eq!(s.counters, Counters::default());
    }
}
