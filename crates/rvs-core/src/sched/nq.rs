//! `nq` — never queue: the first usable dest with no active connection, so no connection waits
//! behind another while a dest idles; when every usable dest is busy, as `sed`
//! (IPVS `ip_vs_nq.c`).

use super::sed::sed_better;
use super::{SchedFlow, Scheduler, pick_best};
use crate::types::{Dest, SchedulerKind};

/// Never-queue scheduler (stateless).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NeverQueue;

impl Scheduler for NeverQueue {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Nq
    }

    fn update(&mut self, _dests: &[Dest]) {}

    fn schedule(&mut self, dests: &[Dest], _flow: &SchedFlow) -> Option<usize> {
        dests
            .iter()
            .position(|d| d.is_usable() && d.active_conns == 0)
            .or_else(|| pick_best(dests, sed_better))
    }
}
