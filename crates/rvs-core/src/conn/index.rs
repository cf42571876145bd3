//! The connection table's hash indexes: buckets of one cache line each, so that a lookup that
//! hits costs two dependent memory accesses (the bucket, then the slab entry) and both can be
//! prefetched ahead of time by a burst of packets.
//!
//! A bucket holds [`WAYS`] slots: a 16-bit tag (hash bits 48..64; 0 marks a free slot) and the
//! slab index it points to. The home bucket of a hash is `hash & mask`. A full bucket sends an
//! insert on to the next one (linear probing over buckets) and counts it in its `over` field,
//! so a lookup stops at the first bucket whose `over` is 0; removal decrements the counts it
//! passed. The index doubles before it is three quarters full, which keeps probing beyond the
//! home bucket rare. Keys stay in the slab: the index stores no key and no hash, so it is
//! rebuilt from the slab when it grows.
//!
//! No panics: every access is checked or masked to the bucket count.

/// Slots per bucket.
pub(super) const WAYS: usize = 8;

/// Tag of a free slot.
const FREE: u16 = 0;

/// One cache line: eight (tag, slab index) slots and the probe-past count.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(super) struct Bucket {
    tags: [u16; WAYS],
    slots: [u32; WAYS],
    /// How many entries are stored beyond this bucket although their probe started at or
    /// before it (saturating: a saturated count is never decremented, lookups just probe on).
    over: u16,
}

impl Bucket {
    const EMPTY: Bucket = Bucket {
        tags: [FREE; WAYS],
        slots: [0; WAYS],
        over: 0,
    };

    /// The slots holding `tag`, lowest first.
    ///
    /// On x86_64 one SSE2 compare of the eight tags (SSE2 is part of the x86_64 baseline, so
    /// the instructions are always there; calling them still takes `unsafe`, as [`prefetch`]
    /// explains): the loop below was vectorised where lookups inline it but stayed eight
    /// scalar compares in the insert and removal paths (callgrind: ~230 instructions per NAT
    /// SYN on that line).
    #[inline(always)]
    fn matches(&self, tag: u16) -> Lanes {
        #[cfg(target_arch = "x86_64")]
        {
            let [a, b, c, d, e, f, g, h] = self.tags.map(u64::from);
            let lo = a | b << 16 | c << 32 | d << 48;
            let hi = e | f << 16 | g << 32 | h << 48;
            // SAFETY: SSE2 is part of the x86_64 baseline: the target feature is always present.
            #[allow(unsafe_code)]
            let m = unsafe { eq16x8(lo, hi, tag) };
            Lanes(m)
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let mut m = 0;
            for (j, &t) in self.tags.iter().enumerate() {
                m |= u32::from(t == tag) << (2 * j);
            }
            Lanes(m)
        }
    }
}

/// Bit `2j` set for each 16-bit lane `j` of `lo` (lanes 0–3) and `hi` (4–7) that equals
/// `tag`: one SSE2 compare.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2")]
#[inline]
fn eq16x8(lo: u64, hi: u64, tag: u16) -> u32 {
    use core::arch::x86_64::{_mm_cmpeq_epi16, _mm_movemask_epi8, _mm_set_epi64x, _mm_set1_epi16};
    let eq = _mm_cmpeq_epi16(
        _mm_set_epi64x(hi as i64, lo as i64),
        _mm_set1_epi16(tag as i16),
    );
    // Two mask bits per 16-bit lane: keep the low one.
    _mm_movemask_epi8(eq) as u32 & 0x5555
}

/// The slots of a bucket that matched a tag, bit `2j` for slot `j` (see [`Bucket::matches`]).
#[derive(Clone, Copy)]
struct Lanes(u32);

impl Iterator for Lanes {
    type Item = usize;

