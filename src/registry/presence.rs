//! Channel presence as the registry sees it (docs/protocol.md §14): which channels are presence
//! channels, how many sessions each client id holds here on each of them, and the queue of
//! (channel, client id) pairs whose count went from 0 or to 0. The registry only notes a change
//! under its lock; a task above it (`delivery::presence`) takes the queue, reads the counts as
//! they are then and tells the channel (and the other nodes), so every path that subscribes or
//! unsubscribes a session counts, and no lock is held across that work.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::protocol::{envelope, json_str};

/// The `presence_channels` setting: exact names, and prefixes (entries ending in `*`).
#[derive(Debug, Default, Clone)]
pub struct Matcher {
    /// Exact names.
    names: HashSet<String>,
    /// Prefixes (`*` removed; an empty one matches every channel).
    prefixes: Vec<String>,
}

impl Matcher {
    /// The matcher for a `presence_channels` list.
    pub fn new(patterns: &[String]) -> Matcher {
        let mut m = Matcher::default();
        for p in patterns {
            match p.strip_suffix('*') {
                Some(prefix) => m.prefixes.push(prefix.to_string()),
                None => {
                    m.names.insert(p.clone());
                }
            }
        }
        m
    }

    /// True when no channel is a presence channel.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty() && self.prefixes.is_empty()
    }

    /// Whether `channel` is a presence channel.
    pub fn matches(&self, channel: &str) -> bool {
        self.names.contains(channel) || self.prefixes.iter().any(|p| channel.starts_with(&**p))
    }
}

/// (channel, client id): a client id's session count on a channel here went from or to 0.
pub type Change = (Arc<str>, Arc<str>);

/// Presence changes waiting for the presence task; deduplicated, so a flapping tab costs one
/// entry, and the task reads the count as it is when it gets there.
#[derive(Default)]
pub struct Feed {
    /// Pairs to look at again.
    dirty: Mutex<HashSet<Change>>,
    /// Wakes the presence task.
    pub wake: Notify,
    /// On one node: client ids gone from a channel whose `leave` is not out yet (the presence
    /// task keeps it), so presence answers list them as the events have them: still there.
    grace: Mutex<HashSet<Change>>,
}

impl Feed {
    /// Notes a change (called under the registry lock: only a set insert; the presence task
    /// notes a pair again when writing it failed).
    pub fn note(&self, channel: &Arc<str>, client: &Arc<str>) {
        self.dirty
            .lock()
            .insert((Arc::clone(channel), Arc::clone(client)));
        self.wake.notify_one();
    }

    /// Takes every pending change.
    pub fn take(&self) -> Vec<Change> {
        self.dirty.lock().drain().collect()
    }

    /// Marks a client id as within its grace on a channel (or no longer).
    pub fn mark_grace(&self, pair: &Change, within: bool) {
        let mut g = self.grace.lock();
        if within {
            g.insert(pair.clone());
        } else {
            g.remove(pair);
        }
    }

    /// The client ids within their grace on `channel`.
    pub fn grace_of(&self, channel: &str) -> Vec<Arc<str>> {
        self.grace
            .lock()
            .iter()
            .filter(|(ch, _)| **ch == *channel)
            .map(|(_, c)| Arc::clone(c))
            .collect()
    }
}

/// Per presence channel, the sessions each client id holds here.
pub(super) type Counts = HashMap<Arc<str>, HashMap<Arc<str>, u32>>;

/// Adds one session of `client` on `channel`; true when it is the client id's first here.
pub(super) fn add(counts: &mut Counts, channel: &Arc<str>, client: &Arc<str>) -> bool {
    let n = counts
        .entry(Arc::clone(channel))
        .or_default()
        .entry(Arc::clone(client))
        .or_insert(0);
    *n += 1;
    *n == 1
}

