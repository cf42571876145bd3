//! The director's configuration file (TOML): director settings, per-service reply policies,
//! health checks, the metrics listener and logging. Shared by the daemon (`--config`, reloaded
//! on SIGHUP), `rvsd --check-config` and `rvsd replay --config`.
//!
//! ```toml
//! # Director settings, flat, by their IPVS sysctl names (crates/rvs-core/src/settings.rs).
//! expire_nodest_conn = false
//! timeout_tcp = 900
//!
//! [service."tcp/203.0.113.10:80"]      # per-service reply policy
//! expired_reply = "icmp"
//!
//! [health_check."tcp/203.0.113.10:80"] # checks every dest of this service
//! kind = "http"
//! path = "/healthz"
//! interval = "1s"
//! [health_check."tcp/203.0.113.10:80".dest."198.51.100.12"]
//! port = 8080                          # per-dest override
//!
//! [metrics]
//! listen = "127.0.0.1:9753"
//!
//! [log]
//! format = "json"
//! ```
//!
//! Every field, its unit and its default are in `packaging/rvsd.toml` (a test keeps that file
//! and this schema in step). Unknown fields are refused; every mistake is reported with its line
//! number and the reason ([`ConfigError`]), before anything starts or changes.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use rvs_core::director::{Director, ServicePolicy};
use rvs_core::rules::{Rule, parse_line, parse_rules};
use rvs_core::settings::Settings;
use rvs_core::types::{Protocol, ServiceKey};
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use toml::Spanned;

use crate::replay::usage;

/// Default address of the Prometheus listener: loopback only, port 9753.
pub(crate) const DEFAULT_METRICS_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9753);

/// Shortest accepted health-check interval or timeout.
const MIN_CHECK_TIME: Duration = Duration::from_millis(10);
/// Longest accepted health-check interval or timeout (one day).
const MAX_CHECK_TIME: Duration = Duration::from_secs(86_400);
/// Largest accepted `rise` / `fall`.
const MAX_COUNT: u32 = 1000;

/// The whole configuration, validated.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Config {
    /// Director settings: defaults, then the file's, then `--set`.
    pub(crate) settings: Settings,
    /// Per-service reply policies (`[service."tcp/VIP:port"]`).
    pub(crate) policies: Vec<(ServiceKey, ServicePolicy)>,
    /// Health checks by service (`[health_check."tcp/VIP:port"]`).
    pub(crate) health_checks: BTreeMap<ServiceKey, HealthCheck>,
    /// The Prometheus listener (`[metrics]`).
    pub(crate) metrics: MetricsConfig,
    /// Logging (`[log]`).
    pub(crate) log: LogConfig,
}

/// `[metrics]`: the Prometheus `/metrics` listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct MetricsConfig {
    /// `enabled` (default true): serve `/metrics`.
    pub(crate) enabled: bool,
    /// `listen` (default `127.0.0.1:9753`): address and port of the HTTP listener. Loopback by
    /// default: the metrics name every service and dest.
    #[serde(deserialize_with = "listen_addr")]
    pub(crate) listen: SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: true,
            listen: DEFAULT_METRICS_LISTEN,
        }
    }
}

fn listen_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(|_| {
        de::Error::custom(format!(
            "listen {s:?}: expected ADDRESS:PORT, such as \"127.0.0.1:9753\" or \"[::1]:9753\""
        ))
    })
}

/// Log line format (`[log] format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    /// `human` (default): one readable line per event.
    #[default]
    Human,
    /// `json`: one JSON object per line.
    Json,
}

/// `[log]`: what the daemon logs and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogConfig {
    /// `format` (default `human`).
    pub(crate) format: LogFormat,
    /// `level` (default `info`): a level (`error`, `warn`, `info`, `debug`, `trace`, `off`) or
    /// `tracing` filter directives (`info,rvsd::health=debug`). `RUST_LOG` overrides it.
    pub(crate) level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Human,
            level: "info".to_owned(),
        }
    }
}

/// What a health check does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum CheckKind {
    /// `tcp`: a TCP connection to the dest's port is established (then closed).
    Tcp,
    /// `http`: an HTTP/1.1 `GET` answers with the expected status (and body text).
    Http,
}

impl CheckKind {
    /// The config-file name.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            CheckKind::Tcp => "tcp",
            CheckKind::Http => "http",
        }
    }
}

/// What happens to a dest whose check fails `fall` times in a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum OnFail {
    /// `quiesce` (default): weight 0 — no new connections, existing ones keep flowing.
    #[default]
    Quiesce,
    /// `remove`: the dest is deleted (its connections live on as for any deleted dest, see
    /// `expire_nodest_conn`) and added back when it recovers.
    Remove,
}

/// One probe: what is sent to one dest and what counts as success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Probe {
    /// TCP connect or HTTP GET.
    pub(crate) kind: CheckKind,
    /// The port probed; `None`: the dest's own port.
    pub(crate) port: Option<u16>,
    /// HTTP: the request path.
    pub(crate) path: String,
    /// HTTP: the `Host` header; `None`: the dest's address and port.
    pub(crate) host: Option<String>,
    /// HTTP: the status that counts as success.
    pub(crate) expect_status: u16,
    /// HTTP: text the body must contain.
    pub(crate) body_contains: Option<String>,
}

/// Per-dest overrides of a health check (`[health_check."tcp/VIP:port".dest."ADDR"]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DestOverride {
    /// The dest's address.
    pub(crate) addr: IpAddr,
    /// The dest's port, when the key names one (`"ADDR:PORT"`); `None` matches every port.
    pub(crate) port: Option<u16>,
    /// false: this dest is not checked (it keeps its configured weight).
    pub(crate) enabled: bool,
    /// Overrides of the probe (only what the section sets).
    pub(crate) probe: ProbeOverride,
}

/// Probe fields a per-dest section may override.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct ProbeOverride {
    port: Option<u16>,
    path: Option<String>,
    host: Option<String>,
    expect_status: Option<u16>,
    body_contains: Option<String>,
}

