//! The PostgreSQL backend, so that several collector processes can share one
//! database behind a load balancer.
//!
//! Each collector keeps the same shape as the SQLite backend: one writer
//! connection fed by a bounded queue, which drains every queued ingest into
//! one transaction (group commit), and answers each request only after
//! `COMMIT` returned. `synchronous_commit` is forced on for the writer's
//! session, so a 2xx means the commit record reached the server's disk, whatever
//! the server's default.
//!
//! Several collectors write at once, so the write path is built to be safe
//! under concurrency rather than relying on a single writer:
//! - every row is written with `INSERT ... ON CONFLICT`, and counters are only
//!   incremented for the event and report ids the `RETURNING` clause says were
//!   newly inserted, so a retry sent to another collector never counts twice;
//! - a group transaction writes table by table, each table's rows sorted by key,
//!   so two collectors always take row locks in the same order and cannot
//!   deadlock; a deadlock or serialization failure is retried anyway;
//! - each table gets one multi-row statement per transaction (`unnest` over
//!   arrays), so a group of requests costs a handful of round trips;
//! - the retention matrix (`install_cohorts`) changes only with the rows it
//!   counts, under the install's row lock (see `note_activity`), so it stays
//!   equal to the join of `installs` with `install_weeks` whichever
//!   collectors ingest, delete or purge at once.
//!
//! Strings are stored as text rather than through a dictionary table: a shared
//! dictionary would be one more contended table for every writer.
//!
//! Reads go through a few read connections of their own (see `Reader`), so
//! that the independent queries of one stats read run side by side on the
//! server instead of one after another on a single session.
//!
//! Every collector on one database must hash install ids with the same key.
//! When the config names a `pseudonym_key_file`, a fingerprint of the key (a
//! keyed hash of a fixed message, which reveals nothing about the key) is kept
//! in the database and a collector with a different key refuses to start.
//!
//! All connections live on a small runtime of their own on a dedicated thread,
//! so the store works the same from synchronous code (the CLI) and from any
//! caller's runtime, like the SQLite writer thread.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use telemetry_protocol::{Day, Tier};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls, Statement};

use super::queue::{self, CommitTiming, Done, Job, Msg, Op, Reply};
use super::{
    BatchData, CohortRow, CounterRow, IngestBatch, IngestOutcome, InstallHash, PurgeOutcome,
    RefusalRow, ReleasedCell, RetentionPolicy, Skew, StatsInput, Store, StoreError, StoreFuture,
    StoreStatus,
};
use crate::secrets::InstallHasher;

/// Days a report id is remembered; the same as SQLite's.
pub const REPORT_ID_DAYS: i32 = super::sqlite::REPORT_ID_DAYS;

const MILLIS_PER_DAY: i64 = 86_400_000;

/// The advisory lock every migration takes, so that collectors starting at the
/// same moment apply each migration exactly once. The value spells "telemetr".
const MIGRATION_LOCK: i64 = 0x7465_6c65_6d65_7472;

/// The name under which the pseudonym key's fingerprint is kept in `deployment`.
const KEY_FINGERPRINT: &str = "pseudonym_key_fingerprint";

/// How often a failed transaction is retried when PostgreSQL reports a
/// deadlock or a serialization failure, which a retry resolves.
const RETRIES: u32 = 5;

/// The versioned migrations, applied in order at start-up. Never edit a
/// released entry; append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: the initial schema, the same tables as SQLite's with text in place of
    // dictionary ids.
    r#"
    CREATE TABLE projects (
        name TEXT PRIMARY KEY
    );
    CREATE TABLE daily_counters (
        project TEXT NOT NULL,
        day     INTEGER NOT NULL,
        event   TEXT NOT NULL,
        props   TEXT NOT NULL,
        version TEXT NOT NULL,
        os      TEXT NOT NULL,
        arch    TEXT NOT NULL,
        tier    SMALLINT NOT NULL,
        count   BIGINT NOT NULL,
        PRIMARY KEY (project, day, event, props, version, os, arch, tier)
    );
    CREATE TABLE events (
        project  TEXT NOT NULL,
        event_id BYTEA NOT NULL,
        install  BYTEA NOT NULL,
        ts       BIGINT NOT NULL,
        name     TEXT NOT NULL,
        props    TEXT NOT NULL,
        PRIMARY KEY (project, event_id)
    );
    CREATE INDEX events_by_install ON events (project, install);
    CREATE INDEX events_by_time ON events (project, ts);
    CREATE TABLE installs (
        project        TEXT NOT NULL,
        install        BYTEA NOT NULL,
        first_seen_day INTEGER NOT NULL,
        last_seen_day  INTEGER NOT NULL,
        PRIMARY KEY (project, install)
    );
    CREATE TABLE install_weeks (
        project TEXT NOT NULL,
        install BYTEA NOT NULL,
        week    INTEGER NOT NULL,
        PRIMARY KEY (project, install, week)
    );
    CREATE TABLE identities (
        project TEXT NOT NULL,
        install BYTEA NOT NULL,
        fields  TEXT NOT NULL,
        PRIMARY KEY (project, install)
    );
    CREATE TABLE seen_reports (
        project   TEXT NOT NULL,
        report_id BYTEA NOT NULL,
        day       INTEGER NOT NULL,
        PRIMARY KEY (project, report_id)
    );
    CREATE INDEX seen_reports_by_day ON seen_reports (day);
    CREATE TABLE deployment (
        name  TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    "#,
    // 2: events keyed by (project, install, event_id), as in SQLite's
    // migration 2: dedup is per install, and deletes use the primary key.
    r#"
    ALTER TABLE events DROP CONSTRAINT events_pkey;
    ALTER TABLE events ADD PRIMARY KEY (project, install, event_id);
    DROP INDEX events_by_install;
    "#,
    // 3: what ingest refused, downgraded or ignored, as SQLite's migration 4.
    r#"
    CREATE TABLE refusals (
        project TEXT NOT NULL,
        day     INTEGER NOT NULL,
        version TEXT NOT NULL,
        reason  TEXT NOT NULL,
        detail  TEXT NOT NULL,
        count   BIGINT NOT NULL,
        PRIMARY KEY (project, day, version, reason, detail)
    );
    "#,
    // 4: the public page's differentially private releases, as in SQLite's
    // migration 5: each cell is drawn once and kept.
    r#"
    CREATE TABLE public_releases (
        project     TEXT NOT NULL,
        period      INTEGER NOT NULL,
        statistic   TEXT NOT NULL,
        key         TEXT NOT NULL,
        value       BIGINT NOT NULL,
        epsilon     DOUBLE PRECISION NOT NULL,
        released_on INTEGER NOT NULL,
        PRIMARY KEY (project, period, statistic, key)
    );
    "#,
    // 5: distinct installs by use, and uploads that were retries, as in
    // SQLite's migration 6; `''` stands for SQLite's id 0 (the event itself
    // for `prop` and `value`, "sent anything" for `event`).
    r#"
    CREATE TABLE install_uses (
        project TEXT NOT NULL,
        week    INTEGER NOT NULL,
        install BYTEA NOT NULL,
        event   TEXT NOT NULL,
        prop    TEXT NOT NULL,
        value   TEXT NOT NULL,
        PRIMARY KEY (project, week, install, event, prop, value)
    );
    CREATE TABLE weekly_uses (
        project  TEXT NOT NULL,
        event    TEXT NOT NULL,
        prop     TEXT NOT NULL,
        week     INTEGER NOT NULL,
        value    TEXT NOT NULL,
        installs BIGINT NOT NULL,
        PRIMARY KEY (project, event, prop, week, value)
    );
    CREATE TABLE daily_uploads (
        project TEXT NOT NULL,
        day     INTEGER NOT NULL,
        uploads BIGINT NOT NULL,
        retries BIGINT NOT NULL,
        replayed BIGINT NOT NULL,
        PRIMARY KEY (project, day)
    );
    INSERT INTO install_uses (project, week, install, event, prop, value)
        SELECT DISTINCT project, (ts / 86400000)::int - (((ts / 86400000)::int + 3) % 7),
               install, u.event, '', ''
        FROM events, LATERAL (VALUES (''), (name)) AS u(event)
        ON CONFLICT DO NOTHING;
    INSERT INTO install_uses (project, week, install, event, prop, value)
        SELECT DISTINCT e.project, (e.ts / 86400000)::int - (((e.ts / 86400000)::int + 3) % 7),
               e.install, e.name, j.key, j.value
        FROM events e, jsonb_each_text(e.props::jsonb) j
        ON CONFLICT DO NOTHING;
    INSERT INTO weekly_uses (project, event, prop, week, value, installs)
        SELECT project, event, prop, week, value, COUNT(*) FROM install_uses
        GROUP BY project, event, prop, week, value;
    "#,
    // 6: the retention matrix, as in SQLite's migration 3: how many installs
    // first seen on `first_day` were active in `week`, kept at ingest,
    // deletion and purge (see `note_activity`), so a stats read costs a few
    // hundred rows instead of a join of every install with its weeks. The
    // two tables it is filled from are locked against the writes of a
    // collector that has not been upgraded yet, so the backfill is exact.
    r#"
    CREATE TABLE install_cohorts (
        project   TEXT NOT NULL,
        first_day INTEGER NOT NULL,
        week      INTEGER NOT NULL,
        installs  BIGINT NOT NULL,
        PRIMARY KEY (project, first_day, week)
    );
    LOCK TABLE installs, install_weeks IN SHARE ROW EXCLUSIVE MODE;
    -- A week row without its install counts for nothing, but a new row for
    -- that install would bring it back; it goes first.
    DELETE FROM install_weeks w WHERE NOT EXISTS (
        SELECT 1 FROM installs i WHERE i.project = w.project AND i.install = w.install);
    INSERT INTO install_cohorts (project, first_day, week, installs)
        SELECT i.project, i.first_seen_day, w.week, COUNT(*)
        FROM installs i
        JOIN install_weeks w ON w.project = i.project AND w.install = i.install
        GROUP BY i.project, i.first_seen_day, w.week;
    "#,
    // 7: the all-time install count of every stats read (`INSTALLS_ALL_TIME`)
    // scanned every counter cell of the project, since the primary key
    // starts with the day: 7 ms of a 52 ms stats read at 10M events. This
    // partial index holds only the `install` cells, one per day and
    // version, OS and arch, so it costs ingest nothing for other events.
    // It leaves `count` out, so that the counter upserts stay HOT updates.
    // `IF NOT EXISTS`, so that a schema version set back by hand (as after
    // restoring a dump over newer tables) migrates again without failing.
    r#"
    CREATE INDEX IF NOT EXISTS daily_counters_installs ON daily_counters (project)
        WHERE event = 'install';
    "#,
];

