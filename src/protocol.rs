//! The wire protocol: the JSON envelope, message and error codes, close codes (docs/protocol.md §2, §4).
//!
//! Outbound envelopes are written by hand around the caller's raw `data` so that `data` reaches
//! clients byte for byte (no round trip through a generic JSON value) and each message is
//! serialized exactly once, whatever the number of recipients.

pub use crate::id::{CHANNEL_MAX, CLIENT_ID_MAX, valid_channel, valid_client_id};
use std::borrow::Cow;
use std::time::SystemTime;

use serde::Deserialize;
use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// WebSocket close codes used by tether.
pub mod close {
    /// Normal close.
    pub const NORMAL: u16 = 1000;
    /// Server going away: the drain finished.
    pub const GOING_AWAY: u16 = 1001;
    /// The connection ended without a close frame (never sent on the wire, RFC 6455 §7.1.5).
    pub const ABNORMAL: u16 = 1006;
    /// Policy violation.
    pub const POLICY: u16 = 1008;
    /// Message too big.
    pub const TOO_BIG: u16 = 1009;
    /// Internal error.
    pub const INTERNAL: u16 = 1011;
    /// Service restart: reconnect now, to any node.
    pub const RESTART: u16 = 1012;
    /// Heartbeat timeout: the session was silent too long.
    pub const HEARTBEAT_TIMEOUT: u16 = 4001;
    /// Closed by the admin API.
    pub const ADMIN: u16 = 4002;
    /// Slow consumer: the send queue was full.
    pub const SLOW_CONSUMER: u16 = 4003;
    /// The token expired and was not refreshed.
    pub const TOKEN_EXPIRED: u16 = 4004;

    /// Whether `code` is one docs/protocol.md §4 or RFC 6455 defines, so it may be a metrics label;
    /// anything else a peer sends is counted as "other".
    pub fn is_known(code: u16) -> bool {
        matches!(code, 1000..=1003 | 1005..=1015 | 4001..=4004)
    }
}

/// Error codes carried in `error` messages to clients.
pub mod err {
    /// The frame is not a JSON object.
    pub const INVALID_JSON: &str = "invalid_json";
    /// The envelope has no string `type`.
    pub const MISSING_TYPE: &str = "missing_type";
    /// `data` does not have the shape the message type needs.
    pub const INVALID_DATA: &str = "invalid_data";
    /// Nobody handles this message type.
    pub const UNKNOWN_TYPE: &str = "unknown_type";
    /// The client may not do this (e.g. `publish` with `client_publish = false`).
    pub const FORBIDDEN: &str = "forbidden";
    /// Binary frames are not handled.
    pub const BINARY_NOT_SUPPORTED: &str = "binary_not_supported";
    /// History could not be read or written just now; the command may be retried.
    pub const UNAVAILABLE: &str = "unavailable";
    /// A client `publish` used a type only the server may send.
    pub const RESERVED_TYPE: &str = "reserved_type";
    /// The session holds `max_channels_per_session` channels already.
    pub const TOO_MANY_CHANNELS: &str = "too_many_channels";
    /// The client sends faster than `client_message_rate`.
    pub const RATE_LIMITED: &str = "rate_limited";
    /// A `refresh` token is bad or names another `sub`.
    pub const INVALID_TOKEN: &str = "invalid_token";
}

/// Types only the server sends (docs/protocol.md §2): refused from client `publish` and from the API.
pub const RESERVED_TYPES: &[&str] = &[
    "welcome",
    "heartbeat_ack",
    "subscribed",
    "unsubscribed",
    "published",
    "refreshed",
    "error",
    "shutdown",
    "join",
    "leave",
    "presence",
];

/// Whether `kind` is a server-only type.
pub fn is_reserved(kind: &str) -> bool {
    RESERVED_TYPES.contains(&kind)
}

/// Longest part of an offending frame echoed back in `error.data.original`.
pub const ORIGINAL_MAX: usize = 256;

/// A client envelope, borrowed from the frame text.
#[derive(Debug, Deserialize)]
pub struct Inbound<'a> {
    /// Message type; required.
    #[serde(rename = "type", borrow)]
    pub kind: Option<Cow<'a, str>>,
    /// Client correlation id, echoed in replies.
    #[serde(borrow, default)]
    pub id: Option<&'a RawValue>,
    /// Message payload, kept as raw JSON text.
    #[serde(borrow, default)]
    pub data: Option<&'a RawValue>,
}

/// Why an inbound frame could not be read as an envelope.
#[derive(Debug, PartialEq, Eq)]
pub struct BadFrame {
    /// One of [`err`].
    pub code: &'static str,
    /// Human sentence.
    pub message: String,
}

