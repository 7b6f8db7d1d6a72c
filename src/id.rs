//! Typed identifiers: a session's id, unique for the life of the process and unlikely to repeat
//! across processes.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

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
