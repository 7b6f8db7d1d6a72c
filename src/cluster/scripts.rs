//! The Redis keys and Lua scripts of the cluster. Each script is one atomic step on the Redis
//! side, so two nodes racing never see half of another's change: appending to history and
//! publishing it to the nodes that hold a recipient happen in the same step, which is why
//! history and live delivery never disagree.
//!
//! Keys of one stream share a hash tag (`tether:{c:alice}:…`). The scripts that touch presence
//! of many client ids build key names inside Lua, which a Redis Cluster would refuse; a single
//! Redis (or one behind Sentinel's failover address) is what is supported, see docs/cluster.md.

use redis::Script;

/// Every script, hashed once at startup.
pub struct Set {
    /// [`append`].
    pub append: Script,
    /// [`route_client`].
    pub route_client: Script,
    /// [`read`].
    pub read: Script,
    /// [`set_presence`].
    pub set_presence: Script,
    /// [`take_offline`].
    pub take_offline: Script,
    /// [`heartbeat`].
    pub heartbeat: Script,
    /// [`reap_node`].
    pub reap_node: Script,
    /// [`read_presence`].
    pub read_presence: Script,
    /// [`read_dashboards`].
    pub read_dashboards: Script,
}

impl Set {
    /// All scripts.
    pub fn new() -> Set {
        Set {
            append: append(),
            route_client: route_client(),
            read: read(),
            set_presence: set_presence(),
            take_offline: take_offline(),
            heartbeat: heartbeat(),
            reap_node: reap_node(),
            read_presence: read_presence(),
            read_dashboards: read_dashboards(),
        }
    }
}

use crate::engine::{StreamKey, Target};

/// The hash-tagged name of a stream: `c:<client id>` or `h:<channel>`.
fn tag(key: &StreamKey) -> String {
    match key {
        StreamKey::Client(id) => format!("tether:{{c:{id}}}"),
        StreamKey::Channel(name) => format!("tether:{{h:{name}}}"),
    }
}

/// A stream's epoch (`e`) and top seq (`t`).
pub fn meta(key: &StreamKey) -> String {
    format!("{}:m", tag(key))
}

/// A stream's history: a list of `<at_ms> <frame>`, oldest first, contiguous seqs up to top.
pub fn log(key: &StreamKey) -> String {
    format!("{}:l", tag(key))
}

/// Which nodes hold sessions of a client id: node → session count.
pub fn presence(client_id: &str) -> String {
    format!("tether:{{c:{client_id}}}:p")
}

/// The client ids a node holds, so a surviving node can clear a dead one's presence.
pub fn node_clients(node: &str) -> String {
    format!("tether:n:{node}:clients")
}

/// Live nodes: node → Redis time (ms) of its last heartbeat.
pub const NODES: &str = "tether:nodes";

/// Client ids whose last session ended: client id → when their `offline` is due (ms).
pub const OFFLINE_DUE: &str = "tether:offline";

/// An idempotency key; lengths keep `c:a` + `b:c` apart from `c:a:b` + `c`.
pub fn idempotency(target: &Target, key: &str) -> String {
    let (t, name) = match target {
        Target::Client(n) => ('c', n),
        Target::Channel(n) => ('h', n),
        Target::Session(n) => ('s', n),
    };
    format!("tether:i:{t}:{}:{name}:{key}", name.len())
}

/// Redis's clock in ms, the one clock every node agrees on.
const NOW: &str = "local t = redis.call('TIME')\n\
     local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n";

