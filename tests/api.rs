//! The HTTP API (docs/protocol.md §5): push, broadcast, publish, sessions, auth, errors, metrics.

mod common;

use common::*;

async fn post(addr: std::net::SocketAddr, path: &str, body: &str) -> (u16, serde_json::Value) {
    let (status, _, b) = http(addr, "POST", path, &[], body).await;
    (status, json(&b))
}

#[tokio::test]
async fn push_reaches_every_session_of_the_client_and_counts_them() {
    let s = start(config(&[])).await;
    let (mut tab1, _) = connect(s.addr, "4064c2b2-user").await;
    let (mut tab2, _) = connect(s.addr, "4064c2b2-user").await;
    let (mut other, _) = connect(s.addr, "someone-else").await;
    let body = r#"{"client_id":"4064c2b2-user","type":"task_finished","data":{"success":true,"message":"Task Finish","payload":{"taskType":"insignia_background_processing","duration":1234.56,"status":"success"}}}"#;
    let (status, v) = post(s.addr, "/api/v1/push", body).await;
    assert_eq!((status, v["delivered"].as_u64()), (200, Some(2)));
    for ws in [&mut tab1, &mut tab2] {
        let m = recv_json(ws).await;
        assert_eq!(m["type"], "task_finished");
        assert_eq!(m["data"]["payload"]["duration"], 1234.56);
    }
    // The other client got nothing: its next message is the ack to its own heartbeat.
    send_json(&mut other, r#"{"type":"heartbeat"}"#).await;
    assert_eq!(recv_json(&mut other).await["type"], "heartbeat_ack");

    let (status, v) = post(
        s.addr,
        "/api/v1/push",
        r#"{"client_id":"nobody","type":"x","data":{}}"#,
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (404, Some("no_session"))
    );
    stop(s).await;
}

#[tokio::test]
async fn data_passes_through_byte_for_byte() {
    let s = start(config(&[])).await;
    let (mut ws, _) = connect(s.addr, "bytes").await;
    let data = r#"{"z":1,"a":[1,2.50,-0],"big":123456789012345678901234567890,"text":"héllo ✓ \u00e9 \"q\"","nested":{"k":null}}"#;
    let body = format!(r#"{{"client_id":"bytes","type":"t","data":{data}}}"#);
    assert_eq!(post(s.addr, "/api/v1/push", &body).await.0, 200);
    let text = recv_text(&mut ws).await;
    assert!(text.ends_with(&format!(r#","data":{data}}}"#)), "{text}");
    stop(s).await;
}

#[tokio::test]
async fn broadcast_and_publish_count_recipients() {
    let s = start(config(&[])).await;
    let (mut a, _) = connect(s.addr, "a").await;
    let (mut b, _) = connect(s.addr, "b").await;
    send_json(
        &mut a,
        r#"{"type":"subscribe","data":{"channel":"scores"}}"#,
    )
    .await;
    recv_json(&mut a).await;

    let (status, v) = post(
        s.addr,
        "/api/v1/broadcast",
        r#"{"type":"notice","data":"maintenance at 5"}"#,
    )
    .await;
    assert_eq!((status, v["delivered"].as_u64()), (200, Some(2)));
    assert_eq!(recv_json(&mut a).await["data"], "maintenance at 5");
    assert_eq!(recv_json(&mut b).await["type"], "notice");

    let (status, v) = post(
        s.addr,
        "/api/v1/publish",
        r#"{"channel":"scores","type":"goal","data":{"team":"x"}}"#,
    )
    .await;
    assert_eq!((status, v["delivered"].as_u64()), (200, Some(1)));
    let m = recv_json(&mut a).await;
    assert_eq!(
        (m["type"].as_str(), m["channel"].as_str()),
        (Some("goal"), Some("scores"))
    );
    let (status, v) = post(
        s.addr,
        "/api/v1/publish",
        r#"{"channel":"empty","type":"goal"}"#,
    )
    .await;
    assert_eq!((status, v["delivered"].as_u64()), (200, Some(0)));
    stop(s).await;
}

#[tokio::test]
async fn malformed_requests_get_400_saying_what_is_wrong() {
    let s = start(config(&[])).await;
    let cases = [
        ("/api/v1/push", "not json", "invalid_json"),
        ("/api/v1/push", "", "invalid_json"),
        ("/api/v1/push", r#"{"type":"x"}"#, "invalid_body"),
        (
            "/api/v1/push",
            r#"{"client_id":5,"type":"x"}"#,
            "invalid_body",
        ),
        (
            "/api/v1/push",
            r#"{"client_id":"a","type":"x","extra":1}"#,
            "invalid_body",
        ),
        ("/api/v1/broadcast", r#"{"data":1}"#, "invalid_body"),
        (
            "/api/v1/publish",
            r#"{"channel":"","type":"x"}"#,
            "bad_channel",
        ),
    ];
    for (path, body, code) in cases {
        let (status, v) = post(s.addr, path, body).await;
        assert_eq!(
            (status, v["error"]["code"].as_str()),
            (400, Some(code)),
            "{path} {body}"
        );
        assert!(!v["error"]["message"].as_str().unwrap().is_empty());
    }
    let (_, v) = post(s.addr, "/api/v1/push", r#"{"type":"x"}"#).await;
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("client_id"),
        "{v}"
    );

    let big = format!(r#"{{"type":"x","data":"{}"}}"#, "a".repeat(1_100_000));
    let (status, v) = post(s.addr, "/api/v1/broadcast", &big).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (413, Some("body_too_large"))
    );

    let (status, head, body) = http(s.addr, "GET", "/api/v1/push", &[], "").await;
    assert_eq!(
        (status, json(&body)["error"]["code"].as_str()),
        (405, Some("method_not_allowed"))
    );
    assert!(head.to_ascii_lowercase().contains("allow: post"));
    let (status, _, body) = http(s.addr, "GET", "/api/v1/nothing", &[], "").await;
    assert_eq!(
        (status, json(&body)["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    stop(s).await;
}

#[tokio::test]
async fn api_key_is_required_when_configured() {
    let s = start(config(&[("api_key", "s3cret")])).await;
    let (_ws, _) = connect(s.addr, "k").await;
    let body = r#"{"client_id":"k","type":"x"}"#;
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Bearer s3cre"),
        Some("s3cret"),
    ] {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
        let (status, _, b) = http(s.addr, "POST", "/api/v1/push", &headers, body).await;
        assert_eq!(
            (status, json(&b)["error"]["code"].as_str()),
            (401, Some("unauthorized")),
            "{auth:?}"
        );
    }
    let (status, _, b) = http(
        s.addr,
        "POST",
        "/api/v1/push",
        &[("Authorization", "Bearer s3cret")],
        body,
    )
    .await;
    assert_eq!((status, json(&b)["delivered"].as_u64()), (200, Some(1)));
    // /health stays open for load balancers.
    assert_eq!(http(s.addr, "GET", "/health", &[], "").await.0, 200);
    stop(s).await;
}

#[tokio::test]
async fn sessions_can_be_listed_and_closed_with_4002() {
    let s = start(config(&[])).await;
    let (mut ws, welcome) = connect(s.addr, "op").await;
    let (_other, _) = connect(s.addr, "other").await;
    send_json(&mut ws, r#"{"type":"subscribe","data":{"channel":"c1"}}"#).await;
    recv_json(&mut ws).await;
    let id = welcome["data"]["session_id"].as_str().unwrap().to_string();

    let (_, _, body) = http(s.addr, "GET", "/api/v1/sessions", &[], "").await;
    assert_eq!(json(&body).as_array().unwrap().len(), 2);
    let (status, _, body) = http(s.addr, "GET", "/api/v1/sessions?client_id=op", &[], "").await;
    let list = json(&body);
    assert_eq!(status, 200);
    let row = &list[0];
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(row["session_id"], id.as_str());
    assert_eq!(row["client_id"], "op");
    assert_eq!(row["channels"], serde_json::json!(["c1"]));
    assert!(
        row["remote_addr"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert!(row["connected_at"].as_str().unwrap().ends_with('Z'));
    assert!(row["last_seen_ms_ago"].as_u64().unwrap() < 10_000);

    let (status, _, _) = http(s.addr, "DELETE", &format!("/api/v1/sessions/{id}"), &[], "").await;
    assert_eq!(status, 200);
    let close = recv_close(&mut ws, WAIT).await.expect("close frame");
    assert_eq!(u16::from(close.code), 4002);
    let (status, _, body) = http(
        s.addr,
        "DELETE",
        "/api/v1/sessions/0000000000000000",
        &[],
        "",
    )
    .await;
    assert_eq!(
        (status, json(&body)["error"]["code"].as_str()),
        (404, Some("unknown_session"))
    );
    stop(s).await;
}

#[tokio::test]
async fn broadcast_order_is_kept_per_client() {
    let s = start(config(&[])).await;
    let (mut ws, _) = connect(s.addr, "ordered").await;
    const N: usize = 200;
    for i in 0..N {
        let (status, _) = post(
            s.addr,
            "/api/v1/broadcast",
            &format!(r#"{{"type":"n","data":{i}}}"#),
        )
        .await;
        assert_eq!(status, 200);
    }
    for i in 0..N {
        assert_eq!(recv_json(&mut ws).await["data"], i as u64);
    }
    stop(s).await;
}

#[tokio::test]
async fn slow_consumer_is_closed_4003_while_others_get_everything() {
    let s = start(config(&[("send_queue", "16")])).await;
    // A raw TCP client that completes the handshake and then never reads a byte.
    let mut stuck = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    {
        use tokio::io::AsyncWriteExt;
        let req = "GET /ws?client_id=stuck HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                   Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
        stuck.write_all(req.as_bytes()).await.unwrap();
    }
    let (mut good, _) = connect(s.addr, "good").await;
    wait_connections(s.addr, 2).await;

    // 16 KiB messages fill the socket buffers of the non-reader, then its queue overflows.
    let payload = "x".repeat(16 * 1024);
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        for _ in 0..400 {
            let m = recv_json(&mut good).await;
            got.push(m["data"]["i"].as_u64().unwrap());
        }
        got
    });
    for i in 0..400 {
        let body = format!(r#"{{"type":"burst","data":{{"i":{i},"pad":"{payload}"}}}}"#);
        let (status, _) = post(s.addr, "/api/v1/broadcast", &body).await;
        assert_eq!(status, 200);
    }
    let got = tokio::time::timeout(WAIT, reader)
        .await
        .expect("good client starved")
        .unwrap();
    assert_eq!(
        got,
        (0..400).collect::<Vec<u64>>(),
        "the healthy client lost or reordered messages"
    );
    let (_, _, metrics) = http(s.addr, "GET", "/metrics", &[], "").await;
    assert!(
        metrics.contains("tether_slow_consumer_closes_total 1"),
        "{metrics}"
    );
    wait_connections(s.addr, 1).await;
    drop(stuck);
    stop(s).await;
}

#[tokio::test]
async fn metrics_are_prometheus_text_and_move_with_events() {
    let s = start(config(&[])).await;
    let (_, _, before) = http(s.addr, "GET", "/metrics", &[], "").await;
    let (mut ws, _) = connect(s.addr, "m").await;
    send_json(&mut ws, r#"{"type":"heartbeat"}"#).await;
    recv_json(&mut ws).await;
    post(s.addr, "/api/v1/push", r#"{"client_id":"m","type":"x"}"#).await;
    post(
        s.addr,
        "/api/v1/push",
        r#"{"client_id":"nobody","type":"x"}"#,
    )
    .await;
    let (status, head, after) = http(s.addr, "GET", "/metrics", &[], "").await;
    assert_eq!(status, 200);
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4")
    );
    let value = |text: &str, series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
            .map_or(0.0, |v| v.parse().unwrap())
    };
    // Every sample line is `name{labels} value` with a HELP and TYPE before its family.
    for line in after.lines().filter(|l| !l.starts_with('#')) {
        let (name, v) = line.rsplit_once(' ').unwrap();
        assert!(v.parse::<f64>().is_ok(), "{line}");
        let family = name.split('{').next().unwrap();
        assert!(family.starts_with("tether_"), "{line}");
        assert!(after.contains(&format!("# TYPE {family} ")), "{line}");
    }
    assert_eq!(value(&after, "tether_connections"), 1.0);
    assert_eq!(
        value(&after, "tether_connections_accepted_total")
            - value(&before, "tether_connections_accepted_total"),
        1.0
    );
    assert!(value(&after, "tether_messages_received_total") >= 1.0);
    assert!(value(&after, "tether_messages_sent_total") >= 2.0);
    assert_eq!(
        value(
            &after,
            "tether_api_requests_total{endpoint=\"push\",result=\"ok\"}"
        ),
        1.0
    );
    assert_eq!(
        value(
            &after,
            "tether_api_requests_total{endpoint=\"push\",result=\"no_session\"}"
        ),
        1.0
    );
    assert!(after.contains("tether_build_info{version="));
    stop(s).await;
}

#[tokio::test]
async fn a_push_near_the_api_body_limit_reaches_the_client_whole() {
    let s = start(config(&[])).await;
    let (mut ws, _) = connect(s.addr, "big").await;
    let (mut small, _) = connect(s.addr, "small").await;
    // ~1 MB of data: far more than one socket write, and more than tungstenite's default
    // write-buffer limit that once ended such sessions.
    let pad = "z".repeat(1_000_000);
    let body = format!(r#"{{"client_id":"big","type":"blob","data":{{"pad":"{pad}"}}}}"#);
    let (status, v) = post(s.addr, "/api/v1/push", &body).await;
    assert_eq!((status, v["delivered"].as_u64()), (200, Some(1)));
    let m = recv_json(&mut ws).await;
    assert_eq!(m["data"]["pad"].as_str().map(str::len), Some(1_000_000));
    send_json(&mut ws, r#"{"type":"heartbeat"}"#).await;
    assert_eq!(
        recv_json(&mut ws).await["type"],
        "heartbeat_ack",
        "session survived"
    );
    send_json(&mut small, r#"{"type":"heartbeat"}"#).await;
    assert_eq!(recv_json(&mut small).await["type"], "heartbeat_ack");
    stop(s).await;
}

#[tokio::test]
async fn presence_says_who_is_online_here() {
    let s = start(config(&[("node_id", "node-a")])).await;
    let (_tab1, _) = connect(s.addr, "al%20ice").await;
    let (_tab2, _) = connect(s.addr, "al%20ice").await;
    let (status, _, body) = http(s.addr, "GET", "/api/v1/presence/al%20ice", &[], "").await;
    assert_eq!(status, 200, "{body}");
    let v = json(&body);
    assert_eq!(v["client_id"], "al ice");
    assert_eq!(v["online"], true);
    assert_eq!(v["sessions"], 2);
    assert_eq!(v["nodes"], serde_json::json!(["node-a"]));
    let (_, _, body) = http(s.addr, "GET", "/api/v1/presence/nobody", &[], "").await;
    let v = json(&body);
    assert_eq!(
        (v["online"].clone(), v["sessions"].clone()),
        (false.into(), 0.into())
    );
    assert_eq!(v["nodes"], serde_json::json!([]));
    stop(s).await;
}

#[tokio::test]
async fn session_listings_page_with_limit_and_after() {
    let s = start(config(&[("node_id", "node-a")])).await;
    let mut clients = Vec::new();
    for i in 0..5 {
        clients.push(connect(s.addr, &format!("p{i}")).await.0);
    }
    let list = |q: String| async move {
        let (status, _, body) = http(s.addr, "GET", &format!("/api/v1/sessions{q}"), &[], "").await;
        (status, json(&body))
    };
    let (_, all) = list(String::new()).await;
    let ids: Vec<String> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["session_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 5);
    assert!(
        all.as_array()
            .unwrap()
            .iter()
            .all(|x| x["node"] == "node-a")
    );
    let (_, first) = list("?limit=2".into()).await;
    let (_, second) = list(format!("?limit=2&after={}", ids[1])).await;
    let (_, last) = list(format!("?limit=2&after={}", ids[3])).await;
    let page_ids = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x["session_id"].as_str().unwrap().to_string())
            .collect()
    };
    let mut walked = page_ids(&first);
    walked.extend(page_ids(&second));
    walked.extend(page_ids(&last));
    assert_eq!(walked, ids, "the pages walk every session once, in order");
    let (status, bad) = list("?limit=0".into()).await;
    assert_eq!(status, 400);
    assert_eq!(bad["error"]["code"], "invalid_body");
    let (status, _) = list("?after=xyz".into()).await;
    assert_eq!(status, 400);
    drop(clients);
    stop(s).await;
}
