//! The HTTP API client of `fanout`: hyper's HTTP/1.1 client on one keep-alive connection, one
//! request at a time, reconnecting when the server has closed it. Keeping the connection matters:
//! a new TCP handshake per message would cap the push rate and load the server's accept path
//! instead of its fan-out.
//!
//! The fanout driver is synchronous (it paces sends and pumps worker events between them), so
//! the client owns a small current-thread runtime and blocks on each request; the connection's
//! task only runs while a request is in flight, which is the only time it has work.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::client::conn::http1::{SendRequest, handshake};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::conn::io_kind;
use crate::target::Endpoint;

/// A keep-alive client for the HTTP API.
pub struct Client {
    /// Drives the connection while a request is in flight.
    rt: tokio::runtime::Runtime,
    /// The connection and what requests need.
    conn: Conn,
}

/// The part of the client that the runtime's futures borrow.
struct Conn {
    /// API base (address, host header, path prefix).
    base: Endpoint,
    /// `Authorization` header value, when an API key is set.
    auth: Option<String>,
    /// The open connection, if any.
    sender: Option<SendRequest<Full<Bytes>>>,
    /// Longest one request may take, connecting included.
    timeout: Duration,
}

/// Failures that mean a reused connection was closed by the server before it took the request:
/// worth one more try on a fresh connection.
const STALE: [&str; 5] = ["eof", "reset", "broken_pipe", "canceled", "closed"];

impl Client {
    /// A client for `base`; nothing is connected yet.
    pub fn new(base: Endpoint, api_key: Option<&str>, timeout: Duration) -> Result<Client, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("HTTP client runtime: {e}"))?;
        let conn = Conn {
            base,
            auth: api_key.map(|k| format!("Bearer {k}")),
            sender: None,
            timeout,
        };
        Ok(Client { rt, conn })
    }

    /// POSTs a JSON body to `path` (under the API base); returns status and body, or a short
    /// error kind. A request on a reused connection that the server had closed is sent once more.
    pub fn post(&mut self, path: &str, body: &str) -> Result<(u16, String), String> {
        self.request("POST", path, body)
    }

    /// GETs `path` (under the API base), as [`Client::post`].
    pub fn get(&mut self, path: &str) -> Result<(u16, String), String> {
        self.request("GET", path, "")
    }

    fn request(&mut self, method: &str, path: &str, body: &str) -> Result<(u16, String), String> {
        let conn = &mut self.conn;
        self.rt.block_on(async {
            let reused = conn.sender.is_some();
            match conn.exchange(method, path, body).await {
                Err(e) if reused && STALE.contains(&e.as_str()) => {
                    conn.exchange(method, path, body).await
                }
                r => r,
            }
        })
    }
}

impl Conn {
    /// One request within the timeout; any failure drops the connection.
    async fn exchange(
        &mut self,
        method: &str,
        path: &str,
        body: &str,
    ) -> Result<(u16, String), String> {
        let result = tokio::time::timeout(self.timeout, self.try_exchange(method, path, body))
            .await
            .unwrap_or_else(|_| Err("timeout".into()));
        if result.is_err() {
            self.sender = None;
        }
        result
    }

    async fn try_exchange(
        &mut self,
        method: &str,
        path: &str,
        body: &str,
    ) -> Result<(u16, String), String> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            self.sender = Some(self.connect().await?);
        }
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base.path))
            .header(HOST, &self.base.host)
            .header(CONTENT_TYPE, "application/json");
        if let Some(auth) = &self.auth {
            req = req.header(AUTHORIZATION, auth);
        }
        let req = req
            .body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
            .map_err(|_| "bad_request")?;
        let sender = self.sender.as_mut().ok_or("not_connected")?;
        sender.ready().await.map_err(|e| kind(&e))?;
        let res = sender.send_request(req).await.map_err(|e| kind(&e))?;
        let status = res.status().as_u16();
        let bytes = res
            .into_body()
            .collect()
            .await
            .map_err(|e| kind(&e))?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let tcp = TcpStream::connect(self.base.addr)
            .await
            .map_err(|e| io_kind(&e))?;
        // Small requests one at a time: Nagle would hold each one back for the previous ACK.
        let _ = tcp.set_nodelay(true);
        let (sender, connection) = handshake(TokioIo::new(tcp)).await.map_err(|e| kind(&e))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                log::debug!("API connection ended: {e}");
            }
        });
        Ok(sender)
    }
}

