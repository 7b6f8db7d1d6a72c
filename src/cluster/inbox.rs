//! What arrives from Redis pub/sub: messages for this node's sessions, replies to this node's
//! requests and its own markers. The inbox runs inside the subscriber connection's reader, so
//! per topic it sees messages in the order Redis executed their publishes — the order the
//! append script gave their seqs — and hands them to the registry in that order.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use redis::{PushInfo, PushKind, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use super::control::{Order, OrdersCell};
use super::sign::Signer;
use super::wire::{self, Head, Kind, Msg};
use crate::clock::Clock;
use crate::id::SessionId;
use crate::net::blocks::{self, Blocks};
use crate::outbox::Enqueued;
use crate::protocol::close;
use crate::registry::Registry;
use crate::registry::listing;
use crate::stream::{Epoch, Live, LiveSink, StreamKey};

/// A reply this node owes another: the node it answers and the encoded reply.
pub type Outgoing = (String, Vec<u8>);

/// Replies waiting for the replier task; past it they are dropped (and counted), so a flood
/// of requests cannot grow memory: their origins answer `partial`.
pub const REPLY_QUEUE: usize = 4096;

/// Most answers one request gathers: more nodes than a cluster has, and a bound whatever
/// arrives.
const MAX_ANSWERS: usize = 1024;

/// Requests waiting for the nodes' answers.
#[derive(Default)]
pub struct Pending {
    waiting: Mutex<HashMap<u64, Waiting>>,
    next: AtomicU64,
}

#[derive(Default)]
struct Waiting {
    replies: usize,
    delivered: usize,
    bodies: Vec<Bytes>,
    expected: Option<usize>,
    done: Option<oneshot::Sender<()>>,
}

impl Waiting {
    fn finish_if_complete(&mut self) {
        if self.expected.is_some_and(|n| self.replies >= n)
            && let Some(done) = self.done.take()
        {
            let _ = done.send(());
        }
    }
}

/// What the nodes answered to one request.
#[derive(Debug, Default, Clone)]
pub struct Gathered {
    /// Summed counts.
    pub delivered: usize,
    /// Listings, one per node that sent one.
    pub bodies: Vec<Bytes>,
    /// False when some node did not answer within the timeout.
    pub complete: bool,
}

/// A request in flight: registered before its publish, so no reply can come too early.
pub struct Ticket {
    /// The request's number.
    pub req: u64,
    done: oneshot::Receiver<()>,
}

impl Pending {
    /// Registers a new request.
    pub fn begin(&self) -> Ticket {
        let req = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().insert(
            req,
            Waiting {
                done: Some(tx),
                ..Waiting::default()
            },
        );
        Ticket { req, done: rx }
    }

    /// Records one node's answer; unknown requests (timed out, or forged) and answers past
    /// the expected number are ignored.
    pub fn reply(&self, req: u64, delivered: u64, body: Bytes) {
        if let Some(w) = self.waiting.lock().get_mut(&req) {
            if w.replies >= w.expected.unwrap_or(MAX_ANSWERS).min(MAX_ANSWERS) {
                return;
            }
            w.replies += 1;
            w.delivered = w.delivered.saturating_add(delivered as usize);
            if !body.is_empty() {
                w.bodies.push(body);
            }
            w.finish_if_complete();
        }
    }

    /// Waits until `expected` nodes answered or `timeout` passed, and forgets the request.
    pub async fn gather(&self, ticket: Ticket, expected: usize, timeout: Duration) -> Gathered {
        if let Some(w) = self.waiting.lock().get_mut(&ticket.req) {
            w.expected = Some(expected);
            w.finish_if_complete();
        }
        let complete = tokio::time::timeout(timeout, ticket.done).await.is_ok();
        let w = self.waiting.lock().remove(&ticket.req).unwrap_or_default();
        Gathered {
            delivered: w.delivered,
            bodies: w.bodies,
            complete: complete || w.replies >= expected,
        }
    }

    /// Forgets a request whose publish failed.
    pub fn cancel(&self, ticket: Ticket) {
        self.waiting.lock().remove(&ticket.req);
    }
}

