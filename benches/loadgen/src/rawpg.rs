//! The direct-PostgreSQL reference of the ingest benchmark: the rows the
//! PostgreSQL collector writes for the load generator's `anonymous`
//! payloads, written straight through `tokio-postgres`, with no HTTP, no
//! JSON, no queue and no collector.
//!
//! The tables are the collector's own: a fresh schema is created in the
//! given database and brought up by the collector's migrations
//! ([`connect_and_migrate`](telemetry_collector::store::postgres::connect_and_migrate)),
//! and dropped at the end. `synchronous_commit` is on, as the collector's
//! writer forces it. Each transaction holds the rows of `per_txn` events in
//! simulated requests of `batch` events, one install each (rotating through
//! `installs`), and writes each table with one multi-row `unnest` statement,
//! as a bulk loader would: the events, the daily counters (summed per key),
//! the installs, their active weeks and the retention cells of the weeks
//! that are new, the identity delete of `anonymous`, the weekly uses
//! (`install_uses`, and `weekly_uses` for the new ones) and the day's upload
//! count. What it leaves out is what only a collector needs: the replay
//! checks' bookkeeping, refusals and the projects row after the first.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use telemetry_protocol::Timestamp;
use tokio_postgres::Client;

use crate::Error;
use crate::raw::RawReport;

/// One reference run.
#[derive(Debug, Clone)]
pub struct RawPgConfig {
    /// The database URL; a fresh schema is made in it for the run.
    pub url: String,
    /// Events per simulated request (one install each).
    pub batch: usize,
    /// Events per transaction; a multiple of `batch` is sensible.
    pub per_txn: usize,
    /// The most events to write.
    pub events: u64,
    /// The longest the run may take.
    pub duration: Duration,
    /// Distinct installs the requests rotate through.
    pub installs: u64,
}

/// The event names the load generator cycles through by default.
const NAMES: [&str; 3] = ["command", "setup_started", "setup_completed"];

/// The project every row belongs to.
const PROJECT: &str = "raw";

fn db(what: &str, e: impl std::fmt::Display) -> Error {
    Error::io(what.to_owned(), std::io::Error::other(e.to_string()))
}

/// Unique, randomly ordered 16-byte ids from a counter, like the load
/// generator's.
fn id(seed: u64, n: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&crate::payload::mix(seed ^ n).to_be_bytes());
    out[8..].copy_from_slice(&n.to_be_bytes());
    out
}

/// The URL of `url` with every connection's `search_path` set to `schema`.
fn in_schema(url: &str, schema: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-csearch_path%3D{schema}")
}

/// Creates a fresh schema in `config.url`, writes the rows of `config` into
/// it, times that, and drops the schema.
pub async fn run(config: &RawPgConfig) -> Result<RawReport, Error> {
    if config.batch == 0 || config.per_txn == 0 || config.installs == 0 {
        return Err(Error::InvalidArgument(
            "batch, per-txn and installs must be at least 1".into(),
        ));
    }
    let (admin, connection) = tokio_postgres::connect(&config.url, tokio_postgres::NoTls)
        .await
        .map_err(|e| db("connecting", e))?;
    tokio::spawn(connection);
    let schema = format!("rawpg_{:016x}", getrandom::u64().unwrap_or(0));
    admin
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .map_err(|e| db("creating the schema", e))?;
    let result = run_in(&in_schema(&config.url, &schema), config).await;
    let dropped = admin
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await;
    let report = result?;
    dropped.map_err(|e| db("dropping the schema", e))?;
    Ok(report)
}

async fn run_in(url: &str, config: &RawPgConfig) -> Result<RawReport, Error> {
    let mut client = telemetry_collector::store::postgres::connect_and_migrate(url, None)
        .await
        .map_err(|e| db("migrating", e))?;
    client
        .batch_execute("SET synchronous_commit = on")
        .await
        .map_err(|e| db("synchronous_commit", e))?;
    client
        .execute(
            "INSERT INTO projects (name) VALUES ($1) ON CONFLICT DO NOTHING",
            &[&PROJECT],
        )
        .await
        .map_err(|e| db("projects", e))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let day = Timestamp::from_unix_millis(now).day();
    let started = Instant::now();
    let deadline = started + config.duration;
    let (mut written, mut transactions, mut batches) = (0u64, 0u64, 0u64);
    let mut hit_time_limit = false;
    while written < config.events {
        if Instant::now() >= deadline {
            hit_time_limit = true;
            break;
        }
        let mut rows = Rows::default();
        let mut in_txn = 0;
        while in_txn < config.per_txn && written < config.events {
            let n = config.batch.min(config.per_txn - in_txn) as u64;
            let n = n.min(config.events - written);
            rows.add_batch(config, batches, written, n);
            batches += 1;
            written += n;
            in_txn += n as usize;
        }
        rows.write(&mut client, day.days_since_epoch(), now)
            .await
            .map_err(|e| db("writing a transaction", e))?;
        transactions += 1;
    }
    Ok(RawReport::new(
        "anonymous".into(),
        (config.batch, config.per_txn),
        (written, transactions),
        started.elapsed().as_secs_f64(),
        hit_time_limit,
    ))
}

