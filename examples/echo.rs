//! Echo server: every text and binary message is sent back unchanged, with no envelope and no
//! welcome. Used for RFC 6455 conformance runs (the Autobahn suite, `scripts/autobahn.sh`)
//! against tether's frame handling.
//!
//! Run: `cargo run --release --example echo -- 127.0.0.1:9001`. It honours the same `TETHER_*`
//! environment variables as the `tether` binary, over its own conformance defaults:
//! `TETHER_COMPRESSION=true` negotiates permessage-deflate (Autobahn chapters 12 and 13).

use bytes::Bytes;
use tether::config::Sources;
use tether::{Handled, Handler, Session};

/// Sends every frame back to its sender.
struct Echo;

impl Handler for Echo {
    fn welcome(&self) -> bool {
        false
    }
    fn on_text(&self, session: &Session<'_>, text: &str) -> Handled {
        session.send_text(text);
        Handled::Yes
    }
    fn on_binary(&self, session: &Session<'_>, data: &Bytes) -> Handled {
        session.send_binary(data.clone());
        Handled::Yes
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    // Conformance suites connect without a client id, send messages up to 16 MiB and
    // thousands of them back to back, and an unsolicited Ping ends an Autobahn case (its
    // compression cases run for minutes): no heartbeat Pings within a run. The environment
    // comes after these, so it wins (`TETHER_COMPRESSION=true` for chapters 12 and 13).
    let mut env: Vec<(String, String)> = [
        ("require_client_id", "false"),
        ("max_message_size", "16777216"),
        ("client_message_rate", "0"),
        ("shutdown_mode", "restart"),
        ("heartbeat_interval", "1h"),
        ("heartbeat_timeout", "2h"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    env.extend(Sources::env_from(std::env::vars()).map_err(std::io::Error::other)?);
    let flags = match std::env::args().nth(1) {
        Some(addr) => vec![("listen".to_string(), addr)],
        None => Vec::new(),
    };
    let config = Sources {
        file: None,
        env,
        flags,
    }
    .load()
    .map_err(std::io::Error::other)?;
    let server = tether::Server::with_handler(config.clone(), Echo)?;
    let (trigger, signal) = tether::shutdown::channel();
    tether::shutdown::forward_os_signals(trigger)?;
    server.run(tether::bind(config.listen)?, signal).await?;
    Ok(())
}
