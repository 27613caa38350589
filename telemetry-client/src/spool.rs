//! The spool: an append-only file of recorded events and counts that have not
//! been packaged for sending yet.
//!
//! Each record is one line, `<crc32 as 8 hex digits> <json>\n`. A line whose
//! checksum does not match (a torn write from a killed process) is skipped on
//! read, so a torn write loses that one record and never the file. Appends
//! happen under the tool's data lock, so concurrent processes interleave whole
//! records. The spool is bounded by size and record count; when it is full the
//! oldest records are dropped and the drops are counted.
//!
//! **Side files.** An uploader holds the data lock for milliseconds while it
//! packages the spool (its writes are fsynced), and a host that waited for it
//! paid those milliseconds itself. So a host that finds the lock taken does
//! not wait: it writes its records to a file of its own in `spool.d/` (temp
//! name, then a rename, so a reader sees the whole file or none of it), in the
//! same line format, without the lock. [`read`] returns the spool and the side
//! files as one list, and [`rewrite`] replaces both: the spool is written
//! first and the side files it read are removed after, so a crash between the
//! two leaves records in both places, which [`read`] counts once by their ids.
//! At most [`MAX_SIDE_FILES`] side files exist; past that a host waits for
//! the lock as before, so what one tool can leave here stays bounded.

use std::collections::{BTreeMap, HashSet};
use std::fs::OpenOptions;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use telemetry_protocol::{Day, Props, Tier, Timestamp, Uuid};

use crate::files;
use crate::folders::ToolPaths;

/// One spooled item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Record {
    /// `aggregate`: `n` occurrences of an event with these props on a UTC day.
    Count {
        /// Identifies the record while it moves into the outbox.
        id: Uuid,
        /// The UTC day.
        day: Day,
        /// The event name.
        event: String,
        /// Encoded props.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        props: Props,
        /// How many.
        n: u64,
    },
    /// `anonymous` or `full`: one event.
    Event {
        /// The event id sent to the collector.
        id: Uuid,
        /// The tier it was recorded at.
        tier: Tier,
        /// The install id it was recorded under.
        install_id: Uuid,
        /// The event name.
        name: String,
        /// When it happened.
        ts: Timestamp,
        /// Encoded props.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        props: Props,
    },
}

impl Record {
    /// The record's id.
    pub fn id(&self) -> Uuid {
        match self {
            Record::Count { id, .. } | Record::Event { id, .. } => *id,
        }
    }
}

/// Bounds on the spool.
///
/// Start from the defaults and change what you need, so that a bound added
/// later keeps its default:
///
/// ```
/// let limits = telemetry_client::SpoolLimits::default().with_max_records(1000);
/// assert_eq!(limits.max_records, 1000);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SpoolLimits {
    /// Largest size in bytes before the oldest records are dropped.
    pub max_bytes: u64,
    /// Most records kept.
    pub max_records: usize,
}

impl Default for SpoolLimits {
    fn default() -> Self {
        SpoolLimits {
            max_bytes: 1024 * 1024,
            max_records: 10_000,
        }
    }
}

impl SpoolLimits {
    /// These limits with another largest size, in bytes.
    #[must_use]
    pub const fn with_max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// These limits with another largest record count.
    #[must_use]
    pub const fn with_max_records(mut self, max_records: usize) -> Self {
        self.max_records = max_records;
        self
    }
}

/// The smallest a record line can be (a UUID alone is 36 bytes); used to
/// decide cheaply, from the file size, when the record count might be over.
const MIN_RECORD_BYTES: u64 = 64;

/// CRC-32 (IEEE), bitwise: spool lines are short and a table is not worth
/// the binary size.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

fn encode(record: &Record) -> io::Result<Vec<u8>> {
    let json = serde_json::to_vec(record).map_err(io::Error::other)?;
    let mut line = format!("{:08x} ", crc32(&json)).into_bytes();
    line.extend_from_slice(&json);
    line.push(b'\n');
    Ok(line)
}

fn decode(line: &[u8]) -> Option<Record> {
    let (crc, json) = (line.get(..8)?, line.get(9..)?);
    let crc = u32::from_str_radix(std::str::from_utf8(crc).ok()?, 16).ok()?;
    (line.get(8) == Some(&b' ') && crc32(json) == crc)
        .then(|| serde_json::from_slice(json).ok())
        .flatten()
}

