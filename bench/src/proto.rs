//! What the parent and its worker processes say to each other. The parent passes a
//! [`WorkerSpec`] as one JSON argument and later one-word commands on stdin (`go`, `stop`);
//! each worker answers with [`Event`] JSON lines on stdout.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::stats::{Counts, Histogram, add_counts};

/// Which behaviour a worker runs.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Hold idle heartbeating connections.
    Hold,
    /// Receive numbered pushes and account for them.
    Fanout,
    /// Silent raw clients plus healthy heartbeating ones.
    Evict,
    /// Connect, drop all, reconnect all.
    Storm,
    /// Connect-load: new clients in paced batches, one phase per `go`.
    Probe,
    /// Storm with --migrate-to: follow node A's shutdown, reconnect to node B.
    Migrate,
    /// Channel presence: subscribers of one channel (`presence`), or clients that join and
    /// leave channels at random while one observer per channel checks `join` / `leave`
    /// (`lobby`).
    Lobby,
}

/// Migrate: where wave 2 goes (node B) and how a client treats node A's `shutdown` hint.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Migration {
    /// Node B's address.
    pub addr: SocketAddr,
    /// Node B's `Host` header value.
    pub host: String,
    /// Node B's upgrade path.
    pub path: String,
    /// Wait `reconnect_after_ms` of a `shutdown` message before reconnecting.
    pub honor_hint: bool,
}

/// One worker's share of the load.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkerSpec {
    /// Scenario behaviour.
    pub kind: Kind,
    /// Worker number (for messages).
    pub index: u32,
    /// Server address.
    pub addr: SocketAddr,
    /// `Host` header value.
    pub host: String,
    /// Upgrade path (client id is appended).
    pub path: String,
    /// Loopback address the client sockets bind to.
    pub source_ip: Ipv4Addr,
    /// Storm: the source address of wave 2 (fresh ports, not those in TIME_WAIT from wave 1).
    pub wave2_ip: Ipv4Addr,
    /// First client number: ids are `c<first>` ..
    pub first: u64,
    /// Number of clients in this worker.
    pub clients: u64,
    /// Evict: how many of `clients` (the first ones) stay silent.
    pub silent: u64,
    /// Most handshakes in flight at once.
    pub concurrency: u32,
    /// Per-attempt connect + handshake + welcome timeout.
    pub connect_timeout_ms: u64,
    /// Application heartbeat period; 0 = the `heartbeat_interval_ms` from `welcome`.
    pub heartbeat_ms: u64,
    /// Fanout: number of numbered messages.
    pub messages: u64,
    /// Evict: longest wait for one silent client's eviction; storm: deadline of one wave.
    pub max_wait_ms: u64,
    /// Evict: the server's reap interval, for flagging late evictions.
    pub reap_ms: u64,
    /// HS256 secret file: mint a token per client (the path, so the secret stays out of `ps`).
    pub token_secret: Option<PathBuf>,
    /// Lifetime of minted tokens, seconds.
    pub token_ttl_secs: u64,
    /// Probe: new clients per phase (`clients` holds both phases).
    pub per_phase: u64,
    /// Probe: clients connecting at once.
    pub batch: u64,
    /// Probe: least time between batch starts, ms.
    pub batch_interval_ms: u64,
    /// Migrate: node B and the hint policy; None in every other scenario.
    #[serde(default)]
    pub migration: Option<Migration>,
    /// Offer permessage-deflate and inflate what arrives compressed (`--compression`).
    #[serde(default)]
    pub compression: bool,
    /// Lobby: the presence channels (`<channel_prefix><k>`, k below this).
    #[serde(default)]
    pub channels: u64,
    /// Lobby: the channels' name prefix.
    #[serde(default)]
    pub channel_prefix: String,
    /// Lobby: mean time between a client's joins and leaves, ms; 0: every client subscribes
    /// to channel 0 and stays.
    #[serde(default)]
    pub churn_ms: u64,
}

impl WorkerSpec {
    /// The spec of a wave-2 connect: wave 2's source address (fresh ports, not those in
    /// TIME_WAIT from wave 1) and, when migrating, node B as the target.
    pub fn wave2(&self) -> WorkerSpec {
        let mut s = WorkerSpec {
            source_ip: self.wave2_ip,
            ..self.clone()
        };
        if let Some(m) = &self.migration {
            s.addr = m.addr;
            s.host.clone_from(&m.host);
            s.path.clone_from(&m.path);
        }
        s
    }
}

/// A line from a worker.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Event {
    /// Running totals, about five times a second.
    Progress {
        /// Clients connected (or, in evict, silent clients resolved).
        ok: u64,
        /// Failed attempts.
        failed: u64,
        /// Messages received (fanout).
        recv: u64,
    },
    /// A phase is complete; the worker waits for the next command.
    Phase {
        /// Phase name (`connected`, `wave1`, `wave2`).
        name: String,
        /// Figures so far.
        report: Box<Report>,
    },
    /// The worker finished.
    Done {
        /// Final figures.
        report: Box<Report>,
    },
    /// The worker cannot run at all.
    Fatal {
        /// Why.
        message: String,
    },
}

