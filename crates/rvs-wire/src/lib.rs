//! `rvs-wire` — the packet layer of RVS.
//!
//! Parsing and emitting go through [`etherparse`]; this crate writes by hand only what etherparse
//! lacks, each piece saying why in its module doc:
//! - [`rewrite`]: in-place views over forwarded packets (addresses, ports, TTL/hop limit, MACs);
//! - [`checksum`]: RFC 1071 sums, pseudo-headers and RFC 1624 incremental updates;
//! - [`quote`]: the reader for the datagram quoted inside an ICMP error;
//! - [`build`]: builders for what the director originates (ICMP errors, TCP RST, tunnel headers);
//! - [`parse`]: the one-pass frame parse the dataplane runs on every packet;
//! - [`flow`]: the forwarding fast path's reader for the commonest TCP/UDP frame shape;
//! - [`capture`]: pcap/pcapng capture files through `pcap-file`;
//! - [`exercise`]: one entry point over every parser and builder, for fuzzers and property tests.
//!
//! Contract: no function in this crate panics or reads out of bounds on any input, and nothing on
//! the forwarding path allocates. Every malformed input yields a typed [`WireError`].

pub mod build;
pub mod capture;
pub mod checksum;
pub mod error;
pub mod exercise;
pub mod flow;
pub mod parse;
pub mod quote;
pub mod rewrite;

pub use error::WireError;
