//! `Dataplane::process_burst` against `Dataplane::process`: random mixes of frames — new and
//! established flows of NAT, DR and TUN services (TCP and UDP, IPv4 and IPv6, one persistent
//! service), NAT replies, FIN and RST, ICMP errors about connections from both sides and about
//! our own tunnel packets, echo requests, TTL-exhausted and too-big packets, fragments,
//! malformed and foreign frames, repeated frames and a new flow's SYN and next segment in one
//! burst — go one by one through one dataplane and in bursts of random sizes (crossing
//! [`BURST`]) through an identical one. Verdicts, output frames, extra frames, counters, the
//! drop log and the whole connection table must stay identical after every burst. In most
//! mixes the one-by-one reference runs with the fast paths off (`set_fast_paths(false)`), so
//! they are held to the full parse and the full per-packet path as well.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;
#[path = "common/icmp.rs"]
mod fx;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use common::*;
use fx::*;
use rvs_dataplane::dataplane::BURST;
use rvs_dataplane::{Dataplane, Frame, Tx, Verdict};

/// splitmix64: deterministic draws.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// One virtual service of the test director.
#[derive(Clone, Copy)]
struct Svc {
    v6: bool,
    udp: bool,
    method: Method,
    vport: u16,
}

impl Svc {
    fn vip(&self) -> IpAddr {
        if self.v6 { VIP6.into() } else { VIP4.into() }
    }
    fn virt(&self) -> SocketAddr {
        SocketAddr::new(self.vip(), self.vport)
    }
    fn rport(&self) -> u16 {
        match self.method {
            Method::Nat => 8000 + self.vport,
            _ => self.vport,
        }
    }
    fn rip(&self, i: usize) -> IpAddr {
        if self.v6 {
            RIP6[i].into()
        } else {
            RIP4[i].into()
        }
    }
}

fn services() -> Vec<Svc> {
    let mut v = Vec::new();
    for v6 in [false, true] {
        for (udp, method, vport) in [
            (false, Method::Nat, 80),
            (false, Method::Dr, 81),
            (false, Method::Tun, 82),
            (true, Method::Nat, 53),
            (true, Method::Dr, 54),
            (false, Method::Dr, 443),
        ] {
            v.push(Svc {
                v6,
                udp,
                method,
                vport,
            });
        }
    }
    v
}

fn rules(svcs: &[Svc]) -> String {
    let mut r = String::new();
    for s in svcs {
        let p = if s.udp { "-u" } else { "-t" };
        // Port 443: persistent (templates in the table).
        let persist = if s.vport == 443 { " -p 30" } else { "" };
        r += &format!("-A {p} {} -s wlc{persist}\n", s.virt());
        for i in 0..2 {
            r += &format!(
                "-a {p} {} -r {} {} -w 1\n",
                s.virt(),
                SocketAddr::new(s.rip(i), s.rport()),
                s.method.flag()
            );
        }
    }
    r
}

fn client(v6: bool, i: usize) -> IpAddr {
    if v6 {
        Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1 + i as u16).into()
    } else {
        Ipv4Addr::new(192, 0, 2, 1 + i as u8).into()
    }
}

fn router(v6: bool, dest_side: bool) -> IpAddr {
    match (v6, dest_side) {
        (false, false) => ROUTER4_C.into(),
        (false, true) => ROUTER4_D.into(),
        (true, false) => ROUTER6_C.into(),
        (true, true) => ROUTER6_D.into(),
    }
}

fn l4(
    udp: bool,
    src: SocketAddr,
    dst: SocketAddr,
    flags: &str,
    payload: usize,
    ttl: u8,
) -> Vec<u8> {
    let data = vec![0x5a; payload];
    if udp {
        udp_ttl(src, dst, &data, ttl)
    } else {
        tcp_ttl(src, dst, flags, 1000, 2000, &data, ttl)
    }
}

/// An ICMP error from `from` to `to` quoting `quoted` (frag-needed / packet-too-big or time
/// exceeded).
fn error(from: IpAddr, to: IpAddr, too_big: bool, quoted: &[u8]) -> Vec<u8> {
    let v6 = from.is_ipv6();
    let (t, c, rest) = match (v6, too_big) {
        (false, true) => (3, 4, mtu_rest(false, 1400)),
        (true, true) => (2, 0, mtu_rest(true, 1400)),
        (false, false) => (11, 0, [0; 4]),
        (true, false) => (3, 0, [0; 4]),
    };
    let cut = quoted.len().min(if v6 { 1232 } else { 548 });
    icmp(from, to, 60, t, c, rest, &quoted[..cut])
}

