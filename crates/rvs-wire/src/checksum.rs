//! Internet checksums: RFC 1071 sums, IPv4/IPv6 pseudo-headers, RFC 1624 incremental updates.
//!
//! Why by hand: etherparse computes a whole header's checksum, but a director rewrites one field of
//! a forwarded packet and must adjust the checksum for that field alone (RFC 1624) — recomputing a
//! TCP checksum over a 1500-byte segment to change one port would cost ~100× more. The full sum
//! is here too, in big-endian words, so that pseudo-header sums, full sums and incremental updates
//! share one accumulator type; etherparse's own sums (native-endian) serve as the independent
//! reference in the tests.
//!
//! All functions are total: no input panics. Nothing allocates.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Add `data` to a running RFC 1071 sum, as big-endian 16-bit words (an odd last byte is padded
/// with zero on the right).
///
/// How: the bytes are summed as native-order 32-bit words into four 64-bit accumulators (a loop
/// the compiler vectorises, with no byte swap per word), folded to 16 bits and swapped to
/// big-endian once — the one's-complement sum does not depend on byte order (RFC 1071 §2(B)).
/// The folded value is exactly the fold of the big-endian sum (both are 0 only for all-zero
/// data), so adding it to `acc` keeps every later fold exact. About 4× the speed of a
/// big-endian word loop (`cargo bench -p rvs-wire`, `checksum_full_1500`). No carry is lost
/// for any slice shorter than 2^32 × 4 bytes.
#[inline]
pub fn sum(acc: u64, data: &[u8]) -> u64 {
    if data.len() < 64 {
        return sum_be_words(acc, data);
    }
    sum_lanes(acc, data)
}

/// [`sum`] of a short slice (an address, a header): big-endian 32-bit groups, inlined.
#[inline(always)]
fn sum_be_words(mut acc: u64, data: &[u8]) -> u64 {
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        if let &[a, b, c, d] = w {
            acc += u64::from(u32::from_be_bytes([a, b, c, d]));
        }
    }
    acc + match *words.remainder() {
        [a, b, c] => u64::from(u32::from_be_bytes([a, b, c, 0])),
        [a, b] => u64::from(u32::from_be_bytes([a, b, 0, 0])),
        [a] => u64::from(u32::from_be_bytes([a, 0, 0, 0])),
        _ => 0,
    }
}

/// [`sum`] of a long slice: native-order lanes (see there).
#[inline(never)]
fn sum_lanes(acc: u64, data: &[u8]) -> u64 {
    let (native, rest) = sum_blocks(data);
    sum_tail(acc, native, rest)
}

/// The native-order sum of `data`'s whole 16-byte blocks, and the bytes after them: portable
/// 32-bit words into four 64-bit lanes (the reference for the SSE2 version, and its stand-in
/// on other targets).
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn sum_blocks_portable(data: &[u8]) -> (u64, &[u8]) {
    let mut lanes = [0u64; 4];
    let mut blocks = data.chunks_exact(16);
    for b in &mut blocks {
        for (lane, w) in lanes.iter_mut().zip(b.chunks_exact(4)) {
            if let &[a, b, c, d] = w {
                *lane += u64::from(u32::from_ne_bytes([a, b, c, d]));
            }
        }
    }
    (lanes.iter().sum::<u64>(), blocks.remainder())
}

#[cfg(not(target_arch = "x86_64"))]
use sum_blocks_portable as sum_blocks;

/// Blocks of 16 bytes an SSE2 lane sums before it is added to the 64-bit total: each block adds
/// at most 65 536 in magnitude to a 32-bit lane, so 16 384 blocks keep it far from overflow.
#[cfg(target_arch = "x86_64")]
const SSE2_RUN: usize = 16 * 16_384;

