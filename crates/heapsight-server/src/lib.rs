//! heapsight-server: the `/debug/pprof` endpoints of Go's `net/http/pprof`, for a Rust process
//! profiled by [`heapsight`].
//!
//! Mount them in an axum service, or run them on a thread of their own:
//!
//! ```no_run
//! use axum::{routing::get, Router};
//!
//! # async fn root() -> &'static str { "hello" }
//! // in an axum service: next to its own routes
//! let app: Router = Router::new().route("/", get(root)).merge(heapsight_server::router());
//!
//! // in any other program: a standalone server on its own thread
//! let server = heapsight_server::spawn("127.0.0.1:6060")?;
//! println!("profiles at http://{}/debug/pprof/", server.local_addr());
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! `go tool pprof http://127.0.0.1:6060/debug/pprof/heap` then works as it does against a Go
//! service, and so do Parca and Grafana Alloy scraping `/debug/pprof/allocs`.
//!
//! The endpoints expose what the process allocates and runs: bind to loopback, or set a bearer
//! token with [`Options::bearer_token`] (and TLS in front) before exposing them further.

mod api;
mod auth;
mod connections;
mod cpu;
mod endpoints;
mod error;
mod history;
mod memory;
mod packed;
mod query;
mod respond;
mod state;
mod ui;
mod upload;
mod worker;

pub use error::ProfileError;

use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::get;
use axum::Router;
use state::Settings;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

pub use heapsight::SnapshotSource;
pub use history::{
    DEFAULT_CAPACITY as DEFAULT_HISTORY_CAPACITY, DEFAULT_INTERVAL as DEFAULT_HISTORY_INTERVAL,
    DEFAULT_MAX_BYTES as DEFAULT_HISTORY_MAX_BYTES,
};

/// The largest `seconds` a request may ask for, by default (as Go allows up to the server's
/// write timeout).
pub const DEFAULT_MAX_SECONDS: u64 = 300;
/// Delta heap profiles that may wait at once, by default.
pub const DEFAULT_MAX_WAITING: usize = 8;
const MAX_BODY_BYTES: usize = 1 << 20;
/// The largest profile upload accepted as sent, by default ([`Options::upload_limits`]).
pub const DEFAULT_UPLOAD_COMPRESSED: usize = 1 << 20;
/// The largest profile upload accepted once decompressed, by default.
pub const DEFAULT_UPLOAD_DECOMPRESSED: usize = 2 << 20;

/// How the endpoints are served: limits and access control.
///
/// ```
/// let app = heapsight_server::Options::new()
///     .bearer_token("s3cret")
///     .max_seconds(60)
///     .router();
/// # let _: axum::Router = app;
/// ```
#[derive(Clone)]
pub struct Options {
    source: Arc<dyn SnapshotSource>,
    max_seconds: u64,
    max_waiting: usize,
    bearer_token: Option<String>,
    history_settings: Option<(Duration, usize, usize)>,
    user_code: heapsight_profile::UserCode,
    remote_symbolization: bool,
    cmdline: bool,
    symbol: bool,
    upload_limits: upload::UploadLimits,
}

impl Default for Options {
    /// The default source is the sampler, and what it takes to say so is the profiler's own
    /// memory: built with the sampler paused.
    fn default() -> Self {
        let mut options = None;
        heapsight::SamplerSource.unprofiled(&mut || options = Some(Options::with_sampler()));
        options.expect("the sampler's unprofiled() runs the work it is given")
    }
}

impl Options {
    fn with_sampler() -> Self {
        Options {
            source: Arc::new(heapsight::SamplerSource),
            max_seconds: DEFAULT_MAX_SECONDS,
            max_waiting: DEFAULT_MAX_WAITING,
            bearer_token: None,
            user_code: heapsight_profile::UserCode::default(),
            remote_symbolization: false,
            cmdline: true,
            symbol: true,
            upload_limits: upload::UploadLimits {
                compressed: DEFAULT_UPLOAD_COMPRESSED,
                decompressed: DEFAULT_UPLOAD_DECOMPRESSED,
            },
            history_settings: Some((
                history::DEFAULT_INTERVAL,
                history::DEFAULT_CAPACITY,
                history::DEFAULT_MAX_BYTES,
            )),
        }
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("source", &self.source.name())
            .field("max_seconds", &self.max_seconds)
            .field("max_waiting", &self.max_waiting)
            .field("bearer_token", &self.bearer_token.as_ref().map(|_| "<set>"))
            .field("history", &self.history_settings)
            .field("remote_symbolization", &self.remote_symbolization)
            .field("cmdline", &self.cmdline)
            .field("symbol", &self.symbol)
            .field("upload_limits", &self.upload_limits)
            .finish()
    }
}

impl Options {
    pub fn new() -> Options {
        Options::default()
    }

