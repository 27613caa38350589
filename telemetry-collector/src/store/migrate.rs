//! Copies a SQLite database into PostgreSQL: `telemetry-collector migrate`.
//!
//! The copy is one PostgreSQL transaction holding exclusive locks on the
//! tables, so a failed migration leaves the target as it was and no collector
//! writes halfway through. The target must hold no data yet: copying into a
//! database that already counts something would count it twice.
//!
//! Rows are read by a blocking thread and handed over in chunks through a
//! bounded channel, so memory stays flat whatever the size of the database;
//! each chunk becomes one multi-row `INSERT ... SELECT FROM unnest(...)`.
//!
//! Install ids are copied as the keyed hashes they already are. The collectors
//! on PostgreSQL must therefore use the pseudonym key file of the SQLite
//! deployment; given its fingerprint, the migration records it so a collector
//! with another key refuses to start.

use std::collections::BTreeMap;
use std::path::Path;

use tokio::sync::mpsc;
use tokio_postgres::types::ToSql;

use super::postgres;
use super::sqlite::{SqliteOptions, SqliteStore};
use super::{Store, StoreError};

/// Rows read from SQLite per chunk.
const CHUNK_ROWS: usize = 5000;

/// How many rows of each table were copied, by table name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrateOutcome {
    /// Rows per PostgreSQL table.
    pub rows: BTreeMap<&'static str, u64>,
}

#[derive(Clone, Copy)]
enum Kind {
    Text,
    Int2,
    Int4,
    Int8,
    Float8,
    Bytea,
}

impl Kind {
    fn sql(self) -> &'static str {
        match self {
            Kind::Text => "text[]",
            Kind::Int2 => "int2[]",
            Kind::Int4 => "int4[]",
            Kind::Int8 => "int8[]",
            Kind::Float8 => "float8[]",
            Kind::Bytea => "bytea[]",
        }
    }
}

/// One table: how to read it from SQLite (dictionary ids resolved to text)
/// and the PostgreSQL columns it fills, in the same order.
struct Table {
    name: &'static str,
    select: &'static str,
    columns: &'static [(&'static str, Kind)],
}

