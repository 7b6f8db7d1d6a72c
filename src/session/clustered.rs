//! The command that waits on Redis in a cluster besides `subscribe` (see `join`): client
//! `publish`. Commands run inside the session's poll, which must never wait, so it runs as a
//! task of its own and queues its answer like any other frame.

use std::sync::Arc;

use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::Message;

use super::commands::published_body;
use crate::outbox::Outbox;
use crate::protocol::{PublishData, envelope, err, error_envelope};
use crate::state::Shared;

/// A client's `publish`, routed through the cluster.
pub fn publish(
    shared: &Arc<Shared>,
    outbox: &Arc<Outbox>,
    data: PublishData<'_>,
    id: Option<&str>,
) {
    let (shared, outbox) = (Arc::clone(shared), Arc::clone(outbox));
    let channel = data.channel.into_owned();
    let kind = data.kind.into_owned();
    let payload = data.data.map(|d| RawValue::get(d).to_string());
    let id = id.map(str::to_string);
    tokio::spawn(async move {
        let sent = shared
            .handle
            .publish(&channel, &kind, payload.as_deref())
            .await;
        let answer = match sent {
            Ok(sent) => envelope(
                "published",
                None,
                id.as_deref(),
                Some(&published_body(&channel, &sent)),
            ),
            Err(e) => error_envelope(
                err::UNAVAILABLE,
                &format!("not published: {e}"),
                None,
                id.as_deref(),
            ),
        };
        shared.registry.enqueue(&outbox, Message::Text(answer));
    });
}
