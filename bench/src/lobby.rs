//! The worker side of `presence` and `lobby` (channel presence, docs/protocol.md §14).
//!
//! - `presence` (`churn_ms` 0): every client subscribes to channel 0 and stays, so the parent
//!   can time `GET /api/v1/channels/{c}/presence` against N subscribers.
//! - `lobby`: client `c<k>` for k below `channels` observes channel k (subscribes and stays);
//!   every other client, while the parent says `go`, joins a channel at random, leaves it,
//!   joins another, … (one at a time, as players move between lobbies). On the
//!   second `go` they stay where they are (the parent samples the server once its queues
//!   drained); on the third they leave every channel; on `stop` each observer reports what
//!   it saw. An
//!   observer keeps the set of joined client ids: a `join` of a member is a duplicate, a
//!   `leave` of a non-member is unmatched (a duplicate leave or a missed join), and a member
//!   left once everyone left and the grace passed is a missed leave.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

use crate::conn::{HEARTBEAT, Ws};
use crate::proto::{Event, Report};
use crate::worker::{Ctx, all_resolved, connect, emit, next, resolved};

/// Where the run is, as the parent moves it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Stage {
    /// Connected, waiting for `go`.
    Ready,
    /// Joining and leaving at random.
    Churn,
    /// Staying where they are (no more churn), so the server's queues drain while every
    /// client is still in its lobby.
    Hold,
    /// Leaving every channel, then holding.
    Leave,
    /// Told to stop.
    Stop,
}

/// What one client hands back.
#[derive(Default)]
struct End {
    events: u64,
    duplicates: u64,
    unmatched: u64,
    left_over: u64,
    ops: u64,
    closed: Option<String>,
}

/// A small deterministic generator (xorshift64*): reproducible runs without a crate.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

fn channel(ctx: &Ctx, k: u64) -> String {
    format!("{}{k}", ctx.spec.channel_prefix)
}

fn frame(kind: &str, channel: &str) -> Message {
    Message::text(serde_json::json!({"type": kind, "data": {"channel": channel}}).to_string())
}

