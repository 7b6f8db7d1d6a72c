//! The engine: what outlives a session or spans nodes — stream epochs and seqs, history,
//! idempotency keys, and delivery of appended messages to the local sessions. One trait,
//! [`Engine`]; [`memory::MemoryEngine`] for one node, [`redis::RedisEngine`] for a cluster.
//! Sessions and the API hold an `Arc<dyn Engine>` and never learn which one runs. The words the
//! engines share with the cluster, the registry and the outboxes (stream keys, epochs and
//! positions, live frames, the hand-over, `EngineError`) live in `crate::stream`, re-exported
//! here; the engine may use them, the cluster's plumbing (for Redis), config, id and clock.
//!
//! # The hand-over: a resuming session sees each message exactly once
//!
//! A client connects with `since=E:5` while pushes keep arriving. It must get 6..N from the
//! replay, then live messages, with no gap and no duplicate at the joint. Two guarantees meet:
//!
//! 1. **The engine delivers in seq order.** [`Engine::append`] assigns the seq, builds the frame
//!    and stores it, then hands it to the [`LiveSink`] (the registry's fan-out) while holding the
//!    stream's delivery lock, so per stream the sink sees seq 1, 2, 3 … in that order even when
//!    API calls race. Redis gets the same from one Lua script that appends and publishes, read by
//!    one subscriber task per node. Every live frame carries its epoch and seq ([`Live`]).
//! 2. **The session gates live frames on the replayed position** with a [`HandOver`]:
//!    1. create a `HandOver` and register it in the registry for the stream *before* recovering:
//!       from then on every fan-out reaches it and it buffers;
//!    2. `engine.recover(key, since)` (awaiting is fine: nothing is locked);
//!    3. queue `welcome` / `subscribed` and then `recovery.missed`, in order;
//!    4. `hand_over.open(&recovery.position, push)`: buffered frames with a seq above the replayed
//!       top are pushed in order, the rest dropped, and from then on live frames pass straight
//!       through, still dropping any seq ≤ the top (a frame stored before the recover but fanned
//!       out after the gate opened);
//!    5. `engine.settle(key)`, then remove the gate: every frame the replay covered has been
//!       offered by then, so the frames that follow skip the gate and an idle session keeps
//!       nothing of its resume.
//!
//! Why no message is lost: a message stored before step 2 is in the replay; one stored after it
//! is fanned out after the registration of step 1, so it reaches the gate. Why none is doubled:
//! the gate drops every live seq the replay covered. The registry's fan-out calls
//! [`HandOver::offer`] for each registered session with the push into its outbox queue; nobody
//! holds a lock a session's setup takes while doing so.
//!
//! The API: `idempotent` first; on [`IdempotencyOutcome::First`], `append` (its `delivered` is
//! the count to answer; `0` with history on is the 202 `stored`), then `record_answer` with the
//! body it answered so a repeat inside the window answers the same.

mod checked;
mod keys;
mod lost;
pub mod memory;
pub mod page;
pub mod redis;

use std::future::Future;
use std::pin::Pin;
#[cfg(test)]
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;

pub use checked::Checked;
pub use page::{Page, PageQuery};
// Epochs are the engine's to mint (`fresh_bits`); the type lives in `stream` with the other
// words the cluster shares.
pub use crate::stream::position;
pub use crate::stream::{
    EngineError, EngineStats, Epoch, FrameTemplate, HandOver, Live, LiveSink,
    MAX_IDEMPOTENCY_KEY_LEN, Position, Since, StreamKey, Target,
};
#[cfg(test)]
pub use crate::stream::{Offered, Overflowed};

/// What a call with an idempotency key asked for: SHA-256 of its target, type and data as
/// received. Kept with the key, so a repeat with another body is told apart from a retry.
pub type RequestDigest = [u8; 32];

/// One message kept in a stream's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    /// Its place in the stream.
    pub seq: u64,
    /// The encoded envelope exactly as it was sent live, so a replay is byte-identical.
    pub frame: Bytes,
    /// When it was appended, by the engine's clock; TTL counts from here.
    pub at_ms: u64,
}

/// The answer to a resume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovery {
    /// The stream's top when the messages were read: `welcome`'s `epoch` and `seq`, and what to
    /// pass to [`HandOver::open`].
    pub position: Position,
    /// True when `missed` is every message after `since`. False when the epoch differs, `since`
    /// is ahead of the top, or some of those messages were trimmed; then `missed` is empty —
    /// except for `0:0`, which gets whatever is stored (a client with no state cannot be
    /// inconsistent) and is `recovered` only if that is the whole stream from seq 1 and no
    /// earlier stream of the key was evicted.
    pub recovered: bool,
    /// The messages to replay, in seq order.
    pub missed: Vec<Stored>,
}

/// The answer to an append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Appended {
    /// The stream's position with this message on top (its seq is the message's).
    pub position: Position,
    /// Sessions whose queue accepted the message (summed over nodes in a cluster).
    pub delivered: usize,
    /// In a cluster: some node holding a recipient did not answer in time.
    pub partial: bool,
}

/// Whether an idempotency key was seen within its window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdempotencyOutcome {
    /// New (or its window passed): do the work, then [`Engine::record_answer`].
    First,
    /// Seen: answer with the first call's recorded answer and do nothing else.
    Repeat(Bytes),
    /// Seen, but the first call has not recorded its answer yet; the API answers that it is in
    /// progress rather than doing the work twice.
    InFlight,
    /// Seen within its window with another [`RequestDigest`]: a different request reusing the
    /// key; the API refuses it (422) and does nothing.
    Reused,
}

