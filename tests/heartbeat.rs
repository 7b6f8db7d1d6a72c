//! Liveness: silent sessions are evicted with 4001 within timeout + reap interval and their TCP
//! connection ends; clients that only answer Pings, or only send heartbeats, are never evicted.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TIMEOUT_MS: u64 = 400;
const REAP_MS: u64 = 100;
/// Scheduling slack on a shared, noisy 2-core machine.
const SLACK: Duration = Duration::from_millis(750);

fn fast() -> tether::Config {
    config(&[
        ("heartbeat_interval", "200ms"),
        ("heartbeat_timeout", "400ms"),
        ("reap_interval", "100ms"),
    ])
}

/// A WebSocket client written by hand so it can stay completely silent: no Pongs, no close reply.
struct Raw {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    async fn connect(addr: std::net::SocketAddr, client_id: &str) -> Raw {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "GET /ws?client_id={client_id} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut raw = Raw { s, buf: Vec::new() };
        let head_end = loop {
            if let Some(p) = raw.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p;
            }
            assert!(raw.fill().await > 0, "closed during handshake");
        };
        assert!(raw.buf.starts_with(b"HTTP/1.1 101"));
        raw.buf.drain(..head_end + 4);
        raw
    }

    async fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(WAIT, self.s.read(&mut chunk))
            .await
            .expect("read timed out")
            .unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n
    }

    /// Next server frame as (opcode, payload); None at EOF.
    async fn frame(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if self.buf.len() >= 2 {
                let (op, len7) = (self.buf[0] & 0x0f, (self.buf[1] & 0x7f) as usize);
                let (hdr, len) = match len7 {
                    126 if self.buf.len() >= 4 => {
                        (4, u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize)
                    }
                    126 => (usize::MAX, 0),
                    127 => panic!("unexpected huge frame"),
                    n => (2, n),
                };
                if hdr != usize::MAX && self.buf.len() >= hdr + len {
                    let payload = self.buf[hdr..hdr + len].to_vec();
                    self.buf.drain(..hdr + len);
                    return Some((op, payload));
                }
            }
            if self.fill().await == 0 {
                return None;
            }
        }
    }

    /// Sends one masked text frame (clients must mask).
    async fn send_text(&mut self, text: &str) {
        let mask = [0x12u8, 0x34, 0x56, 0x78];
        let p = text.as_bytes();
        assert!(p.len() < 126);
        let mut f = vec![0x81, 0x80 | p.len() as u8];
        f.extend_from_slice(&mask);
        f.extend(p.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.s.write_all(&f).await.unwrap();
    }
}

#[tokio::test]
async fn silent_client_is_closed_4001_in_time_and_its_tcp_ends() {
    let s = start(fast()).await;
    let mut raw = Raw::connect(s.addr, "ghost").await;
    let connected = Instant::now();
    let mut pings = 0;
    let close = loop {
        match raw
            .frame()
            .await
            .expect("connection ended before a close frame")
        {
            (0x8, payload) => break payload,
            (0x9, _) => pings += 1,
            _ => {}
        }
    };
    let evicted_after = connected.elapsed();
    assert_eq!(u16::from_be_bytes([close[0], close[1]]), 4001);
    assert_eq!(&close[2..], b"heartbeat timeout");
    assert!(pings >= 1, "the server pinged before evicting");
    assert!(
        evicted_after >= Duration::from_millis(TIMEOUT_MS),
        "evicted early: {evicted_after:?}"
    );
    assert!(
        evicted_after <= Duration::from_millis(TIMEOUT_MS + REAP_MS) + SLACK,
        "evicted late: {evicted_after:?}"
    );
    // We never answer the close; the server must still drop the TCP connection.
    let eof = tokio::time::timeout(Duration::from_secs(5), async {
        while raw.frame().await.is_some() {}
    });
    assert!(eof.await.is_ok(), "TCP connection left open after eviction");
    let (_, _, metrics) = http(s.addr, "GET", "/metrics", &[], "").await;
    assert!(metrics.contains("tether_evictions_total 1"), "{metrics}");
    assert!(
        metrics.contains("tether_closes_total{code=\"4001\"} 1"),
        "{metrics}"
    );
    stop(s).await;
}

#[tokio::test]
async fn client_that_only_answers_pings_is_never_evicted() {
    let s = start(fast()).await;
    let (mut ws, _) = connect(s.addr, "tab").await;
    // tungstenite answers every Ping while we read; we send nothing of our own for 5 timeouts.
    let hold = Duration::from_millis(TIMEOUT_MS * 5);
    let deadline = tokio::time::Instant::now() + hold;
    let mut pings = 0;
    use futures_util::StreamExt;
    while let Ok(item) = tokio::time::timeout_at(deadline, ws.next()).await {
        match item {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Ping(_))) => pings += 1,
            other => panic!("unexpected {other:?} while idle"),
        }
    }
    assert!(pings >= 5, "only {pings} pings in {hold:?}");
    send_json(&mut ws, r#"{"type":"heartbeat"}"#).await;
    assert_eq!(recv_json(&mut ws).await["type"], "heartbeat_ack");
    stop(s).await;
}

#[tokio::test]
async fn client_that_only_sends_heartbeats_is_never_evicted() {
    let s = start(fast()).await;
    let mut raw = Raw::connect(s.addr, "hb").await;
    let (op, welcome) = raw.frame().await.unwrap();
    assert_eq!(op, 0x1);
    assert!(String::from_utf8(welcome).unwrap().contains("\"welcome\""));
    // Ten heartbeats 150 ms apart span well past the 400 ms timeout; Pings stay unanswered.
    for _ in 0..10 {
        raw.send_text(r#"{"type":"heartbeat"}"#).await;
        loop {
            let (op, payload) = raw.frame().await.expect("evicted while heartbeating");
            assert_ne!(op, 0x8, "closed: {payload:?}");
            if op == 0x1 {
                assert!(
                    String::from_utf8(payload)
                        .unwrap()
                        .contains("heartbeat_ack")
                );
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let (_, _, metrics) = http(s.addr, "GET", "/metrics", &[], "").await;
    assert!(metrics.contains("tether_evictions_total 0"), "{metrics}");
    stop(s).await;
}
