//! A cluster (docs/protocol.md §9): several nodes on one real redis-server behave as one big node —
//! pushes, publishes, broadcasts, presence, listings, idempotency keys and history cross nodes;
//! a node killed with SIGKILL drops out within `node_ttl` and its client resumes elsewhere with
//! nothing lost; a Redis outage degrades to local delivery and heals by itself.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::redis::{Outage, Redis, Topology, node, wait_status};
use common::redis_cluster::RedisCluster;
use common::sentinel::Sentinels;
use common::*;
use serde_json::Value;

async fn post(addr: SocketAddr, path: &str, body: &str) -> (u16, Value) {
    let (status, _, text) = http(addr, "POST", path, &[], body).await;
    (status, json(&text))
}

async fn get(addr: SocketAddr, path: &str) -> Value {
    let (status, _, text) = http(addr, "GET", path, &[], "").await;
    assert_eq!(status, 200, "{path}: {text}");
    json(&text)
}

/// Waits (bounded) until `check` holds for the JSON at `path`.
async fn eventually(
    addr: SocketAddr,
    path: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let v = get(addr, path).await;
        if check(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{what} never held: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Connects with `path` (carrying `since`) and checks the resume: `recovered`, `missed` messages.
async fn resumed(addr: SocketAddr, path: &str, missed: u64) -> (Ws, Value) {
    let mut ws = connect_raw(addr, path).await.unwrap();
    let welcome = recv_json(&mut ws).await;
    let data = &welcome["data"];
    assert_eq!(
        (data["recovered"].as_bool(), data["missed"].as_u64()),
        (Some(true), Some(missed)),
        "{welcome}"
    );
    (ws, welcome)
}

/// Pushes `kind` to `client_id` through `via` until one session got it (bounded): delivery
/// coming back after an outage or a stall.
async fn push_until_delivered(via: SocketAddr, client_id: &str, kind: &str) {
    let body = format!(r#"{{"client_id":"{client_id}","type":"{kind}"}}"#);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, v) = post(via, "/api/v1/push", &body).await;
        if status == 200 && v["delivered"] == 1 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "delivery never came back: {status} {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn three_nodes_deliver_list_and_count_as_one(redis: &impl Topology) {
    let (a, b, c) = (
        node(redis, "a", &[]).await,
        node(redis, "b", &[]).await,
        node(redis, "c", &[]).await,
    );
    let (mut alice, _) = connect(a.addr, "alice").await;
    let (mut bob, welcome) = connect(b.addr, "bob").await;
    let bob_session = welcome["data"]["session_id"].as_str().unwrap().to_string();

    // A push on B to a client on A arrives byte for byte.
    let data = r#"{"text":"héllo ✓","n":[1,2.5e3,null],"nested":{"a":"\"q\""}}"#;
    let (status, v) = post(
        b.addr,
        "/api/v1/push",
        &format!(r#"{{"client_id":"alice","type":"note","data":{data}}}"#),
    )
    .await;
    assert_eq!((status, &v["delivered"]), (200, &Value::from(1)), "{v}");
    let raw = recv_text(&mut alice).await;
    assert!(raw.contains(&format!("\"data\":{data}")), "{raw}");

    // A publish on C reaches subscribers on A and B.
    for ws in [&mut alice, &mut bob] {
        send_json(ws, r#"{"type":"subscribe","data":{"channel":"scores"}}"#).await;
        assert_eq!(recv_json(ws).await["type"], "subscribed");
    }
    let (status, v) = post(
        c.addr,
        "/api/v1/publish",
        r#"{"channel":"scores","type":"goal","data":{"home":1}}"#,
    )
    .await;
    assert_eq!((status, v["delivered"].as_u64()), (200, Some(2)), "{v}");
    assert!(v.get("partial").is_none(), "{v}");
    for ws in [&mut alice, &mut bob] {
        let m = recv_json(ws).await;
        assert_eq!(
            (m["type"].as_str(), m["channel"].as_str()),
            (Some("goal"), Some("scores"))
        );
    }

    // Presence and listings from any node.
    let (_alice_on_c, _) = connect(c.addr, "alice").await;
    for n in [&a, &b, &c] {
        let p = get(n.addr, "/api/v1/presence/alice").await;
        assert_eq!(p["online"], true, "{p}");
        assert_eq!(p["sessions"], 2, "{p}");
        let mut nodes: Vec<&str> = p["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        nodes.sort_unstable();
        assert_eq!(nodes, ["a", "c"]);
        let list = get(n.addr, "/api/v1/sessions?client_id=alice").await;
        let mut on: Vec<&str> = list
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s["node"].as_str())
            .collect();
        on.sort_unstable();
        assert_eq!(on, ["a", "c"], "{list}");
    }
    assert_eq!(
        get(a.addr, "/api/v1/presence/nobody").await["online"],
        false
    );

    // A broadcast counts every node's sessions.
    let (_, v) = post(a.addr, "/api/v1/broadcast", r#"{"type":"all","data":1}"#).await;
    assert_eq!(v["delivered"], 3, "{v}");
    assert_eq!(recv_json(&mut bob).await["type"], "all");

    // One session by id on another node: pushed to, then closed with 4002.
    let (status, v) = post(
        c.addr,
        "/api/v1/push",
        &format!(r#"{{"session_id":"{bob_session}","type":"direct"}}"#),
    )
    .await;
    assert_eq!((status, v["delivered"].as_u64()), (200, Some(1)), "{v}");
    assert_eq!(recv_json(&mut bob).await["type"], "direct");
    let (status, _, body) = http(
        c.addr,
        "DELETE",
        &format!("/api/v1/sessions/{bob_session}"),
        &[],
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let close = recv_close(&mut bob, WAIT).await.expect("bob closed");
    assert_eq!(u16::from(close.code), 4002);
    drop(bob);
    // Once B has finished the close, the session is unknown on every node.
    let deadline = Instant::now() + Duration::from_secs(10);
    while http(
        c.addr,
        "DELETE",
        &format!("/api/v1/sessions/{bob_session}"),
        &[],
        "",
    )
    .await
    .0 != 404
    {
        assert!(Instant::now() < deadline, "closed session still listed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Nobody anywhere: 404 as on one node.
    let (status, v) = post(
        a.addr,
        "/api/v1/push",
        r#"{"client_id":"ghost","type":"x"}"#,
    )
    .await;
    assert_eq!(status, 404, "{v}");
}

async fn the_session_listing_spans_nodes_and_pages_through_all_of_them(redis: &impl Topology) {
    let (a, b) = (node(redis, "a", &[]).await, node(redis, "b", &[]).await);
    let mut held = Vec::new();
    for (addr, client) in [
        (a.addr, "a1"),
        (b.addr, "b1"),
        (a.addr, "a2"),
        (b.addr, "b2"),
        (a.addr, "a3"),
    ] {
        held.push(connect(addr, client).await.0);
    }
    let ids = |list: &Value| -> Vec<String> {
        list.as_array()
            .expect("a list")
            .iter()
            .map(|s| s["session_id"].as_str().expect("session_id").to_string())
            .collect()
    };
    let mut whole = None;
    for n in [&a, &b] {
        let list = get(n.addr, "/api/v1/sessions").await;
        let mut on: Vec<(&str, &str)> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["node"].as_str().unwrap(),
                    s["client_id"].as_str().unwrap(),
                )
            })
            .collect();
        on.sort_unstable();
        assert_eq!(
            on,
            [
                ("a", "a1"),
                ("a", "a2"),
                ("a", "a3"),
                ("b", "b1"),
                ("b", "b2")
            ],
            "{list}"
        );
        let got = ids(&list);
        let mut sorted = got.clone();
        sorted.sort_unstable();
        assert_eq!(got, sorted, "a listing is in session id order");
        assert!(whole.is_none_or(|w| w == got), "both nodes list the same");
        whole = Some(got);
    }

    // Pages of two walk through both nodes' sessions, each once.
    let (mut walked, mut after) = (Vec::new(), String::new());
    for _ in 0..5 {
        let path = match after.as_str() {
            "" => "/api/v1/sessions?limit=2".to_string(),
            id => format!("/api/v1/sessions?limit=2&after={id}"),
        };
        let page = ids(&get(b.addr, &path).await);
        assert!(page.len() <= 2, "{page:?}");
        let Some(last) = page.last() else { break };
        after = last.clone();
        walked.extend(page);
    }
    assert_eq!(Some(walked), whole);
    drop(held);
}

async fn idempotency_keys_hold_across_nodes(redis: &impl Topology) {
    let (a, b) = (node(redis, "a", &[]).await, node(redis, "b", &[]).await);
    let (mut carol, _) = connect(a.addr, "carol").await;
    let body = r#"{"client_id":"carol","type":"charge","data":7,"idempotency_key":"k-1"}"#;
    let first = post(a.addr, "/api/v1/push", body).await;
    let again = post(b.addr, "/api/v1/push", body).await;
    assert_eq!(first.0, 200);
    assert_eq!(
        first, again,
        "the repeat on another node answers as the first did"
    );
    assert_eq!(recv_json(&mut carol).await["data"], 7);
    // The key reused with another body, on either node, is refused and delivers nothing.
    let other = body.replace(r#""data":7"#, r#""data":8"#);
    for n in [&a, &b] {
        let (status, answer) = post(n.addr, "/api/v1/push", &other).await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (422, Some("idempotency_key_reused")),
            "{answer}"
        );
    }
    // Only one copy: the next frame is the marker pushed after.
    post(
        b.addr,
        "/api/v1/push",
        r#"{"client_id":"carol","type":"marker"}"#,
    )
    .await;
    assert_eq!(recv_json(&mut carol).await["type"], "marker");
    // The repeat is counted where it was answered; what Redis holds is not shown as zeros.
    let metrics = http(b.addr, "GET", "/metrics", &[], "").await.2;
    assert!(
        metrics.contains("tether_idempotent_repeats_total 1\n"),
        "{metrics}"
    );
    for held in ["tether_history_streams", "tether_idempotency_keys"] {
        assert!(!metrics.contains(held), "{held} in a cluster: {metrics}");
    }
}

async fn history_and_resume_span_nodes(redis: &impl Topology) {
    let h = [("history_size", "100")];
    let (a, b) = (node(redis, "a", &h).await, node(redis, "b", &h).await);
    // Stored while nobody is connected, then fetched on another node.
    for i in 1..=3 {
        let (status, v) = post(
            a.addr,
            "/api/v1/push",
            &format!(r#"{{"client_id":"dave","type":"m","data":{i}}}"#),
        )
        .await;
        assert_eq!(
            (status, v["stored"].as_bool(), v["seq"].as_u64()),
            (202, Some(true), Some(i)),
            "{v}"
        );
    }
    let (mut ws, welcome) = resumed(b.addr, "/ws?client_id=dave&since=0:0", 3).await;
    for i in 1..=3 {
        let m = recv_json(&mut ws).await;
        assert_eq!(
            (m["data"].as_u64(), m["seq"].as_u64()),
            (Some(i), Some(i)),
            "{m}"
        );
    }
    let epoch = welcome["data"]["epoch"].as_str().unwrap().to_string();
    // Live from the other node, numbered on.
    let (_, v) = post(
        a.addr,
        "/api/v1/push",
        r#"{"client_id":"dave","type":"m","data":4}"#,
    )
    .await;
    assert_eq!(
        (v["delivered"].as_u64(), v["seq"].as_u64()),
        (Some(1), Some(4)),
        "{v}"
    );
    assert_eq!(recv_json(&mut ws).await["seq"], 4);
    drop(ws);
    // Channel history too, resumed through subscribe on another node.
    let (_, v) = post(
        a.addr,
        "/api/v1/publish",
        r#"{"channel":"feed","type":"p","data":1}"#,
    )
    .await;
    assert_eq!(v["seq"], 1, "{v}");
    let (mut eve, _) = connect(b.addr, "eve").await;
    send_json(
        &mut eve,
        r#"{"type":"subscribe","data":{"channel":"feed","since":"0:0"}}"#,
    )
    .await;
    let sub = recv_json(&mut eve).await;
    assert_eq!(
        (sub["type"].as_str(), sub["data"]["missed"].as_u64()),
        (Some("subscribed"), Some(1)),
        "{sub}"
    );
    assert_eq!(recv_json(&mut eve).await["data"], 1);
    let (_, v) = post(
        a.addr,
        "/api/v1/publish",
        r#"{"channel":"feed","type":"p","data":2}"#,
    )
    .await;
    assert_eq!(
        (v["delivered"].as_u64(), v["seq"].as_u64()),
        (Some(1), Some(2)),
        "{v}"
    );
    assert_eq!(recv_json(&mut eve).await["data"], 2);
    // The history API on either node sees the same stream.
    let hist = get(b.addr, &format!("/api/v1/history/dave?since={epoch}:2")).await;
    let seqs: Vec<u64> = hist["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["seq"].as_u64())
        .collect();
    assert_eq!(seqs, [3, 4], "{hist}");
}

/// Runs each scenario on every Redis topology the harness can start: one server (`single::`)
/// and a Sentinel-managed master with a replica and three sentinels (`sentinel::`). The
/// scenarios that stop, pause or restart "the" Redis, or start a binary with `--redis-url`,
/// stay single-server below; tests/sentinel.rs has the failover.
macro_rules! on_every_topology {
    ($($name:ident),* $(,)?) => {
        mod single {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(&super::Redis::start()).await
                }
            )*
        }
        mod sentinel {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(&super::Sentinels::start()).await
                }
            )*
        }
        mod redis_cluster {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(&super::RedisCluster::start()).await
                }
            )*
        }
    };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_degrades_to_local_delivery_and_heals() {
    outage_degrades_and_heals(Redis::start()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_outage_degrades_to_local_delivery_and_heals() {
    outage_degrades_and_heals(RedisCluster::start()).await
}

on_redis_and_cluster!(
    a_restarted_node_clears_its_stale_presence,
    a_killed_node_drops_out_and_its_client_resumes_elsewhere,
);

on_every_topology!(
    three_nodes_deliver_list_and_count_as_one,
    the_session_listing_spans_nodes_and_pages_through_all_of_them,
    idempotency_keys_hold_across_nodes,
    history_and_resume_span_nodes,
);

async fn outage_degrades_and_heals(mut redis: impl Outage) {
    let (a, b) = (node(&redis, "a", &[]).await, node(&redis, "b", &[]).await);
    let (mut frank, _) = connect(a.addr, "frank").await;
    redis.down();
    wait_status(a.addr, "degraded").await;
    // Local delivery goes on, flagged partial.
    let (status, v) = post(
        a.addr,
        "/api/v1/push",
        r#"{"client_id":"frank","type":"local"}"#,
    )
    .await;
    assert_eq!(
        (status, v["delivered"].as_u64(), v["partial"].as_bool()),
        (200, Some(1), Some(true)),
        "{v}"
    );
    assert_eq!(recv_json(&mut frank).await["type"], "local");
    // Nobody here and Redis down, as B knows by now: the caller hears it was not delivered.
    // (A push B sends before it noticed may fail on the dead connection mid-call: 504.)
    wait_status(b.addr, "degraded").await;
    let (status, v) = post(
        b.addr,
        "/api/v1/push",
        r#"{"client_id":"frank","type":"lost"}"#,
    )
    .await;
    assert_eq!(status, 503, "{v}");
    let metrics = http(a.addr, "GET", "/metrics", &[], "").await.2;
    assert!(metrics.contains("tether_cluster_up 0"), "{metrics}");
    // A subscription made during the outage is answered at once and carried over.
    send_json(
        &mut frank,
        r#"{"type":"subscribe","data":{"channel":"news"}}"#,
    )
    .await;
    assert_eq!(recv_json(&mut frank).await["type"], "subscribed");

    // Redis comes back empty: nodes resubscribe and rewrite presence by themselves.
    redis.up();
    wait_status(a.addr, "ok").await;
    wait_status(b.addr, "ok").await;
    push_until_delivered(b.addr, "frank", "back").await;
    assert_eq!(recv_json(&mut frank).await["type"], "back");
    let (_, v) = post(
        b.addr,
        "/api/v1/publish",
        r#"{"channel":"news","type":"story"}"#,
    )
    .await;
    assert_eq!(v["delivered"], 1, "{v}");
    assert_eq!(recv_json(&mut frank).await["type"], "story");
}

/// A node restarted under the same `node_id` clears what its last run left in presence at
/// once, without waiting for `node_ttl`.
async fn a_restarted_node_clears_its_stale_presence(redis: &impl Topology) {
    // node_ttl 60 s everywhere: only the restarted node's own resync can clear the entry in time.
    let a = node(redis, "a", &[("node_ttl", "60s")]).await;
    let mut args = vec![
        "--node-id".to_string(),
        "same".into(),
        "--node-ttl".into(),
        "60s".into(),
    ];
    args.extend(redis.args());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = || tether_cmd(env!("CARGO_BIN_EXE_tether"), &args);
    let (first, addr) = spawn(run()).await;
    wait_status(addr, "ok").await;
    let (_ws, _) = connect(addr, "ida").await;
    eventually(a.addr, "/api/v1/presence/ida", "ida online", |p| {
        p["online"] == true
    })
    .await;
    signal(&first, libc::SIGKILL);
    let (_second, addr) = spawn(run()).await;
    let restarted = Instant::now();
    wait_status(addr, "ok").await;
    eventually(a.addr, "/api/v1/presence/ida", "ida offline", |p| {
        p["online"] == false
    })
    .await;
    assert!(
        restarted.elapsed() < Duration::from_secs(20),
        "waited for node_ttl instead"
    );
}

async fn a_killed_node_drops_out_and_its_client_resumes_elsewhere(redis: &impl Topology) {
    // Each push to the dead node waits out the reply timeout: keep it short here.
    let reply = Duration::from_secs(1);
    let a = node(
        redis,
        "a",
        &[("history_size", "100"), ("cluster_reply_timeout", "1s")],
    )
    .await;
    let mut args: Vec<String> = [
        "--node-id",
        "doomed",
        "--node-ttl",
        "2s",
        "--history-size",
        "100",
    ]
    .map(String::from)
    .to_vec();
    args.extend(redis.args());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let cmd = tether_cmd(env!("CARGO_BIN_EXE_tether"), &args);
    let (child, doomed) = spawn(cmd).await;
    wait_status(doomed, "ok").await;

    let mut ws = connect_raw(doomed, "/ws?client_id=gina&since=0:0")
        .await
        .unwrap();
    let welcome = recv_json(&mut ws).await;
    let epoch = welcome["data"]["epoch"].as_str().unwrap().to_string();
    let (_, v) = post(
        a.addr,
        "/api/v1/push",
        r#"{"client_id":"gina","type":"m","data":1}"#,
    )
    .await;
    assert_eq!(v["delivered"], 1, "{v}");
    assert_eq!(recv_json(&mut ws).await["seq"], 1);
    eventually(
        a.addr,
        "/api/v1/presence/gina",
        "gina online on doomed",
        |p| p["nodes"] == serde_json::json!(["doomed"]),
    )
    .await;

    signal(&child, libc::SIGKILL);
    let killed = Instant::now();
    // Sent while the client has no node: stored, not lost.
    for i in 2..=3 {
        let (status, v) = post(
            a.addr,
            "/api/v1/push",
            &format!(r#"{{"client_id":"gina","type":"m","data":{i}}}"#),
        )
        .await;
        assert!(status == 200 || status == 202, "{status} {v}");
        assert_eq!(v["seq"], i, "{v}");
    }
    eventually(a.addr, "/api/v1/presence/gina", "gina offline", |p| {
        p["online"] == false
    })
    .await;
    // node_ttl 2 s, the two pushes that waited for the dead node, a heartbeat round and
    // scheduling slack on a shared machine.
    assert!(
        killed.elapsed() < Duration::from_secs(2) + 2 * reply + Duration::from_secs(4),
        "took {:?}",
        killed.elapsed()
    );

    let (mut ws, _) = resumed(a.addr, &format!("/ws?client_id=gina&since={epoch}:1"), 2).await;
    for i in 2..=3 {
        assert_eq!(recv_json(&mut ws).await["data"], i);
    }
}

/// Redis stalls past the call timeout while a push is in flight: the caller hears 504
/// `engine_timeout` (maybe delivered), not 503 (not delivered) and not a local re-delivery, so
/// the client gets the message at most once whatever Redis did with the stalled call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_redis_answers_uncertain_and_never_delivers_twice() {
    let redis = Redis::start();
    let (a, b) = (node(&redis, "a", &[]).await, node(&redis, "b", &[]).await);
    let (mut jo, _) = connect(a.addr, "jo").await;
    // Every client's commands wait 3 s (longer than the nodes' 2 s call bound), then run.
    let paused = redis.command("CLIENT PAUSE 3000 ALL").unwrap_or_default();
    assert!(paused.starts_with("+OK"), "{paused}");
    let (status, v) = post(
        a.addr,
        "/api/v1/push",
        r#"{"client_id":"jo","type":"once"}"#,
    )
    .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (504, Some("engine_timeout")),
        "{v}"
    );
    wait_status(a.addr, "ok").await;
    push_until_delivered(b.addr, "jo", "marker").await;
    let mut once = 0;
    loop {
        match recv_json(&mut jo).await["type"].as_str() {
            Some("once") => once += 1,
            Some("marker") => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(once <= 1, "delivered {once} times");
}

/// The embedding API awaits what the HTTP API answers: an application on node A pushes to a
/// client on B, publishes to subscribers on both, broadcasts and closes a session on B, and
/// hears the cluster-wide counts; with Redis gone it hears that nothing was delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedding_handle_answers_for_the_whole_cluster() {
    let mut redis = Redis::start();
    let (a, b) = (node(&redis, "a", &[]).await, node(&redis, "b", &[]).await);
    let (mut on_b, welcome) = connect(b.addr, "emma").await;
    let sid = welcome["data"]["session_id"].as_str().unwrap().to_string();
    let sent = a
        .handle
        .push("emma", "hi", Some(r#"{"n":1}"#))
        .await
        .expect("push through Redis")
        .expect("emma has a session");
    assert_eq!((sent.delivered, sent.partial), (1, false));
    let got = recv_json(&mut on_b).await;
    assert_eq!((&got["type"], &got["data"]["n"]), (&"hi".into(), &1.into()));
    assert_eq!(
        a.handle.push("nobody", "hi", None).await.unwrap(),
        None,
        "no session anywhere, no history"
    );

    let (mut on_a, _) = connect(a.addr, "abe").await;
    for ws in [&mut on_a, &mut on_b] {
        send_json(ws, r#"{"type":"subscribe","data":{"channel":"room"}}"#).await;
        assert_eq!(recv_json(ws).await["type"], "subscribed");
    }
    let sent = a.handle.publish("room", "news", None).await.unwrap();
    assert_eq!(sent.delivered, 2, "{sent:?}");
    for ws in [&mut on_a, &mut on_b] {
        assert_eq!(recv_json(ws).await["type"], "news");
    }
    assert_eq!(a.handle.broadcast("all", None).await.delivered, 2);
    let sent = a
        .handle
        .push_session(&sid, "only", None)
        .await
        .unwrap()
        .expect("the session is on b");
    assert_eq!(sent.delivered, 1);
    for ws in [&mut on_a, &mut on_b] {
        assert_eq!(recv_json(ws).await["type"], "all");
    }
    assert_eq!(recv_json(&mut on_b).await["type"], "only");
    assert!(a.handle.disconnect(&sid).await.unwrap());
    let close = recv_close(&mut on_b, WAIT).await.expect("closed from a");
    assert_eq!(u16::from(close.code), 4002);

    redis.stop();
    wait_status(a.addr, "degraded").await;
    match a.handle.push("emma", "lost", None).await {
        Err(tether::EngineError::Unavailable(_)) => {}
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

/// `rediss://`: two nodes joined through Redis over TLS deliver across nodes when they trust
/// its certificate (`SSL_CERT_FILE`, read by the system trust store loader); a node that does
/// not trust it stays degraded and never talks to Redis in the clear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_join_over_tls_and_refuse_an_untrusted_redis() {
    let redis = Redis::start_tls();
    let url = redis.tls_url();
    let cert = redis.cert_file();
    let node = |id: &str, trust: bool| {
        let mut cmd = tether_cmd(
            env!("CARGO_BIN_EXE_tether"),
            &["--node-id", id, "--redis-url", &url],
        );
        if trust {
            cmd.env("SSL_CERT_FILE", &cert);
        } else {
            // An empty trust store: nothing vouches for the server's certificate.
            cmd.env("SSL_CERT_FILE", "/dev/null");
        }
        cmd
    };
    let (_a_proc, a) = spawn(node("tls-a", true)).await;
    let (_b_proc, b) = spawn(node("tls-b", true)).await;
    wait_status(a, "ok").await;
    wait_status(b, "ok").await;
    let (mut on_b, _) = connect(b, "tess").await;
    let (status, v) = post(a, "/api/v1/push", r#"{"client_id":"tess","type":"sealed"}"#).await;
    assert_eq!((status, v["delivered"].as_u64()), (200, Some(1)), "{v}");
    assert_eq!(recv_json(&mut on_b).await["type"], "sealed");

    let (_c_proc, c) = spawn(node("tls-c", false)).await;
    let health = wait_status(c, "degraded").await;
    assert_eq!(health["node"], "tls-c", "{health}");
    let (status, v) = post(c, "/api/v1/push", r#"{"client_id":"tess","type":"x"}"#).await;
    assert_eq!(status, 503, "an untrusted Redis is not used: {v}");
}
