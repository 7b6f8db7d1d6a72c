//! Test harness: a real server on 127.0.0.1:0, real WebSocket clients, raw HTTP over TCP.
//! Readiness is the bound listener; every wait is bounded.
#![allow(dead_code)]

pub mod deflate;
pub mod failover;
pub mod redis;
pub mod redis_cluster;
pub mod sentinel;

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tether::shutdown::Trigger;
use tether::{Config, Handle, Handler, Server, Stopped};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

/// Longest any single wait in a test may take.
pub const WAIT: Duration = Duration::from_secs(10);

pub type Ws = WebSocketStream<TcpStream>;

pub struct TestServer {
    pub addr: SocketAddr,
    pub trigger: Trigger,
    pub join: JoinHandle<std::io::Result<Stopped>>,
    pub handle: Handle,
}

/// A config with loopback port 0 and the given keys set by name, as flags would set them.
pub fn config(pairs: &[(&str, &str)]) -> Config {
    let mut all = vec![("listen", "127.0.0.1:0")];
    all.extend_from_slice(pairs);
    Config::with(&all).unwrap()
}

pub async fn start(c: Config) -> TestServer {
    launch(Server::new(c.clone()).unwrap(), c).await
}

pub async fn start_with(c: Config, handler: impl Handler) -> TestServer {
    launch(Server::with_handler(c.clone(), handler).unwrap(), c).await
}

async fn launch(server: Server, c: Config) -> TestServer {
    let listener = tether::bind(c.listen).unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = server.handle();
    let (trigger, signal) = tether::shutdown::channel();
    let join = tokio::spawn(server.run(listener, signal));
    TestServer {
        addr,
        trigger,
        join,
        handle,
    }
}

/// Connects as `client_id` and returns the socket and the welcome envelope.
pub async fn connect(addr: SocketAddr, client_id: &str) -> (Ws, Value) {
    let mut ws = connect_raw(addr, &format!("/ws?client_id={client_id}"))
        .await
        .unwrap();
    let welcome = recv_json(&mut ws).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    (ws, welcome)
}

pub async fn connect_raw(
    addr: SocketAddr,
    path: &str,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    connect_with_headers(addr, path, &[]).await
}

/// A WebSocket handshake carrying extra request headers.
pub async fn connect_with_headers(
    addr: SocketAddr,
    path: &str,
    headers: &[(&'static str, &str)],
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut req = format!("ws://{addr}{path}").into_client_request()?;
    for (k, v) in headers {
        req.headers_mut().insert(*k, v.parse().unwrap());
    }
    let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::client_async(req, tcp))
        .await
        .expect("handshake timed out")?;
    Ok(ws)
}

/// Next text frame as JSON (pings are answered by tungstenite on the way).
pub async fn recv_json(ws: &mut Ws) -> Value {
    next_json(ws).await
}

/// Next text frame, raw.
pub async fn recv_text(ws: &mut Ws) -> String {
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("no message in time")
        {
            Some(Ok(Message::Text(t))) => return t.as_str().to_string(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected text, got {other:?}"),
        }
    }
}

/// Reads until the server's close frame; returns its code (None if the socket ended without one).
pub async fn recv_close(ws: &mut Ws, within: Duration) -> Option<CloseFrame> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("no close in time")
        {
            Some(Ok(Message::Close(f))) => return f,
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return None,
        }
    }
}

pub async fn send_json(ws: &mut Ws, v: &str) {
    ws.send(Message::text(v)).await.unwrap();
}

/// A raw HTTP/1.1 exchange (Connection: close); returns status, head and body.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body);
    raw_exchange(addr, req.as_bytes()).await
}

