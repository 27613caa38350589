//! The per-tool state file: install id, identity, lifecycle flags, the upload
//! schedule and queued deletion requests.
//!
//! The lifecycle flags live here rather than with the install id, so that
//! resetting the id or changing tier never makes `install` (or a setup event)
//! count twice for one installation. Writers hold the tool's data lock and
//! replace the file atomically; readers need no lock.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use telemetry_protocol::{Day, IsoWeek, Timestamp, Uuid};

use crate::files;
use crate::folders::ToolPaths;

/// Reads and parses a state file: `Ok(None)` when missing, `Err` when it
/// cannot be read or is not a valid state.
fn read(path: &std::path::Path) -> std::io::Result<Option<ToolState>> {
    match files::read_optional(path)? {
        None => Ok(None),
        Some(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(std::io::Error::other),
    }
}

/// Which once-per-install events have been recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Lifecycle {
    /// `install` was recorded.
    pub install: bool,
    /// `setup_started` was recorded.
    pub setup_started: bool,
    /// `setup_completed` was recorded.
    pub setup_completed: bool,
}

/// Everything the client remembers about one tool between runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ToolState {
    /// The random install id, present only at `anonymous` and `full`.
    pub install_id: Option<Uuid>,
    /// The identity fields entered when opting in to `full`.
    pub identity: BTreeMap<String, String>,
    /// The UTC day `install` was recorded, for the `active` age bucket.
    pub install_day: Option<Day>,
    /// Once-per-install events already recorded.
    pub lifecycle: Lifecycle,
    /// The ISO week `active` was last recorded for.
    pub last_active_week: Option<IsoWeek>,
    /// When the first-run prompt was last shown without an answer; it is not
    /// shown again for a week after.
    pub prompt_asked_at: Option<Timestamp>,
    /// The collector this tool sends to, stored whenever a deletion is
    /// queued, so that `telemetry-consent` can send the tool's deletions
    /// without running the tool (it has no manifest to read it from).
    pub endpoint: Option<String>,
    /// The collector URL of the last upload attempt.
    pub endpoint_last_used: Option<String>,
    /// When data was last delivered.
    pub last_upload: Option<Timestamp>,
    /// When an upload was last attempted.
    pub last_attempt: Option<Timestamp>,
    /// No upload is started before this moment (interval or back-off).
    pub next_attempt: Option<Timestamp>,
    /// Consecutive failed attempts, for the back-off.
    pub failures: u32,
    /// Install ids whose deletion the collector has not acknowledged yet.
    pub pending_deletions: Vec<Uuid>,
    /// Occurrences dropped because the spool was full, all time.
    pub spool_dropped: u64,
    /// Occurrences dropped and not yet reported to the collector, by reason
    /// (one of `builtin::DROPPED_REASONS`).
    pub dropped: BTreeMap<String, u64>,
    /// The delivery-health report being sent: its id and counts are fixed
    /// until the collector answers, so a retry never counts twice.
    pub health: Option<HealthReport>,
    /// Outbox files whose refusals are already in `dropped`, newest last. A
    /// payload is counted before its file is removed, so an uploader killed
    /// in between sends it again; this keeps the second answer from being
    /// counted too. Only the last few are kept: a file is removed right after.
    pub refusals_counted: Vec<String>,
}

/// How many outbox file names [`ToolState::refusals_counted`] remembers.
pub const REFUSALS_COUNTED_KEPT: usize = 32;

/// Drop counts on their way to the collector as `telemetry_dropped` counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthReport {
    /// The payload's report id.
    pub report_id: Uuid,
    /// The UTC day the counters are reported under.
    pub day: Day,
    /// The counts sent, by reason; subtracted from `dropped` once delivered.
    pub counts: BTreeMap<String, u64>,
}

/// The reasons for dropping data, as sent in the `telemetry_dropped` event.
pub(crate) mod reason {
    // Each is one of `builtin::DROPPED_REASONS`; `reasons_are_the_protocols`
    // below checks it. Two are only used from item to item as features land.
    #![allow(dead_code, unreachable_pub)]
    /// The spool was full; the oldest records went.
    pub const SPOOL_FULL: &str = "spool_full";
    /// The outbox was over its size bound; the oldest payloads went.
    pub const OUTBOX_FULL: &str = "outbox_full";
    /// A payload waited in the outbox longer than its age bound.
    pub const OUTBOX_EXPIRED: &str = "outbox_expired";
    /// The collector refused a whole payload (400 or 422), or the client's
    /// own check did before sending.
    pub const REFUSED_PAYLOAD: &str = "refused_payload";
    /// The collector accepted a payload but refused some of its items.
    pub const REFUSED_ITEMS: &str = "refused_items";
    /// A file operation failed and the data involved was lost.
    pub const IO_ERROR: &str = "io_error";
}

