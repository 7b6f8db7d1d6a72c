//! Tokens (docs/protocol.md §7): verify JWTs, read claims, hold key sets, reload them on SIGHUP.
//! `keys.rs` decodes and checks the key files. It may use only `protocol` (the name rules): the
//! handshake, sessions and outboxes build on it.

use std::collections::HashSet;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use jsonwebtoken::errors::ErrorKind;
use serde::Deserialize;
use serde_json::Value;

mod keys;

use keys::{KeySet, load_keys};

/// Longest token accepted; longer ones are refused before any decoding.
pub const MAX_TOKEN_LEN: usize = 8192;
/// Longest `sub` accepted: the same limit as a client id.
pub const MAX_SUB_LEN: usize = crate::protocol::CLIENT_ID_MAX;
const ACCEPTED: &str = "HS256, RS256, ES256 or EdDSA";
/// Token settings, filled from the server config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthSettings {
    /// HS256 secret (file content, trailing newline trimmed).
    pub hmac_secret_file: Option<PathBuf>,
    /// PEM public key: RSA (RS256), EC P-256 (ES256) or Ed25519 (EdDSA).
    pub public_key_file: Option<PathBuf>,
    /// JWKS document; the token header's `kid` picks the key.
    pub jwks_file: Option<PathBuf>,
    /// When set, `aud` must contain it (string or array claim).
    pub audience: Option<String>,
    /// When set, `iss` must equal it.
    pub issuer: Option<String>,
    /// Clock skew allowed for `exp`, `nbf` and `iat`.
    pub leeway: Duration,
}

/// Why key files could not be loaded; the text names the config key and the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError(pub String);

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LoadError {}

/// Why a token was refused; [`TokenError::message`] is the 401 body's sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// No token was sent.
    Missing,
    /// The token is longer than [`MAX_TOKEN_LEN`].
    TooLarge,
    /// The token is not a well-formed compact JWS; the reason says which part.
    Malformed(&'static str),
    /// The header names an algorithm tether never accepts (`none`, HS384, PS256, ...).
    UnsupportedAlgorithm(String),
    /// The algorithm is accepted in general, but no configured key is of that type.
    WrongAlgorithm(Algorithm),
    /// The header's `kid` names no key in the JWKS.
    UnknownKey,
    /// The header has no `kid` and the JWKS holds several keys.
    MissingKeyId,
    /// The signature does not verify.
    BadSignature,
    /// `exp` has passed.
    Expired,
    /// `nbf` is still in the future.
    NotYetValid,
    /// `iat` is in the future.
    IssuedInFuture,
    /// `aud` is missing or does not contain the configured audience.
    WrongAudience,
    /// `iss` is missing or is not the configured issuer.
    WrongIssuer,
    /// No `sub` claim.
    MissingSub,
    /// A claim has the wrong type or value: (claim name, what is wrong).
    BadClaim(&'static str, &'static str),
}

impl TokenError {
    /// The human sentence for the 401 `unauthorized` body.
    pub fn message(&self) -> String {
        let fixed = match self {
            Self::Missing => "no token (send the `token` query parameter or a Bearer header)",
            Self::TooLarge => return format!("the token is longer than {MAX_TOKEN_LEN} bytes"),
            Self::Malformed(why) => return format!("the token is malformed: {why}"),
            Self::UnsupportedAlgorithm(alg) => {
                return format!("the token algorithm `{alg}` is not accepted (use {ACCEPTED})");
            }
            Self::WrongAlgorithm(alg) => {
                return format!("the token algorithm {alg:?} does not match the server's key");
            }
            Self::UnknownKey => "the token's key id (`kid`) names no known key",
            Self::MissingKeyId => "the token has no key id (`kid`) to pick one of several keys",
            Self::BadSignature => "the token is badly signed",
            Self::Expired => "the token has expired",
            Self::NotYetValid => "the token is not valid yet (`nbf` is in the future)",
            Self::IssuedInFuture => "the token was issued in the future (`iat`)",
            Self::WrongAudience => "the token is for another audience (`aud`)",
            Self::WrongIssuer => "the token is from another issuer (`iss`)",
            Self::MissingSub => "the token has no subject (`sub`)",
            Self::BadClaim(claim, why) => {
                return format!("the token claim `{claim}` is invalid: {why}");
            }
        };
        fixed.to_string()
    }
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

impl std::error::Error for TokenError {}

/// Channels a token lets its holder subscribe to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelGrants {
    exact: HashSet<String>,
    prefixes: Vec<String>,
}

