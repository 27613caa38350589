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

/// `s` seconds as a [`Duration`]; `what` names the flag in the error.
pub fn secs(s: f64, what: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(s).with_context(|| format!("invalid {what}"))
}

/// Prints a raw reference run's report (`rawsqlite`, `rawpostgres`) as
/// `output` asks.
#[allow(clippy::print_stdout)] // The report is the binaries' output.
pub fn print_raw(r: &RawReport, output: &OutputArgs) -> anyhow::Result<()> {
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
