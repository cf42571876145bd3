//! The schedulers through their public API: exact selection orders (IPVS's), the rules every
//! scheduler keeps (weight 0 and overloaded dests take no new connections, nothing usable →
//! `None`, no panic on any slice), the hashing schedulers' stability and spread, and Maglev's
//! minimal disruption when a dest goes away.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use common::Rng;
use proptest::prelude::*;
use rvs_core::sched::{MaglevHash, SchedFlow, Scheduler, mh, new_scheduler};
use rvs_core::{Dest, FwdMethod, SchedFlags, SchedulerKind};

const SEED: u64 = 0x5eed_0f2c;

/// Dest `i` (10.0.0.i+1:80, NAT) with a weight.
fn dest(i: usize, weight: u32) -> Dest {
    Dest::new(
        IpAddr::V4(Ipv4Addr::from_bits(0x0a00_0001 + i as u32)),
        80,
        FwdMethod::Masq,
        weight,
    )
}

fn dests(weights: &[u32]) -> Vec<Dest> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &w)| dest(i, w))
        .collect()
}

fn vip() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1))
}

fn flow(caddr: IpAddr, cport: u16) -> SchedFlow {
    SchedFlow {
        protocol: 6,
        caddr,
        cport,
        vaddr: vip(),
        vport: 80,
    }
}

impl Rng {
    fn addr(&mut self) -> IpAddr {
        if self.next().is_multiple_of(4) {
            IpAddr::V6(Ipv6Addr::from_bits(
                (u128::from(self.next()) << 64) | u128::from(self.next()),
            ))
        } else {
            IpAddr::V4(Ipv4Addr::from_bits(self.next() as u32))
        }
    }

    fn flow(&mut self) -> SchedFlow {
        let caddr = self.addr();
        let mut f = flow(caddr, 1024 + (self.next() % 60000) as u16);
        f.vaddr = self.addr();
        f
    }
}

/// Every combination of `-b` flags.
const FLAG_SETS: [SchedFlags; 4] = [
    SchedFlags {
        fallback: false,
        port: false,
    },
    SchedFlags {
        fallback: true,
        port: false,
    },
    SchedFlags {
        fallback: false,
        port: true,
    },
    SchedFlags {
        fallback: true,
        port: true,
    },
];

fn sched(kind: SchedulerKind, flags: SchedFlags, d: &[Dest]) -> Box<dyn Scheduler> {
    let mut s = new_scheduler(kind, flags, SEED);
    s.update(d);
    s
}

/// `n` choices for the same flow, as dest letters ('A' = index 0), '-' for `None`.
fn sequence(s: &mut dyn Scheduler, d: &[Dest], n: usize) -> String {
    let f = flow(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 40000);
    (0..n).map(|_| letter(s.schedule(d, &f))).collect()
}

/// `n` choices where every choice opens an active connection on the chosen dest.
fn sequence_connecting(s: &mut dyn Scheduler, d: &mut [Dest], n: usize) -> String {
    let f = flow(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 40000);
    (0..n)
        .map(|_| {
            let pick = s.schedule(d, &f);
            if let Some(i) = pick {
                d[i].active_conns += 1;
            }
            letter(pick)
        })
        .collect()
}

fn letter(pick: Option<usize>) -> char {
    pick.map_or('-', |i| char::from(b'A' + i as u8))
}

// ---- Selection order -------------------------------------------------------------------

#[test]
fn rr_cycles_over_usable_dests() {
    let d = dests(&[1, 1, 1]);
    let mut s = sched(SchedulerKind::Rr, SchedFlags::default(), &d);
    assert_eq!(sequence(&mut *s, &d, 7), "ABCABCA");

    // Weights do not matter to rr, except 0.
    let d = dests(&[5, 0, 1, 2]);
    let mut s = sched(SchedulerKind::Rr, SchedFlags::default(), &d);
    assert_eq!(sequence(&mut *s, &d, 7), "ACDACDA");
}

