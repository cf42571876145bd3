//! The protocol's types: requests, replies, errors, and the service/dest/connection records they
//! carry.

use core::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use serde::{Deserialize, Serialize};

/// Transport protocol of a virtual service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP (`-t`).
    Tcp,
    /// UDP (`-u`).
    Udp,
}

impl Protocol {
    /// The name ipvsadm prints in listings: "TCP", "UDP".
    pub const fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        }
    }

    /// The ipvsadm option that names a service of this protocol: "-t", "-u".
    pub const fn option(self) -> &'static str {
        match self {
            Protocol::Tcp => "-t",
            Protocol::Udp => "-u",
        }
    }

    /// The IP protocol number (6, 17).
    pub const fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
        }
    }
}

/// A virtual service's key: protocol, virtual address, virtual port (0 = every port).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ServiceAddr {
    /// TCP or UDP.
    pub protocol: Protocol,
    /// Virtual address (VIP).
    pub addr: IpAddr,
    /// Virtual port; 0 = every port (needs persistence).
    pub port: u16,
}

impl ServiceAddr {
    /// The VIP and port as a socket address (IPv6 in brackets when displayed).
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.addr, self.port)
    }
}

impl fmt::Display for ServiceAddr {
    /// `tcp/203.0.113.10:80`, `udp/[2001:db8::10]:53` (the config file's service names).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = match self.protocol {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        };
        write!(f, "{p}/{}", self.socket_addr())
    }
}

/// How packets reach a dest.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum FwdMethod {
    /// NAT (`-m`, "Masq").
    Masq,
    /// Direct routing (`-g`, "Route"), ipvsadm's default.
    #[default]
    Route,
    /// IP-in-IP / IPv6-in-IPv6 tunnel (`-i`, "Tunnel").
    Tunnel,
}

impl FwdMethod {
    /// The name ipvsadm prints in the Forward column: "Masq", "Route", "Tunnel".
    pub const fn name(self) -> &'static str {
        match self {
            FwdMethod::Masq => "Masq",
            FwdMethod::Route => "Route",
            FwdMethod::Tunnel => "Tunnel",
        }
    }

    /// The ipvsadm option: "-m", "-g", "-i".
    pub const fn option(self) -> &'static str {
        match self {
            FwdMethod::Masq => "-m",
            FwdMethod::Route => "-g",
            FwdMethod::Tunnel => "-i",
        }
    }
}

/// Scheduler flags (`-b`): the two bits RVS's hashing schedulers use. `sh-fallback` /
/// `mh-fallback` / `flag-1` set `fallback`; `sh-port` / `mh-port` / `flag-2` set `port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct SchedFlags {
    /// Try the next dest when the hashed one is unusable.
    #[serde(default)]
    pub fallback: bool,
    /// Hash the source port too.
    #[serde(default)]
    pub port: bool,
}

impl SchedFlags {
    /// True when no flag is set.
    pub const fn is_empty(self) -> bool {
        !self.fallback && !self.port
    }

    /// The flags as ipvsadm prints them for `scheduler`: `sh-fallback,sh-port` for `sh`,
    /// `mh-…` for `mh`, `flag-1,flag-2` for the others; empty when no flag is set.
    pub fn text(self, scheduler: &str) -> String {
        let (fallback, port) = match scheduler {
            "sh" => ("sh-fallback", "sh-port"),
            "mh" => ("mh-fallback", "mh-port"),
            _ => ("flag-1", "flag-2"),
        };
        let mut v = Vec::new();
        if self.fallback {
            v.push(fallback);
        }
        if self.port {
            v.push(port);
        }
        v.join(",")
    }
}

/// Persistence granularity (`-M`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Netmask {
    /// IPv4 services: a dotted mask.
    V4(Ipv4Addr),
    /// IPv6 services: a prefix length 1..=128.
    V6(u8),
}

impl Netmask {
    /// The one-host mask of `addr`'s family (/32 or /128), the default.
    pub const fn host(addr: IpAddr) -> Netmask {
        match addr {
            IpAddr::V4(_) => Netmask::V4(Ipv4Addr::BROADCAST),
            IpAddr::V6(_) => Netmask::V6(128),
        }
    }

