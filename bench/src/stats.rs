//! Statistics the load tool merges across workers: latency histograms (HdrHistogram), per-client
//! sequence accounting (loss, duplicates, reordering) and counters by error kind.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Significant decimal digits kept: values below 2048 µs are exact, larger ones within 0.1 %.
const SIGFIG: u8 = 3;

/// A latency histogram in microseconds (HdrHistogram, growing to whatever range it is given).
/// Serialized sparsely, as (value, count) pairs, so a worker ships it as part of one JSON line.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(from = "Recorded", into = "Recorded")]
pub struct Histogram(hdrhistogram::Histogram<u64>);

/// The wire form of a [`Histogram`]: each non-empty bucket as (a value in it, its count).
#[derive(Serialize, Deserialize)]
struct Recorded {
    /// Non-empty buckets, ascending.
    #[serde(default)]
    values: Vec<(u64, u64)>,
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram(
            hdrhistogram::Histogram::new(SIGFIG)
                .expect("3 significant digits is within hdrhistogram's 0..=5"),
        )
    }
}

impl From<Recorded> for Histogram {
    fn from(r: Recorded) -> Histogram {
        let mut h = Histogram::default();
        for (v, c) in r.values {
            h.record_n(v, c);
        }
        h
    }
}

impl From<Histogram> for Recorded {
    fn from(h: Histogram) -> Recorded {
        let values =
            h.0.iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect();
        Recorded { values }
    }
}

impl Histogram {
    /// Records one value (values past the range it can grow to count as its largest).
    pub fn record(&mut self, v: u64) {
        self.record_n(v, 1);
    }

    /// Records `n` of value `v`. `record_n` grows the range; only a value past the largest range
    /// the histogram can have fails, and that one is clamped instead.
    fn record_n(&mut self, v: u64, n: u64) {
        if self.0.record_n(v, n).is_err() {
            self.0.saturating_record_n(v, n);
        }
    }

    /// Adds another histogram's values to this one.
    pub fn merge(&mut self, other: &Histogram) {
        for v in other.0.iter_recorded() {
            self.record_n(v.value_iterated_to(), v.count_at_value());
        }
    }

    /// Number of recorded values.
    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// The smallest recorded value (0 when empty).
    pub fn min(&self) -> u64 {
        self.0.min()
    }

    /// The largest recorded value, to the histogram's precision (0 when empty).
    pub fn max(&self) -> u64 {
        self.0.max()
    }

    /// The nearest-rank percentile `p` (0–100), or None when empty.
    pub fn percentile(&self, p: f64) -> Option<u64> {
        // The epsilon keeps 99.9 % of 1000 values at rank 999: 99.9 / 100 * 1000 rounds up past it.
        let q = (p / 100.0 - 1e-12).clamp(0.0, 1.0);
        (!self.0.is_empty()).then(|| self.0.value_at_quantile(q))
    }
}

/// Counts by a short kind label (error kinds, close codes).
pub type Counts = BTreeMap<String, u64>;

/// Adds one to `kind`.
pub fn bump(c: &mut Counts, kind: impl Into<String>) {
    *c.entry(kind.into()).or_default() += 1;
}

/// Adds every count of `from` into `into`.
pub fn add_counts(into: &mut Counts, from: &Counts) {
    for (k, v) in from {
        *into.entry(k.clone()).or_default() += v;
    }
}

/// One client's view of a numbered message stream `0..messages`.
#[derive(Clone, Debug, Default)]
pub struct SeqTracker {
    /// One bit per sequence number seen.
    seen: Vec<u64>,
    /// Sequence numbers run from 0 to this (exclusive).
    messages: u64,
    /// Highest sequence number seen so far.
    highest: Option<u64>,
    /// Distinct sequence numbers seen.
    pub unique: u64,
    /// Arrivals of a sequence number already seen.
    pub duplicated: u64,
    /// First arrivals lower than an earlier arrival.
    pub out_of_order: u64,
    /// Sequence numbers outside `0..messages`.
    pub out_of_range: u64,
}

impl SeqTracker {
    /// A tracker for sequence numbers `0..messages`.
    pub fn new(messages: u64) -> SeqTracker {
        SeqTracker {
            seen: vec![0; messages.div_ceil(64) as usize],
            messages,
            ..SeqTracker::default()
        }
    }

