//! `since` parsing against well-formed and hostile input, and frame templates.

use super::{Epoch, MAX_POSITION_LEN, Position, PositionError};
use crate::stream::FrameTemplate;

#[test]
fn parses_and_displays_round_trip() {
    let position = Position::parse("abc123xyz0:42").expect("valid");
    assert_eq!(position.epoch.as_str(), "abc123xyz0");
    assert_eq!(position.seq, 42);
    assert_eq!(position.to_string(), "abc123xyz0:42");
    let max = format!("e:{}", u64::MAX);
    assert_eq!(max.parse::<Position>().map(|p| p.seq), Ok(u64::MAX));
}

#[test]
fn zero_zero_is_the_start() {
    let start = Position::parse("0:0").expect("valid");
    assert!(start.is_start());
    assert_eq!(start, Position::start());
    assert!(!Position::parse("0:5").expect("valid").is_start());
    assert!(!Position::parse("e:0").expect("valid").is_start());
}

#[test]
fn hostile_input_gets_a_clear_error() {
    let huge = "9".repeat(10 << 20);
    let cases: &[(&str, PositionError)] = &[
        ("", PositionError::Empty),
        (":", PositionError::BadEpoch),
        (":::", PositionError::BadEpoch),
        (":5", PositionError::BadEpoch),
        ("abc", PositionError::MissingSeparator),
        ("e:", PositionError::SeqNotANumber),
        ("e:-1", PositionError::SeqNotANumber),
        ("e:+1", PositionError::SeqNotANumber),
        ("e: 1", PositionError::SeqNotANumber),
        ("e:1 ", PositionError::SeqNotANumber),
        ("e:1:2", PositionError::SeqNotANumber),
        ("e:0x10", PositionError::SeqNotANumber),
        ("e:18446744073709551616", PositionError::SeqOverflow),
        ("e:99999999999999999999", PositionError::SeqOverflow),
        ("ép:1", PositionError::BadEpoch),
        ("e-1:1", PositionError::BadEpoch),
        ("abcdefghijklmnopq:1", PositionError::BadEpoch),
    ];
    for (text, error) in cases {
        assert_eq!(Position::parse(text), Err(*error), "{text:?}");
        assert!(!error.to_string().is_empty());
    }
    let too_long = Position::parse(&huge);
    assert_eq!(too_long, Err(PositionError::TooLong { len: huge.len() }));
    let just_over = format!("e:{}", "1".repeat(MAX_POSITION_LEN - 1));
    assert!(matches!(
        Position::parse(&just_over),
        Err(PositionError::TooLong { .. })
    ));
}

#[test]
fn generated_epochs_are_valid_and_distinct() {
    let epochs: std::collections::HashSet<String> =
        (0..10_000).map(|_| Epoch::generate().to_string()).collect();
    assert_eq!(epochs.len(), 10_000);
    for epoch in epochs.iter().take(100) {
        assert_eq!(
            Epoch::parse(epoch).map(|e| e.to_string()).as_ref(),
            Ok(epoch)
        );
        assert_ne!(epoch, "0");
    }
}

#[test]
fn frame_templates_put_the_seq_first() {
    let template = FrameTemplate::json_object(br#"{"type":"a","data":1}"#).expect("object");
    assert_eq!(&template.build(7)[..], br#"{"seq":7,"type":"a","data":1}"#);
    assert_eq!(&template.build(0)[..], br#"{"seq":0,"type":"a","data":1}"#);
    let max = format!(r#"{{"seq":{},"type":"a","data":1}}"#, u64::MAX);
    assert_eq!(&template.build(u64::MAX)[..], max.as_bytes());
    let empty = FrameTemplate::json_object(b"{}").expect("object");
    assert_eq!(&empty.build(3)[..], br#"{"seq":3}"#);
    assert_eq!(FrameTemplate::json_object(b"[1]"), None);
    assert_eq!(FrameTemplate::json_object(b"{"), None);
    assert_eq!(FrameTemplate::json_object(b""), None);
}
