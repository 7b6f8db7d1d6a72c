//! The live dashboard's data: one sample of the server's counters per second, for the last ten
//! minutes, taken by the reaper (which owns time) and served as JSON to `static/dashboard.html`.

use std::collections::VecDeque;
use std::fmt::Write;
use std::time::Duration;

use parking_lot::Mutex;

use crate::metrics::Totals;
use crate::protocol::json_str;

/// Samples kept: ten minutes at one a second.
pub const SAMPLES: usize = 600;
/// Least time between two samples.
pub const EVERY: Duration = Duration::from_secs(1);

/// One moment.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// Wall-clock time, Unix milliseconds.
    at_ms: u64,
    /// Live sessions.
    connections: u64,
    /// Counters at that time.
    totals: Totals,
}

/// The sample ring.
#[derive(Default)]
pub struct Samples {
    /// Oldest first.
    ring: Mutex<VecDeque<Sample>>,
}

impl Samples {
    /// Records a sample unless the last one is younger than [`EVERY`].
    pub fn record(&self, connections: usize, totals: Totals) {
        let at_ms = crate::clock::wall_ms();
        let mut ring = self.ring.lock();
        if ring
            .back()
            .is_some_and(|s| at_ms.saturating_sub(s.at_ms) < EVERY.as_millis() as u64)
        {
            return;
        }
        if ring.len() == SAMPLES {
            ring.pop_front();
        }
        ring.push_back(Sample {
            at_ms,
            connections: connections as u64,
            totals,
        });
    }

    /// `{"node", "samples": [...]}`: per sample its time, the live sessions, and the counters'
    /// increase since the previous sample (per second rates, as the samples are a second apart).
    #[cfg(test)]
    pub fn json(&self, node: &str) -> String {
        self.json_with(node, "")
    }

    /// [`Samples::json`] with more fields (each with its leading comma) before the closing brace.
    pub fn json_with(&self, node: &str, more: &str) -> String {
        let ring = self.ring.lock();
        let mut out = format!("{{\"node\":{},\"samples\":[", json_str(node));
        let mut prev: Option<&Sample> = None;
        for s in ring.iter() {
            let Some(p) = prev.replace(s) else {
                continue;
            };
            if !out.ends_with('[') {
                out.push(',');
            }
            rates(&mut out, s, p);
        }
        out.push(']');
        out.push_str(more);
        out.push('}');
        out
    }

    /// The newest sample as one JSON object, as in [`Samples::json`]; what a node shares with
    /// the cluster's dashboards.
    pub fn latest(&self) -> Option<String> {
        let ring = self.ring.lock();
        let n = ring.len();
        let (p, s) = (ring.get(n.checked_sub(2)?)?, ring.get(n - 1)?);
        let mut out = String::new();
        rates(&mut out, s, p);
        Some(out)
    }
}

/// One sample `s` as rates since `p`.
fn rates(out: &mut String, s: &Sample, p: &Sample) {
    let secs = (s.at_ms.saturating_sub(p.at_ms) as f64 / 1000.0).max(0.001);
    let rate = |now: u64, then: u64| now.saturating_sub(then) as f64 / secs;
    let (a, b) = (&s.totals, &p.totals);
    let _ = write!(
        out,
        "{{\"t\":{},\"connections\":{},\"connects\":{:.1},\"disconnects\":{:.1},\"messages_in\":{:.1},\"messages_out\":{:.1},\"evictions\":{:.1},\"slow_consumers\":{:.1},\"refusals\":{:.1}}}",
        s.at_ms,
        s.connections,
        rate(a.accepted, b.accepted),
        rate(a.closed, b.closed),
        rate(a.received, b.received),
        rate(a.sent, b.sent),
        rate(a.evicted, b.evicted),
        rate(a.slow_consumers, b.slow_consumers),
        rate(a.refused, b.refused)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_become_rates_and_the_ring_is_bounded() {
        let s = Samples::default();
        {
            let mut ring = s.ring.lock();
            for i in 0..(SAMPLES as u64 + 10) {
                ring.push_back(Sample {
                    at_ms: 1_000 * i,
                    connections: i,
                    totals: Totals {
                        accepted: 3 * i,
                        ..Totals::default()
                    },
                });
                if ring.len() > SAMPLES {
                    ring.pop_front();
                }
            }
        }
        let v: serde_json::Value = serde_json::from_str(&s.json("n1")).unwrap();
        let samples = v["samples"].as_array().unwrap();
        assert_eq!(samples.len(), SAMPLES - 1, "one rate per pair of samples");
        assert_eq!(samples[0]["connects"], 3.0);
        assert_eq!(v["node"], "n1");
        s.record(7, Totals::default());
        assert_eq!(s.ring.lock().len(), SAMPLES, "bounded");
    }
}
