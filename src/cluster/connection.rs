//! The node's way to Redis, whatever stands behind it (docs/cluster.md): one server
//! (`redis_url`), a Sentinel-managed master (`redis_sentinels`) or a Redis Cluster
//! (`redis_cluster_nodes`). Route, presence, inbox and
//! the Redis engine take a [`Conn`] from [`Link::cmd`] and issue commands and scripts on it
//! without knowing which; subscriptions go through [`Link::subscribe`].
//!
//! Behind Sentinel, the crate (`redis::sentinel`) finds the master, but a `ConnectionManager`
//! keeps redialling the address it was built with (redis-rs issue #1438). So every failed call
//! ([`Link::trouble`]) asks the sentinels again, at most one lookup at a time; when they name
//! another master, fresh managers for it replace the old ones. The upkeep then sees Redis back
//! and resubscribes and rewrites presence, as after any outage.
//!
//! On a Redis Cluster (`sharded.rs`) one `ClusterConnection` (the crate's `cluster-async`, RESP3)
//! carries commands and subscriptions: it routes each command to its slot's master, follows `MOVED`
//! / `ASK` and shard failovers, and resubscribes sharded topics where their slot now lives. A topic
//! with a hash tag is sharded (`SSUBSCRIBE`, one command per topic, as each may live on another
//! shard); the untagged `<prefix>:all` is a plain `SUBSCRIBE`, which reaches every node.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use parking_lot::Mutex;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{
    Client, Cmd, ConnectionAddr, ErrorKind, IntoConnectionInfo, Pipeline, ProtocolVersion,
    PushInfo, RedisError, RedisFuture, ServerErrorKind, TlsMode, Value,
};

use super::CALL_TIMEOUT;
use crate::config::sentinel_url;

/// Where the cluster's Redis is, from the configuration (exactly one of the keys is set).
#[derive(Debug, Clone)]
pub enum Topology {
    /// `redis_url`: one server.
    Single(String),
    /// `redis_sentinels` + `redis_sentinel_master`: the master the sentinels name.
    Sentinel {
        /// Sentinel addresses, `host:port` or `redis[s]://[user:pass@]host:port`.
        sentinels: Vec<String>,
        /// The monitored master's name.
        master: String,
    },
    /// `redis_cluster_nodes`: seed nodes of a Redis Cluster.
    Cluster(Vec<String>),
}

impl Topology {
    /// The topology the configuration names, if any.
    pub fn from_config(config: &crate::config::Config) -> Option<Topology> {
        if let Some(url) = &config.redis_url {
            return Some(Topology::Single(url.0.clone()));
        }
        if !config.redis_sentinels.is_empty() {
            return Some(Topology::Sentinel {
                sentinels: config.redis_sentinels.clone(),
                master: config.redis_sentinel_master.clone().unwrap_or_default(),
            });
        }
        if !config.redis_cluster_nodes.is_empty() {
            return Some(Topology::Cluster(config.redis_cluster_nodes.clone()));
        }
        None
    }

    /// Whether keys and topics are spread over shards: scripts then touch one hash tag and
    /// route over sharded pub/sub (see `keys.rs`).
    pub fn sharded(&self) -> bool {
        matches!(self, Topology::Cluster(_))
    }

    /// Whether a failover can lose acknowledged writes, so streams must notice a master
    /// change (see `scripts::append`).
    pub fn replicated(&self) -> bool {
        !matches!(self, Topology::Single(_))
    }
}

/// Hands a subscriber connection's pushes to the inbox.
pub type PushFn = Arc<dyn Fn(PushInfo) + Send + Sync>;

/// A command connection: a cheap clone. Commands on a node that knows no master yet fail as
/// refused (certainly not run), which callers treat as Redis unreachable.
#[derive(Clone)]
pub struct Conn(Way);

/// What a [`Conn`] talks through.
#[derive(Clone)]
enum Way {
    /// No master known yet (behind Sentinel, before the first lookup).
    Nowhere,
    Manager(ConnectionManager),
    Cluster(ClusterConnection),
}

fn no_master() -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::ConnectionRefused,
        "no Redis master known yet (asking the sentinels)",
    ))
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.0 {
            Way::Manager(m) => m.req_packed_command(cmd),
            Way::Cluster(c) => c.req_packed_command(cmd),
            Way::Nowhere => Box::pin(async { Err(no_master()) }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.0 {
            Way::Manager(m) => m.req_packed_commands(pipeline, offset, count),
            Way::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            Way::Nowhere => Box::pin(async { Err(no_master()) }),
        }
    }

    fn get_db(&self) -> i64 {
        match &self.0 {
            Way::Manager(m) => m.get_db(),
            _ => 0,
        }
    }
}

