//! `tether-bench connect-load`: does a busy server still accept quickly? Hold N clients, then
//! connect M new ones in small paced batches twice in one sitting: first while the server is
//! idle, then while the bench broadcasts to everyone at R/s through the HTTP API. The new
//! clients run in a probe worker of their own ([`crate::probe`]); each phase's clients are
//! closed before the next, so both phases climb from N to N + M connections.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::cli::ConnectLoadArgs;
use crate::conn::field_u64;
use crate::fanout::message;
use crate::fleet::Fleet;
use crate::http::Client;
use crate::probe::PHASES;
use crate::proto::{Kind, Report, merge_all, unix_us};
use crate::report::{connect_json, connect_line, counts_line, cpu_between, pcts};
use crate::run::{Failure, Outcome, connected, plan};
use crate::stats::{Counts, Histogram, bump};
use crate::sys::sample;
use crate::target::{first_url, parse_url, source_ip};

/// Broadcasts paced at a fixed rate, and what the API answered.
struct Broadcaster {
    /// The API connection.
    http: Client,
    /// Time between broadcasts.
    gap: Duration,
    /// `data` size of each.
    bytes: usize,
    /// When the next one is due.
    due: Instant,
    /// Sequence number of the next one.
    seq: u64,
    /// Answered 200.
    sent_ok: u64,
    /// The sum of their `delivered`.
    delivered: u64,
    /// Failures by kind.
    failures: Counts,
    /// API call latency.
    api_us: Histogram,
}

impl Broadcaster {
    /// Broadcasts on schedule until `done(fleet)` holds or `deadline` passes, pumping `fleet`
    /// (and draining `other`) between sends; returns how many were sent.
    fn run(
        &mut self,
        fleet: &mut Fleet,
        other: &mut Fleet,
        what: &str,
        total: u64,
        deadline: Instant,
        done: impl Fn(&Fleet) -> bool,
    ) -> Result<u64, String> {
        let before = self.seq;
        while !done(fleet) && Instant::now() < deadline {
            let now = Instant::now();
            if now < self.due {
                fleet.pump((self.due - now).min(Duration::from_millis(50)), what, total)?;
                other.drain()?;
                continue;
            }
            // A send more than a slot late restarts the schedule instead of bunching sends.
            self.due = if now > self.due + self.gap {
                now + self.gap
            } else {
                self.due + self.gap
            };
            let body = message(self.seq, unix_us(), self.bytes, None);
            self.seq += 1;
            let sent = Instant::now();
            match self.http.post("/api/v1/broadcast", &body) {
                Ok((200, answer)) => {
                    self.api_us.record(sent.elapsed().as_micros() as u64);
                    self.sent_ok += 1;
                    self.delivered += field_u64(&answer, "delivered").unwrap_or(0);
                }
                Ok((status, _)) => bump(&mut self.failures, format!("http_{status}")),
                Err(kind) => bump(&mut self.failures, kind),
            }
        }
        Ok(self.seq - before)
    }
}

/// The figures of one phase of new clients (JSON).
fn phase_json(r: &Report, attempted: u64, secs: f64) -> Value {
    let p = |h| pcts(h, &[("p50", 50.0), ("p90", 90.0), ("p99", 99.0)]);
    json!({
        "attempted": attempted,
        "established": r.established,
        "failed": attempted.saturating_sub(r.established),
        "failures": r.failures,
        "phase_secs": secs,
        "handshake_ms": p(&r.handshake_us),
        "upgrade_ms": p(&r.upgrade_us),
        "tcp_connect_ms": p(&r.tcp_us),
    })
}

/// `a / b` of two JSON numbers, when both are there and `b` is not 0.
fn ratio(a: &Value, b: &Value) -> Option<f64> {
    let (a, b) = (a.as_f64()?, b.as_f64()?);
    (b > 0.0).then(|| a / b)
}

