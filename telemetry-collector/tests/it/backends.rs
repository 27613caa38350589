//! One behaviour suite, run against every storage backend: SQLite in a
//! temporary folder and PostgreSQL in a fresh schema per test, so the tests
//! run in parallel. Each test loops over [`backends`] rather than being copied.
//!
//! PostgreSQL is found at `TELEMETRY_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432/test`). With `CI=true` an unreachable
//! server fails the tests; elsewhere they print why and run on SQLite only.

use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{Value, json};
use telemetry_collector::AppState;
use telemetry_collector::config::Config;
use telemetry_collector::secrets::InstallHasher;
use telemetry_collector::store::postgres::{self, PostgresOptions, PostgresStore};
use telemetry_collector::store::{Store, StoreError};
use tempfile::TempDir;

use crate::common::*;

/// The PostgreSQL server the tests use.
pub(crate) fn postgres_base_url() -> String {
    std::env::var("TELEMETRY_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// Connects to `url` on the current runtime.
pub(crate) async fn pg_connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// A schema of its own on the test server, dropped when this is dropped.
pub(crate) struct PgSchema {
    /// The schema name, `t_<random>`.
    pub(crate) name: String,
    /// A URL whose connections use only this schema.
    pub(crate) url: String,
}

impl PgSchema {
    /// The test config (see [`config`]) on this schema, with its pseudonym
    /// key in `dir`.
    pub(crate) fn config(&self, dir: &Path) -> Config {
        let mut cfg = config(dir);
        cfg.db = self.url.clone();
        cfg.pseudonym_key_file = Some(dir.join("pseudonym-key"));
        cfg
    }

    /// Creates a fresh schema, or says why PostgreSQL is unavailable. Under
    /// `CI=true` an unavailable server is a test failure, not a skip.
    // The skip must be visible in the test output, or a missing server
    // would pass silently.
    #[allow(clippy::print_stderr)]
    pub(crate) async fn create() -> Option<PgSchema> {
        let base = postgres_base_url();
        let client = match pg_connect(&base).await {
            Ok(client) => client,
            Err(e) => {
                if std::env::var("CI").is_ok_and(|v| v == "true") {
                    panic!("CI=true but PostgreSQL at TELEMETRY_TEST_POSTGRES is unreachable: {e}");
                }
                eprintln!(
                    "skipping the PostgreSQL backend: cannot connect ({e}); set TELEMETRY_TEST_POSTGRES"
                );
                return None;
            }
        };
        let name = format!("t_{}", new_id().simple());
        client
            .batch_execute(&format!("CREATE SCHEMA {name}"))
            .await
            .unwrap();
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-csearch_path%3D{name}");
        Some(PgSchema { name, url })
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        run_as_admin(vec![format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name)]);
    }
}

/// Runs clean-up `statements` on the server as the test's superuser. A
/// drop may run while a test panics on its runtime, or outside any, so it
/// uses a runtime of its own on a thread of its own; failures are printed,
/// not raised.
#[allow(clippy::print_stderr)]
pub(crate) fn run_as_admin(statements: Vec<String>) {
    let _ = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let Ok(admin) = pg_connect(&postgres_base_url()).await else {
                eprintln!("cannot connect to run {statements:?}");
                return;
            };
            for sql in statements {
                if let Err(e) = admin.batch_execute(&sql).await {
                    eprintln!("cleanup `{sql}` failed: {e}");
                }
            }
        });
    })
    .join();
}

/// One backend under test: its config (database in `dir` or in `pg`'s schema).
pub(crate) struct Backend {
    /// `sqlite` or `postgres`, for assertion messages.
    pub(crate) name: &'static str,
    /// The `demo` config pointing at this backend.
    pub(crate) config: Config,
    /// Holds the manifest, the key file and the SQLite database.
    pub(crate) _dir: TempDir,
    /// The PostgreSQL schema, for the PostgreSQL backend.
    pub(crate) pg: Option<PgSchema>,
}

/// Every backend available: SQLite always, PostgreSQL when reachable (always under CI).
pub(crate) async fn backends() -> Vec<Backend> {
    let mut all = Vec::new();
    let dir = tempfile::tempdir().unwrap();
    all.push(Backend {
        name: "sqlite",
        config: config(dir.path()),
        _dir: dir,
        pg: None,
    });
    if let Some(pg) = PgSchema::create().await {
        let dir = tempfile::tempdir().unwrap();
        let cfg = pg.config(dir.path());
        all.push(Backend {
            name: "postgres",
            config: cfg,
            _dir: dir,
            pg: Some(pg),
        });
    }
    all
}

impl Backend {
    /// A fresh [`AppState`] over this backend.
    pub(crate) fn state(&self) -> AppState {
        state(&self.config)
    }

