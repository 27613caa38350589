//! The upload log: the last uploads, what they carried and how they ended,
//! so `telemetry log` can show a user exactly what left their machine.

use serde::{Deserialize, Serialize};
use telemetry_protocol::{Tier, Timestamp};

use crate::files;
use crate::folders::ToolPaths;

/// How many entries the log keeps.
pub const LOG_LEN: usize = 50;

/// What was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UploadKind {
    /// A `POST /v1/ingest` payload.
    Ingest,
    /// A `POST /v1/delete` request.
    Delete,
}

/// How an upload ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// When.
    pub time: Timestamp,
    /// What kind of request.
    pub kind: UploadKind,
    /// The payload's tier (ingest only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<Tier>,
    /// Counters or events carried (1 for a deletion).
    pub items: u64,
    /// How it ended.
    pub result: UploadResult,
    /// The status code or error, in words.
    pub detail: String,
}

/// The log, oldest first. Missing or unreadable means empty.
pub fn read(paths: &ToolPaths) -> Vec<LogEntry> {
    files::read_optional(&paths.upload_log())
        .ok()
        .flatten()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

/// Appends `entries`, keeping the last [`LOG_LEN`]. The caller holds the data lock.
pub fn append(paths: &ToolPaths, entries: &[LogEntry]) -> std::io::Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let mut log = read(paths);
    log.extend_from_slice(entries);
    let excess = log.len().saturating_sub(LOG_LEN);
    log.drain(..excess);
    let bytes = serde_json::to_vec_pretty(&log).map_err(std::io::Error::other)?;
    files::write_atomic(&paths.upload_log(), &bytes)
}
