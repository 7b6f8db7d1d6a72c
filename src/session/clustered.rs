//! The commands that wait on Redis in a cluster: `subscribe` (the node must be listening on the
//! channel's topic before the client hears `subscribed`) and client `publish`. Commands run
//! inside the session's poll, which must never wait, so these run as a task of their own and
//! queue their answer like any other frame.

use std::sync::Arc;

use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::Message;

use super::commands::published_body;
use super::resume;
use crate::engine::{Since, StreamKey};
use crate::outbox::Outbox;
use crate::protocol::{PublishData, envelope, err, error_envelope, json_str};
use crate::state::Shared;

/// Answers `subscribed` once this node listens on the channel's topic.
pub fn confirm_subscribe(
    shared: &Arc<Shared>,
    outbox: &Arc<Outbox>,
    channel: &str,
    id: Option<&str>,
) {
    let (shared, outbox) = (Arc::clone(shared), Arc::clone(outbox));
    let (channel, id) = (channel.to_string(), id.map(str::to_string));
    tokio::spawn(async move {
        shared.router.subscribed(&channel).await;
        let body = format!("{{\"channel\":{}}}", json_str(&channel));
        let ack = envelope("subscribed", None, id.as_deref(), Some(&body));
        shared.registry.enqueue(&outbox, Message::Text(ack));
    });
}

/// The channel stream's hand-over (see `resume`), in a task.
pub fn subscribe_resuming(
    shared: &Arc<Shared>,
    outbox: &Arc<Outbox>,
    channel: &str,
    since: Option<Since>,
    id: Option<&str>,
) {
    let (shared, outbox) = (Arc::clone(shared), Arc::clone(outbox));
    let (channel, id) = (channel.to_string(), id.map(str::to_string));
    tokio::spawn(async move {
        resume::hand_over(
            &shared,
            &outbox,
            StreamKey::channel(&channel),
            since,
            || {
                shared.registry.subscribe(&outbox, &channel);
            },
            |resumed| {
                let body = format!(
                    "{{\"channel\":{}{}}}",
                    json_str(&channel),
                    resumed.json_fields()
                );
                Some(envelope("subscribed", None, id.as_deref(), Some(&body)))
            },
        )
        .await;
    });
}

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
