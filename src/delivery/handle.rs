//! The push handle for application code: a cheap, cloneable [`Handle`] to push to a client id,
//! a session, a channel or everyone, and to close sessions. The HTTP API is built on the same
//! handle. Each operation is one method, answered for every node of a cluster and for this
//! node alone otherwise (server-side control too: subscribe and unsubscribe a client id's
//! sessions, kick them, blocks): the handle builds the message once (a frame to send, or with history
//! on a template the engine numbers) and the [`Router`] decides where it goes.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::FutureExt;
use tokio_tungstenite::tungstenite::Message;

use super::control::Reached;
use super::router::{Frame, Router, To};
use crate::cluster::{Order, Routed};
use crate::engine::EngineError;
use crate::metrics::{Control, Metrics};
use crate::net::blocks;
use crate::protocol::{envelope, sequenced_envelope};

/// A cheap, cloneable handle for pushing from application code.
#[derive(Clone)]
pub struct Handle {
    /// Where messages go: this node, or every node of the cluster.
    router: Router,
    /// `history_size > 0`: messages to client ids and channels are numbered and stored.
    history: bool,
    /// `max_channels_per_session`: also the most channels remembered for a client id.
    max_channels: usize,
    /// Counts server subscribes, unsubscribes and kicks.
    metrics: Arc<Metrics>,
}

/// Why a server-side control call did nothing.
#[derive(Debug, Clone)]
pub enum ControlError {
    /// The client id breaks the name rule (1–256 bytes, no control characters).
    BadClientId(&'static str),
    /// The channel name breaks the name rule.
    BadChannel(String),
    /// The client id has `max_channels_per_session` channels remembered already (the value).
    TooManyChannels(usize),
    /// [`MAX_BLOCKS`](crate::net::blocks::MAX_BLOCKS) blocks are in force (the value).
    TooManyBlocks(usize),
    /// Redis could not be reached, or did not answer in time.
    Engine(EngineError),
}

impl From<EngineError> for ControlError {
    fn from(e: EngineError) -> ControlError {
        ControlError::Engine(e)
    }
}

impl std::fmt::Display for ControlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ControlError::BadClientId(why) => write!(f, "bad client id: {why}"),
            ControlError::BadChannel(why) => write!(f, "bad channel name: {why}"),
            ControlError::TooManyChannels(n) => write!(
                f,
                "the client id has {n} server subscriptions already (max_channels_per_session)"
            ),
            ControlError::TooManyBlocks(n) => write!(f, "{n} blocks are in force already"),
            ControlError::Engine(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ControlError {}

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
    pub(crate) fn new(
        router: Router,
        history: bool,
        max_channels: usize,
        metrics: Arc<Metrics>,
    ) -> Handle {
        Handle {
            router,
            history,
            max_channels,
            metrics,
        }
    }

    /// Subscribes every current session of `client_id`, on every node, to `channel`, as the
    /// server (no `channels` grant needed; each gets `subscribed` with `"by":"server"`; with
    /// history on and `since`, the messages after it first), and remembers it so the client
    /// id's later sessions join at connect. A session holding `max_channels_per_session`
    /// channels gets `error` `too_many_channels` and is not counted.
    pub async fn subscribe(
        &self,
        client_id: &str,
        channel: &str,
        since: Option<&str>,
    ) -> Result<Reached, ControlError> {
        names_ok(client_id, Some(channel))?;
        if !self
            .router
            .remember(client_id, channel, self.max_channels)
            .await?
        {
            return Err(ControlError::TooManyChannels(self.max_channels));
        }
        let order = Order::Subscribe {
            channel: channel.to_string(),
            since: since.map(str::to_string),
        };
        let reached = self.router.order(client_id, order).await?;
        self.metrics.server_control(Control::Subscribe);
        Ok(reached)
    }

    /// Takes every session of `client_id`, on every node, out of `channel` (each that was in
    /// it gets `unsubscribed` with `"by":"server"`) and forgets it for later sessions.
    pub async fn unsubscribe(
        &self,
        client_id: &str,
        channel: &str,
    ) -> Result<Reached, ControlError> {
        names_ok(client_id, Some(channel))?;
        self.router.forget(client_id, channel).await?;
        let order = Order::Unsubscribe {
            channel: channel.to_string(),
        };
        let reached = self.router.order(client_id, order).await?;
        self.metrics.server_control(Control::Unsubscribe);
        Ok(reached)
    }

    /// Closes every session of `client_id`, on every node, with 4002 (each writes what is
    /// queued first); with `block_for`, its upgrades are refused (403 `blocked`) on every node
    /// until then. The block is in force on every node that answered before this returns.
    pub async fn kick(
        &self,
        client_id: &str,
        block_for: Option<Duration>,
    ) -> Result<Reached, ControlError> {
        names_ok(client_id, None)?;
        let mut partial = false;
        if let Some(d) = block_for {
            let until = blocks::now_ms().saturating_add(d.as_millis() as u64);
            match self.router.block(client_id, until).await? {
                Some(p) => partial = p,
                None => return Err(ControlError::TooManyBlocks(blocks::MAX_BLOCKS)),
            }
        }
        let mut reached = self.router.order(client_id, Order::Kick).await?;
        reached.partial |= partial;
        self.metrics.server_control(Control::Kick);
        Ok(reached)
    }

    /// The blocks in force: client ids and when each ends.
    pub async fn blocks(&self) -> Result<Vec<(String, SystemTime)>, ControlError> {
        Ok(self
            .router
            .blocks()
            .await?
            .into_iter()
            .map(|(c, until)| (c.to_string(), UNIX_EPOCH + Duration::from_millis(until)))
            .collect())
    }

    /// Lifts `client_id`'s block on every node; false when none was in force.
    pub async fn unblock(&self, client_id: &str) -> Result<bool, ControlError> {
        names_ok(client_id, None)?;
        Ok(self.router.unblock(client_id).await?)
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

/// Checks names by the rule the handshake applies.
fn names_ok(client_id: &str, channel: Option<&str>) -> Result<(), ControlError> {
    crate::id::valid_client_id(client_id).map_err(ControlError::BadClientId)?;
    if let Some(c) = channel {
        crate::id::valid_channel(c).map_err(ControlError::BadChannel)?;
    }
    Ok(())
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
