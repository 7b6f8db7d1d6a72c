//! Operator views: counters behind `/metrics` and `/health` (this file); `render`, their
//! Prometheus text exposition; `dashboard`, the samples the reaper records for `/dashboard`. It
//! may use only the bottom (protocol, engine stats, clock).
//!
//! Hot-path counters are plain atomics; labelled families with low event rates (refusals, closes,
//! API results) sit behind a small mutex.

pub(crate) mod dashboard;
mod render;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

pub(crate) use render::{counter, gauge};
pub use render::{render_engine, render_webhooks};

use crate::protocol::close;

/// Server-wide counters.
#[derive(Default)]
pub struct Metrics {
    /// WebSocket sessions established.
    accepted: AtomicU64,
    /// Sessions evicted for silence (4001).
    evicted: AtomicU64,
    /// Client frames received (any kind).
    received: AtomicU64,
    /// Frames written to client sockets.
    sent: AtomicU64,
    /// Sessions closed as slow consumers.
    slow_consumers: AtomicU64,
    /// Frames dropped because the recipient was already closing.
    dropped: AtomicU64,
    /// Resumes (`since` on connect or subscribe) that got every missed message.
    resumes_recovered: AtomicU64,
    /// Resumes that could not be served (other epoch, trimmed history).
    resumes_lost: AtomicU64,
    /// Messages replayed by resumes.
    replayed: AtomicU64,
    /// Channel presence events announced: `join`, `leave` (docs/protocol.md §14).
    presence_events: [AtomicU64; 2],
    /// Channel presence queries answered (API, client `presence`, embedding).
    presence_queries: AtomicU64,
    /// Upgrade refusals by error code.
    refusals: Mutex<BTreeMap<&'static str, u64>>,
    /// Session ends by close code (0 = connection lost without a close frame).
    closes: Mutex<BTreeMap<CloseLabel, u64>>,
    /// API requests by endpoint and result.
    api: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// Server-side control calls, by [`Control`].
    control: [AtomicU64; 3],
}

/// A server-side control call (docs/protocol.md §14), for its counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// `POST /api/v1/subscribe` or `Handle::subscribe`.
    Subscribe = 0,
    /// `POST /api/v1/unsubscribe` or `Handle::unsubscribe`.
    Unsubscribe = 1,
    /// `DELETE /api/v1/clients/{id}` or `Handle::kick`.
    Kick = 2,
}

/// Counters of the webhook side, for `/metrics`.
#[derive(Default)]
pub struct WebhookStats {
    /// Events accepted into a lane.
    pub queued: AtomicU64,
    /// Events the receiver answered with 2xx.
    pub delivered: AtomicU64,
    /// Attempts that failed (error, timeout, non-2xx) and were retried or given up.
    pub failed_attempts: AtomicU64,
    /// Events dropped because their lane was full.
    pub dropped_full: AtomicU64,
    /// Events given up after `webhook_retry_for`.
    pub dropped_expired: AtomicU64,
}

impl WebhookStats {
    /// Events accepted and not yet delivered or dropped.
    pub fn pending(&self) -> u64 {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        l(&self.queued).saturating_sub(l(&self.delivered) + l(&self.dropped_expired))
    }
}

/// Cumulative counters at one moment (the dashboard turns differences into rates).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Sessions established.
    pub accepted: u64,
    /// Sessions ended.
    pub closed: u64,
    /// Client frames received.
    pub received: u64,
    /// Frames written to clients.
    pub sent: u64,
    /// Evictions for silence.
    pub evicted: u64,
    /// Slow-consumer closes.
    pub slow_consumers: u64,
    /// Upgrades refused.
    pub refused: u64,
}

/// A `tether_closes_total` label: a defined close code, or `other` for whatever else a peer sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum CloseLabel {
    /// A code docs/protocol.md §4 or RFC 6455 defines.
    Code(u16),
    /// Anything else.
    Other,
}

