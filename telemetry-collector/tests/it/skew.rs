//! Version skew end to end: items refused on their own, `max_tier`
//! downgrades, ignored fields, the `refusals` table and `/metrics`, on every
//! backend, over real HTTP on 127.0.0.1:0.

use serde_json::{Value, json};
use telemetry_collector::AppState;
use telemetry_protocol::Tier;
use tokio::sync::oneshot;

use crate::backends::{backends, day_offset};
use crate::common::*;

/// The `demo` manifest as an older collector has it: `command.name` lacks
/// `deploy`, and there is no `lint` event, both of which a newer tool sends.
const OLD_MANIFEST: &str = MANIFEST;

/// A server on 127.0.0.1:0 over `state`; stop it by sending on the channel.
async fn serve(
    state: AppState,
) -> (
    String,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(telemetry_collector::serve(listener, state, async {
        let _ = stopped.await;
    }));
    (url, stop, server)
}

/// The dashboard's page of `demo`, signed in, in-process.
async fn dashboard_page(state: &AppState) -> String {
    use axum::body::Body;
    use axum::http::{Request, header};
    let login = Request::post("/dashboard/login")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(format!("token={TOKEN}&next=%2Fdashboard")))
        .unwrap();
    let (status, response) = send(state, login).await;
    assert_eq!(status, 303);
    let cookie = response.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let page = Request::get("/dashboard/projects/demo")
        .header(header::COOKIE, cookie)
        .body(Body::empty())
        .unwrap();
    let (status, response) = send(state, page).await;
    assert_eq!(status, 200);
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    String::from_utf8(bytes.to_vec()).unwrap()
}

async fn metrics(client: &reqwest::Client, url: &str) -> String {
    http_admin_get(client, &format!("{url}/metrics")).await
}

fn cmd(name: &str) -> Value {
    json!({"id": new_id(), "name": "command", "timestamp": now_ts(), "props": {"name": name}})
}

/// What a newer tool (1.5.0) sends on first run: the lifecycle events, a
/// command whose value the old manifest lacks, one it has, and an event the
/// old manifest does not declare.
fn newer_tool_events() -> Vec<Value> {
    vec![
        event(new_id(), "install"),
        event(new_id(), "setup_started"),
        event(new_id(), "setup_completed"),
        cmd("deploy"),
        cmd("greet"),
        event(new_id(), "lint"),
    ]
}

fn with_version(mut payload: Value, version: &str) -> Value {
    payload["context"]["tool_version"] = json!(version);
    payload
}

