//! Every status code of the client and admin endpoints, through `app().oneshot`.

use std::io::Write;
use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use telemetry_collector::report::ProjectStats;

use crate::common::*;

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn error_code(body: &Value) -> &str {
    body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {body}"))
}

#[tokio::test]
async fn accepted_payloads_answer_200_with_counts() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(&config(dir.path()));
    let (status, body) = ingest(&state, &aggregate(new_id(), "command", 3)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"accepted": 1, "duplicates": 0}));
    let events = vec![event(new_id(), "install"), event(new_id(), "crash")];
    let (status, body) = ingest(&state, &full(new_id(), events, "a@example.org")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["accepted"], 2);
    state.store().close().await.unwrap();
}

#[tokio::test]
async fn gzip_bodies_are_accepted_and_bombs_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.body_limit = 4096;
    let state = state(&cfg);
    let payload = anonymous(new_id(), vec![event(new_id(), "install")]);
    let request = Request::post("/v1/ingest")
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(Body::from(gzip(payload.to_string().as_bytes())))
        .unwrap();
    let (status, body) = send_json(&state, request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["accepted"], 1);

    // Valid JSON padded with whitespace far past the limit compresses to a few
    // hundred bytes; the limit applies to the inflated size.
    let mut bomb = payload.to_string().into_bytes();
    bomb.extend(std::iter::repeat_n(b' ', 1_000_000));
    let compressed = gzip(&bomb);
    assert!(compressed.len() < 4096);
    let request = Request::post("/v1/ingest")
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(Body::from(compressed))
        .unwrap();
    let (status, body) = send_json(&state, request).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(error_code(&body), "payload_too_large");
    state.store().close().await.unwrap();
}

#[tokio::test]
async fn malformed_bodies_answer_400_without_echoing_input() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(&config(dir.path()));
    for body in [
        "{not json".to_owned(),
        "[]".to_owned(),
        json!({"project": "demo", "tier": "weird-tier-echo_me_back", "context": context()})
            .to_string(),
    ] {
        let (status, answer) = send_json(&state, post("/v1/ingest", body.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(error_code(&answer), "malformed_payload");
        assert!(!answer.to_string().contains("echo_me_back"), "{answer}");
    }
    // An unknown field is ignored (forward compatibility), so this payload
    // is refused for what it lacks, still without echoing the unknown name.
    let body =
        json!({"project": "demo", "tier": "aggregate", "context": context(), "echo_me_back": 1});
    let (status, answer) = send_json(&state, post("/v1/ingest", body.to_string())).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert_eq!(answer["violations"][0]["code"], "missing_field");
    assert!(!answer.to_string().contains("echo_me_back"), "{answer}");
    let request = Request::post("/v1/ingest")
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(Body::from("not gzip at all"))
        .unwrap();
    assert_eq!(send(&state, request).await.0, StatusCode::BAD_REQUEST);
    state.store().close().await.unwrap();
}

#[tokio::test]
async fn oversized_bodies_answer_413() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.body_limit = 2048;
    let state = state(&cfg);
    let big = "x".repeat(10_000);
    let (status, body) = send_json(&state, post("/v1/ingest", big.clone())).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_code(&body), "payload_too_large");
    // A declared Content-Length over the limit is refused before reading.
    let request = Request::post("/v1/ingest")
        .header("content-type", "application/json")
        .header("content-length", big.len().to_string())
        .body(Body::from(big))
        .unwrap();
    assert_eq!(send(&state, request).await.0, StatusCode::PAYLOAD_TOO_LARGE);
    state.store().close().await.unwrap();
}

#[tokio::test]
async fn wrong_content_type_or_encoding_answers_415() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(&config(dir.path()));
    let body = aggregate(new_id(), "command", 1).to_string();
    for (ct, ce) in [
        (Some("text/plain"), None),
        (None, None),
        (Some("application/x-www-form-urlencoded"), None),
        (Some("application/json"), Some("br")),
    ] {
        let mut builder = Request::post("/v1/ingest");
        if let Some(ct) = ct {
            builder = builder.header("content-type", ct);
        }
        if let Some(ce) = ce {
            builder = builder.header("content-encoding", ce);
        }
        let (status, answer) =
            send_json(&state, builder.body(Body::from(body.clone())).unwrap()).await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ct:?} {ce:?}");
        assert_eq!(error_code(&answer), "unsupported_media_type");
    }
    state.store().close().await.unwrap();
}

