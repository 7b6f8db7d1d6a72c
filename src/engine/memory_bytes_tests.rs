//! `history_max_bytes` and what eviction leaves behind (§13), on the engine alone.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use crate::engine::memory::{MemoryConfig, MemoryEngine};
use crate::engine::{
    Engine, EngineError, FrameTemplate, Live, LiveSink, ManualTime, Position, StreamKey,
};

/// Nobody is connected: every append is stored only.
struct Nobody;

impl LiveSink for Nobody {
    fn deliver(&self, _: &StreamKey, _: &Live) -> usize {
        0
    }
}

fn run<T>(future: impl Future<Output = Result<T, EngineError>>) -> T {
    let mut future = std::pin::pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(Ok(value)) => value,
        Poll::Ready(Err(e)) => panic!("engine error: {e}"),
        Poll::Pending => panic!("memory engine futures must be ready at once"),
    }
}

/// `{"seq":N,"type":"x"}`: 20 bytes for a one-digit seq.
fn frame() -> FrameTemplate {
    FrameTemplate::json_object(br#"{"type":"x"}"#).expect("an object")
}

fn engine(max_bytes: u64, max_streams: usize) -> MemoryEngine {
    let config = MemoryConfig {
        history_size: 100,
        history_max_streams: max_streams.try_into().expect("non-zero"),
        history_max_bytes: max_bytes,
        ..MemoryConfig::default()
    };
    MemoryEngine::new(config, Arc::new(ManualTime::new(1)), Arc::new(Nobody))
}

fn append(engine: &MemoryEngine, key: &StreamKey, n: usize) {
    for _ in 0..n {
        run(engine.append(key, &frame()));
    }
}

fn start(engine: &MemoryEngine, key: &StreamKey) -> (bool, usize) {
    let r = run(engine.recover(key, &Position::start()));
    (r.recovered, r.missed.len())
}

#[test]
fn bytes_past_the_budget_evict_the_least_recently_used_streams() {
    // Five frames of 20 bytes fit; the stream count bound is far away.
    let engine = engine(100, 1000);
    let keys: Vec<StreamKey> = (0..5)
        .map(|i| StreamKey::client(&format!("k{i}")))
        .collect();
    append(&engine, &keys[0], 2);
    append(&engine, &keys[1], 2);
    start(&engine, &keys[0]); // k1 is now the least recently used
    for key in &keys[2..] {
        append(&engine, key, 1);
        let stats = engine.stats();
        assert!(stats.stored_bytes <= 100, "{stats:?}");
    }
    let stats = engine.stats();
    assert_eq!(stats.stored_bytes, 100, "{stats:?}");
    assert_eq!(stats.evicted_streams, 1, "{stats:?}");
    assert_eq!(start(&engine, &keys[1]), (false, 0), "k1 went first");
    assert_eq!(start(&engine, &keys[0]), (true, 2), "k0 was used after k1");
    assert_eq!(start(&engine, &keys[4]), (true, 1));
}

#[test]
fn a_stream_alone_over_the_budget_drops_its_oldest_and_keeps_its_newest() {
    let engine = engine(50, 1000);
    let key = StreamKey::channel("big");
    append(&engine, &key, 4);
    assert!(engine.stats().stored_bytes <= 50);
    let r = run(engine.recover(&key, &Position::start()));
    assert!(!r.recovered, "seqs 1 and 2 were trimmed");
    assert_eq!(r.missed.iter().map(|m| m.seq).collect::<Vec<_>>(), [3, 4]);
}

#[test]
fn a_key_whose_stream_was_evicted_never_answers_start_as_recovered() {
    let engine = engine(1 << 20, 1);
    let (gone, other) = (StreamKey::client("gone"), StreamKey::client("other"));
    assert_eq!(start(&engine, &gone), (true, 0), "nothing was ever stored");
    assert!(!run(engine.lost(&gone)));
    append(&engine, &gone, 1);
    append(&engine, &other, 1); // evicts `gone` with its stored message
    assert_eq!(start(&engine, &gone), (false, 0), "its message was lost");
    assert!(run(engine.lost(&gone)));
    // A stream created again does not make the lost message never have existed.
    append(&engine, &gone, 1);
    assert_eq!(start(&engine, &gone), (false, 1));
    assert!(!run(engine.lost(&gone)), "it has a stream again");
    // A position handed out after the loss still resumes exactly.
    let top = run(engine.ensure(&gone));
    append(&engine, &gone, 1);
    let r = run(engine.recover(&gone, &top));
    assert!(r.recovered);
    assert_eq!(r.missed.len(), 1);
}
