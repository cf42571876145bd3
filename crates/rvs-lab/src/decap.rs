//! The real-server side of TUN forwarding: a user-space decapsulator for kernels without the
//! `ipip` / `ip6_tunnel` modules.
//!
//! Two raw sockets receive what the director encapsulated: IPv4-in-IPv4 (IP protocol 4) and
//! IPv6-in-IPv6 (next header 41). A raw IPv4 socket delivers the outer IPv4 header with the
//! payload; a raw IPv6 socket delivers only the payload (the kernel has already walked the outer
//! header and its extension headers). The inner packet is written into a TUN device (IFF_TUN,
//! IFF_NO_PI), so the kernel receives it as if it had arrived on that interface and delivers it
//! to the VIP on `lo` — TCP and UDP segments as well as ICMP errors about the dest's own
//! packets (the director forwards those encapsulated too). A raw socket bound to the protocol
//! also stops the kernel from answering the tunnel packets with "protocol unreachable"
//! (IPv4) or "unrecognized next header" (IPv6), as it would with no handler at all.
//!
//! The TUN device needs `rp_filter=0` (the inner source is a client reached through another
//! interface) and IPv6 enabled; [`Decapsulator::start`] sets both, and also
//! `net.ipv4.conf.all.rp_filter=0` of its namespace, since the kernel applies the larger of the
//! `all` and the device value. Packets are checked before
//! they are written: a malformed outer or inner header, or an inner packet of another IP
//! version than the tunnel carries, is dropped and counted; nothing panics.

use std::io::{self, Read};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use etherparse::{IpNumber, Ipv4HeaderSlice, Ipv6HeaderSlice};
use socket2::{Domain, Protocol, Socket, Type};
use tun_rs::{DeviceBuilder, SyncDevice};

use crate::netns::{Netns, Stop};

/// Why a received tunnel packet was not decapsulated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecapError {
    /// The outer IPv4 header is invalid (version, IHL, or a fragment).
    #[error("malformed outer IPv4 header")]
    BadOuter,
    /// The outer IPv4 packet does not carry IP protocol 4 (IP-in-IP).
    #[error("outer protocol {0} is not IP-in-IP")]
    NotIpInIp(u8),
    /// A length field claims more bytes than were received, or fewer than its header needs.
    #[error("truncated packet")]
    Truncated,
    /// The inner packet is not of the IP version the tunnel carries.
    #[error("inner packet has IP version {0}")]
    WrongInnerVersion(u8),
    /// The inner header is invalid.
    #[error("malformed inner header")]
    BadInner,
}

/// The inner IPv4 packet of an IPv4-in-IPv4 packet as a raw IPv4 socket delivers it (outer
/// header included), trimmed to the inner total length.
pub fn decapsulate_ipv4(packet: &[u8]) -> Result<&[u8], DecapError> {
    let outer = Ipv4HeaderSlice::from_slice(packet).map_err(|_| DecapError::BadOuter)?;
    if outer.protocol() != IpNumber::IPV4 {
        return Err(DecapError::NotIpInIp(outer.protocol().0));
    }
    if outer.is_fragmenting_payload() {
        // The kernel reassembles before raw delivery; a fragment here is not ours to guess at.
        return Err(DecapError::BadOuter);
    }
    let hlen = outer.slice().len();
    let total = usize::from(outer.total_len());
    if total < hlen || total > packet.len() {
        return Err(DecapError::Truncated);
    }
    inner_ipv4(&packet[hlen..total])
}

/// The inner IPv4 packet of an IP-in-IP payload, trimmed to its total length.
fn inner_ipv4(payload: &[u8]) -> Result<&[u8], DecapError> {
    let version = payload.first().ok_or(DecapError::Truncated)? >> 4;
    if version != 4 {
        return Err(DecapError::WrongInnerVersion(version));
    }
    let inner = Ipv4HeaderSlice::from_slice(payload).map_err(|_| DecapError::BadInner)?;
    let total = usize::from(inner.total_len());
    if total < inner.slice().len() || total > payload.len() {
        return Err(DecapError::Truncated);
    }
    Ok(&payload[..total])
}

