//! Taking the sessions down when the server stops (docs/protocol.md §6): `drain` tells everyone and
//! waits, `restart` migrates them to other nodes at a paced rate instead of all at once. A
//! second stop request cuts either short.

use std::time::Duration;

use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::config::ShutdownMode;
use crate::delivery::router::MARK_WAIT;
use crate::protocol::{close, envelope};
use crate::session::CLOSE_GRACE;
use crate::shutdown::Signal;
use crate::state::Shared;

/// How `run` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Every session was drained or closed.
    Clean,
    /// A second stop request cut the shutdown short.
    Forced,
}

/// Waits for the first stop request, then takes the sessions down as configured.
pub async fn stop(shared: &Shared, signal: &mut Signal) -> Stopped {
    signal.at_least(1).await;
    shared.start_draining();
    let mode = shared.config.shutdown_mode;
    log::info!(
        "shutdown started: mode {}, {} sessions",
        mode.as_str(),
        shared.registry.len()
    );
    let phase = async {
        // The application's goodbye goes out before tether's own shutdown messages.
        shared.handler.on_shutdown(&shared.handle);
        match mode {
            ShutdownMode::Drain => drain(shared).await,
            ShutdownMode::Restart => migrate(shared).await,
        }
        let code = shared.shutdown_close_code();
        for outbox in shared.registry.snapshot(None) {
            outbox.request_close(code);
        }
        // Each session bounds its own close; this only guards against the unexpected.
        if tokio::time::timeout(CLOSE_GRACE * 3, shared.admissions.wait_empty())
            .await
            .is_err()
        {
            log::warn!(
                "{} connections did not close in time",
                shared.admissions.admitted()
            );
        }
    };
    tokio::select! {
        () = phase => Stopped::Clean,
        () = signal.at_least(2) => {
            log::warn!("second stop request: exiting now");
            Stopped::Forced
        }
    }
}

/// `drain`: tell everyone, wait until they leave or `shutdown_timeout` passes.
async fn drain(shared: &Shared) {
    // Another node can take the client right away; client backoff jitter spreads the wave.
    let data = r#"{"mode":"drain","reconnect_after_ms":0}"#;
    shared
        .registry
        .broadcast(&Message::Text(envelope("shutdown", None, None, Some(data))));
    let t = shared.config.shutdown_timeout;
    if tokio::time::timeout(t, shared.admissions.wait_empty())
        .await
        .is_err()
    {
        log::info!(
            "drain timeout {t:?} reached; closing {} sessions with 1001",
            shared.registry.len()
        );
    }
}

/// `restart`: session i of n gets `reconnect_after_ms` = i/n of `migrate_window` and is closed
/// with 1012 at that moment, so the other nodes see an even reconnect rate, also from clients
/// that ignore the hint.
async fn migrate(shared: &Shared) {
    let window = shared.config.migrate_window;
    let mut sessions = shared.registry.snapshot(None);
    // Any fixed order will do; by id it is stable and unrelated to who connected when.
    sessions.sort_by_key(|o| o.id);
    let clients = sessions.iter().map(|o| std::sync::Arc::clone(&o.client_id));
    shared.router.mark_migrating(clients, MARK_WAIT).await;
    let n = sessions.len().max(1) as u128;
    let offset = |i: usize| Duration::from_millis((window.as_millis() * i as u128 / n) as u64);
    for (i, outbox) in sessions.iter().enumerate() {
        let data = format!(
            "{{\"mode\":\"restart\",\"reconnect_after_ms\":{}}}",
            offset(i).as_millis()
        );
        shared.registry.enqueue(
            outbox,
            Message::Text(envelope("shutdown", None, None, Some(&data))),
        );
    }
    let start = Instant::now();
    log::info!(
        "migrating {} sessions over {window:?} with 1012",
        sessions.len()
    );
    for (i, outbox) in sessions.iter().enumerate() {
        tokio::time::sleep_until(start + offset(i)).await;
        outbox.request_close(close::RESTART);
    }
}
