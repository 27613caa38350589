//! The storage abstraction: everything the collector writes or reads goes
//! through the [`Store`] trait, so that a second backend (PostgreSQL) can be
//! added without touching handlers, stats or the command line.
//!
//! The contract every backend keeps:
//! - a write future resolves `Ok` only after its data is durably committed;
//! - replaying an event id or a report id changes nothing (idempotency);
//! - every tier rolls up into daily counters in the same transaction as its
//!   raw rows, so stats never scan raw events;
//! - install ids arrive already pseudonymized ([`InstallHash`]); a backend
//!   never sees a raw install id, an address or a header;
//! - what ingest refused, downgraded or ignored ([`Skew`]) is counted in
//!   `refusals` in the same transaction as the accepted items, and a replay
//!   counts it no more than it counts the items: refused events, refused
//!   counters (by an id derived from their report's) and rolled-up events
//!   are remembered by id with the report ids. A refused item is counted
//!   the first time an answer refuses it, replay or not, so `refusals`
//!   holds exactly what the answers told clients.
//!
//! [`sqlite`] is the zero-config default; [`postgres`] lets several
//! collectors share one database; [`migrate`] copies the first into the second.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use telemetry_protocol::{Counter, Day, Event, Tier, Uuid};

pub use crate::secrets::InstallHash;

pub mod migrate;
pub use sqlite::REPORT_ID_DAYS;
pub mod postgres;
mod queue;
pub mod sqlite;

/// Opens the store `config.db` names, running its migrations: a PostgreSQL
/// database for a `postgres://` URL, otherwise a SQLite file.
///
/// With PostgreSQL and a configured `pseudonym_key_file`, the key's
/// fingerprint is checked against the one the database recorded, so that
/// collectors with different keys cannot silently split install ids.
pub fn open(config: &crate::config::Config) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    if postgres::is_url(&config.db) {
        let key_fingerprint = match &config.pseudonym_key_file {
            Some(path) => Some(postgres::key_fingerprint(
                &crate::secrets::InstallHasher::load_or_create(path)
                    .map_err(|e| StoreError::Database(format!("pseudonym key: {e}")))?,
            )),
            None => None,
        };
        let store = postgres::PostgresStore::open(
            &config.db,
            postgres::PostgresOptions {
                queue_capacity: config.queue.capacity,
                max_batch: config.queue.max_batch,
                key_fingerprint,
            },
        )?;
        return Ok(std::sync::Arc::new(store));
    }
    let store = sqlite::SqliteStore::open(
        &config.db_path(),
        sqlite::SqliteOptions {
            queue_capacity: config.queue.capacity,
            max_batch: config.queue.max_batch,
        },
    )?;
    Ok(std::sync::Arc::new(store))
}

/// The future every [`Store`] method returns. Boxed so the trait stays
/// object-safe and the collector can hold an `Arc<dyn Store>`.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// A storage failure. `Clone` so one failed group commit can answer every
/// request in it with the same error.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The write queue is full; retry later.
    #[error("the write queue is full")]
    QueueFull,
    /// The store is shutting down or its writer has stopped.
    #[error("the store is closed")]
    Closed,
    /// The disk is full or failed a write (SQLite `SQLITE_FULL` or
    /// `SQLITE_IOERR`, PostgreSQL `53100 disk_full` or `58030 io_error`). The
    /// write was rolled back; it succeeds once space is freed, so the client
    /// should keep its data and retry.
    #[error("the storage cannot take writes now: {0}")]
    Unavailable(String),
    /// The database failed.
    #[error("database error: {0}")]
    Database(String),
    /// The database was written by a newer collector.
    #[error(
        "the database schema version {found} is newer than this collector supports ({supported})"
    )]
    SchemaTooNew {
        /// The version found in the database.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },
}

/// The context every row of one request shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchContext {
    /// The host tool's version.
    pub version: String,
    /// The OS family.
    pub os: String,
    /// The CPU architecture.
    pub arch: String,
}

/// One validated `/v1/ingest` request, ready to store.
#[derive(Debug, Clone)]
pub struct IngestBatch {
    /// The project.
    pub project: String,
    /// The tier the data was sent at.
    pub tier: Tier,
    /// Version, OS and arch, rolled into the counters.
    pub context: BatchContext,
    /// The UTC day the request arrived, used to age out report ids.
    pub received: Day,
    /// The tier-specific data.
    pub data: BatchData,
}

