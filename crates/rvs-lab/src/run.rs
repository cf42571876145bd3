//! Running external commands with a time limit and checked exit status.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::error::{LabError, Result};

/// Time limit for each `ip`/`sysctl`/`kill` command the lab runs itself.
pub(crate) const TOOL_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a running child is polled.
const POLL: Duration = Duration::from_millis(5);

/// A human-readable rendering of a command line (for errors only; never passed to a shell).
pub(crate) fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// A started child whose stdout and stderr are drained by background threads, so a chatty child
/// never blocks on a full pipe.
pub(crate) struct Running {
    pub(crate) child: Child,
    pub(crate) cmd: String,
    out: Option<JoinHandle<Vec<u8>>>,
    err: Option<JoinHandle<Vec<u8>>>,
}

fn drain<R: Read + Send + 'static>(r: Option<R>) -> Option<JoinHandle<Vec<u8>>> {
    r.map(|mut r| {
        thread::spawn(move || {
            let mut v = Vec::new();
            // A read error just ends the capture; what was read so far is kept.
            let _ = r.read_to_end(&mut v);
            v
        })
    })
}

impl Running {
    /// Starts `cmd` with stdin closed and stdout/stderr captured.
    pub(crate) fn start(cmd: &mut Command) -> Result<Self> {
        let desc = describe(cmd);
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| LabError::Io {
                cmd: desc.clone(),
                source,
            })?;
        let out = drain(child.stdout.take());
        let err = drain(child.stderr.take());
        Ok(Self {
            child,
            cmd: desc,
            out,
            err,
        })
    }

    /// Waits up to `timeout` for the child to exit; on timeout kills it and returns
    /// [`LabError::Timeout`]. Does not look at the exit status.
    pub(crate) fn wait(mut self, timeout: Duration) -> Result<Output> {
        let deadline = Instant::now() + timeout;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return Err(LabError::Timeout {
                        cmd: self.cmd.clone(),
                        after: timeout,
                    });
                }
                Ok(None) => thread::sleep(POLL),
                Err(source) => {
                    return Err(LabError::Io {
                        cmd: self.cmd.clone(),
                        source,
                    });
                }
            }
        };
        // The pipes close when the child exits, unless it left descendants holding them; the
        // capture is then abandoned at the deadline (plus a short grace) rather than waited for.
        let grace = deadline.max(Instant::now()) + Duration::from_secs(1);
        let stdout = join_by(self.out.take(), grace);
        let stderr = join_by(self.err.take(), grace);
        Ok(Output {
            status,
            stdout,
            stderr,
        })
    }
}

fn join_by(h: Option<JoinHandle<Vec<u8>>>, deadline: Instant) -> Vec<u8> {
    let Some(h) = h else { return Vec::new() };
    while !h.is_finished() {
        if Instant::now() >= deadline {
            return Vec::new();
        }
        thread::sleep(POLL);
    }
    h.join().unwrap_or_default()
}

/// Turns a non-zero exit status into [`LabError::CommandFailed`].
pub(crate) fn check(cmd: String, out: Output) -> Result<Output> {
    if out.status.success() {
        Ok(out)
    } else {
        Err(failed(cmd, out.status, &out.stderr))
    }
}

pub(crate) fn failed(cmd: String, status: ExitStatus, stderr: &[u8]) -> LabError {
    LabError::CommandFailed {
        cmd,
        status,
        stderr: String::from_utf8_lossy(stderr).trim().to_owned(),
    }
}

/// Runs `cmd` to completion within `timeout` and checks its exit status.
pub(crate) fn run_checked(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    let r = Running::start(cmd)?;
    let desc = r.cmd.clone();
    check(desc, r.wait(timeout)?)
}
