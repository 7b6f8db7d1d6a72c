//! The parent's side of `storm --migrate-to`: connect every client to node A, send `go` and
//! SIGTERM node A, wait until the clients are back on node B, and report the reconnect timeline
//! (100 ms bins since `go`), its peak, the time until all were back and how node A let its
//! clients go.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{Value, json};

use crate::cli::StormArgs;
use crate::fleet::Fleet;
use crate::proto::{Kind, Migration, Report, merge_all, unix_us};
use crate::report::{connect_json, connect_line, counts_line, cpu_between, pcts};
use crate::run::{Failure, Outcome, plan};
use crate::sys::sample;
use crate::target::parse_url;
use crate::timeline;

/// The process id to stop, checked: a real process other than this one. `kill` with 0, -1 or a
/// negative pid signals whole groups, so only pids above 1 are accepted.
fn stop_target(pid: u32) -> Result<i32, Failure> {
    let p = i32::try_from(pid)
        .ok()
        .filter(|&p| p > 1)
        .ok_or_else(|| Failure::Usage(format!("--stop-pid {pid}: not a process id")))?;
    if pid == std::process::id() {
        return Err(Failure::Usage("--stop-pid is tether-bench itself".into()));
    }
    // SAFETY: signal 0 sends nothing; it only checks that the process exists and may be signalled.
    if unsafe { libc::kill(p, 0) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(Failure::Usage(format!("--stop-pid {pid}: {e}")));
    }
    Ok(p)
}

/// Sends SIGTERM to node A.
fn terminate(pid: i32) -> Result<(), String> {
    // SAFETY: a plain kill(2) on a pid that `stop_target` checked to be a single process.
    if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(format!("cannot SIGTERM node A (pid {pid}): {e}"));
    }
    Ok(())
}

/// `tether-bench storm --migrate-to URL --stop-pid PID [--honor-hint]`.
pub fn run(a: &StormArgs, to: &str, pid: u32) -> Outcome {
    let c = &a.common;
    if c.url.contains(',') || to.contains(',') {
        return Err(Failure::Usage(
            "a migration moves one node's clients to one other: give one --url (node A, the \
             server of --stop-pid) and one --migrate-to URL (node B)"
                .into(),
        ));
    }
    let b = parse_url(to.trim(), "ws").map_err(Failure::Usage)?;
    let pid = stop_target(pid)?;
    let mut specs = plan(c, Kind::Migrate, a.clients, 0)?;
    for s in &mut specs {
        s.max_wait_ms = a.wave_timeout.as_millis() as u64;
        s.migration = Some(Migration {
            addr: b.addr,
            host: b.host.clone(),
            path: b.path.clone(),
            honor_hint: a.honor_hint,
        });
    }
    let mut fleet = Fleet::spawn(&specs, "storm", c.quiet)?;
    let budget = a.wave_timeout + Duration::from_secs(30);
    let w1 = merge_all(&fleet.phase("wave1", "wave 1", budget, a.clients)?);
    if w1.established == 0 {
        // Nobody to migrate: leave node A running rather than stop it for nothing.
        return Err(Failure::Run(format!(
            "no client connected to node A ({})",
            counts_line(&w1.failures)
        )));
    }
    let before = sample(&c.server_pid);
    let t0 = unix_us();
    fleet.send(&format!("go {t0}"));
    terminate(pid)?;
    let w2 = merge_all(&fleet.phase("wave2", "migrating", budget, w1.established)?);
    let after = sample(&c.server_pid);
    let fin = merge_all(&fleet.finish(Duration::from_secs(60), true)?);
    let mut v = figures(&w1, &w2, t0, a.clients);
    v["workers"] = specs.len().into();
    v["url"] = c.url.trim().into();
    v["migrate_to"] = to.trim().into();
    v["stop_pid"] = pid.into();
    v["honor_hint"] = a.honor_hint.into();
    v["client_cpu_secs"] = fin.cpu_secs.into();
    v["server"] =
        json!({ "pid": c.server_pid, "cpu_secs_migration": cpu_between(&before, &after) });
    let text = summary(&v, &w2);
    Ok((v, text))
}

/// The JSON figures of a migration: wave 1 (`clients` to node A), wave 2 (to node B) and the
/// timeline since `t0`, the Unix µs of `go`.
pub fn figures(w1: &Report, w2: &Report, t0: u64, clients: u64) -> Value {
    let bins = &w2.reconnects_per_100ms;
    let peak = timeline::peak(bins);
    let last_secs = (w2.established > 0).then(|| w2.end_us.saturating_sub(t0) as f64 / 1e6);
    json!({
        "scenario": "storm",
        "mode": "migrate",
        "wave1": connect_json(w1, clients),
        "wave2": connect_json(w2, w1.established),
        "established": w1.established,
        "reconnected": w2.established,
        "never_back": w1.established.saturating_sub(w2.established),
        "reconnects_per_100ms": bins,
        "peak_per_100ms": peak.map_or(0, |(_, n)| n),
        "peak_at_ms": peak.map(|(i, _)| i as u64 * timeline::BIN_US / 1000),
        "bins_with_reconnects": timeline::busy(bins),
        "all_back_secs": if w2.established == w1.established { last_secs } else { None },
        "last_back_secs": last_secs,
        "go_to_reconnected_ms": pcts(&w2.migrate_us, &[("p50", 50.0), ("p99", 99.0)]),
        "failures": w2.failures,
        "failed_attempts": w2.failures.values().sum::<u64>(),
        "gave_up": w2.gave_up,
        "shutdown_with_hint": w2.hinted,
        "just_closed": w2.just_closed,
        "hint_ms": pcts(&w2.hint_us, &[("min", 0.0), ("p50", 50.0)]),
        "ended_by": w2.ended_by,
    })
}

