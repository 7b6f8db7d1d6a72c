//! Behind nginx: the shipped deploy/nginx.conf (placeholder addresses rewritten, and for the
//! timeout tests a 2 s `proxy_read_timeout` on /ws) in front of a real tether, all on loopback.
//! Upgrades, pushes and the API go through nginx; the client address is the forwarded one; the
//! reaper's 4001 reaches the client through the proxy; server Pings keep a quiet session alive
//! past `proxy_read_timeout`, which cuts it without them; and nginx holds many sessions.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use futures_util::StreamExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// The shortened `proxy_read_timeout` of the /ws location in the timeout tests.
const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Server Ping period: well under READ_TIMEOUT, so pings keep nginx from cutting.
const INTERVAL_MS: u64 = 500;
/// Eviction after this much silence: under READ_TIMEOUT too (the docs' rule), so a silent
/// client is closed by tether's reaper (4001, with a reason) and never by nginx (no close frame).
const TIMEOUT_MS: u64 = 1500;
const REAP_MS: u64 = 100;
/// Scheduling slack on a shared, noisy machine (several nginx workers and tests at once).
const SLACK: Duration = Duration::from_millis(1000);

/// nginx's own client address; the test clients use other loopback addresses.
const NGINX_IP: &str = "127.0.0.1";
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const DIRECT_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
/// The nodes' API key: behind a proxy, tether answers /api/ only with one.
const API_KEY: &str = "nginx-test-api-key";
const BEARER: (&str, &str) = ("Authorization", "Bearer nginx-test-api-key");

fn live() -> tether::Config {
    config(&[
        ("trusted_proxies", NGINX_IP),
        ("api_key", API_KEY),
        ("heartbeat_interval", &format!("{INTERVAL_MS}ms")),
        ("heartbeat_timeout", &format!("{TIMEOUT_MS}ms")),
        ("reap_interval", &format!("{REAP_MS}ms")),
    ])
}

/// A running nginx; stopped (SIGTERM, bounded wait) when dropped, then its prefix is removed.
struct Nginx {
    proc: Proc,
    addr: SocketAddr,
    prefix: TempDir,
}

impl Nginx {
    /// nginx's error log and stderr, for failure messages.
    fn logs(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.prefix.join(f)).unwrap_or_default();
        ["startup.log", "error.log", "stderr.log"]
            .iter()
            .map(|f| format!("--- {f}\n{}", read(f)))
            .collect()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM is nginx's fast shutdown (SIGQUIT would wait for every open WebSocket).
        let (status, clean) = self.proc.stop(libc::SIGTERM, Duration::from_secs(10));
        if !clean || !status.success() {
            eprintln!("nginx did not stop cleanly ({status}):\n{}", self.logs());
        }
    }
}

fn nginx_binary() -> std::path::PathBuf {
    program("nginx", &["/usr/sbin/nginx"])
        .expect("nginx not found: run scripts/install-test-deps.sh (Debian package `nginx`)")
}

/// The shipped config with its placeholders rewritten; `read_timeout` replaces the /ws
/// location's `proxy_read_timeout 75s;` when given. Without `node2`, its line is deleted, as the
/// template tells a one-node deployment to do.
fn rewrite(
    listen: SocketAddr,
    node1: SocketAddr,
    node2: Option<SocketAddr>,
    read_timeout: Option<Duration>,
) -> String {
    let shipped = include_str!("../deploy/nginx.conf");
    // The placeholders must still be where the test expects them, or the rewrite proves nothing.
    assert!(shipped.contains("\n        listen 127.0.0.1:8088;"));
    assert!(shipped.contains("\n        server 127.0.0.1:8080 "));
    let node2_line = "\n        server 127.0.0.1:8081 max_fails=1 fail_timeout=10s;  # node 2";
    assert!(
        shipped.contains(node2_line),
        "active/active is the template's default"
    );
    let ws_start = shipped.find("location /ws {").expect("no /ws location");
    let ws_end = ws_start + shipped[ws_start..].find("\n        }").unwrap();
    let ws_block = &shipped[ws_start..ws_end];
    assert_eq!(ws_block.matches("proxy_read_timeout 75s;").count(), 1);
    assert_eq!(shipped.matches("proxy_read_timeout 75s;").count(), 1);

    let shipped = match node2 {
        Some(_) => shipped.to_string(),
        None => shipped.replace(node2_line, ""),
    };
    // Markers first, so an address written in never matches a later placeholder.
    let mut conf = shipped
        .replace("127.0.0.1:8088", "@LISTEN@")
        .replace("127.0.0.1:8080", "@NODE1@")
        .replace("127.0.0.1:8081", "@NODE2@")
        .replace("@LISTEN@", &listen.to_string())
        .replace("@NODE1@", &node1.to_string());
    if let Some(node2) = node2 {
        conf = conf.replace("@NODE2@", &node2.to_string());
    }
    if let Some(t) = read_timeout {
        conf = conf.replace(
            "proxy_read_timeout 75s;",
            &format!("proxy_read_timeout {}ms;", t.as_millis()),
        );
    }
    conf
}

