//! `rvsd inspect`: captures through the packet layer, summarised per protocol.
//!
//! All packet logic is `rvs-wire`'s; this module only counts and prints.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context, Result};
use rvs_wire::capture::{self, LinkPayload};
use rvs_wire::parse::{IpInfo, Transport, parse_ip, proto};
use rvs_wire::quote;

/// Per-file (and overall) counts.
#[derive(Debug, Default)]
struct Summary {
    packets: usize,
    bytes: u64,
    classes: BTreeMap<&'static str, usize>,
    errors: BTreeMap<&'static str, usize>,
    icmp: BTreeMap<(bool, u8, u8), usize>,
    quotes: BTreeMap<&'static str, usize>,
    listing: Vec<String>,
}

impl Summary {
    fn merge(&mut self, o: &Summary) {
        self.packets += o.packets;
        self.bytes += o.bytes;
        for (k, v) in &o.classes {
            *self.classes.entry(k).or_default() += v;
        }
        for (k, v) in &o.errors {
            *self.errors.entry(k).or_default() += v;
        }
        for (k, v) in &o.icmp {
            *self.icmp.entry(*k).or_default() += v;
        }
        for (k, v) in &o.quotes {
            *self.quotes.entry(k).or_default() += v;
        }
    }

    fn render(&self, title: &str) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "== {title}: {} packets, {} bytes captured",
            self.packets, self.bytes
        );
        let _ = writeln!(s, "   {:<26} {:>8}", "class", "packets");
        for (k, v) in &self.classes {
            let _ = writeln!(s, "   {k:<26} {v:>8}");
        }
        for (k, v) in &self.errors {
            let _ = writeln!(s, "   {:<26} {v:>8}", format!("error:{k}"));
        }
        if !self.icmp.is_empty() {
            let _ = writeln!(s, "   ICMP errors by type/code:");
            for ((v6, t, c), n) in &self.icmp {
                let fam = if *v6 { "icmp6" } else { "icmp" };
                let _ = writeln!(
                    s,
                    "     {fam} {t:>3}/{c:<3} {:<28} {n:>6}",
                    icmp_name(*v6, *t, *c)
                );
            }
            let _ = writeln!(s, "   quoted datagram (connection lookup key):");
            for (k, v) in &self.quotes {
                let _ = writeln!(s, "     {k:<33} {v:>6}");
            }
        }
        for l in &self.listing {
            let _ = writeln!(s, "   {l}");
        }
        s
    }
}

fn icmp_name(v6: bool, t: u8, c: u8) -> &'static str {
    match (v6, t, c) {
        (false, 3, 4) => "fragmentation needed",
        (false, 3, 3) => "port unreachable",
        (false, 3, _) => "destination unreachable",
        (false, 4, _) => "source quench",
        (false, 5, _) => "redirect",
        (false, 11, _) => "time exceeded",
        (false, 12, _) => "parameter problem",
        (true, 1, 4) => "port unreachable",
        (true, 1, _) => "destination unreachable",
        (true, 2, _) => "packet too big",
        (true, 3, _) => "time exceeded",
        (true, 4, _) => "parameter problem",
        _ => "other",
    }
}

/// Account one IP packet; recurse once into IPv4-in-IP / IPv6-in-IP tunnels.
fn account_ip(s: &mut Summary, bytes: &[u8], ip: &IpInfo, list: bool, depth: u8) {
    let tunnelled = matches!(ip.protocol, proto::IPIP | proto::IPV6) && ip.fragment.is_none();
    if tunnelled
        && depth == 0
        && let Some(inner) = bytes.get(ip.l4_offset..ip.end())
        && let Ok(p) = parse_ip(inner)
        && let Some(iip) = p.ip()
    {
        *s.classes.entry("tunnel(inner follows)").or_default() += 1;
        *s.classes.entry(p.class()).or_default() += 1;
        account_ip(s, inner, iip, list, depth + 1);
        return;
    }
    if !ip.is_icmp_error() {
        return;
    }
    let v6 = matches!(ip.transport, Transport::Icmpv6 { .. });
    let Some(msg) = bytes.get(ip.l4_offset..ip.end()) else {
        return;
    };
    let read = if v6 {
        quote::read_icmpv6_error(msg)
    } else {
        quote::read_icmpv4_error(msg)
    };
    match read {
        Ok(e) => {
            *s.icmp.entry((v6, e.icmp_type, e.code)).or_default() += 1;
            let label = match e.quote.reversed_key() {
                Ok(_) if e.quote.is_icmp_error() => "error about an ICMP error",
                Ok(k) if k.protocol == proto::TCP => "tcp flow",
                Ok(k) if k.protocol == proto::UDP => "udp flow",
                Ok(_) => "other protocol",
                Err(err) => err.name(),
            };
            *s.quotes.entry(label).or_default() += 1;
            if list {
                let flow = match e.quote.reversed_key() {
                    Ok(k) => format!(
                        "connection {} -> {} proto {}",
                        SocketAddr::new(k.src, k.sport),
                        SocketAddr::new(k.dst, k.dport),
                        k.protocol
                    ),
                    Err(err) => format!("no key: {err}"),
                };
                let mtu = e.mtu(v6).map(|m| format!(" mtu {m}")).unwrap_or_default();
                s.listing.push(format!(
                    "{} {}/{}{mtu} from {} quoting {} bytes: {flow}",
                    if v6 { "icmp6" } else { "icmp" },
                    e.icmp_type,
                    e.code,
                    ip.src,
                    e.quote.bytes().len()
                ));
            }
        }
        Err(err) => {
            let t = match ip.transport {
                Transport::Icmpv4 { icmp_type, code } | Transport::Icmpv6 { icmp_type, code } => {
                    (icmp_type, code)
                }
                _ => (0, 0),
            };
            *s.icmp.entry((v6, t.0, t.1)).or_default() += 1;
            *s.quotes.entry(err.name()).or_default() += 1;
        }
    }
}

fn inspect_file(path: &Path, list: bool) -> Result<Summary> {
    let reader = capture::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut s = Summary::default();
    for item in reader {
        let pkt = match item {
            Ok(p) => p,
            Err(e) => {
                *s.errors.entry(e.name()).or_default() += 1;
                continue;
            }
        };
        s.packets += 1;
        s.bytes += pkt.data.len() as u64;
        let lp: LinkPayload<'_> = match pkt.link_payload() {
            Ok(lp) => lp,
            Err(e) => {
                *s.errors.entry(e.name()).or_default() += 1;
                continue;
            }
        };
        match lp.parse() {
            Ok(p) => {
                *s.classes.entry(p.class()).or_default() += 1;
                if let Some(ip) = p.ip() {
                    account_ip(&mut s, lp.bytes(), ip, list, 0);
                }
            }
            Err(e) => *s.errors.entry(e.name()).or_default() += 1,
        }
    }
    Ok(s)
}

/// Inspect each capture and print its summary, then a total when there are several.
pub(crate) fn run(captures: &[impl AsRef<Path>], list: bool) -> Result<()> {
    let mut total = Summary::default();
    for c in captures {
        let path = c.as_ref();
        let s = inspect_file(path, list)?;
        print!("{}", s.render(&path.display().to_string()));
        total.merge(&s);
    }
    if captures.len() > 1 {
        print!(
            "{}",
            total.render(&format!("total over {} captures", captures.len()))
        );
    }
    Ok(())
}
