//! The direct-PostgreSQL reference of the ingest benchmark: the PostgreSQL
//! collector's rows for the load generator's `anonymous` payloads, written
//! straight through `tokio-postgres` in batched transactions, in a fresh
//! schema dropped afterwards. Run with
//! `cargo run --release -p loadgen --bin rawpostgres -- --url postgres://postgres@127.0.0.1:5432/ingestbench --per-txn 100`.

// A command-line tool: its output is the point.
#![allow(clippy::print_stdout)]

use anyhow::Context;
use clap::Parser;
use loadgen::cli::{OutputArgs, RawRunArgs, print_raw, secs};
use loadgen::rawpg::{self, RawPgConfig};

/// Writes the PostgreSQL collector's rows directly and reports events per second.
#[derive(Debug, Parser)]
#[command(name = "rawpostgres", version)]
struct Args {
    /// The database (loopback); the run makes and drops a schema of its own in it.
    #[arg(long, required_unless_present = "header")]
    url: Option<String>,
    #[command(flatten)]
    run: RawRunArgs,
    #[command(flatten)]
    output: OutputArgs,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.output.header {
        return print_raw(None, &args.output);
    }
    let Some(url) = args.url.clone() else {
        anyhow::bail!("--url is required");
    };
    let config = RawPgConfig {
        url,
        batch: args.run.batch,
        per_txn: args.run.per_txn,
        events: args.run.events,
        duration: secs(args.run.duration_secs, "--duration-secs")?,
        installs: args.run.installs,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let report = runtime
        .block_on(rawpg::run(&config))
        .context("writing the rows")?;
    print_raw(Some(&report), &args.output)
}
