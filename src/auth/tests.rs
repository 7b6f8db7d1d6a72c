use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

use super::keys::HMAC_KEY;
use super::*;

const NOW: u64 = 1_800_000_000;

/// A directory of its own under the system temp dir, removed when dropped. (Written here rather
/// than taken from `tempfile`: that dev-dependency turned on features of crates the server
/// shares, so the release build of the examples could not be reused for the server's.)
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> std::io::Result<TempDir> {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("tether-auth-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&path)?;
        Ok(TempDir(path))
    }

    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Key material generated once per test run; nothing is committed.
struct Keys {
    rsa_priv: String,
    rsa_pub: String,
    ec_priv: String,
    ec_pub: String,
    ec_raw: Vec<u8>,
    ec2_priv: String,
    ec2_raw: Vec<u8>,
    ed_priv: String,
    ed_pub: String,
    ed_raw: Vec<u8>,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let dir = TempDir::new().unwrap();
        let priv_path = dir.path().join("rsa.pem");
        let pub_path = dir.path().join("rsa.pub.pem");
        let openssl = |args: &[&std::ffi::OsStr]| {
            let out = Command::new("/usr/bin/openssl")
                .args(args)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let os = std::ffi::OsStr::new;
        openssl(&[
            os("genpkey"),
            os("-algorithm"),
            os("RSA"),
            os("-pkeyopt"),
            os("rsa_keygen_bits:2048"),
            os("-out"),
            priv_path.as_os_str(),
        ]);
        openssl(&[
            os("pkey"),
            os("-pubout"),
            os("-in"),
            priv_path.as_os_str(),
            os("-out"),
            pub_path.as_os_str(),
        ]);
        let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let ec2 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        Keys {
            rsa_priv: std::fs::read_to_string(&priv_path).unwrap(),
            rsa_pub: std::fs::read_to_string(&pub_path).unwrap(),
            ec_priv: ec.serialize_pem(),
            ec_pub: ec.public_key_pem(),
            ec_raw: ec.public_key_raw().to_vec(),
            ec2_priv: ec2.serialize_pem(),
            ec2_raw: ec2.public_key_raw().to_vec(),
            ed_priv: ed.serialize_pem(),
            ed_pub: ed.public_key_pem(),
            ed_raw: ed.public_key_raw().to_vec(),
        }
    })
}

