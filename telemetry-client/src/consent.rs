//! Consent: reading and writing the consent files, and the one pure function
//! that resolves the effective level from the environment, the files and the
//! terminal.
//!
//! The chain, highest priority first (every step but the per-tool file can
//! only lower the level):
//!
//! 1. `DO_NOT_TRACK` (non-empty, not `0`) → `off`.
//! 2. `<TOOL>_TELEMETRY` → ceiling.
//! 3. the system policy file → ceiling.
//! 4. the user's global file → ceiling.
//! 5. the per-tool file → the user's choice.
//! 6. no stored choice: `off`, always. Nothing is recorded or sent until the
//!    user has chosen a level and the choice is stored in the per-tool file.
//!
//! A consent file that cannot be read or parsed fails closed: the level is
//! `off` and the caller prints one warning.

use std::path::Path;

use serde::{Deserialize, Serialize};
use telemetry_protocol::{Tier, Timestamp};

use crate::env::EnvSnapshot;
use crate::files;

/// Which rule of the chain decided the level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Source {
    /// `DO_NOT_TRACK` or `<TOOL>_TELEMETRY`.
    Environment,
    /// The system-wide policy file.
    SystemPolicy,
    /// The user's global file.
    GlobalFile,
    /// The per-tool consent file.
    ToolFile,
    /// The author's default (or `off` for want of a choice).
    Default,
}

impl Source {
    /// The snake_case name used in `status --json`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Source::Environment => "environment",
            Source::SystemPolicy => "system_policy",
            Source::GlobalFile => "global_file",
            Source::ToolFile => "tool_file",
            Source::Default => "default",
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What users who have not chosen get. The toolkit is strictly opt-in, so
/// the only default is `Off`: nothing is recorded or sent without a stored
/// choice. (An earlier "aggregate after a notice" mode was removed because it
/// recorded without a choice.)
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum DefaultLevel {
    /// Nothing is recorded until the user opts in.
    #[default]
    Off,
}

/// A consent file as the resolver sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum FileInput {
    /// The file does not exist.
    #[default]
    Missing,
    /// The file's text.
    Text(String),
    /// The file exists but could not be read; the reason.
    Unreadable(String),
}

impl FileInput {
    /// Reads `path`; a missing file is not an error.
    pub fn read(path: &Path) -> FileInput {
        match files::read_optional(path) {
            Ok(None) => FileInput::Missing,
            Ok(Some(text)) => FileInput::Text(text),
            Err(e) => FileInput::Unreadable(e.to_string()),
        }
    }
}

/// Everything the resolution depends on, so it can be tested as a table.
#[derive(Debug, Clone, Default)]
pub(crate) struct ConsentInput {
    /// The relevant environment variables.
    pub env: EnvSnapshot,
    /// The system policy file.
    pub system_policy: FileInput,
    /// The user's global file.
    pub global: FileInput,
    /// The per-tool file.
    pub tool: FileInput,
    /// The author's default.
    pub default: DefaultLevel,
}

/// The outcome of [`resolve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// The effective level.
    pub level: Tier,
    /// The rule that decided it.
    pub source: Source,
    /// The level the per-tool file holds, if it holds a valid one.
    pub choice: Option<Tier>,
    /// The lowest ceiling from the environment and the policy and global
    /// files (`Full` when none applies).
    pub ceiling: Tier,
    /// A consent file that could not be used: which one, and why.
    pub unreadable: Option<(Source, String)>,
}

/// The contents of a consent file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentFile {
    /// The level: a choice in a tool file, a ceiling in the global and policy files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<Tier>,
    /// When it was last written, for people reading the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated: Option<String>,
}

impl ConsentFile {
    /// Parses a consent file's text.
    pub fn parse(text: &str) -> Result<ConsentFile, String> {
        toml::from_str(text).map_err(|e| e.message().trim().to_owned())
    }

    /// Writes `level` (or no level) to `path` atomically, stamped with `now`.
    pub fn write(path: &Path, level: Option<Tier>, now: Timestamp) -> std::io::Result<()> {
        let file = ConsentFile {
            level,
            updated: Some(now.to_string()),
        };
        let text = toml::to_string(&file).map_err(std::io::Error::other)?;
        files::write_atomic(path, text.as_bytes())
    }
}

