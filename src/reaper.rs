//! The one task that owns time: it pings every session each `heartbeat_interval`, evicts the
//! sessions silent past `heartbeat_timeout` with close 4001, and has the engine drop history and
//! idempotency keys past their age. Sessions and streams keep no timers of their own.
//!
//! Its jobs at each tick, in this order (see `spawn`): `reap` (4001, 4004, 1012),
//! `tick_webhooks` (online/offline grace), `sample_dashboard`, `ping` every
//! `heartbeat_interval`, `purge_history` every `purge_period`. Other periodic work joins this
//! list rather than starting a timer task of its own.

use std::sync::Arc;

use std::time::Duration;

use tokio::time::MissedTickBehavior;

use crate::clock::unix_now;
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::protocol::close;
use crate::state::Shared;

/// What the reaper holds sessions to at one tick.
pub struct Rules {
    /// The liveness clock now (milliseconds).
    pub now_ms: u64,
    /// Silence after which a session is evicted with 4001.
    pub timeout_ms: u64,
    /// Wall-clock seconds, for token expiry (4004).
    pub unix_now: u64,
    /// Wall-clock milliseconds, for `max_lifetime`.
    pub wall_ms: u64,
    /// `max_lifetime` in milliseconds: sessions are rotated with 1012 after it (±10 %).
    pub lifetime_ms: Option<u64>,
}

/// Requests a 4001 close for every session silent past the timeout, a 4004 close for every
/// session whose token expired, and a 1012 close for every session past its lifetime; returns
/// how many were newly evicted for silence.
pub fn reap(sessions: &[Arc<Outbox>], metrics: &Metrics, r: &Rules) -> usize {
    let mut evicted = 0;
    for outbox in sessions {
        let silent = r.now_ms.saturating_sub(outbox.last_seen());
        if silent > r.timeout_ms && outbox.request_close(close::HEARTBEAT_TIMEOUT) {
            evicted += 1;
            metrics.evicted();
            log::debug!(
                "session {} client {} peer {}: evicted after {silent} ms of silence",
                outbox.id,
                outbox.client_id,
                outbox.remote()
            );
        }
        if outbox.expires_at().is_some_and(|exp| r.unix_now >= exp)
            && outbox.request_close(close::TOKEN_EXPIRED)
        {
            log::debug!(
                "session {} client {}: token expired, closing 4004",
                outbox.id,
                outbox.client_id
            );
        }
        if let Some(life) = r.lifetime_ms
            && r.wall_ms
                >= outbox
                    .connected_at_ms()
                    .saturating_add(jittered(life, outbox.id.0))
            && outbox.request_close(close::RESTART)
        {
            log::debug!(
                "session {} client {}: rotated (max_lifetime)",
                outbox.id,
                outbox.client_id
            );
        }
    }
    evicted
}

/// `life` give or take 10 %, fixed per session (derived from its id), so sessions that connected
/// together do not all rotate together.
fn jittered(life: u64, id: u64) -> u64 {
    // A multiplicative hash spreads consecutive ids over the whole range.
    let spread = (id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % 201; // 0..=200
    life.saturating_mul(900 + spread) / 1000
}

/// Longest wait between two purges: expired history is also trimmed whenever its stream is
/// touched, so the purge only bounds what idle streams hold, and walking every stream is work.
const PURGE_MAX_PERIOD: Duration = Duration::from_secs(30);

/// How often to purge: a quarter of the shortest age limit, so nothing outlives its limit by
/// much, but never more often than the reaper ticks.
pub fn purge_period(shared: &Shared) -> Duration {
    let c = &shared.config;
    let shortest = if c.history() {
        c.history_ttl.min(c.idempotency_window)
    } else {
        c.idempotency_window
    };
    (shortest / 4).clamp(c.reap_interval, PURGE_MAX_PERIOD.max(c.reap_interval))
}

/// Runs until the returned task is aborted (the server aborts it when it stops).
pub fn spawn(shared: Arc<Shared>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let c = &shared.config;
        let (interval, timeout, every) =
            (c.heartbeat_interval, c.heartbeat_timeout, c.reap_interval);
        let (reg, clock) = (&shared.registry, &shared.clock);
        let lifetime = c.max_lifetime;
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let interval_ms = interval.as_millis() as u64;
        let timeout_ms = timeout.as_millis() as u64;
        let mut next_ping = clock.now_ms() + interval_ms;
        let purge_ms = purge_period(&shared).as_millis() as u64;
        let mut next_purge = clock.now_ms() + purge_ms;
        loop {
            tick.tick().await;
            let now = clock.now_ms();
            // A snapshot, so the registry lock is never held while thousands of sessions are
            // looked at and woken.
            let sessions = reg.snapshot(None);
            let wall_ms = crate::clock::wall_ms();
            let rules = Rules {
                now_ms: now,
                timeout_ms,
                unix_now: unix_now(),
                wall_ms,
                lifetime_ms: lifetime.map(|d| d.as_millis() as u64),
            };
            reap(&sessions, &shared.metrics, &rules);
            tick_webhooks(&shared);
            sample_dashboard(&shared, sessions.len());
            if now >= next_ping {
                ping(&sessions);
                next_ping = now + interval_ms;
            }
            if now >= next_purge {
                purge_history(&shared).await;
                next_purge = now + purge_ms;
            }
        }
    })
}

