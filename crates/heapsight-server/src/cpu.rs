//! `/debug/pprof/profile`: a CPU profile over `seconds`, from the `pprof` crate's sampling
//! profiler (SIGPROF, frame-pointer unwinding in the signal handler).
//!
//! One CPU profile runs at a time in a process (the timer and its signal are process-wide); a
//! second request while one runs is answered `409 Conflict` at once. Both the wait and the
//! profiler stop as soon as the client goes away.

use crate::error::ProfileError;
use crate::query::ProfileQuery;
use crate::respond::attachment;
use crate::state::{blocking, Settings};
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use flate2::write::GzEncoder;
use pprof::protos::Message;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

static RUNNING: AtomicBool = AtomicBool::new(false);

/// Clears [`RUNNING`] however the request ends.
struct Running;

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING.store(false, Ordering::Release);
    }
}

const DEFAULT_SECONDS: u64 = 30;
const FREQUENCY_HZ: i32 = 100;

pub(crate) async fn profile(
    State(s): State<Arc<Settings>>,
    RawQuery(q): RawQuery,
) -> Result<Response, ProfileError> {
    let q = ProfileQuery::parse(q.as_deref());
    let wait = q.duration(s.max_seconds)?.unwrap_or(Duration::from_secs(
        DEFAULT_SECONDS.min(s.max_seconds.as_secs()),
    ));
    if RUNNING.swap(true, Ordering::AcqRel) {
        return Err(ProfileError::new(
            StatusCode::CONFLICT,
            "a CPU profile is already running in this process; try again when it ends",
        ));
    }
    let running = Running;
    let guard = pprof::ProfilerGuardBuilder::default()
        .frequency(FREQUENCY_HZ)
        .blocklist(&["libc", "libgcc", "pthread", "vdso"])
        .build()
        .map_err(|e| {
            ProfileError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("Could not enable CPU profiling: {e}"),
            )
        })?;
    // Dropped, and so cancelled (which stops the profiler), when the client goes away.
    tokio::time::sleep(wait).await;
    let report = guard.report().build();
    drop(guard);
    drop(running);
    let report = report.map_err(|e| {
        ProfileError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("CPU profile failed: {e}"),
        )
    })?;
    let body = blocking(&s, move || -> Result<Vec<u8>, String> {
        let proto = report.pprof().map_err(|e| e.to_string())?;
        let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&proto.encode_to_vec())
            .map_err(|e| e.to_string())?;
        gz.finish().map_err(|e| e.to_string())
    })
    .await?
    .map_err(|e| {
        ProfileError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("CPU profile failed: {e}"),
        )
    })?;
    Ok(attachment(body, "profile"))
}
