//! `rvs-core` — the director's state: services, dests, schedulers, connection table, persistence
//! templates, TCP/UDP states and timeouts, statistics. Deterministic: no packets' bytes, no
//! clock, no I/O. Filled by the director-core issue; empty in this version.
