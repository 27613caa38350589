//! The one-line CLI with telemetry-client: prints the same greeting as
//! baseline-cli and records one event, the way the client's README tells a
//! host to. It behaves as a real host: nothing is recorded or sent unless the
//! user opted in (the bench sets the level with
//! `telemetry-consent set toolkit-cli <tier>`), and sending happens in the
//! detached uploader, a re-execution of this binary.
//!
//! The endpoint comes from `TOOLKIT_CLI_TELEMETRY_ENDPOINT` (the client's own
//! override), not from an argument: the uploader is started without the host's
//! arguments but inherits its environment.
//!
//! The upload interval is the client's default (one hour), as in a real host,
//! unless `BENCH_UPLOAD_INTERVAL_SECS` sets it: with `0`, every run that has
//! data starts the uploader, the way the peers send on every run, which is
//! the host's worst case.

// Printing is this program's job.
#![allow(clippy::print_stdout)]

use std::time::Duration;

use telemetry_client::Telemetry;

fn main() {
    let mut builder = Telemetry::builder(include_str!("../telemetry.toml"))
        .tool_version(env!("CARGO_PKG_VERSION"));
    if let Some(secs) = std::env::var("BENCH_UPLOAD_INTERVAL_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    {
        builder = builder.upload_interval(Duration::from_secs(secs));
    }
    // First thing in `main`: in the detached uploader this sends and exits.
    let telemetry = builder.build();
    println!("Hello, world!");
    telemetry.track("command", [("name", "greet".into())]);
    // Dropping the handle spools the event and starts the uploader if due.
    drop(telemetry);
}