/// Parses a text frame into an envelope.
pub fn parse_inbound(text: &str) -> Result<Inbound<'_>, BadFrame> {
    // serde would also read a JSON array positionally into the struct; the contract says object.
    if !text.trim_start().starts_with('{') {
        return Err(BadFrame {
            code: err::INVALID_JSON,
            message: "frame is not a JSON object".into(),
        });
    }
    let env: Inbound<'_> = serde_json::from_str(text).map_err(|e| {
        let code = if e.is_data() {
            err::MISSING_TYPE
        } else {
            err::INVALID_JSON
        };
        BadFrame {
            code,
            message: format!("cannot read the envelope: {e}"),
        }
    })?;
    match &env.kind {
        Some(k) if !k.is_empty() => Ok(env),
        _ => Err(BadFrame {
            code: err::MISSING_TYPE,
            message: "the envelope needs a non-empty string `type`".into(),
        }),
    }
}

/// `data` of `subscribe` / `unsubscribe`.
#[derive(Deserialize)]
pub struct ChannelData<'a> {
    /// Channel name.
    #[serde(borrow)]
    pub channel: Cow<'a, str>,
    /// `subscribe` only: resume the channel's stream after `<epoch>:<seq>` (§8). Raw, so a
    /// `since` of the wrong JSON type is a bad position rather than a refused `subscribe`.
    #[serde(borrow, default)]
    pub since: Option<&'a RawValue>,
}

/// `data` of a client `publish`.
#[derive(Deserialize)]
pub struct PublishData<'a> {
    /// Target channel.
    #[serde(borrow)]
    pub channel: Cow<'a, str>,
    /// Type of the message delivered to subscribers.
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    /// Payload delivered unchanged.
    #[serde(borrow, default)]
    pub data: Option<&'a RawValue>,
}

/// Builds one server envelope; `data` and `id` are raw JSON text inserted unchanged.
pub fn envelope(
    kind: &str,
    channel: Option<&str>,
    id: Option<&str>,
    data: Option<&str>,
) -> Utf8Bytes {
    let mut out = envelope_head(kind, channel, data);
    envelope_tail(&mut out, id, data);
    Utf8Bytes::from(out)
}

/// A pushed or published envelope split where its `seq` goes: the engine assigns the seq
/// inside its atomic append, so it joins `head`, the seq and `tail` (§2 `seq`).
pub fn sequenced_envelope(
    kind: &str,
    channel: Option<&str>,
    data: Option<&str>,
) -> crate::stream::FrameTemplate {
    let mut head = envelope_head(kind, channel, data);
    head.push_str(SEQ_FIELD);
    let mut tail = String::with_capacity(data.map_or(0, str::len) + 10);
    envelope_tail(&mut tail, None, data);
    crate::stream::FrameTemplate::new(head.into(), tail.into())
}

/// Where a sequenced envelope's head ends and its seq goes.
const SEQ_FIELD: &str = ",\"seq\":";

/// A [`sequenced_envelope`]'s frame without a seq: when the stream cannot number it (Redis
/// down), this node's sessions still get the same message, built from the same template.
pub fn unsequenced(template: &crate::stream::FrameTemplate) -> Utf8Bytes {
    let (head, tail) = template.parts();
    let head = head.strip_suffix(SEQ_FIELD.as_bytes()).unwrap_or(head);
    let mut out = String::with_capacity(head.len() + tail.len());
    out.push_str(&String::from_utf8_lossy(head));
    out.push_str(&String::from_utf8_lossy(tail));
    Utf8Bytes::from(out)
}

/// `{"type":..,"timestamp":..[,"channel":..]`, with room for the rest.
fn envelope_head(kind: &str, channel: Option<&str>, data: Option<&str>) -> String {
    let mut out = String::with_capacity(96 + kind.len() + data.map_or(0, str::len));
    out.push_str("{\"type\":");
    push_json_str(&mut out, kind);
    out.push_str(",\"timestamp\":\"");
    push_timestamp(&mut out, SystemTime::now());
    out.push('"');
    if let Some(c) = channel {
        out.push_str(",\"channel\":");
        push_json_str(&mut out, c);
    }
    out
}

/// `[,"id":..][,"data":..]}`.
fn envelope_tail(out: &mut String, id: Option<&str>, data: Option<&str>) {
    if let Some(id) = id {
        out.push_str(",\"id\":");
        out.push_str(id);
    }
    if let Some(d) = data {
        out.push_str(",\"data\":");
        out.push_str(d);
    }
    out.push('}');
}

/// Builds an `error` envelope echoing the correlation id and the (cut) offending frame.
pub fn error_envelope(
    code: &str,
    message: &str,
    original: Option<&str>,
    id: Option<&str>,
) -> Utf8Bytes {
    let mut data = String::with_capacity(96 + message.len());
    data.push_str("{\"code\":");
    push_json_str(&mut data, code);
    data.push_str(",\"message\":");
    push_json_str(&mut data, message);
    if let Some(o) = original {
        data.push_str(",\"original\":");
        push_json_str(&mut data, cut(o, ORIGINAL_MAX));
    }
    data.push('}');
    envelope("error", None, id, Some(&data))
}

