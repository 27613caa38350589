//! Opt-in, privacy-first telemetry for command-line tools.
//!
//! A tool declares what it may send in a manifest, `telemetry.toml`, builds
//! one [`Telemetry`] handle first thing in `main`, and records with
//! [`Telemetry::track`]. Nothing is recorded or sent until the user has
//! chosen a level ([`Tier`]: `aggregate`, `anonymous` or `full`; `off` is the
//! default), through the first-run prompt or the `telemetry` subcommand the
//! tool mounts. Sending happens in a detached copy of the tool, so a command
//! never waits on the network.
//!
//! Recording never fails, never panics and never prints: a mistake (an
//! undeclared event or prop, a value that does not fit, a bad
//! `tool_version`) is dropped, logged through `tracing` at debug level
//! (feature `debug-log`, on by default) and counted in [`Telemetry::diagnostics`], which your tests can check.
//!
//! # Building the handle
//!
//! ```
//! use telemetry_client::Telemetry;
//!
//! # const MANIFEST: &str = "project = \"my-tool\"\nendpoint = \"https://telemetry.example.org\"\n[events.command]\ndescription = \"A command ran\"\nprops.name = { kind = \"enum\", values = [\"build\", \"init\"], description = \"Which command\" }\nprops.duration_ms = { kind = \"bucket\", bounds = [10, 100, 1000], description = \"How long it took\" }\n";
//! // First thing in `main`: in the detached uploader (this same binary,
//! // started in the background) `build` sends what is pending and exits.
//! let telemetry = Telemetry::builder(MANIFEST) // include_str!("../telemetry.toml")
//!     .tool_version(env!("CARGO_PKG_VERSION"))
//!     .prompt_commands(["init"]) // the commands that may ask the first-run question
//!     .build();
//! // Without a stored choice, the level is `off`.
//! println!("telemetry is {}", telemetry.level());
//! ```
//!
//! `build` never fails either: a manifest that does not parse gives a
//! disabled handle. [Test the manifest](#testing-your-manifest-and-your-calls)
//! so that you find out in CI, not from an empty dashboard.
//!
//! # Tracking events
//!
//! An event and each of its props must be declared in the manifest. Prop
//! values are [`PropInput`]s, converted from `&str` and `String` (`enum` and
//! `version` props), `bool`, and the integer and float types (`bucket`
//! props, sent only as their bucket):
//!
//! ```
//! # use telemetry_client::Telemetry;
//! # const MANIFEST: &str = "project = \"my-tool\"\nendpoint = \"https://telemetry.example.org\"\n[events.command]\ndescription = \"A command ran\"\nprops.name = { kind = \"enum\", values = [\"build\", \"init\"], description = \"Which command\" }\nprops.duration_ms = { kind = \"bucket\", bounds = [10, 100, 1000], description = \"How long it took\" }\n";
//! # let telemetry = Telemetry::builder(MANIFEST).build();
//! let started = std::time::Instant::now();
//! // ... the command's work ...
//! telemetry.track(
//!     "command",
//!     [
//!         ("name", "build".into()),
//!         ("duration_ms", started.elapsed().as_millis().into()),
//!     ],
//! );
//! // Once per install, whatever the level: the setup funnel.
//! telemetry.setup_started();
//! telemetry.setup_completed();
//! // Dropping the handle (or `finish`) writes what was recorded to the
//! // spool and, if an upload is due, starts the detached uploader.
//! telemetry.finish();
//! ```
//!
//! # Mounting the subcommand
//!
//! With the `cli` feature (on by default), a clap host adds one variant to
//! its subcommands. Users then type `my-tool telemetry`, `... enable`,
//! `... disable`, `... show`; see [`cli`].
//!
//! ```
//! # #[cfg(feature = "cli")] {
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
//!     /// See and change what my-tool may send to its maintainers.
//!     Telemetry(telemetry_client::cli::TelemetryArgs),
//! }
//!
//! fn main() -> std::process::ExitCode {
//! #   const MANIFEST: &str = "project = \"my-tool\"\nendpoint = \"https://telemetry.example.org\"\n";
//!     let telemetry = Telemetry::builder(MANIFEST) // include_str!("../telemetry.toml")
//!         .prompt_commands(["init"])
//!         .build();
//! #   let cli = Cli::parse_from(["my-tool", "init"]);
//! #   /*
//!     let cli = Cli::parse();
//! #   */
//!     match cli.command {
//!         Command::Telemetry(args) => args.run(&telemetry),
//!         Command::Init => {
//!             // Asks once, only when a person is at the terminal.
//!             telemetry_client::cli::prompt_if_needed(&telemetry, "init");
//!             std::process::ExitCode::SUCCESS
//!         }
//!     }
//! }
//! # main();
//! # }
//! ```
//!
//! # Testing your manifest and your calls
//!
//! A typo in `telemetry.toml` disables telemetry without a word at run
//! time, so check it in your test suite. [`Manifest::parse`] errors name the
//! line and the column (`line 7, column 8: unknown field `kind_`, ...`).
//! This is the one line to copy:
//!
//! ```
//! # const MANIFEST: &str = "project = \"my-tool\"\nendpoint = \"https://telemetry.example.org\"\n";
//! #[test]
//! fn telemetry_manifest_is_valid() {
//!     telemetry_client::Manifest::parse(include_str!("../telemetry.toml")).unwrap();
//! }
//! # telemetry_client::Manifest::parse(MANIFEST).unwrap();
//! ```
//!
//! To check that your `track` calls fit the manifest, record them in a
//! temporary home with the [`testing`](#features) feature in your
//! `[dev-dependencies]`, and look at the diagnostics. Events are only
//! checked at a level above `off`, so the test opts in first, as a user
//! would:
//!
//! ```
//! # #[cfg(feature = "testing")] {
//! # const MANIFEST: &str = "project = \"my-tool\"\nendpoint = \"https://telemetry.example.org\"\n[events.command]\ndescription = \"A command ran\"\nprops.name = { kind = \"enum\", values = [\"build\", \"init\"], description = \"Which command\" }\n";
//! use telemetry_client::{Telemetry, Tier};
//!
//! let home = tempfile::tempdir().unwrap();
//! let handle = || {
//!     Telemetry::builder(MANIFEST) // include_str!("../telemetry.toml")
//!         .tool_version(env!("CARGO_PKG_VERSION"))
//!         .dirs(home.path().join("config"), home.path().join("state"))
//!         .system_policy(None)
//!         .detached_upload(false)
//!         .build()
//! };
//! handle().control().unwrap().set_level(Tier::Aggregate, Default::default()).unwrap();
//! let telemetry = handle();
//! telemetry.track("command", [("name", "build".into())]); // your code's calls
//! let d = telemetry.diagnostics();
//! assert_eq!((d.undeclared_events, d.undeclared_props, d.dropped_props), (0, 0, 0), "{d:?}");
//! assert!(!d.unknown_tool_version, "{d:?}");
//! # }
//! ```
//!
//! Users and authors see the same counts for a run with
//! `my-tool telemetry status --verbose`.
//!
//! # Features
//!
//! - `cli` (default): the [`cli`] module, the `telemetry` subcommand, the
//!   first-run prompt and the `telemetry-consent` binary. Pulls in `clap`.
//! - `testing`: the `testing` module and the builder knobs tests need
//!   (`Builder::dirs`, `Builder::system_policy`, `Builder::interactive`,
//!   `Builder::clock`). **For `[dev-dependencies]` only**: a release build
//!   (even one with debug assertions) or any build without debug assertions
//!   that has it on fails to compile, unless `testing-in-release` is on too,
//!   so it cannot reach a release binary by accident. The `testing` module
//!   says what this guarantees and what it cannot (feature unification).
//! - `macros`: the `manifest!` macro and its typed API (see below).
//!
//! # Typed API
//!
//! With the `macros` feature, `manifest!` compiles the
//! manifest instead: it reads `telemetry.toml` (relative to the host's
//! `Cargo.toml`) at compile time, turns a mistake in it into a compile error
//! naming the file, line and column, embeds it pre-checked (no TOML parser
//! runs for it at run time), and generates one function per event whose
//! setters accept only what the prop declares:
//!
//! ```text
//! mod events {
//!     telemetry_client::manifest!("telemetry.toml", try command.name = crate::Command);
//! }
//!
//! let telemetry = events::builder().tool_version(env!("CARGO_PKG_VERSION")).build();
//! events::command(&telemetry)
//!     .name(events::command::Name::Greet) // an enum prop: its generated enum
//!     .duration_ms(12_u64)                // a bucket prop: any number
//!     .record();
//! ```
//!
//! `docs/integrating.md` describes the generated items and the `From` /
//! `TryFrom` bridges to a host's clap `ValueEnum` or subcommand enum.
//! [`Telemetry::builder`] and [`Telemetry::track`] stay for the dynamic
//! cases: a manifest or an event name only known at run time.
//!
//! # Layout
//!
//! - `lib.rs`: [`Telemetry`] and its [`Builder`]; recording and buffering.
//! - `consent.rs`: the resolution chain (a pure function) and consent files.
//! - `env.rs`: the environment variables the client reads.
//! - `folders.rs`: where consent and state live.
//! - `state.rs`: the per-tool state file (install id, lifecycle flags, schedule).
//! - `spool.rs`: the append-only, checksummed, bounded record file.
//! - `outbox.rs`: payloads with fixed ids, waiting to be sent.
//! - `upload.rs`: packaging, sending, back-off; `upload_log.rs`: what was sent.
//! - `detach.rs`: starting and running the detached uploader.
//! - `control.rs`: the management API ([`Control`]) behind the `telemetry`
//!   subcommand, and the machine-wide management behind `telemetry-consent`
//!   (private: every tool's consent is the user's to change, not a host's).
//! - `clock.rs`: the injectable clock.
//! - `log.rs`: the debug-level log lines (feature `debug-log`).
//! - `cli/` (feature `cli`): the subcommand, the prompt and `telemetry-consent`.
//! - `testing.rs` (feature `testing`): the test knobs.
//! - `macro_support.rs` (hidden): what the code `manifest!` generates names.
//! - `for_own_tests_only.rs` (hidden, `testing::for_own_tests_only`, feature
//!   `test-bins`): what this crate's own integration tests read beside the API.
//!
//! All but `cli` and `testing` are private (`macro_support` is public only
//! for the code `manifest!` generates, and `testing::for_own_tests_only`
//! only for this crate's tests; both hidden): no file format is part of the
//! API.

