//! The `telemetry` subcommand a host mounts, the first-run prompt, and the
//! commands of the machine-wide `telemetry-consent` tool.
//!
//! # Mounting the subcommand
//!
//! A clap-based host adds one variant to its subcommand enum, runs it, and
//! asks the first-run question only for the commands it names (here `init`,
//! a command only a person types; never a shell hook's or start-up file's):
//!
//! ```no_run
//! use clap::{Parser, Subcommand};
//! use telemetry_client::Telemetry;
//! use telemetry_client::cli::Run;
//!
//! #[derive(Parser)]
//! struct Cli {
//!     #[command(subcommand)]
//!     command: Command,
//! }
//!
//! #[derive(Subcommand)]
//! enum Command {
//!     /// Set the tool up.
//!     Init,
//!     /// See and change what this tool may send to its maintainers.
//!     Telemetry(telemetry_client::cli::TelemetryArgs),
//! }
//!
//! fn main() -> std::process::ExitCode {
//! #   const MANIFEST: &str = "";
//!     let telemetry = Telemetry::builder(MANIFEST) // include_str!("../telemetry.toml")
//!         .prompt_commands(["init"])
//!         .build();
//!     let cli = Cli::parse();
//!     match cli.command {
//!         Command::Telemetry(args) => args.run(&telemetry),
//!         Command::Init => {
//!             telemetry_client::cli::prompt_if_needed(&telemetry, "init");
//!             std::process::ExitCode::SUCCESS
//!         }
//!     }
//! }
//! ```
//!
//! Users then type `<tool> telemetry enable`, `<tool> telemetry disable` and
//! `<tool> telemetry show`. Exit codes: 0 success, 1 failure, 2 bad usage.
//!
//! # Layout
//!
//! - this module: [`TelemetryArgs`] and what each subcommand does;
//! - `prompt`: the first-run prompt and the interactive questions;
//! - `output`: aligned, optionally coloured output;
//! - `machine`: the `telemetry-consent` tool ([`ConsentArgs`]).

mod machine;
mod output;
mod prompt;

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use telemetry_protocol::{Tier, Timestamp};

use crate::consent::Source;
use crate::control::{Control, Status};
use crate::env::{self, EnvSnapshot};
use crate::mistakes::Mistakes;
use crate::upload_log::{LogEntry, UploadResult};
use crate::{Diagnostics, Error, Telemetry};

pub use machine::{Ceiling, ConsentArgs, MachineCommand};
use output::{Stream, Style};
pub use prompt::prompt_if_needed;

/// Exit code for bad usage, the same as clap's.
const USAGE: u8 = 2;

pub use telemetry_args::{EnableArgs, Level, ParseLevelError, TelemetryArgs, TelemetryCommand};

/// The tier a user opts in to with `telemetry enable <level>`.
fn tier_of(level: Level) -> Tier {
    match level {
        Level::Aggregate => Tier::Aggregate,
        Level::Anonymous => Tier::Anonymous,
        Level::Full => Tier::Full,
    }
}

/// A `telemetry` (or `telemetry-consent`) command that failed: what to tell
/// the user, what to try instead, and the exit code. [`TelemetryArgs::run`]
/// prints it; [`TelemetryArgs::try_run`] returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandError {
    code: u8,
    message: String,
    hint: Option<String>,
}

impl CommandError {
    fn new(code: u8, message: impl Into<String>) -> CommandError {
        CommandError {
            code,
            message: message.into(),
            hint: None,
        }
    }

    fn with_hint(mut self, hint: impl Into<String>) -> CommandError {
        self.hint = Some(hint.into());
        self
    }

    /// The exit code `run` uses: 1 for a failure, 2 for bad usage (as clap).
    pub fn exit_code(&self) -> u8 {
        self.code
    }

    /// What the user could do instead, if there is a suggestion.
    pub fn hint(&self) -> Option<&str> {
        self.hint.as_deref()
    }
}

impl std::fmt::Display for CommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CommandError {}

impl From<Error> for CommandError {
    fn from(e: Error) -> CommandError {
        let code = match e {
            Error::UnknownIdentityField(_)
            | Error::IdentityTooLong { .. }
            | Error::IdentityNeedsFull
            | Error::InvalidToolName(_) => USAGE,
            _ => 1,
        };
        let hint = match &e {
            Error::Io { path, .. } => Some(format!(
                "check that {} can be written (permissions, disk space)",
                path.parent().unwrap_or(path).display()
            )),
            Error::Unreachable(_) | Error::Timeout(_) => {
                Some("the data stays queued and is sent on a later run".to_owned())
            }
            _ => None,
        };
        CommandError {
            code,
            message: e.to_string(),
            hint,
        }
    }
}

