//! Persistence fixtures (`-p`, `-M`, port-0 services, `expire_quiescent_template`): every case
//! runs on `rr`, which would otherwise send each new connection to the next dest, so a client
//! staying on one dest is the template's doing. IPv4 and IPv6, DR and NAT.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;
use common::*;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use rvs_core::proto::ConnState;
use rvs_core::rules::parse_line;
use rvs_dataplane::{Dataplane, Frame, Verdict};

const DR: (&str, u16) = ("-g", 80);
const NAT: (&str, u16) = ("-m", 8080);
const METHODS: [(&str, u16); 2] = [DR, NAT];

/// Another client of the same family, in another /24 and /64 than CIP4 / CIP6.
fn other_client(f: &Fam) -> IpAddr {
    match f.vip {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 3, 0, 0, 0, 0, 1)),
    }
}

/// TCP VIP:`vport`, `rr`, options `opts` (e.g. "-p 300"), the three dests by method `m`.
fn rules(f: &Fam, vport: u16, opts: &str, (m, rport): (&str, u16)) -> String {
    let v = sa(f.vip, vport);
    let rport = if vport == 0 { 0 } else { rport };
    let mut r = format!("-A -t {v} -s rr {opts}\n");
    for rip in f.rip {
        r += &format!("-a -t {v} -r {} {m} -w 1\n", sa(rip, rport));
    }
    r
}

fn apply(dp: &mut Dataplane, line: &str, now: u64) {
    let rule = parse_line(line).unwrap().unwrap();
    dp.director_mut().apply(&rule, now).unwrap();
}

/// Send a SYN from `c` to `v` at `now`; return the index of the dest it was forwarded to.
fn open(dp: &mut Dataplane, f: &Fam, c: SocketAddr, v: SocketAddr, now: u64) -> usize {
    let out = run(dp, &eth(&tcp(c, v, "S", 1000, 0, b"")), now);
    let d = out
        .dest
        .unwrap_or_else(|| panic!("SYN {c} -> {v} not forwarded: {:?}", out.verdict));
    assert_eq!(out.verdict, Verdict::Transmit { next_hop: d.ip() });
    f.rip
        .iter()
        .position(|r| *r == d.ip())
        .expect("one of the dests")
}

/// Establish then reset the connection from `c` (SYN must have been sent): it ends in CLOSE,
/// gone 10 s after `now`.
fn close(dp: &mut Dataplane, c: SocketAddr, v: SocketAddr, now: u64) {
    for flags in ["A", "RA"] {
        let out = run(dp, &eth(&tcp(c, v, flags, 1001, 5001, b"")), now);
        assert!(
            matches!(out.verdict, Verdict::Transmit { .. }),
            "{flags}: {:?}",
            out.verdict
        );
    }
}

fn templates(dp: &Dataplane) -> usize {
    dp.director()
        .conns()
        .iter()
        .filter(|(_, c)| c.state == ConnState::Template)
        .count()
}

#[test]
fn persistent_service_keeps_a_client_on_one_dest_where_rr_would_rotate() {
    for f in FAMS {
        for m in METHODS {
            let name = format!("{} {}", f.name, m.0);
            // Port 80 persistent, port 81 the same without -p.
            let mut rules_text = rules(&f, 80, "-p 300", m);
            rules_text += &rules(&f, 81, "", m);
            let mut dp = dataplane(&rules_text, &[]);
            let (p, np) = (sa(f.vip, 80), sa(f.vip, 81));
            let b = other_client(&f);
            let plain: Vec<usize> = (0..6)
                .map(|i| open(&mut dp, &f, sa(f.cip, 1000 + i), np, SEC))
                .collect();
            assert_eq!(plain, [0, 1, 2, 0, 1, 2], "{name}: without -p, rr rotates");
            let sticky: Vec<usize> = (0..6)
                .map(|i| open(&mut dp, &f, sa(f.cip, 2000 + i), p, SEC))
                .collect();
            assert_eq!(sticky, [0; 6], "{name}: with -p, one dest");
            // Another client gets its own template from the scheduler (next in rr), and keeps it.
            let other: Vec<usize> = (0..3)
                .map(|i| open(&mut dp, &f, sa(b, 3000 + i), p, SEC))
                .collect();
            assert_eq!(other, [1; 3], "{name}: other client");
            assert_eq!(
                open(&mut dp, &f, sa(f.cip, 2100), p, 2 * SEC),
                0,
                "{name}: first client again"
            );
            assert_eq!(templates(&dp), 2, "{name}: one template per client");
            // The NAT rewrite uses the template's dest.
            if m == NAT {
                let out = run(
                    &mut dp,
                    &eth(&tcp(sa(f.cip, 2200), p, "S", 1, 0, b"")),
                    3 * SEC,
                );
                let want = eth(&tcp_ttl(
                    sa(f.cip, 2200),
                    sa(f.rip[0], 8080),
                    "S",
                    1,
                    0,
                    b"",
                    63,
                ));
                assert_transmit(&format!("{name}: NAT via template"), &out, f.rip[0], &want);
            }
        }
    }
}