impl ToolState {
    /// Reads the state. A missing file is the default state. A damaged one
    /// (unreadable, or not valid) is replaced by the last good copy beside
    /// it; where there is none, by a fresh state whose once-per-install
    /// events count as already sent, so that a damaged file undercounts one
    /// install rather than counting it twice. Never fails: the host is never
    /// affected.
    pub fn load(paths: &ToolPaths) -> ToolState {
        match read(&paths.state_file()) {
            Ok(Some(state)) => state,
            Ok(None) => match read(&paths.state_backup()) {
                // The main file was removed behind our back; the copy is good.
                Ok(Some(state)) => state,
                _ => ToolState::default(),
            },
            Err(e) => {
                crate::log::debug!(error = %e, "telemetry state file is damaged");
                match read(&paths.state_backup()) {
                    Ok(Some(state)) => state,
                    _ => ToolState::after_damage(),
                }
            }
        }
    }

    /// A fresh state for an install whose state was lost.
    fn after_damage() -> ToolState {
        ToolState {
            lifecycle: Lifecycle {
                install: true,
                setup_started: true,
                setup_completed: true,
            },
            ..ToolState::default()
        }
    }

    /// Writes the state atomically, then the same bytes to the backup copy
    /// (atomically too), so one of the two is always whole and current or
    /// one step behind. Every time in it is within the years 1970 to 9999.
    /// The caller holds the data lock.
    pub fn save(&self, paths: &ToolPaths) -> std::io::Result<()> {
        let mut state = self.clone();
        for t in [
            &mut state.prompt_asked_at,
            &mut state.last_upload,
            &mut state.last_attempt,
            &mut state.next_attempt,
        ]
        .into_iter()
        .flatten()
        {
            *t = crate::clock::bounded(*t);
        }
        let text = serde_json::to_vec_pretty(&state).map_err(std::io::Error::other)?;
        files::write_atomic(&paths.state_file(), &text)?;
        files::write_atomic(&paths.state_backup(), &text)
    }

    /// Adds `n` to the drops counted for `why`.
    pub fn count_dropped(&mut self, why: &str, n: u64) {
        if n > 0 {
            let slot = self.dropped.entry(why.to_owned()).or_default();
            *slot = slot.saturating_add(n);
        }
    }

    /// Queues a deletion request for `id`, once.
    pub fn queue_deletion(&mut self, id: Uuid) {
        if !self.pending_deletions.contains(&id) {
            self.pending_deletions.push(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::reason::*;
    use super::*;
    use telemetry_protocol::manifest::builtin::DROPPED_REASONS;

    fn paths(dir: &tempfile::TempDir) -> ToolPaths {
        ToolPaths {
            dir: dir.path().join("demo"),
        }
    }

    /// Case 6 of issue 13: a state file that failed to parse started afresh
    /// with a new id, sent `install` again and forgot queued deletions.
    #[test]
    fn a_damaged_state_file_is_recovered_from_its_copy() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(&dir);
        let mut state = ToolState {
            install_id: Some(Uuid::new_v4()),
            ..ToolState::default()
        };
        state.lifecycle.install = true;
        state.queue_deletion(Uuid::new_v4());
        state.save(&p).unwrap();
        std::fs::write(p.state_file(), b"{\"install_id\": \"tor").unwrap();
        assert_eq!(ToolState::load(&p), state);
    }

    #[test]
    fn with_nothing_to_recover_lifecycle_events_count_as_sent() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(&dir);
        ToolState::default().save(&p).unwrap();
        std::fs::write(p.state_file(), b"not json").unwrap();
        std::fs::write(p.state_backup(), b"not json either").unwrap();
        let state = ToolState::load(&p);
        assert!(state.install_id.is_none());
        assert!(state.lifecycle.install && state.lifecycle.setup_started);
        assert!(state.lifecycle.setup_completed);
    }

    #[test]
    fn saved_times_stay_within_four_digit_years() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(&dir);
        let state = ToolState {
            next_attempt: Some(Timestamp::from_unix_millis(1_000_000_000_000_000)),
            last_attempt: Some(Timestamp::from_unix_millis(-5)),
            ..ToolState::default()
        };
        state.save(&p).unwrap();
        let text = std::fs::read_to_string(p.state_file()).unwrap();
        let back: ToolState = serde_json::from_str(&text).expect("parses");
        assert_eq!(
            back.next_attempt.unwrap().unix_millis(),
            crate::clock::MAX_MILLIS
        );
        assert_eq!(back.last_attempt.unwrap().unix_millis(), 0);
    }

    #[test]
    fn reasons_are_the_protocols() {
        let ours = [
            SPOOL_FULL,
            OUTBOX_FULL,
            OUTBOX_EXPIRED,
            REFUSED_PAYLOAD,
            REFUSED_ITEMS,
            IO_ERROR,
        ];
        assert_eq!(ours, DROPPED_REASONS);
    }
}
