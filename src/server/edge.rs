//! The edge: a thread of its own that accepts connections, serves HTTP/1.1 and completes
//! WebSocket handshakes up to `welcome`, so a client connecting while the worker threads fan a
//! broadcast out to every session is still answered within milliseconds. Sessions, the reaper
//! and the cluster run on the main runtime (the one `Server::run` was called on); a session's
//! socket moves there once its `welcome` is on the wire. The HTTP API stays on the edge: a
//! fan-out only enqueues and wakes, in paced slices, and the writes it causes run on the
//! workers.
//!
//! Why a thread rather than ordering within one runtime: tokio has no task priorities, and a
//! broadcast wakes thousands of session tasks at once, so a handshake queued behind them waits
//! for all of them (18× its idle latency at 3 broadcasts/s to 18,500 sessions). The kernel
//! schedules the edge thread beside the workers instead, so a handshake waits for a scheduler
//! slice at most.

use std::future::Future;
use std::io;

use tokio::sync::oneshot;

/// The edge thread; [`Edge::finish`] waits for it.
pub struct Edge {
    /// Resolves when the thread's runtime has stopped.
    done: oneshot::Receiver<()>,
}

impl Edge {
    /// Starts a thread with a single-threaded runtime running `work` to its end; the future is
    /// built on that thread, so what it binds (the listener) belongs to the edge's reactor.
    pub fn spawn<F, Fut>(work: F) -> io::Result<Edge>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()>,
    {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("tether-edge")
            .build()?;
        let (tx, done) = oneshot::channel();
        std::thread::Builder::new()
            .name("tether-edge".into())
            .spawn(move || {
                runtime.block_on(work());
                // The HTTP connections still open are cut with the runtime: `run` has given
                // them their grace already.
                drop(runtime);
                let _ = tx.send(());
            })?;
        Ok(Edge { done })
    }

    /// Waits until the edge thread has stopped (its work returned).
    pub async fn finish(self) {
        let _ = self.done.await;
    }
}
