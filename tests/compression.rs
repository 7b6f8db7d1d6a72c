//! permessage-deflate (docs/protocol.md §11) against a real server with a client that negotiates and
//! inflates by itself: the negotiation's answer, one compressed form per fan-out going to every
//! negotiated client (and the plain frame to the others), smaller bytes on the wire, the
//! `compression_min_size` threshold, compressed client messages, and a compression bomb that
//! gets 1009 while the other sessions go on.

mod common;

use common::deflate::{DeflateClient, frame};
use common::*;
use serde_json::Value;

const OFFER: &str = "permessage-deflate; client_max_window_bits";
const ANSWER: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

fn on(extra: &[(&str, &str)]) -> tether::Config {
    let mut pairs = vec![("compression", "true")];
    pairs.extend_from_slice(extra);
    config(&pairs)
}

/// A 2 KiB JSON document shaped like a game-state push.
fn json_2k() -> String {
    let mut players = Vec::new();
    let mut i = 0;
    while players.iter().map(String::len).sum::<usize>() < 2000 {
        players.push(format!(
            "{{\"id\":\"player-{i:04}\",\"x\":{},\"y\":{},\"hp\":{},\"team\":\"{}\"}}",
            i * 37 % 1000,
            i * 91 % 1000,
            100 - i % 100,
            if i % 2 == 0 { "red" } else { "blue" }
        ));
        i += 1;
    }
    format!("{{\"tick\":42,\"players\":[{}]}}", players.join(","))
}

async fn deflate_client(
    addr: std::net::SocketAddr,
    id: &str,
) -> DeflateClient<tokio::net::TcpStream> {
    let mut c = DeflateClient::connect(addr, &format!("/ws?client_id={id}"), Some(OFFER)).await;
    assert_eq!(c.extensions.as_deref(), Some(ANSWER));
    let welcome = c.next_data().await;
    assert!(
        !welcome.compressed,
        "a welcome is under compression_min_size"
    );
    assert_eq!(json(&welcome.text())["type"], "welcome");
    c
}

#[tokio::test]
async fn the_answer_follows_the_offer() {
    let s = start(on(&[])).await;
    let path = "/ws?client_id=n";
    let answer = |offer: &'static str| async move {
        DeflateClient::connect(s.addr, path, Some(offer))
            .await
            .extensions
    };
    assert_eq!(answer(OFFER).await.as_deref(), Some(ANSWER));
    assert_eq!(
        answer("permessage-deflate; server_max_window_bits=10; client_max_window_bits").await,
        Some(format!("{ANSWER}; server_max_window_bits=10"))
    );
    // A window tether cannot use is declined; the next offer is taken.
    assert_eq!(
        answer("permessage-deflate; server_max_window_bits=8").await,
        None
    );
    let two = "permessage-deflate; server_max_window_bits=8, permessage-deflate";
    assert_eq!(answer(two).await.as_deref(), Some(ANSWER));
    // Malformed, repeated or unknown parameters: no compression, but the upgrade succeeds.
    for bad in [
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; client_max_window_bits=99",
        "permessage-deflate; mystery",
        "permessage-deflate; server_max_window_bits=\"",
    ] {
        assert_eq!(answer(bad).await, None, "{bad}");
    }
    stop(s).await;
}

