//! heapsight-profile: turns heapsight's snapshots into profiles people and tools read.
//!
//! The offline half of heapsight, apart from the allocator hook (the `heapsight` crate), which
//! only records: the profile model ([`Profile`]), the symbolizer ([`symbolize`]), the plumbing
//! rule that starts each stack at the code that allocated ([`is_plumbing`]), the rule of which
//! frames are the user's own code ([`UserCode`]), the encodings
//! ([`pprof`] protobuf, Go's legacy text, folded stacks), call trees ([`CallTree`]) and the
//! ranking of growing stacks ([`growth`]).
//!
//! Writing a heap profile is one call:
//!
//! ```
//! #[global_allocator]
//! static GLOBAL: heapsight::Sampler<std::alloc::System> =
//!     heapsight::Sampler::new(std::alloc::System);
//!
//! heapsight::set_sample_rate(64 * 1024);
//! let sessions: Vec<Vec<u8>> = (0..64).map(|_| vec![1; 256 << 10]).collect();
//! let mut file = Vec::new(); // or a std::fs::File
//! heapsight_profile::write_heap_profile(&mut file)?; // gzipped pprof, as Go writes it
//! let profile = heapsight_profile::Profile::from_pprof_bytes(&file).unwrap();
//! let inuse = profile.total("inuse_space");
//! assert!((12 << 20..20 << 20).contains(&inuse), "{inuse} bytes of about 16 MiB");
//! # drop(sessions);
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! Nothing here pauses sampling on its own: whoever builds a profile does that once, through
//! its source ([`heapsight::SnapshotSource::unprofiled`]), as the functions below do for the
//! sampler.

mod debug_info;
mod folded;
pub mod growth;
mod legacy;
mod plumbing;
pub mod pprof;
mod profile;
pub mod symbolize;
mod tree;
mod user_code;

pub use legacy::write_legacy_heap_text;
pub use plumbing::{is_plumbing, PLUMBING_FRAMES};
pub use pprof::DecodeError;
pub use profile::{
    heap_sample_types, Function, HeapView, Label, Line, Location, Mapping, NumLabel, Profile,
    Sample, ValueType,
};
pub use tree::{CallTree, TreeFilter, TreeNode};
pub use user_code::{UserCode, DEFAULT_LIBRARIES};

use heapsight::{SamplerSource, SnapshotSource};
use std::io::{self, Write};

/// A heap profile of the sampler's heap now, built with sampling paused on this thread.
pub fn heap_profile(view: HeapView) -> Profile {
    let mut profile = Profile::default();
    SamplerSource.unprofiled(&mut || profile = Profile::heap(&heapsight::snapshot(), view));
    profile
}

/// Writes the heap as sampled so far: gzip-compressed `profile.proto` with the sample types
/// `alloc_objects, alloc_space, inuse_objects, inuse_space`, opening on `inuse_space` (like
/// Go's `pprof.WriteHeapProfile`).
pub fn write_heap_profile(w: &mut impl Write) -> io::Result<()> {
    write_sampled(HeapView::InUse, w)
}

/// The same data as [`write_heap_profile`], opening on `alloc_space` (Go's `allocs` profile).
pub fn write_allocs_profile(w: &mut impl Write) -> io::Result<()> {
    write_sampled(HeapView::Allocs, w)
}

fn write_sampled(view: HeapView, w: &mut impl Write) -> io::Result<()> {
    let mut written = Ok(());
    SamplerSource.unprofiled(&mut || {
        written = Profile::heap(&heapsight::snapshot(), view).write_pprof(&mut *w)
    });
    written
}
