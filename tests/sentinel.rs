//! A cluster on a Sentinel-managed Redis (docs/protocol.md §9, docs/cluster.md): nodes find the
//! master through three real `redis-sentinel` processes, and when the master is killed under a
//! steady push load they follow the promoted replica by themselves. Every push is accounted
//! for: delivered once, answered 504 (unknown), or reported lost by a `recovered: false`
//! resume; none silently missing, none delivered twice, none refused (503) and delivered.

mod common;

use std::net::SocketAddr;

use common::redis::node;
use common::sentinel::Sentinels;
use common::*;
use serde_json::Value;

async fn post(addr: SocketAddr, path: &str, body: &str) -> (u16, Value) {
    let (status, _, text) = http(addr, "POST", path, &[], body).await;
    (status, json(&text))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_follow_a_failover_and_account_for_every_push() {
    failover::account_for_every_push("sentinel", Sentinels::start(), true, |set| set.fail_over())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_protected_set_is_reached_with_the_sentinel_urls_password() {
    let set = Sentinels::start_with(Some("s3cret-pass"));
    let (a, b) = (node(&set, "a", &[]).await, node(&set, "b", &[]).await);
    let (mut ws, _) = connect(b.addr, "carol").await;
    let (status, v) = post(
        a.addr,
        "/api/v1/push",
        r#"{"client_id":"carol","type":"m","data":1}"#,
    )
    .await;
    assert_eq!((status, v["delivered"].as_u64()), (200, Some(1)), "{v}");
    assert_eq!(recv_json(&mut ws).await["data"], 1);
    // The nodes' heartbeats reached the master: it holds their entries.
    let nodes = set
        .ask(set.master.port, "ZCARD tether:nodes")
        .unwrap_or_default();
    assert!(nodes.contains(":2"), "{nodes}");
}
