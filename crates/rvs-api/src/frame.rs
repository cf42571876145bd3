//! Framing: one JSON document per line, with a size limit on what is read.

use std::io::{self, BufRead, Read, Write};

use serde::Serialize;

/// Why a message could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer closed the connection before sending anything.
    #[error("connection closed before a message was received")]
    Empty,
    /// The message is longer than the limit.
    #[error("message larger than {limit} bytes")]
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// Reading failed (including a read timeout).
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Read one message: bytes up to a `\n` (not included) or to the end of the stream, at most
/// `limit` bytes. Never reads more than `limit + 1` bytes from `r`.
pub fn read_message<R: BufRead>(r: &mut R, limit: usize) -> Result<Vec<u8>, FrameError> {
    let mut buf = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    r.take(cap).read_until(b'\n', &mut buf)?;
    if buf.last() == Some(&b'\n') {
        buf.pop();
    } else if buf.len() > limit {
        return Err(FrameError::TooLarge { limit });
    } else if buf.is_empty() {
        return Err(FrameError::Empty);
    }
    if buf.len() > limit {
        return Err(FrameError::TooLarge { limit });
    }
    Ok(buf)
}

/// Write one message: `msg` as JSON on one line, then `\n`, then flush.
pub fn write_message<W: Write, T: Serialize>(w: &mut W, msg: &T) -> io::Result<()> {
    // serde_json escapes control characters in strings, so the document holds no raw newline.
    let mut bytes = serde_json::to_vec(msg).map_err(io::Error::other)?;
    bytes.push(b'\n');
    w.write_all(&bytes)?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_one_line_and_stops() {
        let mut r = io::Cursor::new(b"{\"a\":1}\nrest".to_vec());
        assert_eq!(read_message(&mut r, 100).unwrap(), b"{\"a\":1}");
        assert_eq!(read_message(&mut r, 100).unwrap(), b"rest");
        assert!(matches!(read_message(&mut r, 100), Err(FrameError::Empty)));
    }

    #[test]
    fn limit_is_exact() {
        let mut r = io::Cursor::new(b"12345\n".to_vec());
        assert_eq!(read_message(&mut r, 5).unwrap(), b"12345");
        let mut r = io::Cursor::new(b"123456\n".to_vec());
        assert!(matches!(
            read_message(&mut r, 5),
            Err(FrameError::TooLarge { limit: 5 })
        ));
        // Without a newline at all, only limit + 1 bytes are consumed.
        let mut r = io::Cursor::new(vec![b'x'; 1000]);
        assert!(matches!(
            read_message(&mut r, 10),
            Err(FrameError::TooLarge { .. })
        ));
        assert_eq!(r.position(), 11);
    }

    #[test]
    fn written_messages_are_one_line() {
        let mut out = Vec::new();
        write_message(&mut out, &"two\nlines").unwrap();
        assert_eq!(out, b"\"two\\nlines\"\n");
    }
}
