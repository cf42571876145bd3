//! Schedulers: one file each, integer arithmetic only, named as ipvsadm names them.
//!
//! A scheduler sees the service's live dests (deleted dests are not in the slice) and the new
//! connection's flow, and returns the index of the dest to use, or `None` when no dest is usable.
//! Weight 0 means "no new connections" for every scheduler; an overloaded dest
//! ([`Dest::overloaded`]) takes none either. Hashing schedulers take their hash seed at
//! construction, so the core stays deterministic.

use core::fmt;
use core::net::IpAddr;

use crate::types::{Dest, SchedFlags, SchedulerKind};

/// What a scheduler may look at to choose a dest for a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedFlow {
    /// IP protocol number.
    pub protocol: u8,
    /// Client address.
    pub caddr: IpAddr,
    /// Client port.
    pub cport: u16,
    /// Virtual address.
    pub vaddr: IpAddr,
    /// Virtual port.
    pub vport: u16,
}

/// A scheduling algorithm with its state (round-robin position, lookup tables, ...).
pub trait Scheduler: fmt::Debug + Send {
    /// Which algorithm this is.
    fn kind(&self) -> SchedulerKind;
    /// Rebuild internal state after the dest set, a weight or a flag changed (IPVS's
    /// `add_dest`/`del_dest`/`upd_dest`). Called once at creation too.
    fn update(&mut self, dests: &[Dest]);
    /// Choose a dest for a new connection; `None` when no dest is usable.
    fn schedule(&mut self, dests: &[Dest], flow: &SchedFlow) -> Option<usize>;
}
