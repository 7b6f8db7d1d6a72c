//! Small response helpers shared by every HTTP answer (the upgrade's refusals, the API, the
//! pages): bodies, JSON, and the error body.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};

use crate::http::error::{Error, allow_list};

/// Every response body is a complete buffer.
pub type Body = Full<Bytes>;

/// A response with no body.
pub fn empty(status: StatusCode) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = status;
    r
}

/// A response with a body of the given content type.
pub fn with_body(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// A JSON response.
pub fn json(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    with_body(status, "application/json", body)
}

/// The `{"error":{...}}` response for `e`.
pub fn error_response(e: &Error) -> Response<Body> {
    let mut r = json(e.status(), e.body());
    if matches!(e, Error::UnsupportedVersion) {
        r.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
    }
    if let Error::MethodNotAllowed(allowed) = e {
        let allow = HeaderValue::from_str(&allow_list(allowed))
            .expect("method names are valid header text");
        r.headers_mut().insert(header::ALLOW, allow);
    }
    r
}
