//! The replier: sends the answers this node owes other nodes, in the order they were made,
//! batched into one pipeline. An answer goes only to the topic of a node listed in the
//! cluster's live nodes, so a request naming an arbitrary origin (forged, on a cluster
//! without `cluster_secret`) never makes this node publish a listing where it was told to.
//! The nodes found listed are remembered for [`LISTED_FOR`], so a steady stream of answers
//! costs `tether:nodes` one lookup a second rather than one per batch (on a Redis Cluster
//! that key lives on one shard, which every answer would otherwise visit).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::Cluster;
use super::inbox::Outgoing;

/// Replies taken from the queue per round trip.
const BATCH: usize = 256;

/// How long a node found in `tether:nodes` is taken as listed without asking again.
const LISTED_FOR: Duration = Duration::from_secs(1);

/// Runs until the queue closes.
pub async fn run(cluster: Arc<Cluster>, mut rx: mpsc::Receiver<Outgoing>) {
    let mut batch = Vec::new();
    let mut known: HashMap<String, Instant> = HashMap::new();
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let listed = listed(&cluster, &batch, &mut known).await;
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

/// For each reply, whether the node it answers is in the cluster's list of nodes: from `known`
/// when it was found there within [`LISTED_FOR`], else one `ZMSCORE` for the others. When
/// Redis does not answer, none of those is sent: the publishes would fail too.
async fn listed(
    cluster: &Cluster,
    batch: &[Outgoing],
    known: &mut HashMap<String, Instant>,
) -> Vec<bool> {
    let now = Instant::now();
    known.retain(|_, at| now.duration_since(*at) < LISTED_FOR);
    let mut ask: Vec<&String> = batch
        .iter()
        .map(|(node, _)| node)
        .filter(|n| !known.contains_key(n.as_str()))
        .collect();
    ask.sort();
    ask.dedup();
    if !ask.is_empty() {
        let mut cmd = redis::cmd("ZMSCORE");
        cmd.arg(cluster.keys.nodes());
        for node in &ask {
            cmd.arg(node.as_str());
        }
        let mut con = cluster.conn();
        let scores: Vec<Option<f64>> = cluster
            .call("reply", async move { cmd.query_async(&mut con).await })
            .await
            .unwrap_or_default();
        for (node, score) in ask.into_iter().zip(scores) {
            if score.is_some() {
                known.insert(node.clone(), now);
            }
        }
    }
    batch
        .iter()
        .map(|(n, _)| known.contains_key(n.as_str()))
        .collect()
}