/// Figures of one worker (or, merged, of all). Times are Unix microseconds, 0 = unset.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Report {
    /// Clients that got their `welcome`.
    pub established: u64,
    /// Failed connection attempts by kind.
    pub failures: Counts,
    /// Clients that never connected.
    pub gave_up: u64,
    /// TCP connect start to `welcome` received.
    pub handshake_us: Histogram,
    /// Probe: TCP connect start to connected.
    pub tcp_us: Histogram,
    /// Probe: TCP connect start to `101` read.
    pub upgrade_us: Histogram,
    /// First connection attempt.
    pub start_us: u64,
    /// Last `welcome` received.
    pub end_us: u64,
    /// Connections ended by the server or the network while they should have stayed, by code.
    pub unexpected_closes: Counts,
    /// Heartbeats sent.
    pub heartbeats_sent: u64,
    /// `heartbeat_ack` received.
    pub acks: u64,
    /// Fanout: numbered messages received (with duplicates).
    pub received: u64,
    /// Fanout: distinct clients that received each sequence number.
    pub unique_per_seq: Vec<u64>,
    /// Fanout: repeated arrivals.
    pub duplicated: u64,
    /// Fanout: arrivals below an earlier one, per client.
    pub out_of_order: u64,
    /// Fanout: sequence numbers outside the run.
    pub out_of_range: u64,
    /// Fanout: receive time minus the send time carried in the message.
    pub latency_us: Histogram,
    /// Fanout: first numbered message received.
    pub first_recv_us: u64,
    /// Fanout: last numbered message received.
    pub last_recv_us: u64,
    /// Evict: silent clients ended by the server (close frame or TCP end).
    pub evicted: u64,
    /// Evict: last byte sent to close frame (or TCP end).
    pub evict_us: Histogram,
    /// Evict: how silent clients were ended, by close code or `tcp_end`/`reset`.
    pub evict_codes: Counts,
    /// Evict: silent clients still open at their deadline.
    pub not_evicted: u64,
    /// Evict: ended later than the advertised timeout + reap interval.
    pub late: u64,
    /// Evict: ended before the advertised timeout.
    pub early: u64,
    /// Evict: `heartbeat_timeout_ms` from `welcome` (the largest seen).
    pub advertised_timeout_ms: u64,
    /// Evict: healthy clients closed, by code.
    pub healthy_closed: Counts,
    /// Evict: ended later than timeout + reap counted from the client's last byte (the
    /// server's stamp may be up to one handshake later, so `late` counts from the welcome).
    pub late_from_last_byte: u64,
    /// CPU seconds the worker process used (the load generator shares the machine).
    pub cpu_secs: f64,
    /// Migrate: wave-2 reconnects in 100 ms bins since `go` (see [`crate::timeline`]).
    #[serde(default)]
    pub reconnects_per_100ms: Vec<u64>,
    /// Migrate: per client, `go` to its `welcome` from node B.
    #[serde(default)]
    pub migrate_us: Histogram,
    /// Migrate: clients node A sent `shutdown` with `reconnect_after_ms`.
    #[serde(default)]
    pub hinted: u64,
    /// Migrate: the `reconnect_after_ms` hints, in µs.
    #[serde(default)]
    pub hint_us: Histogram,
    /// Migrate: clients whose connection to node A ended without such a hint.
    #[serde(default)]
    pub just_closed: u64,
    /// Migrate: how the connections to node A ended (close code, `tcp_end`, `client_closed`
    /// after an honoured hint, `deadline` when node A never ended it).
    #[serde(default)]
    pub ended_by: Counts,
    /// Bytes the clients read off the wire so far (HTTP answers included).
    pub wire_bytes: u64,
    /// Messages that arrived compressed (permessage-deflate) so far.
    pub compressed: u64,
    /// Lobby: `join` / `leave` events the observers received.
    #[serde(default)]
    pub presence_events: u64,
    /// Lobby: a `join` for a client id already joined (a duplicate).
    #[serde(default)]
    pub presence_duplicates: u64,
    /// Lobby: a `leave` for a client id not joined (a duplicate leave, or a missed join).
    #[serde(default)]
    pub presence_unmatched: u64,
    /// Lobby: client ids still joined once every client left and the grace passed (missed
    /// leaves).
    #[serde(default)]
    pub presence_left_over: u64,
    /// Lobby: subscribes and unsubscribes the churning clients sent.
    #[serde(default)]
    pub churn_ops: u64,
}

fn min_set(a: u64, b: u64) -> u64 {
    match (a, b) {
        (0, x) | (x, 0) => x,
        (x, y) => x.min(y),
    }
}

