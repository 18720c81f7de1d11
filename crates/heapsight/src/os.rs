//! Memory for the profiler's own tables, taken straight from the kernel.
//!
//! Everything the allocator hook touches lives in anonymous mappings made here, never in memory
//! from the global allocator: the hook would otherwise recurse into itself. Mappings are
//! reserved with `MAP_NORESERVE`, so only the pages a table actually uses become resident.

use std::ptr::NonNull;

/// The page size the hook's mappings are counted in.
pub(crate) const PAGE: usize = 4096;

/// Maps `len` bytes of zeroed, readable and writable memory that the kernel commits page by page
/// on first touch. Returns `None` when the address space cannot be had (an `ulimit -v`, or
/// strict overcommit); callers then run without the table and count what they drop.
pub(crate) fn map_zeroed(len: usize) -> Option<NonNull<u8>> {
    map(0, len, 0)
}

/// Maps `len` bytes as [`map_zeroed`] does, but only at exactly `addr`: `None` if anything is
/// mapped there already, or if the kernel placed the mapping elsewhere (kernels before 4.17 take
/// `MAP_FIXED_NOREPLACE` as a hint only).
pub(crate) fn map_zeroed_at(addr: usize, len: usize) -> Option<NonNull<u8>> {
    let got = map(addr, len, libc::MAP_FIXED_NOREPLACE)?;
    if got.as_ptr() as usize != addr {
        // SAFETY: the mapping was just made, at an address nobody else knows.
        unsafe { unmap(got, len) };
        return None;
    }
    Some(got)
}

fn map(addr: usize, len: usize, extra_flags: libc::c_int) -> Option<NonNull<u8>> {
    // SAFETY: an anonymous private mapping, either anywhere or (MAP_FIXED_NOREPLACE) only where
    // nothing is mapped yet, so no existing mapping of the process is disturbed; the result is
    // checked against MAP_FAILED before use.
    let ptr = unsafe {
        libc::mmap(
            addr as *mut libc::c_void,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | extra_flags,
            -1,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return None;
    }
    NonNull::new(ptr.cast())
}

/// Returns a mapping made by [`map_zeroed`] to the kernel.
///
/// # Safety
/// `ptr..ptr+len` must be a mapping from [`map_zeroed`] or [`map_zeroed_at`] that nothing refers
/// to any more.
pub(crate) unsafe fn unmap(ptr: NonNull<u8>, len: usize) {
    // SAFETY: guaranteed by the caller; munmap of a whole mapping we own cannot fail.
    unsafe { libc::munmap(ptr.as_ptr().cast(), len) };
}

/// Gives the pages of `addr..addr + len` (page-aligned, inside a mapping of ours that nobody is
/// using) back to the kernel: they stay mapped, and read as zeros when next touched.
///
/// # Safety
/// The range must lie inside a mapping from [`map_zeroed`] or [`map_zeroed_at`], and no one may
/// rely on its contents.
pub(crate) unsafe fn release(addr: usize, len: usize) {
    // SAFETY: guaranteed by the caller; MADV_DONTNEED on a private anonymous mapping only drops
    // its pages.
    unsafe { libc::madvise(addr as *mut libc::c_void, len, libc::MADV_DONTNEED) };
}

/// How many bytes of the mapping `addr..addr + len` (page-aligned, from [`map_zeroed`]) are
/// resident, as the kernel's `mincore` reports its pages. Allocates nothing.
pub(crate) fn resident_bytes(addr: usize, len: usize) -> usize {
    const CHUNK: usize = 4096;
    let mut vec = [0u8; CHUNK];
    let pages = len.div_ceil(PAGE);
    let mut resident = 0;
    let mut done = 0;
    while done < pages {
        let n = (pages - done).min(CHUNK);
        // SAFETY: the range lies inside a mapping of ours and `vec` has room for `n` pages;
        // mincore only writes `vec`.
        let ok = unsafe {
            libc::mincore(
                (addr + done * PAGE) as *mut libc::c_void,
                n * PAGE,
                vec.as_mut_ptr().cast(),
            )
        } == 0;
        if !ok {
            return resident;
        }
        resident += vec[..n].iter().filter(|&&b| b & 1 != 0).count() * PAGE;
        done += n;
    }
    resident
}
