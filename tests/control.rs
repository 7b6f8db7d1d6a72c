//! Server-side control on one node (docs/protocol.md §14): the API subscribes and unsubscribes
//! every session of a client id (and its later sessions), a token's `subs` joins at connect,
//! a kick closes every tab with 4002 and a block refuses its upgrades until it ends.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

async fn call(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, Value) {
    let (status, _, text) = http(addr, method, path, &[], body).await;
    let v = if text.is_empty() {
        Value::Null
    } else {
        json(&text)
    };
    (status, v)
}

/// The next frame, which must be `subscribed` by the server to `channel`.
async fn server_subscribed(ws: &mut Ws, channel: &str) -> Value {
    let m = recv_json(ws).await;
    assert_eq!(m["type"], "subscribed", "{m}");
    assert_eq!(
        (m["data"]["channel"].as_str(), m["data"]["by"].as_str()),
        (Some(channel), Some("server")),
        "{m}"
    );
    m
}

/// A heartbeat answered next: nothing else was queued before it.
async fn nothing_else(ws: &mut Ws) {
    send_json(ws, r#"{"type":"heartbeat"}"#).await;
    let m = recv_json(ws).await;
    assert_eq!(m["type"], "heartbeat_ack", "{m}");
}

#[tokio::test]
async fn api_subscribe_reaches_every_tab_and_later_sessions_until_unsubscribed() {
    let s = start(config(&[])).await;
    let (mut tab1, _) = connect(s.addr, "alice").await;
    let (mut tab2, _) = connect(s.addr, "alice").await;
    let (mut bob, _) = connect(s.addr, "bob").await;

    let (status, v) = call(
        s.addr,
        "POST",
        "/api/v1/subscribe",
        r#"{"client_id":"alice","channel":"news"}"#,
    )
    .await;
    assert_eq!((status, &v), (200, &json!({"sessions": 2})));
    for ws in [&mut tab1, &mut tab2] {
        server_subscribed(ws, "news").await;
    }
    nothing_else(&mut bob).await;

    // A later session joins at connect, right after its welcome.
    let (mut tab3, _) = connect(s.addr, "alice").await;
    server_subscribed(&mut tab3, "news").await;
    let (status, v) = call(
        s.addr,
        "POST",
        "/api/v1/publish",
        r#"{"channel":"news","type":"post","data":1}"#,
    )
    .await;
    assert_eq!((status, v["delivered"].as_u64()), (200, Some(3)), "{v}");
    for ws in [&mut tab1, &mut tab2, &mut tab3] {
        assert_eq!(recv_json(ws).await["type"], "post");
    }

    let (status, v) = call(
        s.addr,
        "POST",
        "/api/v1/unsubscribe",
        r#"{"client_id":"alice","channel":"news"}"#,
    )
    .await;
    assert_eq!((status, &v), (200, &json!({"sessions": 3})));
    for ws in [&mut tab1, &mut tab2, &mut tab3] {
        let m = recv_json(ws).await;
        assert_eq!(m["type"], "unsubscribed", "{m}");
        assert_eq!(m["data"], json!({"channel": "news", "by": "server"}));
    }
    // Forgotten: a new session joins nothing, and nobody is subscribed.
    let (mut tab4, _) = connect(s.addr, "alice").await;
    nothing_else(&mut tab4).await;
    let (_, v) = call(
        s.addr,
        "POST",
        "/api/v1/publish",
        r#"{"channel":"news","type":"post"}"#,
    )
    .await;
    assert_eq!(v["delivered"], 0, "{v}");
    let text = http(s.addr, "GET", "/metrics", &[], "").await.2;
    assert!(
        text.contains("tether_server_subscribes_total 1\n"),
        "{text}"
    );
    assert!(
        text.contains("tether_server_unsubscribes_total 1\n"),
        "{text}"
    );
    stop(s).await;
}

#[tokio::test]
async fn with_history_a_server_subscribe_resumes_after_since() {
    let s = start(config(&[("history_size", "50")])).await;
    let (mut bob, _) = connect(s.addr, "bob").await;
    send_json(
        &mut bob,
        r#"{"type":"subscribe","data":{"channel":"feed"}}"#,
    )
    .await;
    let sub = recv_json(&mut bob).await;
    let epoch = sub["data"]["epoch"].as_str().unwrap().to_string();
    for n in 1..=3 {
        let body = format!(r#"{{"channel":"feed","type":"item","data":{n}}}"#);
        let (status, v) = call(s.addr, "POST", "/api/v1/publish", &body).await;
        assert_eq!((status, v["seq"].as_u64()), (200, Some(n)), "{v}");
    }
    let (mut alice, _) = connect(s.addr, "alice").await;
    let body = format!(r#"{{"client_id":"alice","channel":"feed","since":"{epoch}:1"}}"#);
    let (status, v) = call(s.addr, "POST", "/api/v1/subscribe", &body).await;
    assert_eq!((status, &v), (200, &json!({"sessions": 1})));
    let m = server_subscribed(&mut alice, "feed").await;
    let d = &m["data"];
    assert_eq!(
        (d["epoch"].as_str(), d["seq"].as_u64()),
        (Some(epoch.as_str()), Some(3))
    );
    assert_eq!(
        (d["recovered"].as_bool(), d["missed"].as_u64()),
        (Some(true), Some(2))
    );
    for n in 2..=3 {
        let m = recv_json(&mut alice).await;
        assert_eq!(
            (m["data"].as_u64(), m["seq"].as_u64()),
            (Some(n), Some(n)),
            "{m}"
        );
    }
    // Then live, with no gap and no duplicate at the joint.
    call(
        s.addr,
        "POST",
        "/api/v1/publish",
        r#"{"channel":"feed","type":"item","data":4}"#,
    )
    .await;
    assert_eq!(recv_json(&mut alice).await["seq"], 4);
    stop(s).await;
}

#[tokio::test]
async fn a_session_at_the_channel_limit_gets_an_error_and_is_not_counted() {
    let s = start(config(&[("max_channels_per_session", "1")])).await;
    let (mut alice, _) = connect(s.addr, "alice").await;
    send_json(
        &mut alice,
        r#"{"type":"subscribe","data":{"channel":"mine"}}"#,
    )
    .await;
    assert_eq!(recv_json(&mut alice).await["type"], "subscribed");
    let (status, v) = call(
        s.addr,
        "POST",
        "/api/v1/subscribe",
        r#"{"client_id":"alice","channel":"extra"}"#,
    )
    .await;
    assert_eq!((status, &v), (200, &json!({"sessions": 0})));
    let e = recv_json(&mut alice).await;
    assert_eq!(
        (e["type"].as_str(), e["data"]["code"].as_str()),
        (Some("error"), Some("too_many_channels")),
        "{e}"
    );
    // One remembered channel per client id at most, too.
    let (status, v) = call(
        s.addr,
        "POST",
        "/api/v1/subscribe",
        r#"{"client_id":"alice","channel":"more"}"#,
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (409, Some("too_many_channels")),
        "{v}"
    );
    stop(s).await;
}

#[tokio::test]
async fn a_token_subs_claim_joins_at_connect_without_a_grant() {
    let dir = TempDir::new("control-auth");
    let secret = "0123456789abcdef0123456789abcdef";
    std::fs::write(dir.join("secret"), secret).unwrap();
    let path = dir.join("secret");
    let s = start(config(&[
        ("auth", "on"),
        ("auth_hmac_secret_file", path.to_str().unwrap()),
    ]))
    .await;
    let key = EncodingKey::from_secret(secret.as_bytes()).unwrap();
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let token = |claims: Value| encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap();
    let t = token(json!({"sub": "alice", "exp": exp, "subs": ["x", "y"]}));
    let (mut ws, _) = {
        let mut ws = connect_raw(s.addr, &format!("/ws?token={t}"))
            .await
            .unwrap();
        let w = recv_json(&mut ws).await;
        assert_eq!(w["type"], "welcome");
        (ws, w)
    };
    server_subscribed(&mut ws, "x").await;
    server_subscribed(&mut ws, "y").await;
    let (_, v) = call(
        s.addr,
        "POST",
        "/api/v1/publish",
        r#"{"channel":"y","type":"t"}"#,
    )
    .await;
    assert_eq!(v["delivered"], 1, "{v}");
    assert_eq!(recv_json(&mut ws).await["channel"], "y");
    // The token grants no channel: the client's own subscribe is still refused.
    send_json(&mut ws, r#"{"type":"subscribe","data":{"channel":"z"}}"#).await;
    let m = recv_json(&mut ws).await;
    assert_eq!(m["data"]["code"], "forbidden", "{m}");
    // A refresh to a token that grants none of them leaves them all; the server's own
    // (remembered, or in the new token's `subs`) are joined again, needing no grant.
    let (status, _) = call(
        s.addr,
        "POST",
        "/api/v1/subscribe",
        r#"{"client_id":"alice","channel":"news"}"#,
    )
    .await;
    assert_eq!(status, 200);
    server_subscribed(&mut ws, "news").await;
    let t2 = token(json!({"sub": "alice", "exp": exp, "subs": ["x"]}));
    send_json(
        &mut ws,
        &json!({"type": "refresh", "data": {"token": t2}}).to_string(),
    )
    .await;
    assert_eq!(recv_json(&mut ws).await["type"], "refreshed");
    let mut left = Vec::new();
    for _ in 0..3 {
        let m = recv_json(&mut ws).await;
        assert_eq!(
            (m["type"].as_str(), m["data"]["reason"].as_str()),
            (Some("unsubscribed"), Some("forbidden")),
            "{m}"
        );
        left.push(m["data"]["channel"].as_str().unwrap().to_string());
    }
    left.sort();
    assert_eq!(left, ["news", "x", "y"]);
    let mut back = Vec::new();
    for _ in 0..2 {
        let m = recv_json(&mut ws).await;
        assert_eq!(
            (m["type"].as_str(), m["data"]["by"].as_str()),
            (Some("subscribed"), Some("server")),
            "{m}"
        );
        back.push(m["data"]["channel"].as_str().unwrap().to_string());
    }
    back.sort();
    assert_eq!(back, ["news", "x"]);
    nothing_else(&mut ws).await;
    // A `subs` claim that is not a list of channel names refuses the token.
    let bad = token(json!({"sub": "alice", "exp": exp, "subs": "x"}));
    let (status, v) = upgrade_status(s.addr, &format!("/ws?token={bad}"), &[]).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (401, Some("unauthorized")),
        "{v}"
    );
    stop(s).await;
}

#[tokio::test]
async fn a_kick_closes_every_tab_with_4002_and_a_block_refuses_until_it_ends() {
    let s = start(config(&[])).await;
    let (mut tab1, _) = connect(s.addr, "alice").await;
    let (mut tab2, _) = connect(s.addr, "alice").await;
    let (mut bob, _) = connect(s.addr, "bob").await;
    let (status, v) = call(s.addr, "DELETE", "/api/v1/clients/alice", "").await;
    assert_eq!((status, &v), (200, &json!({"closed": 2})));
    for ws in [&mut tab1, &mut tab2] {
        let f = recv_close(ws, WAIT).await.expect("a close frame");
        assert_eq!(u16::from(f.code), 4002);
    }
    nothing_else(&mut bob).await;
    // Not blocked: alice may come back at once.
    let (_again, _) = connect(s.addr, "alice").await;

    let (status, v) = call(s.addr, "DELETE", "/api/v1/clients/alice?block_for=1s", "").await;
    assert_eq!((status, v["closed"].as_u64()), (200, Some(1)), "{v}");
    let started = Instant::now();
    let (status, v) = upgrade_status(s.addr, "/ws?client_id=alice", &[]).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (403, Some("blocked")),
        "{v}"
    );
    let (_, list) = call(s.addr, "GET", "/api/v1/blocks", "").await;
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list[0]["client_id"], "alice");
    assert!(list[0]["until"].as_str().unwrap().ends_with('Z'), "{list}");
    let text = http(s.addr, "GET", "/metrics", &[], "").await.2;
    assert!(text.contains("tether_blocks 1\n"), "{text}");
    // Others are not blocked; alice is, until the block ends.
    let (_bob2, _) = connect(s.addr, "bob").await;
    loop {
        let (status, _) = upgrade_status(s.addr, "/ws?client_id=alice", &[]).await;
        if status == 101 {
            break;
        }
        assert_eq!(status, 403);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the block never ended"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(started.elapsed() >= Duration::from_millis(900));

    // A long block, lifted.
    call(s.addr, "DELETE", "/api/v1/clients/carol?block_for=10m", "").await;
    assert_eq!(
        upgrade_status(s.addr, "/ws?client_id=carol", &[]).await.0,
        403
    );
    let (status, v) = call(s.addr, "DELETE", "/api/v1/blocks/carol", "").await;
    assert_eq!((status, v["unblocked"].as_bool()), (200, Some(true)), "{v}");
    let (_carol, _) = connect(s.addr, "carol").await;
    let (status, v) = call(s.addr, "DELETE", "/api/v1/blocks/carol", "").await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (404, Some("unknown_block")),
        "{v}"
    );
    stop(s).await;
}

#[tokio::test]
async fn bad_names_and_durations_are_400() {
    let s = start(config(&[])).await;
    for (method, path, body, code) in [
        (
            "POST",
            "/api/v1/subscribe",
            r#"{"client_id":"","channel":"c"}"#,
            "bad_client_id",
        ),
        (
            "POST",
            "/api/v1/subscribe",
            r#"{"client_id":"a","channel":""}"#,
            "bad_channel",
        ),
        (
            "POST",
            "/api/v1/subscribe",
            r#"{"client_id":"a\u0001","channel":"c"}"#,
            "bad_client_id",
        ),
        (
            "POST",
            "/api/v1/unsubscribe",
            r#"{"client_id":"a","channel":"\u0007"}"#,
            "bad_channel",
        ),
        (
            "POST",
            "/api/v1/subscribe",
            r#"{"client_id":"a"}"#,
            "invalid_body",
        ),
        ("DELETE", "/api/v1/clients/a%01", "", "bad_client_id"),
        (
            "DELETE",
            "/api/v1/clients/a?block_for=soon",
            "",
            "invalid_body",
        ),
        (
            "DELETE",
            "/api/v1/clients/a?block_for=0s",
            "",
            "invalid_body",
        ),
        ("DELETE", "/api/v1/blocks/%01", "", "bad_client_id"),
    ] {
        let (status, v) = call(s.addr, method, path, body).await;
        assert_eq!(
            (status, v["error"]["code"].as_str()),
            (400, Some(code)),
            "{path} {body}: {v}"
        );
    }
    let (status, _) = call(s.addr, "GET", "/api/v1/subscribe", "").await;
    assert_eq!(status, 405);
    stop(s).await;
}

#[tokio::test]
async fn the_embedding_handle_subscribes_kicks_and_blocks() {
    let s = start(config(&[])).await;
    let (mut ws, _) = connect(s.addr, "alice").await;
    let r = s.handle.subscribe("alice", "news", None).await.unwrap();
    assert_eq!((r.sessions, r.partial), (1, false));
    server_subscribed(&mut ws, "news").await;
    assert_eq!(
        s.handle
            .unsubscribe("alice", "news")
            .await
            .unwrap()
            .sessions,
        1
    );
    assert_eq!(recv_json(&mut ws).await["type"], "unsubscribed");
    assert!(matches!(
        s.handle.subscribe("", "news", None).await,
        Err(tether::ControlError::BadClientId(_))
    ));
    let r = s
        .handle
        .kick("alice", Some(Duration::from_secs(600)))
        .await
        .unwrap();
    assert_eq!(r.sessions, 1);
    assert_eq!(
        u16::from(recv_close(&mut ws, WAIT).await.unwrap().code),
        4002
    );
    let blocks = s.handle.blocks().await.unwrap();
    assert_eq!(blocks.len(), 1);
    assert_eq!(blocks[0].0, "alice");
    assert!(blocks[0].1 > SystemTime::now() + Duration::from_secs(500));
    assert_eq!(
        upgrade_status(s.addr, "/ws?client_id=alice", &[]).await.0,
        403
    );
    assert!(s.handle.unblock("alice").await.unwrap());
    assert!(!s.handle.unblock("alice").await.unwrap());
    let (_ws, _) = connect(s.addr, "alice").await;
    stop(s).await;
}
