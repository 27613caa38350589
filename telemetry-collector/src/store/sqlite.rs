//! The SQLite backend: one writer thread with group commit behind a bounded
//! queue, and a small pool of read connections for stats.
//!
//! Why one writer: SQLite allows one writer at a time anyway, and a single
//! thread that drains every queued write into one transaction turns N fsyncs
//! into one, which is what makes `synchronous = FULL` affordable. Every job
//! carries a oneshot channel; the writer answers it only after `COMMIT`
//! returned, so a handler's 2xx always means the data is on disk.
//!
//! The schema is compact on purpose: strings that repeat (event names, props,
//! versions, OS, arch) are stored once in `strings` and referenced by integer,
//! ids are 16-byte blobs, and tables are `WITHOUT ROWID` keyed by what the
//! queries look up. Identity values are the exception: they are never put in
//! `strings`, so deleting an identity row really removes them.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, params};
use telemetry_protocol::{Day, Tier, Uuid};
use tokio::sync::{mpsc, oneshot};

use super::queue::{self, CommitTiming, Done, Job, Msg, Op};
use super::{
    BatchData, CohortRow, CounterRow, IngestBatch, IngestOutcome, InstallHash, PurgeOutcome,
    RefusalRow, ReleasedCell, RetentionPolicy, Skew, StatsInput, Store, StoreError, StoreFuture,
    StoreStatus,
};

/// Days a report id is remembered. Clients retry within hours or days; a
/// month covers any plausible outage without keeping ids for ever.
///
/// A report id is remembered under the latest of its arrival day and its
/// newest counter's day, and ingest refuses counters dated more than this
/// many days back, so a report replayed after its id was purged has nothing
/// left that could be counted twice.
pub const REPORT_ID_DAYS: i32 = 31;

const MILLIS_PER_DAY: i64 = 86_400_000;

/// The `install_uses` event id that means "sent anything this week"; string
/// ids start at 1, so it names no event.
const ANY_EVENT: i64 = 0;

/// The versioned migrations, applied in order at start-up. Never edit a
/// released entry; append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: the initial schema.
    r#"
    CREATE TABLE projects (
        id   INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE
    );
    CREATE TABLE strings (
        id   INTEGER PRIMARY KEY,
        text TEXT NOT NULL UNIQUE
    );
    CREATE TABLE daily_counters (
        project INTEGER NOT NULL,
        day     INTEGER NOT NULL,
        event   INTEGER NOT NULL,
        props   INTEGER NOT NULL,
        version INTEGER NOT NULL,
        os      INTEGER NOT NULL,
        arch    INTEGER NOT NULL,
        tier    INTEGER NOT NULL,
        count   INTEGER NOT NULL,
        PRIMARY KEY (project, day, event, props, version, os, arch, tier)
    ) WITHOUT ROWID;
    CREATE TABLE events (
        project  INTEGER NOT NULL,
        event_id BLOB NOT NULL,
        install  BLOB NOT NULL,
        ts       INTEGER NOT NULL,
        name     INTEGER NOT NULL,
        props    INTEGER NOT NULL,
        PRIMARY KEY (project, event_id)
    ) WITHOUT ROWID;
    CREATE INDEX events_by_install ON events (project, install);
    CREATE INDEX events_by_time ON events (project, ts);
    CREATE TABLE installs (
        project        INTEGER NOT NULL,
        install        BLOB NOT NULL,
        first_seen_day INTEGER NOT NULL,
        last_seen_day  INTEGER NOT NULL,
        PRIMARY KEY (project, install)
    ) WITHOUT ROWID;
    CREATE TABLE install_weeks (
        project INTEGER NOT NULL,
        install BLOB NOT NULL,
        week    INTEGER NOT NULL,
        PRIMARY KEY (project, install, week)
    ) WITHOUT ROWID;
    CREATE TABLE identities (
        project INTEGER NOT NULL,
        install BLOB NOT NULL,
        fields  TEXT NOT NULL,
        PRIMARY KEY (project, install)
    ) WITHOUT ROWID;
    CREATE TABLE seen_reports (
        project   INTEGER NOT NULL,
        report_id BLOB NOT NULL,
        day       INTEGER NOT NULL,
        PRIMARY KEY (project, report_id)
    ) WITHOUT ROWID;
    "#,
    // 2: events keyed by (project, install, event_id). A batch is one
    // install's events, so its rows land side by side in one part of the
    // tree instead of at random places keyed by a random event id, and the
    // separate by-install index (used only by deletes) is no longer needed.
    // Dedup is per install: a replay always comes from the install that sent
    // the event, and one install can no longer shadow another's event ids.
    r#"
    CREATE TABLE events_v2 (
        project  INTEGER NOT NULL,
        install  BLOB NOT NULL,
        event_id BLOB NOT NULL,
        ts       INTEGER NOT NULL,
        name     INTEGER NOT NULL,
        props    INTEGER NOT NULL,
        PRIMARY KEY (project, install, event_id)
    ) WITHOUT ROWID;
    INSERT INTO events_v2 (project, install, event_id, ts, name, props)
        SELECT project, install, event_id, ts, name, props FROM events;
    DROP TABLE events;
    ALTER TABLE events_v2 RENAME TO events;
    CREATE INDEX events_by_time ON events (project, ts);
    "#,
    // 3: the retention matrix, kept up to date at ingest: how many installs
    // first seen on `first_day` were active in `week`. It is exactly what
    // the join of installs with install_weeks gives, but a stats read costs
    // a few hundred rows instead of a pass over every install.
    r#"
    CREATE TABLE install_cohorts (
        project   INTEGER NOT NULL,
        first_day INTEGER NOT NULL,
        week      INTEGER NOT NULL,
        installs  INTEGER NOT NULL,
        PRIMARY KEY (project, first_day, week)
    ) WITHOUT ROWID;
    -- Week rows whose install a purge removed counted for nothing, but a
    -- new row for that install would bring them back; they go first.
    DELETE FROM install_weeks WHERE NOT EXISTS (
        SELECT 1 FROM installs i
        WHERE i.project = install_weeks.project AND i.install = install_weeks.install);
    INSERT INTO install_cohorts (project, first_day, week, installs)
        SELECT i.project, i.first_seen_day, w.week, COUNT(*)
        FROM installs i
        JOIN install_weeks w ON w.project = i.project AND w.install = i.install
        GROUP BY i.project, i.first_seen_day, w.week;
    "#,
    // 4: what ingest refused, downgraded or ignored, per arrival day, tool
    // version, reason and detail. Written in the transaction of the accepted
    // items; `detail` is kept out of `strings` because ingest caps how many
    // distinct details a day may add (see `skew.rs`), not the dictionary.
    r#"
    CREATE TABLE refusals (
        project INTEGER NOT NULL,
        day     INTEGER NOT NULL,
        version INTEGER NOT NULL,
        reason  TEXT NOT NULL,
        detail  TEXT NOT NULL,
        count   INTEGER NOT NULL,
        PRIMARY KEY (project, day, version, reason, detail)
    ) WITHOUT ROWID;
    "#,
    // 5: the public page's differentially private releases (see
    // `crate::release`). Each cell is drawn once and kept, so every later
    // read returns the same noisy value and averaging reads gains nothing.
    // `key` is '' for a daily cell and for the marker row of a breakdown.
    r#"
    CREATE TABLE public_releases (
        project     TEXT NOT NULL,
        period      INTEGER NOT NULL,
        statistic   TEXT NOT NULL,
        key         TEXT NOT NULL,
        value       INTEGER NOT NULL,
        epsilon     REAL NOT NULL,
        released_on INTEGER NOT NULL,
        PRIMARY KEY (project, period, statistic, key)
    ) WITHOUT ROWID;
    "#,
    // 6: distinct installs by use, and uploads that were retries (see
    // `Writer::note_uses`). `install_uses` holds, per ISO week (its Monday),
    // which events and prop values each install sent (`prop = 0` for the
    // event itself, `event = 0` for "sent anything"); keyed by week first, so
    // a day's inserts land in one part of the tree. `weekly_uses` counts its
    // rows per week, so stats read a few hundred rows, never installs. The
    // backfill takes the raw events still kept.
    r#"
    CREATE TABLE install_uses (
        project INTEGER NOT NULL,
        week    INTEGER NOT NULL,
        install BLOB NOT NULL,
        event   INTEGER NOT NULL,
        prop    INTEGER NOT NULL,
        value   INTEGER NOT NULL,
        PRIMARY KEY (project, week, install, event, prop, value)
    ) WITHOUT ROWID;
    CREATE TABLE weekly_uses (
        project  INTEGER NOT NULL,
        event    INTEGER NOT NULL,
        prop     INTEGER NOT NULL,
        week     INTEGER NOT NULL,
        value    INTEGER NOT NULL,
        installs INTEGER NOT NULL,
        PRIMARY KEY (project, event, prop, week, value)
    ) WITHOUT ROWID;
    CREATE TABLE daily_uploads (
        project INTEGER NOT NULL,
        day     INTEGER NOT NULL,
        uploads INTEGER NOT NULL,
        retries INTEGER NOT NULL,
        replayed INTEGER NOT NULL,
        PRIMARY KEY (project, day)
    ) WITHOUT ROWID;
    CREATE TEMP TABLE backfill_pairs AS
        SELECT s.id AS props, j.key AS prop,
               CASE j.type WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' ELSE j.atom END AS value
        FROM (SELECT DISTINCT props FROM events) d
        JOIN strings s ON s.id = d.props, json_each(s.text) j;
    INSERT OR IGNORE INTO strings (text) SELECT prop FROM backfill_pairs;
    INSERT OR IGNORE INTO strings (text) SELECT value FROM backfill_pairs;
    INSERT OR IGNORE INTO install_uses (project, week, install, event, prop, value)
        SELECT project, (ts / 86400000) - (((ts / 86400000) + 3) % 7), install, 0, 0, 0 FROM events;
    INSERT OR IGNORE INTO install_uses (project, week, install, event, prop, value)
        SELECT project, (ts / 86400000) - (((ts / 86400000) + 3) % 7), install, name, 0, 0 FROM events;
    INSERT OR IGNORE INTO install_uses (project, week, install, event, prop, value)
        SELECT e.project, (e.ts / 86400000) - (((e.ts / 86400000) + 3) % 7), e.install, e.name,
               sp.id, sv.id
        FROM events e
        JOIN backfill_pairs b ON b.props = e.props
        JOIN strings sp ON sp.text = b.prop
        JOIN strings sv ON sv.text = b.value;
    INSERT INTO weekly_uses (project, event, prop, week, value, installs)
        SELECT project, event, prop, week, value, COUNT(*) FROM install_uses
        GROUP BY project, event, prop, week, value;
    DROP TABLE backfill_pairs;
    "#,
];