// The crate docs show a `#[test]` for authors to copy into their own suite;
// the doctest runs its body on a hidden line.
#![allow(clippy::test_attr_in_doctest)]

// The test knobs must not reach a host's release build by accident: a host
// that puts `testing` in `[dependencies]` instead of `[dev-dependencies]`
// would ship a builder able to move the consent folder away from the user's
// `global.toml` and to ignore the administrator's policy file. Benchmarks
// that need the knobs in an optimised build say so with the second feature.
// A release profile is caught even with `debug-assertions = true`
// (`telemetry_release_profile` comes from build.rs). What this guarantees,
// and what it cannot, is in the `testing` module's docs.
#[cfg(all(
    feature = "testing",
    any(not(debug_assertions), telemetry_release_profile),
    not(feature = "testing-in-release")
))]
compile_error!(
    "telemetry-client's `testing` feature is for tests: enable it under \
     [dev-dependencies], not [dependencies]. An optimised or release-profile \
     build that needs it on purpose (a benchmark, `cargo test --release`) also \
     enables the `testing-in-release` feature."
);

#[cfg(feature = "cli")]
pub mod cli;
#[cfg(feature = "testing")]
pub mod testing;

mod clock;
// These private modules still declare their items `pub`; none of it reaches
// beyond the crate, except what `testing::for_own_tests_only` re-exports.
#[allow(unreachable_pub)]
mod consent;
#[allow(unreachable_pub)]
mod control;
mod detach;
mod env;
mod error;
mod files;
mod folders;
mod ids;
mod log;
mod mistakes;
// What the code `manifest!` generates names; hidden, no part of the API.
#[doc(hidden)]
pub mod macro_support;
#[allow(unreachable_pub)]
mod outbox;
#[allow(unreachable_pub)]
mod spool;
#[allow(unreachable_pub)]
mod state;
mod transport;
#[allow(unreachable_pub)]
mod upload;
#[allow(unreachable_pub)]
mod upload_log;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Compiles `telemetry.toml` into a typed API; see [the crate docs](crate#typed-api).
#[cfg(feature = "macros")]
pub use telemetry_macros::manifest;
pub use telemetry_protocol::manifest::PropInput;
pub use telemetry_protocol::{Manifest, ManifestError, Tier};

pub use crate::consent::{DefaultLevel, Source};
pub use crate::control::{Control, PendingPayload, Status};
pub use crate::error::Error;
pub use crate::spool::SpoolLimits;
pub use crate::upload::{OutboxLimits, UploadReport};
pub use crate::upload_log::{LogEntry, UploadKind, UploadResult};

use telemetry_protocol::compiled::CompiledManifest;
use telemetry_protocol::manifest::builtin;
use telemetry_protocol::{Day, Props, Timestamp, Uuid};

use crate::clock::{Clock, SystemClock};
// Unit tests across the crate name it as `crate::ManualClock`.
#[cfg(test)]
use crate::clock::ManualClock;
use crate::consent::{ConsentInput, FileInput};
use crate::env::EnvSnapshot;
use crate::files::Lock;
use crate::folders::{Folders, ToolPaths};
use crate::spool::Record;
use crate::state::ToolState;

/// How often, by default, the detached uploader is started when there is
/// something to send.
pub const DEFAULT_UPLOAD_INTERVAL: Duration = Duration::from_secs(3600);
/// Buffered events beyond which the handle spools early, bounding memory in
/// long-running hosts.
const BUFFER_LIMIT: usize = 256;

/// Configures a [`Telemetry`] handle. Start with [`Telemetry::builder`].
#[derive(Debug)]
pub struct Builder {
    manifest: ManifestSource,
    tool_version: Option<String>,
    upload_interval: Duration,
    default_level: DefaultLevel,
    endpoint: Option<String>,
    folders: Option<Folders>,
    system_policy: Option<PathBuf>,
    clock: Arc<dyn Clock>,
    interactive: Option<bool>,
    spool_limits: SpoolLimits,
    outbox_limits: OutboxLimits,
    detach: bool,
    prompt_commands: Vec<String>,
    prompt_timeout: Duration,
}

/// Where a builder's manifest comes from.
#[derive(Debug)]
enum ManifestSource {
    /// TOML text, parsed only when something will be recorded, with the
    /// parser [`Telemetry::builder`] names. Only that function refers to
    /// `Manifest::parse`, so a host that never calls it (one on `manifest!`)
    /// links no TOML manifest parser: about 0.27 MiB of the binary.
    Text {
        /// The manifest's text.
        text: String,
        /// `Manifest::parse`.
        parse: fn(&str) -> Result<Manifest, ManifestError>,
    },
    /// The static `manifest!` generates, checked when the host was compiled.
    Compiled(&'static CompiledManifest),
}

impl ManifestSource {
    /// The project name, if it can be had without parsing.
    fn project(&self) -> Option<&str> {
        match self {
            ManifestSource::Text { text, .. } => telemetry_protocol::manifest::peek_project(text),
            ManifestSource::Compiled(compiled) => Some(compiled.project),
        }
    }

    fn load(&self) -> Result<Manifest, ManifestError> {
        match self {
            ManifestSource::Text { text, parse } => parse(text),
            ManifestSource::Compiled(compiled) => Manifest::from_compiled(compiled),
        }
    }
}

/// What the consent files and the environment say for one tool, read before
/// the manifest is needed.
struct Consent {
    /// The tool the files were read for.
    tool: String,
    env: EnvSnapshot,
    folders: Option<Folders>,
    /// The tool's own consent file.
    tool_input: FileInput,
    /// The effective level.
    level: Tier,
}

/// How long the first-run prompt waits for an answer before it gives up.
pub const PROMPT_TIMEOUT: Duration = Duration::from_secs(30);

impl Builder {
    /// The host tool's version, sent in every payload's context.
    pub fn tool_version(mut self, version: impl Into<String>) -> Self {
        self.tool_version = Some(version.into());
        self
    }

    /// How long to wait between upload attempts (default one hour). Failures
    /// back off from this, up to 16 intervals.
    pub fn upload_interval(mut self, interval: Duration) -> Self {
        self.upload_interval = interval;
        self
    }

    /// What users who have not chosen get (default: nothing).
    pub fn default_level(mut self, level: DefaultLevel) -> Self {
        self.default_level = level;
        self
    }

    /// Overrides the manifest's endpoint. `<TOOL>_TELEMETRY_ENDPOINT` still wins.
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// Uses these toolkit folders instead of the platform ones.
    ///
    /// **Feature `testing`, for tests only**: outside a test it would move
    /// the consent folder away from the user's `global.toml` and
    /// `telemetry-consent`. See [`testing`].
    #[cfg(feature = "testing")]
    pub fn folders(mut self, folders: Folders) -> Self {
        self.folders = Some(folders);
        self
    }

    /// Shorthand for [`Builder::folders`] with a config and a state folder
    /// (the toolkit folders themselves, not their parents).
    ///
    /// **Feature `testing`, for tests only.**
    #[cfg(feature = "testing")]
    pub fn dirs(self, config: impl Into<PathBuf>, state: impl Into<PathBuf>) -> Self {
        self.folders(Folders::new(config, state))
    }

    /// Reads the system policy ceiling from `path` instead of
    /// `/etc/telemetry-toolkit/policy.toml`, or from nowhere with `None`, so
    /// that a test does not depend on the machine it runs on.
    ///
    /// **Feature `testing`, for tests only**: outside a test it would ignore
    /// the administrator's policy.
    #[cfg(feature = "testing")]
    pub fn system_policy(mut self, path: Option<PathBuf>) -> Self {
        self.system_policy = path;
        self
    }

    /// Uses `clock` for "now" (tests of day and week rollover).
    ///
    /// **Feature `testing`, for tests only.**
    #[cfg(feature = "testing")]
    pub fn clock(mut self, clock: Arc<dyn testing::Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Overrides terminal and CI detection: `true` lets the first-run prompt
    /// and `telemetry enable`'s questions read from a test's pseudo-terminal.
    ///
    /// **Feature `testing`, for tests only**: outside a test it would bring
    /// the prompt back in CI and in scripts.
    #[cfg(feature = "testing")]
    pub fn interactive(mut self, interactive: bool) -> Self {
        self.interactive = Some(interactive);
        self
    }

    /// How long the first-run prompt waits for an answer (default
    /// [`PROMPT_TIMEOUT`]); tests shorten it.
    ///
    /// **Feature `testing`, for tests only.**
    #[cfg(feature = "testing")]
    pub fn prompt_timeout(mut self, timeout: Duration) -> Self {
        self.prompt_timeout = timeout;
        self
    }

    /// The commands that may show the first-run prompt (default: none). Name
    /// only commands a person types to use the tool, such as `init`: never
    /// one that shell start-up files, shell hooks, editors or scripts run
    /// (`init bash` for `eval "$(tool init bash)"`, a `cd` hook's command).
    /// The `telemetry` subcommand never prompts. See
    /// `cli::prompt_if_needed`.
    pub fn prompt_commands<S: Into<String>>(
        mut self,
        commands: impl IntoIterator<Item = S>,
    ) -> Self {
        self.prompt_commands = commands.into_iter().map(Into::into).collect();
        self
    }

    /// Overrides the spool bounds (default 1 MiB and 10,000 records).
    pub fn spool_limits(mut self, limits: SpoolLimits) -> Self {
        self.spool_limits = limits;
        self
    }

    /// Overrides the outbox bounds (default 4 MiB and 30 days).
    pub fn outbox_limits(mut self, limits: OutboxLimits) -> Self {
        self.outbox_limits = limits;
        self
    }

    /// Whether to start the detached uploader when an upload is due (default
    /// `true`). With `false`, data is only sent by [`Control::flush`].
    pub fn detached_upload(mut self, detach: bool) -> Self {
        self.detach = detach;
        self
    }

    /// Builds the handle. Never fails: a bad manifest gives a disabled handle
    /// and a debug log line.
    ///
    /// **In the detached uploader** (the process this crate starts with
    /// `TELEMETRY_TOOLKIT_UPLOADER` set) this sends pending data and exits
    /// the process, so call it before the host does anything else.
    pub fn build(self) -> Telemetry {
        let uploader = std::env::var_os(env::UPLOADER_MARKER).is_some();
        if uploader {
            detach::lower_priority();
            if let Ok(core) = self.open(false, None) {
                detach::run_uploader(&core);
            }
            std::process::exit(0);
        }
        // The fast path for users who never opted in (or opted out): read
        // the consent files and stop there. The manifest is not parsed, no
        // state is written and no lock is taken until the host asks for
        // `control()` (the `telemetry` subcommand, the first-run prompt).
        let consent = self.manifest.project().map(|tool| self.consent(tool));
        if consent.as_ref().is_some_and(Consent::nothing_to_do) {
            return Telemetry {
                core: OnceLock::new(),
                deferred: Mutex::new(Some(self)),
            };
        }
        Telemetry {
            core: OnceLock::from(self.open(true, consent)),
            deferred: Mutex::new(None),
        }
    }

    /// Reads the environment and the consent files for `tool` and resolves
    /// the level, printing the one warning if a file cannot be read.
    fn consent(&self, tool: &str) -> Consent {
        let env = EnvSnapshot::capture(tool);
        let folders = self.folders.clone().or_else(Folders::from_env);
        let read = |path: Option<PathBuf>| path.map_or(FileInput::Missing, |p| FileInput::read(&p));
        let tool_input = read(folders.as_ref().map(|f| f.tool_file(tool)));
        let input = ConsentInput {
            env: env.clone(),
            system_policy: read(self.system_policy.clone()),
            global: read(folders.as_ref().map(Folders::global_file)),
            tool: tool_input.clone(),
            default: self.default_level,
        };
        let mut resolution = consent::resolve(&input);
        if folders.is_none() {
            crate::log::debug!("no home folder; telemetry is off");
            resolution.level = Tier::Off;
        }
        if let Some((source, reason)) = &resolution.unreadable {
            let path = match source {
                Source::SystemPolicy => self.system_policy.clone(),
                Source::GlobalFile => folders.as_ref().map(Folders::global_file),
                _ => folders.as_ref().map(|f| f.tool_file(tool)),
            };
            warn_unreadable(path.unwrap_or_default(), reason);
        }
        Consent {
            tool: tool.to_owned(),
            env,
            folders,
            tool_input,
            level: resolution.level,
        }
    }

    /// Builds the core; `side_effects` is false in the uploader, which must
    /// not record lifecycle events. `consent` is what [`Builder::consent`]
    /// already read, if anything.
    fn open(self, side_effects: bool, consent: Option<Consent>) -> Result<Core, ManifestError> {
        let manifest = match self.manifest.load() {
            Ok(m) => m,
            Err(e) => {
                crate::log::debug!(error = %e, "telemetry manifest is invalid; telemetry is disabled");
                return Err(e);
            }
        };
        let tool = manifest.project.clone();
        let Consent {
            env,
            folders,
            tool_input,
            level,
            ..
        } = consent
            .filter(|c| c.tool == tool)
            .unwrap_or_else(|| self.consent(&tool));
        let paths = folders.as_ref().map(|f| f.tool_state(&tool));
        let interactive = side_effects && self.interactive.unwrap_or_else(consent::interactive);
        let endpoint = env
            .endpoint
            .clone()
            .or(self.endpoint)
            .unwrap_or_else(|| manifest.endpoint.clone());
        let given = self.tool_version.is_some();
        let tool_version = self
            .tool_version
            .filter(|v| v.len() <= 64 && telemetry_protocol::policy::is_token(v));
        let unknown_tool_version = given && tool_version.is_none();
        if unknown_tool_version {
            crate::log::debug!(
                "the tool version is not a token of at most 64 bytes; sending `unknown`"
            );
        }
        let tool_version = tool_version.unwrap_or_else(|| "unknown".to_owned());
        let dry = env.debug();
        let core = Core {
            manifest,
            tool_version,
            unknown_tool_version,
            folders,
            paths,
            env,
            start_level: std::sync::atomic::AtomicU8::new(tier_index(level)),
            cap: std::sync::atomic::AtomicU8::new(tier_index(Tier::Full)),
            install_id: Mutex::new(None),
            clock: self.clock,
            interval: self.upload_interval,
            endpoint,
            system_policy: self.system_policy,
            spool_limits: self.spool_limits,
            outbox_limits: self.outbox_limits,
            interactive,
            detach: self.detach,
            default_level: self.default_level,
            prompt_commands: self.prompt_commands,
            prompt_timeout: self.prompt_timeout,
            prompted: AtomicBool::new(false),
            dry,
            buffer: Mutex::new(Buffer::default()),
            counters: Counters::default(),
            mistakes: Mutex::default(),
            finished: AtomicBool::new(false),
        };
        if side_effects {
            core.start(&tool_input);
        }
        Ok(core)
    }
}

impl Consent {
    /// Whether this run can skip everything: the level is `off`, debug mode
    /// is not asking for a print, and the tool's state holds nothing that
    /// must still happen at `off` (a queued deletion to deliver, or an id
    /// left behind by an opt-out made by hand, see `control::reconcile`).
    /// A tool never opted in has no state folder, so this costs one `stat`.
    fn nothing_to_do(&self) -> bool {
        if self.level != Tier::Off || self.env.debug() {
            return false;
        }
        let Some(folders) = &self.folders else {
            return true;
        };
        let paths = folders.tool_state(&self.tool);
        if !paths.dir.exists() {
            return true;
        }
        let state = ToolState::load(&paths);
        state.pending_deletions.is_empty()
            && !consent::file_level(&self.tool_input)
                .is_ok_and(|choice| control::is_stale(&state, choice))
    }
}

/// Prints the one warning the library ever prints on its own, at most once
/// per process.
#[allow(clippy::print_stderr)] // The issue requires exactly this one line on stderr.
fn warn_unreadable(path: PathBuf, reason: &str) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if !WARNED.swap(true, Ordering::SeqCst) {
        eprintln!(
            "telemetry: cannot read {}: {reason}; telemetry is off",
            path.display()
        );
    }
}

/// The recording handle. Cheap to call from anywhere; [`Sync`].
#[derive(Debug)]
pub struct Telemetry {
    /// The working core, or the manifest error that disabled the handle.
    /// Empty while telemetry is off and nothing asked for more (see
    /// [`Builder::build`]'s fast path).
    core: OnceLock<Result<Core, ManifestError>>,
    /// The builder the core is made from on first use, when the fast path
    /// left it empty.
    deferred: Mutex<Option<Builder>>,
}

/// Counts of what happened to recorded data in this process: the mistakes a
/// tool's author wants to hear about in tests, which ordinary runs never
/// print. `<tool> telemetry status --verbose` shows them.
///
/// Events and props are checked only when the level is above `off`: at `off`,
/// `track` returns at once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct Diagnostics {
    /// Events recorded (buffered for the spool).
    pub recorded: u64,
    /// Events dropped because the manifest does not declare them (or they are built-in).
    pub undeclared_events: u64,
    /// Props dropped because the manifest does not declare them for their event.
    pub undeclared_props: u64,
    /// Events dropped because their `min_tier` is above the current level.
    pub above_tier: u64,
    /// Declared props dropped because their value does not fit the
    /// declaration (an enum value not in the list, a version that is not
    /// one, a value of the wrong kind).
    pub dropped_props: u64,
    /// Recorded occurrences (a day's count, or one event) dropped because
    /// the spool was full.
    pub spool_dropped: u64,
    /// File operations that failed (the data involved was lost or not written).
    pub io_errors: u64,
    /// The version given to [`Builder::tool_version`] is longer than 64
    /// bytes or is not a token (it has spaces, say), so payloads say
    /// `unknown` instead.
    pub unknown_tool_version: bool,
}

#[derive(Debug, Default)]
struct Counters {
    recorded: AtomicU64,
    undeclared_events: AtomicU64,
    undeclared_props: AtomicU64,
    above_tier: AtomicU64,
    dropped_props: AtomicU64,
    spool_dropped: AtomicU64,
    io_errors: AtomicU64,
}

fn bump(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// Recorded data not yet in the spool.
#[derive(Debug, Default)]
struct Buffer {
    /// `aggregate`: counts per (day, event, props).
    counts: BTreeMap<(Day, String, Props), u64>,
    /// `anonymous` and `full`: spool-ready events.
    events: Vec<Record>,
}

/// Everything a working handle holds.
#[derive(Debug)]
pub(crate) struct Core {
    /// The tool's manifest.
    pub(crate) manifest: Manifest,
    /// The host's version, already checked to be a valid context token.
    pub(crate) tool_version: String,
    /// Whether the host's version was replaced by `unknown`.
    unknown_tool_version: bool,
    /// The toolkit folders, if a home folder was found.
    pub(crate) folders: Option<Folders>,
    /// This tool's state folder.
    pub(crate) paths: Option<ToolPaths>,
    /// The environment as read at start.
    pub(crate) env: EnvSnapshot,
    /// The effective level at start; see [`Core::level`].
    pub(crate) start_level: std::sync::atomic::AtomicU8,
    /// A ceiling lowered by [`Control::set_level`] within this run, so that
    /// an opt-out takes effect at once in a long-running host.
    pub(crate) cap: std::sync::atomic::AtomicU8,
    /// The install id events are recorded under (anonymous and full).
    pub(crate) install_id: Mutex<Option<Uuid>>,
    /// Now.
    pub(crate) clock: Arc<dyn Clock>,
    /// Upload interval and back-off base.
    pub(crate) interval: Duration,
    /// Where payloads go.
    pub(crate) endpoint: String,
    /// The system policy file, if any.
    pub(crate) system_policy: Option<PathBuf>,
    /// Spool bounds.
    pub(crate) spool_limits: SpoolLimits,
    /// Outbox bounds.
    pub(crate) outbox_limits: OutboxLimits,
    /// Whether a person can answer a prompt here.
    pub(crate) interactive: bool,
    /// Whether to start the detached uploader.
    pub(crate) detach: bool,
    /// The author's default.
    pub(crate) default_level: DefaultLevel,
    /// The commands that may show the first-run prompt (feature `cli`).
    #[cfg_attr(not(feature = "cli"), allow(dead_code))]
    pub(crate) prompt_commands: Vec<String>,
    /// How long the prompt waits for an answer (feature `cli`).
    #[cfg_attr(not(feature = "cli"), allow(dead_code))]
    pub(crate) prompt_timeout: Duration,
    /// Whether this run already showed (or decided not to show) the prompt.
    pub(crate) prompted: AtomicBool,
    /// Debug mode (`<TOOL>_TELEMETRY_DEBUG=1`): print what would be sent and
    /// change nothing on disk.
    pub(crate) dry: bool,
    buffer: Mutex<Buffer>,
    counters: Counters,
    /// This run's mistakes by name, kept for `status --verbose` at the end.
    mistakes: Mutex<mistakes::Mistakes>,
    finished: AtomicBool,
}

fn tier_index(tier: Tier) -> u8 {
    Tier::ALL.iter().position(|t| *t == tier).unwrap_or(0) as u8
}

impl Core {
    /// The effective level for this run.
    pub(crate) fn level(&self) -> Tier {
        let cap = Tier::ALL[usize::from(self.cap.load(Ordering::SeqCst)).min(3)];
        let start = Tier::ALL[usize::from(self.start_level.load(Ordering::SeqCst)).min(3)];
        start.min(cap)
    }

    /// Applies a level change made in this run: lowers the ceiling (never
    /// raises it), drops buffered events recorded under an id that no longer
    /// exists, and picks up the current install id.
    pub(crate) fn changed(&self, new_level: Option<Tier>) {
        if let Some(tier) = new_level {
            // Only ever lowers: a raise made with `telemetry enable` takes
            // effect from the next run; only the first-run prompt's answer
            // applies at once (see `adopt_answer`).
            self.cap.fetch_min(tier_index(tier), Ordering::SeqCst);
        }
        let state = self.paths.as_ref().map(ToolState::load).unwrap_or_default();
        let mut buffer = lock(&self.buffer);
        buffer.events.retain(|r| match r {
            Record::Event { install_id, .. } => Some(*install_id) == state.install_id,
            Record::Count { .. } => true,
        });
        if self.level() == Tier::Off {
            buffer.counts.clear();
        }
        *lock(&self.install_id) = state.install_id.filter(|_| self.level().has_install_id());
    }

    /// Applies the first-run prompt's answer to the rest of this run: the
    /// level becomes what the files now resolve to, anything buffered before
    /// the answer is dropped (nothing may be sent from before a choice), and
    /// the lifecycle events of this run are recorded at the new level, so the
    /// setup that follows the prompt counts.
    #[cfg_attr(not(feature = "cli"), allow(dead_code))]
    pub(crate) fn adopt_answer(&self) {
        let level = Control::new(self).resolve().level;
        {
            let mut buffer = lock(&self.buffer);
            buffer.counts.clear();
            buffer.events.clear();
        }
        self.start_level.store(tier_index(level), Ordering::SeqCst);
        self.changed(None);
        if self.level() == Tier::Off {
            return;
        }
        if let Some(paths) = &self.paths
            && let Err(e) = self.start_lifecycle(paths)
        {
            crate::log::debug!(error = %e, "cannot record lifecycle events");
            bump(&self.counters.io_errors, 1);
        }
    }

    /// Start-of-run work: repairing an interrupted opt-out, and the
    /// once-per-install and once-per-week lifecycle events.
    fn start(&self, tool_input: &FileInput) {
        let Some(paths) = &self.paths else { return };
        // The tool file's own value, whatever the ceilings say: only the
        // user's choice (not an environment variable) triggers deletion.
        if !self.dry
            && let Ok(choice) = consent::file_level(tool_input)
        {
            match control::reconcile(paths, choice) {
                // An opt-out done by hand (or cut short): its deletion goes now.
                Ok(true) if !ToolState::load(paths).pending_deletions.is_empty() => {
                    detach::start_now(self);
                }
                Ok(_) => {}
                Err(e) => {
                    crate::log::debug!(error = %e, "cannot apply a lowered level to local data");
                    bump(&self.counters.io_errors, 1);
                }
            }
        }
        if self.level() == Tier::Off {
            return;
        }
        if let Err(e) = self.start_lifecycle(paths) {
            crate::log::debug!(error = %e, "cannot record lifecycle events");
            bump(&self.counters.io_errors, 1);
        }
    }

    fn start_lifecycle(&self, paths: &ToolPaths) -> std::io::Result<()> {
        let now = self.clock.now();
        let today = now.day();
        // Cheap unlocked look first: most runs have nothing to do.
        let peek = ToolState::load(paths);
        let needs_id = self.level().has_install_id() && peek.install_id.is_none();
        if !needs_id && peek.lifecycle.install && peek.last_active_week == Some(today.iso_week()) {
            *lock(&self.install_id) = peek.install_id;
            return Ok(());
        }
        // Debug mode writes nothing, not even a lock file.
        let _lock = if self.dry {
            None
        } else {
            Some(Lock::acquire(&paths.data_lock())?)
        };
        let mut state = ToolState::load(paths);
        let before = state.clone();
        if self.level().has_install_id() && state.install_id.is_none() {
            state.install_id = Some(Uuid::new_v4());
        }
        *lock(&self.install_id) = state.install_id;
        let mut records = Vec::new();
        if !state.lifecycle.install {
            records.extend(self.record(builtin::INSTALL, Props::new(), now, state.install_id));
            state.lifecycle.install = true;
            state.install_day = Some(today);
        }
        let week = today.iso_week();
        if state.last_active_week != Some(week) {
            let installed = state.install_day.unwrap_or(today);
            let age = today.days_since_epoch() - installed.days_since_epoch();
            let props = self.encode(builtin::ACTIVE, [(builtin::ACTIVE_AGE_PROP, age.into())]);
            records.extend(self.record(builtin::ACTIVE, props, now, state.install_id));
            state.last_active_week = Some(week);
        }
        if self.dry {
            // Shown by the debug print at the end of the run, never stored.
            lock(&self.buffer).events.extend(records);
            return Ok(());
        }
        let dropped = spool::append(paths, &records, self.spool_limits)?;
        self.note_dropped(&mut state, dropped);
        if state != before {
            state.save(paths)?;
        }
        Ok(())
    }

    fn note_dropped(&self, state: &mut ToolState, dropped: u64) {
        if dropped > 0 {
            crate::log::debug!(
                dropped,
                "telemetry spool is full; dropped the oldest records"
            );
            bump(&self.counters.spool_dropped, dropped);
            state.spool_dropped = state.spool_dropped.saturating_add(dropped);
            state.count_dropped(state::reason::SPOOL_FULL, dropped);
        }
    }

    /// A spool record for an event at the current level (`None` at `off`, or
    /// without an id where one is needed).
    fn record(
        &self,
        name: &str,
        props: Props,
        now: Timestamp,
        install_id: Option<Uuid>,
    ) -> Option<Record> {
        match self.level() {
            Tier::Off => None,
            Tier::Aggregate => Some(Record::Count {
                id: ids::next(),
                day: now.day(),
                event: name.to_owned(),
                props,
                n: 1,
            }),
            tier => Some(Record::Event {
                id: ids::next(),
                tier,
                install_id: install_id?,
                name: name.to_owned(),
                ts: now,
                props,
            }),
        }
    }

    /// Encodes declared props at the current level, dropping (and counting)
    /// the rest.
    fn encode<'a>(
        &self,
        event: &str,
        props: impl IntoIterator<Item = (&'a str, PropInput)>,
    ) -> Props {
        let mut out = Props::new();
        let Some(spec) = self.manifest.event(event) else {
            return out;
        };
        for (key, value) in props {
            match spec.props.get(key).map(|p| p.encode(&value, self.level())) {
                Some(Ok(encoded)) => {
                    out.insert(key.to_owned(), encoded);
                }
                Some(Err(why)) => {
                    crate::log::debug!(event, prop = key, reason = %why, "dropping a prop value");
                    bump(&self.counters.dropped_props, 1);
                    let name = format!("{event}.{key}");
                    mistakes::Mistakes::note(&mut lock(&self.mistakes).dropped_props, &name);
                }
                None => {
                    crate::log::debug!(event, prop = key, "dropping an undeclared prop");
                    bump(&self.counters.undeclared_props, 1);
                    let name = format!("{event}.{key}");
                    mistakes::Mistakes::note(&mut lock(&self.mistakes).undeclared_props, &name);
                }
            }
        }
        out
    }

    fn track<'a>(&self, event: &str, props: impl IntoIterator<Item = (&'a str, PropInput)>) {
        if self.level() == Tier::Off {
            return;
        }
        let spec = match self.manifest.event(event) {
            Some(spec) if !spec.builtin => spec,
            _ => {
                crate::log::debug!(event, "dropping an event the manifest does not declare");
                bump(&self.counters.undeclared_events, 1);
                mistakes::Mistakes::note(&mut lock(&self.mistakes).undeclared_events, event);
                return;
            }
        };
        if spec.min_tier > self.level() {
            crate::log::debug!(event, level = %self.level(), "dropping an event above the current level");
            bump(&self.counters.above_tier, 1);
            return;
        }
        let props = self.encode(event, props);
        let now = self.clock.now();
        let full = {
            let mut buffer = lock(&self.buffer);
            if self.level() == Tier::Aggregate {
                *buffer
                    .counts
                    .entry((now.day(), event.to_owned(), props))
                    .or_default() += 1;
            } else {
                let Some(record) = self.record(event, props, now, *lock(&self.install_id)) else {
                    return;
                };
                buffer.events.push(record);
            }
            buffer.counts.len() + buffer.events.len() >= BUFFER_LIMIT
        };
        bump(&self.counters.recorded, 1);
        if full {
            self.persist();
        }
    }

    /// Records a once-per-install lifecycle event unless it was recorded before.
    fn once(&self, name: &str, flag: fn(&mut ToolState) -> &mut bool) {
        let Some(paths) = &self.paths else { return };
        if self.level() == Tier::Off || *flag(&mut ToolState::load(paths)) {
            return;
        }
        if self.dry {
            let id = *lock(&self.install_id);
            if let Some(record) = self.record(name, Props::new(), self.clock.now(), id) {
                lock(&self.buffer).events.push(record);
            }
            return;
        }
        let result = Lock::acquire(&paths.data_lock()).and_then(|_lock| {
            let mut state = ToolState::load(paths);
            if *flag(&mut state) {
                return Ok(());
            }
            let Some(record) = self.record(name, Props::new(), self.clock.now(), state.install_id)
            else {
                return Ok(());
            };
            let dropped = spool::append(paths, &[record], self.spool_limits)?;
            self.note_dropped(&mut state, dropped);
            // Marked only once it is in the spool, so a failure retries next run.
            *flag(&mut state) = true;
            state.save(paths)
        });
        if let Err(e) = result {
            crate::log::debug!(error = %e, event = name, "cannot record a lifecycle event");
            bump(&self.counters.io_errors, 1);
        }
    }

    /// Takes everything buffered, as spool records.
    pub(crate) fn drain_buffer(&self) -> Vec<Record> {
        let mut buffer = lock(&self.buffer);
        let counts = std::mem::take(&mut buffer.counts);
        let mut records: Vec<Record> = counts
            .into_iter()
            .map(|((day, event, props), n)| Record::Count {
                id: ids::next(),
                day,
                event,
                props,
                n,
            })
            .collect();
        records.append(&mut buffer.events);
        records
    }

    /// Moves the buffer into the spool (in debug mode it stays in memory,
    /// for the print at the end of the run).
    fn persist(&self) {
        let Some(paths) = &self.paths else { return };
        if self.dry {
            return;
        }
        let records = self.drain_buffer();
        if records.is_empty() {
            return;
        }
        // An uploader holds the data lock for milliseconds while it packages
        // the spool; rather than wait for it, the records go to a side file
        // of their own (`spool::append_side`), and only when that fails does
        // this run wait.
        let result = match Lock::try_acquire(&paths.data_lock()) {
            Ok(Some(_lock)) => spool::append(paths, &records, self.spool_limits),
            Ok(None) if spool::append_side(paths, &records).is_ok() => Ok(0),
            _ => Lock::acquire(&paths.data_lock())
                .and_then(|_lock| spool::append(paths, &records, self.spool_limits)),
        };
        match result {
            Ok(0) => {}
            Ok(dropped) => {
                let _ = Lock::acquire(&paths.data_lock()).and_then(|_lock| {
                    let mut state = ToolState::load(paths);
                    self.note_dropped(&mut state, dropped);
                    state.save(paths)
                });
            }
            Err(e) => {
                crate::log::debug!(error = %e, lost = records.len(), "cannot write the telemetry spool");
                bump(&self.counters.io_errors, 1);
                // Best effort: the state may be writable where the spool is not.
                let lost: u64 = records
                    .iter()
                    .map(|r| match r {
                        Record::Count { n, .. } => *n,
                        Record::Event { .. } => 1,
                    })
                    .sum();
                let _ = Lock::acquire(&paths.data_lock()).and_then(|_lock| {
                    let mut state = ToolState::load(paths);
                    state.count_dropped(state::reason::IO_ERROR, lost);
                    state.save(paths)
                });
            }
        }
    }

    fn finish(&self) {
        if self.finished.swap(true, Ordering::SeqCst) {
            return;
        }
        self.persist();
        self.keep_mistakes();
        detach::after_run(self);
    }

    /// Adds this run's mistakes to what `status --verbose` shows of earlier
    /// runs. Only a run that made one writes, and never in debug mode.
    fn keep_mistakes(&self) {
        let Some(paths) = &self.paths else { return };
        let mut mine = std::mem::take(&mut *lock(&self.mistakes));
        if self.dry || mine.is_empty() {
            return;
        }
        mine.tool_version = self.tool_version.clone();
        if let Err(e) = mine.merge_into_file(paths, self.clock.now()) {
            crate::log::debug!(error = %e, "cannot keep this run's diagnostics");
        }
    }
}

