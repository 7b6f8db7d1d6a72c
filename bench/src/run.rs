//! Scenario drivers of the parent process for `hold`, `evict` and `storm` (`fanout` has its
//! own file): plan the workers, move them through their phases, sample the server from /proc,
//! and turn the merged figures into the JSON result and the human summary.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::cli::{Common, EvictArgs, HoldArgs, StormArgs};
use crate::fleet::Fleet;
use crate::proto::{Kind, Report, WorkerSpec, merge_all, unix_us};
use crate::report::{connect_json, connect_line, counts_line, cpu_between, ms};
use crate::sys::sample;
use crate::target::{Endpoint, parse_url, source_ip};

/// Why a scenario did not complete.
#[derive(Debug)]
pub enum Failure {
    /// Bad arguments.
    Usage(String),
    /// The run broke off.
    Run(String),
}

impl From<String> for Failure {
    fn from(e: String) -> Failure {
        Failure::Run(e)
    }
}

/// A scenario's JSON result and human summary.
pub type Outcome = Result<(Value, String), Failure>;

/// Splits `clients` (of which the first `silent` overall are silent) over the worker processes.
pub fn plan(c: &Common, kind: Kind, clients: u64, silent: u64) -> Result<Vec<WorkerSpec>, Failure> {
    let eps: Vec<Endpoint> = c
        .url
        .split(',')
        .map(|u| parse_url(u.trim(), "ws"))
        .collect::<Result<_, _>>()
        .map_err(Failure::Usage)?;
    if clients == 0 {
        return Err(Failure::Usage("need at least one client".into()));
    }
    if let Some(path) = &c.token_secret {
        // Each worker reads the file again; checking it here turns a typo into a usage error.
        crate::token::read_secret(path).map_err(Failure::Usage)?;
    }
    let workers = c
        .workers
        .unwrap_or_else(|| clients.div_ceil(c.per_worker))
        .clamp(1, clients);
    if clients.div_ceil(workers) > 9000 {
        return Err(Failure::Usage(format!(
            "{clients} clients over {workers} workers is more than 9000 per worker"
        )));
    }
    let mut specs = Vec::new();
    let (mut first, mut silent_left) = (0, silent);
    for i in 0..workers {
        let n = clients / workers + u64::from(i < clients % workers);
        let s = (silent / workers + u64::from(i < silent % workers))
            .min(silent_left)
            .min(n);
        silent_left -= s;
        let ep = &eps[i as usize % eps.len()];
        specs.push(WorkerSpec {
            kind,
            index: i as u32,
            addr: ep.addr,
            host: ep.host.clone(),
            path: ep.path.clone(),
            source_ip: source_ip(c.source, i as u32).map_err(Failure::Usage)?,
            wave2_ip: source_ip(c.source, (workers + i) as u32).map_err(Failure::Usage)?,
            first,
            clients: n,
            silent: s,
            concurrency: c.concurrency,
            connect_timeout_ms: c.connect_timeout.as_millis() as u64,
            heartbeat_ms: 0,
            messages: 0,
            max_wait_ms: 0,
            reap_ms: 0,
            token_secret: c.token_secret.clone(),
            token_ttl_secs: c.token_ttl.as_secs(),
            per_phase: 0,
            batch: 0,
            batch_interval_ms: 0,
            migration: None,
            compression: c.compression,
            channels: 0,
            channel_prefix: String::new(),
            churn_ms: 0,
        });
        first += n;
    }
    Ok(specs)
}

/// Generous bound for a connect phase of `clients` at `per_sec`, plus the per-attempt timeout.
pub fn connect_budget(c: &Common, clients: u64) -> Duration {
    Duration::from_secs(60 + clients / 500) + c.connect_timeout * 2
}

/// Waits until every worker has connected its clients; their connect reports, merged.
pub fn connected(fleet: &mut Fleet, c: &Common, clients: u64) -> Result<Report, String> {
    let reports = fleet.phase(
        "connected",
        "connecting",
        connect_budget(c, clients),
        clients,
    )?;
    Ok(merge_all(&reports))
}