fn rsa_enc() -> EncodingKey {
    EncodingKey::from_rsa_pem(keys().rsa_priv.as_bytes()).unwrap()
}
fn ec_enc() -> EncodingKey {
    EncodingKey::from_ec_pem(keys().ec_priv.as_bytes()).unwrap()
}
fn ec2_enc() -> EncodingKey {
    EncodingKey::from_ec_pem(keys().ec2_priv.as_bytes()).unwrap()
}
fn ed_enc() -> EncodingKey {
    EncodingKey::from_ed_pem(keys().ed_priv.as_bytes()).unwrap()
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn ec_jwk(raw: &[u8], kid: &str) -> Value {
    let (x, y) = (b64(&raw[1..33]), b64(&raw[33..65]));
    json!({"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "x": x, "y": y})
}
fn ed_jwk(raw: &[u8], kid: &str) -> Value {
    json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "alg": "EdDSA", "x": b64(raw)})
}
fn rsa_jwk(kid: &str) -> Value {
    let mut v = serde_json::to_value(Jwk::from_encoding_key(&rsa_enc(), Algorithm::RS256).unwrap())
        .unwrap();
    v["kid"] = json!(kid);
    v
}

/// A temp dir holding the key files of one test.
struct Files(TempDir);

impl Files {
    fn new() -> Self {
        Files(TempDir::new().unwrap())
    }
    fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.0.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

fn settings() -> AuthSettings {
    AuthSettings {
        leeway: Duration::from_secs(5),
        ..Default::default()
    }
}

fn mint(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(String::from);
    encode(&header, claims, key).unwrap()
}

fn secret() -> String {
    rand::random::<[u8; 32]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An HS256 verifier with a fresh secret, plus that secret's encoding key.
fn hs_verifier(s: AuthSettings) -> (Verifier, EncodingKey, Files) {
    let files = Files::new();
    let secret = secret();
    let s = AuthSettings {
        hmac_secret_file: Some(files.write("secret", format!("{secret}\n"))),
        ..s
    };
    (
        Verifier::load(&s).unwrap(),
        hs_key(secret.as_bytes()),
        files,
    )
}

fn pem_verifier(pem: &str) -> (Verifier, Files) {
    let files = Files::new();
    let s = AuthSettings {
        public_key_file: Some(files.write("key.pem", pem)),
        ..settings()
    };
    (Verifier::load(&s).unwrap(), files)
}

fn hs_check(claims: Value) -> Result<Claims, TokenError> {
    let (v, key, _f) = hs_verifier(settings());
    v.verify(&mint(Algorithm::HS256, None, &key, &claims), NOW)
}

fn tamper(token: &str) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    let payload = b64(br#"{"sub":"mallory"}"#);
    format!("{}.{}.{}", parts[0], payload, parts[2])
}

#[test]
fn hs256_valid_and_secret_newline_trimmed() {
    let (v, key, _f) = hs_verifier(settings());
    let c = v
        .verify(
            &mint(
                Algorithm::HS256,
                None,
                &key,
                &json!({"sub": "alice", "exp": NOW + 60}),
            ),
            NOW,
        )
        .unwrap();
    assert_eq!(
        c,
        Claims {
            sub: "alice".into(),
            exp: Some(NOW + 60),
            channels: None,
            subs: Vec::new(),
        }
    );
}

#[test]
fn each_public_key_algorithm_valid_from_pem() {
    let k = keys();
    for (alg, pem, enc) in [
        (Algorithm::RS256, &k.rsa_pub, rsa_enc()),
        (Algorithm::ES256, &k.ec_pub, ec_enc()),
        (Algorithm::EdDSA, &k.ed_pub, ed_enc()),
    ] {
        let (v, _f) = pem_verifier(pem);
        let token = mint(alg, None, &enc, &json!({"sub": "bob"}));
        assert_eq!(v.verify(&token, NOW).unwrap().sub, "bob", "{alg:?}");
        assert_eq!(
            v.verify(&tamper(&token), NOW),
            Err(TokenError::BadSignature),
            "{alg:?} tampered"
        );
    }
}

#[test]
fn bad_signature_from_other_key() {
    let (v, _, _f) = hs_verifier(settings());
    let other = hs_key(secret().as_bytes());
    assert_eq!(
        v.verify(
            &mint(Algorithm::HS256, None, &other, &json!({"sub": "a"})),
            NOW
        ),
        Err(TokenError::BadSignature)
    );
    let (v, _f) = pem_verifier(&keys().ec_pub);
    assert_eq!(
        v.verify(
            &mint(Algorithm::ES256, None, &ec2_enc(), &json!({"sub": "a"})),
            NOW
        ),
        Err(TokenError::BadSignature)
    );
    let mut t = mint(Algorithm::ES256, None, &ec_enc(), &json!({"sub": "a"}));
    t.truncate(t.len() - 4);
    assert!(matches!(
        v.verify(&t, NOW),
        Err(TokenError::BadSignature | TokenError::Malformed(_))
    ));
}

#[test]
fn hs256_with_public_key_as_secret_is_refused() {
    // The classic confusion attack: sign HS256 with the (public) PEM text as the HMAC secret.
    for pem in [&keys().rsa_pub, &keys().ec_pub] {
        let (v, _f) = pem_verifier(pem);
        let forged = mint(
            Algorithm::HS256,
            None,
            &hs_key(pem.as_bytes()),
            &json!({"sub": "x"}),
        );
        assert_eq!(
            v.verify(&forged, NOW),
            Err(TokenError::WrongAlgorithm(Algorithm::HS256))
        );
    }
}

#[test]
fn alg_must_match_key_type() {
    let (v, _f) = pem_verifier(&keys().ec_pub);
    let t = mint(Algorithm::EdDSA, None, &ed_enc(), &json!({"sub": "x"}));
    assert_eq!(
        v.verify(&t, NOW),
        Err(TokenError::WrongAlgorithm(Algorithm::EdDSA))
    );
    let t = mint(Algorithm::RS256, None, &rsa_enc(), &json!({"sub": "x"}));
    assert_eq!(
        v.verify(&t, NOW),
        Err(TokenError::WrongAlgorithm(Algorithm::RS256))
    );
    let (v, _, _f) = hs_verifier(settings());
    let t = mint(Algorithm::ES256, None, &ec_enc(), &json!({"sub": "x"}));
    assert_eq!(
        v.verify(&t, NOW),
        Err(TokenError::WrongAlgorithm(Algorithm::ES256))
    );
}

#[test]
fn alg_none_and_other_algorithms_refused() {
    let (v, key, _f) = hs_verifier(settings());
    let body = b64(br#"{"sub":"root"}"#);
    for header in [r#"{"alg":"none","typ":"JWT"}"#, r#"{"alg":"None"}"#] {
        let unsigned = format!("{}.{body}.", b64(header.as_bytes()));
        assert!(
            matches!(
                v.verify(&unsigned, NOW),
                Err(TokenError::UnsupportedAlgorithm(_))
            ),
            "{header}"
        );
    }
    let none = format!("{}.{body}.", b64(br#"{"alg":"none"}"#));
    assert_eq!(
        v.verify(&none, NOW),
        Err(TokenError::UnsupportedAlgorithm("none".into()))
    );
    // A valid HS256 signature re-labelled as none is still refused.
    let good = mint(Algorithm::HS256, None, &key, &json!({"sub": "root"}));
    let sig = good.rsplit('.').next().unwrap();
    assert!(
        v.verify(&format!("{}.{body}.{sig}", b64(br#"{"alg":"none"}"#)), NOW)
            .is_err()
    );
    let hs384 = mint(Algorithm::HS384, None, &key, &json!({"sub": "root"}));
    assert_eq!(
        v.verify(&hs384, NOW),
        Err(TokenError::UnsupportedAlgorithm("HS384".into()))
    );
    let long = format!(
        "{}.{body}.",
        b64(format!(r#"{{"alg":"{}"}}"#, "x".repeat(100)).as_bytes())
    );
    assert_eq!(
        v.verify(&long, NOW),
        Err(TokenError::UnsupportedAlgorithm("?".into()))
    );
}

#[test]
fn expiry_with_and_without_leeway() {
    let (strict, key, _f) = hs_verifier(AuthSettings {
        leeway: Duration::ZERO,
        ..settings()
    });
    let t = |exp: u64| {
        mint(
            Algorithm::HS256,
            None,
            &key,
            &json!({"sub": "a", "exp": exp}),
        )
    };
    assert!(strict.verify(&t(NOW + 1), NOW).is_ok());
    assert_eq!(strict.verify(&t(NOW), NOW), Err(TokenError::Expired));
    assert_eq!(strict.verify(&t(NOW - 3), NOW), Err(TokenError::Expired));
    assert_eq!(
        hs_check(json!({"sub": "a", "exp": NOW - 3})).map(|c| c.exp),
        Ok(Some(NOW - 3))
    );
    assert_eq!(
        hs_check(json!({"sub": "a", "exp": NOW - 5})),
        Err(TokenError::Expired)
    );
    assert_eq!(
        hs_check(json!({"sub": "a", "exp": u64::MAX})).map(|c| c.exp),
        Ok(Some(u64::MAX))
    );
    assert_eq!(
        hs_check(json!({"sub": "a", "exp": (NOW + 10) as f64 + 0.5})).map(|c| c.exp),
        Ok(Some(NOW + 10))
    );
}

#[test]
fn sub_second_leeway_rounds_up() {
    let (v, key, _f) = hs_verifier(AuthSettings {
        leeway: Duration::from_millis(250),
        ..settings()
    });
    assert!(
        v.verify(
            &mint(
                Algorithm::HS256,
                None,
                &key,
                &json!({"sub": "a", "exp": NOW})
            ),
            NOW
        )
        .is_ok()
    );
}

#[test]
fn nbf_and_iat_with_and_without_leeway() {
    assert!(hs_check(json!({"sub": "a", "nbf": NOW + 5, "iat": NOW + 5})).is_ok());
    assert_eq!(
        hs_check(json!({"sub": "a", "nbf": NOW + 6})),
        Err(TokenError::NotYetValid)
    );
    assert_eq!(
        hs_check(json!({"sub": "a", "iat": NOW + 6})),
        Err(TokenError::IssuedInFuture)
    );
    assert!(hs_check(json!({"sub": "a", "nbf": NOW - 100, "iat": NOW - 100})).is_ok());
    let (strict, key, _f) = hs_verifier(AuthSettings {
        leeway: Duration::ZERO,
        ..settings()
    });
    let t = |c: Value| strict.verify(&mint(Algorithm::HS256, None, &key, &c), NOW);
    assert!(t(json!({"sub": "a", "nbf": NOW, "iat": NOW})).is_ok());
    assert_eq!(
        t(json!({"sub": "a", "nbf": NOW + 1})),
        Err(TokenError::NotYetValid)
    );
    assert_eq!(
        t(json!({"sub": "a", "iat": NOW + 1})),
        Err(TokenError::IssuedInFuture)
    );
}

#[test]
fn time_claims_of_wrong_type() {
    for (claim, value) in [
        ("exp", json!("soon")),
        ("nbf", json!(-1)),
        ("iat", json!(true)),
        ("exp", json!(1e300)),
    ] {
        let mut c = json!({"sub": "a"});
        c[claim] = value;
        assert!(
            matches!(hs_check(c), Err(TokenError::BadClaim(got, _)) if got == claim),
            "{claim}"
        );
    }
}

#[test]
fn audience_string_and_array() {
    let s = AuthSettings {
        audience: Some("tether".into()),
        ..settings()
    };
    let (v, key, _f) = hs_verifier(s);
    let t = |aud: Value| {
        v.verify(
            &mint(
                Algorithm::HS256,
                None,
                &key,
                &json!({"sub": "a", "aud": aud}),
            ),
            NOW,
        )
    };
    assert!(t(json!("tether")).is_ok());
    assert!(t(json!(["other", "tether"])).is_ok());
    assert_eq!(t(json!("other")), Err(TokenError::WrongAudience));
    assert_eq!(t(json!(["other", "more"])), Err(TokenError::WrongAudience));
    assert_eq!(t(json!(null)), Err(TokenError::WrongAudience));
    assert_eq!(t(json!(7)), Err(TokenError::WrongAudience));
    assert_eq!(
        v.verify(
            &mint(Algorithm::HS256, None, &key, &json!({"sub": "a"})),
            NOW
        ),
        Err(TokenError::WrongAudience)
    );
    // Not configured: any audience passes.
    assert!(hs_check(json!({"sub": "a", "aud": "whoever"})).is_ok());
}

#[test]
fn issuer_must_match_when_configured() {
    let (v, key, _f) = hs_verifier(AuthSettings {
        issuer: Some("https://id.example".into()),
        ..settings()
    });
    let t = |c: Value| v.verify(&mint(Algorithm::HS256, None, &key, &c), NOW);
    assert!(t(json!({"sub": "a", "iss": "https://id.example"})).is_ok());
    assert_eq!(
        t(json!({"sub": "a", "iss": "https://evil.example"})),
        Err(TokenError::WrongIssuer)
    );
    assert_eq!(t(json!({"sub": "a"})), Err(TokenError::WrongIssuer));
    assert!(hs_check(json!({"sub": "a", "iss": "anyone"})).is_ok());
}

#[test]
fn sub_rules_match_client_ids() {
    assert_eq!(
        hs_check(json!({"exp": NOW + 9})),
        Err(TokenError::MissingSub)
    );
    assert_eq!(hs_check(json!({"sub": null})), Err(TokenError::MissingSub));
    assert!(hs_check(json!({"sub": "é".repeat(128)})).is_ok());
    for bad in [
        json!(""),
        json!("x".repeat(257)),
        json!("a\nb"),
        json!("a\u{7f}"),
        json!("\u{85}"),
        json!(42),
    ] {
        assert!(
            matches!(
                hs_check(json!({"sub": bad})),
                Err(TokenError::BadClaim("sub", _))
            ),
            "{bad}"
        );
    }
}

#[test]
fn channel_grants_exact_and_prefix() {
    let c = hs_check(json!({"sub": "a", "channels": ["news", "scores.*"]})).unwrap();
    let g = c.channels.as_ref().unwrap();
    assert!(g.allows("news") && g.allows("scores.live") && g.allows("scores."));
    assert!(!g.allows("newsX") && !g.allows("scoresX") && !g.allows("scores") && !g.allows("new"));
    assert!(c.may_subscribe("scores.live") && !c.may_subscribe("other"));
    let all = ChannelGrants::new(["*"]);
    assert!(all.allows("anything") && all.allows(""));
    assert!(!ChannelGrants::new(["a*b"]).allows("axb"));
    assert!(ChannelGrants::new(["a*b"]).allows("a*b"));
    let none = hs_check(json!({"sub": "a"})).unwrap();
    assert!(none.channels.is_none() && !none.may_subscribe("news"));
    let empty = hs_check(json!({"sub": "a", "channels": []})).unwrap();
    assert!(!empty.may_subscribe("news"));
    for bad in [json!("news"), json!(["news", 1]), json!({"news": true})] {
        assert!(matches!(
            hs_check(json!({"sub": "a", "channels": bad})),
            Err(TokenError::BadClaim("channels", _))
        ));
    }
}

fn jwks_verifier(doc: &Value, extra: AuthSettings) -> Result<(Verifier, Files), LoadError> {
    let files = Files::new();
    let s = AuthSettings {
        jwks_file: Some(files.write("jwks.json", doc.to_string())),
        ..extra
    };
    Verifier::load(&s).map(|v| (v, files))
}

#[test]
fn jwks_kid_picks_the_key() {
    let k = keys();
    let (ec1, ec2) = (ec_jwk(&k.ec_raw, "ec-1"), ec_jwk(&k.ec2_raw, "ec-2"));
    let doc = json!({"keys": [ec1, ec2, ed_jwk(&k.ed_raw, "ed-1"), rsa_jwk("rsa-1")]});
    let (v, _f) = jwks_verifier(&doc, settings()).unwrap();
    let c = json!({"sub": "a"});
    assert!(
        v.verify(&mint(Algorithm::ES256, Some("ec-1"), &ec_enc(), &c), NOW)
            .is_ok()
    );
    assert!(
        v.verify(&mint(Algorithm::ES256, Some("ec-2"), &ec2_enc(), &c), NOW)
            .is_ok()
    );
    assert!(
        v.verify(&mint(Algorithm::EdDSA, Some("ed-1"), &ed_enc(), &c), NOW)
            .is_ok()
    );
    assert!(
        v.verify(&mint(Algorithm::RS256, Some("rsa-1"), &rsa_enc(), &c), NOW)
            .is_ok()
    );
    // The kid decides: ec2's signature under ec-1's kid does not verify.
    assert_eq!(
        v.verify(&mint(Algorithm::ES256, Some("ec-1"), &ec2_enc(), &c), NOW),
        Err(TokenError::BadSignature)
    );
    assert_eq!(
        v.verify(&mint(Algorithm::ES256, Some("nope"), &ec_enc(), &c), NOW),
        Err(TokenError::UnknownKey)
    );
    assert_eq!(
        v.verify(&mint(Algorithm::ES256, None, &ec_enc(), &c), NOW),
        Err(TokenError::MissingKeyId)
    );
    assert_eq!(
        v.verify(&mint(Algorithm::EdDSA, Some("ec-1"), &ed_enc(), &c), NOW),
        Err(TokenError::WrongAlgorithm(Algorithm::EdDSA))
    );
    assert_eq!(kids(&v), ["ec-1", "ec-2", "ed-1", "rsa-1"]);
}

#[test]
fn jwks_single_key_without_kid_and_pem_precedence() {
    let k = keys();
    let mut single = ed_jwk(&k.ed_raw, "x");
    single.as_object_mut().unwrap().remove("kid");
    let (v, _f) = jwks_verifier(&json!({"keys": [single]}), settings()).unwrap();
    assert!(
        v.verify(
            &mint(Algorithm::EdDSA, None, &ed_enc(), &json!({"sub": "a"})),
            NOW
        )
        .is_ok()
    );
    assert_eq!(
        v.verify(
            &mint(Algorithm::EdDSA, Some("x"), &ed_enc(), &json!({"sub": "a"})),
            NOW
        ),
        Err(TokenError::UnknownKey)
    );
    // PEM (ES256 key 1) and JWKS (ES256 key 2): kid goes to the JWKS, no kid to the PEM key.
    let files = Files::new();
    let doc = json!({"keys": [ec_jwk(&k.ec2_raw, "ec-2")]});
    let s = AuthSettings {
        public_key_file: Some(files.write("k.pem", &k.ec_pub)),
        jwks_file: Some(files.write("k.json", doc.to_string())),
        ..settings()
    };
    let v = Verifier::load(&s).unwrap();
    let c = json!({"sub": "a"});
    assert!(
        v.verify(&mint(Algorithm::ES256, Some("ec-2"), &ec2_enc(), &c), NOW)
            .is_ok()
    );
    assert_eq!(
        v.verify(&mint(Algorithm::ES256, Some("ec-2"), &ec_enc(), &c), NOW),
        Err(TokenError::BadSignature)
    );
    assert!(
        v.verify(&mint(Algorithm::ES256, None, &ec_enc(), &c), NOW)
            .is_ok()
    );
    assert_eq!(
        v.verify(&mint(Algorithm::ES256, Some("zzz"), &ec_enc(), &c), NOW),
        Err(TokenError::UnknownKey)
    );
}

#[test]
fn jwks_skips_keys_that_are_not_ours() {
    let k = keys();
    let doc = json!({"keys": [
        {"kty": "oct", "kid": "sym", "k": b64(b"0123456789abcdef0123456789abcdef")},
        {"kty": "EC", "crv": "P-384", "kid": "p384", "x": b64(&[1; 48]), "y": b64(&[2; 48])},
        {"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"},
        {"kty": "RSA", "kid": "ps", "alg": "PS256", "n": "AQAB", "e": "AQAB"},
        ec_jwk(&k.ec_raw, "ec-1"),
    ]});
    let (v, _f) = jwks_verifier(&doc, settings()).unwrap();
    assert_eq!(kids(&v), ["ec-1"]);
    let forged = mint(
        Algorithm::HS256,
        Some("sym"),
        &hs_key(b"0123456789abcdef0123456789abcdef"),
        &json!({"sub": "a"}),
    );
    assert_eq!(
        v.verify(&forged, NOW),
        Err(TokenError::WrongAlgorithm(Algorithm::HS256))
    );
}

#[test]
fn reload_swaps_keys_and_keeps_old_ones_on_error() {
    let files = Files::new();
    let (a, b) = (secret(), secret());
    let path = files.write("secret", &a);
    let v = Verifier::load(&AuthSettings {
        hmac_secret_file: Some(path.clone()),
        ..settings()
    })
    .unwrap();
    let token_a = mint(
        Algorithm::HS256,
        None,
        &hs_key(a.as_bytes()),
        &json!({"sub": "a"}),
    );
    let token_b = mint(
        Algorithm::HS256,
        None,
        &hs_key(b.as_bytes()),
        &json!({"sub": "b"}),
    );
    assert!(v.verify(&token_a, NOW).is_ok());
    assert_eq!(v.verify(&token_b, NOW), Err(TokenError::BadSignature));
    std::fs::write(&path, format!("{b}\r\n")).unwrap();
    v.reload().unwrap();
    assert_eq!(v.verify(&token_a, NOW), Err(TokenError::BadSignature));
    assert!(v.verify(&token_b, NOW).is_ok());
    std::fs::write(&path, "short\n").unwrap();
    let err = v.reload().unwrap_err();
    assert!(
        err.0.starts_with("auth_hmac_secret_file: ") && err.0.contains("HS256 needs 32+"),
        "{err}"
    );
    assert!(v.verify(&token_b, NOW).is_ok());
    std::fs::remove_file(&path).unwrap();
    assert!(v.reload().is_err());
    assert!(v.verify(&token_b, NOW).is_ok());
}

#[test]
fn reload_of_broken_jwks_keeps_old_keys() {
    let k = keys();
    let (v, files) =
        jwks_verifier(&json!({"keys": [ec_jwk(&k.ec_raw, "ec-1")]}), settings()).unwrap();
    let t1 = mint(
        Algorithm::ES256,
        Some("ec-1"),
        &ec_enc(),
        &json!({"sub": "a"}),
    );
    let t2 = mint(
        Algorithm::ES256,
        Some("ec-2"),
        &ec2_enc(),
        &json!({"sub": "a"}),
    );
    files.write("jwks.json", "{\"keys\": [");
    let err = v.reload().unwrap_err();
    assert!(
        err.0.starts_with("auth_jwks_file: ") && err.0.contains("not a JWKS document"),
        "{err}"
    );
    assert!(v.verify(&t1, NOW).is_ok());
    files.write(
        "jwks.json",
        json!({"keys": [ec_jwk(&k.ec_raw, "ec-1"), ec_jwk(&k.ec2_raw, "ec-2")]}).to_string(),
    );
    v.reload().unwrap();
    assert!(v.verify(&t1, NOW).is_ok() && v.verify(&t2, NOW).is_ok());
}

fn load_err(f: impl FnOnce(&Files) -> AuthSettings) -> String {
    let files = Files::new();
    Verifier::load(&f(&files)).unwrap_err().0
}

#[test]
fn load_errors_name_the_config_key_and_file() {
    let k = keys();
    assert!(load_err(|_| settings()).contains(HMAC_KEY));
    let e = load_err(|f| AuthSettings {
        hmac_secret_file: Some(f.0.path().join("missing")),
        ..settings()
    });
    assert!(
        e.starts_with("auth_hmac_secret_file: ") && e.contains("missing"),
        "{e}"
    );
    let e = load_err(|f| AuthSettings {
        hmac_secret_file: Some(f.write("s", "\n")),
        ..settings()
    });
    assert!(e.contains("is 0 bytes"), "{e}");
    let pem = |f: &Files, text: &str| AuthSettings {
        public_key_file: Some(f.write("k.pem", text)),
        ..settings()
    };
    let e = load_err(|f| pem(f, "hello"));
    assert!(
        e.starts_with("auth_public_key_file: ") && e.contains("k.pem: not a PEM"),
        "{e}"
    );
    assert!(load_err(|f| pem(f, &k.ec_priv)).contains("private key"));
    assert!(load_err(|f| pem(f, &k.rsa_priv)).contains("private key"));
    let jwks = |f: &Files, doc: Value| AuthSettings {
        jwks_file: Some(f.write("k.json", doc.to_string())),
        ..settings()
    };
    let e = load_err(|f| jwks(f, json!({"keys": 1})));
    assert!(
        e.starts_with("auth_jwks_file: ") && e.contains("k.json: not a JWKS document: "),
        "{e}"
    );
    assert!(load_err(|f| jwks(f, json!({"keys": []}))).contains("no usable key"));
    let short_ed = json!({"kty": "OKP", "crv": "Ed25519", "kid": "e", "x": b64(&[9; 16])});
    assert!(load_err(|f| jwks(f, json!({"keys": [short_ed]}))).contains("\"e\": not an Ed25519"));
    let bad_point =
        json!({"kty": "EC", "crv": "P-256", "kid": "p", "x": b64(&[1; 32]), "y": b64(&[2; 32])});
    assert!(load_err(|f| jwks(f, json!({"keys": [bad_point]}))).contains("not a usable ES256 key"));
    let small_rsa = json!({"kty": "RSA", "kid": "r", "n": b64(&[0xc5; 128]), "e": "AQAB"});
    assert!(load_err(|f| jwks(f, json!({"keys": [small_rsa]}))).contains("1024 bits"));
    let mismatch = json!({"kty": "RSA", "kid": "m", "alg": "ES256", "n": "AQAB", "e": "AQAB"});
    assert!(load_err(|f| jwks(f, json!({"keys": [mismatch]}))).contains("no usable key"));
    let dup = json!({"keys": [ec_jwk(&k.ec_raw, "a"), ec_jwk(&k.ec2_raw, "a")]});
    assert!(load_err(|f| jwks(f, dup)).contains("same kid"));
    let mut nokid = ec_jwk(&k.ec2_raw, "b");
    nokid.as_object_mut().unwrap().remove("kid");
    assert!(
        load_err(|f| jwks(f, json!({"keys": [ec_jwk(&k.ec_raw, "a"), nokid]})))
            .contains("each needs a `kid`")
    );
}

#[test]
fn malformed_inputs_never_panic() {
    let (v, key, _f) = hs_verifier(settings());
    assert_eq!(v.verify("", NOW), Err(TokenError::Missing));
    assert_eq!(
        v.verify(&"a".repeat(MAX_TOKEN_LEN + 1), NOW),
        Err(TokenError::TooLarge)
    );
    let good = mint(Algorithm::HS256, None, &key, &json!({"sub": "a"}));
    let (h, rest) = good.split_once('.').unwrap();
    let samples = [
        "abc".to_string(),
        "..".into(),
        "a.b".into(),
        "a.b.c.d".into(),
        format!("{good}.x"),
        format!("{h}.!!!.{}", rest.rsplit('.').next().unwrap()),
        format!("{}.{rest}", b64(br#"{"alg":"HS256","crit":["exp"]}"#)),
        format!("{}.{rest}", b64(b"[1,2]")),
        format!("{h}.{}.sig", b64(b"not json")),
        "\u{0}\u{1}.\u{ffff}.é".into(),
    ];
    for s in &samples {
        assert!(v.verify(s, NOW).is_err(), "{s}");
    }
    let payload_array = mint(Algorithm::HS256, None, &key, &json!(["sub"]));
    assert!(matches!(
        v.verify(&payload_array, NOW),
        Err(TokenError::Malformed(_))
    ));
    let alphabet = b"AZaz09-_.=+/ {}\"";
    for _ in 0..2000 {
        let len = rand::random_range(0..64);
        let s: String = (0..len)
            .map(|_| alphabet[rand::random_range(0..alphabet.len())] as char)
            .collect();
        let _ = v.verify(&s, NOW);
        let _ = v.verify(&format!("{h}.{s}"), NOW);
    }
}

#[test]
fn every_error_has_a_distinct_message() {
    let all = [
        TokenError::Missing,
        TokenError::TooLarge,
        TokenError::Malformed("x"),
        TokenError::UnsupportedAlgorithm("none".into()),
        TokenError::WrongAlgorithm(Algorithm::HS256),
        TokenError::UnknownKey,
        TokenError::MissingKeyId,
        TokenError::BadSignature,
        TokenError::Expired,
        TokenError::NotYetValid,
        TokenError::IssuedInFuture,
        TokenError::WrongAudience,
        TokenError::WrongIssuer,
        TokenError::MissingSub,
        TokenError::BadClaim("sub", "empty"),
    ];
    let messages: HashSet<String> = all.iter().map(TokenError::message).collect();
    assert_eq!(messages.len(), all.len());
    assert!(
        messages
            .iter()
            .all(|m| m.starts_with("the token") || m.starts_with("no token"))
    );
    assert_eq!(TokenError::Expired.to_string(), "the token has expired");
}

fn hs_key(secret: &[u8]) -> EncodingKey {
    EncodingKey::from_secret(secret).unwrap()
}

fn kids(v: &Verifier) -> Vec<String> {
    let keys = v.keys.load();
    keys.jwks
        .iter()
        .map(|k| k.kid.clone().unwrap_or_default())
        .collect()
}
