//! The lab's error type.

use std::net::IpAddr;
use std::time::Duration;

/// Everything that can go wrong while building, using or removing a lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// The process is not root, or lacks `CAP_SYS_ADMIN`/`CAP_NET_ADMIN`. Tests skip on this.
    #[error("needs root (effective uid 0 with CAP_SYS_ADMIN and CAP_NET_ADMIN): {0}")]
    NotRoot(String),
    /// A required external tool (`ip` from iproute2, `sysctl`/`kill` from procps) is missing.
    #[error("required tool `{tool}` is not available: {detail}")]
    ToolMissing {
        /// The tool's name.
        tool: String,
        /// Why it was judged missing.
        detail: String,
    },
    /// A command could not be started or waited for.
    #[error("could not run `{cmd}`: {source}")]
    Io {
        /// The command line, for humans.
        cmd: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A command exited unsuccessfully.
    #[error("`{cmd}` failed ({status}): {stderr}")]
    CommandFailed {
        /// The command line, for humans.
        cmd: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// Its standard error, trimmed.
        stderr: String,
    },
    /// A command did not finish in time and was killed.
    #[error("`{cmd}` did not finish within {after:?} and was killed")]
    Timeout {
        /// The command line, for humans.
        cmd: String,
        /// The time limit that was exceeded.
        after: Duration,
    },
    /// A host name is empty, too long, badly formed or already used in this lab.
    #[error("invalid host name {0:?}: 1 to 12 characters of a-z, 0-9 and '-', unique per lab")]
    InvalidName(String),
    /// A [`HostId`](crate::HostId) that does not belong to this lab (the index is given).
    #[error("host id {0} does not belong to this lab")]
    UnknownHost(usize),
    /// An address or prefix outside the documentation ranges (192.0.2.0/24, 198.51.100.0/24,
    /// 203.0.113.0/24, 2001:db8::/32), which the lab refuses to configure.
    #[error("{addr}/{prefix} is not inside a documentation range")]
    NotDocumentation {
        /// The address.
        addr: IpAddr,
        /// The prefix length.
        prefix: u8,
    },
    /// A textual prefix such as `192.0.2.1/24` that does not parse.
    #[error("invalid prefix {0:?}")]
    InvalidPrefix(String),
    /// A sysctl key or value that is empty or contains characters the lab does not pass on.
    #[error("invalid sysctl {0:?}")]
    InvalidSysctl(String),
    /// Options of a topology that cannot be built (e.g. an MTU below IPv6's minimum of 1280).
    #[error("invalid lab options: {0}")]
    InvalidOptions(String),
    /// A route whose gateway is of the other address family than its destination.
    #[error("address family mismatch between {0} and {1}")]
    FamilyMismatch(IpAddr, IpAddr),
}

/// Result alias for the lab.
pub type Result<T, E = LabError> = std::result::Result<T, E>;
