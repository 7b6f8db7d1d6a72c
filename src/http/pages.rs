//! The built-in pages: `/health`, `/metrics`, the demo page and the browser client.

use hyper::{Response, StatusCode};

use crate::delivery::router::NodeSamples;
use crate::http::reply::{Body, json, with_body};
use crate::state::Shared;

/// The demo page, served at `/` when `demo_page` is on.
const DEMO_PAGE: &str = include_str!("../../static/index.html");
/// The browser client, served at `/tether.js` when `demo_page` is on.
const CLIENT_JS: &str = include_str!("../../clients/js/tether.js");

/// `GET /health`: 200 with counts, 503 `draining` once shutdown began.
pub fn health(shared: &Shared) -> Response<Body> {
    let draining = shared.is_draining();
    let status = match () {
        _ if draining => "draining",
        _ if shared.router.degraded() => "degraded",
        _ => "ok",
    };
    let cluster = match shared.router.cluster_nodes() {
        Some(nodes) => format!(
            ",\"node\":{},\"cluster_nodes\":{nodes}",
            crate::protocol::json_str(&shared.node),
        ),
        None => String::new(),
    };
    let body = format!(
        "{{\"status\":\"{status}\",\"connections\":{},\"max_connections\":{},\"sockets_free\":{},\"accepted_total\":{},\"evicted_total\":{},\"uptime_s\":{}{cluster}}}",
        shared.registry.len(),
        shared.admissions.max_connections(),
        shared.sockets.available(),
        shared.metrics.accepted_total(),
        shared.metrics.evicted_total(),
        shared.started.elapsed().as_secs()
    );
    let status = if draining {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    json(status, body)
}

/// `GET /metrics`: the Prometheus text exposition.
pub fn metrics(shared: &Shared) -> Response<Body> {
    let mut text = shared
        .metrics
        .render(shared.registry.len(), shared.is_draining());
    crate::metrics::render_engine(&mut text, &shared.engine.stats());
    shared.router.render_metrics(&mut text);
    crate::metrics::gauge(
        &mut text,
        "tether_blocks",
        "Client ids blocked from connecting (DELETE /api/v1/clients/{id}?block_for=), as this node knows them.",
        shared.router.blocks_in_force() as u64,
    );
    if let Some(w) = &shared.webhooks {
        crate::metrics::render_webhooks(&mut text, &w.stats);
    }
    with_body(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        text,
    )
}

/// The operators' dashboard, served at `/dashboard` when `dashboard` is on.
const DASHBOARD: &str = include_str!("../../static/dashboard.html");

/// `GET /dashboard`: the live page.
pub fn dashboard() -> Response<Body> {
    with_body(StatusCode::OK, "text/html; charset=utf-8", DASHBOARD)
}

/// `GET /dashboard/data`: the samples the page charts; in a cluster also every live node's
/// recent samples under `nodes` (this node's included), so the page can chart them per node.
pub async fn dashboard_data(shared: &Shared) -> Response<Body> {
    let more = match shared.router.node_samples().await {
        NodeSamples::Nodes(nodes) => {
            let parts: Vec<String> = nodes
                .iter()
                .map(|(node, samples)| format!("{}:{samples}", crate::protocol::json_str(node)))
                .collect();
            format!(",\"nodes\":{{{}}}", parts.join(","))
        }
        // Degraded: this node's own samples are still worth showing.
        NodeSamples::Unreachable => ",\"nodes\":null".to_string(),
        NodeSamples::Alone => String::new(),
    };
    json(
        StatusCode::OK,
        shared.samples.json_with(&shared.node, &more),
    )
}

/// `GET /`: the demo page.
pub fn demo() -> Response<Body> {
    with_body(StatusCode::OK, "text/html; charset=utf-8", DEMO_PAGE)
}

/// `GET /tether.js`: the browser client.
pub fn client_js() -> Response<Body> {
    with_body(StatusCode::OK, "text/javascript; charset=utf-8", CLIENT_JS)
}
