//! The one task that owns time: it pings every session each `heartbeat_interval`, evicts the
//! sessions silent past `heartbeat_timeout` with close 4001, and has the engine drop history and
//! idempotency keys past their age. Sessions and streams keep no timers of their own.

use std::sync::Arc;

use std::time::Duration;

use tokio::time::MissedTickBehavior;

use crate::metrics::Metrics;
use crate::protocol::close;
use crate::registry::Registry;
use crate::state::Shared;

/// Requests a 4001 close for every session silent longer than `timeout_ms` at `now_ms`;
/// returns how many were newly evicted.
pub fn evict_silent(reg: &Registry, metrics: &Metrics, now_ms: u64, timeout_ms: u64) -> usize {
    let mut evicted = 0;
    reg.for_each(|h| {
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
    });
    evicted
}

/// Asks every session's writer to send a WebSocket Ping.
pub fn ping_all(reg: &Registry) {
    reg.for_each(|h| h.request_ping());
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
        let (interval, timeout, reap) =
            (c.heartbeat_interval, c.heartbeat_timeout, c.reap_interval);
        let (reg, clock) = (&shared.registry, &shared.clock);
        let mut tick = tokio::time::interval(reap);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let interval_ms = interval.as_millis() as u64;
        let timeout_ms = timeout.as_millis() as u64;
        let mut next_ping = clock.now_ms() + interval_ms;
        let purge_ms = purge_period(&shared).as_millis() as u64;
        let mut next_purge = clock.now_ms() + purge_ms;
        loop {
            tick.tick().await;
            let now = clock.now_ms();
            evict_silent(reg, &shared.metrics, now, timeout_ms);
            if now >= next_ping {
                ping_all(reg);
                next_ping = now + interval_ms;
            }
            if now >= next_purge {
                match shared.engine.purge().await {
                    Ok(n) if n > 0 => log::debug!("purged {n} expired messages and keys"),
                    Ok(_) => {}
                    Err(e) => log::warn!("history purge failed: {e}"),
                }
                next_purge = now + purge_ms;
            }
        }
    })
}

/// Aborts the reaper when the server's run ends, however it ends.
pub struct ReaperGuard(pub tokio::task::JoinHandle<()>);

impl Drop for ReaperGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::SessionIds;
    use crate::metrics::Metrics;
    use crate::outbox::Outbox;
    use tokio_tungstenite::tungstenite::Message;

    #[test]
    fn evicts_only_the_silent_once() {
        let reg = Registry::new(8, Arc::new(Metrics::default()));
        let ids = SessionIds::new();
        let mk = |seen| {
            let h = Arc::new(Outbox::new(
                ids.next(),
                Arc::from("c"),
                "127.0.0.1:1".parse().unwrap(),
                seen,
                Some(Message::text("w")),
            ));
            reg.insert(Arc::clone(&h));
            h
        };
        let quiet = mk(0);
        let fresh = mk(900);
        assert_eq!(evict_silent(&reg, &reg.metrics, 1000, 500), 1);
        assert_eq!(quiet.close_requested().map(|c| c.code), Some(4001));
        assert_eq!(fresh.close_requested(), None);
        // Already closing: not counted twice.
        assert_eq!(evict_silent(&reg, &reg.metrics, 1000, 500), 0);
        fresh.touch(2000);
        assert_eq!(evict_silent(&reg, &reg.metrics, 2400, 500), 0);
        assert_eq!(reg.metrics.evicted_total(), 1);
    }
}
