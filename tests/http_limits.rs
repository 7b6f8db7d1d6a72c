//! The plain HTTP limits of docs/protocol.md §13 as a client meets them: a request body must arrive
//! within `http_body_timeout` (408 `body_timeout`, and the connection is closed), and one address
//! holds at most `max_http_connections_per_ip` connections that are not (yet) WebSocket sessions
//! (429 `too_many_connections`); a trusted proxy is not held to that cap.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// The head of a push whose body is announced as 100 bytes.
fn push_head(addr: SocketAddr) -> String {
    format!(
        "POST /api/v1/push HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: 100\r\n\r\n"
    )
}

/// The head of a push announcing 100 bytes of body, and the first 10 of them.
fn partial_push(addr: SocketAddr) -> String {
    push_head(addr) + r#"{"client_i"#
}

/// Everything the server sends until it closes the connection (bounded by `WAIT`).
async fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    tokio::time::timeout(WAIT, async {
        loop {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
    .expect("the server kept the connection open");
    buf
}

/// The status and JSON body of a raw answer; `None` when the server closed without one.
fn answer_of(bytes: &[u8]) -> Option<(u16, Value)> {
    let text = String::from_utf8_lossy(bytes);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, serde_json::from_str(body).unwrap_or(Value::Null)))
}

/// `GET /health` on a fresh connection; `None` when the connection was closed without an answer.
async fn health_from(stream: TcpStream, addr: SocketAddr) -> Option<(u16, Value)> {
    let mut s = stream;
    let req = format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    // A refused connection may be closed before the request is written: the answer decides.
    let _ = s.write_all(req.as_bytes()).await;
    answer_of(&read_to_close(&mut s).await)
}

/// A TCP connection to `to` from the loopback address `src`.
async fn tcp_from(src: IpAddr, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(src, 0)).unwrap();
    tokio::time::timeout(WAIT, socket.connect(to))
        .await
        .expect("connect timed out")
        .unwrap()
}

fn assert_over_cap(answer: Option<(u16, Value)>) {
    let (status, body) = answer.expect("refused without an answer");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (429, Some("too_many_connections")),
        "{body}"
    );
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("max_http_connections_per_ip"), "{message}");
}

#[tokio::test]
async fn a_stalled_api_body_gets_408_at_the_deadline_and_is_closed() {
    let s = start(config(&[("http_body_timeout", "1s")])).await;
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    let started = Instant::now();
    c.write_all(partial_push(s.addr).as_bytes()).await.unwrap();
    let answer = answer_of(&read_to_close(&mut c).await);
    let took = started.elapsed();
    let (status, body) = answer.expect("closed without an answer");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (408, Some("body_timeout")),
        "{body}"
    );
    assert!(
        (Duration::from_millis(900)..Duration::from_secs(5)).contains(&took),
        "answered after {took:?}"
    );
    // Where no body is read, a stalled one does not hold the connection either.
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    let head = push_head(s.addr).replace("POST /api/v1/push", "POST /health");
    c.write_all(format!("{head}{{\"client_i").as_bytes())
        .await
        .unwrap();
    let answer = answer_of(&read_to_close(&mut c).await);
    assert_eq!(answer.map(|a| a.0), Some(405));
    // A complete body on another connection is served as usual.
    let (status, _, _) = http(s.addr, "POST", "/api/v1/broadcast", &[], r#"{"type":"t"}"#).await;
    assert_eq!(status, 200);
    stop(s).await;
}

