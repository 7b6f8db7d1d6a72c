//! The shared half of a session: identity, liveness stamp and the bounded outbound queue (this
//! file); `rate`, the inbound rate bucket it carries. It may use only the bottom (auth, engine
//! types, protocol, id, clock): everything that reaches a session goes through it.
//!
//! The session task owns the socket; everyone else (API, reaper, other sessions) reaches it only
//! through [`Outbox::enqueue`] and [`Outbox::request_close`], which never block and
//! never touch the socket. The queue is a plain `VecDeque` behind a short lock rather than a channel
//! because an idle session must cost almost nothing: an empty `VecDeque` allocates no memory.

pub(crate) mod rate;

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::task::AtomicWaker;
use parking_lot::Mutex;
use std::task::Waker;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::id::SessionId;
use crate::outbox::rate::Bucket;
use crate::stream::{HandOver, Live, StreamKey};

/// A close the session task should perform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseRequest {
    /// WebSocket close code; the reason text is derived from it, so a request costs two bytes.
    pub code: u16,
}

impl CloseRequest {
    /// The close reason sent to the peer.
    pub fn reason(self) -> &'static str {
        use crate::protocol::close;
        match self.code {
            close::HEARTBEAT_TIMEOUT => "heartbeat timeout",
            close::ADMIN => "closed by admin",
            close::SLOW_CONSUMER => "slow consumer",
            close::GOING_AWAY => "server shutting down",
            close::RESTART => "service restart",
            close::TOO_BIG => "message too big",
            close::TOKEN_EXPIRED => "token expired",
            close::POLICY => "message rate exceeded",
            _ => "",
        }
    }
}

/// What happened to one enqueued frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// The frame is in the queue.
    Queued,
    /// The session is already closing; the frame was dropped.
    Closing,
    /// The queue was full: the session is now being closed as a slow consumer (4003). Holds how
    /// many frames were dropped: the queued backlog and this one.
    Overflow(usize),
}

/// The part of the outbox protected by the lock.
#[derive(Default)]
struct Queue {
    /// Frames waiting for the writer, oldest first.
    frames: VecDeque<Message>,
    /// Bytes of the queued frames, for `send_queue_bytes`.
    bytes: usize,
    /// The reaper asked for a Ping.
    ping: bool,
    /// The first close requested wins; nothing is queued after it.
    close: Option<CloseRequest>,
}

/// How much a session may have queued before it is a slow consumer.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    /// Frames (`send_queue`).
    pub frames: usize,
    /// Bytes (`send_queue_bytes`).
    pub bytes: usize,
}

/// A session's channels and what its token lets it subscribe to, under one short lock.
#[derive(Default)]
pub struct Subscriptions {
    /// Channels subscribed to, for listings and cleanup (at most `max_channels_per_session`).
    pub list: Vec<Arc<str>>,
    /// With auth on, the token's `channels` claim; `None` with auth off (any channel).
    pub grants: Option<Arc<Grants>>,
}

/// What a token allows on top of its `sub`: `Some` only with auth on.
#[derive(Debug)]
pub struct Grants {
    /// The `channels` claim; `None` when the token has none (no channel may be subscribed).
    pub channels: Option<crate::auth::ChannelGrants>,
}

impl Grants {
    /// Whether the token allows subscribing to `channel`.
    pub fn allows(&self, channel: &str) -> bool {
        self.channels.as_ref().is_some_and(|g| g.allows(channel))
    }
}

/// What the writer takes out of the outbox in one go.
pub struct Batch {
    /// Frames to write, in order.
    pub frames: VecDeque<Message>,
    /// Send a Ping after the frames.
    pub ping: bool,
}

/// A resuming session's gates, by stream.
type Gates = Vec<(StreamKey, Arc<HandOver>)>;

/// The shared half of one live session: how the rest of the server sees and reaches it.
pub struct Outbox {
    /// Session id, unique in this process.
    pub id: SessionId,
    /// Who connected (user, device or business id).
    pub client_id: Arc<str>,
    /// Client address: the TCP peer, or the forwarded address from a trusted proxy (port 0).
    remote_ip: IpAddr,
    /// Client port; 0 when the address came from a forwarded header.
    remote_port: u16,
    /// permessage-deflate window bits the session agreed to (9..=15); 0 = no compression. One
    /// byte in what was padding; set once, before the session runs.
    deflate: AtomicU8,
    /// Wall-clock connection time in Unix milliseconds, for listings.
    connected_at_ms: u64,
    /// Last frame from the peer, in milliseconds since the registry's epoch.
    last_seen: AtomicU64,
    /// Bounded outbound queue, drained by the session's writer.
    queue: Mutex<Queue>,
    /// Wakes the session task: new frames, a ping or a close. Lighter than a `Notify`, and the
    /// task needs no `Notified` future of its own while it waits.
    wake: AtomicWaker,
    /// Token expiry in Unix seconds; 0 = none. The reaper closes the session with 4004 after it.
    expires_at: AtomicU64,
    /// Channels and the token's grants.
    pub(crate) subs: Mutex<Subscriptions>,
    /// Inbound rate limiter.
    pub(crate) inbound: Mutex<Bucket>,
    /// Resumes in progress, one gate per stream being replayed (`docs/history.md`). `None` for
    /// every session that is not resuming right now, so an idle session pays one word.
    gates: Mutex<Option<Box<Gates>>>,
}