    /// Asserts that [`Self::scalar`] of `sql` is `expected`, naming the backend.
    pub(crate) async fn expect_scalar(&self, sql: &str, expected: i64) {
        assert_eq!(self.scalar(sql).await, expected, "{}: {sql}", self.name);
    }

    /// `SELECT CAST((sql) AS BIGINT)` on a connection of its own, so it sees
    /// exactly what is committed; NULL reads as 0.
    pub(crate) async fn scalar(&self, sql: &str) -> i64 {
        let sql = format!("SELECT CAST(({sql}) AS BIGINT)");
        match &self.pg {
            None => {
                let conn = rusqlite::Connection::open(self.config.db_path()).unwrap();
                conn.query_row(&sql, [], |r| r.get::<_, Option<i64>>(0))
                    .unwrap()
                    .unwrap_or(0)
            }
            Some(pg) => {
                let client = pg_connect(&pg.url).await.unwrap();
                client
                    .query_one(&sql, &[])
                    .await
                    .unwrap()
                    .get::<_, Option<i64>>(0)
                    .unwrap_or(0)
            }
        }
    }

    /// A byte-string literal in this backend's SQL dialect.
    pub(crate) fn bytes(&self, bytes: &[u8]) -> String {
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        match self.pg {
            None => format!("X'{hex}'"),
            Some(_) => format!("'\\x{hex}'::bytea"),
        }
    }

    /// The pseudonym of `install` in project `demo` under this backend's key.
    pub(crate) fn hash(&self, install: &telemetry_protocol::Uuid) -> [u8; 16] {
        InstallHasher::load_or_create(&self.config.pseudonym_key_path())
            .unwrap()
            .hash("demo", install)
            .0
    }
}

/// A day relative to today, as `YYYY-MM-DD`.
pub(crate) fn day_offset(days: i32) -> String {
    telemetry_collector::ingest::today()
        .add_days(days)
        .to_string()
}

/// An event at noon, `days` from today.
pub(crate) fn event_on(name: &str, days: i32) -> Value {
    json!({"id": new_id(), "name": name, "timestamp": format!("{}T12:00:00Z", day_offset(days))})
}

/// A mixed load over three weeks, every tier, two versions and two OSes, with
/// replays; the same numbers on any backend.
pub(crate) async fn workload(state: &AppState) {
    let mut replays = Vec::new();
    for i in 0..6i32 {
        let mut events = vec![event_on("install", -3 * i), event_on("active", -3 * i)];
        if i % 2 == 0 {
            events.push(event_on("setup_started", -3 * i));
        }
        if i % 3 == 0 {
            events.push(event_on("setup_completed", -3 * i));
        }
        events.push(event_on("active", 0));
        events.push(
            json!({"id": new_id(), "name": "command", "timestamp": format!("{}T13:00:00Z", day_offset(-i)),
                   "props": {"name": if i % 2 == 0 { "greet" } else { "init" }}}),
        );
        let mut payload = anonymous(new_id(), events);
        if i % 2 == 1 {
            payload["context"]["tool_version"] = json!("1.5.0");
            payload["context"]["os"] = json!("macos");
        }
        let (status, body) = ingest(state, &payload).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        replays.push(payload);
    }
    let identity = full(
        new_id(),
        vec![event_on("install", -1), event_on("crash", -1)],
        "someone@example.org",
    );
    assert_eq!(ingest(state, &identity).await.0, StatusCode::OK);
    let report = aggregate(new_id(), "install", 4);
    assert_eq!(ingest(state, &report).await.0, StatusCode::OK);
    let mut command = aggregate(new_id(), "command", 9);
    command["counters"][0]["props"] = json!({"name": "greet"});
    assert_eq!(ingest(state, &command).await.0, StatusCode::OK);
    // Retries of everything change nothing.
    for payload in replays.iter().chain([&identity, &report, &command]) {
        let (status, body) = ingest(state, payload).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["accepted"], 0, "{body}");
    }
}

/// The stats of `demo` over the last four weeks, as JSON.
pub(crate) async fn stats_json(store: &dyn Store) -> Value {
    let to = telemetry_collector::ingest::today();
    let stats = telemetry_collector::stats::project_stats(store, "demo", to.add_days(-27), to)
        .await
        .unwrap();
    serde_json::to_value(stats).unwrap()
}

