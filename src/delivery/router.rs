//! The seam between one node and a cluster. "Is there a cluster?" is asked once, when `state.rs`
//! builds the [`Router`]; everything above asks the router instead, and gets this node's answer
//! on one node and the cluster-wide one on many: where a message goes, who holds a client id,
//! which sessions exist, whether the node is healthy, the dashboard's shared samples, the
//! node's lifecycle and the session hooks the cluster needs (where one node needs nothing, the
//! hook does nothing).
//!
//! A message arrives here built once (a [`Frame`]); the router only decides where those bytes
//! go, so falling back to this node's sessions when Redis is down re-encodes nothing.

use std::sync::Arc;
use std::time::Duration;

use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use super::handle::Sent;
use crate::clock::Clock;
use crate::cluster::Cluster;
use crate::engine::{Engine, EngineError, FrameTemplate, StreamKey};
use crate::id::SessionId;
use crate::outbox::Enqueued;
use crate::protocol::{close, unsequenced};
use crate::registry::{Registry, listing};
use crate::shutdown::AbortOnDrop;

/// Longest a restart waits for its migration marks before it tells the clients to move.
pub use crate::cluster::MARK_WAIT;

/// Who a stream message is for.
#[derive(Clone, Copy, Debug)]
pub enum To<'a> {
    /// Every session of a client id.
    Client(&'a str),
    /// Every subscriber of a channel.
    Channel(&'a str),
}

impl To<'_> {
    fn key(self) -> StreamKey {
        match self {
            To::Client(id) => StreamKey::client(id),
            To::Channel(name) => StreamKey::channel(name),
        }
    }
}

/// One message, encoded once before it is routed.
pub enum Frame {
    /// Delivered as is, kept nowhere (history off).
    Plain(Utf8Bytes),
    /// Numbered, stored and fanned out by the engine (history on).
    Numbered(FrameTemplate),
}

/// What the other nodes' dashboards said, for `/dashboard/data`.
pub enum NodeSamples {
    /// One node: its own samples are the whole picture.
    Alone,
    /// Redis did not answer: only this node's samples are known.
    Unreachable,
    /// Every live node's recent samples, as (node, JSON array) pairs.
    Nodes(Vec<(String, String)>),
}

/// Answers every question about other nodes; cheap to clone.
#[derive(Clone)]
pub struct Router {
    /// Who is connected here.
    registry: Arc<Registry>,
    /// Numbers, stores and fans out stream messages (on Redis in a cluster).
    engine: Arc<dyn Engine>,
    /// This node's name, in presence answers and listings.
    node: Arc<str>,
    /// Session ages in listings.
    clock: Clock,
    /// One node, or many through Redis.
    pub(super) way: Way,
    /// Server-side control's state on this node (see `control.rs`).
    pub(super) control: Arc<super::control::Control>,
    /// `presence_grace`, for the presence task.
    presence_grace: Duration,
}

/// The two implementations of the seam.
#[derive(Clone)]
pub(super) enum Way {
    /// This node is all there is.
    Local,
    /// Other nodes share this Redis.
    Redis(Arc<Cluster>),
}

impl Router {
    /// The router for `cluster`'s nodes, or for this node alone.
    pub fn new(
        registry: Arc<Registry>,
        engine: Arc<dyn Engine>,
        node: Arc<str>,
        clock: Clock,
        cluster: Option<Arc<Cluster>>,
    ) -> Router {
        let control = Arc::new(super::control::Control::new(
            cluster.as_ref().map(|c| Arc::clone(&c.blocks)),
        ));
        let way = match cluster {
            Some(c) => Way::Redis(c),
            None => Way::Local,
        };
        Router {
            registry,
            engine,
            node,
            clock,
            way,
            control,
            presence_grace: crate::config::Config::default().presence_grace,
        }
    }

    /// Sets `presence_grace` (docs/protocol.md §14).
    pub fn with_presence_grace(mut self, grace: Duration) -> Router {
        self.presence_grace = grace;
        self
    }

    /// The cluster, for the tasks of this layer that speak to it directly.
    pub(super) fn cluster(&self) -> Option<&Arc<Cluster>> {
        match &self.way {
            Way::Redis(c) => Some(c),
            Way::Local => None,
        }
    }