    /// Where heap snapshots come from. Default: heapsight's own sampler
    /// ([`heapsight::SamplerSource`]); `heapsight-jemalloc` provides jemalloc's profiler.
    pub fn source(mut self, source: impl SnapshotSource + 'static) -> Options {
        self.source = Arc::new(source);
        self
    }

    /// Crates whose frames are not the service's own code, on top of the standard library and
    /// tokio ([`heapsight_profile::DEFAULT_LIBRARIES`]): the frameworks it is built on, such as
    /// `["hyper", "tower", "axum"]`. The web UI names each stack by its first frame outside
    /// them and folds them at the root of the flame graph; profiles keep every frame.
    pub fn libraries<S: AsRef<str>>(mut self, crates: impl IntoIterator<Item = S>) -> Options {
        self.user_code = self.user_code.with_libraries(crates);
        self
    }

    /// Leaves naming the frames of `/heap` and `/allocs` (and their deltas) to the reader, as a
    /// Go service does: the profiles carry addresses and mappings (`has_functions: false`), and
    /// `go tool pprof URL` names them through `/debug/pprof/symbol`, which answers from this
    /// process. The profile endpoints then never open debug info themselves; the web UI, which
    /// needs names, still does.
    pub fn remote_symbolization(mut self) -> Options {
        self.remote_symbolization = true;
        self
    }

    /// Turns `/debug/pprof/cmdline` off (it then answers `404`). It serves the process's
    /// command line, arguments and all, as Go's does: anything passed on it, a password or a
    /// key included, is readable by whoever reaches the endpoints.
    pub fn without_cmdline(mut self) -> Options {
        self.cmdline = false;
        self
    }

    /// Turns `/debug/pprof/symbol` off (it then answers `404`). It names the function at any
    /// address of this process it is asked about, so it tells a reader the program's functions
    /// and where they are loaded (the addresses in profiles, which `/heap` already names, say
    /// much the same). Profiles still name their frames in-process; do not combine it with
    /// [`Options::remote_symbolization`], which leaves naming to `/symbol`.
    pub fn without_symbol(mut self) -> Options {
        self.symbol = false;
        self
    }

    /// How large a profile the web UI may upload to be read (its "Open pprof files"; `POST
    /// .../ui/api/tree`): at most `compressed` bytes as sent, and `decompressed` once unpacked,
    /// the baseline and the current profile together. Larger uploads get `413`. The upload is
    /// read as it arrives and unpacked into a buffer that stops at the limit, and one upload is
    /// read at a time (a second gets `429`), so the limits bound what an upload can take. What
    /// it takes is mostly the call tree built from it, not the file: in
    /// `benches/uploads.rs` a profile of 0.9 MiB unpacked peaked at 24 MiB of heap, one of
    /// 1.9 MiB at 92 MiB (`docs/performance.md`, "Uploads"). Default: 1 MiB and 2 MiB, enough
    /// for most heap profiles a Go or heapsight service writes; raise them where reading large
    /// files matters more than the memory, or turn uploads off with `upload_limits(0, 0)`.
    pub fn upload_limits(mut self, compressed: usize, decompressed: usize) -> Options {
        self.upload_limits = upload::UploadLimits {
            compressed,
            decompressed,
        };
        self
    }

    /// Requests must carry `Authorization: Bearer <token>`; others get `401`.
    pub fn bearer_token(mut self, token: impl Into<String>) -> Options {
        self.bearer_token = Some(token.into());
        self
    }

    /// The largest `seconds` accepted (larger ones get `400`). Default 300.
    pub fn max_seconds(mut self, seconds: u64) -> Options {
        self.max_seconds = seconds.max(1);
        self
    }

    /// How many delta heap profiles may wait at once (more get `429`). Default 8.
    pub fn max_waiting(mut self, n: usize) -> Options {
        self.max_waiting = n.max(1);
        self
    }

    /// Snapshot history for the web UI: one snapshot every `interval`, at most `capacity` of
    /// them and `max_bytes` of memory, oldest dropped first. Default: every 10 s, for an hour,
    /// within 4 MiB (the profiler's whole budget is 8 MiB; see `docs/performance.md`).
    pub fn history(mut self, interval: Duration, capacity: usize, max_bytes: usize) -> Options {
        self.history_settings =
            Some((interval.max(Duration::from_millis(10)), capacity, max_bytes));
        self
    }

    /// No snapshot history (the UI then shows only the current heap).
    pub fn without_history(mut self) -> Options {
        self.history_settings = None;
        self
    }

