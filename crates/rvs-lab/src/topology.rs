//! The standard director topology, dual-stack, built on a [`Lab`]:
//!
//! ```text
//! client ──(1500)── router-a ──(link AB: ab_mtu)── router-b ── br0 (LAN: lan_mtu) ──┬── director
//!                                                                                  ├── dest1
//!                                                                                  ├── dest2
//!                                                                                  └── dest3
//! ```
//!
//! | host / link | IPv4 | IPv6 |
//! |---|---|---|
//! | client `eth0` | 192.0.2.2/28 | 2001:db8:1::2/64 |
//! | router-a `eth0` (client side) | 192.0.2.1/28 | 2001:db8:1::1/64 |
//! | router-a `eth1` (link AB) | 192.0.2.17/28 | 2001:db8:2::1/64 |
//! | router-b `eth0` (link AB) | 192.0.2.18/28 | 2001:db8:2::2/64 |
//! | router-b `br0` (LAN bridge) | 198.51.100.1/24 | 2001:db8:100::1/64 |
//! | director `eth0` | 198.51.100.2/24 | 2001:db8:100::2/64 |
//! | dest1..3 `eth0` | 198.51.100.11..13/24 | 2001:db8:100::11..13/64 |
//! | VIP (not in the LAN prefix) | 203.0.113.10 | 2001:db8:203::10 |
//!
//! Routing: the client's default route is router-a; router-a routes the LAN and 203.0.113.0/24,
//! 2001:db8:203::/64 (the VIPs) to router-b; router-b routes the client prefixes to router-a and
//! the VIP (/32, /128) to the director's LAN address; the director's default route is router-b.
//! Both routers forward IPv4 and IPv6. The MTU of link AB applies to both of its ends, so
//! router-b sends the frag-needed / packet-too-big errors for big packets towards the client
//! (downloads) and router-a those for big packets towards the LAN (uploads). The LAN is a Linux
//! bridge inside router-b's namespace (STP and multicast snooping off, no forwarding delay), and
//! every LAN interface has the LAN MTU.
//!
//! The [`Mode`] configures the dests the way each IPVS forwarding method needs:
//!
//! - **NAT**: default routes via the director (198.51.100.2, 2001:db8:100::2); no VIP on them.
//! - **DR**: the VIP on `lo` (/32, /128, `nodad`), `arp_ignore=1` and `arp_announce=2` (on `all`
//!   and the LAN interface) so they never answer or announce the VIP on the LAN (IPv6 needs no
//!   setting: Linux answers neighbour solicitations only for addresses of the receiving
//!   interface), default routes via router-b.
//! - **TUN**: as DR, plus decapsulation of IPv4-in-IPv4 and IPv6-in-IPv6 addressed to the RIP —
//!   the kernel's `ipip` / `ip6tnl` devices where the kernel has them, else the lab's
//!   [`Decapsulator`] (a TUN device) — and `rp_filter=0`.
//!
//! The director has IPv4 and IPv6 forwarding on (the daemon forwards by itself, but DR/TUN
//! directors commonly run so and NAT without a running daemon then still routes the dests'
//! replies), `rp_filter=0`, no ICMP redirects (`send_redirects=0`: the LAN is one segment, and a
//! redirect would teach NAT dests to bypass it), and the VIP on `lo` unless the
//! [`DirectorLabOpts::vip_local`] option makes it a VIP-less director. No host accepts redirects.
//!
//! Duplicate address detection is off everywhere (`accept_dad=0` before any interface exists,
//! `nodad` on every address), and [`DirectorLab::new`] waits until no address is tentative.
//! Offloads are left as the kernel sets them (veth: checksum offload and TSO on).
//!
//! Each dest runs [`DestServers`] (HTTP on TCP 80, echo on TCP and UDP 7) unless
//! [`DirectorLabOpts::servers`] is off; [`DirectorLab::client`] runs operations from the client.
//! Dropping the lab stops the servers and decapsulators first and then removes every namespace.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use crate::client::Client;
use crate::decap::{DecapConfig, DecapStats, Decapsulator};
use crate::error::{LabError, Result};
use crate::lab::{HostId, Lab, LinkOpts};
use crate::net::IpNet;
use crate::netns::Netns;
use crate::servers::{DestServers, ServerStats};

