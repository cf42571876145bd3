//! `rvsadm` — the ipvsadm-compatible command line for RVS.
//!
//! Not built yet: the control socket arrives with the daemon issue and the ipvsadm-compatible
//! commands with the operations issue. Until then it says so and fails, rather than pretend.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!("rvsadm: not available yet — rvsd has no control socket in this version");
    ExitCode::from(2)
}
