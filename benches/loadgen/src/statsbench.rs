//! The stats-latency benchmark of issue 8: loads (or reuses) a database with
//! [`statsload`](crate::statsload), then times the stats of a window with
//! [`statsquery`](crate::statsquery), and formats the result.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use telemetry_collector::store::Store;
use telemetry_collector::store::sqlite::{SqliteOptions, SqliteStore};
use telemetry_protocol::Day;

use crate::Error;
use crate::statsload::{self, LoadOptions, LoadReport, LoadSpec, Loaded};
use crate::statsquery::{self, NAIVE, Params, Runs, STATS_PARTS, Timing};

/// Everything one benchmark run needs.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// The data to load.
    pub spec: LoadSpec,
    /// The database file. Reused when a finished load of the same spec is
    /// recorded beside it; otherwise it must not exist yet.
    pub db: PathBuf,
    /// How the load runs.
    pub load: LoadOptions,
    /// The stats window's length in days, ending on `spec.end`.
    pub window_days: u32,
    /// Runs of the stats path and of each of its parts.
    pub stats_runs: Runs,
    /// Runs of each naive query.
    pub naive_runs: Runs,
    /// Skip the naive queries.
    pub skip_naive: bool,
    /// Reuse a load of the same spec that its time limit cut short.
    pub accept_partial: bool,
    /// A PostgreSQL database holding the same data (`telemetry-collector
    /// migrate` of `db`): its stats must equal SQLite's, and its stats path
    /// and breakdown are timed too, in the same run.
    pub postgres: Option<String>,
}

/// What a benchmark run found.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// The data.
    pub spec: LoadSpec,
    /// How it was loaded (now or earlier).
    pub load: LoadReport,
    /// True when an earlier load was reused.
    pub reused: bool,
    /// Database size on disk after the load (WAL folded in), bytes.
    pub db_bytes: u64,
    /// The first day of the stats window.
    pub from: Day,
    /// The last day of the stats window.
    pub to: Day,
    /// The stats path, compute alone, then each SQL part of the read.
    pub stats: Vec<Timing>,
    /// Each naive query over raw events.
    pub naive: Vec<Timing>,
}

fn store_err(e: telemetry_collector::store::StoreError) -> Error {
    Error::Store(e.to_string())
}

/// Loads `config.spec` into `config.db` unless an identical finished load is
/// recorded there; returns the load report and whether it was reused.
pub async fn ensure_loaded(config: &BenchConfig) -> Result<(LoadReport, bool), Error> {
    if let Some(previous) = statsload::previous_load(&config.db)
        && previous.spec == config.spec
        && (previous.report.complete || config.accept_partial)
        && config.db.exists()
    {
        return Ok((previous.report, true));
    }
    if config.db.exists() {
        return Err(Error::InvalidArgument(format!(
            "{} exists but holds no finished load of this spec; remove it or choose another --db",
            config.db.display()
        )));
    }
    let store =
        Arc::new(SqliteStore::open(&config.db, SqliteOptions::default()).map_err(store_err)?);
    let report = statsload::load(store.clone(), &config.spec, config.load).await?;
    // Closing folds the WAL into the database, so its size is the whole size.
    store.close().await.map_err(store_err)?;
    // Recorded even when cut short, so `accept_partial` can time it again.
    statsload::record_load(
        &config.db,
        &Loaded {
            spec: config.spec.clone(),
            report: report.clone(),
        },
    )?;
    Ok((report, false))
}

/// Size on disk of a SQLite database and its WAL.
pub fn db_bytes(db: &Path) -> u64 {
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    size(db) + size(Path::new(&wal))
}

