//! The demo page in a real browser: headless Chromium driven through chromedriver's W3C
//! WebDriver HTTP API (plain HTTP/1.1 + JSON, no WebDriver crate). The page served by the
//! binary at `/` connects with `/tether.js`, shows a push, goes to `reconnecting` when the
//! server stops, and comes back by itself when the server is started again on the same port.
//! With history on, a page whose connection is cut (a loopback proxy in between; the server
//! keeps running) gets what was pushed meanwhile on its own resume (`since`), once each.
//!
//! Screenshots: `<target dir>/test-artifacts/browser-ok.png` on success,
//! `browser-failure.png` (taken before the panic propagates) on failure.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{Proc, TempDir, free_port, program};
use serde_json::{Value, json};

/// The whole test, from the first process to the last assertion.
const BUDGET: Duration = Duration::from_secs(60);
/// The page's client backs off 1 s, 1.3 s, 1.7 s, ... (with jitter) while the server is down.
const RECONNECT_WITHIN: Duration = Duration::from_secs(20);

/// A deadline shared by every wait of the test.
#[derive(Clone, Copy)]
struct Budget(Instant);

impl Budget {
    /// How long a step may take: `step`, cut to what is left of the whole budget.
    fn limit(&self, step: Duration, what: &str) -> Duration {
        let left = self.0.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "test budget of {BUDGET:?} used up before: {what}"
        );
        step.min(left)
    }
}

// ---- a minimal HTTP/1.1 client (chromedriver and tether's API) ----

