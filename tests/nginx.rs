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

fn live() -> tether::Config {
    config(&[
        ("trusted_proxies", NGINX_IP),
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
/// location's `proxy_read_timeout 75s;` when given.
fn rewrite(
    listen: SocketAddr,
    node1: SocketAddr,
    node2: SocketAddr,
    read_timeout: Option<Duration>,
) -> String {
    let shipped = include_str!("../deploy/nginx.conf");
    // The placeholders must still be where the test expects them, or the rewrite proves nothing.
    assert!(shipped.contains("\n        listen 127.0.0.1:8088;"));
    assert!(shipped.contains("\n        server 127.0.0.1:8080 "));
    assert!(shipped.contains("\n        server 127.0.0.1:8081 backup;"));
    let ws_start = shipped.find("location /ws {").expect("no /ws location");
    let ws_end = ws_start + shipped[ws_start..].find("\n        }").unwrap();
    let ws_block = &shipped[ws_start..ws_end];
    assert_eq!(ws_block.matches("proxy_read_timeout 75s;").count(), 1);
    assert_eq!(shipped.matches("proxy_read_timeout 75s;").count(), 1);

    // Markers first, so an address written in never matches a later placeholder.
    let mut conf = shipped
        .replace("127.0.0.1:8088", "@LISTEN@")
        .replace("127.0.0.1:8080", "@NODE1@")
        .replace("127.0.0.1:8081", "@NODE2@")
        .replace("@LISTEN@", &listen.to_string())
        .replace("@NODE1@", &node1.to_string())
        .replace("@NODE2@", &node2.to_string());
    if let Some(t) = read_timeout {
        conf = conf.replace(
            "proxy_read_timeout 75s;",
            &format!("proxy_read_timeout {}ms;", t.as_millis()),
        );
    }
    conf
}

/// Starts nginx in front of `upstream` and waits (bounded) until it has bound its port (pid
/// file written) and accepts connections.
/// The backup node is a port nothing listens on, so a request that nginx did not send to the
/// tether under test fails visibly (502) instead of being served by something else.
async fn start_nginx(upstream: SocketAddr, read_timeout: Option<Duration>) -> Nginx {
    start_nginx_over(upstream, None, read_timeout).await
}

/// [`start_nginx`] with a second node: given, it is a peer in the round robin (a cluster),
/// not a backup.
async fn start_nginx_over(
    upstream: SocketAddr,
    peer: Option<SocketAddr>,
    read_timeout: Option<Duration>,
) -> Nginx {
    // A port picked by bind-and-release can be taken by someone else before nginx binds it:
    // retry a few times with new ports in that case only.
    for attempt in 1..=3 {
        let prefix = TempDir::new("nginx");
        let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let backup = peer.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], free_port())));
        let conf = prefix.join("nginx.conf");
        let mut text = rewrite(listen, upstream, backup, read_timeout);
        if peer.is_some() {
            // What docs/cluster.md tells operators: clustered nodes are all primaries.
            text = text.replace(
                &format!("server {backup} backup;"),
                &format!("server {backup};"),
            );
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
    let (status, head, body) = http(via, "POST", "/api/v1/push", &[], &body.to_string()).await;
    assert_eq!(status, 200, "{head}\n{body}");
    json(&body)
}

/// The `remote_addr` of `client_id`'s only session, as an IP address.
async fn remote_ip(via: SocketAddr, client_id: &str) -> IpAddr {
    let path = format!("/api/v1/sessions?client_id={client_id}");
    let (status, _, body) = http(via, "GET", &path, &[], "").await;
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
    let (_, _, body) = http(nginx.addr, "GET", "/api/v1/sessions?client_id=tab", &[], "").await;
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
    let s = start(config(&[("trusted_proxies", NGINX_IP)])).await;
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
        &[],
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
        ])
    };
    let (one, two) = (start(node("one")).await, start(node("two")).await);
    let nginx = start_nginx_over(one.addr, Some(two.addr), None).await;
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
