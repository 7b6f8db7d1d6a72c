//! The Redis engine: streams, history and idempotency keys in Redis, so a client resumes on
//! any node with nothing lost. An append is one Lua step that numbers, stores and publishes to
//! the nodes holding a recipient; their inboxes hand the frame to the registry (this node's
//! included), so the hand-over of `engine/mod.rs` holds across nodes unchanged. It runs on the
//! cluster's connection, keys and scripts (`crate::cluster`, below the engine).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use redis::Value;

use super::{
    Appended, Engine, EngineError, EngineFuture, EngineStats, Epoch, FrameTemplate,
    IdempotencyOutcome, MAX_IDEMPOTENCY_KEY_LEN, Page, PageQuery, Position, Recovery,
    RequestDigest, Stored, StreamKey, Target,
};
use crate::cluster::{Cluster, wire};

/// The engine of a clustered node.
pub struct RedisEngine {
    cluster: Arc<Cluster>,
    /// The paging script (`redis_page.rs`), hashed once.
    page_script: redis::Script,
    history_size: usize,
    history_ttl: Duration,
    repeats: AtomicU64,
}

impl RedisEngine {
    /// An engine keeping `history_size` messages per stream for `history_ttl`.
    pub fn new(cluster: Arc<Cluster>, history_size: usize, history_ttl: Duration) -> Self {
        RedisEngine {
            cluster,
            page_script: page::script(),
            history_size: history_size.max(1),
            history_ttl,
            repeats: AtomicU64::new(0),
        }
    }

    /// Stream keys (meta and history) live this long after the last append.
    fn ttl_ms(&self) -> u64 {
        self.history_ttl.as_millis().max(1) as u64
    }

    /// Runs the read script. It creates nothing: a stream with no keys reads as its unborn
    /// epoch at seq 0, the position its first append will continue from.
    async fn read(&self, key: &StreamKey, since: Option<u64>) -> Result<Read, EngineError> {
        let c = &self.cluster;
        let mut con = c.conn();
        let mut invocation = c.scripts.read.prepare_invoke();
        invocation
            .key(c.keys.meta(key))
            .key(c.keys.log(key))
            .key(c.keys.seed(key))
            .arg(self.ttl_ms())
            .arg(since.map_or(-1, |s| s.min(i64::MAX as u64) as i64))
            .arg(new_seed())
            .arg(if c.replicated { "1" } else { "" });
        let out: Vec<Value> = c
            .call(
                "read",
                async move { invocation.invoke_async(&mut con).await },
            )
            .await?;
        Read::parse(out, self.history_ttl).ok_or_else(bad_reply)
    }
}

/// What the read script returned.
struct Read {
    position: Position,
    /// Unexpired messages after `since`, oldest first, numbered.
    held: Vec<Stored>,
}

impl Read {
    fn parse(out: Vec<Value>, ttl: Duration) -> Option<Read> {
        let mut items = out.into_iter();
        let epoch = Epoch::parse(&string(items.next()?)?).ok()?;
        let top = int(items.next()?)?;
        let now: u64 = string(items.next()?)?.parse().ok()?;
        let cutoff = now.saturating_sub(ttl.as_millis() as u64);
        let entries: Vec<(u64, Bytes)> = items
            .map(|v| {
                let raw = match v {
                    Value::BulkString(b) => Bytes::from(b),
                    _ => return None,
                };
                let space = raw.iter().position(|&b| b == b' ')?;
                let at: u64 = std::str::from_utf8(&raw[..space]).ok()?.parse().ok()?;
                Some((at, raw.slice(space + 1..)))
            })
            .collect::<Option<_>>()?;
        let first = top.checked_sub(entries.len() as u64)? + 1;
        let held = entries
            .into_iter()
            .enumerate()
            .map(|(i, (at_ms, frame))| Stored {
                seq: first + i as u64,
                frame,
                at_ms,
            })
            .filter(|m| m.at_ms >= cutoff)
            .collect();
        Some(Read {
            position: Position { epoch, seq: top },
            held,
        })
    }

    /// The resume's answer under the rules of [`Recovery`] (as the memory engine gives them).
    fn recovery(self, since: &Position) -> Recovery {
        let held = self.held.len() as u64;
        let top = self.position.seq;
        if since.is_start() {
            return Recovery {
                recovered: held == top,
                position: self.position,
                missed: self.held,
            };
        }
        let covered =
            since.epoch == self.position.epoch && since.seq <= top && top - since.seq <= held;
        Recovery {
            position: self.position,
            recovered: covered,
            missed: if covered { self.held } else { Vec::new() },
        }
    }
}

fn string(v: Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b).ok(),
        Value::SimpleString(s) => Some(s),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

