//! TLS without a proxy: a self-signed certificate made in the test (rcgen), tether serving
//! `wss://` and `https://` with it, a plain `ws://` attempt on the TLS port failing cleanly, and
//! the binary refusing to start (exit 2, the setting named) on missing or bad PEM files.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_tungstenite::WebSocketStream;

type Wss = WebSocketStream<TlsStream<TcpStream>>;

/// A self-signed certificate for `localhost` and its key, written as PEM files.
struct Pems {
    dir: TempDir,
    der: CertificateDer<'static>,
}

impl Pems {
    fn new() -> Pems {
        let dir = TempDir::new("tls");
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        std::fs::write(dir.join("cert.pem"), ck.cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), ck.signing_key.serialize_pem()).unwrap();
        Pems {
            der: ck.cert.der().clone(),
            dir,
        }
    }
    fn cert(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }
    fn key(&self) -> PathBuf {
        self.dir.join("key.pem")
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A client that trusts exactly this certificate, with the ring provider.
fn connector(der: &CertificateDer<'static>) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    roots.add(der.clone()).unwrap();
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut cfg = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsConnector::from(Arc::new(cfg))
}

async fn tls_connect(addr: std::net::SocketAddr, tls: &TlsConnector) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    tokio::time::timeout(WAIT, tls.connect(name, tcp))
        .await
        .expect("TLS handshake timed out")
        .expect("TLS handshake failed")
}

/// `wss://` connect as `client_id`; returns the socket and the welcome.
async fn wss(
    addr: std::net::SocketAddr,
    tls: &TlsConnector,
    client_id: &str,
) -> (Wss, serde_json::Value) {
    let stream = tls_connect(addr, tls).await;
    let url = format!("wss://localhost/ws?client_id={client_id}");
    let (mut ws, resp) = tokio::time::timeout(WAIT, tokio_tungstenite::client_async(url, stream))
        .await
        .expect("WebSocket handshake timed out")
        .expect("WebSocket handshake failed");
    assert_eq!(resp.status(), 101);
    let welcome = next_json(&mut ws).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    assert_eq!(welcome["data"]["client_id"], client_id);
    (ws, welcome)
}