/// Locks a mutex, ignoring poisoning: the data behind it stays consistent
/// because every critical section is a single insert or take.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Telemetry {
    /// Starts configuring a handle from the tool's manifest text (usually
    /// `include_str!("../telemetry.toml")`).
    ///
    /// This is the string API, for manifests only known at run time; a host
    /// whose `telemetry.toml` is part of its source uses the typed API that
    /// `manifest!` generates instead, whose `builder()` needs no parsing.
    pub fn builder(manifest: &str) -> Builder {
        Self::with_manifest(ManifestSource::Text {
            text: manifest.to_owned(),
            parse: Manifest::parse,
        })
    }

    /// Starts configuring a handle from a manifest `manifest!` compiled. Not
    /// part of the API: generated code calls it as `builder()`.
    #[doc(hidden)]
    pub fn compiled_builder(manifest: &'static CompiledManifest) -> Builder {
        Self::with_manifest(ManifestSource::Compiled(manifest))
    }

    fn with_manifest(manifest: ManifestSource) -> Builder {
        Builder {
            manifest,
            tool_version: None,
            upload_interval: DEFAULT_UPLOAD_INTERVAL,
            default_level: DefaultLevel::Off,
            endpoint: None,
            folders: None,
            system_policy: cfg!(unix).then(|| PathBuf::from(folders::SYSTEM_POLICY_PATH)),
            clock: Arc::new(SystemClock),
            interactive: None,
            spool_limits: SpoolLimits::default(),
            outbox_limits: OutboxLimits::default(),
            detach: true,
            prompt_commands: Vec::new(),
            prompt_timeout: PROMPT_TIMEOUT,
        }
    }

    /// Records `event` with `props`. Infallible: an undeclared event or prop,
    /// or an event above the current level, is dropped and counted.
    pub fn track<'a>(&self, event: &str, props: impl IntoIterator<Item = (&'a str, PropInput)>) {
        if let Some(core) = self.ready() {
            core.track(event, props);
        }
    }

    /// Records `setup_started`, once per install.
    pub fn setup_started(&self) {
        if let Some(core) = self.ready() {
            core.once(builtin::SETUP_STARTED, |s| &mut s.lifecycle.setup_started);
        }
    }

    /// Records `setup_completed`, once per install.
    pub fn setup_completed(&self) {
        if let Some(core) = self.ready() {
            core.once(builtin::SETUP_COMPLETED, |s| {
                &mut s.lifecycle.setup_completed
            });
        }
    }

    /// Writes what was recorded so far to the spool now, without waiting for
    /// [`Telemetry::finish`]. Useful in long-running hosts.
    pub fn persist(&self) {
        if let Some(core) = self.ready() {
            core.persist();
        }
    }

    /// Spools what was recorded and, if an upload is due, starts the detached
    /// uploader. Dropping the handle does the same.
    pub fn finish(self) {
        drop(self);
    }

    /// The effective level for this run.
    pub fn level(&self) -> Tier {
        self.ready().map_or(Tier::Off, |c| c.level())
    }

    /// What happened to recorded data in this process.
    pub fn diagnostics(&self) -> Diagnostics {
        let Some(core) = self.ready() else {
            return Diagnostics::default();
        };
        let c = &core.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Diagnostics {
            recorded: get(&c.recorded),
            undeclared_events: get(&c.undeclared_events),
            undeclared_props: get(&c.undeclared_props),
            above_tier: get(&c.above_tier),
            dropped_props: get(&c.dropped_props),
            spool_dropped: get(&c.spool_dropped),
            io_errors: get(&c.io_errors),
            unknown_tool_version: core.unknown_tool_version,
        }
    }

    /// The management API for this tool, or the manifest error that disabled
    /// the handle.
    pub fn control(&self) -> Result<Control<'_>, Error> {
        match self.loaded() {
            Ok(core) => Ok(Control::new(core)),
            Err(e) => Err(Error::Manifest(e.clone())),
        }
    }
}

