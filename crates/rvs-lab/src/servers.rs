//! The real-server processes of a dest, as threads of the calling process: an HTTP/1.1 server,
//! a TCP echo server and a UDP echo server, each dual-stack.
//!
//! The listening sockets are created inside the dest's namespace ([`Netns`]), so everything they
//! accept lives there too; the threads serving them run in the caller's process and stop (and
//! close every socket, so the namespace can really go away) when the [`DestServers`] is stopped
//! or dropped.
//!
//! | service | port (default) | behaviour |
//! |---|---|---|
//! | HTTP | TCP 80 | `GET /` answers `NAME\n`; `GET /bytes/N` streams N pattern bytes; `POST /upload` reads a `Content-Length` body and answers `LEN CHECKSUM\n`; every response has `X-RVS-Dest: NAME` and `Connection: close` |
//! | echo | TCP 7 | sends back whatever it reads until the client closes |
//! | echo | UDP 7 | answers each datagram with the same bytes, from the address it was sent to (so replies to a VIP on `lo` come from the VIP) |

use std::collections::HashMap;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, sendmsg, setsockopt,
    sockopt,
};
use socket2::{Domain, Protocol, Socket, Type};

use crate::http::{
    CHUNK, Fnv64, MAX_HEAD, Pattern, head_end, parse_request, response_head, upload_summary,
};
use crate::netns::{Netns, Stop};

/// How long a served connection may stay silent (reading) or blocked (writing).
const CONN_IDLE: Duration = Duration::from_secs(60);

/// Largest `/bytes/N` served (1 GiB).
const MAX_BYTES: u64 = 1 << 30;

/// Ports the servers listen on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerPorts {
    /// The HTTP server's TCP port (default 80).
    pub http: u16,
    /// The TCP and UDP echo servers' port (default 7).
    pub echo: u16,
}

impl Default for ServerPorts {
    fn default() -> Self {
        Self { http: 80, echo: 7 }
    }
}

/// What a dest's servers have done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// HTTP requests answered (any status).
    pub http_requests: u64,
    /// TCP echo connections accepted.
    pub tcp_echo_connections: u64,
    /// UDP datagrams received (each is answered; counted before the answer is sent).
    pub udp_datagrams: u64,
}

#[derive(Debug, Default)]
struct Counters {
    http_requests: AtomicU64,
    tcp_echo_connections: AtomicU64,
    udp_datagrams: AtomicU64,
}

#[derive(Debug)]
struct Shared {
    name: String,
    counters: Counters,
    pattern: Pattern,
    /// Open connections (a clone of each stream), shut down on stop to wake their threads.
    conns: Mutex<HashMap<u64, TcpStream>>,
    handlers: Mutex<Vec<JoinHandle<()>>>,
}

/// The servers of one dest; stopped when dropped.
#[derive(Debug)]
pub struct DestServers {
    shared: Arc<Shared>,
    stop: Arc<Stop>,
    main: Option<JoinHandle<()>>,
}

struct Sockets {
    http: Socket,
    echo_tcp: Socket,
    udp4: Socket,
    udp6: Socket,
}

fn listener(port: u16) -> io::Result<Socket> {
    let s = Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP))?;
    s.set_only_v6(false)?;
    s.set_reuse_address(true)?;
    s.bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)).into())?;
    s.listen(1024)?;
    s.set_nonblocking(true)?;
    Ok(s)
}

fn open_sockets(ports: ServerPorts) -> io::Result<Sockets> {
    let udp4 = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    udp4.set_reuse_address(true)?;
    setsockopt(&udp4, sockopt::Ipv4PacketInfo, &true)?;
    udp4.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, ports.echo)).into())?;
    udp4.set_nonblocking(true)?;
    let udp6 = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
    udp6.set_only_v6(true)?;
    udp6.set_reuse_address(true)?;
    setsockopt(&udp6, sockopt::Ipv6RecvPacketInfo, &true)?;
    udp6.bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, ports.echo)).into())?;
    udp6.set_nonblocking(true)?;
    Ok(Sockets {
        http: listener(ports.http)?,
        echo_tcp: listener(ports.echo)?,
        udp4,
        udp6,
    })
}

impl DestServers {
    /// Starts the servers of the dest called `name` inside `netns` on the default ports.
    pub fn start(netns: &Netns, name: &str) -> io::Result<Self> {
        Self::start_on(netns, name, ServerPorts::default())
    }

