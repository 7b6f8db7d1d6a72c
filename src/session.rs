//! One connection: the task that owns the socket, its reader and writer halves, and the close.
//!
//! Reader and writer run concurrently inside one task (no second task, no per-connection timer):
//! the reader stamps liveness on every frame and answers client messages through the session's own
//! queue; the writer drains that queue in batches with one flush per batch. Whatever ends the
//! session, the [`Guard`] removes it from the registry and releases its admission slot.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt, ready};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::task::{Context, Poll};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::handler::{Handled, Session};
use crate::metrics::Metrics;
use crate::outbox::{CloseRequest, SessionHandle};
use crate::protocol::{self, close, envelope, err, error_envelope, json_str};
use crate::registry::Admission;
use crate::server::State;

/// How long a closing session waits for the peer's close reply or for a stuck write.
pub const CLOSE_GRACE: Duration = Duration::from_secs(2);
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

/// Why the session's main loop ended.
enum End {
    /// Someone asked for a close (eviction, admin, slow consumer, shutdown).
    Requested(CloseRequest),
    /// The peer sent a close frame with this code (1005 when it had none).
    PeerClosed(u16),
    /// A frame or message exceeded `max_message_size`.
    TooBig,
    /// The peer broke the protocol (1002) or sent invalid UTF-8 text (1007).
    Violation(u16),
    /// The connection died without a close.
    Lost,
}

/// Frames read in one poll before the task yields, so one chatty peer cannot hog a worker.
const READS_PER_POLL: usize = 32;

/// Writer state kept between polls: a few words inside the session's future.
#[derive(Default)]
struct Out {
    /// Frames taken from the outbox and not yet handed to the sink.
    pending: VecDeque<Message>,
    /// A Ping still to hand to the sink.
    ping: bool,
    /// Messages handed to the sink since the last flush (counted once flushed).
    unflushed: u32,
    /// Anything (message or ping) handed to the sink since the last flush.
    dirty: bool,
}

/// What a session runs on: one object read and written by the same poll loop (no split, no
/// lock) — [`crate::socket::TcpWs`] on plain TCP, tokio-tungstenite's stream otherwise.
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
struct Guard {
    /// Server state.
    st: Arc<State>,
    /// The session.
    handle: Arc<SessionHandle>,
    /// Close code sent or received; 0 until known.
    code: u16,
}

impl Guard {
    /// Records how the session ended; dropping the guard then unregisters it.
    fn end(mut self, code: u16) {
        self.code = code;
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.st.registry.remove(&self.handle);
        // The admission slot was transferred to this session when it started.
        self.st.registry.release(self.handle.remote().ip());
        self.st.metrics.closed(self.code);
        let s = Session {
            handle: &self.handle,
            registry: &self.st.registry,
        };
        self.st.handler.on_disconnect(&s, self.code);
        log::debug!(
            "session {} client {} peer {}: closed ({})",
            self.handle.id,
            self.handle.client_id,
            self.handle.remote(),
            self.code
        );
    }
}

/// Registers a session for the upgraded socket and returns the future that runs it to its end.
///
/// Setup is synchronous so the returned future captures only the socket halves and the guard:
/// every byte captured here is paid by every idle connection for its whole life.
pub fn run<W: Socket>(
    ws: W,
    st: Arc<State>,
    client_id: Option<Arc<str>>,
    remote: SocketAddr,
    admission: Admission,
) -> impl Future<Output = ()> + Send {
    let id = st.registry.next_id();
    let client_id = client_id.unwrap_or_else(|| Arc::from(id.to_string()));
    let welcome = welcome(&st, &id.to_string(), &client_id);
    let handle = Arc::new(SessionHandle::new(
        id,
        client_id,
        remote,
        st.registry.now_ms(),
        Message::Text(welcome),
    ));
    st.registry.insert(Arc::clone(&handle));
    st.metrics.accepted();
    log::debug!(
        "session {id} client {} peer {remote}: open",
        handle.client_id
    );
    if st.is_draining() {
        // Upgraded while shutdown began: shutdown already fanned out, so close it here.
        handle.request_close(st.shutdown_close_code());
    }
    st.handler.on_connect(&Session {
        handle: &handle,
        registry: &st.registry,
    });
    admission.transfer();
    let guard = Guard {
        st,
        handle,
        code: 0,
    };
    drive(ws, guard)
}

/// The session's life as a future. An `async move` block, not an `async fn`: rustc stores an
/// async fn's arguments twice (as captures and as body locals), which would cost every idle
/// session another copy of its socket.
#[allow(clippy::manual_async_fn)] // deliberate, see above
fn drive<W: Socket>(ws: W, guard: Guard) -> impl Future<Output = ()> + Send {
    let mut live = Live {
        ws,
        guard,
        out: Out::default(),
    };
    async move {
        let end = poll_fn(|cx| live.poll(cx)).await;
        // Boxed: only closing sessions pay for the close phase's timers and state.
        let code = Box::pin(finish(&mut live.ws, end)).await;
        live.guard.end(code);
    }
}