type Outcome = Result<(), CommandError>;

fn finish(outcome: Outcome) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            output::error(&f.message, f.hint.as_deref());
            ExitCode::from(f.code)
        }
    }
}

/// Runs the `telemetry` subcommand against the host's handle.
///
/// [`TelemetryArgs`] is defined in the small `telemetry-args` crate (clap
/// only, for a host's `build.rs`), so running it is this trait's job: bring
/// it into scope with `use telemetry_client::cli::Run;`.
pub trait Run {
    /// Runs the subcommand. Prints results on stdout, questions and errors
    /// on stderr; returns 0 on success, 1 on failure and 2 on bad usage.
    fn run(&self, telemetry: &Telemetry) -> ExitCode;

    /// Runs the subcommand like [`Run::run`], but returns a failure instead
    /// of printing it, for a host that reports errors its own way (`anyhow`,
    /// its own exit codes). Results and questions are printed as with `run`.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use telemetry_client::cli::Run;
    /// # let telemetry = telemetry_client::Telemetry::builder("").build();
    /// # let args = telemetry_client::cli::TelemetryArgs { command: None };
    /// args.try_run(&telemetry)?;
    /// # Ok(())
    /// # }
    /// ```
    fn try_run(&self, telemetry: &Telemetry) -> Result<(), CommandError>;
}

impl Run for TelemetryArgs {
    fn run(&self, telemetry: &Telemetry) -> ExitCode {
        finish(execute(self, telemetry))
    }

    fn try_run(&self, telemetry: &Telemetry) -> Result<(), CommandError> {
        execute(self, telemetry)
    }
}

fn execute(args: &TelemetryArgs, telemetry: &Telemetry) -> Outcome {
    let control = telemetry.control()?;
    let interactive = telemetry.ready().is_some_and(|c| c.interactive);
    match args.command.clone().unwrap_or(TelemetryCommand::Status {
        json: false,
        verbose: false,
    }) {
        TelemetryCommand::Status { json, verbose } => {
            let verbose = verbose.then(|| Verbose {
                this_run: telemetry.diagnostics(),
                earlier: telemetry
                    .ready()
                    .and_then(|core| core.paths.as_ref())
                    .map(Mistakes::load)
                    .unwrap_or_default(),
            });
            status(&control, json, verbose)
        }
        TelemetryCommand::Enable(args) => enable(&control, &args, interactive),
        TelemetryCommand::Disable => disable(&control),
        TelemetryCommand::Show => show(&control),
        TelemetryCommand::Log { json } => log(&control, json),
        TelemetryCommand::ResetId => reset_id(&control),
        TelemetryCommand::Flush { timeout } => flush(&control, Duration::from_secs(timeout)),
        // The definition lives in telemetry-args; a newer one than this
        // client knows is a build with mismatched crate versions.
        _ => Err(CommandError::new(
            USAGE,
            "this telemetry-client does not know that command; update it to match telemetry-args",
        )),
    }
}

/// The rule that decided the level, in words.
fn source_words(source: Source, tool: &str, env: &EnvSnapshot, status: &Status) -> String {
    let file = |p: Option<&std::path::Path>| p.map(|p| p.display().to_string()).unwrap_or_default();
    match source {
        Source::Environment if env.do_not_track() => "the environment (DO_NOT_TRACK)".to_owned(),
        Source::Environment => format!("the environment ({})", env::level_var(tool)),
        Source::SystemPolicy => {
            format!("the system policy ({})", crate::folders::SYSTEM_POLICY_PATH)
        }
        Source::GlobalFile => {
            "your global ceiling for every tool (lift it with `telemetry-consent global none`)"
                .to_owned()
        }
        Source::ToolFile => format!("your choice ({})", file(status.config_file.as_deref())),
        Source::Default if status.level == Tier::Off => {
            "the default: you have not opted in".to_owned()
        }
        Source::Default => "the tool's default".to_owned(),
    }
}

fn time_or_never(t: Option<Timestamp>) -> String {
    t.map_or_else(|| "never".to_owned(), |t| t.to_string())
}