    /// The endpoints, under `/debug/pprof/`, to merge into an application's router or wrap in
    /// any tower layer. Starts the snapshot history's thread, if history is on.
    pub fn router(self) -> Router {
        // The endpoints' own state (settings, the history and its thread) is the profiler's
        // memory, not the service's: build it with the source's sampling paused.
        let source = self.source.clone();
        let mut router = None;
        let mut options = Some(self);
        source.unprofiled(&mut || router = options.take().map(Options::build_router));
        router.expect("a source's unprofiled() runs the work it is given")
    }

    fn build_router(self) -> Router {
        let source = self.source;
        let settings = Arc::new(Settings {
            source: source.clone(),
            max_seconds: Duration::from_secs(self.max_seconds),
            waits: Arc::new(Semaphore::new(self.max_waiting)),
            history: self.history_settings.map(|(interval, capacity, bytes)| {
                history::History::start(source, interval, capacity, bytes)
            }),
            bearer_token: self.bearer_token,
            user_code: self.user_code,
            names_in_process: !self.remote_symbolization,
            cmdline: self.cmdline,
            symbol: self.symbol,
            upload_limits: self.upload_limits,
            uploads: Arc::new(Semaphore::new(1)),
        });
        Router::new()
            .route("/debug/pprof/", get(endpoints::index))
            .route("/debug/pprof/heap", get(endpoints::heap))
            .route("/debug/pprof/allocs", get(endpoints::allocs))
            .route("/debug/pprof/profile", get(cpu::profile))
            .route(
                "/debug/pprof/symbol",
                get(endpoints::symbol).post(endpoints::symbol),
            )
            .route("/debug/pprof/cmdline", get(endpoints::cmdline))
            .route("/debug/pprof/ui", get(ui::add_slash))
            .route("/debug/pprof/ui/", get(ui::index))
            .route("/debug/pprof/ui/app.js", get(ui::app_js))
            .route("/debug/pprof/ui/style.css", get(ui::style))
            .route(
                "/debug/pprof/ui/api/snapshots",
                get(api::snapshots::snapshots),
            )
            .route(
                "/debug/pprof/ui/api/tree",
                get(api::tree::tree)
                    .post(api::tree::tree_of_upload)
                    .layer(DefaultBodyLimit::disable()),
            )
            .route("/debug/pprof/ui/api/growing", get(api::growing::growing))
            .route("/debug/pprof/ui/api/memory", get(memory::memory))
            .route("/debug/pprof/ui/api/folded", get(api::downloads::folded))
            .route(
                "/debug/pprof/ui/api/flamegraph.svg",
                get(api::downloads::flamegraph_svg),
            )
            .route("/debug/pprof/{*name}", get(endpoints::unknown_profile))
            .method_not_allowed_fallback(endpoints::method_not_allowed)
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
            .layer(middleware::from_fn_with_state(
                settings.clone(),
                auth::authorize,
            ))
            .layer(middleware::from_fn(respond::common_headers))
            .layer(middleware::from_fn(respond::own_requests))
            .with_state(settings)
    }

    /// Serves the endpoints on a thread of its own, with its own small runtime, so that any
    /// program (async or not) can use them. Binds where it is told; use loopback unless the
    /// endpoints are protected.
    pub fn spawn(self, addr: impl ToSocketAddrs) -> std::io::Result<Server> {
        // The server is the profiler, not the service: its runtime, its connections and its
        // answers are the profiler's own allocations. One thread runs it all (profiles are
        // built on the profiler's worker threads, as its own work too).
        let source = self.source.clone();
        let mut server = None;
        let mut args = Some((self, addr));
        source.unprofiled(&mut || server = args.take().map(|(o, addr)| o.spawn_paused(addr)));
        server.expect("a source's unprofiled() runs the work it is given")
    }

    fn spawn_paused(self, addr: impl ToSocketAddrs) -> std::io::Result<Server> {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let local_addr = listener.local_addr()?;
        let source = self.source.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .max_blocking_threads(2)
            .thread_name("heapsight-server")
            .enable_all()
            .build()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = self.router();
        let mut serve = Some(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                return;
            };
            connections::serve(listener, app, stopped).await;
        });
        let thread = std::thread::Builder::new()
            .name("heapsight-server".into())
            .spawn(move || {
                source.unprofiled(&mut || {
                    if let Some(serve) = serve.take() {
                        runtime.block_on(serve);
                    }
                })
            })?;
        Ok(Server {
            local_addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

/// The `/debug/pprof/` endpoints with default options.
pub fn router() -> Router {
    Options::default().router()
}

/// Serves the endpoints on a thread of its own at `addr` (`"127.0.0.1:0"` picks a free port).
pub fn spawn(addr: impl ToSocketAddrs) -> std::io::Result<Server> {
    Options::default().spawn(addr)
}

/// A standalone server started by [`spawn`]. Dropping it stops the server.
pub struct Server {
    local_addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Where the server listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting connections and waits for the server thread to end.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}
