//! Client operations run from a lab host against the [servers](crate::DestServers), returning
//! typed results: what an application on the client would see.
//!
//! Every operation opens its own socket inside the client's namespace (one TCP connection per
//! HTTP request) and is bounded by the `timeout` it is given, as a whole.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Type};

use crate::http::upload_summary;
use crate::http::{CHUNK, Fnv64, MAX_HEAD, Pattern, ResponseHead, head_end, parse_response};
use crate::netns::Netns;

/// Why a client operation failed, as the application sees it.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The connection was refused (TCP RST to the SYN, or an ICMP port unreachable).
    #[error("connection refused")]
    Refused,
    /// The connection was reset after it was established (`ECONNRESET`, or `EPIPE` on a write).
    #[error("connection reset after {progress} bytes")]
    Reset {
        /// Body bytes received (downloads) or sent (uploads) before the reset.
        progress: u64,
    },
    /// An ICMP error made the destination unreachable (`EHOSTUNREACH`, `ENETUNREACH`, ...).
    #[error("unreachable: {0}")]
    Unreachable(io::Error),
    /// No connection was established before the deadline (SYNs unanswered).
    #[error("connect did not complete within {0:?}")]
    ConnectTimeout(Duration),
    /// The connection was established but the operation did not finish before the deadline:
    /// the transfer stalled (black hole, lost path MTU, dropped packets).
    #[error("stalled: not finished before the deadline, after {progress} bytes")]
    Stalled {
        /// Body bytes received (downloads) or sent (uploads) before the deadline.
        progress: u64,
    },
    /// The server closed the connection before the response was complete.
    #[error("connection closed early after {progress} bytes")]
    Closed {
        /// Body bytes received before the close.
        progress: u64,
    },
    /// The response is not what the lab's servers send (bad head, wrong length, corrupted
    /// bytes, wrong checksum).
    #[error("bad response: {0}")]
    Protocol(String),
    /// Any other local error (creating the socket, entering the namespace, ...).
    #[error("client i/o error: {0}")]
    Io(io::Error),
}

/// An HTTP response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpReply {
    /// The status code.
    pub status: u16,
    /// The body.
    pub body: Vec<u8>,
    /// The dest that answered (its `X-RVS-Dest` header), e.g. `dest1`.
    pub dest: Option<String>,
}

/// A completed download or upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transfer {
    /// From the start of the connect to the last byte.
    pub elapsed: Duration,
    /// Body bytes moved (equal to what was asked for).
    pub bytes: u64,
    /// The dest that served it.
    pub dest: Option<String>,
}

/// Runs client operations from one lab host.
#[derive(Clone, Debug)]
pub struct Client {
    netns: Netns,
}

/// Where an operation is, to name an I/O error correctly.
#[derive(Clone, Copy)]
enum Phase {
    Connect,
    Transfer(u64),
}

fn classify(e: io::Error, phase: Phase, limit: Duration) -> ClientError {
    use io::ErrorKind as K;
    let progress = match phase {
        Phase::Connect => 0,
        Phase::Transfer(p) => p,
    };
    match (e.kind(), phase) {
        (K::ConnectionRefused, _) => ClientError::Refused,
        (K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe, _) => {
            ClientError::Reset { progress }
        }
        (K::HostUnreachable | K::NetworkUnreachable | K::AddrNotAvailable, _) => {
            ClientError::Unreachable(e)
        }
        (K::WouldBlock | K::TimedOut, Phase::Connect) => ClientError::ConnectTimeout(limit),
        (K::WouldBlock | K::TimedOut, Phase::Transfer(_)) => ClientError::Stalled { progress },
        (K::UnexpectedEof, Phase::Transfer(_)) => ClientError::Closed { progress },
        _ => match e.raw_os_error() {
            // Other ICMP-reported errors (host down, protocol unreachable, ...).
            Some(
                nix::libc::EHOSTDOWN
                | nix::libc::ENONET
                | nix::libc::EPROTO
                | nix::libc::ENOPROTOOPT,
            ) => ClientError::Unreachable(e),
            _ => ClientError::Io(e),
        },
    }
}

