//! Key files: the HS256 secret, a PEM public key, a JWKS; decoded and checked once at load, so
//! verifying a token does no file I/O and a bad key cannot surface (or panic) per token.

use std::fmt;
use std::path::Path;

use jsonwebtoken::crypto::CryptoProvider;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind, Validation};

use super::{AuthSettings, LoadError, TokenError};

/// RFC 7518 §3.2: an HS256 key must be at least as long as the hash output.
const MIN_HMAC_SECRET: usize = 32;
/// Smaller RSA keys are breakable and refused at load.
const MIN_RSA_BITS: usize = 2048;

pub(super) const HMAC_KEY: &str = "auth_hmac_secret_file";
pub(super) const PEM_KEY: &str = "auth_public_key_file";
pub(super) const JWKS_KEY: &str = "auth_jwks_file";

/// One decoded key, with the crate validation that goes with it, built once at load.
pub(super) struct Key {
    /// The one algorithm this key verifies.
    pub(super) alg: Algorithm,
    /// Its JWKS key id.
    pub(super) kid: Option<String>,
    /// The decoded key.
    pub(super) key: DecodingKey,
    /// The crate's checks for it (signature, `aud`, `iss`).
    pub(super) validation: Validation,
}

/// Everything loaded from the key files; swapped whole on reload.
#[derive(Default)]
pub(super) struct KeySet {
    /// From `auth_hmac_secret_file`.
    pub(super) hmac: Option<Key>,
    /// From `auth_public_key_file`.
    pub(super) pem: Option<Key>,
    /// From `auth_jwks_file`.
    pub(super) jwks: Vec<Key>,
}

impl KeySet {
    /// Picks the key for a token. Only keys whose own algorithm equals the token's are candidates,
    /// so a token can never make a public key serve as an HMAC secret.
    pub(super) fn select(&self, alg: Algorithm, kid: Option<&str>) -> Result<&Key, TokenError> {
        use Algorithm::{ES256, EdDSA, HS256, RS256};
        if !matches!(alg, HS256 | RS256 | ES256 | EdDSA) {
            return Err(TokenError::UnsupportedAlgorithm(format!("{alg:?}")));
        }
        let by_alg = |k: &&Key| k.alg == alg;
        let single = self.jwks.first().filter(|_| self.jwks.len() == 1);
        let candidates = [self.pem.as_ref(), single];
        let key = match kid {
            _ if alg == HS256 => self.hmac.as_ref(),
            Some(kid) if !self.jwks.is_empty() => {
                let found = self.jwks.iter().find(|k| k.kid.as_deref() == Some(kid));
                Some(found.ok_or(TokenError::UnknownKey)?)
            }
            _ => match candidates.into_iter().flatten().find(by_alg) {
                None if self.jwks.len() > 1 => return Err(TokenError::MissingKeyId),
                found => found,
            },
        };
        key.filter(by_alg).ok_or(TokenError::WrongAlgorithm(alg))
    }
}

pub(super) fn load_keys(s: &AuthSettings) -> Result<KeySet, LoadError> {
    let (hmac, pem, jwks) = (&s.hmac_secret_file, &s.public_key_file, &s.jwks_file);
    if hmac.is_none() && pem.is_none() && jwks.is_none() {
        let keys = format!("{HMAC_KEY}, {PEM_KEY} or {JWKS_KEY}");
        return Err(LoadError(format!("auth: \"on\" needs one of {keys}")));
    }
    // Another dependency may turn on the crate's aws_lc_rs feature too; then no provider is picked
    // automatically and `decode` would panic, so pick one here (Err: one is installed already).
    if CryptoProvider::try_get_default().is_none() {
        let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
    }
    let mut set = KeySet::default();
    if let Some(path) = hmac {
        set.hmac = Some(load_hmac(s, path)?);
    }
    if let Some(path) = pem {
        set.pem = Some(load_pem(s, path)?);
    }
    if let Some(path) = jwks {
        set.jwks = load_jwks(s, path)?;
    }
    Ok(set)
}

fn file_error(key: &str, path: &Path, what: impl fmt::Display) -> LoadError {
    LoadError(format!("{key}: {}: {what}", path.display()))
}

fn make_key(s: &AuthSettings, alg: Algorithm, kid: Option<String>, key: DecodingKey) -> Key {
    let mut validation = Validation::new(alg);
    let v = &mut validation;
    v.required_spec_claims.clear();
    // exp / nbf / iat are checked against the caller's `now` in RawClaims::check.
    (v.validate_exp, v.validate_nbf, v.leeway) = (false, false, 0);
    // Without a configured audience the crate would refuse every token that carries `aud`.
    v.validate_aud = s.audience.is_some();
    if let Some(aud) = &s.audience {
        v.set_audience(&[aud]);
        v.required_spec_claims.insert("aud".into());
    }
    if let Some(iss) = &s.issuer {
        v.set_issuer(&[iss]);
        v.required_spec_claims.insert("iss".into());
    }
    Key {
        alg,
        kid,
        key,
        validation,
    }
}

