//! Who is connected here: sessions by id, by client id and by channel (this file); `fanout`, the
//! frames sent to their queues; `listing`, a session as the sessions API renders it and the
//! merge of nodes' pages. It may use outboxes, the engine's types, `net::deflate` and the
//! bottom; never sessions, HTTP or the cluster (which uses it).
//!
//! The registry is the only shared mutable state. Its lock is never held across an `.await` or a
//! socket write: fan-out only appends to each recipient's in-memory queue.

mod fanout;
pub(crate) mod listing;
pub mod presence;

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;

use crate::id::SessionId;
use crate::metrics::Metrics;
use crate::outbox::{Outbox, QueueLimits};

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
    /// Sessions of each client id on each presence channel.
    counts: presence::Counts,
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
    /// `presence_channels`, and the changes waiting for the presence task.
    presence: Option<(presence::Matcher, Arc<presence::Feed>)>,
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
            presence: None,
        }
    }

    /// Sets `compression_min_size` for fan-outs.
    pub fn with_compression_min(mut self, min: usize) -> Registry {
        self.compress_min = min;
        self
    }

    /// Sets `presence_channels`: first and last sessions of a client id on those channels are
    /// noted for the presence task (docs/protocol.md §14).
    pub fn with_presence(mut self, channels: &[String]) -> Registry {
        let matcher = presence::Matcher::new(channels);
        if !matcher.is_empty() {
            self.presence = Some((matcher, Arc::new(presence::Feed::default())));
        }
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
            self.left(&mut idx, &ch, &outbox.client_id);
        }
    }

    /// A session of `client` left `channel`: on a presence channel, its client id's last one
    /// here is noted for the presence task.
    fn left(&self, idx: &mut Indexes, channel: &Arc<str>, client: &Arc<str>) {
        if let Some((m, feed)) = &self.presence
            && m.matches(channel)
            && presence::remove(&mut idx.counts, channel, client)
        {
            feed.note(channel, client);
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
        if let Some((m, feed)) = &self.presence
            && m.matches(&key)
            && presence::add(&mut idx.counts, &key, &outbox.client_id)
        {
            feed.note(&key, &outbox.client_id);
        }
        subs.list.push(key);
        Subscribed::New
    }

    /// Unsubscribes; false when the session was not subscribed.
    pub fn unsubscribe(&self, outbox: &Outbox, channel: &str) -> bool {
        let mut idx = self.idx.write();
        let Some(key) = idx
            .by_channel
            .get_key_value(channel)
            .map(|(k, _)| Arc::clone(k))
        else {
            return false;
        };
        let Some(subs) = idx.by_channel.get_mut(channel) else {
            return false;
        };
        let removed = subs.remove(&outbox.id).is_some();
        if subs.is_empty() {
            idx.by_channel.remove(channel);
        }
        if removed {
            self.left(&mut idx, &key, &outbox.client_id);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::Enqueued;
    use tokio_tungstenite::tungstenite::Message;

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
    fn presence_channels_note_first_and_last_sessions_of_a_client_id() {
        let r = Arc::new(
            Registry::new(
                QueueLimits {
                    frames: 4,
                    bytes: 1 << 20,
                },
                8,
                Arc::new(Metrics::default()),
            )
            .with_presence(&["lobby".into()]),
        );
        let feed = Arc::clone(r.presence_feed().unwrap());
        let tab1 = session(&r, "alice");
        let tab2 = session(&r, "alice");
        r.subscribe(&tab1, "lobby");
        r.subscribe(&tab1, "news");
        assert_eq!(
            feed.take().len(),
            1,
            "the first session, on the presence channel only"
        );
        r.subscribe(&tab2, "lobby");
        assert!(feed.take().is_empty(), "a second tab is no change");
        assert_eq!(r.sessions_on("lobby", "alice"), 2);
        r.remove(&tab1);
        assert!(feed.take().is_empty());
        assert!(r.unsubscribe(&tab2, "lobby"));
        let last = feed.take();
        assert_eq!(&*last[0].1, "alice");
        assert_eq!(r.sessions_on("lobby", "alice"), 0);
        assert!(r.presence_pairs().is_empty());
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
