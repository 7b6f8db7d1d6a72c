//! Paging a stream's history in Redis: one Lua step finds the oldest unexpired entry, cuts the
//! page's window by the rules of [`page::window`] (mirrored in Lua, and checked here), and
//! returns just those entries, so a page costs its own size however long the history is.

use bytes::Bytes;
use redis::{Script, Value};

use super::{RedisEngine, bad_reply, int, string};
use crate::engine::page::{self, Page, PageQuery};
use crate::engine::{EngineError, Epoch, Position, Stored, StreamKey};

/// KEYS: meta, log. ARGV: history_ttl_ms, since seq (`-1`: none), limit, `1` for reverse.
/// Returns `{epoch, top, oldest, from, entries…}`: `oldest` the seq of the oldest unexpired
/// entry (`top + 1` when none), `from` the seq of the first entry returned; entries oldest
/// first. A stream with no keys answers an empty epoch. Creates nothing.
pub(super) fn script() -> Script {
    Script::new(
        "local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then return {'', 0, 1, 1} end
local top = tonumber(redis.call('HGET', KEYS[1], 't'))
local len = redis.call('LLEN', KEYS[2])
local first = top - len + 1
local cutoff = now - tonumber(ARGV[1])
local function at(i)
  return tonumber(string.match(redis.call('LINDEX', KEYS[2], i), '^(%d+) '))
end
local lo = 0
if len > 0 and at(0) < cutoff then
  local hi = len
  lo = 1
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if at(mid) < cutoff then lo = mid + 1 else hi = mid end
  end
end
local oldest = first + lo
local since = tonumber(ARGV[2])
local limit = math.max(tonumber(ARGV[3]), 1)
local a, b
if ARGV[4] == '1' then
  b = top
  if since >= 0 and since < top then b = since end
  a = math.max(oldest, b - limit + 1)
else
  a = oldest
  if since >= 0 and since + 1 > oldest then a = since + 1 end
  b = math.min(top, a + limit - 1)
end
if a < 1 then a = 1 end
local out = {epoch, top, oldest, a}
if a <= b then
  for _, e in ipairs(redis.call('LRANGE', KEYS[2], a - first, b - first)) do
    table.insert(out, e)
  end
end
return out",
    )
}

impl RedisEngine {
    /// One page of `key`'s history (see [`page`]).
    pub(super) async fn read_page(
        &self,
        key: &StreamKey,
        q: &PageQuery,
    ) -> Result<Page, EngineError> {
        let c = &self.cluster;
        let mut con = c.conn();
        let mut invocation = self.page_script.prepare_invoke();
        invocation
            .key(c.keys.meta(key))
            .key(c.keys.log(key))
            .arg(self.ttl_ms())
            .arg(q.since_seq().map_or(-1, |s| s.min(i64::MAX as u64) as i64))
            .arg(q.limit)
            .arg(u8::from(q.reverse));
        let out: Vec<Value> = c
            .call(
                "page",
                async move { invocation.invoke_async(&mut con).await },
            )
            .await?;
        parse(out, q).ok_or_else(bad_reply)
    }
}

/// The script's answer as a page; `None` when it is not what the script returns, or when its
/// window is not the one [`page::window`] gives.
fn parse(out: Vec<Value>, q: &PageQuery) -> Option<Page> {
    let mut items = out.into_iter();
    let epoch = string(items.next()?)?;
    let top = int(items.next()?)?;
    let oldest = int(items.next()?)?;
    let from = int(items.next()?)?;
    let epoch = if epoch.is_empty() {
        // No stream: the API looks for one first, so this is one that expired since.
        Epoch::start()
    } else {
        Epoch::parse(&epoch).ok()?
    };
    let held: Vec<Stored> = items
        .enumerate()
        .map(|(i, v)| {
            let raw = match v {
                Value::BulkString(b) => Bytes::from(b),
                _ => return None,
            };
            let space = raw.iter().position(|&b| b == b' ')?;
            let at_ms: u64 = std::str::from_utf8(&raw[..space]).ok()?.parse().ok()?;
            Some(Stored {
                seq: from + i as u64,
                frame: raw.slice(space + 1..),
                at_ms,
            })
        })
        .collect::<Option<_>>()?;
    let expected = page::window(top, oldest, q.since_seq(), q.limit as u64, q.reverse);
    let got = held.first().zip(held.last()).map(|(a, b)| (a.seq, b.seq));
    if expected != got {
        return None;
    }
    let position = Position { epoch, seq: top };
    // Redis keeps no record of streams it lost (see `lost`): a whole read is whole.
    Some(page::assemble(position, oldest, q, true, held))
}
