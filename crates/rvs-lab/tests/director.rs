//! The standard director topology on the real kernel, without a director daemon: addressing and
//! routing per mode, the real servers and client operations, path-MTU discovery through the
//! small link, ARP/NDP silence of DR dests about the VIP, and the TUN decapsulator.
//!
//! They need root: without it they print "SKIPPED: needs root" and pass, unless `RVS_E2E=1` is
//! set, in which case skipping fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::thread::sleep;
use std::time::{Duration, Instant};

use etherparse::icmpv4::DestUnreachableHeader;
use etherparse::{Icmpv4Type, Icmpv6Type, PacketBuilder};
use rvs_lab::{
    ClientError, Decap, DirectorLab, DirectorLabOpts, Family, HostId, Mode, Netns, or_skip,
};
use socket2::{Domain, Protocol, Type};

const T: Duration = Duration::from_secs(10);

fn build(opts: DirectorLabOpts) -> Option<DirectorLab> {
    or_skip(DirectorLab::new(opts))
}

fn opts(mode: Mode) -> DirectorLabOpts {
    DirectorLabOpts {
        mode,
        ..DirectorLabOpts::default()
    }
}

fn text(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn exec(lab: &DirectorLab, host: HostId, args: &[&str]) -> String {
    text(&lab.lab().exec(host, args).unwrap())
}

/// A counter from `/proc/net/snmp` (`Ip:`/`Icmp:` header and value lines) or `/proc/net/snmp6`
/// (`Name value` lines) read inside `host`.
fn counter(lab: &DirectorLab, host: HostId, name: &str) -> u64 {
    if let Some((group, field)) = name.split_once(':') {
        let t = exec(lab, host, &["cat", "/proc/net/snmp"]);
        let mut lines = t.lines().filter(|l| l.starts_with(&format!("{group}:")));
        let (head, vals) = (lines.next().unwrap(), lines.next().unwrap());
        let i = head.split_whitespace().position(|h| h == field).unwrap();
        return vals.split_whitespace().nth(i).unwrap().parse().unwrap();
    }
    let t = exec(lab, host, &["cat", "/proc/net/snmp6"]);
    t.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in snmp6"))
}

/// Waits (bounded) until `f` holds; the bound is generous and only limits a failing test.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        sleep(Duration::from_millis(20));
    }
}

fn mac(lab: &DirectorLab, host: HostId, dev: &str) -> String {
    let t = exec(lab, host, &["ip", "-o", "link", "show", "dev", dev]);
    let mut it = t.split_whitespace();
    it.find(|w| *w == "link/ether").unwrap();
    it.next().unwrap().to_owned()
}

/// Every dest answers `GET /` on its RIP from the client, in both families.
fn each_rip_names_its_dest(lab: &DirectorLab) {
    let client = lab.client().unwrap();
    for (i, rip) in lab.addrs().dests.iter().enumerate() {
        let name = lab.dest_name(i).unwrap();
        for addr in rip.both() {
            let r = client.http_get(addr, 80, "/", T).unwrap();
            assert_eq!(r.status, 200, "{addr}");
            assert_eq!(r.body, format!("{name}\n").into_bytes(), "{addr}");
            assert_eq!(r.dest.as_deref(), Some(name), "{addr}");
        }
    }
}

