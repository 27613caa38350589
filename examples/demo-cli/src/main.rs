//! demo-cli: a small CLI that embeds `telemetry-client` the way the README
//! tells tool authors to.
//!
//! Run it with `cargo run -p demo-cli -- greet --name you`, opt in with
//! `cargo run -p demo-cli -- telemetry enable aggregate`, and see what would
//! be sent with `cargo run -p demo-cli -- telemetry show`.

// Printing is this program's job.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod setup;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use telemetry_client::Telemetry;
use telemetry_client::cli::Run;

use crate::events::command::Name;

/// The typed telemetry API, generated from `telemetry.toml` when demo-cli is
/// compiled: a typo in the manifest fails the build with its line and
/// column, an event or prop it does not declare cannot be written, and the
/// manifest is never parsed at run time. `try command.name = crate::Command`
/// converts a subcommand to the `name` prop's enum, and checks at compile
/// time that every value the manifest lists is a subcommand.
mod events {
    telemetry_client::manifest!("telemetry.toml", try command.name = crate::Command);
}

/// A friendly greeter with a setup step, to show telemetry-client at work.
#[derive(Parser)]
#[command(name = "demo-cli", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Set demo-cli up: choose who to greet by default.
    Init(setup::InitArgs),
    /// Print a greeting.
    Greet {
        /// Who to greet; defaults to the name chosen in `init`.
        #[arg(long)]
        name: Option<String>,
    },
    /// See and change what demo-cli may send to its maintainers.
    Telemetry(telemetry_client::cli::TelemetryArgs),
}

fn main() -> ExitCode {
    // The integration: build the handle first thing in `main` ...
    let telemetry = events::builder()
        .tool_version(env!("CARGO_PKG_VERSION"))
        // A short interval, so a newcomer sees data on the dashboard within
        // seconds. Real tools keep the default.
        .upload_interval(Duration::from_secs(5))
        // Only commands a person types may ask the first-run question; a
        // tool with a shell hook or an `init <shell>` leaves those out.
        .prompt_commands(["init", "greet"])
        .build();
    let cli = Cli::parse();
    // ... ask once, on a terminal, whether the user wants to share anything ...
    // `telemetry` is not a command the manifest lists, and never prompts.
    let name = Name::try_from(&cli.command).map_or("telemetry", Name::as_str);
    telemetry_client::cli::prompt_if_needed(&telemetry, name);

    let started = Instant::now();
    let (command, result) = match cli.command {
        Command::Init(args) => (Name::Init, setup::run(&args, &telemetry)),
        Command::Greet { name } => (Name::Greet, greet(name, &telemetry)),
        Command::Telemetry(args) => return args.run(&telemetry),
    };
    // ... and record what happened. Recording never fails and never prints.
    events::command(&telemetry)
        .name(command)
        .duration_ms(started.elapsed().as_millis())
        .interactive(setup::interactive())
        .rust_version(env!("CARGO_PKG_RUST_VERSION"))
        .record();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo-cli: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn greet(name: Option<String>, telemetry: &Telemetry) -> anyhow::Result<()> {
    if name.is_some() {
        // The name itself is never sent: free text is not a prop kind.
        events::greet_named(telemetry).record();
    }
    let name = name
        .or_else(setup::default_name)
        .unwrap_or_else(|| "world".to_owned());
    println!("Hello, {name}!");
    Ok(())
}
