//! permessage-deflate (RFC 7692, docs/protocol.md §11) next to tungstenite, which has none.
//!
//! tungstenite 0.30 fails any frame with RSV1 set and has no extension hook (its
//! permessage-deflate pull request is still open). Rather than fork it or re-implement its
//! protocol state machine (close handshake, pings, fragmentation, UTF-8 checks) on its frame
//! API, tether keeps tungstenite in charge of the protocol and adds deflate at the two edges
//! where it is simple:
//!
//! - **Outbound** a compressed message is a ready-made [`Message::Frame`] with RSV1 set, which
//!   tungstenite writes as it is. A fan-out (broadcast, publish, push to several sessions)
//!   compresses once, lazily on its first negotiated recipient ([`FanOut`]), and every such
//!   recipient queues a clone of the same bytes; the others get the plain frame. Messages to one
//!   session are compressed by its writer ([`outgoing`]). Compression runs on a per-thread
//!   compressor reset for each message: no connection holds compressor state.
//! - **Inbound** ([`inbound`]) a thin frame layer sits between the socket and tungstenite, on
//!   negotiated sessions only: it passes plain and control frames through untouched, and turns
//!   each compressed message into one plain frame, inflated (per-thread inflater, reset per
//!   message) with a bound of `max_message_size`. tungstenite then checks it as usual (UTF-8 of
//!   text, sizes). Everything it cannot judge itself becomes a typed I/O error that the session
//!   maps to its close code ([`failure_of`]): a bomb gets 1009 and harms nobody else.
//!
//! Both edges work on any byte stream, so TLS sessions negotiate compression too ([`stream`]).
//! Negotiation is in [`offer`]: no context takeover either way, server windows 9–15.

pub mod inbound;
pub mod offer;
pub mod stream;

use std::cell::{OnceCell, RefCell};

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

pub use inbound::{Failure, Inflater, failure_of};
pub use offer::{Agreed, negotiate};

/// The empty stored block a sync flush ends with; RFC 7692 §7.2.1 removes it from the wire.
pub const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// zlib level 6 (its default): JSON shrinks well, and a fan-out pays for it only once.
const LEVEL: u32 = 6;

thread_local! {
    /// One compressor per window size (9..=15) per worker thread, made on first use. Shared by
    /// every session the thread runs: with no context takeover, it is reset between messages.
    static COMPRESSORS: RefCell<[Option<Compress>; 7]> = const { RefCell::new([const { None }; 7]) };
    /// One raw inflater (32 KiB window: reads any client window) per worker thread, reset for
    /// each message: with client_no_context_takeover no message depends on an earlier one.
    static INFLATER: RefCell<Option<Decompress>> = const { RefCell::new(None) };
}

/// `payload` compressed as one permessage-deflate message with a window of `window_bits`
/// (9..=15), the trailing `00 00 ff ff` removed. Incompressible data comes out a few bytes
/// larger (stored blocks), and is sent so all the same: what is compressed depends on its size
/// alone (docs/protocol.md §11). None only for a window tether does not offer.
pub fn compress(payload: &[u8], window_bits: u8) -> Option<Bytes> {
    let slot = usize::from(window_bits.checked_sub(9)?);
    COMPRESSORS.with(|c| {
        let mut all = c.try_borrow_mut().ok()?;
        let c = all.get_mut(slot)?.get_or_insert_with(|| {
            Compress::new_with_window_bits(Compression::new(LEVEL), false, window_bits)
        });
        c.reset();
        // JSON shrinks to a fifth or so: half the input is room enough in one go, mostly.
        let mut out = Vec::with_capacity(payload.len() / 2 + 64);
        let start = c.total_in();
        loop {
            let (before_in, before_out) = (c.total_in(), out.len());
            let rest = payload.get((before_in - start) as usize..)?;
            c.compress_vec(rest, &mut out, FlushCompress::Sync).ok()?;
            let consumed = (c.total_in() - start) as usize == payload.len();
            let room = out.len() < out.capacity();
            // Room left after a sync flush means zlib wrote everything it had.
            if consumed && room {
                break;
            }
            if room && c.total_in() == before_in && out.len() == before_out {
                // No progress with input and room left: never seen; send the plain frame.
                return None;
            }
            out.reserve(out.capacity());
        }
        let body = out.strip_suffix(&TAIL)?.len();
        out.truncate(body);
        Some(Bytes::from(out))
    })
}

