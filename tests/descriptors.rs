//! File descriptors, with the real binary under a chosen open-file limit: tether raises a low soft
//! limit to the hard one, and when its socket budget is spent `/health` still answers and a
//! further upgrade is refused at once instead of hanging; API bodies that never finish give their
//! descriptors back at `http_body_timeout`.

mod common;

use std::process::Stdio;

use common::*;
use tokio::process::{Child, Command};

/// Starts the binary with RLIMIT_NOFILE set to (soft, hard) before it runs.
async fn tether_with_nofile(soft: u64, hard: u64, args: &[&str]) -> (Child, std::net::SocketAddr) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tether"));
    c.env_clear()
        .env("RUST_LOG", "info")
        .args(["--listen", "127.0.0.1:0", "--shutdown-timeout", "1s"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // SAFETY: setrlimit is async-signal-safe and touches only the child about to exec.
    unsafe {
        c.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: soft,
                rlim_max: hard,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    spawn(c).await
}

/// The child's soft and hard open-file limits, from /proc.
fn nofile_of(child: &Child) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id().unwrap())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let n: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (n[0], n[1])
}

async fn health(addr: std::net::SocketAddr) -> (u16, serde_json::Value) {
    let (status, _, body) = http(addr, "GET", "/health", &[], "").await;
    (status, json(&body))
}

#[tokio::test]
async fn a_low_soft_limit_is_raised_so_400_sessions_fit() {
    let (child, addr) = tether_with_nofile(256, 20000, &[]).await;
    assert_eq!(nofile_of(&child), (20000, 20000), "soft limit not raised");
    let mut held = Vec::new();
    for i in 0..400 {
        held.push(RawClient::connect(addr, &format!("c{i}")).await);
    }
    // A session registers just after its 101 is written: wait for the last one.
    wait_connections(addr, 400).await;
    drop(held);
    wait_connections(addr, 0).await;
    signal(&child, libc::SIGTERM);
    assert_eq!(exit_code(child).await, 0);
}

#[tokio::test]
async fn when_the_socket_budget_is_spent_health_answers_and_upgrades_are_refused() {
    // 200 descriptors, 100 of them kept back: room for 100 sessions, whatever max_connections says.
    let (child, addr) = tether_with_nofile(200, 200, &["--max-connections", "1000"]).await;
    let mut held = Vec::new();
    for i in 0..100 {
        held.push(RawClient::connect(addr, &format!("c{i}")).await);
    }
    // A session registers just after its 101 is written: wait for the last one.
    wait_connections(addr, 100).await;
    // Refused with an answer (raw_exchange is bounded), not left hanging in the backlog.
    let (status, body) = upgrade_status(addr, "/ws?client_id=one-too-many", &[]).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("server_full")),
        "{body}"
    );
    for _ in 0..20 {
        assert_eq!(health(addr).await.0, 200, "health stopped answering");
    }
    // A connection accepted while the budget is spent rides on a spare permit; once a session
    // ends it may still upgrade, and a new connection may too.
    let early = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert_eq!(
        health(addr).await.0,
        200,
        "the early connection is accepted"
    );
    held.pop();
    wait_connections(addr, 99).await;
    held.push(RawClient::upgrade(early, addr, "was-waiting").await);
    wait_connections(addr, 100).await;
    held.pop();
    wait_connections(addr, 99).await;
    held.push(RawClient::connect(addr, "back-in").await);
    drop(held);
    wait_connections(addr, 0).await;
    signal(&child, libc::SIGTERM);
    assert_eq!(exit_code(child).await, 0);
}

#[tokio::test]
async fn stalled_api_bodies_give_their_descriptors_back_at_the_body_deadline() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // 200 descriptors: 116 permits (100 sessions' worth and the spare ones), fewer than the
    // stalled requests below. The per-address cap is off so that only the deadline frees them.
    let args = [
        "--http-body-timeout",
        "1s",
        "--max-http-connections-per-ip",
        "0",
    ];
    let (child, addr) = tether_with_nofile(200, 200, &args).await;
    let head = format!(
        "POST /api/v1/push HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: 100\r\n\r\n{{\"client_i"
    );
    let mut stalled = Vec::new();
    for _ in 0..130 {
        // The backlog completes the connection whether or not a permit is free.
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        c.write_all(head.as_bytes()).await.unwrap();
        stalled.push(c);
    }
    // Queued behind them, health is answered once the first ones are cut (http() waits WAIT).
    assert_eq!(health(addr).await.0, 200, "health stopped answering");
    for mut c in stalled {
        let mut answer = Vec::new();
        tokio::time::timeout(WAIT, c.read_to_end(&mut answer))
            .await
            .expect("a stalled body kept its connection")
            .unwrap_or_default();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    }
    signal(&child, libc::SIGTERM);
    assert_eq!(exit_code(child).await, 0);
}
