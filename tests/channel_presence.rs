//! Channel presence (docs/protocol.md §14): `join` / `leave` once per client id, on one node and
//! across nodes sharing a real redis-server; a return within `presence_grace` is no event; a
//! killed node's clients leave; `GET /api/v1/channels/{c}/presence`, `GET /api/v1/channels`
//! (paged) and the client `presence` command answer for every node.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::redis::{Topology, node, wait_status};
use common::*;
use serde_json::{Value, json};

async fn get(addr: SocketAddr, path: &str) -> Value {
    let (status, _, text) = http(addr, "GET", path, &[], "").await;
    assert_eq!(status, 200, "{path}: {text}");
    common::json(&text)
}

/// Subscribes and waits for `subscribed` (skipping channel messages that arrive meanwhile).
async fn subscribe(ws: &mut Ws, channel: &str) {
    send_json(
        ws,
        &json!({"type":"subscribe","data":{"channel":channel}}).to_string(),
    )
    .await;
    loop {
        let v = recv_json(ws).await;
        if v["type"] == "subscribed" {
            return;
        }
        assert!(v["channel"].is_string(), "{v}");
    }
}

/// A subscriber that records every `join` / `leave` it gets.
struct Observer {
    ws: Ws,
    events: Vec<(String, String)>,
    markers: u32,
}

impl Observer {
    async fn new(addr: SocketAddr, client: &str, channel: &str) -> Observer {
        let (mut ws, _) = connect(addr, client).await;
        subscribe(&mut ws, channel).await;
        Observer {
            ws,
            events: Vec::new(),
            markers: 0,
        }
    }

    /// Reads until `kind` for `client` arrived (bounded by the harness's wait).
    async fn until(&mut self, kind: &str, client: &str) -> Duration {
        let t = Instant::now();
        loop {
            let v = recv_json(&mut self.ws).await;
            if self
                .record(&v)
                .is_some_and(|e| e == (kind.to_string(), client.to_string()))
            {
                return t.elapsed();
            }
        }
    }

    fn record(&mut self, v: &Value) -> Option<(String, String)> {
        let kind = v["type"].as_str().unwrap_or_default();
        if kind != "join" && kind != "leave" {
            return None;
        }
        assert_eq!(v["data"]["channel"], v["channel"], "{v}");
        let e = (
            kind.to_string(),
            v["data"]["client_id"].as_str().unwrap().to_string(),
        );
        self.events.push(e.clone());
        Some(e)
    }

    /// Lets `quiet` pass (no event is awaited: this checks that none comes), then publishes a
    /// marker through `via` and records every event before it.
    async fn settle(&mut self, via: SocketAddr, channel: &str, quiet: Duration) {
        tokio::time::sleep(quiet).await;
        self.markers += 1;
        let body = json!({"channel":channel,"type":"marker","data":self.markers}).to_string();
        let (status, _, text) = http(via, "POST", "/api/v1/publish", &[], &body).await;
        assert_eq!(status, 200, "{text}");
        loop {
            let v = recv_json(&mut self.ws).await;
            if v["type"] == "marker" && v["data"] == self.markers {
                return;
            }
            self.record(&v);
        }
    }

    fn count(&self, kind: &str, client: &str) -> usize {
        self.events
            .iter()
            .filter(|(k, c)| k == kind && c == client)
            .count()
    }
}

/// The next frame that is not a presence event.
async fn reply(ws: &mut Ws) -> Value {
    loop {
        let v = recv_json(ws).await;
        if v["type"] != "join" && v["type"] != "leave" {
            return v;
        }
    }
}

