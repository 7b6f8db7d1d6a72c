//! The Prometheus text exposition of the counters, the engine's and the webhooks' shares of it,
//! and the line helpers the cluster uses for its own.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Metrics, WebhookStats};

impl Metrics {
    /// The Prometheus text exposition.
    pub fn render(&self, connections: usize, draining: bool) -> String {
        let mut o = String::with_capacity(2048);
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
        gauge(
            &mut o,
            "tether_connections",
            "Live WebSocket sessions.",
            connections as u64,
        );
        gauge(
            &mut o,
            "tether_draining",
            "1 while the server is shutting down.",
            u64::from(draining),
        );
        counter(
            &mut o,
            "tether_connections_accepted_total",
            "WebSocket sessions established.",
            ld(&self.accepted),
        );
        counter(
            &mut o,
            "tether_evictions_total",
            "Sessions evicted for heartbeat timeout (close 4001).",
            ld(&self.evicted),
        );
        counter(
            &mut o,
            "tether_messages_received_total",
            "Frames received from clients.",
            ld(&self.received),
        );
        counter(
            &mut o,
            "tether_messages_sent_total",
            "Frames written to clients (welcome, replies and pushes).",
            ld(&self.sent),
        );
        counter(
            &mut o,
            "tether_slow_consumer_closes_total",
            "Sessions closed because their send queue was full (close 4003).",
            ld(&self.slow_consumers),
        );
        counter(
            &mut o,
            "tether_send_queue_drops_total",
            "Frames dropped: recipient closing, slow consumer's cleared queue, unsent at a close.",
            ld(&self.dropped),
        );
        family(
            &mut o,
            "tether_resumes_total",
            "Resumes (since= on connect or subscribe), by whether every missed message was there.",
            &["outcome"],
            [
                ("recovered", ld(&self.resumes_recovered)),
                ("not_recovered", ld(&self.resumes_lost)),
            ]
            .into_iter()
            .map(|(k, v)| (vec![k.to_string()], v)),
        );
        for (name, help, c) in [
            (
                "tether_server_subscribes_total",
                "Server-side subscribes (API or embedding), each for every session of a client id.",
                super::Control::Subscribe,
            ),
            (
                "tether_server_unsubscribes_total",
                "Server-side unsubscribes (API or embedding).",
                super::Control::Unsubscribe,
            ),
            (
                "tether_kicks_total",
                "Kicks: every session of a client id closed with 4002 (API or embedding).",
                super::Control::Kick,
            ),
        ] {
            counter(&mut o, name, help, ld(&self.control[c as usize]));
        }
        counter(
            &mut o,
            "tether_replayed_messages_total",
            "Stored messages replayed to resuming sessions.",
            ld(&self.replayed),
        );
        family(
            &mut o,
            "tether_presence_events_total",
            "Channel presence events announced to a channel's subscribers, by type.",
            &["type"],
            [
                ("join", ld(&self.presence_events[0])),
                ("leave", ld(&self.presence_events[1])),
            ]
            .into_iter()
            .map(|(k, v)| (vec![k.to_string()], v)),
        );
        counter(
            &mut o,
            "tether_presence_queries_total",
            "Channel presence queries answered (API, client presence command, embedding).",
            ld(&self.presence_queries),
        );
        family(
            &mut o,
            "tether_refusals_total",
            "Upgrade requests refused, by error code.",
            &["code"],
            self.refusals
                .lock()
                .iter()
                .map(|(k, v)| (vec![k.to_string()], *v)),
        );
        family(
            &mut o,
            "tether_closes_total",
            "Sessions ended, by close code (1006 = the connection dropped without a close frame; other = an undefined code a peer sent).",
            &["code"],
            self.closes
                .lock()
                .iter()
                .map(|(k, v)| (vec![k.to_string()], *v)),
        );
        family(
            &mut o,
            "tether_api_requests_total",
            "HTTP API requests, by endpoint and result.",
            &["endpoint", "result"],
            self.api
                .lock()
                .iter()
                .map(|((e, r), v)| (vec![e.to_string(), r.to_string()], *v)),
        );
        let _ = writeln!(
            o,
            "# HELP tether_build_info Build information.\n# TYPE tether_build_info gauge"
        );
        let _ = writeln!(
            o,
            "tether_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        o
    }
}

/// The engine's share of `/metrics`: history held and idempotency repeats.
pub fn render_engine(o: &mut String, s: &crate::stream::EngineStats) {
    if s.holds_here {
        render_held(o, s);
    }
    counter(
        o,
        "tether_idempotent_repeats_total",
        "Push and publish calls answered from an earlier call with the same idempotency_key.",
        s.idempotent_repeats,
    );
}

/// What the memory engine holds.
fn render_held(o: &mut String, s: &crate::stream::EngineStats) {
    gauge(
        o,
        "tether_history_streams",
        "Streams (client ids and channels) held.",
        s.streams,
    );
    gauge(
        o,
        "tether_history_messages",
        "Messages stored over all streams.",
        s.stored_messages,
    );
    gauge(
        o,
        "tether_history_bytes",
        "Bytes of stored messages.",
        s.stored_bytes,
    );
    counter(
        o,
        "tether_history_evicted_streams_total",
        "Streams dropped as least recently used (history_max_streams).",
        s.evicted_streams,
    );
    gauge(
        o,
        "tether_idempotency_keys",
        "Idempotency keys held.",
        s.idempotency_keys,
    );
}

/// The webhook side's share of `/metrics`.
pub fn render_webhooks(o: &mut String, s: &WebhookStats) {
    use std::sync::atomic::Ordering::Relaxed;
    counter(
        o,
        "tether_webhook_events_total",
        "Webhook events queued.",
        s.queued.load(Relaxed),
    );
    counter(
        o,
        "tether_webhook_delivered_total",
        "Webhook events the receiver accepted (2xx).",
        s.delivered.load(Relaxed),
    );
    counter(
        o,
        "tether_webhook_failed_attempts_total",
        "Webhook attempts that failed (error, timeout or non-2xx).",
        s.failed_attempts.load(Relaxed),
    );
    family(
        o,
        "tether_webhook_dropped_total",
        "Webhook events dropped: queue full, or retried past webhook_retry_for.",
        &["reason"],
        [
            (vec!["queue_full".to_string()], s.dropped_full.load(Relaxed)),
            (vec!["expired".to_string()], s.dropped_expired.load(Relaxed)),
        ]
        .into_iter(),
    );
    gauge(
        o,
        "tether_webhook_pending",
        "Webhook events queued and not yet delivered or dropped.",
        s.pending(),
    );
}

pub(crate) fn gauge(o: &mut String, name: &str, help: &str, v: u64) {
    let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
}

pub(crate) fn counter(o: &mut String, name: &str, help: &str, v: u64) {
    let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
}

fn family(
    o: &mut String,
    name: &str,
    help: &str,
    labels: &[&str],
    rows: impl Iterator<Item = (Vec<String>, u64)>,
) {
    let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter");
    for (values, v) in rows {
        let pairs: Vec<String> = labels
            .iter()
            .zip(values)
            .map(|(l, val)| format!("{l}=\"{}\"", val.replace('\\', "\\\\").replace('"', "\\\"")))
            .collect();
        let _ = writeln!(o, "{name}{{{}}} {v}", pairs.join(","));
    }
}
