//! The listings, in ipvsadm's layouts to the column: `-L -n` and its `--stats`, `--rate`,
//! `--thresholds`, `--persistent-conn`, `--tun-info` variants, `-L -c`, `--timeout`; plus
//! `--counters` (an RVS extension, its own layout).
//!
//! Layouts follow ipvsadm 1.31's `print_title`, `print_service_entry`, `print_largenum` and
//! `print_conn` (format strings and field widths read from it, not copied). Addresses are always
//! numeric: RVS never resolves names, so `-n` changes nothing.

use std::cmp::Ordering;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use rvs_api::{ConnEntry, Counters, DestEntry, FwdMethod, ServiceEntry, ServiceList, Timeouts};

/// What `-L` shows (ipvsadm's `FMT_*` flags).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Format {
    /// `--stats`.
    pub(crate) stats: bool,
    /// `--rate`.
    pub(crate) rate: bool,
    /// `--thresholds`.
    pub(crate) thresholds: bool,
    /// `--persistent-conn`.
    pub(crate) persistent_conn: bool,
    /// `--tun-info`.
    pub(crate) tun_info: bool,
    /// `--nosort`.
    pub(crate) nosort: bool,
    /// `--exact`.
    pub(crate) exact: bool,
}

/// `ADDR:PORT`, IPv6 in brackets (ipvsadm's `addrport_to_anyname` with `-n`).
fn addr_port(addr: IpAddr, port: u16) -> String {
    SocketAddr::new(addr, port).to_string()
}

