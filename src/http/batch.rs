//! `POST /api/v1/batch` (docs/protocol.md §14): up to [`MAX_COMMANDS`] commands in one request,
//! run in order, each answered exactly as its single call would answer it (status and body,
//! errors and idempotency keys included), because each runs that call's own handler.
//!
//! The batch's shape is checked before anything runs: a body that is not
//! `{"commands":[{"<kind>":{…}},…]}`, an unknown kind or more than [`MAX_COMMANDS`] refuse the
//! whole batch with 400 `invalid_body`, so a typo never half-runs one. A command whose own body
//! is wrong gets its single call's error as its result, and the others still run.

use std::borrow::Cow;
use std::collections::BTreeMap;

use bytes::Bytes;
use hyper::StatusCode;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::body::parse;
use super::delivery::{self, Answer, Reply};
use crate::http::error::Error;
use crate::state::Shared;

/// Most commands in one batch.
pub const MAX_COMMANDS: usize = 1000;

/// The command table: each kind a batch may hold, and the single call's handler it runs with
/// its body. Adding a kind is one line here.
macro_rules! commands {
    ($($name:literal => $handler:path,)*) => {
        /// The kinds a batch takes, for the message that refuses another.
        const KINDS: &[&str] = &[$($name),*];

        /// Runs one command of kind `name` (one of [`KINDS`]) with its body.
        async fn run(shared: &Shared, name: &str, body: &RawValue) -> Reply {
            match name {
                $($name => $handler(shared, parse(body.get().as_bytes())?).await,)*
                _ => Err(Error::NotFound),
            }
        }
    };
}

commands! {
    "push" => delivery::push,
    "publish" => delivery::publish,
    "broadcast" => delivery::broadcast,
    // Server-side control (h-control's branch): one line each at merge, e.g.
    // "subscribe" => control::subscribe,
    // "unsubscribe" => control::unsubscribe,
    // "disconnect" => control::disconnect,  // body {"client_id","block_for"?}, the kick
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
    for (i, (kind, body)) in commands.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let (status, body) = answered(run(shared, kind, body).await);
        out.extend_from_slice(format!("{{\"status\":{},\"body\":", status.as_u16()).as_bytes());
        out.extend_from_slice(&body);
        out.push(b'}');
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

/// A command's result as its single call would have answered: the answer, or the error's
/// status and `{"error":…}` body.
fn answered(reply: Reply) -> Answer {
    reply.unwrap_or_else(|e| (e.status(), Bytes::from(e.body())))
}
