//! Seeded 64-bit hashing for the hashing schedulers (`sh`, `dh`, `mh`).
//!
//! Small, fast and deterministic: the seed is the only source of variation (no `RandomState`),
//! so a replay or a second director with the same seed maps flows exactly as the first did.
//! The absorb step is the folded multiply of wyhash/foldhash (the 128-bit product of the state
//! xor the input word with an odd constant, high half xored into low half); the finaliser is
//! splitmix64's, a bijection that spreads every input bit over the whole output, so taking the
//! result modulo a small table size (256, or a prime) gives evenly filled buckets.
//!
//! Not a cryptographic hash: the seed keeps the mapping private to a director, it does not stop
//! a client that can observe the mapping from steering its flows.

use core::net::IpAddr;

/// First odd constant (wyhash's `P0`).
const P0: u64 = 0xa076_1d64_78bd_642f;
/// Second odd constant (wyhash's `P1`).
const P1: u64 = 0xe703_7ed1_a0b4_28db;

/// The 128-bit product of `a` and `b` folded to 64 bits (low half xor high half).
#[inline]
const fn folded_multiply(a: u64, b: u64) -> u64 {
    let r = (a as u128).wrapping_mul(b as u128);
    (r as u64) ^ ((r >> 64) as u64)
}

/// splitmix64's finaliser: a bijective mix of all 64 bits.
#[inline]
pub const fn mix64(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A seeded hasher over 64-bit words, used by value: `FlowHasher::new(seed).addr(a).word(w)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowHasher {
    /// Running state.
    state: u64,
}

impl FlowHasher {
    /// A hasher keyed by `seed`.
    #[inline]
    pub const fn new(seed: u64) -> FlowHasher {
        FlowHasher {
            state: mix64(seed ^ P0),
        }
    }

    /// Absorb one 64-bit word.
    #[inline]
    #[must_use]
    pub const fn word(self, w: u64) -> FlowHasher {
        FlowHasher {
            state: folded_multiply(self.state ^ w, P1),
        }
    }

    /// Absorb an address; the family is absorbed too, so an IPv4 address and an IPv6 address
    /// with the same low bits hash apart.
    #[inline]
    #[must_use]
    pub const fn addr(self, addr: IpAddr) -> FlowHasher {
        match addr {
            IpAddr::V4(a) => self.word((4 << 32) | a.to_bits() as u64),
            IpAddr::V6(a) => {
                let bits = a.to_bits();
                self.word(6).word((bits >> 64) as u64).word(bits as u64)
            }
        }
    }

    /// The hash of everything absorbed.
    #[inline]
    pub const fn finish(self) -> u64 {
        mix64(self.state)
    }
}

/// Hash of an address, a port and a round number (rounds > 0 give fresh, independent-looking
/// values for the same address and port: the `sh`/`mh` fallback rehash).
#[inline]
pub const fn hash_addr_port(seed: u64, addr: IpAddr, port: u16, round: u32) -> u64 {
    FlowHasher::new(seed)
        .addr(addr)
        .word(((round as u64) << 16) | port as u64)
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn deterministic_and_seeded() {
        let a = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(hash_addr_port(7, a, 80, 0), hash_addr_port(7, a, 80, 0));
        assert_ne!(hash_addr_port(7, a, 80, 0), hash_addr_port(8, a, 80, 0));
        assert_ne!(hash_addr_port(7, a, 80, 0), hash_addr_port(7, a, 81, 0));
        assert_ne!(hash_addr_port(7, a, 80, 0), hash_addr_port(7, a, 80, 1));
        let v6 = IpAddr::V6(Ipv6Addr::from_bits(0xc000_0201));
        assert_ne!(hash_addr_port(7, a, 80, 0), hash_addr_port(7, v6, 80, 0));
    }

    #[test]
    fn consecutive_addresses_fill_buckets_evenly() {
        // 65536 consecutive IPv4 addresses into 256 buckets: each bucket within 20 % of 256.
        let mut buckets = [0u32; 256];
        for i in 0..65536u32 {
            let a = IpAddr::V4(Ipv4Addr::from_bits(0x0a00_0000 + i));
            buckets[(hash_addr_port(0, a, 0, 0) % 256) as usize] += 1;
        }
        for &n in &buckets {
            assert!((205..=307).contains(&n), "bucket holds {n}");
        }
    }

    #[test]
    fn mixer_is_not_identity() {
        assert_ne!(mix64(1), 1);
        assert_eq!(mix64(0), 0);
    }
}
