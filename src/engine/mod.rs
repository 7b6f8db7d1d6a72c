//! The engine: what outlives a session or spans nodes — stream epochs and seqs, history,
//! idempotency keys, and delivery of appended messages to the local sessions. One trait,
//! [`Engine`]; [`memory::MemoryEngine`] for one node, a Redis engine for a cluster. Sessions and
//! the API hold an `Arc<dyn Engine>` and never learn which one runs.
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
pub mod handover;
mod keys;
mod lost;
pub mod memory;
pub mod position;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
#[cfg(test)]
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};

pub use checked::Checked;
pub use handover::HandOver;
#[cfg(test)]
pub use handover::{Offered, Overflowed};
pub use position::{Epoch, Position, Since};

/// Longest idempotency key the engine keeps; longer ones are refused so keys cannot eat memory.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 256;

/// What a call with an idempotency key asked for: SHA-256 of its target, type and data as
/// received. Kept with the key, so a repeat with another body is told apart from a retry.
pub type RequestDigest = [u8; 32];

/// Which stream: a client id's and a channel's are separate namespaces even for equal names.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum StreamKey {
    /// The stream of pushes to one client id (all its sessions).
    Client(Arc<str>),
    /// The stream of publishes to one channel.
    Channel(Arc<str>),
}

impl StreamKey {
    /// The stream of a client id.
    pub fn client(id: &str) -> Self {
        StreamKey::Client(Arc::from(id))
    }

    /// The stream of a channel.
    pub fn channel(name: &str) -> Self {
        StreamKey::Channel(Arc::from(name))
    }
}

/// What an idempotency key is scoped to: the same key for two targets is two keys.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// `push` with `client_id`.
    Client(Arc<str>),
    /// `publish` to a channel.
    Channel(Arc<str>),
    /// `push` with `session_id`.
    Session(Arc<str>),
}

impl From<&StreamKey> for Target {
    fn from(key: &StreamKey) -> Self {
        match key {
            StreamKey::Client(id) => Target::Client(id.clone()),
            StreamKey::Channel(name) => Target::Channel(name.clone()),
        }
    }
}

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

/// One message on its way to live sessions; the seq rides beside the bytes so the gate need
/// not parse JSON.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Live {
    /// The incarnation of the stream the seq counts in.
    pub epoch: Epoch,
    /// Its place in the stream.
    pub seq: u64,
    /// The encoded envelope, the same bytes for every recipient.
    pub frame: Bytes,
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

/// An envelope with a hole for its seq: the frame carries its own seq, and the seq is only
/// known inside the engine's atomic append, so the engine fills the hole. A template (not a
/// closure) fits Redis: one Lua script can `head .. seq .. tail`, store and publish in one step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameTemplate {
    head: Bytes,
    tail: Bytes,
}

impl FrameTemplate {
    /// A frame that is `head`, the seq in decimal, then `tail`.
    pub fn new(head: Bytes, tail: Bytes) -> Self {
        FrameTemplate { head, tail }
    }

    /// From an encoded JSON object without `seq`: the frame gets `"seq":N` as its first field.
    /// `None` when `object` does not look like a JSON object (`{` … `}`).
    pub fn json_object(object: &[u8]) -> Option<Self> {
        let inner = object.strip_prefix(b"{")?.strip_suffix(b"}")?;
        let mut tail = BytesMut::with_capacity(inner.len() + 2);
        if !inner.iter().all(u8::is_ascii_whitespace) {
            tail.put_u8(b',');
            tail.put_slice(inner);
        }
        tail.put_u8(b'}');
        Some(FrameTemplate {
            head: Bytes::from_static(b"{\"seq\":"),
            tail: tail.freeze(),
        })
    }

    /// The bytes before and after the seq.
    pub fn parts(&self) -> (&Bytes, &Bytes) {
        (&self.head, &self.tail)
    }

