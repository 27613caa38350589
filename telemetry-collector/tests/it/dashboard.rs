//! The dashboard over the real collector: data goes in through `/v1/ingest`
//! at every tier, and the pages, CSV downloads and public pages must show the
//! numbers the JSON stats API returns, escaped, and only to whom they may.
//!
//! The browser test (`browser.rs`) sends the same data and checks it in chromium.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};
use telemetry_collector::AppState;
use telemetry_collector::export::{self, CsvTable};
use telemetry_collector::report::ProjectStats;
use telemetry_collector::store::{BatchContext, BatchData, IngestBatch};
use telemetry_protocol::{Counter, Day, Tier};

use crate::common::*;

/// A count as the pages write it, with thousands separators.
pub(crate) fn num(n: u64) -> String {
    telemetry_collector::dashboard::html::num(n)
}

/// Event names no client can send (the protocol only allows identifiers),
/// written straight into the store as a collector with a looser policy, an
/// older version or a bug might have: the dashboard must still show them as text.
pub(crate) const HOSTILE_EVENTS: [&str; 2] =
    ["<script>alert(1)</script>", "<img src=x onerror=alert(1)>"];
/// The most hostile version the protocol lets through: `<`, `>` and `=` are token characters.
pub(crate) const HOSTILE_VERSION: &str = "<script>";
/// An identity value that must never appear on any page.
pub(crate) const EMAIL: &str = "identity-canary@example.com";

/// Expected totals of [`sample_payloads`] (all sent today).
pub(crate) const INSTALLS: u64 = 8;
pub(crate) const ACTIVE: u64 = 8;
pub(crate) const SETUP_STARTED: u64 = 7;
pub(crate) const SETUP_COMPLETED: u64 = 5;
/// 5 of 7, as the page formats it.
pub(crate) const COMPLETION: &str = "71.4%";
/// How many past days [`history_payloads`] covers, so the charts have a shape
/// and 7 days, 30 days and all time differ. No more than the report-id
/// window, past which ingest refuses counters as too old to deduplicate.
pub(crate) const HISTORY_DAYS: i32 = telemetry_collector::store::REPORT_ID_DAYS;

/// One past day of `aggregate` counters, sent as its own report.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HistoryDay {
    pub(crate) day: Day,
    pub(crate) installs: u64,
    pub(crate) active: u64,
    pub(crate) setup_started: u64,
    pub(crate) setup_completed: u64,
    pub(crate) version: &'static str,
    pub(crate) os: &'static str,
    pub(crate) arch: &'static str,
}

/// A made-up but plausible history: installs growing towards today, a new
/// version three weeks ago, a few macOS, Windows and arm64 machines.
pub(crate) fn history() -> Vec<HistoryDay> {
    let today = telemetry_collector::ingest::today();
    (1..=HISTORY_DAYS)
        .map(|k| {
            let installs =
                3 + u64::from((HISTORY_DAYS - k) as u32 / 6) + u64::from((k * 7 % 5) as u32);
            HistoryDay {
                day: today.add_days(-k),
                installs,
                active: installs * 3,
                setup_started: installs - 1,
                setup_completed: installs - 1 - u64::from(k % 3 == 0),
                version: if k > 21 { "1.3.0" } else { "1.4.2" },
                os: match k % 5 {
                    0 => "macos",
                    3 => "windows",
                    _ => "linux",
                },
                arch: if k % 4 == 0 { "aarch64" } else { "x86_64" },
            }
        })
        .collect()
}

/// [`history`] as `aggregate` payloads.
pub(crate) fn history_payloads() -> Vec<Value> {
    history()
        .into_iter()
        .map(|h| {
            let mut payload = aggregate(new_id(), "install", 1);
            payload["counters"] = json!([
                {"day": h.day, "event": "install", "count": h.installs},
                {"day": h.day, "event": "active", "count": h.active},
                {"day": h.day, "event": "setup_started", "count": h.setup_started},
                {"day": h.day, "event": "setup_completed", "count": h.setup_completed},
                {"day": h.day, "event": "command", "props": {"name": "init"}, "count": h.installs},
            ]);
            with_context(payload, h.version, h.os, h.arch)
        })
        .collect()
}