fn int(v: Value) -> Option<u64> {
    match v {
        Value::Int(n) => u64::try_from(n).ok(),
        other => string(other)?.parse().ok(),
    }
}

/// A seed for the cluster's unborn epochs, used by whichever script first finds none.
fn new_seed() -> String {
    format!("{}{}", Epoch::generate(), Epoch::generate())
}

fn bad_reply() -> EngineError {
    EngineError::Unavailable(Arc::new(std::io::Error::other(
        "redis: a script answered something unexpected",
    )))
}

impl Engine for RedisEngine {
    fn append<'a>(
        &'a self,
        key: &'a StreamKey,
        frame: &'a FrameTemplate,
    ) -> EngineFuture<'a, Appended> {
        Box::pin(async move {
            let c = &self.cluster;
            let topic = c.keys.stream_topic(key);
            let (kind, target, presence) = match key {
                StreamKey::Client(id) => (wire::Kind::Client, id, c.keys.presence(id)),
                StreamKey::Channel(name) => (wire::Kind::Channel, name, c.keys.meta(key)),
            };
            let ticket = c.pending.begin();
            let (head, tail) = frame.parts();
            let auth = c
                .signer
                .append(kind, &c.node, ticket.req, target, (head, tail));
            let mut invocation = c.scripts.append.prepare_invoke();
            invocation
                .key(c.keys.meta(key))
                .key(c.keys.log(key))
                .key(presence)
                .key(c.keys.seed(key))
                .arg(&head[..])
                .arg(&tail[..])
                .arg(self.history_size)
                .arg(self.ttl_ms())
                .arg(new_seed())
                .arg(wire::prefix(kind, &c.node, ticket.req))
                .arg(&**target)
                .arg(topic)
                .arg(auth)
                .arg(if c.replicated { "1" } else { "" });
            let mut con = c.conn();
            let out: Result<(String, u64, usize), _> = c
                .call(
                    "append",
                    async move { invocation.invoke_async(&mut con).await },
                )
                .await;
            let (epoch, seq, nodes) = match out {
                Ok(v) => v,
                Err(e) => {
                    c.pending.cancel(ticket);
                    return Err(e);
                }
            };
            let epoch = Epoch::parse(&epoch).map_err(|_| bad_reply())?;
            let g = c.gather(ticket, nodes).await;
            Ok(Appended {
                position: Position { epoch, seq },
                delivered: g.delivered,
                partial: !g.complete,
            })
        })
    }

    fn recover<'a>(
        &'a self,
        key: &'a StreamKey,
        since: &'a Position,
    ) -> EngineFuture<'a, Recovery> {
        Box::pin(async move { Ok(self.read(key, Some(since.seq)).await?.recovery(since)) })
    }

    fn page<'a>(&'a self, key: &'a StreamKey, query: &'a PageQuery) -> EngineFuture<'a, Page> {
        Box::pin(self.read_page(key, query))
    }

    fn ensure<'a>(&'a self, key: &'a StreamKey) -> EngineFuture<'a, Position> {
        Box::pin(async move { Ok(self.read(key, None).await?.position) })
    }

    fn position<'a>(&'a self, key: &'a StreamKey) -> EngineFuture<'a, Option<Position>> {
        // Only an append creates a stream, and it starts at seq 1: top 0 is a stream with no keys.
        Box::pin(async move {
            let position = self.read(key, None).await?.position;
            Ok((position.seq > 0).then_some(position))
        })
    }

    fn lost<'a>(&'a self, key: &'a StreamKey) -> EngineFuture<'a, bool> {
        // Redis keeps no record of streams it dropped yet; see docs/cluster.md on maxmemory.
        let _ = key;
        Box::pin(std::future::ready(Ok(false)))
    }

    fn idempotent<'a>(
        &'a self,
        target: &'a Target,
        key: &'a str,
        digest: &'a RequestDigest,
        window: Duration,
    ) -> EngineFuture<'a, IdempotencyOutcome> {
        Box::pin(async move {
            if key.len() > MAX_IDEMPOTENCY_KEY_LEN {
                return Err(EngineError::IdempotencyKeyTooLong { len: key.len() });
            }
            let c = &self.cluster;
            let name = c.keys.idempotency(target, key);
            let window_ms = window.as_millis().max(1) as u64;
            // The value is the request's digest while the first call works, then the digest
            // followed by its answer: a repeat compares the first 32 bytes.
            // Twice: a key that expires between the SET and the GET is new on the second try.
            for _ in 0..2 {
                let mut con = c.conn();
                let k = name.clone();
                let claimed: Option<String> = c
                    .call("idempotency", async move {
                        redis::cmd("SET")
                            .arg(k)
                            .arg(&digest[..])
                            .arg("NX")
                            .arg("PX")
                            .arg(window_ms)
                            .query_async(&mut con)
                            .await
                    })
                    .await?;
                if claimed.is_some() {
                    return Ok(IdempotencyOutcome::First);
                }
                let mut con = c.conn();
                let k = name.clone();
                let seen: Option<Vec<u8>> = c
                    .call("idempotency", async move {
                        redis::cmd("GET").arg(k).query_async(&mut con).await
                    })
                    .await?;
                let Some(seen) = seen else { continue };
                if seen.get(..digest.len()) != Some(&digest[..]) {
                    return Ok(IdempotencyOutcome::Reused);
                }
                self.repeats.fetch_add(1, Ordering::Relaxed);
                let answer = Bytes::from(seen).slice(digest.len()..);
                return Ok(if answer.is_empty() {
                    IdempotencyOutcome::InFlight
                } else {
                    IdempotencyOutcome::Repeat(answer)
                });
            }
            Ok(IdempotencyOutcome::First)
        })
    }

    fn record_answer<'a>(
        &'a self,
        target: &'a Target,
        key: &'a str,
        digest: &'a RequestDigest,
        answer: Bytes,
    ) -> EngineFuture<'a, ()> {
        Box::pin(async move {
            let c = &self.cluster;
            let mut con = c.conn();
            let k = c.keys.idempotency(target, key);
            let value = [&digest[..], &answer[..]].concat();
            c.call("idempotency", async move {
                redis::cmd("SET")
                    .arg(k)
                    .arg(value)
                    .arg("XX")
                    .arg("KEEPTTL")
                    .query_async::<()>(&mut con)
                    .await
            })
            .await
        })
    }

    fn forget<'a>(&'a self, target: &'a Target, key: &'a str) -> EngineFuture<'a, ()> {
        Box::pin(async move {
            let c = &self.cluster;
            let mut con = c.conn();
            let k = c.keys.idempotency(target, key);
            c.call("idempotency", async move {
                redis::cmd("DEL").arg(k).query_async::<()>(&mut con).await
            })
            .await
        })
    }

    fn settle<'a>(&'a self, key: &'a StreamKey) -> EngineFuture<'a, ()> {
        Box::pin(self.cluster.settle(key))
    }

    fn purge(&self) -> EngineFuture<'_, usize> {
        // Redis expires history and keys by itself (PEXPIRE / PX).
        Box::pin(std::future::ready(Ok(0)))
    }

    fn stats(&self) -> EngineStats {
        // What Redis holds is Redis's to report (INFO); a scrape must not cost a round trip.
        EngineStats {
            idempotent_repeats: self.repeats.load(Ordering::Relaxed),
            ..EngineStats::default()
        }
    }
}

