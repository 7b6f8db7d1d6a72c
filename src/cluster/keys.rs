//! Every Redis key and pub/sub topic name of a cluster, under its `redis_prefix` (§13), so two
//! clusters on one Redis never read each other's keys or hear each other's topics. The Lua
//! scripts get the same prefix baked in when they are built ([`super::scripts::Set::new`]).

use std::sync::Arc;

use crate::stream::{StreamKey, Target};

/// The names of one cluster's keys and topics.
#[derive(Clone, Debug)]
pub struct Keys {
    /// `redis_prefix`: validated as 1–64 letters, digits or `- _ .`, so it is safe inside a
    /// Lua string literal and never contains the `{` `}` of a hash tag.
    prefix: Arc<str>,
}

impl Keys {
    /// Names under `prefix`.
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: Arc::from(prefix),
        }
    }

    /// The topic every node listens on for broadcasts and session lookups.
    pub fn all(&self) -> String {
        format!("{}:all", self.prefix)
    }

    /// The topic of one node: pushes to its client ids, replies to its requests.
    pub fn node_topic(&self, node: &str) -> String {
        format!("{}:to:{node}", self.prefix)
    }

    /// The topic of one channel, subscribed only while this node has subscribers to it.
    pub fn channel_topic(&self, channel: &str) -> String {
        format!("{}:ch:{channel}", self.prefix)
    }

    /// The hash-tagged name of a stream: `<prefix>:{c:<client id>}` or `<prefix>:{h:<channel>}`.
    fn tag(&self, key: &StreamKey) -> String {
        match key {
            StreamKey::Client(id) => format!("{}:{{c:{id}}}", self.prefix),
            StreamKey::Channel(name) => format!("{}:{{h:{name}}}", self.prefix),
        }
    }

    /// A stream's epoch (`e`) and top seq (`t`).
    pub fn meta(&self, key: &StreamKey) -> String {
        format!("{}:m", self.tag(key))
    }

    /// A stream's history: a list of `<at_ms> <frame>`, oldest first, contiguous seqs up to top.
    pub fn log(&self, key: &StreamKey) -> String {
        format!("{}:l", self.tag(key))
    }

    /// Which nodes hold sessions of a client id: node → session count.
    pub fn presence(&self, client_id: &str) -> String {
        format!("{}:{{c:{client_id}}}:p", self.prefix)
    }

    /// The channels the API subscribed a client id to (a set), for its later sessions.
    pub fn subs(&self, client_id: &str) -> String {
        format!("{}:{{c:{client_id}}}:subs", self.prefix)
    }

    /// The blocks in force: client id → until (Unix ms). One key: `GET /api/v1/blocks` lists it.
    pub fn blocks(&self) -> String {
        format!("{}:blocks", self.prefix)
    }

    /// The client ids a node holds, so a surviving node can clear a dead one's presence.
    pub fn node_clients(&self, node: &str) -> String {
        format!("{}:n:{node}:clients", self.prefix)
    }

    /// Live nodes: node → Redis time (ms) of its last heartbeat.
    pub fn nodes(&self) -> String {
        format!("{}:nodes", self.prefix)
    }

    /// Client ids whose last session ended: client id → when their `offline` is due (ms).
    pub fn offline_due(&self) -> String {
        format!("{}:offline", self.prefix)
    }

    /// The cluster's seed of unborn epochs (see `scripts::read`): one key, never expiring.
    pub fn seed(&self) -> String {
        format!("{}:seed", self.prefix)
    }

    /// A presence channel's keys, one hash tag (the channel stream's): `:pn:<node>` (client id →
    /// sessions on that node), `:pc` (client id → sessions on every node) and `:pg` (client
    /// ids whose last session left, scored by when their `leave` is due).
    pub fn chan_presence(&self, channel: &str, node: &str) -> [String; 3] {
        let tag = self.tag(&StreamKey::channel(channel));
        [
            format!("{tag}:pn:{node}"),
            format!("{tag}:pc"),
            format!("{tag}:pg"),
        ]
    }

    /// The presence channels a node has entries in, so a survivor can clear a dead one's.
    pub fn node_channels(&self, node: &str) -> String {
        format!("{}:n:{node}:pch", self.prefix)
    }

    /// Pending `leave` events: `<channel>\n<client id>` scored by when it is due (ms), an
    /// index into the channels' `:pg` keys, so any node finds what is due.
    pub fn leaves_due(&self) -> String {
        format!("{}:pdue", self.prefix)
    }

    /// A node's list of recent dashboard samples (JSON objects).
    pub fn dashboard(&self, node: &str) -> String {
        format!("{}:dash:{node}", self.prefix)
    }

    /// An idempotency key; lengths keep `c:a` + `b:c` apart from `c:a:b` + `c`.
    pub fn idempotency(&self, target: &Target, key: &str) -> String {
        let (t, name) = match target {
            Target::Client(n) => ('c', n),
            Target::Channel(n) => ('h', n),
            Target::Session(n) => ('s', n),
        };
        format!("{}:i:{t}:{}:{name}:{key}", self.prefix, name.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_starts_with_the_prefix() {
        let k = Keys::new("app-2");
        let s = StreamKey::client("alice");
        for name in [
            k.all(),
            k.node_topic("n"),
            k.channel_topic("c"),
            k.meta(&s),
            k.log(&s),
            k.presence("alice"),
            k.node_clients("n"),
            k.nodes(),
            k.offline_due(),
            k.seed(),
            k.dashboard("n"),
            k.subs("alice"),
            k.blocks(),
            k.node_channels("n"),
            k.leaves_due(),
            k.chan_presence("lobby", "n")[0].clone(),
            k.idempotency(&Target::Client("alice".into()), "k"),
        ] {
            assert!(name.starts_with("app-2:"), "{name}");
        }
        assert_eq!(k.meta(&s), "app-2:{c:alice}:m");
        assert_eq!(k.presence("alice"), "app-2:{c:alice}:p");
        assert_eq!(k.subs("alice"), "app-2:{c:alice}:subs");
        assert_eq!(k.chan_presence("lobby", "n")[1], "app-2:{h:lobby}:pc");
    }
}
