//! The small piece of HTTP/1.1 the lab's servers and clients speak to each other, and the byte
//! pattern and checksum they use to prove that a transfer arrived intact.
//!
//! Requests and responses always carry `Connection: close` (one TCP connection per request) and
//! a `Content-Length`; nothing else of HTTP (chunked bodies, keep-alive, pipelining) is needed.

/// Largest request or response head (request line or status line plus headers) accepted.
pub(crate) const MAX_HEAD: usize = 16 * 1024;

/// Largest chunk [`Pattern::chunk`] hands out.
pub(crate) const CHUNK: usize = 64 * 1024;

/// The pattern repeats every this many bytes (a prime, so it never lines up with buffer sizes).
const PERIOD: usize = 251;

/// Response header naming the dest that answered.
pub(crate) const DEST_HEADER: &str = "x-rvs-dest";

/// The body of `GET /bytes/N` and of uploads: byte `i` is `i mod 251`.
#[derive(Debug)]
pub(crate) struct Pattern {
    buf: Vec<u8>,
}

impl Pattern {
    /// Builds the pattern buffer.
    pub(crate) fn new() -> Self {
        let buf = (0..CHUNK + PERIOD).map(|i| (i % PERIOD) as u8).collect();
        Self { buf }
    }

    /// The `len` pattern bytes starting at stream offset `offset`; `len` is capped at [`CHUNK`].
    pub(crate) fn chunk(&self, offset: u64, len: usize) -> &[u8] {
        let start = (offset % PERIOD as u64) as usize;
        &self.buf[start..start + len.min(CHUNK)]
    }
}

/// FNV-1a (64 bit) over a byte stream: the upload checksum.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fnv64(u64);

impl Fnv64 {
    /// The empty-stream state.
    pub(crate) fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    /// Feeds bytes.
    pub(crate) fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// The checksum of everything fed so far.
    pub(crate) fn value(self) -> u64 {
        self.0
    }
}

/// Where the head ends: the index just past the first `\r\n\r\n`.
pub(crate) fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// A parsed request head.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct RequestHead {
    /// `GET`, `POST`, ...
    pub(crate) method: String,
    /// The request target, e.g. `/bytes/1024`.
    pub(crate) path: String,
    /// The `Content-Length` header, if present.
    pub(crate) content_length: Option<u64>,
}

/// A parsed response head.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ResponseHead {
    /// The status code.
    pub(crate) status: u16,
    /// The `Content-Length` header, if present.
    pub(crate) content_length: Option<u64>,
    /// The [`DEST_HEADER`] header, if present.
    pub(crate) dest: Option<String>,
}

/// `(lower-case name, value)` pairs of a head.
type Headers<'a> = Vec<(String, &'a str)>;

/// Splits a head into its first line and its headers.
fn lines(head: &[u8]) -> Result<(&str, Headers<'_>), String> {
    let text = std::str::from_utf8(head).map_err(|_| "head is not UTF-8".to_owned())?;
    let mut it = text.split("\r\n");
    let first = it.next().unwrap_or_default();
    let mut headers = Vec::new();
    for l in it.filter(|l| !l.is_empty()) {
        let (k, v) = l
            .split_once(':')
            .ok_or_else(|| format!("malformed header line {l:?}"))?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim()));
    }
    Ok((first, headers))
}

fn content_length(headers: &[(String, &str)]) -> Result<Option<u64>, String> {
    headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .map(|(_, v)| v.parse().map_err(|_| format!("bad Content-Length {v:?}")))
        .transpose()
}

/// Parses a request head (without the final empty line's bytes mattering).
pub(crate) fn parse_request(head: &[u8]) -> Result<RequestHead, String> {
    let (first, headers) = lines(head)?;
    let mut parts = first.split(' ');
    let (Some(method), Some(path), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(format!("malformed request line {first:?}"));
    };
    if !version.starts_with("HTTP/1.") || method.is_empty() || !path.starts_with('/') {
        return Err(format!("malformed request line {first:?}"));
    }
    Ok(RequestHead {
        method: method.to_owned(),
        path: path.to_owned(),
        content_length: content_length(&headers)?,
    })
}

