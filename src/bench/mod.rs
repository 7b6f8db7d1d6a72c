//! `tether bench`: the load-test client (hold, fanout, evict, storm).

use std::process::ExitCode;

/// Arguments of `tether bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Scenario to run.
    pub scenario: String,
}

/// Runs a benchmark scenario and returns the process exit code.
pub fn main(args: BenchArgs) -> ExitCode {
    log::error!("bench scenario `{}` is not implemented yet", args.scenario);
    ExitCode::FAILURE
}
