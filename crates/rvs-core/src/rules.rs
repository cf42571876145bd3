//! The ipvsadm-save rules format: what `ipvsadm-save -n` / `ipvsadm -S -n` prints and
//! `ipvsadm-restore` / `ipvsadm -R` reads, one command per line:
//!
//! ```text
//! -A -t 203.0.113.10:80 -s rr
//! -a -t 203.0.113.10:80 -r 198.51.100.11:80 -g -w 1
//! -A -u [2001:db8::10]:53 -s wlc -p 600 -M 64
//! -a -u [2001:db8::10]:53 -r [2001:db8:1::11]:53 -m -w 3 -x 100 -y 50
//! -A -t 203.0.113.10:0 -s sh -p 300 -b sh-fallback,sh-port
//! ```
//!
//! [`parse_line`] reads one line (short and long option spellings, `--long=value`, `-wVALUE`,
//! options in any order), [`parse_rules`] a whole file, and [`Rule::to_save_line`] prints a rule
//! exactly as `ipvsadm-save -n` does (short options, ipvsadm's order), so `parse → print → parse`
//! is the identity on every rule the parser returns.
//!
//! Decisions, each matching ipvsadm (`ipvsadm.c`) or IPVS (`ip_vs_ctl.c`) unless said otherwise:
//!
//! - Defaults: scheduler `wlc`, forwarding `-g`, weight 1, persistence timeout 300 s when `-p` has
//!   no value, netmask /32 (`255.255.255.255`) or /128.
//! - `-r ADDR` without a port takes the virtual port. For DR (`-g`) and TUN (`-i`) the real
//!   port is *always* the virtual port: ipvsadm overwrites whatever port was given before it
//!   talks to the kernel, so `ipvsadm-save` only ever prints `RIP:VPORT` for them. We do the
//!   same, silently, so every file ipvsadm restores restores here too.
//! - Real port 0 is only accepted for port-0 (all ports) services: a NAT dest at port 0 behind
//!   a single-port service would rewrite the destination port to 0 (stricter than ipvsadm).
//! - Service port 0 requires persistence (`-p`), as ipvsadm and IPVS require.
//! - Mixed address families (IPv4 dest behind an IPv6 VIP or the reverse) are rejected for
//!   every method. IPVS allows them for tunnelling only (IPv4-in-IPv6 / IPv6-in-IPv4); RVS's
//!   tunnel method is IP-in-IP and IPv6-in-IPv6 (DESIGN.md), so we refuse rather than accept a
//!   rule the dataplane cannot honour.
//! - Netmask (`-M`): IPv4 services take a dotted mask (any dotted quad, as `inet_aton` accepts
//!   it; a bare number such as `24` is refused because ipvsadm would silently read it as
//!   `0.0.0.24`); IPv6 services take a prefix length 1..=128. `-M` is resolved after the whole
//!   line is read, so its position does not matter (ipvsadm needs it after `-t`/`-u`). Like
//!   ipvsadm-save we print `-M` only for persistent services with a non-host mask.
//! - Scheduler flags (`-b`): `sh-fallback`, `sh-port` need `-s sh`; `mh-fallback`, `mh-port`
//!   need `-s mh`; `flag-1`/`flag-2` are the raw IPVS `SCHED1`/`SCHED2` bits, accepted with any
//!   scheduler and printed back under the scheduler's own names as ipvsadm does. `flag-3` is
//!   refused: no RVS scheduler uses it and [`SchedFlags`] has no room for it.
//! - Thresholds: `-x`/`-y` are 0..=2147483647 and the lower one may not exceed the upper one
//!   (IPVS returns `ERANGE`). ipvsadm-save does not print thresholds at all, which loses them
//!   on save/restore; we append `-x U` / `-y L` when they are non-zero (ipvsadm-restore reads
//!   them), so a line without thresholds is byte-for-byte ipvsadm's.
//! - `--tun-type ipip` (printed by ipvsadm ≥ 1.30 after tunnel dests) is accepted and is the
//!   only tunnel type; GUE (`--tun-type gue`, `--tun-port`, `--tun-*csum`) is refused. We print
//!   tunnel dests without `--tun-type`, which every ipvsadm version reads.
//! - Refused with a message naming the feature: fwmark services (`-f`, `-6`), SCTP services,
//!   one-packet scheduling (`-o`), persistence engines (`--pe`), and commands that are not rules
//!   (`-L`, `-Z`, `--set`, `-S`, `-R`, daemon commands, ...).
//! - Addresses and ports must be numeric (no name resolution: the core does no I/O). IPv6
//!   addresses with a port go in brackets; an unbracketed IPv6 address has no port.
//! - `#` starts a comment anywhere on a line; blank lines are skipped; a leading `ipvsadm` (or
//!   `rvsadm`) word is ignored, as ipvsadm-restore ignores it.
//!
//! Nothing here panics, whatever the input.

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::types::{Dest, FwdMethod, Protocol, SchedFlags, SchedulerKind, ServiceKey};

/// Persistence timeout when `-p` is given without a value (ipvsadm's
/// `IPVS_SVC_PERSISTENT_TIMEOUT`), in seconds.
pub const DEFAULT_PERSISTENCE_SECS: u32 = 300;

/// Largest persistence timeout ipvsadm accepts (31 days), in seconds.
pub const MAX_PERSISTENCE_SECS: u32 = 86_400 * 31;

/// Largest dest weight (`-w`).
pub const MAX_WEIGHT: u32 = 65_535;

/// Largest connection threshold (`-x`, `-y`): ipvsadm's `INT_MAX`.
pub const MAX_THRESHOLD: u32 = 2_147_483_647;

/// One ipvsadm command that changes the table: a line of an ipvsadm-save file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    /// `-A` / `--add-service`: create a virtual service.
    AddService(ServiceSpec),
    /// `-E` / `--edit-service`: replace a service's scheduler, flags, persistence and netmask
    /// (options left out take their defaults, as in ipvsadm).
    EditService(ServiceSpec),
    /// `-D` / `--delete-service`: remove a service and its dests.
    DeleteService(ServiceKey),
    /// `-a` / `--add-server`: add a real server to a service.
    AddDest(ServiceKey, DestSpec),
    /// `-e` / `--edit-server`: change a real server's method, weight and thresholds.
    EditDest(ServiceKey, DestSpec),
    /// `-d` / `--delete-server`: remove the real server at this address and port.
    DeleteDest(ServiceKey, IpAddr, u16),
    /// `-C` / `--clear`: remove every service.
    Clear,
}