    /// True for the one-host mask, which ipvsadm does not print.
    pub fn is_host(self) -> bool {
        matches!(self, Netmask::V4(m) if m == Ipv4Addr::BROADCAST) || self == Netmask::V6(128)
    }
}

impl fmt::Display for Netmask {
    /// As ipvsadm prints it: dotted for IPv4, the prefix length for IPv6.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Netmask::V4(m) => write!(f, "{m}"),
            Netmask::V6(len) => write!(f, "{len}"),
        }
    }
}

/// A virtual service as `-A`/`-E` describe it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ServiceConfig {
    /// Protocol, VIP and port.
    pub service: ServiceAddr,
    /// Scheduler name as ipvsadm spells it (`rr`, `wlc`, ...); the daemon refuses unknown ones
    /// with [`ApiError::SchedulerNotFound`], as the kernel does.
    pub scheduler: String,
    /// Scheduler flags (`-b`).
    #[serde(default)]
    pub sched_flags: SchedFlags,
    /// Persistence timeout in seconds (`-p`); `None` = not persistent.
    #[serde(default)]
    pub persistence: Option<u32>,
    /// Persistence granularity (`-M`); `None` = one host (/32, /128).
    #[serde(default)]
    pub netmask: Option<Netmask>,
}

impl ServiceConfig {
    /// A service with ipvsadm's defaults: `wlc`, no flags, not persistent, host netmask.
    pub fn new(service: ServiceAddr) -> ServiceConfig {
        ServiceConfig {
            service,
            scheduler: "wlc".to_string(),
            sched_flags: SchedFlags::default(),
            persistence: None,
            netmask: None,
        }
    }
}

/// A real server as `-a`/`-e` describe it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DestConfig {
    /// Real server address (RIP).
    pub addr: IpAddr,
    /// Real server port. For `Route` and `Tunnel` the daemon uses the virtual port whatever is
    /// given, as ipvsadm does.
    pub port: u16,
    /// Forwarding method (default `Route`).
    #[serde(default)]
    pub fwd: FwdMethod,
    /// Weight 0..=65535 (default 1); 0 = quiescent.
    pub weight: u32,
    /// Upper connection threshold (`-x`); 0 = none.
    #[serde(default)]
    pub u_threshold: u32,
    /// Lower connection threshold (`-y`); 0 = three quarters of the upper one.
    #[serde(default)]
    pub l_threshold: u32,
}

impl DestConfig {
    /// A dest with ipvsadm's defaults: direct routing, weight 1, no thresholds.
    pub fn new(addr: IpAddr, port: u16) -> DestConfig {
        DestConfig {
            addr,
            port,
            fwd: FwdMethod::Route,
            weight: 1,
            u_threshold: 0,
            l_threshold: 0,
        }
    }
}

/// Counters as `ipvsadm --stats` shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Stats {
    /// Connections scheduled.
    pub conns: u64,
    /// Packets from clients.
    pub inpkts: u64,
    /// Packets from dests (NAT).
    pub outpkts: u64,
    /// Bytes from clients.
    pub inbytes: u64,
    /// Bytes from dests (NAT).
    pub outbytes: u64,
}

/// Rates per second as `ipvsadm --rate` shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Rates {
    /// Connections per second.
    pub cps: u64,
    /// Packets per second from clients.
    pub inpps: u64,
    /// Packets per second from dests.
    pub outpps: u64,
    /// Bytes per second from clients.
    pub inbps: u64,
    /// Bytes per second from dests.
    pub outbps: u64,
}

/// A dest in a listing: its configuration, connection counts and statistics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestEntry {
    /// Its configuration.
    pub config: DestConfig,
    /// Connections counted active (IPVS's ActiveConn).
    pub active_conns: u32,
    /// Connections counted inactive (InActConn).
    pub inactive_conns: u32,
    /// Persistence templates pointing at it (PersistConn).
    pub persist_conns: u32,
    /// Over its upper threshold: no new connections.
    pub overloaded: bool,
    /// Counters.
    pub stats: Stats,
    /// Rate estimates.
    pub rates: Rates,
}

/// A service in a listing, with its dests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceEntry {
    /// Its configuration.
    pub config: ServiceConfig,
    /// Its live dests.
    pub dests: Vec<DestEntry>,
    /// Counters.
    pub stats: Stats,
    /// Rate estimates.
    pub rates: Rates,
}

