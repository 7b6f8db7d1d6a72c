//! Reading history from application code: [`Handle::history`], one page of a client id's or
//! a channel's stream, newest or oldest first (docs/history.md, "Paging"). The history API
//! answers through it.

use bytes::Bytes;

use super::handle::Handle;
use crate::engine::page::{PAGE_MAX, PageQuery};
use crate::engine::{EngineError, Position, StreamKey};

/// Whose stream to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryOf<'a> {
    /// The messages pushed to a client id.
    Client(&'a str),
    /// The messages published to a channel.
    Channel(&'a str),
}

/// One page of a stream's history, as `GET /api/v1/history/…` answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History {
    /// The stream's epoch (`"0"` for a stream that does not exist).
    pub epoch: String,
    /// The stream's top seq when read.
    pub seq: u64,
    /// No message is missing between `since` and this page (see docs/history.md).
    pub recovered: bool,
    /// The messages as they were sent (each an envelope with its `seq`), in the page's order.
    pub messages: Vec<Bytes>,
    /// The `since` of the next page in the same direction; `None` when nothing more is held.
    pub next: Option<String>,
}

impl Handle {
    /// One page of `of`'s history: up to `limit` messages (1 to 1,000) after `since` going
    /// forward, or at and below it newest first with `reverse`; without `since` (or with
    /// `0:0`) from the oldest message held, or with `reverse` from the newest. A `since`
    /// that is not a position reads as lost (`recovered: false`, no messages). `None` when
    /// history is off. Creates no stream.
    pub async fn history(
        &self,
        of: HistoryOf<'_>,
        since: Option<&str>,
        limit: usize,
        reverse: bool,
    ) -> Result<Option<History>, EngineError> {
        if !self.history_on() {
            return Ok(None);
        }
        let key = match of {
            HistoryOf::Client(id) => StreamKey::client(id),
            HistoryOf::Channel(name) => StreamKey::channel(name),
        };
        let since = match since.map(Position::parse) {
            None => None,
            Some(Ok(p)) => Some(p),
            Some(Err(_)) => return Ok(Some(nothing(false))),
        };
        let query = PageQuery {
            since,
            limit: limit.clamp(1, PAGE_MAX),
            reverse,
        };
        let engine = self.router().engine();
        // A read creates no stream. Without one, only a reader with no position has all there
        // is, and only if no stream of it was evicted holding history.
        if engine.position(&key).await?.is_none() {
            let whole = query.since_seq().is_none() && !engine.lost(&key).await?;
            return Ok(Some(nothing(whole)));
        }
        let page = engine.page(&key, &query).await?;
        Ok(Some(History {
            epoch: page.position.epoch.to_string(),
            seq: page.position.seq,
            recovered: page.recovered,
            messages: page.messages.into_iter().map(|m| m.frame).collect(),
            next: page.next.map(|p| format!("{}:{}", p.epoch, p.seq)),
        }))
    }
}

/// The page of a stream that does not exist: the start position, nothing in it.
fn nothing(recovered: bool) -> History {
    History {
        epoch: "0".into(),
        seq: 0,
        recovered,
        messages: Vec::new(),
        next: None,
    }
}
