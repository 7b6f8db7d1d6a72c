//! Every Redis key and pub/sub topic name of a cluster, under its `redis_prefix` (§13), so two
//! clusters on one Redis never read each other's keys or hear each other's topics. The Lua
//! scripts get the same prefix baked in when they are built ([`super::scripts::Set::new`]).
//!
//! On a Redis Cluster (`sharded`) the names a step touches together share a hash tag, and the
//! topics carry the tag of what they route: a client id's (`{c:<id>}:t`), a channel's
//! (`{h:<channel>}:t`) or a node's (`{n:<node>}:to`), reached with `SSUBSCRIBE` / `SPUBLISH` on
//! that one shard. A topic with a tag is sharded, one without (`<prefix>:all`) is not: the
//! connection (`connection.rs`) and [`super::Cluster::publish`] tell them apart by that.

use std::sync::Arc;

use crate::stream::{StreamKey, Target};

/// Whose a sharded topic is (see [`Keys::owner`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Owner {
    /// A node's own topic.
    Node(String),
    /// A client id's topic.
    Client(String),
    /// A channel's topic.
    Channel(String),
}

/// The names of one cluster's keys and topics.
#[derive(Clone, Debug)]
pub struct Keys {
    /// `redis_prefix`: validated as 1–64 letters, digits or `- _ .`, so it is safe inside a
    /// Lua string literal and never contains the `{` `}` of a hash tag.
    prefix: Arc<str>,
    /// On a Redis Cluster: tagged topics, per-node keys under the node's tag, no seed key.
    sharded: bool,
}

impl Keys {
    /// Names under `prefix`; `sharded` on a Redis Cluster.
    pub fn new(prefix: &str, sharded: bool) -> Keys {
        Keys {
            prefix: Arc::from(prefix),
            sharded,
        }
    }

    /// Whether the names are laid out for a Redis Cluster.
    pub fn sharded(&self) -> bool {
        self.sharded
    }

    /// The topic of one client id on a Redis Cluster: the nodes holding one of its sessions
    /// listen on it, and a push's step publishes to it on the client's own shard.
    pub fn client_topic(&self, client_id: &str) -> String {
        format!("{}:{{c:{client_id}}}:t", self.prefix)
    }

    /// Where a stream's append publishes: the channel's topic, and on a Redis Cluster the
    /// client id's; empty for a client stream on one Redis (the script then publishes to each
    /// node its presence lists).
    pub fn stream_topic(&self, key: &StreamKey) -> String {
        match key {
            StreamKey::Channel(name) => self.channel_topic(name),
            StreamKey::Client(id) if self.sharded => self.client_topic(id),
            StreamKey::Client(_) => String::new(),
        }
    }

    /// The topic every node listens on for broadcasts and session lookups.
    pub fn all(&self) -> String {
        format!("{}:all", self.prefix)
    }

    /// The topic of one node: pushes to its client ids, replies to its requests.
    pub fn node_topic(&self, node: &str) -> String {
        if self.sharded {
            return format!("{}:{{n:{node}}}:to", self.prefix);
        }
        format!("{}:to:{node}", self.prefix)
    }

    /// The topic of one channel, subscribed only while this node has subscribers to it.
    pub fn channel_topic(&self, channel: &str) -> String {
        if self.sharded {
            return format!("{}:t", self.tag(&StreamKey::channel(channel)));
        }
        format!("{}:ch:{channel}", self.prefix)
    }

    /// The hash-tagged name of a stream: `<prefix>:{c:<client id>}` or `<prefix>:{h:<channel>}`.
    fn tag(&self, key: &StreamKey) -> String {
        match key {
            StreamKey::Client(id) => format!("{}:{{c:{id}}}", self.prefix),
            StreamKey::Channel(name) => format!("{}:{{h:{name}}}", self.prefix),
        }
    }

    /// Whose sharded topic `topic` is: a node's, a client id's or a channel's.
    pub fn owner(&self, topic: &str) -> Option<Owner> {
        let rest = topic.strip_prefix(&*self.prefix)?.strip_prefix(":{")?;
        let (kind, rest) = rest.split_at_checked(2)?;
        match kind {
            "n:" => Some(Owner::Node(rest.strip_suffix("}:to")?.to_string())),
            "c:" => Some(Owner::Client(rest.strip_suffix("}:t")?.to_string())),
            "h:" => Some(Owner::Channel(rest.strip_suffix("}:t")?.to_string())),
            _ => None,
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
        if self.sharded {
            return format!("{}:{{n:{node}}}:clients", self.prefix);
        }
        format!("{}:n:{node}:clients", self.prefix)
    }

    /// A client id's migration mark: the node that closed its sessions with 1012.
    pub fn migrated(&self, client_id: &str) -> String {
        format!("{}:{{c:{client_id}}}:mig", self.prefix)
    }

    /// On a Redis Cluster: when a client id's `offline` is due, beside its presence (the
    /// offline queue only indexes it, see `shard_scripts.rs`).
    pub fn offline_mark(&self, client_id: &str) -> String {
        format!("{}:{{c:{client_id}}}:off", self.prefix)
    }

    /// Live nodes: node → Redis time (ms) of its last heartbeat.
    pub fn nodes(&self) -> String {
        format!("{}:nodes", self.prefix)
    }

    /// Client ids whose last session ended: client id → when their `offline` is due (ms).
    pub fn offline_due(&self) -> String {
        format!("{}:offline", self.prefix)
    }

    /// The cluster's seed of unborn epochs (see `scripts::read`): one key, never expiring. On
    /// a Redis Cluster the shard master's replication id is the seed, and the stream's own meta
    /// key is declared in its place, so the step touches one hash tag.
    pub fn seed(&self, key: &StreamKey) -> String {
        if self.sharded {
            return self.meta(key);
        }
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
        let k = Keys::new("app-2", false);
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
            k.seed(&s),
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

    /// What a Redis Cluster needs: a stream's step touches one tag, topics carry the tag of
    /// what they route (and only they: the connection takes a tagged topic for a sharded one).
    #[test]
    fn sharded_names_keep_a_step_on_one_tag() {
        let k = Keys::new("app", true);
        let s = StreamKey::client("alice");
        assert_eq!(k.seed(&s), k.meta(&s));
        assert_eq!(k.stream_topic(&s), "app:{c:alice}:t");
        let ch = StreamKey::channel("lobby");
        assert_eq!(k.stream_topic(&ch), "app:{h:lobby}:t");
        assert_eq!(k.chan_presence("lobby", "n")[2], "app:{h:lobby}:pg");
        assert_eq!(k.node_topic("n1"), "app:{n:n1}:to");
        assert_eq!(k.node_clients("n1"), "app:{n:n1}:clients");
        assert!(!k.all().contains('{'));
        assert_eq!(k.owner(&k.node_topic("n1")), Some(Owner::Node("n1".into())));
        assert_eq!(
            k.owner(&k.client_topic("a}b")),
            Some(Owner::Client("a}b".into()))
        );
        assert_eq!(
            k.owner(&k.channel_topic("lobby")),
            Some(Owner::Channel("lobby".into()))
        );
        assert_eq!(k.owner(&k.all()), None);
        assert_eq!(k.owner("other:{c:alice}:t"), None);
        let one = Keys::new("app", false);
        assert_eq!(one.stream_topic(&s), "");
        assert!(!one.node_topic("n1").contains('{'));
    }
}
