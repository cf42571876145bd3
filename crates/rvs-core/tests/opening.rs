//! `Director::new_conn_in` (a new connection made with its opening packet accounted, the
//! dataplane's path for a SYN or a new UDP flow) against the two calls it stands for,
//! `new_conn_hashed` and then `conn_packet_in`: two directors built from the same rules take the
//! same random stream of new flows (TCP with assorted flags and UDP, IPv4 and IPv6, NAT, DR and
//! TUN, a persistent service, a dest with a connection threshold, a table small enough to
//! refuse), packets of existing connections, dest deletions and expiry sweeps. Every result,
//! counter, statistic, dest connection count and the whole connection table must stay the
//! same, and every sweep must remove the same connections.
//!
//! Slot ids may differ: `new_conn_in` files an entry in the timer wheel at its real expiry,
//! where the two calls filed it at the initial state's and left the sweep to move it, so the
//! sweeps free slots in another order (and the free list hands them out in another order). The
//! table is compared by content, and templates by key. (The table is set to refuse when full:
//! with `evict_oldest`, which entry of the nearest tick goes is the wheel's order, equally
//! right either way.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use common::Rng;

use rvs_core::conn::Conn;
use rvs_core::director::{DestId, Director, NewConnError};
use rvs_core::rules::parse_line;
use rvs_core::settings::Settings;
use rvs_core::types::FwdMethod;
use rvs_core::types::Time;
use rvs_wire::parse::FlowKey;
use rvs_wire::parse::tcp_flags::{ACK, FIN, PSH, RST, SYN};

const SEC: Time = 1_000_000_000;

const VIP4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10);

/// (protocol, port) of each IPv4 and IPv6 service; see `RULES`.
const SERVICES: [(u8, u16); 5] = [(6, 80), (6, 81), (6, 82), (17, 53), (6, 443)];

/// NAT, DR and TUN TCP services, a UDP one, and a persistent one (every family alike); one
/// NAT dest refuses new connections past 6 (`-x`).
const RULES: &str = "\
-A -t VIP:80 -s rr
-a -t VIP:80 -r RIPA:8080 -m -w 1 -x 6
-a -t VIP:80 -r RIPB:8080 -m -w 2
-A -t VIP:81 -s wlc
-a -t VIP:81 -r RIPA:81 -g -w 1
-a -t VIP:81 -r RIPB:81 -g -w 1
-A -t VIP:82 -s rr
-a -t VIP:82 -r RIPA:82 -i -w 1
-A -u VIP:53 -s rr
-a -u VIP:53 -r RIPA:5353 -m -w 1
-a -u VIP:53 -r RIPB:5353 -m -w 1
-A -t VIP:443 -s rr -p 120
-a -t VIP:443 -r RIPA:443 -g -w 1
-a -t VIP:443 -r RIPB:443 -g -w 1
";

fn rules(v6: bool) -> String {
    let (vip, a, b) = if v6 {
        ("[2001:db8::10]", "[2001:db8:1::11]", "[2001:db8:1::12]")
    } else {
        ("203.0.113.10", "198.51.100.11", "198.51.100.12")
    };
    RULES
        .replace("VIP", vip)
        .replace("RIPA", a)
        .replace("RIPB", b)
}

fn director(table_max: usize) -> Director {
    let mut d = Director::new(Settings {
        conn_tab_max: table_max,
        ..Settings::default()
    });
    for v6 in [false, true] {
        for line in rules(v6).lines() {
            d.apply(&parse_line(line).unwrap().unwrap(), 0).unwrap();
        }
    }
    d
}

fn key(rng: &mut Rng) -> FlowKey {
    let v6 = rng.chance(50);
    let (protocol, dport) = SERVICES[rng.below(SERVICES.len())];
    let c = rng.below(12) as u8;
    let (src, dst): (IpAddr, IpAddr) = if v6 {
        (
            Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, u16::from(c) + 1).into(),
            VIP6.into(),
        )
    } else {
        (Ipv4Addr::new(192, 0, 2, c + 1).into(), VIP4.into())
    };
    FlowKey {
        protocol,
        src,
        sport: 40_000 + rng.below(8) as u16,
        dst,
        dport,
    }
}

/// TCP flags of a packet that opens a connection (the dataplane admits SYN without RST), or of
/// any packet of an existing one.
fn flags(rng: &mut Rng, opening: bool) -> u8 {
    const OPEN: [u8; 4] = [SYN, SYN | ACK, SYN | FIN, SYN | PSH];
    const ANY: [u8; 6] = [SYN, ACK, ACK | PSH, FIN | ACK, RST, RST | ACK];
    if opening {
        OPEN[rng.below(OPEN.len())]
    } else {
        ANY[rng.below(ANY.len())]
    }
}

