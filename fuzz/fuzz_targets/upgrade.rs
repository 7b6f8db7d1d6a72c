//! What an upgrade request carries before anything is trusted: the query string, the client id
//! (query or `X-Client-Id`), the forwarded address headers, the `Upgrade` / `Connection` tokens
//! the `Sec-WebSocket-Key` and the permessage-deflate offers of `Sec-WebSocket-Extensions`.
//!
//! The input reads like a request head, so seeds can be realistic: a first byte of flags (peer,
//! `require_client_id`), then the query on the first line and `name: value` header lines, values
//! as raw bytes.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::OnceLock;

use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use tether::config::Proxy;
use tether::fuzz_api::{
    client_addr, client_id, deflate_negotiate, has_token, query_param, valid_key,
};

const HEADERS: &[&str] = &[
    "x-forwarded-for",
    "x-real-ip",
    "x-client-id",
    "upgrade",
    "connection",
    "sec-websocket-key",
    "sec-websocket-extensions",
];

fn proxies() -> &'static [Proxy] {
    static PROXIES: OnceLock<Vec<Proxy>> = OnceLock::new();
    PROXIES.get_or_init(|| {
        ["127.0.0.1", "10.0.0.0/8", "::1", "fd00::/8"]
            .iter()
            .filter_map(|p| p.parse().ok())
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let mut lines = rest.split(|b| *b == b'\n');
    let query = lines.next().map(String::from_utf8_lossy);
    let query = query.as_deref().filter(|q| !q.is_empty());
    let mut h = HeaderMap::new();
    for line in lines {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        let value = value.strip_prefix(b" ").unwrap_or(value);
        let known = HEADERS
            .iter()
            .find(|n| n.as_bytes().eq_ignore_ascii_case(name));
        // Values hyper would refuse never reach tether, so they are skipped here too.
        if let (Some(n), Ok(v)) = (known, HeaderValue::from_bytes(value)) {
            h.append(HeaderName::from_static(n), v);
        }
    }
    let require_client_id = flags & 4 != 0;

    if let Some(q) = query {
        for name in ["client_id", "token", ""] {
            let _ = query_param(q, name);
        }
    }

    match client_id(require_client_id, query, &h) {
        Ok(Some(id)) => {
            assert!(!id.is_empty() && id.len() <= 256, "{id:?}");
            assert!(!id.chars().any(char::is_control), "{id:?}");
        }
        Ok(None) => assert!(!require_client_id),
        Err(_) => {}
    }

    let peer_ip = match flags % 4 {
        0 => IpAddr::V4(Ipv4Addr::LOCALHOST),
        1 => IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)),
        2 => IpAddr::V6(Ipv6Addr::LOCALHOST),
        _ => IpAddr::V4(Ipv4Addr::new(192, 0, 2, 99)),
    };
    let peer = SocketAddr::new(peer_ip, 40000);
    let got = client_addr(proxies(), &h, peer);
    if got != peer {
        assert!(
            proxies().iter().any(|p| p.contains(peer_ip)),
            "{got} from a stranger"
        );
        assert!(
            in_headers(&h, got.ip()),
            "{got} is in no forwarded header: {h:?}"
        );
    }

    let offers = h.get_all(header::SEC_WEBSOCKET_EXTENSIONS);
    if let Some(a) = deflate_negotiate(offers.iter().map(HeaderValue::as_bytes)) {
        // Only windows tether can compress with, and an answer hyper can send.
        assert!((9..=15).contains(&a.window_bits), "{a:?}");
        assert!(HeaderValue::from_str(&a.response()).is_ok(), "{a:?}");
    }

    let _ = has_token(&h, header::UPGRADE, "websocket");
    let _ = has_token(&h, header::CONNECTION, "upgrade");
    if let Some(k) = h
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok())
    {
        if valid_key(k.trim()) {
            assert_eq!(k.trim().len(), 24);
        }
    }
});

/// An independent reading of the forwarded headers: does `ip` appear as one of their entries?
fn in_headers(h: &HeaderMap, ip: IpAddr) -> bool {
    let values = h
        .get_all("x-forwarded-for")
        .iter()
        .chain(h.get_all("x-real-ip").iter());
    // Entries, not whole values, must be UTF-8: one bad entry does not hide the others.
    values
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .filter_map(|entry| std::str::from_utf8(entry).ok())
        .any(|entry| entry_ip(entry) == Some(ip))
}

fn entry_ip(entry: &str) -> Option<IpAddr> {
    let e = entry.trim();
    e.parse::<IpAddr>()
        .ok()
        .or_else(|| e.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| e.strip_prefix('[')?.strip_suffix(']')?.parse().ok())
}
