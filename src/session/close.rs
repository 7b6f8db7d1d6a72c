//! The close handshake, in one place: whatever ends a session, it ends here, bounded by
//! [`CLOSE_GRACE`], and the close code it returns is what metrics and handlers see.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::Socket;
use super::driver::Running;
use crate::outbox::CloseRequest;
use crate::protocol::close;

/// How long a closing session waits for the peer's close reply or for a stuck write.
pub const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Why the session's main loop ended.
pub enum Ending {
    /// Someone asked for a close (eviction, admin, slow consumer, shutdown).
    Requested(CloseRequest),
    /// The peer sent a close frame with this code (1005 when it had none).
    PeerClosed(u16),
    /// A frame or message exceeded `max_message_size`.
    TooBig,
    /// The peer broke the protocol (1002) or sent invalid UTF-8 text (1007).
    Violation(u16),
    /// The connection died without a close (recorded as 1006).
    Lost,
}

/// Ends the WebSocket as `ending` requires, bounded by [`CLOSE_GRACE`] and cut short when the
/// server abandons its sessions (a forced stop); returns the close code.
pub async fn finish<W: Socket>(r: &mut Running<W>, ending: Ending) -> u16 {
    let shared = std::sync::Arc::clone(&r.guard.shared);
    let code = ending.code();
    tokio::select! {
        code = close_as(r, ending) => code,
        () = shared.abandoned() => code,
    }
}

impl Ending {
    /// The close code this ending records.
    fn code(&self) -> u16 {
        match self {
            Ending::Requested(c) => c.code,
            Ending::PeerClosed(code) | Ending::Violation(code) => *code,
            Ending::TooBig => close::TOO_BIG,
            Ending::Lost => close::ABNORMAL,
        }
    }
}

async fn close_as<W: Socket>(r: &mut Running<W>, ending: Ending) -> u16 {
    match ending {
        Ending::Requested(c) if c.code == close::HEARTBEAT_TIMEOUT => {
            // A peer silent for the whole timeout will not read what is queued nor answer the
            // close: one bounded try at the close frame, then the TCP connection goes at once.
            let _ =
                tokio::time::timeout(CLOSE_GRACE, send_close(&mut r.ws, c.code, c.reason())).await;
            c.code
        }
        Ending::Requested(c) => {
            let handshake = async {
                // A rotation's client reconnects elsewhere as soon as it reads the close; a
                // restart (draining) marked every client before its `shutdown` messages. The
                // wait is a slice of the grace, so the close frame always goes out.
                if c.code == close::RESTART && !r.guard.shared.is_draining() {
                    let client = std::sync::Arc::clone(&r.guard.outbox.client_id);
                    let router = &r.guard.shared.router;
                    router.mark_migrating([client], CLOSE_GRACE / 4).await;
                }
                if r.flush_queued().await && send_close(&mut r.ws, c.code, c.reason()).await {
                    // Wait for the peer's answer (tungstenite ends the stream after it).
                    while let Some(Ok(_)) = r.ws.next().await {}
                }
            };
            let _ = tokio::time::timeout(CLOSE_GRACE, handshake).await;
            c.code
        }
        Ending::PeerClosed(code) => {
            // tungstenite queued the close reply; flush it, but never wait on a dead peer for long.
            let _ = tokio::time::timeout(CLOSE_GRACE, SinkExt::close(&mut r.ws)).await;
            code
        }
        Ending::TooBig => fail(r, close::TOO_BIG, "message too big").await,
        Ending::Violation(code) => fail(r, code, "protocol error").await,
        Ending::Lost => close::ABNORMAL,
    }
}

/// Fails the connection for the peer's fault with `code`, after writing the answers already
/// due to its earlier, good messages (RFC 6455 conformance suites check they arrive).
async fn fail<W: Socket>(r: &mut Running<W>, code: u16, reason: &'static str) -> u16 {
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        if r.flush_queued().await {
            send_close(&mut r.ws, code, reason).await;
        }
    })
    .await;
    code
}

/// Sends a close frame and flushes it; false when the socket is gone. Not bounded: callers are.
async fn send_close<W: Socket>(ws: &mut W, code: u16, reason: &'static str) -> bool {
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    };
    ws.send(Message::Close(Some(frame))).await.is_ok()
}
