//! The inbound layer under tungstenite itself: what arrives compressed, fragmented, split at
//! any byte, or hostile, and what tungstenite then reads.

use std::io::{self, Read, Write};

use tokio_tungstenite::tungstenite::protocol::{Role, WebSocket};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::inbound::{Failure, Inflater, failure_of};
use super::{TAIL, compress};

const MAX: usize = 4096;

/// One client frame: masked with `mask` (None: unmasked), RSV1 as given.
fn frame(fin: bool, rsv1: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut f = vec![(u8::from(fin) << 7) | (u8::from(rsv1) << 6) | opcode];
    let m = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => f.push(m | n as u8),
        n if n <= 0xffff => {
            f.push(m | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(m | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(k) => {
            f.extend_from_slice(&k);
            f.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
        }
        None => f.extend_from_slice(payload),
    }
    f
}

const KEY: Option<[u8; 4]> = Some([0x37, 0xfa, 0x21, 0x3d]);

fn deflated(text: &str) -> Vec<u8> {
    compress(text.as_bytes(), 15)
        .expect("compressible")
        .to_vec()
}

fn json(n: usize) -> String {
    let items: Vec<String> = (0..n)
        .map(|i| format!("{{\"n\":{i},\"tag\":\"item\"}}"))
        .collect();
    format!("[{}]", items.join(","))
}

/// A socket whose reads come from `input` in chunks of `chunk` bytes, through the layer.
struct Wire {
    input: Vec<u8>,
    at: usize,
    chunk: usize,
    layer: Inflater,
}

impl Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let (input, at, chunk) = (&self.input, &mut self.at, self.chunk);
        self.layer.read(buf, |b| {
            let n = chunk.min(b.len()).min(input.len() - *at);
            b[..n].copy_from_slice(&input[*at..*at + n]);
            *at += n;
            Ok(n)
        })
    }
}

