//! The command line: one subcommand per scenario, the options they share, and the hidden
//! `worker` subcommand the parent re-runs itself with.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use crate::target::parse_duration;

/// Arguments of `tether-bench`.
#[derive(clap::Parser, Debug)]
#[command(name = "tether-bench", version, about, long_about)]
pub struct BenchArgs {
    /// Scenario to run.
    #[command(subcommand)]
    pub scenario: Box<Scenario>,
}

/// The scenarios.
#[derive(clap::Subcommand, Debug)]
pub enum Scenario {
    /// Open N connections, heartbeat, hold: connect rate, handshake latency, false evictions,
    /// server memory per connection (with --server-pid).
    Hold(HoldArgs),
    /// N clients, M numbered broadcasts (or --push) at R/s: loss, duplicates, order, latency.
    Fanout(FanoutArgs),
    /// S silent clients and H healthy ones: time to eviction, healthy clients wrongly closed.
    Evict(EvictArgs),
    /// Connect N, drop all at once, reconnect all: accept rate of both waves; with
    /// --migrate-to, stop the node instead and time the reconnects to another one.
    Storm(StormArgs),
    /// N clients with history on, pushes to each at R/s while they drop and resume at random:
    /// lost / duplicated / out of order, resume latency, server memory per connection.
    Resume(ResumeArgs),
    /// Hold N, then connect M more in batches, idle and while broadcasting: handshake latency.
    ConnectLoad(ConnectLoadArgs),
    /// N subscribers of one channel, then GET /api/v1/channels/{c}/presence timed: p50/p99,
    /// answer size.
    Presence(PresenceArgs),
    /// N clients move between K presence channels at random for T; one observer per channel
    /// checks every `join` / `leave` arrives exactly once (server: presence_channels = prefix*).
    Lobby(LobbyArgs),
    /// N clients; the same N pushes as single API calls on one keep-alive connection, then as
    /// one `POST /api/v1/batch`: throughput of each and the ratio.
    Batch(BatchArgs),
    /// Internal: one worker process of a scenario.
    #[command(hide = true)]
    Worker {
        /// The worker's share, as JSON.
        #[arg(long)]
        spec: String,
    },
}

/// Options every scenario takes.
#[derive(clap::Args, Debug, Clone)]
pub struct Common {
    /// WebSocket URL of the server (loopback 127.0.0.0/8 only); several, comma-separated, for
    /// the nodes of a cluster: worker i connects to URL i mod count.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    pub url: String,
    /// HTTP API base, e.g. http://127.0.0.1:8080 [default: derived from the first --url];
    /// several, comma-separated: message i goes to base i mod count (fanout).
    #[arg(long)]
    pub api: Option<String>,
    /// API key sent as `Authorization: Bearer <key>`.
    #[arg(long, env = "TETHER_BENCH_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Also write the results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Server process id: sample its RSS and CPU time from /proc; several, comma-separated,
    /// for a cluster's nodes (figures are summed).
    #[arg(long, value_name = "PID", value_delimiter = ',')]
    pub server_pid: Vec<u32>,
    /// Worker processes [default: clients / --per-worker, rounded up].
    #[arg(long)]
    pub workers: Option<u64>,
    /// Most connections per worker process (at most 9000).
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=9000))]
    pub per_worker: u64,
    /// Handshakes in flight per worker.
    #[arg(long, default_value_t = 512)]
    pub concurrency: u32,
    /// Timeout of one connect + upgrade + welcome.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// Source address of worker 0; worker i binds its sockets to this address + i.
    #[arg(long, default_value = "127.0.0.2")]
    pub source: Ipv4Addr,
    /// No progress line on stderr.
    #[arg(long)]
    pub quiet: bool,
    /// HS256 secret file of a server with auth on: every client connects with `?token=<JWT>`
    /// whose `sub` is its client id (minted up front, outside the timed connect phase).
    #[arg(long, value_name = "FILE")]
    pub token_secret: Option<PathBuf>,
    /// Lifetime of the minted tokens (their `exp` is now + this).
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub token_ttl: Duration,
    /// Offer permessage-deflate (`client_max_window_bits`) on every upgrade and inflate what
    /// arrives compressed; the reports count bytes read off the wire either way.
    #[arg(long)]
    pub compression: bool,
}