/// The longest prefix of `s` no longer than `max` bytes that ends on a char boundary.
pub fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Appends `s` as a JSON string literal.
pub fn push_json_str(out: &mut String, s: &str) {
    match serde_json::to_string(s) {
        Ok(lit) => out.push_str(&lit),
        // Serializing a &str cannot fail; keep the envelope valid regardless.
        Err(_) => out.push_str("\"\""),
    }
}

/// A JSON string literal for `s`.
pub fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    push_json_str(&mut out, s);
    out
}

/// Appends an RFC 3339 UTC timestamp with milliseconds, e.g. `2026-11-22T10:00:00.123Z`.
pub fn push_timestamp(out: &mut String, t: SystemTime) {
    use std::fmt::Write;
    // Writing to a String cannot fail.
    let _ = write!(out, "{}", humantime::format_rfc3339_millis(t));
}

/// An RFC 3339 UTC timestamp with milliseconds.
pub fn timestamp(t: SystemTime) -> String {
    let mut s = String::with_capacity(24);
    push_timestamp(&mut s, t);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn unsequenced_is_the_plain_envelope() {
        let no_time = |frame: &str| {
            let mut v: serde_json::Value = serde_json::from_str(frame).unwrap();
            v.as_object_mut().unwrap().remove("timestamp");
            v
        };
        let template = sequenced_envelope("news", Some("room"), Some(r#"{"n":1}"#));
        let plain = envelope("news", Some("room"), None, Some(r#"{"n":1}"#));
        assert_eq!(no_time(&unsequenced(&template)), no_time(&plain));
        let template = sequenced_envelope("x", None, None);
        assert_eq!(
            no_time(&unsequenced(&template)),
            no_time(&envelope("x", None, None, None))
        );
    }

    #[test]
    fn timestamps_are_rfc3339_millis() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_341_600_123);
        assert_eq!(timestamp(t), "2026-11-22T10:00:00.123Z");
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(timestamp(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn envelope_keeps_data_bytes() {
        let data = r#"{"b":1,"a":12345678901234567890,"s":"é\u00e9"}"#;
        let e = envelope("notify", Some("room"), Some("7"), Some(data));
        let s = e.as_str();
        assert!(s.starts_with(r#"{"type":"notify","timestamp":""#));
        assert!(s.ends_with(&format!(r#","channel":"room","id":7,"data":{data}}}"#)));
        let v: serde_json::Value = serde_json::from_str(s).unwrap();
        assert_eq!(v["type"], "notify");
    }

    #[test]
    fn sequenced_envelope_puts_seq_after_the_header() {
        let t = sequenced_envelope("notify", Some("room"), Some(r#"{"a":1}"#));
        let frame = t.build(42);
        let s = std::str::from_utf8(&frame).unwrap();
        assert!(s.starts_with(r#"{"type":"notify","timestamp":""#), "{s}");
        assert!(
            s.ends_with(r#","channel":"room","seq":42,"data":{"a":1}}"#),
            "{s}"
        );
        let v: serde_json::Value = serde_json::from_str(s).unwrap();
        assert_eq!(v["seq"], 42);
    }

    #[test]
    fn inbound_errors_are_named() {
        assert_eq!(parse_inbound("nope").unwrap_err().code, err::INVALID_JSON);
        assert_eq!(parse_inbound("[1]").unwrap_err().code, err::INVALID_JSON);
        assert_eq!(
            parse_inbound("{\"a\":1").unwrap_err().code,
            err::INVALID_JSON
        );
        assert_eq!(parse_inbound("{}").unwrap_err().code, err::MISSING_TYPE);
        assert_eq!(
            parse_inbound("{\"type\":3}").unwrap_err().code,
            err::MISSING_TYPE
        );
        let ok = parse_inbound(r#"{"type":"heartbeat","id":"x1"}"#).unwrap();
        assert_eq!(ok.kind.as_deref(), Some("heartbeat"));
        assert_eq!(ok.id.map(|r| r.get()), Some("\"x1\""));
    }

    #[test]
    fn cut_respects_char_boundaries() {
        assert_eq!(cut("héllo", 2), "h");
        assert_eq!(cut("abc", 10), "abc");
        let e = error_envelope("x", "m", Some(&"é".repeat(300)), None);
        let v: serde_json::Value = serde_json::from_str(e.as_str()).unwrap();
        assert!(v["data"]["original"].as_str().unwrap().len() <= ORIGINAL_MAX);
    }
}
