//! The client wall-time overhead harness. Run with, for example,
//! `cargo run --release -p loadgen --bin overhead -- --a "peers/posthog-cli {endpoint}" --b peers/baseline-cli --endpoint blackhole`.
//!
//! It runs command A (with telemetry) and command B (the reference)
//! alternately, many times, against one endpoint (`up=URL`, `stub`,
//! `refused`, `blackhole`, `blackhole-noaccept`), and prints the median wall
//! time of each, the median paired difference, and how long one invocation of
//! A keeps processes alive. `{endpoint}` in A's or B's arguments or `--a-env`/
//! `--b-env` values is replaced by the endpoint's URL.

// A command-line tool: its output is the point.
#![allow(clippy::print_stdout)]

use anyhow::Context;
use clap::Parser;
use loadgen::endpoint::EndpointMode;
use loadgen::overhead::{self, CommandSpec, OverheadConfig, OverheadReport};

/// Times command A against command B, alternately, against one endpoint.
#[derive(Debug, Parser)]
#[command(name = "overhead", version)]
struct Args {
    /// Command A (with telemetry), words separated by spaces.
    #[arg(long, required_unless_present = "header")]
    a: Option<String>,
    /// Extra KEY=VALUE environment for A; repeatable.
    #[arg(long = "a-env")]
    a_env: Vec<String>,
    /// Command B (the reference), words separated by spaces.
    #[arg(long, required_unless_present = "header")]
    b: Option<String>,
    /// Extra KEY=VALUE environment for B; repeatable.
    #[arg(long = "b-env")]
    b_env: Vec<String>,
    /// up=URL, stub, refused, blackhole or blackhole-noaccept.
    #[arg(long, required_unless_present = "header")]
    endpoint: Option<String>,
    /// Timed A/B pairs, at most.
    #[arg(long, default_value_t = 200)]
    runs: usize,
    /// Untimed warm-up pairs.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// The longest the timed series may take, in seconds.
    #[arg(long, default_value_t = 60.0)]
    max_secs: f64,
    /// Kill a run after this many seconds.
    #[arg(long, default_value_t = 60.0)]
    run_timeout_secs: f64,
    /// How long a blackhole or the stub holds one connection, in seconds.
    #[arg(long, default_value_t = 120.0)]
    hold_secs: f64,
    /// Single invocations of A to watch until all their processes are gone.
    #[arg(long, default_value_t = 1)]
    linger_runs: usize,
    /// The longest to wait for those processes, in seconds, before killing them.
    #[arg(long, default_value_t = 60.0)]
    linger_limit_secs: f64,
    /// After each timed pair, wait up to this many seconds (untimed) for the
    /// processes A and B left behind, such as a detached uploader.
    #[arg(long)]
    settle_secs: Option<f64>,
    /// A label for the result row.
    #[arg(long, default_value = "A vs B")]
    label: String,
    #[command(flatten)]
    output: loadgen::cli::OutputArgs,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.output.header {
        println!("{HEADER}");
        return Ok(());
    }
    // clap makes these required unless `--header` is given.
    let (Some(a), Some(b), Some(endpoint)) = (&args.a, &args.b, &args.endpoint) else {
        anyhow::bail!("--a, --b and --endpoint are required");
    };
    let config = OverheadConfig {
        a: CommandSpec::parse(a, &args.a_env).context("parsing command a")?,
        b: CommandSpec::parse(b, &args.b_env).context("parsing command b")?,
        endpoint: endpoint.parse::<EndpointMode>()?,
        runs: args.runs,
        warmup: args.warmup,
        max_time: loadgen::cli::secs(args.max_secs, "max time")?,
        run_timeout: loadgen::cli::secs(args.run_timeout_secs, "run timeout")?,
        hold_limit: loadgen::cli::secs(args.hold_secs, "hold time")?,
        linger_runs: args.linger_runs,
        linger_limit: loadgen::cli::secs(args.linger_limit_secs, "linger limit")?,
        settle: args
            .settle_secs
            .map(|s| loadgen::cli::secs(s, "settle time"))
            .transpose()?,
    };
    let report = overhead::run(&config).context("running the harness")?;
    if args.output.json {
        println!(
            "{}",
            serde_json::to_string(&report).context("encoding the report")?
        );
    } else if args.output.row {
        println!("{}", row(&args.label, &report));
    } else {
        print_text(&args.label, &report);
    }
    Ok(())
}

const HEADER: &str = "| case | endpoint | pairs | A median ms | B median ms | Δ median (paired) ms | Δ p90 ms | A failures/timeouts | A left alive | one A run: exit / all processes gone ms |\n|---|---|---|---|---|---|---|---|---|---|";

fn linger_cell(r: &OverheadReport) -> String {
    r.linger.as_ref().map_or_else(
        || "-".to_owned(),
        |l| {
            let bound = if l.hit_limit { "≥" } else { "" };
            format!("{:.1} / {bound}{:.1}", l.max_exit_ms, l.max_all_gone_ms)
        },
    )
}

fn row(label: &str, r: &OverheadReport) -> String {
    format!(
        "| {label} | {} | {}{} | {:.2} | {:.2} | {:+.2} | {:+.2} | {}/{} | {} | {} |",
        r.endpoint,
        r.pairs,
        if r.hit_time_limit {
            " (time limit)"
        } else {
            ""
        },
        r.a.median,
        r.b.median,
        r.diff.median,
        r.diff.p90,
        r.a_failures,
        r.a_timeouts,
        r.a_left_alive,
        linger_cell(r),
    )
}

fn print_text(label: &str, r: &OverheadReport) {
    println!(
        "{label}: endpoint {} ({}), {} pairs",
        r.endpoint, r.endpoint_url, r.pairs
    );
    for (name, s) in [("A", &r.a), ("B", &r.b), ("A-B", &r.diff)] {
        println!(
            "  {name:>3}: median {:.2} ms, min {:.2}, p90 {:.2}, max {:.2}",
            s.median, s.min, s.p90, s.max
        );
    }
    println!("  median(A) - median(B): {:+.2} ms", r.diff_of_medians);
    println!(
        "  failures A {} B {}; timeouts A {} B {}; left alive after the series A {} B {}",
        r.a_failures, r.b_failures, r.a_timeouts, r.b_timeouts, r.a_left_alive, r.b_left_alive
    );
    println!(
        "  endpoint: {} connections, {} requests answered",
        r.endpoint_connections, r.endpoint_requests
    );
    println!(
        "  one A invocation, exit / all its processes gone: {} ms",
        linger_cell(r)
    );
}