/// [`sum_blocks_portable`] with `PMADDWD`: four instructions per vector (load, flip,
/// multiply-add, add) where the portable loop, vectorised, takes about seven per 16 bytes (it
/// widens every 32-bit word to 64 bits). ICMP errors are checksummed whole before they are
/// forwarded, and that sum was 30 % of an error's instructions (callgrind), hence this
/// hand-written hot path.
///
/// With AVX2 (detected at run time; std caches the answer, so the test is one load) the kernel
/// takes 32 bytes per vector, otherwise SSE2's 16. SSE2 is part of the x86_64 baseline, so its
/// instructions are always there; Rust still marks calling a `#[target_feature]` function
/// unsafe, which is this crate's only `unsafe` (the same exception as `rvs_core::conn`'s SSE2
/// tag compare and prefetches).
#[cfg(target_arch = "x86_64")]
fn sum_blocks(data: &[u8]) -> (u64, &[u8]) {
    sum_blocks_with(data, std::arch::is_x86_feature_detected!("avx2"))
}

/// [`sum_blocks`] with the kernel chosen by the caller: AVX2 only when `avx2` (the CPU has it).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn sum_blocks_with(data: &[u8], avx2: bool) -> (u64, &[u8]) {
    let whole = data.len() - data.len() % 16;
    let (body, rest) = data.split_at(whole);
    let mut total = 0i64;
    for run in body.chunks(SSE2_RUN) {
        #[allow(unsafe_code)]
        let s = if avx2 {
            // SAFETY: the caller passes `avx2` only when the CPU has AVX2 (run-time detection).
            unsafe { avx2::run_sum(run) }
        } else {
            // SAFETY: SSE2 is part of the x86_64 baseline: the target feature is always present.
            unsafe { sse2::run_sum(run) }
        };
        total += s;
    }
    // Every word was counted 32 768 low (see `sse2`).
    let words = (whole / 2) as i64;
    ((total + words * 32_768) as u64, rest)
}

/// The SSE2 kernel of [`sum_blocks`].
///
/// `PMADDWD` against ones adds pairs of *signed* 16-bit words into 32-bit lanes. Each word has
/// its top bit flipped first, which makes its signed value `w − 32768` for every `w`: a block's
/// eight words add `Σw − 8 × 32768` to the lanes, corrected once by the caller.
#[cfg(target_arch = "x86_64")]
mod sse2 {
    use core::arch::x86_64::{
        __m128i, _mm_add_epi32, _mm_cvtsi128_si32, _mm_madd_epi16, _mm_set_epi64x, _mm_set1_epi16,
        _mm_setzero_si128, _mm_shuffle_epi32, _mm_xor_si128,
    };

    /// A block as a vector: two native 8-byte loads, which the compiler merges into one
    /// unaligned vector load (no pointer load, so no further `unsafe`).
    #[target_feature(enable = "sse2")]
    #[inline]
    fn load(b: &[u8; 16]) -> __m128i {
        let [
            a0,
            a1,
            a2,
            a3,
            a4,
            a5,
            a6,
            a7,
            b0,
            b1,
            b2,
            b3,
            b4,
            b5,
            b6,
            b7,
        ] = *b;
        _mm_set_epi64x(
            i64::from_ne_bytes([b0, b1, b2, b3, b4, b5, b6, b7]),
            i64::from_ne_bytes([a0, a1, a2, a3, a4, a5, a6, a7]),
        )
    }

    /// `acc` plus block `b`'s words, top bits flipped, added in pairs into the four lanes.
    #[target_feature(enable = "sse2")]
    #[inline]
    pub(super) fn step(acc: __m128i, b: &[u8; 16]) -> __m128i {
        let flipped = _mm_xor_si128(load(b), _mm_set1_epi16(i16::MIN));
        _mm_add_epi32(acc, _mm_madd_epi16(flipped, _mm_set1_epi16(1)))
    }

