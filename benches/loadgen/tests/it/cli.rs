//! The two binaries, run as real processes the way scripts/bench.sh runs them.

use std::process::Command;

use serde_json::Value;

fn run(bin: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(bin).args(args).output().unwrap();
    (out.status.success(), String::from_utf8(out.stdout).unwrap())
}

#[test]
fn overhead_prints_a_json_report_and_a_row_matching_the_header() {
    let bin = env!("CARGO_BIN_EXE_overhead");
    let args = [
        "--a",
        "true",
        "--b",
        "true",
        "--endpoint",
        "refused",
        "--runs",
        "4",
    ];
    let (ok, json) = run(bin, &[&args[..], &["--json"]].concat());
    assert!(ok);
    let report: Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(report["pairs"], 4);
    assert_eq!(report["endpoint"], "refused");
    assert_eq!(report["a_failures"], 0);

    let (ok, header) = run(bin, &["--header"]);
    assert!(ok);
    let (ok, row) = run(bin, &[&args[..], &["--row", "--label", "x"]].concat());
    assert!(ok);
    let columns = |line: &str| line.matches('|').count();
    assert!(row.starts_with("| x | refused | 4 |"), "{row}");
    assert_eq!(columns(header.lines().next().unwrap()), columns(row.trim()));
}

#[test]
fn overhead_refuses_unknown_endpoints_and_missing_commands() {
    let bin = env!("CARGO_BIN_EXE_overhead");
    assert!(!run(bin, &["--a", "true", "--b", "true", "--endpoint", "mars"]).0);
    assert!(!run(bin, &["--b", "true", "--endpoint", "refused"]).0);
}

#[test]
fn loadgen_reports_transport_errors_against_a_refused_port_and_refuses_remote_urls() {
    let bin = env!("CARGO_BIN_EXE_loadgen");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}");
    let (ok, json) = run(bin, &["--url", &url, "--requests", "5", "--json"]);
    assert!(ok);
    let report: Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(report["transport_errors"], 5);
    assert_eq!(report["ok"], 0);

    let (ok, header) = run(bin, &["--header"]);
    assert!(ok);
    let (ok, row) = run(
        bin,
        &["--url", &url, "--requests", "2", "--batch", "10", "--row"],
    );
    assert!(ok);
    assert!(row.starts_with("| anonymous | 10 |"), "{row}");
    let columns = |line: &str| line.matches('|').count();
    assert_eq!(columns(header.lines().next().unwrap()), columns(row.trim()));

    assert!(!run(bin, &["--url", "http://192.0.2.1:8750", "--requests", "1"]).0);
}

#[test]
fn statsbench_loads_times_and_reuses_its_database() {
    let bin = env!("CARGO_BIN_EXE_statsbench");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let db = db.to_str().unwrap();
    let args = [
        "--events",
        "600",
        "--installs",
        "100",
        "--days",
        "60",
        "--end",
        "2026-11-20",
        "--runs",
        "2",
        "--db",
        db,
    ];
    let (ok, json) = run(bin, &[&args[..], &["--json"]].concat());
    assert!(ok);
    let report: Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(report["load"]["accepted"], 600);
    assert_eq!(report["reused"], false);
    assert_eq!(
        report["stats"].as_array().unwrap().len(),
        8,
        "two stats reads, one breakdown and its two store reads, three parts"
    );
    assert_eq!(report["naive"].as_array().unwrap().len(), 4);
    assert!(report["db_bytes"].as_u64().unwrap() > 0);

    // The second run finds the same load recorded beside the database.
    let (ok, md) = run(bin, &[&args[..], &["--row"]].concat());
    assert!(ok);
    assert!(md.contains("loaded earlier"), "{md}");
    let (ok, header) = run(bin, &["--header"]);
    assert!(ok);
    let columns = |line: &str| line.matches('|').count();
    let rows: Vec<&str> = md.lines().filter(|l| l.starts_with("| ")).collect();
    assert_eq!(rows.len(), 1 + 12, "{md}");
    assert!(
        rows.iter()
            .all(|r| columns(r) == columns(header.lines().next().unwrap()))
    );

    // A different spec on the same file is refused rather than mixed in.
    let other = [&args[..], &["--seed", "9", "--json"]].concat();
    assert!(!run(bin, &other).0);
}