/// **The "done when" of the version-skew issue**: an old manifest on the
/// collector, a newer tool, users at `anonymous` and at `full` with
/// `max_tier = "anonymous"`. Installs and setup counts are exact, no identity
/// is stored, and `/metrics` and the `refusals` table (which the dashboard
/// reads) show what was refused and downgraded; on SQLite and PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_manifest_and_a_lower_max_tier_still_count_every_install() {
    for mut b in backends().await {
        std::fs::write(&b.config.projects[0].manifest, OLD_MANIFEST).unwrap();
        b.config.projects[0].max_tier = Tier::Anonymous;
        let state = b.state();
        let (url, stop, server) = serve(state.clone()).await;
        let client = client();
        let ingest = format!("{url}/v1/ingest");
        let (anonymous_users, full_users) = (3, 2);
        for _ in 0..anonymous_users {
            let payload = with_version(anonymous(new_id(), newer_tool_events()), "1.5.0");
            let (status, body) = http_post(&client, &ingest, &payload).await.unwrap();
            assert_eq!(status, 200, "{}: {body}", b.name);
            assert_eq!(body["accepted"], 4, "{}: {body}", b.name);
            assert_eq!(body["refused"], 2, "{}: {body}", b.name);
            assert_eq!(body["refused_by_reason"]["invalid_value"], 1, "{body}");
            assert_eq!(body["refused_by_reason"]["unknown_event"], 1, "{body}");
            assert!(body.get("downgraded_to").is_none(), "{body}");
        }
        for i in 0..full_users {
            let payload = with_version(
                full(
                    new_id(),
                    newer_tool_events(),
                    &format!("user{i}@example.org"),
                ),
                "1.5.0",
            );
            let (status, body) = http_post(&client, &ingest, &payload).await.unwrap();
            assert_eq!(status, 200, "{}: {body}", b.name);
            assert_eq!(body["accepted"], 4, "{}: {body}", b.name);
            assert_eq!(body["downgraded_to"], "anonymous", "{}: {body}", b.name);
        }
        let users = anonymous_users + full_users;
        let stats = http_admin_get(&client, &format!("{url}/api/v1/projects/demo/stats")).await;
        let stats: Value = serde_json::from_str(&stats).unwrap();
        assert_eq!(stats["installs"], users, "{}: {stats}", b.name);
        assert_eq!(stats["setup_started"], users, "{}: {stats}", b.name);
        assert_eq!(stats["setup_completed"], users, "{}: {stats}", b.name);

        let text = metrics(&client, &url).await;
        for line in [
            format!(
                "telemetry_skew_items_total{{project=\"demo\",kind=\"refused\",reason=\"invalid_value\"}} {users}"
            ),
            format!(
                "telemetry_skew_items_total{{project=\"demo\",kind=\"refused\",reason=\"unknown_event\"}} {users}"
            ),
            format!(
                "telemetry_skew_items_total{{project=\"demo\",kind=\"downgraded\",reason=\"downgraded_full_to_anonymous\"}} {}",
                full_users * 6
            ),
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{}: missing {line} in\n{text}",
                b.name
            );
        }
        let page = dashboard_page(&state).await;
        for line in [
            format!(
                "<li><strong>1.5.0</strong> sends <code>command.name=deploy</code>, which the collector's manifest lacks <span class=\"n\">({users} items)</span></li>"
            ),
            format!(
                "<li><strong>1.5.0</strong> sends event <code>lint</code>, which the collector's manifest lacks <span class=\"n\">({users} items)</span></li>"
            ),
            format!(
                "<li><strong>1.5.0</strong> sent items downgraded from full to anonymous, the project's <code>max_tier</code> <span class=\"n\">({} items)</span></li>",
                full_users * 6
            ),
        ] {
            assert!(
                page.contains(&line),
                "{}: the dashboard lacks {line}",
                b.name
            );
        }
        drop(state);
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();

        b.expect_scalar("SELECT COUNT(*) FROM identities", 0).await;
        b.expect_scalar("SELECT COUNT(*) FROM installs", users)
            .await;
        let state = b.state();
        let today = telemetry_collector::ingest::today();
        let rows = state.store().refusals("demo", today, today).await.unwrap();
        let got: Vec<(&str, &str, &str, u64)> = rows
            .iter()
            .map(|r| {
                (
                    r.version.as_str(),
                    r.reason.as_str(),
                    r.detail.as_str(),
                    r.count,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    "1.5.0",
                    "downgraded_full_to_anonymous",
                    "",
                    full_users as u64 * 6
                ),
                (
                    "1.5.0",
                    "invalid_value",
                    "command.name=deploy",
                    users as u64
                ),
                ("1.5.0", "unknown_event", "lint", users as u64),
            ],
            "{}",
            b.name
        );
        state.store().close().await.unwrap();
    }
}

/// Replays of a 2xx (the client never saw the answer) count nothing twice:
/// not the accepted items, not the refused ones, not the downgrade.
#[tokio::test]
async fn a_replay_counts_refusals_and_downgrades_once_on_every_backend() {
    for mut b in backends().await {
        b.config.projects[0].max_tier = Tier::Anonymous;
        let state = b.state();
        let full_payload = full(new_id(), newer_tool_events(), "a@example.org");
        let mut report = aggregate(new_id(), "command", 2);
        report["counters"]
            .as_array_mut()
            .unwrap()
            .push(json!({"day": today(), "event": "lint", "count": 1}));
        for round in 0..3 {
            let (status, body) = ingest(&state, &full_payload).await;
            assert_eq!(status, 200, "{}: {body}", b.name);
            assert_eq!(
                body["refused"], 2,
                "{}: the answer is the same each time",
                b.name
            );
            let (status, body) = ingest(&state, &report).await;
            assert_eq!(status, 200, "{}: {body}", b.name);
            assert_eq!(
                (body["accepted"].as_u64(), body["duplicates"].as_u64()),
                if round == 0 {
                    (Some(1), Some(0))
                } else {
                    (Some(0), Some(1))
                },
                "{}: {body}",
                b.name
            );
        }
        state.store().close().await.unwrap();
        let state = b.state();
        let today = telemetry_collector::ingest::today();
        let rows = state.store().refusals("demo", today, today).await.unwrap();
        let counts: Vec<(&str, &str, u64)> = rows
            .iter()
            .map(|r| (r.reason.as_str(), r.detail.as_str(), r.count))
            .collect();
        assert_eq!(
            counts,
            [
                ("downgraded_full_to_anonymous", "", 6),
                ("invalid_value", "command.name=deploy", 1),
                ("unknown_event", "lint", 2),
            ],
            "{}",
            b.name
        );
        let (_, stats) = admin_get(&state, "/api/v1/projects/demo/stats").await;
        assert_eq!(stats["installs"], 1, "{}: {stats}", b.name);
        state.store().close().await.unwrap();
    }
}