/// A health check of every dest of one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HealthCheck {
    /// The probe, before per-dest overrides.
    pub(crate) probe: Probe,
    /// Time between the starts of two checks of a dest.
    pub(crate) interval: Duration,
    /// How long one check may take (connect, request and response together).
    pub(crate) timeout: Duration,
    /// Successes in a row that bring a down dest back.
    pub(crate) rise: u32,
    /// Failures in a row that take an up dest down.
    pub(crate) fall: u32,
    /// What "down" does to the dest.
    pub(crate) on_fail: OnFail,
    /// Per-dest overrides, most specific (`ADDR:PORT`) first.
    pub(crate) dests: Vec<DestOverride>,
}

impl HealthCheck {
    /// The probe for the dest `addr:port` with its overrides applied and its port resolved;
    /// `None` when the dest is not to be checked (disabled, or no port to probe).
    pub(crate) fn probe_for(&self, addr: IpAddr, port: u16) -> Option<Probe> {
        let mut p = self.probe.clone();
        let o = self
            .dests
            .iter()
            .find(|d| d.addr == addr && d.port == Some(port))
            .or_else(|| {
                self.dests
                    .iter()
                    .find(|d| d.addr == addr && d.port.is_none())
            });
        if let Some(o) = o {
            if !o.enabled {
                return None;
            }
            let v = &o.probe;
            p.port = v.port.or(p.port);
            p.path = v.path.clone().unwrap_or(p.path);
            p.host = v.host.clone().or(p.host);
            p.expect_status = v.expect_status.unwrap_or(p.expect_status);
            p.body_contains = v.body_contains.clone().or(p.body_contains);
        }
        let port = p.port.unwrap_or(port);
        if port == 0 {
            return None;
        }
        p.port = Some(port);
        Some(p)
    }
}

/// A configuration mistake: where (the 1-based line, when known) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) struct ConfigError {
    /// The line of the mistake.
    pub(crate) line: Option<usize>,
    /// Why it was refused.
    pub(crate) message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "line {l}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// The 1-based line of byte offset `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()
        .iter()
        .take(at)
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

impl ConfigError {
    fn at(text: &str, span: std::ops::Range<usize>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            line: Some(line_of(text, span.start)),
            message: message.into(),
        }
    }
}

// ---- the file as written ------------------------------------------------------------------

/// A setting's value as written: a boolean, an integer or a string, read by
/// [`Settings::set`] (which takes text) — so `pmtu_disc = 1`, `= true` and `= "true"` all work,
/// as they always have.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Scalar(String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Scalar, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a boolean, an integer or a string")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A service section's name: `tcp/VIP:port` or `udp/VIP:port` (`[v6]:port` for IPv6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct ServiceName(ServiceKey);

/// Parse `tcp/ADDR:PORT` / `udp/ADDR:PORT`.
pub(crate) fn parse_service_name(name: &str) -> Option<ServiceKey> {
    let (p, addr) = name.split_once('/')?;
    let protocol = match p {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        _ => return None,
    };
    let sa: SocketAddr = addr.parse().ok()?;
    Some(ServiceKey {
        protocol,
        addr: sa.ip(),
        port: sa.port(),
    })
}

/// The section name of a service: `tcp/203.0.113.10:80`, `udp/[2001:db8::10]:53`.
pub(crate) fn service_name(k: &ServiceKey) -> String {
    let p = match k.protocol {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    };
    format!("{p}/{}", SocketAddr::new(k.addr, k.port))
}

impl<'de> Deserialize<'de> for ServiceName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ServiceName, D::Error> {
        let s = String::deserialize(d)?;
        parse_service_name(&s).map(ServiceName).ok_or_else(|| {
            de::Error::custom(format!(
                "service {s:?}: expected \"tcp/ADDR:PORT\" or \"udp/ADDR:PORT\" (IPv6 in \
                 brackets: \"tcp/[2001:db8::10]:80\")"
            ))
        })
    }
}

/// A per-dest section's name: `ADDR` (every port of that address) or `ADDR:PORT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct DestName(IpAddr, Option<u16>);

impl<'de> Deserialize<'de> for DestName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<DestName, D::Error> {
        let s = String::deserialize(d)?;
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(DestName(ip, None));
        }
        match s.parse::<SocketAddr>() {
            Ok(sa) => Ok(DestName(sa.ip(), Some(sa.port()))),
            Err(_) => Err(de::Error::custom(format!(
                "dest {s:?}: expected an address (\"198.51.100.11\") or address and port \
                 (\"198.51.100.11:8080\", \"[2001:db8::11]:8080\")"
            ))),
        }
    }
}

/// A map whose keys must be distinct after parsing (`"tcp/[2001:db8::1]:80"` and
/// `"tcp/[2001:db8:0::1]:80"` are the same service).
fn unique_keys<'de, D, K, V>(d: D) -> Result<BTreeMap<K, V>, D::Error>
where
    D: Deserializer<'de>,
    K: Deserialize<'de> + Ord + fmt::Debug,
    V: Deserialize<'de>,
{
    struct M<K, V>(std::marker::PhantomData<(K, V)>);
    impl<'de, K, V> Visitor<'de> for M<K, V>
    where
        K: Deserialize<'de> + Ord + fmt::Debug,
        V: Deserialize<'de>,
    {
        type Value = BTreeMap<K, V>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a table of sections")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some(k) = m.next_key::<K>()? {
                let v = m.next_value::<V>()?;
                if out.contains_key(&k) {
                    return Err(de::Error::custom(format!(
                        "{k:?} is given twice (two spellings of the same address)"
                    )));
                }
                out.insert(k, v);
            }
            Ok(out)
        }
    }
    d.deserialize_map(M(std::marker::PhantomData))
}