/// How the dests are set up: for which IPVS forwarding method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Masquerading: dests route through the director.
    Nat,
    /// Direct routing: VIP on the dests' `lo`, ARP for it suppressed.
    Dr,
    /// Tunnelling: as DR, plus IP-in-IP / IPv6-in-IPv6 decapsulation.
    Tun,
}

/// An IP address family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// Both families, IPv4 first.
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];
}

/// The IPv4 and the IPv6 address of one role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DualAddr {
    /// The IPv4 address.
    pub v4: Ipv4Addr,
    /// The IPv6 address.
    pub v6: Ipv6Addr,
}

impl DualAddr {
    /// The address of family `f`.
    pub fn get(&self, f: Family) -> IpAddr {
        match f {
            Family::V4 => IpAddr::V4(self.v4),
            Family::V6 => IpAddr::V6(self.v6),
        }
    }

    /// Both addresses, IPv4 first.
    pub fn both(&self) -> [IpAddr; 2] {
        [self.get(Family::V4), self.get(Family::V6)]
    }
}

const fn v6(a: u16, b: u16, c: u16) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0x0db8, a, 0, 0, 0, b, c)
}

const fn dual(v4: [u8; 4], v6: Ipv6Addr) -> DualAddr {
    DualAddr {
        v4: Ipv4Addr::new(v4[0], v4[1], v4[2], v4[3]),
        v6,
    }
}

/// The topology's addresses (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Addrs {
    /// The client.
    pub client: DualAddr,
    /// router-a on the client link.
    pub router_a_client: DualAddr,
    /// router-a on link AB.
    pub router_a_ab: DualAddr,
    /// router-b on link AB.
    pub router_b_ab: DualAddr,
    /// router-b on the LAN (the bridge).
    pub router_b_lan: DualAddr,
    /// The director's LAN address.
    pub director: DualAddr,
    /// The dests' LAN addresses (RIPs).
    pub dests: [DualAddr; 3],
    /// The virtual service address.
    pub vip: DualAddr,
}

impl Addrs {
    /// The addresses every [`DirectorLab`] uses.
    pub const STANDARD: Addrs = Addrs {
        client: dual([192, 0, 2, 2], v6(1, 0, 2)),
        router_a_client: dual([192, 0, 2, 1], v6(1, 0, 1)),
        router_a_ab: dual([192, 0, 2, 17], v6(2, 0, 1)),
        router_b_ab: dual([192, 0, 2, 18], v6(2, 0, 2)),
        router_b_lan: dual([198, 51, 100, 1], v6(0x100, 0, 1)),
        director: dual([198, 51, 100, 2], v6(0x100, 0, 2)),
        dests: [
            dual([198, 51, 100, 11], v6(0x100, 0, 0x11)),
            dual([198, 51, 100, 12], v6(0x100, 0, 0x12)),
            dual([198, 51, 100, 13], v6(0x100, 0, 0x13)),
        ],
        vip: dual([203, 0, 113, 10], v6(0x203, 0, 0x10)),
    };
}

/// Prefix lengths of the client link, link AB and the LAN (IPv4, IPv6).
const CLIENT_PREFIX: (u8, u8) = (28, 64);
const AB_PREFIX: (u8, u8) = (28, 64);
const LAN_PREFIX: (u8, u8) = (24, 64);

/// How to build a [`DirectorLab`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirectorLabOpts {
    /// How the dests are set up.
    pub mode: Mode,
    /// MTU of link AB, both ends (default 1500; 1280 for path-MTU scenarios; 1280..=65535).
    pub ab_mtu: u32,
    /// MTU of every LAN interface and the bridge (default 1500; 1280..=65535).
    pub lan_mtu: u32,
    /// Whether the VIP is configured on the director's `lo` (default `true`); `false` builds a
    /// VIP-less director, to which router-b merely routes the VIP.
    pub vip_local: bool,
    /// Whether to start [`DestServers`] on every dest (default `true`).
    pub servers: bool,
}

