//! The two backends give the same numbers: one seeded pseudo-random stream of
//! requests is fed through the whole ingest path to a SQLite file and to a
//! PostgreSQL schema, and every field of `ProjectStats` (compared as JSON as
//! a whole) must agree for several windows, at checkpoints along the stream
//! and at its end. Every answer must agree too.
//!
//! The stream has every tier (aggregate counters, `anonymous`, `full` with an
//! identity), exact replays and partial ones, bursts of requests sent at
//! once (so both writers commit groups), deletions and `reset-id` (a deletion
//! and a fresh id), purges with a retention shorter than ingest's, and what
//! version skew refuses or downgrades: undeclared events, props and values,
//! times out of range, undeclared identity fields, ignored fields, `full`
//! above a project's `max_tier = "anonymous"`, and events above
//! `max_tier = "aggregate"` (rolled up).
//!
//! Without PostgreSQL the test says why and passes, except under `CI=true`,
//! where it fails (see [`PgSchema::create`]).

use std::collections::BTreeMap;
use std::path::Path;

use axum::http::StatusCode;
use serde_json::{Value, json};
use telemetry_collector::AppState;
use telemetry_collector::config::{Config, ProjectConfig};
use telemetry_collector::store::RetentionPolicy;
use telemetry_protocol::{Day, Tier, Uuid};

use crate::backends::PgSchema;
use crate::common::{TOKEN, ingest, post, send_json};

/// The manifest every project of the stream declares, under its own name.
const MANIFEST: &str = r#"
project = "NAME"
endpoint = "http://127.0.0.1:9"

[events.command]
description = "A command ran"
min_tier = "aggregate"
props.name = { kind = "enum", values = ["greet", "init", "deploy"], description = "Which command" }
props.ci = { kind = "bool", description = "Whether it ran on CI" }
props.duration_ms = { kind = "bucket", bounds = [10, 100, 1000], description = "How long it took" }

[events.crash]
description = "The tool crashed"
min_tier = "anonymous"

[identity.email]
description = "An address the maintainers may write to"
max_len = 254
"#;

/// The projects, with the highest tier each stores.
const PROJECTS: [(&str, Tier); 3] = [
    ("demo", Tier::Full),
    ("capped", Tier::Anonymous),
    ("rollup", Tier::Aggregate),
];

/// The stream's seed. Twenty others passed when this test was written; try a
/// few more after changing either backend's write path.
const SEED: u64 = 0x5eed_2026_1203_0020;

/// Steps in the stream.
const STEPS: usize = 360;

/// Stats are compared after every this many steps, and at the end.
const CHECKPOINT: usize = 60;

/// A small deterministic generator (xorshift64*), so a failure replays exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// True with probability `percent`/100.
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// A random id with the version 4 layout.
    fn id(&mut self) -> Uuid {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.next().to_le_bytes());
        bytes[8..].copy_from_slice(&self.next().to_le_bytes());
        bytes[6] = (bytes[6] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        Uuid::from_bytes(bytes)
    }
}

/// One step of the stream, sent to both backends alike.
enum Step {
    /// Requests to `/v1/ingest`, sent one after another.
    Ingest(Vec<Value>),
    /// Requests to `/v1/ingest` sent at once: new ones, exact copies of one
    /// another and exact replays, never two that only overlap, so the order
    /// the writer takes them in cannot change any number.
    Burst(Vec<Value>),
    /// A request to `/v1/delete`.
    Delete(Value),
    /// A purge with this retention, on this day.
    Purge(RetentionPolicy, Day),
}

/// Builds the stream from `seed`, relative to `today`.
struct Stream {
    rng: Rng,
    today: Day,
    /// Install ids in use, per project; a `reset-id` replaces one.
    installs: BTreeMap<&'static str, Vec<Uuid>>,
    /// Every ingest request sent so far, for replays.
    sent: Vec<Value>,
}

impl Stream {
    fn new(seed: u64, today: Day) -> Stream {
        let mut rng = Rng(seed);
        let installs = PROJECTS
            .iter()
            .map(|(name, _)| (*name, (0..12).map(|_| rng.id()).collect()))
            .collect();
        Stream {
            rng,
            today,
            installs,
            sent: Vec::new(),
        }
    }

