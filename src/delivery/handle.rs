//! The push handle for application code: a cheap, cloneable [`Handle`] to push to a client id,
//! a session, a channel or everyone, and to close sessions. The HTTP API is built on the same
//! handle. Each operation is one method, answered for every node of a cluster and for this
//! node alone otherwise: the handle builds the message once (a frame to send, or with history
//! on a template the engine numbers) and the [`Router`] decides where it goes.

use std::future::Future;

use futures_util::FutureExt;
use tokio_tungstenite::tungstenite::Message;

use super::router::{Frame, Router, To};
use crate::cluster::Routed;
use crate::engine::EngineError;
use crate::protocol::{envelope, sequenced_envelope};

/// A cheap, cloneable handle for pushing from application code.
#[derive(Clone)]
pub struct Handle {
    /// Where messages go: this node, or every node of the cluster.
    router: Router,
    /// `history_size > 0`: messages to client ids and channels are numbered and stored.
    history: bool,
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

    pub(super) fn local(delivered: usize) -> Sent {
        Sent {
            delivered,
            seq: None,
            partial: false,
        }
    }

    pub(super) fn routed(r: Routed) -> Sent {
        Sent {
            delivered: r.delivered,
            seq: None,
            partial: r.partial,
        }
    }
}

impl Handle {
    /// A handle over `router`; `history` numbers and stores what goes to client ids and
    /// channels.
    pub(crate) fn new(router: Router, history: bool) -> Handle {
        Handle { router, history }
    }

    /// Pushes to every session of `client_id` on every node and waits for the outcome: how
    /// many sessions have it, its seq with history on (so `delivered` 0 means stored for
    /// later), and `partial` when some node did not answer in time. `None` when it has no
    /// session and history is off. Errors: `Unavailable` when Redis is down and nobody here
    /// has it (not delivered, not stored), `Uncertain` when Redis took the call but did not
    /// answer (it may have been delivered: do not simply resend).
    pub async fn push(
        &self,
        client_id: &str,
        kind: &str,
        data: Option<&str>,
    ) -> Result<Option<Sent>, EngineError> {
        let frame = self.frame(kind, None, data);
        self.router.deliver(To::Client(client_id), frame).await
    }

    /// Publishes to `channel`'s subscribers on every node (and its history, with history on)
    /// and waits for the count (errors as for [`Handle::push`]).
    pub async fn publish(
        &self,
        channel: &str,
        kind: &str,
        data: Option<&str>,
    ) -> Result<Sent, EngineError> {
        let frame = self.frame(kind, Some(channel), data);
        let sent = self.router.deliver(To::Channel(channel), frame).await?;
        // A channel always answers a count; `None` is only a client id's.
        Ok(sent.unwrap_or(Sent::local(0)))
    }

    /// Pushes to every live session on every node. Never stored: everyone is no stream.
    pub async fn broadcast(&self, kind: &str, data: Option<&str>) -> Sent {
        self.router
            .broadcast(envelope(kind, None, None, data))
            .await
    }

    /// Pushes to every live session of this node only, at once: for synchronous callbacks
    /// such as [`Handler::on_shutdown`](crate::Handler::on_shutdown), whose goodbye is for the
    /// clients of the node that stops. Returns how many queued it.
    pub fn broadcast_here(&self, kind: &str, data: Option<&str>) -> usize {
        let m = Message::Text(envelope(kind, None, None, data));
        self.router.registry().broadcast(&m)
    }

    /// Pushes to one session wherever it is; `None` when no node has it. Not stored: a
    /// session id never comes back, and the client stream's other sessions must not see it
    /// on resume.
    pub async fn push_session(
        &self,
        session_id: &str,
        kind: &str,
        data: Option<&str>,
    ) -> Result<Option<Sent>, EngineError> {
        let frame = envelope(kind, None, None, data);
        self.router.to_session(session_id, frame).await
    }

    /// Closes a session wherever it is with 4002 (admin close); false when no node has it.
    pub async fn disconnect(&self, session_id: &str) -> Result<bool, EngineError> {
        self.router.disconnect(session_id).await
    }

    /// Whether history is on (`history_size > 0`).
    pub(super) fn history_on(&self) -> bool {
        self.history
    }

    /// The router it sends through.
    pub(super) fn router(&self) -> &Router {
        &self.router
    }

    /// Live sessions of this node.
    pub fn connections(&self) -> usize {
        self.router.registry().len()
    }

    /// The message, encoded once: a frame, or with history on a template for its seq.
    fn frame(&self, kind: &str, channel: Option<&str>, data: Option<&str>) -> Frame {
        if self.history {
            Frame::Numbered(sequenced_envelope(kind, channel, data))
        } else {
            Frame::Plain(envelope(kind, channel, None, data))
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
