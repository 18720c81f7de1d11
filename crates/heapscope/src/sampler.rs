//! The allocator hook: [`Sampler`] wraps any `GlobalAlloc` and samples what passes through it.
//!
//! The common cases are kept as cheap as they can be:
//! - an allocation that is not sampled costs a thread-local countdown and one branch on top of
//!   the inner allocator;
//! - a free of a block that was not sampled costs one compare of `size | align` against a
//!   constant and one test of the pointer's top bits, with no lock, no table probe and no memory
//!   read (see [`crate::region`]).
//!
//! Everything else (drawing the next sample distance, walking the stack, interning it, placing
//! the block, counting) happens in `#[cold]` functions. They take the caller's arguments in the
//! caller's order, the allocator last, so that reaching one is a tail call that saves nothing.
//!
//! Must never: allocate through the global allocator (a per-thread guard stops the hook from
//! sampling inside itself), take a lock, or panic.

use crate::poisson::{self, Rng};
use crate::stacks;
use crate::tables::{self, count_drop, Loss, SAMPLE_RATE, TRUNCATED_STACKS};
use crate::unwind::{self, StackBounds};
use crate::{live, region};
use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

/// Return addresses kept per sample, from the leaf.
pub(crate) const MAX_DEPTH: usize = 128;
/// While sampling is off, each thread looks at the rate again after this many bytes.
const OFF_RECHECK_BYTES: i64 = 1 << 20;

/// Per-thread sampler state. It has no destructor and a constant initialiser, so it is reachable
/// with a plain thread-pointer offset and stays valid while the thread's other thread-locals are
/// being destroyed.
struct ThreadState {
    /// Bytes left until the next sample point. Below zero: this allocation crossed one.
    countdown: Cell<i64>,
    /// Zero until the thread's first trip through the slow path.
    rng: Cell<u64>,
    /// Set while this thread is inside the hook's slow path.
    in_hook: Cell<bool>,
    stack: Cell<StackBounds>,
}

thread_local! {
    static THREAD: ThreadState = const {
        ThreadState {
            countdown: Cell::new(0),
            rng: Cell::new(0),
            in_hook: Cell::new(false),
            stack: Cell::new(StackBounds { low: 0, high: 0 }),
        }
    };
}

/// A global allocator that samples the allocations it passes on to `A`.
///
/// ```
/// #[global_allocator]
/// static GLOBAL: heapscope::Sampler<std::alloc::System> =
///     heapscope::Sampler::new(std::alloc::System);
///
/// heapscope::set_sample_rate(64 * 1024);
/// let kept: Vec<Vec<u8>> = (0..64).map(|_| vec![7u8; 256 * 1024]).collect();
/// let mut profile = Vec::new();
/// heapscope::write_heap_profile(&mut profile)?;
/// assert!(!profile.is_empty());
/// # drop(kept);
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// Sampled blocks smaller than 128 KiB are served from the profiler's own address range rather
/// than by `A`; everything else goes to `A` unchanged.
pub struct Sampler<A> {
    inner: A,
}

impl<A> Sampler<A> {
    /// Wraps `inner`, usually `std::alloc::System` or `tikv_jemallocator::Jemalloc`.
    pub const fn new(inner: A) -> Self {
        Sampler { inner }
    }

    /// The wrapped allocator.
    pub fn inner(&self) -> &A {
        &self.inner
    }
}

/// Takes `size` bytes off this thread's countdown. True when no sample point was crossed: the
/// caller goes straight to the inner allocator.
#[inline(always)]
fn countdown(size: usize) -> bool {
    THREAD.with(|t| {
        let left = t.countdown.get().wrapping_sub(size as i64);
        t.countdown.set(left);
        left >= 0
    })
}

/// Whether a sampled block of this layout would be tracked in the large-sample table.
#[inline(always)]
fn is_large(layout: Layout) -> bool {
    (layout.size() | layout.align()) >= region::LARGE
}

/// The free path's filter: false for every block that was not sampled, at the cost of two
/// compares against constants.
#[inline(always)]
fn maybe_sampled(ptr: *mut u8, layout: Layout) -> bool {
    is_large(layout) || region::in_window(ptr)
}

static SEEDS: AtomicU64 = AtomicU64::new(0);

