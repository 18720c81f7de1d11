//! What every request works with: the server's settings, the worker threads that build
//! profiles, and taking snapshots (fresh, or from the history).
//!
//! Handlers reach the source only through here, so that its rules hold everywhere: snapshots
//! are taken off the async workers (a source may block), and profile building runs once inside
//! the source's `unprofiled`, so the profiler's own memory stays out of the heap it serves.

use crate::error::ProfileError;
use crate::history::History;
use crate::worker;
use axum::http::StatusCode;
use heapsight::{Snapshot, SnapshotSource};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Settings shared by the handlers.
pub(crate) struct Settings {
    pub(crate) source: Arc<dyn SnapshotSource>,
    pub(crate) max_seconds: Duration,
    /// Permits for delta profiles that wait.
    pub(crate) waits: Arc<Semaphore>,
    pub(crate) history: Option<Arc<History>>,
    pub(crate) bearer_token: Option<String>,
    /// Which frames are the service's own code (the server's option; a request may add more).
    pub(crate) user_code: heapsight_profile::UserCode,
    /// Whether `/heap` and `/allocs` name their frames (else `/symbol` does, for the reader).
    pub(crate) names_in_process: bool,
    /// Whether `/cmdline` and `/symbol` answer (`Options::without_cmdline`, `without_symbol`).
    pub(crate) cmdline: bool,
    pub(crate) symbol: bool,
    /// How large an upload to the UI's tree endpoint may be, and the one permit to read one.
    pub(crate) upload_limits: crate::upload::UploadLimits,
    pub(crate) uploads: Arc<Semaphore>,
}

impl Settings {
    /// A 404 for an endpoint the server was told to turn off, saying which option did.
    pub(crate) fn turned_off(endpoint: &str, option: &str) -> ProfileError {
        ProfileError::new(
            StatusCode::NOT_FOUND,
            format!("{endpoint} is turned off on this server (Options::{option})"),
        )
    }

    /// The snapshot history, or a 404 saying it is off.
    pub(crate) fn history(&self) -> Result<&Arc<History>, ProfileError> {
        self.history.as_ref().ok_or_else(|| {
            ProfileError::new(
                StatusCode::NOT_FOUND,
                "snapshot history is turned off on this server",
            )
        })
    }
}

/// Runs profile building off the async workers (it symbolizes and compresses, which can take
/// tens of milliseconds on large profiles), on the profiler's worker threads ([`worker`]), as
/// the profiler's own work: the profiler's own memory is not the service's heap.
pub(crate) async fn blocking<T: Send + 'static>(
    s: &Settings,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ProfileError> {
    let source = s.source.clone();
    worker::run_async(move || {
        let out = unprofiled(&*source, f);
        // What building the answer freed goes back to the kernel, not into the C allocator's
        // free lists, where it would stay counted in the process's memory.
        heapsight::own::return_freed_memory();
        out
    })
    .await
    .ok_or_else(|| {
        ProfileError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "building the profile failed: the profiler's worker stopped (see the process's log)",
        )
    })
}

fn unprofiled<T>(source: &dyn SnapshotSource, f: impl FnOnce() -> T) -> T {
    let mut f = Some(f);
    let mut out = None;
    source.unprofiled(&mut || out = f.take().map(|f| f()));
    out.expect("a source's unprofiled() runs the work it is given")
}

/// A snapshot from the server's source, taken off the async workers (a source may block while
/// another profiler writes its data out) and with sampling paused: the snapshot's own buffers
/// are live while it scans the heap, and are the profiler's, not the service's.
pub(crate) async fn take_snapshot(s: &Settings) -> Result<Snapshot, ProfileError> {
    take_snapshot_of(s, false).await
}

/// As [`take_snapshot`]; with `own`, the profiler's own allocations are in it too.
pub(crate) async fn take_snapshot_of(s: &Settings, own: bool) -> Result<Snapshot, ProfileError> {
    let source = s.source.clone();
    // On the blocking pool, not the worker: a snapshot is quick and its time matters (a delta's
    // first one must not wait behind another request's profile), and it keeps nothing.
    let snapshot = tokio::task::spawn_blocking(move || {
        unprofiled(&*source, || {
            if own {
                source.snapshot_with_own()
            } else {
                source.snapshot()
            }
        })
    })
    .await
    .map_err(|e| {
        ProfileError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("taking a snapshot failed: {e}"),
        )
    })?;
    Ok(snapshot?)
}

/// Snapshot `id` of the history, or a fresh one for `None`.
pub(crate) async fn snapshot_at(
    s: &Settings,
    id: Option<u64>,
) -> Result<Arc<Snapshot>, ProfileError> {
    match id {
        None => Ok(Arc::new(take_snapshot(s).await?)),
        Some(id) => s.history()?.get(id).ok_or_else(|| {
            ProfileError::new(
                StatusCode::NOT_FOUND,
                format!("no snapshot {id} in the history (it may have aged out)"),
            )
        }),
    }
}