/// The fleet drill's long form found clients reporting more refused items
/// than `refusals` held: an aggregate report accepted while the manifest
/// declared its event, whose answer was lost (a reset mid-response), was
/// replayed after the collector's manifest lost the event. The replay's
/// answer refused the counter, so the client counted it, but the store
/// counted nothing for a replayed report. Now each refused counter is
/// counted once by its own id, replay or not: what `refusals` holds equals
/// the answers' `refused`, each payload's counted once (as the client does).
#[tokio::test]
async fn a_replay_under_a_changed_manifest_counts_what_its_answer_refused() {
    const WITH_LINT: &str =
        "\n[events.lint]\ndescription = \"A lint ran\"\nmin_tier = \"aggregate\"\n";
    for b in backends().await {
        let manifest = b.config.projects[0].manifest.clone();
        let report = |id| {
            let mut r = aggregate(id, "command", 2);
            r["counters"]
                .as_array_mut()
                .unwrap()
                .push(json!({"day": today(), "event": "lint", "count": 1}));
            r
        };
        let (accepted_first, refused_first) = (report(new_id()), report(new_id()));
        // The client's count: each payload's `refused` once, from the
        // answer it finally saw.
        let mut client = std::collections::BTreeMap::new();
        for (manifest_text, sends) in [
            // `lint` declared: the first report is stored whole; its answer
            // is lost on the way.
            (
                format!("{MANIFEST}{WITH_LINT}"),
                vec![("a", &accepted_first)],
            ),
            // `lint` gone: the lost one is replayed, a new one is refused,
            // lost, and replayed.
            (
                MANIFEST.to_owned(),
                vec![
                    ("a", &accepted_first),
                    ("b", &refused_first),
                    ("b", &refused_first),
                ],
            ),
        ] {
            std::fs::write(&manifest, manifest_text).unwrap();
            let state = b.state();
            for (name, payload) in sends {
                let (status, body) = ingest(&state, payload).await;
                assert_eq!(status, 200, "{}: {body}", b.name);
                client.insert(name, body["refused"].as_u64().unwrap_or(0));
            }
            state.store().close().await.unwrap();
        }
        assert_eq!(client, [("a", 1), ("b", 1)].into(), "{}", b.name);
        let state = b.state();
        let today = telemetry_collector::ingest::today();
        let rows = state.store().refusals("demo", today, today).await.unwrap();
        let stored: u64 = rows.iter().map(|r| r.count).sum();
        assert_eq!(
            stored,
            client.values().sum::<u64>(),
            "{}: `refusals` holds what the answers refused",
            b.name
        );
        state.store().close().await.unwrap();
    }
}

/// Everything refused still answers 2xx, and the report id is remembered so
/// a retry cannot count the refusals twice.
#[tokio::test]
async fn a_payload_whose_every_item_is_refused_still_gets_2xx() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let state = state(&cfg);
    let install = new_id();
    let payload = anonymous(install, vec![event(new_id(), "lint"), cmd("deploy")]);
    let (status, body) = ingest(&state, &payload).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["accepted"].as_u64(), body["refused"].as_u64()),
        (Some(0), Some(2))
    );
    let (status, body) = ingest(&state, &aggregate(new_id(), "lint", 3)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["refused_items"][0]["path"], "counters[0]");
    assert_eq!(body["refused_items"][0]["reason"], "unknown_event");
    state.store().close().await.unwrap();
    let db = cfg.db_path();
    assert_eq!(query_i64(&db, "SELECT COUNT(*) FROM events"), 0);
    assert_eq!(query_i64(&db, "SELECT COUNT(*) FROM daily_counters"), 0);
    assert_eq!(
        query_i64(&db, "SELECT COUNT(*) FROM installs"),
        0,
        "no install row for an install none of whose events was stored"
    );
    assert_eq!(query_i64(&db, "SELECT SUM(count) FROM refusals"), 3);
}