    /// The next matching slot, lowest first.
    #[inline(always)]
    fn next(&mut self) -> Option<usize> {
        if self.0 == 0 {
            return None;
        }
        let j = (self.0.trailing_zeros() / 2) as usize;
        self.0 &= self.0 - 1;
        Some(j)
    }
}

/// The tag of a hash: its top 16 bits, never [`FREE`].
#[inline(always)]
fn tag_of(h: u64) -> u16 {
    let t = (h >> 48) as u16;
    t | u16::from(t == FREE)
}

/// Hint the CPU to bring the cache line at `p` into L1 (no effect on program state).
///
/// `unsafe` only because `_mm_prefetch` is a `#[target_feature(enable = "sse")]` function,
/// which Rust still marks unsafe to call although SSE is part of the x86_64 baseline. This,
/// [`Bucket::matches`]' SSE2 compare and `rvs_wire::checksum`'s SSE2 and AVX2 sums (unsafe for
/// the same reason; AVX2 only where run-time detection found it) are the hot path's only
/// exceptions to the rule that unsafe code lives in the
/// daemon's I/O layer: a burst of packets
/// can only overlap its cache misses if it can name the lines it will need, and no safe API
/// (nor crate) offers a prefetch.
#[inline(always)]
pub(super) fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    prefetch_hint::<{ core::arch::x86_64::_MM_HINT_T0 }, T>(p);
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Hint the CPU to bring the cache line at `p` into L2 only: for a line needed a few hundred
/// ns from now (no effect on program state; `unsafe` inside as [`prefetch`] explains).
///
/// Measured on the 2-vCPU EPYC VM: a burst pipeline whose first stage runs two rounds ahead
/// was 40 % slower than no pipeline with PREFETCHT0 there, and a third faster with PREFETCHT1.
/// A prefetch to L1 holds one of the core's few L1 miss buffers until its line arrives, so
/// far-ahead L1 prefetches stall the loads and prefetches that are due now; one to L2 does
/// not hold them for the whole DRAM round trip.
#[inline(always)]
pub(super) fn prefetch_l2<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    prefetch_hint::<{ core::arch::x86_64::_MM_HINT_T1 }, T>(p);
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// `_mm_prefetch` with hint `H` (`_MM_HINT_T0`, `_MM_HINT_T1`).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
#[allow(unsafe_code)]
fn prefetch_hint<const H: i32, T>(p: *const T) {
    // SAFETY: PREFETCHh is a hint: it never faults, whatever the address (even an invalid
    // one), and changes no architectural state; SSE is always present on x86_64.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<H>(p.cast());
    }
}

/// A bucketised hash index from a 64-bit hash to slab indexes (`u32`).
pub(super) struct Index {
    buckets: Vec<Bucket>,
    len: usize,
}

impl Index {
    /// An empty index (allocates on first growth).
    pub(super) const fn new() -> Index {
        Index {
            buckets: Vec::new(),
            len: 0,
        }
    }

    /// Entries indexed.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Heap bytes held.
    pub(super) fn allocation_size(&self) -> usize {
        self.buckets.capacity() * core::mem::size_of::<Bucket>()
    }

    #[inline(always)]
    fn home(&self, h: u64) -> usize {
        h as usize & self.buckets.len().wrapping_sub(1)
    }

    /// Prefetch the home bucket of `h` into L2 (needed a few hundred ns from now, see
    /// [`prefetch_l2`]).
    #[inline]
    pub(super) fn prefetch_far(&self, h: u64) {
        if let Some(b) = self.buckets.get(self.home(h)) {
            prefetch_l2(b);
        }
    }

    /// Prefetch the bucket after the home bucket of `h` into L2 (see [`prefetch_l2`]): where
    /// the search for an absent key goes on when entries were displaced past its home
    /// bucket, and where its insert goes when the home bucket is full.
    #[inline]
    pub(super) fn prefetch_next_far(&self, h: u64) {
        let next = (self.home(h) + 1) & self.buckets.len().wrapping_sub(1);
        if let Some(b) = self.buckets.get(next) {
            prefetch_l2(b);
        }
    }

