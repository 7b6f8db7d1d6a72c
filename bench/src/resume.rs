//! `tether-bench resume`: N clients of a server with history on; the parent pushes to each
//! client id at a steady rate through the HTTP API while every client drops its connection at
//! random moments and resumes with `since=<epoch>:<seq>`. Every seq a client gets is accounted
//! for: lost, duplicated, out of order (each must be 0), and each resume's latency from the TCP
//! connect to its `welcome`.
//!
//! Unlike the other scenarios it runs in this one process (clients on one current-thread
//! runtime, the pusher on its own thread), its sockets spread over `RESUME_SOURCES` loopback
//! source addresses; the descriptor limit bounds N.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::net::TcpSocket;
use tokio::sync::Semaphore;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::cli::ResumeArgs;
use crate::conn::field_u64;
use crate::http::Client;
use crate::report::pcts;
use crate::run::{Failure, Outcome};
use crate::stats::Histogram;
use crate::sys::sample;
use crate::target::{Endpoint, first_url, parse_url, source_ip};

/// Loopback source addresses the clients' sockets are spread over.
const RESUME_SOURCES: u32 = 8;
/// Handshakes in flight at once.
const CONNECTING: usize = 256;

/// What every client task shares.
struct Ctx {
    ws: Endpoint,
    source: Ipv4Addr,
    prefix: String,
    connect_timeout: Duration,
    drop_every: Duration,
    /// Per client: the highest seq the server answered for a push to it.
    last_pushed: Vec<AtomicU64>,
    pushing_done: AtomicBool,
    connecting: Semaphore,
}

/// One client's books.
#[derive(Default)]
struct Books {
    unique: u64,
    duplicated: u64,
    out_of_order: u64,
    resumes: u64,
    not_recovered: u64,
    failed: u64,
    latency: Histogram,
}

type Ws = WebSocketStream<tokio::net::TcpStream>;

/// Connects one client (with `since` when resuming); the socket, its welcome and the
/// microseconds from connect to welcome.
async fn open(ctx: &Ctx, i: u64, since: Option<&str>) -> Result<(Ws, Value, u64), String> {
    let t0 = Instant::now();
    let attempt = async {
        let sock = TcpSocket::new_v4().map_err(|e| e.to_string())?;
        let ip = source_ip(ctx.source, (i % u64::from(RESUME_SOURCES)) as u32)?;
        sock.bind(SocketAddr::new(ip.into(), 0))
            .map_err(|e| e.to_string())?;
        let tcp = sock.connect(ctx.ws.addr).await.map_err(|e| e.to_string())?;
        let mut path = ctx.ws.path_for(&format!("{}{i}", ctx.prefix), None);
        if let Some(since) = since {
            path.push_str(&format!("&since={since}"));
        }
        let req = format!("ws://{}{path}", ctx.ws.host)
            .into_client_request()
            .map_err(|e| e.to_string())?;
        let (mut ws, _) = tokio_tungstenite::client_async(req, tcp)
            .await
            .map_err(|e| e.to_string())?;
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(t.as_str()).map_err(|e| e.to_string())?;
                Ok((ws, v))
            }
            other => Err(format!("no welcome: {other:?}")),
        }
    };
    match tokio::time::timeout(ctx.connect_timeout, attempt).await {
        Ok(Ok((ws, w))) => Ok((ws, w, t0.elapsed().as_micros() as u64)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err("timeout".into()),
    }
}