    /// The sum of `run`'s words less 32 768 each; `run` is whole 16-byte blocks, at most
    /// [`super::SSE2_RUN`] bytes (a lane then stays far from overflow).
    #[target_feature(enable = "sse2")]
    pub(super) fn run_sum(run: &[u8]) -> i64 {
        // Four independent lanes over 64 bytes at a time, then the blocks left one by one.
        let mut acc = [_mm_setzero_si128(); 4];
        let (quads, left) = run.as_chunks::<64>();
        for q in quads {
            let (blocks, _) = q.as_chunks::<16>();
            for (a, b) in acc.iter_mut().zip(blocks) {
                *a = step(*a, b);
            }
        }
        let (blocks, _) = left.as_chunks::<16>();
        for (a, b) in acc.iter_mut().zip(blocks) {
            *a = step(*a, b);
        }
        let [a, b, c, d] = acc;
        let (a, b) = (_mm_add_epi32(a, c), _mm_add_epi32(b, d));
        lanes_sum(_mm_add_epi32(a, b))
    }

    /// The sum of `v`'s four 32-bit lanes, as signed values, without overflow.
    #[target_feature(enable = "sse2")]
    #[inline]
    pub(super) fn lanes_sum(mut v: __m128i) -> i64 {
        let mut s = 0i64;
        for _ in 0..4 {
            s += i64::from(_mm_cvtsi128_si32(v));
            v = _mm_shuffle_epi32::<0b00_11_10_01>(v);
        }
        s
    }
}

/// The AVX2 kernel of [`sum_blocks`]: [`sse2`]'s method on 32-byte vectors (the same flip, so
/// the same correction).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use core::arch::x86_64::{
        __m256i, _mm_add_epi32, _mm256_add_epi32, _mm256_castsi256_si128, _mm256_extracti128_si256,
        _mm256_madd_epi16, _mm256_set_epi64x, _mm256_set1_epi16, _mm256_setzero_si256,
        _mm256_xor_si256,
    };

    /// A 32-byte block as a vector: four native 8-byte loads, which the compiler merges into
    /// one unaligned vector load (no pointer load, so no further `unsafe`).
    #[target_feature(enable = "avx2")]
    #[inline]
    fn load(b: &[u8; 32]) -> __m256i {
        let [a, b, c, d]: [[u8; 8]; 4] = bytes_to_quads(*b);
        _mm256_set_epi64x(
            i64::from_ne_bytes(d),
            i64::from_ne_bytes(c),
            i64::from_ne_bytes(b),
            i64::from_ne_bytes(a),
        )
    }

    /// `b` as four 8-byte groups (the compiler makes this and [`load`]'s four words one
    /// vector load; a closure over `as_chunks` it did not).
    #[inline(always)]
    fn bytes_to_quads(b: [u8; 32]) -> [[u8; 8]; 4] {
        let mut q = [[0u8; 8]; 4];
        for (d, s) in q.iter_mut().zip(b.as_chunks::<8>().0) {
            *d = *s;
        }
        q
    }

    /// `acc` plus block `b`'s words, top bits flipped, added in pairs into the eight lanes.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn step(acc: __m256i, b: &[u8; 32]) -> __m256i {
        let flipped = _mm256_xor_si256(load(b), _mm256_set1_epi16(i16::MIN));
        _mm256_add_epi32(acc, _mm256_madd_epi16(flipped, _mm256_set1_epi16(1)))
    }

    /// The sum of `run`'s words less 32 768 each; `run` is whole 16-byte blocks, at most
    /// [`super::SSE2_RUN`] bytes (each lane then takes at most 2 048 steps of at most 65 536).
    #[target_feature(enable = "avx2")]
    pub(super) fn run_sum(run: &[u8]) -> i64 {
        // Four independent accumulators over 128 bytes at a time, then the 32-byte blocks left
        // one by one, then a 16-byte block left, if any, with SSE2.
        let mut acc = [_mm256_setzero_si256(); 4];
        let (quads, left) = run.as_chunks::<128>();
        for q in quads {
            let (blocks, _) = q.as_chunks::<32>();
            for (a, b) in acc.iter_mut().zip(blocks) {
                *a = step(*a, b);
            }
        }
        let (blocks, half) = left.as_chunks::<32>();
        for (a, b) in acc.iter_mut().zip(blocks) {
            *a = step(*a, b);
        }
        let [a, b, c, d] = acc;
        let v = _mm256_add_epi32(_mm256_add_epi32(a, c), _mm256_add_epi32(b, d));
        let mut v = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        if let Some(b) = half.as_chunks::<16>().0.first() {
            v = super::sse2::step(v, b);
        }
        super::sse2::lanes_sum(v)
    }
}

