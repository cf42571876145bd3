//! `rvs-api` — the control protocol shared by `rvsd` and `rvsadm`: typed requests, responses and
//! errors, the framing on the wire, and a small blocking client.
//!
//! # Wire format
//!
//! The daemon listens on an **abstract** Unix stream socket (Linux: the name has no file and is
//! scoped to the network namespace, so every namespace has its own director), by default
//! [`DEFAULT_SOCKET_NAME`]; the environment variable [`SOCKET_ENV`] overrides it for clients.
//! A client connects, writes one [`Request`] as one line of JSON (terminated by `\n`, at most
//! [`MAX_REQUEST_BYTES`]), and reads one [`Response`] as one line of JSON; then the daemon
//! closes the connection. Only root and the daemon's own user may talk to it (the daemon checks
//! the peer's credentials), as only root may talk to IPVS.
//!
//! The vocabulary is ipvsadm's (services, dests, schedulers, forwarding methods), the error
//! texts are ipvsadm's (`libipvs`'s `ipvs_strerror` table) where ipvsadm has one, so `rvsadm`
//! can print them unchanged.
//!
//! This crate does not depend on the dataplane or the core: it is the stable shape of the
//! protocol, converted to and from `rvs-core` types by the daemon.

pub mod client;
mod frame;
mod types;

pub use frame::{FrameError, read_message, write_message};
pub use types::*;

/// Default name of the daemon's abstract control socket (`@rvsd` in `ss -x` listings).
pub const DEFAULT_SOCKET_NAME: &str = "rvsd";

/// Environment variable that overrides the control socket name for clients.
pub const SOCKET_ENV: &str = "RVSD_SOCKET";

/// Version of this protocol, reported by [`Request::Info`]; bumped on incompatible changes.
pub const PROTOCOL_VERSION: u32 = 1;

/// The IPVS interface version whose semantics the control plane implements (the
/// `IP_VS_VERSION_CODE` every Linux kernel since 2.6.28 reports), printed by `rvsadm -L` in the
/// "IP Virtual Server version" line so that scripts parsing it keep working.
pub const IPVS_VERSION: &str = "1.2.1";

/// Largest request the daemon reads, in bytes (a restore of a large rules file fits).
pub const MAX_REQUEST_BYTES: usize = 16 << 20;

/// Largest response a client reads, in bytes (a connection listing of a full table fits).
pub const MAX_RESPONSE_BYTES: usize = 1 << 30;

/// The socket name clients use: [`SOCKET_ENV`] if set and not empty, else
/// [`DEFAULT_SOCKET_NAME`].
pub fn socket_name() -> String {
    match std::env::var(SOCKET_ENV) {
        Ok(s) if !s.is_empty() => s,
        _ => DEFAULT_SOCKET_NAME.to_string(),
    }
}
