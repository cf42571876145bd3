//! `rvsd replay`: the dataplane over a capture, capture timestamps as the clock.
//!
//! Reads every packet of `--input`, runs it through `Dataplane::process`, writes every frame the
//! director would transmit (forwarded and generated, in order, stamped with the input's time) to
//! `--output`, and one JSON line per input packet to `--verdicts`. Rules, flags and settings are
//! all validated before anything is processed; a mistake exits with status 2.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use rvs_core::director::Director;
use rvs_core::rules::parse_rules;
use rvs_dataplane::{Dataplane, DataplaneConfig, Frame, Tx, Verdict};
use rvs_wire::capture::{self, CaptureWriter, LinkPayload};

use crate::config::{Config, load_config};

/// Arguments of `rvsd replay` (see `rvsd replay --help`).
#[derive(Debug, clap::Args)]
pub(crate) struct ReplayArgs {
    /// Rules in the ipvsadm-save format (`-A -t VIP:port -s rr`, `-a -t VIP:port -r RIP:port -g`).
    #[arg(long)]
    rules: PathBuf,
    /// Capture to replay (pcap or pcapng; Ethernet, raw IP, Linux cooked, ...).
    #[arg(long)]
    input: PathBuf,
    /// Where to write the frames the director transmits (Ethernet pcap).
    #[arg(long)]
    output: PathBuf,
    /// Where to write one JSON line per input packet (verdict, drop reason, dest).
    #[arg(long)]
    verdicts: Option<PathBuf>,
    /// The director's MAC address on its interface.
    #[arg(long, value_parser = parse_mac)]
    mac: [u8; 6],
    /// The director's own addresses (repeatable).
    #[arg(long = "addr", required = true)]
    addrs: Vec<IpAddr>,
    /// Interface MTU.
    #[arg(long, default_value_t = 1500, value_parser = clap::value_parser!(u16).range(68..))]
    mtu: u16,
    /// MAC of the default gateway: every next hop not given with --neighbor.
    #[arg(long, value_parser = parse_mac)]
    gateway_mac: [u8; 6],
    /// An on-link neighbour, IP=MAC (repeatable).
    #[arg(long = "neighbor", value_parser = parse_neighbor)]
    neighbors: Vec<(IpAddr, [u8; 6])>,
    /// Director settings file (TOML, the setting names as keys).
    #[arg(long)]
    config: Option<PathBuf>,
    /// A director setting NAME=VALUE, by the name the config file uses (repeatable).
    #[arg(long = "set", value_parser = parse_set)]
    sets: Vec<(String, String)>,
}

fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if parts.len() != 6 {
        return Err(format!("{s:?} is not a MAC address (aa:bb:cc:dd:ee:ff)"));
    }
    let mut mac = [0u8; 6];
    for (m, p) in mac.iter_mut().zip(parts) {
        *m = u8::from_str_radix(p, 16).map_err(|_| format!("{s:?} is not a MAC address"))?;
    }
    Ok(mac)
}

fn parse_neighbor(s: &str) -> Result<(IpAddr, [u8; 6]), String> {
    let (ip, mac) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not IP=MAC"))?;
    let ip = ip
        .parse()
        .map_err(|_| format!("{ip:?} is not an IP address"))?;
    Ok((ip, parse_mac(mac)?))
}

pub(crate) fn parse_set(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not NAME=VALUE"))?;
    Ok((k.trim().to_string(), v.trim().to_string()))
}

/// A usage error: reported with exit status 2, nothing processed.
#[derive(Debug)]
pub(crate) struct UsageError(pub(crate) String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

pub(crate) fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow!(UsageError(msg.into()))
}

/// What one replay did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct ReplaySummary {
    pub(crate) packets: usize,
    pub(crate) written: usize,
    pub(crate) by_verdict: HashMap<&'static str, usize>,
}

