//! Webhooks (docs/protocol.md §10) against a real HTTP receiver on loopback: the events and their order,
//! the signature (`t=,v1=` over "<t>.<body>") and the event id a retry repeats, the secret from
//! a file, online/offline with the grace, retries after failures, a slow receiver, and events
//! given up (and counted) after `webhook_retry_for`.

mod common;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::redis::Topology;
use common::*;
use hmac::{Hmac, KeyInit, Mac};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use sha2::Sha256;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// What the receiver got: the signature and event id headers and the JSON body.
struct Hit {
    signature: Option<String>,
    event_id: Option<String>,
    raw: Bytes,
    body: Value,
}

/// What a receiver does with `X-Tether-Signature` (docs/webhooks.md): `t=<t>,v1=<hex>`, the
/// HMAC-SHA256 of "<t>.<body>" under `secret`, compared in constant time, `t` at most five
/// minutes off. Returns `t`.
fn verify(secret: &[u8], hit: &Hit) -> Result<u64, String> {
    let header = hit.signature.as_deref().ok_or("no signature")?;
    let (t, v1) = header
        .split_once(',')
        .and_then(|(t, v)| Some((t.strip_prefix("t=")?, v.strip_prefix("v1=")?)))
        .ok_or_else(|| format!("not t=..,v1=..: {header}"))?;
    let t: u64 = t.parse().map_err(|_| format!("bad t in {header}"))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs();
    if now.abs_diff(t) > 300 {
        return Err(format!("stale: t={t}, now={now}"));
    }
    let want = (0..v1.len() / 2)
        .map(|i| u8::from_str_radix(v1.get(2 * i..2 * i + 2).unwrap_or("x"), 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| format!("v1 is not hex: {header}"))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|e| e.to_string())?;
    mac.update(format!("{t}.").as_bytes());
    mac.update(&hit.raw);
    mac.verify_slice(&want)
        .map_err(|_| format!("bad signature {header}"))?;
    Ok(t)
}

/// A webhook receiver: answers 500 to its first `fail_first` requests, waits `delay` before
/// each answer, and reports every request it accepted with 2xx (`hits`) and every one it
/// refused (`refused`).
struct Receiver {
    url: String,
    hits: mpsc::UnboundedReceiver<Hit>,
    refused: mpsc::UnboundedReceiver<Hit>,
    attempts: Arc<AtomicUsize>,
}

async fn receiver(fail_first: usize, delay: Duration) -> Receiver {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, hits) = mpsc::unbounded_channel();
    let (no, refused) = mpsc::unbounded_channel();
    let attempts = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&attempts);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (tx, no, seen) = (tx.clone(), no.clone(), Arc::clone(&seen));
            let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                let (tx, no, seen) = (tx.clone(), no.clone(), Arc::clone(&seen));
                async move {
                    let n = seen.fetch_add(1, Ordering::SeqCst);
                    let header = |name: &str| {
                        req.headers()
                            .get(name)
                            .map(|v| v.to_str().unwrap().to_string())
                    };
                    let signature = header("x-tether-signature");
                    let event_id = header("x-tether-event-id");
                    let raw = req.into_body().collect().await.unwrap().to_bytes();
                    tokio::time::sleep(delay).await;
                    let hit = Hit {
                        signature,
                        event_id,
                        body: serde_json::from_slice(&raw).unwrap(),
                        raw,
                    };
                    let status = if n < fail_first {
                        let _ = no.send(hit);
                        StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        let _ = tx.send(hit);
                        StatusCode::NO_CONTENT
                    };
                    let mut res = Response::new(Full::new(Bytes::new()));
                    *res.status_mut() = status;
                    Ok::<_, Infallible>(res)
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc),
            );
        }
    });
    Receiver {
        url,
        hits,
        refused,
        attempts,
    }
}

impl Receiver {
    async fn next(&mut self) -> Hit {
        tokio::time::timeout(WAIT, self.hits.recv())
            .await
            .expect("no webhook in time")
            .expect("receiver gone")
    }

    /// The next `event` of `client_id`, passing over others (bounded).
    async fn next_of(&mut self, event: &str, client_id: &str) -> Hit {
        for _ in 0..50 {
            let h = self.next().await;
            if h.body["event"] == event && h.body["client_id"] == client_id {
                return h;
            }
        }
        panic!("no {event} for {client_id} in 50 events");
    }

    /// The next `n` events as (event, client_id) pairs.
    async fn events(&mut self, n: usize) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for _ in 0..n {
            let h = self.next().await;
            out.push((
                h.body["event"].as_str().unwrap().to_string(),
                h.body["client_id"].as_str().unwrap().to_string(),
            ));
        }
        out
    }
}

fn pair(e: &str, c: &str) -> (String, String) {
    (e.to_string(), c.to_string())
}

