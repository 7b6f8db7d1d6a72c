//! The memory engine's behaviour, through `dyn Engine` as the server uses it; time is a
//! `ManualTime`, so nothing sleeps.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::task::{Context, Poll, Waker};
use std::thread;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;

use super::{MemoryConfig, MemoryEngine};
use crate::engine::{
    Engine, EngineError, Epoch, FrameTemplate, HandOver, IdempotencyOutcome, Live, LiveSink,
    ManualTime, Offered, Overflowed, Position, StreamKey, Target,
};

const T0: u64 = 1_700_000_000_000;
/// A request digest for idempotency tests; [`D2`] is another request.
const D1: crate::engine::RequestDigest = [1; 32];
const D2: crate::engine::RequestDigest = [2; 32];

/// Polls a memory-engine future once: they are ready at once, so no runtime is needed.
fn try_run<T>(future: impl Future<Output = Result<T, EngineError>>) -> Result<T, EngineError> {
    let mut future = std::pin::pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(result) => result,
        Poll::Pending => panic!("memory engine futures must be ready at once"),
    }
}

fn run<T>(future: impl Future<Output = Result<T, EngineError>>) -> T {
    match try_run(future) {
        Ok(value) => value,
        Err(error) => panic!("engine error: {error}"),
    }
}

/// The seq a frame carries, read back from its bytes: proves the frame was built with it.
fn frame_seq(frame: &[u8]) -> u64 {
    let text = std::str::from_utf8(frame).expect("frames are UTF-8");
    let rest = text.strip_prefix("{\"seq\":").expect("seq comes first");
    let end = rest.find(',').expect("a type follows");
    rest[..end].parse().expect("seq is a number")
}

fn template(kind: &str) -> FrameTemplate {
    FrameTemplate::json_object(format!("{{\"type\":\"{kind}\"}}").as_bytes()).expect("an object")
}

/// A stand-in for the registry: sessions are gates with a queue of received seqs.
#[derive(Default)]
struct Registry {
    subs: Mutex<Vec<Arc<Sub>>>,
    /// When set, the next delivery waits on it twice: once to say it has started (the
    /// message is stored), once to be let go.
    pause: Mutex<Option<Arc<Barrier>>>,
    duplicates: AtomicUsize,
    delivered_frames: Mutex<Vec<Live>>,
}

struct Sub {
    key: StreamKey,
    gate: HandOver,
    queue: Mutex<Vec<u64>>,
}

impl Sub {
    fn new(key: &StreamKey, limit: usize) -> Arc<Self> {
        Arc::new(Sub {
            key: key.clone(),
            gate: HandOver::new(limit),
            queue: Mutex::new(Vec::new()),
        })
    }

    fn push(&self, live: &Live) -> bool {
        self.queue.lock().push(frame_seq(&live.frame));
        true
    }
}

impl Registry {
    fn register(&self, sub: &Arc<Sub>) {
        self.subs.lock().push(sub.clone());
    }

    fn unregister(&self, sub: &Arc<Sub>) {
        self.subs.lock().retain(|s| !Arc::ptr_eq(s, sub));
    }
}

impl LiveSink for Registry {
    fn deliver(&self, key: &StreamKey, live: &Live) -> usize {
        let pause = self.pause.lock().take();
        if let Some(barrier) = pause {
            barrier.wait();
            barrier.wait();
        }
        let mut recorded = self.delivered_frames.lock();
        if recorded.len() < 16 {
            recorded.push(live.clone());
        }
        drop(recorded);
        let subs: Vec<Arc<Sub>> = self
            .subs
            .lock()
            .iter()
            .filter(|s| &s.key == key)
            .cloned()
            .collect();
        let mut accepted = 0;
        for sub in subs {
            let offered = sub.gate.offer(live, |l| sub.push(l));
            if offered == Offered::Duplicate {
                self.duplicates.fetch_add(1, Ordering::Relaxed);
            }
            accepted += usize::from(offered.accepted());
        }
        accepted
    }
}

struct Fixture {
    engine: Arc<dyn Engine>,
    clock: Arc<ManualTime>,
    registry: Arc<Registry>,
}

