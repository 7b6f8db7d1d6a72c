//! Request bodies of the API: read whole within a deadline and a size bound, then parsed as
//! JSON with the error a caller can act on (`invalid_json` for the syntax, `invalid_body` for
//! the shape).

use std::time::Duration;

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Deserialize;

use crate::http::error::Error;

/// Largest body of a single API call.
pub const API_BODY_MAX: usize = 1024 * 1024;

/// Largest body of `POST /api/v1/batch`: room for its 1,000 commands at 4 KiB each, a
/// notification with a generous payload; one oversized message still fits a single call.
pub const BATCH_BODY_MAX: usize = 4 * 1024 * 1024;

/// Reads the whole body within `deadline` from now: one bound on the total, so a body trickled
/// a byte at a time cannot hold its connection (and descriptor) for longer than that.
pub async fn read_body(
    body: Incoming,
    deadline: Duration,
    max: usize,
) -> Result<bytes::Bytes, Error> {
    let read = Limited::new(body, max).collect();
    match tokio::time::timeout(deadline, read)
        .await
        .map_err(|_| Error::BodyTimeout(deadline))?
    {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(Error::BodyTooLarge(max)),
        Err(e) => Err(Error::InvalidBody(format!("could not read the body: {e}"))),
    }
}

/// The body as `T`: 400 `invalid_json` when it is not JSON at all, `invalid_body` when it is
/// JSON of the wrong shape.
pub fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, Error> {
    let text = std::str::from_utf8(body)
        .map_err(|_| Error::InvalidJson("the body is not UTF-8".into()))?;
    if text.trim().is_empty() {
        return Err(Error::InvalidJson("the body is empty".into()));
    }
    serde_json::from_str(text).map_err(|e| {
        if e.is_data() {
            Error::InvalidBody(e.to_string())
        } else {
            Error::InvalidJson(e.to_string())
        }
    })
}
