//! Transparent huge pages for the table's large arrays (slab, cold parts, index buckets).
//!
//! A lookup in a table of a million connections reads two random lines of arrays of tens of
//! MiB: with 4 KiB pages each line is also a TLB miss, and in a virtual machine a miss is a
//! two-dimensional page walk. Backed by 2 MiB pages the same arrays need a few dozen TLB
//! entries instead of tens of thousands. Measured on the 2-vCPU EPYC KVM guest, bursts of
//! established DR packets at 1 M connections: 63–64 ns per packet with 4 KiB pages, 58–61 ns
//! with huge pages (see `BENCHMARKS.md`, fifth session).
//!
//! STYLE.md keeps unsafe code to the I/O layer; [`advise_range`] is the third exception in this
//! crate, after the two CPU hints of `index`, and like them documented where it is.
//!
//! Linux's default THP mode (`madvise`) gives huge pages only to ranges the program asks for;
//! glibc asks for its own large allocations only when started with
//! `GLIBC_TUNABLES=glibc.malloc.hugetlb=1`, which an operator may not set. So the table asks
//! itself, for its own buffers, right after each allocation or growth and before the new part
//! is first written (a page fault in an advised range then takes a huge page at once; pages
//! written before the advice wait for `khugepaged`). Where THP is off (`never`), or on other
//! systems, this does nothing.

/// Smallest buffer worth advising: one huge page (smaller ones cannot hold an aligned one).
const HUGE: usize = 2 << 20;

/// Base page size the advised range is rounded inward to.
const PAGE: usize = 4096;

/// `v.reserve_exact(additional)`, with a buffer of [`HUGE`] bytes or more advised before it is
/// written: a new one is allocated, advised, and the elements copied in.
///
/// (`Vec::reserve_exact` itself cannot be advised in time: for the slab's 64-byte-aligned
/// entries Rust's system allocator reallocates by allocating, copying and freeing, so the
/// copy writes the new buffer before any advice; measured, none of a 1 M-entry slab was in
/// huge pages. Copying here costs the same as that reallocation; for the cold part, whose
/// reallocation could have moved pages instead, it is 8 bytes per entry.)
pub(super) fn reserve_exact<T: Copy>(v: &mut Vec<T>, additional: usize) {
    let target = v.len().saturating_add(additional);
    if v.capacity() >= target {
        return;
    }
    if target.saturating_mul(core::mem::size_of::<T>()) < HUGE {
        v.reserve_exact(additional);
        return;
    }
    let mut fresh = Vec::with_capacity(target);
    advise(&fresh);
    fresh.extend_from_slice(v);
    *v = fresh;
}

/// Ask the kernel to back the whole base pages inside `v`'s buffer (its capacity, written or
/// not) with transparent huge pages. Returns whether the advice was given and taken.
pub(super) fn advise<T>(v: &Vec<T>) -> bool {
    let bytes = v.capacity().saturating_mul(core::mem::size_of::<T>());
    if bytes < HUGE {
        return false;
    }
    let base = v.as_ptr().cast::<u8>();
    let lead = base.align_offset(PAGE);
    let Some(len) = bytes.checked_sub(lead).map(|l| l & !(PAGE - 1)) else {
        return false;
    };
    if len == 0 {
        return false;
    }
    advise_range(base.wrapping_add(lead), len)
}

/// `madvise(MADV_HUGEPAGE)` over `len` bytes from the page-aligned `start`.
///
/// The table's one `unsafe` outside the hot path's two CPU hints ([`super::index`]): no safe API
/// nor crate gives this advice (`nix`, `rustix` and `libc` all mark `madvise` unsafe, since
/// other advice, such as `MADV_DONTNEED`, changes memory contents).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn advise_range(start: *const u8, len: usize) -> bool {
    // SAFETY: the range lies within a live allocation of ours (rounded inward to whole pages),
    // and MADV_HUGEPAGE only changes which page size later backs it: contents, addresses and
    // protections are unchanged, so no Rust reference to that memory is affected. On failure
    // (THP not built into the kernel) nothing happens and the error is ignored.
    unsafe { libc::madvise(start.cast_mut().cast(), len, libc::MADV_HUGEPAGE) == 0 }
}

/// No transparent huge pages to ask for on this system.
#[cfg(not(target_os = "linux"))]
fn advise_range(_start: *const u8, _len: usize) -> bool {
    false
}

#[cfg(all(test, target_os = "linux"))]
pub(super) mod tests {
    use super::*;

    /// The `VmFlags` of the mapping that holds `p` in `/proc/self/smaps` (`None` when it
    /// cannot be read).
    pub(in crate::conn) fn vm_flags(p: *const u8) -> Option<String> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
        let addr = p as usize;
        let mut inside = false;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ')
                && let Some((lo, hi)) = range.split_once('-')
                && let (Ok(lo), Ok(hi)) =
                    (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
            {
                inside = (lo..hi).contains(&addr);
                continue;
            }
            if inside && let Some(flags) = line.strip_prefix("VmFlags:") {
                return Some(flags.trim().to_string());
            }
        }
        None
    }

    /// True, after saying so, when this kernel has no transparent huge pages (the test
    /// `name` then skips).
    pub(in crate::conn) fn no_thp(name: &str) -> bool {
        let missing = !std::path::Path::new("/sys/kernel/mm/transparent_hugepage/enabled").exists();
        if missing {
            eprintln!("SKIP {name}: this kernel has no transparent huge pages");
        }
        missing
    }

    /// Whether the mapping holding `p` is advised for huge pages (`hg` in its flags).
    pub(in crate::conn) fn advised(p: *const u8) -> bool {
        vm_flags(p).is_some_and(|f| f.split_whitespace().any(|w| w == "hg"))
    }

    #[test]
    fn large_buffers_are_advised_small_ones_not() {
        if no_thp("large_buffers_are_advised_small_ones_not") {
            return;
        }
        let big: Vec<u64> = Vec::with_capacity(HUGE);
        assert!(advise(&big), "madvise refused");
        let p = big.as_ptr().cast::<u8>().wrapping_add(HUGE);
        assert!(advised(p), "{:?}", vm_flags(p));
        let small: Vec<u64> = Vec::with_capacity(1000);
        assert!(!advise(&small));
        assert!(!advise(&Vec::<u64>::new()));
    }

    #[test]
    fn reserve_exact_keeps_the_elements_and_advises_large_buffers() {
        if no_thp("reserve_exact_keeps_the_elements_and_advises_large_buffers") {
            return;
        }
        let mut v: Vec<u64> = (0..1000).collect();
        reserve_exact(&mut v, 10);
        assert!(v.capacity() >= 1010);
        reserve_exact(&mut v, HUGE / 8);
        assert_eq!(v, (0..1000).collect::<Vec<u64>>());
        assert!(v.capacity() >= 1000 + HUGE / 8);
        let p = v.as_ptr().cast::<u8>().wrapping_add(HUGE);
        assert!(advised(p), "{:?}", vm_flags(p));
    }
}