/// A virtual service as `-A`/`-E` describe it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ServiceSpec {
    /// Protocol, virtual address and port.
    pub key: ServiceKey,
    /// Scheduler (`-s`, default `wlc`).
    pub scheduler: SchedulerKind,
    /// Scheduler flags (`-b`).
    pub flags: SchedFlags,
    /// Persistence timeout in seconds (`-p [timeout]`); `None` = not persistent.
    pub persistence: Option<u32>,
    /// Persistence granularity (`-M`): clients whose addresses agree under this mask share a
    /// template. Only meaningful with persistence.
    pub netmask: Netmask,
}

impl ServiceSpec {
    /// A service with ipvsadm's defaults: `wlc`, no flags, not persistent, host netmask.
    pub fn new(key: ServiceKey) -> ServiceSpec {
        ServiceSpec {
            key,
            scheduler: SchedulerKind::default(),
            flags: SchedFlags::default(),
            persistence: None,
            netmask: Netmask::host(key.addr),
        }
    }
}

/// Persistence granularity of a service (`-M`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Netmask {
    /// IPv4 services: a dotted mask (default `255.255.255.255`).
    V4(Ipv4Addr),
    /// IPv6 services: a prefix length 1..=128 (default 128).
    V6(u8),
}

impl Netmask {
    /// The default, one-host mask for an address's family: /32 or /128.
    pub const fn host(addr: IpAddr) -> Netmask {
        match addr {
            IpAddr::V4(_) => Netmask::V4(Ipv4Addr::BROADCAST),
            IpAddr::V6(_) => Netmask::V6(128),
        }
    }

    /// True for the one-host mask (/32 or /128), which ipvsadm does not print.
    pub fn is_host(self) -> bool {
        matches!(self, Netmask::V4(m) if m == Ipv4Addr::BROADCAST) || self == Netmask::V6(128)
    }

    /// True when the mask belongs to `addr`'s family.
    pub const fn matches_family(self, addr: IpAddr) -> bool {
        matches!(
            (self, addr),
            (Netmask::V4(_), IpAddr::V4(_)) | (Netmask::V6(_), IpAddr::V6(_))
        )
    }

    /// `addr` with the bits outside the mask cleared (the persistence template's client
    /// address). An address of the other family is returned unchanged; prefix lengths above
    /// 128 count as 128.
    pub fn apply(self, addr: IpAddr) -> IpAddr {
        match (self, addr) {
            (Netmask::V4(m), IpAddr::V4(a)) => {
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & u32::from(m)))
            }
            (Netmask::V6(len), IpAddr::V6(a)) => {
                let len = u32::from(len.min(128));
                let mask = if len == 0 {
                    0
                } else {
                    u128::MAX << (128 - len)
                };
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
            _ => addr,
        }
    }
}

impl fmt::Display for Netmask {
    /// As ipvsadm prints it after `-M`: dotted for IPv4, the prefix length for IPv6.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Netmask::V4(m) => write!(f, "{m}"),
            Netmask::V6(len) => write!(f, "{len}"),
        }
    }
}

/// A real server as `-a`/`-e` describe it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DestSpec {
    /// Real server address (RIP).
    pub addr: IpAddr,
    /// Real server port; the virtual port for DR and TUN.
    pub port: u16,
    /// Forwarding method (`-g` default, `-m`, `-i`).
    pub fwd: FwdMethod,
    /// Weight (`-w`, 0..=65535, default 1).
    pub weight: u32,
    /// Upper connection threshold (`-x`); 0 = none.
    pub u_threshold: u32,
    /// Lower connection threshold (`-y`); 0 = three quarters of the upper one.
    pub l_threshold: u32,
}

impl DestSpec {
    /// A dest with ipvsadm's defaults: direct routing, weight 1, no thresholds.
    pub fn new(addr: IpAddr, port: u16) -> DestSpec {
        DestSpec {
            addr,
            port,
            fwd: FwdMethod::default(),
            weight: 1,
            u_threshold: 0,
            l_threshold: 0,
        }
    }

    /// The scheduler's view of this dest, with no connections yet.
    pub fn to_dest(&self) -> Dest {
        let mut d = Dest::new(self.addr, self.port, self.fwd, self.weight);
        d.u_threshold = self.u_threshold;
        d.l_threshold = self.l_threshold;
        d
    }
}