/// Lets the webhooks check the online/offline grace of the client ids they track.
fn tick_webhooks(shared: &Shared) {
    if let Some(w) = &shared.webhooks {
        w.tick(&shared.registry, std::time::Instant::now());
    }
}

/// Records the dashboard's sample for this tick and shares it with the other nodes.
fn sample_dashboard(shared: &Shared, sessions: usize) {
    if shared.config.dashboard {
        shared.samples.record(sessions, shared.metrics.totals());
        shared.router.share_sample(|| shared.samples.latest());
    }
}

/// Asks every session to send a ping; each writes its own.
fn ping(sessions: &[Arc<Outbox>]) {
    for outbox in sessions {
        outbox.request_ping();
    }
}

/// Has the engine drop the history and idempotency keys past their age.
async fn purge_history(shared: &Shared) {
    match shared.engine.purge().await {
        Ok(n) if n > 0 => log::debug!("purged {n} expired messages and keys"),
        Ok(_) => {}
        Err(e) => log::warn!("history purge failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::SessionIds;
    use tokio_tungstenite::tungstenite::Message;

    #[test]
    fn expired_tokens_close_with_4004_and_refreshed_ones_do_not() {
        let metrics = Metrics::default();
        let h = Arc::new(Outbox::new(
            crate::id::SessionId(7),
            Arc::from("c"),
            "127.0.0.1:1".parse().unwrap(),
            0,
            None,
        ));
        h.set_token(Some(1_000), None);
        let all = [Arc::clone(&h)];
        let at = |unix_now| Rules {
            now_ms: 10,
            timeout_ms: 60_000,
            unix_now,
            wall_ms: 0,
            lifetime_ms: None,
        };
        reap(&all, &metrics, &at(999));
        assert_eq!(h.close_requested(), None, "not yet expired");
        h.set_token(Some(2_000), None);
        reap(&all, &metrics, &at(1_500));
        assert_eq!(h.close_requested(), None, "a refresh moved the expiry");
        reap(&all, &metrics, &at(2_000));
        assert_eq!(h.close_requested().map(|c| c.code), Some(4004));
    }

    #[test]
    fn evicts_only_the_silent_once() {
        let metrics = Metrics::default();
        let ids = SessionIds::new();
        let mk = |seen| {
            Arc::new(Outbox::new(
                ids.next(),
                Arc::from("c"),
                "127.0.0.1:1".parse().unwrap(),
                seen,
                Some(Message::text("w")),
            ))
        };
        let quiet = mk(0);
        let fresh = mk(900);
        let all = [Arc::clone(&quiet), Arc::clone(&fresh)];
        let at = |now_ms| Rules {
            now_ms,
            timeout_ms: 500,
            unix_now: 0,
            wall_ms: 0,
            lifetime_ms: None,
        };
        assert_eq!(reap(&all, &metrics, &at(1000)), 1);
        assert_eq!(quiet.close_requested().map(|c| c.code), Some(4001));
        assert_eq!(fresh.close_requested(), None);
        // Already closing: not counted twice.
        assert_eq!(reap(&all, &metrics, &at(1000)), 0);
        fresh.touch(2000);
        assert_eq!(reap(&all, &metrics, &at(2400)), 0);
        assert_eq!(metrics.evicted_total(), 1);
    }

    #[test]
    fn lifetimes_are_jittered_by_ten_percent_at_most_and_spread() {
        let spread: std::collections::BTreeSet<u64> =
            (0..1000u64).map(|id| jittered(100_000, id)).collect();
        assert!(spread.iter().all(|l| (90_000..=110_000).contains(l)));
        assert!(spread.len() > 100, "ids spread over the jitter range");
    }
}
