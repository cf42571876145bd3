//! `rvsd` — the RVS daemon. Today it offers `inspect` (read captures through the packet layer
//! and summarise them per protocol); the dataplane daemon and `replay` arrive with the core and
//! daemon issues.

mod inspect;

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect { captures, icmp } => inspect::run(&captures, icmp),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rvsd: {e:#}");
            ExitCode::FAILURE
        }
    }
}
