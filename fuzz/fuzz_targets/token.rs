//! Upgrade tokens: arbitrary strings, and tokens correctly signed with the configured HS256
//! secret around an arbitrary payload, so the claim checks behind the signature are reached.
//!
//! The first byte picks the mode, so seeds can be realistic: below 85 the rest is a token as
//! text; below 170 it is a payload (usually JSON) signed as is; above, the rest is read
//! structurally as a claims object and a clock.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Number, Value};
use tether::auth::{AuthSettings, MAX_SUB_LEN, Verifier};

const SECRET: &[u8] = b"fuzz-secret-fuzz-secret-fuzz-secret";

#[derive(Arbitrary, Debug)]
struct Claims {
    sub: Option<Json>,
    exp: Option<Json>,
    nbf: Option<Json>,
    iat: Option<Json>,
    aud: Option<Json>,
    iss: Option<Json>,
    channels: Option<Json>,
    extra: Vec<(String, Json)>,
}

/// A JSON value shaped for the claims: numbers near and far from `now`, strings, nesting.
#[derive(Debug)]
struct Json(Value);

impl<'a> Arbitrary<'a> for Json {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        json(u, 3).map(Json)
    }
}

fn json(u: &mut Unstructured<'_>, depth: u32) -> arbitrary::Result<Value> {
    let pick = u.int_in_range(0..=if depth == 0 { 5 } else { 7 })?;
    Ok(match pick {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => Value::from(u.arbitrary::<u64>()?),
        3 => Value::from(u.arbitrary::<i64>()?),
        4 => Number::from_f64(u.arbitrary()?).map_or(Value::Null, Value::Number),
        5 => Value::String(u.arbitrary()?),
        6 => {
            let n = u.int_in_range(0..=4)?;
            Value::Array(
                (0..n)
                    .map(|_| json(u, depth - 1))
                    .collect::<Result<_, _>>()?,
            )
        }
        _ => {
            let n = u.int_in_range(0..=4)?;
            let mut m = Map::new();
            for _ in 0..n {
                m.insert(u.arbitrary()?, json(u, depth - 1)?);
            }
            Value::Object(m)
        }
    })
}

struct Fixture {
    plain: Verifier,
    /// The same secret with `aud` and `iss` required, so those checks run too.
    strict: Verifier,
    key: EncodingKey,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let path: PathBuf =
            std::env::temp_dir().join(format!("tether-fuzz-hs256-{}", std::process::id()));
        if let Err(e) = std::fs::write(&path, SECRET) {
            panic!("cannot write the secret file {}: {e}", path.display());
        }
        let settings = AuthSettings {
            hmac_secret_file: Some(path.clone()),
            leeway: Duration::from_secs(5),
            ..AuthSettings::default()
        };
        let strict_settings = AuthSettings {
            audience: Some("tether".into()),
            issuer: Some("fuzz".into()),
            ..settings.clone()
        };
        let load = |s: &AuthSettings| match Verifier::load(s) {
            Ok(v) => v,
            Err(e) => panic!("the fuzz secret does not load: {e}"),
        };
        let key = match EncodingKey::from_secret(SECRET) {
            Ok(k) => k,
            Err(e) => panic!("the fuzz secret is not an HS256 key: {e}"),
        };
        let fixture = Fixture {
            plain: load(&settings),
            strict: load(&strict_settings),
            key,
        };
        // Loaded: the file is not needed any more.
        let _ = std::fs::remove_file(&path);
        fixture
    })
}

/// The clock for the text modes: after the seeds' `iat`, before their `exp`.
const NOW: u64 = 1_750_000_000;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let f = fixture();
    let mut now = NOW;
    let token = match mode {
        0..85 => String::from_utf8_lossy(rest).into_owned(),
        85..170 => sign(f, rest),
        _ => {
            let Ok((c, clock)) = <(Claims, u64)>::arbitrary_take_rest(Unstructured::new(rest))
            else {
                return;
            };
            now = clock;
            let mut m = Map::new();
            let fields = [
                ("sub", c.sub),
                ("exp", c.exp),
                ("nbf", c.nbf),
                ("iat", c.iat),
                ("aud", c.aud),
                ("iss", c.iss),
                ("channels", c.channels),
            ];
            for (k, v) in c.extra {
                m.insert(k, v.0);
            }
            for (k, v) in fields {
                if let Some(v) = v {
                    m.insert(k.into(), v.0);
                }
            }
            match jsonwebtoken::encode(&Header::new(Algorithm::HS256), &Value::Object(m), &f.key) {
                Ok(t) => t,
                Err(_) => return,
            }
        }
    };
    for v in [&f.plain, &f.strict] {
        if let Ok(claims) = v.verify(&token, now) {
            assert!(!claims.sub.is_empty() && claims.sub.len() <= MAX_SUB_LEN);
            assert!(!claims.sub.chars().any(char::is_control));
            // A token is valid only before its expiry (plus the 5 s leeway).
            assert!(claims.exp.is_none_or(|exp| now < exp.saturating_add(5)));
            if let Some(g) = &claims.channels {
                let _ = g.allows("room");
            }
            let _ = claims.may_subscribe("room");
        }
    }
});

fn sign(f: &Fixture, payload: &[u8]) -> String {
    let head = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let message = format!("{head}.{}", URL_SAFE_NO_PAD.encode(payload));
    match jsonwebtoken::crypto::sign(message.as_bytes(), &f.key, Algorithm::HS256) {
        Ok(sig) => format!("{message}.{sig}"),
        Err(e) => panic!("HS256 signing cannot fail: {e}"),
    }
}
