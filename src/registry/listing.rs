//! One session as `GET /api/v1/sessions` lists it. Shared by the API (this node's sessions) and
//! the cluster (a node's part of a cluster-wide listing), so both render the same fields.

use std::fmt::Write;
use std::sync::Arc;

use crate::id::SessionId;
use crate::outbox::Outbox;
use crate::protocol::{json_str, push_json_str, push_timestamp};

/// Room reserved per session in a listing; most entries fit, so the buffer rarely grows.
const ENTRY_BYTES: usize = 224;

/// The largest page (`?limit=`) of a listing, also what a node answers another at most.
pub const PAGE_MAX: usize = 10_000;

/// The JSON objects of `sessions`, comma-separated without brackets, so the parts from several
/// nodes join into one list; `now_ms` is the liveness clock's reading.
pub fn render(sessions: &[Arc<Outbox>], node: &str, now_ms: u64) -> String {
    let node = json_str(node);
    let mut out = String::with_capacity(sessions.len() * ENTRY_BYTES);
    for (i, outbox) in sessions.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_object(&mut out, outbox, &node, now_ms);
    }
    out
}

/// One page of `sessions`: at most `limit` whose ids sort after `after`, lowest first.
pub fn page(
    mut sessions: Vec<Arc<Outbox>>,
    after: Option<SessionId>,
    limit: usize,
) -> Vec<Arc<Outbox>> {
    if let Some(after) = after {
        sessions.retain(|o| o.id > after);
    }
    sessions.sort_by_key(|o| o.id);
    sessions.truncate(limit);
    sessions
}

/// This node's part of a cluster-wide page (see [`page`]), one `<session id> <JSON object>`
/// line each, so the asking node can merge the parts by id without parsing JSON.
pub fn render_page(
    sessions: Vec<Arc<Outbox>>,
    after: Option<SessionId>,
    limit: usize,
    node: &str,
    now_ms: u64,
) -> String {
    let sessions = page(sessions, after, limit);
    let node = json_str(node);
    let mut out = String::with_capacity(sessions.len() * (ENTRY_BYTES + 17));
    for outbox in &sessions {
        // Writing to a String cannot fail.
        let _ = write!(out, "{} ", outbox.id);
        push_object(&mut out, outbox, &node, now_ms);
        out.push('\n');
    }
    out
}

/// Joins the nodes' pages (see [`render_page`]) into one: the `limit` lowest ids of them all,
/// as comma-separated objects. Lines that are not `<id> {…}` are left out and counted: they
/// come from Redis, which is input like any other.
pub fn merge_pages<'a>(parts: impl IntoIterator<Item = &'a [u8]>, limit: usize) -> (String, usize) {
    let mut entries: Vec<(SessionId, &str)> = Vec::new();
    let mut bad = 0;
    for part in parts {
        for line in part.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let parsed = std::str::from_utf8(line).ok().and_then(|l| {
                let (id, object) = l.split_once(' ')?;
                let well_formed = object.starts_with('{') && object.ends_with('}');
                Some((SessionId::parse(id)?, object)).filter(|_| well_formed)
            });
            match parsed {
                Some(entry) => entries.push(entry),
                None => bad += 1,
            }
        }
    }
    entries.sort_by_key(|(id, _)| *id);
    entries.dedup_by_key(|(id, _)| *id);
    entries.truncate(limit);
    let objects: Vec<&str> = entries.iter().map(|(_, object)| *object).collect();
    (objects.join(","), bad)
}

/// Appends one session's JSON object; `node` is already a JSON string. Written in place, with
/// no allocation per session: a listing of thousands would otherwise scatter small buffers
/// between the sessions' own allocations and leave half-used pages behind.
fn push_object(out: &mut String, outbox: &Outbox, node: &str, now_ms: u64) {
    let addr = outbox.remote();
    // Writing to a String cannot fail.
    let _ = write!(out, "{{\"session_id\":\"{}\",\"client_id\":", outbox.id);
    push_json_str(out, &outbox.client_id);
    let _ = write!(out, ",\"node\":{node},\"remote_addr\":\"");
    let _ = match addr.port() {
        0 => write!(out, "{}", addr.ip()),
        _ => write!(out, "{addr}"),
    };
    out.push_str("\",\"connected_at\":\"");
    push_timestamp(out, outbox.connected_at());
    let _ = write!(
        out,
        "\",\"last_seen_ms_ago\":{},\"channels\":[",
        now_ms.saturating_sub(outbox.last_seen())
    );
    for (i, c) in outbox.channel_list().iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_str(out, c);
    }
    out.push_str("]}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_merge_by_id_and_hostile_lines_are_left_out() {
        let a = b"0000000000000003 {\"n\":3}\n0000000000000009 {\"n\":9}\n".as_slice();
        let b = b"0000000000000001 {\"n\":1}\nnot a line\n00000000000000zz {\"x\":1}\n\
                  0000000000000004 no-object\n0000000000000003 {\"n\":3}\n"
            .as_slice();
        let (merged, bad) = merge_pages([a, b], 3);
        assert_eq!(merged, r#"{"n":1},{"n":3},{"n":9}"#);
        assert_eq!(bad, 3);
        assert_eq!(merge_pages([a, b], 1).0, r#"{"n":1}"#);
        assert_eq!(merge_pages(std::iter::empty(), 5), (String::new(), 0));
    }
}
