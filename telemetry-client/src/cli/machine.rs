//! The machine-wide consent tool, `telemetry-consent`: one place to see and
//! switch off every tool on this machine that uses the toolkit, and to set a
//! ceiling that holds for tools installed later too.
//!
//! It works from the shared consent folder alone, so it needs no tool's
//! manifest. The machine-wide management it runs on is not public: every
//! tool's consent is the user's to change, here, never a host's.

use std::process::ExitCode;

use telemetry_protocol::Tier;

use crate::consent::Source;
use crate::control::Machine;
use crate::control::ToolSummary;

use super::output::{self, Stream, Style};
use super::{CommandError, Outcome, finish};

/// `telemetry-consent`: see and change telemetry for every tool on this machine.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "telemetry-consent",
    version,
    after_help = "Levels: off, aggregate, anonymous, full. `DO_NOT_TRACK=1` turns every tool off."
)]
#[non_exhaustive]
pub struct ConsentArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: MachineCommand,
}

/// The subcommands of `telemetry-consent`.
#[derive(Debug, Clone, clap::Subcommand)]
#[non_exhaustive]
pub enum MachineCommand {
    /// List every tool on this machine that uses the toolkit.
    List {
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Set one tool's level.
    Set {
        /// The tool's name, as `list` shows it.
        tool: String,
        /// off, aggregate, anonymous or full.
        #[arg(value_parser = parse_tier)]
        level: Tier,
    },
    /// Turn every listed tool off (and delete their local data).
    Disable {
        /// Every tool; required, so nothing is switched off by accident.
        #[arg(long, required = true)]
        all: bool,
    },
    /// Set a ceiling for every tool, now and later; `none` lifts it.
    Global {
        /// off, aggregate, anonymous, full or none.
        #[arg(value_name = "LEVEL|none", value_parser = parse_ceiling)]
        level: Ceiling,
    },
    /// Print the folders in use.
    Where,
}

/// The argument of `global`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Ceiling {
    /// Cap every tool at this level.
    Level(Tier),
    /// No ceiling.
    None,
}

fn parse_tier(s: &str) -> Result<Tier, String> {
    s.parse::<Tier>().map_err(|e| e.to_string())
}

fn parse_ceiling(s: &str) -> Result<Ceiling, String> {
    if s.trim().eq_ignore_ascii_case("none") {
        return Ok(Ceiling::None);
    }
    s.parse::<Tier>()
        .map(Ceiling::Level)
        .map_err(|e| format!("{e}, or `none` to lift the ceiling"))
}

/// The marker value the detached copy of this tool runs with: it only
/// sends the queued deletions of every tool, then exits.
const DELIVERER: &str = "telemetry-consent";

/// How long the detached copy may spend sending deletions.
const DELIVERY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

impl ConsentArgs {
    /// Runs the command for the current user's folders.
    ///
    /// After `disable --all` and `global off`, and after any command while a
    /// tool still has a deletion request queued, a detached copy of this
    /// program sends those requests to each tool's stored endpoint, so an
    /// opt-out reaches the collectors within seconds without running the
    /// tools. Where a collector cannot be reached the request stays queued,
    /// and the tool's next run or this program's next run retries it.
    pub fn run(&self) -> ExitCode {
        let machine = match Machine::new() {
            Ok(m) => m,
            Err(e) => return finish(Err(CommandError::from(e))),
        };
        if std::env::var(crate::env::UPLOADER_MARKER).is_ok_and(|v| v == DELIVERER) {
            crate::detach::lower_priority();
            let _ = machine.deliver_deletions(DELIVERY_TIMEOUT);
            return ExitCode::SUCCESS;
        }
        let outcome = self.run_with(&machine);
        let opted_out = matches!(
            self.command,
            MachineCommand::Disable { .. }
                | MachineCommand::Global {
                    level: Ceiling::Level(Tier::Off)
                }
        );
        if machine.deletions_due(opted_out) {
            // `where` only so that the copy's command line parses; the
            // marker makes it send the deletions instead.
            crate::detach::spawn_with(DELIVERER, &["where"]);
        }
        finish(outcome)
    }

    fn run_with(&self, machine: &Machine) -> Outcome {
        match &self.command {
            MachineCommand::List { json } => list(machine, *json),
            MachineCommand::Set { tool, level } => set(machine, tool, *level),
            MachineCommand::Disable { .. } => disable_all(machine),
            MachineCommand::Global { level } => global(machine, *level),
            MachineCommand::Where => where_(machine),
        }
    }
}

