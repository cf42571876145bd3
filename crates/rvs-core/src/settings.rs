//! Director settings: what IPVS keeps in `net.ipv4.vs.*` sysctls and `ipvsadm --set`, plus
//! RVS's own knobs (table bound, reply policies, hash seed).
//!
//! [`Settings::set`] and [`Settings::get`] take the names the config file uses (the IPVS
//! sysctl name where one exists); [`Settings::validate`] checks a whole value, however it was
//! built. Per-state TCP/UDP timeouts beyond the three `ipvsadm --set` values belong to the
//! protocol tables, not here.

use core::fmt;
use core::str::FromStr;

use crate::types::{SEC, Time};

/// Largest timeout accepted, in seconds: 31 days, ipvsadm's `MAX_TIMEOUT`.
pub const MAX_TIMEOUT_SECS: u32 = 86_400 * 31;

/// Default connection table bound: 2^20 = 1 048 576 entries (conns and templates together).
/// IPVS does not bound its table (its `conn_tab_bits` only sizes the hash); a bound keeps memory
/// finite under a SYN flood. A million entries is a few hundred MiB at most.
pub const DEFAULT_CONN_TAB_MAX: usize = 1 << 20;

/// Largest accepted `conn_tab_max`: 2^30 entries. Anything bigger is a typo, not a plan.
pub const CONN_TAB_MAX_LIMIT: usize = 1 << 30;

/// Default hash seed: a fixed constant (the ASCII bytes of "rvs_seed"), so that replays and
/// tests are deterministic. Set a random one in production if hash flooding is a concern.
pub const DEFAULT_HASH_SEED: u64 = 0x7276_735f_7365_6564;

/// What to do when the connection table is full (`conn_full_policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum FullPolicyName {
    /// `refuse` (default): the new connection is not created (the packet is dropped, counted).
    #[default]
    Refuse,
    /// `evict_oldest`: the entry nearest to its expiry makes room (under a SYN flood that is a
    /// half-open SYN_RECV entry, not an established one; templates still in use are spared).
    EvictOldest,
}

impl FullPolicyName {
    /// Every policy.
    pub const ALL: [FullPolicyName; 2] = [FullPolicyName::Refuse, FullPolicyName::EvictOldest];

    /// The config-file name.
    pub const fn name(self) -> &'static str {
        match self {
            FullPolicyName::Refuse => "refuse",
            FullPolicyName::EvictOldest => "evict_oldest",
        }
    }
}

impl fmt::Display for FullPolicyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for FullPolicyName {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        FullPolicyName::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or(())
    }
}

/// How the director answers a packet it will not forward (`expired_reply`, `nodest_reply`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExpiredReply {
    /// `rst`: a TCP RST sourced from the VIP (for UDP, which has no RST, ICMP port unreachable).
    Rst,
    /// `icmp`: ICMP / ICMPv6 port unreachable sourced from the VIP.
    Icmp,
    /// `drop`: nothing (the packet is dropped and counted).
    Drop,
}

impl ExpiredReply {
    /// Every reply.
    pub const ALL: [ExpiredReply; 3] = [ExpiredReply::Rst, ExpiredReply::Icmp, ExpiredReply::Drop];

    /// The config-file name.
    pub const fn name(self) -> &'static str {
        match self {
            ExpiredReply::Rst => "rst",
            ExpiredReply::Icmp => "icmp",
            ExpiredReply::Drop => "drop",
        }
    }
}

impl fmt::Display for ExpiredReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ExpiredReply {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        ExpiredReply::ALL
            .into_iter()
            .find(|r| r.name() == s)
            .ok_or(())
    }
}

/// The three timeouts `ipvsadm --set tcp tcpfin udp` sets, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimeoutSecs {
    /// Established TCP connections (`timeout_tcp`, default 900 s).
    pub tcp: u32,
    /// TCP after a FIN (`timeout_tcpfin`, default 120 s).
    pub tcpfin: u32,
    /// UDP (`timeout_udp`, default 300 s).
    pub udp: u32,
}

impl Default for TimeoutSecs {
    /// IPVS's defaults: 900, 120, 300 seconds.
    fn default() -> Self {
        TimeoutSecs {
            tcp: 900,
            tcpfin: 120,
            udp: 300,
        }
    }
}

impl TimeoutSecs {
    /// The TCP established timeout in [`Time`] units.
    pub const fn tcp_time(&self) -> Time {
        self.tcp as Time * SEC
    }

