//! The worker side of `storm`: a reconnect wave after a deploy. Every client connects (wave 1),
//! all are dropped at once on `go`, and all reconnect (wave 2), retrying with backoff until the
//! wave deadline; they are held until `stop`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::proto::{Event, Report};
use crate::worker::{Ctx, all_resolved, connect, emit, next, resolved};

/// Storm: connect all (wave 1), on `go` drop all at once, then reconnect all (wave 2) with
/// retries until the wave deadline; hold them until `stop`.
pub(super) async fn storm(ctx: &Arc<Ctx>, cmds: &mut mpsc::Receiver<String>) -> Report {
    let spec = Arc::clone(&ctx.spec);
    let n = spec.clients;
    let (go_tx, go_rx) = watch::channel(0u8);
    let (done_tx, mut done_rx) = mpsc::channel(n as usize + 1);
    let mut tasks = JoinSet::new();
    let wave_deadline = |ms: u64| Some(tokio::time::Instant::now() + Duration::from_millis(ms));
    let first_deadline = wave_deadline(spec.max_wait_ms);
    for i in 0..n {
        let (ctx, mut go, done) = (Arc::clone(ctx), go_rx.clone(), done_tx.clone());
        tasks.spawn(async move {
            let id = ctx.spec.first + i;
            let ws = connect(&ctx, id, 0, first_deadline).await;
            resolved(&done);
            // 1 = drop now, 2 = reconnect now, 3 = stop.
            if go.wait_for(|&g| g >= 1).await.is_err() {
                return;
            }
            let had = ws.is_some();
            drop(ws);
            resolved(&done);
            if !had || go.wait_for(|&g| g >= 2).await.is_err() || *go.borrow() >= 3 {
                return;
            }
            let deadline =
                tokio::time::Instant::now() + Duration::from_millis(ctx.spec.max_wait_ms);
            let ws = connect(&ctx, id, 1, Some(deadline)).await;
            resolved(&done);
            let _ = go.wait_for(|&g| g >= 3).await;
            drop(ws);
        });
    }
    drop(done_tx);
    all_resolved(&mut done_rx, n).await;
    let w1 = ctx.wave(0).clone();
    emit(&Event::Phase {
        name: "wave1".into(),
        report: Box::new(w1),
    });
    let report = ctx.wave(0).clone();
    if next(cmds).await == "go" {
        let _ = go_tx.send(1);
        all_resolved(&mut done_rx, n).await;
        ctx.shared.ok.store(0, Ordering::Relaxed);
        ctx.shared.failed.store(0, Ordering::Relaxed);
        let _ = go_tx.send(2);
        all_resolved(&mut done_rx, report.established).await;
        let w2 = ctx.wave(1).clone();
        emit(&Event::Phase {
            name: "wave2".into(),
            report: Box::new(w2),
        });
        let _ = next(cmds).await;
    }
    let _ = go_tx.send(3);
    while tasks.join_next().await.is_some() {}
    report
}