/// A file's level, `Ok(None)` when missing or without a level.
pub(crate) fn file_level(input: &FileInput) -> Result<Option<Tier>, String> {
    match input {
        FileInput::Missing => Ok(None),
        FileInput::Unreadable(reason) => Err(reason.clone()),
        FileInput::Text(text) => ConsentFile::parse(text).map(|f| f.level),
    }
}

/// **Resolves the effective level.** Pure: same input, same answer.
pub(crate) fn resolve(input: &ConsentInput) -> Resolution {
    let off = |source: Source| Resolution {
        level: Tier::Off,
        source,
        choice: None,
        ceiling: Tier::Off,
        unreadable: None,
    };
    if input.env.do_not_track() {
        return off(Source::Environment);
    }

    // Ceilings in chain order; the first one that is lowest is reported.
    let mut ceiling = (Tier::Full, Source::Default);
    let mut lower = |tier: Tier, source: Source| {
        if tier < ceiling.0 {
            ceiling = (tier, source);
        }
    };
    if let Some(value) = &input.env.level {
        // An unparseable value fails closed: someone meant to restrict.
        lower(value.parse().unwrap_or(Tier::Off), Source::Environment);
    }
    for (file, source) in [
        (&input.system_policy, Source::SystemPolicy),
        (&input.global, Source::GlobalFile),
    ] {
        match file_level(file) {
            Ok(Some(tier)) => lower(tier, source),
            Ok(None) => {}
            Err(reason) => {
                return Resolution {
                    unreadable: Some((source, reason)),
                    ..off(source)
                };
            }
        }
    }
    let choice = match file_level(&input.tool) {
        Ok(choice) => choice,
        Err(reason) => {
            return Resolution {
                unreadable: Some((Source::ToolFile, reason)),
                ..off(Source::ToolFile)
            };
        }
    };
    let (ceiling, ceiling_source) = ceiling;
    let capped = |tier: Tier, own: Source| {
        if ceiling < tier {
            (ceiling, ceiling_source)
        } else {
            (tier, own)
        }
    };
    // Strictly opt-in: without a stored choice the level is `off`, whatever
    // the author's default, the terminal or the ceilings say.
    let (level, source) = match choice {
        Some(tier) => capped(tier, Source::ToolFile),
        None if ceiling == Tier::Off => (Tier::Off, ceiling_source),
        None => match input.default {
            DefaultLevel::Off => (Tier::Off, Source::Default),
        },
    };
    Resolution {
        level,
        source,
        choice,
        ceiling,
        unreadable: None,
    }
}

/// Whether this process runs where a person is talking to it: stdin, stdout
/// and stderr are all terminals, the process is in the terminal's foreground
/// process group, and no CI system is detected.
///
/// Each condition rules out a case where a prompt would break something: a
/// captured stdout is `eval "$(tool init bash)"` in a shell start-up file; a
/// redirected stdin is a script feeding the tool; a background job (`tool &`)
/// shares the terminal with the shell, which would then lose typed commands
/// to the prompt.
pub fn interactive() -> bool {
    use std::io::IsTerminal;
    std::io::stdin().is_terminal()
        && std::io::stdout().is_terminal()
        && std::io::stderr().is_terminal()
        && in_foreground()
        && !ci_info::is_ci()
}

/// Whether this process is in the foreground process group of the terminal
/// on stdin.
#[cfg(unix)]
fn in_foreground() -> bool {
    rustix::termios::tcgetpgrp(std::io::stdin())
        .is_ok_and(|group| group == rustix::process::getpgrp())
}

