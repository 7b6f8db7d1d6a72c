//! Client presence on a Redis Cluster (docs/cluster.md § Redis Cluster): the same duties as
//! `presence.rs`, one hash tag per step (the steps are in `shard_scripts.rs`).
//!
//! Routing rides on presence here: a push's step publishes once on its client id's topic
//! (`{c:<id>}:t`), on the client's own shard, so a node subscribes that topic before its
//! presence entry says it holds the client (and before the session's `welcome`), and drops it
//! after the entry says it no longer does. The node's client list is written before an entry
//! appears and after one goes, so a survivor that clears a dead node finds every entry it left.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures_util::future::try_join_all;
use redis::Value;

use super::Cluster;
use crate::stream::EngineError;

/// Offline marks taken per upkeep round.
const OFFLINE_BATCH: usize = 200;

impl Cluster {
    /// One batch of the presence writer: this node's counts of `clients`, the `online` /
    /// `offline` they decide, and where the returning ones migrated from (into `from`).
    pub(super) async fn write_sharded(
        &self,
        clients: &[Arc<str>],
        migrating: &HashSet<Arc<str>>,
        memory_ms: u64,
        from: &mut HashMap<Arc<str>, Arc<str>>,
    ) -> Result<(), EngineError> {
        let counts: Vec<(Arc<str>, usize)> = clients
            .iter()
            .map(|c| (Arc::clone(c), self.registry.sessions_of(c)))
            .collect();
        let held: Vec<Arc<str>> = counts
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(c, _)| Arc::clone(c))
            .collect();
        let fresh: Vec<Arc<str>> = {
            let on = self.client_topics.lock();
            held.iter().filter(|c| !on.contains(*c)).cloned().collect()
        };
        if !fresh.is_empty() {
            let topics = fresh.iter().map(|c| self.keys.client_topic(c)).collect();
            self.call("subscribe", self.link.subscribe(topics)).await?;
            self.client_topics.lock().extend(fresh);
        }
        let list = self.keys.node_clients(&self.node);
        if !held.is_empty() {
            self.cmd(
                "presence",
                redis::cmd("SADD").arg(&list).arg(held_names(&held)).clone(),
            )
            .await?;
        }
        let grace = self.offline_grace.as_millis() as u64;
        let script = &self.scripts.shard.set_one;
        let steps = counts.iter().map(|(client, n)| {
            let mut con = self.conn();
            let mut inv = script.prepare_invoke();
            inv.key(self.keys.presence(client))
                .key(self.keys.migrated(client))
                .key(self.keys.offline_mark(client))
                .arg(&*self.node)
                .arg(*n)
                .arg(if migrating.contains(client) { "1" } else { "0" })
                .arg(grace)
                .arg(memory_ms);
            async move { inv.invoke_async::<(i64, Vec<u8>, i64)>(&mut con).await }
        });
        let outcome = self
            .call("presence", async move { try_join_all(steps).await })
            .await?;
        let mut gone = Vec::new();
        let mut due = Vec::new();
        for ((client, n), (r, node, at)) in counts.iter().zip(outcome) {
            if r == 1
                && let Some(w) = &self.webhooks
            {
                w.online(client);
            }
            if r == -1 {
                due.push((Arc::clone(client), at));
            }
            if let Ok(node) = std::str::from_utf8(&node)
                && !node.is_empty()
            {
                from.insert(Arc::clone(client), Arc::from(node));
            }
            if *n == 0 {
                gone.push(Arc::clone(client));
            }
        }
        self.index_offline(&due).await?;
        if !gone.is_empty() {
            self.cmd(
                "presence",
                redis::cmd("SREM").arg(&list).arg(held_names(&gone)).clone(),
            )
            .await?;
            let idle: Vec<Arc<str>> = {
                let mut on = self.client_topics.lock();
                gone.into_iter()
                    .filter(|c| self.registry.sessions_of(c) == 0 && on.remove(c))
                    .collect()
            };
            if !idle.is_empty() {
                let topics = idle.iter().map(|c| self.keys.client_topic(c)).collect();
                // A topic left subscribed only costs this node messages it has nobody for.
                let _ = self
                    .call("unsubscribe", self.link.unsubscribe(topics))
                    .await;
            }
        }
        Ok(())
    }

    /// Adds offline marks to the offline queue, the index any node takes them from.
    async fn index_offline(&self, due: &[(Arc<str>, i64)]) -> Result<(), EngineError> {
        if due.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("ZADD");
        cmd.arg(self.keys.offline_due());
        for (client, at) in due {
            cmd.arg(*at).arg(&**client);
        }
        self.cmd("presence", cmd).await
    }

    /// One command whose answer does not matter, through [`Cluster::call`].
    async fn cmd(&self, what: &str, cmd: redis::Cmd) -> Result<(), EngineError> {
        let mut con = self.conn();
        self.call(what, async move { cmd.query_async::<()>(&mut con).await })
            .await
    }

    /// Clears a dead node's presence, if this node is the first to claim it: its client ids
    /// whose last sessions it held go offline at once.
    pub(super) async fn reap_sharded(&self, node: &str) -> bool {
        let mut con = self.conn();
        let script = &self.scripts.shard.claim_dead;
        let (nodes, dead) = (self.keys.nodes(), node.to_string());
        let ttl = self.node_ttl.as_millis() as u64;
        let claimed = self
            .call("reap", async move {
                script
                    .key(nodes)
                    .arg(dead)
                    .arg(ttl)
                    .invoke_async::<i64>(&mut con)
                    .await
            })
            .await;
        if !matches!(claimed, Ok(1)) {
            return false;
        }
        let list = self.keys.node_clients(node);
        let Ok((clients, dropped)) = self.clear_node(node, &list).await else {
            // Listed again as long dead, so the next survivor's round claims it and retries:
            // its entries must not stay behind, they would hold its client ids online.
            let mut back = redis::cmd("ZADD");
            back.arg(self.keys.nodes()).arg(0).arg(node);
            let _ = self.cmd("reap", back).await;
            return false;
        };
        let due: Vec<(Arc<str>, i64)> = clients
            .iter()
            .zip(dropped)
            .filter(|(_, at)| *at >= 0)
            .map(|(c, at)| (Arc::from(c.as_str()), at))
            .collect();
        let _ = self.index_offline(&due).await;
        let _ = self.cmd("reap", redis::cmd("DEL").arg(list).clone()).await;
        log::warn!(
            "node {node} is silent past node_ttl: cleared its {} client ids",
            clients.len()
        );
        true
    }

    /// Removes dead `node` from the presence of each client id in its list: the client ids,
    /// and for each when its `offline` is due (-1: another node holds it).
    async fn clear_node(
        &self,
        node: &str,
        list: &str,
    ) -> Result<(Vec<String>, Vec<i64>), EngineError> {
        let mut con = self.conn();
        let key = list.to_string();
        let clients: Vec<String> = self
            .call("reap", async move {
                redis::cmd("SMEMBERS").arg(key).query_async(&mut con).await
            })
            .await?;
        let script = &self.scripts.shard.drop_node;
        let steps = clients.iter().map(|client| {
            let mut con = self.conn();
            let mut inv = script.prepare_invoke();
            inv.key(self.keys.presence(client))
                .key(self.keys.offline_mark(client))
                .arg(node);
            async move { inv.invoke_async::<i64>(&mut con).await }
        });
        let dropped = self
            .call("reap", async move { try_join_all(steps).await })
            .await?;
        Ok((clients, dropped))
    }

    /// Sends `offline` for the client ids whose mark is due; each mark is taken by one node.
    pub(super) async fn fire_offline_sharded(&self) {
        let mut con = self.conn();
        let script = &self.scripts.chan_due;
        let index = self.keys.offline_due();
        let Ok(due) = self
            .call("offline", async move {
                script
                    .key(index)
                    .arg(OFFLINE_BATCH)
                    .invoke_async::<Vec<(String, String)>>(&mut con)
                    .await
            })
            .await
        else {
            return;
        };
        for (client, score) in due {
            let mut con = self.conn();
            let script = &self.scripts.shard.take_offline;
            let (mark, presence) = (self.keys.offline_mark(&client), self.keys.presence(&client));
            let Ok(r) = self
                .call("offline", async move {
                    script
                        .key(mark)
                        .key(presence)
                        .invoke_async::<i64>(&mut con)
                        .await
                })
                .await
            else {
                return;
            };
            if r == -1
                && let Some(w) = &self.webhooks
            {
                w.offline(&Arc::from(client.as_str()));
            }
            // Settled only if nobody re-queued it meanwhile (same score); a later due moves it.
            let next = if r > 0 { r.to_string() } else { String::new() };
            let mut con = self.conn();
            let script = &self.scripts.chan_settle;
            let index = self.keys.offline_due();
            let _ = self
                .call("offline", async move {
                    script
                        .key(index)
                        .arg(client)
                        .arg(score)
                        .arg(next)
                        .invoke_async::<i64>(&mut con)
                        .await
                })
                .await;
        }
    }

    /// The live nodes (heartbeat within `node_ttl`).
    pub(super) async fn live_nodes(&self) -> Result<HashSet<String>, EngineError> {
        let mut con = self.conn();
        let script = &self.scripts.shard.live_nodes;
        let nodes = self.keys.nodes();
        let ttl = self.node_ttl.as_millis() as u64;
        let live: Vec<String> = self
            .call("nodes", async move {
                script.key(nodes).arg(ttl).invoke_async(&mut con).await
            })
            .await?;
        Ok(live.into_iter().collect())
    }

    /// [`Cluster::presence`] on a Redis Cluster: the entry, then the live nodes.
    pub(super) async fn presence_sharded(
        &self,
        client_id: &str,
    ) -> Result<Vec<(String, u64)>, EngineError> {
        let mut con = self.conn();
        let key = self.keys.presence(client_id);
        let entry: Vec<(String, u64)> = self
            .call("presence", async move {
                redis::cmd("HGETALL").arg(key).query_async(&mut con).await
            })
            .await?;
        if entry.is_empty() {
            return Ok(entry);
        }
        let live = self.live_nodes().await?;
        Ok(entry
            .into_iter()
            .filter(|(n, _)| live.contains(n))
            .collect())
    }

    /// [`Cluster::dashboards`] on a Redis Cluster: each live node's list on its own.
    pub(super) async fn dashboards_sharded(&self) -> Result<Vec<(String, String)>, EngineError> {
        let mut live: Vec<String> = self.live_nodes().await?.into_iter().collect();
        live.sort();
        let reads = live.iter().map(|n| {
            let mut con = self.conn();
            let key = self.keys.dashboard(n);
            async move {
                redis::cmd("LRANGE")
                    .arg(key)
                    .arg(0)
                    .arg(-1)
                    .query_async::<Vec<String>>(&mut con)
                    .await
            }
        });
        let lists = self
            .call("dashboard", async move { try_join_all(reads).await })
            .await?;
        Ok(live
            .into_iter()
            .zip(lists)
            .map(|(n, l)| (n, format!("[{}]", l.join(","))))
            .collect())
    }

    /// Runs `cmds`, whose answers do not matter: one pipeline on one Redis; on a Redis Cluster,
    /// where a pipeline must stay in one slot, separate commands in flight together.
    pub(crate) async fn run_all(
        &self,
        what: &str,
        cmds: Vec<redis::Cmd>,
    ) -> Result<(), EngineError> {
        if cmds.is_empty() {
            return Ok(());
        }
        if !self.keys.sharded() {
            let mut pipe = redis::pipe();
            for c in cmds {
                pipe.add_command(c).ignore();
            }
            let mut con = self.conn();
            return self
                .call(what, async move { pipe.query_async::<()>(&mut con).await })
                .await;
        }
        let sends = cmds.into_iter().map(|c| {
            let mut con = self.conn();
            async move { c.query_async::<Value>(&mut con).await }
        });
        self.call(what, async move { try_join_all(sends).await })
            .await
            .map(|_| ())
    }
}

/// Client ids as command arguments.
fn held_names(clients: &[Arc<str>]) -> Vec<&str> {
    clients.iter().map(|c| &**c).collect()
}
