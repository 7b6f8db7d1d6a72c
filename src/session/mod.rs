//! One connection: the task that owns the socket, from registration to the close.
//!
//! - [`driver`]: the poll loop (reader stamps liveness, writer drains the queue in batches);
//! - [`commands`]: inbound commands, one small function each;
//! - [`close`]: the close handshake, in one place;
//! - `resume`: replay and the hand-over on `since`; `join`: joining a channel, for a client's
//!   `subscribe`, the server's and at connect, and the orders for a client id's sessions;
//!   `clustered`: client `publish` in a cluster;
//!   `welcome`: a plain TCP session's welcome, written on the edge thread; `channel_presence`:
//!   the `presence` command's answer.
//!
//! It may use shared state, `delivery` (the `Handler` callbacks), the registry, outboxes, the
//! engine, `net` and the bottom; the handshake (which opens sessions) and the server sit above.
//!
//! Whatever ends the session, the [`Guard`] removes it from the registry and releases its
//! admission slot.

mod channel_presence;
mod close;
mod clustered;
mod commands;
mod driver;
mod join;
mod resume;
mod welcome;

use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};

pub use close::CLOSE_GRACE;
pub use join::orders;
pub use welcome::open_tcp;

use crate::auth::Claims;
use crate::delivery::handler::Session;
use crate::engine::{Since, StreamKey};
use crate::net::admission::Slot;
use crate::outbox::Grants;
use crate::outbox::Outbox;
use crate::protocol::{close as codes, envelope, json_str};
use crate::state::Shared;
use driver::{Running, Writer};

/// Initial read buffer per connection; it grows only for frames larger than this.
const READ_BUFFER: usize = 128;
/// Outgoing bytes gathered before a write; also the most a batch leaves allocated afterwards.
const WRITE_BUFFER: usize = 4096;

/// tungstenite limits sized for many small, long-lived connections.
pub fn ws_config(max_message: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        // Not a memory bound: the session hands over a frame only when the socket took the
        // previous batch, so the buffer holds at most WRITE_BUFFER plus one message, and a
        // pushed message may be as large as the API allows (1 MiB) or more when embedded.
        .max_write_buffer_size(usize::MAX)
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message))
}

/// What a session runs on: one object read and written by the same poll loop (no split, no
/// lock) — [`crate::net::socket::TcpWs`] on plain TCP, tokio-tungstenite's stream otherwise.
pub trait Socket:
    futures_util::Stream<Item = Result<Message, WsError>>
    + futures_util::Sink<Message, Error = WsError>
    + Unpin
    + Send
    + 'static
{
}

impl<T> Socket for T where
    T: futures_util::Stream<Item = Result<Message, WsError>>
        + futures_util::Sink<Message, Error = WsError>
        + Unpin
        + Send
        + 'static
{
}

/// Removes the session from the registry however the task ends (even by panic).
pub struct Guard {
    /// Server state.
    pub(crate) shared: Arc<Shared>,
    /// The session's shared half.
    outbox: Arc<Outbox>,
    /// Close code sent or received; 1006 until known (also when the task panics).
    code: u16,
    /// Channel streams this session's `publish` created, bounded by `max_channels_per_session`
    /// so one session cannot evict everyone's history by naming new channels. Here, in the
    /// padding after `code`, it adds no byte to an idle session.
    streams_created: u16,
}

impl Guard {
    /// The server state the session runs in.
    pub fn shared(&self) -> &Shared {
        &self.shared
    }

    /// The session's shared half.
    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    /// Records that the session agreed to permessage-deflate with `window_bits`, before it runs.
    pub fn agreed_deflate(&self, window_bits: u8) {
        self.outbox.set_deflate(window_bits);
    }

