//! Paging history (docs/history.md, "Paging"; docs/protocol.md §14): `since`, `limit` and
//! `reverse` on `GET /api/v1/history/{client_id}` and `GET /api/v1/channels/{channel}/history`
//! walk a client's and a channel's stream both ways without a gap or a repeat, on one node and
//! on Redis; bad parameters are 400, history off is 404.

mod common;

use std::net::SocketAddr;

use common::redis::{Redis, node};
use common::*;
use serde_json::Value;

async fn get(addr: SocketAddr, path: &str) -> (u16, Value) {
    let (status, _, text) = http(addr, "GET", path, &[], "").await;
    (status, json(&text))
}

async fn post(addr: SocketAddr, path: &str, body: &str) -> u16 {
    http(addr, "POST", path, &[], body).await.0
}

/// Pushes `n` messages to `client` and publishes `n` to `channel`, nobody connected.
async fn fill(addr: SocketAddr, client: &str, channel: &str, n: usize) {
    for i in 1..=n {
        let body = format!(r#"{{"client_id":"{client}","type":"m","data":{i}}}"#);
        assert_eq!(post(addr, "/api/v1/push", &body).await, 202);
        let body = format!(r#"{{"channel":"{channel}","type":"m","data":{i}}}"#);
        assert_eq!(post(addr, "/api/v1/publish", &body).await, 200);
    }
}

fn seqs(page: &Value) -> Vec<u64> {
    page["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("no messages: {page}"))
        .iter()
        .map(|m| {
            // The message as it was sent: its seq in the envelope and its data.
            assert_eq!(m["data"], m["seq"], "{m}");
            m["seq"].as_u64().unwrap()
        })
        .collect()
}

/// Every page from `path` (which has a `?`) with `query`, following `next`: each page's seqs.
async fn walk(addr: SocketAddr, path: &str, query: &str) -> Vec<Vec<u64>> {
    let mut pages = Vec::new();
    let mut since = String::new();
    for _ in 0..50 {
        let (status, page) = get(addr, &format!("{path}?{query}{since}")).await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["recovered"], true, "{page}");
        pages.push(seqs(&page));
        match page["next"].as_str() {
            Some(next) => since = format!("&since={next}"),
            None => {
                assert!(page["next"].is_null(), "{page}");
                return pages;
            }
        }
    }
    panic!("paging {path} did not end");
}

/// Pages both streams of a node that holds 7 messages in each, both ways.
async fn pages_both_ways(addr: SocketAddr) {
    for path in ["/api/v1/history/inbox", "/api/v1/channels/feed/history"] {
        let forward = walk(addr, path, "limit=3").await;
        assert_eq!(forward, [vec![1, 2, 3], vec![4, 5, 6], vec![7]], "{path}");
        let reverse = walk(addr, path, "limit=3&reverse=true").await;
        assert_eq!(reverse, [vec![7, 6, 5], vec![4, 3, 2], vec![1]], "{path}");

        // From a position in the middle, each way; the answer carries the stream's top.
        let (_, top) = get(addr, path).await;
        let epoch = top["epoch"].as_str().unwrap().to_string();
        assert_eq!(top["seq"], 7);
        let (_, up) = get(addr, &format!("{path}?since={epoch}:4&limit=2")).await;
        assert_eq!(
            (seqs(&up), up["next"].clone()),
            (vec![5, 6], Value::from(format!("{epoch}:6")))
        );
        let (_, down) = get(
            addr,
            &format!("{path}?since={epoch}:4&limit=2&reverse=true"),
        )
        .await;
        assert_eq!(
            (seqs(&down), down["next"].clone()),
            (vec![4, 3], Value::from(format!("{epoch}:2")))
        );

        // Caught up, or of another stream's epoch: nothing, and no next.
        let (_, done) = get(addr, &format!("{path}?since={epoch}:7")).await;
        assert_eq!(
            (seqs(&done).len(), done["recovered"].as_bool()),
            (0, Some(true))
        );
        assert!(done["next"].is_null());
        let (_, other) = get(addr, &format!("{path}?since=zzzz:3&reverse=true")).await;
        assert_eq!(
            (seqs(&other).len(), other["recovered"].as_bool()),
            (0, Some(false))
        );
    }
}

#[tokio::test]
async fn a_client_and_a_channel_stream_page_both_ways_on_one_node() {
    let s = start(config(&[("history_size", "200")])).await;
    fill(s.addr, "inbox", "feed", 7).await;
    pages_both_ways(s.addr).await;

    // Without `limit`, a page is 100 messages.
    fill(s.addr, "big", "big-feed", 120).await;
    let pages = walk(s.addr, "/api/v1/history/big", "").await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [100, 20]);
    let pages = walk(
        s.addr,
        "/api/v1/channels/big-feed/history",
        "reverse=true&limit=1000",
    )
    .await;
    assert_eq!(pages, [(1..=120).rev().collect::<Vec<u64>>()]);

    for (path, code) in [
        ("/api/v1/history/inbox?limit=0", "invalid_body"),
        ("/api/v1/history/inbox?limit=1001", "invalid_body"),
        ("/api/v1/history/inbox?limit=ten", "invalid_body"),
        (
            "/api/v1/channels/feed/history?reverse=maybe",
            "invalid_body",
        ),
        ("/api/v1/channels/feed/history?since=nope", "invalid_body"),
        ("/api/v1/channels/a%01b/history", "bad_channel"),
    ] {
        let (status, v) = get(s.addr, path).await;
        assert_eq!(
            (status, v["error"]["code"].as_str()),
            (400, Some(code)),
            "{path}"
        );
    }
    // A stream nobody wrote to: the start position, nothing in it.
    let (status, v) = get(s.addr, "/api/v1/channels/quiet/history?reverse=true").await;
    assert_eq!(status, 200);
    assert_eq!(
        (v["epoch"].as_str(), v["seq"].as_u64(), seqs(&v).len()),
        (Some("0"), Some(0), 0)
    );
    stop(s).await;

    let off = start(config(&[])).await;
    for path in [
        "/api/v1/history/inbox",
        "/api/v1/channels/feed/history?limit=5",
    ] {
        let (status, v) = get(off.addr, path).await;
        assert_eq!(
            (status, v["error"]["code"].as_str()),
            (404, Some("history_off")),
            "{path}"
        );
    }
    stop(off).await;
}

#[tokio::test]
async fn pages_read_the_same_from_redis_on_any_node() {
    let redis = Redis::start();
    let a = node(&redis, "a", &[("history_size", "200")]).await;
    let b = node(&redis, "b", &[("history_size", "200")]).await;
    fill(a.addr, "inbox", "feed", 7).await;
    pages_both_ways(a.addr).await;
    pages_both_ways(b.addr).await;

    // A trimmed stream: only the newest 5 are held. Forward from the start lists them but is not
    // recovered (seqs 1 and 2 are gone); reverse pages end at the oldest held.
    let c = node(&redis, "c", &[("history_size", "5")]).await;
    fill(c.addr, "short", "short-feed", 7).await;
    let (_, start) = get(c.addr, "/api/v1/history/short?limit=10").await;
    assert_eq!(
        (seqs(&start), start["recovered"].as_bool()),
        (vec![3, 4, 5, 6, 7], Some(false))
    );
    let reverse = walk(
        c.addr,
        "/api/v1/channels/short-feed/history",
        "reverse=true&limit=2",
    )
    .await;
    assert_eq!(reverse, [vec![7, 6], vec![5, 4], vec![3]]);
    let epoch = start["epoch"].as_str().unwrap();
    let (_, gone) = get(c.addr, &format!("/api/v1/history/short?since={epoch}:1")).await;
    assert_eq!(
        (seqs(&gone).len(), gone["recovered"].as_bool()),
        (0, Some(false))
    );
    for s in [a, b, c] {
        stop(s).await;
    }
}

#[tokio::test]
async fn the_embedding_handle_pages_history_too() {
    let s = start(config(&[("history_size", "20")])).await;
    fill(s.addr, "inbox", "feed", 5).await;
    let page = s
        .handle
        .history(tether::HistoryOf::Channel("feed"), None, 2, true)
        .await
        .unwrap()
        .unwrap();
    assert!(page.recovered);
    assert_eq!(page.seq, 5);
    let got: Vec<u64> = page
        .messages
        .iter()
        .map(|m| {
            json(std::str::from_utf8(m).unwrap())["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(got, [5, 4]);
    let next = page.next.unwrap();
    let rest = s
        .handle
        .history(tether::HistoryOf::Channel("feed"), Some(&next), 10, true)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rest.messages.len(), 3);
    assert!(rest.next.is_none());
    stop(s).await;
}
