//! The failover scenario every replicated topology runs (tests/sentinel.rs, tests/redis_cluster.rs):
//! two nodes, a steady push load from node a to a client on node b, the Redis master serving
//! that client killed with SIGKILL, and every push accounted for: delivered once, answered 504
//! (unknown), or reported lost by a `recovered: false` resume; none silently missing, none
//! delivered twice, none refused (503) and delivered. A publish across the nodes comes back too.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use super::redis::{Topology, node, wait_status};
use super::*;

async fn post(addr: SocketAddr, path: &str, body: &str) -> (u16, Value) {
    let (status, _, text) = http(addr, "POST", path, &[], body).await;
    (status, json(&text))
}

/// One push of the load: its number, status, `delivered`, when it was sent and answered.
struct Sent {
    n: u64,
    status: u16,
    delivered: u64,
    sent_at: Instant,
    at: Instant,
}

/// Every text frame on `ws` until it is quiet for `quiet` (bounded by 20 s).
async fn drain(ws: &mut Ws, quiet: Duration) -> Vec<Value> {
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        match tokio::time::timeout(quiet, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                out.push(serde_json::from_str(t.as_str()).expect("JSON"));
            }
            Ok(Some(Ok(_))) => {}
            _ => break,
        }
    }
    out
}

/// Runs the scenario on `set`; `kill` takes the master serving the client id `alice` down
/// and returns once a replica serves in its place (how long that took). `degrades`: every
/// call needs that master (one master behind Sentinel), so node a says `degraded` meanwhile.
pub async fn account_for_every_push<T: Topology + Send + 'static>(
    what: &str,
    set: T,
    degrades: bool,
    kill: impl FnOnce(&mut T) -> Duration + Send + 'static,
) {
    let h = [("history_size", "10000")];
    let (a, b) = (node(&set, "a", &h).await, node(&set, "b", &h).await);

    // Publish across nodes.
    let (mut eve, _) = connect(b.addr, "eve").await;
    send_json(
        &mut eve,
        r#"{"type":"subscribe","data":{"channel":"feed"}}"#,
    )
    .await;
    assert_eq!(recv_json(&mut eve).await["type"], "subscribed");
    let (_, v) = post(
        a.addr,
        "/api/v1/publish",
        r#"{"channel":"feed","type":"p","data":1}"#,
    )
    .await;
    assert_eq!(v["delivered"], 1, "{v}");
    assert_eq!(recv_json(&mut eve).await["data"], 1);

    // A steady push load from node a to a client on node b.
    let (mut alice, welcome) = connect(b.addr, "alice").await;
    let epoch = welcome["data"]["epoch"].as_str().unwrap().to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let stop = Arc::clone(&stop);
        let via = a.addr;
        tokio::spawn(async move {
            let mut sent = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) && n < 5000 {
                n += 1;
                let body = format!(r#"{{"client_id":"alice","type":"m","data":{n}}}"#);
                let sent_at = Instant::now();
                let (status, v) = post(via, "/api/v1/push", &body).await;
                sent.push(Sent {
                    n,
                    status,
                    delivered: v["delivered"].as_u64().unwrap_or(0),
                    sent_at,
                    at: Instant::now(),
                });
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            sent
        })
    };
    // Reads until the load stopped and then went quiet: the outage is a quiet spell of its own
    // (about 2.8 s here, longer on a busy machine), which must not end the reading.
    let reader = {
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let mut frames = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(60);
            for _ in 0..120 {
                if Instant::now() > deadline {
                    break;
                }
                frames.extend(drain(&mut alice, Duration::from_millis(500)).await);
                if stop.load(Ordering::Relaxed) {
                    frames.extend(drain(&mut alice, Duration::from_millis(500)).await);
                    break;
                }
            }
            (alice, frames)
        })
    };
    tokio::time::sleep(Duration::from_millis(800)).await;

    // Kill the master; the nodes follow its replica by themselves.
    let killed = Instant::now();
    let failover = tokio::task::spawn_blocking(move || {
        let mut set = set;
        let took = kill(&mut set);
        (set, took)
    });
    if degrades {
        wait_status(a.addr, "degraded").await;
    }
    let (set, promoted) = failover.await.unwrap();
    wait_status(a.addr, "ok").await;
    wait_status(b.addr, "ok").await;
    // Delivery across nodes comes back by itself; let the load run on a little.
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let (status, v) = post(
            a.addr,
            "/api/v1/publish",
            r#"{"channel":"feed","type":"p","data":2}"#,
        )
        .await;
        if status == 200 && v["delivered"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::Relaxed);
    let sent = load.await.unwrap();
    let (alice, live) = reader.await.unwrap();
    drop(alice);
    let mut eve_frames = drain(&mut eve, Duration::from_millis(300)).await;
    eve_frames.retain(|m| m["data"] == 2);
    assert!(
        !eve_frames.is_empty(),
        "publish across nodes never came back"
    );

    // Resume from the last position alice knew; a stream that started again (seq back to 1)
    // leaves her the old epoch, which must not be taken for recovered.
    let last = live
        .iter()
        .filter_map(|m| m["seq"].as_u64())
        .next_back()
        .unwrap_or(0);
    let path = format!("/ws?client_id=alice&since={epoch}:{last}");
    let mut again = connect_raw(a.addr, &path).await.unwrap();
    let resume = recv_json(&mut again).await;
    let recovered = resume["data"]["recovered"].as_bool().unwrap();
    let replay = drain(&mut again, Duration::from_millis(500)).await;

    let mut seen: HashMap<u64, usize> = HashMap::new();
    for m in live.iter().chain(&replay).filter(|m| m["type"] == "m") {
        *seen.entry(m["data"].as_u64().unwrap()).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, c)| **c > 1).collect();
    assert!(twice.is_empty(), "delivered twice: {twice:?}");
    // Answered 202 (stored, not delivered live) while node b was not yet subscribed on the
    // new master: reported by the resume below.
    let (mut ok, mut unknown, mut refused, mut lost) = (0, 0, 0, Vec::new());
    // Delivery is back with the first push delivered after the first one the outage failed,
    // or after the first one sent once the replica was promoted (a push may also wait out the
    // outage and succeed; one answered just after the kill may have been run by the old
    // master).
    let mut outage = false;
    let mut first_after = None;
    for s in &sent {
        if (s.at > killed && !matches!(s.status, 200 | 202)) || s.sent_at > killed + promoted {
            outage = true;
        }
        match s.status {
            200 | 202 => {
                ok += 1;
                if !seen.contains_key(&s.n) {
                    // A session's queue took it: the open socket must have carried it.
                    assert_eq!(s.delivered, 0, "push {} delivered yet never received", s.n);
                    lost.push(s.n);
                }
                if outage && s.delivered == 1 && first_after.is_none() {
                    first_after = Some(s.at - killed);
                }
            }
            504 => unknown += 1,
            503 => {
                refused += 1;
                assert!(
                    !seen.contains_key(&s.n),
                    "push {} refused yet delivered",
                    s.n
                );
            }
            other => panic!("push {}: unexpected status {other}", s.n),
        }
    }
    eprintln!(
        "{what} failover: {} pushes, {ok} answered 200/202, {unknown} 504, {refused} 503, {} \
         acknowledged but missing (reported: recovered={recovered}); promoted after {promoted:?}, \
         first cross-node delivery {first_after:?} after the kill",
        sent.len(),
        lost.len()
    );
    assert!(
        lost.is_empty() || !recovered,
        "acknowledged pushes {lost:?} missing and the resume said recovered: {resume}"
    );
    assert!(
        first_after.is_some(),
        "no push was delivered after the failover"
    );
    drop(set);
}
