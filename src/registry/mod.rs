//! Who is connected here: sessions by id, by client id and by channel, and fan-out to their queues
//! (this file); `listing`, a session as the sessions API renders it and the merge of nodes' pages.
//! It may use outboxes, the engine's types, `net::deflate` and the bottom; never sessions, HTTP
//! or the cluster (which uses it).
//!
//! The registry is the only shared mutable state. Its lock is never held across an `.await` or a
//! socket write: fan-out only appends to each recipient's in-memory queue.

pub(crate) mod listing;

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::engine::{Live, LiveSink, StreamKey};
use crate::id::SessionId;
use crate::metrics::Metrics;
use crate::net::deflate::FanOut;
use crate::outbox::{Enqueued, Outbox, QueueLimits};

/// Sessions one paced fan-out slice wakes before it yields.
pub const FAN_OUT_SLICE: usize = 512;

/// What a subscribe did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subscribed {
    /// Newly subscribed.
    New,
    /// It already was.
    Already,
    /// The session holds `max_channels_per_session` channels already.
    TooMany,
    /// The session is no longer registered.
    Gone,
}

/// The indexes, under one lock so they never disagree.
#[derive(Default)]
struct Indexes {
    /// Every live session.
    by_id: HashMap<SessionId, Arc<Outbox>>,
    /// Sessions of each client id (tabs, devices).
    by_client: HashMap<Arc<str>, ClientSessions>,
    /// Subscribers of each channel.
    by_channel: HashMap<Arc<str>, HashMap<SessionId, Arc<Outbox>>>,
}

/// The sessions of one client id. Most clients have one, which then needs no allocation.
enum ClientSessions {
    /// The common case.
    One(Arc<Outbox>),
    /// Several tabs or devices.
    Many(Vec<Arc<Outbox>>),
}

impl ClientSessions {
    fn add(&mut self, outbox: Arc<Outbox>) {
        match self {
            ClientSessions::One(first) => {
                *self = ClientSessions::Many(vec![Arc::clone(first), outbox])
            }
            ClientSessions::Many(v) => v.push(outbox),
        }
    }

    /// Removes `id`; true when no session is left.
    fn remove(&mut self, id: SessionId) -> bool {
        match self {
            ClientSessions::One(outbox) => outbox.id == id,
            ClientSessions::Many(v) => {
                v.retain(|s| s.id != id);
                let last = (v.len() == 1).then(|| v.remove(0));
                let empty = v.is_empty() && last.is_none();
                if let Some(outbox) = last {
                    *self = ClientSessions::One(outbox);
                }
                empty
            }
        }
    }

    fn iter(&self) -> std::slice::Iter<'_, Arc<Outbox>> {
        match self {
            ClientSessions::One(outbox) => std::slice::from_ref(outbox).iter(),
            ClientSessions::Many(v) => v.iter(),
        }
    }
}

/// The session registry.
pub struct Registry {
    /// Session indexes.
    idx: RwLock<Indexes>,
    /// What a session may have queued before it is a slow consumer.
    limits: QueueLimits,
    /// Subscriptions one session may hold.
    max_channels: usize,
    /// `compression_min_size`: a fan-out compresses messages this large once, for every session
    /// that negotiated permessage-deflate.
    compress_min: usize,
    /// Counters shared with `/metrics`.
    pub(crate) metrics: Arc<Metrics>,
}

impl Registry {
    /// An empty registry.
    pub fn new(limits: QueueLimits, max_channels: usize, metrics: Arc<Metrics>) -> Registry {
        Registry {
            idx: RwLock::new(Indexes::default()),
            limits,
            max_channels,
            compress_min: crate::config::DEFAULT_COMPRESSION_MIN_SIZE,
            metrics,
        }
    }

    /// Sets `compression_min_size` for fan-outs.
    pub fn with_compression_min(mut self, min: usize) -> Registry {
        self.compress_min = min;
        self
    }

    /// Live sessions.
    pub fn len(&self) -> usize {
        self.idx.read().by_id.len()
    }

    /// Adds a session to the indexes.
    pub fn insert(&self, outbox: Arc<Outbox>) {
        self.insert_client(&outbox);
        self.insert_id(outbox);
    }

    /// Adds a resuming session to the client-id index only: its client stream reaches its gate
    /// from now on, while broadcasts and lookups by id wait for [`Registry::insert_id`], after
    /// its `welcome` is queued (welcome stays the first frame).
    pub fn insert_client(&self, outbox: &Arc<Outbox>) {
        let mut idx = self.idx.write();
        match idx.by_client.get_mut(&outbox.client_id) {
            Some(list) => list.add(Arc::clone(outbox)),
            None => {
                idx.by_client.insert(
                    Arc::clone(&outbox.client_id),
                    ClientSessions::One(Arc::clone(outbox)),
                );
            }
        }
    }

    /// Completes [`Registry::insert_client`]: the session is listed and reachable by id.
    pub fn insert_id(&self, outbox: Arc<Outbox>) {
        self.idx.write().by_id.insert(outbox.id, outbox);
    }

    /// Removes a session from every index (its channels included).
    pub fn remove(&self, outbox: &Outbox) {
        let channels = std::mem::take(&mut outbox.subs.lock().list);
        let mut idx = self.idx.write();
        idx.by_id.remove(&outbox.id);
        if idx
            .by_client
            .get_mut(&outbox.client_id)
            .is_some_and(|list| list.remove(outbox.id))
        {
            idx.by_client.remove(&outbox.client_id);
        }
        for ch in channels {
            if let Some(subs) = idx.by_channel.get_mut(&ch) {
                subs.remove(&outbox.id);
                if subs.is_empty() {
                    idx.by_channel.remove(&ch);
                }
            }
        }
    }

