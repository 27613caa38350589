//! The raw-SQLite baseline of the ingest benchmark: the collector's rows for
//! the load generator's payloads, written straight through rusqlite with the
//! collector's schema and durability. Run with
//! `cargo run --release -p loadgen --bin rawsqlite -- --tier anonymous --per-txn 100`.

// A command-line tool: its output is the point.
#![allow(clippy::print_stdout)]

use anyhow::Context;
use clap::Parser;
use loadgen::cli::{OutputArgs, print_raw, secs};
use loadgen::raw::{self, RawConfig};
use telemetry_protocol::Tier;

/// Inserts the collector's rows directly and reports events per second.
#[derive(Debug, Parser)]
#[command(name = "rawsqlite", version)]
struct Args {
    /// The tier whose rows are written: aggregate, anonymous or full.
    #[arg(long, default_value = "anonymous")]
    tier: Tier,
    /// Events (counters at aggregate) per simulated request.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Events per transaction.
    #[arg(long, default_value_t = 100)]
    per_txn: usize,
    /// The most events to write.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// The longest the run may take, in seconds.
    #[arg(long, default_value_t = 10.0)]
    duration_secs: f64,
    /// Distinct installs the batches rotate through.
    #[arg(long, default_value_t = 1000)]
    installs: u64,
    /// Where the fresh database goes; a temporary folder when not given.
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
    #[command(flatten)]
    output: OutputArgs,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.output.header {
        println!("| tier | events per transaction | events | transactions | events/s |");
        println!("|---|---|---|---|---|");
        return Ok(());
    }
    let config = RawConfig {
        tier: args.tier,
        batch: args.batch,
        per_txn: args.per_txn,
        events: args.events,
        duration: secs(args.duration_secs, "--duration-secs")?,
        installs: args.installs,
    };
    let temp = tempfile::tempdir().context("creating a temporary folder")?;
    let dir = args.dir.as_deref().unwrap_or(temp.path());
    let path = dir.join(format!("raw-{}-{}.db", args.tier, args.per_txn));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let report = raw::run(&path, &config)?;
    print_raw(&report, &args.output)
}