#[test]
fn nat_dests_route_through_the_director() {
    let Some(lab) = build(opts(Mode::Nat)) else {
        return;
    };
    let h = *lab.hosts();
    let a = lab.addrs();
    // Routing as configured: the dests' way back to the client is the director.
    for (i, d) in h.dests.iter().enumerate() {
        for f in Family::ALL {
            let r = exec(
                &lab,
                *d,
                &["ip", "route", "get", &a.client.get(f).to_string()],
            );
            assert!(
                r.contains(&format!("via {} ", a.director.get(f))),
                "dest{}: {r}",
                i + 1
            );
        }
        let lo = exec(&lab, *d, &["ip", "-o", "addr", "show", "dev", "lo"]);
        assert!(
            !lo.contains("203.0.113.10") && !lo.contains("2001:db8:203::10"),
            "{lo}"
        );
    }
    // And the packets really take it: the director's kernel forwards the dests' replies.
    let fwd4 = counter(&lab, h.director, "Ip:ForwDatagrams");
    let fwd6 = counter(&lab, h.director, "Ip6OutForwDatagrams");
    each_rip_names_its_dest(&lab);
    assert!(counter(&lab, h.director, "Ip:ForwDatagrams") >= fwd4 + 3 * 3);
    assert!(counter(&lab, h.director, "Ip6OutForwDatagrams") >= fwd6 + 3 * 3);
    // The director holds the VIP on lo (vip_local defaults to true); router-b routes it there.
    let lo = exec(&lab, h.director, &["ip", "-o", "addr", "show", "dev", "lo"]);
    assert!(
        lo.contains("203.0.113.10/32") && lo.contains("2001:db8:203::10/128"),
        "{lo}"
    );
    for f in Family::ALL {
        let r = exec(
            &lab,
            h.router_b,
            &["ip", "route", "get", &a.vip.get(f).to_string()],
        );
        assert!(r.contains(&format!("via {} ", a.director.get(f))), "{r}");
    }

    // Client operations against dest2: UDP and TCP echo, upload, download, refusals.
    let client = lab.client().unwrap();
    for rip in a.dests[1].both() {
        let got = client.udp_request(rip, 7, b"ping over udp", T).unwrap();
        assert_eq!(got, b"ping over udp");
        let err = client.udp_request(rip, 9, b"nobody", T).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
        let mut s = client.tcp_connect(rip, 7, T).unwrap();
        s.echo(b"first", T).unwrap();
        s.echo(&[7u8; 100_000], T).unwrap();
        let up = client.upload(rip, 80, 1 << 20, T).unwrap();
        assert_eq!((up.bytes, up.dest.as_deref()), (1 << 20, Some("dest2")));
        let down = client.download(rip, 80, 1 << 20, T).unwrap();
        assert_eq!((down.bytes, down.dest.as_deref()), (1 << 20, Some("dest2")));
        let r = client.http_get(rip, 80, "/nothing", T).unwrap();
        assert_eq!(r.status, 404);
        assert!(matches!(
            client.http_get(rip, 81, "/", T),
            Err(ClientError::Refused)
        ));
    }
    let st = lab.server_stats(1).unwrap();
    assert_eq!(st.udp_datagrams, 2);
    assert_eq!(st.tcp_echo_connections, 2);
    // 2 x (GET /, upload, download, 404)
    assert_eq!(st.http_requests, 8);
    assert_eq!(lab.server_stats(0).unwrap().udp_datagrams, 0);
    lab.close().unwrap();
}

/// Sends a datagram from router-b to `vip` as if it were on the LAN and returns router-b's
/// neighbour entry for it once resolution has ended: with a link-layer address (someone
/// answered) or `FAILED` (the kernel gave up after its probes, 100 ms apart here).
fn probe_neighbour(lab: &DirectorLab, vip: IpAddr) -> String {
    let h = lab.hosts();
    let br = lab.ifaces().router_b_bridge.as_str();
    let (fam, len, proto) = if vip.is_ipv6() {
        ("-6", 128, "ipv6")
    } else {
        ("-4", 32, "ipv4")
    };
    let (vip_s, dst) = (vip.to_string(), format!("{vip}/{len}"));
    lab.lab()
        .sysctl(
            h.router_b,
            &format!("net.{proto}.neigh.{br}.retrans_time_ms"),
            "100",
        )
        .unwrap();
    exec(
        lab,
        h.router_b,
        &["ip", fam, "neigh", "flush", "to", &vip_s, "dev", br],
    );
    exec(
        lab,
        h.router_b,
        &["ip", "route", "replace", &dst, "dev", br],
    );
    let rb = lab.client_on(h.router_b).unwrap();
    // Nobody serves port 9: the datagram only triggers resolution, its answer does not matter.
    let _ = rb.udp_request(vip, 9, b"who has the vip", Duration::from_millis(10));
    let mut entry = String::new();
    eventually("neighbour resolution ends", || {
        entry = exec(
            lab,
            h.router_b,
            &["ip", fam, "neigh", "show", "to", &vip_s, "dev", br],
        );
        entry.contains("lladdr") || entry.contains("FAILED")
    });
    let via = lab.addrs().director.get(if vip.is_ipv6() {
        Family::V6
    } else {
        Family::V4
    });
    exec(
        lab,
        h.router_b,
        &["ip", "route", "replace", &dst, "via", &via.to_string()],
    );
    entry
}

