//! `rvs-core` — the director's state: services, dests, schedulers, the connection table with
//! persistence templates, IPVS TCP/UDP states and timeouts, statistics and rates, settings and
//! the ipvsadm-save rules format.
//!
//! Deterministic by construction: no packet bytes, no clock (every call takes `now`), no I/O,
//! hash seeds passed in. Nothing here panics on any input.

pub mod conn;
pub mod director;
pub mod proto;
pub mod rules;
pub mod sched;
pub mod settings;
pub mod stats;
pub mod types;

pub use types::*;
