//! The `/debug/pprof/*` handlers. Each behaves as Go's `net/http/pprof` does where tools depend
//! on it: the same paths, parameters, headers, file names and error shapes.

use crate::error::ProfileError;
use crate::query::ProfileQuery;
use crate::respond::{attachment, plain_text};
use crate::state::{blocking, take_snapshot_of, Settings};
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{Method, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use heapsight_profile::{HeapView, Profile};
use std::sync::Arc;

pub(crate) async fn heap(
    State(s): State<Arc<Settings>>,
    RawQuery(q): RawQuery,
) -> Result<Response, ProfileError> {
    heap_profile(&s, HeapView::InUse, "heap", q.as_deref()).await
}

pub(crate) async fn allocs(
    State(s): State<Arc<Settings>>,
    RawQuery(q): RawQuery,
) -> Result<Response, ProfileError> {
    heap_profile(&s, HeapView::Allocs, "allocs", q.as_deref()).await
}

async fn heap_profile(
    s: &Settings,
    view: HeapView,
    name: &str,
    q: Option<&str>,
) -> Result<Response, ProfileError> {
    let q = ProfileQuery::parse(q);
    if let Some(wait) = q.duration(s.max_seconds)? {
        if q.debug != 0 {
            return Err(ProfileError::bad_request(
                "seconds and debug params are incompatible",
            ));
        }
        let _permit = s.waits.clone().try_acquire_owned().map_err(|_| {
            ProfileError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too many delta profiles in progress; try again later",
            )
        })?;
        let before = take_snapshot_of(s, q.own).await?;
        // Dropped, and so cancelled, when the client goes away.
        tokio::time::sleep(wait).await;
        let delta = take_snapshot_of(s, q.own).await?.delta(&before);
        let names = s.names_in_process;
        let body = blocking(s, move || profile_of(&delta, view, names).to_pprof_bytes()).await?;
        return Ok(attachment(body, &format!("{name}-delta")));
    }
    let snapshot = take_snapshot_of(s, q.own).await?;
    if q.debug != 0 {
        let text = blocking(s, move || {
            let mut out = Vec::new();
            heapsight_profile::write_legacy_heap_text(&snapshot, &mut out).map(|_| out)
        })
        .await?
        .map_err(|e| ProfileError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        return Ok(plain_text(String::from_utf8_lossy(&text).into_owned()));
    }
    let names = s.names_in_process;
    let body = blocking(s, move || {
        profile_of(&snapshot, view, names).to_pprof_bytes()
    })
    .await?;
    Ok(attachment(body, name))
}

/// The profile of a snapshot, named here or (with `Options::remote_symbolization`) left for
/// the reader to name.
fn profile_of(snapshot: &heapsight::Snapshot, view: HeapView, names: bool) -> Profile {
    if names {
        Profile::heap(snapshot, view)
    } else {
        Profile::heap_unnamed(snapshot, view)
    }
}

pub(crate) async fn index(State(s): State<Arc<Settings>>) -> Response {
    let memory = crate::memory::Memory::now(&*s.source);
    let warnings: String = s
        .source
        .warnings()
        .iter()
        .map(|w| {
            format!(
                "<p class=\"warning\"><strong>Warning:</strong> {}</p>\n",
                html_escape(w)
            )
        })
        .collect();
    let page = INDEX
        .replace("CMDLINE_ROW\n", if s.cmdline { CMDLINE_ROW } else { "" })
        .replace("SYMBOL_ROW\n", if s.symbol { SYMBOL_ROW } else { "" });
    Html(
        page.replace("SOURCE", &html_escape(s.source.name()))
            .replace("WARNINGS\n", &warnings)
            .replace("MEMORY", &html_escape(&memory.sentence())),
    )
    .into_response()
}

const INDEX: &str = r#"<!doctype html>
<html>
<head><meta charset="utf-8"><title>/debug/pprof/</title></head>
<body>
<h1>/debug/pprof/</h1>
WARNINGS
<p>Profiles of this process; heap profiles from the SOURCE. Open one with <code>go tool pprof</code>,
for example <code>go tool pprof -http=:8081 http://HOST/debug/pprof/heap</code>.
Add <code>debug=1</code> for the legacy text format, <code>seconds=N</code> for what changed over N seconds.</p>
<p><a href="ui/"><strong>Open the web UI</strong></a>: flame graphs of the heap, growth in red.</p>
<p id="memory">MEMORY Add <code>own=1</code> to a heap profile to see the profiler's own allocations, under <code>heapsight::own::*</code>.</p>
<table>
<tr><td><a href="allocs">allocs</a></td><td>A sample of every allocation since the process started, by call stack.</td></tr>
<tr><td><a href="heap">heap</a></td><td>A sample of the allocations still in use, by call stack.</td></tr>
<tr><td><a href="heap?debug=1">heap?debug=1</a></td><td>The same in the legacy text format.</td></tr>
<tr><td><a href="profile?seconds=10">profile</a></td><td>A CPU profile over <code>seconds</code> (default 30).</td></tr>
CMDLINE_ROW
SYMBOL_ROW
</table>
</body>
</html>
"#;

const CMDLINE_ROW: &str =
    "<tr><td><a href=\"cmdline\">cmdline</a></td><td>The command line of this process.</td></tr>\n";
const SYMBOL_ROW: &str =
    "<tr><td><a href=\"symbol\">symbol</a></td><td>Looks up addresses; used by pprof.</td></tr>\n";

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

pub(crate) async fn cmdline(State(s): State<Arc<Settings>>) -> Result<Response, ProfileError> {
    if !s.cmdline {
        return Err(Settings::turned_off(
            "/debug/pprof/cmdline",
            "without_cmdline",
        ));
    }
    Ok(plain_text(
        std::env::args_os()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("\0"),
    ))
}

/// `GET` answers whether symbols exist; `POST` (or a `GET` query) of `0xADDR+0xADDR...` answers
/// with one `0xADDR name` line per address this process knows. `go tool pprof` uses it to name
/// the addresses of the legacy text profile.
pub(crate) async fn symbol(
    State(s): State<Arc<Settings>>,
    method: Method,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Result<Response, ProfileError> {
    if !s.symbol {
        return Err(Settings::turned_off(
            "/debug/pprof/symbol",
            "without_symbol",
        ));
    }
    let input = if method == Method::POST {
        String::from_utf8_lossy(&body).into_owned()
    } else {
        q.unwrap_or_default()
    };
    let text = blocking(&s, move || {
        let mut out = String::from("num_symbols: 1\n");
        let addresses: Vec<u64> = input
            .split('+')
            .filter_map(|w| parse_address(w.trim()))
            .collect();
        heapsight_profile::symbolize::with_symbolizer(|s| {
            s.refresh();
            for a in addresses {
                // One name per address: the function the address lies in (the outermost of its
                // inlined frames), which says whose code it is.
                if let Some(f) = s.frames(a).last() {
                    out.push_str(&format!("{a:#x} {}\n", f.function));
                }
            }
        });
        out
    })
    .await?;
    Ok(plain_text(text))
}

fn parse_address(word: &str) -> Option<u64> {
    let n = match word.strip_prefix("0x").or_else(|| word.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok()?,
        None => word.parse().ok()?,
    };
    (n != 0).then_some(n)
}

pub(crate) async fn unknown_profile() -> ProfileError {
    ProfileError::new(StatusCode::NOT_FOUND, "Unknown profile")
}

pub(crate) async fn method_not_allowed() -> ProfileError {
    ProfileError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed: profiles are fetched with GET",
    )
}