/// `tether-bench hold`.
#[derive(clap::Args, Debug)]
pub struct HoldArgs {
    /// Target, output and worker options.
    #[command(flatten)]
    pub common: Common,
    /// Connections to open (client ids c0..cN-1).
    #[arg(short = 'n', long, default_value_t = 1000)]
    pub clients: u64,
    /// Application heartbeat period.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub heartbeat: Duration,
    /// How long to hold once all are connected.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub hold: Duration,
}

/// `tether-bench fanout`.
#[derive(clap::Args, Debug)]
pub struct FanoutArgs {
    /// Target, output and worker options.
    #[command(flatten)]
    pub common: Common,
    /// Receiving clients.
    #[arg(short = 'n', long, default_value_t = 1000)]
    pub clients: u64,
    /// Messages to send.
    #[arg(short = 'm', long, default_value_t = 50)]
    pub messages: u64,
    /// Messages per second.
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Size of each message's `data` in bytes.
    #[arg(long, default_value_t = 100)]
    pub bytes: usize,
    /// POST /api/v1/push to one client id per message (c<i mod N>) instead of broadcasting.
    #[arg(long)]
    pub push: bool,
    /// With --push: each message to a client id picked at random (the same sequence every run).
    #[arg(long)]
    pub random_targets: bool,
    /// Hold the connected clients this long (heartbeating) before the first message.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub idle: Duration,
    /// Fill `data` with game-state-like JSON (players with varied numbers) instead of a run of
    /// `x`, so that compression meets a realistic ratio.
    #[arg(long)]
    pub json_data: bool,
    /// Application heartbeat period of the clients.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub heartbeat: Duration,
    /// Longest wait for the last deliveries after the last send.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
}

/// `tether-bench evict`.
#[derive(clap::Args, Debug)]
pub struct EvictArgs {
    /// Target, output and worker options.
    #[command(flatten)]
    pub common: Common,
    /// Clients that go silent after the upgrade.
    #[arg(long, default_value_t = 100)]
    pub silent: u64,
    /// Healthy clients (auto-pong, heartbeats).
    #[arg(long, default_value_t = 100)]
    pub healthy: u64,
    /// The server's reap interval in ms: evictions later than timeout + this are flagged.
    #[arg(long, default_value_t = 1000)]
    pub reap_ms: u64,
    /// Heartbeat period of healthy clients [default: heartbeat_interval_ms from welcome].
    #[arg(long, value_parser = parse_duration)]
    pub heartbeat: Option<Duration>,
    /// Longest wait for one eviction [default: 2 × advertised timeout + reap + 2 s].
    #[arg(long, value_parser = parse_duration)]
    pub max_wait: Option<Duration>,
}

/// `tether-bench storm`.
#[derive(clap::Args, Debug)]
pub struct StormArgs {
    /// Target, output and worker options.
    #[command(flatten)]
    pub common: Common,
    /// Clients in each wave.
    #[arg(short = 'n', long, default_value_t = 1000)]
    pub clients: u64,
    /// Deadline of one wave; failed attempts are retried (with backoff) until then.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub wave_timeout: Duration,
    /// Migration: on `go`, SIGTERM --stop-pid (node A at --url, e.g. in `restart` mode); each
    /// client waits until node A ends its connection, then reconnects to this URL (node B).
    #[arg(long, value_name = "URL", requires = "stop_pid")]
    pub migrate_to: Option<String>,
    /// Migration: process id of node A, the server at --url, sent SIGTERM on `go`.
    #[arg(long, value_name = "PID", requires = "migrate_to")]
    pub stop_pid: Option<u32>,
    /// Migration: a client told `shutdown` with `reconnect_after_ms` waits that long (closing
    /// its socket then, if node A has not) before reconnecting; without it, it reconnects as
    /// soon as node A closes its connection.
    #[arg(long, requires = "migrate_to")]
    pub honor_hint: bool,
}