/// What the manifest does not declare is refused per item with a 2xx that
/// names each item; the rest of the payload is stored.
#[tokio::test]
async fn undeclared_items_are_refused_on_their_own_naming_each() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let state = state(&cfg);
    let install = new_id();
    let table: Vec<(Value, (&str, &str))> = vec![
        (
            anonymous(
                install,
                vec![event(new_id(), "install"), event(new_id(), "not_declared")],
            ),
            ("events[1]", "unknown_event"),
        ),
        (
            anonymous(
                install,
                vec![
                    event(new_id(), "install"),
                    json!({"id": new_id(), "name": "command", "timestamp": now_ts(),
                            "props": {"name": "greet", "secret_prop": "x"}}),
                ],
            ),
            ("events[1].props.secret_prop", "unknown_prop"),
        ),
        (
            anonymous(
                install,
                vec![
                    event(new_id(), "install"),
                    json!({"id": new_id(), "name": "command", "timestamp": now_ts(),
                            "props": {"name": "not-an-enum-value"}}),
                ],
            ),
            ("events[1].props.name", "invalid_value"),
        ),
        (
            {
                let mut p = aggregate(new_id(), "crash", 1);
                p["counters"]
                    .as_array_mut()
                    .unwrap()
                    .insert(0, json!({"day": today(), "event": "install", "count": 1}));
                p
            },
            ("counters[1]", "event_above_tier"),
        ),
        (
            {
                let mut p = full(install, vec![event(new_id(), "install")], "a@b");
                p["identity"]["phone"] = json!("123");
                p
            },
            ("identity.phone", "unknown_identity_field"),
        ),
    ];
    for (payload, (path, code)) in table {
        let (status, body) = ingest(&state, &payload).await;
        assert_eq!(status, StatusCode::OK, "{payload}");
        assert_eq!(body["accepted"], 1, "{body}");
        assert_eq!(body["refused"], 1, "{body}");
        assert_eq!(body["refused_by_reason"][code], 1, "{body}");
        assert_eq!(body["refused_items"][0]["path"], path, "{body}");
        assert_eq!(body["refused_items"][0]["reason"], code, "{body}");
    }
    state.store().close().await.unwrap();
    let db = cfg.db_path();
    assert_eq!(query_i64(&db, "SELECT COUNT(*) FROM events"), 4);
    assert_eq!(query_i64(&db, "SELECT SUM(count) FROM daily_counters"), 5);
    assert_eq!(query_i64(&db, "SELECT SUM(count) FROM refusals"), 5);
    assert_eq!(
        query_i64(
            &db,
            "SELECT COUNT(*) FROM identities WHERE fields LIKE '%phone%'"
        ),
        0
    );
}