#[test]
fn rr_remembers_its_position() {
    let mut d = dests(&[1, 1, 1, 1]);
    let mut s = sched(SchedulerKind::Rr, SchedFlags::default(), &d);
    assert_eq!(sequence(&mut *s, &d, 2), "AB");
    // An overloaded dest is skipped without losing the position.
    d[2].overloaded = true;
    assert_eq!(sequence(&mut *s, &d, 3), "DAB");
    d[2].overloaded = false;
    assert_eq!(sequence(&mut *s, &d, 1), "C");
    // An update that keeps the last choice keeps the position.
    s.update(&d);
    assert_eq!(sequence(&mut *s, &d, 1), "D");
    assert_eq!(sequence(&mut *s, &d, 1), "A");
    // Deleting the dest chosen last: the next choice is the one that followed it.
    d.remove(0);
    s.update(&d);
    let next = s.schedule(&d, &flow(vip(), 1)).unwrap();
    assert_eq!(d[next].addr, dest(1, 1).addr);
}

#[test]
fn wrr_interleaves_as_ipvs() {
    let d = dests(&[4, 3, 2]);
    let mut s = sched(SchedulerKind::Wrr, SchedFlags::default(), &d);
    assert_eq!(sequence(&mut *s, &d, 18), "AABABCABC".repeat(2));
}

#[test]
fn wrr_steps_by_the_gcd() {
    // gcd 2: the walk is 3, 1 (max − (gcd − 1), then down by 2).
    let d = dests(&[4, 2]);
    let mut s = sched(SchedulerKind::Wrr, SchedFlags::default(), &d);
    assert_eq!(sequence(&mut *s, &d, 6), "AABAAB");
    let d = dests(&[6, 0, 3]);
    let mut s = sched(SchedulerKind::Wrr, SchedFlags::default(), &d);
    assert_eq!(sequence(&mut *s, &d, 6), "AACAAC");
}

#[test]
fn wrr_skips_overloaded_and_restarts_on_update() {
    let mut d = dests(&[4, 3, 2]);
    let mut s = sched(SchedulerKind::Wrr, SchedFlags::default(), &d);
    d[0].overloaded = true;
    assert_eq!(sequence(&mut *s, &d, 10), "BBCBC".repeat(2));
    d[0].overloaded = false;
    // Weights change: gcd and maximum are recomputed, the position goes back to the first
    // dest, the current weight (1 here, it fits under the new maximum 2) is kept.
    d[0].weight = 1;
    d[1].weight = 1;
    d[2].weight = 2;
    s.update(&d);
    assert_eq!(sequence(&mut *s, &d, 8), "ABCCABCC");
    // A current weight above the new maximum restarts the walk from the top.
    let d = dests(&[1, 1]);
    s.update(&d);
    assert_eq!(sequence(&mut *s, &d, 3), "ABA");
    // A current weight that fits but is off the new walk moves onto it: after A A B A B the
    // current weight is 2; with weights 4, 2 (gcd 2, walk 3, 1) it becomes 3.
    let d = dests(&[4, 3, 2]);
    let mut s = sched(SchedulerKind::Wrr, SchedFlags::default(), &d);
    assert_eq!(sequence(&mut *s, &d, 5), "AABAB");
    let d = dests(&[4, 2]);
    s.update(&d);
    assert_eq!(sequence(&mut *s, &d, 6), "AABAAB");
    let d = dests(&[2, 4, 6]);
    s.update(&d);
    // gcd 2, walk 5, 3, 1; the current weight 1 is on it and kept: A B C, then from the
    // top, 5: C; 3: B C; 1: A B C.
    assert_eq!(sequence(&mut *s, &d, 12), "ABCCBCABCCBC");
}

