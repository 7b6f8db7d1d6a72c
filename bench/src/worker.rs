//! A worker process (`tether-bench worker --spec JSON`, hidden): runs its share of the clients
//! on a single-threaded runtime, prints [`Event`] lines on stdout, and obeys `go` / `stop` lines
//! on stdin. The end of stdin means stop, so a worker never outlives its parent for long.

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use crate::conn::{Outcome, Shared, Welcome, Ws, live, open};
use crate::proto::{Event, Kind, Report, WorkerSpec, unix_us};
use crate::raw::{End, Silent};
use crate::stats::{SeqTracker, bump};

/// Prints one event line; a closed stdout is noticed through stdin's end instead.
pub(crate) fn emit(ev: &Event) {
    if let Ok(line) = serde_json::to_string(ev) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

/// Entry point of a worker process.
pub fn run(spec: &str) -> ExitCode {
    let spec: WorkerSpec = match serde_json::from_str(spec) {
        Ok(s) => s,
        Err(e) => {
            emit(&Event::Fatal {
                message: format!("bad worker spec: {e}"),
            });
            return ExitCode::from(2);
        }
    };
    crate::sys::raise_fd_limit();
    // Minted before the runtime starts, so no connect attempt waits behind HMAC work.
    let tokens = match crate::token::tokens_for(
        spec.token_secret.as_deref(),
        spec.first,
        spec.clients,
        spec.token_ttl_secs,
    ) {
        Ok(t) => t,
        Err(message) => {
            emit(&Event::Fatal { message });
            return ExitCode::FAILURE;
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            emit(&Event::Fatal {
                message: format!("runtime: {e}"),
            });
            return ExitCode::FAILURE;
        }
    };
    let mut report = rt.block_on(work(Arc::new(spec), tokens));
    report.cpu_secs = crate::sys::cpu_secs(std::process::id()).unwrap_or(0.0);
    wire_counts(&mut report);
    emit(&Event::Done {
        report: Box::new(report),
    });
    ExitCode::SUCCESS
}

/// Commands from the parent; `stop` also when stdin ends.
fn commands() -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(4);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.blocking_send(line.trim().to_string()).is_err() {
                return;
            }
        }
        let _ = tx.blocking_send("stop".into());
    });
    rx
}

/// Waits for the next command (`stop` when the parent is gone).
pub(super) async fn next(rx: &mut mpsc::Receiver<String>) -> String {
    rx.recv().await.unwrap_or_else(|| "stop".into())
}

/// The shared figures of this worker.
pub(super) struct Ctx {
    /// Scenario and share.
    pub(super) spec: Arc<WorkerSpec>,
    /// Counters and latency histogram.
    pub(super) shared: Shared,
    /// Connect figures (one per wave; wave 0 for single-wave scenarios).
    waves: [Mutex<Report>; 2],
    /// Limits handshakes in flight.
    sem: Semaphore,
    /// Token of client `first + i` at `i`; empty without a token secret.
    tokens: Vec<String>,
}

impl Ctx {
    /// The token of client `c<id>`, if tokens are in use.
    pub(crate) fn token(&self, id: u64) -> Option<&str> {
        let i = id.checked_sub(self.spec.first)?;
        self.tokens
            .get(usize::try_from(i).ok()?)
            .map(String::as_str)
    }

