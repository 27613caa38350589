//! Knobs for tests, behind the `testing` feature. **Not for release builds.**
//!
//! Enable the feature for your test suite only:
//!
//! ```toml
//! [dev-dependencies]
//! telemetry-client = { version = "0.1", features = ["testing"] }
//! ```
//!
//! It adds builder methods that a shipped tool must never call, because each
//! would defeat a choice the user or the administrator made for the whole
//! machine:
//!
//! - [`Builder::folders`](crate::Builder::folders) and
//!   [`Builder::dirs`](crate::Builder::dirs) move the consent folder away
//!   from the user's `global.toml` and from `telemetry-consent`;
//! - [`Builder::system_policy`](crate::Builder::system_policy) reads the
//!   administrator's policy from another file, or from none;
//! - [`Builder::interactive`](crate::Builder::interactive) brings the
//!   first-run prompt back in CI and in scripts;
//! - [`Builder::clock`](crate::Builder::clock) and
//!   [`Builder::prompt_timeout`](crate::Builder::prompt_timeout) move time.
//!
//! # Release builds fail on purpose
//!
//! A release build (`cargo build --release`, `cargo install`, or any profile
//! that inherits from `release`) or any build without debug assertions that
//! has the feature on stops with a compile error, so a host that put
//! `testing` under `[dependencies]` by mistake finds out before it ships.
//! Dev-dependencies never reach a host's release binary, so the usual setup
//! above is never affected. An optimised build that needs the knobs on
//! purpose (a benchmark, `cargo test --release`) enables the
//! `testing-in-release` feature too, in the same dev-dependency line.
//!
//! # What the guard guarantees, and what it cannot
//!
//! The guard is a compile-time check of the features and the profile that
//! telemetry-client itself is built with. It guarantees:
//!
//! - a release-profile build with `testing` on and `testing-in-release` off
//!   does not compile, even when the profile keeps debug assertions on
//!   (`[profile.release] debug-assertions = true`; the profile family comes
//!   from Cargo's `PROFILE`, read by the build script), and so does any
//!   build without debug assertions;
//! - `cargo build` and `cargo install` of a host never activate
//!   dev-dependencies, so a `testing` line there never reaches a binary
//!   they build.
//!
//! It cannot see:
//!
//! - **Feature unification.** Cargo compiles telemetry-client once per
//!   command, with the union of the features every package in that command
//!   asked for, and cannot tell which binary asked. If any package in a
//!   build enables `testing-in-release` (a benchmark crate in the host's
//!   workspace, say), every host built by the same command gets the knobs
//!   without an error, including one that calls them by mistake. Keep both
//!   features out of every `[dependencies]` section of a workspace, or
//!   behind a feature of your own that is off by default; this workspace's
//!   fleet drill does that (loadgen's `drill`), and a test checks with
//!   `cargo tree -e features,no-dev` that building the workspace turns on
//!   neither. Building tests (`cargo test --release --workspace`, or
//!   `cargo build --all-targets`) does activate dev-dependencies, and so
//!   unifies their features into the hosts built alongside: don't ship
//!   binaries from such a build.
//! - **A debug build.** `testing` in `[dependencies]` compiles in a debug
//!   build, by design, since that is how tests run; a host shipped from a
//!   debug build (`cargo install --debug`) would have the knobs.
//! - **A profile outside both families.** A custom profile that inherits
//!   from `dev` and turns debug assertions off trips the guard; one that
//!   inherits from `dev` and keeps them does not.
//!
//! The guard is there against mistakes, not against a host that means to
//! override the user: any program can write the consent files itself.
//! A run-time opt-in (an environment variable the knobs would also need in
//! optimised builds) was considered and left out: Rust 2024 makes
//! `std::env::set_var` unsafe, so a test could not give it to itself
//! without `unsafe` (which this workspace forbids, as many do), and every
//! optimised test run and benchmark would need it from outside, where
//! forgetting it would quietly measure a disabled handle.
//!
//! # Example: a handle in a temporary home
//!
//! ```
//! use std::collections::BTreeMap;
//! use telemetry_client::{Telemetry, Tier};
//!
//! # const MANIFEST: &str = "project = \"my-tool\"\nendpoint = \"https://t.example.org\"\n[events.command]\ndescription = \"A command ran\"\n";
//! let home = tempfile::tempdir().unwrap();
//! let build = || {
//!     Telemetry::builder(MANIFEST) // include_str!("../telemetry.toml")
//!         .dirs(home.path().join("config"), home.path().join("state"))
//!         .system_policy(None)
//!         .interactive(false)
//!         .detached_upload(false)
//!         .build()
//! };
//! // Opt in as the user would with `my-tool telemetry enable aggregate`; a
//! // raised level applies from the next run.
//! build().control().unwrap().set_level(Tier::Aggregate, BTreeMap::new()).unwrap();
//! let telemetry = build();
//! assert_eq!(telemetry.level(), Tier::Aggregate);
//! telemetry.track("command", []);
//! assert_eq!(telemetry.diagnostics().recorded, 1);
//! ```

pub use telemetry_protocol::Timestamp;

pub use crate::clock::{Clock, ManualClock, SystemClock};
pub use crate::env::UPLOADER_MARKER;
pub use crate::folders::Folders;

// What this crate's own integration tests reach beside the API (feature
// `test-bins`, which only this crate's dev-dependency on itself turns on):
// the machine-wide management and read-only views of the spool and state.
// Hidden, and no part of the API; the one place `test-bins` opens anything.
// Inside `testing`, so the crate root has the same modules whatever the
// features.
#[cfg(feature = "test-bins")]
#[doc(hidden)]
#[path = "for_own_tests_only.rs"]
pub mod for_own_tests_only;
