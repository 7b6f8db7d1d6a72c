//! Value types and serde adapters of the configuration: lists that are TOML arrays in a file and
//! comma-separated text in the environment and flags, proxy ranges, secrets that never print.

use std::fmt;
use std::marker::PhantomData;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};
use serde_with::{DeserializeAs, SerializeAs};

/// A secret (API key); `Debug` never prints it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Secret {
    /// The secret an `*_file` key names (`key`, e.g. `api_key_file`): the file's text without
    /// its trailing newline. A missing or empty file is an error naming the key and the file,
    /// so startup stops rather than run with no secret.
    pub fn from_file(key: &str, path: &std::path::Path) -> Result<Secret, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("{key}: {}: {e}", path.display()))?;
        let secret = text.trim_end_matches(['\n', '\r']);
        if secret.is_empty() {
            return Err(format!("{key}: {}: the file is empty", path.display()));
        }
        Ok(Secret(secret.to_string()))
    }
}

/// An address range whose forwarded headers are believed: `10.0.0.0/8`, `::1/128`, or a bare
/// address (a range of one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proxy(pub IpNet);

impl Proxy {
    /// True when `ip` lies in this range; IPv4-mapped IPv6 addresses match IPv4 ranges.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&ip.to_canonical())
    }
}

impl FromStr for Proxy {
    type Err = String;
    fn from_str(s: &str) -> Result<Proxy, String> {
        let s = s.trim();
        if let Ok(net) = s.parse::<IpNet>() {
            return Ok(Proxy(net));
        }
        s.parse::<IpAddr>()
            .map(|a| Proxy(IpNet::from(a)))
            .map_err(|_| format!("`{s}` is not an IP address or CIDR range"))
    }
}

impl fmt::Display for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// `serde_as` adapter: a number or boolean written natively in TOML, or as text in the environment
/// and flags (`"10"`, `"true"`); text is parsed with `FromStr` and a bad one names the value.
pub struct Scalar;

impl<'de, T> DeserializeAs<'de, T> for Scalar
where
    T: FromStr,
    T::Err: fmt::Display,
{
    fn deserialize_as<D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Int(i64),
            Text(String),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Bool(b) => b.to_string(),
            Raw::Int(i) => i.to_string(),
            Raw::Text(s) => s,
        };
        let t = text.trim();
        t.parse()
            .map_err(|e| de::Error::custom(format!("`{t}` is not a valid value: {e}")))
    }
}

impl<T: Serialize> SerializeAs<T> for Scalar {
    fn serialize_as<S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        v.serialize(s)
    }
}

/// `serde_as` adapter: a duration with a unit (`"250ms"`, `"30s"`, `"2m"`, `"1h 30m"`), read
/// and written by `humantime`, whose errors say what is missing.
pub struct Dur;

impl<'de> DeserializeAs<'de, Duration> for Dur {
    fn deserialize_as<D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(s.trim()).map_err(de::Error::custom)
    }
}

/// A duration with a unit; the error says what is wrong and how to write one.
fn parse_duration(t: &str) -> Result<Duration, String> {
    humantime::parse_duration(t).map_err(|e| {
        format!("`{t}` is not a duration ({e}); write e.g. \"250ms\", \"30s\", \"2m\"")
    })
}

impl SerializeAs<Duration> for Dur {
    fn serialize_as<S: Serializer>(v: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*v).to_string())
    }
}

/// `serde_as` adapter: an optional [`Dur`]; empty text means unset.
pub struct OptDur;

impl<'de> DeserializeAs<'de, Option<Duration>> for OptDur {
    fn deserialize_as<D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s = String::deserialize(d)?;
        let t = s.trim();
        if t.is_empty() {
            return Ok(None);
        }
        parse_duration(t).map(Some).map_err(de::Error::custom)
    }
}

impl SerializeAs<Option<Duration>> for OptDur {
    fn serialize_as<S: Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        let text = v.map(|d| humantime::format_duration(d).to_string());
        s.serialize_str(&text.unwrap_or_default())
    }
}