/// The answer to [`Request::ListServices`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceList {
    /// The connection table's bound (`conn_tab_max`), printed as ipvsadm's `size=`.
    pub conn_tab_size: u64,
    /// The services, in the daemon's order (`rvsadm` sorts them as ipvsadm does).
    pub services: Vec<ServiceEntry>,
}

/// One entry of the connection table (`ipvsadm -L -c`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnEntry {
    /// Protocol.
    pub protocol: Protocol,
    /// State as IPVS names it ("ESTABLISHED", "SYN_RECV", "UDP", "NONE" for templates).
    pub state: String,
    /// Seconds until it expires.
    pub expires_secs: u64,
    /// Client address.
    pub caddr: IpAddr,
    /// Client port (0 for persistence templates).
    pub cport: u16,
    /// Virtual address.
    pub vaddr: IpAddr,
    /// Virtual port.
    pub vport: u16,
    /// Dest address.
    pub daddr: IpAddr,
    /// Dest port.
    pub dport: u16,
    /// Forwarding method.
    pub fwd: FwdMethod,
    /// A persistence template rather than a connection.
    pub template: bool,
}

/// The three timeouts of `ipvsadm --set tcp tcpfin udp` / `--timeout`, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeouts {
    /// Established TCP.
    pub tcp: u32,
    /// TCP after a FIN.
    pub tcpfin: u32,
    /// UDP.
    pub udp: u32,
}

/// What [`Request::Info`] returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonInfo {
    /// The daemon's version (`rvsd` crate version).
    pub version: String,
    /// [`crate::PROTOCOL_VERSION`] of the daemon.
    pub protocol_version: u32,
    /// Interfaces the daemon's workers are attached to (empty in control-only mode).
    pub interfaces: Vec<String>,
    /// Worker threads.
    pub workers: u32,
    /// Seconds since the daemon started.
    pub uptime_secs: u64,
    /// The connection table's bound.
    pub conn_tab_max: u64,
}

/// A counter with a stable name (drop reasons).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedCount {
    /// The stable name (a metrics label).
    pub name: String,
    /// The count.
    pub count: u64,
}

/// One ICMP counter: messages of a family, type and code that met an outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IcmpCount {
    /// ICMPv6 rather than ICMPv4.
    pub v6: bool,
    /// ICMP type.
    pub icmp_type: u8,
    /// ICMP code.
    pub code: u8,
    /// What happened ("received", "forwarded_masq", "local", "generated", "suppressed",
    /// "dropped", ...).
    pub outcome: String,
    /// The drop reason when `outcome` is "dropped".
    #[serde(default)]
    pub reason: Option<String>,
    /// Messages.
    pub count: u64,
}

/// Connection-table occupancy and events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ConnTableCounters {
    /// Entries now (connections and templates).
    pub entries: u64,
    /// The bound (`conn_tab_max`).
    pub max: u64,
    /// Heap bytes the table holds.
    pub memory_bytes: u64,
    /// Entries inserted.
    pub inserted: u64,
    /// Inserts refused because the table was full.
    pub refused_full: u64,
    /// Entries evicted to make room.
    pub evicted: u64,
    /// Entries expired.
    pub expired: u64,
    /// Entries removed otherwise.
    pub removed: u64,
}

/// Director-wide events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DirectorCounters {
    /// New connections refused: no usable dest.
    pub no_dest: u64,
    /// New connections refused: table full.
    pub table_full: u64,
    /// Connections evicted to make room.
    pub evicted: u64,
    /// Connections expired.
    pub expired: u64,
    /// Packets dropped because their connection's dest was deleted.
    pub dest_unavailable: u64,
}

/// Fragment buffer counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FragCounters {
    /// Fragments stored.
    pub held: u64,
    /// Stored fragments handed back.
    pub released: u64,
    /// Stored fragments dropped on timeout.
    pub expired: u64,
    /// Fragments refused or dropped at a limit.
    pub overflow: u64,
    /// Datagrams reassembled.
    pub reassembled: u64,
    /// Fragments refused or dropped as bad.
    pub bad: u64,
}

