//! `SpanLabels` labels the heap from spans with no other code: `#[instrument]`ed async handlers
//! polled on a multi-thread runtime, nested spans, fields recorded late, and every route of an
//! axum server under tower-http's `TraceLayer`, reached over real HTTP.
//!
//! Runs without the test harness: the sample rate and the subscriber are global.

use heapsight::Labels;
use std::io::{Read, Write};
use std::sync::Mutex;
use tracing::Instrument;
use tracing_subscriber::prelude::*;

heapsight::global_allocator!(std::alloc::System);

/// In use under exactly `pairs` in a snapshot delta.
fn in_use(delta: &heapsight::Snapshot, pairs: &[(&str, &str)]) -> i64 {
    delta.inuse_space_under(Labels::new(pairs.iter().copied()))
}

#[tracing::instrument(skip(keep))]
async fn handle(tenant: &str, bytes: usize, keep: &Mutex<Vec<Vec<u8>>>) {
    for _ in 0..4 {
        tokio::task::yield_now().await;
        let block = vec![1u8; bytes / 4];
        keep.lock().unwrap().push(block);
    }
    nested(bytes, keep).await;
}

/// A span of its own, inside `handle`'s: adds `stage`, keeps the tenant.
#[tracing::instrument(skip(keep), fields(stage = "nested"))]
async fn nested(bytes: usize, keep: &Mutex<Vec<Vec<u8>>>) {
    tokio::task::yield_now().await;
    keep.lock().unwrap().push(vec![2u8; bytes]);
}

fn instrumented_handlers_label_their_allocations() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(3)
        .build()
        .unwrap();
    // Room for every block, made before sampling, so only the blocks are counted.
    let keep = Box::leak(Box::new(Mutex::new(Vec::with_capacity(1000))));
    heapsight::set_sample_rate(1);
    let before = heapsight::snapshot();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for (tenant, bytes) in [("acme", 40_000), ("globex", 120_000)] {
            for _ in 0..8 {
                let keep: &'static Mutex<Vec<Vec<u8>>> = keep;
                tasks.push(tokio::spawn(
                    async move { handle(tenant, bytes, keep).await },
                ));
            }
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    // A field recorded after the span began counts from then on.
    let late = tracing::info_span!("job", tenant = tracing::field::Empty);
    late.record("tenant", "initech");
    let kept_late = late.in_scope(|| vec![3u8; 50_000]);
    let delta = heapsight::snapshot().delta(&before);
    heapsight::set_sample_rate(0);

    // Besides the blocks, a span opened under labels may grow tracing's span slab under them
    // (pages it keeps): a few hundred bytes, allowed for.
    let about = |held: i64, truth: i64, what: &str| {
        assert!(
            (truth..truth + (16 << 10)).contains(&held),
            "{what}: {held} bytes in use, {truth} kept"
        );
    };
    for (tenant, bytes) in [("acme", 40_000i64), ("globex", 120_000)] {
        let own = in_use(&delta, &[("tenant", tenant)]);
        about(
            own,
            8 * bytes,
            &format!("tenant={tenant}, handle's own blocks"),
        );
        let nested = in_use(&delta, &[("stage", "nested"), ("tenant", tenant)]);
        about(nested, 8 * bytes, &format!("tenant={tenant}, stage=nested"));
    }
    about(
        in_use(&delta, &[("tenant", "initech")]),
        50_000,
        "tenant=initech",
    );
    drop(kept_late);
}

/// One HTTP/1.1 request over a fresh connection; the response's body.
fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out.split("\r\n\r\n").nth(1).unwrap_or("").to_string()
}

static CACHE: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

async fn cache_it() -> &'static str {
    CACHE.lock().unwrap().push(vec![9u8; 256 << 10]);
    "kept"
}

async fn pass() -> &'static str {
    let scratch = vec![0u8; 64 << 10];
    std::hint::black_box(&scratch);
    "done"
}

fn routes_under_trace_layer_are_labelled_by_uri() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_io()
        .build()
        .unwrap();
    CACHE.lock().unwrap().reserve(64);
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route("/cache", axum::routing::get(cache_it))
        .route("/pass", axum::routing::get(pass))
        .layer(tower_http::trace::TraceLayer::new_for_http());
    rt.spawn(async move { axum::serve(listener, app).await.unwrap() }.in_current_span());

    heapsight::set_sample_rate(64 << 10);
    let before = heapsight::snapshot();
    for _ in 0..40 {
        assert_eq!(get(addr, "/cache"), "kept");
        assert_eq!(get(addr, "/pass"), "done");
    }
    let delta = heapsight::snapshot().delta(&before);
    heapsight::set_sample_rate(0);

    let cached = in_use(&delta, &[("uri", "/cache")]);
    let truth = 40 * (256 << 10);
    let err = (cached - truth).abs() as f64 / truth as f64;
    assert!(err <= 0.15, "uri=/cache holds {cached} of {truth} bytes");
    let passed = in_use(&delta, &[("uri", "/pass")]);
    assert!(
        passed.abs() < truth / 20,
        "uri=/pass keeps nothing, yet {passed} bytes in use"
    );
    rt.shutdown_background();
}

fn main() {
    tracing_subscriber::registry()
        .with(
            heapsight_tracing::SpanLabels::new()
                .field("tenant")
                .field("stage")
                .field("uri"),
        )
        .init();
    instrumented_handlers_label_their_allocations();
    println!("test instrumented_handlers_label_their_allocations ... ok");
    routes_under_trace_layer_are_labelled_by_uri();
    println!("test routes_under_trace_layer_are_labelled_by_uri ... ok");
}
