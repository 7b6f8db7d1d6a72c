//! `tether-bench fanout`: connect N receiving clients in the workers, then send M numbered
//! messages from the parent through the HTTP API (broadcast, or push to one client id each) at a
//! steady rate, and account for every delivery: loss, duplicates, order, latency.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::cli::FanoutArgs;
use crate::conn::field_u64;
use crate::fleet::Fleet;
use crate::http::Client;
use crate::proto::{Kind, merge_all, unix_us};
use crate::report::{connect_json, counts_line, pcts};
use crate::run::{Failure, Outcome, connected, plan};
use crate::stats::{Counts, Histogram, bump, lost};
use crate::sys::sample;
use crate::target::parse_url;

/// The JSON body of message `seq` as [`message`] makes it, its `data` filled with about `bytes`
/// bytes of players (ids, positions, hit points, teams) rather than padding: what a game state
/// push looks like, so permessage-deflate shrinks it as it would a real one. The same players
/// in every message, as in a real stream of states.
pub fn json_message(seq: u64, t_us: u64, bytes: usize) -> String {
    let head = format!(r#"{{"bench_seq":{seq},"t_us":{t_us},"players":[]}}"#).len();
    let (mut players, mut x, mut i) = (String::new(), 0x2545_f491_4f6c_dd1du64, 0);
    while head + players.len() < bytes {
        // xorshift64: varied, repeatable numbers.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let sep = if i == 0 { "" } else { "," };
        let team = if x >> 63 == 0 { "red" } else { "blue" };
        players.push_str(&format!(
            r#"{sep}{{"id":"p{:05}","x":{},"y":{},"hp":{},"team":"{team}"}}"#,
            x % 100_000,
            (x >> 17) % 4096,
            (x >> 29) % 4096,
            (x >> 41) % 101,
        ));
        i += 1;
    }
    let data = format!(r#"{{"bench_seq":{seq},"t_us":{t_us},"players":[{players}]}}"#);
    format!(r#"{{"type":"bench","data":{data}}}"#)
}

/// The JSON body of message `seq`, its `data` padded to about `bytes` bytes.
pub fn message(seq: u64, t_us: u64, bytes: usize, push_to: Option<&str>) -> String {
    let bare = format!(r#"{{"bench_seq":{seq},"t_us":{t_us},"pad":""}}"#);
    let pad = "x".repeat(bytes.saturating_sub(bare.len()));
    let data = format!(r#"{{"bench_seq":{seq},"t_us":{t_us},"pad":"{pad}"}}"#);
    match push_to {
        Some(id) => format!(r#"{{"client_id":"{id}","type":"bench","data":{data}}}"#),
        None => format!(r#"{{"type":"bench","data":{data}}}"#),
    }
}

/// A well-mixed function of `seq` (splitmix64): random-looking push targets that are the same
/// in every run, so two runs load the same client ids.
fn mix(seq: u64) -> u64 {
    let mut z = seq.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// RSS and CPU of each server process on its own (the nodes of a cluster).
fn each_pid(pids: &[u32]) -> Vec<serde_json::Value> {
    pids.iter()
        .map(|&p| {
            let s = sample(&[p]);
            json!({ "pid": p, "rss_kib": s.rss_kib, "cpu_secs": s.cpu_secs })
        })
        .collect()
}

/// Runs the scenario.
pub fn run(a: &FanoutArgs) -> Outcome {
    let c = &a.common;
    if !(a.rate > 0.0 && a.rate.is_finite()) || a.messages == 0 {
        return Err(Failure::Usage("need --rate > 0 and --messages > 0".into()));
    }
    // A broadcast is tracked per client and message; a push only per message.
    let tracked = if a.push {
        a.messages
    } else {
        a.messages.saturating_mul(a.clients)
    };
    if a.messages > 1_000_000 || tracked > 4_000_000_000 {
        return Err(Failure::Usage(
            "too many messages × clients to track".into(),
        ));
    }
    // One API base per node of a cluster: message i goes to base i mod count.
    let apis: Vec<_> = match &c.api {
        Some(list) => list
            .split(',')
            .map(|u| parse_url(u.trim(), "http"))
            .collect::<Result<_, _>>(),
        None => c
            .url
            .split(',')
            .map(|u| parse_url(u.trim(), "ws").map(|e| e.api_base()))
            .collect::<Result<_, _>>(),
    }
    .map_err(Failure::Usage)?;
    let mut specs = plan(c, Kind::Fanout, a.clients, 0)?;
    for s in &mut specs {
        s.heartbeat_ms = a.heartbeat.as_millis() as u64;
        s.messages = a.messages;
    }
    let mut fleet = Fleet::spawn(&specs, "fanout", c.quiet)?;
    let conn = connected(&mut fleet, c, a.clients)?;
    fleet.send("go");
    let established = conn.established;
    if !a.idle.is_zero() {
        // Held with heartbeats before the first send: a scale run holds, then pushes.
        fleet.pump(a.idle, "holding", established)?;
    }
    let held = each_pid(&c.server_pid);
    let mut https = apis
        .into_iter()
        .map(|api| Client::new(api, c.api_key.as_deref(), Duration::from_secs(10)))
        .collect::<Result<Vec<_>, _>>()?;
    let endpoint = if a.push {
        "/api/v1/push"
    } else {
        "/api/v1/broadcast"
    };
    let mut targets = vec![0u64; a.messages as usize];
    let (mut server_delivered, mut send_failures, mut api_us) =
        (0u64, Counts::new(), Histogram::default());
    let before = sample(&c.server_pid);
    let first_send_us = unix_us();
    let t0 = Instant::now();
    let gap = Duration::from_secs_f64(1.0 / a.rate);
    for seq in 0..a.messages {
        let slot = t0 + gap.mul_f64(seq as f64);
        if let Some(wait) = slot.checked_duration_since(Instant::now()) {
            fleet.pump(wait, "sending", established)?;
        }
        let target = if a.random_targets {
            mix(seq) % a.clients
        } else {
            seq % a.clients
        };
        let to = a.push.then(|| format!("c{target}"));
        let body = match (a.json_data, to.as_deref()) {
            (true, None) => json_message(seq, unix_us(), a.bytes),
            _ => message(seq, unix_us(), a.bytes, to.as_deref()),
        };
        let n = https.len();
        let http = &mut https[seq as usize % n];
        let sent = Instant::now();
        match http.post(endpoint, &body) {
            Ok((200, answer)) => {
                api_us.record(sent.elapsed().as_micros() as u64);
                server_delivered += field_u64(&answer, "delivered").unwrap_or(0);
                targets[seq as usize] = if a.push { 1 } else { established };
            }
            Ok((status, _)) => bump(&mut send_failures, format!("http_{status}")),
            Err(kind) => bump(&mut send_failures, kind),
        }
    }
    let send_secs = t0.elapsed().as_secs_f64();
    let n_api = https.len();
    let expected: u64 = targets.iter().sum();
    // Wait for the last deliveries: until all arrived, nothing moved for 2 s, or the drain timeout.
    let drain = Instant::now();
    let (mut last, mut moved) = (fleet.totals().2, Instant::now());
    while fleet.totals().2 < expected
        && drain.elapsed() < a.drain_timeout
        && moved.elapsed() < Duration::from_secs(2)
    {
        fleet.pump(Duration::from_millis(100), "draining", established)?;
        if fleet.totals().2 != last {
            (last, moved) = (fleet.totals().2, Instant::now());
        }
    }
    let after = sample(&c.server_pid);
    fleet.end_line();
    let r = merge_all(&fleet.finish(Duration::from_secs(60), true)?);
    let lost_n = lost(&targets, &r.unique_per_seq);
    let span = r.last_recv_us.saturating_sub(first_send_us) as f64 / 1e6;
    let rate = if span > 0.0 {
        r.received as f64 / span
    } else {
        0.0
    };
    let sent_ok = targets.iter().filter(|&&t| t > 0).count() as u64;
    let cpu = match (before.cpu_secs, after.cpu_secs) {
        (Some(b), Some(e)) => Some(e - b),
        _ => None,
    };
    // What the clients read off the wire from the connected phase to the end: the messages,
    // the server's pings and the close frames.
    let wire = r.wire_bytes.saturating_sub(conn.wire_bytes);
    let per = |x: f64| (r.received > 0).then(|| x / r.received as f64);
    let v = json!({
        "scenario": "fanout",
        "mode": if a.push { "push" } else { "broadcast" },
        "api_bases": n_api,
        "workers": specs.len(),
        "connect": connect_json(&conn, a.clients),
        "clients": a.clients,
        "established": established,
        "messages": a.messages,
        "rate": a.rate,
        "bytes": a.bytes,
        "json_data": a.json_data,
        "compression": c.compression,
        "wire_bytes": wire,
        "wire_bytes_per_delivery": per(wire as f64),
        "compressed_messages": r.compressed.saturating_sub(conn.compressed),
        "server_cpu_us_per_delivery": cpu.and_then(|s| per(s * 1e6)),
        "sent_ok": sent_ok,
        "send_failures": send_failures,
        "send_secs": send_secs,
        "expected": expected,
        "received": r.received,
        "lost": lost_n,
        "duplicated": r.duplicated,
        "out_of_order": r.out_of_order,
        "out_of_range": r.out_of_range,
        "latency_ms": pcts(&r.latency_us, &[("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p999", 99.9)]),
        "deliveries_per_sec": rate,
        "offered_deliveries_per_sec": if a.push { a.rate } else { a.rate * established as f64 },
        "delivery_span_secs": span,
        "server_delivered": server_delivered,
        "api_ms": pcts(&api_us, &[("p50", 50.0), ("p99", 99.0)]),
        "unexpected_closes": r.unexpected_closes.values().sum::<u64>(),
        "closes_by_code": r.unexpected_closes,
        "server": { "pid": c.server_pid, "cpu_secs": cpu, "rss_kib": after.rss_kib, "held": held },
        "client_cpu_secs": r.cpu_secs,
    });
    let mut out = String::from("== fanout ==\n");
    let _ = writeln!(
        out,
        "{} of {} clients connected; {} {} of {} sent OK in {send_secs:.2} s (failures: {}); API p50 {} ms p99 {} ms",
        established,
        a.clients,
        endpoint,
        sent_ok,
        a.messages,
        counts_line(&send_failures),
        v["api_ms"]["p50"],
        v["api_ms"]["p99"]
    );
    let _ = writeln!(
        out,
        "expected {expected}, received {}, lost {lost_n}, duplicated {}, out of order {}; server said delivered {server_delivered}",
        r.received, r.duplicated, r.out_of_order
    );
    let _ = writeln!(
        out,
        "CPU seconds: server {} (first send to end of drain), load-generating workers {:.2} (whole run)",
        cpu.map_or("?".into(), |s| format!("{s:.2}")),
        r.cpu_secs
    );
    let _ = writeln!(
        out,
        "wire: {wire} bytes read by the clients, {} per delivery, {} messages compressed; server CPU {} µs per delivery",
        v["wire_bytes_per_delivery"]
            .as_f64()
            .map_or("?".into(), |b| format!("{b:.0}")),
        v["compressed_messages"],
        v["server_cpu_us_per_delivery"]
            .as_f64()
            .map_or("?".into(), |u| format!("{u:.2}"))
    );
    let l = &v["latency_ms"];
    let _ = writeln!(
        out,
        "latency ms p50 {} p90 {} p99 {} p999 {} max {}; {rate:.0} deliveries/s over {span:.2} s; unexpected closes {}",
        l["p50"], l["p90"], l["p99"], l["p999"], l["max"], v["unexpected_closes"]
    );
    Ok((v, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_padded_json() {
        let m = message(7, 1_700_000_000_000_000, 100, None);
        let v: serde_json::Value = serde_json::from_str(&m).unwrap();
        assert_eq!(v["type"], "bench");
        assert_eq!(v["data"].to_string().len(), 100);
        assert_eq!(field_u64(&m, "bench_seq"), Some(7));
        let j = json_message(3, 4, 2048);
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert!(
            (2048..2200).contains(&v["data"].to_string().len()),
            "{}",
            j.len()
        );
        assert_eq!(
            (field_u64(&j, "bench_seq"), field_u64(&j, "t_us")),
            (Some(3), Some(4))
        );
        let p: serde_json::Value = serde_json::from_str(&message(1, 2, 0, Some("c3"))).unwrap();
        assert_eq!(
            (p["client_id"].as_str(), p["data"]["pad"].as_str()),
            (Some("c3"), Some(""))
        );
    }
}
