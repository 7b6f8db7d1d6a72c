//! One lane's bounded queue of events (an id and a body), waiting for the lane's task.
//!
//! The bodies sit back to back in one ring of bytes, not one allocation each in a channel: a
//! connect burst queues two events per client while the receiver catches up, and tokio's
//! channel keeps the blocks of its peak for good, while bodies allocated one by one between the
//! sessions' own allocations leave half-used pages behind. Measured with webhooks on, after a
//! burst of 19,000 connects had drained: webhooks cost ~130 B per connection with the channel
//! and ~67 B with the ring (the rest is the online set). The ring is one allocation, given back
//! once the lane is empty. Each event's id rides in the ring just before its body: 16 bytes,
//! no allocation of its own.

use std::collections::VecDeque;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::Notify;

/// An emptied ring bigger than this is freed rather than kept for the next burst.
const KEEP_BYTES: usize = 64 * 1024;
/// Bytes of an event id in the ring.
const ID_BYTES: usize = 16;

/// A bounded FIFO of event bodies with one consumer.
pub struct Lane {
    queue: Mutex<Queue>,
    ready: Notify,
}

struct Queue {
    /// The bodies, oldest first, back to back.
    bytes: VecDeque<u8>,
    /// Each body's length, in the same order.
    lens: VecDeque<usize>,
    /// Most bodies held.
    bound: usize,
}

impl Lane {
    /// An empty lane that holds at most `bound` events.
    pub fn new(bound: usize) -> Lane {
        Lane {
            queue: Mutex::new(Queue {
                bytes: VecDeque::new(),
                lens: VecDeque::new(),
                bound,
            }),
            ready: Notify::new(),
        }
    }

    /// Queues the event `id` with its `body`; false (and nothing queued) when the lane is full.
    pub fn try_push(&self, id: u128, body: &[u8]) -> bool {
        {
            let mut q = self.queue.lock();
            if q.lens.len() >= q.bound {
                return false;
            }
            q.bytes.extend(id.to_le_bytes());
            q.bytes.extend(body);
            q.lens.push_back(body.len());
        }
        // One consumer: a permit stored while it is busy wakes its next wait at once.
        self.ready.notify_one();
        true
    }

    /// The oldest event's id and body, waiting for one if the lane is empty.
    pub async fn pop(&self) -> (u128, Bytes) {
        loop {
            if let Some(body) = self.try_pop() {
                return body;
            }
            self.ready.notified().await;
        }
    }

    fn try_pop(&self) -> Option<(u128, Bytes)> {
        let mut q = self.queue.lock();
        let len = q.lens.pop_front()?;
        let mut id = [0u8; ID_BYTES];
        for (to, from) in id.iter_mut().zip(q.bytes.drain(..ID_BYTES)) {
            *to = from;
        }
        let (front, back) = q.bytes.as_slices();
        let split = len.min(front.len());
        let mut body = Vec::with_capacity(len);
        body.extend_from_slice(&front[..split]);
        body.extend_from_slice(&back[..len - split]);
        q.bytes.drain(..len);
        if q.lens.is_empty() && q.bytes.capacity() > KEEP_BYTES {
            q.bytes = VecDeque::new();
            q.lens = VecDeque::new();
        }
        Some((u128::from_le_bytes(id), Bytes::from(body)))
    }

    /// Bytes the ring holds allocated (for tests).
    #[cfg(test)]
    fn allocated(&self) -> usize {
        self.queue.lock().bytes.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The next body, checking its id is the one [`push`] gave it.
    fn pop_now(lane: &Lane) -> Option<Bytes> {
        let (id, body) = lane.try_pop()?;
        assert_eq!(id, id_of(&body), "the id stays with its body");
        Some(body)
    }

    /// An id that depends on the body, so a mix-up shows.
    fn id_of(body: &[u8]) -> u128 {
        u128::from(body.len() as u64) << 64 | u128::from(body.first().copied().unwrap_or(0))
    }

    fn push(lane: &Lane, body: &[u8]) -> bool {
        lane.try_push(id_of(body), body)
    }

    #[test]
    fn bodies_come_out_whole_and_in_order_up_to_the_bound() {
        let lane = Lane::new(3);
        assert!(push(&lane, b"one"));
        assert!(push(&lane, b""));
        assert!(push(&lane, b"three"));
        assert!(!push(&lane, b"four"), "the bound is in events");
        assert_eq!(pop_now(&lane).as_deref(), Some(&b"one"[..]));
        assert!(push(&lane, b"four"), "a pop makes room");
        assert_eq!(pop_now(&lane).as_deref(), Some(&b""[..]));
        assert_eq!(pop_now(&lane).as_deref(), Some(&b"three"[..]));
        assert_eq!(pop_now(&lane).as_deref(), Some(&b"four"[..]));
        assert_eq!(pop_now(&lane), None);
    }

    #[test]
    fn bodies_stay_whole_where_the_ring_wraps() {
        let lane = Lane::new(8);
        let body = |i: usize| vec![(i % 251) as u8; i % 37];
        let (mut pushed, mut popped) = (0, 0);
        for round in 0..500 {
            for _ in 0..(round % 3 + 1) {
                if push(&lane, &body(pushed)) {
                    pushed += 1;
                }
            }
            for _ in 0..(round % 2 + 1) {
                if let Some(got) = pop_now(&lane) {
                    assert_eq!(&got[..], &body(popped)[..], "body {popped}");
                    popped += 1;
                }
            }
        }
        assert!(popped > 400, "{popped}");
    }

    #[test]
    fn a_drained_burst_gives_its_memory_back() {
        let lane = Lane::new(100_000);
        let body = [7u8; 300];
        for _ in 0..10_000 {
            assert!(push(&lane, &body));
        }
        assert!(lane.allocated() >= 3_000_000);
        for _ in 0..9_999 {
            assert_eq!(pop_now(&lane).map(|b| b.len()), Some(300));
        }
        assert!(lane.allocated() >= 300, "not freed while one is left");
        assert_eq!(pop_now(&lane).map(|b| b.len()), Some(300));
        assert_eq!(lane.allocated(), 0);
    }

    #[tokio::test]
    async fn pop_waits_for_a_push() {
        let lane = std::sync::Arc::new(Lane::new(4));
        let waiter = tokio::spawn({
            let lane = lane.clone();
            async move { lane.pop().await }
        });
        tokio::task::yield_now().await;
        assert!(lane.try_push(7, b"late"));
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), waiter).await;
        let got = got.ok().and_then(Result::ok);
        assert_eq!(got, Some((7, Bytes::from_static(b"late"))));
    }
}
