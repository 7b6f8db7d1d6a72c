//! The limits of docs/protocol.md §12 as a client meets them: an oversized request head gets 431, a
//! stalled reader is cut off by bytes queued (4003), channels per session, sessions per client id,
//! inbound message rate (`rate_limited`, then 1008) and connect rate per address (429).

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// An upgrade whose head carries `pad` bytes in one header; returns the status.
async fn upgrade_with_header_of(addr: std::net::SocketAddr, pad: usize) -> u16 {
    let req = format!(
        "GET /ws?client_id=big HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(pad)
    );
    let (mut rd, mut wr) = TcpStream::connect(addr).await.unwrap().into_split();
    // The server may answer and close before it has read the whole head: write on the side, and
    // read the answer whatever becomes of the write.
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(req.as_bytes()).await;
        wr
    });
    let mut buf = Vec::new();
    let read = async {
        let mut chunk = [0u8; 1024];
        while !buf.windows(2).any(|w| w == b"\r\n") {
            match rd.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("no answer in time");
    writer.abort();
    let line = String::from_utf8_lossy(&buf);
    line.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {line:?}"))
}

#[tokio::test]
async fn a_request_head_over_max_header_size_gets_431() {
    let s = start(config(&[])).await;
    assert_eq!(upgrade_with_header_of(s.addr, 64 * 1024).await, 431);
    // Under the 16 KiB default, a large head (big cookies, long tokens) still upgrades.
    assert_eq!(upgrade_with_header_of(s.addr, 10 * 1024).await, 101);
    stop(s).await;

    // hyper's read buffer grows in steps that can overshoot a configured size by half: the limit
    // must hold to the byte whatever the size.
    let s = start(config(&[("max_header_size", "32768")])).await;
    assert_eq!(upgrade_with_header_of(s.addr, 24 * 1024).await, 101);
    assert_eq!(upgrade_with_header_of(s.addr, 33 * 1024).await, 431);
    assert_eq!(upgrade_with_header_of(s.addr, 40 * 1024).await, 431);
    stop(s).await;
}

#[tokio::test]
async fn a_stalled_reader_is_closed_by_bytes_queued_while_others_get_everything() {
    // Frames stay far below `send_queue` (1024): only the byte bound can trip.
    let s = start(config(&[("send_queue_bytes", "262144")])).await;
    let mut stuck = RawClient::connect(s.addr, "stuck").await;
    let (mut good, _) = connect(s.addr, "good").await;
    wait_connections(s.addr, 2).await;
    const N: u64 = 300;
    let pad = "x".repeat(32 * 1024);
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        for _ in 0..N {
            got.push(recv_json(&mut good).await["data"]["i"].as_u64().unwrap());
        }
        // Handed back so it stays connected: the session count below is the stalled one's.
        (got, good)
    });
    for i in 0..N {
        let body = json!({"type": "burst", "data": {"i": i, "pad": pad}}).to_string();
        let (status, _, _) = http(s.addr, "POST", "/api/v1/broadcast", &[], &body).await;
        assert_eq!(status, 200);
    }
    let (got, _good) = tokio::time::timeout(WAIT, reader)
        .await
        .expect("the healthy client starved")
        .unwrap();
    assert_eq!(got, (0..N).collect::<Vec<_>>());
    wait_connections(s.addr, 1).await;
    let (_, _, metrics) = http(s.addr, "GET", "/metrics", &[], "").await;
    assert!(
        metrics.contains("tether_slow_consumer_closes_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tether_closes_total{code=\"4003\"} 1"),
        "{metrics}"
    );
    // The stalled client, once it reads, finds its connection over (a close frame says 4003).
    let ended = tokio::time::timeout(WAIT, async {
        while let Some((op, payload)) = stuck.frame().await {
            if op == 0x8 {
                return Some(u16::from_be_bytes([payload[0], payload[1]]));
            }
        }
        None
    })
    .await
    .expect("the stalled client's connection stayed open");
    assert!(matches!(ended, None | Some(4003)), "{ended:?}");
    stop(s).await;
}

async fn subscribe(ws: &mut Ws, channel: &str) -> serde_json::Value {
    let frame = json!({"type": "subscribe", "data": {"channel": channel}});
    send_json(ws, &frame.to_string()).await;
    recv_json(ws).await
}