#[test]
fn lc_takes_the_least_overhead_first_on_ties() {
    // Weights do not count, only 0.
    let mut d = dests(&[5, 1, 1]);
    let mut s = sched(SchedulerKind::Lc, SchedFlags::default(), &d);
    assert_eq!(sequence_connecting(&mut *s, &mut d, 7), "ABCABCA");

    // An active connection weighs 256 inactive ones.
    let mut d = dests(&[1, 1, 1]);
    d[0].active_conns = 1; // 256
    d[1].inactive_conns = 255; // 255
    d[2].inactive_conns = 257; // 257
    assert_eq!(sequence(&mut *s, &d, 1), "B");
    d[1].inactive_conns = 256;
    assert_eq!(sequence(&mut *s, &d, 1), "A");
}

#[test]
fn wlc_divides_overhead_by_weight() {
    let mut d = dests(&[3, 1]);
    let mut s = sched(SchedulerKind::Wlc, SchedFlags::default(), &d);
    assert_eq!(sequence_connecting(&mut *s, &mut d, 10), "ABAAABAAAB");

    // 300 inactive / weight 1 = 300 against 256 / weight 2 = 128.
    let mut d = dests(&[1, 2]);
    d[0].inactive_conns = 300;
    d[1].active_conns = 1;
    assert_eq!(sequence(&mut *s, &d, 1), "B");
    // 256 / 1 against 512 / 2: a tie goes to the first.
    d[0].inactive_conns = 256;
    d[1].active_conns = 2;
    assert_eq!(sequence(&mut *s, &d, 1), "A");
}

#[test]
fn sed_prefers_the_heavier_idle_dest() {
    let mut d = dests(&[1, 2]);
    let mut s = sched(SchedulerKind::Sed, SchedFlags::default(), &d);
    assert_eq!(sequence_connecting(&mut *s, &mut d, 8), "BABBABBA");
    // Inactive connections do not count.
    let mut d = dests(&[1, 1]);
    d[0].inactive_conns = 1000;
    assert_eq!(sequence(&mut *s, &d, 1), "A");
}

#[test]
fn nq_takes_an_idle_dest_first_then_as_sed() {
    let mut d = dests(&[1, 3]);
    let mut s = sched(SchedulerKind::Nq, SchedFlags::default(), &d);
    assert_eq!(sequence_connecting(&mut *s, &mut d, 7), "ABBBBBA");
    // An idle but overloaded (or weight 0) dest is not taken.
    let mut d = dests(&[1, 1, 1]);
    d[0].active_conns = 5;
    d[1].overloaded = true;
    d[2].active_conns = 1;
    assert_eq!(sequence(&mut *s, &d, 1), "C");
    d[1].overloaded = false;
    assert_eq!(sequence(&mut *s, &d, 1), "B");
}

#[test]
fn fo_takes_the_heaviest_usable() {
    let mut d = dests(&[1, 3, 3, 2]);
    let mut s = sched(SchedulerKind::Fo, SchedFlags::default(), &d);
    assert_eq!(sequence_connecting(&mut *s, &mut d, 3), "BBB");
    d[1].overloaded = true;
    assert_eq!(sequence(&mut *s, &d, 1), "C");
    d[2].weight = 0;
    assert_eq!(sequence(&mut *s, &d, 1), "D");
    d[3].overloaded = true;
    assert_eq!(sequence(&mut *s, &d, 1), "A");
    d[0].weight = 0;
    assert_eq!(sequence(&mut *s, &d, 1), "-");
}

#[test]
fn ovf_fills_the_heaviest_then_overflows() {
    let mut d = dests(&[1, 3, 2]);
    let mut s = sched(SchedulerKind::Ovf, SchedFlags::default(), &d);
    // IPVS fills a dest until its active connections exceed the weight: weight + 1 each.
    assert_eq!(sequence_connecting(&mut *s, &mut d, 11), "BBBBCCCAA--");
    // A connection ending frees room on its dest.
    d[1].active_conns -= 1;
    assert_eq!(sequence(&mut *s, &d, 1), "B");
}

// ---- Rules every scheduler keeps -------------------------------------------------------