    /// The TCP FIN timeout in [`Time`] units.
    pub const fn tcpfin_time(&self) -> Time {
        self.tcpfin as Time * SEC
    }

    /// The UDP timeout in [`Time`] units.
    pub const fn udp_time(&self) -> Time {
        self.udp as Time * SEC
    }
}

/// The director's settings. `Default` gives IPVS's defaults where IPVS has the setting.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Settings {
    /// `expire_nodest_conn` (default false): when a dest is deleted, expire its connections at
    /// once (their next packets are treated as new: a SYN is rescheduled, anything else gets
    /// the expired-connection reply) instead of dropping their packets until they time out.
    pub expire_nodest_conn: bool,
    /// `expire_quiescent_template` (default false): persistence templates pointing at a dest of
    /// weight 0 expire at their next use, so persistent clients move to a live dest.
    pub expire_quiescent_template: bool,
    /// `conn_reuse_mode` (default 1, as IPVS): bit 1 set, a SYN (without ACK or RST) that finds
    /// its connection in TIME_WAIT or CLOSE — a client reusing the port of a connection that
    /// has ended — expires that connection at once and is scheduled anew, instead of
    /// reopening it on its old dest; bit 2 set, also a DR or TUN connection in FIN_WAIT.
    /// Connections a persistence template controls are never rescheduled. 0 turns it off.
    pub conn_reuse_mode: u32,
    /// `schedule_icmp` (default false): schedule ICMP errors about no known connection like a
    /// new connection (IPVS) instead of handing them to the host.
    pub schedule_icmp: bool,
    /// `pmtu_disc` (default true): honour DF — answer too-big DF packets with frag-needed /
    /// packet-too-big instead of fragmenting.
    pub pmtu_disc: bool,
    /// `conn_tab_max` (default 2^20 = 1 048 576, see [`DEFAULT_CONN_TAB_MAX`]): most entries
    /// (connections and templates) the table holds, 1..=2^30.
    pub conn_tab_max: usize,
    /// `conn_full_policy` (default `refuse`): what happens when the table is full.
    pub conn_full_policy: FullPolicyName,
    /// `timeout_tcp`, `timeout_tcpfin`, `timeout_udp`: the `ipvsadm --set` timeouts.
    pub timeouts: TimeoutSecs,
    /// `dest_trash_timeout` (default 120 s, seconds): a deleted dest re-added within this time
    /// resumes its connections (IPVS's dest trash). 0 = deleted dests are forgotten at once.
    pub dest_trash_timeout_secs: u32,
    /// `expired_reply` (default `rst`): reply to a non-SYN TCP segment for a service that has no
    /// connection for it (the connection expired or never existed).
    pub expired_reply: ExpiredReply,
    /// `nodest_reply` (default `icmp`, as IPVS): reply to a new connection that finds no usable
    /// dest.
    pub nodest_reply: ExpiredReply,
    /// `hash_seed` (default [`DEFAULT_HASH_SEED`]): seed of every hash the core computes.
    pub hash_seed: u64,
    /// `icmp_msgs_per_sec` (default 1000, messages per second; Linux's name and default): global
    /// rate of every ICMP message the director generates.
    pub icmp_msgs_per_sec: u32,
    /// `icmp_msgs_burst` (default 50 messages; Linux's): global burst of generated ICMP.
    pub icmp_msgs_burst: u32,
    /// `icmp_ratelimit` (default 1000 ms; Linux's): per destination, at most one generated ICMP
    /// message per this interval, with a burst of [`ICMP_DEST_BURST`]. 0 = no per-destination limit.
    pub icmp_ratelimit_ms: u32,
    /// `icmp_forward_per_sec` (default 1000 messages per second): per source address, ICMP errors
    /// forwarded to dests, so a flood is not relayed at full rate (burst: the same number). 0 =
    /// unlimited.
    pub icmp_forward_per_sec: u32,
    /// `icmp_forward` (default true): forward ICMP errors that concern a connection to its dest
    /// (and, for NAT, to its client). false hands them to the host stack like errors about no
    /// known connection: the behaviour of balancers that ignore ICMP, for comparison and for
    /// the negative controls of the path-MTU tests.
    pub icmp_forward: bool,
    /// `icmp_small_mtu` (default `clamp`): a forwarded frag-needed / packet-too-big advertising
    /// less than 552 (IPv4) / 1280 (IPv6) bytes is raised to that floor (`clamp`) or dropped
    /// (`refuse`); counted either way.
    pub icmp_small_mtu: SmallMtuPolicy,
    /// `icmp_echo_reply` (default false): answer ICMP echo requests to a VIP in the dataplane
    /// (rate-limited like every generated message) instead of handing them to the host.
    pub icmp_echo_reply: bool,
}

