// The command line, `include!`d by main.rs and by build.rs (for completions).

/// Jump to the directories you use most; a shell hook records every `cd`.
#[derive(clap::Parser)]
#[command(name = "hook-cli", version)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(clap::Subcommand)]
pub enum Command {
    /// Record a visit to a directory (the shell hook runs this on every `cd`).
    Add {
        /// The directory.
        path: std::path::PathBuf,
    },
    /// Print the most visited directory whose path contains every keyword.
    Query {
        /// Parts of the path.
        keywords: Vec<String>,
    },
    /// Print the shell hook, for `eval "$(hook-cli init bash)"` in a start-up file.
    Init {
        /// The shell.
        shell: Shell,
    },
    /// See and change what hook-cli may send to its maintainers.
    #[cfg(feature = "telemetry")]
    Telemetry(telemetry_args::TelemetryArgs),
}

/// The shells hook-cli has a hook for.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Shell {
    /// bash
    Bash,
    /// zsh
    Zsh,
    /// fish
    Fish,
}
