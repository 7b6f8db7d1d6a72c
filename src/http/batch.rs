//! `POST /api/v1/batch` (docs/protocol.md §14): up to [`MAX_COMMANDS`] commands in one request,
//! run in order, each answered exactly as its single call would answer it (status and body,
//! errors and idempotency keys included), because each runs that call's own handler.
//!
//! The batch's shape is checked before anything runs: a body that is not
//! `{"commands":[{"<kind>":{…}},…]}`, an unknown kind or more than [`MAX_COMMANDS`] refuse the
//! whole batch with 400 `invalid_body`, so a typo never half-runs one. A command whose own body
//! is wrong gets its single call's error as its result, and the others still run.
//!
//! Consecutive pushes to distinct client ids run at the same time (up to [`WAVE`]): their
//! recipients are disjoint (a session has one client id), so nobody can tell the difference,
//! and in a cluster their Redis and node round trips overlap instead of adding up. Anything
//! else — a second push to a client id of the wave, a push to a session (whose client id is
//! unknown here), a publish (whose subscribers may be anyone), a broadcast — starts a new wave
//! after the previous one has answered, so every recipient gets messages in batch order.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};

use bytes::Bytes;
use futures_util::future::join_all;
use hyper::StatusCode;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::body::parse;
use super::control;
use super::delivery::{self, Answer, Reply};
use crate::http::error::Error;
use crate::state::Shared;

/// Most commands in one batch.
pub const MAX_COMMANDS: usize = 1000;

/// Most commands of a batch in flight at once: bounds the burst a batch puts on Redis.
const WAVE: usize = 128;

/// The command table: each kind a batch may hold, and the single call's handler it runs with
/// its body. Adding a kind is one line here.
macro_rules! commands {
    ($($name:literal => $handler:path,)*) => {
        /// The kinds a batch takes, for the message that refuses another.
        const KINDS: &[&str] = &[$($name),*];

        /// Runs one command of kind `name` (one of [`KINDS`]) with its body.
        async fn run(shared: &Shared, name: &str, body: &RawValue) -> Reply {
            match name {
                $($name => $handler(shared, body).await,)*
                _ => Err(Error::NotFound),
            }
        }
    };
}

commands! {
    "push" => push,
    "publish" => publish,
    "broadcast" => broadcast,
    "subscribe" => subscribe,
    "unsubscribe" => unsubscribe,
    "disconnect" => disconnect,
}

// Each kind's body goes to its single call's handler, parsed by that call's rules.
async fn push(shared: &Shared, body: &RawValue) -> Reply {
    delivery::push(shared, parse(body.get().as_bytes())?).await
}

async fn publish(shared: &Shared, body: &RawValue) -> Reply {
    delivery::publish(shared, parse(body.get().as_bytes())?).await
}

async fn broadcast(shared: &Shared, body: &RawValue) -> Reply {
    delivery::broadcast(shared, parse(body.get().as_bytes())?).await
}

async fn subscribe(shared: &Shared, body: &RawValue) -> Reply {
    Ok(bytes(
        control::subscribe(shared, body.get().as_bytes()).await,
    ))
}

async fn unsubscribe(shared: &Shared, body: &RawValue) -> Reply {
    Ok(bytes(
        control::unsubscribe(shared, body.get().as_bytes()).await,
    ))
}

/// `{"client_id","block_for"?}`: the kick, `DELETE /api/v1/clients/{client_id}?block_for=`.
async fn disconnect(shared: &Shared, body: &RawValue) -> Reply {
    Ok(bytes(control::kick(shared, body.get().as_bytes()).await))
}

fn bytes((status, body): control::Answer) -> Answer {
    (status, Bytes::from(body))
}

/// The batch body: every command still raw, so each is parsed by its own handler's rules.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody<'a> {
    #[serde(borrow)]
    commands: Vec<&'a RawValue>,
}

/// Answers a batch: 200 `{"results":[{"status","body"},…]}`, one per command, in order.
pub async fn batch(shared: &Shared, body: &[u8]) -> Reply {
    let b: BatchBody<'_> = parse(body)?;
    if b.commands.is_empty() || b.commands.len() > MAX_COMMANDS {
        return Err(Error::InvalidBody(format!(
            "`commands` must hold 1 to {MAX_COMMANDS} commands, not {}",
            b.commands.len()
        )));
    }
    let commands = b
        .commands
        .iter()
        .enumerate()
        .map(|(i, raw)| command(i, raw))
        .collect::<Result<Vec<_>, Error>>()?;
    // Text of the results: a typical answer is under 64 bytes.
    let mut out = Vec::with_capacity(16 + commands.len() * 64);
    out.extend_from_slice(b"{\"results\":[");
    let mut first = true;
    let mut rest = &commands[..];
    while !rest.is_empty() {
        let (wave, after) = rest.split_at(wave_len(rest));
        rest = after;
        let replies = join_all(wave.iter().map(|(kind, body)| run(shared, kind, body))).await;
        for reply in replies {
            if !first {
                out.push(b',');
            }
            first = false;
            let (status, body) = answered(reply);
            out.extend_from_slice(format!("{{\"status\":{},\"body\":", status.as_u16()).as_bytes());
            out.extend_from_slice(&body);
            out.push(b'}');
        }
    }
    out.extend_from_slice(b"]}");
    Ok((StatusCode::OK, Bytes::from(out)))
}