    fn project(&mut self) -> &'static str {
        self.rng.pick(&PROJECTS).0
    }

    fn context(&mut self) -> Value {
        json!({
            "tool_version": self.rng.pick(&["1.4.2", "1.5.0", "2.0.0-rc.1"]),
            "os": self.rng.pick(&["linux", "macos", "windows"]),
            "arch": self.rng.pick(&["x86_64", "aarch64"]),
            "toolkit_version": "0.1.0",
        })
    }

    /// Days back from today, most of them recent.
    fn days_back(&mut self, most: u64) -> i32 {
        let d = if self.rng.chance(60) {
            self.rng.below(most.min(10))
        } else {
            self.rng.below(most)
        };
        -(d as i32)
    }

    /// The props of a `command`, sometimes with what the manifest does not declare.
    fn command_props(&mut self, skewed: bool) -> Value {
        let mut props = json!({ "name": self.rng.pick(&["greet", "init", "deploy"]) });
        if self.rng.chance(50) {
            props["ci"] = json!(self.rng.chance(30));
        }
        if self.rng.chance(40) {
            props["duration_ms"] = json!(self.rng.pick(&["<10", "10..100", "100..1000", ">=1000"]));
        }
        if skewed {
            match self.rng.below(3) {
                0 => props["color"] = json!("red"),
                1 => props["name"] = json!("publish"),
                _ => props["duration_ms"] = json!("0..5"),
            }
        }
        props
    }

    /// One event; `skewed` makes it one that is refused on its own.
    fn event(&mut self, skewed: bool) -> Value {
        let id = self.rng.id();
        let mut day = self.days_back(85);
        let name = match self.rng.below(12) {
            0..=2 => "active",
            3 => "install",
            4 => "setup_started",
            5 => "setup_completed",
            6 => "crash",
            _ => "command",
        };
        let mut event = json!({"id": id, "name": name});
        if name == "command" {
            let skewed = skewed && self.rng.chance(60);
            event["props"] = self.command_props(skewed);
        } else if name == "active" && self.rng.chance(50) {
            event["props"] = json!({"install_age_days": self.rng.pick(&["<7", "7..30", "30..90"])});
        }
        if skewed && event.get("props").is_none() {
            match self.rng.below(3) {
                0 => event["name"] = json!("no_such_event"),
                1 => day = -(100 + self.rng.below(20) as i32),
                _ => day = 3,
            }
        }
        if self.rng.chance(5) {
            event["future_field"] = json!({"nested": 1});
        }
        let hour = self.rng.below(24);
        let minute = self.rng.below(60);
        event["timestamp"] = json!(format!(
            "{}T{hour:02}:{minute:02}:00Z",
            self.today.add_days(day)
        ));
        event
    }

    /// An `anonymous` or `full` request of one install.
    fn events_request(&mut self) -> Value {
        let project = self.project();
        let install = *self.rng.pick(&self.installs[project]);
        let full = self.rng.chance(40);
        let events: Vec<Value> = (0..1 + self.rng.below(5))
            .map(|_| {
                let skewed = self.rng.chance(8);
                self.event(skewed)
            })
            .collect();
        let mut request = json!({
            "project": project,
            "tier": if full { "full" } else { "anonymous" },
            "context": self.context(),
            "install_id": install,
            "events": events,
        });
        if full {
            let n = self.rng.below(5);
            request["identity"] = json!({"email": format!("user{n}@example.org")});
            if self.rng.chance(10) {
                request["identity"]["nickname"] = json!("someone");
            }
        }
        if self.rng.chance(5) {
            request["sent_by"] = json!("a newer client");
        }
        request
    }

    /// An `aggregate` request: counters under a new report id.
    fn aggregate_request(&mut self) -> Value {
        let project = self.project();
        let counters: Vec<Value> = (0..1 + self.rng.below(4))
            .map(|_| {
                let day = self.today.add_days(self.days_back(28));
                let count = 1 + self.rng.below(6);
                match self.rng.below(10) {
                    0..=2 => json!({"day": day, "event": "active", "count": count}),
                    3 => json!({"day": day, "event": "install", "count": count}),
                    4 => json!({"day": day, "event": "setup_started", "count": count}),
                    5 => json!({"day": day, "event": "telemetry_dropped", "count": count,
                                "props": {"reason": self.rng.pick(&["spool_full", "io_error"])}}),
                    6 => json!({"day": self.today.add_days(-(40 + self.rng.below(10) as i32)),
                                "event": "command", "count": count, "props": {"name": "init"}}),
                    7 => json!({"day": day, "event": "no_such_event", "count": count}),
                    _ => {
                        let skewed = self.rng.chance(15);
                        json!({"day": day, "event": "command", "count": count,
                               "props": self.command_props(skewed)})
                    }
                }
            })
            .collect();
        // The protocol wants one counter per day, event and props: a
        // duplicate is a 422 for the whole report, so they are summed.
        let mut summed: Vec<Value> = Vec::new();
        for c in counters {
            let same = |s: &&mut Value| {
                s["day"] == c["day"] && s["event"] == c["event"] && s["props"] == c["props"]
            };
            match summed.iter_mut().find(same) {
                Some(s) => {
                    let total = s["count"].as_u64().unwrap_or(0) + c["count"].as_u64().unwrap_or(0);
                    s["count"] = json!(total);
                }
                None => summed.push(c),
            }
        }
        json!({
            "project": project,
            "tier": "aggregate",
            "context": self.context(),
            "report_id": self.rng.id(),
            "counters": summed,
        })
    }

    /// A request sent before, again, or partly again: some of its events with
    /// new ones (a client that lost an answer and recorded more since).
    fn replay(&mut self) -> Option<Value> {
        if self.sent.is_empty() {
            return None;
        }
        let mut request = self.rng.pick(&self.sent).clone();
        if self.rng.chance(40)
            && let Some(events) = request["events"].as_array().cloned()
        {
            let mut kept: Vec<Value> = events.into_iter().filter(|_| self.rng.chance(60)).collect();
            kept.push(self.event(false));
            request["events"] = json!(kept);
        }
        Some(request)
    }

    fn step(&mut self, i: usize) -> Step {
        // Purges at fixed points: a retention shorter than ingest's 90 days,
        // so later old events recreate installs a purge removed; the last one
        // on a later day, so report ids age out too.
        if i == STEPS / 3 || i == 2 * STEPS / 3 {
            let days = if i == STEPS / 3 { 40 } else { 25 };
            let policy = RetentionPolicy {
                default_days: 90,
                per_project: [
                    ("demo".to_owned(), days),
                    ("capped".to_owned(), days + 10),
                    ("rollup".to_owned(), 60),
                ]
                .into(),
            };
            return Step::Purge(policy, self.today);
        }
        if i == STEPS - 40 {
            let policy = RetentionPolicy {
                default_days: 90,
                per_project: Default::default(),
            };
            return Step::Purge(policy, self.today.add_days(35));
        }
        let request = match self.rng.below(100) {
            0..=44 => self.events_request(),
            45..=59 => self.aggregate_request(),
            60..=71 => match self.replay() {
                Some(request) => return Step::Ingest(vec![request]),
                None => self.events_request(),
            },
            72..=81 => {
                let mut burst: Vec<Value> = Vec::new();
                for _ in 0..2 + self.rng.below(3) {
                    let request = match self.rng.below(100) {
                        // The same request twice in one group commit.
                        0..=14 if !burst.is_empty() => self.rng.pick(&burst).clone(),
                        // A replay of one committed before.
                        15..=29 if !self.sent.is_empty() => self.rng.pick(&self.sent).clone(),
                        0..=69 => self.events_request(),
                        _ => self.aggregate_request(),
                    };
                    burst.push(request);
                }
                self.sent.extend(burst.iter().cloned());
                return Step::Burst(burst);
            }
            82..=87 => {
                // Delete: an opt-out, or with a fresh id after it a reset-id.
                let project = self.project();
                let slot = self.rng.below(12) as usize;
                let install = self.installs[project][slot];
                if self.rng.chance(50) {
                    let fresh = self.rng.id();
                    if let Some(ids) = self.installs.get_mut(project) {
                        ids[slot] = fresh;
                    }
                }
                return Step::Delete(json!({"project": project, "install_id": install}));
            }
            88..=91 => {
                // A deletion for an install that never sent anything.
                let project = self.project();
                return Step::Delete(json!({"project": project, "install_id": self.rng.id()}));
            }
            _ => {
                // The same request twice in a row: a retry after a lost answer.
                let request = self.events_request();
                self.sent.push(request.clone());
                return Step::Ingest(vec![request.clone(), request]);
            }
        };
        self.sent.push(request.clone());
        Step::Ingest(vec![request])
    }
}

