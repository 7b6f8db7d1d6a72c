//! Echo server: every text and binary message is sent back unchanged, with no envelope. Used for
//! RFC 6455 conformance runs (e.g. the Autobahn fuzzing client) against tether's frame handling.
//!
//! Run: `cargo run --release --example echo -- 127.0.0.1:9001`.

use bytes::Bytes;
use tether::{Config, Handled, Handler, Session};

/// Sends every frame back to its sender.
struct Echo;

impl Handler for Echo {
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
    let mut config = Config::default();
    if let Some(addr) = std::env::args().nth(1) {
        config.listen = addr
            .parse()
            .map_err(|_| std::io::Error::other("usage: echo [ADDR]"))?;
    }
    // Conformance suites connect without a client id and send messages up to 16 MiB.
    config.require_client_id = false;
    config.max_message_size = 16 * 1024 * 1024;
    config.shutdown_mode = tether::config::ShutdownMode::Restart;
    let server = tether::Server::with_handler(config.clone(), Echo)?;
    let (trigger, signal) = tether::shutdown::channel();
    tether::shutdown::forward_os_signals(trigger)?;
    server.run(tether::bind(config.listen)?, signal).await?;
    Ok(())
}
