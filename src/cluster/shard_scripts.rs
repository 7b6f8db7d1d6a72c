//! The Lua steps that keep client presence on a Redis Cluster, where a step may touch the keys
//! of one hash tag only. On one Redis `scripts::set_presence` writes a batch of client ids, the
//! node's client list and the offline queue in one step; here each client id gets its own step
//! on its own tag (`{c:<id>}`: presence, migration mark, offline mark), and the node's client
//! list and the offline queue (an index of the offline marks) are written around it by the
//! node (`shard_presence.rs`). What must happen once cluster-wide is still decided inside one
//! step: `online` by the step that takes a client id's presence from empty without finding an
//! offline mark, `offline` by the step that deletes a due mark.

use redis::Script;

/// Redis's clock in ms.
const NOW: &str = "local t = redis.call('TIME')\n\
     local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n";

/// The per-client-id steps, hashed once at startup.
pub struct Shard {
    /// [`set_one`].
    pub set_one: Script,
    /// [`take_offline`].
    pub take_offline: Script,
    /// [`claim_dead`].
    pub claim_dead: Script,
    /// [`drop_node`].
    pub drop_node: Script,
    /// [`live_nodes`].
    pub live_nodes: Script,
}

impl Shard {
    /// All of them.
    pub fn new() -> Shard {
        Shard {
            set_one: set_one(),
            take_offline: take_offline(),
            claim_dead: claim_dead(),
            drop_node: drop_node(),
            live_nodes: live_nodes(),
        }
    }
}

/// How long an offline mark outlives its due time, so a mark whose index entry was lost (a
/// node died between the two writes) does not stay forever.
pub const MARK_KEEP_MS: u64 = 24 * 3600 * 1000;

/// Writes one node's session count of one client id.
///
/// KEYS: presence, migration mark, offline mark. ARGV: node, count, `1` when a session of it
/// here was just closed with 1012, offline_grace ms, migration memory ms.
/// Returns `{r, from, due}`: r 1 (online: its first session anywhere, not a return within the
/// grace), -1 (its last session ended: the offline mark is set, due at `due`; also when a
/// mark is pending from an earlier write, so a write retried after its indexing failed indexes
/// it again) or 0; `from` the node it migrated from, or empty.
pub fn set_one() -> Script {
    Script::new(&format!(
        "{NOW}
local n = tonumber(ARGV[2])
local r, from, due = 0, '', 0
if ARGV[3] == '1' then redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[5]) end
if n > 0 then
  local before = redis.call('HLEN', KEYS[1])
  redis.call('HSET', KEYS[1], ARGV[1], n)
  if before == 0 and redis.call('DEL', KEYS[3]) == 0 then r = 1 end
  local m = redis.call('GET', KEYS[2])
  if m and m ~= ARGV[1] then from = m end
else
  local removed = redis.call('HDEL', KEYS[1], ARGV[1])
  if redis.call('HLEN', KEYS[1]) == 0 then
    if removed == 1 then
      due = now + tonumber(ARGV[4])
      redis.call('SET', KEYS[3], due, 'PX', tonumber(ARGV[4]) + {MARK_KEEP_MS})
      r = -1
    else
      local m = redis.call('GET', KEYS[3])
      if m then due = tonumber(m) r = -1 end
    end
  end
end
return {{r, from, due}}"
    ))
}

/// Takes one client id's offline mark if it is due and the client id is still gone.
///
/// KEYS: offline mark, presence. Returns -1 (this node took it: fire `offline`), 0 (no mark:
/// taken by another node, or the client id came back) or when it is due (ms, later).
pub fn take_offline() -> Script {
    Script::new(&format!(
        "{NOW}
local due = redis.call('GET', KEYS[1])
if not due then return 0 end
due = tonumber(due)
if due > now then return due end
redis.call('DEL', KEYS[1])
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
return -1"
    ))
}

/// Claims a dead node: only the first survivor to call it gets 1 and clears the node.
///
/// KEYS: nodes. ARGV: the dead node, node_ttl ms. Returns 1, or -1 when the node is alive or
/// was claimed already.
pub fn claim_dead() -> Script {
    Script::new(&format!(
        "{NOW}
local seen = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not seen or tonumber(seen) > now - tonumber(ARGV[2]) then return -1 end
redis.call('ZREM', KEYS[1], ARGV[1])
return 1"
    ))
}

/// Removes a dead node from one client id's presence.
///
/// KEYS: presence, offline mark. ARGV: the dead node. Returns when the client id's `offline`
/// is due (now: the dead node held its last sessions) or -1 (another node holds it, or the
/// dead node's entry was gone already).
pub fn drop_node() -> Script {
    Script::new(&format!(
        "{NOW}
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return -1 end
if redis.call('HLEN', KEYS[1]) > 0 then return -1 end
redis.call('SET', KEYS[2], now, 'PX', {MARK_KEEP_MS})
return now"
    ))
}

/// The live nodes. KEYS: nodes. ARGV: node_ttl ms. Returns their names.
pub fn live_nodes() -> Script {
    Script::new(&format!(
        "{NOW}
return redis.call('ZRANGEBYSCORE', KEYS[1], now - tonumber(ARGV[1]), '+inf')"
    ))
}
