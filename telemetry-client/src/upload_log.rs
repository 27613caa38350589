//! The upload log: the last uploads, what they carried and how they ended,
//! so `telemetry log` can show a user exactly what left their machine.
//!
//! The public [`LogEntry`] is what [`Control::upload_log`](crate::Control::upload_log)
//! hands a host; it only serializes (for `telemetry log --json`). The file
//! holds a private mirror of it, [`Stored`], so that the file's format stays
//! this crate's to change: a host reads the log through the API, never by
//! parsing the file.

use serde::{Deserialize, Serialize};
use telemetry_protocol::{Tier, Timestamp};

use crate::files;
use crate::folders::ToolPaths;

/// How many entries the log keeps.
pub const LOG_LEN: usize = 50;

/// What was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum UploadKind {
    /// A `POST /v1/ingest` payload.
    Ingest,
    /// A `POST /v1/delete` request.
    Delete,
}

/// How an upload ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum UploadResult {
    /// The collector acknowledged it (2xx).
    Delivered,
    /// The collector refused it for good (4xx); it was dropped.
    Rejected,
    /// The collector asked to retry later (429, 503); it was kept.
    Deferred,
    /// The collector could not be reached or failed (5xx); it was kept.
    Failed,
    /// It was printed to stderr instead of sent (`<TOOL>_TELEMETRY_DEBUG=1`).
    Printed,
    /// It failed the client's own check before sending and was dropped.
    Invalid,
}

/// One upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct LogEntry {
    /// When.
    pub time: Timestamp,
    /// What kind of request.
    pub kind: UploadKind,
    /// The payload's tier (ingest only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier: Option<Tier>,
    /// Counters or events carried (1 for a deletion).
    pub items: u64,
    /// How it ended.
    pub result: UploadResult,
    /// The status code or error, in words.
    pub detail: String,
}

/// One entry as the file holds it. Private, so the file's format is no part
/// of the API; it reads every file earlier versions wrote.
#[derive(Serialize, Deserialize)]
struct Stored {
    time: Timestamp,
    kind: StoredKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tier: Option<Tier>,
    items: u64,
    result: StoredResult,
    detail: String,
}

/// [`UploadKind`] in the file.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum StoredKind {
    Ingest,
    Delete,
}

/// [`UploadResult`] in the file.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum StoredResult {
    Delivered,
    Rejected,
    Deferred,
    Failed,
    Printed,
    Invalid,
}

impl From<&LogEntry> for Stored {
    fn from(e: &LogEntry) -> Stored {
        Stored {
            time: e.time,
            kind: match e.kind {
                UploadKind::Ingest => StoredKind::Ingest,
                UploadKind::Delete => StoredKind::Delete,
            },
            tier: e.tier,
            items: e.items,
            result: match e.result {
                UploadResult::Delivered => StoredResult::Delivered,
                UploadResult::Rejected => StoredResult::Rejected,
                UploadResult::Deferred => StoredResult::Deferred,
                UploadResult::Failed => StoredResult::Failed,
                UploadResult::Printed => StoredResult::Printed,
                UploadResult::Invalid => StoredResult::Invalid,
            },
            detail: e.detail.clone(),
        }
    }
}

impl From<Stored> for LogEntry {
    fn from(s: Stored) -> LogEntry {
        LogEntry {
            time: s.time,
            kind: match s.kind {
                StoredKind::Ingest => UploadKind::Ingest,
                StoredKind::Delete => UploadKind::Delete,
            },
            tier: s.tier,
            items: s.items,
            result: match s.result {
                StoredResult::Delivered => UploadResult::Delivered,
                StoredResult::Rejected => UploadResult::Rejected,
                StoredResult::Deferred => UploadResult::Deferred,
                StoredResult::Failed => UploadResult::Failed,
                StoredResult::Printed => UploadResult::Printed,
                StoredResult::Invalid => UploadResult::Invalid,
            },
            detail: s.detail,
        }
    }
}

/// The file's entries, oldest first. Missing or unreadable means empty.
fn read_stored(paths: &ToolPaths) -> Vec<Stored> {
    files::read_optional(&paths.upload_log())
        .ok()
        .flatten()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

/// The log, oldest first. Missing or unreadable means empty.
pub fn read(paths: &ToolPaths) -> Vec<LogEntry> {
    read_stored(paths).into_iter().map(LogEntry::from).collect()
}

/// Appends `entries`, keeping the last [`LOG_LEN`]. The caller holds the data lock.
pub fn append(paths: &ToolPaths, entries: &[LogEntry]) -> std::io::Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let mut log = read_stored(paths);
    log.extend(entries.iter().map(Stored::from));
    let excess = log.len().saturating_sub(LOG_LEN);
    log.drain(..excess);
    let bytes = serde_json::to_vec_pretty(&log).map_err(std::io::Error::other)?;
    files::write_atomic(&paths.upload_log(), &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Compiles only while `T` does not implement `DeserializeOwned`: with
    /// the impl, `_` could be either marker and the call is ambiguous. The
    /// public types must not deserialize, or the file's format (and
    /// whatever JSON a host saves) becomes a promise.
    trait AmbiguousIfDeserialize<A> {
        fn check() {}
    }
    impl<T: ?Sized> AmbiguousIfDeserialize<()> for T {}
    struct Deserializes;
    impl<T: serde::de::DeserializeOwned> AmbiguousIfDeserialize<Deserializes> for T {}

    #[test]
    fn the_public_log_types_do_not_deserialize() {
        <LogEntry as AmbiguousIfDeserialize<_>>::check();
        <UploadKind as AmbiguousIfDeserialize<_>>::check();
        <UploadResult as AmbiguousIfDeserialize<_>>::check();
        <crate::Source as AmbiguousIfDeserialize<_>>::check();
    }

    /// A log as 0.1.0 wrote it: the private form must keep reading it, and
    /// write what it read unchanged.
    const V0_1_0: &str = r#"[
  {
    "time": "2026-11-18T10:00:00.000Z",
    "kind": "ingest",
    "tier": "aggregate",
    "items": 3,
    "result": "delivered",
    "detail": "200"
  },
  {
    "time": "2026-11-18T11:00:00.000Z",
    "kind": "delete",
    "items": 1,
    "result": "failed",
    "detail": "connection refused"
  }
]"#;

    #[test]
    fn reads_and_keeps_the_files_earlier_versions_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let paths = ToolPaths {
            dir: dir.path().to_path_buf(),
        };
        std::fs::write(paths.upload_log(), V0_1_0).unwrap();
        let log = read(&paths);
        assert_eq!(log.len(), 2);
        assert_eq!(
            (log[0].kind, log[0].tier, log[0].items, log[0].result),
            (
                UploadKind::Ingest,
                Some(Tier::Aggregate),
                3,
                UploadResult::Delivered
            )
        );
        assert_eq!(
            (
                log[1].kind,
                log[1].tier,
                log[1].result,
                log[1].detail.as_str()
            ),
            (
                UploadKind::Delete,
                None,
                UploadResult::Failed,
                "connection refused"
            )
        );
        // Rewriting keeps the same text for what was there.
        std::fs::remove_file(paths.upload_log()).unwrap();
        append(&paths, &log).unwrap();
        assert_eq!(std::fs::read_to_string(paths.upload_log()).unwrap(), V0_1_0);
    }
}
