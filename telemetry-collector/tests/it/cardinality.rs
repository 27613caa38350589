//! Cardinality caps against a real server on 127.0.0.1:0 and real requests:
//! 100,000 made-up values in 100 requests store fewer than 10,000 strings,
//! every event still counts, and `/metrics` shows the overflow. On every
//! backend, and in open mode too.

use serde_json::{Value, json};
use telemetry_collector::AppState;
use tokio::sync::oneshot;

use crate::backends::backends;
use crate::common::*;

/// The test manifest with a `version` prop, which takes any version.
const VERSIONED: &str = r#"
project = "demo"
endpoint = "http://127.0.0.1:9"

[events.command]
description = "A command ran"
min_tier = "aggregate"
props.name = { kind = "enum", values = ["greet", "init"], description = "Which command" }
props.plugin = { kind = "version", description = "The plugin's version" }
"#;

/// Serves `state` on 127.0.0.1:0 and runs `f` with its URL, then stops it.
async fn with_server<F, Fut>(state: AppState, f: F)
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(telemetry_collector::serve(listener, state, async {
        let _ = stopped.await;
    }));
    f(url).await;
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

/// Sends 100 requests of 1,000 events, each event with a value never seen
/// before from `value(n)` in prop `prop`; returns the events accepted.
async fn flood(url: &str, event: &str, prop: &str, value: impl Fn(usize) -> String) -> u64 {
    let client = client();
    let mut accepted = 0;
    for request in 0..100 {
        let events: Vec<Value> = (0..1000)
            .map(|i| {
                let mut e = event_value(event);
                e["props"] = json!({ prop: value(request * 1000 + i) });
                e
            })
            .collect();
        let payload = anonymous(new_id(), events);
        let (status, body) = http_post(&client, &format!("{url}/v1/ingest"), &payload)
            .await
            .unwrap();
        assert_eq!(status, 200, "request {request}: {body}");
        accepted += body["accepted"].as_u64().unwrap();
    }
    accepted
}

fn event_value(name: &str) -> Value {
    event(new_id(), name)
}

async fn overflow(url: &str, scope: &str) -> u64 {
    let text = http_admin_get(&client(), &format!("{url}/metrics")).await;
    let prefix = format!("telemetry_cardinality_overflow_total{{scope=\"{scope}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_made_up_versions_store_a_bounded_number_of_values() {
    for backend in backends().await {
        std::fs::write(&backend.config.projects[0].manifest, VERSIONED).unwrap();
        let state = backend.state();
        with_server(state, |url| async move {
            let accepted = flood(&url, "command", "plugin", |n| format!("1.2.{n}")).await;
            assert_eq!(accepted, 100_000, "{}: every event counts", backend.name);
            assert_eq!(
                overflow(&url, "prop_value").await,
                99_000,
                "{}",
                backend.name
            );
        })
        .await;
        let sql = match backend.pg {
            None => "SELECT COUNT(*) FROM strings",
            Some(_) => "SELECT COUNT(DISTINCT props) FROM events",
        };
        let stored = backend.scalar(sql).await;
        assert!(stored < 10_000, "{}: {stored} strings", backend.name);
        assert!(stored >= 1000, "{}: the first 1,000 are kept", backend.name);
        let folded = match backend.pg {
            None => {
                "SELECT COUNT(*) FROM events e JOIN strings s ON s.id = e.props \
                 WHERE s.text LIKE '%(other)%'"
            }
            Some(_) => "SELECT COUNT(*) FROM events WHERE props LIKE '%(other)%'",
        };
        backend.expect_scalar(folded, 99_000).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_mode_caps_values_names_and_projects() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.projects.clear();
    cfg.cardinality.open_projects_per_day = 3;
    cfg.cardinality.open_names_per_day = 5;
    let db = cfg.db_path();
    with_server(state(&cfg), |url| async move {
        let accepted = flood(&url, "anything", "choice", |n| format!("v{n}")).await;
        assert_eq!(accepted, 100_000);
        // Made-up event names: the first five are kept, then `(other)`.
        let client = client();
        for i in 0..20 {
            let payload = anonymous(new_id(), vec![event_value(&format!("made_up_{i}"))]);
            let (status, _) = http_post(&client, &format!("{url}/v1/ingest"), &payload)
                .await
                .unwrap();
            assert_eq!(status, 200);
        }
        // Built-in events are never folded, however many names came before.
        let payload = anonymous(new_id(), vec![event_value("install")]);
        assert_eq!(
            http_post(&client, &format!("{url}/v1/ingest"), &payload)
                .await
                .unwrap()
                .0,
            200
        );
        // Projects: `demo` and two more are taken; a fourth waits for tomorrow.
        for (project, expected) in [("second", 200), ("third", 200), ("fourth", 429)] {
            let mut payload = anonymous(new_id(), vec![event_value("install")]);
            payload["project"] = json!(project);
            let (status, body) = http_post(&client, &format!("{url}/v1/ingest"), &payload)
                .await
                .unwrap();
            assert_eq!(status, expected, "{project}: {body}");
        }
        assert_eq!(overflow(&url, "prop_value").await, 99_000);
        assert_eq!(overflow(&url, "event_name").await, 16);
        assert_eq!(overflow(&url, "project").await, 1);
    })
    .await;
    let strings = query_i64(&db, "SELECT COUNT(*) FROM strings");
    assert!(strings < 10_000, "{strings} strings");
    assert_eq!(
        query_i64(
            &db,
            "SELECT COUNT(*) FROM events e JOIN strings s ON s.id = e.name WHERE s.text = '(other)'"
        ),
        16
    );
    assert_eq!(query_i64(&db, "SELECT COUNT(*) FROM projects"), 3);
}