/// The class of the per-project advisory lock (`pg_advisory_xact_lock(class,
/// hashtext(project))`) that a purge holds, and an ingest takes before it
/// moves an install to an earlier cohort; see `note_activity`.
const COHORT_LOCK: i32 = 0x636f_6872; // "cohr"

/// The newest schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Whether `db` names a PostgreSQL database rather than a SQLite file.
pub fn is_url(db: &str) -> bool {
    db.starts_with("postgres://") || db.starts_with("postgresql://")
}

/// The fingerprint of a pseudonym key: the keyed hash of a fixed message no
/// install id can produce, in hex. Equal keys give equal fingerprints; the
/// fingerprint reveals nothing about the key.
pub fn key_fingerprint(hasher: &InstallHasher) -> String {
    let hash = hasher.hash("\0key-fingerprint", &telemetry_protocol::Uuid::nil());
    hash.0.iter().map(|b| format!("{b:02x}")).collect()
}

/// Tuning and checks of a [`PostgresStore`].
#[derive(Debug, Clone, Default)]
pub struct PostgresOptions {
    /// Jobs that may wait for the writer.
    pub queue_capacity: usize,
    /// Most jobs committed in one transaction.
    pub max_batch: usize,
    /// The fingerprint ([`key_fingerprint`]) of the pseudonym key this
    /// collector uses. Recorded by the first collector; any other must match.
    pub key_fingerprint: Option<String>,
}

/// A PostgreSQL-backed [`Store`].
pub struct PostgresStore {
    /// The bounded queue into the writer task.
    jobs: mpsc::Sender<Msg>,
    /// The store's own runtime, which owns every connection.
    runtime: tokio::runtime::Handle,
    /// The connections stats read through, each replaced when it breaks.
    reader: Arc<Reader>,
    /// Commit counters the writer updates.
    timing: Arc<CommitTiming>,
    /// The database size in bytes, refreshed in the background; `u64::MAX` until known.
    size_bytes: Arc<AtomicU64>,
    /// The thread running the store's runtime, joined on close.
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// A database error as text: SQLSTATE and message for server errors, never the URL.
fn pg_err(e: &tokio_postgres::Error) -> StoreError {
    match e.as_db_error() {
        // The server's disk is full or failed a write: the transaction was
        // rolled back and succeeds once space is freed (503, not 500).
        Some(db) if *db.code() == SqlState::DISK_FULL || *db.code() == SqlState::IO_ERROR => {
            StoreError::Unavailable(format!("{} ({})", db.message(), db.code().code()))
        }
        Some(db) => StoreError::Database(format!("{} ({})", db.message(), db.code().code())),
        // The server cannot be reached (refused, reset, closed): like a full
        // disk, nothing was written and a later retry succeeds, so the client
        // keeps its data (503 with Retry-After, not 500).
        None if e.is_closed() || caused_by_io(e) => {
            StoreError::Unavailable(format!("the database cannot be reached: {e}"))
        }
        None => StoreError::Database(e.to_string()),
    }
}

/// Whether an I/O error is among the causes of `e`.
fn caused_by_io(e: &tokio_postgres::Error) -> bool {
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        if c.is::<std::io::Error>() {
            return true;
        }
        cause = c.source();
    }
    false
}

/// Errors a retry of the whole transaction resolves.
fn retryable(e: &tokio_postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE
    )
}

/// Parses a URL without echoing it, since it may hold a password.
fn parse_url(url: &str) -> Result<tokio_postgres::Config, StoreError> {
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|e| StoreError::Database(format!("invalid PostgreSQL URL: {e}")))?;
    // Without a timeout, a blackholed server would hang start-up for minutes.
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    if config.get_application_name().is_none() {
        config.application_name("telemetry-collector");
    }
    Ok(config)
}

/// Connects and spawns the connection's driver on the current runtime.
async fn connect(config: &tokio_postgres::Config) -> Result<Client, StoreError> {
    let (client, connection) = config.connect(NoTls).await.map_err(|e| pg_err(&e))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "PostgreSQL connection closed");
        }
    });
    Ok(client)
}

/// Brings the schema up to [`SCHEMA_VERSION`] and checks the key fingerprint,
/// all inside one transaction holding the collector's fixed advisory lock
/// (`pg_advisory_xact_lock`), so that collectors starting together wait for
/// each other instead of racing.
pub async fn migrate(client: &mut Client, fingerprint: Option<&str>) -> Result<(), StoreError> {
    let e = |e: tokio_postgres::Error| pg_err(&e);
    let tx = client.transaction().await.map_err(e)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(e)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
        .await
        .map_err(e)?;
    let current: i64 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0)::BIGINT FROM schema_version",
            &[],
        )
        .await
        .map_err(e)?
        .get(0);
    if current > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found: current,
            supported: SCHEMA_VERSION,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.batch_execute(sql).await.map_err(e)?;
        tx.execute("DELETE FROM schema_version", &[])
            .await
            .map_err(e)?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES ($1)",
            &[&(i as i64 + 1)],
        )
        .await
        .map_err(e)?;
    }
    if let Some(fingerprint) = fingerprint {
        let stored: Option<String> = tx
            .query_opt(
                "SELECT value FROM deployment WHERE name = $1",
                &[&KEY_FINGERPRINT],
            )
            .await
            .map_err(e)?
            .map(|r| r.get(0));
        match stored {
            Some(stored) if stored != fingerprint => {
                return Err(StoreError::Database(
                    "this database was written with a different pseudonym key; every collector \
                     sharing a database must read the same pseudonym_key_file, or install ids \
                     would be split"
                        .to_owned(),
                ));
            }
            Some(_) => {}
            None => {
                tx.execute(
                    "INSERT INTO deployment (name, value) VALUES ($1, $2)",
                    &[&KEY_FINGERPRINT, &fingerprint],
                )
                .await
                .map_err(e)?;
            }
        }
    }
    tx.commit().await.map_err(e)
}

/// Opens the database at `url` on the current runtime, runs the migrations and
/// returns the connection; used by [`PostgresStore::open`] and by the
/// SQLite-to-PostgreSQL migration.
pub async fn connect_and_migrate(
    url: &str,
    fingerprint: Option<&str>,
) -> Result<Client, StoreError> {
    let config = parse_url(url)?;
    let mut client = connect(&config).await?;
    migrate(&mut client, fingerprint).await?;
    Ok(client)
}