/// One request with `Connection: close`; reads to the end of the body (Content-Length) or EOF.
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
    within: Duration,
) -> Result<(u16, String), String> {
    let deadline = Instant::now() + within;
    let mut s = TcpStream::connect_timeout(&addr, within).map_err(|e| format!("connect: {e}"))?;
    s.set_write_timeout(Some(within)).unwrap();
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if method != "GET" {
        req.push_str(&format!(
            "Content-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(&body);
    s.write_all(req.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!(
                "{method} {path}: no complete answer within {within:?}"
            ));
        }
        s.set_read_timeout(Some(left)).unwrap();
        let n = s
            .read(&mut chunk)
            .map_err(|e| format!("{method} {path}: read: {e}"))?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if len.is_some_and(|len| buf.len() >= end + 4 + len) {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{method} {path}: no HTTP head in {text:?}"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{method} {path}: bad status line in {head:?}"))?;
    Ok((status, body.to_string()))
}

// ---- the server, as a child process of the real binary ----

struct Tether {
    proc: Proc,
    log: PathBuf,
}

/// Starts the binary on `addr` and waits (bounded) until `/health` answers 200.
fn start_tether(addr: SocketAddr, dir: &TempDir, n: u32, extra: &[&str], budget: Budget) -> Tether {
    let log = dir.join(format!("tether-{n}.log"));
    let proc = Proc::spawn(
        "tether",
        Command::new(env!("CARGO_BIN_EXE_tether"))
            .args(["--listen", &addr.to_string(), "--shutdown-timeout", "5s"])
            .args(extra)
            .env_clear()
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap()),
    );
    let mut t = Tether { proc, log };
    let deadline = Instant::now() + budget.limit(Duration::from_secs(10), "tether start");
    loop {
        if let Some(status) = t.proc.exited() {
            panic!("tether exited ({status}) before serving:\n{}", t.logs());
        }
        if let Ok((200, _)) = request(addr, "GET", "/health", None, Duration::from_secs(2)) {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "tether not serving on {addr}:\n{}",
            t.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Tether {
    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// `POST /api/v1/push` of a `notify` `{text}`; returns the status and the JSON answer.
fn push_answer(addr: SocketAddr, client_id: &str, text: &str) -> (u16, Value) {
    let body = json!({"client_id": client_id, "type": "notify", "data": {"text": text}});
    let (status, answer) = request(
        addr,
        "POST",
        "/api/v1/push",
        Some(&body),
        Duration::from_secs(5),
    )
    .unwrap();
    let v = serde_json::from_str::<Value>(&answer)
        .unwrap_or_else(|e| panic!("push: not JSON ({e}): {answer}"));
    (status, v)
}

/// A push that must reach exactly one live session.
fn push(addr: SocketAddr, client_id: &str, text: &str) -> Value {
    let (status, answer) = push_answer(addr, client_id, text);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["delivered"], 1, "{answer}");
    answer
}

/// Whether tether counts a session for `client_id` (`GET /api/v1/presence/{id}`).
fn online(addr: SocketAddr, client_id: &str) -> bool {
    let path = format!("/api/v1/presence/{client_id}");
    let (status, answer) = request(addr, "GET", &path, None, Duration::from_secs(5)).unwrap();
    assert_eq!(status, 200, "{answer}");
    serde_json::from_str::<Value>(&answer).unwrap()["online"] == true
}

// ---- a loopback TCP proxy whose connections the test can cut ----

/// Copies bytes both ways between the browser and tether, one pair of threads per connection.
/// `cut` ends every connection (the page sees its socket drop, 1006; tether sees EOF) and
/// refuses new ones until `unblock`: the network goes away while the server keeps running.
struct Proxy {
    addr: SocketAddr,
    shared: Arc<ProxyShared>,
    accept: Option<JoinHandle<()>>,
}

struct ProxyShared {
    /// `blocked` and the registration of a new connection change under one lock, so no
    /// connection accepted around a `cut` survives it.
    state: Mutex<ProxyState>,
    stop: AtomicBool,
    /// Connections closed at once because the proxy was blocked (the page's retries).
    refused: AtomicUsize,
}

#[derive(Default)]
struct ProxyState {
    blocked: bool,
    /// Both ends of every connection, for `cut`.
    conns: Vec<TcpStream>,
    pumps: Vec<JoinHandle<()>>,
}

impl Proxy {
    fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(ProxyShared {
            state: Mutex::new(ProxyState::default()),
            stop: AtomicBool::new(false),
            refused: AtomicUsize::new(0),
        });
        let s = shared.clone();
        let accept = std::thread::spawn(move || {
            for down in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(down) = down else { continue };
                let up = TcpStream::connect_timeout(&upstream, Duration::from_secs(5));
                let mut st = s.state.lock().unwrap();
                let Ok(up) = up.map_err(|e| eprintln!("proxy: upstream: {e}")) else {
                    let _ = down.shutdown(Shutdown::Both);
                    continue;
                };
                if st.blocked {
                    s.refused.fetch_add(1, Ordering::SeqCst);
                    let _ = down.shutdown(Shutdown::Both);
                    let _ = up.shutdown(Shutdown::Both);
                    continue;
                }
                let (d2, u2) = (down.try_clone().unwrap(), up.try_clone().unwrap());
                st.conns
                    .extend([down.try_clone().unwrap(), up.try_clone().unwrap()]);
                st.pumps.push(std::thread::spawn(move || pump(down, up)));
                st.pumps.push(std::thread::spawn(move || pump(u2, d2)));
            }
        });
        Proxy {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    /// Ends every connection and refuses new ones until `unblock`; returns how many it cut.
    fn cut(&self) -> usize {
        let mut st = self.shared.state.lock().unwrap();
        st.blocked = true;
        let n = st.conns.len() / 2;
        for c in st.conns.drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
        n
    }

    fn unblock(&self) {
        self.shared.state.lock().unwrap().blocked = false;
    }

    fn refused(&self) -> usize {
        self.shared.refused.load(Ordering::SeqCst)
    }
}

/// Copies `from` to `to` until either side ends, then ends both (which stops the other pump).
fn pump(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop, which then sees `stop`.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        self.cut();
        let pumps = std::mem::take(&mut self.shared.state.lock().unwrap().pumps);
        for t in pumps {
            let _ = t.join();
        }
    }
}

// ---- chromedriver and one browser session ----

struct Browser {
    driver: SocketAddr,
    session: Option<String>,
    profile: TempDir,
    chromedriver: Proc,
    log: PathBuf,
}

impl Browser {
    fn start(dir: &TempDir, budget: Budget) -> Browser {
        let chromium = program("chromium", &["/usr/bin/chromium"])
            .expect("chromium not found: run scripts/install-test-deps.sh (Debian `chromium`)");
        let chromedriver = program("chromedriver", &["/usr/bin/chromedriver"]).expect(
            "chromedriver not found: run scripts/install-test-deps.sh (Debian `chromium-driver`)",
        );
        let driver = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log = dir.join("chromedriver.log");
        let proc = Proc::spawn(
            "chromedriver",
            Command::new(chromedriver)
                .arg(format!("--port={}", driver.port()))
                .arg(format!("--log-path={}", log.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        let mut b = Browser {
            driver,
            session: None,
            profile: TempDir::new("chromium-profile"),
            chromedriver: proc,
            log,
        };
        // Ready when GET /status says so (bounded).
        let deadline = Instant::now() + budget.limit(Duration::from_secs(15), "chromedriver");
        loop {
            if let Some(status) = b.chromedriver.exited() {
                panic!("chromedriver exited ({status}):\n{}", b.logs());
            }
            if let Ok((200, body)) = request(driver, "GET", "/status", None, Duration::from_secs(2))
                && serde_json::from_str::<Value>(&body).is_ok_and(|v| v["value"]["ready"] == true)
            {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver not ready");
            std::thread::sleep(Duration::from_millis(50));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--no-first-run",
                    "--window-size=1000,700",
                    format!("--user-data-dir={}", b.profile.path.display()),
                ],
            },
        }}});
        let within = budget.limit(Duration::from_secs(30), "new browser session");
        let v = b.call("POST", "/session", Some(&caps), within);
        b.session = Some(
            v["sessionId"]
                .as_str()
                .unwrap_or_else(|| panic!("no sessionId in {v}"))
                .to_string(),
        );
        b
    }

    fn logs(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        // The tail is what matters; the log is verbose.
        let start = log.len().saturating_sub(4000);
        String::from_utf8_lossy(&log.as_bytes()[start..]).to_string()
    }

    /// A WebDriver command; returns its `value`, panics on a WebDriver error.
    fn call(&self, method: &str, path: &str, body: Option<&Value>, within: Duration) -> Value {
        let (status, answer) = request(self.driver, method, path, body, within)
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        let v: Value = serde_json::from_str(&answer)
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: not JSON ({e}): {answer}"));
        assert_eq!(status, 200, "WebDriver {method} {path}: {v}");
        v["value"].clone()
    }

    fn session_path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session.as_deref().unwrap())
    }

    fn goto(&self, url: &str) {
        let body = json!({ "url": url });
        self.call(
            "POST",
            &self.session_path("/url"),
            Some(&body),
            Duration::from_secs(15),
        );
    }

    /// Runs `script` (a function body) in the page and returns its result.
    fn eval(&self, script: &str) -> Value {
        let body = json!({"script": script, "args": []});
        self.call(
            "POST",
            &self.session_path("/execute/sync"),
            Some(&body),
            Duration::from_secs(10),
        )
    }

    fn status(&self) -> String {
        self.eval("return document.getElementById('status').dataset.status;")
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    fn text_of(&self, id: &str) -> String {
        self.eval(&format!(
            "return document.getElementById('{id}').textContent;"
        ))
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    /// Polls the page (bounded) until `cond` holds; panics with `what` and the page state.
    fn wait_for(
        &self,
        budget: Budget,
        step: Duration,
        what: &str,
        cond: impl Fn(&Browser) -> bool,
    ) {
        let deadline = Instant::now() + budget.limit(step, what);
        loop {
            if cond(self) {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "page never reached: {what} (status {:?}, #status {:?}, #messages {:?})",
                    self.status(),
                    self.text_of("status"),
                    self.text_of("messages")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_status(&self, budget: Budget, step: Duration, want: &str) {
        self.wait_for(budget, step, &format!("status {want}"), |b| {
            b.status() == want
        });
    }

    /// Saves a screenshot as `<target>/test-artifacts/<name>`; returns where.
    fn screenshot(&self, name: &str) -> Result<PathBuf, String> {
        let (status, answer) = request(
            self.driver,
            "GET",
            &self.session_path("/screenshot"),
            None,
            Duration::from_secs(10),
        )?;
        let v: Value = serde_json::from_str(&answer).map_err(|e| e.to_string())?;
        let b64 = v["value"]
            .as_str()
            .filter(|_| status == 200)
            .ok_or_else(|| format!("screenshot failed: {v}"))?;
        let png = base64_decode(b64)?;
        let dir = artifacts_dir();
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let path = dir.join(name);
        std::fs::write(&path, png).map_err(|e| e.to_string())?;
        Ok(path)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Closing the session ends Chromium; then chromedriver; then any Chromium process still
        // running with this test's profile directory (ours alone: the path is unique).
        if let Some(path) = self.session.take().map(|id| format!("/session/{id}")) {
            let _ = request(self.driver, "DELETE", &path, None, Duration::from_secs(10));
        }
        self.chromedriver
            .stop(libc::SIGTERM, Duration::from_secs(5));
        kill_processes_mentioning(&self.profile.path.display().to_string());
    }
}

/// SIGKILLs every process whose command line contains `needle` (bounded: one pass over /proc,
/// then a bounded wait for them to be gone).
fn kill_processes_mentioning(needle: &str) {
    let find = || -> Vec<i32> {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
            })
            .collect()
    };
    let left = find();
    if left.is_empty() {
        return;
    }
    eprintln!("browser: killing leftover Chromium processes {left:?}");
    for pid in &left {
        // SAFETY: these run with this test's unique profile directory, so we started them.
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
    for _ in 0..50 {
        if find().is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `<target dir>/test-artifacts`: the test binary lives in `<target dir>/<profile>/deps/`.
fn artifacts_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.ancestors()
        .nth(3)
        .expect("test binary outside a target dir")
        .join("test-artifacts")
}

/// Standard base64 (WebDriver screenshots); padding and whitespace are skipped.
fn base64_decode(s: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' | b'\r' | b'\n' => continue,
            _ => return Err(format!("not base64: byte {c:#04x}")),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Ok(out)
}

#[test]
fn base64_decoder() {
    assert_eq!(base64_decode("aGVsbG8gd29ybGQ=").unwrap(), b"hello world");
    assert_eq!(base64_decode("YWJj").unwrap(), b"abc");
    assert_eq!(base64_decode("YWI=").unwrap(), b"ab");
}

#[test]
fn demo_page_receives_pushes_and_reconnects_after_a_restart() {
    let budget = Budget(Instant::now() + BUDGET);
    let dir = TempDir::new("browser");
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut tether = start_tether(addr, &dir, 1, &[], budget);
    let browser = Browser::start(&dir, budget);

    let mut second = None;
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let unique = format!("{}-{}", std::process::id(), addr.port());
        browser.goto(&format!("http://{addr}/?client_id=browser1"));
        browser.wait_status(budget, Duration::from_secs(15), "open");
        let first_session = browser.text_of("session");
        assert!(
            first_session.len() > 3,
            "no session id shown: {first_session:?}"
        );

        let text1 = format!("first push {unique}");
        push(addr, "browser1", &text1);
        browser.wait_for(budget, Duration::from_secs(5), "first push shown", |b| {
            b.text_of("messages").contains(&text1)
        });

        // Stop the server: SIGTERM drains (the page's client leaves on `shutdown`), exit 0.
        let (status, clean) = tether.proc.stop(libc::SIGTERM, Duration::from_secs(10));
        assert!(clean && status.success(), "tether stopped with {status}");
        browser.wait_status(budget, Duration::from_secs(10), "reconnecting");

        // The same port again: the page comes back by itself, with a new session.
        second = Some(start_tether(addr, &dir, 2, &[], budget));
        browser.wait_status(budget, RECONNECT_WITHIN, "open");
        let second_session = browser.text_of("session");
        assert_ne!(
            second_session, first_session,
            "same session after a restart?"
        );

        let text2 = format!("second push {unique}");
        push(addr, "browser1", &text2);
        browser.wait_for(budget, Duration::from_secs(5), "second push shown", |b| {
            b.text_of("messages").contains(&text2)
        });
        let messages = browser.text_of("messages");
        assert!(messages.contains(&text1), "first push gone: {messages}");
        eprintln!("browser: sessions {first_session} then {second_session}; #messages: {messages}");
    }));

    match run {
        Ok(()) => {
            let path = browser
                .screenshot("browser-ok.png")
                .unwrap_or_else(|e| panic!("screenshot: {e}"));
            eprintln!("browser: screenshot saved to {}", path.display());
        }
        Err(panic) => {
            match browser.screenshot("browser-failure.png") {
                Ok(p) => eprintln!("browser: failure screenshot saved to {}", p.display()),
                Err(e) => eprintln!("browser: no failure screenshot: {e}"),
            }
            eprintln!("--- tether 1\n{}", tether.logs());
            if let Some(t) = &second {
                eprintln!("--- tether 2\n{}", t.logs());
            }
            eprintln!("--- chromedriver (tail)\n{}", browser.logs());
            std::panic::resume_unwind(panic);
        }
    }
    drop(browser);
    drop(second);
    drop(tether);
}

/// The `text` of every `notify` the page shows, oldest first (the list is newest first).
fn notify_texts(b: &Browser) -> Vec<String> {
    let v = b.eval(
        "return [...document.querySelectorAll('#messages li[data-type=notify] .data')]\
         .map((e) => JSON.parse(e.textContent).text).reverse();",
    );
    serde_json::from_value(v).unwrap()
}

/// `lastPosition().client` of the page's client, as `(epoch, seq)`.
fn client_position(b: &Browser) -> (String, u64) {
    let v = b.eval("return window.tether.client.lastPosition().client;");
    let text = v
        .as_str()
        .unwrap_or_else(|| panic!("no client position: {v}"));
    let (epoch, seq) = text.rsplit_once(':').unwrap();
    (epoch.to_string(), seq.parse().unwrap())
}

#[test]
fn demo_page_resumes_what_it_missed_while_its_connection_was_down() {
    let dir = TempDir::new("browser-resume");
    resume_after_a_cut(&dir, "browser-resume", "resume1", &[], |_| String::new());
}

/// The same with `auth = "on"`: the page's `getToken` hands over an HS256 token (minted here,
/// passed in the page URL) on the first connection and again on the resume.
#[test]
fn demo_page_resumes_with_a_token_when_auth_is_on() {
    use jsonwebtoken::{EncodingKey, Header, encode};
    let dir = TempDir::new("browser-resume-auth");
    let secret: String = rand::random::<[u8; 32]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let secret_file = dir.join("secret");
    std::fs::write(&secret_file, &secret).unwrap();
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let key = EncodingKey::from_secret(secret.as_bytes()).unwrap();
    let token = move |id: &str| {
        let claims = json!({"sub": id, "exp": exp});
        encode(&Header::default(), &claims, &key).unwrap()
    };
    let args = ["--auth", "on", "--auth-hmac-secret-file"];
    let args = [&args[..], &[secret_file.to_str().unwrap()]].concat();
    resume_after_a_cut(&dir, "browser-resume-auth", "resume2", &args, |id| {
        format!("&token={}", token(id))
    });
}

/// Opens the demo page as `id` (`extra_query(id)` appended to its query) through a [`Proxy`]
/// to tether with history on (and `extra` flags), pushes A, cuts the connection, pushes B and
/// C while the page is away, lets it back, and checks that the client resumed by itself: B and
/// C once each, after A, `welcome` with `recovered: true, missed: 2`; then D arrives live.
/// Screenshots `<tag>-ok.png` / `<tag>-failure.png`.
fn resume_after_a_cut(
    dir: &TempDir,
    tag: &str,
    id: &str,
    extra: &[&str],
    extra_query: impl Fn(&str) -> String,
) {
    let budget = Budget(Instant::now() + BUDGET);
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let args = [&["--history-size", "50"][..], extra].concat();
    let tether = start_tether(addr, dir, 1, &args, budget);
    // The page (HTTP and WebSocket) goes through the proxy; the test pushes to tether directly.
    let proxy = Proxy::start(addr);
    let browser = Browser::start(dir, budget);

    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let unique = format!("{}-{}", std::process::id(), addr.port());
        let query = extra_query(id);
        browser.goto(&format!("http://{}/?client_id={id}{query}", proxy.addr));
        browser.wait_status(budget, Duration::from_secs(15), "open");
        let first_session = browser.text_of("session");
        assert!(first_session.len() > 3, "no session id: {first_session:?}");

        let a = format!("A {unique}");
        let answer = push(addr, id, &a);
        assert_eq!(
            answer["seq"], 1,
            "history on: pushes are numbered: {answer}"
        );
        browser.wait_for(budget, Duration::from_secs(5), "A shown", |b| {
            notify_texts(b) == [a.as_str()]
        });
        let (epoch, seq) = client_position(&browser);
        assert_eq!(seq, 1, "position after A");

        // The network goes away; tether keeps running (and keeps its history).
        let cut = proxy.cut();
        assert!(cut >= 1, "no connection to cut");
        browser.wait_status(budget, Duration::from_secs(10), "reconnecting");
        let deadline = Instant::now() + budget.limit(Duration::from_secs(10), "session gone");
        while online(addr, id) {
            assert!(
                Instant::now() < deadline,
                "tether still counts a session for {id}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }

        // Offline delivery: stored, numbered on.
        let (b_text, c_text) = (format!("B {unique}"), format!("C {unique}"));
        for (text, want_seq) in [(&b_text, 2), (&c_text, 3)] {
            let (status, answer) = push_answer(addr, id, text);
            assert_eq!(status, 202, "{answer}");
            assert_eq!(answer["stored"], true, "{answer}");
            assert_eq!(answer["delivered"], 0, "{answer}");
            assert_eq!(answer["seq"], want_seq, "{answer}");
        }
        // The proxy refuses every attempt, so the page cannot have come back yet.
        assert_eq!(browser.status(), "reconnecting");
        assert_eq!(notify_texts(&browser), [a.as_str()], "shown while offline?");

        // The network comes back: the client reconnects with `since` by itself.
        proxy.unblock();
        browser.wait_status(budget, RECONNECT_WITHIN, "open");
        let second_session = browser.text_of("session");
        assert_ne!(
            second_session, first_session,
            "a reconnect is a new session"
        );
        browser.wait_for(budget, Duration::from_secs(5), "B and C shown", |b| {
            notify_texts(b).len() >= 3
        });
        assert_eq!(
            notify_texts(&browser),
            [a.as_str(), b_text.as_str(), c_text.as_str()],
            "B and C once each, in order, after A"
        );

        // The new connection's welcome (the newest one in the list) and the page's events.
        let welcome: Value = serde_json::from_str(
            browser
                .eval(
                    "return document.querySelector('#messages li[data-type=welcome] .data')\
                     .textContent;",
                )
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(welcome["session_id"], second_session.as_str(), "{welcome}");
        assert_eq!(welcome["recovered"], true, "{welcome}");
        assert_eq!(welcome["missed"], 2, "{welcome}");
        assert_eq!(welcome["epoch"], epoch.as_str(), "same epoch: {welcome}");
        let events = browser.eval("return window.tether.events;");
        let events = events.as_array().unwrap();
        assert!(
            events.iter().all(|e| e["event"] == "resumed"),
            "no recovery_failed: {events:?}"
        );
        let last = events.last().unwrap();
        assert_eq!(last["stream"], "client", "{last}");
        assert_eq!(last["missed"], 2, "{last}");
        assert_eq!(client_position(&browser), (epoch.clone(), 3), "A, B, C");

        // And live again.
        let d = format!("D {unique}");
        let answer = push(addr, id, &d);
        assert_eq!(answer["seq"], 4, "{answer}");
        browser.wait_for(budget, Duration::from_secs(5), "D shown", |b| {
            notify_texts(b).len() >= 4
        });
        assert_eq!(
            notify_texts(&browser),
            [a.as_str(), b_text.as_str(), c_text.as_str(), d.as_str()]
        );
        assert_eq!(client_position(&browser), (epoch.clone(), 4));
        eprintln!(
            "{tag}: sessions {first_session} then {second_session}; \
             {} attempt(s) refused while cut; events {events:?}",
            proxy.refused()
        );
    }));

    match run {
        Ok(()) => {
            let path = browser
                .screenshot(&format!("{tag}-ok.png"))
                .unwrap_or_else(|e| panic!("screenshot: {e}"));
            eprintln!("{tag}: screenshot saved to {}", path.display());
        }
        Err(panic) => {
            match browser.screenshot(&format!("{tag}-failure.png")) {
                Ok(p) => eprintln!("{tag}: failure screenshot saved to {}", p.display()),
                Err(e) => eprintln!("{tag}: no failure screenshot: {e}"),
            }
            eprintln!("--- tether\n{}", tether.logs());
            eprintln!("--- chromedriver (tail)\n{}", browser.logs());
            std::panic::resume_unwind(panic);
        }
    }
    drop(browser);
    drop(proxy);
    drop(tether);
}

/// Opens a WebSocket session by hand (blocking) and keeps it: the dashboard's connections.
fn hold_session(addr: SocketAddr, client_id: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET /ws?client_id={client_id} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "closed during the upgrade");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s
}