impl Report {
    /// Adds another worker's figures to these.
    pub fn merge(&mut self, o: &Report) {
        self.established += o.established;
        add_counts(&mut self.failures, &o.failures);
        self.gave_up += o.gave_up;
        self.handshake_us.merge(&o.handshake_us);
        self.tcp_us.merge(&o.tcp_us);
        self.upgrade_us.merge(&o.upgrade_us);
        self.start_us = min_set(self.start_us, o.start_us);
        self.end_us = self.end_us.max(o.end_us);
        add_counts(&mut self.unexpected_closes, &o.unexpected_closes);
        self.heartbeats_sent += o.heartbeats_sent;
        self.acks += o.acks;
        self.received += o.received;
        if self.unique_per_seq.len() < o.unique_per_seq.len() {
            self.unique_per_seq.resize(o.unique_per_seq.len(), 0);
        }
        for (a, b) in self.unique_per_seq.iter_mut().zip(&o.unique_per_seq) {
            *a += b;
        }
        self.duplicated += o.duplicated;
        self.out_of_order += o.out_of_order;
        self.out_of_range += o.out_of_range;
        self.latency_us.merge(&o.latency_us);
        self.first_recv_us = min_set(self.first_recv_us, o.first_recv_us);
        self.last_recv_us = self.last_recv_us.max(o.last_recv_us);
        self.evicted += o.evicted;
        self.evict_us.merge(&o.evict_us);
        add_counts(&mut self.evict_codes, &o.evict_codes);
        self.not_evicted += o.not_evicted;
        self.late += o.late;
        self.early += o.early;
        self.advertised_timeout_ms = self.advertised_timeout_ms.max(o.advertised_timeout_ms);
        add_counts(&mut self.healthy_closed, &o.healthy_closed);
        self.late_from_last_byte += o.late_from_last_byte;
        self.cpu_secs += o.cpu_secs;
        crate::timeline::add(&mut self.reconnects_per_100ms, &o.reconnects_per_100ms);
        self.migrate_us.merge(&o.migrate_us);
        self.hinted += o.hinted;
        self.hint_us.merge(&o.hint_us);
        self.just_closed += o.just_closed;
        add_counts(&mut self.ended_by, &o.ended_by);
        self.wire_bytes += o.wire_bytes;
        self.compressed += o.compressed;
        self.presence_events += o.presence_events;
        self.presence_duplicates += o.presence_duplicates;
        self.presence_unmatched += o.presence_unmatched;
        self.presence_left_over += o.presence_left_over;
        self.churn_ops += o.churn_ops;
    }

    /// Seconds between the first attempt and the last `welcome`.
    pub fn connect_secs(&self) -> f64 {
        self.end_us.saturating_sub(self.start_us) as f64 / 1e6
    }
}

/// Merges reports of all workers.
pub fn merge_all<'a>(reports: impl IntoIterator<Item = &'a Report>) -> Report {
    let mut total = Report::default();
    for r in reports {
        total.merge(r);
    }
    total
}

/// Now as Unix microseconds.
pub fn unix_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_reports() {
        let mut a = Report {
            established: 2,
            start_us: 100,
            end_us: 200,
            unique_per_seq: vec![2, 1],
            ..Report::default()
        };
        a.handshake_us.record(10);
        let mut b = Report {
            established: 3,
            start_us: 50,
            end_us: 150,
            unique_per_seq: vec![3, 3, 3],
            ..Report::default()
        };
        b.handshake_us.record(30);
        b.failures.insert("refused".into(), 1);
        a.reconnects_per_100ms = vec![1, 0, 2];
        b.reconnects_per_100ms = vec![0, 4, 1, 0, 3];
        b.hinted = 2;
        b.ended_by.insert("1012".into(), 2);
        let m = merge_all([&a, &b]);
        assert_eq!(m.reconnects_per_100ms, vec![1, 4, 3, 0, 3]);
        assert_eq!((m.hinted, m.ended_by["1012"]), (2, 2));
        assert_eq!(m.established, 5);
        assert_eq!((m.start_us, m.end_us), (50, 200));
        assert_eq!(m.unique_per_seq, vec![5, 4, 3]);
        assert_eq!(m.handshake_us.count(), 2);
        assert_eq!(m.failures["refused"], 1);
        assert!((m.connect_secs() - 0.00015).abs() < 1e-9);
        let line = serde_json::to_string(&Event::Done {
            report: Box::new(m),
        })
        .unwrap();
        match serde_json::from_str::<Event>(&line).unwrap() {
            Event::Done { report } => {
                assert_eq!(report.handshake_us.max(), 30);
                assert_eq!(report.reconnects_per_100ms, vec![1, 4, 3, 0, 3]);
            }
            other => panic!("{other:?}"),
        }
    }
}
