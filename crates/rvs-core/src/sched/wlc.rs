//! `wlc` — weighted least connections, ipvsadm's default: the usable dest with the smallest
//! overhead / weight (IPVS `ip_vs_wlc.c`). The division is never done: `d` beats `least` when
//! `overhead(least) × weight(d) > overhead(d) × weight(least)`, in `u64` (overheads are below
//! 2^41 and weights below 2^32, so the products cannot overflow). Ties go to the first in order.

use super::{SchedFlow, Scheduler, pick_best};
use crate::types::{Dest, SchedulerKind};

/// Weighted-least-connections scheduler (stateless).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WeightedLeastConn;

impl Scheduler for WeightedLeastConn {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Wlc
    }

    fn update(&mut self, _dests: &[Dest]) {}

    fn schedule(&mut self, dests: &[Dest], _flow: &SchedFlow) -> Option<usize> {
        pick_best(dests, |d, least| {
            least.conn_overhead() * u64::from(d.weight)
                > d.conn_overhead() * u64::from(least.weight)
        })
    }
}
