//! A blocking client: one request, one response, over the daemon's abstract socket.

use std::io::{self, BufReader};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixStream};
use std::time::Duration;

use crate::frame::{FrameError, read_message, write_message};
use crate::{MAX_RESPONSE_BYTES, Request, Response};

/// How long a client waits for the daemon's answer (a restore of a large file takes a while).
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(120);

/// Why a request could not be exchanged with the daemon (as opposed to refused by it: that is
/// an `Err` inside the [`Response`]).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No daemon listens on the socket (or the name is invalid).
    #[error("cannot connect to rvsd control socket @{name}: {source}")]
    Connect {
        /// The abstract socket name.
        name: String,
        /// The cause (`Connection refused` when no daemon runs in this network namespace).
        source: io::Error,
    },
    /// Sending the request or reading the answer failed.
    #[error("talking to rvsd: {0}")]
    Io(#[from] FrameError),
    /// The answer was not a response of this protocol.
    #[error("invalid response from rvsd: {0}")]
    Decode(#[from] serde_json::Error),
}

/// The address of the abstract socket `name`.
pub fn socket_addr(name: &str) -> io::Result<SocketAddr> {
    SocketAddr::from_abstract_name(name.as_bytes())
}

/// Connect to the daemon listening on the abstract socket `name`.
pub fn connect(name: &str) -> Result<UnixStream, ClientError> {
    let err = |source| ClientError::Connect {
        name: name.to_string(),
        source,
    };
    let addr = socket_addr(name).map_err(err)?;
    UnixStream::connect_addr(&addr).map_err(err)
}

/// Send `req` to the daemon on `name` and return its response.
pub fn call(name: &str, req: &Request) -> Result<Response, ClientError> {
    let mut stream = connect(name)?;
    stream
        .set_read_timeout(Some(RESPONSE_TIMEOUT))
        .map_err(FrameError::Io)?;
    // The daemon may answer without reading everything (too many clients, a request too
    // large) and close: the write then fails, but its answer is there to read.
    let sent = write_message(&mut stream, req);
    let mut r = BufReader::new(stream);
    match read_message(&mut r, MAX_RESPONSE_BYTES) {
        Ok(line) => Ok(serde_json::from_slice(&line)?),
        Err(e) => Err(match sent {
            Err(w) => FrameError::Io(w).into(),
            Ok(()) => e.into(),
        }),
    }
}