impl Write for Wire {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What tungstenite reads from `input` split into `chunk`-byte reads, up to the first error.
fn read_all(input: &[u8], chunk: usize) -> (Vec<Message>, Option<WsError>) {
    let wire = Wire {
        input: input.to_vec(),
        at: 0,
        chunk,
        layer: Inflater::new(MAX),
    };
    let mut ws = WebSocket::from_raw_socket(wire, Role::Server, None);
    let mut got = Vec::new();
    loop {
        match ws.read() {
            Ok(m) => got.push(m),
            Err(e) => return (got, Some(e)).into_checked(),
        }
    }
}

trait Checked {
    fn into_checked(self) -> Self;
}

impl Checked for (Vec<Message>, Option<WsError>) {
    /// The end of the input is not an error worth reporting.
    fn into_checked(self) -> Self {
        match self.1 {
            Some(WsError::Protocol(
                tokio_tungstenite::tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
            )) => (self.0, None),
            e => (self.0, e),
        }
    }
}

fn failure(e: &Option<WsError>) -> Option<Failure> {
    match e {
        Some(WsError::Io(e)) => failure_of(e),
        _ => None,
    }
}

#[test]
fn compressed_and_plain_messages_arrive_whatever_the_read_sizes() {
    let big = json(80);
    let mut input = frame(true, false, 1, b"plain", KEY);
    input.extend(frame(true, true, 1, &deflated(&big), KEY));
    input.extend(frame(true, false, 9, b"ping", KEY));
    input.extend(frame(true, true, 2, &deflated("binary binary binary"), KEY));
    for chunk in [1, 2, 3, 7, 64, 1 << 16] {
        let (got, err) = read_all(&input, chunk);
        assert!(err.is_none(), "chunk {chunk}: {err:?}");
        assert_eq!(got.len(), 4, "chunk {chunk}");
        assert_eq!(got[0], Message::text("plain"));
        assert_eq!(got[1], Message::text(big.clone()));
        assert!(matches!(&got[2], Message::Ping(p) if &p[..] == b"ping"));
        assert_eq!(got[3], Message::binary(&b"binary binary binary"[..]));
    }
}

#[test]
fn fragmented_compressed_message_with_a_ping_in_between() {
    let big = json(60);
    let c = deflated(&big);
    let (a, rest) = c.split_at(c.len() / 3);
    let (b, d) = rest.split_at(rest.len() / 2);
    let mut input = frame(false, true, 1, a, KEY);
    input.extend(frame(false, false, 0, b, KEY));
    input.extend(frame(true, false, 9, b"in-between", KEY));
    input.extend(frame(true, false, 0, d, KEY));
    for chunk in [1, 5, 1 << 16] {
        let (got, err) = read_all(&input, chunk);
        assert!(err.is_none(), "{err:?}");
        assert!(
            matches!(&got[0], Message::Ping(_)),
            "the ping is not held back"
        );
        assert_eq!(got[1], Message::text(big.clone()));
    }
}

#[test]
fn empty_compressed_message() {
    let (got, err) = read_all(&frame(true, true, 1, &[0x00], KEY), 1);
    assert!(err.is_none(), "{err:?}");
    assert_eq!(got, vec![Message::text("")]);
    let (got, _) = read_all(&frame(true, true, 2, &[], KEY), 3);
    assert_eq!(got, vec![Message::binary(Vec::new())]);
}

#[test]
fn a_bomb_is_too_big_after_the_good_messages_before_it() {
    let bomb = compress(&vec![b'a'; 1 << 20], 15).unwrap();
    assert!(bomb.len() < MAX, "the bomb itself is small: {}", bomb.len());
    let mut input = frame(true, false, 1, b"before", KEY);
    input.extend(frame(true, true, 1, &bomb, KEY));
    for chunk in [1, 1 << 16] {
        let (got, err) = read_all(&input, chunk);
        assert_eq!(got, vec![Message::text("before")]);
        assert_eq!(failure(&err), Some(Failure::TooBig), "{err:?}");
    }
    // A compressed frame over the limit is refused before its payload is read.
    let noise: Vec<u8> = (0..MAX as u32 + 10)
        .map(|i| (i * 7919 % 251) as u8)
        .collect();
    let (_, err) = read_all(&frame(true, true, 2, &noise, KEY), 1 << 16);
    assert_eq!(failure(&err), Some(Failure::TooBig));
}

#[test]
fn hostile_frames_fail_with_the_right_verdict() {
    let c = deflated(&json(20));
    let (half, rest) = c.split_at(c.len() / 2);
    let cases: Vec<(&str, Vec<u8>, Option<Failure>)> = vec![
        (
            "unmasked compressed frame",
            frame(true, true, 1, &c, None),
            Some(Failure::Protocol),
        ),
        (
            "RSV1 on a continuation",
            [
                frame(false, true, 1, half, KEY),
                frame(true, true, 0, rest, KEY),
            ]
            .concat(),
            Some(Failure::Protocol),
        ),
        (
            "new message mid-message",
            [
                frame(false, true, 1, half, KEY),
                frame(true, false, 1, b"x", KEY),
            ]
            .concat(),
            Some(Failure::Protocol),
        ),
        (
            "not deflate",
            frame(true, true, 1, &[0xff, 0xfe, 0xfd, 0xfc, 0xfb], KEY),
            Some(Failure::Corrupt),
        ),
    ];
    for (what, input, want) in cases {
        let (_, err) = read_all(&input, 3);
        assert_eq!(failure(&err), want, "{what}: {err:?}");
    }
    // What tungstenite judges itself, as without compression: a protocol error.
    for (what, input) in [
        ("RSV1 on a ping", frame(true, true, 9, b"", KEY)),
        ("RSV1 on a lone continuation", frame(true, true, 0, &c, KEY)),
        (
            "RSV1 mid plain fragments",
            [
                frame(false, false, 1, b"a", KEY),
                frame(true, true, 1, &c, KEY),
            ]
            .concat(),
        ),
        ("unmasked plain frame", frame(true, false, 1, b"x", None)),
    ] {
        let (_, err) = read_all(&input, 2);
        assert!(matches!(err, Some(WsError::Protocol(_))), "{what}: {err:?}");
    }
}

#[test]
fn inflated_text_is_still_checked_for_utf8() {
    let bad = compress(
        &[
            b'a', 0xff, 0xfe, b'b', b'b', b'b', b'b', b'b', b'b', b'b', b'b', b'b', b'b',
        ]
        .repeat(20),
        15,
    )
    .unwrap();
    let (_, err) = read_all(&frame(true, true, 1, &bad, KEY), 64);
    assert!(matches!(err, Some(WsError::Utf8(_))), "{err:?}");
}

#[test]
fn a_final_deflate_block_is_accepted() {
    // Some clients end the message with BFINAL instead of a sync flush (RFC 7692 §7.2.3.3).
    let text = json(30);
    let mut c = flate2::Compress::new(flate2::Compression::default(), false);
    let mut out = Vec::with_capacity(text.len() * 2);
    c.compress_vec(text.as_bytes(), &mut out, flate2::FlushCompress::Finish)
        .unwrap();
    assert!(!out.ends_with(&TAIL));
    let (got, err) = read_all(&frame(true, true, 1, &out, KEY), 9);
    assert!(err.is_none(), "{err:?}");
    assert_eq!(got, vec![Message::text(text)]);
}

#[test]
fn bytes_read_past_the_request_go_through_the_layer() {
    let text = json(10);
    let mut layer = Inflater::new(MAX);
    let part = layer.filter_vec(frame(true, true, 1, &deflated(&text), KEY));
    let wire = Wire {
        input: Vec::new(),
        at: 0,
        chunk: 1,
        layer,
    };
    let mut ws = WebSocket::from_partially_read(wire, part, Role::Server, None);
    assert_eq!(ws.read().unwrap(), Message::text(text));
}

/// A session that negotiated deflate pays one boxed pointer for its layer: its future stays
/// within the same budget as the others' (`idle_session_footprint_stays_small`).
#[tokio::test]
async fn a_negotiated_session_keeps_the_idle_footprint() {
    use std::sync::Arc;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let c = tokio::net::TcpStream::connect(l.local_addr().unwrap())
        .await
        .unwrap();
    let cfg = crate::session::ws_config(65536);
    let layer = Box::new(Inflater::new(65536));
    let ws = crate::net::socket::TcpWs::with_inbound(c, None, cfg, layer);
    let shared = Arc::clone(&crate::Server::new(crate::Config::default()).unwrap().shared);
    let slot = shared
        .admissions
        .admit("127.0.0.1".parse().unwrap())
        .unwrap();
    let anyone = crate::session::Identity {
        client_id: None,
        expires_at: None,
        grants: None,
        subs: Vec::new(),
    };
    let remote = "127.0.0.1:1".parse().unwrap();
    let guard = crate::session::prepare(Arc::clone(&shared), anyone, remote, None, slot).await;
    guard.agreed_deflate(15);
    let f = Box::pin(crate::session::open(ws, guard));
    let future = std::mem::size_of_val(&*f);
    assert!(
        future <= 400,
        "negotiated session future grew to {future} bytes"
    );
}

#[test]
fn an_idle_layer_fits_mimallocs_64_byte_class() {
    // Every session that negotiated compression holds one, boxed, for its whole life.
    let size = std::mem::size_of::<Inflater>();
    assert!(size <= 64, "the inbound layer grew to {size} bytes");
}

#[test]
fn the_buffers_of_a_message_are_freed_once_tungstenite_read_it() {
    let big = json(80);
    let mut input = frame(false, true, 1, &deflated(&big)[..10], KEY);
    input.extend(frame(true, false, 0, &deflated(&big)[10..], KEY));
    for chunk in [1, 7, 1 << 16] {
        let wire = Wire {
            input: input.clone(),
            at: 0,
            chunk,
            layer: Inflater::new(MAX),
        };
        let mut ws = WebSocket::from_raw_socket(wire, Role::Server, None);
        assert_eq!(ws.read().ok(), Some(Message::text(big.clone())));
        assert!(!ws.get_ref().layer.holds_buffers(), "chunk {chunk}");
    }
}
