//! Client connections of the workers: a socket bound to the worker's loopback source address,
//! the WebSocket handshake (tokio-tungstenite), the `welcome`, and the loop of a connected
//! client (heartbeats, acks, numbered messages). Failures are reported as short kind labels.

use std::io;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, error::ProtocolError};

use crate::proto::{WorkerSpec, unix_us};
use crate::stats::{Histogram, SeqTracker};
use crate::wire::{OFFER, Wire};

/// A connected client, on a socket that counts its bytes (and inflates, with `--compression`).
pub type Ws = WebSocketStream<Wire>;

/// The application heartbeat frame.
pub const HEARTBEAT: &str = r#"{"type":"heartbeat"}"#;

/// What the server said in `welcome`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Welcome {
    /// `heartbeat_interval_ms`.
    pub interval_ms: u64,
    /// `heartbeat_timeout_ms`.
    pub timeout_ms: u64,
}

impl Welcome {
    /// Reads the two heartbeat figures out of a `welcome` envelope; None if it is not one.
    pub fn parse(text: &str) -> Option<Welcome> {
        let v: serde_json::Value = serde_json::from_str(text).ok()?;
        if v["type"] != "welcome" {
            return None;
        }
        Some(Welcome {
            interval_ms: v["data"]["heartbeat_interval_ms"].as_u64().unwrap_or(0),
            timeout_ms: v["data"]["heartbeat_timeout_ms"].as_u64().unwrap_or(0),
        })
    }
}

/// A short label for an I/O error.
pub fn io_kind(e: &io::Error) -> String {
    if e.raw_os_error() == Some(libc::EMFILE) || e.raw_os_error() == Some(libc::ENFILE) {
        return "client_out_of_fds".into();
    }
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "refused".into(),
        io::ErrorKind::ConnectionReset => "reset".into(),
        io::ErrorKind::ConnectionAborted => "aborted".into(),
        io::ErrorKind::TimedOut => "timeout".into(),
        io::ErrorKind::AddrNotAvailable => "addr_not_available".into(),
        io::ErrorKind::AddrInUse => "addr_in_use".into(),
        io::ErrorKind::UnexpectedEof => "eof".into(),
        io::ErrorKind::BrokenPipe => "broken_pipe".into(),
        k => format!("io_{k:?}").to_ascii_lowercase(),
    }
}

/// A short label for a WebSocket error (`http_503`, `refused`, `eof`, ...).
pub fn ws_kind(e: &WsError) -> String {
    match e {
        WsError::Http(r) => format!("http_{}", r.status().as_u16()),
        WsError::Io(e) => io_kind(e),
        WsError::ConnectionClosed | WsError::AlreadyClosed => "closed".into(),
        WsError::Protocol(ProtocolError::HandshakeIncomplete) => "eof".into(),
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => "reset".into(),
        WsError::Protocol(_) => "protocol".into(),
        WsError::Capacity(_) => "capacity".into(),
        WsError::Utf8(_) => "utf8".into(),
        _ => "other".into(),
    }
}