impl Telemetry {
    /// The core, if one was made.
    fn ready(&self) -> Option<&Core> {
        self.core.get().and_then(|c| c.as_ref().ok())
    }

    /// Whether `command` may show the first-run prompt in this run. Answered
    /// from the deferred builder while there is no core, so a run that cannot
    /// prompt (not a prompt command, or no terminal) stays on the fast path.
    #[cfg(feature = "cli")]
    pub(crate) fn may_prompt(&self, command: &str) -> bool {
        if command == "telemetry" {
            return false;
        }
        let named = |commands: &[String]| commands.iter().any(|c| c == command);
        if let Some(builder) = lock(&self.deferred).as_ref() {
            return named(&builder.prompt_commands)
                && builder.interactive.unwrap_or_else(consent::interactive);
        }
        self.ready()
            .is_some_and(|core| named(&core.prompt_commands))
    }

    /// The core, made now from the deferred builder if the fast path left
    /// it empty.
    fn loaded(&self) -> &Result<Core, ManifestError> {
        self.core.get_or_init(|| match lock(&self.deferred).take() {
            Some(builder) => builder.open(true, None),
            // Unreachable: a handle has either a core or a builder.
            None => Err(ManifestError {
                line: 1,
                column: 1,
                message: "no manifest".to_owned(),
            }),
        })
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(core) = self.ready() {
            core.finish();
        }
    }
}

