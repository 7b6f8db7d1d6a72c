//! The top of the library: the accept loop with its socket permits, per-connection HTTP serving
//! and the shutdown orchestration (this file); `edge`, the thread that accepts, serves HTTP and
//! completes handshakes; `drain`, a drain or paced restart when the stop signal comes. It may use
//! every module; none uses it (the crate root re-exports `Server`, `bind` and `Stopped`). The
//! stop signal itself is `crate::shutdown`, below everything, because the cluster and the
//! webhooks listen to it too.

mod drain;
mod edge;

pub use drain::Stopped;
use edge::Edge;

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{oneshot, watch};

use crate::auth::Verifier;
use crate::config::{AuthMode, Config};
use crate::delivery::handle::Handle;
use crate::delivery::handler::{Handler, NoHandler};
use crate::error::Error;
use crate::http;
use crate::net::budget::{Permit, PermitCell, Sockets};
use crate::net::tls;
use crate::reaper;
use crate::session::CLOSE_GRACE;
use crate::shutdown::{AbortOnDrop, Signal};
use crate::state::Shared;

/// hyper's smallest read buffer; a smaller `max_header_size` is still enforced exactly.
const MIN_HEAD_BUFFER: usize = 8192;
/// Listen backlog: a reconnect wave after a deploy arrives all at once.
pub const BACKLOG: u32 = 4096;
/// A client must finish sending its request headers within this time.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after an accept error that is neither about one connection nor about descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_secs(1);
/// The longest a stopping server waits for queued webhook events to be sent.
const WEBHOOK_FLUSH: Duration = Duration::from_secs(2);
/// After a forced stop, the longest `run` waits for sessions to let go of their sockets.
const ABANDON_WAIT: Duration = Duration::from_millis(500);
/// Pause after shedding a connection for want of descriptors.
const SHED_WAIT: Duration = Duration::from_millis(20);

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
        Ok(Server {
            shared: Arc::new(
                Shared::new(config, Arc::new(handler))
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?,
            ),
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
        let _cluster = shared.cluster.as_ref().map(|c| c.start());
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
                    never = accept_loop(&listener, &shared, tls.as_ref(), &graceful) => match never {},
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
        if let Some(c) = &shared.cluster {
            // Presence of the closed sessions (and where they migrate from) is written, and the
            // node leaves the cluster, instead of lingering until node_ttl.
            c.leave(WEBHOOK_FLUSH).await;
        }
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

async fn accept_loop(
    listener: &TcpListener,
    shared: &Arc<Shared>,
    tls: Option<&tls::Acceptor>,
    graceful: &watch::Sender<bool>,
) -> Infallible {
    loop {
        // The permit first: a socket that is accepted is one that is counted.
        let permit = shared.sockets.acquire().await;
        match listener.accept().await {
            Ok((stream, peer)) => {
                let permit = if is_trusted_proxy(shared, peer) {
                    permit
                } else {
                    match shared.sockets.count_http(permit, peer.ip()) {
                        Ok(p) => p,
                        Err(_) => {
                            refuse_over_cap(stream, peer, tls.is_none());
                            continue;
                        }
                    }
                };
                let _ = stream.set_nodelay(true);
                match tls {
                    Some(acceptor) => {
                        let (acceptor, shared, watcher) =
                            (acceptor.clone(), Arc::clone(shared), graceful.subscribe());
                        tokio::spawn(async move {
                            match tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(stream))
                                .await
                            {
                                Ok(Ok(tls)) => serve(tls, peer, shared, watcher, permit),
                                Ok(Err(e)) => log::debug!("TLS handshake with {peer} failed: {e}"),
                                Err(_) => log::debug!("TLS handshake with {peer} timed out"),
                            }
                        });
                    }
                    None => serve(
                        stream,
                        peer,
                        Arc::clone(shared),
                        graceful.subscribe(),
                        permit,
                    ),
                }
            }
            // Errors about one connection (reset before accept, etc.) do not concern the others.
            Err(e) if is_per_connection(&e) => log::debug!("accept: {e}"),
            Err(e) if is_out_of_descriptors(&e) => {
                drop(permit);
                shed_one(listener, &shared.sockets).await;
            }
            Err(e) => {
                log::error!("accept failed: {e}; pausing {ACCEPT_BACKOFF:?}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// A trusted proxy's connections are not held to `max_http_connections_per_ip`: all of them come
/// from its one address, whoever the clients behind it are, and the proxy bounds its own pool
/// (nginx's keepalive pool, `worker_connections`). Per-client limits belong in the proxy there.
fn is_trusted_proxy(shared: &Shared, peer: SocketAddr) -> bool {
    let proxies = &shared.config.trusted_proxies;
    !proxies.is_empty() && proxies.iter().any(|p| p.contains(peer.ip()))
}

/// The answer to a connection over `max_http_connections_per_ip`, built once.
static OVER_CAP: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let e = Error::TooManyHttpConnections;
    let body = e.body();
    format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        e.status().as_u16(),
        e.status().canonical_reason().unwrap_or(""),
        body.len()
    )
    .into_bytes()
});

/// Turns away a connection over `max_http_connections_per_ip` without serving it: no task, no
/// allocation, no wait, so an address past its cap costs a few system calls per attempt and holds
/// no descriptor. What the client already sent is read off (so the close is a FIN, not a reset
/// that could discard the answer), the 429 is written only if the socket takes it at once (a
/// fresh socket's send buffer is empty, so it does), and the socket is closed. A TLS connection
/// is closed without an answer: one would cost a handshake.
fn refuse_over_cap(stream: tokio::net::TcpStream, peer: SocketAddr, answer: bool) {
    use std::io::{Read, Write};
    log::debug!("refused a connection from {peer}: max_http_connections_per_ip reached");
    if !answer {
        return;
    }
    // Out of tokio's hands: its readiness for a socket it has not polled yet says "not ready".
    // The socket stays non-blocking, so neither call below waits.
    let Ok(mut std) = stream.into_std() else {
        return;
    };
    let mut sink = [0u8; 2048];
    for _ in 0..8 {
        match std.read(&mut sink) {
            Ok(n) if n > 0 => continue,
            _ => break,
        }
    }
    let _ = std.write(&OVER_CAP);
}

/// Out of descriptors although the budget had room (something else in the process holds them):
/// accept one pending connection on the reserved descriptor and close it at once, so the
/// listener sheds load instead of spinning on the same error.
async fn shed_one(listener: &TcpListener, sockets: &Sockets) {
    let reserve = sockets.take_reserve();
    let freed = reserve.is_some();
    drop(reserve);
    if freed {
        if let Ok(Ok((stream, peer))) = tokio::time::timeout(SHED_WAIT, listener.accept()).await {
            log::warn!("out of file descriptors: shedding the connection from {peer}");
            drop(stream);
        }
        sockets.restore_reserve();
    }
    tokio::time::sleep(SHED_WAIT).await;
}

fn is_out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
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
fn serve<IO>(
    io: IO,
    peer: SocketAddr,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    permit: Permit,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // The permit lives as long as the connection, unless an upgrade hands it to a session.
    let cell: PermitCell = Arc::new(Mutex::new(Some(permit)));
    let max_head = shared.config.max_header_size;
    let for_requests = Arc::clone(&cell);
    let svc = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        let shared = Arc::clone(&shared);
        req.extensions_mut().insert(Arc::clone(&for_requests));
        async move { Ok::<_, Infallible>(http::route(shared, req, peer).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        // The read buffer bounds memory, but it grows in steps that can overshoot its size by
        // half (a 40 KiB head passed a 32 KiB buffer); the head limit is checked to the byte.
        .max_buf_size(max_head.max(MIN_HEAD_BUFFER))
        .max_header_size(max_head)
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
        // Dropping `stop` here tells the server this connection is finished; dropping `cell`
        // gives the permit back unless a session took it.
        drop(cell);
    });
}
