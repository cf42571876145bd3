//! `fo` — weighted failover: every new connection goes to the usable dest with the highest
//! weight, ties to the first in order (IPVS `ip_vs_fo.c`); the others stand by until it is
//! quiesced (weight 0) or overloaded.

use super::{SchedFlow, Scheduler, pick_best};
use crate::types::{Dest, SchedulerKind};

/// Weighted-failover scheduler (stateless).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WeightedFailover;

impl Scheduler for WeightedFailover {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Fo
    }

    fn update(&mut self, _dests: &[Dest]) {}

    fn schedule(&mut self, dests: &[Dest], _flow: &SchedFlow) -> Option<usize> {
        pick_best(dests, |d, best| d.weight > best.weight)
    }
}
