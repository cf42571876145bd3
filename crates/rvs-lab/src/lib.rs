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
//! ```no_run
//! # fn main() -> rvs_lab::Result<()> {
//! use rvs_lab::{Lab, LinkOpts};
//! let lab = Lab::new()?;
//! let a = lab.host("a")?;
//! let b = lab.host("b")?;
//! lab.link(a, b, &LinkOpts {
//!     addrs_a: vec!["192.0.2.1/24".parse()?],
//!     addrs_b: vec!["192.0.2.2/24".parse()?],
//!     ..LinkOpts::default()
//! })?;
//! lab.exec(a, &["ip", "addr"])?;
//! # Ok(()) }
//! ```

mod error;
mod lab;
mod net;
mod run;

pub use error::{LabError, Result};
pub use lab::{EXEC_TIMEOUT, HostId, Lab, LabChild, Link, LinkOpts, remove_stale};
pub use net::{IpNet, is_documentation, is_documentation_addr};
