//! Paging a stream's history (docs/history.md, "Paging"): which seqs a page holds, whether it
//! joins its `since` without a gap, and the `since` of the page after it. Both engines read
//! through these rules (the Redis one mirrors [`window`] in its Lua script and checks that it
//! agreed), so the two page alike.
//!
//! A position `E:s` is the boundary after message `s`. A forward page reads up from it
//! (`s+1, s+2, …`), a reverse page down from it (`s, s-1, …`, newest first); each page's
//! `next` is the boundary past its last message, so consecutive pages neither skip nor repeat.

use super::{Epoch, Position, Stored};

/// Messages in one page unless `limit` says otherwise.
pub const PAGE_DEFAULT: usize = 100;
/// The largest `limit`.
pub const PAGE_MAX: usize = 1000;

/// What one page asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageQuery {
    /// Where to start: `None` (or `0:0`) is the oldest message held going forward, the newest
    /// going in reverse.
    pub since: Option<Position>,
    /// Most messages in the page, 1 to [`PAGE_MAX`].
    pub limit: usize,
    /// Newest first, reading down from `since`.
    pub reverse: bool,
}

impl PageQuery {
    /// The seq to start from, `None` for the near end; `0:0` is no position.
    pub fn since_seq(&self) -> Option<u64> {
        self.since.as_ref().filter(|p| !p.is_start()).map(|p| p.seq)
    }
}

/// One page of a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    /// The stream's epoch and top when read.
    pub position: Position,
    /// No message is missing between `since` and the page (forward from the start: the stream
    /// still holds everything from seq 1). False also when `since` is of another epoch or past
    /// the top; then the page is empty and the reader starts over without `since`.
    pub recovered: bool,
    /// The messages, in the page's order (ascending seq, or descending with `reverse`).
    pub messages: Vec<Stored>,
    /// The `since` of the next page in the same direction; `None` when nothing more is held
    /// that way now.
    pub next: Option<Position>,
}

/// The seqs of a page, ascending and inclusive, given a stream whose held messages are
/// `oldest..=top` (`oldest = top + 1` when none is held); `None` when it holds none of them.
pub fn window(
    top: u64,
    oldest: u64,
    since: Option<u64>,
    limit: u64,
    reverse: bool,
) -> Option<(u64, u64)> {
    let limit = limit.max(1);
    let (from, to) = if reverse {
        let to = since.map_or(top, |s| s.min(top));
        (oldest.max((to + 1).saturating_sub(limit)), to)
    } else {
        let from = since.map_or(oldest, |s| s.saturating_add(1).max(oldest));
        (from, top.min(from.saturating_add(limit - 1)))
    };
    (from <= to && from >= 1).then_some((from, to))
}

/// Whether a page from `since` joins it without a gap. `whole`: no earlier incarnation of the
/// stream was lost, which a forward read from the start also needs.
pub fn recovered(top: u64, oldest: u64, q: &PageQuery, epoch: &Epoch, whole: bool) -> bool {
    let same = q
        .since
        .as_ref()
        .is_none_or(|p| p.is_start() || p.epoch == *epoch);
    if !same {
        return false;
    }
    match (q.since_seq(), q.reverse) {
        (None, false) => oldest <= 1 && whole,
        (None, true) => top == 0 || top >= oldest,
        (Some(s), false) => s <= top && s.saturating_add(1) >= oldest,
        (Some(s), true) => s <= top && (s == 0 || s >= oldest),
    }
}

/// The page from what was read: `held` is the messages of [`window`] in ascending order.
pub fn assemble(
    position: Position,
    oldest: u64,
    q: &PageQuery,
    whole: bool,
    held: Vec<Stored>,
) -> Page {
    let recovered = recovered(position.seq, oldest, q, &position.epoch, whole);
    // A read without a position still lists what is held: a reader with no state cannot be
    // inconsistent (as with a `0:0` resume), it only learns that older messages are gone.
    if !recovered && q.since_seq().is_some() {
        return Page {
            position,
            recovered,
            messages: Vec::new(),
            next: None,
        };
    }
    finish(position, oldest, q, recovered, held)
}

