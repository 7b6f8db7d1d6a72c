//! `tether-bench`: the load-test client of tether. Scenarios `hold`, `fanout`, `evict`, `storm`,
//! `connect-load`, `resume`, `presence`, `lobby` and `batch` drive a running server on loopback from several worker processes (this binary re-run as the
//! hidden `tether-bench worker`), each with its own loopback source address, and merge their
//! figures. It speaks only the wire protocol and the HTTP API, so it can load any build of the
//! server, or another server that keeps the same contract.
//!
//! Layout: [`cli`] (the flags), [`target`] (URLs, durations), [`stats`] (histogram, loss
//! accounting), [`proto`] (parent ↔ worker lines), [`fleet`] (worker processes, progress line),
//! [`worker`], [`conn`] and [`raw`] (the clients), [`storm`], [`migrate`] and [`probe`] (their
//! worker sides), [`resume`] and [`batch`] (in-process), [`token`] (JWTs for servers with auth on), [`http`]
//! (API client), [`sys`] (/proc), [`lobby`] and [`lobby_run`] (channel presence), [`run`], [`fanout`], [`connect_load`] and [`migrate_run`] (the
//! scenario drivers), [`timeline`] (reconnects per 100 ms), [`report`] (figures to JSON and text).

use std::process::ExitCode;

use clap::Parser;

mod batch;
mod cli;
mod conn;
mod connect_load;
mod fanout;
mod fleet;
mod http;
mod lobby;
mod lobby_run;
mod migrate;
mod migrate_run;
mod probe;
mod proto;
mod raw;
mod report;
mod resume;
mod run;
mod stats;
mod storm;
mod sys;
mod target;
mod timeline;
mod token;
mod wire;
mod worker;

use cli::{BenchArgs, Scenario};

/// Runs a scenario. Exit code 0 when the run completed (whatever it measured), 1 when it could
/// not run, 2 for bad arguments.
fn main() -> ExitCode {
    let args = BenchArgs::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let (result, common) = match args.scenario.as_ref() {
        Scenario::Worker { spec } => return worker::run(spec),
        Scenario::Hold(a) => (run::hold(a), &a.common),
        Scenario::Fanout(a) => (fanout::run(a), &a.common),
        Scenario::Evict(a) => (run::evict(a), &a.common),
        Scenario::Storm(a) => (run::storm(a), &a.common),
        Scenario::Resume(a) => (resume::run(a), &a.common),
        Scenario::ConnectLoad(a) => (connect_load::run(a), &a.common),
        Scenario::Presence(a) => (lobby_run::presence(a), &a.common),
        Scenario::Lobby(a) => (lobby_run::lobby(a), &a.common),
        Scenario::Batch(a) => (batch::run(a), &a.common),
    };
    match result {
        Ok((mut json, summary)) => {
            json["tokens"] = common.token_secret.is_some().into();
            println!("{summary}");
            if let Some(path) = &common.json {
                let text = serde_json::to_string_pretty(&json).unwrap_or_default();
                if let Err(e) = std::fs::write(path, text + "\n") {
                    eprintln!("tether-bench: cannot write {}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
            }
            ExitCode::SUCCESS
        }
        Err(run::Failure::Usage(e)) => {
            eprintln!("tether-bench: {e}");
            ExitCode::from(2)
        }
        Err(run::Failure::Run(e)) => {
            eprintln!("\ntether-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
