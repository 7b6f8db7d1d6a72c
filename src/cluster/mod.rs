//! The cluster (docs/protocol.md §9): tether nodes that share one Redis behave as one big node.
//!
//! - **Routing.** Each node listens on its own topic (`<prefix>:to:<node>`), on `<prefix>:all`, and
//!   on a channel's topic only while it has local subscribers. A push to a client id goes, in one
//!   Lua step, to the nodes its presence lists; a publish to the channel's topic; so a node only
//!   sees messages it has a recipient for. On a Redis Cluster the topics carry hash tags and a node
//!   also listens on the topic of each client id it holds, so a push's step `SPUBLISH`es once on
//!   its client's shard (`keys.rs`, `shard_presence.rs`). Receivers answer with their delivery
//!   counts and the origin sums what arrives within `cluster_reply_timeout` (`partial` otherwise).
//! - **Presence.** One writer task per node keeps `<prefix>:{c:<id>}:p` (node → sessions) equal
//!   to the registry, in batches; a session that opens waits for its entry, so a push sent
//!   once its `welcome` arrived reaches it from any node. Nodes heartbeat into `<prefix>:nodes`;
//!   the first survivor to see one silent past `node_ttl` clears its presence.
//! - **Streams** live in Redis (the Redis engine, `engine/redis.rs`, on this connection), so a
//!   client resumes on any node.
//! - **Failure.** Every Redis call is bounded in time and fails as
//!   [`EngineError::Unavailable`]; callers then deliver locally and answer `partial`. The
//!   upkeep task marks the node degraded, and once Redis answers again it resubscribes and
//!   rewrites its presence; nothing needs a restart.
//! - **Trust.** Every key and topic is under `redis_prefix` ([`keys`]); with `cluster_secret`
//!   every message is signed and checked ([`sign`]), and replies go only to listed nodes.
//!
//! Files: `Cluster` here; `connection.rs`, the way to Redis for each topology; `route.rs`, requests
//! to other nodes and their answers; `presence.rs`, the presence writer, the upkeep and presence
//! queries; `inbox.rs`, what arrives; `views.rs`, shared dashboard samples and metrics; `keys.rs`,
//! `scripts.rs`, `wire.rs`, `sign.rs`, `replier.rs`: keys, Lua, the message format and its
//! signature, answers; `control.rs`, orders for a client id's sessions, remembered server
//! subscriptions and blocks (docs/protocol.md §14); `sharded.rs`, `shard_presence.rs`,
//! `shard_scripts.rs` and `resubscribe.rs`, what a Redis Cluster needs besides (its connection,
//! presence one hash tag per step, topics dropped by a moved slot subscribed again). It may use
//! the registry, `stream`'s vocabulary, webhooks, outboxes and the bottom; never `engine`, whose
//! Redis engine (`engine/redis.rs`) is built on this connection, nor `delivery` and `state`,
//! which sit above it.
//!
//! Crate: `redis` (redis-rs) with its `ConnectionManager`: well kept, tokio-native, reconnects
//! with backoff by itself and, on RESP3, re-subscribes and hands pub/sub messages to a callback
//! without a second task hop; its `sentinel` module finds a Sentinel-managed master
//! (`connection.rs` follows it when it moves), and its `cluster-async` talks to a Redis Cluster.

mod channel_scripts;
mod channels;
mod connection;
mod control;
mod inbox;
mod keys;
mod presence;
mod replier;
mod resubscribe;
mod route;
mod scripts;
mod shard_presence;
mod shard_scripts;
mod sharded;
pub mod sign;
mod views;
pub mod wire;

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use redis::RedisError;
use tokio::sync::{Notify, mpsc, oneshot};

use crate::clock::Clock;
use crate::config::Config;
use crate::registry::Registry;
use crate::shutdown::AbortOnDrop;
use crate::stream::EngineError;
use crate::webhooks::Webhooks;
pub use connection::Topology;
use connection::{Conn, Link};
use inbox::{Inbox, Outgoing, Pending};
use keys::Keys;
use sign::Signer;

use crate::net::blocks::Blocks;
pub use control::{Order, Orders, OrdersCell};

