//! The client's socket as tokio-tungstenite sees it: every byte read is counted (the bytes a
//! client receives on the wire), and with `--compression` the frames past the HTTP answer go
//! through a small permessage-deflate layer, since tungstenite has none: a server frame with
//! RSV1 starts a compressed message, whose frames are joined and inflated (raw deflate, the
//! `00 00 ff ff` tail added back, a fresh context per message as `client_no_context_takeover`
//! allows) and handed on as one plain frame. The upgrade offers what tether answers:
//! `permessage-deflate; client_max_window_bits` (the client sends uncompressed).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use flate2::{Decompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The offer sent with `--compression`.
pub const OFFER: &str = "permessage-deflate; client_max_window_bits";

/// Bytes read off the wire by this worker's clients, HTTP answers included.
pub static WIRE_BYTES: AtomicU64 = AtomicU64::new(0);
/// Messages that arrived compressed.
pub static COMPRESSED: AtomicU64 = AtomicU64::new(0);

/// Largest message inflated (tether's own messages are far smaller).
const MAX_MESSAGE: usize = 16 << 20;
const TAIL: [u8; 4] = [0, 0, 0xff, 0xff];

/// A client's TCP stream, counted and, when compressing, inflated.
pub struct Wire {
    /// The connection.
    tcp: TcpStream,
    /// The permessage-deflate layer; None without `--compression`.
    layer: Option<Box<Layer>>,
}

impl Wire {
    /// Wraps a connected socket; `compression` when the upgrade offers permessage-deflate.
    pub fn new(tcp: TcpStream, compression: bool) -> Wire {
        Wire {
            tcp,
            layer: compression.then(Box::default),
        }
    }
}

impl AsyncRead for Wire {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(layer) = this.layer.as_mut() else {
            let before = buf.filled().len();
            ready!(Pin::new(&mut this.tcp).poll_read(cx, buf))?;
            WIRE_BYTES.fetch_add((buf.filled().len() - before) as u64, Ordering::Relaxed);
            return Poll::Ready(Ok(()));
        };
        loop {
            if layer.served < layer.out.len() {
                let n = buf.remaining().min(layer.out.len() - layer.served);
                buf.put_slice(&layer.out[layer.served..layer.served + n]);
                layer.served += n;
                if layer.served == layer.out.len() {
                    layer.out.clear();
                    layer.served = 0;
                }
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 8192];
            let mut rb = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.tcp).poll_read(cx, &mut rb))?;
            if rb.filled().is_empty() {
                return Poll::Ready(Ok(()));
            }
            WIRE_BYTES.fetch_add(rb.filled().len() as u64, Ordering::Relaxed);
            layer.feed(rb.filled())?;
        }
    }
}

impl AsyncWrite for Wire {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, b)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

/// Where the layer is in the stream.
enum State {
    /// In the HTTP answer; the count of `\r\n\r\n` bytes matched so far.
    Head(usize),
    /// Reading a frame header.
    Header,
    /// Passing this many payload bytes on.
    Pass(u64),
    /// Collecting this many compressed payload bytes.
    Take(u64),
}

/// The inflating layer of one client.
#[derive(Default)]
pub struct Layer {
    /// None until the first byte: the HTTP answer comes first.
    state: Option<State>,
    /// The frame header being read.
    hdr: Vec<u8>,
    /// A compressed message is being collected: its opcode, and whether this frame is its last.
    message: Option<(u8, bool)>,
    /// Its compressed payload so far.
    acc: Vec<u8>,
    /// Bytes for tungstenite.
    out: Vec<u8>,
    /// How much of `out` it has read.
    served: usize,
}

impl Layer {
    /// Runs freshly read bytes through the layer into `out`.
    fn feed(&mut self, mut input: &[u8]) -> io::Result<()> {
        while !input.is_empty() {
            match self.state.take().unwrap_or(State::Head(0)) {
                State::Head(mut matched) => {
                    let mut used = 0;
                    for &b in input {
                        used += 1;
                        matched = match (matched, b) {
                            (0 | 2, b'\r') => matched + 1,
                            (1 | 3, b'\n') => matched + 1,
                            (_, b'\r') => 1,
                            _ => 0,
                        };
                        if matched == 4 {
                            break;
                        }
                    }
                    self.out.extend_from_slice(&input[..used]);
                    input = &input[used..];
                    self.state = Some(if matched == 4 {
                        State::Header
                    } else {
                        State::Head(matched)
                    });
                }
                State::Header => {
                    let need = header_len(&self.hdr);
                    let k = (need - self.hdr.len()).min(input.len());
                    self.hdr.extend_from_slice(&input[..k]);
                    input = &input[k..];
                    self.state = Some(State::Header);
                    if self.hdr.len() == header_len(&self.hdr) {
                        self.on_header()?;
                    }
                }
                State::Pass(left) => {
                    let k = left.min(input.len() as u64) as usize;
                    self.out.extend_from_slice(&input[..k]);
                    input = &input[k..];
                    self.state = Some(State::Pass(left - k as u64));
                }
                State::Take(left) => {
                    let k = left.min(input.len() as u64) as usize;
                    self.acc.extend_from_slice(&input[..k]);
                    input = &input[k..];
                    self.state = Some(State::Take(left - k as u64));
                }
            }
            self.end_of_payload()?;
        }
        Ok(())
    }

