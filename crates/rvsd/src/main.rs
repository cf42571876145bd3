//! `rvsd` — the RVS daemon. `rvsd --interface IF ...` runs the director on live interfaces;
//! `rvsd replay` runs the same dataplane over a capture (the operator's debugging tool) and
//! `rvsd inspect` reads captures through the packet layer, summarised per protocol.

mod control;
mod daemon;
mod host;
mod inspect;
mod io;
mod metrics;
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
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Without a subcommand: run the director on the given interfaces.
    #[command(flatten)]
    run: daemon::RunArgs,
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
        None => {
            init_logging();
            daemon::run(&cli.run)
        }
        Some(Command::Inspect { captures, icmp }) => inspect::run(&captures, icmp),
        Some(Command::ControlOnly(args)) => control::run_control_only(&args),
        Some(Command::Replay(args)) => replay::run(&args).map(|s| {
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

/// Structured logs on stderr (`RUST_LOG` filters them; default `info`).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