/// A connection as content: its template by key, not by slot id.
fn content(d: &Director, c: &Conn) -> String {
    let control = c.control.map(|t| d.conns().get(t).map(|t| t.key));
    format!(
        "{:?} {} {} {} {:?} {:?} {:?} {} {:?}",
        c.key, c.daddr, c.dport, c.dest, c.fwd, c.state, c.flags, c.expires, control
    )
}

fn state(d: &Director) -> String {
    let mut conns: Vec<String> = d.conns().iter().map(|(_, c)| content(d, &c)).collect();
    conns.sort();
    format!(
        "{:?}\n{:?}\n{:?}\n{}",
        d.counters(),
        d.conns().counters(),
        d.services(),
        conns.join("\n")
    )
}

/// A `new_conn` result without its slot id.
fn outcome(
    r: Result<rvs_core::director::Forward, NewConnError>,
) -> Result<(IpAddr, u16, FwdMethod, DestId), NewConnError> {
    r.map(|f| (f.daddr, f.dport, f.fwd, f.dest))
}

fn run(seed: u64, table_max: usize, steps: usize) -> (usize, usize) {
    let mut rng = Rng(seed);
    let mut two = director(table_max);
    let mut one = director(table_max);
    let mut now = 1_000 * SEC;
    let (mut made, mut refused) = (0, 0);
    for step in 0..steps {
        now += rng.below(3_000) as Time * SEC / 1000;
        let k = key(&mut rng);
        let f = if k.protocol == 6 {
            flags(&mut rng, true)
        } else {
            0
        };
        let bytes = 40 + rng.below(1400);
        let (pa, pb) = (two.conns().probe(&k, None), one.conns().probe(&k, None));
        let (ha, hb) = (
            two.conn_in_live_reuse(&pa, f, now),
            one.conn_in_live_reuse(&pb, f, now),
        );
        match (ha, hb) {
            (Some(ia), Some(ib)) => {
                // A packet of an existing connection: the same call on both.
                let g = flags(&mut rng, false);
                let a = two.conn_packet_in(ia, g, bytes, now);
                let b = one.conn_packet_in(ib, g, bytes, now);
                assert_eq!(
                    a.map(|f| (f.daddr, f.dport, f.fwd, f.dest)),
                    b.map(|f| (f.daddr, f.dport, f.fwd, f.dest)),
                    "step {step}: packet"
                );
            }
            (None, None) => {
                let svc = two.find_service(k.protocol, k.dst, k.dport).unwrap();
                let a = two
                    .new_conn_hashed(svc, &k, Some(pa.hash()), now)
                    .inspect(|fwd| {
                        if let Err(e) = two.conn_packet_in(fwd.conn, f, bytes, now) {
                            panic!("step {step}: first packet refused: {e:?}");
                        }
                    });
                let b = one.new_conn_in(svc, &k, pb.hash(), f, bytes, now);
                assert_eq!(outcome(a), outcome(b), "step {step}: new connection");
                if a.is_ok() {
                    made += 1;
                } else {
                    refused += 1;
                }
            }
            _ => panic!("step {step}: lookups differ: {ha:?} {hb:?}"),
        }
        if rng.chance(3) {
            // A dest goes away (its connections stay, dropped) or comes back.
            let v6 = rng.chance(50);
            let rip = if v6 {
                "[2001:db8:1::11]"
            } else {
                "198.51.100.11"
            };
            let vip = if v6 { "[2001:db8::10]" } else { "203.0.113.10" };
            let line = if rng.chance(50) {
                format!("-d -t {vip}:443 -r {rip}:443")
            } else {
                format!("-a -t {vip}:443 -r {rip}:443 -g -w 1")
            };
            let rule = parse_line(&line).unwrap().unwrap();
            assert_eq!(
                two.apply(&rule, now).is_ok(),
                one.apply(&rule, now).is_ok(),
                "step {step}: {line}"
            );
        }
        if rng.chance(10) {
            // A sweep, sometimes long after: it must remove the same connections.
            if rng.chance(30) {
                now += rng.below(150) as Time * SEC;
            }
            let (mut na, mut nb) = (0, 0);
            while let n @ 1.. = two.expire(now) {
                na += n;
            }
            while let n @ 1.. = one.expire(now) {
                nb += n;
            }
            assert_eq!(na, nb, "step {step}: expired");
        }
        assert_eq!(state(&two), state(&one), "step {step}");
    }
    (made, refused)
}

#[test]
fn opening_packet_accounted_with_the_new_connection_as_two_calls_would() {
    let mut made = 0;
    let mut refused = 0;
    for seed in 0..24 {
        let (m, r) = run(seed, 40, 600);
        made += m;
        refused += r;
    }
    // The mixes reached both outcomes.
    assert!(made > 1_000, "{made} connections made");
    assert!(refused > 0, "no connection refused");
}

#[test]
fn large_table() {
    for seed in 100..104 {
        let (m, _) = run(seed, 1 << 16, 2_000);
        assert!(m > 100, "{m} connections made");
    }
}
