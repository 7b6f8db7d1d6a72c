//! The memory engine: one node, everything in this process, bounded by `history_size`,
//! `history_ttl`, `history_max_streams` and `history_max_bytes`.
//!
//! A stream exists only once something was appended to it: a session's `welcome` on a client id
//! nobody pushed to costs nothing, so an idle connection with history on costs what one with
//! history off does, and connecting clients never evict streams that hold messages.
//!
//! Locks: `index` (the LRU index) and `keys` are never held while another lock is taken; a
//! stream's `delivery` is taken before its `state`. `delivery` is held while the sink fans out,
//! so appends to one stream reach sessions in seq order; `state` is held only to read or change
//! the history, so `recover` does not wait for a fan-out to finish.

use std::collections::VecDeque;
use std::future::ready;
use std::hash::RandomState;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use lru::LruCache;
use parking_lot::Mutex;

use super::keys::KeyStore;
use super::lost::Lost;
use super::position::fresh_bits;
use super::{
    Appended, Engine, EngineFuture, EngineStats, Epoch, FrameTemplate, IdempotencyOutcome, Live,
    LiveSink, Page, PageQuery, Position, Recovery, RequestDigest, Stored, StreamKey, Target,
    TimeSource, page,
};
use index::{Index, UNBORN_BUCKETS};

/// How many idempotency keys are held at most by default; past it the oldest goes first.
pub const DEFAULT_IDEMPOTENCY_MAX_KEYS: NonZeroUsize = NonZeroUsize::MIN.saturating_add(99_999);

/// How an eviction race is retried: a stream evicted between lookup and lock is looked up
/// again, and a few tries are plenty since only a burst of new streams can evict it again.
const LOOKUP_TRIES: usize = 3;

/// The memory engine's limits, taken from the server's config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryConfig {
    /// Messages kept per stream; 0 keeps none (seqs are still assigned).
    pub history_size: usize,
    /// How long a message is kept after it was appended.
    pub history_ttl: Duration,
    /// Streams kept; the least recently used (appended, recovered or looked up) goes first.
    pub history_max_streams: NonZeroUsize,
    /// Bytes of stored frames kept over all streams; past it the least recently used streams
    /// go first.
    pub history_max_bytes: u64,
    /// Idempotency keys kept; the oldest goes first, even inside its window.
    pub idempotency_max_keys: NonZeroUsize,
}

impl MemoryConfig {
    /// The limits the server's configuration sets (§12).
    pub fn from_config(config: &crate::config::Config) -> Self {
        MemoryConfig {
            history_size: config.history_size,
            history_ttl: config.history_ttl,
            // `validate` refuses 0; the fallback only keeps this total.
            history_max_streams: NonZeroUsize::new(config.history_max_streams)
                .unwrap_or(NonZeroUsize::MIN),
            history_max_bytes: u64::try_from(config.history_max_bytes).unwrap_or(u64::MAX),
            idempotency_max_keys: DEFAULT_IDEMPOTENCY_MAX_KEYS,
        }
    }
}

#[cfg(test)]
impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig::from_config(&crate::config::Config::default())
    }
}

struct Stream {
    /// The bucket seed it was created under (see [`Index::unborn`]).
    born: u64,
    /// Held from seq assignment until the sink returns: the per-stream ordering token.
    delivery: Mutex<()>,
    state: Mutex<StreamState>,
}

struct StreamState {
    epoch: Epoch,
    top: u64,
    /// Contiguous seqs ending at `top`, so a gap is seen by counting, without a watermark.
    messages: VecDeque<Stored>,
    bytes: u64,
    /// Set once the index dropped this stream; a holder of the `Arc` looks it up again.
    evicted: bool,
    /// An earlier stream of this key (or, rarely, of a key sharing its filter bit) was evicted
    /// holding history, so `0:0` can never be the whole story. A bool in the padding after
    /// `evicted`: it costs no byte per stream.
    gap: bool,
}

impl StreamState {
    fn empty(epoch: Epoch, gap: bool) -> Self {
        StreamState {
            epoch,
            top: 0,
            messages: VecDeque::new(),
            bytes: 0,
            evicted: false,
            gap,
        }
    }
}