#[tokio::test]
async fn events_are_signed_and_online_offline_follow_the_grace() {
    let mut rx = receiver(0, Duration::ZERO).await;
    let s = start(config(&[
        ("webhook_url", &rx.url),
        ("webhook_secret", "s3cret"),
        ("offline_grace", "300ms"),
        ("reap_interval", "50ms"),
        ("node_id", "node-a"),
    ]))
    .await;
    let (ws, welcome) = connect(s.addr, "ann").await;
    let sid = welcome["data"]["session_id"].as_str().unwrap().to_string();
    let first = rx.next().await;
    assert_eq!(first.body["event"], "connect");
    assert_eq!(first.body["client_id"], "ann");
    assert_eq!(first.body["session_id"], sid.as_str());
    assert_eq!(first.body["node"], "node-a");
    assert!(first.body["timestamp"].as_str().unwrap().ends_with('Z'));
    verify(b"s3cret", &first).unwrap();
    assert!(verify(b"other", &first).is_err());
    assert_eq!(rx.events(1).await, vec![pair("online", "ann")]);

    drop(ws);
    let gone = rx.next().await;
    assert_eq!(gone.body["event"], "disconnect");
    assert_eq!(
        gone.body["close_code"], 1006,
        "dropped without a close frame"
    );
    assert_eq!(rx.events(1).await, vec![pair("offline", "ann")]);
    stop(s).await;
}

