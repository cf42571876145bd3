//! How `rvsd` sits on a Linux host: the nftables table that claims from the host stack only
//! what the director owns ([`nft`]), and next hops from the kernel's routing and neighbour
//! tables over netlink ([`route`]).
//!
//! Nothing here touches packets on the forwarding path except [`nft::Claims::claims`], the
//! userspace twin of the nftables predicate, which reads frames without allocating and never
//! panics. Everything that talks to the kernel returns a typed [`HostError`].
#![allow(dead_code)]

pub(crate) mod nft;
pub(crate) mod route;

/// Errors of the host integration.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HostError {
    /// An nftables table name that is not 1 to 64 characters of `A-Za-z0-9_-` starting with a
    /// letter.
    #[error("invalid nftables table name {0:?}")]
    InvalidTableName(String),
    /// An interface name the kernel would not accept (1 to 15 bytes, no `/`, whitespace, quotes
    /// or control characters).
    #[error("invalid interface name {0:?}")]
    InvalidInterface(String),
    /// The table would be bound to no interface.
    #[error("no interface to bind the nftables chain to")]
    NoInterfaces,
    /// The `nft` program could not be run.
    #[error("cannot run nft: {0}")]
    NftSpawn(#[source] std::io::Error),
    /// `nft` rejected the script.
    #[error("nft failed ({status}): {stderr}")]
    NftFailed {
        /// Exit status as printed by the standard library.
        status: String,
        /// What nft wrote to standard error.
        stderr: String,
    },
    /// A netlink socket operation failed.
    #[error("netlink {op}: {source}")]
    Netlink {
        /// What was being done.
        op: &'static str,
        /// The system error.
        #[source]
        source: std::io::Error,
    },
    /// The kernel answered a netlink request with an error.
    #[error("netlink {op}: kernel answered {source}")]
    Kernel {
        /// The request.
        op: &'static str,
        /// The errno the kernel returned.
        #[source]
        source: std::io::Error,
    },
    /// The kernel did not answer a netlink request in time.
    #[error("netlink {0}: no answer from the kernel")]
    NoAnswer(&'static str),
    /// No interface has that name.
    #[error("no interface named {0:?}")]
    NoSuchInterface(String),
    /// The kernel's description of an interface lacks a field we need.
    #[error("interface {name:?}: {what}")]
    IncompleteInterface {
        /// The interface.
        name: String,
        /// What is missing.
        what: &'static str,
    },
}

/// Helpers for the tests that need root: labs (network namespaces) and threads inside them.
#[cfg(test)]
pub(crate) mod testns {
    use std::io::Write as _;

    use nix::sched::{CloneFlags, CpuSet, sched_setaffinity, setns};
    use nix::unistd::Pid;
    use rvs_lab::{Lab, LabError};

    /// A new lab, or `None` after a loud `SKIPPED` when the machine cannot host one (not
    /// root); under `RVS_E2E=1` that is a failure.
    pub(crate) fn lab_or_skip(test: &str) -> Option<Lab> {
        match Lab::new() {
            Ok(lab) => Some(lab),
            Err(e @ (LabError::NotRoot(_) | LabError::ToolMissing { .. })) => {
                if std::env::var("RVS_E2E").as_deref() == Ok("1") {
                    panic!("RVS_E2E=1 but {test} cannot run: {e}");
                }
                let _ = writeln!(std::io::stderr(), "SKIPPED: {test} needs root: {e}");
                None
            }
            Err(e) => panic!("Lab::new failed: {e}"),
        }
    }

    /// Runs `f` on a thread that has entered the network namespace `ns` (sockets it opens and
    /// programs it starts live there); a panic in `f` is re-raised here.
    pub(crate) fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            let h = s.spawn(|| {
                let file = std::fs::File::open(format!("/run/netns/{ns}"))
                    .unwrap_or_else(|e| panic!("open netns {ns}: {e}"));
                setns(&file, CloneFlags::CLONE_NEWNET)
                    .unwrap_or_else(|e| panic!("setns {ns}: {e}"));
                f()
            });
            match h.join() {
                Ok(v) => v,
                Err(p) => std::panic::resume_unwind(p),
            }
        })
    }

    /// Pins the calling thread to CPU 0, so the frames it sends through a veth are received in
    /// order (they all go through CPU 0's backlog).
    pub(crate) fn pin_cpu0() {
        let mut set = CpuSet::new();
        set.set(0).unwrap_or_else(|e| panic!("cpuset: {e}"));
        sched_setaffinity(Pid::from_raw(0), &set).unwrap_or_else(|e| panic!("affinity: {e}"));
    }
}