    /// Accounts one arrival of `seq`.
    pub fn observe(&mut self, seq: u64) {
        let (w, b) = ((seq / 64) as usize, seq % 64);
        let Some(word) = self.seen.get_mut(w).filter(|_| seq < self.messages) else {
            self.out_of_range += 1;
            return;
        };
        if *word & (1 << b) != 0 {
            self.duplicated += 1;
            return;
        }
        *word |= 1 << b;
        self.unique += 1;
        if self.highest.is_some_and(|h| seq < h) {
            self.out_of_order += 1;
        }
        self.highest = Some(self.highest.map_or(seq, |h| h.max(seq)));
    }

    /// Whether `seq` has arrived.
    pub fn has(&self, seq: u64) -> bool {
        self.seen
            .get((seq / 64) as usize)
            .is_some_and(|w| w & (1 << (seq % 64)) != 0)
    }
}

/// Loss over a run: for each sequence number that the API accepted, the clients that should have
/// received it minus those that did. `targets[i]` is how many clients message `i` was meant for
/// (0 when the API refused it); `unique[i]` how many distinct clients received it.
pub fn lost(targets: &[u64], unique: &[u64]) -> u64 {
    targets
        .iter()
        .enumerate()
        .map(|(i, &t)| t.saturating_sub(unique.get(i).copied().unwrap_or(0)))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_percentiles_on_small_values() {
        let mut h = Histogram::default();
        for v in (1..=1000).rev() {
            h.record(v);
        }
        assert_eq!(h.percentile(50.0), Some(500));
        assert_eq!(h.percentile(99.0), Some(990));
        assert_eq!(h.percentile(99.9), Some(999));
        assert_eq!(h.percentile(100.0), Some(1000));
        assert_eq!(h.percentile(0.0), Some(1));
        assert_eq!((h.min(), h.max(), h.count()), (1, 1000, 1000));
    }

    #[test]
    fn large_values_within_one_percent() {
        let mut h = Histogram::default();
        // 10 ms .. 10 s in 10 ms steps: known nearest-rank answers.
        let values: Vec<u64> = (1..=1000).map(|i| i * 10_000).collect();
        for &v in &values {
            h.record(v);
        }
        for (p, want) in [
            (50.0, 5_000_000u64),
            (90.0, 9_000_000),
            (99.0, 9_900_000),
            (100.0, 10_000_000),
        ] {
            let got = h.percentile(p).unwrap() as f64;
            assert!(
                (got - want as f64).abs() / want as f64 <= 0.01,
                "p{p}: {got}"
            );
        }
        h.record(u64::MAX);
        assert_eq!(h.count(), 1001);
    }

    #[test]
    fn merge_and_serde_round_trip() {
        let (mut a, mut b) = (Histogram::default(), Histogram::default());
        (1..=500).for_each(|v| a.record(v));
        (501..=1000).for_each(|v| b.record(v));
        b.record(3_000_000);
        a.merge(&b);
        let text = serde_json::to_string(&a).unwrap();
        let back: Histogram = serde_json::from_str(&text).unwrap();
        assert_eq!(back.percentile(50.0), Some(501));
        assert_eq!((back.min(), back.count()), (1, 1001));
        assert_eq!(back.max(), a.max());
        let mut empty = Histogram::default();
        empty.merge(&back);
        assert_eq!(empty.percentile(99.0), Some(991));
        assert_eq!(Histogram::default().percentile(50.0), None);
        let none: Histogram = serde_json::from_str("{}").unwrap();
        assert_eq!(none.count(), 0);
    }

    #[test]
    fn seq_accounting() {
        let mut t = SeqTracker::new(10);
        for s in [0, 1, 3, 2, 2, 4, 12, 9] {
            t.observe(s);
        }
        assert_eq!(t.unique, 6);
        assert_eq!(t.duplicated, 1);
        assert_eq!(t.out_of_order, 1); // 2 after 3
        assert_eq!(t.out_of_range, 1); // 12
        assert!(t.has(9) && !t.has(5) && !t.has(100));
    }

    #[test]
    fn loss_counts_only_accepted_messages() {
        // Three messages to 4 clients; the second was refused by the API (target 0).
        assert_eq!(lost(&[4, 0, 4], &[4, 2, 3]), 1);
        assert_eq!(lost(&[4, 4], &[4]), 4);
        let mut c = Counts::new();
        bump(&mut c, "refused");
        bump(&mut c, "refused");
        let mut d = Counts::new();
        add_counts(&mut d, &c);
        assert_eq!(d["refused"], 2);
    }
}