/// Why a rule line was refused. Every message names the offending token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// No command option on the line.
    #[error("missing command (one of -A, -E, -D, -a, -e, -d, -C)")]
    MissingCommand,
    /// Two command options on one line.
    #[error("multiple commands: {0} and {1}")]
    MultipleCommands(String, String),
    /// A command ipvsadm knows that is not a rule (`-L`, `-Z`, `--set`, ...).
    #[error("command {0} is not a rule (rules are -A, -E, -D, -a, -e, -d and -C)")]
    NotARule(String),
    /// An option ipvsadm does not know.
    #[error("unknown option {0}")]
    UnknownOption(String),
    /// An ipvsadm option that RVS does not implement.
    #[error("option {option} is not supported: {feature}")]
    Unsupported {
        /// The option as written.
        option: String,
        /// What RVS lacks.
        feature: &'static str,
    },
    /// An ipvsadm listing or daemon option, meaningless in a rule.
    #[error("option {0} is not valid in a rule")]
    NotInRule(String),
    /// A word that is neither an option nor an option's value.
    #[error("unexpected argument {0}")]
    UnexpectedArgument(String),
    /// An option that needs a value came last.
    #[error("option {0} needs a value")]
    MissingValue(&'static str),
    /// A value attached to an option that takes none (`-gm`, `--ipip=1`).
    #[error("option {option} takes no value: {token}")]
    UnexpectedValue {
        /// The option's name.
        option: &'static str,
        /// The token as written.
        token: String,
    },
    /// The same option twice (or two forwarding methods, or `-t` and `-u`).
    #[error("option {0} given more than once")]
    DuplicateOption(&'static str),
    /// An option that the command does not take.
    #[error("option {option} is not allowed with {command}")]
    IllegalOption {
        /// The option's name.
        option: &'static str,
        /// The command's name.
        command: &'static str,
    },
    /// No `-t`/`-u`.
    #[error("missing service address (-t or -u)")]
    MissingService,
    /// No `-r` for a real-server command.
    #[error("missing real server (-r)")]
    MissingRealServer,
    /// `-f` / `--fwmark-service` / `-6`.
    #[error("fwmark services are not supported: {0}")]
    Fwmark(String),
    /// `--sctp-service`.
    #[error("SCTP services are not supported: {0}")]
    Sctp(String),
    /// An address that does not parse.
    #[error(
        "invalid address {0} (expected IPV4[:PORT], IPV6 or [IPV6]:PORT; names are not resolved)"
    )]
    InvalidAddress(String),
    /// An IPv4 address in brackets.
    #[error("invalid address {0}: brackets are for IPv6 addresses only")]
    BracketedIpv4(String),
    /// A value that is not a decimal integer.
    #[error("invalid {what} {value}: expected an integer in {min}..{max}")]
    InvalidNumber {
        /// What the value is for ("weight", "port", ...).
        what: &'static str,
        /// The value as written.
        value: String,
        /// Smallest accepted value.
        min: u64,
        /// Largest accepted value (inclusive).
        max: u64,
    },
    /// An integer outside its range.
    #[error("{what} {value} out of range {min}..{max}")]
    OutOfRange {
        /// What the value is for ("weight", "port", ...).
        what: &'static str,
        /// The value as written.
        value: String,
        /// Smallest accepted value.
        min: u64,
        /// Largest accepted value (inclusive).
        max: u64,
    },
    /// A scheduler name ipvsadm does not know.
    #[error("unknown scheduler {0} (one of rr, wrr, lc, wlc, sed, nq, sh, dh, mh, fo, ovf)")]
    UnknownScheduler(String),
    /// A service on port 0 without `-p`.
    #[error("port 0 requires persistence (-p)")]
    PortZeroNeedsPersistence,
    /// A `-M` value that does not fit the service's family.
    #[error("invalid netmask {value}: {expected}")]
    InvalidNetmask {
        /// The value as written.
        value: String,
        /// What the family takes.
        expected: &'static str,
    },
    /// A `-b` item that ipvsadm does not know.
    #[error(
        "unknown scheduler flag {0:?} (one of sh-fallback, sh-port, mh-fallback, mh-port, flag-1, flag-2)"
    )]
    UnknownSchedFlag(String),
    /// A `-b` item for another scheduler (`sh-port` with `-s wlc`).
    #[error("scheduler flag {flag} needs scheduler {needs}, not {scheduler}")]
    IncompatibleSchedFlag {
        /// The flag as written.
        flag: String,
        /// The scheduler the flag belongs to.
        needs: SchedulerKind,
        /// The service's scheduler.
        scheduler: SchedulerKind,
    },
    /// `flag-3`.
    #[error("scheduler flag {0} is not supported (no RVS scheduler uses it)")]
    UnsupportedSchedFlag(String),
    /// Service and dest of different address families.
    #[error(
        "real server {dest} and service {service} are of different address families (not supported)"
    )]
    MixedFamily {
        /// The service address.
        service: IpAddr,
        /// The dest address.
        dest: IpAddr,
    },
    /// Real port 0 behind a service with a port.
    #[error("real server port 0 is only valid for port-0 services (service port {vport})")]
    RealPortZero {
        /// The service's port.
        vport: u16,
    },
    /// `-y` above `-x`.
    #[error("lower threshold {lower} is higher than upper threshold {upper}")]
    ThresholdOrder {
        /// `-y`.
        lower: u32,
        /// `-x`.
        upper: u32,
    },
    /// `--tun-type` other than `ipip`.
    #[error("tunnel type {0} is not supported (only ipip)")]
    UnsupportedTunnelType(String),
    /// `--tun-type` without `-i`.
    #[error("--tun-type needs the tunnel method (-i)")]
    TunnelOptionWithoutTunnel,
    /// A DR or TUN dest whose port differs from the virtual port (only from
    /// [`Rule::validate`]: the parser forces the virtual port, as ipvsadm does).
    #[error("real server port {dport} must equal the virtual port {vport} for -g and -i")]
    DestPortMismatch {
        /// The dest's port.
        dport: u16,
        /// The service's port.
        vport: u16,
    },
}

/// A rules file line that did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {error}: {text}")]
pub struct RulesError {
    /// 1-based line number.
    pub line: usize,
    /// The line, without surrounding whitespace.
    pub text: String,
    /// Why it was refused.
    pub error: RuleError,
}

/// Parse one line of an ipvsadm-save file. `Ok(None)` for blank lines and comments.
pub fn parse_line(line: &str) -> Result<Option<Rule>, RuleError> {
    let content = line.split('#').next().unwrap_or("");
    let mut words = content.split_whitespace().peekable();
    if words
        .next_if(|w| *w == "ipvsadm" || *w == "rvsadm")
        .is_some()
        && words.peek().is_none()
    {
        return Err(RuleError::MissingCommand);
    }
    if words.peek().is_none() {
        return Ok(None);
    }
    parse_args(words).map(Some)
}

/// Parse a whole ipvsadm-save file, stopping at the first bad line.
pub fn parse_rules(text: &str) -> Result<Vec<Rule>, RulesError> {
    let mut rules = Vec::new();
    for (i, line) in text.lines().enumerate() {
        match parse_line(line) {
            Ok(Some(rule)) => rules.push(rule),
            Ok(None) => {}
            Err(error) => {
                return Err(RulesError {
                    line: i + 1,
                    text: line.trim().to_string(),
                    error,
                });
            }
        }
    }
    Ok(rules)
}

/// Parse one command already split into words (an `rvsadm` command line without the program
/// name). Words are taken as they are: no comment stripping.
pub fn parse_args<'a, I>(args: I) -> Result<Rule, RuleError>
where
    I: IntoIterator<Item = &'a str>,
{
    let mut words = args.into_iter().peekable();
    let mut opts = Opts::default();
    while let Some(word) = words.next() {
        let (spec, attached) = lookup(word)?;
        if matches!(
            spec.what,
            What::OtherCmd | What::Fwmark | What::Sctp | What::Unsupported(_) | What::NotInRule
        ) {
            // Refused whatever follows: say so before complaining about its value.
            opts.take(spec, word, None)?;
            continue;
        }
        let value = match spec.arg {
            Arg::None => {
                if attached.is_some() {
                    return Err(RuleError::UnexpectedValue {
                        option: spec.display,
                        token: word.to_string(),
                    });
                }
                None
            }
            Arg::Required => match attached {
                Some(v) => Some(v),
                None => Some(words.next().ok_or(RuleError::MissingValue(spec.display))?),
            },
            Arg::Optional => attached.or_else(|| words.next_if(|w| !w.starts_with('-'))),
        };
        opts.take(spec, word, value)?;
    }
    opts.finish()
}