/// What a batch carries, by tier.
#[derive(Debug, Clone)]
pub enum BatchData {
    /// `aggregate`: daily counters under a one-time report id.
    Aggregate {
        /// The report id that makes retries idempotent.
        report_id: Uuid,
        /// The counters.
        counters: Vec<Counter>,
    },
    /// Events sent above the project's `max_tier = "aggregate"`, rolled up
    /// into counters (count 1 each) and stored at `aggregate`: no install and
    /// no event row. Each keeps its event id, remembered with the report ids
    /// for the same window, so that a retry is not counted twice.
    Rollup {
        /// Each event's id and the counter it became.
        counters: Vec<(Uuid, Counter)>,
    },
    /// `anonymous` and `full`: events of one pseudonymized install.
    Events {
        /// The pseudonymized install id.
        install: InstallHash,
        /// The events.
        events: Vec<Event>,
        /// `full` only: the identity fields, replacing any stored before. At
        /// `anonymous` this is `None` and any stored identity is removed, so
        /// that lowering the tier also forgets who the user said they were.
        identity: Option<BTreeMap<String, String>>,
    },
}

/// What ingest refused, downgraded or ignored in one request, stored in
/// `refusals` with it (see [`Store::ingest_checked`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Skew {
    /// Items refused on their own.
    pub refused: Vec<RefusedRow>,
    /// Counts of the whole request (downgrades, ignored fields). They are
    /// stored only if the request stored or refused anything not seen
    /// before, so a replay does not count them again.
    pub notes: Vec<SkewNote>,
}

impl Skew {
    /// Whether there is nothing to count.
    pub fn is_empty(&self) -> bool {
        self.refused.is_empty() && self.notes.is_empty()
    }
}

/// One refused item, as `refusals` counts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedRow {
    /// The event id, for an event, or for a counter an id derived from its
    /// report id and position: remembered like a report id so that a replay
    /// is not counted twice. `None` for an identity field: counted only if
    /// anything else in the request was new, like the notes.
    pub id: Option<Uuid>,
    /// The reason, a violation code such as `unknown_event`.
    pub reason: String,
    /// What was refused, e.g. `command.name=deploy`; never a value of an
    /// undeclared prop or of an identity field.
    pub detail: String,
}

/// A count for the whole request, as `refusals` counts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkewNote {
    /// E.g. `downgraded_full_to_anonymous` or `ignored_field`.
    pub reason: String,
    /// E.g. the ignored field's path.
    pub detail: String,
    /// How many items.
    pub count: u64,
}

/// One row of `refusals`: how many items of a reason and detail arrived on
/// `day` from tool version `version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusalRow {
    /// The UTC day the items arrived.
    pub day: Day,
    /// The tool version that sent them.
    pub version: String,
    /// The reason (a violation code, `downgraded_*` or `ignored_field`).
    pub reason: String,
    /// What was refused, downgraded or ignored.
    pub detail: String,
    /// How many.
    pub count: u64,
}

/// What storing a batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IngestOutcome {
    /// Events or counters stored now.
    pub accepted: u64,
    /// Events or counters stored before (replays) and not counted again.
    pub duplicates: u64,
}

/// How long raw per-install data is kept, per project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Days for projects not listed in `per_project`.
    pub default_days: u32,
    /// Days per project.
    pub per_project: BTreeMap<String, u32>,
}

impl RetentionPolicy {
    /// The retention of `project`.
    pub fn days_for(&self, project: &str) -> u32 {
        self.per_project
            .get(project)
            .copied()
            .unwrap_or(self.default_days)
    }
}

/// What a purge removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PurgeOutcome {
    /// Raw events removed.
    pub events: u64,
    /// Install rows (and their identities) not seen within the retention, removed.
    pub installs: u64,
    /// Install-week activity rows removed.
    pub install_weeks: u64,
    /// Per-install weekly use rows (`install_uses`) removed.
    pub install_uses: u64,
    /// Report ids old enough that a retry can no longer arrive, removed.
    pub report_ids: u64,
}

