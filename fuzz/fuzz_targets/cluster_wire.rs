//! Cluster messages as they arrive from Redis pub/sub: anything can publish on a shared Redis,
//! so arbitrary bytes must be refused or decoded, never panic; and whatever a node encodes,
//! the receiving node decodes to the same fields, byte for byte.
//!
//! The first byte picks the mode: below 128 the rest is a raw message, and also a node's page
//! of a sessions listing; above, the rest is read structurally as the fields of a message to
//! encode and decode again.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tether::fuzz_api::{WireKind, listing_merge_pages, wire_decode, wire_encode};

#[derive(Arbitrary, Debug)]
struct Fields {
    kind: u8,
    origin: String,
    req: u64,
    epoch: Option<String>,
    seq: u64,
    target: String,
    body: Vec<u8>,
}

const KINDS: [WireKind; 9] = [
    WireKind::Client,
    WireKind::Channel,
    WireKind::All,
    WireKind::Session,
    WireKind::Kill,
    WireKind::List,
    WireKind::Page,
    WireKind::Reply,
    WireKind::Marker,
];

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode < 128 {
        if let Ok(m) = wire_decode(Bytes::copy_from_slice(rest)) {
            assert!(!m.origin.is_empty());
            assert!(m.body.len() <= rest.len());
        }
        // Another node's listing page: whatever it holds, the merge keeps only objects.
        let limit = usize::from(mode % 8) + 1;
        let (merged, _) = listing_merge_pages([rest], limit);
        assert!(merged.is_empty() || (merged.starts_with('{') && merged.ends_with('}')));
        assert!(merged.len() <= rest.len());
        return;
    }
    let Ok(f) = Fields::arbitrary_take_rest(Unstructured::new(rest)) else {
        return;
    };
    // What nodes send: ids and epochs without spaces or newlines (node_id is validated, epochs
    // are generated), any target and body.
    let clean = |s: &str| !s.is_empty() && !s.contains([' ', '\n']) && s.len() < 64;
    if !clean(&f.origin) || f.epoch.as_deref().is_some_and(|e| !clean(e) || e == "-") {
        return;
    }
    let kind = KINDS[usize::from(f.kind) % KINDS.len()];
    let raw = wire_encode(kind, &f.origin, f.req, f.epoch.as_deref(), f.seq, &f.target, &f.body);
    let m = match wire_decode(Bytes::from(raw)) {
        Ok(m) => m,
        Err(e) => panic!("a message a node encoded does not decode: {e:?} ({f:?})"),
    };
    assert_eq!(m.kind, kind);
    assert_eq!(m.origin, f.origin);
    assert_eq!((m.req, m.seq), (f.req, f.seq));
    assert_eq!(m.epoch, f.epoch);
    assert_eq!(m.target, f.target);
    assert_eq!(&m.body[..], &f.body[..]);
});
