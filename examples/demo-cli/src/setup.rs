//! `demo-cli init`: a short setup that asks for a default name on a terminal
//! and takes flags otherwise, and reports `setup_started` and `setup_completed`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use telemetry_client::Telemetry;

/// Flags for `init`, so scripts can run setup without a terminal.
#[derive(clap::Args)]
pub(crate) struct InitArgs {
    /// The name `greet` uses when given none.
    #[arg(long)]
    default_name: Option<String>,
}

/// Whether demo-cli is talking to a person: stdin and stderr are terminals.
pub(crate) fn interactive() -> bool {
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

fn config_file() -> Option<PathBuf> {
    directories::ProjectDirs::from("", "", "demo-cli").map(|d| d.config_dir().join("default-name"))
}

/// The name chosen in `init`, if setup was completed.
pub(crate) fn default_name() -> Option<String> {
    let text = std::fs::read_to_string(config_file()?).ok()?;
    Some(text.trim().to_owned()).filter(|n| !n.is_empty())
}

pub(crate) fn run(args: &InitArgs, telemetry: &Telemetry) -> Result<()> {
    telemetry.setup_started();
    let name = match &args.default_name {
        Some(name) => name.clone(),
        None if interactive() => ask("Who should demo-cli greet by default?", "world")?,
        None => bail!("not a terminal: pass --default-name NAME to run setup from a script"),
    };
    let file = config_file().context("no home folder to keep the setup in")?;
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&file, format!("{name}\n"))
        .with_context(|| format!("writing {}", file.display()))?;
    telemetry.setup_completed();
    println!("Set up: `demo-cli greet` now greets {name}.");
    Ok(())
}

fn ask(question: &str, default: &str) -> Result<String> {
    let mut stderr = std::io::stderr();
    write!(stderr, "{question} [{default}] ")?;
    stderr.flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let answer = line.trim();
    Ok(if answer.is_empty() { default } else { answer }.to_owned())
}
