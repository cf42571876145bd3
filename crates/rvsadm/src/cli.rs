//! The command line, in ipvsadm's grammar, turned into what to do.
//!
//! Hand-written rather than clap: ipvsadm parses with popt, and scripts rely on its rules —
//! the first option must be the command; short options combine (`-Ln`, `-At 203.0.113.1:80`,
//! `-w3`); `-p` takes an *optional* value (the next word unless it starts with `-`); `--set`
//! takes three bare words wherever they appear; every mistake has ipvsadm's own message and
//! exit status (2 for usage, 255 for popt's errors); which options each command allows comes
//! from one table (`commands_v_options`). clap cannot express the optional value inside a
//! cluster, the command-first rule or the messages, so this module follows ipvsadm 1.31's
//! `parse_options` / `process_options` step by step (read to learn the behaviour, not copied).
//!
//! RVS lacks some IPVS features; their options are recognised and refused with a message that
//! says so (fwmark and SCTP services, one-packet scheduling, persistence engines, GUE/GRE
//! tunnels, the sync daemon), so a script never half-works.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, ToSocketAddrs};

use rvs_api::{
    DestConfig, FwdMethod, Netmask, Protocol, Request, SchedFlags, ServiceAddr, ServiceConfig,
    Timeouts,
};

use crate::print::Format;

/// Largest timeout (31 days), ipvsadm's `MAX_TIMEOUT`.
const MAX_TIMEOUT: u32 = 86_400 * 31;

/// Persistence timeout when `-p` has no value (`IPVS_SVC_PERSISTENT_TIMEOUT`).
const DEFAULT_PERSISTENCE: u32 = 300;

/// ipvsadm's default scheduler.
const DEF_SCHED: &str = "wlc";

/// A mistake on the command line, or a refusal: the message and the exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    /// Exit status.
    pub(crate) code: u8,
    /// What to print on stderr (without the final newline).
    pub(crate) message: String,
}

/// ipvsadm's `fail(2, ...)`: a usage error.
fn usage(message: impl Into<String>) -> Failure {
    Failure {
        code: 2,
        message: message.into(),
    }
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// `-h`.
    Help,
    /// `-v`.
    Version,
    /// A change: `-A -E -D -a -e -d -C -Z --set`, `--setting NAME=VALUE`.
    Change(Request),
    /// `-L` (or no arguments at all).
    ListAll(Format),
    /// `-L -t|-u SERVICE`.
    ListService(ServiceAddr, Format),
    /// `-L -c`.
    ListConns {
        /// `--persistent-conn`: the wider header.
        persistent_conn: bool,
    },
    /// `-L --timeout`.
    ListTimeout,
    /// `-L --daemon`: RVS has no sync daemon, so nothing to list.
    ListDaemon,
    /// `-S`.
    Save,
    /// `-R`.
    Restore,
    /// `--counters`.
    Counters,
    /// `--setting NAME` or `--settings`.
    GetSetting(Option<String>),
}

/// A parsed command line: the action and whether to print JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Invocation {
    /// What to do.
    pub(crate) action: Action,
    /// `--json`: machine-readable output of listings.
    pub(crate) json: bool,
}

/// Commands, in ipvsadm's `cmdnames` order, then RVS's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmd {
    Add,
    Edit,
    Del,
    Flush,
    List,
    AddDest,
    DelDest,
    EditDest,
    Timeout,
    StartDaemon,
    StopDaemon,
    Restore,
    Save,
    Zero,
    Counters,
    Setting,
}

impl Cmd {
    const fn name(self) -> &'static str {
        match self {
            Cmd::Add => "add-service",
            Cmd::Edit => "edit-service",
            Cmd::Del => "delete-service",
            Cmd::Flush => "flush",
            Cmd::List => "list",
            Cmd::AddDest => "add-server",
            Cmd::DelDest => "delete-server",
            Cmd::EditDest => "edit-server",
            Cmd::Timeout => "set",
            Cmd::StartDaemon => "start-daemon",
            Cmd::StopDaemon => "stop-daemon",
            Cmd::Restore => "restore",
            Cmd::Save => "save",
            Cmd::Zero => "zero",
            Cmd::Counters => "counters",
            Cmd::Setting => "setting",
        }
    }

    /// Which options the command takes, one character per [`Opt`] in order: `+` compulsory,
    /// `x` illegal, `1` at most one of the `1`s, ` ` optional (ipvsadm's `commands_v_options`,
    /// plus the `json` column).
    const fn legal(self) -> &'static [u8; OPTS] {
        //                 -n-csvc-s-p-M-rfwd-w-x-y-mctotdmn-st-rtthr-pcsrtsid-exops-pe-bgrpporttttsizetinftyptprnocscsurem json
        match self {
            Cmd::Add | Cmd::Edit => b"xx+   xxxxxxxxxxxxxxx   xxxxxxxxxxx",
            Cmd::Del => b"xx+xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            Cmd::Flush | Cmd::Timeout | Cmd::Restore => b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            Cmd::List => b" 11xxxxxxxxx11       xxxxxxx xxxxx ",
            Cmd::AddDest | Cmd::EditDest => b"xx+xxx+    xxxxxxxxxxxxxxxxxx     x",
            Cmd::DelDest => b"xx+xxx+xxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            Cmd::StartDaemon => b"xxxxxxxxxxx xxxxxxx xxxx    xxxxxxx",
            Cmd::StopDaemon => b"xxxxxxxxxxxxxxxxxxx xxxxxxxxxxxxxxx",
            Cmd::Save => b" xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            Cmd::Zero => b"xx xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            Cmd::Counters | Cmd::Setting => b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx ",
        }
    }
}

/// Number of option classes.
const OPTS: usize = 35;

/// Option classes, in ipvsadm's `optnames` order (their bit in the option set), then `json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opt {
    Numeric,
    Connection,
    Service,
    Scheduler,
    Persistent,
    Netmask,
    Server,
    Forward,
    Weight,
    UThreshold,
    LThreshold,
    Mcast,
    Timeout,
    Daemon,
    Stats,
    Rate,
    Thresholds,
    PersistentConn,
    NoSort,
    SyncId,
    Exact,
    OnePacket,
    Pe,
    SchedFlags,
    McastGroup,
    McastPort,
    McastTtl,
    SyncMaxlen,
    TunInfo,
    TunType,
    TunPort,
    TunNocsum,
    TunCsum,
    TunRemcsum,
    Json,
}

