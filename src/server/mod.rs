//! The top of the library: `Server` and the shutdown orchestration (this file); `accept`, the
//! accept loop with its socket permits and per-connection HTTP serving; `edge`, the thread that
//! accepts, serves HTTP and completes handshakes; `drain`, a drain or paced restart when the stop
//! signal comes. It may use every module; none uses it (the crate root re-exports `Server`,
//! `bind` and `Stopped`). The stop signal itself is `crate::shutdown`, below everything, because
//! the cluster and the webhooks listen to it too.

mod accept;
mod drain;
mod edge;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{oneshot, watch};

use crate::auth::Verifier;
use crate::config::{AuthMode, Config};
use crate::delivery::handle::Handle;
use crate::delivery::handler::{Handler, NoHandler};
use crate::http;
use crate::net::tls;
use crate::reaper;
use crate::session::CLOSE_GRACE;
use crate::shutdown::{AbortOnDrop, Signal};
use crate::state::Shared;
pub use drain::Stopped;
use edge::Edge;

/// Listen backlog: a reconnect wave after a deploy arrives all at once.
pub const BACKLOG: u32 = 4096;
/// The longest a stopping server waits for queued webhook events to be sent.
const WEBHOOK_FLUSH: Duration = Duration::from_secs(2);
/// After a forced stop, the longest `run` waits for sessions to let go of their sockets.
const ABANDON_WAIT: Duration = Duration::from_millis(500);

/// A configured server, ready to run on a bound listener.
pub struct Server {
    /// Shared every connection shares.
    pub(crate) shared: Arc<Shared>,
    /// TLS acceptor when `tls_cert`/`tls_key` are set.
    tls: Option<tls::Acceptor>,
}

impl Server {
    /// A server with no application handler; fails when the TLS files cannot be loaded.
    pub fn new(config: Config) -> io::Result<Server> {
        Server::with_handler(config, NoHandler)
    }