/// Runs the whole benchmark.
pub async fn run(config: &BenchConfig) -> Result<BenchReport, Error> {
    let (load, reused) = ensure_loaded(config).await?;
    let to = config.spec.end;
    let from = to.add_days(1 - config.window_days.max(1) as i32);
    let store = SqliteStore::open(&config.db, SqliteOptions::default()).map_err(store_err)?;
    let conn = statsquery::open_read_only(&config.db)?;
    let params = Params::new(&conn, &config.spec.project, from, to)?.ok_or_else(|| {
        Error::InvalidArgument(format!("project `{}` has no data", config.spec.project))
    })?;
    let input = store
        .stats_input(&config.spec.project, from, to)
        .await
        .map_err(store_err)?;
    statsquery::parts_match_the_store(&conn, params, &input)?;

    let mut stats =
        statsquery::time_stats_path(&store, &config.spec.project, from, to, config.stats_runs)
            .await?
            .to_vec();
    stats.push(
        statsquery::time_event_breakdown(
            &store,
            &config.spec.project,
            (from, to),
            ("command", "name"),
            config.stats_runs,
        )
        .await?,
    );
    // The breakdown's two reads on their own: the event's counter cells and
    // its distinct installs by prop value.
    let project = config.spec.project.as_str();
    stats.push(
        statsquery::time_store_read(
            "store: prop_counters of `command` (the breakdown's counts)",
            config.stats_runs,
            || async {
                Ok(store
                    .prop_counters(project, from, to, Some("command"))
                    .await?
                    .len())
            },
        )
        .await?,
    );
    stats.push(
        statsquery::time_store_read(
            "store: weekly_uses of `command`.`name` (the breakdown's distinct installs)",
            config.stats_runs,
            || async {
                Ok(store
                    .weekly_uses(
                        project,
                        from.week_start(),
                        to.week_start(),
                        Some("command"),
                        Some("name"),
                    )
                    .await?
                    .len())
            },
        )
        .await?,
    );
    stats.extend(statsquery::time_queries(
        &conn,
        &STATS_PARTS,
        params,
        config.stats_runs,
        "stats sql: ",
    )?);
    if let Some(url) = &config.postgres {
        stats.extend(time_postgres(config, url, &store, (from, to)).await?);
    }
    let naive = if config.skip_naive {
        Vec::new()
    } else {
        statsquery::time_queries(&conn, &NAIVE, params, config.naive_runs, "naive: ")?
    };
    store.close().await.map_err(store_err)?;
    Ok(BenchReport {
        spec: config.spec.clone(),
        load,
        reused,
        db_bytes: db_bytes(&config.db),
        from,
        to,
        stats,
        naive,
    })
}

/// The stats path and the breakdown on the PostgreSQL copy, after checking
/// that its stats are SQLite's, field for field.
async fn time_postgres(
    config: &BenchConfig,
    url: &str,
    sqlite: &SqliteStore,
    (from, to): (Day, Day),
) -> Result<Vec<Timing>, Error> {
    use telemetry_collector::stats::project_stats;
    use telemetry_collector::store::postgres::{PostgresOptions, PostgresStore};
    let project = config.spec.project.as_str();
    let pg = PostgresStore::open(url, PostgresOptions::default()).map_err(store_err)?;
    let json = |s: &telemetry_collector::report::ProjectStats| serde_json::to_value(s).ok();
    let (a, b) = (
        project_stats(sqlite, project, from, to)
            .await
            .map_err(store_err)?,
        project_stats(&pg, project, from, to)
            .await
            .map_err(store_err)?,
    );
    if json(&a) != json(&b) {
        return Err(Error::InvalidArgument(format!(
            "the stats of {url} differ from {}'s: migrate it again",
            config.db.display()
        )));
    }
    let mut timings = statsquery::time_stats_path(&pg, project, from, to, config.stats_runs)
        .await?
        .to_vec();
    timings.truncate(1);
    timings.push(
        statsquery::time_event_breakdown(
            &pg,
            project,
            (from, to),
            ("command", "name"),
            config.stats_runs,
        )
        .await?,
    );
    for t in &mut timings {
        t.label = format!("postgres: {}", t.label);
    }
    pg.close().await.map_err(store_err)?;
    Ok(timings)
}

/// The Markdown table header of [`markdown_rows`].
pub const HEADER: &str =
    "| part | runs | median ms | p90 ms | min ms | max ms | rows |\n|---|---|---|---|---|---|---|";

/// One line saying what was measured: data, load and window.
pub fn summary(r: &BenchReport) -> String {
    let events = if r.load.complete {
        format!("{} events", r.spec.events)
    } else {
        format!(
            "{} of {} events (the load hit its time limit)",
            r.load.accepted, r.spec.events
        )
    };
    format!(
        "{events}, {} installs over {} days to {}; {} in {:.1} s ({:.0} events/s, {} batches, {} commits); database {:.1} MiB; window {}..={} ({} days)",
        r.spec.installs,
        r.spec.days,
        r.spec.end,
        if r.reused { "loaded earlier" } else { "loaded" },
        r.load.elapsed_secs,
        r.load.events_per_sec,
        r.load.batches,
        r.load.commits,
        r.db_bytes as f64 / 1_048_576.0,
        r.from,
        r.to,
        r.to.days_since_epoch() - r.from.days_since_epoch() + 1,
    )
}