impl Opt {
    const ALL: [Opt; OPTS] = [
        Opt::Numeric,
        Opt::Connection,
        Opt::Service,
        Opt::Scheduler,
        Opt::Persistent,
        Opt::Netmask,
        Opt::Server,
        Opt::Forward,
        Opt::Weight,
        Opt::UThreshold,
        Opt::LThreshold,
        Opt::Mcast,
        Opt::Timeout,
        Opt::Daemon,
        Opt::Stats,
        Opt::Rate,
        Opt::Thresholds,
        Opt::PersistentConn,
        Opt::NoSort,
        Opt::SyncId,
        Opt::Exact,
        Opt::OnePacket,
        Opt::Pe,
        Opt::SchedFlags,
        Opt::McastGroup,
        Opt::McastPort,
        Opt::McastTtl,
        Opt::SyncMaxlen,
        Opt::TunInfo,
        Opt::TunType,
        Opt::TunPort,
        Opt::TunNocsum,
        Opt::TunCsum,
        Opt::TunRemcsum,
        Opt::Json,
    ];

    const fn name(self) -> &'static str {
        match self {
            Opt::Numeric => "numeric",
            Opt::Connection => "connection",
            Opt::Service => "service-address",
            Opt::Scheduler => "scheduler",
            Opt::Persistent => "persistent",
            Opt::Netmask => "netmask",
            Opt::Server => "real-server",
            Opt::Forward => "forwarding-method",
            Opt::Weight => "weight",
            Opt::UThreshold => "u-threshold",
            Opt::LThreshold => "l-threshold",
            Opt::Mcast => "mcast-interface",
            Opt::Timeout => "timeout",
            Opt::Daemon => "daemon",
            Opt::Stats => "stats",
            Opt::Rate => "rate",
            Opt::Thresholds => "thresholds",
            Opt::PersistentConn => "persistent-conn",
            Opt::NoSort => "nosort",
            Opt::SyncId => "syncid",
            Opt::Exact => "exact",
            Opt::OnePacket => "ops",
            Opt::Pe => "pe",
            Opt::SchedFlags => "sched-flags",
            Opt::McastGroup => "mcast-group",
            Opt::McastPort => "mcast-port",
            Opt::McastTtl => "mcast-ttl",
            Opt::SyncMaxlen => "sync-maxlen",
            Opt::TunInfo => "tun-info",
            Opt::TunType => "tun-type",
            Opt::TunPort => "tun-port",
            Opt::TunNocsum => "tun-nocsum",
            Opt::TunCsum => "tun-csum",
            Opt::TunRemcsum => "tun-remcsum",
            Opt::Json => "json",
        }
    }

    const fn bit(self) -> u64 {
        1 << (self as u32)
    }
}

/// Does an option take a value?
#[derive(Clone, Copy, PartialEq, Eq)]
enum Arg {
    None,
    Required,
    Optional,
}

/// What an option word means.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tag {
    Cmd(Cmd),
    Help,
    Version,
    Settings,
    Tcp,
    Udp,
    Sctp,
    Fwmark,
    Ipv6,
    Scheduler,
    Persistent,
    Netmask,
    Server,
    Fwd(FwdMethod),
    Weight,
    UThreshold,
    LThreshold,
    Numeric,
    Connection,
    McastIf,
    SyncId,
    Timeout,
    Daemon,
    Stats,
    Rate,
    Thresholds,
    PersistentConn,
    NoSort,
    Sort,
    Exact,
    OnePacket,
    Pe,
    SchedFlags,
    McastGroup,
    McastPort,
    McastTtl,
    SyncMaxlen,
    TunInfo,
    TunType,
    TunPort,
    TunNocsum,
    TunCsum,
    TunRemcsum,
    Json,
}

/// ipvsadm's option table (`parse_options`), plus RVS's `--json`, `--counters`, `--setting`,
/// `--settings`.
#[rustfmt::skip]
const SPECS: &[(Option<char>, &str, Arg, Tag)] = &[
    (Some('A'), "add-service", Arg::None, Tag::Cmd(Cmd::Add)),
    (Some('E'), "edit-service", Arg::None, Tag::Cmd(Cmd::Edit)),
    (Some('D'), "delete-service", Arg::None, Tag::Cmd(Cmd::Del)),
    (Some('C'), "clear", Arg::None, Tag::Cmd(Cmd::Flush)),
    (Some('L'), "list", Arg::None, Tag::Cmd(Cmd::List)),
    (Some('l'), "list", Arg::None, Tag::Cmd(Cmd::List)),
    (Some('Z'), "zero", Arg::None, Tag::Cmd(Cmd::Zero)),
    (Some('a'), "add-server", Arg::None, Tag::Cmd(Cmd::AddDest)),
    (Some('e'), "edit-server", Arg::None, Tag::Cmd(Cmd::EditDest)),
    (Some('d'), "delete-server", Arg::None, Tag::Cmd(Cmd::DelDest)),
    (None, "set", Arg::None, Tag::Cmd(Cmd::Timeout)),
    (Some('h'), "help", Arg::None, Tag::Help),
    (Some('v'), "version", Arg::None, Tag::Version),
    (Some('R'), "restore", Arg::None, Tag::Cmd(Cmd::Restore)),
    (Some('S'), "save", Arg::None, Tag::Cmd(Cmd::Save)),
    (None, "start-daemon", Arg::Required, Tag::Cmd(Cmd::StartDaemon)),
    (None, "stop-daemon", Arg::Required, Tag::Cmd(Cmd::StopDaemon)),
    (Some('t'), "tcp-service", Arg::Required, Tag::Tcp),
    (Some('u'), "udp-service", Arg::Required, Tag::Udp),
    (None, "sctp-service", Arg::Required, Tag::Sctp),
    (Some('f'), "fwmark-service", Arg::Required, Tag::Fwmark),
    (Some('s'), "scheduler", Arg::Required, Tag::Scheduler),
    (Some('p'), "persistent", Arg::Optional, Tag::Persistent),
    (Some('M'), "netmask", Arg::Required, Tag::Netmask),
    (Some('r'), "real-server", Arg::Required, Tag::Server),
    (Some('m'), "masquerading", Arg::None, Tag::Fwd(FwdMethod::Masq)),
    (Some('i'), "ipip", Arg::None, Tag::Fwd(FwdMethod::Tunnel)),
    (Some('g'), "gatewaying", Arg::None, Tag::Fwd(FwdMethod::Route)),
    (Some('w'), "weight", Arg::Required, Tag::Weight),
    (Some('x'), "u-threshold", Arg::Required, Tag::UThreshold),
    (Some('y'), "l-threshold", Arg::Required, Tag::LThreshold),
    (Some('n'), "numeric", Arg::None, Tag::Numeric),
    (Some('c'), "connection", Arg::None, Tag::Connection),
    (None, "mcast-interface", Arg::Required, Tag::McastIf),
    (None, "syncid", Arg::Required, Tag::SyncId),
    (None, "timeout", Arg::None, Tag::Timeout),
    (None, "daemon", Arg::None, Tag::Daemon),
    (None, "stats", Arg::None, Tag::Stats),
    (None, "rate", Arg::None, Tag::Rate),
    (None, "thresholds", Arg::None, Tag::Thresholds),
    (None, "persistent-conn", Arg::None, Tag::PersistentConn),
    (None, "nosort", Arg::None, Tag::NoSort),
    (None, "sort", Arg::None, Tag::Sort),
    (Some('X'), "exact", Arg::None, Tag::Exact),
    (Some('6'), "ipv6", Arg::None, Tag::Ipv6),
    (Some('o'), "ops", Arg::None, Tag::OnePacket),
    (None, "pe", Arg::Required, Tag::Pe),
    (Some('b'), "sched-flags", Arg::Required, Tag::SchedFlags),
    (None, "mcast-group", Arg::Required, Tag::McastGroup),
    (None, "mcast-port", Arg::Required, Tag::McastPort),
    (None, "mcast-ttl", Arg::Required, Tag::McastTtl),
    (None, "sync-maxlen", Arg::Required, Tag::SyncMaxlen),
    (None, "tun-info", Arg::None, Tag::TunInfo),
    (None, "tun-type", Arg::Required, Tag::TunType),
    (None, "tun-port", Arg::Required, Tag::TunPort),
    (None, "tun-nocsum", Arg::None, Tag::TunNocsum),
    (None, "tun-csum", Arg::None, Tag::TunCsum),
    (None, "tun-remcsum", Arg::None, Tag::TunRemcsum),
    (None, "json", Arg::None, Tag::Json),
    (None, "counters", Arg::None, Tag::Cmd(Cmd::Counters)),
    (None, "setting", Arg::Required, Tag::Cmd(Cmd::Setting)),
    (None, "settings", Arg::None, Tag::Settings),
];

