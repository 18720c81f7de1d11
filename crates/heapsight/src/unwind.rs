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
//! Programs built without frame pointers can opt into a DWARF unwinder instead: heapsight's own,
//! framehop over the process's `.eh_frame` (Cargo feature `dwarf-unwind`, then
//! [`set_unwinder`]`(Unwinder::Dwarf)`), lock-free and allocation-free; or libgcc's through the
//! `backtrace` crate (feature `backtrace-fallback`), with libgcc's locks. Both find complete
//! stacks without frame pointers, at a higher cost per sample than the frame-pointer walk.
//!
//! Must never: read outside the current thread's stack, allocate, or panic.

use std::sync::atomic::{AtomicU8, Ordering};

/// How the allocator hook walks the stack of a sampled allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unwinder {
    /// Follow frame pointers (the default): fast, lock-free, bounds-checked. Needs the program
    /// built with `-C force-frame-pointers=yes`.
    FramePointers,
    /// libgcc's DWARF unwinder (`_Unwind_Backtrace`): works without frame pointers, but takes
    /// locks inside the unwinder and costs several microseconds per sample. Needs the
    /// `backtrace-fallback` feature.
    Libgcc,
    /// heapsight's own DWARF unwinder (framehop over the process's `.eh_frame`, prepared when
    /// chosen): works without frame pointers, lock-free and without allocating. Needs the
    /// `dwarf-unwind` feature, on x86_64. Objects loaded after it is chosen are not unwound
    /// through; choose it again after a `dlopen`.
    Dwarf,
}

const DWARF_AVAILABLE: bool = cfg!(all(feature = "dwarf-unwind", target_arch = "x86_64"));

static UNWINDER: AtomicU8 = AtomicU8::new(0);

/// Chooses the unwinder for samples taken from now on. Returns false (and changes nothing) if
/// the choice is not compiled in.
///
/// ```
/// use heapsight::Unwinder;
/// assert_eq!(heapsight::unwinder(), Unwinder::FramePointers);
/// let available = heapsight::set_unwinder(Unwinder::Libgcc);
/// assert_eq!(available, cfg!(feature = "backtrace-fallback"));
/// heapsight::set_unwinder(Unwinder::FramePointers);
/// ```
pub fn set_unwinder(unwinder: Unwinder) -> bool {
    match unwinder {
        Unwinder::Libgcc if !cfg!(feature = "backtrace-fallback") => return false,
        Unwinder::Dwarf if !DWARF_AVAILABLE => return false,
        #[cfg(all(feature = "dwarf-unwind", target_arch = "x86_64"))]
        // Its tables are the profiler's memory: built with sampling paused.
        Unwinder::Dwarf => crate::own::run(crate::own::Part::Tables, crate::dwarf::prepare),
        _ => {}
    }
    UNWINDER.store(unwinder as u8, Ordering::Relaxed);
    true
}

/// The unwinder in use.
pub fn unwinder() -> Unwinder {
    match UNWINDER.load(Ordering::Relaxed) {
        0 => Unwinder::FramePointers,
        1 => Unwinder::Libgcc,
        _ => Unwinder::Dwarf,
    }
}

/// Fills `out` with return addresses of the calling function's callers, leaf first, with the
/// chosen unwinder. Returns how many, and whether the stack was deeper than `out`.
///
/// `caller_frame` is the address of a local variable of the function that captures: frames
/// below it (the unwinder's own) are left out by unwinders that see them.
#[inline(always)]
pub(crate) fn capture(
    bounds: StackBounds,
    out: &mut [usize],
    caller_frame: usize,
) -> (usize, bool) {
    match UNWINDER.load(Ordering::Relaxed) {
        #[cfg(feature = "backtrace-fallback")]
        1 => return capture_libgcc(out, caller_frame),
        #[cfg(all(feature = "dwarf-unwind", target_arch = "x86_64"))]
        2 => {
            if let Some(captured) = crate::dwarf::capture(bounds, out, caller_frame) {
                return captured;
            }
        }
        _ => {}
    }
    let _ = caller_frame;
    walk(bounds, out)
}

#[cfg(feature = "backtrace-fallback")]
#[inline(never)]
fn capture_libgcc(out: &mut [usize], caller_frame: usize) -> (usize, bool) {
    let mut n = 0;
    let mut truncated = false;
    // SAFETY: trace_unsynchronized requires that no other thread calls into the `backtrace`
    // crate's unsynchronized API at the same time in a way that races on its state; it has no
    // state for plain tracing (libgcc's unwinder does its own locking), and the callback neither
    // allocates nor panics.
    unsafe {
        backtrace::trace_unsynchronized(|frame| {
            if n == out.len() {
                truncated = true;
                return false;
            }
            let ip = frame.ip() as usize;
            // Frames at lower addresses than the capturing function's locals are its callees:
            // this function, the `backtrace` crate, libgcc.
            if ip != 0 && frame.sp() as usize > caller_frame {
                out[n] = ip;
                n += 1;
            }
            true
        })
    };
    (n, truncated)
}

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
            StackBounds {
                low: addr as usize,
                high: addr as usize + size,
            }
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
    let fp = frame_pointer();
    // The walk starts in the caller's own frame, so the lowest legal frame is the one we are in.
    walk_from(fp, bounds.low.max(fp), bounds.high, out)
}

/// As [`walk`], from the frame record at `fp`, reading only inside `[low, high)`: a stack, or
/// the part of one above an interrupted stack pointer.
#[inline(always)]
pub(crate) fn walk_from(
    mut fp: usize,
    low: usize,
    high: usize,
    out: &mut [usize],
) -> (usize, bool) {
    let bounds = StackBounds { low, high };
    let mut n = 0;
    while n < out.len() {
        // A frame record is two words, 8- or 16-byte aligned, strictly inside the stack.
        if fp < low
            || fp % std::mem::align_of::<usize>() != 0
            || fp.saturating_add(16) > bounds.high
        {
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
        let n = leaf(out);
        std::hint::black_box(n)
    }

    #[test]
    fn walk_reaches_the_callers_in_order() {
        let mut out = [0usize; 64];
        let n = middle(&mut out);
        assert!(n >= 3, "only {n} frames");
        // The first return address is into leaf's caller, the next into its caller: each lies
        // just past the start of the function that made the call (these functions are small).
        let inside = |ret: usize, function: usize| ret > function && ret - function < 4096;
        let middle_at = middle as fn(&mut [usize]) -> usize as usize;
        let test_at = walk_reaches_the_callers_in_order as fn() as usize;
        assert!(inside(out[0], middle_at), "{:#x} vs {middle_at:#x}", out[0]);
        assert!(inside(out[1], test_at), "{:#x} vs {test_at:#x}", out[1]);
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