#[tokio::test]
async fn tiers_are_enforced_end_to_end_on_every_backend() {
    for b in backends().await {
        let state = b.state();
        let install = new_id();
        let mut above = aggregate(new_id(), "command", 1);
        above["install_id"] = json!(install);
        let mut identity_at_anonymous = anonymous(install, vec![event(new_id(), "install")]);
        identity_at_anonymous["identity"] = json!({"email": "a@example.org"});
        let rejected = [above, identity_at_anonymous];
        for payload in &rejected {
            let (status, body) = ingest(&state, payload).await;
            assert_eq!(
                status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{}: {body}",
                b.name
            );
        }
        for table in [
            "events",
            "daily_counters",
            "installs",
            "identities",
            "seen_reports",
            "refusals",
        ] {
            let n = b.scalar(&format!("SELECT COUNT(*) FROM {table}")).await;
            assert_eq!(
                n, 0,
                "{}: a rejected request stored rows in {table}",
                b.name
            );
        }
        // What only the manifest forbids is refused per item: a 2xx that
        // stores nothing of the item but its count.
        for payload in [
            anonymous(install, vec![event(new_id(), "not_declared")]),
            aggregate(new_id(), "crash", 1),
        ] {
            let (status, body) = ingest(&state, &payload).await;
            assert_eq!(status, StatusCode::OK, "{}: {body}", b.name);
            assert_eq!(body["refused"], 1, "{}: {body}", b.name);
        }
        for table in ["events", "daily_counters", "installs", "identities"] {
            b.expect_scalar(&format!("SELECT COUNT(*) FROM {table}"), 0)
                .await;
        }
        b.expect_scalar("SELECT SUM(count) FROM refusals", 2).await;

        let (status, _) = ingest(
            &state,
            &full(install, vec![event(new_id(), "install")], "a@example.org"),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        b.expect_scalar("SELECT COUNT(*) FROM identities", 1).await;
        // Lowering the tier forgets the identity.
        let (status, _) = ingest(&state, &anonymous(install, vec![event(new_id(), "crash")])).await;
        assert_eq!(status, StatusCode::OK);
        b.expect_scalar("SELECT COUNT(*) FROM identities", 0).await;
        // Aggregate data leaves counters only: no event or install row.
        let (status, _) = ingest(&state, &aggregate(new_id(), "command", 3)).await;
        assert_eq!(status, StatusCode::OK);
        b.expect_scalar("SELECT COUNT(*) FROM events", 2).await;
        b.expect_scalar("SELECT COUNT(*) FROM installs", 1).await;
        b.expect_scalar("SELECT SUM(count) FROM daily_counters", 5)
            .await;
        assert_eq!(
            b.scalar("SELECT COUNT(*) FROM daily_counters WHERE tier = 1")
                .await,
            1,
            "{}",
            b.name
        );
        state.store().close().await.unwrap();
    }
}

#[tokio::test]
async fn replays_count_once_on_every_backend() {
    for b in backends().await {
        let state = b.state();
        let install = new_id();
        let first = new_id();
        let payload = anonymous(
            install,
            vec![event(first, "install"), event(new_id(), "active")],
        );
        let (_, body) = ingest(&state, &payload).await;
        assert_eq!(body, json!({"accepted": 2, "duplicates": 0}), "{}", b.name);
        let (_, body) = ingest(&state, &payload).await;
        assert_eq!(body, json!({"accepted": 0, "duplicates": 2}), "{}", b.name);
        let mixed = anonymous(
            install,
            vec![event(first, "install"), event(new_id(), "install")],
        );
        let (_, body) = ingest(&state, &mixed).await;
        assert_eq!(body, json!({"accepted": 1, "duplicates": 1}), "{}", b.name);

        // Concurrent retries of one report and of one event batch: exactly one counts.
        let report = aggregate(new_id(), "install", 5);
        let batch = anonymous(
            new_id(),
            vec![event(new_id(), "install"), event(new_id(), "crash")],
        );
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..16 {
            let state = state.clone();
            let payload = if i % 2 == 0 {
                report.clone()
            } else {
                batch.clone()
            };
            tasks.spawn(async move { ingest(&state, &payload).await });
        }
        let mut accepted = 0;
        while let Some(result) = tasks.join_next().await {
            let (status, body) = result.unwrap();
            assert_eq!(status, StatusCode::OK, "{}", b.name);
            accepted += body["accepted"].as_u64().unwrap();
        }
        assert_eq!(accepted, 1 + 2, "{}", b.name);

        let (_, stats) = admin_get(&state, "/api/v1/projects/demo/stats").await;
        assert_eq!(stats["installs"], 2 + 5 + 1, "{}", b.name);
        b.expect_scalar("SELECT COUNT(*) FROM events", 5).await;
        b.expect_scalar("SELECT SUM(count) FROM daily_counters", 5 + 5)
            .await;
        b.expect_scalar("SELECT COUNT(*) FROM seen_reports", 1)
            .await;
        state.store().close().await.unwrap();
    }
}

#[tokio::test]
async fn a_delete_removes_every_row_of_the_install_on_every_backend() {
    for b in backends().await {
        let state = b.state();
        let (gone, kept) = (new_id(), new_id());
        for install in [gone, kept] {
            let events = vec![event(new_id(), "install"), event(new_id(), "crash")];
            let (status, _) = ingest(&state, &full(install, events, "x@example.org")).await;
            assert_eq!(status, StatusCode::OK);
        }
        let refs = |hash: [u8; 16]| {
            let lit = b.bytes(&hash);
            let b = &b;
            async move {
                let mut n = 0;
                for table in [
                    "events",
                    "installs",
                    "install_weeks",
                    "identities",
                    "install_uses",
                ] {
                    n += b
                        .scalar(&format!(
                            "SELECT COUNT(*) FROM {table} WHERE install = {lit}"
                        ))
                        .await;
                }
                n
            }
        };
        let (gone_hash, kept_hash) = (b.hash(&gone), b.hash(&kept));
        // 2 events, 1 install, 1 week, 1 identity; 3 uses (anything, install, crash).
        assert_eq!(refs(gone_hash).await, 8, "{}", b.name);

        let delete = json!({"project": "demo", "install_id": gone}).to_string();
        let (status, first) = send_json(&state, post("/v1/delete", delete.clone())).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            refs(gone_hash).await,
            0,
            "{}: rows of the deleted install remain",
            b.name
        );
        assert_eq!(
            refs(kept_hash).await,
            8,
            "{}: other installs are untouched",
            b.name
        );
        let unknown = json!({"project": "demo", "install_id": new_id()}).to_string();
        let (status, never) = send_json(&state, post("/v1/delete", unknown)).await;
        assert_eq!((status, &never), (StatusCode::OK, &first), "{}", b.name);
        // A delete for a project never seen creates nothing.
        let other = json!({"project": "nobody", "install_id": gone}).to_string();
        assert_eq!(
            send_json(&state, post("/v1/delete", other)).await.0,
            StatusCode::OK
        );
        b.expect_scalar("SELECT COUNT(*) FROM projects", 1).await;

        let (_, stats) = admin_get(&state, "/api/v1/projects/demo/stats").await;
        assert_eq!(
            stats["installs"], 2,
            "{}: counters carry no id and stay",
            b.name
        );
        state.store().close().await.unwrap();
    }
}

