//! Where snapshots come from. heapsight's own sampler is one source; another profiler's data
//! (jemalloc's, in `heapsight-jemalloc`) can be another, turned into the same [`Snapshot`] model
//! so that everything downstream (profiles, call trees, deltas, the server) serves it unchanged.
//!
//! Whoever builds profiles from a source's snapshots runs that work once inside the source's
//! [`SnapshotSource::unprofiled`]; building a profile never pauses or resumes sampling itself.

use crate::snapshot::{snapshot, Snapshot};
use std::fmt;

/// A source of heap snapshots.
///
/// Taking a snapshot may block (another profiler may have to write its data out first), so
/// callers on an async runtime run it on a blocking thread.
pub trait SnapshotSource: Send + Sync {
    /// A short name for people: profile comments and the server's index page show it.
    fn name(&self) -> &str;

    /// Every stack's running totals now. Two snapshots of the same source subtract with
    /// [`Snapshot::delta`].
    fn snapshot(&self) -> Result<Snapshot, SourceError>;

    /// Runs `work` as the profiler's own work on the calling thread, so that what it allocates
    /// (symbols, profiles and trees being built) stays out of the heap it profiles: heapsight's
    /// sampler counts it as its own ([`crate::own`], `Part::Requests` unless the thread is in a
    /// part already), jemalloc's profiler is paused on the thread.
    fn unprofiled(&self, work: &mut dyn FnMut()) {
        work()
    }

    /// As [`SnapshotSource::snapshot`], with the profiler's own allocations too, where the
    /// source tells them apart (on stacks of their own); by default, the same as `snapshot`.
    fn snapshot_with_own(&self) -> Result<Snapshot, SourceError> {
        self.snapshot()
    }

    /// The profiler's own memory by part, where the source measures it (heapsight's sampler
    /// does; see [`crate::own`]).
    fn own_memory(&self) -> Option<crate::own::OwnMemory> {
        None
    }

    /// What is wrong with how this source records, in words a user can act on (stacks that
    /// come out short, say): the server's index page and UI show these.
    fn warnings(&self) -> Vec<String> {
        Vec::new()
    }
}

impl<S: SnapshotSource + ?Sized> SnapshotSource for std::sync::Arc<S> {
    fn name(&self) -> &str {
        (**self).name()
    }

    fn snapshot(&self) -> Result<Snapshot, SourceError> {
        (**self).snapshot()
    }

    fn unprofiled(&self, work: &mut dyn FnMut()) {
        (**self).unprofiled(work)
    }

    fn snapshot_with_own(&self) -> Result<Snapshot, SourceError> {
        (**self).snapshot_with_own()
    }

    fn own_memory(&self) -> Option<crate::own::OwnMemory> {
        (**self).own_memory()
    }

    fn warnings(&self) -> Vec<String> {
        (**self).warnings()
    }
}

/// heapsight's own sampler: the [`crate::Sampler`] installed as the global allocator.
///
/// ```
/// use heapsight::{SamplerSource, SnapshotSource};
///
/// #[global_allocator]
/// static GLOBAL: heapsight::Sampler<std::alloc::System> =
///     heapsight::Sampler::new(std::alloc::System);
///
/// heapsight::set_sample_rate(1);
/// let before = SamplerSource.snapshot().expect("the sampler is always available");
/// // The profiler's own work: counted as the profiler's, not in the service's heap.
/// let mut scratch = Vec::new();
/// SamplerSource.unprofiled(&mut || scratch = vec![0u8; 1 << 20]);
/// let kept = vec![0u8; 1 << 20];
/// let held = SamplerSource.snapshot().unwrap().delta(&before).inuse_space();
/// assert!((1 << 20..2 << 20).contains(&held), "only `kept` is in the heap: {held}");
/// # drop((kept, scratch));
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct SamplerSource;

impl SnapshotSource for SamplerSource {
    fn name(&self) -> &str {
        "heapsight sampler"
    }

    fn snapshot(&self) -> Result<Snapshot, SourceError> {
        Ok(snapshot())
    }

    fn unprofiled(&self, work: &mut dyn FnMut()) {
        crate::own::run_or(crate::own::Part::Requests, work)
    }

    fn snapshot_with_own(&self) -> Result<Snapshot, SourceError> {
        Ok(crate::snapshot_with_own())
    }

    fn own_memory(&self) -> Option<crate::own::OwnMemory> {
        Some(crate::stats().own)
    }

    fn warnings(&self) -> Vec<String> {
        crate::stats()
            .short_stacks()
            .into_iter()
            .map(String::from)
            .collect()
    }
}

/// Why a source could not produce a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceError {
    pub kind: SourceErrorKind,
    /// What went wrong and, where it helps, how to fix it.
    pub message: String,
}

/// The kinds of [`SourceError`], which a server maps to HTTP statuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceErrorKind {
    /// The profiler behind the source is not available in this process (not compiled in, or
    /// not turned on at start). Retrying will not help.
    NotEnabled,
    /// The profiler is there but producing its data failed.
    Failed,
}

impl SourceError {
    pub fn not_enabled(message: impl Into<String>) -> SourceError {
        SourceError {
            kind: SourceErrorKind::NotEnabled,
            message: message.into(),
        }
    }

    pub fn failed(message: impl Into<String>) -> SourceError {
        SourceError {
            kind: SourceErrorKind::Failed,
            message: message.into(),
        }
    }
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SourceError {}
