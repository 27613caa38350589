//! The whole ingest route through the router, as a client on the internet
//! reaches it: arbitrary bytes as the body of `POST /v1/ingest` or
//! `POST /v1/delete`, plain or declared gzip, against a collector with a
//! manifest and a real SQLite database. Every answer is a JSON body with a
//! 2xx or a 4xx status: never a panic, never a 500.
//!
//! The first input byte picks the route and the encoding; the rest is the body.
#![no_main]

use std::sync::LazyLock;

use axum::body::Body;
use axum::http::Request;
use libfuzzer_sys::fuzz_target;
use telemetry_collector::config::{Config, ProjectConfig};
use telemetry_collector::{AppState, app};
use telemetry_protocol::Tier;
use tower::ServiceExt;

struct Setup {
    runtime: tokio::runtime::Runtime,
    state: AppState,
}

static SETUP: LazyLock<Setup> = LazyLock::new(|| {
    let dir = std::env::temp_dir().join(format!("telemetry-fuzz-ingest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let manifest = dir.join("demo-cli.telemetry.toml");
    std::fs::write(&manifest, include_str!("../../examples/demo-cli/telemetry.toml")).unwrap();
    let mut config = Config {
        db: dir.join("fuzz.db").to_string_lossy().into_owned(),
        admin_token: Some("fuzz-admin-token-0123456789".to_owned()),
        projects: vec![ProjectConfig {
            name: "demo-cli".into(),
            manifest,
            max_tier: Tier::Full,
            retention_days: 90,
        }],
        ..Config::default()
    };
    config.rate_limit.requests_per_minute = 0;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let state = runtime.block_on(async { AppState::from_config(&config).unwrap().0 });
    Setup { runtime, state }
});

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let setup = &*SETUP;
    let path = if selector & 1 == 0 { "/v1/ingest" } else { "/v1/delete" };
    let mut request = Request::post(path).header("content-type", "application/json");
    if selector & 2 != 0 {
        request = request.header("content-encoding", "gzip");
    }
    let request = request.body(Body::from(body.to_vec())).unwrap();
    setup.runtime.block_on(async {
        let response = app(setup.state.clone()).oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        assert!(status.is_success() || status.is_client_error(), "{status}");
        let json: serde_json::Value = serde_json::from_slice(&bytes).expect("a JSON answer");
        if !status.is_success() {
            assert!(json["error"].is_string(), "{json}");
        }
    });
});
