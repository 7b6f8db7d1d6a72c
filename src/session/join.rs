//! Joining a channel, the one way for every caller: a client's `subscribe`, a server-side
//! subscribe (API or embedding, `"by":"server"`, docs/protocol.md §14), and the channels a
//! session joins at connect (remembered server subscriptions, the token's `subs` claim). With
//! history on it is the channel stream's hand-over (`resume`), so `subscribed` carries the
//! stream's position and the missed messages follow it before any live one. Also the orders
//! other nodes (or this one) send for a client id's sessions: join, leave, close.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::FutureExt;
use futures_util::future::join_all;
use tokio_tungstenite::tungstenite::Message;

use crate::cluster::{Order, Orders};
use crate::engine::{Since, StreamKey};
use crate::id::SessionId;
use crate::outbox::Outbox;
use crate::protocol::{close, envelope, err, error_envelope, json_str};
use crate::registry::Subscribed;
use crate::state::Shared;

/// Who asks a session to join.
#[derive(Clone, Copy)]
pub enum By<'a> {
    /// The client itself, with its correlation id (raw JSON) to echo.
    Client(Option<&'a str>),
    /// The server: no grant needed, and the answer says `"by":"server"`.
    Server,
}

impl By<'_> {
    fn id(&self) -> Option<&str> {
        match self {
            By::Client(id) => *id,
            By::Server => None,
        }
    }
    fn field(&self) -> &'static str {
        match self {
            By::Client(_) => "",
            By::Server => ",\"by\":\"server\"",
        }
    }
}

/// Whether the session may take one more channel (or already has this one).
pub fn has_room(outbox: &Outbox, channel: &str, max: usize) -> bool {
    let subs = outbox.subs.lock();
    subs.list.len() < max || subs.list.iter().any(|c| &**c == channel)
}

/// The `too_many_channels` error; `original` is the client frame that asked, if one did.
pub fn too_many(shared: &Shared, outbox: &Outbox, original: Option<&str>, id: Option<&str>) {
    let e = error_envelope(
        err::TOO_MANY_CHANNELS,
        &format!(
            "a session may subscribe to at most {} channels (max_channels_per_session)",
            shared.config.max_channels_per_session
        ),
        original,
        id,
    );
    shared.registry.enqueue(outbox, Message::Text(e));
}

/// Joins `channel` and queues `subscribed` (then, with history and `since`, what was missed);
/// true when the session is in the channel afterwards. The caller checked [`has_room`]; a
/// session that filled up meanwhile gets `too_many_channels`.
pub async fn join(
    shared: &Arc<Shared>,
    outbox: &Arc<Outbox>,
    channel: &str,
    since: Option<Since>,
    by: By<'_>,
) -> bool {
    if !shared.config.history() {
        return match shared.registry.subscribe(outbox, channel) {
            Subscribed::New | Subscribed::Already => {
                // In a cluster the node listens on the channel's topic before the client hears
                // `subscribed`, so a publish sent once it did reaches it.
                shared.router.subscribed(channel).await;
                let body = format!("{{\"channel\":{}{}}}", json_str(channel), by.field());
                let ack = envelope("subscribed", None, by.id(), Some(&body));
                shared.registry.enqueue(outbox, Message::Text(ack));
                true
            }
            Subscribed::TooMany => {
                too_many(shared, outbox, None, by.id());
                false
            }
            // The session is closing; nobody would read an answer.
            Subscribed::Gone => false,
        };
    }
    let joined = AtomicBool::new(false);
    super::resume::hand_over(
        shared,
        outbox,
        StreamKey::channel(channel),
        since,
        || match shared.registry.subscribe(outbox, channel) {
            Subscribed::New | Subscribed::Already => joined.store(true, Ordering::Relaxed),
            Subscribed::TooMany => too_many(shared, outbox, None, by.id()),
            Subscribed::Gone => {}
        },
        |resumed| {
            if !joined.load(Ordering::Relaxed) {
                return None;
            }
            let body = format!(
                "{{\"channel\":{}{}{}}}",
                json_str(channel),
                by.field(),
                resumed.json_fields()
            );
            Some(envelope("subscribed", None, by.id(), Some(&body)))
        },
    )
    .await;
    joined.load(Ordering::Relaxed) && outbox.channel_list().iter().any(|c| &**c == channel)
}