/// The human summary of [`figures`], with the timeline one second to a line.
pub fn summary(v: &Value, w2: &Report) -> String {
    let mut out = String::from("== storm: migration ==\n");
    connect_line(&mut out, "wave 1 (node A)", &v["wave1"]);
    connect_line(&mut out, "wave 2 (node B)", &v["wave2"]);
    let secs = |k: &str| v[k].as_f64().map_or("-".into(), |s| format!("{s:.2} s"));
    let _ = writeln!(
        out,
        "node A (pid {}) stopped at go: {} of {} back on node B, all back after {} (last after {}); \
         go to reconnected p50 {} ms p99 {} ms; wave 2 failed attempts {} ({}), gave up {}",
        v["stop_pid"],
        v["reconnected"],
        v["established"],
        secs("all_back_secs"),
        secs("last_back_secs"),
        v["go_to_reconnected_ms"]["p50"],
        v["go_to_reconnected_ms"]["p99"],
        v["failed_attempts"],
        counts_line(&w2.failures),
        v["gave_up"],
    );
    let _ = writeln!(
        out,
        "node A's connections: {} got `shutdown` with a hint (min {} ms, p50 {} ms, max {} ms), \
         {} were just closed; ended by: {}; clients honour the hint: {}",
        v["shutdown_with_hint"],
        v["hint_ms"]["min"],
        v["hint_ms"]["p50"],
        v["hint_ms"]["max"],
        v["just_closed"],
        counts_line(&w2.ended_by),
        if v["honor_hint"] == true { "yes" } else { "no" },
    );
    let bins = &w2.reconnects_per_100ms;
    match v["peak_at_ms"].as_u64() {
        Some(at) => {
            let _ = writeln!(
                out,
                "reconnects per 100 ms: peak {} at {:.1}–{:.1} s after go; {} bins with reconnects",
                v["peak_per_100ms"],
                at as f64 / 1000.0,
                (at + 100) as f64 / 1000.0,
                v["bins_with_reconnects"],
            );
        }
        None => out.push_str("reconnects per 100 ms: none\n"),
    }
    for (s, second) in bins.chunks(10).enumerate() {
        let row: Vec<String> = second.iter().map(u64::to_string).collect();
        let _ = writeln!(out, "  {s:>3} s: {}", row.join(" "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_of_a_migration() {
        let t0 = 1_000_000_000;
        let w1 = Report {
            established: 5,
            ..Report::default()
        };
        let mut w2 = Report {
            established: 4,
            end_us: t0 + 1_250_000,
            reconnects_per_100ms: vec![0, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            hinted: 4,
            just_closed: 1,
            ..Report::default()
        };
        for ms in [150, 220, 280, 1_250] {
            w2.migrate_us.record(ms * 1000);
        }
        w2.ended_by.insert("1012".into(), 5);
        w2.failures.insert("http_503".into(), 2);
        let v = figures(&w1, &w2, t0, 5);
        assert_eq!(
            (v["peak_per_100ms"].as_u64(), v["peak_at_ms"].as_u64()),
            (Some(2), Some(200))
        );
        assert_eq!(v["bins_with_reconnects"], 3);
        assert_eq!(v["never_back"], 1);
        assert!(v["all_back_secs"].is_null(), "one never came back: {v}");
        assert_eq!(v["last_back_secs"], 1.25);
        assert_eq!(v["failed_attempts"], 2);
        assert_eq!(v["go_to_reconnected_ms"]["count"], 4);
        let text = summary(&v, &w2);
        assert!(text.contains("peak 2 at 0.2–0.3 s"), "{text}");
        assert!(text.contains("    1 s: 0 0 1\n"), "{text}");
        let empty = figures(&w1, &Report::default(), t0, 5);
        assert_eq!(
            (
                empty["peak_per_100ms"].as_u64(),
                empty["peak_at_ms"].as_u64()
            ),
            (Some(0), None)
        );
        assert!(summary(&empty, &Report::default()).contains("reconnects per 100 ms: none"));
    }

    #[test]
    fn refuses_group_and_own_pids() {
        assert!(matches!(stop_target(0), Err(Failure::Usage(_))));
        assert!(matches!(stop_target(1), Err(Failure::Usage(_))));
        assert!(matches!(stop_target(u32::MAX), Err(Failure::Usage(_))));
        assert!(matches!(
            stop_target(std::process::id()),
            Err(Failure::Usage(_))
        ));
    }
}
