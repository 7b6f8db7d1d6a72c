//! tether: a WebSocket connection server for long-lived connections. It keeps every session under
//! heartbeat supervision, evicts the silent ones, and lets backends push to one client id, a
//! channel or everyone over HTTP — or, when embedded, through a [`Handle`].
//!
//! # Layout
//! Layers go one way, top to bottom (a module uses only those below it); the README's map says
//! the same, and a test checks that both name every module:
//! - `server` (accept loop, the edge thread, drain or paced restart, shutdown orchestration;
//!   it sends the WebSocket path to the handshake and everything else to `http`).
//! - `handshake` (upgrade checks, one named refusal each; identity: client id and address).
//! - `http` (routing, API, pages; the error enum, response and query helpers the handshake uses
//!   too).
//! - `session` (one connection's task), `reaper` (owns time), `state` (what every layer shares).
//! - `delivery` (the seam between one node and a cluster: the router, chosen once; [`Handle`]
//!   and [`Handler`]: pushing from code).
//! - `engine` (history and idempotency behind one trait: memory on one node, Redis in a
//!   cluster).
//! - `cluster` (Redis plumbing: routing, presence, scripts), `webhooks`.
//! - `registry` (sessions by id, client id and channel; fan-out; listings), `outbox` (a
//!   session's shared half, its rate bucket), `metrics` (counters, dashboard samples).
//! - [`auth`] (tokens), [`protocol`], [`config`].
//! - `stream` (stream keys, epochs and positions, live frames, the resume hand-over), `net`
//!   (the WebSocket on TCP, TLS, deflate, the descriptor budget, admission slots), `id`,
//!   `clock`, [`shutdown`]: the bottom.
//!
//! # Embedding
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let config = tether::Config::default();
//! let server = tether::Server::new(config)?;
//! let handle = server.handle();
//! let (trigger, signal) = tether::shutdown::channel();
//! let listener = tether::bind("127.0.0.1:0".parse().unwrap())?;
//! tokio::spawn(server.run(listener, signal));
//! let sent = handle.push("alice", "hello", Some(r#"{"text":"hi"}"#)).await;
//! assert!(sent.is_ok(), "one node with nobody connected: nothing to deliver, nothing lost");
//! trigger.signal();
//! # Ok(()) }
//! ```

pub mod auth;
mod clock;
mod cluster;
pub mod config;
mod delivery;
pub(crate) mod engine;
mod handshake;
mod http;
mod id;
mod metrics;
mod net;
mod outbox;
pub mod protocol;
mod reaper;
mod registry;
mod server;
mod session;
pub mod shutdown;
mod state;
mod stream;
mod webhooks;

pub use config::Config;
pub use delivery::channels::{ChannelPage, ChannelPresence};
pub use delivery::control::Reached;
pub use delivery::handle::{ControlError, Handle, Sent};
pub use delivery::handler::{Handled, Handler, Session};
pub use delivery::history::{History, HistoryOf};
pub use engine::EngineError;
pub use http::routes;
pub use net::budget::raise_fd_limit;
pub use serde_json::value::RawValue;
pub use server::Stopped;
pub use server::{Server, bind};

/// Internal parsers of untrusted input, exposed only for the `fuzz/` crate's targets.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzz_api {
    pub use crate::cluster::sign::Signer as WireSigner;
    pub use crate::cluster::wire::{
        Head as WireHead, Kind as WireKind, decode as wire_decode, encode as wire_encode,
        prefix as wire_prefix,
    };
    pub use crate::handshake::identity::{client_addr, client_id};
    pub use crate::handshake::{has_token, valid_key};
    pub use crate::http::error::Error;
    pub use crate::http::query::query_param;
    pub use crate::net::deflate::negotiate as deflate_negotiate;
    pub use crate::registry::listing::merge_pages as listing_merge_pages;
}