/// What `status --verbose` adds: this run's counts, and the mistakes earlier
/// runs of this tool version made, by name.
struct Verbose {
    this_run: Diagnostics,
    earlier: Mistakes,
}

/// `status`; with `verbose`, also the author's diagnostics.
fn status(control: &Control<'_>, json: bool, verbose: Option<Verbose>) -> Outcome {
    let status = control.status()?;
    if json {
        let mut value = serde_json::to_value(&status)
            .map_err(|e| CommandError::new(1, format!("cannot encode the status: {e}")))?;
        if let (Some(v), Some(object)) = (verbose.as_ref(), value.as_object_mut()) {
            object.insert(
                "diagnostics".to_owned(),
                serde_json::to_value(v.this_run).unwrap_or_default(),
            );
            object.insert(
                "earlier_runs".to_owned(),
                serde_json::to_value(&v.earlier).unwrap_or_default(),
            );
        }
        let text = serde_json::to_string_pretty(&value)
            .map_err(|e| CommandError::new(1, format!("cannot encode the status: {e}")))?;
        output::out(&text);
        return Ok(());
    }
    let tool = control.tool();
    let env = EnvSnapshot::capture(tool);
    let style = Style::for_stream(Stream::Stdout);
    let level = if status.level == Tier::Off {
        style.bold(status.level.as_str())
    } else {
        style.green(&style.bold(status.level.as_str()))
    };
    let mut rows = vec![
        ("level", level),
        (
            "decided by",
            source_words(status.source, tool, &env, &status),
        ),
    ];
    // The resolution stops at `DO_NOT_TRACK` without reading the tool file,
    // so read the stored choice here: users should see what they chose.
    let stored = status.choice.or_else(|| {
        let file = status.config_file.as_deref()?;
        crate::consent::file_level(&crate::consent::FileInput::read(file))
            .ok()
            .flatten()
    });
    if let Some(choice) = stored.filter(|c| *c != status.level) {
        rows.push((
            "your choice",
            style.yellow(&format!("{choice} (lowered by the rule above)")),
        ));
    }
    if let Some(why) = &status.unreadable {
        rows.push(("unreadable", style.yellow(why)));
    }
    let config = status
        .config_file
        .as_ref()
        .map_or_else(|| "none".to_owned(), |p| p.display().to_string());
    rows.push(("config file", config));
    rows.push((
        "install id",
        status
            .install_id
            .map_or_else(|| "none".to_owned(), |id| id.to_string()),
    ));
    rows.push(("pending", format!("{} items", status.pending)));
    if status.pending_deletions > 0 {
        rows.push((
            "deletion pending",
            style.yellow(&format!(
                "{} request(s) not yet acknowledged by the collector; retried until they are",
                status.pending_deletions
            )),
        ));
    }
    rows.push(("last upload", time_or_never(status.last_upload)));
    if let Some(why) = &status.last_failure {
        rows.push((
            "last attempt",
            style.yellow(&format!("not delivered: {why}")),
        ));
    }
    rows.push(("endpoint", status.endpoint.clone()));
    rows.push(("sends", status.summary.clone()));
    let identity: Vec<&str> = control
        .manifest()
        .identity
        .keys()
        .map(String::as_str)
        .collect();
    if !identity.is_empty() {
        rows.push((
            "identity fields",
            format!("{} (asked for at full)", identity.join(", ")),
        ));
    }
    if let Some(v) = &verbose {
        rows.extend(verbose_rows(&style, &status, &v.this_run));
        rows.extend(earlier_rows(&style, &v.earlier));
    }
    let mut text = format!("{} telemetry\n", style.bold(tool));
    text.push_str(&output::aligned(&style, &rows));
    text.push_str(&style.dim(&format!(
        "Opt in: `{tool} telemetry enable`. Opt out: `{tool} telemetry disable`. See what is sent: `{tool} telemetry show`.\n"
    )));
    output::write(Stream::Stdout, &text);
    Ok(())
}

