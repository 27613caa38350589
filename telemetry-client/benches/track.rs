//! The in-process cost of `track()`: the target is at most 1 µs per call at
//! `aggregate` and at `anonymous` (docs/benchmarks.md).
//!
//! Run with `cargo bench -p telemetry-client --bench track`. Each iteration is
//! one `track` call with two props, on a handle whose level was chosen in a
//! real consent file in a temporary folder, so the measured path is the one a
//! host takes. Calls are timed in runs of 200 on a fresh handle, the way a CLI
//! process records a handful of events and exits; writing them to the spool
//! when the handle drops is a once-per-process cost, measured separately as
//! `persist` (the wall-time benchmark of whole processes covers it too).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use telemetry_client::{Telemetry, Tier};

/// Calls per simulated process run.
const RUN: u64 = 200;

/// The demo's `command` event with its four props, so a call takes the path it
/// takes in demo-cli (examples/demo-cli/telemetry.toml). A copy, not an
/// `include_str!` of that file: a bench of the published crate must build from
/// the crate's own package.
const MANIFEST: &str = r#"
project = "demo-cli"
endpoint = "http://127.0.0.1:8750"

[events.command]
description = "A demo-cli command ran"
props.name = { kind = "enum", values = ["greet", "init"], description = "Which command ran" }
props.duration_ms = { kind = "bucket", bounds = [10, 100, 1000], unit = "ms", description = "How long it took" }
props.interactive = { kind = "bool", description = "Whether it ran in a terminal" }
props.rust_version = { kind = "version", description = "The declared minimum Rust version" }
"#;

fn handle(dir: &std::path::Path) -> Telemetry {
    Telemetry::builder(MANIFEST)
        .tool_version("1.0.0")
        .dirs(dir.join("config"), dir.join("state"))
        .system_policy(None)
        .interactive(false)
        .detached_upload(false)
        .build()
}

fn track(c: &mut Criterion) {
    let mut group = c.benchmark_group("track");
    for tier in [Tier::Aggregate, Tier::Anonymous] {
        let dir = tempfile::tempdir().expect("tempdir");
        let chooser = handle(dir.path());
        chooser
            .control()
            .expect("control")
            .set_level(tier, BTreeMap::new())
            .expect("set level");
        drop(chooser);
        // A raised level applies from the next run, as in a real host.
        let telemetry = handle(dir.path());
        assert_eq!(telemetry.level(), tier);
        drop(telemetry);
        let spool = dir.path().join("state/demo-cli/spool.jsonl");
        group.bench_function(tier.as_str(), |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                let mut done = 0;
                while done < iters {
                    let telemetry = handle(dir.path());
                    let n = (iters - done).min(RUN);
                    let start = Instant::now();
                    for _ in 0..n {
                        telemetry.track(
                            black_box("command"),
                            [
                                ("name", "greet".into()),
                                ("duration_ms", black_box(42_u64).into()),
                            ],
                        );
                    }
                    spent += start.elapsed();
                    done += n;
                    drop(telemetry);
                    // The uploader would drain the spool; keep it small so
                    // every run measures the same path.
                    std::fs::remove_file(&spool).ok();
                }
                spent
            });
        });
        group.bench_function(format!("persist_10_{tier}"), |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    let telemetry = handle(dir.path());
                    for _ in 0..10 {
                        telemetry.track("command", [("name", "greet".into())]);
                    }
                    let start = Instant::now();
                    telemetry.persist();
                    spent += start.elapsed();
                    drop(telemetry);
                    std::fs::remove_file(&spool).ok();
                }
                spent
            });
        });
    }
    group.finish();
}

criterion_group!(benches, track);
criterion_main!(benches);
