//! Who is connecting: the client id (from a verified token when auth is on, else the query or a
//! header), what the token allows, and the client's address behind trusted proxies.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use hyper::header::{self, HeaderMap};

use crate::auth::Verifier;
use crate::config::Proxy;
use crate::http::error::Error;
use crate::http::query::query_param;
use crate::session::Identity;

/// The identity of an upgrade request: with a verifier, from the token alone (`token` query
/// parameter or `Authorization: Bearer`); otherwise from `client_id` or `X-Client-Id`.
pub fn identify(
    verifier: Option<&Verifier>,
    require_client_id: bool,
    query: Option<&str>,
    headers: &HeaderMap,
    unix_now: u64,
) -> Result<Identity, Error> {
    if let Some(v) = verifier {
        let token = token(query, headers)?;
        let claims = v
            .verify(&token, unix_now)
            .map_err(|e| Error::BadToken(e.message()))?;
        return Ok(Identity::from_claims(claims));
    }
    Ok(Identity {
        client_id: client_id(require_client_id, query, headers)?,
        expires_at: None,
        grants: None,
        subs: Vec::new(),
    })
}

/// The token from the query (browsers cannot set headers on a WebSocket) or a Bearer header.
fn token<'a>(query: Option<&'a str>, headers: &'a HeaderMap) -> Result<Cow<'a, str>, Error> {
    match query.and_then(|q| query_param(q, "token")) {
        Some(Ok(t)) => return Ok(t),
        Some(Err(())) => return Err(Error::BadToken("the token is not valid UTF-8".into())),
        None => {}
    }
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    // An empty token is reported by the verifier as missing.
    Ok(Cow::Borrowed(bearer.unwrap_or_default()))
}

/// The client id from the query (`client_id`) or the `X-Client-Id` header.
pub fn client_id(
    require: bool,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<Option<Arc<str>>, Error> {
    let from_query = match query.and_then(|q| query_param(q, "client_id")) {
        Some(Ok(v)) => Some(v),
        Some(Err(())) => {
            return Err(Error::BadClientId(
                "the client_id parameter is not valid UTF-8",
            ));
        }
        None => None,
    };
    let id = match from_query {
        Some(v) => v,
        None => match headers.get("x-client-id").map(|v| v.to_str()) {
            Some(Ok(v)) => Cow::Borrowed(v.trim()),
            Some(Err(_)) => return Err(Error::BadClientId("X-Client-Id is not visible ASCII")),
            None => Cow::Borrowed(""),
        },
    };
    if id.is_empty() {
        return if require {
            Err(Error::MissingClientId)
        } else {
            Ok(None)
        };
    }
    crate::protocol::valid_client_id(&id).map_err(Error::BadClientId)?;
    Ok(Some(Arc::from(id.as_ref())))
}

/// The client's address: forwarded headers count only when the TCP peer is a trusted proxy.
///
/// `X-Forwarded-For` is walked right to left from the TCP peer: a trusted proxy's entry moves
/// the walk one hop further; the first untrusted entry is the client. An entry that does not
/// parse as an address ends the walk at the last trusted hop, so a client cannot inject one.
/// `X-Real-IP` is used only when there is no `X-Forwarded-For` at all.
pub fn client_addr(proxies: &[Proxy], h: &HeaderMap, peer: SocketAddr) -> SocketAddr {
    let trusted = |ip: IpAddr| proxies.iter().any(|p| p.contains(ip));
    if !trusted(peer.ip()) {
        return peer;
    }
    let mut hop = peer.ip();
    let mut forwarded = h.get_all("x-forwarded-for").iter().peekable();
    if forwarded.peek().is_none() {
        let real = h.get("x-real-ip").and_then(|v| v.to_str().ok());
        return match real.and_then(parse_addr) {
            Some(ip) => SocketAddr::new(ip, 0),
            None => peer,
        };
    }
    // Several headers are one list, in order (RFC 9110 §5.3).
    let values: Vec<&[u8]> = forwarded.map(|v| v.as_bytes()).collect();
    let entries = values
        .iter()
        .flat_map(|v| v.split(|b| *b == b','))
        .collect::<Vec<_>>();
    for entry in entries.iter().rev() {
        let Some(ip) = std::str::from_utf8(entry).ok().and_then(parse_addr) else {
            break;
        };
        if !trusted(ip) {
            return SocketAddr::new(ip, 0);
        }
        hop = ip;
    }
    if hop == peer.ip() {
        peer
    } else {
        SocketAddr::new(hop, 0)
    }
}

/// One forwarded address: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`, `[2001:db8::1]:5678`.
fn parse_addr(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    s.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|r| r.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    fn proxies(list: &[&str]) -> Vec<Proxy> {
        list.iter().map(|p| p.parse().unwrap()).collect()
    }

    #[test]
    fn forwarded_addresses_cannot_be_injected() {
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let p = proxies(&["127.0.0.1", "10.0.0.0/8"]);
        let ip = |pairs: &[(&'static str, &str)]| client_addr(&p, &headers(pairs), peer).ip();
        let s = |a: &str| a.parse::<IpAddr>().unwrap();
        assert_eq!(ip(&[("x-forwarded-for", "203.0.113.9")]), s("203.0.113.9"));
        // The client wrote the left entry; the proxy appended what it saw.
        assert_eq!(
            ip(&[("x-forwarded-for", "6.6.6.6, 203.0.113.9")]),
            s("203.0.113.9")
        );
        // An unparsable entry ends the walk: the last trusted hop is used, not 6.6.6.6.
        assert_eq!(
            ip(&[("x-forwarded-for", "6.6.6.6, unknown")]),
            s("127.0.0.1")
        );
        assert_eq!(
            ip(&[("x-forwarded-for", "6.6.6.6, unknown, 10.1.2.3")]),
            s("10.1.2.3")
        );
        // Trusted hops are skipped, ports and brackets are understood.
        assert_eq!(
            ip(&[("x-forwarded-for", "198.51.100.7:4711, 10.0.0.2")]),
            s("198.51.100.7")
        );
        assert_eq!(
            ip(&[("x-forwarded-for", "[2001:db8::7]:443")]),
            s("2001:db8::7")
        );
        // Several headers are one list.
        assert_eq!(
            ip(&[
                ("x-forwarded-for", "6.6.6.6"),
                ("x-forwarded-for", "192.0.2.1")
            ]),
            s("192.0.2.1")
        );
        assert_eq!(ip(&[("x-real-ip", "192.0.2.44")]), s("192.0.2.44"));
        assert_eq!(ip(&[("x-real-ip", "garbage")]), s("127.0.0.1"));
        // From an untrusted peer nothing forwarded is believed.
        let stranger: SocketAddr = "192.0.2.99:1".parse().unwrap();
        let h = headers(&[("x-forwarded-for", "1.1.1.1")]);
        assert_eq!(client_addr(&p, &h, stranger), stranger);
    }

    #[test]
    fn client_ids_are_checked() {
        let none = HeaderMap::new();
        assert!(matches!(
            client_id(true, Some("client_id="), &none),
            Err(Error::MissingClientId)
        ));
        assert!(matches!(client_id(false, None, &none), Ok(None)));
        let long = format!("client_id={}", "a".repeat(257));
        assert!(matches!(
            client_id(true, Some(&long), &none),
            Err(Error::BadClientId(_))
        ));
        assert!(matches!(
            client_id(true, Some("client_id=a%01"), &none),
            Err(Error::BadClientId(_))
        ));
        let h = headers(&[("x-client-id", " bob ")]);
        assert_eq!(client_id(true, None, &h).unwrap().as_deref(), Some("bob"));
    }
}