/// Appends one message and publishes it.
///
/// KEYS: meta, log, presence (client streams; ignored for channels).
/// ARGV: head, tail, history_size, history_ttl_ms, meta_ttl_ms, new epoch, header prefix,
/// target, topic (a channel's topic; empty: publish to each node in presence).
/// Returns `{epoch, seq, nodes that received it}`.
pub fn append() -> Script {
    Script::new(&format!(
        "{NOW}
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[6]
  redis.call('HSET', KEYS[1], 'e', epoch, 't', 0)
  redis.call('DEL', KEYS[2])
end
local seq = redis.call('HINCRBY', KEYS[1], 't', 1)
local frame = ARGV[1] .. seq .. ARGV[2]
redis.call('RPUSH', KEYS[2], string.format('%d', now) .. ' ' .. frame)
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[3]), -1)
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
local msg = ARGV[7] .. ' ' .. epoch .. ' ' .. seq .. ' ' .. #ARGV[8] .. '\\n' .. ARGV[8] .. frame
local nodes = 0
if ARGV[9] ~= '' then
  nodes = redis.call('PUBLISH', ARGV[9], msg)
else
  for _, n in ipairs(redis.call('HKEYS', KEYS[3])) do
    if redis.call('PUBLISH', 'tether:to:' .. n, msg) > 0 then nodes = nodes + 1 end
  end
end
return {{epoch, seq, nodes}}"
    ))
}

/// Publishes an unsequenced message to each node holding a client id.
///
/// KEYS: presence. ARGV: the whole encoded message. Returns the nodes that received it.
pub fn route_client() -> Script {
    Script::new(
        "local nodes = 0
for _, n in ipairs(redis.call('HKEYS', KEYS[1])) do
  if redis.call('PUBLISH', 'tether:to:' .. n, ARGV[1]) > 0 then nodes = nodes + 1 end
end
return nodes",
    )
}

/// Reads a stream for a resume, creating it when asked.
///
/// KEYS: meta, log. ARGV: new epoch, meta_ttl_ms, create (`1`/`0`), since seq (`-1`: the
/// position only). Returns `{}` for a missing stream not created, else `{epoch, top, now, entries…}`
/// where the entries are those after `since` (all for `0`), oldest first.
pub fn read() -> Script {
    Script::new(&format!(
        "{NOW}
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  if ARGV[3] == '0' then return {{}} end
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'e', epoch, 't', 0)
  redis.call('DEL', KEYS[2])
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local top = tonumber(redis.call('HGET', KEYS[1], 't'))
local out = {{epoch, top, string.format('%d', now)}}
local since = tonumber(ARGV[4])
if since < 0 then return out end
local len = redis.call('LLEN', KEYS[2])
local first = top - len + 1
local from = since + 1
if from < first then from = first end
if from <= top then
  for _, e in ipairs(redis.call('LRANGE', KEYS[2], from - first, -1)) do
    table.insert(out, e)
  end
end
return out"
    ))
}

/// Writes this node's session counts of a batch of client ids and tells, for each, whether it
/// came online or went away cluster-wide, and which node its sessions migrated from.
///
/// KEYS: this node's clients, the offline queue. ARGV: node, offline_grace in ms, migration
/// memory in ms, then triples of client id, count and `1` when a session of it here was just
/// closed with 1012 (a migration starts). Returns two values per triple: 1 (online: its first
/// session anywhere, not a return within the grace), -1 (its last session anywhere ended:
/// `offline` is queued) or 0; and the node it migrated from, or an empty string.
pub fn set_presence() -> Script {
    Script::new(&format!(
        "{NOW}
local out = {{}}
for i = 4, #ARGV, 3 do
  local c = ARGV[i]
  local p = 'tether:{{c:' .. c .. '}}:p'
  local mig = 'tether:{{c:' .. c .. '}}:mig'
  local n = tonumber(ARGV[i + 1])
  local r = 0
  local from = ''
  if ARGV[i + 2] == '1' then
    redis.call('SET', mig, ARGV[1], 'PX', ARGV[3])
  end
  if n > 0 then
    local before = redis.call('HLEN', p)
    redis.call('HSET', p, ARGV[1], n)
    redis.call('SADD', KEYS[1], c)
    if before == 0 and redis.call('ZREM', KEYS[2], c) == 0 then r = 1 end
    local m = redis.call('GET', mig)
    if m and m ~= ARGV[1] then from = m end
  else
    redis.call('SREM', KEYS[1], c)
    if redis.call('HDEL', p, ARGV[1]) == 1 and redis.call('HLEN', p) == 0 then
      redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), c)
      r = -1
    end
  end
  table.insert(out, r)
  table.insert(out, from)
end
return out"
    ))
}

