//! Server configuration: built-in defaults < TOML file < `TETHER_*` environment < command-line flags.
//!
//! Every key is set through one string-typed entry point ([`Config::set`]) so that the file, the
//! environment and the flags share one parser and one set of error messages naming the key.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default bind address: loopback, so a bare `tether` is never exposed by accident.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default WebSocket upgrade path.
pub const DEFAULT_WS_PATH: &str = "/ws";
/// Default server Ping period, advertised to clients in `welcome`.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(30);
/// Default silence after which a session is evicted with 4001.
pub const DEFAULT_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(60);
/// Default period of the reaper's scan.
pub const DEFAULT_REAP_INTERVAL: Duration = Duration::from_secs(1);
/// Default largest inbound message and frame, in bytes.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 * 1024;
/// Default number of frames queued per session before it counts as a slow consumer.
pub const DEFAULT_SEND_QUEUE: usize = 1024;
/// Default longest drain on shutdown.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// File descriptors kept back from `max_connections = 0` for the listener, logs, HTTP API calls.
pub const FD_RESERVE: u64 = 100;

/// Every configuration key, in documentation order.
pub const KEYS: &[&str] = &[
    "listen",
    "ws_path",
    "heartbeat_interval",
    "heartbeat_timeout",
    "reap_interval",
    "max_connections",
    "max_connections_per_ip",
    "max_message_size",
    "send_queue",
    "require_client_id",
    "api_key",
    "client_publish",
    "shutdown_mode",
    "shutdown_timeout",
    "trusted_proxies",
    "allowed_origins",
    "demo_page",
    "tls_cert",
    "tls_key",
];

/// What to do with live sessions on SIGTERM/SIGINT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownMode {
    /// Tell every session `shutdown`, wait for them to leave, close the rest with 1001.
    Drain,
    /// Close every session at once with 1012 so clients reconnect to another node.
    Restart,
}

impl ShutdownMode {
    /// The name used in configuration and in the `shutdown` message.
    pub fn as_str(self) -> &'static str {
        match self {
            ShutdownMode::Drain => "drain",
            ShutdownMode::Restart => "restart",
        }
    }
}

/// An address range (`10.0.0.0/8`, `::1/128`, or a bare address) whose forwarded headers are trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// Network address.
    addr: IpAddr,
    /// Prefix length in bits.
    prefix: u8,
}

impl Cidr {
    /// Parses `addr` or `addr/prefix`.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` is not an IP address or CIDR range"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => match p.trim().parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("`{s}` has a bad prefix length (0..={max})")),
            },
        };
        Ok(Cidr { addr, prefix })
    }

    /// True when `ip` lies in this range (IPv4-mapped IPv6 addresses match IPv4 ranges).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => mask_eq(&net.octets(), &ip.octets(), self.prefix),
            (IpAddr::V6(net), IpAddr::V6(ip)) => mask_eq(&net.octets(), &ip.octets(), self.prefix),
            _ => false,
        }
    }
}

fn mask_eq(a: &[u8], b: &[u8], prefix: u8) -> bool {
    let full = (prefix / 8) as usize;
    let rem = prefix % 8;
    if a[..full] != b[..full] {
        return false;
    }
    if rem == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rem);
    a[full] & mask == b[full] & mask
}

