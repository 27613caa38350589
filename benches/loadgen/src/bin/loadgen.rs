//! The ingest load generator. Run with
//! `cargo run --release -p loadgen --bin loadgen -- --url http://127.0.0.1:8750 --tier anonymous --batch 100`.
//!
//! It POSTs protocol-v1 payloads to a loopback collector and prints events/s,
//! requests/s, latency p50/p99 and the non-2xx answers, as text or one JSON
//! line (`--json`) for scripts.

// A command-line tool: its output is the point.
#![allow(clippy::print_stdout)]

use anyhow::Context;
use clap::Parser;
use loadgen::ingest::{self, LoadConfig, LoadReport};
use loadgen::payload::PayloadSpec;
use telemetry_protocol::Tier;

/// POSTs protocol-v1 ingest payloads to a loopback collector and reports throughput.
#[derive(Debug, Parser)]
#[command(name = "loadgen", version)]
struct Args {
    /// The collector's base URL (loopback only); `/v1/ingest` is appended.
    #[arg(long, required_unless_present = "header")]
    url: Option<String>,
    /// The tier every payload claims: aggregate, anonymous or full.
    #[arg(long, default_value = "anonymous")]
    tier: Tier,
    /// Events (counters at aggregate) per request.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// The most requests to send.
    #[arg(long, default_value_t = 10_000)]
    requests: u64,
    /// The longest the run may take, in seconds.
    #[arg(long, default_value_t = 20.0)]
    duration_secs: f64,
    /// Timeout of one request, in seconds.
    #[arg(long, default_value_t = 10.0)]
    request_timeout_secs: f64,
    /// The project name in every payload.
    #[arg(long, default_value = "loadgen")]
    project: String,
    /// Event names to cycle through, comma-separated identifiers.
    #[arg(
        long,
        default_value = "command,setup_started,setup_completed",
        value_delimiter = ','
    )]
    events: Vec<String>,
    /// Distinct install ids the anonymous and full payloads rotate through.
    #[arg(long, default_value_t = 1000)]
    installs: u64,
    /// Tokio worker threads; one keeps the generator off the collector's cores.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    #[command(flatten)]
    output: loadgen::cli::OutputArgs,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.output.header {
        println!("{HEADER}");
        return Ok(());
    }
    // clap makes it required unless `--header` is given.
    let Some(url) = args.url.clone() else {
        anyhow::bail!("--url is required");
    };
    let config = LoadConfig {
        url,
        spec: PayloadSpec {
            project: args.project.clone(),
            tier: args.tier,
            events: args.events.clone(),
            batch: args.batch,
            installs: args.installs,
        },
        requests: args.requests,
        concurrency: args.concurrency,
        duration: loadgen::cli::secs(args.duration_secs, "duration")?,
        request_timeout: loadgen::cli::secs(args.request_timeout_secs, "request timeout")?,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let report = runtime
        .block_on(ingest::run(config))
        .context("running the load")?;
    if args.output.json {
        println!(
            "{}",
            serde_json::to_string(&report).context("encoding the report")?
        );
    } else if args.output.row {
        println!("{}", row(&report));
    } else {
        print_text(&report);
    }
    Ok(())
}

const HEADER: &str = "| tier | batch | events/s | requests/s | p50 ms | p99 ms | 2xx | non-2xx | transport errors | unfinished at the time limit |\n|---|---|---|---|---|---|---|---|---|---|";

fn row(r: &LoadReport) -> String {
    let non_2xx = if r.non_2xx.is_empty() {
        "0".to_owned()
    } else {
        let parts: Vec<_> = r.non_2xx.iter().map(|(s, n)| format!("{s}×{n}")).collect();
        parts.join(" ")
    };
    format!(
        "| {} | {} | {:.0} | {:.0} | {:.2} | {:.2} | {} | {non_2xx} | {} | {} |",
        r.tier,
        r.batch,
        r.events_per_sec,
        r.requests_per_sec,
        r.latency_p50_ms,
        r.latency_p99_ms,
        r.ok,
        r.transport_errors,
        r.unfinished
    )
}

fn print_text(r: &LoadReport) {
    println!(
        "tier={} batch={} concurrency={}: {:.0} events/s, {:.0} requests/s, latency p50 {:.2} ms p99 {:.2} ms",
        r.tier,
        r.batch,
        r.concurrency,
        r.events_per_sec,
        r.requests_per_sec,
        r.latency_p50_ms,
        r.latency_p99_ms
    );
    println!(
        "  completed {} (2xx {}, transport errors {}, unfinished {}) in {:.2} s; accepted {} duplicates {}{}",
        r.completed,
        r.ok,
        r.transport_errors,
        r.unfinished,
        r.elapsed_secs,
        r.accepted,
        r.duplicates,
        if r.hit_time_limit {
            "; stopped by the time limit"
        } else {
            ""
        }
    );
    for (status, n) in &r.non_2xx {
        println!("  non-2xx: {status} x {n}");
    }
}
