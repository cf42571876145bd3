//! `rvsd` — the RVS daemon. `rvsd --interface IF ...` runs the director on live interfaces;
//! `rvsd replay` runs the same dataplane over a capture (the operator's debugging tool) and
//! `rvsd inspect` reads captures through the packet layer, summarised per protocol.

mod accept;
mod config;
mod control;
mod daemon;
mod health;
mod host;
mod inspect;
mod io;
mod metrics;
mod replay;

use std::path::PathBuf;
use std::process::ExitCode;

use std::sync::OnceLock;

use clap::{Parser, Subcommand};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

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
        None => match &cli.run.check_config {
            Some(path) => config::check(path, cli.run.rules.as_deref(), &cli.run.sets),
            // Logging starts once the configuration says how.
            None => daemon::run(&cli.run),
        },
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

/// The log filter, when the configuration (not `RUST_LOG`) sets it: reloads change it.
static LOG_FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// Structured logs on stderr, human-readable or JSON lines as `[log] format` says, filtered by
/// `RUST_LOG` if set, else by `[log] level`.
pub(crate) fn init_logging(log: &config::LogConfig) {
    let (filter, from_config) = match EnvFilter::try_from_default_env() {
        Ok(f) => (f, false),
        Err(_) => (
            EnvFilter::try_new(&log.level).unwrap_or_else(|_| EnvFilter::new("info")),
            true,
        ),
    };
    let (filter, handle) = reload::Layer::new(filter);
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(filter);
    let installed = match log.format {
        config::LogFormat::Human => registry
            .with(fmt.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())))
            .try_init(),
        config::LogFormat::Json => registry.with(fmt.json()).try_init(),
    };
    if installed.is_ok() && from_config {
        let _ = LOG_FILTER.set(handle);
    }
}

/// Change the log level (a reload); false when `RUST_LOG` rules or the level does not parse.
pub(crate) fn set_log_level(level: &str) -> bool {
    match (LOG_FILTER.get(), EnvFilter::try_new(level)) {
        (Some(h), Ok(f)) => h.reload(f).is_ok(),
        _ => false,
    }
}