/// Removes one session of `client` from `channel`; true when it was the client id's last here.
pub(super) fn remove(counts: &mut Counts, channel: &str, client: &str) -> bool {
    let Some(clients) = counts.get_mut(channel) else {
        return false;
    };
    let last = match clients.get_mut(client) {
        Some(n) if *n > 1 => {
            *n -= 1;
            false
        }
        Some(_) => {
            clients.remove(client);
            true
        }
        None => false,
    };
    if clients.is_empty() {
        counts.remove(channel);
    }
    last
}

/// The largest page of a channel listing or of a channel's clients (`?limit=`), also what a
/// node answers another at most.
pub const PAGE_MAX: usize = 10_000;

/// The `join` or `leave` frame (`kind`) of `client` on `channel`, as subscribers get it.
pub fn event_frame(kind: &str, channel: &str, client: &str) -> Utf8Bytes {
    let data = format!(
        "{{\"channel\":{},\"client_id\":{}}}",
        json_str(channel),
        json_str(client)
    );
    envelope(kind, Some(channel), None, Some(&data))
}

impl super::Registry {
    /// The queue of presence changes, when `presence_channels` is set.
    pub fn presence_feed(&self) -> Option<&Arc<Feed>> {
        self.presence.as_ref().map(|(_, feed)| feed)
    }

    /// Whether `channel` is a presence channel.
    pub fn is_presence_channel(&self, channel: &str) -> bool {
        self.presence
            .as_ref()
            .is_some_and(|(m, _)| m.matches(channel))
    }

    /// Every (presence channel, client id) pair with a session here, for a full rewrite.
    pub fn presence_pairs(&self) -> Vec<Change> {
        let idx = self.idx.read();
        idx.counts
            .iter()
            .flat_map(|(ch, clients)| clients.keys().map(|c| (Arc::clone(ch), Arc::clone(c))))
            .collect()
    }

    /// Sessions `client` holds here on presence channel `channel`.
    pub fn sessions_on(&self, channel: &str, client: &str) -> u32 {
        let idx = self.idx.read();
        idx.counts
            .get(channel)
            .and_then(|c| c.get(client))
            .copied()
            .unwrap_or(0)
    }

    /// This node's part of a channel's presence: its subscriber sessions, and the client ids
    /// after `after` (sorted, at most `limit`) with their sessions here.
    pub fn channel_clients(
        &self,
        channel: &str,
        after: Option<&str>,
        limit: usize,
    ) -> (u64, Vec<(Arc<str>, u64)>) {
        // The client ids are copied under the lock (a read lock, one pointer each) and counted
        // outside it.
        let ids: Vec<Arc<str>> = {
            let idx = self.idx.read();
            idx.by_channel
                .get(channel)
                .map(|subs| subs.values().map(|o| Arc::clone(&o.client_id)).collect())
                .unwrap_or_default()
        };
        let total = ids.len() as u64;
        let mut per: HashMap<Arc<str>, u64> = HashMap::new();
        for id in ids {
            if after.is_none_or(|a| *id > *a) {
                *per.entry(id).or_default() += 1;
            }
        }
        let mut clients: Vec<(Arc<str>, u64)> = per.into_iter().collect();
        clients.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        clients.truncate(limit);
        (total, clients)
    }