impl ChannelGrants {
    /// Builds grants from claim entries: a name ending in `*` is a prefix, `*` alone is everything.
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(names: I) -> Self {
        let mut grants = Self::default();
        for name in names {
            let mut name = name.into();
            if name.ends_with('*') {
                name.pop();
                grants.prefixes.push(name);
            } else {
                grants.exact.insert(name);
            }
        }
        grants
    }

    /// Whether `channel` is granted, by exact name or by prefix.
    pub fn allows(&self, channel: &str) -> bool {
        let by_prefix = || self.prefixes.iter().any(|p| channel.starts_with(&**p));
        self.exact.contains(channel) || by_prefix()
    }

    fn from_claim(value: Value) -> Result<Self, TokenError> {
        let names: Vec<String> = serde_json::from_value(value)
            .map_err(|_| bad_claim("channels", "not a list of strings"))?;
        Ok(Self::new(names))
    }
}

/// The claims of a verified token that tether uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The client id.
    pub sub: String,
    /// Expiry (unix seconds), when the token has one.
    pub exp: Option<u64>,
    /// The `channels` claim, when present.
    pub channels: Option<ChannelGrants>,
    /// The `subs` claim: channels the session joins at connect, as the server (no grant
    /// needed; docs/protocol.md §14). Empty without one.
    pub subs: Vec<String>,
}

impl Claims {
    /// Whether this token may subscribe to `channel`; without a `channels` claim, none is granted.
    pub fn may_subscribe(&self, channel: &str) -> bool {
        self.channels.as_ref().is_some_and(|g| g.allows(channel))
    }
}

/// Verifies tokens against the configured keys.
pub struct Verifier {
    settings: AuthSettings,
    leeway: u64,
    keys: ArcSwap<KeySet>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// Loads every configured key file (at least one must be set); errors name config key and file.
    pub fn load(s: &AuthSettings) -> Result<Verifier, LoadError> {
        let keys = ArcSwap::from_pointee(load_keys(s)?);
        // Round a sub-second leeway up, so the operator gets at least the tolerance asked for.
        let leeway = s.leeway.as_secs() + u64::from(s.leeway.subsec_nanos() > 0);
        let settings = s.clone();
        Ok(Verifier {
            settings,
            leeway,
            keys,
        })
    }

    /// Re-reads the key files (SIGHUP); on error the old keys stay in force and it is returned.
    pub fn reload(&self) -> Result<(), LoadError> {
        let keys = load_keys(&self.settings)?;
        self.keys.store(Arc::new(keys));
        Ok(())
    }

    /// Verifies a token at `now` (unix seconds), returning its claims.
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, TokenError> {
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::TooLarge);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| header_error(token))?;
        let keys = self.keys.load();
        let key = keys.select(header.alg, header.kid.as_deref())?;
        let data = jsonwebtoken::decode::<RawClaims>(token, &key.key, &key.validation)
            .map_err(|e| decode_error(e.kind(), header.alg))?;
        data.claims.check(now, self.leeway)
    }
}

/// Claims as sent; typed checks happen in [`RawClaims::check`] so a wrong type names its claim.
#[derive(Deserialize)]
struct RawClaims {
    sub: Option<Value>,
    exp: Option<Value>,
    nbf: Option<Value>,
    iat: Option<Value>,
    channels: Option<Value>,
    subs: Option<Value>,
}