/// What the pages must show after [`sample_payloads`] and [`history_payloads`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Expected {
    pub(crate) installs: u64,
    pub(crate) installs_7d: u64,
    pub(crate) installs_all_time: u64,
    pub(crate) active: u64,
    pub(crate) setup_started: u64,
    pub(crate) setup_completed: u64,
    pub(crate) completion: String,
}

/// The expected numbers for the window of the last `days` days, computed from
/// the data sent rather than from the collector.
pub(crate) fn expected(days: i32) -> Expected {
    let today = telemetry_collector::ingest::today();
    let history = history();
    let since = |first: Day| history.iter().filter(move |h| h.day >= first);
    let from = today.add_days(1 - days);
    let installs = INSTALLS + since(from).map(|h| h.installs).sum::<u64>();
    let setup_started = SETUP_STARTED + since(from).map(|h| h.setup_started).sum::<u64>();
    let setup_completed = SETUP_COMPLETED + since(from).map(|h| h.setup_completed).sum::<u64>();
    Expected {
        installs,
        installs_7d: INSTALLS + since(today.add_days(-6)).map(|h| h.installs).sum::<u64>(),
        installs_all_time: INSTALLS + history.iter().map(|h| h.installs).sum::<u64>(),
        // Weekly actives: the current ISO week up to today.
        active: ACTIVE + since(today.week_start()).map(|h| h.active).sum::<u64>(),
        setup_started,
        setup_completed,
        completion: format!(
            "{:.1}%",
            setup_completed as f64 / setup_started as f64 * 100.0
        ),
    }
}

fn with_context(mut payload: Value, version: &str, os: &str, arch: &str) -> Value {
    payload["context"]["tool_version"] = json!(version);
    payload["context"]["os"] = json!(os);
    payload["context"]["arch"] = json!(arch);
    payload
}

/// One payload at each tier, plus a second anonymous install, with known totals.
pub(crate) fn sample_payloads() -> Vec<Value> {
    let mut aggregate = aggregate(new_id(), "install", 5);
    let day = today();
    aggregate["counters"] = json!([
        {"day": day, "event": "install", "count": 5},
        {"day": day, "event": "active", "count": 5},
        {"day": day, "event": "setup_started", "count": 4},
        {"day": day, "event": "setup_completed", "count": 3},
        {"day": day, "event": "command", "props": {"name": "greet"}, "count": 7},
    ]);
    let events = |names: &[&str]| names.iter().map(|n| event(new_id(), n)).collect::<Vec<_>>();
    vec![
        aggregate,
        with_context(
            anonymous(
                new_id(),
                events(&[
                    "install",
                    "active",
                    "setup_started",
                    "setup_completed",
                    "crash",
                ]),
            ),
            HOSTILE_VERSION,
            "linux",
            "x86_64",
        ),
        with_context(
            anonymous(new_id(), events(&["install", "active", "setup_started"])),
            HOSTILE_VERSION,
            "linux",
            "x86_64",
        ),
        with_context(
            full(
                new_id(),
                events(&["install", "active", "setup_started", "setup_completed"]),
                EMAIL,
            ),
            "2.0.0",
            "macos",
            "aarch64",
        ),
    ]
}

/// A payload with a hostile event name; the collector must refuse it at ingest.
pub(crate) fn hostile_payload() -> Value {
    anonymous(new_id(), vec![event(new_id(), HOSTILE_EVENTS[0])])
}

