//! Which keys lost history to an eviction, remembered without keeping the keys: a `0:0` resume
//! of such a key must say `recovered: false` (§13) although its stream is gone or new.

/// Bits of the filter: 32 KiB, whatever the number of streams.
const BITS: usize = 1 << 18;

/// A one-hash Bloom filter over the keys whose stream was evicted. A key it holds is
/// certainly reported; a key it does not hold may be reported too (another key set its bit),
/// which only turns a fresh client's `recovered: true` into a `false`, never the reverse.
/// Bits are never cleared: the history such a key had is gone for as long as the process runs.
pub(super) struct Lost {
    bits: Box<[u64]>,
}

impl Lost {
    /// An empty filter.
    pub(super) fn new() -> Self {
        Lost {
            bits: vec![0; BITS / 64].into_boxed_slice(),
        }
    }

    fn at(hash: u64) -> (usize, u64) {
        // The low bits pick the key's bucket of seeds; the filter uses the others.
        let bit = ((hash >> 10) % BITS as u64) as usize;
        (bit / 64, 1 << (bit % 64))
    }

    /// Remembers that the key hashing to `hash` lost its history.
    pub(super) fn mark(&mut self, hash: u64) {
        let (word, mask) = Self::at(hash);
        if let Some(w) = self.bits.get_mut(word) {
            *w |= mask;
        }
    }

    /// Whether the key hashing to `hash` may have lost history.
    pub(super) fn may_hold(&self, hash: u64) -> bool {
        let (word, mask) = Self::at(hash);
        self.bits.get(word).is_some_and(|w| w & mask != 0)
    }
}