/// Parses a response head.
pub(crate) fn parse_response(head: &[u8]) -> Result<ResponseHead, String> {
    let (first, headers) = lines(head)?;
    let mut parts = first.splitn(3, ' ');
    let (Some(version), Some(code)) = (parts.next(), parts.next()) else {
        return Err(format!("malformed status line {first:?}"));
    };
    let status = code
        .parse::<u16>()
        .ok()
        .filter(|_| version.starts_with("HTTP/1."))
        .ok_or_else(|| format!("malformed status line {first:?}"))?;
    Ok(ResponseHead {
        status,
        content_length: content_length(&headers)?,
        dest: headers
            .iter()
            .find(|(k, _)| k == DEST_HEADER)
            .map(|(_, v)| (*v).to_owned()),
    })
}

/// A response head with the given status, body length and dest name.
pub(crate) fn response_head(status: u16, reason: &str, len: u64, dest: &str) -> String {
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {len}\r\nX-RVS-Dest: {dest}\r\nConnection: close\r\n\r\n"
    )
}

/// The body of an upload response: the length received and its checksum.
pub(crate) fn upload_summary(len: u64, sum: u64) -> String {
    format!("{len} {sum:016x}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_is_continuous_across_chunks() {
        let p = Pattern::new();
        let whole: Vec<u8> = (0..1000u64).map(|i| (i % 251) as u8).collect();
        let mut got = Vec::new();
        let mut off = 0u64;
        for len in [1, 250, 251, 300, 198] {
            got.extend_from_slice(p.chunk(off, len));
            off += len as u64;
        }
        assert_eq!(got, whole);
        assert_eq!(p.chunk(7, CHUNK + 10).len(), CHUNK);
    }

    #[test]
    fn fnv_known_values() {
        // Reference values of FNV-1a 64.
        assert_eq!(Fnv64::new().value(), 0xcbf2_9ce4_8422_2325);
        let mut h = Fnv64::new();
        h.update(b"a");
        assert_eq!(h.value(), 0xaf63_dc4c_8601_ec8c);
        let mut h = Fnv64::new();
        h.update(b"foo");
        assert_eq!(h.value(), 0xdcb2_7518_fed9_d577);
    }

    #[test]
    fn requests() {
        let r = parse_request(b"GET /bytes/10 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!(
            r,
            RequestHead {
                method: "GET".into(),
                path: "/bytes/10".into(),
                content_length: None
            }
        );
        let r = parse_request(b"POST /upload HTTP/1.1\r\ncontent-LENGTH:  42 \r\n\r\n").unwrap();
        assert_eq!(r.content_length, Some(42));
        for bad in [
            &b"GET\r\n\r\n"[..],
            b"GET / HTTP/1.1 x\r\n\r\n",
            b"GET x HTTP/1.1\r\n\r\n",
            b"GET / SPDY/3\r\n\r\n",
            b"GET / HTTP/1.1\r\nno-colon\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"\xff\xfe / HTTP/1.1\r\n\r\n",
            b"",
        ] {
            assert!(parse_request(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn responses() {
        let head = response_head(200, "OK", 6, "dest1");
        let end = head_end(head.as_bytes()).unwrap();
        assert_eq!(end, head.len());
        let r = parse_response(head.as_bytes()).unwrap();
        assert_eq!(
            r,
            ResponseHead {
                status: 200,
                content_length: Some(6),
                dest: Some("dest1".into())
            }
        );
        assert!(parse_response(b"HTTP/1.1 abc OK\r\n\r\n").is_err());
        assert!(parse_response(b"ICY 200 OK\r\n\r\n").is_err());
        assert_eq!(parse_response(b"HTTP/1.0 404\r\n\r\n").unwrap().status, 404);
        assert_eq!(head_end(b"HTTP/1.1 200 OK\r\n"), None);
    }
}
