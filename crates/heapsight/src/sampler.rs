//! The allocator hook: [`Sampler`] wraps any `GlobalAlloc` and samples what passes through it.
//!
//! The common cases are kept as cheap as they can be:
//! - an allocation that is not sampled costs a thread-local countdown and one branch on top of
//!   the inner allocator;
//! - a free of a block that was not sampled costs one test of two bits of the pointer plus its
//!   alignment, with no lock, no table probe and no memory read.
//!
//! The free can be that cheap because sampled blocks are placed where it can tell them apart by
//! address alone. Every sampled block lies in the region ([`crate::region`]), whose address
//! window is a shift and a compare away, or is 128 KiB or larger and recorded in the large-sample
//! table ([`crate::live`]). On top of that, a sampled block of alignment up to 8 is always
//! handed out at its [`mark`]: `16 - align` bytes past a 16-byte boundary (15 for alignment 1, 8
//! for alignment 8). The inner allocators that matter return 16-byte aligned blocks
//! (glibc, musl and jemalloc for every size above 8 bytes), and jemalloc's 8-byte blocks are
//! mostly strings of alignment 1; [`maybe_sampled`] rules all of those out with one test. What it
//! lets through (blocks of alignment 16 or more, 8-aligned blocks 8 bytes past a boundary, and
//! the sampled ones) goes to the slow path, which tests the window and the large-sample table.
//!
//! Everything else (drawing the next sample distance, walking the stack, interning it, placing
//! the block, counting) happens in `#[cold]` functions. They take the caller's arguments in the
//! caller's order, the allocator last, so that reaching one is a tail call that saves nothing.
//!
//! Must never: allocate through the global allocator (a per-thread guard stops the hook from
//! sampling inside itself), take a lock, or panic.

use crate::own::{self, OWN_SAMPLE_RATE};
use crate::poisson::{self, Rng};
use crate::stacks;
use crate::tables::{
    self, count_drop, Loss, SAMPLE_RATE, SHALLOW_DEPTH, SHALLOW_SAMPLES, TRUNCATED_STACKS,
};
use crate::unwind::{self, StackBounds};
use crate::{clock, labels, live, os, region};
use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Return addresses kept per sample, from the leaf.
pub(crate) const MAX_DEPTH: usize = 128;
/// The countdown of a thread working for the profiler: far below zero, so that every
/// allocation crosses it, however large, until the slow path pins it here again.
const OWN_PINNED: i64 = i64::MIN / 4;

/// While sampling is off, each thread looks at the rate again after this many bytes.
const OFF_RECHECK_BYTES: i64 = 1 << 20;

/// Per-thread sampler state. It has no destructor and a constant initialiser, so it is reachable
/// with a plain thread-pointer offset and stays valid while the thread's other thread-locals are
/// being destroyed.
struct ThreadState {
    /// Bytes left until the next sample point. Below zero: this allocation crossed one. Used
    /// by a [`Sampler`] with the [`SharedCountdown`]; one made by [`crate::global_allocator!`]
    /// keeps its countdown in the program's own thread-local instead (see [`bound`]).
    countdown: Cell<i64>,
    /// The countdown the global allocator's fast path takes from, as its last slow path
    /// bound it: this thread's cell of the program's [`ThreadCountdown`], or null for
    /// `countdown` above.
    bound: Cell<*const Cell<i64>>,
    /// Zero until the thread's first trip through the slow path.
    rng: Cell<u64>,
    /// Set while this thread is inside the hook's slow path.
    in_hook: Cell<bool>,
    stack: Cell<StackBounds>,
    /// This thread's shard of the region's free lists, plus one; zero until first needed.
    shard: Cell<u32>,
    /// The [`crate::own::Part`] this thread works in for the profiler, 0 for the service.
    own: Cell<u8>,
    /// While `own` is set: bytes left until the next sample point of the profiler's own
    /// allocations. `countdown` is then held at [`OWN_PINNED`], so that every allocation of
    /// the thread takes the slow path, where large ones are mapped directly.
    own_left: Cell<i64>,
    /// The label set current on this thread ([`crate::Labels`]), 0 for none: read only by a
    /// sampled allocation's slow path.
    labels: Cell<u32>,
}

thread_local! {
    static THREAD: ThreadState = const {
        ThreadState {
            countdown: Cell::new(0),
            bound: Cell::new(std::ptr::null()),
            rng: Cell::new(0),
            in_hook: Cell::new(false),
            stack: Cell::new(StackBounds { low: 0, high: 0 }),
            shard: Cell::new(0),
            own: Cell::new(0),
            own_left: Cell::new(0),
            labels: Cell::new(0),
        }
    };
}

