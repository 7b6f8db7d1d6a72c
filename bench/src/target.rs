//! Where the load goes: the WebSocket URL and the HTTP API base, parsed and checked to be on
//! loopback (127.0.0.0/8) only; the duration syntax of the flags ("250ms", "30s", "2m"); and the
//! loopback source address of each worker.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

/// The first of a comma-separated list of URLs (the one a single-target scenario uses).
pub fn first_url(list: &str) -> &str {
    list.split(',').next().unwrap_or(list).trim()
}

/// A parsed `ws://` or `http://` endpoint on loopback.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Address to connect to.
    pub addr: SocketAddr,
    /// The `Host` header value (as written in the URL).
    pub host: String,
    /// Path and query, starting with `/` (may be just `/`).
    pub path: String,
}

impl Endpoint {
    /// The path with `client_id=<id>` and, when given, `token=<jwt>` added to its query.
    pub fn path_for(&self, id: &str, token: Option<&str>) -> String {
        let sep = if self.path.contains('?') { '&' } else { '?' };
        match token {
            // A JWT is base64url parts joined by dots: nothing in it needs percent-encoding.
            Some(t) => format!("{}{sep}client_id={id}&token={t}", self.path),
            None => format!("{}{sep}client_id={id}", self.path),
        }
    }

    /// The HTTP API base derived from a WebSocket endpoint: same host and port, root path.
    pub fn api_base(&self) -> Endpoint {
        Endpoint {
            addr: self.addr,
            host: self.host.clone(),
            path: String::new(),
        }
    }
}

/// Parses `ws://host[:port]/path` (scheme `ws`) or `http://host[:port][/prefix]` (scheme `http`).
/// Only loopback IPv4 hosts and `localhost` are accepted: the tool never loads another machine.
pub fn parse_url(url: &str, scheme: &str) -> Result<Endpoint, String> {
    let rest = url
        .strip_prefix(scheme)
        .and_then(|r| r.strip_prefix("://"))
        .ok_or_else(|| format!("`{url}`: expected a {scheme}:// URL"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .map_err(|_| format!("`{url}`: bad port `{p}`"))?,
        ),
        None => (authority, 80),
    };
    let ip: Ipv4Addr = if host.eq_ignore_ascii_case("localhost") {
        Ipv4Addr::LOCALHOST
    } else {
        host.parse()
            .map_err(|_| format!("`{url}`: host must be a loopback IPv4 address (127.x.y.z)"))?
    };
    if !ip.is_loopback() {
        return Err(format!(
            "`{url}`: {ip} is not a loopback address; the load tool only targets 127.0.0.0/8"
        ));
    }
    let path = match (scheme, path) {
        ("ws", "") => "/".to_string(),
        ("http", p) => p.trim_end_matches('/').to_string(),
        (_, p) => p.to_string(),
    };
    Ok(Endpoint {
        addr: SocketAddr::V4(SocketAddrV4::new(ip, port)),
        host: authority.to_string(),
        path,
    })
}

/// Longest duration a flag takes: a load run longer than a day is a typo.
const MAX_DURATION: Duration = Duration::from_secs(86_400);

/// Parses a flag's duration in humantime's syntax ("250ms", "30s", "2m", "1h 30m"), up to a day.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("bad duration `{s}`: {e} (use e.g. 250ms, 30s, 2m)"))?;
    if d > MAX_DURATION {
        return Err(format!("duration `{s}` out of range (at most 24h)"));
    }
    Ok(d)
}

/// The loopback source address of worker `index`, counting up from `first`.
pub fn source_ip(first: Ipv4Addr, index: u32) -> Result<Ipv4Addr, String> {
    let ip = u32::from(first)
        .checked_add(index)
        .map(Ipv4Addr::from)
        .ok_or("source address overflow")?;
    if !ip.is_loopback() || ip.octets()[3] == 0 || ip.octets()[3] == 255 {
        return Err(format!(
            "source address {ip} for worker {index} is not a usable loopback address"
        ));
    }
    Ok(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ws_urls() {
        let e = parse_url("ws://127.0.0.1:8080/ws", "ws").unwrap();
        assert_eq!(e.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(e.host, "127.0.0.1:8080");
        assert_eq!(e.path_for("c7", None), "/ws?client_id=c7");
        assert_eq!(
            e.path_for("c7", Some("a.b.c")),
            "/ws?client_id=c7&token=a.b.c"
        );
        let e = parse_url("ws://localhost/ws?x=1", "ws").unwrap();
        assert_eq!(e.addr, "127.0.0.1:80".parse().unwrap());
        assert_eq!(e.path_for("c1", None), "/ws?x=1&client_id=c1");
        assert_eq!(e.api_base().path, "");
        assert_eq!(parse_url("ws://127.9.9.9:1", "ws").unwrap().path, "/");
    }

    #[test]
    fn refuses_non_loopback_and_bad_urls() {
        assert!(parse_url("ws://10.0.0.1:8080/ws", "ws").is_err());
        assert!(parse_url("ws://example.com/ws", "ws").is_err());
        assert!(parse_url("wss://127.0.0.1/ws", "ws").is_err());
        assert!(parse_url("ws://127.0.0.1:99999/ws", "ws").is_err());
        assert!(parse_url("http://127.0.0.1:8080", "ws").is_err());
    }

    #[test]
    fn http_api_urls() {
        let e = parse_url("http://127.0.0.1:9000/", "http").unwrap();
        assert_eq!((e.addr.port(), e.path.as_str()), (9000, ""));
        let e = parse_url("http://127.0.0.1:9000/prefix/", "http").unwrap();
        assert_eq!(e.path, "/prefix");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration(" 1m 30s ").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("24h").unwrap(), MAX_DURATION);
        assert!(parse_duration("25h").is_err());
        assert!(
            parse_duration("1.5").is_err(),
            "a unit is required, as in the server's config"
        );
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn source_addresses() {
        let first: Ipv4Addr = "127.0.0.2".parse().unwrap();
        assert_eq!(source_ip(first, 3).unwrap(), Ipv4Addr::new(127, 0, 0, 5));
        assert_eq!(source_ip(first, 300).unwrap(), Ipv4Addr::new(127, 0, 1, 46));
        assert!(source_ip("127.255.255.250".parse().unwrap(), 10).is_err());
        assert!(source_ip("10.0.0.1".parse().unwrap(), 0).is_err());
    }
}
