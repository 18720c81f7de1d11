//! `GET .../api/growing?type=&window=&limit=`: the stacks whose value rose over the last
//! `window` snapshots and now, and kept growing through it, ranked by
//! [`heapsight_profile::growth`].

use super::ApiQuery;
use crate::error::ProfileError;
use crate::respond::json;
use crate::state::{blocking, take_snapshot, Settings};
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use heapsight::Snapshot;
use heapsight_profile::growth;
use serde::Serialize;
use std::sync::Arc;

#[derive(Serialize)]
struct Growing {
    r#type: &'static str,
    /// The label key the list is grouped by: each entry is one of its values.
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<String>,
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
    /// own code, counting from the leaf (the leaf itself when no frame is). Grouped by a label
    /// key: `key=value`.
    site: String,
    /// The labels the stack was recorded under, `key=value` each, sorted by key (grouped: the
    /// one value).
    labels: Vec<String>,
    /// The sustained growth rate (see `heapsight_profile::growth`), per second.
    rate_per_second: f64,
    /// Its standard error from sampling.
    stderr_per_second: f64,
    first: i64,
    last: i64,
    /// When the blocks it holds now were allocated; `null` for the `alloc_` types and for a
    /// source that does not record it.
    ages: Option<GrowingAges>,
}

#[derive(Serialize)]
struct GrowingAges {
    /// Held now and allocated before the window, in units of the type.
    before: i64,
    /// Held now and allocated in each segment of the window, oldest first.
    segments: Vec<i64>,
    oldest_seconds: f64,
    median_seconds: f64,
    /// `every_age` (what it allocates stays: a leak), `young_only` (churn), `old_only`
    /// (filled before the window), `mixed`; `null` when it holds nothing.
    pattern: Option<&'static str>,
}

pub(crate) async fn growing(
    State(s): State<Arc<Settings>>,
    RawQuery(q): RawQuery,
) -> Result<Response, ProfileError> {
    let q = ApiQuery::of_snapshots(q.as_deref())?;
    let h = s.history()?.clone();
    let fresh = Arc::new(take_snapshot(&s).await?);
    let code = q.user_code(&s.user_code);
    blocking(&s, move || -> Result<Response, ProfileError> {
        // The window: the last `window` snapshots of the history and the fresh one. Only the
        // snapshots the ranking reads are unpacked.
        let ids: Vec<u64> = h.summaries().iter().map(|p| p.id).collect();
        let len = (ids.len() + 1).min(q.window + 1);
        let ids = &ids[ids.len() + 1 - len..];
        let wanted: Vec<u64> = growth::marks(len)
            .iter()
            .filter_map(|&i| ids.get(i).copied())
            .collect();
        let mut points: Vec<Arc<Snapshot>> = h.get_many(&wanted).into_iter().flatten().collect();
        if points.len() != wanted.len() {
            return Err(ProfileError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the history moved on while the window was read; try again",
            ));
        }
        points.push(fresh);
        let window: Vec<&Snapshot> = points.iter().map(|p| &**p).collect();
        let now = window.last().copied();
        // Grouped, each value of the key is one entry, named `key=value`, with no frames.
        let ranked: Vec<(Option<String>, growth::Growth)> = match q.group.as_deref() {
            Some(key) => growth::growing_by_label(&window, key, q.sample_type, q.limit)
                .into_iter()
                .map(|(value, g)| (Some(format!("{key}={value}")), g))
                .collect(),
            None => growth::growing_at_marks(&window, q.sample_type, q.limit)
                .into_iter()
                .map(|g| (None, g))
                .collect(),
        };
        let stacks = ranked
            .into_iter()
            .map(|(value, g)| {
                let (site, frames, labels) = match value {
                    Some(value) => (value.clone(), Vec::new(), vec![value]),
                    None => {
                        let frames = now
                            .map(|s| growth::stack_names(s, g.stack))
                            .unwrap_or_default();
                        let labels: Vec<String> = now
                            .map(|s| s.frames.labels(g.stack))
                            .unwrap_or_default()
                            .into_iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect();
                        let leaf_first: Vec<&str> =
                            frames.iter().rev().map(String::as_str).collect();
                        let at = code.site(&leaf_first).unwrap_or(0);
                        let site = leaf_first.get(at).unwrap_or(&"").to_string();
                        (site, frames, labels)
                    }
                };
                GrowingStack {
                    stack: g.stack.as_u32(),
                    site,
                    labels,
                    frames,
                    rate_per_second: g.rate_per_second,
                    stderr_per_second: g.stderr_per_second,
                    first: g.first,
                    last: g.last,
                    ages: g.ages.map(|a| GrowingAges {
                        pattern: a.pattern().map(|p| p.name()),
                        before: a.before,
                        segments: a.segments,
                        oldest_seconds: a.oldest_seconds,
                        median_seconds: a.median_seconds,
                    }),
                }
            })
            .collect();
        Ok(json(&Growing {
            r#type: q.sample_type,
            group: q.group.clone(),
            window_seconds: growth::window_seconds(&window),
            snapshots: len,
            stacks,
        }))
    })
    .await?
}