fn fixture(history_size: usize, ttl_secs: u64, max_streams: usize) -> Fixture {
    let clock = Arc::new(ManualTime::new(T0));
    let registry = Arc::new(Registry::default());
    let config = MemoryConfig {
        history_size,
        history_ttl: Duration::from_secs(ttl_secs),
        history_max_streams: max_streams.try_into().expect("non-zero"),
        ..MemoryConfig::default()
    };
    let engine = Arc::new(MemoryEngine::new(config, clock.clone(), registry.clone()));
    Fixture {
        engine,
        clock,
        registry,
    }
}

fn append_n(engine: &dyn Engine, key: &StreamKey, n: usize) -> Position {
    let mut last = None;
    for _ in 0..n {
        last = Some(run(engine.append(key, &template("note"))).position);
    }
    last.expect("n > 0")
}

fn seqs(recovery: &crate::engine::Recovery) -> Vec<u64> {
    recovery.missed.iter().map(|m| m.seq).collect()
}

#[test]
fn append_assigns_consecutive_seqs_and_recover_returns_the_rest_in_order() {
    let f = fixture(100, 300, 10);
    let key = StreamKey::client("alice");
    let top = append_n(&*f.engine, &key, 5);
    assert_eq!(top.seq, 5);
    assert_eq!(top.epoch.as_str().len(), crate::engine::position::EPOCH_LEN);

    let since = Position {
        epoch: top.epoch.clone(),
        seq: 2,
    };
    let recovery = run(f.engine.recover(&key, &since));
    assert!(recovery.recovered);
    assert_eq!(recovery.position, top);
    assert_eq!(seqs(&recovery), [3, 4, 5]);
    for stored in &recovery.missed {
        assert_eq!(frame_seq(&stored.frame), stored.seq);
        assert_eq!(stored.at_ms, T0);
    }
    // Replayed bytes are the very bytes sent live.
    let live = f.registry.delivered_frames.lock();
    assert_eq!(live[2].frame, recovery.missed[0].frame);
    assert_eq!(live[2].epoch, top.epoch);
}

#[test]
fn recover_at_the_top_is_recovered_with_nothing_missed() {
    let f = fixture(100, 300, 10);
    let key = StreamKey::client("alice");
    let top = append_n(&*f.engine, &key, 3);
    let recovery = run(f.engine.recover(&key, &top));
    assert!(recovery.recovered);
    assert!(recovery.missed.is_empty());
    assert_eq!(recovery.position, top);
}

#[test]
fn wrong_epoch_or_a_seq_ahead_of_the_top_is_not_recovered() {
    let f = fixture(100, 300, 10);
    let key = StreamKey::client("alice");
    let top = append_n(&*f.engine, &key, 3);
    let other = Position {
        epoch: Epoch::parse("zzzzzzzzzzzz").expect("valid"),
        seq: 1,
    };
    let ahead = Position {
        epoch: top.epoch.clone(),
        seq: 4,
    };
    for since in [other, ahead] {
        let recovery = run(f.engine.recover(&key, &since));
        assert!(!recovery.recovered, "{since}");
        assert!(recovery.missed.is_empty());
        assert_eq!(recovery.position, top);
    }
}

#[test]
fn history_trimmed_by_size_is_never_served_as_recovered() {
    let f = fixture(3, 300, 10);
    let key = StreamKey::client("alice");
    let top = append_n(&*f.engine, &key, 5);
    let at = |seq| Position {
        epoch: top.epoch.clone(),
        seq,
    };
    let gap = run(f.engine.recover(&key, &at(1)));
    assert!(!gap.recovered);
    assert!(gap.missed.is_empty());
    let whole = run(f.engine.recover(&key, &at(2)));
    assert!(whole.recovered);
    assert_eq!(seqs(&whole), [3, 4, 5]);
}

#[test]
fn history_trimmed_by_ttl_is_never_served_as_recovered() {
    let f = fixture(100, 10, 10);
    let key = StreamKey::channel("news");
    append_n(&*f.engine, &key, 2);
    f.clock.advance(Duration::from_secs(6));
    let top = append_n(&*f.engine, &key, 1);
    f.clock.advance(Duration::from_secs(4)); // 1 and 2 are exactly 10 s old: gone.
    let at = |seq| Position {
        epoch: top.epoch.clone(),
        seq,
    };
    assert!(!run(f.engine.recover(&key, &at(0))).recovered);
    assert!(!run(f.engine.recover(&key, &at(1))).recovered);
    let rest = run(f.engine.recover(&key, &at(2)));
    assert!(rest.recovered);
    assert_eq!(seqs(&rest), [3]);
    // Everything expired: a client that had it all still recovers, one that did not does not.
    f.clock.advance(Duration::from_secs(10));
    assert!(run(f.engine.recover(&key, &at(3))).recovered);
    assert!(!run(f.engine.recover(&key, &at(2))).recovered);
    assert_eq!(f.engine.stats().stored_messages, 0);
}