#[tokio::test]
async fn retention_purges_raw_rows_and_keeps_counters_on_every_backend() {
    for mut b in backends().await {
        // Ingest refuses events older than the retention, so the old one
        // arrived while the retention was longer, and then it was lowered.
        b.config.projects[0].retention_days = 60;
        let state = b.state();
        let old = full(new_id(), vec![event_on("install", -40)], "old@example.org");
        assert_eq!(ingest(&state, &old).await.0, StatusCode::OK);
        let recent = anonymous(new_id(), vec![event_on("install", -2)]);
        assert_eq!(ingest(&state, &recent).await.0, StatusCode::OK);
        let today = telemetry_collector::ingest::today();
        let lowered = telemetry_collector::store::RetentionPolicy {
            default_days: 90,
            per_project: [("demo".to_owned(), 30)].into(),
        };
        let out = state.store().purge(&lowered, today).await.unwrap();
        assert_eq!(
            (out.events, out.installs, out.install_weeks),
            (1, 1, 1),
            "{}",
            b.name
        );
        b.expect_scalar("SELECT COUNT(*) FROM events", 1).await;
        b.expect_scalar("SELECT COUNT(*) FROM installs", 1).await;
        b.expect_scalar("SELECT COUNT(*) FROM identities", 0).await;
        assert_eq!(
            b.scalar("SELECT SUM(count) FROM daily_counters").await,
            2,
            "{}: counters are kept",
            b.name
        );
        // Report ids older than REPORT_ID_DAYS go; a purge twice removes nothing more.
        let later = today.add_days(postgres::REPORT_ID_DAYS + 1);
        assert_eq!(
            ingest(&state, &aggregate(new_id(), "install", 1)).await.0,
            StatusCode::OK
        );
        let out = state.store().purge(&lowered, later).await.unwrap();
        assert_eq!(out.report_ids, 1, "{}", b.name);
        state.store().close().await.unwrap();
    }
}

