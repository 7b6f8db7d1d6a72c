//! The inbound frame layer of a session that negotiated permessage-deflate: between the socket
//! and tungstenite, it passes every frame through untouched except compressed messages, which
//! it collects (RSV1 on the first frame only, continuations and interleaved control frames
//! allowed), inflates with a bound of `max_message_size`, and hands on as one plain, final frame
//! (masked with a zero key, so tungstenite's masking rule still holds for what passes through).
//!
//! What tungstenite can judge it judges: RSV1 on a control or continuation frame outside a
//! compressed message, RSV2/RSV3, unmasked plain frames, bad UTF-8 in the inflated text. The
//! rest ends the read with a [`Failure`], which the session turns into its close code.

use std::io;

use super::inflate;

/// Why the layer stopped reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// A compressed frame, or the message inflated from it, exceeds `max_message_size` (1009).
    TooBig,
    /// The compressed data is not valid deflate (1007: the payload does not fit its type).
    Corrupt,
    /// The frames break RFC 7692 or RFC 6455 in a way tungstenite never sees (1002).
    Protocol,
}

impl Failure {
    /// The WebSocket close code for this failure.
    pub fn close_code(self) -> u16 {
        match self {
            Failure::TooBig => 1009,
            Failure::Corrupt => 1007,
            Failure::Protocol => 1002,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Failure::TooBig => "compressed message over max_message_size",
            Failure::Corrupt => "invalid deflate data",
            Failure::Protocol => "compressed frames out of order",
        })
    }
}

impl std::error::Error for Failure {}

/// The [`Failure`] inside an I/O error the layer returned, if it is one.
pub fn failure_of(e: &io::Error) -> Option<Failure> {
    e.get_ref()?.downcast_ref::<Failure>().copied()
}

/// Where the layer is in the byte stream.
#[derive(Debug, Clone, Copy)]
enum State {
    /// Collecting a frame header in `hdr`.
    Header,
    /// Passing this many payload bytes through.
    Pass(u64),
    /// Collecting this many compressed payload bytes into `acc`.
    Take(u64),
}

/// The inbound layer's state: 64 bytes per session while idle (one allocation of mimalloc's
/// 64-byte class), buffers only while a message is in flight.
pub struct Inflater {
    /// `max_message_size`: bounds compressed frames, collected messages and inflated output.
    max: usize,
    /// Position in the stream.
    state: State,
    /// The header being read (2 to 14 bytes).
    hdr: [u8; 14],
    /// Bytes of `hdr` read so far.
    hdr_len: u8,
    /// Mask key of the compressed frame being collected.
    mask: [u8; 4],
    /// Payload bytes of that frame unmasked so far (the mask index).
    masked_at: u64,
    /// That frame is the message's last.
    fin: bool,
    /// A compressed message is being collected, with this opcode (1 text, 2 binary).
    message: Option<u8>,
    /// A plain fragmented message is passing through: a new data frame may not start now.
    plain_fragments: bool,
    /// Set once the stream is broken; every later read fails with it.
    failed: Option<Failure>,
    /// Allocated only while a compressed message is collected or inflated bytes wait, so an idle
    /// session carries one pointer for both buffers.
    bufs: Option<Box<Buffers>>,
}

/// The buffers of a message in flight.
#[derive(Default)]
struct Buffers {
    /// The collected compressed payload, unmasked.
    acc: Vec<u8>,
    /// Bytes for tungstenite that did not fit where they were read (an inflated message and
    /// what came after it), served before anything new is read.
    pending: Vec<u8>,
    /// How much of `pending` was served.
    served: usize,
}

impl Inflater {
    /// A layer for a session whose largest message is `max` bytes.
    pub fn new(max: usize) -> Inflater {
        Inflater {
            max,
            state: State::Header,
            hdr: [0; 14],
            hdr_len: 0,
            mask: [0; 4],
            masked_at: 0,
            fin: false,
            message: None,
            plain_fragments: false,
            failed: None,
            bufs: None,
        }
    }

