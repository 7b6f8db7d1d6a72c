//! Requests to other nodes: a message sealed (signed when `cluster_secret` is set), sent to the
//! nodes that hold a recipient, and the answers gathered within `cluster_reply_timeout`: pushes,
//! publishes, broadcasts, kicks and session listings.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use tokio::sync::oneshot;

use super::inbox::{self, Gathered};
use super::wire::{Head, Kind};
use super::{CALL_TIMEOUT, Cluster, Routed};
use crate::id::SessionId;
use crate::stream::EngineError;

impl Cluster {
    /// A message from this node, signed when `cluster_secret` is set.
    pub(super) fn seal(&self, kind: Kind, req: u64, target: &str, body: &[u8]) -> Vec<u8> {
        let head = Head {
            kind,
            origin: &self.node,
            req,
            epoch: None,
            seq: 0,
            target,
        };
        self.signer.seal(&head, body)
    }

    /// PUBLISHes `msg` on `topic` through [`Cluster::call`]; how many subscribers got it. On a
    /// Redis Cluster a tagged topic is sharded: `SPUBLISH`, on its shard only.
    pub(crate) async fn publish(
        &self,
        what: &str,
        topic: String,
        msg: Vec<u8>,
    ) -> Result<usize, EngineError> {
        let mut con = self.conn();
        let publish = if self.keys.sharded() && topic.contains('{') {
            "SPUBLISH"
        } else {
            "PUBLISH"
        };
        self.call(what, async move {
            redis::cmd(publish)
                .arg(topic)
                .arg(msg)
                .query_async::<usize>(&mut con)
                .await
        })
        .await
    }

    /// Resolves once this node's subscriber has handled every message of `key` published
    /// before the call: a marker sent to itself comes back after them (Redis keeps publish
    /// order on one connection). On a Redis Cluster the marker goes on the stream's own topic,
    /// the shard its messages come from (other nodes listening there ignore it).
    pub async fn settle(&self, key: &crate::stream::StreamKey) -> Result<(), EngineError> {
        let ticket = self.pending.begin();
        let req = ticket.req;
        self.pending.cancel(ticket);
        let (tx, rx) = oneshot::channel();
        self.inbox.markers.lock().insert(req, tx);
        let msg = self.seal(Kind::Marker, req, "", b"");
        let topic = if self.keys.sharded() {
            self.keys.stream_topic(key)
        } else {
            self.keys.node_topic(&self.node)
        };
        let sent = self.publish("settle", topic, msg).await;
        let outcome = match sent {
            Ok(_) => match tokio::time::timeout(CALL_TIMEOUT, rx).await {
                Ok(_) => Ok(()),
                Err(_) => Err(EngineError::Unavailable(Arc::new(std::io::Error::other(
                    "redis: settle marker did not come back",
                )))),
            },
            Err(e) => Err(e),
        };
        self.inbox.markers.lock().remove(&req);
        outcome
    }

    /// Publishes `msg` to `topic` under `ticket` and gathers the receivers' answers.
    pub(super) async fn request(
        &self,
        topic: String,
        kind: Kind,
        target: &str,
        body: &[u8],
    ) -> Result<Gathered, EngineError> {
        let ticket = self.pending.begin();
        let msg = self.seal(kind, ticket.req, target, body);
        let sent = self.publish("publish", topic, msg).await;
        match sent {
            Ok(receivers) => Ok(self.gather(ticket, receivers).await),
            Err(e) => {
                self.pending.cancel(ticket);
                Err(e)
            }
        }
    }

    /// Sends `msg` to each node holding `client_id`; how many got it. On one Redis a step
    /// publishes to each node its presence lists; on a Redis Cluster one `SPUBLISH` on the
    /// client id's topic, which exactly those nodes subscribe (`shard_presence.rs`).
    pub(super) async fn to_client(
        &self,
        what: &str,
        client_id: &str,
        msg: Vec<u8>,
    ) -> Result<usize, EngineError> {
        if self.keys.sharded() {
            return self
                .publish(what, self.keys.client_topic(client_id), msg)
                .await;
        }
        let mut con = self.conn();
        let script = &self.scripts.route_client;
        let key = self.keys.presence(client_id);
        self.call(what, async move {
            script
                .key(key)
                .arg(msg)
                .invoke_async::<usize>(&mut con)
                .await
        })
        .await
    }