/// A short label for a hyper error, matching the labels of the WebSocket side where they overlap.
fn kind(e: &hyper::Error) -> String {
    let io = std::error::Error::source(e).and_then(|s| s.downcast_ref::<std::io::Error>());
    match io {
        Some(io) => io_kind(io),
        None if e.is_incomplete_message() => "eof".into(),
        None if e.is_canceled() => "canceled".into(),
        None if e.is_closed() => "closed".into(),
        None if e.is_timeout() => "timeout".into(),
        None if e.is_parse() => "bad_response".into(),
        None => "http_error".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;

    /// Reads one request (head and Content-Length body); false at the end of the stream.
    fn read_request(r: &mut BufReader<std::net::TcpStream>) -> bool {
        let mut len = 0;
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).unwrap() == 0 {
                return false;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body).unwrap();
        true
    }

    /// A server on 127.0.0.1:0 that answers `answers` in turn, accepting a new connection only
    /// when the client closed the last one (or the answer said `Connection: close`).
    fn serve(answers: Vec<&'static str>) -> (Endpoint, std::thread::JoinHandle<usize>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = crate::target::parse_url(&format!("http://{}", l.local_addr().unwrap()), "http")
            .unwrap();
        let server = std::thread::spawn(move || {
            let mut accepted = 0;
            let mut answers = answers.into_iter().peekable();
            while answers.peek().is_some() {
                let (s, _) = l.accept().unwrap();
                accepted += 1;
                let mut r = BufReader::new(s);
                while read_request(&mut r) {
                    let Some(a) = answers.next() else { break };
                    r.get_mut().write_all(a.as_bytes()).unwrap();
                    if a.contains("Connection: close") || answers.peek().is_none() {
                        break;
                    }
                }
            }
            accepted
        });
        (base, server)
    }

    const PLAIN: &str = "HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n{\"delivered\":3}";

    #[test]
    fn keep_alive_reuses_one_connection() {
        let (base, server) = serve(vec![PLAIN, PLAIN, PLAIN]);
        let mut c = Client::new(base, Some("k"), Duration::from_secs(5)).unwrap();
        for _ in 0..3 {
            let (status, body) = c.post("/api/v1/broadcast", "{}").unwrap();
            assert_eq!((status, body.as_str()), (200, r#"{"delivered":3}"#));
        }
        assert_eq!(server.join().unwrap(), 1);
    }

    #[test]
    fn chunked_bodies_and_closed_connections() {
        let chunked = "HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
                       5\r\n{\"err\r\n5\r\nor\":1\r\n1\r\n}\r\n0\r\n\r\n";
        let (base, server) = serve(vec![chunked, PLAIN]);
        let mut c = Client::new(base, None, Duration::from_secs(5)).unwrap();
        assert_eq!(
            c.post("/api/v1/push", "{}").unwrap(),
            (404, r#"{"error":1}"#.to_string())
        );
        assert_eq!(c.post("/api/v1/push", "{}").unwrap().0, 200);
        assert_eq!(server.join().unwrap(), 2);
    }

    #[test]
    fn refused_and_timed_out() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let base = crate::target::parse_url(&url, "http").unwrap();
        let mut c = Client::new(base.clone(), None, Duration::from_millis(200)).unwrap();
        // Accepted by the kernel, never answered.
        assert_eq!(c.post("/x", "{}").unwrap_err(), "timeout");
        drop(l);
        assert_eq!(c.post("/x", "{}").unwrap_err(), "refused");
    }
}
