//! The HTTP push and admin API (docs/protocol.md §5, §14): push to a client id, publish to a
//! channel, broadcast, batches of those, history pages, list and close sessions. Request `data`
//! is kept as raw JSON text end to end.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::http::request::Parts;
use hyper::{Response, StatusCode, header};
use subtle::ConstantTimeEq;

use percent_encoding::percent_decode_str;

use super::body::{API_BODY_MAX, BATCH_BODY_MAX, parse, read_body};
use super::{Endpoint, batch, control, delivery, history};
use crate::delivery::history::HistoryOf;
use crate::http::error::Error;
use crate::http::query::query_param;
use crate::http::reply::{Body, error_response, json};
use crate::id::SessionId;
use crate::protocol::json_str;
use crate::registry::listing;
use crate::state::Shared;

/// `docs/openapi.json`, answered at `GET /api/openapi.json`.
const OPENAPI: &str = include_str!("../../docs/openapi.json");

/// Answers one `/api/*` request; `head` and `body` are its parts.
pub async fn answer(
    shared: &Arc<Shared>,
    head: &Parts,
    body: Incoming,
    endpoint: Endpoint<'_>,
    peer: SocketAddr,
) -> Response<Body> {
    let result = match authorize(shared, head, peer) {
        Ok(()) => dispatch(shared, head, body, endpoint).await,
        Err(e) => Err(e),
    };
    let (res, label) = match result {
        Ok(r) => (r, "ok"),
        Err(e) => {
            let path = head.uri.path();
            log::debug!("api {path} from {peer}: {} ({})", e.code(), e.message());
            let mut res = error_response(&e);
            if matches!(e, Error::BodyTimeout(_)) {
                // The rest of the body may still come: the connection cannot carry another
                // request, and closing it is what frees its descriptor.
                res.headers_mut().insert(
                    header::CONNECTION,
                    header::HeaderValue::from_static("close"),
                );
            }
            (res, e.code())
        }
    };
    shared.metrics.api(endpoint.label(), label);
    res
}

/// With a key, the caller must present it. Without one, only a direct local caller may use the
/// API (docs/protocol.md §13), unless `api_open` says anyone may: a loopback peer that is not a trusted proxy and sent no forwarding
/// header, so a reverse proxy on the same host never opens the API to the internet by accident.
fn authorize(shared: &Shared, head: &Parts, peer: SocketAddr) -> Result<(), Error> {
    let Some(key) = &shared.api_key else {
        // `api_open = true` is the operator's explicit choice of an API without a key.
        return if shared.config.api_open || is_direct_local(shared, head, peer) {
            Ok(())
        } else {
            Err(Error::ApiNotLocal)
        };
    };
    let given = head
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .unwrap_or_default();
    if key_matches(given, key.0.as_bytes()) {
        Ok(())
    } else {
        Err(Error::Unauthorized)
    }
}

/// A loopback peer that is not a trusted proxy and whose request carries no sign of having been
/// forwarded: the header check also covers a proxy the operator forgot to list.
fn is_direct_local(shared: &Shared, head: &Parts, peer: SocketAddr) -> bool {
    // An IPv4-mapped peer (a dual-stack listener) is its IPv4 address.
    let ip = peer.ip().to_canonical();
    let h = &head.headers;
    ip.is_loopback()
        && !shared.config.trusted_proxies.iter().any(|p| p.contains(ip))
        && !["x-forwarded-for", "x-real-ip", "forwarded"]
            .iter()
            .any(|name| h.contains_key(*name))
}

/// Compares in constant time, so timing does not reveal how much of the key matched.
fn key_matches(given: &[u8], key: &[u8]) -> bool {
    bool::from(given.ct_eq(key))
}

async fn dispatch(
    shared: &Shared,
    head: &Parts,
    body: Incoming,
    endpoint: Endpoint<'_>,
) -> Result<Response<Body>, Error> {
    if endpoint == Endpoint::OtherApi {
        return Err(Error::NotFound);
    }
    if !endpoint.permits(&head.method) {
        return Err(Error::MethodNotAllowed(endpoint.allowed()));
    }
    let query = head.uri.query();
    let timeout = shared.config.http_body_timeout;
    let read = |max| read_body(body, timeout, max);
    let answer = match endpoint {
        Endpoint::Push => delivery::push(shared, parse(&read(API_BODY_MAX).await?)?).await,
        Endpoint::Publish => delivery::publish(shared, parse(&read(API_BODY_MAX).await?)?).await,
        Endpoint::Broadcast => {
            delivery::broadcast(shared, parse(&read(API_BODY_MAX).await?)?).await
        }
        Endpoint::Batch => batch::batch(shared, &read(BATCH_BODY_MAX).await?).await,
        Endpoint::Subscribe => {
            return reply(control::subscribe_call(shared, &read(API_BODY_MAX).await?).await?);
        }
        Endpoint::Unsubscribe => {
            return reply(control::unsubscribe_call(shared, &read(API_BODY_MAX).await?).await?);
        }
        Endpoint::History(raw) => {
            let client_id = client_id_from_path(raw)?;
            history::history(shared, HistoryOf::Client(&client_id), query).await
        }
        Endpoint::ChannelHistory(raw) => {
            let channel = percent_decode_str(raw)
                .decode_utf8()
                .map_err(|_| Error::BadChannel("not valid UTF-8".into()))?;
            delivery::channel_ok(&channel)?;
            history::history(shared, HistoryOf::Channel(&channel), query).await
        }
        _ => return other(shared, endpoint, query).await,
    };
    answer.map(|(status, body)| json(status, body))
}