/// Starts nginx in front of `upstream` alone and waits (bounded) until it has bound its port
/// (pid file written) and accepts connections.
async fn start_nginx(upstream: SocketAddr, read_timeout: Option<Duration>) -> Nginx {
    start_nginx_over(upstream, None, read_timeout, &[]).await
}

/// [`start_nginx`] with a second node in the round robin (a cluster), and `edits` (from, to)
/// applied to the config text as an operator would edit it.
async fn start_nginx_over(
    upstream: SocketAddr,
    peer: Option<SocketAddr>,
    read_timeout: Option<Duration>,
    edits: &[(&str, &str)],
) -> Nginx {
    // A port picked by bind-and-release can be taken by someone else before nginx binds it:
    // retry a few times with new ports in that case only.
    for attempt in 1..=3 {
        let prefix = TempDir::new("nginx");
        let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let conf = prefix.join("nginx.conf");
        let mut text = rewrite(listen, upstream, peer, read_timeout);
        for (from, to) in edits {
            assert!(text.contains(from), "the template no longer has {from:?}");
            text = text.replace(from, to);
        }
        std::fs::write(&conf, text).unwrap();
        let stderr = std::fs::File::create(prefix.join("stderr.log")).unwrap();
        let proc = Proc::spawn(
            "nginx",
            std::process::Command::new(nginx_binary())
                .arg("-p")
                .arg(&prefix.path)
                .arg("-c")
                .arg(&conf)
                // The log used before the config is read (default: /var/log/nginx/error.log).
                .arg("-e")
                .arg(prefix.join("startup.log"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr),
        );
        let mut nginx = Nginx {
            proc,
            addr: listen,
            prefix,
        };
        let deadline = Instant::now() + WAIT;
        loop {
            if nginx.proc.exited().is_some() {
                let logs = nginx.logs();
                if logs.contains("Address already in use") && attempt < 3 {
                    eprintln!("nginx: port taken, retrying with another");
                    break;
                }
                panic!("nginx exited before listening:\n{logs}");
            }
            // nginx writes its pid file only after binding every listener, so a connection
            // accepted before that could be someone else's socket on a port that was taken.
            let pid_file = std::fs::read_to_string(nginx.prefix.join("nginx.pid"));
            if pid_file.is_ok_and(|p| p.trim() == nginx.proc.pid().to_string())
                && TcpStream::connect(listen).await.is_ok()
            {
                return nginx;
            }
            assert!(
                Instant::now() < deadline,
                "nginx not listening within {WAIT:?}:\n{}",
                nginx.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    unreachable!()
}

async fn connect_welcomed(to: SocketAddr, client_id: &str) -> (Ws, serde_json::Value) {
    let mut ws = connect_from(
        CLIENT_IP.into(),
        to,
        &format!("/ws?client_id={client_id}"),
        &[],
    )
    .await;
    let welcome = recv_json(&mut ws).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    (ws, welcome)
}

async fn push(via: SocketAddr, client_id: &str, text: &str) -> serde_json::Value {
    let body =
        serde_json::json!({"client_id": client_id, "type": "notify", "data": {"text": text}});
    let (status, head, body) =
        http(via, "POST", "/api/v1/push", &[BEARER], &body.to_string()).await;
    assert_eq!(status, 200, "{head}\n{body}");
    json(&body)
}

/// The `remote_addr` of `client_id`'s only session, as an IP address.
async fn remote_ip(via: SocketAddr, client_id: &str) -> IpAddr {
    let path = format!("/api/v1/sessions?client_id={client_id}");
    let (status, _, body) = http(via, "GET", &path, &[BEARER], "").await;
    assert_eq!(status, 200, "{body}");
    let list = json(&body);
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    let addr = list[0]["remote_addr"].as_str().unwrap();
    addr.parse::<IpAddr>()
        .or_else(|_| addr.parse::<SocketAddr>().map(|a| a.ip()))
        .unwrap_or_else(|_| panic!("remote_addr is not an address: {addr}"))
}

#[tokio::test]
async fn welcome_push_and_forwarded_client_address_through_nginx() {
    let s = start(live()).await;
    let nginx = start_nginx(s.addr, Some(READ_TIMEOUT)).await;

    // /health through nginx answers with tether's body: the upstream is the tether under test.
    let (status, _, body) = http(nginx.addr, "GET", "/health", &[], "").await;
    assert_eq!(status, 200, "{body}\n{}", nginx.logs());
    assert_eq!(json(&body)["status"], "ok");

    // The client connects from 127.0.0.2 and tries to pass itself off as 203.0.113.9.
    let mut ws = connect_from(
        CLIENT_IP.into(),
        nginx.addr,
        "/ws?client_id=fwd",
        &[("x-forwarded-for", "203.0.113.9")],
    )
    .await;
    let welcome = recv_json(&mut ws).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    assert_eq!(welcome["data"]["client_id"], "fwd");
    assert_eq!(welcome["data"]["heartbeat_interval_ms"], INTERVAL_MS);
    assert_eq!(welcome["data"]["heartbeat_timeout_ms"], TIMEOUT_MS);

    // A push through nginx's /api/ location reaches the session held through its /ws location.
    assert_eq!(push(nginx.addr, "fwd", "via nginx").await["delivered"], 1);
    let got = recv_json(&mut ws).await;
    assert_eq!(got["type"], "notify", "{got}");
    assert_eq!(got["data"], serde_json::json!({"text": "via nginx"}));

    // tether saw nginx (127.0.0.1, trusted) as the TCP peer and took the address nginx forwarded:
    // the real source, not nginx's and not the forged one.
    assert_eq!(remote_ip(nginx.addr, "fwd").await, IpAddr::V4(CLIENT_IP));

    // The same forged header sent straight to tether, from an untrusted peer, is ignored.
    let mut direct = connect_from(
        DIRECT_IP.into(),
        s.addr,
        "/ws?client_id=direct",
        &[("x-forwarded-for", "203.0.113.9")],
    )
    .await;
    assert_eq!(recv_json(&mut direct).await["type"], "welcome");
    assert_eq!(remote_ip(s.addr, "direct").await, IpAddr::V4(DIRECT_IP));

    drop(nginx);
    stop(s).await;
}

#[tokio::test]
async fn silent_client_through_nginx_is_evicted_with_4001() {
    let s = start(live()).await;
    let nginx = start_nginx(s.addr, Some(READ_TIMEOUT)).await;

    // Before the handshake: the server's silence clock starts after it.
    let connected = Instant::now();
    let mut raw = RawClient::connect(nginx.addr, "ghost").await;
    let (op, welcome) = raw.frame().await.expect("no welcome");
    assert_eq!(op, 0x1);
    assert!(String::from_utf8_lossy(&welcome).contains("\"welcome\""));
    let mut pings = 0;
    let close = loop {
        match raw.frame().await {
            Some((0x8, payload)) => break payload,
            Some((0x9, _)) => pings += 1,
            Some(_) => {}
            None => panic!(
                "connection ended without a close frame after {:?}:\n{}",
                connected.elapsed(),
                nginx.logs()
            ),
        }
    };
    let after = connected.elapsed();
    eprintln!("nginx: silent client closed 4001 after {after:?} ({pings} pings)");
    assert_eq!(u16::from_be_bytes([close[0], close[1]]), 4001, "{close:?}");
    assert_eq!(&close[2..], b"heartbeat timeout");
    assert!(
        pings >= 1,
        "the server's pings reached the client through nginx"
    );
    assert!(
        after >= Duration::from_millis(TIMEOUT_MS),
        "evicted early: {after:?}"
    );
    assert!(
        after <= Duration::from_millis(TIMEOUT_MS + REAP_MS) + SLACK,
        "evicted late: {after:?}"
    );
    // We never answer the close: tether drops its side and nginx then drops ours (bounded).
    let eof = tokio::time::timeout(Duration::from_secs(5), async {
        while raw.frame().await.is_some() {}
    });
    assert!(eof.await.is_ok(), "connection through nginx left open");
    wait_connections(s.addr, 0).await;

    drop(nginx);
    stop(s).await;
}

#[tokio::test]
async fn ping_answering_client_outlives_proxy_read_timeout() {
    let s = start(live()).await;
    let nginx = start_nginx(s.addr, Some(READ_TIMEOUT)).await;

    let (mut ws, welcome) = connect_welcomed(nginx.addr, "tab").await;
    // Like a browser tab nobody touches: never sends a frame of its own, only the automatic
    // Pongs tungstenite writes while we read. Hold for 3 × proxy_read_timeout.
    let hold = READ_TIMEOUT * 3;
    let deadline = tokio::time::Instant::now() + hold;
    let mut pings = 0;
    while let Ok(item) = tokio::time::timeout_at(deadline, ws.next()).await {
        match item {
            Some(Ok(Message::Ping(_))) => pings += 1,
            other => panic!(
                "unexpected {other:?} while idle, after {pings} pings:\n{}",
                nginx.logs()
            ),
        }
    }
    let expected = hold.as_millis() as u64 / INTERVAL_MS;
    eprintln!("nginx: ping-answering client open for {hold:?} ({pings} pings)");
    assert!(
        pings >= expected / 2,
        "only {pings} pings in {hold:?} (about {expected} expected)"
    );
    // Still the same session, and pushes still arrive.
    assert_eq!(push(nginx.addr, "tab", "still here").await["delivered"], 1);
    let got = recv_json(&mut ws).await;
    assert_eq!(got["data"]["text"], "still here", "{got}");
    let (_, _, body) = http(
        nginx.addr,
        "GET",
        "/api/v1/sessions?client_id=tab",
        &[BEARER],
        "",
    )
    .await;
    assert_eq!(json(&body)[0]["session_id"], welcome["data"]["session_id"]);

    drop(nginx);
    stop(s).await;
}

/// The control for the test above: with the default 30 s ping period nothing crosses the
/// proxy for longer than the shortened proxy_read_timeout, and nginx cuts the connection
/// (no close frame). This is the misconfiguration docs/nginx.md warns about, and it shows
/// that the rewritten timeout is in effect.
#[tokio::test]
async fn without_server_pings_nginx_cuts_at_proxy_read_timeout() {
    let s = start(config(&[("trusted_proxies", NGINX_IP)])).await;
    let nginx = start_nginx(s.addr, Some(READ_TIMEOUT)).await;

    let (mut ws, _) = connect_welcomed(nginx.addr, "quiet").await;
    let since = Instant::now();
    let end = tokio::time::timeout(READ_TIMEOUT * 4, ws.next())
        .await
        .expect("nginx never cut the idle connection");
    let after = since.elapsed();
    eprintln!("nginx: idle connection without pings cut after {after:?}");
    assert!(
        !matches!(end, Some(Ok(Message::Close(_)))),
        "expected a cut without a close frame, got {end:?}"
    );
    assert!(
        matches!(end, None | Some(Err(_))),
        "expected the connection to end, got {end:?}"
    );
    assert!(
        after >= READ_TIMEOUT - Duration::from_millis(100),
        "cut before proxy_read_timeout: {after:?}"
    );
    assert!(
        after <= READ_TIMEOUT + SLACK,
        "cut late: {after:?} (proxy_read_timeout {READ_TIMEOUT:?})"
    );
    // tether notices that nginx closed the upstream side.
    wait_connections(s.addr, 0).await;

    drop(nginx);
    stop(s).await;
}

const HELD: usize = 200;

/// The shipped config unchanged but for the addresses (75 s proxy_read_timeout), default
/// heartbeats: nginx holds HELD sessions (2 × HELD sockets) and a broadcast reaches them all.
#[tokio::test]
async fn nginx_holds_many_sessions() {
    let s = start(config(&[
        ("trusted_proxies", NGINX_IP),
        ("api_key", API_KEY),
    ]))
    .await;
    let nginx = start_nginx(s.addr, None).await;

    let started = Instant::now();
    let mut tasks = Vec::with_capacity(HELD);
    for i in 0..HELD {
        let to = nginx.addr;
        tasks.push(tokio::spawn(async move {
            connect_welcomed(to, &format!("many-{i}")).await.0
        }));
    }
    let mut clients = Vec::with_capacity(HELD);
    for t in tasks {
        clients.push(t.await.expect("a client failed to connect through nginx"));
    }
    let opened_in = started.elapsed();

    // /health through nginx, and tether's own count, both say HELD.
    let (_, _, body) = http(nginx.addr, "GET", "/health", &[], "").await;
    let connections = json(&body)["connections"].as_u64().unwrap();
    assert_eq!(connections, HELD as u64, "{body}");
    assert_eq!(s.handle.connections(), HELD);

    let (status, _, body) = http(
        nginx.addr,
        "POST",
        "/api/v1/broadcast",
        &[BEARER],
        r#"{"type":"notify","data":{"all":true}}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["delivered"], HELD as u64);
    for ws in &mut clients {
        let got = recv_json(ws).await;
        assert_eq!(got["data"]["all"], true, "{got}");
    }
    eprintln!(
        "nginx: held {connections} WebSocket sessions through nginx ({} sockets in nginx), \
         opened in {opened_in:?}; a broadcast reached all {HELD}",
        connections * 2
    );

    drop(clients);
    wait_connections(s.addr, 0).await;
    drop(nginx);
    stop(s).await;
}

/// Two clustered nodes behind the shipped config in round robin, with no stickiness: clients
/// land on both nodes, API calls too, and a push through nginx reaches every client wherever
/// it landed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_over_a_cluster_reaches_every_client() {
    let redis = common::redis::Redis::start();
    let url = redis.url();
    let node = |id: &'static str| {
        config(&[
            ("trusted_proxies", NGINX_IP),
            ("redis_url", url.as_str()),
            ("node_id", id),
            ("api_key", API_KEY),
        ])
    };
    let (one, two) = (start(node("one")).await, start(node("two")).await);
    let nginx = start_nginx_over(one.addr, Some(two.addr), None, &[]).await;
    const CLIENTS: usize = 12;
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        clients.push(connect_welcomed(nginx.addr, &format!("rr-{i}")).await.0);
    }
    let (h1, h2) = (
        json(&http(one.addr, "GET", "/health", &[], "").await.2),
        json(&http(two.addr, "GET", "/health", &[], "").await.2),
    );
    let (n1, n2) = (
        h1["connections"].as_u64().unwrap(),
        h2["connections"].as_u64().unwrap(),
    );
    assert_eq!(n1 + n2, CLIENTS as u64);
    assert!(
        n1 > 0 && n2 > 0,
        "round robin put {n1} and {n2} sessions on the nodes"
    );
    for (i, ws) in clients.iter_mut().enumerate() {
        let id = format!("rr-{i}");
        let v = push(nginx.addr, &id, &id).await;
        assert_eq!(v["delivered"], 1, "{id}: {v}");
        let m = recv_json(ws).await;
        assert_eq!(m["data"]["text"], id.as_str(), "{m}");
    }
    drop(nginx);
}

/// One HTTP/1.1 request from the loopback address `src` (a stand-in for "another network");
/// the status and body once the server closes.
async fn http_from(src: Ipv4Addr, to: SocketAddr, method: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((src, 0))).unwrap();
    let mut tcp = tokio::time::timeout(WAIT, socket.connect(to))
        .await
        .expect("connect timed out")
        .unwrap();
    let (k, v) = BEARER;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: tether\r\n{k}: {v}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{{}}"
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut buf))
        .await
        .expect("no answer in time")
        .unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    (status, body)
}

