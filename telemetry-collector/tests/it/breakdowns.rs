//! Prop breakdowns, version adoption and command usage through the real
//! ingest path, on every backend: data arrives at every tier, and the stats
//! JSON (what the API, the CSV, the terminal and the dashboard show) splits
//! it by each declared prop in the kind's order, the same on SQLite and
//! PostgreSQL.

use axum::http::StatusCode;
use serde_json::{Value, json};
use telemetry_collector::AppState;

use crate::backends::{backends, day_offset};
use crate::common::*;

/// The `demo` manifest of [`crate::common::MANIFEST`] plus an `init` event
/// with one prop of every kind and a `query` event with a long enum.
pub(crate) const RICH_MANIFEST: &str = r#"
project = "demo"
endpoint = "http://127.0.0.1:9"

[events.command]
description = "A command ran"
min_tier = "aggregate"
props.name = { kind = "enum", values = ["greet", "init"], description = "Which command" }

[events.crash]
description = "The tool crashed"
min_tier = "anonymous"

[events.init]
description = "The project was initialised"
min_tier = "aggregate"
props.shell = { kind = "enum", values = ["bash", "zsh", "fish"], description = "The user's shell" }
props.ci = { kind = "bool", description = "Whether it ran in CI" }
props.took = { kind = "bucket", bounds = [100, 1000], unit = "ms", description = "How long it took" }
props.from = { kind = "version", description = "The version upgraded from" }

[events.query]
description = "A query ran"
min_tier = "aggregate"
props.mode = { kind = "enum", values = ["m01","m02","m03","m04","m05","m06","m07","m08","m09","m10","m11","m12","m13"], description = "The query mode" }

[identity.email]
description = "An address the maintainers may write to"
max_len = 254
"#;

/// Puts [`RICH_MANIFEST`] in place of the `demo` manifest of `config`.
pub(crate) fn use_rich_manifest(config: &telemetry_collector::Config) {
    std::fs::write(&config.projects[0].manifest, RICH_MANIFEST).unwrap();
}

fn init_event(days: i32, props: Value) -> Value {
    json!({"id": new_id(), "name": "init", "props": props,
           "timestamp": format!("{}T12:00:00Z", day_offset(days))})
}

/// `init` and `query` at every tier, over two weeks, through ingest; the
/// expected numbers are spelled out in the test.
pub(crate) async fn prop_workload(state: &AppState) {
    for payload in prop_payloads() {
        let (status, body) = ingest(state, &payload).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
}

/// The payloads of [`prop_workload`], for a test that sends them over HTTP.
pub(crate) fn prop_payloads() -> Vec<Value> {
    // aggregate: counters, versions coarsened to major.minor.
    let mut report = aggregate(new_id(), "init", 1);
    report["counters"] = json!([
        {"day": day_offset(0), "event": "init", "count": 5,
         "props": {"shell": "zsh", "ci": true, "took": ">=1000", "from": "1.9"}},
        {"day": day_offset(-8), "event": "init", "count": 2, "props": {"shell": "fish"}},
        {"day": day_offset(0), "event": "init", "count": 3},
    ]);
    let modes: Vec<Value> = (1..=13)
        .map(|i| {
            json!({"day": day_offset(0), "event": "query", "count": 20 - i,
                        "props": {"mode": format!("m{i:02}")}})
        })
        .collect();
    let mut queries = aggregate(new_id(), "query", 1);
    queries["counters"] = json!(modes);
    // anonymous and full: events of one install each.
    let anon = anonymous(
        new_id(),
        vec![
            init_event(
                0,
                json!({"shell": "bash", "ci": false, "took": "<100", "from": "1.10.0"}),
            ),
            init_event(
                -1,
                json!({"shell": "bash", "took": "100..1000", "from": "2.0.0-rc.1"}),
            ),
        ],
    );
    let identified = full(
        new_id(),
        vec![init_event(0, json!({"shell": "zsh", "from": "2.0.0"}))],
        "someone@example.org",
    );
    vec![report, queries, anon, identified]
}

fn breakdown<'a>(stats: &'a Value, event: &str, prop: &str) -> &'a Value {
    stats["props"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["event"] == event && b["prop"] == prop)
        .unwrap_or_else(|| panic!("{event}.{prop} in {}", stats["props"]))
}

