//! The accept loop, per-connection HTTP serving, and the shutdown orchestration.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use crate::config::{Config, ShutdownMode};
use crate::handle::Handle;
use crate::handler::{Handler, NoHandler};
use crate::protocol::envelope;
use crate::reaper::{self, ReaperGuard};
use crate::session::CLOSE_GRACE;
use crate::shutdown::Signal;
use crate::state::Shared;
use crate::{http, tls};

/// Listen backlog: a reconnect wave after a deploy arrives all at once.
pub const BACKLOG: u32 = 4096;
/// A client must finish sending its request headers within this time.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after an accept error that is not about one connection (e.g. out of descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// How `run` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Every session was drained or closed.
    Clean,
    /// A second stop request cut the shutdown short.
    Forced,
}

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
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(tls::load(cert, key)?),
            _ => None,
        };
        Ok(Server {
            shared: Arc::new(Shared::new(config, Arc::new(handler))),
            tls,
        })
    }

    /// A handle for pushing from application code.
    pub fn handle(&self) -> Handle {
        self.shared.handle.clone()
    }

    /// Serves until `signal` asks to stop, then drains or restarts as configured.
    pub async fn run(self, listener: TcpListener, mut signal: Signal) -> io::Result<Stopped> {
        let (shared, tls) = (self.shared, self.tls);
        let addr = listener.local_addr()?;
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
        if !addr.ip().is_loopback() && c.api_key.is_none() {
            log::warn!(
                "listening on {addr} without api_key: anyone who can reach it can push and close sessions"
            );
        }
        let _reaper = ReaperGuard(reaper::spawn(Arc::clone(&shared)));
        let (graceful, _) = watch::channel(false);
        let stopped = {
            let accept = accept_loop(&listener, &shared, tls.as_ref(), &graceful);
            tokio::pin!(accept);
            tokio::select! {
                never = &mut accept => match never {},
                s = stop(&shared, &mut signal) => s,
            }
        };
        drop(listener);
        // Plain HTTP keep-alive connections get a bounded moment to finish their request.
        let _ = graceful.send(true);
        let _ = tokio::time::timeout(CLOSE_GRACE, graceful.closed()).await;
        log::info!("shutdown complete ({stopped:?})");
        Ok(stopped)
    }
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

async fn accept_loop(
    listener: &TcpListener,
    shared: &Arc<Shared>,
    tls: Option<&tls::Acceptor>,
    graceful: &watch::Sender<bool>,
) -> Infallible {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                match tls {
                    Some(acceptor) => {
                        let (acceptor, shared, watcher) =
                            (acceptor.clone(), Arc::clone(shared), graceful.subscribe());
                        tokio::spawn(async move {
                            match tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(stream))
                                .await
                            {
                                Ok(Ok(tls)) => serve(tls, peer, shared, watcher),
                                Ok(Err(e)) => log::debug!("TLS handshake with {peer} failed: {e}"),
                                Err(_) => log::debug!("TLS handshake with {peer} timed out"),
                            }
                        });
                    }
                    None => serve(stream, peer, Arc::clone(shared), graceful.subscribe()),
                }
            }
            // Errors about one connection (reset before accept, etc.) do not concern the others.
            Err(e) if is_per_connection(&e) => log::debug!("accept: {e}"),
            Err(e) => {
                log::error!("accept failed: {e}; pausing {ACCEPT_BACKOFF:?}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

/// Serves one HTTP/1.1 connection; `stop` flipping to true asks it to finish its request and close.
fn serve<IO>(io: IO, peer: SocketAddr, shared: Arc<Shared>, mut stop: watch::Receiver<bool>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req| {
        let shared = Arc::clone(&shared);
        async move { Ok::<_, Infallible>(http::route(shared, req, peer).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades();
    tokio::spawn(async move {
        tokio::pin!(conn);
        let result = tokio::select! {
            r = conn.as_mut() => r,
            _ = stop.changed() => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(e) = result {
            log::debug!("http connection from {peer}: {e}");
        }
        // Dropping `stop` here tells the server this connection is finished.
    });
}

/// Waits for the first stop request, then takes the sessions down as configured.
async fn stop(shared: &Shared, signal: &mut Signal) -> Stopped {
    signal.at_least(1).await;
    shared.start_draining();
    let mode = shared.config.shutdown_mode;
    log::info!(
        "shutdown started: mode {}, {} sessions",
        mode.as_str(),
        shared.registry.len()
    );
    let phase = async {
        if mode == ShutdownMode::Drain {
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
        let code = shared.shutdown_close_code();
        shared.registry.for_each(|h| {
            h.request_close(code);
        });
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
