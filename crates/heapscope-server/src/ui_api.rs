//! The JSON API the web UI reads (documented in `docs/ui-api.md`): the snapshot history, call
//! trees of a snapshot (optionally against a baseline), the stacks growing fastest, and the
//! downloads (folded stacks, an SVG flame graph).
//!
//! Aggregation, diffing and capping happen here, on the server, so the browser receives a tree
//! of at most `max_nodes` nodes (16,000 by default) whatever the size of the profile.

use crate::endpoints::{blocking, plain_text, take_snapshot};
use crate::error::ProfileError;
use crate::history::History;
use crate::Settings;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use heapscope::{CallTree, HeapView, Profile, Snapshot};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

pub const DEFAULT_MAX_NODES: usize = 16_000;
const MAX_MAX_NODES: usize = 200_000;
const SAMPLE_TYPES: [&str; 4] = [
    "inuse_space",
    "inuse_objects",
    "alloc_space",
    "alloc_objects",
];

/// The parameters the API endpoints share.
struct ApiQuery {
    sample_type: &'static str,
    /// The `type` as given, for uploaded profiles whose sample types may be anything.
    raw_type: Option<String>,
    focus: Option<regex::Regex>,
    hide: Option<regex::Regex>,
    callers: Option<String>,
    base_bytes: Option<usize>,
    at: Option<u64>,
    base: Option<u64>,
    max_nodes: usize,
    limit: usize,
    window: usize,
}

fn parse(raw: Option<&str>) -> Result<ApiQuery, ProfileError> {
    let mut q = ApiQuery {
        sample_type: "inuse_space",
        raw_type: None,
        focus: None,
        hide: None,
        callers: None,
        base_bytes: None,
        at: None,
        base: None,
        max_nodes: DEFAULT_MAX_NODES,
        limit: 20,
        window: 6,
    };
    let number = |k: &str, v: &str| -> Result<u64, ProfileError> {
        v.parse::<u64>().map_err(|_| {
            ProfileError::bad_request(format!(
                "invalid value for {k:?}: {v:?} is not a whole number"
            ))
        })
    };
    for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        match &*k {
            "type" => {
                q.raw_type = Some(v.to_string());
                if let Some(t) = SAMPLE_TYPES.iter().find(|t| **t == v) {
                    q.sample_type = t;
                }
            }
            "focus" if !v.is_empty() => q.focus = Some(regex_param("focus", &v)?),
            "hide" if !v.is_empty() => q.hide = Some(regex_param("hide", &v)?),
            "callers" if !v.is_empty() => q.callers = Some(v.into_owned()),
            "base_bytes" => q.base_bytes = Some(number("base_bytes", &v)? as usize),
            "at" if v != "now" => q.at = Some(number("at", &v)?),
            "base" if !v.is_empty() => q.base = Some(number("base", &v)?),
            "max_nodes" => {
                q.max_nodes = (number("max_nodes", &v)? as usize).clamp(2, MAX_MAX_NODES)
            }
            "limit" => q.limit = (number("limit", &v)? as usize).clamp(1, 1000),
            "window" => q.window = (number("window", &v)? as usize).clamp(1, 10_000),
            _ => {}
        }
    }
    Ok(q)
}

fn regex_param(name: &str, v: &str) -> Result<regex::Regex, ProfileError> {
    regex::RegexBuilder::new(v)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| {
            ProfileError::bad_request(format!("invalid regular expression for {name:?}: {e}"))
        })
}

/// The query of an endpoint that reads heapscope's own snapshots, whose sample types are the
/// four heap types: any other `type` is an error.
fn history_query(raw: Option<&str>) -> Result<ApiQuery, ProfileError> {
    let q = parse(raw)?;
    match &q.raw_type {
        Some(t) if !SAMPLE_TYPES.contains(&t.as_str()) => Err(ProfileError::bad_request(format!(
            "unknown sample type {t:?}: one of {}",
            SAMPLE_TYPES.join(", ")
        ))),
        _ => Ok(q),
    }
}

/// Builds the tree the query asks for: filters, callers view, baseline, cap.
fn build_tree(
    q: &ApiQuery,
    sample_type: &str,
    current: &Profile,
    base: Option<&Profile>,
) -> CallTree {
    let focus = q.focus.as_ref().map(|r| move |n: &str| r.is_match(n));
    let hide = q.hide.as_ref().map(|r| move |n: &str| r.is_match(n));
    let filter = heapscope::TreeFilter {
        focus: focus.as_ref().map(|f| f as &dyn Fn(&str) -> bool),
        hide: hide.as_ref().map(|f| f as &dyn Fn(&str) -> bool),
        callers_of: q.callers.as_deref(),
    };
    CallTree::filtered(current, sample_type, base, filter).capped(q.max_nodes)
}

