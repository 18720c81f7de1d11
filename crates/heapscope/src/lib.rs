//! heapscope: in-process heap profiling for Rust, in the format Go's `net/http/pprof` serves.
//!
//! Install [`Sampler`] as the global allocator. From then on a statistically unbiased sample of
//! allocations (a Poisson process over bytes, mean [`sample_rate`] bytes apart) is recorded with
//! its call stack, at a cost low enough to leave on in production. [`write_heap_profile`] and
//! [`write_allocs_profile`] write what was recorded as gzip-compressed `profile.proto`, which
//! `go tool pprof`, Parca and Grafana Pyroscope read as they read a Go service's heap profile.
//!
//! ```
//! #[global_allocator]
//! static GLOBAL: heapscope::Sampler<std::alloc::System> =
//!     heapscope::Sampler::new(std::alloc::System);
//!
//! heapscope::set_sample_rate(512 * 1024);
//! let mut file = Vec::new(); // or a std::fs::File
//! heapscope::write_heap_profile(&mut file)?;
//! heapscope::write_allocs_profile(&mut file)?;
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! Build with frame pointers (`-C force-frame-pointers=yes`): the hook walks them to record
//! stacks, and without them stacks come out short.
//!
//! The pieces, each in its own module: the hook ([`Sampler`], `sampler`), the sampling decision
//! (`poisson`), the unwinder (`unwind`), the tables (`stacks`, `region`, `live`), snapshots
//! ([`snapshot()`], and [`SnapshotSource`] for other profilers' data), the symbolizer ([`symbolize`]), the profile model ([`Profile`]), its
//! encodings ([`pprof`], legacy text, folded stacks) and call trees ([`CallTree`]).

#![deny(unsafe_op_in_unsafe_fn)]

mod folded;
mod legacy;
mod live;
mod os;
mod poisson;
pub mod pprof;
mod profile;
mod region;
mod sampler;
mod snapshot;
mod source;
mod stacks;
pub mod symbolize;
mod tables;
mod tree;
mod unwind;

pub use legacy::write_legacy_heap_text;
pub use poisson::sample_weight;
pub use pprof::DecodeError;
pub use profile::{
    heap_sample_types, is_plumbing, Function, HeapView, Line, Location, Mapping, NumLabel, Profile,
    Sample, ValueType, PLUMBING_FRAMES,
};
pub use sampler::{sample_rate, set_sample_rate, Sampler};
pub use snapshot::{snapshot, Snapshot, StackId, StackTotals, OBJECT_UNIT};
pub use source::{SamplerSource, SnapshotSource, SourceError, SourceErrorKind};
pub use tables::{stats, Stats, DEFAULT_SAMPLE_RATE};
pub use tree::{CallTree, TreeFilter, TreeNode};
pub use unwind::{set_unwinder, unwinder, Unwinder};

use std::io::{self, Write};

/// Writes the heap as sampled so far: gzip-compressed `profile.proto` with the sample types
/// `alloc_objects, alloc_space, inuse_objects, inuse_space`, opening on `inuse_space` (like
/// Go's `pprof.WriteHeapProfile`).
pub fn write_heap_profile(w: &mut impl Write) -> io::Result<()> {
    let profile = Profile::heap(&snapshot(), HeapView::InUse);
    sampler::without_sampling(|| profile.write_pprof(w))
}

/// The same data as [`write_heap_profile`], opening on `alloc_space` (Go's `allocs` profile).
pub fn write_allocs_profile(w: &mut impl Write) -> io::Result<()> {
    let profile = Profile::heap(&snapshot(), HeapView::Allocs);
    sampler::without_sampling(|| profile.write_pprof(w))
}