/// Parses raw spool bytes and returns how many lines were intact records and
/// how many were torn. The entry point of the `spool` fuzz target, which feeds
/// it arbitrary bytes; it stays reachable when the spool module is made
/// private. Not part of the API.
#[doc(hidden)]
pub fn fuzz_spool(bytes: &[u8]) -> (usize, usize) {
    let contents = spool::parse(bytes);
    (contents.records.len(), contents.torn)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    pub(crate) const MANIFEST: &str = r#"
project = "demo-cli"
endpoint = "http://127.0.0.1:9"

[events.command]
description = "A command ran"
props.name = { kind = "enum", values = ["greet", "init"], description = "Which command" }
props.duration_ms = { kind = "bucket", bounds = [10, 100], description = "How long" }

[events.detail]
description = "Only at anonymous"
min_tier = "anonymous"
"#;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    struct Env {
        _dir: tempfile::TempDir,
        folders: Folders,
        clock: Arc<ManualClock>,
    }

    impl Env {
        fn new(level: Option<Tier>, now: &str) -> Env {
            let dir = tempfile::tempdir().unwrap();
            let folders = Folders::new(dir.path().join("config"), dir.path().join("state"));
            if let Some(level) = level {
                consent::ConsentFile::write(&folders.tool_file("demo-cli"), Some(level), at(now))
                    .unwrap();
            }
            Env {
                _dir: dir,
                folders,
                clock: Arc::new(ManualClock::new(at(now))),
            }
        }

        fn build(&self) -> Telemetry {
            Telemetry::builder(MANIFEST)
                .tool_version("1.2.3")
                .folders(self.folders.clone())
                .system_policy(None)
                .interactive(false)
                .detached_upload(false)
                .clock(self.clock.clone())
                .build()
        }

        fn records(&self) -> Vec<Record> {
            spool::read(&self.folders.tool_state("demo-cli"))
                .unwrap()
                .records
        }

        fn names(&self) -> Vec<(String, Option<Day>, Props)> {
            self.records()
                .into_iter()
                .map(|r| match r {
                    Record::Count {
                        event, day, props, ..
                    } => (event, Some(day), props),
                    Record::Event { name, props, .. } => (name, None, props),
                })
                .collect()
        }
    }

    /// An upload that is due costs the host no durable write: the slot is
    /// claimed in `upload.claim`, and the state file (two fsyncs, and two
    /// more for its backup, about a millisecond) is left to the uploader.
    /// Before, claiming the slot rewrote the state file. (The uploader itself
    /// is not started here: a test harness never starts one.)
    #[test]
    fn claiming_an_upload_slot_leaves_the_state_file_alone() {
        let env = Env::new(Some(Tier::Aggregate), "2026-11-18T10:00:00Z");
        let build = || {
            Telemetry::builder(MANIFEST)
                .tool_version("1.2.3")
                .folders(env.folders.clone())
                .system_policy(None)
                .interactive(false)
                .clock(env.clock.clone())
                .upload_interval(Duration::from_secs(3600))
                .build()
        };
        let paths = env.folders.tool_state("demo-cli");
        let claim = || {
            std::fs::read_to_string(paths.upload_claim())
                .ok()
                .map(|s| s.parse::<i64>().unwrap())
        };
        let run = || {
            let t = build();
            let before = std::fs::read(paths.state_file()).unwrap();
            t.track("command", [("name", "greet".into())]);
            drop(t);
            assert_eq!(std::fs::read(paths.state_file()).unwrap(), before);
        };
        run();
        let first = at("2026-11-18T11:00:00Z").unix_millis();
        assert_eq!(claim(), Some(first), "the slot is claimed for an interval");
        env.clock.set(at("2026-11-18T10:30:00Z"));
        run();
        assert_eq!(claim(), Some(first), "a claimed slot is not claimed again");
        env.clock.set(at("2026-11-18T11:00:01Z"));
        run();
        assert_eq!(claim(), Some(at("2026-11-18T12:00:01Z").unix_millis()));
        std::fs::write(paths.upload_claim(), "\u{0}garbage").unwrap();
        run();
        assert_eq!(
            claim(),
            Some(at("2026-11-18T12:00:01Z").unix_millis()),
            "a damaged claim reads as none"
        );
    }

    #[test]
    fn aggregate_counts_are_split_at_the_utc_day() {
        let env = Env::new(Some(Tier::Aggregate), "2026-11-18T23:59:00Z");
        let t = env.build();
        t.track("command", [("name", "greet".into())]);
        t.track("command", [("name", "greet".into())]);
        env.clock.set(at("2026-11-19T00:00:30Z"));
        t.track("command", [("name", "greet".into())]);
        drop(t);
        let mut by_day: BTreeMap<Day, u64> = BTreeMap::new();
        for r in env.records() {
            if let Record::Count { event, day, n, .. } = r
                && event == "command"
            {
                *by_day.entry(day).or_default() += n;
            }
        }
        let day = |s: &str| s.parse::<Day>().unwrap();
        assert_eq!(
            by_day,
            BTreeMap::from([(day("2026-11-18"), 2), (day("2026-11-19"), 1)])
        );
    }

    #[test]
    fn install_once_and_active_once_per_iso_week() {
        // Wednesday of 2026-W47.
        let env = Env::new(Some(Tier::Aggregate), "2026-11-18T10:00:00Z");
        drop(env.build());
        drop(env.build());
        env.clock.set(at("2026-11-22T23:59:59Z")); // Sunday, same week
        drop(env.build());
        let names: Vec<String> = env.names().into_iter().map(|n| n.0).collect();
        assert_eq!(names, ["install", "active"]);
        env.clock.set(at("2026-11-23T00:00:01Z")); // Monday, 2026-W48
        drop(env.build());
        let all = env.names();
        assert_eq!(all.len(), 3, "{all:?}");
        let (name, _, props) = &all[2];
        assert_eq!(name, "active");
        assert_eq!(
            props.get("install_age_days"),
            Some(&telemetry_protocol::PropValue::Token("<7".into()))
        );
        env.clock.set(at("2026-12-30T12:00:00Z")); // 42 days after install
        drop(env.build());
        let all = env.names();
        assert_eq!(
            all.last().unwrap().2.get("install_age_days"),
            Some(&telemetry_protocol::PropValue::Token("30..90".into()))
        );
    }

    #[test]
    fn lifecycle_survives_id_resets_and_tier_changes() {
        let env = Env::new(Some(Tier::Anonymous), "2026-11-18T10:00:00Z");
        let t = env.build();
        t.setup_started();
        t.setup_completed();
        t.setup_completed();
        let control = t.control().unwrap();
        control.reset_id().unwrap();
        control.set_level(Tier::Aggregate, BTreeMap::new()).unwrap();
        drop(t);
        let t = env.build();
        t.setup_started();
        t.setup_completed();
        drop(t);
        let state = ToolState::load(&env.folders.tool_state("demo-cli"));
        assert!(state.lifecycle.install && state.lifecycle.setup_completed);
        // The opt-out removed the anonymous events; nothing was re-recorded.
        assert!(
            env.names()
                .iter()
                .all(|(n, ..)| n != "install" && n != "setup_completed")
        );
    }

    #[test]
    fn undeclared_and_above_tier_events_are_dropped_and_counted() {
        let env = Env::new(Some(Tier::Aggregate), "2026-11-18T10:00:00Z");
        let t = env.build();
        t.track("nope", []);
        t.track("install", []);
        t.track("detail", []);
        t.track(
            "command",
            [("name", "rm -rf".into()), ("extra", true.into())],
        );
        t.track("command", [("duration_ms", 55.into())]);
        let d = t.diagnostics();
        assert_eq!(
            (
                d.undeclared_events,
                d.above_tier,
                d.undeclared_props,
                d.dropped_props,
                d.recorded
            ),
            (2, 1, 1, 1, 2)
        );
        assert!(!d.unknown_tool_version);
        drop(t);
        let props: Vec<Props> = env
            .names()
            .into_iter()
            .filter(|n| n.0 == "command")
            .map(|n| n.2)
            .collect();
        let bucket = Props::from([("duration_ms".to_owned(), "10..100".into())]);
        assert!(
            props.contains(&Props::new()) && props.contains(&bucket),
            "{props:?}"
        );
    }

    #[test]
    fn a_tool_version_sent_as_unknown_is_a_diagnostic() {
        let env = Env::new(Some(Tier::Aggregate), "2026-11-18T10:00:00Z");
        let with = |version: Option<String>| {
            let b = Telemetry::builder(MANIFEST)
                .folders(env.folders.clone())
                .system_policy(None)
                .detached_upload(false);
            match version {
                Some(v) => b.tool_version(v),
                None => b,
            }
            .build()
        };
        for (version, unknown) in [
            (Some("1.2.3".to_owned()), false),
            (Some("1.2 beta".to_owned()), true),
            (Some("9".repeat(65)), true),
            (Some("9".repeat(64)), false),
            // Not given at all: `unknown` is the documented default, not a mistake.
            (None, false),
        ] {
            let t = with(version.clone());
            assert_eq!(t.diagnostics().unknown_tool_version, unknown, "{version:?}");
            let sent = &t
                .ready()
                .expect("recording, so the core is made")
                .tool_version;
            assert_eq!(
                sent == "unknown",
                unknown || version.is_none(),
                "{version:?}"
            );
        }
    }

    #[test]
    fn off_records_and_writes_nothing() {
        let env = Env::new(None, "2026-11-18T10:00:00Z");
        let t = env.build();
        assert_eq!(t.level(), Tier::Off);
        t.track("command", [("name", "greet".into())]);
        t.setup_completed();
        drop(t);
        assert!(!env.folders.state.exists());
    }

    /// The public surface stays small, whatever the features: two modules
    /// and the hidden support module of `manifest!`, and only types, traits,
    /// constants and the `manifest!` macro at the root (any other lower-case
    /// name there would be a module or a function re-exported by accident).
    /// What the crate's own tests read sits inside `testing`.
    #[test]
    fn the_root_exports_few_modules_and_no_other_module() {
        let src = include_str!("lib.rs");
        let modules: Vec<&str> = src
            .lines()
            .filter_map(|l| l.strip_prefix("pub mod "))
            .map(|l| l.trim_end_matches(';'))
            .collect();
        assert_eq!(modules, ["cli", "testing", "macro_support"]);
        for item in src.split("\npub use ").skip(1) {
            let item = item.split(';').next().unwrap_or_default();
            let names = item.rsplit("::").next().unwrap_or_default();
            for name in names.split([',', '{', '}']).map(str::trim) {
                assert!(
                    name.is_empty()
                        || name == "manifest"
                        || name.starts_with(|c: char| c.is_ascii_uppercase()),
                    "`{name}` re-exported at the root: pub use {item}"
                );
            }
        }
    }

    /// `test-bins` opens one hidden module to this crate's integration
    /// tests, holding only what they need, and nothing else: no internal
    /// module, no re-export at the root. Anything enabling the feature gets
    /// this much and no more, so the list below only grows with a test that
    /// needs it.
    #[test]
    fn test_bins_opens_one_hidden_module_with_only_what_the_tests_need() {
        let gate = "#[cfg(feature = \"test-bins\")]";
        let gated: Vec<&str> = [include_str!("lib.rs"), include_str!("testing.rs")]
            .into_iter()
            .flat_map(|src| src.split(gate).skip(1))
            .map(|rest| {
                let mut lines = rest.lines().map(str::trim);
                lines
                    .find(|l| !l.is_empty() && !l.starts_with("#["))
                    .unwrap_or_default()
            })
            .collect();
        assert_eq!(gated, ["pub mod for_own_tests_only;"]);
        let module = include_str!("for_own_tests_only.rs");
        let items: Vec<&str> = module
            .lines()
            .filter_map(|l| l.strip_prefix("pub "))
            .filter_map(|l| l.split([' ', '(', ';']).nth(1))
            .map(|path| path.rsplit("::").next().unwrap_or(path))
            .collect();
        assert_eq!(
            items,
            [
                "Machine",
                "Record",
                "Spool",
                "spool",
                "spool_is_empty",
                "State",
                "state",
                "parse_state"
            ]
        );
        // The views copy data out: nothing there writes a file.
        for writer in ["save(", "fs::", "files::"] {
            assert!(
                !module.contains(writer),
                "`{writer}` in for_own_tests_only.rs"
            );
        }
    }

    /// The plain-data types a host gets from the API (structs with public
    /// fields, enums) are `#[non_exhaustive]`, so a later version can add a
    /// field or a variant without breaking a host (docs/compatibility.md).
    /// Every type re-exported from this crate's own modules is checked, so a
    /// new export needs a decision too; only types whose fields are all
    /// private (handles such as `Control`) may leave the attribute out.
    #[test]
    fn exported_data_types_are_non_exhaustive() {
        let source = |module: &str| match module {
            "lib" => include_str!("lib.rs"),
            "consent" => include_str!("consent.rs"),
            "control" => include_str!("control.rs"),
            "error" => include_str!("error.rs"),
            "spool" => include_str!("spool.rs"),
            "upload" => include_str!("upload.rs"),
            "upload_log" => include_str!("upload_log.rs"),
            "machine" => include_str!("cli/machine.rs"),
            other => panic!("a re-export from `{other}`: add its source here"),
        };
        // What the root and `cli` re-export from this crate, and what the
        // root defines itself.
        let mut exported: Vec<(&str, &str)> = vec![("lib", "Diagnostics")];
        for (src, prefix) in [
            (include_str!("lib.rs"), "\npub use crate::"),
            (include_str!("cli/mod.rs"), "\npub use machine::"),
        ] {
            for item in src.split(prefix).skip(1) {
                let item = item.split(';').next().unwrap_or_default();
                let (module, names) = item.split_once("::").unwrap_or(("machine", item));
                let module = if prefix.ends_with("machine::") {
                    "machine"
                } else {
                    module
                };
                for name in names.split([',', '{', '}']).map(str::trim) {
                    if !name.is_empty() {
                        exported.push((module, name));
                    }
                }
            }
        }
        assert!(
            exported.len() > 12,
            "the scan found too little: {exported:?}"
        );
        for (module, name) in exported {
            let src = source(module);
            let def = [
                format!("\npub struct {name} "),
                format!("\npub struct {name}<"),
                format!("\npub enum {name} "),
            ]
            .iter()
            .find_map(|d| src.find(d.as_str()))
            .unwrap_or_else(|| panic!("no definition of `{name}` in {module}"));
            // Its doc comment and attributes: back to the blank line before.
            let attrs = &src[src[..def].rfind("\n\n").unwrap_or(0)..def];
            let body = &src[def..def + src[def..].find("\n}").unwrap_or(src.len() - def)];
            let opaque = body.starts_with("\npub struct") && !body.contains("\n    pub ");
            assert!(
                opaque || attrs.contains("#[non_exhaustive]"),
                "`{name}` ({module}) is plain data a later version may grow: mark it #[non_exhaustive]"
            );
        }
    }

    /// A manifest whose project line is fine and whose rest is not.
    const BROKEN: &str = "project = \"demo-cli\"\nendpoint = \"http://127.0.0.1:9\"\n[events.command]\ndescripton = \"typo\"\n";

    impl Env {
        fn build_with(&self, manifest: &str, policy: Option<PathBuf>) -> Telemetry {
            Telemetry::builder(manifest)
                .folders(self.folders.clone())
                .system_policy(policy)
                .interactive(false)
                .detached_upload(false)
                .clock(self.clock.clone())
                .build()
        }
    }

    #[test]
    fn off_parses_no_manifest_and_touches_no_state() {
        let env = Env::new(None, "2026-11-18T10:00:00Z");
        let t = env.build_with(BROKEN, None);
        t.track("command", []);
        t.setup_started();
        t.persist();
        assert_eq!(t.level(), Tier::Off);
        assert!(t.core.get().is_none(), "the manifest was parsed at off");
        drop(t);
        assert!(!env.folders.state.exists(), "state or lock files at off");
        // The subcommand and the prompt still get a core, made on demand,
        // which reports the broken manifest as today.
        let t = env.build_with(BROKEN, None);
        assert!(matches!(t.control(), Err(Error::Manifest(e)) if e.line == 4));
        // At a recording level the manifest is parsed at once, as before.
        let env = Env::new(Some(Tier::Aggregate), "2026-11-18T10:00:00Z");
        let t = env.build_with(BROKEN, None);
        assert!(matches!(t.core.get(), Some(Err(_))));
        assert_eq!(t.level(), Tier::Off);
        drop(t);
        assert!(!env.folders.state.exists());
    }

    #[test]
    fn every_way_to_off_takes_the_fast_path() {
        let now = "2026-11-18T10:00:00Z";
        let ceiling = |dir: &Path, name: &str, level: &str| {
            let path = dir.join(name);
            std::fs::write(&path, format!("level = \"{level}\"\n")).unwrap();
            path
        };
        // (stored choice, global ceiling, policy ceiling, fast)
        let cases = [
            (None, None, None, true),
            (Some(Tier::Off), None, None, true),
            (Some(Tier::Full), Some("off"), None, true),
            (Some(Tier::Full), None, Some("off"), true),
            (Some(Tier::Aggregate), Some("anonymous"), None, false),
            (Some(Tier::Full), None, Some("aggregate"), false),
        ];
        for (choice, global, policy, fast) in cases {
            let env = Env::new(choice, now);
            if let Some(level) = global {
                std::fs::create_dir_all(&env.folders.config).unwrap();
                ceiling(&env.folders.config, "global.toml", level);
            }
            let case = format!("{choice:?} {global:?} {policy:?}");
            let policy = policy.map(|level| ceiling(env._dir.path(), "policy.toml", level));
            let t = env.build_with(MANIFEST, policy);
            assert_eq!(t.core.get().is_none(), fast, "{case}");
            assert_eq!(t.level() == Tier::Off, fast, "{case}");
            drop(t);
            assert_eq!(env.folders.state.exists(), !fast, "{case}");
        }
    }

    #[test]
    fn an_opt_out_with_work_left_takes_the_full_path() {
        let env = Env::new(Some(Tier::Anonymous), "2026-11-18T10:00:00Z");
        let t = env.build();
        t.track("command", [("name", "greet".into())]);
        // Opting out queues the deletion of the install's events; the
        // uploader is off in tests, so it stays queued.
        t.control()
            .unwrap()
            .set_level(Tier::Off, BTreeMap::new())
            .unwrap();
        drop(t);
        let paths = env.folders.tool_state("demo-cli");
        assert!(!ToolState::load(&paths).pending_deletions.is_empty());
        let t = env.build();
        assert!(
            t.core.get().is_some(),
            "a queued deletion must still be sent"
        );
        drop(t);
        // Once nothing is queued, an opted-out user is on the fast path too.
        let mut state = ToolState::load(&paths);
        state.pending_deletions.clear();
        state.save(&paths).unwrap();
        let t = env.build();
        assert!(t.core.get().is_none());
        // An id left behind by an opt-out made by hand is still deleted.
        let mut state = ToolState::load(&paths);
        state.install_id = Some(Uuid::new_v4());
        state.save(&paths).unwrap();
        let t = env.build();
        assert!(t.core.get().is_some());
        drop(t);
        assert_eq!(ToolState::load(&paths).install_id, None);
    }

    #[test]
    fn a_bad_manifest_gives_a_disabled_handle() {
        let t = Telemetry::builder("project = 1").build();
        t.track("command", []);
        assert_eq!(t.level(), Tier::Off);
        assert!(matches!(t.control(), Err(Error::Manifest(_))));
    }
}

