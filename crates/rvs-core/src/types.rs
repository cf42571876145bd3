//! The vocabulary shared by every part of the core: time, protocols, forwarding methods,
//! scheduler names and flags, dests — in IPVS's terms, so `ipvsadm` users can read the code.

use core::fmt;
use core::net::IpAddr;
use core::str::FromStr;

/// A point in time in nanoseconds on the caller's clock (monotonic time in the daemon, capture
/// timestamps in replay). The core never reads a clock: every operation takes `now`.
pub type Time = u64;

/// One second in [`Time`] units.
pub const SEC: Time = 1_000_000_000;

/// Transport protocol of a virtual service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// TCP (`-t` in ipvsadm).
    Tcp,
    /// UDP (`-u` in ipvsadm).
    Udp,
}

impl Protocol {
    /// The IP protocol number.
    pub const fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
        }
    }

    /// The protocol for an IP protocol number, if it is one a service can have.
    pub const fn from_number(n: u8) -> Option<Protocol> {
        match n {
            6 => Some(Protocol::Tcp),
            17 => Some(Protocol::Udp),
            _ => None,
        }
    }

    /// The name ipvsadm prints in listings ("TCP", "UDP").
    pub const fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        }
    }
}

/// How packets reach a dest (`ipvsadm -m/-g/-i`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum FwdMethod {
    /// NAT (masquerading, `-m`): destination rewritten to the dest, replies rewritten back.
    Masq,
    /// Direct routing (gatewaying, `-g`, ipvsadm's default): L3 untouched, MAC set to the dest.
    #[default]
    DirectRoute,
    /// IP-in-IP / IPv6-in-IPv6 tunnelling (`-i`).
    Tunnel,
}

impl FwdMethod {
    /// The name `ipvsadm -L` prints in the Forward column.
    pub const fn ipvsadm_name(self) -> &'static str {
        match self {
            FwdMethod::Masq => "Masq",
            FwdMethod::DirectRoute => "Route",
            FwdMethod::Tunnel => "Tunnel",
        }
    }

    /// The ipvsadm flag that selects this method (`-m`, `-g`, `-i`).
    pub const fn flag(self) -> &'static str {
        match self {
            FwdMethod::Masq => "-m",
            FwdMethod::DirectRoute => "-g",
            FwdMethod::Tunnel => "-i",
        }
    }
}

/// Scheduler names exactly as ipvsadm spells them (`-s NAME`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum SchedulerKind {
    /// Round robin.
    Rr,
    /// Weighted round robin.
    Wrr,
    /// Least connections.
    Lc,
    /// Weighted least connections (ipvsadm's default).
    #[default]
    Wlc,
    /// Shortest expected delay.
    Sed,
    /// Never queue.
    Nq,
    /// Source hashing.
    Sh,
    /// Destination hashing.
    Dh,
    /// Maglev hashing.
    Mh,
    /// Weighted failover.
    Fo,
    /// Weighted overflow.
    Ovf,
}

impl SchedulerKind {
    /// Every scheduler, in ipvsadm's order of documentation.
    pub const ALL: [SchedulerKind; 11] = [
        SchedulerKind::Rr,
        SchedulerKind::Wrr,
        SchedulerKind::Lc,
        SchedulerKind::Wlc,
        SchedulerKind::Sed,
        SchedulerKind::Nq,
        SchedulerKind::Sh,
        SchedulerKind::Dh,
        SchedulerKind::Mh,
        SchedulerKind::Fo,
        SchedulerKind::Ovf,
    ];

    /// The ipvsadm name ("rr", "wlc", ...).
    pub const fn name(self) -> &'static str {
        match self {
            SchedulerKind::Rr => "rr",
            SchedulerKind::Wrr => "wrr",
            SchedulerKind::Lc => "lc",
            SchedulerKind::Wlc => "wlc",
            SchedulerKind::Sed => "sed",
            SchedulerKind::Nq => "nq",
            SchedulerKind::Sh => "sh",
            SchedulerKind::Dh => "dh",
            SchedulerKind::Mh => "mh",
            SchedulerKind::Fo => "fo",
            SchedulerKind::Ovf => "ovf",
        }
    }
}

impl fmt::Display for SchedulerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A scheduler name ipvsadm does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scheduler {0:?}")]
pub struct UnknownScheduler(pub String);

impl FromStr for SchedulerKind {
    type Err = UnknownScheduler;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SchedulerKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| UnknownScheduler(s.to_string()))
    }
}