/// Inflates one message's payload (the `00 00 ff ff` tail added back), at most `max` bytes.
pub fn inflate(compressed: &[u8], max: usize) -> Result<Vec<u8>, Failure> {
    INFLATER.with(|cell| {
        let mut slot = cell.try_borrow_mut().map_err(|_| Failure::Corrupt)?;
        let d = slot.get_or_insert_with(|| Decompress::new(false));
        d.reset(false);
        // A first guess for the output; it grows up to max + 1, where it stops as too big.
        let limit = max.saturating_add(1);
        let mut out = Vec::with_capacity(compressed.len().saturating_mul(4).max(64).min(limit));
        for chunk in [compressed, &TAIL[..]] {
            let mut input = chunk;
            loop {
                if out.len() == out.capacity() {
                    if out.len() >= limit {
                        return Err(Failure::TooBig);
                    }
                    let grow = out.capacity().max(4096).min(limit - out.len());
                    out.reserve_exact(grow);
                }
                let (in0, out0) = (d.total_in(), out.len());
                let status = d
                    .decompress_vec(input, &mut out, FlushDecompress::Sync)
                    .map_err(|_| Failure::Corrupt)?;
                input = &input[(d.total_in() - in0) as usize..];
                if out.len() > max {
                    return Err(Failure::TooBig);
                }
                if status == Status::StreamEnd {
                    // A final block (BFINAL) ends the message; the tail is not needed.
                    return Ok(out);
                }
                let room = out.len() < out.capacity();
                if input.is_empty() && room {
                    break;
                }
                if room && d.total_in() == in0 && out.len() == out0 {
                    // Input left, room left, and no progress: the data is not deflate.
                    return Err(Failure::Corrupt);
                }
            }
        }
        Ok(out)
    })
}

/// A compressed message as a frame tungstenite writes unchanged: one final frame, RSV1 set.
fn frame(data: Bytes, opcode: Data) -> Message {
    let mut f = Frame::message(data, OpCode::Data(opcode), true);
    f.header_mut().rsv1 = true;
    Message::Frame(f)
}

/// The compressed form of a text or binary message of at least `min` bytes; None for other
/// messages and small ones.
fn deflated(msg: &Message, window_bits: u8, min: usize) -> Option<Message> {
    let (payload, opcode) = match msg {
        Message::Text(t) => (t.as_str().as_bytes(), Data::Text),
        Message::Binary(b) => (&b[..], Data::Binary),
        // Control frames are never compressed (RFC 7692 §6.1), and a Frame already is.
        _ => return None,
    };
    if payload.len() < min {
        return None;
    }
    compress(payload, window_bits).map(|d| frame(d, opcode))
}

/// What a session's writer sends for `msg`: compressed when the session agreed to deflate with
/// `window_bits` (0 = it did not) and the message is large enough, else `msg` itself.
pub fn outgoing(msg: Message, window_bits: u8, min: usize) -> Message {
    if window_bits == 0 {
        return msg;
    }
    deflated(&msg, window_bits, min).unwrap_or(msg)
}

/// One message on its way to many sessions, with its compressed forms made on first need: one
/// per window size among the recipients (in practice one, 15 bits), never one per recipient.
pub struct FanOut {
    /// The frame as sessions without compression get it.
    plain: Message,
    /// `compression_min_size`.
    min: usize,
    /// Compressed forms by window bits 9..=15; `Some(None)` when under the minimum size.
    forms: [OnceCell<Option<Message>>; 7],
}