/// The newest schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Tuning of the write path.
#[derive(Debug, Clone, Copy)]
pub struct SqliteOptions {
    /// Jobs that may wait for the writer.
    pub queue_capacity: usize,
    /// Most jobs committed in one transaction.
    pub max_batch: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            queue_capacity: 1024,
            max_batch: 256,
        }
    }
}

/// A SQLite-backed [`Store`].
pub struct SqliteStore {
    /// The database file.
    path: PathBuf,
    /// The bounded queue into the writer thread.
    jobs: mpsc::Sender<Msg>,
    /// Idle read connections, reused across stats calls.
    readers: Arc<Mutex<Vec<Connection>>>,
    /// Commit counters the writer updates.
    timing: Arc<CommitTiming>,
    /// The writer thread, joined on close.
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

fn db_err(e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        // A full disk (`SQLITE_FULL` on ENOSPC) or a failed write
        // (`SQLITE_IOERR`, e.g. EFBIG past a file-size limit) is not a bug:
        // the statement or transaction was rolled back, and the same write
        // succeeds once there is room. Kept apart so ingest answers 503 and
        // clients keep their data.
        Some(rusqlite::ErrorCode::DiskFull | rusqlite::ErrorCode::SystemIoFailure) => {
            StoreError::Unavailable(e.to_string())
        }
        _ => StoreError::Database(e.to_string()),
    }
}

/// Page cache of the writer's connection, in KiB. The default (2 MiB) is
/// smaller than the hot parts of the trees once a database holds millions of
/// events, and every miss is a read system call inside the write transaction.
const WRITER_CACHE_KIB: i64 = 32 * 1024;

/// Prepared statements kept per connection. The writer uses about twenty;
/// rusqlite's default of 16 would evict and re-parse some on every batch.
const STATEMENT_CACHE: usize = 64;

/// Opens a connection with the pragmas every connection needs.
fn connect(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(db_err)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.busy_timeout(Duration::from_secs(30)).map_err(db_err)?;
    conn.execute_batch(
        // WAL lets stats read while the writer writes; FULL makes every
        // commit durable across power loss, not just process crashes;
        // secure_delete overwrites deleted content so a delete request
        // leaves no readable trace in the file's free pages.
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA secure_delete = ON;
         PRAGMA foreign_keys = OFF;",
    )
    .map_err(db_err)?;
    Ok(conn)
}

/// Opens the database at `path` (creating it if needed) as the writer thread
/// does: the same pragmas and durability, the schema brought up to date.
/// Public so benchmarks can measure raw inserts under exactly the collector's
/// settings; a running collector must be the only writer of its file.
pub fn writer_connection(path: &Path) -> Result<Connection, StoreError> {
    let mut conn = connect(path)?;
    migrate(&mut conn)?;
    conn.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)
        .map_err(db_err)?;
    Ok(conn)
}

/// Brings the schema up to [`SCHEMA_VERSION`]. Safe when several processes
/// start at once: the version is read and bumped inside one write transaction.
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(db_err)?;
    tx.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        .map_err(db_err)?;
    let current: i64 = tx
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_version",
            [],
            |r| r.get(0),
        )
        .map_err(db_err)?;
    if current > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found: current,
            supported: SCHEMA_VERSION,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.execute_batch(sql).map_err(db_err)?;
        tx.execute("DELETE FROM schema_version", [])
            .map_err(db_err)?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES (?1)",
            [i as i64 + 1],
        )
        .map_err(db_err)?;
    }
    tx.commit().map_err(db_err)
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, runs migrations and
    /// starts the writer thread. Needs a Tokio runtime only for the async
    /// methods, not here.
    pub fn open(path: &Path, options: SqliteOptions) -> Result<SqliteStore, StoreError> {
        crate::private_files::warn_if_shared(path);
        crate::private_files::create(path, false)
            .map_err(|e| StoreError::Database(format!("creating {}: {e}", path.display())))?;
        let conn = writer_connection(path)?;
        let (jobs, rx) = mpsc::channel(options.queue_capacity.max(1));
        let timing = Arc::new(CommitTiming::default());
        let writer = Writer::new(conn, timing.clone());
        let max_batch = options.max_batch.max(1);
        let handle = std::thread::Builder::new()
            .name("sqlite-writer".to_owned())
            .spawn(move || writer.run(rx, max_batch))
            .map_err(|e| StoreError::Database(format!("starting the writer thread: {e}")))?;
        Ok(SqliteStore {
            path: path.to_owned(),
            jobs,
            readers: Arc::new(Mutex::new(Vec::new())),
            timing,
            writer: Mutex::new(Some(handle)),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> StoreFuture<'_, T> {
        let readers = self.readers.clone();
        let path = self.path.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let pooled = readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
                let conn = match pooled {
                    Some(conn) => conn,
                    None => {
                        let conn = connect(&path)?;
                        conn.execute_batch("PRAGMA query_only = ON")
                            .map_err(db_err)?;
                        conn
                    }
                };
                let result = f(&conn).map_err(db_err);
                let mut pool = readers.lock().unwrap_or_else(|p| p.into_inner());
                if pool.len() < 4 {
                    pool.push(conn);
                }
                result
            })
            .await
            .map_err(|e| StoreError::Database(format!("reader task failed: {e}")))?
        })
    }
}

/// Copies the database at `db` to `dest` with SQLite's online backup API,
/// which is safe while a collector is writing to it.
pub fn backup(db: &Path, dest: &Path) -> Result<(), StoreError> {
    let src = Connection::open_with_flags(
        db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(db_err)?;
    // Private from the first byte, like the database it copies.
    crate::private_files::create(dest, true)
        .map_err(|e| StoreError::Database(format!("creating {}: {e}", dest.display())))?;
    let mut dst = Connection::open(dest).map_err(db_err)?;
    let backup = rusqlite::backup::Backup::new(&src, &mut dst).map_err(db_err)?;
    // Copy in steps so the writer is never blocked for long.
    backup
        .run_to_completion(1024, Duration::from_millis(5), None)
        .map_err(db_err)?;
    drop(backup);
    dst.execute_batch("PRAGMA journal_mode = DELETE")
        .map_err(db_err)?;
    Ok(())
}

/// The integer a tier is stored as in the SQLite schema; public so the raw
/// baseline benchmark writes exactly the collector's rows.
pub fn tier_code(tier: Tier) -> i64 {
    match tier {
        Tier::Off => 0,
        Tier::Aggregate => 1,
        Tier::Anonymous => 2,
        Tier::Full => 3,
    }
}

fn tier_from_code(code: i64) -> Tier {
    match code {
        1 => Tier::Aggregate,
        2 => Tier::Anonymous,
        3 => Tier::Full,
        _ => Tier::Off,
    }
}

fn day_num(day: Day) -> i64 {
    i64::from(day.days_since_epoch())
}

fn day_from(n: i64) -> Day {
    Day::from_days_since_epoch(n as i32)
}

/// The writer thread's state. Only this thread writes to the database.
struct Writer {
    conn: Connection,
    /// Committed `strings` ids by text. Cleared on any rollback, since a
    /// rolled-back insert may have put an id here that no longer exists.
    strings: HashMap<String, i64>,
    /// Committed `projects` ids by name; cleared like `strings`.
    projects: HashMap<String, i64>,
    /// What is stored for installs written recently, by (project, install):
    /// a repeat request from the same install then skips the statements that
    /// would change nothing. Cleared like `strings`, and when another
    /// connection wrote to the file, so it never claims more than is stored.
    known: HashMap<(i64, [u8; 16]), KnownInstall>,
    /// `PRAGMA data_version` when the caches were last known to be valid.
    data_version: i64,
    /// Counter increments of the job being applied; dropped if it fails.
    job_counts: Vec<(CounterKey, u64)>,
    /// Counter increments of the jobs applied so far in this transaction,
    /// summed per key and written as one upsert per key just before
    /// `COMMIT`: a batch of 100 events of one command is one row update, not
    /// 100. A vector sorted once is cheaper here than hashing every key.
    txn_counts: Vec<(CounterKey, u64)>,
    /// Where `props_id` writes each item's props JSON.
    props_buf: Vec<u8>,
    timing: Arc<CommitTiming>,
}

/// Installs kept in the writer's cache; about 100 bytes each.
const KNOWN_INSTALLS: usize = 50_000;

/// Dictionary strings (and project names) kept in the writer's cache. The
/// cardinality caps bound what a day adds, but days add up; past this the
/// cache starts over, which costs one lookup per string on its next use.
const CACHED_STRINGS: usize = 20_000;

/// What the database is known to hold for one install.
#[derive(Debug, Default)]
struct KnownInstall {
    /// The stored first and last day seen, if known.
    span: Option<(i64, i64)>,
    /// Weeks known to be in `install_weeks`.
    weeks: Vec<i64>,
    /// The stored identity, if known.
    identity: KnownIdentity,
}

/// What `identities` is known to hold for one install.
#[derive(Debug, Default, PartialEq)]
enum KnownIdentity {
    /// Not known; the next request writes or deletes.
    #[default]
    Unknown,
    /// No row.
    Absent,
    /// A row with these fields (as JSON).
    Stored(String),
}

/// The primary key of a `daily_counters` row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct CounterKey {
    project: i64,
    day: i64,
    event: i64,
    props: i64,
    /// Version, OS and arch string ids.
    context: [i64; 3],
    tier: i64,
}

