//! The accept loop the daemon's two small servers share (the control socket and `/metrics`):
//! poll the listener with a short timeout so a stop flag is seen promptly, accept every
//! pending client, log accept failures at most once per interval with the count of those not
//! logged, and count live clients so a server can refuse the ones over its limit.

use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// How often the loop looks at its stop flag.
const STOP_POLL: Duration = Duration::from_millis(200);

/// Rate limit of the loop's own error messages.
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// A non-blocking listener whose clients the loop accepts.
pub(crate) trait Listener: AsFd {
    /// The accepted connection.
    type Stream;
    /// Accept one pending client (`WouldBlock` when there is none).
    fn accept_one(&self) -> io::Result<Self::Stream>;
}

impl Listener for UnixListener {
    type Stream = UnixStream;
    fn accept_one(&self) -> io::Result<UnixStream> {
        self.accept().map(|(s, _)| s)
    }
}

impl Listener for TcpListener {
    type Stream = TcpStream;
    fn accept_one(&self) -> io::Result<TcpStream> {
        self.accept().map(|(s, _)| s)
    }
}

/// Accept clients of `listener` until `stop` is set, handing each to `dispatch` with the
/// live-client count (see [`ClientSlot`]). `what` names the server in log lines.
pub(crate) fn accept_loop<L: Listener>(
    listener: &L,
    what: &str,
    stop: &AtomicBool,
    mut dispatch: impl FnMut(L::Stream, &Arc<AtomicUsize>),
) {
    let active = Arc::new(AtomicUsize::new(0));
    let mut last_error_log: Option<Instant> = None;
    let mut suppressed = 0u64;
    let timeout =
        nix::poll::PollTimeout::try_from(STOP_POLL).unwrap_or(nix::poll::PollTimeout::MAX);
    while !stop.load(Ordering::Acquire) {
        let mut fds = [nix::poll::PollFd::new(
            listener.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        // EINTR and friends: just look at the flag and poll again.
        if !matches!(nix::poll::poll(&mut fds, timeout), Ok(n) if n > 0) {
            continue;
        }
        loop {
            match listener.accept_one() {
                Ok(stream) => dispatch(stream, &active),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Out of file descriptors and the like: log (rate-limited), back off.
                    if last_error_log.is_none_or(|t| t.elapsed() >= ERROR_LOG_INTERVAL) {
                        tracing::warn!(
                            suppressed,
                            "{what}: accept failed: {e} (at most one line per 10 s)"
                        );
                        last_error_log = Some(Instant::now());
                        suppressed = 0;
                    } else {
                        suppressed += 1;
                    }
                    thread::sleep(Duration::from_millis(100));
                    break;
                }
            }
        }
    }
}

/// Counts a client as live while it exists: taken when its thread starts, released when it
/// ends, however it ends.
pub(crate) struct ClientSlot(Arc<AtomicUsize>);

impl ClientSlot {
    /// Count one more client; returns the slot and how many were live before it.
    pub(crate) fn take(active: &Arc<AtomicUsize>) -> (ClientSlot, usize) {
        let before = active.fetch_add(1, Ordering::AcqRel);
        (ClientSlot(Arc::clone(active)), before)
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
