//! `GET .../api/tree`: the call tree of a snapshot, optionally against a baseline; `POST`: the
//! tree of profile files the user opened. Both answer in the columnar form of `docs/ui-api.md`.

use super::{millis, unit_of, ApiQuery};
use crate::error::ProfileError;
use crate::respond::json;
use crate::state::{blocking, snapshot_at, Settings};
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use heapsight_profile::{CallTree, HeapView, Profile, UserCode};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;

/// A call tree, columnar: node `i` is entry `i` of each array; names and files index `strings`.
#[derive(Serialize)]
struct TreeColumns<'t> {
    r#type: String,
    unit: String,
    time_ms: u64,
    has_base: bool,
    merged_nodes: usize,
    strings: Vec<&'t str>,
    /// Per string: whether it names a frame of the service's own code.
    user: Vec<bool>,
    name: Vec<usize>,
    file: Vec<usize>,
    line: Vec<i64>,
    parent: Vec<u32>,
    #[serde(rename = "self")]
    self_value: Vec<i64>,
    total: Vec<i64>,
    base: Vec<i64>,
    in_base: Vec<bool>,
    /// Per node, its largest label sets (`key=value, ...` as an index into `strings`) with
    /// their part of `total`; empty lists when the profile has no labels.
    labels: Vec<Vec<(usize, i64)>>,
    /// The label key the tree is grouped by: the root's children are its values.
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<String>,
    /// The label keys the profile's samples carry, sorted: what `group` may be.
    label_keys: Vec<String>,
    /// An uploaded file's sample types.
    #[serde(skip_serializing_if = "Option::is_none")]
    sample_types: Option<Vec<String>>,
}

impl<'t> TreeColumns<'t> {
    fn new(
        tree: &'t CallTree,
        code: &UserCode,
        sample_type: &str,
        unit: &str,
        time_ms: u64,
        has_base: bool,
        group: Option<&str>,
    ) -> Self {
        // Names and files are interned: a deep tree repeats them a great deal.
        let mut strings: Vec<&str> = Vec::new();
        let mut ids: HashMap<&str, usize> = HashMap::new();
        let mut intern = |s: &'t str| {
            *ids.entry(s).or_insert_with(|| {
                strings.push(s);
                strings.len() - 1
            })
        };
        let mut name = Vec::with_capacity(tree.nodes.len());
        let mut file = Vec::with_capacity(tree.nodes.len());
        let mut labels = Vec::with_capacity(tree.nodes.len());
        for n in &tree.nodes {
            name.push(intern(&n.name));
            file.push(intern(&n.file));
            labels.push(n.labels.iter().map(|(l, v)| (intern(l), *v)).collect());
        }
        let column =
            |f: fn(&heapsight_profile::TreeNode) -> i64| tree.nodes.iter().map(f).collect();
        // Folded runs, `other` buckets and label values are nobody's code.
        let mut user: Vec<bool> = strings
            .iter()
            .map(|s| !s.starts_with('[') && !["other", "root", ""].contains(s) && code.is_users(s))
            .collect();
        for (i, n) in tree.nodes.iter().enumerate() {
            if group.is_some() && i > 0 && n.parent == 0 {
                user[name[i]] = false;
            }
            for &(l, _) in &labels[i] {
                user[l] = false;
            }
        }
        TreeColumns {
            r#type: sample_type.to_string(),
            unit: unit.to_string(),
            time_ms,
            has_base,
            merged_nodes: tree.merged_nodes,
            strings,
            user,
            name,
            file,
            line: column(|n| n.line),
            parent: tree.nodes.iter().map(|n| n.parent).collect(),
            self_value: column(|n| n.self_value),
            total: column(|n| n.total),
            base: column(|n| n.base_total),
            in_base: tree.nodes.iter().map(|n| n.in_base).collect(),
            labels,
            group: group.map(str::to_string),
            label_keys: Vec::new(),
            sample_types: None,
        }
    }
}

/// The label keys of a profile's samples, sorted.
fn label_keys(p: &Profile) -> Vec<String> {
    let mut keys: Vec<String> = p
        .samples
        .iter()
        .flat_map(|s| s.labels.iter().map(|l| l.key.clone()))
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// `GET .../api/tree?type=&at=&base=&max_nodes=&focus=&hide=&callers=&since=&until=`.
pub(crate) async fn tree(
    State(s): State<Arc<Settings>>,
    RawQuery(q): RawQuery,
) -> Result<Response, ProfileError> {
    let q = ApiQuery::of_snapshots(q.as_deref())?;
    let current = q.heap(&s).await?;
    let base = match q.base {
        Some(id) => Some(snapshot_at(&s, Some(id)).await?),
        None => None,
    };
    let code = q.user_code(&s.user_code);
    blocking(&s, move || {
        let p = Profile::heap(&current, HeapView::InUse);
        let b = base.map(|b| Profile::heap(&b, HeapView::InUse));
        let tree = q.tree(q.sample_type, &p, b.as_ref(), &code);
        let unit = unit_of(q.sample_type);
        let mut columns = TreeColumns::new(
            &tree,
            &code,
            q.sample_type,
            unit,
            millis(current.time),
            b.is_some(),
            q.group.as_deref(),
        );
        columns.label_keys = label_keys(&p);
        json(&columns)
    })
    .await
}

/// `POST .../api/tree?type=&base_bytes=&focus=&hide=&callers=&max_nodes=`: the tree of a
/// profile file the user opened (any pprof file, Go's included), or of two: with `base_bytes=N`
/// the body's first N bytes are the baseline and the rest the current profile.
pub(crate) async fn tree_of_upload(
    State(s): State<Arc<Settings>>,
    RawQuery(q): RawQuery,
    body: axum::body::Body,
) -> Result<Response, ProfileError> {
    let q = ApiQuery::parse(q.as_deref())?;
    // One upload is read at a time: the limits bound the memory of one.
    let _turn = s.uploads.clone().try_acquire_owned().map_err(|_| {
        ProfileError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "another profile upload is being read; try again when it is done",
        )
    })?;
    let limits = s.upload_limits;
    let (base_raw, current_raw) =
        crate::upload::read(body, q.base_bytes.unwrap_or(0), limits).await?;
    let code = q.user_code(&s.user_code);
    blocking(&s, move || -> Result<Response, ProfileError> {
        let read = |bytes: &[u8], what: &str| {
            // Unpacked already; a gzip file inside the gzip file unpacks within the same cap.
            Profile::from_pprof_bytes_within(bytes, limits.decompressed as u64).map_err(|e| {
                ProfileError::bad_request(format!("the {what} profile is not readable: {e}"))
            })
        };
        let current = read(&current_raw, "current")?;
        drop(current_raw);
        let base = match base_raw {
            Some(raw) => Some(read(&raw, "baseline")?),
            None => None,
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
        let tree = q.tree(&sample_type, &current, base.as_ref(), &code);
        let unit = current
            .sample_types
            .iter()
            .find(|t| t.r#type == sample_type)
            .map_or("", |t| t.unit.as_str());
        let time_ms = (current.time_nanos / 1_000_000).max(0) as u64;
        let mut columns = TreeColumns::new(
            &tree,
            &code,
            &sample_type,
            unit,
            time_ms,
            base.is_some(),
            q.group.as_deref(),
        );
        columns.label_keys = label_keys(&current);
        columns.sample_types = Some(
            current
                .sample_types
                .iter()
                .map(|t| t.r#type.clone())
                .collect(),
        );
        Ok(json(&columns))
    })
    .await?
}