/// Per-destination burst of generated ICMP (Linux's `XRLIM_BURST_FACTOR`).
pub const ICMP_DEST_BURST: u32 = 6;

/// What to do with a forwarded too-big error advertising an MTU below the protocol's floor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SmallMtuPolicy {
    /// `clamp` (default): raise the advertised MTU to 552 (IPv4) / 1280 (IPv6).
    #[default]
    Clamp,
    /// `refuse`: drop the error.
    Refuse,
}

impl SmallMtuPolicy {
    /// The config-file name.
    pub const fn name(self) -> &'static str {
        match self {
            SmallMtuPolicy::Clamp => "clamp",
            SmallMtuPolicy::Refuse => "refuse",
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            expire_nodest_conn: false,
            expire_quiescent_template: false,
            conn_reuse_mode: 1,
            schedule_icmp: false,
            pmtu_disc: true,
            conn_tab_max: DEFAULT_CONN_TAB_MAX,
            conn_full_policy: FullPolicyName::Refuse,
            timeouts: TimeoutSecs::default(),
            dest_trash_timeout_secs: 120,
            expired_reply: ExpiredReply::Rst,
            nodest_reply: ExpiredReply::Icmp,
            hash_seed: DEFAULT_HASH_SEED,
            icmp_msgs_per_sec: 1000,
            icmp_msgs_burst: 50,
            icmp_ratelimit_ms: 1000,
            icmp_forward_per_sec: 1000,
            icmp_forward: true,
            icmp_small_mtu: SmallMtuPolicy::Clamp,
            icmp_echo_reply: false,
        }
    }
}

/// A setting that could not be set, or a value that does not validate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingError {
    /// A name that is not in [`Settings::NAMES`].
    #[error("unknown setting {name:?} (valid settings: {})", Settings::NAMES.join(", "))]
    UnknownSetting {
        /// The name as given.
        name: String,
    },
    /// A value the setting does not accept.
    #[error("invalid value {value:?} for setting {name}: expected {expected}")]
    InvalidValue {
        /// The setting.
        name: &'static str,
        /// The value as given (or the current value, from [`Settings::validate`]).
        value: String,
        /// What the setting accepts.
        expected: String,
    },
}

const BOOL_VALUES: &str = "0, 1, true or false";

