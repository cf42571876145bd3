//! `rvs-lab` — builds and tears down network-namespace topologies (client, routers with chosen
//! MTUs, director, real servers) for the demo and the end-to-end tests.
//!
//! A [`Lab`] creates network namespaces ("hosts") named `rvs-<pid>-<counter>-<host>` and joins
//! them with veth pairs created directly inside those namespaces, by shelling out to `ip`
//! (iproute2) and `sysctl`/`kill` (procps) without a shell. Only documentation address ranges
//! can be configured ([`IpNet`]), only inside the lab's own namespaces. Everything is removed
//! when the lab is dropped (also while a panic unwinds), and [`Lab::new`] first removes what a
//! crashed run left behind.
//!
//! On top of it:
//! - [`DirectorLab`]: the standard dual-stack director topology (client, two routers, a LAN
//!   bridge with the director and three dests) configured for NAT, DR or TUN ([`Mode`]);
//! - [`DestServers`]: the real servers (HTTP, TCP and UDP echo), run as threads whose sockets
//!   live in a dest's namespace ([`Netns`]);
//! - [`Client`]: client operations with typed results (HTTP GET, download, upload, UDP
//!   request, long-lived TCP sessions);
//! - [`Decapsulator`]: the user-space IP-in-IP / IPv6-in-IPv6 decapsulator of TUN-mode dests on
//!   kernels without tunnel modules (also `rvs-lab decap`).
//!
//! ```no_run
//! # fn main() -> rvs_lab::Result<()> {
//! use std::time::Duration;
//! use rvs_lab::{DirectorLab, DirectorLabOpts, Family, Mode};
//! let lab = DirectorLab::new(DirectorLabOpts { mode: Mode::Dr, ..DirectorLabOpts::default() })?;
//! let rip = lab.addrs().dests[0].get(Family::V4);
//! let reply = lab.client()?.http_get(rip, 80, "/", Duration::from_secs(5));
//! # Ok(()) }
//! ```

mod client;
mod decap;
mod error;
mod http;
mod lab;
mod net;
mod netns;
mod run;
mod servers;
mod topology;

pub use client::{Client, ClientError, HttpReply, TcpSession, Transfer};
pub use decap::{
    DecapConfig, DecapError, DecapStats, Decapsulator, decapsulate_ipv4, decapsulate_ipv6,
};
pub use error::{LabError, Result};
pub use lab::{EXEC_TIMEOUT, HostId, Lab, LabChild, Link, LinkOpts, remove_stale};
pub use net::{IpNet, is_documentation, is_documentation_addr};
pub use netns::Netns;
pub use servers::{DestServers, ServerPorts, ServerStats};
pub use topology::{
    Addrs, Decap, DirectorLab, DirectorLabOpts, DualAddr, Family, Hosts, Ifaces, Mode,
};

/// For tests: the lab (or anything built with one) if the machine can host it; `None` after a
/// loud `SKIPPED: ...` on standard error when it cannot (not root, `ip` missing). Under
/// `RVS_E2E=1` such a skip panics instead, and so does any other error, always.
#[allow(clippy::panic)]
pub fn or_skip<T>(r: Result<T>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e @ (LabError::NotRoot(_) | LabError::ToolMissing { .. })) => {
            if std::env::var("RVS_E2E").as_deref() == Ok("1") {
                panic!("RVS_E2E=1 but the lab cannot be built: {e}");
            }
            // Straight to the process's stderr, past libtest's capture, so the skip is visible.
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "SKIPPED: needs root: {e}");
            None
        }
        Err(e) => panic!("building the lab failed: {e}"),
    }
}
