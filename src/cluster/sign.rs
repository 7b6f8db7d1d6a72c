//! Node-to-node messages signed with `cluster_secret` (§13): anything that can PUBLISH to the
//! Redis could otherwise speak as a node (broadcast a `shutdown`, ask for a session listing).
//!
//! The last header field of every message (see `wire.rs`) is `-` without a secret, else
//! `<unix ms>.<head length or ->.<hex HMAC-SHA256>`. The HMAC covers the cluster's
//! `redis_prefix`, the time, kind, origin, request number, target and body, so a signed
//! message cannot be moved to another cluster, kind or target, nor shown to a node more than
//! [`WINDOW`] away from when it was made; a reply's target is the node it answers, so it cannot
//! be shown to another node either. What is not covered: a copy of a message read off Redis
//! can be re-sent within the window (it repeats a delivery that was already made), and the
//! epoch and seq of a history message are set by the append script inside Redis, which never
//! sees the secret; the frame's bytes around its seq are signed, and the seq in the frame must
//! equal the one in the header. Node clocks must agree within the window (NTP).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::wire::{Head, Kind, Msg, encode};
use crate::config::{Config, MIN_CLUSTER_SECRET_LEN, Secret};

/// How far a message's time may be from the receiver's clock.
pub const WINDOW: Duration = Duration::from_secs(30);
/// Tells this scheme's MACs apart from any other use of the same secret.
const DOMAIN: &[u8] = b"tether-cluster-v1";

/// Signs what this node sends and checks what it receives.
pub struct Signer {
    /// The keyed MAC, cloned per message (keying once); `None` without `cluster_secret`.
    key: Option<Hmac<Sha256>>,
    prefix: String,
    /// Messages dropped for a missing or bad signature.
    pub rejected: AtomicU64,
    /// Unix second of the last rejection logged, so a flood logs once a second.
    logged: AtomicU64,
}

impl Signer {
    /// A signer for the cluster under `prefix`; `secret` `None` signs and checks nothing.
    pub fn new(prefix: &str, secret: Option<&[u8]>) -> Signer {
        Signer {
            key: secret.and_then(|s| Hmac::<Sha256>::new_from_slice(s).ok()),
            prefix: prefix.to_string(),
            rejected: AtomicU64::new(0),
            logged: AtomicU64::new(0),
        }
    }

    /// The secret of `cluster_secret` or `cluster_secret_file`, if either is set.
    pub fn secret(config: &Config) -> Result<Option<Vec<u8>>, String> {
        let secret = match (&config.cluster_secret, &config.cluster_secret_file) {
            (Some(s), _) => s.clone(),
            (None, Some(path)) => Secret::from_file("cluster_secret_file", path)?,
            (None, None) => return Ok(None),
        };
        if secret.0.len() < MIN_CLUSTER_SECRET_LEN {
            return Err(format!(
                "cluster_secret_file: at least {MIN_CLUSTER_SECRET_LEN} bytes (it keys an HMAC)"
            ));
        }
        Ok(Some(secret.0.into_bytes()))
    }

    /// Encodes and signs a message built here (never a history message: see [`Self::append`]).
    pub fn seal(&self, head: &Head, body: &[u8]) -> Vec<u8> {
        let auth = self
            .mac_for(head, None, (body, None))
            .map_or_else(|| "-".to_string(), |(t, mac)| format!("{t}.-.{mac}"));
        encode(head, body, &auth)
    }

    /// The signature field of a history message, whose epoch and seq the append script fills
    /// in: it covers the frame's bytes before (`head`) and after (`tail`) the seq.
    pub fn append(
        &self,
        kind: Kind,
        origin: &str,
        req: u64,
        target: &str,
        frame: (&[u8], &[u8]),
    ) -> String {
        let hl = frame.0.len().to_string();
        let head = Head {
            kind,
            origin,
            req,
            epoch: None,
            seq: 0,
            target,
        };
        self.mac_for(&head, Some(&hl), (frame.0, Some(frame.1)))
            .map_or_else(|| "-".to_string(), |(t, mac)| format!("{t}.{hl}.{mac}"))
    }

    /// Whether `msg` may be obeyed; counts and (once a second) logs it when not.
    pub fn check(&self, msg: &Msg) -> bool {
        match self.verify(msg, now_ms()) {
            Ok(()) => true,
            Err(why) => {
                self.reject(why);
                false
            }
        }
    }

