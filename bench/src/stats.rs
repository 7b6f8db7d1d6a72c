//! Statistics the load tool merges across workers: a log-linear latency histogram, per-client
//! sequence accounting (loss, duplicates, reordering) and counters by error kind.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Values below this are kept exactly (one bucket per microsecond).
const EXACT: u64 = 2048;
/// log2 of [`EXACT`].
const EXACT_BITS: u32 = 11;
/// Sub-buckets per power of two above [`EXACT`]: relative error below 1/128.
const SUB_BITS: u32 = 7;
/// Number of dense buckets.
const BUCKETS: usize = EXACT as usize + (64 - EXACT_BITS as usize) * (1 << SUB_BITS);

/// A latency histogram in microseconds: exact below 2 ms, within 0.8 % above.
/// Serialized sparsely so workers can ship it to the parent as one JSON line.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Histogram {
    /// Non-empty buckets as (index, count), ascending by index.
    #[serde(default)]
    buckets: Vec<(u32, u64)>,
    /// Dense counts while recording; folded into `buckets` by [`Histogram::compact`].
    #[serde(skip)]
    dense: Vec<u64>,
    /// Number of recorded values.
    pub count: u64,
    /// Smallest recorded value.
    pub min: u64,
    /// Largest recorded value.
    pub max: u64,
    /// Sum of recorded values (for the mean).
    pub sum: u64,
}

fn index(v: u64) -> usize {
    if v < EXACT {
        return v as usize;
    }
    let e = 63 - v.leading_zeros();
    let sub = (v >> (e - SUB_BITS)) & ((1 << SUB_BITS) - 1);
    EXACT as usize + ((e - EXACT_BITS) as usize) * (1 << SUB_BITS) + sub as usize
}

/// The (lowest, highest) value that falls in bucket `i`.
fn bounds(i: usize) -> (u64, u64) {
    if i < EXACT as usize {
        return (i as u64, i as u64);
    }
    let j = i - EXACT as usize;
    let e = (j >> SUB_BITS) as u32 + EXACT_BITS;
    let sub = (j & ((1 << SUB_BITS) - 1)) as u64;
    let width = 1u64 << (e - SUB_BITS);
    let lo = (1u64 << e) + sub * width;
    (lo, lo.saturating_add(width - 1))
}

impl Histogram {
    /// Records one value.
    pub fn record(&mut self, v: u64) {
        if self.dense.is_empty() {
            self.dense = vec![0; BUCKETS];
            for &(i, c) in &self.buckets {
                self.dense[i as usize] += c;
            }
            self.buckets.clear();
        }
        self.dense[index(v)] += 1;
        if self.count == 0 || v < self.min {
            self.min = v;
        }
        self.max = self.max.max(v);
        self.count += 1;
        self.sum = self.sum.saturating_add(v);
    }

    /// Folds the dense recording array into the sparse form (before serializing).
    pub fn compact(&mut self) {
        if self.dense.is_empty() {
            return;
        }
        let mut merged: BTreeMap<u32, u64> = self.buckets.iter().copied().collect();
        for (i, &c) in self.dense.iter().enumerate() {
            if c > 0 {
                *merged.entry(i as u32).or_default() += c;
            }
        }
        self.buckets = merged.into_iter().collect();
        self.dense = Vec::new();
    }

    /// Adds another histogram's values to this one.
    pub fn merge(&mut self, other: &Histogram) {
        let mut o = other.clone();
        o.compact();
        self.compact();
        if o.count == 0 {
            return;
        }
        let mut merged: BTreeMap<u32, u64> = self.buckets.iter().copied().collect();
        for (i, c) in o.buckets {
            *merged.entry(i).or_default() += c;
        }
        self.buckets = merged.into_iter().collect();
        self.min = if self.count == 0 {
            o.min
        } else {
            self.min.min(o.min)
        };
        self.max = self.max.max(o.max);
        self.count += o.count;
        self.sum = self.sum.saturating_add(o.sum);
    }

    /// The nearest-rank percentile `p` (0–100), or None when empty. Exact below 2048;
    /// above, the midpoint of the bucket, clamped to the recorded min and max.
    pub fn percentile(&self, p: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        // A small epsilon keeps 99.9 % of 1000 at rank 999 despite float rounding.
        let rank = ((p * self.count as f64 / 100.0) - 1e-9).ceil().max(1.0) as u64;
        if rank >= self.count {
            return Some(self.max);
        }
        let mut seen = 0u64;
        let mut visit = |i: usize, c: u64| -> Option<u64> {
            seen += c;
            (seen >= rank).then(|| {
                let (lo, hi) = bounds(i);
                (lo + (hi - lo) / 2).clamp(self.min, self.max)
            })
        };
        if self.dense.is_empty() {
            for &(i, c) in &self.buckets {
                if let Some(v) = visit(i as usize, c) {
                    return Some(v);
                }
            }
        } else {
            for (i, &c) in self.dense.iter().enumerate() {
                if c > 0
                    && let Some(v) = visit(i, c)
                {
                    return Some(v);
                }
            }
        }
        Some(self.max)
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
        assert_eq!((h.min, h.max, h.count), (1, 1000, 1000));
    }

    #[test]
    fn large_values_within_one_percent() {
        let mut h = Histogram::default();
        // 10 ms .. 10 s in 1 ms steps: known nearest-rank answers.
        let values: Vec<u64> = (1..=1000).map(|i| i * 10_000).collect();
        for &v in &values {
            h.record(v);
        }
        for (p, want) in [(50.0, 5_000_000u64), (90.0, 9_000_000), (99.0, 9_900_000)] {
            let got = h.percentile(p).unwrap() as f64;
            assert!(
                (got - want as f64).abs() / want as f64 <= 0.01,
                "p{p}: {got}"
            );
        }
        assert_eq!(h.percentile(100.0), Some(10_000_000));
    }

    #[test]
    fn buckets_cover_every_value() {
        for v in [
            0,
            1,
            2047,
            2048,
            2049,
            4095,
            4096,
            1 << 20,
            u64::MAX / 3,
            u64::MAX,
        ] {
            let (lo, hi) = bounds(index(v));
            assert!(lo <= v && v <= hi, "{v} not in [{lo},{hi}]");
        }
        assert!(index(u64::MAX) < BUCKETS);
    }

    #[test]
    fn merge_and_serde_round_trip() {
        let (mut a, mut b) = (Histogram::default(), Histogram::default());
        (1..=500).for_each(|v| a.record(v));
        (501..=1000).for_each(|v| b.record(v));
        a.merge(&b);
        let text = serde_json::to_string(&a).unwrap();
        let back: Histogram = serde_json::from_str(&text).unwrap();
        assert_eq!(back.percentile(50.0), Some(500));
        assert_eq!((back.min, back.max, back.count), (1, 1000, 1000));
        let mut empty = Histogram::default();
        empty.merge(&back);
        assert_eq!(empty.percentile(99.0), Some(990));
        assert_eq!(Histogram::default().percentile(50.0), None);
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