#[derive(Default)]
struct Counters {
    streams: AtomicU64,
    messages: AtomicU64,
    bytes: AtomicU64,
    evicted: AtomicU64,
}

/// The engine for a single node.
pub struct MemoryEngine {
    config: MemoryConfig,
    ttl_ms: u64,
    time: Arc<dyn TimeSource>,
    sink: Arc<dyn LiveSink>,
    index: Mutex<Index>,
    keys: KeyStore,
    counters: Counters,
}

impl MemoryEngine {
    /// An empty engine delivering appended messages to `sink`.
    pub fn new(config: MemoryConfig, time: Arc<dyn TimeSource>, sink: Arc<dyn LiveSink>) -> Self {
        MemoryEngine {
            ttl_ms: u64::try_from(config.history_ttl.as_millis()).unwrap_or(u64::MAX),
            index: Mutex::new(Index {
                streams: LruCache::new(config.history_max_streams),
                unborn: (0..UNBORN_BUCKETS).map(|_| fresh_bits()).collect(),
                lost: Lost::new(config.history_max_streams.get()),
                hasher: RandomState::new(),
            }),
            keys: KeyStore::new(config.idempotency_max_keys),
            config,
            time,
            sink,
            counters: Counters::default(),
        }
    }

    /// The stream of `key`, created in its unborn epoch if missing; evicts the least recently
    /// used one when full.
    fn stream(&self, key: &StreamKey) -> Arc<Stream> {
        let (stream, evicted) = {
            let mut index = self.index.lock();
            if let Some(stream) = index.streams.get(key) {
                return stream.clone();
            }
            let (born, _) = index.unborn(key);
            let stream = Arc::new(Stream {
                born,
                delivery: Mutex::new(()),
                state: Mutex::new(index.missing(key)),
            });
            let evicted = index.streams.push(key.clone(), stream.clone());
            if let Some((old_key, old)) = &evicted {
                index.retire(old_key, old);
            }
            (stream, evicted)
        };
        self.counters.streams.fetch_add(1, Ordering::Relaxed);
        if let Some((_, old)) = evicted {
            self.retired(&old);
        }
        stream
    }

    /// Empties a stream the index dropped; its holders see `evicted` and look up again.
    fn retired(&self, old: &Stream) {
        self.counters.streams.fetch_sub(1, Ordering::Relaxed);
        self.counters.evicted.fetch_add(1, Ordering::Relaxed);
        let mut state = old.state.lock();
        state.evicted = true;
        self.drop_front(&mut state, usize::MAX);
    }

    /// Removes up to `count` of the oldest messages, keeping the counters right.
    fn drop_front(&self, state: &mut StreamState, count: usize) -> usize {
        let count = count.min(state.messages.len());
        let bytes: u64 = state
            .messages
            .drain(..count)
            .map(|stored| stored.frame.len() as u64)
            .sum();
        state.bytes -= bytes;
        self.counters
            .messages
            .fetch_sub(count as u64, Ordering::Relaxed);
        self.counters.bytes.fetch_sub(bytes, Ordering::Relaxed);
        count
    }

    /// Applies `history_size` and `history_ttl`; returns how many messages went.
    fn trim(&self, state: &mut StreamState, now: u64) -> usize {
        let over_size = state
            .messages
            .len()
            .saturating_sub(self.config.history_size);
        let expired = state
            .messages
            .iter()
            .skip(over_size)
            .take_while(|stored| stored.at_ms.saturating_add(self.ttl_ms) <= now)
            .count();
        self.drop_front(state, over_size + expired)
    }