/// A collector config for the stream's projects over `db`, with the
/// manifests and one pseudonym key in `dir`.
fn config(dir: &Path, db: String) -> Config {
    let projects = PROJECTS
        .iter()
        .map(|(name, max_tier)| {
            let manifest = dir.join(format!("{name}.telemetry.toml"));
            std::fs::write(&manifest, MANIFEST.replace("NAME", name)).unwrap();
            ProjectConfig {
                name: (*name).to_owned(),
                manifest,
                max_tier: *max_tier,
                retention_days: 90,
            }
        })
        .collect();
    let mut config = Config {
        db,
        admin_token: Some(TOKEN.to_owned()),
        pseudonym_key_file: Some(dir.join("pseudonym-key")),
        projects,
        ..Config::default()
    };
    config.rate_limit.requests_per_minute = 0;
    config
}

/// Where two JSON values first differ, as a path like `.weekly[3].installs`.
fn first_difference(a: &Value, b: &Value, path: &str) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for key in x.keys().chain(y.keys()) {
                let here = format!("{path}.{key}");
                match (x.get(key), y.get(key)) {
                    (Some(p), Some(q)) => {
                        if let Some(d) = first_difference(p, q, &here) {
                            return Some(d);
                        }
                    }
                    _ => return Some(format!("{here} (present on one side only)")),
                }
            }
            None
        }
        (Value::Array(x), Value::Array(y)) => {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                if let Some(d) = first_difference(p, q, &format!("{path}[{i}]")) {
                    return Some(d);
                }
            }
            (x.len() != y.len()).then(|| format!("{path} (length {} vs {})", x.len(), y.len()))
        }
        _ => (a != b).then(|| format!("{path}: {a} vs {b}")),
    }
}

