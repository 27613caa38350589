//! The raw-SQLite baseline for the ingest benchmark: the rows the collector
//! writes for the load generator's payloads, inserted straight through
//! rusqlite, with no HTTP, no JSON, no queue and no group commit.
//!
//! The database is opened with the collector's own
//! [`writer_connection`](telemetry_collector::store::sqlite::writer_connection),
//! so the schema, the journal mode and `synchronous = FULL` are exactly the
//! collector's. Each transaction holds the rows of `per_txn` events: 100 is one
//! request's worth, 10,000 is what a bulk loader would use. Rows are written
//! the straightforward way, one statement per row: an events row and a counter
//! upsert per event, and per batch the report id (aggregate) or the install,
//! its active week and its identity (anonymous, full).

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, params};
use serde::Serialize;
use telemetry_protocol::{Tier, Timestamp};

use crate::Error;

/// One baseline run.
#[derive(Debug, Clone)]
pub struct RawConfig {
    /// The tier whose rows are written.
    pub tier: Tier,
    /// Events (counters at aggregate) per simulated request.
    pub batch: usize,
    /// Events per transaction; a multiple of `batch` is sensible.
    pub per_txn: usize,
    /// The most events to write.
    pub events: u64,
    /// The longest the run may take.
    pub duration: Duration,
    /// Distinct installs the batches rotate through.
    pub installs: u64,
}

/// What a baseline run measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RawReport {
    /// The tier whose rows were written.
    pub tier: String,
    /// Events per simulated request.
    pub batch: usize,
    /// Events per transaction.
    pub per_txn: usize,
    /// Events written and committed.
    pub events: u64,
    /// Transactions committed.
    pub transactions: u64,
    /// Wall time, in seconds.
    pub elapsed_secs: f64,
    /// `events / elapsed`.
    pub events_per_sec: f64,
    /// Whether the time limit, not the event count, ended the run.
    pub hit_time_limit: bool,
}

impl RawReport {
    /// The report of a run of `tier` with `(batch, per_txn)` events per
    /// request and per transaction that wrote `(events, transactions)` in
    /// `elapsed_secs`; the rate is derived from them.
    pub fn new(
        tier: String,
        (batch, per_txn): (usize, usize),
        (events, transactions): (u64, u64),
        elapsed_secs: f64,
        hit_time_limit: bool,
    ) -> RawReport {
        RawReport {
            tier,
            batch,
            per_txn,
            events,
            transactions,
            elapsed_secs,
            events_per_sec: if elapsed_secs > 0.0 {
                events as f64 / elapsed_secs
            } else {
                0.0
            },
            hit_time_limit,
        }
    }
}

/// The string ids every row refers to, made once up front (the collector
/// caches them the same way).
struct Dictionary {
    project: i64,
    /// Event name ids, cycled through like the load generator's names.
    names: Vec<i64>,
    /// Props ids by slot in the batch (`{"slot":"sN"}`).
    props: Vec<i64>,
    /// Version, OS and arch ids.
    context: [i64; 3],
}

fn db(what: &str, e: impl std::fmt::Display) -> Error {
    Error::io(what.to_owned(), std::io::Error::other(e.to_string()))
}

