//! Requests to the real router: the first byte picks an endpoint, and the rest is its query
//! string (a GET) or, for the UI's tree endpoint, an uploaded file (a POST). Whatever they
//! carry, the answer is a status below 500.
//!
//! Time runs paused: a request that asks to wait (`seconds=`) is answered as soon as nothing
//! else is left to do, not after its seconds.
#![no_main]

use axum::body::Body;
use axum::http::{Method, Request};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use tower::ServiceExt;

const ENDPOINTS: &[&str] = &[
    "/debug/pprof/heap",
    "/debug/pprof/allocs",
    "/debug/pprof/profile",
    "/debug/pprof/symbol",
    "/debug/pprof/ui/api/tree",
    "/debug/pprof/ui/api/growing",
    "/debug/pprof/ui/api/snapshots",
    "/debug/pprof/ui/api/folded",
    "/debug/pprof/ui/api/flamegraph.svg",
    "/debug/pprof/goroutine",
];

fn router() -> &'static axum::Router {
    static ROUTER: OnceLock<axum::Router> = OnceLock::new();
    ROUTER.get_or_init(heapsight_server::router)
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let upload = pick & 0x80 != 0;
    let path = ENDPOINTS[pick as usize % ENDPOINTS.len()];
    let request = if upload {
        Request::builder()
            .method(Method::POST)
            .uri("/debug/pprof/ui/api/tree")
            .body(Body::from(rest.to_vec()))
    } else {
        // Bytes a URI cannot carry are percent-escaped, as a client would send them.
        let query: String = rest
            .iter()
            .map(|&b| match b {
                // `%` itself passes, so that bad escapes reach the parsers.
                b'!'..=b'~' if b != b'#' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        Request::builder()
            .method(Method::GET)
            .uri(format!("{path}?{query}"))
            .body(Body::empty())
    };
    let Ok(request) = request else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let status = runtime
        .block_on(router().clone().oneshot(request))
        .unwrap()
        .status();
    assert!(status.as_u16() < 500, "{status} for {path}");
});
