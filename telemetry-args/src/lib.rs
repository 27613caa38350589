//! The clap definition of the `telemetry` subcommand that
//! [`telemetry-client`](https://docs.rs/telemetry-client) hosts mount, with
//! clap as the only dependency.
//!
//! `telemetry_client::cli::TelemetryArgs` is [`TelemetryArgs`]: a host
//! mounts it from either crate and runs it with `telemetry_client::cli::Run`.
//! This crate is what a host's `build.rs` depends on when it includes the
//! host's clap definition to generate completions or man pages, so that the
//! build script compiles clap and nothing of the client's runtime (its
//! transport, TLS stack or manifest code).
//!
//! ```
//! use clap::{CommandFactory, Parser, Subcommand};
//!
//! #[derive(Parser)]
//! #[command(name = "mytool")]
//! struct Cli {
//!     #[command(subcommand)]
//!     command: Command,
//! }
//!
//! #[derive(Subcommand)]
//! enum Command {
//!     /// See and change what this tool may send to its maintainers.
//!     Telemetry(telemetry_args::TelemetryArgs),
//! }
//!
//! // What a build script hands to clap_complete or clap_mangen:
//! let cmd = Cli::command();
//! let telemetry = cmd.find_subcommand("telemetry").unwrap();
//! assert!(telemetry.find_subcommand("disable").is_some());
//!
//! let cli = Cli::parse_from(["mytool", "telemetry", "enable", "aggregate"]);
//! let Command::Telemetry(args) = cli.command;
//! assert!(matches!(
//!     args.command,
//!     Some(telemetry_args::TelemetryCommand::Enable(telemetry_args::EnableArgs {
//!         level: Some(telemetry_args::Level::Aggregate),
//!         ..
//!     }))
//! ));
//! ```
//!
//! # Help
//!
//! Styles set on the host's command (`Command::styles`, colour choice) reach
//! these subcommands, as clap propagates them. A help template does not
//! propagate in clap; [`TelemetryArgs::follow_template`] applies the host's
//! to the `telemetry` subcommand and each of its own.

use std::fmt;
use std::str::FromStr;

/// The `telemetry` subcommand: mount it as
/// `Telemetry(telemetry_args::TelemetryArgs)` (or through
/// `telemetry_client::cli`, the same type) and run it with
/// `telemetry_client::cli::Run`. Without a subcommand it shows the status.
#[derive(Debug, Clone, clap::Args)]
#[command(
    after_help = "Nothing is sent unless you opt in. `DO_NOT_TRACK=1` turns telemetry off for every tool."
)]
pub struct TelemetryArgs {
    /// What to do; `status` when omitted.
    #[command(subcommand)]
    pub command: Option<TelemetryCommand>,
}

/// The subcommands of `telemetry`.
#[derive(Debug, Clone, clap::Subcommand)]
#[non_exhaustive]
pub enum TelemetryCommand {
    /// Show the level, what decided it, and what it sends.
    Status {
        /// Print one JSON object (level, source, config_file, install_id, pending, ...).
        #[arg(long)]
        json: bool,
        /// Also show what went wrong in this run: undeclared events and props,
        /// values that do not fit, a tool version sent as `unknown`, drops.
        #[arg(long, short = 'v')]
        verbose: bool,
    },
    /// Opt in: choose what to share (asks when no level is given).
    Enable(EnableArgs),
    /// Opt out: turn telemetry off, delete local data and ask the collector to delete the rest.
    Disable,
    /// Print exactly what would be sent next, as the JSON payloads.
    Show,
    /// List recent uploads and their results.
    Log {
        /// Print the entries as a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Start a new install id and ask the collector to delete data under the old one.
    ResetId,
    /// Send pending data now and report; fails if the collector cannot be reached.
    Flush {
        /// Give up after this many seconds; the data then stays queued.
        #[arg(long, value_name = "SECONDS", default_value_t = 10)]
        timeout: u64,
    },
}

/// Arguments of `telemetry enable`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "\
Examples:
  telemetry enable                  choose interactively
  telemetry enable aggregate        daily counts only, no identifier
  telemetry enable full --yes --identity email=me@example.org
`telemetry status` lists this tool's identity fields.")]
pub struct EnableArgs {
    /// aggregate, anonymous or full; asks when omitted.
    #[arg(value_name = "LEVEL")]
    pub level: Option<Level>,
    /// Do not ask for confirmation (for scripts); needed for `full` without a terminal.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// An identity field for `full`, as FIELD=VALUE; repeat it for each field.
    #[arg(long = "identity", value_name = "FIELD=VALUE", value_parser = parse_identity)]
    pub identity: Vec<(String, String)>,
}

/// A level a user can opt in to: every tier but `off` (which is
/// `telemetry disable`). telemetry-client converts it to its `Tier`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Daily counts only, no identifier.
    Aggregate,
    /// Counts and events under a random install id the user can reset.
    Anonymous,
    /// Anonymous, plus the identity fields the user types in.
    Full,
}

