//! Where settings come from and how they are layered: the TOML file, then `TETHER_*` variables,
//! then flags. All three land in one TOML table (environment and flag values as text, which every
//! key's type also reads), which serde turns into a [`Config`] once, so a bad value is reported
//! with its key and the source it came from.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use super::{Config, KEYS};

/// Prefix of the environment variables that set keys.
pub const ENV_PREFIX: &str = "TETHER_";
/// The variable naming the config file; it is not a key itself.
pub const ENV_CONFIG: &str = "TETHER_CONFIG";

/// A configuration error; the message always names the key or the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// The settings of one start, lowest precedence first.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    /// The TOML file (`--config` / `TETHER_CONFIG`).
    pub file: Option<PathBuf>,
    /// `(key, value)` pairs from `TETHER_<KEY>` variables.
    pub env: Vec<(String, String)>,
    /// `(key, value)` pairs from command-line flags.
    pub flags: Vec<(String, String)>,
}

impl Sources {
    /// Picks the `TETHER_*` variables out of `vars`; an unknown one is an error, like an unknown
    /// key in the file, so a typo never goes unnoticed.
    pub fn env_from(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Vec<(String, String)>, ConfigError> {
        let mut out = Vec::new();
        for (name, value) in vars {
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            if name == ENV_CONFIG {
                continue;
            }
            let key = rest.to_ascii_lowercase();
            if !KEYS.contains(&key.as_str()) {
                return Err(ConfigError(format!(
                    "{name}: unknown configuration key `{key}` (known keys: {})",
                    KEYS.join(", ")
                )));
            }
            out.push((key, value));
        }
        // Stable order, so the same environment always gives the same error first.
        out.sort();
        Ok(out)
    }

    /// Reads the file, layers the environment and the flags over it, and validates the result.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let mut table = toml::Table::new();
        let mut origin: HashMap<String, String> = HashMap::new();
        if let Some(path) = &self.file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ConfigError(format!("config file {}: {e}", path.display())))?;
            table = text
                .parse()
                .map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
            for key in table.keys() {
                origin.insert(key.clone(), format!("in {}", path.display()));
            }
        }
        for (key, value) in &self.env {
            let var = format!("{ENV_PREFIX}{}", key.to_ascii_uppercase());
            table.insert(key.clone(), toml::Value::String(value.clone()));
            origin.insert(key.clone(), format!("from {var}"));
        }
        for (key, value) in &self.flags {
            table.insert(key.clone(), toml::Value::String(value.clone()));
            origin.insert(key.clone(), format!("from --{}", key.replace('_', "-")));
        }
        let config = from_table(table, &origin)?;
        config.validate()?;
        Ok(config)
    }
}

impl Config {
    /// This configuration's defaults with `pairs` applied as if given by flags, validated: for
    /// tests and embedding code that set a few keys by name.
    pub fn with(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Sources {
            flags: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Sources::default()
        }
        .load()
    }

    /// Reads a TOML document (defaults for what it leaves out), without validation.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let table: toml::Table = text
            .parse()
            .map_err(|e| ConfigError(format!("{}: {e}", origin.display())))?;
        let from = table
            .keys()
            .map(|k| (k.clone(), format!("in {}", origin.display())))
            .collect();
        from_table(table, &from)
    }

    /// The default of `key` as written in a TOML file (`"30s"`, `1024`, `[]`), or `None` when
    /// it is unset by default; `--help` shows these, so they come from the same constants.
    pub fn default_text(key: &str) -> Option<String> {
        let table = toml::Table::try_from(Config::default()).ok()?;
        match table.get(key)? {
            toml::Value::String(s) if s.is_empty() => None,
            toml::Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        }
    }
}

fn from_table(table: toml::Table, origin: &HashMap<String, String>) -> Result<Config, ConfigError> {
    serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
        let key = e.path().to_string();
        // The TOML layer appends "in `key`" lines of its own; the key is named once, below.
        let inner = e.into_inner().to_string();
        let inner = inner.lines().next().unwrap_or_default().trim().to_string();
        // serde names an unknown key only in its message; the path is then the top level.
        let key = if key == "." {
            unknown_key(&inner).unwrap_or_default()
        } else {
            key
        };
        let from = origin
            .get(&key)
            .map(|o| format!(" ({o})"))
            .unwrap_or_default();
        if key.is_empty() {
            ConfigError(format!("{inner}{from}"))
        } else {
            ConfigError(format!("{key}: {inner}{from}"))
        }
    })
}

