//! The worker side of `connect-load`: fresh clients that time the server's handshake path while
//! it holds (and, in the second phase, broadcasts to) everyone else. It runs in a worker of its
//! own, so its timings do not wait behind the held clients' traffic in the same event loop.
//!
//! Commands: `go` runs the next phase (`idle`, then `loaded`), `close` closes the clients of the
//! phases so far, `stop` ends. A phase connects `per_phase` new client ids in batches of `batch`
//! at once, never retrying (a refused or slow handshake is the figure), and keeps them open and
//! reading, as real clients would, until closed.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

use crate::conn::{Ws, open_timed, ws_kind};
use crate::proto::{Event, Report, unix_us};
use crate::stats::bump;
use crate::worker::{Ctx, all_resolved, emit, next, resolved};

/// Phase names, in order; also the names of their `Phase` events.
pub const PHASES: [&str; 2] = ["idle", "loaded"];

/// Longest wait for a phase's clients to finish their close handshakes.
const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// Clients of a phase that are still open.
struct Open {
    /// Turns true to close them.
    stop: watch::Sender<bool>,
    /// Their tasks.
    tasks: JoinSet<()>,
}

/// Runs the probe phases as the parent commands them.
pub(super) async fn probe(ctx: &Arc<Ctx>, cmds: &mut mpsc::Receiver<String>) -> Report {
    let mut phase = 0;
    let mut open = Vec::new();
    // Bounded: the parent sends at most go, close, go, stop.
    for _ in 0..8 {
        match next(cmds).await.as_str() {
            "go" if phase < PHASES.len() => {
                open.push(run_phase(ctx, phase).await);
                let report = ctx.wave(phase).clone();
                emit(&Event::Phase {
                    name: PHASES[phase].into(),
                    report: Box::new(report),
                });
                phase += 1;
            }
            "close" => {
                close(&mut open).await;
                emit(&Event::Phase {
                    name: "closed".into(),
                    report: Box::default(),
                });
            }
            _ => break,
        }
    }
    close(&mut open).await;
    let mut all = ctx.wave(0).clone();
    all.merge(&ctx.wave(1));
    all
}

/// Closes every open client and waits (bounded) for their tasks.
async fn close(open: &mut Vec<Open>) {
    for mut o in open.drain(..) {
        let _ = o.stop.send(true);
        let joined = tokio::time::timeout(CLOSE_WAIT, async {
            while o.tasks.join_next().await.is_some() {}
        })
        .await;
        if joined.is_err() {
            o.tasks.abort_all();
        }
    }
}

/// Connects phase `p`'s clients batch by batch; returns them, open.
async fn run_phase(ctx: &Arc<Ctx>, p: usize) -> Open {
    let spec = Arc::clone(&ctx.spec);
    // The progress line counts this phase only.
    ctx.shared.ok.store(0, Ordering::Relaxed);
    ctx.shared.failed.store(0, Ordering::Relaxed);
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let interval = Duration::from_millis(spec.batch_interval_ms);
    let first = spec.first + p as u64 * spec.per_phase;
    let end = first + spec.per_phase;
    let mut id = first;
    while id < end {
        let started = tokio::time::Instant::now();
        let n = spec.batch.max(1).min(end - id);
        let (done_tx, mut done_rx) = mpsc::channel(n as usize);
        for k in 0..n {
            let (ctx, stop, done) = (Arc::clone(ctx), stop_rx.clone(), done_tx.clone());
            tasks.spawn(async move { client(&ctx, id + k, p, stop, done).await });
        }
        drop(done_tx);
        all_resolved(&mut done_rx, n).await;
        id += n;
        tokio::time::sleep_until(started + interval).await;
    }
    Open { stop, tasks }
}

/// One new client: connect once, record the timings into wave `p`, then stay open until `stop`.
async fn client(ctx: &Ctx, id: u64, p: usize, stop: watch::Receiver<bool>, done: mpsc::Sender<()>) {
    let started = unix_us();
    let opened = open_timed(&ctx.spec, id, ctx.token(id)).await;
    {
        let mut r = ctx.wave(p);
        r.start_us = if r.start_us == 0 {
            started
        } else {
            r.start_us.min(started)
        };
        match &opened {
            Ok((_, _, t)) => {
                r.established += 1;
                r.handshake_us.record(t.welcome_us);
                r.upgrade_us.record(t.upgraded_us);
                r.tcp_us.record(t.tcp_us);
                r.end_us = r.end_us.max(unix_us());
            }
            Err(kind) => {
                bump(&mut r.failures, kind.clone());
                r.gave_up += 1;
            }
        }
    }
    let counter = if opened.is_ok() {
        &ctx.shared.ok
    } else {
        &ctx.shared.failed
    };
    counter.fetch_add(1, Ordering::Relaxed);
    resolved(&done);
    if let Ok((ws, _, _)) = opened
        && let Some(why) = stay_open(ws, stop).await
    {
        bump(&mut ctx.wave(p).unexpected_closes, why);
    }
}

/// Reads (and drops) whatever the server sends until `stop`, then closes with a close
/// handshake; the reason when the server or the network ended the connection first.
async fn stay_open(mut ws: Ws, mut stop: watch::Receiver<bool>) -> Option<String> {
    loop {
        if *stop.borrow() {
            break;
        }
        tokio::select! {
            changed = stop.changed() => if changed.is_err() { break },
            m = ws.next() => match m {
                Some(Ok(Message::Close(f))) => {
                    return Some(f.map_or("close_no_code".into(), |f| u16::from(f.code).to_string()));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Some(ws_kind(&e)),
                None => return Some("tcp_end".into()),
            },
        }
    }
    // A clean close, so the server records 1000 rather than an abnormal 1006.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        if ws.send(Message::Close(None)).await.is_ok() {
            while let Some(Ok(_)) = ws.next().await {}
        }
    })
    .await;
    None
}