/// The two managers of one master: commands, and subscriptions whose pushes reach the inbox.
struct Pair {
    cmd: ConnectionManager,
    sub: ConnectionManager,
    /// The master's address, to tell a failover from a reconnect to the same master.
    addr: String,
}

/// The node's connections, following the master as the topology moves it.
pub struct Link {
    current: ArcSwapOption<Pair>,
    /// Bumped each time the managers are replaced: the upkeep then resubscribes and rewrites
    /// presence even if no call of its own failed.
    generation: AtomicU64,
    sentinel: Option<Sentinel>,
    /// On a Redis Cluster: the one connection (its pushes reach `push` too).
    cluster: Option<ClusterConnection>,
    push: PushFn,
}

/// Asking the sentinels where the master is.
struct Sentinel {
    client: tokio::sync::Mutex<SentinelClient>,
    /// A lookup is running.
    busy: AtomicBool,
    /// When the last lookup began, so a storm of failed calls asks once per `LOOKUP_GAP`.
    last: Mutex<Option<Instant>>,
}

/// Least time between two sentinel lookups.
const LOOKUP_GAP: Duration = Duration::from_millis(200);

fn managers() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(500)))
        .set_response_timeout(Some(CALL_TIMEOUT))
        .set_number_of_retries(2)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_secs(1))
}

/// Lazy managers for the server at `info`; nothing is dialled until the first call.
fn pair(info: redis::ConnectionInfo, push: &PushFn) -> Result<Pair, RedisError> {
    let addr = info.addr().to_string();
    let resp3 = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    let sub_info = info.clone().set_redis_settings(resp3);
    let cmd = ConnectionManager::new_lazy_with_config(Client::open(info)?, managers())?;
    let push = Arc::clone(push);
    let sub = ConnectionManager::new_lazy_with_config(
        Client::open(sub_info)?,
        managers()
            .set_push_sender(move |info| {
                push(info);
                Ok::<(), ()>(())
            })
            .set_automatic_resubscription(),
    )?;
    Ok(Pair { cmd, sub, addr })
}

impl Link {
    /// Connections for `topology`, lazily; errors name the key at fault.
    pub fn new(topology: &Topology, push: PushFn) -> Result<Link, String> {
        match topology {
            Topology::Single(url) => {
                let bad = |e: RedisError| format!("redis_url: {e}");
                let info = url.as_str().into_connection_info().map_err(bad)?;
                let pair = pair(info, &push).map_err(bad)?;
                Ok(Link {
                    current: ArcSwapOption::from_pointee(pair),
                    generation: AtomicU64::new(0),
                    sentinel: None,
                    cluster: None,
                    push,
                })
            }
            Topology::Cluster(nodes) => {
                let con = super::sharded::connection(nodes, &push)?;
                Ok(Link {
                    current: ArcSwapOption::empty(),
                    generation: AtomicU64::new(0),
                    sentinel: None,
                    cluster: Some(con),
                    push,
                })
            }
            Topology::Sentinel { sentinels, master } => {
                let bad = |e: RedisError| format!("redis_sentinels: {e}");
                let urls: Vec<String> = sentinels.iter().map(|s| sentinel_url(s)).collect();
                let first = urls
                    .first()
                    .ok_or("redis_sentinels: empty")?
                    .as_str()
                    .into_connection_info()
                    .map_err(bad)?;
                // The master is reached with the first sentinel's scheme and credentials.
                let tls = match first.addr() {
                    ConnectionAddr::TcpTls { insecure, .. } => Some(if *insecure {
                        TlsMode::Insecure
                    } else {
                        TlsMode::Secure
                    }),
                    _ => None,
                };
                let mut node = SentinelNodeConnectionInfo::default()
                    .set_redis_connection_info(first.redis_settings().clone());
                if let Some(tls) = tls {
                    node = node.set_tls_mode(tls);
                }
                let client = SentinelClient::build(
                    urls,
                    master.as_str(),
                    Some(node),
                    SentinelServerType::Master,
                )
                .map_err(bad)?;
                Ok(Link {
                    current: ArcSwapOption::empty(),
                    generation: AtomicU64::new(0),
                    sentinel: Some(Sentinel {
                        client: tokio::sync::Mutex::new(client),
                        busy: AtomicBool::new(false),
                        last: Mutex::new(None),
                    }),
                    cluster: None,
                    push,
                })
            }
        }
    }