#[cfg(test)]
mod prompt_tests {
    use super::*;

    #[test]
    fn the_prompt_is_due_only_on_a_terminal_without_a_stored_choice() {
        let dir = tempfile::tempdir().unwrap();
        let folders = Folders::new(dir.path().join("c"), dir.path().join("s"));
        let build = |interactive: bool| {
            Telemetry::builder(tests::MANIFEST)
                .folders(folders.clone())
                .system_policy(None)
                .interactive(interactive)
                .detached_upload(false)
                .build()
        };
        assert!(!build(false).control().unwrap().should_prompt());
        let t = build(true);
        let control = t.control().unwrap();
        assert!(control.should_prompt());
        control
            .store_prompt_answer(Tier::Off, BTreeMap::new())
            .unwrap();
        assert!(!control.should_prompt(), "answered once, never again");
        let status = control.status().unwrap();
        assert_eq!((status.level, status.source), (Tier::Off, Source::ToolFile));
    }
}

#[cfg(test)]
mod prompt_quiet_tests {
    use super::*;

    #[test]
    fn an_unanswered_prompt_is_quiet_for_a_week_and_once_per_run() {
        let dir = tempfile::tempdir().unwrap();
        let folders = Folders::new(dir.path().join("c"), dir.path().join("s"));
        let clock = Arc::new(ManualClock::new("2026-11-18T10:00:00Z".parse().unwrap()));
        let build = || {
            Telemetry::builder(tests::MANIFEST)
                .folders(folders.clone())
                .system_policy(None)
                .interactive(true)
                .detached_upload(false)
                .clock(clock.clone())
                .build()
        };
        let t = build();
        let control = t.control().unwrap();
        assert!(control.should_prompt());
        control.note_unanswered().unwrap();
        assert!(!control.should_prompt());
        clock.advance_millis(6 * 24 * 3600 * 1000);
        assert!(
            !build().control().unwrap().should_prompt(),
            "six days later"
        );
        clock.advance_millis(24 * 3600 * 1000);
        let t = build();
        assert!(t.control().unwrap().should_prompt(), "a week later");
        t.ready().unwrap().prompted.store(true, Ordering::SeqCst);
        assert!(!t.control().unwrap().should_prompt(), "once per run");
    }
}