/// Writes [`HOSTILE_EVENTS`] into the store behind ingest's back.
pub(crate) async fn plant_hostile_events(state: &AppState) {
    let day = telemetry_collector::ingest::today();
    let batch = IngestBatch {
        project: "demo".to_owned(),
        tier: Tier::Aggregate,
        context: BatchContext {
            version: "1.4.2".to_owned(),
            os: "linux".to_owned(),
            arch: "x86_64".to_owned(),
        },
        received: day,
        data: BatchData::Aggregate {
            report_id: new_id(),
            counters: HOSTILE_EVENTS
                .iter()
                .map(|name| Counter {
                    day,
                    event: (*name).to_owned(),
                    props: Default::default(),
                    count: 1,
                })
                .collect(),
        },
    };
    state.store().ingest(batch).await.unwrap();
}

/// Writes prop values no client can send (the manifest allows only declared
/// values) into the store behind ingest's back: an undeclared prop of
/// `command` with a hostile name and a hostile value.
pub(crate) async fn plant_hostile_props(state: &AppState) {
    let day = telemetry_collector::ingest::today();
    let mut props = telemetry_protocol::Props::new();
    props.insert(
        HOSTILE_EVENTS[1].to_owned(),
        telemetry_protocol::PropValue::Token(HOSTILE_EVENTS[0].to_owned()),
    );
    let batch = IngestBatch {
        project: "demo".to_owned(),
        tier: Tier::Aggregate,
        context: BatchContext {
            version: "1.4.2".to_owned(),
            os: "linux".to_owned(),
            arch: "x86_64".to_owned(),
        },
        received: day,
        data: BatchData::Aggregate {
            report_id: new_id(),
            counters: vec![Counter {
                day,
                event: "command".to_owned(),
                props,
                count: 2,
            }],
        },
    };
    state.store().ingest(batch).await.unwrap();
}

/// `active` counters of last week (so this week's headline numbers stay as
/// [`expected`] says) from 12 tool versions, `0.k.0` with k+1 installs each,
/// so adoption folds a tail.
pub(crate) fn adoption_payloads() -> Vec<Value> {
    let day = telemetry_collector::ingest::today()
        .week_start()
        .add_days(-7);
    (0..12u64)
        .map(|k| {
            let mut payload = aggregate(new_id(), "active", k + 1);
            payload["counters"][0]["day"] = json!(day);
            payload["context"]["tool_version"] = json!(format!("0.{k}.0"));
            payload
        })
        .collect()
}

async fn loaded_state(cfg: &telemetry_collector::Config, with_history: bool) -> AppState {
    let state = state(cfg);
    let history = if with_history {
        history_payloads()
    } else {
        Vec::new()
    };
    for payload in sample_payloads().into_iter().chain(history) {
        let (status, body) = ingest(&state, &payload).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, body) = ingest(&state, &hostile_payload()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    plant_hostile_events(&state).await;
    state
}

async fn text(
    state: &AppState,
    request: Request<Body>,
) -> (StatusCode, axum::http::HeaderMap, String) {
    let (status, response) = send(state, request).await;
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, headers, String::from_utf8(bytes.to_vec()).unwrap())
}

fn login(token: &str) -> Request<Body> {
    Request::post("/dashboard/login")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(format!("token={token}&next=%2Fdashboard")))
        .unwrap()
}

async fn sign_in(state: &AppState) -> String {
    let (status, headers, _) = text(state, login(TOKEN)).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let cookie = headers[header::SET_COOKIE].to_str().unwrap();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    cookie.split(';').next().unwrap().to_owned()
}

fn get(path: &str, cookie: Option<&str>) -> Request<Body> {
    let mut request = Request::get(path);
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, cookie);
    }
    request.body(Body::empty()).unwrap()
}

async fn api_stats(state: &AppState) -> ProjectStats {
    let (status, json) = admin_get(state, "/api/v1/projects/demo/stats").await;
    assert_eq!(status, StatusCode::OK, "{json}");
    serde_json::from_value(json).unwrap()
}

fn kpi(html: &str, id: &str) -> String {
    let start = html
        .find(&format!("id=\"{id}\">"))
        .unwrap_or_else(|| panic!("no {id}"))
        + id.len()
        + 6;
    html[start..start + html[start..].find('<').unwrap()].to_owned()
}