/// What [`read`] found.
#[derive(Debug, Default)]
pub struct Contents {
    /// The intact records, oldest first: the spool's, then the side files'.
    pub records: Vec<Record>,
    /// Lines that failed their checksum or did not parse.
    pub torn: usize,
    /// The side files these records came from, which [`rewrite`] removes.
    pub side: Vec<PathBuf>,
}

/// The most side files a tool keeps; see the module docs.
pub const MAX_SIDE_FILES: usize = 256;

/// Reads every intact record of the spool and its side files. The caller
/// holds the data lock if it means to rewrite the spool afterwards.
pub fn read(paths: &ToolPaths) -> io::Result<Contents> {
    let mut contents = match std::fs::read(paths.spool()) {
        Ok(bytes) => parse(&bytes),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Contents::default(),
        Err(e) => return Err(e),
    };
    let side = side_files(paths)?;
    if side.is_empty() {
        return Ok(contents);
    }
    // A crash inside `rewrite` can leave a record in the spool and in the
    // side file it came from; it counts once.
    let mut seen: HashSet<Uuid> = contents.records.iter().map(Record::id).collect();
    for path in side {
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let found = parse(&bytes);
        contents.torn += found.torn;
        let fresh = found.records.into_iter().filter(|r| seen.insert(r.id()));
        contents.records.extend(fresh);
        contents.side.push(path);
    }
    Ok(contents)
}

/// The finished side files, oldest first (their names start with the time
/// they were written). Temp files of a writer still at work are not listed.
fn side_files(paths: &ToolPaths) -> io::Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(paths.spool_side()) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| !n.starts_with('.') && n.ends_with(".jsonl"))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Parses spool bytes: every intact record, and a count of the lines that
/// failed their checksum or did not parse. Never fails, whatever the bytes.
pub fn parse(bytes: &[u8]) -> Contents {
    let mut contents = Contents::default();
    for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        match decode(line) {
            Some(record) => contents.records.push(record),
            None => contents.torn += 1,
        }
    }
    contents
}

/// Replaces the spool, and the side files `read` found (`contents.side`),
/// with `records`: the spool atomically (fsync and rename), then the side
/// files are removed. The caller holds the data lock.
pub fn rewrite(paths: &ToolPaths, side: &[PathBuf], records: &[Record]) -> io::Result<()> {
    if records.is_empty() {
        files::remove_if_exists(&paths.spool())?;
    } else {
        let mut bytes = Vec::new();
        for r in records {
            bytes.extend(encode(r)?);
        }
        files::write_atomic(&paths.spool(), &bytes)?;
    }
    for path in side {
        files::remove_if_exists(path)?;
    }
    remove_stale_temp_files(paths);
    Ok(())
}

/// How old a side file's temp file must be before a rewrite removes it: its
/// writer was killed between writing and renaming it.
const STALE_TEMP: std::time::Duration = std::time::Duration::from_secs(3600);

fn remove_stale_temp_files(paths: &ToolPaths) {
    let Ok(entries) = std::fs::read_dir(paths.spool_side()) else {
        return;
    };
    for entry in entries.flatten() {
        let stale = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > STALE_TEMP));
        if stale && entry.file_name().to_string_lossy().ends_with(".tmp") {
            let _ = files::remove_if_exists(&entry.path());
        }
    }
}

/// Removes the spool and every side file, finished or not. The caller holds
/// the data lock.
pub fn clear(paths: &ToolPaths) -> io::Result<()> {
    files::remove_if_exists(&paths.spool())?;
    match std::fs::remove_dir_all(paths.spool_side()) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Writes `records` to a side file of their own, without the data lock, for a
/// host that found the lock taken (see the module docs). Fails when
/// [`MAX_SIDE_FILES`] already exist, and the caller then waits for the lock.
pub fn append_side(paths: &ToolPaths, records: &[Record]) -> io::Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    let dir = paths.spool_side();
    files::create_private_dir(&dir)?;
    if std::fs::read_dir(&dir)?.count() >= MAX_SIDE_FILES {
        return Err(io::Error::other("too many spool side files"));
    }
    let mut bytes = Vec::new();
    for r in records {
        bytes.extend(encode(r)?);
    }
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let name = format!(
        "{:020}-{}",
        since_epoch.as_nanos(),
        uuid::Uuid::new_v4().simple()
    );
    let tmp = dir.join(format!(".{name}.tmp"));
    let result = files::open_private(&tmp, OpenOptions::new().write(true).create_new(true))
        .and_then(|mut file| file.write_all(&bytes))
        .and_then(|()| std::fs::rename(&tmp, dir.join(format!("{name}.jsonl"))));
    if result.is_err() {
        let _ = files::remove_if_exists(&tmp);
    }
    result
}