    /// Counts a dropped message and logs it, at most once a second.
    pub fn reject(&self, why: &str) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        let sec = now_ms() / 1000;
        if self.logged.swap(sec, Ordering::Relaxed) != sec {
            log::warn!(
                "cluster message rejected ({why}); is something else publishing on this Redis? \
                 (tether_cluster_rejected_total counts them)"
            );
        }
    }

    /// The check itself, at time `now` (unix ms).
    pub fn verify(&self, msg: &Msg, now: u64) -> Result<(), &'static str> {
        let Some(key) = &self.key else {
            return Ok(());
        };
        let mut parts = msg.auth.splitn(3, '.');
        let (Some(t), Some(hl), Some(hex)) = (parts.next(), parts.next(), parts.next()) else {
            return Err("no signature");
        };
        let at: u64 = t.parse().map_err(|_| "bad signature time")?;
        if at.abs_diff(now) > WINDOW.as_millis() as u64 {
            return Err("signature too old or from the future");
        }
        let tag = unhex(hex).ok_or("bad signature")?;
        let body = &msg.body[..];
        let (split, frame) = if hl == "-" {
            (None, (body, None))
        } else {
            // A history message: the seq the script put between head and tail must be the
            // header's, so a copy cannot carry a frame with another number.
            let at: usize = hl.parse().map_err(|_| "bad head length")?;
            let digits = msg.seq.to_string();
            let end = at.checked_add(digits.len()).filter(|&e| e <= body.len());
            let end = end.ok_or("head length past the end")?;
            if msg.epoch.is_none() || &body[at..end] != digits.as_bytes() {
                return Err("seq does not match the frame");
            }
            (Some(hl), (&body[..at], Some(&body[end..])))
        };
        let mut mac = key.clone();
        material(
            &mut mac,
            &self.prefix,
            t,
            msg.kind,
            &msg.origin,
            msg.req,
            &msg.target,
        );
        rest(&mut mac, split, (msg.epoch.as_deref(), msg.seq), frame);
        mac.verify_slice(&tag).map_err(|_| "bad signature")
    }

    /// The time and hex MAC of a message, `None` without a secret.
    fn mac_for(
        &self,
        head: &Head,
        split: Option<&str>,
        frame: (&[u8], Option<&[u8]>),
    ) -> Option<(u64, String)> {
        let mut mac = self.key.clone()?;
        let t = now_ms();
        let h = head;
        material(
            &mut mac,
            &self.prefix,
            &t.to_string(),
            h.kind,
            h.origin,
            h.req,
            h.target,
        );
        rest(&mut mac, split, (h.epoch, h.seq), frame);
        Some((t, hex(&mac.finalize().into_bytes())))
    }
}

/// Feeds one length-prefixed field, so no two field lists give the same bytes.
fn field(mac: &mut Hmac<Sha256>, bytes: &[u8]) {
    mac.update(&(bytes.len() as u64).to_be_bytes());
    mac.update(bytes);
}

fn material(
    mac: &mut Hmac<Sha256>,
    prefix: &str,
    t: &str,
    kind: Kind,
    origin: &str,
    req: u64,
    target: &str,
) {
    field(mac, DOMAIN);
    field(mac, prefix.as_bytes());
    field(mac, t.as_bytes());
    field(mac, &[kind.letter() as u8]);
    field(mac, origin.as_bytes());
    field(mac, req.to_string().as_bytes());
    field(mac, target.as_bytes());
}