    /// Call `f` with every slab index whose tag matches `h` in its home bucket (candidates to
    /// prefetch; entries displaced to later buckets are not offered).
    #[inline]
    pub(super) fn home_candidates(&self, h: u64, mut f: impl FnMut(u32)) {
        let Some(b) = self.buckets.get(self.home(h)) else {
            return;
        };
        for j in b.matches(tag_of(h)) {
            if let Some(&s) = b.slots.get(j) {
                f(s);
            }
        }
    }

    /// The first slab index with `h`'s tag for which `eq` holds.
    #[inline(always)]
    pub(super) fn find(&self, h: u64, mut eq: impl FnMut(u32) -> bool) -> Option<u32> {
        let n = self.buckets.len();
        let tag = tag_of(h);
        let mut b = self.home(h);
        for _ in 0..n {
            let bucket = self.buckets.get(b)?;
            for j in bucket.matches(tag) {
                if let Some(&s) = bucket.slots.get(j)
                    && eq(s)
                {
                    return Some(s);
                }
            }
            if bucket.over == 0 {
                return None;
            }
            b = (b + 1) & (n - 1);
        }
        None
    }

    /// True when one more entry, besides `pending` ones still to be inserted, would pass the
    /// load limit (¾ of the slots): grow first.
    #[inline]
    pub(super) fn needs_grow(&self, pending: usize) -> bool {
        (self.len + pending + 1) * 4 > self.buckets.len() * WAYS * 3
    }

    /// Empty the index into `buckets` new buckets (a power of two) and return the old ones,
    /// whose entries the caller re-inserts.
    pub(super) fn reset(&mut self, buckets: usize) -> Vec<Bucket> {
        self.len = 0;
        let n = buckets.next_power_of_two();
        let mut fresh = Vec::with_capacity(n);
        // Before the buckets are first written (see `huge`).
        super::huge::advise(&fresh);
        fresh.resize(n, Bucket::EMPTY);
        core::mem::replace(&mut self.buckets, fresh)
    }

    /// Address of the last bucket (for the huge-page test).
    #[cfg(test)]
    pub(super) fn last_bucket(&self) -> *const u8 {
        self.buckets
            .as_ptr()
            .wrapping_add(self.buckets.len().saturating_sub(1))
            .cast()
    }

    /// The bucket count after the next growth.
    pub(super) fn grown(&self) -> usize {
        (self.buckets.len() * 2).max(1)
    }