/// `tether-bench resume`.
#[derive(clap::Args, Debug)]
pub struct ResumeArgs {
    /// Target, output and worker options (this scenario runs in one process).
    #[command(flatten)]
    pub common: Common,
    /// Clients (client ids resume<pid>-0 ..).
    #[arg(short = 'n', long, default_value_t = 1000)]
    pub clients: u64,
    /// Pushes per second to each client id.
    #[arg(long, default_value_t = 0.5)]
    pub rate: f64,
    /// How long to push.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Mean time a connection lives before the client drops it and resumes.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub drop_every: Duration,
    /// Longest wait for the last deliveries after the last push.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
}

/// `tether-bench batch`.
#[derive(clap::Args, Debug)]
pub struct BatchArgs {
    /// Target and output options (this scenario runs in one process).
    #[command(flatten)]
    pub common: Common,
    /// Clients, each its own client id (at most 1000: one batch).
    #[arg(short = 'n', long, default_value_t = 1000)]
    pub clients: u64,
    /// Repetitions of both phases; the medians are reported.
    #[arg(long, default_value_t = 5)]
    pub repeat: u64,
    /// Size of each push's padding in `data`, in bytes.
    #[arg(long, default_value_t = 100)]
    pub bytes: usize,
}

/// `tether-bench connect-load`.
#[derive(clap::Args, Debug)]
pub struct ConnectLoadArgs {
    /// Target, output and worker options.
    #[command(flatten)]
    pub common: Common,
    /// Connections held throughout (client ids c0..cN-1).
    #[arg(short = 'n', long, default_value_t = 1000)]
    pub clients: u64,
    /// New clients connected in each phase (idle, then loaded).
    #[arg(short = 'm', long, default_value_t = 100)]
    pub new_clients: u64,
    /// New clients connecting at once; a batch starts when the last one has finished and
    /// --batch-interval has passed since its start.
    #[arg(short = 'b', long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub batch: u64,
    /// Least time from one batch's start to the next: spreads a phase over many broadcasts.
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    pub batch_interval: Duration,
    /// Broadcasts per second (POST /api/v1/broadcast, to everyone) during the loaded phase.
    #[arg(long, default_value_t = 3.0)]
    pub broadcast_rate: f64,
    /// Size of each broadcast's `data` in bytes.
    #[arg(long, default_value_t = 100)]
    pub bytes: usize,
    /// Broadcasting before the loaded phase starts, and the pause after closing the idle
    /// phase's clients, so each phase meets a settled server.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub settle: Duration,
    /// Application heartbeat period of the held clients.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub heartbeat: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        scenario: Scenario,
    }

    #[test]
    fn parses_scenarios() {
        let cli = Cli::try_parse_from([
            "bench",
            "hold",
            "-n",
            "19000",
            "--hold",
            "10m",
            "--heartbeat",
            "30s",
            "--server-pid",
            "42",
            "--url",
            "ws://127.0.0.1:9000/ws",
        ])
        .unwrap();
        let Scenario::Hold(h) = cli.scenario else {
            panic!("not hold")
        };
        assert_eq!(
            (h.clients, h.hold.as_secs(), h.common.server_pid),
            (19000, 600, vec![42])
        );
        assert_eq!(h.common.per_worker, 5000);

        let cli =
            Cli::try_parse_from(["bench", "fanout", "-m", "5", "--push", "--rate", "2.5"]).unwrap();
        let Scenario::Fanout(f) = cli.scenario else {
            panic!("not fanout")
        };
        assert!(f.push && f.messages == 5 && f.rate == 2.5 && f.bytes == 100);

        let cli =
            Cli::try_parse_from(["bench", "evict", "--silent", "3", "--reap-ms", "100"]).unwrap();
        let Scenario::Evict(e) = cli.scenario else {
            panic!("not evict")
        };
        assert_eq!(
            (e.silent, e.healthy, e.reap_ms, e.heartbeat),
            (3, 100, 100, None)
        );

        let cli = Cli::try_parse_from([
            "bench",
            "connect-load",
            "-n",
            "18500",
            "-m",
            "500",
            "--broadcast-rate",
            "3",
            "--token-secret",
            "/tmp/s",
        ])
        .unwrap();
        let Scenario::ConnectLoad(l) = cli.scenario else {
            panic!("not connect-load")
        };
        assert_eq!((l.clients, l.new_clients, l.batch), (18500, 500, 8));
        assert_eq!(l.broadcast_rate, 3.0);
        assert_eq!(l.common.token_ttl.as_secs(), 3600);
        assert!(l.common.token_secret.is_some());
        assert!(Cli::try_parse_from(["bench", "connect-load", "-b", "0"]).is_err());

        let cli = Cli::try_parse_from([
            "bench",
            "storm",
            "--migrate-to",
            "ws://127.0.0.1:9001/ws",
            "--stop-pid",
            "77",
            "--honor-hint",
        ])
        .unwrap();
        let Scenario::Storm(m) = cli.scenario else {
            panic!("not storm")
        };
        assert_eq!(m.migrate_to.as_deref(), Some("ws://127.0.0.1:9001/ws"));
        assert_eq!((m.stop_pid, m.honor_hint), (Some(77), true));
        let Scenario::Storm(plain) = Cli::try_parse_from(["bench", "storm"]).unwrap().scenario
        else {
            panic!("not storm")
        };
        assert!(plain.migrate_to.is_none() && !plain.honor_hint);
        // Each migration flag needs the others it depends on.
        assert!(
            Cli::try_parse_from(["bench", "storm", "--migrate-to", "ws://127.0.0.1:1/ws"]).is_err()
        );
        assert!(Cli::try_parse_from(["bench", "storm", "--stop-pid", "7"]).is_err());
        assert!(Cli::try_parse_from(["bench", "storm", "--honor-hint"]).is_err());

        assert!(Cli::try_parse_from(["bench", "hold", "--per-worker", "9001"]).is_err());
        assert!(Cli::try_parse_from(["bench", "hold", "--hold", "soon"]).is_err());
        assert!(Cli::try_parse_from(["bench", "nosuch"]).is_err());
    }
}