/// The inner IPv6 packet of an IPv6-in-IPv6 payload as a raw IPv6 socket delivers it (outer
/// header already removed), trimmed to its payload length. Jumbograms are refused.
pub fn decapsulate_ipv6(payload: &[u8]) -> Result<&[u8], DecapError> {
    let version = payload.first().ok_or(DecapError::Truncated)? >> 4;
    if version != 6 {
        return Err(DecapError::WrongInnerVersion(version));
    }
    let inner = Ipv6HeaderSlice::from_slice(payload).map_err(|_| DecapError::Truncated)?;
    let hlen = inner.slice().len();
    let total = hlen + usize::from(inner.payload_length());
    if inner.payload_length() == 0 && payload.len() > hlen {
        // A zero payload length with more bytes behind it is a jumbogram (RFC 2675).
        return Err(DecapError::BadInner);
    }
    if total > payload.len() {
        return Err(DecapError::Truncated);
    }
    Ok(&payload[..total])
}

/// How to run a [`Decapsulator`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecapConfig {
    /// Name of the TUN device to create (at most 15 bytes).
    pub tun_name: String,
    /// Decapsulate IPv4-in-IPv4.
    pub ipv4: bool,
    /// Decapsulate IPv6-in-IPv6.
    pub ipv6: bool,
    /// Take only IPv4 tunnel packets addressed to this address (the RIP); any local address
    /// if `None`.
    pub local_v4: Option<Ipv4Addr>,
    /// Take only IPv6 tunnel packets addressed to this address; any local address if `None`.
    pub local_v6: Option<Ipv6Addr>,
}

impl Default for DecapConfig {
    fn default() -> Self {
        Self {
            tun_name: "rvsdecap0".to_owned(),
            ipv4: true,
            ipv6: true,
            local_v4: None,
            local_v6: None,
        }
    }
}

/// What a [`Decapsulator`] has done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecapStats {
    /// IPv4-in-IPv4 packets written to the TUN device.
    pub ipv4: u64,
    /// IPv6-in-IPv6 packets written to the TUN device.
    pub ipv6: u64,
    /// Packets dropped for a malformed or truncated header.
    pub malformed: u64,
    /// Packets dropped because the inner packet was of the other IP version.
    pub wrong_inner: u64,
    /// Inner packets the TUN device refused.
    pub tun_errors: u64,
}

#[derive(Debug, Default)]
struct Counters {
    ipv4: AtomicU64,
    ipv6: AtomicU64,
    malformed: AtomicU64,
    wrong_inner: AtomicU64,
    tun_errors: AtomicU64,
}

struct Io {
    raw4: Option<Socket>,
    raw6: Option<Socket>,
    tun: SyncDevice,
}

/// A running decapsulator: raw sockets in, a TUN device out, served by one thread. Stopped
/// (thread joined, sockets and device closed, so the device disappears) when dropped.
pub struct Decapsulator {
    counters: Arc<Counters>,
    stop: Arc<Stop>,
    thread: Option<JoinHandle<()>>,
    tun_name: String,
}

impl std::fmt::Debug for Decapsulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decapsulator")
            .field("tun_name", &self.tun_name)
            .field("stats", &self.stats())
            .finish()
    }
}

/// Receive buffer of the raw sockets, so bursts of a bulk transfer are not dropped.
const RCVBUF: usize = 4 << 20;

fn raw_socket(domain: Domain, proto: i32, local: Option<SocketAddr>) -> io::Result<Socket> {
    let s = Socket::new(domain, Type::RAW, Some(Protocol::from(proto)))?;
    if let Some(a) = local {
        s.bind(&a.into())?;
    }
    // Best effort: the kernel caps it at net.core.rmem_max.
    let _ = s.set_recv_buffer_size(RCVBUF);
    s.set_nonblocking(true)?;
    Ok(s)
}

