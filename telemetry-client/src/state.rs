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
    /// (one of `builtin::DROPPED_REASONS`); see [`reason`].
    pub dropped: BTreeMap<String, u64>,
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
    /// Reads the state; a missing file is the default state, and an unreadable
    /// one is logged and treated as missing so the host is never affected.
    pub fn load(paths: &ToolPaths) -> ToolState {
        match files::read_optional(&paths.state_file()) {
            Ok(None) => ToolState::default(),
            Ok(Some(text)) => serde_json::from_str(&text).unwrap_or_else(|e| {
                tracing::debug!(error = %e, "telemetry state file is corrupt; starting afresh");
                ToolState::default()
            }),
            Err(e) => {
                tracing::debug!(error = %e, "cannot read telemetry state file");
                ToolState::default()
            }
        }
    }

    /// Writes the state atomically. The caller holds the data lock.
    pub fn save(&self, paths: &ToolPaths) -> std::io::Result<()> {
        let text = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        files::write_atomic(&paths.state_file(), &text)
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
    use telemetry_protocol::manifest::builtin::DROPPED_REASONS;

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
