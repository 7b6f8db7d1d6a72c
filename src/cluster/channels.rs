//! Channels across nodes (docs/protocol.md §14): listings and a channel's clients, gathered
//! from every node (each answers its own part, so a dead node drops out at once), and the
//! shared state of presence channels: each node's counts per client id, written by the
//! node's presence task (`delivery::presence`), from which `join` and `leave` are decided
//! once cluster-wide (see `channel_scripts`).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::Cluster;
use super::inbox::NO_REPLY;
use super::wire::Kind;
use crate::registry::presence::{self, decode_counts, encode_counts};
use crate::stream::EngineError;

/// Queued leaves read from the index per read.
const DUE_BATCH: usize = 1000;
/// Reads of the index per call, at most.
const DUE_ROUNDS: usize = 10;

/// What one write of a channel's counts decided.
#[derive(Debug, Default)]
pub struct Decided {
    /// Client ids that joined (their first session anywhere, not back within the grace); their
    /// `join` is published already.
    pub joins: Vec<Arc<str>>,
}

/// A node's part of a channel's presence, as it answers another: the first line is its
/// subscriber sessions, then `<sessions> <client id>` lines.
fn encode_clients(total: u64, clients: &[(Arc<str>, u64)]) -> String {
    format!("{total}\n{}", encode_counts(clients))
}

/// `<limit> <after>` (after empty: from the start), the body of a page request.
fn page_body(limit: usize, after: Option<&str>) -> String {
    format!("{limit} {}", after.unwrap_or(""))
}

/// Reads [`page_body`]; `None` when malformed.
fn read_page_body(body: &[u8]) -> Option<(usize, Option<&str>)> {
    let text = std::str::from_utf8(body).ok()?;
    let (limit, after) = text.split_once(' ')?;
    let limit = limit
        .parse::<usize>()
        .ok()
        .filter(|l| (1..=presence::PAGE_MAX).contains(l))?;
    Some((limit, (!after.is_empty()).then_some(after)))
}

impl super::inbox::Inbox {
    /// This node's answer to [`Kind::Channels`] or [`Kind::Members`]; `None` when malformed.
    pub(super) fn channels_answer(&self, kind: Kind, target: &str, body: &[u8]) -> Option<String> {
        let (limit, after) = read_page_body(body)?;
        Some(match kind {
            Kind::Channels => encode_counts(&self.registry.channel_page(target, after, limit)),
            _ => {
                let (total, clients) = self.registry.channel_clients(target, after, limit);
                encode_clients(total, &clients)
            }
        })
    }
}

impl Cluster {
    /// One page of channels on every node (names with `prefix`, after `after`, at most
    /// `limit`), subscriber sessions summed; `partial` when a node did not answer in time.
    pub async fn channel_page(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<(Arc<str>, u64)>, bool), EngineError> {
        let body = page_body(limit, after);
        let g = self
            .request(self.keys.all(), Kind::Channels, prefix, body.as_bytes())
            .await?;
        let parts = g
            .bodies
            .iter()
            .map(|b| decode_counts(&String::from_utf8_lossy(b)));
        Ok((presence::merge_counts(parts, limit), !g.complete))
    }

