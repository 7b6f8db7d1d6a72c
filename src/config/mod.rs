//! Server configuration: built-in defaults < TOML file < `TETHER_*` environment < command-line flags.
//!
//! Every key is declared once, in the [`keys!`] table below: its type, default, value hint and
//! help. The struct, its serde form (so the TOML file, the environment and the flags share one
//! parser and errors that name the key), the key list and the `--help` text all come from it.
//! `load.rs` merges the sources, `values.rs` holds the serde adapters, `validate.rs` the
//! relations between keys. It may use only `net::budget` (the descriptor budget that caps
//! `max_connections`).

mod load;
mod validate;
mod values;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_with::serde_as;

use crate::net::budget;

pub use load::{ConfigError, Sources};
pub use values::{CommaList, Dur, OptDur, Proxy, Scalar, Secret, SecretText, Text, Unset};

/// Longest `node_id`: it rides in every cluster message header.
pub const MAX_NODE_ID_LEN: usize = 64;
/// Default `compression_min_size`: smaller messages are sent uncompressed, where deflate's
/// framing would eat most of the gain.
pub const DEFAULT_COMPRESSION_MIN_SIZE: usize = 512;
/// Longest `redis_prefix`: it rides in every key and topic.
pub const MAX_REDIS_PREFIX_LEN: usize = 64;
/// Shortest `cluster_secret`: an HMAC key guessable by brute force protects nothing.
pub const MIN_CLUSTER_SECRET_LEN: usize = 16;

/// A `redis_sentinels` entry as a URL: a bare `host:port` gets `redis://`.
pub fn sentinel_url(entry: &str) -> String {
    if entry.contains("://") {
        entry.to_string()
    } else {
        format!("redis://{entry}")
    }
}

/// What to do with live sessions on SIGTERM/SIGINT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShutdownMode {
    /// Tell every session `shutdown`, wait for them to leave, close the rest with 1001.
    Drain,
    /// Close every session at once with 1012 so clients reconnect to another node.
    Restart,
}

impl ShutdownMode {
    /// The name used in configuration and in the `shutdown` message.
    pub fn as_str(self) -> &'static str {
        match self {
            ShutdownMode::Drain => "drain",
            ShutdownMode::Restart => "restart",
        }
    }
}

/// Whether upgrades need a signed token (docs/protocol.md §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Anyone may connect; the client id comes from the query or a header.
    Off,
    /// Every upgrade needs a JWT; its `sub` is the client id.
    On,
}

/// How one key is documented in `--help` and the README.
#[derive(Debug, Clone, Copy)]
pub struct KeyDoc {
    /// The key, as written in the TOML file.
    pub name: &'static str,
    /// What kind of value it takes (`DURATION`, `N`, `BOOL`, ...).
    pub hint: &'static str,
    /// One sentence on what it does.
    pub help: &'static str,
}

