//! Access tokens for servers with `auth = "on"` (docs/protocol.md §7): HS256 JWTs whose `sub` is the
//! client id, minted from the same secret file the server reads. Each worker mints its clients'
//! tokens before its first connect, so the connect figures measure the server, not HMAC.
//!
//! Only HS256 is needed, so this is `hmac` + `sha2` + `base64` rather than `jsonwebtoken`, whose
//! `rust_crypto` backend also compiles RSA and elliptic-curve crates the tool never uses.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The server refuses shorter HS256 secrets (RFC 7518 §3.2: at least the hash size).
pub const MIN_SECRET: usize = 32;

/// `{"alg":"HS256","typ":"JWT"}`, base64url: the same for every token.
const HEADER: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";

/// Reads an HS256 secret file the way the server does: the bytes, trailing newlines trimmed.
pub fn read_secret(path: &Path) -> Result<Vec<u8>, String> {
    let mut secret =
        std::fs::read(path).map_err(|e| format!("token secret {}: {e}", path.display()))?;
    while secret.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        secret.pop();
    }
    if secret.len() < MIN_SECRET {
        return Err(format!(
            "token secret {}: {} bytes; HS256 needs {MIN_SECRET}+",
            path.display(),
            secret.len()
        ));
    }
    Ok(secret)
}

/// Signs HS256 tokens with one secret.
pub struct Minter {
    /// The keyed MAC, cloned per token (cheaper than re-keying).
    mac: Hmac<Sha256>,
}

impl Minter {
    /// A minter for `secret`.
    pub fn new(secret: &[u8]) -> Result<Minter, String> {
        let mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|e| format!("HMAC key: {e}"))?;
        Ok(Minter { mac })
    }

    /// A token for client id `sub`, issued at `iat` and expiring at `exp` (Unix seconds).
    pub fn mint(&self, sub: &str, iat: u64, exp: u64) -> String {
        // Client ids here are `c<number>`, but escape anyway so any id yields valid JSON.
        let claims = serde_json::json!({ "sub": sub, "iat": iat, "exp": exp }).to_string();
        let mut token = format!("{HEADER}.{}", URL_SAFE_NO_PAD.encode(claims));
        let mut mac = self.mac.clone();
        mac.update(token.as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        token.push('.');
        token.push_str(&sig);
        token
    }
}

/// Now in Unix seconds.
pub fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Tokens for clients `c<first>` .. `c<first + n - 1>`, valid for `ttl_secs` from now; empty
/// when no secret file is given.
pub fn tokens_for(
    secret_file: Option<&Path>,
    first: u64,
    n: u64,
    ttl_secs: u64,
) -> Result<Vec<String>, String> {
    let Some(path) = secret_file else {
        return Ok(Vec::new());
    };
    let minter = Minter::new(&read_secret(path)?)?;
    let now = unix_secs();
    Ok((first..first + n)
        .map(|id| minter.mint(&format!("c{id}"), now, now + ttl_secs))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-bench";

    #[test]
    fn header_constant_is_what_it_says() {
        let h = URL_SAFE_NO_PAD.decode(HEADER).unwrap();
        assert_eq!(h, br#"{"alg":"HS256","typ":"JWT"}"#);
    }

    #[test]
    fn tokens_verify_with_an_independent_implementation() {
        let now = unix_secs();
        let t = Minter::new(SECRET).unwrap().mint("c42", now, now + 3600);
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        v.set_required_spec_claims(&["sub", "exp"]);
        let key = jsonwebtoken::DecodingKey::from_secret(SECRET).unwrap();
        let data = jsonwebtoken::decode::<serde_json::Value>(&t, &key, &v).unwrap();
        assert_eq!(data.claims["sub"], "c42");
        assert_eq!(data.claims["exp"], now + 3600);
        let wrong =
            jsonwebtoken::DecodingKey::from_secret(b"another-secret-another-secret-xx").unwrap();
        assert!(jsonwebtoken::decode::<serde_json::Value>(&t, &wrong, &v).is_err());
    }

    #[test]
    fn secret_files_like_the_server() {
        let dir = std::env::temp_dir().join(format!("tether-bench-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("secret");
        std::fs::write(&file, [SECRET, b"\r\n"].concat()).unwrap();
        assert_eq!(read_secret(&file).unwrap(), SECRET);
        let tokens = tokens_for(Some(&file), 7, 3, 60).unwrap();
        assert_eq!(tokens.len(), 3);
        assert_ne!(tokens[0], tokens[1], "each client its own token");
        std::fs::write(&file, "short\n").unwrap();
        assert!(read_secret(&file).unwrap_err().contains("32+"));
        assert!(read_secret(&dir.join("missing")).is_err());
        assert!(tokens_for(None, 0, 5, 60).unwrap().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
