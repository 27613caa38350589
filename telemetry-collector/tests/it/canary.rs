//! The canary test: marker strings planted in request headers, in fields
//! above the tier, in the values of unknown props and identity fields, in
//! unknown fields and in malformed bodies must never reach the database
//! file, its write-ahead log, or the logs.
//!
//! The *names* of undeclared events, props and identity fields are another
//! matter since per-item refusal: the operator is told which ones a newer
//! tool sends (in `refusals` and one warning an hour), so they are checked
//! to be there, and only their values to be absent.

use std::process::Stdio;

use serde_json::json;

use crate::common::*;

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn read_all(paths: &[std::path::PathBuf]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for path in paths {
        if let Ok(b) = std::fs::read(path) {
            bytes.extend(b);
        }
    }
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_markers_never_reach_the_database_or_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), "");
    let log_path = dir.path().join("collector.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let collector = Collector::start(&config, Stdio::from(log));
    let url = format!("{}/v1/ingest", collector.url);
    let client = client();
    let install = new_id();

    // Accepted, with markers in every header a proxy or client might send.
    let accepted = anonymous(
        install,
        vec![
            json!({"id": new_id(), "name": "command", "timestamp": now_ts(), "props": {"name": "greet"}}),
        ],
    );
    let response = client
        .post(&url)
        .header("content-type", "application/json")
        .header("user-agent", "CANARY-UA-5c1f")
        .header("x-forwarded-for", "198.51.100.231")
        .header("x-canary", "CANARY-HDR-77aa")
        .header("cookie", "session=CANARY-COOKIE-3b")
        .header("referer", "https://CANARY-REFERER.example/")
        .body(accepted.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);

    // Refused: each carries a marker where the tier or manifest forbids it.
    let mut identity_at_anonymous = anonymous(install, vec![event(new_id(), "install")]);
    identity_at_anonymous["identity"] = json!({"email": "CANARY-IDENTITY@example.org"});
    let mut undeclared_identity = full(install, vec![event(new_id(), "install")], "a@b");
    undeclared_identity["identity"]["canary_field_q"] = json!("CANARY-UNDECLARED-VALUE");
    let unknown_prop = anonymous(
        install,
        vec![
            json!({"id": new_id(), "name": "command", "timestamp": now_ts(),
                    "props": {"name": "greet", "canary_prop_name_q": "CANARY-PROP-VALUE"}}),
        ],
    );
    let unknown_event = anonymous(install, vec![event(new_id(), "canary_event_q")]);
    let mut unknown_field = anonymous(install, vec![event(new_id(), "install")]);
    unknown_field["events"][0]["canary_unknown_field_q"] = json!("CANARY-UNKNOWN-FIELD-VALUE");
    let mut counters_above = aggregate(new_id(), "command", 1);
    counters_above["install_id"] = json!(new_id());
    counters_above["counters"][0]["props"] = json!({"name": "CANARY-ENUM-VALUE"});
    for refused in [identity_at_anonymous, counters_above] {
        let (status, body) = http_post(&client, &url, &refused).await.unwrap();
        assert_eq!(status, 422, "{body}");
    }
    // Refused per item (or, for the unknown field, ignored): a 2xx whose
    // refused item is counted by name.
    for partly in [
        undeclared_identity,
        unknown_prop,
        unknown_event,
        unknown_field,
    ] {
        let (status, body) = http_post(&client, &url, &partly).await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(
            body["refused"].as_u64() == Some(1) || body["ignored"].as_u64() == Some(1),
            "{body}"
        );
    }
    let response = client
        .post(&url)
        .header("content-type", "application/json")
        .body("{\"project\": \"CANARY-MALFORMED\", oops")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);

    let db = dir.path().join("telemetry.db");
    let files = |db: &std::path::Path| {
        vec![
            db.to_owned(),
            db.with_extension("db-wal"),
            db.with_extension("db-shm"),
        ]
    };
    let markers: Vec<Vec<u8>> = [
        "CANARY-UA-5c1f",
        "198.51.100.231",
        "CANARY-HDR-77aa",
        "CANARY-COOKIE-3b",
        "CANARY-REFERER",
        "CANARY-IDENTITY",
        "CANARY-UNDECLARED-VALUE",
        "CANARY-PROP-VALUE",
        "CANARY-UNKNOWN-FIELD-VALUE",
        "CANARY-ENUM-VALUE",
        "CANARY-MALFORMED",
        &install.to_string(),
    ]
    .iter()
    .map(|m| m.as_bytes().to_vec())
    .chain([install.as_bytes().to_vec()])
    .collect();

    // While running: the data is in the write-ahead log.
    let live = read_all(&files(&db));
    assert!(
        contains(&live, b"greet"),
        "positive control: accepted data is visible to the scan"
    );
    for marker in &markers {
        assert!(
            !contains(&live, marker),
            "{} found in the live database",
            String::from_utf8_lossy(marker)
        );
    }
    assert!(
        !contains(&live, b"127.0.0.1"),
        "the peer address is not stored"
    );
    for name in [
        "identity.canary_field_q",
        "command.canary_prop_name_q",
        "canary_event_q",
        "events[].canary_unknown_field_q",
    ] {
        assert!(
            contains(&live, name.as_bytes()),
            "positive control: the refusal of {name} is counted by name"
        );
    }

    assert!(collector.terminate());
    let stopped = read_all(&files(&db));
    assert!(contains(&stopped, b"greet"));
    let logs = std::fs::read(&log_path).unwrap();
    assert!(
        !logs.is_empty(),
        "positive control: the collector logged at trace level"
    );
    // One warning per reason and tool version names what a newer tool sends.
    let text = String::from_utf8_lossy(&logs);
    for name in [
        "canary_event_q",
        "command.canary_prop_name_q",
        "identity.canary_field_q",
    ] {
        assert!(
            text.lines()
                .any(|l| l.contains("version skew") && l.contains(name)),
            "no version-skew warning names {name}"
        );
    }
    for marker in &markers {
        let m = String::from_utf8_lossy(marker);
        assert!(
            !contains(&stopped, marker),
            "{m} found in the stopped database"
        );
        assert!(!contains(&logs, marker), "{m} found in the logs");
    }
}