#[path = "redis_page.rs"]
mod page;

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn a_read_numbers_entries_and_drops_expired_ones() {
        let out = vec![
            bulk("abc"),
            Value::Int(5),
            bulk("100000"),
            bulk("1000 {\"seq\":3}"),
            bulk("99000 {\"seq\":4}"),
            bulk("99500 {\"seq\":5}"),
        ];
        let r = Read::parse(out, Duration::from_millis(2000)).unwrap();
        assert_eq!(r.position.seq, 5);
        let seqs: Vec<u64> = r.held.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, [4, 5]);
        assert_eq!(&r.held[0].frame[..], b"{\"seq\":4}");
        let since = Position::parse("abc:3").unwrap();
        let rec = r.recovery(&since);
        assert!(rec.recovered, "seq 4 and 5 are both held");
        assert_eq!(rec.missed.len(), 2);
    }

    #[test]
    fn a_trimmed_or_foreign_position_is_not_recovered() {
        let out = || {
            vec![
                bulk("abc"),
                Value::Int(9),
                bulk("5"),
                bulk("1 x"),
                bulk("1 y"),
            ]
        };
        let trimmed = Read::parse(out(), Duration::from_secs(60)).unwrap();
        assert!(
            !trimmed
                .recovery(&Position::parse("abc:2").unwrap())
                .recovered
        );
        let other = Read::parse(out(), Duration::from_secs(60)).unwrap();
        let rec = other.recovery(&Position::parse("zzz:8").unwrap());
        assert!(!rec.recovered && rec.missed.is_empty());
    }

    #[test]
    fn garbage_replies_are_errors_not_panics() {
        for out in [
            vec![Value::Nil],
            vec![bulk("abc"), bulk("x"), bulk("1")],
            vec![bulk("abc"), Value::Int(1), bulk("1"), bulk("nospace")],
            vec![bulk("abc"), Value::Int(0), bulk("1"), bulk("1 a")],
            vec![bulk("bad epoch!"), Value::Int(1), bulk("1")],
        ] {
            assert!(Read::parse(out, Duration::from_secs(1)).is_none());
        }
    }
}
