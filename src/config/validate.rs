//! Relations between keys, checked once every source is applied: a config that fails them
//! stops startup with an error naming the key.

use std::time::Duration;

use super::{
    AuthMode, Config, ConfigError, MAX_NODE_ID_LEN, MAX_REDIS_PREFIX_LEN, MIN_CLUSTER_SECRET_LEN,
};

impl Config {
    /// Checks relations between keys; run once after every source is applied.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |m: String| Err(ConfigError(m));
        if !self.ws_path.starts_with('/') {
            return err(format!("ws_path: `{}` must start with /", self.ws_path));
        }
        // Whether it shadows a built-in route is checked where the server is built: http owns
        // the routes, and config asking http would make a cycle.
        for (key, d) in [
            ("heartbeat_interval", self.heartbeat_interval),
            ("heartbeat_timeout", self.heartbeat_timeout),
            ("reap_interval", self.reap_interval),
        ] {
            if d.is_zero() {
                return err(format!("{key}: must be greater than zero"));
            }
        }
        if let Some(id) = &self.node_id {
            let ok = !id.is_empty()
                && id.len() <= MAX_NODE_ID_LEN
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
            if !ok {
                return err(format!(
                    "node_id: `{}` must be 1 to {MAX_NODE_ID_LEN} letters, digits or - _ . :",
                    id.chars().take(80).collect::<String>()
                ));
            }
        }
        if let Some(url) = &self.redis_url
            && let Err(e) = redis::IntoConnectionInfo::into_connection_info(url.0.as_str())
        {
            return err(format!("redis_url: not a Redis URL: {e}"));
        }
        self.validate_sentinels()?;
        if self.cluster_reply_timeout.is_zero() {
            return err("cluster_reply_timeout: must be greater than zero".into());
        }
        if self.node_ttl < Duration::from_secs(1) {
            return err(format!(
                "node_ttl: {:?} is too short; at least 1s, or a busy node would be declared dead",
                self.node_ttl
            ));
        }
        for name in &self.presence_channels {
            let bare = name.strip_suffix('*').unwrap_or(name);
            let bad = if bare.is_empty() && name.ends_with('*') {
                None
            } else {
                crate::id::valid_channel(bare).err()
            };
            if let Some(why) = bad {
                return err(format!(
                    "presence_channels: `{}`: {why}",
                    name.chars().take(80).collect::<String>()
                ));
            }
        }
        if self.heartbeat_interval >= self.heartbeat_timeout {
            return err(format!(
                "heartbeat_interval: {:?} must be shorter than heartbeat_timeout {:?}, or clients \
                 that only answer pings would be evicted",
                self.heartbeat_interval, self.heartbeat_timeout
            ));
        }
        if self
            .max_lifetime
            .is_some_and(|d| d < Duration::from_secs(1))
        {
            return err("max_lifetime: must be at least 1s".into());
        }
        if self.max_message_size < 128 {
            return err("max_message_size: must be at least 128 bytes".into());
        }
        if self.send_queue == 0 {
            return err("send_queue: must be at least 1".into());
        }
        if self.send_queue_bytes < 1024 {
            return err("send_queue_bytes: must be at least 1024".into());
        }
        if self.max_header_size < 1024 {
            return err("max_header_size: must be at least 1024 bytes".into());
        }
        for (secret, file, set_secret, set_file) in [
            (
                "api_key",
                "api_key_file",
                self.api_key.is_some(),
                self.api_key_file.is_some(),
            ),
            (
                "cluster_secret",
                "cluster_secret_file",
                self.cluster_secret.is_some(),
                self.cluster_secret_file.is_some(),
            ),
            (
                "webhook_secret",
                "webhook_secret_file",
                self.webhook_secret.is_some(),
                self.webhook_secret_file.is_some(),
            ),
        ] {
            if set_secret && set_file {
                return err(format!("{file}: set either {secret} or {file}, not both"));
            }
        }
        if !self.listen.ip().is_loopback() && !self.api_key_set() && !self.api_open {
            return err(format!(
                "api_key: listening on {} without an API key would open /api/* to the network; \
                 set api_key (or api_key_file), listen on a loopback address, or set \
                 api_open = true to accept that",
                self.listen
            ));
        }
        if let Some(s) = &self.cluster_secret
            && s.0.len() < MIN_CLUSTER_SECRET_LEN
        {
            return err(format!(
                "cluster_secret: at least {MIN_CLUSTER_SECRET_LEN} bytes (it keys an HMAC)"
            ));
        }
        let prefix_ok = !self.redis_prefix.is_empty()
            && self.redis_prefix.len() <= MAX_REDIS_PREFIX_LEN
            && self
                .redis_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !prefix_ok {
            return err(format!(
                "redis_prefix: `{}` must be 1 to {MAX_REDIS_PREFIX_LEN} letters, digits or - _ .",
                self.redis_prefix.chars().take(80).collect::<String>()
            ));
        }
        if self.http_body_timeout.is_zero() {
            return err("http_body_timeout: must be greater than zero".into());
        }
        if self.history_max_bytes < self.max_message_size {
            return err(format!(
                "history_max_bytes: {} is smaller than max_message_size {}; one message would \
                 not fit",
                self.history_max_bytes, self.max_message_size
            ));
        }
        let key_files = [
            &self.auth_hmac_secret_file,
            &self.auth_public_key_file,
            &self.auth_jwks_file,
        ];
        if self.auth == AuthMode::On && key_files.iter().all(|f| f.is_none()) {
            return err(
                "auth: \"on\" needs auth_hmac_secret_file, auth_public_key_file or auth_jwks_file"
                    .into(),
            );
        }
        if self.history_max_streams == 0 {
            return err("history_max_streams: must be at least 1".into());
        }
        if self.history_size > 0 && self.history_ttl.is_zero() {
            return err("history_ttl: must be greater than zero when history_size is set".into());
        }
        if self.idempotency_window.is_zero() {
            return err("idempotency_window: must be greater than zero".into());
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => return err("tls_key: required when tls_cert is set".into()),
            (None, Some(_)) => return err("tls_cert: required when tls_key is set".into()),
            _ => {}
        }
        Ok(())
    }

    /// At most one way to Redis; sentinels need the master's name and parse as addresses.
    fn validate_sentinels(&self) -> Result<(), ConfigError> {
        let err = |m: String| Err(ConfigError(m));
        let sentinels = !self.redis_sentinels.is_empty();
        if !self.redis_cluster_nodes.is_empty() {
            let other = if self.redis_url.is_some() {
                Some("redis_url")
            } else if sentinels {
                Some("redis_sentinels")
            } else {
                None
            };
            if let Some(other) = other {
                return err(format!(
                    "redis_cluster_nodes: set either {other} or redis_cluster_nodes, not both"
                ));
            }
            for node in &self.redis_cluster_nodes {
                let url = crate::config::sentinel_url(node);
                if redis::IntoConnectionInfo::into_connection_info(url.as_str()).is_err() {
                    return err(format!(
                        "redis_cluster_nodes: {node:?} is not host:port or redis[s]://host:port"
                    ));
                }
            }
            if self.redis_sentinel_master.is_some() {
                return err(
                    "redis_sentinel_master: only with redis_sentinels, not redis_cluster_nodes"
                        .into(),
                );
            }
            return Ok(());
        }
        if sentinels && self.redis_url.is_some() {
            return err(
                "redis_sentinels: set either redis_url (one Redis) or redis_sentinels (a \
                 Sentinel-managed master), not both"
                    .into(),
            );
        }
        match (sentinels, &self.redis_sentinel_master) {
            (true, None) => {
                return err(
                    "redis_sentinel_master: required with redis_sentinels (the name the \
                     sentinels monitor the master under)"
                        .into(),
                );
            }
            (false, Some(_)) => {
                return err("redis_sentinel_master: given without redis_sentinels".into());
            }
            _ => {}
        }
        for s in &self.redis_sentinels {
            let url = super::sentinel_url(s);
            if let Err(e) = redis::IntoConnectionInfo::into_connection_info(url.as_str()) {
                return err(format!(
                    "redis_sentinels: `{s}` is not host:port or a Redis URL: {e}"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

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
    fn a_public_listener_needs_a_key_or_api_open() {
        let public = Config {
            listen: "0.0.0.0:8080".parse().unwrap(),
            ..Config::default()
        };
        assert!(public.validate().unwrap_err().0.starts_with("api_key:"));
        let open = Config {
            api_open: true,
            ..public.clone()
        };
        assert!(open.validate().is_ok());
        let keyed = Config {
            api_key: Some(Secret("k".repeat(20))),
            ..public
        };
        assert!(keyed.validate().is_ok());
    }

    #[test]
    fn redis_prefix_and_cluster_secret_are_checked() {
        assert!(Config::with(&[("redis_prefix", "a b")]).is_err());
        assert!(Config::with(&[("redis_prefix", "app-2")]).is_ok());
        assert!(Config::with(&[("cluster_secret", "short")]).is_err());
        assert!(Config::with(&[("cluster_secret", "sixteen-bytes-ok")]).is_ok());
    }

    #[test]
    fn one_way_to_redis_and_sentinels_need_a_master_name() {
        let both = Config::with(&[
            ("redis_url", "redis://127.0.0.1:6379"),
            ("redis_sentinels", "127.0.0.1:26379"),
            ("redis_sentinel_master", "m"),
        ]);
        let e = both.unwrap_err().0;
        assert!(
            e.contains("redis_url") && e.contains("redis_sentinels"),
            "{e}"
        );
        let nameless = Config::with(&[("redis_sentinels", "127.0.0.1:26379")]);
        assert!(
            nameless
                .unwrap_err()
                .0
                .starts_with("redis_sentinel_master:")
        );
        let ok = Config::with(&[
            (
                "redis_sentinels",
                "127.0.0.1:26379, rediss://u:p@127.0.0.1:26380",
            ),
            ("redis_sentinel_master", "m"),
        ]);
        assert!(ok.is_ok(), "{ok:?}");
        let cluster = Config::with(&[
            ("redis_url", "redis://127.0.0.1:6379"),
            ("redis_cluster_nodes", "127.0.0.1:7000"),
        ]);
        let e = cluster.unwrap_err().0;
        assert!(
            e.contains("redis_url") && e.contains("redis_cluster_nodes"),
            "{e}"
        );
        let ok = Config::with(&[(
            "redis_cluster_nodes",
            "127.0.0.1:7000, rediss://u:p@127.0.0.1:7001",
        )]);
        assert!(ok.is_ok(), "{ok:?}");
        let e = Config::with(&[("redis_cluster_nodes", "127.0.0.1:x")])
            .unwrap_err()
            .0;
        assert!(e.starts_with("redis_cluster_nodes:"), "{e}");
    }
}