/// Time sanity per item (issue 15): far-future and too-old items are
/// refused on their own and counted; nothing stored carries a time no purge
/// would reach, and a report replayed after its id expired is not counted.
#[tokio::test]
async fn times_out_of_range_are_refused_per_item() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let state = state(&cfg);
    let at = |ts: &str| json!({"id": new_id(), "name": "install", "timestamp": ts});
    let payload = anonymous(
        new_id(),
        vec![
            at("9999-12-31T00:00:00Z"),
            at("2000-01-01T00:00:00Z"),
            at(&format!("{}T12:00:00Z", day_offset(-91))),
            at(&format!("{}T12:00:00Z", day_offset(-89))),
            at(&now_ts()),
        ],
    );
    let (status, body) = ingest(&state, &payload).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], 2, "{body}");
    assert_eq!(body["refused_by_reason"]["time_in_future"], 1, "{body}");
    assert_eq!(body["refused_by_reason"]["time_too_old"], 2, "{body}");

    // A report whose id the collector no longer remembers: its counters are
    // older than the window, so the replay counts nothing.
    let mut old_report = aggregate(new_id(), "install", 5);
    old_report["counters"][0]["day"] = json!(day_offset(-32));
    let (status, body) = ingest(&state, &old_report).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["refused_by_reason"]["time_too_old"], 1, "{body}");
    let mut future_report = aggregate(new_id(), "install", 5);
    future_report["counters"][0]["day"] = json!(day_offset(2));
    let (_, body) = ingest(&state, &future_report).await;
    assert_eq!(body["refused_by_reason"]["time_in_future"], 1, "{body}");
    let mut edge = aggregate(new_id(), "install", 5);
    edge["counters"][0]["day"] = json!(day_offset(1));
    let (_, body) = ingest(&state, &edge).await;
    assert_eq!(
        body["accepted"], 1,
        "a day ahead is a clock difference: {body}"
    );
    state.store().close().await.unwrap();
    let db = cfg.db_path();
    let today = telemetry_collector::ingest::today().days_since_epoch() as i64;
    assert_eq!(
        query_i64(&db, "SELECT MAX(last_seen_day) FROM installs"),
        today
    );
    assert!(query_i64(&db, "SELECT MIN(first_seen_day) FROM installs") >= today - 90);
    assert!(query_i64(&db, "SELECT MAX(day) FROM daily_counters") <= today + 1);
    assert!(query_i64(&db, "SELECT MIN(day) FROM daily_counters") >= today - 90);
}

/// Fields this collector does not know are ignored, never written, and counted.
#[tokio::test]
async fn unknown_fields_are_ignored_counted_and_never_written() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let state = state(&cfg);
    let mut payload = anonymous(new_id(), vec![event(new_id(), "install")]);
    payload["source_q"] = json!("CANARY-TOP-LEVEL");
    payload["context"]["shell_q"] = json!("CANARY-CONTEXT");
    payload["events"][0]["hint_q"] = json!({"nested": "CANARY-ITEM"});
    let (status, body) = ingest(&state, &payload).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], 1);
    assert_eq!(body["ignored"], 3, "{body}");
    let fields: Vec<&str> = body["ignored_fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(fields, ["context.shell_q", "events[].hint_q", "source_q"]);
    // A known field above the tier is still refused whole.
    let mut over = aggregate(new_id(), "install", 1);
    over["install_id"] = json!(new_id());
    over["unknown_too"] = json!(1);
    assert_eq!(ingest(&state, &over).await.0, 422);
    state.store().close().await.unwrap();
    let db = cfg.db_path();
    let mut bytes = std::fs::read(&db).unwrap();
    if let Ok(wal) = std::fs::read(db.with_extension("db-wal")) {
        bytes.extend(wal);
    }
    for marker in ["CANARY-TOP-LEVEL", "CANARY-CONTEXT", "CANARY-ITEM"] {
        assert!(
            !bytes.windows(marker.len()).any(|w| w == marker.as_bytes()),
            "{marker} was written"
        );
    }
    assert_eq!(
        query_i64(
            &db,
            "SELECT SUM(count) FROM refusals WHERE reason = 'ignored_field'"
        ),
        3
    );
}

/// One hostile request used to get a 4.7 MB answer listing every problem;
/// the 422 body is now capped at 64 KiB.
#[tokio::test]
async fn a_hostile_422_answer_stays_under_64_kib() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.body_limit = 4 << 20;
    let state = state(&cfg);
    let props: serde_json::Map<String, Value> = (0..16)
        .map(|i| (format!("p{i}"), json!("bad value with spaces")))
        .collect();
    let events: Vec<Value> = (0..1000)
        .map(|_| json!({"id": new_id(), "name": "Not-An-Identifier", "timestamp": now_ts(), "props": props}))
        .collect();
    let mut payload = anonymous(new_id(), events);
    payload["identity"] = json!({"email": "x"});
    let request = post("/v1/ingest", payload.to_string());
    let (status, response) = send(&state, request).await;
    assert_eq!(status, 422);
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    assert!(body.len() <= 64 * 1024, "a 422 of {} bytes", body.len());
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"], "policy_violation");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("first 100 listed"),
        "{}",
        body["message"]
    );
    state.store().close().await.unwrap();
}