fn values(b: &Value) -> Vec<(String, u64)> {
    b["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["value"].as_str().unwrap().to_owned(),
                v["count"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn pairs(list: &[(&str, u64)]) -> Vec<(String, u64)> {
    list.iter().map(|(v, n)| ((*v).to_owned(), *n)).collect()
}

#[tokio::test]
async fn every_prop_kind_breaks_down_in_its_order_on_every_backend() {
    let mut seen: Vec<(&str, Value)> = Vec::new();
    for b in backends().await {
        use_rich_manifest(&b.config);
        let state = b.state();
        prop_workload(&state).await;
        let from = day_offset(-13);
        let (status, stats) =
            admin_get(&state, &format!("/api/v1/projects/demo/stats?from={from}")).await;
        assert_eq!(status, StatusCode::OK, "{}: {stats}", b.name);

        let shell = breakdown(&stats, "init", "shell");
        assert_eq!(shell["kind"], "enum", "{}", b.name);
        assert_eq!(shell["events"], 5 + 2 + 3 + 2 + 1, "{}", b.name);
        assert_eq!(shell["not_set"], 3, "{}", b.name);
        assert_eq!(
            values(shell),
            pairs(&[("zsh", 6), ("bash", 2), ("fish", 2)]),
            "{}",
            b.name
        );
        assert_eq!(
            values(breakdown(&stats, "init", "ci")),
            pairs(&[("true", 5), ("false", 1)])
        );
        assert_eq!(
            values(breakdown(&stats, "init", "took")),
            pairs(&[("<100", 1), ("100..1000", 1), (">=1000", 5)]),
            "bucket order"
        );
        assert_eq!(
            values(breakdown(&stats, "init", "from")),
            pairs(&[("1.9", 5), ("1.10.0", 1), ("2.0.0-rc.1", 1), ("2.0.0", 1)]),
            "semver order"
        );
        let mode = breakdown(&stats, "query", "mode");
        let mode_values = values(mode);
        assert_eq!(mode_values.len(), 11, "ten values and other");
        assert_eq!(mode_values[0], ("m01".to_owned(), 19));
        assert_eq!(mode_values[10], ("(other)".to_owned(), 9 + 8 + 7));
        assert_eq!(mode["folded"], 3);
        // The weekly series of the top values covers the window's weeks.
        let weeks = shell["weeks"].as_array().unwrap().len();
        let zsh = &shell["series"][0];
        assert_eq!(zsh["value"], "zsh");
        assert_eq!(zsh["counts"].as_array().unwrap().len(), weeks);
        assert_eq!(zsh["counts"].as_array().unwrap().last().unwrap(), 6);
        // Command usage: init and query, most used first.
        let commands: Vec<&str> = stats["commands"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["event"].as_str().unwrap())
            .collect();
        assert_eq!(commands, ["query", "init"], "{}", b.name);

        // Distinct installs (anonymous and full only) in the week of `to`:
        // the anonymous install sent bash, the full one zsh; fish came only
        // in aggregate counters, which carry no install.
        assert_eq!(shell["installs"], 2, "{}", b.name);
        let installs: Vec<(String, Value)> = shell["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                (
                    v["value"].as_str().unwrap().to_owned(),
                    v["installs"].clone(),
                )
            })
            .collect();
        assert_eq!(
            installs,
            [
                ("zsh".to_owned(), json!(1)),
                ("bash".to_owned(), json!(1)),
                ("fish".to_owned(), json!(0))
            ],
            "{}",
            b.name
        );
        assert_eq!(shell["values"][0]["install_share"], 0.5, "{}", b.name);
        assert_eq!(
            zsh["installs"].as_array().unwrap().last().unwrap(),
            1,
            "{}: the weekly series of installs",
            b.name
        );
        // An "(other)" row folds several values: no distinct count for it.
        assert_eq!(mode["values"][10]["installs"], Value::Null, "{}", b.name);
        assert_eq!(mode["installs"], 0, "{}: aggregate only", b.name);
        let weekly = stats["weekly"].as_array().unwrap();
        assert_eq!(
            weekly.last().unwrap()["identified_installs"],
            2,
            "{}",
            b.name
        );
        let init = &stats["commands"][1];
        assert_eq!(init["installs"], 2, "{}", b.name);
        assert_eq!(
            init["install_share"], 1.0,
            "{}: every identified install",
            b.name
        );
        assert_eq!(stats["commands"][0]["install_share"], 0.0, "{}", b.name);

        // One event's breakdown reads that event only, and agrees.
        let store = state.store();
        let to = telemetry_collector::ingest::today();
        let one = telemetry_collector::stats::event_breakdown(
            store,
            "demo",
            Some(&state.project("demo").unwrap().manifest),
            from.parse().unwrap(),
            to,
            "init",
            Some("took"),
        )
        .await
        .unwrap();
        assert_eq!(one.count, 13);
        assert_eq!(one.props.len(), 1);
        assert_eq!(
            serde_json::to_value(&one.props[0]).unwrap(),
            *breakdown(&stats, "init", "took")
        );
        seen.push((b.name, stats));
        store.close().await.unwrap();
    }
    for (name, stats) in &seen[1..] {
        assert_eq!(stats, &seen[0].1, "{name} differs from {}", seen[0].0);
    }
}

#[tokio::test]
async fn the_stats_command_prints_one_events_breakdown_as_table_json_and_csv() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    use_rich_manifest(&cfg);
    let state = telemetry_collector::AppState::from_config(&cfg).unwrap().0;
    prop_workload(&state).await;
    state.store().close().await.unwrap();
    drop(state);
    let file = config_file(dir.path(), "");
    use_rich_manifest(&cfg);
    let file = file.to_str().unwrap();
    let base = [
        "stats",
        "--config",
        file,
        "--project",
        "demo",
        "--days",
        "14",
    ];
    let with = |extra: &[&str]| {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        crate::backends::run_cli(&args, dir.path())
    };
    let json: Value =
        serde_json::from_str(&with(&["--event", "init", "--format", "json"])).unwrap();
    assert_eq!(json["event"], "init");
    assert_eq!(json["count"], 13);
    let props: Vec<&str> = json["props"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["prop"].as_str().unwrap())
        .collect();
    assert_eq!(props, ["ci", "from", "shell", "took"]);
    let table = with(&["--event", "init", "--prop", "took"]);
    assert!(table.contains("took (bucket): 6 without it"), "{table}");
    let lines: Vec<&str> = table.lines().collect();
    let pos = |v: &str| lines.iter().position(|l| l.starts_with(v)).unwrap();
    assert!(
        pos("<100") < pos("100..1000") && pos("100..1000") < pos(">=1000"),
        "{table}"
    );
    let csv = with(&["--event", "init", "--prop", "shell", "--format", "csv"]);
    assert_eq!(
        csv,
        "event,prop,kind,value,count,share,installs,install_share\r\n\
         init,shell,enum,zsh,6,0.600000,1,0.500000\r\n\
         init,shell,enum,bash,2,0.200000,1,0.500000\r\n\
         init,shell,enum,fish,2,0.200000,0,0.000000\r\n"
    );
    // The whole stats agree with the one-event read.
    let all: Value = serde_json::from_str(&with(&["--format", "json"])).unwrap();
    let shell = all["props"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["event"] == "init" && p["prop"] == "shell")
        .unwrap();
    assert_eq!(shell, &json["props"][2]);
    let adoption = with(&["--format", "csv", "--table", "adoption"]);
    assert!(
        adoption.starts_with("week,version,active_installs,share\r\n"),
        "{adoption}"
    );
    // --help explains the JSON fields.
    let help = crate::backends::run_cli(&["stats", "--help"], dir.path());
    for field in [
        "per_active_install",
        "install_share",
        "retry_share",
        "identified_installs",
        "not_set",
        "adoption",
        "series[]",
        "folded",
    ] {
        assert!(help.contains(field), "{field} in {help}");
    }
    // An unknown prop is an error, not an empty table.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_telemetry-collector"))
        .args(base)
        .args(["--event", "init", "--prop", "nope"])
        .current_dir(dir.path())
        .env_remove("TELEMETRY_COLLECTOR_DB")
        .env_remove("TELEMETRY_COLLECTOR_CONFIG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no prop \"nope\""));
}

