//! Times the collector's stats for a window, as the dashboard and the `stats`
//! command compute them, part by part, against the naive alternative: a
//! `GROUP BY` over the raw `events` table.
//!
//! The stats path is timed through the collector's public
//! [`telemetry_collector::stats::project_stats`], so whatever the store does
//! is what is measured. To show where the time goes, the SQL parts of the
//! SQLite store's stats read are also run on their own, from copies of its
//! queries in [`STATS_PARTS`]; [`parts_match_the_store`] (and the test beside
//! this code) checks that those copies still return exactly what the store
//! returns, so a change in the store cannot leave this timing the wrong thing.
//!
//! Every timed loop stops after `runs` runs or `max_duration`, whichever
//! comes first, after one untimed warm-up.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use serde::Serialize;
use telemetry_collector::stats;
use telemetry_collector::store::{StatsInput, Store};
use telemetry_protocol::Day;
use telemetry_protocol::manifest::builtin;

use crate::Error;
use crate::stats::{Summary, ms};

/// One query to time: a label and SQL taking any of the named parameters
/// `:project` (the project's row id), `:start` and `:end` (the first and last
/// day numbers read, inclusive) and `:install` (the `install` event's name).
#[derive(Debug, Clone, Copy)]
pub struct Query {
    /// What the query computes.
    pub label: &'static str,
    /// The SQL.
    pub sql: &'static str,
}

/// The SQL of the SQLite store's stats read (`read_stats` in
/// `telemetry-collector/src/store/sqlite.rs`), in its order, with named
/// parameters. Kept in step by [`parts_match_the_store`].
pub const STATS_PARTS: [Query; 3] = [
    Query {
        label: "counters",
        sql: "SELECT g.day, e.text, v.text, o.text, a.text, g.tier, g.n
             FROM (SELECT day, event, version, os, arch, tier, SUM(count) AS n
                   FROM daily_counters
                   WHERE project = :project AND day BETWEEN :start AND :end
                   GROUP BY day, event, version, os, arch, tier) g
             JOIN strings e ON e.id = g.event
             JOIN strings v ON v.id = g.version
             JOIN strings o ON o.id = g.os
             JOIN strings a ON a.id = g.arch",
    },
    Query {
        label: "installs_all_time",
        sql: "SELECT COALESCE(SUM(c.count), 0) FROM daily_counters c
             WHERE c.project = :project AND c.event = (SELECT id FROM strings WHERE text = :install)",
    },
    Query {
        label: "cohorts",
        sql: "SELECT first_day - ((first_day + 3) % 7) AS cohort, week, SUM(installs)
             FROM install_cohorts
             WHERE project = :project AND first_day BETWEEN :start AND :end AND week <= :end
               AND installs > 0
             GROUP BY cohort, week",
    },
];

/// The naive alternative: the same numbers straight from raw events over the
/// same days. `(day + 3) % 7` is the ISO weekday minus one (1970-01-01 was a
/// Thursday), so `day - (day + 3) % 7` is the week's Monday.
pub const NAIVE: [Query; 4] = [
    Query {
        label: "events per day per name",
        sql: "SELECT e.ts / 86400000 AS day, s.text, COUNT(*)
             FROM events e JOIN strings s ON s.id = e.name
             WHERE e.project = :project
               AND e.ts >= :start * 86400000 AND e.ts < (:end + 1) * 86400000
             GROUP BY day, e.name",
    },
    Query {
        label: "install events all time",
        sql: "SELECT COUNT(*) FROM events
             WHERE project = :project AND name = (SELECT id FROM strings WHERE text = :install)",
    },
    Query {
        label: "distinct installs per week",
        sql: "SELECT ts / 86400000 - ((ts / 86400000 + 3) % 7) AS week, COUNT(DISTINCT install)
             FROM events
             WHERE project = :project
               AND ts >= :start * 86400000 AND ts < (:end + 1) * 86400000
             GROUP BY week",
    },
    Query {
        // One pass over the install index rather than a join of two
        // materialized subqueries, which SQLite plans as a nested scan
        // (quadratic in installs).
        label: "cohort retention",
        sql: "WITH weeks AS (
               SELECT install, ts / 86400000 - ((ts / 86400000 + 3) % 7) AS week,
                      MIN(ts) / 86400000 AS first_day
               FROM events WHERE project = :project
               GROUP BY install, week
             ), firsts AS (
               SELECT week, MIN(first_day) OVER (PARTITION BY install) AS first_day FROM weeks
             )
             SELECT first_day - ((first_day + 3) % 7) AS cohort, week, COUNT(*)
             FROM firsts
             WHERE first_day BETWEEN :start AND :end AND week <= :end
             GROUP BY cohort, week",
    },
];