#[test]
fn purge_drops_expired_messages_without_any_access() {
    let f = fixture(100, 10, 10);
    let (a, b) = (StreamKey::client("a"), StreamKey::client("b"));
    append_n(&*f.engine, &a, 3);
    f.clock.advance(Duration::from_secs(5));
    append_n(&*f.engine, &b, 2);
    assert_eq!(f.engine.stats().stored_messages, 5);
    f.clock.advance(Duration::from_secs(5));
    assert_eq!(run(f.engine.purge()), 3);
    let stats = f.engine.stats();
    assert_eq!((stats.stored_messages, stats.streams), (2, 2));
    f.clock.advance(Duration::from_secs(5));
    assert_eq!(run(f.engine.purge()), 2);
    assert_eq!(f.engine.stats().stored_bytes, 0);
}

#[test]
fn start_position_recovers_everything_still_stored() {
    let f = fixture(3, 300, 10);
    let key = StreamKey::client("alice");
    // A fresh stream: created by the recover, and later messages count in its epoch.
    let fresh = run(f.engine.recover(&key, &Position::start()));
    assert!(fresh.recovered && fresh.missed.is_empty());
    assert_eq!(fresh.position.seq, 0);
    let top = append_n(&*f.engine, &key, 2);
    assert_eq!(top.epoch, fresh.position.epoch);
    let all = run(f.engine.recover(&key, &Position::start()));
    assert!(all.recovered);
    assert_eq!(seqs(&all), [1, 2]);
    // Past the size limit: what is stored is still handed over, but not as the whole stream.
    append_n(&*f.engine, &key, 3);
    let partial = run(f.engine.recover(&key, &Position::start()));
    assert!(!partial.recovered);
    assert_eq!(seqs(&partial), [3, 4, 5]);
}

#[test]
fn client_and_channel_streams_with_equal_names_are_separate() {
    let f = fixture(10, 300, 10);
    let (client, channel) = (StreamKey::client("x"), StreamKey::channel("x"));
    append_n(&*f.engine, &client, 3);
    let top = append_n(&*f.engine, &channel, 1);
    assert_eq!(top.seq, 1);
    assert_eq!(run(f.engine.position(&client)).map(|p| p.seq), Some(3));
    assert_eq!(f.engine.stats().streams, 2);
}

#[test]
fn reading_creates_nothing_and_the_first_append_keeps_the_epoch_handed_out() {
    let f = fixture(10, 300, 10);
    let key = StreamKey::client("bob");
    assert_eq!(run(f.engine.position(&key)), None);
    let ensured = run(f.engine.ensure(&key));
    assert_eq!(ensured.seq, 0);
    let recovered = run(f.engine.recover(&key, &ensured));
    assert!(recovered.recovered);
    assert_eq!(recovered.position, ensured);
    assert_eq!(run(f.engine.position(&key)), None);
    assert_eq!(
        f.engine.stats().streams,
        0,
        "a welcome must not cost a stream"
    );

    append_n(&*f.engine, &key, 2);
    let back = run(f.engine.recover(&key, &ensured));
    assert!(back.recovered, "nothing was lost since the welcome");
    assert_eq!(seqs(&back), vec![1, 2]);
    assert_eq!(back.position.epoch, ensured.epoch);
}

#[test]
fn a_position_handed_out_before_an_eviction_never_recovers_the_stream_after_it() {
    let f = fixture(10, 300, 1);
    let (bob, eve) = (StreamKey::client("bob"), StreamKey::client("eve"));
    let ensured = run(f.engine.ensure(&bob));
    append_n(&*f.engine, &bob, 2);
    append_n(&*f.engine, &eve, 1); // evicts bob, with the two messages it held
    append_n(&*f.engine, &bob, 1); // evicts eve; bob's new stream holds only this one
    let back = run(f.engine.recover(&bob, &ensured));
    assert!(!back.recovered, "seqs 1 and 2 of the old stream are gone");
    assert!(back.missed.is_empty());
    assert_ne!(back.position.epoch, ensured.epoch);
    assert_eq!(back.position.seq, 1);
}