/// Everything [`Request::Counters`] returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Frames processed.
    pub rx: u64,
    /// Frames transmitted.
    pub forwarded: u64,
    /// Packets the director generated (RST, ICMP).
    pub generated: u64,
    /// Frames handed to the host stack.
    pub local: u64,
    /// Fragments held.
    pub held: u64,
    /// Drops by reason, every reason in the dataplane's order (zeros included).
    pub drops: Vec<NamedCount>,
    /// Non-zero ICMP counters.
    pub icmp: Vec<IcmpCount>,
    /// The connection table.
    pub conn_table: ConnTableCounters,
    /// Director-wide events.
    pub director: DirectorCounters,
    /// Fragment tracker (DR/TUN).
    pub frag_tracker: FragCounters,
    /// Fragment reassembler (NAT).
    pub frag_reassembler: FragCounters,
    /// The daemon's packet I/O (frames read, claimed or not, GSO super-packets split,
    /// transmitted, handed to the host through the TAP, next hops unresolved...); empty when no
    /// interfaces are attached.
    #[serde(default)]
    pub io: Vec<NamedCount>,
    /// Per worker thread, in worker order; empty when no interfaces are attached.
    #[serde(default)]
    pub workers: Vec<WorkerCounters>,
}

/// What one worker thread handled (which flows a worker gets is the kernel's fanout hash).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerCounters {
    /// Frames it ran through the dataplane.
    pub frames: u64,
    /// TCP SYNs among them (new connections are created by the worker that gets the SYN).
    pub tcp_syn: u64,
    /// ICMP and ICMPv6 error messages among them.
    pub icmp_errors: u64,
}

/// A director setting and its value, as the config file spells them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Setting {
    /// The name (`expire_nodest_conn`, `timeout_tcp`, ...).
    pub name: String,
    /// The value as text.
    pub value: String,
}

/// Every control action. Each variant says when it is allowed; every request needs a peer that
/// is root or the daemon's user ([`ApiError::PermissionDenied`] otherwise).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    /// Daemon version, protocol version, interfaces, workers, uptime. Always allowed.
    Info,
    /// `-A`: add a service. Allowed when no service has this key; bumps the rules generation.
    AddService(ServiceConfig),
    /// `-E`: replace a service's scheduler, flags, persistence and netmask. Allowed when the
    /// service exists ([`ApiError::NoSuchService`] otherwise).
    EditService(ServiceConfig),
    /// `-D`: delete a service and its dests (their connections run out quiescent). Allowed when
    /// the service exists ([`ApiError::NoSuchService`] otherwise).
    DeleteService(ServiceAddr),
    /// `-a`: add a dest. Allowed when the service exists ([`ApiError::ServiceNotDefined`]) and
    /// the dest does not ([`ApiError::DestExists`]).
    AddDest {
        /// The service.
        service: ServiceAddr,
        /// The dest.
        dest: DestConfig,
    },
    /// `-e`: change a dest's method, weight and thresholds. Allowed when service and dest exist.
    EditDest {
        /// The service.
        service: ServiceAddr,
        /// The dest (found by address and port).
        dest: DestConfig,
    },
    /// `-d`: delete a dest (its connections run out quiescent, or are expired with
    /// `expire_nodest_conn`). Allowed when service and dest exist.
    DeleteDest {
        /// The service.
        service: ServiceAddr,
        /// Dest address.
        addr: IpAddr,
        /// Dest port (the virtual port for DR/TUN dests).
        port: u16,
    },
    /// `-C`: delete every service. Always allowed.
    Clear,
    /// `-Z`: zero the statistics of one service, or of all. Allowed when the service, if given,
    /// exists ([`ApiError::NoSuchService`]).
    Zero {
        /// The service, or `None` for all.
        service: Option<ServiceAddr>,
    },
    /// `-L`: services with dests, counts, statistics and rates. Always allowed; with a service,
    /// only that one ([`ApiError::NoSuchService`] if it does not exist).
    ListServices {
        /// One service, or `None` for all.
        service: Option<ServiceAddr>,
    },
    /// `-L -c`: every connection and persistence template. Always allowed.
    ListConnections,
    /// `-L --timeout`. Always allowed.
    GetTimeouts,
    /// `--set tcp tcpfin udp`: a value of 0 leaves that timeout unchanged (as in IPVS); others
    /// are 1..=2678400 s. Applies to state changes from now on.
    SetTimeouts(Timeouts),
    /// `-S`: the rules in the ipvsadm-save format. Always allowed.
    Save,
    /// `-R`: apply rules in the ipvsadm-save format, all or nothing: if any line does not parse
    /// or would fail, nothing changes ([`ApiError::Restore`] names the line).
    Restore {
        /// The rules text.
        rules: String,
    },
    /// `rvsadm --counters` (RVS extension): dataplane, ICMP, connection-table and fragment
    /// counters. Always allowed.
    Counters,
    /// `rvsadm --setting NAME` (RVS extension): one director setting, or all when `name` is
    /// `None`. Always allowed.
    GetSetting {
        /// The setting's name, or `None` for every setting.
        name: Option<String>,
    },
    /// `rvsadm --setting NAME=VALUE` (RVS extension): change a director setting at run time.
    /// Allowed for every setting except `hash_seed` (fixed while the table exists); the value
    /// is validated first ([`ApiError::Setting`]).
    SetSetting {
        /// The setting's name.
        name: String,
        /// Its new value, as the config file would spell it.
        value: String,
    },
}

