//! What the cluster adds to the operator views: dashboard samples shared between nodes and the
//! cluster's lines in `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

use super::Cluster;
use crate::stream::EngineError;

impl Cluster {
    /// Hands the newest dashboard sample to the upkeep, which shares it with the cluster.
    pub fn share_sample(&self, json: String) {
        *self.sample.lock() = Some(json);
    }

    /// Takes the sample waiting to be shared.
    pub(super) fn take_sample(&self) -> Option<String> {
        self.sample.lock().take()
    }

    /// Appends this node's newest dashboard sample to its list in Redis (kept short, and gone a
    /// while after the node stops).
    pub(super) async fn upload_sample(&self) {
        let Some(sample) = self.take_sample() else {
            return;
        };
        let key = self.keys.dashboard(&self.node);
        let keep = super::scripts::DASH_SAMPLES as i64;
        let ttl = (self.node_ttl * 4).as_millis() as u64;
        // One key: a pipeline stays in one slot on a Redis Cluster too.
        let mut pipe = redis::pipe();
        pipe.cmd("RPUSH").arg(&key).arg(sample).ignore();
        pipe.cmd("LTRIM").arg(&key).arg(-keep).arg(-1).ignore();
        pipe.cmd("PEXPIRE").arg(&key).arg(ttl).ignore();
        let mut con = self.conn();
        let _ = self
            .call("dashboard", async move {
                pipe.query_async::<()>(&mut con).await
            })
            .await;
    }

    /// Every live node's recent dashboard samples, as (node, JSON array) pairs.
    pub async fn dashboards(&self) -> Result<Vec<(String, String)>, EngineError> {
        if self.keys.sharded() {
            return self.dashboards_sharded().await;
        }
        let mut con = self.conn();
        let script = &self.scripts.read_dashboards;
        let nodes = self.keys.nodes();
        let ttl = self.node_ttl.as_millis() as u64;
        let flat: Vec<String> = self
            .call("dashboard", async move {
                script.key(nodes).arg(ttl).invoke_async(&mut con).await
            })
            .await?;
        Ok(flat
            .chunks_exact(2)
            .map(|p| (p[0].clone(), p[1].clone()))
            .collect())
    }

    /// The cluster's lines of `/metrics`.
    pub fn render_metrics(&self, o: &mut String) {
        let s = &self.stats;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        crate::metrics::gauge(
            o,
            "tether_cluster_up",
            "1 while Redis answers; 0 while this node delivers locally only (degraded).",
            u64::from(self.is_up()),
        );
        crate::metrics::gauge(
            o,
            "tether_cluster_nodes",
            "Live nodes at the last heartbeat, this one included.",
            load(&s.nodes),
        );
        crate::metrics::counter(
            o,
            "tether_cluster_redis_errors_total",
            "Redis calls that failed or timed out.",
            load(&s.errors),
        );
        crate::metrics::counter(
            o,
            "tether_cluster_partial_total",
            "Deliveries answered partial (a node did not answer in time).",
            load(&s.partial),
        );
        crate::metrics::counter(
            o,
            "tether_cluster_recoveries_total",
            "Times Redis became reachable (the first connection included).",
            load(&s.recoveries),
        );
        crate::metrics::counter(
            o,
            "tether_cluster_malformed_total",
            "Cluster messages dropped because they did not parse.",
            self.malformed(),
        );
        crate::metrics::counter(
            o,
            "tether_cluster_rejected_total",
            "Cluster messages dropped for a missing or bad cluster_secret signature.",
            load(&self.signer.rejected),
        );
        crate::metrics::counter(
            o,
            "tether_cluster_replies_dropped_total",
            "Replies to other nodes dropped (reply queue full, or not to a listed node).",
            load(&self.inbox.replies_dropped),
        );
    }
}
