//! `rvsd` — the RVS daemon. Today it offers `replay` (the dataplane over a capture, the
//! operator's debugging tool) and `inspect` (captures through the packet layer, summarised per
//! protocol); running on live interfaces arrives with the daemon issue.

mod control;
mod inspect;
mod replay;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Command line of `rvsd`.
#[derive(Debug, Parser)]
#[command(
    name = "rvsd",
    version,
    about = "RVS — Rust Virtual Server, a layer-4 director"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// What `rvsd` is asked to do.
#[derive(Debug, Subcommand)]
enum Command {
    /// Read capture files (pcap or pcapng) through the packet layer and print a per-protocol
    /// summary: packet classes, typed parse errors, and every ICMP error's quoted flow.
    Inspect {
        /// Capture files to read.
        #[arg(required = true)]
        captures: Vec<PathBuf>,
        /// Also list each ICMP error (type, code, MTU, quoted flow).
        #[arg(long)]
        icmp: bool,
    },
    /// Run the dataplane over a capture with capture timestamps as the clock; write what the
    /// director would transmit, and a verdict per input packet.
    Replay(replay::ReplayArgs),
    /// Serve only the control socket, over a dataplane attached to no interface (tests).
    #[command(hide = true)]
    ControlOnly(control::ControlOnlyArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect { captures, icmp } => inspect::run(&captures, icmp),
        Command::ControlOnly(args) => control::run_control_only(&args),
        Command::Replay(args) => replay::run(&args).map(|s| {
            let mut v: Vec<_> = s.by_verdict.iter().collect();
            v.sort();
            let parts: Vec<String> = v.iter().map(|(k, n)| format!("{k} {n}")).collect();
            eprintln!(
                "rvsd replay: {} packets in, {} frames out ({})",
                s.packets,
                s.written,
                parts.join(", ")
            );
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rvsd: {e:#}");
            // Usage mistakes (bad rules, flags, settings) exit 2, like clap's own errors.
            if e.downcast_ref::<replay::UsageError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
