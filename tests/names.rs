//! Client ids and channel names (docs/protocol.md §13): one rule each, the same in the handshake, the
//! API and the engines. An id the handshake refuses (too long, a control character) gets 400
//! `bad_client_id` from every API endpoint that takes one, and nothing is stored for it.

mod common;

use common::*;
use serde_json::Value;

async fn post(addr: std::net::SocketAddr, path: &str, body: &str) -> (u16, Value) {
    let (status, _, b) = http(addr, "POST", path, &[], body).await;
    (status, json(&b))
}

async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, Value) {
    let (status, _, b) = http(addr, "GET", path, &[], "").await;
    (status, json(&b))
}

/// `(status, error code)` of an answer.
fn code(answer: &(u16, Value)) -> (u16, Option<&str>) {
    (answer.0, answer.1["error"]["code"].as_str())
}

/// Every API endpoint that takes a client id, given `id` (as JSON text in the push body and
/// percent-encoded in paths and queries).
async fn every_endpoint(
    addr: std::net::SocketAddr,
    json_id: &str,
    path_id: &str,
) -> Vec<(u16, Value)> {
    vec![
        post(
            addr,
            "/api/v1/push",
            &format!(r#"{{"client_id":"{json_id}","type":"t","data":1}}"#),
        )
        .await,
        get(addr, &format!("/api/v1/presence/{path_id}")).await,
        get(addr, &format!("/api/v1/history/{path_id}")).await,
        get(addr, &format!("/api/v1/sessions?client_id={path_id}")).await,
    ]
}

#[tokio::test]
async fn the_api_refuses_the_client_ids_the_handshake_refuses() {
    // History on: a push to an id nobody holds is stored (202), so a bad id would be kept.
    let s = start(config(&[("history_size", "5")])).await;
    let huge = "a".repeat(900 * 1024);
    let long = "b".repeat(257);
    // Paths carry at most `max_header_size`; the 900 KB id goes in the push body only.
    let push = post(
        s.addr,
        "/api/v1/push",
        &format!(r#"{{"client_id":"{huge}","type":"t","data":1}}"#),
    )
    .await;
    assert_eq!(code(&push), (400, Some("bad_client_id")), "{}", push.1);
    for (json_id, path_id) in [
        (r"a\u0000b", "a%00b"),
        (r"a\u001fb", "a%1Fb"),
        (long.as_str(), long.as_str()),
        (&"c".repeat(10_000), &"c".repeat(10_000)),
    ] {
        for answer in every_endpoint(s.addr, json_id, path_id).await {
            assert_eq!(code(&answer), (400, Some("bad_client_id")), "{}", answer.1);
            let message = answer.1["error"]["message"].as_str().unwrap_or_default();
            assert!(message.contains("256 bytes"), "{message}");
        }
    }
    // The handshake draws the line in the same place: 257 bytes and a NUL are refused there
    // too, 256 bytes pass both.
    for query in [format!("client_id={long}"), "client_id=a%00b".to_string()] {
        let (status, body) = upgrade_status(s.addr, &format!("/ws?{query}"), &[]).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("bad_client_id"))
        );
    }
    let most = "d".repeat(256);
    for answer in every_endpoint(s.addr, &most, &most).await {
        assert!(matches!(answer.0, 200 | 202), "{}", answer.1);
    }
    let (_ws, welcome) = connect(s.addr, &most).await;
    assert_eq!(welcome["type"], "welcome");
    // Only the 256-byte id has a stream: nothing was stored for the refused ones.
    let (_, _, metrics) = http(s.addr, "GET", "/metrics", &[], "").await;
    assert!(metrics.contains("tether_history_streams 1\n"), "{metrics}");
    stop(s).await;
}

#[tokio::test]
async fn channel_names_follow_one_rule_in_the_api_and_in_subscribe() {
    let s = start(config(&[])).await;
    let publish = |name: &str| format!(r#"{{"channel":"{name}","type":"t"}}"#);
    let long = "n".repeat(257);
    for name in ["", long.as_str(), r"news\u0000", r"news\n"] {
        let answer = post(s.addr, "/api/v1/publish", &publish(name)).await;
        assert_eq!(
            code(&answer),
            (400, Some("bad_channel")),
            "{name}: {}",
            answer.1
        );
    }
    let most = "n".repeat(256);
    let answer = post(s.addr, "/api/v1/publish", &publish(&most)).await;
    assert_eq!(answer.0, 200, "{}", answer.1);
    // A client's subscribe draws the line in the same place.
    let (mut ws, _) = connect(s.addr, "reader").await;
    let sub = |name: &str| format!(r#"{{"type":"subscribe","data":{{"channel":"{name}"}}}}"#);
    send_json(&mut ws, &sub(&long)).await;
    assert_eq!(recv_json(&mut ws).await["type"], "error");
    send_json(&mut ws, &sub(&most)).await;
    assert_eq!(recv_json(&mut ws).await["type"], "subscribed");
    stop(s).await;
}
