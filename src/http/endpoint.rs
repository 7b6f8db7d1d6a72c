//! Every route tether serves besides the WebSocket path, written once: a request's path is
//! parsed into an [`Endpoint`] once, and routing, the API's metrics label, the `405` answer's
//! `Allow` header and the check that `ws_path` shadows nothing all read it.

use hyper::Method;

/// A built-in route, known from the path alone (the method is checked against it afterwards).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint<'a> {
    /// `POST /api/v1/push`.
    Push,
    /// `POST /api/v1/broadcast`.
    Broadcast,
    /// `POST /api/v1/publish`.
    Publish,
    /// `POST /api/v1/batch`: many push, publish and broadcast commands in one request.
    Batch,
    /// `GET /api/v1/sessions`: the listing.
    Sessions,
    /// `DELETE /api/v1/sessions/{session_id}`.
    Session(&'a str),
    /// `GET /api/v1/history/{client_id}`, the client id still percent-encoded.
    History(&'a str),
    /// `GET /api/v1/channels/{channel}/history`, the channel name still percent-encoded.
    ChannelHistory(&'a str),
    /// `GET /api/v1/presence/{client_id}`, the client id still percent-encoded.
    Presence(&'a str),
    /// `POST /api/v1/subscribe`: a client id's sessions join a channel (docs/protocol.md §14).
    Subscribe,
    /// `POST /api/v1/unsubscribe`.
    Unsubscribe,
    /// `DELETE /api/v1/clients/{client_id}`, still percent-encoded: close all its sessions.
    Client(&'a str),
    /// `GET /api/v1/blocks`.
    Blocks,
    /// `DELETE /api/v1/blocks/{client_id}`, still percent-encoded.
    Block(&'a str),
    /// `GET /api/v1/channels`: the listing.
    Channels,
    /// `GET /api/v1/channels/{channel}/presence`, the channel still percent-encoded.
    ChannelPresence(&'a str),
    /// `GET /api/openapi.json`: `docs/openapi.json`, the API's own description (behind its key).
    OpenApi,
    /// Any other path under `/api/`: the API answers it (401 before 404), so it is its own.
    OtherApi,
    /// `GET /health`.
    Health,
    /// `GET /metrics`.
    Metrics,
    /// `GET /`, the demo page (only with `demo_page`).
    Demo,
    /// `GET /tether.js`, the browser client (only with `demo_page`).
    ClientJs,
    /// `GET /dashboard` (only with `dashboard`).
    Dashboard,
    /// `GET /dashboard/data` (only with `dashboard`).
    DashboardData,
}

const POST: &[Method] = &[Method::POST];
const GET: &[Method] = &[Method::GET];
const DELETE: &[Method] = &[Method::DELETE];

impl<'a> Endpoint<'a> {
    /// The route `path` names, whatever the method; `None` for a path tether does not serve.
    pub fn parse(path: &'a str) -> Option<Endpoint<'a>> {
        if let Some(api) = path.strip_prefix("/api/") {
            return Some(Endpoint::parse_api(api));
        }
        Some(match path {
            "/health" => Endpoint::Health,
            "/metrics" => Endpoint::Metrics,
            "/" => Endpoint::Demo,
            "/tether.js" => Endpoint::ClientJs,
            "/dashboard" => Endpoint::Dashboard,
            "/dashboard/data" => Endpoint::DashboardData,
            _ => return None,
        })
    }

    /// A path under `/api/`, without that prefix.
    fn parse_api(path: &'a str) -> Endpoint<'a> {
        if path == "openapi.json" {
            return Endpoint::OpenApi;
        }
        let Some(path) = path.strip_prefix("v1/") else {
            return Endpoint::OtherApi;
        };
        match path {
            "push" => Endpoint::Push,
            "broadcast" => Endpoint::Broadcast,
            "publish" => Endpoint::Publish,
            "batch" => Endpoint::Batch,
            "sessions" => Endpoint::Sessions,
            "subscribe" => Endpoint::Subscribe,
            "unsubscribe" => Endpoint::Unsubscribe,
            "blocks" => Endpoint::Blocks,
            "channels" => Endpoint::Channels,
            _ => {
                if let Some(id) = path.strip_prefix("sessions/") {
                    Endpoint::Session(id)
                } else if let Some(id) = path.strip_prefix("history/") {
                    Endpoint::History(id)
                } else if let Some(id) = path.strip_prefix("presence/") {
                    Endpoint::Presence(id)
                } else if let Some(id) = path.strip_prefix("clients/") {
                    Endpoint::Client(id)
                } else if let Some(id) = path.strip_prefix("blocks/") {
                    Endpoint::Block(id)
                } else if let Some(ch) = path
                    .strip_prefix("channels/")
                    .and_then(|p| p.strip_suffix("/presence"))
                {
                    Endpoint::ChannelPresence(ch)
                } else if let Some(name) = path
                    .strip_prefix("channels/")
                    .and_then(|p| p.strip_suffix("/history"))
                {
                    Endpoint::ChannelHistory(name)
                } else {
                    Endpoint::OtherApi
                }
            }
        }
    }

    /// Whether the API answers it (behind its key, counted in `tether_api_requests_total`).
    pub fn is_api(&self) -> bool {
        matches!(
            self,
            Endpoint::Push
                | Endpoint::Broadcast
                | Endpoint::Publish
                | Endpoint::Batch
                | Endpoint::Sessions
                | Endpoint::Session(_)
                | Endpoint::History(_)
                | Endpoint::ChannelHistory(_)
                | Endpoint::Presence(_)
                | Endpoint::Subscribe
                | Endpoint::Unsubscribe
                | Endpoint::Client(_)
                | Endpoint::Blocks
                | Endpoint::Block(_)
                | Endpoint::Channels
                | Endpoint::ChannelPresence(_)
                | Endpoint::OpenApi
                | Endpoint::OtherApi
        )
    }

    /// The methods it takes, as a `405` lists them in `Allow`; empty where there is nothing.
    pub fn allowed(&self) -> &'static [Method] {
        match self {
            Endpoint::Push
            | Endpoint::Broadcast
            | Endpoint::Publish
            | Endpoint::Batch
            | Endpoint::Subscribe
            | Endpoint::Unsubscribe => POST,
            Endpoint::Session(_) | Endpoint::Client(_) | Endpoint::Block(_) => DELETE,
            Endpoint::OtherApi => &[],
            Endpoint::Sessions
            | Endpoint::History(_)
            | Endpoint::ChannelHistory(_)
            | Endpoint::Presence(_)
            | Endpoint::Blocks
            | Endpoint::Channels
            | Endpoint::ChannelPresence(_)
            | Endpoint::OpenApi
            | Endpoint::Health
            | Endpoint::Metrics
            | Endpoint::Demo
            | Endpoint::ClientJs
            | Endpoint::Dashboard
            | Endpoint::DashboardData => GET,
        }
    }

    /// Whether it takes `method`. The pages also answer HEAD (for probes; hyper sends the head
    /// without the body); the API takes only what it lists.
    pub fn permits(&self, method: &Method) -> bool {
        self.allowed().contains(method) || (*method == Method::HEAD && !self.is_api())
    }

    /// Whether this configuration serves it: the demo page and the dashboard can be turned off.
    pub fn served(&self, demo_page: bool, dashboard: bool) -> bool {
        match self {
            Endpoint::Demo | Endpoint::ClientJs => demo_page,
            Endpoint::Dashboard | Endpoint::DashboardData => dashboard,
            _ => true,
        }
    }

    /// The `endpoint` label of `tether_api_requests_total` (dashboards and alerts read it).
    pub fn label(&self) -> &'static str {
        match self {
            Endpoint::Push => "push",
            Endpoint::Broadcast => "broadcast",
            Endpoint::Publish => "publish",
            Endpoint::Batch => "batch",
            Endpoint::Sessions | Endpoint::Session(_) => "sessions",
            Endpoint::History(_) | Endpoint::ChannelHistory(_) => "history",
            Endpoint::Presence(_) => "presence",
            Endpoint::Subscribe => "subscribe",
            Endpoint::Unsubscribe => "unsubscribe",
            Endpoint::Client(_) => "clients",
            Endpoint::Blocks | Endpoint::Block(_) => "blocks",
            Endpoint::Channels => "channels",
            Endpoint::ChannelPresence(_) => "channel_presence",
            Endpoint::OpenApi => "openapi",
            Endpoint::OtherApi => "other",
            Endpoint::Health => "health",
            Endpoint::Metrics => "metrics",
            Endpoint::Demo => "demo",
            Endpoint::ClientJs => "client_js",
            Endpoint::Dashboard => "dashboard",
            Endpoint::DashboardData => "dashboard_data",
        }
    }
}

/// One of every route, a path-parameter variant with its parameter's template name: what
/// [`routes`] lists. A new variant with a route belongs here too (`tests/openapi.rs` then
/// fails until `docs/openapi.json` describes it).
const ALL: &[Endpoint<'static>] = &[
    Endpoint::Push,
    Endpoint::Broadcast,
    Endpoint::Publish,
    Endpoint::Sessions,
    Endpoint::Session("{session_id}"),
    Endpoint::History("{client_id}"),
    Endpoint::Presence("{client_id}"),
    Endpoint::Batch,
    Endpoint::ChannelHistory("{channel}"),
    Endpoint::Subscribe,
    Endpoint::Unsubscribe,
    Endpoint::Client("{client_id}"),
    Endpoint::Blocks,
    Endpoint::Block("{client_id}"),
    Endpoint::Channels,
    Endpoint::ChannelPresence("{channel}"),
    Endpoint::OpenApi,
    Endpoint::Health,
    Endpoint::Metrics,
    Endpoint::Demo,
    Endpoint::ClientJs,
    Endpoint::Dashboard,
    Endpoint::DashboardData,
];

impl Endpoint<'_> {
    /// Its path as OpenAPI writes it (`{name}` for a parameter); `None` for [`Endpoint::OtherApi`],
    /// which is every path without a route.
    pub fn template(&self) -> Option<&'static str> {
        Some(match self {
            Endpoint::Push => "/api/v1/push",
            Endpoint::Broadcast => "/api/v1/broadcast",
            Endpoint::Publish => "/api/v1/publish",
            Endpoint::Sessions => "/api/v1/sessions",
            Endpoint::Session(_) => "/api/v1/sessions/{session_id}",
            Endpoint::History(_) => "/api/v1/history/{client_id}",
            Endpoint::Presence(_) => "/api/v1/presence/{client_id}",
            Endpoint::Batch => "/api/v1/batch",
            Endpoint::ChannelHistory(_) => "/api/v1/channels/{channel}/history",
            Endpoint::Subscribe => "/api/v1/subscribe",
            Endpoint::Unsubscribe => "/api/v1/unsubscribe",
            Endpoint::Client(_) => "/api/v1/clients/{client_id}",
            Endpoint::Blocks => "/api/v1/blocks",
            Endpoint::Block(_) => "/api/v1/blocks/{client_id}",
            Endpoint::Channels => "/api/v1/channels",
            Endpoint::ChannelPresence(_) => "/api/v1/channels/{channel}/presence",
            Endpoint::OpenApi => "/api/openapi.json",
            Endpoint::OtherApi => return None,
            Endpoint::Health => "/health",
            Endpoint::Metrics => "/metrics",
            Endpoint::Demo => "/",
            Endpoint::ClientJs => "/tether.js",
            Endpoint::Dashboard => "/dashboard",
            Endpoint::DashboardData => "/dashboard/data",
        })
    }
}

/// Every (method, path template) the router answers, HEAD on the pages left out (it is GET
/// without the body): what `tests/openapi.rs` compares with `docs/openapi.json`.
pub fn routes() -> Vec<(&'static str, &'static str)> {
    let mut out = Vec::new();
    for e in ALL {
        if let Some(path) = e.template() {
            out.extend(e.allowed().iter().map(|m| (m.as_str(), path)));
        }
    }
    out
}

/// Whether a configuration with these pages serves `path` itself, so a `ws_path` equal to it
/// would hide that route (or be hidden by it).
pub fn builtin_route(path: &str, demo_page: bool, dashboard: bool) -> bool {
    Endpoint::parse(path).is_some_and(|e| e.served(demo_page, dashboard))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_api_path_parses_to_its_endpoint_and_label() {
        let cases = [
            ("/api/v1/push", Endpoint::Push, "push"),
            ("/api/v1/broadcast", Endpoint::Broadcast, "broadcast"),
            ("/api/v1/publish", Endpoint::Publish, "publish"),
            ("/api/v1/sessions", Endpoint::Sessions, "sessions"),
            ("/api/v1/sessions/ab", Endpoint::Session("ab"), "sessions"),
            (
                "/api/v1/history/a%20b",
                Endpoint::History("a%20b"),
                "history",
            ),
            ("/api/v1/presence/", Endpoint::Presence(""), "presence"),
            ("/api/v1/subscribe", Endpoint::Subscribe, "subscribe"),
            ("/api/v1/unsubscribe", Endpoint::Unsubscribe, "unsubscribe"),
            ("/api/v1/clients/a", Endpoint::Client("a"), "clients"),
            ("/api/v1/blocks", Endpoint::Blocks, "blocks"),
            ("/api/v1/blocks/a", Endpoint::Block("a"), "blocks"),
            ("/api/v1/channels", Endpoint::Channels, "channels"),
            (
                "/api/v1/channels/a%2Fb/presence",
                Endpoint::ChannelPresence("a%2Fb"),
                "channel_presence",
            ),
            ("/api/v1/batch", Endpoint::Batch, "batch"),
            (
                "/api/v1/channels/a%2Fb/history",
                Endpoint::ChannelHistory("a%2Fb"),
                "history",
            ),
            ("/api/v1/channels/x", Endpoint::OtherApi, "other"),
            ("/api/v1/nothing", Endpoint::OtherApi, "other"),
            ("/api/v2/push", Endpoint::OtherApi, "other"),
        ];
        for (path, endpoint, label) in cases {
            assert_eq!(Endpoint::parse(path), Some(endpoint), "{path}");
            assert_eq!(endpoint.label(), label, "{path}");
        }
        assert_eq!(Endpoint::parse("/api"), None);
        assert_eq!(Endpoint::parse("/nothing"), None);
    }

    #[test]
    fn every_route_template_parses_back_to_its_endpoint() {
        for e in ALL {
            let path = e.template().expect("ALL lists only routes");
            assert_eq!(Endpoint::parse(path), Some(*e), "{path}");
        }
        assert_eq!(routes().len(), ALL.len());
        assert_eq!(
            Endpoint::parse("/api/openapi.json"),
            Some(Endpoint::OpenApi)
        );
    }

    #[test]
    fn pages_answer_head_and_the_api_only_what_it_lists() {
        assert!(Endpoint::Health.permits(&Method::HEAD));
        assert!(!Endpoint::Health.permits(&Method::POST));
        assert!(!Endpoint::Sessions.permits(&Method::HEAD));
        assert!(Endpoint::Session("x").permits(&Method::DELETE));
        assert!(!Endpoint::OtherApi.permits(&Method::GET));
        assert_eq!(Endpoint::Push.allowed(), &[Method::POST]);
    }

    #[test]
    fn builtin_routes_follow_the_pages_served() {
        assert!(builtin_route("/", true, true));
        assert!(!builtin_route("/", false, true));
        assert!(builtin_route("/health", false, false));
        assert!(builtin_route("/api/anything", false, false));
        assert!(builtin_route("/dashboard/data", false, true));
        assert!(!builtin_route("/dashboard", true, false));
        assert!(!builtin_route("/ws", true, true));
    }

    #[tokio::test]
    async fn ws_path_may_be_the_root_when_the_demo_page_is_off() {
        let refused = |pairs: &[(&str, &str)]| {
            crate::Server::new(crate::Config::with(pairs).unwrap())
                .err()
                .map(|e| e.to_string())
        };
        let e = refused(&[("ws_path", "/")]).unwrap();
        assert!(e.contains("collides"), "{e}");
        assert!(refused(&[("ws_path", "/"), ("demo_page", "false")]).is_none());
        assert!(refused(&[("ws_path", "/health"), ("demo_page", "false")]).is_some());
    }
}