#[test]
fn template_outlives_a_short_connection_by_the_persistence_timeout() {
    for f in FAMS {
        for m in METHODS {
            let name = format!("{} {}", f.name, m.0);
            let v = sa(f.vip, 80);
            // Identical histories, probed on either side of the boundary.
            let history = |dp: &mut Dataplane| {
                assert_eq!(open(dp, &f, sa(f.cip, 1000), v, SEC), 0);
                close(dp, sa(f.cip, 1000), v, 2 * SEC); // CLOSE: ends at 12 s
                // 200 s after that connection ended: still the template's dest.
                assert_eq!(
                    open(dp, &f, sa(f.cip, 1001), v, 212 * SEC),
                    0,
                    "{name}: +200 s"
                );
                close(dp, sa(f.cip, 1001), v, 213 * SEC); // ends at 223 s
            };
            // The template lasts 300 s past the end of the last connection: until 523 s.
            let mut before = dataplane(&rules(&f, 80, "-p 300", m), &[]);
            history(&mut before);
            assert_eq!(
                open(&mut before, &f, sa(f.cip, 1002), v, 522 * SEC),
                0,
                "{name}: 522 s"
            );
            let mut after = dataplane(&rules(&f, 80, "-p 300", m), &[]);
            history(&mut after);
            assert_eq!(templates(&after), 1, "{name}: template kept");
            assert_eq!(
                open(&mut after, &f, sa(f.cip, 1002), v, 524 * SEC),
                1,
                "{name}: 524 s, rr moves on"
            );
            assert_eq!(templates(&after), 1, "{name}: a new template");
        }
    }
}

