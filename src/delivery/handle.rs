//! The push handle for application code: a cheap, cloneable [`Handle`] to push to a client id,
//! a session, a channel or everyone, and to close sessions. The HTTP API is built on the same
//! handle. With history on, pushes and publishes go through the engine, which numbers, stores
//! and fans them out; without it they go straight to the registry and nothing is kept.

use std::future::Future;
use std::sync::Arc;

use futures_util::FutureExt;
use tokio_tungstenite::tungstenite::Message;

use crate::cluster::{Cluster, Routed};
use crate::engine::{Engine, EngineError, StreamKey};
use crate::id::SessionId;
use crate::outbox::Enqueued;
use crate::protocol::{envelope, sequenced_envelope};
use crate::registry::Registry;

/// A cheap, cloneable handle for pushing from application code.
#[derive(Clone)]
pub struct Handle {
    /// The server's registry.
    pub(crate) registry: Arc<Registry>,
    /// Streams, history and idempotency keys.
    pub(crate) engine: Arc<dyn Engine>,
    /// `history_size > 0`: messages to client ids and channels are numbered and stored.
    pub(crate) history: bool,
    /// The cluster, when `redis_url` is set: deliveries go through Redis to every node.
    pub(crate) cluster: Option<Arc<Cluster>>,
}

/// What one push or publish did, on every node of a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// Queues that accepted it (sessions that have or will have it).
    pub delivered: usize,
    /// Its place in the stream, with history on.
    pub seq: Option<u64>,
    /// In a cluster: some node did not answer in time, or Redis was unreachable and only this
    /// node's sessions were reached.
    pub partial: bool,
}

impl Sent {
    /// `,"partial":true` for an answer's JSON when some node did not answer, else nothing.
    pub fn partial_field(&self) -> &'static str {
        if self.partial {
            ",\"partial\":true"
        } else {
            ""
        }
    }

    fn local(delivered: usize) -> Sent {
        Sent {
            delivered,
            seq: None,
            partial: false,
        }
    }

    fn routed(r: Routed) -> Sent {
        Sent {
            delivered: r.delivered,
            seq: None,
            partial: r.partial,
        }
    }
}

impl Handle {
    /// Pushes to every session of `client_id`. With history on the message is also stored (so
    /// `Some(0)` means stored for later); without it `None` means the id has no session.
    ///
    /// In a cluster the delivery goes through Redis and its count is not known at once: the
    /// push is sent in the background and `None` is returned; [`Handle::push_everywhere`]
    /// awaits the cluster-wide outcome.
    pub fn push(&self, client_id: &str, kind: &str, data: Option<&str>) -> Option<usize> {
        if self.cluster.is_some() {
            let (h, c, k, d) = self.owned(client_id, kind, data);
            self.background(
                async move { h.push_everywhere(&c, &k, d.as_deref()).await.map(|_| ()) },
            );
            return None;
        }
        now(self.push_everywhere(client_id, kind, data))
            .flatten()
            .map(|s| s.delivered)
    }

    /// Pushes to the subscribers of `channel` (and its history, with history on); returns how
    /// many queued it (in a cluster: sent in the background, 0 returned, as for [`Handle::push`];
    /// [`Handle::publish_everywhere`] awaits the count).
    pub fn publish(&self, channel: &str, kind: &str, data: Option<&str>) -> usize {
        if self.cluster.is_some() {
            let (h, c, k, d) = self.owned(channel, kind, data);
            self.background(
                async move { h.publish_everywhere(&c, &k, d.as_deref()).await.map(|_| ()) },
            );
            return 0;
        }
        now(self.publish_everywhere(channel, kind, data)).map_or(0, |s| s.delivered)
    }

    /// Pushes to one session of this node only; `None` when no such session is live here. Not
    /// stored: a session id never comes back, and the client stream's other sessions must not
    /// see it on resume.
    pub fn push_session(&self, session_id: &str, kind: &str, data: Option<&str>) -> Option<usize> {
        let outbox = self.registry.get(SessionId::parse(session_id)?)?;
        let m = Message::Text(envelope(kind, None, None, data));
        Some(usize::from(
            self.registry.enqueue(&outbox, m) == Enqueued::Queued,
        ))
    }

    /// Pushes to every live session of this node; returns how many queued it. Never stored:
    /// everyone is no stream. (The HTTP broadcast reaches every node of a cluster.)
    pub fn broadcast(&self, kind: &str, data: Option<&str>) -> usize {
        let m = Message::Text(envelope(kind, None, None, data));
        self.registry.broadcast(&m)
    }

    /// Every session on every node, paced in slices here (see `Registry::broadcast_paced`);
    /// `partial` when some node did not answer or only this node was reached.
    pub async fn broadcast_everywhere(&self, kind: &str, data: Option<&str>) -> Sent {
        let frame = envelope(kind, None, None, data);
        if let Some(c) = &self.cluster {
            match c.send_all(frame.as_bytes()).await {
                Ok(r) => return Sent::routed(r),
                Err(e) => log::debug!("broadcast reaches this node only: {e}"),
            }
            let n = self.registry.broadcast_paced(&Message::Text(frame)).await;
            return Sent {
                partial: true,
                ..Sent::local(n)
            };
        }
        Sent::local(self.registry.broadcast_paced(&Message::Text(frame)).await)
    }

    /// One session wherever it is; `None` when no node has it.
    pub async fn push_session_everywhere(
        &self,
        session_id: &str,
        kind: &str,
        data: Option<&str>,
    ) -> Result<Option<Sent>, EngineError> {
        let Some(c) = &self.cluster else {
            return Ok(self.push_session(session_id, kind, data).map(Sent::local));
        };
        if let Some(n) = self.push_session(session_id, kind, data) {
            return Ok(Some(Sent::local(n)));
        }
        if SessionId::parse(session_id).is_none() {
            return Ok(None);
        }
        let frame = envelope(kind, None, None, data);
        let r = c.send_session(session_id, frame.as_bytes()).await?;
        Ok((r.delivered > 0).then(|| Sent::routed(r)))
    }

