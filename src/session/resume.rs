//! Resuming a stream (docs/protocol.md §8): the hand-over described in `engine/mod.rs`, run once for the
//! client stream while a session opens and once per `subscribe` to a channel. Whatever the
//! outcome, the gate is gone when it returns, so a settled session carries nothing of it.

use std::sync::Arc;

use bytes::Bytes;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::engine::{HandOver, Live, Position, Recovery, Since, StreamKey};
use crate::outbox::{Enqueued, Outbox};
use crate::protocol::close;
use crate::state::Shared;

/// `reason` of a resume whose `since` was not a position (§13).
pub const BAD_POSITION: &str = "bad_position";

/// Gate overflows tolerated in one resume before the session is closed as a slow consumer: each
/// one means a queue's worth of messages arrived while the replay was being queued.
const OVERFLOW_TRIES: usize = 3;

/// What a resume found, for `welcome` / `subscribed`.
pub struct Resumed {
    /// The stream's top when it was read: the position the client has after the replay.
    pub position: Position,
    /// With `since`: whether every message after it was there.
    pub recovered: Option<bool>,
    /// Why `recovered` is false when the answer names it: [`BAD_POSITION`].
    pub reason: Option<&'static str>,
    /// Messages replayed.
    pub missed: usize,
}

impl Resumed {
    /// The fields a resume adds to `welcome` / `subscribed` data, each with a leading comma.
    pub fn json_fields(&self) -> String {
        let mut out = format!(
            ",\"epoch\":\"{}\",\"seq\":{}",
            self.position.epoch, self.position.seq
        );
        if let Some(recovered) = self.recovered {
            out.push_str(&format!(
                ",\"recovered\":{recovered},\"missed\":{}",
                self.missed
            ));
        }
        if let Some(reason) = self.reason {
            out.push_str(&format!(",\"reason\":\"{reason}\""));
        }
        out
    }
}

/// Runs the hand-over of `key` for `outbox`: `index` enters the session in the registry's index
/// of the stream once its gate is in place; `header` makes the frame queued before the replay.
/// For a client stream in a cluster, returns the node its sessions migrated from (see
/// `Cluster::present`).
pub async fn hand_over(
    shared: &Shared,
    outbox: &Arc<Outbox>,
    key: StreamKey,
    since: Option<Since>,
    index: impl FnOnce(),
    header: impl FnOnce(&Resumed) -> Option<Utf8Bytes>,
) -> Option<Arc<str>> {
    let gate = Arc::new(HandOver::new(shared.config.send_queue));
    outbox.add_gate(key.clone(), Arc::clone(&gate));
    index();
    // Other nodes must route the stream here before it is read, or a message appended between
    // the read and the routing would reach neither the replay nor the gate.
    let migrated_from = shared.router.route_here(&key).await;
    let outcome = replay(shared, outbox, &key, since, &gate, header).await;
    // Also after a failure: the session is closing then, and a gate left behind only holds frames.
    if let Err(e) = shared.engine.settle(&key).await {
        log::warn!("session {}: settling {key:?} failed: {e}", outbox.id);
    }
    outbox.remove_gate(&gate);
    if outcome.is_none() {
        log::debug!("session {}: resume of {key:?} ended the session", outbox.id);
    }
    migrated_from
}

async fn replay(
    shared: &Shared,
    outbox: &Arc<Outbox>,
    key: &StreamKey,
    since: Option<Since>,
    gate: &HandOver,
    header: impl FnOnce(&Resumed) -> Option<Utf8Bytes>,
) -> Option<Resumed> {
    let recovery = match &since {
        Some(Since::At(p)) => shared.engine.recover(key, p).await,
        // What the client held means nothing here: it gets what a client without state gets,
        // and is told to reload, since what it has may not fit what follows.
        Some(Since::Bad) => shared
            .engine
            .recover(key, &Position::start())
            .await
            .map(|r| Recovery {
                recovered: false,
                ..r
            }),
        None => shared.engine.ensure(key).await.map(|position| Recovery {
            position,
            recovered: true,
            missed: Vec::new(),
        }),
    };
    let mut recovery = match recovery {
        Ok(r) => r,
        Err(e) => return fail(outbox, close::INTERNAL, &format!("engine: {e}")),
    };
    let resumed = Resumed {
        position: recovery.position.clone(),
        recovered: since.is_some().then_some(recovery.recovered),
        reason: (since == Some(Since::Bad)).then_some(BAD_POSITION),
        missed: recovery.missed.len(),
    };
    if since.is_some() {
        shared
            .metrics
            .resumed(recovery.recovered, resumed.missed as u64);
    }
    if let Some(frame) = header(&resumed) {
        shared.registry.enqueue(outbox, Message::Text(frame));
    }
    for _ in 0..OVERFLOW_TRIES {
        for stored in &recovery.missed {
            push(shared, outbox, &stored.frame);
        }
        let opened = gate.open(&recovery.position, |live: &Live| {
            push(shared, outbox, &live.frame)
        });
        if opened.is_ok() {
            return Some(resumed);
        }
        // The frames the gate dropped are in history: replay them from where the queue is.
        recovery = match shared.engine.recover(key, &recovery.position).await {
            Ok(again) if again.recovered => again,
            Ok(_) => break,
            Err(e) => return fail(outbox, close::INTERNAL, &format!("engine: {e}")),
        };
    }
    fail(
        outbox,
        close::SLOW_CONSUMER,
        "live messages outran the replay",
    )
}

/// Queues one stored or live frame; true when the queue took it.
fn push(shared: &Shared, outbox: &Outbox, frame: &Bytes) -> bool {
    match Utf8Bytes::try_from(frame.clone()) {
        Ok(text) => shared.registry.enqueue(outbox, Message::Text(text)) == Enqueued::Queued,
        Err(_) => false,
    }
}

fn fail(outbox: &Outbox, code: u16, why: &str) -> Option<Resumed> {
    log::warn!(
        "session {} client {}: resume failed ({why}), closing {code}",
        outbox.id,
        outbox.client_id
    );
    outbox.request_close(code);
    None
}