/// The rows for the mistakes earlier runs of this version made, by name.
fn earlier_rows(style: &Style, earlier: &Mistakes) -> Vec<(&'static str, String)> {
    let list = |names: &BTreeMap<String, u64>| {
        let items: Vec<String> = names
            .iter()
            .map(|(name, n)| format!("`{name}` ×{n}"))
            .collect();
        style.yellow(&items.join(", "))
    };
    let mut rows = Vec::new();
    for (names, what) in [
        (&earlier.undeclared_events, "undeclared events"),
        (&earlier.undeclared_props, "undeclared props"),
        (&earlier.dropped_props, "values that do not fit"),
    ] {
        if !names.is_empty() {
            rows.push((what, list(names)));
        }
    }
    if let (Some(since), false) = (earlier.since, rows.is_empty()) {
        rows.insert(
            0,
            (
                "earlier runs",
                format!("since {} (version {})", since.day(), earlier.tool_version),
            ),
        );
    }
    rows
}

/// The rows `status --verbose` adds: the mistakes a tool's author wants to
/// hear about, which ordinary runs never print.
fn verbose_rows(style: &Style, status: &Status, d: &Diagnostics) -> Vec<(&'static str, String)> {
    let mut rows = Vec::new();
    let version = if d.unknown_tool_version {
        style.yellow("unknown (the version the tool gave is longer than 64 bytes or has spaces)")
    } else {
        status.tool_version.clone()
    };
    rows.push(("tool version", version));
    let mistakes = [
        (d.undeclared_events, "undeclared events"),
        (d.undeclared_props, "undeclared props"),
        (d.dropped_props, "props whose value does not fit"),
        (d.above_tier, "events above the level"),
        (d.spool_dropped, "dropped for a full spool"),
        (d.io_errors, "file errors"),
    ];
    let found: Vec<String> = mistakes
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
    let run = if found.is_empty() {
        format!("{} recorded, nothing dropped", d.recorded)
    } else {
        style.yellow(&format!("{} recorded; {}", d.recorded, found.join(", ")))
    };
    rows.push(("this run", run));
    if !status.dropped.is_empty() {
        let drops: Vec<String> = status
            .dropped
            .iter()
            .map(|(why, n)| format!("{why} {n}"))
            .collect();
        rows.push((
            "dropped, unreported",
            format!("{} (sent with the next upload)", drops.join(", ")),
        ));
    }
    rows
}

/// The levels `enable` offers: `off` is `disable`'s.
fn enable_levels(control: &Control<'_>) -> Vec<Tier> {
    let mut offered = prompt::offered(control.manifest());
    offered.retain(|t| *t != Tier::Off);
    offered
}

fn enable(control: &Control<'_>, args: &EnableArgs, interactive: bool) -> Outcome {
    let tool = control.tool();
    let identity: BTreeMap<String, String> = args.identity.iter().cloned().collect();
    let err_style = Style::for_stream(Stream::Stderr);
    let tier = match args.level {
        Some(level) => tier_of(level),
        None if interactive => {
            let mut stderr = std::io::stderr().lock();
            let _ = std::io::Write::write_all(
                &mut stderr,
                prompt::levels(control.manifest(), &err_style, false).as_bytes(),
            );
            let offered = enable_levels(control);
            let chosen = prompt::choose(
                &format!("Level to enable [{}]: ", prompt::slashed(&offered)),
                Tier::Off,
                &offered,
                prompt::ATTEMPTS,
                &mut std::io::stdin().lock(),
                &mut stderr,
            );
            match chosen {
                Some(Tier::Off) | None => {
                    return Err(CommandError::new(1, "nothing changed").with_hint(format!(
                        "to turn telemetry off, run `{tool} telemetry disable`"
                    )));
                }
                Some(tier) => tier,
            }
        }
        None => {
            return Err(
                CommandError::new(USAGE, "no level given and no terminal to ask on").with_hint(
                    format!(
                        "run `{tool} telemetry enable <{}>`",
                        prompt::slashed(&enable_levels(control)).replace('/', "|")
                    ),
                ),
            );
        }
    };
    if tier == Tier::Full && control.manifest().identity.is_empty() {
        return Err(CommandError::new(
            USAGE,
            format!("{tool} does not offer `full`: it asks for no identity fields, so `full` would send nothing more than `anonymous`"),
        )
        .with_hint(format!("run `{tool} telemetry enable anonymous`")));
    }
    let mut identity = control.check_identity(tier, identity).map_err(|e| {
        let fields: Vec<&str> = control
            .manifest()
            .identity
            .keys()
            .map(String::as_str)
            .collect();
        let hint = if fields.is_empty() {
            "this tool asks for no identity fields".to_owned()
        } else {
            format!(
                "identity fields of {tool} (with `full`): {}",
                fields.join(", ")
            )
        };
        CommandError::from(e).with_hint(hint)
    })?;
    if tier == Tier::Full && !args.yes {
        if !interactive {
            let mut command = vec![format!("{tool} telemetry enable full --yes")];
            command.extend(
                control
                    .manifest()
                    .identity
                    .keys()
                    .map(|f| format!("--identity {f}=...")),
            );
            return Err(
                CommandError::new(USAGE, "`full` needs an explicit confirmation").with_hint(
                    format!(
                        "run it in a terminal, or confirm with `{}`",
                        command.join(" ")
                    ),
                ),
            );
        }
        let confirmed = prompt::full_dialogue(
            control.manifest(),
            identity,
            &err_style,
            &mut std::io::stdin().lock(),
            &mut std::io::stderr().lock(),
        );
        identity =
            confirmed.ok_or_else(|| CommandError::new(1, "not confirmed; nothing changed"))?;
    }
    control.set_level(tier, identity)?;
    let style = Style::for_stream(Stream::Stdout);
    let status = control.status()?;
    let mut text = format!(
        "Telemetry for {tool} is now {}.\n",
        style.green(&style.bold(tier.as_str()))
    );
    if status.level < tier {
        text.push_str(&style.yellow(&format!(
            "Saved, but {} keeps it at {} for now.\n",
            source_words(status.source, tool, &EnvSnapshot::capture(tool), &status),
            status.level
        )));
    }
    text.push_str(&format!(
        "It sends: {}\n",
        control.manifest().tier_summary(tier)
    ));
    text.push_str(&style.dim(&format!(
        "See what would be sent with `{tool} telemetry show`; stop with `{tool} telemetry disable`.\n"
    )));
    output::write(Stream::Stdout, &text);
    Ok(())
}

