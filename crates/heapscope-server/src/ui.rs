//! The web UI, compiled into the binary from `web/` (its built bundle is committed), served at
//! `/debug/pprof/ui/` with a policy that lets the page load nothing from anywhere else.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};

const INDEX: &str = include_str!("../../../web/index.html");
const APP_JS: &str = include_str!("../../../web/dist/app.js");
const STYLE: &str = include_str!("../../../web/style.css");

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'"),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    r
}

pub(crate) async fn index() -> Response {
    asset(INDEX, "text/html; charset=utf-8")
}

pub(crate) async fn app_js() -> Response {
    asset(APP_JS, "text/javascript; charset=utf-8")
}

pub(crate) async fn style() -> Response {
    asset(STYLE, "text/css; charset=utf-8")
}

/// `/debug/pprof/ui` without the slash: the page's relative links need it.
pub(crate) async fn add_slash() -> Redirect {
    Redirect::permanent("ui/")
}