impl Writer {
    fn new(conn: Connection, timing: Arc<CommitTiming>) -> Writer {
        Writer {
            conn,
            strings: HashMap::new(),
            projects: HashMap::new(),
            known: HashMap::new(),
            data_version: 0,
            job_counts: Vec::new(),
            txn_counts: Vec::new(),
            props_buf: Vec::new(),
            timing,
        }
    }

    fn run(mut self, mut rx: mpsc::Receiver<Msg>, max_batch: usize) {
        let mut shutdown: Option<oneshot::Sender<()>> = None;
        while let Some(first) = rx.blocking_recv() {
            let mut jobs = Vec::new();
            let mut push = |msg: Msg, jobs: &mut Vec<Job>| match msg {
                Msg::Job(job) => jobs.push(*job),
                Msg::Shutdown(done) => shutdown = Some(done),
            };
            push(first, &mut jobs);
            // Group commit: take whatever else is already waiting. No timer is
            // needed; under load, jobs pile up while the previous commit syncs.
            while jobs.len() < max_batch {
                match rx.try_recv() {
                    Ok(msg) => push(msg, &mut jobs),
                    Err(_) => break,
                }
            }
            if !jobs.is_empty() {
                self.commit_batch(jobs);
            }
            if shutdown.is_some() {
                // Refuse new writes, but finish those already queued.
                rx.close();
            }
        }
        // Fold the WAL back into the main file so a stopped collector leaves one file.
        let _ = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)");
        drop(self);
        if let Some(done) = shutdown {
            let _ = done.send(());
        }
    }

    fn commit_batch(&mut self, jobs: Vec<Job>) {
        let started = Instant::now();
        let (ops, replies): (Vec<Op>, Vec<_>) = jobs.into_iter().map(|j| (j.op, j.reply)).unzip();
        match self.transaction(&ops) {
            Ok(results) => {
                let nanos = started.elapsed().as_nanos() as u64;
                self.timing.commits.fetch_add(1, Ordering::Relaxed);
                self.timing.nanos_sum.fetch_add(nanos, Ordering::Relaxed);
                self.timing.nanos_max.fetch_max(nanos, Ordering::Relaxed);
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(result);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "write transaction failed; nothing from it was stored");
                self.forget_cache();
                if !self.conn.is_autocommit() {
                    let _ = self.conn.execute_batch("ROLLBACK");
                }
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }

    /// Applies every op in one transaction and commits. A failing op is
    /// rolled back to its savepoint and fails alone; an error of the
    /// transaction itself fails the whole batch.
    fn transaction(&mut self, ops: &[Op]) -> Result<Vec<Result<Done, StoreError>>, StoreError> {
        self.txn_counts.clear();
        self.run_cached("BEGIN IMMEDIATE")?;
        self.check_data_version()?;
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            self.run_cached("SAVEPOINT job")?;
            self.job_counts.clear();
            let result = self.apply(op);
            if let Err(e) = &result
                && self.conn.is_autocommit()
            {
                // SQLite rolled the whole transaction back (it may on a full
                // disk or an I/O error): the batch fails with the op's own
                // error, not with "no such savepoint" from the line below.
                return Err(e.clone());
            }
            if result.is_ok() {
                self.run_cached("RELEASE job")?;
                self.txn_counts.append(&mut self.job_counts);
            } else {
                self.forget_cache();
                self.run_cached("ROLLBACK TO job")?;
                self.run_cached("RELEASE job")?;
            }
            results.push(result);
        }
        self.write_counts().map_err(db_err)?;
        self.run_cached("COMMIT")?;
        Ok(results)
    }

    /// Runs a parameterless statement through the statement cache, so the
    /// per-job savepoints are not parsed again for every job.
    fn run_cached(&self, sql: &str) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(sql)
            .and_then(|mut stmt| stmt.execute([]))
            .map(|_| ())
            .map_err(db_err)
    }

    /// Adds the summed counter increments of this transaction, in key order
    /// so neighbouring rows are updated together.
    fn write_counts(&mut self) -> rusqlite::Result<()> {
        let mut counts = std::mem::take(&mut self.txn_counts);
        counts.sort_unstable_by_key(|(key, _)| *key);
        // Sum runs of equal keys in place.
        counts.dedup_by(|next, kept| {
            let same = next.0 == kept.0;
            if same {
                kept.1 += next.1;
            }
            same
        });
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO daily_counters (project, day, event, props, version, os, arch, tier, count)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT DO UPDATE SET count = count + excluded.count",
        )?;
        for &(k, n) in &counts {
            stmt.execute(params![
                k.project,
                k.day,
                k.event,
                k.props,
                k.context[0],
                k.context[1],
                k.context[2],
                k.tier,
                n as i64
            ])?;
        }
        drop(stmt);
        // Keep the allocation for the next transaction.
        counts.clear();
        self.txn_counts = counts;
        Ok(())
    }

    fn forget_cache(&mut self) {
        self.strings.clear();
        self.projects.clear();
        self.known.clear();
    }

    /// Drops the caches if another connection committed since this one last
    /// looked (a `purge` or `migrate` command run beside the server, say).
    /// Called inside the write transaction, so nothing can change after it.
    fn check_data_version(&mut self) -> Result<(), StoreError> {
        let version: i64 = self
            .conn
            .prepare_cached("PRAGMA data_version")
            .and_then(|mut stmt| stmt.query_row([], |r| r.get(0)))
            .map_err(db_err)?;
        if version != self.data_version {
            self.forget_cache();
            self.data_version = version;
        }
        Ok(())
    }

    fn apply(&mut self, op: &Op) -> Result<Done, StoreError> {
        match op {
            Op::Ingest(batch, skew) => self.ingest(batch, skew).map(Done::Ingest),
            Op::Delete { project, install } => self.delete(project, install).map(|()| Done::Delete),
            Op::Purge { policy, today } => self.purge(policy, *today).map(Done::Purge),
        }
        .map_err(db_err)
    }

    fn string_id(&mut self, text: &str) -> rusqlite::Result<i64> {
        if let Some(id) = self.strings.get(text) {
            return Ok(*id);
        }
        let found = self
            .conn
            .prepare_cached("SELECT id FROM strings WHERE text = ?1")?
            .query_row([text], |r| r.get(0))
            .optional()?;
        let id = match found {
            Some(id) => id,
            None => {
                self.conn
                    .prepare_cached("INSERT INTO strings (text) VALUES (?1)")?
                    .execute([text])?;
                self.conn.last_insert_rowid()
            }
        };
        if self.strings.len() >= CACHED_STRINGS {
            self.strings.clear();
        }
        self.strings.insert(text.to_owned(), id);
        Ok(id)
    }

    /// The dictionary id of `props` as JSON. The text is written into a
    /// buffer kept between items, so a known combination costs no allocation.
    fn props_id(&mut self, props: &telemetry_protocol::Props) -> rusqlite::Result<i64> {
        let mut buf = std::mem::take(&mut self.props_buf);
        write_props_json(props, &mut buf);
        // serde_json writes UTF-8 only; the fallback keeps a bug from panicking the writer.
        let id = self.string_id(std::str::from_utf8(&buf).unwrap_or("{}"));
        self.props_buf = buf;
        id
    }

    fn project_id(&mut self, name: &str, create: bool) -> rusqlite::Result<Option<i64>> {
        if let Some(id) = self.projects.get(name) {
            return Ok(Some(*id));
        }
        let found = self
            .conn
            .prepare_cached("SELECT id FROM projects WHERE name = ?1")?
            .query_row([name], |r| r.get(0))
            .optional()?;
        let id = match (found, create) {
            (Some(id), _) => id,
            (None, true) => {
                self.conn
                    .prepare_cached("INSERT INTO projects (name) VALUES (?1)")?
                    .execute([name])?;
                self.conn.last_insert_rowid()
            }
            (None, false) => return Ok(None),
        };
        if self.projects.len() >= CACHED_STRINGS {
            self.projects.clear();
        }
        self.projects.insert(name.to_owned(), id);
        Ok(Some(id))
    }

    /// Notes a counter increment of the current job; see `write_counts`.
    fn add_count(&mut self, key: CounterKey, count: u64) {
        self.job_counts.push((key, count));
    }

    /// Remembers a one-time id (a report id, or the id of a rolled-up or
    /// refused event) under `day`; whether it was new.
    fn remember_id(&self, project: i64, id: &Uuid, day: Day) -> rusqlite::Result<bool> {
        Ok(self
            .conn
            .prepare_cached(
                "INSERT INTO seen_reports (project, report_id, day) VALUES (?1, ?2, ?3)
                 ON CONFLICT DO NOTHING",
            )?
            .execute(params![project, id.as_bytes().as_slice(), day_num(day)])?
            == 1)
    }

    fn ingest(&mut self, batch: &IngestBatch, skew: &Skew) -> rusqlite::Result<IngestOutcome> {
        let project = self
            .project_id(&batch.project, true)?
            .expect("created on demand");
        let context = [
            self.string_id(&batch.context.version)?,
            self.string_id(&batch.context.os)?,
            self.string_id(&batch.context.arch)?,
        ];
        let mut outcome = IngestOutcome::default();
        let mut replayed = false;
        let key = |day: Day, event: i64, props: i64| CounterKey {
            project,
            day: day_num(day),
            event,
            props,
            context,
            tier: tier_code(batch.tier),
        };
        match &batch.data {
            BatchData::Aggregate {
                report_id,
                counters,
            } => {
                let newest = counters
                    .iter()
                    .map(|c| c.day)
                    .fold(batch.received, Day::max);
                if !self.remember_id(project, report_id, newest)? {
                    // A replay: its counters do not count again. Its refused
                    // counters do, each once by its own id, below: the
                    // manifest may have changed since, and the answer says
                    // what it refuses now.
                    outcome.duplicates = counters.len() as u64;
                    replayed = true;
                }
                for c in counters.iter().filter(|_| !replayed) {
                    let event = self.string_id(&c.event)?;
                    let props = self.props_id(&c.props)?;
                    self.add_count(key(c.day, event, props), c.count);
                    outcome.accepted += 1;
                }
            }
            BatchData::Rollup { counters } => {
                for (id, c) in counters {
                    if !self.remember_id(project, id, c.day.max(batch.received))? {
                        outcome.duplicates += 1;
                        continue;
                    }
                    let event = self.string_id(&c.event)?;
                    let props = self.props_id(&c.props)?;
                    self.add_count(key(c.day, event, props), c.count);
                    outcome.accepted += 1;
                }
            }
            BatchData::Events {
                install,
                events,
                identity,
            } => {
                let mut days = BTreeSet::new();
                let mut fresh_uses = Vec::new();
                for e in events {
                    let name = self.string_id(&e.name)?;
                    let props = self.props_id(&e.props)?;
                    let fresh = self
                        .conn
                        .prepare_cached(
                            "INSERT INTO events (project, install, event_id, ts, name, props)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
                        )?
                        .execute(params![
                            project,
                            install.0.as_slice(),
                            e.id.as_bytes().as_slice(),
                            e.timestamp.unix_millis(),
                            name,
                            props
                        ])?
                        == 1;
                    if fresh {
                        let day = e.timestamp.day();
                        fresh_uses.push((day, name, &e.props));
                        self.add_count(key(day, name, props), 1);
                        days.insert(day);
                        outcome.accepted += 1;
                    } else {
                        outcome.duplicates += 1;
                    }
                }
                if let (Some(first), Some(last)) = (days.first(), days.last()) {
                    let weeks: BTreeSet<i64> =
                        days.iter().map(|d| day_num(d.week_start())).collect();
                    self.note_activity(project, install, (day_num(*first), day_num(*last)), weeks)?;
                }
                // With every event refused there is no install row to hang an
                // identity on, and none that a purge would find it by.
                if !events.is_empty() {
                    self.note_identity(project, install, batch.tier, identity.as_ref())?;
                }
                self.note_uses(project, install, &fresh_uses)?;
            }
        }
        if !skew.is_empty() {
            // A new aggregate report is new as a whole, even when every
            // counter in it was refused.
            let report_new = matches!(batch.data, BatchData::Aggregate { .. }) && !replayed;
            self.count_skew(
                project,
                context[0],
                batch,
                skew,
                outcome.accepted > 0 || report_new,
            )?;
        }
        self.note_upload(project, batch.received, &outcome)?;
        Ok(outcome)
    }

    /// Distinct installs by use: for each ISO week of `fresh` (newly stored
    /// events: day, event name id, props), notes that the install sent
    /// anything, each event, and each event's prop values, and counts each
    /// first time in `weekly_uses`. A replayed event never gets here, so
    /// nothing counts twice; deleting the install takes its rows back out.
    fn note_uses(
        &mut self,
        project: i64,
        install: &InstallHash,
        fresh: &[(Day, i64, &telemetry_protocol::Props)],
    ) -> rusqlite::Result<()> {
        let mut uses: BTreeSet<[i64; 4]> = BTreeSet::new();
        for (day, event, props) in fresh {
            let week = day_num(day.week_start());
            uses.insert([week, ANY_EVENT, 0, 0]);
            uses.insert([week, *event, 0, 0]);
            for (name, value) in props.iter() {
                let prop = self.string_id(name)?;
                let value = self.string_id(&super::prop_value_text(value))?;
                uses.insert([week, *event, prop, value]);
            }
        }
        for [week, event, prop, value] in uses {
            let new = self
                .conn
                .prepare_cached(
                    "INSERT INTO install_uses (project, week, install, event, prop, value)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
                )?
                .execute(params![
                    project,
                    week,
                    install.0.as_slice(),
                    event,
                    prop,
                    value
                ])?
                == 1;
            if new {
                self.conn
                    .prepare_cached(
                        "INSERT INTO weekly_uses (project, event, prop, week, value, installs)
                         VALUES (?1, ?2, ?3, ?4, ?5, 1)
                         ON CONFLICT DO UPDATE SET installs = installs + 1",
                    )?
                    .execute(params![project, event, prop, week, value])?;
            }
        }
        Ok(())
    }

    /// Counts the upload on its arrival day, and as a retry if it carried
    /// anything already stored (see [`super::UploadRow`]).
    fn note_upload(
        &self,
        project: i64,
        received: Day,
        outcome: &IngestOutcome,
    ) -> rusqlite::Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO daily_uploads (project, day, uploads, retries, replayed)
                 VALUES (?1, ?2, 1, ?3, ?4)
                 ON CONFLICT DO UPDATE SET uploads = uploads + 1,
                                           retries = retries + excluded.retries,
                                           replayed = replayed + excluded.replayed",
            )?
            .execute(params![
                project,
                day_num(received),
                i64::from(outcome.duplicates > 0),
                outcome.duplicates as i64
            ])?;
        Ok(())
    }

    /// Adds `skew` to `refusals`: each refused event or counter only if its
    /// id is new, and the rest (identity fields, the request's notes) only
    /// if anything in the request was new (`fresh`).
    fn count_skew(
        &self,
        project: i64,
        version: i64,
        batch: &IngestBatch,
        skew: &Skew,
        mut fresh: bool,
    ) -> rusqlite::Result<()> {
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO refusals (project, day, version, reason, detail, count)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT DO UPDATE SET count = count + excluded.count",
        )?;
        let day = day_num(batch.received);
        for item in &skew.refused {
            if let Some(id) = &item.id
                && self.remember_id(project, id, batch.received)?
            {
                fresh = true;
                stmt.execute(params![project, day, version, item.reason, item.detail, 1])?;
            }
        }
        if fresh {
            for item in skew.refused.iter().filter(|r| r.id.is_none()) {
                stmt.execute(params![project, day, version, item.reason, item.detail, 1])?;
            }
            for note in &skew.notes {
                stmt.execute(params![
                    project,
                    day,
                    version,
                    note.reason,
                    note.detail,
                    note.count as i64
                ])?;
            }
        }
        Ok(())
    }

    /// Widens the install's first/last-seen span and records its active
    /// weeks, skipping the statements the cache says would change nothing.
    fn note_activity(
        &mut self,
        project: i64,
        install: &InstallHash,
        (first, last): (i64, i64),
        weeks: BTreeSet<i64>,
    ) -> rusqlite::Result<()> {
        let key = (project, install.0);
        let mut known = self.known.remove(&key).unwrap_or_default();
        let stored = match known.span {
            Some(span) => Some(span),
            None => self
                .conn
                .prepare_cached(
                    "SELECT first_seen_day, last_seen_day FROM installs
                     WHERE project = ?1 AND install = ?2",
                )?
                .query_row(params![project, install.0.as_slice()], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()?,
        };
        let span = stored.map_or((first, last), |(f, l)| (f.min(first), l.max(last)));
        if stored != Some(span) {
            self.conn
                .prepare_cached(
                    "INSERT INTO installs (project, install, first_seen_day, last_seen_day)
                     VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT DO UPDATE SET
                       first_seen_day = excluded.first_seen_day,
                       last_seen_day = excluded.last_seen_day",
                )?
                .execute(params![project, install.0.as_slice(), span.0, span.1])?;
        }
        if let Some((old_first, _)) = stored
            && old_first != span.0
        {
            // An earlier event arrived late: the install's weeks move to the
            // cohort of its new first day.
            self.move_cohort(project, install, old_first, span.0)?;
        }
        known.span = Some(span);
        for week in weeks {
            if known.weeks.contains(&week) {
                continue;
            }
            let fresh = self
                .conn
                .prepare_cached(
                    "INSERT INTO install_weeks (project, install, week) VALUES (?1, ?2, ?3)
                     ON CONFLICT DO NOTHING",
                )?
                .execute(params![project, install.0.as_slice(), week])?
                == 1;
            if fresh {
                self.conn
                    .prepare_cached(
                        "INSERT INTO install_cohorts (project, first_day, week, installs)
                         VALUES (?1, ?2, ?3, 1)
                         ON CONFLICT DO UPDATE SET installs = installs + 1",
                    )?
                    .execute(params![project, span.0, week])?;
            }
            known.weeks.push(week);
        }
        self.remember(key, known);
        Ok(())
    }

    /// Moves every active week of an install from the cohort of `from` to
    /// that of `to` (both first-seen days).
    fn move_cohort(
        &self,
        project: i64,
        install: &InstallHash,
        from: i64,
        to: i64,
    ) -> rusqlite::Result<()> {
        self.conn
            .prepare_cached(
                "UPDATE install_cohorts SET installs = installs - 1
                 WHERE project = ?1 AND first_day = ?3 AND week IN
                   (SELECT week FROM install_weeks WHERE project = ?1 AND install = ?2)",
            )?
            .execute(params![project, install.0.as_slice(), from])?;
        self.conn
            .prepare_cached(
                "INSERT INTO install_cohorts (project, first_day, week, installs)
                 SELECT ?1, ?3, week, 1 FROM install_weeks WHERE project = ?1 AND install = ?2
                 ON CONFLICT DO UPDATE SET installs = installs + 1",
            )?
            .execute(params![project, install.0.as_slice(), to])?;
        Ok(())
    }

    /// Stores `full`'s identity fields, or at a lower tier removes any stored
    /// before, so that lowering the tier also forgets who the user said they were.
    fn note_identity(
        &mut self,
        project: i64,
        install: &InstallHash,
        tier: Tier,
        identity: Option<&std::collections::BTreeMap<String, String>>,
    ) -> rusqlite::Result<()> {
        let key = (project, install.0);
        let mut known = self.known.remove(&key).unwrap_or_default();
        match (tier, identity) {
            (Tier::Full, Some(fields)) => {
                let json = serde_json::to_string(fields)
                    .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
                if !matches!(&known.identity, KnownIdentity::Stored(stored) if *stored == json) {
                    self.conn
                        .prepare_cached(
                            "INSERT INTO identities (project, install, fields) VALUES (?1, ?2, ?3)
                             ON CONFLICT DO UPDATE SET fields = excluded.fields",
                        )?
                        .execute(params![project, install.0.as_slice(), json])?;
                    known.identity = KnownIdentity::Stored(json);
                }
            }
            (Tier::Full, None) => {}
            _ if known.identity == KnownIdentity::Absent => {}
            _ => {
                self.conn
                    .prepare_cached("DELETE FROM identities WHERE project = ?1 AND install = ?2")?
                    .execute(params![project, install.0.as_slice()])?;
                known.identity = KnownIdentity::Absent;
            }
        }
        self.remember(key, known);
        Ok(())
    }

    /// Keeps what a job learned about an install, within a bounded cache.
    fn remember(&mut self, key: (i64, [u8; 16]), known: KnownInstall) {
        if self.known.len() >= KNOWN_INSTALLS && !self.known.contains_key(&key) {
            // Starting over is simpler than an LRU and costs one statement per
            // install on its next request.
            self.known.clear();
        }
        self.known.insert(key, known);
    }

    fn delete(&mut self, project: &str, install: &InstallHash) -> rusqlite::Result<()> {
        // An unknown project is not created: a delete must leave no trace.
        let Some(project) = self.project_id(project, false)? else {
            return Ok(());
        };
        self.known.remove(&(project, install.0));
        // Its weeks leave the retention matrix first; weeks whose install row
        // is already gone (after a purge) were no longer counted.
        self.conn
            .prepare_cached(
                "UPDATE install_cohorts SET installs = installs - 1
                 WHERE project = ?1
                   AND first_day = (SELECT first_seen_day FROM installs
                                    WHERE project = ?1 AND install = ?2)
                   AND week IN (SELECT week FROM install_weeks
                                WHERE project = ?1 AND install = ?2)",
            )?
            .execute(params![project, install.0.as_slice()])?;
        for table in ["events", "installs", "install_weeks", "identities"] {
            self.conn
                .prepare_cached(&format!(
                    "DELETE FROM {table} WHERE project = ?1 AND install = ?2"
                ))?
                .execute(params![project, install.0.as_slice()])?;
        }
        self.delete_uses(project, install)
    }

    /// Takes an install's uses out of `weekly_uses` and removes them. The
    /// table is keyed by week first, so the weeks it holds are walked one by
    /// one (a few dozen index seeks) rather than scanned.
    fn delete_uses(&self, project: i64, install: &InstallHash) -> rusqlite::Result<()> {
        const WEEKS: &str = "WITH RECURSIVE w(week) AS (
                SELECT MIN(week) FROM install_uses WHERE project = ?1
                UNION ALL
                SELECT (SELECT MIN(u.week) FROM install_uses u
                        WHERE u.project = ?1 AND u.week > w.week)
                FROM w WHERE w.week IS NOT NULL)
            SELECT week FROM w WHERE week IS NOT NULL";
        self.conn
            .prepare_cached(&format!(
                "UPDATE weekly_uses SET installs = installs - 1
                 WHERE project = ?1 AND (event, prop, week, value) IN
                   (SELECT event, prop, week, value FROM install_uses
                    WHERE project = ?1 AND install = ?2 AND week IN ({WEEKS}))"
            ))?
            .execute(params![project, install.0.as_slice()])?;
        self.conn
            .prepare_cached(&format!(
                "DELETE FROM install_uses
                 WHERE project = ?1 AND install = ?2 AND week IN ({WEEKS})"
            ))?
            .execute(params![project, install.0.as_slice()])?;
        Ok(())
    }

    fn purge(&mut self, policy: &RetentionPolicy, today: Day) -> rusqlite::Result<PurgeOutcome> {
        self.known.clear();
        let projects: Vec<(i64, String)> = self
            .conn
            .prepare_cached("SELECT id, name FROM projects")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let mut out = PurgeOutcome::default();
        for (id, name) in projects {
            let days = i32::try_from(policy.days_for(&name)).unwrap_or(i32::MAX / 2);
            let cutoff = day_num(today.add_days(-days));
            out.events += self
                .conn
                .prepare_cached("DELETE FROM events WHERE project = ?1 AND ts < ?2")?
                .execute(params![id, cutoff * MILLIS_PER_DAY])? as u64;
            // What the deletions below take out of the retention matrix:
            // every counted week row that goes, or whose install row goes.
            self.conn
                .prepare_cached(
                    "UPDATE install_cohorts SET installs = installs - gone.n
                     FROM (SELECT i.first_seen_day AS first_day, w.week AS week, COUNT(*) AS n
                           FROM install_weeks w
                           JOIN installs i ON i.project = w.project AND i.install = w.install
                           WHERE w.project = ?1 AND (w.week + 6 < ?2 OR i.last_seen_day < ?2)
                           GROUP BY i.first_seen_day, w.week) AS gone
                     WHERE install_cohorts.project = ?1
                       AND install_cohorts.first_day = gone.first_day
                       AND install_cohorts.week = gone.week",
                )?
                .execute(params![id, cutoff])?;
            self.conn
                .prepare_cached("DELETE FROM install_cohorts WHERE project = ?1 AND installs <= 0")?
                .execute([id])?;
            // A week row goes once the whole week is older than the cutoff,
            // and with its install.
            out.install_weeks += self
                .conn
                .prepare_cached(
                    "DELETE FROM install_weeks WHERE project = ?1 AND (week + 6 < ?2 OR install IN
                     (SELECT install FROM installs WHERE project = ?1 AND last_seen_day < ?2))",
                )?
                .execute(params![id, cutoff])? as u64;
            self.conn
                .prepare_cached(
                    "DELETE FROM identities WHERE project = ?1 AND install IN
                     (SELECT install FROM installs WHERE project = ?1 AND last_seen_day < ?2)",
                )?
                .execute(params![id, cutoff])?;
            out.installs += self
                .conn
                .prepare_cached("DELETE FROM installs WHERE project = ?1 AND last_seen_day < ?2")?
                .execute(params![id, cutoff])? as u64;
            // Uses go once their whole week is older than the cutoff; no event
            // of that week can arrive any more, so its `weekly_uses` counts,
            // which hold no install id, are final and stay, like the counters.
            out.install_uses += self
                .conn
                .prepare_cached("DELETE FROM install_uses WHERE project = ?1 AND week + 6 < ?2")?
                .execute(params![id, cutoff])? as u64;
        }
        out.report_ids = self
            .conn
            .prepare_cached("DELETE FROM seen_reports WHERE day < ?1")?
            .execute([day_num(today.add_days(-REPORT_ID_DAYS))])? as u64;
        Ok(out)
    }
}

