//! The worker side of `storm --migrate-to`: a node's restart as its clients live it. Every
//! client connects to node A (wave 1) and is held. On `go` (the parent then stops node A) each
//! one reads its connection until node A ends it — the `shutdown` message, then the close — and
//! reconnects to node B (wave 2), retrying with backoff until the wave deadline. With
//! `honor_hint` a client told `reconnect_after_ms` waits that long first. Each reconnect is
//! counted in the timeline, at its time since `go`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::conn::{Ws, ws_kind};
use crate::proto::{Event, Report, unix_us};
use crate::stats::bump;
use crate::timeline;
use crate::worker::{Ctx, all_resolved, connect, emit, next, resolved};

/// Longest wait for a close to complete (the reply to node A's close frame, or our own close),
/// so a node that stops answering cannot hold a client back from reconnecting.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Where the clients are in the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Connected to node A (or failed to), waiting for `go`.
    Hold,
    /// `go`, the timeline starting at this Unix µs: follow node A's shutdown, move to node B.
    Go(u64),
    /// Drop every connection and end.
    Stop,
}

/// The start of the timeline in a `go` command: the parent's clock (`go <unix µs>`, so every
/// worker's bins start at the same moment), or this worker's when the command carries none.
/// None when the command is not `go`.
fn go_time(cmd: &str) -> Option<u64> {
    let mut words = cmd.split_whitespace();
    if words.next() != Some("go") {
        return None;
    }
    Some(
        words
            .next()
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(unix_us),
    )
}

