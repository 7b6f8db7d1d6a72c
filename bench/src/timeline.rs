//! The reconnect timeline of a migration: reconnects counted in 100 ms bins from one moment (the
//! parent's `go`, just before it stops node A), summed bin by bin across workers, and its peak.
//! Bins rather than timestamps, so a worker ships 19,000 reconnects as a few hundred numbers.

/// Width of one bin, µs.
pub const BIN_US: u64 = 100_000;

/// How many bins a run whose events all fall within `span_ms` of the start needs (at least 1).
pub fn bins_for(span_ms: u64) -> usize {
    usize::try_from(span_ms.div_ceil(BIN_US / 1000))
        .unwrap_or(usize::MAX)
        .saturating_add(1)
        .max(1)
}

/// Counts one event `offset_us` after the start. Bins past `max_bins` are never made: a late
/// event (a clock jump, a deadline overrun) lands in the last one, so memory stays bounded.
pub fn record(bins: &mut Vec<u64>, offset_us: u64, max_bins: usize) {
    let last = max_bins.max(1) - 1;
    let i = usize::try_from(offset_us / BIN_US).map_or(last, |i| i.min(last));
    if bins.len() <= i {
        bins.resize(i + 1, 0);
    }
    bins[i] += 1;
}

/// Adds `from` into `into`, bin by bin (the shorter one counts as zeros past its end).
pub fn add(into: &mut Vec<u64>, from: &[u64]) {
    if into.len() < from.len() {
        into.resize(from.len(), 0);
    }
    for (a, b) in into.iter_mut().zip(from) {
        *a += b;
    }
}

/// The fullest bin as (index, count), the earliest of equals; None when there is no event.
pub fn peak(bins: &[u64]) -> Option<(usize, u64)> {
    let mut best: Option<(usize, u64)> = None;
    for (i, &n) in bins.iter().enumerate() {
        if n > 0 && best.is_none_or(|(_, b)| n > b) {
            best = Some((i, n));
        }
    }
    best
}

/// Bins holding at least one event.
pub fn busy(bins: &[u64]) -> usize {
    bins.iter().filter(|&&n| n > 0).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_into_bins_and_caps_late_events() {
        let mut b = Vec::new();
        record(&mut b, 0, 10);
        record(&mut b, 99_999, 10);
        record(&mut b, 100_000, 10);
        record(&mut b, 450_000, 10);
        assert_eq!(b, vec![2, 1, 0, 0, 1]);
        record(&mut b, u64::MAX, 10);
        assert_eq!((b.len(), b[9]), (10, 1));
        let mut one = Vec::new();
        record(&mut one, 5_000_000, 0);
        assert_eq!(one, vec![1], "no bins allowed still keeps one");
        assert_eq!(bins_for(0), 1);
        assert_eq!(bins_for(1_000), 11);
        assert_eq!(bins_for(1_050), 12);
    }

    #[test]
    fn merges_bin_by_bin() {
        let mut total = vec![1, 2];
        add(&mut total, &[0, 3, 5]);
        add(&mut total, &[4]);
        add(&mut total, &[]);
        assert_eq!(total, vec![5, 5, 5]);
    }

    #[test]
    fn peak_is_the_earliest_fullest_bin() {
        assert_eq!(peak(&[]), None);
        assert_eq!(peak(&[0, 0]), None);
        assert_eq!(peak(&[0, 3, 7, 7, 2]), Some((2, 7)));
        assert_eq!(peak(&[9]), Some((0, 9)));
        assert_eq!(busy(&[0, 3, 0, 1]), 2);
    }
}