impl Default for DirectorLabOpts {
    fn default() -> Self {
        Self {
            mode: Mode::Dr,
            ab_mtu: 1500,
            lan_mtu: 1500,
            vip_local: true,
            servers: true,
        }
    }
}

/// The hosts of a [`DirectorLab`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hosts {
    /// The client.
    pub client: HostId,
    /// The router next to the client.
    pub router_a: HostId,
    /// The router owning the LAN bridge.
    pub router_b: HostId,
    /// The director.
    pub director: HostId,
    /// The three dests.
    pub dests: [HostId; 3],
}

/// Interface names of a [`DirectorLab`] (each inside its host's namespace).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ifaces {
    /// The client's interface.
    pub client: String,
    /// router-a's interface towards the client.
    pub router_a_client: String,
    /// router-a's interface on link AB.
    pub router_a_ab: String,
    /// router-b's interface on link AB.
    pub router_b_ab: String,
    /// router-b's LAN bridge.
    pub router_b_bridge: String,
    /// The director's LAN interface (what `rvsd --interface` attaches to).
    pub director: String,
    /// The dests' LAN interfaces.
    pub dests: [String; 3],
}

/// How a TUN-mode dest decapsulates.
#[derive(Debug)]
pub enum Decap {
    /// The kernel's `ipip` and `ip6tnl` devices (named in the variant).
    Kernel {
        /// The IPv4-in-IPv4 device.
        ipip: String,
        /// The IPv6-in-IPv6 device.
        ip6tnl: String,
    },
    /// The lab's user-space decapsulator for both families.
    User(Decapsulator),
}

/// The standard director topology (see the module documentation), removed when dropped.
#[derive(Debug)]
pub struct DirectorLab {
    servers: Vec<DestServers>,
    decaps: Vec<Decap>,
    lab: Lab,
    opts: DirectorLabOpts,
    hosts: Hosts,
    ifaces: Ifaces,
}

/// Names of the hosts in the lab (short, so namespace names stay readable).
const DEST_NAMES: [&str; 3] = ["dest1", "dest2", "dest3"];

/// How long [`DirectorLab::new`] waits for addresses to leave the tentative state.
const SETTLE: Duration = Duration::from_secs(10);

fn net(addr: IpAddr, prefix: (u8, u8)) -> Result<IpNet> {
    IpNet::new(addr, if addr.is_ipv6() { prefix.1 } else { prefix.0 })
}

fn nets(a: &DualAddr, prefix: (u8, u8)) -> Result<Vec<IpNet>> {
    a.both().into_iter().map(|x| net(x, prefix)).collect()
}

fn host_net(a: IpAddr) -> Result<IpNet> {
    net(a, (32, 128))
}

