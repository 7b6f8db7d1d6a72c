//! Accepting and serving HTTP: a socket permit before every accept, the per-address HTTP cap,
//! shedding on EMFILE, and one hyper connection per socket with the header-read timeout.

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
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::handshake;
use crate::http;
use crate::http::error::Error;
use crate::net::budget::{Permit, PermitCell, Sockets};
use crate::net::tls;
use crate::state::Shared;

/// hyper's smallest read buffer; a smaller `max_header_size` is still enforced exactly.
const MIN_HEAD_BUFFER: usize = 8192;
/// A client must finish sending its request headers within this time.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after an accept error that is neither about one connection nor about descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_secs(1);
/// Pause after shedding a connection for want of descriptors.
const SHED_WAIT: Duration = Duration::from_millis(20);

/// Accepts until the task is dropped: a permit before each accept, the per-address HTTP cap,
/// TLS if configured, then one HTTP connection served per socket.
pub(super) async fn accept_loop(
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
        async move {
            // The WebSocket path first, before any HTTP routing: the upgrade is not an endpoint
            // of `http` (which the handshake uses for its replies), so neither calls the other
            // back.
            let response = if req.uri().path() == shared.config.ws_path {
                handshake::upgrade(&shared, req, peer)
            } else {
                http::route(shared, req, peer).await
            };
            Ok::<_, Infallible>(response)
        }
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
