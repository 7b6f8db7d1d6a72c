//! What nodes say to each other over Redis pub/sub: one header line, then the target name and
//! the frame as raw bytes, so a frame crosses nodes without being re-encoded.
//!
//! ```text
//! <kind> <origin> <req> <epoch|-> <seq> <target length> <signature|->\n<target><body>
//! ```
//!
//! The Lua append script writes the same layout (the header up to `<req>` and the signature
//! come in as arguments). A message that does not parse is dropped and counted, never trusted:
//! anything that can reach the Redis can publish, which is why messages are signed (`sign.rs`).
//! Topic names are in `keys.rs`.

use bytes::Bytes;

/// What a message asks of the node that receives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Deliver `body` to the sessions of client id `target`.
    Client,
    /// Deliver `body` to the subscribers of channel `target`.
    Channel,
    /// Deliver `body` to every session.
    All,
    /// Deliver `body` to session `target`, if it is here.
    Session,
    /// Close session `target` with 4002, if it is here.
    Kill,
    /// Answer with the JSON list of this node's sessions of client id `target`.
    List,
    /// Answer with this node's part of a page of all sessions: ids after `target` (empty: from
    /// the start), at most `body` (decimal) of them, see `listing::render_page`.
    Page,
    /// Answer with this node's channels: names starting with `target`, `body` is
    /// `<limit> <after>` (see `channels.rs`).
    Channels,
    /// Answer with this node's part of channel `target`'s presence, `body` as for `Channels`.
    Members,
    /// An answer to request `req`: `seq` is the count, `body` the listing if any.
    Reply,
    /// A node's own marker: every message published before it has been handled.
    Marker,
    /// Run the order in `body` (JSON, see `control::Order`) on this node's sessions of client
    /// id `target`; the answer counts the sessions it reached.
    Control,
    /// Client id `target` is blocked until `body` (Unix ms, decimal; `0`: the block is lifted).
    Block,
}

impl Kind {
    /// The one letter on the wire.
    pub fn letter(self) -> char {
        match self {
            Kind::Client => 'c',
            Kind::Channel => 'h',
            Kind::All => 'a',
            Kind::Session => 's',
            Kind::Kill => 'k',
            Kind::List => 'l',
            Kind::Page => 'p',
            Kind::Channels => 'x',
            Kind::Members => 'w',
            Kind::Reply => 'r',
            Kind::Marker => 'm',
            Kind::Control => 'o',
            Kind::Block => 'b',
        }
    }

    fn from_letter(b: &[u8]) -> Option<Kind> {
        Some(match b {
            b"c" => Kind::Client,
            b"h" => Kind::Channel,
            b"a" => Kind::All,
            b"s" => Kind::Session,
            b"k" => Kind::Kill,
            b"l" => Kind::List,
            b"p" => Kind::Page,
            b"x" => Kind::Channels,
            b"w" => Kind::Members,
            b"r" => Kind::Reply,
            b"m" => Kind::Marker,
            b"o" => Kind::Control,
            b"b" => Kind::Block,
            _ => return None,
        })
    }
}

/// Longest header line accepted: node ids and epochs are short, numbers have 20 digits, a
/// signature about 100 characters.
const MAX_HEADER: usize = 384;

/// One decoded message; `target` and `body` share the received buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Msg {
    /// What to do.
    pub kind: Kind,
    /// The node that sent the request (where the reply goes).
    pub origin: String,
    /// The request's number at its origin.
    pub req: u64,
    /// The stream's epoch, for sequenced messages.
    pub epoch: Option<String>,
    /// The message's seq (0 when not sequenced), or a reply's count.
    pub seq: u64,
    /// The client id, channel or session id the message is for.
    pub target: String,
    /// The frame to deliver, or a reply's listing.
    pub body: Bytes,
    /// The signature field (`-` when unsigned), checked by `sign.rs`.
    pub auth: String,
}

/// The header fields of a message a node builds.
#[derive(Clone, Copy, Debug)]
pub struct Head<'a> {
    /// What to do.
    pub kind: Kind,
    /// The sending node (or, in a reply, the answering node).
    pub origin: &'a str,
    /// The request's number at the node that asked.
    pub req: u64,
    /// The stream's epoch, for sequenced messages.
    pub epoch: Option<&'a str>,
    /// The seq, or a reply's count.
    pub seq: u64,
    /// The client id, channel, session id, or (in a reply) the node answered.
    pub target: &'a str,
}

/// Why a message was dropped.
#[derive(Debug, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