impl Outbox {
    /// A new outbox whose queue already holds `first` (the welcome frame), if any.
    pub fn new(
        id: SessionId,
        client_id: Arc<str>,
        remote: SocketAddr,
        now_ms: u64,
        first: Option<Message>,
    ) -> Outbox {
        let mut queue = Queue::default();
        queue.frames.extend(first);
        Outbox {
            id,
            client_id,
            remote_ip: remote.ip(),
            remote_port: remote.port(),
            deflate: AtomicU8::new(0),
            connected_at_ms: crate::clock::wall_ms(),
            last_seen: AtomicU64::new(now_ms),
            queue: Mutex::new(queue),
            wake: AtomicWaker::new(),
            expires_at: AtomicU64::new(0),
            subs: Mutex::new(Subscriptions::default()),
            inbound: Mutex::new(Bucket::default()),
            gates: Mutex::new(None),
        }
    }

    /// Client address (port 0 when it came from a trusted proxy's forwarded header).
    pub fn remote(&self) -> SocketAddr {
        SocketAddr::new(self.remote_ip, self.remote_port)
    }

    /// Records the permessage-deflate window the session agreed to (0 = none).
    pub fn set_deflate(&self, window_bits: u8) {
        self.deflate.store(window_bits, Ordering::Relaxed);
    }

    /// The permessage-deflate window bits the session agreed to; 0 when it sends plain frames.
    pub fn deflate(&self) -> u8 {
        // Relaxed: set before the session task is spawned; a fan-out that reads a stale 0
        // sends a plain frame, which is always allowed.
        self.deflate.load(Ordering::Relaxed)
    }

    /// Wall-clock connection time in Unix milliseconds.
    pub fn connected_at_ms(&self) -> u64 {
        self.connected_at_ms
    }