/// A TCP connection from the worker's source address (any free port) to the server.
pub async fn tcp(spec: &WorkerSpec) -> io::Result<TcpStream> {
    let sock = TcpSocket::new_v4()?;
    sock.set_reuseaddr(true)?;
    bind_no_port(&sock);
    sock.bind(SocketAddr::new(spec.source_ip.into(), 0))?;
    let s = sock.connect(spec.addr).await?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Asks the kernel to pick the source port at connect time (by the whole 4-tuple) rather than
/// at bind time, so one source address serves more connections. Best effort.
fn bind_no_port(sock: &TcpSocket) {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: a plain setsockopt on a socket we own, with a correctly sized int option.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Small buffers: the tool holds thousands of mostly idle connections per process.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
}

/// When the steps of one connect completed, in µs from the start of the TCP connect.
#[derive(Clone, Copy, Debug, Default)]
pub struct Timing {
    /// TCP connection established (on loopback: the kernel's accept queue, not the server).
    pub tcp_us: u64,
    /// `101 Switching Protocols` read.
    pub upgraded_us: u64,
    /// `welcome` read.
    pub welcome_us: u64,
}

/// Connects client `c<id>` (with `token`, if any) and waits for its `welcome`; returns the
/// socket, the welcome and the microseconds from TCP connect start to `welcome`.
pub async fn open(
    spec: &WorkerSpec,
    id: u64,
    token: Option<&str>,
) -> Result<(Ws, Welcome, u64), String> {
    open_timed(spec, id, token)
        .await
        .map(|(ws, w, t)| (ws, w, t.welcome_us))
}

/// [`open`], with the time of each step.
pub async fn open_timed(
    spec: &WorkerSpec,
    id: u64,
    token: Option<&str>,
) -> Result<(Ws, Welcome, Timing), String> {
    let t0 = Instant::now();
    let us = |t: Instant| t.duration_since(t0).as_micros() as u64;
    let mut timing = Timing::default();
    let attempt = async {
        let tcp = tcp(spec).await.map_err(|e| io_kind(&e))?;
        timing.tcp_us = us(Instant::now());
        let url = format!(
            "ws://{}{}",
            spec.host,
            crate::target::Endpoint {
                addr: spec.addr,
                host: spec.host.clone(),
                path: spec.path.clone(),
            }
            .path_for(&format!("c{id}"), token)
        );
        let mut req = url.into_client_request().map_err(|e| ws_kind(&e))?;
        if spec.compression {
            req.headers_mut().insert(
                "sec-websocket-extensions",
                tokio_tungstenite::tungstenite::http::HeaderValue::from_static(OFFER),
            );
        }
        let wire = Wire::new(tcp, spec.compression);
        let (mut ws, _) = tokio_tungstenite::client_async_with_config(req, wire, Some(ws_config()))
            .await
            .map_err(|e| ws_kind(&e))?;
        timing.upgraded_us = us(Instant::now());
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    return Welcome::parse(t.as_str())
                        .map(|w| (ws, w))
                        .ok_or_else(|| "no_welcome".to_string());
                }
                Some(Ok(Message::Close(f))) => {
                    return Err(f.map_or("close_no_code".into(), |f| {
                        format!("close_{}", u16::from(f.code))
                    }));
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(ws_kind(&e)),
                None => return Err("eof".into()),
            }
        }
    };
    let result =
        tokio::time::timeout(Duration::from_millis(spec.connect_timeout_ms), attempt).await;
    match result {
        Err(_) => Err("timeout".into()),
        Ok(Err(e)) => Err(e),
        Ok(Ok((ws, w))) => {
            timing.welcome_us = us(Instant::now());
            Ok((ws, w, timing))
        }
    }
}

/// Figures shared by all client tasks of a worker (single process, uncontended).
#[derive(Default)]
pub struct Shared {
    /// Clients connected.
    pub ok: AtomicU64,
    /// Failed attempts.
    pub failed: AtomicU64,
    /// Numbered messages received.
    pub recv: AtomicU64,
    /// First numbered message, Unix µs (0 = none yet).
    pub first_recv: AtomicU64,
    /// Last numbered message, Unix µs.
    pub last_recv: AtomicU64,
    /// Delivery latency.
    pub latency: Mutex<Histogram>,
}

/// How one connected client's life ended.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Why it ended before being told to stop (close code, `tcp_end`, error kind).
    pub closed: Option<String>,
    /// Heartbeats sent.
    pub heartbeats: u64,
    /// Acks received.
    pub acks: u64,
    /// Numbered messages, when tracked.
    pub tracker: Option<SeqTracker>,
}

