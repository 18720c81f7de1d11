//! `GET .../api/folded` and `GET .../api/flamegraph.svg`: a snapshot's folded stacks, and a
//! flame graph drawn from them on the server by `inferno`, for sharing and for terminals.

use super::ApiQuery;
use crate::error::ProfileError;
use crate::respond::{plain_text, svg};
use crate::state::{blocking, Settings};
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use heapsight::Snapshot;
use heapsight_profile::{HeapView, Profile};
use std::sync::Arc;

/// Folded stacks of `sample_type` in `snapshot` (symbolizes: call off the async workers).
fn folded_text(snapshot: &Snapshot, sample_type: &str) -> Result<String, ProfileError> {
    let mut out = Vec::new();
    Profile::heap(snapshot, HeapView::InUse)
        .write_folded(sample_type, &mut out)
        .map_err(|e| ProfileError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// `GET .../api/folded?type=&at=&since=&until=`.
pub(crate) async fn folded(
    State(s): State<Arc<Settings>>,
    RawQuery(q): RawQuery,
) -> Result<Response, ProfileError> {
    let q = ApiQuery::of_snapshots(q.as_deref())?;
    let snap = q.heap(&s).await?;
    let text = blocking(&s, move || folded_text(&snap, q.sample_type)).await??;
    Ok(plain_text(text))
}

/// `GET .../api/flamegraph.svg?type=&at=&since=&until=`.
pub(crate) async fn flamegraph_svg(
    State(s): State<Arc<Settings>>,
    RawQuery(q): RawQuery,
) -> Result<Response, ProfileError> {
    let q = ApiQuery::of_snapshots(q.as_deref())?;
    let snap = q.heap(&s).await?;
    let image = blocking(&s, move || -> Result<Vec<u8>, ProfileError> {
        let text = folded_text(&snap, q.sample_type)?;
        if text.is_empty() {
            // inferno refuses empty input; an empty heap is still a valid answer.
            return Ok(br#"<svg xmlns="http://www.w3.org/2000/svg" width="400" height="40"><text x="10" y="25">No samples.</text></svg>"#.to_vec());
        }
        let mut opts = inferno::flamegraph::Options::default();
        opts.title = format!("heapsight: {}", q.sample_type);
        opts.count_name = if q.sample_type.ends_with("space") { "bytes".into() } else { "objects".into() };
        let mut out = Vec::new();
        inferno::flamegraph::from_lines(&mut opts, text.lines(), &mut out).map_err(|e| {
            ProfileError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("flame graph failed: {e}"))
        })?;
        Ok(out)
    })
    .await??;
    Ok(svg(image))
}