    /// Starts the servers inside `netns` on the given ports. The sockets are listening when
    /// this returns.
    pub fn start_on(netns: &Netns, name: &str, ports: ServerPorts) -> io::Result<Self> {
        let sockets = netns.run(|| open_sockets(ports))??;
        let shared = Arc::new(Shared {
            name: name.to_owned(),
            counters: Counters::default(),
            pattern: Pattern::new(),
            conns: Mutex::new(HashMap::new()),
            handlers: Mutex::new(Vec::new()),
        });
        let stop = Arc::new(Stop::new()?);
        let main = {
            let (shared, stop) = (shared.clone(), stop.clone());
            std::thread::Builder::new()
                .name(format!("srv-{name}"))
                .spawn(move || serve(&shared, &stop, &sockets))?
        };
        Ok(Self {
            shared,
            stop,
            main: Some(main),
        })
    }

    /// The dest's name, as served by `GET /`.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The counters so far.
    pub fn stats(&self) -> ServerStats {
        let c = &self.shared.counters;
        ServerStats {
            http_requests: c.http_requests.load(Ordering::Relaxed),
            tcp_echo_connections: c.tcp_echo_connections.load(Ordering::Relaxed),
            udp_datagrams: c.udp_datagrams.load(Ordering::Relaxed),
        }
    }

    /// Stops every server thread and closes every socket (dropping does the same).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.stop();
        if let Some(h) = self.main.take() {
            let _ = h.join();
        }
        for s in lock(&self.shared.conns).values() {
            let _ = s.shutdown(Shutdown::Both);
        }
        let handlers = std::mem::take(&mut *lock(&self.shared.handlers));
        for h in handlers {
            let _ = h.join();
        }
    }
}

impl Drop for DestServers {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The accept / datagram loop, until stopped.
fn serve(shared: &Arc<Shared>, stop: &Stop, s: &Sockets) {
    let mut next_id = 0u64;
    let mut buf = vec![0u8; 65536];
    loop {
        let fds = [
            s.http.as_fd(),
            s.echo_tcp.as_fd(),
            s.udp4.as_fd(),
            s.udp6.as_fd(),
        ];
        let ready = match stop.wait(&fds, None) {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => {
                eprintln!("rvs-lab {}: poll failed: {e}", shared.name);
                return;
            }
        };
        for i in ready {
            match i {
                0 | 1 => accept_all(
                    shared,
                    if i == 0 { &s.http } else { &s.echo_tcp },
                    i == 0,
                    &mut next_id,
                ),
                2 => echo_datagrams(shared, &s.udp4, false, &mut buf),
                _ => echo_datagrams(shared, &s.udp6, true, &mut buf),
            }
        }
        lock(&shared.handlers).retain(|h| !h.is_finished());
    }
}

fn accept_all(shared: &Arc<Shared>, listener: &Socket, http: bool, next_id: &mut u64) {
    loop {
        let stream: TcpStream = match listener.accept() {
            Ok((s, _)) => s.into(),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            // A connection reset before accept, or out of descriptors: try again on the next
            // wake-up rather than spin.
            Err(_) => return,
        };
        let id = *next_id;
        *next_id += 1;
        let Ok(clone) = stream.try_clone() else {
            continue;
        };
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_read_timeout(Some(CONN_IDLE));
        let _ = stream.set_write_timeout(Some(CONN_IDLE));
        lock(&shared.conns).insert(id, clone);
        if !http {
            shared
                .counters
                .tcp_echo_connections
                .fetch_add(1, Ordering::Relaxed);
        }
        let sh = shared.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("conn-{}", shared.name))
            .spawn(move || {
                let mut stream = stream;
                // Errors just end the connection: the peer went away or misbehaved.
                let _ = if http {
                    serve_http(&sh, &mut stream)
                } else {
                    serve_echo(&mut stream)
                };
                lock(&sh.conns).remove(&id);
            });
        match spawned {
            Ok(h) => lock(&shared.handlers).push(h),
            Err(_) => {
                lock(&shared.conns).remove(&id);
            }
        }
    }
}

fn serve_echo(stream: &mut TcpStream) -> io::Result<()> {
    let mut buf = vec![0u8; 65536];
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        stream.write_all(&buf[..n])?;
    }
}

