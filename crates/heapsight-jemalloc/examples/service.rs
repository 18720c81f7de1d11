//! A small axum service on jemalloc, with jemalloc's own profiler served through heapsight.
//!
//! ```sh
//! cargo run --release -p heapsight-jemalloc --example service            # on 127.0.0.1:3000
//! curl 'http://127.0.0.1:3000/remember?kib=512'                           # grows a cache
//! go tool pprof -top http://127.0.0.1:3000/debug/pprof/heap               # names `remember`
//! open http://127.0.0.1:3000/debug/pprof/ui/                              # the flame graph
//! ```

use axum::extract::{Query, State};
use axum::routing::get;
use axum::Router;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's profiler on from the start, at Go's default rate (2^19 = 512 KiB), counting freed
/// allocations too. `_RJEM_MALLOC_CONF` in the environment can override these.
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8] = b"prof:true,prof_accum:true,lg_prof_sample:19\0";

type Cache = Arc<Mutex<Vec<Vec<u8>>>>;

/// Keeps `kib` KiB forever: the service's "leak".
async fn remember(State(cache): State<Cache>, Query(q): Query<HashMap<String, usize>>) -> String {
    let kib = q.get("kib").copied().unwrap_or(64).min(1 << 20);
    let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
    cache.push(vec![7u8; kib * 1024]);
    format!("remembering {} blocks\n", cache.len())
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or("127.0.0.1:3000".into());
    match heapsight_jemalloc::status() {
        Ok(s) => println!("jemalloc profiler: sampling every {} bytes", s.sample_rate),
        Err(e) => eprintln!("warning: {e}"),
    }
    let app = Router::new()
        .route("/", get(|| async { "hello\n" }))
        .route("/remember", get(remember))
        .with_state(Cache::default())
        .merge(
            heapsight_server::Options::new()
                .source(heapsight_jemalloc::JemallocSource::new())
                .router(),
        );
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!(
        "serving on http://{}/ (profiles at /debug/pprof/)",
        listener.local_addr()?
    );
    axum::serve(listener, app).await
}
