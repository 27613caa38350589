//! The fleet drill's short form (issue 13) and its fault proxy.
//!
//! `fleet_drill_short_form_meets_the_targets` runs 200 installs as real
//! `drillhost` processes over 3 simulated days of faults and one drain day
//! against a real collector (at most about 90 s of schedule plus one settle
//! per slot), prints the report, and asserts every target of the issue. The
//! targets are not weakened to fit today's client: where the client misses
//! one, this test fails and its report says by how much and why.

use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::post;
use loadgen::faultproxy::{FaultProxy, Phase};
use loadgen::fleet::{self, FleetConfig};

#[test]
#[allow(clippy::print_stdout)] // The report is the point of the drill; cargo shows it on failure.
fn fleet_drill_short_form_meets_the_targets() {
    let dir = tempfile::tempdir().unwrap();
    let config = FleetConfig::short_form(
        env!("CARGO_BIN_EXE_drillhost").into(),
        dir.path().to_owned(),
    );
    let started = Instant::now();
    let report = fleet::run(&config).expect("the drill runs");
    let text = report.markdown();
    println!("{text}");
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "the short form took {:?}",
        started.elapsed()
    );
    assert!(report.installs >= 200 && report.days >= 3, "{text}");
    assert!(report.recorded > 0, "the fleet recorded nothing:\n{text}");
    let failed: Vec<_> = report
        .targets()
        .into_iter()
        .filter(|t| !t.passed)
        .map(|t| format!("{}: {}", t.name, t.detail))
        .collect();
    assert!(failed.is_empty(), "targets missed: {failed:#?}\n\n{text}");
}

/// An upstream that answers every POST with 200 and a small JSON body.
async fn upstream() -> String {
    let app = Router::new().fallback(post(|| async {
        axum::Json(serde_json::json!({"accepted": 1, "duplicates": 0}))
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

#[tokio::test]
async fn the_fault_proxy_injects_each_phase() {
    let proxy = FaultProxy::start(&upstream().await, Instant::now())
        .await
        .unwrap();
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let url = format!("{}/v1/ingest", proxy.url());
    let post = |body: &'static str| client.post(&url).body(body).send();

    assert_eq!(post("{}").await.unwrap().status(), 200);
    for (phase, status, retry_after) in [
        (Phase::Status500, 500, None),
        (Phase::Status503(7), 503, Some("7")),
        (Phase::Status429(9), 429, Some("9")),
    ] {
        proxy.set_phase(phase);
        let r = post("{}").await.unwrap();
        assert_eq!(r.status(), status, "{phase:?}");
        assert_eq!(
            r.headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned())
                .as_deref(),
            retry_after
        );
    }
    proxy.set_phase(Phase::TooLarge(10));
    assert_eq!(post("{}").await.unwrap().status(), 200, "small bodies pass");
    assert_eq!(post("{\"big\": \"body\"}").await.unwrap().status(), 413);

    proxy.set_phase(Phase::Slow(Duration::from_millis(300)));
    let t = Instant::now();
    assert_eq!(post("{}").await.unwrap().status(), 200);
    assert!(t.elapsed() >= Duration::from_millis(300));

    for phase in [Phase::Refuse, Phase::ResetMidResponse, Phase::Blackhole] {
        proxy.set_phase(phase);
        assert!(post("{}").await.is_err(), "{phase:?} gave an answer");
    }

    proxy.set_phase(Phase::Down);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let err = post("{}").await.unwrap_err();
    assert!(err.is_connect(), "down must refuse connections: {err}");
    proxy.set_phase(Phase::Pass);
    let mut back = false;
    for _ in 0..50 {
        if post("{}").await.is_ok_and(|r| r.status() == 200) {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(back, "the proxy did not listen again after down");
    let log = proxy.log();
    assert!(
        log.iter()
            .any(|e| e.phase == "reset mid-response" && e.upstream == Some(200))
    );
}
