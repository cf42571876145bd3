//! `sed` — shortest expected delay: the usable dest with the smallest (active + 1) / weight,
//! the delay a new connection would see if every active connection were served at the dest's
//! weight (IPVS `ip_vs_sed.c`). Compared by cross-multiplication in `u64`; ties to the first.

use super::{SchedFlow, Scheduler, pick_best};
use crate::types::{Dest, SchedulerKind};

/// Shortest-expected-delay scheduler (stateless).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShortestExpectedDelay;

/// The expected-delay numerator: active connections plus the new one.
pub(super) fn sed_overhead(d: &Dest) -> u64 {
    u64::from(d.active_conns) + 1
}

/// True when `d`'s expected delay is strictly shorter than `least`'s.
pub(super) fn sed_better(d: &Dest, least: &Dest) -> bool {
    sed_overhead(least) * u64::from(d.weight) > sed_overhead(d) * u64::from(least.weight)
}

impl Scheduler for ShortestExpectedDelay {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Sed
    }

    fn update(&mut self, _dests: &[Dest]) {}

    fn schedule(&mut self, dests: &[Dest], _flow: &SchedFlow) -> Option<usize> {
        pick_best(dests, sed_better)
    }
}
