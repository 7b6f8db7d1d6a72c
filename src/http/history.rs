//! The history API (docs/protocol.md §8, §14): `GET /api/v1/history/{client_id}` and
//! `GET /api/v1/channels/{channel}/history`, one page each, with `since`, `limit` and
//! `reverse`, read through [`Handle::history`](crate::Handle::history).

use bytes::Bytes;
use hyper::StatusCode;

use super::delivery::{Reply, unavailable};
use crate::delivery::history::HistoryOf;
use crate::engine::Position;
use crate::engine::page::{PAGE_DEFAULT, PAGE_MAX};
use crate::http::error::Error;
use crate::http::query::query_param;
use crate::protocol::json_str;
use crate::state::Shared;

/// Answers one page of `of`'s history: 200 `{"epoch","seq","recovered","messages","next"}`;
/// 404 `history_off` when history is off; 400 `invalid_body` for a bad `since`, `limit` or
/// `reverse`.
pub async fn history(shared: &Shared, of: HistoryOf<'_>, query: Option<&str>) -> Reply {
    if !shared.config.history() {
        return Err(Error::HistoryOff);
    }
    let param = |name: &str| match query.and_then(|q| query_param(q, name)) {
        Some(Ok(v)) => Ok(Some(v)),
        Some(Err(())) => Err(Error::InvalidBody(format!("{name} is not valid UTF-8"))),
        None => Ok(None),
    };
    let since = param("since")?;
    if let Some(text) = &since {
        Position::parse(text).map_err(|e| Error::InvalidBody(format!("since: {e}")))?;
    }
    let limit = match param("limit")? {
        None => PAGE_DEFAULT,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=PAGE_MAX).contains(&n) => n,
            _ => {
                return Err(Error::InvalidBody(format!(
                    "limit must be a whole number from 1 to {PAGE_MAX}"
                )));
            }
        },
    };
    let reverse = match param("reverse")?.as_deref() {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") => true,
        Some(_) => return Err(Error::InvalidBody("reverse must be true or false".into())),
    };
    let page = shared
        .handle
        .history(of, since.as_deref(), limit, reverse)
        .await
        .map_err(unavailable)?
        .ok_or(Error::HistoryOff)?;
    let bytes: usize = page.messages.iter().map(|m| m.len() + 1).sum();
    let mut body = Vec::with_capacity(bytes + 128);
    body.extend_from_slice(
        format!(
            "{{\"epoch\":{},\"seq\":{},\"recovered\":{},\"messages\":[",
            json_str(&page.epoch),
            page.seq,
            page.recovered
        )
        .as_bytes(),
    );
    for (i, m) in page.messages.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(m);
    }
    let next = page.next.as_deref().map_or("null".into(), json_str);
    body.extend_from_slice(format!("],\"next\":{next}}}").as_bytes());
    Ok((StatusCode::OK, Bytes::from(body)))
}