#[tokio::test]
async fn policy_violations_answer_422_naming_every_item_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let db = cfg.db_path();
    let state = state(&cfg);
    let install = new_id();
    // (payload, expected violation codes with their paths)
    let table: Vec<(Value, Vec<(&str, &str)>)> = vec![
        (
            {
                let mut p = aggregate(new_id(), "command", 1);
                p["install_id"] = json!(install);
                p["identity"] = json!({"email": "x@example.org"});
                p
            },
            vec![
                ("install_id", "field_not_allowed"),
                ("identity", "field_not_allowed"),
            ],
        ),
        (
            {
                let mut p = anonymous(install, vec![event(new_id(), "install")]);
                p["identity"] = json!({"email": "x@example.org"});
                p
            },
            vec![("identity", "field_not_allowed")],
        ),
        (
            anonymous(
                install,
                vec![json!({"id": "not-a-uuid", "name": "install", "timestamp": now_ts()})],
            ),
            vec![],
        ),
        (
            {
                let mut p = aggregate(new_id(), "command", 1);
                p["project"] = json!("someone-else");
                p
            },
            vec![("project", "wrong_project")],
        ),
    ];
    for (payload, expected) in table {
        let (status, body) = ingest(&state, &payload).await;
        if expected.is_empty() {
            // A malformed id does not even parse: a 400, stored nothing.
            assert_eq!(status, StatusCode::BAD_REQUEST, "{payload}");
            continue;
        }
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{payload}");
        assert_eq!(error_code(&body), "policy_violation");
        let got: Vec<(String, String)> = body["violations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                (
                    v["path"].as_str().unwrap().to_owned(),
                    v["code"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        for (path, code) in expected {
            assert!(
                got.iter().any(|(p, c)| p == path && c == code),
                "{path} {code} missing from {got:?}"
            );
        }
    }
    state.store().close().await.unwrap();
    for table in [
        "events",
        "daily_counters",
        "installs",
        "identities",
        "seen_reports",
        "refusals",
    ] {
        assert_eq!(
            query_i64(&db, &format!("SELECT COUNT(*) FROM {table}")),
            0,
            "{table}"
        );
    }
}

#[tokio::test]
async fn a_tier_above_max_tier_is_stored_at_max_tier() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.projects[0].max_tier = telemetry_protocol::Tier::Aggregate;
    let state = state(&cfg);
    let (status, body) = ingest(
        &state,
        &anonymous(new_id(), vec![event(new_id(), "install")]),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["downgraded_to"], "aggregate");
    assert_eq!(body["accepted"], 1);
    assert_eq!(
        ingest(&state, &aggregate(new_id(), "install", 1)).await.0,
        StatusCode::OK
    );
    state.store().close().await.unwrap();
}

#[tokio::test]
async fn open_mode_accepts_any_project_but_still_applies_the_tier_policy() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.projects.clear();
    let state = state(&cfg);
    let mut other = aggregate(new_id(), "anything_at_all", 2);
    other["project"] = json!("other-tool");
    assert_eq!(ingest(&state, &other).await.0, StatusCode::OK);
    let mut above = aggregate(new_id(), "command", 1);
    above["install_id"] = json!(new_id());
    assert_eq!(
        ingest(&state, &above).await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    state.store().close().await.unwrap();
}

#[tokio::test]
async fn the_rate_limit_answers_429_with_retry_after_per_source() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.rate_limit.requests_per_minute = 1;
    cfg.rate_limit.burst = 2;
    let state = state(&cfg);
    let from = |ip: &str| {
        let mut request = post("/v1/ingest", aggregate(new_id(), "command", 1).to_string());
        let addr: SocketAddr = format!("{ip}:40000").parse().unwrap();
        request.extensions_mut().insert(ConnectInfo(addr));
        request
    };
    assert_eq!(send(&state, from("192.0.2.1")).await.0, StatusCode::OK);
    assert_eq!(send(&state, from("192.0.2.1")).await.0, StatusCode::OK);
    let (status, response) = send(&state, from("192.0.2.1")).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // Another source has its own bucket.
    assert_eq!(send(&state, from("192.0.2.2")).await.0, StatusCode::OK);
    state.store().close().await.unwrap();
}

#[tokio::test]
async fn behind_a_proxy_the_limit_is_keyed_by_the_forwarded_address() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.rate_limit.requests_per_minute = 1;
    cfg.rate_limit.burst = 1;
    cfg.rate_limit.behind_proxy = true;
    let state = state(&cfg);
    // Every request arrives from the proxy at 127.0.0.1.
    let via_proxy = |forwarded: &str| {
        let mut request = post("/v1/ingest", aggregate(new_id(), "command", 1).to_string());
        request
            .headers_mut()
            .insert("x-forwarded-for", forwarded.parse().unwrap());
        let proxy: SocketAddr = "127.0.0.1:50000".parse().unwrap();
        request.extensions_mut().insert(ConnectInfo(proxy));
        request
    };
    assert_eq!(
        send(&state, via_proxy("198.51.100.1")).await.0,
        StatusCode::OK
    );
    assert_eq!(
        send(&state, via_proxy("198.51.100.2")).await.0,
        StatusCode::OK
    );
    // A client cannot escape its bucket by prepending addresses of its own.
    let (status, _) = send(&state, via_proxy("10.9.9.9, 198.51.100.1")).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    state.store().close().await.unwrap();
}

