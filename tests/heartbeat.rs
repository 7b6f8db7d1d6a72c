//! Liveness: silent sessions are evicted with 4001 within timeout + reap interval and their TCP
//! connection ends; clients that only answer Pings, or only send heartbeats, are never evicted.

mod common;

use std::time::{Duration, Instant};

use common::*;

const TIMEOUT_MS: u64 = 400;
const REAP_MS: u64 = 100;
/// Scheduling slack on a shared, noisy 2-core machine.
const SLACK: Duration = Duration::from_millis(750);

/// For the clients that must never be evicted: pings every 200 ms, but a timeout of 1 s, so a
/// stall of the shared machine shorter than 800 ms cannot pass for silence.
fn lenient() -> tether::Config {
    config(&[
        ("heartbeat_interval", "200ms"),
        ("heartbeat_timeout", "1s"),
        ("reap_interval", "100ms"),
    ])
}

fn fast() -> tether::Config {
    config(&[
        ("heartbeat_interval", "200ms"),
        ("heartbeat_timeout", "400ms"),
        ("reap_interval", "100ms"),
    ])
}

#[tokio::test]
async fn silent_client_is_closed_4001_in_time_and_its_tcp_ends() {
    let s = start(fast()).await;
    // Taken before the handshake: the server's silence clock starts after it, so "early"
    // below can only mean the server evicted early.
    let connected = Instant::now();
    let mut raw = RawClient::connect(s.addr, "ghost").await;
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
    let s = start(lenient()).await;
    let (mut ws, _) = connect(s.addr, "tab").await;
    // tungstenite answers every Ping while we read; we send nothing of our own for 2.5 timeouts.
    let hold = Duration::from_millis(2500);
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
    let s = start(lenient()).await;
    let mut raw = RawClient::connect(s.addr, "hb").await;
    let (op, welcome) = raw.frame().await.unwrap();
    assert_eq!(op, 0x1);
    assert!(String::from_utf8(welcome).unwrap().contains("\"welcome\""));
    // Ten heartbeats 150 ms apart span past the 1 s timeout; Pings stay unanswered.
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
