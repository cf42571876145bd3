//! `rr` — round robin: each new connection goes to the next usable dest in order, the position
//! remembered across calls (IPVS `ip_vs_rr.c`). Weights only matter as "0 = no new connections".

use core::net::IpAddr;

use super::{SchedFlow, Scheduler};
use crate::types::{Dest, SchedulerKind};

/// Round-robin scheduler state: the dest chosen last.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoundRobin {
    /// Index, address and port of the dest chosen last; `None` = start from the first dest.
    last: Option<(usize, IpAddr, u16)>,
}

impl RoundRobin {
    /// A round-robin scheduler that starts with the first dest.
    pub const fn new() -> RoundRobin {
        RoundRobin { last: None }
    }
}

impl Scheduler for RoundRobin {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Rr
    }

    /// Keep the position on the dest chosen last. If that dest was deleted, step back one so the
    /// next choice is the dest that followed it (IPVS `ip_vs_rr_del_dest`).
    fn update(&mut self, dests: &[Dest]) {
        if let Some((i, addr, port)) = self.last {
            self.last = match dests.iter().position(|d| d.addr == addr && d.port == port) {
                Some(j) => Some((j, addr, port)),
                None => i
                    .checked_sub(1)
                    .and_then(|p| dests.get(p).map(|d| (p, d.addr, d.port))),
            };
        }
    }

    fn schedule(&mut self, dests: &[Dest], _flow: &SchedFlow) -> Option<usize> {
        let n = dests.len();
        // An index beyond the slice (dests removed without `update`) restarts from the first.
        let start = match self.last {
            Some((i, _, _)) if i < n => i + 1,
            _ => 0,
        };
        // Every dest once, the last chosen one at the end.
        let i = (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| dests[i].is_usable())?;
        self.last = Some((i, dests[i].addr, dests[i].port));
        Some(i)
    }
}