#[tokio::test]
async fn stats_are_identical_on_every_backend() {
    let mut seen: Vec<(&str, Value)> = Vec::new();
    for b in backends().await {
        let state = b.state();
        workload(&state).await;
        let stats = stats_json(state.store()).await;
        assert_eq!(stats["installs"], 6 + 1 + 4, "{}: {stats}", b.name);
        assert_eq!(stats["setup_started"], 3, "{}", b.name);
        assert_eq!(stats["setup_completed"], 2, "{}", b.name);
        assert!(
            stats["active_installs"].as_u64().unwrap() >= 6,
            "{}",
            b.name
        );
        seen.push((b.name, stats));
        state.store().close().await.unwrap();
    }
    for (name, stats) in &seen[1..] {
        assert_eq!(stats, &seen[0].1, "{name} differs from {}", seen[0].0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_means_committed_on_every_backend() {
    for b in backends().await {
        let state = b.state();
        let b = Arc::new(b);
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..24 {
            let (state, b) = (state.clone(), b.clone());
            tasks.spawn(async move {
                let id = new_id();
                let (status, _) =
                    ingest(&state, &anonymous(new_id(), vec![event(id, "install")])).await;
                assert_eq!(status, StatusCode::OK);
                // Another connection must already see it: the answer came after COMMIT.
                let lit = b.bytes(id.as_bytes());
                let n = b
                    .scalar(&format!(
                        "SELECT COUNT(*) FROM events WHERE event_id = {lit}"
                    ))
                    .await;
                assert_eq!(n, 1, "{}: acknowledged but not committed", b.name);
            });
        }
        while let Some(result) = tasks.join_next().await {
            result.unwrap();
        }
        state.store().close().await.unwrap();
        // A fresh store (as after a restart) counts all of them.
        let reopened = b.state();
        let stats = stats_json(reopened.store()).await;
        assert_eq!(stats["installs"], 24, "{}", b.name);
        reopened.store().close().await.unwrap();
    }
}

#[tokio::test]
async fn collectors_starting_together_migrate_once() {
    let Some(pg) = PgSchema::create().await else {
        return;
    };
    let mut threads = Vec::new();
    for _ in 0..4 {
        let url = pg.url.clone();
        threads.push(std::thread::spawn(move || {
            PostgresStore::open(&url, PostgresOptions::default()).map(|_| ())
        }));
    }
    for t in threads {
        t.join().unwrap().unwrap();
    }
    let client = pg_connect(&pg.url).await.unwrap();
    let rows = client
        .query("SELECT version FROM schema_version", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, i64>(0), postgres::SCHEMA_VERSION);
}

#[tokio::test]
async fn a_collector_with_another_pseudonym_key_is_refused() {
    let Some(pg) = PgSchema::create().await else {
        return;
    };
    let fingerprint = |byte: u8| postgres::key_fingerprint(&InstallHasher::new([byte; 32]));
    let open = |byte: u8| {
        PostgresStore::open(
            &pg.url,
            PostgresOptions {
                key_fingerprint: Some(fingerprint(byte)),
                ..PostgresOptions::default()
            },
        )
    };
    open(1).unwrap().close().await.unwrap();
    open(1).unwrap().close().await.unwrap();
    match open(2) {
        Err(StoreError::Database(message)) => {
            assert!(message.contains("different pseudonym key"), "{message}")
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("a second key was accepted"),
    }
    assert_ne!(fingerprint(1), fingerprint(2));
}

/// Runs the collector binary; returns stdout, failing on a non-zero exit.
pub(crate) fn run_cli(args: &[&str], dir: &Path) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_telemetry-collector"))
        .args(args)
        .current_dir(dir)
        .env_remove("TELEMETRY_COLLECTOR_DB")
        .env_remove("TELEMETRY_COLLECTOR_CONFIG")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test]
async fn migrate_moves_a_sqlite_database_and_stats_agree() {
    let Some(pg) = PgSchema::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let state = state(&cfg);
    workload(&state).await;
    // An event the manifest does not declare: refused on its own, and counted
    // in the delivery-health panel, which the copy used to leave behind.
    let refused = anonymous(new_id(), vec![event(new_id(), "no_such_event")]);
    let (status, body) = ingest(&state, &refused).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    state.store().close().await.unwrap();
    drop(state);

    let db = cfg.db_path();
    let db = db.to_str().unwrap();
    let stats = |db: &str| -> Value {
        let out = run_cli(
            &[
                "stats",
                "--db",
                db,
                "--project",
                "demo",
                "--days",
                "60",
                "--format",
                "json",
            ],
            dir.path(),
        );
        serde_json::from_str(&out).unwrap()
    };
    let before = stats(db);
    assert_ne!(
        before["delivery"]["refused"],
        json!([]),
        "the workload has a refusal: {}",
        before["delivery"]
    );
    let out = run_cli(
        &[
            "migrate",
            "--from",
            &format!("sqlite:{db}"),
            "--to",
            &pg.url,
        ],
        dir.path(),
    );
    let events = query_i64(&cfg.db_path(), "SELECT COUNT(*) FROM events");
    assert!(out.contains(&format!("events: {events} rows")), "{out}");
    let after = stats(&pg.url);
    assert_eq!(after, before);
    assert_eq!(after["installs"], 11);

    // The key of the SQLite deployment is now the only one the database accepts.
    let mut pg_cfg = cfg.clone();
    pg_cfg.db = pg.url.clone();
    pg_cfg.pseudonym_key_file = Some(cfg.pseudonym_key_path());
    let moved = state_result(&pg_cfg).expect("the migrated key is accepted");
    // Retries of data sent before the move still count once.
    let install = new_id();
    let payload = anonymous(install, vec![event(new_id(), "install")]);
    assert_eq!(ingest(&moved, &payload).await.1["accepted"], 1);
    assert_eq!(ingest(&moved, &payload).await.1["accepted"], 0);
    moved.store().close().await.unwrap();
    pg_cfg.pseudonym_key_file = Some(dir.path().join("another-key"));
    assert!(
        state_result(&pg_cfg).is_err(),
        "a different key must be refused"
    );

    // Migrating into a database that holds data is refused: it would count twice.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_telemetry-collector"))
        .args([
            "migrate",
            "--from",
            &format!("sqlite:{db}"),
            "--to",
            &pg.url,
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("already holds data"));
    assert_eq!(stats(&pg.url)["installs"], 12);
}

fn state_result(config: &Config) -> Result<AppState, telemetry_collector::state::SetupError> {
    AppState::from_config(config).map(|(s, _)| s)
}

/// A `command` event with its `name` prop, now.
fn command(id: telemetry_protocol::Uuid, name: &str) -> Value {
    json!({"id": id, "name": "command", "timestamp": now_ts(), "props": {"name": name}})
}

#[tokio::test]
async fn weekly_uses_count_each_install_once_and_a_deletion_takes_it_back_on_every_backend() {
    use telemetry_collector::store::UseRow;
    fn installs(rows: &[UseRow], event: &str, prop: &str, value: &str) -> u64 {
        rows.iter()
            .filter(|r| r.event == event && r.prop == prop && r.value == value)
            .map(|r| r.installs)
            .sum()
    }
    for b in backends().await {
        let state = b.state();
        let (a, bb, c) = (new_id(), new_id(), new_id());
        let first = anonymous(
            a,
            vec![
                command(new_id(), "greet"),
                command(new_id(), "greet"),
                command(new_id(), "init"),
            ],
        );
        assert_eq!(ingest(&state, &first).await.0, StatusCode::OK);
        // The same payload again, as a client that never saw the answer sends it.
        assert_eq!(ingest(&state, &first).await.0, StatusCode::OK);
        let later = anonymous(a, vec![command(new_id(), "greet")]);
        assert_eq!(ingest(&state, &later).await.0, StatusCode::OK);
        let other = anonymous(bb, vec![command(new_id(), "greet")]);
        assert_eq!(ingest(&state, &other).await.0, StatusCode::OK);
        let crash = full(c, vec![event(new_id(), "crash")], "c@example.org");
        assert_eq!(ingest(&state, &crash).await.0, StatusCode::OK);
        // Counters carry no install: aggregate data adds no installs.
        let agg = aggregate(new_id(), "command", 5);
        assert_eq!(ingest(&state, &agg).await.0, StatusCode::OK);

        let today = telemetry_collector::ingest::today();
        let week = today.week_start();
        let store = state.store();
        let rows = store
            .weekly_uses("demo", week, week, Some("command"), Some("name"))
            .await
            .unwrap();
        assert!(rows.iter().all(|r| r.week == week), "{}", b.name);
        assert_eq!(installs(&rows, "", "", ""), 3, "{}: anything", b.name);
        assert_eq!(installs(&rows, "command", "", ""), 2, "{}", b.name);
        assert_eq!(installs(&rows, "command", "name", "greet"), 2, "{}", b.name);
        assert_eq!(installs(&rows, "command", "name", "init"), 1, "{}", b.name);
        assert_eq!(
            installs(&rows, "crash", "", ""),
            0,
            "{}: not asked for",
            b.name
        );
        let all = store
            .weekly_uses("demo", week, week, None, None)
            .await
            .unwrap();
        assert_eq!(installs(&all, "crash", "", ""), 1, "{}", b.name);

        let uploads = store.uploads("demo", today, today).await.unwrap();
        assert_eq!(uploads.len(), 1, "{}", b.name);
        assert_eq!(
            (uploads[0].uploads, uploads[0].retries, uploads[0].replayed),
            (6, 1, 3),
            "{}: one upload of six was a retry of three events",
            b.name
        );

        let delete = json!({"project": "demo", "install_id": a}).to_string();
        assert_eq!(
            send_json(&state, post("/v1/delete", delete)).await.0,
            StatusCode::OK
        );
        let rows = store
            .weekly_uses("demo", week, week, Some("command"), None)
            .await
            .unwrap();
        assert_eq!(installs(&rows, "", "", ""), 2, "{}", b.name);
        assert_eq!(installs(&rows, "command", "name", "greet"), 1, "{}", b.name);
        assert_eq!(
            installs(&rows, "command", "name", "init"),
            0,
            "{}: the deleted install's value is gone",
            b.name
        );
        b.expect_scalar(
            &format!(
                "SELECT COUNT(*) FROM install_uses WHERE install = {}",
                b.bytes(&b.hash(&a))
            ),
            0,
        )
        .await;
        store.close().await.unwrap();
    }
}

/// How many cells the retention matrix (`install_cohorts`, cells above zero)
/// and the join of installs with install_weeks it replaces disagree on.
pub(crate) const MATRIX_MISMATCHES: &str = "
    (SELECT COUNT(*) FROM (
        SELECT i.project, i.first_seen_day, w.week, COUNT(*) FROM installs i
        JOIN install_weeks w ON w.project = i.project AND w.install = i.install
        GROUP BY i.project, i.first_seen_day, w.week
        EXCEPT SELECT project, first_day, week, installs FROM install_cohorts WHERE installs > 0
    ) AS missing)
    + (SELECT COUNT(*) FROM (
        SELECT project, first_day, week, installs FROM install_cohorts WHERE installs > 0
        EXCEPT SELECT i.project, i.first_seen_day, w.week, COUNT(*) FROM installs i
        JOIN install_weeks w ON w.project = i.project AND w.install = i.install
        GROUP BY i.project, i.first_seen_day, w.week
    ) AS extra)";

#[tokio::test]
async fn the_retention_matrix_equals_the_join_it_replaces_on_every_backend() {
    for b in backends().await {
        let state = b.state();
        // A fixed pseudo-random sequence over 10 installs: events on days out
        // of order (so first-seen days move back and weeks change cohort),
        // several installs in one request group, deletions and purges.
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let installs: Vec<_> = (0..10).map(|_| new_id()).collect();
        let today = telemetry_collector::ingest::today();
        for step in 0..160 {
            let install = installs[next(10) as usize];
            match next(16) {
                0 => {
                    let body = json!({"project": "demo", "install_id": install}).to_string();
                    assert_eq!(
                        send_json(&state, post("/v1/delete", body)).await.0,
                        StatusCode::OK
                    );
                }
                1 => {
                    let policy = telemetry_collector::store::RetentionPolicy {
                        default_days: 20 + next(40) as u32,
                        per_project: Default::default(),
                    };
                    state.store().purge(&policy, today).await.unwrap();
                }
                _ => {
                    // Several requests at once, so PostgreSQL commits them
                    // as one group, the same install possibly twice.
                    let requests: Vec<_> = (0..1 + next(3))
                        .map(|_| {
                            let install = if next(2) == 0 {
                                install
                            } else {
                                installs[next(10) as usize]
                            };
                            let events = (0..1 + next(3))
                                .map(|_| event_on("active", -(next(80) as i32)))
                                .collect();
                            anonymous(install, events)
                        })
                        .collect();
                    let mut set = tokio::task::JoinSet::new();
                    for request in requests {
                        let state = state.clone();
                        set.spawn(async move { ingest(&state, &request).await });
                    }
                    for (status, body) in set.join_all().await {
                        assert_eq!(status, StatusCode::OK, "{}: {body}", b.name);
                    }
                }
            }
            assert_eq!(
                b.scalar(MATRIX_MISMATCHES).await,
                0,
                "{}: after step {step}",
                b.name
            );
        }
        assert!(
            b.scalar("SELECT COUNT(*) FROM install_cohorts WHERE installs > 0")
                .await
                > 5,
            "{}: the sequence exercised the matrix",
            b.name
        );
        state.store().close().await.unwrap();
    }
}

#[tokio::test]
async fn the_postgres_migration_fills_the_retention_matrix_ingest_would_have_kept() {
    let Some(pg) = PgSchema::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = pg.config(dir.path());
    let state = state(&cfg);
    for days in [[-30, -2], [-9, -20], [-1, -1], [-50, -3]] {
        let events = days.iter().map(|d| event_on("active", *d)).collect();
        assert_eq!(
            ingest(&state, &anonymous(new_id(), events)).await.0,
            StatusCode::OK
        );
    }
    state.store().close().await.unwrap();
    drop(state);
    let client = pg_connect(&pg.url).await.unwrap();
    let dump = || async {
        client
            .query(
                "SELECT project, first_day, week, installs FROM install_cohorts
                 ORDER BY 1, 2, 3",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect::<Vec<(String, i32, i32, i64)>>()
    };
    let kept = dump().await;
    assert!(kept.len() >= 6, "{kept:?}");
    // The same database as schema 5 left it, with a week row a purge of
    // that schema could leave without its install; migrated again.
    client
        .batch_execute(
            "DROP TABLE install_cohorts; UPDATE schema_version SET version = 5;
             INSERT INTO install_weeks (project, install, week) VALUES ('demo', '\\x00', 20000);",
        )
        .await
        .unwrap();
    let state = self::state(&cfg);
    state.store().close().await.unwrap();
    assert_eq!(dump().await, kept, "the backfill equals what ingest kept");
    let orphans: i64 = client
        .query_one(
            "SELECT COUNT(*) FROM install_weeks WHERE install = '\\x00'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(orphans, 0);
}

#[tokio::test]
async fn the_postgres_migration_adds_the_install_count_index_to_an_existing_database() {
    let Some(pg) = PgSchema::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = pg.config(dir.path());
    let state = state(&cfg);
    let installs = |n: i32| {
        (0..n)
            .map(|d| event_on("install", -d))
            .chain([event_on("active", -1)])
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ingest(&state, &anonymous(new_id(), installs(3))).await.0,
        StatusCode::OK
    );
    state.store().close().await.unwrap();
    drop(state);
    // The same database as schema 6 left it: no index yet.
    let client = pg_connect(&pg.url).await.unwrap();
    client
        .batch_execute("DROP INDEX daily_counters_installs; UPDATE schema_version SET version = 6;")
        .await
        .unwrap();
    let state = self::state(&cfg);
    assert_eq!(
        ingest(&state, &anonymous(new_id(), installs(2))).await.0,
        StatusCode::OK
    );
    let today = telemetry_collector::ingest::today();
    let input = state
        .store()
        .stats_input("demo", today, today)
        .await
        .unwrap();
    state.store().close().await.unwrap();
    assert_eq!(
        input.installs_all_time, 5,
        "installs before and after the migration"
    );
    let version: i64 = client
        .query_one("SELECT version FROM schema_version", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, postgres::SCHEMA_VERSION);
    // The store's all-time install count can use it: with sequential scans
    // priced out, the plan of the same query reads the partial index.
    let plan = client
        .simple_query(
            "SET enable_seqscan = off; EXPLAIN SELECT COALESCE(SUM(count), 0)::BIGINT \
             FROM daily_counters WHERE project = 'demo' AND event = 'install'",
        )
        .await
        .unwrap()
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(plan.contains("daily_counters_installs"), "{plan}");
}

/// A loopback TCP relay to the PostgreSQL server that the test can cut (every
/// connection closed, nothing accepted) and restore on the same port.
struct Relay {
    port: u16,
    server: String,
    open: Arc<AtomicBool>,
    streams: Arc<Mutex<Vec<TcpStream>>>,
}

impl Relay {
    fn start(server: &str) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let relay = Relay {
            port: listener.local_addr().unwrap().port(),
            server: server.to_owned(),
            open: Arc::new(AtomicBool::new(true)),
            streams: Arc::default(),
        };
        relay.serve(listener);
        relay
    }

    fn serve(&self, listener: TcpListener) {
        listener.set_nonblocking(true).unwrap();
        let (open, streams, server) =
            (self.open.clone(), self.streams.clone(), self.server.clone());
        std::thread::spawn(move || {
            while open.load(Ordering::SeqCst) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                client.set_nonblocking(false).unwrap();
                let Ok(upstream) = TcpStream::connect(&server) else {
                    continue;
                };
                let pairs = [
                    (client.try_clone().unwrap(), upstream.try_clone().unwrap()),
                    (upstream.try_clone().unwrap(), client.try_clone().unwrap()),
                ];
                streams.lock().unwrap().extend([client, upstream]);
                for (mut from, mut to) in pairs {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(Shutdown::Both);
                    });
                }
            }
        });
    }

    /// Closes every connection and stops listening.
    fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        for stream in self.streams.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
        // The accept loop notices within its 5 ms poll and drops the listener.
        std::thread::sleep(Duration::from_millis(50));
    }

    /// Listens again on the same port.
    fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
        self.serve(TcpListener::bind(("127.0.0.1", self.port)).unwrap());
    }
}

