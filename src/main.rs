//! The `tether` binary: flags → config → logger → server → exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Arg, ArgMatches, Command, value_parser};
use tether::config::{Config, KEY_DOCS, Sources};

/// mimalloc's size-class pages hold tokio's 128-byte-aligned task cells without the leftover
/// fragments glibc's memalign leaves beside each one: about 20% less memory per connection.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `purge_delay` option (its index in `mi_option_t`, the same in v2 and v3).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Has mimalloc give freed pages back at once instead of after its purge delay (1 s in v3). A
/// connect burst frees the HTTP buffers of thousands of handshakes; held back, they stayed
/// resident beside the sessions: 19,000 connections measured 3.7 KiB of RSS each with the delay
/// and 2.4 KiB without, at the same connect rate and CPU.
fn purge_freed_memory_at_once() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        // The operator chose; mimalloc read it already.
        return;
    }
    // SAFETY: sets a plain integer option; mimalloc documents mi_option_set as callable at any
    // time, and nothing else runs yet.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
}

/// Keeps transparent huge pages out of this process. mimalloc asks for them on its arenas, and
/// the kernel then makes resident 2 MiB at a time: each wave of heartbeats touched a few new
/// small pages across the heap and RSS grew by 10 MiB per wave while the live heap grew by
/// 2 MiB. 19,000 held connections measured 66 MiB with huge pages and 38 MiB without. The
/// operator keeps the choice through `MIMALLOC_ALLOW_THP`.
#[cfg(target_os = "linux")]
fn keep_huge_pages_out() -> std::io::Result<()> {
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_some() {
        return Ok(());
    }
    // SAFETY: PR_SET_THP_DISABLE only sets a flag on this process's memory map; it takes no
    // pointers. Huge pages already mapped stay; none are, this early.
    match unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

#[cfg(not(target_os = "linux"))]
fn keep_huge_pages_out() -> std::io::Result<()> {
    Ok(())
}

/// The command line: `--config`, then one flag per configuration key, all made from the key
/// table, so a new key gets its flag, `TETHER_*` name and help default with no edit here.
fn cli() -> Command {
    let mut cmd = Command::new("tether")
        .version(env!("CARGO_PKG_VERSION"))
        .about("A WebSocket connection server: heartbeat-supervised sessions and an HTTP push API.")
        .long_about(
            "A WebSocket connection server: heartbeat-supervised sessions and an HTTP push API.\n\n\
             Every setting can come from the TOML file (--config), a TETHER_<KEY> environment \
             variable or a flag; later ones win (file < env < flag). Durations take a unit: \
             \"250ms\", \"30s\", \"2m\". Lists are comma-separated in env and flags.",
        )
        .arg(
            Arg::new("config")
                .long("config")
                .env("TETHER_CONFIG")
                .value_name("FILE")
                .value_parser(value_parser!(PathBuf))
                .help("TOML configuration file."),
        );
    for key in KEY_DOCS {
        let default = Config::default_text(key.name).unwrap_or_else(|| "unset".into());
        let help = format!(
            "{} [default: {default}] [env: TETHER_{}]",
            key.help,
            key.name.to_ascii_uppercase()
        );
        cmd = cmd.arg(
            Arg::new(key.name)
                .long(key.name.replace('_', "-"))
                .value_name(key.hint)
                .help(help),
        );
    }
    cmd
}

/// The sources of this start: the file, the `TETHER_*` variables, the flags given.
fn sources(m: &ArgMatches) -> Result<Sources, tether::config::ConfigError> {
    let flags = KEY_DOCS
        .iter()
        .filter_map(|k| {
            m.get_one::<String>(k.name)
                .map(|v| (k.name.to_string(), v.clone()))
        })
        .collect();
    Ok(Sources {
        file: m.get_one::<PathBuf>("config").cloned(),
        env: Sources::env_from(std::env::vars())?,
        flags,
    })
}

fn main() -> ExitCode {
    purge_freed_memory_at_once();
    let huge_pages = keep_huge_pages_out();
    let matches = cli().get_matches();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    if let Err(e) = huge_pages {
        log::debug!("transparent huge pages stay allowed: {e}");
    }
    // Before the config: `max_connections = 0` is derived from the limit in force.
    match tether::raise_fd_limit() {
        Ok(n) => log::debug!("open-file limit: {n}"),
        Err(e) => log::warn!("cannot raise the open-file limit: {e}"),
    }
    let config = match sources(&matches).and_then(|s| s.load()) {
        Ok(c) => c,
        Err(e) => {
            log::error!("configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if config.worker_threads > 0 {
        builder.worker_threads(config.worker_threads);
    }
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            log::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(serve(config))
}

async fn serve(config: Config) -> ExitCode {
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
}
