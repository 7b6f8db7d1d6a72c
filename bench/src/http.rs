//! A small blocking HTTP/1.1 client with keep-alive, for the push API calls of `fanout`
//! (one request at a time on one connection, reconnecting when the server closes it).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::target::Endpoint;

/// A keep-alive connection to the HTTP API.
pub struct Client {
    /// API base (address, host header, path prefix).
    base: Endpoint,
    /// `Authorization` header value, when an API key is set.
    auth: Option<String>,
    /// The open connection, if any.
    conn: Option<BufReader<TcpStream>>,
    /// Read/write timeout of one request.
    timeout: Duration,
}

/// The parts of a response head this client needs.
#[derive(Debug, PartialEq, Eq)]
pub struct Head {
    /// Status code.
    pub status: u16,
    /// Body length.
    pub content_length: usize,
    /// The server will close the connection after this response.
    pub close: bool,
}

/// Parses a response head (without the final blank line's bytes mattering).
pub fn parse_head(head: &str) -> Result<Head, String> {
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or("bad_status_line")?;
    let mut content_length = None;
    let mut close = false;
    for line in lines {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_ascii_lowercase());
        match k.as_str() {
            "content-length" => content_length = v.parse().ok(),
            "connection" => close = v == "close",
            "transfer-encoding" if v.contains("chunked") => {
                return Err("chunked_unsupported".into());
            }
            _ => {}
        }
    }
    Ok(Head {
        status,
        content_length: content_length.unwrap_or(0),
        close,
    })
}

impl Client {
    /// A client for `base`; nothing is connected yet.
    pub fn new(base: Endpoint, api_key: Option<&str>, timeout: Duration) -> Client {
        Client {
            base,
            auth: api_key.map(|k| format!("Bearer {k}")),
            conn: None,
            timeout,
        }
    }

    /// POSTs a JSON body to `path` (under the API base); returns status and body, or an error
    /// kind. A request on a reused connection that the server had closed is sent once more.
    pub fn post(&mut self, path: &str, body: &str) -> Result<(u16, String), String> {
        let reused = self.conn.is_some();
        match self.exchange(path, body) {
            Err(e) if reused && (e == "eof" || e == "reset" || e == "broken_pipe") => {
                self.conn = None;
                self.exchange(path, body)
            }
            r => r,
        }
    }

    fn exchange(&mut self, path: &str, body: &str) -> Result<(u16, String), String> {
        let result = self.try_exchange(path, body);
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    fn try_exchange(&mut self, path: &str, body: &str) -> Result<(u16, String), String> {
        if self.conn.is_none() {
            let s =
                TcpStream::connect_timeout(&self.base.addr, self.timeout).map_err(|e| kind(&e))?;
            s.set_read_timeout(Some(self.timeout))
                .map_err(|e| kind(&e))?;
            s.set_write_timeout(Some(self.timeout))
                .map_err(|e| kind(&e))?;
            let _ = s.set_nodelay(true);
            self.conn = Some(BufReader::new(s));
        }
        let auth = self
            .auth
            .as_ref()
            .map(|a| format!("Authorization: {a}\r\n"))
            .unwrap_or_default();
        let req = format!(
            "POST {}{path} HTTP/1.1\r\nHost: {}\r\n{auth}Content-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            self.base.path,
            self.base.host,
            body.len()
        );
        let conn = self.conn.as_mut().ok_or("not_connected")?;
        conn.get_mut()
            .write_all(req.as_bytes())
            .map_err(|e| kind(&e))?;
        let mut head = String::new();
        loop {
            let mut line = String::new();
            let n = conn.read_line(&mut line).map_err(|e| kind(&e))?;
            if n == 0 {
                return Err("eof".into());
            }
            if line == "\r\n" || line == "\n" {
                break;
            }
            head.push_str(&line);
            if head.len() > 64 * 1024 {
                return Err("head_too_big".into());
            }
        }
        let h = parse_head(&head)?;
        let mut body = vec![0u8; h.content_length];
        conn.read_exact(&mut body).map_err(|e| kind(&e))?;
        if h.close {
            self.conn = None;
        }
        Ok((h.status, String::from_utf8_lossy(&body).into_owned()))
    }
}

fn kind(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::WouldBlock => "timeout".into(),
        _ => crate::conn::io_kind(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_heads() {
        let h = parse_head("HTTP/1.1 200 OK\r\ncontent-length: 17\r\ncontent-type: x\r\n").unwrap();
        assert_eq!(
            h,
            Head {
                status: 200,
                content_length: 17,
                close: false
            }
        );
        let h = parse_head("HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n")
            .unwrap();
        assert!(h.close && h.status == 404);
        assert!(parse_head("garbage").is_err());
        assert!(parse_head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n").is_err());
    }

    #[test]
    fn keep_alive_round_trips() {
        use std::net::TcpListener;
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut r = BufReader::new(s);
            for _ in 0..2 {
                let mut len = 0;
                loop {
                    let mut line = String::new();
                    r.read_line(&mut line).unwrap();
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; len];
                r.read_exact(&mut body).unwrap();
                let answer = r#"{"delivered":3}"#;
                let res = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{answer}",
                    answer.len()
                );
                r.get_mut().write_all(res.as_bytes()).unwrap();
            }
        });
        let base = crate::target::parse_url(&format!("http://{addr}"), "http").unwrap();
        let mut c = Client::new(base, Some("k"), Duration::from_secs(5));
        for _ in 0..2 {
            let (status, body) = c.post("/api/v1/broadcast", "{}").unwrap();
            assert_eq!((status, body.as_str()), (200, r#"{"delivered":3}"#));
        }
        server.join().unwrap();
    }
}
