//! The replier: sends the answers this node owes other nodes, in the order they were made,
//! batched into one pipeline. An answer goes only to the topic of a node listed in the
//! cluster's live nodes, so a request naming an arbitrary origin (forged, on a cluster
//! without `cluster_secret`) never makes this node publish a listing where it was told to.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc;

use super::Cluster;
use super::inbox::Outgoing;

/// Replies taken from the queue per round trip.
const BATCH: usize = 256;

/// Runs until the queue closes.
pub async fn run(cluster: Arc<Cluster>, mut rx: mpsc::Receiver<Outgoing>) {
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let listed = listed(&cluster, &batch).await;
        let publish = if cluster.keys.sharded() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        };
        let mut cmds = Vec::with_capacity(batch.len());
        for ((node, msg), ok) in batch.drain(..).zip(listed) {
            if ok {
                let mut cmd = redis::cmd(publish);
                cmd.arg(cluster.keys.node_topic(&node)).arg(msg);
                cmds.push(cmd);
            } else {
                cluster
                    .inbox
                    .replies_dropped
                    .fetch_add(1, Ordering::Relaxed);
                log::debug!("no reply to {node}: not a listed node");
            }
        }
        // A lost reply only makes its origin answer `partial`; nothing to retry here.
        let _ = cluster.run_all("reply", cmds).await;
    }
}

/// For each reply, whether the node it answers is in the cluster's list of nodes (one
/// `ZMSCORE` per batch). When Redis does not answer, none is sent: the publishes would fail
/// too.
async fn listed(cluster: &Cluster, batch: &[Outgoing]) -> Vec<bool> {
    let mut cmd = redis::cmd("ZMSCORE");
    cmd.arg(cluster.keys.nodes());
    for (node, _) in batch {
        cmd.arg(node);
    }
    let mut con = cluster.conn();
    let scores: Vec<Option<f64>> = cluster
        .call("reply", async move { cmd.query_async(&mut con).await })
        .await
        .unwrap_or_default();
    (0..batch.len())
        .map(|i| scores.get(i).is_some_and(Option::is_some))
        .collect()
}
