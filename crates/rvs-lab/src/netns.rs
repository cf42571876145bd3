//! Running code inside a lab namespace without starting a process: a short-lived thread joins the
//! namespace with `setns(2)` (which changes only that thread's network namespace) and creates the
//! sockets or devices there. A socket keeps the namespace it was created in for its whole life,
//! so the caller can use it from any thread afterwards.
//!
//! The namespace file is opened for each call and closed at once: a long-lived handle would keep
//! a deleted namespace (and its veths) alive.

use std::fs::File;
use std::io::{self, PipeReader, PipeWriter};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sched::{CloneFlags, setns};
use socket2::{Domain, Protocol, Socket, Type};

/// A named network namespace (`/run/netns/NAME`), entered by threads on demand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// The namespace called `name` (as listed by `ip netns list`).
    pub fn named(name: &str) -> Self {
        Self {
            name: name.to_owned(),
        }
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// Runs `f` on a new thread that has joined this namespace, and returns its result. A panic
    /// inside `f` is passed on to the caller.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> io::Result<T> {
        let file = File::open(self.path())
            .map_err(|e| io::Error::new(e.kind(), format!("netns {}: {e}", self.name)))?;
        std::thread::scope(|s| {
            let h = s.spawn(move || {
                enter(&file)?;
                drop(file);
                Ok(f())
            });
            match h.join() {
                Ok(r) => r,
                Err(p) => std::panic::resume_unwind(p),
            }
        })
    }

    /// Spawns a long-lived thread named `name` that joins this namespace and then runs `f`.
    /// Everything `f` creates (sockets, TUN devices, child processes) lives in the namespace.
    pub fn spawn<T: Send + 'static>(
        &self,
        name: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> io::Result<std::thread::JoinHandle<io::Result<T>>> {
        let file = File::open(self.path())
            .map_err(|e| io::Error::new(e.kind(), format!("netns {}: {e}", self.name)))?;
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                enter(&file)?;
                drop(file);
                Ok(f())
            })
    }

    /// Creates a socket inside this namespace.
    pub fn socket(
        &self,
        domain: Domain,
        ty: Type,
        protocol: Option<Protocol>,
    ) -> io::Result<Socket> {
        self.run(|| Socket::new(domain, ty, protocol))?
    }
}

fn enter(file: &File) -> io::Result<()> {
    setns(file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(io::Error::from)
}

/// A stop signal for server threads that wait in `poll(2)`: the threads include
/// [`Stop::fd`] in their poll set, and [`Stop::stop`] wakes them all at once by closing the
/// pipe's write end (the read end then polls as hung up).
#[derive(Debug)]
pub(crate) struct Stop {
    reader: PipeReader,
    writer: Mutex<Option<PipeWriter>>,
}

impl Stop {
    /// A new, not yet stopped signal.
    pub(crate) fn new() -> io::Result<Self> {
        let (reader, writer) = io::pipe()?;
        Ok(Self {
            reader,
            writer: Mutex::new(Some(writer)),
        })
    }

    /// Wakes every thread polling [`Stop::fd`]; idempotent.
    pub(crate) fn stop(&self) {
        let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        w.take();
    }

    /// Whether [`Stop::stop`] was called.
    pub(crate) fn is_stopped(&self) -> bool {
        self.writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
    }

    /// The descriptor to poll for readability (hang-up) alongside the thread's own sockets.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.reader.as_fd()
    }

    /// Waits until one of `fds` is readable or the signal is given, at most `timeout` (or
    /// forever). Returns the indexes of the readable descriptors, or `None` once stopped.
    pub(crate) fn wait(
        &self,
        fds: &[BorrowedFd<'_>],
        timeout: Option<Duration>,
    ) -> io::Result<Option<Vec<usize>>> {
        let mut set: Vec<PollFd<'_>> = fds
            .iter()
            .map(|fd| PollFd::new(*fd, PollFlags::POLLIN))
            .collect();
        set.push(PollFd::new(self.fd(), PollFlags::POLLIN));
        let timeout = match timeout {
            None => PollTimeout::NONE,
            Some(t) => PollTimeout::try_from(t).unwrap_or(PollTimeout::MAX),
        };
        loop {
            match poll(&mut set, timeout) {
                Ok(_) => break,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        let ready = |p: &PollFd<'_>| p.revents().is_some_and(|r| !r.is_empty());
        if set.last().is_some_and(ready) || self.is_stopped() {
            return Ok(None);
        }
        Ok(Some(
            set.iter()
                .take(fds.len())
                .enumerate()
                .filter(|(_, p)| ready(p))
                .map(|(i, _)| i)
                .collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn stop_wakes_a_waiting_thread() {
        let stop = std::sync::Arc::new(Stop::new().unwrap());
        let (r, _w) = io::pipe().unwrap();
        let s2 = stop.clone();
        let h = std::thread::spawn(move || s2.wait(&[r.as_fd()], None).unwrap());
        stop.stop();
        assert_eq!(h.join().unwrap(), None);
        assert!(stop.is_stopped());
    }

    #[test]
    fn wait_reports_readable_descriptors() {
        use std::io::Write;
        let stop = Stop::new().unwrap();
        let (r1, _w1) = io::pipe().unwrap();
        let (r2, mut w2) = io::pipe().unwrap();
        w2.write_all(b"x").unwrap();
        let got = stop.wait(&[r1.as_fd(), r2.as_fd()], None).unwrap();
        assert_eq!(got, Some(vec![1]));
        let got = stop
            .wait(&[r1.as_fd()], Some(Duration::from_millis(1)))
            .unwrap();
        assert_eq!(got, Some(vec![]));
    }
}