/// Cut `s` to at most `n` bytes (ipvsadm truncates IPv4 names to fit the column; numeric text
/// is ASCII).
fn truncate(mut s: String, n: usize) -> String {
    if s.len() > n {
        let mut cut = n;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// A counter as ipvsadm prints it in `--stats` and `--rate` columns: 9 characters, scaled to
/// K, M, G, T beyond 8 digits; with `--exact`, the whole number (at least 9 wide).
pub(crate) fn largenum(i: u64, exact: bool) -> String {
    if exact {
        let digits = i.to_string().len();
        let width = if digits <= 8 { 9 } else { digits + 1 };
        return format!("{i:>width$}");
    }
    if i < 100_000_000 {
        format!("{i:>9}")
    } else if i < 1_000_000_000 {
        format!("{:>8}K", i / 1000)
    } else if i < 100_000_000_000 {
        format!("{:>8}M", i / 1_000_000)
    } else if i < 100_000_000_000_000 {
        format!("{:>8}G", i / 1_000_000_000)
    } else {
        format!("{:>8}T", i / 1_000_000_000_000)
    }
}

/// ipvsadm's service order (`ipvs_cmp_services`): family, protocol, address, port.
fn cmp_services(a: &ServiceEntry, b: &ServiceEntry) -> Ordering {
    let (x, y) = (&a.config.service, &b.config.service);
    (x.addr.is_ipv6(), x.protocol.number(), x.addr, x.port).cmp(&(
        y.addr.is_ipv6(),
        y.protocol.number(),
        y.addr,
        y.port,
    ))
}

/// ipvsadm's dest order (`ipvs_cmp_dests`): family, address, port.
fn cmp_dests(a: &DestEntry, b: &DestEntry) -> Ordering {
    let (x, y) = (&a.config, &b.config);
    (x.addr.is_ipv6(), x.addr, x.port).cmp(&(y.addr.is_ipv6(), y.addr, y.port))
}

/// The column titles (ipvsadm's `print_title`).
fn title(out: &mut String, f: Format) {
    let first = "Prot LocalAddress:Port";
    if f.stats {
        let _ = writeln!(
            out,
            "{first:<33} {:>8} {:>8} {:>8} {:>8} {:>8}\n  -> RemoteAddress:Port",
            "Conns", "InPkts", "OutPkts", "InBytes", "OutBytes"
        );
    } else if f.rate {
        let _ = writeln!(
            out,
            "{first:<33} {:>8} {:>8} {:>8} {:>8} {:>8}\n  -> RemoteAddress:Port",
            "CPS", "InPPS", "OutPPS", "InBPS", "OutBPS"
        );
    } else if f.thresholds {
        let _ = writeln!(
            out,
            "{first:<33} {:<10} {:<10} {:<10} {:<10}\n  -> RemoteAddress:Port",
            "Uthreshold", "Lthreshold", "ActiveConn", "InActConn"
        );
    } else if f.persistent_conn {
        let _ = writeln!(
            out,
            "{first:<33} {:<9} {:<11} {:<10} {:<10}\n  -> RemoteAddress:Port",
            "Weight", "PersistConn", "ActiveConn", "InActConn"
        );
    } else if f.tun_info {
        out.push_str(
            "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn\n",
        );
    } else {
        out.push_str(
            "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n",
        );
    }
}

/// One service and its dests (ipvsadm's `print_service_entry`).
fn service_entry(out: &mut String, e: &ServiceEntry, f: Format) {
    let s = &e.config.service;
    let mut svc_name = format!("{:<4} {}", s.protocol.name(), addr_port(s.addr, s.port));
    if s.addr.is_ipv4() {
        svc_name = truncate(svc_name, 33);
    }
    if f.stats || f.rate {
        let _ = write!(out, "{svc_name:<33}");
        let v = if f.stats {
            let t = e.stats;
            [t.conns, t.inpkts, t.outpkts, t.inbytes, t.outbytes]
        } else {
            let r = e.rates;
            [r.cps, r.inpps, r.outpps, r.inbps, r.outbps]
        };
        for n in v {
            out.push_str(&largenum(n, f.exact));
        }
    } else {
        let c = &e.config;
        let _ = write!(out, "{svc_name} {}", c.scheduler);
        if !c.sched_flags.is_empty() {
            let _ = write!(out, " ({})", c.sched_flags.text(&c.scheduler));
        }
        if let Some(p) = c.persistence {
            let _ = write!(out, " persistent {p}");
            if let Some(m) = c.netmask.filter(|m| !m.is_host()) {
                let _ = write!(out, " mask {m}");
            }
        }
    }
    out.push('\n');
    let mut dests: Vec<&DestEntry> = e.dests.iter().collect();
    if !f.nosort {
        dests.sort_by(|a, b| cmp_dests(a, b));
    }
    for d in dests {
        let c = &d.config;
        let mut dname = addr_port(c.addr, c.port);
        if c.addr.is_ipv4() {
            dname = truncate(dname, 28);
        }
        if f.stats {
            let _ = write!(out, "  -> {dname:<28}");
            for n in [
                d.stats.conns,
                d.stats.inpkts,
                d.stats.outpkts,
                d.stats.inbytes,
                d.stats.outbytes,
            ] {
                out.push_str(&largenum(n, f.exact));
            }
            out.push('\n');
        } else if f.rate {
            let _ = write!(
                out,
                "  -> {dname:<28} {:>8} {:>8} {:>8}",
                d.rates.cps, d.rates.inpps, d.rates.outpps
            );
            out.push_str(&largenum(d.rates.inbps, f.exact));
            out.push_str(&largenum(d.rates.outbps, f.exact));
            out.push('\n');
        } else if f.thresholds {
            let _ = writeln!(
                out,
                "  -> {dname:<28} {:<10} {:<10} {:<10} {:<10}",
                c.u_threshold, c.l_threshold, d.active_conns, d.inactive_conns
            );
        } else if f.persistent_conn {
            let _ = writeln!(
                out,
                "  -> {dname:<28} {:<9} {:<11} {:<10} {:<10}",
                c.weight, d.persist_conns, d.active_conns, d.inactive_conns
            );
        } else if f.tun_info {
            // RVS tunnels are IP-in-IP (IPv6-in-IPv6): ipvsadm's "ipip" type.
            let info = if c.fwd == FwdMethod::Tunnel {
                "ipip"
            } else {
                "n/a"
            };
            let _ = writeln!(
                out,
                "  -> {dname:<28} {:<7} {info:<13} {:<6} {:<10} {:<10}",
                c.fwd.name(),
                c.weight,
                d.active_conns,
                d.inactive_conns
            );
        } else {
            let _ = writeln!(
                out,
                "  -> {dname:<28} {:<7} {:<6} {:<10} {:<10}",
                c.fwd.name(),
                c.weight,
                d.active_conns,
                d.inactive_conns
            );
        }
    }
}

/// `-L` without a service: the version line, the titles, every service.
///
/// The version is the IPVS interface version RVS implements ([`rvs_api::IPVS_VERSION`]); the
/// size is the connection table's bound (`conn_tab_max`) — IPVS prints its hash table's size
/// there, RVS's table has no separate hash size, and the bound is what limits it.
pub(crate) fn list_all(list: &ServiceList, f: Format) -> String {
    let mut out = format!(
        "IP Virtual Server version {} (size={})\n",
        rvs_api::IPVS_VERSION,
        list.conn_tab_size
    );
    title(&mut out, f);
    let mut services: Vec<&ServiceEntry> = list.services.iter().collect();
    if !f.nosort {
        services.sort_by(|a, b| cmp_services(a, b));
    }
    for s in services {
        service_entry(&mut out, s, f);
    }
    out
}

/// `-L -t|-u SERVICE`: the titles and that service (no version line, as ipvsadm).
pub(crate) fn list_one(e: &ServiceEntry, f: Format) -> String {
    let mut out = String::new();
    title(&mut out, f);
    service_entry(&mut out, e, f);
    out
}

/// `-L -c`: the connection entries (ipvsadm's `list_conn` / `print_conn`). With
/// `--persistent-conn` ipvsadm widens the header for persistence-engine data, which RVS never
/// has, so the rows keep the plain layout.
pub(crate) fn list_conns(conns: &[ConnEntry], persistent_conn: bool) -> String {
    let mut out = String::from("IPVS connection entries\n");
    let (state, source, virt, dest) = ("state", "source", "virtual", "destination");
    if persistent_conn {
        let (pe_name, pe_data) = ("pe name", "pe_data");
        let _ = writeln!(
            out,
            "pro expire {state:<11} {source:<18} {virt:<18} {dest:<18} {pe_name:<16} {pe_data}"
        );
    } else {
        let _ = writeln!(out, "pro expire {state:<11} {source:<18} {virt:<18} {dest}");
    }
    for c in conns {
        let expire = format!("{:02}:{:02}", c.expires_secs / 60, c.expires_secs % 60);
        let _ = writeln!(
            out,
            "{:<3} {:<6} {:<11} {:<18} {:<18} {}",
            c.protocol.name(),
            expire,
            c.state,
            addr_port(c.caddr, c.cport),
            addr_port(c.vaddr, c.vport),
            addr_port(c.daddr, c.dport)
        );
    }
    out
}

/// `-L --timeout`.
pub(crate) fn timeouts(t: &Timeouts) -> String {
    format!(
        "Timeout (tcp tcpfin udp): {} {} {}\n",
        t.tcp, t.tcpfin, t.udp
    )
}

fn row(out: &mut String, name: &str, value: u64) {
    let _ = writeln!(out, "  {name:<26} {value:>14}");
}

/// `--counters` (RVS extension): every counter under its stable name, one per line.
pub(crate) fn counters(c: &Counters) -> String {
    let mut out = String::from("Dataplane\n");
    for (n, v) in [
        ("rx", c.rx),
        ("forwarded", c.forwarded),
        ("generated", c.generated),
        ("local", c.local),
        ("held", c.held),
    ] {
        row(&mut out, n, v);
    }
    out.push_str("Drops\n");
    for d in &c.drops {
        row(&mut out, &d.name, d.count);
    }
    out.push_str("Connection table\n");
    let t = &c.conn_table;
    for (n, v) in [
        ("entries", t.entries),
        ("max", t.max),
        ("memory_bytes", t.memory_bytes),
        ("inserted", t.inserted),
        ("refused_full", t.refused_full),
        ("evicted", t.evicted),
        ("expired", t.expired),
        ("removed", t.removed),
    ] {
        row(&mut out, n, v);
    }
    out.push_str("Director\n");
    let d = &c.director;
    for (n, v) in [
        ("no_dest", d.no_dest),
        ("table_full", d.table_full),
        ("evicted", d.evicted),
        ("expired", d.expired),
        ("dest_unavailable", d.dest_unavailable),
    ] {
        row(&mut out, n, v);
    }
    for (title, f) in [
        ("Fragments (tracker, DR/TUN)\n", &c.frag_tracker),
        ("Fragments (reassembler, NAT)\n", &c.frag_reassembler),
    ] {
        out.push_str(title);
        for (n, v) in [
            ("held", f.held),
            ("released", f.released),
            ("expired", f.expired),
            ("overflow", f.overflow),
            ("reassembled", f.reassembled),
            ("bad", f.bad),
        ] {
            row(&mut out, n, v);
        }
    }
    out.push_str("ICMP\n");
    let _ = writeln!(
        out,
        "  {:<6} {:>4} {:>4} {:<36} {:>14}",
        "family", "type", "code", "outcome", "count"
    );
    for i in &c.icmp {
        let outcome = match &i.reason {
            Some(r) => format!("{}:{r}", i.outcome),
            None => i.outcome.clone(),
        };
        let _ = writeln!(
            out,
            "  {:<6} {:>4} {:>4} {outcome:<36} {:>14}",
            if i.v6 { "ipv6" } else { "ipv4" },
            i.icmp_type,
            i.code,
            i.count
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rvs_api::{
        DestConfig, Netmask, Protocol, Rates, SchedFlags, ServiceAddr, ServiceConfig, Stats,
    };

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn dest(addr: &str, port: u16, fwd: FwdMethod, weight: u32) -> DestEntry {
        DestEntry {
            config: DestConfig {
                fwd,
                weight,
                ..DestConfig::new(ip(addr), port)
            },
            active_conns: 0,
            inactive_conns: 0,
            persist_conns: 0,
            overloaded: false,
            stats: Stats::default(),
            rates: Rates::default(),
        }
    }

    fn service(protocol: Protocol, addr: &str, port: u16, sched: &str) -> ServiceEntry {
        let mut config = ServiceConfig::new(ServiceAddr {
            protocol,
            addr: ip(addr),
            port,
        });
        config.scheduler = sched.into();
        ServiceEntry {
            config,
            dests: Vec::new(),
            stats: Stats::default(),
            rates: Rates::default(),
        }
    }

    /// A table with what each layout must render: IPv4 and IPv6, TCP and UDP, persistence
    /// with a mask, scheduler flags, the three methods, services and dests out of order.
    fn table() -> ServiceList {
        let mut web = service(Protocol::Tcp, "203.0.113.10", 80, "wlc");
        web.dests = vec![
            DestEntry {
                active_conns: 12,
                inactive_conns: 3,
                ..dest("198.51.100.12", 80, FwdMethod::Route, 1)
            },
            DestEntry {
                active_conns: 1234,
                inactive_conns: 56789,
                persist_conns: 7,
                ..dest("198.51.100.11", 8080, FwdMethod::Masq, 100)
            },
        ];
        web.stats = Stats {
            conns: 123_456,
            inpkts: 987_654_321,
            outpkts: 12_345_678_901,
            inbytes: 123_456_789_012_345,
            outbytes: 99,
        };
        web.rates = Rates {
            cps: 10,
            inpps: 2000,
            outpps: 1900,
            inbps: 1_500_000_000,
            outbps: 250_000,
        };
        web.dests[1].stats = web.stats;
        web.dests[1].rates = web.rates;
        web.dests[1].config.u_threshold = 5000;
        web.dests[1].config.l_threshold = 4000;
        let mut dns = service(Protocol::Udp, "2001:db8::53", 53, "sh");
        dns.config.sched_flags = SchedFlags {
            fallback: true,
            port: true,
        };
        dns.config.persistence = Some(600);
        dns.config.netmask = Some(Netmask::V6(64));
        dns.dests = vec![dest("2001:db8:1::21", 53, FwdMethod::Tunnel, 2)];
        let mut all = service(Protocol::Tcp, "203.0.113.10", 0, "rr");
        all.config.persistence = Some(300);
        all.config.netmask = Some(Netmask::V4("255.255.255.0".parse().unwrap()));
        let udp4 = service(Protocol::Udp, "192.0.2.200", 53, "rr");
        ServiceList {
            conn_tab_size: 4096,
            services: vec![dns, web, all, udp4],
        }
    }

    #[test]
    fn list_n_is_ipvsadms_layout() {
        let got = list_all(&table(), Format::default());
        let want = "\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  203.0.113.10:0 rr persistent 300 mask 255.255.255.0
TCP  203.0.113.10:80 wlc
  -> 198.51.100.11:8080           Masq    100    1234       56789     
  -> 198.51.100.12:80             Route   1      12         3         
UDP  192.0.2.200:53 rr
UDP  [2001:db8::53]:53 sh (sh-fallback,sh-port) persistent 600 mask 64
  -> [2001:db8:1::21]:53          Tunnel  2      0          0         
";
        assert_eq!(got, want);
    }

    #[test]
    fn nosort_keeps_the_daemons_order() {
        let got = list_all(
            &table(),
            Format {
                nosort: true,
                ..Format::default()
            },
        );
        let lines: Vec<&str> = got.lines().collect();
        assert!(lines[3].starts_with("UDP  [2001:db8::53]:53"), "{got}");
        assert!(lines[6].starts_with("  -> 198.51.100.12:80"), "{got}");
    }

    #[test]
    fn stats_layout() {
        let got = list_all(
            &table(),
            Format {
                stats: true,
                ..Format::default()
            },
        );
        let want = "\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes
  -> RemoteAddress:Port
TCP  203.0.113.10:0                      0        0        0        0        0
TCP  203.0.113.10:80                123456  987654K   12345M     123T       99
  -> 198.51.100.11:8080             123456  987654K   12345M     123T       99
  -> 198.51.100.12:80                    0        0        0        0        0
UDP  192.0.2.200:53                      0        0        0        0        0
UDP  [2001:db8::53]:53                   0        0        0        0        0
  -> [2001:db8:1::21]:53                 0        0        0        0        0
";
        assert_eq!(got, want);
        let exact = list_one(
            &table().services[1],
            Format {
                stats: true,
                exact: true,
                ..Format::default()
            },
        );
        assert_eq!(
            exact.lines().nth(2).unwrap(),
            "TCP  203.0.113.10:80                123456 987654321 12345678901 123456789012345       99"
        );
    }

    #[test]
    fn rate_layout() {
        let got = list_one(
            &table().services[1],
            Format {
                rate: true,
                ..Format::default()
            },
        );
        let want = "\
Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS
  -> RemoteAddress:Port
TCP  203.0.113.10:80                    10     2000     1900    1500M   250000
  -> 198.51.100.11:8080                 10     2000     1900    1500M   250000
  -> 198.51.100.12:80                    0        0        0        0        0
";
        assert_eq!(got, want);
    }

    #[test]
    fn thresholds_persistent_conn_and_tun_info_layouts() {
        let t = table();
        let th = list_one(
            &t.services[1],
            Format {
                thresholds: true,
                ..Format::default()
            },
        );
        assert_eq!(
            th,
            "\
Prot LocalAddress:Port            Uthreshold Lthreshold ActiveConn InActConn 
  -> RemoteAddress:Port
TCP  203.0.113.10:80 wlc
  -> 198.51.100.11:8080           5000       4000       1234       56789     
  -> 198.51.100.12:80             0          0          12         3         
"
        );
        let pc = list_one(
            &t.services[1],
            Format {
                persistent_conn: true,
                ..Format::default()
            },
        );
        assert_eq!(
            pc,
            "\
Prot LocalAddress:Port            Weight    PersistConn ActiveConn InActConn 
  -> RemoteAddress:Port
TCP  203.0.113.10:80 wlc
  -> 198.51.100.11:8080           100       7           1234       56789     
  -> 198.51.100.12:80             1         0           12         3         
"
        );
        let ti = list_one(
            &t.services[0],
            Format {
                tun_info: true,
                ..Format::default()
            },
        );
        assert_eq!(
            ti,
            "\
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn
UDP  [2001:db8::53]:53 sh (sh-fallback,sh-port) persistent 600 mask 64
  -> [2001:db8:1::21]:53          Tunnel  ipip          2      0          0         
"
        );
    }

    #[test]
    fn largenum_scales_like_ipvsadm() {
        assert_eq!(largenum(0, false), "        0");
        assert_eq!(largenum(99_999_999, false), " 99999999");
        assert_eq!(largenum(100_000_000, false), "  100000K");
        assert_eq!(largenum(999_999_999, false), "  999999K");
        assert_eq!(largenum(1_000_000_000, false), "    1000M");
        assert_eq!(largenum(100_000_000_000, false), "     100G");
        assert_eq!(largenum(100_000_000_000_000, false), "     100T");
        assert_eq!(largenum(u64::MAX, false), "18446744T");
        assert_eq!(largenum(5, true), "        5");
        assert_eq!(largenum(123_456_789, true), " 123456789");
    }

    #[test]
    fn connection_layout() {
        let conns = vec![
            ConnEntry {
                protocol: Protocol::Tcp,
                state: "ESTABLISHED".into(),
                expires_secs: 899,
                caddr: ip("192.0.2.1"),
                cport: 40000,
                vaddr: ip("203.0.113.10"),
                vport: 80,
                daddr: ip("198.51.100.11"),
                dport: 80,
                fwd: FwdMethod::Route,
                template: false,
            },
            ConnEntry {
                protocol: Protocol::Tcp,
                state: "NONE".into(),
                expires_secs: 6001,
                caddr: ip("192.0.2.0"),
                cport: 0,
                vaddr: ip("203.0.113.10"),
                vport: 80,
                daddr: ip("198.51.100.11"),
                dport: 80,
                fwd: FwdMethod::Route,
                template: true,
            },
            ConnEntry {
                protocol: Protocol::Udp,
                state: "UDP".into(),
                expires_secs: 0,
                caddr: ip("2001:db8:2::1"),
                cport: 5353,
                vaddr: ip("2001:db8::53"),
                vport: 53,
                daddr: ip("2001:db8:1::21"),
                dport: 53,
                fwd: FwdMethod::Tunnel,
                template: false,
            },
        ];
        let want = "\
IPVS connection entries
pro expire state       source             virtual            destination
TCP 14:59  ESTABLISHED 192.0.2.1:40000    203.0.113.10:80    198.51.100.11:80
TCP 100:01 NONE        192.0.2.0:0        203.0.113.10:80    198.51.100.11:80
UDP 00:00  UDP         [2001:db8:2::1]:5353 [2001:db8::53]:53  [2001:db8:1::21]:53
";
        assert_eq!(list_conns(&conns, false), want);
        assert!(
            list_conns(&[], true).ends_with(
                "pro expire state       source             virtual            destination        pe name          pe_data\n"
            )
        );
    }

    #[test]
    fn timeout_line() {
        assert_eq!(
            timeouts(&Timeouts {
                tcp: 900,
                tcpfin: 120,
                udp: 300
            }),
            "Timeout (tcp tcpfin udp): 900 120 300\n"
        );
    }
}
