//! The push handle for application code: a cheap, cloneable [`Handle`] to push to a client id,
//! a channel or everyone, and to close sessions. The HTTP API is built on the same handle.

use std::sync::Arc;

use tokio_tungstenite::tungstenite::Message;

use crate::id::SessionId;
use crate::protocol::envelope;
use crate::registry::Registry;

/// A cheap, cloneable handle for pushing from application code.
#[derive(Clone)]
pub struct Handle {
    /// The server's registry.
    pub(crate) registry: Arc<Registry>,
}

impl Handle {
    /// Pushes to every session of `client_id`; `None` when it has no session.
    pub fn push(&self, client_id: &str, kind: &str, data: Option<&str>) -> Option<usize> {
        let m = Message::Text(envelope(kind, None, None, data));
        self.registry.send_to_client(client_id, &m)
    }
    /// Pushes to every live session; returns how many queued it.
    pub fn broadcast(&self, kind: &str, data: Option<&str>) -> usize {
        let m = Message::Text(envelope(kind, None, None, data));
        self.registry.broadcast(&m)
    }
    /// Pushes to the subscribers of `channel`; returns how many queued it.
    pub fn publish(&self, channel: &str, kind: &str, data: Option<&str>) -> usize {
        let m = Message::Text(envelope(kind, Some(channel), None, data));
        self.registry.publish(channel, &m)
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