/// A global allocator that samples the allocations it passes on to `A`.
///
/// ```
/// #[global_allocator]
/// static GLOBAL: heapsight::Sampler<std::alloc::System> =
///     heapsight::Sampler::new(std::alloc::System);
///
/// heapsight::set_sample_rate(64 * 1024);
/// let before = heapsight::snapshot();
/// let kept: Vec<Vec<u8>> = (0..64).map(|_| vec![7u8; 256 * 1024]).collect();
/// // 16 MiB held, estimated from a sample of about 256 allocations of it.
/// let held = heapsight::snapshot().delta(&before).inuse_space();
/// assert!((12 << 20..20 << 20).contains(&held), "{held} bytes");
/// # drop(kept);
/// ```
///
/// Sampled blocks smaller than 128 KiB are served from the profiler's own address range rather
/// than by `A`; everything else goes to `A` unchanged.
///
/// [`crate::global_allocator!`] declares the same, with each thread's countdown in a
/// thread-local of the program's own crate: one instruction less per allocation.
pub struct Sampler<A, C = SharedCountdown> {
    inner: A,
    countdown: PhantomData<C>,
}

impl<A> Sampler<A> {
    /// Wraps `inner`, usually `std::alloc::System` or `tikv_jemallocator::Jemalloc`.
    pub const fn new(inner: A) -> Self {
        Sampler {
            inner,
            countdown: PhantomData,
        }
    }
}

impl<A, C: ThreadCountdown> Sampler<A, C> {
    /// Wraps `inner`, with each thread's countdown where `C` keeps it (what
    /// [`crate::global_allocator!`] expands to).
    pub const fn with_countdown(inner: A) -> Self {
        Sampler {
            inner,
            countdown: PhantomData,
        }
    }

    /// The wrapped allocator.
    pub fn inner(&self) -> &A {
        &self.inner
    }
}

/// Takes `size` bytes off a countdown. True when no sample point was crossed: the caller goes
/// straight to the inner allocator.
#[inline(always)]
fn take(countdown: &Cell<i64>, size: usize) -> bool {
    let left = countdown.get().wrapping_sub(size as i64);
    countdown.set(left);
    left >= 0
}

/// The calling thread's countdown, as the global allocator's last slow path bound it.
fn cd(t: &ThreadState) -> &Cell<i64> {
    let bound = t.bound.get();
    if bound.is_null() {
        &t.countdown
    } else {
        // SAFETY: `bound` is this thread's cell of a `ThreadCountdown`, a thread-local with a
        // constant initialiser and no destructor, valid for as long as the thread runs.
        unsafe { &*bound }
    }
}

/// Makes `countdown` the one the slow paths of this thread draw into, before they decide.
fn bind(countdown: &Cell<i64>) {
    THREAD.with(|t| t.bound.set(countdown))
}

/// Where a [`Sampler`] keeps each thread's countdown: the bytes left until its next sample
/// point, which every allocation takes its size off.
///
/// The default, [`SharedCountdown`], is a thread-local of this crate. From the program's own
/// crate, a thread-local of a library is reached through an offset the linker fills in: one
/// instruction more on every allocation than a thread-local of the program itself, which
/// [`crate::global_allocator!`] declares.
///
/// # Safety
/// `with` must hand its closure the calling thread's own cell, the same one on every call on
/// that thread, which must live as long as the thread (a `thread_local!` with a `const`
/// initialiser has no destructor and does), and must not allocate.
pub unsafe trait ThreadCountdown {
    /// Calls `f` with the calling thread's countdown.
    fn with<R>(f: impl FnOnce(&Cell<i64>) -> R) -> R;
}

/// The countdown of [`Sampler::new`]: a thread-local of heapsight's own.
pub struct SharedCountdown;

// SAFETY: the thread's own cell of THREAD, a thread-local with a constant initialiser and no
// destructor.
unsafe impl ThreadCountdown for SharedCountdown {
    #[inline(always)]
    fn with<R>(f: impl FnOnce(&Cell<i64>) -> R) -> R {
        THREAD.with(|t| f(&t.countdown))
    }
}

/// Whether a sampled block of this layout would be tracked in the large-sample table.
#[inline(always)]
fn is_large(layout: Layout) -> bool {
    (layout.size() | layout.align()) >= region::LARGE
}

/// Where a sampled block of alignment `align` starts, past a 16-byte boundary: its mark.
///
/// A block of alignment up to 8 starts `16 - align` bytes past one (15 for alignment 1, 8 for
/// alignment 8), so that `ptr + align` is a multiple of 16; a block of larger alignment starts
/// on one (it cannot start anywhere else). [`maybe_sampled`] tests exactly that sum, so it rules
/// out a free of a 16-byte aligned block of alignment up to 8 (what the inner allocators that
/// matter hand out above 8 bytes), and of an 8-byte block of alignment up to 4 wherever it lies
/// (jemalloc's 8-byte class, mostly short strings), with one `test`.
#[inline(always)]
pub(crate) const fn mark(align: usize) -> usize {
    if align <= 8 {
        16 - align
    } else {
        0
    }
}

