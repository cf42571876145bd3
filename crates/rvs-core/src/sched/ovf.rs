//! `ovf` — weighted overflow: the usable dest with the highest weight (ties to the first in
//! order) among those not yet full; `None` when every dest is full. As in IPVS `ip_vs_ovf.c`, a
//! dest is full once its active connections *exceed* its weight, so it takes weight + 1.

use super::{SchedFlow, Scheduler};
use crate::types::{Dest, SchedulerKind};

/// Weighted-overflow scheduler (stateless).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WeightedOverflow;

impl Scheduler for WeightedOverflow {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Ovf
    }

    fn update(&mut self, _dests: &[Dest]) {}

    fn schedule(&mut self, dests: &[Dest], _flow: &SchedFlow) -> Option<usize> {
        let mut best: Option<(usize, u32)> = None;
        for (i, d) in dests.iter().enumerate() {
            if !d.is_usable() || d.active_conns > d.weight {
                continue;
            }
            match best {
                Some((_, w)) if d.weight <= w => {}
                _ => best = Some((i, d.weight)),
            }
        }
        best.map(|(i, _)| i)
    }
}
