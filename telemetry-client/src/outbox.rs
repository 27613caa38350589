//! The outbox: payloads with their ids already fixed, one file each, waiting
//! to be sent.
//!
//! The uploader moves spool records into the outbox *before* it removes them
//! from the spool, and first writes the ids it consumes to a small staging
//! journal (each outbox file lists them too). A crash between the two steps
//! is repaired on the next run: the journal's records that an outbox file
//! lists are dropped from the spool, so nothing is packaged twice, and the
//! rest (killed before their payload was written) stay, so nothing is lost.
//! Only that repair, after a crash, reads the outbox under the lock the host
//! waits on. The outbox is bounded in bytes and age, like the
//! spool; the oldest payloads go first and are counted. And because a
//! payload's report id and event ids never change once written, resending it
//! after a lost answer cannot count twice at the collector.

use std::fs;
use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use telemetry_protocol::{IngestPayload, Timestamp, Uuid};

use crate::files;
use crate::folders::ToolPaths;

/// One payload waiting to be sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The spool records this payload was built from.
    pub consumed: Vec<Uuid>,
    /// The payload, exactly as it will be sent.
    pub payload: IngestPayload,
}

impl Entry {
    /// How many counters or events the payload carries.
    pub fn items(&self) -> u64 {
        let p = &self.payload;
        (p.counters.as_ref().map_or(0, Vec::len) + p.events.as_ref().map_or(0, Vec::len)) as u64
    }

    /// How many recorded occurrences the payload carries: a counter counts
    /// as its count, an event as one. Drops are counted in these units, so
    /// that what is missing can be compared with what was recorded.
    pub fn occurrences(&self) -> u64 {
        let p = &self.payload;
        let counted: u64 = p.counters.iter().flatten().map(|c| c.count).sum();
        counted + p.events.as_ref().map_or(0, Vec::len) as u64
    }
}

/// Writes `entry` atomically under a name that sorts by creation time.
pub fn put(paths: &ToolPaths, entry: &Entry, now: Timestamp) -> io::Result<PathBuf> {
    let name = format!(
        "{:013}-{}.json",
        now.unix_millis().max(0),
        Uuid::new_v4().simple()
    );
    let path = paths.outbox().join(name);
    let bytes = serde_json::to_vec(entry).map_err(io::Error::other)?;
    files::write_atomic(&path, &bytes)?;
    Ok(path)
}

/// Every entry, oldest first. Unreadable files are logged and removed.
pub fn list(paths: &ToolPaths) -> io::Result<Vec<(PathBuf, Entry)>> {
    read_all(paths, true)
}

/// Every entry, oldest first, touching nothing (debug mode).
pub(crate) fn list_read_only(paths: &ToolPaths) -> io::Result<Vec<(PathBuf, Entry)>> {
    read_all(paths, false)
}

fn read_all(paths: &ToolPaths, remove_unreadable: bool) -> io::Result<Vec<(PathBuf, Entry)>> {
    let dir = match fs::read_dir(paths.outbox()) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut names: Vec<PathBuf> = dir
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "json")
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    names.sort();
    let mut out = Vec::with_capacity(names.len());
    for path in names {
        match fs::read(&path).map(|b| serde_json::from_slice::<Entry>(&b)) {
            Ok(Ok(entry)) => out.push((path, entry)),
            Ok(Err(e)) => {
                // Written atomically, so this is outside interference; the
                // payload cannot be sent, and keeping it would block nothing
                // but clutter the folder.
                crate::log::debug!(path = %path.display(), error = %e, "dropping unreadable outbox file");
                if remove_unreadable {
                    let _ = fs::remove_file(&path);
                }
            }
            Err(e) => {
                crate::log::debug!(path = %path.display(), error = %e, "cannot read outbox file")
            }
        }
    }
    Ok(out)
}

/// Whether any entry is waiting (cheap).
pub fn is_empty(paths: &ToolPaths) -> bool {
    fs::read_dir(paths.outbox()).map_or(true, |mut d| d.next().is_none())
}