const TABLES: &[Table] = &[
    Table {
        name: "projects",
        select: "SELECT name FROM projects",
        columns: &[("name", Kind::Text)],
    },
    Table {
        name: "daily_counters",
        select: "SELECT p.name, c.day, e.text, pr.text, v.text, o.text, a.text, c.tier, c.count
                 FROM daily_counters c
                 JOIN projects p ON p.id = c.project
                 JOIN strings e ON e.id = c.event
                 JOIN strings pr ON pr.id = c.props
                 JOIN strings v ON v.id = c.version
                 JOIN strings o ON o.id = c.os
                 JOIN strings a ON a.id = c.arch",
        columns: &[
            ("project", Kind::Text),
            ("day", Kind::Int4),
            ("event", Kind::Text),
            ("props", Kind::Text),
            ("version", Kind::Text),
            ("os", Kind::Text),
            ("arch", Kind::Text),
            ("tier", Kind::Int2),
            ("count", Kind::Int8),
        ],
    },
    Table {
        name: "events",
        select: "SELECT p.name, ev.event_id, ev.install, ev.ts, n.text, pr.text
                 FROM events ev
                 JOIN projects p ON p.id = ev.project
                 JOIN strings n ON n.id = ev.name
                 JOIN strings pr ON pr.id = ev.props",
        columns: &[
            ("project", Kind::Text),
            ("event_id", Kind::Bytea),
            ("install", Kind::Bytea),
            ("ts", Kind::Int8),
            ("name", Kind::Text),
            ("props", Kind::Text),
        ],
    },
    Table {
        name: "installs",
        select: "SELECT p.name, i.install, i.first_seen_day, i.last_seen_day
                 FROM installs i JOIN projects p ON p.id = i.project",
        columns: &[
            ("project", Kind::Text),
            ("install", Kind::Bytea),
            ("first_seen_day", Kind::Int4),
            ("last_seen_day", Kind::Int4),
        ],
    },
    Table {
        name: "install_weeks",
        select: "SELECT p.name, w.install, w.week
                 FROM install_weeks w JOIN projects p ON p.id = w.project",
        columns: &[
            ("project", Kind::Text),
            ("install", Kind::Bytea),
            ("week", Kind::Int4),
        ],
    },
    Table {
        name: "install_cohorts",
        select: "SELECT p.name, c.first_day, c.week, c.installs
                 FROM install_cohorts c JOIN projects p ON p.id = c.project",
        columns: &[
            ("project", Kind::Text),
            ("first_day", Kind::Int4),
            ("week", Kind::Int4),
            ("installs", Kind::Int8),
        ],
    },
    Table {
        name: "install_uses",
        // Id 0 (the event itself, or "sent anything") is `''` in PostgreSQL.
        select: "SELECT p.name, u.week, u.install,
                        COALESCE(e.text, ''), COALESCE(k.text, ''), COALESCE(v.text, '')
                 FROM install_uses u
                 JOIN projects p ON p.id = u.project
                 LEFT JOIN strings e ON e.id = u.event
                 LEFT JOIN strings k ON k.id = u.prop
                 LEFT JOIN strings v ON v.id = u.value",
        columns: &[
            ("project", Kind::Text),
            ("week", Kind::Int4),
            ("install", Kind::Bytea),
            ("event", Kind::Text),
            ("prop", Kind::Text),
            ("value", Kind::Text),
        ],
    },
    Table {
        name: "weekly_uses",
        select: "SELECT p.name, COALESCE(e.text, ''), COALESCE(k.text, ''), u.week,
                        COALESCE(v.text, ''), u.installs
                 FROM weekly_uses u
                 JOIN projects p ON p.id = u.project
                 LEFT JOIN strings e ON e.id = u.event
                 LEFT JOIN strings k ON k.id = u.prop
                 LEFT JOIN strings v ON v.id = u.value",
        columns: &[
            ("project", Kind::Text),
            ("event", Kind::Text),
            ("prop", Kind::Text),
            ("week", Kind::Int4),
            ("value", Kind::Text),
            ("installs", Kind::Int8),
        ],
    },
    Table {
        name: "daily_uploads",
        select: "SELECT p.name, u.day, u.uploads, u.retries, u.replayed
                 FROM daily_uploads u JOIN projects p ON p.id = u.project",
        columns: &[
            ("project", Kind::Text),
            ("day", Kind::Int4),
            ("uploads", Kind::Int8),
            ("retries", Kind::Int8),
            ("replayed", Kind::Int8),
        ],
    },
    Table {
        name: "identities",
        select: "SELECT p.name, i.install, i.fields
                 FROM identities i JOIN projects p ON p.id = i.project",
        columns: &[
            ("project", Kind::Text),
            ("install", Kind::Bytea),
            ("fields", Kind::Text),
        ],
    },
    Table {
        name: "seen_reports",
        select: "SELECT p.name, r.report_id, r.day
                 FROM seen_reports r JOIN projects p ON p.id = r.project",
        columns: &[
            ("project", Kind::Text),
            ("report_id", Kind::Bytea),
            ("day", Kind::Int4),
        ],
    },
    Table {
        name: "refusals",
        select: "SELECT p.name, r.day, v.text, r.reason, r.detail, r.count
                 FROM refusals r
                 JOIN projects p ON p.id = r.project
                 JOIN strings v ON v.id = r.version",
        columns: &[
            ("project", Kind::Text),
            ("day", Kind::Int4),
            ("version", Kind::Text),
            ("reason", Kind::Text),
            ("detail", Kind::Text),
            ("count", Kind::Int8),
        ],
    },
    Table {
        name: "public_releases",
        select: "SELECT project, period, statistic, key, value, epsilon, released_on
                 FROM public_releases",
        columns: &[
            ("project", Kind::Text),
            ("period", Kind::Int4),
            ("statistic", Kind::Text),
            ("key", Kind::Text),
            ("value", Kind::Int8),
            ("epsilon", Kind::Float8),
            ("released_on", Kind::Int4),
        ],
    },
];

/// One column of a chunk, typed for PostgreSQL.
enum Column {
    Text(Vec<String>),
    Int2(Vec<i16>),
    Int4(Vec<i32>),
    Int8(Vec<i64>),
    Float8(Vec<f64>),
    Bytea(Vec<Vec<u8>>),
}

impl Column {
    fn new(kind: Kind) -> Column {
        match kind {
            Kind::Text => Column::Text(Vec::new()),
            Kind::Int2 => Column::Int2(Vec::new()),
            Kind::Int4 => Column::Int4(Vec::new()),
            Kind::Int8 => Column::Int8(Vec::new()),
            Kind::Float8 => Column::Float8(Vec::new()),
            Kind::Bytea => Column::Bytea(Vec::new()),
        }
    }

    fn push(&mut self, row: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<()> {
        let int = |row: &rusqlite::Row<'_>| row.get::<_, i64>(i);
        let narrow = |v: i64| {
            i32::try_from(v).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(
                    i,
                    rusqlite::types::Type::Integer,
                    Box::new(e),
                )
            })
        };
        match self {
            Column::Text(v) => v.push(row.get(i)?),
            Column::Int2(v) => v.push(narrow(int(row)?)? as i16),
            Column::Int4(v) => v.push(narrow(int(row)?)?),
            Column::Int8(v) => v.push(int(row)?),
            Column::Float8(v) => v.push(row.get(i)?),
            Column::Bytea(v) => v.push(row.get(i)?),
        }
        Ok(())
    }

    fn as_param(&self) -> &(dyn ToSql + Sync) {
        match self {
            Column::Text(v) => v,
            Column::Int2(v) => v,
            Column::Int4(v) => v,
            Column::Int8(v) => v,
            Column::Float8(v) => v,
            Column::Bytea(v) => v,
        }
    }
}