/// A value written as plain text (paths, secrets): what [`Unset`] needs to read and write it.
pub trait Text: Sized {
    /// The value of non-empty text.
    fn from_text(s: &str) -> Self;
    /// The text form.
    fn to_text(&self) -> String;
}

impl Text for std::path::PathBuf {
    fn from_text(s: &str) -> Self {
        s.into()
    }
    fn to_text(&self) -> String {
        self.display().to_string()
    }
}

impl Text for String {
    fn from_text(s: &str) -> Self {
        s.to_string()
    }
    fn to_text(&self) -> String {
        self.clone()
    }
}

impl Text for Secret {
    fn from_text(s: &str) -> Self {
        Secret(s.to_string())
    }
    fn to_text(&self) -> String {
        "***".into()
    }
}

/// `serde_as` adapter: an optional text value where empty text means unset, so an environment
/// variable or flag can clear what the file set.
pub struct Unset;

impl<'de, T: Text> DeserializeAs<'de, Option<T>> for Unset {
    fn deserialize_as<D: Deserializer<'de>>(d: D) -> Result<Option<T>, D::Error> {
        let s = String::deserialize(d)?;
        let s = s.trim();
        Ok((!s.is_empty()).then(|| T::from_text(s)))
    }
}

impl<T: Text> SerializeAs<Option<T>> for Unset {
    fn serialize_as<S: Serializer>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.as_ref().map(Text::to_text).unwrap_or_default())
    }
}

/// `serde_as` adapter: an optional secret that is either absent or non-empty. An empty value
/// (`TETHER_API_KEY=`) is an error rather than "no key", so a template that forgot to fill a
/// secret in never silently turns protection off.
pub struct SecretText;

impl<'de> DeserializeAs<'de, Option<Secret>> for SecretText {
    fn deserialize_as<D: Deserializer<'de>>(d: D) -> Result<Option<Secret>, D::Error> {
        let s = String::deserialize(d)?;
        let t = s.trim();
        if t.is_empty() {
            return Err(de::Error::custom(
                "is empty; an empty secret would mean none: set a value or leave the key out",
            ));
        }
        Ok(Some(Secret(t.to_string())))
    }
}

impl SerializeAs<Option<Secret>> for SecretText {
    fn serialize_as<S: Serializer>(v: &Option<Secret>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.as_ref().map(Text::to_text).unwrap_or_default())
    }
}

/// `serde_as` adapter: a list read from a sequence or from comma-separated text, items trimmed
/// and parsed with `FromStr`, empty items skipped; written as a sequence of strings.
pub struct CommaList;

impl<'de, T> DeserializeAs<'de, Vec<T>> for CommaList
where
    T: FromStr,
    T::Err: fmt::Display,
{
    fn deserialize_as<D: Deserializer<'de>>(d: D) -> Result<Vec<T>, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T> Visitor<'de> for V<T>
        where
            T: FromStr,
            T::Err: fmt::Display,
        {
            type Value = Vec<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list, or comma-separated text")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Vec<T>, E> {
                s.split(',').filter_map(|p| item(p).transpose()).collect()
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    out.extend(item(&s)?);
                }
                Ok(out)
            }
        }
        fn item<T, E>(s: &str) -> Result<Option<T>, E>
        where
            T: FromStr,
            T::Err: fmt::Display,
            E: de::Error,
        {
            let s = s.trim();
            if s.is_empty() {
                return Ok(None);
            }
            s.parse().map(Some).map_err(E::custom)
        }
        d.deserialize_any(V(PhantomData))
    }
}

impl<T: fmt::Display> SerializeAs<Vec<T>> for CommaList {
    fn serialize_as<S: Serializer>(v: &Vec<T>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(ToString::to_string))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_ranges_and_bare_addresses() {
        let net: Proxy = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains("10.1.200.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.0.9".parse().unwrap()));
        let one: Proxy = "127.0.0.1".parse().unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Proxy>().is_err());
        assert!("nonsense".parse::<Proxy>().is_err());
        let all: Proxy = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
    }

    #[test]
    fn secrets_do_not_print() {
        assert_eq!(format!("{:?}", Secret("hunter2".into())), "Secret(***)");
    }
}
