//! The JSON API the web UI reads (documented in `docs/ui-api.md`), one module per job: the
//! snapshot timeline, call trees, the growing stacks, and downloads (folded stacks, SVG).
//!
//! Aggregation, diffing and capping happen on the server, so the browser receives a tree of at
//! most `max_nodes` nodes (16,000 by default) whatever the size of the profile. This module
//! holds what the endpoints share: their query parameters and the tree they build from them.

pub(crate) mod downloads;
pub(crate) mod growing;
pub(crate) mod snapshots;
pub(crate) mod tree;

use crate::error::ProfileError;
use crate::state::{snapshot_at, Settings};
use heapsight::Snapshot;
use heapsight_profile::{CallTree, Profile, TreeFilter, UserCode};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

pub const DEFAULT_MAX_NODES: usize = 16_000;
/// Snapshots the growing list looks back over, by default: five minutes at the default interval.
const DEFAULT_WINDOW: usize = 30;
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
    /// `fold=1`: the root-side run of plumbing becomes one frame.
    fold: bool,
    /// `libraries=hyper,tower`: more crates that are not the service's own code.
    libraries: Vec<String>,
    /// `since=` / `until=` (milliseconds since the Unix epoch): only the blocks in use now that
    /// were allocated in that span.
    since: Option<std::time::SystemTime>,
    until: Option<std::time::SystemTime>,
    /// `group=tenant`: a label key; the tree's first level (or the growing list) is its values.
    group: Option<String>,
}

impl ApiQuery {
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
            window: DEFAULT_WINDOW,
            fold: false,
            libraries: Vec::new(),
            since: None,
            until: None,
            group: None,
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
                "fold" => q.fold = number("fold", &v)? != 0,
                "since" if !v.is_empty() => q.since = Some(epoch_millis(number("since", &v)?)),
                "until" if !v.is_empty() => q.until = Some(epoch_millis(number("until", &v)?)),
                "group" if !v.is_empty() => {
                    if v.len() > heapsight::labels::MAX_TEXT || v.chars().any(char::is_control) {
                        return Err(ProfileError::bad_request(format!(
                            "invalid value for \"group\": a label key of at most {} bytes, without control characters",
                            heapsight::labels::MAX_TEXT
                        )));
                    }
                    q.group = Some(v.into_owned());
                }
                "libraries" => {
                    // Crate names: letters, digits, `_` and `-`; at most 64 of them.
                    let names: Vec<String> = v
                        .split(',')
                        .map(|n| n.trim().to_string())
                        .filter(|n| !n.is_empty())
                        .collect();
                    if names.len() > 64
                        || names.iter().any(|n| {
                            n.len() > 64
                                || !n
                                    .chars()
                                    .all(|c| c.is_ascii_alphanumeric() || "_-".contains(c))
                        })
                    {
                        return Err(ProfileError::bad_request(format!(
                            "invalid value for \"libraries\": {v:?} is not a comma-separated list of crate names"
                        )));
                    }
                    q.libraries = names;
                }
                _ => {}
            }
        }
        Ok(q)
    }

    /// The query of an endpoint that reads the server's own snapshots, whose sample types are
    /// the four heap types: any other `type` is an error.
    fn of_snapshots(raw: Option<&str>) -> Result<ApiQuery, ProfileError> {
        let q = ApiQuery::parse(raw)?;
        match &q.raw_type {
            Some(t) if !SAMPLE_TYPES.contains(&t.as_str()) => {
                Err(ProfileError::bad_request(format!(
                    "unknown sample type {t:?}: one of {}",
                    SAMPLE_TYPES.join(", ")
                )))
            }
            _ => Ok(q),
        }
    }

    /// The heap the query names: snapshot `at` (a fresh one by default), or with `since` or
    /// `until` the blocks of the current heap allocated in that span.
    async fn heap(&self, s: &Settings) -> Result<Arc<Snapshot>, ProfileError> {
        let retained = self.since.is_some() || self.until.is_some();
        if retained && (self.at.is_some() || self.base.is_some()) {
            return Err(ProfileError::bad_request(
                "since and until select blocks of the current heap: they take no at or base",
            ));
        }
        let current = snapshot_at(s, self.at).await?;
        if !retained {
            return Ok(current);
        }
        if !current.has_ages() {
            return Err(ProfileError::bad_request(format!(
                "the source {:?} does not record when blocks were allocated",
                s.source.name()
            )));
        }
        let since = self.since.unwrap_or(UNIX_EPOCH);
        let until = self.until.unwrap_or(current.time);
        Ok(Arc::new(current.retained_between(since, until)))
    }

    /// The server's rule of the user's code, with the crates this request adds.
    fn user_code(&self, server: &UserCode) -> UserCode {
        server.clone().with_libraries(&self.libraries)
    }

    /// The tree the query asks for: filters, callers view, folding, baseline, cap.
    fn tree(
        &self,
        sample_type: &str,
        current: &Profile,
        base: Option<&Profile>,
        code: &UserCode,
    ) -> CallTree {
        let focus = self.focus.as_ref().map(|r| move |n: &str| r.is_match(n));
        let hide = self.hide.as_ref().map(|r| move |n: &str| r.is_match(n));
        let filter = TreeFilter {
            focus: focus.as_ref().map(|f| f as &dyn Fn(&str) -> bool),
            hide: hide.as_ref().map(|f| f as &dyn Fn(&str) -> bool),
            callers_of: self.callers.as_deref(),
            fold_root: self.fold.then_some(code),
            group_by: self.group.as_deref(),
        };
        CallTree::filtered(current, sample_type, base, filter).capped(self.max_nodes)
    }
}

fn regex_param(name: &str, v: &str) -> Result<regex::Regex, ProfileError> {
    regex::RegexBuilder::new(v)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| {
            ProfileError::bad_request(format!("invalid regular expression for {name:?}: {e}"))
        })
}

/// A time given as milliseconds since the Unix epoch (a far future saturates).
fn epoch_millis(ms: u64) -> std::time::SystemTime {
    UNIX_EPOCH
        .checked_add(std::time::Duration::from_millis(ms))
        .unwrap_or(UNIX_EPOCH + std::time::Duration::from_secs(u32::MAX as u64 * 64))
}

/// Milliseconds since the Unix epoch, as the JSON answers give times.
fn millis(time: std::time::SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The unit of one of the four heap sample types.
fn unit_of(sample_type: &str) -> &'static str {
    if sample_type.ends_with("space") {
        "bytes"
    } else {
        "count"
    }
}