/// A client's `subscribe` (room and grant checked) where nothing waits on other nodes: at once
/// (commands run inside the session's poll and must never wait). False when it could not run
/// at once (an engine that would have to wait). In a cluster `subscribe` goes through
/// [`defer`] instead.
pub fn client(
    shared: &Arc<Shared>,
    outbox: &Arc<Outbox>,
    channel: &str,
    since: Option<Since>,
    id: Option<&str>,
) -> bool {
    join(shared, outbox, channel, since, By::Client(id))
        .now_or_never()
        .is_some()
}

/// In a cluster a join waits on Redis while its session goes on reading, so a client's
/// `unsubscribe` (or `refresh`, which may take channels away) right behind its `subscribe`
/// could take effect first and leave the session in a channel it left. So there a `subscribe`
/// frame, and any channel command (`kind`: `subscribe`, `unsubscribe`, `refresh`, `presence`)
/// that arrives while one is in flight, is queued per session (`Shared::channel_queues`) and
/// handled by one task in arrival order, each as if it arrived when its turn comes. The queue
/// exists only while that task runs, so an idle session costs nothing. False when the caller
/// handles the frame at once; `id` is the frame's correlation id, for a refusal.
pub fn defer(
    shared: &Arc<Shared>,
    outbox: &Arc<Outbox>,
    kind: &str,
    text: &str,
    id: Option<&str>,
) -> bool {
    if !shared.router.waits_on_nodes() {
        return false;
    }
    {
        let mut queues = shared.channel_queues.lock();
        if let Some(q) = queues.get_mut(&outbox.id) {
            if q.len() >= QUEUED_MAX {
                drop(queues);
                let e = error_envelope(
                    err::RATE_LIMITED,
                    &format!(
                        "more than {QUEUED_MAX} channel commands wait for this session's join; \
                         this one was dropped"
                    ),
                    Some(text),
                    id,
                );
                shared.registry.enqueue(outbox, Message::Text(e));
                return true;
            }
            q.push_back(Box::from(text));
            return true;
        }
        if kind != "subscribe" {
            return false;
        }
        queues.insert(outbox.id, VecDeque::new());
    }
    let (shared, outbox) = (Arc::clone(shared), Arc::clone(outbox));
    let first: Box<str> = Box::from(text);
    tokio::spawn(async move {
        // A panic in one command must not leave the session's later ones queued forever.
        let _unwind = Unwind(&shared, outbox.id);
        let mut next = Some(first);
        while let Some(text) = next {
            if let Some((channel, since, id)) = super::commands::deferred(&text, &outbox, &shared) {
                join(&shared, &outbox, &channel, since, By::Client(id.as_deref())).await;
            }
            let mut queues = shared.channel_queues.lock();
            next = queues.get_mut(&outbox.id).and_then(VecDeque::pop_front);
            if next.is_none() {
                queues.remove(&outbox.id);
            }
        }
    });
    true
}

/// Channel commands that may wait behind a session's join (a frame is at most
/// `max_message_size`): a client that floods them while Redis is slow gets `rate_limited`.
const QUEUED_MAX: usize = 64;

/// Removes a session's queue when its task panics (only then: once the task ends normally a
/// new task may own a new queue under the same id).
struct Unwind<'a>(&'a Shared, SessionId);

impl Drop for Unwind<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.channel_queues.lock().remove(&self.1);
        }
    }
}