/// The key named in serde's "unknown field `x`" message.
fn unknown_key(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split('`').next().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn flags(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::with(pairs)
    }

    #[test]
    fn durations_need_units() {
        let c = flags(&[("heartbeat_interval", "250ms")]).unwrap();
        assert_eq!(c.heartbeat_interval, Duration::from_millis(250));
        let c = flags(&[("shutdown_timeout", "2m")]).unwrap();
        assert_eq!(c.shutdown_timeout, Duration::from_secs(120));
        let e = flags(&[("heartbeat_timeout", "30")]).unwrap_err();
        assert!(e.0.starts_with("heartbeat_timeout:"), "{e}");
        assert!(e.0.contains("unit"), "{e}");
    }

    #[test]
    fn bad_values_name_the_key_and_source() {
        let e = flags(&[("heartbeat_timeout", "soon")]).unwrap_err();
        assert!(e.0.starts_with("heartbeat_timeout:"), "{e}");
        assert!(e.0.contains("--heartbeat-timeout"), "{e}");
        let e = flags(&[("send_queue", "-1")]).unwrap_err();
        assert!(e.0.starts_with("send_queue:"), "{e}");
        let e = Sources::env_from([("TETHER_NOPE".to_string(), "1".to_string())]).unwrap_err();
        assert!(e.0.contains("`nope`"), "{e}");
        let env = Sources::env_from([
            ("TETHER_SEND_QUEUE".to_string(), "lots".to_string()),
            ("TETHER_CONFIG".to_string(), "x.toml".to_string()),
            ("HOME".to_string(), "/root".to_string()),
        ])
        .unwrap();
        let e = Sources {
            env,
            ..Sources::default()
        }
        .load()
        .unwrap_err();
        assert!(e.0.starts_with("send_queue:"), "{e}");
        assert!(e.0.contains("TETHER_SEND_QUEUE"), "{e}");
    }

    #[test]
    fn toml_types_and_unknown_keys() {
        let c = Config::from_toml(
            "heartbeat_interval = \"5s\"\nmax_connections = 10\nclient_publish = true\n\
             trusted_proxies = [\"10.0.0.0/8\", \"::1\"]",
            Path::new("t.toml"),
        )
        .unwrap();
        assert_eq!(c.heartbeat_interval, Duration::from_secs(5));
        assert_eq!(c.max_connections, 10);
        assert!(c.client_publish);
        assert_eq!(c.trusted_proxies.len(), 2);
        let e = Config::from_toml("heartbeat_timout = \"5s\"", Path::new("t.toml")).unwrap_err();
        assert!(e.0.contains("heartbeat_timout"), "{e}");
        let e = Config::from_toml("max_message_size = \"big\"", Path::new("t.toml")).unwrap_err();
        assert!(e.0.starts_with("max_message_size:"), "{e}");
        assert!(e.0.contains("t.toml"), "{e}");
    }

    #[test]
    fn lists_from_text_and_empty_means_unset() {
        let c = flags(&[
            ("trusted_proxies", "127.0.0.1, 10.0.0.0/8,"),
            ("allowed_origins", "https://a.example, https://b.example"),
            ("tls_cert", ""),
        ])
        .unwrap();
        assert_eq!(c.trusted_proxies.len(), 2);
        assert_eq!(c.allowed_origins[1], "https://b.example");
        assert!(c.tls_cert.is_none());
        let e = flags(&[("trusted_proxies", "10.0.0.0/33")]).unwrap_err();
        assert!(e.0.starts_with("trusted_proxies:"), "{e}");
    }

    #[test]
    fn help_defaults_are_the_real_defaults() {
        assert_eq!(
            Config::default_text("heartbeat_interval").as_deref(),
            Some("30s")
        );
        assert_eq!(Config::default_text("send_queue").as_deref(), Some("1024"));
        assert_eq!(
            Config::default_text("listen").as_deref(),
            Some("127.0.0.1:8080")
        );
        assert_eq!(Config::default_text("api_key"), None);
        // Each text `--help` shows, given back as a flag, is the default itself.
        let defaults = toml::Table::try_from(Config::default()).unwrap();
        for key in KEYS {
            let Some(text) = Config::default_text(key) else {
                continue;
            };
            let given = match defaults[*key] {
                toml::Value::Array(_) => continue,
                _ => flags(&[(key, &text)]).unwrap(),
            };
            let given = toml::Table::try_from(given).unwrap();
            assert_eq!(given[*key], defaults[*key], "{key} = {text}");
        }
    }
}
