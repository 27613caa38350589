//! The load generator against an in-test collector stand-in that checks every
//! payload with the real tier policy and records every id it sees.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use loadgen::ingest::{LoadConfig, run};
use loadgen::payload::PayloadSpec;
use telemetry_protocol::{IngestPayload, IngestResponse, Tier, Uuid};

/// What the stand-in collector saw.
#[derive(Debug, Default)]
struct Seen {
    requests: u64,
    invalid: u64,
    items: u64,
    ids: HashSet<Uuid>,
    projects: HashSet<String>,
    names: HashSet<String>,
}

type Shared = Arc<Mutex<Seen>>;

/// Accepts valid payloads like a collector would; answers 422 to invalid ones
/// and 503 to every `reject_every`-th request.
async fn ingest(
    State((seen, reject_every)): State<(Shared, u64)>,
    body: axum::body::Bytes,
) -> (StatusCode, String) {
    let payload: IngestPayload = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(_) => return (StatusCode::BAD_REQUEST, String::new()),
    };
    let mut seen = seen.lock().unwrap();
    seen.requests += 1;
    if telemetry_protocol::validate(&payload).is_err() {
        seen.invalid += 1;
        return (StatusCode::UNPROCESSABLE_ENTITY, String::new());
    }
    if reject_every > 0 && seen.requests % reject_every == 0 {
        return (StatusCode::SERVICE_UNAVAILABLE, String::new());
    }
    seen.projects.insert(payload.project.clone());
    let mut accepted = 0;
    for c in payload.counters.iter().flatten() {
        seen.names.insert(c.event.clone());
        accepted += 1;
    }
    for e in payload.events.iter().flatten() {
        seen.names.insert(e.name.clone());
        assert!(seen.ids.insert(e.id), "event id sent twice");
        accepted += 1;
    }
    if let Some(report) = payload.report_id {
        assert!(seen.ids.insert(report), "report id sent twice");
    }
    seen.items += accepted;
    let answer = IngestResponse {
        accepted,
        ..IngestResponse::default()
    };
    (StatusCode::OK, serde_json::to_string(&answer).unwrap())
}

async fn serve(reject_every: u64) -> (String, Shared) {
    let seen = Shared::default();
    let app = Router::new()
        .route("/v1/ingest", post(ingest))
        .with_state((seen.clone(), reject_every));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

fn config(url: &str, tier: Tier, batch: usize, requests: u64) -> LoadConfig {
    LoadConfig {
        url: url.to_owned(),
        spec: PayloadSpec {
            project: "bench-project".into(),
            tier,
            events: vec!["command".into(), "greet".into()],
            batch,
            installs: 5,
        },
        requests,
        concurrency: 4,
        duration: Duration::from_secs(120),
        request_timeout: Duration::from_secs(30),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tier_and_batch_size_sends_valid_unique_payloads() {
    for tier in [Tier::Aggregate, Tier::Anonymous, Tier::Full] {
        for batch in [1, 10, 100] {
            let (url, seen) = serve(0).await;
            let report = run(config(&url, tier, batch, 20)).await.unwrap();
            let seen = seen.lock().unwrap();
            let case = format!("{tier} batch {batch}");
            assert_eq!(seen.requests, 20, "{case}");
            assert_eq!(seen.invalid, 0, "{case}");
            assert_eq!(seen.items, 20 * batch as u64, "{case}");
            let ids = if tier == Tier::Aggregate {
                20
            } else {
                20 * batch
            };
            assert_eq!(seen.ids.len(), ids, "{case}: unique ids");
            assert_eq!(seen.projects, HashSet::from(["bench-project".to_owned()]));
            assert_eq!(
                seen.names,
                HashSet::from(["command".to_owned(), "greet".to_owned()]),
                "{case}"
            );
            assert_eq!((report.ok, report.completed), (20, 20), "{case}");
            assert_eq!(report.events_ok, 20 * batch as u64, "{case}");
            assert_eq!(report.accepted, 20 * batch as u64, "{case}");
            assert!(report.non_2xx.is_empty() && report.transport_errors == 0);
            assert!(!report.hit_time_limit);
            assert!(report.events_per_sec > 0.0 && report.latency_p99_ms >= report.latency_p50_ms);
        }
    }
}

#[tokio::test]
async fn non_2xx_answers_are_counted_by_status_and_not_as_events() {
    let (url, _seen) = serve(4).await;
    let report = run(config(&url, Tier::Anonymous, 10, 40)).await.unwrap();
    assert_eq!(report.completed, 40);
    assert_eq!(report.non_2xx.get(&503), Some(&10));
    assert_eq!(report.ok, 30);
    assert_eq!(report.events_ok, 300);
}

#[tokio::test]
async fn a_refused_collector_gives_transport_errors_not_a_hang() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let report = run(config(
        &format!("http://127.0.0.1:{port}"),
        Tier::Full,
        1,
        10,
    ))
    .await
    .unwrap();
    assert_eq!(report.transport_errors, 10);
    assert_eq!(report.ok, 0);
}

#[tokio::test]
async fn the_time_limit_ends_a_run_against_a_collector_that_never_answers() {
    // Bound and listening, never accepting: every request hangs.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let mut cfg = config(&url, Tier::Anonymous, 1, 1_000_000);
    cfg.duration = Duration::from_millis(300);
    let report = run(cfg).await.unwrap();
    assert!(report.hit_time_limit);
    assert_eq!(report.unfinished, 4, "one in flight per connection");
    assert_eq!(report.ok, 0);
}

#[tokio::test]
async fn non_loopback_targets_are_refused_before_sending() {
    let err = run(config("http://192.0.2.1:8750", Tier::Full, 1, 1)).await;
    assert!(
        matches!(err, Err(loadgen::Error::NotLoopback(_))),
        "{err:?}"
    );
}
