//! The standalone server's connections ([`crate::Options::spawn`]): HTTP/1.1 through hyper, with
//! bounds a profiler inside someone else's service needs and `axum::serve` does not set.
//!
//! - A request's headers must arrive within [`HEADER_READ_TIMEOUT`]: a client that opens
//!   connections and never finishes a request (slowloris) would otherwise hold each one, its
//!   socket and its buffers, for as long as it likes.
//! - At most [`MAX_CONNECTIONS`] are served at once; further clients wait in the listen backlog
//!   until one ends, so connections cannot take the profiler past its memory budget.
//!
//! A request's body has its own limits where a body is read (uploads: `crate::upload`).

use axum::body::Body;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, Semaphore};
use tower::ServiceExt as _;

/// How long a request's headers may take to arrive, from the connection's start or the end of
/// its previous request.
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once. Scrapers, `go tool pprof` and a browser's UI need a handful.
pub(crate) const MAX_CONNECTIONS: usize = 64;
/// How long a stop waits for requests in flight before it drops them.
const DRAIN: Duration = Duration::from_secs(5);

/// Serves `app` on `listener` until `stop` fires (or its sender is dropped).
pub(crate) async fn serve(listener: TcpListener, app: Router, mut stop: oneshot::Receiver<()>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            _ = &mut stop => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Out of file descriptors, say: wait for some to be given back.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        let service = TowerToHyperService::new(
            app.clone()
                .map_request(|r: hyper::Request<Incoming>| r.map(Body::new)),
        );
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .serve_connection(TokioIo::new(stream), service);
        tokio::spawn(async move {
            let _ = connection.await;
            drop(slot);
        });
    }
    // Requests in flight finish (each gives its slot back), within a bound.
    let _ = tokio::time::timeout(DRAIN, slots.acquire_many(MAX_CONNECTIONS as u32)).await;
}