/// Every scheduler with every flag set.
fn every_scheduler() -> impl Iterator<Item = (SchedulerKind, SchedFlags)> {
    SchedulerKind::ALL
        .into_iter()
        .flat_map(|k| FLAG_SETS.into_iter().map(move |f| (k, f)))
}

/// Schedule `n` random flows; every choice must be a usable dest.
fn choices(s: &mut dyn Scheduler, d: &[Dest], n: usize, seed: u64) -> Vec<Option<usize>> {
    let mut rng = Rng(seed);
    (0..n)
        .map(|_| {
            let pick = s.schedule(d, &rng.flow());
            if let Some(i) = pick {
                assert!(i < d.len() && d[i].is_usable(), "{:?} chose {i}", s.kind());
            }
            pick
        })
        .collect()
}

#[test]
fn weight_zero_is_never_chosen() {
    for (kind, flags) in every_scheduler() {
        let d = dests(&[0, 1, 0, 2, 0]);
        let mut s = sched(kind, flags, &d);
        let picks = choices(&mut *s, &d, 2000, 1);
        // Weight-0 dests hold no hash buckets, so every flow finds a dest.
        assert!(picks.iter().all(Option::is_some), "{kind} {flags:?}");
        let used: BTreeSet<_> = picks.into_iter().flatten().collect();
        assert!(used.is_subset(&BTreeSet::from([1, 3])), "{kind}: {used:?}");

        // Quiesced with an update, as the control plane does...
        let mut d = dests(&[1, 1, 1]);
        let mut s = sched(kind, flags, &d);
        d[1].weight = 0;
        s.update(&d);
        let picks = choices(&mut *s, &d, 2000, 2);
        assert!(picks.iter().all(|p| p.is_some_and(|i| i != 1)), "{kind}");
        // ... and even without one.
        let d = dests(&[1, 1, 1]);
        let mut s = sched(kind, flags, &d);
        let mut d = d;
        d[1].weight = 0;
        choices(&mut *s, &d, 2000, 3);
    }
}

#[test]
fn overloaded_is_never_chosen() {
    for (kind, flags) in every_scheduler() {
        let mut d = dests(&[1, 1, 1, 1]);
        let mut s = sched(kind, flags, &d);
        d[1].overloaded = true;
        d[3].overloaded = true;
        let picks = choices(&mut *s, &d, 2000, 4);
        assert!(picks.iter().flatten().all(|&i| i == 0 || i == 2), "{kind}");
        let hashed_without_fallback = matches!(kind, SchedulerKind::Sh | SchedulerKind::Mh)
            && !flags.fallback
            || kind == SchedulerKind::Dh;
        if !hashed_without_fallback {
            assert!(picks.iter().all(Option::is_some), "{kind} {flags:?}");
        }
    }
}

#[test]
fn nothing_usable_means_none() {
    for (kind, flags) in every_scheduler() {
        let mut all_zero = dests(&[0, 0, 0]);
        let mut s = sched(kind, flags, &all_zero);
        assert!(
            choices(&mut *s, &all_zero, 300, 5)
                .iter()
                .all(Option::is_none)
        );

        let mut all_overloaded = dests(&[1, 2, 3]);
        let mut s = sched(kind, flags, &all_overloaded);
        for d in &mut all_overloaded {
            d.overloaded = true;
        }
        assert!(
            choices(&mut *s, &all_overloaded, 300, 6)
                .iter()
                .all(Option::is_none)
        );

        let mut mixed = dests(&[0, 2, 0]);
        mixed[1].overloaded = true;
        let mut s = sched(kind, flags, &mixed);
        assert!(choices(&mut *s, &mixed, 300, 7).iter().all(Option::is_none));

        // Back in service after an update.
        all_zero[2].weight = 1;
        s.update(&all_zero);
        assert!(
            choices(&mut *s, &all_zero, 300, 8)
                .iter()
                .all(|&p| p == Some(2))
        );
    }
}

