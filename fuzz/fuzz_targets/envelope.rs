//! Client frames: the envelope, the `subscribe` / `publish` data shapes, channel names and client
//! ids (the one rule each that the handshake, the API and the engines share), and the cut that
//! echoes an offending frame back. Text frames are UTF-8 by the time tether sees them;
//! invalid bytes are still fed through a lossy conversion so every input reaches the parsers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether::protocol::{self, ChannelData, PublishData};

fuzz_target!(|bytes: &[u8]| {
    // The first two bytes pick the cut length, so lengths around multi-byte chars get explored.
    let (max, rest) = match bytes {
        [a, b, rest @ ..] => (usize::from(u16::from_le_bytes([*a, *b])), rest),
        _ => (0, bytes),
    };
    let text = String::from_utf8_lossy(rest);
    frame(&text);
    check_cut(&text, max);
    check_cut(&text, protocol::ORIGINAL_MAX);
});

fn frame(text: &str) {
    if let Ok(env) = protocol::parse_inbound(text) {
        // parse_inbound promises a non-empty type on success.
        assert!(env.kind.as_deref().is_some_and(|k| !k.is_empty()));
        if let Some(data) = env.data {
            let raw = data.get();
            if let Ok(c) = serde_json::from_str::<ChannelData<'_>>(raw) {
                channel(&c.channel);
            }
            if let Ok(p) = serde_json::from_str::<PublishData<'_>>(raw) {
                channel(&p.channel);
                let _ = protocol::is_reserved(&p.kind);
            }
        }
        // The error reply echoes the frame and the id; what it builds must stay valid JSON.
        // Grammar only (RawValue): an id such as "\ud800" is echoed unchanged, which RFC 8259
        // allows but a Value would refuse as a lone surrogate.
        let id = env.id.map(|i| i.get());
        let reply = protocol::error_envelope(protocol::err::INVALID_DATA, "fuzz", Some(text), id);
        assert!(serde_json::from_str::<&serde_json::value::RawValue>(&reply).is_ok());
    }
    // Shapes are also parsed from frames that are not envelopes, as a direct data payload.
    let _ = serde_json::from_str::<ChannelData<'_>>(text);
    let _ = serde_json::from_str::<PublishData<'_>>(text);
    channel(text);
    client_id(text);
}

fn client_id(id: &str) {
    let ok = protocol::valid_client_id(id).is_ok();
    let expected = !id.is_empty()
        && id.len() <= protocol::CLIENT_ID_MAX
        && !id.chars().any(char::is_control);
    assert_eq!(ok, expected, "{id:?}");
}

fn channel(name: &str) {
    if protocol::valid_channel(name).is_ok() {
        assert!(!name.is_empty() && name.len() <= protocol::CHANNEL_MAX);
        assert!(!name.chars().any(char::is_control));
    }
}

fn check_cut(text: &str, max: usize) {
    let out = protocol::cut(text, max);
    assert!(out.len() <= max);
    assert!(text.starts_with(out));
    assert!(text.is_char_boundary(out.len()));
    // The longest such prefix: one more char would exceed max.
    if out.len() < text.len() {
        let next = text[out.len()..].chars().next().map_or(0, char::len_utf8);
        assert!(out.len() + next > max);
    }
}