/// Elsewhere there are no process groups to check.
#[cfg(not(unix))]
fn in_foreground() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(level: &str) -> FileInput {
        FileInput::Text(format!("level = \"{level}\"\n"))
    }

    struct Case {
        name: &'static str,
        dnt: Option<&'static str>,
        env: Option<&'static str>,
        policy: FileInput,
        global: FileInput,
        tool: FileInput,
        default: DefaultLevel,
        expect: (Tier, Source),
        unreadable: bool,
    }

    fn case(name: &'static str, expect: (Tier, Source)) -> Case {
        Case {
            name,
            dnt: None,
            env: None,
            policy: FileInput::Missing,
            global: FileInput::Missing,
            tool: FileInput::Missing,
            default: DefaultLevel::Off,
            expect,
            unreadable: false,
        }
    }

    #[test]
    fn resolution_chain_table() {
        use Source::*;
        use Tier::*;
        let cases = vec![
            case("nothing set means off", (Off, Default)),
            Case {
                tool: text("full"),
                ..case("tool file is the choice", (Full, ToolFile))
            },
            Case {
                tool: text("full"),
                dnt: Some("1"),
                ..case("DO_NOT_TRACK wins over full", (Off, Environment))
            },
            Case {
                tool: text("full"),
                dnt: Some("0"),
                ..case("DO_NOT_TRACK=0 is not an opt-out", (Full, ToolFile))
            },
            Case {
                tool: text("full"),
                dnt: Some(""),
                ..case("empty DO_NOT_TRACK is not an opt-out", (Full, ToolFile))
            },
            Case {
                tool: text("full"),
                env: Some("aggregate"),
                ..case("env is a ceiling", (Aggregate, Environment))
            },
            Case {
                tool: text("aggregate"),
                env: Some("full"),
                ..case("env never raises", (Aggregate, ToolFile))
            },
            Case {
                env: Some("full"),
                ..case("env alone does not opt in", (Off, Default))
            },
            Case {
                tool: text("full"),
                env: Some("banana"),
                ..case("bad env value fails closed", (Off, Environment))
            },
            Case {
                tool: text("full"),
                policy: text("anonymous"),
                ..case("policy is a ceiling", (Anonymous, SystemPolicy))
            },
            Case {
                tool: text("anonymous"),
                global: text("aggregate"),
                ..case("global is a ceiling", (Aggregate, GlobalFile))
            },
            Case {
                tool: text("anonymous"),
                global: text("full"),
                ..case("global never raises", (Anonymous, ToolFile))
            },
            Case {
                tool: text("full"),
                policy: text("anonymous"),
                global: text("aggregate"),
                ..case("lowest ceiling wins", (Aggregate, GlobalFile))
            },
            Case {
                tool: text("full"),
                env: Some("anonymous"),
                global: text("anonymous"),
                ..case("ties report the earlier rule", (Anonymous, Environment))
            },
            Case {
                global: text("off"),
                ..case("global off is reported as the source", (Off, GlobalFile))
            },
            Case {
                tool: FileInput::Text("level = ".into()),
                ..case("corrupt tool file fails closed", (Off, ToolFile))
            }
            .unreadable(),
            Case {
                tool: text("everything"),
                ..case("unknown level fails closed", (Off, ToolFile))
            }
            .unreadable(),
            Case {
                tool: text("full"),
                global: FileInput::Unreadable("permission denied".into()),
                ..case("unreadable global fails closed", (Off, GlobalFile))
            }
            .unreadable(),
            Case {
                tool: text("full"),
                policy: FileInput::Text("[[".into()),
                ..case("corrupt policy fails closed", (Off, SystemPolicy))
            }
            .unreadable(),
            Case {
                tool: FileInput::Text("updated = \"x\"\n".into()),
                ..case("a tool file without level is unset", (Off, Default))
            },
        ];
        for c in cases {
            let input = ConsentInput {
                env: EnvSnapshot {
                    do_not_track: c.dnt.map(str::to_owned),
                    level: c.env.map(str::to_owned),
                    ..EnvSnapshot::default()
                },
                system_policy: c.policy,
                global: c.global,
                tool: c.tool,
                default: c.default,
            };
            let r = resolve(&input);
            assert_eq!((r.level, r.source), c.expect, "{}", c.name);
            assert_eq!(
                r.unreadable.is_some(),
                c.unreadable,
                "{}: unreadable",
                c.name
            );
        }
    }

    impl Case {
        fn unreadable(self) -> Case {
            Case {
                unreadable: true,
                ..self
            }
        }
    }

    #[test]
    fn consent_files_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tools/demo.toml");
        ConsentFile::write(&path, Some(Tier::Anonymous), Timestamp::from_unix_millis(0)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("level = \"anonymous\""), "{text}");
        assert_eq!(
            file_level(&FileInput::read(&path)),
            Ok(Some(Tier::Anonymous))
        );
    }
}