#[test]
fn empty_means_none() {
    for (kind, flags) in every_scheduler() {
        let mut s = new_scheduler(kind, flags, SEED);
        assert_eq!(
            s.schedule(&[], &flow(vip(), 1)),
            None,
            "{kind} without update"
        );
        s.update(&[]);
        assert_eq!(s.schedule(&[], &flow(vip(), 1)), None, "{kind}");
        // Dests removed without an update.
        let d = dests(&[1, 1]);
        let mut s = sched(kind, flags, &d);
        assert_eq!(s.schedule(&[], &flow(vip(), 1)), None, "{kind} stale");
    }
}

#[test]
fn a_slice_changed_without_update_is_handled() {
    for (kind, flags) in every_scheduler() {
        let five = dests(&[1, 2, 3, 1, 2]);
        // Fewer, more, and as many but other dests (stale table indices).
        let two = dests(&[1, 1]);
        let eight = dests(&[1; 8]);
        let others: Vec<Dest> = (10..15).map(|i| dest(i, 1)).collect();
        let mut shifted = five.clone();
        shifted.rotate_left(2);
        let mut s = sched(kind, flags, &five);
        let fully_usable = |picks: Vec<Option<usize>>| picks.iter().all(Option::is_some);
        choices(&mut *s, &five, 50, 9);
        for d in [&two, &eight, &others, &shifted, &five] {
            // Every dest is usable, so after rebuilding every scheduler finds one.
            assert!(
                fully_usable(choices(&mut *s, d, 300, 10)),
                "{kind} {}",
                d.len()
            );
        }
        // Never updated at all.
        let mut s = new_scheduler(kind, flags, SEED);
        assert!(fully_usable(choices(&mut *s, &five, 300, 11)), "{kind}");
    }
}

#[test]
fn a_stale_table_answers_from_the_slice_it_is_given() {
    // Same length, other order: a hashing scheduler must not hand out the index its old table
    // holds for a dest that has moved.
    for kind in [SchedulerKind::Sh, SchedulerKind::Dh, SchedulerKind::Mh] {
        let d = dests(&[1, 1, 1, 1]);
        let mut fresh = sched(kind, SchedFlags::default(), &d);
        let mut reversed = d.clone();
        reversed.reverse();
        let mut stale = sched(kind, SchedFlags::default(), &d);
        let mut rebuilt = sched(kind, SchedFlags::default(), &reversed);
        let mut rng = Rng(12);
        for _ in 0..500 {
            let f = rng.flow();
            let want = rebuilt.schedule(&reversed, &f);
            assert_eq!(stale.schedule(&reversed, &f), want, "{kind}");
            assert!(fresh.schedule(&d, &f).is_some());
        }
    }
}

// ---- Hashing schedulers ----------------------------------------------------------------

fn hashing() -> [SchedulerKind; 3] {
    [SchedulerKind::Sh, SchedulerKind::Dh, SchedulerKind::Mh]
}

#[test]
fn hashing_is_stable_and_seeded() {
    for kind in hashing() {
        let d = dests(&[1, 1, 1, 1, 1]);
        let mut a = sched(kind, SchedFlags::default(), &d);
        let mut b = sched(kind, SchedFlags::default(), &d);
        let mut other_seed = new_scheduler(kind, SchedFlags::default(), SEED + 1);
        other_seed.update(&d);
        let mut rng = Rng(13);
        let mut differ = 0;
        for _ in 0..2000 {
            let f = rng.flow();
            let first = a.schedule(&d, &f);
            assert!(first.is_some());
            assert_eq!(a.schedule(&d, &f), first, "{kind}: same flow, same dest");
            assert_eq!(b.schedule(&d, &f), first, "{kind}: same seed, same dest");
            // A new client port (and protocol, and virtual port) does not move the flow.
            let mut g = f;
            g.cport = g.cport.wrapping_add(1);
            g.vport = 443;
            g.protocol = 17;
            assert_eq!(a.schedule(&d, &g), first, "{kind}: ports are not hashed");
            if other_seed.schedule(&d, &f) != first {
                differ += 1;
            }
        }
        // With another seed about 4 flows in 5 land elsewhere.
        assert!(
            differ > 1200,
            "{kind}: {differ} of 2000 moved with the seed"
        );
    }
}

