//! A session's life: welcome, heartbeat, channels, bad frames, oversized messages.

mod common;

use common::*;
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn welcome_then_heartbeat_ack_with_correlation_id() {
    let s = start(config(&[])).await;
    let (mut ws, welcome) = connect(s.addr, "alice").await;
    let d = &welcome["data"];
    assert_eq!(d["client_id"], "alice");
    assert_eq!(d["heartbeat_interval_ms"], 30_000);
    assert_eq!(d["heartbeat_timeout_ms"], 60_000);
    assert_eq!(d["session_id"].as_str().unwrap().len(), 16);
    let ts = welcome["timestamp"].as_str().unwrap();
    assert!(
        ts.len() == 24 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T',
        "{ts}"
    );

    send_json(&mut ws, r#"{"type":"heartbeat","id":"hb-1"}"#).await;
    let ack = recv_json(&mut ws).await;
    assert_eq!(ack["type"], "heartbeat_ack");
    assert_eq!(ack["id"], "hb-1");
    assert!(ack["timestamp"].is_string());
    stop(s).await;
}

#[tokio::test]
async fn sessions_of_one_client_get_distinct_ids() {
    let s = start(config(&[])).await;
    let (_a, w1) = connect(s.addr, "bob").await;
    let (_b, w2) = connect(s.addr, "bob").await;
    assert_ne!(w1["data"]["session_id"], w2["data"]["session_id"]);
    stop(s).await;
}

#[tokio::test]
async fn subscribe_and_unsubscribe_are_confirmed_and_take_effect() {
    let s = start(config(&[])).await;
    let (mut ws, _) = connect(s.addr, "carol").await;
    send_json(&mut ws, r#"{"type":"subscribe","data":{"channel":"news"}}"#).await;
    let r = recv_json(&mut ws).await;
    assert_eq!(
        (r["type"].as_str(), r["data"]["channel"].as_str()),
        (Some("subscribed"), Some("news"))
    );
    assert_eq!(
        s.handle
            .publish("news", "story", Some("1"))
            .await
            .unwrap()
            .delivered,
        1
    );
    let m = recv_json(&mut ws).await;
    assert_eq!(
        (
            m["type"].as_str(),
            m["channel"].as_str(),
            m["data"].as_i64()
        ),
        (Some("story"), Some("news"), Some(1))
    );

    send_json(
        &mut ws,
        r#"{"type":"unsubscribe","data":{"channel":"news"}}"#,
    )
    .await;
    assert_eq!(recv_json(&mut ws).await["type"], "unsubscribed");
    assert_eq!(
        s.handle
            .publish("news", "story", Some("2"))
            .await
            .unwrap()
            .delivered,
        0
    );
    stop(s).await;
}

#[tokio::test]
async fn bad_frames_get_errors_and_the_connection_stays_usable() {
    let s = start(config(&[])).await;
    let (mut ws, _) = connect(s.addr, "dave").await;
    let cases: [(&str, &str); 5] = [
        ("this is not json", "invalid_json"),
        (r#"{"data":1}"#, "missing_type"),
        (r#"{"type":"dance","id":9}"#, "unknown_type"),
        (
            r#"{"type":"subscribe","data":{"chan":"x"}}"#,
            "invalid_data",
        ),
        (
            r#"{"type":"publish","data":{"channel":"x","type":"t"}}"#,
            "forbidden",
        ),
    ];
    for (frame, code) in cases {
        send_json(&mut ws, frame).await;
        let e = recv_json(&mut ws).await;
        assert_eq!(e["type"], "error", "{frame}");
        assert_eq!(e["data"]["code"], code, "{frame}");
        assert_eq!(e["data"]["original"], frame);
        assert!(!e["data"]["message"].as_str().unwrap().is_empty());
        // Still alive: a heartbeat is answered.
        send_json(&mut ws, r#"{"type":"heartbeat"}"#).await;
        assert_eq!(
            recv_json(&mut ws).await["type"],
            "heartbeat_ack",
            "after {frame}"
        );
    }
    let unknown = {
        send_json(&mut ws, r#"{"type":"dance","id":9}"#).await;
        recv_json(&mut ws).await
    };
    assert_eq!(unknown["id"], 9, "correlation id echoed on errors");

    ws.send(Message::Binary(vec![1u8, 2, 3].into()))
        .await
        .unwrap();
    let e = recv_json(&mut ws).await;
    assert_eq!(e["data"]["code"], "binary_not_supported");
    send_json(&mut ws, r#"{"type":"heartbeat"}"#).await;
    assert_eq!(recv_json(&mut ws).await["type"], "heartbeat_ack");

    let long = format!(r#"{{"type":"x","pad":"{}"}}"#, "é".repeat(400));
    send_json(&mut ws, &long).await;
    let e = recv_json(&mut ws).await;
    assert!(e["data"]["original"].as_str().unwrap().len() <= 256);
    stop(s).await;
}

#[tokio::test]
async fn oversized_message_closes_1009_and_spares_others() {
    let s = start(config(&[("max_message_size", "1024")])).await;
    let (mut big, _) = connect(s.addr, "big").await;
    let (mut other, _) = connect(s.addr, "other").await;
    let payload = format!(r#"{{"type":"heartbeat","pad":"{}"}}"#, "x".repeat(2048));
    // The server may close before the whole frame is written; a failed send is fine.
    let _ = big.send(Message::text(payload)).await;
    let close = recv_close(&mut big, WAIT).await.expect("a close frame");
    assert_eq!(u16::from(close.code), 1009);

    send_json(&mut other, r#"{"type":"heartbeat"}"#).await;
    assert_eq!(recv_json(&mut other).await["type"], "heartbeat_ack");
    assert_eq!(
        s.handle
            .push("other", "still", None)
            .await
            .unwrap()
            .map(|sent| sent.delivered),
        Some(1)
    );
    assert_eq!(recv_json(&mut other).await["type"], "still");
    stop(s).await;
}

#[tokio::test]
async fn client_close_removes_the_session() {
    let s = start(config(&[])).await;
    let (mut ws, _) = connect(s.addr, "erin").await;
    wait_connections(s.addr, 1).await;
    ws.close(None).await.unwrap();
    wait_connections(s.addr, 0).await;
    assert_eq!(
        s.handle
            .push("erin", "x", None)
            .await
            .unwrap()
            .map(|sent| sent.delivered),
        None
    );
    stop(s).await;
}

#[tokio::test]
async fn client_publish_when_allowed_reaches_subscribers() {
    let s = start(config(&[("client_publish", "true")])).await;
    let (mut sub, _) = connect(s.addr, "sub").await;
    send_json(
        &mut sub,
        r#"{"type":"subscribe","data":{"channel":"room"}}"#,
    )
    .await;
    recv_json(&mut sub).await;
    let (mut publ, _) = connect(s.addr, "pub").await;
    send_json(
        &mut publ,
        r#"{"type":"publish","id":"p1","data":{"channel":"room","type":"chat","data":{"t":"hi"}}}"#,
    )
    .await;
    let ack = recv_json(&mut publ).await;
    assert_eq!(
        (
            ack["type"].as_str(),
            ack["data"]["delivered"].as_i64(),
            ack["id"].as_str()
        ),
        (Some("published"), Some(1), Some("p1"))
    );
    let m = recv_json(&mut sub).await;
    assert_eq!(
        (m["type"].as_str(), m["channel"].as_str()),
        (Some("chat"), Some("room"))
    );
    assert_eq!(m["data"]["t"], "hi");
    stop(s).await;
}

#[tokio::test]
async fn with_the_demo_page_off_the_root_can_be_the_websocket_path() {
    let s = start(config(&[("ws_path", "/"), ("demo_page", "false")])).await;
    let mut ws = connect_raw(s.addr, "/?client_id=root").await.unwrap();
    let welcome = recv_json(&mut ws).await;
    assert_eq!(welcome["data"]["client_id"], "root", "{welcome}");
    // The other routes still answer as themselves.
    let (status, _, body) = http(s.addr, "GET", "/health", &[], "").await;
    assert_eq!(
        (status, json(&body)["connections"].as_u64()),
        (200, Some(1))
    );
    stop(s).await;
}
