//! `/debug/pprof/profile`: a CPU profile over `seconds`, from heapsight's own CPU profiler
//! (`SIGPROF` over the process's CPU time, frame pointers walked in the handler), symbolized
//! with the same symbolizer as the heap profiles.
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
use heapsight::CpuProfileError;
use heapsight_profile::{Profile, ValueType};
use std::sync::Arc;
use std::time::Duration;

const DEFAULT_SECONDS: u64 = 30;
/// Samples per second of CPU time, as Go takes them.
const FREQUENCY_HZ: u32 = 100;

pub(crate) async fn profile(
    State(s): State<Arc<Settings>>,
    RawQuery(q): RawQuery,
) -> Result<Response, ProfileError> {
    let q = ProfileQuery::parse(q.as_deref());
    let wait = q.duration(s.max_seconds)?.unwrap_or(Duration::from_secs(
        DEFAULT_SECONDS.min(s.max_seconds.as_secs()),
    ));
    let profiler = heapsight::own::run(heapsight::own::Part::CpuProfile, || {
        heapsight::start_cpu_profile(FREQUENCY_HZ)
    })
    .map_err(|e| match e {
        CpuProfileError::Busy => ProfileError::new(
            StatusCode::CONFLICT,
            "a CPU profile is already running in this process; try again when it ends",
        ),
        e => ProfileError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("Could not enable CPU profiling: {e}"),
        ),
    })?;
    // Dropped, and so cancelled (which stops the profiler), when the client goes away.
    tokio::time::sleep(wait).await;
    // Stopped here, at the end of the window asked for, whatever the workers are doing; named
    // on a worker.
    let cpu = heapsight::own::run(heapsight::own::Part::CpuProfile, || profiler.stop());
    let body = blocking(&s, move || {
        heapsight::own::run(heapsight::own::Part::CpuProfile, || {
            cpu_profile(cpu).to_pprof_bytes()
        })
    })
    .await?;
    Ok(attachment(body, "profile"))
}

/// The pprof profile of a CPU profile, as Go writes one: samples and CPU nanoseconds per stack.
fn cpu_profile(cpu: heapsight::CpuProfile) -> Profile {
    let period = cpu.period.as_nanos() as i64;
    let lost = cpu.lost;
    let mut p = Profile::from_stacks(
        vec![
            ValueType::new("samples", "count"),
            ValueType::new("cpu", "nanoseconds"),
        ],
        ValueType::new("cpu", "nanoseconds"),
        period,
        cpu.start,
        Some(cpu.duration),
        cpu.stacks
            .into_iter()
            .map(|(frames, n)| (frames, vec![n as i64, n as i64 * period])),
    );
    if lost > 0 {
        p.comments.push(format!(
            "heapsight warning: {lost} CPU samples were lost: the profile's table of distinct stacks was full"
        ));
    }
    p
}