#[test]
fn dh_hashes_the_virtual_address() {
    let d = dests(&[1, 1, 1, 1]);
    let mut s = sched(SchedulerKind::Dh, SchedFlags::default(), &d);
    let mut rng = Rng(14);
    let mut f = rng.flow();
    let first = s.schedule(&d, &f);
    for _ in 0..200 {
        f.caddr = rng.addr();
        assert_eq!(s.schedule(&d, &f), first, "dh ignores the client");
    }
    let spread: BTreeSet<_> = (0..200)
        .map(|_| {
            f.vaddr = rng.addr();
            s.schedule(&d, &f)
        })
        .collect();
    assert_eq!(spread.len(), 4, "virtual addresses spread over the dests");
}

/// Share of `n` random flows each dest receives.
fn shares(s: &mut dyn Scheduler, d: &[Dest], n: usize, seed: u64) -> Vec<f64> {
    let mut counts = vec![0usize; d.len()];
    for pick in choices(s, d, n, seed) {
        counts[pick.unwrap()] += 1;
    }
    counts.iter().map(|&c| c as f64 / n as f64).collect()
}

#[test]
fn hashing_spreads_in_proportion_to_weight() {
    for kind in hashing() {
        for (weights, want) in [
            (vec![1, 1, 2], vec![0.25, 0.25, 0.5]),
            (vec![3, 1], vec![0.75, 0.25]),
            (vec![1, 0, 1, 1, 1], vec![0.25, 0.0, 0.25, 0.25, 0.25]),
        ] {
            let d = dests(&weights);
            let mut s = sched(kind, SchedFlags::default(), &d);
            let got = shares(&mut *s, &d, 100_000, 15);
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 0.03, "{kind} {weights:?}: {got:?}");
            }
        }
    }
}

#[test]
fn port_flag_hashes_the_client_port() {
    for kind in [SchedulerKind::Sh, SchedulerKind::Mh] {
        let d = dests(&[1, 1, 1, 1]);
        let client = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9));
        let spread = |flags: SchedFlags| {
            let mut s = sched(kind, flags, &d);
            (1024..2024)
                .map(|p| s.schedule(&d, &flow(client, p)).unwrap())
                .collect::<BTreeSet<_>>()
        };
        assert_eq!(
            spread(SchedFlags::default()).len(),
            1,
            "{kind} without -port"
        );
        let with_port = SchedFlags {
            port: true,
            ..SchedFlags::default()
        };
        assert_eq!(spread(with_port).len(), 4, "{kind}-port");
    }
}

#[test]
fn fallback_moves_only_the_flows_of_an_unusable_dest() {
    for kind in [SchedulerKind::Sh, SchedulerKind::Mh] {
        let mut d = dests(&[1, 1, 1]);
        let fallback = SchedFlags {
            fallback: true,
            ..SchedFlags::default()
        };
        let mut plain = sched(kind, SchedFlags::default(), &d);
        let mut with = sched(kind, fallback, &d);
        let mut rng = Rng(16);
        let flows: Vec<SchedFlow> = (0..3000).map(|_| rng.flow()).collect();
        let before: Vec<_> = flows.iter().map(|f| plain.schedule(&d, f)).collect();
        d[0].overloaded = true;
        let (mut refused, mut moved) = (0, BTreeMap::<usize, usize>::new());
        for (f, &was) in flows.iter().zip(&before) {
            let p = plain.schedule(&d, f);
            let w = with.schedule(&d, f);
            if was == Some(0) {
                assert_eq!(p, None, "{kind}: no fallback, refused");
                refused += 1;
                *moved.entry(w.unwrap()).or_default() += 1;
            } else {
                assert_eq!(p, was, "{kind}");
                assert_eq!(w, was, "{kind}: fallback leaves other flows alone");
            }
        }
        // About a third refused, and the fallback spreads them over both survivors.
        assert!((800..1200).contains(&refused), "{kind}: {refused}");
        assert_eq!(
            moved.keys().copied().collect::<Vec<_>>(),
            vec![1, 2],
            "{kind}"
        );
        assert!(
            moved.values().all(|&n| n > refused / 4),
            "{kind}: {moved:?}"
        );
    }
}

