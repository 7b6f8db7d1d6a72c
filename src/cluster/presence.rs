//! The node's two background tasks besides the replier.
//!
//! - [`writer`]: makes the presence entries of the client ids this node holds equal to the
//!   registry. It writes absolute counts read at write time, so the last write after any change
//!   is right whatever order sessions opened and closed in, and a rewrite after Redis lost
//!   everything is the same code. Changes are batched: a reconnect storm of thousands of
//!   sessions costs a few round trips.
//! - [`upkeep`]: the heartbeat into `<prefix>:nodes`, clearing dead nodes, firing due `offline`
//!   webhooks, unsubscribing channels nobody here listens to, and the resync after an outage.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::oneshot;

use super::{Cluster, PRESENCE_WAIT};
use crate::stream::EngineError;

/// Client ids written per script call, so one call never holds Redis for long.
const BATCH: usize = 500;
/// Due `offline` events taken per upkeep round.
const OFFLINE_BATCH: usize = 200;
/// How long a node's 1012 is remembered for its client ids' next sessions elsewhere.
const MIGRATION_MEMORY: Duration = Duration::from_secs(60);
/// Pause after a failed write before the next try.
const RETRY: Duration = Duration::from_millis(250);

/// Writes presence whenever [`Cluster::touch`] or [`Cluster::present`] asked for it.
pub async fn writer(c: Arc<Cluster>) {
    loop {
        c.wake.notified().await;
        loop {
            let (clients, migrating, waiters) = {
                let mut d = c.dirty.lock();
                if d.clients.is_empty() {
                    // Nothing to write, so whoever waits has their entry already.
                    for (_, w) in d.waiters.drain(..) {
                        let _ = w.send(None);
                    }
                    break;
                }
                (
                    std::mem::take(&mut d.clients),
                    std::mem::take(&mut d.migrating),
                    std::mem::take(&mut d.waiters),
                )
            };
            let clients: Vec<_> = clients.into_iter().collect();
            let mut from = HashMap::new();
            let mut failed_at = None;
            for (i, chunk) in clients.chunks(BATCH).enumerate() {
                if write(&c, chunk, &migrating, &mut from).await.is_err() {
                    failed_at = Some(i * BATCH);
                    break;
                }
            }
            match failed_at {
                None => {
                    for (client, w) in waiters {
                        let _ = w.send(from.get(&client).cloned());
                    }
                }
                Some(at) => {
                    {
                        let mut d = c.dirty.lock();
                        d.clients.extend(clients[at..].iter().cloned());
                        d.migrating.extend(migrating);
                        // Sessions that gave up waiting leave nothing behind.
                        d.waiters
                            .extend(waiters.into_iter().filter(|(_, w)| !w.is_closed()));
                    }
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }
}

/// One batch: this node's counts of `clients`, the `online` webhooks they trigger, and where
/// the ones that came back migrated from (into `from`).
async fn write(
    c: &Cluster,
    clients: &[Arc<str>],
    migrating: &HashSet<Arc<str>>,
    from: &mut HashMap<Arc<str>, Arc<str>>,
) -> Result<(), ()> {
    if c.keys.sharded() {
        let memory = MIGRATION_MEMORY.as_millis() as u64;
        return c
            .write_sharded(clients, migrating, memory, from)
            .await
            .map_err(|_| ());
    }
    let mut invocation = c.scripts.set_presence.prepare_invoke();
    invocation
        .key(c.keys.node_clients(&c.node))
        .key(c.keys.offline_due())
        .arg(&*c.node)
        .arg(c.offline_grace.as_millis() as u64)
        .arg(MIGRATION_MEMORY.as_millis() as u64);
    for client in clients {
        invocation
            .arg(&**client)
            .arg(c.registry.sessions_of(client))
            .arg(if migrating.contains(client) { "1" } else { "0" });
    }
    let mut con = c.conn();
    let outcome: Vec<redis::Value> = c
        .call("presence", async move {
            invocation.invoke_async(&mut con).await
        })
        .await
        .map_err(|_| ())?;
    for (client, pair) in clients.iter().zip(outcome.chunks(2)) {
        if let [redis::Value::Int(r), node] = pair {
            if *r == 1
                && let Some(w) = &c.webhooks
            {
                w.online(client);
            }
            if let redis::Value::BulkString(b) = node
                && !b.is_empty()
                && let Ok(node) = std::str::from_utf8(b)
            {
                from.insert(Arc::clone(client), Arc::from(node));
            }
        }
    }
    Ok(())
}

/// The heartbeat and everything that runs on it; one round every `node_ttl / 5` (at most a
/// second), so a dead node is noticed within `node_ttl` plus a round.
pub async fn upkeep(c: Arc<Cluster>) {
    let round = (c.node_ttl / 5).clamp(Duration::from_millis(100), Duration::from_secs(1));
    let mut tick = tokio::time::interval(round);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut synced = false;
    let mut generation = c.link.generation();
    loop {
        tick.tick().await;
        let Ok((fresh, dead)) = heartbeat(&c).await else {
            synced = false;
            continue;
        };
        // A new master (a failover) knows neither this node's subscriptions nor, maybe, the
        // presence it lost with the old one's last writes.
        let moved = c.link.generation();
        if !synced || fresh || moved != generation {
            if moved != generation {
                c.up.store(false, Ordering::Release);
                synced = false;
            }
            generation = moved;
            if resync(&c).await.is_err() {
                synced = false;
                continue;
            }
            c.stats.resyncs.fetch_add(1, Ordering::Release);
            if synced {
                log::warn!(
                    "node {} was declared dead meanwhile; presence rewritten",
                    c.node
                );
            }
            synced = true;
        }
        if !c.up.swap(true, Ordering::AcqRel) {
            c.stats.recoveries.fetch_add(1, Ordering::Relaxed);
            c.joined.notify_waiters();
            log::info!("redis reachable; node {} is in the cluster", c.node);
        }
        for node in dead {
            reap(&c, &node).await;
        }
        fire_offline(&c).await;
        c.sweep_topics().await;
        c.upload_sample().await;
    }
}

/// Stamps this node alive; returns whether it was unlisted and the nodes silent too long.
async fn heartbeat(c: &Cluster) -> Result<(bool, Vec<String>), ()> {
    let mut con = c.conn();
    let script = &c.scripts.heartbeat;
    let node = c.node.to_string();
    let ttl = c.node_ttl.as_millis() as u64;
    let nodes = c.keys.nodes();
    let out: Vec<redis::Value> = c
        .call("heartbeat", async move {
            script
                .key(nodes)
                .arg(node)
                .arg(ttl)
                .invoke_async(&mut con)
                .await
        })
        .await
        .map_err(|_| ())?;
    let mut items = out.into_iter();
    let fresh = matches!(items.next(), Some(redis::Value::Int(1)));
    let alive = match items.next() {
        Some(redis::Value::Int(n)) => n.max(0) as u64,
        _ => 0,
    };
    c.stats.nodes.store(alive, Ordering::Relaxed);
    let dead = items
        .filter_map(|v| match v {
            redis::Value::BulkString(b) => String::from_utf8(b).ok(),
            _ => None,
        })
        .filter(|n| *n != *c.node)
        .collect();
    Ok((fresh, dead))
}

/// Subscribes again and rewrites every presence entry: after a start, an outage, or after
/// other nodes took this one for dead. The subscriber connection is pinged first, which also
/// makes its manager reconnect if the connection died.
async fn resync(c: &Cluster) -> Result<(), ()> {
    let mut topics = c.topics.lock().await;
    // Every channel with a subscriber here, including those subscribed while Redis was down.
    let channels = c.registry.channel_names();
    let mut names = vec![c.keys.node_topic(&c.node), c.keys.all()];
    names.extend(channels.iter().map(|ch| c.keys.channel_topic(ch)));
    c.call("resubscribe", c.link.subscribe(names))
        .await
        .map_err(|_| ())?;
    topics.extend(channels);
    drop(topics);
    // What Redis says this node holds, from an earlier run with the same node_id or from before
    // an outage: each is rewritten with today's count, so a stale entry goes to 0.
    let mut con = c.conn();
    let key = c.keys.node_clients(&c.node);
    let listed: Vec<String> = c
        .call("resync", async move {
            redis::cmd("SMEMBERS").arg(key).query_async(&mut con).await
        })
        .await
        .map_err(|_| ())?;
    // Blocks set or lifted while this node was away reached no cache here.
    c.load_blocks().await.map_err(|_| ())?;
    // On a Redis Cluster the client topics go with the presence entries: the writer
    // subscribes each again as it rewrites it (a repeated SSUBSCRIBE is harmless).
    c.client_topics.lock().clear();
    let mut d = c.dirty.lock();
    d.clients.extend(c.registry.client_ids());
    d.clients.extend(listed.into_iter().map(Arc::from));
    drop(d);
    c.wake.notify_one();
    Ok(())
}

/// Clears a dead node's presence (if no other node did first).
async fn reap(c: &Cluster, node: &str) {
    if c.keys.sharded() {
        if c.reap_sharded(node).await {
            c.clear_channels(node).await;
        }
        return;
    }
    let mut con = c.conn();
    let script = &c.scripts.reap_node;
    let clients = c.keys.node_clients(node);
    let (nodes, due) = (c.keys.nodes(), c.keys.offline_due());
    let dead = node.to_string();
    let ttl = c.node_ttl.as_millis() as u64;
    let cleared = c
        .call("reap", async move {
            script
                .key(nodes)
                .key(clients)
                .key(due)
                .arg(dead)
                .arg(ttl)
                .invoke_async::<i64>(&mut con)
                .await
        })
        .await;
    if let Ok(n @ 0..) = cleared {
        log::warn!("node {node} is silent past node_ttl: cleared its {n} client ids");
        // Only the node that cleared it gets here, so its channel presence is cleared once.
        c.clear_channels(node).await;
    }
}

/// Sends `offline` for client ids whose grace is over; each is taken by one node only.
async fn fire_offline(c: &Cluster) {
    if c.keys.sharded() {
        return c.fire_offline_sharded().await;
    }
    let mut con = c.conn();
    let script = &c.scripts.take_offline;
    let key = c.keys.offline_due();
    let due: Result<Vec<String>, _> = c
        .call("offline", async move {
            script
                .key(key)
                .arg(OFFLINE_BATCH)
                .invoke_async(&mut con)
                .await
        })
        .await;
    if let (Ok(due), Some(w)) = (due, &c.webhooks) {
        for client in due {
            w.offline(&Arc::from(client));
        }
    }
}

/// Presence as the rest of the node asks it: who holds a client id, and the writer's inputs.
impl Cluster {
    /// The live nodes holding sessions of `client_id`, with their session counts.
    pub async fn presence(&self, client_id: &str) -> Result<Vec<(String, u64)>, EngineError> {
        if self.keys.sharded() {
            return self.presence_sharded(client_id).await;
        }
        let mut con = self.conn();
        let script = &self.scripts.read_presence;
        let key = self.keys.presence(client_id);
        let nodes = self.keys.nodes();
        let ttl = self.node_ttl.as_millis() as u64;
        let flat: Vec<String> = self
            .call("presence", async move {
                script
                    .key(key)
                    .key(nodes)
                    .arg(ttl)
                    .invoke_async(&mut con)
                    .await
            })
            .await?;
        Ok(flat
            .chunks_exact(2)
            .map(|pair| (pair[0].clone(), pair[1].parse().unwrap_or(0)))
            .collect())
    }

    /// Marks `client_id`'s presence entry for rewriting (a session of it opened or closed).
    pub fn touch(&self, client_id: &Arc<str>) {
        self.dirty.lock().clients.insert(Arc::clone(client_id));
        self.wake.notify_one();
    }

    /// A session of `client_id` ended with `code`; a 1012 (restart, rotation) is remembered
    /// for a minute, so its next session elsewhere is marked as migrated from this node.
    pub fn closed(&self, client_id: &Arc<str>, code: u16) {
        let mut d = self.dirty.lock();
        d.clients.insert(Arc::clone(client_id));
        if code == crate::protocol::close::RESTART {
            d.migrating.insert(Arc::clone(client_id));
        }
        drop(d);
        self.wake.notify_one();
    }

    /// [`Cluster::touch`], then waits (bounded) until the entry is written: from then on
    /// pushes to the client id from any node reach this node. Returns the node the client id's
    /// sessions migrated from (closed there with 1012 within the last minute), if any.
    pub async fn present(&self, client_id: &Arc<str>) -> Option<Arc<str>> {
        if !self.joined_or_down().await {
            // Degraded: the session is served locally now, and the resync after Redis returns
            // writes its entry; waiting would only delay its welcome.
            self.touch(client_id);
            return None;
        }
        let (tx, rx) = oneshot::channel();
        {
            let mut d = self.dirty.lock();
            d.clients.insert(Arc::clone(client_id));
            d.waiters.push((Arc::clone(client_id), tx));
        }
        self.wake.notify_one();
        match tokio::time::timeout(PRESENCE_WAIT, rx).await {
            Ok(Ok(from)) => from,
            _ => {
                log::debug!("presence of {client_id} not confirmed; going on locally");
                None
            }
        }
    }
}