/// One option occurrence: what it is and its value.
struct Occurrence {
    tag: Tag,
    value: Option<String>,
}

/// popt's errors: printed as `OPTION: REASON`; exit status 255 (ipvsadm returns -1).
fn popt_error(option: &str, reason: &str) -> Failure {
    Failure {
        code: 255,
        message: format!("{option}: {reason}"),
    }
}

/// Split the words into option occurrences and bare words, popt-style.
fn tokenize(args: &[String]) -> Result<(Vec<Occurrence>, Vec<String>), Failure> {
    let mut occ = Vec::new();
    let mut bare = Vec::new();
    let mut i = 0;
    let mut options_done = false;
    // The value an option takes from the next word.
    let next_value = |i: &mut usize, arg: Arg| -> Option<String> {
        let next = args.get(*i + 1)?;
        if arg == Arg::Optional && next.starts_with('-') {
            return None;
        }
        *i += 1;
        Some(next.clone())
    };
    while i < args.len() {
        let word = &args[i];
        if options_done || word == "-" || !word.starts_with('-') {
            bare.push(word.clone());
        } else if word == "--" {
            options_done = true;
        } else if let Some(long) = word.strip_prefix("--") {
            let (name, attached) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (long, None),
            };
            let &(_, _, arg, tag) = SPECS
                .iter()
                .find(|s| s.1 == name)
                .ok_or_else(|| popt_error(word, "unknown option"))?;
            let value = match arg {
                Arg::None => {
                    if attached.is_some() {
                        return Err(popt_error(word, "option does not take an argument"));
                    }
                    None
                }
                Arg::Required => Some(match attached {
                    Some(v) => v,
                    None => next_value(&mut i, arg)
                        .ok_or_else(|| popt_error(word, "missing argument"))?,
                }),
                Arg::Optional => attached.or_else(|| next_value(&mut i, arg)),
            };
            occ.push(Occurrence { tag, value });
        } else {
            // A cluster of short options: `-Ln`, `-At ADDR`, `-w3`, `-p600`.
            let cluster = &word[1..];
            for (pos, c) in cluster.char_indices() {
                let written = format!("-{c}");
                let &(_, _, arg, tag) = SPECS
                    .iter()
                    .find(|s| s.0 == Some(c))
                    .ok_or_else(|| popt_error(&written, "unknown option"))?;
                if arg == Arg::None {
                    occ.push(Occurrence { tag, value: None });
                    continue;
                }
                let rest = &cluster[pos + c.len_utf8()..];
                let value = if !rest.is_empty() {
                    Some(rest.to_string())
                } else if arg == Arg::Required {
                    Some(
                        next_value(&mut i, arg)
                            .ok_or_else(|| popt_error(&written, "missing argument"))?,
                    )
                } else {
                    next_value(&mut i, arg)
                };
                occ.push(Occurrence { tag, value });
                break;
            }
        }
        i += 1;
    }
    Ok((occ, bare))
}

/// Everything the options said, before the command-specific checks.
#[derive(Default)]
struct Given {
    options: u64,
    service: Option<ServiceAddr>,
    unsupported_service: Option<&'static str>,
    scheduler: Option<String>,
    persistence: Option<u32>,
    netmask: Option<String>,
    server: Option<(IpAddr, Option<u16>)>,
    fwd: FwdMethod,
    weight: u32,
    u_threshold: u32,
    l_threshold: u32,
    tun_type: Option<String>,
    sched_flags: Option<String>,
    setting: Option<String>,
    daemon_state: Option<String>,
    format: Format,
    settings_list: bool,
}

impl Given {
    /// ipvsadm's `set_option`: each option class at most once.
    fn set(&mut self, o: Opt) -> Result<(), Failure> {
        if self.options & o.bit() != 0 {
            return Err(usage(format!("multiple '{}' options specified", o.name())));
        }
        self.options |= o.bit();
        Ok(())
    }

    fn has(&self, o: Opt) -> bool {
        self.options & o.bit() != 0
    }
}

/// ipvsadm's `string_to_number`: a whole decimal number in `min..=max`.
fn number(s: &str, min: u64, max: u64) -> Option<u64> {
    let n: u64 = s.parse().ok()?;
    (min..=max).contains(&n).then_some(n)
}

/// ipvsadm's `parse_timeout`.
fn timeout(s: &str, min: u32) -> Result<u32, Failure> {
    number(s, u64::from(min), u64::from(MAX_TIMEOUT))
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| usage(format!("invalid timeout value `{s}' specified")))
}