fn source_word(source: Source) -> &'static str {
    match source {
        Source::Environment => "environment",
        Source::SystemPolicy => "system policy",
        Source::GlobalFile => "global ceiling",
        Source::ToolFile => "tool choice",
        Source::Default => "default",
    }
}

fn list(machine: &Machine, json: bool) -> Outcome {
    let tools: Vec<ToolSummary> = machine.list_tools()?;
    if json {
        let text = serde_json::to_string_pretty(&tools)
            .map_err(|e| CommandError::new(1, format!("cannot encode the list: {e}")))?;
        output::out(&text);
        return Ok(());
    }
    let style = Style::for_stream(Stream::Stdout);
    let mut text = String::new();
    if let Ok(Some(ceiling)) = machine.global_ceiling() {
        text.push_str(&style.yellow(&format!(
            "Global ceiling: {ceiling} (lift it with `telemetry-consent global none`)\n"
        )));
    }
    if tools.is_empty() {
        text.push_str("No tool on this machine uses the telemetry toolkit yet.\n");
        output::write(Stream::Stdout, &text);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = tools
        .iter()
        .map(|t| {
            let level = if t.level == Tier::Off {
                t.level.to_string()
            } else {
                style.green(t.level.as_str())
            };
            vec![
                t.tool.clone(),
                level,
                source_word(t.source).to_owned(),
                t.last_upload
                    .map_or_else(|| "never".to_owned(), |t| t.to_string()),
            ]
        })
        .collect();
    text.push_str(&output::table(
        &style,
        &["TOOL", "LEVEL", "SOURCE", "LAST UPLOAD"],
        &rows,
    ));
    output::write(Stream::Stdout, &text);
    Ok(())
}

fn set(machine: &Machine, tool: &str, level: Tier) -> Outcome {
    let known = machine.list_tools()?.iter().any(|t| t.tool == tool);
    machine.set_tool_level(tool, level)?;
    output::out(&format!("{tool} is now {level}."));
    if !known {
        output::err(&format!(
            "note: {tool} has not run on this machine yet; the choice applies when it does"
        ));
    }
    Ok(())
}

fn disable_all(machine: &Machine) -> Outcome {
    let tools = machine.disable_all()?;
    if tools.is_empty() {
        output::out("No tool on this machine uses the telemetry toolkit yet.");
    } else {
        output::out(&format!("Turned off: {}.", tools.join(", ")));
        output::out(
            "Local data was deleted, and the deletion requests are being sent now; any that cannot be sent are retried later.",
        );
    }
    Ok(())
}

fn global(machine: &Machine, ceiling: Ceiling) -> Outcome {
    let level = match ceiling {
        Ceiling::Level(tier) => Some(tier),
        Ceiling::None => None,
    };
    machine.set_global_ceiling(level)?;
    match level {
        Some(Tier::Off) => output::out(
            "Every tool on this machine is now off, including tools installed later. Lift it with `telemetry-consent global none`.",
        ),
        Some(tier) => output::out(&format!(
            "No tool on this machine sends more than {tier}, including tools installed later."
        )),
        None => output::out("The global ceiling is lifted; each tool's own choice applies."),
    }
    Ok(())
}

fn where_(machine: &Machine) -> Outcome {
    let folders = &machine.folders;
    let style = Style::for_stream(Stream::Stdout);
    let ceiling = match machine.global_ceiling() {
        Ok(Some(tier)) => format!("ceiling {tier}"),
        Ok(None) => "no ceiling".to_owned(),
        Err(e) => format!("unreadable: {e}"),
    };
    let policy = std::path::Path::new(crate::folders::SYSTEM_POLICY_PATH);
    let rows = [
        ("consent folder", folders.config.display().to_string()),
        (
            "global file",
            format!("{} ({ceiling})", folders.global_file().display()),
        ),
        ("tool files", folders.tools_dir().display().to_string()),
        ("state folder", folders.state.display().to_string()),
        (
            "system policy",
            format!(
                "{} ({})",
                policy.display(),
                if policy.exists() { "present" } else { "absent" }
            ),
        ),
    ];
    output::write(Stream::Stdout, &output::aligned(&style, &rows));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_parse_none_and_levels() {
        assert_eq!(parse_ceiling("none"), Ok(Ceiling::None));
        assert_eq!(parse_ceiling("OFF"), Ok(Ceiling::Level(Tier::Off)));
        let e = parse_ceiling("nope").unwrap_err();
        assert!(
            e.contains("off, aggregate, anonymous, full") && e.contains("none"),
            "{e}"
        );
    }
}