impl PostgresStore {
    /// Connects to `url`, runs the migrations (waiting for any other collector
    /// doing the same) and starts the writer. Blocks until the database is
    /// ready; callable from inside or outside a Tokio runtime.
    ///
    /// The URL may carry `?options=-csearch_path%3D<schema>` to keep the
    /// tables in a schema of their own.
    pub fn open(url: &str, options: PostgresOptions) -> Result<PostgresStore, StoreError> {
        let config = parse_url(url)?;
        let (jobs, rx) = mpsc::channel(options.queue_capacity.max(1));
        let max_batch = options.max_batch.max(1);
        let timing = Arc::new(CommitTiming::default());
        let size_bytes = Arc::new(AtomicU64::new(u64::MAX));
        let (ready, wait_ready) = std::sync::mpsc::channel();
        let writer_timing = timing.clone();
        let writer_size = size_bytes.clone();
        let thread = std::thread::Builder::new()
            .name("postgres-store".to_owned())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = ready.send(Err(StoreError::Database(format!(
                            "starting the store runtime: {e}"
                        ))));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let setup = async {
                        let mut writer = connect(&config).await?;
                        migrate(&mut writer, options.key_fingerprint.as_deref()).await?;
                        writer
                            .batch_execute("SET synchronous_commit = on")
                            .await
                            .map_err(|e| pg_err(&e))?;
                        let stmts = Statements::prepare(&writer).await?;
                        let reader = connect(&config).await?;
                        Ok::<_, StoreError>((
                            WriterConn {
                                client: writer,
                                stmts,
                            },
                            reader,
                        ))
                    };
                    let (conn, reader) = match setup.await {
                        Ok(x) => x,
                        Err(e) => {
                            let _ = ready.send(Err(e));
                            return;
                        }
                    };
                    let reader = Arc::new(Reader::new(config.clone(), reader));
                    let sizes = tokio::spawn(refresh_size(reader.clone(), writer_size));
                    let _ = ready.send(Ok((tokio::runtime::Handle::current(), reader)));
                    let writer = Writer {
                        config,
                        conn: Some(conn),
                        known_projects: HashSet::new(),
                        timing: writer_timing,
                    };
                    writer.run(rx, max_batch).await;
                    sizes.abort();
                });
            })
            .map_err(|e| StoreError::Database(format!("starting the store thread: {e}")))?;
        let (runtime, reader) = match wait_ready.recv() {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(StoreError::Closed);
            }
        };
        Ok(PostgresStore {
            jobs,
            runtime,
            reader,
            timing,
            size_bytes,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Runs `f` with a read connection of its own on the store's runtime,
    /// started at once (before the returned future is polled), so reads
    /// issued together run side by side.
    fn read<T, F, Fut>(&self, f: F) -> StoreFuture<'_, T>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Client>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T, tokio_postgres::Error>> + Send + 'static,
    {
        let reader = self.reader.clone();
        let task = self.runtime.spawn(async move {
            let lent = reader.client().await?;
            let result = f(lent.client.clone()).await.map_err(|e| pg_err(&e));
            reader.give_back(lent);
            result
        });
        Box::pin(async move { task.await.map_err(|_| StoreError::Closed)? })
    }
}

/// The read connections: at most [`READERS`] open at once, each running one
/// query at a time, opened on demand and dropped if the server closed them.
///
/// One connection would pipeline concurrent reads, but the server runs the
/// queries of one session one after another; the stats of a window are a
/// few independent queries (the counters alone take most of the time), so
/// running them on connections of their own lets the server use more than
/// one core for them.
struct Reader {
    config: tokio_postgres::Config,
    /// Connections not in use.
    idle: Mutex<Vec<Arc<Client>>>,
    /// One permit per connection that may be in use at once.
    permits: Arc<tokio::sync::Semaphore>,
}

/// Most read connections one collector opens (the writer has its own). The
/// stats path runs seven queries, three of which take nearly all of its time.
pub const READERS: usize = 4;

/// A read connection lent by [`Reader::client`]; [`Reader::give_back`]
/// returns it to the idle list.
struct Lent {
    client: Arc<Client>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Reader {
    fn new(config: tokio_postgres::Config, first: Client) -> Reader {
        Reader {
            config,
            idle: Mutex::new(vec![Arc::new(first)]),
            permits: Arc::new(tokio::sync::Semaphore::new(READERS)),
        }
    }

    /// An idle connection, or a new one when none is idle and fewer than
    /// [`READERS`] are in use; waits for one otherwise.
    async fn client(&self) -> Result<Lent, StoreError> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Closed)?;
        loop {
            let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            match idle {
                Some(client) if client.is_closed() => continue,
                Some(client) => {
                    return Ok(Lent {
                        client,
                        _permit: permit,
                    });
                }
                None => break,
            }
        }
        Ok(Lent {
            client: Arc::new(connect(&self.config).await?),
            _permit: permit,
        })
    }

    /// Keeps `lent` for the next read unless the server closed it.
    fn give_back(&self, lent: Lent) {
        if !lent.client.is_closed() {
            self.idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(lent.client);
        }
    }
}