fn disable(control: &Control<'_>) -> Outcome {
    let tool = control.tool();
    let before = control.status()?;
    control.set_level(Tier::Off, BTreeMap::new())?;
    let style = Style::for_stream(Stream::Stdout);
    let mut text = format!("Telemetry for {tool} is now {}.\n", style.bold("off"));
    match before.install_id {
        Some(id) => text.push_str(&format!(
            "Deleted the local install id, identity and pending events. A request to delete everything stored under {id} is being sent now; if the collector cannot be reached it stays queued and is retried (`{tool} telemetry status` shows it).\n"
        )),
        None => text.push_str("Deleted pending data. Nothing more is recorded or sent.\n"),
    }
    output::write(Stream::Stdout, &text);
    Ok(())
}

fn show(control: &Control<'_>) -> Outcome {
    let payloads = control.pending_payloads()?;
    let text = serde_json::to_string_pretty(&payloads)
        .map_err(|e| CommandError::new(1, format!("cannot encode the payloads: {e}")))?;
    output::out(&text);
    if payloads.is_empty() {
        output::err("Nothing is waiting to be sent.");
    }
    Ok(())
}

fn result_word(style: &Style, result: UploadResult) -> String {
    let word = serde_json::to_value(result)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    match result {
        UploadResult::Delivered | UploadResult::Printed => style.green(&word),
        UploadResult::Deferred => style.yellow(&word),
        _ => style.red(&word),
    }
}

