//! What every layer shares, kept small: the configuration, who is connected, admission, counters,
//! the clock, the application's callbacks, and whether shutdown has begun.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tokio::sync::watch;

use crate::auth::{AuthSettings, Verifier};
use crate::clock::Clock;
use crate::cluster::{Cluster, Topology};
use crate::config::{AuthMode, Config, Secret, ShutdownMode};
use crate::delivery::handle::Handle;
use crate::delivery::handler::Handler;
use crate::delivery::router::Router;
use crate::engine::memory::{MemoryConfig, MemoryEngine};
use crate::engine::redis::RedisEngine;
use crate::engine::{Checked, Engine, WallTime};
use crate::id::{SessionId, SessionIds};
use crate::metrics::Metrics;
use crate::metrics::dashboard::Samples;
use crate::net::admission::Admissions;
use crate::net::budget::{Sockets, socket_budget};
use crate::outbox::QueueLimits;
use crate::protocol::close;
use crate::registry::Registry;
use crate::webhooks::Webhooks;

/// The server-wide state, one `Arc` of which every connection holds.
pub struct Shared {
    /// The validated configuration.
    pub config: Config,
    /// This node's name (`node_id`, or host name and pid).
    pub node: Arc<str>,
    /// Token verification, when `auth = "on"`.
    pub verifier: Option<Arc<Verifier>>,
    /// The API key, from `api_key` or `api_key_file`.
    pub api_key: Option<Secret>,
    /// The webhook dispatcher, when `webhook_url` is set.
    pub webhooks: Option<Arc<Webhooks>>,
    /// Who is connected here.
    pub registry: Arc<Registry>,
    /// What outlives a session: stream seqs, history, idempotency keys (memory, or Redis in a
    /// cluster).
    pub engine: Arc<dyn Engine>,
    /// Everything about other nodes: this node alone, or a cluster through Redis.
    pub router: Router,
    /// Connection slots under the limits.
    pub admissions: Arc<Admissions>,
    /// The descriptor budget every accepted socket counts against.
    pub sockets: Sockets,
    /// Counters behind `/metrics`.
    pub metrics: Arc<Metrics>,
    /// The millisecond clock of liveness stamps.
    pub clock: Clock,
    /// Session id generator.
    pub ids: SessionIds,
    /// The embedding application's callbacks.
    pub handler: Arc<dyn Handler>,
    /// Push handle shared by the API and client `publish` (over the same router).
    pub handle: Handle,
    /// Client channel commands (frame texts) waiting for a session's earlier ones, in a
    /// cluster; an entry exists while the session's queue runs (see `session::join::defer`).
    pub channel_queues: parking_lot::Mutex<HashMap<SessionId, VecDeque<Box<str>>>>,
    /// Set once shutdown starts: upgrades are refused and `/health` answers 503.
    draining: AtomicBool,
    /// Start time, for `/health`.
    pub started: Instant,
    /// The dashboard's samples.
    pub samples: Samples,
    /// Flipped when `run` returns after a forced stop: closing sessions stop waiting at once.
    abandon: watch::Sender<bool>,
    /// The runtime `run` was called on, where sessions and the API run; the edge thread (accept,
    /// HTTP, handshakes) hands them over to it.
    main: std::sync::OnceLock<tokio::runtime::Handle>,
}