/// Writes a sysctl of the calling thread's network namespace through `/proc/sys` (which
/// resolves per thread).
fn write_sysctl(path: &str, value: &str) -> io::Result<()> {
    std::fs::write(path, value)
        .map_err(|e| io::Error::new(e.kind(), format!("writing {path}: {e}")))
}

/// Creates the sockets and the TUN device, in the calling thread's namespace.
fn open(cfg: &DecapConfig) -> io::Result<Io> {
    if cfg.tun_name.is_empty()
        || cfg.tun_name.len() > 15
        || !cfg
            .tun_name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid TUN device name {:?}", cfg.tun_name),
        ));
    }
    let raw4 = cfg
        .ipv4
        .then(|| {
            let local = cfg.local_v4.map(|a| SocketAddr::from((a, 0)));
            raw_socket(Domain::IPV4, 4, local)
        })
        .transpose()?;
    let raw6 = cfg
        .ipv6
        .then(|| {
            let local = cfg.local_v6.map(|a| SocketAddr::from((a, 0)));
            raw_socket(Domain::IPV6, 41, local)
        })
        .transpose()?;
    let tun = DeviceBuilder::new()
        .name(&cfg.tun_name)
        .enable(true)
        .build_sync()
        .map_err(|e| io::Error::new(e.kind(), format!("creating TUN {}: {e}", cfg.tun_name)))?;
    let name = &cfg.tun_name;
    write_sysctl("/proc/sys/net/ipv4/conf/all/rp_filter", "0")?;
    write_sysctl(&format!("/proc/sys/net/ipv4/conf/{name}/rp_filter"), "0")?;
    write_sysctl(&format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"), "0")?;
    Ok(Io { raw4, raw6, tun })
}

impl Decapsulator {
    /// Creates the raw sockets and the TUN device inside `netns` (or in the calling thread's
    /// namespace if `None`), sets the device up with `rp_filter=0` and IPv6 enabled, and starts
    /// decapsulating. Fails if the device or the sockets cannot be created.
    pub fn start(netns: Option<&Netns>, cfg: &DecapConfig) -> io::Result<Self> {
        let io = match netns {
            Some(ns) => ns.run(|| open(cfg))??,
            None => open(cfg)?,
        };
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(Stop::new()?);
        let thread = {
            let (counters, stop) = (counters.clone(), stop.clone());
            std::thread::Builder::new()
                .name(format!("decap-{}", cfg.tun_name))
                .spawn(move || run(&io, &counters, &stop))?
        };
        Ok(Self {
            counters,
            stop,
            thread: Some(thread),
            tun_name: cfg.tun_name.clone(),
        })
    }

    /// The TUN device's name.
    pub fn tun_name(&self) -> &str {
        &self.tun_name
    }

    /// The counters so far.
    pub fn stats(&self) -> DecapStats {
        let c = &self.counters;
        DecapStats {
            ipv4: c.ipv4.load(Ordering::Relaxed),
            ipv6: c.ipv6.load(Ordering::Relaxed),
            malformed: c.malformed.load(Ordering::Relaxed),
            wrong_inner: c.wrong_inner.load(Ordering::Relaxed),
            tun_errors: c.tun_errors.load(Ordering::Relaxed),
        }
    }

