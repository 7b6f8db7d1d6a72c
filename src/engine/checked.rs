//! The engine as everyone else holds it: every stream key and idempotency target is checked by
//! the one rule for client ids and channel names (docs/protocol.md §13) before the engine behind builds
//! a key from it, whoever the caller is. The API and the handshake refuse bad names first, with
//! their own errors; this is the floor under them, so no path can store under a name that can
//! never connect or subscribe (a 900 KB id, a NUL byte).

use std::future::ready;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::{
    Appended, Engine, EngineError, EngineFuture, EngineStats, FrameTemplate, IdempotencyOutcome,
    Page, PageQuery, Position, Recovery, RequestDigest, StreamKey, Target,
};
use crate::id::SessionId;
use crate::id::{valid_channel, valid_client_id};

/// An engine that refuses bad names before `inner` sees them.
pub struct Checked(pub Arc<dyn Engine>);

/// Why `key` may not name a stream, if it may not.
fn stream(key: &StreamKey) -> Result<(), EngineError> {
    match key {
        StreamKey::Client(id) => valid_client_id(id).map_err(EngineError::BadClientId),
        StreamKey::Channel(name) => valid_channel(name).map_err(EngineError::BadChannel),
    }
}

/// Why `target` may not scope an idempotency key, if it may not.
fn target(target: &Target) -> Result<(), EngineError> {
    match target {
        Target::Client(id) => valid_client_id(id).map_err(EngineError::BadClientId),
        Target::Channel(name) => valid_channel(name).map_err(EngineError::BadChannel),
        // Only ids tether hands out: anything else has no session to push to.
        Target::Session(id) => match SessionId::parse(id) {
            Some(_) => Ok(()),
            None => Err(EngineError::BadClientId("not a session id")),
        },
    }
}

/// The refusal as an engine future, or `None` to go on.
fn refuse<'a, T: Send + 'a>(check: Result<(), EngineError>) -> Option<EngineFuture<'a, T>> {
    check
        .err()
        .map(|e| Box::pin(ready(Err(e))) as EngineFuture<'a, T>)
}

impl Engine for Checked {
    fn append<'a>(
        &'a self,
        key: &'a StreamKey,
        frame: &'a FrameTemplate,
    ) -> EngineFuture<'a, Appended> {
        refuse(stream(key)).unwrap_or_else(|| self.0.append(key, frame))
    }

    fn recover<'a>(
        &'a self,
        key: &'a StreamKey,
        since: &'a Position,
    ) -> EngineFuture<'a, Recovery> {
        refuse(stream(key)).unwrap_or_else(|| self.0.recover(key, since))
    }

    fn page<'a>(&'a self, key: &'a StreamKey, query: &'a PageQuery) -> EngineFuture<'a, Page> {
        refuse(stream(key)).unwrap_or_else(|| self.0.page(key, query))
    }

    fn ensure<'a>(&'a self, key: &'a StreamKey) -> EngineFuture<'a, Position> {
        refuse(stream(key)).unwrap_or_else(|| self.0.ensure(key))
    }

    fn position<'a>(&'a self, key: &'a StreamKey) -> EngineFuture<'a, Option<Position>> {
        refuse(stream(key)).unwrap_or_else(|| self.0.position(key))
    }

    fn lost<'a>(&'a self, key: &'a StreamKey) -> EngineFuture<'a, bool> {
        refuse(stream(key)).unwrap_or_else(|| self.0.lost(key))
    }

    fn idempotent<'a>(
        &'a self,
        t: &'a Target,
        key: &'a str,
        digest: &'a RequestDigest,
        window: Duration,
    ) -> EngineFuture<'a, IdempotencyOutcome> {
        refuse(target(t)).unwrap_or_else(|| self.0.idempotent(t, key, digest, window))
    }

    fn record_answer<'a>(
        &'a self,
        t: &'a Target,
        key: &'a str,
        digest: &'a RequestDigest,
        answer: Bytes,
    ) -> EngineFuture<'a, ()> {
        refuse(target(t)).unwrap_or_else(|| self.0.record_answer(t, key, digest, answer))
    }

    fn forget<'a>(&'a self, t: &'a Target, key: &'a str) -> EngineFuture<'a, ()> {
        refuse(target(t)).unwrap_or_else(|| self.0.forget(t, key))
    }

    fn settle<'a>(&'a self, key: &'a StreamKey) -> EngineFuture<'a, ()> {
        refuse(stream(key)).unwrap_or_else(|| self.0.settle(key))
    }

    fn purge(&self) -> EngineFuture<'_, usize> {
        self.0.purge()
    }

    fn stats(&self) -> EngineStats {
        self.0.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::WallTime;
    use crate::engine::memory::{MemoryConfig, MemoryEngine};

    struct Nobody;

    impl crate::engine::LiveSink for Nobody {
        fn deliver(&self, _: &StreamKey, _: &crate::engine::Live) -> usize {
            0
        }
    }

    /// The memory engine and a refusal answer with ready futures, so one poll settles them.
    fn run<T>(mut f: EngineFuture<'_, T>) -> Result<T, EngineError> {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(r) => r,
            std::task::Poll::Pending => Err(EngineError::BadClientId("pending")),
        }
    }

    #[test]
    fn bad_names_never_reach_the_engine() {
        let inner = MemoryEngine::new(
            MemoryConfig::default(),
            Arc::new(WallTime),
            Arc::new(Nobody),
        );
        let e = Checked(Arc::new(inner));
        let huge = StreamKey::client(&"x".repeat(900 * 1024));
        let nul = StreamKey::client("a\0b");
        let tab = StreamKey::channel("news\t");
        for key in [&huge, &nul] {
            let frame = FrameTemplate::new(Bytes::from_static(b"{"), Bytes::from_static(b"}"));
            assert!(matches!(
                run(e.append(key, &frame)),
                Err(EngineError::BadClientId(_))
            ));
            assert!(matches!(
                run(e.position(key)),
                Err(EngineError::BadClientId(_))
            ));
        }
        assert!(matches!(
            run(e.ensure(&tab)),
            Err(EngineError::BadChannel(_))
        ));
        let d = [0; 32];
        let w = Duration::from_secs(1);
        let nul = Target::Client("a\0b".into());
        assert!(run(e.idempotent(&nul, "k", &d, w)).is_err());
        let forged = Target::Session("not-a-session".into());
        assert!(run(e.idempotent(&forged, "k", &d, w)).is_err());
        assert_eq!(e.stats().streams, 0, "nothing was stored");
        let ok = StreamKey::client(&"x".repeat(256));
        assert!(run(e.position(&ok)).is_ok());
    }
}
