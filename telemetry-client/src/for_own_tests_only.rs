//! What this crate's own integration tests (`tests/it`) reach beside the
//! public API, and nothing more: the machine-wide management, and read-only
//! views of the spool and the state file. **No part of the API**, hidden from
//! the docs, and only compiled with the `test-bins` feature, which only this
//! crate's dev-dependency on itself turns on.
//!
//! Everything else those tests check goes through the public API (the
//! `testing` knobs, [`Control`](crate::Control)), so the on-disk formats stay
//! private: they can change in any release.

use std::collections::BTreeMap;

use telemetry_protocol::{Timestamp, Uuid};

use crate::folders::ToolPaths;

/// `telemetry-consent`'s machine-wide management, built on test folders
/// (`Machine::with_folders`).
pub use crate::control::Machine;
/// A record in the spool, as `spool` returns it.
pub use crate::spool::Record;

/// What the spool holds, copied out.
#[derive(Debug, Clone)]
pub struct Spool {
    /// The intact records, oldest first.
    pub records: Vec<Record>,
    /// Lines that failed their checksum or did not parse.
    pub torn: usize,
}

/// Reads the spool of the tool whose folder is `paths` (empty if there is none).
pub fn spool(paths: &ToolPaths) -> std::io::Result<Spool> {
    crate::spool::read(paths).map(|c| Spool {
        records: c.records,
        torn: c.torn,
    })
}

/// Whether the spool holds nothing (or does not exist).
pub fn spool_is_empty(paths: &ToolPaths) -> bool {
    crate::spool::is_empty(paths)
}

/// The parts of a tool's state file the tests check, copied out, so that
/// nothing here can write the state.
#[derive(Debug, Clone)]
pub struct State {
    /// The install id, if the level has one.
    pub install_id: Option<Uuid>,
    /// When the first-run prompt was last shown.
    pub prompt_asked_at: Option<Timestamp>,
    /// The earliest time the uploader tries again.
    pub next_attempt: Option<Timestamp>,
    /// Upload attempts that failed in a row.
    pub failures: u32,
    /// Old install ids whose deletion is not acknowledged yet.
    pub pending_deletions: Vec<Uuid>,
    /// Occurrences dropped locally and not yet reported, by reason.
    pub dropped: BTreeMap<String, u64>,
    /// Whether a report of drop counts is on its way to the collector.
    pub health_report: bool,
}

/// The state of the tool whose folder is `paths`, as the client loads it
/// (defaults if missing, the backup if damaged).
pub fn state(paths: &ToolPaths) -> State {
    State::from(crate::state::ToolState::load(paths))
}

/// The text of a state file, parsed strictly: no fallback to a backup or
/// to defaults, so a test sees a file the client could not read.
pub fn parse_state(text: &str) -> Result<State, serde_json::Error> {
    serde_json::from_str::<crate::state::ToolState>(text).map(State::from)
}

impl From<crate::state::ToolState> for State {
    fn from(s: crate::state::ToolState) -> State {
        State {
            install_id: s.install_id,
            prompt_asked_at: s.prompt_asked_at,
            next_attempt: s.next_attempt,
            failures: s.failures,
            pending_deletions: s.pending_deletions,
            dropped: s.dropped,
            health_report: s.health.is_some(),
        }
    }
}