fn seed(t: &ThreadState) -> Rng {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we own and nothing else.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let mut rng = Rng::new(
        (ts.tv_nsec as u64 ^ (ts.tv_sec as u64).rotate_left(32))
            ^ (t as *const ThreadState as u64).rotate_left(17)
            ^ SEEDS.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed),
    );
    rng.next_u64();
    rng
}

fn next_countdown(rng: &mut Rng, rate: usize) -> i64 {
    match rate {
        0 => OFF_RECHECK_BYTES,
        1 => 0,
        r => rng.next_sample_distance(r as u64).min(i64::MAX as u64) as i64,
    }
}

/// Called when an allocation of `size` bytes took the countdown below zero. Returns the sample's
/// fixed-point weight when it is to be recorded.
#[cold]
#[inline(never)]
fn decide(size: usize) -> Option<u64> {
    THREAD.with(|t| {
        let rate = SAMPLE_RATE.load(Ordering::Relaxed);
        if t.in_hook.get() {
            // Paused (or inside the hook): place the next sample point further on, so that the
            // paused thread does not come through here on every allocation.
            if t.rng.get() != 0 {
                let mut rng = Rng::new(t.rng.get());
                t.countdown
                    .set(next_countdown(&mut rng, rate).max(OFF_RECHECK_BYTES));
                t.rng.set(rng.next_u64() | 1);
            }
            return None;
        }
        if t.rng.get() == 0 {
            // First allocation on this thread: place its first sample point, then see whether
            // this allocation already reaches it.
            let mut rng = seed(t);
            let left = next_countdown(&mut rng, rate).saturating_sub(size as i64);
            t.rng.set(rng.next_u64() | 1);
            t.countdown.set(left);
            if left >= 0 || rate == 0 {
                return None;
            }
        }
        let mut rng = Rng::new(t.rng.get());
        let next = next_countdown(&mut rng, rate);
        t.rng.set(rng.next_u64() | 1);
        t.countdown.set(next);
        if rate == 0 {
            return None;
        }
        Some(poisson::weight_fixed(size as u64, rate as u64))
    })
}

/// Marks this thread as inside the hook for as long as it lives.
struct InHook<'a>(&'a Cell<bool>);

impl Drop for InHook<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

fn record_alloc(stack: u32, size: usize, weight_fx: u64) {
    let t = stacks::totals(stack);
    t.alloc_objects_fx.fetch_add(weight_fx, Ordering::Relaxed);
    t.alloc_space.fetch_add(
        poisson::weighted_bytes(size as u64, weight_fx),
        Ordering::Relaxed,
    );
    t.alloc_sample_bytes
        .fetch_add(size as u64, Ordering::Relaxed);
    // Release: a snapshot that sees this count also sees the stack's frames.
    t.alloc_samples.fetch_add(1, Ordering::Release);
}

fn record_free(stack: u32, size: usize, weight_fx: u64) {
    let t = stacks::totals(stack);
    t.free_objects_fx.fetch_add(weight_fx, Ordering::Relaxed);
    t.free_space.fetch_add(
        poisson::weighted_bytes(size as u64, weight_fx),
        Ordering::Relaxed,
    );
    t.free_sample_bytes
        .fetch_add(size as u64, Ordering::Relaxed);
    t.free_samples.fetch_add(1, Ordering::Relaxed);
}

impl<A: GlobalAlloc> Sampler<A> {
    /// An allocation that crossed this thread's sample point: sampled, or (when sampling is off
    /// or paused) passed on. Kept out of line so the fast path is a bare tail call.
    #[cold]
    #[inline(never)]
    unsafe fn alloc_slow(layout: Layout, zeroed: bool, this: &Self) -> *mut u8 {
        match decide(layout.size()) {
            // SAFETY: forwarded unchanged from our caller.
            Some(w) => unsafe { this.alloc_sampled(layout, w, zeroed) },
            // SAFETY: forwarded unchanged from our caller.
            None if zeroed => unsafe { this.inner.alloc_zeroed(layout) },
            // SAFETY: forwarded unchanged from our caller.
            None => unsafe { this.inner.alloc(layout) },
        }
    }