/// The engine's source of wall-clock milliseconds (TTLs, `at_ms`), injectable so tests move it
/// instead of sleeping. Not `crate::clock::Clock`, which is monotonic from the server's start and
/// stamps liveness: history outlives a process (and, in a cluster, spans nodes), so its times are
/// Unix milliseconds.
pub trait TimeSource: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The real wall clock ([`crate::clock::wall_ms`]); stored `at_ms` doubles as the history API's
/// timestamp.
#[derive(Clone, Copy, Debug, Default)]
pub struct WallTime;

impl TimeSource for WallTime {
    fn now_ms(&self) -> u64 {
        crate::clock::wall_ms()
    }
}

/// A time source that moves only when told to.
#[cfg(test)]
#[derive(Debug, Default)]
pub struct ManualTime(AtomicU64);

#[cfg(test)]
impl ManualTime {
    /// A clock showing `ms`.
    pub fn new(ms: u64) -> Self {
        ManualTime(AtomicU64::new(ms))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_millis() as u64, Ordering::SeqCst);
    }
}

#[cfg(test)]
impl TimeSource for ManualTime {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// What every engine method returns.
///
/// A boxed future rather than `-> impl Future` in the trait: `impl Future` makes the trait
/// unusable as `dyn Engine`, which would push a type parameter through the state, the API and
/// every session, while the engine is picked at run time from `redis_url`. One allocation per
/// call is nothing next to a Redis round trip; the memory engine answers with a ready future.
pub type EngineFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, EngineError>> + Send + 'a>>;

/// The engine as sessions, the API and the reaper see it.
pub trait Engine: Send + Sync + 'static {
    /// Appends one message: assigns the next seq, builds the frame from `frame`, stores it
    /// (trimming by `history_size` and `history_ttl`), then delivers it to the [`LiveSink`]
    /// in seq order. Creates the stream (with a new epoch) if it has none.
    /// The template is borrowed: a caller that must fall back to an unnumbered frame when the
    /// append fails builds it from the same template.
    fn append<'a>(
        &'a self,
        key: &'a StreamKey,
        frame: &'a FrameTemplate,
    ) -> EngineFuture<'a, Appended>;

    /// The messages after `since`, under the rules of [`Recovery`]. A stream that does not
    /// exist yet is either created or reported in the epoch it will be created with (the memory
    /// engine creates nothing); either way the epoch put in `welcome` is the one later messages
    /// count in, unless the stream's history is lost in between.
    fn recover<'a>(&'a self, key: &'a StreamKey, since: &'a Position)
    -> EngineFuture<'a, Recovery>;

    /// The stream's current position (for a missing stream, as [`Engine::recover`] reports
    /// it): `welcome` for a session that did not ask to resume.
    fn ensure<'a>(&'a self, key: &'a StreamKey) -> EngineFuture<'a, Position>;

    /// One page of the stream's history under the rules of [`page`]; creates nothing (the
    /// history API).
    fn page<'a>(&'a self, key: &'a StreamKey, query: &'a PageQuery) -> EngineFuture<'a, Page>;

    /// The stream's current position if it exists; creates nothing (the history API).
    fn position<'a>(&'a self, key: &'a StreamKey) -> EngineFuture<'a, Option<Position>>;

    /// Whether `key` has no stream now although history was stored for it and lost (evicted):
    /// then a `0:0` read of it is not `recovered` (§13). May say true of a key that lost
    /// nothing, never false of one that did. Creates nothing. Required (no default), so a
    /// wrapper can never silently answer "nothing lost" for the engine it wraps.
    fn lost<'a>(&'a self, key: &'a StreamKey) -> EngineFuture<'a, bool>;

    /// Checks and claims `key` for `target` for `window`, remembering `digest`: a later call
    /// with the same key and another digest is [`IdempotencyOutcome::Reused`].
    fn idempotent<'a>(
        &'a self,
        target: &'a Target,
        key: &'a str,
        digest: &'a RequestDigest,
        window: Duration,
    ) -> EngineFuture<'a, IdempotencyOutcome>;

    /// Records the answer a [`IdempotencyOutcome::First`] call (of `digest`) gave, for its
    /// repeats.
    fn record_answer<'a>(
        &'a self,
        target: &'a Target,
        key: &'a str,
        digest: &'a RequestDigest,
        answer: Bytes,
    ) -> EngineFuture<'a, ()>;

    /// Releases a claimed key whose first call could not answer at all (engine error,
    /// cancelled task), so a retry is treated as new instead of as in-flight.
    fn forget<'a>(&'a self, target: &'a Target, key: &'a str) -> EngineFuture<'a, ()>;

    /// Resolves once every message of `key` stored so far has been handed to the [`LiveSink`]:
    /// after it, a session's gate can go, since no live frame its replay covered is still on
    /// its way. Creates nothing.
    fn settle<'a>(&'a self, key: &'a StreamKey) -> EngineFuture<'a, ()>;

    /// Drops what is past its TTL now; the reaper calls it periodically. Returns the number of
    /// messages and idempotency keys removed.
    fn purge(&self) -> EngineFuture<'_, usize>;

    /// Current counters; cheap enough for every scrape.
    fn stats(&self) -> EngineStats;
}
