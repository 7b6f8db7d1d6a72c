//! Who is connected: sessions by id, by client id and by channel, plus admission counting.
//!
//! The registry is the only shared mutable state. Its lock is never held across an `.await` or a
//! socket write: fan-out only appends to each recipient's in-memory queue.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;

use crate::metrics::Metrics;
use crate::outbox::{Enqueued, SessionHandle, SessionId};

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdmitError {
    /// `max_connections` reached.
    Full,
    /// `max_connections_per_ip` reached for this address.
    PerIp,
}

/// The indexes, under one lock so they never disagree.
#[derive(Default)]
struct Indexes {
    /// Every live session.
    by_id: HashMap<SessionId, Arc<SessionHandle>>,
    /// Sessions of each client id (tabs, devices).
    by_client: HashMap<Arc<str>, ClientSessions>,
    /// Subscribers of each channel.
    by_channel: HashMap<Arc<str>, HashMap<SessionId, Arc<SessionHandle>>>,
}

/// The sessions of one client id. Most clients have one, which then needs no allocation.
enum ClientSessions {
    /// The common case.
    One(Arc<SessionHandle>),
    /// Several tabs or devices.
    Many(Vec<Arc<SessionHandle>>),
}

impl ClientSessions {
    fn add(&mut self, h: Arc<SessionHandle>) {
        match self {
            ClientSessions::One(first) => *self = ClientSessions::Many(vec![Arc::clone(first), h]),
            ClientSessions::Many(v) => v.push(h),
        }
    }

    /// Removes `id`; true when no session is left.
    fn remove(&mut self, id: SessionId) -> bool {
        match self {
            ClientSessions::One(h) => h.id == id,
            ClientSessions::Many(v) => {
                v.retain(|s| s.id != id);
                let last = (v.len() == 1).then(|| v.remove(0));
                let empty = v.is_empty() && last.is_none();
                if let Some(h) = last {
                    *self = ClientSessions::One(h);
                }
                empty
            }
        }
    }

    fn iter(&self) -> std::slice::Iter<'_, Arc<SessionHandle>> {
        match self {
            ClientSessions::One(h) => std::slice::from_ref(h).iter(),
            ClientSessions::Many(v) => v.iter(),
        }
    }
}

/// The session registry.
pub struct Registry {
    /// Session indexes.
    idx: RwLock<Indexes>,
    /// Admitted connections, including ones still completing their upgrade.
    admitted: AtomicUsize,
    /// Admitted connections per client address, only tracked when a per-address limit is set.
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// Signalled when the last admitted connection leaves (shutdown waits on it).
    emptied: Notify,
    /// Origin of the millisecond clock used for liveness stamps.
    epoch: Instant,
    /// Random high half of session ids, so ids from different processes differ.
    id_prefix: u64,
    /// Low half of session ids.
    id_counter: AtomicU64,
    /// Frames a session may have queued before it is a slow consumer.
    pub(crate) send_queue: usize,
    /// Global connection cap.
    max_connections: usize,
    /// Per-address cap; 0 = none.
    max_per_ip: usize,
    /// Counters shared with `/metrics`.
    pub(crate) metrics: Arc<Metrics>,
}

/// A reserved connection slot; released on drop unless a session takes it over.
pub struct Admission {
    /// Registry the slot belongs to; `None` once a session owns the slot.
    reg: Option<Arc<Registry>>,
    /// Address charged for the per-address limit.
    ip: IpAddr,
}

impl Admission {
    /// Hands the slot to a session, which must call [`Registry::release`] with the same address
    /// when it ends (its guard does). Saves every session an `Arc` it already has elsewhere.
    pub fn transfer(mut self) {
        self.reg = None;
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        if let Some(reg) = &self.reg {
            reg.release(self.ip);
        }
    }
}

impl Registry {
    /// An empty registry.
    pub fn new(
        send_queue: usize,
        max_connections: usize,
        max_per_ip: usize,
        metrics: Arc<Metrics>,
    ) -> Registry {
        let mut b = [0u8; 4];
        // Without OS randomness ids are still unique within this process.
        let _ = getrandom::fill(&mut b);
        Registry {
            idx: RwLock::new(Indexes::default()),
            admitted: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
            emptied: Notify::new(),
            epoch: Instant::now(),
            id_prefix: u64::from(u32::from_le_bytes(b)) << 32,
            id_counter: AtomicU64::new(1),
            send_queue,
            max_connections,
            max_per_ip,
            metrics,
        }
    }

