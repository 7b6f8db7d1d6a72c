//! Webhooks (docs/protocol.md §10): `connect`, `disconnect`, `online` and `offline` events POSTed as
//! JSON to `webhook_url`, signed with `webhook_secret` (or `webhook_secret_file`), at least
//! once, in order per client id. Each event gets its `X-Tether-Event-Id` when it is queued, so
//! every retry repeats it and a receiver can drop a duplicate; see docs/webhooks.md.
//!
//! Events go into a few bounded lanes (a client id always to the same lane, so its events keep
//! their order); each lane's task sends one event at a time and retries it with backoff for up
//! to `webhook_retry_for`. A full lane drops the event and counts it: the connection path never
//! waits for the receiver. `offline` fires once a client id's last session ended and it has not
//! come back within `offline_grace`; the reaper, which owns time, checks that.
//!
//! `lane.rs` holds a lane's queue, `send.rs` the HTTP client and its signature. It may use the
//! registry (who is still here), outboxes, metrics, config and the bottom; the cluster and
//! shared state sit above it.

mod lane;
mod send;

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;

use crate::config::{Config, Secret};
use crate::metrics::WebhookStats as Stats;
use crate::outbox::Outbox;
use crate::protocol::{json_str, timestamp};
use crate::registry::Registry;
use crate::shutdown::AbortOnDrop;
use lane::Lane;

pub use send::Sender;

/// Lanes events are spread over; one client id's events always share a lane.
const LANES: usize = 4;
/// Events a reconnect storm makes per client id before a receiver can catch up: connect,
/// online, disconnect, connect, disconnect and offline.
const EVENTS_PER_CONNECTION: usize = 6;
/// Fewest events queued, whatever `max_connections` says.
pub const MIN_QUEUE: usize = 16_384;
/// Most events queued (about 300 MiB of bodies at worst); past it events are dropped and counted.
pub const MAX_QUEUE: usize = 1 << 20;
/// Least time between two "queue full" warnings; the drops are counted in between.
const WARN_EVERY_MS: u64 = 1_000;

/// The queue bound: a storm of every connection the server may hold fits, so no event is lost
/// to one (measured: 16,384 lost 73,418 of 114,000 events of a 19,000-client storm; sized so,
/// none). A lane's ring grows as it fills and is freed once it drains, so an idle bound costs
/// nothing.
fn queue_size(config: &Config) -> usize {
    config
        .effective_max_connections()
        .saturating_mul(EVENTS_PER_CONNECTION)
        .clamp(MIN_QUEUE, MAX_QUEUE)
}

/// Which client ids are online here, and which are waiting out `offline_grace`.
#[derive(Default)]
struct Presence {
    /// Client ids with a session, or gone for less than the grace.
    online: HashSet<Arc<str>>,
    /// Client ids whose last session ended, with when their `offline` is due.
    leaving: HashMap<Arc<str>, Instant>,
}

/// The webhook dispatcher.
pub struct Webhooks {
    /// Each lane's queue.
    lanes: Vec<Arc<Lane>>,
    /// Picks a client id's lane.
    hasher: RandomState,
    /// Online tracking for `online` / `offline`.
    presence: Mutex<Presence>,
    /// Counters.
    pub stats: Arc<Stats>,
    /// This node's name, in every event.
    node: Arc<str>,
    /// `offline_grace`.
    grace: Duration,
    /// In a cluster the cluster decides `online` / `offline` for all nodes (see
    /// [`Webhooks::online`]); this node's own tracking stays off.
    clustered: bool,
    /// Posts the events.
    sender: Arc<Sender>,
    /// The lanes' tasks, stopped with the server.
    tasks: Mutex<Vec<AbortOnDrop>>,
    /// When the last "queue full" warning was logged (wall-clock ms).
    last_warn: AtomicU64,
    /// The high half of every event id: random per process, so ids differ across nodes and
    /// restarts without any coordination.
    id_prefix: u64,
    /// The low half of the next event id: a counter, so ids never repeat within the process.
    next_id: AtomicU64,
}

impl Webhooks {
    /// A dispatcher for `webhook_url`, `None` when webhooks are off; events queue until
    /// [`Webhooks::run`] starts the lanes. Errors name the key.
    pub fn new(config: &Config, node: Arc<str>) -> Result<Option<Arc<Webhooks>>, String> {
        let Some(url) = &config.webhook_url else {
            return Ok(None);
        };
        let secret = match &config.webhook_secret_file {
            Some(path) => Some(Secret::from_file("webhook_secret_file", path)?),
            None => config.webhook_secret.clone(),
        };
        let sender = Arc::new(Sender::new(url, secret, config.webhook_retry_for)?);
        let mut prefix = [0u8; 8];
        if getrandom::fill(&mut prefix).is_err() {
            // No OS randomness: the clock still tells this process from its predecessors.
            prefix = crate::clock::wall_ms().to_le_bytes();
        }
        let stats = Arc::new(Stats::default());
        let lanes = (0..LANES)
            .map(|_| Arc::new(Lane::new(queue_size(config) / LANES)))
            .collect();
        Ok(Some(Arc::new(Webhooks {
            lanes,
            hasher: RandomState::new(),
            presence: Mutex::new(Presence::default()),
            stats,
            node,
            grace: config.offline_grace,
            clustered: config.clustered(),
            sender,
            tasks: Mutex::new(Vec::new()),
            last_warn: AtomicU64::new(0),
            id_prefix: u64::from_le_bytes(prefix),
            next_id: AtomicU64::new(0),
        })))
    }