#[test]
fn dr_dests_keep_quiet_about_the_vip() {
    let Some(lab) = build(DirectorLabOpts {
        vip_local: false,
        ..opts(Mode::Dr)
    }) else {
        return;
    };
    let h = *lab.hosts();
    let a = lab.addrs();
    each_rip_names_its_dest(&lab);
    for (i, d) in h.dests.iter().enumerate() {
        let dev = &lab.ifaces().dests[i];
        let lo = exec(&lab, *d, &["ip", "-o", "addr", "show", "dev", "lo"]);
        assert!(
            lo.contains("203.0.113.10/32") && lo.contains("2001:db8:203::10/128"),
            "{lo}"
        );
        for key in [
            "net.ipv4.conf.all.arp_ignore".to_owned(),
            format!("net.ipv4.conf.{dev}.arp_ignore"),
        ] {
            assert_eq!(exec(&lab, *d, &["sysctl", "-n", &key]).trim(), "1", "{key}");
        }
        for f in Family::ALL {
            let r = exec(
                &lab,
                *d,
                &["ip", "route", "get", &a.client.get(f).to_string()],
            );
            assert!(
                r.contains(&format!("via {} ", a.router_b_lan.get(f))),
                "{r}"
            );
        }
    }
    let lo = exec(&lab, h.director, &["ip", "-o", "addr", "show", "dev", "lo"]);
    assert!(
        !lo.contains("203.0.113.10"),
        "VIP-less director has the VIP: {lo}"
    );

    // Nobody answers ARP / neighbour solicitations for the VIP on the LAN.
    for vip in a.vip.both() {
        let entry = probe_neighbour(&lab, vip);
        assert!(
            entry.contains("FAILED") && !entry.contains("lladdr"),
            "someone answered for {vip}: {entry}"
        );
    }

    // Requests to the VIP that reach a dest are answered from the VIP: route it from the
    // director to dest1 (as a DR director would forward it) and talk to dest1's servers.
    let dir = lab.client_on(h.director).unwrap();
    for f in Family::ALL {
        let net: rvs_lab::IpNet = format!(
            "{}/{}",
            a.vip.get(f),
            if f == Family::V4 { 32 } else { 128 }
        )
        .parse()
        .unwrap();
        lab.lab().route(h.director, net, a.dests[0].get(f)).unwrap();
        let vip = a.vip.get(f);
        assert_eq!(
            dir.udp_request(vip, 7, b"echo from the vip", T).unwrap(),
            b"echo from the vip"
        );
        assert_eq!(
            dir.http_get(vip, 80, "/", T).unwrap().dest.as_deref(),
            Some("dest1")
        );
        let mut s = dir.tcp_connect(vip, 7, T).unwrap();
        s.echo(b"long-lived", T).unwrap();
    }

    // Positive control of the probe: an address on the director's LAN interface is answered,
    // with the director's MAC.
    let dir_mac = mac(&lab, h.director, &lab.ifaces().director);
    for f in Family::ALL {
        let vip = a.vip.get(f);
        let n = format!("{vip}/{}", if f == Family::V4 { 32 } else { 128 });
        lab.lab()
            .addr(h.director, &lab.ifaces().director, n.parse().unwrap())
            .unwrap();
        let entry = probe_neighbour(&lab, vip);
        assert!(
            entry.contains(&format!("lladdr {dir_mac}")),
            "{vip}: {entry}"
        );
    }
}