#[test]
fn least_recently_used_stream_is_evicted_and_comes_back_with_a_new_epoch() {
    let f = fixture(10, 300, 2);
    let (a, b, c) = (
        StreamKey::client("a"),
        StreamKey::client("b"),
        StreamKey::client("c"),
    );
    let a_top = append_n(&*f.engine, &a, 2);
    let b_top = append_n(&*f.engine, &b, 3);
    run(f.engine.recover(&a, &a_top)); // a is now more recent than b
    append_n(&*f.engine, &c, 1);
    assert_eq!(run(f.engine.position(&b)), None);
    assert_eq!(run(f.engine.position(&a)), Some(a_top));
    let stats = f.engine.stats();
    assert_eq!(
        (stats.streams, stats.evicted_streams, stats.stored_messages),
        (2, 1, 3)
    );

    let again = run(f.engine.recover(&b, &b_top));
    assert!(!again.recovered);
    assert_ne!(again.position.epoch, b_top.epoch);
    assert_eq!(again.position.seq, 0);
    assert_eq!(append_n(&*f.engine, &b, 1).seq, 1);
}

#[test]
fn stats_count_streams_messages_and_bytes() {
    let f = fixture(2, 300, 10);
    let key = StreamKey::client("alice");
    append_n(&*f.engine, &key, 1);
    let one = f.engine.stats();
    assert_eq!((one.streams, one.stored_messages), (1, 1));
    assert_eq!(one.stored_bytes, br#"{"seq":1,"type":"note"}"#.len() as u64);
    append_n(&*f.engine, &key, 8); // trimmed to the last two: seqs 8 and 9
    let two = f.engine.stats();
    assert_eq!(two.stored_messages, 2);
    assert_eq!(two.stored_bytes, one.stored_bytes * 2);
}

#[test]
fn append_reports_what_the_sink_delivered() {
    let f = fixture(10, 300, 10);
    let key = StreamKey::client("alice");
    assert_eq!(run(f.engine.append(&key, &template("a"))).delivered, 0);
    let sub = Sub::new(&key, 10);
    f.registry.register(&sub);
    let top = run(f.engine.ensure(&key));
    assert_eq!(sub.gate.open(&top, |l| sub.push(l)), Ok(0));
    assert_eq!(run(f.engine.append(&key, &template("b"))).delivered, 1);
    assert_eq!(*sub.queue.lock(), [2]);
}

#[test]
fn idempotency_repeats_within_the_window_and_is_fresh_after_it() {
    let f = fixture(10, 300, 10);
    let window = Duration::from_secs(300);
    let alice = Target::Client("alice".into());
    let first = run(f.engine.idempotent(&alice, "k1", &D1, window));
    assert_eq!(first, IdempotencyOutcome::First);
    assert_eq!(
        run(f.engine.idempotent(&alice, "k1", &D1, window)),
        IdempotencyOutcome::InFlight
    );
    let answer = Bytes::from_static(br#"{"delivered":2}"#);
    run(f.engine.record_answer(&alice, "k1", &D1, answer.clone()));
    f.clock.advance(Duration::from_secs(299));
    let repeat = run(f.engine.idempotent(&alice, "k1", &D1, window));
    assert_eq!(repeat, IdempotencyOutcome::Repeat(answer));
    // Same key, other target; same name, other kind of target.
    let news = Target::Channel("alice".into());
    assert_eq!(
        run(f.engine.idempotent(&news, "k1", &D1, window)),
        IdempotencyOutcome::First
    );
    f.clock.advance(Duration::from_secs(1));
    assert_eq!(
        run(f.engine.idempotent(&alice, "k1", &D1, window)),
        IdempotencyOutcome::First
    );
    let stats = f.engine.stats();
    assert_eq!((stats.idempotent_repeats, stats.idempotency_keys), (2, 2));
}

#[test]
fn idempotency_refuses_a_key_reused_for_another_request() {
    let f = fixture(10, 300, 10);
    let window = Duration::from_secs(300);
    let bob = Target::Client("bob".into());
    assert_eq!(
        run(f.engine.idempotent(&bob, "k", &D1, window)),
        IdempotencyOutcome::First
    );
    // In flight or answered, another request with the key is refused, and not as a repeat.
    assert_eq!(
        run(f.engine.idempotent(&bob, "k", &D2, window)),
        IdempotencyOutcome::Reused
    );
    let answer = Bytes::from_static(b"200{}");
    run(f.engine.record_answer(&bob, "k", &D1, answer.clone()));
    assert_eq!(
        run(f.engine.idempotent(&bob, "k", &D2, window)),
        IdempotencyOutcome::Reused
    );
    assert_eq!(
        run(f.engine.idempotent(&bob, "k", &D1, window)),
        IdempotencyOutcome::Repeat(answer)
    );
    assert_eq!(f.engine.stats().idempotent_repeats, 1);
    // Once the window is over the key is free for any request.
    f.clock.advance(window);
    assert_eq!(
        run(f.engine.idempotent(&bob, "k", &D2, window)),
        IdempotencyOutcome::First
    );
}

#[test]
fn idempotency_forget_purge_and_hostile_keys() {
    let f = fixture(10, 300, 10);
    let window = Duration::from_secs(60);
    let target = Target::Session("s1".into());
    assert_eq!(
        run(f.engine.idempotent(&target, "k", &D1, window)),
        IdempotencyOutcome::First
    );
    run(f.engine.forget(&target, "k"));
    assert_eq!(
        run(f.engine.idempotent(&target, "k", &D1, window)),
        IdempotencyOutcome::First
    );
    run(f
        .engine
        .record_answer(&target, "k", &D1, Bytes::from_static(b"{}")));
    run(f.engine.forget(&target, "k")); // an answered key is kept: repeats must see it
    assert!(matches!(
        run(f.engine.idempotent(&target, "k", &D1, window)),
        IdempotencyOutcome::Repeat(_)
    ));
    f.clock.advance(window);
    assert_eq!(run(f.engine.purge()), 1);
    assert_eq!(f.engine.stats().idempotency_keys, 0);
    let huge = "k".repeat(1 << 20);
    let refused = try_run(f.engine.idempotent(&target, &huge, &D1, window));
    assert!(matches!(refused, Err(EngineError::IdempotencyKeyTooLong { len }) if len == 1 << 20));
}

#[test]
fn hand_over_gate_buffers_drops_the_replayed_and_passes_the_rest() {
    let epoch = Epoch::generate();
    let live = |seq| Live {
        epoch: epoch.clone(),
        seq,
        frame: template("n").build(seq),
    };
    let sub = Sub::new(&StreamKey::client("a"), 2);
    assert_eq!(sub.gate.offer(&live(5), |l| sub.push(l)), Offered::Buffered);
    assert_eq!(sub.gate.offer(&live(6), |l| sub.push(l)), Offered::Buffered);
    assert_eq!(sub.gate.offer(&live(7), |l| sub.push(l)), Offered::Dropped);
    let replayed = Position {
        epoch: epoch.clone(),
        seq: 5,
    };
    assert_eq!(sub.gate.open(&replayed, |l| sub.push(l)), Err(Overflowed));
    assert!(!sub.gate.is_open());
    // The session re-recovers up to 7 from history, then opens again.
    assert_eq!(sub.gate.offer(&live(8), |l| sub.push(l)), Offered::Buffered);
    let replayed = Position {
        epoch: epoch.clone(),
        seq: 7,
    };
    assert_eq!(sub.gate.open(&replayed, |l| sub.push(l)), Ok(1));
    assert_eq!(
        sub.gate.offer(&live(7), |l| sub.push(l)),
        Offered::Duplicate
    );
    assert_eq!(
        sub.gate.offer(&live(9), |l| sub.push(l)),
        Offered::Pushed(true)
    );
    assert_eq!(
        sub.gate.offer(&live(9), |l| sub.push(l)),
        Offered::Duplicate
    );
    // A re-created stream restarts at 1 under a new epoch and must pass.
    let reborn = Live {
        epoch: Epoch::generate(),
        ..live(1)
    };
    assert_eq!(
        sub.gate.offer(&reborn, |l| sub.push(l)),
        Offered::Pushed(true)
    );
    assert_eq!(*sub.queue.lock(), [8, 9, 1]);
}

#[test]
fn hand_over_joint_cases_forced_one_by_one() {
    let f = fixture(100, 300, 10);
    let key = StreamKey::client("alice");
    let since = append_n(&*f.engine, &key, 2); // the client has 1 and 2

    // 3: stored and fanned out after the registration, before the recover: buffered and
    // replayed, so the opening drops the buffered copy.
    let early = Sub::new(&key, 100);
    f.registry.register(&early);
    append_n(&*f.engine, &key, 1);
    // 4: stored before the recover, fanned out only after the gate opened.
    let barrier = Arc::new(Barrier::new(2));
    *f.registry.pause.lock() = Some(barrier.clone());
    let engine = f.engine.clone();
    let late_key = key.clone();
    let late = thread::spawn(move || append_n(&*engine, &late_key, 1));
    barrier.wait();
    let recovery = run(f.engine.recover(&key, &since));
    assert!(recovery.recovered);
    assert_eq!(seqs(&recovery), [3, 4]);
    early
        .queue
        .lock()
        .extend(recovery.missed.iter().map(|m| m.seq));
    assert_eq!(
        early.gate.open(&recovery.position, |l| early.push(l)),
        Ok(0)
    );
    barrier.wait();
    assert_eq!(late.join().expect("append 4").seq, 4);
    assert_eq!(f.registry.duplicates.load(Ordering::Relaxed), 1);

    // 5: appended between the recover and the opening: buffered, then pushed by the opening.
    let between = Sub::new(&key, 100);
    f.registry.register(&between);
    let recovery = run(f.engine.recover(&key, &recovery.position));
    assert!(recovery.recovered && recovery.missed.is_empty());
    append_n(&*f.engine, &key, 1);
    assert_eq!(
        between.gate.open(&recovery.position, |l| between.push(l)),
        Ok(1)
    );
    // 6: plain live, to both.
    append_n(&*f.engine, &key, 1);
    assert_eq!(*early.queue.lock(), [3, 4, 5, 6]);
    assert_eq!(*between.queue.lock(), [5, 6]);
}

/// Appenders hammer one stream while a resumer repeatedly registers, recovers from a point
/// behind the top, replays, opens its gate and lets live frames flow: each round must have
/// received exactly since+1, since+2, … with no gap and no duplicate. A subscriber registered
/// from the start checks that live order equals seq order.
fn hammer_hand_over(appenders: usize, rounds: u64) {
    // Appends allowed per round: the appenders stay busy during every round (so the joint
    // is raced each time) without ever running away from a starved resumer.
    const PER_ROUND: u64 = 200;
    let f = fixture(1 << 19, 3600, 10);
    let key = StreamKey::client("hammered");
    let watcher = Sub::new(&key, 16);
    f.registry.register(&watcher);
    let start = run(f.engine.recover(&key, &Position::start()));
    let opened = watcher.gate.open(&start.position, |l| watcher.push(l));
    assert_eq!(opened, Ok(0));

    let stop = Arc::new(AtomicBool::new(false));
    let budget = Arc::new(AtomicU64::new(0));
    let claimed = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..appenders)
        .map(|_| {
            let (engine, key) = (f.engine.clone(), key.clone());
            let (stop, budget, claimed) = (stop.clone(), budget.clone(), claimed.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if claimed.fetch_add(1, Ordering::SeqCst) >= budget.load(Ordering::SeqCst) {
                        claimed.fetch_sub(1, Ordering::SeqCst);
                        thread::yield_now();
                        continue;
                    }
                    run(engine.append(&key, &template("hammer")));
                }
            })
        })
        .collect();

    let (mut recovered, mut joints, mut rng) = (0, 0, 0x9e37_79b9_7f4a_7c15_u64);
    for round in 0..rounds {
        let allowed = (round + 1) * PER_ROUND;
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let top = run(f.engine.ensure(&key));
        let behind = rng % 50;
        let since = Position {
            epoch: top.epoch.clone(),
            seq: top.seq.saturating_sub(behind),
        };

        let sub = Sub::new(&key, 1 << 20);
        f.registry.register(&sub);
        // Released only now, so this round's appends race the recover and the opening.
        budget.store(allowed, Ordering::SeqCst);
        // Some rounds let appends land right before the recover or right before the opening,
        // so frames are buffered at the joint every time, not only when the scheduler obliges.
        let wait_past = |seq: u64| {
            let until = allowed.min(seq + 1);
            while run(f.engine.position(&key)).is_some_and(|p| p.seq < until) {
                thread::yield_now();
            }
        };
        let mode = (rng >> 8) % 3;
        if mode == 1 {
            wait_past(top.seq);
        }
        let recovery = run(f.engine.recover(&key, &since));
        if mode == 2 {
            wait_past(recovery.position.seq);
        }
        let first = if recovery.recovered {
            recovered += 1;
            since.seq + 1
        } else {
            // A starved resumer may fall past the history; then nothing is replayed.
            assert!(recovery.missed.is_empty());
            recovery.position.seq + 1
        };
        sub.queue
            .lock()
            .extend(recovery.missed.iter().map(|m| frame_seq(&m.frame)));
        let buffered = sub.gate.open(&recovery.position, |l| sub.push(l));
        joints += usize::from(buffered.expect("the buffer is big enough") > 0);
        wait_past(recovery.position.seq + rng % 20);
        f.registry.unregister(&sub);

        let got = sub.queue.lock().clone();
        let expected: Vec<u64> = (first..).take(got.len()).collect();
        assert_eq!(got, expected, "round {round} from {since}");
        assert!(got.len() >= recovery.missed.len());
    }
    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        thread.join().expect("appender");
    }
    let total = run(f.engine.position(&key)).map_or(0, |p| p.seq);
    assert_eq!(*watcher.queue.lock(), (1..=total).collect::<Vec<_>>());
    assert!(
        recovered * 2 > rounds,
        "only {recovered} of {rounds} rounds recovered"
    );
    eprintln!(
        "{total} appends, {recovered}/{rounds} rounds recovered, {joints} with live frames \
         buffered at the joint, {} duplicates dropped by gates",
        f.registry.duplicates.load(Ordering::Relaxed)
    );
}