/// The parameters every [`Query`] may use.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// The project's row id in `projects`.
    pub project: i64,
    /// The first day read, as days since the epoch: the Monday of `from`'s
    /// week, as the store reads counters from there.
    pub start: i64,
    /// The last day read, inclusive.
    pub end: i64,
}

impl Params {
    /// The parameters of `project`'s stats over `from..=to`, or `None` when
    /// the project has no data.
    pub fn new(
        conn: &Connection,
        project: &str,
        from: Day,
        to: Day,
    ) -> Result<Option<Params>, Error> {
        let id: Option<i64> = conn
            .query_row("SELECT id FROM projects WHERE name = ?1", [project], |r| {
                r.get(0)
            })
            .optional()
            .map_err(db)?;
        Ok(id.map(|project| Params {
            project,
            start: i64::from(from.week_start().days_since_epoch()),
            end: i64::from(to.days_since_epoch()),
        }))
    }
}

fn db(e: rusqlite::Error) -> Error {
    Error::Database(e.to_string())
}

/// Opens `path` for the queries and their plans the way the store opens its
/// readers (read-write flags, no mutex, then `query_only` so nothing can be
/// written), so the parts are timed on the same kind of connection as the
/// whole stats path.
pub fn open_read_only(path: &Path) -> Result<Connection, Error> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(db)?;
    conn.busy_timeout(Duration::from_secs(30)).map_err(db)?;
    conn.execute_batch("PRAGMA query_only = ON").map_err(db)?;
    Ok(conn)
}

/// Runs `sql` with `params` and returns every row.
pub fn run(conn: &Connection, sql: &str, params: Params) -> Result<Vec<Vec<Value>>, Error> {
    let mut stmt = conn.prepare_cached(sql).map_err(db)?;
    for i in 1..=stmt.parameter_count() {
        let value: Value = match stmt.parameter_name(i) {
            Some(":project") => params.project.into(),
            Some(":start") => params.start.into(),
            Some(":end") => params.end.into(),
            Some(":install") => builtin::INSTALL.to_owned().into(),
            other => {
                return Err(Error::InvalidArgument(format!(
                    "unknown query parameter {other:?}"
                )));
            }
        };
        stmt.raw_bind_parameter(i, value).map_err(db)?;
    }
    let columns = stmt.column_count();
    let mut rows = stmt.raw_query();
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(db)? {
        out.push(
            (0..columns)
                .map(|c| row.get::<_, Value>(c))
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(db)?,
        );
    }
    Ok(out)
}

/// SQLite's `EXPLAIN QUERY PLAN` of `sql`, as an indented tree.
pub fn plan(conn: &Connection, sql: &str, params: Params) -> Result<String, Error> {
    let rows = run(conn, &format!("EXPLAIN QUERY PLAN {sql}"), params)?;
    let mut depth: BTreeMap<i64, usize> = BTreeMap::new();
    let mut out = String::new();
    for row in rows {
        let (Value::Integer(id), Value::Integer(parent), Value::Text(detail)) =
            (&row[0], &row[1], &row[3])
        else {
            continue;
        };
        let d = depth.get(parent).map_or(0, |d| d + 1);
        depth.insert(*id, d);
        out.push_str(&format!("{}{detail}\n", "  ".repeat(d)));
    }
    Ok(out)
}

/// The timing of one part.
#[derive(Debug, Clone, Serialize)]
pub struct Timing {
    /// What was timed.
    pub label: String,
    /// Milliseconds per run.
    pub ms: Summary,
    /// Rows the query returned (the last run).
    pub rows: usize,
    /// True when `max_duration` stopped the runs before `runs`.
    pub hit_time_limit: bool,
    /// `EXPLAIN QUERY PLAN`, for SQL parts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
}

/// How many times to run each part, and for how long at most.
#[derive(Debug, Clone, Copy)]
pub struct Runs {
    /// Timed runs, after one untimed warm-up.
    pub runs: usize,
    /// The most time one part's runs may take, warm-up included.
    pub max_duration: Duration,
}