/// The split, then the epoch and seq when the sender knew them (a message built in Rust: a
/// reply's count is its seq), then the frame's parts.
fn rest(
    mac: &mut Hmac<Sha256>,
    split: Option<&str>,
    (epoch, seq): (Option<&str>, u64),
    frame: (&[u8], Option<&[u8]>),
) {
    match split {
        None => {
            field(mac, b"-");
            field(mac, epoch.unwrap_or("-").as_bytes());
            field(mac, seq.to_string().as_bytes());
        }
        Some(hl) => field(mac, hl.as_bytes()),
    }
    field(mac, frame.0);
    if let Some(tail) = frame.1 {
        field(mac, tail);
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 {
        return None;
    }
    let nibble = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    s.as_bytes()
        .chunks_exact(2)
        .map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::wire::decode;
    use bytes::Bytes;

    const SECRET: &[u8] = b"0123456789abcdef-secret";

    fn head<'a>(kind: Kind, target: &'a str) -> Head<'a> {
        Head {
            kind,
            origin: "n1",
            req: 7,
            epoch: None,
            seq: 3,
            target,
        }
    }

    fn msg(raw: Vec<u8>) -> Msg {
        decode(Bytes::from(raw)).unwrap()
    }

    /// What the append script publishes: the header up to `req`, epoch, seq, the target's
    /// length and the signature, then target, head, seq, tail.
    fn appended(s: &Signer, epoch: &str, seq: u64, frame_seq: u64) -> Msg {
        let auth = s.append(Kind::Client, "n1", 9, "alice", (b"{\"seq\":", b",\"x\":1}"));
        let raw = format!(
            "{} {epoch} {seq} 5 {auth}\nalice{{\"seq\":{frame_seq},\"x\":1}}",
            crate::cluster::wire::prefix(Kind::Client, "n1", 9)
        );
        msg(raw.into_bytes())
    }

    #[test]
    fn a_sealed_message_verifies_and_a_changed_one_does_not() {
        let s = Signer::new("tether", Some(SECRET));
        let m = msg(s.seal(&head(Kind::All, ""), b"{\"type\":\"shutdown\"}"));
        assert_eq!(s.verify(&m, now_ms()), Ok(()));
        let mut other = m.clone();
        other.kind = Kind::Session;
        assert!(s.verify(&other, now_ms()).is_err(), "another kind");
        let mut other = m.clone();
        other.seq = 4;
        assert!(s.verify(&other, now_ms()).is_err(), "another count");
        let mut other = m.clone();
        other.body = Bytes::from_static(b"{\"type\":\"other\"}");
        assert!(s.verify(&other, now_ms()).is_err(), "another body");
        let mut other = m.clone();
        other.target = "n2".into();
        assert!(s.verify(&other, now_ms()).is_err(), "another target");
    }

    #[test]
    fn unsigned_stale_foreign_and_other_prefix_messages_are_refused() {
        let s = Signer::new("tether", Some(SECRET));
        let plain = Signer::new("tether", None);
        let unsigned = msg(plain.seal(&head(Kind::All, ""), b"x"));
        assert_eq!(unsigned.auth, "-");
        assert!(s.verify(&unsigned, now_ms()).is_err());
        assert_eq!(
            plain.verify(&unsigned, now_ms()),
            Ok(()),
            "no secret: as before"
        );
        let m = msg(s.seal(&head(Kind::All, ""), b"x"));
        let late = now_ms() + WINDOW.as_millis() as u64 + 1_000;
        assert!(s.verify(&m, late).is_err(), "replayed after the window");
        let other_cluster = Signer::new("other", Some(SECRET));
        assert!(other_cluster.verify(&m, now_ms()).is_err());
        let other_key = Signer::new("tether", Some(b"another-secret-of-16"));
        assert!(other_key.verify(&m, now_ms()).is_err());
        for auth in [
            "",
            "1.-",
            "x.-.00",
            "1.-.zz",
            &format!("{}.-.{}", now_ms(), "0".repeat(64)),
        ] {
            let mut bad = m.clone();
            bad.auth = auth.to_string();
            assert!(s.verify(&bad, now_ms()).is_err(), "{auth}");
        }
    }

    #[test]
    fn a_history_message_signed_before_the_script_numbered_it_verifies() {
        let s = Signer::new("tether", Some(SECRET));
        assert_eq!(s.verify(&appended(&s, "e1", 12, 12), now_ms()), Ok(()));
        assert!(
            s.verify(&appended(&s, "e1", 12, 13), now_ms()).is_err(),
            "the frame's seq must be the header's"
        );
        let mut m = appended(&s, "e1", 12, 12);
        m.epoch = None;
        assert!(s.verify(&m, now_ms()).is_err());
    }

    #[test]
    fn rejections_are_counted() {
        let s = Signer::new("tether", Some(SECRET));
        let m = msg(Signer::new("tether", None).seal(&head(Kind::All, ""), b"x"));
        assert!(!s.check(&m) && !s.check(&m));
        assert_eq!(s.rejected.load(Ordering::Relaxed), 2);
    }
}
