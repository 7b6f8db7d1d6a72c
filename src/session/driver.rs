//! The session's poll loop: read what arrived (every frame stamps liveness), then write what is
//! queued with one flush per batch. One hand-written loop per session, no split and no second
//! task, so an idle session costs only its socket and a few words.

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt, ready};
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::close::Ending;
use super::{Guard, Socket, commands};
use crate::net::deflate;
use crate::outbox::Outbox;
use crate::outbox::rate::Rate;
use crate::protocol::close;
use crate::state::Shared;

/// Frames read in one poll before the task yields, so one chatty peer cannot hog a worker.
const READS_PER_POLL: usize = 32;

/// Writer state kept between polls: a few words inside the session's future.
#[derive(Default)]
pub struct Writer {
    /// Frames taken from the outbox and not yet handed to the sink.
    pending: VecDeque<Message>,
    /// A Ping still to hand to the sink.
    ping: bool,
    /// Messages handed to the sink since the last flush (counted once flushed).
    unflushed: u32,
    /// Anything (message or ping) handed to the sink since the last flush.
    dirty: bool,
}

impl Writer {
    /// Frames taken from the outbox but never handed to the socket.
    pub fn unsent(&self) -> usize {
        self.pending.len()
    }
}

/// Everything a live session's future holds, behind one pointer in its poll closure.
pub struct Running<W> {
    /// The WebSocket.
    pub ws: W,
    /// Unregisters the session when it ends.
    pub guard: Guard,
    /// Writer state between polls.
    pub writer: Writer,
}

impl<W: Socket> Running<W> {
    /// One poll of the session: read what arrived, then write what is queued. Ready when it ends.
    pub fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Ending> {
        let (outbox, shared) = (&self.guard.outbox, &self.guard.shared);
        let created = &mut self.guard.streams_created;
        let ws = &mut self.ws;
        outbox.register(cx.waker());
        if let Some(c) = outbox.close_requested() {
            return Poll::Ready(Ending::Requested(c));
        }
        for i in 0..READS_PER_POLL {
            match ws.poll_next_unpin(cx) {
                Poll::Pending => break,
                Poll::Ready(None) => return Poll::Ready(Ending::Lost),
                Poll::Ready(Some(Err(e))) => {
                    return Poll::Ready(match e {
                        WsError::Capacity(_) => Ending::TooBig,
                        // tungstenite reports an EOF without a close frame as a protocol error;
                        // it is a lost connection (1006), not a peer breaking the protocol.
                        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
                            Ending::Lost
                        }
                        WsError::Protocol(_) => Ending::Violation(1002),
                        WsError::Utf8(_) => Ending::Violation(1007),
                        // The inflating layer's verdicts on compressed messages.
                        WsError::Io(e) => match deflate::failure_of(&e) {
                            Some(deflate::Failure::TooBig) => Ending::TooBig,
                            Some(f) => Ending::Violation(f.close_code()),
                            None => Ending::Lost,
                        },
                        _ => Ending::Lost,
                    });
                }
                Poll::Ready(Some(Ok(msg))) => {
                    if let Some(end) = on_frame(msg, outbox, shared, created) {
                        return Poll::Ready(end);
                    }
                }
            }
            if i + 1 == READS_PER_POLL {
                cx.waker().wake_by_ref();
            }
        }
        // Handling frames may have queued replies or asked for a close.
        if let Some(c) = outbox.close_requested() {
            return Poll::Ready(Ending::Requested(c));
        }
        match poll_write(cx, ws, outbox, shared, &mut self.writer) {
            Poll::Ready(Err(_)) => Poll::Ready(Ending::Lost),
            _ => Poll::Pending,
        }
    }
}

impl<W: Socket> Running<W> {
    /// Writes everything still queued (taken by the writer or left in the outbox) and flushes;
    /// false when the socket failed. Closes that tether starts call it before the close frame,
    /// so a frame counted as delivered is on the wire first. Not bounded: callers are.
    pub async fn flush_queued(&mut self) -> bool {
        let Running { ws, guard, writer } = self;
        let (outbox, shared) = (&guard.outbox, &*guard.shared);
        std::future::poll_fn(|cx| poll_write(cx, ws, outbox, shared, writer))
            .await
            .is_ok()
    }
}

/// Hands queued frames to the socket and flushes once the outbox is empty: one flush per batch.
/// With permessage-deflate, a frame queued for this session alone is compressed here (fan-outs
/// queue theirs compressed already).
fn poll_write<W: Socket>(
    cx: &mut Context<'_>,
    ws: &mut W,
    outbox: &Outbox,
    shared: &Shared,
    w: &mut Writer,
) -> Poll<Result<(), WsError>> {
    let metrics = &shared.metrics;
    loop {
        if w.pending.is_empty() && !w.ping {
            let batch = outbox.take_batch();
            if batch.frames.is_empty() && !batch.ping {
                // Idle sessions keep no queue allocation.
                w.pending = VecDeque::new();
                if w.dirty {
                    ready!(ws.poll_flush_unpin(cx))?;
                    metrics.add_sent(u64::from(w.unflushed));
                    w.unflushed = 0;
                    w.dirty = false;
                }
                return Poll::Ready(Ok(()));
            }
            w.pending = batch.frames;
            w.ping = batch.ping;
        }
        ready!(ws.poll_ready_unpin(cx))?;
        if let Some(m) = w.pending.pop_front() {
            let m = deflate::outgoing(m, outbox.deflate(), shared.config.compression_min_size);
            ws.start_send_unpin(m)?;
            w.unflushed += 1;
        } else {
            ws.start_send_unpin(Message::Ping(Bytes::new()))?;
            w.ping = false;
        }
        w.dirty = true;
    }
}

/// Handles one frame from the peer; `Some` when it ends the session.
fn on_frame(
    msg: Message,
    outbox: &Arc<Outbox>,
    shared: &Arc<Shared>,
    created: &mut u16,
) -> Option<Ending> {
    let now = shared.clock.now_ms();
    outbox.touch(now);
    shared.metrics.received();
    let rate = shared.config.client_message_rate;
    if rate > 0 && matches!(msg, Message::Text(_) | Message::Binary(_)) {
        match outbox.inbound.lock().take(rate, now) {
            Rate::Ok => {}
            Rate::Limited => {
                commands::rate_limited(outbox, shared, rate);
                return None;
            }
            Rate::Persistent => {
                outbox.request_close(close::POLICY);
                return None;
            }
        }
    }
    match msg {
        Message::Text(t) => commands::on_text(t.as_str(), outbox, shared, created),
        Message::Binary(b) => commands::on_binary(&b, outbox, shared),
        Message::Close(frame) => {
            return Some(Ending::PeerClosed(
                frame.map_or(1005, |f| u16::from(f.code)),
            ));
        }
        // Pings are answered by tungstenite; pings and pongs only count as liveness.
        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
    }
    None
}