// ---- Maglev ---------------------------------------------------------------------------

fn is_prime(n: usize) -> bool {
    n >= 2
        && (2..n)
            .take_while(|d| d * d <= n)
            .all(|d| !n.is_multiple_of(d))
}

#[test]
fn mh_table_is_a_prime_of_100_slots_per_dest() {
    for n in [1, 3, 50] {
        let d = dests(&vec![1; n]);
        let mut s = MaglevHash::new(SchedFlags::default(), SEED);
        s.update(&d);
        let size = s.table_size();
        assert!(is_prime(size), "{size}");
        assert!(size >= 100 * n, "{n} dests: {size}");
        assert_eq!(size, MaglevHash::table_size_for(n));
        // The smallest such size of the list, and never below IPVS's default size.
        let floor = (100 * n).max(mh::MIN_TABLE_SIZE);
        assert_eq!(mh::PRIMES.iter().find(|&&p| p >= floor), Some(&size));
        // Every slot is taken, each dest holds about its share.
        let slots = s.slots();
        assert!(slots.iter().all(Option::is_some));
        let mut per_dest = vec![0usize; n];
        for i in slots.into_iter().flatten() {
            per_dest[i] += 1;
        }
        let (lo, hi) = (
            per_dest.iter().min().unwrap(),
            per_dest.iter().max().unwrap(),
        );
        assert!(*lo + 1 >= size / n && *hi <= size / n + 1, "{per_dest:?}");
    }
    assert_eq!(MaglevHash::table_size_for(1), 4093);
    assert_eq!(MaglevHash::table_size_for(3), 4093);
    assert_eq!(MaglevHash::table_size_for(50), 8191);
    assert_eq!(MaglevHash::table_size_for(2000), 131071);
}

/// Fraction of `flows` that change dest when dest `removed` leaves a set of `n` equal dests,
/// and fraction of the flows on surviving dests that stay.
fn mh_disruption(n: usize, removed: usize, flows: &[SchedFlow]) -> (f64, f64) {
    let before = dests(&vec![1; n]);
    let mut after = before.clone();
    after.remove(removed);
    let mut s = MaglevHash::new(SchedFlags::default(), SEED);
    s.update(&before);
    let was: Vec<IpAddr> = flows
        .iter()
        .map(|f| before[s.schedule(&before, f).unwrap()].addr)
        .collect();
    s.update(&after);
    let (mut moved, mut survivors, mut kept) = (0usize, 0usize, 0usize);
    for (f, &old) in flows.iter().zip(&was) {
        let now = after[s.schedule(&after, f).unwrap()].addr;
        if now != old {
            moved += 1;
        }
        if old != before[removed].addr {
            survivors += 1;
            if now == old {
                kept += 1;
            }
        }
    }
    (
        moved as f64 / flows.len() as f64,
        kept as f64 / survivors as f64,
    )
}

#[test]
fn mh_removing_a_dest_moves_about_one_nth() {
    let mut rng = Rng(17);
    let flows: Vec<SchedFlow> = (0..100_000)
        .map(|_| flow(rng.addr(), (rng.next() % 65536) as u16))
        .collect();
    for n in [5, 10] {
        for removed in 0..n {
            let (moved, kept) = mh_disruption(n, removed, &flows);
            eprintln!(
                "mh N={n} remove #{removed}: moved {moved:.4} (1/N = {:.4}), survivors kept {kept:.4}",
                1.0 / n as f64
            );
            assert!(kept >= 0.95, "N={n} -#{removed}: only {kept} kept");
            let nth = 1.0 / n as f64;
            assert!(
                (0.8 * nth..=1.3 * nth).contains(&moved),
                "N={n} -#{removed}: {moved} moved"
            );
        }
    }
}

