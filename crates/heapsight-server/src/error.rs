//! Error responses in the shape Go's `net/http/pprof` sends them: plain text, `X-Go-Pprof: 1`,
//! no `Content-Disposition`, so tools that speak to Go services recognise them.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use heapsight::{SourceError, SourceErrorKind};

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

/// A source that is not there (jemalloc without `prof:true`) is `501 Not Implemented`: this
/// process cannot serve heap profiles until it is restarted differently, and retrying will not
/// help. A source that failed is `500`.
impl From<SourceError> for ProfileError {
    fn from(e: SourceError) -> Self {
        let status = match e.kind {
            SourceErrorKind::NotEnabled => StatusCode::NOT_IMPLEMENTED,
            SourceErrorKind::Failed => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ProfileError::new(status, e.message)
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
        r
    }
}