#[test]
fn hand_over_is_exactly_once_while_one_thread_appends() {
    hammer_hand_over(1, 2000);
}

#[test]
fn hand_over_is_exactly_once_and_in_order_while_two_threads_append() {
    hammer_hand_over(2, 2000);
}

/// A memory engine kept concrete, so a test can see which keys share a bucket.
fn concrete(max_streams: usize) -> MemoryEngine {
    let config = MemoryConfig {
        history_size: 10,
        history_max_streams: max_streams.try_into().expect("non-zero"),
        ..MemoryConfig::default()
    };
    let registry = Arc::new(Registry::default());
    MemoryEngine::new(config, Arc::new(ManualTime::new(T0)), registry)
}

/// Three client keys in one bucket of unborn epochs, and two in two other buckets.
fn bucketed(engine: &MemoryEngine) -> ([StreamKey; 3], [StreamKey; 2]) {
    let index = engine.index.lock();
    let keys: Vec<StreamKey> = (0..4000)
        .map(|i| StreamKey::client(&format!("k{i}")))
        .collect();
    let mut by_bucket: HashMap<usize, Vec<StreamKey>> = HashMap::new();
    for key in &keys {
        by_bucket
            .entry(index.bucket(key))
            .or_default()
            .push(key.clone());
    }
    // 4,000 keys over 1,024 buckets: some bucket holds three (all below three: odds < 1e-100).
    let (&bucket, same) = by_bucket
        .iter()
        .find(|(_, keys)| keys.len() >= 3)
        .expect("a bucket with three keys");
    let others: Vec<StreamKey> = keys
        .iter()
        .filter(|k| index.bucket(k) != bucket)
        .take(2)
        .cloned()
        .collect();
    (
        [same[0].clone(), same[1].clone(), same[2].clone()],
        [others[0].clone(), others[1].clone()],
    )
}