/// `tether-bench hold`.
pub fn hold(a: &HoldArgs) -> Outcome {
    let c = &a.common;
    let mut specs = plan(c, Kind::Hold, a.clients, 0)?;
    specs
        .iter_mut()
        .for_each(|s| s.heartbeat_ms = a.heartbeat.as_millis() as u64);
    let before = sample(&c.server_pid);
    let mut fleet = Fleet::spawn(&specs, "hold", c.quiet)?;
    let conn = connected(&mut fleet, c, a.clients)?;
    let connected = sample(&c.server_pid);
    fleet.send("go");
    let t0 = Instant::now();
    while t0.elapsed() < a.hold {
        let left = a.hold.saturating_sub(t0.elapsed());
        let what = format!("hold {}/{}s", t0.elapsed().as_secs(), a.hold.as_secs());
        fleet.pump(left.min(Duration::from_secs(1)), &what, a.clients)?;
    }
    let end = sample(&c.server_pid);
    fleet.end_line();
    let held = t0.elapsed().as_secs_f64();
    let fin = merge_all(&fleet.finish(Duration::from_secs(60), true)?);
    let per_conn = match (before.rss_kib, connected.rss_kib) {
        (Some(b), Some(a)) if conn.established > 0 => {
            Some((a.saturating_sub(b) * 1024) as f64 / conn.established as f64)
        }
        _ => None,
    };
    let cpu = cpu_between(&connected, &end);
    let v = json!({
        "scenario": "hold",
        "workers": specs.len(),
        "connect": connect_json(&conn, a.clients),
        "established": conn.established,
        "hold_secs": held,
        "heartbeat_secs": a.heartbeat.as_secs_f64(),
        "heartbeats_sent": fin.heartbeats_sent,
        "acks_received": fin.acks,
        "unexpected_closes": fin.unexpected_closes.values().sum::<u64>(),
        "closes_by_code": fin.unexpected_closes,
        "client_cpu_secs": fin.cpu_secs,
        "server": {
            "pid": c.server_pid,
            "rss_before_kib": before.rss_kib,
            "rss_connected_kib": connected.rss_kib,
            "rss_end_kib": end.rss_kib,
            "rss_per_conn_bytes": per_conn,
            "cpu_secs_hold": cpu,
            "cpu_percent_hold": cpu.map(|s| 100.0 * s / held),
        },
    });
    let mut out = String::from("== hold ==\n");
    connect_line(&mut out, "connect", &v["connect"]);
    let _ = writeln!(
        out,
        "held {held:.1} s: heartbeats sent {}, acks {}; unexpected closes {} ({})",
        fin.heartbeats_sent,
        fin.acks,
        v["unexpected_closes"],
        counts_line(&fin.unexpected_closes)
    );
    if !c.server_pid.is_empty() {
        let _ = writeln!(
            out,
            "server RSS: before {:?} KiB, connected {:?} KiB, end {:?} KiB; per connection {} bytes; CPU during hold {} s",
            before.rss_kib,
            connected.rss_kib,
            end.rss_kib,
            per_conn.map_or("?".into(), |b| format!("{b:.0}")),
            cpu.map_or("?".into(), |s| format!("{s:.2}")),
        );
    }
    Ok((v, out))
}

/// `tether-bench evict`.
pub fn evict(a: &EvictArgs) -> Outcome {
    let c = &a.common;
    let total = a.silent + a.healthy;
    let mut specs = plan(c, Kind::Evict, total, a.silent)?;
    for s in &mut specs {
        s.heartbeat_ms = a.heartbeat.map_or(0, |d| d.as_millis() as u64);
        s.max_wait_ms = a.max_wait.map_or(0, |d| d.as_millis() as u64);
        s.reap_ms = a.reap_ms;
    }
    let mut fleet = Fleet::spawn(&specs, "evict", c.quiet)?;
    let conn = connected(&mut fleet, c, total)?;
    fleet.send("go");
    let wait = a.max_wait.unwrap_or(Duration::from_millis(
        2 * conn.advertised_timeout_ms + a.reap_ms + 2000,
    ));
    let r = merge_all(&fleet.finish(wait + Duration::from_secs(30), false)?);
    fleet.end_line();
    let limit_ms = r.advertised_timeout_ms + a.reap_ms;
    let h = &r.evict_us;
    let v = json!({
        "scenario": "evict",
        "workers": specs.len(),
        "connect": connect_json(&conn, total),
        "silent": a.silent,
        "healthy": a.healthy,
        "evicted": r.evicted,
        "not_evicted": r.not_evicted,
        "evict_ms": {
            "min": (h.count() > 0).then(|| ms(h.min())),
            "p50": h.percentile(50.0).map(ms),
            "p99": h.percentile(99.0).map(ms),
            "max": (h.count() > 0).then(|| ms(h.max())),
        },
        "close_codes": r.evict_codes,
        "advertised_timeout_ms": r.advertised_timeout_ms,
        "reap_ms": a.reap_ms,
        "limit_ms": limit_ms,
        "late": r.late,
        "late_from_last_byte": r.late_from_last_byte,
        "client_cpu_secs": r.cpu_secs,
        "early": r.early,
        "healthy_wrongly_closed": r.healthy_closed.values().sum::<u64>(),
        "healthy_closes": r.healthy_closed,
        "heartbeats_sent": r.heartbeats_sent,
        "acks_received": r.acks,
    });
    let mut out = String::from("== evict ==\n");
    connect_line(&mut out, "connect", &v["connect"]);
    let _ = writeln!(
        out,
        "silent {}: evicted {}, not evicted {}; eviction after last byte min {} p50 {} p99 {} max {} ms \
         (advertised timeout {} ms + reap {} ms = {limit_ms} ms); late {} (counted from the welcome; {} from the last byte), early {}; ended by: {}",
        a.silent,
        r.evicted,
        r.not_evicted,
        v["evict_ms"]["min"],
        v["evict_ms"]["p50"],
        v["evict_ms"]["p99"],
        v["evict_ms"]["max"],
        r.advertised_timeout_ms,
        a.reap_ms,
        r.late,
        r.late_from_last_byte,
        r.early,
        counts_line(&r.evict_codes)
    );
    let _ = writeln!(
        out,
        "healthy {}: wrongly closed {} ({})",
        a.healthy,
        v["healthy_wrongly_closed"],
        counts_line(&r.healthy_closed)
    );
    Ok((v, out))
}