/// Appends `records` and enforces the limits; returns how many recorded
/// occurrences (a count record's `n`, one per event) were dropped, oldest
/// first, to make room. The caller holds the data lock.
///
/// Appends are not fsynced: a killed process cannot lose what it already
/// handed to the kernel, and paying for a disk flush on every host run would
/// break the "never slows the host" rule. Only a power loss can lose the tail,
/// and then at most those records.
pub fn append(paths: &ToolPaths, records: &[Record], limits: SpoolLimits) -> io::Result<u64> {
    if records.is_empty() {
        return Ok(0);
    }
    files::create_private_dir(&paths.dir)?;
    let mut file = files::open_private(
        &paths.spool(),
        OpenOptions::new().read(true).append(true).create(true),
    )?;
    let len = file.metadata()?.len();
    let mut bytes = Vec::new();
    if len > 0 {
        // A killed writer may have left a line without its newline; start on
        // a fresh line so only that torn record is lost, not ours too.
        let mut last = [0u8];
        file.seek(SeekFrom::Start(len - 1))?;
        file.read_exact(&mut last)?;
        if last[0] != b'\n' {
            bytes.push(b'\n');
        }
    }
    for r in records {
        bytes.extend(encode(r)?);
    }
    file.write_all(&bytes)?;
    let before = len;
    let len = len + bytes.len() as u64;
    drop(file);
    // The record count is only known by reading the file, so it is checked
    // when the size says the count *could* be over, and then only once per
    // `step` bytes appended, so a large spool is not re-read on every run.
    let could_be_over = (limits.max_records as u64).saturating_mul(MIN_RECORD_BYTES);
    let step = (could_be_over / 8).clamp(1, 64 * 1024);
    if len > limits.max_bytes || (len > could_be_over && before / step != len / step) {
        return compact(paths, limits);
    }
    Ok(0)
}

/// Drops the oldest records until the spool is within its limits, leaving a
/// tenth of head-room so that the next appends do not compact again at once.
fn compact(paths: &ToolPaths, limits: SpoolLimits) -> io::Result<u64> {
    let contents = read(paths)?;
    let mut sizes: Vec<u64> = Vec::with_capacity(contents.records.len());
    for r in &contents.records {
        sizes.push(encode(r)?.len() as u64);
    }
    let total: u64 = sizes.iter().sum();
    if total <= limits.max_bytes && contents.records.len() <= limits.max_records {
        if contents.torn > 0 {
            rewrite(paths, &[], &contents.records)?;
        }
        return Ok(0);
    }
    let (byte_goal, count_goal) = (limits.max_bytes / 10 * 9, limits.max_records / 10 * 9);
    let (mut skip, mut bytes) = (0, total);
    while skip < sizes.len() && (bytes > byte_goal || sizes.len() - skip > count_goal) {
        bytes -= sizes[skip];
        skip += 1;
    }
    rewrite(paths, &[], &contents.records[skip..])?;
    let lost = contents.records[..skip]
        .iter()
        .map(|r| match r {
            Record::Count { n, .. } => *n,
            Record::Event { .. } => 1,
        })
        .sum();
    Ok(lost)
}