    /// Starts the lanes' tasks (once; the server's run calls it).
    pub fn run(&self) {
        let mut tasks = self.tasks.lock();
        if !tasks.is_empty() {
            return;
        }
        for lane in &self.lanes {
            let task = send::lane(
                Arc::clone(lane),
                Arc::clone(&self.sender),
                Arc::clone(&self.stats),
            );
            tasks.push(AbortOnDrop(tokio::spawn(task)));
        }
    }

    /// A session opened: `connect`, and `online` when it is the client id's first.
    pub fn connected(&self, outbox: &Outbox, migrated_from: Option<&str>) {
        let body = self.encode_with(
            "connect",
            &outbox.client_id,
            Some(outbox),
            None,
            migrated_from,
        );
        self.send("connect", &outbox.client_id, body);
        if self.clustered {
            return;
        }
        let first = {
            let mut p = self.presence.lock();
            // Back within the grace: no `offline` was sent, so no `online` either.
            let returning = p.leaving.remove(&outbox.client_id).is_some();
            !returning && p.online.insert(Arc::clone(&outbox.client_id))
        };
        if first {
            self.emit("online", &outbox.client_id, None, None);
        }
    }

    /// A session ended with `code`; `remaining` is how many sessions its client id still has.
    pub fn disconnected(&self, outbox: &Outbox, code: u16, remaining: usize) {
        self.emit("disconnect", &outbox.client_id, Some(outbox), Some(code));
        if remaining == 0 && !self.clustered {
            let due = Instant::now() + self.grace;
            self.presence
                .lock()
                .leaving
                .insert(Arc::clone(&outbox.client_id), due);
        }
    }

    /// `online` for a client id the cluster saw come online (its first session anywhere).
    pub fn online(&self, client_id: &Arc<str>) {
        self.emit("online", client_id, None, None);
    }

    /// `offline` for a client id the cluster saw gone past the grace (once cluster-wide).
    pub fn offline(&self, client_id: &Arc<str>) {
        self.emit("offline", client_id, None, None);
    }

    /// Sends `offline` for every client id whose grace is over and that has not come back; the
    /// reaper calls it on every tick.
    pub fn tick(&self, registry: &Registry, now: Instant) {
        let due: Vec<Arc<str>> = {
            let mut p = self.presence.lock();
            let due: Vec<Arc<str>> = p
                .leaving
                .iter()
                .filter(|(_, at)| **at <= now)
                .map(|(c, _)| Arc::clone(c))
                .collect();
            for c in &due {
                p.leaving.remove(c);
                // A session that raced in between counted on `online` staying.
                if registry.sessions_of(c) == 0 {
                    p.online.remove(c);
                }
            }
            due
        };
        for c in due {
            if registry.sessions_of(&c) == 0 {
                self.emit("offline", &c, None, None);
            }
        }
    }

    /// Waits, at most `bound`, for the lanes to send what they hold; then stops them.
    pub async fn flush(&self, bound: Duration) {
        let deadline = tokio::time::Instant::now() + bound;
        while self.stats.pending() > 0 && tokio::time::Instant::now() < deadline {
            // Polling a counter here is the shutdown path only, once per server life.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.tasks.lock().clear();
    }

    fn emit(&self, event: &str, client_id: &Arc<str>, session: Option<&Outbox>, code: Option<u16>) {
        let body = self.encode_with(event, client_id, session, code, None);
        self.send(event, client_id, body);
    }

    fn send(&self, event: &str, client_id: &Arc<str>, body: String) {
        let lane = (self.hasher.hash_one(&**client_id) as usize) % self.lanes.len();
        let id = u128::from(self.id_prefix) << 64
            | u128::from(self.next_id.fetch_add(1, Ordering::Relaxed));
        if self.lanes[lane].try_push(id, body.as_bytes()) {
            self.stats.queued.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let dropped = self.stats.dropped_full.fetch_add(1, Ordering::Relaxed) + 1;
        // One line a second, not one per event: a storm would flood the log.
        let now = crate::clock::wall_ms();
        let last = self.last_warn.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= WARN_EVERY_MS
            && self
                .last_warn
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            log::warn!(
                "webhook queue full: {event} event for {client_id} dropped ({dropped} dropped so far)"
            );
        }
    }

    fn encode_with(
        &self,
        event: &str,
        client_id: &str,
        session: Option<&Outbox>,
        code: Option<u16>,
        migrated_from: Option<&str>,
    ) -> String {
        let mut out = format!(
            "{{\"event\":{},\"timestamp\":\"{}\",\"node\":{},\"client_id\":{}",
            json_str(event),
            timestamp(SystemTime::now()),
            json_str(&self.node),
            json_str(client_id)
        );
        if let Some(s) = session {
            out.push_str(&format!(",\"session_id\":\"{}\"", s.id));
        }
        if let Some(code) = code {
            let reason = crate::outbox::CloseRequest { code }.reason();
            out.push_str(&format!(
                ",\"close_code\":{code},\"reason\":{}",
                json_str(reason)
            ));
        }
        if let Some(node) = migrated_from {
            out.push_str(&format!(",\"migrated_from\":{}", json_str(node)));
        }
        out.push('}');
        out
    }
}