/// Keeps the database size for `/metrics` fresh without a query per scrape.
async fn refresh_size(reader: Arc<Reader>, size: Arc<AtomicU64>) {
    loop {
        if let Ok(lent) = reader.client().await {
            if let Ok(row) = lent
                .client
                .query_one("SELECT pg_database_size(current_database())", &[])
                .await
            {
                size.store(row.get::<_, i64>(0).max(0) as u64, Ordering::Relaxed);
            }
            reader.give_back(lent);
        }
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
}

fn tier_code(tier: Tier) -> i16 {
    match tier {
        Tier::Off => 0,
        Tier::Aggregate => 1,
        Tier::Anonymous => 2,
        Tier::Full => 3,
    }
}

fn tier_from_code(code: i16) -> Tier {
    match code {
        1 => Tier::Aggregate,
        2 => Tier::Anonymous,
        3 => Tier::Full,
        _ => Tier::Off,
    }
}

/// Props in their canonical JSON form, exactly as SQLite stores them.
fn props_json(props: &telemetry_protocol::Props) -> String {
    serde_json::to_string(props).unwrap_or_else(|_| "{}".to_owned())
}

/// The writer's statements, prepared once per connection.
struct Statements {
    projects: Statement,
    reports: Statement,
    events: Statement,
    counters: Statement,
    installs: Statement,
    weeks: Statement,
    cohorts: Statement,
    identities: Statement,
    forget_identities: Statement,
    refusals: Statement,
}

impl Statements {
    async fn prepare(client: &Client) -> Result<Statements, StoreError> {
        let p =
            |sql: &'static str| async move { client.prepare(sql).await.map_err(|e| pg_err(&e)) };
        Ok(Statements {
            projects: p("INSERT INTO projects (name) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING")
                .await?,
            reports: p("INSERT INTO seen_reports (project, report_id, day)
                 SELECT * FROM unnest($1::text[], $2::bytea[], $3::int4[])
                 ON CONFLICT DO NOTHING RETURNING project, report_id")
            .await?,
            events: p("INSERT INTO events (project, event_id, install, ts, name, props)
                 SELECT * FROM unnest($1::text[], $2::bytea[], $3::bytea[], $4::int8[], $5::text[], $6::text[])
                 ON CONFLICT DO NOTHING RETURNING project, install, event_id")
            .await?,
            counters: p("INSERT INTO daily_counters (project, day, event, props, version, os, arch, tier, count)
                 SELECT * FROM unnest($1::text[], $2::int4[], $3::text[], $4::text[], $5::text[],
                                      $6::text[], $7::text[], $8::int2[], $9::int8[])
                 ON CONFLICT (project, day, event, props, version, os, arch, tier)
                 DO UPDATE SET count = daily_counters.count + excluded.count")
            .await?,
            // The first-seen day is left alone and returned as stored (or
            // as inserted): `note_activity` moves an install to an earlier
            // cohort itself, knowing where it was.
            installs: p("INSERT INTO installs (project, install, first_seen_day, last_seen_day)
                 SELECT * FROM unnest($1::text[], $2::bytea[], $3::int4[], $4::int4[])
                 ON CONFLICT (project, install) DO UPDATE SET
                   last_seen_day = GREATEST(installs.last_seen_day, excluded.last_seen_day)
                 RETURNING project, install, first_seen_day")
            .await?,
            weeks: p("INSERT INTO install_weeks (project, install, week)
                 SELECT * FROM unnest($1::text[], $2::bytea[], $3::int4[])
                 ON CONFLICT DO NOTHING RETURNING project, install, week")
            .await?,
            cohorts: p("INSERT INTO install_cohorts (project, first_day, week, installs)
                 SELECT * FROM unnest($1::text[], $2::int4[], $3::int4[], $4::int8[])
                 ON CONFLICT (project, first_day, week)
                 DO UPDATE SET installs = install_cohorts.installs + excluded.installs")
            .await?,
            identities: p("INSERT INTO identities (project, install, fields)
                 SELECT * FROM unnest($1::text[], $2::bytea[], $3::text[])
                 ON CONFLICT (project, install) DO UPDATE SET fields = excluded.fields")
            .await?,
            forget_identities: p("DELETE FROM identities i
                 USING unnest($1::text[], $2::bytea[]) AS d(project, install)
                 WHERE i.project = d.project AND i.install = d.install")
            .await?,
            refusals: p("INSERT INTO refusals (project, day, version, reason, detail, count)
                 SELECT * FROM unnest($1::text[], $2::int4[], $3::text[], $4::text[], $5::text[], $6::int8[])
                 ON CONFLICT (project, day, version, reason, detail)
                 DO UPDATE SET count = refusals.count + excluded.count")
            .await?,
        })
    }
}

struct WriterConn {
    client: Client,
    stmts: Statements,
}

/// The writer task's state. Only this task writes, for this collector.
struct Writer {
    config: tokio_postgres::Config,
    /// `None` after the connection broke; reconnected before the next job.
    conn: Option<WriterConn>,
    /// Project names known to be committed, so their insert can be skipped.
    known_projects: HashSet<String>,
    timing: Arc<CommitTiming>,
}

/// A key of `daily_counters`, in table order.
type CounterKey<'a> = (
    &'a str,
    i32,
    &'a str,
    String,
    &'a str,
    &'a str,
    &'a str,
    i16,
);

/// What the last job of a group said about an install's identity.
enum IdentityChange {
    /// Store these fields (JSON).
    Set(String),
    /// Remove any stored identity.
    Forget,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Msg>, max_batch: usize) {
        let mut shutdown: Option<oneshot::Sender<()>> = None;
        while let Some(first) = rx.recv().await {
            let mut jobs = Vec::new();
            let mut push = |msg: Msg, jobs: &mut Vec<Job>| match msg {
                Msg::Job(job) => jobs.push(*job),
                Msg::Shutdown(done) => shutdown = Some(done),
            };
            push(first, &mut jobs);
            // Group commit: take whatever else is already waiting.
            while jobs.len() < max_batch {
                match rx.try_recv() {
                    Ok(msg) => push(msg, &mut jobs),
                    Err(_) => break,
                }
            }
            // Consecutive ingests share a transaction; a delete or purge runs
            // on its own, after the ingests queued before it, keeping order.
            let mut group: Vec<(IngestBatch, Skew, Reply)> = Vec::new();
            for job in jobs {
                match job.op {
                    Op::Ingest(batch, skew) => group.push((batch, skew, job.reply)),
                    op => {
                        self.ingest_group(std::mem::take(&mut group)).await;
                        let result = self.single(&op).await;
                        let _ = job.reply.send(result);
                    }
                }
            }
            self.ingest_group(group).await;
            if shutdown.is_some() {
                // Refuse new writes, but finish those already queued.
                rx.close();
            }
        }
        if let Some(done) = shutdown {
            let _ = done.send(());
        }
    }

    async fn connection(&mut self) -> Result<&mut WriterConn, StoreError> {
        if self.conn.as_ref().is_none_or(|c| c.client.is_closed()) {
            self.conn = None;
            let client = connect(&self.config).await?;
            client
                .batch_execute("SET synchronous_commit = on")
                .await
                .map_err(|e| pg_err(&e))?;
            let stmts = Statements::prepare(&client).await?;
            self.conn = Some(WriterConn { client, stmts });
        }
        Ok(self.conn.as_mut().expect("just connected"))
    }

    fn record_commit(&self, started: Instant) {
        let nanos = started.elapsed().as_nanos() as u64;
        self.timing.commits.fetch_add(1, Ordering::Relaxed);
        self.timing.nanos_sum.fetch_add(nanos, Ordering::Relaxed);
        self.timing.nanos_max.fetch_max(nanos, Ordering::Relaxed);
    }

    /// Commits a group of ingests together. If the group fails for a reason
    /// a retry does not fix, each ingest is tried alone, so one bad request
    /// cannot fail the others queued with it.
    async fn ingest_group(&mut self, group: Vec<(IngestBatch, Skew, Reply)>) {
        if group.is_empty() {
            return;
        }
        let (batches, replies): (Vec<(IngestBatch, Skew)>, Vec<Reply>) =
            group.into_iter().map(|(b, s, r)| ((b, s), r)).unzip();
        let refs: Vec<(&IngestBatch, &Skew)> = batches.iter().map(|(b, s)| (b, s)).collect();
        match self.commit_ingests(&refs).await {
            Ok(outcomes) => {
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(Done::Ingest(outcome)));
                }
            }
            Err(e) if refs.len() == 1 => {
                tracing::error!(error = %e, "write transaction failed; nothing from it was stored");
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
            Err(_) => {
                for (batch, reply) in refs.into_iter().zip(replies) {
                    let result = self.commit_ingests(&[batch]).await;
                    if let Err(e) = &result {
                        tracing::error!(error = %e, "write transaction failed; nothing from it was stored");
                    }
                    let _ = reply.send(result.map(|mut o| Done::Ingest(o.remove(0))));
                }
            }
        }
    }

    async fn commit_ingests(
        &mut self,
        batches: &[(&IngestBatch, &Skew)],
    ) -> Result<Vec<IngestOutcome>, StoreError> {
        let mut attempt = 0;
        loop {
            let started = Instant::now();
            let known = std::mem::take(&mut self.known_projects);
            let conn = match self.connection().await {
                Ok(c) => c,
                Err(e) => {
                    self.known_projects = known;
                    return Err(e);
                }
            };
            let result = ingest_tx(conn, batches, &known).await;
            self.known_projects = known;
            match result {
                Ok(outcomes) => {
                    self.record_commit(started);
                    self.known_projects
                        .extend(batches.iter().map(|(b, _)| b.project.clone()));
                    return Ok(outcomes);
                }
                Err(e) if retryable(&e) && attempt < RETRIES => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(5 << attempt)).await;
                }
                Err(e) => return Err(pg_err(&e)),
            }
        }
    }

    /// Runs a delete or a purge in a transaction of its own.
    async fn single(&mut self, op: &Op) -> Result<Done, StoreError> {
        let mut attempt = 0;
        loop {
            let started = Instant::now();
            let conn = self.connection().await?;
            let result = match op {
                Op::Delete { project, install } => delete_tx(&mut conn.client, project, install)
                    .await
                    .map(|()| Done::Delete),
                Op::Purge { policy, today } => purge_tx(&mut conn.client, policy, *today)
                    .await
                    .map(Done::Purge),
                Op::Ingest(..) => unreachable!("ingests are grouped"),
            };
            match result {
                Ok(done) => {
                    self.record_commit(started);
                    return Ok(done);
                }
                Err(e) if retryable(&e) && attempt < RETRIES => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(5 << attempt)).await;
                }
                Err(e) => return Err(pg_err(&e)),
            }
        }
    }
}

/// Writes a group of ingests in one transaction, table by table with keys
/// sorted (see the module doc), and returns each batch's outcome.
async fn ingest_tx(
    conn: &mut WriterConn,
    group: &[(&IngestBatch, &Skew)],
    known_projects: &HashSet<String>,
) -> Result<Vec<IngestOutcome>, tokio_postgres::Error> {
    let batches: Vec<&IngestBatch> = group.iter().map(|(b, _)| *b).collect();
    let s = &conn.stmts;
    let tx = conn.client.transaction().await?;

    let new_projects: Vec<&str> = batches
        .iter()
        .map(|b| b.project.as_str())
        .filter(|p| !known_projects.contains(*p))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if !new_projects.is_empty() {
        tx.execute(&s.projects, &[&new_projects]).await?;
    }

    // Report ids (and the ids of rolled-up and refused events, remembered
    // with them): the first batch in the group carrying one is its candidate.
    let mut reports: BTreeMap<(&str, [u8; 16]), (usize, i32)> = BTreeMap::new();
    // Event ids, per install: the first occurrence in the group is the
    // candidate, found by (batch, position in the batch).
    type EventKey<'a> = (&'a str, [u8; 16], [u8; 16]);
    let mut events: BTreeMap<EventKey<'_>, (usize, usize)> = BTreeMap::new();
    for (i, batch) in batches.iter().enumerate() {
        for item in &group[i].1.refused {
            if let Some(id) = &item.id {
                reports
                    .entry((&batch.project, *id.as_bytes()))
                    .or_insert((i, batch.received.days_since_epoch()));
            }
        }
        match &batch.data {
            BatchData::Aggregate {
                report_id,
                counters,
            } => {
                // Remembered under its newest day; see `REPORT_ID_DAYS`.
                let newest = counters
                    .iter()
                    .map(|c| c.day)
                    .fold(batch.received, Day::max);
                reports
                    .entry((&batch.project, *report_id.as_bytes()))
                    .or_insert((i, newest.days_since_epoch()));
            }
            BatchData::Rollup { counters } => {
                for (id, c) in counters {
                    reports
                        .entry((&batch.project, *id.as_bytes()))
                        .or_insert((i, c.day.max(batch.received).days_since_epoch()));
                }
            }
            BatchData::Events {
                install,
                events: list,
                ..
            } => {
                for (j, e) in list.iter().enumerate() {
                    events
                        .entry((&batch.project, install.0, *e.id.as_bytes()))
                        .or_insert((i, j));
                }
            }
        }
    }

    let mut fresh_reports: HashSet<(String, Vec<u8>)> = HashSet::new();
    if !reports.is_empty() {
        let (mut p, mut ids, mut days) = (vec![], vec![], vec![]);
        for ((project, id), (_, day)) in &reports {
            p.push(*project);
            ids.push(id.as_slice());
            days.push(*day);
        }
        for row in tx.query(&s.reports, &[&p, &ids, &days]).await? {
            fresh_reports.insert((row.get(0), row.get(1)));
        }
    }

    let mut fresh_events: HashSet<(String, Vec<u8>, Vec<u8>)> = HashSet::new();
    if !events.is_empty() {
        let (mut p, mut ids, mut installs, mut ts, mut names, mut props) =
            (vec![], vec![], vec![], vec![], vec![], vec![]);
        for ((project, install, id), (i, j)) in &events {
            let BatchData::Events { events: list, .. } = &batches[*i].data else {
                continue;
            };
            let e = &list[*j];
            p.push(*project);
            ids.push(id.as_slice());
            installs.push(install.as_slice());
            ts.push(e.timestamp.unix_millis());
            names.push(e.name.as_str());
            props.push(props_json(&e.props));
        }
        for row in tx
            .query(&s.events, &[&p, &ids, &installs, &ts, &names, &props])
            .await?
        {
            fresh_events.insert((row.get(0), row.get(1), row.get(2)));
        }
    }

    let mut outcomes = Vec::with_capacity(batches.len());
    let mut counters: BTreeMap<CounterKey<'_>, i64> = BTreeMap::new();
    let mut installs: BTreeMap<(&str, [u8; 16]), (i32, i32)> = BTreeMap::new();
    let mut weeks: BTreeSet<(&str, [u8; 16], i32)> = BTreeSet::new();
    let mut identities: BTreeMap<(&str, [u8; 16]), IdentityChange> = BTreeMap::new();
    let mut refusals: BTreeMap<(&str, i32, &str, &str, &str), i64> = BTreeMap::new();
    let mut uses: Vec<NewUse<'_>> = Vec::new();
    let mut uploads: BTreeMap<(&str, i32), [i64; 3]> = BTreeMap::new();
    let fresh_id = |project: &str, id: [u8; 16], i: usize| {
        reports.get(&(project, id)).map(|(first, _)| *first) == Some(i)
            && fresh_reports.contains(&(project.to_owned(), id.to_vec()))
    };
    for (i, batch) in batches.iter().enumerate() {
        let project = batch.project.as_str();
        let ctx = &batch.context;
        let tier = tier_code(batch.tier);
        let mut outcome = IngestOutcome::default();
        match &batch.data {
            BatchData::Aggregate {
                report_id,
                counters: list,
            } => {
                let fresh = fresh_id(project, *report_id.as_bytes(), i);
                if !fresh {
                    outcome.duplicates = list.len() as u64;
                } else {
                    for c in list {
                        let key = (
                            project,
                            c.day.days_since_epoch(),
                            c.event.as_str(),
                            props_json(&c.props),
                            ctx.version.as_str(),
                            ctx.os.as_str(),
                            ctx.arch.as_str(),
                            tier,
                        );
                        *counters.entry(key).or_default() += c.count as i64;
                        outcome.accepted += 1;
                    }
                }
            }
            BatchData::Rollup { counters: list } => {
                for (id, c) in list {
                    if !fresh_id(project, *id.as_bytes(), i) {
                        outcome.duplicates += 1;
                        continue;
                    }
                    let key = (
                        project,
                        c.day.days_since_epoch(),
                        c.event.as_str(),
                        props_json(&c.props),
                        ctx.version.as_str(),
                        ctx.os.as_str(),
                        ctx.arch.as_str(),
                        tier,
                    );
                    *counters.entry(key).or_default() += c.count as i64;
                    outcome.accepted += 1;
                }
            }
            BatchData::Events {
                install,
                events: list,
                identity,
            } => {
                for (j, e) in list.iter().enumerate() {
                    let id = *e.id.as_bytes();
                    let fresh = events.get(&(project, install.0, id)) == Some(&(i, j))
                        && fresh_events.contains(&(
                            project.to_owned(),
                            install.0.to_vec(),
                            id.to_vec(),
                        ));
                    if !fresh {
                        outcome.duplicates += 1;
                        continue;
                    }
                    let day = e.timestamp.day();
                    let key = (
                        project,
                        day.days_since_epoch(),
                        e.name.as_str(),
                        props_json(&e.props),
                        ctx.version.as_str(),
                        ctx.os.as_str(),
                        ctx.arch.as_str(),
                        tier,
                    );
                    *counters.entry(key).or_default() += 1;
                    let n = day.days_since_epoch();
                    let span = installs.entry((project, install.0)).or_insert((n, n));
                    span.0 = span.0.min(n);
                    span.1 = span.1.max(n);
                    weeks.insert((project, install.0, day.week_start().days_since_epoch()));
                    uses.push((project, day, install.0, e.name.as_str(), &e.props));
                    outcome.accepted += 1;
                }
                // With every event refused there is no install row to hang an
                // identity on, and none that a purge would find it by.
                match (batch.tier, identity) {
                    _ if list.is_empty() => {}
                    (Tier::Full, Some(fields)) => {
                        let json = serde_json::to_string(fields).unwrap_or_else(|_| "{}".into());
                        identities.insert((project, install.0), IdentityChange::Set(json));
                    }
                    (Tier::Full, None) => {}
                    _ => {
                        identities.insert((project, install.0), IdentityChange::Forget);
                    }
                }
            }
        }
        // What was refused, downgraded or ignored: each refused event once
        // by its id, the request's notes once if anything in it was new.
        let skew = group[i].1;
        let report_fresh = match &batch.data {
            BatchData::Aggregate { report_id, .. } => fresh_id(project, *report_id.as_bytes(), i),
            _ => false,
        };
        let mut fresh = outcome.accepted > 0 || report_fresh;
        let day = batch.received.days_since_epoch();
        for item in &skew.refused {
            if let Some(id) = &item.id
                && fresh_id(project, *id.as_bytes(), i)
            {
                fresh = true;
                *refusals
                    .entry((project, day, &ctx.version, &item.reason, &item.detail))
                    .or_default() += 1;
            }
        }
        if fresh {
            for item in skew.refused.iter().filter(|r| r.id.is_none()) {
                *refusals
                    .entry((project, day, &ctx.version, &item.reason, &item.detail))
                    .or_default() += 1;
            }
            for note in &skew.notes {
                *refusals
                    .entry((project, day, &ctx.version, &note.reason, &note.detail))
                    .or_default() += note.count as i64;
            }
        }
        let upload = uploads.entry((project, day)).or_default();
        upload[0] += 1;
        upload[1] += i64::from(outcome.duplicates > 0);
        upload[2] += outcome.duplicates as i64;
        outcomes.push(outcome);
    }
    // Install rows first: an ingest then takes an install's row lock before
    // the shared cells (cohorts, weekly uses, counters), as a deletion and a
    // purge do, so they wait for each other instead of deadlocking.
    note_activity(&tx, s, &installs, &weeks).await?;
    note_uses(&tx, &uses).await?;
    note_uploads(&tx, &uploads).await?;
    if !refusals.is_empty() {
        let (mut p, mut days, mut versions, mut reasons, mut details, mut counts) =
            (vec![], vec![], vec![], vec![], vec![], vec![]);
        for ((project, day, version, reason, detail), n) in &refusals {
            p.push(*project);
            days.push(*day);
            versions.push(*version);
            reasons.push(*reason);
            details.push(*detail);
            counts.push(*n);
        }
        tx.execute(
            &s.refusals,
            &[&p, &days, &versions, &reasons, &details, &counts],
        )
        .await?;
    }

    if !counters.is_empty() {
        let (mut projects, mut days, mut names, mut props) = (vec![], vec![], vec![], vec![]);
        let (mut versions, mut oses, mut archs) = (vec![], vec![], vec![]);
        let (mut tiers, mut counts) = (vec![], vec![]);
        for ((project, day, event, prop, version, os, arch, tier), count) in &counters {
            projects.push(*project);
            days.push(*day);
            names.push(*event);
            props.push(prop.as_str());
            versions.push(*version);
            oses.push(*os);
            archs.push(*arch);
            tiers.push(*tier);
            counts.push(*count);
        }
        tx.execute(
            &s.counters,
            &[
                &projects, &days, &names, &props, &versions, &oses, &archs, &tiers, &counts,
            ],
        )
        .await?;
    }
    let (mut set_p, mut set_ids, mut set_fields) = (vec![], vec![], vec![]);
    let (mut forget_p, mut forget_ids) = (vec![], vec![]);
    for ((project, install), change) in &identities {
        match change {
            IdentityChange::Set(fields) => {
                set_p.push(*project);
                set_ids.push(install.as_slice());
                set_fields.push(fields.as_str());
            }
            IdentityChange::Forget => {
                forget_p.push(*project);
                forget_ids.push(install.as_slice());
            }
        }
    }
    if !set_p.is_empty() {
        tx.execute(&s.identities, &[&set_p, &set_ids, &set_fields])
            .await?;
    }
    if !forget_p.is_empty() {
        tx.execute(&s.forget_identities, &[&forget_p, &forget_ids])
            .await?;
    }
    tx.commit().await?;
    Ok(outcomes)
}

/// A row's 16-byte install id; `None` for anything else, which the
/// collector never writes.
fn install_key(bytes: &[u8]) -> Option<[u8; 16]> {
    bytes.try_into().ok()
}

/// Widens each install's first/last-seen span, records its active weeks and
/// keeps the retention matrix (`install_cohorts`) equal to the join of
/// `installs` with `install_weeks` it replaces, as SQLite's
/// `Writer::note_activity` does; `installs` holds the span of each install's
/// newly stored events, `weeks` their ISO weeks.
///
/// Several collectors write at once, so the matrix is kept from what the
/// database says under lock, never from what this collector last saw:
/// - the install rows are upserted first, which locks them until commit, and
///   the upsert returns the first-seen day as stored, so a new week is
///   counted in the install's cohort as it is;
/// - a week is counted when its `install_weeks` row was inserted now
///   (`RETURNING`), so a week another collector recorded first is not counted
///   twice;
/// - an earlier event arriving late moves the install's weeks to the cohort
///   of its new first day. That reads the install's weeks, which only a purge
///   removes without the install's row lock, so the move first takes the
///   project's cohort lock ([`COHORT_LOCK`]) that a purge holds throughout.
async fn note_activity(
    tx: &tokio_postgres::Transaction<'_>,
    s: &Statements,
    installs: &BTreeMap<(&str, [u8; 16]), (i32, i32)>,
    weeks: &BTreeSet<(&str, [u8; 16], i32)>,
) -> Result<(), tokio_postgres::Error> {
    if installs.is_empty() {
        return Ok(());
    }
    let (mut p, mut ids, mut first, mut last) = (vec![], vec![], vec![], vec![]);
    for ((project, install), (f, l)) in installs {
        p.push(*project);
        ids.push(install.as_slice());
        first.push(*f);
        last.push(*l);
    }
    // Each install's first-seen day after this transaction, and those that
    // move: (project, install) to (stored first day, new first day).
    let mut firsts: BTreeMap<(String, [u8; 16]), i32> = BTreeMap::new();
    let mut moves: BTreeMap<(String, [u8; 16]), (i32, i32)> = BTreeMap::new();
    for row in tx.query(&s.installs, &[&p, &ids, &first, &last]).await? {
        let project: String = row.get(0);
        let Some(install) = install_key(row.get(1)) else {
            continue;
        };
        let stored: i32 = row.get(2);
        let ours = installs
            .get(&(project.as_str(), install))
            .map_or(stored, |(f, _)| *f);
        if ours < stored {
            moves.insert((project.clone(), install), (stored, ours));
        }
        firsts.insert((project, install), stored.min(ours));
    }
    // Cohort cells to change: (project, first day, week) to a delta.
    let mut deltas: BTreeMap<(String, i32, i32), i64> = BTreeMap::new();
    if !moves.is_empty() {
        let projects: BTreeSet<&str> = moves.keys().map(|(p, _)| p.as_str()).collect();
        for project in projects {
            tx.execute(
                "SELECT pg_advisory_xact_lock($1, hashtext($2))",
                &[&COHORT_LOCK, &project],
            )
            .await?;
        }
        let (mut p, mut ids, mut to) = (vec![], vec![], vec![]);
        for ((project, install), (_, new)) in &moves {
            p.push(project.as_str());
            ids.push(install.as_slice());
            to.push(*new);
        }
        let rows = tx
            .query(
                "SELECT w.project, w.install, w.week
                 FROM install_weeks w
                 JOIN unnest($1::text[], $2::bytea[]) AS k(project, install)
                   ON w.project = k.project AND w.install = k.install",
                &[&p, &ids],
            )
            .await?;
        for row in rows {
            let project: String = row.get(0);
            let Some(install) = install_key(row.get(1)) else {
                continue;
            };
            let week: i32 = row.get(2);
            if let Some((from, to)) = moves.get(&(project.clone(), install)) {
                *deltas.entry((project.clone(), *from, week)).or_default() -= 1;
                *deltas.entry((project, *to, week)).or_default() += 1;
            }
        }
        tx.execute(
            "UPDATE installs i SET first_seen_day = k.first
             FROM unnest($1::text[], $2::bytea[], $3::int4[]) AS k(project, install, first)
             WHERE i.project = k.project AND i.install = k.install",
            &[&p, &ids, &to],
        )
        .await?;
    }
    let (mut p, mut ids, mut w) = (vec![], vec![], vec![]);
    for (project, install, week) in weeks {
        p.push(*project);
        ids.push(install.as_slice());
        w.push(*week);
    }
    for row in tx.query(&s.weeks, &[&p, &ids, &w]).await? {
        let project: String = row.get(0);
        let Some(install) = install_key(row.get(1)) else {
            continue;
        };
        let week: i32 = row.get(2);
        if let Some(first) = firsts.get(&(project.clone(), install)) {
            *deltas.entry((project, *first, week)).or_default() += 1;
        }
    }
    deltas.retain(|_, n| *n != 0);
    if !deltas.is_empty() {
        let (mut p, mut days, mut w, mut n) = (vec![], vec![], vec![], vec![]);
        for ((project, day, week), delta) in &deltas {
            p.push(project.as_str());
            days.push(*day);
            w.push(*week);
            n.push(*delta);
        }
        tx.execute(&s.cohorts, &[&p, &days, &w, &n]).await?;
    }
    Ok(())
}

/// A newly stored event, as [`note_uses`] takes it: project, day, install, name, props.
type NewUse<'a> = (
    &'a str,
    Day,
    [u8; 16],
    &'a str,
    &'a telemetry_protocol::Props,
);

/// Distinct installs by use, as SQLite's `Writer::note_uses`: the install's
/// weekly uses (`''` for the event itself and for "sent anything"), each
/// counted in `weekly_uses` the first time it is stored.
async fn note_uses(
    tx: &tokio_postgres::Transaction<'_>,
    fresh: &[NewUse<'_>],
) -> Result<(), tokio_postgres::Error> {
    if fresh.is_empty() {
        return Ok(());
    }
    // (project, week, install, event, prop, value), in table order.
    type UseKey<'a> = (&'a str, i32, [u8; 16], &'a str, String, String);
    let mut keys: BTreeSet<UseKey<'_>> = BTreeSet::new();
    for (project, day, install, event, props) in fresh {
        let week = day.week_start().days_since_epoch();
        keys.insert((project, week, *install, "", String::new(), String::new()));
        keys.insert((project, week, *install, event, String::new(), String::new()));
        for (name, value) in props.iter() {
            keys.insert((
                project,
                week,
                *install,
                event,
                name.clone(),
                super::prop_value_text(value),
            ));
        }
    }
    let (mut p, mut w, mut i, mut e, mut k, mut v) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for (project, week, install, event, prop, value) in &keys {
        p.push(*project);
        w.push(*week);
        i.push(install.as_slice());
        e.push(*event);
        k.push(prop.as_str());
        v.push(value.as_str());
    }
    tx.execute(
            "WITH new AS (
                 INSERT INTO install_uses (project, week, install, event, prop, value)
                 SELECT * FROM unnest($1::text[], $2::int4[], $3::bytea[], $4::text[], $5::text[], $6::text[])
                 ON CONFLICT DO NOTHING
                 RETURNING project, event, prop, week, value)
             INSERT INTO weekly_uses (project, event, prop, week, value, installs)
             SELECT project, event, prop, week, value, COUNT(*) FROM new
             GROUP BY project, event, prop, week, value
             ORDER BY project, event, prop, week, value
             ON CONFLICT (project, event, prop, week, value)
             DO UPDATE SET installs = weekly_uses.installs + excluded.installs",
            &[&p, &w, &i, &e, &k, &v],
        )
        .await?;
    Ok(())
}

/// Counts uploads per project and arrival day, and those that were retries
/// (see [`super::UploadRow`]).
async fn note_uploads(
    tx: &tokio_postgres::Transaction<'_>,
    uploads: &BTreeMap<(&str, i32), [i64; 3]>,
) -> Result<(), tokio_postgres::Error> {
    if uploads.is_empty() {
        return Ok(());
    }
    let (mut p, mut d, mut n, mut r, mut x) = (vec![], vec![], vec![], vec![], vec![]);
    for ((project, day), [uploads, retries, replayed]) in uploads {
        p.push(*project);
        d.push(*day);
        n.push(*uploads);
        r.push(*retries);
        x.push(*replayed);
    }
    tx.execute(
        "INSERT INTO daily_uploads (project, day, uploads, retries, replayed)
         SELECT * FROM unnest($1::text[], $2::int4[], $3::int8[], $4::int8[], $5::int8[])
         ON CONFLICT (project, day) DO UPDATE SET
           uploads = daily_uploads.uploads + excluded.uploads,
           retries = daily_uploads.retries + excluded.retries,
           replayed = daily_uploads.replayed + excluded.replayed",
        &[&p, &d, &n, &r, &x],
    )
    .await?;
    Ok(())
}

/// The ISO weeks `install_uses` holds for a project, walked one index seek
/// at a time (the table is keyed by week first).
const USE_WEEKS: &str = "WITH RECURSIVE w(week) AS (
        SELECT MIN(week) FROM install_uses WHERE project = $1
        UNION ALL
        SELECT (SELECT MIN(u.week) FROM install_uses u WHERE u.project = $1 AND u.week > w.week)
        FROM w WHERE w.week IS NOT NULL)
    SELECT week FROM w WHERE week IS NOT NULL";