/// Declares every key once: the `Config` struct, its `Default`, [`KEYS`] and [`KEY_DOCS`].
macro_rules! keys {
    ($( $(#[$attr:meta])* $name:ident : $ty:ty = $default:expr, $hint:literal, $help:literal; )*) => {
        /// The whole server configuration; docs/configuration.md describes each key.
        #[serde_as]
        #[derive(Debug, Clone, Serialize, Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct Config {
            $( #[doc = $help] $(#[$attr])* pub $name: $ty, )*
        }

        impl Default for Config {
            fn default() -> Self {
                Config { $( $name: $default, )* }
            }
        }

        /// Every configuration key, in documentation order.
        pub const KEYS: &[&str] = &[$( stringify!($name), )*];

        /// Every key with its value hint and help, in documentation order.
        pub const KEY_DOCS: &[KeyDoc] = &[$( KeyDoc { name: stringify!($name), hint: $hint, help: $help }, )*];
    };
}

keys! {
    // Loopback, so a bare `tether` is never exposed by accident.
    listen: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080), "ADDR",
        "Address to bind; port 0 picks a free port (the chosen address is logged).";
    ws_path: String = "/ws".to_string(), "PATH",
        "WebSocket upgrade path.";
    #[serde_as(as = "Dur")]
    heartbeat_interval: Duration = Duration::from_secs(30), "DURATION",
        "Server Ping period, advertised in `welcome`; must be shorter than the timeout.";
    #[serde_as(as = "Dur")]
    heartbeat_timeout: Duration = Duration::from_secs(60), "DURATION",
        "Silence after which a session is evicted with close 4001.";
    #[serde_as(as = "Dur")]
    reap_interval: Duration = Duration::from_secs(1), "DURATION",
        "How often the reaper looks for silent sessions.";
    #[serde_as(as = "Scalar")]
    max_connections: usize = 0, "N",
        "Most concurrent sessions; 0 = the open-file limit minus a reserve.";
    #[serde_as(as = "Scalar")]
    max_connections_per_ip: usize = 0, "N",
        "Most concurrent sessions per client address (429 past it); 0 = no limit.";
    #[serde_as(as = "Scalar")]
    max_sessions_per_client: usize = 100, "N",
        "Most sessions one client id may hold (429 past it); 0 = no limit.";
    #[serde_as(as = "Scalar")]
    connect_rate_per_ip: u32 = 0, "N",
        "Upgrades per second from one address (burst twice that; 429 past it); 0 = no limit.";
    #[serde_as(as = "Scalar")]
    max_header_size: usize = 16 * 1024, "BYTES",
        "Largest request head; a larger one gets 431.";
    #[serde_as(as = "Scalar")]
    max_message_size: usize = 64 * 1024, "BYTES",
        "Largest inbound message and frame; larger ones close with 1009.";
    #[serde_as(as = "Scalar")]
    max_channels_per_session: usize = 128, "N",
        "Subscriptions per session; past it `subscribe` gets error too_many_channels.";
    #[serde_as(as = "Scalar")]
    client_message_rate: u32 = 100, "N",
        "Inbound messages per second per session (burst twice that); 0 = no limit.";
    #[serde_as(as = "Scalar")]
    send_queue: usize = 1024, "N",
        "Frames queued per session before it is closed as a slow consumer (4003).";
    #[serde_as(as = "Scalar")]
    send_queue_bytes: usize = 1024 * 1024, "BYTES",
        "Bytes queued per session before it is closed as a slow consumer (4003).";
    #[serde_as(as = "Scalar")]
    require_client_id: bool = true, "BOOL",
        "Refuse upgrades without a client id (400 missing_client_id).";
    #[serde_as(as = "SecretText")]
    api_key: Option<Secret> = None, "KEY",
        "When set, /api/* needs `Authorization: Bearer <key>`; unset, only local callers may use it.";
    #[serde_as(as = "Unset")]
    api_key_file: Option<PathBuf> = None, "FILE",
        "File holding the API key (so it never shows in a process list).";
    #[serde_as(as = "Scalar")]
    api_open: bool = false, "BOOL",
        "Allow a non-loopback `listen` without an API key (the API is then open to the network).";
    // docs/protocol.md §13.
    #[serde_as(as = "Dur")]
    http_body_timeout: Duration = Duration::from_secs(10), "DURATION",
        "Longest time to receive an API request body (408 body_timeout past it).";
    // docs/protocol.md §13.
    #[serde_as(as = "Scalar")]
    max_http_connections_per_ip: usize = 64, "N",
        "Plain HTTP connections one address may hold open (429 past it); 0 = no limit.";
    #[serde_as(as = "Scalar")]
    client_publish: bool = false, "BOOL",
        "Allow clients to `publish` to channels.";
    shutdown_mode: ShutdownMode = ShutdownMode::Drain, "MODE",
        "`drain` (tell clients, wait, then 1001) or `restart` (close all with 1012).";
    #[serde_as(as = "Dur")]
    shutdown_timeout: Duration = Duration::from_secs(30), "DURATION",
        "Longest drain before the remaining sessions are closed with 1001.";
    #[serde_as(as = "Dur")]
    migrate_window: Duration = Duration::from_secs(10), "DURATION",
        "In `restart` mode, the time over which sessions are told to reconnect and closed with 1012.";
    #[serde_as(as = "OptDur")]
    max_lifetime: Option<Duration> = None, "DURATION",
        "When set, each session is closed with 1012 after that long (±10 % jitter), to rebalance.";
    #[serde_as(as = "CommaList")]
    trusted_proxies: Vec<Proxy> = Vec::new(), "LIST",
        "Addresses or CIDR ranges whose X-Forwarded-For / X-Real-IP is believed.";
    #[serde_as(as = "CommaList")]
    allowed_origins: Vec<String> = Vec::new(), "LIST",
        "When non-empty, upgrades whose Origin is not listed get 403.";
    auth: AuthMode = AuthMode::Off, "MODE",
        "`on`: every upgrade needs a JWT whose `sub` is the client id; `off`: none.";
    #[serde_as(as = "Unset")]
    auth_hmac_secret_file: Option<PathBuf> = None, "FILE",
        "HS256 secret (at least 32 bytes) for tokens.";
    #[serde_as(as = "Unset")]
    auth_public_key_file: Option<PathBuf> = None, "FILE",
        "PEM public key (RSA, EC P-256 or Ed25519) for RS256 / ES256 / EdDSA tokens.";
    #[serde_as(as = "Unset")]
    auth_jwks_file: Option<PathBuf> = None, "FILE",
        "JWKS document; a token's `kid` picks the key. Key files are re-read on SIGHUP.";
    #[serde_as(as = "Unset")]
    auth_audience: Option<String> = None, "AUD",
        "When set, a token's `aud` must contain it.";
    #[serde_as(as = "Unset")]
    auth_issuer: Option<String> = None, "ISS",
        "When set, a token's `iss` must equal it.";
    #[serde_as(as = "Dur")]
    auth_leeway: Duration = Duration::from_secs(5), "DURATION",
        "Clock skew tolerated on a token's exp, nbf and iat.";
    #[serde_as(as = "Unset")]
    redis_url: Option<Secret> = None, "URL",
        "When set, nodes sharing this Redis (redis:// or rediss://) are one cluster; unset: one node.";
    #[serde_as(as = "CommaList")]
    redis_sentinels: Vec<String> = Vec::new(), "LIST",
        "Sentinels (host:port or redis[s]://[user:pass@]host:port) that name the cluster's Redis master.";
    #[serde_as(as = "Unset")]
    redis_sentinel_master: Option<String> = None, "NAME",
        "The master's name the sentinels monitor (with redis_sentinels).";
    #[serde_as(as = "CommaList")]
    redis_cluster_nodes: Vec<String> = Vec::new(), "LIST",
        "Seed nodes (host:port or redis[s]://[user:pass@]host:port) of a Redis Cluster 7 the nodes shard over.";
    #[serde_as(as = "Unset")]
    node_id: Option<String> = None, "ID",
        "This node's name in presence, session listings and webhooks; default: host name and pid.";
    // docs/protocol.md §9.
    #[serde_as(as = "Dur")]
    cluster_reply_timeout: Duration = Duration::from_millis(250), "DURATION",
        "How long a push waits for other nodes' delivery counts before answering `partial`.";
    // docs/protocol.md §9.
    #[serde_as(as = "Dur")]
    node_ttl: Duration = Duration::from_secs(15), "DURATION",
        "A node silent this long is dead: it leaves presence and its client ids go offline.";
    redis_prefix: String = "tether".to_string(), "PREFIX",
        "First word of every Redis key and pub/sub topic; clusters sharing one Redis need different ones.";
    #[serde_as(as = "SecretText")]
    cluster_secret: Option<Secret> = None, "SECRET",
        "HMAC-SHA256 key every node-to-node message is signed with; unsigned messages are dropped.";
    #[serde_as(as = "Unset")]
    cluster_secret_file: Option<PathBuf> = None, "FILE",
        "File holding cluster_secret (so it never shows in a process list).";
    #[serde_as(as = "Unset")]
    webhook_url: Option<String> = None, "URL",
        "When set, connect / disconnect / online / offline events are POSTed here as JSON.";
    #[serde_as(as = "SecretText")]
    webhook_secret: Option<Secret> = None, "SECRET",
        "Key of the X-Tether-Signature HMAC-SHA256 that signs each webhook (timestamp and body).";
    #[serde_as(as = "Unset")]
    webhook_secret_file: Option<PathBuf> = None, "FILE",
        "File holding webhook_secret (so it never shows in a process list).";
    #[serde_as(as = "Dur")]
    webhook_retry_for: Duration = Duration::from_secs(300), "DURATION",
        "How long a webhook event is retried (with backoff) before it is dropped and counted.";
    #[serde_as(as = "Dur")]
    offline_grace: Duration = Duration::from_secs(5), "DURATION",
        "How long a client id may be gone before its `offline` webhook fires.";
    // docs/protocol.md §14.
    #[serde_as(as = "CommaList")]
    presence_channels: Vec<String> = Vec::new(), "LIST",
        "Channels whose subscribers get `join` / `leave` and may ask `presence`; a name ending in `*` is a prefix.";
    // docs/protocol.md §14.
    #[serde_as(as = "Dur")]
    presence_grace: Duration = Duration::from_secs(5), "DURATION",
        "How long a client id's last session may be gone from a presence channel before its `leave`.";
    #[serde_as(as = "Scalar")]
    compression: bool = false, "BOOL",
        "Accept permessage-deflate offers (no context takeover either way; docs/protocol.md §11).";
    #[serde_as(as = "Scalar")]
    compression_min_size: usize = DEFAULT_COMPRESSION_MIN_SIZE, "BYTES",
        "With compression, messages of at least this many bytes are sent compressed.";
    #[serde_as(as = "Scalar")]
    worker_threads: usize = 0, "N",
        "Async runtime threads; 0 = one per core.";
    #[serde_as(as = "Scalar")]
    history_size: usize = 0, "N",
        "Messages kept per client id and per channel for resume and offline delivery; 0 = off.";
    #[serde_as(as = "Dur")]
    history_ttl: Duration = Duration::from_secs(300), "DURATION",
        "How long a stored message stays replayable.";
    #[serde_as(as = "Scalar")]
    history_max_streams: usize = 100_000, "N",
        "Client ids and channels with history; past it the least recently used one is dropped.";
    // docs/protocol.md §13.
    #[serde_as(as = "Scalar")]
    history_max_bytes: usize = 256 * 1024 * 1024, "BYTES",
        "Stored history of all streams together; past it the least recently used streams are dropped.";
    #[serde_as(as = "Dur")]
    idempotency_window: Duration = Duration::from_secs(300), "DURATION",
        "How long an `idempotency_key` of push or publish is remembered.";
    #[serde_as(as = "Scalar")]
    dashboard: bool = true, "BOOL",
        "Serve the live operator dashboard at /dashboard (open like /metrics).";
    #[serde_as(as = "Scalar")]
    demo_page: bool = true, "BOOL",
        "Serve the demo page at / and the browser client at /tether.js.";
    #[serde_as(as = "Unset")]
    tls_cert: Option<PathBuf> = None, "FILE",
        "PEM certificate chain; with tls_key, serve https:// and wss:// directly.";
    #[serde_as(as = "Unset")]
    tls_key: Option<PathBuf> = None, "FILE",
        "PEM private key for tls_cert.";
}

impl Config {
    /// Whether an API key is configured (inline or in a file).
    pub fn api_key_set(&self) -> bool {
        self.api_key.is_some() || self.api_key_file.is_some()
    }

    /// Whether the node is in a cluster: one of `redis_url`, `redis_sentinels`,
    /// `redis_cluster_nodes` is set.
    pub fn clustered(&self) -> bool {
        self.redis_url.is_some()
            || !self.redis_sentinels.is_empty()
            || !self.redis_cluster_nodes.is_empty()
    }

    /// Whether messages are numbered and stored (`history_size` above 0).
    pub fn history(&self) -> bool {
        self.history_size > 0
    }

    /// `max_connections`, or when 0 the process's descriptor limit minus a reserve.
    pub fn effective_max_connections(&self) -> usize {
        if self.max_connections > 0 {
            return self.max_connections.min(budget::socket_budget());
        }
        budget::socket_budget()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_secrets_are_errors_not_unset() {
        for key in ["api_key", "cluster_secret", "webhook_secret"] {
            let e = Config::with(&[(key, "")]).unwrap_err().0;
            assert!(e.contains(key) && e.contains("empty"), "{e}");
        }
    }

    #[test]
    fn every_key_is_documented_once() {
        assert_eq!(KEYS.len(), KEY_DOCS.len());
        let mut names: Vec<_> = KEYS.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), KEYS.len());
    }
}
