//! `tether-bench batch`: what `POST /api/v1/batch` saves. N clients with distinct client ids
//! connect; then, in each repetition, the same N pushes (one to each client id) are sent (a) as
//! N single `POST /api/v1/push` calls on one keep-alive connection, one at a time, and (b) as
//! one batch. Each is timed from the first request to the last answer, and every client must
//! have received its message (counted on the client side) before the next phase starts.
//!
//! In-process, like `resume`: the clients on a current-thread runtime in their own thread, the
//! API calls on this thread through [`crate::http::Client`].

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::net::TcpSocket;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::cli::BatchArgs;
use crate::http::Client;
use crate::run::{Failure, Outcome};
use crate::target::{Endpoint, first_url, parse_url, source_ip};

/// Loopback source addresses the clients' sockets are spread over.
const SOURCES: u32 = 8;
/// Handshakes in flight at once.
const CONNECTING: usize = 256;

/// What the client thread and the timing thread share.
struct Ctx {
    ws: Endpoint,
    source: Ipv4Addr,
    prefix: String,
    connect_timeout: Duration,
    connecting: Semaphore,
    /// Messages each client received.
    received: Vec<AtomicU64>,
    /// All of them.
    total: AtomicU64,
    /// Clients connected so far, and the clients that failed to.
    connected: Mutex<(u64, u64)>,
    /// Woken when `connected` or `total` moves.
    moved: Condvar,
}

impl Ctx {
    fn bump_connected(&self, ok: bool) {
        if let Ok(mut c) = self.connected.lock() {
            if ok {
                c.0 += 1;
            } else {
                c.1 += 1;
            }
        }
        self.moved.notify_all();
    }

    /// Waits until the clients received `total` messages in all, up to `within`.
    fn wait_total(&self, total: u64, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let Ok(mut guard) = self.connected.lock() else {
            return false;
        };
        while self.total.load(Ordering::Acquire) < total {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            match self
                .moved
                .wait_timeout(guard, left.min(Duration::from_millis(50)))
            {
                Ok((g, _)) => guard = g,
                Err(_) => return false,
            }
        }
        true
    }
}

/// One client: connect, then count every message until the socket ends.
async fn client(ctx: Arc<Ctx>, i: u64) {
    let permit = ctx.connecting.acquire().await;
    let attempt = async {
        let sock = TcpSocket::new_v4().map_err(|e| e.to_string())?;
        let ip = source_ip(ctx.source, (i % u64::from(SOURCES)) as u32)?;
        sock.bind(SocketAddr::new(ip.into(), 0))
            .map_err(|e| e.to_string())?;
        let tcp = sock.connect(ctx.ws.addr).await.map_err(|e| e.to_string())?;
        let path = ctx.ws.path_for(&format!("{}{i}", ctx.prefix), None);
        let req = format!("ws://{}{path}", ctx.ws.host)
            .into_client_request()
            .map_err(|e| e.to_string())?;
        let (mut ws, _) = tokio_tungstenite::client_async(req, tcp)
            .await
            .map_err(|e| e.to_string())?;
        match ws.next().await {
            Some(Ok(Message::Text(_))) => Ok(ws),
            other => Err(format!("no welcome: {other:?}")),
        }
    };
    let ws = tokio::time::timeout(ctx.connect_timeout, attempt).await;
    drop(permit);
    let Ok(Ok(mut ws)) = ws else {
        ctx.bump_connected(false);
        return;
    };
    ctx.bump_connected(true);
    while let Some(Ok(m)) = ws.next().await {
        if let Message::Text(t) = m
            && t.as_str().contains("\"type\":\"bench\"")
        {
            ctx.received[i as usize].fetch_add(1, Ordering::AcqRel);
            ctx.total.fetch_add(1, Ordering::AcqRel);
            // Taking the lock orders this wake after a waiter's check.
            drop(ctx.connected.lock());
            ctx.moved.notify_all();
        }
    }
}

/// One timed phase (every answer said `delivered: 1`).
struct Phase {
    /// Seconds from the first request to the last answer.
    secs: f64,
    /// Seconds until every client had its message.
    received_secs: f64,
}