    /// One read for tungstenite: what is pending first, then the failure if any, else bytes
    /// from `raw` (the socket), filtered. Never returns 0 unless `raw` reached its end.
    pub fn read(
        &mut self,
        buf: &mut [u8],
        mut raw: impl FnMut(&mut [u8]) -> io::Result<usize>,
    ) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.has_pending() {
                return Ok(self.serve(buf));
            }
            self.check()?;
            let n = raw(buf)?;
            if n == 0 {
                return Ok(0);
            }
            let kept = self.filter(&mut buf[..n]);
            if kept > 0 {
                return Ok(kept);
            }
        }
    }

    /// Filters bytes read before the session started (past the HTTP request): what tungstenite
    /// should see of them, in order; a failure among them is returned by the first read.
    pub fn filter_vec(&mut self, mut part: Vec<u8>) -> Vec<u8> {
        let kept = self.filter(&mut part);
        part.truncate(kept);
        if let Some(b) = &mut self.bufs {
            part.extend_from_slice(&b.pending[b.served..]);
            b.pending = Vec::new();
            b.served = 0;
        }
        self.tidy();
        part
    }

    /// Bytes waiting for tungstenite.
    pub fn has_pending(&self) -> bool {
        self.bufs
            .as_ref()
            .is_some_and(|b| b.served < b.pending.len())
    }

    /// Copies pending bytes into `buf`; frees the buffers once it is all served.
    pub fn serve(&mut self, buf: &mut [u8]) -> usize {
        let Some(b) = &mut self.bufs else { return 0 };
        let rest = &b.pending[b.served..];
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        b.served += n;
        if b.served == b.pending.len() {
            b.pending = Vec::new();
            b.served = 0;
            self.tidy();
        }
        n
    }

    /// The buffers, allocated on first use.
    fn bufs(&mut self) -> &mut Buffers {
        self.bufs.get_or_insert_with(Box::default)
    }

    /// Frees the buffers once neither holds anything.
    fn tidy(&mut self) {
        if self
            .bufs
            .as_ref()
            .is_some_and(|b| b.acc.is_empty() && b.pending.is_empty())
        {
            self.bufs = None;
        }
    }

    /// Whether a message's buffers are allocated.
    #[cfg(test)]
    pub fn holds_buffers(&self) -> bool {
        self.bufs.is_some()
    }

    /// Nothing waits in `pending`.
    fn nothing_pending(&self) -> bool {
        self.bufs.as_ref().is_none_or(|b| b.pending.is_empty())
    }

    /// The failure as an I/O error, once everything before it was served.
    pub fn check(&self) -> io::Result<()> {
        match self.failed {
            Some(f) => Err(io::Error::new(io::ErrorKind::InvalidData, f)),
            None => Ok(()),
        }
    }

    /// Filters freshly read bytes in place: returns how many bytes at the front of `buf` are for
    /// tungstenite now (more may be pending). Plain frames stay where they are; compressed
    /// payload moves into `acc`; an inflated message goes to `pending`, and so does everything
    /// after it in `buf`, to keep the order.
    pub fn filter(&mut self, buf: &mut [u8]) -> usize {
        let (mut r, mut w) = (0, 0);
        while r < buf.len() && self.failed.is_none() {
            match self.state {
                State::Header => {
                    let have = usize::from(self.hdr_len);
                    let need = header_len(&self.hdr[..have]);
                    let take = (need - have).min(buf.len() - r);
                    self.hdr[have..have + take].copy_from_slice(&buf[r..r + take]);
                    self.hdr_len += take as u8;
                    r += take;
                    if usize::from(self.hdr_len)
                        == header_len(&self.hdr[..usize::from(self.hdr_len)])
                    {
                        let hdr = self.hdr;
                        let len = usize::from(self.hdr_len);
                        self.hdr_len = 0;
                        if self.on_header(&hdr[..len]) {
                            self.emit(buf, &mut w, r, &hdr[..len]);
                        }
                    }
                }
                State::Pass(left) => {
                    let k = left.min((buf.len() - r) as u64) as usize;
                    if self.nothing_pending() {
                        buf.copy_within(r..r + k, w);
                        w += k;
                    } else {
                        self.bufs().pending.extend_from_slice(&buf[r..r + k]);
                    }
                    r += k;
                    self.state = State::Pass(left - k as u64);
                }
                State::Take(left) => {
                    let k = left.min((buf.len() - r) as u64) as usize;
                    let (mask, at) = (self.mask, self.masked_at);
                    self.bufs().acc.extend(
                        buf[r..r + k]
                            .iter()
                            .enumerate()
                            .map(|(i, b)| b ^ mask[((at + i as u64) % 4) as usize]),
                    );
                    self.masked_at += k as u64;
                    r += k;
                    self.state = State::Take(left - k as u64);
                }
            }
            self.end_of_payload();
        }
        w
    }

    /// Moves on once the current frame's payload is all read (at once for empty payloads).
    fn end_of_payload(&mut self) {
        match self.state {
            State::Pass(0) => self.state = State::Header,
            State::Take(0) => {
                self.state = State::Header;
                if self.fin {
                    self.finish();
                }
            }
            _ => {}
        }
    }

    /// Hands tungstenite bytes it must see in order: in place while nothing is pending and they
    /// fit behind the bytes already kept, else appended to `pending`.
    fn emit(&mut self, buf: &mut [u8], w: &mut usize, r: usize, bytes: &[u8]) {
        if self.nothing_pending() && *w + bytes.len() <= r {
            buf[*w..*w + bytes.len()].copy_from_slice(bytes);
            *w += bytes.len();
        } else {
            self.bufs().pending.extend_from_slice(bytes);
        }
    }

    /// Decides what to do with the frame whose complete header is `h`; true when it passes
    /// through (its header is to be emitted).
    fn on_header(&mut self, h: &[u8]) -> bool {
        let (fin, rsv1, rsv23) = (h[0] & 0x80 != 0, h[0] & 0x40 != 0, h[0] & 0x30 != 0);
        let opcode = h[0] & 0x0f;
        let len = payload_len(h);
        let is_data = opcode == 1 || opcode == 2;
        let control = opcode >= 8;
        // RSV2/RSV3 mean no extension tether has; mid-fragment, no new message may start.
        let starts_compressed = is_data && rsv1 && !rsv23 && !self.plain_fragments;
        if self.message.is_some() {
            if control {
                self.state = State::Pass(len);
                return true;
            }
            if opcode != 0 || rsv1 || rsv23 {
                // A new message or RSV1 in the middle of a compressed one (RFC 7692 §6.1).
                self.failed = Some(Failure::Protocol);
                return false;
            }
        } else if !starts_compressed {
            // Not a compressed message: tungstenite sees it as sent (and rejects what is wrong).
            if is_data && !fin {
                self.plain_fragments = true;
            } else if opcode == 0 && fin {
                self.plain_fragments = false;
            }
            self.state = State::Pass(len);
            return true;
        }
        // The first or a following frame of a compressed message: collect it.
        if h[1] & 0x80 == 0 {
            // Clients must mask (RFC 6455 §5.1); tungstenite would say the same of a plain frame.
            self.failed = Some(Failure::Protocol);
            return false;
        }
        let collected = self.bufs.as_ref().map_or(0, |b| b.acc.len()) as u64;
        if len > self.max as u64 || collected + len > self.max as u64 {
            self.failed = Some(Failure::TooBig);
            return false;
        }
        if self.message.is_none() {
            self.message = Some(opcode);
        }
        self.mask.copy_from_slice(&h[h.len() - 4..]);
        self.masked_at = 0;
        self.fin = fin;
        self.state = State::Take(len);
        false
    }

    /// The compressed message is complete: inflate it and queue it as one plain frame.
    fn finish(&mut self) {
        let compressed = std::mem::take(&mut self.bufs().acc);
        let opcode = self.message.take().unwrap_or(1);
        match inflate(&compressed, self.max) {
            Ok(data) => {
                let pending = &mut self.bufs().pending;
                pending.reserve(data.len() + 14);
                pending.push(0x80 | opcode);
                let len = data.len();
                if len < 126 {
                    pending.push(0x80 | len as u8);
                } else if let Ok(short) = u16::try_from(len) {
                    pending.push(0x80 | 126);
                    pending.extend_from_slice(&short.to_be_bytes());
                } else {
                    pending.push(0x80 | 127);
                    pending.extend_from_slice(&(len as u64).to_be_bytes());
                }
                // A zero mask key: tungstenite still sees a masked client frame; XOR with 0
                // leaves the payload as it is.
                pending.extend_from_slice(&[0; 4]);
                pending.extend_from_slice(&data);
            }
            Err(f) => self.failed = Some(f),
        }
        self.tidy();
    }
}

/// The full header length the first bytes `h` announce (2 until the second byte is known).
fn header_len(h: &[u8]) -> usize {
    let Some(b1) = h.get(1) else { return 2 };
    let ext = match b1 & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    2 + ext + if b1 & 0x80 != 0 { 4 } else { 0 }
}

/// The payload length of the complete header `h`.
fn payload_len(h: &[u8]) -> u64 {
    match h[1] & 0x7f {
        126 => u64::from(u16::from_be_bytes([h[2], h[3]])),
        127 => {
            let mut b = [0; 8];
            b.copy_from_slice(&h[2..10]);
            u64::from_be_bytes(b)
        }
        n => u64::from(n),
    }
}
