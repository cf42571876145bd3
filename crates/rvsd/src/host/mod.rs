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
