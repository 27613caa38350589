//! Command-line pieces the binaries share: the output-format flags, the
//! parsing of seconds given as numbers, and the raw references' report.

use std::time::Duration;

use anyhow::Context;

use crate::raw::RawReport;

/// How a binary prints its report.
#[derive(Debug, Clone, clap::Args)]
pub struct OutputArgs {
    /// Print one JSON line instead of text.
    #[arg(long)]
    pub json: bool,
    /// Print one Markdown table row instead of text (see `--header`).
    #[arg(long)]
    pub row: bool,
    /// Print the Markdown table header for `--row` and exit.
    #[arg(long)]
    pub header: bool,
}

/// The size and bounds of a raw reference run (`rawsqlite`, `rawpostgres`).
#[derive(Debug, Clone, clap::Args)]
pub struct RawRunArgs {
    /// Events (counters at aggregate) per simulated request.
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// Events per transaction.
    #[arg(long, default_value_t = 100)]
    pub per_txn: usize,
    /// The most events to write.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    /// The longest the run may take, in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration_secs: f64,
    /// Distinct installs the batches rotate through.
    #[arg(long, default_value_t = 1000)]
    pub installs: u64,
}

/// `s` seconds as a [`Duration`]; `what` names the flag in the error.
pub fn secs(s: f64, what: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(s).with_context(|| format!("invalid {what}"))
}

/// Prints a raw reference run's report (`rawsqlite`, `rawpostgres`) as
/// `output` asks, or with `--header` only the table's header.
#[allow(clippy::print_stdout)] // The report is the binaries' output.
pub fn print_raw(r: Option<&RawReport>, output: &OutputArgs) -> anyhow::Result<()> {
    let Some(r) = r else {
        println!("| tier | events per transaction | events | transactions | events/s |");
        println!("|---|---|---|---|---|");
        return Ok(());
    };
    if output.json {
        println!("{}", serde_json::to_string(r)?);
    } else if output.row {
        println!(
            "| {} | {} | {} | {} | {:.0}{} |",
            r.tier,
            r.per_txn,
            r.events,
            r.transactions,
            r.events_per_sec,
            if r.hit_time_limit {
                " (time limit)"
            } else {
                ""
            }
        );
    } else {
        println!(
            "{}: {} events in {} transactions of {} events, {:.2} s = {:.0} events/s",
            r.tier, r.events, r.transactions, r.per_txn, r.elapsed_secs, r.events_per_sec
        );
    }
    Ok(())
}
