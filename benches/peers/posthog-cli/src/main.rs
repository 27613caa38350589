//! The one-line CLI with posthog-rs: prints the same greeting as baseline-cli,
//! then captures one event the way PostHog's docs show and lets the client's
//! `Drop` flush it before exit.
//!
//! The endpoint comes from the first argument or `BENCH_ENDPOINT`
//! (e.g. `http://127.0.0.1:8750`). With neither, the client is built with an
//! empty API key, which posthog-rs treats as disabled: that is the
//! "telemetry off" variant of the same binary.

fn main() {
    println!("Hello, world!");
    let endpoint = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("BENCH_ENDPOINT").ok());
    let Some(host) = endpoint else { return };
    let options = posthog_rs::ClientOptionsBuilder::default()
        .api_key("phc_bench_project_key".to_owned())
        .host(host)
        .build();
    let Ok(options) = options else { return };
    let client = posthog_rs::client(options);
    let mut event = posthog_rs::Event::new("command", "bench-user");
    let _ = event.insert_prop("name", "greet");
    client.capture(event);
    // Dropping the client flushes the queue and joins its worker.
    drop(client);
}