/// Run the replay.
pub(crate) fn run(a: &ReplayArgs) -> Result<ReplaySummary> {
    // Validate everything before processing anything.
    let Config {
        settings, policies, ..
    } = load_config(a.config.as_deref(), &a.sets)?;
    let rules_text = std::fs::read_to_string(&a.rules)
        .map_err(|e| usage(format!("--rules {}: {e}", a.rules.display())))?;
    let rules = parse_rules(&rules_text)
        .map_err(|e| usage(format!("--rules {}: {e}", a.rules.display())))?;
    let mut director = Director::new(settings);
    for (key, p) in policies {
        director.set_service_policy(key, p);
    }
    for (i, r) in rules.iter().enumerate() {
        director.apply(r, 0).map_err(|e| {
            usage(format!(
                "--rules {}: rule {}: {e}",
                a.rules.display(),
                i + 1
            ))
        })?;
    }
    let reader = capture::open(&a.input)
        .map_err(|e| usage(format!("--input {}: {e}", a.input.display())))?;
    let neighbors: HashMap<IpAddr, [u8; 6]> = a.neighbors.iter().copied().collect();
    let cfg = DataplaneConfig {
        addrs: a.addrs.clone(),
        mtu: a.mtu,
        ..Default::default()
    };
    let mut dp = Dataplane::new(director, cfg);

    let out =
        File::create(&a.output).with_context(|| format!("creating {}", a.output.display()))?;
    let mut pcap = CaptureWriter::new(BufWriter::new(out))?;
    let mut jsonl = match &a.verdicts {
        Some(p) => Some(BufWriter::new(
            File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => None,
    };
    let mac_for = |ip: IpAddr| neighbors.get(&ip).copied().unwrap_or(a.gateway_mac);
    let mut summary = ReplaySummary::default();
    let mut extra: Vec<Tx> = Vec::new();
    let mut epoch: Option<Duration> = None;
    for (index, item) in reader.enumerate() {
        let pkt = item.with_context(|| format!("reading {}", a.input.display()))?;
        summary.packets += 1;
        // The dataplane's clock: nanoseconds since the first packet (capture time, not ours).
        let ts = pkt.timestamp;
        let base = *epoch.get_or_insert(ts);
        let now = u64::try_from(ts.saturating_sub(base).as_nanos()).unwrap_or(u64::MAX);
        dp.housekeeping(now);
        let frame_bytes = match pkt.link_payload() {
            Ok(LinkPayload::Ethernet(f)) => f.to_vec(),
            Ok(LinkPayload::Network {
                ether_type,
                payload,
            }) => {
                // Non-Ethernet captures: as if received from the gateway.
                let mut f = Vec::with_capacity(14 + payload.len());
                f.extend_from_slice(&a.mac);
                f.extend_from_slice(&a.gateway_mac);
                f.extend_from_slice(&ether_type.to_be_bytes());
                f.extend_from_slice(payload);
                f
            }
            Err(_) => Vec::new(),
        };
        let mut frame = Frame::from_bytes(&frame_bytes);
        extra.clear();
        let verdict = dp.process(&mut frame, now, &mut extra);
        *summary.by_verdict.entry(verdict.name()).or_default() += 1;
        let mut emit = |f: &mut Frame, next_hop: IpAddr| -> Result<()> {
            let d = f.data_mut();
            if d.len() >= 12 {
                d[0..6].copy_from_slice(&mac_for(next_hop));
                d[6..12].copy_from_slice(&a.mac);
            }
            pcap.write(ts, f.data())?;
            summary.written += 1;
            Ok(())
        };
        if let Verdict::Transmit { next_hop } | Verdict::Reply { next_hop } = verdict {
            emit(&mut frame, next_hop)?;
        }
        for tx in extra.iter_mut().filter(|t| !t.local) {
            emit(&mut tx.frame, tx.next_hop)?;
        }
        for l in dp.take_drop_log() {
            // At most one line per reason per 10 s of capture time (never one per packet).
            eprintln!(
                "rvsd replay: packet {index}: dropped ({}){}",
                l.reason.name(),
                if l.suppressed > 0 {
                    format!(", {} more since the last report", l.suppressed)
                } else {
                    String::new()
                }
            );
        }
        if let Some(w) = jsonl.as_mut() {
            let mut line = serde_json::Map::new();
            line.insert("index".into(), index.into());
            line.insert("verdict".into(), verdict.name().into());
            if let Verdict::Drop(r) = verdict {
                line.insert("reason".into(), r.name().into());
            }
            if let Some((addr, port)) = dp.last_dest() {
                line.insert(
                    "dest".into(),
                    std::net::SocketAddr::new(addr, port).to_string().into(),
                );
            }
            serde_json::to_writer(&mut *w, &serde_json::Value::Object(line))?;
            w.write_all(b"\n")?;
        }
    }
    let mut inner = pcap.into_inner();
    inner.flush()?;
    if let Some(mut w) = jsonl {
        w.flush()?;
    }
    if summary.packets == 0 {
        bail!("--input {}: no packets", a.input.display());
    }
    Ok(summary)
}