    /// The frame for one seq.
    pub fn build(&self, seq: u64) -> Bytes {
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        let mut rest = seq;
        loop {
            at -= 1;
            digits[at] = b'0' + (rest % 10) as u8;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        let digits = &digits[at..];
        let mut frame = BytesMut::with_capacity(self.head.len() + digits.len() + self.tail.len());
        frame.put_slice(&self.head);
        frame.put_slice(digits);
        frame.put_slice(&self.tail);
        frame.freeze()
    }
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

/// Counters for `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// The figures of what is held (streams, messages, bytes, keys, evictions) are known here;
    /// false for Redis, where they are Redis's to report and a scrape must not cost a round
    /// trip, so `/metrics` leaves them out rather than showing zeros.
    pub holds_here: bool,
    /// Streams held (with or without messages).
    pub streams: u64,
    /// Messages held over all streams.
    pub stored_messages: u64,
    /// Bytes of stored frames over all streams.
    pub stored_bytes: u64,
    /// Idempotency keys held.
    pub idempotency_keys: u64,
    /// Calls answered as a repeat or in-flight since start.
    pub idempotent_repeats: u64,
    /// Streams evicted as least recently used since start.
    pub evicted_streams: u64,
}

/// Why an engine call failed.
#[derive(Clone, Debug)]
pub enum EngineError {
    /// The backing store (Redis) cannot be reached; the caller degrades to local delivery.
    Unavailable(Arc<dyn std::error::Error + Send + Sync>),
    /// The backing store took the call but its answer did not come in time (or the connection
    /// dropped after it was sent): the call may or may not have taken effect, so the caller
    /// must neither redo it locally nor report it as not done.
    Uncertain(Arc<dyn std::error::Error + Send + Sync>),
    /// An idempotency key longer than [`MAX_IDEMPOTENCY_KEY_LEN`].
    IdempotencyKeyTooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// A stream or target named by a client id (or session id) that breaks the one rule for
    /// them; the string says how. Nothing was stored.
    BadClientId(&'static str),
    /// A stream or target named by a channel that breaks the rule for channel names.
    BadChannel(String),
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineError::Unavailable(cause) => write!(f, "engine unavailable: {cause}"),
            EngineError::Uncertain(cause) => write!(f, "engine did not answer in time: {cause}"),
            EngineError::IdempotencyKeyTooLong { len } => write!(
                f,
                "idempotency_key is {len} bytes, at most {MAX_IDEMPOTENCY_KEY_LEN} are allowed"
            ),
            EngineError::BadClientId(why) => write!(f, "bad client id: {why}"),
            EngineError::BadChannel(why) => write!(f, "bad channel name: {why}"),
        }
    }
}

impl std::error::Error for EngineError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            EngineError::Unavailable(cause) | EngineError::Uncertain(cause) => Some(cause.as_ref()),
            EngineError::IdempotencyKeyTooLong { .. }
            | EngineError::BadClientId(_)
            | EngineError::BadChannel(_) => None,
        }
    }
}

/// Where the engine hands live messages: the registry's fan-out to local sessions.
pub trait LiveSink: Send + Sync + 'static {
    /// Offers `live` to this node's sessions of `key`; returns how many queues accepted it.
    /// Called in seq order per stream, under that stream's delivery lock: must not block.
    fn deliver(&self, key: &StreamKey, live: &Live) -> usize;
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
    fn append<'a>(&'a self, key: &'a StreamKey, frame: FrameTemplate)
    -> EngineFuture<'a, Appended>;

    /// The messages after `since`, under the rules of [`Recovery`]. A stream that does not
    /// exist yet is either created or reported in the epoch it will be created with (the memory
    /// engine creates nothing); either way the epoch put in `welcome` is the one later messages
    /// count in, unless the stream's history is lost in between.
    fn recover<'a>(&'a self, key: &'a StreamKey, since: &'a Position)
    -> EngineFuture<'a, Recovery>;

    /// The stream's current position (for a missing stream, as [`Engine::recover`] reports
    /// it): `welcome` for a session that did not ask to resume.
    fn ensure<'a>(&'a self, key: &'a StreamKey) -> EngineFuture<'a, Position>;

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
