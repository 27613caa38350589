//! Replaying an event id or a report id never counts twice, counters included.

use axum::http::StatusCode;
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn the_same_event_id_twice_is_stored_and_counted_once() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let state = state(&cfg);
    let install = new_id();
    let first = new_id();
    let payload = anonymous(
        install,
        vec![event(first, "install"), event(new_id(), "active")],
    );
    let (status, body) = ingest(&state, &payload).await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({"accepted": 2, "duplicates": 0}))
    );
    let (status, body) = ingest(&state, &payload).await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({"accepted": 0, "duplicates": 2}))
    );
    // A new batch that repeats one id: only the new event counts.
    let mixed = anonymous(
        install,
        vec![event(first, "install"), event(new_id(), "install")],
    );
    let (_, body) = ingest(&state, &mixed).await;
    assert_eq!(body, json!({"accepted": 1, "duplicates": 1}));

    let (_, stats) = admin_get(&state, "/api/v1/projects/demo/stats").await;
    assert_eq!(stats["installs"], 2);
    assert_eq!(stats["active_installs"], 1);
    state.store().close().await.unwrap();
    let db = cfg.db_path();
    assert_eq!(query_i64(&db, "SELECT COUNT(*) FROM events"), 3);
    assert_eq!(query_i64(&db, "SELECT SUM(count) FROM daily_counters"), 3);
}

#[tokio::test]
async fn the_same_report_id_twice_is_counted_once() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let state = state(&cfg);
    let report = aggregate(new_id(), "install", 7);
    for expected in [
        json!({"accepted": 1, "duplicates": 0}),
        json!({"accepted": 0, "duplicates": 1}),
    ] {
        let (status, body) = ingest(&state, &report).await;
        assert_eq!((status, body), (StatusCode::OK, expected));
    }
    // Concurrent retries of one new report: exactly one of them counts.
    let report = aggregate(new_id(), "install", 5);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (state, report) = (state.clone(), report.clone());
        tasks.spawn(async move { ingest(&state, &report).await });
    }
    let mut accepted = 0;
    while let Some(result) = tasks.join_next().await {
        let (status, body) = result.unwrap();
        assert_eq!(status, StatusCode::OK);
        accepted += body["accepted"].as_u64().unwrap();
    }
    assert_eq!(accepted, 1);
    let (_, stats) = admin_get(&state, "/api/v1/projects/demo/stats").await;
    assert_eq!(stats["installs"], 12);
    state.store().close().await.unwrap();
    assert_eq!(
        query_i64(&cfg.db_path(), "SELECT COUNT(*) FROM seen_reports"),
        2
    );
}
