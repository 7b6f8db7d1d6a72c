//! Push delivery (docs/protocol.md §5): 202 stored vs 404 no_session, pushes to one session id, and
//! idempotency keys that deliver once and answer a retry as the first call was answered.

mod common;

use common::*;
use serde_json::Value;

async fn post(addr: std::net::SocketAddr, path: &str, body: &str) -> (u16, Value) {
    let (status, _, body) = http(addr, "POST", path, &[], body).await;
    (status, json(&body))
}

#[tokio::test]
async fn push_to_an_absent_client_is_stored_with_history_and_404_without() {
    let s = start(config(&[])).await;
    let (status, body) = post(
        s.addr,
        "/api/v1/push",
        r#"{"client_id":"nobody","type":"x"}"#,
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("no_session"))
    );
    stop(s).await;

    let s = start(config(&[("history_size", "5")])).await;
    let (status, body) = post(
        s.addr,
        "/api/v1/push",
        r#"{"client_id":"nobody","type":"x"}"#,
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(
        body,
        serde_json::json!({"delivered":0,"stored":true,"seq":1})
    );
    stop(s).await;
}

#[tokio::test]
async fn push_to_one_session_reaches_only_that_session() {
    let s = start(config(&[("history_size", "5")])).await;
    let (mut tab1, w1) = connect(s.addr, "alice").await;
    let (mut tab2, _) = connect(s.addr, "alice").await;
    let sid = w1["data"]["session_id"].as_str().unwrap().to_string();
    let body = format!(r#"{{"session_id":"{sid}","type":"only","data":1}}"#);
    let (status, answer) = post(s.addr, "/api/v1/push", &body).await;
    assert_eq!(
        (status, answer["delivered"].as_u64()),
        (200, Some(1)),
        "{answer}"
    );
    let m = recv_json(&mut tab1).await;
    assert_eq!(m["type"], "only");
    assert!(
        m.get("seq").is_none(),
        "a session push is outside the client stream: {m}"
    );
    // The other tab's next frame is the client-wide push, not the session one.
    let (status, answer) = post(
        s.addr,
        "/api/v1/push",
        r#"{"client_id":"alice","type":"all"}"#,
    )
    .await;
    assert_eq!((status, answer["delivered"].as_u64()), (200, Some(2)));
    let m = recv_json(&mut tab2).await;
    assert_eq!(
        (m["type"].as_str(), m["seq"].as_u64()),
        (Some("all"), Some(1))
    );
    assert_eq!(recv_json(&mut tab1).await["type"], "all");

    drop(tab1);
    wait_connections(s.addr, 1).await;
    let (status, answer) = post(s.addr, "/api/v1/push", &body).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (404, Some("unknown_session"))
    );
    let (_, _, h) = http(s.addr, "GET", "/api/v1/history/alice", &[], "").await;
    assert_eq!(json(&h)["seq"], 1, "session pushes are not stored");

    for bad in [
        r#"{"type":"x"}"#.to_string(),
        format!(r#"{{"client_id":"alice","session_id":"{sid}","type":"x"}}"#),
    ] {
        let (status, answer) = post(s.addr, "/api/v1/push", &bad).await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (400, Some("invalid_body"))
        );
    }
    stop(s).await;
}

/// Sends `body` twice and checks both answers are the same; returns the answer.
async fn twice(addr: std::net::SocketAddr, path: &str, body: &str) -> (u16, Value) {
    let first = post(addr, path, body).await;
    let second = post(addr, path, body).await;
    assert_eq!(first, second, "a retry must answer as the first call did");
    first
}

