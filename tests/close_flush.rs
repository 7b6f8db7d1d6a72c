//! Closes tether starts write what is queued first (docs/protocol.md §5, §6): an admin close right
//! after pushes, a drain that times out, `restart`, and a drain with `shutdown_timeout = 0`.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

/// Pushes queued in one go, more than one write batch holds.
const BURST: usize = 200;

/// Every text frame until the close frame, and the close code.
async fn until_close(ws: &mut Ws) -> (Vec<Value>, Option<u16>) {
    use futures_util::StreamExt;
    let mut got = Vec::new();
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("no close in time")
        {
            Some(Ok(Message::Text(t))) => got.push(json(t.as_str())),
            Some(Ok(Message::Close(f))) => return (got, f.map(|f| u16::from(f.code))),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return (got, None),
        }
    }
}

async fn burst(s: &TestServer, client: &str) {
    for i in 0..BURST {
        assert_eq!(
            s.handle
                .push(client, "n", Some(&i.to_string()))
                .await
                .unwrap()
                .map(|sent| sent.delivered),
            Some(1)
        );
    }
}

fn numbered(got: &[Value]) -> Vec<u64> {
    got.iter()
        .filter(|m| m["type"] == "n")
        .map(|m| m["data"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn admin_close_right_after_pushes_delivers_them_first() {
    let s = start(config(&[])).await;
    let (mut ws, welcome) = connect(s.addr, "a").await;
    let sid = welcome["data"]["session_id"].as_str().unwrap().to_string();
    burst(&s, "a").await;
    let (status, _, _) = http(
        s.addr,
        "DELETE",
        &format!("/api/v1/sessions/{sid}"),
        &[],
        "",
    )
    .await;
    assert_eq!(status, 200);
    let (got, code) = until_close(&mut ws).await;
    assert_eq!(numbered(&got), (0..BURST as u64).collect::<Vec<_>>());
    assert_eq!(code, Some(4002));
    stop(s).await;
}

#[tokio::test]
async fn drain_timeout_delivers_what_was_queued_before_1001() {
    // Long enough that the burst is surely queued before the drain times out.
    let s = start(config(&[("shutdown_timeout", "1s")])).await;
    let (mut ws, _) = connect(s.addr, "a").await;
    s.trigger.signal();
    assert_eq!(recv_json(&mut ws).await["type"], "shutdown");
    burst(&s, "a").await;
    let (got, code) = until_close(&mut ws).await;
    assert_eq!(numbered(&got), (0..BURST as u64).collect::<Vec<_>>());
    assert_eq!(code, Some(1001));
    drop(ws);
    let _ = tokio::time::timeout(WAIT, s.join)
        .await
        .expect("run did not return");
}

#[tokio::test]
async fn restart_delivers_what_was_queued_before_1012() {
    let s = start(config(&[("shutdown_mode", "restart")])).await;
    let (mut ws, _) = connect(s.addr, "a").await;
    burst(&s, "a").await;
    s.trigger.signal();
    let (got, code) = until_close(&mut ws).await;
    assert_eq!(numbered(&got), (0..BURST as u64).collect::<Vec<_>>());
    assert_eq!(code, Some(1012));
    drop(ws);
    let _ = tokio::time::timeout(WAIT, s.join)
        .await
        .expect("run did not return");
}

#[tokio::test]
async fn zero_shutdown_timeout_still_sends_the_shutdown_message() {
    let s = start(config(&[("shutdown_timeout", "0s")])).await;
    let (mut ws, _) = connect(s.addr, "a").await;
    s.trigger.signal();
    let (got, code) = until_close(&mut ws).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["type"], "shutdown");
    assert_eq!(got[0]["data"]["mode"], "drain");
    assert_eq!(code, Some(1001));
    drop(ws);
    let _ = tokio::time::timeout(Duration::from_secs(10), s.join)
        .await
        .expect("run did not return");
}