/// Command `i`: exactly one known kind and its body.
fn command<'a>(i: usize, raw: &'a RawValue) -> Result<(Cow<'a, str>, &'a RawValue), Error> {
    let shape = || {
        Error::InvalidBody(format!(
            "commands[{i}] must be an object with exactly one of {} as its key",
            KINDS.join(", ")
        ))
    };
    let one: BTreeMap<Cow<'a, str>, &'a RawValue> =
        serde_json::from_str(raw.get()).map_err(|_| shape())?;
    let mut entries = one.into_iter();
    let (Some((kind, body)), None) = (entries.next(), entries.next()) else {
        return Err(shape());
    };
    if !KINDS.contains(&kind.as_ref()) {
        return Err(Error::InvalidBody(format!(
            "commands[{i}]: unknown command `{}`; a batch takes {}",
            crate::protocol::cut(&kind, 64),
            KINDS.join(", ")
        )));
    }
    Ok((kind, body))
}

/// The fields of a push that say who gets it; the handler checks the rest.
#[derive(Deserialize)]
struct Recipient<'a> {
    #[serde(borrow, default)]
    client_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    session_id: Option<Cow<'a, str>>,
}

/// The client id a command pushes to, when it is a push to a client id and nothing else.
fn client_push<'a>(kind: &str, body: &'a RawValue) -> Option<Cow<'a, str>> {
    if kind != "push" {
        return None;
    }
    match serde_json::from_str::<Recipient<'a>>(body.get()) {
        Ok(Recipient {
            client_id: Some(id),
            session_id: None,
        }) => Some(id),
        _ => None,
    }
}

/// How many of `commands`, from the first, may run at the same time: a run of pushes to
/// distinct client ids, at most [`WAVE`]; at least one command.
fn wave_len(commands: &[(Cow<'_, str>, &RawValue)]) -> usize {
    let mut seen = HashSet::new();
    let run = commands
        .iter()
        .take(WAVE)
        .map_while(|(kind, body)| client_push(kind, body))
        .take_while(|id| seen.insert(id.clone()))
        .count();
    run.max(1)
}

/// A command's result as its single call would have answered: the answer, or the error's
/// status and `{"error":…}` body.
fn answered(reply: Reply) -> Answer {
    reply.unwrap_or_else(|e| (e.status(), Bytes::from(e.body())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waves(list: &[(&str, &str)]) -> Vec<usize> {
        let raws: Vec<Box<RawValue>> = list
            .iter()
            .map(|(_, b)| RawValue::from_string(b.to_string()).unwrap())
            .collect();
        let commands: Vec<(Cow<'_, str>, &RawValue)> = list
            .iter()
            .zip(&raws)
            .map(|((k, _), raw)| (Cow::Borrowed(*k), raw.as_ref()))
            .collect();
        let mut rest = &commands[..];
        let mut out = Vec::new();
        while !rest.is_empty() {
            let n = wave_len(rest);
            out.push(n);
            rest = &rest[n..];
        }
        out
    }

    #[test]
    fn only_pushes_to_distinct_client_ids_share_a_wave() {
        let to = |id: &str| format!(r#"{{"client_id":"{id}","type":"t"}}"#);
        let (a, b, c) = (to("a"), to("b"), to("c"));
        let session = r#"{"session_id":"0000000000000001","type":"t"}"#;
        let publish = r#"{"channel":"n","type":"t"}"#;
        let list = [
            ("push", a.as_str()),
            ("push", b.as_str()),
            ("push", a.as_str()),
            ("push", c.as_str()),
            ("publish", publish),
            ("push", session),
            ("push", "{\"client_id\":5}"),
            ("push", b.as_str()),
        ];
        assert_eq!(waves(&list), [2, 2, 1, 1, 1, 1]);
        let many: Vec<String> = (0..300).map(|i| to(&format!("c{i}"))).collect();
        let list: Vec<(&str, &str)> = many.iter().map(|b| ("push", b.as_str())).collect();
        assert_eq!(waves(&list), [128, 128, 44]);
    }
}
