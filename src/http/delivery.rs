//! The delivery endpoints of the API (docs/protocol.md §5, §8): push to a client id or one session,
//! publish to a channel, each with an optional `idempotency_key`, and broadcast. Each is a
//! function of the shared state and the parsed body to an [`Answer`], so a single call and a
//! command of a batch (`batch.rs`) run the same code and answer the same.

use std::borrow::Cow;
use std::future::Future;

use bytes::Bytes;
use hyper::StatusCode;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::delivery::handle::Sent;
use crate::engine::{EngineError, IdempotencyOutcome, RequestDigest, Target};
use crate::http::error::Error;
use crate::id::SessionId;
use crate::protocol;
use crate::state::Shared;

/// `POST /api/v1/push`: exactly one of `client_id` and `session_id`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushBody<'a> {
    #[serde(borrow, default)]
    client_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    session_id: Option<Cow<'a, str>>,
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(borrow, default)]
    idempotency_key: Option<Cow<'a, str>>,
}

/// `POST /api/v1/publish`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishBody<'a> {
    #[serde(borrow)]
    channel: Cow<'a, str>,
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(borrow, default)]
    idempotency_key: Option<Cow<'a, str>>,
}

/// `POST /api/v1/broadcast`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BroadcastBody<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

/// A successful answer before it becomes a response (or a batch's result): status and JSON
/// body. It is also what a repeat of its idempotency key gets.
pub type Answer = (StatusCode, Bytes);

/// What every API handler returns: its answer, or the error the single call would answer.
pub type Reply = Result<Answer, Error>;

fn ok(status: StatusCode, body: String) -> Answer {
    (status, Bytes::from(body))
}

/// Answers a push.
pub async fn push(shared: &Shared, b: PushBody<'_>) -> Reply {
    check_type(&b.kind)?;
    let data = b.data.map(RawValue::get);
    let key = b.idempotency_key.as_deref();
    match (&b.client_id, &b.session_id) {
        (Some(client_id), None) => {
            client_id_ok(client_id)?;
            let target = Target::Client(client_id.as_ref().into());
            let work = async {
                let sent = shared
                    .handle
                    .push(client_id, &b.kind, data)
                    .await
                    .map_err(unavailable)?
                    .ok_or(Error::NoSession)?;
                Ok(match sent.seq {
                    // Nobody got it but history holds it for the next `since`.
                    Some(seq) if sent.delivered == 0 => ok(
                        StatusCode::ACCEPTED,
                        format!(
                            "{{\"delivered\":0,\"stored\":true,\"seq\":{seq}{}}}",
                            sent.partial_field()
                        ),
                    ),
                    seq => ok(StatusCode::OK, answer_body(seq, &sent)),
                })
            };
            let digest = digest(&target, &b.kind, data);
            idempotent(shared, target, key, &digest, work).await
        }
        (None, Some(session_id)) => {
            // Not a session id tether could have made: no session has it, and its idempotency
            // key is not worth a claim.
            if SessionId::parse(session_id).is_none() {
                return Err(Error::UnknownSession);
            }
            let target = Target::Session(session_id.as_ref().into());
            let work = async {
                let sent = shared
                    .handle
                    .push_session(session_id, &b.kind, data)
                    .await
                    .map_err(unavailable)?
                    .ok_or(Error::UnknownSession)?;
                Ok(ok(StatusCode::OK, answer_body(None, &sent)))
            };
            let digest = digest(&target, &b.kind, data);
            idempotent(shared, target, key, &digest, work).await
        }
        _ => Err(Error::InvalidBody(
            "give exactly one of `client_id` and `session_id`".into(),
        )),
    }
}

/// Answers a publish.
pub async fn publish(shared: &Shared, b: PublishBody<'_>) -> Reply {
    check_type(&b.kind)?;
    channel_ok(&b.channel)?;
    let target = Target::Channel(b.channel.as_ref().into());
    let work = async {
        let sent = shared
            .handle
            .publish(&b.channel, &b.kind, b.data.map(RawValue::get))
            .await
            .map_err(unavailable)?;
        Ok(ok(StatusCode::OK, answer_body(sent.seq, &sent)))
    };
    let digest = digest(&target, &b.kind, b.data.map(RawValue::get));
    idempotent(shared, target, b.idempotency_key.as_deref(), &digest, work).await
}

/// Answers a broadcast: every live session on every node, never stored.
pub async fn broadcast(shared: &Shared, b: BroadcastBody<'_>) -> Reply {
    check_type(&b.kind)?;
    let sent = shared
        .handle
        .broadcast(&b.kind, b.data.map(RawValue::get))
        .await;
    Ok(ok(StatusCode::OK, answer_body(None, &sent)))
}

/// What a call asked for, as the idempotency key remembers it: its target, `type` and `data`
/// as received (the raw JSON text), each length-prefixed so no two requests run together.
fn digest(target: &Target, kind: &str, data: Option<&str>) -> RequestDigest {
    use sha2::{Digest, Sha256};
    let (tag, name) = match target {
        Target::Client(n) => ("c", n),
        Target::Channel(n) => ("h", n),
        Target::Session(n) => ("s", n),
    };
    let mut h = Sha256::new();
    for part in [tag, name, kind, data.unwrap_or_default()] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    // `data` absent and `data` an empty text are not the same request.
    h.update([u8::from(data.is_some())]);
    h.finalize().into()
}