    /// Decides on a complete frame header: pass it on, or collect a compressed payload.
    fn on_header(&mut self) -> io::Result<()> {
        let h = std::mem::take(&mut self.hdr);
        let (fin, rsv1, opcode) = (h[0] & 0x80 != 0, h[0] & 0x40 != 0, h[0] & 0x0f);
        let len = match h[1] & 0x7f {
            126 => u64::from(u16::from_be_bytes([h[2], h[3]])),
            127 => u64::from_be_bytes(h[2..10].try_into().unwrap_or([0; 8])),
            n => u64::from(n),
        };
        let compressed = match self.message {
            Some(_) => opcode == 0,
            None => rsv1 && (opcode == 1 || opcode == 2),
        };
        if compressed {
            if self.acc.len() as u64 + len > MAX_MESSAGE as u64 {
                return Err(io::Error::other("compressed message too big"));
            }
            let op = self.message.map_or(opcode, |(op, _)| op);
            self.message = Some((op, fin));
            self.state = Some(State::Take(len));
        } else {
            // Plain and control frames (tungstenite judges anything odd in them).
            self.out.extend_from_slice(&h);
            self.state = Some(State::Pass(len));
        }
        self.hdr = h;
        self.hdr.clear();
        Ok(())
    }

    /// After a payload: back to headers, inflating a compressed message that just ended.
    fn end_of_payload(&mut self) -> io::Result<()> {
        match self.state {
            Some(State::Pass(0)) => self.state = Some(State::Header),
            Some(State::Take(0)) => {
                self.state = Some(State::Header);
                if let Some((opcode, true)) = self.message {
                    self.message = None;
                    let data = inflate(&std::mem::take(&mut self.acc))?;
                    COMPRESSED.fetch_add(1, Ordering::Relaxed);
                    self.out.push(0x80 | opcode);
                    match data.len() {
                        n if n < 126 => self.out.push(n as u8),
                        n if n <= 0xffff => {
                            self.out.push(126);
                            self.out.extend_from_slice(&(n as u16).to_be_bytes());
                        }
                        n => {
                            self.out.push(127);
                            self.out.extend_from_slice(&(n as u64).to_be_bytes());
                        }
                    }
                    self.out.extend_from_slice(&data);
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// The header length its first bytes announce (server frames are not masked).
fn header_len(h: &[u8]) -> usize {
    match h.get(1).map(|b| b & 0x7f) {
        None => 2,
        Some(126) => 4,
        Some(127) => 10,
        Some(_) => 2,
    }
}

/// Inflates one message's payload with a fresh raw inflater.
fn inflate(data: &[u8]) -> io::Result<Vec<u8>> {
    let mut d = Decompress::new(false);
    let mut out = Vec::with_capacity(data.len() * 4 + 64);
    for mut input in [data, &TAIL[..]] {
        loop {
            if out.len() == out.capacity() {
                if out.len() >= MAX_MESSAGE {
                    return Err(io::Error::other("inflated message too big"));
                }
                out.reserve(out.capacity());
            }
            let before = d.total_in();
            let status = d
                .decompress_vec(input, &mut out, FlushDecompress::Sync)
                .map_err(io::Error::other)?;
            input = &input[(d.total_in() - before) as usize..];
            if status == Status::StreamEnd || (input.is_empty() && out.len() < out.capacity()) {
                break;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deflate(data: &[u8]) -> Vec<u8> {
        let mut c = flate2::Compress::new(flate2::Compression::default(), false);
        let mut out = Vec::with_capacity(data.len() + 64);
        c.compress_vec(data, &mut out, flate2::FlushCompress::Sync)
            .unwrap();
        out.truncate(out.len() - 4);
        out
    }

    #[test]
    fn compressed_messages_come_out_plain_after_the_http_answer() {
        let text = "{\"type\":\"bench\",\"pad\":\"".to_string() + &"ab".repeat(300) + "\"}";
        let c = deflate(text.as_bytes());
        let mut input = b"HTTP/1.1 101 Switching\r\nX: y\r\n\r\n".to_vec();
        input.extend_from_slice(&[0x81, 2, b'h', b'i']);
        let (a, b) = c.split_at(c.len() / 2);
        input.extend_from_slice(&[0x41, a.len() as u8]);
        input.extend_from_slice(a);
        input.extend_from_slice(&[0x89, 0]);
        input.extend_from_slice(&[0x80, b.len() as u8]);
        input.extend_from_slice(b);
        let mut layer = Layer::default();
        for piece in input.chunks(3) {
            layer.feed(piece).unwrap();
        }
        let head_end = layer.out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let frames = &layer.out[head_end..];
        assert_eq!(&frames[..4], &[0x81, 2, b'h', b'i']);
        assert_eq!(
            &frames[4..6],
            &[0x89, 0],
            "the ping is passed on as it came"
        );
        assert_eq!(frames[6], 0x81);
        assert_eq!(frames[7], 126);
        let len = usize::from(u16::from_be_bytes([frames[8], frames[9]]));
        assert_eq!(&frames[10..], text.as_bytes());
        assert_eq!(len, text.len());
    }
}