/// Subscribes and waits (bounded) for `subscribed`.
async fn subscribe(ws: &mut Ws, channel: &str) -> Result<(), String> {
    ws.send(frame("subscribe", channel))
        .await
        .map_err(|_| "send".to_string())?;
    let wait = async {
        while let Some(m) = ws.next().await {
            if let Ok(Message::Text(t)) = m
                && t.as_str().contains("\"subscribed\"")
            {
                return Ok(());
            }
        }
        Err("closed".to_string())
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .unwrap_or_else(|_| Err("no_subscribed".into()))
}

/// The worker's run: connect and subscribe everyone, then follow the parent's commands.
pub(crate) async fn lobby(ctx: &Arc<Ctx>, cmds: &mut mpsc::Receiver<String>) -> Report {
    let spec = Arc::clone(&ctx.spec);
    let (stage_tx, stage_rx) = watch::channel(Stage::Ready);
    let (done_tx, mut done_rx) = mpsc::channel(spec.clients as usize + 1);
    let mut tasks = JoinSet::new();
    for i in 0..spec.clients {
        let (ctx, stage, done) = (Arc::clone(ctx), stage_rx.clone(), done_tx.clone());
        let id = spec.first + i;
        tasks.spawn(async move { client(ctx, id, stage, done).await });
    }
    drop(done_tx);
    all_resolved(&mut done_rx, spec.clients).await;
    emit(&Event::Phase {
        name: "connected".into(),
        report: Box::new(ctx.wave(0).clone()),
    });
    for stage in [Stage::Churn, Stage::Hold, Stage::Leave, Stage::Stop] {
        let cmd = next(cmds).await;
        let stage = if cmd == "go" { stage } else { Stage::Stop };
        let _ = stage_tx.send(stage);
        if stage == Stage::Stop {
            break;
        }
    }
    let mut report = ctx.wave(0).clone();
    while let Some(joined) = tasks.join_next().await {
        if let Ok(e) = joined {
            report.presence_events += e.events;
            report.presence_duplicates += e.duplicates;
            report.presence_unmatched += e.unmatched;
            report.presence_left_over += e.left_over;
            report.churn_ops += e.ops;
            if let Some(code) = e.closed {
                crate::stats::bump(&mut report.unexpected_closes, code);
            }
        }
    }
    report
}

async fn client(
    ctx: Arc<Ctx>,
    id: u64,
    mut stage: watch::Receiver<Stage>,
    done: mpsc::Sender<()>,
) -> End {
    let mut end = End::default();
    let Some((mut ws, welcome)) = connect(&ctx, id, 0, None).await else {
        resolved(&done);
        return end;
    };
    let churning = ctx.spec.churn_ms > 0;
    let observes = !churning || id < ctx.spec.channels;
    if observes {
        let ch = channel(&ctx, if churning { id } else { 0 });
        if let Err(kind) = subscribe(&mut ws, &ch).await {
            end.closed = Some(kind);
            resolved(&done);
            return end;
        }
    }
    resolved(&done);
    let me = format!("c{id}");
    let mut members: HashMap<String, bool> = HashMap::new();
    let mut joined = vec![false; ctx.spec.channels as usize];
    let mut rng = Rng(id.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let period = Duration::from_millis(welcome.interval_ms.max(1000));
    let mut hb = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let churn_mean = ctx.spec.churn_ms.max(1);
    let mut wake = tokio::time::Instant::now() + Duration::from_millis(rng.below(2 * churn_mean));
    loop {
        let now_stage = *stage.borrow();
        if now_stage == Stage::Stop {
            break;
        }
        let churn_now = churning && !observes && now_stage == Stage::Churn;
        tokio::select! {
            _ = stage.changed() => {
                if *stage.borrow() == Stage::Leave && !observes {
                    for (k, j) in joined.iter_mut().enumerate() {
                        if *j {
                            *j = false;
                            end.ops += 1;
                            let _ = ws.send(frame("unsubscribe", &channel(&ctx, k as u64))).await;
                        }
                    }
                }
            }
            _ = hb.tick() => {
                if ws.send(Message::text(HEARTBEAT)).await.is_err() {
                    end.closed = Some("send".into());
                    break;
                }
            }
            _ = tokio::time::sleep_until(wake), if churn_now => {
                // One lobby at a time: leave the one it is in, or join one at random.
                let k = match joined.iter().position(|j| *j) {
                    Some(k) => k as u64,
                    None => rng.below(ctx.spec.channels),
                };
                let j = &mut joined[k as usize];
                *j = !*j;
                let kind = if *j { "subscribe" } else { "unsubscribe" };
                end.ops += 1;
                if ws.send(frame(kind, &channel(&ctx, k))).await.is_err() {
                    end.closed = Some("send".into());
                    break;
                }
                wake = tokio::time::Instant::now()
                    + Duration::from_millis(rng.below(2 * churn_mean));
            }
            m = ws.next() => match m {
                Some(Ok(Message::Text(t))) if observes => observe(t.as_str(), &mut members, &mut end),
                Some(Ok(Message::Close(f))) => {
                    end.closed = Some(f.map_or("close_no_code".into(), |f| u16::from(f.code).to_string()));
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    end.closed = Some("tcp_end".into());
                    break;
                }
            }
        }
    }
    if churning && observes {
        end.left_over = members.iter().filter(|(c, m)| **m && **c != me).count() as u64;
    }
    end
}

/// Accounts one frame an observer received.
fn observe(text: &str, members: &mut HashMap<String, bool>, end: &mut End) {
    let is_event = text.contains("\"join\"") || text.contains("\"leave\"");
    if !is_event {
        return;
    }
    let Ok(v) = serde_json::from_str::<serde_json::Value>(text) else {
        return;
    };
    let (Some(kind), Some(client)) = (v["type"].as_str(), v["data"]["client_id"].as_str()) else {
        return;
    };
    let member = members.entry(client.to_string()).or_default();
    match kind {
        "join" => {
            end.events += 1;
            if *member {
                end.duplicates += 1;
            }
            *member = true;
        }
        "leave" => {
            end.events += 1;
            if !*member {
                end.unmatched += 1;
            }
            *member = false;
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observers_count_duplicates_unmatched_and_members() {
        let mut m = HashMap::new();
        let mut e = End::default();
        let ev = |k: &str, c: &str| {
            format!(
                r#"{{"type":"{k}","channel":"l0","data":{{"channel":"l0","client_id":"{c}"}}}}"#
            )
        };
        for (k, c) in [
            ("join", "a"),
            ("join", "a"),
            ("leave", "b"),
            ("join", "b"),
            ("leave", "a"),
        ] {
            observe(&ev(k, c), &mut m, &mut e);
        }
        observe(
            r#"{"type":"subscribed","data":{"channel":"l0"}}"#,
            &mut m,
            &mut e,
        );
        assert_eq!((e.events, e.duplicates, e.unmatched), (5, 1, 1));
        assert_eq!(m.values().filter(|v| **v).count(), 1, "b is still joined");
    }
}
