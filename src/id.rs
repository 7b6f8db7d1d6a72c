//! Identifiers: a session's id, unique for the life of the process and unlikely to repeat
//! across processes; and the one rule for the names clients and backends choose (client ids,
//! channels), which every layer from the handshake down to the engines checks.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// Longest channel name accepted.
pub const CHANNEL_MAX: usize = 256;
/// Longest client id accepted, in bytes.
pub const CLIENT_ID_MAX: usize = 256;

/// Checks a channel name: non-empty, bounded, no control characters. The one rule for channel
/// names: client `subscribe` / `publish`, the API and the engines all call it (docs/protocol.md §13).
pub fn valid_channel(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > CHANNEL_MAX {
        return Err(format!("channel names are 1 to {CHANNEL_MAX} bytes"));
    }
    if name.chars().any(char::is_control) {
        return Err("channel names may not contain control characters".into());
    }
    Ok(())
}

/// Checks a client id: 1 to [`CLIENT_ID_MAX`] bytes, no control characters. The one rule for
/// client ids: the handshake, a token's `sub`, the API and the engines all call it (docs/protocol.md
/// §13), so the API cannot store for an id that can never connect.
pub fn valid_client_id(id: &str) -> Result<(), &'static str> {
    if id.is_empty() {
        return Err("empty");
    }
    if id.len() > CLIENT_ID_MAX {
        return Err("longer than 256 bytes");
    }
    if id.chars().any(char::is_control) {
        return Err("contains control characters");
    }
    Ok(())
}

/// Server-generated identifier of one connection, written as 16 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl SessionId {
    /// Parses the 16-hex-digit form produced by `Display`.
    pub fn parse(s: &str) -> Option<SessionId> {
        if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u64::from_str_radix(s, 16).ok().map(SessionId)
    }
}

/// Hands out session ids: a random 64-bit start plus a 64-bit counter (wrapping), so ids never
/// repeat within a process (2^64 sessions) and two processes almost surely use different ones.
pub struct SessionIds {
    /// The next id.
    next: AtomicU64,
}

impl SessionIds {
    /// A generator starting at a random point.
    pub fn new() -> SessionIds {
        let mut b = [0u8; 8];
        // Without OS randomness ids are still unique within this process.
        let _ = getrandom::fill(&mut b);
        SessionIds {
            next: AtomicU64::new(u64::from_le_bytes(b)),
        }
    }

    /// A fresh session id.
    pub fn next(&self) -> SessionId {
        SessionId(self.next.fetch_add(1, Ordering::Relaxed))
    }
}

impl Default for SessionIds {
    fn default() -> Self {
        SessionIds::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_id_round_trips() {
        let id = SessionId(0xdead_beef_0000_0001);
        assert_eq!(SessionId::parse(&id.to_string()), Some(id));
        assert_eq!(SessionId::parse("xyz"), None);
        assert_eq!(SessionId::parse("+000000000000001"), None);
    }

    #[test]
    fn ids_use_all_64_bits_and_do_not_repeat_across_the_wrap() {
        let ids = SessionIds {
            next: AtomicU64::new(u64::MAX - 1),
        };
        let a = ids.next();
        let b = ids.next();
        let c = ids.next();
        assert_eq!((a.0, b.0, c.0), (u64::MAX - 1, u64::MAX, 0));
    }
}