impl RawClaims {
    fn check(self, now: u64, leeway: u64) -> Result<Claims, TokenError> {
        let exp = numeric_date(self.exp, "exp")?;
        // RFC 7519 §4.1.4: the token is valid only *before* `exp`.
        if exp.is_some_and(|exp| now >= exp.saturating_add(leeway)) {
            return Err(TokenError::Expired);
        }
        if numeric_date(self.nbf, "nbf")?.is_some_and(|nbf| nbf > now.saturating_add(leeway)) {
            return Err(TokenError::NotYetValid);
        }
        if numeric_date(self.iat, "iat")?.is_some_and(|iat| iat > now.saturating_add(leeway)) {
            return Err(TokenError::IssuedInFuture);
        }
        let sub = match self.sub {
            None => return Err(TokenError::MissingSub),
            Some(Value::String(s)) => s,
            Some(_) => return Err(bad_claim("sub", "not a string")),
        };
        // The same rules as a client id given in the query string (§1).
        if let Err(reason) = crate::protocol::valid_client_id(&sub) {
            return Err(bad_claim("sub", reason));
        }
        let channels = self.channels.map(ChannelGrants::from_claim).transpose()?;
        let subs = match self.subs {
            None => Vec::new(),
            Some(v) => {
                let names: Vec<String> = serde_json::from_value(v)
                    .map_err(|_| bad_claim("subs", "not a list of strings"))?;
                if names
                    .iter()
                    .any(|n| crate::protocol::valid_channel(n).is_err())
                {
                    return Err(bad_claim("subs", "a name breaks the channel name rule"));
                }
                names
            }
        };
        Ok(Claims {
            sub,
            exp,
            channels,
            subs,
        })
    }
}

const fn bad_claim(claim: &'static str, reason: &'static str) -> TokenError {
    TokenError::BadClaim(claim, reason)
}

/// RFC 7519 NumericDate: seconds, possibly fractional; fractions are dropped.
fn numeric_date(value: Option<Value>, claim: &'static str) -> Result<Option<u64>, TokenError> {
    let bad = bad_claim(claim, "not a non-negative number of seconds");
    let n = match value {
        None => return Ok(None),
        Some(Value::Number(n)) => n,
        Some(_) => return Err(bad),
    };
    let in_range = |f: &f64| f.is_finite() && *f >= 0.0 && *f < u64::MAX as f64;
    let float = n.as_f64().filter(in_range);
    n.as_u64().or(float.map(|f| f as u64)).map(Some).ok_or(bad)
}

/// The crate refuses an unknown `alg` as a JSON error; look again only on this error path so that
/// `alg: none` gets its own answer instead of "malformed".
fn header_error(token: &str) -> TokenError {
    #[derive(Deserialize)]
    struct AlgOnly {
        alg: String,
    }
    let header = token.split('.').next().unwrap_or_default();
    let json = URL_SAFE_NO_PAD.decode(header).unwrap_or_default();
    match serde_json::from_slice::<AlgOnly>(&json) {
        Ok(AlgOnly { alg }) if alg.parse::<Algorithm>().is_err() => {
            // The name is echoed in the 401 body, so keep it short and printable.
            let printable = alg.len() <= 16 && alg.bytes().all(|b| b.is_ascii_graphic());
            TokenError::UnsupportedAlgorithm(if printable { alg } else { "?".into() })
        }
        _ => TokenError::Malformed("the header is not base64url JSON with a string `alg`"),
    }
}

fn decode_error(kind: &ErrorKind, alg: Algorithm) -> TokenError {
    match kind {
        ErrorKind::InvalidSignature => TokenError::BadSignature,
        ErrorKind::InvalidToken => TokenError::Malformed("not three parts, or a `crit` header"),
        ErrorKind::Base64(_) => TokenError::Malformed("a part is not base64url"),
        ErrorKind::Json(_) | ErrorKind::Utf8(_) => TokenError::Malformed("the payload is not JSON"),
        ErrorKind::InvalidAudience => TokenError::WrongAudience,
        ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
        ErrorKind::MissingRequiredClaim(c) if c == "aud" => TokenError::WrongAudience,
        ErrorKind::MissingRequiredClaim(c) if c == "iss" => TokenError::WrongIssuer,
        ErrorKind::InvalidClaimFormat(c) if c == "aud" => bad_claim("aud", "not string(s)"),
        ErrorKind::InvalidClaimFormat(c) if c == "iss" => bad_claim("iss", "not a string"),
        ErrorKind::InvalidAlgorithm => TokenError::WrongAlgorithm(alg),
        // Key problems are ruled out at load; anything else unexpected must still refuse the token.
        _ => TokenError::BadSignature,
    }
}

#[cfg(test)]
mod tests;
