//! A tiny host program for the integration tests: it embeds the client the way
//! a real tool does, so tests can run it as real processes.
//!
//! Usage: `telemetry-client-probe <command> [n]`
//! - `track N`: records N `command` events, then exits normally.
//! - `stream N`: records and spools one event at a time, printing the running
//!   count after each spool write, for kill-9 tests.
//! - `setup`: records `setup_started` and `setup_completed`.
//!
//! Folders come from `HOME`/`XDG_*`. `PROBE_INTERVAL_MS` sets the upload
//! interval (default 0, so every run may start the uploader).

#![allow(clippy::print_stdout)] // The probe reports progress to the test on stdout.

use std::io::Write;
use std::time::Duration;

const MANIFEST: &str = include_str!("telemetry.toml");

fn main() {
    let interval = std::env::var("PROBE_INTERVAL_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let telemetry = telemetry_client::Telemetry::builder(MANIFEST)
        .tool_version("1.0.0")
        .upload_interval(Duration::from_millis(interval))
        .system_policy(None)
        .build();
    let mut args = std::env::args().skip(1);
    let command = args.next().unwrap_or_default();
    let n: u64 = args.next().and_then(|v| v.parse().ok()).unwrap_or(1);
    match command.as_str() {
        "track" => {
            for _ in 0..n {
                telemetry.track("command", [("name", "greet".into())]);
            }
        }
        "stream" => {
            let mut out = std::io::stdout().lock();
            for i in 1..=n {
                telemetry.track("command", [("name", "greet".into())]);
                telemetry.persist();
                let _ = writeln!(out, "{i}");
                let _ = out.flush();
            }
        }
        "setup" => {
            telemetry.setup_started();
            telemetry.setup_completed();
        }
        _ => {}
    }
    telemetry.finish();
}
