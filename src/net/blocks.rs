//! Client ids refused at the upgrade until a time (docs/protocol.md §14,
//! `DELETE /api/v1/clients/{id}?block_for=`): a small map the handshake reads synchronously.
//! On one node it is the whole store; in a cluster it caches the blocks kept in Redis, kept
//! current by signed node messages and reloaded after a start or an outage.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::RwLock;

/// Most blocks in force at once: a block costs a map entry on every node, and an operator who
/// needs more wants a firewall or a token revocation, not this list.
pub const MAX_BLOCKS: usize = 10_000;

/// Longest one block may last (30 days).
pub const MAX_BLOCK_MS: u64 = 30 * 24 * 3600 * 1000;

/// The blocks in force: client id → until (Unix ms, wall clock, which nodes share).
#[derive(Default)]
pub struct Blocks {
    map: RwLock<HashMap<Arc<str>, u64>>,
}

/// Wall-clock Unix milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Blocks {
    /// Until when `client_id` is blocked, if it is at `now`.
    pub fn check(&self, client_id: &str, now: u64) -> Option<u64> {
        self.map
            .read()
            .get(client_id)
            .copied()
            .filter(|&until| until > now)
    }

    /// Blocks `client_id` until `until`; false (nothing changed) when [`MAX_BLOCKS`] other
    /// blocks are in force.
    pub fn set(&self, client_id: &str, until: u64, now: u64) -> bool {
        let mut map = self.map.write();
        if map.len() >= MAX_BLOCKS && !map.contains_key(client_id) {
            map.retain(|_, u| *u > now);
            if map.len() >= MAX_BLOCKS {
                return false;
            }
        }
        map.insert(Arc::from(client_id), until);
        true
    }

    /// Lifts a block; whether one was in force at `now`.
    pub fn lift(&self, client_id: &str, now: u64) -> bool {
        self.map
            .write()
            .remove(client_id)
            .is_some_and(|until| until > now)
    }

    /// Replaces every block (a cluster node reloading from Redis).
    pub fn replace(&self, all: impl IntoIterator<Item = (String, u64)>) {
        let fresh: HashMap<Arc<str>, u64> = all
            .into_iter()
            .take(MAX_BLOCKS)
            .map(|(c, u)| (Arc::from(c), u))
            .collect();
        *self.map.write() = fresh;
    }

    /// The blocks in force at `now`, by client id; expired ones are forgotten on the way.
    pub fn list(&self, now: u64) -> Vec<(Arc<str>, u64)> {
        let mut map = self.map.write();
        map.retain(|_, u| *u > now);
        let mut out: Vec<_> = map.iter().map(|(c, u)| (Arc::clone(c), *u)).collect();
        out.sort();
        out
    }

    /// Blocks in force at `now`, for `/metrics`.
    pub fn in_force(&self, now: u64) -> usize {
        self.map.read().values().filter(|&&u| u > now).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_expire_lift_and_stay_bounded() {
        let b = Blocks::default();
        assert!(b.set("a", 100, 0));
        assert_eq!(b.check("a", 50), Some(100));
        assert_eq!(b.check("a", 100), None, "until is exclusive");
        assert!(b.lift("a", 50));
        assert!(!b.lift("a", 50));
        for i in 0..MAX_BLOCKS {
            assert!(b.set(&i.to_string(), 10, 0));
        }
        assert!(!b.set("one-more", 10, 0));
        assert!(b.set("one-more", 10, 20), "expired blocks make room");
        assert_eq!(b.list(20).len(), 0, "only one-more, and it expired at 10");
    }
}
