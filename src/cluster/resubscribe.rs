//! On a Redis Cluster, a shard drops its sharded subscriptions of a slot that moves to another
//! master (it sends `sunsubscribe` for each), and the crate only resubscribes on a connection
//! that itself noticed the move. A node that merely listens there would stay deaf to that
//! slot's client ids and channels, so every server-side `sunsubscribe` reaches this task, which
//! subscribes again whatever this node still wants: its own topic, the topic of a client id it
//! holds, or of a channel it has subscribers for. Its own `SUNSUBSCRIBE`s are confirmed the same
//! way; the owners drop a topic from their sets before unsubscribing it, so those are skipped.

use std::sync::Arc;

use redis::{PushInfo, PushKind, Value};
use tokio::sync::mpsc;

use super::Cluster;
use super::keys::Owner;

/// The topic a `sunsubscribe` push names, if it is one.
pub fn dropped(info: &PushInfo) -> Option<String> {
    if !matches!(info.kind, PushKind::SUnsubscribe) {
        return None;
    }
    match info.data.first() {
        Some(Value::BulkString(b)) => String::from_utf8(b.clone()).ok(),
        _ => None,
    }
}

/// Runs until the channel closes: subscribes again each dropped topic still wanted.
pub async fn run(c: Arc<Cluster>, mut rx: mpsc::UnboundedReceiver<String>) {
    while let Some(topic) = rx.recv().await {
        let wanted = match c.keys.owner(&topic) {
            Some(Owner::Node(n)) => *n == *c.node,
            Some(Owner::Client(id)) => {
                c.client_topics.lock().contains(id.as_str()) && c.registry.sessions_of(&id) > 0
            }
            Some(Owner::Channel(ch)) => {
                // The sweep holds this lock across its unsubscribe and forgets the channel
                // before letting go, so a channel it dropped is not taken back here.
                let topics = c.topics.lock().await;
                topics.contains(ch.as_str()) && c.registry.has_channel(&ch)
            }
            None => false,
        };
        if !wanted {
            continue;
        }
        log::info!("redis: {topic} moved to another shard; subscribing there");
        // On failure the upkeep's resync after the error subscribes everything again.
        let _ = c.call("resubscribe", c.link.subscribe(vec![topic])).await;
    }
}