/// Runs the scenario.
pub fn run(a: &ConnectLoadArgs) -> Outcome {
    let c = &a.common;
    if !(0.01..=10_000.0).contains(&a.broadcast_rate) || a.new_clients == 0 {
        return Err(Failure::Usage(
            "need --broadcast-rate from 0.01 to 10000 and --new-clients > 0".into(),
        ));
    }
    if a.new_clients > 9000 / 2 {
        return Err(Failure::Usage(
            "--new-clients: both phases share one worker, so at most 4500".into(),
        ));
    }
    let api = match &c.api {
        Some(u) => parse_url(u, "http").map_err(Failure::Usage)?,
        None => parse_url(first_url(&c.url), "ws")
            .map_err(Failure::Usage)?
            .api_base(),
    };
    let mut specs = plan(c, Kind::Hold, a.clients, 0)?;
    for s in &mut specs {
        s.heartbeat_ms = a.heartbeat.as_millis() as u64;
    }
    let mut probe = specs[0].clone();
    let src = source_ip(c.source, specs.len() as u32).map_err(Failure::Usage)?;
    probe.kind = Kind::Probe;
    probe.index = specs.len() as u32;
    (probe.source_ip, probe.wave2_ip) = (src, src);
    (probe.first, probe.clients) = (a.clients, 2 * a.new_clients);
    probe.per_phase = a.new_clients;
    probe.batch = a.batch;
    probe.batch_interval_ms = a.batch_interval.as_millis() as u64;
    let mut http = Client::new(api, c.api_key.as_deref(), Duration::from_secs(10))?;
    // Fail on an unreachable or refusing API before minutes of connecting, not after.
    match http.post("/api/v1/broadcast", r#"{"type":"bench_check","data":{}}"#) {
        Ok((200, _)) => {}
        Ok((status, body)) => return Err(Failure::Run(format!("broadcast API: {status} {body}"))),
        Err(kind) => return Err(Failure::Run(format!("broadcast API: {kind}"))),
    }

    let before = sample(&c.server_pid);
    let mut held = Fleet::spawn(&specs, "connect-load", c.quiet)?;
    let conn = connected(&mut held, c, a.clients)?;
    held.send("go");
    let held_sample = sample(&c.server_pid);
    let mut probes = Fleet::spawn(std::slice::from_ref(&probe), "new clients", c.quiet)?;
    let batches = a.new_clients.div_ceil(a.batch);
    let budget = (a.batch_interval + c.connect_timeout) * batches as u32 + Duration::from_secs(30);
    let m = a.new_clients;

    let idle_cpu0 = sample(&c.server_pid);
    let t = Instant::now();
    probes.send("go");
    let idle = merge_all(&probes.phase(PHASES[0], "idle phase", budget, m)?);
    let idle_secs = t.elapsed().as_secs_f64();
    let idle_cpu = cpu_between(&idle_cpu0, &sample(&c.server_pid));
    held.drain()?;
    probes.send("close");
    probes.phase("closed", "closing", budget, m)?;
    held.pump(a.settle, "settling", a.clients)?;

    let gap = Duration::from_secs_f64(1.0 / a.broadcast_rate);
    let mut b = Broadcaster {
        http,
        gap,
        bytes: a.bytes,
        due: Instant::now(),
        seq: 0,
        sent_ok: 0,
        delivered: 0,
        failures: Counts::new(),
        api_us: Histogram::default(),
    };
    let warm_until = Instant::now() + a.settle;
    b.run(
        &mut held,
        &mut probes,
        "broadcasting",
        a.clients,
        warm_until,
        |_| false,
    )?;
    let loaded_cpu0 = sample(&c.server_pid);
    let t = Instant::now();
    probes.send("go");
    let during = b.run(&mut probes, &mut held, "loaded phase", m, t + budget, |f| {
        f.reports(PHASES[1]).is_some()
    })?;
    let loaded_secs = t.elapsed().as_secs_f64();
    let loaded_cpu = cpu_between(&loaded_cpu0, &sample(&c.server_pid));
    let loaded = merge_all(&probes.phase(PHASES[1], "loaded phase", Duration::ZERO, m)?);
    let end = sample(&c.server_pid);

    // The held clients' last deliveries: until they stop arriving, at most a few seconds.
    let (mut last, mut moved, drain) = (held.totals().2, Instant::now(), Instant::now());
    while drain.elapsed() < Duration::from_secs(5) && moved.elapsed() < Duration::from_secs(1) {
        held.pump(Duration::from_millis(100), "draining", a.clients)?;
        if held.totals().2 != last {
            (last, moved) = (held.totals().2, Instant::now());
        }
    }
    held.end_line();
    let probe_fin = merge_all(&probes.finish(Duration::from_secs(30), true)?);
    let fin = merge_all(&held.finish(Duration::from_secs(60), true)?);

    let mut idle_v = phase_json(&idle, m, idle_secs);
    idle_v["server_cpu_secs"] = json!(idle_cpu);
    let mut loaded_v = phase_json(&loaded, m, loaded_secs);
    loaded_v["server_cpu_secs"] = json!(loaded_cpu);
    loaded_v["broadcasts_during_phase"] = json!(during);
    let hs = |v: &Value, p: &str| v["handshake_ms"][p].clone();
    let p99_ratio = ratio(&hs(&loaded_v, "p99"), &hs(&idle_v, "p99"));
    let p50_ratio = ratio(&hs(&loaded_v, "p50"), &hs(&idle_v, "p50"));
    let v = json!({
        "scenario": "connect-load",
        "workers": specs.len() + 1,
        "connect": connect_json(&conn, a.clients),
        "held": conn.established,
        "new_clients_per_phase": m,
        "batch": a.batch,
        "batch_interval_ms": a.batch_interval.as_millis() as u64,
        "broadcast_rate": a.broadcast_rate,
        "bytes": a.bytes,
        "idle": idle_v,
        "loaded": loaded_v,
        "handshake_p99_loaded_over_idle": p99_ratio,
        "handshake_p50_loaded_over_idle": p50_ratio,
        "broadcast": {
            "sent_ok": b.sent_ok,
            "failures": b.failures,
            "api_ms": pcts(&b.api_us, &[("p50", 50.0), ("p99", 99.0)]),
            "server_delivered": b.delivered,
            "held_received": fin.received,
            "held_latency_ms": pcts(&fin.latency_us, &[("p50", 50.0), ("p99", 99.0)]),
        },
        "unexpected_closes": fin.unexpected_closes.values().sum::<u64>(),
        "closes_by_code": fin.unexpected_closes,
        "new_clients_closed_early": probe_fin.unexpected_closes,
        "client_cpu_secs": fin.cpu_secs + probe_fin.cpu_secs,
        "server": {
            "pid": c.server_pid,
            "rss_before_kib": before.rss_kib,
            "rss_held_kib": held_sample.rss_kib,
            "rss_end_kib": end.rss_kib,
        },
    });
    let text = summary(&v);
    Ok((v, text))
}