async fn delete_tx(
    client: &mut Client,
    project: &str,
    install: &InstallHash,
) -> Result<(), tokio_postgres::Error> {
    let tx = client.transaction().await?;
    // The install's row lock first, as an ingest takes it: its first-seen
    // day cannot move while its weeks leave the retention matrix. An upsert
    // rather than `SELECT ... FOR UPDATE`, which would not wait for an
    // ingest inserting the install's first row right now, and then miss the
    // weeks that ingest commits; the row is deleted below either way. Each
    // week is taken out as its row is deleted, so a week a purge removed at
    // the same time is taken out once, by whichever removed it.
    tx.execute(
        "INSERT INTO installs (project, install, first_seen_day, last_seen_day)
         VALUES ($1, $2, 0, 0)
         ON CONFLICT (project, install) DO UPDATE SET last_seen_day = installs.last_seen_day",
        &[&project, &install.0.as_slice()],
    )
    .await?;
    tx.execute(
        "WITH gone AS (
             DELETE FROM install_weeks WHERE project = $1 AND install = $2 RETURNING week)
         UPDATE install_cohorts c SET installs = c.installs - 1
         FROM gone, installs i
         WHERE i.project = $1 AND i.install = $2
           AND c.project = $1 AND c.first_day = i.first_seen_day AND c.week = gone.week",
        &[&project, &install.0.as_slice()],
    )
    .await?;
    for table in ["events", "installs", "identities"] {
        tx.execute(
            &format!("DELETE FROM {table} WHERE project = $1 AND install = $2"),
            &[&project, &install.0.as_slice()],
        )
        .await?;
    }
    // The install's uses leave `weekly_uses`, then go.
    tx.execute(
        &format!(
            "UPDATE weekly_uses w SET installs = w.installs - 1
             FROM install_uses u
             WHERE u.project = $1 AND u.install = $2 AND u.week IN ({USE_WEEKS})
               AND w.project = u.project AND w.event = u.event AND w.prop = u.prop
               AND w.week = u.week AND w.value = u.value"
        ),
        &[&project, &install.0.as_slice()],
    )
    .await?;
    tx.execute(
        &format!(
            "DELETE FROM install_uses
             WHERE project = $1 AND install = $2 AND week IN ({USE_WEEKS})"
        ),
        &[&project, &install.0.as_slice()],
    )
    .await?;
    tx.commit().await
}

