//! Fuzz target for the packet layer, run by bolero: under `cargo test` it is a short
//! random-input smoke run (plus the corpus seeds); `cargo bolero test` or the cargo-fuzz target in
//! `fuzz/` run the same harness coverage-guided. The harness is `rvs_wire::exercise::exercise`.
#![allow(clippy::unwrap_used, missing_docs)]

#[test]
fn fuzz_packet_layer() {
    bolero::check!().for_each(|data: &[u8]| rvs_wire::exercise::exercise(data));
}

/// Inputs the coverage-guided fuzzer once found, kept so they stay fixed.
#[test]
fn fuzz_regressions() {
    // IPv6/UDP whose zero checksum "verified" arithmetically: the rewrite leaves a zero UDP
    // checksum zero, and the harness must not expect it to be updated.
    let ipv6_udp_zero_checksum: &[u8] = &[
        97, 71, 255, 255, 0, 33, 17, 96, 0, 0, 17, 0, 0, 255, 255, 255, 41, 33, 14, 4, 93, 0, 52,
        199, 186, 3, 36, 0, 0, 0, 33, 17, 4, 1, 0, 17, 96, 0, 0, 0, 96, 0, 3, 0, 0, 0, 0, 0, 0,
        123, 123, 0, 52, 199, 186, 3, 36, 0, 0, 0, 33, 17, 4, 1, 0, 17, 96, 0, 0, 30, 75, 50, 0, 0,
        0, 96, 0, 3, 0, 52, 199, 186, 3,
    ];
    rvs_wire::exercise::exercise(ipv6_udp_zero_checksum);
}
