//! The host CLI of the fleet drill: it embeds `telemetry-client` the way a
//! real tool does (the handle built first thing in `main`, the `telemetry`
//! subcommand mounted, the detached uploader left to the library), with two
//! differences a drill needs:
//!
//! - `DRILL_NOW_MS` fixes the client's clock, so the drill can run simulated
//!   days in seconds. The detached uploader inherits the variable, so it
//!   agrees with the run that started it.
//! - `run` tags each event with who recorded it, in which consent epoch and
//!   schedule slot, and at which level the drill expects it to be recorded,
//!   so the collector's rows can be checked against ground truth.
//!
//! Usage: `drillhost run --who N --epoch E --slot S --asked LEVEL --commands C --extras X`,
//! `drillhost telemetry ...`, or `drillhost consent ...`, which is exactly
//! the machine-wide `telemetry-consent` tool (`consent disable --all`). Folders come from `HOME`/`XDG_*`;
//! `DRILL_INTERVAL_MS` sets the upload interval (default one hour).

// The drill reads what a run recorded from its stdout.
#![allow(clippy::print_stdout)]

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use loadgen::fleet;
use telemetry_client::Telemetry;
use telemetry_client::cli::Run;
use telemetry_client::testing::ManualClock;
use telemetry_protocol::Timestamp;

#[derive(Parser)]
#[command(name = "drillhost")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Record tagged events, then print what was recorded as one JSON line.
    Run(RunArgs),
    /// Record `setup_started` and `setup_completed`, like a tool's first run.
    Init,
    /// See and change what the drill host may send.
    Telemetry(telemetry_client::cli::TelemetryArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    #[arg(long)]
    who: usize,
    #[arg(long)]
    epoch: usize,
    #[arg(long)]
    slot: usize,
    #[arg(long)]
    asked: String,
    #[arg(long, default_value_t = 1)]
    commands: u64,
    #[arg(long, default_value_t = 0)]
    extras: u64,
}

fn main() -> ExitCode {
    // `consent ...` is the machine-wide consent tool, which embeds no tool's
    // handle: run it as `telemetry-consent` runs, before anything else.
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("consent") {
        let args = std::iter::once("telemetry-consent".to_owned()).chain(argv[2..].iter().cloned());
        return telemetry_client::cli::ConsentArgs::parse_from(args).run();
    }
    let now_ms = std::env::var("DRILL_NOW_MS")
        .ok()
        .and_then(|v| v.parse::<i64>().ok());
    let interval = std::env::var("DRILL_INTERVAL_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_600_000);
    let manifest = fleet::manifest_text(true);
    let mut builder = Telemetry::builder(&manifest)
        .tool_version("1.0.0")
        .system_policy(None)
        .upload_interval(Duration::from_millis(interval));
    if let Some(ms) = now_ms {
        builder = builder.clock(Arc::new(ManualClock::new(Timestamp::from_unix_millis(ms))));
    }
    let telemetry = builder.build();
    let cli = Cli::parse();
    match cli.command {
        Command::Telemetry(args) => args.run(&telemetry),
        Command::Init => {
            telemetry.setup_started();
            telemetry.setup_completed();
            telemetry.finish();
            ExitCode::SUCCESS
        }
        Command::Run(args) => {
            let tags = fleet::Tags {
                who: args.who,
                epoch: args.epoch,
                slot: args.slot,
                asked: args.asked,
            };
            for _ in 0..args.commands {
                telemetry.track(fleet::EVENT_COMMAND, tags.props());
            }
            for _ in 0..args.extras {
                telemetry.track(fleet::EVENT_EXTRA, tags.props());
            }
            let d = telemetry.diagnostics();
            let status = telemetry.control().ok().and_then(|c| c.status().ok());
            let line = serde_json::json!({
                "recorded": d.recorded,
                "above_tier": d.above_tier,
                "undeclared": d.undeclared_events,
                "dropped_props": d.dropped_props,
                "spool_dropped": d.spool_dropped,
                "io_errors": d.io_errors,
                "level": status.as_ref().map(|s| s.level.to_string()),
                "install_id": status.as_ref().and_then(|s| s.install_id).map(|u| u.to_string()),
            });
            println!("{line}");
            telemetry.finish();
            ExitCode::SUCCESS
        }
    }
}