#[tokio::test]
async fn admin_endpoints_need_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(&config(dir.path()));
    for path in [
        "/metrics",
        "/api/v1/projects",
        "/api/v1/projects/demo/stats",
    ] {
        for auth in [None, Some("Bearer wrong-token"), Some(TOKEN)] {
            let mut builder = Request::get(path);
            if let Some(auth) = auth {
                builder = builder.header("authorization", auth);
            }
            let (status, response) = send(&state, builder.body(Body::empty()).unwrap()).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{path} {auth:?}");
            assert_eq!(response.headers()["www-authenticate"], "Bearer");
        }
        let (status, _) = admin_get(&state, path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
    }
    let (status, body) = send_json(
        &state,
        Request::get("/healthz").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!((status, body), (StatusCode::OK, json!({"status": "ok"})));
    let (status, body) =
        send_json(&state, Request::get("/nope").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "not_found");
    let (status, body) = send_json(
        &state,
        Request::get("/v1/ingest").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(error_code(&body), "not_found");
    let lowercase = Request::get("/metrics")
        .header("authorization", format!("bearer {TOKEN}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&state, lowercase).await.0, StatusCode::OK);
    let (status, _) = admin_get(&state, "/api/v1/projects/never-heard-of/stats").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = admin_get(&state, "/api/v1/projects/demo/stats?from=bad").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    state.store().close().await.unwrap();
}

#[tokio::test]
async fn stats_api_and_metrics_reflect_ingested_data() {
    let dir = tempfile::tempdir().unwrap();
    let state = state(&config(dir.path()));
    // Lifecycle at every tier: 3 installs by aggregate, 2 by anonymous/full.
    assert_eq!(
        ingest(&state, &aggregate(new_id(), "install", 3)).await.0,
        StatusCode::OK
    );
    assert_eq!(
        ingest(&state, &aggregate(new_id(), "setup_started", 4))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        ingest(&state, &aggregate(new_id(), "setup_completed", 1))
            .await
            .0,
        StatusCode::OK
    );
    let events = |names: &[&str]| names.iter().map(|n| event(new_id(), n)).collect();
    let a = anonymous(
        new_id(),
        events(&["install", "active", "setup_started", "setup_completed"]),
    );
    assert_eq!(ingest(&state, &a).await.0, StatusCode::OK);
    let f = full(new_id(), events(&["install", "active"]), "x@example.org");
    assert_eq!(ingest(&state, &f).await.0, StatusCode::OK);

    let (status, body) = admin_get(&state, "/api/v1/projects/demo/stats").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let stats: ProjectStats = serde_json::from_value(body.clone()).unwrap();
    assert_eq!(stats.installs, 5);
    assert_eq!(stats.installs_all_time, 5);
    assert_eq!(stats.active_installs, 2);
    assert_eq!((stats.setup_started, stats.setup_completed), (5, 2));
    assert_eq!(stats.setup_completion_rate, Some(0.4));
    assert_eq!(stats.versions[0].key, "1.4.2");
    assert_eq!(stats.retention.len(), 1);
    assert_eq!(stats.retention[0].installs, 2);
    for key in [
        "installs",
        "active_installs",
        "setup_started",
        "setup_completed",
        "setup_completion_rate",
    ] {
        assert!(body.get(key).is_some(), "{key}");
    }

    let request = Request::get("/api/v1/projects/demo/stats.csv?table=versions")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Body::empty())
        .unwrap();
    let (status, response) = send(&state, request).await;
    assert_eq!(status, StatusCode::OK);
    let csv = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    assert_eq!(
        std::str::from_utf8(&csv).unwrap(),
        "version,installs,active_installs\r\n1.4.2,5,2\r\n"
    );

    let request = Request::get("/metrics")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Body::empty())
        .unwrap();
    let (_, response) = send(&state, request).await;
    let text = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let text = String::from_utf8(text.to_vec()).unwrap();
    for line in [
        "telemetry_requests_total{endpoint=\"ingest\",outcome=\"accepted\"} 5",
        "telemetry_items_total{outcome=\"accepted\"} 9",
        "telemetry_write_queue_depth 0",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
    }
    assert!(text.contains("telemetry_database_bytes "), "{text}");
    assert!(text.contains("telemetry_commit_seconds_count "), "{text}");
    state.store().close().await.unwrap();
}