fn dictionary(conn: &Connection, batch: usize) -> rusqlite::Result<Dictionary> {
    let string = |text: &str| -> rusqlite::Result<i64> {
        conn.execute(
            "INSERT INTO strings (text) VALUES (?1) ON CONFLICT DO NOTHING",
            [text],
        )?;
        conn.query_row("SELECT id FROM strings WHERE text = ?1", [text], |r| {
            r.get(0)
        })
    };
    conn.execute(
        "INSERT INTO projects (name) VALUES ('raw') ON CONFLICT DO NOTHING",
        [],
    )?;
    let project = conn.query_row("SELECT id FROM projects WHERE name = 'raw'", [], |r| {
        r.get(0)
    })?;
    let names = ["command", "setup_started", "setup_completed"]
        .into_iter()
        .map(string)
        .collect::<rusqlite::Result<_>>()?;
    let props = (0..batch.max(1))
        .map(|slot| string(&format!(r#"{{"slot":"s{slot}"}}"#)))
        .collect::<rusqlite::Result<_>>()?;
    let context = [string("1.0.0")?, string("linux")?, string("x86_64")?];
    Ok(Dictionary {
        project,
        names,
        props,
        context,
    })
}

/// Unique, randomly ordered 16-byte ids from a counter, like the load
/// generator's.
fn id(seed: u64, n: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&crate::payload::mix(seed ^ n).to_be_bytes());
    out[8..].copy_from_slice(&n.to_be_bytes());
    out
}

/// Writes the rows of `config` into a fresh database at `path` and times it.
pub fn run(path: &Path, config: &RawConfig) -> Result<RawReport, Error> {
    if config.batch == 0 || config.per_txn == 0 || config.installs == 0 {
        return Err(Error::InvalidArgument(
            "batch, per-txn and installs must be at least 1".into(),
        ));
    }
    let mut conn = telemetry_collector::store::sqlite::writer_connection(path)
        .map_err(|e| db("opening the database", e))?;
    let dict = dictionary(&conn, config.batch).map_err(|e| db("filling strings", e))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let ts = Timestamp::from_unix_millis(now);
    let day = i64::from(ts.day().days_since_epoch());
    let week = i64::from(ts.day().week_start().days_since_epoch());
    let tier = telemetry_collector::store::sqlite::tier_code(config.tier);
    let started = Instant::now();
    let deadline = started + config.duration;
    let (mut written, mut transactions, mut batches) = (0u64, 0u64, 0u64);
    let mut hit_time_limit = false;
    while written < config.events {
        if Instant::now() >= deadline {
            hit_time_limit = true;
            break;
        }
        let tx = conn.transaction().map_err(|e| db("begin", e))?;
        let mut in_txn = 0;
        while in_txn < config.per_txn && written < config.events {
            let n = config.batch.min(config.per_txn - in_txn) as u64;
            let n = n.min(config.events - written);
            write_batch(
                &tx,
                &dict,
                config,
                tier,
                (day, week, now),
                batches,
                written,
                n,
            )
            .map_err(|e| db("insert", e))?;
            batches += 1;
            written += n;
            in_txn += n as usize;
        }
        tx.commit().map_err(|e| db("commit", e))?;
        transactions += 1;
    }
    Ok(RawReport::new(
        config.tier.to_string(),
        (config.batch, config.per_txn),
        (written, transactions),
        started.elapsed().as_secs_f64(),
        hit_time_limit,
    ))
}

/// The rows of one simulated request of `n` events, number `batch_no`, whose
/// first event is number `first`.
#[allow(clippy::too_many_arguments)]
fn write_batch(
    tx: &Connection,
    dict: &Dictionary,
    config: &RawConfig,
    tier: i64,
    (day, week, now): (i64, i64, i64),
    batch_no: u64,
    first: u64,
    n: u64,
) -> rusqlite::Result<()> {
    let [version, os, arch] = dict.context;
    let mut counter = tx.prepare_cached(
        "INSERT INTO daily_counters (project, day, event, props, version, os, arch, tier, count)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 1)
         ON CONFLICT DO UPDATE SET count = count + excluded.count",
    )?;
    let mut count_one = |name: i64, props: i64| {
        counter
            .execute(params![
                dict.project,
                day,
                name,
                props,
                version,
                os,
                arch,
                tier
            ])
            .map(|_| ())
    };
    let slot_ids = |slot: u64| {
        let i = first + slot;
        (
            dict.names[(i % dict.names.len() as u64) as usize],
            dict.props[(slot % dict.props.len() as u64) as usize],
        )
    };
    if config.tier == Tier::Aggregate {
        tx.prepare_cached(
            "INSERT INTO seen_reports (project, report_id, day) VALUES (?1, ?2, ?3)
             ON CONFLICT DO NOTHING",
        )?
        .execute(params![dict.project, id(0x5eed, batch_no).as_slice(), day])?;
        for slot in 0..n {
            let (name, props) = slot_ids(slot);
            count_one(name, props)?;
        }
        return Ok(());
    }
    let install = id(0x1257a11, batch_no % config.installs);
    let mut event = tx.prepare_cached(
        "INSERT INTO events (project, install, event_id, ts, name, props)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
    )?;
    for slot in 0..n {
        let (name, props) = slot_ids(slot);
        let event_id = id(0xe7e47, first + slot);
        event.execute(params![
            dict.project,
            install.as_slice(),
            event_id.as_slice(),
            now,
            name,
            props
        ])?;
        count_one(name, props)?;
    }
    tx.prepare_cached(
        "INSERT INTO installs (project, install, first_seen_day, last_seen_day)
         VALUES (?1, ?2, ?3, ?3)
         ON CONFLICT DO UPDATE SET
           first_seen_day = min(first_seen_day, excluded.first_seen_day),
           last_seen_day = max(last_seen_day, excluded.last_seen_day)",
    )?
    .execute(params![dict.project, install.as_slice(), day])?;
    tx.prepare_cached(
        "INSERT INTO install_weeks (project, install, week) VALUES (?1, ?2, ?3)
         ON CONFLICT DO NOTHING",
    )?
    .execute(params![dict.project, install.as_slice(), week])?;
    if config.tier == Tier::Full {
        tx.prepare_cached(
            "INSERT INTO identities (project, install, fields) VALUES (?1, ?2, ?3)
             ON CONFLICT DO UPDATE SET fields = excluded.fields",
        )?
        .execute(params![
            dict.project,
            install.as_slice(),
            r#"{"email":"bench@example.invalid","organization":"bench"}"#
        ])?;
    } else {
        tx.prepare_cached("DELETE FROM identities WHERE project = ?1 AND install = ?2")?
            .execute(params![dict.project, install.as_slice()])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(conn: &Connection, sql: &str) -> i64 {
        conn.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    #[test]
    fn writes_the_rows_the_collector_would_for_each_tier() {
        for (tier, events_rows, weeks, identities) in [
            (Tier::Aggregate, 0, 0, 0),
            (Tier::Anonymous, 250, 3, 0),
            (Tier::Full, 250, 3, 3),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("raw.db");
            let config = RawConfig {
                tier,
                batch: 10,
                per_txn: 100,
                events: 250,
                duration: Duration::from_secs(60),
                installs: 3,
            };
            let report = run(&path, &config).unwrap();
            assert_eq!(report.events, 250, "{tier}");
            assert_eq!(report.transactions, 3, "{tier}");
            assert!(!report.hit_time_limit);
            let conn = Connection::open(&path).unwrap();
            assert_eq!(count(&conn, "SELECT COUNT(*) FROM events"), events_rows);
            assert_eq!(count(&conn, "SELECT SUM(count) FROM daily_counters"), 250);
            assert_eq!(count(&conn, "SELECT COUNT(*) FROM install_weeks"), weeks);
            assert_eq!(count(&conn, "SELECT COUNT(*) FROM identities"), identities);
            let reports = if tier == Tier::Aggregate { 25 } else { 0 };
            assert_eq!(count(&conn, "SELECT COUNT(*) FROM seen_reports"), reports);
            // The collector's journal mode stuck to the file.
            let mode: String = conn
                .query_row("PRAGMA journal_mode", [], |r| r.get(0))
                .unwrap();
            assert_eq!(mode, "wal");
        }
    }
}
