//! Server-side control in a cluster (docs/protocol.md §14) on a real redis-server: an API
//! subscribe on any node reaches the client id's sessions on every node and its later sessions
//! wherever they connect; a kick closes every tab on every node; a block refuses upgrades on
//! every node (also one started after it) until it ends or is lifted.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::redis::{Redis, Topology, node};
use common::*;
use serde_json::{Value, json};

/// Every node signs and checks its messages.
const SECRET: &[(&str, &str)] = &[("cluster_secret", "0123456789abcdef0123456789abcdef")];

async fn call(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, Value) {
    let (status, _, text) = http(addr, method, path, &[], body).await;
    let v = if text.is_empty() {
        Value::Null
    } else {
        json(&text)
    };
    (status, v)
}

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

async fn nothing_else(ws: &mut Ws) {
    send_json(ws, r#"{"type":"heartbeat"}"#).await;
    let m = recv_json(ws).await;
    assert_eq!(m["type"], "heartbeat_ack", "{m}");
}

async fn an_api_subscribe_reaches_every_node_and_later_sessions_anywhere(redis: &impl Topology) {
    let (a, b, c) = (
        node(redis, "a", SECRET).await,
        node(redis, "b", SECRET).await,
        node(redis, "c", SECRET).await,
    );
    let (mut on_a, _) = connect(a.addr, "alice").await;
    let (mut on_b, _) = connect(b.addr, "alice").await;
    let (mut bob, _) = connect(c.addr, "bob").await;

    let (status, v) = call(
        c.addr,
        "POST",
        "/api/v1/subscribe",
        r#"{"client_id":"alice","channel":"news"}"#,
    )
    .await;
    assert_eq!((status, &v), (200, &json!({"sessions": 2})));
    for ws in [&mut on_a, &mut on_b] {
        server_subscribed(ws, "news").await;
    }
    nothing_else(&mut bob).await;

    // A new tab on the third node joins at connect.
    let (mut on_c, _) = connect(c.addr, "alice").await;
    server_subscribed(&mut on_c, "news").await;
    let (status, v) = call(
        b.addr,
        "POST",
        "/api/v1/publish",
        r#"{"channel":"news","type":"post"}"#,
    )
    .await;
    assert_eq!((status, v["delivered"].as_u64()), (200, Some(3)), "{v}");
    for ws in [&mut on_a, &mut on_b, &mut on_c] {
        assert_eq!(recv_json(ws).await["type"], "post");
    }

    // A reconnect to another node keeps the subscription.
    drop(on_a);
    let (mut again, _) = connect(b.addr, "alice").await;
    server_subscribed(&mut again, "news").await;

    let (status, v) = call(
        a.addr,
        "POST",
        "/api/v1/unsubscribe",
        r#"{"client_id":"alice","channel":"news"}"#,
    )
    .await;
    assert_eq!((status, v["sessions"].as_u64()), (200, Some(3)), "{v}");
    for ws in [&mut on_b, &mut on_c, &mut again] {
        let m = recv_json(ws).await;
        assert_eq!(m["data"], json!({"channel": "news", "by": "server"}), "{m}");
    }
    let (mut later, _) = connect(a.addr, "alice").await;
    nothing_else(&mut later).await;
}

async fn with_history_a_server_subscribe_on_another_node_resumes_after_since(
    redis: &impl Topology,
) {
    let h = [SECRET[0], ("history_size", "50")];
    let (a, b) = (node(redis, "a", &h).await, node(redis, "b", &h).await);
    let (mut bob, _) = connect(a.addr, "bob").await;
    send_json(
        &mut bob,
        r#"{"type":"subscribe","data":{"channel":"feed"}}"#,
    )
    .await;
    let epoch = recv_json(&mut bob).await["data"]["epoch"]
        .as_str()
        .unwrap()
        .to_string();
    for n in 1..=3 {
        let body = format!(r#"{{"channel":"feed","type":"item","data":{n}}}"#);
        let (status, v) = call(b.addr, "POST", "/api/v1/publish", &body).await;
        assert_eq!((status, v["seq"].as_u64()), (200, Some(n)), "{v}");
    }
    let (mut alice, _) = connect(b.addr, "alice").await;
    let body = format!(r#"{{"client_id":"alice","channel":"feed","since":"{epoch}:1"}}"#);
    let (status, v) = call(a.addr, "POST", "/api/v1/subscribe", &body).await;
    assert_eq!((status, &v), (200, &json!({"sessions": 1})));
    let m = server_subscribed(&mut alice, "feed").await;
    let d = &m["data"];
    assert_eq!(
        (
            d["seq"].as_u64(),
            d["recovered"].as_bool(),
            d["missed"].as_u64()
        ),
        (Some(3), Some(true), Some(2)),
        "{m}"
    );
    for n in 2..=4 {
        if n == 4 {
            call(
                a.addr,
                "POST",
                "/api/v1/publish",
                r#"{"channel":"feed","type":"item","data":4}"#,
            )
            .await;
        }
        assert_eq!(recv_json(&mut alice).await["seq"], n);
    }
}

/// Upgrades of `client_id` on `addr` until one is accepted (bounded by `within`).
async fn until_accepted(addr: SocketAddr, client_id: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let (status, v) = upgrade_status(addr, &format!("/ws?client_id={client_id}"), &[]).await;
        if status == 101 {
            return;
        }
        assert_eq!(
            (status, v["error"]["code"].as_str()),
            (403, Some("blocked")),
            "{v}"
        );
        assert!(Instant::now() < deadline, "{client_id} stayed blocked");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn a_kick_closes_every_tab_everywhere_and_a_block_holds_on_every_node(redis: &impl Topology) {
    let (a, b, c) = (
        node(redis, "a", SECRET).await,
        node(redis, "b", SECRET).await,
        node(redis, "c", SECRET).await,
    );
    let (mut on_a, _) = connect(a.addr, "alice").await;
    let (mut on_b, _) = connect(b.addr, "alice").await;
    let (status, v) = call(c.addr, "DELETE", "/api/v1/clients/alice?block_for=1s", "").await;
    assert_eq!((status, v["closed"].as_u64()), (200, Some(2)), "{v}");
    for ws in [&mut on_a, &mut on_b] {
        let f = recv_close(ws, WAIT).await.expect("a close frame");
        assert_eq!(u16::from(f.code), 4002);
    }
    for n in [&a, &b, &c] {
        let (status, v) = upgrade_status(n.addr, "/ws?client_id=alice", &[]).await;
        assert_eq!(
            (status, v["error"]["code"].as_str()),
            (403, Some("blocked")),
            "{v}"
        );
    }
    let (_, list) = call(b.addr, "GET", "/api/v1/blocks", "").await;
    assert_eq!(list[0]["client_id"], "alice", "{list}");
    until_accepted(a.addr, "alice", Duration::from_secs(5)).await;
    until_accepted(b.addr, "alice", Duration::from_secs(5)).await;

    // A block set before a node starts holds there too; lifting it holds everywhere.
    let (status, _) = call(a.addr, "DELETE", "/api/v1/clients/carol?block_for=10m", "").await;
    assert_eq!(status, 200);
    let d = node(redis, "d", SECRET).await;
    for n in [&b, &d] {
        assert_eq!(
            upgrade_status(n.addr, "/ws?client_id=carol", &[]).await.0,
            403
        );
    }
    let (status, _) = call(c.addr, "DELETE", "/api/v1/blocks/carol", "").await;
    assert_eq!(status, 200);
    for n in [&a, &b, &d] {
        let (_ws, _) = connect(n.addr, "carol").await;
    }
    let (_, list) = call(d.addr, "GET", "/api/v1/blocks", "").await;
    assert_eq!(list, json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_session_on_another_node_gets_an_error_and_is_not_counted() {
    let redis = Redis::start();
    let h = [SECRET[0], ("max_channels_per_session", "1")];
    let (a, b) = (node(&redis, "a", &h).await, node(&redis, "b", &h).await);
    let (mut full, _) = connect(a.addr, "alice").await;
    let (mut free, _) = connect(b.addr, "alice").await;
    send_json(
        &mut full,
        r#"{"type":"subscribe","data":{"channel":"mine"}}"#,
    )
    .await;
    assert_eq!(recv_json(&mut full).await["type"], "subscribed");
    let (status, v) = call(
        b.addr,
        "POST",
        "/api/v1/subscribe",
        r#"{"client_id":"alice","channel":"news"}"#,
    )
    .await;
    assert_eq!((status, &v), (200, &json!({"sessions": 1})));
    server_subscribed(&mut free, "news").await;
    let e = recv_json(&mut full).await;
    assert_eq!(e["data"]["code"], "too_many_channels", "{e}");
    // The remembered set is bounded the same way, in Redis.
    let (status, v) = call(
        a.addr,
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
}

/// Publishes a `post` to `channel` through the API; how many sessions it reached.
async fn delivered(addr: SocketAddr, channel: &str) -> u64 {
    let body = json!({"channel": channel, "type": "post"}).to_string();
    let (status, v) = call(addr, "POST", "/api/v1/publish", &body).await;
    assert_eq!(status, 200, "{v}");
    v["delivered"].as_u64().unwrap_or(u64::MAX)
}

/// A client's channel commands take effect in the order it sent them, although in a cluster a
/// join waits on Redis while the session goes on reading: `subscribe` then `unsubscribe` sent
/// back to back leave the session out of the channel, answered in order, with or without
/// history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_to_back_channel_commands_take_effect_in_order() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let redis = Redis::start();
    for (id, history) in [("a", "0"), ("b", "10")] {
        let n = node(&redis, id, &[SECRET[0], ("history_size", history)]).await;
        let (mut ws, _) = connect(n.addr, "alice").await;
        // Fed and flushed together, so the node reads all three in one go.
        for frame in [
            r#"{"type":"subscribe","id":1,"data":{"channel":"room"}}"#,
            r#"{"type":"unsubscribe","id":2,"data":{"channel":"room"}}"#,
            r#"{"type":"subscribe","id":3,"data":{"channel":"news"}}"#,
        ] {
            ws.feed(Message::text(frame)).await.expect("feed");
        }
        ws.flush().await.expect("flush");
        for (want, id) in [("subscribed", 1), ("unsubscribed", 2), ("subscribed", 3)] {
            let m = recv_json(&mut ws).await;
            assert_eq!(
                (m["type"].as_str(), m["id"].as_u64()),
                (Some(want), Some(id)),
                "history {history}: {m}"
            );
        }
        assert_eq!(delivered(n.addr, "room").await, 0, "history {history}");
        let (status, v) = call(n.addr, "GET", "/api/v1/channels/room/presence", "").await;
        assert_eq!(
            (status, v["sessions"].as_u64()),
            (200, Some(0)),
            "history {history}: {v}"
        );
        assert_eq!(delivered(n.addr, "news").await, 1, "history {history}");
        let m = recv_json(&mut ws).await;
        assert_eq!(
            (m["type"].as_str(), m["channel"].as_str()),
            (Some("post"), Some("news")),
            "{m}"
        );
        nothing_else(&mut ws).await;
    }
}

/// While a join waits on Redis (here: Redis paused), a session's later channel commands wait
/// behind it, at most 64 of them; the rest are refused with `rate_limited` at once, and the
/// waiting ones are answered in order once Redis answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_commands_waiting_behind_a_join_are_bounded() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let redis = Redis::start();
    let n = node(&redis, "a", &[SECRET[0]]).await;
    let (mut ws, _) = connect(n.addr, "alice").await;
    let paused = redis.command("CLIENT PAUSE 1500 ALL");
    assert!(
        paused.as_deref().is_some_and(|r| r.starts_with("+OK")),
        "{paused:?}"
    );
    let total = 80;
    for i in 0..total {
        let frame = format!(r#"{{"type":"subscribe","id":{i},"data":{{"channel":"c{i}"}}}}"#);
        ws.feed(Message::text(frame)).await.expect("feed");
    }
    ws.flush().await.expect("flush");
    let (mut subscribed, mut refused) = (Vec::new(), Vec::new());
    for _ in 0..total {
        let m = recv_json(&mut ws).await;
        let id = m["id"].as_u64().expect("an id");
        match (m["type"].as_str(), m["data"]["code"].as_str()) {
            (Some("subscribed"), _) => subscribed.push(id),
            (Some("error"), Some("rate_limited")) => refused.push(id),
            _ => panic!("unexpected {m}"),
        }
    }
    // The first one joins, 64 wait behind it, in order; the 15 after them are refused.
    assert_eq!(subscribed, (0..65).collect::<Vec<u64>>());
    assert_eq!(refused, (65..total).collect::<Vec<u64>>());
    nothing_else(&mut ws).await;
}

on_redis_and_cluster!(
    an_api_subscribe_reaches_every_node_and_later_sessions_anywhere,
    a_kick_closes_every_tab_everywhere_and_a_block_holds_on_every_node,
    with_history_a_server_subscribe_on_another_node_resumes_after_since,
);
