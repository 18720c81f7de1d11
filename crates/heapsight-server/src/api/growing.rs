//! `GET .../api/growing?type=&window=&limit=`: the stacks whose value rose over the last
//! `window` snapshots and now, and kept growing through it, ranked by
//! [`heapsight_profile::growth`].

use super::ApiQuery;
use crate::error::ProfileError;
use crate::respond::json;
use crate::state::{blocking, take_snapshot, Settings};
use axum::extract::{RawQuery, State};
use axum::response::Response;
use heapsight::Snapshot;
use heapsight_profile::growth;
use serde::Serialize;
use std::sync::Arc;

#[derive(Serialize)]
struct Growing {
    r#type: &'static str,
    window_seconds: f64,
    snapshots: usize,
    stacks: Vec<GrowingStack>,
}

#[derive(Serialize)]
struct GrowingStack {
    stack: u32,
    /// Function names, root first, with the allocator plumbing trimmed as in profiles.
    frames: Vec<String>,
    /// The allocating site in the service's terms: the stack's first frame of the service's
    /// own code, counting from the leaf (the leaf itself when no frame is).
    site: String,
    /// The sustained growth rate (see `heapsight_profile::growth`), per second.
    rate_per_second: f64,
    /// Its standard error from sampling.
    stderr_per_second: f64,
    first: i64,
    last: i64,
}

pub(crate) async fn growing(
    State(s): State<Arc<Settings>>,
    RawQuery(q): RawQuery,
) -> Result<Response, ProfileError> {
    let q = ApiQuery::of_snapshots(q.as_deref())?;
    let mut points: Vec<Arc<Snapshot>> =
        s.history()?.entries().into_iter().map(|(_, s)| s).collect();
    points.push(Arc::new(take_snapshot(&s).await?));
    let first = points.len().saturating_sub(q.window + 1);
    let points = points.split_off(first);
    let code = q.user_code(&s.user_code);
    blocking(&s, move || {
        let window: Vec<&Snapshot> = points.iter().map(|p| &**p).collect();
        let now = window.last().copied();
        let stacks = growth::growing(&window, q.sample_type, q.limit)
            .into_iter()
            .map(|g| {
                let frames = now
                    .map(|s| growth::stack_names(s, g.stack))
                    .unwrap_or_default();
                let leaf_first: Vec<&str> = frames.iter().rev().map(String::as_str).collect();
                let site = code.site(&leaf_first).unwrap_or(0);
                GrowingStack {
                    stack: g.stack.as_u32(),
                    site: leaf_first.get(site).unwrap_or(&"").to_string(),
                    frames,
                    rate_per_second: g.rate_per_second,
                    stderr_per_second: g.stderr_per_second,
                    first: g.first,
                    last: g.last,
                }
            })
            .collect();
        json(&Growing {
            r#type: q.sample_type,
            window_seconds: growth::window_seconds(&window),
            snapshots: window.len(),
            stacks,
        })
    })
    .await
}