/// `read`, again when a signal interrupted it. The kernel never restarts a socket read that
/// has a timeout (`SO_RCVTIMEO`, which every operation here sets): it fails with `EINTR`
/// (signal(7)), also when the process was merely stopped or frozen and then resumed — which
/// is no error of the connection.
fn read_retrying(s: &mut TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match s.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

/// A deadline for one operation.
#[derive(Clone, Copy)]
struct Deadline {
    end: Instant,
    limit: Duration,
}

impl Deadline {
    fn new(limit: Duration) -> Self {
        Self {
            end: Instant::now() + limit,
            limit,
        }
    }

    /// Time left, or `None` once passed.
    fn left(&self) -> Option<Duration> {
        self.end
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
    }

    /// Sets the stream's read and write timeouts to the time left; fails as stalled once the
    /// deadline has passed.
    fn arm(&self, s: &TcpStream, progress: u64) -> Result<(), ClientError> {
        let left = self.left().ok_or(ClientError::Stalled { progress })?;
        s.set_read_timeout(Some(left))
            .and_then(|()| s.set_write_timeout(Some(left)))
            .map_err(ClientError::Io)
    }
}

impl Client {
    /// A client running in the namespace `netns`.
    pub fn new(netns: Netns) -> Self {
        Self { netns }
    }

    /// The namespace the client runs in.
    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    fn connect(&self, to: SocketAddr, dl: &Deadline) -> Result<TcpStream, ClientError> {
        let sock = self
            .netns
            .socket(Domain::for_address(to), Type::STREAM, Some(Protocol::TCP))
            .map_err(ClientError::Io)?;
        let left = dl.left().ok_or(ClientError::ConnectTimeout(dl.limit))?;
        sock.connect_timeout(&to.into(), left)
            .map_err(|e| classify(e, Phase::Connect, dl.limit))?;
        let s: TcpStream = sock.into();
        let _ = s.set_nodelay(true);
        Ok(s)
    }

    /// Sends one request (`Connection: close`) and reads the response head; returns the
    /// stream, the head and the body bytes already read.
    fn request(
        &self,
        to: SocketAddr,
        head: &str,
        body: Option<(u64, &Pattern)>,
        dl: &Deadline,
    ) -> Result<(TcpStream, ResponseHead, Vec<u8>), ClientError> {
        let mut s = self.connect(to, dl)?;
        dl.arm(&s, 0)?;
        s.write_all(head.as_bytes())
            .map_err(|e| classify(e, Phase::Transfer(0), dl.limit))?;
        if let Some((len, pattern)) = body {
            let mut off = 0u64;
            while off < len {
                dl.arm(&s, off)?;
                let n = usize::try_from(len - off).unwrap_or(CHUNK).min(CHUNK);
                s.write_all(pattern.chunk(off, n))
                    .map_err(|e| classify(e, Phase::Transfer(off), dl.limit))?;
                off += n as u64;
            }
        }
        let mut buf = Vec::with_capacity(4096);
        let mut chunk = [0u8; 4096];
        let end = loop {
            if let Some(end) = head_end(&buf) {
                break end;
            }
            if buf.len() > MAX_HEAD {
                return Err(ClientError::Protocol("response head too long".into()));
            }
            dl.arm(&s, 0)?;
            let n = read_retrying(&mut s, &mut chunk)
                .map_err(|e| classify(e, Phase::Transfer(0), dl.limit))?;
            if n == 0 {
                return Err(ClientError::Closed { progress: 0 });
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = parse_response(&buf[..end]).map_err(ClientError::Protocol)?;
        let rest = buf.split_off(end);
        Ok((s, head, rest))
    }

    /// `GET path` from `addr:port`; the whole body is returned.
    pub fn http_get(
        &self,
        addr: IpAddr,
        port: u16,
        path: &str,
        timeout: Duration,
    ) -> Result<HttpReply, ClientError> {
        check_path(path)?;
        let dl = Deadline::new(timeout);
        let to = SocketAddr::new(addr, port);
        let head = format!("GET {path} HTTP/1.1\r\nHost: {to}\r\nConnection: close\r\n\r\n");
        let (mut s, head, mut body) = self.request(to, &head, None, &dl)?;
        let mut chunk = vec![0u8; CHUNK];
        loop {
            if head.content_length.is_some_and(|n| body.len() as u64 >= n) {
                break;
            }
            dl.arm(&s, body.len() as u64)?;
            let n = read_retrying(&mut s, &mut chunk)
                .map_err(|e| classify(e, Phase::Transfer(body.len() as u64), dl.limit))?;
            if n == 0 {
                if head.content_length.is_some() {
                    return Err(ClientError::Closed {
                        progress: body.len() as u64,
                    });
                }
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
        if let Some(n) = head.content_length {
            body.truncate(usize::try_from(n).unwrap_or(usize::MAX));
        }
        let _ = s.shutdown(Shutdown::Both);
        Ok(HttpReply {
            status: head.status,
            body,
            dest: head.dest,
        })
    }

    /// Downloads `bytes` bytes (`GET /bytes/N`), checking every byte, without keeping them.
    pub fn download(
        &self,
        addr: IpAddr,
        port: u16,
        bytes: u64,
        timeout: Duration,
    ) -> Result<Transfer, ClientError> {
        let start = Instant::now();
        let dl = Deadline::new(timeout);
        let to = SocketAddr::new(addr, port);
        let head =
            format!("GET /bytes/{bytes} HTTP/1.1\r\nHost: {to}\r\nConnection: close\r\n\r\n");
        let (mut s, head, first) = self.request(to, &head, None, &dl)?;
        expect_ok(&head, Some(bytes))?;
        let pattern = Pattern::new();
        let mut got = 0u64;
        let check = |data: &[u8], got: &mut u64| -> Result<(), ClientError> {
            let data = &data[..data
                .len()
                .min(usize::try_from(bytes - *got).unwrap_or(usize::MAX))];
            for part in data.chunks(CHUNK) {
                if part != pattern.chunk(*got, part.len()) {
                    return Err(ClientError::Protocol(format!(
                        "corrupted body near byte {}",
                        *got
                    )));
                }
                *got += part.len() as u64;
            }
            Ok(())
        };
        check(&first, &mut got)?;
        let mut buf = vec![0u8; CHUNK];
        while got < bytes {
            dl.arm(&s, got)?;
            let n = read_retrying(&mut s, &mut buf)
                .map_err(|e| classify(e, Phase::Transfer(got), dl.limit))?;
            if n == 0 {
                return Err(ClientError::Closed { progress: got });
            }
            check(&buf[..n], &mut got)?;
        }
        let _ = s.shutdown(Shutdown::Both);
        Ok(Transfer {
            elapsed: start.elapsed(),
            bytes,
            dest: head.dest,
        })
    }

    /// Uploads `bytes` pattern bytes (`POST /upload`) and checks the length and checksum the
    /// server reports.
    pub fn upload(
        &self,
        addr: IpAddr,
        port: u16,
        bytes: u64,
        timeout: Duration,
    ) -> Result<Transfer, ClientError> {
        let start = Instant::now();
        let dl = Deadline::new(timeout);
        let to = SocketAddr::new(addr, port);
        let head = format!(
            "POST /upload HTTP/1.1\r\nHost: {to}\r\nContent-Length: {bytes}\r\n\
             Connection: close\r\n\r\n"
        );
        let pattern = Pattern::new();
        let (mut s, head, mut body) = self.request(to, &head, Some((bytes, &pattern)), &dl)?;
        expect_ok(&head, None)?;
        let mut chunk = [0u8; 256];
        while head.content_length.is_none_or(|n| (body.len() as u64) < n) {
            dl.arm(&s, bytes)?;
            let n = read_retrying(&mut s, &mut chunk)
                .map_err(|e| classify(e, Phase::Transfer(bytes), dl.limit))?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
            if body.len() > MAX_HEAD {
                return Err(ClientError::Protocol("upload answer too long".into()));
            }
        }
        let mut sum = Fnv64::new();
        let mut off = 0u64;
        while off < bytes {
            let n = usize::try_from(bytes - off).unwrap_or(CHUNK).min(CHUNK);
            sum.update(pattern.chunk(off, n));
            off += n as u64;
        }
        let want = upload_summary(bytes, sum.value());
        if body != want.as_bytes() {
            return Err(ClientError::Protocol(format!(
                "upload answer {:?}, expected {want:?}",
                String::from_utf8_lossy(&body)
            )));
        }
        let _ = s.shutdown(Shutdown::Both);
        Ok(Transfer {
            elapsed: start.elapsed(),
            bytes,
            dest: head.dest,
        })
    }

    /// Sends `payload` from a connected UDP socket and returns the first datagram that comes
    /// back. An ICMP port unreachable surfaces as [`io::ErrorKind::ConnectionRefused`], no
    /// answer within `timeout` as [`io::ErrorKind::TimedOut`].
    pub fn udp_request(
        &self,
        addr: IpAddr,
        port: u16,
        payload: &[u8],
        timeout: Duration,
    ) -> io::Result<Vec<u8>> {
        let to = SocketAddr::new(addr, port);
        let sock: UdpSocket = self
            .netns
            .socket(Domain::for_address(to), Type::DGRAM, Some(Protocol::UDP))?
            .into();
        sock.connect(to)?;
        sock.set_read_timeout(Some(timeout.max(Duration::from_millis(1))))?;
        sock.send(payload)?;
        let mut buf = vec![0u8; 65536];
        let got = loop {
            match sock.recv(&mut buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => break r,
            }
        };
        match got {
            Ok(n) => {
                buf.truncate(n);
                Ok(buf)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no UDP answer from {to} within {timeout:?}"),
            )),
            Err(e) => Err(e),
        }
    }

    /// Opens a long-lived TCP connection (to a TCP echo server) within `timeout`.
    pub fn tcp_connect(
        &self,
        addr: IpAddr,
        port: u16,
        timeout: Duration,
    ) -> Result<TcpSession, ClientError> {
        let dl = Deadline::new(timeout);
        let stream = self.connect(SocketAddr::new(addr, port), &dl)?;
        Ok(TcpSession { stream })
    }
}

/// A long-lived TCP connection from a lab host, for idle-timeout and reset scenarios:
/// connect, [`echo`](TcpSession::echo), stay idle, echo again and observe
/// [`ClientError::Reset`].
#[derive(Debug)]
pub struct TcpSession {
    stream: TcpStream,
}

impl TcpSession {
    /// Sends `data` and waits until the echo server has sent the same bytes back.
    pub fn echo(&mut self, data: &[u8], timeout: Duration) -> Result<(), ClientError> {
        let dl = Deadline::new(timeout);
        dl.arm(&self.stream, 0)?;
        self.stream
            .write_all(data)
            .map_err(|e| classify(e, Phase::Transfer(0), dl.limit))?;
        let mut back = vec![0u8; data.len()];
        let mut got = 0usize;
        while got < back.len() {
            dl.arm(&self.stream, got as u64)?;
            match read_retrying(&mut self.stream, &mut back[got..]) {
                Ok(0) => {
                    return Err(ClientError::Closed {
                        progress: got as u64,
                    });
                }
                Ok(n) => got += n,
                Err(e) => return Err(classify(e, Phase::Transfer(got as u64), dl.limit)),
            }
        }
        if back != data {
            return Err(ClientError::Protocol(
                "echo returned different bytes".into(),
            ));
        }
        Ok(())
    }

    /// The underlying stream, for anything else.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// The client's address and port of this connection.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.stream.local_addr()
    }
}

fn check_path(path: &str) -> Result<(), ClientError> {
    if path.starts_with('/') && path.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(ClientError::Protocol(format!(
            "invalid request path {path:?}"
        )))
    }
}

fn expect_ok(head: &ResponseHead, len: Option<u64>) -> Result<(), ClientError> {
    if head.status != 200 {
        return Err(ClientError::Protocol(format!("status {}", head.status)));
    }
    if len.is_some() && head.content_length != len {
        return Err(ClientError::Protocol(format!(
            "Content-Length {:?}, expected {len:?}",
            head.content_length
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_classified_as_the_application_sees_them() {
        let t = Duration::from_secs(1);
        let e = |k| io::Error::from(k);
        use io::ErrorKind as K;
        assert!(matches!(
            classify(e(K::ConnectionRefused), Phase::Connect, t),
            ClientError::Refused
        ));
        assert!(matches!(
            classify(e(K::ConnectionReset), Phase::Transfer(5), t),
            ClientError::Reset { progress: 5 }
        ));
        assert!(matches!(
            classify(e(K::BrokenPipe), Phase::Transfer(0), t),
            ClientError::Reset { progress: 0 }
        ));
        assert!(matches!(
            classify(e(K::TimedOut), Phase::Connect, t),
            ClientError::ConnectTimeout(_)
        ));
        assert!(matches!(
            classify(e(K::WouldBlock), Phase::Transfer(9), t),
            ClientError::Stalled { progress: 9 }
        ));
        assert!(matches!(
            classify(
                io::Error::from_raw_os_error(nix::libc::EHOSTUNREACH),
                Phase::Connect,
                t
            ),
            ClientError::Unreachable(_)
        ));
        assert!(matches!(
            classify(
                io::Error::from_raw_os_error(nix::libc::EPROTO),
                Phase::Transfer(1),
                t
            ),
            ClientError::Unreachable(_)
        ));
        assert!(matches!(
            classify(e(K::PermissionDenied), Phase::Connect, t),
            ClientError::Io(_)
        ));
    }

    #[test]
    fn paths_are_checked() {
        assert!(check_path("/bytes/1").is_ok());
        assert!(check_path("bytes").is_err());
        assert!(check_path("/a b").is_err());
        assert!(check_path("/a\r\nHost: x").is_err());
    }
}
