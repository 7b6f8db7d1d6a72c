//! Shutdown signalling: a counter of stop requests. The first asks for a graceful stop (drain or
//! restart), the second for an immediate exit. SIGINT and SIGTERM feed it in the binary; tests and
//! embedding applications call [`Trigger::signal`].

use std::sync::Arc;

use tokio::sync::watch;

/// Sends stop requests.
#[derive(Clone)]
pub struct Trigger(Arc<watch::Sender<u32>>);

/// Receives stop requests.
#[derive(Clone)]
pub struct Signal(watch::Receiver<u32>);

/// A connected trigger and signal.
pub fn channel() -> (Trigger, Signal) {
    let (tx, rx) = watch::channel(0);
    (Trigger(Arc::new(tx)), Signal(rx))
}

impl Trigger {
    /// One more stop request.
    pub fn signal(&self) {
        self.0.send_modify(|n| *n += 1);
    }
}

impl Signal {
    /// Waits until at least `n` stop requests arrived; never returns if every trigger is gone.
    pub async fn at_least(&mut self, n: u32) {
        if self.0.wait_for(|v| *v >= n).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Feeds SIGINT and SIGTERM into `trigger` for the life of the process.
pub fn forward_os_signals(trigger: Trigger) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                Some(()) = term.recv() => log::info!("SIGTERM received"),
                Some(()) = int.recv() => log::info!("SIGINT received"),
                else => return,
            }
            trigger.signal();
        }
    });
    Ok(())
}

/// Aborts a background task (the reaper, the key reloader) when the server's run ends, however
/// it ends.
pub(crate) struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