/// [`sum_lanes`]' end: the words after the whole blocks, the fold, the swap to big-endian.
#[inline(always)]
fn sum_tail(acc: u64, mut native: u64, rest: &[u8]) -> u64 {
    let mut words = rest.chunks_exact(4);
    for w in &mut words {
        if let &[a, b, c, d] = w {
            native += u64::from(u32::from_ne_bytes([a, b, c, d]));
        }
    }
    native += match *words.remainder() {
        [a, b, c] => u64::from(u32::from_ne_bytes([a, b, c, 0])),
        [a, b] => u64::from(u32::from_ne_bytes([a, b, 0, 0])),
        [a] => u64::from(u32::from_ne_bytes([a, 0, 0, 0])),
        _ => 0,
    };
    acc + u64::from(u16::from_be(fold(native)))
}

/// Fold a running sum into 16 bits with end-around carry (the one's-complement sum).
#[inline]
pub fn fold(mut acc: u64) -> u16 {
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    acc as u16
}

/// The RFC 1071 checksum of `data`: the one's complement of its one's-complement sum.
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum(0, data))
}

/// Finish a running sum into a checksum field value.
#[inline]
pub fn finish(acc: u64) -> u16 {
    !fold(acc)
}

/// True when `data`, which contains its own checksum field, sums to all ones (RFC 1071 §1 (3)).
#[inline]
pub fn verify(acc: u64) -> bool {
    fold(acc) == 0xffff
}

/// The running sum of an IPv4 pseudo-header (RFC 793 §3.1, RFC 768): addresses, protocol, length.
#[inline]
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, l4_len: u16) -> u64 {
    u64::from(src.to_bits()) + u64::from(dst.to_bits()) + u64::from(protocol) + u64::from(l4_len)
}

/// The running sum of an IPv6 pseudo-header (RFC 8200 §8.1): addresses, upper-layer length, next header.
#[inline]
pub fn pseudo_header_v6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, l4_len: u32) -> u64 {
    let s = src.to_bits();
    let d = dst.to_bits();
    let mut acc = u64::from(next_header) + u64::from(l4_len);
    for v in [s, d] {
        acc += (v >> 96) as u64 & 0xffff_ffff;
        acc += (v >> 64) as u64 & 0xffff_ffff;
        acc += (v >> 32) as u64 & 0xffff_ffff;
        acc += v as u64 & 0xffff_ffff;
    }
    acc
}

/// The running sum of a pseudo-header for either address family.
///
/// Mixed families (one IPv4, one IPv6 address) have no pseudo-header; the IPv6 form is used with
/// the IPv4 address mapped, which no caller should rely on.
#[inline]
pub fn pseudo_header(src: IpAddr, dst: IpAddr, protocol: u8, l4_len: u32) -> u64 {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => pseudo_header_v4(s, d, protocol, l4_len as u16),
        (s, d) => pseudo_header_v6(to_v6(s), to_v6(d), protocol, l4_len),
    }
}