    /// Subscribes a live session, within `max_channels_per_session`.
    pub fn subscribe(&self, outbox: &Arc<Outbox>, channel: &str) -> Subscribed {
        let mut idx = self.idx.write();
        if !idx.by_id.contains_key(&outbox.id) {
            return Subscribed::Gone;
        }
        let mut subs = outbox.subs.lock();
        if subs.list.iter().any(|c| &**c == channel) {
            return Subscribed::Already;
        }
        if subs.list.len() >= self.max_channels {
            return Subscribed::TooMany;
        }
        let key: Arc<str> = match idx.by_channel.get_key_value(channel) {
            Some((k, _)) => Arc::clone(k),
            None => Arc::from(channel),
        };
        idx.by_channel
            .entry(Arc::clone(&key))
            .or_default()
            .insert(outbox.id, Arc::clone(outbox));
        subs.list.push(key);
        Subscribed::New
    }

    /// Unsubscribes; false when the session was not subscribed.
    pub fn unsubscribe(&self, outbox: &Outbox, channel: &str) -> bool {
        let mut idx = self.idx.write();
        let Some(subs) = idx.by_channel.get_mut(channel) else {
            return false;
        };
        let removed = subs.remove(&outbox.id).is_some();
        if subs.is_empty() {
            idx.by_channel.remove(channel);
        }
        drop(idx);
        if removed {
            outbox.subs.lock().list.retain(|c| &**c != channel);
        }
        removed
    }

    /// Looks a session up by id.
    pub fn get(&self, id: SessionId) -> Option<Arc<Outbox>> {
        self.idx.read().by_id.get(&id).cloned()
    }

    /// Every live session, or those of one client id.
    pub fn snapshot(&self, client_id: Option<&str>) -> Vec<Arc<Outbox>> {
        let idx = self.idx.read();
        match client_id {
            Some(c) => idx
                .by_client
                .get(c)
                .map(|l| l.iter().cloned().collect())
                .unwrap_or_default(),
            None => idx.by_id.values().cloned().collect(),
        }
    }

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

    /// The client ids with a session here (the cluster rewrites their presence after an outage).
    pub fn client_ids(&self) -> Vec<Arc<str>> {
        self.idx.read().by_client.keys().cloned().collect()
    }

    /// The channels with a subscriber here.
    pub fn channel_names(&self) -> Vec<Arc<str>> {
        self.idx.read().by_channel.keys().cloned().collect()
    }

    /// True while some session here is subscribed to `channel`.
    pub fn has_channel(&self, channel: &str) -> bool {
        self.idx.read().by_channel.contains_key(channel)
    }

    /// Sessions `client_id` holds here.
    pub fn sessions_of(&self, client_id: &str) -> usize {
        self.idx
            .read()
            .by_client
            .get(client_id)
            .map_or(0, |l| l.iter().len())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn reg() -> Arc<Registry> {
        Arc::new(Registry::new(
            QueueLimits {
                frames: 4,
                bytes: 1 << 20,
            },
            2,
            Arc::new(Metrics::default()),
        ))
    }

    fn session(r: &Registry, client: &str) -> Arc<Outbox> {
        static IDS: std::sync::LazyLock<crate::id::SessionIds> =
            std::sync::LazyLock::new(crate::id::SessionIds::new);
        let h = Arc::new(Outbox::new(
            IDS.next(),
            Arc::from(client),
            "127.0.0.1:9".parse().unwrap(),
            0,
            Some(Message::text("w")),
        ));
        r.insert(Arc::clone(&h));
        h
    }

    #[test]
    fn indexes_follow_subscriptions_and_removal() {
        let r = reg();
        let a1 = session(&r, "alice");
        let _a2 = session(&r, "alice");
        let b = session(&r, "bob");
        assert_eq!(r.subscribe(&a1, "news"), Subscribed::New);
        assert_eq!(r.subscribe(&a1, "news"), Subscribed::Already);
        assert_eq!(r.subscribe(&b, "news"), Subscribed::New);
        assert_eq!(r.subscribe(&b, "sport"), Subscribed::New);
        assert_eq!(
            r.subscribe(&b, "weather"),
            Subscribed::TooMany,
            "2 channels at most"
        );
        let m = Message::text("x");
        assert_eq!(r.send_to_client("alice", &m), Some(2));
        assert_eq!(r.publish("news", &m), 2);
        assert_eq!(r.broadcast(&m), 3);
        r.remove(&a1);
        assert_eq!(r.publish("news", &m), 1);
        assert!(r.unsubscribe(&b, "news"));
        assert_eq!(r.publish("news", &m), 0);
        assert_eq!(r.send_to_client("alice", &m), Some(1));
        assert!(r.send_to_client("carol", &m).is_none());
    }

    #[test]
    fn every_enqueue_is_accounted_for() {
        let r = reg();
        let h = session(&r, "slow");
        // The welcome is queued already; the bound is 4 frames.
        for _ in 0..3 {
            assert_eq!(r.enqueue(&h, Message::text("x")), Enqueued::Queued);
        }
        assert_eq!(r.enqueue(&h, Message::text("x")), Enqueued::Overflow(5));
        assert_eq!(r.enqueue(&h, Message::text("x")), Enqueued::Closing);
        let text = r.metrics.render(1, false);
        assert!(
            text.contains("tether_slow_consumer_closes_total 1\n"),
            "{text}"
        );
        // The four frames cleared by the overflow, the one that overflowed, the one after.
        assert!(text.contains("tether_send_queue_drops_total 6\n"), "{text}");
    }
}
