//! Server-side control endpoints (docs/protocol.md §14): subscribe and unsubscribe a client
//! id's sessions, close them all (and block the client id), list and lift blocks. Each call is
//! also a plain function `(shared, body bytes) -> (status, JSON body)`, so `POST /api/v1/batch`
//! runs the same code in process; a body names what a path or query names in the single call.

use std::borrow::Cow;
use std::time::{Duration, UNIX_EPOCH};

use hyper::StatusCode;
use serde::Deserialize;

use super::delivery::{channel_ok, client_id_ok, unavailable};
use crate::delivery::control::Reached;
use crate::delivery::handle::ControlError;
use crate::http::error::Error;
use crate::net::blocks::MAX_BLOCK_MS;
use crate::protocol::{json_str, timestamp};
use crate::state::Shared;

/// An answer: status and JSON body.
pub type Answer = (StatusCode, String);

/// `POST /api/v1/subscribe`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscribeBody<'a> {
    #[serde(borrow)]
    client_id: Cow<'a, str>,
    #[serde(borrow)]
    channel: Cow<'a, str>,
    #[serde(borrow, default)]
    since: Option<Cow<'a, str>>,
}

/// `POST /api/v1/unsubscribe`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnsubscribeBody<'a> {
    #[serde(borrow)]
    client_id: Cow<'a, str>,
    #[serde(borrow)]
    channel: Cow<'a, str>,
}

/// A kick (`DELETE /api/v1/clients/{client_id}?block_for=`) as a body, and an unblock's.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientBody<'a> {
    #[serde(borrow)]
    client_id: Cow<'a, str>,
    #[serde(borrow, default)]
    block_for: Option<Cow<'a, str>>,
}

/// `POST /api/v1/subscribe` `{"client_id","channel","since"?}` → `{"sessions":n}`.
pub async fn subscribe(shared: &Shared, body: &[u8]) -> Answer {
    settle(subscribe_call(shared, body).await)
}

/// `POST /api/v1/unsubscribe` `{"client_id","channel"}` → `{"sessions":n}`.
pub async fn unsubscribe(shared: &Shared, body: &[u8]) -> Answer {
    settle(unsubscribe_call(shared, body).await)
}

/// A kick: `{"client_id","block_for"?}` → `{"closed":n}`.
pub async fn kick(shared: &Shared, body: &[u8]) -> Answer {
    settle(kick_call(shared, body).await)
}

/// `GET /api/v1/blocks` (the body is ignored) → `[{"client_id","until"}]`.
// Only the in-process test calls these two by body; the API routes by path.
#[cfg(test)]
pub async fn blocks(shared: &Shared, _body: &[u8]) -> Answer {
    settle(blocks_call(shared).await)
}

/// Lifts a block: `{"client_id"}` → 200, or 404 `unknown_block`.
// Only the in-process test calls these two by body; the API routes by path.
#[cfg(test)]
pub async fn unblock(shared: &Shared, body: &[u8]) -> Answer {
    settle(unblock_call(shared, body).await)
}

fn settle(r: Result<Answer, Error>) -> Answer {
    r.unwrap_or_else(|e| (e.status(), e.body()))
}

pub(super) async fn subscribe_call(shared: &Shared, body: &[u8]) -> Result<Answer, Error> {
    let b: SubscribeBody<'_> = super::body::parse(body)?;
    client_id_ok(&b.client_id)?;
    channel_ok(&b.channel)?;
    let r = shared
        .handle
        .subscribe(&b.client_id, &b.channel, b.since.as_deref())
        .await
        .map_err(control_error)?;
    Ok((StatusCode::OK, reached("sessions", &r, "")))
}

pub(super) async fn unsubscribe_call(shared: &Shared, body: &[u8]) -> Result<Answer, Error> {
    let b: UnsubscribeBody<'_> = super::body::parse(body)?;
    client_id_ok(&b.client_id)?;
    channel_ok(&b.channel)?;
    let r = shared
        .handle
        .unsubscribe(&b.client_id, &b.channel)
        .await
        .map_err(control_error)?;
    Ok((StatusCode::OK, reached("sessions", &r, "")))
}

pub(super) async fn kick_call(shared: &Shared, body: &[u8]) -> Result<Answer, Error> {
    let b: ClientBody<'_> = super::body::parse(body)?;
    kick_client(shared, &b.client_id, b.block_for.as_deref()).await
}