#[tokio::test]
async fn signed_in_pages_show_the_api_numbers_with_client_values_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let state = loaded_state(&config(dir.path()), true).await;

    for path in ["/dashboard", "/dashboard/projects/demo"] {
        let (status, headers, _) = text(&state, get(path, None)).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{path} needs sign-in");
        assert!(
            headers[header::LOCATION]
                .to_str()
                .unwrap()
                .starts_with("/dashboard/login")
        );
    }
    let (status, _, _) = text(&state, login("not-the-token")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let cookie = sign_in(&state).await;

    let stats = api_stats(&state).await;
    let want = expected(30);
    assert_eq!(
        (
            stats.installs,
            stats.active_installs,
            stats.setup_started,
            stats.setup_completed
        ),
        (
            want.installs,
            want.active,
            want.setup_started,
            want.setup_completed
        )
    );

    let (status, headers, html) =
        text(&state, get("/dashboard/projects/demo", Some(&cookie))).await;
    assert_eq!(status, StatusCode::OK);
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'none'") && !csp.contains("script-src"),
        "{csp}"
    );
    for (id, expected) in [
        ("stat-installs", want.installs),
        ("stat-installs-all-time", want.installs_all_time),
        ("stat-active", want.active),
        ("stat-setup-started", want.setup_started),
        ("stat-setup-completed", want.setup_completed),
    ] {
        assert_eq!(kpi(&html, id), num(expected), "{id}");
    }
    assert_eq!(kpi(&html, "stat-completion"), want.completion);
    // Every tier's share and the retention cohort (anonymous and full only: 3 installs).
    for tier in &stats.tiers {
        assert!(
            html.contains(&format!("{}: {} (", tier.tier, num(tier.events))),
            "{}",
            tier.tier
        );
    }
    assert_eq!(stats.retention.len(), 1);
    assert_eq!(stats.retention[0].installs, 3);
    assert!(html.contains("class=\"retention\""));

    // Client values appear only escaped.
    for hostile in HOSTILE_EVENTS {
        assert!(!html.contains(hostile), "raw {hostile}");
        let escaped = hostile.replace('<', "&lt;").replace('>', "&gt;");
        assert!(
            html.contains(&format!("<td class=\"event-name\">{escaped}</td>")),
            "{hostile} shown as text"
        );
    }
    assert!(html.contains("<td class=\"key\">&lt;script&gt;</td>"));
    assert!(!html.contains("<script"), "no script element at all");
    assert!(!html.contains(EMAIL), "identity fields are never shown");

    let (status, _, overview) = text(&state, get("/dashboard", Some(&cookie))).await;
    assert_eq!(status, StatusCode::OK);
    for (class, value) in [
        ("installs-7d", num(want.installs_7d)),
        ("installs-30d", num(want.installs)),
        ("installs-all", num(want.installs_all_time)),
        ("active", num(want.active)),
        ("completion", want.completion.clone()),
    ] {
        assert!(
            overview.contains(&format!("<td class=\"n {class}\">{value}</td>")),
            "{class} = {value}"
        );
    }
}

