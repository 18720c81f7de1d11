//! The frame-pointer unwinder used inside the allocator hook.
//!
//! With frame pointers, every frame starts with a two-word record: the caller's frame pointer,
//! then the return address into the caller. Walking that chain costs a couple of loads a frame
//! and needs no unwind tables, no locks and no allocation, which is why the hook uses it; libgcc's
//! `_Unwind_Backtrace` takes a global lock and has deadlocked allocator hooks in other profilers.
//!
//! Every load is checked against the current thread's stack bounds first, so a broken chain
//! (a frame built without frame pointers, garbage in the register) ends the walk instead of
//! reading outside the stack. The bounds come from `pthread_getattr_np` once per thread.
//!
//! Must never: read outside the current thread's stack, allocate, or panic.

/// The current thread's stack, as `[low, high)`. Zero-sized if it could not be learned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct StackBounds {
    pub(crate) low: usize,
    pub(crate) high: usize,
}

impl StackBounds {
    /// Asks the C library for the calling thread's stack.
    ///
    /// Called once per thread from inside the hook. glibc may call `malloc` here (for the main
    /// thread it reads `/proc/self/maps`); that is the C allocator, not Rust's global allocator,
    /// so it cannot re-enter the hook.
    pub(crate) fn current() -> StackBounds {
        // SAFETY: pthread_attr_t is plain data that pthread_getattr_np initialises; we only read
        // it after a zero return, and destroy it exactly once.
        unsafe {
            let mut attr: libc::pthread_attr_t = std::mem::zeroed();
            if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
                return StackBounds::default();
            }
            let mut addr: *mut libc::c_void = std::ptr::null_mut();
            let mut size: libc::size_t = 0;
            let ok = libc::pthread_attr_getstack(&attr, &mut addr, &mut size) == 0;
            libc::pthread_attr_destroy(&mut attr);
            if !ok || addr.is_null() {
                return StackBounds::default();
            }
            StackBounds { low: addr as usize, high: addr as usize + size }
        }
    }
}

/// The frame pointer of the function that calls this (it is always inlined into its caller).
#[inline(always)]
fn frame_pointer() -> usize {
    let fp: usize;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: reads a register; no memory access, no side effects.
    unsafe {
        std::arch::asm!("mov {}, rbp", out(reg) fp, options(nomem, nostack, preserves_flags))
    };
    #[cfg(target_arch = "aarch64")]
    // SAFETY: reads a register; no memory access, no side effects.
    unsafe {
        std::arch::asm!("mov {}, x29", out(reg) fp, options(nomem, nostack, preserves_flags))
    };
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        fp = 0;
    }
    fp
}

/// Fills `out` with return addresses, leaf first, starting with the return address into the
/// caller of the function that calls `walk`. Returns how many were written; the walk stops at the
/// end of the chain, at the first frame outside `bounds`, or when `out` is full (`truncated`).
#[inline(always)]
pub(crate) fn walk(bounds: StackBounds, out: &mut [usize]) -> (usize, bool) {
    let mut fp = frame_pointer();
    // The walk starts in the caller's own frame, so the lowest legal frame is the one we are in.
    let low = bounds.low.max(fp);
    let mut n = 0;
    while n < out.len() {
        // A frame record is two words, 8- or 16-byte aligned, strictly inside the stack.
        if fp < low || fp % std::mem::align_of::<usize>() != 0 || fp.saturating_add(16) > bounds.high {
            return (n, false);
        }
        // SAFETY: fp..fp+16 was just checked to lie inside the current thread's stack, which is
        // mapped and readable for as long as this thread runs.
        let (next, ret) = unsafe { (*(fp as *const usize), *((fp + 8) as *const usize)) };
        if ret == 0 {
            return (n, false);
        }
        out[n] = ret;
        n += 1;
        // Frames grow towards higher addresses as we move to callers; anything else is a loop.
        if next <= fp {
            return (n, false);
        }
        fp = next;
    }
    (n, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn leaf(out: &mut [usize]) -> usize {
        let (n, _) = walk(StackBounds::current(), out);
        std::hint::black_box(n)
    }

    #[inline(never)]
    fn middle(out: &mut [usize]) -> usize {
        std::hint::black_box(leaf(out)) + 0
    }

    #[test]
    fn walk_reaches_the_callers_and_stays_inside_the_stack() {
        let mut out = [0usize; 64];
        let n = middle(&mut out);
        // leaf -> middle -> this test -> the test harness: at least three return addresses.
        assert!(n >= 3, "only {n} frames");
        let here = walk_reaches_the_callers_and_stays_inside_the_stack as usize;
        // Return addresses point into code, never into the stack.
        let b = StackBounds::current();
        assert!(out[..n].iter().all(|&a| a < b.low || a >= b.high));
        assert!(here != 0);
    }

    #[test]
    fn bounds_of_this_thread_contain_a_local() {
        let local = 0u8;
        let b = StackBounds::current();
        let p = &local as *const u8 as usize;
        assert!(b.low <= p && p < b.high, "{b:?} {p:#x}");
    }

    #[test]
    fn empty_bounds_give_no_frames() {
        let mut out = [0usize; 8];
        assert_eq!(walk(StackBounds::default(), &mut out), (0, false));
    }
}