async fn purge_tx(
    client: &mut Client,
    policy: &RetentionPolicy,
    today: Day,
) -> Result<PurgeOutcome, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    let projects: Vec<String> = tx
        .query("SELECT name FROM projects ORDER BY name", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut out = PurgeOutcome::default();
    for name in projects {
        let days = i32::try_from(policy.days_for(&name)).unwrap_or(i32::MAX / 2);
        let cutoff = today.add_days(-days).days_since_epoch();
        // Held to the end, so no ingest moves an install to another cohort
        // while its weeks go (see `note_activity`).
        tx.execute(
            "SELECT pg_advisory_xact_lock($1, hashtext($2))",
            &[&COHORT_LOCK, &name],
        )
        .await?;
        out.events += tx
            .execute(
                "DELETE FROM events WHERE project = $1 AND ts < $2",
                &[&name, &(i64::from(cutoff) * MILLIS_PER_DAY)],
            )
            .await?;
        // Install rows not seen within the retention go first: deleting
        // them locks them, so an ingest of one of them waits for this purge
        // and then starts it afresh, and the statements below see every week
        // an ingest committed for them before.
        let (mut gone, mut firsts) = (Vec::new(), Vec::new());
        for row in tx
            .query(
                "DELETE FROM installs WHERE project = $1 AND last_seen_day < $2
                 RETURNING install, first_seen_day",
                &[&name, &cutoff],
            )
            .await?
        {
            gone.push(row.get::<_, Vec<u8>>(0));
            firsts.push(row.get::<_, i32>(1));
        }
        out.installs += gone.len() as u64;
        tx.execute(
            "DELETE FROM identities WHERE project = $1 AND install = ANY($2::bytea[])",
            &[&name, &gone],
        )
        .await?;
        // Their weeks go with them, and every week older than the cutoff.
        // Each leaves the retention matrix in the statement that deletes it,
        // so a week a deletion removed meanwhile is not taken out twice.
        const TAKE_OUT: &str = "
            cells AS (SELECT first_day, week, COUNT(*) AS n FROM gone GROUP BY first_day, week),
            taken AS (
                -- Run whether or not it is read, as every data-modifying WITH.
                UPDATE install_cohorts c SET installs = c.installs - cells.n
                FROM cells
                WHERE c.project = $1 AND c.first_day = cells.first_day AND c.week = cells.week)
            SELECT COUNT(*)::BIGINT FROM gone";
        let weeks_of_gone = tx
            .query_one(
                &format!(
                    "WITH gone AS (
                         DELETE FROM install_weeks w
                         USING unnest($2::bytea[], $3::int4[]) AS k(install, first_day)
                         WHERE w.project = $1 AND w.install = k.install
                         RETURNING k.first_day, w.week),
                     {TAKE_OUT}"
                ),
                &[&name, &gone, &firsts],
            )
            .await?
            .get::<_, i64>(0);
        let old_weeks = tx
            .query_one(
                &format!(
                    "WITH gone AS (
                         DELETE FROM install_weeks w USING installs i
                         WHERE w.project = $1 AND i.project = $1 AND i.install = w.install
                           AND w.week + 6 < $2
                         RETURNING i.first_seen_day AS first_day, w.week),
                     {TAKE_OUT}"
                ),
                &[&name, &cutoff],
            )
            .await?
            .get::<_, i64>(0);
        out.install_weeks += (weeks_of_gone + old_weeks).max(0) as u64;
        tx.execute(
            "DELETE FROM install_cohorts WHERE project = $1 AND installs <= 0",
            &[&name],
        )
        .await?;
        // As in SQLite: whole weeks older than the cutoff; `weekly_uses` stays.
        out.install_uses += tx
            .execute(
                "DELETE FROM install_uses WHERE project = $1 AND week + 6 < $2",
                &[&name, &cutoff],
            )
            .await?;
    }
    out.report_ids = tx
        .execute(
            "DELETE FROM seen_reports WHERE day < $1",
            &[&today.add_days(-REPORT_ID_DAYS).days_since_epoch()],
        )
        .await?;
    tx.commit().await?;
    Ok(out)
}

