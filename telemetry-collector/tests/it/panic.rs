//! The last-resort panic layer: a handler that panics answers a 500 JSON
//! body, and the log says where it happened but nothing of the request.
//!
//! The panic hook is process-wide, so the check runs in a child process:
//! this test binary runs itself with a marker variable, and the child
//! installs the collector's hook, sends a request to a panicking route and
//! prints what it got; the parent reads the child's whole output.

use std::process::Command;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::middleware;
use axum::routing::post;
use tower::ServiceExt;

const CHILD: &str = "TELEMETRY_PANIC_TEST_CHILD";
const SECRET: &str = "hostile-input-4f1c2d";

#[test]
fn a_panicking_handler_answers_500_json_and_logs_nothing_of_the_request() {
    if std::env::var_os(CHILD).is_some() {
        return child();
    }
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "panic::a_panicking_handler_answers_500_json_and_logs_nothing_of_the_request",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .env("RUST_LOG", "trace")
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{all}");
    assert!(all.contains("child answered 500 internal"), "{all}");
    assert!(all.contains("a request handler panicked"), "{all}");
    assert!(all.contains("panic.rs"), "the log names the place: {all}");
    assert!(
        !all.contains(SECRET),
        "the request leaked into the log: {all}"
    );
}

#[allow(clippy::print_stdout)]
fn child() {
    telemetry_collector::panic_guard::install_hook();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter("trace")
        .init();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let router = Router::new()
        .route(
            "/boom",
            post(|body: String| async move {
                // The panic message quotes the request, as a slicing bug's would.
                assert!(body.is_empty(), "cannot handle {body}");
                "never reached"
            }),
        )
        .layer(middleware::from_fn(
            telemetry_collector::panic_guard::catch_panic,
        ));
    let request = Request::post("/boom").body(Body::from(SECRET)).unwrap();
    let response = runtime.block_on(router.oneshot(request)).unwrap();
    let status = response.status();
    let bytes = runtime
        .block_on(axum::body::to_bytes(response.into_body(), usize::MAX))
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(!body.to_string().contains(SECRET), "{body}");
    println!(
        "child answered {} {}",
        status.as_u16(),
        body["error"].as_str().unwrap()
    );
}