#[tokio::test]
async fn a_body_trickled_a_byte_at_a_time_is_cut_at_the_total_deadline() {
    let s = start(config(&[("http_body_timeout", "1s")])).await;
    let (mut rd, mut wr) = TcpStream::connect(s.addr).await.unwrap().into_split();
    let head = push_head(s.addr);
    let started = Instant::now();
    // Each byte comes well within any per-read timeout; 100 of them would take 30 s.
    let trickle = tokio::spawn(async move {
        wr.write_all(head.as_bytes()).await?;
        let mut tick = tokio::time::interval(Duration::from_millis(300));
        for _ in 0..100 {
            tick.tick().await;
            wr.write_all(b" ").await?;
        }
        Ok::<_, std::io::Error>(())
    });
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, rd.read_to_end(&mut buf))
        .await
        .expect("the trickled body was never cut")
        .unwrap_or_default();
    let took = started.elapsed();
    trickle.abort();
    let (status, body) = answer_of(&buf).expect("closed without an answer");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (408, Some("body_timeout"))
    );
    assert!(
        (Duration::from_millis(900)..Duration::from_secs(5)).contains(&took),
        "cut after {took:?}"
    );
    stop(s).await;
}

#[tokio::test]
async fn plain_http_past_the_per_address_cap_gets_429_and_sessions_do_not_count() {
    let s = start(config(&[("max_http_connections_per_ip", "4")])).await;
    // Upgraded connections are sessions, not plain HTTP: more of them than the cap get in.
    let mut sessions = Vec::new();
    for i in 0..6 {
        sessions.push(RawClient::connect(s.addr, &format!("s{i}")).await);
    }
    wait_connections(s.addr, 6).await;
    // Four idle connections fill the cap. The server accepts in arrival order, so they are
    // counted before any connection opened after them.
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(TcpStream::connect(s.addr).await.unwrap());
    }
    assert_over_cap(health_from(TcpStream::connect(s.addr).await.unwrap(), s.addr).await);
    // An upgrade is plain HTTP until it is upgraded: it is refused the same way.
    let (status, body) = upgrade_status(s.addr, "/ws?client_id=late", &[]).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (429, Some("too_many_connections"))
    );
    // Another address has its own count.
    let other = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let (status, _) = health_from(tcp_from(other, s.addr).await, s.addr)
        .await
        .expect("no answer");
    assert_eq!(status, 200);
    // Closing one makes room once the server has seen it go (polled, bounded).
    drop(idle.pop());
    let mut answered = None;
    for _ in 0..200 {
        match health_from(TcpStream::connect(s.addr).await.unwrap(), s.addr).await {
            Some((200, body)) => {
                answered = Some(body);
                break;
            }
            other => assert_over_cap(other),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let body = answered.expect("a closed connection never made room");
    assert_eq!(body["connections"], 6, "the sessions were untouched");
    drop(sessions);
    stop(s).await;
}

#[tokio::test]
async fn a_trusted_proxy_is_not_held_to_the_per_address_cap() {
    let s = start(config(&[
        ("max_http_connections_per_ip", "4"),
        ("trusted_proxies", "127.0.0.1"),
    ]))
    .await;
    // Behind a proxy every connection comes from its address: ten at once are served.
    let mut pooled = Vec::new();
    for _ in 0..10 {
        pooled.push(TcpStream::connect(s.addr).await.unwrap());
    }
    let (status, _) = health_from(TcpStream::connect(s.addr).await.unwrap(), s.addr)
        .await
        .expect("no answer");
    assert_eq!(status, 200);
    // Other peers are still capped.
    let direct = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(tcp_from(direct, s.addr).await);
    }
    assert_over_cap(health_from(tcp_from(direct, s.addr).await, s.addr).await);
    stop(s).await;
}

#[tokio::test]
async fn the_cap_holds_for_an_ipv6_peer_too() {
    // Only where the machine has IPv6 loopback; the /64 grouping itself is a unit test
    // (admission::tests), since a test cannot pick other addresses in ::1's /64.
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        return;
    }
    let s = start(config(&[
        ("listen", "[::1]:0"),
        ("max_http_connections_per_ip", "2"),
    ]))
    .await;
    let held = [
        TcpStream::connect(s.addr).await.unwrap(),
        TcpStream::connect(s.addr).await.unwrap(),
    ];
    assert_over_cap(health_from(TcpStream::connect(s.addr).await.unwrap(), s.addr).await);
    drop(held);
    stop(s).await;
}