#[test]
fn small_ab_link_path_mtu_discovery() {
    let Some(lab) = build(DirectorLabOpts {
        ab_mtu: 1280,
        ..opts(Mode::Dr)
    }) else {
        return;
    };
    let h = *lab.hosts();
    let a = lab.addrs();
    let client = lab.client().unwrap();
    let v4b = counter(&lab, h.router_b, "Icmp:OutDestUnreachs");
    let v6b = counter(&lab, h.router_b, "Icmp6OutPktTooBigs");
    let v4a = counter(&lab, h.router_a, "Icmp:OutDestUnreachs");
    let v6a = counter(&lab, h.router_a, "Icmp6OutPktTooBigs");
    // Downloads from dest1, uploads to dest2: a path MTU learned by either end lowers the MSS
    // it advertises on later connections, which would hide the other direction's discovery.
    for f in Family::ALL {
        let d = client
            .download(a.dests[0].get(f), 80, 4 << 20, Duration::from_secs(30))
            .unwrap();
        assert_eq!((d.bytes, d.dest.as_deref()), (4 << 20, Some("dest1")));
        let u = client
            .upload(a.dests[1].get(f), 80, 1 << 20, Duration::from_secs(30))
            .unwrap();
        assert_eq!((u.bytes, u.dest.as_deref()), (1 << 20, Some("dest2")));
    }
    // Downloads: router-b told dest1; uploads: router-a told the client.
    assert!(counter(&lab, h.router_b, "Icmp:OutDestUnreachs") > v4b);
    assert!(counter(&lab, h.router_b, "Icmp6OutPktTooBigs") > v6b);
    assert!(counter(&lab, h.router_a, "Icmp:OutDestUnreachs") > v4a);
    assert!(counter(&lab, h.router_a, "Icmp6OutPktTooBigs") > v6a);
    for f in Family::ALL {
        let r = exec(
            &lab,
            h.dests[0],
            &["ip", "route", "get", &a.client.get(f).to_string()],
        );
        assert!(r.contains("mtu 1280"), "dest1 learned no PMTU: {r}");
        let r = exec(
            &lab,
            h.client,
            &["ip", "route", "get", &a.dests[1].get(f).to_string()],
        );
        assert!(r.contains("mtu 1280"), "client learned no PMTU: {r}");
    }
    for dev in [&lab.ifaces().router_a_ab, &lab.ifaces().router_b_ab] {
        let host = if dev == &lab.ifaces().router_a_ab {
            h.router_a
        } else {
            h.router_b
        };
        let l = exec(&lab, host, &["ip", "-o", "link", "show", "dev", dev]);
        assert!(l.contains("mtu 1280"), "{l}");
    }
}

/// A UDP datagram from `src` to `dst`, built by hand (etherparse), as the inner packet of a
/// tunnel.
fn inner_udp(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let b = match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => PacketBuilder::ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => PacketBuilder::ipv6(s.octets(), d.octets(), 64),
        _ => panic!("mixed families"),
    };
    let mut v = Vec::new();
    b.udp(src.port(), dst.port())
        .write(&mut v, payload)
        .unwrap();
    v
}

/// Sends `inner` from `host` to `to` in a tunnel: a raw socket of protocol 4 (IPv4) or 41
/// (IPv6), whose outer header the kernel builds.
fn send_tunnelled(lab: &DirectorLab, host: HostId, to: IpAddr, inner: &[u8]) {
    let ns = lab.netns(host).unwrap();
    let (dom, proto) = match to {
        IpAddr::V4(_) => (Domain::IPV4, 4),
        IpAddr::V6(_) => (Domain::IPV6, 41),
    };
    let s = ns
        .socket(dom, Type::RAW, Some(Protocol::from(proto)))
        .unwrap();
    let n = s.send_to(inner, &SocketAddr::new(to, 0).into()).unwrap();
    assert_eq!(n, inner.len());
}

fn udp_in(ns: &Netns, at: SocketAddr) -> UdpSocket {
    let s = ns
        .socket(Domain::for_address(at), Type::DGRAM, Some(Protocol::UDP))
        .unwrap();
    s.bind(&at.into()).unwrap();
    let s: UdpSocket = s.into();
    s.set_read_timeout(Some(T)).unwrap();
    s
}