/// The subscriber connection's handler.
pub struct Inbox {
    /// This node.
    pub node: Arc<str>,
    /// Where messages for local sessions go.
    pub registry: Arc<Registry>,
    /// This node's requests.
    pub pending: Arc<Pending>,
    /// Replies owed to other nodes, sent by the replier task (bounded: [`REPLY_QUEUE`]).
    pub outgoing: mpsc::Sender<Outgoing>,
    /// Replies dropped because that queue was full.
    pub replies_dropped: AtomicU64,
    /// Checks every message's signature (with `cluster_secret`) and signs the replies.
    pub signer: Arc<Signer>,
    /// The liveness clock, for listings' `last_seen_ms_ago`.
    pub clock: Clock,
    /// Messages dropped as malformed.
    pub malformed: AtomicU64,
    /// Markers by request number, for `settle`.
    pub markers: Mutex<HashMap<u64, oneshot::Sender<()>>>,
    /// The blocks cache the handshake reads.
    pub blocks: Arc<Blocks>,
    /// How this node runs orders for its sessions (set once the node above is built).
    pub orders: OrdersCell,
}

/// The request number of a message nobody answers: a presence event a script published (see
/// `channel_scripts`); requests that gather answers are numbered from 1.
pub const NO_REPLY: u64 = 0;

impl Inbox {
    /// Handles one push from Redis. Never blocks: enqueueing is all it does.
    pub fn push(self: &Arc<Self>, info: PushInfo) {
        if !matches!(info.kind, PushKind::Message | PushKind::SMessage) {
            return;
        }
        // `message` and `smessage` pushes are [topic, payload].
        let Some(Value::BulkString(payload)) = info.data.into_iter().nth(1) else {
            self.malformed.fetch_add(1, Ordering::Relaxed);
            return;
        };
        match wire::decode(Bytes::from(payload)) {
            Ok(msg) if self.signer.check(&msg) => self.handle(msg),
            Ok(_) => {}
            Err(e) => {
                self.malformed.fetch_add(1, Ordering::Relaxed);
                log::debug!("cluster message dropped: {}", e.0);
            }
        }
    }