impl FanOut {
    /// `plain` for many recipients; messages of at least `min` bytes go compressed to those that
    /// agreed to deflate.
    pub fn new(plain: Message, min: usize) -> FanOut {
        FanOut {
            plain,
            min,
            forms: Default::default(),
        }
    }

    /// The frame for a session that agreed to `window_bits` (0 = no compression): a clone of the
    /// shared compressed bytes, or of the plain frame.
    pub fn for_session(&self, window_bits: u8) -> Message {
        let form = window_bits
            .checked_sub(9)
            .and_then(|slot| self.forms.get(usize::from(slot)))
            .and_then(|cell| {
                cell.get_or_init(|| deflated(&self.plain, window_bits, self.min))
                    .as_ref()
            });
        form.unwrap_or(&self.plain).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inflates one permessage-deflate payload with a plain zlib inflater, as a client would.
    pub(crate) fn inflate_like_a_client(data: &[u8]) -> Vec<u8> {
        let mut d = flate2::Decompress::new(false);
        let mut input = data.to_vec();
        input.extend_from_slice(&TAIL);
        let mut out = Vec::with_capacity(1 << 20);
        d.decompress_vec(&input, &mut out, flate2::FlushDecompress::Sync)
            .unwrap();
        out
    }

    fn json(n: usize) -> String {
        let items: Vec<String> = (0..n)
            .map(|i| format!("{{\"id\":{i},\"name\":\"player {i}\",\"score\":{}}}", i * 7))
            .collect();
        format!("[{}]", items.join(","))
    }

    #[test]
    fn compressed_messages_round_trip_at_every_window() {
        let text = json(60);
        for bits in 9..=15 {
            let c = compress(text.as_bytes(), bits).unwrap();
            assert!(c.len() < text.len() / 2, "{} of {}", c.len(), text.len());
            assert!(!c.ends_with(&TAIL));
            assert_eq!(inflate_like_a_client(&c), text.as_bytes());
        }
        assert_eq!(compress(b"x", 8), None, "no 8-bit window");
    }

    #[test]
    fn small_messages_and_control_frames_stay_plain() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let noise: Vec<u8> = (0..100_000)
            .map(|_| {
                // xorshift64: bytes deflate cannot shrink; they still go compressed, barely larger.
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        let c = compress(&noise, 15).unwrap();
        assert!(
            c.len() > noise.len() && c.len() < noise.len() + 64,
            "{}",
            c.len()
        );
        assert_eq!(inflate_like_a_client(&c), noise);
        let m = outgoing(Message::text("short"), 15, 512);
        assert!(matches!(m, Message::Text(_)));
        let ping = outgoing(Message::Ping(Bytes::from(json(20))), 15, 0);
        assert!(
            matches!(ping, Message::Ping(_)),
            "control frames are never compressed"
        );
        let not_agreed = outgoing(Message::text(json(60)), 0, 0);
        assert!(matches!(not_agreed, Message::Text(_)));
        let empty = outgoing(Message::text(""), 15, 0);
        let Message::Frame(f) = empty else {
            panic!("min 0 compresses even the empty message")
        };
        assert_eq!(inflate_like_a_client(f.payload()), b"");
    }

    #[test]
    fn a_fan_out_compresses_once_and_shares_the_bytes() {
        let f = FanOut::new(Message::text(json(60)), 512);
        let (Message::Frame(a), Message::Frame(b)) = (f.for_session(15), f.for_session(15)) else {
            panic!("expected compressed frames");
        };
        assert!(a.header().rsv1 && a.header().is_final);
        assert_eq!(
            a.payload().as_ptr(),
            b.payload().as_ptr(),
            "one compression, shared"
        );
        assert!(matches!(f.for_session(0), Message::Text(_)));
        let Message::Frame(small) = f.for_session(10) else {
            panic!("expected a compressed frame for a 10-bit window");
        };
        assert_ne!(small.payload().as_ptr(), a.payload().as_ptr());
        let below = FanOut::new(Message::text("tiny"), 512);
        assert!(matches!(below.for_session(15), Message::Text(_)));
    }
}

#[cfg(test)]
mod inbound_tests;