    /// How many times the managers were replaced (a new master).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// A command connection to the current master.
    pub fn cmd(&self) -> Conn {
        if let Some(c) = &self.cluster {
            return Conn(Way::Cluster(c.clone()));
        }
        Conn(match self.current.load().as_ref() {
            Some(p) => Way::Manager(p.cmd.clone()),
            None => Way::Nowhere,
        })
    }

    /// Subscribes the subscriber connection to `topics`.
    pub async fn subscribe(&self, topics: Vec<String>) -> Result<(), RedisError> {
        if let Some(c) = &self.cluster {
            return super::sharded::on_shards(c, topics, true).await;
        }
        let Some(mut sub) = self.current.load().as_ref().map(|p| p.sub.clone()) else {
            return Err(no_master());
        };
        redis::cmd("PING").query_async::<()>(&mut sub).await?;
        sub.subscribe(topics).await
    }

    /// Unsubscribes the subscriber connection from `topics`.
    pub async fn unsubscribe(&self, topics: Vec<String>) -> Result<(), RedisError> {
        if let Some(c) = &self.cluster {
            return super::sharded::on_shards(c, topics, false).await;
        }
        let Some(mut sub) = self.current.load().as_ref().map(|p| p.sub.clone()) else {
            return Err(no_master());
        };
        sub.unsubscribe(topics).await
    }

    /// A call failed with `e` (None: it timed out). Behind Sentinel the master may have moved:
    /// ask the sentinels again, in the background, unless a lookup is running or just ran.
    pub fn trouble(self: &Arc<Self>, e: Option<&RedisError>) {
        let Some(s) = &self.sentinel else { return };
        let moved = match e {
            None => true,
            Some(e) => {
                e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.is_timeout()
                    || matches!(e.kind(), ErrorKind::Server(ServerErrorKind::ReadOnly))
            }
        };
        if !moved {
            return;
        }
        {
            let mut last = s.last.lock();
            if last.is_some_and(|t| t.elapsed() < LOOKUP_GAP) {
                return;
            }
            if s.busy.swap(true, Ordering::AcqRel) {
                return;
            }
            *last = Some(Instant::now());
        }
        let link = Arc::clone(self);
        tokio::spawn(async move {
            link.lookup().await;
            if let Some(s) = &link.sentinel {
                s.busy.store(false, Ordering::Release);
            }
        });
    }

    /// Asks the sentinels for the master; a different one than today replaces the managers.
    async fn lookup(&self) {
        let Some(s) = &self.sentinel else { return };
        let found = {
            let mut client = s.client.lock().await;
            tokio::time::timeout(CALL_TIMEOUT, client.async_get_client()).await
        };
        let client = match found {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                log::debug!("sentinels name no reachable master yet: {e}");
                return;
            }
            Err(_) => {
                log::debug!("sentinels did not answer within {CALL_TIMEOUT:?}");
                return;
            }
        };
        let info = client.get_connection_info().clone();
        let addr = info.addr().to_string();
        let old = self.current.load_full();
        if old.as_ref().is_some_and(|p| p.addr == addr) {
            return;
        }
        match pair(info, &self.push) {
            Ok(p) => {
                match &old {
                    Some(o) => log::warn!(
                        "redis: the sentinels moved the master from {} to {addr}",
                        o.addr
                    ),
                    None => log::info!("redis: the sentinels name {addr} as master"),
                }
                // The old managers go when their last clone does; their subscriptions with
                // them, so nothing arrives twice through a demoted master.
                self.current.store(Some(Arc::new(p)));
                self.generation.fetch_add(1, Ordering::AcqRel);
            }
            Err(e) => log::warn!("redis: cannot use the master at {addr}: {e}"),
        }
    }

    /// Behind Sentinel: looks the master up once (at start, bounded by `CALL_TIMEOUT`), so the
    /// first heartbeat finds it rather than warn that Redis is unreachable.
    pub async fn first_lookup(&self) {
        let Some(s) = &self.sentinel else { return };
        if self.current.load().is_none() && !s.busy.swap(true, Ordering::AcqRel) {
            *s.last.lock() = Some(Instant::now());
            self.lookup().await;
            s.busy.store(false, Ordering::Release);
        }
    }
}
