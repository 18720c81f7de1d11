//! Profiles uploaded to the UI's tree endpoint, read as they arrive. Each part of the body (the
//! baseline's first `base_bytes`, then the current profile) goes chunk by chunk into a gzip
//! decoder, or straight through when it is not compressed, that writes into a buffer capped at
//! the decompressed limit. Neither the compressed body nor more than the limit of a profile is
//! ever held, one upload is read at a time, and a client that stops sending is cut off.

use crate::error::ProfileError;
use axum::body::Body;
use axum::http::StatusCode;
use flate2::write::GzDecoder;
use http_body_util::BodyExt;
use std::io::{self, Write};
use std::time::Duration;

/// How large an upload may be, sent and unpacked ([`crate::Options::upload_limits`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct UploadLimits {
    pub(crate) compressed: usize,
    pub(crate) decompressed: usize,
}

/// How long a client may take to send its whole upload.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// A buffer that refuses to grow past its cap.
struct Capped {
    out: Vec<u8>,
    cap: usize,
}

impl Write for Capped {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        if self.out.len() + b.len() > self.cap {
            return Err(io::Error::new(io::ErrorKind::OutOfMemory, "over the cap"));
        }
        self.out.extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One part of the body, decompressed as it arrives.
enum Part {
    /// Fewer than two bytes seen: not yet known whether it is gzip.
    Start(Vec<u8>),
    Plain(Capped),
    Gzip(Box<GzDecoder<Capped>>),
}

impl Part {
    fn write(&mut self, mut b: &[u8], cap: usize) -> io::Result<()> {
        if let Part::Start(head) = self {
            let need = (2 - head.len()).min(b.len());
            head.extend_from_slice(&b[..need]);
            b = &b[need..];
            if head.len() < 2 {
                return Ok(());
            }
            let head = std::mem::take(head);
            let out = Capped {
                out: Vec::new(),
                cap,
            };
            *self = if head == [0x1f, 0x8b] {
                Part::Gzip(Box::new(GzDecoder::new(out)))
            } else {
                Part::Plain(out)
            };
            self.write(&head, cap)?;
        }
        match self {
            Part::Start(_) => unreachable!("decided above"),
            Part::Plain(out) => out.write_all(b),
            Part::Gzip(d) => d.write_all(b),
        }
    }

    fn finish(self) -> io::Result<Vec<u8>> {
        match self {
            Part::Start(head) => Ok(head),
            Part::Plain(out) => Ok(out.out),
            Part::Gzip(d) => d.finish().map(|c| c.out),
        }
    }
}

/// Reads an upload: the baseline (the first `split` bytes, if any) and the current profile,
/// each decompressed, as protobuf bytes.
pub(crate) async fn read(
    body: Body,
    split: usize,
    limits: UploadLimits,
) -> Result<(Option<Vec<u8>>, Vec<u8>), ProfileError> {
    match tokio::time::timeout(READ_TIMEOUT, read_all(body, split, limits)).await {
        Ok(read) => read,
        Err(_) => Err(ProfileError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the upload did not arrive within {} s",
                READ_TIMEOUT.as_secs()
            ),
        )),
    }
}

async fn read_all(
    mut body: Body,
    split: usize,
    limits: UploadLimits,
) -> Result<(Option<Vec<u8>>, Vec<u8>), ProfileError> {
    let too_large = |what: &str, limit: usize| {
        ProfileError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the upload is larger than {limit} bytes {what} (the server's \
                 Options::upload_limits)"
            ),
        )
    };
    let unreadable = |which: &str, e: io::Error| {
        if e.kind() == io::ErrorKind::OutOfMemory {
            too_large("uncompressed", limits.decompressed)
        } else {
            ProfileError::bad_request(format!("the {which} profile is not readable: gzip: {e}"))
        }
    };
    let cap = limits.decompressed;
    let mut base = (split > 0).then(|| Part::Start(Vec::new()));
    let mut current = Part::Start(Vec::new());
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|e| ProfileError::bad_request(format!("the upload could not be read: {e}")))?;
        let Ok(mut chunk) = frame.into_data() else {
            continue;
        };
        if seen + chunk.len() > limits.compressed {
            return Err(too_large("as sent", limits.compressed));
        }
        if let Some(b) = base.as_mut().filter(|_| seen < split) {
            let n = (split - seen).min(chunk.len());
            b.write(&chunk.split_to(n), cap)
                .map_err(|e| unreadable("baseline", e))?;
            seen += n;
        }
        seen += chunk.len();
        current
            .write(&chunk, cap)
            .map_err(|e| unreadable("current", e))?;
    }
    if split > seen {
        return Err(ProfileError::bad_request(format!(
            "base_bytes is {split} but the body has {seen} bytes"
        )));
    }
    let base = match base {
        Some(b) => Some(b.finish().map_err(|e| unreadable("baseline", e))?),
        None => None,
    };
    let current = current.finish().map_err(|e| unreadable("current", e))?;
    Ok((base, current))
}
