//! The close handshake, in one place: whatever ends a session, it ends here, bounded by
//! [`CLOSE_GRACE`], and the close code it returns is what metrics and handlers see.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::Socket;
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
    /// The connection died without a close.
    Lost,
}

/// Ends the WebSocket as `ending` requires, bounded by [`CLOSE_GRACE`]; returns the close code.
pub async fn finish<W: Socket>(ws: &mut W, ending: Ending) -> u16 {
    match ending {
        Ending::Requested(c) => {
            let handshake = async {
                if send_close(ws, c.code, c.reason()).await {
                    // Wait for the peer's answer (tungstenite ends the stream after it).
                    while let Some(Ok(_)) = ws.next().await {}
                }
            };
            let _ = tokio::time::timeout(CLOSE_GRACE, handshake).await;
            c.code
        }
        Ending::PeerClosed(code) => {
            // tungstenite queued the close reply; flush it, but never wait on a dead peer for long.
            let _ = tokio::time::timeout(CLOSE_GRACE, SinkExt::close(ws)).await;
            code
        }
        Ending::TooBig => {
            let _ = tokio::time::timeout(
                CLOSE_GRACE,
                send_close(ws, close::TOO_BIG, "message too big"),
            )
            .await;
            close::TOO_BIG
        }
        Ending::Violation(code) => {
            let _ = tokio::time::timeout(CLOSE_GRACE, send_close(ws, code, "protocol error")).await;
            code
        }
        Ending::Lost => 0,
    }
}

/// Sends a close frame and flushes it; false when the socket is gone. Not bounded: callers are.
async fn send_close<W: Socket>(ws: &mut W, code: u16, reason: &'static str) -> bool {
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    };
    ws.send(Message::Close(Some(frame))).await.is_ok()
}