#[tokio::test]
async fn csv_downloads_match_the_stats_export_and_need_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let state = loaded_state(&config(dir.path()), true).await;
    let stats = api_stats(&state).await;
    let path = |table: CsvTable| format!("/dashboard/projects/demo/export/{}.csv", table.as_str());

    let (status, _, _) = text(&state, get(&path(CsvTable::Daily), None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    for table in CsvTable::ALL {
        let request = Request::get(path(table))
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .body(Body::empty())
            .unwrap();
        let (status, headers, body) = text(&state, request).await;
        assert_eq!(status, StatusCode::OK, "{}", table.as_str());
        assert_eq!(headers[header::CONTENT_TYPE], "text/csv; charset=utf-8");
        assert_eq!(body, export::csv(&stats, table), "{}", table.as_str());
    }
    let cookie = sign_in(&state).await;
    let (status, _, body) = text(&state, get(&path(CsvTable::Versions), Some(&cookie))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("<script>,2,2\r\n"), "{body}");
    assert_eq!(
        body.lines().count(),
        1 + stats.versions.len(),
        "one row per version: {body}"
    );
}

/// Every number in a public JSON, by the key it sits under, leaving out the
/// settings and the stated accuracy, which are not counts.
pub(crate) fn published_numbers(json: &Value) -> Vec<(String, f64)> {
    fn walk(v: &Value, key: &str, out: &mut Vec<(String, f64)>) {
        match v {
            Value::Number(n) => out.push((key.to_owned(), n.as_f64().unwrap())),
            Value::Array(a) => a.iter().for_each(|x| walk(x, key, out)),
            Value::Object(o) => o
                .iter()
                .filter(|(k, _)| {
                    !matches!(
                        k.as_str(),
                        "min_count" | "epsilon_per_week" | "accuracy" | "days"
                    )
                })
                .for_each(|(k, x)| walk(x, k, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(json, "", &mut out);
    out
}

#[tokio::test]
async fn public_pages_are_off_unless_configured_and_publish_only_noisy_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    let closed = loaded_state(&cfg, false).await;
    for path in ["/public/demo", "/public/demo/stats.json"] {
        let (status, _, _) = text(&closed, get(path, None)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    drop(closed);

    let dir = tempfile::tempdir().unwrap();
    cfg = config(dir.path());
    cfg.dashboard.public_projects = vec!["demo".to_owned()];
    cfg.dashboard.public_min_count = 6;
    let open = loaded_state(&cfg, true).await;
    let (status, _, body) = text(&open, get("/public/demo/stats.json", None)).await;
    assert_eq!(status, StatusCode::OK);
    let json: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["min_count"], 6);
    assert_eq!(json["epsilon_per_week"], 1.0);
    assert!(
        json.get("installs_all_time").is_none(),
        "no exact all-time total"
    );
    // Every count is a noisy one of at least k, or the text "< k".
    for (key, n) in published_numbers(&json) {
        if key != "setup_completion_rate" {
            assert!(n >= 6.0, "{key} = {n}");
        }
    }
    for secret in [EMAIL, "install_id", HOSTILE_EVENTS[0], "crash"] {
        assert!(!body.contains(secret), "{secret} published");
    }
    // The exact numbers the signed-in API gives are not what is published:
    // today's sample data is not released yet, and history is noised.
    let stats = api_stats(&open).await;
    assert_ne!(stats.installs, 0);

    let (status, _, html) = text(&open, get("/public/demo", None)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("id=\"noise-line\""));
    assert!(html.contains(&format!(
        "within ±{} of the truth 95% of the time",
        num(json["accuracy"]["weekly"].as_u64().unwrap())
    )));
    assert!(html.contains("&lt; 6"));
    assert!(!html.contains(EMAIL) && !html.contains("alert(1)"));
}

#[test]
fn the_dashboard_section_of_the_config_file_is_read() {
    let config = telemetry_collector::Config::parse(
        "[dashboard]\npublic_projects = [\"demo\"]\npublic_min_count = 25\n\
         public_epsilon_per_week = 0.5\nsecure_cookies = true\n",
    )
    .unwrap();
    assert_eq!(config.dashboard.public_projects, ["demo"]);
    assert_eq!(config.dashboard.public_min_count, 25);
    assert_eq!(config.dashboard.public_epsilon_per_week, 0.5);
    assert!(config.dashboard.secure_cookies);
    let defaults = telemetry_collector::Config::parse("").unwrap();
    assert!(
        defaults.dashboard.public_projects.is_empty(),
        "public pages are opt-in"
    );
    assert_eq!(defaults.dashboard.public_min_count, 10);
    assert_eq!(defaults.dashboard.public_epsilon_per_week, 1.0);
}

#[test]
fn public_thresholds_below_five_and_budgets_out_of_range_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for (min_count, epsilon, ok) in [
        (0, 1.0, false),
        (1, 1.0, false),
        (4, 1.0, false),
        (5, 1.0, true),
        (10, 0.0, false),
        (10, -1.0, false),
        (10, f64::NAN, false),
        (10, 0.01, true),
        (10, 20.0, true),
        (10, 20.5, false),
    ] {
        let mut cfg = config(dir.path());
        cfg.dashboard.public_min_count = min_count;
        cfg.dashboard.public_epsilon_per_week = epsilon;
        assert_eq!(
            cfg.validate().is_ok(),
            ok,
            "k = {min_count}, epsilon = {epsilon}"
        );
    }
}

#[tokio::test]
async fn prop_panels_adoption_and_commands_show_the_api_numbers_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    crate::breakdowns::use_rich_manifest(&cfg);
    let state = loaded_state(&cfg, false).await;
    crate::breakdowns::prop_workload(&state).await;
    plant_hostile_props(&state).await;
    for payload in adoption_payloads() {
        let (status, body) = ingest(&state, &payload).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let stats = api_stats(&state).await;
    let cookie = sign_in(&state).await;
    let (status, _, html) = text(&state, get("/dashboard/projects/demo", Some(&cookie))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!html.contains("<script"), "no script element at all");
    for hostile in HOSTILE_EVENTS {
        assert!(!html.contains(hostile), "raw {hostile}");
    }
    // One panel per breakdown but delivery health's, with every value's count.
    for b in stats
        .props
        .iter()
        .filter(|b| b.event != "telemetry_dropped")
    {
        let esc = telemetry_collector::dashboard::html::esc;
        let start = html
            .find(&format!(
                "data-event=\"{}\" data-prop=\"{}\" data-kind=\"{}\"",
                esc(&b.event),
                esc(&b.prop),
                b.kind
            ))
            .unwrap_or_else(|| panic!("no panel for {}.{}", b.event, b.prop));
        let panel = &html[start..start + html[start..].find("</section>").unwrap()];
        for v in &b.values {
            assert!(
                panel.contains(&format!(
                    "<td class=\"key\">{}</td><td class=\"n\">{}</td>",
                    esc(&v.value),
                    num(v.count)
                )),
                "{}.{} = {} in {panel}",
                b.event,
                b.prop,
                v.value
            );
        }
    }
    let took = stats
        .props
        .iter()
        .find(|b| b.event == "init" && b.prop == "took")
        .unwrap();
    let labels: Vec<&str> = took.values.iter().map(|v| v.value.as_str()).collect();
    assert_eq!(labels, ["<100", "100..1000", ">=1000"]);
    // The hostile prop and value, shown only as text.
    assert!(html.contains("data-prop=\"&lt;img src=x onerror=alert(1)&gt;\""));
    assert!(html.contains("<td class=\"key\">&lt;script&gt;alert(1)&lt;/script&gt;</td>"));
    // Adoption: 12 versions sent this week plus 1.4.2 and the rest: the ten
    // most active in semver order, then "(other)".
    let versions: Vec<&str> = stats
        .adoption
        .versions
        .iter()
        .map(|v| v.version.as_str())
        .collect();
    assert_eq!(versions.len(), 11, "{versions:?}");
    assert_eq!(*versions.last().unwrap(), "(other)");
    assert!(
        versions
            .windows(2)
            .take(9)
            .all(|w| { telemetry_collector::stats::props::semver_cmp(w[0], w[1]).is_lt() })
    );
    assert_eq!(html.matches("<polygon class=\"area").count(), 11);
    // Command usage lists every non-lifecycle event with its count.
    for c in &stats.commands {
        let esc = telemetry_collector::dashboard::html::esc;
        assert!(
            html.contains(&format!(
                "<td class=\"key\">{}</td><td class=\"n\">{}</td>",
                esc(&c.event),
                num(c.count)
            )),
            "{}",
            c.event
        );
    }
}