/// Does an option take a value?
#[derive(Clone, Copy)]
enum Arg {
    None,
    Required,
    Optional,
}

/// What an option does.
#[derive(Clone, Copy)]
enum What {
    Cmd(Cmd),
    OtherCmd,
    Service(Protocol),
    Fwmark,
    Sctp,
    Scheduler,
    Persistent,
    Netmask,
    SchedFlags,
    RealServer,
    Fwd(FwdMethod),
    Weight,
    UThreshold,
    LThreshold,
    TunType,
    Unsupported(&'static str),
    NotInRule,
}

/// One ipvsadm option.
struct Spec {
    short: Option<char>,
    long: &'static str,
    /// How messages name it.
    display: &'static str,
    arg: Arg,
    what: What,
}

const fn spec(
    short: Option<char>,
    long: &'static str,
    display: &'static str,
    arg: Arg,
    what: What,
) -> Spec {
    Spec {
        short,
        long,
        display,
        arg,
        what,
    }
}

/// ipvsadm's option table (ipvsadm.c `parse_options`), with what each means for a rule.
#[rustfmt::skip]
const SPECS: &[Spec] = &[
    spec(Some('A'), "add-service", "-A (--add-service)", Arg::None, What::Cmd(Cmd::AddService)),
    spec(Some('E'), "edit-service", "-E (--edit-service)", Arg::None, What::Cmd(Cmd::EditService)),
    spec(Some('D'), "delete-service", "-D (--delete-service)", Arg::None, What::Cmd(Cmd::DeleteService)),
    spec(Some('C'), "clear", "-C (--clear)", Arg::None, What::Cmd(Cmd::Clear)),
    spec(Some('a'), "add-server", "-a (--add-server)", Arg::None, What::Cmd(Cmd::AddDest)),
    spec(Some('e'), "edit-server", "-e (--edit-server)", Arg::None, What::Cmd(Cmd::EditDest)),
    spec(Some('d'), "delete-server", "-d (--delete-server)", Arg::None, What::Cmd(Cmd::DeleteDest)),
    spec(Some('L'), "list", "-L (--list)", Arg::None, What::OtherCmd),
    spec(Some('l'), "list", "-l (--list)", Arg::None, What::OtherCmd),
    spec(Some('Z'), "zero", "-Z (--zero)", Arg::None, What::OtherCmd),
    spec(Some('R'), "restore", "-R (--restore)", Arg::None, What::OtherCmd),
    spec(Some('S'), "save", "-S (--save)", Arg::None, What::OtherCmd),
    spec(Some('h'), "help", "-h (--help)", Arg::None, What::OtherCmd),
    spec(Some('v'), "version", "-v (--version)", Arg::None, What::OtherCmd),
    spec(None, "set", "--set", Arg::None, What::OtherCmd),
    spec(None, "start-daemon", "--start-daemon", Arg::None, What::OtherCmd),
    spec(None, "stop-daemon", "--stop-daemon", Arg::None, What::OtherCmd),
    spec(Some('t'), "tcp-service", "-t (--tcp-service)", Arg::Required, What::Service(Protocol::Tcp)),
    spec(Some('u'), "udp-service", "-u (--udp-service)", Arg::Required, What::Service(Protocol::Udp)),
    spec(Some('f'), "fwmark-service", "-f (--fwmark-service)", Arg::None, What::Fwmark),
    spec(Some('6'), "ipv6", "-6 (--ipv6)", Arg::None, What::Fwmark),
    spec(None, "sctp-service", "--sctp-service", Arg::None, What::Sctp),
    spec(Some('s'), "scheduler", "-s (--scheduler)", Arg::Required, What::Scheduler),
    spec(Some('p'), "persistent", "-p (--persistent)", Arg::Optional, What::Persistent),
    spec(Some('M'), "netmask", "-M (--netmask)", Arg::Required, What::Netmask),
    spec(Some('b'), "sched-flags", "-b (--sched-flags)", Arg::Required, What::SchedFlags),
    spec(Some('r'), "real-server", "-r (--real-server)", Arg::Required, What::RealServer),
    spec(Some('g'), "gatewaying", "-g (--gatewaying)", Arg::None, What::Fwd(FwdMethod::DirectRoute)),
    spec(Some('m'), "masquerading", "-m (--masquerading)", Arg::None, What::Fwd(FwdMethod::Masq)),
    spec(Some('i'), "ipip", "-i (--ipip)", Arg::None, What::Fwd(FwdMethod::Tunnel)),
    spec(Some('w'), "weight", "-w (--weight)", Arg::Required, What::Weight),
    spec(Some('x'), "u-threshold", "-x (--u-threshold)", Arg::Required, What::UThreshold),
    spec(Some('y'), "l-threshold", "-y (--l-threshold)", Arg::Required, What::LThreshold),
    spec(None, "tun-type", "--tun-type", Arg::Required, What::TunType),
    spec(None, "tun-port", "--tun-port", Arg::None, What::Unsupported("GUE tunnels")),
    spec(None, "tun-nocsum", "--tun-nocsum", Arg::None, What::Unsupported("GUE tunnels")),
    spec(None, "tun-csum", "--tun-csum", Arg::None, What::Unsupported("GUE tunnels")),
    spec(None, "tun-remcsum", "--tun-remcsum", Arg::None, What::Unsupported("GUE tunnels")),
    spec(Some('o'), "ops", "-o (--ops)", Arg::None, What::Unsupported("one-packet scheduling")),
    spec(None, "pe", "--pe", Arg::None, What::Unsupported("persistence engines")),
    spec(Some('n'), "numeric", "-n (--numeric)", Arg::None, What::NotInRule),
    spec(Some('c'), "connection", "-c (--connection)", Arg::None, What::NotInRule),
    spec(Some('X'), "exact", "-X (--exact)", Arg::None, What::NotInRule),
    spec(None, "timeout", "--timeout", Arg::None, What::NotInRule),
    spec(None, "daemon", "--daemon", Arg::None, What::NotInRule),
    spec(None, "stats", "--stats", Arg::None, What::NotInRule),
    spec(None, "rate", "--rate", Arg::None, What::NotInRule),
    spec(None, "thresholds", "--thresholds", Arg::None, What::NotInRule),
    spec(None, "persistent-conn", "--persistent-conn", Arg::None, What::NotInRule),
    spec(None, "nosort", "--nosort", Arg::None, What::NotInRule),
    spec(None, "sort", "--sort", Arg::None, What::NotInRule),
    spec(None, "tun-info", "--tun-info", Arg::None, What::NotInRule),
    spec(None, "syncid", "--syncid", Arg::None, What::NotInRule),
    spec(None, "mcast-interface", "--mcast-interface", Arg::None, What::NotInRule),
];

/// Find the option a word names, and any value attached to it (`--weight=3`, `-w3`).
fn lookup(word: &str) -> Result<(&'static Spec, Option<&str>), RuleError> {
    let unknown = || RuleError::UnknownOption(word.to_string());
    if let Some(long) = word.strip_prefix("--") {
        let (name, value) = match long.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (long, None),
        };
        let spec = SPECS.iter().find(|s| s.long == name).ok_or_else(unknown)?;
        Ok((spec, value))
    } else if let Some(short) = word.strip_prefix('-') {
        let mut chars = short.chars();
        let c = chars.next().ok_or_else(unknown)?;
        let spec = SPECS
            .iter()
            .find(|s| s.short == Some(c))
            .ok_or_else(unknown)?;
        let rest = chars.as_str();
        Ok((spec, (!rest.is_empty()).then_some(rest)))
    } else {
        Err(RuleError::UnexpectedArgument(word.to_string()))
    }
}

