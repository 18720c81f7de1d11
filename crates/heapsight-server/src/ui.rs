//! The web UI, compiled into the binary from `ui/` (built from `web/` at the workspace's root by
//! `npm run build`, and committed), served at `/debug/pprof/ui/`.

use crate::respond::asset;
use axum::response::{Redirect, Response};

const INDEX: &str = include_str!("../ui/index.html");
const APP_JS: &str = include_str!("../ui/app.js");
const STYLE: &str = include_str!("../ui/style.css");

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