/// Longest a restart waits for its migration marks before it tells the clients to move.
pub const MARK_WAIT: Duration = Duration::from_secs(2);
/// Longest any one Redis call may take before it counts as Redis being unreachable.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a session's open waits for its presence entry before it goes on regardless.
const PRESENCE_WAIT: Duration = Duration::from_secs(2);

/// What the nodes answered to a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Routed {
    /// Queues that accepted it, summed over the nodes that answered.
    pub delivered: usize,
    /// Some node that was sent the message did not answer in time.
    pub partial: bool,
}

/// Counters for `/metrics` and `/health`.
#[derive(Default)]
pub struct ClusterStats {
    /// Redis calls that failed or timed out.
    pub errors: AtomicU64,
    /// Deliveries answered `partial`.
    pub partial: AtomicU64,
    /// Times Redis came back after being unreachable.
    pub recoveries: AtomicU64,
    /// Live nodes at the last heartbeat (this one included).
    pub nodes: AtomicU64,
    /// Times the node rewrote its presence (start, outage, declared dead): channel presence
    /// rewrites its entries when this moves.
    pub resyncs: AtomicU64,
}

/// A session waiting for its client id's presence entry; it learns where the client id's
/// sessions migrated from, if they did.
type Waiter = (Arc<str>, oneshot::Sender<Option<Arc<str>>>);

/// Client ids whose presence entry must be rewritten, and sessions waiting for that.
#[derive(Default)]
struct Dirty {
    clients: HashSet<Arc<str>>,
    /// Client ids of which a session here was closed with 1012: their migration begins.
    migrating: HashSet<Arc<str>>,
    waiters: Vec<Waiter>,
}

/// This node's membership of the cluster.
pub struct Cluster {
    /// This node's id.
    pub node: Arc<str>,
    /// Commands (scripts, publishes) and subscriptions, whose pushes go straight to the
    /// inbox; on whichever Redis the topology names.
    link: Arc<Link>,
    /// Streams must notice a master change (a failover can lose acknowledged writes).
    pub(crate) replicated: bool,
    inbox: Arc<Inbox>,
    pub(crate) pending: Arc<Pending>,
    registry: Arc<Registry>,
    webhooks: Option<Arc<Webhooks>>,
    reply_timeout: Duration,
    node_ttl: Duration,
    offline_grace: Duration,
    /// `presence_grace`: how long a channel's `leave` waits for the client id to come back.
    presence_grace: Duration,
    /// In the cluster: the upkeep's last round reached Redis and the node is synced.
    up: AtomicBool,
    /// The last Redis call succeeded (starts true: a node that just started expects Redis).
    reachable: AtomicBool,
    /// Channel topics subscribed; a tokio lock, held across the SUBSCRIBE it guards.
    topics: tokio::sync::Mutex<HashSet<Arc<str>>>,
    /// On a Redis Cluster: the client ids whose topic this node subscribes (only the presence
    /// writer changes it, see `shard_presence.rs`).
    client_topics: Mutex<HashSet<Arc<str>>>,
    dirty: Mutex<Dirty>,
    wake: Notify,
    /// Notified each time the node (re)joins: subscribed to its topics and presence resynced.
    joined: Notify,
    /// Replies owed to other nodes, until the replier task takes them.
    outgoing: Mutex<Option<mpsc::Receiver<Outgoing>>>,
    /// Sharded topics a shard dropped, until the resubscriber task takes them.
    dropped: Mutex<Option<mpsc::UnboundedReceiver<String>>>,
    /// Names of keys and topics, under `redis_prefix`.
    pub(crate) keys: Keys,
    /// Signs what this node publishes (the inbox checks what arrives).
    pub(crate) signer: Arc<Signer>,
    /// This node's newest dashboard sample, until the upkeep shares it.
    sample: Mutex<Option<String>>,
    /// Counters.
    pub stats: ClusterStats,
    /// The blocks in force, cached from Redis for the handshake (see `control.rs`).
    pub blocks: Arc<Blocks>,
    pub(crate) scripts: scripts::Set,
}