/// The stats of every project over every window, as JSON, keyed by
/// `project from..to`.
async fn all_stats(state: &AppState, today: Day) -> BTreeMap<String, Value> {
    let windows = [
        (today.add_days(-6), today),
        (today.add_days(-29), today),
        (today.add_days(-89), today),
        (today.add_days(-60), today.add_days(-40)),
        (today.add_days(-13), today.add_days(1)),
    ];
    let mut out = BTreeMap::new();
    for (project, _) in PROJECTS {
        let manifest = state.project(project).map(|p| &p.manifest);
        for (from, to) in windows {
            let stats = telemetry_collector::stats::project_stats_declared(
                state.store(),
                project,
                manifest,
                from,
                to,
            )
            .await
            .unwrap();
            out.insert(
                format!("{project} {from}..{to}"),
                serde_json::to_value(stats).unwrap(),
            );
        }
    }
    out
}

/// Sends one step to one backend; returns every answer (status and body).
async fn apply(state: &AppState, step: &Step) -> Vec<(StatusCode, Value)> {
    match step {
        Step::Ingest(requests) => {
            let mut answers = Vec::new();
            for request in requests {
                answers.push(ingest(state, request).await);
            }
            answers
        }
        Step::Burst(requests) => {
            let mut set = tokio::task::JoinSet::new();
            for (i, request) in requests.iter().enumerate() {
                let (state, request) = (state.clone(), request.clone());
                set.spawn(async move { (i, ingest(&state, &request).await) });
            }
            // Which of two equal requests is stored first, and so which
            // answer says `duplicates`, is up to the writer: compared sorted.
            let mut answers: Vec<_> = set.join_all().await.into_iter().map(|(_, a)| a).collect();
            answers.sort_by_key(|(status, body)| (status.as_u16(), body.to_string()));
            answers
        }
        Step::Delete(body) => vec![send_json(state, post("/v1/delete", body.to_string())).await],
        Step::Purge(policy, day) => {
            let out = state.store().purge(policy, *day).await.unwrap();
            let out = json!([
                out.events,
                out.installs,
                out.install_weeks,
                out.install_uses,
                out.report_ids
            ]);
            vec![(StatusCode::OK, out)]
        }
    }
}