/// A time: seconds as a number (`5`, `0.5`) or a string with units (`"500ms"`, `"2s"`,
/// `"1m 30s"`), 10 ms to one day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CheckTime(Duration);

impl<'de> Deserialize<'de> for CheckTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<CheckTime, D::Error> {
        struct V;
        fn ranged<E: de::Error>(t: Duration, shown: &dyn fmt::Display) -> Result<CheckTime, E> {
            if (MIN_CHECK_TIME..=MAX_CHECK_TIME).contains(&t) {
                Ok(CheckTime(t))
            } else {
                Err(E::custom(format!(
                    "{shown}: a time from 10 ms to 1 day is expected"
                )))
            }
        }
        impl Visitor<'_> for V {
            type Value = CheckTime;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("seconds (5, 0.5) or a duration string (\"500ms\", \"2s\")")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<CheckTime, E> {
                let secs = u64::try_from(v).map_err(|_| E::custom(format!("{v}: negative")))?;
                ranged(Duration::from_secs(secs.min(u64::from(u32::MAX))), &v)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<CheckTime, E> {
                ranged(Duration::from_secs(v.min(u64::from(u32::MAX))), &v)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<CheckTime, E> {
                let t = Duration::try_from_secs_f64(v)
                    .map_err(|_| E::custom(format!("{v}: not a time in seconds")))?;
                ranged(t, &v)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<CheckTime, E> {
                let t = humantime::parse_duration(v).map_err(|e| {
                    E::custom(format!(
                        "{v:?}: {e} (write \"500ms\", \"2s\", \"1m\" or a number of seconds)"
                    ))
                })?;
                ranged(t, &format!("{v:?}"))
            }
        }
        d.deserialize_any(V)
    }
}

/// `rise` / `fall`: 1 to 1000 checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Count(u32);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Count, D::Error> {
        let v = i64::deserialize(d)?;
        u32::try_from(v)
            .ok()
            .filter(|n| (1..=MAX_COUNT).contains(n))
            .map(Count)
            .ok_or_else(|| {
                de::Error::custom(format!("{v}: a count from 1 to {MAX_COUNT} is expected"))
            })
    }
}

/// An HTTP status code, 100 to 599.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Status(u16);

impl<'de> Deserialize<'de> for Status {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Status, D::Error> {
        let v = i64::deserialize(d)?;
        u16::try_from(v)
            .ok()
            .filter(|n| (100..=599).contains(n))
            .map(Status)
            .ok_or_else(|| {
                de::Error::custom(format!("{v}: an HTTP status from 100 to 599 is expected"))
            })
    }
}

/// A TCP port to probe, 1 to 65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Port(u16);

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Port, D::Error> {
        let v = i64::deserialize(d)?;
        u16::try_from(v)
            .ok()
            .filter(|&n| n != 0)
            .map(Port)
            .ok_or_else(|| de::Error::custom(format!("{v}: a port from 1 to 65535 is expected")))
    }
}

/// An HTTP request path: starts with `/`, printable ASCII without spaces.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HttpPath(String);

impl<'de> Deserialize<'de> for HttpPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<HttpPath, D::Error> {
        let s = String::deserialize(d)?;
        if s.starts_with('/') && s.len() <= 1024 && s.bytes().all(|b| b.is_ascii_graphic()) {
            Ok(HttpPath(s))
        } else {
            Err(de::Error::custom(format!(
                "path {s:?}: expected an absolute path such as \"/healthz\" (printable ASCII, \
                 no spaces)"
            )))
        }
    }
}

/// An HTTP header value (`host`, `body_contains`): printable, no line breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Text(String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Text, D::Error> {
        let s = String::deserialize(d)?;
        if !s.is_empty() && s.len() <= 1024 && !s.chars().any(char::is_control) {
            Ok(Text(s))
        } else {
            Err(de::Error::custom(format!(
                "{s:?}: expected non-empty text without control characters (at most 1024 bytes)"
            )))
        }
    }
}

/// `[service."tcp/VIP:port"]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    /// Overrides `expired_reply` for this service (`rst`, `icmp`, `drop`).
    expired_reply: Option<Spanned<Scalar>>,
    /// Overrides `nodest_reply` for this service (`rst`, `icmp`, `drop`).
    nodest_reply: Option<Spanned<Scalar>>,
    /// Overrides `icmp_echo_reply` for this service's VIP.
    icmp_echo_reply: Option<Spanned<Scalar>>,
}

/// `[health_check."tcp/VIP:port"]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealthCheck {
    /// `tcp` or `http` (required).
    kind: Spanned<CheckKind>,
    /// Port to probe (default: each dest's port).
    port: Option<Port>,
    /// HTTP path (default `/`).
    path: Option<Spanned<HttpPath>>,
    /// HTTP `Host` header (default: the dest's address and port).
    host: Option<Spanned<Text>>,
    /// Expected HTTP status (default 200).
    expect_status: Option<Spanned<Status>>,
    /// Text the HTTP body must contain (default: none).
    body_contains: Option<Spanned<Text>>,
    /// Time between checks (default 5 s).
    interval: Option<CheckTime>,
    /// Time one check may take (default 2 s).
    timeout: Option<CheckTime>,
    /// Successes to come back up (default 2).
    rise: Option<Count>,
    /// Failures to go down (default 3).
    fall: Option<Count>,
    /// `quiesce` (default) or `remove`.
    on_fail: Option<OnFail>,
    /// Per-dest overrides.
    #[serde(default, deserialize_with = "unique_keys")]
    dest: BTreeMap<DestName, RawDestOverride>,
}

/// `[health_check."tcp/VIP:port".dest."ADDR"]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDestOverride {
    /// false: do not check this dest (default true).
    enabled: Option<bool>,
    /// Port to probe.
    port: Option<Port>,
    /// HTTP path.
    path: Option<Spanned<HttpPath>>,
    /// HTTP `Host` header.
    host: Option<Spanned<Text>>,
    /// Expected HTTP status.
    expect_status: Option<Spanned<Status>>,
    /// Text the HTTP body must contain.
    body_contains: Option<Spanned<Text>>,
}

