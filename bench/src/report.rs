//! Figures turned into the JSON results and the human summaries: percentiles in milliseconds,
//! counts by kind, the connect figures every scenario reports, CPU time between samples.

use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::proto::Report;
use crate::stats::{Counts, Histogram};
use crate::sys::Sample;

/// Milliseconds, 2 decimals, from µs.
pub fn ms(us: u64) -> f64 {
    (us as f64 / 10.0).round() / 100.0
}

/// Percentiles of a µs histogram, in ms.
pub fn pcts(h: &Histogram, ps: &[(&str, f64)]) -> Value {
    let mut m = serde_json::Map::new();
    for (name, p) in ps {
        m.insert((*name).into(), json!(h.percentile(*p).map(ms)));
    }
    m.insert("max".into(), json!((h.count() > 0).then(|| ms(h.max()))));
    m.insert("count".into(), json!(h.count()));
    Value::Object(m)
}

/// "a=1, b=2" or "none".
pub fn counts_line(c: &Counts) -> String {
    if c.is_empty() {
        return "none".into();
    }
    c.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The connect figures of one phase (JSON).
pub fn connect_json(r: &Report, clients: u64) -> Value {
    let secs = r.connect_secs();
    json!({
        "clients": clients,
        "established": r.established,
        "failed": clients - r.established.min(clients),
        "failed_attempts": r.failures.values().sum::<u64>(),
        "failures": r.failures,
        "connect_secs": secs,
        "connect_rate": if secs > 0.0 { r.established as f64 / secs } else { 0.0 },
        "handshake_ms": pcts(&r.handshake_us, &[("p50", 50.0), ("p99", 99.0)]),
    })
}

/// Appends the human line of [`connect_json`] figures.
pub fn connect_line(out: &mut String, name: &str, v: &Value) {
    let _ = writeln!(
        out,
        "{name}: {} / {} established in {:.2} s ({:.0} conn/s), handshake p50 {} ms p99 {} ms; failures: {}",
        v["established"],
        v["clients"],
        v["connect_secs"].as_f64().unwrap_or(0.0),
        v["connect_rate"].as_f64().unwrap_or(0.0),
        v["handshake_ms"]["p50"],
        v["handshake_ms"]["p99"],
        v["failures"]
            .as_object()
            .map_or("none".into(), |m| if m.is_empty() {
                "none".into()
            } else {
                m.iter()
                    .map(|(k, n)| format!("{k}={n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }),
    );
}

/// CPU seconds between two samples.
pub fn cpu_between(a: &Sample, b: &Sample) -> Option<f64> {
    Some(b.cpu_secs? - a.cpu_secs?)
}