/// The bookkeeping of one timed loop, shared by the blocking and the async
/// timers: one untimed warm-up, then runs until [`Runs`] says stop.
struct Sampler {
    runs: Runs,
    started: Instant,
    samples: Vec<f64>,
    hit_time_limit: bool,
}

impl Sampler {
    /// Starts the clock, just before the warm-up.
    fn start(runs: Runs) -> Sampler {
        Sampler {
            runs,
            started: Instant::now(),
            samples: Vec::with_capacity(runs.runs),
            hit_time_limit: false,
        }
    }

    /// Called after the warm-up. A warm-up longer than the whole budget is
    /// the only sample: running a query of minutes twice would double the
    /// bound for nothing.
    fn warmed_up(&mut self) {
        if self.started.elapsed() > self.runs.max_duration {
            self.samples.push(ms(self.started.elapsed()));
            self.hit_time_limit = true;
        }
    }

    /// Whether to time one more run.
    fn again(&mut self) -> bool {
        if self.samples.len() >= self.runs.runs.max(1) {
            return false;
        }
        if !self.samples.is_empty() && self.started.elapsed() > self.runs.max_duration {
            self.hit_time_limit = true;
            return false;
        }
        true
    }

    /// Records a run that began at `t`.
    fn record(&mut self, t: Instant) {
        self.samples.push(ms(t.elapsed()));
    }

    fn finish(self, label: &str, rows: usize) -> Timing {
        Timing {
            label: label.to_owned(),
            ms: Summary::of(&self.samples).expect("at least one run"),
            rows,
            hit_time_limit: self.hit_time_limit,
            plan: None,
        }
    }
}

/// Times `f` per [`Runs`]; `f` returns the row count.
pub fn time<F>(label: &str, runs: Runs, mut f: F) -> Result<Timing, Error>
where
    F: FnMut() -> Result<usize, Error>,
{
    let mut sampler = Sampler::start(runs);
    let mut rows = f()?;
    sampler.warmed_up();
    while sampler.again() {
        let t = Instant::now();
        rows = f()?;
        sampler.record(t);
    }
    Ok(sampler.finish(label, rows))
}

/// Times each query of `queries` on `conn`, with its plan.
pub fn time_queries(
    conn: &Connection,
    queries: &[Query],
    params: Params,
    runs: Runs,
    prefix: &str,
) -> Result<Vec<Timing>, Error> {
    queries
        .iter()
        .map(|q| {
            let mut t = time(&format!("{prefix}{}", q.label), runs, || {
                run(conn, q.sql, params).map(|r| r.len())
            })?;
            t.plan = Some(plan(conn, q.sql, params)?);
            Ok(t)
        })
        .collect()
}

/// Times the whole stats path, [`stats::project_stats`] (read and compute),
/// then [`stats::compute`] alone on the input read once.
pub async fn time_stats_path(
    store: &dyn Store,
    project: &str,
    from: Day,
    to: Day,
    runs: Runs,
) -> Result<[Timing; 2], Error> {
    let read = || async {
        stats::project_stats(store, project, from, to)
            .await
            .map_err(|e| Error::Store(e.to_string()))
    };
    let mut sampler = Sampler::start(runs);
    let mut rows = read().await?.daily.len();
    sampler.warmed_up();
    while sampler.again() {
        let t = Instant::now();
        rows = read().await?.daily.len();
        sampler.record(t);
    }
    let whole = sampler.finish(
        "stats: project_stats (read + compute, as the dashboard and `stats` run it)",
        rows,
    );
    let input = store
        .stats_input(project, from, to)
        .await
        .map_err(|e| Error::Store(e.to_string()))?;
    let compute = time("stats: compute alone (Rust, no SQL)", runs, || {
        Ok(stats::compute(project, from, to, &input).daily.len())
    })?;
    Ok([whole, compute])
}