fn finish(
    position: Position,
    oldest: u64,
    q: &PageQuery,
    recovered: bool,
    mut held: Vec<Stored>,
) -> Page {
    let (lo, hi) = match (held.first(), held.last()) {
        (Some(a), Some(b)) => (a.seq, b.seq),
        _ => (0, 0),
    };
    let next = if held.is_empty() {
        None
    } else if q.reverse {
        (lo > oldest).then(|| lo - 1)
    } else {
        (hi < position.seq).then_some(hi)
    };
    if q.reverse {
        held.reverse();
    }
    Page {
        next: next.map(|seq| Position {
            epoch: position.epoch.clone(),
            seq,
        }),
        position,
        recovered,
        messages: held,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn q(since: Option<&str>, limit: usize, reverse: bool) -> PageQuery {
        PageQuery {
            since: since.map(|s| Position::parse(s).unwrap()),
            limit,
            reverse,
        }
    }

    /// A stream "e" holding `oldest..=top`, paged with `query` as an engine would.
    fn page(top: u64, oldest: u64, query: &PageQuery) -> Page {
        let held = window(
            top,
            oldest,
            query.since_seq(),
            query.limit as u64,
            query.reverse,
        )
        .map(|(a, b)| {
            (a..=b)
                .map(|seq| Stored {
                    seq,
                    frame: Bytes::new(),
                    at_ms: 0,
                })
                .collect()
        })
        .unwrap_or_default();
        let position = Position {
            epoch: Epoch::parse("e").unwrap(),
            seq: top,
        };
        assemble(position, oldest, query, true, held)
    }

    fn seqs(p: &Page) -> Vec<u64> {
        p.messages.iter().map(|m| m.seq).collect()
    }

    fn walk(top: u64, oldest: u64, limit: usize, reverse: bool) -> Vec<u64> {
        let mut all = Vec::new();
        let mut since = None;
        for _ in 0..100 {
            let p = page(top, oldest, &q(since.as_deref(), limit, reverse));
            // Forward from the start is whole only when seq 1 is still held.
            let whole = since.is_some() || reverse || oldest == 1;
            assert_eq!(p.recovered, whole, "{since:?}");
            all.extend(seqs(&p));
            match p.next {
                Some(n) => since = Some(format!("{}:{}", n.epoch, n.seq)),
                None => return all,
            }
        }
        panic!("paging did not end");
    }

    #[test]
    fn both_directions_page_everything_held_once() {
        for (top, oldest) in [(10, 1), (10, 4), (7, 7), (1, 1)] {
            for limit in [1, 3, 4, 100] {
                let forward = walk(top, oldest, limit, false);
                assert_eq!(
                    forward,
                    (oldest..=top).collect::<Vec<_>>(),
                    "{top} {oldest} {limit}"
                );
                let reverse = walk(top, oldest, limit, true);
                assert_eq!(reverse, (oldest..=top).rev().collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn a_cursor_in_the_middle_reads_each_way() {
        assert_eq!(seqs(&page(10, 1, &q(Some("e:4"), 3, false))), [5, 6, 7]);
        assert_eq!(seqs(&page(10, 1, &q(Some("e:4"), 3, true))), [4, 3, 2]);
        let p = page(10, 1, &q(Some("e:4"), 3, true));
        assert_eq!(p.next.unwrap().seq, 1);
        assert_eq!(
            seqs(&page(10, 1, &q(Some("e:0"), 3, true))),
            Vec::<u64>::new()
        );
    }

    #[test]
    fn gaps_other_epochs_and_future_positions_are_not_recovered() {
        for query in [
            q(Some("e:1"), 5, false),
            q(Some("e:2"), 5, true),
            q(Some("x:5"), 5, false),
            q(Some("x:5"), 5, true),
            q(Some("e:11"), 5, false),
            q(Some("e:11"), 5, true),
        ] {
            let p = page(10, 4, &query);
            assert!(
                !p.recovered && p.messages.is_empty() && p.next.is_none(),
                "{query:?}"
            );
        }
        let start = page(10, 4, &q(None, 5, false));
        assert!(!start.recovered, "seqs 1 to 3 are gone");
        assert_eq!(seqs(&start), [4, 5, 6, 7, 8]);
        assert!(page(10, 4, &q(None, 5, true)).recovered);
        let empty = page(0, 1, &q(None, 5, true));
        assert!(empty.recovered && empty.messages.is_empty() && empty.next.is_none());
        let expired = page(5, 6, &q(None, 5, true));
        assert!(!expired.recovered && expired.messages.is_empty());
    }
}