/// Whether a sampled block of this layout starts past a 16-byte boundary (see [`mark`]).
#[inline(always)]
fn tagged(layout: Layout) -> bool {
    layout.align() <= 8
}

/// The free path's filter: false for every block that was not sampled, true for every block
/// that was (and for some that were not, which the slow path then tells apart).
///
/// `ptr + align` is a multiple of 16 exactly for: a block of alignment up to 8 that starts
/// `16 - align` bytes past a 16-byte boundary, which is where sampled blocks of those alignments
/// are placed ([`mark`]); and every block of alignment 16 or more, for which the slow path
/// decides. Through the global allocator shims, where the alignment is not a constant, the
/// filter is three instructions (`lea`, `test`, a branch), the same for every alignment.
#[inline(always)]
fn maybe_sampled(ptr: *mut u8, layout: Layout) -> bool {
    // Told that the block is aligned to its layout's alignment, the compiler turns the test
    // for a constant alignment of 8 into one of bit 3.
    if (ptr as usize) & (layout.align() - 1) != 0 {
        // SAFETY: unreachable: a block is aligned to its layout's alignment (GlobalAlloc's
        // contract for every pointer this is asked about).
        unsafe { std::hint::unreachable_unchecked() }
    }
    (ptr as usize).wrapping_add(layout.align()) & 15 == 0
}

/// The inner allocator's layout for a large sampled block of `layout`, and the block's offset in
/// it: a tagged block is 16 bytes longer, 16-byte aligned, and starts [`mark`] bytes in.
fn large_placement(layout: Layout) -> Option<(Layout, usize)> {
    if !tagged(layout) {
        return Some((layout, 0));
    }
    let outer = Layout::from_size_align(layout.size().checked_add(16)?, 16).ok()?;
    Some((outer, mark(layout.align())))
}

static SEEDS: AtomicU64 = AtomicU64::new(0);
static SHARD_TURN: AtomicU32 = AtomicU32::new(0);

/// This thread's shard of the region's free lists, handed out round-robin on first use, so that
/// threads that sample at the same time mostly touch cache lines of their own.
fn shard(t: &ThreadState) -> usize {
    match t.shard.get() {
        0 => {
            let s = SHARD_TURN.fetch_add(1, Ordering::Relaxed) as usize % region::SHARDS;
            t.shard.set(s as u32 + 1);
            s
        }
        s => s as usize - 1,
    }
}

/// The sample rate for this thread's allocations: the service's, or [`OWN_SAMPLE_RATE`] while
/// it works for the profiler (off whenever the service's sampling is off).
#[inline]
fn rate_for(t: &ThreadState) -> usize {
    let rate = SAMPLE_RATE.load(Ordering::Relaxed);
    if t.own.get() != 0 && rate != 0 {
        OWN_SAMPLE_RATE
    } else {
        rate
    }
}

/// Draws the thread's next sample point afresh, at its current rate. Sample distances are
/// memoryless, so a fresh draw is as unbiased as the one that was running.
fn redraw(t: &ThreadState) {
    if t.rng.get() != 0 {
        let mut rng = Rng::new(t.rng.get());
        cd(t).set(next_countdown(&mut rng, rate_for(t)));
        t.rng.set(rng.next_u64() | 1);
    }
}

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
        let rate = rate_for(t);
        if t.in_hook.get() {
            // Paused (or inside the hook): place the next sample point further on, so that the
            // paused thread does not come through here on every allocation.
            if t.rng.get() != 0 {
                let mut rng = Rng::new(t.rng.get());
                cd(t).set(next_countdown(&mut rng, rate).max(OFF_RECHECK_BYTES));
                t.rng.set(rng.next_u64() | 1);
            }
            return None;
        }
        if t.rng.get() == 0 {
            // First allocation on this thread: place its first sample point, then see whether
            // this allocation already reaches it. The process's first allocation also sets up
            // the tables, before it can have started a thread of its own (std allocates in the
            // parent to spawn one): set up later, by whichever thread sampled first, every
            // thread sampling meanwhile would lose its samples to the set-up.
            tables::ready();
            // The thread's stack, known from its start: the CPU profiler's signal handler walks
            // inside it and cannot ask for it (pthread_getattr_np is not async-signal-safe).
            if t.stack.get().high == 0 {
                t.stack.set(StackBounds::current());
            }
            let mut rng = seed(t);
            let left = next_countdown(&mut rng, rate).saturating_sub(size as i64);
            t.rng.set(rng.next_u64() | 1);
            cd(t).set(left);
            if t.own.get() != 0 {
                // Entered the profiler's work before its first allocation: draw its distance.
                let mut rng = Rng::new(t.rng.get());
                t.own_left.set(next_countdown(&mut rng, rate));
                t.rng.set(rng.next_u64() | 1);
                return decide_own(t, size, rate);
            }
            if left >= 0 || rate == 0 {
                return None;
            }
        }
        if t.own.get() != 0 {
            return decide_own(t, size, rate);
        }
        let mut rng = Rng::new(t.rng.get());
        let next = next_countdown(&mut rng, rate);
        t.rng.set(rng.next_u64() | 1);
        cd(t).set(next);
        if rate == 0 {
            return None;
        }
        Some(poisson::weight_fixed(size as u64, rate as u64))
    })
}

