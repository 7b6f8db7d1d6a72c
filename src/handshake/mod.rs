//! The WebSocket upgrade (this file) and `identity`, who is connecting (client id, token
//! grants, address behind proxies). It may use sessions, shared state, `http`'s reply and query
//! helpers, `net` and the bottom; only `server` uses it (it sends the WebSocket path here before
//! any HTTP routing). Admission slots live in `net::admission`, below the session that holds one.
//!
//! The WebSocket upgrade: every check has a named refusal (docs/protocol.md §1), then admission, then
//! the 101 answer and the hand-over of the upgraded socket to a session task.
//!
//! Nothing of the request is kept past this point: the session gets its client id, its address
//! and the upgraded IO, so idle sessions do not carry headers around.

pub(crate) mod identity;

use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::FutureExt;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::upgrade::Upgraded;
use hyper::{Method, Request, Response, StatusCode, Version};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use crate::clock::unix_now;
use crate::engine::Since;
use crate::handshake::identity::{client_addr, identify};
use crate::http::error::Error;
use crate::http::query::query_param;
use crate::http::reply::{Body, empty, error_response};
use crate::net::admission::AdmitError;
use crate::net::budget::PermitCell;
use crate::net::deflate::{self, Agreed, Inflater, stream::Inflating};
use crate::net::tls;
use crate::session;
use crate::session::Guard;
use crate::state::Shared;

/// Answers an upgrade request on the WebSocket path.
pub fn upgrade(
    shared: &Arc<Shared>,
    mut req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Body> {
    let remote = client_addr(&shared.config.trusted_proxies, req.headers(), peer);
    let checked = validate(shared, &req).and_then(|key| {
        let identity = identify(
            shared.verifier.as_deref(),
            shared.config.require_client_id,
            req.uri().query(),
            req.headers(),
            unix_now(),
        )?;
        if let Some(until) = identity
            .client_id
            .as_deref()
            .and_then(|id| shared.router.blocked(id))
        {
            return Err(Error::Blocked(until));
        }
        let per_client = shared.config.max_sessions_per_client;
        if let Some(id) = &identity.client_id
            && per_client > 0
            && shared.registry.sessions_of(id) >= per_client
        {
            return Err(Error::TooManySessions(per_client));
        }
        let since = since(&req);
        let slot = shared.admissions.admit(remote.ip()).map_err(|e| match e {
            AdmitError::Full => Error::ServerFull,
            AdmitError::PerIp => Error::TooManyConnections,
            AdmitError::Rate => Error::ConnectRate,
        })?;
        take_socket_permit(&req)?;
        Ok((key, (identity, since), slot))
    });
    let (key, (identity, since), slot) = match checked {
        Ok(v) => v,
        Err(e) => {
            shared.metrics.refused(e.code());
            log::debug!(
                "upgrade refused for {remote}: {} ({})",
                e.code(),
                e.message()
            );
            return error_response(&e);
        }
    };

    let compression = shared
        .config
        .compression
        .then(|| {
            deflate::negotiate(
                req.headers()
                    .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
                    .iter()
                    .map(HeaderValue::as_bytes),
            )
        })
        .flatten();
    let on_upgrade = hyper::upgrade::on(&mut req);
    drop(req);
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let guard = session::prepare(shared, identity, remote, since, slot).await;
                if let Some(agreed) = compression {
                    guard.agreed_deflate(agreed.window_bits);
                }
                spawn_session(upgraded, guard, compression).await;
            }
            Err(e) => {
                shared.sockets.release_session();
                log::debug!("upgrade from {remote} failed after 101: {e}");
            }
        }
    });

    let mut res = empty(StatusCode::SWITCHING_PROTOCOLS);
    let h = res.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    if let Some(v) = compression.and_then(|a| HeaderValue::from_str(&a.response()).ok()) {
        h.insert(header::SEC_WEBSOCKET_EXTENSIONS, v);
    }
    res
}

/// Moves the connection's socket permit to the session-to-be (admission has already checked
/// that a session slot is free).
fn take_socket_permit(req: &Request<Incoming>) -> Result<(), Error> {
    let permit = req
        .extensions()
        .get::<PermitCell>()
        .and_then(|cell| cell.lock().take())
        .ok_or(Error::ServerFull)?;
    permit.into_session();
    Ok(())
}

/// Spawns the session on the socket underneath hyper's `Upgraded` when its type is known, so the
/// session does not keep hyper's boxed IO wrapper alive for its whole life. Each stream type gets
/// its own task, sized for that type alone (a TLS stream is far larger than a TCP one); plain
/// TCP, the common case, skips tokio-tungstenite's adapter (see `socket.rs`). A session that
/// agreed to permessage-deflate reads through its inflating layer, a type of its own, so the
/// others pay nothing for it.
async fn spawn_session(upgraded: Upgraded, guard: Guard, compression: Option<Agreed>) {
    let max = guard.shared().config.max_message_size;
    let upgraded = match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => {
            // An empty `read_buf` may still point into hyper's 8 KiB read buffer: never keep it.
            let part = (!parts.read_buf.is_empty()).then(|| parts.read_buf.to_vec());
            let (tcp, cfg) = (parts.io.into_inner(), session::ws_config(max));
            let inflater = compression.map(|_| Box::new(Inflater::new(max)));
            return session::open_tcp(tcp, part, cfg, inflater, guard).await;
        }
        Err(u) => u,
    };
    let upgraded = match upgraded.downcast::<TokioIo<tls::Stream>>() {
        Ok(parts) => {
            let (io, part) = (parts.io.into_inner(), parts.read_buf);
            return match compression {
                Some(_) => spawn_on(inflating(io, part, max), guard),
                None => spawn_on(socket(io, part, max), guard),
            };
        }
        Err(u) => u,
    };
    let io = TokioIo::new(upgraded);
    match compression {
        Some(_) => spawn_on(inflating(io, bytes::Bytes::new(), max), guard),
        None => spawn_on(socket(io, bytes::Bytes::new(), max), guard),
    }
}