/// The endpoints that are not a delivery or a history read: listings, presence, closing.
async fn other(
    shared: &Shared,
    endpoint: Endpoint<'_>,
    query: Option<&str>,
) -> Result<Response<Body>, Error> {
    match endpoint {
        Endpoint::Sessions => {
            let filter = match query.and_then(|q| query_param(q, "client_id")) {
                Some(Ok(c)) => {
                    delivery::client_id_ok(&c)?;
                    Some(c.into_owned())
                }
                Some(Err(())) => return Err(Error::BadClientId("not valid UTF-8")),
                None => None,
            };
            let page = Page::from_query(query)?;
            Ok(json(
                StatusCode::OK,
                list_sessions(shared, filter.as_deref(), page).await?,
            ))
        }
        Endpoint::OpenApi => Ok(json(StatusCode::OK, OPENAPI)),
        Endpoint::Presence(raw) => presence(shared, &client_id_from_path(raw)?).await,
        Endpoint::Client(raw) => {
            let client_id = client_id_from_path(raw)?;
            let block_for = match query.and_then(|q| query_param(q, "block_for")) {
                Some(Ok(b)) => Some(b),
                Some(Err(())) => {
                    return Err(Error::InvalidBody("block_for is not valid UTF-8".into()));
                }
                None => None,
            };
            reply(control::kick_client(shared, &client_id, block_for.as_deref()).await?)
        }
        Endpoint::Blocks => reply(control::blocks_call(shared).await?),
        Endpoint::Block(raw) => {
            reply(control::unblock_client(shared, &client_id_from_path(raw)?).await?)
        }
        Endpoint::Channels => super::channels::list(shared, query).await,
        Endpoint::ChannelPresence(raw) => super::channels::presence(shared, raw, query).await,
        Endpoint::Session(id) => {
            let closed = shared
                .handle
                .disconnect(id)
                .await
                .map_err(delivery::unavailable)?;
            if closed {
                Ok(json(
                    StatusCode::OK,
                    format!("{{\"session_id\":{},\"closed\":true}}", json_str(id)),
                ))
            } else {
                Err(Error::UnknownSession)
            }
        }
        _ => Err(Error::NotFound),
    }
}

fn reply((status, body): control::Answer) -> Result<Response<Body>, Error> {
    Ok(json(status, body))
}

/// A client id from the path, percent-decoded and checked by the handshake's rule.
fn client_id_from_path(raw: &str) -> Result<Cow<'_, str>, Error> {
    let client_id = percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| Error::BadClientId("not valid UTF-8"))?;
    delivery::client_id_ok(&client_id)?;
    Ok(client_id)
}

/// `GET /api/v1/presence/{client_id}`: this node's sessions, or the cluster's live nodes'.
async fn presence(shared: &Shared, client_id: &str) -> Result<Response<Body>, Error> {
    let nodes = shared
        .router
        .presence(client_id)
        .await
        .map_err(read_failed)?;
    let sessions: u64 = nodes.iter().map(|(_, n)| n).sum();
    let names: Vec<String> = nodes.iter().map(|(node, _)| json_str(node)).collect();
    Ok(json(
        StatusCode::OK,
        format!(
            "{{\"client_id\":{},\"online\":{},\"sessions\":{sessions},\"nodes\":[{}]}}",
            json_str(client_id),
            sessions > 0,
            names.join(",")
        ),
    ))
}

/// One page of `GET /api/v1/sessions`: at most `limit` sessions with ids after `after`.
#[derive(Debug, Clone, Copy)]
struct Page {
    /// Most sessions in one answer.
    limit: usize,
    /// Only sessions whose id sorts after this one (the last id of the previous page).
    after: Option<SessionId>,
}

/// Sessions in one page unless `?limit=` says otherwise.
const PAGE_DEFAULT: usize = 1000;
/// The largest `?limit=`.
const PAGE_MAX: usize = listing::PAGE_MAX;

impl Page {
    fn from_query(query: Option<&str>) -> Result<Page, Error> {
        let limit = match query.and_then(|q| query_param(q, "limit")) {
            None => PAGE_DEFAULT,
            Some(Ok(v)) => match v.parse::<usize>() {
                Ok(n) if (1..=PAGE_MAX).contains(&n) => n,
                _ => {
                    return Err(Error::InvalidBody(format!(
                        "limit must be a whole number from 1 to {PAGE_MAX}"
                    )));
                }
            },
            Some(Err(())) => return Err(Error::InvalidBody("limit is not valid UTF-8".into())),
        };
        let after = match query.and_then(|q| query_param(q, "after")) {
            None => None,
            Some(Ok(v)) => Some(SessionId::parse(&v).ok_or_else(|| {
                Error::InvalidBody("after must be a session id (16 hex digits)".into())
            })?),
            Some(Err(())) => return Err(Error::InvalidBody("after is not valid UTF-8".into())),
        };
        Ok(Page { limit, after })
    }
}

async fn list_sessions(
    shared: &Shared,
    client_id: Option<&str>,
    page: Page,
) -> Result<String, Error> {
    shared
        .router
        .list_sessions(client_id, page.after, page.limit)
        .await
        .map_err(read_failed)
}

/// A listing changes nothing, so even a call whose outcome is unknown is only unavailable
/// (503), never the 504 that tells a sender to retry with its idempotency key.
fn read_failed(e: crate::engine::EngineError) -> Error {
    Error::EngineUnavailable(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_compare() {
        assert!(key_matches(b"secret", b"secret"));
        assert!(!key_matches(b"secreT", b"secret"));
        assert!(!key_matches(b"secret1", b"secret"));
        assert!(!key_matches(b"", b"secret"));
        assert!(!key_matches(b"secre", b"secret"));
    }
}
