//! The memory engine's index: the streams in LRU order, and what a key looks like while it has
//! none (its unborn epoch, and whether an earlier stream of it was evicted).

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use lru::LruCache;

use super::{Stream, StreamState};
use crate::engine::lost::Lost;
use crate::engine::position::fresh_bits;
use crate::engine::{Epoch, StreamKey};

/// Buckets of [`Index::unborn`]: 8 KiB of seeds, enough that evicting one stream rarely touches
/// the epoch of a client id that was never pushed to.
pub(super) const UNBORN_BUCKETS: usize = 1024;

/// The streams, and the epochs of the ones that do not exist yet.
pub(super) struct Index {
    /// The streams by key, in use order: the least recently used is evicted first.
    pub(super) streams: LruCache<StreamKey, Arc<Stream>>,
    /// Per bucket of keys, a seed: a missing stream is reported in (seq 0), and then created
    /// with, the epoch hashed from its key and its bucket's seed, so keys never share epochs.
    /// Evicting a stream created under the current seed re-rolls it, so a position handed out
    /// before the eviction never matches the stream created after it. A stream created under
    /// an older seed needs no re-roll: its key was present since that seed was rolled, so no
    /// position in the current seed's epochs was handed out for it. Keys sharing a bucket can
    /// only turn a `recovered: true` into a `false`, never the reverse: a seed never recurs.
    pub(super) unborn: Vec<u64>,
    /// Keys whose stream was evicted: their `0:0` is not recovered (see [`Lost`]).
    pub(super) lost: Lost,
    /// Keys to buckets, seeds and filter bits; random per process.
    pub(super) hasher: RandomState,
}

impl Index {
    pub(super) fn bucket(&self, key: &StreamKey) -> usize {
        // The modulo keeps the value below UNBORN_BUCKETS, so the cast cannot truncate.
        (self.hasher.hash_one(key) % UNBORN_BUCKETS as u64) as usize
    }

    /// The seed and the epoch `key` has while it has no stream.
    pub(super) fn unborn(&self, key: &StreamKey) -> (u64, Epoch) {
        let seed = self.unborn[self.bucket(key)];
        (seed, Epoch::from_bits(self.hasher.hash_one((seed, key))))
    }

    /// What `key` looks like while it has no stream: seq 0 in its unborn epoch, with a gap if
    /// an earlier stream of it was evicted.
    pub(super) fn missing(&self, key: &StreamKey) -> StreamState {
        StreamState::empty(self.unborn(key).1, self.has_lost(key))
    }

    /// Whether an earlier stream of `key` may have been evicted holding history.
    pub(super) fn has_lost(&self, key: &StreamKey) -> bool {
        self.lost.may_hold(self.hasher.hash_one(key))
    }

    /// Records that `key`'s stream `old` left the index: its epoch must not come back, and its
    /// key's `0:0` is no longer the whole story. The caller then empties it with
    /// [`MemoryEngine::retired`], outside the index lock.
    pub(super) fn retire(&mut self, key: &StreamKey, old: &Stream) {
        let bucket = self.bucket(key);
        if self.unborn[bucket] == old.born {
            self.unborn[bucket] = fresh_bits();
        }
        // Every stream was created by an append, so it held history; marking one that was
        // evicted before its first message only costs a false positive.
        let hash = self.hasher.hash_one(key);
        self.lost.mark(hash);
    }
}
