//! The environment variables the client reads, captured once per run.
//!
//! Environment variables can only lower the level (`DO_NOT_TRACK`,
//! `<TOOL>_TELEMETRY`), redirect where data goes (`<TOOL>_TELEMETRY_ENDPOINT`)
//! or print instead of sending (`<TOOL>_TELEMETRY_DEBUG`). None of them can
//! raise the level or move the policy file.

/// Set on the re-executed host to make it run as the detached uploader; its
/// value is the tool name.
#[cfg_attr(not(feature = "testing"), allow(unreachable_pub))] // Re-exported by `testing`.
pub const UPLOADER_MARKER: &str = "TELEMETRY_TOOLKIT_UPLOADER";
/// The cross-tool opt-out convention (<https://consoledonottrack.com>).
pub(crate) const DO_NOT_TRACK: &str = "DO_NOT_TRACK";

/// The variable-name stem of a tool: upper-cased, `-` turned into `_`.
pub(crate) fn tool_env_prefix(tool: &str) -> String {
    tool.to_ascii_uppercase().replace('-', "_")
}

/// `<TOOL>_TELEMETRY`: a ceiling on the level.
pub(crate) fn level_var(tool: &str) -> String {
    format!("{}_TELEMETRY", tool_env_prefix(tool))
}

/// `<TOOL>_TELEMETRY_ENDPOINT`: overrides the manifest's endpoint.
pub(crate) fn endpoint_var(tool: &str) -> String {
    format!("{}_TELEMETRY_ENDPOINT", tool_env_prefix(tool))
}

/// `<TOOL>_TELEMETRY_DEBUG`: `1` prints payloads to stderr instead of sending them.
pub(crate) fn debug_var(tool: &str) -> String {
    format!("{}_TELEMETRY_DEBUG", tool_env_prefix(tool))
}

/// The values of the variables that matter to consent, read once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct EnvSnapshot {
    /// `DO_NOT_TRACK`.
    pub(crate) do_not_track: Option<String>,
    /// `<TOOL>_TELEMETRY`.
    pub(crate) level: Option<String>,
    /// `<TOOL>_TELEMETRY_ENDPOINT`.
    pub(crate) endpoint: Option<String>,
    /// `<TOOL>_TELEMETRY_DEBUG`.
    pub(crate) debug: Option<String>,
}

impl EnvSnapshot {
    /// Reads the variables for `tool` from the process environment.
    pub(crate) fn capture(tool: &str) -> EnvSnapshot {
        let get = |name: &str| std::env::var(name).ok();
        EnvSnapshot {
            do_not_track: get(DO_NOT_TRACK),
            level: get(&level_var(tool)),
            endpoint: get(&endpoint_var(tool)).filter(|v| !v.trim().is_empty()),
            debug: get(&debug_var(tool)),
        }
    }

    /// Whether `DO_NOT_TRACK` asks for no tracking: any non-empty value but `0`.
    pub(crate) fn do_not_track(&self) -> bool {
        self.do_not_track
            .as_deref()
            .is_some_and(|v| !v.trim().is_empty() && v.trim() != "0")
    }

    /// Whether debug printing is on.
    pub(crate) fn debug(&self) -> bool {
        self.debug.as_deref().is_some_and(|v| v.trim() == "1")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_tool() {
        assert_eq!(level_var("demo-cli"), "DEMO_CLI_TELEMETRY");
        assert_eq!(endpoint_var("demo-cli"), "DEMO_CLI_TELEMETRY_ENDPOINT");
        assert_eq!(debug_var("x_y"), "X_Y_TELEMETRY_DEBUG");
    }

    #[test]
    fn do_not_track_values() {
        for (value, expected) in [
            (None, false),
            (Some(""), false),
            (Some("0"), false),
            (Some("1"), true),
            (Some("true"), true),
        ] {
            let env = EnvSnapshot {
                do_not_track: value.map(str::to_owned),
                ..EnvSnapshot::default()
            };
            assert_eq!(env.do_not_track(), expected, "{value:?}");
        }
    }
}
