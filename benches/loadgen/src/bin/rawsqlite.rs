//! The raw-SQLite baseline of the ingest benchmark: the collector's rows for
//! the load generator's payloads, written straight through rusqlite with the
//! collector's schema and durability. Run with
//! `cargo run --release -p loadgen --bin rawsqlite -- --tier anonymous --per-txn 100`.

// A command-line tool: its output is the point.
#![allow(clippy::print_stdout)]

use anyhow::Context;
use clap::Parser;
use loadgen::cli::{OutputArgs, RawRunArgs, print_raw, secs};
use loadgen::raw::{self, RawConfig};
use telemetry_protocol::Tier;

/// Inserts the collector's rows directly and reports events per second.
#[derive(Debug, Parser)]
#[command(name = "rawsqlite", version)]
struct Args {
    /// The tier whose rows are written: aggregate, anonymous or full.
    #[arg(long, default_value = "anonymous")]
    tier: Tier,
    #[command(flatten)]
    run: RawRunArgs,
    /// Where the fresh database goes; a temporary folder when not given.
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
    #[command(flatten)]
    output: OutputArgs,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.output.header {
        return print_raw(None, &args.output);
    }
    let config = RawConfig {
        tier: args.tier,
        batch: args.run.batch,
        per_txn: args.run.per_txn,
        events: args.run.events,
        duration: secs(args.run.duration_secs, "--duration-secs")?,
        installs: args.run.installs,
    };
    let temp = tempfile::tempdir().context("creating a temporary folder")?;
    let dir = args.dir.as_deref().unwrap_or(temp.path());
    let path = dir.join(format!("raw-{}-{}.db", args.tier, args.run.per_txn));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let report = raw::run(&path, &config)?;
    print_raw(Some(&report), &args.output)
}