/// A tiny deterministic generator: drop times need spread, not good randomness.
fn next_rand(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// One client: read, drop at a random moment, resume from what it holds, until it has the last
/// seq pushed to it (or the deadline passes).
async fn client(ctx: Arc<Ctx>, i: u64, messages: u64, deadline: tokio::time::Instant) -> Books {
    let mut books = Books::default();
    let mut rng = (i + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut seen = vec![false; messages as usize + 2];
    let (mut top, mut epoch) = (0u64, String::new());
    // A first connection asks for everything still stored, as the browser client does: pushes
    // may reach the client id before it connects.
    let mut since = "0:0".to_string();
    let mut first = true;
    loop {
        let permit = ctx.connecting.acquire().await;
        let opened = open(&ctx, i, Some(&since)).await;
        drop(permit);
        let (mut ws, welcome) = match opened {
            Ok((ws, w, us)) => {
                if !std::mem::take(&mut first) {
                    books.resumes += 1;
                    books.latency.record(us);
                    if w["data"]["recovered"] != true {
                        books.not_recovered += 1;
                    }
                }
                (ws, w)
            }
            Err(_) => {
                books.failed += 1;
                if tokio::time::Instant::now() > deadline {
                    return books;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if epoch.is_empty() {
            epoch = welcome["data"]["epoch"]
                .as_str()
                .unwrap_or_default()
                .to_string();
        }
        let span = ctx.drop_every.as_millis().max(1) as u64 * 2;
        let drop_at =
            tokio::time::Instant::now() + Duration::from_millis(next_rand(&mut rng) % span);
        loop {
            let pushed = ctx.last_pushed[i as usize].load(Ordering::Acquire);
            if ctx.pushing_done.load(Ordering::Acquire) && top >= pushed {
                return books;
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return books;
            }
            if now >= drop_at {
                break;
            }
            let wake = drop_at.min(now + Duration::from_millis(200));
            match tokio::time::timeout_at(wake, ws.next()).await {
                Err(_) => continue,
                Ok(Some(Ok(Message::Text(t)))) => {
                    let Some(seq) = field_u64(t.as_str(), "seq") else {
                        continue;
                    };
                    match seen.get_mut(seq as usize) {
                        Some(true) => books.duplicated += 1,
                        Some(slot) => {
                            *slot = true;
                            books.unique += 1;
                            if seq < top {
                                books.out_of_order += 1;
                            }
                            top = top.max(seq);
                        }
                        None => books.out_of_order += 1,
                    }
                }
                Ok(Some(Ok(_))) => {}
                Ok(_) => break,
            }
        }
        // An abrupt drop, no close frame: what the server had queued for it is lost with it.
        drop(ws);
        since = format!("{epoch}:{top}");
    }
}

/// Runs the scenario.
pub fn run(a: &ResumeArgs) -> Outcome {
    let c = &a.common;
    if a.clients == 0 || !(a.rate > 0.0 && a.rate.is_finite()) || a.duration.is_zero() {
        return Err(Failure::Usage(
            "need -n > 0, --rate > 0 and --duration > 0".into(),
        ));
    }
    let rounds = (a.rate * a.duration.as_secs_f64()).ceil() as u64;
    if rounds.saturating_mul(a.clients) > 50_000_000 {
        return Err(Failure::Usage("too many pushes to track".into()));
    }
    let ws = parse_url(first_url(&c.url), "ws").map_err(Failure::Usage)?;
    let api = match &c.api {
        Some(u) => parse_url(u, "http").map_err(Failure::Usage)?,
        None => ws.api_base(),
    };
    crate::sys::raise_fd_limit();
    let ctx = Arc::new(Ctx {
        ws,
        source: c.source,
        prefix: format!("resume{}-", std::process::id()),
        connect_timeout: c.connect_timeout,
        drop_every: a.drop_every,
        last_pushed: (0..a.clients).map(|_| AtomicU64::new(0)).collect(),
        pushing_done: AtomicBool::new(false),
        connecting: Semaphore::new(CONNECTING),
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Run(format!("runtime: {e}")))?;
    let before = sample(&c.server_pid);
    // First every client connects once and learns its epoch (a `welcome` without one means the
    // server has history off, and the scenario would measure nothing).
    let probe = rt
        .block_on(open(&ctx, 0, None))
        .map_err(|e| Failure::Run(format!("cannot connect: {e}")))?;
    if probe.1["data"]["epoch"].as_str().is_none() {
        return Err(Failure::Run(
            "welcome has no epoch: start the server with history_size > 0".into(),
        ));
    }
    drop(probe);
    let limit = tokio::time::Instant::now() + a.duration + a.drain_timeout + c.connect_timeout * 2;
    let tasks: Vec<_> = (0..a.clients)
        .map(|i| rt.spawn(client(Arc::clone(&ctx), i, rounds, limit)))
        .collect();
    let pusher = {
        let (ctx, rate, n, key) = (Arc::clone(&ctx), a.rate, a.clients, c.api_key.clone());
        std::thread::spawn(move || push_all(&ctx, api, key.as_deref(), rate, rounds, n))
    };
    let mut books = Vec::new();
    let mut mid = None;
    rt.block_on(async {
        // Sample the server half way through, with every client connected or resuming.
        tokio::time::sleep(a.duration / 2).await;
        mid = Some(sample(&c.server_pid));
        for t in tasks {
            books.push(t.await.unwrap_or_default());
        }
    });
    let (pushed, refused) = pusher
        .join()
        .map_err(|_| Failure::Run("pusher panicked".into()))?;
    let end = sample(&c.server_pid);
    report(
        a,
        &ctx,
        &books,
        pushed,
        refused,
        [before, mid.unwrap_or_default(), end],
    )
}

/// Pushes `rounds` numbered messages to each client id, pacing each round to `1 / rate`.
fn push_all(
    ctx: &Ctx,
    api: Endpoint,
    key: Option<&str>,
    rate: f64,
    rounds: u64,
    n: u64,
) -> (u64, u64) {
    let (mut pushed, mut refused) = (0, 0);
    let Ok(mut http) = Client::new(api, key, Duration::from_secs(10)) else {
        ctx.pushing_done.store(true, Ordering::Release);
        return (0, rounds * n);
    };
    let t0 = Instant::now();
    let gap = Duration::from_secs_f64(1.0 / rate);
    for round in 0..rounds {
        if let Some(wait) = (t0 + gap.mul_f64(round as f64)).checked_duration_since(Instant::now())
        {
            std::thread::sleep(wait);
        }
        for i in 0..n {
            let body = format!(
                r#"{{"client_id":"{}{i}","type":"bench","data":{{"round":{round}}}}}"#,
                ctx.prefix
            );
            match http.post("/api/v1/push", &body) {
                Ok((200 | 202, answer)) => {
                    pushed += 1;
                    if let Some(seq) = field_u64(&answer, "seq") {
                        ctx.last_pushed[i as usize].fetch_max(seq, Ordering::AcqRel);
                    }
                }
                _ => refused += 1,
            }
        }
    }
    ctx.pushing_done.store(true, Ordering::Release);
    (pushed, refused)
}

fn report(
    a: &ResumeArgs,
    ctx: &Ctx,
    books: &[Books],
    pushed: u64,
    refused: u64,
    [before, mid, end]: [crate::sys::Sample; 3],
) -> Outcome {
    let mut latency = Histogram::default();
    let sum = |f: fn(&Books) -> u64| books.iter().map(f).sum::<u64>();
    for b in books {
        latency.merge(&b.latency);
    }
    let expected: u64 = ctx
        .last_pushed
        .iter()
        .map(|s| s.load(Ordering::Acquire))
        .sum();
    let unique = sum(|b| b.unique);
    let lost = expected.saturating_sub(unique);
    let per_conn = |s: crate::sys::Sample| match (before.rss_kib, s.rss_kib) {
        (Some(b), Some(e)) => Some((e.saturating_sub(b) * 1024) as f64 / a.clients as f64),
        _ => None,
    };
    let v = json!({
        "scenario": "resume",
        "clients": a.clients,
        "rate_per_client": a.rate,
        "duration_s": a.duration.as_secs_f64(),
        "drop_every_s": a.drop_every.as_secs_f64(),
        "pushed": pushed,
        "push_failures": refused,
        "expected": expected,
        "received_unique": unique,
        "lost": lost,
        "duplicated": sum(|b| b.duplicated),
        "out_of_order": sum(|b| b.out_of_order),
        "resumes": sum(|b| b.resumes),
        "not_recovered": sum(|b| b.not_recovered),
        "connect_failures": sum(|b| b.failed),
        "resume_latency_ms": pcts(&latency, &[("p50", 50.0), ("p99", 99.0)]),
        "server_rss_kib": {"before": before.rss_kib, "mid": mid.rss_kib, "end": end.rss_kib},
        "server_rss_per_connection_bytes": {"mid": per_conn(mid), "end": per_conn(end)},
    });
    let ms = |p| {
        latency
            .percentile(p)
            .map_or("-".into(), |us| format!("{:.2}", us as f64 / 1000.0))
    };
    let summary = format!(
        "resume: {} clients, {} pushes ({} failed), {} resumes ({} not recovered)\n\
         lost {} / duplicated {} / out of order {}\n\
         resume latency p50 {} ms, p99 {} ms\n\
         server RSS per connection: mid {}, end {}",
        a.clients,
        pushed,
        refused,
        v["resumes"],
        v["not_recovered"],
        lost,
        v["duplicated"],
        v["out_of_order"],
        ms(50.0),
        ms(99.0),
        per_conn(mid).map_or("-".into(), |b| format!("{b:.0} B")),
        per_conn(end).map_or("-".into(), |b| format!("{b:.0} B")),
    );
    Ok((v, summary))
}
