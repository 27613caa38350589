//! `POST /v1/delete` leaves no row anywhere that references the install.

use axum::http::StatusCode;
use rusqlite::Connection;
use serde_json::json;
use telemetry_collector::secrets::InstallHasher;

use crate::common::*;

/// How many cells in the whole database hold exactly `needle`, or contain it.
fn references(conn: &Connection, needle: &[u8]) -> usize {
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut hits = 0;
    for table in tables {
        let columns: Vec<String> = conn
            .prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        for column in columns {
            let n: i64 = conn
                .query_row(
                    &format!(
                        "SELECT COUNT(*) FROM \"{table}\" WHERE instr(CAST(\"{column}\" AS BLOB), ?1) > 0"
                    ),
                    [needle],
                    |r| r.get(0),
                )
                .unwrap();
            hits += n as usize;
        }
    }
    hits
}

#[tokio::test]
async fn after_a_delete_no_row_references_the_install() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let state = state(&cfg);
    let (gone, kept) = (new_id(), new_id());
    for install in [gone, kept] {
        let events = vec![event(new_id(), "install"), event(new_id(), "crash")];
        let (status, _) = ingest(
            &state,
            &full(install, events, &format!("{install}@example.org")),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }
    let hasher = InstallHasher::load_or_create(&cfg.pseudonym_key_path()).unwrap();
    let gone_hash = hasher.hash("demo", &gone).0;
    let kept_hash = hasher.hash("demo", &kept).0;
    let conn = Connection::open(cfg.db_path()).unwrap();
    // Five tables hold the install before the delete: events (2 rows), installs,
    // install_weeks, identities, and install_uses (3 rows: the week's "sent
    // anything", `install` and `crash`).
    assert_eq!(references(&conn, &gone_hash), 8);
    assert!(
        references(&conn, gone.to_string().as_bytes()) > 0,
        "the identity names it"
    );

    let delete = json!({"project": "demo", "install_id": gone}).to_string();
    let (status, first) = send_json(&state, post("/v1/delete", delete.clone())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(references(&conn, &gone_hash), 0);
    assert_eq!(references(&conn, gone.to_string().as_bytes()), 0);
    assert_eq!(
        references(&conn, &kept_hash),
        8,
        "other installs are untouched"
    );

    // The answer is the same for a repeat and for an id never seen: no oracle.
    let (status, again) = send_json(&state, post("/v1/delete", delete)).await;
    assert_eq!((status, &again), (StatusCode::OK, &first));
    let unknown = json!({"project": "demo", "install_id": new_id()}).to_string();
    let (status, never) = send_json(&state, post("/v1/delete", unknown)).await;
    assert_eq!((status, &never), (StatusCode::OK, &first));

    // Counters carry no id and stay, so stats do not change.
    let (_, stats) = admin_get(&state, "/api/v1/projects/demo/stats").await;
    assert_eq!(stats["installs"], 2);
    state.store().close().await.unwrap();
    drop(conn);

    // With secure_delete on and the log checkpointed at shutdown, the bytes are gone from the file too.
    let bytes = std::fs::read(cfg.db_path()).unwrap();
    assert!(!bytes.windows(16).any(|w| w == gone_hash));
    assert!(bytes.windows(16).any(|w| w == kept_hash));
}