#[test]
fn template_outlives_a_long_connection_by_the_persistence_timeout() {
    // The sweep that removes the connection runs at its very expiry (902 s: the table files the
    // unpinned template again, due, for the next sweep) or later (903 s: the template falls due
    // in the same sweep): both keep it.
    for sweep in [902, 903] {
        for f in FAMS {
            for m in METHODS {
                let name = format!("{} {} sweep at {sweep} s", f.name, m.0);
                let v = sa(f.vip, 80);
                let history = |dp: &mut Dataplane| {
                    assert_eq!(open(dp, &f, sa(f.cip, 1000), v, SEC), 0);
                    // ESTABLISHED at 2 s, then idle: the connection ends at 902 s, long after
                    // the template's first 300 s; the template waits for it.
                    let out = run(
                        dp,
                        &eth(&tcp(sa(f.cip, 1000), v, "A", 1001, 5001, b"")),
                        2 * SEC,
                    );
                    assert_eq!(out.dest.map(|d| d.ip()), Some(f.rip[0]));
                    // Another client (SYN only: its connection ends at 63 s, its template at 363 s).
                    assert_eq!(
                        open(dp, &f, sa(other_client(&f), 1000), v, 3 * SEC),
                        1,
                        "{name}: rr moved on"
                    );
                    assert_eq!(templates(dp), 2);
                    let out = run(
                        dp,
                        &eth(&tcp(sa(f.cip, 1000), v, "A", 1001, 5001, b"")),
                        sweep * SEC,
                    );
                    assert!(
                        matches!(out.verdict, Verdict::Reply { .. }),
                        "{name}: connection gone"
                    );
                    assert_eq!(
                        templates(dp),
                        1,
                        "{name}: the first client's template outlives its connection"
                    );
                };
                let mut dp = dataplane(&rules(&f, 80, "-p 300", m), &[]);
                history(&mut dp);
                // 200 s after the connection ended: same dest (and a sweep in between).
                run(
                    &mut dp,
                    &eth(&tcp(sa(f.cip, 1), v, "A", 1, 1, b"")),
                    1000 * SEC,
                );
                assert_eq!(
                    open(&mut dp, &f, sa(f.cip, 1001), v, 1102 * SEC),
                    0,
                    "{name}: +200 s"
                );
                // 300 s after: the template is gone (1201 s: still there; 1203 s: rescheduled).
                let mut before = dataplane(&rules(&f, 80, "-p 300", m), &[]);
                history(&mut before);
                assert_eq!(
                    open(&mut before, &f, sa(f.cip, 1001), v, 1201 * SEC),
                    0,
                    "{name}: +299 s"
                );
                let mut after = dataplane(&rules(&f, 80, "-p 300", m), &[]);
                history(&mut after);
                assert_eq!(
                    open(&mut after, &f, sa(f.cip, 1001), v, 1203 * SEC),
                    2,
                    "{name}: +301 s"
                );
            }
        }
    }
}

#[test]
fn udp_template_outlives_its_datagrams_by_the_persistence_timeout() {
    // UDP's 300 s and -p 300 end in the same instant: the connection and its template fall due
    // in one sweep, the template right after its connection stops pinning it.
    for f in FAMS {
        for m in METHODS {
            let name = format!("{} {} udp", f.name, m.0);
            let v = sa(f.vip, 53);
            let rules_text = rules(&f, 53, "-p 300", m).replace("-t ", "-u ");
            let send = |dp: &mut Dataplane, c: IpAddr, port: u16, now: u64| -> usize {
                let out = run(dp, &eth(&udp(sa(c, port), v, b"q")), now);
                let d = out
                    .dest
                    .unwrap_or_else(|| panic!("{name}: not forwarded: {:?}", out.verdict));
                f.rip.iter().position(|r| *r == d.ip()).unwrap()
            };
            let history = |dp: &mut Dataplane| {
                assert_eq!(send(dp, f.cip, 1000, SEC), 0);
                assert_eq!(send(dp, other_client(&f), 1000, SEC), 1);
                // A sweep after both ended (at 301 s): the templates stay.
                assert_eq!(
                    send(dp, other_client(&f), 1000, 302 * SEC),
                    1,
                    "{name}: other client"
                );
                assert_eq!(templates(dp), 2, "{name}: templates kept");
            };
            let mut dp = dataplane(&rules_text, &[]);
            history(&mut dp);
            assert_eq!(send(&mut dp, f.cip, 1001, 600 * SEC), 0, "{name}: +299 s");
            let mut dp = dataplane(&rules_text, &[]);
            history(&mut dp);
            assert_eq!(send(&mut dp, f.cip, 1001, 602 * SEC), 2, "{name}: +301 s");
        }
    }
}

/// `process` alone, without the housekeeping `run` does first: the connection table meets a
/// run-out timer on the packet's own lookup.
fn process_only(dp: &mut Dataplane, frame: &[u8], now: u64) -> Verdict {
    let mut f = Frame::from_bytes(frame);
    dp.process(&mut f, now, &mut Vec::new())
}