/// Scheduler flags (`ipvsadm -b`): `sh-fallback`, `sh-port`, `mh-fallback`, `mh-port`
/// (IPVS's `IP_VS_SVC_F_SCHED1..3`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SchedFlags {
    /// `sh-fallback` / `mh-fallback`: when the hashed dest is unusable, try the next one.
    pub fallback: bool,
    /// `sh-port` / `mh-port`: hash the source port as well as the source address.
    pub port: bool,
}

/// Key of a virtual service: protocol, virtual address and port (`-t VIP:port`). Port 0 means
/// "all ports" and requires persistence, as in IPVS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    /// TCP or UDP.
    pub protocol: Protocol,
    /// Virtual address (VIP).
    pub addr: IpAddr,
    /// Virtual port; 0 = every port.
    pub port: u16,
}

/// A real server behind a service, as the schedulers and the connection table see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dest {
    /// Real server address (RIP).
    pub addr: IpAddr,
    /// Real server port; for DR and TUN it must equal the virtual port (or 0 for port-0 services).
    pub port: u16,
    /// How packets reach it.
    pub fwd: FwdMethod,
    /// Weight (`-w`, 0..=65535); 0 = no new connections (quiescent), existing ones keep flowing.
    pub weight: u32,
    /// Upper connection threshold (`-x`); 0 = none. At or above it the dest is overloaded.
    pub u_threshold: u32,
    /// Lower connection threshold (`-y`); 0 = three quarters of the upper one, as IPVS does.
    pub l_threshold: u32,
    /// Overloaded (IPVS `IP_VS_DEST_F_OVERLOAD`): no new connections until below the lower threshold.
    pub overloaded: bool,
    /// Connections in the established state.
    pub active_conns: u32,
    /// Connections in any other state.
    pub inactive_conns: u32,
    /// Persistence templates pointing at this dest.
    pub persist_conns: u32,
}

impl Dest {
    /// A dest with IPVS's defaults (weight 1, no thresholds, no connections).
    pub fn new(addr: IpAddr, port: u16, fwd: FwdMethod, weight: u32) -> Dest {
        Dest {
            addr,
            port,
            fwd,
            weight,
            u_threshold: 0,
            l_threshold: 0,
            overloaded: false,
            active_conns: 0,
            inactive_conns: 0,
            persist_conns: 0,
        }
    }

    /// True when the dest may take new connections: weight above zero and not overloaded.
    pub fn is_usable(&self) -> bool {
        self.weight > 0 && !self.overloaded
    }

    /// IPVS's connection overhead: active connections weigh 256 times an inactive one
    /// (`ip_vs_dest_conn_overhead`).
    pub fn conn_overhead(&self) -> u64 {
        (u64::from(self.active_conns) << 8) + u64::from(self.inactive_conns)
    }

    /// Re-evaluate the overload flag after the connection counts changed (IPVS semantics:
    /// overloaded at `u_threshold`, cleared below `l_threshold`, or below ¾ of `u_threshold`
    /// when no lower threshold is set).
    pub fn update_overload(&mut self) {
        let conns = self.active_conns + self.inactive_conns;
        if self.u_threshold == 0 {
            self.overloaded = false;
        } else if conns >= self.u_threshold {
            self.overloaded = true;
        } else if self.overloaded {
            let low = if self.l_threshold != 0 {
                self.l_threshold
            } else {
                self.u_threshold.saturating_mul(3) / 4
            };
            if conns < low {
                self.overloaded = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduler_names_round_trip() {
        for k in SchedulerKind::ALL {
            assert_eq!(k.name().parse::<SchedulerKind>(), Ok(k));
        }
        assert!("xyz".parse::<SchedulerKind>().is_err());
        assert_eq!(SchedulerKind::default(), SchedulerKind::Wlc);
        assert_eq!(FwdMethod::default(), FwdMethod::DirectRoute);
    }

    #[test]
    fn overload_hysteresis() {
        let mut d = Dest::new("192.0.2.1".parse().unwrap(), 80, FwdMethod::Masq, 1);
        d.u_threshold = 4;
        d.active_conns = 4;
        d.update_overload();
        assert!(d.overloaded && !d.is_usable());
        d.active_conns = 3; // 3 is not below 3/4 × 4 = 3
        d.update_overload();
        assert!(d.overloaded);
        d.active_conns = 2;
        d.update_overload();
        assert!(!d.overloaded);
        d.l_threshold = 1;
        d.active_conns = 4;
        d.update_overload();
        d.active_conns = 1;
        d.update_overload();
        assert!(d.overloaded, "1 is not below the lower threshold 1");
        d.active_conns = 0;
        d.update_overload();
        assert!(!d.overloaded);
    }
}