    /// A channel's subscriber sessions on every node, and its client ids after `after` (at
    /// most `limit`) with their sessions; `partial` when a node did not answer in time.
    pub async fn channel_clients(
        &self,
        channel: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(u64, Vec<(Arc<str>, u64)>, bool), EngineError> {
        let body = page_body(limit, after);
        let g = self
            .request(self.keys.all(), Kind::Members, channel, body.as_bytes())
            .await?;
        let mut total = 0;
        let mut parts = Vec::with_capacity(g.bodies.len());
        for b in &g.bodies {
            let text = String::from_utf8_lossy(b);
            let (head, rest) = text.split_once('\n').unwrap_or((&text, ""));
            total += head.parse::<u64>().unwrap_or(0);
            parts.push(decode_counts(rest));
        }
        Ok((total, presence::merge_counts(parts, limit), !g.complete))
    }

    /// Subscribes this node to `channel`'s topic if it is not yet; returns once Redis
    /// confirmed, so a publish from any node reaches the new subscriber.
    pub async fn watch(&self, channel: &str) {
        if !self.reachable.load(Ordering::Relaxed) {
            // The resync after Redis returns subscribes every channel with local subscribers.
            return;
        }
        let mut topics = self.topics.lock().await;
        if topics.contains(channel) {
            return;
        }
        let topic = self.keys.channel_topic(channel);
        if self
            .call("subscribe", self.link.subscribe(vec![topic]))
            .await
            .is_ok()
        {
            topics.insert(Arc::from(channel));
        }
        // On failure the resync after Redis returns subscribes every local channel.
    }

    /// Unsubscribes the channel topics this node no longer has subscribers for. The check and the
    /// unsubscribe happen under the topics lock, which `watch` takes too, so a subscriber that
    /// arrives meanwhile is never left without the topic.
    pub(super) async fn sweep_topics(&self) {
        let mut topics = self.topics.lock().await;
        let idle: Vec<Arc<str>> = topics
            .iter()
            .filter(|ch| !self.registry.has_channel(ch))
            .cloned()
            .collect();
        if idle.is_empty() {
            return;
        }
        let names: Vec<String> = idle.iter().map(|ch| self.keys.channel_topic(ch)).collect();
        if self
            .call("unsubscribe", self.link.unsubscribe(names))
            .await
            .is_ok()
        {
            for ch in idle {
                topics.remove(&ch);
            }
        }
    }

    /// Writes this node's session counts of `clients` on presence channel `channel`; which of
    /// them joined. Leaves are queued for [`Cluster::take_leaves`].
    pub async fn write_channel(
        &self,
        channel: &str,
        clients: &[(Arc<str>, u32)],
    ) -> Result<Decided, EngineError> {
        let index = self.keys.node_channels(&self.node);
        if clients.iter().any(|(_, n)| *n > 0) {
            // Listed before the entries exist: a crash between the two steps must not leave
            // entries no survivor can find.
            let mut con = self.conn();
            let (key, ch) = (index.clone(), channel.to_string());
            self.call("channel presence", async move {
                redis::cmd("SADD")
                    .arg(key)
                    .arg(ch)
                    .query_async::<i64>(&mut con)
                    .await
            })
            .await?;
        }
        let [pn, pc, pg] = self.keys.chan_presence(channel, &self.node);
        let mut inv = self.scripts.chan_set.prepare_invoke();
        inv.key(pn)
            .key(pc)
            .key(pg)
            .arg(self.presence_grace.as_millis() as u64)
            .arg(self.keys.channel_topic(channel));
        for (client, n) in clients {
            // Sealed here (no secret reaches Redis); published by the script if it joins.
            let join = match n {
                0 => Vec::new(),
                _ => self.event(channel, "join", client),
            };
            inv.arg(&**client).arg(*n).arg(join);
        }
        let mut con = self.conn();
        let out: Vec<redis::Value> = self
            .call("channel presence", async move {
                inv.invoke_async(&mut con).await
            })
            .await?;
        let mut items = out.into_iter();
        let left = match items.next() {
            Some(redis::Value::Int(n)) => n,
            _ => 0,
        };
        let mut decided = Decided::default();
        let mut leaves = Vec::new();
        let rest: Vec<redis::Value> = items.collect();
        for t in rest.chunks_exact(3) {
            let (redis::Value::BulkString(c), redis::Value::Int(r), redis::Value::Int(due)) =
                (&t[0], &t[1], &t[2])
            else {
                continue;
            };
            let Ok(client) = std::str::from_utf8(c) else {
                continue;
            };
            if *r == 1 {
                decided.joins.push(Arc::from(client));
            } else {
                leaves.push((client.to_string(), *due));
            }
        }
        // The node's index of its channels, for a survivor that clears it after a crash.
        let mut cmds = Vec::new();
        if left == 0 {
            cmds.push(redis::cmd("SREM").arg(&index).arg(channel).clone());
        }
        self.queue_leaves(&mut cmds, channel, &leaves);
        self.run_all("channel presence", cmds).await?;
        Ok(decided)
    }

    /// A sealed `join` / `leave` message for the channel's topic, delivered by every node to
    /// its subscribers and answered by none (see [`NO_REPLY`]).
    fn event(&self, channel: &str, kind: &str, client: &str) -> Vec<u8> {
        let frame = presence::event_frame(kind, channel, client);
        self.seal(Kind::Channel, NO_REPLY, channel, frame.as_bytes())
    }

    /// Adds queued leaves to the `leaves_due` index.
    fn queue_leaves(&self, cmds: &mut Vec<redis::Cmd>, channel: &str, leaves: &[(String, i64)]) {
        for (client, due) in leaves {
            let mut cmd = redis::cmd("ZADD");
            cmd.arg(self.keys.leaves_due())
                .arg(*due)
                .arg(format!("{channel}\n{client}"));
            cmds.push(cmd);
        }
    }

    /// Clears `node`'s channel presence: a dead node's (by the survivor that reaped it), or
    /// this node's before it rewrites its entries. Its client ids leave after the grace unless
    /// another session holds them.
    pub(super) async fn clear_channels(&self, node: &str) {
        let index = self.keys.node_channels(node);
        let mut con = self.conn();
        let key = index.clone();
        let Ok(channels) = self
            .call("channel presence", async move {
                redis::cmd("SMEMBERS")
                    .arg(key)
                    .query_async::<Vec<String>>(&mut con)
                    .await
            })
            .await
        else {
            return;
        };
        for channel in &channels {
            let [pn, pc, pg] = self.keys.chan_presence(channel, node);
            let script = &self.scripts.chan_clear;
            let grace = self.presence_grace.as_millis() as u64;
            let mut con = self.conn();
            let Ok(flat) = self
                .call("channel presence", async move {
                    script
                        .key(pn)
                        .key(pc)
                        .key(pg)
                        .arg(grace)
                        .invoke_async::<Vec<(String, i64)>>(&mut con)
                        .await
                })
                .await
            else {
                return;
            };
            let mut cmds = Vec::new();
            self.queue_leaves(&mut cmds, channel, &flat);
            cmds.push(redis::cmd("SREM").arg(&index).arg(channel).clone());
            let _ = self.run_all("channel presence", cmds).await;
        }
    }

    /// Clears this node's own channel entries (after a resync: they may be stale).
    pub async fn clear_own_channels(&self) {
        let node = Arc::clone(&self.node);
        self.clear_channels(&node).await;
    }

    /// Takes the queued leaves that are due and still gone; each is taken by one node only,
    /// in the step that publishes it. Returns the (channel, client id) pairs this node fired.
    /// The entries of one read are taken concurrently (each is two steps on its own channel's
    /// keys), and reads repeat while they come back full, a bounded number of times per call.
    pub async fn take_leaves(&self) -> Result<Vec<(Arc<str>, Arc<str>)>, EngineError> {
        let mut fired = Vec::new();
        for _ in 0..DUE_ROUNDS {
            let index = self.keys.leaves_due();
            let script = &self.scripts.chan_due;
            let mut con = self.conn();
            let due: Vec<(String, String)> = self
                .call("channel presence", async move {
                    script
                        .key(index)
                        .arg(DUE_BATCH)
                        .invoke_async(&mut con)
                        .await
                })
                .await?;
            let full = due.len() >= DUE_BATCH;
            let taken = futures_util::future::join_all(
                due.into_iter()
                    .map(|(member, score)| self.take_one(member, score)),
            )
            .await;
            fired.extend(taken.into_iter().flatten());
            if !full {
                break;
            }
        }
        Ok(fired)
    }

    /// Takes one entry of the `leaves_due` index: the leave to announce, if this node took it.
    async fn take_one(&self, member: String, score: String) -> Option<(Arc<str>, Arc<str>)> {
        let (channel, client) = member.split_once('\n')?;
        let [_, pc, pg] = self.keys.chan_presence(channel, &self.node);
        let script = &self.scripts.chan_take;
        let mut con = self.conn();
        let c = client.to_string();
        let (topic, leave) = (
            self.keys.channel_topic(channel),
            self.event(channel, "leave", client),
        );
        let r: i64 = self
            .call("channel presence", async move {
                script
                    .key(pg)
                    .key(pc)
                    .arg(c)
                    .arg(topic)
                    .arg(leave)
                    .invoke_async(&mut con)
                    .await
            })
            .await
            .ok()?;
        let fired = (r == -1).then(|| (Arc::from(channel), Arc::from(client)));
        let next = if r > 0 { r.to_string() } else { String::new() };
        let script = &self.scripts.chan_settle;
        let mut con = self.conn();
        let key = self.keys.leaves_due();
        let _ = self
            .call("channel presence", async move {
                script
                    .key(key)
                    .arg(member)
                    .arg(score)
                    .arg(next)
                    .invoke_async::<i64>(&mut con)
                    .await
            })
            .await;
        fired
    }

    /// The client ids whose leave from `channel` is pending (within their grace), at most
    /// [`presence::PAGE_MAX`].
    pub async fn pending_leaves(&self, channel: &str) -> Result<Vec<Arc<str>>, EngineError> {
        let [_, _, pg] = self.keys.chan_presence(channel, &self.node);
        let mut con = self.conn();
        let names: Vec<String> = self
            .call("channel presence", async move {
                redis::cmd("ZRANGE")
                    .arg(pg)
                    .arg(0)
                    .arg(presence::PAGE_MAX as i64 - 1)
                    .query_async(&mut con)
                    .await
            })
            .await?;
        Ok(names.into_iter().map(Arc::from).collect())
    }

    /// Changes whenever the node rewrote its presence; channel presence rewrites too.
    pub fn resyncs(&self) -> u64 {
        self.stats
            .resyncs
            .load(std::sync::atomic::Ordering::Acquire)
    }
}
