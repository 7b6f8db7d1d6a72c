//! A cluster on a Redis Cluster (docs/protocol.md §9, docs/cluster.md § Redis Cluster): three
//! real masters made with `redis-cli --cluster create`. The scenarios every topology shares run
//! in tests/cluster.rs and the others through `on_redis_and_cluster!`; here is what only a
//! Redis Cluster has: a push's step runs on one shard, a killed shard master is replaced by its
//! replica under a steady push load with every push accounted for, and a slot that moves to
//! another master keeps delivering.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::redis::node;
use common::redis_cluster::RedisCluster;
use common::*;
use serde_json::Value;

async fn post(addr: SocketAddr, path: &str, body: &str) -> (u16, Value) {
    let (status, _, text) = http(addr, "POST", path, &[], body).await;
    (status, json(&text))
}

/// Calls of `command` on the Redis at `port` since the last reset.
fn calls(port: u16, command: &str) -> u64 {
    RedisCluster::commandstats(port)
        .into_iter()
        .filter(|(c, _)| c == command)
        .map(|(_, n)| n)
        .sum()
}

/// The shard holding a client id's keys and topic (its hash tag `{c:<id>}`).
fn shard_of(cluster: &RedisCluster, client_id: &str) -> u16 {
    let slot = cluster.slot_of(&format!("{{c:{client_id}}}"));
    cluster
        .port_of_slot(slot)
        .expect("a master serves the slot")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_runs_on_the_client_ids_shard_and_nowhere_else() {
    const PUSHES: u64 = 200;
    let cluster = RedisCluster::start();
    let h = [("history_size", "100")];
    let (a, b) = (node(&cluster, "a", &h).await, node(&cluster, "b", &h).await);
    let (mut alice, _) = connect(b.addr, "alice").await;
    let home = shard_of(&cluster, "alice");
    cluster.reset_stats();
    for n in 0..PUSHES {
        let body = format!(r#"{{"client_id":"alice","type":"m","data":{n}}}"#);
        let (status, v) = post(a.addr, "/api/v1/push", &body).await;
        assert_eq!((status, v["delivered"].as_u64()), (200, Some(1)), "{v}");
        assert_eq!(recv_json(&mut alice).await["data"], n);
    }
    for port in cluster.master_ports() {
        let (scripts, spublish, publish) = (
            calls(port, "evalsha"),
            calls(port, "spublish"),
            calls(port, "publish"),
        );
        // Pushes never go through plain PUBLISH, which every shard would relay.
        assert!(
            publish < 10,
            "shard {port}: {publish} PUBLISH for {PUSHES} pushes"
        );
        if port == home {
            assert!(
                scripts >= PUSHES && spublish >= PUSHES,
                "alice's shard {port}: {scripts} scripts, {spublish} SPUBLISH"
            );
        } else {
            // Only the nodes' upkeep runs scripts elsewhere (a few per second); the origin's
            // shard also carries the delivery answers (one SPUBLISH per push).
            assert!(
                scripts < PUSHES / 2,
                "shard {port} ran {scripts} scripts for {PUSHES} pushes to alice"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_shard_master_is_replaced_and_every_push_is_accounted_for() {
    let cluster = RedisCluster::start_with_replicas();
    failover::account_for_every_push("redis cluster", cluster, false, |c| {
        let port = shard_of(c, "alice");
        c.kill_master(port)
    })
    .await;
}

/// A client id whose slot moves to another master (as a resharding does) goes on receiving
/// pushes from any node: the crate follows the move and resubscribes its topic there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_slot_keeps_delivering() {
    let cluster = RedisCluster::start();
    let h = [("history_size", "100")];
    let (a, b) = (node(&cluster, "a", &h).await, node(&cluster, "b", &h).await);
    let (mut alice, welcome) = connect(b.addr, "alice").await;
    let epoch = welcome["data"]["epoch"].as_str().unwrap().to_string();
    let from = shard_of(&cluster, "alice");
    let (status, v) = post(
        a.addr,
        "/api/v1/push",
        r#"{"client_id":"alice","type":"m","data":0}"#,
    )
    .await;
    assert_eq!((status, v["delivered"].as_u64()), (200, Some(1)), "{v}");
    assert_eq!(recv_json(&mut alice).await["data"], 0);
    let slot = cluster.slot_of("{c:alice}");
    let to = cluster.move_slot(slot);
    assert_ne!(from, to);
    assert_eq!(cluster.port_of_slot(slot), Some(to));
    // Delivery comes back by itself (bounded); nothing arrives twice.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut sent = 1u64;
    let mut delivered_after = None;
    let mut answers = Vec::new();
    while Instant::now() < deadline {
        let body = format!(r#"{{"client_id":"alice","type":"m","data":{sent}}}"#);
        let (status, v) = post(a.addr, "/api/v1/push", &body).await;
        sent += 1;
        answers.push((status, v.to_string()));
        if status == 200 && v["delivered"] == 1 {
            delivered_after = Some(sent - 1);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let Some(last) = delivered_after else {
        answers.dedup();
        panic!("no push delivered after the slot moved: {answers:?}");
    };
    let mut seen: HashMap<u64, usize> = HashMap::new();
    loop {
        let m = recv_json(&mut alice).await;
        let n = m["data"].as_u64().expect("a push");
        *seen.entry(n).or_default() += 1;
        if n == last {
            break;
        }
    }
    assert!(seen.values().all(|c| *c == 1), "delivered twice: {seen:?}");
    // The new master cannot tell a moved stream from one a failover may have cut short, so
    // the stream goes on in a new epoch: a resume from before the move is told so, never
    // silently taken for complete.
    let path = format!("/ws?client_id=alice&since={epoch}:1");
    let mut again = connect_raw(a.addr, &path).await.unwrap();
    let resume = recv_json(&mut again).await;
    assert_eq!(resume["data"]["recovered"], false, "{resume}");
}