    fn append_now(&self, key: &StreamKey, frame: &FrameTemplate) -> Appended {
        let mut tries = 0;
        loop {
            tries += 1;
            let stream = self.stream(key);
            let _delivery = stream.delivery.lock();
            let mut state = stream.state.lock();
            if state.evicted && tries < LOOKUP_TRIES {
                continue;
            }
            let now = self.time.now_ms();
            let seq = match state.top.checked_add(1) {
                Some(seq) => seq,
                None => {
                    // Unreachable in practice (u64 seqs), but reusing seqs would corrupt every
                    // resume, so the stream starts a new incarnation instead.
                    let all = state.messages.len();
                    self.drop_front(&mut state, all);
                    state.epoch = Epoch::generate();
                    1
                }
            };
            state.top = seq;
            let live = Live {
                epoch: state.epoch.clone(),
                seq,
                frame: frame.build(seq),
            };
            if !state.evicted && self.config.history_size > 0 {
                let len = live.frame.len() as u64;
                state.messages.push_back(Stored {
                    seq,
                    frame: live.frame.clone(),
                    at_ms: now,
                });
                state.bytes += len;
                self.counters.messages.fetch_add(1, Ordering::Relaxed);
                self.counters.bytes.fetch_add(len, Ordering::Relaxed);
                self.trim(&mut state, now);
            }
            // The history is final: readers may go on while the fan-out runs, and the gate
            // drops what they replay and then also receive live.
            drop(state);
            let delivered = self.sink.deliver(key, &live);
            return Appended {
                position: Position {
                    epoch: live.epoch,
                    seq,
                },
                delivered,
                partial: false,
            };
        }
    }

    /// Runs `read` on the stream's state, or on an empty one in the unborn epoch when there is
    /// no stream (creating none); looks the stream up again if it was evicted between lookup
    /// and lock (its epoch is dead, and `welcome` must not hand that one out).
    fn with_state<T>(&self, key: &StreamKey, read: impl Fn(&mut StreamState) -> T) -> T {
        let mut tries = 0;
        loop {
            tries += 1;
            let stream = {
                let mut index = self.index.lock();
                match index.streams.get(key) {
                    Some(stream) => stream.clone(),
                    None => return read(&mut index.missing(key)),
                }
            };
            let mut state = stream.state.lock();
            if state.evicted && tries < LOOKUP_TRIES {
                continue;
            }
            let now = self.time.now_ms();
            self.trim(&mut state, now);
            return read(&mut state);
        }
    }

    fn recover_now(&self, key: &StreamKey, since: &Position) -> Recovery {
        self.with_state(key, |state| {
            let position = Position {
                epoch: state.epoch.clone(),
                seq: state.top,
            };
            let held = state.messages.len() as u64;
            if since.is_start() {
                return Recovery {
                    position,
                    recovered: held == state.top && !state.gap,
                    missed: state.messages.iter().cloned().collect(),
                };
            }
            let covered = since.epoch == state.epoch
                && since.seq <= state.top
                && state.top - since.seq <= held;
            if !covered {
                return Recovery {
                    position,
                    recovered: false,
                    missed: Vec::new(),
                };
            }
            // `covered` bounds the difference by `held`, a `usize` already.
            let skip = (held - (state.top - since.seq)) as usize;
            Recovery {
                position,
                recovered: true,
                missed: state.messages.range(skip..).cloned().collect(),
            }
        })
    }

    fn page_now(&self, key: &StreamKey, q: &PageQuery) -> Page {
        self.with_state(key, |state| {
            let held = state.messages.len() as u64;
            // Held messages are contiguous up to the top, so `oldest` indexes them.
            let oldest = state.top + 1 - held;
            let window = page::window(state.top, oldest, q.since_seq(), q.limit as u64, q.reverse);
            let messages = window
                .map(|(a, b)| {
                    let skip = (a - oldest) as usize;
                    let take = (b - a + 1) as usize;
                    state.messages.range(skip..).take(take).cloned().collect()
                })
                .unwrap_or_default();
            let position = Position {
                epoch: state.epoch.clone(),
                seq: state.top,
            };
            page::assemble(position, oldest, q, !state.gap, messages)
        })
    }

    fn lost_now(&self, key: &StreamKey) -> bool {
        let index = self.index.lock();
        index.streams.peek(key).is_none() && index.has_lost(key)
    }

    fn position_now(&self, key: &StreamKey) -> Option<Position> {
        let stream = self.index.lock().streams.get(key).cloned()?;
        let state = stream.state.lock();
        (!state.evicted).then(|| Position {
            epoch: state.epoch.clone(),
            seq: state.top,
        })
    }

