//! A frame buffer with headroom, so encapsulation can prepend headers without moving the
//! packet (the shape of Linux's skb headroom, without its complexity).

/// Bytes reserved in front of every frame for headers the director prepends (an outer IPv6
/// header is 40; 128 leaves room for VLAN tags and future encapsulations).
pub const HEADROOM: usize = 128;

/// An owned frame: `buf[start..start + len]` holds the bytes, from the Ethernet header on.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    buf: Vec<u8>,
    start: usize,
    len: usize,
}

impl core::fmt::Debug for Frame {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Frame({} bytes: {:02x?})", self.len, self.data())
    }
}

impl Frame {
    /// An empty frame with the standard headroom and room for `capacity` bytes after it.
    pub fn with_capacity(capacity: usize) -> Frame {
        Frame {
            buf: vec![0; HEADROOM + capacity],
            start: HEADROOM,
            len: 0,
        }
    }

    /// A frame holding a copy of `bytes`, with headroom in front.
    pub fn from_bytes(bytes: &[u8]) -> Frame {
        let mut f = Frame::with_capacity(bytes.len());
        f.set(bytes);
        f
    }

    /// Replace the contents with `bytes` (headroom restored).
    pub fn set(&mut self, bytes: &[u8]) {
        let need = HEADROOM + bytes.len();
        if self.buf.len() < need {
            self.buf.resize(need, 0);
        }
        self.start = HEADROOM;
        self.len = bytes.len();
        self.buf[HEADROOM..need].copy_from_slice(bytes);
    }

    /// The frame's bytes.
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }

    /// The frame's bytes, for in-place rewriting.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.start + self.len]
    }

    /// Length in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the frame holds no bytes.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Grow the frame by `n` bytes at the front (using headroom, or moving the data when the
    /// headroom is exhausted). The new bytes are zero-initialised only when data had to move.
    pub fn push_front(&mut self, n: usize) {
        if self.start >= n {
            self.start -= n;
        } else {
            let mut buf = vec![0; HEADROOM + n + self.len];
            buf[HEADROOM + n..].copy_from_slice(self.data());
            self.buf = buf;
            self.start = HEADROOM;
        }
        self.len += n;
    }

    /// Cut the frame to `len` bytes (no-op when already shorter).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_front_uses_headroom_then_moves() {
        let mut f = Frame::from_bytes(&[1, 2, 3]);
        f.push_front(2);
        f.data_mut()[..2].copy_from_slice(&[8, 9]);
        assert_eq!(f.data(), &[8, 9, 1, 2, 3]);
        f.push_front(HEADROOM + 10);
        assert_eq!(f.len(), HEADROOM + 15);
        assert_eq!(&f.data()[HEADROOM + 10..], &[8, 9, 1, 2, 3]);
        f.truncate(3);
        assert_eq!(f.len(), 3);
        f.set(&[7]);
        assert_eq!(f.data(), &[7]);
    }
}