/// Everything a live session's future holds, behind one pointer in its poll closure.
struct Live<W> {
    /// The WebSocket.
    ws: W,
    /// Unregisters the session when it ends.
    guard: Guard,
    /// Writer state between polls.
    out: Out,
}

impl<W: Socket> Live<W> {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<End> {
        let (h, st) = (&self.guard.handle, &*self.guard.st);
        poll_session(cx, &mut self.ws, h, st, &mut self.out)
    }
}

/// Ends the WebSocket as `end` requires, bounded by [`CLOSE_GRACE`]; returns the close code.
async fn finish<W: Socket>(ws: &mut W, end: End) -> u16 {
    match end {
        End::Requested(c) => {
            let handshake = async {
                if send_frame(ws, c.code, c.reason()).await {
                    // Wait for the peer's answer (tungstenite ends the stream after it).
                    while let Some(Ok(_)) = ws.next().await {}
                }
            };
            let _ = tokio::time::timeout(CLOSE_GRACE, handshake).await;
            c.code
        }
        End::PeerClosed(code) => {
            // tungstenite queued the close reply; flush it, but never wait on a dead peer for long.
            let _ = tokio::time::timeout(CLOSE_GRACE, SinkExt::close(ws)).await;
            code
        }
        End::TooBig => {
            let _ = tokio::time::timeout(
                CLOSE_GRACE,
                send_frame(ws, close::TOO_BIG, "message too big"),
            )
            .await;
            close::TOO_BIG
        }
        End::Violation(code) => {
            let _ = tokio::time::timeout(CLOSE_GRACE, send_frame(ws, code, "protocol error")).await;
            code
        }
        End::Lost => 0,
    }
}

/// One poll of the session: read what arrived, then write what is queued. Returns when it ends.
fn poll_session<W: Socket>(
    cx: &mut Context<'_>,
    ws: &mut W,
    h: &Arc<SessionHandle>,
    st: &State,
    out: &mut Out,
) -> Poll<End> {
    h.register(cx.waker());
    if let Some(c) = h.close_requested() {
        return Poll::Ready(End::Requested(c));
    }
    for i in 0..READS_PER_POLL {
        match ws.poll_next_unpin(cx) {
            Poll::Pending => break,
            Poll::Ready(None) => return Poll::Ready(End::Lost),
            Poll::Ready(Some(Err(e))) => {
                return Poll::Ready(match e {
                    WsError::Capacity(_) => End::TooBig,
                    WsError::Protocol(_) => End::Violation(1002),
                    WsError::Utf8(_) => End::Violation(1007),
                    _ => End::Lost,
                });
            }
            Poll::Ready(Some(Ok(msg))) => {
                if let Some(end) = on_frame(msg, h, st) {
                    return Poll::Ready(end);
                }
            }
        }
        if i + 1 == READS_PER_POLL {
            cx.waker().wake_by_ref();
        }
    }
    // Handling frames may have queued replies or asked for a close.
    if let Some(c) = h.close_requested() {
        return Poll::Ready(End::Requested(c));
    }
    match poll_write(cx, ws, h, &st.metrics, out) {
        Poll::Ready(Err(_)) => Poll::Ready(End::Lost),
        _ => Poll::Pending,
    }
}

/// Hands queued frames to the socket and flushes once the outbox is empty: one flush per batch.
fn poll_write<W: Socket>(
    cx: &mut Context<'_>,
    ws: &mut W,
    h: &SessionHandle,
    metrics: &Metrics,
    out: &mut Out,
) -> Poll<Result<(), WsError>> {
    loop {
        if out.pending.is_empty() && !out.ping {
            let batch = h.take_batch();
            if batch.frames.is_empty() && !batch.ping {
                // Idle sessions keep no queue allocation.
                out.pending = VecDeque::new();
                if out.dirty {
                    ready!(ws.poll_flush_unpin(cx))?;
                    metrics.add_sent(u64::from(out.unflushed));
                    out.unflushed = 0;
                    out.dirty = false;
                }
                return Poll::Ready(Ok(()));
            }
            out.pending = batch.frames;
            out.ping = batch.ping;
        }
        ready!(ws.poll_ready_unpin(cx))?;
        if let Some(m) = out.pending.pop_front() {
            ws.start_send_unpin(m)?;
            out.unflushed += 1;
        } else {
            ws.start_send_unpin(Message::Ping(Bytes::new()))?;
            out.ping = false;
        }
        out.dirty = true;
    }
}

/// Handles one frame from the peer; `Some` when it ends the session.
fn on_frame(msg: Message, h: &Arc<SessionHandle>, st: &State) -> Option<End> {
    h.touch(st.registry.now_ms());
    st.metrics.received();
    match msg {
        Message::Text(t) => on_text(t.as_str(), h, st),
        Message::Binary(b) => on_binary(&b, h, st),
        Message::Close(frame) => {
            return Some(End::PeerClosed(frame.map_or(1005, |f| u16::from(f.code))));
        }
        // Pings are answered by tungstenite; pings and pongs only count as liveness.
        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
    }
    None
}

