//! Server-side control across nodes (docs/protocol.md §14): orders for a client id's sessions
//! wherever they are (join or leave a channel, close them), the channels the API subscribed a
//! client id to (remembered for its later sessions), and blocks.
//!
//! An order travels like an unsequenced push: the route script sends it to the nodes the
//! client id's presence lists, and each answers how many of its sessions it reached. Running
//! it is the session layer's job (it holds the join function), so the node above hands the
//! cluster an [`Orders`] callback once it is built. A block goes to every node (`<prefix>:all`)
//! and is answered by each once its cache holds it, so a reconnect to any node is refused as
//! soon as the API answered.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, LazyLock, OnceLock};

use redis::Script;
use serde::{Deserialize, Serialize};

use super::wire::Kind;
use super::{Cluster, Routed};
use crate::net::blocks::MAX_BLOCKS;
use crate::stream::EngineError;

/// One order for the sessions of a client id, run by the node that holds them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Order {
    /// Join `channel` (as the server: no grant needed), resuming after `since` with history on.
    Subscribe {
        /// The channel.
        channel: String,
        /// `<epoch>:<seq>` to resume after.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<String>,
    },
    /// Leave `channel`.
    Unsubscribe {
        /// The channel.
        channel: String,
    },
    /// Close every session with 4002.
    Kick,
}

/// Runs an order on this node's sessions of a client id; resolves to how many it reached.
pub type Orders =
    Arc<dyn Fn(Arc<str>, Order) -> Pin<Box<dyn Future<Output = usize> + Send>> + Send + Sync>;

/// Where the layer above puts its [`Orders`] once it exists (shared by the router and inbox).
pub type OrdersCell = Arc<OnceLock<Orders>>;

/// Adds a channel to a client id's remembered set within a bound. KEYS: the set. ARGV:
/// channel, most channels. Returns 1 when it is remembered, 0 when the set is full.
static REMEMBER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 1 end
if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('SADD', KEYS[1], ARGV[1])
return 1",
    )
});

/// Records a block within [`MAX_BLOCKS`], forgetting expired ones when the hash is full.
/// KEYS: the blocks hash. ARGV: client id, until, now, most blocks. Returns 1, or 0 when full.
static BLOCK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "local now = tonumber(ARGV[3])
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[4]) then
  local all = redis.call('HGETALL', KEYS[1])
  for i = 1, #all, 2 do
    if (tonumber(all[i + 1]) or 0) <= now then redis.call('HDEL', KEYS[1], all[i]) end
  end
  if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[4]) then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1",
    )
});

impl Cluster {
    /// Hands the cluster the session layer's way of running orders (once).
    pub fn set_orders(&self, orders: Orders) {
        let _ = self.inbox.orders.set(orders);
    }

    /// Sends `order` to every node holding sessions of `client_id`; `delivered` sums the
    /// sessions they reached.
    pub async fn order(&self, client_id: &str, order: &Order) -> Result<Routed, EngineError> {
        let body = serde_json::to_vec(order).unwrap_or_default();
        let ticket = self.pending.begin();
        let msg = self.seal(Kind::Control, ticket.req, client_id, &body);
        let nodes = self.to_client("order", client_id, msg).await;
        match nodes {
            Ok(0) => {
                self.pending.cancel(ticket);
                Ok(Routed {
                    delivered: 0,
                    partial: false,
                })
            }
            Ok(n) => {
                let g = self.gather(ticket, n).await;
                Ok(Routed {
                    delivered: g.delivered,
                    partial: !g.complete,
                })
            }
            Err(e) => {
                self.pending.cancel(ticket);
                Err(e)
            }
        }
    }

    /// Remembers `channel` for `client_id`'s later sessions; false when it already has `max`.
    pub async fn remember(
        &self,
        client_id: &str,
        channel: &str,
        max: usize,
    ) -> Result<bool, EngineError> {
        let mut con = self.conn();
        let key = self.keys.subs(client_id);
        let channel = channel.to_string();
        self.call("remember", async move {
            REMEMBER
                .key(key)
                .arg(channel)
                .arg(max)
                .invoke_async::<i64>(&mut con)
                .await
        })
        .await
        .map(|r| r == 1)
    }