/// The kick itself, from a body or from the path and query.
pub(super) async fn kick_client(
    shared: &Shared,
    client_id: &str,
    block_for: Option<&str>,
) -> Result<Answer, Error> {
    client_id_ok(client_id)?;
    let block_for = block_for.map(block_duration).transpose()?;
    let r = shared
        .handle
        .kick(client_id, block_for)
        .await
        .map_err(control_error)?;
    let until = match block_for.and_then(|_| shared.router.blocked(client_id)) {
        Some(until) => format!(",\"until\":{}", json_str(&rfc3339(until))),
        None => String::new(),
    };
    Ok((StatusCode::OK, reached("closed", &r, &until)))
}

pub(super) async fn blocks_call(shared: &Shared) -> Result<Answer, Error> {
    let list = shared.router.blocks().await.map_err(unavailable)?;
    let items: Vec<String> = list
        .iter()
        .map(|(c, until)| {
            format!(
                "{{\"client_id\":{},\"until\":{}}}",
                json_str(c),
                json_str(&rfc3339(*until))
            )
        })
        .collect();
    Ok((StatusCode::OK, format!("[{}]", items.join(","))))
}

// Only the in-process test calls these two by body; the API routes by path.
#[cfg(test)]
pub(super) async fn unblock_call(shared: &Shared, body: &[u8]) -> Result<Answer, Error> {
    let b: ClientBody<'_> = super::body::parse(body)?;
    unblock_client(shared, &b.client_id).await
}

/// Lifts the block of `client_id`.
pub(super) async fn unblock_client(shared: &Shared, client_id: &str) -> Result<Answer, Error> {
    client_id_ok(client_id)?;
    if !shared
        .handle
        .unblock(client_id)
        .await
        .map_err(control_error)?
    {
        return Err(Error::UnknownBlock);
    }
    Ok((
        StatusCode::OK,
        format!(
            "{{\"client_id\":{},\"unblocked\":true}}",
            json_str(client_id)
        ),
    ))
}

/// `block_for`: a duration with a unit, more than nothing and at most 30 days.
fn block_duration(text: &str) -> Result<Duration, Error> {
    let d = humantime::parse_duration(text.trim()).map_err(|e| {
        Error::InvalidBody(format!(
            "block_for `{}` is not a duration ({e}); write e.g. \"10m\"",
            crate::protocol::cut(text, 32)
        ))
    })?;
    if d.is_zero() || d.as_millis() > u128::from(MAX_BLOCK_MS) {
        return Err(Error::InvalidBody(
            "block_for must be more than 0 and at most 30 days".into(),
        ));
    }
    Ok(d)
}

fn reached(field: &str, r: &Reached, extra: &str) -> String {
    let partial = if r.partial { ",\"partial\":true" } else { "" };
    format!("{{\"{field}\":{}{extra}{partial}}}", r.sessions)
}

fn rfc3339(ms: u64) -> String {
    timestamp(UNIX_EPOCH + Duration::from_millis(ms))
}

fn control_error(e: ControlError) -> Error {
    match e {
        ControlError::BadClientId(why) => Error::BadClientId(why),
        ControlError::BadChannel(why) => Error::BadChannel(why),
        ControlError::TooManyChannels(n) => Error::TooManyChannels(n),
        ControlError::TooManyBlocks(n) => Error::TooManyBlocks(n),
        ControlError::Engine(e) => unavailable(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `POST /api/v1/batch` relies on: each call answers in process as over HTTP.
    #[tokio::test]
    async fn each_call_answers_in_process_with_status_and_json() {
        let server = crate::Server::new(crate::Config::default()).unwrap();
        let shared = &server.shared;
        let (s, b) = subscribe(shared, br#"{"client_id":"a","channel":"c"}"#).await;
        assert_eq!((s, b.as_str()), (StatusCode::OK, r#"{"sessions":0}"#));
        let (s, b) = subscribe(shared, br#"{"client_id":"","channel":"c"}"#).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert!(b.contains("bad_client_id"), "{b}");
        let (s, b) = unsubscribe(shared, br#"{"client_id":"a","channel":"c"}"#).await;
        assert_eq!((s, b.as_str()), (StatusCode::OK, r#"{"sessions":0}"#));
        let (s, b) = kick(shared, br#"{"client_id":"a","block_for":"1m"}"#).await;
        assert_eq!(s, StatusCode::OK);
        assert!(b.starts_with(r#"{"closed":0,"until":""#), "{b}");
        let (s, b) = blocks(shared, b"").await;
        assert_eq!(s, StatusCode::OK);
        assert!(b.starts_with(r#"[{"client_id":"a","until":"#), "{b}");
        assert_eq!(
            unblock(shared, br#"{"client_id":"a"}"#).await.0,
            StatusCode::OK
        );
        let (s, b) = unblock(shared, br#"{"client_id":"a"}"#).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        assert!(b.contains("unknown_block"), "{b}");
        let (s, _) = kick(shared, b"not json").await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
    }
}