    /// Waits for `expected` answers to `ticket`, counting a short answer as partial.
    pub(crate) async fn gather(&self, ticket: inbox::Ticket, expected: usize) -> Gathered {
        let g = self
            .pending
            .gather(ticket, expected, self.reply_timeout)
            .await;
        if !g.complete {
            self.stats.partial.fetch_add(1, Ordering::Relaxed);
        }
        g
    }

    /// Sends an unsequenced frame to every session of `client_id` on every node. `None`
    /// when no node holds the client id.
    pub async fn send_client(
        &self,
        client_id: &str,
        frame: &[u8],
    ) -> Result<Option<Routed>, EngineError> {
        let ticket = self.pending.begin();
        let msg = self.seal(Kind::Client, ticket.req, client_id, frame);
        let nodes = self.to_client("route", client_id, msg).await;
        match nodes {
            Ok(0) => {
                self.pending.cancel(ticket);
                Ok(None)
            }
            Ok(n) => Ok(Some(routed(self.gather(ticket, n).await))),
            Err(e) => {
                self.pending.cancel(ticket);
                Err(e)
            }
        }
    }

    /// Sends an unsequenced frame to every subscriber of `channel` on every node.
    pub async fn send_channel(&self, channel: &str, frame: &[u8]) -> Result<Routed, EngineError> {
        let g = self
            .request(
                self.keys.channel_topic(channel),
                Kind::Channel,
                channel,
                frame,
            )
            .await?;
        Ok(routed(g))
    }

    /// Sends a frame to every session on every node.
    pub async fn send_all(&self, frame: &[u8]) -> Result<Routed, EngineError> {
        Ok(routed(
            self.request(self.keys.all(), Kind::All, "", frame).await?,
        ))
    }

    /// Sends a frame to one session, wherever it is; `delivered` 0 when no node has it.
    pub async fn send_session(
        &self,
        session_id: &str,
        frame: &[u8],
    ) -> Result<Routed, EngineError> {
        Ok(routed(
            self.request(self.keys.all(), Kind::Session, session_id, frame)
                .await?,
        ))
    }

    /// Closes one session with 4002, wherever it is; `delivered` 1 when some node had it.
    pub async fn kill(&self, session_id: &str) -> Result<Routed, EngineError> {
        Ok(routed(
            self.request(self.keys.all(), Kind::Kill, session_id, b"")
                .await?,
        ))
    }

    /// Other nodes' listings of their sessions of `client_id` (see `listing::render`).
    pub async fn list_remote(&self, client_id: &str) -> Result<Vec<String>, EngineError> {
        let mut parts = Vec::new();
        for (node, _) in self.presence(client_id).await? {
            if *node == *self.node {
                continue;
            }
            let g = self
                .request(self.keys.node_topic(&node), Kind::List, client_id, b"")
                .await?;
            parts.extend(
                g.bodies
                    .iter()
                    .map(|b| String::from_utf8_lossy(b).into_owned()),
            );
        }
        Ok(parts)
    }

    /// Every node's part of one page of all sessions (see `listing::render_page`), this
    /// node's included; a node that did not answer in time is missing from it.
    pub async fn list_page(
        &self,
        after: Option<SessionId>,
        limit: usize,
    ) -> Result<Vec<Bytes>, EngineError> {
        let after = after.map(|id| id.to_string()).unwrap_or_default();
        let g = self
            .request(
                self.keys.all(),
                Kind::Page,
                &after,
                limit.to_string().as_bytes(),
            )
            .await?;
        if !g.complete {
            log::warn!("listing sessions: a node did not answer within the reply timeout");
        }
        Ok(g.bodies)
    }
}

fn routed(g: Gathered) -> Routed {
    Routed {
        delivered: g.delivered,
        partial: !g.complete,
    }
}
