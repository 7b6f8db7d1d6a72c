//! `GET /api/v1/channels` and `GET /api/v1/channels/{channel}/presence` (docs/protocol.md §14):
//! answered through the handle, so on every node of a cluster.

use std::borrow::Cow;

use hyper::{Response, StatusCode};
use percent_encoding::percent_decode_str;

use super::delivery::{channel_ok, unavailable};
use crate::delivery::channels::{CHANNELS_MAX, CLIENTS_DEFAULT, CLIENTS_MAX};
use crate::http::error::Error;
use crate::http::query::query_param;
use crate::http::reply::{Body, json};
use crate::state::Shared;

/// `GET /api/v1/channels?prefix=&limit=&after=`.
pub(super) async fn list(shared: &Shared, query: Option<&str>) -> Result<Response<Body>, Error> {
    let prefix = text_param(query, "prefix")?.unwrap_or_default();
    let after = text_param(query, "after")?;
    let limit = limit(query, CHANNELS_MAX, CHANNELS_MAX)?;
    let page = shared
        .handle
        .channels(&prefix, limit, after.as_deref())
        .await
        .map_err(unavailable)?;
    Ok(json(StatusCode::OK, page.to_json()))
}

/// `GET /api/v1/channels/{channel}/presence?limit=&after=`.
pub(super) async fn presence(
    shared: &Shared,
    raw: &str,
    query: Option<&str>,
) -> Result<Response<Body>, Error> {
    let channel = percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| Error::BadChannel("not valid UTF-8".into()))?;
    channel_ok(&channel)?;
    let after = text_param(query, "after")?;
    let limit = limit(query, CLIENTS_DEFAULT, CLIENTS_MAX)?;
    let p = shared
        .handle
        .channel_presence_page(&channel, after.as_deref(), limit)
        .await
        .map_err(unavailable)?;
    Ok(json(StatusCode::OK, p.to_json()))
}

/// A query parameter as text; 400 when it is not UTF-8.
fn text_param<'a>(query: Option<&'a str>, name: &str) -> Result<Option<Cow<'a, str>>, Error> {
    match query.and_then(|q| query_param(q, name)) {
        None => Ok(None),
        Some(Ok(v)) => Ok(Some(v)),
        Some(Err(())) => Err(Error::InvalidBody(format!("{name} is not valid UTF-8"))),
    }
}

/// `?limit=`: `default` when absent, 1 to `max`.
fn limit(query: Option<&str>, default: usize, max: usize) -> Result<usize, Error> {
    match text_param(query, "limit")? {
        None => Ok(default),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(Error::InvalidBody(format!(
                "limit must be a whole number from 1 to {max}"
            ))),
        },
    }
}
