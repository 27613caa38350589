//! The stats-latency benchmark. Run with
//! `cargo run --release -p loadgen --bin statsbench -- --events 10000000 --installs 1000000`.
//!
//! Loads a fresh SQLite database through the collector's own store (or reuses
//! one given with `--db` that holds the same load), then times the stats of a
//! 90-day window as the dashboard and the `stats` command compute them, each
//! SQL part of that read with its query plan, and the naive `GROUP BY` over
//! raw events. Prints text, one JSON line (`--json`) or Markdown (`--row`).

// A command-line tool: its output is the point.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use loadgen::statsbench::{self, BenchConfig};
use loadgen::statsload::{LoadOptions, LoadSpec};
use loadgen::statsquery::Runs;
use telemetry_protocol::Day;

/// Loads installs and events into a collector database and times its stats.
#[derive(Debug, Parser)]
#[command(name = "statsbench", version)]
struct Args {
    /// Events to load, all at `anonymous`.
    #[arg(long, default_value_t = 10_000_000)]
    events: u64,
    /// Installs to load; each sends `install` once.
    #[arg(long, default_value_t = 1_000_000)]
    installs: u64,
    /// Days over which installs first appear, ending on `--end`.
    #[arg(long, default_value_t = 120)]
    days: u32,
    /// The last day with data, YYYY-MM-DD [default: today, UTC].
    #[arg(long)]
    end: Option<Day>,
    /// Seeds every random choice of the loader.
    #[arg(long, default_value_t = 8)]
    seed: u64,
    /// The project name.
    #[arg(long, default_value = "statsbench")]
    project: String,
    /// The database file. Reused if it holds a finished load of the same
    /// spec (`--end` included; see `--accept-partial`); created otherwise.
    /// Default: a temporary directory removed at exit.
    #[arg(long)]
    db: Option<PathBuf>,
    /// Days between one install's uploads while loading; changes only the
    /// number of ingest calls, not what is stored.
    #[arg(long, default_value_t = 7)]
    days_per_upload: u32,
    /// Ingest calls in flight while loading (the collector's queue holds 1024).
    #[arg(long, default_value_t = 512)]
    in_flight: usize,
    /// The longest the load may take, in seconds; a cut-short load is
    /// reported, timed, and never reused.
    #[arg(long, default_value_t = 900.0)]
    max_load_secs: f64,
    /// The stats window, in days ending on `--end`.
    #[arg(long, default_value_t = 90)]
    window_days: u32,
    /// Timed runs of the stats path and of each part, after one warm-up.
    #[arg(long, default_value_t = 21)]
    runs: usize,
    /// The longest the runs of one stats part may take, in seconds.
    #[arg(long, default_value_t = 30.0)]
    max_stats_secs: f64,
    /// The longest the runs of one naive query may take, in seconds.
    #[arg(long, default_value_t = 30.0)]
    max_naive_secs: f64,
    /// Skip the naive queries.
    #[arg(long)]
    no_naive: bool,
    /// Reuse a `--db` whose load of the same spec hit `--max-load-secs`
    /// (the report says how many events it holds).
    #[arg(long)]
    accept_partial: bool,
    /// Also time the stats on this PostgreSQL copy of `--db` (made with
    /// `telemetry-collector migrate`), after checking its stats equal SQLite's.
    #[arg(long, value_name = "URL")]
    postgres: Option<String>,
    /// Tokio worker threads for the load.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    #[command(flatten)]
    output: loadgen::cli::OutputArgs,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.output.header {
        println!("{}", statsbench::HEADER);
        return Ok(());
    }
    let end = args.end.unwrap_or_else(today);
    let temp;
    let db = match &args.db {
        Some(db) => db.clone(),
        None => {
            temp = tempfile::tempdir().context("creating a temporary directory")?;
            temp.path().join("statsbench.db")
        }
    };
    let config = BenchConfig {
        spec: LoadSpec {
            project: args.project.clone(),
            events: args.events,
            installs: args.installs,
            days: args.days,
            end,
            seed: args.seed,
        },
        db,
        load: LoadOptions {
            in_flight: args.in_flight,
            max_duration: loadgen::cli::secs(args.max_load_secs, "max load seconds")?,
            days_per_upload: args.days_per_upload,
        },
        window_days: args.window_days,
        stats_runs: Runs {
            runs: args.runs,
            max_duration: loadgen::cli::secs(args.max_stats_secs, "max stats seconds")?,
        },
        naive_runs: Runs {
            runs: args.runs,
            max_duration: loadgen::cli::secs(args.max_naive_secs, "max naive seconds")?,
        },
        skip_naive: args.no_naive,
        accept_partial: args.accept_partial,
        postgres: args.postgres.clone(),
    };
    config.spec.check().context("checking the load spec")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let report = runtime
        .block_on(statsbench::run(&config))
        .context("running the stats benchmark")?;
    if !report.load.complete {
        eprintln!(
            "warning: the load hit --max-load-secs after {} of {} events; the timings are of a smaller database",
            report.load.accepted, report.spec.events
        );
    }
    if args.output.json {
        println!(
            "{}",
            serde_json::to_string(&report).context("encoding the report")?
        );
    } else if args.output.row {
        print!("{}", statsbench::markdown(&report));
    } else {
        println!("{}\n", statsbench::summary(&report));
        for t in report.stats.iter().chain(&report.naive) {
            println!(
                "{}: median {:.2} ms, p90 {:.2} ms, min {:.2}, max {:.2} over {} runs{}; {} rows",
                t.label,
                t.ms.median,
                t.ms.p90,
                t.ms.min,
                t.ms.max,
                t.ms.n,
                if t.hit_time_limit {
                    " (time limit)"
                } else {
                    ""
                },
                t.rows
            );
        }
        println!("\nquery plans:\n\n{}", statsbench::plans(&report));
    }
    Ok(())
}

/// Today's UTC day, from the system clock.
fn today() -> Day {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Day::from_days_since_epoch((secs / 86_400) as i32)
}