/// One rolled-up counter cell as stats read it: props are summed away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterRow {
    /// The UTC day.
    pub day: Day,
    /// The event name.
    pub event: String,
    /// The tool version.
    pub version: String,
    /// The OS.
    pub os: String,
    /// The arch.
    pub arch: String,
    /// The tier the data came at.
    pub tier: Tier,
    /// The count.
    pub count: u64,
}

#[cfg(test)]
impl CounterRow {
    /// A linux/x86_64 cell for the stats tests.
    pub(crate) fn on_linux(day: Day, event: &str, version: &str, tier: Tier, count: u64) -> Self {
        CounterRow {
            day,
            event: event.into(),
            version: version.into(),
            os: "linux".into(),
            arch: "x86_64".into(),
            tier,
            count,
        }
    }
}

/// One cell of the retention table: installs first seen in the week starting
/// `cohort` that were active in the week starting `active`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CohortRow {
    /// The Monday of the week the installs were first seen.
    pub cohort: Day,
    /// The Monday of the week they were active.
    pub active: Day,
    /// How many installs.
    pub installs: u64,
}

/// Everything [`crate::stats::compute`] needs, read in one go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsInput {
    /// Counter cells from the Monday of `from`'s week through `to`.
    pub counters: Vec<CounterRow>,
    /// `install` counts of all time.
    pub installs_all_time: u64,
    /// Retention cells for cohorts from the Monday of `from`'s week through `to`.
    pub cohorts: Vec<CohortRow>,
}

/// One differentially private cell of a public page, as drawn once and kept
/// (see [`crate::release`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ReleasedCell {
    /// The project.
    pub project: String,
    /// The day of a daily cell, or the Monday of a weekly breakdown.
    pub period: Day,
    /// What was counted, e.g. `installs` or `os.active`.
    pub statistic: String,
    /// The breakdown value (`linux`, `1.4.2`), or `""` for a daily cell and
    /// for the row that marks a breakdown as released.
    pub key: String,
    /// The noisy count as published.
    pub value: i64,
    /// The privacy loss this release spent.
    pub epsilon: f64,
    /// The day it was drawn.
    pub released_on: Day,
}

/// Live figures for `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct StoreStatus {
    /// Writes waiting in the queue.
    pub queue_depth: u64,
    /// The queue's capacity.
    pub queue_capacity: u64,
    /// Transactions committed since start.
    pub commits: u64,
    /// Total seconds spent committing, for the average.
    pub commit_seconds_sum: f64,
    /// The slowest commit since start, in seconds.
    pub commit_seconds_max: f64,
    /// Bytes the database occupies on disk, if known.
    pub size_bytes: Option<u64>,
}