/// A chunk of rows of `TABLES[table]`.
struct Chunk {
    table: usize,
    rows: u64,
    columns: Vec<Column>,
}

/// Reads every table of the SQLite file at `path` into `out`, chunk by chunk.
fn read_sqlite(path: &Path, out: mpsc::Sender<Chunk>) -> Result<(), StoreError> {
    let db = |e: rusqlite::Error| StoreError::Database(format!("reading the SQLite database: {e}"));
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(db)?;
    // One read transaction, so every table is read from the same snapshot.
    conn.execute_batch("BEGIN").map_err(db)?;
    for (t, table) in TABLES.iter().enumerate() {
        let fresh = || Chunk {
            table: t,
            rows: 0,
            columns: table.columns.iter().map(|(_, k)| Column::new(*k)).collect(),
        };
        let mut chunk = fresh();
        let mut stmt = conn.prepare(table.select).map_err(db)?;
        let mut rows = stmt.query([]).map_err(db)?;
        while let Some(row) = rows.next().map_err(db)? {
            for (i, column) in chunk.columns.iter_mut().enumerate() {
                column.push(row, i).map_err(db)?;
            }
            chunk.rows += 1;
            if chunk.rows as usize >= CHUNK_ROWS {
                let full = std::mem::replace(&mut chunk, fresh());
                out.blocking_send(full).map_err(|_| StoreError::Closed)?;
            }
        }
        if chunk.rows > 0 {
            out.blocking_send(chunk).map_err(|_| StoreError::Closed)?;
        }
    }
    Ok(())
}

/// **Copies the SQLite database at `sqlite` into the PostgreSQL database at
/// `url`**, creating its schema first. Refuses a target that already holds
/// data. `key_fingerprint` ([`postgres::key_fingerprint`] of the SQLite
/// deployment's pseudonym key) is recorded in, or checked against, the target.
pub async fn sqlite_to_postgres(
    sqlite: &Path,
    url: &str,
    key_fingerprint: Option<&str>,
) -> Result<MigrateOutcome, StoreError> {
    if !sqlite.exists() {
        return Err(StoreError::Database(format!(
            "no SQLite database at {}",
            sqlite.display()
        )));
    }
    // Opening brings an older SQLite schema up to date; closing checkpoints its WAL.
    let source = SqliteStore::open(sqlite, SqliteOptions::default())?;
    source.close().await?;

    let e = |e: tokio_postgres::Error| match e.as_db_error() {
        Some(db) => StoreError::Database(format!("{} ({})", db.message(), db.code().code())),
        None => StoreError::Database(e.to_string()),
    };
    let mut client = postgres::connect_and_migrate(url, key_fingerprint).await?;
    let tx = client.transaction().await.map_err(e)?;
    let names: Vec<&str> = TABLES.iter().map(|t| t.name).collect();
    tx.batch_execute(&format!(
        "LOCK TABLE {} IN EXCLUSIVE MODE",
        names.join(", ")
    ))
    .await
    .map_err(e)?;
    for name in &names {
        let any: bool = tx
            .query_one(&format!("SELECT EXISTS (SELECT 1 FROM {name})"), &[])
            .await
            .map_err(e)?
            .get(0);
        if any {
            return Err(StoreError::Database(format!(
                "the PostgreSQL database already holds data (table {name}); migrate into an empty \
                 database or schema so nothing is counted twice"
            )));
        }
    }
    let mut inserts = Vec::with_capacity(TABLES.len());
    for table in TABLES {
        let columns: Vec<&str> = table.columns.iter().map(|(c, _)| *c).collect();
        let params: Vec<String> = table
            .columns
            .iter()
            .enumerate()
            .map(|(i, (_, k))| format!("${}::{}", i + 1, k.sql()))
            .collect();
        let sql = format!(
            "INSERT INTO {} ({}) SELECT * FROM unnest({})",
            table.name,
            columns.join(", "),
            params.join(", ")
        );
        inserts.push(tx.prepare(&sql).await.map_err(e)?);
    }

    let (chunks, mut incoming) = mpsc::channel(2);
    let path = sqlite.to_owned();
    let reader = tokio::task::spawn_blocking(move || read_sqlite(&path, chunks));
    let mut outcome = MigrateOutcome::default();
    for table in TABLES {
        outcome.rows.insert(table.name, 0);
    }
    while let Some(chunk) = incoming.recv().await {
        let params: Vec<&(dyn ToSql + Sync)> = chunk.columns.iter().map(Column::as_param).collect();
        tx.execute(&inserts[chunk.table], &params)
            .await
            .map_err(e)?;
        *outcome.rows.entry(TABLES[chunk.table].name).or_default() += chunk.rows;
    }
    reader
        .await
        .map_err(|e| StoreError::Database(format!("the SQLite reader failed: {e}")))??;
    tx.commit().await.map_err(e)?;
    Ok(outcome)
}
