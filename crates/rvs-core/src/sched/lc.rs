//! `lc` — least connections: the usable dest with the smallest connection overhead
//! ([`Dest::conn_overhead`]: active × 256 + inactive), ties to the first in order
//! (IPVS `ip_vs_lc.c`). Weights only matter as "0 = no new connections".

use super::{SchedFlow, Scheduler, pick_best};
use crate::types::{Dest, SchedulerKind};

/// Least-connections scheduler (stateless).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LeastConn;

impl Scheduler for LeastConn {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Lc
    }

    fn update(&mut self, _dests: &[Dest]) {}

    fn schedule(&mut self, dests: &[Dest], _flow: &SchedFlow) -> Option<usize> {
        pick_best(dests, |d, least| d.conn_overhead() < least.conn_overhead())
    }
}