/// A port number, or a service name from `/etc/services` (ipvsadm's `service_to_port`).
fn port(s: &str, protocol: Protocol) -> Option<u16> {
    if let Some(n) = number(s, 0, 65535) {
        return u16::try_from(n).ok();
    }
    if s.is_empty() || s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let proto = match protocol {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    };
    let text = std::fs::read_to_string("/etc/services").ok()?;
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut words = line.split_whitespace();
        let (Some(name), Some(pp)) = (words.next(), words.next()) else {
            continue;
        };
        let Some((p, pr)) = pp.split_once('/') else {
            continue;
        };
        if pr == proto && (name == s || words.any(|alias| alias == s)) {
            return p.parse().ok();
        }
    }
    None
}

/// An IPv4 host: dotted quad, or a host name resolved to its first IPv4 address (ipvsadm's
/// `host_to_addr`, which only resolves IPv4). Only words with a letter are looked up, so a
/// mistyped address (`203.0.113.300`) is refused at once, without asking a resolver.
fn host_v4(s: &str) -> Option<Ipv4Addr> {
    if let Ok(a) = s.parse() {
        return Some(a);
    }
    if !s.bytes().any(|b| b.is_ascii_alphabetic())
        || !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    {
        return None;
    }
    (s, 0u16)
        .to_socket_addrs()
        .ok()?
        .find_map(|a| match a.ip() {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        })
}

/// ipvsadm's `parse_service`: `host[:port]`, `IPV6`, `[IPV6]:port`. The port is `None` when
/// not given.
fn service_address(buf: &str, protocol: Protocol) -> Option<(IpAddr, Option<u16>)> {
    if buf.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if let Some(rest) = buf.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let p = after.strip_prefix(':')?;
        let a: Ipv6Addr = host.parse().ok()?;
        return Some((IpAddr::V6(a), Some(port(p, protocol)?)));
    }
    if let Ok(a) = buf.parse::<Ipv6Addr>() {
        return Some((IpAddr::V6(a), None));
    }
    match buf.rsplit_once(':') {
        Some((host, p)) => Some((IpAddr::V4(host_v4(host)?), Some(port(p, protocol)?))),
        None => Some((IpAddr::V4(host_v4(buf)?), None)),
    }
}

/// ipvsadm's `parse_sched_flags`, for RVS's two flag bits.
fn sched_flags(sched: &str, arg: &str) -> Result<SchedFlags, Failure> {
    let mut f = SchedFlags::default();
    let flags: Vec<&str> = arg.split(',').filter(|s| !s.is_empty()).collect();
    if flags.is_empty() {
        return Err(usage(format!("invalid scheduler flag `{arg}'")));
    }
    for flag in flags {
        let needs = match flag {
            "flag-1" => {
                f.fallback = true;
                None
            }
            "flag-2" => {
                f.port = true;
                None
            }
            "flag-3" => {
                return Err(usage(
                    "scheduler flag `flag-3' is not supported by rvs (no scheduler uses it)",
                ));
            }
            "sh-fallback" => {
                f.fallback = true;
                Some("sh")
            }
            "sh-port" => {
                f.port = true;
                Some("sh")
            }
            "mh-fallback" => {
                f.fallback = true;
                Some("mh")
            }
            "mh-port" => {
                f.port = true;
                Some("mh")
            }
            _ => return Err(usage(format!("invalid scheduler flag `{flag}'"))),
        };
        if needs.is_some_and(|n| n != sched) {
            return Err(usage(format!("incompatible scheduler flag `{flag}'")));
        }
    }
    Ok(f)
}

/// ipvsadm's `generic_opt_check`.
fn check_options(cmd: Cmd, options: u64) -> Result<(), Failure> {
    let legal = cmd.legal();
    let mut first_exclusive: Option<Opt> = None;
    for (o, &rule) in Opt::ALL.iter().zip(legal.iter()) {
        let given = options & o.bit() != 0;
        match (given, rule) {
            (false, b'+') => {
                return Err(usage(format!(
                    "You need to supply the '{}' option for the '{}' command",
                    o.name(),
                    cmd.name()
                )));
            }
            (true, b'x') => {
                return Err(usage(format!(
                    "Illegal '{}' option with the '{}' command",
                    o.name(),
                    cmd.name()
                )));
            }
            (true, b'1') => match first_exclusive {
                None => first_exclusive = Some(*o),
                Some(last) => {
                    return Err(usage(format!(
                        "The option '{}' conflicts with the '{}' option in the '{}' command",
                        o.name(),
                        last.name(),
                        cmd.name()
                    )));
                }
            },
            _ => {}
        }
    }
    Ok(())
}

