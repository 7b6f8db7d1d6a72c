//! Every refusal of docs/protocol.md §1 happens before the upgrade, with its status and JSON error body.

mod common;

use common::*;

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

async fn upgrade(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    extra: &[(&str, &str)],
    skip: &[&str],
) -> (u16, String, String) {
    let mut headers = vec![
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", KEY),
    ];
    headers.retain(|(k, _)| !skip.contains(k));
    headers.extend_from_slice(extra);
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    raw_exchange(addr, req.as_bytes()).await
}

fn assert_refusal((status, _, body): &(u16, String, String), want_status: u16, want_code: &str) {
    assert_eq!(*status, want_status, "{body}");
    let v = json(body);
    assert_eq!(v["error"]["code"], want_code, "{body}");
    assert!(
        !v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .is_empty(),
        "{body}"
    );
}

#[tokio::test]
async fn malformed_upgrades_are_refused_with_bad_handshake() {
    let s = start(config(&[])).await;
    let a = s.addr;
    assert_refusal(
        &upgrade(a, "POST", "/ws?client_id=a", &[], &[]).await,
        400,
        "bad_handshake",
    );
    assert_refusal(
        &upgrade(a, "GET", "/ws?client_id=a", &[], &["Upgrade"]).await,
        400,
        "bad_handshake",
    );
    assert_refusal(
        &upgrade(a, "GET", "/ws?client_id=a", &[], &["Connection"]).await,
        400,
        "bad_handshake",
    );
    assert_refusal(
        &upgrade(a, "GET", "/ws?client_id=a", &[], &["Sec-WebSocket-Key"]).await,
        400,
        "bad_handshake",
    );
    assert_refusal(
        &upgrade(
            a,
            "GET",
            "/ws?client_id=a",
            &[("Sec-WebSocket-Key", "short")],
            &["Sec-WebSocket-Key"],
        )
        .await,
        400,
        "bad_handshake",
    );
    // The good request on the same server is accepted: the refusals above were about the request.
    let (status, head, _) = upgrade(a, "GET", "/ws?client_id=a", &[], &[]).await;
    assert_eq!(status, 101);
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    stop(s).await;
}

#[tokio::test]
async fn wrong_version_gets_426_naming_13() {
    let s = start(config(&[])).await;
    let r = upgrade(
        s.addr,
        "GET",
        "/ws?client_id=a",
        &[("Sec-WebSocket-Version", "8")],
        &["Sec-WebSocket-Version"],
    )
    .await;
    assert_refusal(&r, 426, "unsupported_version");
    assert!(
        r.1.to_ascii_lowercase()
            .contains("sec-websocket-version: 13"),
        "{}",
        r.1
    );
    stop(s).await;
}

#[tokio::test]
async fn client_id_is_required_by_default_and_read_from_query_or_header() {
    let s = start(config(&[])).await;
    assert_refusal(
        &upgrade(s.addr, "GET", "/ws", &[], &[]).await,
        400,
        "missing_client_id",
    );
    assert_refusal(
        &upgrade(s.addr, "GET", "/ws?client_id=", &[], &[]).await,
        400,
        "missing_client_id",
    );
    let long = format!("/ws?client_id={}", "x".repeat(300));
    assert_refusal(
        &upgrade(s.addr, "GET", &long, &[], &[]).await,
        400,
        "bad_client_id",
    );

    let mut ws = connect_raw(s.addr, "/ws?client_id=caf%C3%A9")
        .await
        .unwrap();
    assert_eq!(recv_json(&mut ws).await["data"]["client_id"], "café");
    let (status, _, _) =
        upgrade(s.addr, "GET", "/ws", &[("X-Client-Id", "from-header")], &[]).await;
    assert_eq!(status, 101);
    stop(s).await;
}

#[tokio::test]
async fn without_required_client_id_the_session_id_names_the_client() {
    let s = start(config(&[("require_client_id", "false")])).await;
    let mut ws = connect_raw(s.addr, "/ws").await.unwrap();
    let w = recv_json(&mut ws).await;
    assert_eq!(w["data"]["client_id"], w["data"]["session_id"]);
    stop(s).await;
}

#[tokio::test]
async fn server_full_and_per_address_limits() {
    let s = start(config(&[("max_connections", "2")])).await;
    let (_a, _) = connect(s.addr, "a").await;
    let (_b, _) = connect(s.addr, "b").await;
    assert_refusal(
        &upgrade(s.addr, "GET", "/ws?client_id=c", &[], &[]).await,
        503,
        "server_full",
    );
    let (_, _, metrics) = http(s.addr, "GET", "/metrics", &[], "").await;
    assert!(
        metrics.contains("tether_refusals_total{code=\"server_full\"} 1"),
        "{metrics}"
    );
    stop(s).await;

    let s = start(config(&[("max_connections_per_ip", "1")])).await;
    let (a, _) = connect(s.addr, "a").await;
    assert_refusal(
        &upgrade(s.addr, "GET", "/ws?client_id=b", &[], &[]).await,
        429,
        "too_many_connections",
    );
    drop(a);
    // The slot comes back once the first session is gone.
    wait_connections(s.addr, 0).await;
    let (_b, _) = connect(s.addr, "b").await;
    stop(s).await;
}

#[tokio::test]
async fn origins_outside_the_allow_list_get_403() {
    let s = start(config(&[("allowed_origins", "https://app.example")])).await;
    assert_refusal(
        &upgrade(
            s.addr,
            "GET",
            "/ws?client_id=a",
            &[("Origin", "https://evil.example")],
            &[],
        )
        .await,
        403,
        "origin_not_allowed",
    );
    assert_refusal(
        &upgrade(s.addr, "GET", "/ws?client_id=a", &[], &[]).await,
        403,
        "origin_not_allowed",
    );
    let (status, _, _) = upgrade(
        s.addr,
        "GET",
        "/ws?client_id=a",
        &[("Origin", "https://app.example")],
        &[],
    )
    .await;
    assert_eq!(status, 101);
    stop(s).await;
}

#[tokio::test]
async fn forwarded_address_counts_only_from_trusted_proxies() {
    // Untrusted peer: the header is ignored, the TCP peer is recorded.
    let s = start(config(&[])).await;
    let mut ws = connect_with_headers(
        s.addr,
        "/ws?client_id=spoof",
        &[
            ("X-Forwarded-For", "203.0.113.9"),
            ("X-Real-IP", "203.0.113.8"),
        ],
    )
    .await
    .unwrap();
    recv_json(&mut ws).await;
    let (_, _, body) = http(s.addr, "GET", "/api/v1/sessions?client_id=spoof", &[], "").await;
    let addr = json(&body)[0]["remote_addr"].as_str().unwrap().to_string();
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    stop(s).await;

    // Trusted proxy: the rightmost untrusted forwarded address is the client.
    // (The test's own API call comes from a trusted proxy's address, so it needs the key.)
    let s = start(config(&[
        ("trusted_proxies", "127.0.0.0/8"),
        ("api_key", "handshake-test-key"),
    ]))
    .await;
    let mut ws = connect_with_headers(
        s.addr,
        "/ws?client_id=fwd",
        &[("X-Forwarded-For", "198.51.100.1, 203.0.113.9")],
    )
    .await
    .unwrap();
    recv_json(&mut ws).await;
    let auth = [("Authorization", "Bearer handshake-test-key")];
    let (_, _, body) = http(s.addr, "GET", "/api/v1/sessions?client_id=fwd", &auth, "").await;
    assert_eq!(json(&body)[0]["remote_addr"], "203.0.113.9");
    stop(s).await;
}