/// Sends raw bytes and reads the response head and body until the server closes.
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut buf = Vec::new();
    let read = async {
        // A refused upgrade may leave the connection open (keep-alive): stop at the full body.
        let mut chunk = [0u8; 4096];
        loop {
            let n = s.read(&mut chunk).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(end) = find(&buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                if head.starts_with("http/1.1 101") {
                    break;
                }
                if let Some(len) = head.lines().find_map(|l| l.strip_prefix("content-length:")) {
                    let len: usize = len.trim().parse().unwrap();
                    if buf.len() >= end + 4 + len {
                        break;
                    }
                }
            }
        }
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("no HTTP response in time");
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("no status line");
    (status, head.to_string(), body.to_string())
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

pub fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// Tears a test server down at once (two stop requests); shutdown itself is tested in shutdown.rs.
pub async fn stop(s: TestServer) -> Stopped {
    s.trigger.signal();
    s.trigger.signal();
    tokio::time::timeout(WAIT, s.join)
        .await
        .expect("server did not stop")
        .unwrap()
        .unwrap()
}

/// Polls `/health` until `connections` equals `n` (bounded).
pub async fn wait_connections(addr: SocketAddr, n: u64) {
    for _ in 0..200 {
        let (_, _, body) = http(addr, "GET", "/health", &[], "").await;
        if json(&body)["connections"] == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("connections never reached {n}");
}

// ---- child processes (the binary, the examples) ----

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Starts the binary and reads its stderr until the "listening" line; returns the address.
pub async fn spawn(mut cmd: Command) -> (Child, std::net::SocketAddr) {
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = tokio::time::timeout(WAIT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(rest) = line.split("tether listening on ws://").nth(1) {
                let addr = rest.split('/').next().unwrap();
                return addr.parse().unwrap();
            }
        }
        panic!("tether exited before listening");
    })
    .await
    .expect("no listening line in time");
    // Keep draining stderr so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, addr)
}

/// The binary `exe` (`env!("CARGO_BIN_EXE_tether")`, which only tether's own tests have) on a
/// free loopback port with `args`, logging to a piped stderr (for [`spawn`]), killed when dropped.
pub fn tether_cmd(exe: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(exe);
    cmd.args(["--listen", "127.0.0.1:0"])
        .args(args)
        .env_clear()
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    cmd
}

pub fn signal(child: &Child, sig: i32) {
    let pid = child.id().expect("child running") as i32;
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
}

pub async fn exit_code(mut child: Child) -> i32 {
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("did not exit in time")
        .unwrap();
    status.code().expect("exited by signal")
}

