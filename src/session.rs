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
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
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
const READ_BUFFER: usize = 512;
/// Outgoing bytes gathered before a write; also the most a batch leaves allocated afterwards.
const WRITE_BUFFER: usize = 4096;

/// tungstenite limits sized for many small, long-lived connections.
pub fn ws_config(max_message: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(WRITE_BUFFER + 2 * max_message + 1024)
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message))
}

/// How the reader half ended.
enum ReadEnd {
    /// The peer sent a close frame with this code (1005 when it had none).
    Closed(u16),
    /// A frame or message exceeded `max_message_size`.
    TooBig,
    /// The peer broke the protocol (1002) or sent invalid UTF-8 text (1007).
    Violation(u16),
    /// The connection died without a close.
    Lost,
}

/// How the writer half ended.
enum WriteEnd {
    /// A close frame was sent with this code.
    Closed(u16),
    /// Writing failed; the connection is gone.
    Lost,
}

type Sink<S> = SplitSink<WebSocketStream<S>, Message>;
type Stream<S> = SplitStream<WebSocketStream<S>>;

/// Removes the session from the registry however the task ends (even by panic).
struct Guard {
    /// Server state.
    st: Arc<State>,
    /// The session.
    handle: Arc<SessionHandle>,
    /// Close code sent or received; 0 until known.
    code: u16,
    /// Keeps the connection counted until the session is gone.
    _admission: Admission,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.st.registry.remove(&self.handle);
        self.st.metrics.closed(self.code);
        let s = Session {
            handle: &self.handle,
            send_queue: self.st.registry.send_queue,
        };
        self.st.handler.on_disconnect(&s, self.code);
        log::debug!(
            "session {} client {} peer {}: closed ({})",
            self.handle.id,
            self.handle.client_id,
            self.handle.remote,
            self.code
        );
    }
}

/// Runs a session from the upgraded socket to its end.
pub async fn run<S>(
    ws: WebSocketStream<S>,
    st: Arc<State>,
    client_id: Option<Arc<str>>,
    remote: SocketAddr,
    admission: Admission,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
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
    let mut guard = Guard {
        st: Arc::clone(&st),
        handle: Arc::clone(&handle),
        code: 0,
        _admission: admission,
    };
    log::debug!(
        "session {id} client {} peer {remote}: open",
        handle.client_id
    );
    if st.is_draining() {
        // Upgraded while shutdown began: shutdown already fanned out, so close it here.
        handle.request_close(st.shutdown_close_code(), "server shutting down");
    }
    st.handler.on_connect(&Session {
        handle: &handle,
        send_queue: st.registry.send_queue,
    });

    let (mut sink, mut stream) = ws.split();
    let first = {
        let reader = read_loop(&mut stream, &handle, &st);
        let writer = write_loop(&mut sink, &handle, &st.metrics);
        tokio::pin!(reader, writer);
        tokio::select! {
            r = &mut reader => Err(r),
            w = &mut writer => {
                if let WriteEnd::Closed(_) = w {
                    // Give the peer a moment to answer our close; a dead one is dropped after it.
                    let _ = tokio::time::timeout(CLOSE_GRACE, &mut reader).await;
                }
                Ok(w)
            }
        }
    };
    guard.code = match first {
        Ok(WriteEnd::Closed(code)) => code,
        Ok(WriteEnd::Lost) | Err(ReadEnd::Lost) => 0,
        Err(ReadEnd::Closed(code)) => {
            // tungstenite queued the close reply; flush it, but never wait on a dead peer for long.
            let _ = tokio::time::timeout(CLOSE_GRACE, sink.close()).await;
            code
        }
        Err(ReadEnd::TooBig) => {
            send_close(&mut sink, close::TOO_BIG, "message too big").await;
            close::TOO_BIG
        }
        Err(ReadEnd::Violation(code)) => {
            send_close(&mut sink, code, "protocol error").await;
            code
        }
    };
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

async fn send_close<S>(sink: &mut Sink<S>, code: u16, reason: &'static str)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    };
    let _ = tokio::time::timeout(CLOSE_GRACE, sink.send(Message::Close(Some(frame)))).await;
}

async fn read_loop<S>(stream: &mut Stream<S>, h: &Arc<SessionHandle>, st: &State) -> ReadEnd
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    while let Some(item) = stream.next().await {
        let msg = match item {
            Ok(m) => m,
            Err(WsError::Capacity(_)) => return ReadEnd::TooBig,
            Err(WsError::Protocol(_)) => return ReadEnd::Violation(1002),
            Err(WsError::Utf8(_)) => return ReadEnd::Violation(1007),
            Err(_) => return ReadEnd::Lost,
        };
        h.touch(st.registry.now_ms());
        st.metrics.received();
        match msg {
            Message::Text(t) => on_text(t.as_str(), h, st),
            Message::Binary(b) => on_binary(&b, h, st),
            Message::Close(frame) => {
                return ReadEnd::Closed(frame.map_or(1005, |f| u16::from(f.code)));
            }
            // Pings are answered by tungstenite; pings and pongs only count as liveness.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
    }
    ReadEnd::Lost
}

async fn write_loop<S>(sink: &mut Sink<S>, h: &SessionHandle, metrics: &Metrics) -> WriteEnd
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let mut batch = h.take_batch();
        if batch.is_empty() {
            h.wait().await;
            continue;
        }
        let frames = &mut batch.frames;
        let count = frames.len() as u64;
        let ping = batch.ping;
        let io = async {
            while let Some(f) = frames.pop_front() {
                sink.feed(f).await?;
            }
            if ping {
                sink.feed(Message::Ping(Bytes::new())).await?;
            }
            sink.flush().await
        };
        // A peer that stopped reading parks the write forever; a close request (slow consumer,
        // eviction, admin, shutdown) must still get through, so the write races against it.
        let outcome = tokio::select! {
            r = io => r.map(|_| None),
            c = close_requested(h) => Ok(Some(c)),
        };
        h.recycle(batch.frames);
        let close = match outcome {
            Err(_) => return WriteEnd::Lost,
            Ok(Some(c)) => Some(c),
            Ok(None) => {
                metrics.add_sent(count);
                batch.close
            }
        };
        if let Some(c) = close {
            send_close(sink, c.code, c.reason).await;
            return WriteEnd::Closed(c.code);
        }
    }
}

async fn close_requested(h: &SessionHandle) -> CloseRequest {
    loop {
        if let Some(c) = h.close_requested() {
            return c;
        }
        h.wait().await;
    }
}

fn reply(h: &SessionHandle, st: &State, msg: tokio_tungstenite::tungstenite::Utf8Bytes) {
    if h.enqueue(Message::Text(msg), st.registry.send_queue) != crate::outbox::Enqueued::Queued {
        st.metrics.dropped();
    }
}

fn on_binary(data: &Bytes, h: &Arc<SessionHandle>, st: &State) {
    let s = Session {
        handle: h,
        send_queue: st.registry.send_queue,
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
        send_queue: st.registry.send_queue,
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
                .publish_delivery(&data.channel, &data.kind, data.data.map(|d| d.get()))
                .delivered;
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
