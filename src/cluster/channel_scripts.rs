//! The Lua steps of channel presence (docs/protocol.md §14). Each touches the keys of one
//! presence channel only, all under the channel's hash tag (`keys::Keys::chan_presence`), or
//! the `leaves_due` index only, so each step stays valid on a Redis Cluster.
//!
//! A client id's `join` is decided in the step that takes its cluster-wide count from 0 (and
//! not back within the grace); its `leave` is queued in the step that takes it to 0 and fired by
//! the one node whose take finds it still gone: so each happens once cluster-wide. The step
//! that decides an event also publishes it (a message the node sealed beforehand), so every
//! node hears a client id's `join` and `leave` in the order Redis decided them, whichever
//! nodes decided them. On a Redis Cluster the channel's topic carries the channel's tag and
//! `publish` is `SPUBLISH`, so the step stays on the channel's shard.

use redis::Script;

/// Redis's clock in ms.
const NOW: &str = "local t = redis.call('TIME')\n\
     local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n";

/// Writes one node's session counts of client ids on one channel.
///
/// KEYS: the node's `:pn`, `:pc`, `:pg`. ARGV: presence_grace in ms, the channel's topic, then
/// triples of client id, count and the sealed `join` message published if it joins (empty for
/// a count of 0). Returns `{entries the node has left on the channel, then triples: client id,
/// 1 (joined, published) or -1 (leave queued), when the leave is due (ms; 0 for a join)}`.
/// `publish`: `PUBLISH`, or `SPUBLISH` on a Redis Cluster.
pub fn set(publish: &str) -> Script {
    Script::new(&format!(
        "{NOW}
local out = {{0}}
for i = 3, #ARGV, 3 do
  local c = ARGV[i]
  local n = tonumber(ARGV[i + 1])
  local old = tonumber(redis.call('HGET', KEYS[1], c) or '0')
  if n ~= old then
    if n > 0 then redis.call('HSET', KEYS[1], c, n) else redis.call('HDEL', KEYS[1], c) end
    local total = redis.call('HINCRBY', KEYS[2], c, n - old)
    local before = total - (n - old)
    if total <= 0 then
      redis.call('HDEL', KEYS[2], c)
      if before > 0 then
        local due = now + tonumber(ARGV[1])
        redis.call('ZADD', KEYS[3], due, c)
        table.insert(out, c) table.insert(out, -1) table.insert(out, due)
      end
    elseif before <= 0 and redis.call('ZREM', KEYS[3], c) == 0 then
      redis.call('{publish}', ARGV[2], ARGV[i + 2])
      table.insert(out, c) table.insert(out, 1) table.insert(out, 0)
    end
  end
end
out[1] = redis.call('HLEN', KEYS[1])
return out"
    ))
}

/// Removes every entry of one node on one channel (a dead node, or this node's stale entries
/// before it rewrites them).
///
/// KEYS: the node's `:pn`, `:pc`, `:pg`. ARGV: presence_grace in ms. Returns pairs of client id
/// and when its queued leave is due.
pub fn clear() -> Script {
    Script::new(&format!(
        "{NOW}
local out = {{}}
local f = redis.call('HGETALL', KEYS[1])
for i = 1, #f, 2 do
  local c = f[i]
  local old = tonumber(f[i + 1])
  local total = redis.call('HINCRBY', KEYS[2], c, -old)
  if total <= 0 then
    redis.call('HDEL', KEYS[2], c)
    if total + old > 0 then
      local due = now + tonumber(ARGV[1])
      redis.call('ZADD', KEYS[3], due, c)
      table.insert(out, c) table.insert(out, due)
    end
  end
end
redis.call('DEL', KEYS[1])
return out"
    ))
}

/// Takes one queued leave if it is due and the client id is still gone, and publishes it.
///
/// KEYS: `:pg`, `:pc`. ARGV: client id, the channel's topic, the sealed `leave` message.
/// Returns -1 (fired: this node took it and published it), 0 (nothing queued, or it came
/// back) or when it is due (ms, later). `publish` as in [`set`].
pub fn take(publish: &str) -> Script {
    Script::new(&format!(
        "{NOW}
local due = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not due then return 0 end
due = tonumber(due)
if due > now then return due end
redis.call('ZREM', KEYS[1], ARGV[1])
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return 0 end
redis.call('{publish}', ARGV[2], ARGV[3])
return -1"
    ))
}

/// The due entries of the `leaves_due` index. KEYS: it. ARGV: most to read. Returns
/// `{member, score, …}`.
pub fn due() -> Script {
    Script::new(&format!(
        "{NOW}
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[1]))"
    ))
}

/// Settles one entry of the `leaves_due` index, unless a node queued it again meanwhile.
/// KEYS: it. ARGV: member, the score it was read with, the new score (empty: remove).
pub fn settle() -> Script {
    Script::new(
        "local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if s and tonumber(s) == tonumber(ARGV[2]) then
  if ARGV[3] == '' then redis.call('ZREM', KEYS[1], ARGV[1])
  else redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1]) end
end
return 0",
    )
}