    /// Records a sampled allocation: walks the stack, interns it and places the block where a
    /// free will recognise it. Any table that is full turns the sample into a counted drop and
    /// the allocation into a plain one.
    #[cold]
    #[inline(never)]
    unsafe fn alloc_sampled(&self, layout: Layout, weight_fx: u64, zeroed: bool) -> *mut u8 {
        let plain = |this: &Self| {
            // SAFETY: forwarded from the caller's GlobalAlloc contract (non-zero size).
            unsafe {
                if zeroed {
                    this.inner.alloc_zeroed(layout)
                } else {
                    this.inner.alloc(layout)
                }
            }
        };
        if !tables::ready() {
            count_drop(Loss::NoTables);
            return plain(self);
        }
        let frame_marker = 0u8;
        let frame_marker = std::hint::black_box(&frame_marker) as *const u8 as usize;
        THREAD.with(|t| {
            t.in_hook.set(true);
            let _guard = InHook(&t.in_hook);
            let mut bounds = t.stack.get();
            if bounds.high == 0 {
                bounds = StackBounds::current();
                t.stack.set(bounds);
            }
            let mut frames = [0usize; MAX_DEPTH];
            let (depth, truncated) = unwind::capture(bounds, &mut frames, frame_marker);
            if truncated {
                TRUNCATED_STACKS.fetch_add(1, Ordering::Relaxed);
            }
            let stack = match stacks::intern(&frames[..depth]) {
                Ok(id) => id,
                Err(stacks::InternError::NoTable) => {
                    count_drop(Loss::NoTables);
                    return plain(self);
                }
                Err(stacks::InternError::Full) => {
                    count_drop(Loss::StackTableFull);
                    return plain(self);
                }
            };
            let size = layout.size();
            if !is_large(layout) {
                let Some(slot) = region::alloc(size, layout.align()) else {
                    count_drop(Loss::RegionFull);
                    return plain(self);
                };
                if zeroed {
                    // SAFETY: the slot is at least `size` bytes of writable memory that nobody
                    // else holds (a reused slot still has its previous owner's bytes).
                    unsafe { slot.ptr.as_ptr().write_bytes(0, size) };
                }
                slot.meta.stack_or_next.store(stack, Ordering::Relaxed);
                slot.meta.size.store(size as u32, Ordering::Relaxed);
                slot.meta.weight_fx.store(weight_fx, Ordering::Relaxed);
                record_alloc(stack, size, weight_fx);
                slot.ptr.as_ptr()
            } else {
                let ptr = plain(self);
                if ptr.is_null() {
                    return ptr;
                }
                if live::insert(ptr as usize, stack, weight_fx) {
                    record_alloc(stack, size, weight_fx);
                } else {
                    count_drop(Loss::LargeTableFull);
                }
                ptr
            }
        })
    }

    /// Frees a block that may have been sampled: a region slot, or a large block that may be in
    /// the large-sample table.
    #[cold]
    #[inline(never)]
    unsafe fn dealloc_slow(ptr: *mut u8, layout: Layout, this: &Self) {
        if region::contains(ptr) {
            let meta = region::slot_of(ptr);
            let stack = meta.stack_or_next.load(Ordering::Relaxed);
            let size = meta.size.load(Ordering::Relaxed) as usize;
            record_free(stack, size, meta.weight_fx.load(Ordering::Relaxed));
            region::free(ptr);
            return;
        }
        if is_large(layout) {
            if let Some(s) = live::remove(ptr as usize) {
                record_free(s.stack, layout.size(), s.weight_fx);
            }
        }
        // SAFETY: not a region slot, so `ptr` came from the inner allocator with `layout`.
        unsafe { this.inner.dealloc(ptr, layout) }
    }

