//! Shutdown (docs/protocol.md §6): drain and restart modes, /health and upgrades while draining, and a
//! second stop request cutting the drain short.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tether::Stopped;

/// What `Server::run` returned, waited for with a bound.
async fn run_result(join: tokio::task::JoinHandle<std::io::Result<Stopped>>) -> Stopped {
    let joined = tokio::time::timeout(WAIT, join)
        .await
        .expect("run did not return");
    joined.expect("run panicked").expect("run failed")
}

#[tokio::test]
async fn drain_tells_clients_refuses_newcomers_then_closes_the_rest_1001() {
    let s = start(config(&[("shutdown_timeout", "1500ms")])).await;
    let (mut leaver, _) = connect(s.addr, "leaver").await;
    let (mut stayer, _) = connect(s.addr, "stayer").await;
    let TestServer {
        addr,
        trigger,
        join,
        ..
    } = s;
    let began = Instant::now();
    trigger.signal();

    let m = recv_json(&mut leaver).await;
    assert_eq!(m["type"], "shutdown");
    assert_eq!(m["data"]["mode"], "drain");
    assert!(m["data"]["reconnect_after_ms"].is_u64());
    assert_eq!(recv_json(&mut stayer).await["type"], "shutdown");

    let (status, _, body) = http(addr, "GET", "/health", &[], "").await;
    assert_eq!(status, 503);
    assert_eq!(json(&body)["status"], "draining");
    let refused = connect_raw(addr, "/ws?client_id=late").await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            assert_eq!(r.status().as_u16(), 503);
            let body = String::from_utf8(r.body().clone().unwrap_or_default()).unwrap();
            assert_eq!(json(&body)["error"]["code"], "draining");
        }
        other => panic!("expected a 503 refusal, got {:?}", other.map(|_| ())),
    }

    leaver.close(None).await.unwrap();
    let close = recv_close(&mut stayer, WAIT).await.expect("close frame");
    assert_eq!(u16::from(close.code), 1001);
    assert!(
        began.elapsed() >= Duration::from_millis(1500),
        "closed before the drain timeout"
    );
    drop(stayer);
    assert_eq!(run_result(join).await, Stopped::Clean);
}

#[tokio::test]
async fn drain_ends_early_when_everyone_left() {
    let s = start(config(&[("shutdown_timeout", "30s")])).await;
    let (mut ws, _) = connect(s.addr, "a").await;
    let TestServer { trigger, join, .. } = s;
    let began = Instant::now();
    trigger.signal();
    assert_eq!(recv_json(&mut ws).await["type"], "shutdown");
    ws.close(None).await.unwrap();
    assert_eq!(run_result(join).await, Stopped::Clean);
    assert!(began.elapsed() < Duration::from_secs(30));
}

#[tokio::test]
async fn restart_closes_everyone_at_once_with_1012() {
    let s = start(config(&[
        ("shutdown_mode", "restart"),
        ("migrate_window", "0s"),
    ]))
    .await;
    let (mut a, _) = connect(s.addr, "a").await;
    let (mut b, _) = connect(s.addr, "b").await;
    let TestServer { trigger, join, .. } = s;
    trigger.signal();
    for ws in [&mut a, &mut b] {
        let close = recv_close(ws, WAIT).await.expect("close frame");
        assert_eq!(u16::from(close.code), 1012);
    }
    drop((a, b));
    assert_eq!(run_result(join).await, Stopped::Clean);
}

#[tokio::test]
async fn second_stop_request_exits_at_once() {
    let s = start(config(&[("shutdown_timeout", "60s")])).await;
    let (_ws, _) = connect(s.addr, "stubborn").await;
    let TestServer { trigger, join, .. } = s;
    trigger.signal();
    trigger.signal();
    let stopped = tokio::time::timeout(Duration::from_secs(5), join)
        .await
        .expect("run did not return")
        .unwrap()
        .unwrap();
    assert_eq!(stopped, Stopped::Forced);
}

