//! `POST /api/v1/batch` (docs/protocol.md §14): many commands in one request, each answered in
//! order exactly as its single call would be — errors and idempotency keys included — and the
//! good ones delivered; a batch that is too long or not a batch is refused whole; a batch on a
//! node of a cluster reaches sessions on every node.

mod common;

use std::net::SocketAddr;

use common::redis::{Topology, node};
use common::*;
use serde_json::Value;

async fn batch(addr: SocketAddr, commands: &[String]) -> (u16, Value) {
    let body = format!(r#"{{"commands":[{}]}}"#, commands.join(","));
    let (status, _, text) = http(addr, "POST", "/api/v1/batch", &[], &body).await;
    (status, json(&text))
}

async fn post(addr: SocketAddr, path: &str, body: &str) -> (u16, Value) {
    let (status, _, text) = http(addr, "POST", path, &[], body).await;
    (status, json(&text))
}

fn push(client: &str, kind: &str) -> String {
    format!(r#"{{"push":{{"client_id":"{client}","type":"{kind}","data":{{"k":"{kind}"}}}}}}"#)
}

/// `(status, body)` of every result.
fn results(v: &Value) -> Vec<(u64, Value)> {
    v["results"]
        .as_array()
        .unwrap_or_else(|| panic!("no results: {v}"))
        .iter()
        .map(|r| (r["status"].as_u64().unwrap(), r["body"].clone()))
        .collect()
}

/// The types of the next `n` messages `ws` receives.
async fn types(ws: &mut Ws, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(recv_json(ws).await["type"].as_str().unwrap().to_string());
    }
    out
}

async fn subscribe(ws: &mut Ws, channel: &str) {
    send_json(
        ws,
        &format!(r#"{{"type":"subscribe","data":{{"channel":"{channel}"}}}}"#),
    )
    .await;
    assert_eq!(recv_json(ws).await["type"], "subscribed");
}

#[tokio::test]
async fn a_mixed_batch_answers_each_command_in_order_and_delivers_the_good_ones() {
    let s = start(config(&[])).await;
    let (mut alice, _) = connect(s.addr, "alice").await;
    let (mut bob, _) = connect(s.addr, "bob").await;
    subscribe(&mut bob, "news").await;

    let commands = [
        push("alice", "a1"),
        push("nobody", "lost"),
        push("alice", "welcome"),
        r#"{"publish":{"channel":"news","type":"n1","data":[1]}}"#.to_string(),
        r#"{"push":{"client_id":"alice"}}"#.to_string(),
        r#"{"broadcast":{"type":"all","data":null}}"#.to_string(),
        r#"{"publish":{"channel":"","type":"x"}}"#.to_string(),
        push("alice", "a2"),
    ];
    let (status, v) = batch(s.addr, &commands).await;
    assert_eq!(status, 200, "{v}");
    let r = results(&v);
    let codes: Vec<u64> = r.iter().map(|(s, _)| *s).collect();
    assert_eq!(codes, [200, 404, 400, 200, 400, 200, 400, 200], "{v}");
    assert_eq!(r[0].1, json(r#"{"delivered":1}"#));
    assert_eq!(r[1].1["error"]["code"], "no_session");
    assert_eq!(r[2].1["error"]["code"], "invalid_body");
    assert_eq!(r[3].1, json(r#"{"delivered":1}"#));
    assert_eq!(r[4].1["error"]["code"], "invalid_body");
    assert_eq!(r[5].1, json(r#"{"delivered":2}"#));
    assert_eq!(r[6].1["error"]["code"], "bad_channel");

    // Each is what the single call answers.
    for (i, path, body) in [
        (1, "/api/v1/push", r#"{"client_id":"nobody","type":"lost"}"#),
        (4, "/api/v1/push", r#"{"client_id":"alice"}"#),
        (6, "/api/v1/publish", r#"{"channel":"","type":"x"}"#),
    ] {
        let (status, single) = post(s.addr, path, body).await;
        assert_eq!((status as u64, &single), (r[i].0, &r[i].1), "command {i}");
    }

    assert_eq!(types(&mut alice, 3).await, ["a1", "all", "a2"]);
    assert_eq!(types(&mut bob, 2).await, ["n1", "all"]);

    // Pushes to several client ids interleaved: each client id's arrive in batch order.
    let commands: Vec<String> = (0..30)
        .map(|i| push(["alice", "bob"][i % 2], &format!("o{i}")))
        .collect();
    let (status, _) = batch(s.addr, &commands).await;
    assert_eq!(status, 200);
    let want = |r: usize| {
        (0..30)
            .filter(|i| i % 2 == r)
            .map(|i| format!("o{i}"))
            .collect::<Vec<_>>()
    };
    assert_eq!(types(&mut alice, 15).await, want(0));
    assert_eq!(types(&mut bob, 15).await, want(1));
    stop(s).await;
}

#[tokio::test]
async fn a_batch_too_long_or_of_the_wrong_shape_is_refused_whole() {
    let s = start(config(&[])).await;
    let (mut alice, _) = connect(s.addr, "alice").await;

    let too_many: Vec<String> = (0..1001).map(|_| push("alice", "no")).collect();
    let (status, v) = batch(s.addr, &too_many).await;
    assert_eq!(
        (status, &v["error"]["code"]),
        (400, &json(r#""invalid_body""#))
    );
    assert!(
        v["error"]["message"].as_str().unwrap().contains("1000"),
        "{v}"
    );

    for (body, says) in [
        (r#"{"commands":[]}"#, "1 to 1000"),
        (
            r#"{"commands":[{"pusj":{"client_id":"alice","type":"x"}}]}"#,
            "pusj",
        ),
        (
            r#"{"commands":[{"push":{"client_id":"alice","type":"x"},"broadcast":{"type":"x"}}]}"#,
            "commands[0]",
        ),
        (
            r#"{"commands":[5]}"#,
            "exactly one of push, publish, broadcast",
        ),
        (r#"{"cmds":[]}"#, "cmds"),
    ] {
        let (status, v) = post(s.addr, "/api/v1/batch", body).await;
        assert_eq!(
            (status, &v["error"]["code"]),
            (400, &json(r#""invalid_body""#)),
            "{body}"
        );
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{body}: {message}");
    }

    // Exactly 1000 is a batch: all answered and delivered, in order, after nothing else.
    let full: Vec<String> = (0..1000).map(|i| push("alice", &format!("m{i}"))).collect();
    let (status, v) = batch(s.addr, &full).await;
    assert_eq!(status, 200);
    let r = results(&v);
    assert_eq!(r.len(), 1000);
    assert!(
        r.iter().all(|(s, b)| *s == 200 && b["delivered"] == 1),
        "{v}"
    );
    let got = types(&mut alice, 1000).await;
    let want: Vec<String> = (0..1000).map(|i| format!("m{i}")).collect();
    assert_eq!(got, want);
    stop(s).await;
}

#[tokio::test]
async fn idempotency_keys_hold_per_command_and_a_repeated_batch_delivers_nothing_twice() {
    let s = start(config(&[])).await;
    let (mut alice, _) = connect(s.addr, "alice").await;
    let (mut bob, _) = connect(s.addr, "bob").await;
    subscribe(&mut bob, "news").await;

    let commands = [
        r#"{"push":{"client_id":"alice","type":"t","data":1,"idempotency_key":"k1"}}"#.to_string(),
        r#"{"publish":{"channel":"news","type":"n","idempotency_key":"k1"}}"#.to_string(),
        r#"{"push":{"client_id":"alice","type":"t","data":2,"idempotency_key":"k1"}}"#.to_string(),
        r#"{"push":{"client_id":"alice","type":"u","idempotency_key":"k2"}}"#.to_string(),
    ];
    let (status, first) = batch(s.addr, &commands).await;
    assert_eq!(status, 200);
    let r = results(&first);
    let codes: Vec<u64> = r.iter().map(|(s, _)| *s).collect();
    assert_eq!(codes, [200, 200, 422, 200], "{first}");
    assert_eq!(r[2].1["error"]["code"], "idempotency_key_reused");

    let (status, again) = batch(s.addr, &commands).await;
    assert_eq!(status, 200);
    assert_eq!(again, first, "a repeat answers as the first did");

    // Nothing arrived twice: the marker comes right after the first deliveries.
    post(s.addr, "/api/v1/broadcast", r#"{"type":"marker"}"#).await;
    assert_eq!(types(&mut alice, 3).await, ["t", "u", "marker"]);
    assert_eq!(types(&mut bob, 2).await, ["n", "marker"]);
    stop(s).await;
}

async fn a_batch_on_one_node_reaches_sessions_on_both_nodes_of_a_cluster(redis: &impl Topology) {
    let (a, b) = (node(redis, "a", &[]).await, node(redis, "b", &[]).await);
    let (mut alice, _) = connect(a.addr, "alice").await;
    let (mut bob, _) = connect(b.addr, "bob").await;
    subscribe(&mut bob, "news").await;

    let commands = [
        push("alice", "to-a"),
        push("bob", "to-b"),
        r#"{"publish":{"channel":"news","type":"n"}}"#.to_string(),
        r#"{"broadcast":{"type":"all"}}"#.to_string(),
        push("carol", "none"),
        r#"{"push":{"client_id":"bob","type":"k","idempotency_key":"once"}}"#.to_string(),
    ];
    let (status, v) = batch(a.addr, &commands).await;
    assert_eq!(status, 200, "{v}");
    let r = results(&v);
    let delivered: Vec<(u64, Option<u64>)> = r
        .iter()
        .map(|(s, b)| (*s, b["delivered"].as_u64()))
        .collect();
    assert_eq!(
        delivered,
        [
            (200, Some(1)),
            (200, Some(1)),
            (200, Some(1)),
            (200, Some(2)),
            (404, None),
            (200, Some(1))
        ],
        "{v}"
    );
    // The idempotency key is cluster-wide: the same command through the other node repeats.
    let (_, again) = batch(b.addr, &commands[5..]).await;
    assert_eq!(results(&again)[0], r[5]);

    assert_eq!(types(&mut alice, 2).await, ["to-a", "all"]);
    assert_eq!(types(&mut bob, 4).await, ["to-b", "n", "all", "k"]);
    post(
        b.addr,
        "/api/v1/push",
        r#"{"client_id":"bob","type":"marker"}"#,
    )
    .await;
    assert_eq!(types(&mut bob, 1).await, ["marker"]);
    stop(a).await;
    stop(b).await;
}

on_redis_and_cluster!(a_batch_on_one_node_reaches_sessions_on_both_nodes_of_a_cluster,);
