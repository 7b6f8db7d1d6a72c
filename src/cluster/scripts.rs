//! The Redis keys and Lua scripts of the cluster. Each script is one atomic step on the Redis
//! side, so two nodes racing never see half of another's change: appending to history and
//! publishing it to the nodes that hold a recipient happen in the same step, which is why
//! history and live delivery never disagree.
//!
//! Key names come from [`super::keys::Keys`]; keys of one stream share a hash tag
//! (`<prefix>:{c:alice}:…`). The scripts that touch presence of many client ids build key names
//! inside Lua, with the cluster's prefix baked into their source, which a Redis Cluster would
//! refuse: there their per-client versions in `shard_scripts.rs` run instead, one hash tag per
//! step, and the scripts that publish use `SPUBLISH` to a topic of their own tag (see
//! docs/cluster.md § Redis Cluster).

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
    /// Channel presence ([`super::channel_scripts`]).
    pub chan_set: Script,
    /// Channel presence: a node's entries cleared.
    pub chan_clear: Script,
    /// Channel presence: one queued leave taken.
    pub chan_take: Script,
    /// Channel presence: the due queued leaves.
    pub chan_due: Script,
    /// Channel presence: one due entry settled.
    pub chan_settle: Script,
    /// On a Redis Cluster: the steps that keep presence per client id
    /// ([`super::shard_scripts`]).
    pub shard: super::shard_scripts::Shard,
}

impl Set {
    /// All scripts, with the cluster's `prefix` in the key names they build; `sharded` on a
    /// Redis Cluster, whose scripts publish with `SPUBLISH`.
    pub fn new(prefix: &str, sharded: bool) -> Set {
        let publish = if sharded { "SPUBLISH" } else { "PUBLISH" };
        Set {
            append: append(prefix, publish),
            route_client: route_client(prefix),
            read: read(),
            set_presence: set_presence(prefix),
            take_offline: take_offline(prefix),
            heartbeat: heartbeat(),
            reap_node: reap_node(prefix),
            read_presence: read_presence(),
            read_dashboards: read_dashboards(prefix),
            chan_set: super::channel_scripts::set(publish),
            chan_clear: super::channel_scripts::clear(),
            chan_take: super::channel_scripts::take(publish),
            chan_due: super::channel_scripts::due(),
            chan_settle: super::channel_scripts::settle(),
            shard: super::shard_scripts::Shard::new(),
        }
    }
}

/// Redis's clock in ms, the one clock every node agrees on.
const NOW: &str = "local t = redis.call('TIME')\n\
     local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n";

/// The epoch a stream of meta key `KEYS[1]` is created with at Redis time `now`, given the
/// cluster's seed in `seed`: the same for every node within one `history_ttl` (ARGV`[ttl]`)
/// window, so a `welcome` for a stream with no keys can name the epoch its first append will
/// give it without creating anything. A stream that expired was last appended to at least
/// `history_ttl` before, so it is re-created in a later window with another epoch, and an old
/// position never matches it. A Redis that lost everything loses the seed too: a new one
/// gives every stream new epochs.
fn unborn(ttl: &str, replicated: &str) -> String {
    format!(
        "{MASTER}
local rid = master_id({replicated})
local function unborn(seed)
  local window = string.format('%d', math.floor(now / math.max(tonumber({ttl}), 1)))
  return string.sub(redis.sha1hex(seed .. '\\n' .. KEYS[1] .. '\\n' .. window), 1, 12)
end
-- The epoch a stream last written under another master continues with: that master may
-- have acknowledged writes its replica never received, so positions in the old epoch must
-- not be taken for recovered.
local function moved_on(epoch)
  return string.sub(redis.sha1hex(epoch .. '\\n' .. rid), 1, 12)
end
"
    )
}

/// Behind Sentinel or in a Redis Cluster (ARGV flag `'1'`), the identity of the master this
/// script runs on: its replication id, which a promoted replica (and a restarted server)
/// changes. Nil on a single Redis, whose streams never roll over on their own. Where it is
/// set it is also the seed of unborn epochs, so the seed key is declared but never touched
/// and every key a script touches has the stream's hash tag.
const MASTER: &str = "local function master_id(flag)
  if flag ~= '1' then return nil end
  return string.match(redis.call('INFO', 'replication'), 'master_replid:(%x+)')
end
";

