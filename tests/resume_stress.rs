//! Resume under load (docs/protocol.md §8): dozens of clients drop their connection at random moments
//! and resume with `since` while a pusher keeps pushing to each of them; every client must end
//! with every seq exactly once and in order, whatever the joint looked like.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use tokio::sync::Barrier;
use tokio_tungstenite::tungstenite::Message;

const CLIENTS: usize = 32;
const PUSHES: u64 = 120;
/// Reconnects one client may make before the test gives up on it.
const MAX_RECONNECTS: usize = 400;

/// A tiny deterministic generator: the test needs varied timing, not good randomness.
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// One client: reads, drops the connection after a random number of frames, resumes from what
/// it has, until it holds seq `PUSHES`. Returns every seq it received, in arrival order.
async fn client(
    addr: std::net::SocketAddr,
    id: String,
    start: Arc<Barrier>,
    seed: u64,
) -> Vec<u64> {
    let mut rng = XorShift(seed | 1);
    let (mut ws, welcome) = connect(addr, &id).await;
    let epoch = welcome["data"]["epoch"].as_str().unwrap().to_string();
    let mut seen = Vec::new();
    start.wait().await;
    for _ in 0..MAX_RECONNECTS {
        let mut budget = 1 + rng.below(12);
        while budget > 0 && seen.last() != Some(&PUSHES) {
            let frame = tokio::time::timeout(WAIT, ws.next())
                .await
                .expect("stalled");
            match frame {
                Some(Ok(Message::Text(t))) => {
                    let m = json(t.as_str());
                    assert_eq!(m["type"], "n", "{m}");
                    seen.push(m["seq"].as_u64().unwrap());
                    budget -= 1;
                }
                Some(Ok(_)) => {}
                other => panic!("{id}: connection ended: {other:?}"),
            }
        }
        if seen.last() == Some(&PUSHES) {
            return seen;
        }
        // An abrupt drop: what the server had queued for this socket is lost with it.
        drop(ws);
        if rng.below(3) == 0 {
            tokio::time::sleep(Duration::from_millis(rng.below(5))).await;
        }
        let top = seen.last().copied().unwrap_or(0);
        let path = format!("/ws?client_id={id}&since={epoch}:{top}");
        ws = connect_raw(addr, &path).await.unwrap();
        let welcome = recv_json(&mut ws).await;
        assert_eq!(welcome["data"]["recovered"], true, "{id}: {welcome}");
        assert_eq!(welcome["data"]["epoch"], epoch.as_str());
    }
    panic!("{id}: not done after {MAX_RECONNECTS} reconnects");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_resuming_at_random_get_every_seq_once_in_order() {
    let s = start(config(&[("history_size", "1000")])).await;
    let start = Arc::new(Barrier::new(CLIENTS + 1));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let start = Arc::clone(&start);
            tokio::spawn(client(
                s.addr,
                format!("c{i}"),
                start,
                0x9e37_79b9 * (i as u64 + 1),
            ))
        })
        .collect();
    start.wait().await;
    let handle = s.handle.clone();
    let pusher = tokio::spawn(async move {
        for n in 1..=PUSHES {
            for i in 0..CLIENTS {
                assert!(
                    handle
                        .push(&format!("c{i}"), "n", Some(&n.to_string()))
                        .await
                        .unwrap()
                        .is_some()
                );
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    let all = async {
        pusher.await.unwrap();
        let mut out = Vec::new();
        for c in clients {
            out.push(c.await.unwrap());
        }
        out
    };
    let results = tokio::time::timeout(Duration::from_secs(60), all)
        .await
        .expect("stress test did not finish in time");
    for (i, seen) in results.iter().enumerate() {
        assert_eq!(*seen, (1..=PUSHES).collect::<Vec<_>>(), "client c{i}");
    }
    let (_, _, metrics) = http(s.addr, "GET", "/metrics", &[], "").await;
    assert!(
        metrics.contains("tether_resumes_total{outcome=\"not_recovered\"} 0\n"),
        "{metrics}"
    );
    stop(s).await;
}