/// Times one event's breakdown by one prop, [`stats::event_breakdown`] (read
/// that event's counter cells with their props, then fold them), as
/// `telemetry-collector stats --event E --prop K` runs it.
pub async fn time_event_breakdown(
    store: &dyn Store,
    project: &str,
    (from, to): (Day, Day),
    (event, prop): (&str, &str),
    runs: Runs,
) -> Result<Timing, Error> {
    let read = || async {
        stats::event_breakdown(store, project, None, from, to, event, Some(prop))
            .await
            .map_err(|e| Error::Store(e.to_string()))
    };
    let mut sampler = Sampler::start(runs);
    let mut rows = read().await?.props.first().map_or(0, |b| b.values.len());
    sampler.warmed_up();
    while sampler.again() {
        let t = Instant::now();
        rows = read().await?.props.first().map_or(0, |b| b.values.len());
        sampler.record(t);
    }
    Ok(sampler.finish(
        &format!("stats: breakdown of `{event}` by `{prop}` (stats --event {event} --prop {prop})"),
        rows,
    ))
}

/// Times one store read that the breakdown makes, so that a slow breakdown
/// says which read is slow: `read` returns how many rows it got.
pub async fn time_store_read<F, Fut>(label: &str, runs: Runs, read: F) -> Result<Timing, Error>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<usize, telemetry_collector::store::StoreError>>,
{
    let read = || async { read().await.map_err(|e| Error::Store(e.to_string())) };
    let mut sampler = Sampler::start(runs);
    let mut rows = read().await?;
    sampler.warmed_up();
    while sampler.again() {
        let t = Instant::now();
        rows = read().await?;
        sampler.record(t);
    }
    Ok(sampler.finish(label, rows))
}

/// Checks that the copies in [`STATS_PARTS`] return exactly what the store's
/// stats read returns for the same window; an error says which differs.
pub fn parts_match_the_store(
    conn: &Connection,
    params: Params,
    input: &StatsInput,
) -> Result<(), Error> {
    let mismatch = |what: &str| {
        Err(Error::InvalidArgument(format!(
            "the copied `{what}` query no longer returns what the store's stats read returns; \
             update STATS_PARTS in benches/loadgen/src/statsquery.rs from read_stats"
        )))
    };
    let text = |v: &Value| match v {
        Value::Text(t) => t.clone(),
        _ => String::new(),
    };
    let mut counters: Vec<_> = run(conn, STATS_PARTS[0].sql, params)?
        .iter()
        .map(|r| {
            (
                int(&r[0]),
                text(&r[1]),
                text(&r[2]),
                text(&r[3]),
                text(&r[4]),
                int(&r[6]),
            )
        })
        .collect();
    let mut expected: Vec<_> = input
        .counters
        .iter()
        .map(|c| {
            (
                i64::from(c.day.days_since_epoch()),
                c.event.clone(),
                c.version.clone(),
                c.os.clone(),
                c.arch.clone(),
                c.count as i64,
            )
        })
        .collect();
    counters.sort();
    expected.sort();
    if counters != expected {
        return mismatch(STATS_PARTS[0].label);
    }
    let all_time = run(conn, STATS_PARTS[1].sql, params)?;
    if all_time.len() != 1 || int(&all_time[0][0]) != input.installs_all_time as i64 {
        return mismatch(STATS_PARTS[1].label);
    }
    if cohort_cells(conn, STATS_PARTS[2].sql, params)? != store_cohort_cells(input) {
        return mismatch(STATS_PARTS[2].label);
    }
    Ok(())
}

/// An integer cell; anything else becomes a value no count can equal, so a
/// comparison fails rather than the benchmark.
fn int(v: &Value) -> i64 {
    match v {
        Value::Integer(i) => *i,
        _ => i64::MIN,
    }
}

/// A retention cell: (cohort week, active week, installs), as day numbers.
pub type CohortCell = (i64, i64, i64);

/// The sorted cells a cohort query (stats part or naive) returns.
pub fn cohort_cells(
    conn: &Connection,
    sql: &str,
    params: Params,
) -> Result<Vec<CohortCell>, Error> {
    let mut cells: Vec<_> = run(conn, sql, params)?
        .iter()
        .map(|r| (int(&r[0]), int(&r[1]), int(&r[2])))
        .collect();
    cells.sort_unstable();
    Ok(cells)
}

/// The sorted cells of the store's stats input.
pub fn store_cohort_cells(input: &StatsInput) -> Vec<CohortCell> {
    let mut cells: Vec<_> = input
        .cohorts
        .iter()
        .map(|c| {
            (
                i64::from(c.cohort.days_since_epoch()),
                i64::from(c.active.days_since_epoch()),
                c.installs as i64,
            )
        })
        .collect();
    cells.sort_unstable();
    cells
}
