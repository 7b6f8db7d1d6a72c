//! Routing of plain HTTP requests on the shared listener: the WebSocket path, `/api/*`, and the
//! built-in pages.

mod api;
mod delivery;
mod pages;

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Method, Request, Response};

use crate::error::Error;
use crate::handshake;
use crate::reply::{Body, error_response};
use crate::state::Shared;

/// Dispatches one request.
pub async fn route(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    let path = req.uri().path();
    if path == shared.config.ws_path {
        return handshake::upgrade(&shared, req, peer);
    }
    if path.starts_with("/api/") {
        // The API (a broadcast's fan-out above all) works on the main runtime's threads, not
        // on the edge thread that answers handshakes (see `edge`).
        let main = shared.main();
        let work = main.spawn(async move { api::answer(&shared, req, peer).await });
        return match work.await {
            Ok(res) => res,
            Err(e) => {
                log::error!("api request from {peer} failed: {e}");
                error_response(&Error::Internal)
            }
        };
    }
    let get = req.method() == Method::GET || req.method() == Method::HEAD;
    match path {
        "/health" if get => pages::health(&shared),
        "/metrics" if get => pages::metrics(&shared),
        "/" if get && shared.config.demo_page => pages::demo(),
        "/tether.js" if get && shared.config.demo_page => pages::client_js(),
        "/dashboard" if get && shared.config.dashboard => pages::dashboard(),
        "/dashboard/data" if get && shared.config.dashboard => pages::dashboard_data(&shared).await,
        "/health" | "/metrics" => error_response(&Error::MethodNotAllowed("GET")),
        _ => error_response(&Error::NotFound),
    }
}
