//! The shapes of successful answers (profile downloads, text, JSON, SVG), and the headers every
//! answer carries, set in one place.

use axum::extract::Request;
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Middleware: headers on every answer, errors and assets included. `nosniff` keeps browsers
/// from reading a profile or a JSON answer as HTML.
pub(crate) async fn common_headers(request: Request, next: Next) -> Response {
    let mut r = next.run(request).await;
    r.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// Middleware: the endpoints' work on the service's async workers (routing, handlers, the
/// answers they build) is the profiler's own, in [`heapsight::own::Part::Requests`], so that
/// mounted in a service's router it stays out of the service's heap and is counted.
pub(crate) async fn own_requests(request: Request, next: Next) -> Response {
    OwnPolls(Box::pin(next.run(request))).await
}

/// Polls its future as the profiler's own work.
struct OwnPolls<F>(std::pin::Pin<Box<F>>);

impl<F: std::future::Future> std::future::Future for OwnPolls<F> {
    type Output = F::Output;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        let inner = self.0.as_mut();
        heapsight::own::run_or(heapsight::own::Part::Requests, || inner.poll(cx))
    }
}

fn with_type(body: impl IntoResponse, content_type: &'static str) -> Response {
    let mut r = body.into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// A successful profile download.
pub(crate) fn attachment(body: Vec<u8>, filename: &str) -> Response {
    let mut r = with_type(body, "application/octet-stream");
    r.headers_mut().insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&format!("attachment; filename=\"{filename}\""))
            .expect("file names are ASCII"),
    );
    r
}

pub(crate) fn plain_text(body: String) -> Response {
    with_type(body, "text/plain; charset=utf-8")
}

pub(crate) fn json(body: &impl Serialize) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => with_type(bytes, "application/json"),
        Err(e) => crate::error::ProfileError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding the answer failed: {e}"),
        )
        .into_response(),
    }
}

pub(crate) fn svg(body: Vec<u8>) -> Response {
    with_type(body, "image/svg+xml")
}

/// A static asset of the web UI, with a policy that lets the page load nothing from anywhere
/// else.
pub(crate) fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut r = with_type(body, content_type);
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'"),
    );
    r
}