#[test]
fn keys_sharing_a_bucket_never_share_an_epoch() {
    let engine = concrete(10);
    let ([a, b, _], _) = bucketed(&engine);
    let (ea, eb) = (run(engine.ensure(&a)), run(engine.ensure(&b)));
    assert_ne!(
        ea.epoch, eb.epoch,
        "a position of one key must not resume another"
    );
    assert!(
        !run(engine.recover(
            &b,
            &Position {
                epoch: ea.epoch,
                seq: 0
            }
        ))
        .recovered
    );
}

#[test]
fn evicting_a_stream_older_than_its_buckets_seed_keeps_the_epochs_handed_out() {
    let engine = concrete(2);
    let ([a, b, c], [y, z]) = bucketed(&engine);
    append_n(&engine, &a, 1);
    append_n(&engine, &b, 1);
    run(engine.recover(&a, &Position::start())); // b is now the least recently used
    append_n(&engine, &z, 1); // evicts b, created under the bucket's seed: re-rolled
    let welcome = run(engine.ensure(&c));
    append_n(&engine, &y, 1); // evicts a, created under the seed before: nothing to re-roll
    append_n(&engine, &c, 1);
    let back = run(engine.recover(&c, &welcome));
    assert!(back.recovered, "c lost nothing since its welcome");
    assert_eq!(seqs(&back), vec![1]);
}