/// The header up to `<req>`: what the append script is given to prefix.
pub fn prefix(kind: Kind, origin: &str, req: u64) -> String {
    format!("{} {origin} {req}", kind.letter())
}

/// Encodes a message with the signature field `auth` (see `Signer::seal`).
pub fn encode(h: &Head, body: &[u8], auth: &str) -> Vec<u8> {
    let head = format!(
        "{} {} {} {} {auth}\n",
        prefix(h.kind, h.origin, h.req),
        h.epoch.unwrap_or("-"),
        h.seq,
        h.target.len()
    );
    let mut out = Vec::with_capacity(head.len() + h.target.len() + body.len());
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(h.target.as_bytes());
    out.extend_from_slice(body);
    out
}

/// Decodes a message; `Err` for anything that is not exactly the layout above.
pub fn decode(raw: Bytes) -> Result<Msg, Malformed> {
    let window = &raw[..raw.len().min(MAX_HEADER)];
    let end = window
        .iter()
        .position(|&b| b == b'\n')
        .ok_or(Malformed("no header line"))?;
    let header = std::str::from_utf8(&raw[..end]).map_err(|_| Malformed("header not UTF-8"))?;
    let mut fields = header.split(' ');
    let mut next = || fields.next().ok_or(Malformed("header too short"));
    let kind = Kind::from_letter(next()?.as_bytes()).ok_or(Malformed("unknown kind"))?;
    let origin = next()?.to_string();
    let req = next()?
        .parse()
        .map_err(|_| Malformed("bad request number"))?;
    let epoch = match next()? {
        "-" => None,
        e => Some(e.to_string()),
    };
    let seq = next()?.parse().map_err(|_| Malformed("bad seq"))?;
    let target_len: usize = next()?
        .parse()
        .map_err(|_| Malformed("bad target length"))?;
    let auth = next()?.to_string();
    if fields.next().is_some() {
        return Err(Malformed("header too long"));
    }
    if origin.is_empty() {
        return Err(Malformed("no origin"));
    }
    let start = end + 1;
    let body_at = start
        .checked_add(target_len)
        .filter(|&at| at <= raw.len())
        .ok_or(Malformed("target past the end"))?;
    let target = std::str::from_utf8(&raw[start..body_at])
        .map_err(|_| Malformed("target not UTF-8"))?
        .to_string();
    Ok(Msg {
        kind,
        origin,
        req,
        epoch,
        seq,
        target,
        body: raw.slice(body_at..),
        auth,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_every_byte() {
        let body = b"{\"type\":\"t\",\"data\":\"a b\\nc\"}";
        let head = Head {
            kind: Kind::Client,
            origin: "n-1",
            req: 7,
            epoch: Some("ab12"),
            seq: 42,
            target: "ali ce\n",
        };
        let m = decode(Bytes::from(encode(&head, body, "-"))).unwrap();
        assert_eq!(m.kind, Kind::Client);
        assert_eq!(m.origin, "n-1");
        assert_eq!((m.req, m.seq), (7, 42));
        assert_eq!(m.epoch.as_deref(), Some("ab12"));
        assert_eq!(m.target, "ali ce\n");
        assert_eq!(&m.body[..], &body[..]);
    }

    #[test]
    fn unsequenced_and_empty_parts() {
        let head = Head {
            kind: Kind::All,
            origin: "n",
            req: 0,
            epoch: None,
            seq: 0,
            target: "",
        };
        let m = decode(Bytes::from(encode(&head, b"", "1.-.ab"))).unwrap();
        assert_eq!(m.auth, "1.-.ab");
        assert_eq!((m.kind, m.epoch, m.target.as_str()), (Kind::All, None, ""));
        assert!(m.body.is_empty());
    }

    #[test]
    fn garbage_is_refused_not_trusted() {
        for bad in [
            &b""[..],
            b"no newline at all",
            b"z n 1 - 0 0 -\n",
            b"c n 1 - 0 0\n",
            b"c n 1 - 0 0 - extra\n",
            b"c n one - 0 0 -\n",
            b"c n 1 - 0 99 -\nshort",
            b"c n 1 - 0 18446744073709551615 -\n",
            b"c  1 - 0 0 -\n",
            b"c n 1 - 0 2 -\n\xff\xfe",
        ] {
            assert!(decode(Bytes::from_static(bad)).is_err(), "{bad:?}");
        }
        let long = vec![b'a'; 1000];
        assert!(decode(Bytes::from(long)).is_err());
    }
}