/// The rows of one transaction, gathered before it is written.
#[derive(Default)]
struct Rows {
    /// (install, event id, name index, slot) per event.
    events: Vec<([u8; 16], [u8; 16], usize, usize)>,
    /// (name index, slot) → count.
    counters: BTreeMap<(usize, usize), i64>,
    /// The installs written to, sorted.
    installs: BTreeSet<[u8; 16]>,
    /// (install, name index, slot) of the weekly uses, sorted.
    uses: BTreeSet<([u8; 16], usize, usize)>,
    /// Simulated requests.
    uploads: i64,
}

impl Rows {
    fn add_batch(&mut self, config: &RawPgConfig, batch_no: u64, first: u64, n: u64) {
        let install = id(0x1257a11, batch_no % config.installs);
        self.installs.insert(install);
        self.uploads += 1;
        for slot in 0..n as usize {
            let i = first + slot as u64;
            let name = (i % NAMES.len() as u64) as usize;
            let slot = slot % config.batch.max(1);
            self.events.push((install, id(0xe7e47, i), name, slot));
            *self.counters.entry((name, slot)).or_default() += 1;
            self.uses.insert((install, name, slot));
        }
    }

    /// Writes every table in one transaction with one statement each. Only
    /// one connection writes, so the rows need no lock order.
    async fn write(
        &self,
        client: &mut Client,
        day: i32,
        now: i64,
    ) -> Result<(), tokio_postgres::Error> {
        let week = week_of(day);
        let props = |slot: usize| format!(r#"{{"slot":"s{slot}"}}"#);
        let tx = client.transaction().await?;
        let n = self.events.len();
        let projects = vec![PROJECT; n];
        let ids: Vec<&[u8]> = self.events.iter().map(|e| e.1.as_slice()).collect();
        let installs: Vec<&[u8]> = self.events.iter().map(|e| e.0.as_slice()).collect();
        let names: Vec<&str> = self.events.iter().map(|e| NAMES[e.2]).collect();
        let event_props: Vec<String> = self.events.iter().map(|e| props(e.3)).collect();
        tx.execute(
            "INSERT INTO events (project, event_id, install, ts, name, props)
             SELECT * FROM unnest($1::text[], $2::bytea[], $3::bytea[], $4::int8[], $5::text[], $6::text[])
             ON CONFLICT DO NOTHING",
            &[&projects, &ids, &installs, &vec![now; n], &names, &event_props],
        )
        .await?;

        // The installs, their week and, for a week stored now, its
        // retention cell under the install's first day.
        let k = self.installs.len();
        let install_ids: Vec<&[u8]> = self.installs.iter().map(|i| i.as_slice()).collect();
        tx.execute(
            "WITH i AS (
                 INSERT INTO installs (project, install, first_seen_day, last_seen_day)
                 SELECT * FROM unnest($1::text[], $2::bytea[], $3::int4[], $3::int4[])
                 ON CONFLICT (project, install) DO UPDATE SET
                   last_seen_day = GREATEST(installs.last_seen_day, excluded.last_seen_day)
                 RETURNING project, install, first_seen_day),
             w AS (
                 INSERT INTO install_weeks (project, install, week)
                 SELECT project, install, $4 FROM i
                 ON CONFLICT DO NOTHING RETURNING project, install)
             INSERT INTO install_cohorts (project, first_day, week, installs)
             SELECT i.project, i.first_seen_day, $4, COUNT(*)
             FROM w JOIN i USING (project, install)
             GROUP BY i.project, i.first_seen_day
             ORDER BY 1, 2
             ON CONFLICT (project, first_day, week)
             DO UPDATE SET installs = install_cohorts.installs + excluded.installs",
            &[&vec![PROJECT; k], &install_ids, &vec![day; k], &week],
        )
        .await?;
        tx.execute(
            "DELETE FROM identities i
             USING unnest($1::text[], $2::bytea[]) AS d(project, install)
             WHERE i.project = d.project AND i.install = d.install",
            &[&vec![PROJECT; k], &install_ids],
        )
        .await?;

        // Weekly uses: per install, "sent anything", each event and each
        // prop value; the new ones counted in `weekly_uses`.
        let mut uses: BTreeSet<([u8; 16], &str, &str, String)> = BTreeSet::new();
        for (install, name, slot) in &self.uses {
            uses.insert((*install, "", "", String::new()));
            uses.insert((*install, NAMES[*name], "", String::new()));
            uses.insert((*install, NAMES[*name], "slot", format!("s{slot}")));
        }
        let m = uses.len();
        let use_installs: Vec<&[u8]> = uses.iter().map(|u| u.0.as_slice()).collect();
        let use_events: Vec<&str> = uses.iter().map(|u| u.1).collect();
        let use_props: Vec<&str> = uses.iter().map(|u| u.2).collect();
        let use_values: Vec<&str> = uses.iter().map(|u| u.3.as_str()).collect();
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
            &[
                &vec![PROJECT; m],
                &vec![week; m],
                &use_installs,
                &use_events,
                &use_props,
                &use_values,
            ],
        )
        .await?;
        tx.execute(
            "INSERT INTO daily_uploads (project, day, uploads, retries, replayed)
             VALUES ($1, $2, $3, 0, 0)
             ON CONFLICT (project, day) DO UPDATE SET
               uploads = daily_uploads.uploads + excluded.uploads",
            &[&PROJECT, &day, &self.uploads],
        )
        .await?;

