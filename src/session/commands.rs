//! Inbound commands, in one place: the envelope is read once, then each built-in type has one
//! small function; anything else goes to the application's handler.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::FutureExt;
use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::engine::{Position, StreamKey};
use crate::handle::now;
use crate::handler::{Handled, Session};
use crate::outbox::Outbox;
use crate::protocol::{self, ChannelData, PublishData, envelope, err, error_envelope, json_str};
use crate::state::Shared;

/// Where a command's answers go: the sender's own queue, echoing its correlation id.
struct Reply<'a> {
    /// The sender.
    outbox: &'a Arc<Outbox>,
    /// Server state.
    shared: &'a Shared,
    /// The frame being answered, echoed (cut) in errors.
    text: &'a str,
    /// The client's correlation id, raw JSON.
    id: Option<&'a str>,
}

impl Reply<'_> {
    fn send(&self, msg: Utf8Bytes) {
        self.shared
            .registry
            .enqueue(self.outbox, Message::Text(msg));
    }
    fn ok(&self, kind: &str, data: Option<&str>) {
        self.send(envelope(kind, None, self.id, data));
    }
    fn fail(&self, code: &str, message: &str) {
        self.send(error_envelope(code, message, Some(self.text), self.id));
    }
}

/// A binary frame: the application's, or refused.
pub fn on_binary(data: &Bytes, outbox: &Arc<Outbox>, shared: &Shared) {
    let s = Session {
        outbox,
        registry: &shared.registry,
    };
    if shared.handler.on_binary(&s, data) == Handled::No {
        let e = error_envelope(
            err::BINARY_NOT_SUPPORTED,
            "binary frames are not supported; send JSON text frames",
            None,
            None,
        );
        shared.registry.enqueue(outbox, Message::Text(e));
    }
}

/// A text frame: the application's raw hook first, then the envelope and its command.
pub fn on_text(text: &str, outbox: &Arc<Outbox>, shared: &Shared) {
    let s = Session {
        outbox,
        registry: &shared.registry,
    };
    if shared.handler.on_text(&s, text) == Handled::Yes {
        return;
    }
    let mut r = Reply {
        outbox,
        shared,
        text,
        id: None,
    };
    let env = match protocol::parse_inbound(text) {
        Ok(e) => e,
        Err(bad) => return r.fail(bad.code, &bad.message),
    };
    r.id = env.id.map(RawValue::get);
    let kind = env.kind.as_deref().unwrap_or_default();
    match kind {
        "heartbeat" => r.ok("heartbeat_ack", None),
        "subscribe" => subscribe(&r, env.data),
        "unsubscribe" => unsubscribe(&r, env.data),
        "publish" => publish(&r, env.data),
        other => {
            if shared.handler.on_message(&s, other, env.data) == Handled::No {
                r.fail(
                    err::UNKNOWN_TYPE,
                    &format!("unknown message type `{}`", protocol::cut(other, 64)),
                );
            }
        }
    }
}

/// Reads `{"channel": ...}` and checks the name; answers the error itself.
fn channel_of<'a>(r: &Reply<'_>, data: Option<&'a RawValue>) -> Option<ChannelData<'a>> {
    let data: ChannelData<'a> = match data.map(|d| serde_json::from_str(d.get())) {
        Some(Ok(d)) => d,
        _ => {
            r.fail(err::INVALID_DATA, "data must be {\"channel\": \"<name>\"}");
            return None;
        }
    };
    if let Err(m) = protocol::valid_channel(&data.channel) {
        r.fail(err::INVALID_DATA, &m);
        return None;
    }
    Some(data)
}

fn channel_body(channel: &str) -> String {
    format!("{{\"channel\":{}}}", json_str(channel))
}

fn subscribe(r: &Reply<'_>, data: Option<&RawValue>) {
    let Some(data) = channel_of(r, data) else {
        return;
    };
    if !r.shared.config.history() {
        r.shared.registry.subscribe(r.outbox, &data.channel);
        return r.ok("subscribed", Some(&channel_body(&data.channel)));
    }
    let since = match data.since.as_deref().map(Position::parse).transpose() {
        Ok(since) => since,
        Err(e) => return r.fail(err::INVALID_DATA, &format!("since: {e}")),
    };
    subscribe_resuming(r, &data.channel, since);
}

/// `subscribe` with history on: the channel stream's hand-over, so `subscribed` carries its
/// position and the missed messages follow it before any live one.
fn subscribe_resuming(r: &Reply<'_>, channel: &str, since: Option<Position>) {
    let (shared, outbox) = (r.shared, r.outbox);
    let resume = super::resume::hand_over(
        shared,
        outbox,
        StreamKey::channel(channel),
        since,
        || {
            shared.registry.subscribe(outbox, channel);
        },
        |resumed| {
            let body = format!(
                "{{\"channel\":{}{}}}",
                json_str(channel),
                resumed.json_fields()
            );
            Some(envelope("subscribed", None, r.id, Some(&body)))
        },
    );
    // Commands run inside the session's poll: the memory engine answers at once, and an engine
    // that cannot is refused here rather than blocking the connection.
    if resume.now_or_never().is_none() {
        r.fail(
            err::UNAVAILABLE,
            "history is not available right now; retry",
        );
    }
}

fn unsubscribe(r: &Reply<'_>, data: Option<&RawValue>) {
    let Some(data) = channel_of(r, data) else {
        return;
    };
    r.shared.registry.unsubscribe(r.outbox, &data.channel);
    r.ok("unsubscribed", Some(&channel_body(&data.channel)));
}

fn publish(r: &Reply<'_>, data: Option<&RawValue>) {
    if !r.shared.config.client_publish {
        return r.fail(
            err::FORBIDDEN,
            "clients may not publish on this server (client_publish = false)",
        );
    }
    let data: PublishData<'_> = match data.map(|d| serde_json::from_str(d.get())) {
        Some(Ok(d)) => d,
        _ => {
            return r.fail(
                err::INVALID_DATA,
                "data must be {\"channel\": \"<name>\", \"type\": \"<type>\", \"data\": ...}",
            );
        }
    };
    if let Err(m) = protocol::valid_channel(&data.channel) {
        return r.fail(err::INVALID_DATA, &m);
    }
    let sent = now(r.shared.handle.publish_channel(
        &data.channel,
        &data.kind,
        data.data.map(RawValue::get),
    ));
    let Some(sent) = sent else {
        return r.fail(
            err::UNAVAILABLE,
            "history is not available right now; retry",
        );
    };
    let seq = sent
        .seq
        .map(|s| format!(",\"seq\":{s}"))
        .unwrap_or_default();
    let body = format!(
        "{{\"channel\":{},\"delivered\":{}{seq}}}",
        json_str(&data.channel),
        sent.delivered
    );
    r.ok("published", Some(&body));
}
