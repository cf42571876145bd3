//! libFuzzer entry point: every parser, view and builder of `rvs-wire` over arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    rvs_wire::exercise::exercise(data);
});