/// The rule commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmd {
    AddService,
    EditService,
    DeleteService,
    AddDest,
    EditDest,
    DeleteDest,
    Clear,
}

impl Cmd {
    const fn display(self) -> &'static str {
        match self {
            Cmd::AddService => "-A (--add-service)",
            Cmd::EditService => "-E (--edit-service)",
            Cmd::DeleteService => "-D (--delete-service)",
            Cmd::AddDest => "-a (--add-server)",
            Cmd::EditDest => "-e (--edit-server)",
            Cmd::DeleteDest => "-d (--delete-server)",
            Cmd::Clear => "-C (--clear)",
        }
    }
}

/// Everything a line said, before the command-specific checks.
#[derive(Default)]
struct Opts<'a> {
    cmd: Option<(Cmd, &'a str)>,
    service: Option<(Protocol, IpAddr, Option<u16>)>,
    scheduler: Option<SchedulerKind>,
    persistence: Option<u32>,
    netmask: Option<&'a str>,
    sched_flags: Option<&'a str>,
    real: Option<(IpAddr, Option<u16>)>,
    fwd: Option<FwdMethod>,
    weight: Option<u32>,
    u_threshold: Option<u32>,
    l_threshold: Option<u32>,
    tun_type: bool,
}

fn once<T>(slot: &mut Option<T>, value: T, name: &'static str) -> Result<(), RuleError> {
    if slot.is_some() {
        return Err(RuleError::DuplicateOption(name));
    }
    *slot = Some(value);
    Ok(())
}

impl<'a> Opts<'a> {
    /// Record one option. `value` is present exactly when the option takes one (or, for `-p`,
    /// when one was given).
    fn take(
        &mut self,
        spec: &'static Spec,
        word: &'a str,
        value: Option<&'a str>,
    ) -> Result<(), RuleError> {
        let value_str = value.unwrap_or("");
        match spec.what {
            What::Cmd(cmd) => {
                if let Some((_, first)) = self.cmd {
                    return Err(RuleError::MultipleCommands(
                        first.to_string(),
                        word.to_string(),
                    ));
                }
                self.cmd = Some((cmd, word));
            }
            What::OtherCmd => return Err(RuleError::NotARule(word.to_string())),
            What::Service(proto) => {
                let (addr, port) = parse_addr_port(value_str)?;
                once(
                    &mut self.service,
                    (proto, addr, port),
                    "-t/-u (service address)",
                )?;
            }
            What::Fwmark => return Err(RuleError::Fwmark(word.to_string())),
            What::Sctp => return Err(RuleError::Sctp(word.to_string())),
            What::Scheduler => {
                let kind = value_str
                    .parse::<SchedulerKind>()
                    .map_err(|_| RuleError::UnknownScheduler(value_str.to_string()))?;
                once(&mut self.scheduler, kind, spec.display)?;
            }
            What::Persistent => {
                let secs = match value {
                    None => DEFAULT_PERSISTENCE_SECS,
                    Some(v) => parse_num("persistence timeout", v, 1, MAX_PERSISTENCE_SECS)?,
                };
                once(&mut self.persistence, secs, spec.display)?;
            }
            What::Netmask => once(&mut self.netmask, value_str, spec.display)?,
            What::SchedFlags => once(&mut self.sched_flags, value_str, spec.display)?,
            What::RealServer => {
                let real = parse_addr_port(value_str)?;
                once(&mut self.real, real, spec.display)?;
            }
            What::Fwd(method) => once(&mut self.fwd, method, "-g/-m/-i (forwarding method)")?,
            What::Weight => {
                let w = parse_num("weight", value_str, 0, MAX_WEIGHT)?;
                once(&mut self.weight, w, spec.display)?;
            }
            What::UThreshold => {
                let x = parse_num("upper threshold", value_str, 0, MAX_THRESHOLD)?;
                once(&mut self.u_threshold, x, spec.display)?;
            }
            What::LThreshold => {
                let y = parse_num("lower threshold", value_str, 0, MAX_THRESHOLD)?;
                once(&mut self.l_threshold, y, spec.display)?;
            }
            What::TunType => {
                if value_str != "ipip" {
                    return Err(RuleError::UnsupportedTunnelType(value_str.to_string()));
                }
                if self.tun_type {
                    return Err(RuleError::DuplicateOption(spec.display));
                }
                self.tun_type = true;
            }
            What::Unsupported(feature) => {
                return Err(RuleError::Unsupported {
                    option: word.to_string(),
                    feature,
                });
            }
            What::NotInRule => return Err(RuleError::NotInRule(word.to_string())),
        }
        Ok(())
    }

