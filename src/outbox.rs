//! The shared half of a session: identity, liveness stamp and the bounded outbound queue.
//!
//! The session task owns the socket; everyone else (API, reaper, other sessions) reaches it only
//! through [`Outbox::enqueue`] and [`Outbox::request_close`], which never block and
//! never touch the socket. The queue is a plain `VecDeque` behind a short lock rather than a channel
//! because an idle session must cost almost nothing: an empty `VecDeque` allocates no memory.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::task::AtomicWaker;
use parking_lot::Mutex;
use std::task::Waker;
use tokio_tungstenite::tungstenite::Message;

use crate::engine::{HandOver, Live, StreamKey};
use crate::id::SessionId;

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
            close::GOING_AWAY | close::RESTART => "server shutting down",
            close::TOO_BIG => "message too big",
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
    /// The reaper asked for a Ping.
    ping: bool,
    /// The first close requested wins; nothing is queued after it.
    close: Option<CloseRequest>,
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
    /// Wall-clock connection time in Unix milliseconds, for listings.
    connected_at_ms: u64,
    /// Last frame from the peer, in milliseconds since the registry's epoch.
    last_seen: AtomicU64,
    /// Bounded outbound queue, drained by the session's writer.
    queue: Mutex<Queue>,
    /// Wakes the session task: new frames, a ping or a close. Lighter than a `Notify`, and the
    /// task needs no `Notified` future of its own while it waits.
    wake: AtomicWaker,
    /// Channels this session is subscribed to, for listings and cleanup.
    pub(crate) channels: Mutex<Vec<Arc<str>>>,
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
            connected_at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            last_seen: AtomicU64::new(now_ms),
            queue: Mutex::new(queue),
            wake: AtomicWaker::new(),
            channels: Mutex::new(Vec::new()),
            gates: Mutex::new(None),
        }
    }

    /// Client address (port 0 when it came from a trusted proxy's forwarded header).
    pub fn remote(&self) -> SocketAddr {
        SocketAddr::new(self.remote_ip, self.remote_port)
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
    pub fn enqueue(&self, msg: Message, limit: usize) -> Enqueued {
        let result = {
            let mut q = self.queue.lock();
            if q.close.is_some() {
                return Enqueued::Closing;
            }
            if q.frames.len() >= limit {
                // The queued backlog is useless to a peer that is being disconnected.
                let cleared = std::mem::take(&mut q.frames).len();
                q.close = Some(CloseRequest {
                    code: crate::protocol::close::SLOW_CONSUMER,
                });
                Enqueued::Overflow(cleared + 1)
            } else {
                q.frames.push_back(msg);
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
            frames: std::mem::take(&mut q.frames),
            ping: std::mem::take(&mut q.ping),
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
        self.channels.lock().clone()
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
        assert_eq!(h.enqueue(Message::text("a"), 2), Enqueued::Queued);
        assert_eq!(h.enqueue(Message::text("b"), 2), Enqueued::Overflow(3));
        assert_eq!(h.enqueue(Message::text("c"), 2), Enqueued::Closing);
        let b = h.take_batch();
        assert!(b.frames.is_empty(), "a slow consumer's backlog is dropped");
        assert_eq!(h.close_requested().map(|c| c.code), Some(4003));
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