    /// A server that hands unknown message types and binary frames to `handler`.
    pub fn with_handler(config: Config, handler: impl Handler) -> io::Result<Server> {
        // Checked here, not in `Config::validate`: http owns the routes and already depends on
        // config, so config asking http would make a cycle.
        if http::builtin_route(&config.ws_path, config.demo_page, config.dashboard) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "ws_path: `{}` collides with a built-in route",
                    config.ws_path
                ),
            ));
        }
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(tls::load(cert, key)?),
            _ => None,
        };
        let shared = Arc::new(
            Shared::new(config, Arc::new(handler))
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?,
        );
        // Orders for this node's sessions (server subscriptions, kicks) run in the session
        // layer, which sits above the router that routes them.
        shared.router.set_orders(crate::session::orders(&shared));
        Ok(Server { shared, tls })
    }

    /// A handle for pushing from application code.
    pub fn handle(&self) -> Handle {
        self.shared.handle.clone()
    }

    /// Serves until `signal` asks to stop, then drains or restarts as configured.
    pub async fn run(self, listener: TcpListener, mut signal: Signal) -> io::Result<Stopped> {
        let (shared, tls) = (self.shared, self.tls);
        let addr = listener.local_addr()?;
        let _reload = match &shared.verifier {
            Some(v) => Some(AbortOnDrop(reload_keys_on_sighup(Arc::clone(v))?)),
            None => None,
        };
        let c = &shared.config;
        log::info!(
            "tether listening on {}://{addr}{} (heartbeat interval {:?}, timeout {:?}, reap every {:?}, max {} connections)",
            if tls.is_some() { "wss" } else { "ws" },
            c.ws_path,
            c.heartbeat_interval,
            c.heartbeat_timeout,
            c.reap_interval,
            shared.admissions.max_connections()
        );
        startup_warnings(&shared, addr);
        let _reaper = AbortOnDrop(reaper::spawn(Arc::clone(&shared)));
        let _cluster = shared.router.start();
        if let Some(w) = &shared.webhooks {
            w.run();
        }

        shared.set_main(tokio::runtime::Handle::current());
        let graceful = Arc::new(watch::channel(false).0);
        // Accepting, HTTP and handshakes run on the edge thread (see `edge`); it stops
        // accepting when `stop_accepting` fires and lets its HTTP connections finish until
        // `exit` does.
        let (stop_accepting, accepting) = oneshot::channel::<()>();
        let (exit, exiting) = oneshot::channel::<()>();
        let listener = listener.into_std()?;
        let edge = {
            let (shared, graceful) = (Arc::clone(&shared), Arc::clone(&graceful));
            Edge::spawn(move || async move {
                let listener = match TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => return log::error!("listener not moved to the edge thread: {e}"),
                };
                tokio::select! {
                    never = accept::accept_loop(&listener, &shared, tls.as_ref(), &graceful) => match never {},
                    _ = accepting => {}
                }
                drop(listener);
                let _ = exiting.await;
            })?
        };
        let stopped = drain::stop(&shared, &mut signal).await;
        let _ = stop_accepting.send(());
        if stopped == Stopped::Forced {
            // Nothing of a session may outlive `run`: cut even the closes in progress.
            shared.abandon();
            let code = shared.shutdown_close_code();
            for outbox in shared.registry.snapshot(None) {
                outbox.request_close(code);
            }
            let _ = tokio::time::timeout(ABANDON_WAIT, shared.admissions.wait_empty()).await;
        }
        // Plain HTTP keep-alive connections get a bounded moment to finish their request.
        let _ = graceful.send(true);
        let _ = tokio::time::timeout(CLOSE_GRACE, graceful.closed()).await;
        let _ = exit.send(());
        edge.finish().await;
        // In a cluster, presence of the closed sessions (and where they migrate from) is
        // written, and the node leaves, instead of lingering until node_ttl.
        shared.router.leave(WEBHOOK_FLUSH).await;
        if let Some(w) = &shared.webhooks {
            // The disconnects of the drain are events too: give them a bounded moment.
            w.flush(WEBHOOK_FLUSH).await;
        }
        log::info!("shutdown complete ({stopped:?})");
        Ok(stopped)
    }
}

/// Says at start what a deployment exposes that its operator may not expect (docs/protocol.md §13).
fn startup_warnings(shared: &Shared, addr: SocketAddr) {
    let c = &shared.config;
    let public = !addr.ip().is_loopback();
    let proxied = !c.trusted_proxies.is_empty();
    if shared.api_key.is_none() {
        if c.api_open {
            log::warn!(
                "api_open: listening on {addr} without api_key: anyone who can reach it can push, \
                 list and close sessions"
            );
        } else if proxied {
            log::warn!(
                "no api_key: /api/* answers only direct local callers; requests through the \
                 trusted proxies get 401 until api_key (or api_key_file) is set"
            );
        }
    }
    if c.auth == AuthMode::Off && (public || proxied) {
        log::warn!(
            "auth = \"off\": anyone who can reach {} may connect as any client id and receive its \
             messages; set auth = \"on\" with a token key (docs/auth.md)",
            if public {
                "this listener"
            } else {
                "the proxy in front"
            }
        );
    }
}

/// Re-reads the token key files on every SIGHUP, so keys rotate without a restart; a broken
/// file is logged and the keys in force stay. The handler is installed before this returns, so
/// a SIGHUP right after startup cannot fall on the default action (which ends the process).
fn reload_keys_on_sighup(verifier: Arc<Verifier>) -> io::Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup())?;
    Ok(tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match verifier.reload() {
                Ok(()) => log::info!("SIGHUP: token keys reloaded"),
                Err(e) => log::error!("SIGHUP: token keys not reloaded, the old ones stay: {e}"),
            }
        }
    }))
}

/// Binds with a large backlog (the default 128 drops SYNs during reconnect storms).
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}
