//! The command line: default-config, stats in every format, backup.

use std::process::{Command, Output};

use axum::http::StatusCode;
use serde_json::Value;
use telemetry_collector::config::Config;

use crate::common::*;

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_telemetry-collector"))
        .args(args)
        .env_remove("TELEMETRY_COLLECTOR_DB")
        .env_remove("TELEMETRY_COLLECTOR_CONFIG")
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

#[test]
fn default_config_prints_a_config_that_parses_to_the_defaults() {
    let text = stdout(&run(&["default-config"]));
    let parsed = Config::parse(&text).unwrap();
    assert_eq!(format!("{parsed:?}"), format!("{:?}", Config::default()));
    assert!(
        text.lines().filter(|l| l.starts_with('#')).count() > 20,
        "commented"
    );
}

#[tokio::test]
async fn stats_and_backup_read_a_real_database() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let state = state(&cfg);
    for (event, count) in [
        ("install", 4),
        ("setup_started", 4),
        ("setup_completed", 3),
        ("active", 2),
    ] {
        assert_eq!(
            ingest(&state, &aggregate(new_id(), event, count)).await.0,
            StatusCode::OK
        );
    }
    state.store().close().await.unwrap();
    let db = cfg.db.clone();

    let json: Value = serde_json::from_str(&stdout(&run(&[
        "stats",
        "--db",
        &db,
        "--project",
        "demo",
        "--days",
        "7",
        "--format",
        "json",
    ])))
    .unwrap();
    assert_eq!(json["installs"], 4);
    assert_eq!(json["active_installs"], 2);
    assert_eq!(json["setup_started"], 4);
    assert_eq!(json["setup_completed"], 3);
    assert_eq!(json["setup_completion_rate"], 0.75);
    assert_eq!(json["daily"].as_array().unwrap().len(), 7);

    let table = stdout(&run(&["stats", "--db", &db, "--project", "demo"]));
    assert!(table.contains("setup completion rate"), "{table}");
    assert!(table.contains("75.0%"), "{table}");

    let csv = stdout(&run(&[
        "stats",
        "--db",
        &db,
        "--project",
        "demo",
        "--days",
        "2",
        "--format",
        "csv",
    ]));
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "day,installs,active,setup_started,setup_completed,events"
    );
    assert_eq!(lines.len(), 3);
    assert!(lines[2].starts_with(&today()), "{csv}");
    assert!(lines[2].ends_with(",4,2,4,3,13"), "{csv}");
    let csv = stdout(&run(&[
        "stats",
        "--db",
        &db,
        "--project",
        "demo",
        "--format",
        "csv",
        "--table",
        "os",
    ]));
    assert_eq!(csv, "os,installs,active_installs\r\nlinux,4,2\r\n");

    let copy = dir.path().join("backup.db");
    stdout(&run(&["backup", "--db", &db, copy.to_str().unwrap()]));
    assert_eq!(
        query_i64(&copy, "SELECT SUM(count) FROM daily_counters"),
        13
    );
    assert!(
        !run(&["backup", "--db", &db, copy.to_str().unwrap()])
            .status
            .success(),
        "no overwrite"
    );

    let missing = dir.path().join("missing.db");
    let output = run(&[
        "stats",
        "--db",
        missing.to_str().unwrap(),
        "--project",
        "demo",
    ]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("no database at"));
    assert!(!missing.exists(), "stats never creates a database");
}