/// The API key; its `Debug` never prints the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The whole server configuration; see README "Configuration" for each key.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to bind; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Upgrade path for WebSocket clients.
    pub ws_path: String,
    /// Server Ping period, also advertised to clients.
    pub heartbeat_interval: Duration,
    /// Silence after which a session is evicted.
    pub heartbeat_timeout: Duration,
    /// How often the reaper scans for silent sessions.
    pub reap_interval: Duration,
    /// Most concurrent sessions; 0 derives it from the file-descriptor limit.
    pub max_connections: usize,
    /// Most concurrent sessions from one client address; 0 = no per-address limit.
    pub max_connections_per_ip: usize,
    /// Largest inbound message and frame, in bytes.
    pub max_message_size: usize,
    /// Frames queued per session before it is closed as a slow consumer.
    pub send_queue: usize,
    /// Refuse upgrades that carry no client id.
    pub require_client_id: bool,
    /// When set, `/api/*` requires `Authorization: Bearer <key>`.
    pub api_key: Option<Secret>,
    /// Allow clients to `publish` to channels.
    pub client_publish: bool,
    /// Shutdown behaviour for live sessions.
    pub shutdown_mode: ShutdownMode,
    /// Longest drain before the remaining sessions are closed with 1001.
    pub shutdown_timeout: Duration,
    /// Peers whose `X-Forwarded-For` / `X-Real-IP` headers are believed.
    pub trusted_proxies: Vec<Cidr>,
    /// When non-empty, the only `Origin` values allowed to upgrade.
    pub allowed_origins: Vec<String>,
    /// Serve the demo page and browser client at `/` and `/tether.js`.
    pub demo_page: bool,
    /// PEM certificate chain; with `tls_key`, serve HTTPS and `wss://` directly.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key matching `tls_cert`.
    pub tls_key: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: DEFAULT_LISTEN
                .parse()
                .expect("the default listen address is valid"),
            ws_path: DEFAULT_WS_PATH.to_string(),
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            heartbeat_timeout: DEFAULT_HEARTBEAT_TIMEOUT,
            reap_interval: DEFAULT_REAP_INTERVAL,
            max_connections: 0,
            max_connections_per_ip: 0,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            send_queue: DEFAULT_SEND_QUEUE,
            require_client_id: true,
            api_key: None,
            client_publish: false,
            shutdown_mode: ShutdownMode::Drain,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            trusted_proxies: Vec::new(),
            allowed_origins: Vec::new(),
            demo_page: true,
            tls_cert: None,
            tls_key: None,
        }
    }
}

/// A configuration error; the message always names the key or the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// A raw value before it is parsed for its key: lists come as lists from TOML, as commas elsewhere.
#[derive(Debug, Clone)]
pub enum Raw {
    /// A scalar written as text.
    Str(String),
    /// A TOML array.
    List(Vec<String>),
}

impl Raw {
    fn scalar(&self, key: &str) -> Result<&str, ConfigError> {
        match self {
            Raw::Str(s) => Ok(s.trim()),
            Raw::List(_) => Err(ConfigError(format!(
                "{key}: expected a single value, got a list"
            ))),
        }
    }

    fn list(&self) -> Vec<String> {
        match self {
            Raw::Str(s) => s
                .split(',')
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty())
                .collect(),
            Raw::List(v) => v.clone(),
        }
    }
}

/// Parses `"250ms"`, `"30s"`, `"2m"`, `"1h"`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    if num.is_empty() {
        return Err(format!(
            "`{s}` is not a duration (write e.g. \"250ms\", \"30s\", \"2m\")"
        ));
    }
    let n: u64 = num.parse().map_err(|_| format!("`{s}` is too large"))?;
    let ms = match unit.trim() {
        "ms" => Some(n),
        "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        "" => {
            return Err(format!(
                "`{s}` has no unit (write e.g. \"{n}s\" or \"{n}ms\")"
            ));
        }
        u => {
            return Err(format!(
                "`{s}` has an unknown unit `{u}` (use ms, s, m or h)"
            ));
        }
    };
    ms.map(Duration::from_millis)
        .ok_or_else(|| format!("`{s}` is too large"))
}

fn parse_bool(key: &str, s: &str) -> Result<bool, ConfigError> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(ConfigError(format!(
            "{key}: `{s}` is not a boolean (true or false)"
        ))),
    }
}

fn parse_usize(key: &str, s: &str) -> Result<usize, ConfigError> {
    s.parse()
        .map_err(|_| ConfigError(format!("{key}: `{s}` is not a non-negative integer")))
}

fn parse_dur(key: &str, s: &str) -> Result<Duration, ConfigError> {
    parse_duration(s).map_err(|e| ConfigError(format!("{key}: {e}")))
}