    /// A channel's subscriber sessions on every node, and its client ids after `after` (sorted,
    /// at most `limit`) with their sessions; true when some node did not answer in time.
    pub async fn channel_clients(
        &self,
        channel: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(u64, Vec<(Arc<str>, u64)>, bool), EngineError> {
        let (total, mut clients, partial) = match &self.way {
            Way::Redis(c) => c.channel_clients(channel, after, limit).await?,
            Way::Local => {
                let (total, clients) = self.registry.channel_clients(channel, after, limit);
                (total, clients, false)
            }
        };
        // On a presence channel, a client id within its grace is still there as the events
        // have it (no `leave` yet, and no `join` if it returns): listed with 0 sessions.
        if let Some(feed) = self.registry.presence_feed()
            && self.registry.is_presence_channel(channel)
        {
            let grace = match &self.way {
                Way::Redis(c) => c.pending_leaves(channel).await?,
                Way::Local => feed.grace_of(channel),
            };
            crate::registry::presence::with_grace(&mut clients, grace, after, limit);
        }
        Ok((total, clients, partial))
    }

    /// One page of the channels with subscribers on every node: names starting with `prefix`,
    /// after `after`, at most `limit`, with their sessions; true when some node did not
    /// answer in time.
    pub async fn channel_page(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<(Arc<str>, u64)>, bool), EngineError> {
        match &self.way {
            Way::Redis(c) => c.channel_page(prefix, after, limit).await,
            Way::Local => Ok((self.registry.channel_page(prefix, after, limit), false)),
        }
    }

    /// The engine: streams and their history, on every node.
    pub fn engine(&self) -> &Arc<dyn Engine> {
        &self.engine
    }

    /// Who is connected here.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Delivers `frame` to `to` on every node: a `Numbered` frame through the engine, which
    /// also stores it. `None` when a client id has no session and nothing was stored. When
    /// Redis is down this node's sessions still get it, unnumbered and `partial`; a push that
    /// nobody here has fails `Unavailable` (neither delivered nor stored), a publish answers
    /// 0. An `Uncertain` call may have been delivered, so it is passed on and not re-sent.
    pub async fn deliver(&self, to: To<'_>, frame: Frame) -> Result<Option<Sent>, EngineError> {
        let Way::Redis(c) = &self.way else {
            return match frame {
                Frame::Plain(f) => Ok(self.here(to, &Message::Text(f)).map(Sent::local)),
                Frame::Numbered(t) => self.append(to, &t).await,
            };
        };
        let outcome = match (&frame, to) {
            (Frame::Numbered(t), _) => self.append(to, t).await,
            (Frame::Plain(f), To::Client(id)) => c
                .send_client(id, f.as_bytes())
                .await
                .map(|r| r.map(Sent::routed)),
            (Frame::Plain(f), To::Channel(name)) => c
                .send_channel(name, f.as_bytes())
                .await
                .map(|r| Some(Sent::routed(r))),
        };
        let Err(EngineError::Unavailable(cause)) = outcome else {
            return outcome;
        };
        let frame = match frame {
            Frame::Plain(f) => f,
            Frame::Numbered(t) => unsequenced(&t),
        };
        match (to, self.here(to, &Message::Text(frame))) {
            (To::Channel(_), Some(n)) | (To::Client(_), Some(n @ 1..)) => Ok(Some(Sent {
                partial: true,
                ..Sent::local(n)
            })),
            _ => Err(EngineError::Unavailable(cause)),
        }
    }

    async fn append(&self, to: To<'_>, t: &FrameTemplate) -> Result<Option<Sent>, EngineError> {
        let a = self.engine.append(&to.key(), t).await?;
        Ok(Some(Sent {
            delivered: a.delivered,
            seq: Some(a.position.seq),
            partial: a.partial,
        }))
    }

    /// This node's sessions of `to`; `None` when a client id has none.
    fn here(&self, to: To<'_>, m: &Message) -> Option<usize> {
        match to {
            To::Client(id) => self.registry.send_to_client(id, m),
            To::Channel(name) => Some(self.registry.publish(name, m)),
        }
    }

    /// Every session on every node, paced in slices here (see `Registry::broadcast_paced`);
    /// `partial` when some node did not answer or only this node was reached.
    pub async fn broadcast(&self, frame: Utf8Bytes) -> Sent {
        let mut partial = false;
        if let Way::Redis(c) = &self.way {
            match c.send_all(frame.as_bytes()).await {
                Ok(r) => return Sent::routed(r),
                Err(e) => log::debug!("broadcast reaches this node only: {e}"),
            }
            partial = true;
        }
        let n = self.registry.broadcast_paced(&Message::Text(frame)).await;
        Sent {
            partial,
            ..Sent::local(n)
        }
    }

    /// One session wherever it is; `None` when no node has it. Never stored: a session id
    /// never comes back, and the client stream's other sessions must not see it on resume.
    pub async fn to_session(
        &self,
        session_id: &str,
        frame: Utf8Bytes,
    ) -> Result<Option<Sent>, EngineError> {
        let Some(id) = SessionId::parse(session_id) else {
            return Ok(None);
        };
        if let Some(outbox) = self.registry.get(id) {
            let queued = self.registry.enqueue(&outbox, Message::Text(frame)) == Enqueued::Queued;
            return Ok(Some(Sent::local(usize::from(queued))));
        }
        match &self.way {
            Way::Local => Ok(None),
            Way::Redis(c) => {
                let r = c.send_session(session_id, frame.as_bytes()).await?;
                Ok((r.delivered > 0).then(|| Sent::routed(r)))
            }
        }
    }

    /// Closes a session wherever it is with 4002; false when no node has it.
    pub async fn disconnect(&self, session_id: &str) -> Result<bool, EngineError> {
        let Some(id) = SessionId::parse(session_id) else {
            return Ok(false);
        };
        if let Some(outbox) = self.registry.get(id) {
            outbox.request_close(close::ADMIN);
            return Ok(true);
        }
        match &self.way {
            Way::Local => Ok(false),
            Way::Redis(c) => Ok(c.kill(session_id).await?.delivered > 0),
        }
    }

    /// The nodes holding sessions of `client_id`, with their session counts.
    pub async fn presence(&self, client_id: &str) -> Result<Vec<(String, u64)>, EngineError> {
        match &self.way {
            Way::Redis(c) => c.presence(client_id).await,
            Way::Local => Ok(match self.registry.sessions_of(client_id) {
                0 => Vec::new(),
                n => vec![(self.node.to_string(), n as u64)],
            }),
        }
    }

    /// One page of sessions (of `client_id`, or all) with ids after `after`, as the JSON
    /// array `GET /api/v1/sessions` answers.
    pub async fn list_sessions(
        &self,
        client_id: Option<&str>,
        after: Option<SessionId>,
        limit: usize,
    ) -> Result<String, EngineError> {
        if let (Way::Redis(c), None) = (&self.way, client_id) {
            // Every node's lowest ids after `after`, this node's among them: the page is the
            // lowest `limit` of their union.
            let parts = c.list_page(after, limit).await?;
            let (merged, bad) = listing::merge_pages(parts.iter().map(|p| &p[..]), limit);
            if bad > 0 {
                log::warn!("listing sessions: left out {bad} malformed lines from other nodes");
            }
            return Ok(format!("[{merged}]"));
        }
        let sessions = listing::page(self.registry.snapshot(client_id), after, limit);
        let mut out = String::from("[");
        out.push_str(&listing::render(&sessions, &self.node, self.clock.now_ms()));
        if let (Way::Redis(c), Some(client_id)) = (&self.way, client_id) {
            // Other nodes' sessions of the client id; this node's part is the one above.
            for part in c.list_remote(client_id).await? {
                if !part.is_empty() {
                    if out.len() > 1 {
                        out.push(',');
                    }
                    out.push_str(&part);
                }
            }
        }
        out.push(']');
        Ok(out)
    }

    /// Redis did not answer the last round: this node delivers to its own sessions only.
    pub fn degraded(&self) -> bool {
        matches!(&self.way, Way::Redis(c) if !c.is_up())
    }

    /// Live nodes at the last heartbeat, in a cluster.
    pub fn cluster_nodes(&self) -> Option<u64> {
        match &self.way {
            Way::Redis(c) => Some(c.stats.nodes.load(std::sync::atomic::Ordering::Relaxed)),
            Way::Local => None,
        }
    }

    /// The cluster's lines of `/metrics`, if there is one.
    pub fn render_metrics(&self, o: &mut String) {
        if let Way::Redis(c) = &self.way {
            c.render_metrics(o);
        }
    }

    /// Every live node's recent dashboard samples.
    pub async fn node_samples(&self) -> NodeSamples {
        match &self.way {
            Way::Local => NodeSamples::Alone,
            Way::Redis(c) => match c.dashboards().await {
                Ok(nodes) => NodeSamples::Nodes(nodes),
                Err(_) => NodeSamples::Unreachable,
            },
        }
    }

    /// Shares this node's newest dashboard sample with the others; `latest` runs only when
    /// there are others.
    pub fn share_sample(&self, latest: impl FnOnce() -> Option<String>) {
        if let Way::Redis(c) = &self.way
            && let Some(sample) = latest()
        {
            c.share_sample(sample);
        }
    }

    /// Starts the cluster's background tasks; they stop when the guards drop.
    pub fn start(&self) -> Vec<AbortOnDrop> {
        let mut tasks = match &self.way {
            Way::Redis(c) => c.start(),
            Way::Local => Vec::new(),
        };
        if let Some(feed) = self.registry.presence_feed() {
            let task = super::presence::run(self.clone(), Arc::clone(feed), self.presence_grace);
            tasks.push(AbortOnDrop(tokio::spawn(task)));
        }
        tasks
    }

    /// On shutdown, once the sessions are closed: leaves the cluster (see `Cluster::leave`).
    pub async fn leave(&self, bound: Duration) {
        if let Way::Redis(c) = &self.way {
            if self.registry.presence_feed().is_some() {
                // Every session here is closed: this node's channel entries go, and its
                // clients leave after the grace unless they come back elsewhere. Done here,
                // not left to the presence task, since the node is about to stop listing
                // itself and nobody would clear them after it.
                let _ = tokio::time::timeout(bound, c.clear_own_channels()).await;
            }
            c.leave(bound).await;
        }
    }

    /// The sessions of `clients` are about to be closed with 1012: other nodes learn they
    /// migrate before the clients do (waiting at most `bound`).
    pub async fn mark_migrating(
        &self,
        clients: impl IntoIterator<Item = Arc<str>>,
        bound: Duration,
    ) {
        if let Way::Redis(c) = &self.way {
            c.mark_migrating(clients.into_iter().collect(), bound).await;
        }
    }

    /// A session of `client_id` opened: once this returns, a push from any node reaches it.
    /// Returns the node its client id's sessions migrated from, if any.
    pub async fn opened(&self, client_id: &Arc<str>) -> Option<Arc<str>> {
        match &self.way {
            Way::Redis(c) => c.present(client_id).await,
            Way::Local => None,
        }
    }

    /// A session here subscribed to `channel`: once this returns, a publish from any node
    /// reaches it.
    pub async fn subscribed(&self, channel: &str) {
        if let Way::Redis(c) = &self.way {
            c.watch(channel).await;
        }
    }

    /// Before a session reads `key`'s stream: other nodes must route the stream here first,
    /// or a message appended between the read and the routing would be lost to it. For a
    /// client stream, returns where its sessions migrated from (see [`Router::opened`]).
    pub async fn route_here(&self, key: &StreamKey) -> Option<Arc<str>> {
        match key {
            StreamKey::Client(id) => self.opened(id).await,
            StreamKey::Channel(name) => {
                self.subscribed(name).await;
                None
            }
        }
    }

    /// A session of `client_id` ended with `code`.
    pub fn closed(&self, client_id: &Arc<str>, code: u16) {
        if let Way::Redis(c) = &self.way {
            c.closed(client_id, code);
        }
    }

    /// Deliveries and subscriptions wait on other nodes, so a session's commands, which run
    /// inside its poll and must never wait, hand them to a task of their own.
    pub fn waits_on_nodes(&self) -> bool {
        matches!(self.way, Way::Redis(_))
    }
}
