//! Stream positions as clients hold them: `<epoch>:<seq>`, sent back in `since` to resume.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Length of the epochs this crate generates; other engines may use up to [`MAX_EPOCH_LEN`].
pub const EPOCH_LEN: usize = 12;
/// Longest epoch `parse` accepts, so a hostile `since` cannot make us keep a big string.
pub const MAX_EPOCH_LEN: usize = 16;
/// Longest `<epoch>:<seq>` text accepted: the longest epoch, the colon and `u64::MAX` in decimal.
pub const MAX_POSITION_LEN: usize = MAX_EPOCH_LEN + 1 + 20;

/// Crockford's base32 in lower case: no `i`, `l`, `o`, `u`, so an epoch read aloud or copied
/// from a log is not misread.
const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// Bits that differ at every call and across restarts, for epochs and the seeds they are
/// derived from.
///
/// Epochs must be unique per stream incarnation, not secret: std's `RandomState` is keyed from
/// the OS's randomness once per thread and re-keyed for each instance, which with a
/// process-wide counter gives distinct values across calls and across restarts without a
/// dependency or a fallible call.
pub fn fresh_bits() -> u64 {
    static CREATED: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(CREATED.fetch_add(1, Ordering::Relaxed));
    if let Ok(since_unix) = SystemTime::now().duration_since(UNIX_EPOCH) {
        hasher.write_u128(since_unix.as_nanos());
    }
    hasher.finish()
}

/// Identity of one incarnation of a stream: it changes whenever the stream's history was lost
/// (eviction, expiry of the whole stream, restart), so a client's old `seq` cannot be
/// mistaken for a position in the new history.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Epoch(Arc<str>);

impl Epoch {
    /// The epoch of the `0:0` start position; never generated for a real stream.
    pub fn start() -> Self {
        Epoch(Arc::from("0"))
    }

    /// A fresh epoch for a stream being created.
    pub fn generate() -> Self {
        Epoch::from_bits(fresh_bits())
    }

    /// The epoch spelled by the low 60 bits of `bits`, [`EPOCH_LEN`] characters.
    pub fn from_bits(mut bits: u64) -> Self {
        let mut text = String::with_capacity(EPOCH_LEN);
        for _ in 0..EPOCH_LEN {
            text.push(char::from(ALPHABET[(bits & 31) as usize]));
            bits >>= 5;
        }
        Epoch(Arc::from(text))
    }

    /// Validates an epoch received from outside: 1 to [`MAX_EPOCH_LEN`] ASCII letters or digits.
    pub fn parse(text: &str) -> Result<Self, PositionError> {
        if text.is_empty() || text.len() > MAX_EPOCH_LEN {
            return Err(PositionError::BadEpoch);
        }
        if !text.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(PositionError::BadEpoch);
        }
        Ok(Epoch(Arc::from(text)))
    }

    /// The epoch as sent on the wire.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Epoch({})", self.0)
    }
}

/// A place in a stream: the last message a client has, or a stream's current top.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Position {
    /// Which incarnation of the stream `seq` counts in.
    pub epoch: Epoch,
    /// The seq of the last message (0: none yet).
    pub seq: u64,
}

impl Position {
    /// `0:0`: a client with no state asking for everything still stored, whatever the epoch.
    pub fn start() -> Self {
        Position {
            epoch: Epoch::start(),
            seq: 0,
        }
    }

    /// Whether this is the `0:0` start position.
    pub fn is_start(&self) -> bool {
        self.seq == 0 && self.epoch.as_str() == "0"
    }

    /// Parses `<epoch>:<seq>` as a client sends it in `since`.
    pub fn parse(text: &str) -> Result<Self, PositionError> {
        // The length check comes first so nothing below ever walks a huge hostile string.
        if text.len() > MAX_POSITION_LEN {
            return Err(PositionError::TooLong { len: text.len() });
        }
        if text.is_empty() {
            return Err(PositionError::Empty);
        }
        let (epoch, seq) = text
            .split_once(':')
            .ok_or(PositionError::MissingSeparator)?;
        let epoch = Epoch::parse(epoch)?;
        // `u64::from_str` takes a leading `+`; the wire format is plain digits only.
        if seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
            return Err(PositionError::SeqNotANumber);
        }
        let seq = seq.parse::<u64>().map_err(|_| PositionError::SeqOverflow)?;
        Ok(Position { epoch, seq })
    }
}

impl FromStr for Position {
    type Err = PositionError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Position::parse(text)
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.epoch, self.seq)
    }
}

/// A `since` as a client sent it. One that is not a position never refuses the connection or
/// the `subscribe` (§13): it resumes as `0:0`, never `recovered`, with `reason: "bad_position"`,
/// so a client holding a position from another server or an old format gets a session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Since {
    /// A position to resume after.
    At(Position),
    /// Text that is not `<epoch>:<seq>` (or not UTF-8); what was wrong only goes to the log.
    Bad,
}

impl Since {
    /// Reads a `since` parameter; never fails.
    pub fn parse(text: &str) -> Self {
        match Position::parse(text) {
            Ok(position) => Since::At(position),
            Err(e) => {
                log::debug!("since is not a position ({e}); resuming as 0:0, not recovered");
                Since::Bad
            }
        }
    }
}

/// Why a text is not a position: the history API answers it with 400 `invalid_body`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PositionError {
    /// The text was empty.
    Empty,
    /// Longer than [`MAX_POSITION_LEN`] bytes.
    TooLong {
        /// The length received.
        len: usize,
    },
    /// No `:` between epoch and seq.
    MissingSeparator,
    /// The epoch is empty, too long or has characters other than ASCII letters and digits.
    BadEpoch,
    /// The seq is empty or not plain decimal digits (signs, spaces and a second `:` included).
    SeqNotANumber,
    /// The seq does not fit in a u64.
    SeqOverflow,
}

impl fmt::Display for PositionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PositionError::Empty => f.write_str("position is empty, expected <epoch>:<seq>"),
            PositionError::TooLong { len } => write!(
                f,
                "position is {len} bytes long, at most {MAX_POSITION_LEN} are allowed"
            ),
            PositionError::MissingSeparator => {
                f.write_str("position has no ':', expected <epoch>:<seq>")
            }
            PositionError::BadEpoch => write!(
                f,
                "epoch must be 1 to {MAX_EPOCH_LEN} ASCII letters or digits"
            ),
            PositionError::SeqNotANumber => f.write_str("seq must be a decimal number"),
            PositionError::SeqOverflow => f.write_str("seq is larger than 18446744073709551615"),
        }
    }
}

impl std::error::Error for PositionError {}

#[cfg(test)]
#[path = "position_tests.rs"]
mod tests;