/// One Markdown row per timed part, stats first.
pub fn markdown_rows(r: &BenchReport) -> String {
    r.stats
        .iter()
        .chain(&r.naive)
        .map(|t| {
            format!(
                "| {} | {}{} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
                t.label,
                t.ms.n,
                if t.hit_time_limit {
                    " (time limit)"
                } else {
                    ""
                },
                t.ms.median,
                t.ms.p90,
                t.ms.min,
                t.ms.max,
                t.rows
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The query plans of every SQL part, as one text block.
pub fn plans(r: &BenchReport) -> String {
    r.stats
        .iter()
        .chain(&r.naive)
        .filter_map(|t| Some(format!("{}:\n{}", t.label, t.plan.as_deref()?)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The whole report as Markdown: the summary, the table and the plans.
pub fn markdown(r: &BenchReport) -> String {
    format!(
        "{}\n\n{HEADER}\n{}\n\nQuery plans (EXPLAIN QUERY PLAN):\n\n```\n{}```\n",
        summary(r),
        markdown_rows(r),
        plans(r)
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use rusqlite::types::Value;
    use telemetry_collector::stats::project_stats;
    use telemetry_protocol::manifest::builtin;

    use super::*;

    fn config(dir: &Path) -> BenchConfig {
        let runs = Runs {
            runs: 3,
            max_duration: Duration::from_secs(30),
        };
        BenchConfig {
            spec: LoadSpec {
                project: "bench".into(),
                events: 2_000,
                installs: 200,
                days: 120,
                end: "2026-11-20".parse().unwrap(),
                seed: 3,
            },
            db: dir.join("stats.db"),
            load: LoadOptions {
                in_flight: 64,
                max_duration: Duration::from_secs(120),
                days_per_upload: 3,
            },
            window_days: 90,
            stats_runs: runs,
            naive_runs: runs,
            skip_naive: false,
            accept_partial: false,
            postgres: None,
        }
    }

    fn int(v: &Value) -> i64 {
        match v {
            Value::Integer(i) => *i,
            other => panic!("not an integer: {other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_loader_stores_what_it_says_and_stats_agree_with_raw_events() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let spec = &config.spec;
        let (load, reused) = ensure_loaded(&config).await.unwrap();
        assert!(!reused);
        assert!(load.complete);
        assert_eq!((load.accepted, load.duplicates), (2_000, 0));
        assert_eq!(load.installs, 200);
        assert!(
            load.commits < load.batches,
            "group commit folds batches: {load:?}"
        );

        let store = SqliteStore::open(&config.db, SqliteOptions::default()).unwrap();
        // Over every day loaded, the stats count every event and install.
        let all = project_stats(&store, &spec.project, spec.start(), spec.end)
            .await
            .unwrap();
        assert_eq!(all.installs_all_time, 200);
        assert_eq!(all.installs, 200);
        assert_eq!(all.daily.iter().map(|d| d.events).sum::<u64>(), 2_000);
        assert!(all.setup_started > 100 && all.setup_completed > 0);

        // The 90-day window the benchmark times: the copied SQL parts match
        // the store, and the naive queries agree with the stats.
        let to = spec.end;
        let from = to.add_days(-89);
        let stats = project_stats(&store, &spec.project, from, to)
            .await
            .unwrap();
        let input = store.stats_input(&spec.project, from, to).await.unwrap();
        let conn = statsquery::open_read_only(&config.db).unwrap();
        let params = Params::new(&conn, &spec.project, from, to)
            .unwrap()
            .unwrap();
        statsquery::parts_match_the_store(&conn, params, &input).unwrap();
        assert!(
            stats.installs < 200 && stats.installs > 100,
            "{}",
            stats.installs
        );

        let mut from_counters: BTreeMap<(i64, String), i64> = BTreeMap::new();
        for c in &input.counters {
            *from_counters
                .entry((i64::from(c.day.days_since_epoch()), c.event.clone()))
                .or_default() += c.count as i64;
        }
        let naive_daily: BTreeMap<(i64, String), i64> =
            statsquery::run(&conn, NAIVE[0].sql, params)
                .unwrap()
                .iter()
                .map(|r| {
                    let Value::Text(name) = &r[1] else { panic!() };
                    ((int(&r[0]), name.clone()), int(&r[2]))
                })
                .collect();
        assert_eq!(naive_daily, from_counters);
        assert!(naive_daily.keys().any(|(_, n)| n == "command"));

        let naive_installs = statsquery::run(&conn, NAIVE[1].sql, params).unwrap();
        assert_eq!(int(&naive_installs[0][0]), 200);

        // One `active` per install per week used, so the weekly actives the
        // stats show are the distinct installs of each week.
        let naive_weekly: BTreeMap<String, u64> = statsquery::run(&conn, NAIVE[2].sql, params)
            .unwrap()
            .iter()
            .map(|r| {
                let week = Day::from_days_since_epoch(int(&r[0]) as i32).iso_week();
                (week.to_string(), int(&r[1]) as u64)
            })
            .collect();
        let weekly: BTreeMap<String, u64> = stats
            .weekly
            .iter()
            .filter(|w| w.active_installs > 0)
            .map(|w| (w.week.to_string(), w.active_installs))
            .collect();
        assert_eq!(naive_weekly, weekly);

        assert_eq!(
            statsquery::cohort_cells(&conn, NAIVE[3].sql, params).unwrap(),
            statsquery::store_cohort_cells(&input)
        );
        let retained_later: u64 = stats.retention.iter().flat_map(|c| &c.retained[1..]).sum();
        assert!(retained_later > 0, "some installs come back in later weeks");
        // Cohorts start on the Monday of `from`'s week, as the counters read does.
        let installs_read: i64 = naive_daily
            .iter()
            .filter(|((_, name), _)| name == builtin::INSTALL)
            .map(|(_, n)| n)
            .sum();
        assert_eq!(
            stats
                .retention
                .iter()
                .map(|c| c.installs as i64)
                .sum::<i64>(),
            installs_read,
            "every install of the days read is in one cohort"
        );
        store.close().await.unwrap();
        drop(conn);

        // The whole run reuses the load and times every part.
        let report = run(&config).await.unwrap();
        assert!(report.reused);
        assert_eq!(report.load.accepted, 2_000);
        assert_eq!(report.stats.len(), 5 + STATS_PARTS.len());
        assert!(
            report.stats[2]
                .label
                .contains("breakdown of `command` by `name`"),
            "{}",
            report.stats[2].label
        );
        assert!(report.stats[2].rows > 0, "the breakdown has values");
        assert!(report.stats[3].rows > 0, "the event has counter cells");
        assert!(
            report.stats[4].rows > 0,
            "the event has distinct installs by value"
        );
        assert_eq!(report.naive.len(), NAIVE.len());
        assert!(report.stats.iter().all(|t| t.ms.n == 3));
        assert_eq!(report.stats[0].rows, 90, "one daily point per window day");
        let planned: Vec<&str> = report
            .stats
            .iter()
            .chain(&report.naive)
            .filter_map(|t| t.plan.as_deref())
            .collect();
        assert_eq!(planned.len(), STATS_PARTS.len() + NAIVE.len());
        assert!(
            planned
                .iter()
                .all(|p| p.contains("SEARCH") || p.contains("SCAN")),
            "{planned:?}"
        );
        let md = markdown(&report);
        let columns = |line: &str| line.matches('|').count();
        let header_columns = columns(HEADER.lines().next().unwrap());
        let rows: Vec<&str> = md.lines().filter(|l| l.starts_with("| ")).collect();
        assert_eq!(rows.len(), 1 + 5 + STATS_PARTS.len() + NAIVE.len());
        assert!(rows.iter().all(|r| columns(r) == header_columns), "{md}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_load_cut_short_is_recorded_and_reused_only_when_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config(dir.path());
        config.load.max_duration = Duration::ZERO;
        let (load, _) = ensure_loaded(&config).await.unwrap();
        assert!(!load.complete);
        assert!(load.accepted < 2_000);
        assert!(
            ensure_loaded(&config).await.is_err(),
            "not reused by default"
        );
        config.accept_partial = true;
        let (again, reused) = ensure_loaded(&config).await.unwrap();
        assert!(reused);
        assert_eq!(again, load);
    }

    #[tokio::test]
    async fn a_database_not_loaded_by_this_spec_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        std::fs::write(&config.db, b"").unwrap();
        let err = ensure_loaded(&config).await.unwrap_err();
        assert!(err.to_string().contains("no finished load"), "{err}");
    }
}