    /// Every slab index held by `buckets` (an index's old buckets, while it is rebuilt).
    pub(super) fn slots_of(buckets: &[Bucket]) -> impl Iterator<Item = u32> + '_ {
        buckets.iter().flat_map(|b| {
            b.tags
                .iter()
                .zip(b.slots)
                .filter(|(t, _)| **t != FREE)
                .map(|(_, s)| s)
        })
    }

    /// Add slab index `i` under hash `h`. The caller grew the index first if
    /// [`Index::needs_grow`] said so; an index without room ignores the insert.
    pub(super) fn insert(&mut self, h: u64, i: u32) {
        let n = self.buckets.len();
        let tag = tag_of(h);
        let mut b = self.home(h);
        for _ in 0..n {
            let Some(bucket) = self.buckets.get_mut(b) else {
                return;
            };
            if let Some(j) = bucket.matches(FREE).next() {
                if let (Some(t), Some(s)) = (bucket.tags.get_mut(j), bucket.slots.get_mut(j)) {
                    *t = tag;
                    *s = i;
                    self.len += 1;
                }
                return;
            }
            bucket.over = bucket.over.saturating_add(1);
            b = (b + 1) & (n - 1);
        }
    }

    /// Remove slab index `i`, indexed under hash `h`. False when it is not there.
    pub(super) fn remove(&mut self, h: u64, i: u32) -> bool {
        let n = self.buckets.len();
        let tag = tag_of(h);
        let home = self.home(h);
        let mut b = home;
        for _ in 0..n {
            let Some(bucket) = self.buckets.get_mut(b) else {
                return false;
            };
            let hit = bucket
                .matches(tag)
                .find(|&j| bucket.slots.get(j) == Some(&i));
            if let Some(j) = hit {
                if let Some(t) = bucket.tags.get_mut(j) {
                    *t = FREE;
                }
                self.len = self.len.saturating_sub(1);
                // The buckets it probed past no longer hold it beyond them.
                let mut p = home;
                while p != b {
                    if let Some(x) = self.buckets.get_mut(p)
                        && x.over != u16::MAX
                    {
                        x.over = x.over.saturating_sub(1);
                    }
                    p = (p + 1) & (n - 1);
                }
                return true;
            }
            if bucket.over == 0 {
                return false;
            }
            b = (b + 1) & (n - 1);
        }
        false
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn bucket_is_one_line() {
        assert_eq!(core::mem::size_of::<Bucket>(), 64);
        assert_eq!(core::mem::align_of::<Bucket>(), 64);
    }

    /// `matches` finds exactly the slots a plain comparison finds, edge values (0, 1, 0x7fff,
    /// 0x8000, 0xffff) included.
    #[test]
    fn matches_is_exact() {
        let edges = [0u16, 1, 2, 0x7ffe, 0x7fff, 0x8000, 0x8001, 0xfffe, 0xffff];
        let mut s = 0x9e37_79b9_u64;
        for round in 0..20_000 {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let mut b = Bucket::EMPTY;
            for (j, t) in b.tags.iter_mut().enumerate() {
                let r = (s >> (j * 8)) as usize;
                *t = if round % 2 == 0 {
                    edges[r % edges.len()]
                } else {
                    (s >> (j * 6)) as u16
                };
            }
            let want =
                |tag: u16| -> Vec<usize> { (0..WAYS).filter(|&j| b.tags[j] == tag).collect() };
            for tag in edges
                .iter()
                .copied()
                .chain([b.tags[(s % 8) as usize], s as u16])
            {
                assert_eq!(
                    b.matches(tag).collect::<Vec<_>>(),
                    want(tag),
                    "{:?} {tag}",
                    b.tags
                );
            }
        }
    }

    fn grow(ix: &mut Index, hashes: &HashMap<u32, u64>) {
        let old = ix.reset(ix.grown());
        for s in Index::slots_of(&old).collect::<Vec<_>>() {
            ix.insert(hashes[&s], s);
        }
    }

    /// Colliding hashes (few home buckets) exercise probing, `over` counts and removal.
    #[test]
    fn probing_insert_find_remove_against_a_map() {
        let mut ix = Index::new();
        let mut hashes: HashMap<u32, u64> = HashMap::new();
        let mut s = 0x1234_5678_u64;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        for round in 0..6_000u32 {
            let r = next();
            if r % 3 != 0 || hashes.is_empty() {
                // 256 home buckets at most, four tags (0 among them): long probes, tag collisions.
                let h = (r & 0xff) | ((r >> 8) & 0x3) << 48;
                if ix.needs_grow(0) {
                    grow(&mut ix, &hashes);
                }
                ix.insert(h, round);
                hashes.insert(round, h);
            } else {
                let k = *hashes.keys().nth((r as usize >> 3) % hashes.len()).unwrap();
                let h = hashes.remove(&k).unwrap();
                assert!(ix.remove(h, k));
                assert!(!ix.remove(h, k));
            }
            if round % 97 == 0 {
                assert_eq!(ix.len(), hashes.len());
                for (&k, &h) in &hashes {
                    assert_eq!(ix.find(h, |x| x == k), Some(k), "lost {k}");
                }
                assert_eq!(ix.find(0xdead, |_| false), None);
            }
        }
    }
}