/// Runs `work` once per `key` and target within `idempotency_window`; a repeat with the same
/// digest gets the first answer, one with another digest 422 `idempotency_key_reused`. Only
/// successes are remembered: an error delivered nothing, so its retry is new work.
async fn idempotent(
    shared: &Shared,
    target: Target,
    key: Option<&str>,
    digest: &RequestDigest,
    work: impl Future<Output = Reply>,
) -> Reply {
    let Some(key) = key else {
        return work.await;
    };
    if key.is_empty() {
        return Err(Error::InvalidBody(
            "`idempotency_key` must not be empty".into(),
        ));
    }
    let engine = &shared.engine;
    let window = shared.config.idempotency_window;
    match engine.idempotent(&target, key, digest, window).await {
        Err(e @ EngineError::Uncertain(_)) => {
            // The claim may have been taken without an answer reaching us: release it, or every
            // retry within the window would be told the first call is still in progress.
            if let Err(again) = engine.forget(&target, key).await {
                log::warn!("idempotency key not released after an uncertain claim: {again}");
            }
            Err(engine_error(e))
        }
        Err(e) => Err(engine_error(e)),
        Ok(IdempotencyOutcome::InFlight) => Err(Error::InProgress),
        Ok(IdempotencyOutcome::Reused) => Err(Error::IdempotencyKeyReused),
        Ok(IdempotencyOutcome::Repeat(answer)) => decode(&answer).ok_or(Error::InProgress),
        Ok(IdempotencyOutcome::First) => match work.await {
            Ok((status, body)) => {
                let mut answer = status.as_u16().to_string().into_bytes();
                answer.extend_from_slice(&body);
                if let Err(e) = engine
                    .record_answer(&target, key, digest, answer.into())
                    .await
                {
                    log::warn!("idempotency answer not recorded: {e}");
                }
                Ok((status, body))
            }
            Err(e) => {
                if let Err(e) = engine.forget(&target, key).await {
                    log::warn!("idempotency key not released: {e}");
                }
                Err(e)
            }
        },
    }
}

/// A recorded answer: three status digits, then the body.
fn decode(answer: &Bytes) -> Option<Answer> {
    let status = std::str::from_utf8(answer.get(..3)?).ok()?.parse().ok()?;
    let status = StatusCode::from_u16(status).ok()?;
    Some((status, answer.slice(3..)))
}

/// `{"delivered":n}`, with `seq` when numbered and `partial` when some node did not answer.
pub(super) fn answer_body(seq: Option<u64>, sent: &Sent) -> String {
    let seq = seq.map(|s| format!(",\"seq\":{s}")).unwrap_or_default();
    format!(
        "{{\"delivered\":{}{seq}{}}}",
        sent.delivered,
        sent.partial_field()
    )
}

pub(crate) fn unavailable(e: EngineError) -> Error {
    match e {
        EngineError::Uncertain(_) => Error::EngineTimeout(e.to_string()),
        // The API checks names before the engine does; should one slip through, it is still
        // the caller's mistake, not the engine's.
        EngineError::BadClientId(why) => Error::BadClientId(why),
        EngineError::BadChannel(why) => Error::BadChannel(why),
        _ => Error::EngineUnavailable(e.to_string()),
    }
}

fn engine_error(e: EngineError) -> Error {
    match e {
        EngineError::IdempotencyKeyTooLong { .. } => Error::InvalidBody(e.to_string()),
        EngineError::Unavailable(_)
        | EngineError::Uncertain(_)
        | EngineError::BadClientId(_)
        | EngineError::BadChannel(_) => unavailable(e),
    }
}

/// A client id the API takes: by the handshake's rule, so nothing is stored for an id that can
/// never connect (docs/protocol.md §13); 400 `bad_client_id` otherwise.
pub(crate) fn client_id_ok(id: &str) -> Result<(), Error> {
    protocol::valid_client_id(id).map_err(Error::BadClientId)
}

/// A channel name the API takes, by the same rule as a client's `subscribe`; 400 `bad_channel`.
pub(crate) fn channel_ok(name: &str) -> Result<(), Error> {
    protocol::valid_channel(name).map_err(Error::BadChannel)
}

/// A pushed message's `type`: non-empty and not one only the server sends (docs/protocol.md §2), so a
/// backend cannot forge a `shutdown` or a `welcome`.
pub(super) fn check_type(kind: &str) -> Result<(), Error> {
    if kind.is_empty() {
        return Err(Error::InvalidBody("`type` must not be empty".into()));
    }
    if protocol::is_reserved(kind) {
        return Err(Error::InvalidBody(format!(
            "`type` `{}` is reserved for the server's own messages",
            protocol::cut(kind, 64)
        )));
    }
    Ok(())
}
