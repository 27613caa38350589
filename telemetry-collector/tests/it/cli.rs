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

/// Starts `serve` with `args` and `env`, returns the first stdout line (or
/// stderr if it failed), then stops the process.
fn first_line_of_serve(args: &[&str], env: &[(&str, &str)]) -> Result<String, String> {
    use std::io::{BufRead, BufReader, Read};
    let mut command = Command::new(env!("CARGO_BIN_EXE_telemetry-collector"));
    command
        .arg("serve")
        .args(args)
        .env_remove("TELEMETRY_COLLECTOR_DB")
        .env_remove("TELEMETRY_COLLECTOR_LISTEN")
        .env_remove("TELEMETRY_COLLECTOR_CONFIG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _ = child.kill();
    let status = child.wait().unwrap();
    if line.is_empty() {
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert!(!status.success());
        Err(err)
    } else {
        Ok(line)
    }
}

#[test]
fn flags_override_env_which_overrides_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), "listen = \"not-an-address\"");
    let config = config.to_str().unwrap();
    // The file alone: its invalid address is used and refused.
    let err = first_line_of_serve(&["--config", config], &[]).unwrap_err();
    assert!(err.contains("not-an-address"), "{err}");
    // The env var beats the file.
    let line = first_line_of_serve(
        &["--config", config],
        &[("TELEMETRY_COLLECTOR_LISTEN", "127.0.0.1:0")],
    )
    .unwrap();
    assert!(
        line.starts_with("telemetry-collector listening on http://127.0.0.1:"),
        "{line}"
    );
    // The flag beats the env var.
    let line = first_line_of_serve(
        &["--config", config, "--listen", "127.0.0.1:0"],
        &[("TELEMETRY_COLLECTOR_LISTEN", "also-not-an-address")],
    )
    .unwrap();
    assert!(
        line.starts_with("telemetry-collector listening on"),
        "{line}"
    );
    // The config file itself can come from the environment.
    let line = first_line_of_serve(
        &["--listen", "127.0.0.1:0"],
        &[("TELEMETRY_COLLECTOR_CONFIG", config)],
    )
    .unwrap();
    assert!(
        line.starts_with("telemetry-collector listening on"),
        "{line}"
    );
    assert!(
        dir.path().join("telemetry.db").exists(),
        "the db from the config file is used"
    );
}

#[test]
fn zero_config_start_prints_where_things_are_and_warns_about_open_mode() {
    use std::io::{BufRead, BufReader, Read};
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("fresh.db");
    let mut child = Command::new(env!("CARGO_BIN_EXE_telemetry-collector"))
        .args(["serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(&db)
        .env_remove("TELEMETRY_COLLECTOR_CONFIG")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut banner = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let done = line.starts_with("admin token:");
        banner.push(line);
        if done {
            break;
        }
    }
    let _ = child.kill();
    child.wait().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();

    let token_path = dir.path().join("fresh.db.admin-token");
    let text = banner.join("\n");
    assert!(text.contains("dashboard: http://127.0.0.1:"), "{text}");
    assert!(
        text.contains(&format!(
            "admin token: generated into {}",
            token_path.display()
        )),
        "{text}"
    );
    assert!(stderr.contains("OPEN MODE"), "{stderr}");
    let token = std::fs::read_to_string(&token_path).unwrap();
    assert!(token.trim().len() >= 32);
    assert!(
        !text.contains(token.trim()),
        "the token itself is never printed"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for file in [&token_path, &dir.path().join("fresh.db.pseudonym-key")] {
            let mode = std::fs::metadata(file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", file.display());
        }
    }
}

#[test]
fn check_manifest_names_each_incompatible_change_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old.toml");
    let grown = dir.path().join("grown.toml");
    let broken = dir.path().join("broken.toml");
    std::fs::write(&old, MANIFEST).unwrap();
    std::fs::write(
        &grown,
        MANIFEST.replace(r#"["greet", "init"]"#, r#"["greet", "init", "deploy"]"#)
            + "\n[events.lint]\ndescription = \"Lint ran\"\n",
    )
    .unwrap();
    std::fs::write(
        &broken,
        MANIFEST
            .replace(r#"["greet", "init"]"#, r#"["greet"]"#)
            .replace("min_tier = \"anonymous\"", "min_tier = \"full\""),
    )
    .unwrap();
    let path = |p: &std::path::Path| p.to_str().unwrap().to_owned();
    let ok = run(&["check-manifest", &path(&old), &path(&grown)]);
    assert!(stdout(&ok).contains("is compatible"));
    let bad = run(&["check-manifest", &path(&old), &path(&broken)]);
    assert_eq!(bad.status.code(), Some(1));
    let text = String::from_utf8_lossy(&bad.stdout);
    assert!(
        text.contains("incompatible: prop `command.name`: enum value `init` was removed"),
        "{text}"
    );
    assert!(
        text.contains(
            "incompatible: event `crash`: min_tier was raised from `anonymous` to `full`"
        ),
        "{text}"
    );
    assert!(String::from_utf8_lossy(&bad.stderr).contains("2 incompatible changes"));
    // Going back is as incompatible as going forward is fine.
    let back = run(&["check-manifest", &path(&grown), &path(&old)]);
    assert_eq!(back.status.code(), Some(1));
    let missing = run(&["check-manifest", &path(&old), "/nonexistent/manifest.toml"]);
    assert!(!missing.status.success());
}