    /// Wall-clock connection time.
    pub fn connected_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.connected_at_ms)
    }

    /// Records that the peer sent something.
    pub fn touch(&self, now_ms: u64) {
        // Relaxed is enough: the reaper only needs an eventually fresh, monotone-ish value.
        self.last_seen.store(now_ms, Ordering::Relaxed);
    }

    /// When the peer last sent a frame (registry epoch milliseconds).
    pub fn last_seen(&self) -> u64 {
        self.last_seen.load(Ordering::Relaxed)
    }

    /// Queues one frame without blocking; a full queue turns into a 4003 close.
    pub fn enqueue(&self, msg: Message, limits: QueueLimits) -> Enqueued {
        let result = {
            let mut q = self.queue.lock();
            if q.close.is_some() {
                return Enqueued::Closing;
            }
            let len = msg.len();
            // A lone message may exceed the byte bound (the API accepts up to 1 MiB), a backlog may not.
            let over_bytes = !q.frames.is_empty() && q.bytes + len > limits.bytes;
            if q.frames.len() >= limits.frames || over_bytes {
                // The queued backlog is useless to a peer that is being disconnected.
                let cleared = std::mem::take(&mut q.frames).len();
                q.bytes = 0;
                q.close = Some(CloseRequest {
                    code: crate::protocol::close::SLOW_CONSUMER,
                });
                Enqueued::Overflow(cleared + 1)
            } else {
                q.frames.push_back(msg);
                q.bytes += len;
                Enqueued::Queued
            }
        };
        self.wake.wake();
        result
    }

    /// Asks the writer to send a Ping.
    pub fn request_ping(&self) {
        self.queue.lock().ping = true;
        self.wake.wake();
    }

    /// Asks the session to close with `code`; returns false when a close was already requested.
    pub fn request_close(&self, code: u16) -> bool {
        let first = {
            let mut q = self.queue.lock();
            if q.close.is_some() {
                false
            } else {
                q.close = Some(CloseRequest { code });
                true
            }
        };
        self.wake.wake();
        first
    }

    /// The close requested so far, if any.
    pub fn close_requested(&self) -> Option<CloseRequest> {
        self.queue.lock().close
    }

    /// Takes the queued frames and the ping request (a close is read by `close_requested`).
    pub fn take_batch(&self) -> Batch {
        let mut q = self.queue.lock();
        Batch {
            frames: {
                q.bytes = 0;
                std::mem::take(&mut q.frames)
            },
            ping: std::mem::take(&mut q.ping),
        }
    }

    /// Takes the first queued frame if it is text of at most `limit` bytes: the `welcome`,
    /// which the edge writes itself before the session starts (see `handshake`).
    pub fn take_greeting(&self, limit: usize) -> Option<Utf8Bytes> {
        let mut q = self.queue.lock();
        match q.frames.front() {
            Some(Message::Text(t)) if t.len() <= limit => {}
            _ => return None,
        }
        match q.frames.pop_front() {
            Some(Message::Text(t)) => {
                q.bytes = q.bytes.saturating_sub(t.len());
                Some(t)
            }
            _ => None,
        }
    }

    /// Registers the session task to be woken by the next enqueue, ping or close request.
    /// Register first, then look at the outbox, so no wake-up can fall in between.
    pub fn register(&self, waker: &Waker) {
        self.wake.register(waker);
    }

    /// Puts a live frame of `key` through this session's gate for that stream, if it is resuming
    /// it, else straight to `push`; true when the session has or will have the frame. The gates
    /// stay locked while pushing, so a gate added meanwhile cannot see a frame pushed past it.
    pub fn offer(&self, key: &StreamKey, live: &Live, push: impl FnOnce(&Live) -> bool) -> bool {
        let gates = self.gates.lock();
        match gates
            .as_deref()
            .and_then(|g| g.iter().find(|(k, _)| k == key))
        {
            Some((_, gate)) => gate.offer(live, push).accepted(),
            None => push(live),
        }
    }

    /// Starts gating the live frames of `key` (step 1 of the hand-over).
    pub fn add_gate(&self, key: StreamKey, gate: Arc<HandOver>) {
        self.gates
            .lock()
            .get_or_insert_with(Box::default)
            .push((key, gate));
    }

    /// Ends gating with `gate`; the last one gone frees the list.
    pub fn remove_gate(&self, gate: &Arc<HandOver>) {
        let mut gates = self.gates.lock();
        if let Some(list) = gates.as_mut() {
            list.retain(|(_, g)| !Arc::ptr_eq(g, gate));
            if list.is_empty() {
                *gates = None;
            }
        }
    }

    /// Frames still queued, taken away; the session counts them as dropped when it ends.
    pub fn take_unsent(&self) -> usize {
        std::mem::take(&mut self.queue.lock().frames).len()
    }

    /// Snapshot of the subscribed channels.
    pub fn channel_list(&self) -> Vec<Arc<str>> {
        self.subs.lock().list.clone()
    }

    /// Token expiry (Unix seconds), if the session's token has one.
    pub fn expires_at(&self) -> Option<u64> {
        match self.expires_at.load(Ordering::Relaxed) {
            0 => None,
            t => Some(t),
        }
    }

    /// Sets what a (new) token allows: its expiry and its channel grants.
    pub fn set_token(&self, expires_at: Option<u64>, grants: Option<Arc<Grants>>) {
        self.expires_at
            .store(expires_at.unwrap_or(0), Ordering::Relaxed);
        self.subs.lock().grants = grants;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle() -> Outbox {
        Outbox::new(
            SessionId(1),
            Arc::from("c"),
            "127.0.0.1:1".parse().unwrap(),
            0,
            Some(Message::text("welcome")),
        )
    }

    #[test]
    fn overflow_turns_into_slow_consumer_close() {
        let h = handle();
        let two = QueueLimits {
            frames: 2,
            bytes: 1 << 20,
        };
        assert_eq!(h.enqueue(Message::text("a"), two), Enqueued::Queued);
        assert_eq!(h.enqueue(Message::text("b"), two), Enqueued::Overflow(3));
        assert_eq!(h.enqueue(Message::text("c"), two), Enqueued::Closing);
        let b = h.take_batch();
        assert!(b.frames.is_empty(), "a slow consumer's backlog is dropped");
        assert_eq!(h.close_requested().map(|c| c.code), Some(4003));
    }

    #[test]
    fn queued_bytes_are_bounded_but_one_large_message_fits() {
        let h = handle();
        let _ = h.take_batch();
        let limits = QueueLimits {
            frames: 100,
            bytes: 1000,
        };
        let big = Message::text("x".repeat(5000));
        assert_eq!(
            h.enqueue(big, limits),
            Enqueued::Queued,
            "a lone message may exceed"
        );
        let _ = h.take_batch();
        for _ in 0..9 {
            assert_eq!(
                h.enqueue(Message::text("y".repeat(100)), limits),
                Enqueued::Queued
            );
        }
        let one_more = Message::text("z".repeat(101));
        assert_eq!(h.enqueue(one_more, limits), Enqueued::Overflow(10));
    }

    #[test]
    fn first_close_wins() {
        let h = handle();
        assert!(h.request_close(4001));
        assert!(!h.request_close(1001));
        assert_eq!(
            h.close_requested().map(|c| c.reason()),
            Some("heartbeat timeout")
        );
        assert_eq!(h.close_requested().map(|c| c.code), Some(4001));
    }
}
