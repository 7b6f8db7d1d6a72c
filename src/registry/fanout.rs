//! Fan-out: one frame to one session, to a client id's sessions, to a channel or to everyone,
//! and the engine's live frames to the sessions of their stream. Recipients come from a snapshot
//! of the indexes, so the lock is never held while queues are appended to.

use std::sync::Arc;

use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use super::{FAN_OUT_SLICE, Registry};
use crate::net::deflate::FanOut;
use crate::outbox::{Enqueued, Outbox};
use crate::stream::{Live, LiveSink, StreamKey};

impl Registry {
    /// Queues one frame to one session and keeps the books: a frame for a closing session is a
    /// drop, a full queue is a slow consumer (closed with 4003). Every sender goes through here.
    pub fn enqueue(&self, outbox: &Outbox, msg: Message) -> Enqueued {
        let result = self.enqueue_quietly(outbox, msg);
        if matches!(result, Enqueued::Overflow(_)) {
            log::warn!(
                "session {} client {} peer {}: send queue full, closing 4003",
                outbox.id,
                outbox.client_id,
                outbox.remote()
            );
        }
        result
    }

    /// [`Registry::enqueue`] without the per-session warning, for fan-outs that report once.
    fn enqueue_quietly(&self, outbox: &Outbox, msg: Message) -> Enqueued {
        let result = outbox.enqueue(msg, self.limits);
        match result {
            Enqueued::Queued => {}
            Enqueued::Closing => self.metrics.dropped(),
            Enqueued::Overflow(cleared) => {
                self.metrics.slow_consumer();
                self.metrics.dropped_n(cleared as u64);
            }
        }
        result
    }

    /// Queues `msg` to each target outside the registry lock (the targets are a snapshot), so
    /// a connect or a close never waits out a fan-out to thousands of queues; returns how many
    /// queues accepted it and logs one line for all the slow consumers it found.
    /// Each session gets the frame it negotiated: the plain one, or the one compressed form.
    fn fan_out(&self, targets: &[Arc<Outbox>], msg: &FanOut) -> usize {
        let (mut queued, mut slow, mut closing) = (0, 0, 0);
        for outbox in targets {
            match self.enqueue_quietly(outbox, msg.for_session(outbox.deflate())) {
                Enqueued::Queued => queued += 1,
                Enqueued::Overflow(_) => slow += 1,
                Enqueued::Closing => closing += 1,
            }
        }
        if slow > 0 {
            log::warn!(
                "fan-out to {} sessions: {slow} send queues full (closing 4003), {closing} already closing",
                targets.len()
            );
        }
        queued
    }

    /// Queues `msg` to every session of `client_id`; `None` when the id has no session.
    pub fn send_to_client(&self, client_id: &str, msg: &Message) -> Option<usize> {
        let targets: Vec<_> = self
            .idx
            .read()
            .by_client
            .get(client_id)?
            .iter()
            .cloned()
            .collect();
        Some(self.fan_out(&targets, &self.fan_out_of(msg)))
    }

    /// `msg` ready for a fan-out: compressed at most once per window size, on first need.
    fn fan_out_of(&self, msg: &Message) -> FanOut {
        FanOut::new(msg.clone(), self.compress_min)
    }

    /// Queues `msg` to every live session.
    pub fn broadcast(&self, msg: &Message) -> usize {
        self.fan_out(&self.snapshot(None), &self.fan_out_of(msg))
    }

    /// [`Registry::broadcast`] in slices of [`FAN_OUT_SLICE`] sessions with a yield between
    /// them, for callers on the runtime (the API): the sessions one slice wakes get to write
    /// before the next slice is woken, and a connect that arrives meanwhile waits behind one
    /// slice instead of behind every session on the node.
    pub async fn broadcast_paced(&self, msg: &Message) -> usize {
        let targets = self.snapshot(None);
        let msg = self.fan_out_of(msg);
        let mut queued = 0;
        for slice in targets.chunks(FAN_OUT_SLICE) {
            queued += self.fan_out(slice, &msg);
            tokio::task::yield_now().await;
        }
        queued
    }

    /// Queues `msg` to every subscriber of `channel`.
    pub fn publish(&self, channel: &str, msg: &Message) -> usize {
        let targets: Vec<_> = match self.idx.read().by_channel.get(channel) {
            Some(subs) => subs.values().cloned().collect(),
            None => return 0,
        };
        self.fan_out(&targets, &self.fan_out_of(msg))
    }
}

/// The engine's live fan-out: a stream's frame goes to each local session of that client id or
/// channel, through the session's gate while it resumes that stream.
impl LiveSink for Registry {
    fn deliver(&self, key: &StreamKey, live: &Live) -> usize {
        // Frames are built from envelopes, which are UTF-8: checked once, not per recipient.
        let Ok(text) = Utf8Bytes::try_from(live.frame.clone()) else {
            log::error!("stream frame is not UTF-8; not delivered");
            return 0;
        };
        // A snapshot, as in every fan-out: no lock is held while thousands of queues are fed.
        let targets: Vec<Arc<Outbox>> = {
            let idx = self.idx.read();
            match key {
                StreamKey::Client(id) => idx
                    .by_client
                    .get(&**id)
                    .map(|list| list.iter().cloned().collect())
                    .unwrap_or_default(),
                StreamKey::Channel(name) => idx
                    .by_channel
                    .get(&**name)
                    .map(|subs| subs.values().cloned().collect())
                    .unwrap_or_default(),
            }
        };
        let msg = self.fan_out_of(&Message::Text(text));
        let mut slow = 0;
        let delivered = targets
            .iter()
            .filter(|outbox| {
                outbox.offer(key, live, |_| {
                    match self.enqueue_quietly(outbox, msg.for_session(outbox.deflate())) {
                        Enqueued::Queued => true,
                        Enqueued::Overflow(_) => {
                            slow += 1;
                            false
                        }
                        Enqueued::Closing => false,
                    }
                })
            })
            .count();
        if slow > 0 {
            log::warn!(
                "fan-out to {} sessions: {slow} send queues full (closing 4003)",
                targets.len()
            );
        }
        delivered
    }
}