#[test]
fn template_outlives_a_connection_found_run_out_or_evicted() {
    for f in FAMS {
        for m in METHODS {
            let name = format!("{} {} run out", f.name, m.0);
            let v = sa(f.vip, 80);
            let mut dp = dataplane(&rules(&f, 80, "-p 300", m), &[]);
            assert_eq!(open(&mut dp, &f, sa(f.cip, 1000), v, SEC), 0);
            let ack = eth(&tcp(sa(f.cip, 1000), v, "A", 1001, 5001, b""));
            assert!(matches!(
                run(&mut dp, &ack, 2 * SEC).verdict,
                Verdict::Transmit { .. }
            ));
            // No sweep since 2 s: at 903 s the ACK finds the connection run out (ended at 902 s).
            assert!(
                matches!(
                    process_only(&mut dp, &ack, 903 * SEC),
                    Verdict::Reply { .. }
                ),
                "{name}"
            );
            assert_eq!(
                open(&mut dp, &f, sa(f.cip, 1001), v, 1102 * SEC),
                0,
                "{name}: +200 s"
            );

            // Evicted from a full table (3 entries): the template counts from the eviction.
            let name = format!("{} {} evicted", f.name, m.0);
            let sets = [("conn_tab_max", "3"), ("conn_full_policy", "evict_oldest")];
            let mut dp = dataplane(&rules(&f, 80, "-p 300", m), &sets);
            assert_eq!(open(&mut dp, &f, sa(f.cip, 1000), v, SEC), 0); // template until 301 s
            assert!(matches!(
                run(&mut dp, &ack, 2 * SEC).verdict,
                Verdict::Transmit { .. }
            ));
            // Another client at 250 s: its template fills the table, its connection evicts
            // the first client's (the only unpinned entry): that connection ends at 250 s.
            let b = other_client(&f);
            assert_eq!(
                open(&mut dp, &f, sa(b, 1000), v, 250 * SEC),
                1,
                "{name}: other client"
            );
            assert_eq!(dp.director().counters().evicted, 1, "{name}: evicted");
            assert!(
                matches!(run(&mut dp, &ack, 251 * SEC).verdict, Verdict::Reply { .. }),
                "{name}: gone"
            );
            // 400 s: past the template's first 300 s, within 300 s of the eviction.
            assert_eq!(
                open(&mut dp, &f, sa(f.cip, 1001), v, 400 * SEC),
                0,
                "{name}: 400 s"
            );
        }
    }
}

#[test]
fn netmask_24_makes_a_subnet_share_one_dest() {
    for m in METHODS {
        let f = V4;
        let name = format!("v4 {} -M 255.255.255.0", m.0);
        let mut dp = dataplane(&rules(&f, 80, "-p 300 -M 255.255.255.0", m), &[]);
        let v = sa(f.vip, 80);
        let c = |a, b, c, d| IpAddr::V4(Ipv4Addr::new(a, b, c, d));
        let cases = [
            (c(192, 0, 2, 1), 0),
            (c(192, 0, 2, 200), 0),
            (c(198, 18, 0, 1), 1),
            (c(198, 18, 1, 1), 2),
            (c(198, 18, 0, 254), 1),
            (c(192, 0, 2, 77), 0),
            (c(198, 18, 2, 1), 0),
            (c(198, 18, 1, 9), 2),
        ];
        for (i, (ip, want)) in cases.into_iter().enumerate() {
            assert_eq!(
                open(&mut dp, &f, sa(ip, 1000 + i as u16), v, SEC),
                want,
                "{name}: client {ip}"
            );
        }
        assert_eq!(templates(&dp), 4, "{name}: one template per /24");
    }
}

#[test]
fn netmask_64_makes_an_ipv6_prefix_share_one_dest() {
    for m in METHODS {
        let f = V6;
        let name = format!("v6 {} -M 64", m.0);
        let mut dp = dataplane(&rules(&f, 80, "-p 300 -M 64", m), &[]);
        let v = sa(f.vip, 80);
        let c = |s: &str| -> IpAddr { s.parse().unwrap() };
        let cases = [
            (c("2001:db8:1::1"), 0),
            (c("2001:db8:1::ffff:1"), 0),
            (c("2001:db8:3::1"), 1),
            (c("2001:db8:3:0:1::5"), 1),
            (c("2001:db8:3:1::1"), 2),
            (c("2001:db8:1:0:ffff:ffff:ffff:ffff"), 0),
            (c("2001:db8:4::1"), 0),
        ];
        for (i, (ip, want)) in cases.into_iter().enumerate() {
            assert_eq!(
                open(&mut dp, &f, sa(ip, 1000 + i as u16), v, SEC),
                want,
                "{name}: client {ip}"
            );
        }
        assert_eq!(templates(&dp), 4, "{name}: one template per /64");
    }
}