/// [`decide`] for a thread working for the profiler: its sample distance is `own_left`, and its
/// countdown stays pinned (see [`ThreadState::own_left`]).
fn decide_own(t: &ThreadState, size: usize, rate: usize) -> Option<u64> {
    cd(t).set(OWN_PINNED);
    if rate == 0 {
        return None;
    }
    let left = t.own_left.get().saturating_sub(size as i64);
    if left >= 0 {
        t.own_left.set(left);
        return None;
    }
    let mut rng = Rng::new(t.rng.get());
    t.own_left.set(next_countdown(&mut rng, rate));
    t.rng.set(rng.next_u64() | 1);
    Some(poisson::weight_fixed(size as u64, rate as u64))
}

/// The mapping that holds one of the profiler's own large blocks of `layout`: whole pages, with
/// room for the block to start [`mark`] bytes in.
fn mapped_len(layout: Layout) -> usize {
    (layout.size() + 16).next_multiple_of(os::PAGE)
}

/// Whether this allocation is one of the profiler's own large blocks, which the hook maps
/// directly rather than asking the inner allocator: handed back to glibc, a block this large
/// raises its mmap and trim thresholds for good (to the block's size, and twice that), after
/// which the arenas the profiler's work used keep their free tops resident.
#[inline]
fn own_mapped(layout: Layout) -> bool {
    layout.size() >= region::LARGE
        && layout.size() <= isize::MAX as usize / 2
        && layout.align() <= os::PAGE
        && THREAD.with(|t| t.own.get() != 0 && !t.in_hook.get())
}

/// Marks this thread as inside the hook for as long as it lives.
struct InHook<'a>(&'a Cell<bool>);

impl Drop for InHook<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

