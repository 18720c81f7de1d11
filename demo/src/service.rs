//! The service scenario: a leak found in a service that does what services do.
//!
//! The timer scenarios allocate nothing but the leak. A real service's heap is mostly other
//! things, and some of them grow too. This axum service has three kinds of memory:
//! - **Churn:** `/render` formats each answer in a 32 KiB buffer, freed when it is sent.
//! - **A bounded cache:** `/item` keeps every item it built, up to [`CACHE_ITEMS`] of 2 KiB:
//!   it fills over its first 10-20 s under the demo's load, then stays flat.
//! - **A slow leak:** every request records its session in a registry, and nothing ever forgets
//!   a session ([`Sessions::remember`]). The fix ([`Sessions::new`] with `fixed`) forgets
//!   sessions idle for [`SESSION_IDLE`].
//!
//! Each request's allocations are labelled with its route (`route=/item`, `route=/render`:
//! [`label_route`]), so the heap splits by route in `go tool pprof -tags` and in the UI.
//!
//! [`load`] drives it over loopback, as clients would.

use axum::extract::{Query, State};
use axum::routing::get;
use axum::Router;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// Items the cache keeps: 20 MiB of 2 KiB items.
pub const CACHE_ITEMS: u64 = 10_000;
const ITEM_BYTES: usize = 2048;
/// How long a session may be idle before the fixed registry forgets it.
pub const SESSION_IDLE: Duration = Duration::from_secs(5);
/// Requests a client makes in one session.
const REQUESTS_PER_SESSION: u64 = 20;

/// What a session remembers of its requests.
struct Session {
    last_seen: Instant,
    /// The paths it asked for, most recent last.
    trail: Vec<String>,
}

/// The registry of sessions every request passes through.
pub struct Sessions {
    fixed: bool,
    by_id: Mutex<HashMap<u64, Session>>,
}

impl Sessions {
    /// A registry; `fixed` forgets idle sessions.
    pub fn new(fixed: bool) -> Sessions {
        Sessions {
            fixed,
            by_id: Mutex::new(HashMap::new()),
        }
    }

    /// Records a request of session `id`. The leak: a session is added, and never removed.
    #[inline(never)]
    pub fn remember(&self, id: u64, path: &str) {
        let now = Instant::now();
        let mut sessions = self.by_id.lock().unwrap_or_else(|p| p.into_inner());
        let session = sessions.entry(id).or_insert_with(|| Session {
            last_seen: now,
            trail: Vec::with_capacity(REQUESTS_PER_SESSION as usize),
        });
        session.last_seen = now;
        session.trail.push(path.to_string());
        if self.fixed && id % 64 == 0 {
            sessions.retain(|_, s| now.duration_since(s.last_seen) < SESSION_IDLE);
        }
    }

    /// Sessions held.
    pub fn len(&self) -> usize {
        self.by_id.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The service's state.
pub struct Service {
    pub sessions: Sessions,
    cache: Mutex<HashMap<u64, Arc<[u8]>>>,
}

impl Service {
    pub fn new(fixed: bool) -> Arc<Service> {
        Arc::new(Service {
            sessions: Sessions::new(fixed),
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The item `id`, built and kept on first use; the cache holds at most [`CACHE_ITEMS`].
    #[inline(never)]
    fn cached_item(&self, id: u64) -> Arc<[u8]> {
        let id = id % CACHE_ITEMS;
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .entry(id)
            .or_insert_with(|| vec![(id % 251) as u8; ITEM_BYTES].into())
            .clone()
    }
}

#[derive(serde::Deserialize)]
struct Request {
    id: u64,
    session: u64,
}

async fn item(State(s): State<Arc<Service>>, Query(q): Query<Request>) -> String {
    s.sessions.remember(q.session, "/item");
    let item = s.cached_item(q.id);
    format!("item {} of {} bytes\n", q.id, item.len())
}

/// Formats an answer in a fresh buffer: the per-request churn.
#[inline(never)]
fn render_page(id: u64) -> u64 {
    let mut page = Vec::with_capacity(32 << 10);
    while page.len() < 32 << 10 {
        page.extend_from_slice(format!("<p>row {id}</p>").as_bytes());
    }
    page.iter().map(|&b| b as u64).sum()
}

async fn render(State(s): State<Arc<Service>>, Query(q): Query<Request>) -> String {
    s.sessions.remember(q.session, "/render");
    format!("checksum {}\n", render_page(q.id))
}

/// The service's own routes, each request labelled with its route.
pub fn routes(service: Arc<Service>) -> Router {
    Router::new()
        .route("/item", get(item))
        .route("/render", get(render))
        .route_layer(axum::middleware::from_fn(label_route))
        .with_state(service)
}

/// Middleware: the request's handler runs with `route=<matched path>` as its heap labels, on
/// whichever worker polls it. The route, not the URI: a label with a value per request would
/// fill the label table and come out as `other`.
pub async fn label_route(
    path: axum::extract::MatchedPath,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let labels = heapsight::Labels::new([("route", path.as_str())]);
    labels.bind(next.run(request)).await
}

/// Requests the service at `addr` about `per_second` times a second from four keep-alive
/// connections, forever: new sessions as clients come and go, items in order (so the cache
/// fills over its first `CACHE_ITEMS` requests), a page rendered for every other request.
pub async fn load(addr: std::net::SocketAddr, per_second: u64) {
    const CLIENTS: u64 = 4;
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        clients.push(tokio::spawn(async move {
            let interval = Duration::from_secs_f64(CLIENTS as f64 / per_second.max(1) as f64);
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut n = c;
            loop {
                let Ok(stream) = tokio::net::TcpStream::connect(addr).await else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let mut stream = BufReader::new(stream);
                loop {
                    tick.tick().await;
                    let path = if n % 2 == 0 { "item" } else { "render" };
                    let target =
                        format!("/{path}?id={}&session={}", n / 2, n / REQUESTS_PER_SESSION);
                    n += CLIENTS;
                    if get_one(&mut stream, &target).await.is_err() {
                        break;
                    }
                }
            }
        }));
    }
    for c in clients {
        let _ = c.await;
    }
}

/// One keep-alive GET: sends it, reads the answer's head and its `Content-Length` body.
async fn get_one(
    stream: &mut BufReader<tokio::net::TcpStream>,
    target: &str,
) -> std::io::Result<()> {
    let request = format!("GET {target} HTTP/1.1\r\nHost: demo\r\n\r\n");
    stream.get_mut().write_all(request.as_bytes()).await?;
    let mut length = 0usize;
    let mut line = String::new();
    loop {
        line.clear();
        if stream.read_line(&mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await?;
    Ok(())
}