/// Parse a command line (`args[0]` is the program name).
pub(crate) fn parse(args: &[String]) -> Result<Invocation, Failure> {
    let program = args.first().map_or("rvsadm", String::as_str);
    let rest = args.get(1..).unwrap_or(&[]);
    if rest.is_empty() {
        return Ok(Invocation {
            action: Action::ListAll(Format::default()),
            json: false,
        });
    }
    let tryhelp = || Failure {
        code: 255,
        message: format!("Try `{program} -h' or '{program} --help' for more information."),
    };
    let (occ, bare) = match tokenize(rest) {
        Ok(t) => t,
        // An error on the first option is reported as ipvsadm does: with the help hint.
        Err(e) => {
            let first_is_bad = rest
                .iter()
                .find(|w| w.starts_with('-') && w.as_str() != "-")
                .is_some_and(|w| tokenize(std::slice::from_ref(w)).is_err());
            return Err(if first_is_bad { tryhelp() } else { e });
        }
    };
    let mut occ = occ.into_iter();
    let first = occ.next().ok_or_else(tryhelp)?;
    let mut g = Given {
        weight: 1,
        ..Given::default()
    };
    let cmd = match first.tag {
        Tag::Help => {
            return Ok(Invocation {
                action: Action::Help,
                json: false,
            });
        }
        Tag::Version => {
            return Ok(Invocation {
                action: Action::Version,
                json: false,
            });
        }
        Tag::Settings => {
            g.settings_list = true;
            Cmd::Setting
        }
        Tag::Cmd(c) => {
            if c == Cmd::StartDaemon || c == Cmd::StopDaemon {
                g.daemon_state = first.value.clone();
            }
            if c == Cmd::Setting {
                g.setting = first.value.clone();
            }
            c
        }
        _ => return Err(tryhelp()),
    };
    for o in occ {
        take(&mut g, o)?;
    }

    let mut bare = bare.into_iter();
    let mut set_timeouts = None;
    if cmd == Cmd::Timeout {
        let (Some(a), Some(b), Some(c)) = (bare.next(), bare.next(), bare.next()) else {
            return Err(usage("--set option requires 3 timeout values"));
        };
        set_timeouts = Some(Timeouts {
            tcp: timeout(&a, 0)?,
            tcpfin: timeout(&b, 0)?,
            udp: timeout(&c, 0)?,
        });
    }
    if let Some(extra) = bare.next() {
        return Err(usage(format!("unexpected argument {extra}")));
    }
    let sched = g.scheduler.clone().unwrap_or_else(|| DEF_SCHED.to_string());
    let flags = match &g.sched_flags {
        Some(arg) => sched_flags(&sched, arg)?,
        None => SchedFlags::default(),
    };

    check_options(cmd, g.options)?;

    // Features RVS does not have: refused by name, never half-done.
    if let Some(what) = g.unsupported_service {
        return Err(usage(format!("{what} are not supported by rvs")));
    }
    if matches!(cmd, Cmd::StartDaemon | Cmd::StopDaemon) {
        let state = g.daemon_state.as_deref().unwrap_or("");
        if state != "master" && state != "backup" {
            return Err(usage(if cmd == Cmd::StartDaemon {
                "illegal start-daemon parameter specified"
            } else {
                "illegal start_daemon specified"
            }));
        }
        return Err(usage(
            "the connection synchronisation daemon is not supported by rvs",
        ));
    }

    let json = g.has(Opt::Json);
    let action = match cmd {
        Cmd::Add | Cmd::Edit => {
            let svc = g.service.ok_or_else(|| usage("missing service"))?;
            if svc.port == 0 && g.persistence.is_none() {
                return Err(usage("Zero port specified for non-persistent service"));
            }
            if g.has(Opt::OnePacket) {
                return Err(usage(if svc.protocol == Protocol::Udp {
                    "One-Packet Scheduling is not supported by rvs"
                } else {
                    "One-Packet Scheduling is only for UDP virtual services"
                }));
            }
            if g.has(Opt::Pe) {
                // The kernel's answer to a persistence engine it does not have.
                return Err(Failure {
                    code: 255,
                    message: "Scheduler or persistence engine not found".into(),
                });
            }
            let netmask = match &g.netmask {
                None => None,
                Some(m) => Some(netmask(m, svc.addr)?),
            };
            let cfg = ServiceConfig {
                service: svc,
                scheduler: sched,
                sched_flags: flags,
                persistence: g.persistence,
                netmask,
            };
            Action::Change(if cmd == Cmd::Add {
                Request::AddService(cfg)
            } else {
                Request::EditService(cfg)
            })
        }
        Cmd::Del => Action::Change(Request::DeleteService(
            g.service.ok_or_else(|| usage("missing service"))?,
        )),
        Cmd::AddDest | Cmd::EditDest | Cmd::DelDest => {
            let svc = g.service.ok_or_else(|| usage("missing service"))?;
            let (addr, p) = g.server.ok_or_else(|| usage("missing real server"))?;
            // No port: the virtual port. DR and TUN always use the virtual port (ipvsadm
            // overwrites it before asking the kernel).
            let mut dport = p.unwrap_or(svc.port);
            if cmd != Cmd::DelDest {
                if g.fwd != FwdMethod::Masq {
                    dport = svc.port;
                }
                if addr.is_ipv4() != svc.addr.is_ipv4() && g.fwd != FwdMethod::Tunnel {
                    return Err(usage(
                        "Different address family is allowed only for tunneling servers",
                    ));
                }
                let tun_opts = Opt::TunType.bit()
                    | Opt::TunPort.bit()
                    | Opt::TunNocsum.bit()
                    | Opt::TunCsum.bit()
                    | Opt::TunRemcsum.bit();
                if g.options & tun_opts != 0 && g.fwd != FwdMethod::Tunnel {
                    return Err(usage("Tunnel options conflict with forward method"));
                }
                check_tunnel(&g)?;
            }
            if cmd == Cmd::DelDest {
                Action::Change(Request::DeleteDest {
                    service: svc,
                    addr,
                    port: dport,
                })
            } else {
                let dest = DestConfig {
                    addr,
                    port: dport,
                    fwd: g.fwd,
                    weight: g.weight,
                    u_threshold: g.u_threshold,
                    l_threshold: g.l_threshold,
                };
                Action::Change(if cmd == Cmd::AddDest {
                    Request::AddDest { service: svc, dest }
                } else {
                    Request::EditDest { service: svc, dest }
                })
            }
        }
        Cmd::Flush => Action::Change(Request::Clear),
        Cmd::Zero => Action::Change(Request::Zero { service: g.service }),
        Cmd::Timeout => Action::Change(Request::SetTimeouts(
            set_timeouts.ok_or_else(|| usage("--set option requires 3 timeout values"))?,
        )),
        Cmd::Restore => Action::Restore,
        Cmd::Save => Action::Save,
        Cmd::Counters => Action::Counters,
        Cmd::Setting => match (g.settings_list, g.setting) {
            (true, _) | (false, None) => Action::GetSetting(None),
            (false, Some(s)) => match s.split_once('=') {
                Some((name, value)) => Action::Change(Request::SetSetting {
                    name: name.trim().to_string(),
                    value: value.trim().to_string(),
                }),
                None => Action::GetSetting(Some(s.trim().to_string())),
            },
        },
        Cmd::List => {
            let listing = Opt::Stats.bit() | Opt::Rate.bit() | Opt::Thresholds.bit();
            let other = Opt::Connection.bit() | Opt::Timeout.bit() | Opt::Daemon.bit();
            if (g.options & other != 0 && g.options & listing != 0)
                || (g.options & (Opt::Timeout.bit() | Opt::Daemon.bit()) != 0
                    && g.has(Opt::PersistentConn))
            {
                return Err(usage("options conflicts in the list command"));
            }
            if g.has(Opt::Connection) {
                Action::ListConns {
                    persistent_conn: g.has(Opt::PersistentConn),
                }
            } else if let Some(s) = g.service {
                Action::ListService(s, g.format)
            } else if g.has(Opt::Timeout) {
                Action::ListTimeout
            } else if g.has(Opt::Daemon) {
                Action::ListDaemon
            } else {
                Action::ListAll(g.format)
            }
        }
        Cmd::StartDaemon | Cmd::StopDaemon => return Err(usage("unsupported command")),
    };
    Ok(Invocation { action, json })
}

/// `-M`: a dotted mask for IPv4 services, a prefix length 1..=128 for IPv6 ones.
fn netmask(m: &str, vaddr: IpAddr) -> Result<Netmask, Failure> {
    match vaddr {
        IpAddr::V4(_) => m
            .parse()
            .map(Netmask::V4)
            .map_err(|_| usage("illegal virtual server persistent mask specified")),
        IpAddr::V6(_) => number(m, 1, 128)
            .and_then(|n| u8::try_from(n).ok())
            .map(Netmask::V6)
            .ok_or_else(|| usage("illegal ipv6 netmask specified")),
    }
}