/// Takes the client ids whose `offline` is due and still offline; each is taken by exactly
/// one node, so `offline` fires once cluster-wide.
///
/// KEYS: the offline queue. ARGV: most to take. Returns the client ids to announce.
pub fn take_offline() -> Script {
    Script::new(&format!(
        "{NOW}
local fire = {{}}
for _, c in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))) do
  redis.call('ZREM', KEYS[1], c)
  if redis.call('EXISTS', 'tether:{{c:' .. c .. '}}:p') == 0 then table.insert(fire, c) end
end
return fire"
    ))
}

/// A node's heartbeat. KEYS: nodes. ARGV: node, node_ttl in ms. Returns `{1 if the node was
/// not listed (new, or declared dead meanwhile), live nodes, dead nodes…}`.
pub fn heartbeat() -> Script {
    Script::new(&format!(
        "{NOW}
local fresh = redis.call('ZADD', KEYS[1], now, ARGV[1])
local alive = redis.call('ZCOUNT', KEYS[1], now - tonumber(ARGV[2]), '+inf')
local out = {{fresh, alive}}
for _, n in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))) do
  table.insert(out, n)
end
return out"
    ))
}

/// Clears a dead node's presence; only the first node to call it for that node does the work.
///
/// KEYS: nodes, the dead node's clients, the offline queue. ARGV: the dead node, node_ttl in
/// ms. Returns the number of client ids it cleared, or -1 when the node is alive or was
/// already cleared.
pub fn reap_node() -> Script {
    Script::new(&format!(
        "{NOW}
local seen = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not seen or tonumber(seen) > now - tonumber(ARGV[2]) then return -1 end
redis.call('ZREM', KEYS[1], ARGV[1])
local cleared = 0
for _, c in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local p = 'tether:{{c:' .. c .. '}}:p'
  redis.call('HDEL', p, ARGV[1])
  if redis.call('HLEN', p) == 0 then redis.call('ZADD', KEYS[3], now, c) end
  cleared = cleared + 1
end
redis.call('DEL', KEYS[2])
return cleared"
    ))
}

/// Presence of one client id as the API shows it: the nodes in presence that are alive.
///
/// KEYS: presence, nodes. ARGV: node_ttl in ms. Returns `{node, count, node, count, …}`.
pub fn read_presence() -> Script {
    Script::new(&format!(
        "{NOW}
local out = {{}}
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  local seen = redis.call('ZSCORE', KEYS[2], fields[i])
  if seen and tonumber(seen) > now - tonumber(ARGV[1]) then
    table.insert(out, fields[i])
    table.insert(out, fields[i + 1])
  end
end
return out"
    ))
}

/// How many of a node's samples the cluster keeps for the dashboards (two minutes).
pub const DASH_SAMPLES: usize = 120;

/// A node's list of recent dashboard samples (JSON objects).
pub fn dashboard(node: &str) -> String {
    format!("tether:dash:{node}")
}

/// Every live node's recent dashboard samples.
///
/// KEYS: nodes. ARGV: node_ttl in ms. Returns `{node, "[sample,…]", node, …}`.
pub fn read_dashboards() -> Script {
    Script::new(&format!(
        "{NOW}
local out = {{}}
for _, n in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], now - tonumber(ARGV[1]), '+inf')) do
  table.insert(out, n)
  table.insert(out, '[' .. table.concat(redis.call('LRANGE', 'tether:dash:' .. n, 0, -1), ',') .. ']')
end
return out"
    ))
}