/// `tether-bench storm` (with --migrate-to: the migration of one node's clients to another).
pub fn storm(a: &StormArgs) -> Outcome {
    if let (Some(to), Some(pid)) = (&a.migrate_to, a.stop_pid) {
        return crate::migrate_run::run(a, to, pid);
    }
    let c = &a.common;
    let mut specs = plan(c, Kind::Storm, a.clients, 0)?;
    specs
        .iter_mut()
        .for_each(|s| s.max_wait_ms = a.wave_timeout.as_millis() as u64);
    let before = sample(&c.server_pid);
    let mut fleet = Fleet::spawn(&specs, "storm", c.quiet)?;
    let budget = a.wave_timeout + Duration::from_secs(30);
    let w1 = merge_all(&fleet.phase("wave1", "wave 1", budget, a.clients)?);
    let mid = sample(&c.server_pid);
    let drop_us = unix_us();
    fleet.send("go");
    let w2 = merge_all(&fleet.phase("wave2", "wave 2", budget, w1.established)?);
    let end = sample(&c.server_pid);
    let fin = fleet.finish(Duration::from_secs(60), true)?;
    let back = w2.end_us.saturating_sub(drop_us) as f64 / 1e6;
    let v = json!({
        "scenario": "storm",
        "workers": specs.len(),
        "wave1": connect_json(&w1, a.clients),
        "wave2": connect_json(&w2, w1.established),
        "established": w1.established,
        "reconnected": w2.established,
        "all_back_secs": back,
        "client_cpu_secs": merge_all(&fin).cpu_secs,
        "server": {
            "rss_before_kib": before.rss_kib,
            "rss_wave1_kib": mid.rss_kib,
            "rss_wave2_kib": end.rss_kib,
            "cpu_secs_wave2": cpu_between(&mid, &end),
        },
    });
    let mut out = String::from("== storm ==\n");
    connect_line(&mut out, "wave 1", &v["wave1"]);
    connect_line(&mut out, "wave 2", &v["wave2"]);
    let _ = writeln!(
        out,
        "all {} back {back:.2} s after the drop ({} never came back)",
        w2.established,
        w1.established.saturating_sub(w2.established)
    );
    Ok((v, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        common: Common,
    }

    #[test]
    fn plans_split_clients_and_silent_ones() {
        let c = Cli::try_parse_from(["x", "--url", "ws://127.0.0.1:9/ws"])
            .unwrap()
            .common;
        let specs = plan(&c, Kind::Evict, 19_000, 1001).unwrap();
        assert_eq!(specs.len(), 4);
        assert_eq!(specs.iter().map(|s| s.clients).sum::<u64>(), 19_000);
        assert_eq!(specs.iter().map(|s| s.silent).sum::<u64>(), 1001);
        assert_eq!(specs[1].first, specs[0].clients);
        assert_eq!(specs[3].source_ip.to_string(), "127.0.0.5");
        let c = Cli::try_parse_from(["x", "--workers", "2", "--per-worker", "9000"])
            .unwrap()
            .common;
        assert!(plan(&c, Kind::Hold, 19_000, 0).is_err());
        assert_eq!(plan(&c, Kind::Hold, 1, 0).unwrap().len(), 1);
        let bad = Cli::try_parse_from(["x", "--url", "ws://192.168.1.1/ws"])
            .unwrap()
            .common;
        assert!(matches!(
            plan(&bad, Kind::Hold, 1, 0),
            Err(Failure::Usage(_))
        ));
    }
}
