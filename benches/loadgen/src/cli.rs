//! Command-line pieces both binaries share: the output-format flags and the
//! parsing of seconds given as numbers.

use std::time::Duration;

use anyhow::Context;

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
