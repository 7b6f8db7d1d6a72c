//! History and resume (docs/protocol.md §8): offline pushes stored and replayed on `since`, exact seqs
//! and order then live ones; `recovered: false` for another epoch, trimmed or expired history
//! and evicted streams; channel resume through `subscribe`; the history endpoint.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

fn history(pairs: &[(&str, &str)]) -> tether::Config {
    let mut all = vec![("history_size", "10")];
    all.extend_from_slice(pairs);
    config(&all)
}

async fn push(addr: std::net::SocketAddr, client: &str, kind: &str) -> (u16, Value) {
    let body = format!(r#"{{"client_id":"{client}","type":"{kind}","data":{{"k":"{kind}"}}}}"#);
    let (status, _, body) = http(addr, "POST", "/api/v1/push", &[], &body).await;
    (status, json(&body))
}

/// Connects with `since` and returns the socket and its welcome.
async fn resume(addr: std::net::SocketAddr, client: &str, since: &str) -> (Ws, Value) {
    let mut ws = connect_raw(addr, &format!("/ws?client_id={client}&since={since}"))
        .await
        .unwrap();
    let welcome = recv_json(&mut ws).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    (ws, welcome)
}

fn epoch(welcome: &Value) -> String {
    welcome["data"]["epoch"]
        .as_str()
        .expect("epoch")
        .to_string()
}

#[tokio::test]
async fn offline_pushes_are_stored_and_replayed_in_order_then_live() {
    let s = start(history(&[])).await;
    let (ws, welcome) = connect(s.addr, "alice").await;
    assert_eq!(welcome["data"]["seq"], 0);
    assert!(welcome["data"].get("recovered").is_none(), "{welcome}");
    let e = epoch(&welcome);
    drop(ws);
    wait_connections(s.addr, 0).await;

    for (i, kind) in ["a", "b", "c"].iter().enumerate() {
        let (status, body) = push(s.addr, "alice", kind).await;
        assert_eq!(status, 202, "{body}");
        assert_eq!(body["stored"], true);
        assert_eq!(body["delivered"], 0);
        assert_eq!(body["seq"], i as u64 + 1);
    }

    let (mut ws, welcome) = resume(s.addr, "alice", &format!("{e}:0")).await;
    assert_eq!(welcome["data"]["recovered"], true, "{welcome}");
    assert_eq!(welcome["data"]["missed"], 3);
    assert_eq!(welcome["data"]["seq"], 3);
    assert_eq!(epoch(&welcome), e);
    for (i, kind) in ["a", "b", "c"].iter().enumerate() {
        let m = recv_json(&mut ws).await;
        assert_eq!(m["type"], *kind, "{m}");
        assert_eq!(m["seq"], i as u64 + 1);
        assert_eq!(m["data"]["k"], *kind);
    }
    let (status, body) = push(s.addr, "alice", "live").await;
    assert_eq!(status, 200);
    assert_eq!(body["delivered"], 1);
    assert_eq!(body["seq"], 4);
    let m = recv_json(&mut ws).await;
    assert_eq!(
        (m["type"].as_str(), m["seq"].as_u64()),
        (Some("live"), Some(4))
    );

    // Resuming from the middle replays only what came after.
    drop(ws);
    let (mut ws, welcome) = resume(s.addr, "alice", &format!("{e}:2")).await;
    assert_eq!(welcome["data"]["missed"], 2);
    assert_eq!(recv_json(&mut ws).await["seq"], 3);
    assert_eq!(recv_json(&mut ws).await["seq"], 4);
    stop(s).await;
}

#[tokio::test]
async fn another_epoch_or_trimmed_history_is_not_recovered() {
    let s = start(history(&[("history_size", "2")])).await;
    for kind in ["a", "b", "c", "d", "e"] {
        assert_eq!(push(s.addr, "bob", kind).await.0, 202);
    }
    let (ws, welcome) = resume(s.addr, "bob", "zzzzzzzz:3").await;
    assert_eq!(welcome["data"]["recovered"], false, "{welcome}");
    assert_eq!(welcome["data"]["missed"], 0);
    assert_eq!(welcome["data"]["seq"], 5);
    let e = epoch(&welcome);
    drop(ws);

    // Only 4 and 5 are kept: from 1 the gap shows, from 3 it is whole.
    let (ws, welcome) = resume(s.addr, "bob", &format!("{e}:1")).await;
    assert_eq!(welcome["data"]["recovered"], false, "{welcome}");
    drop(ws);
    let (mut ws, welcome) = resume(s.addr, "bob", &format!("{e}:3")).await;
    assert_eq!(welcome["data"]["recovered"], true, "{welcome}");
    assert_eq!(welcome["data"]["missed"], 2);
    assert_eq!(recv_json(&mut ws).await["seq"], 4);
    assert_eq!(recv_json(&mut ws).await["seq"], 5);
    drop(ws);

    // A seq ahead of the stream is no position the client could have had.
    let (ws, welcome) = resume(s.addr, "bob", &format!("{e}:9")).await;
    assert_eq!(welcome["data"]["recovered"], false);
    drop(ws);

    // 0:0 is a client with no state: it gets what is still stored, flagged as not the whole.
    let (mut ws, welcome) = resume(s.addr, "bob", "0:0").await;
    assert_eq!(welcome["data"]["recovered"], false);
    assert_eq!(welcome["data"]["missed"], 2);
    assert_eq!(recv_json(&mut ws).await["seq"], 4);
    drop(ws);

    let (_, _, metrics) = http(s.addr, "GET", "/metrics", &[], "").await;
    assert!(
        metrics.contains("tether_resumes_total{outcome=\"recovered\"} 1\n"),
        "{metrics}"
    );
    assert!(metrics.contains("tether_resumes_total{outcome=\"not_recovered\"} 4\n"));
    assert!(metrics.contains("tether_replayed_messages_total 4\n"));
    assert!(metrics.contains("tether_history_messages 2\n"));
    stop(s).await;
}

#[tokio::test]
async fn a_since_that_is_not_a_position_opens_the_session_as_bad_position() {
    let s = start(history(&[])).await;
    assert_eq!(push(s.addr, "x", "stored").await.0, 202);
    for since in [
        "old-format-epoch:3",
        "%FF",
        "abc",
        "nocolon",
        "abc:-1",
        "abc:",
        ":5",
        "a%20b:1",
        "abc:99999999999999999999999",
    ] {
        let (mut ws, welcome) = resume(s.addr, "x", since).await;
        let d = &welcome["data"];
        assert_eq!(d["recovered"], false, "{since}: {welcome}");
        assert_eq!(d["reason"], "bad_position", "{since}: {welcome}");
        assert_eq!(
            (d["seq"].as_u64(), d["missed"].as_u64()),
            (Some(1), Some(1))
        );
        // What is stored comes as to a client without state; then live messages follow.
        let m = recv_json(&mut ws).await;
        assert_eq!(
            (m["type"].as_str(), m["seq"].as_u64()),
            (Some("stored"), Some(1))
        );
        send_json(&mut ws, r#"{"type":"heartbeat"}"#).await;
        assert_eq!(recv_json(&mut ws).await["type"], "heartbeat_ack");
    }
    // A position that parses says nothing of a reason.
    let (_ws, welcome) = resume(s.addr, "x", "0:0").await;
    assert!(welcome["data"].get("reason").is_none(), "{welcome}");
    stop(s).await;

    // With history off there is nothing to resume: `since` is not looked at.
    let s = start(config(&[])).await;
    let (_ws, welcome) = resume(s.addr, "x", "old-format-epoch:3").await;
    assert!(welcome["data"].get("recovered").is_none(), "{welcome}");
    stop(s).await;
}

#[tokio::test]
async fn expired_history_is_gone_after_its_ttl() {
    let s = start(history(&[
        ("history_ttl", "300ms"),
        ("reap_interval", "50ms"),
    ]))
    .await;
    assert_eq!(push(s.addr, "carol", "a").await.0, 202);
    let (_, _, body) = http(s.addr, "GET", "/api/v1/history/carol", &[], "").await;
    let h = json(&body);
    assert_eq!(h["messages"].as_array().unwrap().len(), 1, "{h}");
    let e = h["epoch"].as_str().unwrap().to_string();
    // The reaper's purge empties the store; bounded wait on what it reports.
    let mut emptied = false;
    for _ in 0..100 {
        let (_, _, metrics) = http(s.addr, "GET", "/metrics", &[], "").await;
        if metrics.contains("tether_history_messages 0\n") {
            emptied = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(emptied, "history was never purged");
    let (_ws, welcome) = resume(s.addr, "carol", &format!("{e}:0")).await;
    assert_eq!(welcome["data"]["recovered"], false, "{welcome}");
    assert_eq!(welcome["data"]["seq"], 1);
    stop(s).await;
}

#[tokio::test]
async fn least_recently_used_stream_is_evicted_past_the_limit() {
    let s = start(history(&[("history_max_streams", "2")])).await;
    assert_eq!(push(s.addr, "one", "a").await.0, 202);
    let (_, _, body) = http(s.addr, "GET", "/api/v1/history/one", &[], "").await;
    let e = json(&body)["epoch"].as_str().unwrap().to_string();
    assert_eq!(push(s.addr, "two", "a").await.0, 202);
    assert_eq!(push(s.addr, "three", "a").await.0, 202);
    let (_, _, body) = http(s.addr, "GET", "/api/v1/history/one", &[], "").await;
    let h = json(&body);
    assert_eq!(
        (h["epoch"].as_str(), h["seq"].as_u64()),
        (Some("0"), Some(0)),
        "{h}"
    );
    assert_eq!(h["recovered"], false, "its stored message was evicted: {h}");
    let path = format!("/api/v1/history/one?since={e}:1");
    let (_, _, body) = http(s.addr, "GET", &path, &[], "").await;
    assert_eq!(
        json(&body)["recovered"],
        false,
        "seq 1 went with the evicted stream"
    );
    let (_ws, welcome) = resume(s.addr, "one", &format!("{e}:0")).await;
    assert_eq!(welcome["data"]["recovered"], false, "{welcome}");
    assert_ne!(epoch(&welcome), e, "a re-created stream has a new epoch");
    let (_, _, metrics) = http(s.addr, "GET", "/metrics", &[], "").await;
    assert!(metrics.contains("tether_history_streams 2\n"), "{metrics}");
    assert!(
        metrics.contains("tether_history_evicted_streams_total 1\n"),
        "{metrics}"
    );
    stop(s).await;
}

#[tokio::test]
async fn history_endpoint_lists_what_is_stored_and_is_404_when_off() {
    let s = start(history(&[])).await;
    for kind in ["a", "b", "c"] {
        push(s.addr, "dave", kind).await;
    }
    let (status, _, body) = http(s.addr, "GET", "/api/v1/history/dave", &[], "").await;
    assert_eq!(status, 200);
    let h = json(&body);
    assert_eq!(h["seq"], 3);
    let seqs: Vec<u64> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2, 3]);
    let since = format!(
        "/api/v1/history/dave?since={}:2",
        h["epoch"].as_str().unwrap()
    );
    let (_, _, body) = http(s.addr, "GET", &since, &[], "").await;
    let h = json(&body);
    assert_eq!(h["messages"].as_array().unwrap().len(), 1);
    assert_eq!(h["messages"][0]["type"], "c");
    let (status, _, body) = http(s.addr, "GET", "/api/v1/history/dave?since=bad", &[], "").await;
    assert_eq!(status, 400, "{body}");
    stop(s).await;

    let s = start(config(&[])).await;
    let (status, _, body) = http(s.addr, "GET", "/api/v1/history/dave", &[], "").await;
    assert_eq!(status, 404);
    assert_eq!(json(&body)["error"]["code"], "history_off");
    let (_ws, welcome) = connect(s.addr, "dave").await;
    assert!(welcome["data"].get("epoch").is_none(), "{welcome}");
    stop(s).await;
}

#[tokio::test]
async fn channels_resume_through_subscribe() {
    let s = start(history(&[])).await;
    for i in 1..=2 {
        let body = format!(r#"{{"channel":"news","type":"story","data":{i}}}"#);
        let (status, _, body) = http(s.addr, "POST", "/api/v1/publish", &[], &body).await;
        assert_eq!(status, 200);
        let v = json(&body);
        assert_eq!(
            (v["delivered"].as_u64(), v["seq"].as_u64()),
            (Some(0), Some(i))
        );
    }
    let (mut ws, _) = connect(s.addr, "erin").await;
    send_json(
        &mut ws,
        r#"{"type":"subscribe","id":1,"data":{"channel":"news","since":"0:0"}}"#,
    )
    .await;
    let sub = recv_json(&mut ws).await;
    assert_eq!(sub["type"], "subscribed", "{sub}");
    assert_eq!(sub["id"], 1);
    assert_eq!(sub["data"]["recovered"], true);
    assert_eq!(sub["data"]["missed"], 2);
    assert_eq!(sub["data"]["seq"], 2);
    let e = sub["data"]["epoch"].as_str().unwrap().to_string();
    for i in 1..=2 {
        let m = recv_json(&mut ws).await;
        assert_eq!(
            (m["channel"].as_str(), m["seq"].as_u64()),
            (Some("news"), Some(i))
        );
    }
    assert_eq!(
        s.handle
            .publish("news", "story", Some("3"))
            .await
            .unwrap()
            .delivered,
        1
    );
    assert_eq!(recv_json(&mut ws).await["seq"], 3);

    // A plain subscribe still says where the stream is; a wrong epoch is not recovered.
    send_json(
        &mut ws,
        r#"{"type":"subscribe","data":{"channel":"other"}}"#,
    )
    .await;
    let sub = recv_json(&mut ws).await;
    assert_eq!(sub["data"]["seq"], 0, "{sub}");
    assert!(sub["data"].get("recovered").is_none());
    let again = format!(r#"{{"type":"subscribe","data":{{"channel":"news","since":"x{e}:1"}}}}"#);
    send_json(&mut ws, &again).await;
    let sub = recv_json(&mut ws).await;
    assert_eq!(sub["data"]["recovered"], false, "{sub}");
    stop(s).await;
}

#[tokio::test]
async fn subscribe_with_a_since_that_is_not_a_position_is_answered_bad_position() {
    let s = start(history(&[])).await;
    s.handle.publish("news", "story", Some("1")).await.unwrap();
    let (mut ws, _) = connect(s.addr, "erin").await;
    for since in [r#""1""#, r#""old-format-epoch:3""#, "5", "{}"] {
        let frame =
            format!(r#"{{"type":"subscribe","id":7,"data":{{"channel":"news","since":{since}}}}}"#);
        send_json(&mut ws, &frame).await;
        let sub = recv_json(&mut ws).await;
        assert_eq!(sub["type"], "subscribed", "{since}: {sub}");
        assert_eq!(sub["id"], 7);
        let d = &sub["data"];
        assert_eq!(d["recovered"], false, "{since}: {sub}");
        assert_eq!(d["reason"], "bad_position", "{since}: {sub}");
        assert_eq!(
            (d["seq"].as_u64(), d["missed"].as_u64()),
            (Some(1), Some(1))
        );
        let m = recv_json(&mut ws).await;
        assert_eq!(
            (m["channel"].as_str(), m["seq"].as_u64()),
            (Some("news"), Some(1))
        );
    }
    // `null` is no `since` at all: a plain subscribe.
    send_json(
        &mut ws,
        r#"{"type":"subscribe","data":{"channel":"news","since":null}}"#,
    )
    .await;
    let sub = recv_json(&mut ws).await;
    assert!(sub["data"].get("recovered").is_none(), "{sub}");
    stop(s).await;
}

/// A client `publish` to `channel` with a payload of `pad` bytes; returns the answer.
async fn publish_as(ws: &mut Ws, channel: &str, pad: usize) -> Value {
    let data = "p".repeat(pad);
    let frame = format!(
        r#"{{"type":"publish","data":{{"channel":"{channel}","type":"t","data":"{data}"}}}}"#
    );
    send_json(ws, &frame).await;
    recv_json(ws).await
}

#[tokio::test]
async fn a_message_evicted_by_bytes_makes_start_not_recovered_and_publishes_create_few_streams() {
    let s = start(history(&[
        ("client_publish", "true"),
        ("max_message_size", "128"),
        ("history_max_bytes", "256"),
        ("max_channels_per_session", "3"),
    ]))
    .await;
    assert_eq!(push(s.addr, "victim", "stored").await.0, 202);
    let (mut ws, _) = connect(s.addr, "flooder").await;
    for i in 0..3 {
        let answer = publish_as(&mut ws, &format!("c{i}"), 60).await;
        assert_eq!(answer["type"], "published", "{answer}");
    }
    let (_, _, metrics) = http(s.addr, "GET", "/metrics", &[], "").await;
    let bytes: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tether_history_bytes "))
        .and_then(|v| v.parse().ok())
        .expect("tether_history_bytes");
    assert!(bytes <= 256, "{metrics}");
    // The victim's message went with its stream: a client without state is told so.
    let (_ws, welcome) = resume(s.addr, "victim", "0:0").await;
    assert_eq!(welcome["data"]["recovered"], false, "{welcome}");
    let (_, _, body) = http(s.addr, "GET", "/api/v1/history/victim", &[], "").await;
    assert_eq!(json(&body)["recovered"], false, "{body}");

    // The session's three creations are spent (c0 was evicted, so it would be a fourth).
    for channel in ["c3", "c0"] {
        let answer = publish_as(&mut ws, channel, 1).await;
        assert_eq!(answer["type"], "error", "{answer}");
        assert_eq!(answer["data"]["code"], "too_many_channels", "{answer}");
    }
    assert_eq!(publish_as(&mut ws, "c2", 1).await["type"], "published");
    let (_, _, body) = http(s.addr, "GET", "/api/v1/history/victim", &[], "").await;
    assert_eq!(json(&body)["recovered"], false, "{body}");
    // Nothing of the refused publish was stored; another session creates its own.
    let (mut other, _) = connect(s.addr, "reader").await;
    send_json(
        &mut other,
        r#"{"type":"subscribe","data":{"channel":"c3","since":"0:0"}}"#,
    )
    .await;
    let sub = recv_json(&mut other).await;
    assert_eq!(
        (sub["data"]["seq"].as_u64(), sub["data"]["missed"].as_u64()),
        (Some(0), Some(0)),
        "{sub}"
    );
    // Subscribed itself, it gets the message (seq 1: nothing came before) ahead of the answer.
    let live = publish_as(&mut other, "c3", 1).await;
    assert_eq!(
        (live["type"].as_str(), live["seq"].as_u64()),
        (Some("t"), Some(1))
    );
    assert_eq!(recv_json(&mut other).await["type"], "published");
    stop(s).await;
}