/// The human summary of a connect-load result.
fn summary(v: &Value) -> String {
    let mut out = String::from("== connect-load ==\n");
    connect_line(&mut out, "held clients", &v["connect"]);
    for name in PHASES {
        let p = &v[name];
        let (h, u) = (&p["handshake_ms"], &p["upgrade_ms"]);
        let failures: Counts = serde_json::from_value(p["failures"].clone()).unwrap_or_default();
        let _ = writeln!(
            out,
            "{name:>6}: {} / {} new clients in {:.2} s; handshake (to welcome) p50 {} p90 {} p99 {} max {} ms; \
             to 101 p50 {} p99 {} ms; failures: {}",
            p["established"],
            p["attempted"],
            p["phase_secs"].as_f64().unwrap_or(0.0),
            h["p50"],
            h["p90"],
            h["p99"],
            h["max"],
            u["p50"],
            u["p99"],
            counts_line(&failures),
        );
    }
    let bc = &v["broadcast"];
    let _ = writeln!(
        out,
        "broadcasts at {}/s: {} during the loaded phase, {} OK in all, API p50 {} p99 {} ms; held clients received {} (server said {}), latency p50 {} p99 {} ms",
        v["broadcast_rate"],
        v["loaded"]["broadcasts_during_phase"],
        bc["sent_ok"],
        bc["api_ms"]["p50"],
        bc["api_ms"]["p99"],
        bc["held_received"],
        bc["server_delivered"],
        bc["held_latency_ms"]["p50"],
        bc["held_latency_ms"]["p99"],
    );
    let r = |k: &str| v[k].as_f64().map_or("?".into(), |x| format!("{x:.2}"));
    let _ = writeln!(
        out,
        "handshake p99 loaded / idle = {}, p50 loaded / idle = {}; held clients closed unexpectedly: {}",
        r("handshake_p99_loaded_over_idle"),
        r("handshake_p50_loaded_over_idle"),
        v["unexpected_closes"],
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_need_both_figures() {
        assert_eq!(ratio(&json!(3.0), &json!(1.5)), Some(2.0));
        assert_eq!(ratio(&json!(3.0), &json!(0.0)), None);
        assert_eq!(ratio(&Value::Null, &json!(1.0)), None);
        let mut r = Report::default();
        r.handshake_us.record(1500);
        r.established = 1;
        let v = phase_json(&r, 2, 0.5);
        assert_eq!(
            (v["failed"].as_u64(), v["handshake_ms"]["p99"].as_f64()),
            (Some(1), Some(1.5))
        );
        assert!(summary(&json!({"idle": v, "loaded": v})).contains("idle: 1 / 2"));
    }
}