/// Reads the unsigned integer after `"key":` in a JSON text, without a full parse.
pub fn field_u64(text: &str, key: &str) -> Option<u64> {
    let pat = format!("\"{key}\":");
    let at = text.find(&pat)? + pat.len();
    let digits: String = text[at..]
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Runs a connected client until `stop` turns true: heartbeats every `hb` (if any), counts acks
/// and, with a tracker, numbered `bench_seq` messages. Any end before `stop` is unexpected.
pub async fn live(
    mut ws: Ws,
    hb: Option<Duration>,
    mut tracker: Option<SeqTracker>,
    shared: &Shared,
    mut stop: watch::Receiver<bool>,
) -> Outcome {
    let mut out = Outcome::default();
    let period = hb.unwrap_or(Duration::from_secs(3600));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if *stop.borrow() {
            break;
        }
        tokio::select! {
            _ = stop.changed() => {}
            _ = tick.tick(), if hb.is_some() => {
                if let Err(e) = ws.send(Message::text(HEARTBEAT)).await {
                    out.closed = Some(ws_kind(&e));
                    break;
                }
                out.heartbeats += 1;
            }
            m = ws.next() => match m {
                Some(Ok(Message::Text(t))) => {
                    let t = t.as_str();
                    if let (Some(seq), Some(sent)) = (field_u64(t, "bench_seq"), field_u64(t, "t_us")) {
                        let now = unix_us();
                        if let Some(tr) = tracker.as_mut() {
                            tr.observe(seq);
                        }
                        shared.recv.fetch_add(1, Ordering::Relaxed);
                        let _ = shared.first_recv.compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
                        shared.last_recv.fetch_max(now, Ordering::Relaxed);
                        let mut h = shared.latency.lock().unwrap_or_else(|p| p.into_inner());
                        h.record(now.saturating_sub(sent));
                    } else if t.contains("\"heartbeat_ack\"") {
                        out.acks += 1;
                    }
                }
                Some(Ok(Message::Close(f))) => {
                    out.closed = Some(f.map_or("close_no_code".into(), |f| u16::from(f.code).to_string()));
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    out.closed = Some(ws_kind(&e));
                    break;
                }
                None => {
                    out.closed = Some("tcp_end".into());
                    break;
                }
            }
        }
    }
    if out.closed.is_none() && out.acks < out.heartbeats {
        // Told to stop: wait (bounded) for the acks of heartbeats still in flight.
        let mut acks = out.acks;
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while acks < out.heartbeats {
                match ws.next().await {
                    Some(Ok(Message::Text(t))) if t.as_str().contains("\"heartbeat_ack\"") => {
                        acks += 1;
                    }
                    Some(Ok(_)) => {}
                    _ => return,
                }
            }
        })
        .await;
        out.acks = acks;
    }
    out.tracker = tracker;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_without_parsing() {
        let t = r#"{"type":"bench","timestamp":"x","seq":9,"data":{"bench_seq":42,"t_us": 1700000000123456,"pad":"xx"}}"#;
        assert_eq!(field_u64(t, "bench_seq"), Some(42));
        assert_eq!(field_u64(t, "t_us"), Some(1_700_000_000_123_456));
        assert_eq!(field_u64(t, "seq"), Some(9));
        assert_eq!(field_u64(t, "missing"), None);
        assert_eq!(field_u64(r#"{"t_us":"x"}"#, "t_us"), None);
    }

    #[test]
    fn welcome_and_error_kinds() {
        let w = Welcome::parse(
            r#"{"type":"welcome","data":{"heartbeat_interval_ms":200,"heartbeat_timeout_ms":500}}"#,
        )
        .unwrap();
        assert_eq!((w.interval_ms, w.timeout_ms), (200, 500));
        assert!(Welcome::parse(r#"{"type":"error"}"#).is_none());
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(io_kind(&refused), "refused");
        assert_eq!(
            io_kind(&io::Error::from_raw_os_error(libc::EMFILE)),
            "client_out_of_fds"
        );
        assert_eq!(ws_kind(&WsError::Io(refused)), "refused");
        assert_eq!(ws_kind(&WsError::ConnectionClosed), "closed");
    }
}