/// Delivery-health data: a client's drop counts, an item the collector
/// refuses and a payload it downgrades. Needs `max_tier = "anonymous"`.
pub(crate) fn delivery_payloads() -> Vec<Value> {
    let mut report = aggregate(new_id(), "command", 96);
    report["counters"] = json!([
        {"day": today(), "event": "command", "count": 96, "props": {"name": "greet"}},
        {"day": today(), "event": "telemetry_dropped", "count": 3, "props": {"reason": "outbox_full"}},
        {"day": today(), "event": "telemetry_dropped", "count": 1, "props": {"reason": "refused_items"}},
    ]);
    let mut refused = anonymous(
        new_id(),
        vec![event(new_id(), "deploy"), event(new_id(), "crash")],
    );
    refused["context"]["tool_version"] = json!("1.5.0");
    let downgraded = full(
        new_id(),
        vec![event(new_id(), "crash")],
        "someone@example.org",
    );
    vec![report, refused, downgraded]
}

#[tokio::test]
async fn delivery_health_counts_drops_refusals_and_downgrades_on_every_backend() {
    let mut seen: Vec<(&str, Value)> = Vec::new();
    for mut b in backends().await {
        b.config.projects[0].max_tier = telemetry_protocol::Tier::Anonymous;
        let state = b.state();
        let delivery_payloads_sent = delivery_payloads();
        for payload in &delivery_payloads_sent {
            let (status, body) = ingest(&state, payload).await;
            assert_eq!(status, StatusCode::OK, "{}: {body}", b.name);
        }
        // The refused payload again, as a client that never saw the answer
        // sends it: its stored crash is a replay, so the upload is a retry.
        let (status, body) = ingest(&state, &delivery_payloads_sent[1]).await;
        assert_eq!(status, StatusCode::OK, "{}: {body}", b.name);
        let (status, stats) = admin_get(&state, "/api/v1/projects/demo/stats").await;
        assert_eq!(status, StatusCode::OK, "{stats}");
        let h = &stats["delivery"];
        assert_eq!(
            (&h["uploads"], &h["retries"], &h["replayed"]),
            (&json!(4), &json!(1), &json!(1)),
            "{}: {h}",
            b.name
        );
        assert_eq!(h["retry_share"], 0.25, "{}", b.name);
        assert_eq!(h["week_retry_share"], 0.25, "{}", b.name);
        // 96 commands + 2 crashes stored; 3 dropped (refused_items are the
        // collector's own count) + 1 refused known to be missing.
        assert_eq!(h["week_received"], 98, "{}: {h}", b.name);
        assert_eq!(h["week_missing"], 4, "{}: {h}", b.name);
        assert_eq!(
            h["summary"],
            "About 3.9% of events are known to be missing this week \
             ("
            .to_owned()
                + &telemetry_collector::ingest::today().iso_week().to_string()
                + "): 3 dropped by clients, 1 refused by the collector. \
             1 more item was kept at a lower tier than sent. \
             About 25.0% of 4 uploads this week were retries.",
            "{}",
            b.name
        );
        assert_eq!(h["dropped"][0]["reason"], "outbox_full");
        assert_eq!(h["dropped"][0]["count"], 3);
        assert_eq!(h["refused"][0]["reason"], "unknown_event");
        assert_eq!(h["refused"][0]["version"], "1.5.0");
        assert_eq!(h["refused"][0]["count"], 1);
        assert_eq!(h["downgraded"][0]["reason"], "downgraded_full_to_anonymous");
        // The CSV says the same.
        let stats_typed: telemetry_collector::report::ProjectStats =
            serde_json::from_value(stats.clone()).unwrap();
        let csv = telemetry_collector::export::csv(
            &stats_typed,
            telemetry_collector::export::CsvTable::Delivery,
        );
        assert!(csv.contains("dropped,outbox_full,,3,\r\n"), "{csv}");
        assert!(csv.contains("refused,unknown_event,1.5.0,1,"), "{csv}");
        assert!(csv.contains("uploads,retries,,1,\r\n"), "{csv}");
        seen.push((b.name, stats));
        state.store().close().await.unwrap();
    }
    for (name, stats) in &seen[1..] {
        assert_eq!(stats, &seen[0].1, "{name} differs from {}", seen[0].0);
    }
}
