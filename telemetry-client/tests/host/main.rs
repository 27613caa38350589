//! A host CLI for the command-line tests: it mounts the `telemetry`
//! subcommand and asks the first-run question exactly as the crate docs tell
//! tool authors to.
//!
//! Usage: `telemetry-client-host greet`, `... init`, `... hook` or `... telemetry ...`.
//! Only `greet` and `init` may prompt; `HOST_PROMPT_TIMEOUT_MS` shortens the prompt's wait.
//! Folders come from `HOME`/`XDG_*`. `HOST_DETACHED_UPLOAD=1` lets it start
//! the detached uploader (off by default so tests stay deterministic).
//! `HOST_TOOL_VERSION` replaces its version, `1.0.0`, and `HOST_MANIFEST`
//! names a manifest file to use instead of its own.

#![allow(clippy::print_stdout)] // `greet` prints its greeting, like a real tool.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use telemetry_client::Telemetry;
use telemetry_client::cli::Run;

#[derive(Parser)]
#[command(name = "host-cli")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print a greeting (and record one event).
    Greet,
    /// What a shell hook runs on every `cd`: records, never prompts.
    Hook,
    /// Set the tool up: records `setup_started` and `setup_completed`.
    Init,
    /// See and change what host-cli may send to its maintainers.
    Telemetry(telemetry_client::cli::TelemetryArgs),
}

fn main() -> ExitCode {
    let manifest = std::env::var_os("HOST_MANIFEST")
        .and_then(|path| std::fs::read_to_string(path).ok())
        .unwrap_or_else(|| include_str!("telemetry.toml").to_owned());
    let telemetry = Telemetry::builder(&manifest)
        .tool_version(std::env::var("HOST_TOOL_VERSION").unwrap_or_else(|_| "1.0.0".to_owned()))
        .system_policy(None)
        .detached_upload(std::env::var_os("HOST_DETACHED_UPLOAD").is_some())
        .prompt_commands(["greet", "init"])
        .prompt_timeout(Duration::from_millis(
            std::env::var("HOST_PROMPT_TIMEOUT_MS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(30_000),
        ))
        .build();
    let cli = Cli::parse();
    let name = match &cli.command {
        Command::Greet => "greet",
        Command::Hook => "hook",
        Command::Init => "init",
        Command::Telemetry(_) => "telemetry",
    };
    telemetry_client::cli::prompt_if_needed(&telemetry, name);
    match cli.command {
        Command::Telemetry(args) => args.run(&telemetry),
        Command::Init => {
            telemetry.setup_started();
            telemetry.setup_completed();
            ExitCode::SUCCESS
        }
        Command::Hook => {
            telemetry.track("command", [("name", "greet".into())]);
            ExitCode::SUCCESS
        }
        Command::Greet => {
            telemetry.track("command", [("name", "greet".into())]);
            println!("hello");
            ExitCode::SUCCESS
        }
    }
}