    /// Records how the session ended; dropping the guard then unregisters it.
    fn end(&mut self, code: u16) {
        self.code = code;
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let shared = &self.shared;
        // The admission slot and the socket permit were transferred to this session. They go
        // back before the session leaves the registry, so whoever sees the count drop (a
        // health check, a waiting client) also finds the slot free.
        shared.admissions.release(self.outbox.remote().ip());
        shared.sockets.release_session();
        shared.registry.remove(&self.outbox);
        shared.router.closed(&self.outbox.client_id, self.code);
        shared.metrics.closed(self.code);
        if let Some(w) = &shared.webhooks {
            let remaining = shared.registry.sessions_of(&self.outbox.client_id);
            w.disconnected(&self.outbox, self.code, remaining);
        }
        let s = Session {
            outbox: &self.outbox,
            registry: &shared.registry,
            migrated_from: None,
        };
        shared.handler.on_disconnect(&s, self.code);
        log::debug!(
            "session {} client {} peer {}: closed ({})",
            self.outbox.id,
            self.outbox.client_id,
            self.outbox.remote(),
            self.code
        );
    }
}

/// Sets a session up before its socket runs: registers it, and with history on resumes its
/// client stream (`since`), queueing `welcome` and the missed messages. The returned guard
/// owns the registration; [`open`] runs the session on its socket.
///
/// This runs in the upgrade's task, not the session's, so the session's future captures only
/// the socket and the guard: every byte captured there is paid by every idle connection.
pub async fn prepare(
    shared: Arc<Shared>,
    identity: Identity,
    remote: SocketAddr,
    since: Option<Since>,
    slot: Slot,
) -> Guard {
    let id = shared.ids.next();
    let claimed = identity.subs;
    let client_id = identity
        .client_id
        .unwrap_or_else(|| Arc::from(id.to_string()));
    let greet = shared.handler.welcome();
    let history = shared.config.history();
    let first = (greet && !history)
        .then(|| Message::Text(welcome(&shared, &id.to_string(), &client_id, None)));
    let outbox = Arc::new(Outbox::new(
        id,
        client_id,
        remote,
        shared.clock.now_ms(),
        first,
    ));
    outbox.set_token(identity.expires_at, identity.grants);
    slot.transfer();
    // The guard exists before anything can fail or the application's callback runs: if it
    // panics, the session is unregistered and its slot released, leaving no ghost.
    let guard = Guard {
        shared,
        outbox,
        code: codes::ABNORMAL,
        streams_created: 0,
    };
    let (shared, outbox) = (&guard.shared, &guard.outbox);
    let migrated_from;
    if history {
        let key = StreamKey::Client(Arc::clone(&outbox.client_id));
        let session_id = id.to_string();
        // In a cluster the hand-over writes the presence entry before it reads the stream.
        migrated_from = resume::hand_over(
            shared,
            outbox,
            key,
            since,
            || shared.registry.insert_client(outbox),
            |r| greet.then(|| welcome(shared, &session_id, &outbox.client_id, Some(r))),
        )
        .await;
        shared.registry.insert_id(Arc::clone(outbox));
    } else {
        shared.registry.insert(Arc::clone(outbox));
        // In a cluster, the presence entry before `welcome`: a push sent once it arrived
        // reaches this session from any node.
        migrated_from = shared.router.opened(&outbox.client_id).await;
    }
    shared.metrics.accepted();
    if let Some(w) = &shared.webhooks {
        w.connected(outbox, migrated_from.as_deref());
    }
    log::debug!(
        "session {id} client {} peer {remote}: open",
        outbox.client_id
    );
    if shared.is_draining() {
        // Upgraded while shutdown began: shutdown already fanned out, so close it here.
        outbox.request_close(shared.shutdown_close_code());
    }
    shared.handler.on_connect(&Session {
        outbox,
        registry: &shared.registry,
        migrated_from: migrated_from.as_deref(),
    });
    // After `welcome` is queued and the session is registered: server subscriptions and the
    // token's `subs` join now, as the server.
    join::at_connect(shared, outbox, claimed).await;
    guard
}

/// Runs a prepared session on its upgraded socket to its end.
pub fn open<W: Socket>(ws: W, guard: Guard) -> impl Future<Output = ()> + Send {
    run(ws, guard)
}