/// The 2xx answer is capped too, however many items were refused.
#[tokio::test]
async fn a_2xx_answer_lists_at_most_20_refused_items() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let state = state(&cfg);
    let events: Vec<Value> = (0..1000)
        .map(|i| event(new_id(), &format!("e{i}")))
        .collect();
    let request = post("/v1/ingest", anonymous(new_id(), events).to_string());
    let (status, response) = send(&state, request).await;
    assert_eq!(status, 200);
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    assert!(body.len() < 4096, "a 2xx of {} bytes", body.len());
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["refused"], 1000);
    assert_eq!(body["refused_items"].as_array().unwrap().len(), 20);
    state.store().close().await.unwrap();
}

/// `max_tier = "aggregate"`: events roll up into counters with no install
/// row, no event row and no identity; installs still count, and a retry
/// does not count them again.
#[tokio::test]
async fn a_rollup_to_aggregate_keeps_the_numbers_and_no_install_on_every_backend() {
    for mut b in backends().await {
        b.config.projects[0].max_tier = Tier::Aggregate;
        let state = b.state();
        let payloads = [
            anonymous(new_id(), newer_tool_events()),
            full(new_id(), newer_tool_events(), "a@example.org"),
        ];
        for _ in 0..2 {
            for p in &payloads {
                let (status, body) = ingest(&state, p).await;
                assert_eq!(status, 200, "{}: {body}", b.name);
                assert_eq!(body["downgraded_to"], "aggregate", "{}: {body}", b.name);
            }
        }
        let (_, stats) = admin_get(&state, "/api/v1/projects/demo/stats").await;
        assert_eq!(stats["installs"], 2, "{}: {stats}", b.name);
        assert_eq!(stats["setup_completed"], 2, "{}: {stats}", b.name);
        state.store().close().await.unwrap();
        for table in ["events", "installs", "install_weeks", "identities"] {
            b.expect_scalar(&format!("SELECT COUNT(*) FROM {table}"), 0)
                .await;
        }
        b.expect_scalar("SELECT COUNT(DISTINCT tier) FROM daily_counters", 1)
            .await;
        b.expect_scalar("SELECT MIN(tier) FROM daily_counters", 1)
            .await;
    }
}

/// A report id is remembered under its newest counter's day, so that a
/// report replayed after the purge forgot its arrival day (but while its
/// counters are still within the window ingest accepts) is recognised, on
/// every backend. Before, the id went 31 days after arrival, and a counter
/// dated a day ahead was still accepted the day after: counted twice.
#[tokio::test]
async fn a_report_replayed_after_its_arrival_day_expired_counts_once() {
    use telemetry_collector::store::{
        BatchContext, BatchData, IngestBatch, REPORT_ID_DAYS, RetentionPolicy,
    };
    use telemetry_protocol::Counter;
    for b in backends().await {
        let state = b.state();
        let arrival = telemetry_collector::ingest::today();
        let report = |received| IngestBatch {
            project: "demo".into(),
            tier: Tier::Aggregate,
            context: BatchContext {
                version: "1.0.0".into(),
                os: "linux".into(),
                arch: "x86_64".into(),
            },
            received,
            data: BatchData::Aggregate {
                report_id: telemetry_protocol::Uuid::from_u128(42),
                counters: vec![Counter {
                    day: arrival.add_days(1),
                    event: "install".into(),
                    props: Default::default(),
                    count: 1,
                }],
            },
        };
        let first = state.store().ingest(report(arrival)).await.unwrap();
        assert_eq!(first.accepted, 1, "{}", b.name);
        // The day a replay of that counter is still inside ingest's window.
        let later = arrival.add_days(1 + REPORT_ID_DAYS);
        let policy = RetentionPolicy {
            default_days: 90,
            per_project: Default::default(),
        };
        state.store().purge(&policy, later).await.unwrap();
        let replay = state.store().ingest(report(later)).await.unwrap();
        assert_eq!(
            (replay.accepted, replay.duplicates),
            (0, 1),
            "{}: the replay counted again",
            b.name
        );
        // A day later the counter is outside the window, and the id may go.
        let out = state
            .store()
            .purge(&policy, later.add_days(1))
            .await
            .unwrap();
        assert_eq!(out.report_ids, 1, "{}", b.name);
        state.store().close().await.unwrap();
    }
}