/// Feeds the stream of `seed` to both backends; `Err` if the UTC day changed
/// meanwhile, which would make the backends judge the same times differently.
async fn run(seed: u64, sqlite: &AppState, pg: &AppState) -> Result<(), ()> {
    let today = telemetry_collector::ingest::today();
    let mut stream = Stream::new(seed, today);
    let mut seen = Coverage::default();
    for i in 0..STEPS {
        let step = stream.step(i);
        let a = apply(sqlite, &step).await;
        let b = apply(pg, &step).await;
        seen.note(&step, &a);
        assert_eq!(a, b, "step {i}: the backends answered differently");
        if (i + 1) % CHECKPOINT == 0 || i + 1 == STEPS {
            if telemetry_collector::ingest::today() != today {
                return Err(());
            }
            let (x, y) = (all_stats(sqlite, today).await, all_stats(pg, today).await);
            for (window, stats) in &x {
                if let Some(difference) = first_difference(stats, &y[window], "") {
                    panic!(
                        "after step {i}, stats of {window} differ at {difference}\n\
                         sqlite: {stats}\npostgres: {}",
                        y[window]
                    );
                }
            }
        }
    }
    seen.check();
    let last = all_stats(sqlite, today).await;
    let demo = &last[&format!("demo {}..{today}", today.add_days(-89))];
    assert!(
        demo["retention"].as_array().is_some_and(|r| r
            .iter()
            .flat_map(|c| c["retained"].as_array().cloned().unwrap_or_default())
            .any(|n| n.as_u64() > Some(1))),
        "the stream fills the retention table: {}",
        demo["retention"]
    );
    Ok(())
}

/// What the stream exercised, from the answers, so that a change to the
/// generator cannot quietly stop testing something.
#[derive(Debug, Default)]
struct Coverage {
    /// Answers that were not a 2xx.
    failed: u64,
    accepted: u64,
    duplicates: u64,
    refused: u64,
    ignored: u64,
    bursts: u64,
    deletions: u64,
    purged_events: u64,
    /// `downgraded_to` values seen.
    downgraded: std::collections::BTreeSet<String>,
    /// `refused_by_reason` keys seen.
    reasons: std::collections::BTreeSet<String>,
}

impl Coverage {
    fn note(&mut self, step: &Step, answers: &[(StatusCode, Value)]) {
        match step {
            Step::Burst(_) => self.bursts += 1,
            Step::Delete(_) => self.deletions += 1,
            Step::Purge(..) => {
                self.purged_events += answers[0].1[0].as_u64().unwrap_or(0);
                return;
            }
            Step::Ingest(_) => {}
        }
        for (status, body) in answers {
            self.failed += u64::from(!status.is_success());
            let n = |field: &str| body[field].as_u64().unwrap_or(0);
            self.accepted += n("accepted");
            self.duplicates += n("duplicates");
            self.refused += n("refused");
            self.ignored += n("ignored");
            if let Some(tier) = body["downgraded_to"].as_str() {
                self.downgraded.insert(tier.to_owned());
            }
            if let Some(reasons) = body["refused_by_reason"].as_object() {
                self.reasons.extend(reasons.keys().cloned());
            }
        }
    }

    fn check(&self) {
        // Every answer was a 2xx: the stream holds only valid requests, and
        // what skew refuses is refused item by item, not as a whole.
        assert_eq!(self.failed, 0, "{self:?}");
        assert!(self.accepted > 500 && self.duplicates > 50, "{self:?}");
        assert!(self.refused > 20 && self.ignored > 5, "{self:?}");
        assert!(self.bursts > 10 && self.deletions > 10, "{self:?}");
        assert!(self.purged_events > 0, "{self:?}");
        assert_eq!(
            self.downgraded,
            ["aggregate", "anonymous"].map(String::from).into(),
            "{self:?}"
        );
        assert!(self.reasons.len() >= 4, "{self:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_backends_give_the_same_stats_for_the_same_stream() {
    for attempt in 0..2 {
        let Some(schema) = PgSchema::create().await else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("telemetry.db");
        let sqlite = crate::common::state(&config(dir.path(), db.to_string_lossy().into_owned()));
        // The same pseudonym key for both, so they hold the same hashes.
        let pg_dir = tempfile::tempdir().unwrap();
        std::fs::copy(
            dir.path().join("pseudonym-key"),
            pg_dir.path().join("pseudonym-key"),
        )
        .unwrap();
        let pg = crate::common::state(&config(pg_dir.path(), schema.url.clone()));
        let result = run(SEED, &sqlite, &pg).await;
        sqlite.store().close().await.unwrap();
        pg.store().close().await.unwrap();
        match result {
            Ok(()) => return,
            // The stream straddled midnight UTC: once more, on one day.
            Err(()) if attempt == 0 => continue,
            Err(()) => panic!("the UTC day changed during both runs"),
        }
    }
}