impl Config {
    /// Sets one key from a raw value, with an error that names the key.
    pub fn set(&mut self, key: &str, raw: &Raw) -> Result<(), ConfigError> {
        match key {
            "trusted_proxies" => {
                self.trusted_proxies = raw
                    .list()
                    .iter()
                    .map(|s| Cidr::parse(s).map_err(|e| ConfigError(format!("{key}: {e}"))))
                    .collect::<Result<_, _>>()?;
                return Ok(());
            }
            "allowed_origins" => {
                self.allowed_origins = raw.list();
                return Ok(());
            }
            _ => {}
        }
        let s = raw.scalar(key)?;
        match key {
            "listen" => {
                self.listen = s.parse().map_err(|_| {
                    ConfigError(format!(
                        "listen: `{s}` is not an address like 127.0.0.1:8080"
                    ))
                })?
            }
            "ws_path" => self.ws_path = s.to_string(),
            "heartbeat_interval" => self.heartbeat_interval = parse_dur(key, s)?,
            "heartbeat_timeout" => self.heartbeat_timeout = parse_dur(key, s)?,
            "reap_interval" => self.reap_interval = parse_dur(key, s)?,
            "max_connections" => self.max_connections = parse_usize(key, s)?,
            "max_connections_per_ip" => self.max_connections_per_ip = parse_usize(key, s)?,
            "max_message_size" => self.max_message_size = parse_usize(key, s)?,
            "send_queue" => self.send_queue = parse_usize(key, s)?,
            "require_client_id" => self.require_client_id = parse_bool(key, s)?,
            "api_key" => self.api_key = (!s.is_empty()).then(|| Secret(s.to_string())),
            "client_publish" => self.client_publish = parse_bool(key, s)?,
            "shutdown_mode" => {
                self.shutdown_mode = match s {
                    "drain" => ShutdownMode::Drain,
                    "restart" => ShutdownMode::Restart,
                    _ => {
                        return Err(ConfigError(format!(
                            "shutdown_mode: `{s}` is not one of drain, restart"
                        )));
                    }
                }
            }
            "shutdown_timeout" => self.shutdown_timeout = parse_dur(key, s)?,
            "demo_page" => self.demo_page = parse_bool(key, s)?,
            "tls_cert" => self.tls_cert = (!s.is_empty()).then(|| PathBuf::from(s)),
            "tls_key" => self.tls_key = (!s.is_empty()).then(|| PathBuf::from(s)),
            _ => return Err(unknown_key(key)),
        }
        Ok(())
    }

    /// Applies a TOML document; unknown keys and wrong types name the key.
    pub fn apply_toml(&mut self, text: &str, origin: &Path) -> Result<(), ConfigError> {
        let table: toml::Table = text
            .parse()
            .map_err(|e| ConfigError(format!("{}: {e}", origin.display())))?;
        for (key, value) in &table {
            let raw = match value {
                toml::Value::String(s) => Raw::Str(s.clone()),
                toml::Value::Integer(i) => Raw::Str(i.to_string()),
                toml::Value::Boolean(b) => Raw::Str(b.to_string()),
                toml::Value::Array(items) => Raw::List(
                    items
                        .iter()
                        .map(|v| match v {
                            toml::Value::String(s) => Ok(s.clone()),
                            other => Err(ConfigError(format!(
                                "{key}: list items must be strings, got {}",
                                other.type_str()
                            ))),
                        })
                        .collect::<Result<_, _>>()?,
                ),
                other => {
                    if !KEYS.contains(&key.as_str()) {
                        return Err(unknown_key(key));
                    }
                    return Err(ConfigError(format!(
                        "{key}: unsupported value type {}",
                        other.type_str()
                    )));
                }
            };
            self.set(key, &raw)
                .map_err(|e| ConfigError(format!("{} ({})", e.0, origin.display())))?;
        }
        Ok(())
    }