    /// Connect figures of wave `i`.
    pub(crate) fn wave(&self, i: usize) -> std::sync::MutexGuard<'_, Report> {
        self.waves[i].lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Connects `c<id>` (retrying until `retry_until`, if given), recording into wave `w`.
pub(super) async fn connect(
    ctx: &Ctx,
    id: u64,
    w: usize,
    retry_until: Option<tokio::time::Instant>,
) -> Option<(Ws, Welcome)> {
    let _permit = ctx.sem.acquire().await.ok()?;
    let mut backoff = Duration::from_millis(50);
    {
        let mut r = ctx.wave(w);
        r.start_us = if r.start_us == 0 {
            unix_us()
        } else {
            r.start_us
        };
    }
    let spec = if w == 1 {
        ctx.spec.wave2()
    } else {
        WorkerSpec::clone(&ctx.spec)
    };
    loop {
        match open(&spec, id, ctx.token(id)).await {
            Ok((ws, welcome, us)) => {
                let mut r = ctx.wave(w);
                r.established += 1;
                r.handshake_us.record(us);
                r.end_us = r.end_us.max(unix_us());
                ctx.shared.ok.fetch_add(1, Ordering::Relaxed);
                return Some((ws, welcome));
            }
            Err(kind) => {
                bump(&mut ctx.wave(w).failures, kind);
                ctx.shared.failed.fetch_add(1, Ordering::Relaxed);
                match retry_until {
                    Some(d) if tokio::time::Instant::now() + backoff < d => {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                    }
                    _ => {
                        ctx.wave(w).gave_up += 1;
                        return None;
                    }
                }
            }
        }
    }
}

/// Counts a client whose connection attempt is over, successful or not.
pub(crate) fn resolved(tx: &mpsc::Sender<()>) {
    let _ = tx.try_send(());
}

/// Waits until `n` clients reported through `rx`.
pub(super) async fn all_resolved(rx: &mut mpsc::Receiver<()>, n: u64) {
    for _ in 0..n {
        if rx.recv().await.is_none() {
            return;
        }
    }
}

async fn work(spec: Arc<WorkerSpec>, tokens: Vec<String>) -> Report {
    let mut cmds = commands();
    let ctx = Arc::new(Ctx {
        sem: Semaphore::new(spec.concurrency.max(1) as usize),
        spec: Arc::clone(&spec),
        shared: Shared::default(),
        waves: Default::default(),
        tokens,
    });
    let ticker = {
        let ctx = Arc::clone(&ctx);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let s = &ctx.shared;
                emit(&Event::Progress {
                    ok: s.ok.load(Ordering::Relaxed),
                    failed: s.failed.load(Ordering::Relaxed),
                    recv: s.recv.load(Ordering::Relaxed),
                });
            }
        })
    };
    let report = match spec.kind {
        Kind::Hold | Kind::Fanout | Kind::Evict => steady(&ctx, &mut cmds).await,
        Kind::Storm => crate::storm::storm(&ctx, &mut cmds).await,
        Kind::Probe => crate::probe::probe(&ctx, &mut cmds).await,
        Kind::Migrate => crate::migrate::migrate(&ctx, &mut cmds).await,
        Kind::Lobby => crate::lobby::lobby(&ctx, &mut cmds).await,
    };
    ticker.abort();
    report
}

/// What one client task hands back.
enum Life {
    /// Never connected.
    Failed,
    /// A connected client's end (hold, fanout, healthy evict clients).
    Live(Outcome),
    /// A silent client's end, and µs from its last byte and from its welcome to that end.
    Silent(End, [u64; 2], Welcome),
}

