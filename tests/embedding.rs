//! The shipped examples, run as real processes: a custom message type answered by the
//! application, a push from application code, and the echo app.

mod common;

use common::*;
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn custom_app_answers_its_own_type_and_pushes_from_its_worker() {
    let mut cmd = example("custom_app");
    cmd.arg("127.0.0.1:0");
    let (child, addr) = spawn(cmd).await;
    let (mut tab1, _) = connect(addr, "alice").await;
    let (mut tab2, _) = connect(addr, "alice").await;
    send_json(&mut tab1, r#"{"type":"start_job","data":{"n":100}}"#).await;
    let accepted = recv_json(&mut tab1).await;
    assert_eq!(
        (accepted["type"].as_str(), accepted["data"]["n"].as_u64()),
        (Some("job_accepted"), Some(100))
    );
    // The worker's push reaches every session of the client, not only the one that asked.
    for ws in [&mut tab1, &mut tab2] {
        let done = recv_json(ws).await;
        assert_eq!(
            (done["type"].as_str(), done["data"]["sum"].as_u64()),
            (Some("job_done"), Some(5050))
        );
    }
    send_json(&mut tab1, r#"{"type":"start_job","data":{"n":"many"}}"#).await;
    assert_eq!(recv_json(&mut tab1).await["type"], "job_rejected");
    // Built-in and unknown types still behave as without a handler.
    send_json(&mut tab1, r#"{"type":"nope"}"#).await;
    assert_eq!(recv_json(&mut tab1).await["data"]["code"], "unknown_type");
    drop((tab1, tab2));
    signal(&child, libc::SIGTERM);
    assert_eq!(exit_code(child).await, 0);
}

#[tokio::test]
async fn echo_app_returns_text_and_binary_unchanged() {
    let mut cmd = example("echo");
    cmd.arg("127.0.0.1:0");
    let (child, addr) = spawn(cmd).await;
    let mut ws = connect_raw(addr, "/ws").await.unwrap();
    // A pure echo: no welcome, so the first frame back is the echo of the first frame sent.
    ws.send(Message::text("not even json ✓")).await.unwrap();
    assert_eq!(recv_text(&mut ws).await, "not even json ✓");
    let big = "y".repeat(200_000);
    ws.send(Message::text(big.clone())).await.unwrap();
    assert_eq!(recv_text(&mut ws).await, big);
    ws.send(Message::Binary(vec![0u8, 1, 2, 255].into()))
        .await
        .unwrap();
    use futures_util::StreamExt;
    let m = tokio::time::timeout(WAIT, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(m, Message::Binary(vec![0u8, 1, 2, 255].into()));
    drop(ws);
    signal(&child, libc::SIGTERM);
    assert_eq!(exit_code(child).await, 0);
}

/// `TETHER_COMPRESSION=true` puts the echo example under permessage-deflate (Autobahn 12, 13).
#[tokio::test]
async fn echo_app_reads_tether_compression() {
    use common::deflate::DeflateClient;
    let mut cmd = example("echo");
    cmd.arg("127.0.0.1:0")
        .env("TETHER_COMPRESSION", "true")
        .env("TETHER_COMPRESSION_MIN_SIZE", "0");
    let (child, addr) = spawn(cmd).await;
    let mut c = DeflateClient::connect(addr, "/ws", Some("permessage-deflate")).await;
    assert!(c.extensions.is_some());
    c.send_text("tiny", true, 1).await;
    let m = c.next_data().await;
    assert!(m.compressed, "min size 0: even 4 bytes go compressed");
    assert_eq!(m.text(), "tiny");
    drop(c);
    signal(&child, libc::SIGTERM);
    assert_eq!(exit_code(child).await, 0);
}

/// A handler that panics on one message type, to show a panic stays inside its session.
struct Fragile;

impl tether::Handler for Fragile {
    fn on_message(
        &self,
        _session: &tether::Session<'_>,
        kind: &str,
        _data: Option<&tether::RawValue>,
    ) -> tether::Handled {
        assert_ne!(kind, "explode", "handler bug triggered on purpose");
        tether::Handled::No
    }
}

#[tokio::test]
async fn a_panic_in_one_session_leaves_the_others_and_the_registry_intact() {
    let s = start_with(config(&[]), Fragile).await;
    let (mut victim, _) = connect(s.addr, "victim").await;
    let (mut bystander, _) = connect(s.addr, "bystander").await;
    wait_connections(s.addr, 2).await;
    send_json(&mut victim, r#"{"type":"explode"}"#).await;
    // The victim's connection ends (its task unwound and dropped the socket)...
    assert!(
        recv_close(&mut victim, WAIT).await.is_none(),
        "no close frame from a panicked task"
    );
    // ...its session is unregistered, and everyone else carries on.
    wait_connections(s.addr, 1).await;
    assert_eq!(
        s.handle
            .push("victim", "x", None)
            .await
            .unwrap()
            .map(|sent| sent.delivered),
        None
    );
    assert_eq!(
        s.handle
            .push("bystander", "still", None)
            .await
            .unwrap()
            .map(|sent| sent.delivered),
        Some(1)
    );
    assert_eq!(recv_json(&mut bystander).await["type"], "still");
    let (mut again, _) = connect(s.addr, "victim").await;
    send_json(&mut again, r#"{"type":"heartbeat"}"#).await;
    assert_eq!(recv_json(&mut again).await["type"], "heartbeat_ack");
    stop(s).await;
}