/// **The storage abstraction.** The collector talks to storage only through this.
pub trait Store: Send + Sync + 'static {
    /// Stores a validated batch; resolves after commit. Fails fast with
    /// [`StoreError::QueueFull`] rather than waiting when writes back up.
    fn ingest(&self, batch: IngestBatch) -> StoreFuture<'_, IngestOutcome> {
        self.ingest_checked(batch, Skew::default())
    }

    /// Like [`Store::ingest`], and counts `skew` in `refusals` in the same
    /// transaction, no more often than the batch's items are counted.
    fn ingest_checked(&self, batch: IngestBatch, skew: Skew) -> StoreFuture<'_, IngestOutcome>;

    /// The `refusals` rows of `project` that arrived in `from..=to`.
    fn refusals(&self, project: &str, from: Day, to: Day) -> StoreFuture<'_, Vec<RefusalRow>>;

    /// Removes every row of one install: events, install row, activity weeks
    /// and identity. Succeeds whether or not anything was there.
    fn delete_install(&self, project: &str, install: InstallHash) -> StoreFuture<'_, ()>;

    /// Removes raw per-install data older than each project's retention, and
    /// report ids too old to be retried. Counters are kept.
    fn purge(&self, policy: &RetentionPolicy, today: Day) -> StoreFuture<'_, PurgeOutcome>;

    /// Reads what stats need for `project` over `from..=to`.
    fn stats_input(&self, project: &str, from: Day, to: Day) -> StoreFuture<'_, StatsInput>;

    /// Every project that has stored data, sorted.
    fn projects(&self) -> StoreFuture<'_, Vec<String>>;

    /// The public releases of `project` whose period lies in `from..=to`.
    fn released_cells(
        &self,
        project: &str,
        from: Day,
        to: Day,
    ) -> StoreFuture<'_, Vec<ReleasedCell>>;

    /// Keeps newly drawn public releases, durably. A cell that is already
    /// stored (same project, period, statistic and key) keeps its first
    /// value: collectors sharing a database that draw at once agree on
    /// whichever was stored first, and read it back with
    /// [`Store::released_cells`].
    fn keep_released(&self, cells: Vec<ReleasedCell>) -> StoreFuture<'_, ()>;

    /// Live figures for `/metrics`.
    fn status(&self) -> StoreStatus;

    /// Stops taking writes, commits everything queued, and waits for the writer to finish.
    fn close(&self) -> StoreFuture<'_, ()>;

    // Prop breakdowns (stats): read from the daily counters only.

    /// Counter cells of `project` over `from..=to` (exact days, not whole
    /// weeks) summed over version, OS, arch and tier, keeping the props:
    /// what prop breakdowns need. Only `event`'s cells when it is given.
    fn prop_counters(
        &self,
        project: &str,
        from: Day,
        to: Day,
        event: Option<&str>,
    ) -> StoreFuture<'_, Vec<PropCounterRow>>;

    /// `weekly_uses` of `project` for the ISO weeks starting `from..=to`
    /// (Mondays): distinct installs (sent at `anonymous` or `full`) by week,
    /// event, prop and value. Only `event`'s rows when it is given, then
    /// only `prop`'s too when that is given, plus the week's "sent anything"
    /// rows ([`UseRow::is_any`]) either way.
    fn weekly_uses(
        &self,
        project: &str,
        from: Day,
        to: Day,
        event: Option<&str>,
        prop: Option<&str>,
    ) -> StoreFuture<'_, Vec<UseRow>>;

    /// `daily_uploads` of `project` over `from..=to`.
    fn uploads(&self, project: &str, from: Day, to: Day) -> StoreFuture<'_, Vec<UploadRow>>;
}

/// A prop value as breakdowns and `install_uses` name it: `true`/`false`
/// for a boolean, the token itself otherwise.
pub(crate) fn prop_value_text(value: &telemetry_protocol::PropValue) -> String {
    match value {
        telemetry_protocol::PropValue::Bool(b) => b.to_string(),
        telemetry_protocol::PropValue::Token(t) => t.clone(),
    }
}

/// One row of `weekly_uses`: how many distinct installs, sending at
/// `anonymous` or `full`, used something in one ISO week. Kept at ingest:
/// an install's weekly uses are noted in `install_uses` (raw per-install
/// data: purged with the retention, deleted with the install) and counted
/// here the first time; a deletion takes them back out, so a `reset-id`
/// does not count one user twice. The counts of a week whose uses were
/// purged are final and kept, like the daily counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UseRow {
    /// The Monday of the ISO week.
    pub week: Day,
    /// The event, or `""` for "sent anything" that week.
    pub event: String,
    /// The prop, or `""` for the event itself.
    pub prop: String,
    /// The prop's value (`true`/`false` for a boolean), or `""` for the event itself.
    pub value: String,
    /// Distinct installs.
    pub installs: u64,
}

impl UseRow {
    /// Whether this row counts the installs that sent anything that week.
    pub fn is_any(&self) -> bool {
        self.event.is_empty()
    }
}

/// One row of `daily_uploads`: ingest requests stored on one arrival day.
///
/// A **retry** is an upload that carried at least one event or report the
/// collector had already stored: a client sending again a payload whose
/// answer it never saw (a timeout, a dropped connection, a killed
/// uploader). Event ids and report ids make that visible, and replays are
/// never counted twice. A retry after a `4xx`, `429` or `503` is not one:
/// nothing of the first attempt was stored, so it counts as a first upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadRow {
    /// The UTC day the uploads arrived.
    pub day: Day,
    /// Ingest requests stored (answered `2xx`).
    pub uploads: u64,
    /// Of those, retries.
    pub retries: u64,
    /// Events and counters those retries carried that were already stored.
    pub replayed: u64,
}

/// One counter cell with its props, as [`Store::prop_counters`] returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PropCounterRow {
    /// The UTC day.
    pub day: Day,
    /// The event name.
    pub event: String,
    /// The props in their canonical JSON form (a sorted object), as stored.
    pub props: String,
    /// The count.
    pub count: u64,
}