fn load_hmac(s: &AuthSettings, path: &Path) -> Result<Key, LoadError> {
    let fail = |why: String| file_error(HMAC_KEY, path, why);
    let mut secret = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    while secret.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        secret.pop();
    }
    if secret.len() < MIN_HMAC_SECRET {
        let len = secret.len();
        return Err(fail(format!(
            "the secret is {len} bytes; HS256 needs {MIN_HMAC_SECRET}+"
        )));
    }
    let key = DecodingKey::from_secret(&secret).map_err(|e| fail(e.to_string()))?;
    Ok(make_key(s, Algorithm::HS256, None, key))
}

fn load_pem(s: &AuthSettings, path: &Path) -> Result<Key, LoadError> {
    let fail = |why: String| file_error(PEM_KEY, path, why);
    let pem = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    if pem.windows(11).any(|w| w == b"PRIVATE KEY") {
        return Err(fail(
            "holds a private key; give the public one (pkey -pubout)".into(),
        ));
    }
    let (alg, key) = if let Ok(k) = DecodingKey::from_rsa_pem(&pem) {
        (Algorithm::RS256, k)
    } else if let Ok(k) = DecodingKey::from_ec_pem(&pem) {
        (Algorithm::ES256, k)
    } else if let Ok(k) = DecodingKey::from_ed_pem(&pem) {
        (Algorithm::EdDSA, k)
    } else {
        return Err(fail("not a PEM RSA, EC P-256 or Ed25519 public key".into()));
    };
    check_key(alg, &key).map_err(fail)?;
    Ok(make_key(s, alg, None, key))
}

/// Proves at load that the key works for `alg`, so a bad key cannot surface (or panic) per token.
fn check_key(alg: Algorithm, key: &DecodingKey) -> Result<(), String> {
    let provider = CryptoProvider::try_get_default().ok_or("no JWT crypto provider")?;
    let n = match (alg, key.kind()) {
        (Algorithm::RS256, DecodingKeyKind::SecretOrDer(der)) => {
            let parsed = (provider.key_utils.rsa_pub_components_from_public_key)(der);
            Some(parsed.map_err(|e| format!("not an RSA public key: {e}"))?.0)
        }
        (Algorithm::RS256, DecodingKeyKind::RsaModulusExponent { n, .. }) => Some(n.clone()),
        // The crate's EdDSA verifier slices the first 32 bytes and would panic on fewer.
        (Algorithm::EdDSA, _) if key.try_get_as_bytes().map(<[u8]>::len).ok() != Some(32) => {
            return Err("not an Ed25519 public key (needs 32 bytes)".into());
        }
        _ => None,
    };
    let bytes = n.map_or(usize::MAX, |n| n.iter().skip_while(|b| **b == 0).count());
    if bytes < MIN_RSA_BITS / 8 {
        return Err(format!(
            "the RSA key has {} bits; {MIN_RSA_BITS}+ needed",
            bytes * 8
        ));
    }
    let verifier = (provider.verifier_factory)(&alg, key).map(drop);
    verifier.map_err(|e| format!("not a usable {alg:?} key: {e}"))
}

fn load_jwks(s: &AuthSettings, path: &Path) -> Result<Vec<Key>, LoadError> {
    let fail = |why: String| file_error(JWKS_KEY, path, why);
    let bytes = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    let set: JwkSet =
        serde_json::from_slice(&bytes).map_err(|e| fail(format!("not a JWKS document: {e}")))?;
    let mut keys: Vec<Key> = Vec::new();
    for (i, jwk) in set.keys.iter().enumerate() {
        let kid = jwk.common.key_id.clone();
        let name = kid
            .as_ref()
            .map_or(format!("key #{i}"), |k| format!("{k:?}"));
        let bad = |why: String| fail(format!("{name}: {why}"));
        // Identity providers publish encryption and other-algorithm keys beside signing keys; those
        // are not errors, just not ours.
        let Some(alg) = jwk_algorithm(jwk) else {
            continue;
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|e| bad(e.to_string()))?;
        check_key(alg, &key).map_err(bad)?;
        if kid.is_some() && keys.iter().any(|k| k.kid == kid) {
            return Err(bad("the same kid appears twice".into()));
        }
        keys.push(make_key(s, alg, kid, key));
    }
    if keys.is_empty() {
        return Err(fail(
            "no usable key (RS256, ES256 or EdDSA signing keys)".into(),
        ));
    }
    if keys.len() > 1 && keys.iter().any(|k| k.kid.is_none()) {
        return Err(fail("with several keys, each needs a `kid`".into()));
    }
    Ok(keys)
}

/// The algorithm a JWK serves, or `None` for keys tether does not use.
fn jwk_algorithm(jwk: &jsonwebtoken::jwk::Jwk) -> Option<Algorithm> {
    if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
        return None;
    }
    let alg = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            Algorithm::EdDSA
        }
        _ => return None,
    };
    let declared = jwk.common.key_algorithm.map(|a| a.to_string());
    let fits = declared.is_none_or(|d| d == format!("{alg:?}"));
    fits.then_some(alg)
}
