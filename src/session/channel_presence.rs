//! The client `presence` command's answer (docs/protocol.md §14): gathered from every node, so
//! it runs as a task and queues its answer like any other frame.

use std::sync::Arc;

use tokio_tungstenite::tungstenite::Message;

use crate::outbox::Outbox;
use crate::protocol::{envelope, err, error_envelope};
use crate::state::Shared;

/// Queues `presence` `{"channel","sessions","clients":[…]}` for the session (echoing `id`).
pub fn answer(shared: &Arc<Shared>, outbox: &Arc<Outbox>, channel: &str, id: Option<&str>) {
    let (shared, outbox) = (Arc::clone(shared), Arc::clone(outbox));
    let (channel, id) = (channel.to_string(), id.map(str::to_string));
    tokio::spawn(async move {
        let frame = match shared.handle.channel_presence(&channel).await {
            Ok(p) => envelope("presence", None, id.as_deref(), Some(&p.to_json())),
            Err(_) => error_envelope(
                err::UNAVAILABLE,
                "presence is not available right now; retry",
                None,
                id.as_deref(),
            ),
        };
        shared.registry.enqueue(&outbox, Message::Text(frame));
    });
}