impl Settings {
    /// Every setting name [`Settings::set`] and [`Settings::get`] know, in documentation order.
    pub const NAMES: &'static [&'static str] = &[
        "expire_nodest_conn",
        "expire_quiescent_template",
        "conn_reuse_mode",
        "schedule_icmp",
        "pmtu_disc",
        "conn_tab_max",
        "conn_full_policy",
        "timeout_tcp",
        "timeout_tcpfin",
        "timeout_udp",
        "dest_trash_timeout",
        "expired_reply",
        "nodest_reply",
        "hash_seed",
        "icmp_msgs_per_sec",
        "icmp_msgs_burst",
        "icmp_ratelimit",
        "icmp_forward_per_sec",
        "icmp_forward",
        "icmp_small_mtu",
        "icmp_echo_reply",
    ];

    /// Set one setting from its config-file text. Booleans take `0`, `1`, `true`, `false`;
    /// numbers are decimal (`hash_seed` also `0x` hexadecimal); timeouts are seconds.
    /// Surrounding whitespace is ignored. On error nothing changes.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), SettingError> {
        let v = value.trim();
        match name {
            "expire_nodest_conn" => self.expire_nodest_conn = parse_bool("expire_nodest_conn", v)?,
            "expire_quiescent_template" => {
                self.expire_quiescent_template = parse_bool("expire_quiescent_template", v)?;
            }
            "conn_reuse_mode" => self.conn_reuse_mode = parse_u32("conn_reuse_mode", v, 0, 3)?,
            "schedule_icmp" => self.schedule_icmp = parse_bool("schedule_icmp", v)?,
            "pmtu_disc" => self.pmtu_disc = parse_bool("pmtu_disc", v)?,
            "conn_tab_max" => {
                let n = parse_int("conn_tab_max", v, 1, CONN_TAB_MAX_LIMIT as u64, "")?;
                self.conn_tab_max = usize::try_from(n).map_err(|_| conn_tab_error(v))?;
            }
            "conn_full_policy" => {
                self.conn_full_policy = v.parse().map_err(|()| SettingError::InvalidValue {
                    name: "conn_full_policy",
                    value: v.to_string(),
                    expected: one_of(FullPolicyName::ALL.map(FullPolicyName::name)),
                })?;
            }
            "timeout_tcp" => self.timeouts.tcp = parse_secs("timeout_tcp", v, 1)?,
            "timeout_tcpfin" => self.timeouts.tcpfin = parse_secs("timeout_tcpfin", v, 1)?,
            "timeout_udp" => self.timeouts.udp = parse_secs("timeout_udp", v, 1)?,
            "dest_trash_timeout" => {
                self.dest_trash_timeout_secs = parse_secs("dest_trash_timeout", v, 0)?;
            }
            "expired_reply" => self.expired_reply = parse_reply("expired_reply", v)?,
            "nodest_reply" => self.nodest_reply = parse_reply("nodest_reply", v)?,
            "hash_seed" => self.hash_seed = parse_seed(v)?,
            "icmp_msgs_per_sec" => {
                self.icmp_msgs_per_sec = parse_u32("icmp_msgs_per_sec", v, 1, 1_000_000)?;
            }
            "icmp_msgs_burst" => {
                self.icmp_msgs_burst = parse_u32("icmp_msgs_burst", v, 1, 1_000_000)?;
            }
            "icmp_ratelimit" => self.icmp_ratelimit_ms = parse_u32("icmp_ratelimit", v, 0, 60_000)?,
            "icmp_forward_per_sec" => {
                self.icmp_forward_per_sec = parse_u32("icmp_forward_per_sec", v, 0, 10_000_000)?;
            }
            "icmp_small_mtu" => {
                self.icmp_small_mtu = match v {
                    "clamp" => SmallMtuPolicy::Clamp,
                    "refuse" => SmallMtuPolicy::Refuse,
                    _ => {
                        return Err(SettingError::InvalidValue {
                            name: "icmp_small_mtu",
                            value: v.to_string(),
                            expected: "one of clamp, refuse".to_string(),
                        });
                    }
                };
            }
            "icmp_echo_reply" => self.icmp_echo_reply = parse_bool("icmp_echo_reply", v)?,
            "icmp_forward" => self.icmp_forward = parse_bool("icmp_forward", v)?,
            _ => {
                return Err(SettingError::UnknownSetting {
                    name: name.to_string(),
                });
            }
        }
        Ok(())
    }

    /// The current value of a setting as [`Settings::set`] reads it back (`true`/`false`,
    /// decimal numbers, `hash_seed` in `0x` hexadecimal); `None` for an unknown name.
    pub fn get(&self, name: &str) -> Option<String> {
        Some(match name {
            "expire_nodest_conn" => self.expire_nodest_conn.to_string(),
            "expire_quiescent_template" => self.expire_quiescent_template.to_string(),
            "conn_reuse_mode" => self.conn_reuse_mode.to_string(),
            "schedule_icmp" => self.schedule_icmp.to_string(),
            "pmtu_disc" => self.pmtu_disc.to_string(),
            "conn_tab_max" => self.conn_tab_max.to_string(),
            "conn_full_policy" => self.conn_full_policy.name().to_string(),
            "timeout_tcp" => self.timeouts.tcp.to_string(),
            "timeout_tcpfin" => self.timeouts.tcpfin.to_string(),
            "timeout_udp" => self.timeouts.udp.to_string(),
            "dest_trash_timeout" => self.dest_trash_timeout_secs.to_string(),
            "expired_reply" => self.expired_reply.name().to_string(),
            "nodest_reply" => self.nodest_reply.name().to_string(),
            "hash_seed" => format!("{:#018x}", self.hash_seed),
            "icmp_msgs_per_sec" => self.icmp_msgs_per_sec.to_string(),
            "icmp_msgs_burst" => self.icmp_msgs_burst.to_string(),
            "icmp_ratelimit" => self.icmp_ratelimit_ms.to_string(),
            "icmp_forward_per_sec" => self.icmp_forward_per_sec.to_string(),
            "icmp_small_mtu" => self.icmp_small_mtu.name().to_string(),
            "icmp_echo_reply" => self.icmp_echo_reply.to_string(),
            "icmp_forward" => self.icmp_forward.to_string(),
            _ => return None,
        })
    }

    /// Check every field's range (for settings built in code or deserialised): `conn_tab_max`
    /// in 1..=2^30, the three timeouts in 1..=2678400 s, `dest_trash_timeout` at most 2678400 s.
    pub fn validate(&self) -> Result<(), SettingError> {
        if !(1..=CONN_TAB_MAX_LIMIT).contains(&self.conn_tab_max) {
            return Err(conn_tab_error(&self.conn_tab_max.to_string()));
        }
        for (name, secs, min) in [
            ("timeout_tcp", self.timeouts.tcp, 1),
            ("timeout_tcpfin", self.timeouts.tcpfin, 1),
            ("timeout_udp", self.timeouts.udp, 1),
            ("dest_trash_timeout", self.dest_trash_timeout_secs, 0),
        ] {
            if !(min..=MAX_TIMEOUT_SECS).contains(&secs) {
                return Err(secs_error(name, &secs.to_string(), min));
            }
        }
        Ok(())
    }

    /// `dest_trash_timeout` in [`Time`] units.
    pub const fn dest_trash_timeout(&self) -> Time {
        self.dest_trash_timeout_secs as Time * SEC
    }
}

