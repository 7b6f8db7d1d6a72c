//! Idempotency keys held in this process: the memory engine's store (§5 `idempotency_key`).

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use lru::LruCache;
use parking_lot::Mutex;

use super::{EngineError, IdempotencyOutcome, MAX_IDEMPOTENCY_KEY_LEN, RequestDigest, Target};

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct KeyId {
    target: Target,
    key: Box<str>,
}

struct KeyEntry {
    expires_at: u64,
    /// What the first call asked for; a repeat asking for something else is refused.
    digest: RequestDigest,
    /// `None` while the first call is still working on its answer.
    answer: Option<Bytes>,
}

/// Claimed keys in claim order, bounded: past the bound the oldest claim goes first.
pub(super) struct KeyStore {
    keys: Mutex<LruCache<KeyId, KeyEntry>>,
    repeats: AtomicU64,
}

impl KeyStore {
    pub(super) fn new(max_keys: NonZeroUsize) -> Self {
        KeyStore {
            keys: Mutex::new(LruCache::new(max_keys)),
            repeats: AtomicU64::new(0),
        }
    }

    fn id(target: &Target, key: &str) -> KeyId {
        KeyId {
            target: target.clone(),
            key: key.into(),
        }
    }

    pub(super) fn claim(
        &self,
        target: &Target,
        key: &str,
        digest: &RequestDigest,
        window: Duration,
        now: u64,
    ) -> Result<IdempotencyOutcome, EngineError> {
        if key.len() > MAX_IDEMPOTENCY_KEY_LEN {
            return Err(EngineError::IdempotencyKeyTooLong { len: key.len() });
        }
        let id = Self::id(target, key);
        let mut keys = self.keys.lock();
        // `peek`, not `get`: keys stay in claim order, so `purge` finds the expired at the end.
        if let Some(entry) = keys.peek(&id)
            && entry.expires_at > now
        {
            if entry.digest != *digest {
                return Ok(IdempotencyOutcome::Reused);
            }
            self.repeats.fetch_add(1, Ordering::Relaxed);
            return Ok(match &entry.answer {
                Some(answer) => IdempotencyOutcome::Repeat(answer.clone()),
                None => IdempotencyOutcome::InFlight,
            });
        }
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        keys.push(
            id,
            KeyEntry {
                expires_at: now.saturating_add(window_ms),
                digest: *digest,
                answer: None,
            },
        );
        Ok(IdempotencyOutcome::First)
    }

    pub(super) fn record(&self, target: &Target, key: &str, answer: Bytes, now: u64) {
        // A key that expired or was evicted meanwhile stays gone: its window is over.
        if let Some(entry) = self.keys.lock().peek_mut(&Self::id(target, key))
            && entry.expires_at > now
            && entry.answer.is_none()
        {
            entry.answer = Some(answer);
        }
    }

    pub(super) fn forget(&self, target: &Target, key: &str) {
        let id = Self::id(target, key);
        let mut keys = self.keys.lock();
        // An answered key stays: its repeats must get that answer.
        if keys.peek(&id).is_some_and(|entry| entry.answer.is_none()) {
            keys.pop(&id);
        }
    }

    /// Drops expired keys from the oldest claim on; a key claimed later with a shorter window
    /// waits for the lazy check in `claim`.
    pub(super) fn purge(&self, now: u64) -> usize {
        let mut keys = self.keys.lock();
        let mut removed = 0;
        while keys
            .peek_lru()
            .is_some_and(|(_, entry)| entry.expires_at <= now)
        {
            keys.pop_lru();
            removed += 1;
        }
        removed
    }

    pub(super) fn len(&self) -> u64 {
        self.keys.lock().len() as u64
    }

    pub(super) fn repeats(&self) -> u64 {
        self.repeats.load(Ordering::Relaxed)
    }
}