#[tokio::test]
async fn nothing_is_negotiated_with_compression_off_and_rsv1_is_a_protocol_error() {
    let s = start(config(&[])).await;
    let mut c = DeflateClient::connect(s.addr, "/ws?client_id=off", Some(OFFER)).await;
    assert_eq!(c.extensions, None);
    assert!(!c.next_data().await.compressed);
    c.send_text(r#"{"type":"heartbeat"}"#, true, 1).await;
    assert_eq!(c.close_code().await, Some(1002));
    stop(s).await;
}

#[tokio::test]
async fn a_broadcast_reaches_compressed_and_plain_clients_alike() {
    let s = start(on(&[])).await;
    let mut compressed = Vec::new();
    for i in 0..3 {
        compressed.push(deflate_client(s.addr, &format!("z{i}")).await);
    }
    let (mut plain, _) = connect(s.addr, "plain").await;
    let data = json_2k();
    assert_eq!(s.handle.broadcast("state", Some(&data)).await.delivered, 4);
    let mut wire = Vec::new();
    for c in &mut compressed {
        let m = c.next_data().await;
        assert!(m.compressed, "2 KiB goes compressed");
        let v: Value = json(&m.text());
        assert_eq!(v["type"], "state");
        assert_eq!(v["data"], json(&data));
        wire.push(m.wire_len);
        assert!(
            m.wire_len * 3 < m.payload.len(),
            "{} of {}",
            m.wire_len,
            m.payload.len()
        );
    }
    assert!(
        wire.iter().all(|w| *w == wire[0]),
        "one compressed form: {wire:?}"
    );
    let v = recv_json(&mut plain).await;
    assert_eq!(
        v["data"],
        json(&data),
        "the plain client gets the plain frame"
    );

    // A channel publish and a push to a client id with two sessions go the same way.
    let mut second = deflate_client(s.addr, "z0").await;
    assert_eq!(
        s.handle
            .push("z0", "direct", Some(&data))
            .await
            .unwrap()
            .map(|sent| sent.delivered),
        Some(2)
    );
    for c in [&mut compressed[0], &mut second] {
        let m = c.next_data().await;
        assert!(m.compressed);
        assert_eq!(json(&m.text())["type"], "direct");
    }
    stop(s).await;
}

#[tokio::test]
async fn messages_under_compression_min_size_go_plain() {
    let s = start(on(&[("compression_min_size", "1024")])).await;
    let mut c = deflate_client(s.addr, "small").await;
    let under = format!("\"{}\"", "a".repeat(900));
    s.handle.push("small", "t", Some(&under)).await.unwrap();
    let m = c.next_data().await;
    assert!(!m.compressed, "{} bytes stay plain", m.payload.len());
    let over = format!("\"{}\"", "a".repeat(1100));
    s.handle.push("small", "t", Some(&over)).await.unwrap();
    let m = c.next_data().await;
    assert!(m.compressed);
    assert_eq!(json(&m.text())["data"], json(&over));
    stop(s).await;
}

#[tokio::test]
async fn compressed_client_messages_are_inflated_whole_or_fragmented() {
    let s = start(on(&[("client_publish", "true")])).await;
    let mut c = deflate_client(s.addr, "talker").await;
    let pad = "x".repeat(2000);
    let sub = format!(r#"{{"type":"subscribe","id":"{pad}","data":{{"channel":"room"}}}}"#);
    c.send_text(&sub, true, 1).await;
    let m = c.next_data().await;
    assert_eq!(json(&m.text())["type"], "subscribed");
    let publish = format!(
        r#"{{"type":"publish","data":{{"channel":"room","type":"say","data":{}}}}}"#,
        json_2k()
    );
    c.send_text(&publish, true, 5).await;
    let mut types = Vec::new();
    for _ in 0..2 {
        let m = c.next_data().await;
        types.push(json(&m.text())["type"].as_str().unwrap().to_string());
    }
    types.sort();
    assert_eq!(types, ["published", "say"]);
    stop(s).await;
}

#[tokio::test]
async fn a_compression_bomb_gets_1009_and_nobody_else_notices() {
    let s = start(on(&[("max_message_size", "65536")])).await;
    let mut bomber = deflate_client(s.addr, "bomber").await;
    let mut bystander = deflate_client(s.addr, "bystander").await;
    // 16 MiB of spaces deflate to about 16 KiB: under the limit on the wire, far over inflated.
    let bomb = common::deflate::deflate(&vec![b' '; 16 << 20]);
    assert!(bomb.len() < 65536, "{}", bomb.len());
    bomber.send_raw(&frame(true, true, 1, &bomb)).await;
    assert_eq!(bomber.close_code().await, Some(1009));
    bystander
        .send_text(r#"{"type":"heartbeat","id":"still here"}"#, true, 1)
        .await;
    let ack = json(&bystander.next_data().await.text());
    assert_eq!(ack["type"], "heartbeat_ack");
    assert_eq!(
        s.handle
            .broadcast("after", Some(&json_2k()))
            .await
            .delivered,
        1
    );
    assert!(bystander.next_data().await.compressed);
    stop(s).await;
}
