//! `rvs-lab` — lab utilities for the real hosts of an RVS setup and for the lab itself.
//!
//! - `rvs-lab decap`: the user-space IPv4-in-IPv4 / IPv6-in-IPv6 decapsulator for a TUN-mode
//!   real server whose kernel has no `ipip` / `ip6_tunnel` modules. Runs in the current network
//!   namespace (use `ip netns exec NS rvs-lab decap ...`) until killed; the TUN device goes
//!   away with the process.
//! - `rvs-lab sweep`: removes lab namespaces left behind by processes that no longer exist.
//! - `rvs-lab demo --rvsd PATH`: the demo (as root): NAT/DR/TUN balancing and the path-MTU
//!   scenario with the real `rvsd` in lab topologies, a short report, nothing left behind.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use rvs_lab::{DecapConfig, Decapsulator, remove_stale};

mod demo;

#[derive(Parser)]
#[command(name = "rvs-lab", version, about = "RVS lab utilities")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Decapsulate IP-in-IP and IPv6-in-IPv6 into a TUN device (TUN-mode real servers).
    Decap {
        /// Name of the TUN device to create.
        #[arg(long, default_value = "rvsdecap0")]
        tun: String,
        /// Accept IPv4 tunnel packets only when addressed to this address (the RIP).
        #[arg(long)]
        local_v4: Option<Ipv4Addr>,
        /// Accept IPv6 tunnel packets only when addressed to this address (the RIP).
        #[arg(long)]
        local_v6: Option<Ipv6Addr>,
        /// Do not decapsulate IPv4-in-IPv4.
        #[arg(long)]
        no_ipv4: bool,
        /// Do not decapsulate IPv6-in-IPv6.
        #[arg(long)]
        no_ipv6: bool,
        /// Print the counters this often, in seconds, when they changed (0: never).
        #[arg(long, default_value_t = 10)]
        stats_interval: u64,
    },
    /// Remove lab namespaces (rvs-<pid>-...) whose process no longer exists.
    Sweep,
    /// Run the demo (as root): NAT/DR/TUN balancing and the path-MTU scenario with and without
    /// ICMP forwarding, in lab topologies with the real rvsd; prints a report, exits 1 if a
    /// check failed, 2 if the labs could not be run.
    Demo {
        /// The rvsd binary to run in the labs.
        #[arg(long)]
        rvsd: PathBuf,
        /// HTTP GETs per mode and family in the balancing part.
        #[arg(long, default_value_t = 300)]
        requests: u32,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Decap {
            tun,
            local_v4,
            local_v6,
            no_ipv4,
            no_ipv6,
            stats_interval,
        } => {
            let cfg = DecapConfig {
                tun_name: tun,
                ipv4: !no_ipv4,
                ipv6: !no_ipv6,
                local_v4,
                local_v6,
            };
            let d = match Decapsulator::start(None, &cfg) {
                Ok(d) => d,
                Err(e) => {
                    eprintln!("rvs-lab decap: {e}");
                    return ExitCode::from(1);
                }
            };
            println!("rvs-lab decap: decapsulating into {}", d.tun_name());
            let mut last = d.stats();
            loop {
                std::thread::sleep(Duration::from_secs(stats_interval.max(1)));
                if !d.is_running() {
                    eprintln!("rvs-lab decap: the decapsulating thread ended");
                    return ExitCode::from(1);
                }
                let now = d.stats();
                if stats_interval > 0 && now != last {
                    println!(
                        "rvs-lab decap: ipv4 {} ipv6 {} malformed {} wrong_inner {} tun_errors {}",
                        now.ipv4, now.ipv6, now.malformed, now.wrong_inner, now.tun_errors
                    );
                    last = now;
                }
            }
        }
        Cmd::Demo { rvsd, requests } => {
            if !rvsd.is_file() {
                eprintln!("rvs-lab demo: --rvsd {}: no such file", rvsd.display());
                return ExitCode::from(2);
            }
            let opts = demo::DemoOpts {
                requests,
                ..demo::DemoOpts::default()
            };
            match demo::run(&rvsd, &opts) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(1),
                Err(e) => {
                    eprintln!("rvs-lab demo: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Cmd::Sweep => match remove_stale(None) {
            Ok(removed) => {
                for n in &removed {
                    println!("removed {n}");
                }
                println!("{} stale namespace(s) removed", removed.len());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("rvs-lab sweep: {e}");
                ExitCode::from(1)
            }
        },
    }
}
