//! The spool: an append-only file of recorded events and counts that have not
//! been packaged for sending yet.
//!
//! Each record is one line, `<crc32 as 8 hex digits> <json>\n`. A line whose
//! checksum does not match (a torn write from a killed process) is skipped on
//! read, so a torn write loses that one record and never the file. Appends
//! happen under the tool's data lock, so concurrent processes interleave whole
//! records. The spool is bounded by size and record count; when it is full the
//! oldest records are dropped and the drops are counted.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{self, Read, Seek, SeekFrom, Write};

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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    /// The intact records, oldest first.
    pub records: Vec<Record>,
    /// Lines that failed their checksum or did not parse.
    pub torn: usize,
}

/// Reads every intact record. The caller holds the data lock if it means to
/// rewrite the spool afterwards.
pub fn read(paths: &ToolPaths) -> io::Result<Contents> {
    match std::fs::read(paths.spool()) {
        Ok(bytes) => Ok(parse(&bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Contents::default()),
        Err(e) => Err(e),
    }
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

/// Replaces the spool with `records` atomically (fsync and rename). The
/// caller holds the data lock.
pub fn rewrite(paths: &ToolPaths, records: &[Record]) -> io::Result<()> {
    if records.is_empty() {
        return files::remove_if_exists(&paths.spool());
    }
    let mut bytes = Vec::new();
    for r in records {
        bytes.extend(encode(r)?);
    }
    files::write_atomic(&paths.spool(), &bytes)
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
            rewrite(paths, &contents.records)?;
        }
        return Ok(0);
    }
    let (byte_goal, count_goal) = (limits.max_bytes / 10 * 9, limits.max_records / 10 * 9);
    let (mut skip, mut bytes) = (0, total);
    while skip < sizes.len() && (bytes > byte_goal || sizes.len() - skip > count_goal) {
        bytes -= sizes[skip];
        skip += 1;
    }
    rewrite(paths, &contents.records[skip..])?;
    let lost = contents.records[..skip]
        .iter()
        .map(|r| match r {
            Record::Count { n, .. } => *n,
            Record::Event { .. } => 1,
        })
        .sum();
    Ok(lost)
}

/// Whether the spool holds anything, from its size alone (cheap).
pub fn is_empty(paths: &ToolPaths) -> bool {
    std::fs::metadata(paths.spool()).map_or(true, |m| m.len() == 0)
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
