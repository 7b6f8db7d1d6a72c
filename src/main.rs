//! The `tether` binary: flags → config → logger → server → exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// mimalloc's size-class pages hold tokio's 128-byte-aligned task cells without the leftover
/// fragments glibc's memalign leaves beside each one: about 20% less memory per connection.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use tether::config::{Config, Raw};

/// A WebSocket connection server: heartbeat-supervised sessions and an HTTP push API.
///
/// Every setting can come from the TOML file (--config), a TETHER_<KEY> environment variable or
/// a flag; later ones win (file < env < flag). Durations take a unit: "250ms", "30s", "2m".
#[derive(Parser)]
#[command(name = "tether", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Serve (the default when no subcommand is given).
    Serve,
}

/// Server settings; each flag overrides the environment, which overrides the file.
#[derive(Args)]
struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, env = "TETHER_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to bind [default: 127.0.0.1:8080]; port 0 picks a free port.
    #[arg(long, env = "TETHER_LISTEN", value_name = "ADDR")]
    listen: Option<String>,
    /// WebSocket upgrade path [default: /ws].
    #[arg(long, env = "TETHER_WS_PATH", value_name = "PATH")]
    ws_path: Option<String>,
    /// Server Ping period, advertised in `welcome` [default: 30s].
    #[arg(long, env = "TETHER_HEARTBEAT_INTERVAL", value_name = "DURATION")]
    heartbeat_interval: Option<String>,
    /// Silence after which a session is evicted with close 4001 [default: 60s].
    #[arg(long, env = "TETHER_HEARTBEAT_TIMEOUT", value_name = "DURATION")]
    heartbeat_timeout: Option<String>,
    /// How often the reaper looks for silent sessions [default: 1s].
    #[arg(long, env = "TETHER_REAP_INTERVAL", value_name = "DURATION")]
    reap_interval: Option<String>,
    /// Most concurrent sessions; 0 = file-descriptor limit minus a reserve [default: 0].
    #[arg(long, env = "TETHER_MAX_CONNECTIONS", value_name = "N")]
    max_connections: Option<String>,
    /// Most concurrent sessions per client address; 0 = unlimited [default: 0].
    #[arg(long, env = "TETHER_MAX_CONNECTIONS_PER_IP", value_name = "N")]
    max_connections_per_ip: Option<String>,
    /// Largest inbound message and frame in bytes; larger ones close with 1009 [default: 65536].
    #[arg(long, env = "TETHER_MAX_MESSAGE_SIZE", value_name = "BYTES")]
    max_message_size: Option<String>,
    /// Frames queued per session before it is closed as a slow consumer (4003) [default: 1024].
    #[arg(long, env = "TETHER_SEND_QUEUE", value_name = "N")]
    send_queue: Option<String>,
    /// Refuse upgrades without a client id [default: true].
    #[arg(long, env = "TETHER_REQUIRE_CLIENT_ID", value_name = "BOOL")]
    require_client_id: Option<String>,
    /// When set, /api/* needs `Authorization: Bearer <key>`.
    #[arg(
        long,
        env = "TETHER_API_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    api_key: Option<String>,
    /// Allow clients to `publish` to channels [default: false].
    #[arg(long, env = "TETHER_CLIENT_PUBLISH", value_name = "BOOL")]
    client_publish: Option<String>,
    /// `drain` (tell clients, wait, then 1001) or `restart` (close all with 1012) [default: drain].
    #[arg(long, env = "TETHER_SHUTDOWN_MODE", value_name = "MODE")]
    shutdown_mode: Option<String>,
    /// Longest drain before the rest are closed [default: 30s].
    #[arg(long, env = "TETHER_SHUTDOWN_TIMEOUT", value_name = "DURATION")]
    shutdown_timeout: Option<String>,
    /// Comma-separated addresses or CIDR ranges whose X-Forwarded-For / X-Real-IP is believed.
    #[arg(long, env = "TETHER_TRUSTED_PROXIES", value_name = "LIST")]
    trusted_proxies: Option<String>,
    /// Comma-separated Origin values allowed to upgrade; empty = any [default: empty].
    #[arg(long, env = "TETHER_ALLOWED_ORIGINS", value_name = "LIST")]
    allowed_origins: Option<String>,
    /// Serve the demo page at / and the browser client at /tether.js [default: true].
    #[arg(long, env = "TETHER_DEMO_PAGE", value_name = "BOOL")]
    demo_page: Option<String>,
    /// PEM certificate chain; with --tls-key, serve https:// and wss:// directly.
    #[arg(long, env = "TETHER_TLS_CERT", value_name = "FILE")]
    tls_cert: Option<String>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "TETHER_TLS_KEY", value_name = "FILE")]
    tls_key: Option<String>,
}

impl ServeArgs {
    /// The settings given by env or flag, by configuration key.
    fn overrides(&self) -> [(&'static str, &Option<String>); 19] {
        [
            ("listen", &self.listen),
            ("ws_path", &self.ws_path),
            ("heartbeat_interval", &self.heartbeat_interval),
            ("heartbeat_timeout", &self.heartbeat_timeout),
            ("reap_interval", &self.reap_interval),
            ("max_connections", &self.max_connections),
            ("max_connections_per_ip", &self.max_connections_per_ip),
            ("max_message_size", &self.max_message_size),
            ("send_queue", &self.send_queue),
            ("require_client_id", &self.require_client_id),
            ("api_key", &self.api_key),
            ("client_publish", &self.client_publish),
            ("shutdown_mode", &self.shutdown_mode),
            ("shutdown_timeout", &self.shutdown_timeout),
            ("trusted_proxies", &self.trusted_proxies),
            ("allowed_origins", &self.allowed_origins),
            ("demo_page", &self.demo_page),
            ("tls_cert", &self.tls_cert),
            ("tls_key", &self.tls_key),
        ]
    }

    fn load(&self) -> Result<Config, tether::config::ConfigError> {
        let mut config = Config::default();
        if let Some(path) = &self.config {
            config.apply_file(path)?;
        }
        for (key, value) in self.overrides() {
            if let Some(v) = value {
                config.set(key, &Raw::Str(v.clone()))?;
            }
        }
        config.validate()?;
        Ok(config)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match cli.command {
        None | Some(Command::Serve) => serve(&cli.serve),
    }
}

fn serve(args: &ServeArgs) -> ExitCode {
    let config = match args.load() {
        Ok(c) => c,
        Err(e) => {
            log::error!("configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            log::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let listener = match tether::bind(config.listen) {
            Ok(l) => l,
            Err(e) => {
                log::error!("listen: cannot bind {}: {e}", config.listen);
                return ExitCode::FAILURE;
            }
        };
        let server = match tether::Server::new(config) {
            Ok(s) => s,
            Err(e) => {
                log::error!("configuration error: {e}");
                return ExitCode::from(2);
            }
        };
        let (trigger, signal) = tether::shutdown::channel();
        if let Err(e) = tether::shutdown::forward_os_signals(trigger) {
            log::error!("cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
        match server.run(listener, signal).await {
            Ok(tether::Stopped::Clean) => ExitCode::SUCCESS,
            Ok(tether::Stopped::Forced) => ExitCode::from(130),
            Err(e) => {
                log::error!("server error: {e}");
                ExitCode::FAILURE
            }
        }
    })
}