/// `[log]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    /// `human` or `json`.
    format: Option<LogFormat>,
    /// Level or filter directives.
    level: Option<Spanned<String>>,
}

/// The top level: the director settings (each named after its [`Settings`] name) and the
/// sections.
macro_rules! raw_file {
    ($($name:ident),+ $(,)?) => {
        /// The file as written.
        #[derive(Debug, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct RawFile {
            $(
                /// A director setting (see `rvs_core::settings::Settings`).
                $name: Option<Spanned<Scalar>>,
            )+
            /// `[service."tcp/VIP:port"]` sections.
            #[serde(default, deserialize_with = "unique_keys")]
            service: BTreeMap<ServiceName, RawPolicy>,
            /// `[health_check."tcp/VIP:port"]` sections.
            #[serde(default, deserialize_with = "unique_keys")]
            health_check: BTreeMap<ServiceName, RawHealthCheck>,
            /// `[metrics]`.
            #[serde(default)]
            metrics: MetricsConfig,
            /// `[log]`.
            #[serde(default)]
            log: RawLog,
        }

        impl RawFile {
            /// Every setting the file gives, by name, in file-schema order.
            fn settings(&self) -> Vec<(&'static str, &Spanned<Scalar>)> {
                let mut out = Vec::new();
                $(
                    if let Some(v) = &self.$name {
                        out.push((stringify!($name), v));
                    }
                )+
                out
            }
        }

        /// The setting names the file accepts at its top level.
        #[cfg(test)]
        const FILE_SETTINGS: &[&str] = &[$(stringify!($name)),+];
    };
}

raw_file!(
    expire_nodest_conn,
    expire_quiescent_template,
    conn_reuse_mode,
    schedule_icmp,
    pmtu_disc,
    conn_tab_max,
    conn_full_policy,
    timeout_tcp,
    timeout_tcpfin,
    timeout_udp,
    dest_trash_timeout,
    expired_reply,
    nodest_reply,
    hash_seed,
    icmp_msgs_per_sec,
    icmp_msgs_burst,
    icmp_ratelimit,
    icmp_forward_per_sec,
    icmp_forward,
    icmp_small_mtu,
    icmp_echo_reply,
);

/// True when `level` is something the log filter understands: a level name, or directives
/// (`target=level`, comma-separated) that parse.
fn valid_level(level: &str) -> bool {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    let l = level.trim().to_ascii_lowercase();
    if LEVELS.contains(&l.as_str()) {
        return true;
    }
    // A bare word that is not a level would silently become a target name: refuse it.
    (l.contains('=') || l.contains(','))
        && tracing_subscriber::EnvFilter::builder()
            .parse(level)
            .is_ok()
}

impl Config {
    /// Parse and validate a configuration file's text; every error names its line.
    pub(crate) fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let raw: RawFile = toml::from_str(text).map_err(|e| ConfigError {
            line: e.span().map(|s| line_of(text, s.start)),
            message: e.message().trim_end().to_owned(),
        })?;
        let mut cfg = Config::default();
        for (name, v) in raw.settings() {
            cfg.settings
                .set(name, &v.get_ref().0)
                .map_err(|e| ConfigError::at(text, v.span(), e.to_string()))?;
        }
        cfg.settings.validate().map_err(|e| ConfigError {
            line: None,
            message: e.to_string(),
        })?;
        for (ServiceName(key), p) in raw.service {
            cfg.policies.push((key, policy(text, &key, &p)?));
        }
        for (ServiceName(key), h) in raw.health_check {
            cfg.health_checks.insert(key, health_check(text, &key, h)?);
        }
        cfg.metrics = raw.metrics;
        if let Some(f) = raw.log.format {
            cfg.log.format = f;
        }
        if let Some(level) = raw.log.level {
            if !valid_level(level.get_ref()) {
                return Err(ConfigError::at(
                    text,
                    level.span(),
                    format!(
                        "log level {:?}: expected error, warn, info, debug, trace, off, or \
                         filter directives such as \"info,rvsd=debug\"",
                        level.get_ref()
                    ),
                ));
            }
            cfg.log.level = level.into_inner();
        }
        Ok(cfg)
    }

    /// A one-line description for `--check-config`.
    pub(crate) fn summary(&self) -> String {
        let changed = Settings::NAMES
            .iter()
            .filter(|n| self.settings.get(n) != Settings::default().get(n))
            .count();
        format!(
            "{changed} settings changed from their defaults, {} service policies, {} health \
             checks, metrics {}, log {} at {:?}",
            self.policies.len(),
            self.health_checks.len(),
            if self.metrics.enabled {
                format!("on {}", self.metrics.listen)
            } else {
                "off".to_owned()
            },
            match self.log.format {
                LogFormat::Human => "human",
                LogFormat::Json => "json",
            },
            self.log.level
        )
    }
}

fn policy(text: &str, key: &ServiceKey, p: &RawPolicy) -> Result<ServicePolicy, ConfigError> {
    let name = service_name(key);
    let mut out = ServicePolicy::default();
    // Read through the director-wide setting of the same name, so values and messages agree.
    let read = |field: &str, v: &Spanned<Scalar>| {
        let mut s = Settings::default();
        s.set(field, &v.get_ref().0)
            .map(|()| s)
            .map_err(|e| ConfigError::at(text, v.span(), format!("service {name:?}: {e}")))
    };
    if let Some(v) = &p.expired_reply {
        out.expired_reply = Some(read("expired_reply", v)?.expired_reply);
    }
    if let Some(v) = &p.nodest_reply {
        out.nodest_reply = Some(read("nodest_reply", v)?.nodest_reply);
    }
    if let Some(v) = &p.icmp_echo_reply {
        out.icmp_echo_reply = Some(read("icmp_echo_reply", v)?.icmp_echo_reply);
    }
    Ok(out)
}