#[tokio::test]
async fn subscriptions_past_max_channels_per_session_get_too_many_channels() {
    let s = start(config(&[("max_channels_per_session", "3")])).await;
    let (mut ws, _) = connect(s.addr, "collector").await;
    for c in ["a", "b", "c", "a"] {
        assert_eq!(subscribe(&mut ws, c).await["type"], "subscribed", "{c}");
    }
    let m = subscribe(&mut ws, "d").await;
    assert_eq!(
        (m["type"].as_str(), m["data"]["code"].as_str()),
        (Some("error"), Some("too_many_channels")),
        "{m}"
    );
    send_json(&mut ws, r#"{"type":"unsubscribe","data":{"channel":"a"}}"#).await;
    assert_eq!(recv_json(&mut ws).await["type"], "unsubscribed");
    assert_eq!(subscribe(&mut ws, "d").await["type"], "subscribed");
    // Another session has its own budget.
    let (mut other, _) = connect(s.addr, "collector").await;
    assert_eq!(subscribe(&mut other, "e").await["type"], "subscribed");
    stop(s).await;
}

#[tokio::test]
async fn sessions_past_max_sessions_per_client_get_429() {
    let s = start(config(&[("max_sessions_per_client", "2")])).await;
    let (tab1, _) = connect(s.addr, "multi").await;
    let (_tab2, _) = connect(s.addr, "multi").await;
    let (status, body) = upgrade_status(s.addr, "/ws?client_id=multi", &[]).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (429, Some("too_many_connections")),
        "{body}"
    );
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("max_sessions_per_client"), "{message}");
    // Other client ids are unaffected, and a freed session makes room.
    let (_other, _) = connect(s.addr, "someone").await;
    drop(tab1);
    wait_connections(s.addr, 2).await;
    let (_tab3, _) = connect(s.addr, "multi").await;
    stop(s).await;
}

#[tokio::test]
async fn a_flooding_client_gets_rate_limited_then_closed_1008() {
    let s = start(config(&[("client_message_rate", "5")])).await;
    let (mut ws, _) = connect(s.addr, "chatty").await;
    let (mut bystander, _) = connect(s.addr, "calm").await;
    // 30 at once against a burst of 10: the excess is refused one by one, the session stays.
    for i in 0..30 {
        send_json(&mut ws, &format!(r#"{{"type":"heartbeat","id":{i}}}"#)).await;
    }
    let (mut acks, mut limited) = (0, 0);
    let mut first_refusal = None;
    for _ in 0..30 {
        let m = recv_json(&mut ws).await;
        match (m["type"].as_str(), m["data"]["code"].as_str()) {
            (Some("heartbeat_ack"), _) => acks += 1,
            (Some("error"), Some("rate_limited")) => {
                limited += 1;
                first_refusal.get_or_insert_with(Instant::now);
            }
            _ => panic!("unexpected {m}"),
        }
    }
    assert!((10..=13).contains(&acks), "{acks} acks");
    assert_eq!(acks + limited, 30);

    // Keep flooding at ten times the rate: after 5 s of it the server closes with 1008.
    let (mut sink, mut stream) = ws.split();
    let flood = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        loop {
            tick.tick().await;
            if sink
                .send(Message::text(r#"{"type":"heartbeat"}"#))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let close = tokio::time::timeout(WAIT, async {
        while let Some(Ok(m)) = stream.next().await {
            if let Message::Close(f) = m {
                return f;
            }
        }
        None
    })
    .await
    .expect("a persistent flood was never closed");
    flood.abort();
    let close = close.expect("the connection ended without a close frame");
    assert_eq!(u16::from(close.code), 1008);
    let flooded = first_refusal.unwrap().elapsed();
    assert!(
        flooded >= Duration::from_millis(4500),
        "closed after {flooded:?}"
    );
    // The bystander never noticed.
    send_json(&mut bystander, r#"{"type":"heartbeat"}"#).await;
    assert_eq!(recv_json(&mut bystander).await["type"], "heartbeat_ack");
    // The flooder never answers the close: its session ends after the close grace.
    wait_connections(s.addr, 1).await;
    let (_, _, metrics) = http(s.addr, "GET", "/metrics", &[], "").await;
    assert!(
        metrics.contains("tether_closes_total{code=\"1008\"} 1"),
        "{metrics}"
    );
    stop(s).await;
}

#[tokio::test]
async fn upgrades_past_connect_rate_per_ip_get_429() {
    let s = start(config(&[("connect_rate_per_ip", "2")])).await;
    let mut statuses = Vec::new();
    for _ in 0..8 {
        let (status, body) = upgrade_status(s.addr, "/ws?client_id=reconnecting", &[]).await;
        if status == 429 {
            assert_eq!(body["error"]["code"], "too_many_connections", "{body}");
        }
        statuses.push(status);
    }
    // A burst of twice the rate passes; then refusals (a token may refill in between).
    assert_eq!(statuses[..4], [101; 4], "{statuses:?}");
    assert!(statuses.contains(&429), "{statuses:?}");
    // The limit is per address: another loopback address is let in.
    let other = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let mut ws = connect_from(other, s.addr, "/ws?client_id=elsewhere", &[]).await;
    assert_eq!(next_json(&mut ws).await["type"], "welcome");
    // The bucket refills at the configured rate: half a second buys one upgrade.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (status, _) = upgrade_status(s.addr, "/ws?client_id=reconnecting", &[]).await;
    assert_eq!(status, 101);
    stop(s).await;
}