    /// Milliseconds since the registry was made: the coarse clock of liveness stamps.
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// A fresh session id.
    pub fn next_id(&self) -> SessionId {
        let n = self.id_counter.fetch_add(1, Ordering::Relaxed) & 0xffff_ffff;
        SessionId(self.id_prefix | n)
    }

    /// Reserves a connection slot for `ip`, or says which limit refuses it.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admission, AdmitError> {
        let prev = self.admitted.fetch_add(1, Ordering::AcqRel);
        if prev >= self.max_connections {
            self.admitted.fetch_sub(1, Ordering::AcqRel);
            return Err(AdmitError::Full);
        }
        if self.max_per_ip > 0 {
            let mut per = self.per_ip.lock();
            let n = per.entry(ip).or_insert(0);
            if *n >= self.max_per_ip {
                drop(per);
                self.admitted.fetch_sub(1, Ordering::AcqRel);
                return Err(AdmitError::PerIp);
            }
            *n += 1;
        }
        Ok(Admission {
            reg: Some(Arc::clone(self)),
            ip,
        })
    }

    /// Frees a connection slot taken by [`Registry::admit`] for `ip`.
    pub fn release(&self, ip: IpAddr) {
        if self.max_per_ip > 0 {
            let mut per = self.per_ip.lock();
            if let Some(n) = per.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    per.remove(&ip);
                }
            }
        }
        if self.admitted.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.emptied.notify_waiters();
        }
    }

    /// Admitted connections (live sessions plus upgrades in progress).
    pub fn admitted(&self) -> usize {
        self.admitted.load(Ordering::Acquire)
    }

    /// Live sessions.
    pub fn len(&self) -> usize {
        self.idx.read().by_id.len()
    }

    /// Waits until no connection is admitted.
    pub async fn wait_empty(&self) {
        loop {
            let notified = self.emptied.notified();
            if self.admitted() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Adds a session to the indexes.
    pub fn insert(&self, h: Arc<SessionHandle>) {
        let mut idx = self.idx.write();
        match idx.by_client.get_mut(&h.client_id) {
            Some(list) => list.add(Arc::clone(&h)),
            None => {
                idx.by_client.insert(
                    Arc::clone(&h.client_id),
                    ClientSessions::One(Arc::clone(&h)),
                );
            }
        }
        idx.by_id.insert(h.id, h);
    }

    /// Removes a session from every index (its channels included).
    pub fn remove(&self, h: &SessionHandle) {
        let channels = std::mem::take(&mut *h.channels.lock());
        let mut idx = self.idx.write();
        idx.by_id.remove(&h.id);
        if idx
            .by_client
            .get_mut(&h.client_id)
            .is_some_and(|list| list.remove(h.id))
        {
            idx.by_client.remove(&h.client_id);
        }
        for ch in channels {
            if let Some(subs) = idx.by_channel.get_mut(&ch) {
                subs.remove(&h.id);
                if subs.is_empty() {
                    idx.by_channel.remove(&ch);
                }
            }
        }
    }

    /// Subscribes a live session; false when it already was subscribed.
    pub fn subscribe(&self, h: &Arc<SessionHandle>, channel: &str) -> bool {
        let mut idx = self.idx.write();
        if !idx.by_id.contains_key(&h.id) {
            return false;
        }
        let key: Arc<str> = match idx.by_channel.get_key_value(channel) {
            Some((k, _)) => Arc::clone(k),
            None => Arc::from(channel),
        };
        let fresh = idx
            .by_channel
            .entry(Arc::clone(&key))
            .or_default()
            .insert(h.id, Arc::clone(h))
            .is_none();
        if fresh {
            h.channels.lock().push(key);
        }
        fresh
    }

    /// Unsubscribes; false when the session was not subscribed.
    pub fn unsubscribe(&self, h: &SessionHandle, channel: &str) -> bool {
        let mut idx = self.idx.write();
        let Some(subs) = idx.by_channel.get_mut(channel) else {
            return false;
        };
        let removed = subs.remove(&h.id).is_some();
        if subs.is_empty() {
            idx.by_channel.remove(channel);
        }
        drop(idx);
        if removed {
            h.channels.lock().retain(|c| &**c != channel);
        }
        removed
    }

    /// Looks a session up by id.
    pub fn get(&self, id: SessionId) -> Option<Arc<SessionHandle>> {
        self.idx.read().by_id.get(&id).cloned()
    }

    /// Every live session, or those of one client id.
    pub fn snapshot(&self, client_id: Option<&str>) -> Vec<Arc<SessionHandle>> {
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
    pub fn enqueue(&self, h: &SessionHandle, msg: Message) -> Enqueued {
        let result = h.enqueue(msg, self.send_queue);
        match result {
            Enqueued::Queued => {}
            Enqueued::Closing => self.metrics.dropped(),
            Enqueued::Overflow => {
                self.metrics.slow_consumer();
                log::warn!(
                    "session {} client {} peer {}: send queue full ({} frames), closing 4003",
                    h.id,
                    h.client_id,
                    h.remote(),
                    self.send_queue
                );
            }
        }
        result
    }

    /// Queues `msg` to each target; returns how many queues accepted it.
    fn fan_out<'a>(
        &self,
        targets: impl Iterator<Item = &'a Arc<SessionHandle>>,
        msg: &Message,
    ) -> usize {
        targets
            .filter(|h| self.enqueue(h, msg.clone()) == Enqueued::Queued)
            .count()
    }

    /// Queues `msg` to every session of `client_id`; `None` when the id has no session.
    pub fn send_to_client(&self, client_id: &str, msg: &Message) -> Option<usize> {
        let idx = self.idx.read();
        let list = idx.by_client.get(client_id)?;
        Some(self.fan_out(list.iter(), msg))
    }

    /// Queues `msg` to every live session.
    pub fn broadcast(&self, msg: &Message) -> usize {
        let idx = self.idx.read();
        self.fan_out(idx.by_id.values(), msg)
    }

    /// Queues `msg` to every subscriber of `channel`.
    pub fn publish(&self, channel: &str, msg: &Message) -> usize {
        let idx = self.idx.read();
        match idx.by_channel.get(channel) {
            Some(subs) => self.fan_out(subs.values(), msg),
            None => 0,
        }
    }

    /// Calls `f` on every live session while holding the read lock (no awaits inside).
    pub fn for_each(&self, mut f: impl FnMut(&Arc<SessionHandle>)) {
        let idx = self.idx.read();
        for h in idx.by_id.values() {
            f(h);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(max: usize, per_ip: usize) -> Arc<Registry> {
        Arc::new(Registry::new(4, max, per_ip, Arc::new(Metrics::default())))
    }

    fn session(r: &Registry, client: &str) -> Arc<SessionHandle> {
        let h = Arc::new(SessionHandle::new(
            r.next_id(),
            Arc::from(client),
            "127.0.0.1:9".parse().unwrap(),
            0,
            Message::text("w"),
        ));
        r.insert(Arc::clone(&h));
        h
    }

    #[test]
    fn admission_limits_and_release() {
        let r = reg(2, 1);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        let a = r.admit(ip).unwrap();
        assert_eq!(r.admit(ip).err(), Some(AdmitError::PerIp));
        let _b = r.admit(other).unwrap();
        assert_eq!(
            r.admit("127.0.0.3".parse().unwrap()).err(),
            Some(AdmitError::Full)
        );
        drop(a);
        assert!(r.admit(ip).is_ok());
    }

    #[test]
    fn indexes_follow_subscriptions_and_removal() {
        let r = reg(10, 0);
        let a1 = session(&r, "alice");
        let _a2 = session(&r, "alice");
        let b = session(&r, "bob");
        assert!(r.subscribe(&a1, "news"));
        assert!(!r.subscribe(&a1, "news"));
        assert!(r.subscribe(&b, "news"));
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
        let r = reg(10, 0);
        let h = session(&r, "slow");
        // The welcome is queued already; the bound is 4 frames.
        for _ in 0..3 {
            assert_eq!(r.enqueue(&h, Message::text("x")), Enqueued::Queued);
        }
        assert_eq!(r.enqueue(&h, Message::text("x")), Enqueued::Overflow);
        assert_eq!(r.enqueue(&h, Message::text("x")), Enqueued::Closing);
        let text = r.metrics.render(1, false);
        assert!(
            text.contains("tether_slow_consumer_closes_total 1\n"),
            "{text}"
        );
        assert!(text.contains("tether_send_queue_drops_total 1\n"), "{text}");
    }
}