    /// Pushes to every session of `client_id` on every node and waits for the outcome: how
    /// many sessions have it, its seq with history on, and `partial` when some node did not
    /// answer in time. `None` when it has no session and history is off. Errors:
    /// `Unavailable` when Redis is down and nobody here has it (not delivered, not stored),
    /// `Uncertain` when Redis took the call but did not answer (it may have been delivered:
    /// do not simply resend).
    pub async fn push_everywhere(
        &self,
        client_id: &str,
        kind: &str,
        data: Option<&str>,
    ) -> Result<Option<Sent>, EngineError> {
        let outcome = match (&self.cluster, self.history) {
            (None, false) => {
                let m = Message::Text(envelope(kind, None, None, data));
                return Ok(self.registry.send_to_client(client_id, &m).map(Sent::local));
            }
            (Some(c), false) => {
                let frame = envelope(kind, None, None, data);
                c.send_client(client_id, frame.as_bytes())
                    .await
                    .map(|r| r.map(Sent::routed))
            }
            (_, true) => {
                let key = StreamKey::client(client_id);
                self.engine
                    .append(&key, &sequenced_envelope(kind, None, data))
                    .await
                    .map(|a| {
                        Some(Sent {
                            delivered: a.delivered,
                            seq: Some(a.position.seq),
                            partial: a.partial,
                        })
                    })
            }
        };
        match outcome {
            Err(EngineError::Unavailable(cause)) if self.cluster.is_some() => {
                // Redis is down: this node's sessions still get it, unnumbered; with nobody
                // here the caller must hear that nothing was delivered or stored.
                let m = Message::Text(envelope(kind, None, None, data));
                match self.registry.send_to_client(client_id, &m) {
                    Some(n) if n > 0 => Ok(Some(Sent {
                        partial: true,
                        ..Sent::local(n)
                    })),
                    _ => Err(EngineError::Unavailable(cause)),
                }
            }
            other => other,
        }
    }

    /// Publishes to `channel`'s subscribers on every node and waits for the count (errors as
    /// for [`Handle::push_everywhere`]).
    pub async fn publish_everywhere(
        &self,
        channel: &str,
        kind: &str,
        data: Option<&str>,
    ) -> Result<Sent, EngineError> {
        let outcome = match (&self.cluster, self.history) {
            (None, false) => {
                let m = Message::Text(envelope(kind, Some(channel), None, data));
                return Ok(Sent::local(self.registry.publish(channel, &m)));
            }
            (Some(c), false) => {
                let frame = envelope(kind, Some(channel), None, data);
                c.send_channel(channel, frame.as_bytes())
                    .await
                    .map(Sent::routed)
            }
            (_, true) => {
                let key = StreamKey::channel(channel);
                self.engine
                    .append(&key, &sequenced_envelope(kind, Some(channel), data))
                    .await
                    .map(|a| Sent {
                        delivered: a.delivered,
                        seq: Some(a.position.seq),
                        partial: a.partial,
                    })
            }
        };
        match outcome {
            Err(EngineError::Unavailable(_)) if self.cluster.is_some() => {
                let m = Message::Text(envelope(kind, Some(channel), None, data));
                Ok(Sent {
                    partial: true,
                    ..Sent::local(self.registry.publish(channel, &m))
                })
            }
            other => other,
        }
    }

    /// Closes a session of this node with 4002 (admin close); false when it is unknown here.
    pub fn disconnect(&self, session_id: &str) -> bool {
        let Some(id) = SessionId::parse(session_id) else {
            return false;
        };
        match self.registry.get(id) {
            Some(outbox) => {
                outbox.request_close(crate::protocol::close::ADMIN);
                true
            }
            None => false,
        }
    }

    /// Closes a session wherever it is (4002); false when no node has it.
    pub async fn disconnect_everywhere(&self, session_id: &str) -> Result<bool, EngineError> {
        if self.disconnect(session_id) {
            return Ok(true);
        }
        match &self.cluster {
            Some(c) if SessionId::parse(session_id).is_some() => {
                Ok(c.kill(session_id).await?.delivered > 0)
            }
            _ => Ok(false),
        }
    }

    /// Live sessions of this node.
    pub fn connections(&self) -> usize {
        self.registry.len()
    }

    fn owned(
        &self,
        to: &str,
        kind: &str,
        data: Option<&str>,
    ) -> (Handle, String, String, Option<String>) {
        (
            self.clone(),
            to.to_string(),
            kind.to_string(),
            data.map(str::to_string),
        )
    }

    /// Runs a cluster delivery for the synchronous methods without blocking their caller.
    fn background(&self, work: impl Future<Output = Result<(), EngineError>> + Send + 'static) {
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    if let Err(e) = work.await {
                        log::warn!("push from the application not delivered: {e}");
                    }
                });
            }
            Err(_) => log::error!("a cluster push needs a tokio runtime; not sent"),
        }
    }
}

/// Runs an engine call for the synchronous embedding methods. The memory engine answers at
/// once; an engine that would have to wait (a remote one) is reported and counts as not sent,
/// since blocking the caller's thread on it could stall the runtime.
pub(crate) fn now<T>(call: impl Future<Output = Result<T, EngineError>>) -> Option<T> {
    match call.now_or_never() {
        Some(Ok(value)) => Some(value),
        Some(Err(e)) => {
            log::warn!("engine call failed: {e}");
            None
        }
        None => {
            log::error!("engine call did not complete at once; use the async API");
            None
        }
    }
}