/// Writes props in their canonical JSON form into `out`; `Props` is a sorted
/// map, so equal props always give the same text and therefore the same
/// dictionary id.
fn write_props_json(props: &telemetry_protocol::Props, out: &mut Vec<u8>) {
    out.clear();
    if serde_json::to_writer(&mut *out, props).is_err() {
        out.clear();
        out.extend_from_slice(b"{}");
    }
}

fn read_stats(
    conn: &Connection,
    project: &str,
    from: Day,
    to: Day,
) -> rusqlite::Result<StatsInput> {
    let Some(project): Option<i64> = conn
        .prepare_cached("SELECT id FROM projects WHERE name = ?1")?
        .query_row([project], |r| r.get(0))
        .optional()?
    else {
        return Ok(StatsInput::default());
    };
    let start = day_num(from.week_start());
    let end = day_num(to);
    let counters = conn
        .prepare_cached(
            // Grouped on the integer ids first, so the dictionary is looked
            // up once per result row rather than once per stored row (a
            // quarter less time with a few tens of thousands of rows).
            "SELECT g.day, e.text, v.text, o.text, a.text, g.tier, g.n
             FROM (SELECT day, event, version, os, arch, tier, SUM(count) AS n
                   FROM daily_counters
                   WHERE project = ?1 AND day BETWEEN ?2 AND ?3
                   GROUP BY day, event, version, os, arch, tier) g
             JOIN strings e ON e.id = g.event
             JOIN strings v ON v.id = g.version
             JOIN strings o ON o.id = g.os
             JOIN strings a ON a.id = g.arch",
        )?
        .query_map(params![project, start, end], |r| {
            Ok(CounterRow {
                day: day_from(r.get(0)?),
                event: r.get(1)?,
                version: r.get(2)?,
                os: r.get(3)?,
                arch: r.get(4)?,
                tier: tier_from_code(r.get(5)?),
                count: r.get::<_, i64>(6)? as u64,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let installs_all_time: i64 = conn
        .prepare_cached(
            "SELECT COALESCE(SUM(c.count), 0) FROM daily_counters c
             WHERE c.project = ?1 AND c.event = (SELECT id FROM strings WHERE text = ?2)",
        )?
        .query_row(
            params![project, telemetry_protocol::manifest::builtin::INSTALL],
            |r| r.get(0),
        )?;
    // (day + 3) % 7 is the ISO weekday minus one, because 1970-01-01 was a Thursday.
    let cohorts = conn
        .prepare_cached(
            "SELECT first_day - ((first_day + 3) % 7) AS cohort, week, SUM(installs)
             FROM install_cohorts
             WHERE project = ?1 AND first_day BETWEEN ?2 AND ?3 AND week <= ?3 AND installs > 0
             GROUP BY cohort, week",
        )?
        .query_map(params![project, start, end], |r| {
            Ok(CohortRow {
                cohort: day_from(r.get(0)?),
                active: day_from(r.get(1)?),
                installs: r.get::<_, i64>(2)? as u64,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(StatsInput {
        counters,
        installs_all_time: installs_all_time as u64,
        cohorts,
    })
}

fn read_refusals(
    conn: &Connection,
    project: &str,
    from: Day,
    to: Day,
) -> rusqlite::Result<Vec<RefusalRow>> {
    conn.prepare_cached(
        "SELECT r.day, v.text, r.reason, r.detail, r.count
         FROM refusals r
         JOIN projects p ON p.id = r.project
         JOIN strings v ON v.id = r.version
         WHERE p.name = ?1 AND r.day BETWEEN ?2 AND ?3
         ORDER BY r.day, v.text, r.reason, r.detail",
    )?
    .query_map(params![project, day_num(from), day_num(to)], |r| {
        Ok(RefusalRow {
            day: day_from(r.get(0)?),
            version: r.get(1)?,
            reason: r.get(2)?,
            detail: r.get(3)?,
            count: r.get::<_, i64>(4)? as u64,
        })
    })?
    .collect()
}

fn read_released(
    conn: &Connection,
    project: &str,
    from: Day,
    to: Day,
) -> rusqlite::Result<Vec<ReleasedCell>> {
    conn.prepare_cached(
        "SELECT period, statistic, key, value, epsilon, released_on FROM public_releases
         WHERE project = ?1 AND period BETWEEN ?2 AND ?3 ORDER BY period, statistic, key",
    )?
    .query_map(
        params![project, from.days_since_epoch(), to.days_since_epoch()],
        |r| {
            Ok(ReleasedCell {
                project: project.to_owned(),
                period: Day::from_days_since_epoch(r.get(0)?),
                statistic: r.get(1)?,
                key: r.get(2)?,
                value: r.get(3)?,
                epsilon: r.get(4)?,
                released_on: Day::from_days_since_epoch(r.get(5)?),
            })
        },
    )?
    .collect()
}

fn write_released(conn: &mut Connection, cells: &[ReleasedCell]) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    {
        let mut insert = tx.prepare_cached(
            "INSERT OR IGNORE INTO public_releases
             (project, period, statistic, key, value, epsilon, released_on)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        for c in cells {
            insert.execute(params![
                c.project,
                c.period.days_since_epoch(),
                c.statistic,
                c.key,
                c.value,
                c.epsilon,
                c.released_on.days_since_epoch()
            ])?;
        }
    }
    tx.commit()
}

/// [`Store::weekly_uses`]. Each case reads a range of the primary key
/// (project, event, prop, week), so a breakdown reads only its own rows.
fn read_weekly_uses(
    conn: &Connection,
    project: &str,
    (from, to): (Day, Day),
    event: Option<&str>,
    prop: Option<&str>,
) -> rusqlite::Result<Vec<super::UseRow>> {
    let Some(project): Option<i64> = conn
        .prepare_cached("SELECT id FROM projects WHERE name = ?1")?
        .query_row([project], |r| r.get(0))
        .optional()?
    else {
        return Ok(Vec::new());
    };
    let id = |text: Option<&str>| -> rusqlite::Result<Option<Option<i64>>> {
        match text {
            None => Ok(Some(None)),
            Some(t) => Ok(conn
                .prepare_cached("SELECT id FROM strings WHERE text = ?1")?
                .query_row([t], |r| r.get(0))
                .optional()?
                .map(Some)),
        }
    };
    let (start, end) = (day_num(from), day_num(to));
    // The weeks' "sent anything" rows come with every read.
    let mut sql = String::from(
        "SELECT u.week, COALESCE(e.text, ''), COALESCE(p.text, ''), COALESCE(v.text, ''), u.installs
         FROM weekly_uses u
         LEFT JOIN strings e ON e.id = u.event
         LEFT JOIN strings p ON p.id = u.prop
         LEFT JOIN strings v ON v.id = u.value
         WHERE u.project = ?1 AND u.installs > 0 AND (
             (u.event = 0 AND u.prop = 0 AND u.week BETWEEN ?2 AND ?3)",
    );
    let mut args: Vec<i64> = vec![project, start, end];
    match (id(event)?, id(prop)?) {
        (Some(None), _) => sql.push_str(" OR (u.event > 0 AND u.week BETWEEN ?2 AND ?3)"),
        (Some(Some(e)), Some(None)) => {
            args.push(e);
            sql.push_str(" OR (u.event = ?4 AND u.week BETWEEN ?2 AND ?3)");
        }
        (Some(Some(e)), Some(Some(p))) => {
            args.extend([e, p]);
            sql.push_str(" OR (u.event = ?4 AND u.prop IN (0, ?5) AND u.week BETWEEN ?2 AND ?3)");
        }
        // An event or prop never stored: only the weeks' totals.
        _ => {}
    }
    sql.push(')');
    conn.prepare_cached(&sql)?
        .query_map(rusqlite::params_from_iter(args), |r| {
            Ok(super::UseRow {
                week: day_from(r.get(0)?),
                event: r.get(1)?,
                prop: r.get(2)?,
                value: r.get(3)?,
                installs: r.get::<_, i64>(4)? as u64,
            })
        })?
        .collect()
}

/// [`Store::uploads`].
fn read_uploads(
    conn: &Connection,
    project: &str,
    from: Day,
    to: Day,
) -> rusqlite::Result<Vec<super::UploadRow>> {
    conn.prepare_cached(
        "SELECT u.day, u.uploads, u.retries, u.replayed
         FROM daily_uploads u JOIN projects p ON p.id = u.project
         WHERE p.name = ?1 AND u.day BETWEEN ?2 AND ?3 ORDER BY u.day",
    )?
    .query_map(params![project, day_num(from), day_num(to)], |r| {
        Ok(super::UploadRow {
            day: day_from(r.get(0)?),
            uploads: r.get::<_, i64>(1)? as u64,
            retries: r.get::<_, i64>(2)? as u64,
            replayed: r.get::<_, i64>(3)? as u64,
        })
    })?
    .collect()
}

/// [`Store::prop_counters`]: grouped on the integer ids first, like
/// [`read_stats`], so each props text is looked up once per result row. The
/// day range is a prefix of the primary key, so only the window is read.
fn read_prop_counters(
    conn: &Connection,
    project: &str,
    from: Day,
    to: Day,
    event: Option<&str>,
) -> rusqlite::Result<Vec<super::PropCounterRow>> {
    let Some(project): Option<i64> = conn
        .prepare_cached("SELECT id FROM projects WHERE name = ?1")?
        .query_row([project], |r| r.get(0))
        .optional()?
    else {
        return Ok(Vec::new());
    };
    let event_id: Option<i64> = match event {
        None => None,
        Some(name) => match conn
            .prepare_cached("SELECT id FROM strings WHERE text = ?1")?
            .query_row([name], |r| r.get(0))
            .optional()?
        {
            Some(id) => Some(id),
            None => return Ok(Vec::new()),
        },
    };
    let row = |r: &rusqlite::Row<'_>| {
        Ok(super::PropCounterRow {
            day: day_from(r.get(0)?),
            event: r.get(1)?,
            props: r.get(2)?,
            count: r.get::<_, i64>(3)? as u64,
        })
    };
    let (start, end) = (day_num(from), day_num(to));
    match event_id {
        Some(event) => conn
            .prepare_cached(
                "SELECT g.day, e.text, p.text, g.n
                 FROM (SELECT day, event, props, SUM(count) AS n
                       FROM daily_counters
                       WHERE project = ?1 AND day BETWEEN ?2 AND ?3 AND event = ?4
                       GROUP BY day, event, props) g
                 JOIN strings e ON e.id = g.event
                 JOIN strings p ON p.id = g.props",
            )?
            .query_map(params![project, start, end, event], row)?
            .collect(),
        None => conn
            .prepare_cached(
                "SELECT g.day, e.text, p.text, g.n
                 FROM (SELECT day, event, props, SUM(count) AS n
                       FROM daily_counters
                       WHERE project = ?1 AND day BETWEEN ?2 AND ?3
                       GROUP BY day, event, props) g
                 JOIN strings e ON e.id = g.event
                 JOIN strings p ON p.id = g.props",
            )?
            .query_map(params![project, start, end], row)?
            .collect(),
    }
}

impl Store for SqliteStore {
    fn ingest_checked(&self, batch: IngestBatch, skew: Skew) -> StoreFuture<'_, IngestOutcome> {
        queue::ingest(&self.jobs, batch, skew)
    }

    fn refusals(&self, project: &str, from: Day, to: Day) -> StoreFuture<'_, Vec<RefusalRow>> {
        let project = project.to_owned();
        self.read(move |conn| read_refusals(conn, &project, from, to))
    }

    fn delete_install(&self, project: &str, install: InstallHash) -> StoreFuture<'_, ()> {
        queue::delete(&self.jobs, project, install)
    }

    fn purge(&self, policy: &RetentionPolicy, today: Day) -> StoreFuture<'_, PurgeOutcome> {
        queue::purge(&self.jobs, policy, today)
    }

    fn stats_input(&self, project: &str, from: Day, to: Day) -> StoreFuture<'_, StatsInput> {
        let project = project.to_owned();
        self.read(move |conn| read_stats(conn, &project, from, to))
    }

    fn prop_counters(
        &self,
        project: &str,
        from: Day,
        to: Day,
        event: Option<&str>,
    ) -> StoreFuture<'_, Vec<super::PropCounterRow>> {
        let project = project.to_owned();
        let event = event.map(str::to_owned);
        self.read(move |conn| read_prop_counters(conn, &project, from, to, event.as_deref()))
    }

    fn weekly_uses(
        &self,
        project: &str,
        from: Day,
        to: Day,
        event: Option<&str>,
        prop: Option<&str>,
    ) -> StoreFuture<'_, Vec<super::UseRow>> {
        let project = project.to_owned();
        let (event, prop) = (event.map(str::to_owned), prop.map(str::to_owned));
        self.read(move |conn| {
            read_weekly_uses(
                conn,
                &project,
                (from, to),
                event.as_deref(),
                prop.as_deref(),
            )
        })
    }

    fn uploads(&self, project: &str, from: Day, to: Day) -> StoreFuture<'_, Vec<super::UploadRow>> {
        let project = project.to_owned();
        self.read(move |conn| read_uploads(conn, &project, from, to))
    }

    fn projects(&self) -> StoreFuture<'_, Vec<String>> {
        self.read(|conn| {
            conn.prepare_cached("SELECT name FROM projects ORDER BY name")?
                .query_map([], |r| r.get(0))?
                .collect()
        })
    }

    fn released_cells(
        &self,
        project: &str,
        from: Day,
        to: Day,
    ) -> StoreFuture<'_, Vec<ReleasedCell>> {
        let project = project.to_owned();
        self.read(move |conn| read_released(conn, &project, from, to))
    }

    fn keep_released(&self, cells: Vec<ReleasedCell>) -> StoreFuture<'_, ()> {
        // Releases are a few hundred rows a day at most, so they skip the
        // ingest queue and take a connection of their own; the busy timeout
        // waits for the writer's transaction like any second writer.
        let path = self.path.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let mut conn = connect(&path)?;
                write_released(&mut conn, &cells).map_err(db_err)
            })
            .await
            .map_err(|e| StoreError::Database(format!("release task failed: {e}")))?
        })
    }

    fn status(&self) -> StoreStatus {
        let capacity = self.jobs.max_capacity() as u64;
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).ok();
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        let size_bytes = size(&self.path).map(|db| db + size(Path::new(&wal)).unwrap_or(0));
        StoreStatus {
            queue_depth: capacity - self.jobs.capacity() as u64,
            queue_capacity: capacity,
            commits: self.timing.commits.load(Ordering::Relaxed),
            commit_seconds_sum: self.timing.nanos_sum.load(Ordering::Relaxed) as f64 / 1e9,
            commit_seconds_max: self.timing.nanos_max.load(Ordering::Relaxed) as f64 / 1e9,
            size_bytes,
        }
    }

    fn close(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let (done, finished) = oneshot::channel();
            if self.jobs.send(Msg::Shutdown(done)).await.is_ok() {
                let _ = finished.await;
            }
            let handle = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(handle) = handle {
                let _ = tokio::task::spawn_blocking(move || handle.join()).await;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{BatchContext, BatchData};
    use telemetry_protocol::{Counter, Event, Props, Timestamp, Uuid};

    fn context() -> BatchContext {
        BatchContext {
            version: "1.2.3".into(),
            os: "linux".into(),
            arch: "x86_64".into(),
        }
    }

    fn day(s: &str) -> Day {
        s.parse().unwrap()
    }

    fn events_batch(install: u8, ids: &[u128], ts: &str) -> IngestBatch {
        IngestBatch {
            project: "p".into(),
            tier: Tier::Anonymous,
            context: context(),
            received: day("2026-11-21"),
            data: BatchData::Events {
                install: InstallHash([install; 16]),
                events: ids
                    .iter()
                    .map(|id| Event {
                        id: Uuid::from_u128(*id),
                        name: "install".into(),
                        timestamp: ts.parse::<Timestamp>().unwrap(),
                        props: Props::new(),
                    })
                    .collect(),
                identity: None,
            },
        }
    }

    fn scalar(path: &Path, sql: &str) -> i64 {
        Connection::open(path)
            .unwrap()
            .query_row(sql, [], |r| r.get(0))
            .unwrap()
    }

    fn with_tier(mut batch: IngestBatch, tier: Tier, fields: Option<&str>) -> IngestBatch {
        batch.tier = tier;
        if let BatchData::Events { identity, .. } = &mut batch.data {
            *identity = fields.map(|email| [("email".to_owned(), email.to_owned())].into());
        }
        batch
    }

    #[tokio::test]
    async fn the_install_cache_never_hides_a_change_made_elsewhere() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let store = SqliteStore::open(&path, SqliteOptions::default()).unwrap();
        let ts = "2026-11-20T10:00:00Z";
        store.ingest(events_batch(1, &[1], ts)).await.unwrap();
        // Another connection removes the install's rows, as a `purge`
        // command run beside the server would.
        Connection::open(&path)
            .unwrap()
            .execute_batch("DELETE FROM installs; DELETE FROM install_weeks;")
            .unwrap();
        store.ingest(events_batch(1, &[2], ts)).await.unwrap();
        assert_eq!(scalar(&path, "SELECT COUNT(*) FROM installs"), 1);
        assert_eq!(scalar(&path, "SELECT COUNT(*) FROM install_weeks"), 1);

        // A delete through the store drops the cache entry too.
        store
            .delete_install("p", InstallHash([1; 16]))
            .await
            .unwrap();
        store.ingest(events_batch(1, &[3], ts)).await.unwrap();
        assert_eq!(scalar(&path, "SELECT COUNT(*) FROM installs"), 1);
        assert_eq!(scalar(&path, "SELECT COUNT(*) FROM install_weeks"), 1);

        // A later day widens the span even though the install is cached.
        store
            .ingest(events_batch(1, &[4], "2026-11-27T10:00:00Z"))
            .await
            .unwrap();
        assert_eq!(
            scalar(&path, "SELECT last_seen_day - first_seen_day FROM installs"),
            7
        );
        assert_eq!(scalar(&path, "SELECT COUNT(*) FROM install_weeks"), 2);
        store.close().await.unwrap();
    }

    #[tokio::test]
    async fn identities_follow_every_change_of_tier_and_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let store = SqliteStore::open(&path, SqliteOptions::default()).unwrap();
        let ts = "2026-11-20T10:00:00Z";
        let stored = |path: &Path| -> Option<String> {
            Connection::open(path)
                .unwrap()
                .query_row("SELECT fields FROM identities", [], |r| r.get(0))
                .optional()
                .unwrap()
        };
        let steps: [(u128, Tier, Option<&str>, Option<&str>); 6] = [
            (
                1,
                Tier::Full,
                Some("a@example.invalid"),
                Some("a@example.invalid"),
            ),
            (
                2,
                Tier::Full,
                Some("a@example.invalid"),
                Some("a@example.invalid"),
            ),
            (
                3,
                Tier::Full,
                Some("b@example.invalid"),
                Some("b@example.invalid"),
            ),
            (4, Tier::Anonymous, None, None),
            (5, Tier::Anonymous, None, None),
            (
                6,
                Tier::Full,
                Some("a@example.invalid"),
                Some("a@example.invalid"),
            ),
        ];
        for (id, tier, sent, expected) in steps {
            let batch = with_tier(events_batch(1, &[id], ts), tier, sent);
            store.ingest(batch).await.unwrap();
            let expected = expected.map(|e| format!(r#"{{"email":"{e}"}}"#));
            assert_eq!(stored(&path), expected, "after event {id}");
        }
        store.close().await.unwrap();
    }

    #[tokio::test]
    async fn migration_2_keeps_every_event_under_its_install() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        // A database at schema 1, with one event.
        let mut conn = Connection::open(&path).unwrap();
        let tx = conn.transaction().unwrap();
        tx.execute_batch(MIGRATIONS[0]).unwrap();
        tx.execute_batch(
            "CREATE TABLE schema_version (version INTEGER NOT NULL);
             INSERT INTO schema_version VALUES (1);
             INSERT INTO events (project, event_id, install, ts, name, props)
                 VALUES (1, x'01', x'02', 5, 3, 4);",
        )
        .unwrap();
        tx.commit().unwrap();
        drop(conn);
        let store = SqliteStore::open(&path, SqliteOptions::default()).unwrap();
        store.close().await.unwrap();
        assert_eq!(
            scalar(
                &path,
                "SELECT COUNT(*) FROM events WHERE project = 1 AND install = x'02'
                 AND event_id = x'01' AND ts = 5 AND name = 3 AND props = 4"
            ),
            1
        );
        assert_eq!(
            scalar(
                &path,
                "SELECT COUNT(*) FROM sqlite_schema WHERE name = 'events_by_install'"
            ),
            0
        );
    }

    /// (first day, week, installs).
    type Cell = (i64, i64, i64);

    /// The retention matrix as the join of installs and install_weeks gives
    /// it, and as `install_cohorts` keeps it.
    fn cohorts_both_ways(path: &Path) -> (Vec<Cell>, Vec<Cell>) {
        let conn = Connection::open(path).unwrap();
        let rows = |sql: &str| -> Vec<Cell> {
            conn.prepare(sql)
                .unwrap()
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap()
        };
        (
            rows(
                "SELECT i.first_seen_day, w.week, COUNT(*) FROM installs i
                 JOIN install_weeks w ON w.project = i.project AND w.install = i.install
                 GROUP BY 1, 2 ORDER BY 1, 2",
            ),
            rows(
                "SELECT first_day, week, installs FROM install_cohorts
                 WHERE installs > 0 ORDER BY 1, 2",
            ),
        )
    }

    #[tokio::test]
    async fn the_retention_matrix_always_equals_the_join_it_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let store = SqliteStore::open(&path, SqliteOptions::default()).unwrap();
        // A fixed pseudo-random sequence of ingests (days out of order, so
        // first-seen days move back), deletes and purges over 12 installs.
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let base = day("2026-08-01");
        let mut id = 0u128;
        for step in 0..400 {
            let install = next(12) as u8;
            match next(20) {
                0 => store
                    .delete_install("p", InstallHash([install; 16]))
                    .await
                    .unwrap(),
                1 => {
                    let today = base.add_days(40 + next(60) as i32);
                    let policy = RetentionPolicy {
                        default_days: 30,
                        per_project: Default::default(),
                    };
                    store.purge(&policy, today).await.unwrap();
                }
                _ => {
                    let days: Vec<String> = (0..1 + next(3))
                        .map(|_| format!("{}T12:00:00Z", base.add_days(next(90) as i32)))
                        .collect();
                    for ts in days {
                        id += 1;
                        store
                            .ingest(events_batch(install, &[id], &ts))
                            .await
                            .unwrap();
                    }
                }
            }
            let (joined, kept) = cohorts_both_ways(&path);
            assert_eq!(joined, kept, "after step {step}");
        }
        let (joined, _) = cohorts_both_ways(&path);
        assert!(joined.len() > 5, "the sequence exercised the matrix");
        store.close().await.unwrap();
    }

    #[tokio::test]
    async fn migration_6_fills_the_weekly_uses_ingest_would_have_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let store = SqliteStore::open(&path, SqliteOptions::default()).unwrap();
        let props = |pairs: &[(&str, telemetry_protocol::PropValue)]| -> Props {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect()
        };
        let token = |t: &str| telemetry_protocol::PropValue::Token(t.to_owned());
        let bool_ = telemetry_protocol::PropValue::Bool;
        let mut id = 0u128;
        for (install, ts, shell, ci) in [
            (1u8, "2026-11-16T10:00:00Z", "zsh", true),
            (1, "2026-11-17T10:00:00Z", "zsh", false),
            (1, "2026-11-24T10:00:00Z", "bash", false),
            (2, "2026-11-18T10:00:00Z", "zsh", true),
        ] {
            id += 1;
            let mut batch = events_batch(install, &[id], ts);
            if let BatchData::Events { events, .. } = &mut batch.data {
                events[0].name = "init".into();
                events[0].props = props(&[("shell", token(shell)), ("ci", bool_(ci))]);
            }
            store.ingest(batch).await.unwrap();
        }
        store.close().await.unwrap();
        let dump =
            |path: &Path| -> Vec<(i64, String, String, String, i64)> {
                let conn = Connection::open(path).unwrap();
                conn.prepare(
                "SELECT u.week, COALESCE(e.text, ''), COALESCE(p.text, ''), COALESCE(v.text, ''),
                        u.installs
                 FROM weekly_uses u LEFT JOIN strings e ON e.id = u.event
                 LEFT JOIN strings p ON p.id = u.prop LEFT JOIN strings v ON v.id = u.value
                 ORDER BY 1, 2, 3, 4",
            )
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
            };
        let kept = dump(&path);
        let week = day_num(day("2026-11-16"));
        assert!(kept.contains(&(week, String::new(), String::new(), String::new(), 2)));
        assert!(kept.contains(&(week, "init".into(), "shell".into(), "zsh".into(), 2)));
        assert!(kept.contains(&(week, "init".into(), "ci".into(), "false".into(), 1)));
        // The same database as schema 5 left it, migrated again.
        Connection::open(&path)
            .unwrap()
            .execute_batch(
                "DROP TABLE install_uses; DROP TABLE weekly_uses; DROP TABLE daily_uploads;
                 UPDATE schema_version SET version = 5;",
            )
            .unwrap();
        SqliteStore::open(&path, SqliteOptions::default())
            .unwrap()
            .close()
            .await
            .unwrap();
        assert_eq!(dump(&path), kept, "the backfill equals what ingest kept");
    }

    #[tokio::test]
    async fn migrations_are_recorded_and_rerunning_is_a_no_op() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let store = SqliteStore::open(&path, SqliteOptions::default()).unwrap();
        store.close().await.unwrap();
        let store = SqliteStore::open(&path, SqliteOptions::default()).unwrap();
        store.close().await.unwrap();
        let conn = Connection::open(&path).unwrap();
        let version: i64 = conn
            .query_row("SELECT version FROM schema_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[tokio::test]
    async fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE schema_version (version INTEGER NOT NULL); INSERT INTO schema_version VALUES (999);",
        )
        .unwrap();
        drop(conn);
        assert!(matches!(
            SqliteStore::open(&path, SqliteOptions::default()),
            Err(StoreError::SchemaTooNew { found: 999, .. })
        ));
    }

    #[tokio::test]
    async fn event_replays_and_report_replays_count_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db"), SqliteOptions::default()).unwrap();
        let first = store
            .ingest(events_batch(1, &[1, 2], "2026-11-20T10:00:00Z"))
            .await
            .unwrap();
        assert_eq!((first.accepted, first.duplicates), (2, 0));
        let again = store
            .ingest(events_batch(1, &[2, 3], "2026-11-20T10:00:00Z"))
            .await
            .unwrap();
        assert_eq!((again.accepted, again.duplicates), (1, 1));

        let report = IngestBatch {
            project: "p".into(),
            tier: Tier::Aggregate,
            context: context(),
            received: day("2026-11-21"),
            data: BatchData::Aggregate {
                report_id: Uuid::from_u128(9),
                counters: vec![Counter {
                    day: day("2026-11-20"),
                    event: "install".into(),
                    props: Props::new(),
                    count: 5,
                }],
            },
        };
        assert_eq!(store.ingest(report.clone()).await.unwrap().accepted, 1);
        assert_eq!(store.ingest(report).await.unwrap().duplicates, 1);

        let input = store
            .stats_input("p", day("2026-11-20"), day("2026-11-20"))
            .await
            .unwrap();
        assert_eq!(input.installs_all_time, 3 + 5);
        let by_tier = |t| -> u64 {
            input
                .counters
                .iter()
                .filter(|r| r.tier == t)
                .map(|r| r.count)
                .sum()
        };
        assert_eq!(by_tier(Tier::Anonymous), 3);
        assert_eq!(by_tier(Tier::Aggregate), 5);
        store.close().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_writes_are_committed_together() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let store = SqliteStore::open(
            &path,
            SqliteOptions {
                queue_capacity: 64,
                max_batch: 256,
            },
        )
        .unwrap();
        // Hold the write lock so the writer stalls on its first batch while
        // the rest queue up; then everything queued must share one commit.
        let blocker = Connection::open(&path).unwrap();
        blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
        let mut writes: Vec<_> = (0..50u128)
            .map(|i| store.ingest(events_batch(1, &[i], "2026-11-20T10:00:00Z")))
            .collect();
        // Polling each write once enqueues it; none can finish while the lock is held.
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        for write in &mut writes {
            assert!(write.as_mut().poll(&mut cx).is_pending());
        }
        blocker.execute_batch("ROLLBACK").unwrap();
        for write in writes {
            assert_eq!(write.await.unwrap().accepted, 1);
        }
        assert!(store.status().commits <= 2, "{:?}", store.status());
        store.close().await.unwrap();
        let n: i64 = blocker
            .query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 50);
    }

    #[tokio::test]
    async fn purge_drops_old_raw_rows_and_keeps_counters() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db"), SqliteOptions::default()).unwrap();
        store
            .ingest(events_batch(1, &[1], "2026-01-01T10:00:00Z"))
            .await
            .unwrap();
        store
            .ingest(events_batch(2, &[2], "2026-11-20T10:00:00Z"))
            .await
            .unwrap();
        let policy = RetentionPolicy {
            default_days: 30,
            per_project: Default::default(),
        };
        let purged = store.purge(&policy, day("2026-11-21")).await.unwrap();
        assert_eq!(purged.events, 1);
        assert_eq!(purged.installs, 1);
        assert_eq!(purged.install_weeks, 1);
        let input = store
            .stats_input("p", day("2026-01-01"), day("2026-11-21"))
            .await
            .unwrap();
        assert_eq!(input.installs_all_time, 2, "counters survive the purge");
        store.close().await.unwrap();
    }

    #[test]
    fn the_writer_string_cache_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let conn = writer_connection(&dir.path().join("t.db")).unwrap();
        let mut writer = Writer::new(conn, Arc::default());
        for i in 0..(CACHED_STRINGS * 3 / 2) {
            let text = format!("value-{i}");
            let id = writer.string_id(&text).unwrap();
            assert_eq!(writer.string_id(&text).unwrap(), id);
            writer.project_id(&text, true).unwrap();
        }
        assert!(
            writer.strings.len() <= CACHED_STRINGS,
            "{}",
            writer.strings.len()
        );
        assert!(writer.projects.len() <= CACHED_STRINGS);
        // Strings cached before the cache started over keep their ids.
        assert_eq!(writer.string_id("value-0").unwrap(), 1);
    }

    #[tokio::test]
    async fn backup_copies_a_consistent_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let store = SqliteStore::open(&path, SqliteOptions::default()).unwrap();
        store
            .ingest(events_batch(1, &[1, 2, 3], "2026-11-20T10:00:00Z"))
            .await
            .unwrap();
        let copy = dir.path().join("copy.db");
        backup(&path, &copy).unwrap();
        store.close().await.unwrap();
        let conn = Connection::open(&copy).unwrap();
        let n: i64 = conn
            .query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 3);
    }
}