fn to_v6(a: IpAddr) -> Ipv6Addr {
    match a {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// RFC 1624 eqn. 3: the checksum after a 16-bit word of the covered data changes from `old` to `new`.
///
/// `HC' = ~(~HC + ~m + m')`. Unlike eqn. 2 this never yields the "negative zero" problem of RFC
/// 1141: for any checksum that was computed over non-zero data the result equals a full recompute.
#[inline(always)]
pub fn update16(check: u16, old: u16, new: u16) -> u16 {
    apply(check, delta16(old, new))
}

/// The IPv4 header checksum after the TTL drops by one, i.e. its word (TTL, protocol) drops by
/// 0x0100: [`update16`] in closed form, as Linux's `ip_decrease_ttl` — the checksum plus
/// 0x0100 with end-around carry. Equal to `update16` for every checksum
/// (`ttl_decrement_equals_update16` checks all of them), in about a fifth of its instructions;
/// every forwarded IPv4 packet pays it.
#[inline(always)]
pub fn ttl_decrement(check: u16) -> u16 {
    let c = u32::from(check) + 0x0100;
    (c + u32::from(c >= 0xffff)) as u16
}

/// RFC 1624 incremental update for a 32-bit field (two adjacent 16-bit words, big-endian).
#[inline(always)]
pub fn update32(check: u16, old: u32, new: u32) -> u16 {
    apply(check, delta32(old, new))
}

/// The change term `~m + m'` of a 16-bit word going from `old` to `new`: terms of several
/// changes add up (as `u64`) and [`apply`] them at once, which equals applying each in turn
/// (eqn. 3 holds for any number of changed words) at one fold instead of one per change.
#[inline(always)]
pub fn delta16(old: u16, new: u16) -> u64 {
    u64::from(!old) + u64::from(new)
}

/// [`delta16`] of a 32-bit field (two adjacent 16-bit words, big-endian).
#[inline(always)]
pub fn delta32(old: u32, new: u32) -> u64 {
    delta16((old >> 16) as u16, (new >> 16) as u16) + delta16(old as u16, new as u16)
}

/// [`delta16`] of an even-aligned run of bytes (an address); `old` and `new` of one length.
#[inline(always)]
pub fn delta_bytes(old: &[u8], new: &[u8]) -> u64 {
    if let (&[a, b, c, d], &[e, f, g, h]) = (old, new) {
        // An IPv4 address: the 32-bit term, without the general sums.
        return delta32(
            u32::from_be_bytes([a, b, c, d]),
            u32::from_be_bytes([e, f, g, h]),
        );
    }
    // ~m summed word by word equals (0xffff × words) − Σm, which one's-complement arithmetic
    // expresses as adding the complement of the folded sum of the old bytes.
    u64::from(!fold(sum_be_words(0, old))) + sum_be_words(0, new)
}

/// RFC 1624 eqn. 3 with the change terms summed in `delta` ([`delta16`] and friends).
#[inline(always)]
pub fn apply(check: u16, delta: u64) -> u16 {
    !fold(u64::from(!check) + delta)
}

/// RFC 1624 incremental update for a change of an even-aligned run of bytes (an address:
/// 4 bytes for IPv4, 16 for IPv6). `old` and `new` must have the same length; a trailing odd
/// byte is treated as the high byte of a word, as in [`sum`].
#[inline]
pub fn update_bytes(check: u16, old: &[u8], new: &[u8]) -> u16 {
    apply(check, delta_bytes(old, new))
}

/// RFC 1624 incremental update for an address change, either family.
///
/// An IPv4 ↔ IPv6 change is not a like-for-like field change and is computed as bytes of
/// different lengths (the longer form's extra words are added or removed), which is what a
/// pseudo-header change across families amounts to.
#[inline]
pub fn update_addr(check: u16, old: IpAddr, new: IpAddr) -> u16 {
    match (old, new) {
        (IpAddr::V4(o), IpAddr::V4(n)) => update32(check, o.to_bits(), n.to_bits()),
        (IpAddr::V6(o), IpAddr::V6(n)) => update_bytes(check, &o.octets(), &n.octets()),
        (IpAddr::V4(o), IpAddr::V6(n)) => update_bytes(check, &o.octets(), &n.octets()),
        (IpAddr::V6(o), IpAddr::V4(n)) => update_bytes(check, &o.octets(), &n.octets()),
    }
}

/// Map a computed UDP checksum of zero to all ones: over IPv4 a transmitted zero means "no
/// checksum" (RFC 768), and over IPv6 zero is not allowed at all (RFC 8200 §8.1).
#[inline]
pub fn udp_nonzero(check: u16) -> u16 {
    if check == 0 { 0xffff } else { check }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Plain RFC 1071 reference: 16-bit big-endian words, 32-bit accumulator, folded at the end.
    fn reference(data: &[u8]) -> u16 {
        let mut acc: u32 = 0;
        let mut i = 0;
        while i + 1 < data.len() {
            acc += u32::from(u16::from_be_bytes([data[i], data[i + 1]]));
            if acc > 0xffff {
                acc = (acc & 0xffff) + 1;
            }
            i += 2;
        }
        if i < data.len() {
            acc += u32::from(data[i]) << 8;
            if acc > 0xffff {
                acc = (acc & 0xffff) + 1;
            }
        }
        !(acc as u16)
    }

    // RFC 1071 §3 worked example: words 0001 f203 f4f5 f6f7 sum to ddf2 (folded).
    #[test]
    fn rfc1071_example() {
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(0, &data)), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2);
    }

    // A real IPv4 header (from RFC 1071-era examples, widely used): checksum b861.
    #[test]
    fn ipv4_header_checksum() {
        let mut hdr = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&hdr), 0xb861);
        hdr[10..12].copy_from_slice(&0xb861u16.to_be_bytes());
        assert!(verify(sum(0, &hdr)));
    }

    #[test]
    fn update16_rfc1624_example() {
        // RFC 1624 §4: HC = 0xdd2f, m = 0x5555 → m' = 0x3285 gives HC' = 0x0000.
        assert_eq!(update16(0xdd2f, 0x5555, 0x3285), 0x0000);
    }

    #[test]
    fn udp_zero_maps_to_ones() {
        assert_eq!(udp_nonzero(0), 0xffff);
        assert_eq!(udp_nonzero(0x1234), 0x1234);
    }

    /// Data whose checksum field sits at `at` (even offset), canonical checksum filled in.
    fn with_checksum(mut data: Vec<u8>, at: usize) -> Vec<u8> {
        data[at] = 0;
        data[at + 1] = 0;
        let c = checksum(&data);
        data[at..at + 2].copy_from_slice(&c.to_be_bytes());
        data
    }

    fn same_ones_complement(a: u16, b: u16) -> bool {
        // 0x0000 and 0xffff are the two representations of zero in one's complement; they only
        // differ when the data summed to zero, which a non-zero word in the data rules out.
        a == b || (a | b == 0xffff && (a == 0 || b == 0))
    }

    /// The whole-block sum ([`sum_blocks`], SSE2 on x86_64) agrees with the portable one after
    /// the fold, and leaves the same tail.
    /// On x86_64 both kernels are compared: SSE2 always, AVX2 when this CPU has it.
    fn blocks_agree(data: &[u8]) -> bool {
        let (slow, slow_rest) = sum_blocks_portable(data);
        let agrees =
            |(fast, fast_rest): (u64, &[u8])| fold(fast) == fold(slow) && fast_rest == slow_rest;
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = std::arch::is_x86_feature_detected!("avx2");
            agrees(sum_blocks_with(data, false)) && (!avx2 || agrees(sum_blocks_with(data, true)))
        }
        #[cfg(not(target_arch = "x86_64"))]
        agrees(sum_blocks(data))
    }

    /// The closed form agrees with RFC 1624's general update for every checksum, and every TTL
    /// (from 1) and protocol byte tried.
    #[test]
    fn ttl_decrement_equals_update16() {
        for ttl in [1u8, 2, 3, 64, 128, 255] {
            for proto in [1u8, 6, 17, 0xff] {
                let old = u16::from_be_bytes([ttl, proto]);
                let new = u16::from_be_bytes([ttl - 1, proto]);
                for check in 0..=u16::MAX {
                    assert_eq!(
                        ttl_decrement(check),
                        update16(check, old, new),
                        "{check:#x}"
                    );
                }
            }
        }
    }

    // Past the point where one 32-bit SSE2 lane would overflow without the per-run flush
    // (all-ones words push a lane up by 65 534 per block, all-zero words down by 65 536).
    #[test]
    fn long_extreme_data_sums_exactly() {
        let len = 3 * 16 * 16_384 + 48 + 5;
        for byte in [0x00u8, 0xff, 0x80, 0x7f] {
            let data = vec![byte; len];
            assert!(blocks_agree(&data), "byte {byte:#x}");
            assert_eq!(checksum(&data), reference(&data), "byte {byte:#x}");
        }
    }

    proptest! {
        #[test]
        fn sse2_blocks_match_portable(
            data in proptest::collection::vec(any::<u8>(), 0..3000),
            skip in 0usize..16,
        ) {
            // Every start alignment of the loads.
            prop_assert!(blocks_agree(data.get(skip..).unwrap_or_default()));
        }

        #[test]
        fn sum_matches_reference(data in proptest::collection::vec(any::<u8>(), 0..2000)) {
            prop_assert_eq!(checksum(&data), reference(&data));
        }

        #[test]
        fn sum_matches_etherparse(data in proptest::collection::vec(any::<u8>(), 0..2000)) {
            // etherparse sums native-endian words: its result's in-memory bytes are the wire bytes.
            let ep = etherparse::checksum::Sum16BitWords::new().add_slice(&data).ones_complement();
            prop_assert_eq!(checksum(&data), u16::from_be_bytes(ep.to_ne_bytes()));
        }

        #[test]
        fn update16_equals_recompute(
            data in proptest::collection::vec(any::<u8>(), 4..200),
            word in any::<prop::sample::Index>(),
            new in any::<u16>(),
        ) {
            let len = data.len() & !1;
            let mut data = with_checksum(data[..len].to_vec(), 0);
            let words = len / 2 - 1;
            let at = 2 + 2 * word.index(words);
            let old = u16::from_be_bytes([data[at], data[at + 1]]);
            let check = u16::from_be_bytes([data[0], data[1]]);
            data[at..at + 2].copy_from_slice(&new.to_be_bytes());
            let inc = update16(check, old, new);
            let full = with_checksum(data.clone(), 0);
            let full = u16::from_be_bytes([full[0], full[1]]);
            prop_assert!(same_ones_complement(inc, full), "inc {inc:#x} full {full:#x}");
            data[0..2].copy_from_slice(&inc.to_be_bytes());
            prop_assert!(verify(sum(0, &data)));
        }

        #[test]
        fn update32_equals_recompute(
            data in proptest::collection::vec(any::<u8>(), 8..200),
            word in any::<prop::sample::Index>(),
            new in any::<u32>(),
        ) {
            let len = data.len() & !1;
            let mut data = with_checksum(data[..len].to_vec(), 0);
            let at = 2 + 2 * word.index((len - 2) / 2 - 1);
            let old = u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]);
            let check = u16::from_be_bytes([data[0], data[1]]);
            data[at..at + 4].copy_from_slice(&new.to_be_bytes());
            let inc = update32(check, old, new);
            let full = with_checksum(data.clone(), 0);
            let full = u16::from_be_bytes([full[0], full[1]]);
            prop_assert!(same_ones_complement(inc, full), "inc {inc:#x} full {full:#x}");
        }

        #[test]
        fn update_addr_v6_equals_recompute(
            data in proptest::collection::vec(any::<u8>(), 40..300),
            new in any::<[u8; 16]>(),
        ) {
            let len = data.len() & !1;
            let mut data = with_checksum(data[..len].to_vec(), 0);
            let old: [u8; 16] = data[8..24].try_into().unwrap();
            let check = u16::from_be_bytes([data[0], data[1]]);
            data[8..24].copy_from_slice(&new);
            let inc = update_addr(check, IpAddr::V6(old.into()), IpAddr::V6(new.into()));
            let full = with_checksum(data.clone(), 0);
            let full = u16::from_be_bytes([full[0], full[1]]);
            prop_assert!(same_ones_complement(inc, full), "inc {inc:#x} full {full:#x}");
        }

        #[test]
        fn update_bytes_equals_recompute(
            mut data in proptest::collection::vec(any::<u8>(), 40..60),
            new4 in any::<[u8; 4]>(),
            new6 in any::<[u8; 6]>(),
        ) {
            // A 4-byte field (the IPv4 address shortcut) and a 6-byte one (the general sums).
            data[2] = 1; // a non-zero word: the two zeros of one's complement cannot both occur
            let data = with_checksum(data, 0);
            for (at, new) in [(12, &new4[..]), (20, &new6[..])] {
                let mut d = data.clone();
                let check = u16::from_be_bytes([d[0], d[1]]);
                let inc = update_bytes(check, &d[at..at + new.len()], new);
                d[at..at + new.len()].copy_from_slice(new);
                let full = with_checksum(d, 0);
                let full = u16::from_be_bytes([full[0], full[1]]);
                prop_assert!(same_ones_complement(inc, full), "inc {inc:#x} full {full:#x}");
            }
        }

        /// Several fields changed at once (a 16-byte address, a 4-byte one, a word), their
        /// change terms summed and applied in one fold: the same checksum as the updates one
        /// after the other, and a full recompute's value.
        #[test]
        fn summed_deltas_equal_updates_in_turn(
            mut data in proptest::collection::vec(any::<u8>(), 60..80),
            new16 in any::<[u8; 16]>(),
            new4 in any::<[u8; 4]>(),
            new2 in any::<u16>(),
        ) {
            data[2] = 1;
            let data = with_checksum(data, 0);
            let check = u16::from_be_bytes([data[0], data[1]]);
            let mut d = data.clone();
            let old2 = u16::from_be_bytes([d[40], d[41]]);
            let delta = delta_bytes(&d[8..24], &new16)
                + delta_bytes(&d[28..32], &new4)
                + delta16(old2, new2);
            let once = apply(check, delta);
            let mut turn = update_bytes(check, &d[8..24], &new16);
            turn = update_bytes(turn, &d[28..32], &new4);
            turn = update16(turn, old2, new2);
            prop_assert_eq!(once, turn);
            d[8..24].copy_from_slice(&new16);
            d[28..32].copy_from_slice(&new4);
            d[40..42].copy_from_slice(&new2.to_be_bytes());
            let full = with_checksum(d, 0);
            let full = u16::from_be_bytes([full[0], full[1]]);
            prop_assert!(same_ones_complement(once, full), "once {once:#x} full {full:#x}");
        }

        #[test]
        fn pseudo_header_v4_matches_etherparse(src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(),
                payload in proptest::collection::vec(any::<u8>(), 0..100)) {
            let udp = etherparse::UdpHeader::without_ipv4_checksum(1, 2, payload.len()).unwrap();
            let ep = udp.calc_checksum_ipv4_raw(src, dst, &payload).unwrap();
            let mut acc = pseudo_header_v4(src.into(), dst.into(), 17, (8 + payload.len()) as u16);
            let mut h = udp.to_bytes();
            h[6] = 0; h[7] = 0;
            acc = sum(acc, &h);
            acc = sum(acc, &payload);
            prop_assert_eq!(udp_nonzero(finish(acc)), ep);
        }

        #[test]
        fn pseudo_header_v6_matches_etherparse(src in any::<[u8; 16]>(), dst in any::<[u8; 16]>(),
                payload in proptest::collection::vec(any::<u8>(), 0..100)) {
            let udp = etherparse::UdpHeader::without_ipv4_checksum(1, 2, payload.len()).unwrap();
            let ep = udp.calc_checksum_ipv6_raw(src, dst, &payload).unwrap();
            let mut acc = pseudo_header_v6(src.into(), dst.into(), 17, (8 + payload.len()) as u32);
            let mut h = udp.to_bytes();
            h[6] = 0; h[7] = 0;
            acc = sum(acc, &h);
            acc = sum(acc, &payload);
            prop_assert_eq!(udp_nonzero(finish(acc)), ep);
        }
    }
}
