//! The crash drill. Run with
//! `cargo run --release -p loadgen --bin crashdrill -- --row`
//! after `cargo build --release -p telemetry-collector`.
//!
//! It SIGKILLs a release collector `--kills` times under concurrent load,
//! restarts it on the same database each time, resends what was never
//! acknowledged, and checks through the stats API that every event is counted
//! exactly once. Exits non-zero if anything was lost or counted twice.

// A command-line tool: its output is the point.
#![allow(clippy::print_stdout)]

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use loadgen::crash::{self, DrillConfig, DrillReport};

/// Kills a collector under load again and again; checks nothing acknowledged is lost or doubled.
#[derive(Debug, Parser)]
#[command(name = "crashdrill", version)]
struct Args {
    /// The collector binary [default: `telemetry-collector` next to this binary].
    #[arg(long)]
    collector: Option<PathBuf>,
    /// A fresh folder for the database and log [default: a new temporary
    /// folder, removed afterwards unless the drill fails].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// SIGKILLs under load.
    #[arg(long, default_value_t = 10)]
    kills: u32,
    /// Concurrent writers (half anonymous, half aggregate).
    #[arg(long, default_value_t = 4)]
    writers: usize,
    /// Events or counters per request.
    #[arg(long, default_value_t = 10)]
    batch: usize,
    /// Each round is killed after a random number of acknowledged requests
    /// between this...
    #[arg(long, default_value_t = 50)]
    kill_min_acks: u64,
    /// ...and this...
    #[arg(long, default_value_t = 1000)]
    kill_max_acks: u64,
    /// ...or after this many seconds, whichever comes first.
    #[arg(long, default_value_t = 3.0)]
    round_secs: f64,
    /// Timeout of one request, in seconds.
    #[arg(long, default_value_t = 10.0)]
    request_timeout_secs: f64,
    /// The project name in every payload.
    #[arg(long, default_value = "crashdrill")]
    project: String,
    #[command(flatten)]
    output: loadgen::cli::OutputArgs,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.output.header {
        println!("{}", crash::HEADER);
        return Ok(());
    }
    let collector = match args.collector.clone() {
        Some(path) => path,
        None => std::env::current_exe()
            .context("finding this binary")?
            .with_file_name("telemetry-collector"),
    };
    let temporary = args.dir.is_none();
    let dir = match args.dir.clone() {
        Some(dir) => dir,
        None => std::env::temp_dir().join(format!(
            "crashdrill-{}-{:x}",
            std::process::id(),
            getrandom::u64().map_err(|e| anyhow::anyhow!("naming the drill folder: {e}"))?
        )),
    };
    let config = DrillConfig {
        collector,
        dir: dir.clone(),
        kills: args.kills,
        writers: args.writers,
        batch: args.batch,
        kill_after_acks: (
            args.kill_min_acks,
            args.kill_max_acks.max(args.kill_min_acks),
        ),
        round_limit: loadgen::cli::secs(args.round_secs, "round seconds")?,
        request_timeout: loadgen::cli::secs(args.request_timeout_secs, "request timeout")?,
        resend_attempts: 100,
        project: args.project.clone(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let report = runtime
        .block_on(crash::run(config))
        .context("running the crash drill")?;
    if args.output.json {
        println!(
            "{}",
            serde_json::to_string(&report).context("encoding the report")?
        );
    } else if args.output.row {
        println!("{}", crash::row(&report));
    } else {
        print_text(&report);
    }
    if !report.passed() {
        anyhow::bail!(
            "the drill failed: lost {} (after a restart: {}), double-counted {}, replay accepted {} and found {} duplicates of {}; the database and log are in {}",
            report.lost,
            report.lost_after_restart,
            report.double_counted,
            report.replay_accepted,
            report.replay_duplicates,
            report.records,
            dir.display()
        );
    }
    if temporary {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    Ok(())
}

fn print_text(r: &DrillReport) {
    println!(
        "{} kills under load in {:.1} s: {} requests ({} events and counter increments) acknowledged, {} requests cut off by a kill ({} of them committed anyway)",
        r.kills,
        r.elapsed_secs,
        r.acked_requests,
        r.acked_events,
        r.transport_errors,
        r.committed_unacked
    );
    println!(
        "  {} batches never acknowledged before the last restart were resent; {} batches, {} expected, {} counted",
        r.resent_batches, r.batches, r.expected, r.counted
    );
    println!(
        "  lost {} (largest shortfall right after a restart: {}), double-counted {}; replay of everything: accepted {}, duplicates {} of {}",
        r.lost,
        r.lost_after_restart,
        r.double_counted,
        r.replay_accepted,
        r.replay_duplicates,
        r.records
    );
}