impl Cluster {
    /// Joins the cluster on the Redis `topology` names, lazily: nothing is dialled until the
    /// tasks of [`Cluster::start`] run, and a Redis that is down only makes the node degraded.
    pub fn new(
        config: &Config,
        topology: &Topology,
        node: Arc<str>,
        registry: Arc<Registry>,
        webhooks: Option<Arc<Webhooks>>,
        clock: Clock,
    ) -> Result<Arc<Cluster>, String> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err("redis: the server must be created inside a tokio runtime".into());
        }
        let secret = Signer::secret(config)?;
        if secret.is_none() {
            log::warn!(
                "cluster messages are not authenticated: anything that can publish to this Redis \
                 can speak as a node; set cluster_secret (the same on every node)"
            );
        }
        let signer = Arc::new(Signer::new(&config.redis_prefix, secret.as_deref()));
        let (tx, rx) = mpsc::channel(inbox::REPLY_QUEUE);
        let pending = Arc::new(Pending::default());
        let blocks = Arc::new(Blocks::default());
        let inbox = Arc::new(Inbox {
            node: Arc::clone(&node),
            registry: Arc::clone(&registry),
            pending: Arc::clone(&pending),
            outgoing: tx,
            replies_dropped: AtomicU64::new(0),
            signer: Arc::clone(&signer),
            clock,
            malformed: AtomicU64::new(0),
            markers: Mutex::new(Default::default()),
            blocks: Arc::clone(&blocks),
            orders: OrdersCell::default(),
        });
        let to_inbox = Arc::clone(&inbox);
        let (lost, dropped) = mpsc::unbounded_channel();
        let link = Arc::new(Link::new(
            topology,
            Arc::new(move |info| match resubscribe::dropped(&info) {
                Some(topic) => {
                    let _ = lost.send(topic);
                }
                None => to_inbox.push(info),
            }),
        )?);
        Ok(Arc::new(Cluster {
            node,
            link,
            replicated: topology.replicated(),
            inbox,
            pending,
            registry,
            webhooks,
            reply_timeout: config.cluster_reply_timeout,
            node_ttl: config.node_ttl,
            offline_grace: config.offline_grace,
            presence_grace: config.presence_grace,
            up: AtomicBool::new(false),
            reachable: AtomicBool::new(true),
            topics: tokio::sync::Mutex::new(HashSet::new()),
            client_topics: Mutex::new(HashSet::new()),
            dirty: Mutex::new(Dirty::default()),
            wake: Notify::new(),
            joined: Notify::new(),
            outgoing: Mutex::new(Some(rx)),
            dropped: Mutex::new(Some(dropped)),
            sample: Mutex::new(None),
            stats: ClusterStats::default(),
            blocks,
            scripts: scripts::Set::new(&config.redis_prefix, topology.sharded()),
            keys: Keys::new(&config.redis_prefix, topology.sharded()),
            signer,
        }))
    }

    /// Starts the node's background tasks: the presence writer, the replier and the upkeep
    /// (heartbeat, dead nodes, `offline`, resync). They stop when the guards drop.
    pub fn start(self: &Arc<Self>) -> Vec<AbortOnDrop> {
        let c = Arc::clone(self);
        let upkeep = async move {
            c.link.first_lookup().await;
            presence::upkeep(c).await
        };
        let mut tasks = vec![
            AbortOnDrop(tokio::spawn(presence::writer(Arc::clone(self)))),
            AbortOnDrop(tokio::spawn(upkeep)),
        ];
        if let Some(rx) = self.outgoing.lock().take() {
            let replier = replier::run(Arc::clone(self), rx);
            tasks.push(AbortOnDrop(tokio::spawn(replier)));
        }
        if let Some(rx) = self.dropped.lock().take() {
            let again = resubscribe::run(Arc::clone(self), rx);
            tasks.push(AbortOnDrop(tokio::spawn(again)));
        }
        tasks
    }

    /// Redis answered the last call: `/health` says `ok`, not `degraded`.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Cluster messages dropped as malformed.
    pub fn malformed(&self) -> u64 {
        self.inbox.malformed.load(Ordering::Relaxed)
    }

    /// Runs one Redis call with the time bound; a failure marks the node degraded.
    pub(crate) async fn call<T>(
        &self,
        what: &str,
        f: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T, EngineError> {
        // Refused or failed before it was sent: certainly not done. Timed out, or the
        // connection dropped under it: Redis may have run it (a script that published), so the
        // caller must neither deliver again locally nor say it was not delivered.
        let (outcome, uncertain) = match tokio::time::timeout(CALL_TIMEOUT, f).await {
            Ok(Ok(v)) => {
                self.reachable.store(true, Ordering::Relaxed);
                return Ok(v);
            }
            Ok(Err(e)) => {
                self.link.trouble(Some(&e));
                let dropped = e.is_connection_dropped() && !e.is_connection_refusal();
                (e.to_string(), e.is_timeout() || dropped)
            }
            Err(_) => {
                self.link.trouble(None);
                (format!("no answer within {CALL_TIMEOUT:?}"), true)
            }
        };
        self.stats.errors.fetch_add(1, Ordering::Relaxed);
        self.up.store(false, Ordering::Release);
        // Once per outage, the first one at start included (a wrong URL or an untrusted TLS
        // certificate must not leave the node silently alone).
        if self.reachable.swap(false, Ordering::AcqRel) {
            log::warn!(
                "redis unreachable ({what}: {outcome}); delivering locally until it is back"
            );
        }
        let cause = Arc::new(std::io::Error::other(format!("redis: {what}: {outcome}")));
        Err(if uncertain {
            EngineError::Uncertain(cause)
        } else {
            EngineError::Unavailable(cause)
        })
    }

    /// A command connection (a cheap clone).
    pub(crate) fn conn(&self) -> Conn {
        self.link.cmd()
    }

    /// Whether the node is in the cluster: true at once when it is, false at once when Redis
    /// is unreachable. In between (just started, or Redis just came back) it waits, bounded,
    /// for the upkeep to subscribe the node's topic: a presence entry written before that
    /// would route pushes to a node not yet listening, and they would be lost.
    async fn joined_or_down(&self) -> bool {
        let joined = self.joined.notified();
        if self.is_up() {
            return true;
        }
        if !self.reachable.load(Ordering::Relaxed) {
            return false;
        }
        let _ = tokio::time::timeout(PRESENCE_WAIT, joined).await;
        self.is_up()
    }

    /// The sessions of `clients` are about to be closed with 1012 (a migration): records that
    /// before the clients hear of it (waiting at most `bound`), so a client that reconnects to
    /// another node at once is marked as migrated there.
    pub async fn mark_migrating(&self, clients: Vec<Arc<str>>, bound: Duration) {
        if clients.is_empty() {
            return;
        }
        let (tx, rx) = oneshot::channel();
        {
            let mut d = self.dirty.lock();
            d.migrating.extend(clients.iter().cloned());
            d.clients.extend(clients);
            if self.reachable.load(Ordering::Relaxed) {
                d.waiters.push((Arc::from(""), tx));
            }
        }
        self.wake.notify_one();
        if tokio::time::timeout(bound, rx).await.is_err() {
            log::debug!("node {}: migration marks not confirmed in time", self.node);
        }
    }

    /// On shutdown, once the sessions are closed: waits (at most `bound`) for their presence
    /// to be written, then takes the node out of the cluster's live nodes. When the write did
    /// not make it, the node stays listed, so the others clear its presence after `node_ttl`.
    pub async fn leave(&self, bound: Duration) {
        let (tx, rx) = oneshot::channel();
        self.dirty.lock().waiters.push((Arc::from(""), tx));
        self.wake.notify_one();
        let written = matches!(tokio::time::timeout(bound, rx).await, Ok(Ok(_)))
            && self.dirty.lock().clients.is_empty();
        if !written {
            log::warn!(
                "node {}: presence not written before exit; the cluster clears it after node_ttl",
                self.node
            );
            return;
        }
        let mut con = self.conn();
        let node = self.node.to_string();
        let nodes = self.keys.nodes();
        let _ = self
            .call("leave", async move {
                redis::cmd("ZREM")
                    .arg(nodes)
                    .arg(node)
                    .query_async::<()>(&mut con)
                    .await
            })
            .await;
    }
}
