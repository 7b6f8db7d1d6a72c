//! The vocabulary of streams, shared by the engines, the cluster's plumbing, the registry and
//! the outboxes: which stream (`StreamKey`) or idempotency target (`Target`), its epochs and
//! positions (`position`), a live frame and where it goes (`Live`, `LiveSink`), the frame
//! template an append fills, the resume hand-over (`handover`), and what an engine call can fail
//! with. Here, below both `engine` and `cluster`, so the Redis engine in `engine/` can use the
//! cluster's connection while the cluster delivers live frames without knowing any engine. It
//! may use nothing of the crate.

pub mod handover;
pub mod position;

use std::fmt;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

pub use handover::HandOver;
#[cfg(test)]
pub use handover::{Offered, Overflowed};
pub use position::{Epoch, Position, Since};

/// Longest idempotency key the engine keeps; longer ones are refused so keys cannot eat memory.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 256;

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
