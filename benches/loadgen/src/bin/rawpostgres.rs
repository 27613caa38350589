//! The direct-PostgreSQL reference of the ingest benchmark: the PostgreSQL
//! collector's rows for the load generator's `anonymous` payloads, written
//! straight through `tokio-postgres` in batched transactions, in a fresh
//! schema dropped afterwards. Run with
//! `cargo run --release -p loadgen --bin rawpostgres -- --url postgres://postgres@127.0.0.1:5432/ingestbench --per-txn 100`.

// A command-line tool: its output is the point.
#![allow(clippy::print_stdout)]

use anyhow::Context;
use clap::Parser;
use loadgen::cli::{OutputArgs, print_raw, secs};
use loadgen::rawpg::{self, RawPgConfig};

/// Writes the PostgreSQL collector's rows directly and reports events per second.
#[derive(Debug, Parser)]
#[command(name = "rawpostgres", version)]
struct Args {
    /// The database (loopback); the run makes and drops a schema of its own in it.
    #[arg(long, required_unless_present = "header")]
    url: Option<String>,
    /// Events per simulated request.
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
    /// Distinct installs the requests rotate through.
    #[arg(long, default_value_t = 1000)]
    installs: u64,
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
    let Some(url) = args.url.clone() else {
        anyhow::bail!("--url is required");
    };
    let config = RawPgConfig {
        url,
        batch: args.batch,
        per_txn: args.per_txn,
        events: args.events,
        duration: secs(args.duration_secs, "--duration-secs")?,
        installs: args.installs,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let report = runtime
        .block_on(rawpg::run(&config))
        .context("writing the rows")?;
    print_raw(&report, &args.output)
}