impl Level {
    /// The level's name as users type it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Level::Aggregate => "aggregate",
            Level::Anonymous => "anonymous",
            Level::Full => "full",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a string is not a [`Level`]; its message says what to type instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseLevelError {
    input: String,
}

impl fmt::Display for ParseLevelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.input.trim().eq_ignore_ascii_case("off") {
            f.write_str("to turn telemetry off, use `telemetry disable`")
        } else {
            // The same words as the client's own level parser, so that a
            // typo reads the same in `enable`, the prompt and the consent tool.
            write!(
                f,
                "unknown telemetry level `{}`; valid levels are: off, aggregate, anonymous, full",
                self.input
            )
        }
    }
}

impl std::error::Error for ParseLevelError {}

impl FromStr for Level {
    type Err = ParseLevelError;

    /// Ignores ASCII case and surrounding whitespace, as the client does.
    fn from_str(s: &str) -> Result<Level, ParseLevelError> {
        let t = s.trim();
        [Level::Aggregate, Level::Anonymous, Level::Full]
            .into_iter()
            .find(|l| l.as_str().eq_ignore_ascii_case(t))
            .ok_or_else(|| ParseLevelError {
                input: s.to_owned(),
            })
    }
}

fn parse_identity(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err(format!(
            "expected FIELD=VALUE, e.g. email=me@example.org, got `{s}`"
        )),
    }
}

impl TelemetryArgs {
    /// Applies `template` (a clap help template, as given to the host's
    /// `Command::help_template`) to the `telemetry` subcommand of `cmd` and
    /// to each of its subcommands, which clap does not do by itself. Call it
    /// on the host's command before parsing, and in the build script before
    /// generating man pages:
    ///
    /// ```
    /// # use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
    /// # #[derive(Parser)]
    /// # struct Cli { #[command(subcommand)] command: Command }
    /// # #[derive(Subcommand)]
    /// # enum Command { Telemetry(telemetry_args::TelemetryArgs) }
    /// const TEMPLATE: &str = "{name}: {about}\n\n{usage-heading} {usage}\n\n{all-args}";
    /// let cmd = telemetry_args::TelemetryArgs::follow_template(
    ///     Cli::command().help_template(TEMPLATE),
    ///     TEMPLATE,
    /// );
    /// let matches = cmd.try_get_matches_from(["tool", "telemetry", "status"]).unwrap();
    /// let cli = Cli::from_arg_matches(&matches).unwrap();
    /// # let _ = cli;
    /// ```
    pub fn follow_template(cmd: clap::Command, template: &'static str) -> clap::Command {
        fn all(cmd: clap::Command, template: &'static str) -> clap::Command {
            let names: Vec<String> = cmd
                .get_subcommands()
                .map(|s| s.get_name().to_owned())
                .collect();
            names
                .into_iter()
                .fold(cmd.help_template(template), |cmd, name| {
                    cmd.mut_subcommand(name, |sub| all(sub, template))
                })
        }
        cmd.mut_subcommand("telemetry", |sub| all(sub, template))
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser, Subcommand};

    use super::*;

    #[derive(Parser)]
    #[command(name = "host")]
    struct Cli {
        #[command(subcommand)]
        command: Command,
    }

    #[derive(Subcommand)]
    enum Command {
        Telemetry(TelemetryArgs),
    }

    fn parse(args: &[&str]) -> Result<TelemetryArgs, clap::Error> {
        let argv = ["host", "telemetry"].iter().chain(args).copied();
        Cli::try_parse_from(argv).map(|cli| match cli.command {
            Command::Telemetry(args) => args,
        })
    }

    #[test]
    fn the_definition_is_valid_for_clap() {
        Cli::command().debug_assert();
    }

    #[test]
    fn levels_parse_as_users_type_them() {
        assert_eq!(" Anonymous ".parse::<Level>(), Ok(Level::Anonymous));
        let off = "off".parse::<Level>().unwrap_err().to_string();
        assert!(off.contains("telemetry disable"), "{off}");
        let typo = parse(&["enable", "everything"]).unwrap_err().to_string();
        assert!(
            typo.contains("unknown telemetry level `everything`; valid levels are"),
            "{typo}"
        );
    }

    #[test]
    fn identity_fields_are_split_at_the_first_equals_sign() {
        let args = parse(&["enable", "full", "--identity", "email=a=b@example.org"]).unwrap();
        let Some(TelemetryCommand::Enable(enable)) = args.command else {
            panic!("not enable: {args:?}");
        };
        assert_eq!(enable.level, Some(Level::Full));
        assert_eq!(
            enable.identity,
            [("email".to_owned(), "a=b@example.org".to_owned())]
        );
        let bad = parse(&["enable", "full", "--identity", "=x"])
            .unwrap_err()
            .to_string();
        assert!(bad.contains("expected FIELD=VALUE"), "{bad}");
    }

    #[test]
    fn a_template_reaches_every_telemetry_subcommand() {
        const TEMPLATE: &str = "CUSTOM {name}\n{all-args}";
        let mut cmd = TelemetryArgs::follow_template(Cli::command(), TEMPLATE);
        for path in [
            &["telemetry"][..],
            &["telemetry", "enable"],
            &["telemetry", "flush"],
        ] {
            let mut sub = &mut cmd;
            for name in path {
                sub = sub.find_subcommand_mut(name).unwrap();
            }
            let help = sub.render_help().to_string();
            assert!(help.starts_with("CUSTOM "), "{path:?}:\n{help}");
        }
    }
}