#[test]
fn dashboard_charts_live_counters_in_a_real_browser() {
    let budget = Budget(Instant::now() + BUDGET);
    let dir = TempDir::new("dashboard");
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let tether = start_tether(addr, &dir, 1, &[], budget);
    let browser = Browser::start(&dir, budget);
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _a = hold_session(addr, "dash-a");
        let _b = hold_session(addr, "dash-b");
        browser.goto(&format!("http://{addr}/dashboard"));
        browser.wait_for(
            budget,
            Duration::from_secs(15),
            "two connections charted",
            |b| b.text_of("connections") == "2",
        );
        let charts = browser.eval("return document.querySelectorAll('canvas').length;");
        assert_eq!(charts, 8, "one chart per series");
        let node = browser.text_of("node");
        assert!(!node.is_empty() && node != "…", "node shown: {node:?}");
        // A third session shows up live, without a reload.
        let _c = hold_session(addr, "dash-c");
        browser.wait_for(
            budget,
            Duration::from_secs(10),
            "the third connection",
            |b| b.text_of("connections") == "3",
        );
    }));
    match run {
        Ok(()) => {
            let path = browser
                .screenshot("dashboard-ok.png")
                .unwrap_or_else(|e| panic!("screenshot: {e}"));
            eprintln!("dashboard: screenshot saved to {}", path.display());
        }
        Err(panic) => {
            let _ = browser.screenshot("dashboard-failure.png");
            eprintln!("--- tether\n{}", tether.logs());
            std::panic::resume_unwind(panic);
        }
    }
    drop(browser);
    drop(tether);
}