    fn purge_now(&self) -> usize {
        let now = self.time.now_ms();
        // Snapshot, then trim stream by stream, so appends never wait for the whole walk.
        let streams: Vec<Arc<Stream>> = self
            .index
            .lock()
            .streams
            .iter()
            .map(|(_, s)| s.clone())
            .collect();
        let mut removed = 0;
        for stream in streams {
            removed += self.trim(&mut stream.state.lock(), now);
        }
        removed + self.keys.purge(now)
    }
}

impl Engine for MemoryEngine {
    fn append<'a>(
        &'a self,
        key: &'a StreamKey,
        frame: &'a FrameTemplate,
    ) -> EngineFuture<'a, Appended> {
        let appended = self.append_now(key, frame);
        self.bound_bytes(key);
        Box::pin(ready(Ok(appended)))
    }

    fn recover<'a>(
        &'a self,
        key: &'a StreamKey,
        since: &'a Position,
    ) -> EngineFuture<'a, Recovery> {
        Box::pin(ready(Ok(self.recover_now(key, since))))
    }

    fn page<'a>(&'a self, key: &'a StreamKey, query: &'a PageQuery) -> EngineFuture<'a, Page> {
        Box::pin(ready(Ok(self.page_now(key, query))))
    }

    fn ensure<'a>(&'a self, key: &'a StreamKey) -> EngineFuture<'a, Position> {
        let position = self.with_state(key, |state| Position {
            epoch: state.epoch.clone(),
            seq: state.top,
        });
        Box::pin(ready(Ok(position)))
    }

    fn position<'a>(&'a self, key: &'a StreamKey) -> EngineFuture<'a, Option<Position>> {
        Box::pin(ready(Ok(self.position_now(key))))
    }

    fn lost<'a>(&'a self, key: &'a StreamKey) -> EngineFuture<'a, bool> {
        Box::pin(ready(Ok(self.lost_now(key))))
    }

    fn idempotent<'a>(
        &'a self,
        target: &'a Target,
        key: &'a str,
        digest: &'a RequestDigest,
        window: Duration,
    ) -> EngineFuture<'a, IdempotencyOutcome> {
        Box::pin(ready(self.keys.claim(
            target,
            key,
            digest,
            window,
            self.time.now_ms(),
        )))
    }

    fn record_answer<'a>(
        &'a self,
        target: &'a Target,
        key: &'a str,
        _digest: &'a RequestDigest,
        answer: Bytes,
    ) -> EngineFuture<'a, ()> {
        // The digest is kept since the claim; the answer is all that is new.
        self.keys.record(target, key, answer, self.time.now_ms());
        Box::pin(ready(Ok(())))
    }

    fn forget<'a>(&'a self, target: &'a Target, key: &'a str) -> EngineFuture<'a, ()> {
        self.keys.forget(target, key);
        Box::pin(ready(Ok(())))
    }

    fn settle<'a>(&'a self, key: &'a StreamKey) -> EngineFuture<'a, ()> {
        // An append holds `delivery` from storing its message until the sink returns, so taking
        // it once waits out the one fan-out that may still carry a replayed seq.
        let stream = self.index.lock().streams.peek(key).cloned();
        if let Some(stream) = stream {
            drop(stream.delivery.lock());
        }
        Box::pin(ready(Ok(())))
    }

    fn purge(&self) -> EngineFuture<'_, usize> {
        Box::pin(ready(Ok(self.purge_now())))
    }

    fn stats(&self) -> EngineStats {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        EngineStats {
            holds_here: true,
            streams: load(&self.counters.streams),
            stored_messages: load(&self.counters.messages),
            stored_bytes: load(&self.counters.bytes),
            idempotency_keys: self.keys.len(),
            idempotent_repeats: self.keys.repeats(),
            evicted_streams: load(&self.counters.evicted),
        }
    }
}

#[path = "memory_bytes.rs"]
mod bytes_bound;
#[path = "memory_index.rs"]
mod index;

#[cfg(test)]
#[path = "memory_tests.rs"]
mod tests;