    /// The command-specific checks (ipvsadm's `commands_v_options` table, then IPVS's rules),
    /// and the rule.
    fn finish(self) -> Result<Rule, RuleError> {
        let (cmd, _) = self.cmd.ok_or(RuleError::MissingCommand)?;
        let is_service_cmd = matches!(cmd, Cmd::AddService | Cmd::EditService);
        let is_dest_cmd = matches!(cmd, Cmd::AddDest | Cmd::EditDest);
        let is_any_dest_cmd = is_dest_cmd || cmd == Cmd::DeleteDest;
        let present: [(bool, bool, &'static str); 11] = [
            (
                self.service.is_some(),
                cmd != Cmd::Clear,
                "-t/-u (service address)",
            ),
            (self.scheduler.is_some(), is_service_cmd, "-s (--scheduler)"),
            (
                self.persistence.is_some(),
                is_service_cmd,
                "-p (--persistent)",
            ),
            (self.netmask.is_some(), is_service_cmd, "-M (--netmask)"),
            (
                self.sched_flags.is_some(),
                is_service_cmd,
                "-b (--sched-flags)",
            ),
            (self.real.is_some(), is_any_dest_cmd, "-r (--real-server)"),
            (
                self.fwd.is_some(),
                is_dest_cmd,
                "-g/-m/-i (forwarding method)",
            ),
            (self.weight.is_some(), is_dest_cmd, "-w (--weight)"),
            (
                self.u_threshold.is_some(),
                is_dest_cmd,
                "-x (--u-threshold)",
            ),
            (
                self.l_threshold.is_some(),
                is_dest_cmd,
                "-y (--l-threshold)",
            ),
            (self.tun_type, is_dest_cmd, "--tun-type"),
        ];
        for (given, allowed, option) in present {
            if given && !allowed {
                return Err(RuleError::IllegalOption {
                    option,
                    command: cmd.display(),
                });
            }
        }
        if cmd == Cmd::Clear {
            return Ok(Rule::Clear);
        }
        let (protocol, vaddr, vport) = self.service.ok_or(RuleError::MissingService)?;
        let key = ServiceKey {
            protocol,
            addr: vaddr,
            port: vport.unwrap_or(0),
        };
        match cmd {
            Cmd::AddService | Cmd::EditService => {
                let scheduler = self.scheduler.unwrap_or_default();
                let netmask = match self.netmask {
                    Some(m) => parse_netmask(m, vaddr)?,
                    None => Netmask::host(vaddr),
                };
                let flags = match self.sched_flags {
                    Some(f) => parse_sched_flags(f, scheduler)?,
                    None => SchedFlags::default(),
                };
                if key.port == 0 && self.persistence.is_none() {
                    return Err(RuleError::PortZeroNeedsPersistence);
                }
                let spec = ServiceSpec {
                    key,
                    scheduler,
                    flags,
                    persistence: self.persistence,
                    netmask,
                };
                Ok(if cmd == Cmd::AddService {
                    Rule::AddService(spec)
                } else {
                    Rule::EditService(spec)
                })
            }
            Cmd::DeleteService => Ok(Rule::DeleteService(key)),
            Cmd::DeleteDest => {
                let (daddr, dport) = self.real.ok_or(RuleError::MissingRealServer)?;
                check_family(vaddr, daddr)?;
                Ok(Rule::DeleteDest(key, daddr, dport.unwrap_or(key.port)))
            }
            Cmd::AddDest | Cmd::EditDest => {
                let (daddr, dport) = self.real.ok_or(RuleError::MissingRealServer)?;
                check_family(vaddr, daddr)?;
                let fwd = self.fwd.unwrap_or_default();
                if self.tun_type && fwd != FwdMethod::Tunnel {
                    return Err(RuleError::TunnelOptionWithoutTunnel);
                }
                // ipvsadm: "The destination port must be equal to the service port if the
                // IP_VS_CONN_F_TUNNEL or IP_VS_CONN_F_DROUTE is set" — it overwrites it.
                let port = match fwd {
                    FwdMethod::DirectRoute | FwdMethod::Tunnel => key.port,
                    FwdMethod::Masq => dport.unwrap_or(key.port),
                };
                if port == 0 && key.port != 0 {
                    return Err(RuleError::RealPortZero { vport: key.port });
                }
                let dest = DestSpec {
                    addr: daddr,
                    port,
                    fwd,
                    weight: self.weight.unwrap_or(1),
                    u_threshold: self.u_threshold.unwrap_or(0),
                    l_threshold: self.l_threshold.unwrap_or(0),
                };
                check_thresholds(&dest)?;
                Ok(if cmd == Cmd::AddDest {
                    Rule::AddDest(key, dest)
                } else {
                    Rule::EditDest(key, dest)
                })
            }
            Cmd::Clear => Ok(Rule::Clear),
        }
    }
}

/// A decimal integer in `min..=max`; digits only (no sign, no spaces).
fn parse_num(what: &'static str, value: &str, min: u32, max: u32) -> Result<u32, RuleError> {
    let (lo, hi) = (u64::from(min), u64::from(max));
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(RuleError::InvalidNumber {
            what,
            value: value.to_string(),
            min: lo,
            max: hi,
        });
    }
    match value.parse::<u32>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(RuleError::OutOfRange {
            what,
            value: value.to_string(),
            min: lo,
            max: hi,
        }),
    }
}

fn parse_port(value: &str) -> Result<u16, RuleError> {
    let port = parse_num("port", value, 0, u32::from(u16::MAX))?;
    u16::try_from(port).map_err(|_| RuleError::OutOfRange {
        what: "port",
        value: value.to_string(),
        min: 0,
        max: u64::from(u16::MAX),
    })
}

/// `IPV4[:PORT]`, `IPV6` or `[IPV6][:PORT]`, the forms ipvsadm's `parse_service` reads
/// (numeric only).
fn parse_addr_port(s: &str) -> Result<(IpAddr, Option<u16>), RuleError> {
    let invalid = || RuleError::InvalidAddress(s.to_string());
    if let Some(inner) = s.strip_prefix('[') {
        let (addr, rest) = inner.split_once(']').ok_or_else(invalid)?;
        let addr = match addr.parse::<IpAddr>() {
            Ok(IpAddr::V6(a)) => IpAddr::V6(a),
            Ok(IpAddr::V4(_)) => return Err(RuleError::BracketedIpv4(s.to_string())),
            Err(_) => return Err(invalid()),
        };
        let port = match rest {
            "" => None,
            _ => Some(parse_port(rest.strip_prefix(':').ok_or_else(invalid)?)?),
        };
        return Ok((addr, port));
    }
    if let Ok(a) = s.parse::<Ipv6Addr>() {
        return Ok((IpAddr::V6(a), None));
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (s, None),
    };
    let addr = host.parse::<Ipv4Addr>().map_err(|_| invalid())?;
    let port = port.map(parse_port).transpose()?;
    Ok((IpAddr::V4(addr), port))
}

