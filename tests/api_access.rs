//! Who may use the HTTP API (docs/protocol.md §13): with no `api_key`, only a direct local caller; a
//! request that came through a proxy (a trusted one, or any that left a forwarding header) is
//! refused with 401 saying to set the key, so a reverse proxy never opens the API by accident.

mod common;

use common::*;

const BODY: &str = r#"{"type":"notice","data":1}"#;

async fn broadcast(s: &TestServer, headers: &[(&str, &str)]) -> (u16, serde_json::Value) {
    let (status, _, b) = http(s.addr, "POST", "/api/v1/broadcast", headers, BODY).await;
    (status, json(&b))
}

fn assert_not_local((status, body): &(u16, serde_json::Value)) {
    assert_eq!(*status, 401, "{body}");
    assert_eq!(body["error"]["code"], "unauthorized", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("set api_key"), "{message}");
}

#[tokio::test]
async fn without_a_key_only_direct_local_callers_are_answered() {
    let s = start(config(&[])).await;
    // The README's curl on the same machine still works out of the box.
    let (status, body) = broadcast(&s, &[]).await;
    assert_eq!(
        (status, body["delivered"].as_u64()),
        (200, Some(0)),
        "{body}"
    );
    // What a reverse proxy adds, whether or not the operator listed it as trusted.
    for header in ["X-Forwarded-For", "X-Real-IP", "Forwarded"] {
        assert_not_local(&broadcast(&s, &[(header, "203.0.113.9")]).await);
    }
    for path in ["/api/v1/sessions", "/api/v1/presence/alice"] {
        let (status, _, b) = http(s.addr, "GET", path, &[("X-Real-IP", "203.0.113.9")], "").await;
        assert_not_local(&(status, json(&b)));
    }
    stop(s).await;
}

#[tokio::test]
async fn a_trusted_proxy_is_never_a_local_caller() {
    // nginx on the same host connects from 127.0.0.1: listed as trusted, its requests are the
    // internet's, even when it forwards no header.
    let s = start(config(&[("trusted_proxies", "127.0.0.1")])).await;
    assert_not_local(&broadcast(&s, &[]).await);
    stop(s).await;
}

#[tokio::test]
async fn with_a_key_the_key_decides_wherever_the_call_comes_from() {
    let s = start(config(&[
        ("api_key", "a-long-enough-key"),
        ("trusted_proxies", "127.0.0.1"),
    ]))
    .await;
    let (status, _) = broadcast(&s, &[("X-Forwarded-For", "203.0.113.9")]).await;
    assert_eq!(status, 401);
    let (status, body) = broadcast(
        &s,
        &[
            ("X-Forwarded-For", "203.0.113.9"),
            ("Authorization", "Bearer a-long-enough-key"),
        ],
    )
    .await;
    assert_eq!(
        (status, body["delivered"].as_u64()),
        (200, Some(0)),
        "{body}"
    );
    stop(s).await;
}

#[tokio::test]
async fn api_open_is_an_explicit_choice_of_an_api_without_a_key() {
    let s = start(config(&[
        ("api_open", "true"),
        ("trusted_proxies", "127.0.0.1"),
    ]))
    .await;
    let (status, body) = broadcast(&s, &[("X-Forwarded-For", "203.0.113.9")]).await;
    assert_eq!(
        (status, body["delivered"].as_u64()),
        (200, Some(0)),
        "{body}"
    );
    stop(s).await;
}
