//! `telemetry-consent`: see and change telemetry for every tool on this
//! machine that uses the telemetry toolkit.
//!
//! Run `telemetry-consent list`, `telemetry-consent disable --all`, or
//! `telemetry-consent global off` to keep every tool, current and future, off.

use std::process::ExitCode;

use clap::Parser;
use telemetry_client::cli::ConsentArgs;

fn main() -> ExitCode {
    ConsentArgs::parse().run()
}