    /// One page of this node's channels: names starting with `prefix` and after `after`,
    /// sorted, at most `limit`, with their subscriber sessions here.
    pub fn channel_page(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Vec<(Arc<str>, u64)> {
        let mut page: Vec<(Arc<str>, u64)> = {
            let idx = self.idx.read();
            idx.by_channel
                .iter()
                .filter(|(ch, _)| ch.starts_with(prefix) && after.is_none_or(|a| ***ch > *a))
                .map(|(ch, subs)| (Arc::clone(ch), subs.len() as u64))
                .collect()
        };
        page.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        page.truncate(limit);
        page
    }
}

/// Merges nodes' pages of (name, count) pairs, each sorted by name: the lowest `limit` names
/// of their union, the counts of a name summed. Exact, since a name among the union's lowest
/// `limit` is among the lowest `limit` of every node that has it.
pub fn merge_counts(
    parts: impl IntoIterator<Item = Vec<(Arc<str>, u64)>>,
    limit: usize,
) -> Vec<(Arc<str>, u64)> {
    let mut all: std::collections::BTreeMap<Arc<str>, u64> = Default::default();
    for part in parts {
        for (name, n) in part {
            *all.entry(name).or_default() += n;
        }
    }
    all.into_iter().take(limit).collect()
}

/// Adds the client ids within their grace (`sessions` 0) to a page of a channel's clients:
/// those after `after`, not in it already; the page stays sorted and at most `limit` long.
pub fn with_grace(
    clients: &mut Vec<(Arc<str>, u64)>,
    grace: Vec<Arc<str>>,
    after: Option<&str>,
    limit: usize,
) {
    let known: HashSet<Arc<str>> = clients.iter().map(|(c, _)| Arc::clone(c)).collect();
    for c in grace {
        if after.is_none_or(|a| *c > *a) && !known.contains(&c) {
            clients.push((c, 0));
        }
    }
    clients.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    clients.truncate(limit);
}

/// A page as one node sends it to another: `<count> <name>` lines.
pub fn encode_counts(page: &[(Arc<str>, u64)]) -> String {
    let mut out = String::new();
    for (name, n) in page {
        out.push_str(&n.to_string());
        out.push(' ');
        out.push_str(name);
        out.push('\n');
    }
    out
}

/// Reads [`encode_counts`]; a malformed line is skipped (names hold no control characters).
pub fn decode_counts(text: &str) -> Vec<(Arc<str>, u64)> {
    text.lines()
        .filter_map(|line| {
            let (n, name) = line.split_once(' ')?;
            Some((Arc::from(name), n.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_prefixes_match() {
        let m = Matcher::new(&["lobby".into(), "room.*".into()]);
        assert!(m.matches("lobby") && m.matches("room.1") && m.matches("room."));
        assert!(!m.matches("lobby2") && !m.matches("room"));
        assert!(Matcher::new(&["*".into()]).matches("anything"));
        assert!(Matcher::new(&[]).is_empty());
    }

    #[test]
    fn counts_say_first_and_last() {
        let mut c = Counts::default();
        let (ch, a): (Arc<str>, Arc<str>) = (Arc::from("lobby"), Arc::from("alice"));
        assert!(add(&mut c, &ch, &a));
        assert!(!add(&mut c, &ch, &a));
        assert!(!remove(&mut c, "lobby", "alice"));
        assert!(remove(&mut c, "lobby", "alice"));
        assert!(c.is_empty());
        assert!(!remove(&mut c, "lobby", "alice"));
    }

    #[test]
    fn clients_within_their_grace_join_the_page_with_no_session() {
        let mut page: Vec<(Arc<str>, u64)> = vec![(Arc::from("b"), 1), (Arc::from("d"), 2)];
        let grace = ["a", "b", "c", "e"].map(Arc::from).to_vec();
        with_grace(&mut page, grace, Some("a"), 3);
        let names: Vec<(&str, u64)> = page.iter().map(|(c, n)| (&**c, *n)).collect();
        assert_eq!(names, [("b", 1), ("c", 0), ("d", 2)]);
    }

    #[test]
    fn pages_merge_by_name_with_summed_counts() {
        let p = |v: &[(&str, u64)]| -> Vec<(Arc<str>, u64)> {
            v.iter().map(|(n, c)| (Arc::from(*n), *c)).collect()
        };
        let a = p(&[("a", 1), ("c", 2)]);
        let b = p(&[("b", 5), ("c", 1)]);
        let merged = merge_counts([a, decode_counts(&encode_counts(&b))], 2);
        assert_eq!(merged, p(&[("a", 1), ("b", 5)]));
        let merged = merge_counts([p(&[("a", 1), ("c", 2)]), b], 10);
        assert_eq!(merged, p(&[("a", 1), ("b", 5), ("c", 3)]));
    }
}