impl DirectorLab {
    /// Builds the topology with `opts`, starts the servers (and, in TUN mode, the
    /// decapsulators), and returns once every address is usable.
    ///
    /// Fails with [`LabError::InvalidOptions`] for MTUs outside 1280..=65535 (checked first,
    /// before anything is created), and with [`LabError::NotRoot`] or
    /// [`LabError::ToolMissing`] where no lab can be built (tests skip on those, see
    /// [`crate::or_skip`]).
    pub fn new(opts: DirectorLabOpts) -> Result<Self> {
        for (what, mtu) in [("ab_mtu", opts.ab_mtu), ("lan_mtu", opts.lan_mtu)] {
            if !(1280..=65535).contains(&mtu) {
                return Err(LabError::InvalidOptions(format!(
                    "{what} {mtu} is outside 1280..=65535 (IPv6 needs at least 1280)"
                )));
            }
        }
        let lab = Lab::new()?;
        let a = Addrs::STANDARD;
        let hosts = Hosts {
            client: lab.host("client")?,
            router_a: lab.host("router-a")?,
            router_b: lab.host("router-b")?,
            director: lab.host("director")?,
            dests: [
                lab.host(DEST_NAMES[0])?,
                lab.host(DEST_NAMES[1])?,
                lab.host(DEST_NAMES[2])?,
            ],
        };
        let all = [
            hosts.client,
            hosts.router_a,
            hosts.router_b,
            hosts.director,
            hosts.dests[0],
            hosts.dests[1],
            hosts.dests[2],
        ];
        // Before any interface exists, so every interface inherits the defaults.
        for h in all {
            lab.sysctls(
                h,
                &[
                    ("net.ipv6.conf.all.accept_dad", "0"),
                    ("net.ipv6.conf.default.accept_dad", "0"),
                    ("net.ipv4.conf.all.accept_redirects", "0"),
                    ("net.ipv4.conf.default.accept_redirects", "0"),
                    ("net.ipv6.conf.all.accept_redirects", "0"),
                    ("net.ipv6.conf.default.accept_redirects", "0"),
                    ("net.ipv4.conf.all.rp_filter", "0"),
                    ("net.ipv4.conf.default.rp_filter", "0"),
                ],
            )?;
        }

        let client_link = lab.link(
            hosts.client,
            hosts.router_a,
            &LinkOpts {
                addrs_a: nets(&a.client, CLIENT_PREFIX)?,
                addrs_b: nets(&a.router_a_client, CLIENT_PREFIX)?,
                ..LinkOpts::default()
            },
        )?;
        let ab = lab.link(
            hosts.router_a,
            hosts.router_b,
            &LinkOpts {
                mtu_a: Some(opts.ab_mtu),
                mtu_b: Some(opts.ab_mtu),
                addrs_a: nets(&a.router_a_ab, AB_PREFIX)?,
                addrs_b: nets(&a.router_b_ab, AB_PREFIX)?,
            },
        )?;

        // The LAN: a bridge in router-b, one veth per LAN host enslaved to it.
        let bridge = "br0".to_owned();
        let mtu = opts.lan_mtu.to_string();
        lab.exec(
            hosts.router_b,
            &[
                "ip",
                "link",
                "add",
                &bridge,
                "mtu",
                &mtu,
                "type",
                "bridge",
                "stp_state",
                "0",
                "forward_delay",
                "0",
                "mcast_snooping",
                "0",
            ],
        )?;
        let mut lan_ifs = Vec::new();
        for (h, addr) in [(hosts.director, a.director)]
            .into_iter()
            .chain(hosts.dests.into_iter().zip(a.dests))
        {
            let l = lab.link(
                hosts.router_b,
                h,
                &LinkOpts {
                    mtu_a: Some(opts.lan_mtu),
                    mtu_b: Some(opts.lan_mtu),
                    addrs_a: Vec::new(),
                    addrs_b: nets(&addr, LAN_PREFIX)?,
                },
            )?;
            lab.exec(
                hosts.router_b,
                &["ip", "link", "set", "dev", &l.a_dev, "master", &bridge],
            )?;
            lan_ifs.push(l.b_dev);
        }
        // Ports joining lower the bridge's MTU to theirs; set it again in case the default
        // (1500) was above a port's.
        lab.exec(
            hosts.router_b,
            &["ip", "link", "set", "dev", &bridge, "mtu", &mtu],
        )?;
        for n in nets(&a.router_b_lan, LAN_PREFIX)? {
            lab.addr(hosts.router_b, &bridge, n)?;
        }
        lab.exec(hosts.router_b, &["ip", "link", "set", "dev", &bridge, "up"])?;

        // Routing.
        for r in [hosts.router_a, hosts.router_b] {
            lab.forwarding(r, true)?;
        }
        for f in Family::ALL {
            lab.default_route(hosts.client, a.router_a_client.get(f))?;
            let lan = net(a.director.get(f), LAN_PREFIX)?;
            lab.route(hosts.router_a, lan, a.router_b_ab.get(f))?;
            let vips = net(a.vip.get(f), (24, 64))?;
            lab.route(hosts.router_a, vips, a.router_b_ab.get(f))?;
            let clients = net(a.client.get(f), CLIENT_PREFIX)?;
            lab.route(hosts.router_b, clients, a.router_a_ab.get(f))?;
            lab.route(hosts.router_b, host_net(a.vip.get(f))?, a.director.get(f))?;
            lab.default_route(hosts.director, a.router_b_lan.get(f))?;
        }

        // The director.
        let dir_if = lan_ifs.first().cloned().unwrap_or_default();
        lab.forwarding(hosts.director, true)?;
        lab.sysctls(
            hosts.director,
            &[
                ("net.ipv4.conf.all.send_redirects", "0"),
                ("net.ipv4.conf.default.send_redirects", "0"),
                (&format!("net.ipv4.conf.{dir_if}.send_redirects"), "0"),
                (&format!("net.ipv4.conf.{dir_if}.rp_filter"), "0"),
            ],
        )?;
        if opts.vip_local {
            for v in a.vip.both() {
                lab.addr(hosts.director, "lo", host_net(v)?)?;
            }
        }

        // The dests.
        let dest_ifs: Vec<String> = lan_ifs.iter().skip(1).cloned().collect();
        for (h, dev) in hosts.dests.iter().zip(&dest_ifs) {
            dest_setup(&lab, *h, dev, opts.mode)?;
        }

        let ifaces = Ifaces {
            client: client_link.a_dev,
            router_a_client: client_link.b_dev,
            router_a_ab: ab.a_dev,
            router_b_ab: ab.b_dev,
            router_b_bridge: bridge,
            director: dir_if,
            dests: [0, 1, 2].map(|i| dest_ifs.get(i).cloned().unwrap_or_default()),
        };
        let mut me = Self {
            servers: Vec::new(),
            decaps: Vec::new(),
            lab,
            opts,
            hosts,
            ifaces,
        };
        me.wait_settled(&all)?;
        if opts.mode == Mode::Tun {
            for (i, rip) in a.dests.iter().enumerate() {
                let d = me.start_decap(i, rip)?;
                me.decaps.push(d);
            }
        }
        if opts.servers {
            for (i, name) in DEST_NAMES.iter().enumerate() {
                let ns = me.netns(me.hosts.dests[i])?;
                let s = DestServers::start(&ns, name).map_err(|e| io_err("start servers", e))?;
                me.servers.push(s);
            }
        }
        Ok(me)
    }