fn history(s: &Settings) -> Result<&Arc<History>, ProfileError> {
    s.history.as_ref().ok_or_else(|| {
        ProfileError::new(
            StatusCode::NOT_FOUND,
            "snapshot history is turned off on this server",
        )
    })
}

async fn snapshot_at(s: &Settings, id: Option<u64>) -> Result<Arc<Snapshot>, ProfileError> {
    match id {
        None => Ok(Arc::new(take_snapshot(s).await?)),
        Some(id) => history(s)?.get(id).ok_or_else(|| {
            ProfileError::new(
                StatusCode::NOT_FOUND,
                format!("no snapshot {id} in the history (it may have aged out)"),
            )
        }),
    }
}

fn json_response(v: Value) -> Response {
    let mut r = v.to_string().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn millis(s: &Snapshot) -> u64 {
    s.time
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `GET .../api/snapshots`: the timeline.
pub(crate) async fn snapshots(State(s): State<Arc<Settings>>) -> Result<Response, ProfileError> {
    let h = history(&s)?;
    let list: Vec<Value> = h
        .entries()
        .iter()
        .map(|(id, snap)| {
            let sum = |f: fn(&heapscope::StackTotals) -> i64| {
                snap.stacks.iter().map(|(_, t)| f(t)).sum::<i64>()
            };
            json!({
                "id": id,
                "time_ms": millis(snap),
                "inuse_space": sum(|t| t.inuse_space()),
                "inuse_objects": sum(|t| t.inuse_objects()),
                "alloc_space": sum(|t| t.alloc_space()),
                "alloc_objects": sum(|t| t.alloc_objects()),
            })
        })
        .collect();
    Ok(json_response(json!({
        "interval_ms": h.interval.as_millis() as u64,
        "capacity": h.capacity,
        "bytes": h.bytes(),
        "source": s.source.name(),
        "error": h.last_error(),
        "snapshots": list,
    })))
}

/// `GET .../api/tree?type=&at=&base=&max_nodes=`: a call tree, columnar.
pub(crate) async fn tree(
    State(s): State<Arc<Settings>>,
    RawQuery(q): RawQuery,
) -> Result<Response, ProfileError> {
    let q = history_query(q.as_deref())?;
    let current = snapshot_at(&s, q.at).await?;
    let base = match q.base {
        Some(id) => Some(snapshot_at(&s, Some(id)).await?),
        None => None,
    };
    let body = blocking(&s, move || {
        let p = Profile::heap(&current, HeapView::InUse);
        let b = base.map(|b| Profile::heap(&b, HeapView::InUse));
        let tree = build_tree(&q, q.sample_type, &p, b.as_ref());
        tree_json(&tree, q.sample_type, millis(&current), b.is_some())
    })
    .await?;
    Ok(json_response(body))
}

/// `POST .../api/tree?type=&base_bytes=&focus=&hide=&callers=&max_nodes=`: the tree of a
/// profile file the user opened (any pprof file, Go's included), or of two: with `base_bytes=N`
/// the body's first N bytes are the baseline and the rest the current profile.
pub(crate) async fn tree_of_upload(
    State(s): State<Arc<Settings>>,
    RawQuery(q): RawQuery,
    body: axum::body::Bytes,
) -> Result<Response, ProfileError> {
    let q = parse(q.as_deref())?;
    let split = q.base_bytes.unwrap_or(0);
    if split > body.len() {
        return Err(ProfileError::bad_request(format!(
            "base_bytes is {split} but the body has {} bytes",
            body.len()
        )));
    }
    let body = blocking(&s, move || -> Result<Value, ProfileError> {
        let read = |bytes: &[u8], what: &str| {
            Profile::from_pprof_bytes(bytes).map_err(|e| {
                ProfileError::bad_request(format!("the {what} profile is not readable: {e}"))
            })
        };
        let current = read(&body[split..], "current")?;
        let base = if split > 0 {
            Some(read(&body[..split], "baseline")?)
        } else {
            None
        };
        // A file's own sample types: the one asked for if it has it, else its default.
        let sample_type = match &q.raw_type {
            Some(t) if current.sample_type_index(t).is_some() => t.clone(),
            Some(t) => {
                return Err(ProfileError::bad_request(format!(
                    "the profile has no sample type {t:?}"
                )))
            }
            None => current
                .default_sample_type
                .clone()
                .or_else(|| current.sample_types.last().map(|t| t.r#type.clone()))
                .ok_or_else(|| ProfileError::bad_request("the profile has no sample types"))?,
        };
        let tree = build_tree(&q, &sample_type, &current, base.as_ref());
        let mut json = tree_json(
            &tree,
            &sample_type,
            (current.time_nanos / 1_000_000).max(0) as u64,
            base.is_some(),
        );
        if let Some(t) = current
            .sample_types
            .iter()
            .find(|t| t.r#type == sample_type)
        {
            json["unit"] = Value::from(t.unit.clone());
        }
        json["sample_types"] = current
            .sample_types
            .iter()
            .map(|t| Value::from(t.r#type.clone()))
            .collect();
        Ok(json)
    })
    .await??;
    Ok(json_response(body))
}

fn tree_json(tree: &CallTree, sample_type: &str, time_ms: u64, has_base: bool) -> Value {
    // Names and files are interned: a deep tree repeats them a great deal.
    let mut strings: Vec<&str> = Vec::new();
    let mut ids: HashMap<&str, usize> = HashMap::new();
    let (mut name, mut file) = (
        Vec::with_capacity(tree.nodes.len()),
        Vec::with_capacity(tree.nodes.len()),
    );
    for n in &tree.nodes {
        for (s, out) in [(n.name.as_str(), &mut name), (n.file.as_str(), &mut file)] {
            let i = *ids.entry(s).or_insert_with(|| {
                strings.push(s);
                strings.len() - 1
            });
            out.push(i);
        }
    }
    let unit = if sample_type.ends_with("space") {
        "bytes"
    } else {
        "count"
    };
    json!({
        "type": sample_type,
        "unit": unit,
        "time_ms": time_ms,
        "has_base": has_base,
        "merged_nodes": tree.merged_nodes,
        "strings": strings,
        "name": name,
        "file": file,
        "line": tree.nodes.iter().map(|n| n.line).collect::<Vec<_>>(),
        "parent": tree.nodes.iter().map(|n| n.parent).collect::<Vec<_>>(),
        "self": tree.nodes.iter().map(|n| n.self_value).collect::<Vec<_>>(),
        "total": tree.nodes.iter().map(|n| n.total).collect::<Vec<_>>(),
        "base": tree.nodes.iter().map(|n| n.base_total).collect::<Vec<_>>(),
        "in_base": tree.nodes.iter().map(|n| n.in_base).collect::<Vec<_>>(),
    })
}

/// `GET .../api/growing?type=&window=&limit=`: stacks whose value rose over the last `window`
/// snapshots and now, ranked by growth rate (least-squares slope, per second).
pub(crate) async fn growing(
    State(s): State<Arc<Settings>>,
    RawQuery(q): RawQuery,
) -> Result<Response, ProfileError> {
    let q = history_query(q.as_deref())?;
    let mut points: Vec<Arc<Snapshot>> =
        history(&s)?.entries().into_iter().map(|(_, s)| s).collect();
    points.push(Arc::new(take_snapshot(&s).await?));
    let first = points.len().saturating_sub(q.window + 1);
    let points = points.split_off(first);
    let body = blocking(&s, move || growing_json(&points, q.sample_type, q.limit)).await?;
    Ok(json_response(body))
}

fn value_of(t: &heapscope::StackTotals, sample_type: &str) -> i64 {
    match sample_type {
        "inuse_space" => t.inuse_space(),
        "inuse_objects" => t.inuse_objects(),
        "alloc_space" => t.alloc_space(),
        _ => t.alloc_objects(),
    }
}

fn growing_json(points: &[Arc<Snapshot>], sample_type: &str, limit: usize) -> Value {
    let t0 = points.first().map(|p| p.time).unwrap_or(UNIX_EPOCH);
    let xs: Vec<f64> = points
        .iter()
        .map(|p| p.time.duration_since(t0).unwrap_or_default().as_secs_f64())
        .collect();
    let mut series: HashMap<heapscope::StackId, Vec<f64>> = HashMap::new();
    for (i, p) in points.iter().enumerate() {
        for (id, t) in &p.stacks {
            series.entry(*id).or_insert_with(|| vec![0.0; points.len()])[i] =
                value_of(t, sample_type) as f64;
        }
    }
    let mean_x = xs.iter().sum::<f64>() / xs.len().max(1) as f64;
    let var_x: f64 = xs.iter().map(|x| (x - mean_x).powi(2)).sum();
    let mut ranked: Vec<(heapscope::StackId, f64, f64, f64)> = series
        .into_iter()
        .filter_map(|(id, ys)| {
            let (first, last) = (ys[0], *ys.last()?);
            if last <= first || var_x == 0.0 {
                return None;
            }
            let mean_y = ys.iter().sum::<f64>() / ys.len() as f64;
            let slope = xs
                .iter()
                .zip(&ys)
                .map(|(x, y)| (x - mean_x) * (y - mean_y))
                .sum::<f64>()
                / var_x;
            (slope > 0.0).then_some((id, slope, first, last))
        })
        .collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    ranked.truncate(limit);
    let now = points.last().cloned();
    let stacks: Vec<Value> = ranked
        .iter()
        .map(|(id, slope, first, last)| {
            let frames = now.as_ref().map(|s| frames_of(s, *id)).unwrap_or_default();
            json!({
                "stack": id.as_u32(),
                "frames": frames,
                "rate_per_second": slope,
                "first": *first as i64,
                "last": *last as i64,
            })
        })
        .collect();
    json!({
        "type": sample_type,
        "window_seconds": xs.last().copied().unwrap_or(0.0),
        "snapshots": points.len(),
        "stacks": stacks,
    })
}

/// The function names of one stack, root first, trimmed as profiles trim them.
fn frames_of(snapshot: &Snapshot, id: heapscope::StackId) -> Vec<String> {
    let one = Snapshot {
        time: snapshot.time,
        duration: None,
        sample_rate: snapshot.sample_rate,
        stacks: snapshot
            .stacks
            .iter()
            .filter(|(i, _)| *i == id)
            .cloned()
            .collect(),
    };
    let p = Profile::heap(&one, HeapView::InUse);
    p.samples
        .first()
        .map(|s| {
            p.stack_names(s)
                .into_iter()
                .rev()
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Folded stacks of `sample_type` in `snapshot` (symbolizes: call off the async workers).
fn folded_text(snapshot: &Snapshot, sample_type: &str) -> Result<String, ProfileError> {
    let mut out = Vec::new();
    Profile::heap(snapshot, HeapView::InUse)
        .write_folded(sample_type, &mut out)
        .map_err(|e| ProfileError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// `GET .../api/folded?type=&at=`: folded stacks, for flame-graph tools.
pub(crate) async fn folded(
    State(s): State<Arc<Settings>>,
    RawQuery(q): RawQuery,
) -> Result<Response, ProfileError> {
    let q = history_query(q.as_deref())?;
    let snap = snapshot_at(&s, q.at).await?;
    let text = blocking(&s, move || folded_text(&snap, q.sample_type)).await??;
    Ok(plain_text(text))
}

/// `GET .../api/flamegraph.svg?type=&at=`: a flame graph drawn on the server by `inferno`, for
/// sharing and for terminals.
pub(crate) async fn flamegraph_svg(
    State(s): State<Arc<Settings>>,
    RawQuery(q): RawQuery,
) -> Result<Response, ProfileError> {
    let q = history_query(q.as_deref())?;
    let snap = snapshot_at(&s, q.at).await?;
    let svg = blocking(&s, move || -> Result<Vec<u8>, ProfileError> {
        let text = folded_text(&snap, q.sample_type)?;
        if text.is_empty() {
            // inferno refuses empty input; an empty heap is still a valid answer.
            return Ok(br#"<svg xmlns="http://www.w3.org/2000/svg" width="400" height="40"><text x="10" y="25">No samples.</text></svg>"#.to_vec());
        }
        let mut opts = inferno::flamegraph::Options::default();
        opts.title = format!("heapscope: {}", q.sample_type);
        opts.count_name = if q.sample_type.ends_with("space") { "bytes".into() } else { "objects".into() };
        let mut svg = Vec::new();
        inferno::flamegraph::from_lines(&mut opts, text.lines(), &mut svg)
            .map_err(|e| ProfileError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("flame graph failed: {e}")))?;
        Ok(svg)
    })
    .await??;
    let mut r = svg.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("image/svg+xml"),
    );
    Ok(r)
}