#[test]
fn tun_dests_decapsulate_ip_in_ip() {
    let Some(lab) = build(DirectorLabOpts {
        vip_local: false,
        ..opts(Mode::Tun)
    }) else {
        return;
    };
    let h = *lab.hosts();
    let a = lab.addrs();
    let d1 = lab.netns(h.dests[0]).unwrap();
    if !matches!(lab.decap(0), Some(Decap::User(_))) {
        // The kernel has tunnel modules: the lab uses them and this test has nothing to test.
        eprintln!("NOTE: kernel tunnels in use; the user-space decapsulator is not exercised");
        return;
    }
    assert_eq!(
        exec(
            &lab,
            h.dests[0],
            &["sysctl", "-n", "net.ipv4.conf.rvsdecap0.rp_filter"]
        )
        .trim(),
        "0"
    );
    let unreach = counter(&lab, h.dests[0], "Icmp:OutDestUnreachs");
    let parmprob = counter(&lab, h.dests[0], "Icmp6OutParmProblems");

    for f in Family::ALL {
        // 1. A datagram from the client to a UDP socket bound to the VIP on dest1.
        let vip = SocketAddr::new(a.vip.get(f), 9999);
        let sock = udp_in(&d1, vip);
        let from = SocketAddr::new(a.client.get(f), 40000);
        let pkt = inner_udp(from, vip, format!("tunnelled {f:?}").as_bytes());
        send_tunnelled(&lab, h.director, a.dests[0].get(f), &pkt);
        let mut buf = [0u8; 100];
        let (n, src) = sock.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], format!("tunnelled {f:?}").as_bytes());
        assert_eq!(src, from);

        // 2. A round trip to the echo server: the inner source is the director, so the echo
        // (sourced from the VIP) comes straight back to it over the LAN.
        let me = SocketAddr::new(a.director.get(f), 40001);
        let back = udp_in(&lab.netns(h.director).unwrap(), me);
        let pkt = inner_udp(me, SocketAddr::new(a.vip.get(f), 7), b"echo me");
        send_tunnelled(&lab, h.director, a.dests[0].get(f), &pkt);
        let (n, src) = back.recv_from(&mut buf).unwrap();
        assert_eq!(
            (&buf[..n], src),
            (&b"echo me"[..], SocketAddr::new(a.vip.get(f), 7))
        );
    }
    // The thread counts a packet after the TUN write returns, which may be after the kernel
    // delivered it.
    eventually("4 packets decapsulated", || {
        let st = lab.decap_stats(0).unwrap();
        (st.ipv4, st.ipv6) == (2, 2)
    });
    let st = lab.decap_stats(0).unwrap();
    assert_eq!(
        (st.malformed, st.wrong_inner, st.tun_errors),
        (0, 0, 0),
        "{st:?}"
    );
    assert_eq!(lab.server_stats(0).unwrap().udp_datagrams, 2);

    // Bad inner packets are counted and dropped: IPv6 inside IPv4, IPv4 inside IPv6, garbage.
    let v6pkt = inner_udp(
        SocketAddr::new(a.client.v6.into(), 1),
        SocketAddr::new(a.vip.v6.into(), 9),
        b"x",
    );
    let v4pkt = inner_udp(
        SocketAddr::new(a.client.v4.into(), 1),
        SocketAddr::new(a.vip.v4.into(), 9),
        b"x",
    );
    send_tunnelled(&lab, h.director, a.dests[0].v4.into(), &v6pkt);
    send_tunnelled(&lab, h.director, a.dests[0].v6.into(), &v4pkt);
    send_tunnelled(
        &lab,
        h.director,
        a.dests[0].v4.into(),
        &[0x45, 0, 0, 99, 1, 2],
    );
    eventually("bad packets counted", || {
        let st = lab.decap_stats(0).unwrap();
        st.wrong_inner == 2 && st.malformed == 1
    });

    // The raw sockets kept the kernel from answering the tunnel packets with "protocol
    // unreachable" / "unrecognized next header" ...
    assert_eq!(counter(&lab, h.dests[0], "Icmp:OutDestUnreachs"), unreach);
    assert_eq!(counter(&lab, h.dests[0], "Icmp6OutParmProblems"), parmprob);
    // ... which a host without them does (control: router-b).
    let unreach_b = counter(&lab, h.router_b, "Icmp:OutDestUnreachs");
    let parmprob_b = counter(&lab, h.router_b, "Icmp6OutParmProblems");
    send_tunnelled(&lab, h.director, a.router_b_lan.v4.into(), &v4pkt);
    send_tunnelled(&lab, h.director, a.router_b_lan.v6.into(), &v6pkt);
    eventually(
        "router-b answers IP-in-IP with protocol unreachable",
        || counter(&lab, h.router_b, "Icmp:OutDestUnreachs") > unreach_b,
    );
    eventually(
        "router-b answers IPv6-in-IPv6 with a parameter problem",
        || counter(&lab, h.router_b, "Icmp6OutParmProblems") > parmprob_b,
    );
    // ICMP errors about the dest's own packets (sourced from the VIP) travel encapsulated too,
    // and reach the dest's kernel.
    let in4 = counter(&lab, h.dests[0], "Icmp:InDestUnreachs");
    let in6 = counter(&lab, h.dests[0], "Icmp6InPktTooBigs");
    let quote4 = inner_udp(
        SocketAddr::new(a.vip.v4.into(), 7),
        SocketAddr::new(a.client.v4.into(), 40000),
        &[0; 1400],
    );
    let mut err4 = Vec::new();
    PacketBuilder::ipv4(a.router_b_lan.v4.octets(), a.vip.v4.octets(), 64)
        .icmpv4(Icmpv4Type::DestinationUnreachable(
            DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1280 },
        ))
        .write(&mut err4, &quote4[..28])
        .unwrap();
    send_tunnelled(&lab, h.director, a.dests[0].v4.into(), &err4);
    let quote6 = inner_udp(
        SocketAddr::new(a.vip.v6.into(), 7),
        SocketAddr::new(a.client.v6.into(), 40000),
        &[0; 1400],
    );
    let mut err6 = Vec::new();
    PacketBuilder::ipv6(a.router_b_lan.v6.octets(), a.vip.v6.octets(), 64)
        .icmpv6(Icmpv6Type::PacketTooBig { mtu: 1280 })
        .write(&mut err6, &quote6[..1232])
        .unwrap();
    send_tunnelled(&lab, h.director, a.dests[0].v6.into(), &err6);
    eventually("dest1's kernel received the frag-needed", || {
        counter(&lab, h.dests[0], "Icmp:InDestUnreachs") > in4
    });
    eventually("dest1's kernel received the packet-too-big", || {
        counter(&lab, h.dests[0], "Icmp6InPktTooBigs") > in6
    });

    // Every dest runs its own decapsulator.
    for i in 1..3 {
        assert!(matches!(lab.decap(i), Some(Decap::User(d)) if d.is_running()));
    }
}

