//! Sending one lane's events: an HTTP client with timeouts (hyper's, with rustls for https),
//! the `X-Tether-Event-Id` and `X-Tether-Signature` headers, and retries with backoff.
//!
//! The signature is `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">` (docs/protocol.md §13):
//! the timestamp is signed with the body, so a captured request cannot be replayed after a
//! receiver's staleness window, and it is the time of each attempt, so a retry after a long
//! outage is not stale. The event id stays the same across attempts: it is how a receiver
//! drops a repeat within the window.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::lane::Lane;
use crate::config::Secret;
use crate::metrics::WebhookStats as Stats;
use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use http_body_util::Full;
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use sha2::Sha256;

/// Longest one attempt may take, connect included.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// First pause after a failed attempt; it doubles up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest pause between attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Posts events to the webhook URL.
pub struct Sender {
    /// Keep-alive client for http and https.
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// `webhook_url`.
    url: Uri,
    /// `webhook_secret`, for the signature.
    secret: Option<Secret>,
    /// `webhook_retry_for`.
    retry_for: Duration,
}

impl Sender {
    /// A sender for `url`; errors name `webhook_url`.
    pub fn new(url: &str, secret: Option<Secret>, retry_for: Duration) -> Result<Sender, String> {
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("webhook_url: `{url}` is not a URL: {e}"))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(format!(
                "webhook_url: `{url}` must be an http:// or https:// URL"
            ));
        }
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let tls = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(provider)
            .map_err(|e| format!("webhook_url: TLS setup failed: {e}"))?
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Sender {
            client: Client::builder(TokioExecutor::new()).build(tls),
            url: uri,
            secret,
            retry_for,
        })
    }

    /// `t=<t>,v1=<hex HMAC-SHA256 of "<t>.<body>">` with the secret.
    pub fn signature(secret: &Secret, t: u64, body: &[u8]) -> Option<String> {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.0.as_bytes()).ok()?;
        mac.update(t.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        let digest = mac.finalize().into_bytes();
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        Some(format!("t={t},v1={hex}"))
    }

    /// One attempt of the event `id`; Ok only for a 2xx answer.
    async fn attempt(&self, id: &str, body: &Bytes) -> Result<(), String> {
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(self.url.clone())
            .header("content-type", "application/json")
            .header("user-agent", concat!("tether/", env!("CARGO_PKG_VERSION")))
            .header("x-tether-event-id", id);
        let t = crate::clock::unix_now();
        if let Some(sig) = self
            .secret
            .as_ref()
            .and_then(|s| Self::signature(s, t, body))
        {
            req = req.header("x-tether-signature", sig);
        }
        let req = req
            .body(Full::new(body.clone()))
            .map_err(|e| format!("request: {e}"))?;
        let res = tokio::time::timeout(ATTEMPT_TIMEOUT, self.client.request(req))
            .await
            .map_err(|_| format!("no answer within {ATTEMPT_TIMEOUT:?}"))?
            .map_err(|e| e.to_string())?;
        if res.status().is_success() {
            Ok(())
        } else {
            Err(format!("answered {}", res.status()))
        }
    }
}

/// One lane: sends its events one at a time, in order, each retried until it is delivered or
/// `webhook_retry_for` has passed since its first attempt.
pub async fn lane(lane: Arc<Lane>, sender: Arc<Sender>, stats: Arc<Stats>) {
    loop {
        let (id, body) = lane.pop().await;
        // 32 hex digits: a random per-process half and a counter (see `Webhooks::send`).
        let id = format!("{id:032x}");
        let first = Instant::now();
        let mut pause = BACKOFF_MIN;
        loop {
            match sender.attempt(&id, &body).await {
                Ok(()) => {
                    stats.delivered.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Err(e) => {
                    stats.failed_attempts.fetch_add(1, Ordering::Relaxed);
                    if first.elapsed() + pause > sender.retry_for {
                        stats.dropped_expired.fetch_add(1, Ordering::Relaxed);
                        log::warn!(
                            "webhook: giving up an event after {:?}: {e}",
                            first.elapsed()
                        );
                        break;
                    }
                    log::debug!("webhook attempt failed ({e}); retrying in {pause:?}");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(BACKOFF_MAX);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_the_hex_hmac_of_the_timestamp_dot_body() {
        // The receiver's side of the contract: the HMAC of exactly "<t>.<body>".
        let secret = Secret("Jefe".into());
        let sig = Sender::signature(&secret, 1_700_000_000, b"{}");
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"1700000000.{}");
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(sig, Some(format!("t=1700000000,v1={hex}")));
        let other = Sender::signature(&secret, 1_700_000_001, b"{}");
        assert_ne!(sig, other, "the timestamp is signed");
    }

    #[test]
    fn urls_are_checked() {
        let d = Duration::from_secs(1);
        let err = |url: &str| Sender::new(url, None, d).err().unwrap_or_default();
        assert!(err("ftp://x").starts_with("webhook_url:"));
        assert!(err("not a url").starts_with("webhook_url:"));
        assert!(Sender::new("http://127.0.0.1:9/hook", None, d).is_ok());
    }
}
