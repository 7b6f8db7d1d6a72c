//! What a cluster trusts in its Redis (§13): with `cluster_secret`, messages published by
//! anything but a node are dropped and counted; two clusters under different `redis_prefix`
//! share a Redis without hearing each other; and reading positions creates no stream keys,
//! whose lifetime is `history_ttl`.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::redis::{Redis, node};
use common::*;
use serde_json::Value;

const SECRET: &str = "a-cluster-secret-of-some-length";

async fn push(via: SocketAddr, client_id: &str, kind: &str) -> Value {
    let body = format!(r#"{{"client_id":"{client_id}","type":"{kind}"}}"#);
    let (status, _, text) = http(via, "POST", "/api/v1/push", &[], &body).await;
    assert!(status == 200 || status == 202, "{status} {text}");
    json(&text)
}

/// The value of counter `name` in `/metrics` (0 when it is not there).
async fn counter(addr: SocketAddr, name: &str) -> u64 {
    let (_, _, text) = http(addr, "GET", "/metrics", &[], "").await;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

/// Forged node messages, in the layout nodes use today and in the one before signatures: a
/// broadcast `shutdown`, a push to `alice` on node `a`, and a listing request answered to
/// `evil`.
fn forgeries(prefix: &str) -> Vec<(String, Vec<u8>)> {
    let shutdown = r#"{"type":"shutdown","data":{"reason":"forged"}}"#;
    let note = r#"{"type":"forged"}"#;
    let mut out = Vec::new();
    for sig in [" -", ""] {
        out.push((
            format!("{prefix}:all"),
            format!("a evil 1 - 0 0{sig}\n{shutdown}").into_bytes(),
        ));
        out.push((
            format!("{prefix}:to:a"),
            format!("c evil 2 - 0 5{sig}\nalice{note}").into_bytes(),
        ));
        out.push((
            format!("{prefix}:all"),
            format!("p evil 3 - 0 0{sig}\n100").into_bytes(),
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_cluster_secret_forged_node_messages_are_dropped_and_counted() {
    let redis = Redis::start();
    let secret = [("cluster_secret", SECRET)];
    let (a, b) = (
        node(&redis, "a", &secret).await,
        node(&redis, "b", &secret).await,
    );
    let (mut alice, _) = connect(a.addr, "alice").await;
    // Signed node-to-node traffic still flows.
    assert_eq!(push(b.addr, "alice", "first").await["delivered"], 1);
    assert_eq!(recv_json(&mut alice).await["type"], "first");
    let before = counter(a.addr, "tether_cluster_rejected_total").await;
    for (topic, msg) in forgeries("tether") {
        let reply = redis.call(&[b"PUBLISH", topic.as_bytes(), &msg]).unwrap();
        assert!(reply.starts_with(':'), "{reply}");
    }
    // Redis hands node a's subscriber the forgeries before this push: the next frame alice
    // gets is the push, so none of them was obeyed.
    assert_eq!(push(b.addr, "alice", "after").await["delivered"], 1);
    assert_eq!(recv_json(&mut alice).await["type"], "after");
    let rejected = counter(a.addr, "tether_cluster_rejected_total").await - before;
    assert!(rejected >= 3, "rejected {rejected}");

    // Without the secret a cluster obeys the same message (the forgery is well formed).
    let c = node(&redis, "a", &[("redis_prefix", "open")]).await;
    let (mut carol, _) = connect(c.addr, "carol").await;
    let forged = forgeries("open");
    let (topic, msg) = &forged[0];
    redis.call(&[b"PUBLISH", topic.as_bytes(), msg]).unwrap();
    assert_eq!(recv_json(&mut carol).await["type"], "shutdown");
    // But a listing asked for by `evil`, not a listed node, is never published to its topic.
    let (topic, msg) = &forged[2];
    assert!(msg.starts_with(b"p evil 3 - 0 0 -\n"));
    redis.call(&[b"PUBLISH", topic.as_bytes(), msg]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while counter(c.addr, "tether_cluster_replies_dropped_total").await == 0 {
        assert!(
            Instant::now() < deadline,
            "the reply to evil was not dropped"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clusters_with_different_prefixes_share_a_redis_without_crosstalk() {
    let redis = Redis::start();
    // The same node id and client id on both: only the prefix keeps them apart.
    let blue = node(&redis, "n1", &[("redis_prefix", "blue")]).await;
    let green = node(&redis, "n1", &[("redis_prefix", "green")]).await;
    let (mut on_blue, _) = connect(blue.addr, "alice").await;
    let (mut on_green, _) = connect(green.addr, "alice").await;
    assert_eq!(push(blue.addr, "alice", "for-blue").await["delivered"], 1);
    assert_eq!(push(green.addr, "alice", "for-green").await["delivered"], 1);
    assert_eq!(recv_json(&mut on_blue).await["type"], "for-blue");
    assert_eq!(recv_json(&mut on_green).await["type"], "for-green");
    let (status, _, text) = http(
        green.addr,
        "GET",
        "/api/v1/sessions?client_id=alice",
        &[],
        "",
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(json(&text).as_array().map(Vec::len), Some(1), "{text}");
    let keys = redis.call(&[b"KEYS", b"tether:*"]).unwrap();
    assert!(
        keys.starts_with("*0"),
        "nothing under the default prefix: {keys}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_appends_create_streams_and_they_live_history_ttl() {
    let redis = Redis::start();
    // Signed: the append script publishes what Rust signed before Redis numbered it.
    let history = [
        ("history_size", "10"),
        ("history_ttl", "60s"),
        ("cluster_secret", SECRET),
    ];
    let (a, b) = (
        node(&redis, "a", &history).await,
        node(&redis, "b", &history).await,
    );
    let mut epochs = Vec::new();
    let mut sockets = Vec::new();
    for i in 0..5 {
        let (mut ws, welcome) = connect(a.addr, &format!("c{i}")).await;
        send_json(
            &mut ws,
            &format!(r#"{{"type":"subscribe","data":{{"channel":"ch{i}"}}}}"#),
        )
        .await;
        assert_eq!(recv_json(&mut ws).await["type"], "subscribed");
        epochs.push(welcome["data"]["epoch"].as_str().unwrap().to_string());
        sockets.push(ws);
    }
    let keys = redis.call(&[b"KEYS", b"*"]).unwrap();
    assert!(
        !keys.contains("}:m") && !keys.contains("}:l"),
        "a welcome or subscribe created a stream: {keys}"
    );
    // The first append creates the stream, in the epoch the welcome named, for history_ttl.
    let v = push(b.addr, "c0", "m").await;
    assert_eq!(
        (v["seq"].as_u64(), v["delivered"].as_u64()),
        (Some(1), Some(1)),
        "{v}"
    );
    assert_eq!(recv_json(&mut sockets[0]).await["seq"], 1);
    let ttl = redis.call(&[b"PTTL", b"tether:{c:c0}:m"]).unwrap();
    let ms: i64 = ttl.trim().trim_start_matches(':').parse().unwrap();
    assert!((50_000..=60_000).contains(&ms), "meta PTTL {ms}");
    let ttl = redis.call(&[b"PTTL", b"tether:{c:c0}:l"]).unwrap();
    let ms: i64 = ttl.trim().trim_start_matches(':').parse().unwrap();
    assert!((50_000..=60_000).contains(&ms), "history PTTL {ms}");
    let path = format!("/ws?client_id=c0&since={}:0", epochs[0]);
    let mut ws = connect_raw(b.addr, &path).await.unwrap();
    let welcome = recv_json(&mut ws).await;
    assert_eq!(
        (
            welcome["data"]["recovered"].as_bool(),
            welcome["data"]["missed"].as_u64()
        ),
        (Some(true), Some(1)),
        "{welcome}"
    );
    assert_eq!(recv_json(&mut ws).await["seq"], 1);
}

/// `cluster_secret_file` keys the same HMAC as `cluster_secret` (its trailing newline is not
/// part of it), and a node with another secret can neither reach nor be reached by the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secret_may_come_from_a_file_and_another_secret_is_another_cluster() {
    let redis = Redis::start();
    let dir = TempDir::new("cluster-secret");
    let file = dir.join("cluster.key");
    std::fs::write(&file, format!("{SECRET}\n")).unwrap();
    let from_file = [("cluster_secret_file", file.to_str().unwrap())];
    let a = node(&redis, "a", &[("cluster_secret", SECRET)]).await;
    let b = node(&redis, "b", &from_file).await;
    let c = node(
        &redis,
        "c",
        &[("cluster_secret", "another-secret-entirely")],
    )
    .await;
    let (mut alice, _) = connect(a.addr, "alice").await;
    assert_eq!(push(b.addr, "alice", "across").await["delivered"], 1);
    assert_eq!(recv_json(&mut alice).await["type"], "across");
    // Node c's message is dropped by a (and counted), whatever c is told about it.
    let rejected = counter(a.addr, "tether_cluster_rejected_total").await;
    let body = r#"{"client_id":"alice","type":"from-c"}"#;
    let _ = http(c.addr, "POST", "/api/v1/push", &[], body).await;
    let deadline = Instant::now() + WAIT;
    while counter(a.addr, "tether_cluster_rejected_total").await == rejected {
        assert!(
            Instant::now() < deadline,
            "node a never rejected c's message"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The next message alice gets is the next one b sends, not c's.
    assert_eq!(push(b.addr, "alice", "again").await["delivered"], 1);
    assert_eq!(recv_json(&mut alice).await["type"], "again");
    for s in [a, b, c] {
        stop(s).await;
    }
}
