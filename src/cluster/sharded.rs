//! The Redis Cluster side of the node's connection (docs/cluster.md § Redis Cluster): one
//! `ClusterConnection` of the crate's `cluster-async` (RESP3) for commands and subscriptions,
//! and the (un)subscribing of topics that live on different shards.

use std::sync::Arc;
use std::time::Duration;

use redis::cluster::{ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::{ProtocolVersion, RedisError};

use super::CALL_TIMEOUT;
use super::connection::PushFn;
use crate::config::sentinel_url;

/// A lazy connection to the cluster the seed `nodes` belong to, its pushes handed to `push`;
/// nothing is dialled until the first command.
pub fn connection(nodes: &[String], push: &PushFn) -> Result<ClusterConnection, String> {
    let bad = |e: RedisError| format!("redis_cluster_nodes: {e}");
    let urls: Vec<String> = nodes.iter().map(|s| sentinel_url(s)).collect();
    let to_inbox = Arc::clone(push);
    let client = ClusterClientBuilder::new(urls)
        .use_protocol(ProtocolVersion::RESP3)
        .connection_timeout(Duration::from_millis(500))
        .response_timeout(CALL_TIMEOUT)
        .retries(2)
        .min_retry_wait(50)
        .max_retry_wait(1000)
        .push_sender(move |info| {
            to_inbox(info);
            Ok::<(), redis::aio::SendError>(())
        })
        .build()
        .map_err(bad)?;
    let con = client.get_pending_async_connection_with_config(
        ClusterConfig::new()
            .set_connection_timeout(Duration::from_millis(500))
            .set_response_timeout(CALL_TIMEOUT),
    );
    Ok(con)
}

/// Most sharded (un)subscribe commands in flight at once: a resync of thousands of client
/// topics goes out in waves rather than as one burst of futures.
const SUBSCRIBE_WAVE: usize = 256;

/// (Un)subscribes `topics` on a Redis Cluster: tagged topics one `SSUBSCRIBE` each (on their
/// slot's shard), the others in one plain command.
pub async fn on_shards(
    c: &ClusterConnection,
    topics: Vec<String>,
    on: bool,
) -> Result<(), RedisError> {
    use futures_util::stream::{self, StreamExt, TryStreamExt};
    let (sharded, plain): (Vec<String>, Vec<String>) =
        topics.into_iter().partition(|t| t.contains('{'));
    if !plain.is_empty() {
        let mut c = c.clone();
        if on {
            c.subscribe(plain).await?;
        } else {
            c.unsubscribe(plain).await?;
        }
    }
    stream::iter(sharded)
        .map(|t| {
            let mut c = c.clone();
            async move {
                if on {
                    c.ssubscribe(t).await
                } else {
                    c.sunsubscribe(t).await
                }
            }
        })
        .buffer_unordered(SUBSCRIBE_WAVE)
        .try_collect::<Vec<()>>()
        .await
        .map(|_| ())
}
