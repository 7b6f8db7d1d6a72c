//! Reserved types (docs/protocol.md §2): only the server sends `welcome`, `shutdown`, `error`, ...; a
//! client publish using one gets `reserved_type` and reaches nobody, the API answers 400.

mod common;

use common::*;
use serde_json::json;

const RESERVED: [&str; 8] = [
    "welcome",
    "heartbeat_ack",
    "subscribed",
    "unsubscribed",
    "published",
    "refreshed",
    "error",
    "shutdown",
];

#[tokio::test]
async fn a_client_cannot_relay_a_fake_shutdown_to_subscribers() {
    let s = start(config(&[("client_publish", "true")])).await;
    let (mut listener, _) = connect(s.addr, "listener").await;
    let (mut attacker, _) = connect(s.addr, "attacker").await;
    send_json(
        &mut listener,
        r#"{"type":"subscribe","data":{"channel":"room"}}"#,
    )
    .await;
    assert_eq!(recv_json(&mut listener).await["type"], "subscribed");

    for kind in RESERVED {
        // The attack of issue 9: the browser client would wait decades to reconnect.
        let frame = json!({"type": "publish", "data": {"channel": "room", "type": kind,
                           "data": {"mode": "drain", "reconnect_after_ms": 1e12}}});
        send_json(&mut attacker, &frame.to_string()).await;
        let m = recv_json(&mut attacker).await;
        assert_eq!(
            (m["type"].as_str(), m["data"]["code"].as_str()),
            (Some("error"), Some("reserved_type")),
            "{kind}: {m}"
        );
    }
    // An ordinary type still goes through, and it is the first thing the listener sees.
    let chat = r#"{"type":"publish","data":{"channel":"room","type":"chat","data":"hi"}}"#;
    send_json(&mut attacker, chat).await;
    let ack = recv_json(&mut attacker).await;
    assert_eq!(
        (ack["type"].as_str(), &ack["data"]["delivered"]),
        (Some("published"), &json!(1))
    );
    let m = recv_json(&mut listener).await;
    assert_eq!(
        (m["type"].as_str(), &m["data"]),
        (Some("chat"), &json!("hi")),
        "{m}"
    );
    stop(s).await;
}

#[tokio::test]
async fn the_api_refuses_reserved_types_with_400_invalid_body() {
    let s = start(config(&[])).await;
    let (mut ws, _) = connect(s.addr, "target").await;
    send_json(&mut ws, r#"{"type":"subscribe","data":{"channel":"room"}}"#).await;
    recv_json(&mut ws).await;
    for kind in RESERVED {
        for (path, body) in [
            (
                "/api/v1/push",
                json!({"client_id": "target", "type": kind, "data": {}}),
            ),
            ("/api/v1/broadcast", json!({"type": kind, "data": {}})),
            (
                "/api/v1/publish",
                json!({"channel": "room", "type": kind, "data": {}}),
            ),
        ] {
            let (status, _, b) = http(s.addr, "POST", path, &[], &body.to_string()).await;
            assert_eq!(status, 400, "{path} {kind}: {b}");
            assert_eq!(
                json(&b)["error"]["code"],
                "invalid_body",
                "{path} {kind}: {b}"
            );
        }
    }
    // Nothing was delivered: the next frame is the answer to our own heartbeat.
    send_json(&mut ws, r#"{"type":"heartbeat"}"#).await;
    assert_eq!(recv_json(&mut ws).await["type"], "heartbeat_ack");
    stop(s).await;
}