/// Runs the scenario.
pub fn run(a: &BatchArgs) -> Outcome {
    let c = &a.common;
    if a.clients == 0 || a.clients > 1000 || a.repeat == 0 {
        return Err(Failure::Usage(
            "need -n from 1 to 1000 (one batch) and --repeat > 0".into(),
        ));
    }
    let ws = parse_url(first_url(&c.url), "ws").map_err(Failure::Usage)?;
    let api = match &c.api {
        Some(u) => parse_url(u, "http").map_err(Failure::Usage)?,
        None => ws.api_base(),
    };
    crate::sys::raise_fd_limit();
    let n = a.clients;
    let ctx = Arc::new(Ctx {
        ws,
        source: c.source,
        prefix: format!("batch{}-", std::process::id()),
        connect_timeout: c.connect_timeout,
        connecting: Semaphore::new(CONNECTING),
        received: (0..n).map(|_| AtomicU64::new(0)).collect(),
        total: AtomicU64::new(0),
        connected: Mutex::new((0, 0)),
        moved: Condvar::new(),
    });
    let clients = {
        let ctx = Arc::clone(&ctx);
        std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                let tasks: Vec<_> = (0..n)
                    .map(|i| tokio::spawn(client(ctx.clone(), i)))
                    .collect();
                for t in tasks {
                    let _ = t.await;
                }
            });
        })
    };
    wait_connected(&ctx, n)?;
    let mut http =
        Client::new(api, c.api_key.as_deref(), Duration::from_secs(30)).map_err(Failure::Run)?;
    let data = "x".repeat(a.bytes);
    let body = |i: u64, phase: &str| {
        format!(
            r#"{{"client_id":"{}{i}","type":"bench","data":{{"phase":"{phase}","pad":"{data}"}}}}"#,
            ctx.prefix
        )
    };
    let mut singles = Vec::new();
    let mut batches = Vec::new();
    let mut expected = 0;
    for _ in 0..a.repeat {
        // (a) N single calls on one keep-alive connection.
        let t0 = Instant::now();
        for i in 0..n {
            match http.post("/api/v1/push", &body(i, "single")) {
                Ok((200, answer)) if answer.contains("\"delivered\":1") => {}
                other => return Err(Failure::Run(format!("push {i}: {other:?}"))),
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        expected += n;
        let received_secs = settle(&ctx, expected, t0)?;
        singles.push(Phase {
            secs,
            received_secs,
        });

        // (b) the same pushes as one batch.
        let commands: Vec<String> = (0..n)
            .map(|i| format!(r#"{{"push":{}}}"#, body(i, "batch")))
            .collect();
        let request = format!(r#"{{"commands":[{}]}}"#, commands.join(","));
        let t0 = Instant::now();
        let answer = match http.post("/api/v1/batch", &request) {
            Ok((200, answer)) => answer,
            other => return Err(Failure::Run(format!("batch: {other:?}"))),
        };
        let secs = t0.elapsed().as_secs_f64();
        let ok = answer.matches("\"delivered\":1").count() as u64;
        if ok != n {
            return Err(Failure::Run(format!(
                "batch: {ok} of {n} results said delivered 1"
            )));
        }
        expected += n;
        let received_secs = settle(&ctx, expected, t0)?;
        batches.push(Phase {
            secs,
            received_secs,
        });
    }
    let uneven = ctx
        .received
        .iter()
        .filter(|r| r.load(Ordering::Acquire) != 2 * a.repeat)
        .count();
    if uneven > 0 {
        return Err(Failure::Run(format!(
            "{uneven} clients did not receive exactly their {} messages",
            2 * a.repeat
        )));
    }
    drop(clients);
    Ok(report(a, &singles, &batches))
}

/// Waits until all `n` clients are connected (bounded by the connect timeout per wave).
fn wait_connected(ctx: &Ctx, n: u64) -> Result<(), Failure> {
    let deadline = Instant::now() + ctx.connect_timeout * 4;
    let Ok(mut guard) = ctx.connected.lock() else {
        return Err(Failure::Run("lock".into()));
    };
    while guard.0 + guard.1 < n {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        guard = match ctx.moved.wait_timeout(guard, left) {
            Ok((g, _)) => g,
            Err(_) => return Err(Failure::Run("lock".into())),
        };
    }
    if guard.0 < n {
        return Err(Failure::Run(format!(
            "only {} of {n} clients connected ({} failed)",
            guard.0, guard.1
        )));
    }
    Ok(())
}

/// Waits until the clients hold `expected` messages in all; seconds since `t0` then.
fn settle(ctx: &Ctx, expected: u64, t0: Instant) -> Result<f64, Failure> {
    if !ctx.wait_total(expected, Duration::from_secs(30)) {
        return Err(Failure::Run(format!(
            "clients received {} of {expected} messages",
            ctx.total.load(Ordering::Acquire)
        )));
    }
    Ok(t0.elapsed().as_secs_f64())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn report(a: &BatchArgs, singles: &[Phase], batches: &[Phase]) -> (Value, String) {
    let n = a.clients as f64;
    let rate = |p: &[Phase]| median(p.iter().map(|x| n / x.secs).collect());
    let rate_received = |p: &[Phase]| median(p.iter().map(|x| n / x.received_secs).collect());
    let (single, batch) = (rate(singles), rate(batches));
    let ratio = batch / single.max(f64::MIN_POSITIVE);
    let reps = |p: &[Phase]| p.iter().map(|x| (n / x.secs).round()).collect::<Vec<f64>>();
    let v = json!({
        "scenario": "batch",
        "clients": a.clients,
        "repetitions": a.repeat,
        "bytes": a.bytes,
        "single_pushes_per_s": single.round(),
        "batch_pushes_per_s": batch.round(),
        "single_received_per_s": rate_received(singles).round(),
        "batch_received_per_s": rate_received(batches).round(),
        "ratio": (ratio * 10.0).round() / 10.0,
        "single_each": reps(singles),
        "batch_each": reps(batches),
    });
    let summary = format!(
        "batch: {} pushes to {} distinct client ids, {} repetitions (medians), every client got each\n\
         single calls, one keep-alive connection: {:.0} pushes/s (all received: {:.0}/s)\n\
         one batch:                            {:.0} pushes/s (all received: {:.0}/s)\n\
         batch / single: {:.1}x",
        a.clients,
        a.clients,
        a.repeat,
        single,
        rate_received(singles),
        batch,
        rate_received(batches),
        ratio
    );
    (v, summary)
}
