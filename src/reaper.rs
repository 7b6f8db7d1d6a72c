//! The one task that owns time: it pings every session each `heartbeat_interval` and evicts the
//! sessions silent past `heartbeat_timeout` with close 4001. Sessions keep no timers of their own.

use std::sync::Arc;

use tokio::time::MissedTickBehavior;

use crate::clock::unix_now;
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::protocol::close;
use crate::state::Shared;

/// Requests a 4001 close for every session silent longer than `timeout_ms` at `now_ms`, and a
/// 4004 close for every session whose token expired by `unix_now`; returns how many were newly
/// evicted for silence.
pub fn reap(
    sessions: &[Arc<Outbox>],
    metrics: &Metrics,
    now_ms: u64,
    timeout_ms: u64,
    unix_now: u64,
) -> usize {
    let mut evicted = 0;
    for h in sessions {
        let silent = now_ms.saturating_sub(h.last_seen());
        if silent > timeout_ms && h.request_close(close::HEARTBEAT_TIMEOUT) {
            evicted += 1;
            metrics.evicted();
            log::debug!(
                "session {} client {} peer {}: evicted after {silent} ms of silence",
                h.id,
                h.client_id,
                h.remote()
            );
        }
        if h.expires_at().is_some_and(|exp| unix_now >= exp)
            && h.request_close(close::TOKEN_EXPIRED)
        {
            log::debug!(
                "session {} client {}: token expired, closing 4004",
                h.id,
                h.client_id
            );
        }
    }
    evicted
}

/// Runs until the returned task is aborted (the server aborts it when it stops).
pub fn spawn(shared: Arc<Shared>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let c = &shared.config;
        let (interval, timeout, every) =
            (c.heartbeat_interval, c.heartbeat_timeout, c.reap_interval);
        let (reg, clock) = (&shared.registry, &shared.clock);
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let interval_ms = interval.as_millis() as u64;
        let timeout_ms = timeout.as_millis() as u64;
        let mut next_ping = clock.now_ms() + interval_ms;
        loop {
            tick.tick().await;
            let now = clock.now_ms();
            // A snapshot, so the registry lock is never held while thousands of sessions are
            // looked at and woken.
            let sessions = reg.snapshot(None);
            reap(&sessions, &shared.metrics, now, timeout_ms, unix_now());
            if now >= next_ping {
                for h in &sessions {
                    h.request_ping();
                }
                next_ping = now + interval_ms;
            }
        }
    })
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
        reap(&all, &metrics, 10, 60_000, 999);
        assert_eq!(h.close_requested(), None, "not yet expired");
        h.set_token(Some(2_000), None);
        reap(&all, &metrics, 10, 60_000, 1_500);
        assert_eq!(h.close_requested(), None, "a refresh moved the expiry");
        reap(&all, &metrics, 10, 60_000, 2_000);
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
        assert_eq!(reap(&all, &metrics, 1000, 500, 0), 1);
        assert_eq!(quiet.close_requested().map(|c| c.code), Some(4001));
        assert_eq!(fresh.close_requested(), None);
        // Already closing: not counted twice.
        assert_eq!(reap(&all, &metrics, 1000, 500, 0), 0);
        fresh.touch(2000);
        assert_eq!(reap(&all, &metrics, 2400, 500, 0), 0);
        assert_eq!(metrics.evicted_total(), 1);
    }
}
