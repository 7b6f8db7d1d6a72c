//! tether: a WebSocket connection server for long-lived connections. It keeps every session under
//! heartbeat supervision, evicts the silent ones, and lets backends push to one client id, a
//! channel or everyone over HTTP — or, when embedded, through a [`Handle`].
//!
//! # Layout
//! - [`config`]: defaults < TOML file < `TETHER_*` env < flags, validated with field-named errors.
//! - `server`: accept loop, per-connection hyper serving, shutdown orchestration.
//! - `http` / `api`: routing, `/health`, `/metrics`, the push and admin API.
//! - `handshake`: upgrade checks with one named refusal each, client identity, admission.
//! - `socket`: tungstenite driven directly on a TCP socket (no waker proxies).
//! - `session`: one connection's task: reader stamps liveness, writer drains the bounded queue.
//! - `outbox`: the shared half of a session (liveness stamp, queue, close request).
//! - `registry`: sessions by id, client id and channel; fan-out.
//! - `reaper`: the one task that pings and evicts.
//! - `protocol`: envelope, message types, close and error codes.
//! - [`shutdown`]: stop requests (signals) feeding drain or restart.
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
//! handle.push("alice", "hello", Some(r#"{"text":"hi"}"#));
//! trigger.signal();
//! # Ok(()) }
//! ```

mod api;
pub mod config;
mod error;
mod handler;
mod handshake;
mod http;
mod metrics;
mod outbox;
pub mod protocol;
mod reaper;
mod registry;
mod server;
mod session;
pub mod shutdown;
mod socket;
mod tls;

pub use config::Config;
pub use handler::{Handle, Handled, Handler, Session};
pub use serde_json::value::RawValue;
pub use server::{Server, Stopped, bind};