#[tokio::test]
async fn idempotent_retries_deliver_once_and_answer_the_same() {
    for history in ["0", "5"] {
        let s = start(config(&[("history_size", history)])).await;
        let (mut ws, _) = connect(s.addr, "bob").await;
        let push = r#"{"client_id":"bob","type":"once","idempotency_key":"job-42"}"#;
        let (status, answer) = twice(s.addr, "/api/v1/push", push).await;
        assert_eq!(
            (status, answer["delivered"].as_u64()),
            (200, Some(1)),
            "{answer}"
        );
        // The same key for another target is another key.
        let other = r#"{"client_id":"carol","type":"once","idempotency_key":"job-42"}"#;
        let (status, _) = post(s.addr, "/api/v1/push", other).await;
        assert_eq!(status, if history == "0" { 404 } else { 202 });

        let publish = r#"{"channel":"c","type":"p","idempotency_key":"job-42"}"#;
        send_json(&mut ws, r#"{"type":"subscribe","data":{"channel":"c"}}"#).await;
        assert_eq!(recv_json(&mut ws).await["type"], "once");
        assert_eq!(recv_json(&mut ws).await["type"], "subscribed");
        let (status, answer) = twice(s.addr, "/api/v1/publish", publish).await;
        assert_eq!((status, answer["delivered"].as_u64()), (200, Some(1)));

        // Exactly one of each arrived: the marker comes right after them.
        s.handle.broadcast("marker", None).await;
        assert_eq!(recv_json(&mut ws).await["type"], "p");
        assert_eq!(recv_json(&mut ws).await["type"], "marker");

        let long = format!(
            r#"{{"client_id":"bob","type":"x","idempotency_key":"{}"}}"#,
            "k".repeat(300)
        );
        let (status, answer) = post(s.addr, "/api/v1/push", &long).await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (400, Some("invalid_body"))
        );
        let (_, _, metrics) = http(s.addr, "GET", "/metrics", &[], "").await;
        assert!(
            metrics.contains("tether_idempotent_repeats_total 2\n"),
            "{metrics}"
        );
        stop(s).await;
    }
}

/// A key reused for another request (other `data`, other `type`) is refused with 422
/// `idempotency_key_reused` and delivers nothing; the first request's retries still answer as
/// it did, and deliver nothing more either.
#[tokio::test]
async fn a_key_reused_with_another_body_gets_422_and_delivers_nothing() {
    let s = start(config(&[])).await;
    let (mut ws, _) = connect(s.addr, "una").await;
    let push = |kind: &str, data: &str| {
        format!(r#"{{"client_id":"una","type":"{kind}","data":{data},"idempotency_key":"pay-1"}}"#)
    };
    let first = post(s.addr, "/api/v1/push", &push("charge", "100")).await;
    assert_eq!((first.0, first.1["delivered"].as_u64()), (200, Some(1)));
    for other in [
        push("charge", "999"),
        push("refund", "100"),
        push("charge", "100.0"),
    ] {
        let (status, answer) = post(s.addr, "/api/v1/push", &other).await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (422, Some("idempotency_key_reused")),
            "{other}: {answer}"
        );
    }
    assert_eq!(
        post(s.addr, "/api/v1/push", &push("charge", "100")).await,
        first
    );
    let publish = |data: &str| {
        format!(r#"{{"channel":"till","type":"t","data":{data},"idempotency_key":"pay-1"}}"#)
    };
    assert_eq!(post(s.addr, "/api/v1/publish", &publish("1")).await.0, 200);
    assert_eq!(post(s.addr, "/api/v1/publish", &publish("2")).await.0, 422);
    // Exactly the first push arrived: the marker comes right after it.
    s.handle.broadcast("marker", None).await;
    let got = recv_json(&mut ws).await;
    assert_eq!(
        (got["type"].as_str(), got["data"].as_u64()),
        (Some("charge"), Some(100))
    );
    assert_eq!(recv_json(&mut ws).await["type"], "marker");
    stop(s).await;
}

#[tokio::test]
async fn a_failed_first_call_is_not_remembered() {
    let s = start(config(&[])).await;
    let push = r#"{"client_id":"late","type":"x","idempotency_key":"k1"}"#;
    assert_eq!(post(s.addr, "/api/v1/push", push).await.0, 404);
    let (_ws, _) = connect(s.addr, "late").await;
    let (status, answer) = post(s.addr, "/api/v1/push", push).await;
    assert_eq!((status, answer["delivered"].as_u64()), (200, Some(1)));
    stop(s).await;
}