/// HTTP-only fields in a TCP check are mistakes, not silently ignored.
fn http_only<T>(
    text: &str,
    kind: CheckKind,
    name: &str,
    field: &str,
    v: Option<&Spanned<T>>,
) -> Result<(), ConfigError> {
    match v {
        Some(v) if kind == CheckKind::Tcp => Err(ConfigError::at(
            text,
            v.span(),
            format!("health_check {name:?}: {field} is for kind = \"http\" only"),
        )),
        _ => Ok(()),
    }
}

fn health_check(
    text: &str,
    key: &ServiceKey,
    h: RawHealthCheck,
) -> Result<HealthCheck, ConfigError> {
    let name = service_name(key);
    let kind = *h.kind.get_ref();
    http_only(text, kind, &name, "path", h.path.as_ref())?;
    http_only(text, kind, &name, "host", h.host.as_ref())?;
    http_only(text, kind, &name, "expect_status", h.expect_status.as_ref())?;
    http_only(text, kind, &name, "body_contains", h.body_contains.as_ref())?;
    if key.protocol != Protocol::Tcp {
        return Err(ConfigError::at(
            text,
            h.kind.span(),
            format!(
                "health_check {name:?}: only TCP services can be checked (tcp connect or http)"
            ),
        ));
    }
    let port = h.port.map(|p| p.0);
    let mut dests = Vec::new();
    for (DestName(addr, dport), o) in h.dest {
        if addr.is_ipv4() != key.addr.is_ipv4() {
            return Err(ConfigError {
                line: None,
                message: format!(
                    "health_check {name:?}: dest {addr} is not of the service's address family"
                ),
            });
        }
        http_only(text, kind, &name, "path", o.path.as_ref())?;
        http_only(text, kind, &name, "host", o.host.as_ref())?;
        http_only(text, kind, &name, "expect_status", o.expect_status.as_ref())?;
        http_only(text, kind, &name, "body_contains", o.body_contains.as_ref())?;
        dests.push(DestOverride {
            addr,
            port: dport,
            enabled: o.enabled.unwrap_or(true),
            probe: ProbeOverride {
                port: o.port.map(|p| p.0),
                path: o.path.map(|p| p.into_inner().0),
                host: o.host.map(|p| p.into_inner().0),
                expect_status: o.expect_status.map(|p| p.into_inner().0),
                body_contains: o.body_contains.map(|p| p.into_inner().0),
            },
        });
    }
    // The port-specific overrides first, so `probe_for` finds them before address-only ones.
    dests.sort_by_key(|d| d.port.is_none());
    if key.port == 0 && port.is_none() {
        return Err(ConfigError::at(
            text,
            h.kind.span(),
            format!(
                "health_check {name:?}: the service forwards every port (port 0): give the port \
                 to check with port = N"
            ),
        ));
    }
    Ok(HealthCheck {
        probe: Probe {
            kind,
            port,
            path: h.path.map_or_else(|| "/".to_owned(), |p| p.into_inner().0),
            host: h.host.map(|p| p.into_inner().0),
            expect_status: h.expect_status.map_or(200, |p| p.into_inner().0),
            body_contains: h.body_contains.map(|p| p.into_inner().0),
        },
        interval: h.interval.map_or(Duration::from_secs(5), |t| t.0),
        timeout: h.timeout.map_or(Duration::from_secs(2), |t| t.0),
        rise: h.rise.map_or(2, |c| c.0),
        fall: h.fall.map_or(3, |c| c.0),
        on_fail: h.on_fail.unwrap_or_default(),
        dests,
    })
}

// ---- loading -------------------------------------------------------------------------------

/// Load the configuration: defaults, then the config file, then each `--set`. Every mistake is
/// a usage error (exit status 2) naming the file, the line and the reason.
pub(crate) fn load_config(config: Option<&Path>, sets: &[(String, String)]) -> Result<Config> {
    let mut cfg = match config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| usage(format!("--config {}: {e}", path.display())))?;
            Config::from_toml(&text)
                .map_err(|e| usage(format!("--config {}: {e}", path.display())))?
        }
        None => Config::default(),
    };
    for (k, v) in sets {
        cfg.settings
            .set(k, v)
            .map_err(|e| usage(format!("--set {k}={v}: {e}")))?;
    }
    cfg.settings
        .validate()
        .map_err(|e| usage(format!("settings: {e}")))?;
    Ok(cfg)
}

/// The 1-based line of each rule `parse_rules` returns, in order.
pub(crate) fn rule_lines(text: &str) -> Vec<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| matches!(parse_line(l), Ok(Some(_))))
        .map(|(i, _)| i + 1)
        .collect()
}

/// A director with `cfg`'s settings and policies and the rules of `rules` (ipvsadm-save format)
/// applied to it from empty, as at start. Mistakes are usage errors naming the line.
pub(crate) fn build_director(cfg: &Config, rules: Option<&Path>) -> Result<Director> {
    let mut director = Director::new(cfg.settings.clone());
    for (key, p) in &cfg.policies {
        director.set_service_policy(*key, *p);
    }
    if let Some(path) = rules {
        let text = std::fs::read_to_string(path)
            .map_err(|e| usage(format!("--rules {}: {e}", path.display())))?;
        let rules =
            parse_rules(&text).map_err(|e| usage(format!("--rules {}: {e}", path.display())))?;
        let lines = rule_lines(&text);
        for (i, r) in rules.iter().enumerate() {
            let line = lines.get(i).copied().unwrap_or(0);
            r.validate().map_err(|e| {
                usage(format!(
                    "--rules {}: line {line} (rule {}): {e}",
                    path.display(),
                    i + 1
                ))
            })?;
            director.apply(r, 0).map_err(|e| {
                usage(format!(
                    "--rules {}: line {line} (rule {}): {e}",
                    path.display(),
                    i + 1
                ))
            })?;
        }
    }
    Ok(director)
}

