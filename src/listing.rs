//! One session as `GET /api/v1/sessions` lists it. Shared by the API (this node's sessions) and
//! the cluster (a node's part of a cluster-wide listing), so both render the same fields.

use std::sync::Arc;

use crate::outbox::Outbox;
use crate::protocol::{json_str, timestamp};

/// The JSON objects of `sessions`, comma-separated without brackets, so the parts from several
/// nodes join into one list; `now_ms` is the liveness clock's reading.
pub fn render(sessions: &[Arc<Outbox>], node: &str, now_ms: u64) -> String {
    let node = json_str(node);
    let mut out = String::new();
    for (i, h) in sessions.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let addr = h.remote();
        let remote = if addr.port() == 0 {
            addr.ip().to_string()
        } else {
            addr.to_string()
        };
        let channels: Vec<String> = h.channel_list().iter().map(|c| json_str(c)).collect();
        out.push_str(&format!(
            "{{\"session_id\":\"{}\",\"client_id\":{},\"node\":{node},\"remote_addr\":{},\"connected_at\":\"{}\",\"last_seen_ms_ago\":{},\"channels\":[{}]}}",
            h.id,
            json_str(&h.client_id),
            json_str(&remote),
            timestamp(h.connected_at()),
            now_ms.saturating_sub(h.last_seen()),
            channels.join(",")
        ));
    }
    out
}
