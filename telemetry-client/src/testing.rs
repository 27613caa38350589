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
//! A build without debug assertions (`cargo build --release`) that has the
//! feature on stops with a compile error, so a host that put `testing` under
//! `[dependencies]` by mistake finds out before it ships. Dev-dependencies
//! never reach a host's release binary, so the usual setup above is never
//! affected. An optimised build that needs the knobs on purpose (a benchmark,
//! `cargo test --release`) enables the `testing-in-release` feature too, in
//! the same dev-dependency line.
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
