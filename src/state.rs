//! What every layer shares, kept small: the configuration, who is connected, admission, counters,
//! the clock, the application's callbacks, and whether shutdown has begun.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::admission::Admissions;
use crate::clock::Clock;
use crate::config::{Config, ShutdownMode};
use crate::engine::memory::{MemoryConfig, MemoryEngine};
use crate::engine::{Engine, SystemClock};
use crate::handle::Handle;
use crate::handler::Handler;
use crate::id::SessionIds;
use crate::metrics::Metrics;
use crate::protocol::close;
use crate::registry::Registry;

/// The server-wide state, one `Arc` of which every connection holds.
pub struct Shared {
    /// The validated configuration.
    pub config: Config,
    /// Who is connected here.
    pub registry: Arc<Registry>,
    /// What outlives a session: stream seqs, history, idempotency keys (the memory engine).
    pub engine: Arc<dyn Engine>,
    /// Connection slots under the limits.
    pub admissions: Arc<Admissions>,
    /// Counters behind `/metrics`.
    pub metrics: Arc<Metrics>,
    /// The millisecond clock of liveness stamps.
    pub clock: Clock,
    /// Session id generator.
    pub ids: SessionIds,
    /// The embedding application's callbacks.
    pub handler: Arc<dyn Handler>,
    /// Push handle shared by the API and client `publish`.
    pub handle: Handle,
    /// Set once shutdown starts: upgrades are refused and `/health` answers 503.
    draining: AtomicBool,
    /// Start time, for `/health`.
    pub started: Instant,
}

impl Shared {
    /// State for a server with `config` and `handler`.
    pub fn new(config: Config, handler: Arc<dyn Handler>) -> Shared {
        let metrics = Arc::new(Metrics::default());
        let registry = Arc::new(Registry::new(config.send_queue, Arc::clone(&metrics)));
        let admissions = Arc::new(Admissions::new(
            config.effective_max_connections(),
            config.max_connections_per_ip,
        ));
        let engine: Arc<dyn Engine> = Arc::new(MemoryEngine::new(
            MemoryConfig::from_config(&config),
            Arc::new(SystemClock),
            Arc::clone(&registry) as _,
        ));
        let handle = Handle {
            registry: Arc::clone(&registry),
            engine: Arc::clone(&engine),
            history: config.history(),
        };
        Shared {
            config,
            registry,
            engine,
            admissions,
            metrics,
            clock: Clock::new(),
            ids: SessionIds::new(),
            handler,
            handle,
            draining: AtomicBool::new(false),
            started: Instant::now(),
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

    /// The close code for sessions cut by shutdown in the configured mode.
    pub fn shutdown_close_code(&self) -> u16 {
        match self.config.shutdown_mode {
            ShutdownMode::Drain => close::GOING_AWAY,
            ShutdownMode::Restart => close::RESTART,
        }
    }
}