        // The counters last, as the collector writes them.
        let c = self.counters.len();
        let counter_names: Vec<&str> = self.counters.keys().map(|(n, _)| NAMES[*n]).collect();
        let counter_props: Vec<String> = self.counters.keys().map(|(_, s)| props(*s)).collect();
        let counts: Vec<i64> = self.counters.values().copied().collect();
        tx.execute(
            "INSERT INTO daily_counters (project, day, event, props, version, os, arch, tier, count)
             SELECT * FROM unnest($1::text[], $2::int4[], $3::text[], $4::text[], $5::text[],
                                  $6::text[], $7::text[], $8::int2[], $9::int8[])
             ON CONFLICT (project, day, event, props, version, os, arch, tier)
             DO UPDATE SET count = daily_counters.count + excluded.count",
            &[
                &vec![PROJECT; c],
                &vec![day; c],
                &counter_names,
                &counter_props,
                &vec!["1.0.0"; c],
                &vec!["linux"; c],
                &vec!["x86_64"; c],
                &vec![2i16; c],
                &counts,
            ],
        )
        .await?;
        tx.commit().await
    }
}

/// The Monday of the ISO week of a day number.
fn week_of(day: i32) -> i32 {
    telemetry_protocol::Day::from_days_since_epoch(day)
        .week_start()
        .days_since_epoch()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test server, as the collector's tests find it.
    fn base_url() -> String {
        std::env::var("TELEMETRY_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
    }

    // The skip must be visible, or a missing server would pass silently.
    #[allow(clippy::print_stderr)]
    #[tokio::test]
    async fn writes_the_rows_the_postgres_collector_would() {
        let admin = match tokio_postgres::connect(&base_url(), tokio_postgres::NoTls).await {
            Ok((client, connection)) => {
                tokio::spawn(connection);
                client
            }
            Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
                panic!("CI=true but PostgreSQL is unreachable: {e}")
            }
            Err(e) => {
                eprintln!("skipping: PostgreSQL unreachable ({e})");
                return;
            }
        };
        let schema = format!("rawpg_test_{:016x}", getrandom::u64().unwrap());
        admin
            .batch_execute(&format!("CREATE SCHEMA {schema}"))
            .await
            .unwrap();
        let url = in_schema(&base_url(), &schema);
        let config = RawPgConfig {
            url: url.clone(),
            batch: 10,
            per_txn: 100,
            events: 250,
            duration: Duration::from_secs(60),
            installs: 3,
        };
        let report = run_in(&url, &config).await;
        let count = |sql: &'static str| {
            let admin = &admin;
            let sql = sql.replace("{s}", &schema);
            async move { admin.query_one(&sql, &[]).await.unwrap().get::<_, i64>(0) }
        };
        let counts = [
            count("SELECT COUNT(*) FROM {s}.events").await,
            count("SELECT SUM(count)::BIGINT FROM {s}.daily_counters").await,
            count("SELECT COUNT(*) FROM {s}.installs").await,
            count("SELECT COUNT(*) FROM {s}.install_weeks").await,
            count("SELECT SUM(installs)::BIGINT FROM {s}.install_cohorts").await,
            // Per install: "sent anything", 3 events, and 10 slot values
            // (an install's requests start on the same name, so each slot
            // always comes with one event).
            count("SELECT COUNT(*) FROM {s}.install_uses").await,
            count("SELECT SUM(installs)::BIGINT FROM {s}.weekly_uses").await,
            count("SELECT SUM(uploads)::BIGINT FROM {s}.daily_uploads").await,
        ];
        admin
            .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .await
            .unwrap();
        let report = report.unwrap();
        assert_eq!((report.events, report.transactions), (250, 3));
        assert!(!report.hit_time_limit);
        assert_eq!(counts, [250, 250, 3, 3, 3, 3 * 14, 3 * 14, 25]);
    }
}
