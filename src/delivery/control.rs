//! Server-side control through the seam (docs/protocol.md §14): orders for a client id's
//! sessions on every node, the channels remembered for its later sessions, and blocks. On one
//! node everything is here (a map, the block cache); in a cluster the remembered channels and
//! blocks live in Redis and orders travel to the nodes holding the client id.
//!
//! Running an order on this node's sessions is the session layer's (it owns the join), which
//! hands its [`Orders`] over once the server is built ([`Router::set_orders`]).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;

use super::router::{Router, Way};
use crate::cluster::{Order, Orders};
use crate::engine::EngineError;
use crate::net::blocks::{self, Blocks};

/// Most client ids one node remembers server subscriptions for (one node only: a cluster keeps
/// them in Redis, under the Redis memory policy).
pub const MAX_REMEMBERED_CLIENTS: usize = 100_000;

/// What an order reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reached {
    /// Sessions it reached, on every node that answered.
    pub sessions: usize,
    /// Some node did not answer in time, or Redis was unreachable and only this node's
    /// sessions were reached.
    pub partial: bool,
}

/// This node's side of server-side control.
pub(super) struct Control {
    /// How this node runs an order on its sessions.
    orders: OnceLock<Orders>,
    /// One node: the channels remembered per client id.
    remembered: Mutex<HashMap<Arc<str>, Vec<Arc<str>>>>,
    /// The blocks (one node), or their cache (a cluster's, shared with its inbox).
    blocks: Arc<Blocks>,
}

impl Control {
    pub(super) fn new(cluster_blocks: Option<Arc<Blocks>>) -> Control {
        Control {
            orders: OnceLock::new(),
            remembered: Mutex::new(HashMap::new()),
            blocks: cluster_blocks.unwrap_or_default(),
        }
    }
}

impl Router {
    /// Hands over how this node runs orders on its sessions (once, when the server is built).
    pub fn set_orders(&self, orders: Orders) {
        if let Way::Redis(c) = &self.way {
            c.set_orders(Arc::clone(&orders));
        }
        let _ = self.control.orders.set(orders);
    }

    /// Runs `order` on every session of `client_id` on every node. When Redis is down, this
    /// node's sessions still get it (`partial`).
    pub async fn order(&self, client_id: &str, order: Order) -> Result<Reached, EngineError> {
        if let Way::Redis(c) = &self.way {
            match c.order(client_id, &order).await {
                Ok(r) => {
                    return Ok(Reached {
                        sessions: r.delivered,
                        partial: r.partial,
                    });
                }
                Err(EngineError::Unavailable(e)) => {
                    log::debug!("order for {client_id} reaches this node only: {e}");
                    let sessions = self.order_here(client_id, order).await;
                    return Ok(Reached {
                        sessions,
                        partial: true,
                    });
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Reached {
            sessions: self.order_here(client_id, order).await,
            partial: false,
        })
    }

    async fn order_here(&self, client_id: &str, order: Order) -> usize {
        match self.control.orders.get() {
            Some(run) => run(Arc::from(client_id), order).await,
            None => 0,
        }
    }

    /// Remembers `channel` for `client_id`'s later sessions; false when it has `max` already
    /// (or, on one node, when [`MAX_REMEMBERED_CLIENTS`] client ids have some).
    pub async fn remember(
        &self,
        client_id: &str,
        channel: &str,
        max: usize,
    ) -> Result<bool, EngineError> {
        if let Way::Redis(c) = &self.way {
            return c.remember(client_id, channel, max).await;
        }
        let mut map = self.control.remembered.lock();
        if !map.contains_key(client_id) && map.len() >= MAX_REMEMBERED_CLIENTS {
            return Ok(false);
        }
        let list = map.entry(Arc::from(client_id)).or_default();
        if list.iter().any(|c| &**c == channel) {
            return Ok(true);
        }
        if list.len() >= max {
            return Ok(false);
        }
        list.push(Arc::from(channel));
        Ok(true)
    }

    /// Forgets a remembered channel.
    pub async fn forget(&self, client_id: &str, channel: &str) -> Result<(), EngineError> {
        if let Way::Redis(c) = &self.way {
            return c.forget(client_id, channel).await;
        }
        let mut map = self.control.remembered.lock();
        if let Some(list) = map.get_mut(client_id) {
            list.retain(|c| &**c != channel);
            if list.is_empty() {
                map.remove(client_id);
            }
        }
        Ok(())
    }

    /// Whether `client_id` may have remembered channels: on one node a lookup, so a session
    /// without any costs nothing more at connect; in a cluster only Redis knows.
    pub fn may_remember(&self, client_id: &str) -> bool {
        match &self.way {
            Way::Redis(_) => true,
            Way::Local => self.control.remembered.lock().contains_key(client_id),
        }
    }

    /// The channels remembered for `client_id`; none when Redis cannot say (logged).
    pub async fn remembered(&self, client_id: &str) -> Vec<String> {
        match &self.way {
            Way::Redis(c) => c.remembered(client_id).await.unwrap_or_else(|e| {
                log::warn!("server subscriptions of {client_id} not read: {e}");
                Vec::new()
            }),
            Way::Local => self
                .control
                .remembered
                .lock()
                .get(client_id)
                .map(|l| l.iter().map(|c| c.to_string()).collect())
                .unwrap_or_default(),
        }
    }

    /// Until when (Unix ms) `client_id` is blocked, if it is: the handshake's synchronous check.
    pub fn blocked(&self, client_id: &str) -> Option<u64> {
        self.control.blocks.check(client_id, blocks::now_ms())
    }

    /// Blocks `client_id` until `until` (Unix ms) on every node; `None` when
    /// [`blocks::MAX_BLOCKS`] blocks are in force, else whether some node did not confirm.
    pub async fn block(&self, client_id: &str, until: u64) -> Result<Option<bool>, EngineError> {
        let now = blocks::now_ms();
        if let Way::Redis(c) = &self.way {
            return Ok(c.block(client_id, until, now).await?.map(|r| r.partial));
        }
        Ok(self
            .control
            .blocks
            .set(client_id, until, now)
            .then_some(false))
    }

    /// Lifts a block on every node; whether one was in force.
    pub async fn unblock(&self, client_id: &str) -> Result<bool, EngineError> {
        let now = blocks::now_ms();
        if let Way::Redis(c) = &self.way {
            return c.unblock(client_id, now).await;
        }
        Ok(self.control.blocks.lift(client_id, now))
    }

    /// The blocks in force, by client id, with their ends (Unix ms).
    pub async fn blocks(&self) -> Result<Vec<(Arc<str>, u64)>, EngineError> {
        if let Way::Redis(c) = &self.way {
            c.load_blocks().await?;
        }
        Ok(self.control.blocks.list(blocks::now_ms()))
    }

    /// Blocks in force, as this node knows them (for `/metrics`).
    pub fn blocks_in_force(&self) -> usize {
        self.control.blocks.in_force(blocks::now_ms())
    }
}