#[test]
fn mh_weights_give_turns() {
    // Weight 0 holds no slot; large weights are reduced by their gcd.
    let d = dests(&[0, 200, 100, 100]);
    let mut s = MaglevHash::new(SchedFlags::default(), SEED);
    s.update(&d);
    let mut per_dest = [0usize; 4];
    for i in s.slots().into_iter().flatten() {
        per_dest[i] += 1;
    }
    assert_eq!(per_dest[0], 0);
    assert_eq!(per_dest.iter().sum::<usize>(), s.table_size());
    assert!(per_dest[1].abs_diff(2 * per_dest[2]) <= 3, "{per_dest:?}");
    assert!(per_dest[2].abs_diff(per_dest[3]) <= 1, "{per_dest:?}");
    // A weight far above the others still leaves them slots.
    let d = dests(&[65535, 1]);
    s.update(&d);
    let light = s.slots().into_iter().filter(|&i| i == Some(1)).count();
    assert!(light >= 1, "{light}");
}

// ---- Properties -------------------------------------------------------------------------

fn arb_dests() -> impl Strategy<Value = Vec<Dest>> {
    proptest::collection::vec((0u32..5, any::<bool>(), 0u32..6, 0u32..600), 0..9).prop_map(|spec| {
        spec.into_iter()
            .enumerate()
            .map(|(i, (w, overloaded, active, inactive))| {
                let mut d = dest(i, w);
                d.overloaded = overloaded;
                d.active_conns = active;
                d.inactive_conns = inactive;
                d
            })
            .collect()
    })
}

fn arb_flow() -> impl Strategy<Value = SchedFlow> {
    let addr = prop_oneof![
        any::<u32>().prop_map(|a| IpAddr::V4(Ipv4Addr::from_bits(a))),
        any::<u128>().prop_map(|a| IpAddr::V6(Ipv6Addr::from_bits(a))),
    ];
    (
        addr.clone(),
        any::<u16>(),
        addr,
        any::<u16>(),
        prop_oneof![Just(6u8), Just(17u8)],
    )
        .prop_map(|(caddr, cport, vaddr, vport, protocol)| SchedFlow {
            protocol,
            caddr,
            cport,
            vaddr,
            vport,
        })
}

proptest! {
    /// Whatever the dests and flows: `None` or the index of a usable dest; `None` only when
    /// nothing could be chosen, except for hashing without fallback. The scheduler is updated
    /// with one set and then also asked about another set without an update.
    #[test]
    fn result_is_none_or_a_usable_index(
        kind in proptest::sample::select(SchedulerKind::ALL.to_vec()),
        flags in proptest::sample::select(FLAG_SETS.to_vec()),
        seed in any::<u64>(),
        first in arb_dests(),
        second in arb_dests(),
        flows in proptest::collection::vec(arb_flow(), 1..20),
    ) {
        let mut s = new_scheduler(kind, flags, seed);
        s.update(&first);
        for d in [&first, &second] {
            for f in &flows {
                let pick = s.schedule(d, f);
                if let Some(i) = pick {
                    prop_assert!(i < d.len(), "{kind}: {i} of {}", d.len());
                    prop_assert!(d[i].is_usable(), "{kind}: {:?}", d[i]);
                }
                let any_usable = d.iter().any(Dest::is_usable);
                let must_find = match kind {
                    SchedulerKind::Ovf => d.iter().any(|x| x.is_usable() && x.active_conns < x.weight),
                    SchedulerKind::Dh => false,
                    SchedulerKind::Sh | SchedulerKind::Mh => flags.fallback && any_usable,
                    _ => any_usable,
                };
                if must_find {
                    prop_assert!(pick.is_some(), "{kind} {flags:?}: none of {d:?}");
                }
                if !any_usable {
                    prop_assert_eq!(pick, None);
                }
            }
        }
    }
}