    /// Whether the decapsulating thread is still running (it ends only when stopped or on an
    /// unrecoverable poll error).
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stops the thread and removes the TUN device (dropping does the same).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Decapsulator {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Counts the outcome of one packet and writes what was decapsulated.
fn handle(result: Result<&[u8], DecapError>, v6: bool, tun: &SyncDevice, counters: &Counters) {
    match result {
        Ok(inner) => match tun.send(inner) {
            Ok(_) if v6 => counters.ipv6.fetch_add(1, Ordering::Relaxed),
            Ok(_) => counters.ipv4.fetch_add(1, Ordering::Relaxed),
            Err(_) => counters.tun_errors.fetch_add(1, Ordering::Relaxed),
        },
        Err(DecapError::WrongInnerVersion(_)) => {
            counters.wrong_inner.fetch_add(1, Ordering::Relaxed)
        }
        Err(_) => counters.malformed.fetch_add(1, Ordering::Relaxed),
    };
}

fn run(io: &Io, counters: &Counters, stop: &Stop) {
    let mut buf = vec![0u8; 65536 + 60];
    let socks: Vec<(bool, &Socket)> = [(false, io.raw4.as_ref()), (true, io.raw6.as_ref())]
        .into_iter()
        .filter_map(|(v6, s)| s.map(|s| (v6, s)))
        .collect();
    let fds: Vec<BorrowedFd<'_>> = socks.iter().map(|(_, s)| s.as_fd()).collect();
    loop {
        let ready = match stop.wait(&fds, None) {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => {
                eprintln!("rvs-lab decap: poll failed: {e}");
                return;
            }
        };
        for i in ready {
            let Some(&(v6, mut sock)) = socks.get(i) else {
                continue;
            };
            // Drain the socket; WouldBlock (or any error) ends the round.
            while let Ok(n) = sock.read(&mut buf) {
                let pkt = &buf[..n];
                let r = if v6 {
                    decapsulate_ipv6(pkt)
                } else {
                    decapsulate_ipv4(pkt)
                };
                handle(r, v6, &io.tun, counters);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    fn udp_v4(payload: &[u8]) -> Vec<u8> {
        let b = PacketBuilder::ipv4([192, 0, 2, 2], [203, 0, 113, 10], 64).udp(40000, 7);
        let mut v = Vec::new();
        b.write(&mut v, payload).unwrap();
        v
    }

    fn udp_v6(payload: &[u8]) -> Vec<u8> {
        let src = "2001:db8:1::2".parse::<Ipv6Addr>().unwrap().octets();
        let dst = "2001:db8:203::10".parse::<Ipv6Addr>().unwrap().octets();
        let b = PacketBuilder::ipv6(src, dst, 64).udp(40000, 7);
        let mut v = Vec::new();
        b.write(&mut v, payload).unwrap();
        v
    }

    /// An outer IPv4 header (protocol `proto`) around `inner`, plus `pad` trailing bytes.
    fn outer_v4(proto: u8, inner: &[u8], options: usize, pad: usize) -> Vec<u8> {
        let hlen = 20 + options;
        let total = hlen + inner.len();
        let mut v = vec![0u8; hlen];
        v[0] = 0x40 | (hlen / 4) as u8;
        v[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        v[8] = 64;
        v[9] = proto;
        v[12..16].copy_from_slice(&[198, 51, 100, 2]);
        v[16..20].copy_from_slice(&[198, 51, 100, 11]);
        for (i, b) in v[20..].iter_mut().enumerate() {
            *b = if i == 0 { 1 } else { 0 }; // NOP option, then end-of-options
        }
        v.extend_from_slice(inner);
        v.extend(std::iter::repeat_n(0xa5, pad));
        v
    }

    #[test]
    fn ipv4_in_ipv4() {
        let inner = udp_v4(b"hello");
        assert_eq!(decapsulate_ipv4(&outer_v4(4, &inner, 0, 0)), Ok(&inner[..]));
        // Outer options and link-layer padding after the packet are handled.
        assert_eq!(decapsulate_ipv4(&outer_v4(4, &inner, 8, 6)), Ok(&inner[..]));
        // Padding inside the outer packet, after the inner one, is trimmed off too.
        let mut padded = inner.clone();
        padded.extend_from_slice(&[0; 4]);
        assert_eq!(
            decapsulate_ipv4(&outer_v4(4, &padded, 0, 0)),
            Ok(&inner[..])
        );
    }

    #[test]
    fn ipv4_refusals() {
        let inner = udp_v4(b"hello");
        let ok = outer_v4(4, &inner, 0, 0);
        assert_eq!(
            decapsulate_ipv4(&outer_v4(41, &inner, 0, 0)),
            Err(DecapError::NotIpInIp(41))
        );
        assert_eq!(
            decapsulate_ipv4(&outer_v4(4, &udp_v6(b"x"), 0, 0)),
            Err(DecapError::WrongInnerVersion(6))
        );
        assert_eq!(
            decapsulate_ipv4(&outer_v4(4, b"", 0, 0)),
            Err(DecapError::Truncated)
        );
        assert_eq!(
            decapsulate_ipv4(&outer_v4(4, &[0x45; 12], 0, 0)),
            Err(DecapError::BadInner)
        );
        // Every truncation is refused without panicking.
        for n in 0..ok.len() {
            assert!(decapsulate_ipv4(&ok[..n]).is_err(), "truncated to {n}");
        }
        // Outer total length smaller than its header / larger than what arrived.
        let mut bad = ok.clone();
        bad[2..4].copy_from_slice(&19u16.to_be_bytes());
        assert_eq!(decapsulate_ipv4(&bad), Err(DecapError::Truncated));
        let mut bad = ok.clone();
        bad[2..4].copy_from_slice(&((ok.len() + 1) as u16).to_be_bytes());
        assert_eq!(decapsulate_ipv4(&bad), Err(DecapError::Truncated));
        // Inner total length larger than the outer payload.
        let mut bad = ok.clone();
        bad[22..24].copy_from_slice(&((inner.len() + 1) as u16).to_be_bytes());
        assert_eq!(decapsulate_ipv4(&bad), Err(DecapError::Truncated));
        // Outer fragment (MF set).
        let mut bad = ok.clone();
        bad[6] = 0x20;
        assert_eq!(decapsulate_ipv4(&bad), Err(DecapError::BadOuter));
        // Outer version or IHL wrong.
        let mut bad = ok.clone();
        bad[0] = 0x65;
        assert_eq!(decapsulate_ipv4(&bad), Err(DecapError::BadOuter));
        let mut bad = ok;
        bad[0] = 0x44;
        assert_eq!(decapsulate_ipv4(&bad), Err(DecapError::BadOuter));
    }

    #[test]
    fn ipv6_in_ipv6() {
        let inner = udp_v6(b"hello");
        assert_eq!(decapsulate_ipv6(&inner), Ok(&inner[..]));
        let mut padded = inner.clone();
        padded.extend_from_slice(&[0xa5; 7]);
        assert_eq!(decapsulate_ipv6(&padded), Ok(&inner[..]));
        // A bare header with "no next header" and no payload is a valid packet.
        let mut bare = inner[..40].to_vec();
        bare[4..6].copy_from_slice(&[0, 0]);
        bare[6] = 59;
        assert_eq!(decapsulate_ipv6(&bare), Ok(&bare[..]));
    }

    #[test]
    fn ipv6_refusals() {
        let inner = udp_v6(b"hello");
        assert_eq!(
            decapsulate_ipv6(&udp_v4(b"x")),
            Err(DecapError::WrongInnerVersion(4))
        );
        assert_eq!(decapsulate_ipv6(&[]), Err(DecapError::Truncated));
        for n in 0..inner.len() {
            assert!(decapsulate_ipv6(&inner[..n]).is_err(), "truncated to {n}");
        }
        let mut jumbo = inner.clone();
        jumbo[4..6].copy_from_slice(&[0, 0]);
        assert_eq!(decapsulate_ipv6(&jumbo), Err(DecapError::BadInner));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap deterministic sweep over byte patterns of many lengths.
        let mut x = 0x1234_5678u32;
        for len in 0..200 {
            for _ in 0..50 {
                let v: Vec<u8> = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 17;
                        x ^= x << 5;
                        x as u8
                    })
                    .collect();
                let _ = decapsulate_ipv4(&v);
                let _ = decapsulate_ipv6(&v);
                let mut v4 = v.clone();
                if let Some(b) = v4.first_mut() {
                    *b = 0x45;
                }
                let _ = decapsulate_ipv4(&v4);
            }
        }
    }
}
