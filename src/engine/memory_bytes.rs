//! `history_max_bytes` (§13): stored frames over all streams stay within a byte budget, so a
//! burst of new streams or of big messages evicts by size, least recently used first. The
//! accounting is the engine's one byte counter and each stream's own total, both kept anyway.

use std::sync::atomic::Ordering;

use super::{MemoryEngine, StreamKey};

impl MemoryEngine {
    /// Evicts the least recently used streams other than `keep` (the one just appended to)
    /// until the stored frames fit in `history_max_bytes`. When `keep` is the only stream left,
    /// its oldest messages go instead; its newest stays even if alone it is over the budget,
    /// so a message just answered `stored` is not dropped by its own append.
    pub(super) fn bound_bytes(&self, keep: &StreamKey) {
        let max = self.config.history_max_bytes;
        let over = || self.counters.bytes.load(Ordering::Relaxed) > max;
        if !over() {
            return;
        }
        // A round evicts one stream, or moves `keep` off the least recently used end (the next
        // round then evicts another), so twice the streams held bounds the walk.
        let mut rounds = 2 * self.index.lock().streams.len() + 2;
        while over() && rounds > 0 {
            rounds -= 1;
            let mut index = self.index.lock();
            let lru_is_keep = match index.streams.peek_lru() {
                Some((key, _)) => key == keep,
                None => return,
            };
            if lru_is_keep && index.streams.len() > 1 {
                index.streams.promote(keep);
                continue;
            }
            if lru_is_keep {
                let Some(stream) = index.streams.peek(keep).cloned() else {
                    return;
                };
                drop(index);
                let mut state = stream.state.lock();
                while state.messages.len() > 1 && over() {
                    self.drop_front(&mut state, 1);
                }
                return;
            }
            let Some((key, old)) = index.streams.pop_lru() else {
                return;
            };
            index.retire(&key, &old);
            drop(index);
            self.retired(&old);
        }
    }
}

#[cfg(test)]
#[path = "memory_bytes_tests.rs"]
mod tests;