#[tokio::test]
async fn no_session_outlives_run_after_a_forced_stop() {
    let s = start(config(&[("shutdown_timeout", "60s")])).await;
    // Silent: it answers neither the shutdown message nor a close frame.
    let mut silent = RawClient::connect(s.addr, "silent").await;
    wait_connections(s.addr, 1).await;
    let TestServer {
        trigger,
        join,
        handle,
        ..
    } = s;
    trigger.signal();
    trigger.signal();
    assert_eq!(run_result(join).await, Stopped::Forced);
    assert_eq!(handle.connections(), 0, "sessions left in the registry");
    // The socket is closed by the server: frames may still be buffered, then EOF.
    let mut frames = 0;
    while silent.frame().await.is_some() {
        frames += 1;
        assert!(frames < 10, "the server kept sending");
    }
}

#[tokio::test]
async fn restart_spreads_reconnects_over_the_migrate_window() {
    let s = start(config(&[
        ("shutdown_mode", "restart"),
        ("migrate_window", "1s"),
    ]))
    .await;
    let mut clients = Vec::new();
    for i in 0..5 {
        clients.push(connect(s.addr, &format!("m{i}")).await.0);
    }
    let TestServer { trigger, join, .. } = s;
    let began = Instant::now();
    trigger.signal();
    let mut hints = Vec::new();
    for ws in &mut clients {
        let m = recv_json(ws).await;
        assert_eq!(m["type"], "shutdown");
        assert_eq!(m["data"]["mode"], "restart");
        hints.push(m["data"]["reconnect_after_ms"].as_u64().unwrap());
    }
    let mut sorted = hints.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        vec![0, 200, 400, 600, 800],
        "spread evenly over 1 s"
    );
    for (ws, hint) in clients.iter_mut().zip(&hints) {
        let close = recv_close(ws, WAIT).await.expect("close frame");
        assert_eq!(u16::from(close.code), 1012);
        let at = began.elapsed().as_millis() as u64;
        // Closed at its own moment, not with everyone at once (the clients that ignore the
        // hint are spread too); 50 ms of slack for the timer.
        assert!(at + 50 >= *hint, "closed at {at} ms, hint {hint} ms");
    }
    drop(clients);
    assert_eq!(run_result(join).await, Stopped::Clean);
}

/// Says goodbye through the handle when the server stops.
struct Goodbye;

impl tether::Handler for Goodbye {
    fn on_shutdown(&self, handle: &tether::Handle) {
        handle.broadcast_here("goodbye", Some(r#"{"see":"you"}"#));
    }
}

#[tokio::test]
async fn on_shutdown_runs_before_clients_hear_of_the_shutdown() {
    let s = start_with(config(&[("shutdown_timeout", "200ms")]), Goodbye).await;
    let (mut ws, _) = connect(s.addr, "g").await;
    let TestServer { trigger, join, .. } = s;
    trigger.signal();
    let first = recv_json(&mut ws).await;
    assert_eq!(first["type"], "goodbye");
    assert_eq!(first["data"]["see"], "you");
    assert_eq!(recv_json(&mut ws).await["type"], "shutdown");
    drop(ws);
    assert_eq!(run_result(join).await, Stopped::Clean);
}

#[tokio::test]
async fn max_lifetime_rotates_sessions_with_1012() {
    let s = start(config(&[
        ("max_lifetime", "1s"),
        ("reap_interval", "100ms"),
    ]))
    .await;
    let began = Instant::now();
    let (mut ws, _) = connect(s.addr, "old").await;
    let close = recv_close(&mut ws, WAIT).await.expect("close frame");
    assert_eq!(u16::from(close.code), 1012);
    let at = began.elapsed();
    assert!(
        at >= Duration::from_millis(900),
        "rotated after {at:?}, before 1 s - 10 %"
    );
    stop(s).await;
}
