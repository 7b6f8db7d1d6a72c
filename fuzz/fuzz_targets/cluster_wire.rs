//! Cluster messages as they arrive from Redis pub/sub: anything can publish on a shared Redis,
//! so arbitrary bytes must be refused or decoded, and their signature checked, never panic;
//! and whatever a node signs and encodes, the receiving node decodes to the same fields, byte
//! for byte, and accepts under the same secret and prefix only.
//!
//! The first byte picks the mode: below 128 the rest is a raw message (decoded, then checked
//! with and without a secret), and also a node's page of a sessions listing; above, the rest
//! is read structurally as the fields of a message to sign, encode, decode and check again,
//! both as a node builds it and as the append script numbers a history message.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tether::fuzz_api::{
    WireHead, WireKind, WireSigner, listing_merge_pages, wire_decode, wire_prefix,
};

const SECRET: &[u8] = b"fuzzing-cluster-secret";

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

const KINDS: [WireKind; 13] = [
    WireKind::Client,
    WireKind::Channel,
    WireKind::All,
    WireKind::Session,
    WireKind::Kill,
    WireKind::List,
    WireKind::Page,
    WireKind::Reply,
    WireKind::Marker,
    WireKind::Control,
    WireKind::Block,
    WireKind::Channels,
    WireKind::Members,
];

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode < 128 {
        if let Ok(m) = wire_decode(Bytes::copy_from_slice(rest)) {
            assert!(!m.origin.is_empty());
            assert!(m.body.len() <= rest.len());
            // Unkeyed accepts anything well formed (as before secrets); keyed must not panic
            // whatever the signature field holds.
            assert!(WireSigner::new("tether", None).check(&m));
            let _ = WireSigner::new("tether", Some(SECRET)).check(&m);
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
    let signer = WireSigner::new("tether", Some(SECRET));
    let head = WireHead {
        kind,
        origin: &f.origin,
        req: f.req,
        epoch: f.epoch.as_deref(),
        seq: f.seq,
        target: &f.target,
    };
    let raw = signer.seal(&head, &f.body);
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
    assert!(signer.check(&m), "a sealed message must verify");
    assert!(!WireSigner::new("other", Some(SECRET)).check(&m));

    // A history message: signed around the seq, numbered afterwards as the script does.
    let Some(epoch) = f.epoch.as_deref() else {
        return;
    };
    let cut = f.body.len() / 2;
    let (fh, ft) = f.body.split_at(cut);
    let auth = signer.append(kind, &f.origin, f.req, &f.target, (fh, ft));
    let mut raw = format!(
        "{} {epoch} {} {} {auth}\n{}",
        wire_prefix(kind, &f.origin, f.req),
        f.seq,
        f.target.len(),
        f.target
    )
    .into_bytes();
    raw.extend_from_slice(fh);
    raw.extend_from_slice(f.seq.to_string().as_bytes());
    raw.extend_from_slice(ft);
    let m = match wire_decode(Bytes::from(raw)) {
        Ok(m) => m,
        Err(e) => panic!("a history message does not decode: {e:?} ({f:?})"),
    };
    assert!(signer.check(&m), "a numbered history message must verify");
});