    fn handle(self: &Arc<Self>, msg: Msg) {
        let (count, body) = match msg.kind {
            Kind::Reply => {
                // The target names the node answered: a reply shown to another node is not
                // its answer, even if the request numbers match.
                if msg.origin != *self.node && msg.target == *self.node {
                    self.pending.reply(msg.req, msg.seq, msg.body);
                }
                return;
            }
            Kind::Marker => {
                if msg.origin != *self.node {
                    return;
                }
                if let Some(done) = self.markers.lock().remove(&msg.req) {
                    let _ = done.send(());
                }
                return;
            }
            Kind::Client | Kind::Channel => (self.deliver(&msg), Bytes::new()),
            Kind::All => match text(&msg.body) {
                Some(t) => (self.registry.broadcast(&Message::Text(t)), Bytes::new()),
                None => (0, Bytes::new()),
            },
            Kind::Session => {
                let n = match (SessionId::parse(&msg.target), text(&msg.body)) {
                    (Some(id), Some(t)) => self.registry.get(id).map_or(0, |outbox| {
                        usize::from(
                            self.registry.enqueue(&outbox, Message::Text(t)) == Enqueued::Queued,
                        )
                    }),
                    _ => 0,
                };
                (n, Bytes::new())
            }
            Kind::Kill => {
                let found = SessionId::parse(&msg.target).and_then(|id| self.registry.get(id));
                if let Some(outbox) = &found {
                    outbox.request_close(close::ADMIN);
                }
                (usize::from(found.is_some()), Bytes::new())
            }
            Kind::Control => return self.run_order(msg),
            Kind::Block => {
                let until = std::str::from_utf8(&msg.body)
                    .ok()
                    .and_then(|u| u.parse::<u64>().ok());
                let Some(until) = until else {
                    self.malformed.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                let now = blocks::now_ms();
                let held = match until {
                    0 => {
                        self.blocks.lift(&msg.target, now);
                        true
                    }
                    until => self.blocks.set(&msg.target, until, now),
                };
                (usize::from(held), Bytes::new())
            }
            Kind::List => {
                let sessions = self.registry.snapshot(Some(&msg.target));
                let list = listing::render(&sessions, &self.node, self.clock.now_ms());
                (1, Bytes::from(list))
            }
            Kind::Channels | Kind::Members => {
                match self.channels_answer(msg.kind, &msg.target, &msg.body) {
                    Some(part) => (1, Bytes::from(part)),
                    None => {
                        self.malformed.fetch_add(1, Ordering::Relaxed);
                        return self.answer(&msg, 0, Bytes::new());
                    }
                }
            }
            Kind::Page => {
                let after = match msg.target.as_str() {
                    "" => Some(None),
                    id => SessionId::parse(id).map(Some),
                };
                let limit = std::str::from_utf8(&msg.body)
                    .ok()
                    .and_then(|l| l.parse::<usize>().ok())
                    .filter(|l| (1..=listing::PAGE_MAX).contains(l));
                let (Some(after), Some(limit)) = (after, limit) else {
                    self.malformed.fetch_add(1, Ordering::Relaxed);
                    return self.answer(&msg, 0, Bytes::new());
                };
                let sessions = self.registry.snapshot(None);
                let page =
                    listing::render_page(sessions, after, limit, &self.node, self.clock.now_ms());
                (1, Bytes::from(page))
            }
        };
        self.answer(&msg, count, body);
    }

    /// An order for this node's sessions of a client id: run by the session layer in a task
    /// of its own (joining a channel waits on Redis), answered when it is done.
    fn run_order(self: &Arc<Self>, msg: Msg) {
        let order = serde_json::from_slice::<Order>(&msg.body);
        let (Ok(order), Some(orders), Ok(rt)) = (
            order,
            self.orders.get(),
            tokio::runtime::Handle::try_current(),
        ) else {
            return self.answer(&msg, 0, Bytes::new());
        };
        let run = orders(Arc::from(msg.target.as_str()), order);
        let inbox = Arc::clone(self);
        rt.spawn(async move {
            let n = run.await;
            inbox.answer(&msg, n, Bytes::new());
        });
    }

    fn deliver(&self, msg: &Msg) -> usize {
        let key = match msg.kind {
            Kind::Client => StreamKey::client(&msg.target),
            _ => StreamKey::channel(&msg.target),
        };
        match msg.epoch.as_deref().map(Epoch::parse) {
            Some(Ok(epoch)) => self.registry.deliver(
                &key,
                &Live {
                    epoch,
                    seq: msg.seq,
                    frame: msg.body.clone(),
                },
            ),
            Some(Err(_)) => {
                self.malformed.fetch_add(1, Ordering::Relaxed);
                0
            }
            None => match text(&msg.body) {
                Some(t) => {
                    let m = Message::Text(t);
                    match key {
                        StreamKey::Client(id) => self.registry.send_to_client(&id, &m).unwrap_or(0),
                        StreamKey::Channel(name) => self.registry.publish(&name, &m),
                    }
                }
                None => 0,
            },
        }
    }

    fn answer(&self, msg: &Msg, count: usize, body: Bytes) {
        if msg.req == NO_REPLY {
            return;
        }
        if msg.origin == *self.node {
            self.pending.reply(msg.req, count as u64, body);
            return;
        }
        let head = Head {
            kind: Kind::Reply,
            origin: &self.node,
            req: msg.req,
            epoch: None,
            seq: count as u64,
            target: &msg.origin,
        };
        let reply = self.signer.seal(&head, &body);
        if self.outgoing.try_send((msg.origin.clone(), reply)).is_err() {
            let n = self.replies_dropped.fetch_add(1, Ordering::Relaxed);
            if (n + 1).is_power_of_two() {
                log::warn!(
                    "cluster replies dropped: the reply queue is full ({} so far)",
                    n + 1
                );
            }
        }
    }
}

/// A frame as text: every envelope is UTF-8, and one that is not is dropped, not delivered.
fn text(body: &Bytes) -> Option<Utf8Bytes> {
    Utf8Bytes::try_from(body.clone()).ok()
}