    #[cold]
    #[inline(never)]
    unsafe fn realloc_slow(
        ptr: *mut u8,
        layout: Layout,
        new_size: usize,
        crossed: bool,
        this: &Self,
    ) -> *mut u8 {
        let sample_new = if crossed { decide(new_size) } else { None };
        // SAFETY: GlobalAlloc::realloc's contract makes (new_size, align) a valid layout.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if sample_new.is_none() && !region::contains(ptr) {
            // A block of the inner allocator, not sampled again: let the inner allocator resize
            // it in place, and count the old sample (if any) as freed once it has.
            let old = if is_large(layout) {
                live::remove(ptr as usize)
            } else {
                None
            };
            // SAFETY: `ptr` came from the inner allocator with `layout` (it is not a region slot).
            let new = unsafe { this.inner.realloc(ptr, layout, new_size) };
            match old {
                Some(s) if new.is_null() => {
                    // The old block is still there and still sampled.
                    live::insert(ptr as usize, s.stack, s.weight_fx);
                }
                Some(s) => record_free(s.stack, layout.size(), s.weight_fx),
                None => {}
            }
            return new;
        }
        // The new block is sampled, or the old one is a region slot: move it.
        let new = match sample_new {
            // SAFETY: new_layout has a non-zero size (GlobalAlloc::realloc's contract).
            Some(w) => unsafe { this.alloc_sampled(new_layout, w, false) },
            // SAFETY: as above.
            None => unsafe { this.inner.alloc(new_layout) },
        };
        if !new.is_null() {
            // SAFETY: both blocks are live, distinct, and at least this long.
            unsafe { std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size)) };
            // SAFETY: `ptr` was allocated by this allocator with `layout` and is not used again.
            unsafe { this.dealloc(ptr, layout) };
        }
        new
    }
}

// SAFETY: every block handed out is either the inner allocator's (for the layout asked) or a
// region slot at least as large and as aligned as the layout (region::alloc's classes round
// `max(size, align)` up to a power of two inside an aligned span), used by one owner at a time.
// Frees go back to whichever of the two made the block, told apart by address.
unsafe impl<A: GlobalAlloc> GlobalAlloc for Sampler<A> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if countdown(layout.size()) {
            // SAFETY: forwarded unchanged from our caller.
            return unsafe { self.inner.alloc(layout) };
        }
        // SAFETY: forwarded unchanged from our caller.
        unsafe { Self::alloc_slow(layout, false, self) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if countdown(layout.size()) {
            // SAFETY: forwarded unchanged from our caller.
            return unsafe { self.inner.alloc_zeroed(layout) };
        }
        // SAFETY: forwarded unchanged from our caller.
        unsafe { Self::alloc_slow(layout, true, self) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if maybe_sampled(ptr, layout) {
            // SAFETY: forwarded unchanged from our caller.
            unsafe { Self::dealloc_slow(ptr, layout, self) }
        } else {
            // SAFETY: not a region slot, so the inner allocator made it with this layout.
            unsafe { self.inner.dealloc(ptr, layout) }
        }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let crossed = !countdown(new_size);
        if !crossed && !maybe_sampled(ptr, layout) {
            // SAFETY: neither block is sampled: this is the inner allocator's realloc unchanged.
            return unsafe { self.inner.realloc(ptr, layout, new_size) };
        }
        // SAFETY: forwarded unchanged from our caller.
        unsafe { Self::realloc_slow(ptr, layout, new_size, crossed, self) }
    }
}

/// Runs `f` with sampling paused on this thread, so that the profiler's own work (symbolizing,
/// encoding) does not show up in the profiles it writes.
pub(crate) fn without_sampling<R>(f: impl FnOnce() -> R) -> R {
    THREAD.with(|t| {
        let was = t.in_hook.replace(true);
        struct Restore<'a>(&'a Cell<bool>, bool);
        impl Drop for Restore<'_> {
            fn drop(&mut self) {
                self.0.set(self.1);
            }
        }
        let _restore = Restore(&t.in_hook, was);
        f()
    })
}

/// Sets the mean number of bytes between samples, for every thread.
///
/// `1` records every allocation; `0` turns sampling off. The calling thread draws its next
/// sample point at the new rate at once; other threads do so at their next sample (or within
/// 1 MiB of allocation, if sampling was off).
///
/// ```
/// heapscope::set_sample_rate(64 * 1024);
/// assert_eq!(heapscope::sample_rate(), 64 * 1024);
/// heapscope::set_sample_rate(heapscope::DEFAULT_SAMPLE_RATE);
/// ```
pub fn set_sample_rate(rate: usize) {
    SAMPLE_RATE.store(rate, Ordering::Relaxed);
    THREAD.with(|t| {
        let mut rng = if t.rng.get() == 0 {
            seed(t)
        } else {
            Rng::new(t.rng.get())
        };
        t.countdown.set(next_countdown(&mut rng, rate));
        t.rng.set(rng.next_u64() | 1);
    });
}

/// The current sample rate: mean bytes between samples, `1` for every allocation, `0` for off.
pub fn sample_rate() -> usize {
    SAMPLE_RATE.load(Ordering::Relaxed)
}