/// `tether-bench presence`.
#[derive(clap::Args, Debug)]
pub struct PresenceArgs {
    /// Target, output and worker options.
    #[command(flatten)]
    pub common: Common,
    /// Subscribers of the channel.
    #[arg(short = 'n', long, default_value_t = 1000)]
    pub clients: u64,
    /// Channel name prefix (the channel is `<prefix>0`).
    #[arg(long, default_value = "bench.presence.")]
    pub channel: String,
    /// Presence queries to time, one after another.
    #[arg(long, default_value_t = 200)]
    pub requests: u64,
    /// `?limit=` of each query (client ids in the answer).
    #[arg(long, default_value_t = 1000)]
    pub limit: u64,
}

/// `tether-bench lobby`.
#[derive(clap::Args, Debug)]
pub struct LobbyArgs {
    /// Target, output and worker options.
    #[command(flatten)]
    pub common: Common,
    /// Clients, the first `--channels` of them observers (one per channel).
    #[arg(short = 'n', long, default_value_t = 1000)]
    pub clients: u64,
    /// Presence channels (`<prefix>0` ..).
    #[arg(short = 'k', long, default_value_t = 20)]
    pub channels: u64,
    /// Channel name prefix; the server needs `presence_channels = "<prefix>*"`.
    #[arg(long, default_value = "lobby.")]
    pub prefix: String,
    /// How long the clients join and leave.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Mean time between one client's steps (a join, then a leave, then a join elsewhere, …).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub churn: Duration,
    /// After everyone left: how long to wait before counting (more than the server's
    /// presence_grace plus a heartbeat round).
    #[arg(long, default_value = "8s", value_parser = parse_duration)]
    pub settle: Duration,
}