    /// Waits until no IPv6 address in any host is tentative (DAD is off, so this is at once;
    /// the check guards against a kernel that does it anyway).
    fn wait_settled(&self, hosts: &[HostId]) -> Result<()> {
        let deadline = Instant::now() + SETTLE;
        for &h in hosts {
            loop {
                let out = self
                    .lab
                    .exec(h, &["ip", "-6", "addr", "show", "tentative"])?;
                if out.stdout.iter().all(u8::is_ascii_whitespace) {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(LabError::Timeout {
                        cmd: format!(
                            "waiting for tentative addresses in {}",
                            self.lab.netns_name(h)?
                        ),
                        after: SETTLE,
                    });
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }

    fn start_decap(&self, i: usize, rip: &DualAddr) -> Result<Decap> {
        let h = self.hosts.dests[i];
        let ns = self.lab.netns_name(h)?;
        let (ipip, ip6tnl) = ("rvsipip0", "rvsip6tnl0");
        // The kernel's own tunnels where it has them (not on kernels built without the ipip
        // and ip6_tunnel modules, such as the one this lab was written on).
        let kernel = self
            .lab
            .exec(
                h,
                &[
                    "ip",
                    "link",
                    "add",
                    ipip,
                    "type",
                    "ipip",
                    "local",
                    &rip.v4.to_string(),
                    "remote",
                    "any",
                ],
            )
            .is_ok();
        if kernel {
            let v6_ok = self
                .lab
                .exec(
                    h,
                    &[
                        "ip",
                        "link",
                        "add",
                        ip6tnl,
                        "type",
                        "ip6tnl",
                        "mode",
                        "ip6ip6",
                        "local",
                        &rip.v6.to_string(),
                        "remote",
                        "any",
                    ],
                )
                .is_ok();
            if v6_ok {
                for dev in [ipip, ip6tnl] {
                    self.lab.exec(h, &["ip", "link", "set", "dev", dev, "up"])?;
                }
                self.lab.sysctls(
                    h,
                    &[
                        (&format!("net.ipv4.conf.{ipip}.rp_filter"), "0"),
                        (&format!("net.ipv6.conf.{ip6tnl}.disable_ipv6"), "0"),
                    ],
                )?;
                return Ok(Decap::Kernel {
                    ipip: ipip.to_owned(),
                    ip6tnl: ip6tnl.to_owned(),
                });
            }
            // Half a kernel: use the user-space decapsulator for both families.
            self.lab.exec(h, &["ip", "link", "del", ipip])?;
        }
        let cfg = DecapConfig {
            local_v4: Some(rip.v4),
            local_v6: Some(rip.v6),
            ..DecapConfig::default()
        };
        let d = Decapsulator::start(Some(&Netns::named(&ns)), &cfg)
            .map_err(|e| io_err("start decapsulator", e))?;
        Ok(Decap::User(d))
    }

    /// The underlying lab, for `exec`, `spawn`, `command`, `sysctl`, `addr`, `route`, ...
    /// in any host.
    pub fn lab(&self) -> &Lab {
        &self.lab
    }

    /// The options the lab was built with.
    pub fn opts(&self) -> &DirectorLabOpts {
        &self.opts
    }

    /// The hosts.
    pub fn hosts(&self) -> &Hosts {
        &self.hosts
    }

    /// The addresses ([`Addrs::STANDARD`]).
    pub fn addrs(&self) -> &'static Addrs {
        &Addrs::STANDARD
    }

    /// The interface names.
    pub fn ifaces(&self) -> &Ifaces {
        &self.ifaces
    }

    /// The network namespace name of `host` (for `ip netns exec NAME ...`).
    pub fn netns_name(&self, host: HostId) -> Result<String> {
        self.lab.netns_name(host)
    }

    /// The network namespace of `host`, for running threads there.
    pub fn netns(&self, host: HostId) -> Result<Netns> {
        Ok(Netns::named(&self.lab.netns_name(host)?))
    }

    /// The director's namespace name (where `rvsd` runs).
    pub fn director_netns(&self) -> Result<String> {
        self.lab.netns_name(self.hosts.director)
    }

    /// Client operations from the client host.
    pub fn client(&self) -> Result<Client> {
        Ok(Client::new(self.netns(self.hosts.client)?))
    }

    /// Client operations from any host of the lab.
    pub fn client_on(&self, host: HostId) -> Result<Client> {
        Ok(Client::new(self.netns(host)?))
    }

    /// The name dest `i` (0..3) answers with: `dest1`, `dest2`, `dest3`.
    pub fn dest_name(&self, i: usize) -> Option<&'static str> {
        DEST_NAMES.get(i).copied()
    }

    /// The counters of dest `i`'s servers (`None` without servers).
    pub fn server_stats(&self, i: usize) -> Option<ServerStats> {
        self.servers.get(i).map(DestServers::stats)
    }

    /// How TUN-mode dest `i` decapsulates (`None` in the other modes).
    pub fn decap(&self, i: usize) -> Option<&Decap> {
        self.decaps.get(i)
    }

    /// The counters of dest `i`'s user-space decapsulator, if it runs one.
    pub fn decap_stats(&self, i: usize) -> Option<DecapStats> {
        match self.decaps.get(i) {
            Some(Decap::User(d)) => Some(d.stats()),
            _ => None,
        }
    }

    /// Stops the servers and decapsulators, then removes the lab, reporting the first error
    /// (dropping does the same but can only print errors).
    pub fn close(mut self) -> Result<()> {
        self.stop_threads();
        self.lab.teardown()
    }

    fn stop_threads(&mut self) {
        // Stop everything at once, then wait: each server's stop wakes its threads at once.
        for s in self.servers.drain(..) {
            s.stop();
        }
        for d in self.decaps.drain(..) {
            if let Decap::User(d) = d {
                d.stop();
            }
        }
    }
}

impl Drop for DirectorLab {
    fn drop(&mut self) {
        // Sockets and TUN devices in the namespaces must be closed before the namespaces are
        // deleted, or the namespaces (and their veths) would outlive their names.
        self.stop_threads();
    }
}

fn io_err(what: &str, e: std::io::Error) -> LabError {
    LabError::Io {
        cmd: what.to_owned(),
        source: e,
    }
}

/// Configures dest `h` (LAN interface `dev`, addresses `rip`) for `mode`.
fn dest_setup(lab: &Lab, h: HostId, dev: &str, mode: Mode) -> Result<()> {
    let a = Addrs::STANDARD;
    match mode {
        Mode::Nat => {
            for f in Family::ALL {
                lab.default_route(h, a.director.get(f))?;
            }
        }
        Mode::Dr | Mode::Tun => {
            let arp_ignore = format!("net.ipv4.conf.{dev}.arp_ignore");
            let arp_announce = format!("net.ipv4.conf.{dev}.arp_announce");
            let rp_filter = format!("net.ipv4.conf.{dev}.rp_filter");
            lab.sysctls(
                h,
                &[
                    ("net.ipv4.conf.all.arp_ignore", "1"),
                    ("net.ipv4.conf.all.arp_announce", "2"),
                    (&arp_ignore, "1"),
                    (&arp_announce, "2"),
                    ("net.ipv4.conf.all.rp_filter", "0"),
                    (&rp_filter, "0"),
                ],
            )?;
            for v in a.vip.both() {
                lab.addr(h, "lo", host_net(v)?)?;
            }
            for f in Family::ALL {
                lab.default_route(h, a.router_b_lan.get(f))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::is_documentation_addr;

    #[test]
    fn mtus_are_checked_before_anything_is_built() {
        for (ab, lan) in [(1279, 1500), (1500, 1000), (1500, 65536), (0, 0)] {
            let r = DirectorLab::new(DirectorLabOpts {
                ab_mtu: ab,
                lan_mtu: lan,
                ..DirectorLabOpts::default()
            });
            assert!(matches!(r, Err(LabError::InvalidOptions(_))), "{ab} {lan}");
        }
    }

    #[test]
    fn standard_addresses() {
        let a = Addrs::STANDARD;
        let all = [
            a.client,
            a.router_a_client,
            a.router_a_ab,
            a.router_b_ab,
            a.router_b_lan,
            a.director,
            a.dests[0],
            a.dests[1],
            a.dests[2],
            a.vip,
        ];
        for d in all {
            for ip in d.both() {
                assert!(is_documentation_addr(ip), "{ip}");
            }
        }
        assert_eq!(a.vip.get(Family::V4).to_string(), "203.0.113.10");
        assert_eq!(a.vip.get(Family::V6).to_string(), "2001:db8:203::10");
        assert_eq!(a.dests[2].v6.to_string(), "2001:db8:100::13");
        assert_eq!(a.router_b_ab.both()[0].to_string(), "192.0.2.18");
        // The VIP is outside the LAN prefix; the client and AB /28s do not overlap.
        let lan = net(a.director.v4.into(), LAN_PREFIX).unwrap().network();
        assert_ne!(net(a.vip.v4.into(), LAN_PREFIX).unwrap().network(), lan);
        let c = net(a.client.v4.into(), CLIENT_PREFIX).unwrap().network();
        let ab = net(a.router_a_ab.v4.into(), AB_PREFIX).unwrap().network();
        assert_ne!(c, ab);
        assert_eq!(
            net(a.router_b_ab.v4.into(), AB_PREFIX).unwrap().network(),
            ab
        );
    }
}
