//! A plain TCP session's first steps, run on the edge thread (`server::edge`): its `welcome`
//! written where the client waits for it, then the socket handed to the main runtime's reactor.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::Guard;
use crate::net::deflate::Inflater;
use crate::net::socket::TcpWs;

/// Longest the edge waits to write a `welcome` before it gives the session up.
const WELCOME_WRITE: Duration = Duration::from_secs(10);

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
            main.spawn(super::open(ws, guard));
        }
        None => {
            main.spawn(super::open(TcpWs::new(tcp, part, cfg), guard));
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
