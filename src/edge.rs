//! The edge: a thread of its own that accepts connections, serves HTTP/1.1 and completes
//! WebSocket handshakes up to `welcome`, so a client connecting while the worker threads fan a
//! broadcast out to every session is still answered within milliseconds. Sessions, the reaper
//! and the cluster run on the main runtime (the one `Server::run` was called on); a session's
//! socket moves there once its `welcome` is on the wire. The HTTP API stays on the edge: a
//! fan-out only enqueues and wakes, in paced slices, and the writes it causes run on the
//! workers.
//!
//! Why a thread rather than ordering within one runtime: tokio has no task priorities, and a
//! broadcast wakes thousands of session tasks at once, so a handshake queued behind them waits
//! for all of them (18× its idle latency at 3 broadcasts/s to 18,500 sessions). The kernel
//! schedules the edge thread beside the workers instead, so a handshake waits for a scheduler
//! slice at most.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::deflate::Inflater;
use crate::session::{self, Guard};
use crate::socket::TcpWs;

/// Longest the edge waits to write a `welcome` before it gives the session up.
const WELCOME_WRITE: Duration = Duration::from_secs(10);

/// The edge thread; [`Edge::finish`] waits for it.
pub struct Edge {
    /// Resolves when the thread's runtime has stopped.
    done: oneshot::Receiver<()>,
}

impl Edge {
    /// Starts a thread with a single-threaded runtime running `work` to its end; the future is
    /// built on that thread, so what it binds (the listener) belongs to the edge's reactor.
    pub fn spawn<F, Fut>(work: F) -> io::Result<Edge>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()>,
    {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("tether-edge")
            .build()?;
        let (tx, done) = oneshot::channel();
        std::thread::Builder::new()
            .name("tether-edge".into())
            .spawn(move || {
                runtime.block_on(work());
                // The HTTP connections still open are cut with the runtime: `run` has given
                // them their grace already.
                drop(runtime);
                let _ = tx.send(());
            })?;
        Ok(Edge { done })
    }

    /// Waits until the edge thread has stopped (its work returned).
    pub async fn finish(self) {
        let _ = self.done.await;
    }
}

/// Runs a session on a plain TCP socket: writes its `welcome` right here on the edge (what a
/// connecting client waits for), then moves the socket to the main runtime's reactor and spawns
/// the session there. Everything queued after `welcome` is the session's to write.
pub async fn open_tcp(
    mut tcp: TcpStream,
    part: Option<Vec<u8>>,
    cfg: WebSocketConfig,
    inflater: Option<Box<Inflater>>,
    guard: Guard,
) {
    let shared = Arc::clone(&guard.shared);
    // A negotiated session compresses what reaches compression_min_size; the edge writes only
    // frames that go out plain.
    let limit = match inflater {
        Some(_) => shared.config.compression_min_size.saturating_sub(1),
        None => usize::MAX,
    };
    if let Some(welcome) = guard.outbox().take_greeting(limit) {
        let frame = text_frame(welcome.as_bytes());
        match tokio::time::timeout(WELCOME_WRITE, tcp.write_all(&frame)).await {
            Ok(Ok(())) => shared.metrics.add_sent(1),
            Ok(Err(e)) => {
                return log::debug!("session {}: welcome not written: {e}", guard.outbox().id);
            }
            Err(_) => {
                return log::debug!("session {}: welcome not taken in time", guard.outbox().id);
            }
        }
    }
    let main = shared.main();
    let tcp = match tcp.into_std() {
        // Registered with the main runtime's reactor, so the session's I/O never waits for the
        // edge thread.
        Ok(std) => {
            let _in_main = main.enter();
            TcpStream::from_std(std)
        }
        Err(e) => Err(e),
    };
    let tcp = match tcp {
        Ok(tcp) => tcp,
        Err(e) => {
            return log::warn!(
                "session {}: socket not moved to the workers: {e}",
                guard.outbox().id
            );
        }
    };
    match inflater {
        Some(inflater) => {
            let ws = TcpWs::with_inbound(tcp, part, cfg, inflater);
            main.spawn(session::open(ws, guard));
        }
        None => {
            main.spawn(session::open(TcpWs::new(tcp, part, cfg), guard));
        }
    }
}

/// An unmasked, unfragmented text frame (RFC 6455 §5.2) as a server sends it.
fn text_frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 10);
    out.push(0x81);
    match payload.len() {
        n @ 0..=125 => out.push(n as u8),
        n @ 126..=0xffff => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;

    #[test]
    fn text_frames_have_the_length_forms_of_rfc_6455() {
        for len in [0usize, 1, 125, 126, 127, 65_535, 65_536, 70_000] {
            let payload = vec![b'a'; len];
            let frame = text_frame(&payload);
            let mut cursor = std::io::Cursor::new(&frame[..]);
            let (header, length) = FrameHeader::parse(&mut cursor).unwrap().unwrap();
            assert!(header.is_final && !header.rsv1 && header.mask.is_none());
            assert_eq!(length, len as u64);
            assert_eq!(frame.len() - cursor.position() as usize, len);
        }
    }
}