/// Path of a cargo example built next to this test binary (`cargo test` builds examples).
pub fn example(name: &str) -> Command {
    let exe = std::env::current_exe().unwrap();
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .unwrap()
        .join("examples");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo test` (it builds the examples) or `cargo build --examples`",
        path.display()
    );
    let mut c = Command::new(path);
    c.env_clear()
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    c
}

// ---- outside programs (nginx, chromedriver, the binary) and scratch space ----

use std::path::{Path, PathBuf};

/// A scratch directory under the system temp dir, unique to this process and call; removed on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let path = std::env::temp_dir().join(format!(
            "tether-test-{tag}-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir { path }
    }

    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.path.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A loopback port that was free a moment ago: bind port 0, read the port, release it.
/// For programs that must be told their port (nginx, chromedriver, a binary restarted in place).
/// Never the same port twice in one test binary: the kernel may hand a released port out again
/// at once, and two programs told the same port would collide.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..100 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
    panic!("no fresh loopback port in 100 tries");
}

/// The path of an outside program: the first hit on `PATH`, else the first existing fallback.
pub fn program(name: &str, fallbacks: &[&str]) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .map(|d| d.join(name))
        .chain(fallbacks.iter().map(PathBuf::from))
        .find(|p| p.is_file())
}

/// A child process that is stopped (signal, bounded wait, SIGKILL if need be) when dropped,
/// so a failing test never leaves it behind.
pub struct Proc {
    pub name: &'static str,
    pub child: std::process::Child,
}

impl Proc {
    pub fn spawn(name: &'static str, cmd: &mut std::process::Command) -> Proc {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc { name, child }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The exit status if the process has ended.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// Sends `sig`, waits up to `within` for the exit (polling), then SIGKILLs; returns the
    /// status and whether `sig` alone was enough.
    pub fn stop(&mut self, sig: i32, within: Duration) -> (std::process::ExitStatus, bool) {
        if let Some(status) = self.exited() {
            return (status, true);
        }
        // SAFETY: signalling our own child, which has not been reaped (try_wait said so).
        unsafe { libc::kill(self.pid(), sig) };
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.exited() {
                return (status, true);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "{} (pid {}) ignored signal {sig}: killing it",
            self.name,
            self.pid()
        );
        let _ = self.child.kill();
        (self.child.wait().unwrap(), false)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.stop(libc::SIGTERM, Duration::from_secs(5));
        }
    }
}

/// Next text frame as JSON on a WebSocket over any stream (TLS, a bound source address, ...).
pub async fn next_json<S>(ws: &mut WebSocketStream<S>) -> Value
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let m = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("no message in time")
            .expect("stream ended")
            .expect("read error");
        match m {
            Message::Text(t) => {
                return serde_json::from_str(t.as_str()).expect("server sent invalid JSON");
            }
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected text, got {other:?}"),
        }
    }
}

/// A WebSocket client written by hand so it can stay completely silent: no Pongs, no close reply.
pub struct RawClient {
    s: TcpStream,
    buf: Vec<u8>,
}

impl RawClient {
    pub async fn connect(addr: std::net::SocketAddr, client_id: &str) -> RawClient {
        let s = TcpStream::connect(addr).await.unwrap();
        RawClient::upgrade(s, addr, client_id).await
    }

    /// Upgrades a connection opened earlier (already accepted by the server).
    pub async fn upgrade(
        mut s: TcpStream,
        addr: std::net::SocketAddr,
        client_id: &str,
    ) -> RawClient {
        let req = format!(
            "GET /ws?client_id={client_id} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut raw = RawClient { s, buf: Vec::new() };
        let head_end = loop {
            if let Some(p) = raw.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p;
            }
            assert!(raw.fill().await > 0, "closed during handshake");
        };
        assert!(
            raw.buf.starts_with(b"HTTP/1.1 101"),
            "upgrade refused: {}",
            String::from_utf8_lossy(&raw.buf)
        );
        raw.buf.drain(..head_end + 4);
        raw
    }

    pub async fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(WAIT, self.s.read(&mut chunk))
            .await
            .expect("read timed out")
            .unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n
    }

    /// Next server frame as (opcode, payload); None at EOF.
    pub async fn frame(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if self.buf.len() >= 2 {
                let (op, len7) = (self.buf[0] & 0x0f, (self.buf[1] & 0x7f) as usize);
                let (hdr, len) = match len7 {
                    126 if self.buf.len() >= 4 => {
                        (4, u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize)
                    }
                    126 => (usize::MAX, 0),
                    127 => panic!("unexpected huge frame"),
                    n => (2, n),
                };
                if hdr != usize::MAX && self.buf.len() >= hdr + len {
                    let payload = self.buf[hdr..hdr + len].to_vec();
                    self.buf.drain(..hdr + len);
                    return Some((op, payload));
                }
            }
            if self.fill().await == 0 {
                return None;
            }
        }
    }

    /// Sends one masked text frame (clients must mask).
    pub async fn send_text(&mut self, text: &str) {
        let mask = [0x12u8, 0x34, 0x56, 0x78];
        let p = text.as_bytes();
        assert!(p.len() < 126);
        let mut f = vec![0x81, 0x80 | p.len() as u8];
        f.extend_from_slice(&mask);
        f.extend(p.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.s.write_all(&f).await.unwrap();
    }
}

// ---- refused upgrades and clients bound to a chosen source address ----

/// A raw WebSocket upgrade of `path` with extra headers; returns the status and the JSON body
/// (`Value::Null` when there is none, as for a 101).
pub async fn upgrade_status(addr: SocketAddr, path: &str, extra: &[(&str, &str)]) -> (u16, Value) {
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    );
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let (status, _, body) = raw_exchange(addr, req.as_bytes()).await;
    let v = if status == 101 || body.is_empty() {
        Value::Null
    } else {
        json(&body)
    };
    (status, v)
}

/// A WebSocket client whose TCP source address is `src` (any 127.0.0.0/8 address is local), so a
/// test can be a peer other than 127.0.0.1.
pub async fn connect_from(
    src: std::net::IpAddr,
    to: SocketAddr,
    path: &str,
    headers: &[(&'static str, &str)],
) -> Ws {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(src, 0)).unwrap();
    let tcp = tokio::time::timeout(WAIT, socket.connect(to))
        .await
        .expect("connect timed out")
        .unwrap();
    let mut req = format!("ws://{to}{path}").into_client_request().unwrap();
    for (k, v) in headers {
        req.headers_mut().insert(*k, v.parse().unwrap());
    }
    let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::client_async(req, tcp))
        .await
        .expect("handshake timed out")
        .unwrap();
    ws
}
