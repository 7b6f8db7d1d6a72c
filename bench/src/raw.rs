//! A hand-written WebSocket client that goes silent: it sends the upgrade request and then never
//! another byte (no Pong, no heartbeat), but keeps reading and parsing the server's frames so it
//! sees the close frame of an eviction, or the TCP end when a server drops it without one.
//! It does not check `Sec-WebSocket-Accept` (that would need SHA-1); a 101 status is enough here.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::conn::{Welcome, io_kind, tcp};
use crate::proto::WorkerSpec;
use crate::target::Endpoint;

/// A fixed, valid 16-byte base64 key; this client does not need a fresh one per connection.
const KEY: &str = "dGV0aGVyLWJlbmNoLWtleQ==";
/// Opcode of a text frame.
pub const TEXT: u8 = 0x1;
/// Opcode of a close frame.
pub const CLOSE: u8 = 0x8;

/// One parsed frame.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    /// Opcode (low four bits of the first byte).
    pub opcode: u8,
    /// Unmasked payload.
    pub payload: Vec<u8>,
}

/// Parses one frame from the front of `buf`: Ok(None) when more bytes are needed, otherwise the
/// frame and how many bytes it took.
pub fn parse_frame(buf: &[u8]) -> Result<Option<(Frame, usize)>, String> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let opcode = buf[0] & 0x0f;
    let masked = buf[1] & 0x80 != 0;
    let (len, mut at) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
        127 if buf.len() >= 10 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(b), 10)
        }
        126 | 127 => return Ok(None),
        n => (u64::from(n), 2),
    };
    if len > 16 * 1024 * 1024 {
        return Err("frame_too_big".into());
    }
    let mask = if masked {
        if buf.len() < at + 4 {
            return Ok(None);
        }
        let m = [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]];
        at += 4;
        Some(m)
    } else {
        None
    };
    let end = at + len as usize;
    if buf.len() < end {
        return Ok(None);
    }
    let mut payload = buf[at..end].to_vec();
    if let Some(m) = mask {
        payload
            .iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b ^= m[i % 4]);
    }
    Ok(Some((Frame { opcode, payload }, end)))
}

/// The status code of an HTTP response head, if the head is complete; and the head's length.
pub fn parse_status(buf: &[u8]) -> Option<(u16, usize)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let line = std::str::from_utf8(&buf[..end]).ok()?.lines().next()?;
    let code = line.split(' ').nth(1)?.parse().ok()?;
    Some((code, end))
}

/// How a silent client's connection ended.
#[derive(Debug)]
pub enum End {
    /// A close frame with this code ("no_code" when it had none).
    Close(String),
    /// The TCP connection ended (or was reset) without a close frame; the label says which.
    Tcp(String),
    /// Still open at the deadline.
    Deadline,
}

/// A connected silent client.
pub struct Silent {
    /// The socket.
    stream: TcpStream,
    /// Bytes read but not yet parsed.
    buf: Vec<u8>,
    /// When this client wrote its last byte (the end of the upgrade request).
    pub last_byte: Instant,
    /// When the `welcome` arrived: the server's liveness stamp is between the two.
    pub welcome_at: Instant,
}

impl Silent {
    /// Connects `c<id>` (with `token`, if any), upgrades, and reads the `welcome`; returns the
    /// client, the welcome and the microseconds from connect start to welcome.
    pub async fn open(
        spec: &WorkerSpec,
        id: u64,
        token: Option<&str>,
    ) -> Result<(Silent, Welcome, u64), String> {
        let t0 = Instant::now();
        let ep = Endpoint {
            addr: spec.addr,
            host: spec.host.clone(),
            path: spec.path.clone(),
        };
        let attempt = async {
            let mut stream = tcp(spec).await.map_err(|e| io_kind(&e))?;
            let req = format!(
                "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n",
                ep.path_for(&format!("c{id}"), token),
                spec.host
            );
            stream
                .write_all(req.as_bytes())
                .await
                .map_err(|e| io_kind(&e))?;
            let last_byte = Instant::now();
            let mut s = Silent {
                stream,
                buf: Vec::with_capacity(1024),
                last_byte,
                welcome_at: last_byte,
            };
            let (code, head) = loop {
                if let Some(x) = parse_status(&s.buf) {
                    break x;
                }
                s.fill().await?;
            };
            if code != 101 {
                return Err(format!("http_{code}"));
            }
            s.buf.drain(..head);
            loop {
                let f = s.frame().await?;
                match f.opcode {
                    TEXT => {
                        s.welcome_at = Instant::now();
                        let text = String::from_utf8_lossy(&f.payload);
                        return Welcome::parse(&text)
                            .map(|w| (s, w))
                            .ok_or_else(|| "no_welcome".to_string());
                    }
                    CLOSE => return Err(format!("close_{}", close_code(&f.payload))),
                    _ => continue,
                }
            }
        };
        match tokio::time::timeout(Duration::from_millis(spec.connect_timeout_ms), attempt).await {
            Err(_) => Err("timeout".into()),
            Ok(Err(e)) => Err(e),
            Ok(Ok((s, w))) => Ok((s, w, t0.elapsed().as_micros() as u64)),
        }
    }