/// ipvsadm's `tunnel_opt_check` for RVS's only tunnel type, `ipip`.
fn check_tunnel(g: &Given) -> Result<(), Failure> {
    match g.tun_type.as_deref() {
        None | Some("ipip") => {}
        Some(t) => {
            return Err(usage(format!(
                "tunnel type {t} is not supported by rvs (only ipip)"
            )));
        }
    }
    for o in [Opt::TunPort, Opt::TunNocsum, Opt::TunCsum, Opt::TunRemcsum] {
        if g.has(o) {
            return Err(usage(format!(
                "Illegal '{}' option with the 'ipip' tunnel type",
                o.name()
            )));
        }
    }
    Ok(())
}

/// Record one option (ipvsadm's `parse_options` loop body).
fn take(g: &mut Given, o: Occurrence) -> Result<(), Failure> {
    let v = o.value.clone().unwrap_or_default();
    match o.tag {
        Tag::Cmd(_) | Tag::Help | Tag::Version | Tag::Settings => {
            return Err(usage("multiple commands specified"));
        }
        Tag::Tcp | Tag::Udp => {
            g.set(Opt::Service)?;
            let protocol = if o.tag == Tag::Tcp {
                Protocol::Tcp
            } else {
                Protocol::Udp
            };
            let (addr, port) = service_address(&v, protocol)
                .ok_or_else(|| usage("illegal virtual server address[:port] specified"))?;
            g.service = Some(ServiceAddr {
                protocol,
                addr,
                port: port.unwrap_or(0),
            });
        }
        Tag::Sctp => {
            g.set(Opt::Service)?;
            g.unsupported_service = Some("SCTP services");
        }
        Tag::Fwmark => {
            g.set(Opt::Service)?;
            match v.parse::<u64>() {
                Ok(n) if (1..=u64::from(u32::MAX)).contains(&n) => {}
                _ => return Err(usage(format!("invalid fwmark value `{v}' specified"))),
            }
            g.unsupported_service = Some("fwmark services");
        }
        Tag::Ipv6 => {
            if g.unsupported_service != Some("fwmark services") {
                return Err(usage("-6 used before -f"));
            }
        }
        Tag::Scheduler => {
            g.set(Opt::Scheduler)?;
            g.scheduler = Some(v);
        }
        Tag::Persistent => {
            g.set(Opt::Persistent)?;
            g.persistence = Some(match o.value.as_deref() {
                None => DEFAULT_PERSISTENCE,
                Some(s) => timeout(s, 1)?,
            });
        }
        Tag::Netmask => {
            g.set(Opt::Netmask)?;
            g.netmask = Some(v);
        }
        Tag::Server => {
            g.set(Opt::Server)?;
            // The protocol only matters for port names; the service's, when known.
            let protocol = g.service.map_or(Protocol::Tcp, |s| s.protocol);
            g.server = Some(
                service_address(&v, protocol)
                    .ok_or_else(|| usage("illegal real server address[:port] specified"))?,
            );
        }
        Tag::Fwd(f) => {
            g.set(Opt::Forward)?;
            g.fwd = f;
        }
        Tag::Weight => {
            g.set(Opt::Weight)?;
            g.weight = number(&v, 0, 65535)
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| usage("illegal weight specified"))?;
        }
        Tag::UThreshold => {
            g.set(Opt::UThreshold)?;
            g.u_threshold = number(&v, 0, i32::MAX as u64)
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| usage("illegal u_threshold specified"))?;
        }
        Tag::LThreshold => {
            g.set(Opt::LThreshold)?;
            g.l_threshold = number(&v, 0, i32::MAX as u64)
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| usage("illegal l_threshold specified"))?;
        }
        Tag::Numeric => g.set(Opt::Numeric)?,
        Tag::Connection => g.set(Opt::Connection)?,
        Tag::McastIf => g.set(Opt::Mcast)?,
        Tag::SyncId => {
            g.set(Opt::SyncId)?;
            number(&v, 0, 255).ok_or_else(|| usage("illegal syncid specified"))?;
        }
        Tag::Timeout => g.set(Opt::Timeout)?,
        Tag::Daemon => g.set(Opt::Daemon)?,
        Tag::Stats => {
            g.set(Opt::Stats)?;
            g.format.stats = true;
        }
        Tag::Rate => {
            g.set(Opt::Rate)?;
            g.format.rate = true;
        }
        Tag::Thresholds => {
            g.set(Opt::Thresholds)?;
            g.format.thresholds = true;
        }
        Tag::PersistentConn => {
            g.set(Opt::PersistentConn)?;
            g.format.persistent_conn = true;
        }
        Tag::NoSort => {
            g.set(Opt::NoSort)?;
            g.format.nosort = true;
        }
        // Sorting is the default: a no-op kept for compatibility, as in ipvsadm.
        Tag::Sort => {}
        Tag::Exact => {
            g.set(Opt::Exact)?;
            g.format.exact = true;
        }
        Tag::OnePacket => g.set(Opt::OnePacket)?,
        Tag::Pe => g.set(Opt::Pe)?,
        Tag::SchedFlags => {
            g.set(Opt::SchedFlags)?;
            g.sched_flags = Some(v);
        }
        Tag::McastGroup => {
            g.set(Opt::McastGroup)?;
            match v.parse::<IpAddr>() {
                Ok(IpAddr::V4(a)) if a.is_multicast() => {}
                Ok(IpAddr::V6(a)) if a.is_multicast() => {}
                _ if v.contains(':') => {
                    return Err(usage(format!("invalid IPv6 mcast-group `{v}'")));
                }
                _ => return Err(usage(format!("invalid IPv4 mcast-group `{v}'"))),
            }
        }
        Tag::McastPort => {
            g.set(Opt::McastPort)?;
            number(&v, 1, 65535).ok_or_else(|| usage("illegal mcast-port specified"))?;
        }
        Tag::McastTtl => {
            g.set(Opt::McastTtl)?;
            number(&v, 1, 255).ok_or_else(|| usage("illegal mcast-ttl specified"))?;
        }
        Tag::SyncMaxlen => {
            g.set(Opt::SyncMaxlen)?;
            number(&v, 1, 65535 - 20 - 8).ok_or_else(|| usage("illegal sync-maxlen specified"))?;
        }
        Tag::TunInfo => {
            g.set(Opt::TunInfo)?;
            g.format.tun_info = true;
        }
        Tag::TunType => {
            g.set(Opt::TunType)?;
            if !matches!(v.as_str(), "ipip" | "gue" | "gre") {
                return Err(usage("illegal tunnel type specified"));
            }
            g.tun_type = Some(v);
        }
        Tag::TunPort => {
            g.set(Opt::TunPort)?;
            number(&v, 1, 65535).ok_or_else(|| usage("illegal tunnel port specified"))?;
        }
        Tag::TunNocsum => g.set(Opt::TunNocsum)?,
        Tag::TunCsum => g.set(Opt::TunCsum)?,
        Tag::TunRemcsum => g.set(Opt::TunRemcsum)?,
        Tag::Json => g.set(Opt::Json)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(line: &str) -> Result<Invocation, Failure> {
        let mut args = vec!["rvsadm".to_string()];
        args.extend(line.split_whitespace().map(String::from));
        parse(&args)
    }

    fn change(line: &str) -> Request {
        match p(line) {
            Ok(Invocation {
                action: Action::Change(r),
                ..
            }) => r,
            other => panic!("{line}: {other:?}"),
        }
    }

    fn fails(line: &str) -> (u8, String) {
        match p(line) {
            Err(f) => (f.code, f.message),
            Ok(i) => panic!("{line}: parsed as {i:?}"),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn tcp(a: &str, port: u16) -> ServiceAddr {
        ServiceAddr {
            protocol: Protocol::Tcp,
            addr: ip(a),
            port,
        }
    }

    #[test]
    fn the_option_table_has_a_column_per_option() {
        for c in [
            Cmd::Add,
            Cmd::Del,
            Cmd::Flush,
            Cmd::List,
            Cmd::AddDest,
            Cmd::DelDest,
            Cmd::StartDaemon,
            Cmd::StopDaemon,
            Cmd::Save,
            Cmd::Zero,
            Cmd::Counters,
        ] {
            assert_eq!(c.legal().len(), OPTS);
        }
        assert_eq!(Opt::ALL.len(), OPTS);
        for (i, o) in Opt::ALL.iter().enumerate() {
            assert_eq!(*o as usize, i);
        }
    }

    #[test]
    fn services_with_defaults_and_options() {
        assert_eq!(
            change("-A -t 203.0.113.10:80"),
            Request::AddService(ServiceConfig::new(tcp("203.0.113.10", 80)))
        );
        let r = change("-A -u [2001:db8::10]:53 -s sh -b sh-port,sh-fallback -p -M 64");
        assert_eq!(
            r,
            Request::AddService(ServiceConfig {
                service: ServiceAddr {
                    protocol: Protocol::Udp,
                    addr: ip("2001:db8::10"),
                    port: 53
                },
                scheduler: "sh".into(),
                sched_flags: SchedFlags {
                    fallback: true,
                    port: true
                },
                persistence: Some(300),
                netmask: Some(Netmask::V6(64)),
            })
        );
        // Combined short options, attached values, long options with '='.
        let r = change("-Et 203.0.113.10:80 -srr -p600 --netmask=255.255.255.0");
        let Request::EditService(c) = r else {
            panic!("{r:?}")
        };
        assert_eq!(
            (c.scheduler.as_str(), c.persistence, c.netmask),
            (
                "rr",
                Some(600),
                Some(Netmask::V4("255.255.255.0".parse().unwrap()))
            )
        );
        // -p's value is optional: the next word is not taken when it is an option.
        let r = change("-A -t 203.0.113.10:0 -p -s rr");
        let Request::AddService(c) = r else {
            panic!("{r:?}")
        };
        assert_eq!((c.persistence, c.scheduler.as_str()), (Some(300), "rr"));
        assert_eq!(
            change("-D -t 203.0.113.10:80"),
            Request::DeleteService(tcp("203.0.113.10", 80))
        );
        assert_eq!(
            change("--delete-service --tcp-service 203.0.113.10:80"),
            Request::DeleteService(tcp("203.0.113.10", 80))
        );
    }

    #[test]
    fn dests_with_ipvsadm_port_rules() {
        let svc = tcp("203.0.113.10", 80);
        // Default: DR, weight 1, the virtual port.
        assert_eq!(
            change("-a -t 203.0.113.10:80 -r 198.51.100.11"),
            Request::AddDest {
                service: svc,
                dest: DestConfig::new(ip("198.51.100.11"), 80)
            }
        );
        // DR ignores a given port, NAT keeps it.
        let Request::AddDest { dest, .. } =
            change("-a -t 203.0.113.10:80 -r 198.51.100.11:8080 -g")
        else {
            panic!()
        };
        assert_eq!(dest.port, 80);
        let Request::EditDest { dest, .. } =
            change("-e -t 203.0.113.10:80 -r 198.51.100.11:8080 -m -w 0 -x 100 -y 50")
        else {
            panic!()
        };
        assert_eq!(
            dest,
            DestConfig {
                addr: ip("198.51.100.11"),
                port: 8080,
                fwd: FwdMethod::Masq,
                weight: 0,
                u_threshold: 100,
                l_threshold: 50
            }
        );
        assert_eq!(
            change("-d -t 203.0.113.10:80 -r 198.51.100.11:8080"),
            Request::DeleteDest {
                service: svc,
                addr: ip("198.51.100.11"),
                port: 8080
            }
        );
        // Tunnels may take --tun-type ipip only.
        let Request::AddDest { dest, .. } =
            change("-a -t 203.0.113.10:80 -r 198.51.100.11 -i --tun-type ipip")
        else {
            panic!()
        };
        assert_eq!(dest.fwd, FwdMethod::Tunnel);
    }

    #[test]
    fn listings_and_other_commands() {
        let list = |l: &str| p(l).unwrap().action;
        assert_eq!(list("-Ln"), Action::ListAll(Format::default()));
        assert_eq!(list("-l"), Action::ListAll(Format::default()));
        assert_eq!(
            list("-L -n --stats --exact"),
            Action::ListAll(Format {
                stats: true,
                exact: true,
                ..Format::default()
            })
        );
        assert_eq!(
            list("-L -t 203.0.113.10:80 --rate"),
            Action::ListService(
                tcp("203.0.113.10", 80),
                Format {
                    rate: true,
                    ..Format::default()
                }
            )
        );
        assert_eq!(
            list("-Lnc"),
            Action::ListConns {
                persistent_conn: false
            }
        );
        assert_eq!(list("-L --timeout"), Action::ListTimeout);
        assert_eq!(list("-L --daemon"), Action::ListDaemon);
        assert_eq!(list("-S -n"), Action::Save);
        assert_eq!(list("-R"), Action::Restore);
        assert_eq!(list("-h"), Action::Help);
        assert_eq!(list("--version"), Action::Version);
        assert_eq!(list("--counters"), Action::Counters);
        assert_eq!(list("--settings"), Action::GetSetting(None));
        assert_eq!(
            list("--setting timeout_tcp"),
            Action::GetSetting(Some("timeout_tcp".into()))
        );
        assert_eq!(
            change("--setting expire_nodest_conn=1"),
            Request::SetSetting {
                name: "expire_nodest_conn".into(),
                value: "1".into()
            }
        );
        assert!(p("-L -n --json").unwrap().json);
        assert_eq!(change("-C"), Request::Clear);
        assert_eq!(change("-Z"), Request::Zero { service: None });
        assert_eq!(
            change("-Z -t 203.0.113.10:80"),
            Request::Zero {
                service: Some(tcp("203.0.113.10", 80))
            }
        );
        assert_eq!(
            change("--set 900 0 300"),
            Request::SetTimeouts(Timeouts {
                tcp: 900,
                tcpfin: 0,
                udp: 300
            })
        );
        assert_eq!(
            p("").unwrap().action,
            Action::ListAll(Format::default()),
            "no arguments lists the table"
        );
    }

    #[test]
    fn mistakes_get_ipvsadms_messages_and_status() {
        let cases: &[(&str, u8, &str)] = &[
            (
                "-a -t 203.0.113.10:80",
                2,
                "You need to supply the 'real-server' option for the 'add-server' command",
            ),
            (
                "-A",
                2,
                "You need to supply the 'service-address' option for the 'add-service' command",
            ),
            (
                "-A -t 203.0.113.10:80 -r 198.51.100.1",
                2,
                "Illegal 'real-server' option with the 'add-service' command",
            ),
            (
                "-L -c --timeout",
                2,
                "The option 'timeout' conflicts with the 'connection' option in the 'list' command",
            ),
            ("-L -c --stats", 2, "options conflicts in the list command"),
            ("-A -t 203.0.113.10:80 -L", 2, "multiple commands specified"),
            (
                "-a -t 203.0.113.10:80 -r 198.51.100.1 -m -g",
                2,
                "multiple 'forwarding-method' options specified",
            ),
            (
                "-A -t 203.0.113.10:80 -u 203.0.113.10:53",
                2,
                "multiple 'service-address' options specified",
            ),
            (
                "-A -t 203.0.113.300:80",
                2,
                "illegal virtual server address[:port] specified",
            ),
            (
                "-A -t 8080",
                2,
                "illegal virtual server address[:port] specified",
            ),
            (
                "-A -t [2001:db8::1]",
                2,
                "illegal virtual server address[:port] specified",
            ),
            (
                "-a -t 203.0.113.10:80 -r 198.51.100.1:99999",
                2,
                "illegal real server address[:port] specified",
            ),
            (
                "-a -t 203.0.113.10:80 -r 198.51.100.1 -w 65536",
                2,
                "illegal weight specified",
            ),
            (
                "-a -t 203.0.113.10:80 -r 198.51.100.1 -x -1",
                2,
                "illegal u_threshold specified",
            ),
            (
                "-A -t 203.0.113.10:80 -p 0",
                2,
                "invalid timeout value `0' specified",
            ),
            (
                "-A -t 203.0.113.10:0",
                2,
                "Zero port specified for non-persistent service",
            ),
            (
                "-A -t 203.0.113.10:80 -M 24 -p",
                2,
                "illegal virtual server persistent mask specified",
            ),
            (
                "-A -t [2001:db8::1]:80 -M 129 -p",
                2,
                "illegal ipv6 netmask specified",
            ),
            (
                "-A -t 203.0.113.10:80 -b sh-port",
                2,
                "incompatible scheduler flag `sh-port'",
            ),
            (
                "-A -t 203.0.113.10:80 -s sh -b sh-nope",
                2,
                "invalid scheduler flag `sh-nope'",
            ),
            ("--set 900 120", 2, "--set option requires 3 timeout values"),
            ("--set 900 120 300 5", 2, "unexpected argument 5"),
            ("-C extra", 2, "unexpected argument extra"),
            (
                "-a -t 203.0.113.10:80 -r 2001:db8::1 -g",
                2,
                "Different address family is allowed only for tunneling servers",
            ),
            (
                "-a -t 203.0.113.10:80 -r 198.51.100.1 -g --tun-type ipip",
                2,
                "Tunnel options conflict with forward method",
            ),
            ("-A -f 1", 2, "fwmark services are not supported by rvs"),
            (
                "-A --sctp-service 203.0.113.10:80",
                2,
                "SCTP services are not supported by rvs",
            ),
            (
                "-A -t 203.0.113.10:80 -o",
                2,
                "One-Packet Scheduling is only for UDP virtual services",
            ),
            (
                "--start-daemon master",
                2,
                "the connection synchronisation daemon is not supported by rvs",
            ),
            (
                "-n -L",
                255,
                "Try `rvsadm -h' or 'rvsadm --help' for more information.",
            ),
            (
                "--bogus",
                255,
                "Try `rvsadm -h' or 'rvsadm --help' for more information.",
            ),
            ("-L --bogus", 255, "--bogus: unknown option"),
            ("-A -t", 255, "-t: missing argument"),
            ("-A -t 203.0.113.10:80 -s", 255, "-s: missing argument"),
        ];
        for &(line, code, msg) in cases {
            assert_eq!(fails(line), (code, msg.to_string()), "{line}");
        }
    }

    #[test]
    fn addresses_like_parse_service() {
        let t = |s: &str| service_address(s, Protocol::Tcp);
        assert_eq!(t("203.0.113.1"), Some((ip("203.0.113.1"), None)));
        assert_eq!(t("203.0.113.1:0"), Some((ip("203.0.113.1"), Some(0))));
        assert_eq!(t("2001:db8::1"), Some((ip("2001:db8::1"), None)));
        assert_eq!(t("[2001:db8::1]:443"), Some((ip("2001:db8::1"), Some(443))));
        assert_eq!(t("[203.0.113.1]:80"), None);
        assert_eq!(t("[2001:db8::1]443"), None);
        assert_eq!(t(""), None);
        assert_eq!(t("80"), None);
        assert_eq!(t("203.0.113.1:"), None);
        // Port names come from /etc/services when there is one.
        if std::fs::read_to_string("/etc/services").is_ok_and(|s| s.contains("\nhttp\t")) {
            assert_eq!(t("203.0.113.1:http"), Some((ip("203.0.113.1"), Some(80))));
        }
    }
}