/// A retry repeats the event's `X-Tether-Event-Id` (so a receiver can drop the repeat) with a
/// fresh signature; every event has its own id; the secret comes from `webhook_secret_file`,
/// its trailing newline trimmed.
#[tokio::test]
async fn retries_repeat_the_event_id_and_the_secret_can_come_from_a_file() {
    let dir = TempDir::new("webhook-secret");
    let file = dir.join("secret");
    std::fs::write(&file, "from-a-file\n").unwrap();
    let mut rx = receiver(1, Duration::ZERO).await;
    let s = start(config(&[
        ("webhook_url", &rx.url),
        ("webhook_secret_file", file.to_str().unwrap()),
        ("offline_grace", "10s"),
    ]))
    .await;
    let (ws, _) = connect(s.addr, "zoe").await;
    let failed = tokio::time::timeout(WAIT, rx.refused.recv())
        .await
        .expect("no first attempt")
        .expect("receiver gone");
    let connect = rx.next().await;
    let online = rx.next().await;
    drop(ws);
    let disconnect = rx.next().await;
    assert_eq!(failed.body["event"], "connect");
    assert_eq!(failed.raw, connect.raw, "the retry is the same event");
    let id = connect.event_id.clone().expect("X-Tether-Event-Id");
    assert_eq!(id.len(), 32, "{id}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    assert_eq!(failed.event_id.as_deref(), Some(id.as_str()), "retried");
    let mut ids = vec![id];
    for hit in [&failed, &connect, &online, &disconnect] {
        verify(b"from-a-file", hit).unwrap();
    }
    for hit in [&online, &disconnect] {
        ids.push(hit.event_id.clone().expect("X-Tether-Event-Id"));
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "one id per event: {ids:?}");
    stop(s).await;
}

/// An empty `webhook_secret_file` stops startup with an error naming the key, rather than
/// sending unsigned webhooks.
#[tokio::test]
async fn an_empty_webhook_secret_file_stops_startup() {
    let dir = TempDir::new("webhook-secret-empty");
    let file = dir.join("secret");
    std::fs::write(&file, "\n").unwrap();
    let c = config(&[
        ("webhook_url", "http://127.0.0.1:9/hook"),
        ("webhook_secret_file", file.to_str().unwrap()),
    ]);
    let err = tether::Server::new(c).err().expect("refused").to_string();
    assert!(
        err.contains("webhook_secret_file") && err.contains("empty"),
        "{err}"
    );
}

/// A client back within `offline_grace` is neither offline nor online again. The grace is long
/// so the test does not race it; bob's events share one lane, so an `offline` or `online` for
/// him would arrive before the `disconnect` of his second session.
#[tokio::test]
async fn a_client_back_within_the_grace_is_neither_offline_nor_online_again() {
    let mut rx = receiver(0, Duration::ZERO).await;
    let s = start(config(&[
        ("webhook_url", &rx.url),
        ("offline_grace", "10s"),
        ("reap_interval", "50ms"),
    ]))
    .await;
    let (mut ws, _) = connect(s.addr, "bob").await;
    assert_eq!(
        rx.events(2).await,
        vec![pair("connect", "bob"), pair("online", "bob")]
    );
    let normal = tokio_tungstenite::tungstenite::protocol::CloseFrame {
        code: 1000.into(),
        reason: "bye".into(),
    };
    ws.close(Some(normal)).await.unwrap();
    let _ = recv_close(&mut ws, WAIT).await;
    let bye = rx.next().await;
    assert_eq!(bye.body["event"], "disconnect");
    assert_eq!(bye.body["close_code"], 1000);
    let (ws2, _) = connect(s.addr, "bob").await;
    drop(ws2);
    assert_eq!(
        rx.events(2).await,
        vec![pair("connect", "bob"), pair("disconnect", "bob")]
    );
    stop(s).await;
}

#[tokio::test]
async fn a_failing_receiver_gets_every_event_again_in_order() {
    let mut rx = receiver(3, Duration::ZERO).await;
    let s = start(config(&[
        ("webhook_url", &rx.url),
        ("offline_grace", "10s"),
    ]))
    .await;
    let mut tabs = Vec::new();
    for _ in 0..3 {
        tabs.push(connect(s.addr, "carol").await.0);
    }
    drop(tabs);
    let events: Vec<String> = rx.events(7).await.into_iter().map(|e| e.0).collect();
    assert_eq!(
        events,
        [
            "connect",
            "online",
            "connect",
            "connect",
            "disconnect",
            "disconnect",
            "disconnect"
        ]
    );
    assert!(
        rx.attempts.load(Ordering::SeqCst) >= 10,
        "the 3 failures were retried"
    );
    stop(s).await;
}

#[tokio::test]
async fn a_slow_receiver_loses_nothing_and_keeps_each_clients_order() {
    let mut rx = receiver(0, Duration::from_millis(30)).await;
    let s = start(config(&[
        ("webhook_url", &rx.url),
        ("offline_grace", "10s"),
    ]))
    .await;
    let mut open = Vec::new();
    for i in 0..6 {
        open.push(connect(s.addr, &format!("slow{i}")).await.0);
    }
    drop(open);
    let events = rx.events(18).await;
    for i in 0..6 {
        let mine: Vec<&str> = events
            .iter()
            .filter(|(_, c)| *c == format!("slow{i}"))
            .map(|(e, _)| e.as_str())
            .collect();
        assert_eq!(mine, ["connect", "online", "disconnect"], "slow{i}");
    }
    stop(s).await;
}

#[tokio::test]
async fn events_are_given_up_and_counted_after_webhook_retry_for() {
    let rx = receiver(usize::MAX, Duration::ZERO).await;
    let s = start(config(&[
        ("webhook_url", &rx.url),
        ("webhook_retry_for", "400ms"),
    ]))
    .await;
    let (_ws, _) = connect(s.addr, "dave").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, _, body) = http(s.addr, "GET", "/metrics", &[], "").await;
        if body.contains("tether_webhook_dropped_total{reason=\"expired\"} 2\n") {
            assert!(body.contains("tether_webhook_events_total 2\n"), "{body}");
            assert!(body.contains("tether_webhook_pending 0\n"), "{body}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not given up: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        rx.attempts.load(Ordering::SeqCst) >= 4,
        "retried before giving up"
    );
    stop(s).await;
}

/// With Redis, `online` and `offline` are the cluster's: one `online` for a client id's first
/// session anywhere, one `offline` when its last session anywhere ended and the grace passed —
/// also when the node that held it was killed.
async fn online_and_offline_fire_once_for_the_whole_cluster(redis: &impl Topology) {
    let mut rx = receiver(0, Duration::ZERO).await;
    let topology = redis.keys();
    let node = |id: &'static str| {
        let mut keys = vec![
            ("webhook_url", rx.url.as_str()),
            ("offline_grace", "300ms"),
            ("node_id", id),
            ("node_ttl", "2s"),
        ];
        keys.extend(topology.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        config(&keys)
    };
    let (a, b) = (start(node("a")).await, start(node("b")).await);
    let (on_a, _) = connect(a.addr, "hana").await;
    let mut seen = rx.events(2).await;
    seen.sort();
    assert_eq!(seen, vec![pair("connect", "hana"), pair("online", "hana")]);
    // A second session on another node is no new `online`; the first leaving is no `offline`.
    let (on_b, _) = connect(b.addr, "hana").await;
    assert_eq!(rx.events(1).await, vec![pair("connect", "hana")]);
    drop(on_a);
    assert_eq!(rx.events(1).await, vec![pair("disconnect", "hana")]);
    drop(on_b);
    let end = rx.events(2).await;
    assert_eq!(
        end,
        vec![pair("disconnect", "hana"), pair("offline", "hana")]
    );

    // The node holding ivan's only session is killed: a survivor sends his `offline`.
    let mut args: Vec<String> = [
        "--node-id",
        "doomed",
        "--node-ttl",
        "2s",
        "--webhook-url",
        &rx.url,
        "--offline-grace",
        "300ms",
    ]
    .map(String::from)
    .to_vec();
    args.extend(redis.args());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let cmd = tether_cmd(env!("CARGO_BIN_EXE_tether"), &args);
    let (child, doomed) = spawn(cmd).await;
    let (ivan, _) = connect(doomed, "ivan").await;
    let mut seen = rx.events(2).await;
    seen.sort();
    assert_eq!(seen, vec![pair("connect", "ivan"), pair("online", "ivan")]);
    signal(&child, libc::SIGKILL);
    let last = rx.next().await;
    assert_eq!(
        (&last.body["event"], &last.body["client_id"]),
        (&"offline".into(), &"ivan".into())
    );
    assert!(
        last.body["node"] == "a" || last.body["node"] == "b",
        "{}",
        last.body
    );
    drop(ivan);
    // Nothing more: hana's and ivan's offline came once each (ivan's took node_ttl, plenty of
    // time for a duplicate from the other node to show up first).
    assert!(rx.hits.try_recv().is_err(), "an event fired twice");
}

/// A client moved off a node by its paced restart (1012) and back on another node is marked
/// as migrated: its `connect` there carries `migrated_from`, the old node's id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_moved_by_a_restart_connects_as_migrated() {
    let mut rx = receiver(0, Duration::ZERO).await;
    let redis = common::redis::Redis::start();
    let url = redis.url();
    let node = |id: &'static str| {
        config(&[
            ("webhook_url", rx.url.as_str()),
            ("redis_url", url.as_str()),
            ("node_id", id),
            ("shutdown_mode", "restart"),
            ("migrate_window", "200ms"),
        ])
    };
    let (old, new) = (start(node("old")).await, start(node("new")).await);
    let (mut ws, _) = connect(old.addr, "kim").await;
    let mut seen = rx.events(2).await;
    seen.sort();
    assert_eq!(seen, vec![pair("connect", "kim"), pair("online", "kim")]);
    // kay moves as soon as she hears of the restart, before her close.
    let (mut kay, _) = connect(old.addr, "kay").await;
    let mut seen = rx.events(2).await;
    seen.sort();
    assert_eq!(seen, vec![pair("connect", "kay"), pair("online", "kay")]);
    old.trigger.signal();
    assert_eq!(recv_json(&mut kay).await["type"], "shutdown");
    let (_kay_new, _) = connect(new.addr, "kay").await;
    let moved = rx.next_of("connect", "kay").await;
    assert_eq!(moved.body["node"], "new");
    assert_eq!(moved.body["migrated_from"], "old", "{}", moved.body);
    assert_eq!(recv_json(&mut ws).await["type"], "shutdown");
    let close = recv_close(&mut ws, WAIT)
        .await
        .expect("closed by the restart");
    assert_eq!(u16::from(close.code), 1012);
    let gone = rx.next_of("disconnect", "kim").await;
    assert_eq!(gone.body["close_code"], 1012);
    let (_ws, _) = connect(new.addr, "kim").await;
    let back = rx.next_of("connect", "kim").await;
    assert_eq!(back.body["node"], "new");
    assert_eq!(back.body["migrated_from"], "old", "{}", back.body);
    // A client that merely reconnects is not migrated.
    let (plain, _) = connect(new.addr, "lee").await;
    let lee = rx.next_of("connect", "lee").await;
    assert!(lee.body.get("migrated_from").is_none(), "{}", lee.body);
    drop(plain);
}

