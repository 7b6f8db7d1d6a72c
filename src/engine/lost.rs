//! Which keys lost history to an eviction, remembered without keeping the keys: a `0:0` resume
//! of such a key must say `recovered: false` (§13) although its stream is gone or new.

/// Fewest bits of the filter (32 KiB).
const MIN_BITS: usize = 1 << 18;
/// Most bits of the filter (2 MiB), reached at a million streams.
const MAX_BITS: usize = 1 << 24;
/// Bits per stream held: a key evicted once per stream held sets about 6 % of the bits.
const BITS_PER_STREAM: usize = 16;

/// A one-hash Bloom filter over the keys whose stream was evicted. A key it holds is
/// certainly reported; a key it does not hold may be reported too (another key set its bit),
/// which only turns a fresh client's `recovered: true` into a `false`, never the reverse.
/// Bits are never cleared: the history such a key had is gone for as long as the process runs.
pub(super) struct Lost {
    bits: Box<[u64]>,
}

impl Lost {
    /// An empty filter sized for `max_streams` streams.
    pub(super) fn new(max_streams: usize) -> Self {
        let bits = max_streams
            .saturating_mul(BITS_PER_STREAM)
            .clamp(MIN_BITS, MAX_BITS)
            .next_power_of_two();
        Lost {
            bits: vec![0; bits / 64].into_boxed_slice(),
        }
    }

    fn at(&self, hash: u64) -> (usize, u64) {
        // The low bits pick the key's bucket of seeds; the filter uses the others. The length
        // is a power of two, so the modulo is a mask.
        let bit = (hash >> 10) % (self.bits.len() as u64 * 64);
        ((bit / 64) as usize, 1 << (bit % 64))
    }

    /// Remembers that the key hashing to `hash` lost its history.
    pub(super) fn mark(&mut self, hash: u64) {
        let (word, mask) = self.at(hash);
        if let Some(w) = self.bits.get_mut(word) {
            *w |= mask;
        }
    }

    /// Whether the key hashing to `hash` may have lost history.
    pub(super) fn may_hold(&self, hash: u64) -> bool {
        let (word, mask) = self.at(hash);
        self.bits.get(word).is_some_and(|w| w & mask != 0)
    }
}