fn clients(v: &Value) -> Vec<(String, u64)> {
    v["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["client_id"].as_str().unwrap().to_string(),
                c["sessions"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn pairs(v: &[(&str, u64)]) -> Vec<(String, u64)> {
    v.iter().map(|(c, n)| (c.to_string(), *n)).collect()
}

#[tokio::test]
async fn one_node_two_tabs_join_once_and_leave_once_after_the_grace() {
    let grace = Duration::from_millis(300);
    let s = start(config(&[
        ("presence_channels", "lobby*"),
        ("presence_grace", "300ms"),
    ]))
    .await;
    let mut obs = Observer::new(s.addr, "obs", "lobby").await;
    obs.until("join", "obs").await;

    let (mut tab1, _) = connect(s.addr, "alice").await;
    let (mut tab2, _) = connect(s.addr, "alice").await;
    subscribe(&mut tab1, "lobby").await;
    subscribe(&mut tab2, "lobby").await;
    obs.until("join", "alice").await;

    // Presence, the listing and the command agree.
    let p = get(s.addr, "/api/v1/channels/lobby/presence").await;
    assert_eq!(p["channel"], "lobby");
    assert_eq!(p["sessions"], 3, "{p}");
    assert_eq!(clients(&p), pairs(&[("alice", 2), ("obs", 1)]));
    let page = get(
        s.addr,
        "/api/v1/channels/lobby/presence?limit=1&after=alice",
    )
    .await;
    assert_eq!(clients(&page), pairs(&[("obs", 1)]), "{page}");
    send_json(
        &mut obs.ws,
        r#"{"type":"presence","id":7,"data":{"channel":"lobby"}}"#,
    )
    .await;
    let answer = reply(&mut obs.ws).await;
    assert_eq!(answer["type"], "presence", "{answer}");
    assert_eq!(answer["id"], 7);
    assert_eq!(clients(&answer["data"]), pairs(&[("alice", 2), ("obs", 1)]));

    // One tab goes: nothing; the other goes: one leave, after the grace.
    drop(tab1);
    obs.settle(s.addr, "lobby", grace * 2).await;
    assert_eq!(obs.count("leave", "alice"), 0, "{:?}", obs.events);
    let gone = Instant::now();
    drop(tab2);
    obs.until("leave", "alice").await;
    assert!(gone.elapsed() >= grace, "left before the grace");
    obs.settle(s.addr, "lobby", grace * 2).await;
    assert_eq!(obs.count("join", "alice"), 1, "{:?}", obs.events);
    assert_eq!(obs.count("leave", "alice"), 1, "{:?}", obs.events);
    let p = get(s.addr, "/api/v1/channels/lobby/presence").await;
    assert_eq!(clients(&p), pairs(&[("obs", 1)]));
    let text = http(s.addr, "GET", "/metrics", &[], "").await.2;
    assert!(
        text.contains("tether_presence_events_total{type=\"leave\"} 1"),
        "{text}"
    );
    stop(s).await;
}

#[tokio::test]
async fn one_node_reconnect_within_the_grace_is_no_leave() {
    let s = start(config(&[
        ("presence_channels", "room.*,hall"),
        ("presence_grace", "2s"),
    ]))
    .await;
    let mut obs = Observer::new(s.addr, "obs", "room.1").await;
    let (mut bob, _) = connect(s.addr, "bob").await;
    subscribe(&mut bob, "room.1").await;
    obs.until("join", "bob").await;
    drop(bob);
    // Within the grace bob is still there as the events have it: listed, with no session.
    let deadline = Instant::now() + Duration::from_millis(1500);
    loop {
        let p = get(s.addr, "/api/v1/channels/room.1/presence").await;
        if clients(&p) == pairs(&[("bob", 0), ("obs", 1)]) {
            assert_eq!(p["sessions"], 1, "{p}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "bob never listed in his grace: {p}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (mut bob, _) = connect(s.addr, "bob").await;
    subscribe(&mut bob, "room.1").await;
    obs.settle(s.addr, "room.1", Duration::from_millis(2500))
        .await;
    assert_eq!(obs.count("leave", "bob"), 0, "{:?}", obs.events);
    assert_eq!(obs.count("join", "bob"), 1, "{:?}", obs.events);

    // Not a presence channel, or not subscribed: forbidden. Reserved types stay the server's.
    subscribe(&mut bob, "plain").await;
    for ch in ["plain", "hall"] {
        send_json(
            &mut bob,
            &json!({"type":"presence","data":{"channel":ch}}).to_string(),
        )
        .await;
        let v = reply(&mut bob).await;
        assert_eq!(v["data"]["code"], "forbidden", "{ch}: {v}");
    }
    let (status, _, text) = http(
        s.addr,
        "POST",
        "/api/v1/publish",
        &[],
        r#"{"channel":"room.1","type":"join","data":{}}"#,
    )
    .await;
    assert_eq!(status, 400, "{text}");
    let (status, _, text) = http(s.addr, "GET", "/api/v1/channels/%07/presence", &[], "").await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("bad_channel"), "{text}");

    // The listing pages by name.
    let all = get(s.addr, "/api/v1/channels").await;
    assert_eq!(
        all,
        json!([{"channel":"plain","sessions":1},{"channel":"room.1","sessions":2}])
    );
    let first = get(s.addr, "/api/v1/channels?limit=1").await;
    assert_eq!(first, json!([{"channel":"plain","sessions":1}]));
    let next = get(s.addr, "/api/v1/channels?limit=1&after=plain").await;
    assert_eq!(next, json!([{"channel":"room.1","sessions":2}]));
    let prefixed = get(s.addr, "/api/v1/channels?prefix=room.").await;
    assert_eq!(prefixed, json!([{"channel":"room.1","sessions":2}]));
    stop(s).await;
}

/// Signed: the events are sealed by the node and published by the Redis step that decides them.
const CLUSTER_KEYS: &[(&str, &str)] = &[
    ("presence_channels", "lobby"),
    ("presence_grace", "500ms"),
    ("cluster_secret", "0123456789abcdef0123456789abcdef"),
];

async fn across_nodes_each_client_id_joins_and_leaves_once(redis: &impl Topology) {
    let a = node(redis, "a", CLUSTER_KEYS).await;
    let b = node(redis, "b", CLUSTER_KEYS).await;
    let c = node(redis, "c", CLUSTER_KEYS).await;
    let quiet = Duration::from_millis(1200);
    let mut obs = Observer::new(a.addr, "obs", "lobby").await;
    obs.until("join", "obs").await;

    // Two tabs of alice on two nodes, bob on a third: one join each.
    let (mut alice_b, _) = connect(b.addr, "alice").await;
    let (mut alice_c, _) = connect(c.addr, "alice").await;
    subscribe(&mut alice_b, "lobby").await;
    subscribe(&mut alice_c, "lobby").await;
    let (mut bob, _) = connect(c.addr, "bob").await;
    subscribe(&mut bob, "lobby").await;
    obs.until("join", "alice").await;
    obs.until("join", "bob").await;

    // Every node answers for the whole cluster.
    for n in [&a, &b, &c] {
        let p = get(n.addr, "/api/v1/channels/lobby/presence").await;
        assert_eq!(p["sessions"], 4, "{p}");
        assert_eq!(clients(&p), pairs(&[("alice", 2), ("bob", 1), ("obs", 1)]));
    }
    subscribe(&mut bob, "other").await;
    let page = get(b.addr, "/api/v1/channels?limit=1").await;
    assert_eq!(page, json!([{"channel":"lobby","sessions":4}]));
    let page = get(b.addr, "/api/v1/channels?limit=5&after=lobby").await;
    assert_eq!(page, json!([{"channel":"other","sessions":1}]));
    send_json(
        &mut bob,
        r#"{"type":"presence","id":"q","data":{"channel":"lobby"}}"#,
    )
    .await;
    let answer = reply(&mut bob).await;
    assert_eq!(answer["id"], "q");
    assert_eq!(answer["data"]["sessions"], 4, "{answer}");

    // alice's tab on b goes and comes back on a within the grace: no leave, no join.
    drop(alice_b);
    let (mut alice_a, _) = connect(a.addr, "alice").await;
    subscribe(&mut alice_a, "lobby").await;
    obs.settle(a.addr, "lobby", quiet).await;
    assert_eq!(obs.count("leave", "alice"), 0, "{:?}", obs.events);

    // Her last two tabs go (on two nodes): one leave.
    drop(alice_c);
    drop(alice_a);
    obs.until("leave", "alice").await;
    obs.settle(a.addr, "lobby", quiet).await;
    for (kind, client, n) in [
        ("join", "alice", 1),
        ("leave", "alice", 1),
        ("join", "bob", 1),
    ] {
        assert_eq!(
            obs.count(kind, client),
            n,
            "{kind} {client}: {:?}",
            obs.events
        );
    }
    let p = get(b.addr, "/api/v1/channels/lobby/presence").await;
    assert_eq!(clients(&p), pairs(&[("bob", 1), ("obs", 1)]));
}

async fn a_killed_node_makes_its_clients_leave(redis: &impl Topology) {
    let a = node(redis, "a", CLUSTER_KEYS).await;
    let mut args: Vec<String> = [
        "--node-id",
        "doomed",
        "--node-ttl",
        "2s",
        "--presence-channels",
        "lobby",
        "--presence-grace",
        "500ms",
        "--cluster-secret",
        "0123456789abcdef0123456789abcdef",
    ]
    .map(String::from)
    .to_vec();
    args.extend(redis.args());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let cmd = tether_cmd(env!("CARGO_BIN_EXE_tether"), &args);
    let (child, doomed) = spawn(cmd).await;
    wait_status(doomed, "ok").await;
    let mut obs = Observer::new(a.addr, "obs", "lobby").await;
    let (mut kate, _) = connect(doomed, "kate").await;
    subscribe(&mut kate, "lobby").await;
    obs.until("join", "kate").await;

    signal(&child, libc::SIGKILL);
    let killed = Instant::now();
    obs.until("leave", "kate").await;
    // node_ttl 2 s, a heartbeat round, the grace, and slack for two shared cores.
    assert!(
        killed.elapsed() < Duration::from_secs(6),
        "leave took {:?}",
        killed.elapsed()
    );
    obs.settle(a.addr, "lobby", Duration::from_millis(1000))
        .await;
    assert_eq!(obs.count("leave", "kate"), 1, "{:?}", obs.events);
    let p = get(a.addr, "/api/v1/channels/lobby/presence").await;
    assert_eq!(clients(&p), pairs(&[("obs", 1)]));
    drop(kate);
}

async fn a_node_that_shuts_down_makes_its_clients_leave(redis: &impl Topology) {
    let long_grace = [("presence_channels", "lobby"), ("presence_grace", "2s")];
    let a = node(redis, "a", &long_grace).await;
    let mut keys = long_grace.to_vec();
    keys.push(("shutdown_timeout", "1s"));
    let b = node(redis, "b", &keys).await;
    let mut obs = Observer::new(a.addr, "obs", "lobby").await;
    let (mut lena, _) = connect(b.addr, "lena").await;
    subscribe(&mut lena, "lobby").await;
    obs.until("join", "lena").await;
    // The drain closes lena's session; the node leaves the cluster without waiting for node_ttl.
    let stopping = tokio::spawn(stop(b));
    // Within the grace the cluster lists her as still there, with no session.
    let deadline = Instant::now() + Duration::from_millis(1800);
    loop {
        let p = get(a.addr, "/api/v1/channels/lobby/presence").await;
        if clients(&p) == pairs(&[("lena", 0), ("obs", 1)]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "lena never listed in her grace: {p}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    obs.until("leave", "lena").await;
    let _ = stopping.await;
    drop(lena);
}

on_redis_and_cluster!(
    a_killed_node_makes_its_clients_leave,
    across_nodes_each_client_id_joins_and_leaves_once,
    a_node_that_shuts_down_makes_its_clients_leave,
);
