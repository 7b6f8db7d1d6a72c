//! The push handle for application code: a cheap, cloneable [`Handle`] to push to a client id,
//! a session, a channel or everyone, and to close sessions. The HTTP API is built on the same
//! handle. With history on, pushes and publishes go through the engine, which numbers, stores
//! and fans them out; without it they go straight to the registry and nothing is kept.

use std::future::Future;
use std::sync::Arc;

use futures_util::FutureExt;
use tokio_tungstenite::tungstenite::Message;

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
}

/// What one push or publish did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sent {
    /// Queues that accepted it (sessions that have or will have it).
    pub delivered: usize,
    /// Its place in the stream, with history on.
    pub seq: Option<u64>,
}

impl Handle {
    /// Pushes to every session of `client_id`. With history on the message is also stored (so
    /// `Some(0)` means stored for later); without it `None` means the id has no session.
    pub fn push(&self, client_id: &str, kind: &str, data: Option<&str>) -> Option<usize> {
        now(self.push_client(client_id, kind, data))
            .flatten()
            .map(|s| s.delivered)
    }

    /// Pushes to the subscribers of `channel` (and its history, with history on); returns how
    /// many queued it.
    pub fn publish(&self, channel: &str, kind: &str, data: Option<&str>) -> usize {
        now(self.publish_channel(channel, kind, data)).map_or(0, |s| s.delivered)
    }

    /// Pushes to one session only; `None` when no such session is live. Not stored: a session
    /// id never comes back, and the client stream's other sessions must not see it on resume.
    pub fn push_session(&self, session_id: &str, kind: &str, data: Option<&str>) -> Option<usize> {
        let h = self.registry.get(SessionId::parse(session_id)?)?;
        let m = Message::Text(envelope(kind, None, None, data));
        Some(usize::from(
            self.registry.enqueue(&h, m) == Enqueued::Queued,
        ))
    }

    /// Pushes to every live session; returns how many queued it. Never stored: everyone is no
    /// stream.
    pub fn broadcast(&self, kind: &str, data: Option<&str>) -> usize {
        let m = Message::Text(envelope(kind, None, None, data));
        self.registry.broadcast(&m)
    }

    /// [`Handle::broadcast`] paced in slices (see `Registry::broadcast_paced`), for async callers
    /// such as the HTTP API.
    pub async fn broadcast_paced(&self, kind: &str, data: Option<&str>) -> usize {
        let m = Message::Text(envelope(kind, None, None, data));
        self.registry.broadcast_paced(&m).await
    }

    /// Push to a client id; `None` when it has no session and history is off.
    pub(crate) async fn push_client(
        &self,
        client_id: &str,
        kind: &str,
        data: Option<&str>,
    ) -> Result<Option<Sent>, EngineError> {
        if !self.history {
            let m = Message::Text(envelope(kind, None, None, data));
            return Ok(self
                .registry
                .send_to_client(client_id, &m)
                .map(|delivered| Sent {
                    delivered,
                    seq: None,
                }));
        }
        let key = StreamKey::client(client_id);
        let appended = self
            .engine
            .append(&key, sequenced_envelope(kind, None, data))
            .await?;
        Ok(Some(Sent {
            delivered: appended.delivered,
            seq: Some(appended.position.seq),
        }))
    }

    /// Publish to a channel.
    pub(crate) async fn publish_channel(
        &self,
        channel: &str,
        kind: &str,
        data: Option<&str>,
    ) -> Result<Sent, EngineError> {
        if !self.history {
            let m = Message::Text(envelope(kind, Some(channel), None, data));
            return Ok(Sent {
                delivered: self.registry.publish(channel, &m),
                seq: None,
            });
        }
        let key = StreamKey::channel(channel);
        let appended = self
            .engine
            .append(&key, sequenced_envelope(kind, Some(channel), data))
            .await?;
        Ok(Sent {
            delivered: appended.delivered,
            seq: Some(appended.position.seq),
        })
    }

    /// Closes a session with 4002 (admin close); false when it is unknown.
    pub fn disconnect(&self, session_id: &str) -> bool {
        let Some(id) = SessionId::parse(session_id) else {
            return false;
        };
        match self.registry.get(id) {
            Some(h) => {
                h.request_close(crate::protocol::close::ADMIN);
                true
            }
            None => false,
        }
    }

    /// Live sessions.
    pub fn connections(&self) -> usize {
        self.registry.len()
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
