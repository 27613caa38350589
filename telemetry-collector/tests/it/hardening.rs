//! Start-up and command-line hardening, with real collector processes: weak
//! admin tokens are refused, the database and its backups are private
//! whatever the umask, and the commands that read a database say clearly
//! when the database or the project does not exist.

use std::path::Path;
use std::process::{Command, Output};

use axum::http::StatusCode;

use crate::common::*;

fn collector(args: &[&str]) -> Output {
    Command::new(Collector::BIN)
        .args(args)
        .env_remove("TELEMETRY_COLLECTOR_DB")
        .env_remove("TELEMETRY_COLLECTOR_CONFIG")
        .env_remove("TELEMETRY_COLLECTOR_LISTEN")
        .output()
        .unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A config file for `demo` with `token_line` in place of the usual token.
fn config_with_token(dir: &Path, token_line: &str) -> String {
    let path = config_file(dir, "");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace(&format!("admin_token = {TOKEN:?}"), token_line);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn weak_admin_tokens_are_refused_at_start_inline_or_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    let file_line = format!("admin_token_file = {:?}", file.to_string_lossy());
    let cases: [(&str, Option<&str>); 5] = [
        ("admin_token = \"   \"", None),
        ("admin_token = \"\"", None),
        ("admin_token = \"short-token\"", None),
        (&file_line, Some("  \n")),
        (&file_line, Some("fifteen-chars!!\n")),
    ];
    for (line, file_text) in cases {
        if let Some(text) = file_text {
            std::fs::write(&file, text).unwrap();
        }
        let config = config_with_token(dir.path(), line);
        let output = collector(&["serve", "--listen", "127.0.0.1:0", "--config", &config]);
        let err = stderr(&output);
        assert!(!output.status.success(), "{line}: started anyway");
        assert!(err.contains("at least 16 characters"), "{line}: {err}");
    }
}

#[test]
fn stats_of_an_unknown_project_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let state = state(&cfg);
        let (status, _) = ingest(&state, &aggregate(new_id(), "install", 1)).await;
        assert_eq!(status, StatusCode::OK);
        state.store().close().await.unwrap();
    });
    let ok = collector(&["stats", "--db", &cfg.db, "--project", "demo"]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    let typo = collector(&["stats", "--db", &cfg.db, "--project", "dmeo"]);
    assert!(!typo.status.success(), "stats of a typo exits 0");
    let err = stderr(&typo);
    assert!(err.contains("unknown project \"dmeo\""), "{err}");
    assert!(err.contains("demo"), "the known projects are listed: {err}");
    assert!(typo.stdout.is_empty(), "no table of zeros");
}

#[test]
fn purge_and_backup_of_a_missing_database_fail_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.db");
    let missing = missing.to_str().unwrap();
    let copy = dir.path().join("copy.db");
    for args in [
        vec!["purge", "--db", missing],
        vec!["backup", "--db", missing, copy.to_str().unwrap()],
        vec!["stats", "--db", missing, "--project", "demo"],
    ] {
        let output = collector(&args);
        assert!(!output.status.success(), "{args:?}");
        assert!(
            stderr(&output).contains("no database at"),
            "{args:?}: {}",
            stderr(&output)
        );
    }
    assert!(!Path::new(missing).exists(), "nothing created the database");
    assert!(!copy.exists());
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Runs the collector with `args` under `umask`, through `sh`.
#[cfg(unix)]
fn under_umask(umask: &str, args: &[&str]) -> Command {
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(format!("umask {umask}; exec \"$0\" \"$@\""))
        .arg(Collector::BIN)
        .args(args);
    command
}

#[cfg(unix)]
#[test]
fn the_database_its_wal_and_shm_and_backups_are_private_whatever_the_umask() {
    for umask in ["022", "000"] {
        let dir = tempfile::tempdir().unwrap();
        let config = config_file(dir.path(), "");
        let db = dir.path().join("telemetry.db");
        let mut serving = Collector::spawn(
            under_umask(umask, &[]),
            &config,
            std::process::Stdio::null(),
        );
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let payload = anonymous(new_id(), vec![event(new_id(), "install")]);
            let (status, body) =
                http_post(&client(), &format!("{}/v1/ingest", serving.url), &payload)
                    .await
                    .unwrap();
            assert_eq!(status, 200, "{body}");
        });
        // While serving, the write-ahead log and shared-memory files exist.
        for suffix in ["", "-wal", "-shm"] {
            let file = dir.path().join(format!("telemetry.db{suffix}"));
            assert_eq!(mode(&file), 0o600, "umask {umask}: {}", file.display());
        }
        let copy = dir.path().join("copy.db");
        let output = under_umask(
            umask,
            &[
                "backup",
                "--db",
                db.to_str().unwrap(),
                copy.to_str().unwrap(),
            ],
        )
        .output()
        .unwrap();
        assert!(output.status.success(), "{}", stderr(&output));
        assert_eq!(mode(&copy), 0o600, "umask {umask}: the backup");
        let _ = serving.child.kill();
        let _ = serving.child.wait();
    }
}

#[cfg(unix)]
#[test]
fn starting_on_a_database_others_can_read_warns() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let state = state(&cfg);
        state.store().close().await.unwrap();
    });
    let db = cfg.db_path();
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let config = config_file(dir.path(), "");
    let log = dir.path().join("stderr.log");
    // The warning is logged before the collector says where it listens.
    drop(Collector::start(
        &config,
        std::fs::File::create(&log).unwrap().into(),
    ));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("readable by other users"), "{text}");
    assert!(text.contains("chmod 600"), "{text}");
    assert_eq!(mode(&db), 0o644, "the warning changes nothing by itself");
}

#[tokio::test]
async fn a_timestamp_that_used_to_panic_the_handler_gets_a_400() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(&config(dir.path()));
    let mut payload = anonymous(new_id(), vec![event(new_id(), "install")]);
    payload["events"][0]["timestamp"] = serde_json::json!("2026-11-21T10:00:0\u{e9}Z");
    let (status, body) = ingest(&state, &payload).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "malformed_payload");
    assert!(
        !body.to_string().contains('\u{e9}'),
        "no input echoed: {body}"
    );
}