/// A session rotated by `max_lifetime` (1012) that reconnects to another node at once is
/// marked as migrated there too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_rotated_by_max_lifetime_connects_elsewhere_as_migrated() {
    let mut rx = receiver(0, Duration::ZERO).await;
    let redis = common::redis::Redis::start();
    let url = redis.url();
    let rotating = start(config(&[
        ("webhook_url", rx.url.as_str()),
        ("redis_url", url.as_str()),
        ("node_id", "rot"),
        ("max_lifetime", "1s"),
        ("reap_interval", "50ms"),
    ]))
    .await;
    let other = start(config(&[
        ("webhook_url", rx.url.as_str()),
        ("redis_url", url.as_str()),
        ("node_id", "steady"),
    ]))
    .await;
    let (mut ws, _) = connect(rotating.addr, "rita").await;
    let mut seen = rx.events(2).await;
    seen.sort();
    assert_eq!(seen, vec![pair("connect", "rita"), pair("online", "rita")]);
    let close = recv_close(&mut ws, WAIT).await.expect("rotated");
    assert_eq!(u16::from(close.code), 1012);
    let (_ws, _) = connect(other.addr, "rita").await;
    let back = rx.next_of("connect", "rita").await;
    assert_eq!(back.body["node"], "steady", "{}", back.body);
    assert_eq!(back.body["migrated_from"], "rot", "{}", back.body);
}

on_redis_and_cluster!(online_and_offline_fire_once_for_the_whole_cluster);
