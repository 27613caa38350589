//! Raw events older than a project's retention are purged; counters are kept.

use axum::http::StatusCode;
use serde_json::json;

use crate::common::*;

fn day_offset(days: i32) -> String {
    telemetry_collector::ingest::today()
        .add_days(days)
        .to_string()
}

#[tokio::test]
async fn purge_removes_old_raw_rows_and_keeps_counters() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    // Ingest refuses events older than the retention, so the old one arrived
    // while the retention was longer; the purge below applies 30 days.
    cfg.projects[0].retention_days = 60;
    let state = state(&cfg);
    let old_install = new_id();
    let old = json!({"id": new_id(), "name": "install",
                     "timestamp": format!("{}T08:00:00Z", day_offset(-40))});
    let recent = json!({"id": new_id(), "name": "install",
                        "timestamp": format!("{}T08:00:00Z", day_offset(-2))});
    assert_eq!(
        ingest(&state, &full(old_install, vec![old], "old@example.org"))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        ingest(&state, &anonymous(new_id(), vec![recent])).await.0,
        StatusCode::OK
    );

    let lowered = telemetry_collector::store::RetentionPolicy {
        default_days: 90,
        per_project: [("demo".to_owned(), 30)].into(),
    };
    let out = state
        .store()
        .purge(&lowered, telemetry_collector::ingest::today())
        .await
        .unwrap();
    assert_eq!(out.events, 1);
    assert_eq!(out.installs, 1);
    let db = cfg.db_path();
    assert_eq!(query_i64(&db, "SELECT COUNT(*) FROM events"), 1);
    assert_eq!(query_i64(&db, "SELECT COUNT(*) FROM installs"), 1);
    assert_eq!(
        query_i64(&db, "SELECT COUNT(*) FROM identities"),
        0,
        "the stale identity goes too"
    );
    let (_, stats) = admin_get(
        &state,
        &format!("/api/v1/projects/demo/stats?from={}", day_offset(-60)),
    )
    .await;
    assert_eq!(stats["installs"], 2, "counters are kept");
    state.store().close().await.unwrap();
}

#[tokio::test]
async fn the_purge_command_applies_the_configured_retention() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    // Sent while the retention was 30 days; the purge applies the new 10.
    cfg.projects[0].retention_days = 30;
    let state = state(&cfg);
    let old = json!({"id": new_id(), "name": "crash",
                     "timestamp": format!("{}T08:00:00Z", day_offset(-11))});
    assert_eq!(
        ingest(&state, &anonymous(new_id(), vec![old])).await.0,
        StatusCode::OK
    );
    state.store().close().await.unwrap();

    let config = config_file(dir.path(), "");
    // The file ends inside the `[[projects]]` entry of demo, so this sets its retention.
    let text = std::fs::read_to_string(&config).unwrap() + "retention_days = 10\n";
    std::fs::write(&config, text).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_telemetry-collector"))
        .args(["purge", "--config"])
        .arg(&config)
        .env_remove("TELEMETRY_COLLECTOR_DB")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("purged 1 events"), "{stdout}");
    let db = cfg.db_path();
    assert_eq!(query_i64(&db, "SELECT COUNT(*) FROM events"), 0);
    assert_eq!(query_i64(&db, "SELECT SUM(count) FROM daily_counters"), 1);
}