#[test]
fn the_dashboard_of_a_cluster_charts_every_node() {
    let budget = Budget(Instant::now() + BUDGET);
    let dir = TempDir::new("dashboard-cluster");
    let redis = common::redis::Redis::start();
    let url = redis.url();
    let (one, two) = (
        SocketAddr::from(([127, 0, 0, 1], free_port())),
        SocketAddr::from(([127, 0, 0, 1], free_port())),
    );
    let cluster = |id: &'static str| ["--redis-url", url.as_str(), "--node-id", id];
    let t1 = start_tether(one, &dir, 1, &cluster("dash-1"), budget);
    let t2 = start_tether(two, &dir, 2, &cluster("dash-2"), budget);
    let browser = Browser::start(&dir, budget);
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _a = hold_session(one, "dash-a");
        let _b = hold_session(two, "dash-b");
        let _c = hold_session(two, "dash-c");
        browser.goto(&format!("http://{one}/dashboard"));
        // Each node's line and legend, from the page served by node 1 alone.
        let legend = |b: &Browser| {
            b.eval(
                "return [...document.querySelectorAll('#grid .card:first-child .legend span')]\
                 .map((s) => s.textContent).join('|');",
            )
            .as_str()
            .unwrap_or_default()
            .to_string()
        };
        browser.wait_for(
            budget,
            Duration::from_secs(20),
            "both nodes charted with their connections",
            |b| legend(b) == "dash-1: 1|dash-2: 2",
        );
        assert!(
            browser
                .text_of("cluster")
                .contains("cluster of 2: dash-1, dash-2"),
            "{}",
            browser.text_of("cluster")
        );
    }));
    if let Err(panic) = run {
        let _ = browser.screenshot("dashboard-cluster-failure.png");
        eprintln!("--- tether 1\n{}\n--- tether 2\n{}", t1.logs(), t2.logs());
        std::panic::resume_unwind(panic);
    }
    drop(browser);
    drop((t1, t2));
}