/// Whether the spool and its side files hold anything, from sizes and a
/// folder listing alone (cheap).
pub fn is_empty(paths: &ToolPaths) -> bool {
    std::fs::metadata(paths.spool()).map_or(true, |m| m.len() == 0)
        && side_files(paths).is_ok_and(|side| side.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(n: u64) -> Record {
        Record::Count {
            id: Uuid::new_v4(),
            day: Day::from_days_since_epoch(20_000),
            event: "command".into(),
            props: Props::new(),
            n,
        }
    }

    fn paths(dir: &tempfile::TempDir) -> ToolPaths {
        ToolPaths {
            dir: dir.path().join("demo"),
        }
    }

    #[test]
    fn side_files_read_with_the_spool_and_go_with_its_rewrite() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(&dir);
        let (main, side) = (count(1), count(2));
        append(&p, std::slice::from_ref(&main), SpoolLimits::default()).unwrap();
        assert!(!is_empty(&p));
        append_side(&p, std::slice::from_ref(&side)).unwrap();
        // A writer still at work (or killed) before its rename: not listed.
        std::fs::write(p.spool_side().join(".half.tmp"), b"garbage").unwrap();
        let got = read(&p).unwrap();
        assert_eq!(got.records, vec![main.clone(), side.clone()]);
        assert_eq!(got.side.len(), 1);
        // A side file written after the read survives the rewrite.
        let later = count(3);
        append_side(&p, std::slice::from_ref(&later)).unwrap();
        rewrite(&p, &got.side, std::slice::from_ref(&main)).unwrap();
        assert_eq!(read(&p).unwrap().records, vec![main, later]);
        clear(&p).unwrap();
        assert!(is_empty(&p));
        assert!(!p.spool_side().exists());
    }

    #[test]
    fn side_files_alone_make_the_spool_non_empty() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(&dir);
        assert!(is_empty(&p));
        append_side(&p, &[count(1)]).unwrap();
        assert!(!is_empty(&p));
    }

    #[test]
    fn a_record_in_the_spool_and_its_side_file_counts_once() {
        // What a crash inside `rewrite` leaves: the spool written with the
        // side file's record, the side file not yet removed.
        let dir = tempfile::tempdir().unwrap();
        let p = paths(&dir);
        let record = count(5);
        append_side(&p, std::slice::from_ref(&record)).unwrap();
        append(&p, std::slice::from_ref(&record), SpoolLimits::default()).unwrap();
        let got = read(&p).unwrap();
        assert_eq!(got.records, vec![record]);
        assert_eq!(got.side.len(), 1);
    }

    #[test]
    fn side_files_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(&dir);
        for _ in 0..MAX_SIDE_FILES {
            append_side(&p, &[count(1)]).unwrap();
        }
        assert!(append_side(&p, &[count(1)]).is_err());
        assert_eq!(
            std::fs::read_dir(p.spool_side()).unwrap().count(),
            MAX_SIDE_FILES
        );
    }

    #[test]
    fn crc_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn records_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(&dir);
        let records = vec![count(1), count(2)];
        append(&p, &records, SpoolLimits::default()).unwrap();
        let got = read(&p).unwrap();
        assert_eq!(got.records, records);
        assert_eq!(got.torn, 0);
    }

    #[test]
    fn a_torn_record_loses_only_itself() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(&dir);
        let first = count(1);
        append(&p, std::slice::from_ref(&first), SpoolLimits::default()).unwrap();
        // Simulate a writer killed half-way through its line.
        let torn = encode(&count(2)).unwrap();
        let mut f = OpenOptions::new().append(true).open(p.spool()).unwrap();
        f.write_all(&torn[..torn.len() / 2]).unwrap();
        drop(f);
        let last = count(3);
        append(&p, std::slice::from_ref(&last), SpoolLimits::default()).unwrap();
        let got = read(&p).unwrap();
        assert_eq!(got.records, vec![first, last]);
        assert_eq!(got.torn, 1);
    }

    #[test]
    fn a_flipped_byte_fails_the_checksum() {
        let mut line = encode(&count(7)).unwrap();
        line.pop();
        assert!(decode(&line).is_some());
        let n = line.len() - 3;
        line[n] ^= 0x01;
        assert!(decode(&line).is_none());
    }

    #[test]
    fn a_full_spool_drops_the_oldest_and_counts_them() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(&dir);
        let limits = SpoolLimits {
            max_bytes: 1024 * 1024,
            max_records: 10,
        };
        // One occurrence each, so dropped occurrences are dropped records.
        let records: Vec<Record> = (1..=20).map(|_| count(1)).collect();
        let mut dropped = 0;
        for r in &records {
            dropped += append(&p, std::slice::from_ref(r), limits).unwrap();
        }
        let got = read(&p).unwrap().records;
        assert!(got.len() <= 10, "{}", got.len());
        assert_eq!(dropped as usize + got.len(), 20);
        // The newest survive.
        assert_eq!(got.last(), records.last());
    }

    #[test]
    fn the_size_bound_holds() {
        let dir = tempfile::tempdir().unwrap();
        let p = paths(&dir);
        let limits = SpoolLimits {
            max_bytes: 2000,
            max_records: 10_000,
        };
        for n in 0..100 {
            append(&p, &[count(n)], limits).unwrap();
        }
        assert!(std::fs::metadata(p.spool()).unwrap().len() <= 2000);
    }
}
