//! Honest accounting (docs/protocol.md §3, §4): a dropped TCP connection is 1006 in metrics and in the
//! handler, undefined peer codes are bucketed as `other`, a panicking `on_connect` leaves no
//! ghost, an evicted session's TCP ends with its 4001 frame, and session ids are 64-bit and distinct.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::*;
use futures_util::SinkExt;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Reports every `on_disconnect` as (client id, code); panics in `on_connect` for client `bomb`.
struct Recorder(mpsc::UnboundedSender<(String, u16)>);

impl tether::Handler for Recorder {
    fn on_connect(&self, session: &tether::Session<'_>) {
        assert_ne!(
            session.client_id(),
            "bomb",
            "on_connect bug triggered on purpose"
        );
    }
    fn on_disconnect(&self, session: &tether::Session<'_>, code: u16) {
        let _ = self.0.send((session.client_id().to_string(), code));
    }
}

async fn recorded() -> (TestServer, mpsc::UnboundedReceiver<(String, u16)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (start_with(config(&[]), Recorder(tx)).await, rx)
}

async fn next_disconnect(rx: &mut mpsc::UnboundedReceiver<(String, u16)>) -> (String, u16) {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("no on_disconnect in time")
        .unwrap()
}

async fn metrics(s: &TestServer) -> String {
    http(s.addr, "GET", "/metrics", &[], "").await.2
}

#[tokio::test]
async fn a_tcp_drop_without_a_close_frame_is_1006() {
    let (s, mut rx) = recorded().await;
    let (ws, _) = connect(s.addr, "tunnel").await;
    // Dropping the stream closes the TCP connection without a WebSocket close frame, as a
    // phone leaving coverage or a killed browser does.
    drop(ws);
    assert_eq!(next_disconnect(&mut rx).await, ("tunnel".into(), 1006));
    let m = metrics(&s).await;
    assert!(m.contains("tether_closes_total{code=\"1006\"} 1"), "{m}");
    assert!(
        !m.contains("code=\"1002\""),
        "a drop is not a protocol error: {m}"
    );
    stop(s).await;
}

#[tokio::test]
async fn undefined_peer_close_codes_are_counted_as_other() {
    let (s, mut rx) = recorded().await;
    for (client, code) in [("a", 3999), ("b", 4999), ("c", 1000)] {
        let (mut ws, _) = connect(s.addr, client).await;
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: "bye".into(),
        };
        ws.send(Message::Close(Some(frame))).await.unwrap();
        // The server answers the close (its frame reaches the client before the connection
        // ends); then the connection ends.
        let answer = recv_close(&mut ws, WAIT).await;
        assert_eq!(answer.map(|f| u16::from(f.code)), Some(code), "{client}");
        assert_eq!(next_disconnect(&mut rx).await.0, client);
    }
    let m = metrics(&s).await;
    assert!(m.contains("tether_closes_total{code=\"other\"} 2"), "{m}");
    assert!(m.contains("tether_closes_total{code=\"1000\"} 1"), "{m}");
    for peer_chosen in ["3999", "4999"] {
        assert!(!m.contains(&format!("code=\"{peer_chosen}\"")), "{m}");
    }
    stop(s).await;
}

#[tokio::test]
async fn a_panic_in_on_connect_leaves_no_ghost_session() {
    let (s, mut rx) = recorded().await;
    let (_bystander, _) = connect(s.addr, "bystander").await;
    let mut ws = connect_raw(s.addr, "/ws?client_id=bomb").await.unwrap();
    // The session task unwound: the socket ends without a welcome.
    assert!(recv_close(&mut ws, WAIT).await.is_none());
    assert_eq!(next_disconnect(&mut rx).await, ("bomb".into(), 1006));
    wait_connections(s.addr, 1).await;
    let body = r#"{"client_id":"bomb","type":"x","data":{}}"#;
    let (status, _, b) = http(s.addr, "POST", "/api/v1/push", &[], body).await;
    assert_eq!(
        (status, json(&b)["error"]["code"].as_str()),
        (404, Some("no_session")),
        "{b}"
    );
    let (_, _, b) = http(s.addr, "GET", "/api/v1/sessions?client_id=bomb", &[], "").await;
    assert_eq!(json(&b), serde_json::json!([]), "{b}");
    let everyone = r#"{"type":"x","data":{}}"#;
    let (status, _, b) = http(s.addr, "POST", "/api/v1/broadcast", &[], everyone).await;
    assert_eq!(
        (status, json(&b)["delivered"].as_u64()),
        (200, Some(1)),
        "{b}"
    );
    stop(s).await;
}

#[tokio::test]
async fn an_evicted_silent_client_loses_its_tcp_connection_with_the_4001_frame() {
    let s = start(config(&[
        ("heartbeat_interval", "200ms"),
        ("heartbeat_timeout", "400ms"),
        ("reap_interval", "100ms"),
    ]))
    .await;
    let mut raw = RawClient::connect(s.addr, "silent").await;
    let close_at = loop {
        match raw.frame().await.expect("ended before the close frame") {
            (0x8, payload) => {
                assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 4001);
                break Instant::now();
            }
            _ => continue,
        }
    };
    // We never answer the close: the server must not wait for us (it once lingered 2 s).
    while raw.frame().await.is_some() {}
    let lingered = close_at.elapsed();
    assert!(
        // Well under the 2 s close grace it used to wait out, with room for a loaded machine.
        lingered < Duration::from_secs(1),
        "TCP ended {lingered:?} after the close frame"
    );
    wait_connections(s.addr, 0).await;
    stop(s).await;
}

#[tokio::test]
async fn session_ids_are_16_hex_digits_and_distinct() {
    let s = start(config(&[])).await;
    let mut ids = HashSet::new();
    let mut held = Vec::new();
    for i in 0..50 {
        // Half of them one client id, as tabs of one user are.
        let client = if i % 2 == 0 {
            "same-user".to_string()
        } else {
            format!("u{i}")
        };
        let (ws, welcome) = connect(s.addr, &client).await;
        let id = welcome["data"]["session_id"].as_str().unwrap().to_string();
        assert!(
            id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "session id {id:?}"
        );
        assert!(ids.insert(id.clone()), "session id {id} given twice");
        held.push(ws);
    }
    // 64 bits in use, not 32 masked ones: over 50 random-start ids, the high half is not all zero.
    assert!(ids.iter().any(|id| !id.starts_with("00000000")), "{ids:?}");
    stop(s).await;
}