/// Walks the calling thread's stack from the hook's frame at `frame_marker` outwards and
/// interns it: the sample's stack id, or the loss to count. `t` is the thread's state, already
/// marked as inside the hook.
fn capture_stack(t: &ThreadState, frame_marker: usize) -> Result<u32, Loss> {
    let mut bounds = t.stack.get();
    if bounds.high == 0 {
        bounds = StackBounds::current();
        t.stack.set(bounds);
    }
    let mut frames = [0usize; MAX_DEPTH];
    let (mut depth, truncated) = unwind::capture(bounds, &mut frames, frame_marker);
    if t.own.get() != 0 {
        // The profiler's own allocation: its part's marker goes outermost.
        depth = (depth + 1).min(MAX_DEPTH);
        frames[depth - 1] = own::marker_frame(t.own.get());
    } else if t.labels.get() != 0 {
        // Made under a label set: the set goes outermost, so that the same code under two sets
        // is two stacks, each with its own totals.
        depth = (depth + 1).min(MAX_DEPTH);
        frames[depth - 1] = labels::label_frame(t.labels.get());
    }
    if truncated {
        TRUNCATED_STACKS.fetch_add(1, Ordering::Relaxed);
    }
    if depth <= SHALLOW_DEPTH {
        SHALLOW_SAMPLES.fetch_add(1, Ordering::Relaxed);
    }
    match stacks::intern(&frames[..depth]) {
        Ok(id) => Ok(id),
        Err(stacks::InternError::NoTable) => Err(Loss::NoTables),
        Err(stacks::InternError::Full) => Err(Loss::StackTableFull),
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

impl<A: GlobalAlloc, C: ThreadCountdown> Sampler<A, C> {
    /// An allocation that crossed this thread's sample point: sampled, or (when sampling is off
    /// or paused) passed on. Kept out of line so the fast path is a bare tail call.
    ///
    /// # Safety
    /// As [`GlobalAlloc::alloc`]: `layout` has a non-zero size. `zeroed` asks for the block
    /// to be zeroed, as [`GlobalAlloc::alloc_zeroed`] does.
    #[cold]
    #[inline(never)]
    unsafe fn alloc_slow(layout: Layout, zeroed: bool, this: &Self) -> *mut u8 {
        C::with(bind);
        let sampled = decide(layout.size());
        if sampled.is_none() && own_mapped(layout) {
            // SAFETY: forwarded unchanged from our caller.
            return unsafe { this.alloc_mapped(layout, zeroed) };
        }
        match sampled {
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
    ///
    /// # Safety
    /// As [`GlobalAlloc::alloc`]: `layout` has a non-zero size. `weight_fx` is the weight
    /// [`decide`] drew for this allocation.
    #[cold]
    #[inline(never)]
    unsafe fn alloc_sampled(&self, layout: Layout, weight_fx: u64, zeroed: bool) -> *mut u8 {
        // SAFETY: forwarded from the caller's GlobalAlloc contract (non-zero size).
        let plain = |this: &Self| unsafe { this.inner_alloc(layout, zeroed) };
        if !tables::ready() {
            count_drop(Loss::NoTables);
            return plain(self);
        }
        // Asked before the hook marks the thread as inside it.
        let mapped = own_mapped(layout);
        let frame_marker = 0u8;
        let frame_marker = std::hint::black_box(&frame_marker) as *const u8 as usize;
        THREAD.with(|t| {
            t.in_hook.set(true);
            let _guard = InHook(&t.in_hook);
            let stack = match capture_stack(t, frame_marker) {
                Ok(id) => id,
                Err(loss) => {
                    count_drop(loss);
                    return plain(self);
                }
            };
            let size = layout.size();
            if !is_large(layout) {
                let offset = mark(layout.align());
                let Some(slot) = region::alloc(size, layout.align(), offset, shard(t)) else {
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
                // Release: a snapshot's scan that sees the stamp sees the fields above.
                slot.meta.allocated.store(clock::stamp(), Ordering::Release);
                record_alloc(stack, size, weight_fx);
                slot.ptr.as_ptr()
            } else {
                let Some((outer, offset)) = large_placement(layout) else {
                    // A size this close to `isize::MAX` cannot be served by any allocator.
                    return plain(self);
                };
                let raw = if mapped {
                    os::map_zeroed(mapped_len(layout)).map_or(std::ptr::null_mut(), |p| p.as_ptr())
                } else {
                    // SAFETY: `outer` has a non-zero size (it is at least `layout`'s).
                    unsafe {
                        if zeroed {
                            self.inner.alloc_zeroed(outer)
                        } else {
                            self.inner.alloc(outer)
                        }
                    }
                };
                if raw.is_null() {
                    return if mapped { plain(self) } else { raw };
                }
                // SAFETY: `offset` is at most 15, inside the `outer.size() > 16` bytes at `raw`.
                let ptr = unsafe { raw.add(offset) };
                let sample = live::LargeSample {
                    stack,
                    allocated: clock::stamp(),
                    weight_fx,
                    size: size as u64,
                    mapped,
                };
                if live::insert(ptr as usize, sample) {
                    record_alloc(stack, size, weight_fx);
                    ptr
                } else {
                    // Untracked, a tagged block could not be told apart from a plain one when
                    // freed: give it back and hand out a plain block instead.
                    count_drop(Loss::LargeTableFull);
                    if mapped {
                        // SAFETY: mapped just above with this length, never handed out.
                        unsafe { os::unmap(NonNull::new_unchecked(raw), mapped_len(layout)) };
                    } else {
                        // SAFETY: allocated just above with `outer`, never handed out.
                        unsafe { self.inner.dealloc(raw, outer) };
                    }
                    plain(self)
                }
            }
        })
    }

    /// Frees a block that may have been sampled: a region slot, or a large block that may be in
    /// the large-sample table.
    ///
    /// # Safety
    /// As [`GlobalAlloc::dealloc`]: `ptr` was allocated by this allocator with `layout` and is
    /// not used again.
    #[cold]
    #[inline(never)]
    unsafe fn dealloc_slow(ptr: *mut u8, layout: Layout, this: &Self) {
        // The window first: a test of the pointer alone, where `contains` reads the region's
        // start (most blocks that come here were not sampled: see `maybe_sampled`).
        if region::in_window(ptr) && region::contains(ptr) {
            let meta = region::slot_of(ptr);
            let stack = meta.stack_or_next.load(Ordering::Relaxed);
            let size = meta.size.load(Ordering::Relaxed) as usize;
            record_free(stack, size, meta.weight_fx.load(Ordering::Relaxed));
            region::free(ptr, THREAD.with(shard));
            return;
        }
        if is_large(layout) {
            if let Some(s) = live::remove(ptr as usize) {
                if s.stack != live::NO_STACK {
                    record_free(s.stack, layout.size(), s.weight_fx);
                }
                // SAFETY: a large block of `layout` in the table, no longer used.
                unsafe { this.dealloc_large(ptr, layout, s.mapped) };
                return;
            }
        }
        // SAFETY: not a sampled block, so `ptr` came from the inner allocator with `layout`.
        unsafe { this.inner.dealloc(ptr, layout) }
    }

    /// Gives a large sampled block back to the inner allocator.
    ///
    /// # Safety
    /// `ptr` was handed out by `alloc_sampled` for `layout` as a large block, and is not used
    /// again.
    unsafe fn dealloc_large(&self, ptr: *mut u8, layout: Layout, mapped: bool) {
        // SAFETY: `large_placement` gave a placement for this layout when the block was placed,
        // and gives the same one now.
        let (outer, offset) = unsafe { large_placement(layout).unwrap_unchecked() };
        if mapped {
            // SAFETY: the block starts `offset` bytes into a mapping of `mapped_len(layout)`
            // bytes made for it alone.
            unsafe { os::unmap(NonNull::new_unchecked(ptr.sub(offset)), mapped_len(layout)) };
            return;
        }
        // SAFETY: the block starts `offset` bytes into an allocation of `outer`.
        unsafe { self.inner.dealloc(ptr.sub(offset), outer) }
    }

    /// The inner allocator's block of `layout`, zeroed if asked.
    ///
    /// # Safety
    /// As [`GlobalAlloc::alloc`].
    unsafe fn inner_alloc(&self, layout: Layout, zeroed: bool) -> *mut u8 {
        // SAFETY: forwarded from the caller's GlobalAlloc contract.
        unsafe {
            if zeroed {
                self.inner.alloc_zeroed(layout)
            } else {
                self.inner.alloc(layout)
            }
        }
    }

    /// One of the profiler's own large blocks, unsampled, in a mapping of its own (see
    /// [`own_mapped`]), tracked in the large-sample table with no stack so that its free finds
    /// it. Falls back to the inner allocator if it cannot be mapped or tracked.
    ///
    /// # Safety
    /// As [`GlobalAlloc::alloc`].
    #[cold]
    #[inline(never)]
    unsafe fn alloc_mapped(&self, layout: Layout, zeroed: bool) -> *mut u8 {
        // SAFETY: forwarded from the caller's GlobalAlloc contract (non-zero size).
        let plain = || unsafe { self.inner_alloc(layout, zeroed) };
        if !tables::ready() {
            return plain();
        }
        let Some(raw) = os::map_zeroed(mapped_len(layout)) else {
            return plain();
        };
        let offset = mark(layout.align());
        // SAFETY: `offset` is at most 15, inside the mapping (at least a page).
        let ptr = unsafe { raw.as_ptr().add(offset) };
        let record = live::LargeSample {
            stack: live::NO_STACK,
            allocated: clock::stamp(),
            weight_fx: 0,
            size: layout.size() as u64,
            mapped: true,
        };
        if live::insert(ptr as usize, record) {
            return ptr;
        }
        // SAFETY: mapped just above with this length, never handed out.
        unsafe { os::unmap(raw, mapped_len(layout)) };
        plain()
    }

    /// Resizes a large tagged block of the large-sample table in place, through the inner
    /// allocator's `realloc` of the padded block around it: the bytes keep their offset, so
    /// nothing is copied that the inner allocator would not copy itself. Growing a large block
    /// nearly always crosses a sample point, so a growing vector that was sampled once stays in
    /// the table from then on; when this resize is not sampled, it stays as a block with no
    /// stack ([`live::NO_STACK`]), counted nowhere, until freed.
    ///
    /// `None` when the block must move instead (its new size is past what a placement allows).
    ///
    /// # Safety
    /// As [`GlobalAlloc::realloc`]; `ptr` is a tagged large block in the large-sample table, not
    /// a mapped one, and `new_size` is at least [`region::LARGE`].
    #[cold]
    #[inline(never)]
    unsafe fn resize_tagged(
        &self,
        ptr: *mut u8,
        layout: Layout,
        new_size: usize,
        sample_new: Option<u64>,
    ) -> Option<*mut u8> {
        let frame_marker = 0u8;
        let frame_marker = std::hint::black_box(&frame_marker) as *const u8 as usize;
        let (outer, offset) = large_placement(layout)?;
        // SAFETY: (new_size, align) is a valid layout (GlobalAlloc::realloc's contract).
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        let (new_outer, _) = large_placement(new_layout)?;
        let old = live::remove(ptr as usize)?;
        // SAFETY: the block starts `offset` bytes into an inner allocation of `outer`; the new
        // size is non-zero and, with `outer`'s alignment, a valid layout (checked above).
        let raw = unsafe { self.inner.realloc(ptr.sub(offset), outer, new_outer.size()) };
        if raw.is_null() {
            // The old block is still there and still tracked as it was.
            live::insert(ptr as usize, old);
            return Some(raw);
        }
        if old.stack != live::NO_STACK {
            record_free(old.stack, layout.size(), old.weight_fx);
        }
        // SAFETY: `offset` is at most 15, inside the `new_outer.size() > 16` bytes at `raw`.
        let new = unsafe { raw.add(offset) };
        let mut record = live::LargeSample {
            stack: live::NO_STACK,
            allocated: clock::stamp(),
            weight_fx: 0,
            size: new_size as u64,
            mapped: false,
        };
        if let Some(weight_fx) = sample_new {
            let captured = THREAD.with(|t| {
                t.in_hook.set(true);
                let _guard = InHook(&t.in_hook);
                capture_stack(t, frame_marker)
            });
            match captured {
                Ok(stack) => {
                    record.stack = stack;
                    record.weight_fx = weight_fx;
                }
                Err(loss) => count_drop(loss),
            }
        }
        if live::insert(new as usize, record) {
            if record.stack != live::NO_STACK {
                record_alloc(record.stack, new_size, record.weight_fx);
            }
            return Some(new);
        }
        // Untracked, the tagged block could not be told apart from a plain one when freed:
        // move its bytes into a plain block.
        if record.stack != live::NO_STACK {
            count_drop(Loss::LargeTableFull);
        }
        // SAFETY: a non-zero layout (GlobalAlloc::realloc's contract).
        let plain = unsafe { self.inner.alloc(new_layout) };
        if plain.is_null() {
            // The old block is gone (resized), and the new one can be neither tracked nor
            // moved: a null here would tell the caller the old block is still valid. What a
            // collection does when its allocation fails, in the one case where both the table's
            // two buckets for this address and the memory are full.
            std::alloc::handle_alloc_error(new_layout);
        }
        // SAFETY: both blocks are live, distinct, and at least `new_size` bytes long.
        unsafe { std::ptr::copy_nonoverlapping(new, plain, new_size) };
        // SAFETY: the padded block just resized, never handed out.
        unsafe { self.inner.dealloc(raw, new_outer) };
        Some(plain)
    }

    /// A resize the fast path could not pass straight on: the old block may have been sampled,
    /// or the new size crossed the sample point (`crossed`).
    ///
    /// # Safety
    /// As [`GlobalAlloc::realloc`]: `ptr` was allocated by this allocator with `layout`,
    /// `new_size` is non-zero, and `(new_size, layout.align())` is a valid layout.
    #[cold]
    #[inline(never)]
    unsafe fn realloc_slow(
        ptr: *mut u8,
        layout: Layout,
        new_size: usize,
        crossed: bool,
        this: &Self,
    ) -> *mut u8 {
        let sample_new = if crossed {
            C::with(bind);
            decide(new_size)
        } else {
            None
        };
        // SAFETY: GlobalAlloc::realloc's contract makes (new_size, align) a valid layout.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        let tracked = is_large(layout) && live::contains(ptr as usize);
        if tracked && tagged(layout) && is_large(new_layout) && !live::is_mapped(ptr as usize) {
            // A large tagged block, sampled now or before, that stays large: the inner
            // allocator resizes its padded block, which keeps the block at its offset.
            // SAFETY: forwarded from our caller; the block is in the large-sample table.
            if let Some(new) = unsafe { this.resize_tagged(ptr, layout, new_size, sample_new) } {
                return new;
            }
        }
        // A tagged large block sits inside a padded allocation, so it cannot be resized in place
        // into a plain one.
        let moves = sample_new.is_some()
            || region::contains(ptr)
            || (tracked && (tagged(layout) || live::is_mapped(ptr as usize)))
            || own_mapped(new_layout);
        if !moves {
            // A block of the inner allocator, not sampled again: let the inner allocator resize
            // it in place, and count the old sample (if any) as freed once it has.
            let old = if tracked {
                live::remove(ptr as usize)
            } else {
                None
            };
            // SAFETY: not a region slot nor a tagged large block, so `ptr` came from the inner
            // allocator with `layout`.
            let new = unsafe { this.inner.realloc(ptr, layout, new_size) };
            match old {
                Some(s) if new.is_null() => {
                    // The old block is still there and still sampled.
                    live::insert(ptr as usize, s);
                }
                Some(s) if s.stack != live::NO_STACK => {
                    record_free(s.stack, layout.size(), s.weight_fx)
                }
                _ => {}
            }
            return new;
        }
        // Move it.
        let new = match sample_new {
            // SAFETY: new_layout has a non-zero size (GlobalAlloc::realloc's contract).
            Some(w) => unsafe { this.alloc_sampled(new_layout, w, false) },
            // SAFETY: as above.
            None if own_mapped(new_layout) => unsafe { this.alloc_mapped(new_layout, false) },
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

// SAFETY: every block handed out is one of: the inner allocator's, for the layout asked; a region
// slot at least as large and as aligned as the layout, or `mark(align)` (8 to 15) bytes into such
// a slot for alignments up to 8 (region::alloc's classes round `max(size + offset, align)` up to a
// power of two inside an aligned span); or, for a large sampled block of alignment up to 8,
// `mark(align)` bytes into an inner allocation 16 bytes longer and 16-byte aligned. Each is used by one owner at a time. Frees go
// back to whichever made the block, told apart by address and, for large ones, the large-sample
// table.
unsafe impl<A: GlobalAlloc, C: ThreadCountdown> GlobalAlloc for Sampler<A, C> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if C::with(|c| take(c, layout.size())) {
            // SAFETY: forwarded unchanged from our caller.
            return unsafe { self.inner.alloc(layout) };
        }
        // SAFETY: forwarded unchanged from our caller.
        unsafe { Self::alloc_slow(layout, false, self) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if C::with(|c| take(c, layout.size())) {
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
        // Written as two branches rather than a `crossed` flag, so that the countdown is a
        // `sub` to memory here too (a flag kept in a register costs a load and a store).
        if C::with(|c| take(c, new_size)) {
            if !maybe_sampled(ptr, layout) {
                // SAFETY: neither block is sampled: this is the inner allocator's realloc.
                return unsafe { self.inner.realloc(ptr, layout, new_size) };
            }
            // SAFETY: forwarded unchanged from our caller.
            return unsafe { Self::realloc_slow(ptr, layout, new_size, false, self) };
        }
        // SAFETY: forwarded unchanged from our caller.
        unsafe { Self::realloc_slow(ptr, layout, new_size, true, self) }
    }
}

/// Counts this thread's allocations from now on as the profiler's own, of part `part` (a
/// [`crate::own::Part`] value): sampled at [`OWN_SAMPLE_RATE`], each stack marked with the
/// part's frame. Returns the part the thread was in, for [`leave_own`]. Entering from the
/// service's work (and leaving back to it) draws a fresh sample distance at the new rate.
pub(crate) fn enter_own(part: u8) -> u8 {
    THREAD.with(|t| {
        let was = t.own.replace(part);
        if was == 0 && !t.in_hook.get() && t.rng.get() != 0 {
            let mut rng = Rng::new(t.rng.get());
            t.own_left.set(next_countdown(&mut rng, rate_for(t)));
            t.rng.set(rng.next_u64() | 1);
            cd(t).set(OWN_PINNED);
        }
        was
    })
}

/// Undoes [`enter_own`], given what it returned.
pub(crate) fn leave_own(was: u8) {
    THREAD.with(|t| {
        let part = t.own.replace(was);
        if (part == 0) != (was == 0) && !t.in_hook.get() {
            redraw(t);
        }
    })
}

/// Makes label set `id` current on the calling thread; returns the one that was.
#[inline]
pub(crate) fn swap_labels(id: u32) -> u32 {
    THREAD.with(|t| t.labels.replace(id))
}

/// The label set current on the calling thread.
#[inline]
pub(crate) fn current_labels() -> u32 {
    THREAD.with(|t| t.labels.get())
}

/// The calling thread's stack as the hook learned it, or empty bounds if it has not yet: only
/// reads a thread-local, so a signal handler may call it.
pub(crate) fn known_stack_bounds() -> StackBounds {
    THREAD.with(|t| t.stack.get())
}

/// The raw [`crate::own::Part`] the calling thread works in, 0 for the service.
pub(crate) fn own_part() -> u8 {
    THREAD.with(|t| t.own.get())
}

/// Sets the mean number of bytes between samples, for every thread.
///
/// `1` records every allocation; `0` turns sampling off. The calling thread draws its next
/// sample point at the new rate at once; other threads do so at their next sample (or within
/// 1 MiB of allocation, if sampling was off).
///
/// ```
/// heapsight::set_sample_rate(64 * 1024);
/// assert_eq!(heapsight::sample_rate(), 64 * 1024);
/// heapsight::set_sample_rate(heapsight::DEFAULT_SAMPLE_RATE);
/// ```
pub fn set_sample_rate(rate: usize) {
    SAMPLE_RATE.store(rate, Ordering::Relaxed);
    THREAD.with(|t| {
        let mut rng = if t.rng.get() == 0 {
            seed(t)
        } else {
            Rng::new(t.rng.get())
        };
        cd(t).set(next_countdown(&mut rng, rate_for(t)));
        t.rng.set(rng.next_u64() | 1);
    });
}

/// The current sample rate: mean bytes between samples, `1` for every allocation, `0` for off.
pub fn sample_rate() -> usize {
    SAMPLE_RATE.load(Ordering::Relaxed)
}