/// What a successful request returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// The change was made.
    Done,
    /// [`Request::Info`].
    Info(DaemonInfo),
    /// [`Request::ListServices`].
    Services(ServiceList),
    /// [`Request::ListConnections`].
    Connections(Vec<ConnEntry>),
    /// [`Request::GetTimeouts`].
    Timeouts(Timeouts),
    /// [`Request::Save`]: the rules text, one command per line.
    Rules(String),
    /// [`Request::Counters`].
    Counters(Box<Counters>),
    /// [`Request::GetSetting`].
    Settings(Vec<Setting>),
}

/// A response: the reply, or why the request was refused.
pub type Response = Result<Reply, ApiError>;

/// Why a request was refused. The messages of the variants ipvsadm knows are ipvsadm's, word
/// for word.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApiError {
    /// `-A` for an existing service.
    #[error("Service already exists")]
    ServiceExists,
    /// `-E`, `-D`, `-Z`, `-L` for a service that does not exist.
    #[error("No such service")]
    NoSuchService,
    /// `-a`, `-e`, `-d` on a service that does not exist.
    #[error("Service not defined")]
    ServiceNotDefined,
    /// `-a` for an existing dest.
    #[error("Destination already exists")]
    DestExists,
    /// `-e`, `-d` for a dest that does not exist.
    #[error("No such destination")]
    NoSuchDest,
    /// `-A`/`-E` with a scheduler the director does not have.
    #[error("Scheduler or persistence engine not found")]
    SchedulerNotFound,
    /// A dest of another address family than its service (RVS tunnels are IP-in-IP and
    /// IPv6-in-IPv6 only).
    #[error("Operation not supported with specified address family")]
    AddressFamily,
    /// A value the director refuses; the text says which and why.
    #[error("{0}")]
    Invalid(String),
    /// A setting that does not exist, a value it does not take, or one that cannot change at
    /// run time.
    #[error("{0}")]
    Setting(String),
    /// [`Request::Restore`] refused: nothing was changed.
    #[error("line {line}: {message}")]
    Restore {
        /// 1-based line of the rules text.
        line: usize,
        /// What is wrong with it.
        message: String,
        /// The line is malformed (does not parse or holds an invalid value), as opposed to
        /// refused by the director (a service that does not exist, ...).
        #[serde(default)]
        syntax: bool,
    },
    /// The peer is neither root nor the daemon's user.
    #[error("Permission denied (you must be root)")]
    PermissionDenied,
    /// The request was not valid JSON for this protocol, or too large.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// Too many clients at once; try again.
    #[error("the daemon is busy (too many control connections), try again")]
    Busy,
    /// The daemon failed in a way that is not the request's fault.
    #[error("internal error: {0}")]
    Internal(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn svc() -> ServiceAddr {
        ServiceAddr {
            protocol: Protocol::Tcp,
            addr: v4("203.0.113.10"),
            port: 80,
        }
    }

    fn round_trip<T>(v: &T)
    where
        T: Serialize + for<'de> Deserialize<'de> + PartialEq + fmt::Debug,
    {
        let text = serde_json::to_string(v).unwrap();
        assert!(!text.contains('\n'));
        let back: T = serde_json::from_str(&text).unwrap();
        assert_eq!(&back, v, "{text}");
    }

    fn every_request() -> Vec<Request> {
        let v6 = ServiceAddr {
            protocol: Protocol::Udp,
            addr: "2001:db8::10".parse().unwrap(),
            port: 53,
        };
        let cfg = ServiceConfig {
            service: v6,
            scheduler: "sh".into(),
            sched_flags: SchedFlags {
                fallback: true,
                port: true,
            },
            persistence: Some(600),
            netmask: Some(Netmask::V6(64)),
        };
        let mut cfg4 = ServiceConfig::new(svc());
        cfg4.netmask = Some(Netmask::V4("255.255.255.0".parse().unwrap()));
        let dest = DestConfig {
            fwd: FwdMethod::Masq,
            weight: 3,
            u_threshold: 100,
            l_threshold: 50,
            ..DestConfig::new(v4("198.51.100.11"), 8080)
        };
        vec![
            Request::Info,
            Request::AddService(cfg.clone()),
            Request::EditService(cfg4),
            Request::DeleteService(svc()),
            Request::AddDest {
                service: svc(),
                dest,
            },
            Request::EditDest {
                service: svc(),
                dest: DestConfig::new(v4("198.51.100.12"), 80),
            },
            Request::DeleteDest {
                service: svc(),
                addr: v4("198.51.100.11"),
                port: 8080,
            },
            Request::Clear,
            Request::Zero { service: None },
            Request::Zero {
                service: Some(v6),
            },
            Request::ListServices { service: None },
            Request::ListConnections,
            Request::GetTimeouts,
            Request::SetTimeouts(Timeouts {
                tcp: 900,
                tcpfin: 0,
                udp: 300,
            }),
            Request::Save,
            Request::Restore {
                rules: "-A -t 203.0.113.10:80 -s rr\n-a -t 203.0.113.10:80 -r 198.51.100.11:80 -g -w 1\n"
                    .into(),
            },
            Request::Counters,
            Request::GetSetting { name: None },
            Request::GetSetting {
                name: Some("timeout_tcp".into()),
            },
            Request::SetSetting {
                name: "expire_nodest_conn".into(),
                value: "1".into(),
            },
        ]
    }

    #[test]
    fn requests_round_trip() {
        for r in every_request() {
            round_trip(&r);
        }
    }

    #[test]
    fn replies_round_trip() {
        let dest = DestEntry {
            config: DestConfig::new(v4("198.51.100.11"), 80),
            active_conns: 1,
            inactive_conns: 2,
            persist_conns: 3,
            overloaded: false,
            stats: Stats {
                conns: 1,
                inpkts: 2,
                outpkts: 3,
                inbytes: 4,
                outbytes: u64::MAX,
            },
            rates: Rates {
                cps: 1,
                inpps: 2,
                outpps: 3,
                inbps: 4,
                outbps: 5,
            },
        };
        let replies: Vec<Response> = vec![
            Ok(Reply::Done),
            Ok(Reply::Info(DaemonInfo {
                version: "0.1.0".into(),
                protocol_version: crate::PROTOCOL_VERSION,
                interfaces: vec!["eth0".into()],
                workers: 2,
                uptime_secs: 5,
                conn_tab_max: 1 << 20,
            })),
            Ok(Reply::Services(ServiceList {
                conn_tab_size: 4096,
                services: vec![ServiceEntry {
                    config: ServiceConfig::new(svc()),
                    dests: vec![dest],
                    stats: Stats::default(),
                    rates: Rates::default(),
                }],
            })),
            Ok(Reply::Connections(vec![ConnEntry {
                protocol: Protocol::Tcp,
                state: "ESTABLISHED".into(),
                expires_secs: 899,
                caddr: v4("192.0.2.1"),
                cport: 40000,
                vaddr: v4("203.0.113.10"),
                vport: 80,
                daddr: v4("198.51.100.11"),
                dport: 80,
                fwd: FwdMethod::Route,
                template: false,
            }])),
            Ok(Reply::Timeouts(Timeouts {
                tcp: 900,
                tcpfin: 120,
                udp: 300,
            })),
            Ok(Reply::Rules("-A -t 203.0.113.10:80 -s wlc\n".into())),
            Ok(Reply::Counters(Box::new(Counters {
                rx: 1,
                forwarded: 2,
                generated: 3,
                local: 4,
                held: 5,
                drops: vec![NamedCount {
                    name: "malformed".into(),
                    count: 6,
                }],
                icmp: vec![IcmpCount {
                    v6: false,
                    icmp_type: 3,
                    code: 4,
                    outcome: "dropped".into(),
                    reason: Some("icmp_bad_checksum".into()),
                    count: 7,
                }],
                conn_table: ConnTableCounters {
                    entries: 8,
                    max: 9,
                    ..Default::default()
                },
                director: DirectorCounters::default(),
                frag_tracker: FragCounters::default(),
                frag_reassembler: FragCounters {
                    reassembled: 10,
                    ..Default::default()
                },
                io: vec![NamedCount {
                    name: "rx_frames".into(),
                    count: 12,
                }],
                workers: vec![WorkerCounters {
                    frames: 12,
                    tcp_syn: 3,
                    icmp_errors: 1,
                }],
            }))),
            Ok(Reply::Settings(vec![Setting {
                name: "timeout_tcp".into(),
                value: "900".into(),
            }])),
            Err(ApiError::ServiceExists),
            Err(ApiError::NoSuchService),
            Err(ApiError::ServiceNotDefined),
            Err(ApiError::DestExists),
            Err(ApiError::NoSuchDest),
            Err(ApiError::SchedulerNotFound),
            Err(ApiError::AddressFamily),
            Err(ApiError::Invalid("weight out of range".into())),
            Err(ApiError::Setting("unknown setting".into())),
            Err(ApiError::Restore {
                line: 3,
                message: "Service not defined".into(),
                syntax: false,
            }),
            Err(ApiError::PermissionDenied),
            Err(ApiError::BadRequest("x".into())),
            Err(ApiError::Busy),
            Err(ApiError::Internal("y".into())),
        ];
        for r in &replies {
            round_trip(r);
        }
    }

    #[test]
    fn error_texts_are_ipvsadms() {
        assert_eq!(
            ApiError::ServiceNotDefined.to_string(),
            "Service not defined"
        );
        assert_eq!(
            ApiError::DestExists.to_string(),
            "Destination already exists"
        );
        assert_eq!(ApiError::NoSuchDest.to_string(), "No such destination");
        assert_eq!(ApiError::NoSuchService.to_string(), "No such service");
        assert_eq!(
            ApiError::ServiceExists.to_string(),
            "Service already exists"
        );
        assert_eq!(
            ApiError::PermissionDenied.to_string(),
            "Permission denied (you must be root)"
        );
    }

    #[test]
    fn wire_shape_is_stable() {
        // The JSON spelling is the protocol: pin a few documents.
        assert_eq!(
            serde_json::to_string(&Request::Clear).unwrap(),
            r#""clear""#
        );
        assert_eq!(
            serde_json::to_string(&Request::DeleteService(svc())).unwrap(),
            r#"{"delete_service":{"protocol":"tcp","addr":"203.0.113.10","port":80}}"#
        );
        let ok: Response = Ok(Reply::Done);
        assert_eq!(serde_json::to_string(&ok).unwrap(), r#"{"Ok":"done"}"#);
        let err: Response = Err(ApiError::NoSuchDest);
        assert_eq!(
            serde_json::to_string(&err).unwrap(),
            r#"{"Err":"no_such_dest"}"#
        );
        // Defaults: a minimal add_service from a hand-written client.
        let r: Request = serde_json::from_str(
            r#"{"add_service":{"service":{"protocol":"udp","addr":"2001:db8::1","port":53},"scheduler":"rr"}}"#,
        )
        .unwrap();
        let Request::AddService(c) = r else {
            panic!("not add_service")
        };
        assert_eq!(
            (c.persistence, c.netmask, c.sched_flags),
            (None, None, SchedFlags::default())
        );
    }

    #[test]
    fn sched_flag_text_follows_scheduler() {
        let f = SchedFlags {
            fallback: true,
            port: true,
        };
        assert_eq!(f.text("sh"), "sh-fallback,sh-port");
        assert_eq!(f.text("mh"), "mh-fallback,mh-port");
        assert_eq!(f.text("wlc"), "flag-1,flag-2");
        assert_eq!(SchedFlags::default().text("sh"), "");
    }
}
