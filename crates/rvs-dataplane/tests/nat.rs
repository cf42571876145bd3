//! NAT (masquerading) fixtures: client → VIP rewritten to RIP:rport, replies rewritten back.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;
use common::*;

#[test]
fn syn_v4_rewritten_to_dest_and_reply_back_to_vip() {
    let rules = format!(
        "-A -t {} -s rr\n-a -t {} -r {} -m -w 1\n",
        sa(VIP4, 80),
        sa(VIP4, 80),
        sa(RIP4[0], 8080)
    );
    let mut dp = dataplane(&rules, &[]);
    let syn = eth(&tcp(sa(CIP4, 40000), sa(VIP4, 80), "S", 1000, 0, b""));
    let out = run(&mut dp, &syn, SEC);
    let want = eth(&tcp_ttl(
        sa(CIP4, 40000),
        sa(RIP4[0], 8080),
        "S",
        1000,
        0,
        b"",
        63,
    ));
    assert_transmit("syn v4", &out, RIP4[0].into(), &want);
    assert_eq!(out.dest, Some(sa(RIP4[0], 8080)));
    let synack = eth(&tcp(
        sa(RIP4[0], 8080),
        sa(CIP4, 40000),
        "SA",
        5000,
        1001,
        b"",
    ));
    let out = run(&mut dp, &synack, SEC + 1);
    let want = eth(&tcp_ttl(
        sa(VIP4, 80),
        sa(CIP4, 40000),
        "SA",
        5000,
        1001,
        b"",
        63,
    ));
    assert_transmit("syn-ack v4", &out, CIP4.into(), &want);
}
