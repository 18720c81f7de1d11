//! Error responses in the shape Go's `net/http/pprof` sends them: plain text, `X-Go-Pprof: 1`,
//! no `Content-Disposition`, so tools that speak to Go services recognise them.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// A profiling error: an HTTP status and a message for the person or tool that asked.
#[derive(Debug)]
pub struct ProfileError {
    pub status: StatusCode,
    pub message: String,
}

impl ProfileError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ProfileError {
            status,
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for ProfileError {
    fn into_response(self) -> Response {
        let mut r = (self.status, format!("{}\n", self.message)).into_response();
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        h.insert("x-go-pprof", HeaderValue::from_static("1"));
        h.insert(
            "x-content-type-options",
            HeaderValue::from_static("nosniff"),
        );
        r
    }
}