    /// Reads more bytes; an error label when the connection ended.
    async fn fill(&mut self) -> Result<(), String> {
        let mut chunk = [0u8; 2048];
        match self.stream.read(&mut chunk).await {
            Ok(0) => Err("tcp_end".into()),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Err(e) => Err(io_kind(&e)),
        }
    }

    /// The next complete frame.
    async fn frame(&mut self) -> Result<Frame, String> {
        loop {
            if let Some((f, used)) = parse_frame(&self.buf)? {
                self.buf.drain(..used);
                return Ok(f);
            }
            self.fill().await?;
        }
    }

    /// Reads (never writes) until a close frame, the TCP end, or `deadline`; returns how it
    /// ended and when.
    pub async fn wait_end(&mut self, deadline: tokio::time::Instant) -> (End, Instant) {
        let end = tokio::time::timeout_at(deadline, async {
            loop {
                match self.frame().await {
                    Ok(f) if f.opcode == CLOSE => return End::Close(close_code(&f.payload)),
                    Ok(_) => continue,
                    Err(kind) => return End::Tcp(kind),
                }
            }
        })
        .await
        .unwrap_or(End::Deadline);
        (end, Instant::now())
    }
}

/// The code of a close frame's payload, or "no_code".
pub fn close_code(payload: &[u8]) -> String {
    match payload {
        [a, b, ..] => u16::from_be_bytes([*a, *b]).to_string(),
        _ => "no_code".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_short_medium_and_partial_frames() {
        let mut buf = vec![0x81, 5];
        buf.extend_from_slice(b"hello");
        buf.extend_from_slice(&[0x88, 2, 0x0f, 0xa1]); // close 4001
        let (f, used) = parse_frame(&buf).unwrap().unwrap();
        assert_eq!(
            (f.opcode, f.payload.as_slice(), used),
            (TEXT, &b"hello"[..], 7)
        );
        let (c, _) = parse_frame(&buf[used..]).unwrap().unwrap();
        assert_eq!(
            (c.opcode, close_code(&c.payload)),
            (CLOSE, "4001".to_string())
        );
        assert_eq!(parse_frame(&buf[..4]).unwrap(), None);

        let mut big = vec![0x81, 126, 0x01, 0x00];
        big.extend(std::iter::repeat_n(b'x', 256));
        let (f, used) = parse_frame(&big).unwrap().unwrap();
        assert_eq!((f.payload.len(), used), (256, 260));
        assert_eq!(parse_frame(&big[..100]).unwrap(), None);
        assert_eq!(parse_frame(&[0x89, 0]).unwrap().unwrap().0.opcode, 0x9);
        assert!(parse_frame(&[0x82, 127, 0xff, 0, 0, 0, 0, 0, 0, 0]).is_err());
    }

    #[test]
    fn unmasks_masked_frames() {
        let mask = [1u8, 2, 3, 4];
        let data: Vec<u8> = b"abcde"
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ mask[i % 4])
            .collect();
        let mut buf = vec![0x81, 0x80 | 5];
        buf.extend_from_slice(&mask);
        buf.extend_from_slice(&data);
        assert_eq!(parse_frame(&buf).unwrap().unwrap().0.payload, b"abcde");
    }

    #[test]
    fn status_lines_and_close_codes() {
        let head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x00";
        assert_eq!(parse_status(head), Some((101, head.len() - 2)));
        assert_eq!(parse_status(b"HTTP/1.1 503 Service Unavailable\r\n"), None);
        assert_eq!(close_code(&[]), "no_code");
        assert_eq!(close_code(&[0x03, 0xe8, b'x']), "1000");
    }
}