/// Appends one message and publishes it; the only script that creates a stream.
///
/// KEYS: meta, log, presence (client streams; the meta again for channels), seed.
/// ARGV: head, tail, history_size, history_ttl_ms, a new seed (used if the cluster has none),
/// header prefix, target, topic (a channel's topic; empty: publish to each node in presence),
/// the message's signature field (see `sign.rs`; signed in Rust, so no secret reaches Redis),
/// `'1'` when a failover can lose writes (see [`MASTER`]): a stream last written under another
/// master then starts again at seq 1 in a new epoch, its old history dropped.
/// Both keys live `history_ttl` after the last append: metadata as long as its history.
/// On a Redis Cluster the topic is the stream's own (a client id's too) and `publish` is
/// `SPUBLISH`, so the step stays on the stream's shard.
/// Returns `{epoch, seq, nodes that received it}`.
pub fn append(p: &str, publish: &str) -> Script {
    Script::new(&format!(
        "{NOW}{unborn}
local epoch = redis.call('HGET', KEYS[1], 'e')
local was = rid and redis.call('HGET', KEYS[1], 'r')
if epoch and rid and was ~= rid then
  epoch = moved_on(epoch)
  redis.call('HSET', KEYS[1], 'e', epoch, 't', 0)
  redis.call('DEL', KEYS[2])
end
if not epoch then
  local seed = rid or redis.call('GET', KEYS[4])
  if not seed then
    seed = ARGV[5]
    redis.call('SET', KEYS[4], seed)
  end
  epoch = unborn(seed)
  redis.call('HSET', KEYS[1], 'e', epoch, 't', 0)
  redis.call('DEL', KEYS[2])
end
if rid and was ~= rid then redis.call('HSET', KEYS[1], 'r', rid) end
local seq = redis.call('HINCRBY', KEYS[1], 't', 1)
local frame = ARGV[1] .. seq .. ARGV[2]
redis.call('RPUSH', KEYS[2], string.format('%d', now) .. ' ' .. frame)
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[3]), -1)
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
local msg = ARGV[6] .. ' ' .. epoch .. ' ' .. seq .. ' ' .. #ARGV[7] .. ' ' .. ARGV[9] .. '\\n' .. ARGV[7] .. frame
local nodes = 0
if ARGV[8] ~= '' then
  nodes = redis.call('{publish}', ARGV[8], msg)
else
  for _, n in ipairs(redis.call('HKEYS', KEYS[3])) do
    if redis.call('PUBLISH', '{p}:to:' .. n, msg) > 0 then nodes = nodes + 1 end
  end
end
return {{epoch, seq, nodes}}",
        unborn = unborn("ARGV[4]", "ARGV[10]")
    ))
}

/// Publishes an unsequenced message to each node holding a client id.
///
/// KEYS: presence. ARGV: the whole encoded message. Returns the nodes that received it.
pub fn route_client(p: &str) -> Script {
    Script::new(&format!(
        "local nodes = 0
for _, n in ipairs(redis.call('HKEYS', KEYS[1])) do
  if redis.call('PUBLISH', '{p}:to:' .. n, ARGV[1]) > 0 then nodes = nodes + 1 end
end
return nodes"
    ))
}

/// Reads a stream for a resume or a `welcome`; creates no stream (only appends do).
///
/// KEYS: meta, log, seed. ARGV: history_ttl_ms, since seq (`-1`: the position only), a new
/// seed (used if the cluster has none), the failover flag of [`append`]: a stream last written
/// under another master reads as what its next append makes of it, a new epoch with nothing
/// held. Returns `{epoch, top, now, entries…}` where the entries
/// are those after `since` (all for `0`), oldest first; a stream with no keys answers its
/// unborn epoch (see [`unborn`]) and top 0.
pub fn read() -> Script {
    Script::new(&format!(
        "{NOW}{unborn}
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  local seed = rid or redis.call('GET', KEYS[3])
  if not seed then
    seed = ARGV[3]
    redis.call('SET', KEYS[3], seed)
  end
  return {{unborn(seed), 0, string.format('%d', now)}}
end
if rid and redis.call('HGET', KEYS[1], 'r') ~= rid then
  return {{moved_on(epoch), 0, string.format('%d', now)}}
end
local top = tonumber(redis.call('HGET', KEYS[1], 't'))
local out = {{epoch, top, string.format('%d', now)}}
local since = tonumber(ARGV[2])
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
return out",
        unborn = unborn("ARGV[1]", "ARGV[4]")
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
pub fn set_presence(p: &str) -> Script {
    Script::new(&format!(
        "{NOW}
local out = {{}}
for i = 4, #ARGV, 3 do
  local c = ARGV[i]
  local p = '{p}:{{c:' .. c .. '}}:p'
  local mig = '{p}:{{c:' .. c .. '}}:mig'
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
pub fn take_offline(p: &str) -> Script {
    Script::new(&format!(
        "{NOW}
local fire = {{}}
for _, c in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))) do
  redis.call('ZREM', KEYS[1], c)
  if redis.call('EXISTS', '{p}:{{c:' .. c .. '}}:p') == 0 then table.insert(fire, c) end
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
pub fn reap_node(p: &str) -> Script {
    Script::new(&format!(
        "{NOW}
local seen = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not seen or tonumber(seen) > now - tonumber(ARGV[2]) then return -1 end
redis.call('ZREM', KEYS[1], ARGV[1])
local cleared = 0
for _, c in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local p = '{p}:{{c:' .. c .. '}}:p'
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

/// Every live node's recent dashboard samples.
///
/// KEYS: nodes. ARGV: node_ttl in ms. Returns `{node, "[sample,…]", node, …}`.
pub fn read_dashboards(p: &str) -> Script {
    Script::new(&format!(
        "{NOW}
local out = {{}}
for _, n in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], now - tonumber(ARGV[1]), '+inf')) do
  table.insert(out, n)
  table.insert(out, '[' .. table.concat(redis.call('LRANGE', '{p}:dash:' .. n, 0, -1), ',') .. ']')
end
return out"
    ))
}
