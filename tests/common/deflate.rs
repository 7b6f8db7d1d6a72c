//! A permessage-deflate WebSocket client written by hand (tokio-tungstenite has no deflate):
//! it offers the extension, reads the answer, inflates RSV1 messages from the server and can
//! send compressed, fragmented or hostile frames. It counts the bytes it reads off the wire.

use std::net::SocketAddr;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::WAIT;

/// The empty stored block of a sync flush, removed from the wire (RFC 7692 §7.2.1).
const TAIL: [u8; 4] = [0, 0, 0xff, 0xff];
const MASK: [u8; 4] = [0xa1, 0x5e, 0x07, 0xc3];

/// One message (or control frame) from the server.
#[derive(Debug)]
pub struct Msg {
    /// 1 text, 2 binary, 8 close, 9 ping, 10 pong.
    pub opcode: u8,
    /// The payload, inflated when it came compressed.
    pub payload: Vec<u8>,
    /// It came with RSV1 (compressed).
    pub compressed: bool,
    /// Payload bytes it took on the wire (all its frames, before inflating).
    pub wire_len: usize,
}

impl Msg {
    /// The payload as text.
    pub fn text(&self) -> String {
        String::from_utf8(self.payload.clone()).expect("text message is UTF-8")
    }

    /// The close code of a close frame.
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == 8 && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

/// The client.
pub struct DeflateClient<S> {
    s: S,
    buf: Vec<u8>,
    /// The server's `Sec-WebSocket-Extensions` answer, if any.
    pub extensions: Option<String>,
    /// Bytes read after the handshake.
    pub wire_bytes: usize,
}

/// The upgrade request for `path`, offering `offer` (None: no extension header).
pub fn request(addr: SocketAddr, path: &str, offer: Option<&str>) -> String {
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    );
    if let Some(o) = offer {
        req.push_str(&format!("Sec-WebSocket-Extensions: {o}\r\n"));
    }
    req + "\r\n"
}

impl DeflateClient<TcpStream> {
    /// Connects over TCP and upgrades `path` with `offer`.
    pub async fn connect(addr: SocketAddr, path: &str, offer: Option<&str>) -> Self {
        let s = TcpStream::connect(addr).await.unwrap();
        DeflateClient::upgrade(s, &request(addr, path, offer)).await
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> DeflateClient<S> {
    /// Sends the upgrade `req` on `s` and reads the 101 answer.
    pub async fn upgrade(mut s: S, req: &str) -> Self {
        s.write_all(req.as_bytes()).await.unwrap();
        let mut c = DeflateClient {
            s,
            buf: Vec::new(),
            extensions: None,
            wire_bytes: 0,
        };
        let end = loop {
            if let Some(p) = c.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            assert!(c.fill().await > 0, "closed during the handshake");
        };
        let head = String::from_utf8_lossy(&c.buf[..end]).to_string();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        c.extensions = head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("sec-websocket-extensions")
                .then(|| v.trim().to_string())
        });
        c.buf.drain(..end);
        c.wire_bytes = c.buf.len();
        c
    }

    async fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 8192];
        let n = tokio::time::timeout(WAIT, self.s.read(&mut chunk))
            .await
            .expect("read timed out")
            .unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        self.wire_bytes += n;
        n
    }

    /// One frame: (first byte, payload); None at the end of the stream.
    async fn frame(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if self.buf.len() >= 2 {
                assert_eq!(self.buf[1] & 0x80, 0, "server frames are not masked");
                let (hdr, len) = match self.buf[1] & 0x7f {
                    126 if self.buf.len() >= 4 => (
                        4,
                        usize::from(u16::from_be_bytes([self.buf[2], self.buf[3]])),
                    ),
                    127 if self.buf.len() >= 10 => {
                        let mut b = [0; 8];
                        b.copy_from_slice(&self.buf[2..10]);
                        (10, u64::from_be_bytes(b) as usize)
                    }
                    126 | 127 => (usize::MAX, 0),
                    n => (2, usize::from(n)),
                };
                if hdr != usize::MAX && self.buf.len() >= hdr + len {
                    let first = self.buf[0];
                    let payload = self.buf[hdr..hdr + len].to_vec();
                    self.buf.drain(..hdr + len);
                    return Some((first, payload));
                }
            }
            if self.fill().await == 0 {
                return None;
            }
        }
    }

    /// The next message or control frame, fragments joined and inflated; None at the end.
    pub async fn next(&mut self) -> Option<Msg> {
        let (first, mut payload) = self.frame().await?;
        let (opcode, compressed) = (first & 0x0f, first & 0x40 != 0);
        let mut fin = first & 0x80 != 0;
        while !fin {
            let (b, more) = self.frame().await?;
            assert_eq!(b & 0x0f, 0, "a continuation frame");
            payload.extend_from_slice(&more);
            fin = b & 0x80 != 0;
        }
        let wire_len = payload.len();
        if compressed {
            payload = inflate(&payload);
        }
        Some(Msg {
            opcode,
            payload,
            compressed,
            wire_len,
        })
    }

    /// The next text or binary message, skipping pings and pongs.
    pub async fn next_data(&mut self) -> Msg {
        loop {
            let m = self.next().await.expect("stream ended");
            if m.opcode != 9 && m.opcode != 10 {
                return m;
            }
        }
    }

    /// Reads until the server's close frame and returns its code (None: no close frame).
    pub async fn close_code(&mut self) -> Option<u16> {
        while let Some(m) = self.next().await {
            if m.opcode == 8 {
                return m.close_code();
            }
        }
        None
    }

    /// Sends raw bytes.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).await.unwrap();
    }

    /// Sends a text message, compressed (RSV1) or not, in `pieces` frames.
    pub async fn send_text(&mut self, text: &str, compressed: bool, pieces: usize) {
        let payload = if compressed {
            deflate(text.as_bytes())
        } else {
            text.as_bytes().to_vec()
        };
        let size = payload.len().div_ceil(pieces.max(1)).max(1);
        let chunks: Vec<&[u8]> = if payload.is_empty() {
            vec![&[]]
        } else {
            payload.chunks(size).collect()
        };
        let mut out = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            let (first, last) = (i == 0, i + 1 == chunks.len());
            let opcode = if first { 1 } else { 0 };
            out.extend(frame(last, first && compressed, opcode, c));
        }
        self.send_raw(&out).await;
    }
}

/// One masked client frame.
pub fn frame(fin: bool, rsv1: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![(u8::from(fin) << 7) | (u8::from(rsv1) << 6) | opcode];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n <= 0xffff => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&MASK);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    f
}

/// `data` as a permessage-deflate payload: raw deflate, sync flush, tail removed.
pub fn deflate(data: &[u8]) -> Vec<u8> {
    let mut c = Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(data.len() + 64);
    c.compress_vec(data, &mut out, FlushCompress::Sync).unwrap();
    assert!(out.ends_with(&TAIL), "a sync flush ends with 00 00 ff ff");
    out.truncate(out.len() - TAIL.len());
    out
}

/// The inverse of [`deflate`].
pub fn inflate(data: &[u8]) -> Vec<u8> {
    let mut d = Decompress::new(false);
    let mut input = data.to_vec();
    input.extend_from_slice(&TAIL);
    let mut out = Vec::with_capacity(1 << 22);
    d.decompress_vec(&input, &mut out, FlushDecompress::Sync)
        .expect("the server's deflate data inflates");
    out
}