/// One random frame, drawn against the state of `dp` (for replies to real connections).
fn frame(rng: &mut Rng, svcs: &[Svc], dp: &Dataplane) -> Vec<u8> {
    let s = svcs[rng.below(svcs.len())];
    let c = SocketAddr::new(client(s.v6, rng.below(4)), 40000 + rng.below(6) as u16);
    let virt = s.virt();
    let ip = match rng.below(20) {
        0..=3 => l4(s.udp, c, virt, "S", 0, 64),
        4..=8 => l4(s.udp, c, virt, "A", rng.below(200), 64),
        9 => l4(
            s.udp,
            c,
            virt,
            if rng.chance(50) { "FA" } else { "R" },
            0,
            64,
        ),
        10 | 11 => {
            // A dest's reply, or an error from the dests' side, for a live NAT connection.
            let key = rvs_wire::parse::FlowKey {
                protocol: if s.udp { 17 } else { 6 },
                src: c.ip(),
                sport: c.port(),
                dst: virt.ip(),
                dport: virt.port(),
            };
            let t = dp.director().conns();
            match t.lookup_in(&key).and_then(|id| t.get(id)) {
                Some(conn) => {
                    let real = SocketAddr::new(conn.daddr, conn.dport);
                    if rng.chance(70) {
                        l4(s.udp, real, c, "A", rng.below(100), 64)
                    } else {
                        let q = l4(s.udp, c, real, "A", 100, 63);
                        error(router(s.v6, true), c.ip(), rng.chance(50), &q)
                    }
                }
                None => l4(s.udp, SocketAddr::new(s.rip(0), s.rport()), c, "A", 10, 64),
            }
        }
        12 | 13 => {
            // An error from the clients' side about what the VIP sent.
            let q = l4(s.udp, virt, c, "A", 600, 64);
            error(router(s.v6, false), virt.ip(), rng.chance(50), &q)
        }
        14 => {
            // An error about our own tunnel packet to a dest.
            let inner = l4(s.udp, c, virt, "A", 1400, 63);
            let dir: IpAddr = if s.v6 { DIR6.into() } else { DIR4.into() };
            let outer = tunnelled(s.rip(rng.below(2)), 7, true, &inner);
            error(router(s.v6, true), dir, true, &outer)
        }
        15 => l4(s.udp, c, virt, "A", 10, 1),
        16 => l4(s.udp, c, virt, "A", 1600, 64),
        17 => {
            let whole = l4(s.udp, c, virt, "A", 64, 64);
            let hl = if s.v6 { 40 } else { 20 };
            match rng.below(3) {
                0 => fragment_of(&whole, 0, 16, true),
                1 => fragment_of(&whole, 16, whole.len() - hl, false),
                _ => fragment_of(&whole, 8, 24, true),
            }
        }
        18 => icmp(
            c.ip(),
            virt.ip(),
            64,
            if s.v6 { 128 } else { 8 },
            0,
            [0, 1, 0, 1],
            b"ping",
        ),
        _ => {
            // Malformed or foreign.
            let mut f = eth(&l4(s.udp, c, virt, "A", 20, 64));
            match rng.below(3) {
                0 => f.truncate(14 + rng.below(30)),
                1 => f[12..14].copy_from_slice(&0x0806u16.to_be_bytes()),
                _ => {
                    let at = 14 + rng.below(f.len() - 14);
                    f[at] ^= 0xff;
                }
            }
            return f;
        }
    };
    eth(&ip)
}

fn tx_view(t: &Tx) -> (Vec<u8>, IpAddr, bool, bool) {
    (t.frame.data().to_vec(), t.next_hop, t.generated, t.local)
}

fn assert_same_state(a: &mut Dataplane, b: &mut Dataplane, what: &str) {
    assert_eq!(a.counters(), b.counters(), "{what}: counters");
    assert_eq!(
        a.icmp_counters(),
        b.icmp_counters(),
        "{what}: ICMP counters"
    );
    assert_eq!(
        a.frag_counters(),
        b.frag_counters(),
        "{what}: fragment counters"
    );
    assert_eq!(
        a.director().counters(),
        b.director().counters(),
        "{what}: director counters"
    );
    assert_eq!(a.last_dest(), b.last_dest(), "{what}: last dest");
    let (ta, tb) = (a.director().conns(), b.director().conns());
    assert_eq!(ta.counters(), tb.counters(), "{what}: table counters");
    let ca: Vec<_> = ta.iter().collect();
    let cb: Vec<_> = tb.iter().collect();
    assert_eq!(ca, cb, "{what}: connection tables");
    assert_eq!(a.take_drop_log(), b.take_drop_log(), "{what}: drop log");
}

