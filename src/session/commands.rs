//! Inbound commands, in one place: the envelope is read once, then each built-in type has one
//! small function; anything else goes to the application's handler.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use std::borrow::Cow;
use std::time::{Duration, UNIX_EPOCH};

use serde::Deserialize;

use super::Identity;
use crate::clock::unix_now;
use crate::delivery::handle::now;
use crate::delivery::handler::{Handled, Session};
use crate::engine::{Since, StreamKey};
use crate::outbox::Outbox;
use crate::protocol::{
    self, ChannelData, PublishData, envelope, err, error_envelope, json_str, timestamp,
};
use crate::state::Shared;

/// Where a command's answers go: the sender's own queue, echoing its correlation id.
struct Reply<'a> {
    /// The sender.
    outbox: &'a Arc<Outbox>,
    /// Server state.
    shared: &'a Arc<Shared>,
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

/// A message over the client's rate: refused with `rate_limited`, the connection stays.
pub fn rate_limited(outbox: &Outbox, shared: &Shared, rate: u32) {
    let e = error_envelope(
        err::RATE_LIMITED,
        &format!("more than {rate} messages per second; this one was dropped"),
        None,
        None,
    );
    shared.registry.enqueue(outbox, Message::Text(e));
}

/// A binary frame: the application's, or refused.
pub fn on_binary(data: &Bytes, outbox: &Arc<Outbox>, shared: &Shared) {
    let s = Session {
        outbox,
        registry: &shared.registry,
        migrated_from: None,
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
/// `created` counts the channel streams this session's publishes created.
pub fn on_text(text: &str, outbox: &Arc<Outbox>, shared: &Arc<Shared>, created: &mut u16) {
    let s = Session {
        outbox,
        registry: &shared.registry,
        migrated_from: None,
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
    if matches!(kind, "subscribe" | "unsubscribe" | "refresh" | "presence")
        && super::join::defer(shared, outbox, kind, text, r.id)
    {
        return;
    }
    match kind {
        "heartbeat" => r.ok("heartbeat_ack", None),
        "subscribe" => subscribe(&r, env.data),
        "unsubscribe" => unsubscribe(&r, env.data),
        "publish" => publish(&r, env.data, created),
        "refresh" => refresh(&r, env.data),
        "presence" => presence(&r, env.data),
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

fn too_many_channels(r: &Reply<'_>) {
    super::join::too_many(r.shared, r.outbox, Some(r.text), r.id);
}

/// With auth on, whether the session's token grants `channel`; answers `forbidden` itself.
fn granted(r: &Reply<'_>, channel: &str) -> bool {
    let grants = r.outbox.subs.lock().grants.clone();
    match grants {
        Some(g) if !g.allows(channel) => {
            r.fail(
                err::FORBIDDEN,
                &format!(
                    "your token does not grant channel `{}`",
                    protocol::cut(channel, 64)
                ),
            );
            false
        }
        _ => true,
    }
}

/// A channel command the session queued behind an earlier one (see `join::defer`), handled
/// now; for a `subscribe` that passed its checks, the join to run: channel, `since`, id.
pub(super) fn deferred(
    text: &str,
    outbox: &Arc<Outbox>,
    shared: &Arc<Shared>,
) -> Option<(String, Option<Since>, Option<String>)> {
    let mut r = Reply {
        outbox,
        shared,
        text,
        id: None,
    };
    let env = protocol::parse_inbound(text).ok()?;
    r.id = env.id.map(RawValue::get);
    match env.kind.as_deref().unwrap_or_default() {
        "subscribe" => {
            let (channel, since) = subscribing(&r, env.data)?;
            Some((channel, since, r.id.map(str::to_string)))
        }
        "unsubscribe" => {
            unsubscribe(&r, env.data);
            None
        }
        "refresh" => {
            refresh(&r, env.data);
            None
        }
        "presence" => {
            presence(&r, env.data);
            None
        }
        _ => None,
    }
}

/// A `subscribe`'s checks (name, grant, room), answering a failure itself; the channel and
/// `since` to join.
fn subscribing(r: &Reply<'_>, data: Option<&RawValue>) -> Option<(String, Option<Since>)> {
    let data = channel_of(r, data)?;
    if !granted(r, &data.channel) {
        return None;
    }
    let max = r.shared.config.max_channels_per_session;
    if !super::join::has_room(r.outbox, &data.channel, max) {
        too_many_channels(r);
        return None;
    }
    // Any `since` that is not a position string, a number included, resumes as bad_position;
    // without history there is nothing to resume.
    let since = data.since.filter(|_| r.shared.config.history()).map(|raw| {
        serde_json::from_str::<Cow<'_, str>>(raw.get()).map_or(Since::Bad, |t| Since::parse(&t))
    });
    Some((data.channel.to_string(), since))
}

fn subscribe(r: &Reply<'_>, data: Option<&RawValue>) {
    let Some((channel, since)) = subscribing(r, data) else {
        return;
    };
    // The memory engine answers at once; an engine that cannot is refused here rather than
    // blocking the connection.
    if !super::join::client(r.shared, r.outbox, &channel, since, r.id) {
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

/// `presence {"channel"}` (docs/protocol.md §14): only from a subscriber of a presence channel;
/// answered by a task, since the answer is gathered from every node.
fn presence(r: &Reply<'_>, data: Option<&RawValue>) {
    let Some(data) = channel_of(r, data) else {
        return;
    };
    let subscribed = r
        .outbox
        .subs
        .lock()
        .list
        .iter()
        .any(|c| **c == *data.channel);
    if !r.shared.registry.is_presence_channel(&data.channel) || !subscribed {
        return r.fail(
            err::FORBIDDEN,
            "presence is answered only to subscribers of a presence channel (presence_channels)",
        );
    }
    super::channel_presence::answer(r.shared, r.outbox, &data.channel, r.id);
}

fn publish(r: &Reply<'_>, data: Option<&RawValue>, created: &mut u16) {
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
    if protocol::is_reserved(&data.kind) {
        // A relayed `shutdown` or `welcome` would be taken by other clients as the server's own.
        return r.fail(
            err::RESERVED_TYPE,
            &format!("`{}` is a type only the server sends", data.kind),
        );
    }
    if !granted(r, &data.channel) {
        return;
    }
    if r.shared.router.waits_on_nodes() {
        return super::clustered::publish(r.shared, r.outbox, data, r.id);
    }
    let creates = match creates_stream(r, &data.channel) {
        Some(creates) => creates,
        None => {
            return r.fail(
                err::UNAVAILABLE,
                "history is not available right now; retry",
            );
        }
    };
    let max = r.shared.config.max_channels_per_session;
    if creates && usize::from(*created) >= max.min(usize::from(u16::MAX)) {
        return r.fail(
            err::TOO_MANY_CHANNELS,
            &format!(
                "this session's publishes created {created} channel streams, at most {max} are \
                 allowed (max_channels_per_session); publish to channels that exist"
            ),
        );
    }
    let sent =
        now(r
            .shared
            .handle
            .publish(&data.channel, &data.kind, data.data.map(RawValue::get)));
    let Some(sent) = sent else {
        return r.fail(
            err::UNAVAILABLE,
            "history is not available right now; retry",
        );
    };
    if creates {
        *created = created.saturating_add(1);
    }
    r.ok("published", Some(&published_body(&data.channel, &sent)));
}

/// Whether a publish to `channel` creates its stream (history on, no stream yet); `None` when
/// the engine cannot tell at once. Racing creators only make a session count one it did not
/// create, which errs towards the bound.
fn creates_stream(r: &Reply<'_>, channel: &str) -> Option<bool> {
    if !r.shared.config.history() {
        return Some(false);
    }
    now(r.shared.engine.position(&StreamKey::channel(channel))).map(|p| p.is_none())
}

/// `published` data: the channel, how many got it, its seq with history on.
pub(super) fn published_body(channel: &str, sent: &crate::delivery::handle::Sent) -> String {
    let seq = sent
        .seq
        .map(|s| format!(",\"seq\":{s}"))
        .unwrap_or_default();
    let partial = sent.partial_field();
    format!(
        "{{\"channel\":{},\"delivered\":{}{seq}{partial}}}",
        json_str(channel),
        sent.delivered
    )
}

/// `data` of a client `refresh`.
#[derive(Deserialize)]
struct RefreshData<'a> {
    /// The new token.
    #[serde(borrow)]
    token: Cow<'a, str>,
}

/// `refresh`: a new token for the same `sub` moves the session's expiry and grants, without a
/// reconnect; a bad one, or one for another `sub`, changes nothing.
fn refresh(r: &Reply<'_>, data: Option<&RawValue>) {
    let Some(verifier) = &r.shared.verifier else {
        return r.fail(
            err::INVALID_TOKEN,
            "auth is off on this server: there is no token to refresh",
        );
    };
    let data: RefreshData<'_> = match data.map(|d| serde_json::from_str(d.get())) {
        Some(Ok(d)) => d,
        _ => return r.fail(err::INVALID_DATA, "data must be {\"token\": \"<jwt>\"}"),
    };
    let claims = match verifier.verify(&data.token, unix_now()) {
        Ok(c) => c,
        Err(e) => {
            return r.fail(
                err::INVALID_TOKEN,
                &format!("token refused: {}", e.message()),
            );
        }
    };
    if *claims.sub != *r.outbox.client_id {
        return r.fail(
            err::INVALID_TOKEN,
            "the new token is for another subject (`sub`); a session keeps its client id",
        );
    }
    let identity = Identity::from_claims(claims);
    // Channels the new token no longer grants are left before the new grants take effect, so
    // no message published after this refresh reaches the session on a channel it lost.
    let lost: Vec<Arc<str>> = {
        let subs = r.outbox.subs.lock();
        subs.list
            .iter()
            .filter(|c| identity.grants.as_ref().is_some_and(|g| !g.allows(c)))
            .cloned()
            .collect()
    };
    for channel in &lost {
        r.shared.registry.unsubscribe(r.outbox, channel);
    }
    r.outbox.set_token(identity.expires_at, identity.grants);
    let expires = match identity.expires_at {
        Some(exp) => json_str(&timestamp(UNIX_EPOCH + Duration::from_secs(exp))),
        None => "null".into(),
    };
    r.ok("refreshed", Some(&format!("{{\"expires_at\":{expires}}}")));
    for channel in &lost {
        let body = format!(
            "{{\"channel\":{},\"reason\":\"forbidden\"}}",
            json_str(channel)
        );
        r.send(envelope("unsubscribed", None, None, Some(&body)));
    }
    // Server subscriptions need no grant: those among the lost channels are joined again.
    super::join::rejoin(r.shared, r.outbox, lost, identity.subs);
}