/// The operator's admin network is the host itself (`127.0.0.1/32`); clients come from
/// 127.0.0.2, which stands for the internet. Even with the right API key they get 403 on /api/,
/// /metrics and /dashboard, while /ws, /health and the demo page serve them.
#[tokio::test]
async fn the_api_and_operator_pages_are_closed_to_unlisted_networks() {
    let s = start(live()).await;
    let nginx = start_nginx_over(
        s.addr,
        None,
        None,
        &[("        127.0.0.0/8  1;", "        127.0.0.1/32 1;")],
    )
    .await;
    for (method, path) in [
        ("POST", "/api/v1/broadcast"),
        ("GET", "/api/v1/sessions"),
        ("GET", "/metrics"),
        ("GET", "/dashboard"),
        ("GET", "/dashboard/data"),
    ] {
        let (status, body) = http_from(CLIENT_IP, nginx.addr, method, path).await;
        assert_eq!(status, 403, "{method} {path} from outside: {body}");
        // From the admin network the same request passes nginx (and the key passes tether).
        let (status, body) = http_from(Ipv4Addr::LOCALHOST, nginx.addr, method, path).await;
        assert_ne!(
            status, 403,
            "{method} {path} from the admin network: {body}"
        );
        assert!(status < 500, "{method} {path}: {status} {body}");
    }
    let (status, body) = http_from(CLIENT_IP, nginx.addr, "GET", "/health").await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = http_from(CLIENT_IP, nginx.addr, "GET", "/").await;
    assert_eq!(status, 200, "the demo page");
    let (_ws, welcome) = connect_welcomed(nginx.addr, "outsider").await;
    assert_eq!(welcome["data"]["client_id"], "outsider");
    drop(nginx);
    stop(s).await;
}