/// Run one mix; returns the ICMP errors forwarded by NAT and by DR (for the coverage checks).
/// With `full_path_reference` the one-by-one dataplane has its fast paths off, so the mix also
/// holds the fast reader and the established fast path to the full path.
fn differential(
    seed: u64,
    sets: &[(&str, &str)],
    bursts: usize,
    full_path_reference: bool,
) -> (u64, u64) {
    let svcs = services();
    let r = rules(&svcs);
    let mut one = dataplane(&r, sets);
    let mut many = dataplane(&r, sets);
    if full_path_reference {
        one.set_fast_paths(false);
    }
    let mut rng = Rng(seed);
    let mut now = 1_000 * SEC;
    let mut frames_seen = 0;
    for k in 0..bursts {
        now += rng.below(20_000) as u64 * SEC / 1000;
        if rng.chance(10) {
            one.housekeeping(now);
            many.housekeeping(now);
        }
        // Up to seven rounds of `BURST` in one call: the pipeline's ring of rounds wraps.
        let n = match rng.below(5) {
            0 => 1 + rng.below(4),
            1 => BURST,
            2 => 4 * BURST,
            _ => 1 + rng.below(6 * BURST + 8),
        };
        let mut input: Vec<Vec<u8>> = Vec::with_capacity(n);
        while input.len() < n {
            let f = frame(&mut rng, &svcs, &one);
            if rng.chance(10) {
                // The same frame twice (a flow seen twice in one burst).
                input.push(f.clone());
            }
            if rng.chance(10) {
                // A new TCP flow's SYN, then its next segment, in one burst.
                let s = svcs[rng.below(2)];
                let c = SocketAddr::new(client(s.v6, 4), 41000 + rng.below(50) as u16);
                input.push(eth(&l4(false, c, s.virt(), "S", 0, 64)));
                input.push(eth(&l4(false, c, s.virt(), "A", 5, 64)));
            }
            input.push(f);
        }
        frames_seen += input.len();
        // One by one.
        let mut seq_extra = Vec::new();
        let mut seq_out = Vec::new();
        let mut seq_verdicts = Vec::new();
        for bytes in &input {
            let mut f = Frame::from_bytes(bytes);
            seq_verdicts.push(one.process(&mut f, now, &mut seq_extra));
            seq_out.push(f.data().to_vec());
        }
        // As a burst.
        let mut frames: Vec<Frame> = input.iter().map(|b| Frame::from_bytes(b)).collect();
        let mut burst_extra = Vec::new();
        let mut burst_verdicts = vec![Verdict::Local];
        many.process_burst(&mut frames, now, &mut burst_extra, &mut burst_verdicts);
        let what = format!("seed {seed:#x} burst {k} ({n} frames)");
        assert_eq!(burst_verdicts.remove(0), Verdict::Local, "{what}: appended");
        assert_eq!(seq_verdicts, burst_verdicts, "{what}: verdicts");
        for (j, (a, b)) in seq_out.iter().zip(&frames).enumerate() {
            assert_eq!(a, b.data(), "{what}: frame {j}");
        }
        let xa: Vec<_> = seq_extra.iter().map(tx_view).collect();
        let xb: Vec<_> = burst_extra.iter().map(tx_view).collect();
        assert_eq!(xa, xb, "{what}: extra frames");
        assert_same_state(&mut one, &mut many, &what);
    }
    // The mix reached the interesting places.
    let c = one.counters();
    eprintln!("seed {seed:#x}: {frames_seen} frames, {c:?}");
    assert!(c.forwarded > frames_seen as u64 / 20, "{c:?}");
    assert!(c.generated > 0 && c.local > 0 && c.held > 0, "{c:?}");
    assert!(c.drops.iter().sum::<u64>() > 0, "{c:?}");
    assert!(one.director().conns().len() > 10);
    let icmp = one.icmp_counters();
    let forwarded = |m| icmp.total(rvs_dataplane::IcmpOutcome::Forwarded(m));
    (
        forwarded(rvs_core::types::FwdMethod::Masq),
        forwarded(rvs_core::types::FwdMethod::DirectRoute),
    )
}

#[test]
fn burst_equals_one_by_one() {
    let (mut nat, mut dr) = (0, 0);
    for seed in [1, 2, 3] {
        let (n, d) = differential(seed, &[], 150, seed != 1);
        nat += n;
        dr += d;
    }
    assert!(
        nat > 0 && dr > 0,
        "ICMP errors forwarded: NAT {nat}, DR {dr}"
    );
}

/// A small table that fills up and evicts (state changes in the middle of bursts), with
/// ICMP rate limits that bite.
#[test]
fn burst_equals_one_by_one_small_table() {
    for seed in [11, 12] {
        let _ = differential(
            seed,
            &[
                ("conn_tab_max", "40"),
                ("conn_full_policy", "evict_oldest"),
                ("icmp_forward_per_sec", "5"),
            ],
            150,
            seed == 12,
        );
    }
    let _ = differential(21, &[("conn_tab_max", "25")], 150, true);
}