    /// Forgets a remembered channel.
    pub async fn forget(&self, client_id: &str, channel: &str) -> Result<(), EngineError> {
        let mut con = self.conn();
        let key = self.keys.subs(client_id);
        let channel = channel.to_string();
        self.call("forget", async move {
            redis::cmd("SREM")
                .arg(key)
                .arg(channel)
                .query_async::<()>(&mut con)
                .await
        })
        .await
    }

    /// The channels remembered for `client_id`.
    pub async fn remembered(&self, client_id: &str) -> Result<Vec<String>, EngineError> {
        let mut con = self.conn();
        let key = self.keys.subs(client_id);
        self.call("remembered", async move {
            redis::cmd("SMEMBERS").arg(key).query_async(&mut con).await
        })
        .await
    }

    /// Blocks `client_id` until `until` (Unix ms) on every node; false when [`MAX_BLOCKS`]
    /// blocks are in force. `partial` when some node did not confirm in time.
    pub async fn block(
        &self,
        client_id: &str,
        until: u64,
        now: u64,
    ) -> Result<Option<Routed>, EngineError> {
        let mut con = self.conn();
        let key = self.keys.blocks();
        let id = client_id.to_string();
        let stored = self
            .call("block", async move {
                BLOCK
                    .key(key)
                    .arg(id)
                    .arg(until)
                    .arg(now)
                    .arg(MAX_BLOCKS)
                    .invoke_async::<i64>(&mut con)
                    .await
            })
            .await?;
        if stored != 1 {
            return Ok(None);
        }
        self.tell_block(client_id, until).await.map(Some)
    }

    /// Lifts a block on every node; whether one was in force.
    pub async fn unblock(&self, client_id: &str, now: u64) -> Result<bool, EngineError> {
        let mut con = self.conn();
        let key = self.keys.blocks();
        let id = client_id.to_string();
        let until: Option<u64> = self
            .call("unblock", async move {
                let until: Option<u64> = redis::cmd("HGET")
                    .arg(&key)
                    .arg(&id)
                    .query_async(&mut con)
                    .await?;
                redis::cmd("HDEL")
                    .arg(&key)
                    .arg(&id)
                    .query_async::<()>(&mut con)
                    .await?;
                Ok(until)
            })
            .await?;
        self.tell_block(client_id, 0).await?;
        Ok(until.is_some_and(|u| u > now))
    }

    /// Every node's cache learns the block (`0`: lifted) before this returns.
    async fn tell_block(&self, client_id: &str, until: u64) -> Result<Routed, EngineError> {
        let g = self
            .request(
                self.keys.all(),
                Kind::Block,
                client_id,
                until.to_string().as_bytes(),
            )
            .await?;
        Ok(Routed {
            delivered: g.delivered,
            partial: !g.complete,
        })
    }

    /// The blocks Redis holds (expired ones included), which also become this node's cache.
    pub async fn load_blocks(&self) -> Result<Vec<(String, u64)>, EngineError> {
        let mut con = self.conn();
        let key = self.keys.blocks();
        let all: std::collections::HashMap<String, u64> = self
            .call("blocks", async move {
                redis::cmd("HGETALL").arg(key).query_async(&mut con).await
            })
            .await?;
        let all: Vec<(String, u64)> = all.into_iter().collect();
        self.blocks.replace(all.iter().cloned());
        Ok(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_round_trip_as_json() {
        for o in [
            Order::Subscribe {
                channel: "news".into(),
                since: Some("ab:3".into()),
            },
            Order::Subscribe {
                channel: "a b".into(),
                since: None,
            },
            Order::Unsubscribe {
                channel: "x".into(),
            },
            Order::Kick,
        ] {
            let json = serde_json::to_vec(&o).unwrap();
            assert_eq!(serde_json::from_slice::<Order>(&json).unwrap(), o);
        }
    }
}
