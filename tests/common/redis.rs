//! A real redis-server (the distribution's package) on a free loopback port in a temp dir,
//! with nothing persisted; stopped however the test ends. It can be stopped and started again
//! on the same port, as an outage and its end.

use std::time::{Duration, Instant};

use super::{Proc, TempDir, free_port, program};

/// A running (or stopped) redis-server.
pub struct Redis {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// Its TLS port, when started with [`Redis::start_tls`].
    pub tls_port: Option<u16>,
    dir: TempDir,
    proc: Option<Proc>,
    /// Extra arguments (e.g. `--replicaof`), given again on a restart.
    args: Vec<String>,
}

fn binary() -> std::path::PathBuf {
    program("redis-server", &["/usr/bin/redis-server"]).expect(
        "redis-server not found: run scripts/install-test-deps.sh (Debian package `redis-server`)",
    )
}

impl Redis {
    /// Starts a fresh server; retries with another port if the free one was taken meanwhile.
    pub fn start() -> Redis {
        Redis::start_on(false)
    }

    /// Starts a server that also listens with TLS (`rediss://`), on a certificate for
    /// 127.0.0.1 written to `cert.pem` in its directory ([`Redis::cert_file`]). The plain port
    /// stays for the test's own checks.
    pub fn start_tls() -> Redis {
        Redis::start_on(true)
    }

    /// Starts a fresh server with extra arguments (kept for restarts).
    pub fn start_with(args: &[&str]) -> Redis {
        Redis::start_args(false, args)
    }

    fn start_on(tls: bool) -> Redis {
        Redis::start_args(tls, &[])
    }

    fn start_args(tls: bool, args: &[&str]) -> Redis {
        for _ in 0..5 {
            let mut r = Redis {
                port: free_port(),
                tls_port: tls.then(free_port),
                dir: TempDir::new("redis"),
                proc: None,
                args: args.iter().map(|a| a.to_string()).collect(),
            };
            if tls {
                let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()])
                    .expect("certificate");
                std::fs::write(r.cert_file(), ck.cert.pem()).unwrap();
                std::fs::write(r.dir.path.join("key.pem"), ck.signing_key.serialize_pem()).unwrap();
            }
            if r.launch() {
                return r;
            }
        }
        panic!("redis-server did not come up on any of 5 ports");
    }

    /// The TLS certificate (self-signed, for 127.0.0.1) of a server from [`Redis::start_tls`].
    pub fn cert_file(&self) -> std::path::PathBuf {
        self.dir.path.join("cert.pem")
    }

    /// The `rediss://` URL of a server from [`Redis::start_tls`].
    pub fn tls_url(&self) -> String {
        let port = self.tls_port.expect("started with start_tls");
        format!("rediss://127.0.0.1:{port}/")
    }

    /// The URL nodes are given.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn launch(&mut self) -> bool {
        let mut cmd = std::process::Command::new(binary());
        if let Some(tls) = self.tls_port {
            let (cert, key) = (self.cert_file(), self.dir.path.join("key.pem"));
            cmd.arg("--tls-port")
                .arg(tls.to_string())
                .arg("--tls-cert-file")
                .arg(&cert)
                .arg("--tls-key-file")
                .arg(key)
                .arg("--tls-ca-cert-file")
                .arg(&cert)
                .args(["--tls-auth-clients", "no"]);
        }
        let mut p = Proc::spawn(
            "redis-server",
            cmd.args(["--bind", "127.0.0.1", "--port"])
                .arg(self.port.to_string())
                .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
                .arg("--dir")
                .arg(&self.dir.path)
                .args(&self.args)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null()),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if p.exited().is_some() {
                return false;
            }
            if self.ping() {
                self.proc = Some(p);
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// True when the server answers PING.
    pub fn ping(&self) -> bool {
        // A server with `requirepass` answers too, only not with PONG.
        self.command("PING")
            .is_some_and(|r| r.starts_with("+PONG") || r.starts_with("-NOAUTH"))
    }

    /// Sends one inline command and returns the raw reply (None if unreachable).
    pub fn command(&self, line: &str) -> Option<String> {
        inline(self.port, line)
    }

    /// Sends one command as a RESP array (arguments may hold spaces, newlines, any byte) and
    /// returns the raw reply; it reads until the server pauses, bounded by a 2 s timeout.
    pub fn call(&self, args: &[&[u8]]) -> Option<String> {
        use std::io::{Read, Write};
        let mut req = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            req.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            req.extend_from_slice(a);
            req.extend_from_slice(b"\r\n");
        }
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(&req).ok()?;
        let mut out = Vec::new();
        let mut buf = [0u8; 65536];
        let n = s.read(&mut buf).ok()?;
        out.extend_from_slice(&buf[..n]);
        // A long reply may come in several reads; the rest follows at once on loopback.
        s.set_read_timeout(Some(Duration::from_millis(50))).ok()?;
        for _ in 0..64 {
            match s.read(&mut buf) {
                Ok(n) if n > 0 => out.extend_from_slice(&buf[..n]),
                _ => break,
            }
        }
        Some(String::from_utf8_lossy(&out).into_owned())
    }

    /// Stops the server (an outage); everything it held is gone.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.stop(libc::SIGKILL, Duration::from_secs(5));
        }
    }

    /// Starts the server again on the same port.
    pub fn restart(&mut self) {
        assert!(self.proc.is_none(), "restart of a running redis");
        for _ in 0..50 {
            if self.launch() {
                return;
            }
            // The old socket may linger a moment before the port can be bound again.
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("redis-server did not come back on port {}", self.port);
    }
}

