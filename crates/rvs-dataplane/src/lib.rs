//! `rvs-dataplane` — one packet in, one [`Verdict`] out.
//!
//! [`Dataplane::process`] parses a frame, finds or schedules its connection in the director
//! state (`rvs-core`), and rewrites the frame in place for the connection's forwarding method
//! ([`xmit`]: NAT, DR, TUN), or answers it (TCP RST, ICMP), or hands it to the host (`Local`), or
//! drops it with a named [`DropReason`]. IP fragments follow their first fragment ([`frag`]).
//!
//! Deterministic: no I/O, no clock (`now` is an argument), hash seeds from the settings.

pub mod dataplane;
pub mod frag;
pub mod frame;
pub mod ratelimit;
pub mod verdict;
pub mod xmit;

pub use dataplane::{
    Dataplane, DataplaneConfig, DataplaneCounters, FragDecision, IcmpCounters, IcmpOutcome,
};
pub use frame::Frame;
pub use verdict::{DropLog, DropLogger, DropReason, Tx, Verdict};
