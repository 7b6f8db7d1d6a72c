//! The client address behind a proxy (docs/protocol.md §1), through real sockets: `X-Forwarded-For` is
//! believed only from `trusted_proxies`, walked right to left, and an entry that does not parse
//! stops the walk, so a client cannot inject an address.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use common::*;

const UNTRUSTED: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
/// The API key: with a trusted proxy on 127.0.0.1, the test's own API calls from there need it.
const KEY: &str = "forwarded-test-key";

fn behind_proxy() -> tether::Config {
    config(&[("trusted_proxies", "127.0.0.1"), ("api_key", KEY)])
}

/// The `remote_addr` of `client_id`'s only session, as an IP address.
async fn remote_ip(addr: SocketAddr, client_id: &str) -> IpAddr {
    let path = format!("/api/v1/sessions?client_id={client_id}");
    let auth = format!("Bearer {KEY}");
    let (_, _, body) = http(addr, "GET", &path, &[("Authorization", &auth)], "").await;
    let list = json(&body);
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    let a = list[0]["remote_addr"].as_str().unwrap();
    a.parse::<IpAddr>()
        .or_else(|_| a.parse::<SocketAddr>().map(|s| s.ip()))
        .unwrap_or_else(|_| panic!("remote_addr is not an address: {a}"))
}

/// Connects from `src` as `client_id` with the given forwarded header; returns the address
/// tether recorded.
async fn seen_as(s: &TestServer, src: IpAddr, client_id: &str, xff: &str) -> IpAddr {
    let path = format!("/ws?client_id={client_id}");
    let mut ws = connect_from(src, s.addr, &path, &[("X-Forwarded-For", xff)]).await;
    assert_eq!(next_json(&mut ws).await["type"], "welcome");
    let ip = remote_ip(s.addr, client_id).await;
    drop(ws);
    ip
}

#[tokio::test]
async fn a_trusted_proxy_forwards_the_client_address_in_every_format() {
    let s = start(behind_proxy()).await;
    let local = IpAddr::V4(Ipv4Addr::LOCALHOST);
    for (i, (xff, want)) in [
        ("203.0.113.9", "203.0.113.9"),
        ("203.0.113.9:4711", "203.0.113.9"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("2001:db8::2", "2001:db8::2"),
        // The client's own claim on the left is not believed; the rightmost untrusted hop is.
        ("6.6.6.6, 198.51.100.7", "198.51.100.7"),
        // A trusted proxy's own entry is skipped.
        ("198.51.100.8, 127.0.0.1", "198.51.100.8"),
        ("198.51.100.9,127.0.0.1", "198.51.100.9"),
    ]
    .into_iter()
    .enumerate()
    {
        let got = seen_as(&s, local, &format!("fmt{i}"), xff).await;
        assert_eq!(
            got,
            want.parse::<IpAddr>().unwrap(),
            "X-Forwarded-For: {xff}"
        );
    }
    stop(s).await;
}

#[tokio::test]
async fn an_unparsable_entry_stops_the_walk_at_the_last_trusted_hop() {
    let s = start(behind_proxy()).await;
    let local = IpAddr::V4(Ipv4Addr::LOCALHOST);
    // The finding of issue 9: "unknown" used to be skipped and 6.6.6.6 believed.
    for (i, xff) in [
        "6.6.6.6, unknown",
        "6.6.6.6, _hidden",
        "6.6.6.6, 1.2.3.4.5",
        "6.6.6.6, ",
    ]
    .into_iter()
    .enumerate()
    {
        let got = seen_as(&s, local, &format!("spoof{i}"), xff).await;
        assert_eq!(got, local, "X-Forwarded-For: {xff}");
    }
    stop(s).await;
}

#[tokio::test]
async fn an_untrusted_peer_cannot_forward_an_address() {
    let s = start(behind_proxy()).await;
    let got = seen_as(&s, UNTRUSTED, "direct", "203.0.113.9").await;
    assert_eq!(got, UNTRUSTED);
    let path = "/ws?client_id=real-ip";
    let mut ws = connect_from(UNTRUSTED, s.addr, path, &[("X-Real-IP", "203.0.113.8")]).await;
    assert_eq!(next_json(&mut ws).await["type"], "welcome");
    assert_eq!(remote_ip(s.addr, "real-ip").await, UNTRUSTED);
    stop(s).await;
}
