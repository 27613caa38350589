//! Three collector processes share one PostgreSQL schema and one pseudonym
//! key; concurrent clients spread over them, and retries of the same ids go to
//! different collectors, even at the same moment. Counts must be exact, with
//! no duplicates, and the stats of all three must agree. Two collectors in
//! one process ingest, delete and purge the same installs at once, and the
//! retention matrix must still equal the rows it counts.

use std::process::Stdio;

use serde_json::{Value, json};
use telemetry_collector::secrets::InstallHasher;

use crate::backends::{PgSchema, pg_connect, run_cli};
use crate::common::*;

/// Clients running at once.
const CLIENTS: usize = 12;
/// Rounds per client; each sends one event batch and one report, twice.
const ROUNDS: usize = 5;
/// Events per batch.
const EVENTS: usize = 4;

async fn admin_stats(client: &reqwest::Client, url: &str) -> Value {
    let response = client
        .get(format!("{url}/api/v1/projects/demo/stats"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    serde_json::from_str(&response.text().await.unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_collectors_on_one_database_count_exactly() {
    let Some(pg) = PgSchema::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("demo.telemetry.toml"), MANIFEST).unwrap();
    // Operators copy one key file to every host; here all three read one file.
    let key = dir.path().join("pseudonym-key");
    InstallHasher::load_or_create(&key).unwrap();
    let config = dir.path().join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "db = {db:?}\nadmin_token = {TOKEN:?}\npseudonym_key_file = {key:?}\n\
             [rate_limit]\nrequests_per_minute = 0\n\n\
             [[projects]]\nname = \"demo\"\nmanifest = \"demo.telemetry.toml\"\nmax_tier = \"full\"\n",
            db = pg.url,
            key = key.to_string_lossy(),
        ),
    )
    .unwrap();

    // Started at the same moment, so their migrations race on an empty schema.
    let starting: Vec<_> = (0..3)
        .map(|_| {
            let config = config.clone();
            std::thread::spawn(move || Collector::start(&config, Stdio::null()))
        })
        .collect();
    let collectors: Vec<Collector> = starting.into_iter().map(|t| t.join().unwrap()).collect();
    let urls: Vec<String> = collectors.iter().map(|c| c.url.clone()).collect();

    let http = client();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..CLIENTS {
        let (http, urls) = (http.clone(), urls.clone());
        tasks.spawn(async move {
            let mut totals = [0u64; 2];
            for round in 0..ROUNDS {
                let first = &urls[(c + round) % 3];
                let second = &urls[(c + round + 1) % 3];
                let events = ["install", "active", "command", "crash"]
                    .iter()
                    .take(EVENTS)
                    .map(|name| {
                        let mut e = event(new_id(), name);
                        if *name == "command" {
                            e["props"] = json!({"name": "greet"});
                        }
                        e
                    })
                    .collect();
                let batch = anonymous(new_id(), events);
                let report = aggregate(new_id(), "install", 3);
                // Even rounds: a retry after the answer. Odd rounds: the same
                // request to two collectors at once.
                for payload in [&batch, &report] {
                    let (to_first, to_second) =
                        (format!("{first}/v1/ingest"), format!("{second}/v1/ingest"));
                    let (a, b) = if round % 2 == 0 {
                        let a = http_post(&http, &to_first, payload).await;
                        let b = http_post(&http, &to_second, payload).await;
                        (a, b)
                    } else {
                        tokio::join!(
                            http_post(&http, &to_first, payload),
                            http_post(&http, &to_second, payload)
                        )
                    };
                    let ((sa, ba), (sb, bb)) = (a.unwrap(), b.unwrap());
                    assert_eq!((sa, sb), (200, 200), "{ba} {bb}");
                    totals[0] +=
                        ba["accepted"].as_u64().unwrap() + bb["accepted"].as_u64().unwrap();
                    totals[1] +=
                        ba["duplicates"].as_u64().unwrap() + bb["duplicates"].as_u64().unwrap();
                }
            }
            totals
        });
    }
    let (mut accepted, mut duplicates) = (0, 0);
    while let Some(result) = tasks.join_next().await {
        let [a, d] = result.unwrap();
        accepted += a;
        duplicates += d;
    }
    let batches = (CLIENTS * ROUNDS) as u64;
    let unique_events = batches * EVENTS as u64;
    // Every report carries one counter; each batch and report was sent twice.
    assert_eq!(accepted, unique_events + batches, "accepted");
    assert_eq!(duplicates, unique_events + batches, "duplicates");

    let db = pg_connect(&pg.url).await.unwrap();
    let count = |sql: &'static str| {
        let db = &db;
        async move { db.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) as u64 }
    };
    assert_eq!(count("SELECT COUNT(*) FROM events").await, unique_events);
    assert_eq!(
        count("SELECT COUNT(DISTINCT event_id) FROM events").await,
        unique_events
    );
    assert_eq!(count("SELECT COUNT(*) FROM installs").await, batches);
    assert_eq!(count("SELECT COUNT(*) FROM seen_reports").await, batches);
    assert_eq!(
        count("SELECT SUM(count)::BIGINT FROM daily_counters").await,
        unique_events + 3 * batches
    );
    assert_eq!(count("SELECT COUNT(*) FROM schema_version").await, 1);

    // Every collector answers the same stats, and the CLI agrees with them.
    let mut answers = Vec::new();
    for url in &urls {
        answers.push(admin_stats(&http, url).await);
    }
    assert_eq!(answers[0]["installs"], batches + 3 * batches);
    assert_eq!(answers[0]["active_installs"], batches);
    for other in &answers[1..] {
        assert_eq!(other, &answers[0]);
    }
    let cli: Value = serde_json::from_str(&run_cli(
        &[
            "stats",
            "--config",
            config.to_str().unwrap(),
            "--project",
            "demo",
            "--format",
            "json",
        ],
        dir.path(),
    ))
    .unwrap();
    for key in [
        "installs",
        "installs_all_time",
        "active_installs",
        "setup_started",
        "setup_completed",
    ] {
        assert_eq!(cli[key], answers[0][key], "{key}");
    }

    for collector in collectors {
        assert!(collector.terminate(), "a collector did not stop cleanly");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collectors_ingesting_deleting_and_purging_at_once_keep_the_retention_matrix_exact() {
    let Some(pg) = PgSchema::create().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = pg.config(dir.path());
    // Two collectors in process: two writers on one database.
    let collectors = [state(&cfg), state(&cfg)];
    let installs: Vec<_> = (0..8).map(|_| new_id()).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..6u64 {
        let (collectors, installs) = (collectors.clone(), installs.clone());
        tasks.spawn(async move {
            let mut seed = 0x2545_f491_4f6c_dd1d_u64 ^ (task << 32);
            let mut next = |n: u64| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed % n
            };
            for _ in 0..40 {
                let state = &collectors[next(2) as usize];
                let install = installs[next(8) as usize];
                match next(12) {
                    0 => {
                        let body = json!({"project": "demo", "install_id": install});
                        let (status, _) =
                            send_json(state, post("/v1/delete", body.to_string())).await;
                        assert_eq!(status.as_u16(), 200);
                    }
                    1 => {
                        let policy = telemetry_collector::store::RetentionPolicy {
                            default_days: 20 + next(30) as u32,
                            per_project: Default::default(),
                        };
                        let today = telemetry_collector::ingest::today();
                        state.store().purge(&policy, today).await.unwrap();
                    }
                    _ => {
                        // Days out of order, so installs move to earlier cohorts.
                        let events = (0..1 + next(3))
                            .map(|_| crate::backends::event_on("active", -(next(60) as i32)))
                            .collect();
                        let (status, body) = ingest(state, &anonymous(install, events)).await;
                        assert_eq!(status.as_u16(), 200, "{body}");
                    }
                }
            }
        });
    }
    tasks.join_all().await;
    for state in &collectors {
        state.store().close().await.unwrap();
    }
    let client = pg_connect(&pg.url).await.unwrap();
    let count = |sql: String| {
        let client = &client;
        async move {
            client
                .query_one(&format!("SELECT CAST(({sql}) AS BIGINT)"), &[])
                .await
                .unwrap()
                .get::<_, i64>(0)
        }
    };
    assert_eq!(
        count(crate::backends::MATRIX_MISMATCHES.to_owned()).await,
        0,
        "the retention matrix equals the join it replaces"
    );
    assert!(count("SELECT COUNT(*) FROM install_weeks".to_owned()).await > 0);
}
