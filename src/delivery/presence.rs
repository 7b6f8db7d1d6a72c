//! Channel presence events (docs/protocol.md §14): the one task per node that takes the
//! registry's presence changes and decides `join` and `leave`: here on one node, telling the
//! channel's subscribers itself; in a cluster, in Redis, once cluster-wide, where the step that
//! decides an event also publishes it to every node (`cluster::channel_scripts`).
//!
//! The registry only notes (channel, client id) pairs whose count here went from or to 0; this
//! task reads the count as it is when it gets there, so a tab that flaps between two rounds
//! costs nothing, and a client id that comes back within `presence_grace` neither leaves nor
//! joins again.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use tokio::time::Instant;

use super::router::{Frame, Router, To};
use crate::registry::presence::{Change, Feed, event_frame};

/// Client ids written per Redis step, so one step never holds Redis for long.
const BATCH: usize = 500;

/// Pause after a failed Redis write before the next try.
const RETRY: Duration = Duration::from_millis(250);

/// One node's presence state when there is no cluster: who was announced on each channel,
/// and since when those whose last session left are gone.
#[derive(Default)]
struct Alone {
    /// Announced members: `None` while they have a session, else when their leave is due.
    members: HashMap<Change, Option<Instant>>,
}

impl Alone {
    /// A client id now holds `n` sessions on the channel: true when it joins. `feed` learns
    /// who is within the grace.
    fn set(&mut self, feed: &Feed, pair: Change, n: u32, due: Instant) -> bool {
        match (self.members.get_mut(&pair), n) {
            (None, 0) => false,
            (None, _) => {
                self.members.insert(pair, None);
                true
            }
            (Some(state), 0) => {
                state.get_or_insert(due);
                feed.mark_grace(&pair, true);
                false
            }
            (Some(state), _) => {
                *state = None;
                feed.mark_grace(&pair, false);
                false
            }
        }
    }

    /// Takes the members whose grace is over.
    fn due(&mut self, feed: &Feed, now: Instant) -> Vec<Change> {
        let gone: Vec<Change> = self
            .members
            .iter()
            .filter(|(_, d)| d.is_some_and(|d| d <= now))
            .map(|(p, _)| p.clone())
            .collect();
        for p in &gone {
            self.members.remove(p);
            feed.mark_grace(p, false);
        }
        gone
    }
}

/// Runs until aborted (the router's start guards own it).
pub(super) async fn run(router: Router, feed: Arc<Feed>, grace: Duration) {
    // Leaves are looked for each round: a quarter of the grace, within bounds.
    let round = (grace / 4).clamp(Duration::from_millis(20), Duration::from_secs(1));
    let mut alone = Alone::default();
    let mut resyncs = 0;
    loop {
        tokio::select! {
            _ = feed.wake.notified() => {}
            _ = tokio::time::sleep(round) => {}
        }
        let mut changes = feed.take();
        let Some(cluster) = router.cluster() else {
            let now = Instant::now();
            for pair in changes {
                let n = router.registry().sessions_on(&pair.0, &pair.1);
                if alone.set(&feed, pair.clone(), n, now + grace) {
                    announce(&router, "join", &pair).await;
                }
            }
            for pair in alone.due(&feed, now) {
                announce(&router, "leave", &pair).await;
            }
            continue;
        };
        let now_resyncs = cluster.resyncs();
        if now_resyncs != resyncs {
            // Redis may hold stale entries of this node (an earlier run, an outage, or the
            // others took it for dead and cleared it): cleared, then rewritten from the
            // registry; within the grace, so nobody leaves or joins for it.
            cluster.clear_own_channels().await;
            changes.extend(router.registry().presence_pairs());
            resyncs = now_resyncs;
        }
        let mut by_channel: BTreeMap<Arc<str>, Vec<(Arc<str>, u32)>> = BTreeMap::new();
        for (ch, client) in changes {
            let n = router.registry().sessions_on(&ch, &client);
            by_channel.entry(ch).or_default().push((client, n));
        }
        // Channels are independent: their writes go out together (the connection pipelines
        // them); the next round starts once they are done.
        let writes = by_channel.iter().flat_map(|(ch, clients)| {
            clients.chunks(BATCH).map(move |chunk| async move {
                (ch, chunk, cluster.write_channel(ch, chunk).await)
            })
        });
        let mut failed = false;
        let mut joins = 0;
        for (ch, chunk, written) in join_all(writes).await {
            match written {
                Ok(decided) => joins += decided.joins.len(),
                Err(e) => {
                    log::debug!("channel presence not written, retrying: {e}");
                    failed = true;
                    renote(&feed, ch, chunk);
                }
            }
        }
        // The scripts that decided the events published them, in the order Redis decided
        // them: a `leave` one node fires and the `join` another decides right after reach
        // every subscriber in that order. Only counted here.
        let metrics = &router.registry().metrics;
        (0..joins).for_each(|_| metrics.presence_event(true));
        match cluster.take_leaves().await {
            Ok(leaves) => leaves.iter().for_each(|_| metrics.presence_event(false)),
            Err(_) => failed = true,
        }
        if failed {
            tokio::time::sleep(RETRY).await;
        }
    }
}

fn renote(feed: &Feed, channel: &Arc<str>, clients: &[(Arc<str>, u32)]) {
    for (client, _) in clients {
        feed.note(channel, client);
    }
}

/// Tells `channel`'s subscribers that `client` joined or left (on one node; in a cluster the
/// scripts publish the events).
async fn announce(router: &Router, kind: &str, (channel, client): &Change) {
    let frame = Frame::Plain(event_frame(kind, channel, client));
    router.registry().metrics.presence_event(kind == "join");
    if let Err(e) = router.deliver(To::Channel(channel), frame).await {
        log::debug!("channel presence `{kind}` on {channel} not delivered: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_return_within_the_grace_is_no_event() {
        let mut a = Alone::default();
        let f = Feed::default();
        let pair: Change = (Arc::from("lobby"), Arc::from("alice"));
        let t0 = Instant::now();
        let grace = Duration::from_secs(5);
        assert!(
            a.set(&f, pair.clone(), 1, t0 + grace),
            "first session joins"
        );
        assert!(
            !a.set(&f, pair.clone(), 2, t0 + grace),
            "a second tab does not"
        );
        assert!(!a.set(&f, pair.clone(), 0, t0 + grace));
        assert!(a.due(&f, t0).is_empty(), "not before the grace");
        assert_eq!(
            f.grace_of("lobby"),
            vec![Arc::from("alice")],
            "listed meanwhile"
        );
        assert!(
            !a.set(&f, pair.clone(), 1, t0 + grace),
            "back within the grace"
        );
        assert!(a.due(&f, t0 + grace * 2).is_empty());
        assert!(!a.set(&f, pair.clone(), 0, t0 + grace));
        assert_eq!(
            a.due(&f, t0 + grace),
            vec![pair.clone()],
            "gone for the grace: leaves"
        );
        assert!(a.set(&f, pair, 1, t0 + grace), "and joins again later");
    }
}
