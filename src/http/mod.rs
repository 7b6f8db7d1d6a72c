//! Routing of plain HTTP requests on the shared listener (this file; `server` sends the
//! WebSocket path to `handshake` before it gets here): `endpoint`, the one `Endpoint` enum;
//! `api`, `delivery`, `batch`, `history`, `channels` and `control` (server-side control, each
//! call also a plain function for the batch), `/api/*` (`body` reads and parses their bodies);
//! `pages`, the built-in pages; `error`, the one error enum
//! mapped to status and code; `reply` and `query`, response and query helpers. The handshake
//! uses `error`, `reply` and `query` too. It may use `delivery`, the registry, the
//! engine, metrics, shared state and the bottom; never `handshake` or `server`.

mod api;
mod batch;
mod body;
mod channels;
pub(crate) mod control;
mod delivery;
mod endpoint;
pub(crate) mod error;
mod history;
mod pages;
pub(crate) mod query;
pub(crate) mod reply;

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response};

use crate::http::error::Error;
use crate::http::reply::{Body, error_response};
use crate::state::Shared;

pub use endpoint::{Endpoint, builtin_route, routes};

/// Dispatches one request.
pub async fn route(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    let (head, body) = req.into_parts();
    let Some(endpoint) = Endpoint::parse(head.uri.path()) else {
        return error_response(&Error::NotFound);
    };
    if endpoint.is_api() {
        // On the edge thread: a broadcast here only enqueues and wakes (in paced slices); the
        // sessions' socket writes run on the workers. Measured: handing the API to the main
        // runtime instead cost a third of the broadcast throughput (128,000 against 186,000
        // deliveries/s to 19,000 sessions on one core).
        return api::answer(&shared, &head, body, endpoint, peer).await;
    }
    if !endpoint.served(shared.config.demo_page, shared.config.dashboard) {
        return error_response(&Error::NotFound);
    }
    if !endpoint.permits(&head.method) {
        // Every page, like the API, says which methods it takes (Schemathesis found the demo
        // page and the dashboard answering 404 to a TRACE, as if they did not exist).
        return error_response(&Error::MethodNotAllowed(endpoint.allowed()));
    }
    match endpoint {
        Endpoint::Health => pages::health(&shared),
        Endpoint::Metrics => pages::metrics(&shared),
        Endpoint::Demo => pages::demo(),
        Endpoint::ClientJs => pages::client_js(),
        Endpoint::Dashboard => pages::dashboard(),
        Endpoint::DashboardData => pages::dashboard_data(&shared).await,
        _ => error_response(&Error::NotFound),
    }
}
