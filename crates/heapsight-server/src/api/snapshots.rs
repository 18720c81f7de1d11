//! `GET .../api/snapshots`: the timeline of the snapshot history.

use crate::error::ProfileError;
use crate::respond::json;
use crate::state::Settings;
use axum::extract::State;
use axum::response::Response;
use serde::Serialize;
use std::sync::Arc;

#[derive(Serialize)]
struct Timeline<'a> {
    interval_ms: u64,
    capacity: usize,
    /// Memory the held snapshots take.
    bytes: usize,
    source: &'a str,
    /// Why the last scheduled snapshot failed, if it did.
    error: Option<String>,
    /// What is wrong with how the source records (stacks that come out short, say).
    warnings: Vec<String>,
    snapshots: Vec<Point>,
}

/// One snapshot's totals.
#[derive(Serialize)]
struct Point {
    id: u64,
    time_ms: u64,
    inuse_space: i64,
    inuse_objects: i64,
    alloc_space: i64,
    alloc_objects: i64,
}

pub(crate) async fn snapshots(State(s): State<Arc<Settings>>) -> Result<Response, ProfileError> {
    let h = s.history()?;
    let snapshots = h
        .summaries()
        .into_iter()
        .map(|s| Point {
            id: s.id,
            time_ms: super::millis(s.time),
            inuse_space: s.inuse_space,
            inuse_objects: s.inuse_objects,
            alloc_space: s.alloc_space,
            alloc_objects: s.alloc_objects,
        })
        .collect();
    Ok(json(&Timeline {
        interval_ms: h.interval.as_millis() as u64,
        capacity: h.capacity,
        bytes: h.bytes(),
        source: s.source.name(),
        error: h.last_error(),
        warnings: s.source.warnings(),
        snapshots,
    }))
}