/// A join by the server: the room is checked here (`too_many_channels` for a full session).
pub async fn server(
    shared: &Arc<Shared>,
    outbox: &Arc<Outbox>,
    channel: &str,
    since: Option<Since>,
) -> bool {
    if !has_room(outbox, channel, shared.config.max_channels_per_session) {
        too_many(shared, outbox, None, None);
        return false;
    }
    join(shared, outbox, channel, since, By::Server).await
}

/// The channels a new session joins as the server: those remembered for its client id and
/// its token's `subs`. Read once the session is registered and before its `welcome` can
/// reach the client, so an API subscribe either is in what is read here or finds the session
/// registered (never neither; both only for a call that raced the connect, which then answers
/// `subscribed` twice), and one made after the client saw `welcome` only finds the session.
/// Joined in a task, right after the `welcome`.
pub async fn at_connect(shared: &Arc<Shared>, outbox: &Arc<Outbox>, claimed: Vec<String>) {
    if claimed.is_empty() && !shared.router.may_remember(&outbox.client_id) {
        return;
    }
    let mut channels = shared.router.remembered(&outbox.client_id).await;
    for c in claimed {
        if !channels.contains(&c) {
            channels.push(c);
        }
    }
    if channels.is_empty() {
        return;
    }
    let (shared, outbox) = (Arc::clone(shared), Arc::clone(outbox));
    tokio::spawn(async move {
        for channel in channels {
            server(&shared, &outbox, &channel, None).await;
        }
    });
}

/// After a `refresh` left `lost` channels its new token does not grant: the server's own among
/// them (remembered for the client id, or in the new token's `subs`) are joined again, as the
/// server, since server subscriptions need no grant.
pub fn rejoin(
    shared: &Arc<Shared>,
    outbox: &Arc<Outbox>,
    lost: Vec<Arc<str>>,
    claimed: Vec<String>,
) {
    if lost.is_empty() || (claimed.is_empty() && !shared.router.may_remember(&outbox.client_id)) {
        return;
    }
    let (shared, outbox) = (Arc::clone(shared), Arc::clone(outbox));
    tokio::spawn(async move {
        let mut keep = shared.router.remembered(&outbox.client_id).await;
        keep.extend(claimed);
        for channel in lost {
            if keep.iter().any(|k| **k == *channel) {
                server(&shared, &outbox, &channel, None).await;
            }
        }
    });
}

/// How this node runs orders on its sessions, for the router (and, in a cluster, the inbox).
/// It holds the shared state weakly: the state holds the router that holds this.
pub fn orders(shared: &Arc<Shared>) -> Orders {
    let weak = Arc::downgrade(shared);
    Arc::new(move |client_id, order| {
        let weak = weak.clone();
        Box::pin(async move {
            match weak.upgrade() {
                Some(shared) => run(&shared, &client_id, order).await,
                None => 0,
            }
        })
    })
}

/// Runs an order on this node's sessions of `client_id`; how many it reached.
async fn run(shared: &Arc<Shared>, client_id: &str, order: Order) -> usize {
    let sessions = shared.registry.snapshot(Some(client_id));
    match order {
        Order::Subscribe { channel, since } => {
            if crate::id::valid_channel(&channel).is_err() {
                return 0;
            }
            let since = since
                .filter(|_| shared.config.history())
                .map(|s| Since::parse(&s));
            let joins = sessions
                .iter()
                .map(|o| server(shared, o, &channel, since.clone()));
            join_all(joins).await.into_iter().filter(|j| *j).count()
        }
        Order::Unsubscribe { channel } => {
            let body = format!("{{\"channel\":{},\"by\":\"server\"}}", json_str(&channel));
            let mut n = 0;
            for o in &sessions {
                if shared.registry.unsubscribe(o, &channel) {
                    let m = Message::Text(envelope("unsubscribed", None, None, Some(&body)));
                    shared.registry.enqueue(o, m);
                    n += 1;
                }
            }
            n
        }
        // A session already closing (an earlier kick, a drain) is not counted again.
        Order::Kick => sessions
            .iter()
            .filter(|o| o.request_close(close::ADMIN))
            .count(),
    }
}