fn serve_http(shared: &Shared, stream: &mut TcpStream) -> io::Result<()> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(end) = head_end(&buf) {
            break end;
        }
        if buf.len() > MAX_HEAD {
            return respond(shared, stream, 431, "Request Header Fields Too Large", b"");
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let req = match parse_request(&buf[..end]) {
        Ok(r) => r,
        Err(e) => return respond(shared, stream, 400, "Bad Request", e.as_bytes()),
    };
    let body_start = buf.split_off(end);
    let name = shared.name.clone();
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/") => respond(shared, stream, 200, "OK", format!("{name}\n").as_bytes()),
        ("GET", p) if p.starts_with("/bytes/") => {
            let Some(n) = p["/bytes/".len()..]
                .parse::<u64>()
                .ok()
                .filter(|n| *n <= MAX_BYTES)
            else {
                return respond(shared, stream, 400, "Bad Request", b"bad length\n");
            };
            count(shared);
            stream.write_all(response_head(200, "OK", n, &name).as_bytes())?;
            let mut off = 0u64;
            while off < n {
                let len = usize::try_from(n - off).unwrap_or(CHUNK).min(CHUNK);
                stream.write_all(shared.pattern.chunk(off, len))?;
                off += len as u64;
            }
            stream.flush()
        }
        ("POST", "/upload") => {
            let Some(len) = req.content_length else {
                return respond(shared, stream, 411, "Length Required", b"");
            };
            let mut sum = Fnv64::new();
            let mut got = body_start.len() as u64;
            sum.update(&body_start);
            let mut big = vec![0u8; 65536];
            while got < len {
                let want = usize::try_from(len - got)
                    .unwrap_or(big.len())
                    .min(big.len());
                let n = stream.read(&mut big[..want])?;
                if n == 0 {
                    return Ok(());
                }
                sum.update(&big[..n]);
                got += n as u64;
            }
            let body = upload_summary(got, sum.value());
            respond(shared, stream, 200, "OK", body.as_bytes())
        }
        (_, "/" | "/upload") => respond(shared, stream, 405, "Method Not Allowed", b""),
        _ => respond(shared, stream, 404, "Not Found", b""),
    }
}

fn count(shared: &Shared) {
    shared
        .counters
        .http_requests
        .fetch_add(1, Ordering::Relaxed);
}

fn respond(
    shared: &Shared,
    stream: &mut TcpStream,
    status: u16,
    reason: &str,
    body: &[u8],
) -> io::Result<()> {
    count(shared);
    let mut out = response_head(status, reason, body.len() as u64, &shared.name).into_bytes();
    out.extend_from_slice(body);
    stream.write_all(&out)?;
    stream.flush()
}

/// Echoes every queued datagram from the address it was sent to.
fn echo_datagrams(shared: &Shared, sock: &Socket, v6: bool, buf: &mut [u8]) {
    let fd = sock.as_raw_fd();
    loop {
        let mut cmsg = nix::cmsg_space!(nix::libc::in6_pktinfo);
        let (n, peer, local) = {
            let mut iov = [IoSliceMut::new(buf)];
            let msg = match recvmsg::<SockaddrStorage>(
                fd,
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::empty(),
            ) {
                Ok(m) => m,
                // WouldBlock: drained. Anything else (e.g. a queued ICMP error) ends this round.
                Err(_) => return,
            };
            let mut local = None;
            if let Ok(cmsgs) = msg.cmsgs() {
                for c in cmsgs {
                    match c {
                        ControlMessageOwned::Ipv4PacketInfo(pi) => local = Some(Local::V4(pi)),
                        ControlMessageOwned::Ipv6PacketInfo(pi) => local = Some(Local::V6(pi)),
                        _ => {}
                    }
                }
            }
            (msg.bytes, msg.address, local)
        };
        let Some(peer) = peer else { continue };
        // Counted before the answer leaves, so whoever got the echo sees the count.
        shared
            .counters
            .udp_datagrams
            .fetch_add(1, Ordering::Relaxed);
        let data = [IoSlice::new(&buf[..n])];
        let sent = match (local, v6) {
            (Some(Local::V4(pi)), false) => {
                let reply = nix::libc::in_pktinfo {
                    ipi_ifindex: 0,
                    ipi_spec_dst: pi.ipi_addr,
                    ipi_addr: nix::libc::in_addr { s_addr: 0 },
                };
                sendmsg(
                    fd,
                    &data,
                    &[ControlMessage::Ipv4PacketInfo(&reply)],
                    MsgFlags::empty(),
                    Some(&peer),
                )
            }
            (Some(Local::V6(pi)), true) => {
                let reply = nix::libc::in6_pktinfo {
                    ipi6_addr: pi.ipi6_addr,
                    ipi6_ifindex: 0,
                };
                sendmsg(
                    fd,
                    &data,
                    &[ControlMessage::Ipv6PacketInfo(&reply)],
                    MsgFlags::empty(),
                    Some(&peer),
                )
            }
            _ => sendmsg(fd, &data, &[], MsgFlags::empty(), Some(&peer)),
        };
        // A failed answer (no route back, say) is the client's to notice.
        let _ = sent;
    }
}

enum Local {
    V4(nix::libc::in_pktinfo),
    V6(nix::libc::in6_pktinfo),
}