/// The all-time `install` count. The event is written out rather than bound,
/// so that the planner can use the partial index of migration 7, which holds
/// only the `install` cells (a bound parameter would not match its
/// predicate in a generic plan).
const INSTALLS_ALL_TIME: &str = "SELECT COALESCE(SUM(count), 0)::BIGINT FROM daily_counters
     WHERE project = $1 AND event = 'install'";

/// `from..=to` as two day ranges that do not overlap, the first never
/// empty: the whole range and `None` when it is a single day (or reversed).
fn split_days(from: Day, to: Day) -> ((Day, Day), Option<(Day, Day)>) {
    let (lo, hi) = (from.days_since_epoch(), to.days_since_epoch());
    if hi <= lo {
        return ((from, to), None);
    }
    let mid = lo + (hi - lo) / 2;
    (
        (from, Day::from_days_since_epoch(mid)),
        Some((Day::from_days_since_epoch(mid + 1), to)),
    )
}

/// The counter cells of `from..=to`, props summed away.
async fn read_counters(
    client: &Client,
    project: &str,
    from: Day,
    to: Day,
) -> Result<Vec<CounterRow>, tokio_postgres::Error> {
    let start = from.days_since_epoch();
    let end = to.days_since_epoch();
    // SQLite groups on dictionary ids and looks their text up after; here the
    // columns are the text itself (see the module doc), so the grouped rows
    // need no join at all, and the day range is a prefix of the primary key.
    Ok(client
        .query(
            "SELECT day, event, version, os, arch, tier, SUM(count)::BIGINT
             FROM daily_counters
             WHERE project = $1 AND day BETWEEN $2 AND $3
             GROUP BY day, event, version, os, arch, tier",
            &[&project, &start, &end],
        )
        .await?
        .iter()
        .map(|r| CounterRow {
            day: Day::from_days_since_epoch(r.get(0)),
            event: r.get(1),
            version: r.get(2),
            os: r.get(3),
            arch: r.get(4),
            tier: tier_from_code(r.get(5)),
            count: r.get::<_, i64>(6).max(0) as u64,
        })
        .collect())
}

/// `install` counts of all time (see [`INSTALLS_ALL_TIME`]).
async fn read_installs_all_time(
    client: &Client,
    project: &str,
) -> Result<u64, tokio_postgres::Error> {
    let n: i64 = client
        .query_one(INSTALLS_ALL_TIME, &[&project])
        .await?
        .get(0);
    Ok(n.max(0) as u64)
}

/// The retention cells of cohorts from `from`'s week through `to`.
async fn read_cohorts(
    client: &Client,
    project: &str,
    from: Day,
    to: Day,
) -> Result<Vec<CohortRow>, tokio_postgres::Error> {
    let start = from.week_start().days_since_epoch();
    let end = to.days_since_epoch();
    // (day + 3) % 7 is the ISO weekday minus one, because 1970-01-01 was a Thursday.
    Ok(client
        .query(
            "SELECT first_day - ((first_day + 3) % 7) AS cohort, week, SUM(installs)::BIGINT
             FROM install_cohorts
             WHERE project = $1 AND first_day BETWEEN $2 AND $3 AND week <= $3 AND installs > 0
             GROUP BY cohort, week",
            &[&project, &start, &end],
        )
        .await?
        .iter()
        .map(|r| CohortRow {
            cohort: Day::from_days_since_epoch(r.get(0)),
            active: Day::from_days_since_epoch(r.get(1)),
            installs: r.get::<_, i64>(2).max(0) as u64,
        })
        .collect())
}

/// [`Store::weekly_uses`], as SQLite's `read_weekly_uses`.
async fn read_weekly_uses(
    client: &Client,
    project: &str,
    (from, to): (Day, Day),
    event: Option<&str>,
    prop: Option<&str>,
) -> Result<Vec<super::UseRow>, tokio_postgres::Error> {
    let (start, end) = (from.days_since_epoch(), to.days_since_epoch());
    let rows = client
        .query(
            "SELECT week, event, prop, value, installs FROM weekly_uses
             WHERE project = $1 AND installs > 0 AND week BETWEEN $2 AND $3
               AND ((event = '' AND prop = '')
                    OR ($4::text IS NULL AND event <> '')
                    OR (event = $4 AND ($5::text IS NULL OR prop IN ('', $5))))",
            &[&project, &start, &end, &event, &prop],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| super::UseRow {
            week: Day::from_days_since_epoch(r.get(0)),
            event: r.get(1),
            prop: r.get(2),
            value: r.get(3),
            installs: r.get::<_, i64>(4).max(0) as u64,
        })
        .collect())
}

/// [`Store::prop_counters`]; the day range is a prefix of the primary key.
async fn read_prop_counters(
    client: &Client,
    project: &str,
    from: Day,
    to: Day,
    event: Option<&str>,
) -> Result<Vec<super::PropCounterRow>, tokio_postgres::Error> {
    let (start, end) = (from.days_since_epoch(), to.days_since_epoch());
    let rows = match event {
        Some(event) => {
            client
                .query(
                    "SELECT day, event, props, SUM(count)::BIGINT FROM daily_counters
                     WHERE project = $1 AND day BETWEEN $2 AND $3 AND event = $4
                     GROUP BY day, event, props",
                    &[&project, &start, &end, &event],
                )
                .await?
        }
        None => {
            client
                .query(
                    "SELECT day, event, props, SUM(count)::BIGINT FROM daily_counters
                     WHERE project = $1 AND day BETWEEN $2 AND $3
                     GROUP BY day, event, props",
                    &[&project, &start, &end],
                )
                .await?
        }
    };
    Ok(rows
        .iter()
        .map(|r| super::PropCounterRow {
            day: Day::from_days_since_epoch(r.get(0)),
            event: r.get(1),
            props: r.get(2),
            count: r.get::<_, i64>(3).max(0) as u64,
        })
        .collect())
}

