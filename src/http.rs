//! Routing of plain HTTP requests on the shared listener, and small response helpers.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use crate::error::Error;
use crate::server::State;
use crate::{api, handshake};

/// Every response body is a complete buffer.
pub type Body = Full<Bytes>;

/// The demo page, served at `/` when `demo_page` is on.
const DEMO_PAGE: &str = include_str!("../static/index.html");
/// The browser client, served at `/tether.js` when `demo_page` is on.
const CLIENT_JS: &str = include_str!("../clients/js/tether.js");

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
    if let Error::MethodNotAllowed(allow) = e {
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(allow));
    }
    r
}

/// Dispatches one request.
pub async fn route(st: Arc<State>, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let path = req.uri().path();
    if path == st.config.ws_path {
        return handshake::upgrade(&st, req, peer);
    }
    if path.starts_with("/api/") {
        return api::handle(&st, req, peer).await;
    }
    let get = req.method() == Method::GET || req.method() == Method::HEAD;
    match path {
        "/health" if get => health(&st),
        "/metrics" if get => with_body(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            st.metrics.render(st.registry.len(), st.is_draining()),
        ),
        "/" if get && st.config.demo_page => {
            with_body(StatusCode::OK, "text/html; charset=utf-8", DEMO_PAGE)
        }
        "/tether.js" if get && st.config.demo_page => {
            with_body(StatusCode::OK, "text/javascript; charset=utf-8", CLIENT_JS)
        }
        "/health" | "/metrics" => error_response(&Error::MethodNotAllowed("GET")),
        _ => error_response(&Error::NotFound),
    }
}

fn health(st: &State) -> Response<Body> {
    let draining = st.is_draining();
    let body = format!(
        "{{\"status\":\"{}\",\"connections\":{},\"max_connections\":{},\"accepted_total\":{},\"evicted_total\":{},\"uptime_s\":{}}}",
        if draining { "draining" } else { "ok" },
        st.registry.len(),
        st.max_connections,
        st.metrics.accepted_total(),
        st.metrics.evicted_total(),
        st.started.elapsed().as_secs()
    );
    let status = if draining {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    json(status, body)
}