impl std::fmt::Display for CloseLabel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloseLabel::Code(c) => write!(f, "{c}"),
            CloseLabel::Other => f.write_str("other"),
        }
    }
}

fn inc(a: &AtomicU64, n: u64) {
    a.fetch_add(n, Ordering::Relaxed);
}

impl Metrics {
    /// A server-side control call was made.
    pub fn server_control(&self, c: Control) {
        inc(&self.control[c as usize], 1);
    }
    /// A session was established.
    pub fn accepted(&self) {
        inc(&self.accepted, 1);
    }
    /// A session was evicted for silence.
    pub fn evicted(&self) {
        inc(&self.evicted, 1);
    }
    /// A client frame arrived.
    pub fn received(&self) {
        inc(&self.received, 1);
    }
    /// `n` frames were written to a client.
    pub fn add_sent(&self, n: u64) {
        inc(&self.sent, n);
    }
    /// A session overflowed its queue.
    pub fn slow_consumer(&self) {
        inc(&self.slow_consumers, 1);
    }
    /// A frame was dropped because its recipient was closing.
    pub fn dropped(&self) {
        inc(&self.dropped, 1);
    }
    /// `n` frames were dropped at once (a slow consumer's cleared queue, a session's unsent rest).
    pub fn dropped_n(&self, n: u64) {
        inc(&self.dropped, n);
    }
    /// A resume ended: whether it `recovered`, and how many messages it replayed.
    pub fn resumed(&self, recovered: bool, replayed: u64) {
        inc(
            if recovered {
                &self.resumes_recovered
            } else {
                &self.resumes_lost
            },
            1,
        );
        inc(&self.replayed, replayed);
    }

    /// A channel presence event (`join` when true, else `leave`) was announced.
    pub fn presence_event(&self, join: bool) {
        self.presence_events[usize::from(!join)].fetch_add(1, Ordering::Relaxed);
    }

    /// A channel's presence was asked for.
    pub fn presence_query(&self) {
        self.presence_queries.fetch_add(1, Ordering::Relaxed);
    }

    /// An upgrade was refused with `code`.
    pub fn refused(&self, code: &'static str) {
        *self.refusals.lock().entry(code).or_default() += 1;
    }
    /// A session ended with close `code` (0 when no close frame was exchanged).
    pub fn closed(&self, code: u16) {
        // Peers choose their close codes: only defined ones become label values.
        let label = if close::is_known(code) {
            CloseLabel::Code(code)
        } else {
            CloseLabel::Other
        };
        *self.closes.lock().entry(label).or_default() += 1;
    }
    /// An API call on `endpoint` ended with `result`.
    pub fn api(&self, endpoint: &'static str, result: &'static str) {
        *self.api.lock().entry((endpoint, result)).or_default() += 1;
    }

    /// Sessions accepted so far.
    pub fn accepted_total(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
    /// Sessions evicted so far.
    pub fn evicted_total(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    /// The counters the dashboard charts, read together.
    pub fn totals(&self) -> Totals {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Totals {
            accepted: l(&self.accepted),
            closed: self.closes.lock().values().sum(),
            received: l(&self.received),
            sent: l(&self.sent),
            evicted: l(&self.evicted),
            slow_consumers: l(&self.slow_consumers),
            refused: self.refusals.lock().values().sum(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_help_type_and_labels() {
        let m = Metrics::default();
        m.accepted();
        m.refused("server_full");
        m.closed(4001);
        m.closed(4999);
        m.closed(3123);
        m.api("push", "ok");
        let text = m.render(3, false);
        assert!(text.contains("# TYPE tether_connections gauge\ntether_connections 3\n"));
        assert!(text.contains("tether_connections_accepted_total 1\n"));
        assert!(text.contains("tether_refusals_total{code=\"server_full\"} 1\n"));
        assert!(text.contains("tether_closes_total{code=\"4001\"} 1\n"));
        assert!(
            text.contains("tether_closes_total{code=\"other\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("tether_api_requests_total{endpoint=\"push\",result=\"ok\"} 1\n"));
    }
}