/// `rvsd --check-config FILE [--rules FILE] [--set ...]`: validate everything the daemon would
/// read at start, touching nothing on the host; print a summary on success.
pub(crate) fn check(path: &Path, rules: Option<&Path>, sets: &[(String, String)]) -> Result<()> {
    let cfg = load_config(Some(path), sets)?;
    let director = build_director(&cfg, rules)?;
    println!("rvsd: {}: OK: {}", path.display(), cfg.summary());
    if let Some(r) = rules {
        let services = director.services();
        let dests: usize = services.iter().map(|s| s.dests.len()).sum();
        println!(
            "rvsd: {}: OK: {} services, {dests} dests",
            r.display(),
            services.len()
        );
        for key in cfg.health_checks.keys() {
            if !services.iter().any(|s| s.spec.key == *key) {
                println!(
                    "rvsd: note: health_check {:?} names no service of the rules (it applies \
                     once such a service is added)",
                    service_name(key)
                );
            }
        }
    }
    Ok(())
}

/// The rules that turn `current`'s services and dests into `desired`'s: services removed,
/// edited, added; in kept services, dests removed, edited, added. Applied in order, they leave
/// the connection table alone (deleted dests go to the dest trash as with `-d`).
pub(crate) fn rules_diff(current: &Director, desired: &Director) -> Vec<Rule> {
    use rvs_core::rules::DestSpec;
    let spec_of = |d: &rvs_core::types::Dest| DestSpec {
        addr: d.addr,
        port: d.port,
        fwd: d.fwd,
        weight: d.weight,
        u_threshold: d.u_threshold,
        l_threshold: d.l_threshold,
    };
    let cur = current.services();
    let want = desired.services();
    let mut out = Vec::new();
    for c in &cur {
        if !want.iter().any(|w| w.spec.key == c.spec.key) {
            out.push(Rule::DeleteService(c.spec.key));
        }
    }
    for w in &want {
        let key = w.spec.key;
        let Some(c) = cur.iter().find(|c| c.spec.key == key) else {
            out.push(Rule::AddService(*w.spec));
            for d in &w.dests {
                out.push(Rule::AddDest(key, spec_of(d.dest)));
            }
            continue;
        };
        if c.spec != w.spec {
            out.push(Rule::EditService(*w.spec));
        }
        for cd in &c.dests {
            let (a, p) = (cd.dest.addr, cd.dest.port);
            if !w
                .dests
                .iter()
                .any(|wd| wd.dest.addr == a && wd.dest.port == p)
            {
                out.push(Rule::DeleteDest(key, a, p));
            }
        }
        for wd in &w.dests {
            let want_spec = spec_of(wd.dest);
            match c
                .dests
                .iter()
                .find(|cd| cd.dest.addr == wd.dest.addr && cd.dest.port == wd.dest.port)
            {
                Some(cd) if spec_of(cd.dest) == want_spec => {}
                Some(_) => out.push(Rule::EditDest(key, want_spec)),
                None => out.push(Rule::AddDest(key, want_spec)),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rvs_core::settings::ExpiredReply;

    fn err(text: &str) -> ConfigError {
        match Config::from_toml(text) {
            Err(e) => e,
            Ok(c) => panic!("accepted: {text}\n{c:?}"),
        }
    }

    fn tcp(addr: &str, port: u16) -> ServiceKey {
        ServiceKey {
            protocol: Protocol::Tcp,
            addr: addr.parse().unwrap(),
            port,
        }
    }

    #[test]
    fn an_empty_file_is_the_defaults() {
        assert_eq!(Config::from_toml(""), Ok(Config::default()));
        let d = Config::default();
        assert_eq!(d.metrics.listen.to_string(), "127.0.0.1:9753");
        assert!(d.metrics.enabled);
        assert_eq!(
            (d.log.format, d.log.level.as_str()),
            (LogFormat::Human, "info")
        );
    }

    #[test]
    fn every_setting_is_a_file_field() {
        assert_eq!(FILE_SETTINGS, Settings::NAMES);
        // Each setting written with its current default reads back as the defaults.
        let mut text = String::new();
        for n in Settings::NAMES {
            let v = Settings::default().get(n).unwrap();
            text.push_str(&format!("{n} = \"{v}\"\n"));
        }
        assert_eq!(
            Config::from_toml(&text).unwrap().settings,
            Settings::default()
        );
    }

    #[test]
    fn settings_take_booleans_integers_and_strings() {
        let c = Config::from_toml(
            "pmtu_disc = false\nschedule_icmp = 1\nexpire_nodest_conn = \"true\"\n\
             timeout_tcp = 60\nhash_seed = \"0x10\"\n",
        )
        .unwrap();
        let s = &c.settings;
        assert!(!s.pmtu_disc && s.schedule_icmp && s.expire_nodest_conn);
        assert_eq!((s.timeouts.tcp, s.hash_seed), (60, 16));
    }

    #[test]
    fn mistakes_name_their_line_and_reason() {
        // Unknown field at the top level.
        let e = err("schedule_icmp = 1\n\nbogus = 2\n");
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.message.contains("bogus"), "{e}");
        // A value a setting does not take.
        let e = err("timeout_tcp = 60\npmtu_disc = \"maybe\"\n");
        assert_eq!(e.line, Some(2), "{e}");
        assert!(
            e.message.contains("pmtu_disc") && e.message.contains("maybe"),
            "{e}"
        );
        let e = err("timeout_tcp = 0\n");
        assert_eq!(e.line, Some(1), "{e}");
        let e = err("conn_tab_max = 1.5\n");
        assert_eq!(e.line, Some(1), "{e}");
        assert!(e.message.contains("boolean, an integer or a string"), "{e}");
        // A bad section name.
        let e = err("\n[service.\"sctp/203.0.113.10:80\"]\nexpired_reply = \"icmp\"\n");
        assert_eq!(e.line, Some(2), "{e}");
        assert!(e.message.contains("sctp/203.0.113.10:80"), "{e}");
        let e = err("[health_check.\"tcp/203.0.113.10\"]\nkind = \"tcp\"\n");
        assert_eq!(e.line, Some(1), "{e}");
        assert!(e.message.contains("tcp/ADDR:PORT"), "{e}");
        // Unknown field in a section, bad values in a section.
        let e = err("[service.\"tcp/203.0.113.10:80\"]\nexpired_reply = \"icmp\"\nbogus = 1\n");
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.message.contains("bogus"), "{e}");
        let e = err("[service.\"tcp/203.0.113.10:80\"]\n\nnodest_reply = \"maybe\"\n");
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.message.contains("tcp/203.0.113.10:80"), "{e}");
        let hc = "[health_check.\"tcp/203.0.113.10:80\"]\nkind = \"http\"\n";
        for (extra, needle) in [
            ("interval = \"5 parsecs\"\n", "parsecs"),
            ("interval = 0\n", "10 ms to 1 day"),
            ("timeout = -1\n", "negative"),
            ("rise = 0\n", "from 1 to 1000"),
            ("fall = 100000\n", "from 1 to 1000"),
            ("expect_status = 99\n", "100 to 599"),
            ("path = \"healthz\"\n", "absolute path"),
            ("port = 0\n", "port from 1"),
            ("on_fail = \"explode\"\n", "explode"),
            ("body_contains = \"a\\nb\"\n", "control characters"),
            (
                "[health_check.\"tcp/203.0.113.10:80\".dest.\"nonsense\"]\n",
                "nonsense",
            ),
            (
                "[health_check.\"tcp/203.0.113.10:80\".dest.\"198.51.100.11\"]\n\nweight = 3\n",
                "weight",
            ),
        ] {
            let e = err(&format!("{hc}{extra}"));
            // The mistake is on the last line of `extra`.
            let line = 2 + extra.lines().count();
            assert_eq!(e.line, Some(line), "{extra}: {e}");
            assert!(e.message.contains(needle), "{extra}: {e}");
        }
        let e = err("[health_check.\"tcp/203.0.113.10:80\"]\nport = 80\n");
        assert!(e.message.contains("kind"), "{e}");
        let e = err("[health_check.\"tcp/203.0.113.10:80\"]\nkind = \"tcp\"\npath = \"/x\"\n");
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.message.contains("http"), "{e}");
        let e = err("[health_check.\"udp/203.0.113.10:53\"]\nkind = \"tcp\"\n");
        assert_eq!(e.line, Some(2), "{e}");
        let e = err("[health_check.\"tcp/203.0.113.10:0\"]\nkind = \"tcp\"\n");
        assert!(e.message.contains("port = N"), "{e}");
        let e = err("[metrics]\nlisten = \"localhost\"\n");
        assert_eq!(e.line, Some(2), "{e}");
        assert!(e.message.contains("ADDRESS:PORT"), "{e}");
        let e = err("[metrics]\nport = 1\n");
        assert_eq!(e.line, Some(2), "{e}");
        let e = err("[log]\nformat = \"xml\"\n");
        assert_eq!(e.line, Some(2), "{e}");
        let e = err("[log]\nformat = \"json\"\nlevel = \"verbose\"\n");
        assert_eq!(e.line, Some(3), "{e}");
        // The same service spelt twice.
        let e = err(
            "[service.\"tcp/[2001:db8::1]:80\"]\nexpired_reply = \"icmp\"\n\
             [service.\"tcp/[2001:db8:0::1]:80\"]\nexpired_reply = \"rst\"\n",
        );
        assert!(e.message.contains("twice"), "{e}");
        // Not TOML at all.
        let e = err("timeout_tcp = 60\n[[[\n");
        assert_eq!(e.line, Some(2), "{e}");
        assert_eq!(e.to_string(), format!("line 2: {}", e.message));
    }

    #[test]
    fn sections_read_back() {
        let c = Config::from_toml(
            "expired_reply = \"icmp\"\n\
             [service.\"tcp/203.0.113.10:80\"]\nnodest_reply = \"drop\"\nicmp_echo_reply = 1\n\
             [health_check.\"tcp/203.0.113.10:80\"]\nkind = \"http\"\npath = \"/healthz\"\n\
             expect_status = 204\nbody_contains = \"ok\"\ninterval = \"250ms\"\ntimeout = 0.2\n\
             rise = 1\nfall = 5\non_fail = \"remove\"\n\
             [health_check.\"tcp/203.0.113.10:80\".dest.\"198.51.100.12\"]\nport = 8080\n\
             [health_check.\"tcp/203.0.113.10:80\".dest.\"198.51.100.12:81\"]\nenabled = false\n\
             [health_check.\"tcp/[2001:db8::10]:443\"]\nkind = \"tcp\"\n\
             [metrics]\nenabled = false\nlisten = \"[::1]:9100\"\n\
             [log]\nformat = \"json\"\nlevel = \"info,rvsd=debug\"\n",
        )
        .unwrap();
        assert_eq!(c.settings.expired_reply, ExpiredReply::Icmp);
        assert_eq!(
            c.policies,
            vec![(
                tcp("203.0.113.10", 80),
                ServicePolicy {
                    expired_reply: None,
                    nodest_reply: Some(ExpiredReply::Drop),
                    icmp_echo_reply: Some(true),
                }
            )]
        );
        let h = &c.health_checks[&tcp("203.0.113.10", 80)];
        assert_eq!(
            (h.interval, h.timeout, h.rise, h.fall, h.on_fail),
            (
                Duration::from_millis(250),
                Duration::from_millis(200),
                1,
                5,
                OnFail::Remove
            )
        );
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let p = h.probe_for(ip("198.51.100.11"), 80).unwrap();
        assert_eq!(
            p,
            Probe {
                kind: CheckKind::Http,
                port: Some(80),
                path: "/healthz".into(),
                host: None,
                expect_status: 204,
                body_contains: Some("ok".into()),
            }
        );
        assert_eq!(
            h.probe_for(ip("198.51.100.12"), 80).unwrap().port,
            Some(8080)
        );
        assert_eq!(h.probe_for(ip("198.51.100.12"), 81), None, "disabled");
        let h6 = &c.health_checks[&tcp("2001:db8::10", 443)];
        assert_eq!(
            (
                h6.probe.kind,
                h6.interval,
                h6.timeout,
                h6.rise,
                h6.fall,
                h6.on_fail
            ),
            (
                CheckKind::Tcp,
                Duration::from_secs(5),
                Duration::from_secs(2),
                2,
                3,
                OnFail::Quiesce
            )
        );
        assert_eq!(
            c.metrics,
            MetricsConfig {
                enabled: false,
                listen: "[::1]:9100".parse().unwrap()
            }
        );
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.log.level, "info,rvsd=debug");
        assert!(c.summary().contains("1 health checks") || c.summary().contains("2 health checks"));
    }

    /// `packaging/rvsd.toml`, the example shipped with the systemd unit.
    const EXAMPLE: &str = include_str!("../../../packaging/rvsd.toml");

    /// The example's commented-out examples (`#key = value`, `#[section]`) switched on.
    fn uncommented(text: &str) -> String {
        text.lines()
            .map(|l| match l.strip_prefix('#') {
                Some(rest) if !rest.is_empty() && !rest.starts_with([' ', '#']) => rest,
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn the_packaged_example_lists_every_field_with_its_default() {
        assert_eq!(Config::from_toml(EXAMPLE), Ok(Config::default()));
        for name in Settings::NAMES {
            assert!(
                EXAMPLE
                    .lines()
                    .any(|l| l.starts_with(&format!("{name} = "))),
                "{name} is not in packaging/rvsd.toml"
            );
        }
        let c = Config::from_toml(&uncommented(EXAMPLE)).unwrap();
        let key = tcp("203.0.113.10", 80);
        let h = &c.health_checks[&key];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            h.probe_for(ip("198.51.100.11"), 80),
            Some(Probe {
                kind: CheckKind::Http,
                port: Some(80),
                path: "/healthz".into(),
                host: Some("www.example.com".into()),
                expect_status: 200,
                body_contains: Some("ok".into()),
            })
        );
        // The defaults the comments give are the defaults.
        assert_eq!(
            (h.interval, h.timeout, h.rise, h.fall, h.on_fail),
            (
                Duration::from_secs(5),
                Duration::from_secs(2),
                2,
                3,
                OnFail::Quiesce
            )
        );
        assert_eq!(
            h.probe_for(ip("198.51.100.12"), 80).unwrap().port,
            Some(8080)
        );
        assert_eq!(h.probe_for(ip("198.51.100.13"), 80), None);
        assert_eq!(c.policies.len(), 1);
    }

    fn director(rules: &str) -> Director {
        let mut d = Director::new(Settings::default());
        for r in parse_rules(rules).unwrap() {
            d.apply(&r, 0).unwrap();
        }
        d
    }

    fn save(d: &Director) -> Vec<String> {
        let mut out = Vec::new();
        for v in d.services() {
            out.push(Rule::AddService(*v.spec).to_save_line());
            for dv in &v.dests {
                let x = dv.dest;
                out.push(
                    Rule::AddDest(
                        v.spec.key,
                        rvs_core::rules::DestSpec {
                            addr: x.addr,
                            port: x.port,
                            fwd: x.fwd,
                            weight: x.weight,
                            u_threshold: x.u_threshold,
                            l_threshold: x.l_threshold,
                        },
                    )
                    .to_save_line(),
                );
            }
        }
        out
    }

    #[test]
    fn the_rules_diff_turns_one_director_into_the_other() {
        let a = "-A -t 203.0.113.10:80 -s rr\n\
                 -a -t 203.0.113.10:80 -r 198.51.100.11:80 -g -w 1\n\
                 -a -t 203.0.113.10:80 -r 198.51.100.12:80 -g -w 1\n\
                 -A -t 203.0.113.10:443 -s wlc\n\
                 -a -t 203.0.113.10:443 -r 198.51.100.11:443 -g -w 1\n\
                 -A -u 203.0.113.10:53 -s rr\n";
        let b = "-A -t 203.0.113.10:80 -s wrr\n\
                 -a -t 203.0.113.10:80 -r 198.51.100.12:80 -g -w 3\n\
                 -a -t 203.0.113.10:80 -r 198.51.100.13:80 -g -w 1\n\
                 -A -t 203.0.113.10:443 -s wlc\n\
                 -a -t 203.0.113.10:443 -r 198.51.100.11:443 -g -w 1\n\
                 -A -u [2001:db8::10]:53 -s rr\n\
                 -a -u [2001:db8::10]:53 -r [2001:db8:1::11]:53 -m -w 1\n";
        let mut cur = director(a);
        let want = director(b);
        let diff = rules_diff(&cur, &want);
        let lines: Vec<String> = diff.iter().map(Rule::to_save_line).collect();
        assert_eq!(
            lines,
            vec![
                "-D -u 203.0.113.10:53",
                "-E -t 203.0.113.10:80 -s wrr",
                "-d -t 203.0.113.10:80 -r 198.51.100.11:80",
                "-e -t 203.0.113.10:80 -r 198.51.100.12:80 -g -w 3",
                "-a -t 203.0.113.10:80 -r 198.51.100.13:80 -g -w 1",
                "-A -u [2001:db8::10]:53 -s rr",
                "-a -u [2001:db8::10]:53 -r [2001:db8:1::11]:53 -m -w 1",
            ],
            "untouched services and dests are not in the diff"
        );
        for r in &diff {
            cur.apply(r, 0).unwrap();
        }
        assert_eq!(save(&cur), save(&want));
        assert!(rules_diff(&cur, &want).is_empty());
    }
}