/// `reconnect_after_ms` of a `shutdown` envelope; None for any other text (or one without it).
fn shutdown_hint(text: &str) -> Option<u64> {
    // Only a shutdown is worth a parse; nothing else is expected once `go` has come.
    if !text.contains("shutdown") {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    if v["type"] != "shutdown" {
        return None;
    }
    v["data"]["reconnect_after_ms"].as_u64()
}

/// How a client's connection to node A ended.
#[derive(Debug, Default)]
struct Followed {
    /// `reconnect_after_ms` of node A's `shutdown` message, if one came.
    hint_ms: Option<u64>,
    /// Close code, error kind, `tcp_end`, `client_closed` or `deadline`.
    ended: String,
}

/// Reads node A's connection until node A ends it, or (with `honor`) until its hint is due, when
/// this side closes; with `honor`, a hint still running when node A closes is waited out.
/// Nothing waits past `deadline`.
async fn follow(ws: &mut Ws, honor: bool, deadline: Instant) -> Followed {
    let mut f = Followed::default();
    let mut due: Option<Instant> = None;
    loop {
        let wake = match due {
            Some(d) if honor => d.min(deadline),
            _ => deadline,
        };
        tokio::select! {
            m = ws.next() => match m {
                Some(Ok(Message::Text(t))) => {
                    if let Some(ms) = shutdown_hint(t.as_str()) {
                        f.hint_ms = Some(ms);
                        // A hint too large for the clock is as good as "after the deadline".
                        due = Some(Instant::now().checked_add(Duration::from_millis(ms)).unwrap_or(deadline));
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    f.ended = frame.map_or("close_no_code".into(), |c| u16::from(c.code).to_string());
                    // Reading on sends tungstenite's close reply and sees node A hang up, the
                    // moment a browser's `onclose` fires.
                    let _ = tokio::time::timeout(CLOSE_WAIT, async {
                        while let Some(Ok(_)) = ws.next().await {}
                    })
                    .await;
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    f.ended = ws_kind(&e);
                    break;
                }
                None => {
                    f.ended = "tcp_end".into();
                    break;
                }
            },
            () = tokio::time::sleep_until(wake) => {
                let hint_due = honor && due.is_some_and(|d| d <= Instant::now());
                f.ended = if hint_due { "client_closed" } else { "deadline" }.into();
                let bye = CloseFrame { code: CloseCode::Normal, reason: "reconnecting".into() };
                let _ = tokio::time::timeout(CLOSE_WAIT, ws.close(Some(bye))).await;
                return f;
            }
        }
    }
    if let (true, Some(d)) = (honor, due) {
        tokio::time::sleep_until(d.min(deadline)).await;
    }
    f
}

/// Adds how one connection to node A ended to wave 2's figures.
fn note(ctx: &Ctx, f: Followed) {
    let mut r = ctx.wave(1);
    match f.hint_ms {
        Some(ms) => {
            r.hinted += 1;
            r.hint_us.record(ms.saturating_mul(1000));
        }
        None => r.just_closed += 1,
    }
    bump(&mut r.ended_by, f.ended);
}

/// Migrate: connect all to node A (wave 1); on `go`, each follows node A's shutdown and then
/// reconnects to node B (wave 2) with retries until the wave deadline; hold them until `stop`.
pub(super) async fn migrate(ctx: &Arc<Ctx>, cmds: &mut mpsc::Receiver<String>) -> Report {
    let spec = Arc::clone(&ctx.spec);
    let n = spec.clients;
    let honor = spec.migration.as_ref().is_some_and(|m| m.honor_hint);
    let wave = Duration::from_millis(spec.max_wait_ms);
    // A reconnect can come as late as the deadline plus one attempt's timeout.
    let max_bins = timeline::bins_for(spec.max_wait_ms.saturating_add(spec.connect_timeout_ms));
    let (stage_tx, stage_rx) = watch::channel(Stage::Hold);
    let (done_tx, mut done_rx) = mpsc::channel(n as usize + 1);
    let mut tasks = JoinSet::new();
    let first_deadline = Some(Instant::now() + wave);
    for i in 0..n {
        let (ctx, mut stage, done) = (Arc::clone(ctx), stage_rx.clone(), done_tx.clone());
        tasks.spawn(async move {
            let id = ctx.spec.first + i;
            let first = connect(&ctx, id, 0, first_deadline).await;
            resolved(&done);
            let go = stage.wait_for(|s| *s != Stage::Hold).await.map(|s| *s);
            let (Ok(Stage::Go(t0)), Some((mut ws, _))) = (go, first) else {
                return;
            };
            let deadline = Instant::now() + wave;
            let followed = tokio::select! {
                f = follow(&mut ws, honor, deadline) => f,
                _ = stage.wait_for(|s| *s == Stage::Stop) => return,
            };
            drop(ws);
            note(&ctx, followed);
            let back = connect(&ctx, id, 1, Some(deadline)).await;
            if back.is_some() {
                let since_go = unix_us().saturating_sub(t0);
                let mut r = ctx.wave(1);
                timeline::record(&mut r.reconnects_per_100ms, since_go, max_bins);
                r.migrate_us.record(since_go);
            }
            resolved(&done);
            let _ = stage.wait_for(|s| *s == Stage::Stop).await;
            drop(back);
        });
    }
    drop(done_tx);
    all_resolved(&mut done_rx, n).await;
    let report = ctx.wave(0).clone();
    emit(&Event::Phase {
        name: "wave1".into(),
        report: Box::new(report.clone()),
    });
    if let Some(t0) = go_time(&next(cmds).await) {
        ctx.shared.ok.store(0, Ordering::Relaxed);
        ctx.shared.failed.store(0, Ordering::Relaxed);
        let _ = stage_tx.send(Stage::Go(t0));
        // A `stop` during the wave (the parent gave up) ends it without its figures.
        let finished = tokio::select! {
            () = all_resolved(&mut done_rx, report.established) => true,
            _ = next(cmds) => false,
        };
        if finished {
            let w2 = ctx.wave(1).clone();
            emit(&Event::Phase {
                name: "wave2".into(),
                report: Box::new(w2),
            });
            let _ = next(cmds).await;
        }
    }
    let _ = stage_tx.send(Stage::Stop);
    while tasks.join_next().await.is_some() {}
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_commands() {
        assert_eq!(go_time("go 1700000000123456"), Some(1_700_000_000_123_456));
        let own = go_time("go").unwrap();
        assert!(own > 1_600_000_000_000_000, "this worker's clock: {own}");
        assert!(go_time("go soon").is_some_and(|t| t > 1_600_000_000_000_000));
        assert_eq!(go_time("stop"), None);
        assert_eq!(go_time("gone"), None);
        assert_eq!(go_time(""), None);
    }

    #[test]
    fn shutdown_hints() {
        let restart = r#"{"type":"shutdown","timestamp":"t","data":{"mode":"restart","reconnect_after_ms":4210}}"#;
        assert_eq!(shutdown_hint(restart), Some(4210));
        let drain = r#"{"type":"shutdown","data":{"mode":"drain","reconnect_after_ms":0}}"#;
        assert_eq!(shutdown_hint(drain), Some(0));
        assert_eq!(
            shutdown_hint(r#"{"type":"shutdown","data":{"mode":"drain"}}"#),
            None
        );
        let other = r#"{"type":"notify","data":{"shutdown":1,"reconnect_after_ms":5}}"#;
        assert_eq!(shutdown_hint(other), None);
        assert_eq!(shutdown_hint("shutdown, not JSON"), None);
        let negative = r#"{"type":"shutdown","data":{"reconnect_after_ms":-1}}"#;
        assert_eq!(shutdown_hint(negative), None);
    }
}
