//! The one-line CLI with rtb-telemetry: prints the same greeting as
//! baseline-cli, then records one event through `HttpSink`, as its README
//! shows, awaiting the send before exit.
//!
//! The endpoint comes from the first argument or `BENCH_ENDPOINT`
//! (e.g. `http://127.0.0.1:8750/v1/events`). With neither, the context is built
//! with `CollectionPolicy::Disabled`: the "telemetry off" variant of the same
//! binary.

use std::sync::Arc;

use rtb_telemetry::{CollectionPolicy, HttpSink, HttpSinkConfig, TelemetryContext};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    println!("Hello, world!");
    let endpoint = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("BENCH_ENDPOINT").ok());
    let builder = TelemetryContext::builder()
        .tool("rtb-cli")
        .tool_version(env!("CARGO_PKG_VERSION"))
        .salt(concat!(env!("CARGO_PKG_NAME"), ".telemetry.v1"));
    let builder = match endpoint.as_deref().map(url::Url::parse) {
        Some(Ok(url)) => {
            let config = HttpSinkConfig {
                endpoint: url,
                // The bench endpoints are plain-HTTP loopback listeners.
                allow_insecure_endpoint: true,
                ..HttpSinkConfig::default()
            };
            match HttpSink::new(config) {
                Ok(sink) => builder.sink(Arc::new(sink)).policy(CollectionPolicy::Enabled),
                Err(_) => builder,
            }
        }
        _ => builder,
    };
    let telemetry = builder.build();
    let _ = telemetry.record("command").await;
}