/// [`socket`] reading through the inflating layer; the bytes hyper read past the request go
/// through it first.
fn inflating<S>(
    io: S,
    read_buf: bytes::Bytes,
    max_message: usize,
) -> impl Future<Output = WebSocketStream<Inflating<S>>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut io = Inflating::new(io, max_message);
    let part = bytes::Bytes::from(io.filter_vec(read_buf.to_vec()));
    socket(io, part, max_message)
}

/// Spawns the session task. Making the WebSocket object needs a task context but no I/O, so it
/// is polled once here: the session task then holds only the session, not the setup as well.
fn spawn_on<S, F>(ws: F, guard: Guard)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    F: Future<Output = WebSocketStream<S>> + Send + 'static,
{
    let mut ws = Box::pin(ws);
    let mut cx = std::task::Context::from_waker(futures_util::task::noop_waker_ref());
    // On the main runtime, beside every other session; the stream's I/O stays registered with
    // the edge's reactor (a TLS stream cannot be moved between reactors).
    let main = guard.shared().main();
    match ws.as_mut().poll(&mut cx) {
        // The no-op waker stored at creation is replaced by the session's on its first poll.
        std::task::Poll::Ready(ws) => {
            main.spawn(session::open(ws, guard));
        }
        std::task::Poll::Pending => {
            main.spawn(ws.then(move |ws| session::open(ws, guard)));
        }
    }
}

/// A server-side WebSocket over `io`, starting with any bytes hyper read past the request.
fn socket<S>(
    io: S,
    read_buf: bytes::Bytes,
    max_message: usize,
) -> impl Future<Output = WebSocketStream<S>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let cfg = Some(session::ws_config(max_message));
    // An empty `read_buf` may still point into hyper's 8 KiB read buffer: never keep it.
    let part = (!read_buf.is_empty()).then(|| read_buf.to_vec());
    async move {
        match part {
            None => WebSocketStream::from_raw_socket(io, Role::Server, cfg).await,
            Some(p) => WebSocketStream::from_partially_read(io, p, Role::Server, cfg).await,
        }
    }
}

/// RFC 6455 §4.2.1 checks, then policy; returns the client's key.
fn validate(shared: &Shared, req: &Request<Incoming>) -> Result<String, Error> {
    if req.method() != Method::GET {
        return Err(Error::BadHandshake("the method must be GET"));
    }
    if req.version() != Version::HTTP_11 {
        return Err(Error::BadHandshake("HTTP/1.1 is required"));
    }
    let h = req.headers();
    if !has_token(h, header::UPGRADE, "websocket") {
        return Err(Error::BadHandshake("missing `Upgrade: websocket`"));
    }
    if !has_token(h, header::CONNECTION, "upgrade") {
        return Err(Error::BadHandshake("missing `Connection: Upgrade`"));
    }
    if h.get(header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        return Err(Error::UnsupportedVersion);
    }
    let key = h
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| valid_key(k))
        .ok_or(Error::BadHandshake(
            "missing or malformed Sec-WebSocket-Key",
        ))?;
    if shared.is_draining() {
        return Err(Error::Draining);
    }
    if !shared.config.allowed_origins.is_empty() {
        let origin = h.get(header::ORIGIN).and_then(|v| v.to_str().ok());
        if !origin.is_some_and(|o| shared.config.allowed_origins.iter().any(|a| a == o)) {
            return Err(Error::OriginNotAllowed);
        }
    }
    Ok(key.to_string())
}

/// A Sec-WebSocket-Key is 16 bytes in base64: 22 characters and `==`.
pub fn valid_key(k: &str) -> bool {
    let b = k.as_bytes();
    b.len() == 24
        && b[22..] == *b"=="
        && b[..22]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/')
}

/// Whether any `name` header lists `token` (comma-separated, case-insensitive).
pub fn has_token(h: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    h.get_all(name).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

/// The `since=<epoch>:<seq>` a resuming client sends (§8). One that is not a position (another
/// server's, an old format, not UTF-8) never refuses the upgrade (§13): a refusal before the
/// upgrade is only a 1006 to a browser, which would retry the same `since` forever.
fn since(req: &Request<Incoming>) -> Option<Since> {
    match req.uri().query().and_then(|q| query_param(q, "since"))? {
        Ok(text) => Some(Since::parse(&text)),
        Err(()) => Some(Since::Bad),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert!(valid_key("dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(!valid_key("short=="));
        assert!(!valid_key("dGhlIHNhbXBsZSBub25jZQ!="));
    }
}