/// The first frame of every session.
fn welcome(
    st: &State,
    session_id: &str,
    client_id: &str,
) -> tokio_tungstenite::tungstenite::Utf8Bytes {
    let data = format!(
        "{{\"session_id\":{},\"client_id\":{},\"heartbeat_interval_ms\":{},\"heartbeat_timeout_ms\":{}}}",
        json_str(session_id),
        json_str(client_id),
        st.config.heartbeat_interval.as_millis(),
        st.config.heartbeat_timeout.as_millis()
    );
    envelope("welcome", None, None, Some(&data))
}

/// Sends a close frame and flushes it; false when the socket is gone. Not bounded: callers are.
async fn send_frame<W: Socket>(ws: &mut W, code: u16, reason: &'static str) -> bool {
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    };
    ws.send(Message::Close(Some(frame))).await.is_ok()
}

fn reply(h: &SessionHandle, st: &State, msg: tokio_tungstenite::tungstenite::Utf8Bytes) {
    st.registry.enqueue(h, Message::Text(msg));
}

fn on_binary(data: &Bytes, h: &Arc<SessionHandle>, st: &State) {
    let s = Session {
        handle: h,
        registry: &st.registry,
    };
    if st.handler.on_binary(&s, data) == Handled::No {
        let e = error_envelope(
            err::BINARY_NOT_SUPPORTED,
            "binary frames are not supported; send JSON text frames",
            None,
            None,
        );
        reply(h, st, e);
    }
}

fn on_text(text: &str, h: &Arc<SessionHandle>, st: &State) {
    let s = Session {
        handle: h,
        registry: &st.registry,
    };
    if st.handler.on_text(&s, text) == Handled::Yes {
        return;
    }
    let env = match protocol::parse_inbound(text) {
        Ok(e) => e,
        Err(bad) => {
            return reply(
                h,
                st,
                error_envelope(bad.code, &bad.message, Some(text), None),
            );
        }
    };
    let id = env.id.map(|r| r.get());
    let fail =
        |code: &str, message: &str| reply(h, st, error_envelope(code, message, Some(text), id));
    let kind = env.kind.as_deref().unwrap_or_default();
    match kind {
        "heartbeat" => reply(h, st, envelope("heartbeat_ack", None, id, None)),
        "subscribe" | "unsubscribe" => {
            let data: protocol::ChannelData<'_> =
                match env.data.map(|d| serde_json::from_str(d.get())) {
                    Some(Ok(d)) => d,
                    _ => return fail(err::INVALID_DATA, "data must be {\"channel\": \"<name>\"}"),
                };
            if let Err(m) = protocol::valid_channel(&data.channel) {
                return fail(err::INVALID_DATA, &m);
            }
            let answer = if kind == "subscribe" {
                st.registry.subscribe(h, &data.channel);
                "subscribed"
            } else {
                st.registry.unsubscribe(h, &data.channel);
                "unsubscribed"
            };
            let body = format!("{{\"channel\":{}}}", json_str(&data.channel));
            reply(h, st, envelope(answer, None, id, Some(&body)));
        }
        "publish" => {
            if !st.config.client_publish {
                return fail(
                    err::FORBIDDEN,
                    "clients may not publish on this server (client_publish = false)",
                );
            }
            let data: protocol::PublishData<'_> = match env
                .data
                .map(|d| serde_json::from_str(d.get()))
            {
                Some(Ok(d)) => d,
                _ => {
                    return fail(
                        err::INVALID_DATA,
                        "data must be {\"channel\": \"<name>\", \"type\": \"<type>\", \"data\": ...}",
                    );
                }
            };
            if let Err(m) = protocol::valid_channel(&data.channel) {
                return fail(err::INVALID_DATA, &m);
            }
            let n = st
                .handle
                .publish(&data.channel, &data.kind, data.data.map(|d| d.get()));
            let body = format!(
                "{{\"channel\":{},\"delivered\":{n}}}",
                json_str(&data.channel)
            );
            reply(h, st, envelope("published", None, id, Some(&body)));
        }
        other => {
            if st.handler.on_message(&s, other, env.data) == Handled::No {
                fail(
                    err::UNKNOWN_TYPE,
                    &format!("unknown message type `{}`", protocol::cut(other, 64)),
                );
            }
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
        let role = tokio_tungstenite::tungstenite::protocol::Role::Server;
        let _ = role;
        let ws = crate::socket::TcpWs::new(c, None, ws_config(65536));
        let st = crate::Server::new(crate::Config::default()).unwrap().state;
        let a = st.registry.admit("127.0.0.1".parse().unwrap()).unwrap();
        let f = Box::pin(run(
            ws,
            Arc::clone(&st),
            None,
            "127.0.0.1:1".parse().unwrap(),
            a,
        ));
        let future = std::mem::size_of_val(&*f);
        // The WebSocket object itself (about 300 bytes) lives inside the future.
        // 400 keeps tokio's task cell (128-byte aligned on x86_64) at 512 bytes.
        assert!(future <= 400, "session future grew to {future} bytes");
        let handle = std::mem::size_of::<SessionHandle>();
        assert!(handle <= 224, "SessionHandle grew to {handle} bytes");
    }
}