/// A PostgreSQL server the collector cannot reach is a 503 with
/// `Retry-After`, as a full disk is: nothing was written and the client
/// keeps its data to retry. It was a 500. Ingest recovers once the server
/// is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_postgres_is_a_503_and_ingest_recovers() {
    let Some(pg) = PgSchema::create().await else {
        return;
    };
    let (server, rest) = {
        let after_at = &pg.url[pg.url.find('@').unwrap() + 1..];
        let slash = after_at.find('/').unwrap();
        (after_at[..slash].to_owned(), after_at[slash..].to_owned())
    };
    let relay = Relay::start(&server);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = pg.config(dir.path());
    let user = &pg.url[..pg.url.find('@').unwrap() + 1];
    cfg.db = format!("{user}127.0.0.1:{}{rest}", relay.port);
    let state = state(&cfg);
    let payload = || anonymous(new_id(), vec![event(new_id(), "command")]);
    assert_eq!(ingest(&state, &payload()).await.0, StatusCode::OK);

    relay.cut();
    let request = post("/v1/ingest", payload().to_string());
    let (status, response) = send(&state, request).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key("retry-after"));

    relay.restore();
    let mut recovered = false;
    for _ in 0..100 {
        if ingest(&state, &payload()).await.0 == StatusCode::OK {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "ingest did not recover once the server was back");
    state.store().close().await.unwrap();
}