/// Applies an nftables ruleset (one `nft` command per line) inside `host`.
fn nft(lab: &DirectorLab, host: HostId, rules: &[&str]) {
    for r in rules {
        exec(lab, host, &["nft", r]);
    }
}

#[test]
fn client_errors_as_the_application_sees_them() {
    let Some(lab) = build(opts(Mode::Dr)) else {
        return;
    };
    let h = *lab.hosts();
    let a = lab.addrs();
    let client = lab.client().unwrap();
    let short = Duration::from_millis(500);
    for f in Family::ALL {
        nft(
            &lab,
            h.dests[0],
            &[
                "add table inet t",
                "add chain inet t in { type filter hook input priority 0 ; }",
            ],
        );
        // A long-lived connection that the server side resets between two messages.
        let mut s = client.tcp_connect(a.dests[0].get(f), 7, T).unwrap();
        s.echo(b"before", T).unwrap();
        nft(
            &lab,
            h.dests[0],
            &["add rule inet t in tcp dport 7 reject with tcp reset"],
        );
        let err = s.echo(b"after", T).unwrap_err();
        assert!(matches!(err, ClientError::Reset { .. }), "{f:?}: {err}");
        // SYNs dropped: the connect times out.
        nft(&lab, h.dests[0], &["add rule inet t in tcp dport 80 drop"]);
        let err = client
            .http_get(a.dests[0].get(f), 80, "/", short)
            .unwrap_err();
        assert!(
            matches!(err, ClientError::ConnectTimeout(_)),
            "{f:?}: {err}"
        );
        // An ICMP host unreachable in answer to the SYN.
        nft(
            &lab,
            h.dests[0],
            &["add rule inet t in tcp dport 81 reject with icmpx type host-unreachable"],
        );
        let err = client.http_get(a.dests[0].get(f), 81, "/", T).unwrap_err();
        assert!(matches!(err, ClientError::Unreachable(_)), "{f:?}: {err}");
        nft(&lab, h.dests[0], &["delete table inet t"]);

        // Everything after the handshake lost on the way to the client: the transfer stalls.
        nft(
            &lab,
            h.client,
            &[
                "add table inet t",
                "add chain inet t in { type filter hook input priority 0 ; }",
                "add rule inet t in tcp sport 80 tcp flags & syn == 0 drop",
            ],
        );
        let err = client
            .download(a.dests[1].get(f), 80, 1 << 20, short)
            .unwrap_err();
        assert!(
            matches!(err, ClientError::Stalled { progress: 0 }),
            "{f:?}: {err}"
        );
        nft(&lab, h.client, &["delete table inet t"]);
        // And with the path clear again, the same download completes.
        client.download(a.dests[1].get(f), 80, 1 << 20, T).unwrap();
    }
}
