//! Fuzz target for the packet layer, run by bolero: under `cargo test` it is a short
//! random-input smoke run (plus the corpus seeds); `cargo bolero test` or the cargo-fuzz target in
//! `fuzz/` run the same harness coverage-guided. The harness is `rvs_wire::exercise::exercise`.
#![allow(clippy::unwrap_used, missing_docs)]

#[test]
fn fuzz_packet_layer() {
    bolero::check!().for_each(|data: &[u8]| rvs_wire::exercise::exercise(data));
}