/// The session's life as a future. An `async move` block, not an `async fn`: rustc stores an
/// async fn's arguments twice (as captures and as body locals), which would cost every idle
/// session another copy of its socket.
#[allow(clippy::manual_async_fn)] // deliberate, see above
fn run<W: Socket>(ws: W, guard: Guard) -> impl Future<Output = ()> + Send {
    let mut running = Running {
        ws,
        guard,
        writer: Writer::default(),
    };
    async move {
        let ending = poll_fn(|cx| running.poll(cx)).await;
        // Boxed: only closing sessions pay for the close phase's timers and state.
        let code = Box::pin(close::finish(&mut running, ending)).await;
        let unsent = running.writer.unsent() + running.guard.outbox.take_unsent();
        if unsent > 0 {
            running.guard.shared.metrics.dropped_n(unsent as u64);
        }
        running.guard.end(code);
    }
}

/// The first frame of every session; with history on it carries the client stream's position
/// and, after a `since`, the resume's outcome.
fn welcome(
    shared: &Shared,
    session_id: &str,
    client_id: &str,
    resumed: Option<&resume::Resumed>,
) -> Utf8Bytes {
    let data = format!(
        "{{\"session_id\":{},\"client_id\":{},\"heartbeat_interval_ms\":{},\"heartbeat_timeout_ms\":{}{}}}",
        json_str(session_id),
        json_str(client_id),
        shared.config.heartbeat_interval.as_millis(),
        shared.config.heartbeat_timeout.as_millis(),
        resumed
            .map(resume::Resumed::json_fields)
            .unwrap_or_default()
    );
    envelope("welcome", None, None, Some(&data))
}

/// A connecting client, as far as the handshake established it.
pub struct Identity {
    /// The client id; `None` when none is required and none was given (the session id is used).
    pub client_id: Option<Arc<str>>,
    /// Token expiry (Unix seconds), with auth on and an `exp` claim.
    pub expires_at: Option<u64>,
    /// What the token allows; `None` with auth off.
    pub grants: Option<Arc<Grants>>,
    /// The token's `subs` claim: channels joined at connect, as the server (docs/protocol.md §14).
    pub subs: Vec<String>,
}

impl Identity {
    /// The identity a verified token gives: its `sub`, its expiry and its channel grants.
    pub fn from_claims(claims: Claims) -> Identity {
        // Tokens without a `channels` claim all grant the same nothing: one shared value, so
        // such sessions pay no allocation for it.
        static NO_CHANNELS: std::sync::LazyLock<Arc<Grants>> =
            std::sync::LazyLock::new(|| Arc::new(Grants { channels: None }));
        let grants = match claims.channels {
            None => Arc::clone(&NO_CHANNELS),
            channels => Arc::new(Grants { channels }),
        };
        Identity {
            client_id: Some(Arc::from(claims.sub)),
            expires_at: claims.exp,
            grants: Some(grants),
            subs: claims.subs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every idle connection pays for its session future and handle: keep them small.
    #[tokio::test]
    async fn idle_session_footprint_stays_small() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = tokio::net::TcpStream::connect(l.local_addr().unwrap())
            .await
            .unwrap();
        let ws = crate::net::socket::TcpWs::new(c, None, ws_config(65536));
        let shared = Arc::clone(&crate::Server::new(crate::Config::default()).unwrap().shared);
        let slot = shared
            .admissions
            .admit("127.0.0.1".parse().unwrap())
            .unwrap();
        let anyone = Identity {
            client_id: None,
            expires_at: None,
            grants: None,
            subs: Vec::new(),
        };
        let guard = prepare(
            Arc::clone(&shared),
            anyone,
            "127.0.0.1:1".parse().unwrap(),
            None,
            slot,
        )
        .await;
        let f = Box::pin(open(ws, guard));
        let future = std::mem::size_of_val(&*f);
        // The WebSocket object itself (about 300 bytes) lives inside the future.
        // 400 keeps tokio's task cell (128-byte aligned on x86_64) at 512 bytes.
        assert!(future <= 400, "session future grew to {future} bytes");
        let handle = std::mem::size_of::<Outbox>();
        assert!(handle <= 224, "SessionHandle grew to {handle} bytes");
    }
}