fn parse_netmask(value: &str, vaddr: IpAddr) -> Result<Netmask, RuleError> {
    match vaddr {
        IpAddr::V4(_) => {
            value
                .parse::<Ipv4Addr>()
                .map(Netmask::V4)
                .map_err(|_| RuleError::InvalidNetmask {
                    value: value.to_string(),
                    expected: "IPv4 services take a dotted mask such as 255.255.255.0",
                })
        }
        IpAddr::V6(_) => {
            let bad = || RuleError::InvalidNetmask {
                value: value.to_string(),
                expected: "IPv6 services take a prefix length 1..128",
            };
            let len = parse_num("netmask", value, 1, 128).map_err(|_| bad())?;
            u8::try_from(len).map(Netmask::V6).map_err(|_| bad())
        }
    }
}

fn parse_sched_flags(value: &str, scheduler: SchedulerKind) -> Result<SchedFlags, RuleError> {
    let mut flags = SchedFlags::default();
    for flag in value.split(',') {
        let (needs, fallback) = match flag {
            "flag-1" => (None, true),
            "flag-2" => (None, false),
            "sh-fallback" => (Some(SchedulerKind::Sh), true),
            "sh-port" => (Some(SchedulerKind::Sh), false),
            "mh-fallback" => (Some(SchedulerKind::Mh), true),
            "mh-port" => (Some(SchedulerKind::Mh), false),
            "flag-3" => return Err(RuleError::UnsupportedSchedFlag(flag.to_string())),
            _ => return Err(RuleError::UnknownSchedFlag(flag.to_string())),
        };
        if let Some(needs) = needs
            && needs != scheduler
        {
            return Err(RuleError::IncompatibleSchedFlag {
                flag: flag.to_string(),
                needs,
                scheduler,
            });
        }
        if fallback {
            flags.fallback = true;
        } else {
            flags.port = true;
        }
    }
    Ok(flags)
}

/// The `-b` value ipvsadm prints for these flags (`print_sched_flags`), if any.
fn sched_flags_text(scheduler: SchedulerKind, flags: SchedFlags) -> Option<String> {
    let (fallback, port) = match scheduler {
        SchedulerKind::Sh => ("sh-fallback", "sh-port"),
        SchedulerKind::Mh => ("mh-fallback", "mh-port"),
        _ => ("flag-1", "flag-2"),
    };
    match (flags.fallback, flags.port) {
        (false, false) => None,
        (true, false) => Some(fallback.to_string()),
        (false, true) => Some(port.to_string()),
        (true, true) => Some(format!("{fallback},{port}")),
    }
}

fn check_family(service: IpAddr, dest: IpAddr) -> Result<(), RuleError> {
    if service.is_ipv4() != dest.is_ipv4() {
        return Err(RuleError::MixedFamily { service, dest });
    }
    Ok(())
}

fn check_thresholds(d: &DestSpec) -> Result<(), RuleError> {
    if d.l_threshold > d.u_threshold {
        return Err(RuleError::ThresholdOrder {
            lower: d.l_threshold,
            upper: d.u_threshold,
        });
    }
    Ok(())
}

/// `ADDR:PORT` as ipvsadm prints it with `-n` (IPv6 in brackets).
struct AddrPort(IpAddr, u16);

impl fmt::Display for AddrPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(a) => write!(f, "{a}:{}", self.1),
            IpAddr::V6(a) => write!(f, "[{a}]:{}", self.1),
        }
    }
}

/// `-t VIP:PORT` / `-u VIP:PORT`.
struct Svc(ServiceKey);

impl fmt::Display for Svc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let opt = match self.0.protocol {
            Protocol::Tcp => "-t",
            Protocol::Udp => "-u",
        };
        write!(f, "{opt} {}", AddrPort(self.0.addr, self.0.port))
    }
}

impl Rule {
    /// The line `ipvsadm-save -n` prints for this rule (no trailing newline):
    /// `-A -t ADDR:PORT -s SCHED [-p T [-M MASK]] [-b FLAGS]` and
    /// `-a -t VIP:PORT -r RIP:PORT -g|-m|-i -w W [-x U] [-y L]` (`-x`/`-y` are RVS's addition,
    /// printed only when non-zero); `-E`/`-e` as `-A`/`-a`; `-D -t VIP:PORT`,
    /// `-d -t VIP:PORT -r RIP:PORT`, `-C`.
    pub fn to_save_line(&self) -> String {
        self.to_string()
    }

    /// The service a rule is about (`None` for [`Rule::Clear`]).
    pub fn service_key(&self) -> Option<&ServiceKey> {
        match self {
            Rule::AddService(s) | Rule::EditService(s) => Some(&s.key),
            Rule::DeleteService(k)
            | Rule::AddDest(k, _)
            | Rule::EditDest(k, _)
            | Rule::DeleteDest(k, _, _) => Some(k),
            Rule::Clear => None,
        }
    }

    /// Check the invariants the parser guarantees, for rules built by hand (or received from a
    /// client): port 0 needs persistence, netmask of the service's family, flags that fit the
    /// scheduler's printing, weight and threshold ranges, one address family, DR/TUN dests on
    /// the virtual port, real port 0 only for port-0 services.
    pub fn validate(&self) -> Result<(), RuleError> {
        match self {
            Rule::AddService(s) | Rule::EditService(s) => {
                if s.key.port == 0 && s.persistence.is_none() {
                    return Err(RuleError::PortZeroNeedsPersistence);
                }
                if let Some(t) = s.persistence
                    && !(1..=MAX_PERSISTENCE_SECS).contains(&t)
                {
                    return Err(RuleError::OutOfRange {
                        what: "persistence timeout",
                        value: t.to_string(),
                        min: 1,
                        max: u64::from(MAX_PERSISTENCE_SECS),
                    });
                }
                if !s.netmask.matches_family(s.key.addr)
                    || matches!(s.netmask, Netmask::V6(0) | Netmask::V6(129..))
                {
                    return Err(RuleError::InvalidNetmask {
                        value: s.netmask.to_string(),
                        expected: match s.key.addr {
                            IpAddr::V4(_) => {
                                "IPv4 services take a dotted mask such as 255.255.255.0"
                            }
                            IpAddr::V6(_) => "IPv6 services take a prefix length 1..128",
                        },
                    });
                }
                Ok(())
            }
            Rule::DeleteService(_) | Rule::Clear => Ok(()),
            Rule::DeleteDest(k, addr, _) => check_family(k.addr, *addr),
            Rule::AddDest(k, d) | Rule::EditDest(k, d) => {
                check_family(k.addr, d.addr)?;
                if d.weight > MAX_WEIGHT {
                    return Err(RuleError::OutOfRange {
                        what: "weight",
                        value: d.weight.to_string(),
                        min: 0,
                        max: u64::from(MAX_WEIGHT),
                    });
                }
                for (what, v) in [
                    ("upper threshold", d.u_threshold),
                    ("lower threshold", d.l_threshold),
                ] {
                    if v > MAX_THRESHOLD {
                        return Err(RuleError::OutOfRange {
                            what,
                            value: v.to_string(),
                            min: 0,
                            max: u64::from(MAX_THRESHOLD),
                        });
                    }
                }
                check_thresholds(d)?;
                if d.fwd != FwdMethod::Masq && d.port != k.port {
                    return Err(RuleError::DestPortMismatch {
                        dport: d.port,
                        vport: k.port,
                    });
                }
                if d.port == 0 && k.port != 0 {
                    return Err(RuleError::RealPortZero { vport: k.port });
                }
                Ok(())
            }
        }
    }
}