impl Shared {
    /// State for a server with `config` and `handler`; reads the key files the config names
    /// (errors name the key and the file).
    pub fn new(config: Config, handler: Arc<dyn Handler>) -> Result<Shared, String> {
        let verifier = match config.auth {
            AuthMode::Off => None,
            AuthMode::On => Some(Arc::new(
                Verifier::load(&auth_settings(&config)).map_err(|e| e.0)?,
            )),
        };
        let api_key = match &config.api_key_file {
            Some(path) => Some(Secret::from_file("api_key_file", path)?),
            None => config.api_key.clone(),
        };
        let metrics = Arc::new(Metrics::default());
        let limits = QueueLimits {
            frames: config.send_queue,
            bytes: config.send_queue_bytes,
        };
        let registry = Registry::new(
            limits,
            config.max_channels_per_session,
            Arc::clone(&metrics),
        );
        let registry = Arc::new(
            registry
                .with_compression_min(config.compression_min_size)
                .with_presence(&config.presence_channels),
        );
        let admissions = Arc::new(Admissions::new(
            config.effective_max_connections(),
            config.max_connections_per_ip,
            config.connect_rate_per_ip,
        ));
        let node: Arc<str> = match &config.node_id {
            Some(id) => Arc::from(id.as_str()),
            None => Arc::from(default_node_id()),
        };
        let webhooks = Webhooks::new(&config, Arc::clone(&node))?;
        let clock = Clock::new();
        let cluster = match Topology::from_config(&config) {
            Some(topology) => Some(Cluster::new(
                &config,
                &topology,
                Arc::clone(&node),
                Arc::clone(&registry),
                webhooks.clone(),
                clock,
            )?),
            None => None,
        };
        let engine: Arc<dyn Engine> = match &cluster {
            Some(c) => Arc::new(RedisEngine::new(
                Arc::clone(c),
                config.history_size,
                config.history_ttl,
            )),
            None => Arc::new(MemoryEngine::new(
                MemoryConfig::from_config(&config),
                Arc::new(WallTime),
                Arc::clone(&registry) as _,
            )),
        };
        // Whoever calls it, the engine builds no key from a name the handshake would refuse.
        let engine: Arc<dyn Engine> = Arc::new(Checked(engine));
        // The one place that asks whether there is a cluster: everything else asks the router.
        let router = Router::new(
            Arc::clone(&registry),
            Arc::clone(&engine),
            Arc::clone(&node),
            clock,
            cluster,
        )
        .with_presence_grace(config.presence_grace);
        let handle = Handle::new(
            router.clone(),
            config.history(),
            config.max_channels_per_session,
            Arc::clone(&metrics),
        );
        let sockets = Sockets::new(socket_budget(), config.max_http_connections_per_ip);
        Ok(Shared {
            webhooks,
            node,
            config,
            verifier,
            api_key,
            registry,
            engine,
            router,
            admissions,
            sockets,
            metrics,
            clock,
            ids: SessionIds::new(),
            handler,
            handle,
            channel_queues: Default::default(),
            draining: AtomicBool::new(false),
            started: Instant::now(),
            samples: Samples::default(),
            abandon: watch::channel(false).0,
            main: std::sync::OnceLock::new(),
        })
    }

    /// Records the runtime sessions and the API run on (once, when `run` starts).
    pub fn set_main(&self, main: tokio::runtime::Handle) {
        let _ = self.main.set(main);
    }

    /// The runtime sessions and the API run on: the one `run` was called on, or the current
    /// one before `run` (tests that drive a session directly).
    pub fn main(&self) -> tokio::runtime::Handle {
        match self.main.get() {
            Some(h) => h.clone(),
            None => tokio::runtime::Handle::current(),
        }
    }

    /// True once shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Marks the start of shutdown.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Tells every closing session to stop waiting (for the peer, for queued writes) now.
    pub fn abandon(&self) {
        self.abandon.send_replace(true);
    }

    /// Resolves once [`Shared::abandon`] was called.
    pub async fn abandoned(&self) {
        let mut rx = self.abandon.subscribe();
        let _ = rx.wait_for(|v| *v).await;
    }

    /// The close code for sessions cut by shutdown in the configured mode.
    pub fn shutdown_close_code(&self) -> u16 {
        match self.config.shutdown_mode {
            ShutdownMode::Drain => close::GOING_AWAY,
            ShutdownMode::Restart => close::RESTART,
        }
    }
}

/// The token settings of `config`.
fn auth_settings(config: &Config) -> AuthSettings {
    AuthSettings {
        hmac_secret_file: config.auth_hmac_secret_file.clone(),
        public_key_file: config.auth_public_key_file.clone(),
        jwks_file: config.auth_jwks_file.clone(),
        audience: config.auth_audience.clone(),
        issuer: config.auth_issuer.clone(),
        leeway: config.auth_leeway,
    }
}

/// The host name and the process id, e.g. `web-3-4711`: unique among the nodes of a cluster
/// without any configuration.
fn default_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "tether".into());
    format!("{host}-{}", std::process::id())
}