    /// Reads and applies a TOML file.
    pub fn apply_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("config file {}: {e}", path.display())))?;
        self.apply_toml(&text, path)
    }

    /// Checks relations between keys; run once after every source is applied.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |m: String| Err(ConfigError(m));
        if !self.ws_path.starts_with('/') {
            return err(format!("ws_path: `{}` must start with /", self.ws_path));
        }
        if self.ws_path.starts_with("/api/")
            || ["/health", "/metrics", "/", "/tether.js"].contains(&self.ws_path.as_str())
        {
            return err(format!(
                "ws_path: `{}` collides with a built-in route",
                self.ws_path
            ));
        }
        for (key, d) in [
            ("heartbeat_interval", self.heartbeat_interval),
            ("heartbeat_timeout", self.heartbeat_timeout),
            ("reap_interval", self.reap_interval),
        ] {
            if d.is_zero() {
                return err(format!("{key}: must be greater than zero"));
            }
        }
        if self.heartbeat_interval >= self.heartbeat_timeout {
            return err(format!(
                "heartbeat_interval: {:?} must be shorter than heartbeat_timeout {:?}, or clients \
                 that only answer pings would be evicted",
                self.heartbeat_interval, self.heartbeat_timeout
            ));
        }
        if self.max_message_size < 128 {
            return err("max_message_size: must be at least 128 bytes".into());
        }
        if self.send_queue == 0 {
            return err("send_queue: must be at least 1".into());
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => return err("tls_key: required when tls_cert is set".into()),
            (None, Some(_)) => return err("tls_cert: required when tls_key is set".into()),
            _ => {}
        }
        Ok(())
    }

    /// `max_connections`, or when 0 the process's descriptor limit minus a reserve.
    pub fn effective_max_connections(&self) -> usize {
        if self.max_connections > 0 {
            return self.max_connections;
        }
        let limit = fd_limit().unwrap_or(1024);
        limit.saturating_sub(FD_RESERVE).max(1) as usize
    }
}

fn unknown_key(key: &str) -> ConfigError {
    ConfigError(format!(
        "unknown configuration key `{key}` (known keys: {})",
        KEYS.join(", ")
    ))
}

/// The soft RLIMIT_NOFILE of this process.
fn fd_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes into the struct we pass.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    (rc == 0).then_some(lim.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Raw {
        Raw::Str(v.to_string())
    }

    #[test]
    fn durations_need_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("30").unwrap_err().contains("no unit"));
        assert!(parse_duration("3d").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn bad_values_name_the_key() {
        let mut c = Config::default();
        let e = c.set("heartbeat_timeout", &s("soon")).unwrap_err();
        assert!(e.0.starts_with("heartbeat_timeout:"), "{e}");
        let e = c.set("send_queue", &s("-1")).unwrap_err();
        assert!(e.0.starts_with("send_queue:"), "{e}");
        let e = c.set("nope", &s("1")).unwrap_err();
        assert!(e.0.contains("`nope`"), "{e}");
    }

    #[test]
    fn toml_types_and_unknown_keys() {
        let mut c = Config::default();
        c.apply_toml(
            "heartbeat_interval = \"5s\"\nmax_connections = 10\nclient_publish = true\n\
             trusted_proxies = [\"10.0.0.0/8\", \"::1\"]",
            Path::new("t.toml"),
        )
        .unwrap();
        assert_eq!(c.heartbeat_interval, Duration::from_secs(5));
        assert_eq!(c.max_connections, 10);
        assert!(c.client_publish);
        assert_eq!(c.trusted_proxies.len(), 2);
        let e = c
            .apply_toml("heartbeat_timout = \"5s\"", Path::new("t.toml"))
            .unwrap_err();
        assert!(e.0.contains("heartbeat_timout"), "{e}");
        let e = c
            .apply_toml("max_message_size = \"big\"", Path::new("t.toml"))
            .unwrap_err();
        assert!(e.0.contains("max_message_size"), "{e}");
    }

    #[test]
    fn validation_relations() {
        let c = Config {
            heartbeat_interval: Duration::from_secs(60),
            ..Config::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .0
                .starts_with("heartbeat_interval")
        );
        let c = Config {
            tls_cert: Some("a.pem".into()),
            ..Config::default()
        };
        assert!(c.validate().unwrap_err().0.starts_with("tls_key"));
        assert!(Config::default().validate().is_ok());
    }

    #[test]
    fn cidr_matching() {
        let net = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(net.contains("10.1.200.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.0.9".parse().unwrap()));
        let one = Cidr::parse("127.0.0.1").unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("nonsense").is_err());
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
    }
}
