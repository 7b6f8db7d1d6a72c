//! The parent's side of `presence` and `lobby` (channel presence, docs/protocol.md §14): plan
//! the workers (see `lobby.rs` for what their clients do), move them through their phases, and
//! report.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::cli::{Common, LobbyArgs, PresenceArgs};
use crate::fleet::Fleet;
use crate::http::Client;
use crate::proto::{Kind, merge_all};
use crate::report::{connect_json, connect_line, ms, pcts};
use crate::run::{Failure, Outcome, connected, plan};
use crate::stats::Histogram;
use crate::sys::{Sample, sample};
use crate::target::{first_url, parse_url};

/// The API client of the first node (or `--api`).
fn api(c: &Common) -> Result<Client, Failure> {
    let base = match &c.api {
        Some(u) => parse_url(first_url(u), "http").map_err(Failure::Usage)?,
        None => parse_url(first_url(&c.url), "ws")
            .map_err(Failure::Usage)?
            .api_base(),
    };
    Ok(Client::new(
        base,
        c.api_key.as_deref(),
        Duration::from_secs(30),
    )?)
}

/// Percent-encodes a channel name for a path (names are bench-chosen: only `/ % ? # space`
/// and non-ASCII need it).
fn path_part(name: &str) -> String {
    let mut out = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~:*".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// `tether-bench presence`: N subscribers of one channel, then the presence query timed.
pub fn presence(a: &PresenceArgs) -> Outcome {
    let c = &a.common;
    let mut http = api(c)?;
    let mut specs = plan(c, Kind::Lobby, a.clients, 0)?;
    for s in &mut specs {
        s.channels = 1;
        s.channel_prefix = a.channel.clone();
    }
    let channel = format!("{}0", a.channel);
    let mut fleet = Fleet::spawn(&specs, "presence", c.quiet)?;
    let conn = connected(&mut fleet, c, a.clients)?;
    fleet.send("go");
    let path = format!(
        "/api/v1/channels/{}/presence?limit={}",
        path_part(&channel),
        a.limit
    );
    let mut took = Histogram::default();
    let (mut bytes, mut sessions, mut errors) = (0, Value::Null, 0u64);
    for i in 0..a.requests {
        let t = Instant::now();
        match http.get(&path) {
            Ok((200, body)) => {
                took.record(t.elapsed().as_micros() as u64);
                bytes = body.len();
                if i == 0 {
                    let v: Value = serde_json::from_str(&body).unwrap_or_default();
                    sessions = v["sessions"].clone();
                }
            }
            Ok(_) | Err(_) => errors += 1,
        }
        fleet.drain()?;
    }
    let fin = merge_all(&fleet.finish(Duration::from_secs(60), true)?);
    let v = json!({
        "scenario": "presence",
        "workers": specs.len(),
        "connect": connect_json(&conn, a.clients),
        "channel": channel,
        "sessions_answered": sessions,
        "requests": a.requests,
        "errors": errors,
        "answer_bytes": bytes,
        "latency_ms": pcts(&took, &[("p50", 50.0), ("p99", 99.0), ("max", 100.0)]),
        "unexpected_closes": fin.unexpected_closes.values().sum::<u64>(),
    });
    let mut out = String::from("== presence ==\n");
    connect_line(&mut out, "connect", &v["connect"]);
    let _ = writeln!(
        out,
        "GET {path} x{}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; {bytes} bytes; sessions {sessions}; errors {errors}",
        a.requests,
        ms(took.percentile(50.0).unwrap_or(0)),
        ms(took.percentile(99.0).unwrap_or(0)),
        ms(took.max()),
    );
    Ok((v, out))
}

/// `tether-bench lobby`: clients join and leave presence channels at random; one observer per
/// channel checks that each `join` and `leave` arrives exactly once.
pub fn lobby(a: &LobbyArgs) -> Outcome {
    let c = &a.common;
    if a.clients <= a.channels {
        return Err(Failure::Usage(
            "need more clients than channels: the first one per channel observes it".into(),
        ));
    }
    let mut specs = plan(c, Kind::Lobby, a.clients, 0)?;
    for s in &mut specs {
        s.channels = a.channels;
        s.channel_prefix = a.prefix.clone();
        s.churn_ms = a.churn.as_millis().max(1) as u64;
    }
    let before = sample(&c.server_pid);
    let mut fleet = Fleet::spawn(&specs, "lobby", c.quiet)?;
    let conn = connected(&mut fleet, c, a.clients)?;
    let joined = sample(&c.server_pid);
    fleet.send("go");
    let t0 = Instant::now();
    while t0.elapsed() < a.duration {
        let left = a.duration.saturating_sub(t0.elapsed());
        let what = format!("churn {}/{}s", t0.elapsed().as_secs(), a.duration.as_secs());
        fleet.pump(left.min(Duration::from_secs(1)), &what, a.clients)?;
    }
    // Everyone stays in their lobby while the deliveries queued during the churn drain:
    // sampled then, what connections and their subscriptions hold (during the churn the
    // sample would mostly be queued frames).
    fleet.send("go");
    fleet.pump(a.settle, "holding", a.clients)?;
    let churned = sample(&c.server_pid);
    // Everyone leaves; after the grace every observer should hold its own id only.
    fleet.send("go");
    fleet.pump(a.settle, "leaving", a.clients)?;
    fleet.end_line();
    let fin = merge_all(&fleet.finish(Duration::from_secs(60), true)?);
    let exact =
        fin.presence_duplicates == 0 && fin.presence_unmatched == 0 && fin.presence_left_over == 0;
    let v = json!({
        "scenario": "lobby",
        "workers": specs.len(),
        "connect": connect_json(&conn, a.clients),
        "channels": a.channels,
        "churn_secs": a.duration.as_secs_f64(),
        "churn_ops": fin.churn_ops,
        "events": fin.presence_events,
        "duplicates": fin.presence_duplicates,
        "unmatched_leaves": fin.presence_unmatched,
        "missed_leaves": fin.presence_left_over,
        "exactly_once": exact,
        "unexpected_closes": fin.unexpected_closes.values().sum::<u64>(),
        "server_rss_kib": {"before": before.rss_kib, "connected": joined.rss_kib, "held_after_churn": churned.rss_kib},
        "rss_bytes_per_connection": {
            "connected": per_conn(&before, &joined, a.clients),
            "held_after_churn": per_conn(&before, &churned, a.clients),
        },
    });
    let mut out = String::from("== lobby ==\n");
    connect_line(&mut out, "connect", &v["connect"]);
    let _ = writeln!(
        out,
        "{} joins/leaves sent over {:.0} s in {} channels; observers got {} events: duplicates {}, unmatched leaves {}, missed leaves {} => exactly once: {}",
        fin.churn_ops,
        a.duration.as_secs_f64(),
        a.channels,
        fin.presence_events,
        fin.presence_duplicates,
        fin.presence_unmatched,
        fin.presence_left_over,
        if exact { "yes" } else { "NO" },
    );
    if let (Some(b), Some(j), Some(e)) = (before.rss_kib, joined.rss_kib, churned.rss_kib) {
        let _ = writeln!(
            out,
            "server RSS: {b} KiB before, {j} KiB connected, {e} KiB held in lobbies after the churn => {} / {} bytes per connection",
            v["rss_bytes_per_connection"]["connected"],
            v["rss_bytes_per_connection"]["held_after_churn"],
        );
    }
    Ok((v, out))
}

/// Server RSS growth from `from` to `to` per connection, in bytes (None without samples).
fn per_conn(from: &Sample, to: &Sample, clients: u64) -> Option<u64> {
    let (a, b) = (from.rss_kib?, to.rss_kib?);
    Some(b.saturating_sub(a) * 1024 / clients.max(1))
}