/// Sends one inline command to the server on loopback `port` and returns the raw reply (what
/// one read gets; None if unreachable).
pub fn inline(port: u16, line: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(format!("{line}\r\n").as_bytes()).ok()?;
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// Whatever Redis a test's nodes share: the keys that tell a node where it is.
pub trait Topology {
    /// Configuration keys naming this Redis.
    fn keys(&self) -> Vec<(String, String)>;

    /// The same as command-line flags, for a node run as its own process.
    fn args(&self) -> Vec<String> {
        self.keys()
            .into_iter()
            .flat_map(|(k, v)| [format!("--{}", k.replace('_', "-")), v])
            .collect()
    }
}

impl Topology for Redis {
    fn keys(&self) -> Vec<(String, String)> {
        vec![("redis_url".into(), self.url())]
    }
}

/// A Redis that can go away entirely and come back empty on the same addresses.
pub trait Outage: Topology {
    /// Every server killed (SIGKILL).
    fn down(&mut self);
    /// Every server started again, empty, once it serves.
    fn up(&mut self);
}

impl Outage for Redis {
    fn down(&mut self) {
        self.stop();
    }
    fn up(&mut self) {
        self.restart();
    }
}

/// A node of the cluster on `redis` (node id `id`, `node_ttl` 2 s, a generous
/// `cluster_reply_timeout`), with `extra` keys, once its `/health` says `ok`.
pub async fn node(redis: &impl Topology, id: &str, extra: &[(&str, &str)]) -> super::TestServer {
    let topology = redis.keys();
    let mut keys: Vec<(&str, &str)> = topology
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    keys.extend_from_slice(&[
        ("node_id", id),
        ("node_ttl", "2s"),
        // Generous: three nodes and the test share two cores, and a count or listing is short
        // when a node answers late. The killed-node test shortens it.
        ("cluster_reply_timeout", "3s"),
    ]);
    keys.extend_from_slice(extra);
    let s = super::start(super::config(&keys)).await;
    wait_status(s.addr, "ok").await;
    s
}

/// Waits (bounded, 15 s) until `/health` reports `status`; its answer.
pub async fn wait_status(addr: std::net::SocketAddr, status: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, _, body) = super::http(addr, "GET", "/health", &[], "").await;
        let v = super::json(&body);
        if v["status"] == status {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "/health never said {status}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