/// Deployed as shipped but without an API key on tether: even from the admin network, the API
/// through nginx answers 401 saying to set the key, trusted proxy listed or not.
#[tokio::test]
async fn without_an_api_key_the_api_is_closed_through_nginx() {
    for trusted in [NGINX_IP, ""] {
        let s = start(config(&[("trusted_proxies", trusted)])).await;
        let nginx = start_nginx(s.addr, None).await;
        let (_ws, _) = connect_welcomed(nginx.addr, "victim").await;
        let body = r#"{"client_id":"victim","type":"notify","data":"forged"}"#;
        let (status, _, b) = http(nginx.addr, "POST", "/api/v1/push", &[], body).await;
        assert_eq!(status, 401, "trusted_proxies = {trusted:?}: {b}");
        assert_eq!(json(&b)["error"]["code"], "unauthorized");
        assert!(b.contains("set api_key"), "{b}");
        let (status, _, b) = http(nginx.addr, "GET", "/api/v1/sessions", &[], "").await;
        assert_eq!(status, 401, "the session list with IPs stays closed: {b}");
        drop(nginx);
        stop(s).await;
    }
}

/// Browsers send their token in the query (`/ws?token=<JWT>`): the shipped access log keeps
/// the path and drops the query string.
#[tokio::test]
async fn tokens_in_the_query_never_reach_the_access_log() {
    let s = start(live()).await;
    let nginx = start_nginx(s.addr, None).await;
    const SECRET: &str = "eyJhbGciOiJIUzI1NiJ9.c2VjcmV0.c2lnbmF0dXJl";
    let mut ws = connect_from(
        CLIENT_IP.into(),
        nginx.addr,
        &format!("/ws?client_id=logged&token={SECRET}"),
        &[],
    )
    .await;
    assert_eq!(recv_json(&mut ws).await["type"], "welcome");
    drop(ws);
    // nginx writes a WebSocket's log line when the connection ends: wait for it (bounded).
    let log = nginx.prefix.join("access.log");
    let deadline = Instant::now() + WAIT;
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("GET /ws ") {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "no /ws line in the access log: {text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(!text.contains(SECRET), "the token was logged: {text}");
    assert!(
        !text.contains("client_id=logged"),
        "the query was logged: {text}"
    );
    drop(nginx);
    stop(s).await;
}