fn log(control: &Control<'_>, json: bool) -> Outcome {
    let entries: Vec<LogEntry> = control.upload_log()?;
    if json {
        let text = serde_json::to_string_pretty(&entries)
            .map_err(|e| CommandError::new(1, format!("cannot encode the log: {e}")))?;
        output::out(&text);
        return Ok(());
    }
    if entries.is_empty() {
        output::out("No uploads yet.");
        return Ok(());
    }
    let style = Style::for_stream(Stream::Stdout);
    let rows: Vec<Vec<String>> = entries
        .iter()
        .rev()
        .map(|e| {
            let kind = serde_json::to_value(e.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            vec![
                e.time.to_string(),
                kind,
                e.tier.map_or_else(|| "-".to_owned(), |t| t.to_string()),
                e.items.to_string(),
                result_word(&style, e.result),
                e.detail.clone(),
            ]
        })
        .collect();
    output::write(
        Stream::Stdout,
        &output::table(
            &style,
            &["TIME", "KIND", "TIER", "ITEMS", "RESULT", "DETAIL"],
            &rows,
        ),
    );
    Ok(())
}

fn reset_id(control: &Control<'_>) -> Outcome {
    let tool = control.tool();
    let old = control.status()?.install_id;
    let fresh = control.reset_id().map_err(|e| match e {
        Error::NoInstallId(_) => CommandError::from(e)
            .with_hint(format!("`{tool} telemetry enable anonymous` creates one")),
        e => CommandError::from(e),
    })?;
    let mut text = format!("New install id: {fresh}\n");
    if let Some(old) = old {
        text.push_str(&format!(
            "A request to delete everything stored under {old} is queued.\n"
        ));
    }
    output::write(Stream::Stdout, &text);
    Ok(())
}

fn flush(control: &Control<'_>, timeout: Duration) -> Outcome {
    let report = control.flush(timeout)?;
    let mut text =
        if report.delivered_payloads == 0 && report.deletions == 0 && report.rejected == 0 {
            "Nothing to send.\n".to_owned()
        } else {
            format!(
                "Sent {} payloads ({} items) and {} deletion requests.\n",
                report.delivered_payloads, report.delivered_items, report.deletions
            )
        };
    if report.rejected > 0 {
        text.push_str(&format!(
            "The collector refused {} and they were dropped; `{} telemetry log` says why.\n",
            report.rejected,
            control.tool()
        ));
    }
    output::write(Stream::Stdout, &text);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enable_levels_read_as_the_clients_own_tier_parser() {
        // telemetry-args cannot depend on the protocol crate, so this keeps
        // its words and its tiers the same as ours.
        for level in [Level::Aggregate, Level::Anonymous, Level::Full] {
            assert_eq!(Some(tier_of(level)), level.as_str().parse::<Tier>().ok());
        }
        let ours = "max".parse::<Tier>().unwrap_err().to_string();
        assert_eq!("max".parse::<Level>().unwrap_err().to_string(), ours);
        assert!(
            "off"
                .parse::<Level>()
                .unwrap_err()
                .to_string()
                .contains("disable")
        );
    }

    #[test]
    fn verbose_rows_name_each_kind_of_mistake_and_pending_drops() {
        let style = Style::for_stream(Stream::Stdout).plain();
        let d = Diagnostics {
            recorded: 3,
            undeclared_events: 2,
            undeclared_props: 1,
            ..Diagnostics::default()
        };
        let status = Status {
            tool: "t".into(),
            level: Tier::Aggregate,
            source: Source::ToolFile,
            config_file: None,
            install_id: None,
            pending: 0,
            last_upload: None,
            summary: String::new(),
            endpoint: String::new(),
            choice: None,
            unreadable: None,
            pending_deletions: 0,
            tool_version: "1.2.3".into(),
            dropped: BTreeMap::from([("spool_full".to_owned(), 4)]),
            last_failure: None,
        };
        let rows = verbose_rows(&style, &status, &d);
        assert_eq!(
            rows,
            [
                ("tool version", "1.2.3".to_owned()),
                (
                    "this run",
                    "3 recorded; 2 undeclared events, 1 undeclared props".to_owned()
                ),
                (
                    "dropped, unreported",
                    "spool_full 4 (sent with the next upload)".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn try_run_returns_the_failure_run_would_print() {
        let dir = tempfile::tempdir().unwrap();
        let telemetry =
            Telemetry::builder("project = \"t-cli\"\nendpoint = \"https://t.example.org\"\n")
                .dirs(dir.path().join("c"), dir.path().join("s"))
                .system_policy(None)
                .interactive(false)
                .detached_upload(false)
                .build();
        let enable = |level: Option<Level>| TelemetryArgs {
            command: Some(TelemetryCommand::Enable(EnableArgs {
                level,
                yes: false,
                identity: Vec::new(),
            })),
        };
        let e = enable(None).try_run(&telemetry).unwrap_err();
        assert_eq!(e.exit_code(), USAGE);
        assert_eq!(e.to_string(), "no level given and no terminal to ask on");
        assert_eq!(
            e.hint(),
            Some("run `t-cli telemetry enable <aggregate|anonymous>`"),
            "no `full` without identity fields"
        );
        assert_eq!(enable(Some(Level::Aggregate)).try_run(&telemetry), Ok(()));
        assert_eq!(
            telemetry.control().unwrap().status().unwrap().choice,
            Some(Tier::Aggregate)
        );
    }
}
