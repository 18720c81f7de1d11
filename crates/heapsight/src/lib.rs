//! heapsight: the allocator hook of an in-process heap profiler for Rust services.
//!
//! Install [`Sampler`] as the global allocator, with [`global_allocator!`]. From then on a statistically unbiased sample of
//! allocations (a Poisson process over bytes, mean [`sample_rate`] bytes apart) is recorded with
//! its call stack, at a cost low enough to leave on in production. [`snapshot()`] copies what
//! was recorded: every sampled stack's running totals, estimates of the whole heap.
//!
//! ```
//! heapsight::global_allocator!(std::alloc::System);
//!
//! heapsight::set_sample_rate(1); // every allocation, for this example; 512 KiB by default
//! let before = heapsight::snapshot();
//! let kept: Vec<Box<[u8; 4096]>> = (0..256).map(|_| Box::new([7; 4096])).collect();
//! let held = heapsight::snapshot().delta(&before);
//! assert!(held.inuse_space() >= 256 * 4096, "{} bytes", held.inuse_space());
//! # drop(kept);
//! ```
//!
//! This crate only records. Naming the stacks and writing profiles (pprof, folded stacks, call
//! trees) is `heapsight-profile`'s job; serving them at `/debug/pprof` is `heapsight-server`'s.
//!
//! `#[global_allocator] static GLOBAL: Sampler<System> = Sampler::new(System);` works as well; the
//! macro's allocator keeps each thread's sample countdown in a thread-local of the program's own
//! crate, which its allocations reach with one instruction fewer (docs/performance.md, "Through
//! the global allocator shims").
//!
//! Build with frame pointers (`-C force-frame-pointers=yes`): the hook walks them to record
//! stacks, and without them stacks come out short.
//!
//! The pieces, each in its own module: the hook ([`Sampler`], `sampler`), the sampling decision
//! (`poisson`), the unwinder (`unwind`), the tables (`stacks`, `region`, `live`), the counters
//! ([`stats`]), and snapshots ([`snapshot()`], with [`SnapshotSource`] for other profilers'
//! data and [`StackStore`] for their stacks).
//!
//! Must never: allocate through the global allocator or block inside the hook. Nothing here
//! knows of symbols, profile formats or HTTP.

mod clock;
mod cpu;
#[cfg(all(feature = "dwarf-unwind", target_arch = "x86_64"))]
mod dwarf;
pub mod labels;
mod live;
mod lockfree;
mod os;
pub mod own;
mod poisson;
mod region;
mod sampler;
mod snapshot;
mod source;
mod stack_store;
mod stacks;
mod sync;
mod tables;
mod unwind;

pub use cpu::{start_cpu_profile, CpuProfile, CpuProfileError, CpuProfiler};
pub use labels::{LabelGuard, Labeled, Labels};
pub use poisson::sample_weight;
pub use sampler::{sample_rate, set_sample_rate, Sampler, SharedCountdown, ThreadCountdown};
pub use snapshot::{
    snapshot, snapshot_with_own, LiveBlock, SamplerStacks, Snapshot, StackFrames, StackId,
    StackTotals, OBJECT_UNIT,
};
pub use source::{SamplerSource, SnapshotSource, SourceError, SourceErrorKind};
pub use stack_store::StackStore;
pub use tables::{stats, Stats, DEFAULT_SAMPLE_RATE, SHORT_STACKS};
pub use unwind::{set_unwinder, unwinder, Unwinder};

/// Makes [`Sampler`] over an allocator the program's global allocator.
///
/// `heapsight::global_allocator!(std::alloc::System);` or, for an allocator that is not a unit
/// struct, `heapsight::global_allocator!(MyAlloc = MyAlloc::new());`. Use it once, in the
/// program's own crate (a library should leave the choice of allocator to the program).
///
/// It is `#[global_allocator] static GLOBAL: Sampler<A> = Sampler::new(A);`, with one
/// difference: each thread's sample countdown is a thread-local declared here, in the
/// program's crate, rather than in heapsight's. In an executable that is a fixed offset from
/// the thread pointer, so an allocation that is not sampled costs a `sub` to memory and a
/// branch, one instruction fewer than with a library's thread-local. A shared library built
/// with the macro links too (its thread-local is reached the general way there).
///
/// ```
/// heapsight::global_allocator!(std::alloc::System);
///
/// heapsight::set_sample_rate(64 * 1024);
/// let before = heapsight::snapshot();
/// let kept: Vec<Vec<u8>> = (0..64).map(|_| vec![7u8; 256 * 1024]).collect();
/// let held = heapsight::snapshot().delta(&before).inuse_space();
/// assert!((12 << 20..20 << 20).contains(&held), "{held} bytes");
/// # drop(kept);
/// ```
#[macro_export]
macro_rules! global_allocator {
    ($inner:ty = $value:expr) => {
        const _: () = {
            ::std::thread_local! {
                static HEAPSIGHT_COUNTDOWN: ::std::cell::Cell<i64> =
                    const { ::std::cell::Cell::new(0) };
            }

            struct Countdown;

            // SAFETY: the calling thread's own cell of a thread-local with a constant
            // initialiser and no destructor, which does not allocate.
            unsafe impl $crate::ThreadCountdown for Countdown {
                #[inline(always)]
                fn with<R>(f: impl FnOnce(&::std::cell::Cell<i64>) -> R) -> R {
                    HEAPSIGHT_COUNTDOWN.with(f)
                }
            }

            #[global_allocator]
            static HEAPSIGHT_GLOBAL: $crate::Sampler<$inner, Countdown> =
                $crate::Sampler::with_countdown($value);
        };
    };
    ($inner:path) => {
        $crate::global_allocator!($inner = $inner);
    };
}