/// Hold, fanout and evict: every client connects once and lives until told to stop (silent
/// evict clients live until the server ends them or their deadline).
async fn steady(ctx: &Arc<Ctx>, cmds: &mut mpsc::Receiver<String>) -> Report {
    let spec = Arc::clone(&ctx.spec);
    let (stop_tx, stop_rx) = watch::channel(false);
    let (done_tx, mut done_rx) = mpsc::channel(spec.clients as usize + 1);
    let (silent_tx, mut silent_rx) = mpsc::channel(spec.silent as usize + 1);
    let mut tasks = JoinSet::new();
    for i in 0..spec.clients {
        let (ctx, stop, done, silent_done) = (
            Arc::clone(ctx),
            stop_rx.clone(),
            done_tx.clone(),
            silent_tx.clone(),
        );
        let id = spec.first + i;
        tasks.spawn(async move {
            if i < ctx.spec.silent {
                let opened = {
                    let _permit = ctx.sem.acquire().await;
                    Silent::open(&ctx.spec, id, ctx.token(id)).await
                };
                let (mut s, welcome, us) = match opened {
                    Ok(x) => x,
                    Err(kind) => {
                        bump(&mut ctx.wave(0).failures, kind);
                        ctx.wave(0).gave_up += 1;
                        ctx.shared.failed.fetch_add(1, Ordering::Relaxed);
                        resolved(&done);
                        resolved(&silent_done);
                        return Life::Failed;
                    }
                };
                {
                    let mut r = ctx.wave(0);
                    r.established += 1;
                    r.handshake_us.record(us);
                    r.end_us = r.end_us.max(unix_us());
                    r.start_us = if r.start_us == 0 {
                        unix_us()
                    } else {
                        r.start_us
                    };
                    r.advertised_timeout_ms = r.advertised_timeout_ms.max(welcome.timeout_ms);
                }
                ctx.shared.ok.fetch_add(1, Ordering::Relaxed);
                resolved(&done);
                let wait_ms = match ctx.spec.max_wait_ms {
                    0 => 2 * welcome.timeout_ms + ctx.spec.reap_ms + 2000,
                    ms => ms,
                };
                let deadline =
                    tokio::time::Instant::from_std(s.last_byte) + Duration::from_millis(wait_ms);
                let (end, at) = s.wait_end(deadline).await;
                ctx.shared.recv.fetch_add(1, Ordering::Relaxed);
                resolved(&silent_done);
                let took = at.duration_since(s.last_byte).as_micros() as u64;
                let since_welcome = at.duration_since(s.welcome_at).as_micros() as u64;
                return Life::Silent(end, [took, since_welcome], welcome);
            }
            let Some((ws, welcome)) = connect(&ctx, id, 0, None).await else {
                resolved(&done);
                return Life::Failed;
            };
            resolved(&done);
            let hb_ms = match ctx.spec.heartbeat_ms {
                0 => welcome.interval_ms,
                ms => ms,
            };
            let hb = (hb_ms > 0).then(|| Duration::from_millis(hb_ms));
            let tracker =
                (ctx.spec.kind == Kind::Fanout).then(|| SeqTracker::new(ctx.spec.messages));
            Life::Live(live(ws, hb, tracker, &ctx.shared, stop).await)
        });
    }
    drop((done_tx, silent_tx));
    all_resolved(&mut done_rx, spec.clients).await;
    let mut snapshot = ctx.wave(0).clone();
    wire_counts(&mut snapshot);
    emit(&Event::Phase {
        name: "connected".into(),
        report: Box::new(snapshot),
    });
    let mut cmd = next(cmds).await;
    if spec.kind == Kind::Evict && cmd == "go" {
        // Healthy clients keep going until every silent one has ended (or the parent stops us).
        tokio::select! {
            _ = all_resolved(&mut silent_rx, spec.silent) => {}
            c = next(cmds) => cmd = c,
        }
    } else if cmd == "go" {
        cmd = next(cmds).await;
    }
    log::debug!("worker {} stopping after `{cmd}`", spec.index);
    let _ = stop_tx.send(true);
    let mut report = ctx.wave(0).clone();
    report.unique_per_seq = vec![0; spec.messages as usize];
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Life::Live(o)) => fold_live(&mut report, o, spec.kind),
            Ok(Life::Silent(end, took, welcome)) => {
                fold_silent(&mut report, end, took, welcome, &spec)
            }
            Ok(Life::Failed) | Err(_) => {}
        }
    }
    let s = &ctx.shared;
    report.received = s.recv.load(Ordering::Relaxed);
    report.first_recv_us = s.first_recv.load(Ordering::Relaxed);
    report.last_recv_us = s.last_recv.load(Ordering::Relaxed);
    report.latency_us = s.latency.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if spec.kind == Kind::Evict {
        report.received = 0;
    }
    report
}

/// This worker's wire figures so far, into `r`.
fn wire_counts(r: &mut Report) {
    r.wire_bytes = crate::wire::WIRE_BYTES.load(Ordering::Relaxed);
    r.compressed = crate::wire::COMPRESSED.load(Ordering::Relaxed);
}

fn fold_live(r: &mut Report, o: Outcome, kind: Kind) {
    if let Some(code) = o.closed {
        if kind == Kind::Evict {
            bump(&mut r.healthy_closed, code.clone());
        }
        bump(&mut r.unexpected_closes, code);
    }
    r.heartbeats_sent += o.heartbeats;
    r.acks += o.acks;
    if let Some(t) = o.tracker {
        for (seq, n) in r.unique_per_seq.iter_mut().enumerate() {
            *n += u64::from(t.has(seq as u64));
        }
        r.duplicated += t.duplicated;
        r.out_of_order += t.out_of_order;
        r.out_of_range += t.out_of_range;
    }
}

fn fold_silent(r: &mut Report, end: End, took: [u64; 2], w: Welcome, spec: &WorkerSpec) {
    let [took_us, since_welcome_us] = took;
    r.advertised_timeout_ms = r.advertised_timeout_ms.max(w.timeout_ms);
    let label = match end {
        End::Deadline => {
            r.not_evicted += 1;
            return;
        }
        End::Close(code) => code,
        End::Tcp(kind) => kind,
    };
    r.evicted += 1;
    r.evict_us.record(took_us);
    bump(&mut r.evict_codes, label);
    let limit_us = (w.timeout_ms + spec.reap_ms) * 1000;
    if took_us > limit_us {
        r.late_from_last_byte += 1;
    }
    if since_welcome_us > limit_us {
        r.late += 1;
    }
    if took_us < w.timeout_ms * 1000 {
        r.early += 1;
    }
}