async fn push_arrives(s: &TestServer, ws: &mut Wss, client_id: &str, n: u32) {
    let data = format!(r#"{{"n":{n}}}"#);
    assert_eq!(
        s.handle
            .push(client_id, "notify", Some(&data))
            .await
            .unwrap()
            .map(|sent| sent.delivered),
        Some(1)
    );
    let got = next_json(ws).await;
    assert_eq!(got["type"], "notify", "{got}");
    assert_eq!(got["data"]["n"], n);
}

/// permessage-deflate works on wss:// as on ws://: compressed both ways, the bomb gets 1009.
#[tokio::test]
async fn wss_negotiates_permessage_deflate() {
    use common::deflate::{DeflateClient, deflate, frame, request};
    let pems = Pems::new();
    let s = start(config(&[
        ("tls_cert", path_str(&pems.cert())),
        ("tls_key", path_str(&pems.key())),
        ("compression", "true"),
    ]))
    .await;
    let tls = connector(&pems.der);
    let offer = Some("permessage-deflate; client_max_window_bits");
    let req = request(s.addr, "/ws?client_id=zipped", offer);
    let mut c = DeflateClient::upgrade(tls_connect(s.addr, &tls).await, &req).await;
    assert!(
        c.extensions
            .as_deref()
            .is_some_and(|e| e.starts_with("permessage-deflate"))
    );
    assert_eq!(json(&c.next_data().await.text())["type"], "welcome");
    let big = format!("[{}]", vec![r#"{"k":"v","n":12345}"#; 100].join(","));
    assert_eq!(
        s.handle
            .push("zipped", "big", Some(&big))
            .await
            .unwrap()
            .map(|sent| sent.delivered),
        Some(1)
    );
    let m = c.next_data().await;
    assert!(m.compressed && m.wire_len < m.payload.len() / 4);
    assert_eq!(json(&m.text())["data"], json(&big));
    let pad = "p".repeat(1500);
    c.send_text(&format!(r#"{{"type":"heartbeat","id":"{pad}"}}"#), true, 3)
        .await;
    assert_eq!(json(&c.next_data().await.text())["type"], "heartbeat_ack");
    c.send_raw(&frame(true, true, 1, &deflate(&vec![b'a'; 1 << 20])))
        .await;
    assert_eq!(c.close_code().await, Some(1009));
    stop(s).await;
}

#[tokio::test]
async fn wss_serves_and_plain_ws_on_the_tls_port_fails_cleanly() {
    let pems = Pems::new();
    let s = start(config(&[
        ("tls_cert", path_str(&pems.cert())),
        ("tls_key", path_str(&pems.key())),
    ]))
    .await;
    let tls = connector(&pems.der);

    let (mut first, _) = wss(s.addr, &tls, "secure").await;
    push_arrives(&s, &mut first, "secure", 1).await;

    // The HTTP side of the same listener is https://.
    let mut stream = tls_connect(s.addr, &tls).await;
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    // The server may close without close_notify; what was read before that is the answer.
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut buf))
        .await
        .expect("no HTTPS answer in time");
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains(r#""connections":1"#), "{text}");

    // A plain ws:// handshake on the TLS port: an error, promptly, and nothing else breaks.
    let started = Instant::now();
    let tcp = TcpStream::connect(s.addr).await.unwrap();
    let plain = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_tungstenite::client_async(
            format!("ws://{}/ws?client_id=plain", s.addr).as_str(),
            tcp,
        ),
    )
    .await
    .expect("plain ws:// on the TLS port hung");
    let Err(err) = plain else {
        panic!("plain ws:// was accepted on the TLS port");
    };
    eprintln!(
        "tls: plain ws:// on the TLS port failed after {:?}: {err}",
        started.elapsed()
    );
    // Raw plaintext HTTP gets no HTTP answer either: at most a TLS alert, then the close.
    let mut raw = TcpStream::connect(s.addr).await.unwrap();
    raw.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(WAIT, raw.read_to_end(&mut reply))
        .await
        .expect("plain HTTP on the TLS port left open");
    assert!(
        !reply.starts_with(b"HTTP/"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    if let Some(&first_byte) = reply.first() {
        assert_eq!(first_byte, 0x15, "expected a TLS alert record: {reply:?}");
    }

    // The existing session is unaffected and a new wss:// client is served.
    push_arrives(&s, &mut first, "secure", 2).await;
    let (mut second, _) = wss(s.addr, &tls, "secure2").await;
    push_arrives(&s, &mut second, "secure2", 3).await;
    assert_eq!(s.handle.connections(), 2);

    stop(s).await;
}

/// Runs the binary with `args` (bounded); returns the exit code and stderr.
async fn run_binary(args: &[&str]) -> (i32, String) {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(args)
        .env_clear()
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("tether neither served nor exited in time")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    (out.status.code().expect("killed by a signal"), stderr)
}

#[tokio::test]
async fn missing_cert_file_stops_the_binary_with_exit_2() {
    let (code, stderr) = run_binary(&[
        "--tls-cert",
        "/nonexistent",
        "--tls-key",
        "/nonexistent",
        "--listen",
        "127.0.0.1:0",
    ])
    .await;
    eprintln!("tls: missing cert:\n{stderr}");
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("tls_cert"), "{stderr}");
    assert!(stderr.contains("/nonexistent"), "{stderr}");
    assert!(!stderr.contains("listening on"), "{stderr}");
}

#[tokio::test]
async fn bad_key_files_stop_the_binary_naming_tls_key() {
    let pems = Pems::new();
    let garbage = pems.dir.join("garbage.pem");
    std::fs::write(&garbage, "this is not a PEM private key\n").unwrap();
    // A well-formed key that belongs to another certificate.
    let other = pems.dir.join("other-key.pem");
    let other_ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(&other, other_ck.signing_key.serialize_pem()).unwrap();

    for key in [&garbage, &other] {
        let (code, stderr) = run_binary(&[
            "--tls-cert",
            path_str(&pems.cert()),
            "--tls-key",
            path_str(key),
            "--listen",
            "127.0.0.1:0",
        ])
        .await;
        eprintln!("tls: key {}:\n{stderr}", key.display());
        assert_eq!(code, 2, "{stderr}");
        assert!(stderr.contains("tls_key"), "{stderr}");
        assert!(stderr.contains(path_str(key)), "{stderr}");
        assert!(!stderr.contains("listening on"), "{stderr}");
    }
}

#[tokio::test]
async fn garbage_cert_file_stops_the_binary_naming_tls_cert() {
    let pems = Pems::new();
    let garbage = pems.dir.join("garbage-cert.pem");
    std::fs::write(&garbage, "no certificate in here\n").unwrap();
    let (code, stderr) = run_binary(&[
        "--tls-cert",
        path_str(&garbage),
        "--tls-key",
        path_str(&pems.key()),
        "--listen",
        "127.0.0.1:0",
    ])
    .await;
    eprintln!("tls: garbage cert:\n{stderr}");
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("tls_cert"), "{stderr}");
    assert!(stderr.contains(path_str(&garbage)), "{stderr}");
}
