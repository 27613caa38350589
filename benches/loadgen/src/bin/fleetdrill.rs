//! The fleet drill of issue 13. Run the short form with
//! `cargo run -p loadgen --features drill --bin fleetdrill` (after
//! `cargo build -p loadgen --features drill`, which builds the `drillhost`
//! it starts), the long form with `--long`.
//!
//! It runs hundreds of installs as real processes over simulated days behind
//! a fault-injecting proxy in front of a real collector, then compares what
//! the collector holds with what each process recorded and each user chose.
//! Prints the report (Markdown, or JSON with `--json`); exits non-zero if a
//! target of the issue is missed.

// A command-line tool: its output is the point.
#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use loadgen::fleet::{self, FleetConfig};

/// Runs the fleet drill and reports what is missing, doubled, above tier or not deleted.
#[derive(Debug, Parser)]
#[command(name = "fleetdrill", version)]
struct Args {
    /// The drill host [default: `drillhost` next to this binary].
    #[arg(long)]
    host: Option<PathBuf>,
    /// A fresh folder for the homes and the database [default: a new
    /// temporary folder, kept only if a target is missed].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The long form: more installs, 14 simulated days, every phase.
    #[arg(long)]
    long: bool,
    /// The control run: every slot passes through, no manifest window, no
    /// kills, no debug or ceiling runs.
    #[arg(long)]
    calm: bool,
    /// Simulated installs (at most 256).
    #[arg(long)]
    installs: Option<usize>,
    /// Simulated days with faults.
    #[arg(long)]
    days: Option<u32>,
    /// Processes at once.
    #[arg(long)]
    concurrency: Option<usize>,
    /// A limit on the schedule, in seconds.
    #[arg(long)]
    max_secs: Option<u64>,
    /// The random seed of the schedule.
    #[arg(long)]
    seed: Option<u64>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    let host = match args.host {
        Some(h) => h,
        None => std::env::current_exe()
            .context("finding this binary")?
            .with_file_name("drillhost"),
    };
    let temp = match &args.dir {
        Some(_) => None,
        None => Some(tempfile::tempdir().context("making a temporary folder")?),
    };
    let dir = args
        .dir
        .clone()
        .or_else(|| temp.as_ref().map(|t| t.path().to_owned()))
        .context("no folder")?;
    let mut config = if args.long {
        FleetConfig::long_form(host, dir.clone())
    } else {
        FleetConfig::short_form(host, dir.clone())
    };
    if args.calm {
        config = config.calm();
    }
    if let Some(n) = args.installs {
        config.installs = n;
    }
    if let Some(d) = args.days {
        config.days = d;
    }
    if let Some(c) = args.concurrency {
        config.concurrency = c;
    }
    if let Some(s) = args.max_secs {
        config.max_duration = std::time::Duration::from_secs(s);
    }
    if let Some(s) = args.seed {
        config.seed = s;
    }
    let report = fleet::run(&config).context("the fleet drill")?;
    // Kept beside the homes and the database for a look afterwards.
    std::fs::write(dir.join("report.json"), serde_json::to_vec_pretty(&report)?)
        .context("writing report.json")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}", report.markdown());
    }
    if report.passed() {
        Ok(ExitCode::SUCCESS)
    } else {
        if let Some(t) = temp {
            let kept = t.keep();
            println!(
                "targets missed; the drill's folder is kept at {}",
                kept.display()
            );
        }
        Ok(ExitCode::FAILURE)
    }
}
