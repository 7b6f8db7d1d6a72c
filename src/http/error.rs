//! The one error type of the HTTP side (upgrade refusals and API errors), with exhaustive maps to
//! HTTP status and JSON error code, so each refusal has exactly one status and one code.

use hyper::{Method, StatusCode};

use crate::protocol::json_str;

/// A refusal or API error, answered as `{"error":{"code","message"}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// Not a valid WebSocket upgrade; the string says which check failed.
    BadHandshake(&'static str),
    /// No client id and `require_client_id` is on.
    MissingClientId,
    /// The client id is empty, too long or has control characters.
    BadClientId(&'static str),
    /// A channel name is empty, too long or has control characters; the string says which.
    BadChannel(String),
    /// An `idempotency_key` seen within its window for a request with another body.
    IdempotencyKeyReused,
    /// API key missing or wrong.
    Unauthorized,
    /// No `api_key` is set and the API call is not from a direct local caller (docs/protocol.md §13).
    ApiNotLocal,
    /// The upgrade's token is missing or invalid; the string says what is wrong.
    BadToken(String),
    /// The client id holds `max_sessions_per_client` sessions already.
    TooManySessions(usize),
    /// `connect_rate_per_ip` exceeded.
    ConnectRate,
    /// `Origin` not in `allowed_origins`.
    OriginNotAllowed,
    /// The client id is blocked until this time (Unix ms; docs/protocol.md §14).
    Blocked(u64),
    /// No block is in force for this client id.
    UnknownBlock,
    /// A server subscription past `max_channels_per_session` for one client id (the value).
    TooManyChannels(usize),
    /// `MAX_BLOCKS` blocks are in force already (the value).
    TooManyBlocks(usize),
    /// `Sec-WebSocket-Version` is not 13.
    UnsupportedVersion,
    /// Per-address connection limit reached.
    TooManyConnections,
    /// `max_http_connections_per_ip` reached (answered before the request is read).
    TooManyHttpConnections,
    /// `max_connections` reached.
    ServerFull,
    /// Shutting down.
    Draining,
    /// The request body is not JSON.
    InvalidJson(String),
    /// The JSON body lacks a field or has a wrong type; the string names it.
    InvalidBody(String),
    /// The request body is larger than the API accepts.
    BodyTooLarge(usize),
    /// The request body did not arrive within `http_body_timeout` (the value).
    BodyTimeout(std::time::Duration),
    /// No route for this path.
    NotFound,
    /// The route exists but not for this method; these are the ones it takes.
    MethodNotAllowed(&'static [Method]),
    /// The client id has no live session.
    NoSession,
    /// No session with this id.
    UnknownSession,
    /// The history endpoint while `history_size = 0`.
    HistoryOff,
    /// The first call with this `idempotency_key` is still being answered.
    InProgress,
    /// The engine (history, idempotency keys) cannot be reached.
    EngineUnavailable(String),
    /// The engine (Redis) took the call but did not answer in time: it may have been done.
    EngineTimeout(String),
}

impl Error {
    /// HTTP status of the response.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::BadHandshake(_)
            | Error::MissingClientId
            | Error::BadClientId(_)
            | Error::BadChannel(_) => StatusCode::BAD_REQUEST,
            Error::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            Error::InvalidJson(_) | Error::InvalidBody(_) => StatusCode::BAD_REQUEST,
            Error::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Error::Unauthorized | Error::ApiNotLocal | Error::BadToken(_) => {
                StatusCode::UNAUTHORIZED
            }
            Error::TooManySessions(_) | Error::ConnectRate => StatusCode::TOO_MANY_REQUESTS,
            Error::OriginNotAllowed | Error::Blocked(_) => StatusCode::FORBIDDEN,
            Error::UnknownBlock => StatusCode::NOT_FOUND,
            Error::TooManyChannels(_) | Error::TooManyBlocks(_) => StatusCode::CONFLICT,
            Error::UnsupportedVersion => StatusCode::UPGRADE_REQUIRED,
            Error::TooManyConnections | Error::TooManyHttpConnections => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Error::ServerFull | Error::Draining => StatusCode::SERVICE_UNAVAILABLE,
            Error::NotFound | Error::NoSession | Error::UnknownSession | Error::HistoryOff => {
                StatusCode::NOT_FOUND
            }
            Error::InProgress => StatusCode::CONFLICT,
            Error::EngineUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::EngineTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Error::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    /// Machine-readable snake_case code.
    pub fn code(&self) -> &'static str {
        match self {
            Error::BadHandshake(_) => "bad_handshake",
            Error::MissingClientId => "missing_client_id",
            Error::BadClientId(_) => "bad_client_id",
            Error::BadChannel(_) => "bad_channel",
            Error::IdempotencyKeyReused => "idempotency_key_reused",
            Error::Unauthorized | Error::ApiNotLocal | Error::BadToken(_) => "unauthorized",
            Error::TooManySessions(_) | Error::ConnectRate => "too_many_connections",
            Error::OriginNotAllowed => "origin_not_allowed",
            Error::Blocked(_) => "blocked",
            Error::UnknownBlock => "unknown_block",
            Error::TooManyChannels(_) => "too_many_channels",
            Error::TooManyBlocks(_) => "too_many_blocks",
            Error::UnsupportedVersion => "unsupported_version",
            Error::TooManyConnections | Error::TooManyHttpConnections => "too_many_connections",
            Error::ServerFull => "server_full",
            Error::Draining => "draining",
            Error::InvalidJson(_) => "invalid_json",
            Error::InvalidBody(_) => "invalid_body",
            Error::BodyTooLarge(_) => "body_too_large",
            Error::BodyTimeout(_) => "body_timeout",
            Error::NotFound => "not_found",
            Error::MethodNotAllowed(_) => "method_not_allowed",
            Error::NoSession => "no_session",
            Error::UnknownSession => "unknown_session",
            Error::HistoryOff => "history_off",
            Error::InProgress => "in_progress",
            Error::EngineUnavailable(_) => "engine_unavailable",
            Error::EngineTimeout(_) => "engine_timeout",
        }
    }

    /// Human sentence.
    pub fn message(&self) -> String {
        match self {
            Error::BadHandshake(why) => format!("not a valid WebSocket upgrade: {why}"),
            Error::MissingClientId => {
                "a client id is required: pass ?client_id=<id> or the X-Client-Id header".into()
            }
            Error::BadClientId(why) => format!(
                "bad client id: {why} (client ids are 1 to 256 bytes without control characters)"
            ),
            Error::BadChannel(why) => format!("bad channel name: {why}"),
            Error::IdempotencyKeyReused => "this idempotency_key was used within the \
                 idempotency_window with a different type or data; use a new key for a new \
                 message"
                .into(),
            Error::Unauthorized => {
                "missing or wrong credentials: send Authorization: Bearer <api_key>".into()
            }
            Error::ApiNotLocal => "no api_key is set, so the API answers only local callers \
                 (a loopback address, not through a proxy): set api_key or api_key_file"
                .into(),
            Error::BadToken(why) => format!("token refused: {why}"),
            Error::TooManySessions(n) => {
                format!("this client id already has {n} sessions (max_sessions_per_client)")
            }
            Error::ConnectRate => "connecting too fast from this address, retry later".into(),
            Error::OriginNotAllowed => "this Origin is not allowed to connect".into(),
            Error::Blocked(until) => format!(
                "this client id is blocked until {}; do not reconnect before",
                crate::protocol::timestamp(
                    std::time::UNIX_EPOCH + std::time::Duration::from_millis(*until)
                )
            ),
            Error::UnknownBlock => "no block is in force for that client id".into(),
            Error::TooManyChannels(n) => format!(
                "this client id has {n} server subscriptions already (max_channels_per_session)"
            ),
            Error::TooManyBlocks(n) => format!("{n} blocks are in force already; lift some"),
            Error::UnsupportedVersion => {
                "unsupported WebSocket version: send Sec-WebSocket-Version: 13".into()
            }
            Error::TooManyConnections => "too many connections from this address".into(),
            Error::TooManyHttpConnections => "too many open HTTP connections from this address \
                 (max_http_connections_per_ip): reuse or close some"
                .into(),
            Error::ServerFull => {
                "the server is at its connection limit, try another node or later".into()
            }
            Error::Draining => "the server is shutting down, reconnect to another node".into(),
            Error::InvalidJson(e) => format!("the body is not valid JSON: {e}"),
            Error::InvalidBody(e) => format!("bad request body: {e}"),
            Error::BodyTooLarge(max) => format!("the body is larger than {max} bytes"),
            Error::BodyTimeout(t) => {
                format!("the request body did not arrive within {t:?} (http_body_timeout)")
            }
            Error::NotFound => "no such path".into(),
            Error::MethodNotAllowed(allowed) => {
                format!("method not allowed here; use {}", allow_list(allowed))
            }
            Error::NoSession => "that client id has no live session".into(),
            Error::UnknownSession => "no session with that id".into(),
            Error::HistoryOff => "history is off on this server (history_size = 0)".into(),
            Error::InProgress => {
                "the first call with this idempotency_key is still in progress; retry shortly"
                    .into()
            }
            Error::EngineUnavailable(why) => format!("the history engine is unavailable: {why}"),
            Error::EngineTimeout(why) => format!(
                "{why}; the message may or may not have been delivered: retry with the same \
                 idempotency_key to be sure it arrives once"
            ),
        }
    }

    /// The JSON body `{"error":{"code","message"}}`.
    pub fn body(&self) -> String {
        format!(
            "{{\"error\":{{\"code\":{},\"message\":{}}}}}",
            json_str(self.code()),
            json_str(&self.message())
        )
    }
}

/// The methods of a `405`, as its `Allow` header and its message list them.
pub fn allow_list(methods: &[Method]) -> String {
    let names: Vec<&str> = methods.iter().map(Method::as_str).collect();
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_json_with_code_and_message() {
        let e = Error::InvalidBody("missing field `type`".into());
        let v: serde_json::Value = serde_json::from_str(&e.body()).unwrap();
        assert_eq!(v["error"]["code"], "invalid_body");
        assert!(v["error"]["message"].as_str().unwrap().contains("`type`"));
        assert_eq!(Error::UnsupportedVersion.status().as_u16(), 426);
        assert_eq!(Error::Draining.status().as_u16(), 503);
    }
}