impl Store for PostgresStore {
    fn ingest_checked(&self, batch: IngestBatch, skew: Skew) -> StoreFuture<'_, IngestOutcome> {
        queue::ingest(&self.jobs, batch, skew)
    }

    fn refusals(&self, project: &str, from: Day, to: Day) -> StoreFuture<'_, Vec<RefusalRow>> {
        let project = project.to_owned();
        self.read(move |client| async move {
            Ok(client
                .query(
                    "SELECT day, version, reason, detail, count FROM refusals
                     WHERE project = $1 AND day BETWEEN $2 AND $3
                     ORDER BY day, version, reason, detail",
                    &[&project, &from.days_since_epoch(), &to.days_since_epoch()],
                )
                .await?
                .iter()
                .map(|r| RefusalRow {
                    day: Day::from_days_since_epoch(r.get(0)),
                    version: r.get(1),
                    reason: r.get(2),
                    detail: r.get(3),
                    count: r.get::<_, i64>(4).max(0) as u64,
                })
                .collect())
        })
    }

    fn delete_install(&self, project: &str, install: InstallHash) -> StoreFuture<'_, ()> {
        queue::delete(&self.jobs, project, install)
    }

    fn purge(&self, policy: &RetentionPolicy, today: Day) -> StoreFuture<'_, PurgeOutcome> {
        queue::purge(&self.jobs, policy, today)
    }

    fn stats_input(&self, project: &str, from: Day, to: Day) -> StoreFuture<'_, StatsInput> {
        // Three independent queries, each on a read connection of its own:
        // `read` starts each at once, so they run side by side on the server.
        //
        // The counters of the window take most of the time, nearly all of it
        // in the server's hash aggregate, which one query runs on one core.
        // Their groups include the day, so the window splits by day into
        // halves whose rows never overlap, each aggregated on a connection
        // of its own.
        let owned = || project.to_owned();
        let (p1, p2, p3, p4) = (owned(), owned(), owned(), owned());
        let (first, second) = split_days(from.week_start(), to);
        let counters_first = self
            .read(move |client| async move { read_counters(&client, &p1, first.0, first.1).await });
        let counters_second = self.read(move |client| async move {
            match second {
                Some((lo, hi)) => read_counters(&client, &p4, lo, hi).await,
                None => Ok(Vec::new()),
            }
        });
        let installs =
            self.read(move |client| async move { read_installs_all_time(&client, &p2).await });
        let cohorts =
            self.read(move |client| async move { read_cohorts(&client, &p3, from, to).await });
        Box::pin(async move {
            let mut counters = counters_first.await?;
            counters.extend(counters_second.await?);
            Ok(StatsInput {
                counters,
                installs_all_time: installs.await?,
                cohorts: cohorts.await?,
            })
        })
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
        self.read(move |client| async move {
            read_prop_counters(&client, &project, from, to, event.as_deref()).await
        })
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
        self.read(move |client| async move {
            read_weekly_uses(
                &client,
                &project,
                (from, to),
                event.as_deref(),
                prop.as_deref(),
            )
            .await
        })
    }

    fn uploads(&self, project: &str, from: Day, to: Day) -> StoreFuture<'_, Vec<super::UploadRow>> {
        let project = project.to_owned();
        self.read(move |client| async move {
            let rows = client
                .query(
                    "SELECT day, uploads, retries, replayed FROM daily_uploads
                     WHERE project = $1 AND day BETWEEN $2 AND $3 ORDER BY day",
                    &[&project, &from.days_since_epoch(), &to.days_since_epoch()],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| super::UploadRow {
                    day: Day::from_days_since_epoch(r.get(0)),
                    uploads: r.get::<_, i64>(1).max(0) as u64,
                    retries: r.get::<_, i64>(2).max(0) as u64,
                    replayed: r.get::<_, i64>(3).max(0) as u64,
                })
                .collect())
        })
    }

    fn projects(&self) -> StoreFuture<'_, Vec<String>> {
        self.read(|client| async move {
            Ok(client
                .query("SELECT name FROM projects ORDER BY name", &[])
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect())
        })
    }

    fn released_cells(
        &self,
        project: &str,
        from: Day,
        to: Day,
    ) -> StoreFuture<'_, Vec<ReleasedCell>> {
        let project = project.to_owned();
        self.read(move |client| async move {
            let rows = client
                .query(
                    "SELECT period, statistic, key, value, epsilon, released_on FROM public_releases
                     WHERE project = $1 AND period BETWEEN $2 AND $3
                     ORDER BY period, statistic, key",
                    &[&project, &from.days_since_epoch(), &to.days_since_epoch()],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| ReleasedCell {
                    project: project.clone(),
                    period: Day::from_days_since_epoch(r.get(0)),
                    statistic: r.get(1),
                    key: r.get(2),
                    value: r.get(3),
                    epsilon: r.get(4),
                    released_on: Day::from_days_since_epoch(r.get(5)),
                })
                .collect())
        })
    }

    fn keep_released(&self, cells: Vec<ReleasedCell>) -> StoreFuture<'_, ()> {
        // One statement, so all the cells are kept or none; a cell another
        // collector kept first wins. Releases are rare and small, so they
        // use a read connection rather than the ingest queue.
        self.read(move |client| async move {
            let column = |f: fn(&ReleasedCell) -> String| cells.iter().map(f).collect::<Vec<_>>();
            let projects = column(|c| c.project.clone());
            let statistics = column(|c| c.statistic.clone());
            let keys = column(|c| c.key.clone());
            let periods: Vec<i32> = cells.iter().map(|c| c.period.days_since_epoch()).collect();
            let values: Vec<i64> = cells.iter().map(|c| c.value).collect();
            let epsilons: Vec<f64> = cells.iter().map(|c| c.epsilon).collect();
            let released: Vec<i32> = cells
                .iter()
                .map(|c| c.released_on.days_since_epoch())
                .collect();
            client
                .execute(
                    "INSERT INTO public_releases
                     (project, period, statistic, key, value, epsilon, released_on)
                     SELECT * FROM unnest($1::text[], $2::int4[], $3::text[], $4::text[],
                                          $5::int8[], $6::float8[], $7::int4[])
                     ON CONFLICT DO NOTHING",
                    &[
                        &projects,
                        &periods,
                        &statistics,
                        &keys,
                        &values,
                        &epsilons,
                        &released,
                    ],
                )
                .await?;
            Ok(())
        })
    }

    fn status(&self) -> StoreStatus {
        let capacity = self.jobs.max_capacity() as u64;
        let size = self.size_bytes.load(Ordering::Relaxed);
        StoreStatus {
            queue_depth: capacity - self.jobs.capacity() as u64,
            queue_capacity: capacity,
            commits: self.timing.commits.load(Ordering::Relaxed),
            commit_seconds_sum: self.timing.nanos_sum.load(Ordering::Relaxed) as f64 / 1e9,
            commit_seconds_max: self.timing.nanos_max.load(Ordering::Relaxed) as f64 / 1e9,
            size_bytes: (size != u64::MAX).then_some(size),
        }
    }

    fn close(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let (done, finished) = oneshot::channel();
            if self.jobs.send(Msg::Shutdown(done)).await.is_ok() {
                let _ = finished.await;
            }
            let handle = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
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

    #[test]
    fn the_counters_window_splits_into_two_halves_that_cover_it_once() {
        let day = Day::from_days_since_epoch;
        for (lo, hi) in [(100, 100), (100, 101), (100, 196), (100, 197), (5, 3)] {
            let (first, second) = split_days(day(lo), day(hi));
            let days: Vec<i32> = (first.0.days_since_epoch()..=first.1.days_since_epoch())
                .chain(
                    second
                        .into_iter()
                        .flat_map(|(a, b)| a.days_since_epoch()..=b.days_since_epoch()),
                )
                .collect();
            let expected: Vec<i32> = (lo..=hi).collect();
            if hi < lo {
                // A reversed window reads nothing, as one query over it did.
                assert_eq!((first, second), ((day(lo), day(hi)), None));
                continue;
            }
            // Every day once, in order: no day in both halves, none left out.
            assert_eq!(days, expected, "{lo}..={hi}");
            assert!(second.is_some() == (hi > lo), "{lo}..={hi}");
        }
    }

    #[test]
    fn the_install_count_names_the_builtin_event_its_partial_index_holds() {
        let predicate = format!(
            "event = '{}'",
            telemetry_protocol::manifest::builtin::INSTALL
        );
        assert!(
            INSTALLS_ALL_TIME.contains(&predicate),
            "{INSTALLS_ALL_TIME}"
        );
        let index = MIGRATIONS
            .iter()
            .find(|m| m.contains("daily_counters_installs ON daily_counters"))
            .expect("the migration that adds the index");
        assert!(index.contains(&format!("WHERE {predicate}")), "{index}");
    }
}