impl fmt::Display for Rule {
    /// The same text as [`Rule::to_save_line`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::AddService(s) => write_service(f, "-A", s),
            Rule::EditService(s) => write_service(f, "-E", s),
            Rule::DeleteService(k) => write!(f, "-D {}", Svc(*k)),
            Rule::AddDest(k, d) => write_dest(f, "-a", k, d),
            Rule::EditDest(k, d) => write_dest(f, "-e", k, d),
            Rule::DeleteDest(k, addr, port) => {
                write!(f, "-d {} -r {}", Svc(*k), AddrPort(*addr, *port))
            }
            Rule::Clear => f.write_str("-C"),
        }
    }
}

/// ipvsadm.c `print_service_entry` with `FMT_RULE`: `-s`, then `-p` (and `-M` only when
/// persistent and not the host mask), then `-b`.
fn write_service(f: &mut fmt::Formatter<'_>, cmd: &str, s: &ServiceSpec) -> fmt::Result {
    write!(f, "{cmd} {} -s {}", Svc(s.key), s.scheduler)?;
    if let Some(t) = s.persistence {
        write!(f, " -p {t}")?;
        if !s.netmask.is_host() {
            write!(f, " -M {}", s.netmask)?;
        }
    }
    if let Some(flags) = sched_flags_text(s.scheduler, s.flags) {
        write!(f, " -b {flags}")?;
    }
    Ok(())
}

/// ipvsadm.c's dest line (`-a SVC -r RIP:PORT METHOD -w W`), plus non-zero thresholds.
fn write_dest(f: &mut fmt::Formatter<'_>, cmd: &str, k: &ServiceKey, d: &DestSpec) -> fmt::Result {
    write!(
        f,
        "{cmd} {} -r {} {} -w {}",
        Svc(*k),
        AddrPort(d.addr, d.port),
        d.fwd.flag(),
        d.weight
    )?;
    if d.u_threshold != 0 {
        write!(f, " -x {}", d.u_threshold)?;
    }
    if d.l_threshold != 0 {
        write!(f, " -y {}", d.l_threshold)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> IpAddr {
        IpAddr::V4(s.parse().unwrap_or(Ipv4Addr::UNSPECIFIED))
    }

    #[test]
    fn addr_port_forms() {
        assert_eq!(
            parse_addr_port("192.0.2.1:80"),
            Ok((v4("192.0.2.1"), Some(80)))
        );
        assert_eq!(parse_addr_port("192.0.2.1"), Ok((v4("192.0.2.1"), None)));
        assert!(matches!(
            parse_addr_port("[2001:db8::1]:53"),
            Ok((IpAddr::V6(_), Some(53)))
        ));
        assert!(matches!(
            parse_addr_port("[2001:db8::1]"),
            Ok((IpAddr::V6(_), None))
        ));
        assert!(matches!(
            parse_addr_port("2001:db8::1"),
            Ok((IpAddr::V6(_), None))
        ));
        assert!(matches!(
            parse_addr_port("[192.0.2.1]:80"),
            Err(RuleError::BracketedIpv4(_))
        ));
        assert!(matches!(
            parse_addr_port("[2001:db8::1]53"),
            Err(RuleError::InvalidAddress(_))
        ));
        assert!(matches!(
            parse_addr_port("[2001:db8::1:53"),
            Err(RuleError::InvalidAddress(_))
        ));
        assert!(matches!(
            parse_addr_port("example.com:80"),
            Err(RuleError::InvalidAddress(_))
        ));
        assert!(matches!(
            parse_addr_port("192.0.2.1:"),
            Err(RuleError::InvalidNumber { .. })
        ));
        assert!(matches!(
            parse_addr_port("192.0.2.1:65536"),
            Err(RuleError::OutOfRange { .. })
        ));
    }

    #[test]
    fn netmask_apply() {
        let m = Netmask::V4("255.255.255.0".parse().unwrap_or(Ipv4Addr::UNSPECIFIED));
        assert_eq!(m.apply(v4("192.0.2.77")), v4("192.0.2.0"));
        let a: IpAddr = "2001:db8:1:2:3:4:5:6".parse().unwrap_or(v4("0.0.0.0"));
        let want: IpAddr = "2001:db8:1::".parse().unwrap_or(v4("0.0.0.0"));
        assert_eq!(Netmask::V6(48).apply(a), want);
        assert_eq!(Netmask::V6(128).apply(a), a);
        assert_eq!(Netmask::V6(0).apply(a), "::".parse().unwrap_or(a));
        assert_eq!(Netmask::V6(200).apply(a), a);
        assert_eq!(m.apply(a), a, "other family unchanged");
        assert!(Netmask::host(a).is_host() && Netmask::host(v4("192.0.2.1")).is_host());
        assert!(!m.is_host());
    }

    #[test]
    fn sched_flag_text_follows_scheduler() {
        let both = SchedFlags {
            fallback: true,
            port: true,
        };
        assert_eq!(
            sched_flags_text(SchedulerKind::Sh, both).as_deref(),
            Some("sh-fallback,sh-port")
        );
        assert_eq!(
            sched_flags_text(SchedulerKind::Mh, both).as_deref(),
            Some("mh-fallback,mh-port")
        );
        assert_eq!(
            sched_flags_text(SchedulerKind::Rr, both).as_deref(),
            Some("flag-1,flag-2")
        );
        assert_eq!(
            sched_flags_text(SchedulerKind::Rr, SchedFlags::default()),
            None
        );
    }
}