fn parse_u32(name: &'static str, v: &str, min: u32, max: u32) -> Result<u32, SettingError> {
    v.parse::<u32>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| SettingError::InvalidValue {
            name,
            value: v.to_string(),
            expected: format!("a whole number from {min} to {max}"),
        })
}

fn one_of<const N: usize>(names: [&str; N]) -> String {
    format!("one of {}", names.join(", "))
}

fn parse_bool(name: &'static str, v: &str) -> Result<bool, SettingError> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" => Ok(true),
        "0" | "false" => Ok(false),
        _ => Err(SettingError::InvalidValue {
            name,
            value: v.to_string(),
            expected: BOOL_VALUES.to_string(),
        }),
    }
}

fn parse_int(
    name: &'static str,
    v: &str,
    min: u64,
    max: u64,
    unit: &str,
) -> Result<u64, SettingError> {
    let ok = !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit());
    match v.parse::<u64>() {
        Ok(n) if ok && (min..=max).contains(&n) => Ok(n),
        _ => Err(SettingError::InvalidValue {
            name,
            value: v.to_string(),
            expected: format!("an integer from {min} to {max}{unit}"),
        }),
    }
}

fn conn_tab_error(v: &str) -> SettingError {
    SettingError::InvalidValue {
        name: "conn_tab_max",
        value: v.to_string(),
        expected: format!("an integer from 1 to {CONN_TAB_MAX_LIMIT}"),
    }
}

fn secs_error(name: &'static str, v: &str, min: u32) -> SettingError {
    SettingError::InvalidValue {
        name,
        value: v.to_string(),
        expected: format!("an integer from {min} to {MAX_TIMEOUT_SECS} (seconds)"),
    }
}

fn parse_secs(name: &'static str, v: &str, min: u32) -> Result<u32, SettingError> {
    let n = parse_int(
        name,
        v,
        u64::from(min),
        u64::from(MAX_TIMEOUT_SECS),
        " (seconds)",
    )?;
    u32::try_from(n).map_err(|_| secs_error(name, v, min))
}

fn parse_reply(name: &'static str, v: &str) -> Result<ExpiredReply, SettingError> {
    v.parse().map_err(|()| SettingError::InvalidValue {
        name,
        value: v.to_string(),
        expected: one_of(ExpiredReply::ALL.map(ExpiredReply::name)),
    })
}

fn parse_seed(v: &str) -> Result<u64, SettingError> {
    let parsed = match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(hex) if !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            u64::from_str_radix(hex, 16).ok()
        }
        Some(_) => None,
        None if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => v.parse().ok(),
        None => None,
    };
    parsed.ok_or_else(|| SettingError::InvalidValue {
        name: "hash_seed",
        value: v.to_string(),
        expected: "a 64-bit integer, decimal or 0x hexadecimal".to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_round_trips_through_get_and_set() {
        let mut s = Settings::default();
        for name in Settings::NAMES {
            let v = s.get(name);
            assert!(v.is_some(), "{name}");
            assert_eq!(s.set(name, v.as_deref().unwrap_or("")), Ok(()), "{name}");
        }
        assert_eq!(s, Settings::default());
        assert_eq!(s.get("nope"), None);
    }

    #[test]
    fn time_helpers() {
        let s = Settings::default();
        assert_eq!(s.timeouts.tcp_time(), 900 * SEC);
        assert_eq!(s.timeouts.tcpfin_time(), 120 * SEC);
        assert_eq!(s.timeouts.udp_time(), 300 * SEC);
        assert_eq!(s.dest_trash_timeout(), 120 * SEC);
    }
}
