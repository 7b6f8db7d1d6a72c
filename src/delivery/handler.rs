//! The embedding surface for callbacks: a [`Handler`] for application message types, and the
//! [`Session`] view it gets of one connection.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::Message;

use crate::outbox::{Enqueued, Outbox};
use crate::protocol::envelope;
use crate::registry::Registry;

/// Whether a handler took care of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// The handler dealt with it.
    Yes,
    /// Fall through to tether's default (`error` `unknown_type` / `binary_not_supported`).
    No,
}

/// Application callbacks. All have defaults; they run on the session's task, so keep them short
/// and spawn for slow work (use a [`Handle`] to reply later).
pub trait Handler: Send + Sync + 'static {
    /// Whether sessions get tether's `welcome` as their first frame; an application that speaks
    /// a protocol of its own (the echo example, for conformance suites) turns it off.
    fn welcome(&self) -> bool {
        true
    }
    /// A session completed its handshake and got `welcome`.
    fn on_connect(&self, _session: &Session<'_>) {}
    /// Any text frame, before tether reads it as an envelope; return `Yes` to take it over raw.
    fn on_text(&self, _session: &Session<'_>, _text: &str) -> Handled {
        Handled::No
    }
    /// An envelope whose `type` is not built in; `data` is the raw JSON text.
    fn on_message(&self, _session: &Session<'_>, _kind: &str, _data: Option<&RawValue>) -> Handled {
        Handled::No
    }
    /// A binary frame.
    fn on_binary(&self, _session: &Session<'_>, _data: &Bytes) -> Handled {
        Handled::No
    }
    /// The server is stopping: called once, before the drain or the migration begins (before
    /// `shutdown` reaches any client), so the application can say its own goodbye
    /// ([`Handle::broadcast_here`](crate::Handle::broadcast_here)) or flush state through `handle`. It runs on the shutdown task: keep it short.
    fn on_shutdown(&self, _handle: &crate::Handle) {}
    /// The session ended; `code` is the close code sent or received (1006 when the connection
    /// dropped without a close frame).
    fn on_disconnect(&self, _session: &Session<'_>, _code: u16) {}
}

/// The handler used when the application installs none.
pub(crate) struct NoHandler;

impl Handler for NoHandler {}

/// One session, as seen from a [`Handler`] callback.
pub struct Session<'a> {
    /// The session's shared state.
    pub(crate) outbox: &'a Arc<Outbox>,
    /// The registry, which queues and accounts for every frame sent.
    pub(crate) registry: &'a Registry,
    /// In `on_connect`: the node this client id's sessions left with 1012 (restart, rotation).
    pub(crate) migrated_from: Option<&'a str>,
}

impl Session<'_> {
    /// The server-generated session id.
    pub fn id(&self) -> String {
        self.outbox.id.to_string()
    }
    /// In `on_connect` in a cluster: the node id a session of this client id was closed on with
    /// 1012 (restart or rotation) within the last minute, when this session is its migration.
    pub fn migrated_from(&self) -> Option<&str> {
        self.migrated_from
    }
    /// The client id the session connected with.
    pub fn client_id(&self) -> &str {
        &self.outbox.client_id
    }
    /// The client address (forwarded address when behind a trusted proxy).
    pub fn remote_addr(&self) -> SocketAddr {
        self.outbox.remote()
    }
    /// Sends an envelope of `kind` with raw JSON `data` to this session only.
    pub fn send(&self, kind: &str, data: Option<&str>) -> bool {
        self.send_message(Message::Text(envelope(kind, None, None, data)))
    }
    /// Sends a text frame exactly as given (no envelope).
    pub fn send_text(&self, text: &str) -> bool {
        self.send_message(Message::text(text))
    }
    /// Sends a binary frame.
    pub fn send_binary(&self, data: Bytes) -> bool {
        self.send_message(Message::Binary(data))
    }
    fn send_message(&self, m: Message) -> bool {
        self.registry.enqueue(self.outbox, m) == Enqueued::Queued
    }
}
