//! heapsight: the allocator hook of an in-process heap profiler for Rust services.
//!
//! Install [`Sampler`] as the global allocator. From then on a statistically unbiased sample of
//! allocations (a Poisson process over bytes, mean [`sample_rate`] bytes apart) is recorded with
//! its call stack, at a cost low enough to leave on in production. [`snapshot()`] copies what
//! was recorded: every sampled stack's running totals, estimates of the whole heap.
//!
//! ```
//! #[global_allocator]
//! static GLOBAL: heapsight::Sampler<std::alloc::System> =
//!     heapsight::Sampler::new(std::alloc::System);
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
mod live;
mod os;
pub mod own;
mod poisson;
mod region;
mod sampler;
mod snapshot;
mod source;
mod stack_store;
mod stacks;
mod tables;
mod unwind;

pub use cpu::{start_cpu_profile, CpuProfile, CpuProfileError, CpuProfiler};
pub use poisson::sample_weight;
pub use sampler::{sample_rate, set_sample_rate, Sampler};
pub use snapshot::{
    snapshot, snapshot_with_own, LiveBlock, SamplerStacks, Snapshot, StackFrames, StackId,
    StackTotals, OBJECT_UNIT,
};
pub use source::{SamplerSource, SnapshotSource, SourceError, SourceErrorKind};
pub use stack_store::StackStore;
pub use tables::{stats, Stats, DEFAULT_SAMPLE_RATE, SHORT_STACKS};
pub use unwind::{set_unwinder, unwinder, Unwinder};