#[test]
fn port_zero_service_forwards_every_port_of_a_client_to_one_dest() {
    for f in FAMS {
        for m in METHODS {
            let name = format!("{} {} port 0", f.name, m.0);
            // `-p` without a value: 300 s.
            let mut dp = dataplane(&rules(&f, 0, "-p", m), &[]);
            let b = other_client(&f);
            for (i, port) in [22u16, 80, 443, 8443, 53].into_iter().enumerate() {
                let c = sa(f.cip, 1000 + i as u16);
                let out = run(&mut dp, &eth(&tcp(c, sa(f.vip, port), "S", 7, 0, b"")), SEC);
                // The port is kept: DR leaves L3 alone, NAT rewrites only the address.
                let to = if m == NAT {
                    sa(f.rip[0], port)
                } else {
                    sa(f.vip, port)
                };
                let want = eth(&tcp_ttl(c, to, "S", 7, 0, b"", 63));
                assert_transmit(&format!("{name}: port {port}"), &out, f.rip[0], &want);
                assert_eq!(
                    out.dest,
                    Some(sa(f.rip[0], port)),
                    "{name}: dest port {port}"
                );
            }
            assert_eq!(
                open(&mut dp, &f, sa(b, 1000), sa(f.vip, 22), SEC),
                1,
                "{name}: other client"
            );
            assert_eq!(
                open(&mut dp, &f, sa(b, 1001), sa(f.vip, 3306), SEC),
                1,
                "{name}: other client, other port"
            );
            assert_eq!(
                templates(&dp),
                2,
                "{name}: one template per client, not per port"
            );
            // A NAT reply from the dest's port goes back from the VIP's same port.
            if m == NAT {
                let c = sa(f.cip, 1002);
                let reply = eth(&tcp(sa(f.rip[0], 443), c, "SA", 9, 8, b""));
                let out = run(&mut dp, &reply, 2 * SEC);
                let want = eth(&tcp_ttl(sa(f.vip, 443), c, "SA", 9, 8, b"", 63));
                assert_transmit(&format!("{name}: reply"), &out, f.cip, &want);
            }
        }
    }
}

#[test]
fn expire_quiescent_template_moves_a_client_off_a_weight_zero_dest() {
    for f in FAMS {
        for m in METHODS {
            for (set, want) in [("1", 1), ("0", 0)] {
                let name = format!("{} {} expire_quiescent_template={set}", f.name, m.0);
                let v = sa(f.vip, 80);
                let mut dp = dataplane(
                    &rules(&f, 80, "-p 300", m),
                    &[("expire_quiescent_template", set)],
                );
                assert_eq!(open(&mut dp, &f, sa(f.cip, 1000), v, SEC), 0);
                apply(
                    &mut dp,
                    &format!("-e -t {v} -r {} {} -w 0", sa(f.rip[0], m.1), m.0),
                    2 * SEC,
                );
                // A new connection of that client: elsewhere (1) or still the quiescent dest (0).
                assert_eq!(
                    open(&mut dp, &f, sa(f.cip, 1001), v, 3 * SEC),
                    want,
                    "{name}: new conn"
                );
                assert_eq!(
                    open(&mut dp, &f, sa(f.cip, 1002), v, 4 * SEC),
                    want,
                    "{name}: and the next"
                );
                assert_eq!(templates(&dp), 1, "{name}: one template");
                // Its old connection keeps flowing to the quiescent dest either way.
                let out = run(
                    &mut dp,
                    &eth(&tcp(sa(f.cip, 1000), v, "A", 1001, 5001, b"")),
                    5 * SEC,
                );
                assert_eq!(out.dest, Some(sa(f.rip[0], m.1)), "{name}: old conn");
            }
        }
    }
}
